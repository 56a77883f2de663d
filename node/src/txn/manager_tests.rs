//! Transaction-level tests: isolation anomalies, lock resolution, limits and timeouts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::lsm::{Db, Options};
use crate::mvcc::MvccError;
use crate::tso::{LocalTso, LocalTsoOptions, ManualClock, Tso};

use super::actions::{Mutation, PrewriteOptions};
use super::{Isolation, Storage, TxnConfig, TxnError, TxnManager};

struct Env {
    _dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    tso: Arc<LocalTso>,
    mgr: TxnManager,
}

fn env_with(config: TxnConfig) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db"), Options::small_for_tests()).unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let tso = Arc::new(
        LocalTso::open_with_clock(LocalTsoOptions::new(dir.path().join("tso")), clock.clone())
            .unwrap(),
    );
    let mgr = TxnManager::new(Arc::new(Storage::new(db)), tso.clone(), config);
    Env {
        _dir: dir,
        clock,
        tso,
        mgr,
    }
}

fn env() -> Env {
    env_with(TxnConfig {
        lock_wait: Duration::from_millis(50),
        ..TxnConfig::default()
    })
}

impl Env {
    fn put(&self, key: &[u8], value: &[u8]) {
        let (t, _) = self.mgr.begin(Isolation::Snapshot, false).unwrap();
        self.mgr.write(t, key, Some(value)).unwrap();
        self.mgr.commit(t).unwrap();
    }

    fn read(&self, key: &[u8]) -> Option<Vec<u8>> {
        let (t, _) = self.mgr.begin(Isolation::Snapshot, true).unwrap();
        let v = self.mgr.get(t, key).unwrap();
        self.mgr.commit(t).unwrap();
        v
    }
}

fn is_conflict(r: Result<Option<u64>, TxnError>) -> bool {
    matches!(r, Err(ref e @ TxnError::Conflict { .. }) if e.is_retryable())
}

#[test]
fn reads_see_own_writes_and_rollback_discards_them() {
    let env = env();
    env.put(b"k", b"old");
    let (t, _) = env.mgr.begin(Isolation::Snapshot, false).unwrap();
    env.mgr.write(t, b"k", Some(b"new")).unwrap();
    env.mgr.write(t, b"gone", None).unwrap();
    assert_eq!(env.mgr.get(t, b"k").unwrap(), Some(b"new".to_vec()));
    env.mgr.rollback(t).unwrap();
    assert_eq!(env.read(b"k"), Some(b"old".to_vec()));
    assert!(matches!(env.mgr.get(t, b"k"), Err(TxnError::NotFound(_))));
    assert!(matches!(env.mgr.commit(t), Err(TxnError::NotFound(_))));
}

#[test]
fn lost_update_is_prevented() {
    let env = env();
    env.put(b"counter", b"0");
    let (a, _) = env.mgr.begin(Isolation::Snapshot, false).unwrap();
    let (b, _) = env.mgr.begin(Isolation::Snapshot, false).unwrap();
    assert_eq!(env.mgr.get(a, b"counter").unwrap(), Some(b"0".to_vec()));
    assert_eq!(env.mgr.get(b, b"counter").unwrap(), Some(b"0".to_vec()));
    env.mgr.write(a, b"counter", Some(b"1")).unwrap();
    env.mgr.write(b, b"counter", Some(b"1")).unwrap();
    assert!(env.mgr.commit(a).unwrap().is_some());
    assert!(is_conflict(env.mgr.commit(b)));
    assert_eq!(env.read(b"counter"), Some(b"1".to_vec()));
}

#[test]
fn read_skew_is_prevented_by_the_snapshot() {
    let env = env();
    env.put(b"x", b"50");
    env.put(b"y", b"50");
    let (r, _) = env.mgr.begin(Isolation::Snapshot, true).unwrap();
    assert_eq!(env.mgr.get(r, b"x").unwrap(), Some(b"50".to_vec()));
    let (w, _) = env.mgr.begin(Isolation::Snapshot, false).unwrap();
    env.mgr.write(w, b"x", Some(b"0")).unwrap();
    env.mgr.write(w, b"y", Some(b"100")).unwrap();
    env.mgr.commit(w).unwrap();
    assert_eq!(
        env.mgr.get(r, b"y").unwrap(),
        Some(b"50".to_vec()),
        "the reader keeps its snapshot"
    );
}

