//! Range tombstones.
//!
//! A range deletion `[start, end)` at sequence `seq` hides every version of every key in the
//! range whose sequence is below `seq`. Strata keeps range tombstones *beside* the point data
//! rather than inside SSTables: the active memtable holds the ones not yet flushed, and the
//! version (persisted in the manifest) holds the flushed ones. Range deletions in Strata are
//! coarse and rare (dropping a shard replica's data, clearing a key range), so the set stays
//! small; keeping it out of the SSTables means files never need range-tombstone clipping and
//! level boundaries stay exact.
//!
//! Compaction drops entries a tombstone covers (when no snapshot can still see them) and
//! removes whole files that a tombstone covers entirely; a flushed tombstone is retired from
//! the version once no SSTable overlapping its range holds an entry older than it.
//!
//! For reads, [`TombstoneSet`] fragments the tombstones visible at a snapshot into
//! non-overlapping pieces, each knowing the newest sequence covering it, so "is this version
//! deleted?" is one binary search.

use std::sync::Arc;

use super::coding::{put_length_prefixed, put_varint, Decoder};
use super::key::SeqNo;

/// A deletion of every engine key in `[start, end)` older than `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeTombstone {
    /// First engine key deleted.
    pub start: Vec<u8>,
    /// First engine key not deleted.
    pub end: Vec<u8>,
    /// Sequence number of the deletion.
    pub seq: SeqNo,
}

impl RangeTombstone {
    /// Whether the tombstone covers `engine_key`.
    pub fn contains(&self, engine_key: &[u8]) -> bool {
        self.start.as_slice() <= engine_key && engine_key < self.end.as_slice()
    }

    /// Whether `[start, end]` (inclusive engine keys) intersects the tombstone.
    pub fn overlaps(&self, start: &[u8], end_inclusive: &[u8]) -> bool {
        self.start.as_slice() <= end_inclusive && start < self.end.as_slice()
    }

    /// Appends the encoding (seq varint, start, end length-prefixed).
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        put_varint(buf, self.seq);
        put_length_prefixed(buf, &self.start);
        put_length_prefixed(buf, &self.end);
    }

    /// Decodes one tombstone.
    pub fn decode_from(d: &mut Decoder<'_>) -> Option<RangeTombstone> {
        let seq = d.varint()?;
        let start = d.length_prefixed()?.to_vec();
        let end = d.length_prefixed()?.to_vec();
        Some(RangeTombstone { start, end, seq })
    }
}

/// The tombstones visible at one snapshot, fragmented for fast lookups.
#[derive(Debug, Clone, Default)]
pub struct TombstoneSet {
    /// Fragment start keys, ascending; fragment `i` is `[starts[i], ends[i])`.
    starts: Vec<Vec<u8>>,
    ends: Vec<Vec<u8>>,
    /// Newest sequence number covering fragment `i`.
    seqs: Vec<SeqNo>,
}

impl TombstoneSet {
    /// Builds the set from tombstones, keeping those with `seq <= snapshot`.
    pub fn new<'a>(
        tombstones: impl IntoIterator<Item = &'a RangeTombstone>,
        snapshot: SeqNo,
    ) -> Self {
        let visible: Vec<&RangeTombstone> = tombstones
            .into_iter()
            .filter(|t| t.seq <= snapshot && t.start < t.end)
            .collect();
        if visible.is_empty() {
            return TombstoneSet::default();
        }
        let mut bounds: Vec<&[u8]> = visible
            .iter()
            .flat_map(|t| [t.start.as_slice(), t.end.as_slice()])
            .collect();
        bounds.sort_unstable();
        bounds.dedup();
        let mut set = TombstoneSet::default();
        for w in bounds.windows(2) {
            let (lo, hi) = (w[0], w[1]);
            let newest = visible
                .iter()
                .filter(|t| t.start.as_slice() <= lo && hi <= t.end.as_slice())
                .map(|t| t.seq)
                .max();
            if let Some(seq) = newest {
                // Merge with the previous fragment when contiguous and equal, to keep it small.
                if set.ends.last().map(|e| e.as_slice()) == Some(lo)
                    && set.seqs.last() == Some(&seq)
                {
                    if let Some(last) = set.ends.last_mut() {
                        *last = hi.to_vec();
                    }
                    continue;
                }
                set.starts.push(lo.to_vec());
                set.ends.push(hi.to_vec());
                set.seqs.push(seq);
            }
        }
        set
    }

    /// Whether the set holds no tombstones.
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// The newest tombstone sequence covering `engine_key`, if any.
    pub fn covering_seq(&self, engine_key: &[u8]) -> Option<SeqNo> {
        if self.seqs.is_empty() {
            return None;
        }
        let i = self
            .starts
            .partition_point(|s| s.as_slice() <= engine_key)
            .checked_sub(1)?;
        (engine_key < self.ends[i].as_slice()).then_some(self.seqs[i])
    }

    /// Whether a version of `engine_key` at `seq` is deleted by a tombstone of the set.
    pub fn covers(&self, engine_key: &[u8], seq: SeqNo) -> bool {
        self.covering_seq(engine_key).is_some_and(|t| t > seq)
    }
}

/// Shared, immutable list of tombstones (cheap to clone into versions and memtable views).
pub type TombstoneList = Arc<Vec<RangeTombstone>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn t(start: &str, end: &str, seq: SeqNo) -> RangeTombstone {
        RangeTombstone {
            start: start.into(),
            end: end.into(),
            seq,
        }
    }

    #[test]
    fn fragments_answer_newest_covering_seq() {
        let ts = [t("b", "f", 10), t("d", "h", 20), t("x", "y", 5)];
        let set = TombstoneSet::new(&ts, 100);
        assert_eq!(set.covering_seq(b"a"), None);
        assert_eq!(set.covering_seq(b"b"), Some(10));
        assert_eq!(set.covering_seq(b"d"), Some(20));
        assert_eq!(set.covering_seq(b"g"), Some(20));
        assert_eq!(set.covering_seq(b"h"), None);
        assert_eq!(set.covering_seq(b"x"), Some(5));
        assert!(set.covers(b"c", 9));
        assert!(!set.covers(b"c", 10));

        // At snapshot 15, the newer tombstone is invisible.
        let set = TombstoneSet::new(&ts, 15);
        assert_eq!(set.covering_seq(b"g"), None);
        assert_eq!(set.covering_seq(b"e"), Some(10));
    }

    #[test]
    fn matches_brute_force() {
        use proptest::prelude::*;
        proptest!(|(raw in proptest::collection::vec((0u8..20, 0u8..20, 1u64..50), 0..12), probe in 0u8..22, snap in 0u64..60)| {
            let ts: Vec<_> = raw.iter().map(|(a, b, s)| RangeTombstone { start: vec![*a], end: vec![*b], seq: *s }).collect();
            let set = TombstoneSet::new(&ts, snap);
            let expect = ts.iter().filter(|t| t.seq <= snap && t.contains(&[probe])).map(|t| t.seq).max();
            prop_assert_eq!(set.covering_seq(&[probe]), expect);
        });
    }
}
