//! Latest reads (D162): `Storage::latest_reads` takes one fresh timestamp and one read
//! barrier, reads every key at it, raises `max_ts`, and declines, never waiting, what the
//! blocking path would wait for: a lock or a one-phase commit in flight on a key (that key
//! alone), no oracle, no ready leader, a refused barrier, a leader change across the
//! barrier (the whole call). Then `TxnManager::read_latest` over it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::lsm::{Db, Options, WriteBatch};
use crate::mvcc::{GcSafePoint, MvccError, Result, Timestamp};
use crate::tso::{LocalTso, LocalTsoOptions, Tso};

use super::actions::{Mutation, PrewriteOptions};
use super::shard_writer::{EngineWriter, ShardWriter, WriteFuture, WriteTicket};
use super::test_runtime::run;
use super::{LatestRead, LatestReads, Storage, TxnConfig, TxnManager};

/// A writer whose leader term, readiness and barrier outcome the test sets.
#[derive(Debug)]
struct Leader {
    engine: EngineWriter,
    term: AtomicU64,
    ready: AtomicBool,
    /// The barrier is refused (`NotLeader`).
    refuse_barrier: AtomicBool,
    /// Passing the barrier moves the replica to the next term (it lost its lead and won
    /// it back meanwhile).
    new_term_at_barrier: AtomicBool,
    barriers: AtomicUsize,
}

impl ShardWriter for Leader {
    fn begin_write(&self) -> Result<WriteTicket> {
        Ok(WriteTicket {
            term: self.term.load(Ordering::SeqCst),
        })
    }

    fn write(&self, ticket: WriteTicket, batch: WriteBatch) -> Result<()> {
        self.engine.write(ticket, batch)
    }

    fn begin_write_now(&self) -> Result<Option<WriteTicket>> {
        if !self.ready.load(Ordering::SeqCst) {
            return Ok(None);
        }
        self.begin_write().map(Some)
    }

    fn read_barrier(&self) -> Result<()> {
        self.barriers.fetch_add(1, Ordering::SeqCst);
        if self.refuse_barrier.load(Ordering::SeqCst) {
            return Err(MvccError::NotLeader {
                shard: 1,
                leader: None,
            });
        }
        if self.new_term_at_barrier.load(Ordering::SeqCst) {
            self.term.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    fn read_barrier_async(&self) -> WriteFuture {
        Box::pin(std::future::ready(self.read_barrier()))
    }
}

struct Env {
    _dir: tempfile::TempDir,
    leader: Arc<Leader>,
    storage: Arc<Storage>,
    tso: Arc<dyn Tso>,
}

fn env(oracle: bool) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db"), Options::small_for_tests()).unwrap();
    let leader = Arc::new(Leader {
        engine: EngineWriter::new(db.clone()),
        term: AtomicU64::new(1),
        ready: AtomicBool::new(true),
        refuse_barrier: AtomicBool::new(false),
        new_term_at_barrier: AtomicBool::new(false),
        barriers: AtomicUsize::new(0),
    });
    let storage = Arc::new(Storage::with_writer(
        db,
        GcSafePoint::default(),
        leader.clone(),
    ));
    let tso: Arc<dyn Tso> =
        Arc::new(LocalTso::open(LocalTsoOptions::new(dir.path().join("tso"))).unwrap());
    if oracle {
        storage.set_ts_source(Arc::clone(&tso));
    }
    Env {
        _dir: dir,
        leader,
        storage,
        tso,
    }
}

impl Env {
    /// Commits `key = value` in one phase, above every timestamp issued so far.
    fn put(&self, key: &[u8], value: &[u8]) -> Timestamp {
        let start = self.tso.get_timestamp().unwrap();
        self.storage
            .one_pc(&[Mutation::Put(key.to_vec(), value.to_vec())], start, None)
            .unwrap()
    }

    fn latest(&self, keys: &[&[u8]]) -> LatestReads {
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        run(self.storage.latest_reads(&keys)).unwrap()
    }

