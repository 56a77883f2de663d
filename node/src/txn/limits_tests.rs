//! The coordinator's memory bounds: SERIALIZABLE read sets and ranges against the
//! transaction's limits, the node-wide budget of open transactions, the response budget of
//! point-read batches, and scan pages under a byte budget.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::lsm::{Db, Options};
use crate::mvcc::ScanLimit;
use crate::tso::{LocalTso, LocalTsoOptions, ManualClock};

use super::limits::TXN_OVERHEAD_BYTES;
use super::{ExecuteRequest, Isolation, Storage, TxnConfig, TxnError, TxnManager};

struct Env {
    _dir: tempfile::TempDir,
    mgr: TxnManager,
}

fn env_with(config: TxnConfig) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut options = Options::small_for_tests();
    options.memtable_size = 4 << 20;
    let db = Db::open(dir.path().join("db"), options).unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let tso = Arc::new(
        LocalTso::open_with_clock(LocalTsoOptions::new(dir.path().join("tso")), clock).unwrap(),
    );
    let mgr = TxnManager::new(Arc::new(Storage::new(db)), tso, config);
    Env { _dir: dir, mgr }
}

impl Env {
    fn put(&self, key: &[u8], value: &[u8]) {
        let (t, _) = self.mgr.begin(Isolation::Snapshot, false).unwrap();
        self.mgr.write(t, key, Some(value)).unwrap();
        self.mgr.commit(t).unwrap();
    }

    fn gets(&self) -> u64 {
        self.mgr.storage().db().stats().gets
    }
}

/// Whether `r` is the node budget's refusal (3 transactions' overhead + 500 bytes).
fn busy<T>(r: &Result<T, TxnError>) -> bool {
    matches!(r, Err(e @ TxnError::Busy { limit_name: "max_open_txn_bytes", limit })
        if e.is_retryable() && *limit == 3 * TXN_OVERHEAD_BYTES as u64 + 500)
}

fn is_too_large(r: &Result<impl std::fmt::Debug, TxnError>, name: &str) -> bool {
    matches!(r, Err(TxnError::TooLarge { limit_name, .. }) if *limit_name == name)
}

#[test]
fn serializable_read_sets_and_ranges_count_against_the_transaction_limits() {
    let env = env_with(TxnConfig {
        max_keys: 3,
        max_bytes: 100,
        ..TxnConfig::default()
    });
    env.put(b"k1", b"v");
    let (t, _) = env.mgr.begin(Isolation::Serializable, false).unwrap();
    for k in [&b"k1"[..], b"k2", b"k3", b"k1", b"k2"] {
        env.mgr.get(t, k).unwrap();
    }
    // Three distinct keys recorded; a read of a fourth is refused, the transaction lives on.
    assert!(is_too_large(&env.mgr.get(t, b"k4"), "max_keys"));
    assert_eq!(env.mgr.get(t, b"k1").unwrap(), Some(b"v".to_vec()));
    env.mgr.write(t, b"k1", Some(b"w")).unwrap();
    assert!(env.mgr.commit(t).unwrap().is_some());

    // A scanned range counts its bounds.
    let (t, _) = env.mgr.begin(Isolation::Serializable, false).unwrap();
    let long = vec![b'a'; 60];
    env.mgr.scan(t, b"", Some(&long), 10, false).unwrap();
    assert!(is_too_large(
        &env.mgr.scan(t, b"", Some(&long), 10, false),
        "max_bytes"
    ));
    // So do buffered writes, and the read set and writes share max_bytes.
    assert!(is_too_large(
        &env.mgr.write(t, b"x", Some(&[0u8; 45])),
        "max_bytes"
    ));
    env.mgr.write(t, b"x", Some(&[0u8; 30])).unwrap();
    // Replacing a buffered write frees what it replaced.
    env.mgr.write(t, b"x", Some(&[0u8; 35])).unwrap();
    env.mgr.rollback(t).unwrap();

    // Under SNAPSHOT nothing is recorded, so nothing is counted.
    let (t, _) = env.mgr.begin(Isolation::Snapshot, false).unwrap();
    for i in 0..10 {
        env.mgr.get(t, format!("key{i}").as_bytes()).unwrap();
        env.mgr.scan(t, b"", Some(&long), 10, false).unwrap();
    }
    env.mgr.rollback(t).unwrap();
}

