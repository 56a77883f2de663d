//! Reconcile scenarios against the fake API server: create, status update, spec update,
//! scale-out, refused scale below the replication factor, an invalid spec, API errors with
//! backoff, and deletion through the finalizer. The scale-in drain's scenarios are in
//! `drain_tests.rs`, on the same [`Scenario`].

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::runtime::controller::Action;
use serde_json::{json, Value};

use std::collections::HashMap;

use futures::future::BoxFuture;
use parking_lot::Mutex;

use super::names::ordinal_of;
use super::probe::{NodeProbe, NodeReport};
use super::reconcile::{reconcile, FINALIZER, RESYNC, WHILE_PROGRESSING};
use crate::controller::{error_policy, Context};
use crate::crd::{ClusterPhase, NodeState, StrataCluster};
use crate::fake_api::FakeApi;
use crate::metrics::Metrics;

pub(super) const CLUSTER: &str = "/apis/strata.dev/v1alpha1/namespaces/db/strataclusters/demo";
pub(super) const STS: &str = "/apis/apps/v1/namespaces/db/statefulsets/demo";
pub(super) const PODS: &str = "/api/v1/namespaces/db/pods";
pub(super) const PVCS: &str = "/api/v1/namespaces/db/persistentvolumeclaims";

/// Answers `Admin.Status` for the nodes: each as its ordinal's id, unless told otherwise.
#[derive(Default)]
struct FakeProbe {
    overrides: Mutex<HashMap<i32, Result<NodeReport, String>>>,
    asked: Mutex<Vec<String>>,
}

impl NodeProbe for FakeProbe {
    fn status(&self, endpoint: String) -> BoxFuture<'static, Result<NodeReport, String>> {
        self.asked.lock().push(endpoint.clone());
        let ordinal = endpoint
            .split('.')
            .next()
            .and_then(ordinal_of)
            .unwrap_or(-1);
        let answer = self
            .overrides
            .lock()
            .get(&ordinal)
            .cloned()
            .unwrap_or(Ok(NodeReport {
                node_id: u64::try_from(ordinal + 1).unwrap_or(0),
                version: "0.1.0".into(),
                ..NodeReport::default()
            }));
        Box::pin(async move { answer })
    }
}

pub(super) struct Scenario {
    pub(super) fake: FakeApi,
    probe: Arc<FakeProbe>,
    pub(super) ctx: Arc<Context>,
}

impl Scenario {
    fn new(spec: Value) -> Scenario {
        let probe = Arc::new(FakeProbe::default());
        let mut s = Scenario::with(
            spec,
            Arc::clone(&probe) as Arc<dyn NodeProbe>,
            Arc::new(crate::cluster::admin::GrpcAdmin::default()),
        );
        s.probe = probe;
        s
    }

    /// A scenario whose nodes answer through `probe` and `admin`.
    pub(super) fn with(
        spec: Value,
        probe: Arc<dyn NodeProbe>,
        admin: Arc<dyn crate::cluster::admin::ClusterAdmin>,
    ) -> Scenario {
        let (client, fake) = FakeApi::start();
        fake.insert(
            CLUSTER,
            json!({
                "apiVersion": "strata.dev/v1alpha1", "kind": "StrataCluster",
                "metadata": {"name": "demo", "namespace": "db"},
                "spec": spec,
            }),
        );
        let ctx = Arc::new(Context::with_cluster(
            client,
            Some("operator-0".into()),
            Arc::new(Metrics::default()),
            probe,
            admin,
        ));
        Scenario {
            fake,
            probe: Arc::new(FakeProbe::default()),
            ctx,
        }
    }

    /// A fresh operator process on the same API server: nothing of the old one's memory
    /// (calls in flight, backoff) survives, only what is stored in the API server.
    pub(super) fn restart_operator(
        &mut self,
        probe: Arc<dyn NodeProbe>,
        admin: Arc<dyn crate::cluster::admin::ClusterAdmin>,
    ) {
        self.ctx = Arc::new(Context::with_cluster(
            self.ctx.client.clone(),
            Some("operator-1".into()),
            Arc::new(Metrics::default()),
            probe,
            admin,
        ));
    }

