//! The scale-in drain against the fake API server and a model of the cluster, and once
//! against real nodes on loopback.
//!
//! [`FakeCluster`] models what the operator depends on: the data shard's members (with the
//! incarnation each was added under), the node processes the pods run, and what a node does
//! when it starts: on a fresh volume it joins under a new incarnation (replacing a member of
//! its id recorded with another one, as the leader does); on a volume that already holds a
//! raft log it ignores `--join`, so a node that was removed from the cluster and comes back
//! on its old volume stays outside it (stranded). `Decommission` removes the member (refused
//! below the replication factor); a node can be held so its `Decommission` times out.
//!
//! The harness plays the StatefulSet controller and the kubelet: it creates a pod, and its
//! volume claim when missing (a fresh volume), for each ordinal below the StatefulSet's
//! size, and deletes the pods above it (their claims stay, as a StatefulSet leaves them).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::json;

use super::admin::{AdminError, BackupAnswer, ClusterAdmin, Drain};
use super::names::ordinal_of;
use super::probe::{MemberReport, NodeProbe, NodeReport, ReplicaReport};
use super::reconcile::WHILE_DRAINING;
use super::reconcile_tests::{spec, Scenario, PODS, PVCS, STS};
use crate::crd::{DrainNodeState, MemberStatus};

#[derive(Default)]
struct Model {
    /// Node id -> (voter, incarnation).
    members: BTreeMap<u64, (bool, String)>,
    /// Node id -> the incarnation of the volume its running process has.
    running: BTreeMap<u64, String>,
    /// Incarnations whose volume holds a raft log (they were members once).
    logs: BTreeSet<String>,
    /// Nodes whose `Decommission` times out.
    held: BTreeSet<u64>,
    /// Every call, in order.
    calls: Vec<String>,
}

/// A model of a Strata cluster behind the operator's probe and admin traits.
#[derive(Default)]
struct FakeCluster {
    model: Mutex<Model>,
}

fn id_of(endpoint: &str) -> u64 {
    let ordinal = endpoint
        .split('.')
        .next()
        .and_then(ordinal_of)
        .unwrap_or(-1);
    u64::try_from(ordinal + 1).unwrap_or(0)
}

fn unreachable(endpoint: &str) -> AdminError {
    AdminError {
        try_another: true,
        message: format!("cannot connect to {endpoint}"),
    }
}

impl FakeCluster {
    /// A pod's node starts on a volume of `incarnation` (new: a fresh volume).
    fn start(&self, id: u64, incarnation: &str) {
        let mut m = self.model.lock();
        m.running.insert(id, incarnation.to_owned());
        let has_log = m.logs.contains(incarnation);
        match m.members.get(&id) {
            Some((_, inc)) if inc == incarnation => {}
            // A raft log: `--join` is ignored; removed from the cluster, it stays out.
            _ if has_log => {}
            // Fresh: joins, the leader replacing an old identity under the same id.
            _ => {
                m.members.insert(id, (true, incarnation.to_owned()));
                m.logs.insert(incarnation.to_owned());
            }
        }
    }

    fn stop(&self, id: u64) {
        self.model.lock().running.remove(&id);
    }

    fn hold(&self, id: u64, held: bool) {
        let mut m = self.model.lock();
        if held {
            m.held.insert(id);
        } else {
            m.held.remove(&id);
        }
    }

    fn calls(&self) -> Vec<String> {
        self.model.lock().calls.clone()
    }

    fn members(&self) -> Vec<u64> {
        self.model.lock().members.keys().copied().collect()
    }

    /// Running nodes that are no member: they would serve nothing, forever.
    fn stranded(&self) -> Vec<u64> {
        let m = self.model.lock();
        m.running
            .keys()
            .filter(|id| !m.members.contains_key(id))
            .copied()
            .collect()
    }

    fn leader(m: &Model) -> Option<u64> {
        m.members.keys().next().copied()
    }
}

