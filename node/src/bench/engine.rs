//! `strata bench engine`: a db_bench-style macro-benchmark of storage engines, Strata's own
//! LSM beside fjall, on the same keys, values, durability and cache budget.
//!
//! # Design
//!
//! Each engine sits behind the small [`Engine`] trait (put, get, seek-and-scan, flush and
//! wait, close). The runner knows nothing of either engine: it generates the operations from
//! a seeded PRNG, so every engine sees exactly the same sequence, and measures from outside:
//!
//! ```text
//!   per engine, in this order:
//!     db A (fresh) : fillseq
//!     db B (fresh) : fillrandom ─► overwrite ─► readrandom ─► readseq ─► seekrandom
//!
//!   per workload:   wchar₀, t₀ ──► ops, each timed into a Histogram ──► [flush + wait idle]
//!                   ──► t₁, wchar₁        ops/s = ops / (t₁ - t₀)
//!                                         write_amp = (wchar₁ - wchar₀) / (key+value bytes)
//! ```
//!
//! * Fill and overwrite times end only after a flush of the memtable and a wait until
//!   background flushes and compactions are idle, so an engine cannot look fast by leaving its
//!   work for later.
//! * Write amplification is what the process passed to write system calls (`/proc/self/io`,
//!   see [`super::procfs`]), the same meter for every engine, over the key and value bytes the
//!   workload wrote. Strata's own estimate ([`Engine::internal_write_amp`]) is shown beside it
//!   as a cross-check.
//! * Durability is the same on both sides and printed in the header: WAL/journal on, no fsync
//!   per write (each write reaches the OS before it returns); `--sync` fsyncs every write on
//!   both.
//! * Peak RSS is reset before each engine (where the kernel allows it), so each engine's peak
//!   is its own.
//!
//! `mvccget` (opt-in, Strata only) times MVCC point reads on a database of its own
//! (`engine/mvcc.rs`).
//!
//! The adapters live in `engine/strata.rs` and `engine/fjall.rs` (the latter only with the
//! `bench-fjall` feature); tables and JSON lines are made in `engine/report.rs`.

mod mvcc;
mod report;
mod strata;

#[cfg(feature = "bench-fjall")]
mod fjall;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::generator::{KeyGen, SplitMix64, ValueGen};
use super::histogram::Histogram;
use super::procfs;

pub use report::{BenchReport, WorkloadResult};

/// Engines compiled into this binary, the default of `--engines`.
#[cfg(feature = "bench-fjall")]
pub const DEFAULT_ENGINES: &str = "strata,fjall";
/// Engines compiled into this binary, the default of `--engines`.
#[cfg(not(feature = "bench-fjall"))]
pub const DEFAULT_ENGINES: &str = "strata";

/// The default workloads, in the order they run (`mvccget` is opt-in).
pub const ALL_WORKLOADS: &str = "fillseq,fillrandom,overwrite,readrandom,readseq,seekrandom";

/// Options of `strata bench engine`.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineBenchConfig {
    /// Number of distinct keys the fill workloads write; also the number of overwrites.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Operations of readrandom and seekrandom [default: --keys].
    #[arg(long)]
    pub reads: Option<u64>,
    /// Bytes per key (zero-padded decimal of the key's index).
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    /// Bytes per value (half random, half repeated: ~50% compressible).
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Entries read after each seek of seekrandom.
    #[arg(long, default_value_t = 10)]
    pub scan_len: usize,
    /// Seed of the deterministic PRNG that picks keys and fills values.
    #[arg(long, default_value_t = 0x5eed)]
    pub seed: u64,
    /// Workloads to run (comma-separated); they always run in the canonical order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = ALL_WORKLOADS)]
    pub workloads: Vec<Workload>,
    /// Engines to compare (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = DEFAULT_ENGINES)]
    pub engines: Vec<EngineKind>,
    /// Directory for the databases [default: a fresh directory under the system temp dir,
    /// removed afterwards]. A given directory is kept, with one subdirectory per database.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Output format: text tables, or one JSON object per line.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Block cache size of each engine, in MiB.
    #[arg(long, default_value_t = 64)]
    pub block_cache_mb: u64,
    /// Memtable size of each engine, in MiB.
    #[arg(long, default_value_t = 64)]
    pub memtable_mb: u64,
    /// Block compression of each engine.
    #[arg(long, value_enum, default_value_t = BenchCompression::None)]
    pub compression: BenchCompression,
    /// fsync the WAL/journal on every write (both engines).
    #[arg(long)]
    pub sync: bool,
    /// Strata's compaction style (fjall keeps its own default, leveled).
    #[arg(long, value_enum, default_value_t = StrataCompaction::Leveled)]
    pub strata_compaction: StrataCompaction,
    /// Committed versions per key that mvccget writes.
    #[arg(long, default_value_t = 4)]
    pub mvcc_versions: u64,
}

