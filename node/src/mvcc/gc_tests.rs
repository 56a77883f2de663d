use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::lsm::{Db, IterOptions, Options};
use crate::mvcc::record::SHORT_VALUE_MAX;
use crate::tso::compose;
use crate::txn::actions::{Mutation, PrewriteOptions};
use crate::txn::Storage;

fn write(kind: WriteKind, start_ts: Timestamp, short: bool) -> Vec<u8> {
    Write {
        kind,
        start_ts,
        short_value: short.then(|| b"v".to_vec()),
    }
    .encode()
}

/// Feeds `(key, commit_ts, kind, start_ts, short value?)` to one walk; returns the commit
/// timestamps kept, and the work reported.
fn walk(
    safe_point: Timestamp,
    versions: &[(&str, Timestamp, WriteKind, Timestamp, bool)],
) -> (Vec<(String, Timestamp)>, GcWork) {
    let mut gc = VersionGc::new(safe_point, None);
    let kept = versions
        .iter()
        .filter(|(k, ts, kind, start, short)| {
            let key = versioned_key(k.as_bytes(), *ts);
            gc.filter(ColumnFamily::Write, &key, &write(*kind, *start, *short))
                == FilterDecision::Keep
        })
        .map(|(k, ts, ..)| (k.to_string(), *ts))
        .collect();
    (kept, gc.work().clone())
}

#[test]
fn safe_point_only_moves_forward() {
    let sp = GcSafePoint::default();
    let shared = sp.clone();
    assert_eq!(sp.advance(10), 10);
    assert_eq!(shared.advance(5), 10, "never backwards");
    assert_eq!(sp.get(), 10);
    assert!(sp.check(10).is_ok());
    assert!(matches!(
        sp.check(9),
        Err(MvccError::ReadBelowSafePoint {
            ts: 9,
            safe_point: 10
        })
    ));
}

#[test]
fn safe_point_is_the_older_of_oldest_txn_and_life_time() {
    let now = compose(1_000_000, 7);
    let life = Duration::from_secs(600);
    let by_time = compose(1_000_000 - 600_000, 0);
    assert_eq!(compute_safe_point(None, now, life), by_time);
    assert_eq!(compute_safe_point(Some(now), now, life), by_time);
    let old = compose(1_000, 3);
    assert_eq!(compute_safe_point(Some(old), now, life), old);
    // A life time longer than the clock saturates at 0.
    assert_eq!(compute_safe_point(None, compose(5, 0), life), 0);
    assert_eq!(compute_safe_point(None, now, Duration::MAX), 0);
}

#[test]
fn keeps_the_newest_data_version_at_the_safe_point_and_drops_the_rest() {
    use WriteKind::*;
    let (kept, work) = walk(
        30,
        &[
            ("a", 40, Put, 39, true),
            ("a", 35, Put, 34, false),
            ("a", 28, Rollback, 28, false),
            ("a", 25, Put, 24, false),
            ("a", 22, Lock, 21, false),
            ("a", 20, Delete, 19, false),
            ("a", 12, Put, 11, false),
            ("a", 5, Put, 4, true),
            ("b", 3, Put, 2, false),
        ],
    );
    assert_eq!(
        kept,
        vec![
            ("a".into(), 40),
            ("a".into(), 35),
            ("a".into(), 25),
            ("b".into(), 3)
        ]
    );
    // Only the long value of the dropped Put needs a sweep; short values went with it.
    assert_eq!(work.values, vec![(b"a".to_vec(), 11)]);
    assert!(work.deletes.is_empty());
}

#[test]
fn a_delete_at_the_safe_point_is_kept_and_reported_and_hides_what_is_older() {
    use WriteKind::*;
    let (kept, work) = walk(
        30,
        &[
            ("a", 20, Delete, 19, false),
            ("a", 12, Put, 11, false),
            ("a", 5, Put, 4, true),
        ],
    );
    assert_eq!(kept, vec![("a".into(), 20)]);
    assert_eq!(work.deletes, vec![(b"a".to_vec(), 20)]);
    assert_eq!(work.values, vec![(b"a".to_vec(), 11)]);
}

