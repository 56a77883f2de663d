//! A shard replica: a raft-rs `RawNode` over its [`PeerStorage`], the state machine it applies
//! to, and the proposals waiting for their outcome.
//!
//! The ready handling is split in two around the shared log write so that the
//! [`RaftStore`](super::RaftStore) can batch every replica's changes into one fsync:
//! `Peer::collect_ready` sends what may go out before persistence, applies committed entries
//! and stages log changes; `Peer::finish_ready` runs once the batch is durable.
//!
//! A proposal is remembered by the index and term its entry got. When an entry at that index
//! is applied, the proposal succeeded if the terms match and the state machine did not refuse
//! the entry (a refusal, such as a stale epoch, is reported as the proposal's error);
//! otherwise a new leader replaced it, and the caller gets a retryable `NotLeader`. Nothing is
//! reported before apply.
//!
//! Snapshots are built on demand: when raft-rs asks [`PeerStorage`] for one it gets
//! `SnapshotTemporarilyUnavailable` and the request is recorded; after the ready the store
//! calls `Peer::build_requested_snapshot`, which asks the state machine for its state at the
//! applied index and installs it for raft-rs's next call, which takes it (dropping it).
//!
//! A state machine that opens behind the log's first entry (reset after an interrupted
//! restore, or an in-memory one after a crash) cannot be replayed: the replica then *awaits a
//! snapshot*. It applies nothing to the state machine, refuses proposals, asks the leader for
//! a snapshot (raft-rs's `request_snapshot`) until one is restored, and hands leadership away
//! if it wins an election.
//!
//! A replica whose node was removed from its group is *retired* ([`Peer::retire`]): it no
//! longer ticks, steps or sends anything, and takes no proposal. One that refuses a heartbeat
//! because it lost acknowledged entries remembers it ([`Peer::lost_log`]) so that its node
//! can ask to be added again as a new member.
//!
//! A new leader is *ready* ([`Peer::is_leader_ready`]) once it has applied the first entry of
//! its own term (the empty entry raft-rs appends on election): only then does its state
//! machine hold every write an earlier leader acknowledged, and only then does raft-rs answer
//! ReadIndex requests. The read states raft-rs returns in a ready are kept for the driver
//! ([`Peer::take_read_states`]).

use std::collections::VecDeque;

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState,
    Entry, EntryType, HardState, Message, MessageType, Snapshot,
};
use raft::{RawNode, ReadState, SnapshotStatus, StateRole, Storage as _, INVALID_INDEX};

use super::apply::{Apply, ProposalResult, RaftMessage, Transport};
use super::compaction::LogView;
use super::error::{RaftStoreError, Result};
use super::log_store::{LogStore, LogWriteBatch};
use super::storage::{PeerStorage, Staged};
use super::types::{PeerId, ProposalId, ReplicaMeta, ShardId};

/// Raft timing and flow control for every replica of a store.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Ticks between heartbeats.
    pub heartbeat_tick: usize,
    /// Ticks without a leader before an election; the randomized timeout is drawn from
    /// `[min_election_tick, max_election_tick)` (raft-rs's defaults when 0).
    pub election_tick: usize,
    /// Lower bound of the randomized election timeout (0: `election_tick`).
    pub min_election_tick: usize,
    /// Upper bound, exclusive (0: `2 * election_tick`).
    pub max_election_tick: usize,
    /// Largest append message, in bytes.
    pub max_size_per_msg: u64,
    /// Appends in flight to one follower.
    pub max_inflight_msgs: usize,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            heartbeat_tick: 2,
            election_tick: 10,
            min_election_tick: 0,
            max_election_tick: 0,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    id: ProposalId,
    index: u64,
    term: u64,
}

/// A ready taken from a replica whose log changes wait in the shared batch.
#[derive(Debug)]
pub(crate) struct InFlight {
    /// None when only the apply state is being stored.
    ready: Option<raft::Ready>,
    staged: Staged,
    apply_state: Option<(ConfState, u64, HardState)>,
    /// The batch must be fsynced before this ready's persisted messages leave.
    pub(crate) must_sync: bool,
}

