//! The timestamp oracle (TSO): the source of every transaction's `start_ts` and `commit_ts`.
//!
//! A [`Timestamp`] is a hybrid of wall-clock milliseconds and a logical counter, packed into
//! one `u64` so that timestamps compare as integers:
//!
//! ```text
//!   63                                         18 17                0
//!  ┌─────────────────────────────────────────────┬───────────────────┐
//!  │ physical: milliseconds since the Unix epoch │ logical (18 bits) │
//!  └─────────────────────────────────────────────┴───────────────────┘
//! ```
//!
//! Callers see the oracle through the [`Tso`] trait. This module provides [`LocalTso`], a
//! single-process oracle with a mark file (tools and tests); [`ReplicatedTso`]
//! (`replicated.rs`), the cluster's one oracle, served by the leader of the Raft group that
//! holds it with its window persisted through that group (the sharding milestone moves it
//! to the meta shard; the contract stays); and [`BatchingTso`] (`batch.rs`), which
//! coalesces concurrent requests into one request to the oracle behind it.
//!
//! # `LocalTso`: never backwards, not even across restarts
//!
//! Within the process, the oracle remembers the last timestamp it issued and only ever issues
//! larger ones: the next timestamp is `max(last + 1, compose(now, 0))`. If the wall clock
//! stands still or goes backwards, the physical part stays where it was and the logical part
//! counts up; when the logical part overflows its 18 bits, the carry advances the physical
//! part by one millisecond (the `u64` addition does exactly that), running ahead of the wall
//! clock until the wall clock catches up.
//!
//! Across restarts the oracle relies on a persisted *high-water mark*, a physical time a
//! little ahead of anything issued (`save_interval`, 3 s by default):
//!
//! ```text
//!   physical ms ───────────────────────────────────────────────►
//!     issued so far ══════════●                          ┆
//!                           last                         mark (fsync'd on disk)
//!                             ├── up to save_interval ───┤
//!
//!   rule:    no timestamp with physical >= mark is issued before a new mark,
//!            physical(last) + save_interval, is durable
//!   restart: the first timestamp is >= compose(mark, 0), above everything issued before
//! ```
//!
//! So at most one fsync per `save_interval` of issued time, and a restart skips at most
//! `save_interval` of physical time. Because the rule holds whatever the wall clock says, a
//! process restarted with its clock an hour slow still issues timestamps above every earlier
//! one: it starts at the mark and counts logically until the wall clock passes it.
//!
//! The mark is replaced atomically: write a temp file beside it, fsync it, rename it over the
//! mark, fsync the directory. The file is a small versioned record with a masked crc32c
//! (decision D5):
//!
//! ```text
//!   magic "STSO" (4) │ version u32 LE (4) │ mark_ms u64 LE (8) │ masked crc32c u32 LE (4)
//! ```
//!
//! A missing file is a fresh start. A file that is present but cannot be trusted (wrong
//! length, magic, version or checksum) is [`TsoError::Corrupt`]: silently starting over could
//! reissue timestamps, which would break snapshot isolation, so an operator must look.
//!
//! Persisting happens while holding the oracle's lock: simple and correct, and rare because
//! of the window. If persisting fails, nothing is issued and the in-memory mark stays at the
//! old (lower, hence still safe) value, so the next call tries again.
//!
//! The wall clock is injected through the [`Clock`] trait ([`SystemClock`] in production,
//! [`ManualClock`] in tests), so tests move time by hand and never sleep.

use std::fmt::Debug;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::lsm::coding::masked_crc;

mod batch;
mod replicated;
#[cfg(test)]
mod replicated_tests;

pub use batch::BatchingTso;
pub use replicated::{ReplicatedTso, TsoGroup};

/// A hybrid timestamp: `physical_ms << LOGICAL_BITS | logical`.
pub type Timestamp = u64;

/// Number of low bits holding the logical counter.
pub const LOGICAL_BITS: u32 = 18;

/// The largest logical value, `2^18 - 1`.
pub const MAX_LOGICAL: u64 = (1 << LOGICAL_BITS) - 1;

