//! The read path: point lookups and iterators over a pinned super version.
//!
//! Readers take a *super version* (the active memtable, the immutable memtables and the
//! current version, all reference counted) under a short lock and read without one.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::lsm::db_iter::{DbIterator, LevelIterator};
use crate::lsm::error::Result;
use crate::lsm::iterator::{InternalIterator, MergingIterator};
use crate::lsm::key::{engine_key, seek_key, ColumnFamily, SeqNo, ValueKind};
use crate::lsm::options::ReadOptions;
use crate::lsm::range_del::{RangeTombstone, TombstoneSet};
use crate::lsm::stats::Counters;
use crate::lsm::table::TableLookup;

use super::{Inner, IterOptions};

impl Inner {
    pub(super) fn read_seq(&self, opts_snapshot: Option<SeqNo>) -> SeqNo {
        opts_snapshot.unwrap_or_else(|| self.last_seq.load(Ordering::Acquire))
    }

    pub(super) fn get(
        &self,
        cf: ColumnFamily,
        key: &[u8],
        opts: &ReadOptions,
    ) -> Result<Option<Vec<u8>>> {
        self.check_open()?;
        let sv = self.super_version();
        let snapshot = self.read_seq(opts.snapshot);
        let ek = engine_key(cf, key);
        Counters::add(&self.counters.gets, 1);
        let mut tomb: Option<SeqNo> = None;
        let mut note_tombstones = |list: &[RangeTombstone]| {
            for t in list {
                if t.seq <= snapshot && t.contains(&ek) {
                    tomb = Some(tomb.map_or(t.seq, |s| s.max(t.seq)));
                }
            }
        };
        for m in std::iter::once(&sv.mem).chain(sv.imms.iter()) {
            if m.has_range_dels() {
                note_tombstones(&m.range_dels());
            }
        }
        note_tombstones(&sv.version.range_dels);
        let resolve = |seq: SeqNo, kind: ValueKind, value: Vec<u8>| -> Option<Vec<u8>> {
            if kind == ValueKind::Delete || tomb.is_some_and(|t| t > seq) {
                None
            } else {
                Some(value)
            }
        };
        for m in std::iter::once(&sv.mem).chain(sv.imms.iter()) {
            if let Some(found) = m.get(&ek, snapshot) {
                return Ok(resolve(found.seq, found.kind, found.value));
            }
        }
        Counters::add(&self.counters.gets_from_tables, 1);
        let seek = seek_key(&ek, snapshot);
        let fill = opts.fill_cache.unwrap_or(true);
        let version = &sv.version;
        let candidates = version.levels[0]
            .iter()
            .filter(|f| f.smallest_user() <= ek.as_slice() && ek.as_slice() <= f.largest_user())
            .chain((1..version.levels.len()).filter_map(|l| version.file_for_key(l, &ek)));
        for f in candidates {
            let table = self.table_cache.get(f.id, f.size)?;
            Counters::add(&self.counters.table_probes, 1);
            match table.get(&ek, &seek, fill)? {
                TableLookup::FilteredOut => Counters::add(&self.counters.bloom_filtered, 1),
                TableLookup::NotFound => {}
                TableLookup::Found { key, value } => {
                    let kind = crate::lsm::key::kind_of(&key).unwrap_or(ValueKind::Delete);
                    return Ok(resolve(crate::lsm::key::seq_of(&key), kind, value));
                }
            }
        }
        Ok(None)
    }

    pub(super) fn iter(&self, cf: ColumnFamily, opts: IterOptions) -> Result<DbIterator> {
        self.check_open()?;
        let sv = self.super_version();
        let snapshot = self.read_seq(opts.snapshot);
        let mut children: Vec<Box<dyn InternalIterator>> = Vec::new();
        let mut tombstones: Vec<RangeTombstone> = sv.version.range_dels.clone();
        for m in std::iter::once(&sv.mem).chain(sv.imms.iter()) {
            children.push(Box::new(m.iter()));
            if m.has_range_dels() {
                tombstones.extend(m.range_dels());
            }
        }
        for f in &sv.version.levels[0] {
            let table = self.table_cache.get(f.id, f.size)?;
            children.push(Box::new(table.iter(opts.fill_cache)));
        }
        for level in sv.version.levels.iter().skip(1) {
            if !level.is_empty() {
                children.push(Box::new(LevelIterator::new(
                    level.clone(),
                    Arc::clone(&self.table_cache),
                    opts.fill_cache,
                )));
            }
        }
        let lower = engine_key(cf, opts.lower_bound.as_deref().unwrap_or(&[]));
        let upper = match &opts.upper_bound {
            Some(u) => engine_key(cf, u),
            None => vec![cf.id().saturating_add(1)],
        };
        let set = TombstoneSet::new(&tombstones, snapshot);
        Ok(DbIterator::new(
            MergingIterator::new(children),
            Box::new(sv),
            snapshot,
            set,
            lower,
            upper,
        ))
    }
}
