//! Blocks: the unit an SSTable reads, checksums, compresses and caches.
//!
//! A block is a sorted run of `(key, value)` entries. Keys are prefix-compressed against the
//! previous key; every `restart_interval` entries a *restart point* stores its key in full,
//! so a reader can binary-search the restart points and then scan at most one interval:
//!
//! ```text
//!   +---------+---------+-----+---------+------------+-----+------------+--------------+
//!   | entry 0 | entry 1 | ... | entry n | restart[0] | ... | restart[r] | num_restarts |
//!   +---------+---------+-----+---------+------------+-----+------------+--------------+
//!                                         u32 LE each (entry offsets)    u32 LE
//!
//!   entry := shared: varint | unshared: varint | value_len: varint
//!            | key_delta: [unshared] | value: [value_len]
//!   key    = previous_key[..shared] ++ key_delta          (shared = 0 at a restart point)
//! ```
//!
//! `restart[0]` is always 0 and the offsets strictly increase; an empty block has no restart
//! points and is just `num_restarts = 0`. [`Block::new`] validates the restart array once, so
//! the iterator only has to check each entry it decodes. Keys are internal keys ordered by
//! [`compare_internal`]; data blocks and index blocks share this format (an index entry maps
//! the last key of a data block to that block's handle).
//!
//! Nothing a damaged block contains can make the decoder panic or loop: every malformed
//! field becomes [`Error::Corruption`] naming the file and the block's offset in it.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::coding::{get_varint, put_varint, read_u32};
use super::error::{Error, Result};
use super::iterator::InternalIterator;
use super::key::compare_internal;

/// Builds one block from entries added in increasing key order.
#[derive(Debug, Clone)]
pub struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    restart_interval: usize,
    counter: usize,
    num_entries: usize,
    last_key: Vec<u8>,
}

impl BlockBuilder {
    /// An empty builder that writes a restart point every `restart_interval` entries
    /// (at least 1).
    pub fn new(restart_interval: usize) -> Self {
        BlockBuilder {
            buf: Vec::new(),
            restarts: Vec::new(),
            restart_interval: restart_interval.max(1),
            counter: 0,
            num_entries: 0,
            last_key: Vec::new(),
        }
    }

    /// Appends an entry. `key` must sort after every key added since the last reset.
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        debug_assert!(
            self.num_entries == 0 || compare_internal(&self.last_key, key) == Ordering::Less,
            "block keys must be added in increasing order"
        );
        let shared = if self.num_entries == 0 || self.counter >= self.restart_interval {
            self.restarts.push(self.buf.len() as u32);
            self.counter = 0;
            0
        } else {
            self.last_key
                .iter()
                .zip(key)
                .take_while(|(a, b)| a == b)
                .count()
        };
        let unshared = key.len() - shared;
        put_varint(&mut self.buf, shared as u64);
        put_varint(&mut self.buf, unshared as u64);
        put_varint(&mut self.buf, value.len() as u64);
        self.buf.extend_from_slice(&key[shared..]);
        self.buf.extend_from_slice(value);
        self.last_key.truncate(shared);
        self.last_key.extend_from_slice(&key[shared..]);
        self.counter += 1;
        self.num_entries += 1;
    }

    /// The size the block would have if finished now.
    pub fn estimated_size(&self) -> usize {
        self.buf.len() + 4 * self.restarts.len() + 4
    }

    /// Whether no entry has been added since the last reset.
    pub fn is_empty(&self) -> bool {
        self.num_entries == 0
    }

    /// Entries added since the last reset.
    pub fn num_entries(&self) -> usize {
        self.num_entries
    }

    /// The last key added (empty if none).
    pub fn last_key(&self) -> &[u8] {
        &self.last_key
    }

    /// Appends the restart array and returns the encoded block; the builder is reset and can
    /// build the next block.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        out.reserve(4 * self.restarts.len() + 4);
        for r in &self.restarts {
            out.extend_from_slice(&r.to_le_bytes());
        }
        out.extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        self.reset();
        out
    }

    /// Discards everything added so far.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.restarts.clear();
        self.counter = 0;
        self.num_entries = 0;
        self.last_key.clear();
    }
}

/// A decoded (decompressed, checksum-verified) block with a validated restart array.
pub struct Block {
    data: Vec<u8>,
    /// Offsets of the restart points; all `< data_end`, strictly increasing, first is 0.
    restarts: Vec<u32>,
    /// End of the entries (start of the restart array).
    data_end: usize,
    file: PathBuf,
    offset: u64,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("file", &self.file)
            .field("offset", &self.offset)
            .field("size", &self.data.len())
            .field("restarts", &self.restarts.len())
            .finish()
    }
}