impl Default for EngineBenchConfig {
    /// The defaults of the command line, from the one place they are written down.
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: EngineBenchConfig,
        }
        <Wrapper as clap::Parser>::parse_from(["bench"]).config
    }
}

impl EngineBenchConfig {
    /// Operations of readrandom and seekrandom.
    pub fn reads(&self) -> u64 {
        self.reads.unwrap_or(self.keys)
    }

    fn settings(&self) -> EngineSettings {
        EngineSettings {
            memtable_bytes: self.memtable_mb << 20,
            block_cache_bytes: self.block_cache_mb << 20,
            compression: self.compression,
            sync: self.sync,
            strata_compaction: self.strata_compaction,
        }
    }

    /// Checks the options before anything touches the disk.
    fn validate(&self) -> Result<KeyGen> {
        if self.keys == 0 {
            bail!("--keys must be at least 1");
        }
        if self.value_size == 0 {
            bail!("--value-size must be at least 1");
        }
        if self.scan_len == 0 {
            bail!("--scan-len must be at least 1");
        }
        if self.memtable_mb == 0 {
            bail!("--memtable-mb must be at least 1");
        }
        if self.workloads.is_empty() {
            bail!("--workloads is empty");
        }
        if self.engines.is_empty() {
            bail!("--engines is empty");
        }
        for engine in &self.engines {
            engine.check_compiled_in()?;
        }
        KeyGen::new(self.key_size, self.keys).map_err(anyhow::Error::msg)
    }
}

/// A benchmark workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Keys in ascending order into an empty database (its own).
    Fillseq,
    /// Every key once, in random order, into an empty database.
    Fillrandom,
    /// Random keys (with repeats) overwritten in the fillrandom database.
    Overwrite,
    /// Gets of random existing keys.
    Readrandom,
    /// One forward scan over the whole database.
    Readseq,
    /// Seek to a random key, then read `--scan-len` entries.
    Seekrandom,
    /// MVCC point reads (`MvccReader::get` at random timestamps) on keys with
    /// `--mvcc-versions` versions each, in a database of its own, with prefix reads of the
    /// commit records; Strata only, opt-in.
    Mvccget,
    /// The same reads on the same tables with plain bounded iterators (the engine opened
    /// without the prefix extractor); Strata only, opt-in.
    MvccgetPlain,
}

impl Workload {
    /// The default workloads, in the order they run.
    pub const ALL: [Workload; 6] = [
        Workload::Fillseq,
        Workload::Fillrandom,
        Workload::Overwrite,
        Workload::Readrandom,
        Workload::Readseq,
        Workload::Seekrandom,
    ];

    /// The name used on the command line and in the output.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Fillseq => "fillseq",
            Workload::Fillrandom => "fillrandom",
            Workload::Overwrite => "overwrite",
            Workload::Readrandom => "readrandom",
            Workload::Readseq => "readseq",
            Workload::Seekrandom => "seekrandom",
            Workload::Mvccget => "mvccget",
            Workload::MvccgetPlain => "mvccget-plain",
        }
    }

    /// Whether the workload is one of the MVCC point-read workloads (`engine/mvcc.rs`).
    pub fn is_mvcc(self) -> bool {
        matches!(self, Workload::Mvccget | Workload::MvccgetPlain)
    }

    /// Whether the workload writes (and so has a write amplification and a final flush).
    pub fn writes(self) -> bool {
        matches!(
            self,
            Workload::Fillseq | Workload::Fillrandom | Workload::Overwrite
        )
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An engine the benchmark can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Strata's own LSM engine (`strata::lsm`).
    Strata,
    /// fjall 3.1 (needs the `bench-fjall` feature).
    Fjall,
}