/// One replica of one shard.
pub struct Peer {
    raw: RawNode<PeerStorage>,
    apply: Box<dyn Apply>,
    pending: VecDeque<Pending>,
    outcomes: Vec<ProposalResult>,
    /// Index through which entries were handed to raft-rs's apply bookkeeping.
    applied: u64,
    /// The apply state (conf state, applied, commit) changed since it was last staged.
    apply_dirty: bool,
    meta: ReplicaMeta,
    /// The state machine is behind the log's first entry and waits for a snapshot.
    awaiting_snapshot: bool,
    /// Why the last snapshot requested of this replica could not be built.
    snapshot_error: Option<RaftStoreError>,
    /// (term, index) of the first entry this replica appended as leader of `term`.
    term_start: Option<(u64, u64)>,
    /// ReadIndex answers taken from readies, for the driver.
    read_states: Vec<ReadState>,
    /// The replica was removed from its group and stopped taking part (see
    /// [`Peer::retire`]).
    retired: bool,
    /// A leader's heartbeat said more is committed here than this log holds (see
    /// [`Peer::step`]): the replica lost entries it had acknowledged.
    lost_log: bool,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("meta", &self.meta)
            .field("role", &self.raw.raft.state)
            .field("term", &self.raw.raft.term)
            .field("applied", &self.applied)
            .field("awaiting_snapshot", &self.awaiting_snapshot)
            .finish()
    }
}

fn raft_config(cfg: &PeerConfig, id: PeerId, applied: u64) -> raft::Config {
    raft::Config {
        id: id.0,
        heartbeat_tick: cfg.heartbeat_tick,
        election_tick: cfg.election_tick,
        min_election_tick: cfg.min_election_tick,
        max_election_tick: cfg.max_election_tick,
        applied,
        max_size_per_msg: cfg.max_size_per_msg,
        max_inflight_msgs: cfg.max_inflight_msgs,
        check_quorum: true,
        pre_vote: true,
        ..Default::default()
    }
}

impl Peer {
    /// Writes the first replicas of a new shard: every initial member writes the same log
    /// (one `AddNode` conf change per voter at term 1, committed), as etcd bootstraps, so a
    /// replica added later can learn the initial membership by replaying the log.
    pub fn bootstrap(store: &LogStore, meta: &ReplicaMeta, voters: &[PeerId]) -> Result<()> {
        if store.replica(meta.shard)?.is_some() {
            return Err(RaftStoreError::ShardExists(meta.shard));
        }
        let mut voters: Vec<u64> = voters.iter().map(|p| p.0).collect();
        voters.sort_unstable();
        voters.dedup();
        if voters.is_empty() || voters.contains(&0) {
            return Err(RaftStoreError::Invalid(format!(
                "{}: bootstrap needs non-zero voter ids",
                meta.shard
            )));
        }
        let mut entries = Vec::with_capacity(voters.len());
        for (i, v) in voters.iter().enumerate() {
            let mut cc = ConfChange::default();
            cc.set_change_type(ConfChangeType::AddNode);
            cc.node_id = *v;
            let mut e = Entry::default();
            e.set_entry_type(EntryType::EntryConfChange);
            e.term = 1;
            e.index = i as u64 + 1;
            e.data = cc.write_to_bytes()?.into();
            entries.push(e);
        }
        let cs = ConfState {
            voters,
            ..Default::default()
        };
        let hs = HardState {
            term: 1,
            commit: entries.len() as u64,
            ..Default::default()
        };
        let mut batch = LogWriteBatch::new();
        PeerStorage::bootstrap(&mut batch, meta, &cs, &entries, &hs)?;
        store.write(&mut batch, true)?;
        Ok(())
    }

    /// Records a replica that will join an existing shard (as a learner): it starts empty and
    /// learns the log, membership included, from the leader.
    pub fn create_joining(store: &LogStore, meta: &ReplicaMeta) -> Result<()> {
        if store.replica(meta.shard)?.is_some() {
            return Err(RaftStoreError::ShardExists(meta.shard));
        }
        let mut batch = LogWriteBatch::new();
        batch.put_replica(meta)?;
        store.write(&mut batch, true)?;
        Ok(())
    }

