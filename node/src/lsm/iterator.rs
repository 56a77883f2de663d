//! Internal iterators and the merging iterator.
//!
//! Every source of entries (a memtable, an SSTable, a level of SSTables) exposes the same
//! [`InternalIterator`]: a cursor over internal keys in [`compare_internal`] order that can
//! seek and step in both directions. [`MergingIterator`] combines many of them into one
//! ordered stream; the user-facing iterator in `db_iter` sits on top and resolves versions,
//! tombstones and bounds.
//!
//! Internal keys are unique across sources (every entry has its own sequence number), so the
//! merge never has to break ties.

use std::cmp::Ordering;

use super::error::Result;
use super::key::compare_internal;

/// A bidirectional cursor over internal keys.
///
/// `key` and `value` may only be called while `valid()`. Errors (corruption, I/O) are
/// returned by the movement that met them, and leave the iterator invalid.
pub trait InternalIterator: Send {
    /// Whether the cursor is on an entry.
    fn valid(&self) -> bool;
    /// The current internal key.
    fn key(&self) -> &[u8];
    /// The current value.
    fn value(&self) -> &[u8];
    /// Positions on the first entry.
    fn seek_to_first(&mut self) -> Result<()>;
    /// Positions on the last entry.
    fn seek_to_last(&mut self) -> Result<()>;
    /// Positions on the first entry `>= target`.
    fn seek(&mut self, target: &[u8]) -> Result<()>;
    /// Positions on the last entry `<= target`.
    fn seek_for_prev(&mut self, target: &[u8]) -> Result<()>;
    /// Moves to the next entry.
    fn next(&mut self) -> Result<()>;
    /// Moves to the previous entry.
    fn prev(&mut self) -> Result<()>;
}

impl<T: InternalIterator + ?Sized> InternalIterator for Box<T> {
    fn valid(&self) -> bool {
        (**self).valid()
    }
    fn key(&self) -> &[u8] {
        (**self).key()
    }
    fn value(&self) -> &[u8] {
        (**self).value()
    }
    fn seek_to_first(&mut self) -> Result<()> {
        (**self).seek_to_first()
    }
    fn seek_to_last(&mut self) -> Result<()> {
        (**self).seek_to_last()
    }
    fn seek(&mut self, target: &[u8]) -> Result<()> {
        (**self).seek(target)
    }
    fn seek_for_prev(&mut self, target: &[u8]) -> Result<()> {
        (**self).seek_for_prev(target)
    }
    fn next(&mut self) -> Result<()> {
        (**self).next()
    }
    fn prev(&mut self) -> Result<()> {
        (**self).prev()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Forward,
    Reverse,
}

/// Merges many internal iterators into one ordered stream.
///
/// It keeps every child positioned and picks the smallest (forward) or largest (reverse)
/// current key. The number of children is small (memtables, L0 files, one per deeper level),
/// so a linear pick beats a heap's bookkeeping. Changing direction re-seeks the children
/// around the current key.
pub struct MergingIterator {
    children: Vec<Box<dyn InternalIterator>>,
    current: Option<usize>,
    direction: Direction,
}

impl std::fmt::Debug for MergingIterator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MergingIterator")
            .field("children", &self.children.len())
            .field("current", &self.current)
            .finish()
    }
}

impl MergingIterator {
    /// A merging iterator over `children`; it starts unpositioned.
    pub fn new(children: Vec<Box<dyn InternalIterator>>) -> Self {
        MergingIterator {
            children,
            current: None,
            direction: Direction::Forward,
        }
    }

    fn pick(&mut self, want: Ordering) {
        let mut best: Option<usize> = None;
        for (i, child) in self.children.iter().enumerate() {
            if !child.valid() {
                continue;
            }
            best = match best {
                Some(b) if compare_internal(child.key(), self.children[b].key()) != want => Some(b),
                _ => Some(i),
            };
        }
        self.current = best;
    }

