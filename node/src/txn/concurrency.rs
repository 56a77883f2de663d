//! [`ConcurrencyManager`]: what a one-phase commit needs to choose its commit timestamp on
//! the shard leader without breaking a concurrent reader's snapshot (after TiKV's
//! concurrency manager).
//!
//! A two-phase commit takes its commit_ts from the oracle *after* its locks are durable, so
//! a reader at a higher timestamp either meets the lock or reads after the commit record
//! exists. A one-phase commit (1PC) writes its commit records without locks, with a
//! commit_ts chosen by the leader before the batch is applied. Two things keep readers
//! right:
//!
//! - **`max_ts`**: the largest timestamp any read served by this leader used, raised
//!   *before* the read takes its snapshot. A 1PC's commit_ts is at least
//!   `max(max_ts, start_ts) + 1`, so every read already served or under way is below it and
//!   cannot see a version appear below its timestamp later.
//! - **memory locks**: a 1PC registers its keys here before it reads `max_ts`, and removes
//!   them once its batch is applied. A reader raises `max_ts` and looks for memory locks in
//!   one critical section: either it comes first (the 1PC then sees its timestamp in
//!   `max_ts` and commits above it), or it sees the memory lock and waits until the batch is
//!   applied, then reads it. No reader can take its snapshot between the choice of commit_ts
//!   and the apply without being one of these two.
//!
//! `max_ts` lives in memory on the leader. A new leader starts it from a fresh oracle
//! timestamp fetched after it leads (see [`ConcurrencyManager::sync`]): every read a former
//! leader served used a timestamp issued before that (its ReadIndex, or its lease, ended
//! before this term's election), so the floor is above all of them. Until that is done in
//! the current term, 1PC is refused and the coordinator commits in two phases.
//!
//! **commit_ts and the oracle.** `Storage::one_pc` takes the commit timestamp from the
//! oracle with the memory locks held, and refuses 1PC if it is below
//! `max(max_ts, start_ts) + 1`: a later transaction then sees the commit (the oracle issues
//! larger timestamps afterwards), and no later start_ts equals it (decision D98 says why
//! `max_ts + 1` itself is not used). `max_ts + 1` alone serves this module's tests.
//!
//! A read timestamp far in the future (a client may name any `read_ts`) is not an oracle
//! timestamp: one whose physical part is more than [`FUTURE_READ_SLACK_MS`] ahead of this
//! node's clock does not raise `max_ts` (it would push later commits past what the oracle
//! issues). Such a read gets no snapshot guarantee, exactly as under two-phase commits,
//! whose commit timestamps may also land below it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::mvcc::{MvccError, Result, Timestamp};
use crate::tso::physical;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A read timestamp whose physical part is this far ahead of the local clock is not taken
/// for an oracle timestamp and does not raise `max_ts`.
pub const FUTURE_READ_SLACK_MS: u64 = 10 * 60 * 1000;

/// How long a read waits for a one-phase commit's batch to be applied before it gives up
/// with a retryable error.
pub const MEMORY_LOCK_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct State {
    max_ts: Timestamp,
    /// The leader term whose floor was taken (`None`: not yet in any).
    synced_term: Option<u64>,
    /// Keys of one-phase commits between their choice of commit_ts and their apply, with
    /// how many commits hold each (latches keep it at one, but nothing depends on that).
    locks: BTreeMap<Vec<u8>, usize>,
    /// Tests: reads ignore `max_ts` and memory locks (to show what goes wrong without).
    #[cfg(test)]
    disabled: bool,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct ConcurrencyManager {
    state: Mutex<State>,
    released: Condvar,
}

/// The memory locks of one one-phase commit and the commit_ts it chose; removed on drop.
#[derive(Debug)]
pub struct MemoryLocks<'a> {
    cm: &'a ConcurrencyManager,
    keys: Vec<Vec<u8>>,
    /// The commit timestamp chosen under the locks.
    pub commit_ts: Timestamp,
}

impl Drop for MemoryLocks<'_> {
    fn drop(&mut self) {
        let mut s = self.cm.state.lock();
        for k in &self.keys {
            if let Some(n) = s.locks.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    s.locks.remove(k);
                }
            }
        }
        drop(s);
        self.cm.released.notify_all();
    }
}

impl ConcurrencyManager {
    /// A manager with `max_ts` 0 and no term synced.
    pub fn new() -> Arc<ConcurrencyManager> {
        Arc::new(ConcurrencyManager::default())
    }

    /// The largest read timestamp recorded.
    pub fn max_ts(&self) -> Timestamp {
        self.state.lock().max_ts
    }

    /// The term whose floor is in `max_ts`, if any.
    pub fn synced_term(&self) -> Option<u64> {
        self.state.lock().synced_term
    }

    /// Records that this replica leads in `term` and that `floor`, an oracle timestamp
    /// fetched after it was seen leading in `term`, is above every read a former leader
    /// served: `max_ts` rises to it and 1PC is allowed in `term`.
    pub fn sync(&self, term: u64, floor: Timestamp) {
        let mut s = self.state.lock();
        s.max_ts = s.max_ts.max(floor);
        if s.synced_term.is_none_or(|t| t < term) {
            s.synced_term = Some(term);
        }
    }

