//! One-phase commits: the command's checks and records, the max_ts rule under a forced
//! interleaving (and what goes wrong without it), SERIALIZABLE with one phase, the fall
//! back to two phases, and unknown outcomes settled. Then blind writes (D157): one write at
//! one timestamp, what they decline, a held latch, the max_ts rule for them, and
//! `TxnManager::write_one` choosing between them and a transaction.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::lsm::{Db, Options, WriteBatch};
use crate::mvcc::{GcSafePoint, MvccError, MvccReader, Result, Timestamp};
use crate::tso::{LocalTso, LocalTsoOptions, Tso};

use super::actions::{Mutation, PrewriteOptions};
use super::shard_writer::{EngineWriter, ShardWriter, WriteTicket};
use super::test_runtime::run;
use super::{BlindWrite, Isolation, Storage, TxnConfig, TxnError, TxnManager};

fn storage() -> (tempfile::TempDir, Arc<Storage>) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db"), Options::small_for_tests()).unwrap();
    let s = Storage::new(db);
    // No oracle: the floor by hand, and commit_ts = max(max_ts, start_ts) + 1, to exercise
    // the max_ts rule by itself with small timestamps.
    s.concurrency().sync(0, 0);
    (dir, Arc::new(s))
}

fn put(k: &[u8], v: &[u8]) -> Mutation {
    Mutation::Put(k.to_vec(), v.to_vec())
}

fn no_locks(s: &Storage) -> bool {
    let mut any = false;
    MvccReader::new(s.db(), None)
        .scan_locks(None, None, |_, _| {
            any = true;
            false
        })
        .unwrap();
    !any
}

#[test]
fn one_pc_writes_commit_records_and_no_locks_and_answers_a_retry_alike() {
    let (_d, s) = storage();
    let long = vec![7u8; crate::mvcc::record::SHORT_VALUE_MAX + 45];
    let ms = [
        put(b"a", b"1"),
        put(b"b", &long),
        Mutation::Delete(b"c".to_vec()),
        Mutation::Lock(b"d".to_vec()),
    ];
    let commit_ts = s.one_pc(&ms, 10, None).unwrap();
    assert_eq!(commit_ts, 11);
    assert!(no_locks(&s));
    assert_eq!(s.get(b"a", 11, &[]).unwrap(), Some(b"1".to_vec()));
    assert_eq!(s.get(b"b", 11, &[]).unwrap(), Some(long));
    assert_eq!(s.get(b"a", 10, &[]).unwrap(), None);
    assert_eq!(s.one_pc(&ms, 10, None).unwrap(), commit_ts, "a retry");
    // The Lock record counts as a commit for a later writer that started before it.
    let late = [put(b"d", b"x")];
    assert!(matches!(
        s.one_pc(&late, 9, None),
        Err(MvccError::WriteConflict { .. })
    ));
    // A rollback record (the settled "not committed") keeps a late attempt out.
    s.rollback(&[b"z".to_vec()], 30).unwrap();
    assert!(matches!(
        s.one_pc(&[put(b"z", b"1")], 30, None),
        Err(MvccError::AlreadyRolledBack { .. })
    ));
}

