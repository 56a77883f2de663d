//! Range locks: how SERIALIZABLE transactions keep phantoms out of the ranges they scanned.
//!
//! A serializable transaction T that scanned a range R must not commit if another
//! transaction W writes into R "between" T's read and T's commit. At commit T:
//!
//! 1. registers a range lock on R (under the exclusive side of a gate that every prewrite
//!    holds shared, so no prewrite is half-way between its check and its write),
//! 2. checks R for commit records newer than its start_ts and for other transactions'
//!    locks (a hit aborts T, or waits for a lock to resolve),
//! 3. prewrites and commits as usual, and releases the range lock once its primary is
//!    committed (or it aborts).
//!
//! Every prewrite of a key that changes data checks the range locks of *other*
//! transactions and fails (retryably) on a hit. So a write into R either committed before
//! step 2 (T sees it and aborts), is prewritten before step 2 (T sees its lock), or comes
//! after step 1 (it is refused until T is done, and then commits after T). Point reads are
//! protected separately, by `Lock` mutations prewritten with the transaction's writes.
//! The table is in memory: it protects the commit window of transactions coordinated by
//! this node, which on a single node is every transaction. Replicated shards will need the
//! locks held on the shards themselves.

use parking_lot::{Mutex, RwLock, RwLockReadGuard};

use crate::mvcc::Timestamp;

/// A key range `[start, end)`; `end` unbounded when `None`.
pub type KeyRange = (Vec<u8>, Option<Vec<u8>>);

/// Whether `key` lies in `range`.
pub fn range_contains(range: &KeyRange, key: &[u8]) -> bool {
    key >= range.0.as_slice() && range.1.as_ref().is_none_or(|e| key < e.as_slice())
}

/// The range locks of transactions that are committing.
#[derive(Debug, Default)]
pub struct RangeLocks {
    gate: RwLock<()>,
    held: Mutex<Vec<(Timestamp, KeyRange)>>,
}

/// A transaction's range locks; released when dropped.
#[derive(Debug)]
pub struct RangeLockGuard<'a> {
    table: &'a RangeLocks,
    owner: Timestamp,
}

impl Drop for RangeLockGuard<'_> {
    fn drop(&mut self) {
        self.table
            .held
            .lock()
            .retain(|(owner, _)| *owner != self.owner);
    }
}

impl RangeLocks {
    /// An empty table.
    pub fn new() -> RangeLocks {
        RangeLocks::default()
    }

    /// Registers `ranges` for transaction `owner`, after every prewrite in progress has
    /// finished writing.
    pub fn lock(&self, owner: Timestamp, ranges: &[KeyRange]) -> RangeLockGuard<'_> {
        let _exclusive = self.gate.write();
        self.held
            .lock()
            .extend(ranges.iter().map(|r| (owner, r.clone())));
        RangeLockGuard { table: self, owner }
    }

    /// Held by a prewrite from its range-lock check until its batch is written.
    pub fn enter_prewrite(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read()
    }

    /// A transaction other than `writer` whose range lock covers `key`.
    pub fn conflicting(&self, key: &[u8], writer: Timestamp) -> Option<Timestamp> {
        self.held
            .lock()
            .iter()
            .find(|(owner, range)| *owner != writer && range_contains(range, key))
            .map(|(owner, _)| *owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_cover_their_ranges_until_released() {
        let table = RangeLocks::new();
        let guard = table.lock(
            10,
            &[(b"b".to_vec(), Some(b"d".to_vec())), (b"x".to_vec(), None)],
        );
        assert_eq!(table.conflicting(b"c", 20), Some(10));
        assert_eq!(table.conflicting(b"d", 20), None, "end is exclusive");
        assert_eq!(table.conflicting(b"zzz", 20), Some(10), "unbounded end");
        assert_eq!(
            table.conflicting(b"c", 10),
            None,
            "own locks never conflict"
        );
        drop(guard);
        assert_eq!(table.conflicting(b"c", 20), None);
    }
}