impl Block {
    /// Takes ownership of a block's bytes, validating the restart array. `file` and `offset`
    /// (the block's position in the file) are only used to name the place of any damage.
    pub fn new(data: Vec<u8>, file: &Path, offset: u64) -> Result<Block> {
        let corrupt = |reason: String| Error::corruption(file, offset, reason);
        let len = data.len();
        let Some(num_restarts) = len.checked_sub(4).and_then(|p| read_u32(&data, p)) else {
            return Err(corrupt(format!("block of {len} bytes is too short")));
        };
        let num_restarts = num_restarts as usize;
        let data_end = num_restarts
            .checked_mul(4)
            .and_then(|n| (len - 4).checked_sub(n))
            .ok_or_else(|| {
                corrupt(format!(
                    "block of {len} bytes cannot hold {num_restarts} restart points"
                ))
            })?;
        if num_restarts == 0 && data_end != 0 {
            return Err(corrupt("block has entries but no restart points".into()));
        }
        let mut restarts = Vec::with_capacity(num_restarts);
        for i in 0..num_restarts {
            let r = read_u32(&data, data_end + 4 * i)
                .ok_or_else(|| corrupt("restart array out of bounds".into()))?;
            let ok = if i == 0 {
                r == 0
            } else {
                restarts.last().is_some_and(|&prev| r > prev)
            };
            if !ok || r as usize >= data_end {
                return Err(corrupt(format!("restart point {i} has bad offset {r}")));
            }
            restarts.push(r);
        }
        Ok(Block {
            data,
            restarts,
            data_end,
            file: file.to_path_buf(),
            offset,
        })
    }

    /// The block's size in bytes (what a cache should charge for it).
    pub fn size(&self) -> usize {
        self.data.len()
    }

    /// Whether the block has no entries.
    pub fn is_empty(&self) -> bool {
        self.data_end == 0
    }

    /// The block's offset in its file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// An unpositioned iterator over the block.
    pub fn iter(self: &Arc<Self>) -> BlockIter {
        BlockIter::new(Arc::clone(self))
    }

    fn corruption(&self, pos: usize, reason: &str) -> Error {
        Error::corruption(
            &self.file,
            self.offset,
            format!("{reason} (at byte {pos} of the decoded block)"),
        )
    }

    /// Decodes the entry header at `pos`: `(shared, unshared, value_len, header_len)`, with
    /// the lengths checked to lie inside the entries area.
    fn entry_at(&self, pos: usize) -> Result<Entry> {
        let area = self.data.get(pos..self.data_end).unwrap_or(&[]);
        let mut hdr = 0;
        let mut field = || -> Result<usize> {
            let (v, n) = get_varint(&area[hdr..])
                .ok_or_else(|| self.corruption(pos, "truncated entry header"))?;
            hdr += n;
            usize::try_from(v).map_err(|_| self.corruption(pos, "entry length overflows"))
        };
        let shared = field()?;
        let unshared = field()?;
        let value_len = field()?;
        let key_start = pos + hdr;
        let value_start = key_start
            .checked_add(unshared)
            .ok_or_else(|| self.corruption(pos, "entry length overflows"))?;
        let end = value_start
            .checked_add(value_len)
            .ok_or_else(|| self.corruption(pos, "entry length overflows"))?;
        if end > self.data_end {
            return Err(self.corruption(pos, "entry runs past the end of the block"));
        }
        Ok(Entry {
            shared,
            key_start,
            value_start,
            end,
        })
    }

    /// The full key stored at restart point `i`.
    fn restart_key(&self, i: usize) -> Result<&[u8]> {
        let pos = self.restarts.get(i).copied().unwrap_or(0) as usize;
        let e = self.entry_at(pos)?;
        if e.shared != 0 {
            return Err(self.corruption(pos, "restart point has a shared key prefix"));
        }
        Ok(&self.data[e.key_start..e.value_start])
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    shared: usize,
    key_start: usize,
    value_start: usize,
    end: usize,
}

/// A cursor over one [`Block`], implementing [`InternalIterator`].
///
/// Seeks binary-search the restart points and scan forward; `prev` rescans from the restart
/// point before the current entry (blocks are small, and scans are mostly forward).
#[derive(Debug)]
pub struct BlockIter {
    block: Arc<Block>,
    /// Offset of the current entry.
    current: usize,
    /// Offset just past the current entry.
    next_offset: usize,
    /// The restart interval the current entry belongs to.
    restart_index: usize,
    key: Vec<u8>,
    value: (usize, usize),
    valid: bool,
}

impl BlockIter {
    /// An unpositioned iterator over `block`.
    pub fn new(block: Arc<Block>) -> Self {
        BlockIter {
            block,
            current: 0,
            next_offset: 0,
            restart_index: 0,
            key: Vec::new(),
            value: (0, 0),
            valid: false,
        }
    }