/// The largest physical value a timestamp can hold, `2^46 - 1` ms (in the year 4199).
pub const MAX_PHYSICAL_MS: u64 = u64::MAX >> LOGICAL_BITS;

/// Packs a physical time in milliseconds and a logical counter into a [`Timestamp`].
///
/// `logical` must be at most [`MAX_LOGICAL`] and `physical_ms` at most [`MAX_PHYSICAL_MS`];
/// bits beyond those ranges are dropped.
pub const fn compose(physical_ms: u64, logical: u64) -> Timestamp {
    (physical_ms << LOGICAL_BITS) | (logical & MAX_LOGICAL)
}

/// The physical part of `ts`, in milliseconds since the Unix epoch.
pub const fn physical(ts: Timestamp) -> u64 {
    ts >> LOGICAL_BITS
}

/// The last of `count` (at least 1) contiguous timestamps issued at `now_ms`, the first
/// of them no lower than `next`: `ClockOverflow` if it would leave the physical range.
/// Both oracles issue their batches this way.
pub(crate) fn batch_last(next: Timestamp, now_ms: u64, count: u64) -> Result<Timestamp, TsoError> {
    next.max(compose(now_ms, 0))
        .checked_add(count.saturating_sub(1))
        .filter(|&last| physical(last) < MAX_PHYSICAL_MS)
        .ok_or(TsoError::ClockOverflow)
}

/// The logical part of `ts`.
pub const fn logical(ts: Timestamp) -> u64 {
    ts & MAX_LOGICAL
}

/// A source of timestamps.
pub trait Tso: Send + Sync + Debug {
    /// Returns a timestamp larger than every timestamp this oracle issued before.
    fn get_timestamp(&self) -> Result<Timestamp, TsoError>;

    /// Allocates `count` contiguous timestamps, `last - count + 1 ..= last`, all larger than
    /// every timestamp issued before, and returns `last`. `count` must be at least 1.
    fn get_timestamps(&self, count: u32) -> Result<Timestamp, TsoError>;

    /// A timestamp for a write that becomes visible only by committing through the oracle's
    /// own Raft group in `term` (a one-phase commit on the group's leader): allocated as
    /// [`get_timestamp`](Tso::get_timestamp) does, but a replicated oracle need not confirm
    /// its leadership for it, since that commit confirms it (D138). `NotLeader` if the
    /// oracle does not lead in `term`. By default, a confirmed timestamp.
    fn get_timestamp_in_term(&self, term: u64) -> Result<Timestamp, TsoError> {
        let _ = term;
        self.get_timestamp()
    }

    /// [`get_timestamp_in_term`](Tso::get_timestamp_in_term) if it can be answered at once,
    /// from memory: `Ok(None)` when it would have to wait (persist a new high-water mark,
    /// wait more than a moment for another caller's allocation, learn who leads), so that
    /// the asynchronous write path never blocks a runtime thread for long (D157). By
    /// default, never at once.
    fn try_timestamp_in_term(&self, term: u64) -> Result<Option<Timestamp>, TsoError> {
        let _ = term;
        Ok(None)
    }
}

/// An error from the timestamp oracle.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TsoError {
    /// Reading or persisting the high-water mark failed; no timestamp was issued.
    #[error("I/O error while {context}: {message}")]
    Io {
        /// What the oracle was doing.
        context: String,
        /// The operating system's message.
        message: String,
    },
    /// The high-water mark file exists but cannot be trusted.
    #[error("corrupt timestamp oracle state in {path}: {reason}")]
    Corrupt {
        /// The mark file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The physical part would pass [`MAX_PHYSICAL_MS`]: the wall clock reads a time after
    /// the year 4199, or a batch would run past it.
    #[error("timestamp physical part would exceed {MAX_PHYSICAL_MS} ms")]
    ClockOverflow,
    /// The caller passed something the oracle does not accept.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// This node does not serve the oracle: it does not lead the group that holds it (or
    /// lost the lead while issuing). Retry at `leader` (a node id) if known. Nothing issued.
    #[error("this node does not lead the timestamp oracle (leader: {leader:?})")]
    NotLeader {
        /// The node believed to lead, if known.
        leader: Option<u64>,
    },
    /// The oracle's group cannot be reached (replication stopped, or timed out). Nothing
    /// issued.
    #[error("timestamp oracle unavailable: {0}")]
    Unavailable(String),
}

