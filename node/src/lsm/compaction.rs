//! Compaction: the filter hook, and (in the rest of this module) the policies and the merge.

use super::key::ColumnFamily;

/// What a [`CompactionFilter`] decides for an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterDecision {
    /// Keep the entry.
    Keep,
    /// Drop the entry (older versions of the same key are dropped with it).
    Remove,
}

/// A hook that sees every value a compaction rewrites and may drop it. MVCC garbage
/// collection plugs in here: it drops versions older than the GC safe point.
///
/// The filter only sees entries that no open snapshot can read, so dropping one never
/// changes what a snapshot sees. It must be deterministic for a given key and value within
/// one compaction, and cheap: it runs on the compaction thread for every entry.
pub trait CompactionFilter: Send + Sync {
    /// Decides whether to keep `key` (without its column family prefix) with `value`.
    fn filter(&self, cf: ColumnFamily, key: &[u8], value: &[u8]) -> FilterDecision;
}
