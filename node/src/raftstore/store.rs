//! The store: every replica this node hosts, driven by one ready loop over one log store.
//!
//! The loop is a plain method, [`RaftStore::process_ready`], with no thread or clock inside:
//! a driver calls [`RaftStore::tick`] on its timer, [`RaftStore::step`] for each message
//! received and `process_ready` after either; tests call the same three methods in a chosen
//! order. Each iteration visits every replica with a ready, gathers all of their log changes
//! into one [`LogWriteBatch`] and writes it with one fsync, then finishes each replica's ready.
//! `process_ready` is [`RaftStore::begin_ready`] then [`RaftStore::complete_ready`]; a driver
//! that calls the two itself answers what the first half applied before the write (D167).

use std::collections::BTreeMap;

use raft::eraftpb::ConfChangeV2;

use super::apply::{Apply, ProposalResult, RaftMessage, Transport};
use super::compaction::LogCompactionPolicy;
use super::error::{RaftStoreError, Result};
use super::log_store::{LogStore, LogWriteBatch};
use super::logger::raft_logger;
use super::peer::{InFlight, Peer, PeerConfig};
use super::types::{PeerId, ProposalId, ReplicaMeta, ShardId};

/// Counters of the ready loop, for status pages and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoopStats {
    /// Iterations that found at least one ready.
    pub iterations: u64,
    /// Log writes issued (at most one per iteration).
    pub writes: u64,
    /// Of those, the ones fsynced.
    pub syncs: u64,
}

/// An iteration between [`RaftStore::begin_ready`] and [`RaftStore::complete_ready`]: the
/// staged log changes and the readies waiting for them to be durable.
#[must_use = "the readies advance only through RaftStore::complete_ready"]
pub struct PendingReady {
    batch: LogWriteBatch,
    inflight: Vec<(ShardId, InFlight)>,
    must_sync: bool,
}

impl std::fmt::Debug for PendingReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingReady")
            .field("replicas", &self.inflight.len())
            .field("must_sync", &self.must_sync)
            .finish_non_exhaustive()
    }
}

/// All replicas of one node, their log store and their transport.
pub struct RaftStore<T: Transport> {
    log: LogStore,
    peers: BTreeMap<ShardId, Peer>,
    transport: T,
    cfg: PeerConfig,
    logger: slog::Logger,
    outcomes: Vec<ProposalResult>,
    stats: LoopStats,
}

impl<T: Transport> std::fmt::Debug for RaftStore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftStore")
            .field("log", &self.log)
            .field("peers", &self.peers)
            .field("stats", &self.stats)
            .finish()
    }
}

impl<T: Transport> RaftStore<T> {
    /// A store with no replicas open yet.
    pub fn new(log: LogStore, transport: T, cfg: PeerConfig) -> Self {
        Self {
            log,
            peers: BTreeMap::new(),
            transport,
            cfg,
            logger: raft_logger(),
            outcomes: Vec::new(),
            stats: LoopStats::default(),
        }
    }

    /// The log store.
    pub fn log_store(&self) -> &LogStore {
        &self.log
    }

    /// The transport (tests reach into their in-memory one).
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Loop counters.
    pub fn stats(&self) -> LoopStats {
        self.stats
    }

    /// The Raft timing every replica of this store uses.
    pub fn peer_config(&self) -> &PeerConfig {
        &self.cfg
    }

    /// Creates and opens the first replica of a new shard with `voters` as its members.
    pub fn bootstrap_shard(
        &mut self,
        meta: ReplicaMeta,
        voters: &[PeerId],
        apply: Box<dyn Apply>,
    ) -> Result<()> {
        self.ensure_absent(meta.shard)?;
        Peer::bootstrap(&self.log, &meta, voters)?;
        self.open_replica(meta.shard, apply)
    }

