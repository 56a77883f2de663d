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
//!
//!   concurrent clients ─► HistoryRecorder: invoke, then ok / fail / unknown
//!   (leader kills,                      │ ConcurrentHistory (call and return times)
//!    partitions)                        ▼
//!                    linearizability::check_register (per key, bounded search)
//!                                       │
//!                                       ▼
//!            Linearizable, NotLinearizable (the op that could not be placed), Unknown
//! ```
//!
//! [`history`] checks isolation of transaction histories (Adya's dependency graph and the
//! timestamp definition of snapshot isolation). [`linearizability`] checks that single-key
//! reads, writes and compare-and-sets from concurrent clients, with real-time call and
//! return times and outcomes possibly unknown, are linearizable (Wing and Gong's search with
//! Lowe's memoization, one key at a time). [`client`] records register histories from real
//! clients of the public gRPC API (any node a gateway), classifying each error as a
//! refusal or an unknown outcome. [`txn_client`] records transaction histories from real
//! clients the same way (interactive Begin, Get, Put, Commit), settles unknown Commits
//! afterwards through a marker key per transaction, and builds the anomalies (stale read,
//! lost update, write skew) tests inject into a recorded history to show a verdict is not
//! vacuous.

pub mod client;
pub mod history;
pub mod linearizability;
pub mod txn_client;
