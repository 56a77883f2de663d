//! Scenario tests of the actions against a real engine.

use crate::lsm::{Db, Options, WriteOptions};
use crate::mvcc::{Coordinator, LockKind, MvccError, MvccReader, MvccTxn, Result, Timestamp};

use super::{
    check_txn_status, commit, heartbeat, prewrite, resolve_lock, rollback, Mutation,
    PrewriteOptions, TxnStatus,
};

struct Env {
    _dir: tempfile::TempDir,
    db: Db,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), Options::small_for_tests()).unwrap();
        Env { _dir: dir, db }
    }

    fn reader(&self) -> MvccReader<'_> {
        MvccReader::new(&self.db, None)
    }

    fn apply(&self, txn: MvccTxn) {
        if !txn.is_empty() {
            self.db
                .write(txn.into_batch(), &WriteOptions::default())
                .unwrap();
        }
    }

    fn run(
        &self,
        start_ts: Timestamp,
        f: impl FnOnce(&mut MvccTxn, &MvccReader<'_>) -> Result<()>,
    ) -> Result<()> {
        let mut txn = MvccTxn::new(start_ts);
        f(&mut txn, &self.reader())?;
        self.apply(txn);
        Ok(())
    }

    fn prewrite(&self, m: Mutation, primary: &[u8], start_ts: Timestamp) -> Result<()> {
        let opts = PrewriteOptions {
            primary: primary.to_vec(),
            ttl_ms: 3000,
            min_commit_ts: start_ts + 1,
            coordinator: None,
        };
        self.run(start_ts, |txn, r| prewrite(txn, r, &m, &opts))
    }

    fn commit(&self, key: &[u8], start_ts: Timestamp, commit_ts: Timestamp) -> Result<()> {
        self.run(start_ts, |txn, r| commit(txn, r, key, commit_ts))
    }

    fn rollback(&self, key: &[u8], start_ts: Timestamp) -> Result<()> {
        self.run(start_ts, |txn, r| rollback(txn, r, key))
    }

    fn get(&self, key: &[u8], ts: Timestamp) -> Result<Option<Vec<u8>>> {
        self.reader().get(key, ts, &[])
    }

    fn put(&self, key: &[u8], value: &[u8], start_ts: Timestamp, commit_ts: Timestamp) {
        self.prewrite(Mutation::Put(key.to_vec(), value.to_vec()), key, start_ts)
            .unwrap();
        self.commit(key, start_ts, commit_ts).unwrap();
    }
}

fn put(k: &[u8], v: &[u8]) -> Mutation {
    Mutation::Put(k.to_vec(), v.to_vec())
}

#[test]
fn prewrite_commit_and_read_at_timestamps() {
    let env = Env::new();
    env.prewrite(put(b"k", b"v"), b"k", 10).unwrap();
    assert!(
        matches!(env.get(b"k", 15), Err(MvccError::KeyIsLocked(ref l)) if l.start_ts == 10 && l.primary == b"k")
    );
    assert_eq!(
        env.get(b"k", 5).unwrap(),
        None,
        "a lock newer than the read does not block it"
    );
    assert_eq!(
        env.reader().get(b"k", 15, &[10]).unwrap(),
        None,
        "own locks are bypassed"
    );
    env.commit(b"k", 10, 20).unwrap();
    assert_eq!(env.get(b"k", 15).unwrap(), None);
    assert_eq!(env.get(b"k", 20).unwrap(), Some(b"v".to_vec()));
    assert_eq!(env.get(b"k", 99).unwrap(), Some(b"v".to_vec()));
    assert!(env.reader().load_lock(b"k").unwrap().is_none());
}

#[test]
fn long_values_live_in_the_default_family_and_deletes_hide_them() {
    let env = Env::new();
    let long = vec![7u8; 1000];
    env.put(b"k", &long, 10, 11);
    assert_eq!(env.get(b"k", 11).unwrap(), Some(long.clone()));
    env.prewrite(Mutation::Delete(b"k".to_vec()), b"k", 20)
        .unwrap();
    env.commit(b"k", 20, 21).unwrap();
    assert_eq!(env.get(b"k", 21).unwrap(), None);
    assert_eq!(
        env.get(b"k", 15).unwrap(),
        Some(long),
        "older snapshots still see it"
    );
}

#[test]
fn a_newer_commit_is_a_write_conflict() {
    let env = Env::new();
    env.put(b"k", b"a", 10, 20);
    let err = env.prewrite(put(b"k", b"b"), b"k", 15).unwrap_err();
    assert!(
        matches!(
            err,
            MvccError::WriteConflict {
                conflict_start_ts: 10,
                conflict_commit_ts: 20,
                ..
            }
        ),
        "{err}"
    );
    env.prewrite(put(b"k", b"b"), b"k", 25).unwrap();
}

