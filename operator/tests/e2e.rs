//! End to end against whatever cluster `KUBECONFIG` points to; skipped (with a message)
//! when it is unset.
//!
//! It installs the CRDs and the operator's RBAC from `manifests/`, runs the controllers in
//! this process as the operator's ServiceAccount (impersonated, so the ClusterRole is what
//! is tested), and in a fresh namespace that enforces Pod Security `restricted`: applies a
//! `StrataCluster`, checks the objects and the status conditions, scales out, sees a hand
//! edit of the StatefulSet put back, has the API server refuse two unsafe edits (CEL),
//! checks that a scale-in drains before it shrinks, that every write the operator made is filed under its one
//! field manager, a `StrataBackup`'s status and its immutable spec, that the StatefulSet
//! controller admits the pods and makes their claims, and deletes the cluster through the
//! finalizer: the cleanup deletes the claims (`reclaimPolicy: Delete`), the garbage
//! collector the owned objects. Beside the cluster it wins the leader-election Lease as the
//! ServiceAccount (the Role is what is tested) and has the API server validate the
//! manifests' Deployment and Service (dry run). No pod needs to run: an API server with a
//! controller manager (for the pods, the claims and the garbage collection) and no kubelet
//! is enough. The namespace and the test's Lease are deleted at the end; the CRDs and RBAC
//! stay (they are shared).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, Config};
use serde_json::{json, Value};
use strata_operator::controller::{self, Context};
use strata_operator::crd::{BackupPhase, StrataBackup, StrataCluster};
use strata_operator::lease::{LeaderElector, LeaseConfig};
use strata_operator::metrics::Metrics;

const MANAGER: &str = "strata-e2e";
/// The field manager of everything the operator writes.
const OPERATOR: &str = strata_operator::cluster::names::FIELD_MANAGER;
const DEADLINE: Duration = Duration::from_secs(90);

/// Polls `check` until it returns `Some`, failing with `what` after [`DEADLINE`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn apply(client: &Client, object: &Value, dry_run: bool) {
    let kind = object["kind"].as_str().unwrap_or_default();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = kube::core::GroupVersionKind::gvk(group, version, kind);
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
    let api: Api<kube::core::DynamicObject> =
        match (caps.scope, object["metadata"]["namespace"].as_str()) {
            (kube::discovery::Scope::Namespaced, Some(ns)) => {
                Api::namespaced_with(client.clone(), ns, &resource)
            }
            _ => Api::all_with(client.clone(), &resource),
        };
    let mut params = PatchParams::apply(MANAGER).force();
    params.dry_run = dry_run;
    api.patch(name, &params, &Patch::Apply(object))
        .await
        .unwrap_or_else(|e| panic!("applying {kind} {name}: {e}"));
}

