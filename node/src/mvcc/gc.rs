//! Garbage collection of old MVCC versions below a safe point.
//!
//! The *safe point* is a timestamp below which no reader will ever read again: it is at most
//! the start_ts of the oldest active transaction and at most `now - gc_life_time`
//! ([`compute_safe_point`]). It only moves forward ([`GcSafePoint`]); reads below it fail with
//! [`MvccError::ReadBelowSafePoint`] instead of
//! returning an answer that GC may already have changed.
//!
//! A read at `ts >= safe_point` of key `k` sees the newest Put/Delete record of `k` at or below
//! `ts`. Records above the safe point are never touched, so such a read needs, of everything
//! at or below the safe point, only `k`'s newest *data* record (Put or Delete) there, and,
//! if that is a Put, its value. Everything else at or below the safe point is garbage:
//!
//! ```text
//!   write family of k, newest first        safe point
//!   ───────────────────────────────────────────┼──────────────────────────────────────
//!   Put@40  Put@35 │ Rollback@28  Put@25  Lock@22  Delete@20  Put@12  Put@5
//!   untouched      │ dropped      KEPT    dropped  dropped    dropped dropped
//!                  │ (< sp)       newest data <= sp; everything older is dropped
//! ```
//!
//! ## Who drops what
//!
//! * **`write` family: the compaction filter** ([`MvccGcFilter`]). Within one compaction the
//!   filter sees the write records of a key newest first, but only those that happen to be
//!   in the compaction's inputs and that no engine snapshot can read. It therefore decides
//!   only from what it has *positively seen*: a record at or below the safe point is dropped
//!   if a newer data record of the same key at or below the safe point was already seen (and
//!   kept) in this compaction; a Rollback or Lock record strictly below the safe point is
//!   dropped on its own (no reader needs it, and the transactions it protects are older than
//!   the safe point, which may no longer prewrite, see below). The newest data record at or
//!   below the safe point is never dropped by the filter, whatever subset of the versions a
//!   compaction sees, because nothing newer at or below the safe point exists to justify it.
//!   (If the justifying record was itself removed since, it was removed legally, by the same
//!   argument one step up, or it was a Delete with nothing older, in which case the dropped
//!   record was already gone.)
//! * **A Delete that is the newest data record at or below the safe point** can go only with
//!   everything older, and the filter, deciding newest first, cannot know that nothing older
//!   exists in other files. It keeps the Delete and reports it; the sweep
//!   ([`sweep_batch`]) removes it once a read of the latest state shows that it is the key's
//!   oldest record. So a deleted key disappears entirely after a compaction and a sweep.
//! * **`default` family values: the sweep.** A value `(k, start_ts)` is garbage exactly when
//!   the Put record that references it is dropped (one transaction writes a key at most
//!   once, and a rolled-back transaction's value was deleted by the rollback). The filter
//!   has no engine access and, in the key order of a compaction, sees the `default` family
//!   *before* the `write` family, so it cannot decide there. Instead it reports the values of
//!   the Put records it drops, and the sweep deletes them through ordinary engine deletes
//!   (checking first that the value is not the one the newest data record at or below the
//!   safe point needs). The `default` family is then cleaned by its own compactions as plain
//!   tombstones.
//!
//! Reports accumulate in a shared [`GcBacklog`] until the owner of the engine
//! (`txn::Storage::gc_sweep`) drains it. A report lost (a crash between the compaction and
//! the sweep) leaks a value or leaves a Delete record: space, never correctness.
//!
//! ## Why no transaction below the safe point can interfere
//!
//! New commit records land above the safe point: commits take a fresh commit_ts above their
//! start_ts, and the safe point is never above the start_ts of a transaction that is active,
//! committing, or holding a lock (`TxnManager::gc_tick`). `Storage` also refuses a prewrite
//! whose start_ts is below the safe point, so a dropped Rollback record cannot let a stale
//! prewrite through.
//!
//! ## Across restarts
//!
//! A lock's transaction may be decided by its primary's commit record, so the safe point
//! must stay at or below every lock, also after a crash, when no coordinator is left to
//! speak for it. Two rules keep it there. The safe point is saved before it takes effect
//! ([`GcSafePoint::advance_durably`], through a [`SafePointStore`]), so a restart knows how
//! far compactions may have collected. And a restart starts from that saved value (in the
//! server, the value the shard's state machine applied), instead of guessing from the
//! clock; the locks a crash left behind are then resolved (`txn::resolver`) before GC passes
//! them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::lsm::WriteBatch;
use crate::lsm::{ColumnFamily, CompactionFilter, CompactionFilterState, FilterDecision};
use crate::tso::{compose, physical};