    /// Creates and opens an empty replica that will join `meta.shard` once the leader adds it.
    pub fn create_joining_replica(
        &mut self,
        meta: ReplicaMeta,
        apply: Box<dyn Apply>,
    ) -> Result<()> {
        self.ensure_absent(meta.shard)?;
        Peer::create_joining(&self.log, &meta)?;
        self.open_replica(meta.shard, apply)
    }

    /// Opens a replica recorded in the log store (after a restart).
    pub fn open_replica(&mut self, shard: ShardId, apply: Box<dyn Apply>) -> Result<()> {
        self.ensure_absent(shard)?;
        let peer = Peer::open(self.log.clone(), shard, apply, &self.cfg, &self.logger)?;
        self.peers.insert(shard, peer);
        Ok(())
    }

    fn ensure_absent(&self, shard: ShardId) -> Result<()> {
        if self.peers.contains_key(&shard) {
            return Err(RaftStoreError::ShardExists(shard));
        }
        Ok(())
    }

    /// The replica of `shard`.
    pub fn peer(&self, shard: ShardId) -> Result<&Peer> {
        self.peers
            .get(&shard)
            .ok_or(RaftStoreError::ShardNotFound(shard))
    }

    /// The replica of `shard`, mutably (conf changes, leader transfer, compaction).
    pub fn peer_mut(&mut self, shard: ShardId) -> Result<&mut Peer> {
        self.peers
            .get_mut(&shard)
            .ok_or(RaftStoreError::ShardNotFound(shard))
    }

    /// The hosted shards.
    pub fn shards(&self) -> Vec<ShardId> {
        self.peers.keys().copied().collect()
    }

    /// Advances every replica's logical clock by one tick.
    pub fn tick(&mut self) {
        for p in self.peers.values_mut() {
            p.tick();
        }
    }

    /// Delivers a message from another node. A message for a shard not hosted here is
    /// dropped with an error (the sender retries; creating replicas on demand is the
    /// scheduler's job, not the transport's).
    pub fn step(&mut self, msg: RaftMessage) -> Result<()> {
        let peer = self.peer_mut(msg.shard)?;
        if msg.msg.to != peer.id().0 {
            return Err(RaftStoreError::Invalid(format!(
                "{}: message for {} reached {}",
                msg.shard,
                msg.msg.to,
                peer.id()
            )));
        }
        peer.step(msg.msg)
    }

    /// Reports how sending a snapshot of `shard` to replica `to` ended (the transport calls
    /// this; see [`Peer::report_snapshot`]). Unknown shards are ignored: the replica may have
    /// been removed meanwhile.
    pub fn report_snapshot(&mut self, shard: ShardId, to: PeerId, status: raft::SnapshotStatus) {
        if let Some(peer) = self.peers.get_mut(&shard) {
            peer.report_snapshot(to, status);
        }
    }

    /// Proposes a command to `shard`; the outcome comes back from [`RaftStore::take_outcomes`]
    /// after apply. Fails at once with `NotLeader` when this replica does not lead.
    pub fn propose(&mut self, shard: ShardId, id: ProposalId, data: Vec<u8>) -> Result<()> {
        self.peer_mut(shard)?.propose(id, data)
    }

    /// Proposes a membership change to `shard`.
    pub fn propose_conf_change(
        &mut self,
        shard: ShardId,
        id: ProposalId,
        cc: ConfChangeV2,
    ) -> Result<()> {
        self.peer_mut(shard)?.propose_conf_change(id, cc)
    }

    /// Proposal outcomes resolved since the last call.
    pub fn take_outcomes(&mut self) -> Vec<ProposalResult> {
        std::mem::take(&mut self.outcomes)
    }

    /// One iteration of the ready loop over every replica; returns how many had work.
    ///
    /// A log-store error stops the iteration and is returned: the replicas whose batch did
    /// not reach the disk have not advanced, so their readies are lost with it and the store
    /// must be reopened (as raft-rs's contract for a failed persist).
    pub fn process_ready(&mut self) -> Result<usize> {
        match self.begin_ready()? {
            Some(pending) => self.complete_ready(pending),
            None => Ok(0),
        }
    }