impl EngineKind {
    /// The name used on the command line and in the output.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Strata => "strata",
            EngineKind::Fjall => "fjall",
        }
    }

    /// Whether this binary carries the engine.
    pub fn is_compiled_in(self) -> bool {
        match self {
            EngineKind::Strata => true,
            EngineKind::Fjall => cfg!(feature = "bench-fjall"),
        }
    }

    fn check_compiled_in(self) -> Result<()> {
        if !self.is_compiled_in() {
            bail!(
                "engine `{}` is not compiled into this binary; rebuild with \
                 `--features bench-fjall` (e.g. `cargo run --release -p strata-node \
                 --features bench-fjall --bin strata -- bench engine`)",
                self.name()
            );
        }
        Ok(())
    }

    fn open(self, path: &Path, settings: &EngineSettings) -> Result<Box<dyn Engine>> {
        self.check_compiled_in()?;
        match self {
            EngineKind::Strata => Ok(Box::new(strata::StrataEngine::open(path, settings)?)),
            #[cfg(feature = "bench-fjall")]
            EngineKind::Fjall => Ok(Box::new(fjall::FjallEngine::open(path, settings)?)),
            #[cfg(not(feature = "bench-fjall"))]
            EngineKind::Fjall => unreachable!("checked by check_compiled_in"),
        }
    }

    /// The exact configuration the adapter opens the engine with, for the report.
    fn describe(self, settings: &EngineSettings) -> String {
        match self {
            EngineKind::Strata => strata::StrataEngine::describe(settings),
            #[cfg(feature = "bench-fjall")]
            EngineKind::Fjall => fjall::FjallEngine::describe(settings),
            #[cfg(not(feature = "bench-fjall"))]
            EngineKind::Fjall => "not compiled in".to_string(),
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Output format of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A table per workload, rows per engine, and a strata/fjall ratio row.
    Text,
    /// One JSON object per line per (workload, engine), then a summary object.
    Json,
}

/// Block compression, mapped to each engine's own setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchCompression {
    /// No block compression.
    None,
    /// LZ4 on every data block.
    Lz4,
}

impl BenchCompression {
    /// The name used on the command line and in the output.
    pub fn name(self) -> &'static str {
        match self {
            BenchCompression::None => "none",
            BenchCompression::Lz4 => "lz4",
        }
    }
}

/// Strata's compaction style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StrataCompaction {
    /// Leveled compaction (the default).
    Leveled,
    /// Size-tiered compaction.
    SizeTiered,
}

/// What every adapter must configure the same way.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Size at which a memtable is sealed and flushed.
    pub memtable_bytes: u64,
    /// Block cache capacity.
    pub block_cache_bytes: u64,
    /// Data block compression.
    pub compression: BenchCompression,
    /// fsync the WAL/journal on every write.
    pub sync: bool,
    /// Strata's compaction style.
    pub strata_compaction: StrataCompaction,
}

/// The operations the benchmark needs from an engine, on one key space.
pub trait Engine {
    /// Writes one key (WAL on; fsync only if the settings say `sync`).
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()>;

    /// Reads one key; the length of its value if it exists.
    fn get(&mut self, key: &[u8]) -> Result<Option<usize>>;