fn write_skew(
    isolation: Isolation,
) -> (Result<Option<u64>, TxnError>, Result<Option<u64>, TxnError>) {
    let env = env();
    env.put(b"alice", b"on-call");
    env.put(b"bob", b"on-call");
    let (a, _) = env.mgr.begin(isolation, false).unwrap();
    let (b, _) = env.mgr.begin(isolation, false).unwrap();
    for t in [a, b] {
        assert!(env.mgr.get(t, b"alice").unwrap().is_some());
        assert!(env.mgr.get(t, b"bob").unwrap().is_some());
    }
    env.mgr.write(a, b"alice", None).unwrap();
    env.mgr.write(b, b"bob", None).unwrap();
    (env.mgr.commit(a), env.mgr.commit(b))
}

#[test]
fn write_skew_is_allowed_under_snapshot_and_aborted_under_serializable() {
    let (a, b) = write_skew(Isolation::Snapshot);
    assert!(
        a.unwrap().is_some() && b.unwrap().is_some(),
        "snapshot isolation permits write skew"
    );
    let (a, b) = write_skew(Isolation::Serializable);
    assert!(a.unwrap().is_some());
    assert!(is_conflict(b), "serializable aborts the second transaction");
}

#[test]
fn an_abandoned_transaction_is_rolled_back_once_its_lock_expires() {
    let env = env();
    env.put(b"k", b"committed");
    // A coordinator prewrites and dies before committing.
    let start = env.tso.get_timestamp().unwrap();
    let opts = PrewriteOptions {
        primary: b"k".to_vec(),
        ttl_ms: 3000,
        min_commit_ts: start + 1,
        coordinator: None,
    };
    env.mgr
        .storage()
        .prewrite(
            &[Mutation::Put(b"k".to_vec(), b"orphan".to_vec())],
            &opts,
            start,
        )
        .unwrap();
    // A writer meets the live lock and gives up after lock_wait, with a retryable error.
    let (w, _) = env.mgr.begin(Isolation::Snapshot, false).unwrap();
    env.mgr.write(w, b"k", Some(b"mine")).unwrap();
    let err = env.mgr.commit(w).unwrap_err();
    assert!(
        matches!(err, TxnError::Locked(_)) && err.is_retryable(),
        "{err}"
    );
    // A reader that started after the orphan reads past it (its min_commit_ts is pushed).
    assert_eq!(env.read(b"k"), Some(b"committed".to_vec()));
    // After the TTL, the next writer rolls the orphan back and goes through.
    env.clock.advance(5_000);
    let (w, _) = env.mgr.begin(Isolation::Snapshot, false).unwrap();
    env.mgr.write(w, b"k", Some(b"mine")).unwrap();
    env.mgr.commit(w).unwrap();
    assert_eq!(env.read(b"k"), Some(b"mine".to_vec()));
    // The orphan can never commit now.
    let late = env
        .mgr
        .storage()
        .commit(&[b"k".to_vec()], start, start + 10);
    assert!(matches!(late, Err(MvccError::AlreadyRolledBack { .. })));
}

#[test]
fn a_committed_primary_rolls_its_secondaries_forward_for_readers() {
    let env = env();
    let start = env.tso.get_timestamp().unwrap();
    let opts = PrewriteOptions {
        primary: b"p".to_vec(),
        ttl_ms: 3000,
        min_commit_ts: start + 1,
        coordinator: None,
    };
    let ms = [
        Mutation::Put(b"p".to_vec(), b"1".to_vec()),
        Mutation::Put(b"s".to_vec(), b"2".to_vec()),
    ];
    env.mgr.storage().prewrite(&ms, &opts, start).unwrap();
    let commit_ts = env.tso.get_timestamp().unwrap();
    env.mgr
        .storage()
        .commit(&[b"p".to_vec()], start, commit_ts)
        .unwrap();
    // The coordinator died before committing "s"; a reader finds it committed via "p".
    assert_eq!(env.read(b"s"), Some(b"2".to_vec()));
    let (t, _) = env.mgr.begin(Isolation::Snapshot, true).unwrap();
    assert_eq!(env.mgr.scan(t, b"", None, 10, false).unwrap().len(), 2);
}