    /// The first half of an iteration: every replica with a ready sends what may leave before
    /// persistence, applies its committed entries and stages its log changes; nothing is
    /// written yet. `None` when no replica had work.
    ///
    /// The outcomes of the entries applied here are in [`RaftStore::take_outcomes`] before the
    /// write: raft-rs hands out only entries that are committed *and* already persisted on
    /// this replica, so a caller may be answered without waiting for this iteration's fsync,
    /// which covers newer entries only. A driver that answers between the two halves takes
    /// that fsync off every reply's path.
    pub fn begin_ready(&mut self) -> Result<Option<PendingReady>> {
        let mut batch = LogWriteBatch::new();
        let mut inflight = Vec::new();
        let mut must_sync = false;
        for (shard, peer) in self.peers.iter_mut() {
            if let Some(f) = peer.collect_ready(&mut batch, &mut self.transport)? {
                must_sync |= f.must_sync;
                peer.take_outcomes(&mut self.outcomes);
                inflight.push((*shard, f));
            }
        }
        if inflight.is_empty() {
            self.build_requested_snapshots();
            return Ok(None);
        }
        Ok(Some(PendingReady {
            batch,
            inflight,
            must_sync,
        }))
    }

    /// The second half: one log write (fsynced if any ready needs it), then each replica's
    /// ready is finished (persisted messages sent, raft-rs advanced, newly committed entries
    /// applied). Returns how many replicas had work.
    pub fn complete_ready(&mut self, pending: PendingReady) -> Result<usize> {
        let PendingReady {
            mut batch,
            inflight,
            must_sync,
        } = pending;
        self.stats.iterations += 1;
        if !batch.is_empty() {
            self.log.write(&mut batch, must_sync)?;
            self.stats.writes += 1;
            if must_sync {
                self.stats.syncs += 1;
            }
        }
        let n = inflight.len();
        for (shard, f) in inflight {
            let peer = self
                .peers
                .get_mut(&shard)
                .ok_or(RaftStoreError::ShardNotFound(shard))?;
            peer.finish_ready(f, &mut self.transport)?;
            peer.take_outcomes(&mut self.outcomes);
        }
        self.build_requested_snapshots();
        Ok(n)
    }

    /// Builds the snapshots raft-rs asked for since the last iteration (on this thread,
    /// between applies, so each is exactly the state at its replica's applied index). A
    /// failure, such as a shard past the snapshot size limit, is logged and kept on the
    /// replica (`Peer::last_snapshot_error`); it does not stop the loop.
    fn build_requested_snapshots(&mut self) {
        for peer in self.peers.values_mut() {
            if let Err(e) = peer.build_requested_snapshot() {
                peer.note_snapshot_error(e);
            }
        }
    }

    /// Compacts every replica's log as `policy` allows (never past what its state machine
    /// has made durable) and lets raft-engine purge the files no replica needs. Returns the
    /// shards compacted, each with its new first index. The driver calls it periodically.
    pub fn compact_logs(&mut self, policy: &LogCompactionPolicy) -> Result<Vec<(ShardId, u64)>> {
        let mut compacted = Vec::new();
        for (shard, peer) in self.peers.iter_mut() {
            if let Some(first_kept) = policy.first_kept(&peer.log_view()) {
                peer.compact_log(first_kept)?;
                compacted.push((*shard, first_kept));
            }
        }
        // raft-engine names the shards whose old entries hold files back; the policy above
        // already compacts every shard as far as it safely can.
        self.log.purge_expired_files()?;
        Ok(compacted)
    }

    /// Compacts `shard`'s log before `first_kept` and lets raft-engine purge files no
    /// replica needs; returns the shards raft-engine asks to compact to free more files.
    pub fn compact_log(&mut self, shard: ShardId, first_kept: u64) -> Result<Vec<ShardId>> {
        self.peer_mut(shard)?.compact_log(first_kept)?;
        self.log.purge_expired_files()
    }
}