    /// Positions at the first key `>= start` (or the first key at all) and hands up to `limit`
    /// entries in key order to `visit`; returns how many it handed over. It reads no entry
    /// beyond the `limit`-th.
    fn scan(
        &mut self,
        start: Option<&[u8]>,
        limit: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<usize>;

    /// Flushes the memtable and waits until background flushes and compactions are idle.
    /// Returns the moment the engine was first seen idle: an adapter that must confirm
    /// idleness by watching for a while returns the start of that quiet window, which the
    /// benchmark does not count.
    fn flush_and_wait(&mut self) -> Result<Instant>;

    /// Marks the start of a workload, for engines that report their own counters per
    /// workload. Called before the benchmark's clock and meters start.
    fn start_workload(&mut self) {}

    /// The engine's own write amplification estimate since [`Engine::start_workload`], if it
    /// keeps one.
    fn internal_write_amp(&self) -> Option<f64> {
        None
    }

    /// Closes the engine, waiting for its threads.
    fn close(self: Box<Self>) -> Result<()>;
}

/// Where the databases live: a given directory (kept) or a fresh temporary one (removed).
#[derive(Debug)]
struct BenchDir {
    path: PathBuf,
    temporary: bool,
}

impl BenchDir {
    fn create(dir: Option<&Path>) -> Result<BenchDir> {
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating --dir {}", dir.display()))?;
            return Ok(BenchDir {
                path: dir.to_path_buf(),
                temporary: false,
            });
        }
        static RUN: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "strata-bench-{}-{}-{nanos}",
            std::process::id(),
            RUN.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path)
            .with_context(|| format!("creating temporary directory {}", path.display()))?;
        Ok(BenchDir {
            path,
            temporary: true,
        })
    }

    /// A path for a new database; refuses to reuse one, which would not be a fresh database.
    fn db_path(&self, engine: EngineKind, name: &str) -> Result<PathBuf> {
        let path = self.path.join(format!("{engine}-{name}"));
        if path.exists() {
            bail!(
                "{} already exists; give --dir an empty directory",
                path.display()
            );
        }
        Ok(path)
    }

    /// Removes a finished database if the whole directory is ours to remove anyway.
    fn discard(&self, db: &Path) {
        if self.temporary {
            if let Err(e) = std::fs::remove_dir_all(db) {
                tracing::warn!(path = %db.display(), error = %e, "could not remove database");
            }
        }
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Runs the benchmark described by `config`, writing the report to `out` (JSON lines as each
/// result is ready, text tables at the end), and returns the results.
pub fn run(config: &EngineBenchConfig, out: &mut dyn Write) -> Result<BenchReport> {
    let keys = config.validate()?;
    let settings = config.settings();
    let mut engines = config.engines.clone();
    let mut seen = Vec::new();
    engines.retain(|e| {
        let first = !seen.contains(e);
        seen.push(*e);
        first
    });
    let mut workloads = config.workloads.clone();
    workloads.sort();
    workloads.dedup();

    let dir = BenchDir::create(config.dir.as_deref())?;
    let descriptions: BTreeMap<EngineKind, String> = engines
        .iter()
        .map(|e| (*e, e.describe(&settings)))
        .collect();
    let mut report = BenchReport::new(config, &workloads, &engines, descriptions);
    report.untimed_load = needs_untimed_load(&workloads);
    if config.format == OutputFormat::Text {
        report.write_header(out)?;
        out.flush()?;
    }

    for &engine in &engines {
        let peak_reset = procfs::reset_peak_rss();
        let mut on_result = |r: &WorkloadResult| -> Result<()> {
            if config.format == OutputFormat::Json {
                report::write_json_line(out, r)?;
            }
            Ok(())
        };
        let results = run_engine(
            engine,
            config,
            &settings,
            &keys,
            &workloads,
            &dir,
            &mut on_result,
        )
        .with_context(|| format!("benchmarking {engine}"))?;
        report.results.extend(results);
        let peak = procfs::peak_rss_bytes();
        report.peak_rss_bytes_by_engine.insert(engine, peak);
        report.peak_rss_reset_between_engines &= peak_reset;
    }
    report.peak_rss_bytes = procfs::peak_rss_bytes();

    match config.format {
        OutputFormat::Text => report.write_tables(out)?,
        OutputFormat::Json => report.write_json_summary(out)?,
    }
    out.flush()?;
    Ok(report)
}

/// Runs the selected workloads on one engine: fillseq on its own database, the rest in order
/// on a second one.
fn run_engine(
    engine: EngineKind,
    config: &EngineBenchConfig,
    settings: &EngineSettings,
    keys: &KeyGen,
    workloads: &[Workload],
    dir: &BenchDir,
    on_result: &mut dyn FnMut(&WorkloadResult) -> Result<()>,
) -> Result<Vec<WorkloadResult>> {
    let mut results = Vec::new();
    let mut value_rng = SplitMix64::for_stream(config.seed, "values");
    let mut values = ValueGen::new(config.value_size, &mut value_rng);
    let mut bench = WorkloadRunner {
        engine,
        config,
        keys,
        values: &mut values,
    };

    if workloads.contains(&Workload::Fillseq) {
        let path = dir.db_path(engine, "fillseq")?;
        let mut db = engine.open(&path, settings)?;
        let r = bench.run(Workload::Fillseq, db.as_mut())?;
        bench.finish(r, &mut results, on_result)?;
        db.close()?;
        dir.discard(&path);
    }

    let mvcc: Vec<Workload> = workloads.iter().copied().filter(|w| w.is_mvcc()).collect();
    if !mvcc.is_empty() {
        if engine == EngineKind::Strata {
            let path = dir.db_path(engine, "mvcc")?;
            for m in mvcc::run(config, settings, keys, bench.values, &path, &mvcc)? {
                bench.finish(m, &mut results, on_result)?;
            }
            dir.discard(&path);
        } else {
            tracing::info!(%engine, "the mvccget workloads run on strata only; skipped");
        }
    }

    let rest: Vec<Workload> = workloads
        .iter()
        .copied()
        .filter(|w| *w != Workload::Fillseq && !w.is_mvcc())
        .collect();
    if rest.is_empty() {
        return Ok(results);
    }
    let path = dir.db_path(engine, "random")?;
    let mut db = engine.open(&path, settings)?;
    if needs_untimed_load(workloads) {
        // The later workloads need the keys; load them as fillrandom would, untimed.
        tracing::info!(%engine, "loading {} keys (untimed) for the read workloads", config.keys);
        bench.run(Workload::Fillrandom, db.as_mut())?;
    }
    for w in rest {
        let r = bench.run(w, db.as_mut())?;
        bench.finish(r, &mut results, on_result)?;
    }
    db.close()?;
    dir.discard(&path);
    Ok(results)
}

/// Whether workloads that need a loaded database run without fillrandom, which would load it.
fn needs_untimed_load(workloads: &[Workload]) -> bool {
    !workloads.contains(&Workload::Fillrandom)
        && workloads
            .iter()
            .any(|w| !matches!(w, Workload::Fillseq | Workload::Fillrandom) && !w.is_mvcc())
}

/// Generates and times the operations of one workload.
struct WorkloadRunner<'a> {
    engine: EngineKind,
    config: &'a EngineBenchConfig,
    keys: &'a KeyGen,
    values: &'a mut ValueGen,
}

/// What a workload measured, before it becomes a [`WorkloadResult`].
struct Measured {
    workload: Workload,
    ops: u64,
    elapsed: Duration,
    latency: Histogram,
    user_bytes: u64,
    bytes_written: Option<u64>,
    internal_write_amp: Option<f64>,
    /// Reads: gets that found a value, or entries scanned.
    found: Option<u64>,
    /// Engine counters per operation, for workloads that report them.
    counters: Option<BTreeMap<String, f64>>,
}

impl WorkloadRunner<'_> {
    fn run(&mut self, workload: Workload, db: &mut dyn Engine) -> Result<Measured> {
        tracing::info!(engine = %self.engine, %workload, "running");
        let keys = self.config.keys;
        let reads = self.config.reads();
        let scan_len = self.config.scan_len;
        let value_size = self.config.value_size;
        let mut rng = SplitMix64::for_stream(self.config.seed, workload.name());
        // Made before the clock starts.
        let order = (workload == Workload::Fillrandom).then(|| rng.permutation(keys));
        let mut buf = Vec::with_capacity(self.keys.key_size());
        let mut latency = Histogram::new();
        let mut user_bytes = 0u64;

        db.start_workload();
        let written_before = procfs::bytes_written();
        let start = Instant::now();
        let (ops, end, found) = match workload {
            Workload::Fillseq | Workload::Fillrandom | Workload::Overwrite => {
                for i in 0..keys {
                    let index = match &order {
                        Some(order) => order[i as usize],
                        None if workload == Workload::Overwrite => rng.below(keys),
                        None => i,
                    };
                    let key = self.keys.key_into(index, &mut buf);
                    let value = self.values.next_value();
                    let t = Instant::now();
                    db.put(key, value)?;
                    latency.record_duration(t.elapsed());
                    user_bytes += (key.len() + value.len()) as u64;
                }
                (keys, db.flush_and_wait()?, None)
            }
            Workload::Readrandom => {
                let mut hits = 0u64;
                for _ in 0..reads {
                    let key = self.keys.key_into(rng.below(keys), &mut buf);
                    let t = Instant::now();
                    let got = db.get(key)?;
                    latency.record_duration(t.elapsed());
                    hits += u64::from(got == Some(value_size));
                }
                (reads, Instant::now(), Some(hits))
            }
            Workload::Readseq => {
                // Each entry's latency is the time since the previous one (the first includes
                // positioning the iterator).
                let mut last = Instant::now();
                let mut bytes = 0usize;
                let n = db.scan(None, usize::MAX, &mut |k, v| {
                    let now = Instant::now();
                    latency.record_duration(now - last);
                    last = now;
                    bytes += k.len() + v.len();
                })?;
                std::hint::black_box(bytes);
                (n as u64, Instant::now(), Some(n as u64))
            }
            Workload::Mvccget | Workload::MvccgetPlain => {
                bail!("the mvccget workloads run on a database of their own")
            }
            Workload::Seekrandom => {
                let mut entries = 0u64;
                let mut bytes = 0usize;
                for _ in 0..reads {
                    let key = self.keys.key_into(rng.below(keys), &mut buf);
                    let t = Instant::now();
                    let n = db.scan(Some(key), scan_len, &mut |k, v| {
                        bytes += k.len() + v.len();
                    })?;
                    latency.record_duration(t.elapsed());
                    entries += n as u64;
                }
                std::hint::black_box(bytes);
                (reads, Instant::now(), Some(entries))
            }
        };
        let written_after = procfs::bytes_written();
        let writes = workload.writes();
        Ok(Measured {
            workload,
            ops,
            elapsed: end.saturating_duration_since(start),
            latency,
            user_bytes,
            bytes_written: written_after
                .zip(written_before)
                .map(|(after, before)| after.saturating_sub(before))
                .filter(|_| writes),
            internal_write_amp: if writes {
                db.internal_write_amp()
            } else {
                None
            },
            found,
            counters: None,
        })
    }

    /// Turns a measurement into a result, checks that reads found what was written, and
    /// hands it on.
    fn finish(
        &self,
        m: Measured,
        results: &mut Vec<WorkloadResult>,
        on_result: &mut dyn FnMut(&WorkloadResult) -> Result<()>,
    ) -> Result<()> {
        let expected = match m.workload {
            Workload::Readrandom => Some(self.config.reads()),
            Workload::Readseq => Some(self.config.keys),
            Workload::Seekrandom => None, // scans near the end are shorter
            _ => None,
        };
        if let (Some(want), Some(got)) = (expected, m.found) {
            if want != got {
                tracing::warn!(
                    engine = %self.engine, workload = %m.workload,
                    "expected {want} entries, the engine returned {got}"
                );
            }
        }
        let result = WorkloadResult::from_measurement(self.engine, m);
        tracing::info!(
            engine = %result.engine, workload = %result.workload,
            ops_per_sec = result.ops_per_sec.round(), p50_us = result.p50_us,
            p99_us = result.p99_us, write_amp = ?result.write_amp, "done"
        );
        on_result(&result)?;
        results.push(result);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