impl NodeProbe for FakeCluster {
    fn status(&self, endpoint: String) -> BoxFuture<'static, Result<NodeReport, String>> {
        let id = id_of(&endpoint);
        let m = self.model.lock();
        let answer = match m.running.get(&id) {
            None => Err(format!("cannot connect to {endpoint}")),
            Some(incarnation) => {
                let member = m.members.get(&id).is_some_and(|(_, i)| i == incarnation);
                Ok(NodeReport {
                    node_id: id,
                    version: "0.1.0".into(),
                    replicas: if member {
                        vec![ReplicaReport {
                            shard_id: 1,
                            leader: FakeCluster::leader(&m) == Some(id),
                            leader_node_id: FakeCluster::leader(&m).unwrap_or(0),
                        }]
                    } else {
                        Vec::new()
                    },
                    incarnation: incarnation.clone(),
                    members: m
                        .members
                        .iter()
                        .map(|(id, (voter, inc))| MemberReport {
                            node_id: *id,
                            voter: *voter,
                            incarnation: inc.clone(),
                        })
                        .collect(),
                })
            }
        };
        Box::pin(async move { answer })
    }
}

impl ClusterAdmin for FakeCluster {
    fn decommission(
        &self,
        endpoint: String,
        node_id: u64,
        replication_factor: u32,
    ) -> BoxFuture<'static, Result<String, AdminError>> {
        let mut m = self.model.lock();
        m.calls.push(format!("Decommission({node_id})"));
        let answer = if !m.running.contains_key(&id_of(&endpoint)) {
            Err(unreachable(&endpoint))
        } else if m.held.contains(&node_id) {
            Err(AdminError {
                try_another: false,
                message: format!("Admin.Decommission at {endpoint}: no answer in 120s"),
            })
        } else if !m.members.contains_key(&node_id) {
            Ok(format!("node {node_id} is not a member"))
        } else if m.members.values().filter(|(voter, _)| *voter).count()
            <= replication_factor as usize
        {
            Err(AdminError {
                try_another: false,
                message: format!("decommissioning node {node_id} would leave fewer voters than the replication factor {replication_factor}"),
            })
        } else {
            m.members.remove(&node_id);
            Ok(format!("removed node {node_id}"))
        };
        Box::pin(async move { answer })
    }

    fn drain_state(
        &self,
        endpoint: String,
        node_id: u64,
    ) -> BoxFuture<'static, Result<Drain, AdminError>> {
        let mut m = self.model.lock();
        m.calls.push(format!("DecommissionStatus({node_id})"));
        let answer = if !m.running.contains_key(&id_of(&endpoint)) {
            Err(unreachable(&endpoint))
        } else if m.members.contains_key(&node_id) {
            Ok(Drain::Active)
        } else {
            Ok(Drain::Drained)
        };
        Box::pin(async move { answer })
    }

    fn backup(&self, _endpoint: String) -> BoxFuture<'static, Result<BackupAnswer, AdminError>> {
        self.model.lock().calls.push("Backup".to_owned());
        Box::pin(async { Ok(BackupAnswer::Unimplemented("no Admin.Backup".into())) })
    }
}

const KEY: &str = "db/demo/";

struct Harness {
    s: Scenario,
    cluster: Arc<FakeCluster>,
    volumes: u64,
}

impl Harness {
    fn new(replicas: i32) -> Harness {
        let cluster = Arc::new(FakeCluster::default());
        let mut spec = spec();
        spec["replicas"] = json!(replicas);
        let s = Scenario::with(
            spec,
            Arc::clone(&cluster) as Arc<dyn NodeProbe>,
            Arc::clone(&cluster) as Arc<dyn ClusterAdmin>,
        );
        Harness {
            s,
            cluster,
            volumes: 0,
        }
    }

    fn restart_operator(&mut self) {
        let cluster = Arc::clone(&self.cluster);
        self.s.restart_operator(
            Arc::clone(&cluster) as Arc<dyn NodeProbe>,
            cluster as Arc<dyn ClusterAdmin>,
        );
    }

