//! `Storage`: transactional commands over one engine, serialised per key by latches.
//!
//! Each write command takes the latches of its keys, reads the current state through an
//! [`MvccReader`], runs the per-key actions, and applies their combined batch with one
//! synced engine write: a command's effect is all or nothing, and is durable when the call
//! returns. Reads take an engine snapshot and no latches.
//!
//! Reads and prewrites below the GC safe point fail with `ReadBelowSafePoint`; reads check
//! it after taking their engine snapshot (see [`GcSafePoint::check`]). [`Storage::gc_sweep`]
//! carries out what the MVCC compaction filter left to do (see [`crate::mvcc::gc`]).
//!
//! A command whose batch removes locks wakes the transactions waiting for them
//! ([`LockWaits`]) once the batch is written.
//!
//! **Why latches are held across the fsync.** The engine makes a batch visible only after
//! its WAL record is synced (it applies the batch to the memtable and publishes its sequence
//! number after the sync), so nothing is ever read that a crash could take back. The next
//! command on a key must read the previous command's effect (two prewrites must not both
//! see "no lock"), so it may start only once that effect is visible, which is after the
//! fsync: the latch is held until then. Releasing it earlier would need the engine to show
//! a batch to latched commands before it is durable while hiding it from reads, and every
//! answer built on such a state to wait for its durability; see
//! `docs/architecture/transactions.md`. What never happens under a latch is waiting for
//! another transaction: lock waits sleep in [`LockWaits`] with no latch and no thread held.
//!
//! Where the batch goes is the [`ShardWriter`]'s business: in the server, a Raft proposal
//! that returns once applied on this replica (the leader), with reads behind a ReadIndex
//! barrier; in this layer's tests, a synced engine write. Either way the latches are held
//! until the batch is visible here, so the reasoning above holds with "applied" for
//! "synced"; nothing above this layer changes.
//!
//! The paths that run on the runtime and never wait, blind writes and latest reads, are in
//! `storage/runtime.rs`.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::lsm::Db;
use crate::mvcc::gc::{self, GcBacklog, GcSafePoint, SweepStats};
use crate::mvcc::{
    Coordinator, LockInfo, MvccError, MvccReader, MvccTxn, Result, ScanLimit, ScanPage, Timestamp,
};
use crate::tso::Tso;

use super::actions::{self, Mutation, PrewriteOptions, TxnStatus};
use super::concurrency::{ConcurrencyManager, MEMORY_LOCK_WAIT};
use super::latches::Latches;
use super::lock_wait::{LockWaits, Waiter};
use super::range_locks::{KeyRange, RangeLocks};
use super::shard_writer::{EngineWriter, ShardWriter, WriteTicket};

mod runtime;

use runtime::BlindCounters;
pub use runtime::{BlindWrite, BlindWriteCounts, LatestRead, LatestReadCounts, LatestReads};

/// Latch slots: enough that unrelated keys rarely share one.
const LATCH_SLOTS: usize = 2048;

/// Keys swept per latched batch.
const SWEEP_CHUNK: usize = 256;

/// Transactional commands over one engine.
#[derive(Debug)]
pub struct Storage {
    db: Db,
    latches: Latches,
    range_locks: RangeLocks,
    lock_waits: LockWaits,
    writer: Arc<dyn ShardWriter>,
    safe_point: GcSafePoint,
    /// This node's current run: locks of its earlier runs are expired at once.
    local_run: Option<Coordinator>,
    /// `max_ts` and the memory locks of one-phase commits (see [`super::concurrency`]).
    cm: Arc<ConcurrencyManager>,
    /// Where a new leader takes its `max_ts` floor from (the cluster's oracle).
    ts_source: OnceLock<Arc<dyn Tso>>,
    /// What blind writes came to.
    blind_counts: BlindCounters,
    /// Tests: called by a one-phase commit between its choice of commit_ts and its write.
    #[cfg(test)]
    one_pc_hook: parking_lot::Mutex<Option<OnePcHook>>,
}

/// Tests: what [`Storage::set_one_pc_hook`] installs (called with the chosen commit_ts).
#[cfg(test)]
pub(crate) struct OnePcHook(pub Arc<dyn Fn(Timestamp) + Send + Sync>);

