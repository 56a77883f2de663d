//! The report of `strata bench engine`: a text table per workload, or JSON lines.
//!
//! Text puts the engines of one workload side by side with a `strata/fjall` row of ratios
//! (ops/s: above 1 means Strata is faster; latency and write amplification: below 1 means
//! Strata is better). JSON gives one object per (workload, engine) as soon as it is measured,
//! then a summary object (`"summary": true`) with the configuration and peak RSS, so a script
//! can follow a long run line by line.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Result;
use serde::Serialize;

use super::{BenchCompression, EngineBenchConfig, EngineKind, Measured, Workload};

/// The measurements of one workload on one engine.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadResult {
    /// The workload.
    pub workload: Workload,
    /// The engine.
    pub engine: EngineKind,
    /// Operations done (entries read, for readseq).
    pub ops: u64,
    /// Wall time of the workload, including the final flush and wait for writes.
    pub seconds: f64,
    /// `ops / seconds`.
    pub ops_per_sec: f64,
    /// Median latency of one operation, in microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, in microseconds.
    pub p99_us: f64,
    /// 99.9th percentile latency, in microseconds.
    pub p999_us: f64,
    /// Largest latency, in microseconds.
    pub max_us: f64,
    /// Mean latency, in microseconds.
    pub mean_us: f64,
    /// Bytes the process wrote (write syscalls) over key+value bytes written; `None` for
    /// reads.
    pub write_amp: Option<f64>,
    /// Key and value bytes the workload wrote.
    pub user_bytes: Option<u64>,
    /// Bytes the process passed to write syscalls during the workload.
    pub bytes_written: Option<u64>,
    /// The engine's own write amplification estimate for this workload (Strata: SSTable bytes
    /// written by flushes and compactions over key+value bytes; it leaves out the WAL).
    pub internal_write_amp: Option<f64>,
    /// Whether `seconds` includes a final flush and wait for background work.
    pub includes_flush: bool,
    /// Reads: gets that found their key, or entries scanned.
    pub found: Option<u64>,
    /// Engine counters per operation (mvccget: tables probed, bloom filter skips, block
    /// cache misses...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counters: Option<BTreeMap<String, f64>>,
}

impl WorkloadResult {
    pub(super) fn from_measurement(engine: EngineKind, m: Measured) -> WorkloadResult {
        let seconds = m.elapsed.as_secs_f64();
        let us = |ns: u64| ns as f64 / 1000.0;
        let writes = m.workload.writes();
        let write_amp = match (writes, m.bytes_written) {
            (true, Some(written)) if m.user_bytes > 0 => Some(written as f64 / m.user_bytes as f64),
            _ => None,
        };
        WorkloadResult {
            workload: m.workload,
            engine,
            ops: m.ops,
            seconds,
            ops_per_sec: if seconds > 0.0 {
                m.ops as f64 / seconds
            } else {
                0.0
            },
            p50_us: us(m.latency.percentile(50.0)),
            p99_us: us(m.latency.percentile(99.0)),
            p999_us: us(m.latency.percentile(99.9)),
            max_us: us(m.latency.max()),
            mean_us: m.latency.mean() / 1000.0,
            write_amp,
            user_bytes: writes.then_some(m.user_bytes),
            bytes_written: m.bytes_written,
            internal_write_amp: m.internal_write_amp,
            includes_flush: writes,
            found: m.found,
            counters: m.counters,
        }
    }
}

/// Everything a run measured, with the configuration it ran with.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Keys written by the fill workloads.
    pub keys: u64,
    /// Operations of readrandom and seekrandom.
    pub reads: u64,
    /// Bytes per key.
    pub key_size: usize,
    /// Bytes per value.
    pub value_size: usize,
    /// Entries per seekrandom scan.
    pub scan_len: usize,
    /// PRNG seed.
    pub seed: u64,
    /// Block cache per engine, MiB.
    pub block_cache_mb: u64,
    /// Memtable size per engine, MiB.
    pub memtable_mb: u64,
    /// Block compression.
    pub compression: BenchCompression,
    /// fsync on every write.
    pub sync: bool,
    /// The durability both engines ran with, in words.
    pub durability: String,
    /// Workloads run, in order.
    pub workloads: Vec<Workload>,
    /// Engines run, in order.
    pub engines: Vec<EngineKind>,
    /// The exact configuration of each engine.
    pub engine_config: BTreeMap<EngineKind, String>,
    /// Whether the database of the later workloads was loaded untimed (fillrandom's keys and
    /// order) because fillrandom itself was not selected.
    pub untimed_load: bool,
    /// Results, per engine in the order they ran.
    #[serde(skip)]
    pub results: Vec<WorkloadResult>,
    /// Peak resident set size of the process (VmHWM) at the end.
    pub peak_rss_bytes: Option<u64>,
    /// Peak RSS while each engine ran.
    pub peak_rss_bytes_by_engine: BTreeMap<EngineKind, Option<u64>>,
    /// Whether the peak was reset before each engine (else each engine's figure also covers
    /// the ones before it).
    pub peak_rss_reset_between_engines: bool,
}