    /// The cluster as the watch would deliver it now.
    pub(super) fn cluster(&self) -> StrataCluster {
        self.fake.get_as(CLUSTER)
    }

    pub(super) async fn reconcile(&self) -> crate::error::Result<Action> {
        reconcile(Arc::new(self.cluster()), Arc::clone(&self.ctx)).await
    }

    /// Adds the finalizer (first reconcile) and applies (second).
    pub(super) async fn create(&self) -> Action {
        assert_eq!(self.reconcile().await.unwrap(), Action::await_change());
        assert_eq!(
            self.cluster().metadata.finalizers,
            Some(vec![FINALIZER.to_owned()])
        );
        self.reconcile().await.unwrap()
    }

    pub(super) fn edit_spec(&self, change: impl FnOnce(&mut Value)) {
        self.fake.edit(CLUSTER, |c| {
            change(&mut c["spec"]);
            let generation = c["metadata"]["generation"].as_i64().unwrap();
            c["metadata"]["generation"] = json!(generation + 1);
        });
    }

    pub(super) fn statefulset(&self) -> StatefulSet {
        self.fake.get_as(STS)
    }

    pub(super) fn sts_replicas(&self) -> i32 {
        self.statefulset().spec.unwrap().replicas.unwrap()
    }

    /// What the StatefulSet controller and kubelet would do: `ready` of the pods run ready.
    fn run_pods(&self, ready: i32) {
        let replicas = self.sts_replicas();
        self.fake.edit(STS, |s| {
            let generation = s["metadata"]["generation"].clone();
            s["status"] = json!({
                "replicas": replicas, "readyReplicas": ready, "updatedReplicas": replicas,
                "currentReplicas": replicas, "observedGeneration": generation,
                "currentRevision": "r1", "updateRevision": "r1",
            });
        });
        for i in 0..replicas {
            let name = format!("demo-{i}");
            self.fake.insert(
                &format!("{PODS}/{name}"),
                json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": "db", "labels": {
                        "app.kubernetes.io/name": "strata", "app.kubernetes.io/instance": "demo",
                        "app.kubernetes.io/component": "node"}},
                    "status": {"phase": "Running", "conditions": [
                        {"type": "Ready", "status": if i < ready {"True"} else {"False"}}]}
                }),
            );
        }
    }

    pub(super) fn condition(&self, ty: &str) -> (String, String) {
        let status = self.cluster().status.unwrap();
        let c = status.conditions.iter().find(|c| c.type_ == ty).unwrap();
        (c.status.clone(), c.reason.clone())
    }

    pub(super) fn event_reasons(&self) -> Vec<String> {
        self.fake
            .events()
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

pub(super) fn spec() -> Value {
    json!({"image": "strata-node:0.1.0", "replicas": 3, "replicationFactor": 3,
           "storage": {"size": "10Gi", "reclaimPolicy": "Retain"}})
}

#[tokio::test]
async fn create_applies_every_object_with_one_field_manager() {
    let s = Scenario::new(spec());
    assert_eq!(s.create().await, Action::requeue(WHILE_PROGRESSING));
    for path in [
        "/api/v1/namespaces/db/configmaps/demo-config",
        "/api/v1/namespaces/db/services/demo-peers",
        "/api/v1/namespaces/db/services/demo",
        STS,
        "/apis/policy/v1/namespaces/db/poddisruptionbudgets/demo",
    ] {
        let object = s
            .fake
            .get(path)
            .unwrap_or_else(|| panic!("{path} was not created"));
        let owner = &object["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "StrataCluster", "{path}");
        assert_eq!(
            owner["uid"],
            s.cluster().metadata.uid.unwrap().as_str(),
            "{path}"
        );
    }
    assert_eq!(s.sts_replicas(), 3);
    // Every write but the finalizer and events is a forced server-side apply by one manager.
    for call in s.fake.calls() {
        if call.method == "PATCH" && !call.content_type.contains("json-patch") {
            assert!(
                call.content_type.starts_with("application/apply-patch"),
                "{call:?}"
            );
            assert!(
                call.query.contains("fieldManager=strata-operator"),
                "{call:?}"
            );
            assert!(call.query.contains("force=true"), "{call:?}");
        }
        assert!(
            !matches!(call.method.as_str(), "PUT" | "DELETE"),
            "{call:?}"
        );
        if call.method == "POST" {
            assert!(call.path.starts_with("/apis/events.k8s.io/"), "{call:?}");
        }
    }
    let status = s.cluster().status.unwrap();
    assert_eq!(status.phase, Some(ClusterPhase::Creating));
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(
        status.selector.as_deref(),
        Some("app.kubernetes.io/component=node,app.kubernetes.io/instance=demo,app.kubernetes.io/name=strata")
    );
    assert_eq!(
        s.condition("Progressing"),
        ("True".into(), "Scaling".into())
    );
    assert_eq!(
        s.condition("Available"),
        ("False".into(), "NotEnoughReadyNodes".into())
    );
    assert_eq!(
        s.condition("Degraded"),
        ("False".into(), "AsExpected".into())
    );
    assert_eq!(s.event_reasons(), ["Created"]);
}

#[tokio::test]
async fn status_follows_the_statefulset_and_pods() {
    let s = Scenario::new(spec());
    s.create().await;
    s.run_pods(1);
    s.reconcile().await.unwrap();
    let status = s.cluster().status.unwrap();
    assert_eq!(status.ready_replicas, 1);
    assert_eq!(
        s.condition("Available"),
        ("False".into(), "NotEnoughReadyNodes".into())
    );
    let states: Vec<_> = status.nodes.iter().map(|n| (n.id, n.state)).collect();
    assert_eq!(
        states,
        [
            (1, NodeState::Ready),
            (2, NodeState::Starting),
            (3, NodeState::Starting)
        ]
    );

    s.run_pods(3);
    assert_eq!(s.reconcile().await.unwrap(), Action::requeue(RESYNC));
    let status = s.cluster().status.unwrap();
    assert_eq!(status.phase, Some(ClusterPhase::Running));
    assert_eq!((status.replicas, status.ready_replicas), (3, 3));
    assert_eq!(
        s.condition("Available"),
        ("True".into(), "QuorumReady".into())
    );
    assert_eq!(
        s.condition("Progressing"),
        ("False".into(), "Reconciled".into())
    );
    assert!(s.event_reasons().contains(&"Available".to_owned()));

    // Nothing changed: the next reconcile writes no status and publishes no event.
    let events = s.fake.events().len();
    let since = s.cluster().status.unwrap().conditions[0]
        .last_transition_time
        .clone();
    s.fake.clear_calls();
    s.reconcile().await.unwrap();
    assert!(
        !s.fake.calls().iter().any(|c| c.path.ends_with("/status")),
        "an unchanged status is not written"
    );
    assert_eq!(s.fake.events().len(), events);
    assert_eq!(
        s.cluster().status.unwrap().conditions[0].last_transition_time,
        since
    );
}

#[tokio::test]
async fn a_spec_update_reaches_the_statefulset() {
    let s = Scenario::new(spec());
    s.create().await;
    s.run_pods(3);
    s.reconcile().await.unwrap();
    s.edit_spec(|spec| {
        spec["image"] = json!("strata-node:0.2.0");
        spec["nodeConfig"] = json!({"engine": {"compression": "lz4"}});
    });
    s.reconcile().await.unwrap();
    let pod = s.statefulset().spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("strata-node:0.2.0")
    );
    let config = s
        .fake
        .get("/api/v1/namespaces/db/configmaps/demo-config")
        .unwrap();
    assert!(config["data"]["node.yaml"]
        .as_str()
        .unwrap()
        .contains("compression: lz4"));
    assert_eq!(s.cluster().status.unwrap().observed_generation, Some(2));
    assert!(s.event_reasons().contains(&"Updated".to_owned()));
}

#[tokio::test]
async fn scale_out_raises_the_statefulset() {
    let s = Scenario::new(spec());
    s.create().await;
    s.run_pods(3);
    s.reconcile().await.unwrap();
    s.edit_spec(|spec| spec["replicas"] = json!(5));
    assert_eq!(
        s.reconcile().await.unwrap(),
        Action::requeue(WHILE_PROGRESSING)
    );
    assert_eq!(s.sts_replicas(), 5);
    assert_eq!(s.condition("Progressing").0, "True");
    assert!(s.event_reasons().contains(&"ScalingOut".to_owned()));
    s.run_pods(5);
    s.reconcile().await.unwrap();
    assert_eq!(s.cluster().status.unwrap().nodes.len(), 5);
    assert_eq!(
        s.cluster().status.unwrap().phase,
        Some(ClusterPhase::Running)
    );
}

#[tokio::test]
async fn scale_below_the_replication_factor_is_refused() {
    let s = Scenario::new(spec());
    s.create().await;
    // As if CEL were off: the API server stored replicas < replicationFactor.
    s.edit_spec(|spec| spec["replicas"] = json!(2));
    s.reconcile().await.unwrap();
    assert_eq!(s.sts_replicas(), 3);
    assert_eq!(
        s.condition("Degraded"),
        ("True".into(), "BelowReplicationFactor".into())
    );
    let status = s.cluster().status.unwrap();
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert!(
        degraded.message.contains("below spec.replicationFactor 3"),
        "{}",
        degraded.message
    );
}

#[tokio::test]
async fn an_invalid_spec_applies_nothing() {
    let s =
        Scenario::new(json!({"image": "strata-node:0.1.0", "replicas": 4, "replicationFactor": 2}));
    s.create().await;
    assert!(!s.fake.exists(STS));
    assert!(!s
        .fake
        .exists("/api/v1/namespaces/db/configmaps/demo-config"));
    assert_eq!(
        s.condition("Degraded"),
        ("True".into(), "InvalidSpec".into())
    );
    assert_eq!(s.event_reasons(), ["InvalidSpec"]);
}

#[tokio::test]
async fn api_errors_requeue_with_backoff() {
    let s = Scenario::new(spec());
    s.create().await;
    for expected in [1, 2, 4] {
        s.fake.fail_next("GET", "/statefulsets/demo", 500);
        let error = s.reconcile().await.unwrap_err();
        let action = error_policy(Arc::new(s.cluster()), &error, Arc::clone(&s.ctx));
        assert_eq!(action, Action::requeue(Duration::from_secs(expected)));
    }
    assert!(s.ctx.metrics.render().contains(
        "strata_operator_reconcile_errors_total{kind=\"StrataCluster\",error=\"finalizer\"} 3"
    ));
    // A success resets the backoff.
    s.reconcile().await.unwrap();
    s.fake.fail_next("PATCH", "/statefulsets/demo", 409);
    let error = s.reconcile().await.unwrap_err();
    let action = error_policy(Arc::new(s.cluster()), &error, Arc::clone(&s.ctx));
    assert_eq!(action, Action::requeue(Duration::from_secs(1)));
}

#[tokio::test]
async fn deletion_runs_the_cleanup_and_drops_the_finalizer() {
    let mut spec = spec();
    spec["storage"]["reclaimPolicy"] = json!("Delete");
    let s = Scenario::new(spec);
    s.create().await;
    let labels = json!({"app.kubernetes.io/name": "strata", "app.kubernetes.io/instance": "demo",
                        "app.kubernetes.io/component": "node"});
    for name in ["data-demo-0", "data-demo-1", "backup-scratch"] {
        s.fake.insert(
            &format!("{PVCS}/{name}"),
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                   "metadata": {"name": name, "namespace": "db", "labels": labels}}),
        );
    }
    s.fake.edit(CLUSTER, |c| {
        c["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    });
    assert_eq!(s.reconcile().await.unwrap(), Action::await_change());
    assert_eq!(s.cluster().metadata.finalizers, Some(vec![]));
    assert!(!s.fake.exists(&format!("{PVCS}/data-demo-0")));
    assert!(!s.fake.exists(&format!("{PVCS}/data-demo-1")));
    assert!(
        s.fake.exists(&format!("{PVCS}/backup-scratch")),
        "only the StatefulSet's claims go"
    );
    assert!(s.event_reasons().contains(&"Deleting".to_owned()));
}

#[tokio::test]
async fn deletion_keeps_volumes_by_default() {
    let s = Scenario::new(spec());
    s.create().await;
    s.fake.insert(
        &format!("{PVCS}/data-demo-0"),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": "data-demo-0", "namespace": "db",
                            "labels": {"app.kubernetes.io/instance": "demo"}}}),
    );
    s.fake.edit(CLUSTER, |c| {
        c["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z")
    });
    s.reconcile().await.unwrap();
    assert_eq!(s.cluster().metadata.finalizers, Some(vec![]));
    assert!(s.fake.exists(&format!("{PVCS}/data-demo-0")));
    assert!(!s.fake.calls().iter().any(|c| c.method == "DELETE"));
}

