//! Rollback: undo a transaction's prewrite of one key, for good.

use crate::mvcc::{
    LockKind, MvccError, MvccReader, MvccTxn, Result, TxnCommitRecord, Write, WriteKind,
};

/// Rolls back transaction `txn.start_ts` on `key`: removes its lock and value, and writes a
/// rollback record at `(key, start_ts)` so that a prewrite of the same transaction arriving
/// late (a delayed or retried request) fails instead of locking the key again.
///
/// Rolling back twice succeeds. Fails with `Committed` if the transaction already committed
/// the key: a committed transaction can never be undone.
pub fn rollback(txn: &mut MvccTxn, reader: &MvccReader<'_>, key: &[u8]) -> Result<()> {
    let start_ts = txn.start_ts;
    match reader.load_lock(key)? {
        Some(lock) if lock.start_ts == start_ts => {
            if lock.kind == LockKind::Put && lock.short_value.is_none() {
                txn.delete_value(key);
            }
            txn.unlock_key(key);
        }
        _ => match reader.txn_commit_record(key, start_ts)? {
            TxnCommitRecord::Committed { commit_ts, .. } => {
                return Err(MvccError::Committed {
                    key: key.to_vec(),
                    start_ts,
                    commit_ts,
                });
            }
            TxnCommitRecord::RolledBack => return Ok(()),
            TxnCommitRecord::None => {}
        },
    }
    txn.put_write(
        key,
        start_ts,
        &Write {
            kind: WriteKind::Rollback,
            start_ts,
            short_value: None,
        },
    );
    Ok(())
}
