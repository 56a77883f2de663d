//! Prewrite: the first phase of a Percolator commit, for one key.

use crate::mvcc::record::SHORT_VALUE_MAX;
use crate::mvcc::{
    Coordinator, Lock, LockInfo, LockKind, MvccError, MvccReader, MvccTxn, Result, Timestamp,
    WriteKind,
};

/// What a transaction does to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// Set the key.
    Put(Vec<u8>, Vec<u8>),
    /// Delete the key.
    Delete(Vec<u8>),
    /// Change nothing, but lock the key so that a concurrent write of it conflicts
    /// (SERIALIZABLE reads).
    Lock(Vec<u8>),
}

impl Mutation {
    /// The key.
    pub fn key(&self) -> &[u8] {
        match self {
            Mutation::Put(k, _) | Mutation::Delete(k) | Mutation::Lock(k) => k,
        }
    }
}

/// Transaction-wide parameters of a prewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrewriteOptions {
    /// The transaction's primary key.
    pub primary: Vec<u8>,
    /// Lock time to live, in milliseconds.
    pub ttl_ms: u64,
    /// The lowest commit timestamp the transaction may use (at least `start_ts + 1`).
    pub min_commit_ts: Timestamp,
    /// The node run driving the commit, recorded in every lock so that a later run of the
    /// same node can tell the lock's coordinator is gone.
    pub coordinator: Option<Coordinator>,
}

/// Locks `mutation`'s key for transaction `txn.start_ts`.
///
/// Fails with `KeyIsLocked` if another transaction holds the key's lock, `WriteConflict` if
/// a transaction committed the key after `start_ts`, and `AlreadyRolledBack` if this
/// transaction was rolled back on the key. Prewriting a key this transaction already locked
/// succeeds without writing (a retried request).
pub fn prewrite(
    txn: &mut MvccTxn,
    reader: &MvccReader<'_>,
    mutation: &Mutation,
    options: &PrewriteOptions,
) -> Result<()> {
    let key = mutation.key();
    let start_ts = txn.start_ts;
    if let Some(lock) = reader.load_lock(key)? {
        if lock.start_ts != start_ts {
            return Err(MvccError::KeyIsLocked(LockInfo::new(key, &lock)));
        }
        return Ok(());
    }
    // Every record at or after start_ts: our own commit or rollback record settles it;
    // another transaction's rollback record is no conflict (it changed nothing); any other
    // record is a newer commit by another transaction.
    let mut verdict: Option<Result<()>> = None;
    reader.scan_writes(key, Timestamp::MAX, start_ts, |commit_ts, write| {
        if write.start_ts == start_ts {
            verdict = Some(if write.kind == WriteKind::Rollback {
                Err(MvccError::AlreadyRolledBack {
                    key: key.to_vec(),
                    start_ts,
                })
            } else {
                Ok(())
            });
            return false;
        }
        if write.kind == WriteKind::Rollback {
            return true;
        }
        if verdict.is_none() {
            verdict = Some(Err(MvccError::WriteConflict {
                key: key.to_vec(),
                start_ts,
                conflict_start_ts: write.start_ts,
                conflict_commit_ts: commit_ts,
            }));
        }
        // Keep looking: our own record further down takes precedence.
        true
    })?;
    if let Some(v) = verdict {
        return v;
    }
    let (kind, value) = match mutation {
        Mutation::Put(_, v) => (LockKind::Put, Some(v)),
        Mutation::Delete(_) => (LockKind::Delete, None),
        Mutation::Lock(_) => (LockKind::Lock, None),
    };
    let short_value = match value {
        Some(v) if v.len() <= SHORT_VALUE_MAX => Some(v.clone()),
        Some(v) => {
            txn.put_value(key, v);
            None
        }
        None => None,
    };
    let lock = Lock {
        kind,
        primary: options.primary.clone(),
        start_ts,
        ttl_ms: options.ttl_ms,
        min_commit_ts: options.min_commit_ts.max(start_ts + 1),
        short_value,
        coordinator: options.coordinator,
    };
    txn.put_lock(key, &lock);
    Ok(())
}