#[test]
fn another_transactions_lock_blocks_prewrite() {
    let env = Env::new();
    env.prewrite(put(b"k", b"a"), b"p1", 10).unwrap();
    let err = env.prewrite(put(b"k", b"b"), b"p2", 12).unwrap_err();
    assert!(matches!(err, MvccError::KeyIsLocked(ref l) if l.start_ts == 10 && l.primary == b"p1"));
}

#[test]
fn retried_prewrite_and_commit_are_idempotent() {
    let env = Env::new();
    env.prewrite(put(b"k", b"v"), b"k", 10).unwrap();
    env.prewrite(put(b"k", b"v"), b"k", 10).unwrap();
    env.commit(b"k", 10, 11).unwrap();
    env.commit(b"k", 10, 11).unwrap();
    env.prewrite(put(b"k", b"v"), b"k", 10).unwrap();
    assert!(
        env.reader().load_lock(b"k").unwrap().is_none(),
        "a late prewrite after commit does not relock"
    );
    assert_eq!(env.get(b"k", 11).unwrap(), Some(b"v".to_vec()));
}

#[test]
fn rollback_is_final() {
    let env = Env::new();
    env.prewrite(put(b"k", &[1u8; 500]), b"k", 10).unwrap();
    env.rollback(b"k", 10).unwrap();
    env.rollback(b"k", 10).unwrap();
    assert!(env.reader().load_lock(b"k").unwrap().is_none());
    assert!(matches!(
        env.commit(b"k", 10, 11),
        Err(MvccError::AlreadyRolledBack { start_ts: 10, .. })
    ));
    assert!(matches!(
        env.prewrite(put(b"k", b"v"), b"k", 10),
        Err(MvccError::AlreadyRolledBack { .. })
    ));
    assert_eq!(env.get(b"k", 99).unwrap(), None);
    // Rolling back a key never locked still leaves the protective record.
    env.rollback(b"other", 30).unwrap();
    assert!(matches!(
        env.prewrite(put(b"other", b"v"), b"other", 30),
        Err(MvccError::AlreadyRolledBack { .. })
    ));
}

#[test]
fn committed_transactions_cannot_be_rolled_back() {
    let env = Env::new();
    env.put(b"k", b"v", 10, 11);
    assert!(matches!(
        env.rollback(b"k", 10),
        Err(MvccError::Committed { commit_ts: 11, .. })
    ));
    assert!(matches!(
        env.commit(b"nolock", 10, 11),
        Err(MvccError::TxnLockNotFound { .. })
    ));
}

#[test]
fn lock_mutations_commit_without_changing_the_value() {
    let env = Env::new();
    env.put(b"k", b"v1", 10, 11);
    env.prewrite(Mutation::Lock(b"k".to_vec()), b"k", 20)
        .unwrap();
    assert_eq!(
        env.reader().load_lock(b"k").unwrap().map(|l| l.kind),
        Some(LockKind::Lock)
    );
    assert_eq!(
        env.get(b"k", 25).unwrap(),
        Some(b"v1".to_vec()),
        "a Lock lock does not block reads"
    );
    env.commit(b"k", 20, 21).unwrap();
    assert_eq!(env.get(b"k", 25).unwrap(), Some(b"v1".to_vec()));
    // But it does conflict with a writer that started before it committed.
    assert!(matches!(
        env.prewrite(put(b"k", b"v2"), b"k", 15),
        Err(MvccError::WriteConflict { .. })
    ));
}

#[test]
fn commit_below_min_commit_ts_is_refused() {
    let env = Env::new();
    let opts = PrewriteOptions {
        primary: b"k".to_vec(),
        ttl_ms: 3000,
        min_commit_ts: 50,
        coordinator: None,
    };
    env.run(10, |txn, r| prewrite(txn, r, &put(b"k", b"v"), &opts))
        .unwrap();
    assert!(matches!(
        env.commit(b"k", 10, 40),
        Err(MvccError::CommitTsExpired {
            min_commit_ts: 50,
            ..
        })
    ));
    env.commit(b"k", 10, 50).unwrap();
}

/// A timestamp `ms` milliseconds into the hybrid clock.
fn at_ms(ms: u64) -> Timestamp {
    ms << 18
}

