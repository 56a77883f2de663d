//! Reconciling a `StrataCluster`: a pipeline of small steps.
//!
//! ```text
//!   read (the watch)  ->  validate / plan  ->  build  ->  apply  ->  status
//!                         plan.rs             config_map.rs, service.rs,
//!                                             statefulset.rs, pdb.rs
//! ```
//!
//! The builders are pure functions from the custom resource (and the plan's replica count)
//! to one Kubernetes object each, with owner references so that deleting the cluster
//! deletes them; they use no client and are tested from golden YAML.

pub mod admin;
pub mod config_map;
pub mod drain;
pub mod names;
pub mod pdb;
pub mod plan;
pub mod probe;
pub mod reconcile;
pub mod service;
pub mod statefulset;
pub mod status;

#[cfg(test)]
mod drain_tests;
#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod reconcile_tests;
