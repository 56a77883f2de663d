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
//!
//! A prewrite refused by a range lock waits for its release in a [`LockWaits`] queue named
//! after the owner (every waiter is woken: the refused prewrites do not exclude each
//! other), so it holds no thread while the owner commits.

use std::sync::Arc;

use parking_lot::{Mutex, RwLock, RwLockReadGuard};

use super::lock_wait::{LockWaits, Waiter};
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
    held: Arc<Mutex<Vec<(Timestamp, KeyRange)>>>,
    waits: LockWaits,
}

/// A transaction's range locks; released when dropped. It owns what it needs, so a
/// transaction can hold it across the awaits of an asynchronous commit.
#[derive(Debug)]
pub struct RangeLockGuard {
    held: Arc<Mutex<Vec<(Timestamp, KeyRange)>>>,
    waits: LockWaits,
    owner: Timestamp,
}

impl Drop for RangeLockGuard {
    fn drop(&mut self) {
        // Removed first, woken second: a waiter that enqueued and then still saw the lock
        // held is woken (see `RangeLocks::wait_for_release`).
        self.held.lock().retain(|(owner, _)| *owner != self.owner);
        self.waits.release_all(&self.owner.to_be_bytes());
    }
}

impl RangeLocks {
    /// An empty table.
    pub fn new() -> RangeLocks {
        RangeLocks::default()
    }

    /// Registers `ranges` for transaction `owner`, after every prewrite in progress has
    /// finished writing.
    pub fn lock(&self, owner: Timestamp, ranges: &[KeyRange]) -> RangeLockGuard {
        let _exclusive = self.gate.write();
        self.held
            .lock()
            .extend(ranges.iter().map(|r| (owner, r.clone())));
        RangeLockGuard {
            held: Arc::clone(&self.held),
            waits: self.waits.clone(),
            owner,
        }
    }

    /// A place among the waiters for `owner`'s range locks to be released, or `None` if
    /// they already are (retry at once).
    pub fn wait_for_release(&self, owner: Timestamp) -> Option<Waiter> {
        // Enqueued before the check: a release after the check finds the waiter.
        let waiter = self.waits.enqueue(&owner.to_be_bytes());
        let held = self.held.lock().iter().any(|(o, _)| *o == owner);
        held.then_some(waiter)
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

    #[test]
    fn releasing_wakes_the_prewrites_waiting_for_it() {
        let table = RangeLocks::new();
        let guard = table.lock(10, &[(b"a".to_vec(), None)]);
        let w1 = table.wait_for_release(10).unwrap();
        let w2 = table.wait_for_release(10).unwrap();
        assert!(!w1.is_woken() && !w2.is_woken());
        drop(guard);
        assert!(w1.is_woken() && w2.is_woken(), "every waiter is woken");
        assert!(
            table.wait_for_release(10).is_none(),
            "nothing to wait for once released"
        );
    }
}
