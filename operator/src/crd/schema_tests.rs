//! Valid and invalid resources checked against the generated CRD schemas: structure and
//! field constraints with [`super::structural`], CEL rules (creation and transition) with
//! kube-cel, both as the API server would apply them.

use kube::CustomResourceExt;
use serde_json::{json, Value};

use super::structural::{structural_problems, unbounded_under_transition_rules, value_problems};
use super::{backup_crd, cluster_crd, StrataBackup, StrataCluster};

/// The schema of `K`'s CRD exactly as `crdgen` writes it.
fn schema<K: CustomResourceExt>() -> Value {
    let crd = if K::crd_name() == StrataCluster::crd_name() {
        cluster_crd()
    } else {
        backup_crd()
    };
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .unwrap();
    serde_json::to_value(schema).unwrap()
}

/// Every problem the API server would report creating `object` (or updating `old` to it).
fn problems<K: CustomResourceExt>(object: &Value, old: Option<&Value>) -> Vec<String> {
    let schema = schema::<K>();
    let mut out = value_problems(&schema, object);
    if let Err(errors) = kube::core::cel::Validator::new().validate(&schema, object, old) {
        out.extend(errors.iter().map(|e| e.to_string()));
    }
    out
}

fn cluster(spec: Value) -> Value {
    json!({
        "apiVersion": "strata.dev/v1alpha1",
        "kind": "StrataCluster",
        "metadata": {"name": "demo", "namespace": "default"},
        "spec": spec,
    })
}

fn backup(spec: Value) -> Value {
    json!({
        "apiVersion": "strata.dev/v1alpha1",
        "kind": "StrataBackup",
        "metadata": {"name": "nightly", "namespace": "default"},
        "spec": spec,
    })
}

fn full_cluster() -> Value {
    cluster(json!({
        "replicas": 5,
        "image": "registry.example/strata-node:0.1.0",
        "imagePullPolicy": "IfNotPresent",
        "replicationFactor": 3,
        "storage": {"size": "50Gi", "storageClassName": "fast", "reclaimPolicy": "Delete"},
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": 2147483648u64}},
        "nodeConfig": {
            "engine": {"memtableMb": 32, "blockCacheMb": 512, "compression": "lz4"},
            "txn": {"lockTtlMs": 3000, "lockWaitMs": 100, "idleTimeoutS": 30, "gcLifeTimeS": 600},
            "log": {"level": "strata=debug,info", "format": "text"}
        },
        "backup": {
            "schedule": "0 3 * * *",
            "destination": {"s3": {"bucket": "strata-backups", "credentialsSecret": "s3-creds"}},
            "keep": 14
        }
    }))
}

fn assert_refused(found: Vec<String>, expected: &str) {
    assert!(
        found.iter().any(|p| p.contains(expected)),
        "expected a problem mentioning {expected:?}, got {found:?}"
    );
}

#[test]
fn both_schemas_are_structural() {
    assert_eq!(
        structural_problems(&schema::<StrataCluster>()),
        Vec::<String>::new()
    );
    assert_eq!(
        structural_problems(&schema::<StrataBackup>()),
        Vec::<String>::new()
    );
}

#[test]
fn transition_rules_compare_only_bounded_values() {
    assert_eq!(
        unbounded_under_transition_rules(&schema::<StrataCluster>()),
        Vec::<String>::new()
    );
    assert_eq!(
        unbounded_under_transition_rules(&schema::<StrataBackup>()),
        Vec::<String>::new()
    );
    let loose = json!({"type": "object", "properties": {"spec": {"type": "object",
        "x-kubernetes-validations": [{"rule": "self == oldSelf"}],
        "properties": {"a": {"type": "string"}, "b": {"type": "string", "enum": ["x"]},
                       "c": {"type": "array", "items": {"type": "string", "maxLength": 3}}}}}});
    assert_eq!(
        unbounded_under_transition_rules(&loose),
        [
            ".spec.a: string without maxLength",
            ".spec.c: array without maxItems"
        ]
    );
}

#[test]
fn the_structural_check_catches_what_the_api_server_refuses() {
    let bad = json!({"type": "object", "properties": {
        "a": {"anyOf": [{"type": "string"}]},
        "b": {"type": "array"},
        "c": {"x-kubernetes-preserve-unknown-fields": true, "type": "object"}
    }});
    let found = structural_problems(&bad);
    assert_refused(found.clone(), ".a: `anyOf`");
    assert_refused(found.clone(), ".a: no type");
    assert_refused(found.clone(), ".b: array without items");
    assert_refused(found, ".c: keeps unknown fields");
}

#[test]
fn valid_clusters_pass() {
    let minimal = cluster(json!({"image": "strata-node:0.1.0"}));
    assert_eq!(
        problems::<StrataCluster>(&minimal, None),
        Vec::<String>::new()
    );
    assert_eq!(
        problems::<StrataCluster>(&full_cluster(), None),
        Vec::<String>::new()
    );
    let single = cluster(json!({"image": "s:1", "replicas": 1, "replicationFactor": 1}));
    assert_eq!(
        problems::<StrataCluster>(&single, None),
        Vec::<String>::new()
    );
    // The typed struct reads every valid fixture.
    let typed: StrataCluster = serde_json::from_value(full_cluster()).unwrap();
    assert_eq!(typed.spec.replicas, 5);
}

