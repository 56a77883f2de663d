//! Range locks: how SERIALIZABLE transactions keep phantoms out of the ranges they scanned.
//!
//! A serializable transaction T that scanned a range R must not commit if another
//! transaction W writes into R "between" T's read and T's commit. At commit T:
//!
//! 1. registers a range lock on R at the shard's leader (under the exclusive side of a gate
//!    that every prewrite holds shared, so no prewrite is half-way between its check and its
//!    write), and learns the leader term it was registered in,
//! 2. checks R for commit records newer than its start_ts and for other transactions'
//!    locks (a hit aborts T, or waits for a lock to resolve),
//! 3. prewrites, takes its commit_ts, and commits its primary *guarded*: the leader commits
//!    it only if it still holds T's registration, made in the term it leads in now; then T
//!    releases the range lock (or releases it when it aborts).
//!
//! Every prewrite of a key that changes data checks the range locks of *other*
//! transactions and fails (retryably) on a hit. So a write into R either committed before
//! step 2 (T sees it and aborts), is prewritten before step 2 (T sees its lock), or comes
//! after step 1 (it is refused until T is done, and then takes a commit_ts above T's). Point
//! reads are protected separately, by `Lock` mutations prewritten with the transaction's
//! writes, which are replicated like any lock.
//!
//! **The table lives on the leader, in memory.** It is not replicated: a new leader starts
//! with an empty table and accepts writes into R that the old leader would have refused.
//! That is why step 3 is guarded. Every write applied in the registration's term was
//! computed by the leader of that term, after the registration or before it (and then
//! applied before it, thanks to the gate, so step 2 sees it); a write computed in another
//! term is refused by the state machine under this term (see `shard_writer`). So a guard
//! that finds the registration in the term the primary commits in proves no write entered R
//! unseen; a guard that does not refuses the commit (`RangeLocksLost`: retryable, nothing
//! committed). A leader that lost its lead and regained it finds its old entries under an
//! older term and refuses too.
//!
//! **Leases.** A coordinator that vanishes must not pin R for ever: a registration lapses a
//! lease after it was made (the leader's monotonic clock), and a lapsed registration is
//! simply gone, for prewrites and guards alike. The guard needs the registration to be
//! present *until T has its commit_ts* (a write prewritten later gets a larger commit_ts,
//! after T in the serial order); finding it present and unexpired at the commit proves it
//! was present all along, since only the owner registers it, once, before step 2.
//!
//! A prewrite refused by a range lock waits for its release in a [`LockWaits`] queue named
//! after the owner (every waiter is woken: the refused prewrites do not exclude each
//! other), so it holds no thread while the owner commits; its wait ends at the lease's end
//! at the latest.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock, RwLockReadGuard};

use super::lock_wait::{LockWaits, Waiter};
use crate::mvcc::Timestamp;

/// A key range `[start, end)`; `end` unbounded when `None`.
pub type KeyRange = (Vec<u8>, Option<Vec<u8>>);

/// Whether `key` lies in `range`.
pub fn range_contains(range: &KeyRange, key: &[u8]) -> bool {
    key >= range.0.as_slice() && range.1.as_ref().is_none_or(|e| key < e.as_slice())
}

/// One committing transaction's registration.
#[derive(Debug)]
struct Registration {
    ranges: Vec<KeyRange>,
    /// The leader term it was made in.
    term: u64,
    /// It lapses then.
    expires: Instant,
}

/// The range locks of transactions that are committing, by owner (start_ts).
#[derive(Debug, Default)]
pub struct RangeLocks {
    gate: RwLock<()>,
    held: Mutex<HashMap<Timestamp, Registration>>,
    waits: LockWaits,
}

