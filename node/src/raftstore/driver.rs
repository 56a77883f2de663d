//! The driver: a thread that owns a [`RaftStore`] and runs its ready loop on a clock, and the
//! clonable [`RaftHandle`] through which the rest of the node talks to it.
//!
//! ```text
//!   RaftHandle (any thread, Send + Sync)           driver thread (owns RaftStore<T>)
//!   ───────────────────────────────────           ────────────────────────────────────────
//!   propose / propose_conf_change ──┐             loop {
//!   read_index                      │  one          wait on the channel until the next tick
//!   transfer_leader / compact_log   ├─ channel ──▶  drain ALL queued inputs (bounded count):
//!   step(msg)          (transport)  │               step messages, park requests
//!   report_unreachable / _snapshot  │             tick() when due (>= one interval apart)
//!   shutdown                      ──┘             serve parked requests on ready leaders:
//!                                                   proposals -> RaftStore::propose
//!        ▲                                          reads -> one ReadIndex ctx per shard
//!        │ oneshot replies                           (or a lease read)
//!        │                                        begin_ready(): send, apply committed, stage
//!        ├─────────────────────────────────────── outcomes of those applies -> replies, and
//!        │                                          reads whose index is applied (D167)
//!        │                                        complete_ready(): ONE log write + fsync for
//!        │                                          every proposal and message drained above
//!        └─────────────────────────────────────── outcomes (after apply) -> proposals' replies
//!   status(shard) <── published after each        read states, applied >= read index -> reads
//!   stats()           iteration                 }
//! ```
//!
//! **Batching.** Inputs are drained before the one `process_ready`, so N proposals queued
//! while the previous fsync ran share the next ready, log write and fsync
//! ([`DriverStats::proposal_readies`] against [`DriverStats::proposals`]).
//!
//! **Outcomes.** A proposal resolves `Ok(index)` only once its entry is applied on this
//! replica. Entries applied in the first half of a ready pass are answered before that pass's
//! log write: raft-rs hands out only entries already persisted here, so the fsync of the
//! newer entries staged beside them is no longer on their replies' path (D167). A proposal
//! a new leader replaced resolves `NotLeader` (retryable, it was not applied).
//! The driver never times out a proposal raft-rs has taken, because its outcome would then be
//! unknown: a caller that stops waiting (a timeout around the future, or dropping it) simply
//! stops listening, and the driver forgets it at the next tick. Nothing leaks.
//!
//! **Leader readiness.** A leader that has not yet applied the first entry of its term may
//! miss writes acknowledged by the previous leader. Proposals and reads that reach such a
//! leader are *parked* in the driver and served as soon as it is ready, or fail with the
//! retryable `LeaderNotReady` after [`DriverConfig::leader_ready_timeout`]; on a replica that
//! is not the leader they fail at once with `NotLeader { leader }`.
//!
//! **Reads.** [`RaftHandle::read_index`] returns an index such that every write acknowledged
//! before the call is at or below it, once this replica has applied through it: the caller
//! then reads its local state machine. By default each read is confirmed by raft-rs's
//! ReadIndex (a heartbeat round to a quorum); all reads queued for a shard in one iteration
//! share one round (one request context). [`ReadMode::Lease`] serves reads without the round
//! while a leader lease holds (see [`ReadMode`] for the clock assumption). Reads are served
//! by leaders only.
//!
//! **Failure.** Any error of the ready loop (a failed log write above all) stops the driver:
//! raft-rs cannot resume a ready that was not persisted. Every waiting caller, and every later
//! one, gets [`RaftStoreError::Stopped`] with the reason; the node must be restarted.

mod reads;
mod run;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use raft::eraftpb::{ConfChangeV2, MessageType};
use raft::StateRole;
use tokio::sync::oneshot;

use super::apply::{RaftMessage, Transport};
use super::compaction::LogCompactionPolicy;
use super::error::{RaftStoreError, Result};
use super::peer::{Peer, PeerConfig};
use super::store::RaftStore;
use super::types::{PeerId, ShardEpoch, ShardId};

