//! The user-facing iterator, and the level iterator it is built from.
//!
//! [`DbIterator`] sits on a [`MergingIterator`] of every source (memtables, L0 files, one
//! [`LevelIterator`] per deeper level) and turns the stream of versions into the view of one
//! snapshot: for each engine key the newest version at or below the snapshot wins; deletes
//! and versions under a newer range tombstone hide the key; keys outside the column family
//! and the caller's bounds are never returned.
//!
//! Forward steps skip the older versions of a key; reverse steps read all versions of a key
//! (oldest first in reverse order) and keep the newest visible one. Changing direction
//! re-seeks around the current key.

use std::cmp::Ordering;
use std::sync::Arc;

use super::error::Result;
use super::iterator::{InternalIterator, MergingIterator};
use super::key::{
    compare_internal, kind_of, seek_key, seek_key_after, seq_of, user_part, SeqNo, ValueKind,
    MAX_SEQ,
};
use super::prefix::{engine_prefix, SharedPrefixExtractor};
use super::range_del::TombstoneSet;
use super::table::{TableCache, TableIterator};
use super::version::FileMeta;

/// Concatenates the files of one sorted level, opening each only when reached.
pub struct LevelIterator {
    files: Vec<Arc<FileMeta>>,
    cache: Arc<TableCache>,
    fill_cache: bool,
    index: usize,
    current: Option<TableIterator>,
}

impl std::fmt::Debug for LevelIterator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LevelIterator")
            .field("files", &self.files.len())
            .field("index", &self.index)
            .finish()
    }
}

impl LevelIterator {
    /// An iterator over `files`, which must be sorted and disjoint.
    pub fn new(files: Vec<Arc<FileMeta>>, cache: Arc<TableCache>, fill_cache: bool) -> Self {
        LevelIterator {
            files,
            cache,
            fill_cache,
            index: 0,
            current: None,
        }
    }

    fn open(&mut self, index: usize) -> Result<()> {
        self.current = None;
        self.index = index;
        if let Some(f) = self.files.get(index) {
            let table = self.cache.get(f.id, f.size)?;
            self.current = Some(table.iter(self.fill_cache));
        }
        Ok(())
    }

    fn skip_forward(&mut self) -> Result<()> {
        while self.current.as_ref().is_some_and(|c| !c.valid()) {
            let next = self.index + 1;
            self.open(next)?;
            if let Some(c) = self.current.as_mut() {
                c.seek_to_first()?;
            }
        }
        Ok(())
    }

    fn skip_backward(&mut self) -> Result<()> {
        while self.current.as_ref().is_some_and(|c| !c.valid()) {
            if self.index == 0 {
                self.current = None;
                return Ok(());
            }
            let prev = self.index - 1;
            self.open(prev)?;
            if let Some(c) = self.current.as_mut() {
                c.seek_to_last()?;
            }
        }
        Ok(())
    }
}

