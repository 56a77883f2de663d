//! Commit: turn a transaction's lock on one key into a commit record.

use crate::mvcc::{
    MvccError, MvccReader, MvccTxn, Result, Timestamp, TxnCommitRecord, Write, WriteKind,
};

/// Commits `key` for transaction `txn.start_ts` at `commit_ts`.
///
/// Committing a key the transaction already committed succeeds without writing (a retried
/// request). Fails with `AlreadyRolledBack` if the transaction was rolled back on the key,
/// `TxnLockNotFound` if it never locked it, and `CommitTsExpired` if `commit_ts` is below
/// the lock's `min_commit_ts`.
pub fn commit(
    txn: &mut MvccTxn,
    reader: &MvccReader<'_>,
    key: &[u8],
    commit_ts: Timestamp,
) -> Result<()> {
    let start_ts = txn.start_ts;
    match reader.load_lock(key)? {
        Some(lock) if lock.start_ts == start_ts => {
            if commit_ts < lock.min_commit_ts {
                return Err(MvccError::CommitTsExpired {
                    start_ts,
                    commit_ts,
                    min_commit_ts: lock.min_commit_ts,
                });
            }
            let write = Write {
                kind: WriteKind::from_lock(lock.kind),
                start_ts,
                short_value: lock.short_value,
            };
            txn.put_write(key, commit_ts, &write);
            txn.unlock_key(key);
            Ok(())
        }
        _ => match reader.txn_commit_record(key, start_ts)? {
            TxnCommitRecord::Committed { .. } => Ok(()),
            TxnCommitRecord::RolledBack => Err(MvccError::AlreadyRolledBack {
                key: key.to_vec(),
                start_ts,
            }),
            TxnCommitRecord::None => Err(MvccError::TxnLockNotFound {
                key: key.to_vec(),
                start_ts,
            }),
        },
    }
}