impl TsoError {
    fn io(context: impl Into<String>, err: std::io::Error) -> TsoError {
        TsoError::Io {
            context: context.into(),
            message: err.to_string(),
        }
    }

    fn corrupt(path: &Path, reason: impl Into<String>) -> TsoError {
        TsoError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// A wall clock in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + Debug {
    /// The current time in milliseconds since the Unix epoch. May go backwards.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        // A clock set before 1970 reads as 0; the oracle then counts logically.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock moved by hand, for deterministic tests. Clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now_ms: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock reading `now_ms`.
    pub fn new(now_ms: u64) -> ManualClock {
        ManualClock {
            now_ms: Arc::new(AtomicU64::new(now_ms)),
        }
    }

    /// Sets the time to `now_ms`, forwards or backwards.
    pub fn set(&self, now_ms: u64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }

    /// Moves the time forwards by `ms`.
    pub fn advance(&self, ms: u64) {
        self.set(self.now_ms().saturating_add(ms));
    }

    /// Moves the time backwards by `ms` (not below 0).
    pub fn rewind(&self, ms: u64) {
        self.set(self.now_ms().saturating_sub(ms));
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// Options for [`LocalTso`].
#[derive(Debug, Clone)]
pub struct LocalTsoOptions {
    /// The high-water mark file. Its directory is created if missing.
    pub path: PathBuf,
    /// How far past the last issued physical time each persisted mark lies: larger means
    /// fewer fsyncs, and a larger jump of the physical time after a restart. Must be at
    /// least 1 ms.
    pub save_interval: Duration,
}

impl LocalTsoOptions {
    /// The default save interval.
    pub const DEFAULT_SAVE_INTERVAL: Duration = Duration::from_secs(3);

    /// Options persisting the mark at `path`, with the default save interval.
    pub fn new(path: impl Into<PathBuf>) -> LocalTsoOptions {
        LocalTsoOptions {
            path: path.into(),
            save_interval: Self::DEFAULT_SAVE_INTERVAL,
        }
    }
}

/// A single-process hybrid-clock oracle that persists a high-water mark; see the module
/// documentation for the design.
#[derive(Debug)]
pub struct LocalTso {
    path: PathBuf,
    save_interval_ms: u64,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The smallest timestamp that may be issued next.
    next: Timestamp,
    /// The durable high-water mark: every issued timestamp has a smaller physical part.
    mark_ms: u64,
    /// How many marks this instance has persisted.
    persists: u64,
}

impl LocalTso {
    /// Opens the oracle with the system clock.
    pub fn open(options: LocalTsoOptions) -> Result<LocalTso, TsoError> {
        LocalTso::open_with_clock(options, Arc::new(SystemClock))
    }

    /// Opens the oracle with the given clock. Reads the mark (a missing file is a fresh
    /// start); the first timestamp issued will be at or above it.
    pub fn open_with_clock(
        options: LocalTsoOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<LocalTso, TsoError> {
        let save_interval_ms = u64::try_from(options.save_interval.as_millis()).unwrap_or(u64::MAX);
        if save_interval_ms == 0 {
            return Err(TsoError::InvalidArgument(
                "save_interval must be at least 1 ms".to_string(),
            ));
        }
        let path = options.path;
        let dir = parent_dir(&path);
        fs::create_dir_all(dir)
            .map_err(|e| TsoError::io(format!("creating directory {}", dir.display()), e))?;
        let mark_ms = read_mark(&path)?;
        // Timestamp 0 is never issued, so it can mean "no timestamp" elsewhere.
        let next = match mark_ms {
            Some(mark) => compose(mark, 0).max(1),
            None => 1,
        };
        Ok(LocalTso {
            path,
            save_interval_ms,
            clock,
            state: Mutex::new(State {
                next,
                mark_ms: mark_ms.unwrap_or(0),
                persists: 0,
            }),
        })
    }

    /// The durable high-water mark, in milliseconds: every timestamp issued so far has a
    /// smaller physical part. 0 before the first mark is persisted on a fresh start.
    pub fn persisted_mark_ms(&self) -> u64 {
        self.state.lock().mark_ms
    }

    /// How many times this instance has persisted a new mark (for metrics and tests).
    pub fn persist_count(&self) -> u64 {
        self.state.lock().persists
    }

    /// The mark file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Issues `count` contiguous timestamps and returns the last.
    fn allocate(&self, count: u64) -> Result<Timestamp, TsoError> {
        if count == 0 {
            return Err(TsoError::InvalidArgument(
                "timestamp batch count must be at least 1".to_string(),
            ));
        }
        let now = self.clock.now_ms();
        if now >= MAX_PHYSICAL_MS {
            return Err(TsoError::ClockOverflow);
        }
        let mut state = self.state.lock();
        let last = batch_last(state.next, now, count)?;
        if physical(last) >= state.mark_ms {
            // physical(last) < MAX_PHYSICAL_MS, so the new mark is strictly above it.
            let mark = physical(last)
                .saturating_add(self.save_interval_ms)
                .min(MAX_PHYSICAL_MS);
            self.persist(mark)?;
            state.mark_ms = mark;
            state.persists += 1;
        }
        // Cannot overflow: physical(last) < MAX_PHYSICAL_MS.
        state.next = last + 1;
        Ok(last)
    }

    /// Makes `mark_ms` the durable high-water mark: temp file, fsync, rename, fsync dir.
    fn persist(&self, mark_ms: u64) -> Result<(), TsoError> {
        let tmp = temp_path(&self.path);
        let record = encode_mark(mark_ms);
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&record)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(TsoError::io(
                format!("persisting the high-water mark to {}", self.path.display()),
                e,
            ));
        }
        let dir = parent_dir(&self.path);
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| TsoError::io(format!("syncing directory {}", dir.display()), e))
    }
}

impl Tso for LocalTso {
    fn get_timestamp(&self) -> Result<Timestamp, TsoError> {
        self.allocate(1)
    }

