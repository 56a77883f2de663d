//! Prefix reads against the plain iterator: the same answers on random data with versions,
//! deletes, range deletes, snapshots, flushes and compactions; tables written without a
//! prefix filter (or by another extractor) still read; and the filters do skip tables.

use std::sync::Arc;

use proptest::prelude::*;

use crate::lsm::prefix::FixedPrefix;
use crate::lsm::{
    ColumnFamily, CompactionStyle, Db, DbIterator, IterOptions, Options, PrefixExtractor, SeqNo,
    Snapshot, WriteOptions,
};

/// Prefix length of the test extractor: keys are `p<digit>` then a suffix.
const PREFIX_LEN: usize = 2;

fn options(extractor: Option<Arc<dyn PrefixExtractor>>, style: CompactionStyle) -> Options {
    Options {
        prefix_extractor: extractor,
        compaction_style: style,
        background_work: false,
        ..Options::small_for_tests()
    }
}

fn collect_forward(it: &mut DbIterator) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    while it.valid() {
        out.push((it.key().to_vec(), it.value().to_vec()));
        it.next().unwrap();
    }
    out
}

fn collect_backward(it: &mut DbIterator) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    while it.valid() {
        out.push((it.key().to_vec(), it.value().to_vec()));
        it.prev().unwrap();
    }
    out.reverse();
    out
}

/// The reference answer: the plain iterator over the whole family, keeping the keys at or
/// after `from` whose prefix is `prefix` (keys shorter than the prefix have none).
fn reference(
    db: &Db,
    cf: ColumnFamily,
    prefix: &[u8],
    from: &[u8],
    snapshot: Option<SeqNo>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut it = db
        .iter(
            cf,
            IterOptions {
                snapshot,
                fill_cache: true,
                ..IterOptions::default()
            },
        )
        .unwrap();
    it.seek_to_first().unwrap();
    collect_forward(&mut it)
        .into_iter()
        .filter(|(k, _)| {
            k.len() >= PREFIX_LEN && &k[..PREFIX_LEN] == prefix && k.as_slice() >= from
        })
        .collect()
}

/// Checks every way of walking a prefix read against the reference.
fn check_prefix(db: &Db, cf: ColumnFamily, key: &[u8], snapshot: Option<SeqNo>) {
    let prefix = &key[..PREFIX_LEN];
    let want = reference(db, cf, prefix, key, snapshot);
    let opts = IterOptions {
        lower_bound: Some(key.to_vec()),
        snapshot,
        fill_cache: true,
        ..IterOptions::default()
    };
    let mut it = db.prefix_iter(cf, key, opts.clone()).unwrap();
    it.seek_to_first().unwrap();
    assert_eq!(collect_forward(&mut it), want, "forward from {key:?}");
    it.seek_to_last().unwrap();
    assert_eq!(collect_backward(&mut it), want, "backward to {key:?}");
    // The MVCC point read: seek, take the first entry.
    let mut it = db.prefix_iter(cf, key, opts).unwrap();
    it.seek(key).unwrap();
    assert_eq!(
        it.valid().then(|| (it.key().to_vec(), it.value().to_vec())),
        want.first().cloned(),
        "first entry at {key:?}"
    );
    // Without a lower bound the whole prefix comes back.
    let all = reference(db, cf, prefix, prefix, snapshot);
    let mut it = db
        .prefix_iter(
            cf,
            key,
            IterOptions {
                snapshot,
                ..IterOptions::default()
            },
        )
        .unwrap();
    it.seek_to_first().unwrap();
    assert_eq!(collect_forward(&mut it), all, "whole prefix of {key:?}");
}

#[derive(Debug, Clone)]
enum Op {
    Put(bool, Vec<u8>, u8),
    Delete(bool, Vec<u8>),
    DeleteRange(bool, Vec<u8>, Vec<u8>),
    Snapshot,
    Flush,
    Compact,
    Check(bool, Vec<u8>, usize),
}

