//! In-process tests: three real servers on 127.0.0.1 whose Raft traffic goes through each
//! node's fault rules ([`ServerHandle::net_faults`]), with concurrent clients (one per node,
//! any node a gateway) recording single-key reads, writes and compare-and-sets that the
//! linearizability checker then judges.
//!
//! - The leader isolated from the other two: it commits nothing and serves no read (its
//!   client gets errors, never a stale value), steps down, the majority elects a leader and
//!   serves; after the heal it catches up; the whole history is linearizable.
//! - A follower isolated from the other two: its gateway reaches no leader (the cut covers
//!   its forwards, not only its Raft messages), so its client gets errors, never an
//!   acknowledgement; the leader keeps committing; after the heal it serves again; the
//!   whole history is linearizable.
//! - Message loss, duplication and delay on every link, from a seed: the history is
//!   linearizable.
//! - In both, a stale read injected into the recorded history is caught, so the verdict is
//!   not vacuous.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use super::{Server, ServerHandle};
use crate::check::client::{
    inject_stale_read, unaccounted_writes, OpCounts, OpEnd, RegisterClient, RegisterWorkload,
};
use crate::check::linearizability::{
    check_register, Limits, RegisterHistory, RegisterInput, RegisterOutput, RegisterRecorder,
    Verdict,
};
use crate::cli::node_process::reserve_loopback_ports;
use crate::raftstore::transport::LinkFaults;
use crate::server::Member;