    fn get_timestamps(&self, count: u32) -> Result<Timestamp, TsoError> {
        self.allocate(u64::from(count))
    }

    /// A local oracle has no term and waits for nothing but its own mark file, written on
    /// the calling thread (it serves tests and single-process tools, not the server).
    fn try_timestamp_in_term(&self, _term: u64) -> Result<Option<Timestamp>, TsoError> {
        self.allocate(1).map(Some)
    }
}

const MARK_MAGIC: &[u8; 4] = b"STSO";
const MARK_VERSION: u32 = 1;
const MARK_RECORD_LEN: usize = 20;

fn encode_mark(mark_ms: u64) -> [u8; MARK_RECORD_LEN] {
    let mut buf = [0u8; MARK_RECORD_LEN];
    buf[0..4].copy_from_slice(MARK_MAGIC);
    buf[4..8].copy_from_slice(&MARK_VERSION.to_le_bytes());
    buf[8..16].copy_from_slice(&mark_ms.to_le_bytes());
    let crc = masked_crc(&[&buf[..16]]);
    buf[16..20].copy_from_slice(&crc.to_le_bytes());
    buf
}

fn decode_mark(path: &Path, buf: &[u8]) -> Result<u64, TsoError> {
    let record: &[u8; MARK_RECORD_LEN] = buf.try_into().map_err(|_| {
        TsoError::corrupt(
            path,
            format!("expected {MARK_RECORD_LEN} bytes, found {}", buf.len()),
        )
    })?;
    let (body, crc) = record.split_at(16);
    let mut word = [0u8; 4];
    word.copy_from_slice(crc);
    if u32::from_le_bytes(word) != masked_crc(&[body]) {
        return Err(TsoError::corrupt(path, "checksum mismatch"));
    }
    if &body[0..4] != MARK_MAGIC {
        return Err(TsoError::corrupt(path, "bad magic"));
    }
    word.copy_from_slice(&body[4..8]);
    let version = u32::from_le_bytes(word);
    if version != MARK_VERSION {
        return Err(TsoError::corrupt(
            path,
            format!("unsupported version {version}"),
        ));
    }
    let mut mark = [0u8; 8];
    mark.copy_from_slice(&body[8..16]);
    let mark = u64::from_le_bytes(mark);
    if mark > MAX_PHYSICAL_MS {
        return Err(TsoError::corrupt(
            path,
            format!("mark {mark} ms exceeds {MAX_PHYSICAL_MS} ms"),
        ));
    }
    Ok(mark)
}

/// Reads the persisted mark; `None` if the file does not exist.
fn read_mark(path: &Path) -> Result<Option<u64>, TsoError> {
    match fs::read(path) {
        Ok(buf) => decode_mark(path, &buf).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TsoError::io(
            format!("reading the high-water mark {}", path.display()),
            e,
        )),
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// A plausible wall-clock reading (November 2023), far from 0 so rewinds stay positive.
    const T0: u64 = 1_700_000_000_000;
    const HOUR_MS: u64 = 3_600_000;

    fn options(dir: &tempfile::TempDir, save_interval_ms: u64) -> LocalTsoOptions {
        LocalTsoOptions {
            path: dir.path().join("tso").join("MARK"),
            save_interval: Duration::from_millis(save_interval_ms),
        }
    }

    fn open_manual(
        dir: &tempfile::TempDir,
        save_interval_ms: u64,
        clock: &ManualClock,
    ) -> LocalTso {
        LocalTso::open_with_clock(options(dir, save_interval_ms), Arc::new(clock.clone()))
            .expect("open")
    }

    /// The mark on disk, checked against the in-memory one.
    fn mark_on_disk(tso: &LocalTso) -> u64 {
        let mark = read_mark(tso.path())
            .expect("read mark")
            .expect("mark exists");
        assert_eq!(mark, tso.persisted_mark_ms());
        mark
    }

    #[test]
    fn compose_and_split_round_trip() {
        let ts = compose(T0, 12_345);
        assert_eq!(physical(ts), T0);
        assert_eq!(logical(ts), 12_345);
        assert_eq!(compose(T0, MAX_LOGICAL) + 1, compose(T0 + 1, 0));
        assert!(compose(T0, MAX_LOGICAL) < compose(T0 + 1, 0));
        assert_eq!(physical(u64::MAX), MAX_PHYSICAL_MS);
        assert_eq!(logical(u64::MAX), MAX_LOGICAL);
    }

    #[test]
    fn monotonic_over_many_calls_with_the_system_clock() {
        let dir = tempfile::tempdir().unwrap();
        let tso = LocalTso::open(LocalTsoOptions::new(dir.path().join("MARK"))).unwrap();
        let mut prev = 0;
        for _ in 0..100_000 {
            let ts = tso.get_timestamp().unwrap();
            assert!(ts > prev, "{ts} after {prev}");
            prev = ts;
        }
        // The physical part follows the wall clock, give or take the test's own runtime.
        let now = SystemClock.now_ms();
        assert!(physical(prev) <= now + 1 && physical(prev) + 60_000 > now);
        assert!(mark_on_disk(&tso) > physical(prev));
    }

    #[test]
    fn monotonic_and_unique_across_threads() {
        let dir = tempfile::tempdir().unwrap();
        let tso = Arc::new(LocalTso::open(LocalTsoOptions::new(dir.path().join("MARK"))).unwrap());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let tso = Arc::clone(&tso);
                std::thread::spawn(move || {
                    let mut out = Vec::with_capacity(10_000);
                    for _ in 0..10_000 {
                        let ts = tso.get_timestamp().unwrap();
                        if let Some(&prev) = out.last() {
                            assert!(ts > prev, "{ts} after {prev} in one thread");
                        }
                        out.push(ts);
                    }
                    out
                })
            })
            .collect();
        let mut all = HashSet::new();
        for h in handles {
            for ts in h.join().unwrap() {
                assert!(all.insert(ts), "{ts} issued twice");
            }
        }
        assert_eq!(all.len(), 40_000);
    }

    #[test]
    fn batches_are_contiguous_and_above_everything_before() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let tso = open_manual(&dir, 3000, &clock);
        let a = tso.get_timestamp().unwrap();
        let b = tso.get_timestamps(100).unwrap();
        assert_eq!(
            b - 99,
            a + 1,
            "the batch starts right after the previous timestamp"
        );
        let c = tso.get_timestamp().unwrap();
        assert_eq!(c, b + 1);
        assert_eq!(tso.get_timestamps(1).unwrap(), c + 1);

        // A batch that starts in a new millisecond starts at logical 0.
        clock.advance(5);
        let d = tso.get_timestamps(10).unwrap();
        assert_eq!(d - 9, compose(T0 + 5, 0));

        // A batch larger than the logical space runs into the following milliseconds.
        let e = tso.get_timestamps(u32::MAX).unwrap();
        assert_eq!(e - (u64::from(u32::MAX) - 1), d + 1);
        assert!(physical(e) > T0 + 5 + 16_000);
        assert!(mark_on_disk(&tso) > physical(e));

        assert!(matches!(
            tso.get_timestamps(0),
            Err(TsoError::InvalidArgument(_))
        ));
        assert!(tso.get_timestamp().unwrap() > e);
    }

    #[test]
    fn wall_clock_going_backwards_keeps_timestamps_increasing() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let tso = open_manual(&dir, 3000, &clock);
        let before = tso.get_timestamp().unwrap();
        assert_eq!(before, compose(T0, 0));
        clock.rewind(HOUR_MS);
        let mut prev = before;
        for i in 1..=1000 {
            let ts = tso.get_timestamp().unwrap();
            assert_eq!(
                ts,
                compose(T0, i),
                "keeps the last physical time, counts logically"
            );
            prev = ts;
        }
        // Once the wall clock passes the last physical time again, it is followed again.
        clock.set(T0 + 10);
        let ts = tso.get_timestamp().unwrap();
        assert!(ts > prev);
        assert_eq!(ts, compose(T0 + 10, 0));
    }

    #[test]
    fn logical_overflow_advances_physical_and_persists_when_needed() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        // A 1 ms window: the mark is T0 + 1, so the carry into T0 + 1 must persist first.
        let tso = open_manual(&dir, 1, &clock);
        let mut prev = tso.get_timestamp().unwrap();
        assert_eq!(prev, compose(T0, 0));
        assert_eq!((tso.persist_count(), mark_on_disk(&tso)), (1, T0 + 1));
        for _ in 0..MAX_LOGICAL {
            let ts = tso.get_timestamp().unwrap();
            assert_eq!(ts, prev + 1);
            prev = ts;
        }
        assert_eq!(prev, compose(T0, MAX_LOGICAL));
        assert_eq!(tso.persist_count(), 1);
        let carried = tso.get_timestamp().unwrap();
        assert_eq!(carried, compose(T0 + 1, 0), "the wall clock still reads T0");
        assert_eq!((tso.persist_count(), mark_on_disk(&tso)), (2, T0 + 2));
    }

    #[test]
    fn restart_with_a_clock_an_hour_slow_issues_above_everything_before() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let tso = open_manual(&dir, 3000, &clock);
        let mut max = 0;
        for step in 0..100 {
            clock.advance(step % 7);
            max = tso.get_timestamps(1 + step as u32).unwrap();
        }
        let mark = mark_on_disk(&tso);
        assert!(mark > physical(max));
        drop(tso);

        clock.rewind(HOUR_MS);
        let tso = open_manual(&dir, 3000, &clock);
        let first = tso.get_timestamp().unwrap();
        assert!(first > max);
        assert_eq!(first, compose(mark, 0), "starts at the persisted mark");
        assert_eq!(mark_on_disk(&tso), mark + 3000);
        let second = tso.get_timestamp().unwrap();
        assert_eq!(second, first + 1);

        // And again, without issuing anything in between: still no going back.
        drop(tso);
        let tso = open_manual(&dir, 3000, &clock);
        assert!(tso.get_timestamp().unwrap() > second);
    }

    #[test]
    fn the_mark_is_persisted_once_before_it_is_exceeded() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let tso = open_manual(&dir, 3000, &clock);
        assert_eq!(tso.persist_count(), 0, "opening persists nothing");
        assert!(!tso.path().exists());

        tso.get_timestamp().unwrap();
        assert_eq!((tso.persist_count(), mark_on_disk(&tso)), (1, T0 + 3000));

        // Up to the last millisecond below the mark: no persist.
        for ms in [1, 1000, 2999] {
            clock.set(T0 + ms);
            for _ in 0..10 {
                let ts = tso.get_timestamp().unwrap();
                assert!(physical(ts) < mark_on_disk(&tso));
            }
        }
        assert_eq!(tso.persist_count(), 1);

        // Reaching the mark persists exactly once, and the new mark covers what follows.
        clock.set(T0 + 3000);
        for _ in 0..10 {
            let ts = tso.get_timestamp().unwrap();
            assert!(physical(ts) < mark_on_disk(&tso));
        }
        assert_eq!((tso.persist_count(), mark_on_disk(&tso)), (2, T0 + 6000));

        // A jump far past the mark also persists exactly once.
        clock.advance(HOUR_MS);
        tso.get_timestamp().unwrap();
        tso.get_timestamp().unwrap();
        assert_eq!(
            (tso.persist_count(), mark_on_disk(&tso)),
            (3, T0 + 3000 + HOUR_MS + 3000)
        );
        assert!(!temp_path(tso.path()).exists(), "the temp file was renamed");
    }

    #[test]
    fn a_failed_persist_issues_nothing_and_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let tso = open_manual(&dir, 3000, &clock);
        let before = tso.get_timestamp().unwrap();
        // A directory where the temp file must go makes the next persist fail.
        let tmp = temp_path(tso.path());
        fs::create_dir(&tmp).unwrap();
        clock.advance(3000);
        assert!(matches!(tso.get_timestamp(), Err(TsoError::Io { .. })));
        assert_eq!((tso.persist_count(), mark_on_disk(&tso)), (1, T0 + 3000));
        fs::remove_dir(&tmp).unwrap();
        let after = tso.get_timestamp().unwrap();
        assert!(after > before);
        assert_eq!((tso.persist_count(), mark_on_disk(&tso)), (2, T0 + 6000));
    }

    #[test]
    fn a_damaged_mark_file_is_corrupt_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let path = {
            let tso = open_manual(&dir, 3000, &clock);
            tso.get_timestamp().unwrap();
            tso.path().to_path_buf()
        };
        let good = fs::read(&path).unwrap();
        assert_eq!(good, encode_mark(T0 + 3000));

        let mut flipped = good.clone();
        flipped[9] ^= 0x01;
        let mut bad_version = encode_mark(T0).to_vec();
        bad_version[4] = 2;
        let crc = masked_crc(&[&bad_version[..16]]);
        bad_version[16..].copy_from_slice(&crc.to_le_bytes());
        let mut bad_magic = bad_version.clone();
        bad_magic[..4].copy_from_slice(b"XXXX");
        let crc = masked_crc(&[&bad_magic[..16]]);
        bad_magic[16..].copy_from_slice(&crc.to_le_bytes());
        let mut too_far = good.clone();
        too_far[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let crc = masked_crc(&[&too_far[..16]]);
        too_far[16..].copy_from_slice(&crc.to_le_bytes());
        let mut longer = good.clone();
        longer.push(0);

        let cases: [(&str, Vec<u8>, &str); 7] = [
            ("empty", Vec::new(), "expected 20 bytes, found 0"),
            (
                "truncated",
                good[..12].to_vec(),
                "expected 20 bytes, found 12",
            ),
            ("longer", longer, "expected 20 bytes, found 21"),
            ("bit flip", flipped, "checksum mismatch"),
            ("version", bad_version, "unsupported version 2"),
            ("magic", bad_magic, "bad magic"),
            ("beyond range", too_far, "exceeds"),
        ];
        for (name, bytes, want) in cases {
            fs::write(&path, &bytes).unwrap();
            let err = LocalTso::open_with_clock(options(&dir, 3000), Arc::new(clock.clone()))
                .expect_err(name);
            match &err {
                TsoError::Corrupt { path: p, reason } => {
                    assert_eq!(p, &path, "{name}");
                    assert!(reason.contains(want), "{name}: {reason}");
                }
                other => panic!("{name}: expected Corrupt, got {other:?}"),
            }
            assert!(err.to_string().contains("MARK"), "{name}: {err}");
        }
    }

    #[test]
    fn unreadable_mark_is_an_io_error_and_bad_options_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("tso").join("MARK")).unwrap();
        let err = LocalTso::open(options(&dir, 3000)).unwrap_err();
        assert!(matches!(err, TsoError::Io { .. }), "{err:?}");

        let err = LocalTso::open(options(&dir, 0)).unwrap_err();
        assert!(matches!(err, TsoError::InvalidArgument(_)), "{err:?}");
    }

    #[test]
    fn clock_overflow_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(MAX_PHYSICAL_MS);
        let tso = open_manual(&dir, 3000, &clock);
        assert_eq!(tso.get_timestamp(), Err(TsoError::ClockOverflow));
        clock.set(MAX_PHYSICAL_MS - 1);
        let last = tso
            .get_timestamps(u32::try_from(MAX_LOGICAL + 1).unwrap())
            .unwrap();
        assert_eq!(last, compose(MAX_PHYSICAL_MS - 1, MAX_LOGICAL));
        assert_eq!(mark_on_disk(&tso), MAX_PHYSICAL_MS);
        assert_eq!(tso.get_timestamp(), Err(TsoError::ClockOverflow));
        // Reopening at the very top of the range cannot issue anything either.
        drop(tso);
        let tso = open_manual(&dir, 3000, &clock);
        assert_eq!(tso.get_timestamp(), Err(TsoError::ClockOverflow));
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Move the wall clock by this many milliseconds, either way.
        Move(i64),
        /// Set the wall clock back by an hour.
        RewindHour,
        Get,
        Batch(u32),
        /// Drop the oracle and open it again on the same file.
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (-5_000i64..5_000).prop_map(Op::Move),
            1 => Just(Op::RewindHour),
            4 => Just(Op::Get),
            3 => prop_oneof![1u32..100, 1u32..600_000].prop_map(Op::Batch),
            1 => Just(Op::Reopen),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the wall clock does, and wherever the process restarts, every timestamp
        /// is above every one issued before, and the durable mark is above all of them.
        #[test]
        fn strictly_monotonic_under_random_clocks_and_restarts(
            save_interval_ms in 1u64..5_000,
            ops in proptest::collection::vec(op(), 1..40),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let clock = ManualClock::new(T0);
            let mut tso = open_manual(&dir, save_interval_ms, &clock);
            let mut max_issued: Option<Timestamp> = None;
            for op in ops {
                let (first, last) = match op {
                    Op::Move(ms) => {
                        if ms >= 0 {
                            clock.advance(ms.unsigned_abs());
                        } else {
                            clock.rewind(ms.unsigned_abs());
                        }
                        continue;
                    }
                    Op::RewindHour => {
                        clock.rewind(HOUR_MS);
                        continue;
                    }
                    Op::Reopen => {
                        drop(tso);
                        tso = open_manual(&dir, save_interval_ms, &clock);
                        continue;
                    }
                    Op::Get => {
                        let ts = tso.get_timestamp().unwrap();
                        (ts, ts)
                    }
                    Op::Batch(n) => {
                        let last = tso.get_timestamps(n).unwrap();
                        (last - (u64::from(n) - 1), last)
                    }
                };
                if let Some(max) = max_issued {
                    prop_assert!(first > max, "{first} issued after {max}");
                }
                // Either it follows the wall clock or it continues right after the last one.
                prop_assert!(
                    physical(first) >= clock.now_ms() || Some(first) == max_issued.map(|m| m + 1)
                );
                prop_assert!(mark_on_disk(&tso) > physical(last));
                max_issued = Some(last);
            }
        }
    }
}
