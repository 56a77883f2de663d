//! Deterministic in-process clusters whose replicas apply to real LSM engines: each node
//! has a data directory with its raft-engine log and its LSM (foreground-only, so flushes
//! happen exactly where the test or a full memtable puts them), and runs [`KvApply`] over
//! the fault-injecting network of [`super::sim`]. A crash drops the store and the engine
//! without a flush: applies no flush covered are lost and replayed from the raft log. The
//! harness reports each snapshot's delivery to its sender, as a transport does.

use std::collections::BTreeMap;
use std::sync::Arc;

use raft::eraftpb::MessageType;
use raft::SnapshotStatus;

use crate::lsm::{ColumnFamily, Db, Options, ReadOptions, WriteBatch};

use super::command::{Op, RaftCommand};
use super::compaction::LogCompactionPolicy;
use super::kv_apply::{KvApply, KvApplyConfig, ShardState};
use super::log_store::LogStore;
use super::sim::{node_config, Network, SimTransport};
use super::store::RaftStore;
use super::types::{KeyRange, PeerId, ProposalId, ReplicaMeta, ShardEpoch, ShardId};
use super::{RaftStoreError, Result};

struct LsmNode {
    dir: tempfile::TempDir,
    store: Option<RaftStore<SimTransport>>,
    db: Option<Db>,
    state: Option<Arc<ShardState>>,
}

struct LsmCluster {
    shard: ShardId,
    net: Network,
    cfg: KvApplyConfig,
    nodes: BTreeMap<u64, LsmNode>,
    outcomes: BTreeMap<ProposalId, Result<u64>>,
    /// Nodes whose ready loop failed, with the error (the harness then crashed them).
    failures: Vec<(u64, RaftStoreError)>,
    next_id: u64,
}

/// Compact as far as the durable index allows, ignoring followers that are behind.
const AGGRESSIVE: LogCompactionPolicy = LogCompactionPolicy {
    keep_entries: 0,
    min_entries: 1,
    max_follower_lag: 0,
};

fn db_options() -> Options {
    Options {
        background_work: false,
        memtable_size: 1 << 20,
        ..Options::small_for_tests()
    }
}

impl LsmCluster {
    fn new(n: u64, seed: u64, shard: ShardId, cfg: KvApplyConfig) -> Self {
        let mut c = LsmCluster {
            shard,
            net: Network::new(seed),
            cfg,
            nodes: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            failures: Vec::new(),
            next_id: 1,
        };
        let voters: Vec<PeerId> = (1..=n).map(PeerId).collect();
        for id in 1..=n {
            c.nodes.insert(
                id,
                LsmNode {
                    dir: tempfile::tempdir().unwrap(),
                    store: None,
                    db: None,
                    state: None,
                },
            );
            c.start(id, Some(&voters));
        }
        c
    }

    /// Opens node `id` from its data directory (bootstrapping the shard first if asked).
    fn start(&mut self, id: u64, bootstrap: Option<&[PeerId]>) {
        let (shard, cfg) = (self.shard, self.cfg);
        let transport = self.net.transport(id);
        let node = self.nodes.get_mut(&id).expect("known node");
        let db = Db::open(node.dir.path().join("lsm"), db_options()).unwrap();
        let log = LogStore::open(&node.dir.path().join("raft")).unwrap();
        let kv = KvApply::open(
            db.clone(),
            shard,
            KeyRange::all(),
            ShardEpoch::default(),
            cfg,
        )
        .unwrap();
        let state = kv.state();
        let mut store = RaftStore::new(log, transport, node_config(id));
        match bootstrap {
            Some(voters) => {
                let meta = ReplicaMeta {
                    shard,
                    peer: PeerId(id),
                    epoch: ShardEpoch::default(),
                };
                store.bootstrap_shard(meta, voters, Box::new(kv)).unwrap();
            }
            None => store.open_replica(shard, Box::new(kv)).unwrap(),
        }
        node.store = Some(store);
        node.db = Some(db);
        node.state = Some(state);
    }

