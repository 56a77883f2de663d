//! The engine: [`Db`] ties the memtables, the WAL, the version set and the background
//! threads together. This file holds the engine's state, opening and closing, and the
//! public API; each path through the engine has a file of its own:
//!
//! - `db/write.rs`: group commit and memtable rotation;
//! - `db/read.rs`: point lookups and iterators over a pinned super version;
//! - `db/flush.rs`: immutable memtables to L0;
//! - `db/compact.rs`: compaction scheduling and manual compaction;
//! - `db/recovery.rs`: open-time manifest and WAL replay;
//! - `db/files.rs`: deleting obsolete files.
//!
//! ## Background work
//! One thread flushes immutable memtables to L0, oldest first; one runs compactions picked by
//! [`compaction::pick`]. A flush failure (for example a full disk) puts the engine in a
//! read-only state (writes return [`Error::Background`]) while the thread retries with
//! backoff; a later success clears it. A failed fsync of the WAL or the manifest leaves
//! durability unknown and refuses writes until reopen. Files a compaction replaces are
//! deleted once no reader's version refers to them; a new file's name is made durable with a
//! directory fsync before anything depends on it.

mod compact;
mod files;
mod flush;
mod prefix_read;
mod read;
mod recovery;
mod write;

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::batch::WriteBatch;
use super::cache::BlockCache;
use super::compaction;
use super::db_iter::DbIterator;
use super::error::{Error, IoContext, Result};
use super::key::{engine_key, ColumnFamily, SeqNo};
use super::log::LogWriter;
use super::memtable::Memtable;
use super::options::{CompactionStyle, Options, ReadOptions, WriteOptions};
use super::stats::{Counters, LevelStats, Stats};
use super::table::{table_file_name, TableCache, TableOptions};
use super::version::{FileMeta, Version, VersionSet};

use recovery::{recover, Recovered};
use write::Writer;

/// Longest backoff between retries of failed background work.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Options for [`Db::iter`].
#[derive(Debug, Clone, Default)]
pub struct IterOptions {
    /// Inclusive lower bound (a key of the column family).
    pub lower_bound: Option<Vec<u8>>,
    /// Exclusive upper bound.
    pub upper_bound: Option<Vec<u8>>,
    /// Read at this snapshot instead of the latest state.
    pub snapshot: Option<SeqNo>,
    /// Insert blocks read by the iterator into the block cache.
    pub fill_cache: bool,
}

/// What readers need: the memtables and the version, pinned together.
#[derive(Debug)]
struct SuperVersion {
    mem: Arc<Memtable>,
    /// Newest first.
    imms: Vec<Arc<Memtable>>,
    version: Arc<Version>,
}

#[derive(Debug)]
struct State {
    mem: Arc<Memtable>,
    /// Oldest first.
    imms: VecDeque<Arc<Memtable>>,
    version: Arc<Version>,
    super_version: Arc<SuperVersion>,
    /// Files no longer in the current version, deleted once no reader holds them.
    obsolete: Vec<Arc<FileMeta>>,
    flushing: bool,
    compacting: bool,
    /// A background failure that refuses writes until it clears.
    bg_error: Option<Error>,
    /// The last background compaction failure, cleared by the next success.
    compaction_error: Option<Error>,
}

impl State {
    /// Makes `version` the visible one if it is newer than the visible one, returning the
    /// version it replaced (to be dropped outside the lock). Flushes and compactions log their
    /// edits in one order but may get here in another; a version older than the visible one
    /// lacks an edit the visible one holds, and installing it would lose that edit's files.
    fn install_version(&mut self, version: Arc<Version>) -> Option<Arc<Version>> {
        if version.generation() <= self.version.generation() {
            return None;
        }
        Some(std::mem::replace(&mut self.version, version))
    }

