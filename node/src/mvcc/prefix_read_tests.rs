//! MVCC reads over prefix reads give the answers of the plain iterators: two engines, one
//! opened with [`MvccPrefixExtractor`] and one without, get the same random commits,
//! rollbacks, locks, range deletions, flushes and compactions, and every read of the
//! reader (get at a timestamp, newest commit record, newest data record, a transaction's
//! commit record) must agree, at the latest state and at engine snapshots.

use std::sync::Arc;

use proptest::prelude::*;

use crate::lsm::{
    ColumnFamily, Db, Options, PrefixExtractor, SeqNo, Snapshot, WriteBatch, WriteOptions,
};

use super::key::{lock_key, prefix_reads_enabled, MvccPrefixExtractor};
use super::record::{Lock, LockKind, Write, WriteKind, SHORT_VALUE_MAX};
use super::{MvccReader, MvccTxn, Timestamp};

#[derive(Debug, Clone)]
enum Op {
    /// Commit of `key` by transaction `start_ts` at `start_ts + delay`.
    Commit {
        key: u8,
        start_ts: Timestamp,
        delay: Timestamp,
        kind: u8,
        long: bool,
    },
    Lock {
        key: u8,
        start_ts: Timestamp,
    },
    Unlock {
        key: u8,
    },
    /// Range deletion over the `write` family of keys `[a, b)`.
    DeleteRange {
        a: u8,
        b: u8,
    },
    Snapshot,
    Flush,
    Compact,
}

/// User keys: a few, some longer than one memcomparable group, some prefixes of others.
fn user_key(k: u8) -> Vec<u8> {
    match k % 4 {
        0 => vec![b'k', k],
        1 => vec![b'k', k, 0],
        2 => format!("long-key-{k}-past-one-group").into_bytes(),
        _ => vec![b'k'],
    }
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0u8..12, 1u64..200, 1u64..20, 0u8..4, any::<bool>()).prop_map(
            |(key, start_ts, delay, kind, long)| Op::Commit { key, start_ts, delay, kind, long }
        ),
        2 => (0u8..12, 1u64..200).prop_map(|(key, start_ts)| Op::Lock { key, start_ts }),
        1 => (0u8..12).prop_map(|key| Op::Unlock { key }),
        1 => (0u8..12, 0u8..12).prop_map(|(a, b)| Op::DeleteRange { a, b }),
        1 => Just(Op::Snapshot),
        3 => Just(Op::Flush),
        1 => Just(Op::Compact),
    ]
}

fn batch_of(op: &Op) -> Option<WriteBatch> {
    match *op {
        Op::Commit {
            key,
            start_ts,
            delay,
            kind,
            long,
        } => {
            let key = user_key(key);
            let mut txn = MvccTxn::new(start_ts);
            let kind = match kind {
                0 => WriteKind::Put,
                1 => WriteKind::Delete,
                2 => WriteKind::Rollback,
                _ => WriteKind::Lock,
            };
            let value = format!("value of {start_ts}").repeat(if long { 30 } else { 1 });
            let short_value = (kind == WriteKind::Put && value.len() <= SHORT_VALUE_MAX)
                .then(|| value.clone().into_bytes());
            if kind == WriteKind::Put && short_value.is_none() {
                txn.put_value(&key, value.as_bytes());
            }
            let commit_ts = if kind == WriteKind::Rollback {
                start_ts
            } else {
                start_ts + delay
            };
            let write = Write {
                kind,
                start_ts,
                short_value,
            };
            txn.put_write(&key, commit_ts, &write);
            Some(txn.into_batch())
        }
        Op::Lock { key, start_ts } => {
            let mut txn = MvccTxn::new(start_ts);
            let lock = Lock {
                kind: LockKind::Put,
                primary: user_key(key),
                start_ts,
                ttl_ms: 1000,
                min_commit_ts: start_ts,
                short_value: None,
                coordinator: None,
            };
            txn.put_lock(&user_key(key), &lock);
            Some(txn.into_batch())
        }
        Op::Unlock { key } => {
            let mut txn = MvccTxn::new(0);
            txn.unlock_key(&user_key(key));
            Some(txn.into_batch())
        }
        Op::DeleteRange { a, b } => {
            let (a, b) = (lock_key(&user_key(a)), lock_key(&user_key(b)));
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let mut batch = WriteBatch::new();
            batch.delete_range(ColumnFamily::Write, &lo, &hi);
            Some(batch)
        }
        _ => None,
    }
}

fn open(dir: &std::path::Path, prefix: bool) -> Db {
    let options = Options {
        prefix_extractor: prefix.then(|| Arc::new(MvccPrefixExtractor) as Arc<dyn PrefixExtractor>),
        background_work: false,
        ..Options::small_for_tests()
    };
    Db::open(dir, options).unwrap()
}