    /// kill -9: the store and the engine go without a flush.
    fn crash(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("known node");
        node.store = None;
        node.db = None;
        node.state = None;
    }

    fn restart(&mut self, id: u64) {
        self.start(id, None);
    }

    fn store(&mut self, id: u64) -> &mut RaftStore<SimTransport> {
        self.nodes
            .get_mut(&id)
            .and_then(|n| n.store.as_mut())
            .expect("node is up")
    }

    fn db(&self, id: u64) -> &Db {
        self.nodes[&id].db.as_ref().expect("node is up")
    }

    fn state(&self, id: u64) -> Arc<ShardState> {
        Arc::clone(self.nodes[&id].state.as_ref().expect("node is up"))
    }

    /// One round: deliver, tick, run every ready loop; a loop that fails crashes its node.
    /// A snapshot's sender learns whether it reached a live node, as a transport reports.
    fn round(&mut self) {
        for (from, msg) in self.net.take_due() {
            let to = msg.msg.to;
            let snapshot = msg.msg.get_msg_type() == MessageType::MsgSnapshot;
            let delivered = match self.nodes.get_mut(&to).and_then(|n| n.store.as_mut()) {
                Some(store) => store.step(msg).is_ok(),
                None => false,
            };
            if snapshot {
                let status = if delivered {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                let shard = self.shard;
                if let Some(store) = self.nodes.get_mut(&from).and_then(|n| n.store.as_mut()) {
                    store.report_snapshot(shard, PeerId(to), status);
                }
            }
        }
        let mut failed = Vec::new();
        for (id, n) in self.nodes.iter_mut() {
            let Some(store) = n.store.as_mut() else {
                continue;
            };
            store.tick();
            let run = store.process_ready().and_then(|_| store.process_ready());
            for o in store.take_outcomes() {
                self.outcomes.insert(o.id, o.result);
            }
            if let Err(e) = run {
                failed.push((*id, e));
            }
        }
        for (id, e) in failed {
            self.crash(id);
            self.failures.push((id, e));
        }
    }

    fn run_until(&mut self, max: usize, mut cond: impl FnMut(&mut Self) -> bool) -> bool {
        for _ in 0..max {
            if cond(self) {
                return true;
            }
            self.round();
        }
        cond(self)
    }

    fn leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter_map(|(id, n)| {
                let p = n.store.as_ref()?.peer(self.shard).ok()?;
                p.is_leader().then_some((p.term(), *id))
            })
            .max()
            .map(|(_, id)| id)
    }

    fn wait_leader(&mut self) -> u64 {
        assert!(self.run_until(500, |c| c.leader().is_some()), "no leader");
        self.leader().unwrap_or(0)
    }

    /// Proposes `cmd` through whichever node leads until it is applied or refused; returns
    /// its outcome (None: no outcome within the round budget).
    fn propose(&mut self, cmd: &RaftCommand) -> Option<Result<u64>> {
        for _attempt in 0..20 {
            let Some(leader) = self.leader() else {
                self.run_until(200, |c| c.leader().is_some());
                continue;
            };
            let id = ProposalId(self.next_id);
            self.next_id += 1;
            let shard = self.shard;
            if self.store(leader).propose(shard, id, cmd.encode()).is_err() {
                self.round();
                continue;
            }
            self.run_until(300, |c| c.outcomes.contains_key(&id));
            match self.outcomes.remove(&id) {
                Some(Err(RaftStoreError::NotLeader { .. })) | None => continue,
                other => return other,
            }
        }
        None
    }

    fn command(&self, ops: Vec<Op>) -> RaftCommand {
        RaftCommand {
            shard: self.shard,
            term: 0,
            epoch: ShardEpoch::default(),
            ops,
        }
    }

    /// Writes `key = value` (and raises the TSO mark to `tso`) and waits for the ack.
    fn put(&mut self, key: &str, value: &[u8], tso: u64) {
        let mut b = WriteBatch::new();
        b.put(ColumnFamily::Default, key.as_bytes(), value);
        b.put(ColumnFamily::Write, key.as_bytes(), b"commit");
        let cmd = self.command(vec![Op::Write(b), Op::SetTsoHighWater(tso)]);
        match self.propose(&cmd) {
            Some(Ok(_)) => {}
            other => panic!("put {key}: {other:?}"),
        }
    }