#[test]
fn scans_overlay_buffered_writes() {
    let env = env();
    for k in ["a", "b", "c", "d"] {
        env.put(k.as_bytes(), k.as_bytes());
    }
    let (t, _) = env.mgr.begin(Isolation::Snapshot, false).unwrap();
    env.mgr.write(t, b"b", None).unwrap();
    env.mgr.write(t, b"bb", Some(b"new")).unwrap();
    env.mgr.write(t, b"c", Some(b"C")).unwrap();
    let keys = |v: Vec<(Vec<u8>, Vec<u8>)>| {
        v.into_iter()
            .map(|(k, _)| String::from_utf8(k).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(env.mgr.scan(t, b"", None, 10, false).unwrap()),
        ["a", "bb", "c", "d"]
    );
    assert_eq!(
        keys(env.mgr.scan(t, b"", None, 2, false).unwrap()),
        ["a", "bb"]
    );
    assert_eq!(
        keys(env.mgr.scan(t, b"", None, 2, true).unwrap()),
        ["d", "c"]
    );
    assert_eq!(
        keys(env.mgr.scan(t, b"b", Some(b"c"), 10, false).unwrap()),
        ["bb"]
    );
    assert_eq!(
        env.mgr.scan(t, b"c", None, 1, false).unwrap()[0].1,
        b"C".to_vec()
    );
}

#[test]
fn limits_read_only_and_idle_timeouts() {
    let env = env_with(TxnConfig {
        max_keys: 2,
        max_bytes: 100,
        idle_timeout: Duration::from_secs(10),
        ..TxnConfig::default()
    });
    let (t, _) = env.mgr.begin(Isolation::Snapshot, false).unwrap();
    env.mgr.write(t, b"1", Some(b"x")).unwrap();
    env.mgr.write(t, b"2", Some(b"x")).unwrap();
    assert!(matches!(
        env.mgr.write(t, b"3", Some(b"x")),
        Err(TxnError::TooLarge {
            limit_name: "max_keys",
            limit: 2
        })
    ));
    assert!(matches!(
        env.mgr.write(t, b"1", Some(&[0u8; 200])),
        Err(TxnError::TooLarge {
            limit_name: "max_bytes",
            ..
        })
    ));
    let (r, _) = env.mgr.begin(Isolation::Serializable, true).unwrap();
    assert!(matches!(
        env.mgr.write(r, b"k", Some(b"v")),
        Err(TxnError::ReadOnly(_))
    ));
    assert_eq!(
        env.mgr.commit(r).unwrap(),
        None,
        "read-only transactions never prewrite"
    );
    assert_eq!(env.mgr.reap_idle(Instant::now()), 0);
    assert_eq!(
        env.mgr.reap_idle(Instant::now() + Duration::from_secs(11)),
        1
    );
    assert!(matches!(env.mgr.commit(t), Err(TxnError::NotFound(_))));
}

fn phantom(isolation: Isolation) -> (Result<Option<u64>, TxnError>, Result<Option<u64>, TxnError>) {
    let env = env();
    env.put(b"oncall/alice", b"1");
    env.put(b"oncall/bob", b"1");
    let (a, _) = env.mgr.begin(isolation, false).unwrap();
    let (b, _) = env.mgr.begin(isolation, false).unwrap();
    // Each counts the on-call doctors (a predicate read), sees two, and adds a third.
    for (t, name) in [
        (a, b"oncall/carol".as_slice()),
        (b, b"oncall/dave".as_slice()),
    ] {
        assert_eq!(
            env.mgr
                .scan(t, b"oncall/", Some(b"oncall0"), 100, false)
                .unwrap()
                .len(),
            2
        );
        env.mgr.write(t, name, Some(b"1")).unwrap();
    }
    (env.mgr.commit(a), env.mgr.commit(b))
}

#[test]
fn phantoms_are_allowed_under_snapshot_and_aborted_under_serializable() {
    let (a, b) = phantom(Isolation::Snapshot);
    assert!(a.unwrap().is_some() && b.unwrap().is_some());
    let (a, b) = phantom(Isolation::Serializable);
    assert!(a.unwrap().is_some());
    assert!(
        is_conflict(b),
        "the second sees an insert into the range it scanned"
    );
}

#[test]
fn a_limited_scan_only_protects_what_it_returned() {
    let env = env();
    for k in ["r/a", "r/b", "r/c"] {
        env.put(k.as_bytes(), b"1");
    }
    let (t, _) = env.mgr.begin(Isolation::Serializable, false).unwrap();
    assert_eq!(
        env.mgr.scan(t, b"r/", Some(b"r0"), 1, false).unwrap().len(),
        1
    );
    env.mgr.write(t, b"elsewhere", Some(b"x")).unwrap();
    // A write past the first key does not touch what the scan depended on.
    env.put(b"r/bb", b"1");
    assert!(env.mgr.commit(t).unwrap().is_some());
}

#[test]
fn writes_into_a_range_locked_by_a_committing_transaction_wait() {
    let env = env();
    let storage = env.mgr.storage();
    let owner = env.tso.get_timestamp().unwrap();
    storage
        .lock_ranges(
            owner,
            &[(b"r/".to_vec(), Some(b"r0".to_vec()))],
            Duration::from_secs(3600),
        )
        .unwrap();
    let start = env.tso.get_timestamp().unwrap();
    let opts = PrewriteOptions {
        primary: b"r/x".to_vec(),
        ttl_ms: 3000,
        min_commit_ts: start + 1,
        coordinator: None,
    };
    let m = [Mutation::Put(b"r/x".to_vec(), b"1".to_vec())];
    assert!(matches!(
        storage.prewrite(&m, &opts, start),
        Err(MvccError::RangeLocked { .. })
    ));
    // Lock mutations (reads) and keys outside the range are not affected.
    storage
        .prewrite(&[Mutation::Lock(b"r/y".to_vec())], &opts, start)
        .unwrap();
    storage
        .prewrite(&[Mutation::Put(b"s".to_vec(), b"1".to_vec())], &opts, start)
        .unwrap();
    // Through the coordinator, a writer gives up retryably after lock_wait.
    let (w, _) = env.mgr.begin(Isolation::Snapshot, false).unwrap();
    env.mgr.write(w, b"r/z", Some(b"1")).unwrap();
    assert!(is_conflict(env.mgr.commit(w)));
    storage.unlock_ranges(owner);
    storage.prewrite(&m, &opts, start).unwrap();
}

#[test]
fn execute_is_a_compare_and_swap() {
    use super::{ExecuteRequest, Precondition};
    let env = env();
    env.put(b"leader", b"node-1");
    let swap = |expect: &[u8], new: &[u8]| ExecuteRequest {
        preconditions: vec![Precondition::ValueEquals(
            b"leader".to_vec(),
            expect.to_vec(),
        )],
        reads: vec![b"leader".to_vec()],
        writes: vec![(b"leader".to_vec(), Some(new.to_vec()))],
        ..ExecuteRequest::default()
    };
    let ok = env.mgr.execute(&swap(b"node-1", b"node-2"), 3).unwrap();
    assert!(ok.succeeded && ok.commit_ts.is_some());
    assert_eq!(
        ok.reads,
        vec![(b"leader".to_vec(), Some(b"node-1".to_vec()))]
    );
    let stale = env.mgr.execute(&swap(b"node-1", b"node-3"), 3).unwrap();
    assert!(!stale.succeeded);
    assert_eq!(stale.failed_precondition, Some(0));
    assert_eq!(stale.commit_ts, None);
    assert_eq!(env.read(b"leader"), Some(b"node-2".to_vec()));
    // Insert-if-absent, and a precondition on a key that is not written is still locked.
    let insert = ExecuteRequest {
        preconditions: vec![
            Precondition::NotExists(b"new".to_vec()),
            Precondition::Exists(b"leader".to_vec()),
        ],
        writes: vec![(b"new".to_vec(), Some(b"1".to_vec()))],
        ..ExecuteRequest::default()
    };
    assert!(env.mgr.execute(&insert, 3).unwrap().succeeded);
    assert!(!env.mgr.execute(&insert, 3).unwrap().succeeded);
    assert_eq!(env.mgr.active(), 0, "execute leaves no transaction behind");
}

// ---------------------------------------------------------------------------------------
// GC safe point.
// ---------------------------------------------------------------------------------------

const TEN_MINUTES: Duration = Duration::from_secs(600);

#[test]
fn gc_tick_holds_the_safe_point_at_the_oldest_transaction() {
    use crate::tso::{compose, physical};
    let e = env();
    assert_eq!(e.mgr.config().gc_life_time, TEN_MINUTES, "the default");
    e.put(b"k", b"v1");
    let (old, old_ts) = e.mgr.begin(Isolation::Snapshot, false).unwrap();
    e.clock.advance(20 * 60 * 1000);
    e.put(b"k", b"v2");
    let now = e.tso.get_timestamp().unwrap();
    assert_eq!(e.mgr.gc_tick(now, TEN_MINUTES).unwrap(), old_ts);
    // The old transaction still reads its snapshot.
    assert_eq!(e.mgr.get(old, b"k").unwrap(), Some(b"v1".to_vec()));
    e.mgr.rollback(old).unwrap();
    let life_bound = compose(physical(now) - 600_000, 0);
    assert_eq!(e.mgr.gc_tick(now, TEN_MINUTES).unwrap(), life_bound);
    // Never backwards, even for an older `now`.
    assert_eq!(e.mgr.gc_tick(old_ts, TEN_MINUTES).unwrap(), life_bound);
    assert_eq!(e.read(b"k"), Some(b"v2".to_vec()));
}

#[test]
fn a_transaction_below_the_safe_point_fails_clearly() {
    let e = env();
    e.put(b"k", b"v");
    let (t, start_ts) = e.mgr.begin(Isolation::Snapshot, false).unwrap();
    // A safe point decided elsewhere (cluster-wide) passes the transaction.
    e.mgr.storage().safe_point().advance(start_ts + 1);
    let err = e.mgr.get(t, b"k").unwrap_err();
    assert!(
        matches!(err, TxnError::Mvcc(MvccError::ReadBelowSafePoint { ts, .. }) if ts == start_ts),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert!(e.mgr.scan(t, b"", None, 10, false).is_err());
    e.mgr.write(t, b"k", Some(b"w")).unwrap();
    assert!(matches!(
        e.mgr.commit(t),
        Err(TxnError::Mvcc(MvccError::ReadBelowSafePoint { .. }))
    ));
    // A new transaction starts above it and works.
    e.clock.advance(1);
    assert_eq!(e.read(b"k"), Some(b"v".to_vec()));
}

#[test]
fn gc_tick_does_not_pass_a_leftover_lock() {
    let e = env();
    let lock_ts = e.tso.get_timestamp().unwrap();
    let opts = PrewriteOptions {
        primary: b"k".to_vec(),
        ttl_ms: 3000,
        min_commit_ts: lock_ts + 1,
        coordinator: None,
    };
    // A coordinator prewrote and vanished.
    e.mgr
        .storage()
        .prewrite(
            &[Mutation::Put(b"k".to_vec(), b"v".to_vec())],
            &opts,
            lock_ts,
        )
        .unwrap();
    e.clock.advance(60 * 60 * 1000);
    let now = e.tso.get_timestamp().unwrap();
    assert_eq!(e.mgr.gc_tick(now, TEN_MINUTES).unwrap(), lock_ts);
    e.mgr.storage().rollback(&[b"k".to_vec()], lock_ts).unwrap();
    assert!(e.mgr.gc_tick(now, TEN_MINUTES).unwrap() > lock_ts);
}

#[test]
fn a_transaction_kept_alive_past_max_lifetime_is_rolled_back() {
    let e = env_with(TxnConfig {
        max_lifetime: Duration::from_secs(60),
        ..TxnConfig::default()
    });
    let (old, _) = e.mgr.begin(Isolation::Snapshot, false).unwrap();
    e.mgr.write(old, b"k", Some(b"old")).unwrap();
    e.clock.advance(59_000);
    let (young, _) = e.mgr.begin(Isolation::Snapshot, false).unwrap();
    e.mgr.touch(old).unwrap(); // a heartbeat: never idle
    assert_eq!(e.mgr.reap_overdue(e.tso.get_timestamp().unwrap()), 0);
    e.clock.advance(2_000);
    e.mgr.touch(old).unwrap();
    assert_eq!(e.mgr.reap_overdue(e.tso.get_timestamp().unwrap()), 1);
    assert!(matches!(e.mgr.commit(old), Err(TxnError::NotFound(_))));
    e.mgr.write(young, b"k", Some(b"young")).unwrap();
    e.mgr.commit(young).unwrap();
    assert_eq!(e.read(b"k"), Some(b"young".to_vec()));
}

#[test]
fn a_durable_safe_point_is_saved_and_shared() {
    use crate::mvcc::gc::SafePointStore;
    let e = env();
    let meta = super::NodeMeta::new(e.mgr.storage().db().clone());
    let durable = e
        .mgr
        .storage()
        .safe_point()
        .with_store(Arc::new(meta.clone()));
    e.clock.advance(20 * 60 * 1000);
    let now = e.tso.get_timestamp().unwrap();
    let sp = crate::mvcc::compute_safe_point(None, now, TEN_MINUTES);
    assert_eq!(durable.advance_durably(sp).unwrap(), sp);
    assert_eq!(meta.load().unwrap(), Some(sp));
    assert_eq!(
        e.mgr.storage().safe_point().get(),
        sp,
        "one shared safe point"
    );
    // Never backwards, and an unchanged safe point is not written again.
    assert_eq!(durable.advance_durably(sp - 1).unwrap(), sp);
    assert_eq!(meta.load().unwrap(), Some(sp));
}