#[test]
fn the_node_budget_refuses_begin_and_writes_until_transactions_finish() {
    let env = env_with(TxnConfig {
        max_open_txn_bytes: 3 * TXN_OVERHEAD_BYTES + 500,
        idle_timeout: Duration::from_secs(10),
        ..TxnConfig::default()
    });
    let (a, _) = env.mgr.begin(Isolation::Snapshot, false).unwrap();
    let (b, _) = env.mgr.begin(Isolation::Snapshot, false).unwrap();
    let (c, _) = env.mgr.begin(Isolation::Snapshot, true).unwrap();
    assert!(busy(&env.mgr.begin(Isolation::Snapshot, false)));
    env.mgr.write(a, b"k", Some(&[1u8; 399])).unwrap();
    assert!(busy(&env.mgr.write(b, b"j", Some(&[1u8; 200]))));
    // A refused write leaves the transaction open and unchanged.
    env.mgr.write(b, b"j", Some(&[1u8; 99])).unwrap();
    assert!(busy(&env.mgr.write(a, b"k2", Some(b"x"))));
    // Committing, rolling back and reaping give the memory back.
    env.mgr.commit(a).unwrap();
    let (d, _) = env.mgr.begin(Isolation::Snapshot, false).unwrap();
    env.mgr.write(d, b"k2", Some(&[1u8; 300])).unwrap();
    env.mgr.rollback(b).unwrap();
    env.mgr.rollback(c).unwrap();
    assert_eq!(
        env.mgr.reap_idle(Instant::now() + Duration::from_secs(11)),
        1
    );
    // A one-shot transaction too large for the node is refused at once, not retried.
    let big = ExecuteRequest {
        writes: vec![(b"big".to_vec(), Some(vec![0u8; 4000]))],
        ..ExecuteRequest::default()
    };
    assert!(busy(&env.mgr.execute(&big, 8)));
    let fits = ExecuteRequest {
        writes: vec![(b"small".to_vec(), Some(vec![0u8; 400]))],
        ..ExecuteRequest::default()
    };
    env.mgr.execute(&fits, 8).unwrap();
    for _ in 0..3 {
        env.mgr.begin(Isolation::Snapshot, true).unwrap();
    }
}

#[test]
fn point_read_batches_stop_reading_at_the_response_budget() {
    let env = env_with(TxnConfig {
        max_response_bytes: 10_000,
        ..TxnConfig::default()
    });
    let keys: Vec<Vec<u8>> = (0..5).map(|i| format!("k{i}").into_bytes()).collect();
    for k in &keys {
        env.put(k, &[7u8; 4000]);
    }
    let (t, _) = env.mgr.begin(Isolation::Snapshot, true).unwrap();
    // What reading one key costs the engine, whatever the read path.
    let before = env.gets();
    env.mgr.batch_get(t, &keys[..1]).unwrap();
    let per_key = env.gets() - before;
    assert!(per_key > 0);
    let before = env.gets();
    let r = env.mgr.batch_get(t, &keys);
    assert!(matches!(
        r,
        Err(TxnError::ResponseTooLarge {
            limit_name: "max_response_bytes",
            limit: 10_000
        })
    ));
    assert_eq!(
        env.gets() - before,
        3 * per_key,
        "reading stops at the third value (12 KB > 10 KB)"
    );
    assert_eq!(env.mgr.batch_get(t, &keys[..2]).unwrap().len(), 2);
    env.mgr.rollback(t).unwrap();

    // Execute reads the same way, and writes nothing when its reads are too large.
    let request = ExecuteRequest {
        reads: keys.clone(),
        writes: vec![(b"w".to_vec(), Some(b"v".to_vec()))],
        ..ExecuteRequest::default()
    };
    assert!(matches!(
        env.mgr.execute(&request, 8),
        Err(TxnError::ResponseTooLarge { .. })
    ));
    let (t, _) = env.mgr.begin(Isolation::Snapshot, true).unwrap();
    assert_eq!(env.mgr.get(t, b"w").unwrap(), None);
}

