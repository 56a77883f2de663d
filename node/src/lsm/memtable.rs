//! The memtable: recent writes in a concurrent skiplist.
//!
//! Entries are keyed by internal key (engine key + sequence/kind trailer), so every version
//! of a key is kept and a read at a snapshot finds the newest version at or below it with
//! one `lower_bound`. Writers insert without a lock (the skiplist is lock-free); the engine's
//! write path guarantees that a batch becomes visible only after all its entries are in.
//! Range tombstones not yet flushed sit beside the skiplist in a small list.
//!
//! When the memtable reaches its size budget it is frozen (made immutable), a new one takes
//! its place, and a background flush writes it to an L0 SSTable.

use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_skiplist::SkipMap;
use parking_lot::RwLock;

use super::error::Result;
use super::iterator::{InternalIterator, VecIterator};
use super::key::{
    internal_key, kind_of, seek_key, seq_of, user_part, ColumnFamily, InternalKey, SeqNo,
    ValueKind, TRAILER_LEN,
};
use super::range_del::RangeTombstone;

/// Per-entry overhead counted against the memtable budget (skiplist node, pointers).
const ENTRY_OVERHEAD: usize = 48;

/// The newest version of a key found in a memtable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemGet {
    /// Sequence number of the version.
    pub seq: SeqNo,
    /// Put or Delete.
    pub kind: ValueKind,
    /// The value (empty for deletes).
    pub value: Bytes,
}

/// A sorted in-memory table of recent writes.
#[derive(Debug)]
pub struct Memtable {
    map: SkipMap<InternalKey, Bytes>,
    range_dels: RwLock<Vec<RangeTombstone>>,
    size: AtomicUsize,
    /// Number of the WAL file holding this memtable's writes (0 without a WAL).
    wal_number: u64,
    smallest_seq: AtomicU64,
    largest_seq: AtomicU64,
}

impl Memtable {
    /// An empty memtable whose writes are logged in WAL `wal_number`.
    pub fn new(wal_number: u64) -> Self {
        Memtable {
            map: SkipMap::new(),
            range_dels: RwLock::new(Vec::new()),
            size: AtomicUsize::new(0),
            wal_number,
            smallest_seq: AtomicU64::new(u64::MAX),
            largest_seq: AtomicU64::new(0),
        }
    }

    /// The WAL file this memtable's writes are in.
    pub fn wal_number(&self) -> u64 {
        self.wal_number
    }

    fn note_seq(&self, seq: SeqNo) {
        self.smallest_seq.fetch_min(seq, Ordering::Relaxed);
        self.largest_seq.fetch_max(seq, Ordering::Relaxed);
    }

    /// Inserts one version of `key` of `cf`, building the internal key in one allocation.
    pub fn insert_cf(
        &self,
        cf: ColumnFamily,
        key: &[u8],
        seq: SeqNo,
        kind: ValueKind,
        value: &[u8],
    ) {
        let mut ikey = Vec::with_capacity(key.len() + 1 + TRAILER_LEN);
        ikey.push(cf.id());
        ikey.extend_from_slice(key);
        ikey.extend_from_slice(&((seq << 8) | kind as u64).to_le_bytes());
        self.size
            .fetch_add(ikey.len() + value.len() + ENTRY_OVERHEAD, Ordering::Relaxed);
        self.note_seq(seq);
        self.map.insert(
            InternalKey(Bytes::from(ikey)),
            Bytes::copy_from_slice(value),
        );
    }

    /// Inserts one version.
    pub fn insert(&self, engine_key: &[u8], seq: SeqNo, kind: ValueKind, value: &[u8]) {
        let ikey = internal_key(engine_key, seq, kind);
        self.size
            .fetch_add(ikey.len() + value.len() + ENTRY_OVERHEAD, Ordering::Relaxed);
        self.note_seq(seq);
        self.map.insert(
            InternalKey(Bytes::from(ikey)),
            Bytes::copy_from_slice(value),
        );
    }

    /// Records a range deletion.
    pub fn add_range_del(&self, tombstone: RangeTombstone) {
        self.size.fetch_add(
            tombstone.start.len() + tombstone.end.len() + ENTRY_OVERHEAD,
            Ordering::Relaxed,
        );
        self.note_seq(tombstone.seq);
        self.range_dels.write().push(tombstone);
    }

    /// The range deletions recorded here.
    pub fn range_dels(&self) -> Vec<RangeTombstone> {
        self.range_dels.read().clone()
    }

    /// Whether any range deletion is recorded here.
    pub fn has_range_dels(&self) -> bool {
        !self.range_dels.read().is_empty()
    }

    /// The newest version of `engine_key` with sequence `<= snapshot`.
    pub fn get(&self, engine_key: &[u8], snapshot: SeqNo) -> Option<MemGet> {
        let target = InternalKey(Bytes::from(seek_key(engine_key, snapshot)));
        let entry = self.map.lower_bound(Bound::Included(&target))?;
        let ikey = &entry.key().0;
        if user_part(ikey) != engine_key {
            return None;
        }
        Some(MemGet {
            seq: seq_of(ikey),
            kind: kind_of(ikey)?,
            value: entry.value().clone(),
        })
    }

