//! One-phase commit of one key: the checks of a prewrite, then a commit record at once.
//!
//! A transaction whose keys all live in one shard can skip locks: under the latches of all
//! its keys, the leader checks each key as a prewrite would ([`one_pc_check`]), chooses the
//! commit timestamp (see [`crate::txn::concurrency`]), and writes the commit records
//! ([`one_pc_write`]) in one batch. The records are those a two-phase commit leaves: `Put`,
//! `Delete`, and `Lock` for the keys a SERIALIZABLE transaction read, so later prewrites see
//! them as commits.

use crate::mvcc::record::SHORT_VALUE_MAX;
use crate::mvcc::{LockInfo, MvccError, MvccReader, MvccTxn, Result, Timestamp, Write, WriteKind};

use super::Mutation;

/// Checks that transaction `start_ts` may commit `mutation` in one phase: `Ok(None)` if
/// it may, `Ok(Some(commit_ts))` if it already did (a retried request).
///
/// Fails with `KeyIsLocked` on another transaction's lock, `WriteConflict` on another
/// transaction's commit newer than `start_ts`, `AlreadyRolledBack` on this transaction's
/// rollback record (its outcome was settled as "not committed"), and `OnePcRefused` if the
/// transaction holds a lock of its own on the key (it began a two-phase commit).
pub fn one_pc_check(
    reader: &MvccReader<'_>,
    mutation: &Mutation,
    start_ts: Timestamp,
) -> Result<Option<Timestamp>> {
    let key = mutation.key();
    if let Some(lock) = reader.load_lock(key)? {
        if lock.start_ts != start_ts {
            return Err(MvccError::KeyIsLocked(LockInfo::new(key, &lock)));
        }
        return Err(MvccError::OnePcRefused(
            "the transaction holds a lock of its own: it commits in two phases".into(),
        ));
    }
    let mut verdict: Option<Result<Option<Timestamp>>> = None;
    reader.scan_writes(key, Timestamp::MAX, start_ts, |commit_ts, write| {
        if write.start_ts == start_ts {
            verdict = Some(if write.kind == WriteKind::Rollback {
                Err(MvccError::AlreadyRolledBack {
                    key: key.to_vec(),
                    start_ts,
                })
            } else {
                Ok(Some(commit_ts))
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
    verdict.unwrap_or(Ok(None))
}

/// Writes `mutation`'s commit record at `commit_ts` for transaction `txn.start_ts` (and its
/// value in the `default` family when it is too long to live inline).
pub fn one_pc_write(txn: &mut MvccTxn, mutation: &Mutation, commit_ts: Timestamp) {
    let start_ts = txn.start_ts;
    let (kind, short_value) = match mutation {
        Mutation::Put(k, v) if v.len() > SHORT_VALUE_MAX => {
            txn.put_value(k, v);
            (WriteKind::Put, None)
        }
        Mutation::Put(_, v) => (WriteKind::Put, Some(v.clone())),
        Mutation::Delete(_) => (WriteKind::Delete, None),
        Mutation::Lock(_) => (WriteKind::Lock, None),
    };
    txn.put_write(
        mutation.key(),
        commit_ts,
        &Write {
            kind,
            start_ts,
            short_value,
        },
    );
}