    /// The StatefulSet controller and the kubelet: pods (and missing claims) below the
    /// StatefulSet's size run ready; the pods above it are deleted.
    fn run_pods(&mut self) {
        let replicas = self.s.sts_replicas();
        let labels = json!({"app.kubernetes.io/name": "strata", "app.kubernetes.io/instance": "demo",
                            "app.kubernetes.io/component": "node"});
        for ordinal in 0..replicas.max(8) {
            let id = u64::try_from(ordinal + 1).unwrap();
            let pod = format!("{PODS}/demo-{ordinal}");
            if ordinal >= replicas {
                if self.s.fake.exists(&pod) {
                    self.s.fake.delete(&pod);
                }
                self.cluster.stop(id);
                continue;
            }
            let claim = format!("{PVCS}/data-demo-{ordinal}");
            if !self.s.fake.exists(&claim) {
                self.volumes += 1;
                self.s.fake.insert(
                    &claim,
                    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                           "metadata": {"name": format!("data-demo-{ordinal}"), "namespace": "db",
                                        "labels": labels.clone(),
                                        "annotations": {"test/incarnation": format!("inc-{}", self.volumes)}}}),
                );
            }
            let incarnation = self.s.fake.get(&claim).unwrap()["metadata"]["annotations"]
                ["test/incarnation"]
                .as_str()
                .unwrap()
                .to_owned();
            self.s.fake.insert(
                &pod,
                json!({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": format!("demo-{ordinal}"), "namespace": "db", "labels": labels.clone()},
                       "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
            );
            self.cluster.start(id, &incarnation);
        }
        self.s.fake.edit(STS, |s| {
            let generation = s["metadata"]["generation"].clone();
            s["status"] = json!({
                "replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas,
                "currentReplicas": replicas, "observedGeneration": generation,
                "currentRevision": "r1", "updateRevision": "r1",
            });
        });
    }

    /// Waits (bounded) until no `Decommission` call of this process is in flight.
    async fn calls_settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while (1..=8).any(|id| self.s.ctx.drains.running(&format!("{KEY}{id}"))) {
            assert!(
                Instant::now() < deadline,
                "a Decommission call never finished"
            );
            tokio::task::yield_now().await;
        }
    }

    /// One reconcile, the calls it started finished, the pods run.
    async fn step(&mut self) -> kube::runtime::controller::Action {
        let action = self.s.reconcile().await.unwrap();
        self.calls_settle().await;
        self.run_pods();
        action
    }

    /// Steps until the StatefulSet has `spec.replicas` pods and no drain is recorded.
    async fn settle(&mut self) {
        for _ in 0..12 {
            self.step().await;
            let status = self.s.cluster().status.unwrap();
            if status.drain.is_none() && self.s.sts_replicas() == self.s.cluster().spec.replicas {
                // One more for the status to see the pods that run now.
                self.step().await;
                return;
            }
        }
        panic!("the cluster did not settle: {:?}", self.s.cluster().status);
    }

    fn scale(&self, replicas: i32) {
        self.s.edit_spec(|spec| spec["replicas"] = json!(replicas));
    }

    fn drain_states(&self) -> Vec<(i64, DrainNodeState)> {
        let drain = self.s.cluster().status.unwrap().drain.unwrap();
        drain.nodes.iter().map(|n| (n.id, n.state)).collect()
    }

    /// The cluster's members are exactly the live pods' nodes, each under the incarnation
    /// of the volume it runs on, and the status says so.
    fn assert_exactly_the_live_members(&self, replicas: i32) {
        let live: Vec<u64> = (1..=u64::try_from(replicas).unwrap()).collect();
        assert_eq!(self.cluster.members(), live, "members of the cluster");
        assert_eq!(self.cluster.stranded(), Vec::<u64>::new(), "stranded nodes");
        let status = self.s.cluster().status.unwrap();
        let members: Vec<i64> = status.members.iter().map(|m| m.id).collect();
        let live: Vec<i64> = (1..=i64::from(replicas)).collect();
        assert_eq!(members, live, "status.members");
        for node in &status.nodes {
            let member = status.members.iter().find(|m| m.id == node.id).unwrap();
            assert_eq!(member.incarnation, node.incarnation, "node {}", node.id);
        }
    }
}