#[tokio::test]
async fn nodes_are_asked_for_their_own_status() {
    let s = Scenario::new(spec());
    s.create().await;
    s.run_pods(3);
    s.reconcile().await.unwrap();
    let mut asked = s.probe.asked.lock().clone();
    asked.sort();
    assert_eq!(
        asked,
        [
            "demo-0.demo-peers.db.svc:7379",
            "demo-1.demo-peers.db.svc:7379",
            "demo-2.demo-peers.db.svc:7379"
        ]
    );
    let status = s.cluster().status.unwrap();
    assert!(status
        .nodes
        .iter()
        .all(|n| n.version.as_deref() == Some("0.1.0")));

    // One node answers under another node's id: it is failed, and the cluster degraded.
    s.probe.overrides.lock().insert(
        2,
        Ok(NodeReport {
            node_id: 1,
            version: "0.1.0".into(),
            ..NodeReport::default()
        }),
    );
    s.reconcile().await.unwrap();
    let status = s.cluster().status.unwrap();
    assert_eq!(status.nodes[2].state, NodeState::Failed);
    assert_eq!(
        s.condition("Degraded"),
        ("True".into(), "NodeFailed".into())
    );
    assert_eq!(
        s.condition("Available"),
        ("True".into(), "QuorumReady".into())
    );
}