    /// The block this iterator walks.
    pub fn block(&self) -> &Arc<Block> {
        &self.block
    }

    fn seek_to_restart(&mut self, i: usize) {
        self.key.clear();
        self.restart_index = i;
        self.next_offset = self.block.restarts.get(i).copied().unwrap_or(0) as usize;
        self.valid = false;
    }

    /// Decodes the entry at `next_offset`; returns whether there was one.
    fn parse_next(&mut self) -> Result<bool> {
        self.current = self.next_offset;
        if self.current >= self.block.data_end {
            self.valid = false;
            return Ok(false);
        }
        let e = match self.block.entry_at(self.current) {
            Ok(e) => e,
            Err(err) => {
                self.valid = false;
                return Err(err);
            }
        };
        if e.shared > self.key.len() {
            self.valid = false;
            return Err(self.block.corruption(
                self.current,
                "entry shares more bytes than the previous key has",
            ));
        }
        self.key.truncate(e.shared);
        self.key
            .extend_from_slice(&self.block.data[e.key_start..e.value_start]);
        self.value = (e.value_start, e.end);
        self.next_offset = e.end;
        while self
            .block
            .restarts
            .get(self.restart_index + 1)
            .is_some_and(|&r| (r as usize) <= self.current)
        {
            self.restart_index += 1;
        }
        self.valid = true;
        Ok(true)
    }

    fn fail<T>(&mut self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.valid = false;
        }
        r
    }

    fn seek_inner(&mut self, target: &[u8]) -> Result<()> {
        let n = self.block.restarts.len();
        if n == 0 {
            self.valid = false;
            return Ok(());
        }
        // Last restart point whose key is < target (or 0).
        let (mut lo, mut hi) = (0usize, n - 1);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if compare_internal(self.block.restart_key(mid)?, target) == Ordering::Less {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        self.seek_to_restart(lo);
        while self.parse_next()? {
            if compare_internal(&self.key, target) != Ordering::Less {
                return Ok(());
            }
        }
        Ok(())
    }

    fn seek_to_last_inner(&mut self) -> Result<()> {
        let n = self.block.restarts.len();
        if n == 0 {
            self.valid = false;
            return Ok(());
        }
        self.seek_to_restart(n - 1);
        while self.parse_next()? && self.next_offset < self.block.data_end {}
        Ok(())
    }

    fn prev_inner(&mut self) -> Result<()> {
        if !self.valid {
            return Ok(());
        }
        let original = self.current;
        // Find the restart point strictly before the current entry.
        let mut ri = self.restart_index;
        while self.block.restarts.get(ri).map_or(0, |&r| r as usize) >= original {
            if ri == 0 {
                self.valid = false;
                return Ok(());
            }
            ri -= 1;
        }
        self.seek_to_restart(ri);
        while self.parse_next()? && self.next_offset < original {}
        Ok(())
    }
}

impl InternalIterator for BlockIter {
    fn valid(&self) -> bool {
        self.valid
    }

    fn key(&self) -> &[u8] {
        if self.valid {
            &self.key
        } else {
            &[]
        }
    }

    fn value(&self) -> &[u8] {
        if self.valid {
            self.block
                .data
                .get(self.value.0..self.value.1)
                .unwrap_or(&[])
        } else {
            &[]
        }
    }

    fn seek_to_first(&mut self) -> Result<()> {
        self.seek_to_restart(0);
        let r = self.parse_next().map(|_| ());
        self.fail(r)
    }

    fn seek_to_last(&mut self) -> Result<()> {
        let r = self.seek_to_last_inner();
        self.fail(r)
    }

    fn seek(&mut self, target: &[u8]) -> Result<()> {
        let r = self.seek_inner(target);
        self.fail(r)
    }

    fn seek_for_prev(&mut self, target: &[u8]) -> Result<()> {
        let r = self.seek_inner(target).and_then(|()| {
            if !self.valid {
                self.seek_to_last_inner()
            } else if compare_internal(&self.key, target) == Ordering::Greater {
                self.prev_inner()
            } else {
                Ok(())
            }
        });
        self.fail(r)
    }

    fn next(&mut self) -> Result<()> {
        if !self.valid {
            return Ok(());
        }
        let r = self.parse_next().map(|_| ());
        self.fail(r)
    }