#[test]
fn one_pc_refuses_what_a_prewrite_refuses() {
    let (_d, s) = storage();
    let opts = PrewriteOptions {
        primary: b"k".to_vec(),
        ttl_ms: 3000,
        min_commit_ts: 6,
        coordinator: None,
    };
    s.prewrite(&[put(b"k", b"v")], &opts, 5).unwrap();
    assert!(matches!(
        s.one_pc(&[put(b"j", b"1"), put(b"k", b"1")], 20, None),
        Err(MvccError::KeyIsLocked(_))
    ));
    assert!(
        s.get(b"j", 30, &[]).unwrap().is_none(),
        "nothing written on failure"
    );
    s.commit(&[b"k".to_vec()], 5, 7).unwrap();
    assert!(matches!(
        s.one_pc(&[put(b"k", b"1")], 6, None),
        Err(MvccError::WriteConflict { .. })
    ));
    // Its own lock (a two-phase commit begun): refused, commit in two phases.
    s.prewrite(&[put(b"m", b"v")], &opts, 40).unwrap();
    assert!(matches!(
        s.one_pc(&[put(b"m", b"v")], 40, None),
        Err(MvccError::OnePcRefused(_))
    ));
    // A range locked by a committing SERIALIZABLE transaction.
    s.lock_ranges(
        50,
        &[(b"r".to_vec(), Some(b"s".to_vec()))],
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(matches!(
        s.one_pc(&[put(b"r1", b"v")], 60, None),
        Err(MvccError::RangeLocked { owner: 50, .. })
    ));
    // Its own range locks guard it: lost (unlocked) means RangeLocksLost.
    assert!(matches!(
        s.one_pc(&[put(b"x", b"v")], 70, Some(0)),
        Err(MvccError::RangeLocksLost { .. })
    ));
}

/// A one-phase commit of `k` by transaction 10 is paused after choosing its commit_ts and
/// before its batch is written, while a reader at 20 reads `k`; then the commit is let go
/// and the reader reads `k` again at 20. Returns (first read, second read, commit_ts).
fn paused_commit_with_a_reader(disable_rule: bool) -> (Option<Vec<u8>>, Option<Vec<u8>>, u64) {
    let (_d, s) = storage();
    if disable_rule {
        s.concurrency().disable_for_tests();
    }
    let (chosen_tx, chosen_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = parking_lot::Mutex::new(go_rx);
    s.set_one_pc_hook(Arc::new(move |commit_ts| {
        chosen_tx.send(commit_ts).unwrap();
        let _ = go_rx.lock().recv_timeout(Duration::from_secs(10));
    }));
    let committer = {
        let s = Arc::clone(&s);
        std::thread::spawn(move || s.one_pc(&[put(b"k", b"v")], 10, None))
    };
    let chosen = chosen_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let reader = {
        let s = Arc::clone(&s);
        std::thread::spawn(move || s.get(b"k", 20, &[]).unwrap())
    };
    // Let the reader get as far as it goes: either it returns (no rule) or it waits on the
    // memory lock. Poll with a deadline for whichever happens first.
    let deadline = Instant::now() + Duration::from_millis(300);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if !disable_rule {
        assert!(
            !reader.is_finished(),
            "the reader waits while the commit it could miss is between choice and apply"
        );
    }
    go_tx.send(()).unwrap();
    let commit_ts = committer.join().unwrap().unwrap();
    assert_eq!(commit_ts, chosen);
    let first = reader.join().unwrap();
    let second = s.get(b"k", 20, &[]).unwrap();
    (first, second, commit_ts)
}

#[test]
fn a_reader_meeting_a_one_pc_between_commit_ts_and_apply_waits_for_it() {
    let (first, second, commit_ts) = paused_commit_with_a_reader(false);
    assert_eq!(commit_ts, 11);
    assert_eq!(first, Some(b"v".to_vec()), "the reader waited and saw it");
    assert_eq!(first, second, "a repeatable read");
}

#[test]
fn without_the_rule_the_paused_one_pc_appears_below_the_readers_snapshot() {
    let (first, second, commit_ts) = paused_commit_with_a_reader(true);
    assert!(commit_ts < 20);
    assert_eq!(first, None);
    assert_eq!(
        second,
        Some(b"v".to_vec()),
        "the snapshot at 20 changed after it was read: what max_ts and memory locks prevent"
    );
}

fn read_then_commit(disable_rule: bool) -> (Option<Vec<u8>>, u64) {
    let (_d, s) = storage();
    if disable_rule {
        s.concurrency().disable_for_tests();
    }
    assert_eq!(s.get(b"k", 20, &[]).unwrap(), None);
    let commit_ts = s.one_pc(&[put(b"k", b"v")], 10, None).unwrap();
    (s.get(b"k", 20, &[]).unwrap(), commit_ts)
}

#[test]
fn a_one_pc_after_a_read_at_a_higher_ts_commits_above_it() {
    assert_eq!(read_then_commit(false), (None, 21));
    let (again, commit_ts) = read_then_commit(true);
    assert_eq!(
        (again, commit_ts),
        (Some(b"v".to_vec()), 11),
        "without max_ts"
    );
}

#[test]
fn scans_raise_max_ts_and_wait_for_memory_locks_in_their_range() {
    let (_d, s) = storage();
    assert!(s
        .scan(b"a", Some(b"z"), 10, 50, false, &[])
        .unwrap()
        .is_empty());
    assert_eq!(s.one_pc(&[put(b"m", b"v")], 10, None).unwrap(), 51);
    assert!(s
        .scan(b"a", Some(b"z"), 10, 50, false, &[])
        .unwrap()
        .is_empty());
}

/// A writer that counts the batches it writes.
#[derive(Debug)]
struct Counting {
    engine: EngineWriter,
    writes: AtomicUsize,
}

impl ShardWriter for Counting {
    fn begin_write(&self) -> Result<WriteTicket> {
        self.engine.begin_write()
    }
    fn write(&self, ticket: WriteTicket, batch: WriteBatch) -> Result<()> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.engine.write(ticket, batch)
    }
    fn read_barrier(&self) -> Result<()> {
        Ok(())
    }
}

struct Env {
    _dir: tempfile::TempDir,
    writer: Arc<Counting>,
    storage: Arc<Storage>,
    tso: Arc<dyn Tso>,
    mgr: TxnManager,
}

/// A manager over a counting writer; `oracle`: the storage may take its max_ts floor.
fn env(oracle: bool, config: TxnConfig) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db"), Options::small_for_tests()).unwrap();
    let writer = Arc::new(Counting {
        engine: EngineWriter::new(db.clone()),
        writes: AtomicUsize::new(0),
    });
    let storage = Arc::new(Storage::with_writer(
        db,
        GcSafePoint::default(),
        writer.clone(),
    ));
    let tso: Arc<dyn Tso> =
        Arc::new(LocalTso::open(LocalTsoOptions::new(dir.path().join("tso"))).unwrap());
    if oracle {
        storage.set_ts_source(Arc::clone(&tso));
    }
    let mgr = TxnManager::new(Arc::clone(&storage), Arc::clone(&tso), config);
    Env {
        _dir: dir,
        writer,
        storage,
        tso,
        mgr,
    }
}

