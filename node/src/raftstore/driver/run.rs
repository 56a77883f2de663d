//! The driver thread's loop (drawn in the parent module's comment).
//!
//! It is the only owner of the [`RaftStore`] and the only reader of the clock in the
//! raftstore: ticks and deadlines come from `Instant`, everything below stays clock-free.
//! Two ticks are always at least one tick interval apart: a late loop does not catch up,
//! which only slows the Raft clock down. The lease bound in [`super::ReadMode::Lease`]
//! relies on it: a voter's `election_tick` ticks after hearing from the leader then span at
//! least `(election_tick - 1)` intervals.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use raft::eraftpb::ConfChangeV2;

use super::super::apply::Transport;
use super::super::error::{RaftStoreError, Result};
use super::super::store::RaftStore;
use super::super::types::{PeerId, ProposalId, ShardId};
use super::reads::{ReadWaiter, ShardReads};
use super::{DriverConfig, DriverStats, Input, ReadMode, ReplicaStatus, Reply, Shared};

/// Ready-loop passes per iteration at most: a light ready can leave more work (an applied
/// conf change, entries held back by size), but the loop must come back to its inputs.
const MAX_READY_PASSES: usize = 4;

enum Command {
    Data(Vec<u8>),
    ConfChange(ConfChangeV2),
}

/// A proposal not yet handed to raft-rs: its leader is not ready.
struct Parked {
    shard: ShardId,
    command: Command,
    reply: Reply<u64>,
    deadline: Instant,
}

/// A proposal raft-rs has taken; answered by its outcome.
struct Proposal {
    shard: ShardId,
    term: u64,
    proposed_at: Instant,
    is_data: bool,
    reply: Reply<u64>,
}

struct Transfer {
    shard: ShardId,
    to: PeerId,
    reply: Reply<()>,
    deadline: Instant,
}

/// Marks the driver stopped if its thread unwinds (a panic inside raft-rs): callers then get
/// `Stopped` with that reason (their replies are dropped with the thread) and no stale
/// status stays published.
struct PanicGuard(Arc<Shared>);

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut stopped = self.0.stopped.lock();
            if stopped.is_none() {
                *stopped = Some("the driver thread panicked (restart the node)".into());
            }
            drop(stopped);
            self.0.status.write().clear();
        }
    }
}

pub(super) struct Driver<T: Transport> {
    store: RaftStore<T>,
    cfg: DriverConfig,
    lease: Option<Duration>,
    rx: mpsc::Receiver<Input>,
    shared: Arc<Shared>,
    next_proposal: u64,
    next_ctx: u64,
    parked: Vec<Parked>,
    proposals: HashMap<ProposalId, Proposal>,
    reads: BTreeMap<ShardId, ShardReads>,
    transfers: Vec<Transfer>,
    stats: DriverStats,
    /// Proposals handed to raft-rs since the last ready.
    fresh_proposals: u64,
    /// When a message was last refused as showing lost state (logged at most every 5 s).
    last_corruption_log: Option<Instant>,
}

impl<T: Transport> Driver<T> {
    pub(super) fn new(
        store: RaftStore<T>,
        cfg: DriverConfig,
        rx: mpsc::Receiver<Input>,
        shared: Arc<Shared>,
    ) -> Self {
        let lease = match cfg.read_mode {
            ReadMode::ReadIndex => None,
            ReadMode::Lease(d) => Some(d),
        };
        Self {
            store,
            cfg,
            lease,
            rx,
            shared,
            next_proposal: 1,
            next_ctx: 1,
            parked: Vec::new(),
            proposals: HashMap::new(),
            reads: BTreeMap::new(),
            transfers: Vec::new(),
            stats: DriverStats::default(),
            fresh_proposals: 0,
            last_corruption_log: None,
        }
    }

    /// Runs until shutdown or a fatal error, then answers everyone still waiting.
    pub(super) fn run(mut self) {
        let _guard = PanicGuard(Arc::clone(&self.shared));
        self.publish();
        let reason = self.run_loop();
        self.stop(reason);
    }

