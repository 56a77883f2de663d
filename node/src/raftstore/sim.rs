//! Test support for deterministic in-process clusters: a fault-injecting in-memory network
//! and a key-value state machine. Compiled only for tests.
//!
//! The network holds every message sent and delivers it in a later round, unless a fault
//! rule says otherwise: per-pair partitions (cut links hold nothing back; messages across
//! them are lost, as on a real cut), random loss, duplication and delay (a delayed message
//! is overtaken by later ones: reordering). All randomness comes from one seeded generator,
//! and every loop in a test is bounded by a round count: no clock, no sleep.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use raft::eraftpb::{Entry, EntryType, MessageType};
use raft::SnapshotStatus;

use super::apply::{Apply, ApplyOutcome, RaftMessage, Transport};
use super::error::{RaftStoreError, Result};
use super::log_store::LogStore;
use super::peer::PeerConfig;
pub use super::rng::Rng;
use super::store::RaftStore;
use super::types::{PeerId, ProposalId, ReplicaMeta, ShardEpoch, ShardId};

/// Fault rules, all off by default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    pub drop_percent: u64,
    pub duplicate_percent: u64,
    /// A message is held back up to this many rounds (uniformly), reordering traffic.
    pub max_delay_rounds: u64,
}

#[derive(Debug)]
struct InFlightMsg {
    from: u64,
    deliver_at: u64,
    msg: RaftMessage,
}

#[derive(Debug)]
struct NetState {
    rng: Rng,
    faults: Faults,
    cut: BTreeSet<(u64, u64)>,
    round: u64,
    queue: Vec<InFlightMsg>,
    sent: u64,
    dropped: u64,
}

/// The shared in-memory network.
#[derive(Debug, Clone)]
pub struct Network(Rc<RefCell<NetState>>);

impl Network {
    pub fn new(seed: u64) -> Self {
        Self(Rc::new(RefCell::new(NetState {
            rng: Rng::new(seed),
            faults: Faults::default(),
            cut: BTreeSet::new(),
            round: 0,
            queue: Vec::new(),
            sent: 0,
            dropped: 0,
        })))
    }

    pub fn set_faults(&self, f: Faults) {
        self.0.borrow_mut().faults = f;
    }

    /// Cuts both directions between every node of `a` and every node of `b`.
    pub fn partition(&self, a: &[u64], b: &[u64]) {
        let mut s = self.0.borrow_mut();
        for &x in a {
            for &y in b {
                s.cut.insert((x, y));
                s.cut.insert((y, x));
            }
        }
    }

    /// Restores every link and turns faults off.
    pub fn heal(&self) {
        let mut s = self.0.borrow_mut();
        s.cut.clear();
        s.faults = Faults::default();
    }

    /// Messages dropped so far (loss and cuts).
    pub fn dropped(&self) -> u64 {
        self.0.borrow().dropped
    }

    pub fn transport(&self, from: u64) -> SimTransport {
        SimTransport {
            from,
            net: self.clone(),
        }
    }

    /// Advances the network clock and takes the messages due, in delivery order.
    pub fn take_due(&self) -> Vec<(u64, RaftMessage)> {
        let mut s = self.0.borrow_mut();
        s.round += 1;
        let round = s.round;
        let queue = std::mem::take(&mut s.queue);
        let (due, later): (Vec<_>, Vec<_>) = queue.into_iter().partition(|m| m.deliver_at <= round);
        s.queue = later;
        let mut out = Vec::with_capacity(due.len());
        for m in due {
            if s.cut.contains(&(m.from, m.msg.msg.to)) {
                s.dropped += 1;
                continue;
            }
            out.push((m.from, m.msg));
        }
        out
    }
}

/// One node's handle on the network.
#[derive(Debug)]
pub struct SimTransport {
    from: u64,
    net: Network,
}

