//! The `mvccget` workload: MVCC point reads on Strata's engine, as the transaction layer
//! makes them.
//!
//! It has a database of its own. The untimed load writes `--keys` user keys with
//! `--mvcc-versions` committed versions each, one round per version (every round in a new
//! random key order, as updates arrive over time, so each version sits in other tables than
//! the one before), through the MVCC encoding: a `write`-family commit record per version
//! and, for values longer than [`SHORT_VALUE_MAX`], the value in the `default` family. Then
//! it flushes and waits for compactions. The timed part does `--reads` calls of
//! [`MvccReader::get`] (lock check, newest commit record at or below the read timestamp,
//! value) on random keys at random timestamps, some below the first version (those find
//! nothing).
//!
//! `mvccget` reads with the engine opened with the MVCC prefix extractor (commit records
//! through prefix reads); `mvccget-plain` does the same reads on the same tables with the
//! engine opened without it (plain bounded iterators, the read path before prefix reads).
//! Beside ops/s and latency each reports per operation the reading thread's CPU time
//! (`cpu_us`, which a busy machine does not inflate as it does wall time) and the engine's
//! read-path counters: whole-key bloom probes and skips of the lock and value lookups,
//! prefix filter checks and skips of the commit-record reads, block cache hits and misses.
//! Only Strata runs them: fjall has no MVCC layer.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};

use super::strata::StrataEngine;
use super::{EngineBenchConfig, EngineSettings, Measured, Workload};
use crate::bench::generator::{KeyGen, SplitMix64, ValueGen};
use crate::bench::histogram::Histogram;
use crate::bench::procfs;
use crate::lsm::{Db, Options, PrefixExtractor, Stats, WriteOptions};
use crate::mvcc::key::MvccPrefixExtractor;
use crate::mvcc::record::SHORT_VALUE_MAX;
use crate::mvcc::{MvccReader, MvccTxn, Timestamp, Write, WriteKind};

/// Keys per write batch of the load.
const LOAD_BATCH: u64 = 256;
/// Commit timestamps of successive versions are this far apart.
const TS_STEP: Timestamp = 10;
/// The first version's commit timestamp.
const FIRST_COMMIT_TS: Timestamp = 100;

/// Loads a fresh database at `path`, then times the same MVCC point reads on it once per
/// selected workload: `mvccget` with the engine opened with the MVCC prefix extractor
/// (prefix reads), `mvccget-plain` without it (plain bounded iterators). Both read the same
/// tables, written with prefix filters: reopening changes no table, so the comparison is
/// of the read paths alone.
pub(super) fn run(
    config: &EngineBenchConfig,
    settings: &EngineSettings,
    keys: &KeyGen,
    values: &mut ValueGen,
    path: &Path,
    workloads: &[Workload],
) -> Result<Vec<Measured>> {
    let open = |prefix: bool| -> Result<Db> {
        let options = Options {
            prefix_extractor: prefix
                .then(|| Arc::new(MvccPrefixExtractor) as Arc<dyn PrefixExtractor>),
            ..StrataEngine::options(settings)
        };
        Db::open(path, options).with_context(|| format!("opening strata at {}", path.display()))
    };
    let versions = config.mvcc_versions.max(1);
    let db = open(true)?;
    load(&db, config, keys, values, versions)?;
    db.close()?;

    let mut out = Vec::new();
    for &workload in workloads {
        let db = open(workload == Workload::Mvccget)?;
        out.push(time_reads(&db, config, keys, versions, workload)?);
        db.close()?;
    }
    if let [a, b] = out.as_slice() {
        if a.found != b.found {
            anyhow::bail!(
                "the read paths disagree: {} found {:?}, {} found {:?}",
                a.workload,
                a.found,
                b.workload,
                b.found
            );
        }
    }
    Ok(out)
}