    fn pick_smallest(&mut self) {
        self.direction = Direction::Forward;
        self.pick(Ordering::Less);
    }

    fn pick_largest(&mut self) {
        self.direction = Direction::Reverse;
        self.pick(Ordering::Greater);
    }
}

impl InternalIterator for MergingIterator {
    fn valid(&self) -> bool {
        self.current.is_some()
    }

    fn key(&self) -> &[u8] {
        match self.current {
            Some(i) => self.children[i].key(),
            None => &[],
        }
    }

    fn value(&self) -> &[u8] {
        match self.current {
            Some(i) => self.children[i].value(),
            None => &[],
        }
    }

    fn seek_to_first(&mut self) -> Result<()> {
        self.current = None;
        for child in &mut self.children {
            child.seek_to_first()?;
        }
        self.pick_smallest();
        Ok(())
    }

    fn seek_to_last(&mut self) -> Result<()> {
        self.current = None;
        for child in &mut self.children {
            child.seek_to_last()?;
        }
        self.pick_largest();
        Ok(())
    }

    fn seek(&mut self, target: &[u8]) -> Result<()> {
        self.current = None;
        for child in &mut self.children {
            child.seek(target)?;
        }
        self.pick_smallest();
        Ok(())
    }

    fn seek_for_prev(&mut self, target: &[u8]) -> Result<()> {
        self.current = None;
        for child in &mut self.children {
            child.seek_for_prev(target)?;
        }
        self.pick_largest();
        Ok(())
    }

    fn next(&mut self) -> Result<()> {
        let Some(cur) = self.current else {
            return Ok(());
        };
        if self.direction == Direction::Reverse {
            // Bring every other child to the first key after the current one.
            let key = self.children[cur].key().to_vec();
            for (i, child) in self.children.iter_mut().enumerate() {
                if i != cur {
                    child.seek(&key)?;
                    if child.valid() && compare_internal(child.key(), &key) == Ordering::Equal {
                        child.next()?;
                    }
                }
            }
        }
        self.current = None;
        self.children[cur].next()?;
        self.pick_smallest();
        Ok(())
    }

    fn prev(&mut self) -> Result<()> {
        let Some(cur) = self.current else {
            return Ok(());
        };
        if self.direction == Direction::Forward {
            let key = self.children[cur].key().to_vec();
            for (i, child) in self.children.iter_mut().enumerate() {
                if i != cur {
                    child.seek_for_prev(&key)?;
                    if child.valid() && compare_internal(child.key(), &key) == Ordering::Equal {
                        child.prev()?;
                    }
                }
            }
        }
        self.current = None;
        self.children[cur].prev()?;
        self.pick_largest();
        Ok(())
    }
}

/// An entry of a sorted in-memory run: an internal key and its value.
pub trait SortedEntry: Send {
    /// The internal key.
    fn key(&self) -> &[u8];
    /// The value.
    fn value(&self) -> &[u8];
}

impl<K: AsRef<[u8]> + Send, V: AsRef<[u8]> + Send> SortedEntry for (K, V) {
    fn key(&self) -> &[u8] {
        self.0.as_ref()
    }
    fn value(&self) -> &[u8] {
        self.1.as_ref()
    }
}

/// An iterator over a sorted in-memory vector of entries (tests and benchmarks).
#[derive(Debug, Clone)]
pub struct VecIterator<E = (Vec<u8>, Vec<u8>)> {
    entries: Vec<E>,
    pos: Option<usize>,
}

impl<E: SortedEntry> VecIterator<E> {
    /// An iterator over `entries`, which must be sorted by [`compare_internal`] of their keys.
    pub fn new(entries: Vec<E>) -> Self {
        VecIterator { entries, pos: None }
    }
}