use super::key::{decode_versioned_key, versioned_key, versioned_key_prefix};
use super::reader::MvccReader;
use super::record::{Write, WriteKind};
use super::{MvccError, Result, Timestamp};

/// Where the GC safe point is kept durably, so that a restart resumes from the safe point
/// compactions may already have collected below instead of guessing one.
///
/// On a single node this is the engine's `raft-state` family (`txn::NodeMeta`); once the
/// safe point is cluster-wide, an implementation proposes it through the Raft group that
/// serves it. Nothing else in GC changes.
pub trait SafePointStore: Send + Sync + std::fmt::Debug {
    /// The last safe point saved, if any.
    fn load(&self) -> Result<Option<Timestamp>>;
    /// Makes `safe_point` durable; returns only once it is.
    fn save(&self, safe_point: Timestamp) -> Result<()>;
}

/// The GC safe point, shared by the compaction filter, the readers and whoever advances it.
/// It never moves backwards. With a [`SafePointStore`], [`GcSafePoint::advance_durably`]
/// saves a new safe point before any compaction or reader can see it.
#[derive(Debug, Clone, Default)]
pub struct GcSafePoint {
    ts: Arc<AtomicU64>,
    store: Option<Arc<dyn SafePointStore>>,
    /// Serialises save-then-publish, so the saved value never falls behind the visible one.
    saving: Arc<Mutex<()>>,
}

impl GcSafePoint {
    /// A safe point starting at `ts`, kept in memory only.
    pub fn new(ts: Timestamp) -> GcSafePoint {
        GcSafePoint {
            ts: Arc::new(AtomicU64::new(ts)),
            ..GcSafePoint::default()
        }
    }

    /// The same safe point (shared with `self` and its clones), whose
    /// [`advance_durably`](GcSafePoint::advance_durably) saves to `store` first. A server
    /// opens its engine with a store-less safe point at 0 (the compaction filter needs it
    /// before the store, which lives in the engine, can be read), then attaches the store.
    pub fn with_store(&self, store: Arc<dyn SafePointStore>) -> GcSafePoint {
        GcSafePoint {
            ts: Arc::clone(&self.ts),
            store: Some(store),
            saving: Arc::clone(&self.saving),
        }
    }

    /// The current safe point.
    pub fn get(&self) -> Timestamp {
        self.ts.load(Ordering::Acquire)
    }

    /// Moves the safe point up to `ts` (never down) in memory only; returns the safe point
    /// after the call. Servers use [`GcSafePoint::advance_durably`].
    pub fn advance(&self, ts: Timestamp) -> Timestamp {
        self.ts.fetch_max(ts, Ordering::AcqRel).max(ts)
    }

    /// Moves the safe point up to `ts` (never down), saving it to the store (if any) before
    /// it becomes visible: a compaction never collects below a safe point that a crash could
    /// forget. Returns the safe point after the call; on a failed save it is unchanged.
    pub fn advance_durably(&self, ts: Timestamp) -> Result<Timestamp> {
        let _saving = self.saving.lock();
        let current = self.get();
        if ts <= current {
            return Ok(current);
        }
        if let Some(store) = &self.store {
            store.save(ts)?;
        }
        Ok(self.advance(ts))
    }

    /// `ReadBelowSafePoint` if `ts` is below the safe point.
    ///
    /// A reader checks *after* taking its engine snapshot: GC that ran before the snapshot
    /// used a safe point no higher than the one checked, and GC after it cannot change what
    /// the snapshot sees.
    pub fn check(&self, ts: Timestamp) -> Result<()> {
        let safe_point = self.get();
        if ts < safe_point {
            return Err(MvccError::ReadBelowSafePoint { ts, safe_point });
        }
        Ok(())
    }
}