#[cfg(test)]
impl std::fmt::Debug for OnePcHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnePcHook")
    }
}

impl Storage {
    /// Commands over `db`; every command's batch is synced before the command returns.
    /// The safe point is private and stays at 0 unless advanced through
    /// [`safe_point`](Storage::safe_point).
    pub fn new(db: Db) -> Storage {
        Storage::with_safe_point(db, GcSafePoint::default())
    }

    /// Commands over `db` that refuse reads below `safe_point` (shared with the engine's
    /// [`MvccGcFilter`](crate::mvcc::MvccGcFilter)), writing straight into `db`.
    pub fn with_safe_point(db: Db, safe_point: GcSafePoint) -> Storage {
        let writer = Arc::new(EngineWriter::new(db.clone()));
        Storage::with_writer(db, safe_point, writer)
    }

    /// Commands over the replica `db` whose batches go through `writer` (the server's:
    /// through the shard's Raft group) and whose reads first pass its read barrier.
    pub fn with_writer(db: Db, safe_point: GcSafePoint, writer: Arc<dyn ShardWriter>) -> Storage {
        Storage {
            db,
            latches: Latches::new(LATCH_SLOTS),
            range_locks: RangeLocks::new(),
            lock_waits: LockWaits::new(),
            writer,
            safe_point,
            local_run: None,
            cm: ConcurrencyManager::new(),
            ts_source: OnceLock::new(),
            blind_counts: BlindCounters::default(),
            #[cfg(test)]
            one_pc_hook: parking_lot::Mutex::new(None),
        }
    }

    /// Gives a leader the oracle it takes its `max_ts` floor from in each new term (see
    /// [`super::concurrency`]); without one a replica over a Raft writer refuses one-phase
    /// commits. Set once; later calls are ignored.
    pub fn set_ts_source(&self, tso: Arc<dyn Tso>) {
        let _ = self.ts_source.set(tso);
    }

    /// `max_ts` and the memory locks of one-phase commits.
    pub fn concurrency(&self) -> &Arc<ConcurrencyManager> {
        &self.cm
    }

    /// Tests: `hook` runs in every one-phase commit after it chose its commit_ts, before its
    /// batch is written.
    #[cfg(test)]
    pub(crate) fn set_one_pc_hook(&self, hook: Arc<dyn Fn(Timestamp) + Send + Sync>) {
        *self.one_pc_hook.lock() = Some(OnePcHook(hook));
    }

    /// Where command batches go.
    pub fn writer(&self) -> &Arc<dyn ShardWriter> {
        &self.writer
    }

    /// The same storage, knowing that it runs in `run`: a lock whose coordinator is an
    /// earlier run of the same node is treated as expired (its coordinator is gone).
    pub fn with_local_run(mut self, run: Coordinator) -> Storage {
        self.local_run = Some(run);
        self
    }

    /// This node's current run, if known.
    pub fn local_run(&self) -> Option<&Coordinator> {
        self.local_run.as_ref()
    }

    /// The engine.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The GC safe point reads are checked against.
    pub fn safe_point(&self) -> &GcSafePoint {
        &self.safe_point
    }

    /// The queues of transactions waiting for locks to be released.
    pub fn lock_waits(&self) -> &LockWaits {
        &self.lock_waits
    }

    /// A place among the waiters for the range locks of `owner` (met by a prewrite as
    /// `RangeLocked`) and when they lapse at the latest, or `None` if they are already
    /// released.
    pub fn wait_for_range_locks(&self, owner: Timestamp) -> Option<(Waiter, Instant)> {
        self.range_locks.wait_for_release(owner)
    }

    /// The range locks of committing transactions (see [`super::range_locks`]).
    pub fn range_locks(&self) -> &RangeLocks {
        &self.range_locks
    }

    /// The start_ts of the transaction whose lock is on `key`, if any (no read barrier:
    /// the caller only uses it to decide whether a wait on this replica is still useful).
    pub fn lock_holder(&self, key: &[u8]) -> Result<Option<Timestamp>> {
        Ok(MvccReader::new(&self.db, None)
            .load_lock(key)?
            .map(|lock| lock.start_ts))
    }

