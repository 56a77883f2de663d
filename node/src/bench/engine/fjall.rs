//! The fjall adapter (only with the `bench-fjall` feature).
//!
//! One database with one keyspace (`bench`), fjall's defaults except what must match Strata:
//!
//! * block cache: `Database::builder(..).cache_size(block_cache_bytes)`;
//! * memtable: `KeyspaceCreateOptions::max_memtable_size(memtable_bytes)`;
//! * compression: the same policy on every level for data blocks
//!   (`CompressionPolicy::all(None | Lz4)`; fjall's default is none on L0/L1 and LZ4 below),
//!   index blocks uncompressed (fjall's default), and the journal compressed only with `lz4`
//!   (fjall compresses journal values of 4 KiB and more; the benchmark's are smaller);
//! * durability: the journal is always on. Without `--sync`, `Keyspace::insert` with
//!   `manual_journal_persist = false` (the default) hands each write to the OS
//!   (`PersistMode::Buffer`), no fsync; with `--sync`, each write is a one-entry batch committed
//!   with `PersistMode::SyncData` (fdatasync).
//!
//! fjall has no public "wait until compactions are idle". [`FjallEngine::flush_and_wait`]
//! seals the memtable and waits for its flush (`rotate_memtable_and_wait`), then polls the
//! database's counters until no flush is queued, no memtable is sealed and no compaction runs,
//! with no compaction completed, for [`QUIET_POLLS`] polls in a row; the benchmark's clock
//! stops at the start of that quiet window.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use fjall::config::CompressionPolicy;
use fjall::{CompressionType, Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{BenchCompression, Engine, EngineSettings};

/// Consecutive idle polls that count as "background work is done".
const QUIET_POLLS: u32 = 5;
/// Time between polls.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// fjall behind the [`Engine`] trait.
pub(super) struct FjallEngine {
    db: Database,
    keyspace: Keyspace,
    sync: bool,
}

impl std::fmt::Debug for FjallEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallEngine")
            .field("sync", &self.sync)
            .finish_non_exhaustive()
    }
}

fn compression(c: BenchCompression) -> CompressionType {
    match c {
        BenchCompression::None => CompressionType::None,
        BenchCompression::Lz4 => CompressionType::Lz4,
    }
}

impl FjallEngine {
    pub(super) fn open(path: &Path, settings: &EngineSettings) -> Result<FjallEngine> {
        let db = Database::builder(path)
            .cache_size(settings.block_cache_bytes)
            .journal_compression(compression(settings.compression))
            .open()
            .with_context(|| format!("opening fjall at {}", path.display()))?;
        let memtable = settings.memtable_bytes;
        let data_compression = compression(settings.compression);
        let keyspace = db
            .keyspace("bench", || {
                KeyspaceCreateOptions::default()
                    .max_memtable_size(memtable)
                    .data_block_compression_policy(CompressionPolicy::all(data_compression))
            })
            .context("opening fjall keyspace")?;
        Ok(FjallEngine {
            db,
            keyspace,
            sync: settings.sync,
        })
    }

    pub(super) fn describe(settings: &EngineSettings) -> String {
        let c = compression(settings.compression);
        format!(
            "fjall 3.1: Database::builder(dir).cache_size({}).journal_compression({c}) \
             (worker threads: fjall default = min(cores, 4)), keyspace \"bench\" with \
             KeyspaceCreateOptions::default().max_memtable_size({}).\
             data_block_compression_policy(all({c})); other options default (leveled \
             compaction, 4 KiB blocks, bloom filters); writes: {}",
            settings.block_cache_bytes,
            settings.memtable_bytes,
            if settings.sync {
                "one-entry batch committed with PersistMode::SyncData"
            } else {
                "Keyspace::insert (PersistMode::Buffer: to the OS, no fsync)"
            }
        )
    }

    fn is_busy(&self) -> bool {
        self.db.outstanding_flushes() > 0
            || self.keyspace.sealed_memtable_count() > 0
            || self.db.active_compactions() > 0
    }
}

impl Engine for FjallEngine {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        if self.sync {
            let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
            batch.insert(&self.keyspace, key, value);
            batch.commit()?;
        } else {
            self.keyspace.insert(key, value)?;
        }
        Ok(())
    }

    fn get(&mut self, key: &[u8]) -> Result<Option<usize>> {
        Ok(self.keyspace.get(key)?.map(|v| v.len()))
    }

    fn scan(
        &mut self,
        start: Option<&[u8]>,
        limit: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<usize> {
        let iter = match start {
            Some(start) => self.keyspace.range(start..),
            None => self.keyspace.iter(),
        };
        let mut n = 0;
        for guard in iter.take(limit) {
            let (k, v) = guard.into_inner()?;
            visit(&k, &v);
            n += 1;
        }
        Ok(n)
    }

    fn flush_and_wait(&mut self) -> Result<Instant> {
        self.keyspace.rotate_memtable_and_wait()?;
        let mut quiet_since: Option<Instant> = None;
        let mut quiet_polls = 0;
        let mut completed = self.db.compactions_completed();
        loop {
            let now_completed = self.db.compactions_completed();
            if self.is_busy() || now_completed != completed {
                completed = now_completed;
                quiet_since = None;
                quiet_polls = 0;
            } else {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                quiet_polls += 1;
                if quiet_polls >= QUIET_POLLS {
                    return Ok(since);
                }
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn close(self: Box<Self>) -> Result<()> {
        let FjallEngine { db, keyspace, .. } = *self;
        db.persist(PersistMode::SyncAll)?;
        drop(keyspace);
        drop(db);
        Ok(())
    }
}