#[test]
fn check_txn_status_reports_running_committed_and_rolls_back_expired() {
    let env = Env::new();
    let start = at_ms(1_000);
    env.prewrite(put(b"pk", b"v"), b"pk", start).unwrap(); // ttl 3000 ms
    let status = |now_ms: u64, push: Option<Timestamp>| {
        let mut out = None;
        env.run(start, |txn, r| {
            out = Some(check_txn_status(txn, r, b"pk", at_ms(now_ms), push, None)?);
            Ok(())
        })
        .unwrap();
        out.unwrap()
    };
    assert_eq!(
        status(2_000, None),
        TxnStatus::Locked {
            ttl_ms: 3000,
            min_commit_ts: start + 1
        }
    );
    // A reader at 2_500 ms pushes min_commit_ts past itself and may then ignore the lock.
    let reader_ts = at_ms(2_500);
    assert_eq!(
        status(2_500, Some(reader_ts)),
        TxnStatus::Locked {
            ttl_ms: 3000,
            min_commit_ts: reader_ts + 1
        }
    );
    assert!(matches!(
        env.commit(b"pk", start, reader_ts),
        Err(MvccError::CommitTsExpired { .. })
    ));
    // A heartbeat extends the TTL, so 5_000 ms is still alive.
    let mut ttl = None;
    env.run(start, |txn, r| {
        ttl = heartbeat(txn, r, b"pk", 10_000)?;
        Ok(())
    })
    .unwrap();
    assert_eq!(ttl, Some(10_000));
    assert!(matches!(
        status(5_000, None),
        TxnStatus::Locked { ttl_ms: 10_000, .. }
    ));
    // Past the TTL the lock is rolled back, for good.
    assert_eq!(status(12_000, None), TxnStatus::RolledBack { now: true });
    assert_eq!(status(12_001, None), TxnStatus::RolledBack { now: false });
    assert!(matches!(
        env.commit(b"pk", start, at_ms(12_002)),
        Err(MvccError::AlreadyRolledBack { .. })
    ));
}

#[test]
fn check_txn_status_of_committed_and_never_prewritten_transactions() {
    let env = Env::new();
    env.put(b"pk", b"v", at_ms(10), at_ms(11));
    let mut status = None;
    env.run(at_ms(10), |txn, r| {
        status = Some(check_txn_status(txn, r, b"pk", at_ms(20), None, None)?);
        Ok(())
    })
    .unwrap();
    assert_eq!(
        status,
        Some(TxnStatus::Committed {
            commit_ts: at_ms(11)
        })
    );
    // A transaction whose primary was never prewritten is rolled back, so its prewrite,
    // should it still arrive, fails.
    env.run(at_ms(30), |txn, r| {
        status = Some(check_txn_status(txn, r, b"pk2", at_ms(40), None, None)?);
        Ok(())
    })
    .unwrap();
    assert_eq!(status, Some(TxnStatus::RolledBack { now: true }));
    assert!(matches!(
        env.prewrite(put(b"pk2", b"v"), b"pk2", at_ms(30)),
        Err(MvccError::AlreadyRolledBack { .. })
    ));
}

#[test]
fn resolve_lock_follows_the_primary() {
    let env = Env::new();
    let t = at_ms(100);
    for k in [b"pk".as_slice(), b"s1"] {
        env.prewrite(put(k, k), b"pk", t).unwrap();
    }
    env.commit(b"pk", t, t + 5).unwrap();
    // A reader meets s1's lock, finds the primary committed, resolves s1 forward.
    assert!(matches!(
        env.get(b"s1", t + 10),
        Err(MvccError::KeyIsLocked(_))
    ));
    env.run(t, |txn, r| resolve_lock(txn, r, b"s1", Some(t + 5)))
        .unwrap();
    env.run(t, |txn, r| resolve_lock(txn, r, b"s1", Some(t + 5)))
        .unwrap();
    assert_eq!(env.get(b"s1", t + 10).unwrap(), Some(b"s1".to_vec()));
    // A rolled-back transaction's secondary is resolved backward.
    let u = at_ms(200);
    env.prewrite(put(b"pk", b"x"), b"pk", u).unwrap();
    env.prewrite(put(b"s2", b"x"), b"pk", u).unwrap();
    env.rollback(b"pk", u).unwrap();
    env.run(u, |txn, r| resolve_lock(txn, r, b"s2", None))
        .unwrap();
    assert!(env.reader().load_lock(b"s2").unwrap().is_none());
    assert_eq!(env.get(b"s2", u + 10).unwrap(), None);
}

