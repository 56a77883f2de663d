//! Prefix-bounded reads: an iterator over the keys of one prefix that reads only the tables
//! that may hold it.
//!
//! A plain iterator merges every memtable, every L0 file and one level iterator per deeper
//! level, and a seek positions all of them, reading a data block from each. A read of the
//! versions of one key (an MVCC point read: seek to `(key, ts)`, take the first entry) needs
//! only the tables that may hold the key's prefix. So [`Inner::prefix_iter`] builds its
//! merge from:
//!
//! - the memtables (a skiplist seek each, no I/O);
//! - the L0 files, and in each deeper level the files, whose key range overlaps the
//!   prefix's range `[prefix, successor(prefix))` and whose prefix filter (see
//!   [`crate::lsm::prefix`]) may contain the prefix: usually none or one per level;
//! - only the range tombstones that overlap that range.
//!
//! Files are opened only to consult their filters; no data block is read until the caller
//! seeks, and then only in the surviving tables. The iterator returns exactly the keys in
//! the range whose extracted prefix is the prefix (the filter is applied per key too), so
//! the answer never depends on which tables the filters happened to skip.

use std::cmp::Ordering as CmpOrdering;
use std::sync::Arc;

use crate::lsm::db_iter::{DbIterator, LevelIterator};
use crate::lsm::error::{Error, Result};
use crate::lsm::iterator::{InternalIterator, MergingIterator};
use crate::lsm::key::{engine_key, prefix_successor, ColumnFamily};
use crate::lsm::prefix::{engine_prefix, stored_name};
use crate::lsm::range_del::{RangeTombstone, TombstoneSet};
use crate::lsm::stats::Counters;
use crate::lsm::table::Table;
use crate::lsm::version::FileMeta;

use super::{Inner, IterOptions};

impl Inner {
    pub(super) fn prefix_iter(
        &self,
        cf: ColumnFamily,
        key: &[u8],
        opts: IterOptions,
    ) -> Result<DbIterator> {
        self.check_open()?;
        let Some(extractor) = self.options.prefix_extractor.clone() else {
            return Err(Error::InvalidArgument(
                "a prefix read needs Options::prefix_extractor".into(),
            ));
        };
        let ek = engine_key(cf, key);
        let Some(prefix) = engine_prefix(&*extractor, &ek).map(<[u8]>::to_vec) else {
            return Err(Error::InvalidArgument(format!(
                "the key has no prefix by the extractor {:?} in family {cf}",
                extractor.name()
            )));
        };
        let sv = self.super_version();
        let snapshot = self.read_seq(opts.snapshot);

        // The prefix's range, narrowed by the caller's bounds.
        let mut lower = prefix.clone();
        if let Some(l) = &opts.lower_bound {
            lower = lower.max(engine_key(cf, l));
        }
        // The family byte is at most 3, so the successor always exists.
        let mut upper = prefix_successor(&prefix).unwrap_or_else(|| vec![cf.id() + 1]);
        if let Some(u) = &opts.upper_bound {
            upper = upper.min(engine_key(cf, u));
        }
        Counters::add(&self.counters.prefix_reads, 1);

        let overlaps = |f: &FileMeta| {
            f.smallest_user() < upper.as_slice() && f.largest_user() >= lower.as_slice()
        };
        let name = stored_name(&*extractor);
        // The table of `f` if its prefix filter may hold the prefix.
        let probe = |f: &FileMeta| -> Result<Option<Arc<Table>>> {
            let table = self.table_cache.get(f.id, f.size)?;
            Counters::add(&self.counters.prefix_table_checks, 1);
            if table.may_contain_prefix(name, &prefix) {
                Ok(Some(table))
            } else {
                Counters::add(&self.counters.prefix_bloom_filtered, 1);
                Ok(None)
            }
        };

        let mut children: Vec<Box<dyn InternalIterator>> = Vec::new();
        let mut tombstones: Vec<RangeTombstone> = Vec::new();
        let mut note = |list: &[RangeTombstone]| {
            tombstones.extend(
                list.iter()
                    .filter(|t| t.start.as_slice() < upper.as_slice() && t.end > lower)
                    .cloned(),
            );
        };
        note(&sv.version.range_dels);
        for m in std::iter::once(&sv.mem).chain(sv.imms.iter()) {
            children.push(Box::new(m.iter()));
            if m.has_range_dels() {
                note(&m.range_dels());
            }
        }
        for f in sv.version.levels[0].iter().filter(|f| overlaps(f)) {
            if let Some(table) = probe(f)? {
                children.push(Box::new(table.iter(opts.fill_cache)));
            }
        }
        for level in sv.version.levels.iter().skip(1) {
            // Sorted and disjoint: the files overlapping the range are consecutive.
            let first = level
                .partition_point(|f| f.largest_user().cmp(lower.as_slice()) == CmpOrdering::Less);
            let mut kept: Vec<(Arc<FileMeta>, Arc<Table>)> = Vec::new();
            for f in level[first..].iter().take_while(|f| overlaps(f)) {
                if let Some(table) = probe(f)? {
                    kept.push((Arc::clone(f), table));
                }
            }
            if kept.len() == 1 {
                if let Some((_, table)) = kept.pop() {
                    children.push(Box::new(table.iter(opts.fill_cache)));
                }
            } else if !kept.is_empty() {
                children.push(Box::new(LevelIterator::new(
                    kept.into_iter().map(|(f, _)| f).collect(),
                    Arc::clone(&self.table_cache),
                    opts.fill_cache,
                )));
            }
        }
        let set = TombstoneSet::new(&tombstones, snapshot);
        Ok(DbIterator::new(
            MergingIterator::new(children),
            Box::new(sv),
            snapshot,
            set,
            lower,
            upper,
        )
        .with_prefix(extractor, prefix))
    }
}

#[cfg(test)]
#[path = "prefix_read_tests.rs"]
mod tests;