impl Env {
    fn writes(&self) -> usize {
        self.writer.writes.load(Ordering::SeqCst)
    }

    fn transfer(&self, keys: &[&[u8]]) -> std::result::Result<Option<u64>, TxnError> {
        let (t, _) = self.mgr.begin(Isolation::Snapshot, false).unwrap();
        for k in keys {
            self.mgr.write(t, k, Some(b"v")).unwrap();
        }
        self.mgr.commit(t)
    }
}

#[test]
fn a_small_transaction_commits_in_one_write_and_a_large_one_in_two_phases() {
    let e = env(
        true,
        TxnConfig {
            one_pc_max_bytes: 64,
            ..TxnConfig::default()
        },
    );
    let ts = e.transfer(&[b"a", b"b"]).unwrap().unwrap();
    assert_eq!(e.writes(), 1, "one proposal");
    assert_eq!(e.storage.concurrency().synced_term(), Some(0));
    assert!(ts > e.storage.concurrency().max_ts().min(ts - 1));
    let big: Vec<Vec<u8>> = (0..10)
        .map(|i| format!("key-{i:04}").into_bytes())
        .collect();
    let refs: Vec<&[u8]> = big.iter().map(Vec::as_slice).collect();
    e.transfer(&refs).unwrap().unwrap();
    assert_eq!(e.writes(), 1 + 3, "prewrite, primary, secondaries");
    assert!(no_locks(&e.storage));
}

