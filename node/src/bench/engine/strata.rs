//! The adapter for Strata's own engine ([`crate::lsm::Db`]).
//!
//! Everything goes to [`ColumnFamily::Default`]. The options are the engine's defaults except
//! what must match the other engines: `wal: true`, `memtable_size`, `block_cache_bytes` and
//! `compression`; every write is a `Db::put` with `WriteOptions { sync }`. Scans open a new
//! iterator per call (as fjall's `range` does) with `fill_cache: true` (fjall always caches
//! the blocks it reads). `flush_and_wait` is `Db::flush` then `Db::wait_for_background_work`.
//!
//! The internal write amplification is [`Stats::write_amplification`] applied to the change of
//! its counters over the workload (SSTable bytes written by flushes and compactions over the
//! key and value bytes callers wrote), so an overwrite is not averaged with the fill before it.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};

use super::{BenchCompression, Engine, EngineSettings, StrataCompaction};
use crate::lsm::{
    ColumnFamily, CompactionStyle, Compression, Db, IterOptions, Options, ReadOptions, Stats,
    WriteOptions,
};

/// Strata's LSM engine behind the [`Engine`] trait.
#[derive(Debug)]
pub(super) struct StrataEngine {
    db: Db,
    write: WriteOptions,
    read: ReadOptions,
    /// Counters at the start of the current workload.
    baseline: Stats,
}

const CF: ColumnFamily = ColumnFamily::Default;

impl StrataEngine {
    pub(super) fn options(settings: &EngineSettings) -> Options {
        Options {
            wal: true,
            memtable_size: usize::try_from(settings.memtable_bytes).unwrap_or(usize::MAX),
            block_cache_bytes: usize::try_from(settings.block_cache_bytes).unwrap_or(usize::MAX),
            compression: match settings.compression {
                BenchCompression::None => Compression::None,
                BenchCompression::Lz4 => Compression::Lz4,
            },
            compaction_style: match settings.strata_compaction {
                StrataCompaction::Leveled => CompactionStyle::Leveled,
                StrataCompaction::SizeTiered => CompactionStyle::SizeTiered,
            },
            ..Options::default()
        }
    }

    pub(super) fn open(path: &Path, settings: &EngineSettings) -> Result<StrataEngine> {
        let db = Db::open(path, Self::options(settings))
            .with_context(|| format!("opening strata at {}", path.display()))?;
        Ok(StrataEngine {
            db,
            write: WriteOptions {
                sync: settings.sync,
                ..WriteOptions::default()
            },
            read: ReadOptions::default(),
            baseline: Stats::default(),
        })
    }

    pub(super) fn describe(settings: &EngineSettings) -> String {
        format!(
            "strata::lsm: {:?}, other options default; writes: Db::put(Default, .., \
             WriteOptions {{ sync: {} }})",
            Self::options(settings),
            settings.sync
        )
    }
}

impl Engine for StrataEngine {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.db.put(CF, key, value, &self.write)?;
        Ok(())
    }

    fn get(&mut self, key: &[u8]) -> Result<Option<usize>> {
        Ok(self.db.get(CF, key, &self.read)?.map(|v| v.len()))
    }

    fn scan(
        &mut self,
        start: Option<&[u8]>,
        limit: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<usize> {
        let mut iter = self.db.iter(
            CF,
            IterOptions {
                fill_cache: true,
                ..IterOptions::default()
            },
        )?;
        match start {
            Some(start) => iter.seek(start)?,
            None => iter.seek_to_first()?,
        }
        let mut n = 0;
        while n < limit && iter.valid() {
            visit(iter.key(), iter.value());
            n += 1;
            if n < limit {
                iter.next()?;
            }
        }
        Ok(n)
    }

    fn flush_and_wait(&mut self) -> Result<Instant> {
        self.db.flush()?;
        self.db.wait_for_background_work()?;
        Ok(Instant::now())
    }

    fn start_workload(&mut self) {
        self.baseline = self.db.stats();
    }

    fn internal_write_amp(&self) -> Option<f64> {
        let now = self.db.stats();
        let base = &self.baseline;
        let delta = Stats {
            user_bytes_written: now
                .user_bytes_written
                .saturating_sub(base.user_bytes_written),
            flush_bytes_written: now
                .flush_bytes_written
                .saturating_sub(base.flush_bytes_written),
            compaction_bytes_written: now
                .compaction_bytes_written
                .saturating_sub(base.compaction_bytes_written),
            ..Stats::default()
        };
        Some(delta.write_amplification())
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.db.close()?;
        Ok(())
    }
}