/// How reads are confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// Every read is confirmed by a ReadIndex round to a quorum (raft-rs `Safe`): correct
    /// whatever the clocks do. The default.
    #[default]
    ReadIndex,
    /// Reads are served without a round while the leader holds a lease of this length,
    /// measured on the leader's monotonic clock from the *start* of the last round a quorum
    /// confirmed (a ReadIndex round, or a proposal committed in the leader's term). It is
    /// renewed by those rounds and dropped on a leader transfer, a membership change or a
    /// new term.
    ///
    /// Why it is safe: a voter that heard from the leader refuses to vote for anyone else
    /// for `election_tick` of its own ticks (raft-rs's `check_quorum` lease), and the driver
    /// keeps ticks at least one interval apart, so once a quorum acknowledged a message sent
    /// at T no other leader can exist before T + `(election_tick - 1) * tick`.
    /// It assumes (1) clocks advance at rates that differ by less than the margin between
    /// this lease and that bound (a lease at 80% of it tolerates 20%: NTP-disciplined
    /// clocks differ by parts per million, but a paused VM does not count time), and (2) a
    /// voter restarted after acknowledging does not vote before the lease has run out
    /// (restart takes longer than the lease). The bound is checked at start; a longer lease
    /// is refused.
    ///
    /// raft-rs's own `LeaseBased` option is not used: it answers at once without a lease
    /// of its own, trusting `check_quorum` to step a cut-off leader down, which takes up to
    /// two election timeouts while a new leader may be elected after one.
    Lease(Duration),
}

/// The driver's timing and bounds.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// One raft-rs tick (`raft_tick_ms`); election and heartbeat timeouts are counted in
    /// ticks by [`PeerConfig`].
    pub tick: Duration,
    /// How reads are confirmed.
    pub read_mode: ReadMode,
    /// How long a proposal or read waits on a leader that is not ready yet before failing
    /// with `LeaderNotReady`.
    pub leader_ready_timeout: Duration,
    /// How long a read may wait for its confirmation and for apply before `Timeout`.
    pub read_timeout: Duration,
    /// How long a leader transfer may take before `Timeout`.
    pub transfer_timeout: Duration,
    /// Requests (proposals, reads, admin) that may wait at once; `Busy` beyond.
    pub max_waiting_requests: usize,
    /// Inbound Raft messages that may wait in the channel; more are dropped (Raft resends).
    pub max_queued_messages: usize,
    /// Inputs drained per iteration at most, so a flood cannot delay ticks indefinitely.
    pub max_inputs_per_iteration: usize,
    /// Every this many ticks the driver compacts each replica's log as `log_compaction`
    /// allows (never past what the state machine has made durable); 0 never.
    pub compact_every_ticks: u64,
    /// How much log to keep when compacting.
    pub log_compaction: LogCompactionPolicy,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(100),
            read_mode: ReadMode::ReadIndex,
            leader_ready_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(3),
            transfer_timeout: Duration::from_secs(3),
            max_waiting_requests: 100_000,
            max_queued_messages: 100_000,
            max_inputs_per_iteration: 16_384,
            compact_every_ticks: 50,
            log_compaction: LogCompactionPolicy::default(),
        }
    }
}

impl DriverConfig {
    /// The longest lease [`ReadMode::Lease`] may use with these ticks:
    /// `(election_tick - 1) * tick` (see [`ReadMode::Lease`]).
    pub fn max_lease(&self, peer: &PeerConfig) -> Duration {
        let election = peer.election_tick.max(1) as u32;
        self.tick.saturating_mul(election - 1)
    }

    /// A lease at 80% of [`DriverConfig::max_lease`]: tolerates clock rates 20% apart.
    pub fn recommended_lease(&self, peer: &PeerConfig) -> Duration {
        self.max_lease(peer).mul_f64(0.8)
    }

    fn validate(&self, peer: &PeerConfig) -> Result<()> {
        if self.tick.is_zero() {
            return Err(RaftStoreError::Invalid("raft tick must be positive".into()));
        }
        if let ReadMode::Lease(lease) = self.read_mode {
            let max = self.max_lease(peer);
            if lease.is_zero() || lease > max {
                return Err(RaftStoreError::Invalid(format!(
                    "read lease {lease:?} must be positive and at most (election_tick - 1) * tick = {max:?}"
                )));
            }
        }
        Ok(())
    }
}

/// The role of a replica in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking for pre-votes (no term change yet).
    PreCandidate,
    /// Asking for votes.
    Candidate,
    /// Leads the group.
    Leader,
}