/// Every read of both readers, as comparable text.
fn reads(db: &Db, snapshot: Option<SeqNo>) -> Vec<String> {
    let r = MvccReader::new(db, snapshot);
    let mut out = Vec::new();
    for k in 0..12u8 {
        let key = user_key(k);
        for ts in (0..230).step_by(7) {
            out.push(format!("get {k} {ts}: {:?}", r.get(&key, ts, &[])));
            out.push(format!("write {k} {ts}: {:?}", r.seek_write(&key, ts)));
            out.push(format!("data {k} {ts}: {:?}", r.seek_data_write(&key, ts)));
            out.push(format!(
                "record {k} {ts}: {:?}",
                r.txn_commit_record(&key, ts)
            ));
        }
    }
    out
}

fn run(ops: &[Op]) {
    let (da, db_) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let with = open(da.path(), true);
    let without = open(db_.path(), false);
    assert!(prefix_reads_enabled(&with));
    assert!(!prefix_reads_enabled(&without));
    let w = WriteOptions::default();
    let mut snaps: Vec<(Snapshot, Snapshot)> = Vec::new();
    for op in ops {
        if let Some(batch) = batch_of(op) {
            with.write(batch.clone(), &w).unwrap();
            without.write(batch, &w).unwrap();
            continue;
        }
        match op {
            Op::Snapshot => snaps.push((with.snapshot(), without.snapshot())),
            Op::Flush => {
                with.flush().unwrap();
                without.flush().unwrap();
            }
            Op::Compact => {
                with.compact_range(ColumnFamily::Write, None, None).unwrap();
                without
                    .compact_range(ColumnFamily::Write, None, None)
                    .unwrap();
            }
            _ => {}
        }
    }
    assert_eq!(reads(&with, None), reads(&without, None));
    for (a, b) in &snaps {
        assert_eq!(reads(&with, Some(a.seq())), reads(&without, Some(b.seq())));
    }
    // Flushed, the data is all in tables: the same answers again.
    with.flush().unwrap();
    without.flush().unwrap();
    assert_eq!(reads(&with, None), reads(&without, None));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn prefix_reads_answer_like_plain_iterators(ops in proptest::collection::vec(arb_op(), 1..120)) {
        run(&ops);
    }
}

#[test]
fn commit_record_reads_skip_tables_without_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), true);
    let w = WriteOptions::default();
    // Ten tables, each with one version of every even key and of key 1 only in the first.
    for round in 0..10u64 {
        let mut batch_keys: Vec<u8> = (0..12).step_by(2).collect();
        if round == 0 {
            batch_keys.push(1);
        }
        for k in batch_keys {
            let op = Op::Commit {
                key: k,
                start_ts: 10 + round * 10,
                delay: 1,
                kind: 0,
                long: false,
            };
            db.write(batch_of(&op).unwrap(), &w).unwrap();
        }
        db.flush().unwrap();
    }
    let before = db.stats();
    let got = MvccReader::new(&db, None)
        .get(&user_key(1), 500, &[])
        .unwrap();
    assert_eq!(got, Some(b"value of 10".to_vec()));
    let after = db.stats();
    let checks = after.prefix_table_checks - before.prefix_table_checks;
    let skipped = after.prefix_bloom_filtered - before.prefix_bloom_filtered;
    assert!(checks >= 9, "{checks} tables checked");
    assert!(
        skipped >= checks - 2,
        "only {skipped} of {checks} tables skipped"
    );
}

/// Lock keys carry no timestamp, so lock lookups already skip tables with the whole-key
/// bloom filter; they need no prefix filter.
#[test]
fn lock_lookups_skip_tables_with_the_whole_key_filter() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), true);
    let w = WriteOptions::default();
    // Eight tables of locks on keys 0, 4 and 8, whose ranges all span key 1.
    for round in 0..8u64 {
        for key in [0u8, 4, 8] {
            let op = Op::Lock {
                key,
                start_ts: 100 + round,
            };
            db.write(batch_of(&op).unwrap(), &w).unwrap();
        }
        db.flush().unwrap();
    }
    let before = db.stats();
    assert_eq!(
        MvccReader::new(&db, None).load_lock(&user_key(1)).unwrap(),
        None
    );
    let lock = MvccReader::new(&db, None).load_lock(&user_key(4)).unwrap();
    assert_eq!(lock.map(|l| l.start_ts), Some(107));
    let after = db.stats();
    let probes = after.table_probes - before.table_probes;
    let filtered = after.bloom_filtered - before.bloom_filtered;
    // Key 1: all eight tables probed, (nearly) all filtered; key 4: found in the newest.
    assert!(probes >= 9, "{probes} probes");
    assert!(filtered >= 7, "only {filtered} of {probes} probes filtered");
}