/// The safe point for the given oldest active transaction (if any) at time `now`: the oldest
/// active start_ts, and never newer than `now - gc_life_time` (physical time, logical 0).
pub fn compute_safe_point(
    oldest_active_start_ts: Option<Timestamp>,
    now: Timestamp,
    gc_life_time: Duration,
) -> Timestamp {
    let life_ms = u64::try_from(gc_life_time.as_millis()).unwrap_or(u64::MAX);
    let by_time = compose(physical(now).saturating_sub(life_ms), 0);
    oldest_active_start_ts.map_or(by_time, |oldest| oldest.min(by_time))
}

/// Work the compaction filter leaves for the sweep (keys are user keys).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcWork {
    /// `default`-family values `(key, start_ts)` whose Put record was dropped.
    pub values: Vec<(Vec<u8>, Timestamp)>,
    /// Delete records `(key, commit_ts)` that were the newest data record at or below the
    /// safe point in some compaction: removable once nothing older is left.
    pub deletes: Vec<(Vec<u8>, Timestamp)>,
}

impl GcWork {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && self.deletes.is_empty()
    }

    fn append(&mut self, other: &mut GcWork) {
        self.values.append(&mut other.values);
        self.deletes.append(&mut other.deletes);
    }
}

/// Work reported by compactions and not yet swept, shared between the filter and the sweep.
#[derive(Debug, Clone, Default)]
pub struct GcBacklog(Arc<Mutex<GcWork>>);

impl GcBacklog {
    /// Takes everything reported so far, sorted and without duplicates (each level a
    /// compaction passes through may report the same Delete record again).
    pub fn take(&self) -> GcWork {
        let mut work = std::mem::take(&mut *self.0.lock());
        for list in [&mut work.values, &mut work.deletes] {
            list.sort_unstable();
            list.dedup();
        }
        work
    }

    /// Puts work back (a sweep that failed part way).
    pub fn restore(&self, mut work: GcWork) {
        self.0.lock().append(&mut work);
    }

    fn push(&self, work: &mut GcWork) {
        if !work.is_empty() {
            self.0.lock().append(work);
        }
    }
}

/// The MVCC garbage-collecting compaction filter (see the module documentation).
#[derive(Debug, Clone)]
pub struct MvccGcFilter {
    safe_point: GcSafePoint,
    backlog: GcBacklog,
}

impl MvccGcFilter {
    /// A filter collecting below `safe_point`, with an empty backlog.
    pub fn new(safe_point: GcSafePoint) -> MvccGcFilter {
        MvccGcFilter {
            safe_point,
            backlog: GcBacklog::default(),
        }
    }

    /// Where compactions report work for the sweep.
    pub fn backlog(&self) -> &GcBacklog {
        &self.backlog
    }
}

impl CompactionFilter for MvccGcFilter {
    /// Unused: every compaction gets a [`VersionGc`] from `start`.
    fn filter(&self, _: ColumnFamily, _: &[u8], _: &[u8]) -> FilterDecision {
        FilterDecision::Keep
    }

    fn start(&self) -> Option<Box<dyn CompactionFilterState>> {
        // One safe point per compaction, read once, so its decisions are consistent.
        Some(Box::new(VersionGc::new(
            self.safe_point.get(),
            Some(self.backlog.clone()),
        )))
    }
}

/// The decisions of one compaction: a walk over the `write` family's versions, newest first
/// per key. Reports its work to the backlog when dropped.
#[derive(Debug)]
pub struct VersionGc {
    safe_point: Timestamp,
    /// The encoded user key being walked.
    key: Vec<u8>,
    /// A data record of `key` at or below the safe point was seen and kept.
    seen_data: bool,
    work: GcWork,
    backlog: Option<GcBacklog>,
}

impl VersionGc {
    /// A walk collecting below `safe_point`, reporting to `backlog` (if any) when dropped.
    pub fn new(safe_point: Timestamp, backlog: Option<GcBacklog>) -> VersionGc {
        VersionGc {
            safe_point,
            key: Vec::new(),
            seen_data: false,
            work: GcWork::default(),
            backlog,
        }
    }