#[test]
fn field_constraints_are_enforced() {
    let cases = [
        (
            json!({"image": "s:1", "replicas": 0}),
            ".spec.replicas: 0 is below the minimum 1",
        ),
        (json!({"replicas": 3}), ".spec.image: required"),
        (json!({"image": ""}), ".spec.image: shorter than 1"),
        (
            json!({"image": "s:1", "replica": 3}),
            ".spec.replica: unknown field",
        ),
        (
            json!({"image": "s:1", "replicas": "3"}),
            ".spec.replicas: expected integer",
        ),
        (
            json!({"image": "s:1", "replicationFactor": 9, "replicas": 9}),
            "above the maximum 7",
        ),
        (
            json!({"image": "s:1", "imagePullPolicy": "Sometimes"}),
            "is not one of",
        ),
        (
            json!({"image": "s:1", "storage": {"size": "ten gigs"}}),
            "does not match",
        ),
        (
            json!({"image": "s:1", "storage": {"reclaimPolicy": "Recycle"}}),
            "is not one of",
        ),
        (
            json!({"image": "s:1", "nodeConfig": {"engine": {"compression": "zstd"}}}),
            ".spec.nodeConfig.engine.compression",
        ),
        (
            json!({"image": "s:1", "nodeConfig": {"engine": {"memtableMb": 0}}}),
            "below the minimum 1",
        ),
        (
            json!({"image": "s:1", "nodeConfig": {"txn": {"idleTimeoutS": 0}}}),
            "below the minimum 1",
        ),
        (
            json!({"image": "s:1", "nodeConfig": {"log": {"format": "xml"}}}),
            "is not one of",
        ),
        (
            json!({"image": "s:1", "nodeConfig": {"cache": {}}}),
            ".spec.nodeConfig.cache: unknown field",
        ),
        (
            json!({"image": "s:1", "backup": {"schedule": "daily", "destination": {"volume": {"claimName": "b"}}}}),
            "does not match",
        ),
    ];
    for (spec, expected) in cases {
        assert_refused(problems::<StrataCluster>(&cluster(spec), None), expected);
    }
}

#[test]
fn cel_refuses_fewer_replicas_than_the_replication_factor() {
    let found = problems::<StrataCluster>(&cluster(json!({"image": "s:1", "replicas": 2})), None);
    assert_refused(
        found,
        "spec.replicas must be at least spec.replicationFactor",
    );
    let found = problems::<StrataCluster>(
        &cluster(json!({"image": "s:1", "replicas": 4, "replicationFactor": 5})),
        None,
    );
    assert_refused(
        found,
        "spec.replicas must be at least spec.replicationFactor",
    );
}

#[test]
fn cel_refuses_an_even_replication_factor() {
    let spec = json!({"image": "s:1", "replicas": 4, "replicationFactor": 2});
    let found = problems::<StrataCluster>(&cluster(spec), None);
    assert_refused(found, "spec.replicationFactor must be odd");
}

#[test]
fn cel_keeps_the_replication_factor_immutable() {
    let old = cluster(json!({"image": "s:1", "replicas": 3, "replicationFactor": 3}));
    let scaled = cluster(json!({"image": "s:1", "replicas": 5, "replicationFactor": 3}));
    assert_eq!(
        problems::<StrataCluster>(&scaled, Some(&old)),
        Vec::<String>::new()
    );
    let changed = cluster(json!({"image": "s:1", "replicas": 5, "replicationFactor": 5}));
    assert_refused(
        problems::<StrataCluster>(&changed, Some(&old)),
        "spec.replicationFactor is immutable",
    );
}

#[test]
fn cel_keeps_storage_immutable() {
    let old =
        cluster(json!({"image": "s:1", "storage": {"size": "10Gi", "storageClassName": "fast"}}));
    let scaled = cluster(
        json!({"image": "s:2", "replicas": 5, "storage": {"size": "10Gi", "storageClassName": "fast"}}),
    );
    assert_eq!(
        problems::<StrataCluster>(&scaled, Some(&old)),
        Vec::<String>::new()
    );

    let changes = [
        (
            json!({"size": "10Gi", "storageClassName": "slow"}),
            "storageClassName is immutable",
        ),
        (json!({"size": "10Gi"}), "storageClassName is immutable"),
        (
            json!({"size": "20Gi", "storageClassName": "fast"}),
            "spec.storage.size is immutable",
        ),
    ];
    for (storage, expected) in changes {
        let new = cluster(json!({"image": "s:1", "storage": storage}));
        assert_refused(problems::<StrataCluster>(&new, Some(&old)), expected);
    }
    // Setting a class on a cluster created with the default class is a change too.
    let old = cluster(json!({"image": "s:1"}));
    let new = cluster(json!({"image": "s:1", "storage": {"storageClassName": "fast"}}));
    assert_refused(
        problems::<StrataCluster>(&new, Some(&old)),
        "storageClassName is immutable",
    );
}