    /// Opens a replica recorded in `store` (at creation or after a restart).
    pub fn open(
        store: LogStore,
        shard: ShardId,
        apply: Box<dyn Apply>,
        cfg: &PeerConfig,
        logger: &slog::Logger,
    ) -> Result<Self> {
        let storage = PeerStorage::open(store, shard)?;
        let meta = storage.meta();
        if meta.peer.0 == 0 {
            return Err(RaftStoreError::Corruption(format!("{shard}: peer id 0")));
        }
        // raft-rs resumes at the apply index the stored conf state is current at; entries the
        // state machine already has are re-applied to raft-rs's membership only.
        let applied = storage.persisted_applied();
        let mut apply = apply;
        let awaiting_snapshot = replay_to_state_machine(&storage, apply.as_mut(), applied)?;
        let logger = logger.new(slog::o!("shard" => shard.0, "peer" => meta.peer.0));
        let raw = RawNode::new(&raft_config(cfg, meta.peer, applied), storage, &logger)?;
        Ok(Self {
            raw,
            apply,
            pending: VecDeque::new(),
            outcomes: Vec::new(),
            applied,
            apply_dirty: false,
            meta,
            awaiting_snapshot,
            snapshot_error: None,
            term_start: None,
            read_states: Vec::new(),
            retired: false,
            lost_log: false,
        })
    }

    /// True while the state machine waits for a snapshot (see the module comment).
    pub fn is_awaiting_snapshot(&self) -> bool {
        self.awaiting_snapshot
    }

    /// Why the last snapshot raft-rs asked this replica for could not be built (cleared when
    /// one is).
    pub fn last_snapshot_error(&self) -> Option<&RaftStoreError> {
        self.snapshot_error.as_ref()
    }

    /// The state machine's durable applied index (see [`Apply::durable_applied_index`]).
    pub fn durable_applied_index(&self) -> u64 {
        self.apply.durable_applied_index()
    }

    /// Who this replica is (its epoch follows applied membership changes).
    pub fn meta(&self) -> ReplicaMeta {
        self.meta
    }

    /// This replica's id.
    pub fn id(&self) -> PeerId {
        self.meta.peer
    }

    /// True while this replica leads its shard.
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The role raft-rs is in.
    pub fn role(&self) -> StateRole {
        self.raw.raft.state
    }

    /// The leader this replica knows of.
    pub fn leader(&self) -> Option<PeerId> {
        match self.raw.raft.leader_id {
            0 => None,
            id => Some(PeerId(id)),
        }
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// The highest index known committed.
    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// The index applied through.
    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// The last index in the log.
    pub fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }

    /// The first index still in the log (entries before it were compacted).
    pub fn first_index(&self) -> u64 {
        self.raw.store().truncated_index() + 1
    }

    /// True when this replica leads and has applied the first entry of its own term: its
    /// state machine then reflects every write acknowledged by earlier leaders, and raft-rs
    /// serves ReadIndex. A leader that is not ready should neither serve reads nor check
    /// state on behalf of a proposal.
    pub fn is_leader_ready(&self) -> bool {
        self.is_leader()
            && self
                .term_start
                .is_some_and(|(term, index)| term == self.term() && self.applied >= index)
    }

    /// Asks raft-rs to confirm leadership for a read; the answer, carrying `ctx` and the read
    /// index, comes back through [`Peer::take_read_states`] after a later ready. raft-rs drops
    /// the request silently on a leader that is not ready, so callers check that first.
    pub fn read_index(&mut self, ctx: Vec<u8>) {
        self.raw.read_index(ctx);
    }

    /// ReadIndex answers received since the last call.
    pub fn take_read_states(&mut self) -> Vec<ReadState> {
        std::mem::take(&mut self.read_states)
    }

    /// Tells raft-rs the last message to `peer` could not be delivered (it stops pipelining
    /// appends to it and probes instead).
    pub fn report_unreachable(&mut self, peer: PeerId) {
        self.raw.report_unreachable(peer.0);
    }

    /// The current membership.
    pub fn conf_state(&self) -> ConfState {
        self.raw.raft.prs().conf().to_conf_state()
    }

    /// Direct access for callers that need raft-rs details (status pages, tests).
    pub fn raw(&self) -> &RawNode<PeerStorage> {
        &self.raw
    }

    fn not_leader(&self) -> RaftStoreError {
        RaftStoreError::NotLeader {
            shard: self.meta.shard,
            leader: self.leader(),
        }
    }

    /// A replica awaiting a snapshot serves nothing, even while it (briefly) leads: retry
    /// elsewhere, no hint.
    fn awaiting_not_leader(&self) -> RaftStoreError {
        RaftStoreError::NotLeader {
            shard: self.meta.shard,
            leader: None,
        }
    }

