//! resolve_lock: finish a secondary lock the way its primary was finished.

use crate::mvcc::{MvccReader, MvccTxn, Result, Timestamp};

use super::{commit, rollback};

/// Commits (`commit_ts` is `Some`) or rolls back (`None`) transaction `txn.start_ts` on
/// `key`, after check_txn_status found its primary committed or rolled back. Resolving a
/// key that was already resolved the same way succeeds; a commit of a key the transaction
/// holds no lock on and never committed is `TxnLockNotFound`, as for a plain commit.
pub fn resolve_lock(
    txn: &mut MvccTxn,
    reader: &MvccReader<'_>,
    key: &[u8],
    commit_ts: Option<Timestamp>,
) -> Result<()> {
    match commit_ts {
        Some(ts) => commit(txn, reader, key, ts),
        None => rollback(txn, reader, key),
    }
}