    fn write_command<'k, T>(
        &self,
        keys: impl IntoIterator<Item = &'k [u8]>,
        start_ts: Timestamp,
        body: impl FnOnce(&mut MvccTxn, &MvccReader<'_>) -> Result<T>,
    ) -> Result<T> {
        self.write_command_in_term(keys, start_ts, |txn, reader, _| body(txn, reader))
    }

    /// [`write_command`](Self::write_command) whose body also sees the ticket (the leader
    /// term) it is computed under.
    fn write_command_in_term<'k, T>(
        &self,
        keys: impl IntoIterator<Item = &'k [u8]>,
        start_ts: Timestamp,
        body: impl FnOnce(&mut MvccTxn, &MvccReader<'_>, WriteTicket) -> Result<T>,
    ) -> Result<T> {
        let (out, unlocked) = {
            let _latches = self.latches.acquire(keys);
            // Under the latches, from a state that includes every earlier command on these
            // keys (each one's latches were held until it was applied here).
            let ticket = self.writer.begin_write()?;
            let reader = MvccReader::new(&self.db, None);
            let mut txn = MvccTxn::new(start_ts);
            let out = body(&mut txn, &reader, ticket)?;
            if txn.is_empty() {
                return Ok(out);
            }
            let (batch, unlocked) = txn.into_parts();
            self.writer.write(ticket, batch)?;
            (out, unlocked)
        };
        // Written and visible, latches released: the waiters of the removed locks may retry.
        for key in &unlocked {
            self.lock_waits.release(key);
        }
        Ok(out)
    }

    /// The value of `key` at `ts` (locks of transactions in `bypass` are ignored).
    pub fn get(&self, key: &[u8], ts: Timestamp, bypass: &[Timestamp]) -> Result<Option<Vec<u8>>> {
        self.writer.read_barrier()?;
        self.cm
            .read(key, None, true, ts, Instant::now() + MEMORY_LOCK_WAIT)?;
        let snap = self.db.snapshot();
        self.safe_point.check(ts)?;
        MvccReader::new(&self.db, Some(snap.seq())).get(key, ts, bypass)
    }

