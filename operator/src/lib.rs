//! The Strata Kubernetes operator.
//!
//! A kube-rs controller that reconciles `StrataCluster` and `StrataBackup` custom resources
//! into StatefulSets, Services, ConfigMaps and PodDisruptionBudgets.
//!
//! ```text
//!   crd/          the custom resource types (and the CRD YAML generated from them)
//!   cluster/      StrataCluster: plan -> build (pure builders) -> apply -> status
//!   backup        StrataBackup: phase and message (the node side does not exist yet)
//!   client        the API client (its User-Agent names the field manager)
//!   controller    the watches, the shared context, the error policy and its backoff
//!   lease         leader election through a coordination.k8s.io Lease
//!   http          /metrics, /healthz, /readyz
//!   metrics       counters for /metrics
//!   runtime       campaign, lead, stop (the binary's main loop)
//! ```

pub mod backup;
pub mod client;
pub mod cluster;
pub mod controller;
pub mod crd;
pub mod error;
#[cfg(test)]
mod fake_api;
pub mod http;
pub mod lease;
pub mod metrics;
pub mod runtime;
pub mod schedule;