#[test]
fn rollback_and_lock_records_go_only_strictly_below_the_safe_point() {
    use WriteKind::*;
    let (kept, _) = walk(
        30,
        &[
            ("a", 31, Rollback, 31, false),
            ("a", 30, Rollback, 30, false),
            ("a", 29, Rollback, 29, false),
            ("b", 30, Lock, 29, false),
            ("b", 29, Lock, 28, false),
        ],
    );
    assert_eq!(
        kept,
        vec![("a".into(), 31), ("a".into(), 30), ("b".into(), 30)]
    );
}

#[test]
fn partial_visibility_never_drops_the_newest_version_seen() {
    use WriteKind::*;
    // The compaction misses a@25 (in another file): a@12 is now the newest it sees at or
    // below the safe point, so it must stay, though it is in fact garbage.
    let (kept, work) = walk(30, &[("a", 12, Put, 11, false), ("a", 5, Put, 4, false)]);
    assert_eq!(kept, vec![("a".into(), 12)]);
    assert_eq!(work.values, vec![(b"a".to_vec(), 4)]);
    // Seeing only a Rollback below the safe point says nothing about data: a@5 stays.
    let (kept, _) = walk(
        30,
        &[("a", 28, Rollback, 28, false), ("a", 5, Put, 4, false)],
    );
    assert_eq!(kept, vec![("a".into(), 5)]);
}

#[test]
fn other_families_and_undecodable_records_are_kept() {
    let mut gc = VersionGc::new(u64::MAX, None);
    let put = write(WriteKind::Put, 1, false);
    let key = versioned_key(b"a", 5);
    assert_eq!(
        gc.filter(ColumnFamily::Write, &key, &put),
        FilterDecision::Keep
    );
    for cf in [
        ColumnFamily::Default,
        ColumnFamily::Lock,
        ColumnFamily::RaftState,
    ] {
        assert_eq!(
            gc.filter(cf, &versioned_key(b"a", 4), &put),
            FilterDecision::Keep
        );
    }
    // Garbage key or record under the same user key: kept, never a panic.
    assert_eq!(
        gc.filter(ColumnFamily::Write, b"\x01\x02", &put),
        FilterDecision::Keep
    );
    assert_eq!(
        gc.filter(ColumnFamily::Write, &versioned_key(b"a", 3), b"\xff"),
        FilterDecision::Keep
    );
    assert_eq!(
        gc.filter(ColumnFamily::Write, &versioned_key(b"a", 2), &put),
        FilterDecision::Remove
    );
}

#[test]
fn the_filter_reports_to_its_backlog_when_a_compaction_ends() {
    let sp = GcSafePoint::new(30);
    let filter = MvccGcFilter::new(sp);
    let mut state = filter.start().expect("a stateful filter");
    for ts in [20, 10] {
        state.filter(
            ColumnFamily::Write,
            &versioned_key(b"k", ts),
            &write(WriteKind::Put, ts - 1, false),
        );
    }
    assert!(filter.backlog().take().is_empty(), "nothing before the end");
    drop(state);
    assert_eq!(filter.backlog().take().values, vec![(b"k".to_vec(), 9)]);
}

// ---------------------------------------------------------------------------------------
// Partial visibility, as a property: compactions that each see an arbitrary subset of a
// key's versions, with a safe point that moves up, never change a read at or above it.
// ---------------------------------------------------------------------------------------

type Versions = BTreeMap<Timestamp, (WriteKind, Timestamp)>;

/// What a read at `ts` sees: the start_ts of the visible Put, or `None`.
fn read(versions: &Versions, ts: Timestamp) -> Option<Timestamp> {
    versions
        .range(..=ts)
        .rev()
        .find(|(_, (kind, _))| matches!(kind, WriteKind::Put | WriteKind::Delete))
        .and_then(|(_, (kind, start))| (*kind == WriteKind::Put).then_some(*start))
}

fn kind() -> impl Strategy<Value = WriteKind> {
    prop_oneof![
        4 => Just(WriteKind::Put),
        2 => Just(WriteKind::Delete),
        1 => Just(WriteKind::Lock),
        1 => Just(WriteKind::Rollback),
    ]
}

