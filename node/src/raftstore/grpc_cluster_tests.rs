//! In-process clusters over real tonic: each node is a raft-engine directory, a
//! [`RaftStore`] on its [`RaftDriver`] thread, a [`GrpcTransport`] and an [`InternalServer`]
//! on 127.0.0.1 (port 0, kept across restarts), all sharing one [`NetFaults`].
//!
//! Every wait polls a condition under a deadline; nothing sleeps to synchronise. Raft runs on
//! a fast clock (25 ms ticks) so elections take a few hundred milliseconds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use raft::eraftpb::ConfChangeType;

use super::apply::{RaftMessage, Transport};
use super::driver::{DriverConfig, RaftDriver, RaftHandle, ReadMode, ReplicaStatus, Role};
use super::error::RaftStoreError;
use super::log_store::LogStore;
use super::peer::{single_change, PeerConfig};
use super::sim::{meta, KvApply, SHARD};
use super::store::RaftStore;
use super::transport::{
    AddressBook, GrpcTransport, InternalServer, LinkFaults, NetFaults, PeerIdIsNodeId,
    TransportConfig, TransportCounters,
};
use super::types::{NodeId, PeerId};

const CLUSTER: u64 = 7;

/// The transport of a store that only records a replica before it runs.
#[derive(Debug)]
struct Nowhere;

impl Transport for Nowhere {
    fn send(&mut self, _msg: RaftMessage) {}
}
const WAIT: Duration = Duration::from_secs(10);

fn peer_config() -> PeerConfig {
    PeerConfig {
        heartbeat_tick: 2,
        election_tick: 10,
        ..PeerConfig::default()
    }
}

fn driver_config(read_mode: ReadMode) -> DriverConfig {
    DriverConfig {
        tick: Duration::from_millis(25),
        read_mode,
        leader_ready_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_secs(1),
        transfer_timeout: Duration::from_secs(2),
        ..DriverConfig::default()
    }
}

fn transport_config(node: u64) -> TransportConfig {
    TransportConfig {
        snapshot_chunk_bytes: 16 << 10,
        connect_timeout: Duration::from_millis(500),
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        ..TransportConfig::new(CLUSTER, NodeId(node))
    }
}

/// Polls `cond` every few milliseconds until it holds; panics naming `what` after `WAIT`.
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

struct Node {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    kv: KvApply,
    up: Option<Running>,
}

struct Running {
    raft: RaftHandle,
    server: InternalServer,
    counters: Arc<TransportCounters>,
}

struct Cluster {
    nodes: BTreeMap<u64, Node>,
    book: AddressBook,
    faults: NetFaults,
    read_mode: ReadMode,
}

impl Cluster {
    async fn start(n: u64, seed: u64, read_mode: ReadMode) -> Self {
        let mut c = Self {
            nodes: BTreeMap::new(),
            book: AddressBook::new(),
            faults: NetFaults::new(seed),
            read_mode,
        };
        let voters: Vec<PeerId> = (1..=n).map(PeerId).collect();
        for id in 1..=n {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let node = Node {
                dir: tempfile::tempdir().unwrap(),
                addr: listener.local_addr().unwrap(),
                kv: KvApply::default(),
                up: None,
            };
            c.nodes.insert(id, node);
            c.boot(id, listener, Some(&voters));
        }
        c
    }

