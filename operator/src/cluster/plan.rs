//! Validate and plan: what size the StatefulSet should have, and what the operator refuses.
//!
//! A pure function of the spec and the running StatefulSet's size:
//!
//! | spec asks for | running | plan |
//! |---|---|---|
//! | an invalid spec (CEL off or bypassed) | any | apply nothing; `Degraded`, reason `InvalidSpec` |
//! | `replicas >= running` | n | apply `replicas` (create or scale out) |
//! | `replicas < replicationFactor` | n | keep n; `Degraded`, reason `BelowReplicationFactor` |
//! | `replicationFactor <= replicas < running` | n | keep n; `Degraded`, reason `ScaleInNotSupported` |
//!
//! Scale-in must drain the highest ordinals through `Admin.Decommission` before the
//! StatefulSet shrinks, or their replicas are lost; the node does not implement that call
//! yet, so the operator never lowers the StatefulSet and says so in the status.

use crate::crd::StrataClusterSpec;

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
    },
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

/// The plan for `spec` when the StatefulSet runs `running` pods (`None`: none exists yet).
pub fn plan(spec: &StrataClusterSpec, running: Option<i32>) -> Plan {
    if let Err(refusal) = validate(spec) {
        return Plan::Invalid(refusal);
    }
    let rf = spec.replication_factor;
    let want = spec.replicas;
    match running {
        None if want < rf => Plan::Invalid(below_rf(want, rf, None)),
        Some(n) if want < n && want < rf => Plan::Apply {
            replicas: n,
            running,
            refused: Some(below_rf(want, rf, Some(n))),
        },
        Some(n) if want < n => Plan::Apply {
            replicas: n,
            running,
            refused: Some(Refusal {
                reason: "ScaleInNotSupported",
                message: format!(
                    "scale-in from {n} to {want} nodes is not supported yet: it needs a drain of the highest ordinals through Admin.Decommission, which strata-node does not implement; the StatefulSet stays at {n}"
                ),
            }),
        },
        _ if want < rf => Plan::Invalid(below_rf(want, rf, running)),
        _ => Plan::Apply {
            replicas: want,
            running,
            refused: None,
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
        }
    }

    #[test]
    fn create_and_scale_out_follow_the_spec() {
        assert_eq!(plan(&spec(3, 3), None), applied(3, None));
        assert_eq!(plan(&spec(5, 3), Some(3)), applied(5, Some(3)));
        assert_eq!(plan(&spec(3, 3), Some(3)), applied(3, Some(3)));
        assert_eq!(plan(&spec(1, 1), None), applied(1, None));
    }

    #[test]
    fn scale_in_keeps_the_running_size() {
        let Plan::Apply {
            replicas, refused, ..
        } = plan(&spec(3, 3), Some(5))
        else {
            panic!("expected a plan")
        };
        assert_eq!(replicas, 5);
        let refused = refused.unwrap();
        assert_eq!(refused.reason, "ScaleInNotSupported");
        assert!(
            refused.message.contains("Admin.Decommission"),
            "{}",
            refused.message
        );
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