    /// The work found so far (not yet reported).
    pub fn work(&self) -> &GcWork {
        &self.work
    }

    /// Decides for the next `write`-family entry `(versioned key, record)`. Anything that
    /// does not decode is kept: GC never drops what it does not understand.
    pub fn decide_write(&mut self, versioned: &[u8], value: &[u8]) -> FilterDecision {
        let Some((user_key, commit_ts)) = decode_versioned_key(versioned) else {
            return FilterDecision::Keep;
        };
        let prefix = versioned_key_prefix(versioned);
        if prefix != self.key.as_slice() {
            self.key.clear();
            self.key.extend_from_slice(prefix);
            self.seen_data = false;
        }
        if commit_ts > self.safe_point {
            return FilterDecision::Keep;
        }
        let Some(write) = Write::decode(value) else {
            return FilterDecision::Keep;
        };
        if self.seen_data {
            if write.kind == WriteKind::Put && write.short_value.is_none() {
                self.work.values.push((user_key, write.start_ts));
            }
            return FilterDecision::Remove;
        }
        match write.kind {
            WriteKind::Put => {
                self.seen_data = true;
                FilterDecision::Keep
            }
            WriteKind::Delete => {
                self.seen_data = true;
                self.work.deletes.push((user_key, commit_ts));
                FilterDecision::Keep
            }
            WriteKind::Lock | WriteKind::Rollback if commit_ts < self.safe_point => {
                FilterDecision::Remove
            }
            WriteKind::Lock | WriteKind::Rollback => FilterDecision::Keep,
        }
    }
}

impl CompactionFilterState for VersionGc {
    fn filter(&mut self, cf: ColumnFamily, key: &[u8], value: &[u8]) -> FilterDecision {
        match cf {
            ColumnFamily::Write => self.decide_write(key, value),
            // Values are swept (module docs); locks are live state; raft state is not MVCC.
            ColumnFamily::Default | ColumnFamily::Lock | ColumnFamily::RaftState => {
                FilterDecision::Keep
            }
        }
    }
}

impl Drop for VersionGc {
    fn drop(&mut self) {
        if let Some(backlog) = &self.backlog {
            backlog.push(&mut self.work);
        }
    }
}

/// Counters of one sweep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// `default`-family values deleted.
    pub values_deleted: u64,
    /// Delete records removed (their key is now gone entirely).
    pub deletes_removed: u64,
    /// Reports skipped because the latest state still needs them.
    pub skipped: u64,
}

/// The engine deletes that carry out `work` below `safe_point`, checked against the latest
/// state read through `reader`. The caller holds the latches of the keys involved and
/// applies the batch.
pub fn sweep_batch(
    reader: &MvccReader<'_>,
    work: &GcWork,
    safe_point: Timestamp,
) -> Result<(WriteBatch, SweepStats)> {
    let mut batch = WriteBatch::new();
    let mut stats = SweepStats::default();
    for (key, start_ts) in &work.values {
        // Never the value a reader at the safe point needs (the filter never reports it;
        // this guards the invariant cheaply).
        let needed = matches!(
            reader.seek_data_write(key, safe_point)?,
            Some((_, w)) if w.kind == WriteKind::Put && w.start_ts == *start_ts
        );
        if needed {
            stats.skipped += 1;
        } else {
            batch.delete(ColumnFamily::Default, &versioned_key(key, *start_ts));
            stats.values_deleted += 1;
        }
    }
    for (key, commit_ts) in &work.deletes {
        let is_delete = matches!(
            reader.seek_write(key, *commit_ts)?,
            Some((ts, w)) if ts == *commit_ts && w.kind == WriteKind::Delete
        );
        let older = match commit_ts.checked_sub(1) {
            Some(below) => reader.seek_write(key, below)?.is_some(),
            None => false,
        };
        if is_delete && !older && *commit_ts <= safe_point {
            batch.delete(ColumnFamily::Write, &versioned_key(key, *commit_ts));
            stats.deletes_removed += 1;
        } else {
            stats.skipped += 1;
        }
    }
    Ok((batch, stats))
}

#[cfg(test)]
#[path = "gc_tests.rs"]
mod tests;