    /// Stops this replica taking part in its group, for good: it no longer ticks (so it
    /// never campaigns nor, were it to lead, sends heartbeats), refuses every message and
    /// sends none, and takes no proposal. For a replica whose node was removed from the
    /// group: raft-rs already stops a replica that applied its own removal from
    /// campaigning, but one that missed the commit of its removal (or restarted with a log
    /// that ends before it) would go on asking for (pre-)votes.
    pub fn retire(&mut self) {
        if !self.retired {
            tracing::info!(
                shard = self.meta.shard.0,
                peer = self.meta.peer.0,
                "replica retired: it was removed from its group"
            );
        }
        self.retired = true;
    }

    /// True once a leader's heartbeat showed that this replica lost acknowledged entries
    /// (it stays true for the life of the process).
    pub fn lost_log(&self) -> bool {
        self.lost_log
    }

    /// True once [`Peer::retire`] was called.
    pub fn is_retired(&self) -> bool {
        self.retired
    }

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        if self.retired {
            return;
        }
        self.raw.tick();
        if self.awaiting_snapshot {
            self.chase_snapshot();
        }
    }

    /// While awaiting a snapshot: leads nothing (hands leadership to the most caught-up
    /// other voter) and keeps asking the leader for a snapshot. raft-rs drops a request it
    /// cannot send yet (no leader known, or no entry of the current term in the log); the
    /// next tick asks again.
    fn chase_snapshot(&mut self) {
        if self.is_leader() {
            if self.raw.raft.lead_transferee.is_some() {
                return;
            }
            let me = self.meta.peer.0;
            let voters = self.conf_state().voters;
            let target = self
                .raw
                .raft
                .prs()
                .iter()
                .filter(|(id, _)| **id != me && voters.contains(id))
                .max_by_key(|(id, pr)| (pr.matched, **id))
                .map(|(id, _)| *id);
            if let Some(to) = target {
                self.raw.transfer_leader(to);
            }
        } else if self.raw.raft.pending_request_snapshot == INVALID_INDEX && self.leader().is_some()
        {
            let _ = self.raw.request_snapshot();
        }
    }

    /// Starts an election now (tests, and leadership placement).
    pub fn campaign(&mut self) -> Result<()> {
        Ok(self.raw.campaign()?)
    }

    /// Feeds a message from another replica.
    ///
    /// A heartbeat that says entries beyond this replica's log are committed *here* means
    /// the replica lost log it had acknowledged (its data directory was wiped or replaced
    /// while it kept its id): raft-rs would panic on it. The message is refused instead,
    /// with an error saying the replica must leave the group and join again as a new member;
    /// until then it takes no part (it cannot vote a log it lost back in).
    pub fn step(&mut self, msg: Message) -> Result<()> {
        if self.retired {
            return Err(RaftStoreError::Invalid(format!(
                "{} {}: this replica was removed from its group",
                self.meta.shard, self.meta.peer
            )));
        }
        if msg.get_msg_type() == MessageType::MsgHeartbeat
            && msg.term >= self.term()
            && msg.commit > self.last_index()
        {
            self.lost_log = true;
            return Err(RaftStoreError::Corruption(format!(
                "{} {}: the leader says index {} is committed here, but this replica's log \
                 ends at {}: it lost acknowledged entries (wiped data under the same id?); \
                 remove it from the group and add it back as a new member",
                self.meta.shard,
                self.meta.peer,
                msg.commit,
                self.last_index()
            )));
        }
        Ok(self.raw.step(msg)?)
    }

    /// Tells raft-rs how sending a snapshot to `to` ended. raft-rs holds back everything
    /// else for that follower until it hears: the transport reports `Finish` once the
    /// snapshot reached the follower's node, `Failure` if it could not be delivered (raft-rs
    /// then probes again, and a new snapshot is built on demand).
    pub fn report_snapshot(&mut self, to: PeerId, status: SnapshotStatus) {
        self.raw.report_snapshot(to.0, status);
    }

    /// Proposes a command; its outcome arrives through the store's outcomes once applied.
    pub fn propose(&mut self, id: ProposalId, data: Vec<u8>) -> Result<()> {
        if self.awaiting_snapshot || self.retired {
            return Err(self.awaiting_not_leader());
        }
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let index = self.last_index() + 1;
        self.raw.propose(Vec::new(), data).map_err(|e| match e {
            raft::Error::ProposalDropped => self.not_leader(),
            e => RaftStoreError::Raft(e),
        })?;
        self.track(id, index)
    }

    /// Proposes a membership change (joint consensus when it changes more than one voter).
    pub fn propose_conf_change(&mut self, id: ProposalId, cc: ConfChangeV2) -> Result<()> {
        if self.awaiting_snapshot || self.retired {
            return Err(self.awaiting_not_leader());
        }
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let index = self.last_index() + 1;
        self.raw
            .propose_conf_change(Vec::new(), cc)
            .map_err(|e| match e {
                raft::Error::ProposalDropped => self.not_leader(),
                e => RaftStoreError::Raft(e),
            })?;
        self.track(id, index)
    }

    fn track(&mut self, id: ProposalId, index: u64) -> Result<()> {
        if self.last_index() < index {
            return Err(self.not_leader());
        }
        self.pending.push_back(Pending {
            id,
            index,
            term: self.term(),
        });
        Ok(())
    }

    /// Adds `peer` as a learner (it receives the log but does not vote).
    pub fn add_learner(&mut self, id: ProposalId, peer: PeerId) -> Result<()> {
        self.propose_conf_change(id, single_change(ConfChangeType::AddLearnerNode, peer))
    }

    /// Makes `peer` a voter (promotes a learner, or adds a voter).
    pub fn promote(&mut self, id: ProposalId, peer: PeerId) -> Result<()> {
        self.propose_conf_change(id, single_change(ConfChangeType::AddNode, peer))
    }

    /// Removes `peer` from the group.
    pub fn remove(&mut self, id: ProposalId, peer: PeerId) -> Result<()> {
        self.propose_conf_change(id, single_change(ConfChangeType::RemoveNode, peer))
    }

    /// Asks the leader to hand leadership to `to` (once `to` has caught up).
    pub fn transfer_leader(&mut self, to: PeerId) -> Result<()> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        self.raw.transfer_leader(to.0);
        Ok(())
    }

    /// Drops log entries before `first_kept`: only entries the state machine has made
    /// durable ([`Apply::durable_applied_index`]) and whose apply state is stored can go. A
    /// follower that needs dropped entries is sent a snapshot, built when raft-rs asks.
    pub fn compact_log(&mut self, first_kept: u64) -> Result<()> {
        let durable = self.apply.durable_applied_index();
        if first_kept > durable + 1 {
            return Err(RaftStoreError::Invalid(format!(
                "{}: cannot compact to {first_kept}: the state machine made only {durable} durable",
                self.meta.shard
            )));
        }
        self.raw.mut_store().compact_to(first_kept)
    }

    /// What the log-compaction policy decides from.
    pub fn log_view(&self) -> LogView {
        let me = self.meta.peer.0;
        let slowest_follower = self
            .is_leader()
            .then(|| {
                self.raw
                    .raft
                    .prs()
                    .iter()
                    .filter(|(id, _)| **id != me)
                    .map(|(_, pr)| pr.matched)
                    .min()
            })
            .flatten();
        LogView {
            first_index: self.first_index(),
            durable_applied: self.apply.durable_applied_index(),
            stored_applied: self.raw.store().persisted_applied(),
            slowest_follower,
        }
    }

    /// Builds the snapshot raft-rs asked this replica's storage for, once the state machine
    /// can give one at an applied index at or past the request, and installs it for raft-rs's
    /// next call. Returns whether one was built. Nothing is built on a replica that no longer
    /// leads (its request and any snapshot it held are dropped as stale).
    pub(crate) fn build_requested_snapshot(&mut self) -> Result<bool> {
        let Some(request) = self.raw.store().snapshot_request() else {
            return Ok(false);
        };
        if !self.is_leader() {
            self.raw.store().clear_snapshot();
            return Ok(false);
        }
        // The data must be the state at `applied`, with the membership as of that index.
        if self.awaiting_snapshot
            || self.apply.applied_index() != self.applied
            || self.applied < request
        {
            return Ok(false);
        }
        let data = match self.apply.snapshot() {
            Ok(data) => data,
            Err(e) => {
                // raft-rs asks again on the follower's next heartbeat response.
                self.raw.store().clear_snapshot();
                return Err(e);
            }
        };
        let mut snap = Snapshot {
            data: data.into(),
            ..Default::default()
        };
        let m = snap.mut_metadata();
        m.index = self.applied;
        m.term = self.raw.store().term(self.applied)?;
        m.set_conf_state(self.conf_state());
        self.raw.store().set_snapshot(snap);
        self.snapshot_error = None;
        Ok(true)
    }

    /// Records why a requested snapshot could not be built.
    pub(crate) fn note_snapshot_error(&mut self, e: RaftStoreError) {
        tracing::warn!(shard = self.meta.shard.0, error = %e, "cannot build a snapshot");
        self.snapshot_error = Some(e);
    }

    /// Outcomes of proposals resolved so far.
    pub(crate) fn take_outcomes(&mut self, out: &mut Vec<ProposalResult>) {
        out.append(&mut self.outcomes);
    }

    /// First half of the ready handling: send the messages that may leave before persistence,
    /// apply committed entries, stage the log changes into `batch`.
    pub(crate) fn collect_ready(
        &mut self,
        batch: &mut LogWriteBatch,
        transport: &mut dyn Transport,
    ) -> Result<Option<InFlight>> {
        if !self.raw.has_ready() {
            return Ok(self.stage_apply_state(batch)?.map(|s| InFlight {
                ready: None,
                staged: Staged::default(),
                apply_state: Some(s),
                must_sync: false,
            }));
        }
        let mut rd = self.raw.ready();
        self.note_term_start(rd.entries());
        self.read_states.append(&mut rd.take_read_states());
        self.send(rd.take_messages(), transport);
        let snapshot = (!rd.snapshot().is_empty()).then(|| rd.snapshot().clone());
        if let Some(snap) = &snapshot {
            let index = snap.get_metadata().index;
            self.apply.restore(self.meta.shard, index, &snap.data)?;
            self.applied = index;
            self.apply_dirty = true;
            self.awaiting_snapshot = false;
        }
        self.apply_entries(rd.take_committed_entries())?;
        let staged = self
            .raw
            .store()
            .stage(batch, snapshot.as_ref(), rd.entries(), rd.hs())?;
        let apply_state = self.stage_apply_state(batch)?;
        let must_sync = rd.must_sync() || snapshot.is_some();
        Ok(Some(InFlight {
            ready: Some(rd),
            staged,
            apply_state,
            must_sync,
        }))
    }

    /// Second half, once the batch is durable: expose it to raft-rs, send the messages that
    /// had to wait for persistence, advance, and apply what the light ready committed.
    pub(crate) fn finish_ready(
        &mut self,
        inflight: InFlight,
        transport: &mut dyn Transport,
    ) -> Result<()> {
        let store = self.raw.mut_store();
        store.commit_staged(inflight.staged);
        if let Some((cs, applied, hs)) = inflight.apply_state {
            store.set_apply_state(cs, applied, hs);
        }
        let Some(mut ready) = inflight.ready else {
            return Ok(());
        };
        self.send(ready.take_persisted_messages(), transport);
        let mut light = self.raw.advance(ready);
        if light.commit_index().is_some() {
            self.apply_dirty = true;
        }
        self.send(light.take_messages(), transport);
        self.apply_entries(light.take_committed_entries())?;
        self.raw.advance_apply_to(self.applied);
        Ok(())
    }

    /// Remembers where this leader's term starts: the first entry of its term reaches a ready
    /// right after the election (raft-rs appends it on becoming leader).
    fn note_term_start(&mut self, entries: &[Entry]) {
        let term = self.term();
        if !self.is_leader() || self.term_start.is_some_and(|(t, _)| t == term) {
            return;
        }
        if let Some(e) = entries.iter().find(|e| e.term == term) {
            self.term_start = Some((term, e.index));
        }
    }

    fn stage_apply_state(
        &mut self,
        batch: &mut LogWriteBatch,
    ) -> Result<Option<(ConfState, u64, HardState)>> {
        if !self.apply_dirty {
            return Ok(None);
        }
        self.apply_dirty = false;
        let cs = self.conf_state();
        let hs = self.raw.raft.hard_state();
        let applied = self.applied.min(hs.commit);
        self.raw
            .store()
            .stage_apply_state(batch, &cs, applied, &hs)?;
        batch.put_replica(&self.meta)?;
        Ok(Some((cs, applied, hs)))
    }

    fn send(&self, msgs: Vec<Message>, transport: &mut dyn Transport) {
        if self.retired {
            return;
        }
        for msg in msgs {
            transport.send(RaftMessage {
                shard: self.meta.shard,
                msg,
            });
        }
    }

    /// Applies committed entries: membership changes to raft-rs, everything new to the state
    /// machine, then resolves the proposals they settle.
    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<()> {
        let Some(last) = entries.last().map(|e| e.index) else {
            return Ok(());
        };
        let sm_applied = self.apply.applied_index();
        let mut conf_errors: Vec<(u64, RaftStoreError)> = Vec::new();
        for e in &entries {
            let applied = match e.get_entry_type() {
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(&e.data)?;
                    self.raw.apply_conf_change(&cc)
                }
                EntryType::EntryConfChangeV2 => {
                    let cc = ConfChangeV2::parse_from_bytes(&e.data)?;
                    self.raw.apply_conf_change(&cc)
                }
                EntryType::EntryNormal => continue,
            };
            match applied {
                Ok(_) => self.meta.epoch.conf_ver += 1,
                Err(err) => conf_errors.push((
                    e.index,
                    RaftStoreError::Invalid(format!("conf change refused: {err}")),
                )),
            }
        }
        let fresh: Vec<Entry> = entries
            .iter()
            .filter(|e| e.index > sm_applied)
            .cloned()
            .collect();
        // A replica awaiting a snapshot keeps its state machine as it is: the snapshot will
        // cover these entries.
        let mut refused = if !fresh.is_empty() && !self.awaiting_snapshot {
            self.apply.apply(self.meta.shard, &fresh)?.rejected
        } else {
            Vec::new()
        };
        refused.append(&mut conf_errors);
        for e in &entries {
            self.resolve(e, &mut refused);
        }
        self.applied = last;
        self.apply_dirty = true;
        Ok(())
    }

    /// Reports the proposals `e` settles; `refused` holds the entries (by index) that were
    /// not applied and why.
    fn resolve(&mut self, e: &Entry, refused: &mut Vec<(u64, RaftStoreError)>) {
        while let Some(p) = self.pending.front().copied() {
            if p.index > e.index {
                break;
            }
            self.pending.pop_front();
            let result = if p.index == e.index && p.term == e.term {
                match refused.iter().position(|(i, _)| *i == e.index) {
                    Some(at) => Err(refused.swap_remove(at).1),
                    None => Ok(e.index),
                }
            } else {
                Err(self.not_leader())
            };
            self.outcomes.push(ProposalResult {
                shard: self.meta.shard,
                id: p.id,
                result,
            });
        }
    }
}

