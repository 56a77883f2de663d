//! Histories recorded from concurrent clients of a 3-node cluster of real node processes
//! while leaders are killed with `kill -9` and restarted, judged by the checkers of
//! `strata::check`.
//!
//! - **Registers**: clients spread over the three nodes (any node a gateway) run single-key
//!   reads (Kv.Get), writes (Kv.Put) and compare-and-sets (Txn.Execute with a precondition)
//!   on a few keys, recorded with a `HistoryRecorder` (see `strata::check::client` for how
//!   each error is classified). The leader is killed, restarted, the next leader killed and
//!   restarted. With a read of every key afterwards, `check_register` must say
//!   linearizable, no acknowledged write may be unaccounted for, and the same history with a
//!   stale read injected must be rejected.
//! - **Transactions**: interactive transactions (Begin, Get, Put, Commit) reading two keys
//!   and writing unique values, under the same kind of faults, recorded as a `History`
//!   with their start_ts and commit_ts: SERIALIZABLE ones must pass the serializability and
//!   the snapshot-isolation checks, SNAPSHOT ones the snapshot-isolation check. A Commit
//!   whose outcome is unknown is resolved afterwards: every transaction also writes a
//!   marker key of its own, read at the latest timestamp (absent: it did not commit, and
//!   the read's lock resolution makes sure it never will) and, when present, at earlier
//!   read timestamps to find its exact commit_ts by bisection (the marker is written once,
//!   so it is visible exactly from commit_ts on).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata::check::client::{
    classify_write_error, inject_stale_read, unaccounted_writes, ErrorClass, OpCounts, OpEnd,
    RegisterClient, RegisterWorkload,
};
use strata::check::history::{
    check_serializable, check_snapshot_isolation, History, Op, Outcome, TxnRecord,
};
use strata::check::linearizability::{
    check_register, Limits, RegisterInput, RegisterRecorder, Verdict,
};
use strata::raftstore::rng::Rng;
use strata_proto::v1;
use strata_proto::v1::kv_client::KvClient;
use strata_proto::v1::txn_client::TxnClient;
use strata_tests::{node_binary, Cluster};
use tonic::transport::Channel;

const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A request bounded by [`CALL_TIMEOUT`].
fn req<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.set_timeout(CALL_TIMEOUT);
    r
}

async fn connect(endpoint: &str) -> Option<Channel> {
    Channel::from_shared(format!("http://{endpoint}"))
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await
        .ok()
}

