//! The Strata Kubernetes operator.
//!
//! A later milestone builds it: a kube-rs controller that reconciles `StrataCluster` and
//! `StrataBackup` custom resources into StatefulSets, Services, ConfigMaps and
//! PodDisruptionBudgets. Until then this crate only reserves its place in the workspace.
