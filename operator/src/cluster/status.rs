//! The status step: conditions, phase and per-node state from what the reconcile saw.
//!
//! A pure function of the cluster, the plan, the StatefulSet the apply returned and the
//! cluster's pods. The three conditions follow the Kubernetes conventions (each always
//! present, `lastTransitionTime` moves only when `status` flips):
//!
//! - `Available`: enough nodes serve for a shard's quorum (a majority of
//!   `replicationFactor`): ready pods whose node answers `Admin.Status` with its own id.
//! - `Progressing`: the StatefulSet is being created, rolled out or resized, or a scale-in
//!   drains nodes (reason `Draining`, naming them, then `ScalingIn` once they are drained).
//! - `Degraded`: part of the spec is refused (the reason says which), or a node failed
//!   (including a node that reports another node's id), or the cluster has a member that
//!   no pod runs (`StaleMember`; the operator never removes one it did not drain).
//!
//! Shard and leader counts, each node's incarnation and the data shard's members come from
//! the nodes' `Admin.Status` answers; the members are the leader's view (else the first
//! reachable node's), so a member left without a pod, or a node re-added under a new
//! incarnation, shows in `status.members`.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use std::collections::BTreeMap;

use super::names::{node_id, ordinal_of, ClusterNames};
use super::plan::{Plan, Refusal};
use super::probe::NodeReport;
use crate::crd::{
    ClusterPhase, DrainNodeState, DrainStatus, MemberStatus, NodeState, NodeStatus, StrataCluster,
    StrataClusterStatus,
};

/// Condition types.
pub const AVAILABLE: &str = "Available";
/// Condition types.
pub const PROGRESSING: &str = "Progressing";
/// Condition types.
pub const DEGRADED: &str = "Degraded";

/// The nodes' `Admin.Status` answers, by pod ordinal.
pub type Reports = BTreeMap<i32, Result<NodeReport, String>>;

/// What the reconcile saw and did, for [`build`].
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The plan applied.
    pub plan: &'a Plan,
    /// The drain in progress after this reconcile.
    pub drain: Option<&'a DrainStatus>,
    /// The StatefulSet the apply returned (or the one read).
    pub statefulset: Option<&'a StatefulSet>,
    /// The cluster's pods.
    pub pods: &'a [Pod],
    /// The nodes' own reports.
    pub reports: &'a Reports,
}

