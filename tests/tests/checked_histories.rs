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
//!   the snapshot-isolation checks, SNAPSHOT ones the snapshot-isolation check, and the
//!   same history with a stale read, a lost update or a write skew injected must be
//!   rejected (`strata::check::txn_client::judge`). A Commit whose outcome is unknown is
//!   resolved afterwards (`TxnLog::resolve`): every transaction also writes a marker key of
//!   its own, read at the latest timestamp (absent: it did not commit, and the read's lock
//!   resolution makes sure it never will) and, when present, at earlier read timestamps to
//!   find its exact commit_ts by bisection (the marker is written once, so it is visible
//!   exactly from commit_ts on).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata::check::client::{
    inject_stale_read, unaccounted_writes, OpCounts, OpEnd, RegisterClient, RegisterWorkload,
};
use strata::check::linearizability::{
    check_register, Limits, RegisterInput, RegisterRecorder, Verdict,
};
use strata::check::txn_client::{judge, TxnLog, TxnWorkload};
use strata_proto::v1;
use strata_proto::v1::kv_client::KvClient;
use strata_proto::v1::txn_client::TxnClient;
use strata_tests::{node_binary, Cluster};
use tonic::transport::Channel;

const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a client load runs (it stops earlier once the faults are done and enough
/// was acknowledged to judge).
const LOAD_BOUND: Duration = Duration::from_secs(60);
/// Commits a transactional history needs before it is judged.
const MIN_COMMITS: u64 = 20;

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
    let shared = Arc::new(Mutex::new(OpCounts::default()));
    let mut tasks = Vec::new();
    for id in 0..5u64 {
        let endpoint = endpoints[id as usize % 3].clone();
        let mut workload = RegisterWorkload::new(id, keys.clone(), 0xc0ffee);
        let (rec, stop, shared) = (Arc::clone(&rec), Arc::clone(&stop), Arc::clone(&shared));
        let deadline = Instant::now() + LOAD_BOUND;
        tasks.push(tokio::spawn(async move {
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
                shared
                    .lock()
                    .expect("counts")
                    .add(&input, output.as_ref(), &end);
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
            unexpected
        }));
    }

    let started = Instant::now();
    let killed = kill_leaders(&mut cluster, Duration::from_millis(1500)).await;
    // On a loaded machine the kills may leave too little acknowledged to judge: the load
    // goes on (bounded) until enough is.
    let enough = |c: &OpCounts| c.reads > 50 && c.writes > 20 && c.cas_written > 5;
    let deadline = started + LOAD_BOUND;
    loop {
        let counts = *shared.lock().expect("counts");
        if enough(&counts) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut unexpected = Vec::new();
    for t in tasks {
        unexpected.extend(t.await.expect("a client task"));
    }
    let counts = *shared.lock().expect("counts");
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
        enough(&counts),
        "too little was acknowledged to judge in {LOAD_BOUND:?}: {counts:?}"
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

/// Runs transactions at `isolation` from 4 clients (spread over the nodes) on `keys` while
/// leaders are killed; returns the log with every unknown Commit settled.
async fn transactions_under_kills(
    cluster: &mut Cluster,
    isolation: v1::Isolation,
    keys: Vec<Vec<u8>>,
    seed: u64,
) -> TxnLog {
    let endpoints = cluster.endpoints();
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for c in 0..4u64 {
        let endpoint = endpoints[c as usize % 3].clone();
        let (stop, committed) = (Arc::clone(&stop), Arc::clone(&committed));
        let mut workload = TxnWorkload::new(c, isolation, keys.clone(), seed, CALL_TIMEOUT);
        let deadline = started + LOAD_BOUND;
        tasks.push(tokio::spawn(async move {
            let mut log = TxnLog::new();
            let mut client = None;
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
                let before = log.committed;
                let acknowledged = workload.run_one(txn, &mut log).await;
                committed.fetch_add(log.committed - before, Ordering::Relaxed);
                if !acknowledged {
                    client = None;
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            }
            log
        }));
    }
    kill_leaders(cluster, Duration::from_millis(1200)).await;
    // Enough commits to judge, even when the kills took most of the run on a loaded machine.
    while committed.load(Ordering::Relaxed) <= MIN_COMMITS && Instant::now() < started + LOAD_BOUND
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut log = TxnLog::new();
    for t in tasks {
        log = log.merged(t.await.expect("a client task"));
    }
    let l = leader(cluster, &[0, 1, 2]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let ch = connect_until(&cluster.endpoint(l).unwrap(), deadline)
        .await
        .expect("connect to the leader");
    log.resolve(&mut KvClient::new(ch), CALL_TIMEOUT, deadline)
        .await
        .expect("every unknown Commit settled");
    log
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
        let history = log.history();
        eprintln!("{isolation:?}: {log}");
        assert!(log.unexpected.is_empty(), "{:?}", log.unexpected);
        assert!(
            log.committed > MIN_COMMITS,
            "too few commits to judge in {LOAD_BOUND:?}: {}",
            log.committed
        );
        if let Err(e) = judge(&history, isolation) {
            panic!("{e}");
        }
    }
}
