//! Multi-version concurrency control on top of the LSM (Percolator layout).
//!
//! Every user key lives in three column families:
//!
//! ```text
//!   lock    key                 -> Lock  { kind, primary, start_ts, ttl, min_commit_ts, short value,
//!                                          coordinator }
//!   write   (key, commit_ts)    -> Write { kind: Put|Delete|Lock|Rollback, start_ts, short value }
//!   default (key, start_ts)     -> value (when too long to live inline)
//! ```
//!
//! Keys are memcomparable-encoded and versioned keys carry the timestamp inverted, so the
//! newest version of a key comes first ([`key`]). A read at `ts` checks the key's lock, then
//! finds the newest commit record at or below `ts` ([`MvccReader`]). Writes are collected by
//! [`MvccTxn`] into one LSM `WriteBatch`, which the caller applies directly (single node) or
//! proposes through Raft (replicated shards): this layer never writes to the engine itself.
//!
//! Versions no reader can need any more are collected below a GC safe point by the LSM's
//! compaction filter ([`gc`]).
//!
//! The per-key transaction logic (prewrite, commit, rollback, ...) lives in `txn::actions`,
//! built from the pieces here.

pub mod gc;
pub mod key;
#[cfg(test)]
mod prefix_read_tests;
pub mod reader;
pub mod record;
pub mod txn;

#[cfg(test)]
mod reader_tests;

pub use gc::{compute_safe_point, GcSafePoint, MvccGcFilter};
pub use reader::{MvccReader, ScanLimit, ScanPage, TxnCommitRecord};
pub use record::{Coordinator, Lock, LockKind, Write, WriteKind};
pub use txn::MvccTxn;

/// A hybrid timestamp (`physical_ms << 18 | logical`), as issued by the timestamp oracle.
pub type Timestamp = u64;

/// What a lock tells a reader or writer that runs into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    /// The locked key.
    pub key: Vec<u8>,
    /// The primary key of the lock's transaction.
    pub primary: Vec<u8>,
    /// The lock's transaction.
    pub start_ts: Timestamp,
    /// The lock's time to live, in milliseconds.
    pub ttl_ms: u64,
    /// What the lock's transaction does to the key.
    pub kind: LockKind,
}

impl LockInfo {
    /// The info of `lock` on `key`.
    pub fn new(key: &[u8], lock: &Lock) -> LockInfo {
        LockInfo {
            key: key.to_vec(),
            primary: lock.primary.clone(),
            start_ts: lock.start_ts,
            ttl_ms: lock.ttl_ms,
            kind: lock.kind,
        }
    }
}

/// Errors of the MVCC layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MvccError {
    /// The storage engine failed.
    #[error(transparent)]
    Engine(#[from] crate::lsm::Error),
    /// The key is locked by another transaction that may still commit below the read or
    /// write timestamp; the caller resolves the lock (check its primary) and retries.
    #[error("key {:?} is locked by transaction {} (primary {:?})", .0.key, .0.start_ts, .0.primary)]
    KeyIsLocked(LockInfo),
    /// A newer commit of the key exists than the transaction's start: it must abort.
    #[error("write conflict on key {key:?}: transaction {start_ts} conflicts with transaction {conflict_start_ts} committed at {conflict_commit_ts}")]
    WriteConflict {
        /// The key.
        key: Vec<u8>,
        /// The transaction that tried to write.
        start_ts: Timestamp,
        /// The transaction that committed first.
        conflict_start_ts: Timestamp,
        /// When it committed.
        conflict_commit_ts: Timestamp,
    },
    /// The transaction was already rolled back (for example by a reader that found its lock
    /// expired); it cannot commit.
    #[error("transaction {start_ts} was rolled back (key {key:?})")]
    AlreadyRolledBack {
        /// The key.
        key: Vec<u8>,
        /// The transaction.
        start_ts: Timestamp,
    },
    /// The lock a commit expected is gone and no commit record explains it.
    #[error("transaction {start_ts} holds no lock on key {key:?}")]
    TxnLockNotFound {
        /// The key.
        key: Vec<u8>,
        /// The transaction.
        start_ts: Timestamp,
    },
    /// The commit timestamp is below the lock's minimum commit timestamp.
    #[error("commit_ts {commit_ts} of transaction {start_ts} is below its min_commit_ts {min_commit_ts}")]
    CommitTsExpired {
        /// The transaction.
        start_ts: Timestamp,
        /// The proposed commit timestamp.
        commit_ts: Timestamp,
        /// The lowest allowed.
        min_commit_ts: Timestamp,
    },
    /// The key lies in a range that a committing SERIALIZABLE transaction scanned; the
    /// write must wait until that transaction finishes.
    #[error("key {key:?} is in a range read by committing transaction {owner}")]
    RangeLocked {
        /// The key.
        key: Vec<u8>,
        /// The transaction holding the range lock.
        owner: Timestamp,
    },
    /// A rollback found the transaction already committed.
    #[error("transaction {start_ts} already committed key {key:?} at {commit_ts}")]
    Committed {
        /// The key.
        key: Vec<u8>,
        /// The transaction.
        start_ts: Timestamp,
        /// Its commit timestamp.
        commit_ts: Timestamp,
    },
    /// The read (or prewrite) timestamp is below the GC safe point: the versions it would
    /// need may already be collected. Not retryable at this timestamp; start a new
    /// transaction.
    #[error("timestamp {ts} is below the GC safe point {safe_point}")]
    ReadBelowSafePoint {
        /// The timestamp asked for.
        ts: Timestamp,
        /// The safe point at the time.
        safe_point: Timestamp,
    },
    /// This replica does not lead the shard, or was just elected and has not caught up yet:
    /// nothing was read or written. Retry at the leader (`leader`: its node id, if known).
    #[error("shard {shard}: this node does not lead it (leader: {leader:?})")]
    NotLeader {
        /// The shard.
        shard: u64,
        /// The node believed to lead, if known.
        leader: Option<u64>,
    },
    /// A write was handed to replication but whether it was applied is unknown (the leader
    /// changed, or the wait for it timed out): it may or may not be part of the shard.
    #[error("the outcome of a replicated write is unknown: {0}")]
    OutcomeUnknown(String),
    /// Replication stopped (its log could not be written; the node must restart): nothing
    /// more is written.
    #[error("replication unavailable: {0}")]
    Unavailable(String),
    /// The range locks of committing SERIALIZABLE transaction `owner` are not held by the
    /// shard's leader in the term its primary would commit in (the leader changed since they
    /// were taken, or their lease ran out): nothing was committed, and a write may have
    /// entered a range the transaction scanned unseen, so it must run again.
    #[error("the range locks of transaction {owner} were lost (leader change or lease expiry); nothing was committed")]
    RangeLocksLost {
        /// The transaction.
        owner: Timestamp,
    },
    /// The shard cannot commit this transaction in one phase now (its leader has not taken
    /// its `max_ts` floor in this term, or the transaction began a two-phase commit):
    /// nothing was written; commit in two phases.
    #[error("no one-phase commit: {0}")]
    OnePcRefused(String),
    /// Stored MVCC data does not decode.
    #[error("corrupt MVCC data for key {key:?}: {reason}")]
    Corrupt {
        /// The key (encoded form if it did not decode).
        key: Vec<u8>,
        /// What was wrong.
        reason: String,
    },
}

/// Result alias of the MVCC layer.
pub type Result<T, E = MvccError> = std::result::Result<T, E>;