#[test]
fn a_leader_without_a_max_ts_floor_commits_in_two_phases() {
    let e = env(false, TxnConfig::default());
    e.transfer(&[b"a", b"b"]).unwrap().unwrap();
    assert_eq!(e.writes(), 3);
    let e = env(
        true,
        TxnConfig {
            one_pc_max_bytes: 0,
            ..TxnConfig::default()
        },
    );
    e.transfer(&[b"a"]).unwrap().unwrap();
    assert_eq!(e.writes(), 2, "one_pc_max_bytes 0 turns it off");
}

#[test]
fn the_floor_is_an_oracle_timestamp_so_commits_stay_below_later_ones() {
    let e = env(true, TxnConfig::default());
    let before = e.tso.get_timestamp().unwrap();
    let commit_ts = e.transfer(&[b"a"]).unwrap().unwrap();
    assert!(commit_ts > before, "the floor was taken after `before`");
    let after = e.tso.get_timestamp().unwrap();
    assert!(
        commit_ts <= after,
        "a later transaction's snapshot includes it"
    );
    let (t, _) = e.mgr.begin(Isolation::Snapshot, true).unwrap();
    assert_eq!(e.mgr.get(t, b"a").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn serializable_write_skew_is_refused_with_one_pc() {
    let e = env(true, TxnConfig::default());
    e.transfer(&[b"alice", b"bob"]).unwrap().unwrap();
    let before = e.writes();
    let (a, _) = e.mgr.begin(Isolation::Serializable, false).unwrap();
    let (b, _) = e.mgr.begin(Isolation::Serializable, false).unwrap();
    for t in [a, b] {
        assert!(e.mgr.get(t, b"alice").unwrap().is_some());
        assert!(e.mgr.get(t, b"bob").unwrap().is_some());
    }
    e.mgr.write(a, b"alice", None).unwrap();
    e.mgr.write(b, b"bob", None).unwrap();
    assert!(e.mgr.commit(a).unwrap().is_some());
    assert_eq!(e.writes(), before + 1, "the first committed in one phase");
    let second = e.mgr.commit(b);
    assert!(
        matches!(second, Err(TxnError::Conflict { .. })),
        "the second is refused: {second:?}"
    );
    // And a scan-based predicate: both scan the range, each inserts into it.
    let (c, _) = e.mgr.begin(Isolation::Serializable, false).unwrap();
    let (d, _) = e.mgr.begin(Isolation::Serializable, false).unwrap();
    for t in [c, d] {
        e.mgr
            .scan(t, b"shift/", Some(b"shift0"), 100, false)
            .unwrap();
    }
    e.mgr.write(c, b"shift/c", Some(b"1")).unwrap();
    e.mgr.write(d, b"shift/d", Some(b"1")).unwrap();
    assert!(e.mgr.commit(c).unwrap().is_some());
    assert!(matches!(e.mgr.commit(d), Err(TxnError::Conflict { .. })));
}

#[test]
fn a_concurrent_reader_never_sees_a_snapshot_change_under_many_one_pc_commits() {
    // Writers commit one key each in one phase while readers read every key twice at the
    // same snapshot: the two reads must agree (bounded, deterministic key choice).
    let e = Arc::new(env(true, TxnConfig::default()));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let e = Arc::clone(&e);
            std::thread::spawn(move || {
                for i in 0..100u32 {
                    let key = format!("k{}", (i * 7 + w) % 5).into_bytes();
                    let _ = e.transfer(&[&key]);
                }
            })
        })
        .collect();
    for _ in 0..100 {
        let ts: Timestamp = e.tso.get_timestamp().unwrap();
        for k in 0..5 {
            let key = format!("k{k}").into_bytes();
            let first = e.storage.get(&key, ts, &[]).unwrap();
            let second = e.storage.get(&key, ts, &[]).unwrap();
            assert_eq!(first, second, "key {k} at {ts}");
        }
    }
    for w in writers {
        w.join().unwrap();
    }
}