impl<E: SortedEntry> InternalIterator for VecIterator<E> {
    fn valid(&self) -> bool {
        self.pos.is_some()
    }
    fn key(&self) -> &[u8] {
        self.pos.map_or(&[], |p| self.entries[p].key())
    }
    fn value(&self) -> &[u8] {
        self.pos.map_or(&[], |p| self.entries[p].value())
    }
    fn seek_to_first(&mut self) -> Result<()> {
        self.pos = if self.entries.is_empty() {
            None
        } else {
            Some(0)
        };
        Ok(())
    }
    fn seek_to_last(&mut self) -> Result<()> {
        self.pos = self.entries.len().checked_sub(1);
        Ok(())
    }
    fn seek(&mut self, target: &[u8]) -> Result<()> {
        let i = self
            .entries
            .partition_point(|e| compare_internal(e.key(), target) == Ordering::Less);
        self.pos = (i < self.entries.len()).then_some(i);
        Ok(())
    }
    fn seek_for_prev(&mut self, target: &[u8]) -> Result<()> {
        let i = self
            .entries
            .partition_point(|e| compare_internal(e.key(), target) != Ordering::Greater);
        self.pos = i.checked_sub(1);
        Ok(())
    }
    fn next(&mut self) -> Result<()> {
        self.pos = self
            .pos
            .and_then(|p| (p + 1 < self.entries.len()).then_some(p + 1));
        Ok(())
    }
    fn prev(&mut self) -> Result<()> {
        self.pos = self.pos.and_then(|p| p.checked_sub(1));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsm::key::{internal_key, ValueKind};

    fn run(keys: &[(&str, u64)]) -> Box<dyn InternalIterator> {
        let mut entries: Vec<_> = keys
            .iter()
            .map(|(k, s)| {
                (
                    internal_key(k.as_bytes(), *s, ValueKind::Put),
                    s.to_string().into_bytes(),
                )
            })
            .collect();
        entries.sort_by(|a, b| compare_internal(&a.0, &b.0));
        Box::new(VecIterator::new(entries))
    }

    fn collect_forward(it: &mut MergingIterator) -> Vec<(Vec<u8>, u64)> {
        let mut out = Vec::new();
        while it.valid() {
            out.push((
                crate::lsm::key::user_part(it.key()).to_vec(),
                crate::lsm::key::seq_of(it.key()),
            ));
            it.next().unwrap();
        }
        out
    }

    #[test]
    fn merges_in_order_and_switches_direction() {
        let mut it = MergingIterator::new(vec![
            run(&[("a", 3), ("c", 1), ("e", 7)]),
            run(&[("a", 5), ("b", 2), ("e", 2)]),
            run(&[]),
        ]);
        it.seek_to_first().unwrap();
        let all = collect_forward(&mut it);
        let expect: Vec<(Vec<u8>, u64)> =
            [("a", 5), ("a", 3), ("b", 2), ("c", 1), ("e", 7), ("e", 2)]
                .iter()
                .map(|(k, s)| (k.as_bytes().to_vec(), *s))
                .collect();
        assert_eq!(all, expect);

        // Forward to "c", then step back twice, then forward again.
        it.seek(&internal_key(b"c", 9, ValueKind::Put)).unwrap();
        assert_eq!(crate::lsm::key::user_part(it.key()), b"c");
        it.prev().unwrap();
        assert_eq!(crate::lsm::key::user_part(it.key()), b"b");
        it.prev().unwrap();
        assert_eq!(crate::lsm::key::seq_of(it.key()), 3);
        it.next().unwrap();
        assert_eq!(crate::lsm::key::user_part(it.key()), b"b");
        it.next().unwrap();
        assert_eq!(crate::lsm::key::user_part(it.key()), b"c");

        it.seek_to_last().unwrap();
        assert_eq!(crate::lsm::key::seq_of(it.key()), 2);
        it.seek_for_prev(&internal_key(b"b", 0, ValueKind::Put))
            .unwrap();
        assert_eq!(crate::lsm::key::user_part(it.key()), b"b");
    }
}