    /// Approximate memory used, in bytes.
    pub fn approximate_size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty() && self.range_dels.read().is_empty()
    }

    /// Number of point entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Smallest and largest sequence numbers written, if any.
    pub fn seq_range(&self) -> Option<(SeqNo, SeqNo)> {
        let lo = self.smallest_seq.load(Ordering::Relaxed);
        (lo != u64::MAX).then(|| (lo, self.largest_seq.load(Ordering::Relaxed)))
    }

    /// A sorted copy of the point entries (keys and values are reference counted, so this
    /// copies no data). Flushes read a frozen memtable through it: each step is O(1) instead
    /// of a skiplist search.
    pub fn frozen_iter(&self) -> VecIterator<Bytes, Bytes> {
        VecIterator::new(
            self.map
                .iter()
                .map(|e| (e.key().0.clone(), e.value().clone()))
                .collect(),
        )
    }

    /// An iterator over the point entries.
    pub fn iter(self: &Arc<Self>) -> MemtableIterator {
        MemtableIterator {
            table: Arc::clone(self),
            current: None,
        }
    }
}

/// Iterator over a memtable. It holds the current key and re-finds its neighbour in the
/// skiplist on each step (a skiplist entry cannot outlive a borrow of the map), which costs a
/// logarithmic search per step but keeps the code free of unsafe lifetimes.
#[derive(Debug)]
pub struct MemtableIterator {
    table: Arc<Memtable>,
    current: Option<(InternalKey, Bytes)>,
}

impl MemtableIterator {
    fn set(&mut self, entry: Option<crossbeam_skiplist::map::Entry<'_, InternalKey, Bytes>>) {
        self.current = entry.map(|e| (e.key().clone(), e.value().clone()));
    }
}

impl InternalIterator for MemtableIterator {
    fn valid(&self) -> bool {
        self.current.is_some()
    }
    fn key(&self) -> &[u8] {
        self.current.as_ref().map_or(&[], |(k, _)| &k.0)
    }
    fn value(&self) -> &[u8] {
        self.current.as_ref().map_or(&[], |(_, v)| v)
    }
    fn seek_to_first(&mut self) -> Result<()> {
        let table = Arc::clone(&self.table);
        self.set(table.map.front());
        Ok(())
    }
    fn seek_to_last(&mut self) -> Result<()> {
        let table = Arc::clone(&self.table);
        self.set(table.map.back());
        Ok(())
    }
    fn seek(&mut self, target: &[u8]) -> Result<()> {
        let table = Arc::clone(&self.table);
        let t = InternalKey(Bytes::copy_from_slice(target));
        self.set(table.map.lower_bound(Bound::Included(&t)));
        Ok(())
    }
    fn seek_for_prev(&mut self, target: &[u8]) -> Result<()> {
        let table = Arc::clone(&self.table);
        let t = InternalKey(Bytes::copy_from_slice(target));
        self.set(table.map.upper_bound(Bound::Included(&t)));
        Ok(())
    }
    fn next(&mut self) -> Result<()> {
        if let Some((k, _)) = self.current.take() {
            let table = Arc::clone(&self.table);
            self.set(table.map.lower_bound(Bound::Excluded(&k)));
        }
        Ok(())
    }
    fn prev(&mut self) -> Result<()> {
        if let Some((k, _)) = self.current.take() {
            let table = Arc::clone(&self.table);
            self.set(table.map.upper_bound(Bound::Excluded(&k)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_sees_newest_visible_version() {
        let m = Memtable::new(1);
        m.insert(b"\0k", 1, ValueKind::Put, b"v1");
        m.insert(b"\0k", 5, ValueKind::Put, b"v5");
        m.insert(b"\0k", 7, ValueKind::Delete, b"");
        m.insert(b"\0kk", 3, ValueKind::Put, b"other");
        assert_eq!(m.get(b"\0k", 0), None);
        assert_eq!(m.get(b"\0k", 4).unwrap().value, Bytes::from_static(b"v1"));
        assert_eq!(m.get(b"\0k", 6).unwrap().value, Bytes::from_static(b"v5"));
        assert_eq!(m.get(b"\0k", 9).unwrap().kind, ValueKind::Delete);
        assert_eq!(m.get(b"\0j", 9), None);
        assert_eq!(m.seq_range(), Some((1, 7)));
    }

    #[test]
    fn iterates_both_ways() {
        let m = Arc::new(Memtable::new(1));
        for (i, k) in ["a", "b", "c"].iter().enumerate() {
            m.insert(k.as_bytes(), i as u64 + 1, ValueKind::Put, b"v");
        }
        let mut it = m.iter();
        it.seek_to_first().unwrap();
        let mut fwd = Vec::new();
        while it.valid() {
            fwd.push(user_part(it.key()).to_vec());
            it.next().unwrap();
        }
        assert_eq!(fwd, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        it.seek_to_last().unwrap();
        it.prev().unwrap();
        assert_eq!(user_part(it.key()), b"b");
        it.seek_for_prev(&seek_key(b"b", 0)).unwrap();
        assert_eq!(user_part(it.key()), b"b");
    }
}