    fn install_super_version(&mut self) {
        self.super_version = Arc::new(SuperVersion {
            mem: Arc::clone(&self.mem),
            imms: self.imms.iter().rev().cloned().collect(),
            version: Arc::clone(&self.version),
        });
    }
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    options: Options,
    table_options: TableOptions,
    block_cache: Arc<BlockCache>,
    table_cache: Arc<TableCache>,
    state: Mutex<State>,
    /// Signalled on every change background work or stalled writers may wait for.
    bg_cv: Condvar,
    versions: Mutex<VersionSet>,
    /// Writers in commit order; the front one leads. `None` is a leader that came to an
    /// empty queue and needs no waiter object.
    queue: Mutex<VecDeque<Option<Arc<Writer>>>>,
    /// The batches of the group being committed, each with whether it is logged (reused by
    /// each leader).
    leader_scratch: Mutex<Vec<(WriteBatch, bool)>>,
    queue_cv: Condvar,
    /// The WAL of the active memtable; only the write leader touches it.
    wal: Mutex<Option<LogWriter>>,
    /// Last sequence number visible to readers.
    last_seq: AtomicU64,
    /// Every entry with a sequence number at or below this is in an SSTable named by a
    /// durable manifest edit: it survives a crash whether it was logged or not.
    flushed_seq: AtomicU64,
    snapshots: Mutex<BTreeMap<SeqNo, usize>>,
    flush_lock: Mutex<()>,
    compaction_lock: Mutex<()>,
    counters: Counters,
    shutting_down: AtomicBool,
    _lock_file: fs::File,
}

/// Strata's LSM storage engine. Cheap to clone; all clones share one engine, which closes
/// when the last clone is dropped (or on [`Db::close`]).
#[derive(Debug, Clone)]
pub struct Db {
    inner: Arc<Inner>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// A consistent read view, kept alive (and its versions protected from compaction) until
/// dropped.
#[derive(Debug)]
pub struct Snapshot {
    seq: SeqNo,
    inner: Arc<Inner>,
}

impl Snapshot {
    /// The snapshot's sequence number.
    pub fn seq(&self) -> SeqNo {
        self.seq
    }

    /// Read options that read at this snapshot.
    pub fn read_options(&self) -> ReadOptions {
        ReadOptions {
            snapshot: Some(self.seq),
            ..ReadOptions::default()
        }
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let mut snaps = self.inner.snapshots.lock();
        if let Some(n) = snaps.get_mut(&self.seq) {
            *n -= 1;
            if *n == 0 {
                snaps.remove(&self.seq);
            }
        }
        // No wake-up of the background threads: every read takes and drops a snapshot, and
        // waking the flush and compaction threads for each cost two context switches and a
        // compaction pick per read. The compaction thread sees the change at its next look
        // (at most its 200 ms idle wait), which is when a drop compaction it enables runs.
    }
}

impl Db {
    /// Opens (or creates) the database in `path`.
    pub fn open(path: impl AsRef<Path>, options: Options) -> Result<Db> {
        let dir = path.as_ref().to_path_buf();
        if options.num_levels < 2 {
            return Err(Error::InvalidArgument(
                "num_levels must be at least 2".into(),
            ));
        }
        if !dir.join("CURRENT").exists() {
            if !options.create_if_missing {
                return Err(Error::InvalidArgument(format!(
                    "no database in {}",
                    dir.display()
                )));
            }
            fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
        }
        let lock_path = dir.join("LOCK");
        let lock_file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .context(|| format!("opening {}", lock_path.display()))?;
        if lock_file.try_lock().is_err() {
            return Err(Error::InvalidArgument(format!(
                "{} is in use by another process",
                dir.display()
            )));
        }

        let table_options = TableOptions::from(&options);
        let counters = Counters::default();
        let Recovered {
            versions,
            wal,
            wal_number,
            last_seq: max_seq,
        } = recover(&dir, &options, &table_options, &counters)?;

        let block_cache = Arc::new(BlockCache::new(options.block_cache_bytes));
        let table_cache = Arc::new(TableCache::new(
            dir.clone(),
            options.max_open_tables.max(1),
            Some(Arc::clone(&block_cache)),
        ));

        let version = versions.current();
        let mem = Arc::new(Memtable::new(wal_number));
        let mut state = State {
            mem,
            imms: VecDeque::new(),
            version,
            super_version: Arc::new(SuperVersion {
                mem: Arc::new(Memtable::new(0)),
                imms: Vec::new(),
                version: Arc::new(Version::default()),
            }),
            obsolete: Vec::new(),
            flushing: false,
            compacting: false,
            bg_error: None,
            compaction_error: None,
        };
        state.install_super_version();

        let inner = Arc::new(Inner {
            dir: dir.clone(),
            table_options,
            block_cache,
            table_cache,
            state: Mutex::new(state),
            bg_cv: Condvar::new(),
            versions: Mutex::new(versions),
            queue: Mutex::new(VecDeque::new()),
            leader_scratch: Mutex::new(Vec::new()),
            queue_cv: Condvar::new(),
            wal: Mutex::new(wal),
            last_seq: AtomicU64::new(max_seq),
            // Recovery flushed everything it replayed.
            flushed_seq: AtomicU64::new(max_seq),
            snapshots: Mutex::new(BTreeMap::new()),
            flush_lock: Mutex::new(()),
            compaction_lock: Mutex::new(()),
            counters,
            shutting_down: AtomicBool::new(false),
            options,
            _lock_file: lock_file,
        });
        inner.delete_obsolete_files()?;

        let db = Db {
            inner,
            threads: Arc::new(Mutex::new(Vec::new())),
        };
        if db.inner.options.background_work {
            let flusher = Arc::clone(&db.inner);
            let compactor = Arc::clone(&db.inner);
            let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
                std::thread::Builder::new()
                    .name(name.to_string())
                    .spawn(f)
                    .context(|| format!("starting the {name} thread"))
            };
            let t1 = spawn("lsm-flush", Box::new(move || flusher.flush_loop()))?;
            let t2 = spawn("lsm-compact", Box::new(move || compactor.compaction_loop()))?;
            db.threads.lock().extend([t1, t2]);
        }
        Ok(db)
    }