#[test]
fn scans_see_one_snapshot_in_both_directions_and_meet_locks() {
    let env = Env::new();
    env.put(b"a", b"a1", 10, 11);
    env.put(b"b", b"b1", 10, 11);
    env.put(b"c", &[3u8; 200], 10, 11);
    env.put(b"a", b"a2", 20, 21);
    env.prewrite(Mutation::Delete(b"b".to_vec()), b"b", 22)
        .unwrap();
    env.commit(b"b", 22, 23).unwrap();
    env.prewrite(Mutation::Lock(b"c".to_vec()), b"c", 24)
        .unwrap();
    env.commit(b"c", 24, 25).unwrap();
    let r = env.reader();
    let keys = |v: Vec<(Vec<u8>, Vec<u8>)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    let all = r.scan(b"", None, 100, 30, false, &[]).unwrap();
    assert_eq!(
        all,
        vec![
            (b"a".to_vec(), b"a2".to_vec()),
            (b"c".to_vec(), vec![3u8; 200])
        ]
    );
    assert_eq!(
        keys(r.scan(b"", None, 100, 15, false, &[]).unwrap()),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    assert_eq!(
        r.scan(b"", None, 100, 15, false, &[]).unwrap()[0].1,
        b"a1".to_vec()
    );
    assert_eq!(
        keys(r.scan(b"", None, 100, 15, true, &[]).unwrap()),
        vec![b"c".to_vec(), b"b".to_vec(), b"a".to_vec()]
    );
    assert_eq!(
        r.scan(b"", None, 100, 30, true, &[]).unwrap()[1],
        (b"a".to_vec(), b"a2".to_vec())
    );
    assert_eq!(
        keys(r.scan(b"b", Some(b"c"), 100, 15, false, &[]).unwrap()),
        vec![b"b".to_vec()]
    );
    assert_eq!(
        keys(r.scan(b"", None, 2, 15, false, &[]).unwrap()),
        vec![b"a".to_vec(), b"b".to_vec()]
    );
    assert_eq!(
        keys(r.scan(b"", None, 1, 15, true, &[]).unwrap()),
        vec![b"c".to_vec()]
    );
    assert!(r.scan(b"", None, 100, 5, false, &[]).unwrap().is_empty());
    // A lock inside the scanned range blocks; one outside what a limited scan covers does not.
    env.prewrite(put(b"d", b"d"), b"d", 40).unwrap();
    let r = env.reader();
    assert!(
        matches!(r.scan(b"", None, 100, 50, false, &[]), Err(MvccError::KeyIsLocked(ref l)) if l.key == b"d")
    );
    assert_eq!(
        keys(r.scan(b"", None, 1, 50, false, &[]).unwrap()),
        vec![b"a".to_vec()]
    );
    assert!(
        r.scan(b"", None, 100, 35, false, &[]).is_ok(),
        "the lock's transaction started after the read"
    );
    assert_eq!(
        keys(r.scan(b"", None, 100, 50, false, &[40]).unwrap()),
        vec![b"a".to_vec(), b"c".to_vec()]
    );
}

#[test]
fn another_transactions_rollback_record_is_no_conflict() {
    let env = Env::new();
    env.put(b"k", b"v", 5, 6);
    // Transaction 20 rolls back on k, leaving a rollback record at ts 20.
    env.rollback(b"k", 20).unwrap();
    // Transaction 10 (started before 20) can still write k: nothing committed after it.
    env.prewrite(put(b"k", b"mine"), b"k", 10).unwrap();
    env.commit(b"k", 10, 30).unwrap();
    assert_eq!(env.get(b"k", 30).unwrap(), Some(b"mine".to_vec()));
}

#[test]
fn a_lock_of_an_earlier_run_of_this_node_is_rolled_back_at_once() {
    let env = Env::new();
    let run = |run_id| Coordinator { node_id: 1, run_id };
    let start = at_ms(1_000);
    let opts = PrewriteOptions {
        primary: b"pk".to_vec(),
        ttl_ms: 60_000,
        min_commit_ts: start + 1,
        coordinator: Some(run(1)),
    };
    env.run(start, |txn, r| prewrite(txn, r, &put(b"pk", b"v"), &opts))
        .unwrap();
    let status = |local: Coordinator| {
        let mut out = None;
        env.run(start, |txn, r| {
            out = Some(check_txn_status(
                txn,
                r,
                b"pk",
                at_ms(2_000),
                None,
                Some(&local),
            )?);
            Ok(())
        })
        .unwrap();
        out.unwrap()
    };
    // The same run, or another node, must wait out the TTL (59 s to go).
    assert!(matches!(status(run(1)), TxnStatus::Locked { .. }));
    let other_node = Coordinator {
        node_id: 2,
        run_id: 9,
    };
    assert!(matches!(status(other_node), TxnStatus::Locked { .. }));
    // The next run of node 1 knows the coordinator died with run 1.
    assert_eq!(status(run(2)), TxnStatus::RolledBack { now: true });
    assert!(matches!(
        env.commit(b"pk", start, at_ms(2_001)),
        Err(MvccError::AlreadyRolledBack { .. })
    ));
}