    fn run_loop(&mut self) -> String {
        let tick = self.cfg.tick;
        let mut next_tick = Instant::now() + tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let first = match self.rx.recv_timeout(wait) {
                Ok(input) => Some(input),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return "every handle was dropped".into()
                }
            };
            let now = Instant::now();
            if let Some(input) = first {
                if self.handle(input, now) {
                    return "shut down".into();
                }
                for _ in 1..self.cfg.max_inputs_per_iteration {
                    let Ok(input) = self.rx.try_recv() else { break };
                    if self.handle(input, now) {
                        return "shut down".into();
                    }
                }
            }
            if now >= next_tick {
                self.store.tick();
                self.stats.ticks += 1;
                // At least `tick` between two ticks, even after a late one.
                next_tick = now + tick;
                self.expire(now);
                let every = self.cfg.compact_every_ticks;
                if every > 0 && self.stats.ticks.is_multiple_of(every) {
                    self.compact_logs();
                }
            }
            if let Err(e) = self.work(now) {
                tracing::error!(error = %e, "raft driver stops: the ready loop failed");
                return format!("the ready loop failed (restart the node): {e}");
            }
            self.stats.iterations += 1;
            self.publish();
        }
    }

    /// Compacts every replica's log as far as the policy and the state machines' durable
    /// indexes allow, and purges raft-engine files. A failure is logged, not fatal: the log
    /// only stays longer.
    fn compact_logs(&mut self) {
        match self.store.compact_logs(&self.cfg.log_compaction) {
            Ok(done) => {
                for (shard, first_kept) in done {
                    tracing::debug!(%shard, first_kept, "raft log compacted");
                }
            }
            Err(e) => tracing::warn!(error = %e, "raft log compaction failed"),
        }
    }

    /// Takes one input; true on shutdown.
    fn handle(&mut self, input: Input, now: Instant) -> bool {
        match input {
            Input::Step(msg) => {
                self.shared.queued_messages.fetch_sub(1, Ordering::AcqRel);
                match self.store.step(msg) {
                    Ok(()) => self.stats.messages_stepped += 1,
                    Err(e @ RaftStoreError::Corruption(_)) => {
                        self.stats.step_errors += 1;
                        // Repeats with every heartbeat: say it every few seconds.
                        if self
                            .last_corruption_log
                            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(5))
                        {
                            self.last_corruption_log = Some(now);
                            tracing::error!(error = %e, "raft message refused");
                        }
                    }
                    Err(e) => {
                        self.stats.step_errors += 1;
                        tracing::debug!(error = %e, "raft message refused");
                    }
                }
            }
            Input::Propose { shard, data, reply } => self.parked.push(Parked {
                shard,
                command: Command::Data(data),
                reply,
                deadline: now + self.cfg.leader_ready_timeout,
            }),
            Input::ConfChange { shard, cc, reply } => self.parked.push(Parked {
                shard,
                command: Command::ConfChange(cc),
                reply,
                deadline: now + self.cfg.leader_ready_timeout,
            }),
            Input::Read { shard, reply } => {
                if self.store.peer(shard).is_err() {
                    let _ = reply.send(Err(RaftStoreError::ShardNotFound(shard)));
                } else {
                    self.reads.entry(shard).or_default().park(ReadWaiter {
                        reply,
                        deadline: now + self.cfg.read_timeout,
                        ready_deadline: now + self.cfg.leader_ready_timeout,
                    });
                }
            }
            Input::Transfer { shard, to, reply } => self.start_transfer(shard, to, reply, now),
            Input::Compact {
                shard,
                first_kept,
                reply,
            } => {
                let _ = reply.send(self.store.compact_log(shard, first_kept).map(|_| ()));
            }
            Input::Unreachable { shard, peer } => {
                if let Ok(p) = self.store.peer_mut(shard) {
                    p.report_unreachable(peer);
                }
            }
            Input::SnapshotStatus {
                shard,
                peer,
                delivered,
            } => {
                if let Ok(p) = self.store.peer_mut(shard) {
                    p.report_snapshot(
                        peer,
                        if delivered {
                            raft::SnapshotStatus::Finish
                        } else {
                            raft::SnapshotStatus::Failure
                        },
                    );
                }
            }
            Input::Retire { shard, reply } => {
                let _ = reply.send(self.store.peer_mut(shard).map(|p| p.retire()));
            }
            Input::Shutdown => return true,
        }
        false
    }

    fn start_transfer(&mut self, shard: ShardId, to: PeerId, reply: Reply<()>, now: Instant) {
        let peer = match self.store.peer_mut(shard) {
            Ok(p) => p,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        if peer.id() == to && peer.is_leader() {
            let _ = reply.send(Ok(()));
            return;
        }
        if let Err(e) = peer.transfer_leader(to) {
            let _ = reply.send(Err(e));
            return;
        }
        let term = peer.term();
        self.reads
            .entry(shard)
            .or_default()
            .end_lease_for_term(term);
        self.transfers.push(Transfer {
            shard,
            to,
            reply,
            deadline: now + self.cfg.transfer_timeout,
        });
    }

    /// Serves what waits, runs the ready loop, answers what it settled; once more if a
    /// leader became ready meanwhile (its parked requests should not wait for a tick).
    fn work(&mut self, now: Instant) -> Result<()> {
        self.serve_parked(now);
        self.run_ready(now)?;
        self.finish(now);
        if self.serve_parked(now) {
            self.run_ready(now)?;
            self.finish(now);
        }
        Ok(())
    }

    /// Ready passes until none has work. Each pass answers what its applies settled before
    /// its log write: those entries were already durable here, and the write's fsync is for
    /// newer ones (see [`RaftStore::begin_ready`]), so no reply waits for it.
    fn run_ready(&mut self, now: Instant) -> Result<()> {
        for _ in 0..MAX_READY_PASSES {
            let Some(pending) = self.store.begin_ready()? else {
                break;
            };
            self.finish(now);
            self.store.complete_ready(pending)?;
            if self.fresh_proposals > 0 {
                self.stats.proposal_readies += 1;
                self.stats.max_proposals_per_ready =
                    self.stats.max_proposals_per_ready.max(self.fresh_proposals);
                self.fresh_proposals = 0;
            }
        }
        Ok(())
    }

    /// Hands parked proposals and reads to ready leaders; true if anything was handed over.
    fn serve_parked(&mut self, now: Instant) -> bool {
        let mut issued = false;
        for p in std::mem::take(&mut self.parked) {
            if p.reply.is_closed() {
                continue;
            }
            let peer = match self.store.peer(p.shard) {
                Ok(peer) => peer,
                Err(e) => {
                    let _ = p.reply.send(Err(e));
                    continue;
                }
            };
            if !peer.is_leader() {
                let _ = p.reply.send(Err(RaftStoreError::NotLeader {
                    shard: p.shard,
                    leader: peer.leader(),
                }));
                continue;
            }
            if !peer.is_leader_ready() {
                if now >= p.deadline {
                    let _ = p
                        .reply
                        .send(Err(RaftStoreError::LeaderNotReady { shard: p.shard }));
                } else {
                    self.parked.push(p);
                }
                continue;
            }
            let term = peer.term();
            let id = ProposalId(self.next_proposal);
            self.next_proposal += 1;
            let (result, is_data) = match p.command {
                Command::Data(data) => (self.store.propose(p.shard, id, data), true),
                Command::ConfChange(cc) => {
                    self.reads.entry(p.shard).or_default().end_lease_before(now);
                    (self.store.propose_conf_change(p.shard, id, cc), false)
                }
            };
            match result {
                Ok(()) => {
                    issued = true;
                    self.stats.proposals += 1;
                    self.fresh_proposals += 1;
                    self.proposals.insert(
                        id,
                        Proposal {
                            shard: p.shard,
                            term,
                            proposed_at: now,
                            is_data,
                            reply: p.reply,
                        },
                    );
                }
                Err(e) => {
                    let _ = p.reply.send(Err(e));
                }
            }
        }
        for (shard, reads) in self.reads.iter_mut() {
            if !reads.has_parked() {
                continue;
            }
            match self.store.peer_mut(*shard) {
                Ok(peer) => {
                    let served = reads.serve(peer, now, &mut self.next_ctx);
                    self.stats.read_rounds += served.rounds;
                    self.stats.lease_reads += served.lease_reads;
                    issued |= served.rounds > 0 || served.lease_reads > 0;
                }
                Err(_) => reads.fail_all(&|| RaftStoreError::ShardNotFound(*shard)),
            }
        }
        issued
    }

    /// Answers proposals by their outcomes, reads by raft-rs's read states and the applied
    /// index, transfers by the leader now seen.
    fn finish(&mut self, now: Instant) {
        for o in self.store.take_outcomes() {
            let Some(p) = self.proposals.remove(&o.id) else {
                continue;
            };
            if let (Ok(_), Some(len), true) = (&o.result, self.lease, p.is_data) {
                self.reads
                    .entry(p.shard)
                    .or_default()
                    .renew_lease(p.term, p.proposed_at, len);
            }
            let _ = p.reply.send(o.result);
        }
        for (shard, reads) in self.reads.iter_mut() {
            let Ok(peer) = self.store.peer_mut(*shard) else {
                continue;
            };
            let states = peer.take_read_states();
            if reads.has_rounds() {
                reads.on_read_states(states, peer.term(), self.lease);
            }
            self.stats.reads += reads.finish(peer, now);
        }
        for t in std::mem::take(&mut self.transfers) {
            let moved = self
                .store
                .peer(t.shard)
                .is_ok_and(|peer| peer.leader() == Some(t.to));
            if moved {
                let _ = t.reply.send(Ok(()));
            } else {
                self.transfers.push(t);
            }
        }
    }

    /// Deadlines and callers that went away (once per tick).
    fn expire(&mut self, now: Instant) {
        self.proposals.retain(|_, p| !p.reply.is_closed());
        for (shard, reads) in self.reads.iter_mut() {
            reads.expire(*shard, now);
        }
        for t in std::mem::take(&mut self.transfers) {
            if t.reply.is_closed() {
                continue;
            }
            if now < t.deadline {
                self.transfers.push(t);
                continue;
            }
            let _ = t.reply.send(Err(RaftStoreError::Timeout(format!(
                "{}: leadership did not move to {} in time",
                t.shard, t.to
            ))));
        }
        // Parked proposals past their deadline are answered by `serve_parked`; here only
        // the ones whose callers left.
        self.parked.retain(|p| !p.reply.is_closed());
    }

    fn publish(&mut self) {
        let mut status = BTreeMap::new();
        for shard in self.store.shards() {
            if let Ok(p) = self.store.peer(shard) {
                status.insert(shard, ReplicaStatus::of(p));
            }
        }
        *self.shared.status.write() = status;
        self.publish_stats();
    }

    fn publish_stats(&mut self) {
        let loop_stats = self.store.stats();
        let mut stats = self.stats;
        stats.readies = loop_stats.iterations;
        stats.log_writes = loop_stats.writes;
        stats.log_syncs = loop_stats.syncs;
        stats.waiting_proposals = (self.proposals.len() + self.parked.len()) as u64;
        stats.waiting_reads = self.reads.values().map(|r| r.waiting() as u64).sum();
        *self.shared.stats.lock() = stats;
    }

    /// Records why the driver stopped and answers every caller, waiting or still queued.
    fn stop(&mut self, reason: String) {
        {
            let mut stopped = self.shared.stopped.lock();
            if stopped.is_none() {
                *stopped = Some(reason.clone());
            }
        }
        // Before anyone hears of it: a caller told `Stopped` must not find a status.
        self.shared.status.write().clear();
        let err = || RaftStoreError::Stopped(reason.clone());
        for p in self.parked.drain(..) {
            let _ = p.reply.send(Err(err()));
        }
        for (_, p) in self.proposals.drain() {
            let _ = p.reply.send(Err(err()));
        }
        for reads in self.reads.values_mut() {
            reads.fail_all(&err);
        }
        for t in self.transfers.drain(..) {
            let _ = t.reply.send(Err(err()));
        }
        while let Ok(input) = self.rx.try_recv() {
            match input {
                Input::Propose { reply, .. }
                | Input::ConfChange { reply, .. }
                | Input::Read { reply, .. } => {
                    let _ = reply.send(Err(err()));
                }
                Input::Transfer { reply, .. }
                | Input::Compact { reply, .. }
                | Input::Retire { reply, .. } => {
                    let _ = reply.send(Err(err()));
                }
                Input::Step(_) => {
                    self.shared.queued_messages.fetch_sub(1, Ordering::AcqRel);
                }
                Input::Unreachable { .. } | Input::SnapshotStatus { .. } | Input::Shutdown => {}
            }
        }
        self.publish_stats();
    }
}
