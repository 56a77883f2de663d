//! In-process tests: three real servers whose Raft traffic goes through each node's fault
//! rules (the `Nodes` of `partition_tests`), with concurrent clients of interactive
//! transactions (Begin, Get two keys, Put unique values and a marker, Commit; see
//! `check::txn_client`) spread over every node as a gateway, SERIALIZABLE and SNAPSHOT at
//! once on disjoint keys. The recorded histories are judged by `check::history`:
//! SERIALIZABLE transactions must pass serializability and snapshot isolation, SNAPSHOT ones
//! snapshot isolation, and the same histories with a stale read, a lost update or a write
//! skew injected must be rejected (`txn_client::judge`), so a pass is not vacuous. Commits
//! with an unknown outcome are settled afterwards through each transaction's marker key.
//!
//! - The leader isolated from the other two (its Raft messages cut), then healed: the
//!   majority elects a leader and the clients of every node keep committing through it; the
//!   judged histories hold commits from before, under and after the cut (by commit_ts
//!   against fresh timestamps taken at the cut and at the heal).
//! - Message loss, duplication and delay on every link, from a seed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_proto::v1 as pb;
use strata_proto::v1::kv_client::KvClient;
use strata_proto::v1::txn_client::TxnClient;

use super::partition_tests::Nodes;
use crate::check::history::{Outcome, TxnRecord};
use crate::check::txn_client::{judge, TxnLog, TxnWorkload};

/// One client call's bound; past it the outcome is unknown.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Clients per isolation level; client `c` talks to node `c % 3`.
const CLIENTS: u64 = 3;
const LEVELS: [(pb::Isolation, &str); 2] = [
    (pb::Isolation::Serializable, "ser"),
    (pb::Isolation::Snapshot, "si"),
];

/// One client's log, with its level.
struct ClientLog {
    isolation: pb::Isolation,
    log: TxnLog,
}

/// Transaction clients of both levels, running until stopped (bounded by `max` anyway).
struct TxnClients {
    stop: Arc<AtomicBool>,
    /// Acknowledged commits so far, per level (in [`LEVELS`] order).
    acked: Vec<Arc<AtomicU64>>,
    tasks: Vec<tokio::task::JoinHandle<ClientLog>>,
}