#[test]
fn backups_validate_their_destination_and_stay_immutable() {
    let volume =
        backup(json!({"cluster": "demo", "destination": {"volume": {"claimName": "backups"}}}));
    assert_eq!(
        problems::<StrataBackup>(&volume, None),
        Vec::<String>::new()
    );
    let s3 = backup(json!({"cluster": "demo", "destination": {"s3": {
        "bucket": "strata-backups", "prefix": "demo/", "endpoint": "https://minio.example:9000",
        "region": "eu-west-1", "credentialsSecret": "s3-creds"}}}));
    assert_eq!(problems::<StrataBackup>(&s3, None), Vec::<String>::new());

    let both = backup(json!({"cluster": "demo", "destination": {
        "volume": {"claimName": "b"}, "s3": {"bucket": "bkt", "credentialsSecret": "c"}}}));
    assert_refused(problems::<StrataBackup>(&both, None), "exactly one of");
    let neither = backup(json!({"cluster": "demo", "destination": {}}));
    assert_refused(problems::<StrataBackup>(&neither, None), "exactly one of");
    let bad_endpoint = backup(json!({"cluster": "demo", "destination": {"s3": {
        "bucket": "bkt", "endpoint": "minio:9000", "credentialsSecret": "c"}}}));
    assert_refused(
        problems::<StrataBackup>(&bad_endpoint, None),
        "does not match",
    );
    let no_cluster = backup(json!({"destination": {"volume": {"claimName": "b"}}}));
    assert_refused(
        problems::<StrataBackup>(&no_cluster, None),
        ".spec.cluster: required",
    );

    let retargeted =
        backup(json!({"cluster": "other", "destination": {"volume": {"claimName": "backups"}}}));
    assert_refused(
        problems::<StrataBackup>(&retargeted, Some(&volume)),
        "spec is immutable",
    );
}

#[test]
fn long_cluster_names_are_refused() {
    let mut object = cluster(json!({"image": "s:1"}));
    object["metadata"]["name"] = json!("a".repeat(53));
    assert_refused(
        problems::<StrataCluster>(&object, None),
        "at most 52 characters",
    );
    object["metadata"]["name"] = json!("a".repeat(52));
    assert_eq!(
        problems::<StrataCluster>(&object, None),
        Vec::<String>::new()
    );
}

#[test]
fn the_examples_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let object: Value = serde_yaml::from_str(&text).unwrap();
        let found = match object["kind"].as_str() {
            Some("StrataCluster") => problems::<StrataCluster>(&object, None),
            Some("StrataBackup") => problems::<StrataBackup>(&object, None),
            other => panic!("{}: unexpected kind {other:?}", path.display()),
        };
        assert_eq!(found, Vec::<String>::new(), "{}", path.display());
        seen += 1;
    }
    assert!(seen >= 4, "only {seen} examples in {}", dir.display());
}

/// The status the operator writes during a drain, with members and a backup schedule, is
/// valid against the schema (an API server would reject or prune what it does not admit).
#[test]
fn a_status_with_a_drain_members_and_a_schedule_is_valid() {
    use super::{
        BackupScheduleStatus, DrainNode, DrainNodeState, DrainStatus, MemberStatus,
        StrataClusterStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    let at = Time("2026-12-01T03:00:00Z".parse().unwrap());
    let status = StrataClusterStatus {
        members: vec![MemberStatus {
            id: 1,
            voter: true,
            incarnation: Some("8c1f".into()),
        }],
        drain: Some(DrainStatus {
            from: 5,
            to: 3,
            nodes: vec![
                DrainNode {
                    id: 5,
                    pod: "demo-4".into(),
                    state: DrainNodeState::Drained,
                    message: Some("holds no replica".into()),
                },
                DrainNode {
                    id: 4,
                    pod: "demo-3".into(),
                    state: DrainNodeState::Draining,
                    message: None,
                },
            ],
        }),
        backup_schedule: Some(BackupScheduleStatus {
            last_schedule_time: Some(at.clone()),
            last_backup: Some("demo-202612010300".into()),
            next_schedule_time: Some(at),
            message: None,
        }),
        ..StrataClusterStatus::default()
    };
    let mut object = full_cluster();
    object["status"] = serde_json::to_value(&status).unwrap();
    assert_eq!(
        problems::<StrataCluster>(&object, None),
        Vec::<String>::new()
    );
    let typed: StrataCluster = serde_json::from_value(object.clone()).unwrap();
    assert_eq!(typed.status, Some(status));
    // An unknown drain state is refused.
    object["status"]["drain"]["nodes"][0]["state"] = json!("Cancelled");
    assert_refused(problems::<StrataCluster>(&object, None), "state");
}