/// Brings a state machine that lost its tail (the LSM applies without a WAL) up to the
/// stored apply index by re-reading the log; raft-rs itself resumes after that index.
/// Returns true when that is impossible because the log no longer holds the entries after
/// the state machine's index: the replica must then wait for a snapshot.
fn replay_to_state_machine(storage: &PeerStorage, apply: &mut dyn Apply, to: u64) -> Result<bool> {
    let shard = storage.shard();
    let from = apply.applied_index() + 1;
    if from > to {
        return Ok(false);
    }
    if from <= storage.truncated_index() {
        tracing::warn!(
            shard = shard.0,
            state_machine = from - 1,
            log_starts_after = storage.truncated_index(),
            "the state machine is behind the log; waiting for a snapshot"
        );
        return Ok(true);
    }
    let mut next = from;
    while next <= to {
        let entries = storage
            .log_store()
            .entries(shard, next, to + 1, Some(4 << 20))?;
        let Some(last) = entries.last().map(|e| e.index) else {
            break;
        };
        // Refusals were reported when the entries were first applied.
        apply.apply(shard, &entries)?;
        next = last + 1;
    }
    Ok(false)
}

/// A membership change of one replica (`AddLearnerNode`, `AddNode` to add or promote a
/// voter, `RemoveNode`), as [`Peer::propose_conf_change`] and the driver take it.
pub fn single_change(ty: ConfChangeType, peer: PeerId) -> ConfChangeV2 {
    let mut single = ConfChangeSingle::default();
    single.set_change_type(ty);
    single.node_id = peer.0;
    let mut cc = ConfChangeV2::default();
    cc.set_transition(ConfChangeTransition::Auto);
    cc.changes = vec![single].into();
    cc
}

/// Whether a conf state includes `peer` as a voter.
pub fn is_voter(cs: &ConfState, peer: PeerId) -> bool {
    cs.voters.contains(&peer.0)
}

/// Term of `index` in a replica's storage (tests and status).
pub fn storage_term(storage: &PeerStorage, index: u64) -> Result<u64> {
    Ok(storage.term(index)?)
}