    fn value(&self, node: u64, key: &str) -> Option<Vec<u8>> {
        self.db(node)
            .get(
                ColumnFamily::Default,
                key.as_bytes(),
                &ReadOptions::default(),
            )
            .unwrap()
    }

    /// The replicated families of a node, every pair.
    fn contents(&self, node: u64) -> Vec<(ColumnFamily, Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        for cf in [
            ColumnFamily::Default,
            ColumnFamily::Lock,
            ColumnFamily::Write,
        ] {
            for (k, v) in self
                .db(node)
                .scan(cf, b"", None, usize::MAX, false, None)
                .unwrap()
            {
                out.push((cf, k, v));
            }
        }
        out
    }

    fn applied(&self, node: u64) -> u64 {
        self.nodes[&node]
            .state
            .as_ref()
            .map_or(0, |s| s.applied_index())
    }

    /// Runs until every listed node has applied what the leader has.
    fn converge(&mut self, nodes: &[u64]) -> bool {
        let nodes = nodes.to_vec();
        self.run_until(1000, |c| {
            let Some(l) = c.leader() else { return false };
            let target = c.applied(l);
            nodes.iter().all(|n| c.applied(*n) == target)
        })
    }

    /// Flushes every live node's engine and compacts every log as far as `policy` allows.
    fn flush_and_compact(&mut self, policy: &LogCompactionPolicy) {
        // A few rounds first, so the apply state stored in the raft log catches up.
        self.run_until(3, |_| false);
        let live: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.store.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in live {
            self.db(id).flush().unwrap();
            self.store(id).compact_logs(policy).unwrap();
        }
    }

    fn first_index(&mut self, node: u64) -> u64 {
        let shard = self.shard;
        self.store(node).peer(shard).unwrap().first_index()
    }

    fn last_index(&mut self, node: u64) -> u64 {
        let shard = self.shard;
        self.store(node).peer(shard).unwrap().last_index()
    }
}

fn value_of(i: u32) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

#[test]
fn a_lagging_follower_catches_up_by_lsm_snapshot_and_restarts_lose_no_acknowledged_write() {
    let mut c = LsmCluster::new(3, 21, ShardId(77), KvApplyConfig::default());
    let leader = c.wait_leader();
    for i in 0..10 {
        c.put(&format!("a{i}"), &value_of(i), 100 + u64::from(i));
    }
    assert!(c.converge(&[1, 2, 3]));
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    c.crash(follower);
    for i in 0..30 {
        c.put(&format!("b{i:02}"), &value_of(i), 200 + u64::from(i));
    }
    // The leader flushes and compacts past everything the crashed follower has.
    c.flush_and_compact(&AGGRESSIVE);
    let leader_first = c.first_index(leader);
    assert_eq!(
        leader_first,
        c.state(leader).durable_applied_index() + 1,
        "compacted to the durable index"
    );
    c.restart(follower);
    let follower_last = c.last_index(follower);
    assert!(
        follower_last + 1 < leader_first,
        "the follower needs compacted entries ({follower_last} vs {leader_first})"
    );
    assert!(c.converge(&[1, 2, 3]));
    // The follower's log now starts after the snapshot: it skipped entries it never had.
    assert!(c.first_index(follower) > follower_last + 1);
    assert_eq!(c.contents(follower), c.contents(leader));
    assert_eq!(c.value(follower, "b29"), Some(value_of(29)));
    assert_eq!(c.state(follower).tso_high_water(), 229);
    assert!(c.failures.is_empty(), "{:?}", c.failures);

    // More writes, then every node crashes with nothing flushed since, and restarts from its
    // data directory: the LSM holds what was flushed, the raft log the rest.
    for i in 0..10 {
        c.put(&format!("c{i}"), &value_of(i), 300 + u64::from(i));
    }
    assert!(c.converge(&[1, 2, 3]));
    c.run_until(3, |_| false);
    let before = c.contents(leader);
    let durable: Vec<u64> = (1..=3)
        .map(|n| {
            let (applied, durable) = (c.applied(n), c.state(n).durable_applied_index());
            assert!(durable < applied, "node {n} has applies a crash loses");
            durable
        })
        .collect();
    for n in 1..=3 {
        c.crash(n);
    }
    for n in 1..=3 {
        c.restart(n);
        // The LSM came back at the durable index; the open replayed the log past it.
        assert!(
            c.applied(n) > durable[n as usize - 1],
            "node {n} replayed its log at open"
        );
    }
    c.wait_leader();
    c.put("d", b"after restart", 400);
    assert!(c.converge(&[1, 2, 3]));
    for n in 1..=3 {
        for i in 0..10 {
            assert_eq!(c.value(n, &format!("a{i}")), Some(value_of(i)), "node {n}");
            assert_eq!(c.value(n, &format!("c{i}")), Some(value_of(i)), "node {n}");
        }
        for i in 0..30 {
            assert_eq!(
                c.value(n, &format!("b{i:02}")),
                Some(value_of(i)),
                "node {n}"
            );
        }
        assert_eq!(c.value(n, "d"), Some(b"after restart".to_vec()));
        assert_eq!(c.state(n).tso_high_water(), 400);
        let mut now = c.contents(n);
        now.retain(|(_, k, _)| k != b"d");
        assert_eq!(now, before, "node {n}");
    }
}

