//! Strata's storage node.
//!
//! Layers, bottom up (each knows only the one below it):
//!
//! ```text
//!   server / cli        (later milestones)
//!   txn + mvcc          (later milestones)
//!   lsm                 Strata's own log-structured merge-tree storage engine
//! ```
//!
//! Beside them, [`tso`] is the timestamp oracle that transactions take their timestamps from.
//!
//! This crate is both the library those layers live in and the home of the `strata` CLI.

pub mod bench;
pub mod lsm;
pub mod tso;