impl From<StateRole> for Role {
    fn from(r: StateRole) -> Self {
        match r {
            StateRole::Follower => Role::Follower,
            StateRole::PreCandidate => Role::PreCandidate,
            StateRole::Candidate => Role::Candidate,
            StateRole::Leader => Role::Leader,
        }
    }
}

/// How far a leader knows another replica to have the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerProgress {
    /// The replica.
    pub peer: PeerId,
    /// The highest index known to be in its log (lag = leader's last index - matched).
    pub matched: u64,
    /// The leader heard from it within the last election timeout (raft-rs's
    /// `recent_active`, reset every election timeout under `check_quorum`).
    pub recent_active: bool,
}

/// Who leads a replica's group and in which term, as last published by the driver loop (a
/// part of [`ReplicaStatus`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderView {
    /// The replica's role.
    pub role: Role,
    /// Its current term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<PeerId>,
    /// Leader that has applied its term's first entry.
    pub leader_ready: bool,
    /// The shard's epoch as this replica knows it.
    pub epoch: ShardEpoch,
}

/// A replica's state as last published by the driver loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// The shard.
    pub shard: ShardId,
    /// This replica.
    pub peer: PeerId,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<PeerId>,
    /// Leader that has applied its term's first entry (see [`Peer::is_leader_ready`]).
    pub leader_ready: bool,
    /// Highest index known committed.
    pub commit: u64,
    /// Index applied through.
    pub applied: u64,
    /// First index still in the log.
    pub first_index: u64,
    /// Last index in the log.
    pub last_index: u64,
    /// The shard's epoch as this replica knows it.
    pub epoch: ShardEpoch,
    /// Voters of the current configuration.
    pub voters: Vec<PeerId>,
    /// Learners of the current configuration.
    pub learners: Vec<PeerId>,
    /// On a leader, every other replica's progress; empty elsewhere.
    pub progress: Vec<PeerProgress>,
    /// The replica was retired ([`RaftHandle::retire`]): removed from its group, it takes
    /// no part any more.
    pub retired: bool,
    /// A leader's heartbeat showed that this replica lost entries it had acknowledged
    /// ([`Peer::lost_log`]).
    pub lost_log: bool,
}

impl ReplicaStatus {
    /// The status of `peer` now.
    pub fn of(peer: &Peer) -> Self {
        let meta = peer.meta();
        let cs = peer.conf_state();
        let progress = if peer.is_leader() {
            let mut p: Vec<PeerProgress> = peer
                .raw()
                .raft
                .prs()
                .iter()
                .filter(|(id, _)| **id != meta.peer.0)
                .map(|(id, pr)| PeerProgress {
                    peer: PeerId(*id),
                    matched: pr.matched,
                    recent_active: pr.recent_active,
                })
                .collect();
            p.sort_unstable_by_key(|p| p.peer);
            p
        } else {
            Vec::new()
        };
        Self {
            shard: meta.shard,
            peer: meta.peer,
            role: peer.role().into(),
            term: peer.term(),
            leader: peer.leader(),
            leader_ready: peer.is_leader_ready(),
            commit: peer.commit_index(),
            applied: peer.applied_index(),
            first_index: peer.first_index(),
            last_index: peer.last_index(),
            epoch: meta.epoch,
            voters: cs.voters.iter().copied().map(PeerId).collect(),
            learners: cs.learners.iter().copied().map(PeerId).collect(),
            progress,
            retired: peer.is_retired(),
            lost_log: peer.lost_log(),
        }
    }
}

/// Counters of the driver loop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Loop iterations.
    pub iterations: u64,
    /// Ticks given to raft-rs.
    pub ticks: u64,
    /// Inbound Raft messages stepped.
    pub messages_stepped: u64,
    /// Inbound messages raft-rs or the store refused (unknown shard, wrong replica...).
    pub step_errors: u64,
    /// Inbound messages dropped because too many were queued.
    pub messages_dropped: u64,
    /// Proposals (and conf changes) handed to raft-rs.
    pub proposals: u64,
    /// Readies (log writes) that carried at least one new proposal.
    pub proposal_readies: u64,
    /// The most proposals one ready carried.
    pub max_proposals_per_ready: u64,
    /// Ready-loop iterations that had work (`LoopStats::iterations`).
    pub readies: u64,
    /// Log writes issued.
    pub log_writes: u64,
    /// Of those, fsynced.
    pub log_syncs: u64,
    /// Reads answered.
    pub reads: u64,
    /// ReadIndex rounds started (each serves every read queued for its shard).
    pub read_rounds: u64,
    /// Reads answered from the lease, without a round.
    pub lease_reads: u64,
    /// Proposals handed to raft-rs whose outcome is still awaited.
    pub waiting_proposals: u64,
    /// Reads waiting (for readiness, confirmation or apply).
    pub waiting_reads: u64,
}