#[test]
fn compaction_stops_at_the_durable_index_while_the_memtable_holds_later_applies() {
    let mut c = LsmCluster::new(3, 22, ShardId(79), KvApplyConfig::default());
    let leader = c.wait_leader();
    for i in 0..20 {
        c.put(&format!("k{i:02}"), &value_of(i), 1);
    }
    c.db(leader).flush().unwrap();
    let durable = c.state(leader).applied_index();
    for i in 20..30 {
        c.put(&format!("k{i:02}"), &value_of(i), 1);
    }
    assert!(c.converge(&[1, 2, 3]));
    let applied = c.state(leader).applied_index();
    assert!(applied > durable + 5);
    let compacted = c.store(leader).compact_logs(&AGGRESSIVE).unwrap();
    assert_eq!(compacted, vec![(ShardId(79), durable + 1)]);
    assert_eq!(c.first_index(leader), durable + 1);
    // Asking for more by hand is refused.
    let err = c
        .store(leader)
        .compact_log(ShardId(79), applied)
        .unwrap_err();
    assert!(err.to_string().contains("durable"), "{err}");
    // Followers that flushed nothing keep their whole log.
    for n in (1..=3).filter(|n| *n != leader) {
        assert_eq!(c.store(n).compact_logs(&AGGRESSIVE).unwrap(), Vec::new());
        assert_eq!(c.first_index(n), 1);
    }
    // After a flush the rest can go, and the cluster carries on.
    c.run_until(3, |_| false);
    c.db(leader).flush().unwrap();
    c.store(leader).compact_logs(&AGGRESSIVE).unwrap();
    assert_eq!(c.first_index(leader), applied + 1);
    c.put("after", b"x", 1);
    assert!(c.converge(&[1, 2, 3]));
}

#[test]
fn a_command_at_a_stale_epoch_is_refused_with_a_retryable_error_everywhere() {
    let mut c = LsmCluster::new(3, 23, ShardId(80), KvApplyConfig::default());
    c.wait_leader();
    c.put("k", b"v", 5);
    let mut b = WriteBatch::new();
    b.put(ColumnFamily::Default, b"stale", b"x");
    let stale = RaftCommand {
        shard: ShardId(80),
        term: 0,
        epoch: ShardEpoch {
            conf_ver: 0,
            version: 1,
        },
        ops: vec![Op::Write(b), Op::SetTsoHighWater(1 << 40)],
    };
    match c.propose(&stale) {
        Some(Err(e @ RaftStoreError::StaleEpoch { .. })) => assert!(e.is_retryable()),
        other => panic!("expected StaleEpoch, got {other:?}"),
    }
    c.put("k2", b"v2", 6);
    assert!(c.converge(&[1, 2, 3]));
    for n in 1..=3 {
        assert_eq!(c.value(n, "stale"), None);
        assert_eq!(c.value(n, "k2"), Some(b"v2".to_vec()));
        assert_eq!(c.state(n).tso_high_water(), 6);
    }
}