// The asynchronous write path of single-key writes (D157): `Storage::blind_write` and
// `TxnManager::write_one` over it.

/// Leaves a live lock on `key` (a prewrite with a long TTL that is never committed).
fn lock_live(e: &Env, key: &[u8]) {
    let lock_ts = e.tso.get_timestamp().unwrap();
    let options = PrewriteOptions {
        primary: key.to_vec(),
        ttl_ms: 60_000,
        min_commit_ts: lock_ts + 1,
        coordinator: None,
    };
    e.storage
        .prewrite(&[put(key, b"x")], &options, lock_ts)
        .unwrap();
}

fn blind(s: &Arc<Storage>, m: Mutation) -> Result<BlindWrite> {
    run(Arc::clone(s).blind_write(m))
}

fn committed(outcome: Result<BlindWrite>) -> Timestamp {
    match outcome {
        Ok(BlindWrite::Committed(ts)) => ts,
        other => panic!("not committed: {other:?}"),
    }
}

fn declined(outcome: &Result<BlindWrite>) -> bool {
    matches!(outcome, Ok(BlindWrite::Declined(_)))
}

/// Commit records of `key`: (commit_ts, start_ts), newest first.
fn records(s: &Storage, key: &[u8]) -> Vec<(Timestamp, Timestamp)> {
    let mut seen = Vec::new();
    MvccReader::new(s.db(), None)
        .scan_writes(key, Timestamp::MAX, 0, |commit_ts, w| {
            seen.push((commit_ts, w.start_ts));
            true
        })
        .unwrap();
    seen
}

#[test]
fn a_blind_write_is_one_write_at_one_timestamp_above_every_issued_one() {
    let e = env(true, TxnConfig::default());
    // No max_ts floor in this term yet: declined, nothing written.
    assert!(declined(&blind(&e.storage, put(b"k", b"v"))));
    assert_eq!(e.writes(), 0);
    e.transfer(&[b"warm-up"]).unwrap();
    let before = e.writes();
    let issued = e.tso.get_timestamp().unwrap();
    let ts = committed(blind(&e.storage, put(b"k", b"v")));
    assert!(ts > issued, "above every timestamp issued before");
    assert_eq!(e.writes(), before + 1, "one write");
    assert_eq!(
        records(&e.storage, b"k"),
        [(ts, ts)],
        "start_ts = commit_ts"
    );
    assert!(no_locks(&e.storage));
    assert_eq!(e.storage.get(b"k", ts, &[]).unwrap(), Some(b"v".to_vec()));
    assert_eq!(e.storage.get(b"k", ts - 1, &[]).unwrap(), None);
    let del = committed(blind(&e.storage, Mutation::Delete(b"k".to_vec())));
    assert!(del > ts);
    assert!(e.tso.get_timestamp().unwrap() > del, "never issued again");
    let (t, _) = e.mgr.begin(Isolation::Snapshot, true).unwrap();
    assert_eq!(
        e.mgr.get(t, b"k").unwrap(),
        None,
        "a later snapshot sees the delete"
    );
    assert!(blind(&e.storage, Mutation::Lock(b"k".to_vec())).is_err());
}