/// A reply channel to one caller.
type Reply<T> = oneshot::Sender<Result<T>>;

/// What the handle sends the driver thread.
enum Input {
    Step(RaftMessage),
    Propose {
        shard: ShardId,
        data: Vec<u8>,
        reply: Reply<u64>,
    },
    ConfChange {
        shard: ShardId,
        cc: ConfChangeV2,
        reply: Reply<u64>,
    },
    Read {
        shard: ShardId,
        reply: Reply<u64>,
    },
    Transfer {
        shard: ShardId,
        to: PeerId,
        reply: Reply<()>,
    },
    Compact {
        shard: ShardId,
        first_kept: u64,
        reply: Reply<()>,
    },
    Unreachable {
        shard: ShardId,
        peer: PeerId,
    },
    SnapshotStatus {
        shard: ShardId,
        peer: PeerId,
        delivered: bool,
    },
    Retire {
        shard: ShardId,
        reply: Reply<()>,
    },
    Shutdown,
}

/// State shared by the handles and the driver thread.
#[derive(Debug, Default)]
struct Shared {
    status: RwLock<BTreeMap<ShardId, ReplicaStatus>>,
    stats: Mutex<DriverStats>,
    /// Why the driver stopped, once it has.
    stopped: Mutex<Option<String>>,
    /// Inbound Raft messages in the channel.
    queued_messages: AtomicUsize,
    /// Requests whose callers are waiting.
    waiting: AtomicUsize,
    messages_dropped: AtomicUsize,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Shared {
    fn stop_reason(&self) -> String {
        self.stopped
            .lock()
            .clone()
            .unwrap_or_else(|| "the driver thread exited".into())
    }
}

/// The driver before its thread starts: hand out [`RaftHandle`]s (the transport needs one
/// to report to), then [`RaftDriver::start`] it with the store.
#[derive(Debug)]
pub struct RaftDriver {
    handle: RaftHandle,
    rx: mpsc::Receiver<Input>,
    cfg: DriverConfig,
}

impl RaftDriver {
    /// A driver with `cfg`; inputs sent through its handles before it starts wait for it.
    pub fn new(cfg: DriverConfig) -> Self {
        let (tx, rx) = mpsc::channel();
        let handle = RaftHandle {
            tx,
            shared: Arc::new(Shared::default()),
            max_waiting: cfg.max_waiting_requests,
            max_queued_messages: cfg.max_queued_messages,
        };
        Self { handle, rx, cfg }
    }

    /// A handle on this driver.
    pub fn handle(&self) -> RaftHandle {
        self.handle.clone()
    }

    /// Starts the driver thread, which takes `store` (with its replicas open).
    pub fn start<T: Transport + Send + 'static>(self, store: RaftStore<T>) -> Result<RaftHandle> {
        self.cfg.validate(store.peer_config())?;
        let shared = Arc::clone(&self.handle.shared);
        let driver = run::Driver::new(store, self.cfg, self.rx, Arc::clone(&shared));
        let thread = std::thread::Builder::new()
            .name("raft-driver".into())
            .spawn(move || driver.run())?;
        *shared.thread.lock() = Some(thread);
        Ok(self.handle)
    }
}

/// The node's way into its raftstore: clonable, `Send + Sync`, usable from any thread or
/// task. Every async method resolves when the driver has an answer; dropping its future is
/// allowed at any point (the driver forgets the caller).
#[derive(Debug, Clone)]
pub struct RaftHandle {
    tx: mpsc::Sender<Input>,
    shared: Arc<Shared>,
    max_waiting: usize,
    max_queued_messages: usize,
}