#[test]
fn transaction_scans_page_under_a_byte_budget_in_both_directions() {
    let env = env_with(TxnConfig::default());
    for i in 0..20u8 {
        env.put(&[b'k', i], &[i; 300]);
    }
    let (t, _) = env.mgr.begin(Isolation::Serializable, false).unwrap();
    // Buffered writes: replace, delete and add rows across the range.
    env.mgr.write(t, &[b'k', 3], Some(&[99; 500])).unwrap();
    env.mgr.write(t, &[b'k', 4], None).unwrap();
    env.mgr.write(t, &[b'k', 4, 0], Some(b"new")).unwrap();
    env.mgr.write(t, &[b'k', 19], None).unwrap();
    env.mgr.write(t, &[b'k', 30], Some(b"last")).unwrap();
    let full = env.mgr.scan(t, b"", None, 100, false).unwrap();
    assert_eq!(full.len(), 20);
    let limit = ScanLimit {
        pairs: 100,
        bytes: 1000,
    };
    for reverse in [false, true] {
        let (mut start, mut end) = (Vec::new(), None::<Vec<u8>>);
        let mut seen = Vec::new();
        for _ in 0..100 {
            let page = env
                .mgr
                .scan_page(t, &start, end.as_deref(), limit, reverse)
                .unwrap();
            let bytes: usize = page.pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
            assert!(
                bytes < 1000 + 510,
                "one pair past the budget at most: {bytes}"
            );
            let last = page.pairs.last().map(|(k, _)| k.clone());
            seen.extend(page.pairs);
            match (page.more, last) {
                (true, Some(last)) if reverse => end = Some(last),
                (true, Some(mut last)) => {
                    last.push(0);
                    start = last;
                }
                _ => break,
            }
        }
        if reverse {
            seen.reverse();
        }
        assert_eq!(seen, full, "reverse = {reverse}");
    }
    assert!(env.mgr.commit(t).unwrap().is_some());
}

#[test]
fn a_page_whose_stored_rows_are_all_deleted_by_the_transaction_still_makes_progress() {
    let env = env_with(TxnConfig::default());
    for i in 0..6u8 {
        env.put(&[b'k', i], &[i; 2000]);
    }
    // Every stored row fills the byte budget alone, so each stored page is one row.
    let limit = ScanLimit {
        pairs: 100,
        bytes: 1000,
    };
    let (t, _) = env.mgr.begin(Isolation::Serializable, false).unwrap();
    for i in 0..4u8 {
        env.mgr.write(t, &[b'k', i], None).unwrap();
    }
    let page = env.mgr.scan_page(t, b"", None, limit, false).unwrap();
    let keys: Vec<_> = page.pairs.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!((keys, page.more), (vec![vec![b'k', 4]], true));
    env.mgr.rollback(t).unwrap();

    let (t, _) = env.mgr.begin(Isolation::Serializable, false).unwrap();
    for i in 2..6u8 {
        env.mgr.write(t, &[b'k', i], None).unwrap();
    }
    let page = env.mgr.scan_page(t, b"", None, limit, true).unwrap();
    let keys: Vec<_> = page.pairs.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!((keys, page.more), (vec![vec![b'k', 1]], true));
    // Everything deleted: an empty page that says so.
    for i in 0..2u8 {
        env.mgr.write(t, &[b'k', i], None).unwrap();
    }
    let page = env.mgr.scan_page(t, b"", None, limit, false).unwrap();
    assert_eq!((page.pairs.len(), page.more), (0, false));
    env.mgr.rollback(t).unwrap();
}