impl InternalIterator for LevelIterator {
    fn valid(&self) -> bool {
        self.current.as_ref().is_some_and(|c| c.valid())
    }
    fn key(&self) -> &[u8] {
        self.current.as_ref().map_or(&[], |c| c.key())
    }
    fn value(&self) -> &[u8] {
        self.current.as_ref().map_or(&[], |c| c.value())
    }
    fn seek_to_first(&mut self) -> Result<()> {
        self.open(0)?;
        if let Some(c) = self.current.as_mut() {
            c.seek_to_first()?;
        }
        self.skip_forward()
    }
    fn seek_to_last(&mut self) -> Result<()> {
        if self.files.is_empty() {
            self.current = None;
            return Ok(());
        }
        self.open(self.files.len() - 1)?;
        if let Some(c) = self.current.as_mut() {
            c.seek_to_last()?;
        }
        self.skip_backward()
    }
    fn seek(&mut self, target: &[u8]) -> Result<()> {
        let i = self
            .files
            .partition_point(|f| compare_internal(&f.largest, target) == Ordering::Less);
        self.open(i)?;
        if let Some(c) = self.current.as_mut() {
            c.seek(target)?;
        }
        self.skip_forward()
    }
    fn seek_for_prev(&mut self, target: &[u8]) -> Result<()> {
        let i = self
            .files
            .partition_point(|f| compare_internal(&f.smallest, target) != Ordering::Greater);
        let Some(i) = i.checked_sub(1) else {
            self.current = None;
            return Ok(());
        };
        self.open(i)?;
        if let Some(c) = self.current.as_mut() {
            c.seek_for_prev(target)?;
        }
        self.skip_backward()
    }
    fn next(&mut self) -> Result<()> {
        if let Some(c) = self.current.as_mut() {
            c.next()?;
        }
        self.skip_forward()
    }
    fn prev(&mut self) -> Result<()> {
        if let Some(c) = self.current.as_mut() {
            c.prev()?;
        }
        self.skip_backward()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Forward,
    Reverse,
}

/// An iterator over one column family at one snapshot, within optional bounds.
///
/// Every movement returns a `Result`; after an error the iterator is invalid. `key` and
/// `value` may only be called while `valid()`.
pub struct DbIterator {
    inner: MergingIterator,
    /// Keeps the files and memtables the iterator reads alive.
    _pin: Box<dyn std::any::Any + Send>,
    snapshot: SeqNo,
    tombstones: TombstoneSet,
    /// Inclusive lower bound, as an engine key.
    lower: Vec<u8>,
    /// Exclusive upper bound, as an engine key.
    upper: Vec<u8>,
    direction: Direction,
    valid: bool,
    key: Vec<u8>,
    value: Vec<u8>,
    /// A prefix read returns only keys whose extracted prefix is this one.
    prefix: Option<(SharedPrefixExtractor, Vec<u8>)>,
}

impl std::fmt::Debug for DbIterator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbIterator")
            .field("snapshot", &self.snapshot)
            .field("valid", &self.valid)
            .finish()
    }
}

impl DbIterator {
    pub(crate) fn new(
        inner: MergingIterator,
        pin: Box<dyn std::any::Any + Send>,
        snapshot: SeqNo,
        tombstones: TombstoneSet,
        lower: Vec<u8>,
        upper: Vec<u8>,
    ) -> Self {
        DbIterator {
            inner,
            _pin: pin,
            snapshot,
            tombstones,
            lower,
            upper,
            direction: Direction::Forward,
            valid: false,
            key: Vec::new(),
            value: Vec::new(),
            prefix: None,
        }
    }

    /// Restricts the iterator to the engine keys whose prefix by `extractor` is `prefix`.
    pub(crate) fn with_prefix(mut self, extractor: SharedPrefixExtractor, prefix: Vec<u8>) -> Self {
        self.prefix = Some((extractor, prefix));
        self
    }

    /// Whether the engine key `ukey` belongs to the iterator's prefix (always, without one).
    fn in_prefix(&self, ukey: &[u8]) -> bool {
        match &self.prefix {
            Some((extractor, prefix)) => {
                engine_prefix(&**extractor, ukey) == Some(prefix.as_slice())
            }
            None => true,
        }
    }

    /// The snapshot the iterator reads at.
    pub fn snapshot(&self) -> SeqNo {
        self.snapshot
    }

    /// Whether the iterator is on an entry.
    pub fn valid(&self) -> bool {
        self.valid
    }

    /// The current key (without its column family).
    pub fn key(&self) -> &[u8] {
        self.key.get(1..).unwrap_or(&[])
    }