/// Counts a waiting caller for as long as its future lives.
struct Admission(Arc<Shared>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl RaftHandle {
    fn stopped(&self) -> Option<RaftStoreError> {
        self.shared
            .stopped
            .lock()
            .clone()
            .map(RaftStoreError::Stopped)
    }

    /// Sends a request and waits for its reply.
    async fn request<R>(&self, make: impl FnOnce(Reply<R>) -> Input) -> Result<R> {
        if let Some(e) = self.stopped() {
            return Err(e);
        }
        if self.shared.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(RaftStoreError::Busy(format!(
                "{} requests waiting (max_waiting_requests)",
                self.max_waiting
            )));
        }
        let _admission = Admission(Arc::clone(&self.shared));
        let (reply, answer) = oneshot::channel();
        if self.tx.send(make(reply)).is_err() {
            return Err(RaftStoreError::Stopped(self.shared.stop_reason()));
        }
        match answer.await {
            Ok(result) => result,
            Err(_) => Err(RaftStoreError::Stopped(self.shared.stop_reason())),
        }
    }

    /// Proposes `data` (an opaque command) to `shard`; `Ok(index)` once the entry is applied
    /// on this replica. `NotLeader { leader }` on a replica that does not lead, or when a new
    /// leader replaced the entry (it was not applied): retryable at the hint. Waits on a
    /// leader that is not ready yet (see the module comment).
    pub async fn propose(&self, shard: ShardId, data: Vec<u8>) -> Result<u64> {
        self.request(|reply| Input::Propose { shard, data, reply })
            .await
    }

    /// Confirms this replica leads `shard` and returns a read index: every write
    /// acknowledged before this call is at or below it, and this replica has applied through
    /// it when this resolves, so its state machine can be read. `NotLeader` on a follower;
    /// `Timeout` (retryable) when no quorum confirmed in time.
    pub async fn read_index(&self, shard: ShardId) -> Result<u64> {
        self.request(|reply| Input::Read { shard, reply }).await
    }

    /// Proposes a membership change; `Ok(index)` once applied here. A change raft-rs refuses
    /// resolves `Invalid`.
    pub async fn propose_conf_change(&self, shard: ShardId, cc: ConfChangeV2) -> Result<u64> {
        self.request(|reply| Input::ConfChange { shard, cc, reply })
            .await
    }

    /// Hands leadership of `shard` to `to`; resolves once this replica sees `to` lead, or
    /// `Timeout` when the transfer did not happen in time (raft-rs gives up after an
    /// election timeout, for example when `to` is too far behind).
    pub async fn transfer_leader(&self, shard: ShardId, to: PeerId) -> Result<()> {
        self.request(|reply| Input::Transfer { shard, to, reply })
            .await
    }

    /// Drops `shard`'s log entries before `first_kept` (after installing a snapshot of the
    /// state machine for followers that need them).
    pub async fn compact_log(&self, shard: ShardId, first_kept: u64) -> Result<()> {
        self.request(|reply| Input::Compact {
            shard,
            first_kept,
            reply,
        })
        .await
    }

    /// Delivers a Raft message received from another node. Never blocks; when too many wait
    /// already it is dropped (Raft resends) and counted, except snapshots, which are never
    /// dropped here.
    pub fn step(&self, msg: RaftMessage) {
        let is_snapshot = msg.msg.get_msg_type() == MessageType::MsgSnapshot;
        let queued = self.shared.queued_messages.fetch_add(1, Ordering::AcqRel);
        if queued >= self.max_queued_messages && !is_snapshot {
            self.shared.queued_messages.fetch_sub(1, Ordering::AcqRel);
            self.shared.messages_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.tx.send(Input::Step(msg)).is_err() {
            self.shared.queued_messages.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Transport report: the last message to `peer` of `shard` could not be delivered.
    pub fn report_unreachable(&self, shard: ShardId, peer: PeerId) {
        let _ = self.tx.send(Input::Unreachable { shard, peer });
    }

    /// Transport report: how sending a snapshot to `peer` of `shard` ended.
    pub fn report_snapshot(&self, shard: ShardId, peer: PeerId, delivered: bool) {
        let _ = self.tx.send(Input::SnapshotStatus {
            shard,
            peer,
            delivered,
        });
    }

    /// Retires `shard`'s replica (see [`Peer::retire`]): its node was removed from the
    /// group. Resolves once the driver has done it.
    pub async fn retire(&self, shard: ShardId) -> Result<()> {
        self.request(|reply| Input::Retire { shard, reply }).await
    }

    /// `shard`'s replica as the loop last published it; None if it is not hosted here or
    /// the driver stopped.
    pub fn status(&self, shard: ShardId) -> Option<ReplicaStatus> {
        self.shared.status.read().get(&shard).cloned()
    }

    /// [`status`](Self::status) without its member lists and progress: what the write path
    /// reads on every command, with no allocation.
    pub fn leader_view(&self, shard: ShardId) -> Option<LeaderView> {
        self.shared.status.read().get(&shard).map(|s| LeaderView {
            role: s.role,
            term: s.term,
            leader: s.leader,
            leader_ready: s.leader_ready,
            epoch: s.epoch,
        })
    }

    /// Every hosted replica's last published status.
    pub fn statuses(&self) -> Vec<ReplicaStatus> {
        self.shared.status.read().values().cloned().collect()
    }

    /// The loop's counters as last published.
    pub fn stats(&self) -> DriverStats {
        let mut s = *self.shared.stats.lock();
        s.messages_dropped += self.shared.messages_dropped.load(Ordering::Relaxed) as u64;
        s
    }

    /// Why the driver stopped, if it has.
    pub fn stop_reason(&self) -> Option<String> {
        self.shared.stopped.lock().clone()
    }

    /// Stops the driver thread and waits for it (one loop iteration at most); every waiting
    /// caller gets `Stopped`. Idempotent. Blocks the calling thread: from async code, call
    /// it where blocking briefly is acceptable (or in `spawn_blocking`).
    pub fn shutdown(&self) -> Result<()> {
        let _ = self.tx.send(Input::Shutdown);
        let thread = self.shared.thread.lock().take();
        if let Some(t) = thread {
            if t.join().is_err() {
                return Err(RaftStoreError::Stopped("the driver thread panicked".into()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::apply::{RaftMessage, Transport};
    use super::super::log_store::LogStore;
    use super::*;

    #[derive(Debug)]
    struct Nowhere;

    impl Transport for Nowhere {
        fn send(&mut self, _msg: RaftMessage) {}
    }

    #[tokio::test]
    async fn waiting_callers_are_bounded_and_answered_when_the_driver_goes_away() {
        let driver = RaftDriver::new(DriverConfig {
            max_waiting_requests: 2,
            ..DriverConfig::default()
        });
        let raft = driver.handle();
        // Never started: two callers wait, the third is refused at once.
        let a = tokio::spawn({
            let raft = raft.clone();
            async move { raft.read_index(ShardId(1)).await }
        });
        let b = tokio::spawn({
            let raft = raft.clone();
            async move { raft.propose(ShardId(1), b"x".to_vec()).await }
        });
        while raft.shared.waiting.load(Ordering::Acquire) < 2 {
            tokio::task::yield_now().await;
        }
        let third = raft.propose(ShardId(1), b"y".to_vec()).await;
        assert!(matches!(third, Err(RaftStoreError::Busy(_))), "{third:?}");
        assert!(third.unwrap_err().is_retryable());
        // The driver is dropped without starting: the waiting callers hear of it.
        drop(driver);
        for task in [a, b] {
            let r = task.await.unwrap();
            assert!(matches!(r, Err(RaftStoreError::Stopped(_))), "{r:?}");
        }
        assert_eq!(raft.shared.waiting.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_lease_longer_than_the_election_bound_is_refused() {
        let peer = PeerConfig::default();
        let cfg = DriverConfig::default();
        assert_eq!(cfg.max_lease(&peer), Duration::from_millis(900));
        assert_eq!(cfg.recommended_lease(&peer), Duration::from_millis(720));
        let dir = tempfile::tempdir().unwrap();
        let store = RaftStore::new(LogStore::open(dir.path()).unwrap(), Nowhere, peer);
        let too_long = DriverConfig {
            read_mode: ReadMode::Lease(Duration::from_millis(901)),
            ..DriverConfig::default()
        };
        let err = RaftDriver::new(too_long).start(store).unwrap_err();
        assert!(matches!(err, RaftStoreError::Invalid(_)), "{err}");
    }
}
