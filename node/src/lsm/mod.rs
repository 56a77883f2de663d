//! Strata's LSM storage engine.
//!
//! ```text
//!   write(batch) ──► WAL (optional, group commit) ──► active memtable (skiplist)
//!                                                        │ full
//!                                                        ▼
//!                                             immutable memtables ──flush──► L0 SSTables
//!                                                                                │ compaction
//!                                                                                ▼
//!                                                                 L1 .. Ln (leveled) or sorted runs
//!   get / iterate at a snapshot (sequence number):
//!       memtables ─┐
//!       L0 files  ─┼─► merging iterator ─► version resolution, tombstones, bounds
//!       levels    ─┘
//! ```
//!
//! One file per idea: [`key`] (internal key encoding), [`batch`] (atomic write batches),
//! [`iterator`] (the iterator trait and the merge), and the rest listed below. The design and
//! the byte layouts are documented in `docs/architecture/lsm.md`.

pub mod batch;
pub mod block;
pub mod bloom;
pub mod cache;
pub mod coding;
pub mod compaction;
pub mod db;
pub mod db_iter;
#[cfg(test)]
mod db_tests;
pub mod error;
pub mod iterator;
pub mod key;
pub mod log;
pub mod memtable;
pub mod options;
pub mod prefix;
pub mod range_del;
pub mod stats;
pub mod table;
pub mod version;

pub use batch::WriteBatch;
pub use compaction::{CompactionFilter, CompactionFilterState, FilterDecision};
pub use db::{Db, IterOptions, Snapshot};
pub use db_iter::DbIterator;
pub use error::{Error, Result};
pub use key::{ColumnFamily, SeqNo};
pub use options::{CompactionStyle, Compression, Options, ReadOptions, WriteOptions};
pub use prefix::PrefixExtractor;
pub use stats::Stats;