#[test]
fn a_blind_write_declines_what_would_wait_and_writes_nothing() {
    let e = env(true, TxnConfig::default());
    e.transfer(&[b"warm-up"]).unwrap();
    // A live lock on the key.
    lock_live(&e, b"locked");
    // A range locked by a committing SERIALIZABLE transaction.
    e.storage
        .lock_ranges(
            e.tso.get_timestamp().unwrap(),
            &[(b"r".to_vec(), Some(b"s".to_vec()))],
            Duration::from_secs(5),
        )
        .unwrap();
    let before = e.writes();
    assert!(declined(&blind(&e.storage, put(b"locked", b"w"))));
    assert!(declined(&blind(&e.storage, put(b"r1", b"w"))));
    assert_eq!(e.writes(), before, "nothing written");
    assert_eq!(records(&e.storage, b"locked"), []);
    // A read above the oracle's timestamps raised max_ts past them: the oracle's next
    // timestamp would fall below it.
    let ahead = crate::tso::compose(
        crate::tso::physical(e.tso.get_timestamp().unwrap()) + 60_000,
        0,
    );
    assert_eq!(e.storage.get(b"other", ahead, &[]).unwrap(), None);
    assert!(declined(&blind(&e.storage, put(b"z", b"w"))));
    assert_eq!(e.writes(), before);
}