const KEYS: [&str; 4] = ["r0", "r1", "r2", "r3"];
/// One client call's bound; past it the outcome is unknown.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Three in-process servers of one group (shared with `partition_txn_tests`).
pub(super) struct Nodes {
    pub(super) handles: Vec<ServerHandle>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Nodes {
    /// Three servers, initial members of one group, each on free ports.
    pub(super) async fn start() -> Nodes {
        let ports = reserve_loopback_ports(3).expect("free ports");
        let members: Vec<Member> = ports
            .iter()
            .zip(1u64..)
            .map(|(p, id)| Member {
                id,
                raft_addr: format!("127.0.0.1:{p}").parse().expect("an address"),
            })
            .collect();
        let mut dirs = Vec::new();
        let mut starts = Vec::new();
        for (port, id) in ports.iter().zip(1u64..) {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut config = super::tests::test_config(dir.path());
            config.node_id = id;
            config.cluster.raft_addr = format!("127.0.0.1:{port}").parse().expect("an address");
            config.cluster.initial_members = members.clone();
            config.cluster.raft_tick_ms = 20;
            dirs.push(dir);
            starts.push(tokio::spawn(Server::start(config)));
        }
        let mut handles = Vec::new();
        for s in starts {
            handles.push(s.await.expect("the start task").expect("a node starts"));
        }
        Nodes {
            handles,
            _dirs: dirs,
        }
    }

    fn leads(&self, i: usize) -> bool {
        self.handles[i].state.replica.leads()
    }

    fn commit(&self, i: usize) -> u64 {
        self.handles[i]
            .state
            .replica
            .status()
            .map_or(0, |s| s.commit)
    }

    fn applied(&self, i: usize) -> u64 {
        self.handles[i]
            .state
            .replica
            .status()
            .map_or(0, |s| s.applied)
    }

    /// The index of the node that leads among `among`, polled until `deadline`.
    pub(super) async fn wait_leader(&self, among: &[usize], within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            if let Some(&i) = among.iter().find(|&&i| self.leads(i)) {
                return i;
            }
            assert!(Instant::now() < deadline, "no leader among {among:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(super) async fn channel(&self, i: usize) -> Channel {
        super::tests::channel(&self.handles[i]).await
    }

    fn faults_on_every_node(&self, f: impl Fn(&crate::raftstore::transport::NetFaults)) {
        for h in &self.handles {
            f(h.net_faults());
        }
    }

    /// Cuts node `old` off (every sender drops what goes to or comes from it), waits for
    /// a leader among the other two and for `old` to step down (check_quorum: no split
    /// brain); returns the new leader.
    pub(super) async fn isolate(&self, old: usize) -> usize {
        let rest: Vec<usize> = (0..self.handles.len()).filter(|&i| i != old).collect();
        let old_id = crate::raftstore::types::NodeId(old as u64 + 1);
        self.faults_on_every_node(|f| f.isolate(old_id));
        let new = self.wait_leader(&rest, Duration::from_secs(10)).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.leads(old) {
            assert!(
                Instant::now() < deadline,
                "the isolated leader kept leading"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        new
    }

    /// Cuts node `i` off from every other node, both ways, Raft messages and gateway calls
    /// alike; waits for nothing.
    fn cut_off(&self, i: usize) {
        let id = crate::raftstore::types::NodeId(i as u64 + 1);
        self.faults_on_every_node(|f| f.isolate(id));
    }

    /// Heals every link and waits until node `old` has applied what `new` had committed.
    pub(super) async fn heal_and_catch_up(&self, old: usize, new: usize) {
        self.faults_on_every_node(|f| f.heal());
        let target = self.commit(new);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.applied(old) < target {
            assert!(
                Instant::now() < deadline,
                "the healed node does not catch up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// 15% loss, 15% duplication and 0-15 ms delay on every link, node `i`'s rules seeded
    /// with `seed + i`.
    pub(super) fn degrade_links(&self, seed: u64) {
        for (i, h) in self.handles.iter().enumerate() {
            h.net_faults().reseed(seed + i as u64);
        }
        self.faults_on_every_node(|f| {
            f.set_all(LinkFaults {
                drop_percent: 15,
                duplicate_percent: 15,
                min_delay_ms: 0,
                max_delay_ms: 15,
            })
        });
    }

    /// Heals every link; returns the messages (dropped, duplicated, delayed) on all nodes.
    pub(super) fn heal_links(&self) -> (u64, u64, u64) {
        self.faults_on_every_node(|f| f.heal());
        self.handles
            .iter()
            .map(|h| h.net_faults().stats())
            .fold((0, 0, 0), |(d, u, l), s| {
                (d + s.dropped, u + s.duplicated, l + s.delayed)
            })
    }

    pub(super) async fn shutdown(self) {
        for h in self.handles {
            h.shutdown().await.expect("shutdown");
        }
    }
}

/// Concurrent clients, client `i` on node `i % 3`, running the seeded workload until
/// stopped (bounded by `max` in any case).
struct Clients {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(OpCounts, Vec<String>)>>,
}

impl Clients {
    async fn start(
        nodes: &Nodes,
        rec: &Arc<RegisterRecorder>,
        clients: u64,
        seed: u64,
        max: Duration,
    ) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let keys: Vec<Vec<u8>> = KEYS.iter().map(|k| k.as_bytes().to_vec()).collect();
        let mut tasks = Vec::new();
        for id in 0..clients {
            let channel = nodes.channel(id as usize % nodes.handles.len()).await;
            let mut client = RegisterClient::new(id, channel, CALL_TIMEOUT);
            let mut workload = RegisterWorkload::new(id, keys.clone(), seed);
            let (rec, stop) = (Arc::clone(rec), Arc::clone(&stop));
            let deadline = Instant::now() + max;
            tasks.push(tokio::spawn(async move {
                let mut counts = OpCounts::default();
                let mut unexpected = Vec::new();
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let (key, input) = workload.next_op();
                    let (end, output) = client.run(&rec, &key, input.clone()).await;
                    workload.observe(&key, &input, output.as_ref());
                    counts.add(&input, output.as_ref(), &end);
                    match end {
                        OpEnd::Unexpected(e) => unexpected.push(e),
                        OpEnd::Refused | OpEnd::Unknown => {
                            // Leave an election time to settle before the next call.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        OpEnd::Ok => {}
                    }
                }
                (counts, unexpected)
            }));
        }
        Clients { stop, tasks }
    }

    async fn stop(self) -> OpCounts {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = OpCounts::default();
        let mut unexpected = Vec::new();
        for t in self.tasks {
            let (c, u) = t.await.expect("a client task");
            total = total.merged(c);
            unexpected.extend(u);
        }
        assert!(unexpected.is_empty(), "unexpected errors: {unexpected:?}");
        total
    }
}

/// Reads every key through node `i` after the run, recorded like any other read (so a
/// lost acknowledged write shows as a violation). Retries while the cluster settles.
async fn final_reads(nodes: &Nodes, i: usize, rec: &RegisterRecorder) {
    let mut client = RegisterClient::new(u64::MAX - 1, nodes.channel(i).await, CALL_TIMEOUT);
    for key in KEYS {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (end, _) = client.run(rec, key.as_bytes(), RegisterInput::Read).await;
            if end == OpEnd::Ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the final read of {key}: {end:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Checks `history` is linearizable, every acknowledged write accounted for, and that the
/// same history with a stale read injected is not.
fn assert_linearizable_and_not_vacuous(history: &RegisterHistory, counts: &OpCounts) {
    let limits = Limits::default().with_deadline(Instant::now() + Duration::from_secs(10));
    let verdict = check_register(history, &limits);
    assert!(
        verdict.is_linearizable(),
        "{verdict}\ncounts {counts:?}; {} ops",
        history.len()
    );
    let lost = unaccounted_writes(history);
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let (stale, index) = inject_stale_read(history).expect("two ordered writes of one key");
    match check_register(&stale, &limits) {
        Verdict::NotLinearizable(v) => assert_eq!(v.stuck.index, index, "{v}"),
        other => panic!("a stale read was not caught: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_commits_nothing_serves_no_read_and_the_history_is_linearizable() {
    let nodes = Nodes::start().await;
    let all = [0, 1, 2];
    let old = nodes.wait_leader(&all, Duration::from_secs(10)).await;
    let rec = Arc::new(RegisterRecorder::new());
    let clients = Clients::start(&nodes, &rec, 3, 7, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;

    let new = nodes.isolate(old).await;
    let frozen = (nodes.commit(old), nodes.applied(old));

    // A write through the majority, then a read through the isolated node: an error, never
    // the value it held before.
    let probe = RegisterRecorder::new();
    let mut majority = RegisterClient::new(100, nodes.channel(new).await, CALL_TIMEOUT);
    let mut isolated = RegisterClient::new(101, nodes.channel(old).await, CALL_TIMEOUT);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (end, _) = majority
            .run(
                &probe,
                b"probe",
                RegisterInput::Write(b"after-cut".to_vec()),
            )
            .await;
        if end == OpEnd::Ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the majority does not serve: {end:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (end, output) = isolated.run(&probe, b"probe", RegisterInput::Read).await;
    assert!(
        end != OpEnd::Ok || output == Some(RegisterOutput::Read(Some(b"after-cut".to_vec()))),
        "the isolated node served a stale read: {output:?}"
    );

    // The majority keeps committing; the minority commits and applies nothing.
    let majority_before = nodes.commit(new);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(nodes.commit(new) > majority_before, "the majority commits");
    assert_eq!(
        (nodes.commit(old), nodes.applied(old)),
        frozen,
        "the isolated node committed or applied something"
    );

    // Heal: the old leader catches up with the majority's log.
    nodes.heal_and_catch_up(old, new).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let counts = clients.stop().await;
    let leader = nodes.wait_leader(&all, Duration::from_secs(10)).await;
    final_reads(&nodes, leader, &rec).await;
    let rec = Arc::into_inner(rec).expect("every client is done");
    let history = rec.into_history();
    eprintln!("isolated leader: {counts:?}, {} ops", history.len());
    assert!(
        counts.reads > 20 && counts.writes > 10 && counts.cas_written > 0,
        "{counts:?}"
    );
    assert!(
        counts.refused + counts.unknown > 0,
        "the isolated node's client never failed: {counts:?}"
    );
    assert_linearizable_and_not_vacuous(&history, &counts);
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_follower_acknowledges_nothing_and_the_history_is_linearizable() {
    let nodes = Nodes::start().await;
    let all = [0, 1, 2];
    let leader = nodes.wait_leader(&all, Duration::from_secs(10)).await;
    let cut = (leader + 1) % all.len();
    let rec = Arc::new(RegisterRecorder::new());
    let clients = Clients::start(&nodes, &rec, 3, 11, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;

    // The follower still knows the leader, but its link to it is cut: a write through it
    // cannot be forwarded (nor committed there), so it fails.
    nodes.cut_off(cut);
    let probe = RegisterRecorder::new();
    let mut isolated = RegisterClient::new(101, nodes.channel(cut).await, CALL_TIMEOUT);
    let (end, output) = isolated
        .run(
            &probe,
            b"probe",
            RegisterInput::Write(b"while-cut".to_vec()),
        )
        .await;
    assert_ne!(
        end,
        OpEnd::Ok,
        "the isolated follower acknowledged a write: {output:?}"
    );
    let before = nodes.commit(leader);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(nodes.commit(leader) > before, "the majority commits");

    // Healed, the follower catches up and serves again.
    nodes.heal_and_catch_up(cut, leader).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (end, _) = isolated
            .run(&probe, b"probe", RegisterInput::Write(b"healed".to_vec()))
            .await;
        if end == OpEnd::Ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the healed follower does not serve: {end:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counts = clients.stop().await;
    let leader = nodes.wait_leader(&all, Duration::from_secs(10)).await;
    final_reads(&nodes, leader, &rec).await;
    let rec = Arc::into_inner(rec).expect("every client is done");
    let history = rec.into_history();
    eprintln!("isolated follower: {counts:?}, {} ops", history.len());
    assert!(
        counts.refused + counts.unknown > 0,
        "the isolated follower's client never failed: {counts:?}"
    );
    assert_linearizable_and_not_vacuous(&history, &counts);
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_loss_duplication_and_delay_keep_the_history_linearizable() {
    let nodes = Nodes::start().await;
    nodes.wait_leader(&[0, 1, 2], Duration::from_secs(10)).await;
    let seed = 0x5eed;
    nodes.degrade_links(seed);
    let rec = Arc::new(RegisterRecorder::new());
    let clients = Clients::start(&nodes, &rec, 3, seed, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let stats = nodes.heal_links();
    let counts = clients.stop().await;
    assert!(
        stats.0 > 0 && stats.1 > 0 && stats.2 > 0,
        "faults were injected: {stats:?}"
    );
    let leader = nodes.wait_leader(&[0, 1, 2], Duration::from_secs(10)).await;
    final_reads(&nodes, leader, &rec).await;
    let history = Arc::into_inner(rec).expect("done").into_history();
    eprintln!(
        "lossy links: {counts:?}, {} ops, faults {stats:?}",
        history.len()
    );
    // Lossy links make every call slower: fewer operations, but enough to judge.
    assert!(counts.reads >= 5 && counts.writes >= 5, "{counts:?}");
    assert_linearizable_and_not_vacuous(&history, &counts);
    nodes.shutdown().await;
}