/// The status to write for `cluster` after applying `seen.plan`.
pub fn build(
    cluster: &StrataCluster,
    names: &ClusterNames,
    seen: Observed<'_>,
    now: &Time,
) -> StrataClusterStatus {
    let Observed {
        plan,
        drain,
        statefulset,
        pods,
        reports,
    } = seen;
    let generation = cluster.metadata.generation;
    let sts_status = statefulset
        .and_then(|s| s.status.clone())
        .unwrap_or_default();
    let ready = sts_status.ready_replicas.unwrap_or(0);
    let mut nodes = node_states(pods, reports);
    // A drained node's pod goes away with the StatefulSet's shrink: expected, not a failure.
    let drained: Vec<i64> = drain
        .iter()
        .flat_map(|d| d.nodes.iter())
        .filter(|n| n.state == DrainNodeState::Drained)
        .map(|n| n.id)
        .collect();
    for node in nodes.iter_mut().filter(|n| drained.contains(&n.id)) {
        node.message = Some("drained: it holds no replica, and its pod is removed".to_owned());
    }
    let failed = nodes
        .iter()
        .filter(|n| n.state == NodeState::Failed && !drained.contains(&n.id))
        .count();
    let serving = i32::try_from(nodes.iter().filter(|n| n.state == NodeState::Ready).count())
        .unwrap_or(i32::MAX);
    let unreachable = nodes.iter().find(|n| n.state == NodeState::Unreachable);

    let (target, refusal) = match plan {
        Plan::Invalid(refusal) => (None, Some(refusal)),
        Plan::Apply {
            replicas, refused, ..
        } => (Some(*replicas), refused.as_ref()),
    };
    let quorum = cluster.spec.replication_factor / 2 + 1;
    let count = format!(
        "{serving} of {} nodes serve; a shard needs {quorum}",
        target.unwrap_or(0)
    );
    let available = match unreachable {
        _ if serving >= quorum => (true, "QuorumReady", count),
        Some(node) if serving == 0 => (
            false,
            "Unreachable",
            format!(
                "no node answers Admin.Status ({}: {})",
                node.pod,
                node.message.as_deref().unwrap_or_default()
            ),
        ),
        _ => (false, "NotEnoughReadyNodes", count),
    };
    let progressing = match drain {
        Some(d) => draining(d, cluster.spec.replicas),
        None => progressing(statefulset, target, ready),
    };
    let members = members(reports);
    annotate_membership(&mut nodes, &members, &drained);
    let size = statefulset
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.replicas)
        .unwrap_or(0);
    let stale = stale_members(&members, &nodes, size);
    let degraded = match (refusal, failed) {
        (Some(Refusal { reason, message }), _) => (true, *reason, message.clone()),
        (None, 0) if !stale.is_empty() => (
            true,
            "StaleMember",
            format!(
                "the cluster has member(s) {} that no pod runs; if they are gone for good, remove them with Admin.RemoveNode",
                stale
                    .iter()
                    .map(|id| format!("node {id}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        (None, n) if n > 0 => {
            let first = nodes.iter().find(|n| n.state == NodeState::Failed);
            let why = first
                .and_then(|n| n.message.as_ref().map(|m| format!(" ({}: {m})", n.pod)))
                .unwrap_or_default();
            (
                true,
                "NodeFailed",
                format!("{n} node(s) failed{why}; see status.nodes"),
            )
        }
        _ => (false, "AsExpected", "the spec is applied".to_owned()),
    };

    let old = cluster
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or(&[]);
    let condition = |ty: &str, (on, reason, message): (bool, &str, String)| {
        let status = if on { "True" } else { "False" };
        let since = old
            .iter()
            .find(|c| c.type_ == ty && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        Condition {
            type_: ty.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            last_transition_time: since,
            observed_generation: generation,
        }
    };
    let phase = if degraded.0 {
        ClusterPhase::Degraded
    } else if ready == 0 {
        ClusterPhase::Creating
    } else if progressing.0 {
        ClusterPhase::Progressing
    } else {
        ClusterPhase::Running
    };
    StrataClusterStatus {
        conditions: vec![
            condition(AVAILABLE, available),
            condition(PROGRESSING, progressing),
            condition(DEGRADED, degraded),
        ],
        observed_generation: generation,
        replicas: sts_status.replicas,
        ready_replicas: ready,
        selector: Some(names.selector_string()),
        phase: Some(phase),
        shards: shard_count(reports, |_| true),
        led_shards: shard_count(reports, |r| r.leader),
        nodes,
        members,
        drain: drain.cloned(),
        backup_schedule: cluster
            .status
            .as_ref()
            .and_then(|s| s.backup_schedule.clone()),
    }
}

/// The data shard's members as the leader reports them, else as the first reachable node.
pub fn members(reports: &Reports) -> Vec<MemberStatus> {
    let answers: Vec<&NodeReport> = reports.values().filter_map(|r| r.as_ref().ok()).collect();
    let source = answers
        .iter()
        .find(|r| r.replicas.iter().any(|x| x.leader))
        .or_else(|| answers.iter().find(|r| !r.members.is_empty()));
    let mut members: Vec<MemberStatus> = source
        .map(|r| {
            r.members
                .iter()
                .filter_map(|m| {
                    Some(MemberStatus {
                        id: i64::try_from(m.node_id).ok()?,
                        voter: m.voter,
                        incarnation: Some(m.incarnation.clone()).filter(|i| !i.is_empty()),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    members.sort_by_key(|m| m.id);
    members
}

/// Notes, on each serving node, how the cluster's membership sees it: not a member (yet),
/// or a member recorded under another incarnation (a pod back on a new volume, which the
/// node and its leader re-add). Nothing when no node reported the members.
pub fn annotate_membership(nodes: &mut [NodeStatus], members: &[MemberStatus], drained: &[i64]) {
    if members.is_empty() {
        return;
    }
    for node in nodes
        .iter_mut()
        .filter(|n| n.state == NodeState::Ready && !drained.contains(&n.id))
    {
        match members.iter().find(|m| m.id == node.id) {
            None => {
                node.message = Some(
                    "not a member of the cluster: joining, or removed and left on its old volume"
                        .to_owned(),
                )
            }
            Some(m) => {
                if let (Some(recorded), Some(runs)) = (&m.incarnation, &node.incarnation) {
                    if recorded != runs {
                        node.message = Some(format!(
                            "the cluster records node {} under incarnation {recorded}, the node runs {runs} (a new volume): it is being re-added",
                            node.id
                        ));
                    }
                }
            }
        }
    }
}

/// Members of the data shard that no pod runs nor will (their ordinal is beyond the
/// StatefulSet's `size`: a scale-in that bypassed the operator, a member added by hand);
/// a pod being recreated is not one. The operator reports them and removes none.
pub fn stale_members(members: &[MemberStatus], nodes: &[NodeStatus], size: i32) -> Vec<i64> {
    members
        .iter()
        .map(|m| m.id)
        .filter(|id| *id > i64::from(size) && !nodes.iter().any(|n| n.id == *id))
        .collect()
}

/// `Progressing` during a drain: which nodes, and what comes after.
fn draining(drain: &DrainStatus, asked: i32) -> (bool, &'static str, String) {
    let list = |state: DrainNodeState| {
        drain
            .nodes
            .iter()
            .filter(|n| n.state == state)
            .map(|n| format!("node {} ({})", n.id, n.pod))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let after = if asked != drain.to {
        format!("; spec.replicas {asked} is applied once the drain completes")
    } else {
        String::new()
    };
    let waiting = list(DrainNodeState::Draining);
    if waiting.is_empty() {
        (
            true,
            "ScalingIn",
            format!(
                "{} drained; the StatefulSet shrinks from {} to {}, then their volume claims are deleted{after}",
                list(DrainNodeState::Drained),
                drain.from,
                drain.to
            ),
        )
    } else {
        (
            true,
            "Draining",
            format!(
                "draining {waiting} through Admin.Decommission before the StatefulSet shrinks from {} to {}{after}",
                drain.from, drain.to
            ),
        )
    }
}

/// Distinct shards among the replicas the reachable nodes report that pass `keep`.
fn shard_count(reports: &Reports, keep: impl Fn(&super::probe::ReplicaReport) -> bool) -> i32 {
    let shards: std::collections::BTreeSet<u64> = reports
        .values()
        .filter_map(|r| r.as_ref().ok())
        .flat_map(|r| r.replicas.iter())
        .filter(|r| keep(r))
        .map(|r| r.shard_id)
        .collect();
    i32::try_from(shards.len()).unwrap_or(i32::MAX)
}

fn progressing(
    statefulset: Option<&StatefulSet>,
    target: Option<i32>,
    ready: i32,
) -> (bool, &'static str, String) {
    let Some(target) = target else {
        return (
            false,
            "NothingApplied",
            "the spec is refused; nothing was applied".to_owned(),
        );
    };
    let Some(sts) = statefulset else {
        return (true, "Creating", "creating the StatefulSet".to_owned());
    };
    let status = sts.status.clone().unwrap_or_default();
    let rolled = status.observed_generation >= sts.metadata.generation
        && status.current_revision == status.update_revision
        && status.updated_replicas.unwrap_or(0) == status.replicas;
    if status.replicas != target || ready < target {
        (
            true,
            "Scaling",
            format!("{} of {target} pods exist, {ready} ready", status.replicas),
        )
    } else if !rolled {
        (
            true,
            "RollingOut",
            "rolling out a new pod template".to_owned(),
        )
    } else {
        (
            false,
            "Reconciled",
            format!("{target} pods ready at the current revision"),
        )
    }
}

/// The ordinals of the pods whose readiness probe passes: the ones to ask for their status.
pub fn ready_ordinals(pods: &[Pod]) -> Vec<i32> {
    pods.iter()
        .filter(|pod| pod_state(pod) == NodeState::Ready)
        .filter_map(|pod| ordinal_of(pod.metadata.name.as_deref()?))
        .collect()
}

/// Each pod's node id and state, by ordinal: the pod's state, refined for a ready pod by
/// its node's own report.
pub fn node_states(pods: &[Pod], reports: &Reports) -> Vec<NodeStatus> {
    let mut nodes: Vec<NodeStatus> = pods
        .iter()
        .filter_map(|pod| {
            let name = pod.metadata.name.clone()?;
            let ordinal = ordinal_of(&name)?;
            let id = node_id(ordinal);
            let mut node = NodeStatus {
                id,
                pod: name,
                state: pod_state(pod),
                version: None,
                message: None,
                replicas: None,
                leader_of: None,
                incarnation: None,
            };
            if node.state == NodeState::Ready {
                match reports.get(&ordinal) {
                    Some(Ok(report)) if i64::try_from(report.node_id) == Ok(id) => {
                        node.version = Some(report.version.clone());
                        node.incarnation =
                            Some(report.incarnation.clone()).filter(|i| !i.is_empty());
                        node.replicas = i64::try_from(report.replicas.len()).ok();
                        node.leader_of =
                            i64::try_from(report.replicas.iter().filter(|r| r.leader).count()).ok();
                    }
                    Some(Ok(report)) => {
                        node.state = NodeState::Failed;
                        node.version = Some(report.version.clone());
                        node.message = Some(format!(
                            "the node reports id {}, but pod ordinal {ordinal} means id {id}",
                            report.node_id
                        ));
                    }
                    Some(Err(error)) => {
                        node.state = NodeState::Unreachable;
                        node.message = Some(error.clone());
                    }
                    None => {
                        node.state = NodeState::Unreachable;
                        node.message = Some("not asked for its status".to_owned());
                    }
                }
            }
            Some(node)
        })
        .collect();
    nodes.sort_by_key(|n| n.id);
    nodes
}

fn pod_state(pod: &Pod) -> NodeState {
    let status = pod.status.clone().unwrap_or_default();
    let crash_looping = status.container_statuses.iter().flatten().any(|c| {
        c.state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.as_deref())
            .is_some_and(|r| matches!(r, "CrashLoopBackOff" | "ErrImagePull" | "ImagePullBackOff"))
    });
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    match status.phase.as_deref() {
        _ if pod.metadata.deletion_timestamp.is_some() => NodeState::Failed,
        Some("Failed") => NodeState::Failed,
        _ if crash_looping => NodeState::Failed,
        Some("Running") if ready => NodeState::Ready,
        Some("Running") => NodeState::Starting,
        _ => NodeState::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, phase: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    #[test]
    fn replicas_and_leaders_are_counted_from_the_reports() {
        use super::super::probe::ReplicaReport;
        let replica = |shard_id, leader| ReplicaReport {
            shard_id,
            leader,
            leader_node_id: 0,
        };
        let reports = Reports::from([
            (
                0,
                Ok(NodeReport {
                    node_id: 1,
                    version: "0.1.0".into(),
                    replicas: vec![replica(1, true), replica(2, false)],
                    ..NodeReport::default()
                }),
            ),
            (
                1,
                Ok(NodeReport {
                    node_id: 2,
                    version: "0.1.0".into(),
                    replicas: vec![replica(1, false), replica(2, false), replica(3, false)],
                    ..NodeReport::default()
                }),
            ),
            (2, Err("cannot connect".to_owned())),
        ]);
        assert_eq!(shard_count(&reports, |_| true), 3);
        assert_eq!(shard_count(&reports, |r| r.leader), 1);
        let pods = [
            pod("demo-0", "Running", true),
            pod("demo-1", "Running", true),
        ];
        let nodes = node_states(&pods, &reports);
        assert_eq!((nodes[0].replicas, nodes[0].leader_of), (Some(2), Some(1)));
        assert_eq!((nodes[1].replicas, nodes[1].leader_of), (Some(3), Some(0)));
    }

    #[test]
    fn membership_is_noted_on_the_nodes() {
        let node = |id: i64, incarnation: &str| NodeStatus {
            id,
            pod: format!("demo-{}", id - 1),
            state: NodeState::Ready,
            version: None,
            message: None,
            replicas: None,
            leader_of: None,
            incarnation: Some(incarnation.to_owned()),
        };
        let member = |id: i64, incarnation: &str| MemberStatus {
            id,
            voter: true,
            incarnation: Some(incarnation.to_owned()),
        };
        let mut nodes = vec![node(1, "a"), node(2, "b-new"), node(3, "c"), node(4, "d")];
        let members = [member(1, "a"), member(2, "b-old"), member(4, "d")];
        annotate_membership(&mut nodes, &members, &[4]);
        assert_eq!(nodes[0].message, None);
        let rejoining = nodes[1].message.clone().unwrap();
        assert!(
            rejoining.contains("b-old") && rejoining.contains("b-new"),
            "{rejoining}"
        );
        assert!(nodes[2].message.clone().unwrap().contains("not a member"));
        assert_eq!(nodes[3].message, None, "a drained node is not annotated");
        // No report of the members: nothing is said.
        let mut nodes = vec![node(1, "a")];
        annotate_membership(&mut nodes, &[], &[]);
        assert_eq!(nodes[0].message, None);
    }

    #[test]
    fn pods_map_to_node_states_by_ordinal() {
        let crash: Pod = serde_json::from_value(json!({
            "metadata": {"name": "demo-2"},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "strata-node", "image": "s", "imageID": "", "ready": false, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
        }))
        .unwrap();
        let pods = [
            pod("demo-10", "Pending", false),
            pod("demo-0", "Running", true),
            pod("demo-1", "Running", false),
            crash,
            pod("demo-3", "Running", true),
            pod("demo-4", "Running", true),
        ];
        assert_eq!(ready_ordinals(&pods), [0, 3, 4]);
        let report = |id| {
            Ok(NodeReport {
                node_id: id,
                version: "0.1.0".into(),
                ..NodeReport::default()
            })
        };
        let reports = Reports::from([
            (0, report(1)),
            (3, report(9)),
            (4, Err("cannot connect".to_owned())),
        ]);
        let nodes = node_states(&pods, &reports);
        let got: Vec<_> = nodes
            .iter()
            .map(|n| (n.id, n.pod.as_str(), n.state))
            .collect();
        assert_eq!(
            got,
            [
                (1, "demo-0", NodeState::Ready),
                (2, "demo-1", NodeState::Starting),
                (3, "demo-2", NodeState::Failed),
                (4, "demo-3", NodeState::Failed),
                (5, "demo-4", NodeState::Unreachable),
                (11, "demo-10", NodeState::Pending),
            ]
        );
        assert_eq!(nodes[0].version.as_deref(), Some("0.1.0"));
        assert!(nodes[3]
            .message
            .as_deref()
            .unwrap()
            .contains("reports id 9"));
        assert_eq!(nodes[4].message.as_deref(), Some("cannot connect"));
    }
}