#[tokio::test]
async fn scale_in_drains_the_highest_ordinals_then_shrinks_and_deletes_their_claims() {
    let mut h = Harness::new(5);
    h.s.create().await;
    h.run_pods();
    h.step().await;
    h.assert_exactly_the_live_members(5);

    h.scale(3);
    let action = h.s.reconcile().await.unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(WHILE_DRAINING)
    );
    assert_eq!(h.s.sts_replicas(), 5, "nothing shrinks before the drain");
    assert_eq!(
        h.drain_states(),
        [(5, DrainNodeState::Draining), (4, DrainNodeState::Draining)]
    );
    let (on, reason) = h.s.condition("Progressing");
    assert_eq!((on.as_str(), reason.as_str()), ("True", "Draining"));
    let message = h.s.cluster().status.unwrap().conditions[1].message.clone();
    assert!(
        message.contains("node 5 (demo-4), node 4 (demo-3)"),
        "{message}"
    );
    assert_eq!(h.s.condition("Degraded").0, "False");
    h.calls_settle().await;
    let calls = h.cluster.calls();
    assert!(calls.contains(&"Decommission(5)".to_owned()), "{calls:?}");
    assert!(calls.contains(&"Decommission(4)".to_owned()), "{calls:?}");

    // Both drained: the StatefulSet shrinks.
    h.s.reconcile().await.unwrap();
    assert_eq!(
        h.drain_states(),
        [(5, DrainNodeState::Drained), (4, DrainNodeState::Drained)]
    );
    assert_eq!(h.s.sts_replicas(), 3);
    assert_eq!(h.s.condition("Progressing").1, "ScalingIn");
    assert!(h.s.fake.exists(&format!("{PVCS}/data-demo-4")));
    // Their pods terminate: expected, not a failed node.
    for ordinal in [3, 4] {
        h.s.fake.edit(&format!("{PODS}/demo-{ordinal}"), |p| {
            p["metadata"]["deletionTimestamp"] = json!("2026-12-01T00:00:00Z")
        });
    }
    h.s.reconcile().await.unwrap();
    assert_eq!(h.s.condition("Degraded").0, "False");
    let status = h.s.cluster().status.unwrap();
    let node = status.nodes.iter().find(|n| n.id == 5).unwrap();
    assert!(
        node.message.as_deref().unwrap().starts_with("drained"),
        "{node:?}"
    );
    // The pods go; then their claims; then the drain is over.
    h.run_pods();
    h.step().await;
    assert!(!h.s.fake.exists(&format!("{PVCS}/data-demo-4")));
    assert!(!h.s.fake.exists(&format!("{PVCS}/data-demo-3")));
    assert!(h.s.fake.exists(&format!("{PVCS}/data-demo-2")));
    h.step().await;
    let status = h.s.cluster().status.unwrap();
    assert_eq!(status.drain, None);
    assert_eq!(h.s.condition("Progressing").1, "Reconciled");
    h.assert_exactly_the_live_members(3);
    let reasons = h.s.event_reasons();
    for reason in ["Draining", "NodeDrained", "ScalingIn", "ScaledIn"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} in {reasons:?}"
        );
    }
    // Decommission removes the members itself: nothing else was asked of the cluster.
    assert!(h
        .cluster
        .calls()
        .iter()
        .all(|c| c.starts_with("Decommission")));
}

#[tokio::test]
async fn a_scale_in_below_the_replication_factor_is_refused_and_drains_nothing() {
    let mut h = Harness::new(3);
    h.s.create().await;
    h.run_pods();
    h.step().await;
    h.scale(2);
    h.step().await;
    assert_eq!(h.s.sts_replicas(), 3);
    assert_eq!(
        h.s.condition("Degraded"),
        ("True".into(), "BelowReplicationFactor".into())
    );
    assert_eq!(h.s.cluster().status.unwrap().drain, None);
    assert_eq!(h.cluster.calls(), Vec::<String>::new());
}

