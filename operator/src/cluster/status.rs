//! The status step: conditions, phase and per-node state from what the reconcile saw.
//!
//! A pure function of the cluster, the plan, the StatefulSet the apply returned and the
//! cluster's pods. The three conditions follow the Kubernetes conventions (each always
//! present, `lastTransitionTime` moves only when `status` flips):
//!
//! - `Available`: enough nodes are ready for a shard's quorum (a majority of
//!   `replicationFactor`).
//! - `Progressing`: the StatefulSet is being created, rolled out or resized.
//! - `Degraded`: part of the spec is refused (the reason says which), or a node failed.
//!
//! Shard and leader counts need the cluster's `Admin` status over gRPC and join the status
//! with replication.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::names::{node_id, ordinal_of, ClusterNames};
use super::plan::{Plan, Refusal};
use crate::crd::{ClusterPhase, NodeState, NodeStatus, StrataCluster, StrataClusterStatus};

/// Condition types.
pub const AVAILABLE: &str = "Available";
/// Condition types.
pub const PROGRESSING: &str = "Progressing";
/// Condition types.
pub const DEGRADED: &str = "Degraded";

/// The status to write for `cluster` after applying `plan`.
pub fn build(
    cluster: &StrataCluster,
    names: &ClusterNames,
    plan: &Plan,
    statefulset: Option<&StatefulSet>,
    pods: &[Pod],
    now: &Time,
) -> StrataClusterStatus {
    let generation = cluster.metadata.generation;
    let sts_status = statefulset
        .and_then(|s| s.status.clone())
        .unwrap_or_default();
    let ready = sts_status.ready_replicas.unwrap_or(0);
    let nodes = node_states(pods);
    let failed = nodes
        .iter()
        .filter(|n| n.state == NodeState::Failed)
        .count();

    let (target, refusal) = match plan {
        Plan::Invalid(refusal) => (None, Some(refusal)),
        Plan::Apply {
            replicas, refused, ..
        } => (Some(*replicas), refused.as_ref()),
    };
    let quorum = cluster.spec.replication_factor / 2 + 1;
    let available = (
        ready >= quorum,
        if ready >= quorum {
            "QuorumReady"
        } else {
            "NotEnoughReadyNodes"
        },
        format!(
            "{ready} of {} nodes ready; a shard needs {quorum}",
            target.unwrap_or(0)
        ),
    );
    let progressing = progressing(statefulset, target, ready);
    let degraded = match (refusal, failed) {
        (Some(Refusal { reason, message }), _) => (true, *reason, message.clone()),
        (None, n) if n > 0 => (
            true,
            "NodeFailed",
            format!("{n} node(s) failed; see status.nodes"),
        ),
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
        nodes,
    }
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

/// Each pod's node id and state, by ordinal.
pub fn node_states(pods: &[Pod]) -> Vec<NodeStatus> {
    let mut nodes: Vec<NodeStatus> = pods
        .iter()
        .filter_map(|pod| {
            let name = pod.metadata.name.clone()?;
            let ordinal = ordinal_of(&name)?;
            Some(NodeStatus {
                id: node_id(ordinal),
                pod: name,
                state: pod_state(pod),
            })
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
    fn pods_map_to_node_states_by_ordinal() {
        let crash: Pod = serde_json::from_value(json!({
            "metadata": {"name": "demo-2"},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "strata-node", "image": "s", "imageID": "", "ready": false, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
        }))
        .unwrap();
        let nodes = node_states(&[
            pod("demo-10", "Pending", false),
            pod("demo-0", "Running", true),
            pod("demo-1", "Running", false),
            crash,
        ]);
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
                (11, "demo-10", NodeState::Pending),
            ]
        );
    }
}