/// `--reads` calls of `MvccReader::get` on random keys at random timestamps (the same ones
/// for every workload).
fn time_reads(
    db: &Db,
    config: &EngineBenchConfig,
    keys: &KeyGen,
    versions: u64,
    workload: Workload,
) -> Result<Measured> {
    let reads = config.reads();
    let mut rng = SplitMix64::for_stream(config.seed, Workload::Mvccget.name());
    // Read timestamps from just below the first version to past the last one.
    let lowest = FIRST_COMMIT_TS - TS_STEP / 2;
    let span = versions * TS_STEP + TS_STEP;
    let mut buf = Vec::with_capacity(keys.key_size());
    let mut latency = Histogram::new();
    let mut found = 0u64;
    let before = db.stats();
    let cpu_before = procfs::thread_cpu_ns();
    let start = Instant::now();
    for _ in 0..reads {
        let key = keys.key_into(rng.below(config.keys), &mut buf);
        let ts = lowest + rng.below(span);
        let t = Instant::now();
        let got = MvccReader::new(db, None).get(key, ts, &[])?;
        latency.record_duration(t.elapsed());
        found += u64::from(got.is_some());
    }
    let end = Instant::now();
    let mut counters = per_op_counters(&before, &db.stats(), reads);
    if let (Some(a), Some(b)) = (cpu_before, procfs::thread_cpu_ns()) {
        let cpu_us = b.saturating_sub(a) as f64 / 1000.0 / reads.max(1) as f64;
        counters.insert("cpu_us".to_string(), cpu_us);
    }
    Ok(Measured {
        workload,
        ops: reads,
        elapsed: end.saturating_duration_since(start),
        latency,
        user_bytes: 0,
        bytes_written: None,
        internal_write_amp: None,
        found: Some(found),
        counters: Some(counters),
    })
}

/// Writes `versions` rounds of committed versions of every key, then flushes and waits.
fn load(
    db: &Db,
    config: &EngineBenchConfig,
    keys: &KeyGen,
    values: &mut ValueGen,
    versions: u64,
) -> Result<()> {
    tracing::info!(
        "mvccget: loading {} keys x {versions} versions (untimed)",
        config.keys
    );
    let mut rng = SplitMix64::for_stream(config.seed, "mvccget-load");
    let mut buf = Vec::with_capacity(keys.key_size());
    let opts = WriteOptions::default();
    for v in 0..versions {
        let commit_ts = FIRST_COMMIT_TS + v * TS_STEP;
        let start_ts = commit_ts - 1;
        let order = rng.permutation(config.keys);
        for chunk in order.chunks(LOAD_BATCH as usize) {
            let mut txn = MvccTxn::new(start_ts);
            for &index in chunk {
                let key = keys.key_into(index, &mut buf);
                let value = values.next_value();
                let short_value = (value.len() <= SHORT_VALUE_MAX).then(|| value.to_vec());
                if short_value.is_none() {
                    txn.put_value(key, value);
                }
                let write = Write {
                    kind: WriteKind::Put,
                    start_ts,
                    short_value,
                };
                txn.put_write(key, commit_ts, &write);
            }
            db.write(txn.into_batch(), &opts)?;
        }
    }
    db.flush()?;
    db.wait_for_background_work()?;
    Ok(())
}

/// The read-path counters of the engine between two snapshots of its statistics, per read.
fn per_op_counters(before: &Stats, after: &Stats, reads: u64) -> BTreeMap<String, f64> {
    let per_op = |a: u64, b: u64| a.saturating_sub(b) as f64 / reads.max(1) as f64;
    let mut out = BTreeMap::new();
    out.insert(
        "table_probes".to_string(),
        per_op(after.table_probes, before.table_probes),
    );
    out.insert(
        "bloom_filtered".to_string(),
        per_op(after.bloom_filtered, before.bloom_filtered),
    );
    out.insert(
        "block_cache_misses".to_string(),
        per_op(after.block_cache_misses, before.block_cache_misses),
    );
    out.insert(
        "prefix_table_checks".to_string(),
        per_op(after.prefix_table_checks, before.prefix_table_checks),
    );
    out.insert(
        "prefix_bloom_filtered".to_string(),
        per_op(after.prefix_bloom_filtered, before.prefix_bloom_filtered),
    );
    out.insert(
        "block_cache_hits".to_string(),
        per_op(after.block_cache_hits, before.block_cache_hits),
    );
    let files: usize = after.levels.iter().map(|l| l.files).sum();
    out.insert("tables_in_db".to_string(), files as f64);
    out
}