impl BenchReport {
    pub(super) fn new(
        config: &EngineBenchConfig,
        workloads: &[Workload],
        engines: &[EngineKind],
        engine_config: BTreeMap<EngineKind, String>,
    ) -> BenchReport {
        BenchReport {
            keys: config.keys,
            reads: config.reads(),
            key_size: config.key_size,
            value_size: config.value_size,
            scan_len: config.scan_len,
            seed: config.seed,
            block_cache_mb: config.block_cache_mb,
            memtable_mb: config.memtable_mb,
            compression: config.compression,
            sync: config.sync,
            durability: durability(config.sync),
            workloads: workloads.to_vec(),
            engines: engines.to_vec(),
            engine_config,
            untimed_load: false,
            results: Vec::new(),
            peak_rss_bytes: None,
            peak_rss_bytes_by_engine: BTreeMap::new(),
            peak_rss_reset_between_engines: true,
        }
    }

    /// The result of `workload` on `engine`, if it ran.
    pub fn result(&self, workload: Workload, engine: EngineKind) -> Option<&WorkloadResult> {
        self.results
            .iter()
            .find(|r| r.workload == workload && r.engine == engine)
    }

    pub(super) fn write_header(&self, out: &mut dyn Write) -> Result<()> {
        let engines: Vec<&str> = self.engines.iter().map(|e| e.name()).collect();
        writeln!(
            out,
            "strata bench engine: {} keys of {} B, values of {} B (~50% compressible), \
             {} reads, seekrandom scan length {}, seed {}",
            group(self.keys),
            self.key_size,
            self.value_size,
            group(self.reads),
            self.scan_len,
            self.seed
        )?;
        writeln!(
            out,
            "engines: {} | block cache {} MiB each | memtable {} MiB | compression {}",
            engines.join(", "),
            self.block_cache_mb,
            self.memtable_mb,
            self.compression.name()
        )?;
        writeln!(out, "durability: {}", self.durability)?;
        for (engine, config) in &self.engine_config {
            writeln!(out, "{engine} config: {config}")?;
        }
        if self.untimed_load {
            writeln!(
                out,
                "fillrandom not selected: the database of the other workloads is loaded with \
                 its keys first, untimed and unreported."
            )?;
        }
        writeln!(
            out,
            "fill/overwrite times include a final memtable flush and a wait until background \
             flushes and compactions are idle."
        )?;
        writeln!(
            out,
            "write_amp = bytes the process passed to write syscalls (/proc/self/io wchar: WAL, \
             tables, compactions) / key+value bytes written; internal_wa = the engine's own \
             estimate for the workload (strata: SSTable bytes from flushes and compactions / \
             key+value bytes, without the WAL)."
        )?;
        writeln!(
            out,
            "ratio row strata/fjall: ops/s > 1 means strata is faster; latency and write_amp \
             < 1 mean strata is better."
        )?;
        Ok(())
    }