fn family(write: bool) -> ColumnFamily {
    if write {
        ColumnFamily::Write
    } else {
        ColumnFamily::Default
    }
}

/// Keys `p0..p3` followed by up to 3 suffix bytes (the "versions"), plus a few keys
/// shorter than the prefix, which belong to no prefix.
fn arb_key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => (0u8..4, proptest::collection::vec(0u8..4, 0..4)).prop_map(|(p, rest)| {
            let mut k = vec![b'p', b'0' + p];
            k.extend(rest);
            k
        }),
        1 => proptest::collection::vec(b'p'..=b'q', 0..2),
    ]
}

fn arb_prefixed_key() -> impl Strategy<Value = Vec<u8>> {
    (0u8..5, proptest::collection::vec(0u8..4, 0..3)).prop_map(|(p, rest)| {
        let mut k = vec![b'p', b'0' + p];
        k.extend(rest);
        k
    })
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (any::<bool>(), arb_key(), any::<u8>()).prop_map(|(w, k, v)| Op::Put(w, k, v)),
        3 => (any::<bool>(), arb_key()).prop_map(|(w, k)| Op::Delete(w, k)),
        1 => (any::<bool>(), arb_key(), arb_key()).prop_map(|(w, a, b)| Op::DeleteRange(w, a, b)),
        1 => Just(Op::Snapshot),
        2 => Just(Op::Flush),
        1 => Just(Op::Compact),
        3 => (any::<bool>(), arb_prefixed_key(), 0usize..8).prop_map(|(w, k, s)| Op::Check(w, k, s)),
    ]
}