/// Connects to `endpoint`, retrying (the node may be down) until `deadline`.
async fn connect_until(endpoint: &str, deadline: Instant) -> Option<Channel> {
    loop {
        if let Some(c) = connect(endpoint).await {
            return Some(c);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start_cluster() -> Cluster {
    Cluster::builder(node_binary!())
        .nodes(3)
        .arg("--raft-tick-ms")
        .arg("50")
        .start()
        .await
        .expect("three nodes start")
}

/// The index of the running node whose own replica row says it leads, polled.
async fn leader(cluster: &Cluster, running: &[usize]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        for &i in running {
            let Ok(mut c) = cluster.client(i).await else {
                continue;
            };
            let Ok(s) = c.admin.status(v1::StatusRequest {}).await else {
                continue;
            };
            let s = s.into_inner();
            let leads = s
                .replicas
                .iter()
                .any(|r| r.node_id == s.node_id && r.role == v1::ReplicaRole::Leader as i32);
            if leads {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no leader among {running:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// kill -9 the leader, restart it, then kill -9 the leader again (another node unless it
/// was re-elected) and restart it; a pause of `pause` around each step. Returns the nodes
/// killed.
async fn kill_leaders(cluster: &mut Cluster, pause: Duration) -> Vec<usize> {
    let mut killed = Vec::new();
    for _ in 0..2 {
        tokio::time::sleep(pause).await;
        let l = leader(cluster, &[0, 1, 2]).await;
        assert!(!cluster.kill9(l).expect("kill -9").success());
        killed.push(l);
        tokio::time::sleep(pause).await;
        cluster.restart(l).await.expect("restart");
    }
    tokio::time::sleep(pause).await;
    killed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_histories_stay_linearizable_across_leader_kills() {
    let mut cluster = start_cluster().await;
    let endpoints = cluster.endpoints();
    let keys: Vec<Vec<u8>> = (0..5).map(|k| format!("reg{k}").into_bytes()).collect();
    let rec = Arc::new(RegisterRecorder::new());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for id in 0..5u64 {
        let endpoint = endpoints[id as usize % 3].clone();
        let mut workload = RegisterWorkload::new(id, keys.clone(), 0xc0ffee);
        let (rec, stop) = (Arc::clone(&rec), Arc::clone(&stop));
        let deadline = Instant::now() + Duration::from_secs(25);
        tasks.push(tokio::spawn(async move {
            let mut counts = OpCounts::default();
            let mut unexpected = Vec::new();
            let mut client = None;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                // Only a connected client invokes: a refused connection sends nothing.
                let c = match client.as_mut() {
                    Some(c) => c,
                    None => match connect(&endpoint).await {
                        Some(ch) => client.insert(RegisterClient::new(id, ch, CALL_TIMEOUT)),
                        None => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let (key, input) = workload.next_op();
                let (end, output) = c.run(&rec, &key, input.clone()).await;
                workload.observe(&key, &input, output.as_ref());
                counts.add(&input, output.as_ref(), &end);
                match end {
                    OpEnd::Ok => {}
                    OpEnd::Unexpected(e) => {
                        unexpected.push(e);
                        client = None;
                    }
                    OpEnd::Refused | OpEnd::Unknown => {
                        // The node may be gone: connect again before the next call.
                        client = None;
                        tokio::time::sleep(Duration::from_millis(30)).await;
                    }
                }
            }
            (counts, unexpected)
        }));
    }

    let started = Instant::now();
    let killed = kill_leaders(&mut cluster, Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut counts = OpCounts::default();
    let mut unexpected = Vec::new();
    for t in tasks {
        let (c, u) = t.await.expect("a client task");
        counts = counts.merged(c);
        unexpected.extend(u);
    }
    let faulted = started.elapsed();

    // A read of every key afterwards, recorded like the others.
    let l = leader(&cluster, &[0, 1, 2]).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let ch = connect_until(&cluster.endpoint(l).unwrap(), deadline)
        .await
        .expect("connect to the leader");
    let mut reader = RegisterClient::new(u64::MAX - 1, ch, CALL_TIMEOUT);
    for key in &keys {
        loop {
            let (end, _) = reader.run(&rec, key, RegisterInput::Read).await;
            if end == OpEnd::Ok {
                break;
            }
            assert!(Instant::now() < deadline, "final read: {end:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let history = Arc::into_inner(rec).expect("clients done").into_history();
    eprintln!(
        "killed nodes {killed:?} over {faulted:?}: {counts:?}, {} ops",
        history.len()
    );
    assert!(unexpected.is_empty(), "unexpected errors: {unexpected:?}");
    assert!(
        counts.reads > 50 && counts.writes > 20 && counts.cas_written > 5,
        "too little was acknowledged to judge: {counts:?}"
    );

    let limits = Limits::default().with_deadline(Instant::now() + Duration::from_secs(10));
    let verdict = check_register(&history, &limits);
    assert!(verdict.is_linearizable(), "{verdict}");
    let lost = unaccounted_writes(&history);
    assert!(
        lost.is_empty(),
        "acknowledged writes unaccounted for: {lost:?}"
    );

    // Not vacuous: the same history with one stale read is rejected, at that read.
    let (stale, index) = inject_stale_read(&history).expect("two ordered writes of a key");
    match check_register(&stale, &limits) {
        Verdict::NotLinearizable(v) => assert_eq!(v.stuck.index, index, "{v}"),
        other => panic!("a stale read was not caught: {other}"),
    }
}

/// A transaction whose Commit's outcome is unknown, to resolve after the run.
struct Unresolved {
    index: usize,
    marker: Vec<u8>,
    start_ts: u64,
}

#[derive(Default)]
struct TxnLog {
    history: Vec<TxnRecord>,
    unresolved: Vec<Unresolved>,
    committed: u64,
    aborted: u64,
    /// Unknown Commits settled afterwards (committed, aborted).
    resolved: (u64, u64),
    unexpected: Vec<String>,
}

/// One interactive transaction: read two keys, write one or two of them (unique values)
/// and the marker, commit. Recorded into `log` unless Begin failed.
async fn one_transaction(
    txn: &mut TxnClient<Channel>,
    isolation: v1::Isolation,
    id: u64,
    keys: &[Vec<u8>],
    rng: &mut Rng,
    log: &Mutex<TxnLog>,
) -> bool {
    let Ok(begin) = txn
        .begin(req(v1::BeginRequest {
            isolation: isolation as i32,
            read_only: false,
        }))
        .await
    else {
        return false;
    };
    let begin = begin.into_inner();
    let mut rec = TxnRecord::new(id, begin.start_ts);
    let n = keys.len() as u64;
    let a = rng.below(n) as usize;
    let b = (a + 1 + rng.below(n - 1) as usize) % keys.len();
    let marker = format!("marker/{id}").into_bytes();
    let mut writes: Vec<(Vec<u8>, Vec<u8>)> = vec![(keys[a].clone(), format!("t{id}:a").into())];
    if rng.below(2) == 0 {
        writes.push((keys[b].clone(), format!("t{id}:b").into()));
    }
    writes.push((marker.clone(), b"1".to_vec()));
    let mut ok = true;
    for key in [&keys[a], &keys[b]] {
        match txn
            .get(req(v1::TxnGetRequest {
                txn_id: begin.txn_id,
                key: key.clone(),
            }))
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                rec.ops.push(Op::Read {
                    key: key.clone(),
                    observed: r.found.then_some(r.value),
                });
            }
            Err(_) => {
                ok = false;
                break;
            }
        }
    }
    if ok {
        for (key, value) in &writes {
            // Recorded before it is sent: an attempted write must never leak.
            rec = rec.write(key.clone(), value.clone());
            let sent = txn
                .put(req(v1::TxnPutRequest {
                    txn_id: begin.txn_id,
                    key: key.clone(),
                    value: value.clone(),
                }))
                .await;
            if sent.is_err() {
                ok = false;
                break;
            }
        }
    }
    if !ok {
        // Nothing was committed: writes are buffered until Commit, which was never sent.
        {
            let mut g = log.lock().expect("the log");
            g.aborted += 1;
            g.history.push(rec.aborted());
        }
        let _ = txn
            .rollback(req(v1::RollbackRequest {
                txn_id: begin.txn_id,
            }))
            .await;
        return false;
    }
    let result = txn
        .commit(req(v1::CommitRequest {
            txn_id: begin.txn_id,
        }))
        .await;
    let mut g = log.lock().expect("the log");
    match result {
        Ok(r) => {
            g.committed += 1;
            g.history
                .push(rec.committed(Some(r.into_inner().commit_ts)));
            true
        }
        Err(status) => {
            match classify_write_error(&status) {
                ErrorClass::Refused => {
                    g.aborted += 1;
                    g.history.push(rec.aborted());
                }
                class => {
                    if class == ErrorClass::Unexpected {
                        g.unexpected.push(status.to_string());
                    }
                    let index = g.history.len();
                    g.unresolved.push(Unresolved {
                        index,
                        marker,
                        start_ts: begin.start_ts,
                    });
                    g.history.push(rec);
                }
            }
            false
        }
    }
}

/// Reads `key` at `read_ts` (0: latest), retrying errors until `deadline`; returns whether
/// it exists and the read timestamp used.
async fn read_at(
    kv: &mut KvClient<Channel>,
    key: &[u8],
    read_ts: u64,
    deadline: Instant,
) -> (bool, u64) {
    loop {
        let mut r = tonic::Request::new(v1::GetRequest {
            key: key.to_vec(),
            read_ts,
        });
        r.set_timeout(CALL_TIMEOUT);
        match kv.get(r).await {
            Ok(r) => {
                let r = r.into_inner();
                return (r.found, r.read_ts);
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "reading {key:?} at {read_ts}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Settles every unknown Commit: absent marker at the latest timestamp → aborted; present →
/// committed at the first read timestamp that sees it.
async fn resolve(log: &mut TxnLog, kv: &mut KvClient<Channel>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for u in std::mem::take(&mut log.unresolved) {
        let (found, latest) = read_at(kv, &u.marker, 0, deadline).await;
        let rec = log.history[u.index].clone();
        log.history[u.index] = if found {
            let (mut lo, mut hi) = (u.start_ts, latest);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if read_at(kv, &u.marker, mid, deadline).await.0 {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            log.committed += 1;
            log.resolved.0 += 1;
            rec.committed(Some(hi))
        } else {
            log.aborted += 1;
            log.resolved.1 += 1;
            rec.aborted()
        };
    }
}

/// Runs transactions at `isolation` from 4 clients (spread over the nodes) on `keys` while
/// leaders are killed; returns the resolved log.
async fn transactions_under_kills(
    cluster: &mut Cluster,
    isolation: v1::Isolation,
    keys: Vec<Vec<u8>>,
    seed: u64,
) -> TxnLog {
    let endpoints = cluster.endpoints();
    let log = Arc::new(Mutex::new(TxnLog::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..4u64 {
        let endpoint = endpoints[c as usize % 3].clone();
        let (log, stop, keys) = (Arc::clone(&log), Arc::clone(&stop), keys.clone());
        let deadline = Instant::now() + Duration::from_secs(25);
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(seed + c);
            let mut client = None;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let txn = match client.as_mut() {
                    Some(t) => t,
                    None => match connect(&endpoint).await {
                        Some(ch) => client.insert(TxnClient::new(ch)),
                        None => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                n += 1;
                let id = (seed << 32) + c * 1_000_000 + n;
                if !one_transaction(txn, isolation, id, &keys, &mut rng, &log).await {
                    client = None;
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            }
        }));
    }
    kill_leaders(cluster, Duration::from_millis(1200)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("a client task");
    }
    let mut log = Arc::into_inner(log)
        .expect("clients done")
        .into_inner()
        .expect("the log");
    let l = leader(cluster, &[0, 1, 2]).await;
    let ch = connect_until(
        &cluster.endpoint(l).unwrap(),
        Instant::now() + Duration::from_secs(10),
    )
    .await
    .expect("connect to the leader");
    resolve(&mut log, &mut KvClient::new(ch)).await;
    log
}

fn history_of(log: &TxnLog) -> History {
    let mut h = History::new(BTreeMap::new());
    for t in &log.history {
        h.push(t.clone());
    }
    h
}

/// `history` with one committed transaction's read made stale: it observes the version
/// before the latest one committed below its start_ts. `None` when no read has an older
/// version to go back to.
fn with_stale_txn_read(history: &History) -> Option<History> {
    let writes = |key: &[u8]| -> Vec<(u64, Vec<u8>)> {
        let mut w: Vec<(u64, Vec<u8>)> = history
            .txns
            .iter()
            .filter_map(|t| match t.outcome {
                Outcome::Committed { commit_ts: Some(c) } => t.ops.iter().find_map(|op| match op {
                    Op::Write {
                        key: k,
                        value: Some(v),
                    } if k == key => Some((c, v.clone())),
                    _ => None,
                }),
                _ => None,
            })
            .collect();
        w.sort();
        w
    };
    let mut h = history.clone();
    for t in h.txns.iter_mut().filter(|t| t.is_committed()) {
        let start = t.start_ts;
        for op in t.ops.iter_mut() {
            if let Op::Read { key, observed } = op {
                let before: Vec<_> = writes(key)
                    .into_iter()
                    .filter(|(c, _)| *c < start)
                    .collect();
                if before.len() >= 2 {
                    *observed = Some(before[before.len() - 2].1.clone());
                    return Some(h);
                }
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_histories_keep_their_isolation_level_across_leader_kills() {
    let mut cluster = start_cluster().await;
    for (isolation, prefix, seed) in [
        (v1::Isolation::Serializable, "ser", 11),
        (v1::Isolation::Snapshot, "si", 12),
    ] {
        let keys: Vec<Vec<u8>> = (0..4)
            .map(|k| format!("{prefix}/k{k}").into_bytes())
            .collect();
        let log = transactions_under_kills(&mut cluster, isolation, keys, seed).await;
        let history = history_of(&log);
        eprintln!(
            "{isolation:?}: {} committed, {} aborted, of {} recorded; unknown commits \
             resolved (committed, aborted): {:?}",
            log.committed,
            log.aborted,
            log.history.len(),
            log.resolved
        );
        assert!(log.unexpected.is_empty(), "{:?}", log.unexpected);
        assert!(
            log.committed > 20,
            "too few commits to judge: {}",
            log.committed
        );
        if let Err(a) = check_snapshot_isolation(&history) {
            panic!("{isolation:?}: not snapshot isolated: {a}\n{history}");
        }
        if isolation == v1::Isolation::Serializable {
            if let Err(a) = check_serializable(&history) {
                panic!("not serializable: {a}\n{history}");
            }
        }
        // Not vacuous: one stale read in the same history is caught.
        let stale = with_stale_txn_read(&history).expect("a key with two committed versions");
        assert!(
            check_snapshot_isolation(&stale).is_err(),
            "a stale read in a recorded history passed"
        );
    }
}