#[tokio::test]
async fn an_operator_restarted_mid_drain_resumes_it() {
    let mut h = Harness::new(5);
    h.s.create().await;
    h.run_pods();
    h.step().await;
    h.cluster.hold(4, true);
    h.scale(3);
    h.step().await;
    // Node 5 is drained; node 4's Decommission timed out.
    assert_eq!(h.cluster.members(), [1, 2, 3, 4]);
    assert_eq!(h.s.sts_replicas(), 5);

    // A new operator process: only the status survives.
    h.restart_operator();
    h.cluster.hold(4, false);
    let before = h.cluster.calls().len();
    h.step().await;
    let calls = h.cluster.calls()[before..].to_vec();
    assert_eq!(
        calls,
        [
            "DecommissionStatus(5)",
            "DecommissionStatus(4)",
            "Decommission(4)"
        ],
        "the fresh operator asks again and decommissions only the node still active"
    );
    assert_eq!(
        h.drain_states(),
        [(5, DrainNodeState::Drained), (4, DrainNodeState::Draining)]
    );
    h.settle().await;
    assert_eq!(h.s.sts_replicas(), 3);
    h.assert_exactly_the_live_members(3);
}

#[tokio::test]
async fn a_failed_decommission_is_shown_and_retried() {
    let mut h = Harness::new(4);
    h.s.create().await;
    h.run_pods();
    h.step().await;
    h.cluster.hold(4, true);
    h.scale(3);
    h.step().await;
    h.step().await;
    let drain = h.s.cluster().status.unwrap().drain.unwrap();
    let message = drain.nodes[0].message.clone().unwrap();
    assert!(
        message.contains("Admin.Decommission failed, retrying") && message.contains("no answer"),
        "{message}"
    );
    let tries = h
        .cluster
        .calls()
        .iter()
        .filter(|c| *c == "Decommission(4)")
        .count();
    assert_eq!(tries, 2, "one try per reconcile, never two at once");
    h.cluster.hold(4, false);
    h.settle().await;
    h.assert_exactly_the_live_members(3);
}

#[tokio::test]
async fn a_scale_out_during_a_drain_completes_the_drain_then_scales_out_on_fresh_volumes() {
    let mut h = Harness::new(5);
    h.s.create().await;
    h.run_pods();
    h.step().await;
    let old = h.s.cluster().status.unwrap().members;
    h.cluster.hold(4, true);
    h.scale(3);
    h.step().await;
    // The user changes their mind mid-drain.
    h.scale(5);
    h.step().await;
    assert_eq!(h.s.sts_replicas(), 5);
    let (on, reason) = h.s.condition("Progressing");
    assert_eq!((on.as_str(), reason.as_str()), ("True", "Draining"));
    let message = h.s.cluster().status.unwrap().conditions[1].message.clone();
    assert!(
        message.contains("spec.replicas 5 is applied once the drain completes"),
        "{message}"
    );
    h.cluster.hold(4, false);
    h.settle().await;
    assert_eq!(h.s.sts_replicas(), 5);
    h.assert_exactly_the_live_members(5);
    // Nodes 4 and 5 are new members on new volumes; 1 to 3 are the ones they were.
    let new = h.s.cluster().status.unwrap().members;
    for id in 1..=5 {
        let was = old.iter().find(|m| m.id == id).unwrap();
        let is = new.iter().find(|m| m.id == id).unwrap();
        assert_eq!(was.incarnation == is.incarnation, id <= 3, "node {id}");
    }
}

