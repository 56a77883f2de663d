//! The memtable: recent writes in a concurrent skiplist.
//!
//! Entries are keyed by internal key (engine key + sequence/kind trailer), so every version
//! of a key is kept and a read at a snapshot finds the newest version at or below it with
//! one `lower_bound`. Writers insert without a lock (the skiplist is lock-free); the engine's
//! write path guarantees that a batch becomes visible only after all its entries are in.
//! Range tombstones not yet flushed sit beside the skiplist in a small list.
//!
//! Each entry is one allocation holding the internal key followed by the value
//! ([`MemKey`]). The skiplist node also carries the first 24 bytes of the engine key as three
//! integers, so most comparisons during a search are decided from the node itself without
//! following a pointer to the key bytes: random inserts are bound by those cache misses.
//!
//! When the memtable reaches its size budget it is frozen (made immutable), a new one takes
//! its place, and a background flush writes it to an L0 SSTable.

use std::cmp::Ordering as CmpOrdering;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_skiplist::SkipMap;
use parking_lot::RwLock;

use super::error::Result;
use super::iterator::InternalIterator;
use super::key::{
    compare_internal, kind_of, seek_key, seq_of, user_part, ColumnFamily, SeqNo, ValueKind,
    TRAILER_LEN,
};
use super::range_del::RangeTombstone;

/// Per-entry overhead counted against the memtable budget (skiplist node, pointers).
const ENTRY_OVERHEAD: usize = 64;

/// Words of the engine key kept in the skiplist node: 24 bytes cover the family byte and a
/// 23-byte key, so typical keys compare without touching their buffers.
const PREFIX_WORDS: usize = 3;

/// A memtable entry: the internal key and the value in one buffer, plus the first 24 bytes
/// of the engine key (zero padded, big endian) for cheap comparisons.
#[derive(Debug, Clone)]
pub struct MemKey {
    prefix: [u64; PREFIX_WORDS],
    data: Bytes,
    key_len: u32,
}

impl MemKey {
    fn new(data: Vec<u8>, key_len: usize) -> MemKey {
        let prefix = prefix_of(user_part(&data[..key_len]));
        MemKey {
            prefix,
            data: Bytes::from(data),
            key_len: key_len as u32,
        }
    }

    /// A search target for an internal key.
    fn target(ikey: &[u8]) -> MemKey {
        MemKey::new(ikey.to_vec(), ikey.len())
    }

    /// The internal key.
    pub fn ikey(&self) -> &[u8] {
        &self.data[..self.key_len as usize]
    }

    /// The value.
    pub fn value(&self) -> &[u8] {
        &self.data[self.key_len as usize..]
    }
}

fn prefix_of(engine_key: &[u8]) -> [u64; PREFIX_WORDS] {
    let mut buf = [0u8; PREFIX_WORDS * 8];
    let n = engine_key.len().min(buf.len());
    buf[..n].copy_from_slice(&engine_key[..n]);
    let mut words = [0u64; PREFIX_WORDS];
    for (word, chunk) in words.iter_mut().zip(buf.chunks_exact(8)) {
        *word = u64::from_be_bytes(chunk.try_into().unwrap_or_default());
    }
    words
}

impl PartialEq for MemKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}

impl Eq for MemKey {}

impl Ord for MemKey {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        // Zero padding can make different keys share a prefix, but never orders them wrongly
        // when the prefixes differ, so only ties need the full comparison.
        self.prefix
            .cmp(&other.prefix)
            .then_with(|| compare_internal(self.ikey(), other.ikey()))
    }
}

impl PartialOrd for MemKey {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

/// The newest version of a key found in a memtable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemGet {
    /// Sequence number of the version.
    pub seq: SeqNo,
    /// Put or Delete.
    pub kind: ValueKind,
    /// The value (empty for deletes).
    pub value: Vec<u8>,
}

/// A sorted in-memory table of recent writes.
#[derive(Debug)]
pub struct Memtable {
    map: SkipMap<MemKey, ()>,
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

    fn insert_entry(&self, data: Vec<u8>, key_len: usize, seq: SeqNo) {
        self.size
            .fetch_add(data.len() + ENTRY_OVERHEAD, Ordering::Relaxed);
        self.note_seq(seq);
        self.map.insert(MemKey::new(data, key_len), ());
    }

    /// Inserts one version of `key` of `cf`.
    pub fn insert_cf(
        &self,
        cf: ColumnFamily,
        key: &[u8],
        seq: SeqNo,
        kind: ValueKind,
        value: &[u8],
    ) {
        let key_len = 1 + key.len() + TRAILER_LEN;
        let mut data = Vec::with_capacity(key_len + value.len());
        data.push(cf.id());
        data.extend_from_slice(key);
        data.extend_from_slice(&((seq << 8) | kind as u64).to_le_bytes());
        data.extend_from_slice(value);
        self.insert_entry(data, key_len, seq);
    }