    fn lock(&self, key: &[u8]) {
        let lock_ts = self.tso.get_timestamp().unwrap();
        let options = PrewriteOptions {
            primary: key.to_vec(),
            ttl_ms: 60_000,
            min_commit_ts: lock_ts + 1,
            coordinator: None,
        };
        self.storage
            .prewrite(
                &[Mutation::Put(key.to_vec(), b"pending".to_vec())],
                &options,
                lock_ts,
            )
            .unwrap();
    }
}

fn read(r: LatestReads) -> (Timestamp, Vec<LatestRead>) {
    match r {
        LatestReads::Read { ts, values } => (ts, values),
        other => panic!("not read: {other:?}"),
    }
}

fn value(v: &[u8]) -> LatestRead {
    LatestRead::Value(Some(v.to_vec()))
}

#[test]
fn latest_reads_take_one_fresh_timestamp_and_one_barrier_for_all_their_keys() {
    let e = env(true);
    e.storage.concurrency().sync(1, 0);
    let committed = e.put(b"a", b"1");
    e.put(b"b", b"2");
    let issued = e.tso.get_timestamp().unwrap();
    let (ts, values) = read(e.latest(&[b"a", b"missing", b"b"]));
    assert!(
        ts > issued && ts > committed,
        "above every timestamp issued before"
    );
    assert_eq!(values, [value(b"1"), LatestRead::Value(None), value(b"2")]);
    assert_eq!(e.leader.barriers.load(Ordering::SeqCst), 1, "one barrier");
    assert!(e.tso.get_timestamp().unwrap() > ts, "never issued again");
    // A later write is seen by a later read, not by an earlier timestamp.
    let later = e.put(b"a", b"3");
    assert!(later > ts);
    let (ts2, values) = read(e.latest(&[b"a"]));
    assert!(ts2 > later);
    assert_eq!(values, [value(b"3")]);
    assert_eq!(e.storage.get(b"a", ts, &[]).unwrap(), Some(b"1".to_vec()));
}

#[test]
fn a_latest_read_raises_max_ts_so_a_later_one_phase_commit_lands_above_it() {
    let e = env(true);
    e.storage.concurrency().sync(1, 0);
    // A one-phase commit whose start_ts was taken before the read.
    let start = e.tso.get_timestamp().unwrap();
    let (ts, values) = read(e.latest(&[b"k"]));
    assert_eq!(values, [LatestRead::Value(None)]);
    let commit = e
        .storage
        .one_pc(&[Mutation::Put(b"k".to_vec(), b"v".to_vec())], start, None)
        .unwrap();
    assert!(
        commit > ts,
        "commit {commit} must be above the read at {ts}: the read saw no value"
    );
}

#[test]
fn a_locked_key_is_declined_alone_and_the_others_are_read() {
    let e = env(true);
    e.storage.concurrency().sync(1, 0);
    e.put(b"free", b"1");
    e.lock(b"locked");
    let (_, values) = read(e.latest(&[b"free", b"locked"]));
    assert_eq!(values[0], value(b"1"));
    assert!(matches!(values[1], LatestRead::Declined(_)), "{values:?}");
    // Counted in keys: one served, one declined.
    let c = e.storage.latest_read_counts();
    assert_eq!((c.served, c.declined), (1, 1));
}

#[test]
fn a_key_with_a_one_phase_commit_in_flight_is_declined_and_read_once_it_is_applied() {
    let e = Arc::new(env(true));
    e.storage.concurrency().sync(1, 0);
    let (chosen_tx, chosen_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = parking_lot::Mutex::new(go_rx);
    let armed = AtomicBool::new(true);
    // Pauses the first one-phase commit after it chose its timestamp, memory lock held.
    e.storage.set_one_pc_hook(Arc::new(move |ts| {
        if armed.swap(false, Ordering::SeqCst) {
            chosen_tx.send(ts).unwrap();
            let _ = go_rx.lock().recv_timeout(Duration::from_secs(10));
        }
    }));
    let writer = {
        let e = Arc::clone(&e);
        std::thread::spawn(move || e.put(b"held", b"v"))
    };
    let chosen = chosen_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    // The read's timestamp is above the paused commit's: reading the key now could miss
    // it, so the key is declined; the other key is read.
    let (ts, values) = read(e.latest(&[b"held", b"other"]));
    assert!(ts > chosen);
    assert!(matches!(values[0], LatestRead::Declined(_)), "{values:?}");
    assert_eq!(values[1], LatestRead::Value(None));
    go_tx.send(()).unwrap();
    assert_eq!(writer.join().unwrap(), chosen);
    let (_, values) = read(e.latest(&[b"held"]));
    assert_eq!(values, [value(b"v")]);
}

#[test]
fn latest_reads_decline_as_a_whole_what_would_wait() {
    let declined = |r: LatestReads| matches!(r, LatestReads::Declined(_));
    // No oracle.
    let e = env(false);
    assert!(declined(e.latest(&[b"k"])));
    let e = env(true);
    // No ready leader: nothing asked of the barrier.
    e.leader.ready.store(false, Ordering::SeqCst);
    assert!(declined(e.latest(&[b"k", b"j"])));
    assert_eq!(e.leader.barriers.load(Ordering::SeqCst), 0);
    assert_eq!(
        e.storage.latest_read_counts().declined,
        2,
        "every key of a declined call counts"
    );
    e.leader.ready.store(true, Ordering::SeqCst);
    // The barrier refused: not the leader any more.
    e.leader.refuse_barrier.store(true, Ordering::SeqCst);
    assert!(declined(e.latest(&[b"k"])));
    e.leader.refuse_barrier.store(false, Ordering::SeqCst);
    // The barrier passed in a later term than the timestamp's: another leader may have
    // issued higher timestamps and acknowledged writes at them in between.
    e.leader.new_term_at_barrier.store(true, Ordering::SeqCst);
    assert!(declined(e.latest(&[b"k"])));
    e.leader.new_term_at_barrier.store(false, Ordering::SeqCst);
    assert!(!declined(e.latest(&[b"k"])));
}

#[test]
fn read_latest_answers_where_every_key_was_read_and_leaves_the_rest_to_a_transaction() {
    let e = env(true);
    e.storage.concurrency().sync(1, 0);
    let mgr = TxnManager::new(
        Arc::clone(&e.storage),
        Arc::clone(&e.tso),
        TxnConfig::default(),
    );
    e.put(b"a", b"1");
    let keys = |ks: &[&[u8]]| ks.iter().map(|k| k.to_vec()).collect::<Vec<_>>();
    let (values, ts) = run(mgr.read_latest(&keys(&[b"a", b"b"]))).unwrap();
    assert_eq!(values, [Some(b"1".to_vec()), None]);
    assert!(ts > 0);
    e.lock(b"b");
    assert_eq!(run(mgr.read_latest(&keys(&[b"a", b"b"]))), None);
}