#[tokio::test]
async fn a_pod_back_on_an_empty_volume_rejoins_and_the_operator_only_reports_it() {
    let mut h = Harness::new(4);
    h.s.create().await;
    h.run_pods();
    h.step().await;
    let before = h.s.cluster().status.unwrap();
    let old: &MemberStatus = before.members.iter().find(|m| m.id == 4).unwrap();
    let old_incarnation = old.incarnation.clone().unwrap();
    // The volume of demo-3 is lost: the pod comes back on an empty one.
    h.s.fake.delete(&format!("{PVCS}/data-demo-3"));
    h.s.fake.delete(&format!("{PODS}/demo-3"));
    h.cluster.stop(4);
    h.run_pods();
    h.step().await;
    let status = h.s.cluster().status.unwrap();
    let node = status.nodes.iter().find(|n| n.id == 4).unwrap();
    let new_incarnation = node.incarnation.clone().unwrap();
    assert_ne!(new_incarnation, old_incarnation);
    h.assert_exactly_the_live_members(4);
    assert_eq!(h.s.condition("Degraded").0, "False");
    assert_eq!(h.s.condition("Available").0, "True");
    // The operator made no membership call: the node and its leader did it all.
    assert_eq!(h.cluster.calls(), Vec::<String>::new());
}

#[tokio::test]
async fn repeated_scale_in_and_out_leaves_exactly_the_live_members() {
    let mut h = Harness::new(3);
    h.s.create().await;
    h.run_pods();
    h.settle().await;
    for replicas in [5, 3, 6, 4, 5, 3] {
        h.scale(replicas);
        h.settle().await;
        assert_eq!(h.s.sts_replicas(), replicas);
        h.assert_exactly_the_live_members(replicas);
        // Exactly the live pods' claims are left.
        for ordinal in 0..8 {
            let claim = format!("{PVCS}/data-demo-{ordinal}");
            assert_eq!(h.s.fake.exists(&claim), ordinal < replicas, "{claim}");
        }
    }
}

/// The operator's calls, sent to in-process nodes: a pod's DNS name maps to the loopback
/// gRPC address of the node its ordinal names.
struct Loopback<T> {
    inner: T,
    grpc: BTreeMap<u64, String>,
}

impl<T> Loopback<T> {
    fn map(&self, endpoint: &str) -> String {
        self.grpc
            .get(&id_of(endpoint))
            .cloned()
            .unwrap_or_else(|| endpoint.to_owned())
    }
}

impl<T: NodeProbe> NodeProbe for Loopback<T> {
    fn status(&self, endpoint: String) -> BoxFuture<'static, Result<NodeReport, String>> {
        self.inner.status(self.map(&endpoint))
    }
}

impl<T: ClusterAdmin> ClusterAdmin for Loopback<T> {
    fn decommission(
        &self,
        endpoint: String,
        node_id: u64,
        replication_factor: u32,
    ) -> BoxFuture<'static, Result<String, AdminError>> {
        self.inner
            .decommission(self.map(&endpoint), node_id, replication_factor)
    }

    fn drain_state(
        &self,
        endpoint: String,
        node_id: u64,
    ) -> BoxFuture<'static, Result<Drain, AdminError>> {
        self.inner.drain_state(self.map(&endpoint), node_id)
    }

    fn backup(&self, endpoint: String) -> BoxFuture<'static, Result<BackupAnswer, AdminError>> {
        self.inner.backup(self.map(&endpoint))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// A real cluster of four nodes on loopback (three initial members, one joined), drained to