    /// Inserts one version of an engine key.
    pub fn insert(&self, engine_key: &[u8], seq: SeqNo, kind: ValueKind, value: &[u8]) {
        let key_len = engine_key.len() + TRAILER_LEN;
        let mut data = Vec::with_capacity(key_len + value.len());
        data.extend_from_slice(engine_key);
        data.extend_from_slice(&((seq << 8) | kind as u64).to_le_bytes());
        data.extend_from_slice(value);
        self.insert_entry(data, key_len, seq);
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
        let target = MemKey::target(&seek_key(engine_key, snapshot));
        let entry = self.map.lower_bound(Bound::Included(&target))?;
        let found = entry.key();
        let ikey = found.ikey();
        if user_part(ikey) != engine_key {
            return None;
        }
        Some(MemGet {
            seq: seq_of(ikey),
            kind: kind_of(ikey)?,
            value: found.value().to_vec(),
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

    /// An iterator that borrows the memtable. Each step follows a skiplist link (O(1))
    /// instead of searching, which is what a flush wants; readers that must outlive a borrow
    /// use [`Memtable::iter`].
    pub fn borrowed_iter(&self) -> BorrowedIterator<'_> {
        BorrowedIterator {
            table: self,
            current: None,
        }
    }

    /// An iterator over the point entries.
    pub fn iter(self: &Arc<Self>) -> MemtableIterator {
        MemtableIterator {
            table: Arc::clone(self),
            current: None,
        }
    }
}

/// A memtable iterator that borrows the table and steps along skiplist links.
#[derive(Debug)]
pub struct BorrowedIterator<'a> {
    table: &'a Memtable,
    current: Option<crossbeam_skiplist::map::Entry<'a, MemKey, ()>>,
}

impl InternalIterator for BorrowedIterator<'_> {
    fn valid(&self) -> bool {
        self.current.is_some()
    }
    fn key(&self) -> &[u8] {
        self.current.as_ref().map_or(&[], |e| e.key().ikey())
    }
    fn value(&self) -> &[u8] {
        self.current.as_ref().map_or(&[], |e| e.key().value())
    }
    fn seek_to_first(&mut self) -> Result<()> {
        self.current = self.table.map.front();
        Ok(())
    }
    fn seek_to_last(&mut self) -> Result<()> {
        self.current = self.table.map.back();
        Ok(())
    }
    fn seek(&mut self, target: &[u8]) -> Result<()> {
        self.current = self
            .table
            .map
            .lower_bound(Bound::Included(&MemKey::target(target)));
        Ok(())
    }
    fn seek_for_prev(&mut self, target: &[u8]) -> Result<()> {
        self.current = self
            .table
            .map
            .upper_bound(Bound::Included(&MemKey::target(target)));
        Ok(())
    }
    fn next(&mut self) -> Result<()> {
        self.current = self.current.take().and_then(|e| e.next());
        Ok(())
    }
    fn prev(&mut self) -> Result<()> {
        self.current = self.current.take().and_then(|e| e.prev());
        Ok(())
    }
}

/// Iterator over a memtable. It holds the current entry and re-finds its neighbour in the
/// skiplist on each step (a skiplist entry cannot outlive a borrow of the map), which costs a
/// logarithmic search per step but keeps the code free of unsafe lifetimes.
#[derive(Debug)]
pub struct MemtableIterator {
    table: Arc<Memtable>,
    current: Option<MemKey>,
}

impl MemtableIterator {
    fn set(&mut self, entry: Option<crossbeam_skiplist::map::Entry<'_, MemKey, ()>>) {
        self.current = entry.map(|e| e.key().clone());
    }
}

impl InternalIterator for MemtableIterator {
    fn valid(&self) -> bool {
        self.current.is_some()
    }
    fn key(&self) -> &[u8] {
        self.current.as_ref().map_or(&[], |k| k.ikey())
    }
    fn value(&self) -> &[u8] {
        self.current.as_ref().map_or(&[], |k| k.value())
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
        self.set(
            table
                .map
                .lower_bound(Bound::Included(&MemKey::target(target))),
        );
        Ok(())
    }
    fn seek_for_prev(&mut self, target: &[u8]) -> Result<()> {
        let table = Arc::clone(&self.table);
        self.set(
            table
                .map
                .upper_bound(Bound::Included(&MemKey::target(target))),
        );
        Ok(())
    }
    fn next(&mut self) -> Result<()> {
        if let Some(k) = self.current.take() {
            let table = Arc::clone(&self.table);
            self.set(table.map.lower_bound(Bound::Excluded(&k)));
        }
        Ok(())
    }
    fn prev(&mut self) -> Result<()> {
        if let Some(k) = self.current.take() {
            let table = Arc::clone(&self.table);
            self.set(table.map.upper_bound(Bound::Excluded(&k)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn get_sees_newest_visible_version() {
        let m = Memtable::new(1);
        m.insert(b"\0k", 1, ValueKind::Put, b"v1");
        m.insert(b"\0k", 5, ValueKind::Put, b"v5");
        m.insert(b"\0k", 7, ValueKind::Delete, b"");
        m.insert(b"\0kk", 3, ValueKind::Put, b"other");
        assert_eq!(m.get(b"\0k", 0), None);
        assert_eq!(m.get(b"\0k", 4).unwrap().value, b"v1".to_vec());
        assert_eq!(m.get(b"\0k", 6).unwrap().value, b"v5".to_vec());
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
        let check = |it: &mut dyn InternalIterator| {
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
            assert_eq!(it.value(), b"v");
            it.seek_for_prev(&seek_key(b"b", 0)).unwrap();
            assert_eq!(user_part(it.key()), b"b");
            it.seek(&seek_key(b"bb", 9)).unwrap();
            assert_eq!(user_part(it.key()), b"c");
        };
        check(&mut m.iter());
        check(&mut m.borrowed_iter());
    }

    proptest! {
        /// The prefix shortcut orders keys exactly as the internal-key comparator does,
        /// including keys that differ only after byte 16 or by trailing zero bytes.
        #[test]
        fn memkey_order_matches_internal_order(
            a in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), any::<u8>()], 0..32),
            b in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), any::<u8>()], 0..32),
            sa in 0u64..4, sb in 0u64..4,
        ) {
            let ka = super::super::key::internal_key(&a, sa, ValueKind::Put);
            let kb = super::super::key::internal_key(&b, sb, ValueKind::Put);
            let ma = MemKey::new(ka.clone(), ka.len());
            let mb = MemKey::new(kb.clone(), kb.len());
            prop_assert_eq!(ma.cmp(&mb), compare_internal(&ka, &kb));
        }
    }
}