/// `now + lease`, or far ahead if that is not representable.
fn deadline(now: Instant, lease: Duration) -> Instant {
    now.checked_add(lease)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

impl RangeLocks {
    /// An empty table.
    pub fn new() -> RangeLocks {
        RangeLocks::default()
    }

    /// Registers `ranges` for transaction `owner` in leader term `term`, lapsing after
    /// `lease`, once every prewrite in progress has finished writing. Registering again
    /// replaces the owner's registration.
    pub fn lock(&self, owner: Timestamp, ranges: &[KeyRange], term: u64, lease: Duration) {
        self.lock_at(owner, ranges, term, lease, Instant::now());
    }

    fn lock_at(
        &self,
        owner: Timestamp,
        ranges: &[KeyRange],
        term: u64,
        lease: Duration,
        now: Instant,
    ) {
        let _exclusive = self.gate.write();
        let lapsed = {
            let mut held = self.held.lock();
            held.insert(
                owner,
                Registration {
                    ranges: ranges.to_vec(),
                    term,
                    expires: deadline(now, lease),
                },
            );
            take_lapsed(&mut held, now)
        };
        self.wake(&lapsed);
    }

    /// Releases `owner`'s range locks (if any) and wakes the prewrites waiting for them.
    pub fn unlock(&self, owner: Timestamp) {
        // Removed first, woken second: a waiter that enqueued and then still saw the lock
        // held is woken (see `wait_for_release`).
        let removed = self.held.lock().remove(&owner).is_some();
        if removed {
            self.wake(&[owner]);
        }
    }

    /// Whether `owner`'s registration exists, was made in `term`, and has not lapsed.
    pub fn holds(&self, owner: Timestamp, term: u64) -> bool {
        self.holds_at(owner, term, Instant::now())
    }

    fn holds_at(&self, owner: Timestamp, term: u64, now: Instant) -> bool {
        let (holds, lapsed) = {
            let mut held = self.held.lock();
            let lapsed = take_lapsed(&mut held, now);
            (held.get(&owner).is_some_and(|r| r.term == term), lapsed)
        };
        self.wake(&lapsed);
        holds
    }

    /// A place among the waiters for `owner`'s range locks to be released, and when they
    /// lapse at the latest; `None` if they already are released (retry at once).
    pub fn wait_for_release(&self, owner: Timestamp) -> Option<(Waiter, Instant)> {
        // Enqueued before the check: a release after the check finds the waiter.
        let waiter = self.waits.enqueue(&owner.to_be_bytes());
        let now = Instant::now();
        let (expires, lapsed) = {
            let mut held = self.held.lock();
            let lapsed = take_lapsed(&mut held, now);
            (held.get(&owner).map(|r| r.expires), lapsed)
        };
        self.wake(&lapsed);
        expires.map(|e| (waiter, e))
    }

    /// Held by a prewrite from its range-lock check until its batch is written.
    pub fn enter_prewrite(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read()
    }

    /// [`enter_prewrite`](Self::enter_prewrite) if no registration holds the gate or waits
    /// for it; `None` otherwise (the asynchronous write path never waits for it).
    pub fn try_enter_prewrite(&self) -> Option<RwLockReadGuard<'_, ()>> {
        self.gate.try_read()
    }

    /// A transaction other than `writer` whose range lock covers `key`.
    pub fn conflicting(&self, key: &[u8], writer: Timestamp) -> Option<Timestamp> {
        self.conflicting_at(key, writer, Instant::now())
    }

    fn conflicting_at(&self, key: &[u8], writer: Timestamp, now: Instant) -> Option<Timestamp> {
        let (owner, lapsed) = {
            let mut held = self.held.lock();
            let lapsed = take_lapsed(&mut held, now);
            let owner = held
                .iter()
                .find(|(owner, r)| {
                    **owner != writer && r.ranges.iter().any(|range| range_contains(range, key))
                })
                .map(|(owner, _)| *owner);
            (owner, lapsed)
        };
        self.wake(&lapsed);
        owner
    }

    /// How many transactions hold range locks (tests and metrics).
    pub fn len(&self) -> usize {
        self.held.lock().len()
    }

    /// Whether no transaction holds range locks.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn wake(&self, owners: &[Timestamp]) {
        for owner in owners {
            self.waits.release_all(&owner.to_be_bytes());
        }
    }
}

/// Removes the registrations lapsed at `now` and returns their owners (to be woken once
/// the table's lock is released).
fn take_lapsed(held: &mut HashMap<Timestamp, Registration>, now: Instant) -> Vec<Timestamp> {
    let lapsed: Vec<Timestamp> = held
        .iter()
        .filter(|(_, r)| r.expires <= now)
        .map(|(owner, _)| *owner)
        .collect();
    for owner in &lapsed {
        held.remove(owner);
    }
    lapsed
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(10);

    #[test]
    fn locks_cover_their_ranges_until_released() {
        let table = RangeLocks::new();
        table.lock(
            10,
            &[(b"b".to_vec(), Some(b"d".to_vec())), (b"x".to_vec(), None)],
            1,
            LEASE,
        );
        assert_eq!(table.conflicting(b"c", 20), Some(10));
        assert_eq!(table.conflicting(b"d", 20), None, "end is exclusive");
        assert_eq!(table.conflicting(b"zzz", 20), Some(10), "unbounded end");
        assert_eq!(
            table.conflicting(b"c", 10),
            None,
            "own locks never conflict"
        );
        table.unlock(10);
        assert_eq!(table.conflicting(b"c", 20), None);
        assert!(table.is_empty());
    }

    #[test]
    fn releasing_wakes_the_prewrites_waiting_for_it() {
        let table = RangeLocks::new();
        table.lock(10, &[(b"a".to_vec(), None)], 1, LEASE);
        let (w1, _) = table.wait_for_release(10).unwrap();
        let (w2, _) = table.wait_for_release(10).unwrap();
        assert!(!w1.is_woken() && !w2.is_woken());
        table.unlock(10);
        assert!(w1.is_woken() && w2.is_woken(), "every waiter is woken");
        assert!(
            table.wait_for_release(10).is_none(),
            "nothing to wait for once released"
        );
    }

    #[test]
    fn a_registration_holds_only_in_its_term() {
        let table = RangeLocks::new();
        table.lock(10, &[(b"a".to_vec(), None)], 3, LEASE);
        assert!(table.holds(10, 3));
        assert!(!table.holds(10, 4), "another term: the guard fails");
        assert!(!table.holds(11, 3), "another owner");
        table.unlock(10);
        assert!(!table.holds(10, 3));
    }

    #[test]
    fn a_lapsed_registration_is_gone_for_prewrites_guards_and_waiters() {
        let table = RangeLocks::new();
        let t0 = Instant::now();
        table.lock_at(10, &[(b"a".to_vec(), None)], 1, LEASE, t0);
        let (waiter, expires) = table.wait_for_release(10).unwrap();
        assert_eq!(
            expires,
            t0 + LEASE,
            "a waiter learns when to give up at the latest"
        );
        let just_before = t0 + LEASE - Duration::from_millis(1);
        assert!(table.holds_at(10, 1, just_before));
        assert_eq!(table.conflicting_at(b"a", 20, just_before), Some(10));
        assert!(!waiter.is_woken());
        let after = t0 + LEASE;
        assert_eq!(table.conflicting_at(b"a", 20, after), None);
        assert!(waiter.is_woken(), "the lapse wakes the waiters");
        assert!(!table.holds_at(10, 1, after));
        assert!(table.is_empty());
    }
}
