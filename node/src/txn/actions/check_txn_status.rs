//! check_txn_status and heartbeat: what happened to a transaction, decided at its primary.
//!
//! A transaction's fate is recorded on its primary key alone: a commit record there means
//! committed, a rollback record means rolled back, a live lock means still running. Anyone
//! who meets one of its locks asks the primary. A lock whose time to live has run out is
//! rolled back on the spot, which is what lets the system recover from a coordinator that
//! died mid-commit. So is a lock whose coordinator is an earlier run of the node asking
//! (`local_run`): that coordinator died with its run, so waiting out the TTL would only stall
//! the keys (see [`lock_expired`]). A live lock can have its `min_commit_ts` pushed above a reader's
//! timestamp, so the reader may ignore it (the transaction will commit after the read).

use crate::mvcc::{
    Coordinator, Lock, LockKind, MvccReader, MvccTxn, Result, Timestamp, TxnCommitRecord, Write,
    WriteKind,
};

/// Bits of a timestamp below the physical milliseconds.
const LOGICAL_BITS: u32 = 18;

/// Milliseconds of a hybrid timestamp.
pub fn physical_ms(ts: Timestamp) -> u64 {
    ts >> LOGICAL_BITS
}

/// Whether `lock` may be rolled back by others at `current_ts`: its TTL ran out, or its
/// coordinator is an earlier run of `local_run`'s node (the coordinator is gone).
pub fn lock_expired(lock: &Lock, current_ts: Timestamp, local_run: Option<&Coordinator>) -> bool {
    let gone = match (&lock.coordinator, local_run) {
        (Some(owner), Some(local)) => owner.is_earlier_run_of(local),
        _ => false,
    };
    let expires_ms = physical_ms(lock.start_ts).saturating_add(lock.ttl_ms);
    gone || expires_ms < physical_ms(current_ts)
}

/// What check_txn_status found (and did).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnStatus {
    /// Still running: its primary lock is alive.
    Locked {
        /// The lock's time to live, in milliseconds from its start.
        ttl_ms: u64,
        /// Its minimum commit timestamp (possibly just pushed).
        min_commit_ts: Timestamp,
    },
    /// Committed at `commit_ts`.
    Committed {
        /// The commit timestamp.
        commit_ts: Timestamp,
    },
    /// Rolled back, earlier or just now.
    RolledBack {
        /// Whether this call rolled it back (its lock had expired, or it never locked the
        /// primary and a protective rollback record was written).
        now: bool,
    },
}

/// Determines the status of transaction `txn.start_ts` from its `primary` key, at time
/// `current_ts`. An expired primary lock ([`lock_expired`], given this node's current run
/// `local_run`) is rolled back; a missing one gets a rollback record so the transaction can
/// never commit. If `push_to` is given and the transaction is
/// still running, its `min_commit_ts` is raised above `push_to` (a reader at `push_to` may
/// then ignore its locks).
pub fn check_txn_status(
    txn: &mut MvccTxn,
    reader: &MvccReader<'_>,
    primary: &[u8],
    current_ts: Timestamp,
    push_to: Option<Timestamp>,
    local_run: Option<&Coordinator>,
) -> Result<TxnStatus> {
    let start_ts = txn.start_ts;
    match reader.load_lock(primary)? {
        Some(mut lock) if lock.start_ts == start_ts => {
            if lock_expired(&lock, current_ts, local_run) {
                if lock.kind == LockKind::Put && lock.short_value.is_none() {
                    txn.delete_value(primary);
                }
                txn.unlock_key(primary);
                txn.put_write(
                    primary,
                    start_ts,
                    &Write {
                        kind: WriteKind::Rollback,
                        start_ts,
                        short_value: None,
                    },
                );
                return Ok(TxnStatus::RolledBack { now: true });
            }
            if let Some(ts) = push_to {
                if lock.kind != LockKind::Lock && lock.min_commit_ts <= ts {
                    lock.min_commit_ts = ts + 1;
                    txn.put_lock(primary, &lock);
                }
            }
            Ok(TxnStatus::Locked {
                ttl_ms: lock.ttl_ms,
                min_commit_ts: lock.min_commit_ts,
            })
        }
        _ => match reader.txn_commit_record(primary, start_ts)? {
            TxnCommitRecord::Committed { commit_ts, .. } => Ok(TxnStatus::Committed { commit_ts }),
            TxnCommitRecord::RolledBack => Ok(TxnStatus::RolledBack { now: false }),
            TxnCommitRecord::None => {
                txn.put_write(
                    primary,
                    start_ts,
                    &Write {
                        kind: WriteKind::Rollback,
                        start_ts,
                        short_value: None,
                    },
                );
                Ok(TxnStatus::RolledBack { now: true })
            }
        },
    }
}

/// Extends the time to live of transaction `txn.start_ts`'s primary lock to `ttl_ms` (from
/// its start). Returns the resulting TTL, or `None` if the primary is no longer locked by
/// the transaction (it committed, or was rolled back).
pub fn heartbeat(
    txn: &mut MvccTxn,
    reader: &MvccReader<'_>,
    primary: &[u8],
    ttl_ms: u64,
) -> Result<Option<u64>> {
    match reader.load_lock(primary)? {
        Some(mut lock) if lock.start_ts == txn.start_ts => {
            if ttl_ms > lock.ttl_ms {
                lock.ttl_ms = ttl_ms;
                txn.put_lock(primary, &lock);
            }
            Ok(Some(lock.ttl_ms))
        }
        _ => Ok(None),
    }
}