    fn prev(&mut self) -> Result<()> {
        let r = self.prev_inner();
        self.fail(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsm::key::{internal_key, ValueKind};
    use proptest::prelude::*;

    fn path() -> PathBuf {
        PathBuf::from("test.sst")
    }

    fn ikey(k: &[u8], seq: u64) -> Vec<u8> {
        internal_key(k, seq, ValueKind::Put)
    }

    fn build(entries: &[(Vec<u8>, Vec<u8>)], interval: usize) -> Arc<Block> {
        let mut b = BlockBuilder::new(interval);
        for (k, v) in entries {
            b.add(k, v);
        }
        Arc::new(Block::new(b.finish(), &path(), 0).unwrap())
    }

    fn model_entries(n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..n)
            .map(|i| {
                (
                    ikey(format!("key{:05}", i * 2).as_bytes(), 7),
                    format!("v{i}").into_bytes(),
                )
            })
            .collect()
    }

    fn forward(it: &mut BlockIter) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        it.seek_to_first().unwrap();
        while it.valid() {
            out.push((it.key().to_vec(), it.value().to_vec()));
            it.next().unwrap();
        }
        out
    }

    fn backward(it: &mut BlockIter) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        it.seek_to_last().unwrap();
        while it.valid() {
            out.push((it.key().to_vec(), it.value().to_vec()));
            it.prev().unwrap();
        }
        out.reverse();
        out
    }

    #[test]
    fn empty_block() {
        let mut b = BlockBuilder::new(4);
        assert!(b.is_empty());
        let data = b.finish();
        assert_eq!(data, vec![0, 0, 0, 0]);
        let block = Arc::new(Block::new(data, &path(), 0).unwrap());
        assert!(block.is_empty());
        let mut it = block.iter();
        it.seek_to_first().unwrap();
        assert!(!it.valid());
        it.seek_to_last().unwrap();
        assert!(!it.valid());
        it.seek(&ikey(b"a", 1)).unwrap();
        assert!(!it.valid());
        it.seek_for_prev(&ikey(b"a", 1)).unwrap();
        assert!(!it.valid());
    }

    #[test]
    fn iterates_both_ways_and_seeks() {
        let entries = model_entries(100);
        for interval in [1, 2, 3, 16, 1000] {
            let block = build(&entries, interval);
            let mut it = block.iter();
            assert_eq!(forward(&mut it), entries);
            assert_eq!(backward(&mut it), entries);

            // Exact and in-between seeks.
            it.seek(&ikey(b"key00010", 7)).unwrap();
            assert_eq!(it.key(), &entries[5].0[..]);
            it.seek(&ikey(b"key00011", 7)).unwrap();
            assert_eq!(it.key(), &entries[6].0[..]);
            it.seek_for_prev(&ikey(b"key00011", 7)).unwrap();
            assert_eq!(it.key(), &entries[5].0[..]);
            it.seek(&ikey(b"a", 1)).unwrap();
            assert_eq!(it.key(), &entries[0].0[..]);
            it.seek(&ikey(b"z", 1)).unwrap();
            assert!(!it.valid());
            it.seek_for_prev(&ikey(b"a", 1)).unwrap();
            assert!(!it.valid());
            it.seek_for_prev(&ikey(b"z", 1)).unwrap();
            assert_eq!(it.key(), &entries[99].0[..]);
            // A newer version sorts first: seeking at a higher sequence lands on the entry.
            it.seek(&ikey(b"key00020", 100)).unwrap();
            assert_eq!(it.key(), &entries[10].0[..]);
        }
    }

    #[test]
    fn estimated_size_matches_finish() {
        let mut b = BlockBuilder::new(3);
        for (k, v) in model_entries(20) {
            b.add(&k, &v);
        }
        let est = b.estimated_size();
        assert_eq!(b.finish().len(), est);
        assert!(b.is_empty());
    }

    #[test]
    fn bad_restart_arrays_are_corruption() {
        for data in [
            vec![],
            vec![1, 0, 0],
            vec![1, 0, 0, 0],             // one restart but no room for it
            vec![9, 9, 9, 9, 0, 0, 0, 0], // entries without restarts
            vec![0, 0, 0, 0, 1, 0, 0, 0], // restart at data_end
            vec![0xff, 0xff, 0xff, 0xff], // absurd count
        ] {
            let err = Block::new(data.clone(), &path(), 42).unwrap_err();
            match err {
                Error::Corruption { offset, file, .. } => {
                    assert_eq!(offset, 42);
                    assert_eq!(file, path());
                }
                other => panic!("unexpected {other:?} for {data:?}"),
            }
        }
    }