    /// A read at `ts` of `[start, end)` (`end == None`: to the end; a point read passes
    /// `start ..= start` as `point`) is about to take its snapshot: raises `max_ts` to `ts`
    /// and waits, up to `deadline`, while a one-phase commit holds a memory lock in the
    /// range. Past the deadline: a retryable `Unavailable`.
    pub fn read(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        point: bool,
        ts: Timestamp,
        deadline: Instant,
    ) -> Result<()> {
        let mut s = self.state.lock();
        #[cfg(test)]
        if s.disabled {
            return Ok(());
        }
        if physical(ts) <= now_ms().saturating_add(FUTURE_READ_SLACK_MS) {
            s.max_ts = s.max_ts.max(ts);
        }
        loop {
            let held = if point {
                s.locks.contains_key(start)
            } else {
                let upper = match end {
                    Some(e) => std::ops::Bound::Excluded(e.to_vec()),
                    None => std::ops::Bound::Unbounded,
                };
                s.locks
                    .range((std::ops::Bound::Included(start.to_vec()), upper))
                    .next()
                    .is_some()
            };
            if !held {
                return Ok(());
            }
            if self.released.wait_until(&mut s, deadline).timed_out() {
                return Err(MvccError::Unavailable(
                    "a one-phase commit of a key read did not finish in time".into(),
                ));
            }
        }
    }

    /// [`read`](Self::read) of one key that never waits: raises `max_ts` to `ts` and says
    /// whether the read may take its snapshot now (`false`: a one-phase commit holds a
    /// memory lock on the key; the caller reads another way, waiting).
    pub fn try_read_point(&self, key: &[u8], ts: Timestamp) -> bool {
        let mut s = self.state.lock();
        #[cfg(test)]
        if s.disabled {
            return true;
        }
        if physical(ts) <= now_ms().saturating_add(FUTURE_READ_SLACK_MS) {
            s.max_ts = s.max_ts.max(ts);
        }
        !s.locks.contains_key(key)
    }

    /// Registers memory locks on `keys` for a one-phase commit of `start_ts` in leader
    /// `term` and chooses its commit timestamp, at least `min_commit_ts`. `None` if `term`
    /// is not synced (1PC must wait for the floor, or fall back to two phases).
    pub fn lock_for_one_pc(
        &self,
        keys: impl IntoIterator<Item = Vec<u8>>,
        term: u64,
        start_ts: Timestamp,
        min_commit_ts: Timestamp,
    ) -> Option<MemoryLocks<'_>> {
        let mut s = self.state.lock();
        if s.synced_term != Some(term) {
            return None;
        }
        let keys: Vec<Vec<u8>> = keys.into_iter().collect();
        for k in &keys {
            *s.locks.entry(k.clone()).or_insert(0) += 1;
        }
        #[cfg(test)]
        let max_ts = if s.disabled { 0 } else { s.max_ts };
        #[cfg(not(test))]
        let max_ts = s.max_ts;
        let commit_ts = max_ts.max(start_ts).saturating_add(1).max(min_commit_ts);
        Some(MemoryLocks {
            cm: self,
            keys,
            commit_ts,
        })
    }

    /// Tests: turn the rule off (reads neither raise `max_ts` nor wait; commits ignore it).
    #[cfg(test)]
    pub(crate) fn disable_for_tests(&self) {
        self.state.lock().disabled = true;
    }

    /// Tests: how many keys are memory-locked now.
    #[cfg(test)]
    pub(crate) fn locked_keys(&self) -> usize {
        self.state.lock().locks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_ts_is_above_reads_start_and_floor() {
        let cm = ConcurrencyManager::new();
        assert!(cm.lock_for_one_pc([b"k".to_vec()], 3, 10, 11).is_none());
        cm.sync(3, 100);
        let far = Instant::now() + Duration::from_secs(1);
        cm.read(b"a", None, true, 150, far).unwrap();
        let l = cm.lock_for_one_pc([b"k".to_vec()], 3, 10, 11).unwrap();
        assert_eq!(l.commit_ts, 151);
        drop(l);
        let l = cm.lock_for_one_pc([b"k".to_vec()], 3, 200, 201).unwrap();
        assert_eq!(l.commit_ts, 201);
        drop(l);
        assert!(
            cm.lock_for_one_pc([b"k".to_vec()], 4, 10, 11).is_none(),
            "a later term needs its own floor"
        );
    }

    #[test]
    fn reads_wait_for_memory_locks_in_their_range_only() {
        let cm = ConcurrencyManager::new();
        cm.sync(1, 1);
        let l = cm.lock_for_one_pc([b"m".to_vec()], 1, 10, 11).unwrap();
        let soon = Instant::now() + Duration::from_millis(30);
        cm.read(b"a", Some(b"m"), false, 20, soon).unwrap();
        cm.read(b"n", None, false, 20, soon).unwrap();
        cm.read(b"l", None, true, 20, soon).unwrap();
        assert!(matches!(
            cm.read(b"m", None, true, 20, soon),
            Err(MvccError::Unavailable(_))
        ));
        assert!(cm.read(b"a", None, false, 20, soon).is_err());
        drop(l);
        assert_eq!(cm.locked_keys(), 0);
        cm.read(b"m", None, true, 20, soon).unwrap();
    }

    #[test]
    fn a_read_far_above_max_ts_does_not_raise_it() {
        let cm = ConcurrencyManager::new();
        cm.sync(1, 1000);
        let far = Instant::now() + Duration::from_secs(1);
        cm.read(b"k", None, true, Timestamp::MAX, far).unwrap();
        assert_eq!(cm.max_ts(), 1000);
    }
}
