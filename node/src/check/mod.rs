//! Checkers for what a run of Strata produced, kept apart from the layers they check.
//!
//! Nothing here runs inside a node: these are the oracles that tests (the node's own, and
//! the cluster tests of the `strata-tests` crate) hold recorded behaviour against.
//!
//! ```text
//!   a test runs transactions ─► records what each client saw (a History)
//!                                       │
//!                                       ▼
//!                    history::check_serializable / check_snapshot_isolation
//!                                       │
//!                                       ▼
//!                              Ok, or the Anomaly found
//! ```
//!
//! [`history`] checks isolation of transaction histories (Adya's dependency graph and the
//! timestamp definition of snapshot isolation).

pub mod history;