impl Transport for SimTransport {
    fn send(&mut self, msg: RaftMessage) {
        let mut s = self.net.0.borrow_mut();
        s.sent += 1;
        let f = s.faults;
        if s.rng.chance(f.drop_percent) {
            s.dropped += 1;
            return;
        }
        let copies = if s.rng.chance(f.duplicate_percent) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = 1 + s.rng.below(f.max_delay_rounds + 1);
            let deliver_at = s.round + delay;
            // Messages cross the "wire" as bytes, as they will between nodes.
            let msg = match msg.encode().and_then(|b| RaftMessage::decode(&b)) {
                Ok(m) => m,
                Err(_) => return,
            };
            s.queue.push(InFlightMsg {
                from: self.from,
                deliver_at,
                msg,
            });
        }
    }
}

/// The replicated key-value map: entries carry `key=value`.
#[derive(Debug, Default)]
pub struct Kv {
    pub map: BTreeMap<Vec<u8>, Vec<u8>>,
    /// How many times each key was written (duplicates would show here).
    pub writes: BTreeMap<Vec<u8>, u64>,
    pub applied: u64,
    /// Snapshots this replica installed.
    pub snapshots_restored: u64,
}

/// An [`Apply`] over a shared [`Kv`] (the test reads it while the store owns the handle).
#[derive(Debug, Clone, Default)]
pub struct KvApply(pub Arc<Mutex<Kv>>);

impl Apply for KvApply {
    fn apply(&mut self, _shard: ShardId, entries: &[Entry]) -> Result<ApplyOutcome> {
        let mut kv = self
            .0
            .lock()
            .map_err(|_| RaftStoreError::Apply("poisoned".into()))?;
        for e in entries {
            if e.index != kv.applied + 1 {
                return Err(RaftStoreError::Apply(format!(
                    "entry {} after {}",
                    e.index, kv.applied
                )));
            }
            if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
                let data: &[u8] = &e.data;
                let pos = data
                    .iter()
                    .position(|b| *b == b'=')
                    .ok_or_else(|| RaftStoreError::Apply("no '=' in command".into()))?;
                let key = data[..pos].to_vec();
                kv.map.insert(key.clone(), data[pos + 1..].to_vec());
                *kv.writes.entry(key).or_default() += 1;
            }
            kv.applied = e.index;
        }
        Ok(ApplyOutcome::applied(kv.applied))
    }

    fn applied_index(&self) -> u64 {
        self.0.lock().map(|kv| kv.applied).unwrap_or(0)
    }

    /// `applied || (key len, key, value len, value)*`, lengths as u32 LE.
    fn snapshot(&self) -> Result<Vec<u8>> {
        let kv = self
            .0
            .lock()
            .map_err(|_| RaftStoreError::Apply("poisoned".into()))?;
        let mut out = kv.applied.to_le_bytes().to_vec();
        for (k, v) in &kv.map {
            for part in [k, v] {
                out.extend_from_slice(&(part.len() as u32).to_le_bytes());
                out.extend_from_slice(part);
            }
        }
        Ok(out)
    }

    fn restore(&mut self, _shard: ShardId, index: u64, data: &[u8]) -> Result<()> {
        let bad = || RaftStoreError::Apply("bad snapshot".into());
        let mut map = BTreeMap::new();
        let mut rest = data.get(8..).ok_or_else(bad)?;
        let take = |rest: &mut &[u8]| -> Result<Vec<u8>> {
            let len = u32::from_le_bytes(
                rest.get(..4)
                    .ok_or_else(bad)?
                    .try_into()
                    .map_err(|_| bad())?,
            ) as usize;
            let part = rest.get(4..4 + len).ok_or_else(bad)?.to_vec();
            *rest = &rest[4 + len..];
            Ok(part)
        };
        while !rest.is_empty() {
            let k = take(&mut rest)?;
            let v = take(&mut rest)?;
            map.insert(k, v);
        }
        let mut kv = self
            .0
            .lock()
            .map_err(|_| RaftStoreError::Apply("poisoned".into()))?;
        kv.map = map;
        kv.applied = index;
        kv.snapshots_restored += 1;
        Ok(())
    }
}

pub const SHARD: ShardId = ShardId(1);

