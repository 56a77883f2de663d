//! Strata's storage node.
//!
//! Layers, bottom up (each knows only the one below it):
//!
//! ```text
//!   server              gRPC API (Kv, Txn, Admin) and the HTTP metrics port
//!   cli                 the `strata` command-line client (over gRPC)
//!   gateway             the coordinator's route to a shard's leader: local, or the
//!                       internal Shard service of another node
//!   txn                 Percolator actions, latched commands, the coordinator
//!   raftstore           multi-raft replication: raft-rs replicas over one raft-engine log
//!                       (complete and tested on its own; not yet under the server's writes)
//!   mvcc                versioned keys, locks and commit records over the LSM
//!   lsm                 Strata's own log-structured merge-tree storage engine
//! ```
//!
//! Beside them, [`tso`] is the timestamp oracle that transactions take their timestamps from,
//! and [`check`] holds the checkers tests hold recorded histories against (no layer uses it);
//! [`park`] is how the synchronous layers wait for a future without a thread hand-off.
//!
//! This crate is both the library those layers live in and the home of the `strata` CLI.

pub mod bench;
pub mod check;
pub mod cli;
pub mod gateway;
pub mod lsm;
pub mod mvcc;
pub mod park;
pub mod raftstore;
pub mod server;
pub mod tso;
pub mod txn;