    /// Up to `limit` pairs of `[start, end)` at `ts`.
    pub fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        ts: Timestamp,
        reverse: bool,
        bypass: &[Timestamp],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.writer.read_barrier()?;
        self.cm
            .read(start, end, false, ts, Instant::now() + MEMORY_LOCK_WAIT)?;
        let snap = self.db.snapshot();
        self.safe_point.check(ts)?;
        MvccReader::new(&self.db, Some(snap.seq())).scan(start, end, limit, ts, reverse, bypass)
    }

    /// One page of [`Storage::scan`] under a pair and byte limit ([`MvccReader::scan_page`]).
    pub fn scan_page(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: ScanLimit,
        ts: Timestamp,
        reverse: bool,
        bypass: &[Timestamp],
    ) -> Result<ScanPage> {
        self.writer.read_barrier()?;
        self.cm
            .read(start, end, false, ts, Instant::now() + MEMORY_LOCK_WAIT)?;
        let snap = self.db.snapshot();
        self.safe_point.check(ts)?;
        MvccReader::new(&self.db, Some(snap.seq()))
            .scan_page(start, end, limit, ts, reverse, bypass)
    }

    /// Prewrites all `mutations` of transaction `start_ts`, or none of them: the first
    /// failing key's error is returned and nothing is written. A key that changes data and
    /// lies in a range locked by a committing SERIALIZABLE transaction is `RangeLocked`.
    pub fn prewrite(
        &self,
        mutations: &[Mutation],
        options: &PrewriteOptions,
        start_ts: Timestamp,
    ) -> Result<()> {
        let _gate = self.range_locks.enter_prewrite();
        for m in mutations {
            if matches!(m, Mutation::Lock(_)) {
                continue;
            }
            if let Some(owner) = self.range_locks.conflicting(m.key(), start_ts) {
                return Err(MvccError::RangeLocked {
                    key: m.key().to_vec(),
                    owner,
                });
            }
        }
        self.write_command(
            mutations.iter().map(Mutation::key),
            start_ts,
            |txn, reader| {
                // A transaction below the safe point may have lost the rollback records
                // and conflicting versions its prewrite must see.
                self.safe_point.check(start_ts)?;
                mutations
                    .iter()
                    .try_for_each(|m| actions::prewrite(txn, reader, m, options))
            },
        )
    }

    /// Commits all `mutations` of transaction `start_ts` in one phase (the first key is the
    /// primary) and returns the commit timestamp; nothing is written on error. The checks
    /// are a prewrite's (`KeyIsLocked`, `WriteConflict`, `AlreadyRolledBack`, `RangeLocked`
    /// for a data key in a range locked by a committing SERIALIZABLE transaction); with
    /// `range_lock_term`, the transaction's own range locks guard it as they guard a
    /// primary's commit ([`Storage::commit_guarded`]: `RangeLocksLost`). The commit
    /// timestamp is `max(max_ts, start_ts) + 1`, chosen under memory locks on the keys (see
    /// [`super::concurrency`]). A transaction that already committed (a retried request)
    /// gets its commit timestamp back. `OnePcRefused` (nothing written) when this leader has
    /// no `max_ts` floor for its term and cannot take one.
    pub fn one_pc(
        &self,
        mutations: &[Mutation],
        start_ts: Timestamp,
        range_lock_term: Option<u64>,
    ) -> Result<Timestamp> {
        let Some(primary) = mutations.first() else {
            return Err(MvccError::Engine(crate::lsm::Error::InvalidArgument(
                "a one-phase commit with no keys".into(),
            )));
        };
        self.sync_max_ts()?;
        let _gate = self.range_locks.enter_prewrite();
        for m in mutations {
            if matches!(m, Mutation::Lock(_)) {
                continue;
            }
            if let Some(owner) = self.range_locks.conflicting(m.key(), start_ts) {
                return Err(MvccError::RangeLocked {
                    key: m.key().to_vec(),
                    owner,
                });
            }
        }
        let _latches = self.latches.acquire(mutations.iter().map(Mutation::key));
        let ticket = self.writer.begin_write()?;
        self.safe_point.check(start_ts)?;
        let reader = MvccReader::new(&self.db, None);
        // A retried request: the batch was all or nothing, so the primary tells.
        if let Some(commit_ts) = actions::one_pc_check(&reader, primary, start_ts)? {
            return Ok(commit_ts);
        }
        if let Some(term) = range_lock_term {
            if ticket.term != term || !self.range_locks.holds(start_ts, term) {
                return Err(MvccError::RangeLocksLost { owner: start_ts });
            }
        }
        for m in &mutations[1..] {
            if let Some(commit_ts) = actions::one_pc_check(&reader, m, start_ts)? {
                // Only our own batch writes our records, and it wrote the primary too.
                return Err(MvccError::Corrupt {
                    key: m.key().to_vec(),
                    reason: format!(
                        "transaction {start_ts} committed this key at {commit_ts} but not its primary"
                    ),
                });
            }
        }
        let Some(memory) = self.cm.lock_for_one_pc(
            mutations.iter().map(|m| m.key().to_vec()),
            ticket.term,
            start_ts,
            start_ts + 1,
        ) else {
            return Err(MvccError::OnePcRefused(
                "the leader changed while the commit was being prepared".into(),
            ));
        };
        // The commit timestamp is an oracle timestamp fetched now, with the memory locks in
        // place: above every read served so far (each read's timestamp was issued before it
        // raised max_ts), and never issued again, so no later transaction's start_ts equals
        // it (an equal start_ts would make its rollback record overwrite this commit record,
        // both living at `(key, ts)`). `max_ts + 1` alone is only used by this module's
        // tests, which take the floor by hand and exercise the max_ts rule by itself. It
        // needs no leadership confirmation of its own: the write commits in the ticket's
        // term or not at all (D138, `tso::replicated`).
        let commit_ts = match self.ts_source.get() {
            Some(tso) => {
                let now = tso.get_timestamp_in_term(ticket.term).map_err(|e| {
                    MvccError::OnePcRefused(format!("taking the commit timestamp: {e}"))
                })?;
                if now < memory.commit_ts {
                    // A read at a timestamp the oracle has not issued yet: `now` would fall
                    // below it, and `max_ts + 1` could be issued later.
                    return Err(MvccError::OnePcRefused(
                        "a read above the oracle's timestamps was served".into(),
                    ));
                }
                now
            }
            None => memory.commit_ts,
        };
        #[cfg(test)]
        {
            let hook = self.one_pc_hook.lock().as_ref().map(|h| Arc::clone(&h.0));
            if let Some(hook) = hook {
                hook(commit_ts);
            }
        }
        let mut txn = MvccTxn::new(start_ts);
        for m in mutations {
            actions::one_pc_write(&mut txn, m, commit_ts);
        }
        let (batch, _) = txn.into_parts();
        self.writer.write(ticket, batch)?;
        // Applied: readers waiting on the memory locks (dropped now) will see the records.
        drop(memory);
        Ok(commit_ts)
    }

    /// Makes sure `max_ts` has its floor for the term this replica leads in: an oracle
    /// timestamp fetched after it was seen leading in that term (see
    /// [`super::concurrency`]).
    fn sync_max_ts(&self) -> Result<()> {
        let ticket = self.writer.begin_write()?;
        if self.cm.synced_term() == Some(ticket.term) {
            return Ok(());
        }
        let Some(tso) = self.ts_source.get() else {
            return Err(MvccError::OnePcRefused(
                "no oracle to take this leader's max_ts floor from".into(),
            ));
        };
        let floor = tso.get_timestamp().map_err(|e| {
            MvccError::OnePcRefused(format!("taking this leader's max_ts floor: {e}"))
        })?;
        self.cm.sync(ticket.term, floor);
        tracing::debug!(term = ticket.term, floor, "max_ts floor taken");
        Ok(())
    }

    /// Locks `ranges` for committing transaction `owner` for at most `lease` (see
    /// [`super::range_locks`]); returns the leader term they are registered in, which the
    /// transaction's guarded primary commit ([`Storage::commit_guarded`]) names. `NotLeader`
    /// when this replica does not lead. Registering again replaces the registration.
    pub fn lock_ranges(
        &self,
        owner: Timestamp,
        ranges: &[KeyRange],
        lease: Duration,
    ) -> Result<u64> {
        let ticket = self.writer.begin_write()?;
        self.range_locks.lock(owner, ranges, ticket.term, lease);
        Ok(ticket.term)
    }

    /// Releases the range locks of `owner`, if it holds any.
    pub fn unlock_ranges(&self, owner: Timestamp) {
        self.range_locks.unlock(owner);
    }

    /// Checks that nothing changed in `ranges` since `start_ts`: a commit record of another
    /// transaction newer than `start_ts` is a `WriteConflict`; another transaction's lock is
    /// `KeyIsLocked` (resolve it and check again).
    pub fn check_ranges(&self, ranges: &[KeyRange], start_ts: Timestamp) -> Result<()> {
        self.writer.read_barrier()?;
        let deadline = Instant::now() + MEMORY_LOCK_WAIT;
        for (start, end) in ranges {
            self.cm
                .read(start, end.as_deref(), false, start_ts, deadline)?;
        }
        let snap = self.db.snapshot();
        let reader = MvccReader::new(&self.db, Some(snap.seq()));
        for (start, end) in ranges {
            if let Some((key, write, commit_ts)) =
                reader.first_change_since(start, end.as_deref(), start_ts)?
            {
                return Err(MvccError::WriteConflict {
                    key,
                    start_ts,
                    conflict_start_ts: write.start_ts,
                    conflict_commit_ts: commit_ts,
                });
            }
            if let Some((key, lock)) = reader.first_foreign_lock(start, end.as_deref(), start_ts)? {
                return Err(MvccError::KeyIsLocked(LockInfo::new(&key, &lock)));
            }
        }
        Ok(())
    }

    /// Commits `keys` of transaction `start_ts` at `commit_ts`.
    pub fn commit(
        &self,
        keys: &[Vec<u8>],
        start_ts: Timestamp,
        commit_ts: Timestamp,
    ) -> Result<()> {
        self.write_command(keys.iter().map(Vec::as_slice), start_ts, |txn, reader| {
            keys.iter()
                .try_for_each(|k| actions::commit(txn, reader, k, commit_ts))
        })
    }

    /// Commits `keys` of transaction `start_ts` at `commit_ts` as [`Storage::commit`] does;
    /// with `range_lock_term`, only if this replica still holds the transaction's range
    /// locks, registered in that term, and the command is computed in that term too:
    /// otherwise `RangeLocksLost` and nothing is written. The guard applies while the first
    /// key (the primary) still carries the transaction's lock; a primary already committed
    /// (a retried commit) answers as [`Storage::commit`] does, since the attempt that
    /// committed it passed the guard.
    pub fn commit_guarded(
        &self,
        keys: &[Vec<u8>],
        start_ts: Timestamp,
        commit_ts: Timestamp,
        range_lock_term: Option<u64>,
    ) -> Result<()> {
        let Some(term) = range_lock_term else {
            return self.commit(keys, start_ts, commit_ts);
        };
        self.write_command_in_term(
            keys.iter().map(Vec::as_slice),
            start_ts,
            |txn, reader, ticket| {
                if let Some(primary) = keys.first() {
                    let locked = reader
                        .load_lock(primary)?
                        .is_some_and(|lock| lock.start_ts == start_ts);
                    if locked && (ticket.term != term || !self.range_locks.holds(start_ts, term)) {
                        return Err(MvccError::RangeLocksLost { owner: start_ts });
                    }
                }
                keys.iter()
                    .try_for_each(|k| actions::commit(txn, reader, k, commit_ts))
            },
        )
    }

    /// Rolls back `keys` of transaction `start_ts`.
    pub fn rollback(&self, keys: &[Vec<u8>], start_ts: Timestamp) -> Result<()> {
        self.write_command(keys.iter().map(Vec::as_slice), start_ts, |txn, reader| {
            keys.iter()
                .try_for_each(|k| actions::rollback(txn, reader, k))
        })
    }

    /// The status of transaction `start_ts`, decided at its `primary` (see
    /// [`actions::check_txn_status`]).
    pub fn check_txn_status(
        &self,
        primary: &[u8],
        start_ts: Timestamp,
        current_ts: Timestamp,
        push_to: Option<Timestamp>,
    ) -> Result<TxnStatus> {
        self.write_command([primary], start_ts, |txn, reader| {
            actions::check_txn_status(
                txn,
                reader,
                primary,
                current_ts,
                push_to,
                self.local_run.as_ref(),
            )
        })
    }

    /// Extends the primary lock's TTL; `None` if the transaction no longer holds it.
    pub fn heartbeat(
        &self,
        primary: &[u8],
        start_ts: Timestamp,
        ttl_ms: u64,
    ) -> Result<Option<u64>> {
        self.write_command([primary], start_ts, |txn, reader| {
            actions::heartbeat(txn, reader, primary, ttl_ms)
        })
    }

    /// Commits (`Some(commit_ts)`) or rolls back `keys` of transaction `start_ts`.
    pub fn resolve_lock(
        &self,
        keys: &[Vec<u8>],
        start_ts: Timestamp,
        commit_ts: Option<Timestamp>,
    ) -> Result<()> {
        self.write_command(keys.iter().map(Vec::as_slice), start_ts, |txn, reader| {
            keys.iter()
                .try_for_each(|k| actions::resolve_lock(txn, reader, k, commit_ts))
        })
    }

    /// The start_ts of the oldest lock in the `lock` family, if any. GC must not pass it:
    /// resolving the lock may need its primary's commit record.
    pub fn oldest_lock_ts(&self) -> Result<Option<Timestamp>> {
        self.writer.read_barrier()?;
        let mut oldest: Option<Timestamp> = None;
        MvccReader::new(&self.db, None).scan_locks(None, None, |_, lock| {
            oldest = Some(oldest.map_or(lock.start_ts, |o| o.min(lock.start_ts)));
            true
        })?;
        Ok(oldest)
    }

    /// Carries out the work the MVCC compaction filter reported to `backlog`: deletes the
    /// values of dropped versions and Delete records with nothing older (see
    /// [`gc::sweep_batch`]). Work not done because of an error is put back.
    pub fn gc_sweep(&self, backlog: &GcBacklog) -> Result<SweepStats> {
        let mut work = backlog.take();
        let safe_point = self.safe_point.get();
        let mut total = SweepStats::default();
        while !work.is_empty() {
            let chunk = gc::GcWork {
                values: drain_front(&mut work.values, SWEEP_CHUNK),
                deletes: drain_front(&mut work.deletes, SWEEP_CHUNK),
            };
            let keys = chunk
                .values
                .iter()
                .chain(&chunk.deletes)
                .map(|(k, _)| k.as_slice());
            let result = (|| {
                let _latches = self.latches.acquire(keys);
                let ticket = self.writer.begin_write()?;
                let reader = MvccReader::new(&self.db, None);
                let (batch, stats) = gc::sweep_batch(&reader, &chunk, safe_point)?;
                if !batch.is_empty() {
                    self.writer.write(ticket, batch)?;
                }
                Ok(stats)
            })();
            match result {
                Ok(stats) => {
                    total.values_deleted += stats.values_deleted;
                    total.deletes_removed += stats.deletes_removed;
                    total.skipped += stats.skipped;
                }
                Err(e) => {
                    backlog.restore(chunk);
                    backlog.restore(work);
                    return Err(e);
                }
            }
        }
        Ok(total)
    }
}

