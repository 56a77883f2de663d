//! Validate and plan: what size the StatefulSet should have, which nodes a scale-in drains,
//! and what the operator refuses.
//!
//! A pure function of the spec, the running StatefulSet's size and the drain recorded in
//! the status (`status.drain`):
//!
//! | spec asks for | running | drain recorded | plan |
//! |---|---|---|---|
//! | an invalid spec (CEL off or bypassed) | any | any | apply nothing; `Degraded`, reason `InvalidSpec` |
//! | any valid size | any | some node still draining | keep `from`; go on draining |
//! | any valid size | any | every node drained | shrink to `to`; then delete the drained pods' claims |
//! | `replicas >= running` | n | none | apply `replicas` (create or scale out) |
//! | `replicas < replicationFactor` | n | none | keep n; `Degraded`, reason `BelowReplicationFactor` |
//! | `replicationFactor <= replicas < running` | n | none | keep n; start a drain of ordinals `replicas..n` |
//!
//! A drain, once recorded, is finished before any other size change (decision D110): a
//! scale-out or a further scale-in asked for meanwhile waits for it and is applied by the
//! reconcile after it, from a StatefulSet of `to` pods. So a node is never left half
//! removed: every node of a drain ends decommissioned, its pod gone and its volume claim
//! deleted, and a later scale-out starts those ordinals on fresh volumes, as new members.
//! A spec below the replication factor is refused during a drain too, and the drain goes
//! on (it never goes below the replication factor itself: it began from a valid spec).

use crate::crd::StrataClusterSpec;
use crate::crd::{DrainNode, DrainNodeState, DrainStatus};

/// Why the operator does not do what the spec asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// A CamelCase reason, for the condition and the event.
    pub reason: &'static str,
    /// A sentence saying why and what to do.
    pub message: String,
}

/// What one reconcile will apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The spec cannot be run: apply nothing.
    Invalid(Refusal),
    /// Apply the objects with a StatefulSet of `replicas`; `refused` says what part of the
    /// spec is held back.
    Apply {
        /// The StatefulSet's size.
        replicas: i32,
        /// The running size, when a StatefulSet exists.
        running: Option<i32>,
        /// A part of the spec not applied.
        refused: Option<Refusal>,
        /// The drain in progress (new, when this plan starts it).
        drain: Option<DrainStatus>,
    },
}

impl Plan {
    /// The drain this plan carries on, if any.
    pub fn drain(&self) -> Option<&DrainStatus> {
        match self {
            Plan::Apply { drain, .. } => drain.as_ref(),
            Plan::Invalid(_) => None,
        }
    }
}

/// Whether every node of `drain` is drained (the StatefulSet may shrink).
pub fn all_drained(drain: &DrainStatus) -> bool {
    drain
        .nodes
        .iter()
        .all(|n| n.state == DrainNodeState::Drained)
}

/// A new drain from `from` pods of StatefulSet `statefulset` to `to`: the highest ordinals
/// first.
pub fn start_drain(statefulset: &str, from: i32, to: i32) -> DrainStatus {
    DrainStatus {
        from,
        to,
        nodes: (to..from)
            .rev()
            .map(|ordinal| DrainNode {
                id: super::names::node_id(ordinal),
                pod: format!("{statefulset}-{ordinal}"),
                state: DrainNodeState::Draining,
                message: None,
            })
            .collect(),
    }
}

/// The largest replication factor a cluster may ask for.
pub const MAX_REPLICATION_FACTOR: i32 = 7;

/// Checks what the CRD's schema and CEL rules check, in case they were bypassed (CEL
/// disabled, an old CRD installed).
pub fn validate(spec: &StrataClusterSpec) -> Result<(), Refusal> {
    let invalid = |message: String| {
        Err(Refusal {
            reason: "InvalidSpec",
            message,
        })
    };
    let rf = spec.replication_factor;
    if !(1..=MAX_REPLICATION_FACTOR).contains(&rf) || rf % 2 == 0 {
        return invalid(format!(
            "spec.replicationFactor is {rf}: it must be odd, from 1 to {MAX_REPLICATION_FACTOR}"
        ));
    }
    if spec.replicas < 1 {
        return invalid(format!(
            "spec.replicas is {}: it must be at least 1",
            spec.replicas
        ));
    }
    if spec.image.is_empty() {
        return invalid("spec.image is empty".to_owned());
    }
    Ok(())
}

/// Checks the cluster's name fits the names derived from it (the CRD's CEL rule, again).
pub fn validate_name(name: &str) -> Result<(), Refusal> {
    let max = crate::crd::MAX_CLUSTER_NAME;
    if name.len() > max {
        return Err(Refusal {
            reason: "InvalidSpec",
            message: format!(
                "metadata.name has {} characters: at most {max} fit the pod names and labels derived from it",
                name.len()
            ),
        });
    }
    Ok(())
}

/// The plan for `spec` when StatefulSet `statefulset` runs `running` pods (`None`: none
/// exists yet) and `drain` is the drain recorded in the status.
pub fn plan(
    spec: &StrataClusterSpec,
    statefulset: &str,
    running: Option<i32>,
    drain: Option<&DrainStatus>,
) -> Plan {
    if let Err(refusal) = validate(spec) {
        return Plan::Invalid(refusal);
    }
    let rf = spec.replication_factor;
    let want = spec.replicas;
    if let Some(drain) = drain {
        let replicas = if all_drained(drain) {
            drain.to
        } else {
            drain.from
        };
        return Plan::Apply {
            replicas,
            running,
            refused: (want < rf).then(|| below_rf(want, rf, Some(replicas))),
            drain: Some(drain.clone()),
        };
    }
    match running {
        None if want < rf => Plan::Invalid(below_rf(want, rf, None)),
        Some(n) if want < n && want < rf => Plan::Apply {
            replicas: n,
            running,
            refused: Some(below_rf(want, rf, Some(n))),
            drain: None,
        },
        Some(n) if want < n => Plan::Apply {
            replicas: n,
            running,
            refused: None,
            drain: Some(start_drain(statefulset, n, want)),
        },
        _ if want < rf => Plan::Invalid(below_rf(want, rf, running)),
        _ => Plan::Apply {
            replicas: want,
            running,
            refused: None,
            drain: None,
        },
    }
}