fn run_ops(ops: &[Op], style: CompactionStyle) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(
        dir.path(),
        options(Some(FixedPrefix::shared(PREFIX_LEN)), style),
    )
    .unwrap();
    let w = WriteOptions::default();
    let mut snapshots: Vec<Snapshot> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Put(cf, k, v) => {
                // Values long enough to fill blocks, and unique per put.
                let value = format!("{i}-{v}-").repeat(1 + usize::from(*v) % 8);
                db.put(family(*cf), k, value.as_bytes(), &w).unwrap();
            }
            Op::Delete(cf, k) => db.delete(family(*cf), k, &w).unwrap(),
            Op::DeleteRange(cf, a, b) => {
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                db.delete_range(family(*cf), lo, hi, &w).unwrap();
            }
            Op::Snapshot => snapshots.push(db.snapshot()),
            Op::Flush => db.flush().unwrap(),
            Op::Compact => db.compact_range(ColumnFamily::Default, None, None).unwrap(),
            Op::Check(cf, k, s) => {
                let snapshot = snapshots.get(*s).map(Snapshot::seq);
                check_prefix(&db, family(*cf), k, snapshot);
            }
        }
    }
    // A final check of every prefix, at the latest state and at every snapshot.
    db.flush().unwrap();
    for p in 0..5u8 {
        let key = [b'p', b'0' + p];
        for cf in [ColumnFamily::Default, ColumnFamily::Write] {
            check_prefix(&db, cf, &key, None);
            for s in &snapshots {
                check_prefix(&db, cf, &key, Some(s.seq()));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn prefix_reads_match_the_plain_iterator_leveled(ops in proptest::collection::vec(arb_op(), 1..250)) {
        run_ops(&ops, CompactionStyle::Leveled);
    }

    #[test]
    fn prefix_reads_match_the_plain_iterator_size_tiered(ops in proptest::collection::vec(arb_op(), 1..250)) {
        run_ops(&ops, CompactionStyle::SizeTiered);
    }
}

/// Writes `p0 .. p{n-1}`, each with `versions` suffixed versions, flushing after every
/// round so each round's versions sit in other tables.
fn load(db: &Db, n: u8, versions: u8) {
    let w = WriteOptions::default();
    for v in 0..versions {
        for p in 0..n {
            let key = [b'p', p, b'v', v];
            db.put(ColumnFamily::Write, &key, &[b'x'; 200], &w).unwrap();
        }
        db.flush().unwrap();
    }
}

#[test]
fn prefix_filters_skip_tables_that_lack_the_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(
        dir.path(),
        options(
            Some(FixedPrefix::shared(PREFIX_LEN)),
            CompactionStyle::SizeTiered,
        ),
    )
    .unwrap();
    // Each table holds one round of a few prefixes: most tables' key ranges cover a
    // prefix they do not hold only when rounds interleave, so write prefixes 0..4 in one
    // round and 0 and 4 only in the next rounds.
    let w = WriteOptions::default();
    for p in 0..5u8 {
        db.put(ColumnFamily::Write, &[b'p', p, b'v', 0], b"first", &w)
            .unwrap();
    }
    db.flush().unwrap();
    for v in 1..4u8 {
        for p in [0u8, 4] {
            db.put(ColumnFamily::Write, &[b'p', p, b'v', v], b"later", &w)
                .unwrap();
        }
        db.flush().unwrap();
    }
    let before = db.stats();
    // Prefix 2 is only in the first table; the three later tables span p0..p4 and miss it.
    let mut it = db
        .prefix_iter(ColumnFamily::Write, &[b'p', 2], IterOptions::default())
        .unwrap();
    it.seek_to_first().unwrap();
    assert_eq!(
        collect_forward(&mut it),
        vec![(vec![b'p', 2, b'v', 0], b"first".to_vec())]
    );
    let after = db.stats();
    assert_eq!(after.prefix_reads - before.prefix_reads, 1);
    assert_eq!(after.prefix_table_checks - before.prefix_table_checks, 4);
    // Bloom filters have false positives; with 10 bits per key and two prefixes per table,
    // all three skips are what this data gives (checked deterministically: fixed hash).
    assert_eq!(
        after.prefix_bloom_filtered - before.prefix_bloom_filtered,
        3
    );
}

#[test]
fn tables_without_the_extractor_still_read() {
    let dir = tempfile::tempdir().unwrap();
    // Format-1 tables (no extractor), then tables of another extractor.
    {
        let db = Db::open(dir.path(), options(None, CompactionStyle::SizeTiered)).unwrap();
        load(&db, 6, 2);
        db.close().unwrap();
    }
    {
        let other = FixedPrefix::shared(3);
        let db = Db::open(
            dir.path(),
            options(Some(other), CompactionStyle::SizeTiered),
        )
        .unwrap();
        let w = WriteOptions::default();
        for p in 0..6u8 {
            db.put(ColumnFamily::Write, &[b'p', p, b'v', 9], b"other", &w)
                .unwrap();
        }
        db.flush().unwrap();
        db.close().unwrap();
    }
    let db = Db::open(
        dir.path(),
        options(
            Some(FixedPrefix::shared(PREFIX_LEN)),
            CompactionStyle::SizeTiered,
        ),
    )
    .unwrap();
    // Without the extractor, a prefix read is refused rather than guessed at.
    let plain = tempfile::tempdir().unwrap();
    let no_extractor = Db::open(plain.path(), options(None, CompactionStyle::Leveled)).unwrap();
    assert!(no_extractor
        .prefix_iter(ColumnFamily::Write, b"p0", IterOptions::default())
        .is_err());
    let before = db.stats();
    for p in 0..7u8 {
        check_prefix(&db, ColumnFamily::Write, &[b'p', p], None);
    }
    // No table carries this extractor's filter: none may be skipped.
    let after = db.stats();
    assert!(after.prefix_table_checks > before.prefix_table_checks);
    assert_eq!(after.prefix_bloom_filtered, before.prefix_bloom_filtered);
    // A key shorter than the prefix has none.
    assert!(db
        .prefix_iter(ColumnFamily::Write, b"p", IterOptions::default())
        .is_err());
}