fn drain_front<T>(v: &mut Vec<T>, n: usize) -> Vec<T> {
    let n = n.min(v.len());
    v.drain(..n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsm::Options;
    use crate::mvcc::MvccError;
    use std::sync::Arc;

    fn storage() -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), Options::small_for_tests()).unwrap();
        (dir, Storage::new(db))
    }

    fn opts(primary: &[u8], start_ts: Timestamp) -> PrewriteOptions {
        PrewriteOptions {
            primary: primary.to_vec(),
            ttl_ms: 3000,
            min_commit_ts: start_ts + 1,
            coordinator: None,
        }
    }

    #[test]
    fn a_failed_prewrite_writes_nothing() {
        let (_dir, s) = storage();
        s.prewrite(
            &[Mutation::Put(b"b".to_vec(), b"x".to_vec())],
            &opts(b"b", 5),
            5,
        )
        .unwrap();
        let ms = [
            Mutation::Put(b"a".to_vec(), b"1".to_vec()),
            Mutation::Put(b"b".to_vec(), b"2".to_vec()),
        ];
        assert!(matches!(
            s.prewrite(&ms, &opts(b"a", 10), 10),
            Err(MvccError::KeyIsLocked(_))
        ));
        let reader = MvccReader::new(s.db(), None);
        assert!(
            reader.load_lock(b"a").unwrap().is_none(),
            "the key before the failure was not locked"
        );
    }

    #[test]
    fn racing_prewrites_of_one_key_let_exactly_one_win() {
        let (_dir, s) = storage();
        let s = Arc::new(s);
        for round in 0..20u64 {
            let key = format!("key{round}").into_bytes();
            let winners: usize = (0..4u64)
                .map(|t| {
                    let (s, key) = (Arc::clone(&s), key.clone());
                    std::thread::spawn(move || {
                        let start = 1000 * round + 10 * (t + 1);
                        let m = [Mutation::Put(key.clone(), vec![t as u8])];
                        usize::from(s.prewrite(&m, &opts(&key, start), start).is_ok())
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|h| h.join().unwrap())
                .sum();
            assert_eq!(winners, 1, "round {round}");
        }
    }

    #[test]
    fn two_phase_commit_through_storage() {
        let (_dir, s) = storage();
        let keys = [b"acct/1".to_vec(), b"acct/2".to_vec()];
        let ms: Vec<Mutation> = keys
            .iter()
            .map(|k| Mutation::Put(k.clone(), b"100".to_vec()))
            .collect();
        s.prewrite(&ms, &opts(&keys[0], 10), 10).unwrap();
        s.commit(&keys[..1], 10, 11).unwrap();
        // The secondary still carries a lock; a reader resolves it via the primary.
        let err = s.get(&keys[1], 20, &[]).unwrap_err();
        let MvccError::KeyIsLocked(info) = err else {
            panic!("expected a lock, got {err}")
        };
        let status = s
            .check_txn_status(&info.primary, info.start_ts, 20, Some(20))
            .unwrap();
        assert_eq!(status, TxnStatus::Committed { commit_ts: 11 });
        s.resolve_lock(std::slice::from_ref(&info.key), info.start_ts, Some(11))
            .unwrap();
        assert_eq!(s.get(&keys[1], 20, &[]).unwrap(), Some(b"100".to_vec()));
        assert_eq!(
            s.scan(b"acct/", Some(b"acct0"), 10, 20, false, &[])
                .unwrap()
                .len(),
            2
        );
    }
}