    /// The directory the database lives in.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// The options the engine was opened with.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// Sets `key` to `value` in `cf`.
    pub fn put(
        &self,
        cf: ColumnFamily,
        key: &[u8],
        value: &[u8],
        opts: &WriteOptions,
    ) -> Result<()> {
        let mut batch = WriteBatch::with_capacity(key.len() + value.len());
        batch.put(cf, key, value);
        self.write(batch, opts).map(|_| ())
    }

    /// Deletes `key` from `cf`.
    pub fn delete(&self, cf: ColumnFamily, key: &[u8], opts: &WriteOptions) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.delete(cf, key);
        self.write(batch, opts).map(|_| ())
    }

    /// Deletes every key of `cf` in `[start, end)`.
    pub fn delete_range(
        &self,
        cf: ColumnFamily,
        start: &[u8],
        end: &[u8],
        opts: &WriteOptions,
    ) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.delete_range(cf, start, end);
        self.write(batch, opts).map(|_| ())
    }

    /// Applies `batch` atomically and returns the sequence number of its last entry.
    ///
    /// With [`WriteOptions::disable_wal`] the batch is not logged: it is durable once
    /// [`Db::flushed_seq`] reaches the returned number (`sync` is then refused).
    pub fn write(&self, batch: WriteBatch, opts: &WriteOptions) -> Result<SeqNo> {
        if opts.sync && opts.disable_wal {
            return Err(Error::InvalidArgument(
                "a write that skips the WAL cannot be synced: it is durable after a flush".into(),
            ));
        }
        batch.validate()?;
        if batch.is_empty() {
            return Ok(self.inner.last_seq.load(Ordering::Acquire));
        }
        self.inner.check_writable()?;
        self.inner
            .commit(Some(batch), opts.sync, !opts.disable_wal, false)
    }

    /// The value of `key` in `cf`, at the latest state or at `opts.snapshot`.
    pub fn get(&self, cf: ColumnFamily, key: &[u8], opts: &ReadOptions) -> Result<Option<Vec<u8>>> {
        self.inner.get(cf, key, opts)
    }

    /// Takes a snapshot of the current state.
    pub fn snapshot(&self) -> Snapshot {
        let mut snaps = self.inner.snapshots.lock();
        let seq = self.inner.last_seq.load(Ordering::Acquire);
        *snaps.entry(seq).or_insert(0) += 1;
        Snapshot {
            seq,
            inner: Arc::clone(&self.inner),
        }
    }

    /// The sequence number of the last committed write.
    pub fn last_seq(&self) -> SeqNo {
        self.inner.last_seq.load(Ordering::Acquire)
    }

    /// The sequence number through which every write is in SSTables named by a durable
    /// manifest edit, so it survives a crash even if it skipped the WAL. It only grows; a
    /// write whose [`Db::write`] returned `seq` is durable once `flushed_seq() >= seq`.
    /// Memtables flush oldest first and hold consecutive ranges of numbers, so a flush
    /// covers every number up to the largest it wrote.
    pub fn flushed_seq(&self) -> SeqNo {
        self.inner.flushed_seq.load(Ordering::Acquire)
    }

    /// An iterator over `cf`. It starts unpositioned: call a seek first.
    pub fn iter(&self, cf: ColumnFamily, opts: IterOptions) -> Result<DbIterator> {
        self.inner.iter(cf, opts)
    }

    /// An iterator over the keys of `cf` that share `key`'s prefix by
    /// [`Options::prefix_extractor`], within `opts`' bounds. It reads the memtables and only
    /// the tables whose key range and prefix filter may hold the prefix, so a seek costs a
    /// few block reads however many levels there are (see `db/prefix_read.rs`). It starts
    /// unpositioned. `InvalidArgument` without an extractor or if `key` has no prefix.
    pub fn prefix_iter(
        &self,
        cf: ColumnFamily,
        key: &[u8],
        opts: IterOptions,
    ) -> Result<DbIterator> {
        self.inner.prefix_iter(cf, key, opts)
    }

    /// Up to `limit` key/value pairs of `cf` in `[start, end)`, ascending or descending.
    pub fn scan(
        &self,
        cf: ColumnFamily,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        reverse: bool,
        snapshot: Option<SeqNo>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut it = self.iter(
            cf,
            IterOptions {
                lower_bound: Some(start.to_vec()),
                upper_bound: end.map(<[u8]>::to_vec),
                snapshot,
                fill_cache: true,
            },
        )?;
        let mut out = Vec::new();
        if reverse {
            it.seek_to_last()?;
        } else {
            it.seek_to_first()?;
        }
        while it.valid() && out.len() < limit {
            out.push((it.key().to_vec(), it.value().to_vec()));
            if reverse {
                it.prev()?;
            } else {
                it.next()?;
            }
        }
        Ok(out)
    }

    /// Flushes the active memtable to an SSTable and waits until every immutable memtable
    /// is flushed.
    pub fn flush(&self) -> Result<()> {
        self.inner.check_open()?;
        let has_data = !self.inner.state.lock().mem.is_empty();
        if has_data {
            self.inner.commit(None, false, false, true)?;
        }
        self.inner.flush_all_pending()
    }

    /// Compacts every file overlapping `[start, end]` of `cf` (all of `cf` when `None`) down
    /// to the last level (leveled) or into one run (size-tiered), dropping what tombstones,
    /// snapshots and the compaction filter allow.
    pub fn compact_range(
        &self,
        cf: ColumnFamily,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
    ) -> Result<()> {
        self.flush()?;
        let lo = engine_key(cf, start.unwrap_or(&[]));
        let hi = match end {
            Some(e) => engine_key(cf, e),
            None => vec![cf.id().saturating_add(1)],
        };
        self.inner.compact_range(&lo, &hi)
    }

    /// Waits until no flush or compaction is pending or running.
    pub fn wait_for_background_work(&self) -> Result<()> {
        self.inner.flush_all_pending()?;
        if !self.inner.options.background_work {
            return Ok(());
        }
        let mut st = self.inner.state.lock();
        loop {
            if let Some(e) = st.bg_error.as_ref().or(st.compaction_error.as_ref()) {
                return Err(e.clone());
            }
            let snaps = self.inner.snapshot_list();
            let busy = st.flushing
                || st.compacting
                || !st.imms.is_empty()
                || compaction::pick(&st.version, &self.inner.options, &snaps).is_some();
            if !busy || self.inner.shutting_down.load(Ordering::Acquire) {
                return Ok(());
            }
            self.inner
                .bg_cv
                .wait_for(&mut st, Duration::from_millis(50));
        }
    }

    /// The current version (for tests and diagnostics).
    pub fn test_version(&self) -> Arc<Version> {
        Arc::clone(&self.inner.state.lock().version)
    }

    /// A copy of the engine's statistics.
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// Stops background work and closes the engine. Unflushed logged writes stay in the WAL;
    /// unflushed writes that skipped it are lost (flush first to keep them).
    pub fn close(self) -> Result<()> {
        self.inner.shutting_down.store(true, Ordering::Release);
        self.inner.bg_cv.notify_all();
        let threads: Vec<_> = self.threads.lock().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
        if let Some(wal) = self.inner.wal.lock().as_mut() {
            wal.sync()?;
        }
        Ok(())
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        // The background threads hold clones of `inner`; stop them when the last user
        // handle goes away.
        if Arc::strong_count(&self.threads) == 1 {
            self.inner.shutting_down.store(true, Ordering::Release);
            self.inner.bg_cv.notify_all();
            for t in self.threads.lock().drain(..) {
                let _ = t.join();
            }
        }
    }
}

