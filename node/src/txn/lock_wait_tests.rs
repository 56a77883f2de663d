//! Lock waits seen from the coordinator: a commit blocked by a live lock sleeps in the
//! key's queue and is woken by the release (not by a timer), waiters get the key in arrival
//! order, and the deadline gives a retryable error.
//!
//! The lock holder is a transaction prewritten directly through `Storage` with an hour of
//! TTL, and the clock is manual, so the lock never expires: only its release can end a wait
//! before `lock_wait`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::lsm::{Db, Options};
use crate::mvcc::Timestamp;
use crate::tso::{LocalTso, LocalTsoOptions, ManualClock, Tso};

use super::actions::{Mutation, PrewriteOptions};
use super::{Isolation, Storage, TxnConfig, TxnError, TxnId, TxnManager};

/// Long enough that a wait ending before it was ended by a release.
const HOUR: Duration = Duration::from_secs(3600);

/// How long a test waits for something that must happen promptly.
const PATIENCE: Duration = Duration::from_secs(30);

struct Env {
    _dir: tempfile::TempDir,
    tso: Arc<LocalTso>,
    mgr: Arc<TxnManager>,
}

fn env(lock_wait: Duration) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db"), Options::small_for_tests()).unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let tso = Arc::new(
        LocalTso::open_with_clock(LocalTsoOptions::new(dir.path().join("tso")), clock).unwrap(),
    );
    let config = TxnConfig {
        lock_wait,
        ..TxnConfig::default()
    };
    let mgr = Arc::new(TxnManager::new(
        Arc::new(Storage::new(db)),
        tso.clone(),
        config,
    ));
    Env {
        _dir: dir,
        tso,
        mgr,
    }
}

impl Env {
    /// Locks `key` for a transaction that stays alive until released; returns its start_ts.
    fn hold(&self, key: &[u8]) -> Timestamp {
        let ts = self.tso.get_timestamp().unwrap();
        let options = PrewriteOptions {
            primary: key.to_vec(),
            ttl_ms: HOUR.as_millis() as u64,
            min_commit_ts: ts + 1,
            coordinator: None,
        };
        self.mgr
            .storage()
            .prewrite(
                &[Mutation::Put(key.to_vec(), b"held".to_vec())],
                &options,
                ts,
            )
            .unwrap();
        ts
    }

    /// Rolls the holder back: its lock is released.
    fn release(&self, key: &[u8], holder: Timestamp) {
        self.mgr
            .storage()
            .rollback(&[key.to_vec()], holder)
            .unwrap();
    }

    fn begin_put(&self, key: &[u8], value: &[u8]) -> TxnId {
        let (id, _) = self.mgr.begin(Isolation::Snapshot, false).unwrap();
        self.mgr.write(id, key, Some(value)).unwrap();
        id
    }

    fn read(&self, key: &[u8]) -> Option<Vec<u8>> {
        let (id, _) = self.mgr.begin(Isolation::Snapshot, true).unwrap();
        let v = self.mgr.get(id, key).unwrap();
        self.mgr.rollback(id).unwrap();
        v
    }

    fn waiting(&self, key: &[u8]) -> usize {
        self.mgr.storage().lock_waits().waiting(key)
    }

    /// Polls until `n` waiters sleep on `key`.
    async fn until_waiting(&self, key: &[u8], n: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.waiting(key) != n {
            assert!(
                Instant::now() < deadline,
                "{} waiters on {key:?}, expected {n}",
                self.waiting(key)
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_commit_is_woken_by_the_release() {
    let env = env(HOUR);
    let holder = env.hold(b"k");
    let id = env.begin_put(b"k", b"mine");
    let commit = tokio::spawn(Arc::clone(&env.mgr).commit_async(id));
    env.until_waiting(b"k", 1).await;
    assert!(!commit.is_finished());

    env.release(b"k", holder);
    // No timer is due for an hour (lock_wait and the lock's TTL): only the release can
    // have ended the wait.
    let outcome = tokio::time::timeout(PATIENCE, commit)
        .await
        .expect("the release wakes the commit")
        .unwrap();
    assert!(outcome.unwrap().is_some(), "committed");
    assert_eq!(env.read(b"k"), Some(b"mine".to_vec()));
    assert_eq!(env.waiting(b"k"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_commit_is_woken_by_the_release_too() {
    let env = env(HOUR);
    let holder = env.hold(b"k");
    let id = env.begin_put(b"k", b"mine");
    let mgr = Arc::clone(&env.mgr);
    let commit = std::thread::spawn(move || mgr.commit(id));
    env.until_waiting(b"k", 1).await;
    env.release(b"k", holder);
    assert!(commit.join().unwrap().unwrap().is_some());
    assert_eq!(env.read(b"k"), Some(b"mine".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_get_the_key_in_the_order_they_came() {
    let env = env(HOUR);
    let holder = env.hold(b"k");
    // Three transactions begin in one order and queue in another: the first to queue must
    // be the first to get the key, whatever its start_ts.
    let ids: Vec<TxnId> = (0..3u8).map(|i| env.begin_put(b"k", &[i])).collect();
    let arrival = [ids[1], ids[2], ids[0]];
    let mut commits = Vec::new();
    for (n, id) in arrival.iter().enumerate() {
        commits.push(tokio::spawn(Arc::clone(&env.mgr).commit_async(*id)));
        env.until_waiting(b"k", n + 1).await;
    }
    env.release(b"k", holder);
    let mut outcomes = Vec::new();
    for c in commits {
        let r = tokio::time::timeout(PATIENCE, c)
            .await
            .expect("woken")
            .unwrap();
        outcomes.push(r);
    }
    // The first waiter takes the key and commits; the others, woken one after the other,
    // find a commit newer than their start and abort (first committer wins).
    assert!(
        matches!(outcomes[0], Ok(Some(_))),
        "first: {:?}",
        outcomes[0]
    );
    for r in &outcomes[1..] {
        assert!(
            matches!(r, Err(e @ TxnError::Conflict { .. }) if e.is_retryable()),
            "later: {r:?}"
        );
    }
    assert_eq!(env.read(b"k"), Some(vec![1u8]), "the first to queue won");
    assert_eq!(env.waiting(b"k"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_gives_a_retryable_locked_error() {
    let env = env(Duration::from_millis(100));
    let holder = env.hold(b"k");

    let id = env.begin_put(b"k", b"async");
    let r = Arc::clone(&env.mgr).commit_async(id).await;
    assert!(
        matches!(r, Err(ref e @ TxnError::Locked(ref info)) if e.is_retryable() && info.start_ts == holder),
        "{r:?}"
    );
    let id2 = env.begin_put(b"k", b"sync");
    let r = env.mgr.commit(id2);
    assert!(
        matches!(r, Err(ref e @ TxnError::Locked(_)) if e.is_retryable()),
        "{r:?}"
    );

    assert_eq!(env.waiting(b"k"), 0, "a waiter that gave up left the queue");
    assert!(
        matches!(env.mgr.commit(id), Err(TxnError::NotFound(_))),
        "a failed commit finishes the transaction"
    );
    assert_eq!(env.mgr.active(), 0);
    // The holder still holds the key; once it is gone the key is free again.
    env.release(b"k", holder);
    let id = env.begin_put(b"k", b"later");
    assert!(env.mgr.commit(id).unwrap().is_some());
}
