//! Engine configuration.
//!
//! Defaults suit a storage node with a few GiB of memory; tests shrink the sizes so that
//! flushes and compactions happen after a few kilobytes.

use std::sync::Arc;

use super::compaction::CompactionFilter;
use super::prefix::SharedPrefixExtractor;

/// How SSTables are merged in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompactionStyle {
    /// Levels of non-overlapping files, each ~`level_size_multiplier` times the previous:
    /// low space and read amplification, more write amplification. The default.
    #[default]
    Leveled,
    /// Sorted runs merged when enough of similar size accumulate: low write amplification,
    /// more space and read amplification.
    SizeTiered,
}

/// Block compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Blocks stored as is.
    #[default]
    None,
    /// LZ4 block compression (kept only when it saves at least 1/8 of the block).
    Lz4,
}

/// Options for [`super::Db::open`].
#[derive(Clone)]
pub struct Options {
    /// Create the directory and an empty database if none exists.
    pub create_if_missing: bool,
    /// Write a WAL so unflushed writes survive a crash. With it off no write is logged;
    /// with it on, a single write can still skip it ([`WriteOptions::disable_wal`]), as
    /// replicated shards do, replaying their Raft log instead.
    pub wal: bool,
    /// Size at which the active memtable becomes immutable and is flushed.
    pub memtable_size: usize,
    /// Immutable memtables allowed to wait for flush before writes stall.
    pub max_immutable_memtables: usize,
    /// Target size of a data block before compression.
    pub block_size: usize,
    /// Entries between restart points inside a data block.
    pub block_restart_interval: usize,
    /// Bloom filter bits per key (0 disables filters).
    pub bloom_bits_per_key: usize,
    /// Block compression.
    pub compression: Compression,
    /// Capacity of the shared block cache in bytes.
    pub block_cache_bytes: usize,
    /// SSTables kept open (file handle, index and filter in memory) at once.
    pub max_open_tables: usize,
    /// Leveled or size-tiered compaction.
    pub compaction_style: CompactionStyle,
    /// Number of L0 files that triggers an L0 compaction (leveled) or the number of sorted
    /// runs that triggers a merge (size-tiered).
    pub level0_compaction_trigger: usize,
    /// Number of L0 files (or runs) at which writes are slowed down.
    pub level0_slowdown_trigger: usize,
    /// Number of L0 files (or runs) at which writes stop until compaction catches up.
    pub level0_stop_trigger: usize,
    /// Target total size of level 1.
    pub level1_size: u64,
    /// Each level is this many times larger than the one above.
    pub level_size_multiplier: u64,
    /// Number of levels (leveled compaction).
    pub num_levels: usize,
    /// Target size of an SSTable written by compaction.
    pub target_file_size: u64,
    /// Size-tiered: runs whose sizes are within this percentage of each other are merged.
    pub size_tiered_ratio_percent: u64,
    /// Hook that can drop entries during compaction (MVCC garbage collection).
    pub compaction_filter: Option<Arc<dyn CompactionFilter>>,
    /// Where the versioned part of a key starts, per family: tables then carry a prefix
    /// bloom filter and [`super::Db::prefix_iter`] skips tables that lack the prefix.
    pub prefix_extractor: Option<SharedPrefixExtractor>,
    /// Run flushes and compactions on background threads. Tests can turn this off and drive
    /// them with `flush` and `compact_range`.
    pub background_work: bool,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("wal", &self.wal)
            .field("memtable_size", &self.memtable_size)
            .field("block_size", &self.block_size)
            .field("compression", &self.compression)
            .field("block_cache_bytes", &self.block_cache_bytes)
            .field("compaction_style", &self.compaction_style)
            .field("compaction_filter", &self.compaction_filter.is_some())
            .field(
                "prefix_extractor",
                &self.prefix_extractor.as_ref().map(|e| e.name().to_string()),
            )
            .finish_non_exhaustive()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            create_if_missing: true,
            wal: true,
            memtable_size: 64 << 20,
            max_immutable_memtables: 2,
            block_size: 4096,
            block_restart_interval: 16,
            bloom_bits_per_key: 10,
            compression: Compression::None,
            block_cache_bytes: 64 << 20,
            max_open_tables: 1000,
            compaction_style: CompactionStyle::Leveled,
            level0_compaction_trigger: 4,
            level0_slowdown_trigger: 20,
            level0_stop_trigger: 36,
            level1_size: 256 << 20,
            level_size_multiplier: 10,
            num_levels: 7,
            target_file_size: 64 << 20,
            size_tiered_ratio_percent: 100,
            compaction_filter: None,
            prefix_extractor: None,
            background_work: true,
        }
    }
}

impl Options {
    /// Small sizes so that tests exercise flushes, compactions and many levels quickly.
    pub fn small_for_tests() -> Options {
        Options {
            memtable_size: 4 << 10,
            block_size: 256,
            block_restart_interval: 4,
            block_cache_bytes: 64 << 10,
            max_open_tables: 8,
            level0_compaction_trigger: 2,
            level0_slowdown_trigger: 8,
            level0_stop_trigger: 12,
            level1_size: 16 << 10,
            level_size_multiplier: 4,
            num_levels: 4,
            target_file_size: 8 << 10,
            ..Options::default()
        }
    }
}

/// Options for a write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// fsync the WAL before acknowledging. Concurrent writers share one fsync.
    pub sync: bool,
    /// Do not log the batch in the WAL: it is visible at once and durable only once the
    /// memtable holding it is flushed ([`super::Db::flushed_seq`] says how far that is). A
    /// crash loses exactly the unlogged batches no flush covered; logged batches around them
    /// survive. For replicated shards, whose Raft log replays what a crash lost. Cannot be
    /// combined with `sync`.
    pub disable_wal: bool,
}

impl WriteOptions {
    /// A write logged in the WAL and fsynced before it is acknowledged.
    pub const fn synced() -> WriteOptions {
        WriteOptions {
            sync: true,
            disable_wal: false,
        }
    }

    /// A write that skips the WAL (see [`WriteOptions::disable_wal`]).
    pub const fn unlogged() -> WriteOptions {
        WriteOptions {
            sync: false,
            disable_wal: true,
        }
    }
}

/// Options for reads and iterators.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Read at this snapshot instead of the latest state.
    pub snapshot: Option<super::key::SeqNo>,
    /// Keep blocks read by this operation out of the block cache (for scans).
    pub fill_cache: Option<bool>,
}