impl TxnClients {
    async fn start(nodes: &Nodes, seed: u64, max: Duration) -> TxnClients {
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Vec<Arc<AtomicU64>> = LEVELS.iter().map(|_| Arc::default()).collect();
        let mut tasks = Vec::new();
        for (level, (isolation, prefix)) in LEVELS.into_iter().enumerate() {
            let keys: Vec<Vec<u8>> = (0..4)
                .map(|k| format!("{prefix}/k{k}").into_bytes())
                .collect();
            for c in 0..CLIENTS {
                let node = c as usize % nodes.handles.len();
                let mut txn = TxnClient::new(nodes.channel(node).await);
                let client = level as u64 * CLIENTS + c;
                let mut workload =
                    TxnWorkload::new(client, isolation, keys.clone(), seed, CALL_TIMEOUT);
                let (stop, acked) = (Arc::clone(&stop), Arc::clone(&acked[level]));
                let deadline = Instant::now() + max;
                tasks.push(tokio::spawn(async move {
                    let mut log = TxnLog::new();
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        if workload.run_one(&mut txn, &mut log).await {
                            acked.fetch_add(1, Ordering::Relaxed);
                        } else {
                            // Leave an election time to settle before the next one.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    ClientLog { isolation, log }
                }));
            }
        }
        TxnClients { stop, acked, tasks }
    }

    /// Waits until every level has `more` acknowledged commits beyond what it had when
    /// called (polled; fails past `within`).
    async fn wait_commits(&self, more: u64, within: Duration) {
        let base: Vec<u64> = self
            .acked
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect();
        let deadline = Instant::now() + within;
        loop {
            let now: Vec<u64> = self
                .acked
                .iter()
                .map(|a| a.load(Ordering::Relaxed))
                .collect();
            if now.iter().zip(&base).all(|(n, b)| n - b >= more) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "fewer than {more} commits per level in {within:?}: {base:?} -> {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) -> Vec<ClientLog> {
        self.stop.store(true, Ordering::Relaxed);
        let mut logs = Vec::new();
        for t in self.tasks {
            logs.push(t.await.expect("a client task"));
        }
        logs
    }
}

/// A fresh timestamp from the cluster's oracle: the read_ts of a latest read through node
/// `i`, retried until it answers.
async fn fresh_ts(nodes: &Nodes, i: usize) -> u64 {
    let mut kv = KvClient::new(nodes.channel(i).await);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut r = tonic::Request::new(pb::GetRequest {
            key: b"probe".to_vec(),
            read_ts: 0,
        });
        r.set_timeout(CALL_TIMEOUT);
        match kv.get(r).await {
            Ok(r) => return r.into_inner().read_ts,
            Err(e) => assert!(Instant::now() < deadline, "no timestamp through {i}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Merges the clients' logs per level, settles unknown Commits through the leader, and
/// judges each level's history. Returns each level's commit timestamps.
async fn settle_and_judge(
    nodes: &Nodes,
    logs: Vec<ClientLog>,
    min_committed: u64,
    what: &str,
) -> Vec<(pb::Isolation, Vec<u64>)> {
    let mut commits = Vec::new();
    let leader = nodes.wait_leader(&[0, 1, 2], Duration::from_secs(10)).await;
    let mut kv = KvClient::new(nodes.channel(leader).await);
    for (isolation, _) in LEVELS {
        let mut log = logs
            .iter()
            .filter(|l| l.isolation == isolation)
            .fold(TxnLog::new(), |acc, l| acc.merged(l.log.clone()));
        log.resolve(
            &mut kv,
            CALL_TIMEOUT,
            Instant::now() + Duration::from_secs(20),
        )
        .await
        .expect("every unknown Commit settled");
        eprintln!("{what}, {isolation:?}: {log}");
        assert!(log.unexpected.is_empty(), "{:?}", log.unexpected);
        assert!(
            log.committed >= min_committed,
            "{isolation:?}: too few commits to judge: {}",
            log.committed
        );
        let history = log.history();
        if let Err(e) = judge(&history, isolation) {
            panic!("{what}: {e}");
        }
        let ts = history.txns.iter().filter_map(|t| match t.outcome {
            Outcome::Committed { commit_ts } => commit_ts,
            Outcome::Aborted => None,
        });
        commits.push((isolation, ts.collect()));
    }
    commits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_keep_their_isolation_level_while_the_leader_is_isolated_and_healed() {
    let nodes = Nodes::start().await;
    let old = nodes.wait_leader(&[0, 1, 2], Duration::from_secs(10)).await;
    let clients = TxnClients::start(&nodes, 21, Duration::from_secs(30)).await;
    clients.wait_commits(5, Duration::from_secs(10)).await;
    let new = nodes.isolate(old).await;
    let cut = fresh_ts(&nodes, new).await;
    // Under the cut: the clients keep committing through the majority (every node is
    // still a gateway: only Raft messages are cut).
    clients.wait_commits(5, Duration::from_secs(10)).await;
    let healed = fresh_ts(&nodes, new).await;
    nodes.heal_and_catch_up(old, new).await;
    clients.wait_commits(5, Duration::from_secs(10)).await;
    let logs = clients.stop().await;
    let commits = settle_and_judge(&nodes, logs, 15, "isolated leader").await;
    // The judged histories span the fault: commits before the cut, under it, after it.
    for (isolation, ts) in commits {
        let before = ts.iter().filter(|&&c| c < cut).count();
        let under = ts.iter().filter(|&&c| c > cut && c < healed).count();
        let after = ts.iter().filter(|&&c| c > healed).count();
        assert!(
            before > 0 && under > 0 && after > 0,
            "{isolation:?}: commits before / under / after the cut: {before} {under} {after}"
        );
    }
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_keep_their_isolation_level_over_lossy_links() {
    let nodes = Nodes::start().await;
    nodes.wait_leader(&[0, 1, 2], Duration::from_secs(10)).await;
    let seed = 0x7ee5;
    nodes.degrade_links(seed);
    let clients = TxnClients::start(&nodes, seed, Duration::from_secs(30)).await;
    // Lossy links make every call slower: run until there is enough to judge.
    clients.wait_commits(12, Duration::from_secs(15)).await;
    let stats = nodes.heal_links();
    let logs = clients.stop().await;
    assert!(
        stats.0 > 0 && stats.1 > 0 && stats.2 > 0,
        "faults were injected: {stats:?}"
    );
    settle_and_judge(&nodes, logs, 12, "lossy links").await;
    nodes.shutdown().await;
}

/// The settlement of unknown Commits on its own, on one node: a marker written at a known
/// commit_ts is found committed at exactly that timestamp, an absent one not committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_commits_are_settled_through_their_marker_at_the_exact_commit_ts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = super::Server::start(super::tests::test_config(dir.path()))
        .await
        .expect("a node starts");
    let mut kv = KvClient::new(super::tests::channel(&server).await);
    let start = kv
        .get(pb::GetRequest {
            key: b"probe".to_vec(),
            read_ts: 0,
        })
        .await
        .expect("a read")
        .into_inner()
        .read_ts;
    let commit_ts = kv
        .put(pb::PutRequest {
            key: b"marker/1".to_vec(),
            value: b"1".to_vec(),
        })
        .await
        .expect("a put")
        .into_inner()
        .commit_ts;
    assert!(commit_ts > start + 1, "{start} {commit_ts}");
    let mut log = TxnLog::new();
    let written = TxnRecord::new(1, start).write(b"marker/1".to_vec(), b"1".to_vec());
    log.record_unknown(written.clone(), b"marker/1".to_vec());
    let never = TxnRecord::new(2, start).write(b"marker/2".to_vec(), b"1".to_vec());
    log.record_unknown(never.clone(), b"marker/2".to_vec());
    log.resolve(
        &mut kv,
        CALL_TIMEOUT,
        Instant::now() + Duration::from_secs(10),
    )
    .await
    .expect("settled");
    assert_eq!(
        log.records(),
        [written.committed(Some(commit_ts)), never.aborted()]
    );
    assert_eq!((log.committed, log.aborted, log.resolved), (1, 1, (1, 1)));
    assert_eq!(log.unresolved(), 0);
    server.shutdown().await.expect("shutdown");
}