    /// Adds node `id` with an empty replica that joins once the leader adds it.
    async fn add_joining(&mut self, id: u64) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let node = Node {
            dir: tempfile::tempdir().unwrap(),
            addr: listener.local_addr().unwrap(),
            kv: KvApply::default(),
            up: None,
        };
        let log = LogStore::open(node.dir.path()).unwrap();
        let mut store = RaftStore::new(log, Nowhere, peer_config());
        store
            .create_joining_replica(meta(id), Box::new(node.kv.clone()))
            .unwrap();
        drop(store);
        self.nodes.insert(id, node);
        self.boot(id, listener, None);
    }

    /// Starts node `id` on `listener`: bootstraps it with `voters`, or reopens its log.
    fn boot(&mut self, id: u64, listener: TcpListener, voters: Option<&[PeerId]>) {
        let read_mode = self.read_mode;
        let (book, faults) = (self.book.clone(), self.faults.clone());
        let node = self.nodes.get_mut(&id).unwrap();
        let driver = RaftDriver::new(driver_config(read_mode));
        let transport = GrpcTransport::new(
            transport_config(id),
            Arc::new(PeerIdIsNodeId),
            book.clone(),
            faults,
            driver.handle(),
            tokio::runtime::Handle::current(),
        );
        let counters = transport.counters();
        let log = LogStore::open(node.dir.path()).unwrap();
        let mut store = RaftStore::new(log, transport, peer_config());
        match voters {
            Some(v) => store
                .bootstrap_shard(meta(id), v, Box::new(node.kv.clone()))
                .unwrap(),
            None => store
                .open_replica(SHARD, Box::new(node.kv.clone()))
                .unwrap(),
        }
        let raft = driver.start(store).unwrap();
        let server = InternalServer::start(
            listener,
            raft.clone(),
            transport_config(id),
            counters.clone(),
        )
        .unwrap();
        book.set(NodeId(id), node.addr.to_string());
        node.up = Some(Running {
            raft,
            server,
            counters,
        });
    }

    /// Stops node `id` (server first, then the driver; its directory stays).
    async fn stop(&mut self, id: u64) {
        let running = self.nodes.get_mut(&id).unwrap().up.take().unwrap();
        running.server.shutdown().await.unwrap();
        running.raft.shutdown().unwrap();
    }

    /// Restarts node `id` on the port it had.
    async fn restart(&mut self, id: u64) {
        let addr = self.nodes[&id].addr;
        let listener = TcpListener::bind(addr).await.unwrap();
        self.boot(id, listener, None);
    }

    async fn stop_all(mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            if self.nodes[&id].up.is_some() {
                self.stop(id).await;
            }
        }
    }

    fn raft(&self, id: u64) -> &RaftHandle {
        &self.nodes[&id].up.as_ref().expect("node is up").raft
    }

    fn counters(&self, id: u64) -> &TransportCounters {
        &self.nodes[&id].up.as_ref().expect("node is up").counters
    }

    fn status(&self, id: u64) -> Option<ReplicaStatus> {
        self.nodes[&id].up.as_ref()?.raft.status(SHARD)
    }

    fn live(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.up.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// The ready leader of the highest term among live nodes in `among`.
    fn leader_among(&self, among: &[u64]) -> Option<u64> {
        among
            .iter()
            .filter_map(|id| Some((*id, self.status(*id)?)))
            .filter(|(_, s)| s.role == Role::Leader && s.leader_ready)
            .max_by_key(|(_, s)| s.term)
            .map(|(id, _)| id)
    }

    async fn wait_leader_among(&self, among: &[u64]) -> u64 {
        wait_for("a ready leader", || self.leader_among(among).is_some()).await;
        self.leader_among(among).unwrap_or(0)
    }

    async fn wait_leader(&self) -> u64 {
        self.wait_leader_among(&self.live()).await
    }

    /// Writes `key=value` through the leader of `among`, retrying retryable errors;
    /// returns the applied index.
    async fn put_among(&self, among: &[u64], key: &str, value: &str) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "put {key}: no success in time");
            let Some(leader) = self.leader_among(among) else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            let data = format!("{key}={value}").into_bytes();
            let result = tokio::time::timeout(WAIT, self.raft(leader).propose(SHARD, data))
                .await
                .unwrap_or_else(|_| panic!("put {key}: no outcome in time"));
            match result {
                Ok(index) => return index,
                Err(e) if e.is_retryable() => continue,
                Err(e) => panic!("put {key}: {e}"),
            }
        }
    }

    async fn put(&self, key: &str, value: &str) -> u64 {
        self.put_among(&self.live(), key, value).await
    }

    fn value(&self, id: u64, key: &str) -> Option<String> {
        let kv = self.nodes[&id].kv.0.lock().ok()?;
        kv.map
            .get(key.as_bytes())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    fn applied(&self, id: u64) -> u64 {
        self.nodes[&id]
            .kv
            .0
            .lock()
            .map(|kv| kv.applied)
            .unwrap_or(0)
    }

    /// Waits until every node of `ids` applied what `leader` applied.
    async fn converge(&self, ids: &[u64], leader: u64) {
        wait_for("convergence", || {
            let target = self.applied(leader);
            ids.iter().all(|id| self.applied(*id) == target)
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_is_elected_and_proposals_replicate_through_the_handle() {
    let c = Cluster::start(3, 1, ReadMode::ReadIndex).await;
    let leader = c.wait_leader().await;
    let mut last = 0;
    for i in 0..10 {
        let index = c.put(&format!("k{i}"), &format!("v{i}")).await;
        assert!(index > last, "indexes grow: {index} after {last}");
        last = index;
        // Acknowledged means applied on the leader that answered.
        let l = c.leader_among(&c.live()).unwrap_or(leader);
        assert!(c.applied(l) >= index);
    }
    let leader = c.wait_leader().await;
    c.converge(&[1, 2, 3], leader).await;
    for id in 1..=3 {
        assert_eq!(c.value(id, "k9").as_deref(), Some("v9"), "node {id}");
    }
    // The leader's status shows both followers caught up; followers know the leader.
    wait_for("followers matched", || {
        c.status(leader).is_some_and(|s| {
            s.progress.len() == 2 && s.progress.iter().all(|p| p.matched == s.last_index)
        })
    })
    .await;
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    wait_for("the follower knows the leader", || {
        c.status(follower)
            .is_some_and(|s| s.leader == Some(PeerId(leader)) && s.role == Role::Follower)
    })
    .await;
    // Followers refuse proposals and reads with a hint naming the leader.
    for result in [
        c.raft(follower).propose(SHARD, b"x=y".to_vec()).await,
        c.raft(follower).read_index(SHARD).await,
    ] {
        match result {
            Err(RaftStoreError::NotLeader { leader: hint, .. }) => {
                assert_eq!(hint, Some(PeerId(leader)))
            }
            other => panic!("expected NotLeader, got {other:?}"),
        }
    }
    assert_eq!(c.value(follower, "x"), None);
    // Traffic went over the streams, in batches.
    let t = c.counters(leader).stats();
    assert!(t.streams_accepted >= 2 && t.messages_sent > 0, "{t:?}");
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_proposals_share_readies() {
    let c = Cluster::start(3, 2, ReadMode::ReadIndex).await;
    let leader = c.wait_leader().await;
    c.put("warm", "up").await;
    let raft = c.raft(leader).clone();
    let before = raft.stats();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let raft = raft.clone();
        tasks.spawn(async move { raft.propose(SHARD, format!("c{i}=v").into_bytes()).await });
    }
    while let Some(r) = tasks.join_next().await {
        assert!(r.unwrap().is_ok(), "a concurrent proposal failed");
    }
    let after = raft.stats();
    let proposals = after.proposals - before.proposals;
    let readies = after.proposal_readies - before.proposal_readies;
    assert_eq!(proposals, 200);
    assert!(
        readies < proposals / 2 && after.max_proposals_per_ready > 1,
        "{readies} readies carried {proposals} proposals: {after:?}"
    );
    assert!(after.log_syncs - before.log_syncs < proposals, "{after:?}");
    c.converge(&[1, 2, 3], leader).await;
    assert_eq!(c.value(1, "c199").as_deref(), Some("v"));
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_leader_is_replaced_without_losing_acknowledged_writes() {
    let mut c = Cluster::start(3, 3, ReadMode::ReadIndex).await;
    let old = c.wait_leader().await;
    for i in 0..10 {
        c.put(&format!("a{i}"), "1").await;
    }
    c.stop(old).await;
    let live = c.live();
    let new = c.wait_leader_among(&live).await;
    assert_ne!(new, old);
    for i in 0..10 {
        c.put(&format!("b{i}"), "2").await;
    }
    c.converge(&live, new).await;
    for id in &live {
        for i in 0..10 {
            assert_eq!(c.value(*id, &format!("a{i}")).as_deref(), Some("1"));
            assert_eq!(c.value(*id, &format!("b{i}")).as_deref(), Some("2"));
        }
    }
    // Back on its port, the old leader is reconnected to and catches up.
    c.restart(old).await;
    let leader = c.wait_leader().await;
    c.put("c", "3").await;
    c.converge(&[1, 2, 3], leader).await;
    assert_eq!(c.value(old, "b9").as_deref(), Some("2"));
    assert_eq!(c.value(old, "c").as_deref(), Some("3"));
    c.stop_all().await;
}

/// The isolated old leader commits nothing and serves no read; callers that give up are
/// forgotten; the majority elects and serves; healing converges.
async fn minority_partition(read_mode: ReadMode, seed: u64) {
    let c = Cluster::start(3, seed, read_mode).await;
    let old = c.wait_leader().await;
    c.put("before", "1").await;
    let majority: Vec<u64> = (1..=3).filter(|n| *n != old).collect();
    c.faults.isolate(NodeId(old));
    let old_raft = c.raft(old).clone();
    let stale = tokio::spawn({
        let raft = old_raft.clone();
        async move { raft.propose(SHARD, b"minority=x".to_vec()).await }
    });
    // Callers that give up while the old leader cannot answer are forgotten.
    for i in 0..5 {
        let give_up = Duration::from_millis(10);
        let data = format!("gone{i}=x").into_bytes();
        let _ = tokio::time::timeout(give_up, old_raft.propose(SHARD, data)).await;
        let _ = tokio::time::timeout(give_up, old_raft.read_index(SHARD)).await;
    }
    let new = c.wait_leader_among(&majority).await;
    let index = c.put_among(&majority, "after", "2").await;
    let read = c.raft(new).read_index(SHARD).await.unwrap();
    assert!(
        read >= index,
        "read index {read} below acknowledged write {index}"
    );
    // Once the majority has moved on, the old leader must not serve a read.
    let stale_read = old_raft.read_index(SHARD).await;
    assert!(
        matches!(
            stale_read,
            Err(RaftStoreError::NotLeader { .. })
                | Err(RaftStoreError::Timeout(_))
                | Err(RaftStoreError::LeaderNotReady { .. })
        ),
        "stale read on the isolated old leader: {stale_read:?}"
    );
    assert_eq!(c.value(old, "after"), None);
    assert_eq!(c.value(old, "minority"), None);
    assert!(
        !stale.is_finished(),
        "the minority's proposal cannot be decided"
    );
    wait_for("vanished callers forgotten", || {
        let s = old_raft.stats();
        s.waiting_reads == 0 && s.waiting_proposals == 1
    })
    .await;
    let old_commit = c.status(old).unwrap().commit;
    assert!(
        old_commit < index,
        "the isolated node committed {old_commit}"
    );

    c.faults.heal();
    let result = tokio::time::timeout(WAIT, stale).await.unwrap().unwrap();
    assert!(
        matches!(result, Err(RaftStoreError::NotLeader { .. })),
        "the minority's proposal: {result:?}"
    );
    let leader = c.wait_leader().await;
    c.put("healed", "3").await;
    c.converge(&[1, 2, 3], leader).await;
    for id in 1..=3 {
        assert_eq!(c.value(id, "minority"), None);
        assert_eq!(c.value(id, "after").as_deref(), Some("2"));
        assert_eq!(c.value(id, "healed").as_deref(), Some("3"));
    }
    wait_for("nothing left waiting", || {
        old_raft.stats().waiting_proposals == 0
    })
    .await;
    assert!(c.faults.stats().blocked > 0);
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_partition_commits_nothing_and_serves_no_stale_read() {
    minority_partition(ReadMode::ReadIndex, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_does_not_outlive_a_partition() {
    let lease = driver_config(ReadMode::ReadIndex).recommended_lease(&peer_config());
    minority_partition(ReadMode::Lease(lease), 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_duplication_and_delay_keep_every_acknowledged_write_once() {
    let c = Cluster::start(3, 6, ReadMode::ReadIndex).await;
    c.wait_leader().await;
    c.faults.set_all(LinkFaults {
        drop_percent: 10,
        duplicate_percent: 10,
        min_delay_ms: 0,
        max_delay_ms: 15,
    });
    let mut acked = BTreeMap::new();
    for i in 0..30 {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        c.put(&k, &v).await;
        acked.insert(k, v);
    }
    let f = c.faults.stats();
    assert!(f.dropped > 0 && f.duplicated > 0 && f.delayed > 0, "{f:?}");
    c.faults.heal();
    let leader = c.wait_leader().await;
    c.put("end", "1").await;
    c.converge(&[1, 2, 3], leader).await;
    for id in 1..=3 {
        for (k, v) in &acked {
            assert_eq!(c.value(id, k).as_deref(), Some(v.as_str()), "node {id}");
        }
        // Duplicated and reordered messages never apply an entry twice.
        let kv = c.nodes[&id].kv.0.lock().unwrap();
        assert!(
            kv.writes.values().all(|w| *w == 1),
            "node {id}: {:?}",
            kv.writes
        );
    }
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_restarted_on_its_port_is_caught_up_by_a_chunked_snapshot() {
    let mut c = Cluster::start(3, 7, ReadMode::ReadIndex).await;
    let leader = c.wait_leader().await;
    c.put("early", "0").await;
    c.converge(&[1, 2, 3], leader).await;
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    c.stop(follower).await;
    let follower_applied = c.applied(follower);
    let value = "x".repeat(1024);
    for i in 0..60 {
        c.put(&format!("k{i:02}"), &value).await;
    }
    // Compact past the follower (raft-engine keeps what the stored apply state covers; that
    // state follows the applied index one loop iteration later, so retry until it does).
    let leader = c.wait_leader().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let applied = c.status(leader).unwrap().applied;
        match c.raft(leader).compact_log(SHARD, applied).await {
            Ok(()) => break,
            Err(RaftStoreError::Invalid(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Err(e) => panic!("compact: {e}"),
        }
    }
    wait_for("the leader's log compacted past the follower", || {
        c.status(leader)
            .is_some_and(|s| s.first_index > follower_applied + 1)
    })
    .await;
    c.restart(follower).await;
    c.converge(&[1, 2, 3], leader).await;
    assert_eq!(c.value(follower, "k59").as_deref(), Some(value.as_str()));
    assert_eq!(c.value(follower, "early").as_deref(), Some("0"));
    assert_eq!(
        c.nodes[&follower].kv.0.lock().unwrap().snapshots_restored,
        1
    );
    // 60 KiB of data in 16 KiB chunks: several chunks, one snapshot, whole on arrival. The
    // sender counts once the receiver's answer is back, which may be after the follower
    // applied it.
    wait_for("the sender to count the snapshot", || {
        let sent = c.counters(leader).stats();
        sent.snapshots_sent >= 1 && sent.snapshot_chunks_sent >= 4
    })
    .await;
    let received = c.counters(follower).stats();
    assert_eq!(received.snapshots_received, 1, "{received:?}");
    assert!(received.snapshot_chunks_received >= 4, "{received:?}");
    // The follower's log now starts after the snapshot, and it keeps replicating.
    wait_for("the follower's log to start after the snapshot", || {
        c.status(follower)
            .is_some_and(|s| s.first_index > follower_applied + 1)
    })
    .await;
    c.put("later", "1").await;
    c.converge(&[1, 2, 3], leader).await;
    assert_eq!(c.value(follower, "later").as_deref(), Some("1"));
    c.stop_all().await;
}

/// Each read returns an index at or above the write acknowledged just before it, and the
/// reading replica has applied that write by then, including right after a leader change.
async fn reads_follow_writes(read_mode: ReadMode, seed: u64) -> super::driver::DriverStats {
    let c = Cluster::start(3, seed, read_mode).await;
    let mut leader = c.wait_leader().await;
    for i in 0..10 {
        let key = format!("r{i}");
        let index = c.put(&key, "1").await;
        leader = c.leader_among(&c.live()).unwrap_or(leader);
        let read = match c.raft(leader).read_index(SHARD).await {
            Ok(r) => r,
            // Leadership moved between the write and the read: read at the new leader.
            Err(e) if e.is_retryable() => {
                leader = c.wait_leader().await;
                c.raft(leader).read_index(SHARD).await.unwrap()
            }
            Err(e) => panic!("read: {e}"),
        };
        assert!(read >= index, "read index {read} below write {index}");
        assert!(c.applied(leader) >= read);
        assert_eq!(c.value(leader, &key).as_deref(), Some("1"));
    }
    let stats = c.raft(leader).stats();
    // Hand leadership over, write at the old leader's last moment, read at the new one.
    let index = c.put("before-transfer", "1").await;
    let target = (1..=3).find(|n| *n != leader).unwrap();
    c.raft(leader)
        .transfer_leader(SHARD, PeerId(target))
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let read = loop {
        match c.raft(target).read_index(SHARD).await {
            Ok(r) => break r,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Err(e) => panic!("read at the new leader: {e}"),
        }
    };
    assert!(
        read >= index,
        "new leader's read index {read} below {index}"
    );
    assert_eq!(c.value(target, "before-transfer").as_deref(), Some("1"));
    c.stop_all().await;
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_index_sees_the_write_acknowledged_just_before() {
    let stats = reads_follow_writes(ReadMode::ReadIndex, 8).await;
    assert!(stats.read_rounds > 0 && stats.lease_reads == 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_reads_see_the_write_acknowledged_just_before() {
    let lease = driver_config(ReadMode::ReadIndex).recommended_lease(&peer_config());
    let stats = reads_follow_writes(ReadMode::Lease(lease), 9).await;
    // Each write renews the lease, so the read right after it needs no round.
    assert!(stats.lease_reads > 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_joins_through_the_handle_and_is_promoted() {
    let mut c = Cluster::start(3, 10, ReadMode::ReadIndex).await;
    c.put("k", "v").await;
    c.add_joining(4).await;
    let leader = c.wait_leader_among(&[1, 2, 3]).await;
    let learner = single_change(ConfChangeType::AddLearnerNode, PeerId(4));
    c.raft(leader)
        .propose_conf_change(SHARD, learner)
        .await
        .unwrap();
    c.converge(&[1, 2, 3, 4], leader).await;
    assert_eq!(c.value(4, "k").as_deref(), Some("v"));
    wait_for("node 4 a learner", || {
        c.status(4)
            .is_some_and(|s| s.learners == vec![PeerId(4)] && s.voters.len() == 3)
    })
    .await;
    let promote = single_change(ConfChangeType::AddNode, PeerId(4));
    c.raft(leader)
        .propose_conf_change(SHARD, promote)
        .await
        .unwrap();
    wait_for("node 4 a voter", || {
        c.status(leader)
            .is_some_and(|s| s.voters.len() == 4 && s.epoch.conf_ver >= 5)
    })
    .await;
    c.put("after", "1").await;
    c.converge(&[1, 2, 3, 4], leader).await;
    assert_eq!(c.value(4, "after").as_deref(), Some("1"));
    c.stop_all().await;
}
