//! Engine statistics: the amplification figures and the counters behind them.
//!
//! Counters are relaxed atomics bumped on the hot paths; [`Stats`] is a point-in-time copy
//! with the derived figures. The metrics endpoint of a later milestone reads `Db::stats()`.
//!
//! - **Write amplification** = bytes written to SSTables by flushes and compactions, divided
//!   by the key and value bytes callers wrote. WAL bytes are reported separately
//!   (`wal_bytes_written`) and not included, as is customary for LSM write amplification.
//! - **Read amplification** = SSTables probed per `get` that reached the SSTables, with the
//!   bloom filter's saves reported beside it.
//! - **Space amplification** = bytes of all SSTables divided by the bytes of the last level
//!   (leveled) or of the largest run (size-tiered): an estimate of total/live that needs no
//!   scan, the same one RocksDB reports.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, shared by the engine's threads.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub user_bytes_written: AtomicU64,
    pub wal_bytes_written: AtomicU64,
    pub wal_syncs: AtomicU64,
    pub batches_written: AtomicU64,
    pub write_groups: AtomicU64,
    pub flush_bytes_written: AtomicU64,
    pub flushes: AtomicU64,
    pub compaction_bytes_read: AtomicU64,
    pub compaction_bytes_written: AtomicU64,
    pub compactions: AtomicU64,
    pub trivial_moves: AtomicU64,
    pub files_dropped: AtomicU64,
    pub gets: AtomicU64,
    pub gets_from_tables: AtomicU64,
    pub table_probes: AtomicU64,
    pub bloom_filtered: AtomicU64,
    pub prefix_reads: AtomicU64,
    pub prefix_table_checks: AtomicU64,
    pub prefix_bloom_filtered: AtomicU64,
    pub write_stalls: AtomicU64,
    pub write_stall_micros: AtomicU64,
    pub background_errors: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Size of one level.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LevelStats {
    /// Number of SSTables.
    pub files: usize,
    /// Bytes of SSTables.
    pub bytes: u64,
    /// Compaction score (>= 1 means due for compaction).
    pub score: f64,
}

/// A point-in-time copy of the engine's statistics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Key and value bytes written by callers.
    pub user_bytes_written: u64,
    /// Bytes appended to the WAL.
    pub wal_bytes_written: u64,
    /// WAL fsyncs (one per group commit that asked for sync).
    pub wal_syncs: u64,
    /// Write batches committed.
    pub batches_written: u64,
    /// Group commits (each covers one or more batches).
    pub write_groups: u64,
    /// SSTable bytes written by flushes.
    pub flush_bytes_written: u64,
    /// Memtable flushes.
    pub flushes: u64,
    /// SSTable bytes read by compactions.
    pub compaction_bytes_read: u64,
    /// SSTable bytes written by compactions.
    pub compaction_bytes_written: u64,
    /// Merging compactions run.
    pub compactions: u64,
    /// Files moved down a level without rewriting.
    pub trivial_moves: u64,
    /// Files deleted whole because a range tombstone covered them.
    pub files_dropped: u64,
    /// Point reads.
    pub gets: u64,
    /// Point reads that had to look at SSTables.
    pub gets_from_tables: u64,
    /// SSTables whose bloom filter was consulted by point reads.
    pub table_probes: u64,
    /// Probes the bloom filter answered "absent" (no block read).
    pub bloom_filtered: u64,
    /// Prefix-bounded iterators built ([`super::Db::prefix_iter`]).
    pub prefix_reads: u64,
    /// SSTables whose key range overlapped a prefix read's range, so their prefix filter
    /// was consulted.
    pub prefix_table_checks: u64,
    /// Of those, tables the prefix filter ruled out (never read).
    pub prefix_bloom_filtered: u64,
    /// Block cache hits.
    pub block_cache_hits: u64,
    /// Block cache misses.
    pub block_cache_misses: u64,
    /// Bytes held by the block cache.
    pub block_cache_usage: u64,
    /// Times a writer was slowed or stopped by back-pressure.
    pub write_stalls: u64,
    /// Total time writers spent stalled, in microseconds.
    pub write_stall_micros: u64,
    /// Background flush or compaction failures.
    pub background_errors: u64,
    /// Per-level sizes (level 0 holds the sorted runs under size-tiered compaction).
    pub levels: Vec<LevelStats>,
    /// Bytes of all SSTables.
    pub total_sst_bytes: u64,
    /// Bytes held by memtables (active and immutable).
    pub memtable_bytes: u64,
    /// Immutable memtables waiting for flush.
    pub immutable_memtables: usize,
    /// Estimate of live data: the last level (leveled) or the largest run (size-tiered).
    pub live_bytes_estimate: u64,
}

impl Stats {
    /// SSTable bytes written per byte written by callers.
    pub fn write_amplification(&self) -> f64 {
        if self.user_bytes_written == 0 {
            return 0.0;
        }
        (self.flush_bytes_written + self.compaction_bytes_written) as f64
            / self.user_bytes_written as f64
    }

    /// SSTables probed per point read that reached the SSTables.
    pub fn read_amplification(&self) -> f64 {
        if self.gets_from_tables == 0 {
            return 0.0;
        }
        self.table_probes as f64 / self.gets_from_tables as f64
    }

    /// Fraction of probes the bloom filter saved.
    pub fn bloom_filter_rate(&self) -> f64 {
        if self.table_probes == 0 {
            return 0.0;
        }
        self.bloom_filtered as f64 / self.table_probes as f64
    }

    /// Estimated total/live bytes (see the module comment).
    pub fn space_amplification(&self) -> f64 {
        let base = self.live_bytes_estimate;
        if base == 0 {
            return if self.total_sst_bytes == 0 { 1.0 } else { 0.0 };
        }
        self.total_sst_bytes as f64 / base as f64
    }
}