/// The field managers of an object (not of its status: controllers write that), in order,
/// without repeats.
fn managers(meta: &kube::core::ObjectMeta) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let entries = meta.managed_fields.iter().flatten();
    for entry in entries.filter(|e| e.subresource.as_deref() != Some("status")) {
        let name = entry.manager.clone().unwrap_or_default();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

fn documents(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect()
}

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test]
async fn against_a_real_api_server() {
    if std::env::var_os("KUBECONFIG").is_none() {
        eprintln!("skipping the end-to-end test: KUBECONFIG is unset (point it at a Kubernetes 1.25+ API server to run it)");
        return;
    }
    let admin = Client::try_default().await.unwrap();

    // The CRDs, established.
    for crd in strata_operator::crd::all() {
        let name = crd.metadata.name.clone().unwrap();
        let api: Api<CustomResourceDefinition> = Api::all(admin.clone());
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
        eventually(&format!("{name} is established"), || {
            let api = api.clone();
            let name = name.clone();
            async move {
                let crd = api.get(&name).await.ok()?;
                let conditions = crd.status?.conditions?;
                conditions
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            }
        })
        .await;
    }

    // The operator's namespace and RBAC, as the plain manifests install them.
    for file in ["manifests/namespace.yaml", "manifests/operator.yaml"] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        for object in documents(&text) {
            // The Deployment and Service only validated (dry run): no operator pod runs here.
            let dry_run = object["kind"] == "Deployment" || object["kind"] == "Service";
            apply(&admin, &object, dry_run).await;
        }
    }

    // A fresh namespace for the cluster.
    let ns = format!("strata-e2e-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    // Pod Security admission at its strictest: the StatefulSet's pods must pass `restricted`.
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {
        "name": ns,
        "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
    }}))
    .unwrap();
    namespaces
        .patch(
            &ns,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&namespace),
        )
        .await
        .unwrap();

    // The controllers, with the ServiceAccount's permissions only.
    let mut config = Config::infer().await.unwrap();
    config.auth_info.impersonate =
        Some("system:serviceaccount:strata-system:strata-operator".into());
    let operator = Client::try_from(strata_operator::client::configure(config)).unwrap();

    // Leader election through the Role, as two replicas of the operator would campaign.
    let elector = LeaderElector::new(
        operator.clone(),
        LeaseConfig::new(
            format!("strata-e2e-{}", std::process::id()),
            "strata-system".into(),
            "e2e".into(),
        ),
    );
    assert!(
        elector.try_acquire_or_renew().await.unwrap(),
        "won the lease"
    );
    assert!(
        elector.try_acquire_or_renew().await.unwrap(),
        "renewed the lease"
    );
    let lease = Api::<Lease>::namespaced(admin.clone(), "strata-system")
        .get(&elector.config().name)
        .await
        .unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("e2e"));
    assert_eq!(managers(&lease.metadata), [OPERATOR]);
    elector.release().await.unwrap();
    Api::<Lease>::namespaced(admin.clone(), "strata-system")
        .delete(&elector.config().name, &DeleteParams::default())
        .await
        .unwrap();

    let ctx = Arc::new(Context::new(
        operator,
        Some("e2e".into()),
        Arc::new(Metrics::default()),
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controllers = tokio::spawn(controller::run(ctx, Some(ns.clone()), async move {
        let _ = stop_rx.await;
    }));

    let clusters: Api<StrataCluster> = Api::namespaced(admin.clone(), &ns);
    let statefulsets: Api<StatefulSet> = Api::namespaced(admin.clone(), &ns);
    let cluster = json!({
        "apiVersion": "strata.dev/v1alpha1", "kind": "StrataCluster",
        "metadata": {"name": "demo", "namespace": ns},
        "spec": {"image": "strata/strata-node:0.1.0", "replicas": 3,
                 "storage": {"size": "1Gi", "reclaimPolicy": "Delete"}},
    });
    clusters
        .patch(
            "demo",
            &PatchParams::apply(MANAGER),
            &Patch::Apply(&cluster),
        )
        .await
        .unwrap();

    let replicas = |want: i32| {
        let statefulsets = statefulsets.clone();
        async move {
            let sts = statefulsets.get_opt("demo").await.ok()??;
            (sts.spec?.replicas? == want).then_some(())
        }
    };
    eventually("the StatefulSet runs 3 replicas", || replicas(3)).await;
    assert!(Api::<ConfigMap>::namespaced(admin.clone(), &ns)
        .get("demo-config")
        .await
        .is_ok());
    assert!(Api::<Service>::namespaced(admin.clone(), &ns)
        .get("demo-peers")
        .await
        .is_ok());
    assert!(Api::<Service>::namespaced(admin.clone(), &ns)
        .get("demo")
        .await
        .is_ok());
    assert!(Api::<PodDisruptionBudget>::namespaced(admin.clone(), &ns)
        .get("demo")
        .await
        .is_ok());
    let status = eventually("the status has its conditions", || {
        let clusters = clusters.clone();
        async move {
            let status = clusters.get("demo").await.ok()?.status?;
            (status.conditions.len() == 3 && status.observed_generation == Some(1))
                .then_some(status)
        }
    })
    .await;
    assert!(status.selector.is_some());

    // One field manager for every write of the operator: its applies, and the finalizer's
    // JSON patch, which names its manager through the User-Agent only.
    let sts = statefulsets.get("demo").await.unwrap();
    assert_eq!(managers(&sts.metadata), [OPERATOR]);
    let pdb = Api::<PodDisruptionBudget>::namespaced(admin.clone(), &ns)
        .get("demo")
        .await
        .unwrap();
    assert_eq!(managers(&pdb.metadata), [OPERATOR]);
    let stored = clusters.get("demo").await.unwrap();
    assert!(stored
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == "strata.dev/cleanup"));
    for entry in stored.metadata.managed_fields.iter().flatten() {
        let fields = serde_json::to_string(&entry.fields_v1).unwrap();
        if fields.contains("f:finalizers") || entry.subresource.as_deref() == Some("status") {
            assert_eq!(entry.manager.as_deref(), Some(OPERATOR), "{entry:?}");
        }
    }

    // A backup: no node runs here (no kubelet), so the operator says plainly that it cannot
    // reach the cluster's Admin.Backup (a real node would answer UNIMPLEMENTED: phase
    // NotSupported, tested against a node on loopback), and the API server keeps its spec
    // immutable.
    let backups: Api<StrataBackup> = Api::namespaced(admin.clone(), &ns);
    let backup = json!({
        "apiVersion": "strata.dev/v1alpha1", "kind": "StrataBackup",
        "metadata": {"name": "first", "namespace": ns},
        "spec": {"cluster": "demo", "destination": {"volume": {"claimName": "backups"}}},
    });
    backups
        .patch(
            "first",
            &PatchParams::apply(MANAGER),
            &Patch::Apply(&backup),
        )
        .await
        .unwrap();
    eventually("the backup has a phase", || {
        let backups = backups.clone();
        async move {
            let status = backups.get("first").await.ok()?.status?;
            (status.phase == Some(BackupPhase::Pending)
                && status.conditions.first()?.reason == "ClusterUnreachable"
                && status.observed_generation == Some(1))
            .then_some(())
        }
    })
    .await;
    let err = backups
        .patch(
            "first",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"cluster": "other"}})),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("immutable"), "{err}");

    // Scale out, through the scale subresource as `kubectl scale` does.
    clusters
        .patch_scale(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    eventually("the StatefulSet runs 5 replicas", || replicas(5)).await;

    // A hand edit of a field the operator owns is put back (its applies are forced).
    statefulsets
        .patch(
            "demo",
            &PatchParams {
                field_manager: Some(MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    eventually("the hand edit is put back", || replicas(5)).await;

    // Unsafe edits the API server refuses (CEL).
    let refused = |patch: Value, expected: &'static str| {
        let clusters = clusters.clone();
        async move {
            let err = clusters
                .patch("demo", &PatchParams::default(), &Patch::Merge(patch))
                .await
                .unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
    };
    refused(
        json!({"spec": {"replicas": 2}}),
        "spec.replicas must be at least",
    )
    .await;
    refused(
        json!({"spec": {"storage": {"storageClassName": "other"}}}),
        "immutable",
    )
    .await;

    // A scale-in starts a drain: recorded in the status, nodes 5 and 4 draining. No node
    // runs here to decommission them, so the drain waits and the StatefulSet stays at 5.
    clusters
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    eventually("the scale-in drains first", || {
        let clusters = clusters.clone();
        async move {
            let status = clusters.get("demo").await.ok()?.status?;
            let drain = status.drain?;
            let ids: Vec<i64> = drain.nodes.iter().map(|n| n.id).collect();
            let draining = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Progressing" && c.status == "True" && c.reason == "Draining");
            (draining && (drain.from, drain.to) == (5, 3) && ids == [5, 4]).then_some(())
        }
    })
    .await;
    replicas(5)
        .await
        .expect("the StatefulSet was lowered before its nodes were drained");

    // The StatefulSet controller made a claim for each of the 5 pods (which never run).
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), &ns);
    let data_claims = || {
        let claims = claims.clone();
        async move {
            let listed = claims.list(&ListParams::default()).await.ok()?;
            Some(
                listed
                    .items
                    .iter()
                    .filter_map(|c| c.metadata.name.clone())
                    .filter(|name| name.starts_with("data-demo-"))
                    .count(),
            )
        }
    };
    eventually("the StatefulSet controller made 5 claims", || async {
        (data_claims().await? == 5).then_some(())
    })
    .await;
    // And 5 pods, admitted as they are built (they stay Pending: no kubelet).
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    eventually("the StatefulSet controller made 5 pods", || {
        let pods = pods.clone();
        async move {
            let listed = pods.list(&ListParams::default()).await.ok()?;
            (listed.items.len() == 5).then_some(())
        }
    })
    .await;

    // Deletion through the finalizer: the cleanup deletes the claims (reclaimPolicy:
    // Delete), the garbage collector the owned objects.
    clusters
        .delete("demo", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the StrataCluster is gone", || {
        let clusters = clusters.clone();
        async move { matches!(clusters.get_opt("demo").await, Ok(None)).then_some(()) }
    })
    .await;
    eventually("the owned objects are garbage collected", || {
        let admin = admin.clone();
        let ns = ns.clone();
        async move {
            let gone = |found: Result<Option<()>, kube::Error>| matches!(found, Ok(None));
            let sts = Api::<StatefulSet>::namespaced(admin.clone(), &ns);
            let cms = Api::<ConfigMap>::namespaced(admin.clone(), &ns);
            let svcs = Api::<Service>::namespaced(admin.clone(), &ns);
            let pdbs = Api::<PodDisruptionBudget>::namespaced(admin, &ns);
            (gone(sts.get_opt("demo").await.map(|o| o.map(drop)))
                && gone(cms.get_opt("demo-config").await.map(|o| o.map(drop)))
                && gone(svcs.get_opt("demo").await.map(|o| o.map(drop)))
                && gone(svcs.get_opt("demo-peers").await.map(|o| o.map(drop)))
                && gone(pdbs.get_opt("demo").await.map(|o| o.map(drop))))
            .then_some(())
        }
    })
    .await;
    eventually("no volume claim is left", || async {
        (data_claims().await? == 0).then_some(())
    })
    .await;

    let _ = stop_tx.send(());
    controllers.await.unwrap();
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
}