    /// The current value.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    fn guard(&mut self, r: Result<()>) -> Result<()> {
        if r.is_err() {
            self.valid = false;
        }
        r
    }

    /// Positions on the first key.
    pub fn seek_to_first(&mut self) -> Result<()> {
        let lower = self.lower.clone();
        self.seek_engine(&lower)
    }

    /// Positions on the last key.
    pub fn seek_to_last(&mut self) -> Result<()> {
        let upper = self.upper.clone();
        let r = self.seek_for_prev_engine(&upper, true);
        self.guard(r)
    }

    /// Positions on the first key `>= key`.
    pub fn seek(&mut self, key: &[u8]) -> Result<()> {
        let mut ek = Vec::with_capacity(key.len() + 1);
        ek.push(self.lower.first().copied().unwrap_or(0));
        ek.extend_from_slice(key);
        if ek < self.lower {
            ek = self.lower.clone();
        }
        self.seek_engine(&ek)
    }

    /// Positions on the last key `<= key`.
    pub fn seek_for_prev(&mut self, key: &[u8]) -> Result<()> {
        let mut ek = Vec::with_capacity(key.len() + 1);
        ek.push(self.lower.first().copied().unwrap_or(0));
        ek.extend_from_slice(key);
        let r = if ek >= self.upper {
            let upper = self.upper.clone();
            self.seek_for_prev_engine(&upper, true)
        } else {
            self.seek_for_prev_engine(&ek, false)
        };
        self.guard(r)
    }

    /// Moves to the next key.
    #[allow(clippy::should_implement_trait)] // fallible, unlike `Iterator::next`
    pub fn next(&mut self) -> Result<()> {
        if !self.valid {
            return Ok(());
        }
        let r = (|| {
            if self.direction == Direction::Reverse {
                self.inner.seek(&seek_key_after(&self.key))?;
                self.direction = Direction::Forward;
                self.find_next(None)
            } else {
                let current = std::mem::take(&mut self.key);
                self.inner.next()?;
                self.find_next(Some(current))
            }
        })();
        self.guard(r)
    }

    /// Moves to the previous key.
    pub fn prev(&mut self) -> Result<()> {
        if !self.valid {
            return Ok(());
        }
        let r = (|| {
            if self.direction == Direction::Forward {
                self.inner.seek_for_prev(&seek_key(&self.key, MAX_SEQ))?;
                self.direction = Direction::Reverse;
            }
            self.find_prev()
        })();
        self.guard(r)
    }

    fn seek_engine(&mut self, ek: &[u8]) -> Result<()> {
        let r = (|| {
            self.direction = Direction::Forward;
            self.inner.seek(&seek_key(ek, MAX_SEQ))?;
            self.find_next(None)
        })();
        self.guard(r)
    }

    /// Positions on the last key `<= ek` (or `< ek` when `exclusive`).
    fn seek_for_prev_engine(&mut self, ek: &[u8], exclusive: bool) -> Result<()> {
        self.direction = Direction::Reverse;
        let target = if exclusive {
            seek_key(ek, MAX_SEQ)
        } else {
            seek_key_after(ek)
        };
        self.inner.seek_for_prev(&target)?;
        self.find_prev()
    }

    /// Scans forward from the inner position to the first visible key; `skip` is a key
    /// already returned, whose older versions must be passed over.
    fn find_next(&mut self, mut skip: Option<Vec<u8>>) -> Result<()> {
        self.valid = false;
        while self.inner.valid() {
            let ikey = self.inner.key();
            let ukey = user_part(ikey);
            if ukey >= self.upper.as_slice() {
                return Ok(());
            }
            let seq = seq_of(ikey);
            if seq > self.snapshot || skip.as_deref() == Some(ukey) || !self.in_prefix(ukey) {
                self.inner.next()?;
                continue;
            }
            // The newest version of `ukey` visible at the snapshot.
            let hidden = kind_of(ikey) != Some(ValueKind::Put) || self.tombstones.covers(ukey, seq);
            if !hidden {
                self.key.clear();
                self.key.extend_from_slice(ukey);
                self.value.clear();
                self.value.extend_from_slice(self.inner.value());
                self.valid = true;
                return Ok(());
            }
            skip = Some(ukey.to_vec());
            self.inner.next()?;
        }
        Ok(())
    }

    /// Scans backward from the inner position to the previous visible key.
    fn find_prev(&mut self) -> Result<()> {
        self.valid = false;
        let mut current: Vec<u8> = Vec::new();
        loop {
            if !self.inner.valid() {
                return Ok(());
            }
            let ukey = user_part(self.inner.key());
            if ukey < self.lower.as_slice() {
                return Ok(());
            }
            current.clear();
            current.extend_from_slice(ukey);
            // Versions of one key arrive oldest first; the last visible one wins.
            let mut best: Option<(SeqNo, bool)> = None;
            while self.inner.valid() && user_part(self.inner.key()) == current.as_slice() {
                let ikey = self.inner.key();
                let seq = seq_of(ikey);
                if seq <= self.snapshot {
                    let is_put = kind_of(ikey) == Some(ValueKind::Put);
                    if is_put {
                        self.value.clear();
                        self.value.extend_from_slice(self.inner.value());
                    }
                    best = Some((seq, is_put));
                }
                self.inner.prev()?;
            }
            if let Some((seq, true)) = best {
                if !self.tombstones.covers(&current, seq) && self.in_prefix(&current) {
                    std::mem::swap(&mut self.key, &mut current);
                    self.valid = true;
                    return Ok(());
                }
            }
        }
    }
}