#[test]
fn a_snapshot_past_the_size_limit_is_reported_and_the_loop_goes_on() {
    let cfg = KvApplyConfig {
        max_snapshot_bytes: 2 << 10,
        ..KvApplyConfig::default()
    };
    let mut c = LsmCluster::new(3, 24, ShardId(81), cfg);
    let leader = c.wait_leader();
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    c.crash(follower);
    for i in 0..20 {
        c.put(&format!("k{i:02}"), &[7; 200], 1);
    }
    c.flush_and_compact(&AGGRESSIVE);
    c.restart(follower);
    assert!(c.run_until(300, |c| {
        c.store(leader)
            .peer(ShardId(81))
            .unwrap()
            .last_snapshot_error()
            .is_some()
    }));
    let err = c
        .store(leader)
        .peer(ShardId(81))
        .unwrap()
        .last_snapshot_error()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("2048 bytes"), "{err}");
    // The other two still commit.
    c.put("still", b"working", 1);
    assert_eq!(c.value(leader, "still"), Some(b"working".to_vec()));
    assert!(c.failures.is_empty(), "{:?}", c.failures);
}

/// A follower crashes in the middle of restoring a snapshot (a failpoint stops the restore
/// after its first batch, for this shard only). Its log had been compacted, so after the
/// reset it cannot replay: it waits for a snapshot, asks the leader for one, and catches up.
#[cfg(feature = "failpoints")]
#[test]
fn a_follower_crashed_mid_restore_is_reset_and_fetches_a_snapshot_again() {
    let scenario = fail::FailScenario::setup();
    const SHARD: ShardId = ShardId(78);
    let cfg = KvApplyConfig {
        restore_batch_bytes: 256,
        ..KvApplyConfig::default()
    };
    let mut c = LsmCluster::new(3, 25, SHARD, cfg);
    let leader = c.wait_leader();
    for i in 0..10 {
        c.put(&format!("a{i}"), &value_of(i), 1);
    }
    assert!(c.converge(&[1, 2, 3]));
    // Every node compacts, the follower included: its own log starts late from now on.
    c.flush_and_compact(&AGGRESSIVE);
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    assert!(c.first_index(follower) > 1);
    c.crash(follower);
    for i in 0..30 {
        c.put(&format!("b{i:02}"), &[i as u8; 100], 2);
    }
    c.flush_and_compact(&AGGRESSIVE);

    fail::cfg(
        "raftstore::kv_apply::restore",
        &format!("return({})", SHARD.0),
    )
    .unwrap();
    c.restart(follower);
    assert!(c.run_until(300, |c| !c.failures.is_empty()));
    fail::remove("raftstore::kv_apply::restore");
    assert_eq!(c.failures.len(), 1);
    assert_eq!(c.failures[0].0, follower);
    assert!(c.failures[0].1.to_string().contains("injected"));

    // Restarted, it finds the marker: the shard is emptied, and with its log compacted it
    // waits for a snapshot rather than replaying.
    c.restart(follower);
    assert_eq!(c.state(follower).applied_index(), 0);
    assert!(c.contents(follower).is_empty());
    assert!(c
        .store(follower)
        .peer(SHARD)
        .unwrap()
        .is_awaiting_snapshot());
    assert!(c.converge(&[1, 2, 3]));
    assert!(!c
        .store(follower)
        .peer(SHARD)
        .unwrap()
        .is_awaiting_snapshot());
    assert_eq!(c.contents(follower), c.contents(leader));
    c.put("after", b"x", 3);
    assert!(c.converge(&[1, 2, 3]));
    assert_eq!(c.value(follower, "after"), Some(b"x".to_vec()));
    assert_eq!(c.failures.len(), 1);
    scenario.teardown();
}