/// three by the reconcile through real `Admin.Decommission` and `DecommissionStatus` calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_cluster_is_drained_through_the_admin_api() {
    use strata::server::config::NodeConfig;
    use strata::server::{Member, PeerAddr, Server};

    use super::admin::GrpcAdmin;
    use super::probe::GrpcProbe;

    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let members: Vec<Member> = (0..3)
        .map(|i| format!("{}=127.0.0.1:{}", i + 1, ports[i]).parse().unwrap())
        .collect();
    let config = |id: u64| {
        let i = usize::try_from(id - 1).unwrap();
        let mut c = NodeConfig::on_free_ports(dir.path().join(format!("n{id}")));
        c.node_id = id;
        c.cluster.raft_addr = ([127, 0, 0, 1], ports[i]).into();
        c.cluster.raft_tick_ms = 20;
        if id <= 3 {
            c.cluster.initial_members = members.clone();
        } else {
            c.cluster.join = ports[..3]
                .iter()
                .map(|p| format!("127.0.0.1:{p}").parse::<PeerAddr>().unwrap())
                .collect();
        }
        c
    };
    let starts: Vec<_> = (1..=3)
        .map(|id| tokio::spawn(Server::start(config(id))))
        .collect();
    let mut servers = Vec::new();
    for start in starts {
        servers.push(start.await.unwrap().unwrap());
    }
    servers.push(Server::start(config(4)).await.unwrap());
    let grpc: BTreeMap<u64, String> = servers
        .iter()
        .zip(1..)
        .map(|(s, id)| (id, s.grpc_addr().to_string()))
        .collect();
    let probe = GrpcProbe::default();
    let voters = |report: &NodeReport| -> Vec<u64> {
        report
            .members
            .iter()
            .filter(|m| m.voter)
            .map(|m| m.node_id)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = probe.status(grpc[&1].clone()).await;
        if report.as_ref().is_ok_and(|r| voters(r) == [1, 2, 3, 4]) {
            break;
        }
        assert!(Instant::now() < deadline, "node 4 never joined: {report:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut spec = spec();
    spec["replicas"] = json!(4);
    let s = Scenario::with(
        spec,
        Arc::new(Loopback {
            inner: probe.clone(),
            grpc: grpc.clone(),
        }),
        Arc::new(Loopback {
            inner: GrpcAdmin::default(),
            grpc: grpc.clone(),
        }),
    );
    s.create().await;
    let labels = json!({"app.kubernetes.io/name": "strata", "app.kubernetes.io/instance": "demo",
                        "app.kubernetes.io/component": "node"});
    for ordinal in 0..4 {
        s.fake.insert(
            &format!("{PODS}/demo-{ordinal}"),
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": format!("demo-{ordinal}"), "namespace": "db", "labels": labels.clone()},
                   "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
        );
    }
    s.reconcile().await.unwrap();
    assert_eq!(s.cluster().status.unwrap().members.len(), 4);

    s.edit_spec(|spec| spec["replicas"] = json!(3));
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.sts_replicas() != 3 {
        assert!(
            Instant::now() < deadline,
            "the drain never finished: {:?}",
            s.cluster().status.and_then(|s| s.drain)
        );
        s.reconcile().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain = s.cluster().status.unwrap().drain.unwrap();
    assert_eq!(drain.nodes.len(), 1);
    assert_eq!(
        (drain.nodes[0].id, drain.nodes[0].state),
        (4, DrainNodeState::Drained)
    );
    // The cluster agrees: node 4 is no member, and says it is drained.
    let report = probe.status(grpc[&1].clone()).await.unwrap();
    let members: Vec<u64> = report.members.iter().map(|m| m.node_id).collect();
    assert_eq!(members, [1, 2, 3]);
    let state = GrpcAdmin::default()
        .drain_state(grpc[&2].clone(), 4)
        .await
        .unwrap();
    assert_eq!(state, Drain::Drained);

    // The Decommission call may still be on its way back (the leader applied the removal
    // first): wait for it, so no call is in flight when the nodes shut down.
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.ctx.drains.running("db/demo/4") {
        assert!(
            Instant::now() < deadline,
            "the Decommission call never returned"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for server in servers {
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_member_no_pod_runs_is_reported_not_removed() {
    let mut h = Harness::new(3);
    h.s.create().await;
    h.run_pods();
    h.step().await;
    // A member added behind the operator's back (or left by a scale-in that bypassed it).
    h.cluster
        .model
        .lock()
        .members
        .insert(7, (true, "inc-elsewhere".into()));
    h.step().await;
    assert_eq!(
        h.s.condition("Degraded"),
        ("True".into(), "StaleMember".into())
    );
    let message = h.s.cluster().status.unwrap().conditions[2].message.clone();
    assert!(message.contains("node 7"), "{message}");
    assert_eq!(
        h.cluster.calls(),
        Vec::<String>::new(),
        "nothing is removed"
    );
    h.cluster.model.lock().members.remove(&7);
    h.step().await;
    assert_eq!(h.s.condition("Degraded").0, "False");
}