/// A node of the test cluster: its raft-engine directory survives crashes.
#[derive(Debug)]
pub struct SimNode {
    pub dir: tempfile::TempDir,
    pub store: Option<RaftStore<SimTransport>>,
    pub kv: KvApply,
}

/// A cluster of nodes, node `i` hosting replica `i` of [`SHARD`].
#[derive(Debug)]
pub struct Cluster {
    pub net: Network,
    pub nodes: BTreeMap<u64, SimNode>,
    pub outcomes: BTreeMap<ProposalId, Result<u64>>,
    next_id: u64,
}

/// Distinct fixed election timeouts per node keep elections deterministic (raft-rs would
/// otherwise draw them from the thread RNG).
pub fn node_config(id: u64) -> PeerConfig {
    let base = 10 + 4 * id as usize;
    PeerConfig {
        election_tick: base,
        min_election_tick: base,
        max_election_tick: base + 1,
        ..PeerConfig::default()
    }
}

pub fn meta(id: u64) -> ReplicaMeta {
    ReplicaMeta {
        shard: SHARD,
        peer: PeerId(id),
        epoch: ShardEpoch::default(),
    }
}

impl Cluster {
    /// `n` nodes bootstrapped as the voters of [`SHARD`].
    pub fn new(n: u64, seed: u64) -> Self {
        let net = Network::new(seed);
        let voters: Vec<PeerId> = (1..=n).map(PeerId).collect();
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let dir = tempfile::tempdir().unwrap();
            let log = LogStore::open(dir.path()).unwrap();
            let mut store = RaftStore::new(log, net.transport(id), node_config(id));
            let kv = KvApply::default();
            store
                .bootstrap_shard(meta(id), &voters, Box::new(kv.clone()))
                .unwrap();
            nodes.insert(
                id,
                SimNode {
                    dir,
                    store: Some(store),
                    kv,
                },
            );
        }
        Self {
            net,
            nodes,
            outcomes: BTreeMap::new(),
            next_id: 1,
        }
    }

    /// Adds an empty node `id` that will join once the leader adds it.
    pub fn add_joining_node(&mut self, id: u64) {
        let dir = tempfile::tempdir().unwrap();
        let log = LogStore::open(dir.path()).unwrap();
        let mut store = RaftStore::new(log, self.net.transport(id), node_config(id));
        let kv = KvApply::default();
        store
            .create_joining_replica(meta(id), Box::new(kv.clone()))
            .unwrap();
        self.nodes.insert(
            id,
            SimNode {
                dir,
                store: Some(store),
                kv,
            },
        );
    }

    pub fn store(&mut self, id: u64) -> &mut RaftStore<SimTransport> {
        self.nodes
            .get_mut(&id)
            .and_then(|n| n.store.as_mut())
            .expect("node is up")
    }

    /// Stops node `id` (kill -9: its unsynced nothing, its raft-engine directory stays).
    pub fn crash(&mut self, id: u64) {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.store = None;
        }
    }

    /// Restarts node `id` from its raft-engine directory. With `fresh_state_machine` its
    /// key-value map starts empty and is rebuilt from the log.
    pub fn restart(&mut self, id: u64, fresh_state_machine: bool) {
        let net = self.net.clone();
        let n = self.nodes.get_mut(&id).expect("known node");
        if fresh_state_machine {
            n.kv = KvApply::default();
        }
        let log = LogStore::open(n.dir.path()).unwrap();
        let mut store = RaftStore::new(log, net.transport(id), node_config(id));
        store.open_replica(SHARD, Box::new(n.kv.clone())).unwrap();
        n.store = Some(store);
    }

    /// One round: deliver due messages, tick every live node, run every ready loop. A
    /// snapshot's sender learns whether it reached a live node, as a transport reports.
    pub fn round(&mut self) {
        for (from, msg) in self.net.take_due() {
            let to = msg.msg.to;
            let snapshot = msg.msg.get_msg_type() == MessageType::MsgSnapshot;
            // A message for a removed or unknown replica is dropped like a lost one.
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
                if let Some(store) = self.nodes.get_mut(&from).and_then(|n| n.store.as_mut()) {
                    store.report_snapshot(SHARD, PeerId(to), status);
                }
            }
        }
        for n in self.nodes.values_mut() {
            if let Some(store) = n.store.as_mut() {
                store.tick();
                store.process_ready().unwrap();
                // Light readies can produce more work (an apply unblocking a conf change).
                store.process_ready().unwrap();
                for o in store.take_outcomes() {
                    self.outcomes.insert(o.id, o.result);
                }
            }
        }
    }

    /// Runs rounds until `cond` holds, at most `max` rounds; returns whether it held.
    pub fn run_until(&mut self, max: usize, mut cond: impl FnMut(&mut Self) -> bool) -> bool {
        for _ in 0..max {
            if cond(self) {
                return true;
            }
            self.round();
        }
        cond(self)
    }

    /// The live leader with the highest term, if any.
    pub fn leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter_map(|(id, n)| n.store.as_ref().map(|s| (*id, s)))
            .filter_map(|(id, s)| {
                let p = s.peer(SHARD).ok()?;
                p.is_leader().then_some((p.term(), id))
            })
            .max()
            .map(|(_, id)| id)
    }

    /// Live nodes that believe they lead (for split-brain checks), with their terms.
    pub fn leaders(&self) -> Vec<(u64, u64)> {
        self.nodes
            .iter()
            .filter_map(|(id, n)| {
                let p = n.store.as_ref()?.peer(SHARD).ok()?;
                p.is_leader().then_some((*id, p.term()))
            })
            .collect()
    }

    pub fn wait_leader(&mut self) -> u64 {
        assert!(self.run_until(500, |c| c.leader().is_some()), "no leader");
        self.leader().unwrap_or(0)
    }

    fn next_proposal(&mut self) -> ProposalId {
        let id = ProposalId(self.next_id);
        self.next_id += 1;
        id
    }

    /// Proposes `key=value` at node `at`; returns the id, or the immediate error.
    pub fn propose_at(&mut self, at: u64, key: &str, value: &str) -> Result<ProposalId> {
        let id = self.next_proposal();
        self.store(at)
            .propose(SHARD, id, format!("{key}={value}").into_bytes())?;
        Ok(id)
    }

    /// Writes `key=value` through whichever node leads, retrying after NotLeader, until
    /// applied; returns false when it could not within the round budget.
    pub fn put(&mut self, key: &str, value: &str) -> bool {
        for _attempt in 0..20 {
            let Some(leader) = self.leader() else {
                self.run_until(200, |c| c.leader().is_some());
                continue;
            };
            let Ok(id) = self.propose_at(leader, key, value) else {
                self.round();
                continue;
            };
            self.run_until(300, |c| c.outcomes.contains_key(&id));
            match self.outcomes.get(&id) {
                Some(Ok(_)) => return true,
                Some(Err(e)) if e.is_retryable() => continue,
                Some(Err(e)) => panic!("put {key}: {e}"),
                None => continue,
            }
        }
        false
    }

    pub fn value(&self, node: u64, key: &str) -> Option<String> {
        let kv = self.nodes.get(&node)?.kv.0.lock().ok()?;
        kv.map
            .get(key.as_bytes())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn kv_snapshot(&self, node: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.nodes
            .get(&node)
            .and_then(|n| n.kv.0.lock().ok().map(|kv| kv.map.clone()))
            .unwrap_or_default()
    }

    pub fn applied(&self, node: u64) -> u64 {
        self.nodes
            .get(&node)
            .and_then(|n| n.kv.0.lock().ok().map(|kv| kv.applied))
            .unwrap_or(0)
    }

    /// Runs until every live node listed has applied the same index as the leader.
    pub fn converge(&mut self, nodes: &[u64]) -> bool {
        let nodes = nodes.to_vec();
        self.run_until(1000, |c| {
            let Some(l) = c.leader() else { return false };
            let target = c.applied(l);
            nodes.iter().all(|n| c.applied(*n) == target)
        })
    }

    pub fn outcome(&self, id: ProposalId) -> Option<&Result<u64>> {
        self.outcomes.get(&id)
    }
}
