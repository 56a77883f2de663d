//! The engine: [`Db`] ties the memtables, the WAL, the version set and the background
//! threads together.
//!
//! ## Write path
//! Writers queue up; the writer at the head of the queue becomes the *leader* and commits a
//! group of queued batches: it makes room (rotating the memtable, or stalling when flushes or
//! L0 fall behind), assigns consecutive sequence numbers, appends the group to the WAL with
//! one write and — if any writer asked for it — one fsync, inserts every entry into the
//! memtable, and only then publishes the new last sequence number, so readers see whole
//! batches. Followers wait and return the leader's result.
//!
//! ## Read path
//! Readers take a *super version* (the active memtable, the immutable memtables and the
//! current [`Version`], all reference counted) under a short lock and read without one.
//!
//! ## Background work
//! One thread flushes immutable memtables to L0, oldest first; one runs compactions picked by
//! [`compaction::pick`]. A flush failure (for example a full disk) puts the engine in a
//! read-only state (writes return [`Error::Background`]) while the thread retries with
//! backoff; a later success clears it. Files a compaction replaces are deleted once no
//! reader's version refers to them.
//!
//! ## Recovery
//! Open replays the manifest, then every WAL not yet flushed (truncating a torn or corrupt
//! tail of the last one), flushes what it replayed, writes a fresh manifest, and deletes
//! files a crash left behind.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::batch::{BatchOp, DecodedBatch, WriteBatch};
use super::cache::BlockCache;
use super::compaction::{
    self, file_meta, write_run, CompactionTask, GcContext, GcDecider, MergeTask,
};
use super::db_iter::{DbIterator, LevelIterator};
use super::error::{Error, IoContext, Result};
use super::iterator::{InternalIterator, MergingIterator};
use super::key::{engine_key, seek_key, ColumnFamily, SeqNo, ValueKind};
use super::log::{read_log, LogEnd, LogWriter};
use super::memtable::Memtable;
use super::options::{CompactionStyle, Options, ReadOptions, WriteOptions};
use super::range_del::{RangeTombstone, TombstoneSet};
use super::stats::{Counters, LevelStats, Stats};
use super::table::{table_file_name, TableCache, TableLookup, TableOptions};
use super::version::{sync_dir, wal_file_name, FileMeta, Version, VersionEdit, VersionSet};

/// Most bytes one group commit gathers.
const MAX_GROUP_BYTES: usize = 1 << 20;
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
    fn install_super_version(&mut self) {
        self.super_version = Arc::new(SuperVersion {
            mem: Arc::clone(&self.mem),
            imms: self.imms.iter().rev().cloned().collect(),
            version: Arc::clone(&self.version),
        });
    }
}

/// A writer waiting in the group-commit queue.
#[derive(Debug)]
struct Writer {
    batch: Mutex<Option<WriteBatch>>,
    sync: bool,
    /// Rotate the memtable instead of writing (used by `flush`).
    rotate: bool,
    done: Mutex<Option<Result<SeqNo>>>,
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
    /// The batches of the group being committed (reused by each leader).
    leader_scratch: Mutex<Vec<WriteBatch>>,
    queue_cv: Condvar,
    /// The WAL of the active memtable; only the write leader touches it.
    wal: Mutex<Option<LogWriter>>,
    /// Last sequence number visible to readers.
    last_seq: AtomicU64,
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
        drop(snaps);
        self.inner.bg_cv.notify_all();
    }
}

fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).context(|| format!("listing {}", dir.display()))? {
        let entry = entry.context(|| format!("listing {}", dir.display()))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

fn parse_numbered(name: &str, suffix: &str) -> Option<u64> {
    name.strip_suffix(suffix)?.parse().ok()
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

        let mut versions = if dir.join("CURRENT").exists() {
            VersionSet::recover(&dir, options.num_levels)?
        } else {
            let mut vs = VersionSet::new(&dir, options.num_levels);
            vs.write_new_manifest()?;
            vs
        };

        let block_cache = Arc::new(BlockCache::new(options.block_cache_bytes));
        let table_cache = Arc::new(TableCache::new(
            dir.clone(),
            options.max_open_tables.max(1),
            Some(Arc::clone(&block_cache)),
        ));
        let table_options = TableOptions::from(&options);
        let counters = Counters::default();

        // Replay the WALs that were not flushed, into one memtable, then flush it.
        let names = list_dir(&dir)?;
        let mut wals: Vec<u64> = names
            .iter()
            .filter_map(|n| parse_numbered(n, ".log"))
            .filter(|n| *n >= versions.log_number)
            .collect();
        wals.sort_unstable();
        // WAL numbers are handed out without a manifest record, so the recorded next file
        // number can be at or below a WAL found here. The WAL created below must not reuse
        // (and truncate) one of them: until the new manifest is durable, a crash replays them.
        if let Some(&newest) = wals.last() {
            versions.next_file_number = versions.next_file_number.max(newest + 1);
        }
        let recovered = Arc::new(Memtable::new(0));
        let mut max_seq = versions.last_seq;
        for (i, &number) in wals.iter().enumerate() {
            let path = wal_file_name(&dir, number);
            let contents = read_log(&path)?;
            let is_last = i + 1 == wals.len();
            let mut good_len = contents.valid_len;
            let mut damage = match &contents.end {
                LogEnd::Clean => None,
                LogEnd::Torn { offset } => Some((*offset, "torn record".to_string())),
                LogEnd::Corrupt { offset, reason } => Some((*offset, reason.clone())),
            };
            for (offset, record) in &contents.records {
                let Some(batch) = DecodedBatch::decode(record) else {
                    good_len = *offset;
                    damage = Some((*offset, "undecodable write batch".to_string()));
                    break;
                };
                apply_to_memtable(&recovered, &batch);
                max_seq = max_seq.max(batch.first_seq + u64::from(batch.count).saturating_sub(1));
            }
            if let Some((offset, reason)) = damage {
                if !is_last {
                    return Err(Error::corruption(
                        &path,
                        offset,
                        format!("{reason} in a WAL that is not the last"),
                    ));
                }
                tracing::warn!(wal = %path.display(), offset, %reason, "truncating the damaged tail of the WAL");
                drop(LogWriter::reopen_truncated(&path, good_len)?);
            }
        }
        versions.last_seq = max_seq;

        let mut edit = VersionEdit::default();
        if !recovered.is_empty() {
            let snapshots = Vec::new();
            let tombstones = recovered.range_dels();
            let files = flush_memtable(
                &recovered,
                &dir,
                &mut || versions.new_file_number(),
                &table_options,
                snapshots,
            )?;
            for (_, meta) in &files {
                Counters::add(&counters.flush_bytes_written, meta.size);
            }
            edit.new_files = files;
            edit.new_range_dels = tombstones;
        }
        let wal_number = if options.wal {
            versions.new_file_number()
        } else {
            0
        };
        edit.log_number = Some(if options.wal {
            wal_number
        } else {
            versions.next_file_number
        });
        edit.last_seq = Some(max_seq);
        let wal = if options.wal {
            Some(LogWriter::create(&wal_file_name(&dir, wal_number))?)
        } else {
            None
        };
        // The recovered version set has no open manifest, so this writes a fresh one holding
        // the whole state: replay stays short across restarts.
        versions.log_and_apply(edit)?;
        sync_dir(&dir)?;

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
    pub fn write(&self, batch: WriteBatch, opts: &WriteOptions) -> Result<SeqNo> {
        batch.validate()?;
        if batch.is_empty() {
            return Ok(self.inner.last_seq.load(Ordering::Acquire));
        }
        self.inner.check_writable()?;
        self.inner.commit(Some(batch), opts.sync, false)
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

    /// An iterator over `cf`. It starts unpositioned: call a seek first.
    pub fn iter(&self, cf: ColumnFamily, opts: IterOptions) -> Result<DbIterator> {
        self.inner.iter(cf, opts)
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
            self.inner.commit(None, false, true)?;
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

    /// Stops background work and closes the engine. Unflushed writes stay in the WAL.
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

/// Inserts one batch operation into a memtable.
fn apply_op(mem: &Memtable, op: std::result::Result<BatchOp<'_>, ()>, seq: SeqNo) {
    match op {
        Ok(BatchOp::Put { cf, key, value }) => mem.insert_cf(cf, key, seq, ValueKind::Put, value),
        Ok(BatchOp::Delete { cf, key }) => mem.insert_cf(cf, key, seq, ValueKind::Delete, &[]),
        Ok(BatchOp::DeleteRange { cf, start, end }) => mem.add_range_del(RangeTombstone {
            start: engine_key(cf, start),
            end: engine_key(cf, end),
            seq,
        }),
        // Batches are validated before they are applied (built by `WriteBatch`, or checked by
        // `DecodedBatch::decode` on replay), so this cannot happen.
        Err(()) => {}
    }
}

/// Inserts a decoded WAL batch into a memtable.
fn apply_to_memtable(mem: &Memtable, batch: &DecodedBatch<'_>) {
    for (i, op) in batch.ops().enumerate() {
        apply_op(mem, op, batch.first_seq + i as u64);
    }
}

/// Writes a memtable to (at most) one L0 file.
fn flush_memtable(
    mem: &Arc<Memtable>,
    dir: &Path,
    new_file_number: &mut dyn FnMut() -> u64,
    table_options: &TableOptions,
    snapshots: Vec<SeqNo>,
) -> Result<Vec<(usize, FileMeta)>> {
    let mut iter = mem.borrowed_iter();
    let mut decider = GcDecider::new(GcContext::new(snapshots, &mem.range_dels(), false));
    let mut new_file = || {
        let id = new_file_number();
        (id, table_file_name(dir, id))
    };
    let outputs = write_run(
        &mut iter,
        &mut decider,
        table_options,
        u64::MAX,
        &mut new_file,
    )?;
    Ok(outputs
        .iter()
        .map(|(id, s)| (0, file_meta(*id, s)))
        .collect())
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

    // ----- write path -------------------------------------------------------------------

    /// Commits `batch` (or rotates the memtable) through the group-commit queue.
    ///
    /// A writer that finds the queue empty leads at once and never allocates a waiter; one
    /// that finds it busy queues an [`Writer`] and either receives its result from a leader
    /// or becomes the leader when it reaches the front.
    fn commit(&self, batch: Option<WriteBatch>, sync: bool, rotate: bool) -> Result<SeqNo> {
        let mut queue = self.queue.lock();
        let (mut batch, me) = if queue.is_empty() {
            queue.push_back(None);
            (batch, None)
        } else {
            let me = Arc::new(Writer {
                batch: Mutex::new(batch),
                sync,
                rotate,
                done: Mutex::new(None),
            });
            queue.push_back(Some(Arc::clone(&me)));
            loop {
                if let Some(result) = me.done.lock().take() {
                    return result;
                }
                if queue
                    .front()
                    .is_some_and(|w| w.as_ref().is_some_and(|w| Arc::ptr_eq(w, &me)))
                {
                    break;
                }
                self.queue_cv.wait(&mut queue);
            }
            let batch = me.batch.lock().take();
            (batch, Some(me))
        };
        // Leader: gather the batches of the writers queued behind (a rotation goes alone).
        let mut scratch = self.leader_scratch.lock();
        scratch.clear();
        let mut followers = 0;
        let mut group_sync = sync;
        if !rotate {
            let mut bytes = batch.as_ref().map_or(0, WriteBatch::encoded_len);
            if let Some(b) = batch.take() {
                scratch.push(b);
            }
            for w in queue.iter().skip(1).flatten() {
                if w.rotate || bytes >= MAX_GROUP_BYTES {
                    break;
                }
                if let Some(b) = w.batch.lock().take() {
                    bytes += b.encoded_len();
                    scratch.push(b);
                }
                group_sync |= w.sync;
                followers += 1;
            }
        }
        drop(queue);

        let result = if rotate {
            self.rotate_memtable(true)
                .map(|_| self.last_seq.load(Ordering::Acquire))
        } else {
            self.commit_group(&mut scratch, group_sync)
        };
        scratch.clear();
        drop(scratch);

        let mut queue = self.queue.lock();
        if let Some(front) = queue.pop_front() {
            debug_assert!(match (&front, &me) {
                (Some(f), Some(m)) => Arc::ptr_eq(f, m),
                (None, None) => true,
                _ => false,
            });
        }
        for _ in 0..followers {
            if let Some(Some(w)) = queue.pop_front() {
                *w.done.lock() = Some(result.clone());
            }
        }
        drop(queue);
        self.queue_cv.notify_all();
        result
    }

    fn commit_group(&self, batches: &mut [WriteBatch], sync: bool) -> Result<SeqNo> {
        let total: usize = batches.iter().map(WriteBatch::encoded_len).sum();
        let mem = self.make_room_for_write(total)?;
        let first = self.last_seq.load(Ordering::Acquire) + 1;
        let mut next = first;
        for b in batches.iter_mut() {
            b.encode_with_seq(next);
            next += b.len() as u64;
        }
        let last = next - 1;
        if self.options.wal {
            let mut wal = self.wal.lock();
            let Some(log) = wal.as_mut() else {
                return Err(Error::Closed);
            };
            log.append(batches.iter().map(WriteBatch::encoded))?;
            let bytes: usize = batches
                .iter()
                .map(|b| b.encoded_len() + super::log::HEADER_LEN)
                .sum();
            Counters::add(&self.counters.wal_bytes_written, bytes as u64);
            if sync {
                if let Err(e) = log.sync() {
                    // The group may or may not be durable: refuse further writes (until the
                    // engine is reopened) rather than risk acknowledging a later write whose
                    // predecessor vanishes.
                    self.set_bg_error(Error::Background(format!("WAL sync failed: {e}")));
                    return Err(e);
                }
                Counters::add(&self.counters.wal_syncs, 1);
            }
        }
        let mut seq = first;
        for b in batches.iter() {
            for op in b.ops() {
                apply_op(&mem, op, seq);
                seq += 1;
            }
        }
        for b in batches.iter() {
            Counters::add(&self.counters.user_bytes_written, b.user_bytes());
        }
        Counters::add(&self.counters.batches_written, batches.len() as u64);
        Counters::add(&self.counters.write_groups, 1);
        self.last_seq.store(last, Ordering::Release);
        Ok(last)
    }

    fn set_bg_error(&self, e: Error) {
        Counters::add(&self.counters.background_errors, 1);
        self.state.lock().bg_error = Some(e);
        self.bg_cv.notify_all();
    }

    /// Returns the memtable to write into, rotating it or stalling as needed. Only the write
    /// leader calls this.
    fn make_room_for_write(&self, bytes: usize) -> Result<Arc<Memtable>> {
        let mut slowed = false;
        let mut stall_start: Option<Instant> = None;
        let result = loop {
            let mut st = self.state.lock();
            if let Some(e) = &st.bg_error {
                break Err(Error::Background(e.to_string()));
            }
            self.check_open()?;
            let l0 = st.version.levels[0].len();
            let o = &self.options;
            if o.background_work && !slowed && l0 >= o.level0_slowdown_trigger {
                // Slow down a little per write before L0 reaches the hard stop.
                drop(st);
                Counters::add(&self.counters.write_stalls, 1);
                std::thread::sleep(Duration::from_millis(1));
                Counters::add(&self.counters.write_stall_micros, 1000);
                slowed = true;
                continue;
            }
            if st.mem.approximate_size() + bytes <= o.memtable_size || st.mem.is_empty() {
                break Ok(Arc::clone(&st.mem));
            }
            let must_wait = st.imms.len() >= o.max_immutable_memtables.max(1)
                || (o.background_work && l0 >= o.level0_stop_trigger);
            if must_wait {
                if !o.background_work {
                    drop(st);
                    self.flush_all_pending()?;
                    continue;
                }
                if stall_start.is_none() {
                    Counters::add(&self.counters.write_stalls, 1);
                    stall_start = Some(Instant::now());
                }
                self.bg_cv.wait_for(&mut st, Duration::from_millis(100));
                continue;
            }
            drop(st);
            self.rotate_memtable(false)?;
        };
        if let Some(t) = stall_start {
            Counters::add(
                &self.counters.write_stall_micros,
                t.elapsed().as_micros() as u64,
            );
        }
        result
    }

    /// Freezes the active memtable and starts a new one (with a new WAL). Only the write
    /// leader calls this.
    fn rotate_memtable(&self, wait_for_room: bool) -> Result<()> {
        if wait_for_room {
            // `flush` rotates even a small memtable, but must respect the immutable limit.
            loop {
                let mut st = self.state.lock();
                if st.mem.is_empty() {
                    return Ok(());
                }
                if st.imms.len() < self.options.max_immutable_memtables.max(1) {
                    break;
                }
                if !self.options.background_work {
                    drop(st);
                    self.flush_all_pending()?;
                    continue;
                }
                if let Some(e) = &st.bg_error {
                    return Err(Error::Background(e.to_string()));
                }
                self.bg_cv.wait_for(&mut st, Duration::from_millis(100));
            }
        }
        let wal_number = if self.options.wal {
            let number = self.versions.lock().new_file_number();
            let writer = LogWriter::create(&wal_file_name(&self.dir, number))?;
            let mut wal = self.wal.lock();
            if let Some(old) = wal.as_mut() {
                // The old WAL stays until its memtable is flushed; make its tail durable so
                // that recovery never finds a gap before the new file.
                old.sync()?;
            }
            *wal = Some(writer);
            number
        } else {
            0
        };
        let mut st = self.state.lock();
        let old = std::mem::replace(&mut st.mem, Arc::new(Memtable::new(wal_number)));
        st.imms.push_back(old);
        st.install_super_version();
        drop(st);
        self.bg_cv.notify_all();
        Ok(())
    }

    // ----- read path --------------------------------------------------------------------

    fn read_seq(&self, opts_snapshot: Option<SeqNo>) -> SeqNo {
        opts_snapshot.unwrap_or_else(|| self.last_seq.load(Ordering::Acquire))
    }

    fn get(&self, cf: ColumnFamily, key: &[u8], opts: &ReadOptions) -> Result<Option<Vec<u8>>> {
        self.check_open()?;
        let sv = self.super_version();
        let snapshot = self.read_seq(opts.snapshot);
        let ek = engine_key(cf, key);
        Counters::add(&self.counters.gets, 1);
        let mut tomb: Option<SeqNo> = None;
        let mut note_tombstones = |list: &[RangeTombstone]| {
            for t in list {
                if t.seq <= snapshot && t.contains(&ek) {
                    tomb = Some(tomb.map_or(t.seq, |s| s.max(t.seq)));
                }
            }
        };
        for m in std::iter::once(&sv.mem).chain(sv.imms.iter()) {
            if m.has_range_dels() {
                note_tombstones(&m.range_dels());
            }
        }
        note_tombstones(&sv.version.range_dels);
        let resolve = |seq: SeqNo, kind: ValueKind, value: Vec<u8>| -> Option<Vec<u8>> {
            if kind == ValueKind::Delete || tomb.is_some_and(|t| t > seq) {
                None
            } else {
                Some(value)
            }
        };
        for m in std::iter::once(&sv.mem).chain(sv.imms.iter()) {
            if let Some(found) = m.get(&ek, snapshot) {
                return Ok(resolve(found.seq, found.kind, found.value));
            }
        }
        Counters::add(&self.counters.gets_from_tables, 1);
        let seek = seek_key(&ek, snapshot);
        let fill = opts.fill_cache.unwrap_or(true);
        let version = &sv.version;
        let candidates = version.levels[0]
            .iter()
            .filter(|f| f.smallest_user() <= ek.as_slice() && ek.as_slice() <= f.largest_user())
            .chain((1..version.levels.len()).filter_map(|l| version.file_for_key(l, &ek)));
        for f in candidates {
            let table = self.table_cache.get(f.id, f.size)?;
            Counters::add(&self.counters.table_probes, 1);
            match table.get(&ek, &seek, fill)? {
                TableLookup::FilteredOut => Counters::add(&self.counters.bloom_filtered, 1),
                TableLookup::NotFound => {}
                TableLookup::Found { key, value } => {
                    let kind = super::key::kind_of(&key).unwrap_or(ValueKind::Delete);
                    return Ok(resolve(super::key::seq_of(&key), kind, value));
                }
            }
        }
        Ok(None)
    }

    fn iter(&self, cf: ColumnFamily, opts: IterOptions) -> Result<DbIterator> {
        self.check_open()?;
        let sv = self.super_version();
        let snapshot = self.read_seq(opts.snapshot);
        let mut children: Vec<Box<dyn InternalIterator>> = Vec::new();
        let mut tombstones: Vec<RangeTombstone> = sv.version.range_dels.clone();
        for m in std::iter::once(&sv.mem).chain(sv.imms.iter()) {
            children.push(Box::new(m.iter()));
            if m.has_range_dels() {
                tombstones.extend(m.range_dels());
            }
        }
        for f in &sv.version.levels[0] {
            let table = self.table_cache.get(f.id, f.size)?;
            children.push(Box::new(table.iter(opts.fill_cache)));
        }
        for level in sv.version.levels.iter().skip(1) {
            if !level.is_empty() {
                children.push(Box::new(LevelIterator::new(
                    level.clone(),
                    Arc::clone(&self.table_cache),
                    opts.fill_cache,
                )));
            }
        }
        let lower = engine_key(cf, opts.lower_bound.as_deref().unwrap_or(&[]));
        let upper = match &opts.upper_bound {
            Some(u) => engine_key(cf, u),
            None => vec![cf.id().saturating_add(1)],
        };
        let set = TombstoneSet::new(&tombstones, snapshot);
        Ok(DbIterator::new(
            MergingIterator::new(children),
            Box::new(sv),
            snapshot,
            set,
            lower,
            upper,
        ))
    }

    // ----- flush ------------------------------------------------------------------------

    /// Flushes the oldest immutable memtable, if any. Returns whether one was flushed.
    fn flush_one(&self) -> Result<bool> {
        let _guard = self.flush_lock.lock();
        let (imm, next_wal) = {
            let mut st = self.state.lock();
            let Some(imm) = st.imms.front().cloned() else {
                return Ok(false);
            };
            st.flushing = true;
            let next_wal = st
                .imms
                .get(1)
                .map_or(st.mem.wal_number(), |m| m.wal_number());
            (imm, next_wal)
        };
        let result = (|| -> Result<Arc<Version>> {
            let snapshots = self.snapshot_list();
            let files = flush_memtable(
                &imm,
                &self.dir,
                &mut || self.versions.lock().new_file_number(),
                &self.table_options,
                snapshots,
            )?;
            let mut versions = self.versions.lock();
            let bytes: u64 = files.iter().map(|(_, f)| f.size).sum();
            let edit = VersionEdit {
                log_number: self.options.wal.then_some(next_wal),
                last_seq: imm.seq_range().map(|(_, hi)| hi),
                new_range_dels: imm.range_dels(),
                new_files: files.clone(),
                ..VersionEdit::default()
            };
            match versions.log_and_apply(edit) {
                Ok(v) => {
                    Counters::add(&self.counters.flush_bytes_written, bytes);
                    Counters::add(&self.counters.flushes, 1);
                    Ok(v)
                }
                Err(e) => {
                    for (_, f) in &files {
                        let _ = fs::remove_file(table_file_name(&self.dir, f.id));
                    }
                    Err(e)
                }
            }
        })();
        let mut st = self.state.lock();
        st.flushing = false;
        match result {
            Ok(version) => {
                st.imms.pop_front();
                st.version = version;
                st.install_super_version();
                if matches!(
                    st.bg_error,
                    Some(Error::NoSpace { .. }) | Some(Error::Io { .. })
                ) {
                    st.bg_error = None;
                }
                drop(st);
                if self.options.wal && imm.wal_number() != 0 {
                    let _ = fs::remove_file(wal_file_name(&self.dir, imm.wal_number()));
                }
                self.bg_cv.notify_all();
                Ok(true)
            }
            Err(e) => {
                drop(st);
                Err(e)
            }
        }
    }

    /// Flushes every immutable memtable, on this thread.
    fn flush_all_pending(&self) -> Result<()> {
        loop {
            match self.flush_one() {
                Ok(true) => continue,
                Ok(false) => return Ok(()),
                Err(e) => {
                    self.set_bg_error(e.clone());
                    return Err(e);
                }
            }
        }
    }

    fn flush_loop(&self) {
        let mut backoff = Duration::from_millis(10);
        loop {
            {
                let mut st = self.state.lock();
                while st.imms.is_empty() && !self.shutting_down.load(Ordering::Acquire) {
                    self.bg_cv.wait_for(&mut st, Duration::from_millis(200));
                }
            }
            if self.shutting_down.load(Ordering::Acquire) {
                return;
            }
            match self.flush_one() {
                Ok(_) => backoff = Duration::from_millis(10),
                Err(e) => {
                    tracing::error!(error = %e, "memtable flush failed; retrying");
                    self.set_bg_error(e);
                    self.sleep_unless_shutdown(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn sleep_unless_shutdown(&self, d: Duration) {
        let mut st = self.state.lock();
        if !self.shutting_down.load(Ordering::Acquire) {
            self.bg_cv.wait_for(&mut st, d);
        }
    }

    // ----- compaction -------------------------------------------------------------------

    fn compaction_loop(&self) {
        let mut backoff = Duration::from_millis(10);
        loop {
            if self.shutting_down.load(Ordering::Acquire) {
                return;
            }
            let task = {
                let _guard = self.compaction_lock.lock();
                let version = self.state.lock().version.clone();
                let task = compaction::pick(&version, &self.options, &self.snapshot_list());
                // Holding this version would keep the task's inputs from being purged.
                drop(version);
                match task {
                    Some(task) => {
                        self.state.lock().compacting = true;
                        let r = self.run_compaction(task);
                        self.state.lock().compacting = false;
                        self.bg_cv.notify_all();
                        Some(r)
                    }
                    None => None,
                }
            };
            match task {
                None => {
                    // Idle: files replaced while a reader held them can go now.
                    self.purge_obsolete();
                    let mut st = self.state.lock();
                    if !self.shutting_down.load(Ordering::Acquire) {
                        self.bg_cv.wait_for(&mut st, Duration::from_millis(200));
                    }
                }
                Some(Ok(())) => {
                    backoff = Duration::from_millis(10);
                    self.state.lock().compaction_error = None;
                }
                Some(Err(e)) => {
                    Counters::add(&self.counters.background_errors, 1);
                    self.state.lock().compaction_error = Some(e.clone());
                    self.bg_cv.notify_all();
                    tracing::error!(error = %e, "compaction failed; retrying");
                    self.sleep_unless_shutdown(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Runs one task and installs its result. The caller holds `compaction_lock`.
    fn run_compaction(&self, task: CompactionTask) -> Result<()> {
        let edit = match task {
            CompactionTask::Drop { files, tombstones } => {
                Counters::add(&self.counters.files_dropped, files.len() as u64);
                VersionEdit {
                    deleted_files: files.iter().map(|(l, f)| (*l, f.id)).collect(),
                    deleted_range_dels: tombstones,
                    ..VersionEdit::default()
                }
            }
            CompactionTask::Move { from_level, file } => {
                Counters::add(&self.counters.trivial_moves, 1);
                VersionEdit {
                    deleted_files: vec![(from_level, file.id)],
                    new_files: vec![(from_level + 1, (*file).clone())],
                    ..VersionEdit::default()
                }
            }
            CompactionTask::Merge(task) => self.merge(&task)?,
        };
        let version = self.versions.lock().log_and_apply(edit.clone());
        let version = match version {
            Ok(v) => v,
            Err(e) => {
                for (_, f) in &edit.new_files {
                    if !edit.deleted_files.iter().any(|(_, id)| *id == f.id) {
                        let _ = fs::remove_file(table_file_name(&self.dir, f.id));
                    }
                }
                return Err(e);
            }
        };
        let mut st = self.state.lock();
        let old = std::mem::replace(&mut st.version, version);
        for (_, f) in old.files() {
            if edit.deleted_files.iter().any(|(_, id)| *id == f.id)
                && !st.version.files().any(|(_, g)| g.id == f.id)
            {
                st.obsolete.push(Arc::clone(f));
            }
        }
        st.install_super_version();
        drop(st);
        drop(old);
        self.bg_cv.notify_all();
        self.purge_obsolete();
        Ok(())
    }

    fn merge(&self, task: &MergeTask) -> Result<VersionEdit> {
        // L0 files overlap: one iterator each. A deeper level's inputs are disjoint: one
        // concatenating iterator per level.
        let mut children: Vec<Box<dyn InternalIterator>> = Vec::new();
        let mut by_level: BTreeMap<usize, Vec<Arc<FileMeta>>> = BTreeMap::new();
        for (level, f) in &task.inputs {
            if *level == 0 {
                let table = self.table_cache.get(f.id, f.size)?;
                children.push(Box::new(table.iter(false)));
            } else {
                by_level.entry(*level).or_default().push(Arc::clone(f));
            }
        }
        for (_, mut files) in by_level {
            files.sort_by(|a, b| super::key::compare_internal(&a.smallest, &b.smallest));
            children.push(Box::new(LevelIterator::new(
                files,
                Arc::clone(&self.table_cache),
                false,
            )));
        }
        let mut iter = MergingIterator::new(children);
        let tombstones = self.state.lock().version.range_dels.clone();
        let mut ctx = GcContext::new(self.snapshot_list(), &tombstones, task.bottommost);
        ctx.filter = self.options.compaction_filter.clone();
        let mut decider = GcDecider::new(ctx);
        let mut new_file = || {
            let id = self.versions.lock().new_file_number();
            (id, table_file_name(&self.dir, id))
        };
        let bytes_in: u64 = task.inputs.iter().map(|(_, f)| f.size).sum();
        let outputs = write_run(
            &mut iter,
            &mut decider,
            &self.table_options,
            task.target_file_size,
            &mut new_file,
        )?;
        let bytes_out: u64 = outputs.iter().map(|(_, s)| s.file_size).sum();
        Counters::add(&self.counters.compaction_bytes_read, bytes_in);
        Counters::add(&self.counters.compaction_bytes_written, bytes_out);
        Counters::add(&self.counters.compactions, 1);
        tracing::debug!(reason = %task.reason, inputs = task.inputs.len(), outputs = outputs.len(), bytes_in, bytes_out, "compaction");
        Ok(VersionEdit {
            deleted_files: task.inputs.iter().map(|(l, f)| (*l, f.id)).collect(),
            new_files: outputs
                .iter()
                .map(|(id, s)| (task.output_level, file_meta(*id, s)))
                .collect(),
            ..VersionEdit::default()
        })
    }

    /// Deletes files and retires tombstones that range deletions made removable.
    fn drop_covered_files(&self) -> Result<()> {
        let version = self.state.lock().version.clone();
        if let Some(task @ CompactionTask::Drop { .. }) =
            compaction::pick(&version, &self.options, &self.snapshot_list())
        {
            self.run_compaction(task)?;
        }
        Ok(())
    }

    fn compact_range(&self, lo: &[u8], hi: &[u8]) -> Result<()> {
        let _guard = self.compaction_lock.lock();
        // Whole files under range tombstones go first, without being rewritten.
        self.drop_covered_files()?;
        let mut touched_bottom = false;
        let num_levels = self.options.num_levels;
        let levels: Vec<usize> = match self.options.compaction_style {
            CompactionStyle::Leveled => (0..num_levels - 1).collect(),
            CompactionStyle::SizeTiered => vec![0],
        };
        for level in levels {
            let version = self.state.lock().version.clone();
            let deepest = version.deepest_nonempty_level();
            let task = match self.options.compaction_style {
                CompactionStyle::SizeTiered => {
                    if version.levels[0].is_empty() {
                        break;
                    }
                    touched_bottom = true;
                    MergeTask {
                        inputs: version.levels[0]
                            .iter()
                            .map(|f| (0, Arc::clone(f)))
                            .collect(),
                        output_level: 0,
                        bottommost: true,
                        target_file_size: u64::MAX,
                        reason: "manual compaction".into(),
                    }
                }
                CompactionStyle::Leveled => {
                    if level > deepest {
                        break;
                    }
                    let mut inputs: Vec<(usize, Arc<FileMeta>)> = if level == 0 {
                        version.levels[0]
                            .iter()
                            .map(|f| (0, Arc::clone(f)))
                            .collect()
                    } else {
                        version
                            .overlapping(level, Some(lo), Some(hi))
                            .into_iter()
                            .map(|f| (level, f))
                            .collect()
                    };
                    if inputs.is_empty() {
                        continue;
                    }
                    let min = inputs
                        .iter()
                        .map(|(_, f)| f.smallest_user().to_vec())
                        .min()
                        .unwrap_or_default();
                    let max = inputs
                        .iter()
                        .map(|(_, f)| f.largest_user().to_vec())
                        .max()
                        .unwrap_or_default();
                    inputs.extend(
                        version
                            .overlapping(level + 1, Some(&min), Some(&max))
                            .into_iter()
                            .map(|f| (level + 1, f)),
                    );
                    let bottommost = (level + 2..num_levels)
                        .all(|l| version.overlapping(l, Some(&min), Some(&max)).is_empty());
                    touched_bottom |= bottommost;
                    MergeTask {
                        inputs,
                        output_level: level + 1,
                        bottommost,
                        target_file_size: self.options.target_file_size,
                        reason: "manual compaction".into(),
                    }
                }
            };
            self.state.lock().compacting = true;
            let r = self.run_compaction(CompactionTask::Merge(task));
            self.state.lock().compacting = false;
            r?;
        }
        if !touched_bottom && self.options.compaction_style == CompactionStyle::Leveled {
            // Everything already sat in the last level: rewrite it in place so tombstones
            // and the compaction filter take effect.
            let version = self.state.lock().version.clone();
            let last = version.deepest_nonempty_level();
            let inputs: Vec<_> = version
                .overlapping(last, Some(lo), Some(hi))
                .into_iter()
                .map(|f| (last, f))
                .collect();
            if !inputs.is_empty() {
                let task = MergeTask {
                    inputs,
                    output_level: last,
                    bottommost: true,
                    target_file_size: self.options.target_file_size,
                    reason: "manual compaction of the last level".into(),
                };
                self.run_compaction(CompactionTask::Merge(task))?;
            }
        }
        self.drop_covered_files()?;
        // The versions this loop held kept the inputs of its last compaction from being
        // deleted when it was installed; delete them now rather than at the next compaction.
        self.purge_obsolete();
        self.bg_cv.notify_all();
        Ok(())
    }

    // ----- files ------------------------------------------------------------------------

    /// Deletes replaced files that no reader holds any more.
    fn purge_obsolete(&self) {
        let ready: Vec<Arc<FileMeta>> = {
            let mut st = self.state.lock();
            let (ready, keep): (Vec<_>, Vec<_>) = st
                .obsolete
                .drain(..)
                .partition(|f| Arc::strong_count(f) == 1);
            st.obsolete = keep;
            ready
        };
        for f in ready {
            self.table_cache.evict(f.id);
            if let Err(e) = fs::remove_file(table_file_name(&self.dir, f.id)) {
                tracing::warn!(file = f.id, error = %e, "could not delete an obsolete SSTable");
            }
        }
    }

    /// Deletes files a crash or an earlier run left behind: SSTables not in the version,
    /// flushed WALs, old manifests and temporary files.
    fn delete_obsolete_files(&self) -> Result<()> {
        let (live, log_number, manifest): (Vec<u64>, u64, u64) = {
            let vs = self.versions.lock();
            (
                vs.current().files().map(|(_, f)| f.id).collect(),
                vs.log_number,
                vs.manifest_number(),
            )
        };
        let current_wal = self.state.lock().mem.wal_number();
        for name in list_dir(&self.dir)? {
            let remove = if let Some(n) = parse_numbered(&name, ".sst") {
                !live.contains(&n)
            } else if let Some(n) = parse_numbered(&name, ".log") {
                n < log_number && n != current_wal
            } else if let Some(n) = name
                .strip_prefix("MANIFEST-")
                .and_then(|n| n.parse::<u64>().ok())
            {
                n != manifest
            } else {
                name.ends_with(".dbtmp")
            };
            if remove {
                tracing::info!(file = %name, "removing a leftover file");
                let path = self.dir.join(&name);
                fs::remove_file(&path).context(|| format!("removing {}", path.display()))?;
            }
        }
        Ok(())
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