fn below_rf(want: i32, rf: i32, running: Option<i32>) -> Refusal {
    let keep = running
        .map(|n| format!("; the StatefulSet stays at {n}"))
        .unwrap_or_default();
    Refusal {
        reason: "BelowReplicationFactor",
        message: format!(
            "spec.replicas is {want}, below spec.replicationFactor {rf}: every shard needs {rf} nodes{keep}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(replicas: i32, rf: i32) -> StrataClusterSpec {
        StrataClusterSpec {
            replicas,
            image: "s:1".into(),
            image_pull_policy: None,
            replication_factor: rf,
            storage: Default::default(),
            resources: None,
            node_config: None,
            backup: None,
        }
    }

    fn applied(replicas: i32, running: Option<i32>) -> Plan {
        Plan::Apply {
            replicas,
            running,
            refused: None,
            drain: None,
        }
    }

    fn plan(spec: &StrataClusterSpec, running: Option<i32>) -> Plan {
        super::plan(spec, "demo", running, None)
    }

    #[test]
    fn create_and_scale_out_follow_the_spec() {
        assert_eq!(plan(&spec(3, 3), None), applied(3, None));
        assert_eq!(plan(&spec(5, 3), Some(3)), applied(5, Some(3)));
        assert_eq!(plan(&spec(3, 3), Some(3)), applied(3, Some(3)));
        assert_eq!(plan(&spec(1, 1), None), applied(1, None));
    }

    #[test]
    fn scale_in_starts_a_drain_of_the_highest_ordinals() {
        let Plan::Apply {
            replicas,
            refused,
            drain,
            ..
        } = plan(&spec(3, 3), Some(5))
        else {
            panic!("expected a plan")
        };
        assert_eq!((replicas, refused), (5, None));
        let drain = drain.unwrap();
        assert_eq!((drain.from, drain.to), (5, 3));
        let nodes: Vec<_> = drain
            .nodes
            .iter()
            .map(|n| (n.id, n.pod.as_str(), n.state))
            .collect();
        assert_eq!(
            nodes,
            [
                (5, "demo-4", DrainNodeState::Draining),
                (4, "demo-3", DrainNodeState::Draining)
            ]
        );
    }

    #[test]
    fn a_recorded_drain_is_finished_before_any_other_size() {
        let mut drain = start_drain("demo", 5, 3);
        // Whatever the spec asks for now (a scale-out, a further scale-in), the StatefulSet
        // stays at `from` while a node drains...
        for want in [3, 4, 5, 7] {
            let p = super::plan(&spec(want, 3), "demo", Some(5), Some(&drain));
            assert_eq!(p.drain(), Some(&drain));
            assert!(matches!(
                p,
                Plan::Apply {
                    replicas: 5,
                    refused: None,
                    ..
                }
            ));
        }
        // ...and shrinks to `to` once every one is drained.
        drain.nodes[0].state = DrainNodeState::Drained;
        let p = super::plan(&spec(5, 3), "demo", Some(5), Some(&drain));
        assert!(matches!(p, Plan::Apply { replicas: 5, .. }));
        drain.nodes[1].state = DrainNodeState::Drained;
        let p = super::plan(&spec(5, 3), "demo", Some(5), Some(&drain));
        assert!(matches!(p, Plan::Apply { replicas: 3, .. }));
        // Below the replication factor: refused, and the drain goes on.
        let p = super::plan(&spec(1, 3), "demo", Some(5), Some(&drain));
        assert!(
            matches!(&p, Plan::Apply { replicas: 3, refused: Some(r), .. } if r.reason == "BelowReplicationFactor")
        );
        // An invalid spec applies nothing, drain or not.
        let p = super::plan(&spec(4, 2), "demo", Some(5), Some(&drain));
        assert!(matches!(p, Plan::Invalid(_)));
    }

    #[test]
    fn below_the_replication_factor_is_refused() {
        let Plan::Apply {
            replicas, refused, ..
        } = plan(&spec(2, 3), Some(3))
        else {
            panic!("expected a plan")
        };
        assert_eq!(replicas, 3);
        assert_eq!(refused.unwrap().reason, "BelowReplicationFactor");
        // No StatefulSet yet: nothing is created.
        let Plan::Invalid(refusal) = plan(&spec(2, 3), None) else {
            panic!("expected a refusal")
        };
        assert_eq!(refusal.reason, "BelowReplicationFactor");
    }

    #[test]
    fn long_names_are_refused() {
        assert!(validate_name(&"a".repeat(52)).is_ok());
        let refusal = validate_name(&"a".repeat(53)).unwrap_err();
        assert_eq!(refusal.reason, "InvalidSpec");
        assert!(
            refusal.message.contains("at most 52"),
            "{}",
            refusal.message
        );
    }

    #[test]
    fn invalid_specs_apply_nothing() {
        for bad in [spec(4, 2), spec(9, 9), spec(0, 1), spec(3, 0)] {
            assert!(matches!(plan(&bad, Some(3)), Plan::Invalid(r) if r.reason == "InvalidSpec"));
        }
    }
}