#[test]
fn a_blind_write_meeting_a_held_latch_declines_while_other_keys_go_on() {
    let e = Arc::new(env(true, TxnConfig::default()));
    e.transfer(&[b"warm-up"]).unwrap();
    let (paused_tx, paused_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = parking_lot::Mutex::new(go_rx);
    let armed = std::sync::atomic::AtomicBool::new(true);
    // Pauses the first one-phase commit after it chose its timestamp, latches held.
    e.storage.set_one_pc_hook(Arc::new(move |_| {
        if armed.swap(false, Ordering::SeqCst) {
            paused_tx.send(()).unwrap();
            let _ = go_rx.lock().recv_timeout(Duration::from_secs(10));
        }
    }));
    let committer = {
        let e = Arc::clone(&e);
        std::thread::spawn(move || e.transfer(&[b"held"]))
    };
    paused_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(declined(&blind(&e.storage, put(b"held", b"w"))));
    // "free" hashes to another latch slot than "held" (fixed hash, 2048 slots).
    let free = committed(blind(&e.storage, put(b"free", b"w")));
    go_tx.send(()).unwrap();
    let first = committer.join().unwrap().unwrap().unwrap();
    let later = committed(blind(&e.storage, put(b"held", b"w")));
    assert!(later > first && free > 0);
    assert_eq!(
        e.storage.get(b"held", later, &[]).unwrap(),
        Some(b"w".to_vec())
    );
}

#[test]
fn a_reader_meeting_a_blind_write_between_its_timestamp_and_apply_waits_for_it() {
    let e = Arc::new(env(true, TxnConfig::default()));
    e.transfer(&[b"warm-up"]).unwrap();
    let (chosen_tx, chosen_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = parking_lot::Mutex::new(go_rx);
    e.storage.set_one_pc_hook(Arc::new(move |ts| {
        chosen_tx.send(ts).unwrap();
        let _ = go_rx.lock().recv_timeout(Duration::from_secs(10));
    }));
    let writer = {
        let s = Arc::clone(&e.storage);
        std::thread::spawn(move || blind(&s, put(b"k", b"v")))
    };
    let chosen = chosen_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    // A snapshot taken after the write chose its timestamp must include it.
    let read_ts = e.tso.get_timestamp().unwrap();
    assert!(read_ts > chosen);
    let reader = {
        let s = Arc::clone(&e.storage);
        std::thread::spawn(move || s.get(b"k", read_ts, &[]).unwrap())
    };
    let deadline = Instant::now() + Duration::from_millis(300);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        !reader.is_finished(),
        "the reader waits while the write it could miss is between choice and apply"
    );
    go_tx.send(()).unwrap();
    assert_eq!(committed(writer.join().unwrap()), chosen);
    assert_eq!(
        reader.join().unwrap(),
        Some(b"v".to_vec()),
        "it waited and saw it"
    );
}

#[test]
fn write_one_is_blind_where_it_can_and_a_transaction_where_it_declines() {
    let e = env(true, TxnConfig::default());
    let mgr = Arc::new(TxnManager::new(
        Arc::clone(&e.storage),
        Arc::clone(&e.tso),
        TxnConfig::default(),
    ));
    let once = |key: &[u8]| {
        let r = run(Arc::clone(&mgr).write_one(key.to_vec(), Some(b"v".to_vec()), 3)).unwrap();
        (r.start_ts, r.commit_ts.unwrap())
    };
    // The term's first write takes the max_ts floor: a transaction.
    let (start, commit) = once(b"a");
    assert!(start < commit);
    // Then blind: one timestamp, one write.
    let before = e.writes();
    let (start, commit) = once(b"b");
    assert_eq!(start, commit);
    assert_eq!(e.writes(), before + 1);
    // An expired lock of a crashed coordinator: declined, so the transaction resolves it.
    let lock_ts = e.tso.get_timestamp().unwrap();
    let options = PrewriteOptions {
        primary: b"c".to_vec(),
        ttl_ms: 0,
        min_commit_ts: lock_ts + 1,
        coordinator: None,
    };
    e.storage
        .prewrite(&[put(b"c", b"old")], &options, lock_ts)
        .unwrap();
    let (start, commit) = once(b"c");
    assert!(start < commit, "a transaction");
    assert_eq!(
        e.storage.get(b"c", commit, &[]).unwrap(),
        Some(b"v".to_vec())
    );
    assert!(no_locks(&e.storage));
}

#[test]
fn a_batch_of_blind_writes_is_one_proposal_and_declines_each_write_on_its_own() {
    let e = env(true, TxnConfig::default());
    e.transfer(&[b"warm-up"]).unwrap();
    // A live lock on one key.
    lock_live(&e, b"locked");
    let before = e.writes();
    let issued = e.tso.get_timestamp().unwrap();
    let answers = run(Arc::clone(&e.storage).blind_write_batch(vec![
        put(b"a", b"1"),
        put(b"locked", b"w"),
        put(b"b", b"2"),
        // The same key again: its latch is held by the first write of the batch.
        put(b"a", b"3"),
        Mutation::Lock(b"l".to_vec()),
    ]));
    assert_eq!(e.writes(), before + 1, "one proposal for the batch");
    let a = match &answers[0] {
        Ok(BlindWrite::Committed(ts)) => *ts,
        other => panic!("{other:?}"),
    };
    let b = match &answers[2] {
        Ok(BlindWrite::Committed(ts)) => *ts,
        other => panic!("{other:?}"),
    };
    assert!(issued < a && a < b, "each at its own fresh timestamp");
    assert!(declined(&answers[1]), "{:?}", answers[1]);
    assert!(declined(&answers[3]), "{:?}", answers[3]);
    assert!(answers[4].is_err(), "a lock is not a blind write");
    assert_eq!(records(&e.storage, b"a"), [(a, a)]);
    assert_eq!(records(&e.storage, b"b"), [(b, b)]);
    assert_eq!(records(&e.storage, b"locked"), []);
    assert_eq!(e.storage.get(b"a", b, &[]).unwrap(), Some(b"1".to_vec()));
    // Nothing proposable: no proposal at all.
    let answers = run(Arc::clone(&e.storage).blind_write_batch(vec![put(b"locked", b"w")]));
    assert!(declined(&answers[0]));
    assert_eq!(e.writes(), before + 1);
    // Records past 8 MiB go in another proposal: two 5 MiB values, two proposals.
    let big = vec![7u8; 5 << 20];
    let answers = run(Arc::clone(&e.storage).blind_write_batch(vec![
        put(b"big1", &big),
        put(b"big2", &big),
        put(b"small", b"s"),
    ]));
    assert!(answers
        .iter()
        .all(|a| matches!(a, Ok(BlindWrite::Committed(_)))));
    assert_eq!(e.writes(), before + 3);
}