    #[test]
    fn truncated_entry_is_corruption() {
        let entries = model_entries(2);
        let mut b = BlockBuilder::new(4);
        for (k, v) in &entries {
            b.add(k, v);
        }
        let mut data = b.finish();
        // Make the first entry's value length absurd.
        data[2] = 0x7f;
        let block = Arc::new(Block::new(data, &path(), 0).unwrap());
        let mut it = block.iter();
        assert!(it.seek_to_first().unwrap_err().is_corruption());
        assert!(!it.valid());
    }

    fn arb_entries() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
        proptest::collection::btree_map(
            (proptest::collection::vec(0u8..4, 0..6), 0u64..1000),
            proptest::collection::vec(any::<u8>(), 0..20),
            0..200,
        )
        .prop_map(|m| {
            let mut v: Vec<_> = m.into_iter().map(|((k, s), v)| (ikey(&k, s), v)).collect();
            v.sort_by(|a, b| compare_internal(&a.0, &b.0));
            v
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn roundtrip_and_seeks_match_model(
            entries in arb_entries(),
            interval in 1usize..20,
            probes in proptest::collection::vec(
                (proptest::collection::vec(0u8..4, 0..6), 0u64..1001), 0..20),
        ) {
            let block = build(&entries, interval);
            let mut it = block.iter();
            prop_assert_eq!(&forward(&mut it), &entries);
            prop_assert_eq!(&backward(&mut it), &entries);
            for (k, s) in probes {
                let target = ikey(&k, s);
                let i = entries.partition_point(|(e, _)| compare_internal(e, &target) == Ordering::Less);
                it.seek(&target).unwrap();
                prop_assert_eq!(it.valid(), i < entries.len());
                if it.valid() {
                    prop_assert_eq!(it.key(), &entries[i].0[..]);
                    // Step back and forth around the position.
                    it.prev().unwrap();
                    prop_assert_eq!(it.valid(), i > 0);
                    if i > 0 {
                        prop_assert_eq!(it.key(), &entries[i - 1].0[..]);
                        it.next().unwrap();
                        prop_assert_eq!(it.key(), &entries[i].0[..]);
                    }
                }
                let j = entries.partition_point(|(e, _)| compare_internal(e, &target) != Ordering::Greater);
                it.seek_for_prev(&target).unwrap();
                prop_assert_eq!(it.valid(), j > 0);
                if j > 0 {
                    prop_assert_eq!(it.key(), &entries[j - 1].0[..]);
                }
            }
        }

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(block) = Block::new(data, &path(), 0) {
                exercise(Arc::new(block));
            }
        }

        #[test]
        fn random_entries_with_valid_restarts_never_panic(
            body in proptest::collection::vec(any::<u8>(), 1..300),
            mut extra in proptest::collection::vec(any::<u32>(), 0..4),
        ) {
            // A well-formed restart array over garbage entries reaches the entry decoder.
            extra.retain(|&r| r > 0 && (r as usize) < body.len());
            extra.sort_unstable();
            extra.dedup();
            let mut data = body;
            let restarts: Vec<u32> = std::iter::once(0).chain(extra).collect();
            for r in &restarts {
                data.extend_from_slice(&r.to_le_bytes());
            }
            data.extend_from_slice(&(restarts.len() as u32).to_le_bytes());
            let block = Arc::new(Block::new(data, &path(), 0).unwrap());
            exercise(block);
        }

        #[test]
        fn flipped_bytes_never_panic(entries in arb_entries(), pos in any::<usize>(), bit in 0u8..8) {
            let mut b = BlockBuilder::new(3);
            for (k, v) in &entries {
                b.add(k, v);
            }
            let mut data = b.finish();
            let i = pos % data.len();
            data[i] ^= 1 << bit;
            if let Ok(block) = Block::new(data, &path(), 0) {
                exercise(Arc::new(block));
            }
        }
    }

    /// Drives every movement over a possibly damaged block, ignoring errors.
    fn exercise(block: Arc<Block>) {
        let mut it = block.iter();
        let mut steps = 0;
        if it.seek_to_first().is_ok() {
            while it.valid() && steps < 10_000 {
                let _ = (it.key(), it.value());
                if it.next().is_err() {
                    break;
                }
                steps += 1;
            }
        }
        if it.seek_to_last().is_ok() {
            while it.valid() && steps < 20_000 {
                if it.prev().is_err() {
                    break;
                }
                steps += 1;
            }
        }
        let _ = it.seek(&ikey(b"\x01", 5));
        let _ = it.seek_for_prev(&ikey(b"\x02", 5));
        let _ = it.prev();
        let _ = it.next();
    }
}
