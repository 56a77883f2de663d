//! Strata's storage node.
//!
//! Layers, bottom up (each knows only the one below it):
//!
//! ```text
//!   server / cli        (later milestones)
//!   txn                 Percolator actions (commands and the coordinator: later)
//!   mvcc                versioned keys, locks and commit records over the LSM
//!   lsm                 Strata's own log-structured merge-tree storage engine
//! ```
//!
//! This crate is both the library those layers live in and the home of the `strata` CLI.

pub mod bench;
pub mod lsm;
pub mod mvcc;
pub mod txn;