proptest! {
    #[test]
    fn subsets_of_versions_never_change_reads_at_or_above_the_safe_point(
        kinds in prop::collection::vec(kind(), 1..12),
        rounds in prop::collection::vec((0u64..30, prop::collection::vec(any::<bool>(), 12)), 1..6),
    ) {
        let original: Versions = kinds
            .iter()
            .enumerate()
            .map(|(i, k)| (2 * i as u64 + 2, (*k, 2 * i as u64 + 1)))
            .collect();
        let mut present = original.clone();
        let mut safe_point = 0;
        for (advance, visible) in &rounds {
            safe_point += advance;
            let mut gc = VersionGc::new(safe_point, None);
            // Newest first, as a compaction walks them; only the visible subset.
            let seen: Vec<Timestamp> = present
                .keys()
                .rev()
                .zip(visible.iter().cycle())
                .filter(|(_, v)| **v)
                .map(|(ts, _)| *ts)
                .collect();
            for ts in seen {
                let (kind, start) = present[&ts];
                let value = write(kind, start, false);
                if gc.decide_write(&versioned_key(b"k", ts), &value) == FilterDecision::Remove {
                    present.remove(&ts);
                }
            }
            // The sweep: a reported Delete goes if nothing older is left; a reported value
            // must never be the one the safe point reads.
            for (_, start) in &gc.work().values {
                prop_assert_ne!(read(&present, safe_point), Some(*start));
            }
            for (_, ts) in &gc.work().deletes {
                if present.range(..*ts).next().is_none() {
                    present.remove(ts);
                }
            }
            for ts in safe_point..original.len() as u64 * 2 + 3 {
                prop_assert_eq!(read(&present, ts), read(&original, ts), "read at {}", ts);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// End to end: an engine with the filter, written through Storage.
// ---------------------------------------------------------------------------------------

struct Env {
    _dir: tempfile::TempDir,
    storage: Storage,
    sp: GcSafePoint,
    filter: Arc<MvccGcFilter>,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let sp = GcSafePoint::default();
    let filter = Arc::new(MvccGcFilter::new(sp.clone()));
    let options = Options {
        compaction_filter: Some(filter.clone()),
        background_work: false,
        ..Options::small_for_tests()
    };
    let db = Db::open(dir.path(), options).unwrap();
    Env {
        _dir: dir,
        storage: Storage::with_safe_point(db, sp.clone()),
        sp,
        filter,
    }
}

impl Env {
    /// Writes `value` (a delete if `None`) of `key` in transaction `start_ts`, committed at
    /// `start_ts + 1`.
    fn commit(&self, key: &[u8], value: Option<&[u8]>, start_ts: Timestamp) {
        let m = match value {
            Some(v) => Mutation::Put(key.to_vec(), v.to_vec()),
            None => Mutation::Delete(key.to_vec()),
        };
        let opts = PrewriteOptions {
            primary: key.to_vec(),
            ttl_ms: 3000,
            min_commit_ts: start_ts + 1,
            coordinator: None,
        };
        self.storage.prewrite(&[m], &opts, start_ts).unwrap();
        self.storage
            .commit(&[key.to_vec()], start_ts, start_ts + 1)
            .unwrap();
    }

    /// Compacts both families, sweeps, and compacts again so the sweep's deletes are gone.
    fn collect(&self) -> SweepStats {
        let db = self.storage.db();
        db.compact_range(ColumnFamily::Write, None, None).unwrap();
        let stats = self.storage.gc_sweep(self.filter.backlog()).unwrap();
        db.compact_range(ColumnFamily::Write, None, None).unwrap();
        db.compact_range(ColumnFamily::Default, None, None).unwrap();
        stats
    }

    fn count(&self, cf: ColumnFamily) -> usize {
        let mut it = self
            .storage
            .db()
            .iter(
                cf,
                IterOptions {
                    lower_bound: None,
                    upper_bound: None,
                    snapshot: None,
                    fill_cache: false,
                },
            )
            .unwrap();
        it.seek_to_first().unwrap();
        let mut n = 0;
        while it.valid() {
            n += 1;
            it.next().unwrap();
        }
        n
    }
}

fn long(tag: u8) -> Vec<u8> {
    vec![tag; SHORT_VALUE_MAX + 45]
}

#[test]
fn compaction_collects_old_versions_and_reads_above_the_safe_point_are_unchanged() {
    let e = env();
    // "a": four versions, long values (in the default family) at 10, 20, 30 and short at 40.
    e.commit(b"a", Some(&long(1)), 10);
    e.commit(b"a", Some(&long(2)), 20);
    e.commit(b"a", Some(&long(3)), 30);
    e.commit(b"a", Some(b"short"), 40);
    // "b": written, then deleted; "c": one version; "d": a rollback record.
    e.commit(b"b", Some(&long(4)), 12);
    e.commit(b"b", None, 22);
    e.commit(b"c", Some(b"c1"), 14);
    e.storage.rollback(&[b"d".to_vec()], 16).unwrap();
    assert_eq!(e.count(ColumnFamily::Write), 8);
    assert_eq!(e.count(ColumnFamily::Default), 4);

    let before: Vec<_> = (25..45)
        .map(|ts| e.storage.scan(b"", None, 10, ts, false, &[]).unwrap())
        .collect();
    e.sp.advance(25);
    let stats = e.collect();
    assert_eq!(stats.values_deleted, 2, "a@10, b@12");
    assert_eq!(stats.deletes_removed, 1, "b@23");

    // Left: a@21 (read at 25), a@31, a@41, c@15.
    assert_eq!(e.count(ColumnFamily::Write), 4);
    assert_eq!(e.count(ColumnFamily::Default), 2, "a@20 and a@30");
    for (i, ts) in (25..45).enumerate() {
        assert_eq!(
            e.storage.scan(b"", None, 10, ts, false, &[]).unwrap(),
            before[i],
            "scan at {ts}"
        );
    }
    assert_eq!(e.storage.get(b"a", 25, &[]).unwrap(), Some(long(2)));
    assert_eq!(
        e.storage.get(b"a", 50, &[]).unwrap(),
        Some(b"short".to_vec())
    );
    assert_eq!(e.storage.get(b"b", 25, &[]).unwrap(), None);
    for result in [
        e.storage.get(b"a", 24, &[]).map(|_| ()),
        e.storage.scan(b"", None, 10, 3, false, &[]).map(|_| ()),
    ] {
        assert!(matches!(
            result,
            Err(MvccError::ReadBelowSafePoint { safe_point: 25, .. })
        ));
    }
}

#[test]
fn an_engine_snapshot_keeps_what_it_sees() {
    let e = env();
    e.commit(b"a", Some(&long(1)), 10);
    e.commit(b"a", Some(&long(2)), 20);
    let snap = e.storage.db().snapshot();
    e.sp.advance(30);
    e.storage
        .db()
        .compact_range(ColumnFamily::Write, None, None)
        .unwrap();
    assert_eq!(
        e.count(ColumnFamily::Write),
        2,
        "the snapshot still sees a@11"
    );
    assert!(e.filter.backlog().take().is_empty());
    drop(snap);
    e.collect();
    assert_eq!(e.count(ColumnFamily::Write), 1);
    assert_eq!(e.count(ColumnFamily::Default), 1);
    assert_eq!(e.storage.get(b"a", 30, &[]).unwrap(), Some(long(2)));
}

#[test]
fn a_prewrite_below_the_safe_point_is_refused() {
    let e = env();
    e.sp.advance(100);
    let opts = PrewriteOptions {
        primary: b"k".to_vec(),
        ttl_ms: 3000,
        min_commit_ts: 51,
        coordinator: None,
    };
    let result = e
        .storage
        .prewrite(&[Mutation::Put(b"k".to_vec(), b"v".to_vec())], &opts, 50);
    assert!(matches!(result, Err(MvccError::ReadBelowSafePoint { .. })));
    assert_eq!(e.storage.oldest_lock_ts().unwrap(), None);
}

/// One step of a random history: a put (long or short value) or a delete of one of a few
/// keys, or a flush (so versions spread over files and levels).
#[derive(Debug, Clone)]
enum Step {
    Put(u8, bool),
    Delete(u8),
    Flush,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (0u8..4, any::<bool>()).prop_map(|(k, l)| Step::Put(k, l)),
        2 => (0u8..4).prop_map(Step::Delete),
        1 => Just(Step::Flush),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn reads_at_or_above_the_safe_point_match_the_model_after_gc(
        steps in prop::collection::vec(step(), 1..40),
        sp_frac in 0.0f64..1.2,
        partial in any::<bool>(),
    ) {
        let e = env();
        // Model: key -> commit_ts -> value (None = deleted).
        let mut model: BTreeMap<u8, BTreeMap<Timestamp, Option<Vec<u8>>>> = BTreeMap::new();
        let mut ts = 10;
        for (i, s) in steps.iter().enumerate() {
            match s {
                Step::Flush => e.storage.db().flush().unwrap(),
                Step::Put(k, is_long) => {
                    let v = if *is_long { vec![i as u8; SHORT_VALUE_MAX + 1] } else { vec![i as u8; 3] };
                    e.commit(&[*k], Some(&v), ts);
                    model.entry(*k).or_default().insert(ts + 1, Some(v));
                }
                Step::Delete(k) => {
                    e.commit(&[*k], None, ts);
                    model.entry(*k).or_default().insert(ts + 1, None);
                }
            }
            ts += 10;
        }
        let safe_point = 10 + ((ts - 10) as f64 * sp_frac) as u64;
        e.sp.advance(safe_point);
        if partial {
            // A compaction of only part of the family first (some versions unseen).
            e.storage.db().compact_range(ColumnFamily::Write, None, Some(&[2])).unwrap();
            e.storage.gc_sweep(e.filter.backlog()).unwrap();
        }
        e.collect();
        e.collect();
        let expect = |k: u8, at: Timestamp| -> Option<Vec<u8>> {
            model.get(&k)?.range(..=at).next_back()?.1.clone()
        };
        for at in (safe_point..ts + 2).step_by(3) {
            for k in 0u8..4 {
                prop_assert_eq!(e.storage.get(&[k], at, &[]).unwrap(), expect(k, at), "key {} at {}", k, at);
            }
            let want: Vec<(Vec<u8>, Vec<u8>)> = (0u8..4)
                .filter_map(|k| expect(k, at).map(|v| (vec![k], v)))
                .collect();
            prop_assert_eq!(e.storage.scan(&[], None, 10, at, false, &[]).unwrap(), want);
        }
        // After full GC: exactly one version per key that has a value at the safe point
        // (plus what lies above it), and no deleted key left at or below it.
        let above: usize = model.values().map(|v| v.range(safe_point + 1..).count()).sum();
        let at_sp = (0u8..4).filter(|k| expect(*k, safe_point).is_some()).count();
        prop_assert_eq!(e.count(ColumnFamily::Write), above + at_sp);
        if safe_point > 10 {
            let below = e.storage.get(&[0], safe_point - 1, &[]);
            prop_assert!(
                matches!(below, Err(MvccError::ReadBelowSafePoint { .. })),
                "a read below the safe point is refused"
            );
        }
    }
}

#[derive(Debug)]
struct FailingStore;

impl super::SafePointStore for FailingStore {
    fn load(&self) -> Result<Option<Timestamp>> {
        Ok(None)
    }

    fn save(&self, _: Timestamp) -> Result<()> {
        Err(MvccError::Engine(crate::lsm::Error::InvalidArgument(
            "disk gone".into(),
        )))
    }
}

#[test]
fn a_safe_point_that_cannot_be_saved_does_not_advance() {
    let sp = GcSafePoint::new(10);
    let durable = sp.with_store(std::sync::Arc::new(FailingStore));
    assert!(durable.advance_durably(20).is_err());
    assert_eq!(sp.get(), 10, "no compaction may use an unsaved safe point");
    assert_eq!(durable.advance_durably(5).unwrap(), 10, "nothing to save");
}
