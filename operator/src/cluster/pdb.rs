//! The PodDisruptionBudget: voluntary evictions (node drains, cluster upgrades) take at most
//! one pod of a cluster at a time, so a shard with three replicas keeps its quorum.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names::{owned_meta, ClusterNames};
use crate::crd::StrataCluster;
use crate::error::Result;

/// The PodDisruptionBudget `<cluster>` (policy/v1, `maxUnavailable: 1`).
pub fn build(cluster: &StrataCluster) -> Result<PodDisruptionBudget> {
    let names = ClusterNames::of(cluster)?;
    Ok(PodDisruptionBudget {
        metadata: owned_meta(cluster, &names, names.statefulset())?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(names.selector_labels()),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}
