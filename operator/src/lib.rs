//! The Strata Kubernetes operator.
//!
//! A kube-rs controller that reconciles `StrataCluster` and `StrataBackup` custom resources
//! into StatefulSets, Services, ConfigMaps and PodDisruptionBudgets.
//!
//! ```text
//!   crd/        the custom resource types (and the CRD YAML generated from them)
//!   cluster/    StrataCluster: validate -> build (pure builders) -> apply -> status
//! ```

pub mod cluster;
pub mod crd;
pub mod error;