impl Inner {
    fn check_open(&self) -> Result<()> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<()> {
        self.check_open()?;
        if let Some(e) = &self.state.lock().bg_error {
            return Err(Error::Background(e.to_string()));
        }
        Ok(())
    }

    fn snapshot_list(&self) -> Vec<SeqNo> {
        self.snapshots.lock().keys().copied().collect()
    }

    fn super_version(&self) -> Arc<SuperVersion> {
        Arc::clone(&self.state.lock().super_version)
    }

    /// Fails if the manifest accepts no edit (see [`VersionSet::is_poisoned`]), so a flush or
    /// compaction does not write files that no edit can name.
    fn check_manifest(&self) -> Result<()> {
        if self.versions.lock().is_poisoned() {
            return Err(Error::Background(
                "manifest sync failed: no version edit is accepted until the engine is reopened"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Handles a failed [`VersionSet::log_and_apply`] of an edit adding `new_files`. If the
    /// manifest's fsync failed, the edit may be durable: every file it names stays, and the
    /// engine refuses writes until a reopen reads what the manifest really holds. Otherwise
    /// the edit was not logged and its new files are garbage.
    fn edit_failed(&self, versions: &VersionSet, new_files: &[u64]) {
        if versions.is_poisoned() {
            tracing::error!(
                "manifest sync failed; keeping the files of the edit and refusing writes until reopen"
            );
            self.set_bg_error(Error::Background(
                "manifest sync failed: the last version edit may or may not be durable; reopen \
                 the engine"
                    .into(),
            ));
            return;
        }
        for id in new_files {
            let _ = fs::remove_file(table_file_name(&self.dir, *id));
        }
    }

    /// Records a background error that refuses writes. A [`Error::Background`] error is
    /// fatal (a failed WAL or manifest fsync: only a reopen clears it) and is never replaced,
    /// or a later, clearable error (a full disk during a flush) could take its place and be
    /// cleared by the next successful flush, letting writes resume.
    fn set_bg_error(&self, e: Error) {
        Counters::add(&self.counters.background_errors, 1);
        let mut st = self.state.lock();
        if !matches!(st.bg_error, Some(Error::Background(_))) {
            st.bg_error = Some(e);
        }
        drop(st);
        self.bg_cv.notify_all();
    }

    fn sleep_unless_shutdown(&self, d: Duration) {
        let mut st = self.state.lock();
        if !self.shutting_down.load(Ordering::Acquire) {
            self.bg_cv.wait_for(&mut st, d);
        }
    }

    fn stats(&self) -> Stats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let st = self.state.lock();
        let version = Arc::clone(&st.version);
        let memtable_bytes = st.mem.approximate_size() as u64
            + st.imms
                .iter()
                .map(|m| m.approximate_size() as u64)
                .sum::<u64>();
        let immutable_memtables = st.imms.len();
        drop(st);
        let scores = compaction::level_scores(&version, &self.options);
        let levels: Vec<LevelStats> = version
            .levels
            .iter()
            .enumerate()
            .map(|(i, files)| LevelStats {
                files: files.len(),
                bytes: version.level_bytes(i),
                score: scores[i],
            })
            .collect();
        let live_bytes_estimate = match self.options.compaction_style {
            CompactionStyle::Leveled => levels
                .iter()
                .rev()
                .find(|l| l.bytes > 0)
                .map_or(0, |l| l.bytes),
            CompactionStyle::SizeTiered => {
                version.levels[0].iter().map(|f| f.size).max().unwrap_or(0)
            }
        };
        Stats {
            user_bytes_written: get(&c.user_bytes_written),
            wal_bytes_written: get(&c.wal_bytes_written),
            wal_syncs: get(&c.wal_syncs),
            batches_written: get(&c.batches_written),
            write_groups: get(&c.write_groups),
            flush_bytes_written: get(&c.flush_bytes_written),
            flushes: get(&c.flushes),
            compaction_bytes_read: get(&c.compaction_bytes_read),
            compaction_bytes_written: get(&c.compaction_bytes_written),
            compactions: get(&c.compactions),
            trivial_moves: get(&c.trivial_moves),
            files_dropped: get(&c.files_dropped),
            gets: get(&c.gets),
            gets_from_tables: get(&c.gets_from_tables),
            table_probes: get(&c.table_probes),
            bloom_filtered: get(&c.bloom_filtered),
            prefix_reads: get(&c.prefix_reads),
            prefix_table_checks: get(&c.prefix_table_checks),
            prefix_bloom_filtered: get(&c.prefix_bloom_filtered),
            block_cache_hits: self.block_cache.hits(),
            block_cache_misses: self.block_cache.misses(),
            block_cache_usage: self.block_cache.usage() as u64,
            write_stalls: get(&c.write_stalls),
            write_stall_micros: get(&c.write_stall_micros),
            background_errors: get(&c.background_errors),
            total_sst_bytes: version.total_bytes(),
            levels,
            memtable_bytes,
            immutable_memtables,
            live_bytes_estimate,
        }
    }
}