#[tokio::test]
async fn an_unreachable_cluster_is_a_condition_not_an_error() {
    let s = Scenario::new(spec());
    s.create().await;
    s.run_pods(3);
    for ordinal in 0..3 {
        let error = Err(format!("cannot connect to demo-{ordinal}"));
        s.probe.overrides.lock().insert(ordinal, error);
    }
    assert!(s.reconcile().await.is_ok());
    let status = s.cluster().status.unwrap();
    assert!(status
        .nodes
        .iter()
        .all(|n| n.state == NodeState::Unreachable));
    assert_eq!(
        s.condition("Available"),
        ("False".into(), "Unreachable".into())
    );
    let available = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Available")
        .unwrap();
    assert!(
        available.message.contains("cannot connect"),
        "{}",
        available.message
    );

    // One node comes back: still short of a quorum of 2.
    s.probe.overrides.lock().remove(&0);
    s.reconcile().await.unwrap();
    assert_eq!(
        s.condition("Available"),
        ("False".into(), "NotEnoughReadyNodes".into())
    );
}

#[tokio::test]
async fn a_backup_schedule_creates_strata_backups() {
    let mut spec = spec();
    spec["backup"] = json!({"schedule": "0 3 * * *",
                            "destination": {"volume": {"claimName": "b", "path": "/"}}});
    let s = Scenario::new(spec);
    // Created long ago: a scheduled time has passed.
    s.fake.edit(CLUSTER, |c| {
        c["metadata"]["creationTimestamp"] = json!("2020-01-01T00:00:00Z")
    });
    let action = s.create().await;
    let status = s.cluster().status.unwrap();
    let schedule = status.backup_schedule.unwrap();
    let name = schedule.last_backup.unwrap();
    assert!(
        name.starts_with("demo-") && name.ends_with("0300"),
        "{name}"
    );
    assert!(schedule.next_schedule_time.is_some());
    let backup: crate::crd::StrataBackup = s.fake.get_as(&format!(
        "/apis/strata.dev/v1alpha1/namespaces/db/stratabackups/{name}"
    ));
    assert_eq!(backup.spec.cluster, "demo");
    assert!(s.event_reasons().iter().any(|r| r == "BackupScheduled"));
    assert_ne!(action, Action::await_change(), "requeued for the next time");
    // Once recorded, the next reconcile creates no other.
    s.reconcile().await.unwrap();
    let backups = s
        .fake
        .calls()
        .iter()
        .filter(|c| c.method == "PATCH" && c.path.contains("/stratabackups/"))
        .count();
    assert_eq!(backups, 1);
}