    pub(super) fn write_tables(&self, out: &mut dyn Write) -> Result<()> {
        for &workload in &self.workloads {
            let rows: Vec<&WorkloadResult> = self
                .engines
                .iter()
                .filter_map(|e| self.result(workload, *e))
                .collect();
            let Some(first) = rows.first() else {
                continue;
            };
            writeln!(out)?;
            let note = if workload.writes() {
                ", time includes final flush + wait for background work"
            } else {
                ""
            };
            writeln!(out, "{workload} ({} ops{note})", group(first.ops))?;
            let wa_cols = workload.writes();
            write!(
                out,
                "  {:<14} {:>12} {:>10} {:>10}",
                "engine", "ops/s", "p50_us", "p99_us"
            )?;
            if wa_cols {
                write!(out, " {:>10} {:>12}", "write_amp", "internal_wa")?;
            }
            writeln!(out)?;
            for r in &rows {
                write!(
                    out,
                    "  {:<14} {:>12} {:>10.2} {:>10.2}",
                    r.engine.name(),
                    group(r.ops_per_sec.round() as u64),
                    r.p50_us,
                    r.p99_us
                )?;
                if wa_cols {
                    write!(
                        out,
                        " {:>10} {:>12}",
                        opt2(r.write_amp),
                        opt2(r.internal_write_amp)
                    )?;
                }
                if let Some(found) = r.found {
                    let expected = match workload {
                        Workload::Readrandom => Some(self.reads),
                        Workload::Readseq => Some(self.keys),
                        _ => None,
                    };
                    if expected.is_some_and(|e| e != found) {
                        write!(
                            out,
                            "   (!) found {found}, expected {}",
                            expected.unwrap_or(0)
                        )?;
                    }
                }
                writeln!(out)?;
                if let Some(counters) = &r.counters {
                    let list: Vec<String> = counters
                        .iter()
                        .map(|(k, v)| format!("{k} {v:.3}"))
                        .collect();
                    writeln!(out, "  {:<14} per op: {}", "", list.join(", "))?;
                }
            }
            let strata = self.result(workload, EngineKind::Strata);
            let fjall = self.result(workload, EngineKind::Fjall);
            if let (Some(s), Some(f)) = (strata, fjall) {
                write!(
                    out,
                    "  {:<14} {:>12} {:>10} {:>10}",
                    "strata/fjall",
                    ratio(Some(s.ops_per_sec), Some(f.ops_per_sec)),
                    ratio(Some(s.p50_us), Some(f.p50_us)),
                    ratio(Some(s.p99_us), Some(f.p99_us))
                )?;
                if wa_cols {
                    write!(out, " {:>10}", ratio(s.write_amp, f.write_amp))?;
                }
                writeln!(out)?;
            }
        }
        writeln!(out)?;
        let per_engine: Vec<String> = self
            .engines
            .iter()
            .map(|e| {
                let peak = self.peak_rss_bytes_by_engine.get(e).copied().flatten();
                format!("{e} {}", mib(peak))
            })
            .collect();
        let how = if self.peak_rss_reset_between_engines {
            "each engine's own peak"
        } else {
            "cumulative: the kernel did not allow resetting the peak between engines"
        };
        writeln!(
            out,
            "peak RSS (VmHWM): {} ({how}); process peak {}",
            per_engine.join(", "),
            mib(self.peak_rss_bytes)
        )?;
        Ok(())
    }

    pub(super) fn write_json_summary(&self, out: &mut dyn Write) -> Result<()> {
        #[derive(Serialize)]
        struct Summary<'a> {
            summary: bool,
            #[serde(flatten)]
            report: &'a BenchReport,
        }
        serde_json::to_writer(
            &mut *out,
            &Summary {
                summary: true,
                report: self,
            },
        )?;
        writeln!(out)?;
        Ok(())
    }
}

/// Writes one result as a line of JSON.
pub(super) fn write_json_line(out: &mut dyn Write, r: &WorkloadResult) -> Result<()> {
    serde_json::to_writer(&mut *out, r)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

fn durability(sync: bool) -> String {
    if sync {
        "WAL/journal on for every engine, fdatasync on every write (strata: Options { wal: true } \
         + WriteOptions { sync: true }; fjall: journal on, each write a one-entry batch \
         committed with PersistMode::SyncData)"
            .to_string()
    } else {
        "WAL/journal on for every engine, no fsync per write: each write is handed to the OS \
         (one write syscall to the WAL/journal) before it returns (strata: Options { wal: true } \
         + WriteOptions { sync: false }; fjall: journal on, its default PersistMode::Buffer)"
            .to_string()
    }
}

/// `1234567` as `1,234,567`.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn opt2(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".to_string(),
    }
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "-".to_string(),
        |b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(ratio(Some(1.0), Some(2.0)), "0.50x");
        assert_eq!(ratio(None, Some(2.0)), "-");
        assert_eq!(ratio(Some(1.0), Some(0.0)), "-");
        assert_eq!(opt2(None), "-");
        assert_eq!(opt2(Some(1.234)), "1.23");
        assert_eq!(mib(Some(3 << 20)), "3.0 MiB");
    }
}
