//! Membership of the data shard through Admin calls: add, remove, hand over leadership,
//! decommission; and the join of a node started with `--join`.
//!
//! ```text
//!   Admin.AddNode / RemoveNode / TransferLeader / Decommission / DecommissionStatus
//!        │ (any node)                                  internal port
//!        ▼                                             strata.internal.v1.Membership
//!   route(): leads? ──no──► pass to the leader ──────► route(forwarded): leads? ──no──► NOT_LEADER
//!        │ yes                (follow ≤ MAX_HOPS                 │ yes                 (hint)
//!        ▼                     leader changes)                   ▼
//!   Membership::execute (one change at a time: `lock`)  ◄────────┘
//!        checks (quorum, last voter, replication factor)
//!        ConfChangeV2 { one change, context = MemberDirectory after it } ─► RaftHandle
//!        ▼ applied on every replica (KvApply): directory stored, AddressBook updated
//! ```
//!
//! A change not applied within 10 s is given up with `OUTCOME_UNKNOWN` (D128): the lock is
//! released, and the caller checks the members and calls again.
//!
//! **Add** proposes the node as a learner, waits (bounded) until the leader sees its match
//! index reach the commit index of the moment it was added, then promotes it; a call that
//! timed out leaves a learner (harmless: it does not vote) and a repeated call resumes the
//! wait. Adding a voter again with its incarnation (or none) at other addresses moves it
//! there: a change that changes no member carries the new directory (D169). **Remove** refuses to remove the last voter, or a voter whose removal would leave the
//! remaining voters without a live majority (live: the leader heard from it within the last
//! election timeout, raft-rs's `recent_active`). A change that targets the leader itself
//! first hands leadership to the most caught-up live voter and then follows it there.
//! **Decommission** is transfer (if it leads), promote a learner in its place (if the voters
//! would fall below the replication factor; refused when there is none), remove.
//!
//! **Join.** A node started with `--join` on fresh data (an empty raft log) asks its seeds,
//! in turn and with backoff until one succeeds, first for the member directory
//! (`Membership.Members`, so it can answer the leader from its first message) and then to
//! add it (`Membership.AddNode`, passed on to the leader). A node with a log ignores `--join`.
//!
//! **Wiped nodes.** A node whose data directory was recreated has a new incarnation
//! (`identity.json`). When it joins under an id that is still a voter recorded with another
//! incarnation, the leader removes the old member first, under the removal checks, then adds
//! it as a new member, so the group never counts a voter that lost its log. A voter recorded
//! without an incarnation is removed too when the leader has matched entries with it; one it
//! never matched is a first start (D126): its incarnation is recorded, and it catches up.
//!
//! **Wiped initial members** (D125, D126). An initial member on fresh data asks the other
//! initial members ([`probe_cluster`]) whether one records its id under another incarnation
//! or lists members without it; then it joins through them as above, else it bootstraps.
//! Initial members record their own incarnation ([`register`], internal `Register`: a
//! membership change that changes no member, carrying the directory) once a leader extended
//! their log; one whose heartbeat shows a lost log asks to be added again instead.
//!
//! ```text
//!   fresh initial member ─► Members of each initial peer ─► other incarnation / not listed ─► join
//!                                                         └► otherwise ─► bootstrap
//!   voter, leader known, commit > bootstrap ─► Register ─► leader: AddNode(self) + directory
//!   lost_log (heartbeat commit > last index) ─► AddNode ─► leader: remove old, add new
//! ```
//!
//! A removed node finds out through [`removed_per_peers`] when its removal's commit never
//! reached it (see `server/replica.rs`).
//!
//! Files: this one is the leader's side (routing and the changes); `service.rs` the gRPC
//! service; `joining.rs` a node's own side at start (join, probe, register, removal check).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_proto::internal::v1 as ipb;
use strata_proto::internal::v1::membership_client::MembershipClient;
use strata_proto::v1 as pb;
use strata_proto::v1::{DrainState, ErrorDetail, ErrorReason};

use tonic::{Request, Status};

use super::error::{invalid_field, status};
use super::replica::DATA_SHARD;
use super::PeerAddr;
use crate::raftstore::peer::single_change;
use crate::raftstore::transport::AddressBook;
use crate::raftstore::{
    MemberAddr, MemberDirectory, NodeId, PeerId, RaftHandle, RaftStoreError, ReplicaStatus, Role,
    ShardState,
};
use raft::eraftpb::ConfChangeType;

/// Metadata key of a call already passed on to the leader once.
pub const FORWARDED: &str = "strata-forwarded";

/// Leader changes a call follows before it gives up with `NOT_LEADER`.
const MAX_HOPS: usize = 5;

/// How long a leader re-reads its followers' liveness before it refuses a change for want
/// of a live majority (see `Membership::live_among`).
const LIVENESS_SETTLE: Duration = Duration::from_secs(2);

/// How long a call waits for a leader to be known (an election) before `NOT_LEADER`.
const LEADER_WAIT: Duration = Duration::from_secs(5);

/// How long a membership change may take to be applied before the call gives up on it.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an added learner may take to catch up, unless the request says.
const DEFAULT_CATCH_UP: Duration = Duration::from_secs(20);

/// Connecting to another node's internal port.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One call on another node (AddNode waits for the catch-up: longer).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How often waits poll the replica's status.
const POLL: Duration = Duration::from_millis(20);

/// The replication factor a Decommission keeps when the request gives none.
const DEFAULT_REPLICATION_FACTOR: usize = 3;

/// The membership calls.
#[derive(Debug, Clone)]
pub(crate) enum Call {
    Add(pb::AddNodeRequest),
    Register(pb::AddNodeRequest),
    Remove(pb::RemoveNodeRequest),
    Transfer(pb::TransferLeaderRequest),
    Decommission(pb::DecommissionRequest),
    DrainStatus(pb::DecommissionStatusRequest),
}

/// Their answers.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    Add(pb::AddNodeResponse),
    Remove(pb::RemoveNodeResponse),
    Transfer(pb::TransferLeaderResponse),
    Decommission(pb::DecommissionResponse),
    DrainStatus(pb::DecommissionStatusResponse),
}

/// The data shard's membership as this node drives it; see the module documentation.
#[derive(Debug)]
pub struct Membership {
    handle: RaftHandle,
    state: Arc<ShardState>,
    book: AddressBook,
    node_id: u64,
    own: MemberAddr,
    /// One change at a time on this node (raft-rs takes one pending change at a time).
    lock: tokio::sync::Mutex<()>,
    /// Set once the node shuts down: calls in flight on the internal port are answered.
    closing: tokio::sync::watch::Sender<bool>,
}

fn not_leader(leader: Option<u64>, message: impl Into<String>) -> Status {
    status(ErrorReason::NotLeader, message, |d| {
        d.leader_node_id = leader.unwrap_or(0)
    })
}

fn refused(message: impl Into<String>) -> Status {
    status(ErrorReason::MembershipRefused, message, |_| {})
}

fn raft_status(e: RaftStoreError) -> Status {
    match e {
        RaftStoreError::NotLeader { leader, .. } => not_leader(
            leader.map(|p| p.0),
            "this node does not lead the data shard",
        ),
        RaftStoreError::Invalid(m) => refused(m),
        e if e.is_retryable() => not_leader(None, e.to_string()),
        e => status(ErrorReason::StorageError, e.to_string(), |_| {}),
    }
}

/// The leader hint of a `NOT_LEADER` status, if it is one.
fn leader_hint(s: &Status) -> Option<Option<u64>> {
    let d = ErrorDetail::from_status(s)?;
    (d.reason_enum() == Some(ErrorReason::NotLeader))
        .then(|| Some(d.leader_node_id).filter(|id| *id != 0))
}

fn check_addr(field: &str, addr: &str, required: bool) -> Result<(), Status> {
    if addr.is_empty() && !required {
        return Ok(());
    }
    addr.parse::<PeerAddr>()
        .map(|_| ())
        .map_err(|e| invalid_field(field, e))
}

impl Membership {
    /// The membership of the replica behind `handle` and `state`; `book` is the transport's;
    /// `own` this node's addresses and incarnation.
    pub fn new(
        handle: RaftHandle,
        state: Arc<ShardState>,
        book: AddressBook,
        node_id: u64,
        own: MemberAddr,
    ) -> Self {
        Self {
            handle,
            state,
            book,
            node_id,
            own,
            lock: tokio::sync::Mutex::new(()),
            closing: tokio::sync::watch::channel(false).0,
        }
    }

    /// Answers the calls in flight on the internal port at once, and those that come
    /// later: the node shuts down (D156).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    fn status(&self) -> Result<ReplicaStatus, Status> {
        self.handle
            .status(DATA_SHARD)
            .ok_or_else(|| not_leader(None, "the data shard is not open on this node"))
    }

    /// Every member of `s`'s configuration with its addresses: from the applied directory,
    /// else (initial members not changed since) the transport's book; this node's own.
    pub fn directory_of(&self, s: &ReplicaStatus) -> MemberDirectory {
        let recorded = self.state.members();
        let mut out = BTreeMap::new();
        for p in s.voters.iter().chain(&s.learners) {
            let m = if p.0 == self.node_id {
                MemberAddr {
                    incarnation: recorded
                        .0
                        .get(&p.0)
                        .map(|m| m.incarnation.clone())
                        .unwrap_or_default(),
                    ..self.own.clone()
                }
            } else {
                recorded.0.get(&p.0).cloned().unwrap_or_else(|| MemberAddr {
                    raft: self.book.get(NodeId(p.0)).unwrap_or_default(),
                    ..MemberAddr::default()
                })
            };
            out.insert(p.0, m);
        }
        MemberDirectory(out)
    }

    /// The members for Admin.Status (and the replies): this replica's applied view.
    pub fn members(&self) -> Vec<pb::ClusterMember> {
        match self.handle.status(DATA_SHARD) {
            Some(s) => self.rows(&s, &self.directory_of(&s)),
            None => Vec::new(),
        }
    }

    fn rows(&self, s: &ReplicaStatus, dir: &MemberDirectory) -> Vec<pb::ClusterMember> {
        dir.0
            .iter()
            .map(|(id, m)| pb::ClusterMember {
                node_id: *id,
                raft_addr: m.raft.clone(),
                grpc_addr: m.grpc.clone(),
                voter: s.voters.contains(&PeerId(*id)),
                incarnation: m.incarnation.clone(),
            })
            .collect()
    }

    /// Runs `call` on the data shard's leader: here when this node leads, else passed on
    /// to the leader (unless `forwarded`: then `NOT_LEADER` with the hint).
    pub(crate) async fn route(&self, call: Call, forwarded: bool) -> Result<Reply, Status> {
        let mut last = None;
        for _ in 0..MAX_HOPS {
            let leader = self.wait_for_leader().await?;
            let result = if leader == self.node_id {
                self.execute(call.clone()).await
            } else if forwarded {
                return Err(not_leader(
                    Some(leader),
                    format!("node {} does not lead the data shard", self.node_id),
                ));
            } else {
                self.forward(leader, call.clone()).await
            };
            match result {
                Err(s) if leader_hint(&s).is_some() => {
                    last = Some(s);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| not_leader(None, "the leader kept changing")))
    }

    /// The leader's id once one is known (ready, if it is this node).
    async fn wait_for_leader(&self) -> Result<u64, Status> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let s = self.status()?;
            match (s.role, s.leader) {
                (Role::Leader, _) if s.leader_ready => return Ok(self.node_id),
                (Role::Leader, _) | (_, None) => {}
                (_, Some(l)) if l.0 != self.node_id => return Ok(l.0),
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(not_leader(
                    s.leader.map(|p| p.0),
                    "no leader of the data shard is known",
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn forward(&self, leader: u64, call: Call) -> Result<Reply, Status> {
        let Some(addr) = self.book.get(NodeId(leader)) else {
            return Err(not_leader(
                Some(leader),
                format!("the address of the leader, node {leader}, is not known here"),
            ));
        };
        let mut client = connect(&addr).await.map_err(|e| {
            not_leader(
                Some(leader),
                format!("cannot reach the leader, node {leader}, at {addr}: {e}"),
            )
        })?;
        fn req<T>(m: T) -> Request<T> {
            let mut r = Request::new(m);
            r.metadata_mut()
                .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
            r.set_timeout(CALL_TIMEOUT);
            r
        }
        Ok(match call {
            Call::Add(m) => Reply::Add(client.add_node(req(m)).await?.into_inner()),
            Call::Register(m) => Reply::Add(client.register(req(m)).await?.into_inner()),
            Call::Remove(m) => Reply::Remove(client.remove_node(req(m)).await?.into_inner()),
            Call::Transfer(m) => {
                Reply::Transfer(client.transfer_leader(req(m)).await?.into_inner())
            }
            Call::Decommission(m) => {
                Reply::Decommission(client.decommission(req(m)).await?.into_inner())
            }
            Call::DrainStatus(m) => {
                Reply::DrainStatus(client.decommission_status(req(m)).await?.into_inner())
            }
        })
    }

    /// Runs `call` here, the leader.
    async fn execute(&self, call: Call) -> Result<Reply, Status> {
        if let Call::DrainStatus(m) = call {
            let s = self.leader_status()?;
            let id = PeerId(m.node_id);
            let member = s.voters.contains(&id) || s.learners.contains(&id);
            return Ok(Reply::DrainStatus(pb::DecommissionStatusResponse {
                state: if member {
                    DrainState::Active
                } else {
                    DrainState::Drained
                } as i32,
                voter: s.voters.contains(&id),
                leader: s.leader == Some(id),
            }));
        }
        let _one_at_a_time = self.lock.lock().await;
        match call {
            Call::Add(m) => self.add(m).await.map(Reply::Add),
            Call::Register(m) => self.register(m).await.map(Reply::Add),
            Call::Remove(m) => {
                let was_member = self.remove(m.node_id).await?;
                Ok(Reply::Remove(pb::RemoveNodeResponse {
                    members: self.members_now()?,
                    was_member,
                }))
            }
            Call::Transfer(m) => {
                self.transfer(m.node_id).await?;
                Ok(Reply::Transfer(pb::TransferLeaderResponse {
                    leader_node_id: m.node_id,
                }))
            }
            Call::Decommission(m) => self.decommission(m).await.map(Reply::Decommission),
            Call::DrainStatus(_) => Err(refused("unreachable")),
        }
    }

    /// This leader's status and how many of `voters` are live (itself, or heard from within
    /// the last election timeout). A short count is re-read for up to [`LIVENESS_SETTLE`]
    /// before it is believed, and a voter seen live in any read counts (D161): raft-rs clears
    /// every follower's `recent_active` at each election timeout until it is heard again,
    /// and starts a new leader's followers inactive until they answer (a drain of the old
    /// leader asks the new one right after the hand-over), so one read can show live
    /// followers as down.
    async fn live_among(&self, voters: &[PeerId]) -> Result<(ReplicaStatus, usize), Status> {
        let deadline = Instant::now() + LIVENESS_SETTLE;
        let mut live = std::collections::BTreeSet::new();
        let mut heard = |s: &ReplicaStatus| {
            for v in voters {
                if v.0 == self.node_id || s.progress.iter().any(|p| p.peer == *v && p.recent_active)
                {
                    live.insert(v.0);
                }
            }
            live.len()
        };
        let mut s = self.leader_status()?;
        let mut count = heard(&s);
        while count <= voters.len() / 2 && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
            // A leader without a live majority may step down meanwhile (check_quorum): then
            // the count made so far is the answer.
            match self.leader_status() {
                Ok(now) => {
                    count = heard(&now);
                    s = now;
                }
                Err(_) => break,
            }
        }
        Ok((s, count))
    }

    /// This replica's status, which must be a ready leader's.
    fn leader_status(&self) -> Result<ReplicaStatus, Status> {
        let s = self.status()?;
        if s.role == Role::Leader && s.leader_ready {
            Ok(s)
        } else {
            Err(not_leader(
                s.leader.map(|p| p.0).filter(|l| *l != self.node_id),
                format!("node {} does not lead the data shard", self.node_id),
            ))
        }
    }

    fn members_now(&self) -> Result<Vec<pb::ClusterMember>, Status> {
        let s = self.status()?;
        Ok(self.rows(&s, &self.directory_of(&s)))
    }

    async fn propose(
        &self,
        ty: ConfChangeType,
        node: u64,
        dir: &MemberDirectory,
    ) -> Result<(), Status> {
        let mut cc = single_change(ty, PeerId(node));
        cc.context = dir
            .encode()
            .map_err(|e| invalid_field("raft_addr", e.to_string()))?
            .into();
        // The driver never gives up on a proposal; this call does, so that a change that
        // cannot commit (its quorum went down meanwhile) does not hold `lock` forever.
        match tokio::time::timeout(PROPOSE_TIMEOUT, self.handle.propose_conf_change(DATA_SHARD, cc))
            .await
        {
            Ok(r) => {
                r.map_err(raft_status)?;
            }
            Err(_) => {
                return Err(status(
                    ErrorReason::OutcomeUnknown,
                    format!(
                        "the membership change of node {node} was proposed but not applied within \
                         {PROPOSE_TIMEOUT:?} (is a quorum up?): it may still take effect; check the \
                         members and call again"
                    ),
                    |_| {},
                ))
            }
        }
        // Applied; the published status follows at the end of the driver's iteration.
        let peer = PeerId(node);
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let s = self.status()?;
            let done = match ty {
                ConfChangeType::AddLearnerNode => s.learners.contains(&peer),
                ConfChangeType::AddNode => s.voters.contains(&peer),
                ConfChangeType::RemoveNode => {
                    !s.voters.contains(&peer) && !s.learners.contains(&peer)
                }
            };
            if done || Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn add(&self, m: pb::AddNodeRequest) -> Result<pb::AddNodeResponse, Status> {
        if m.node_id == 0 {
            return Err(invalid_field("node_id", "node ids start at 1"));
        }
        check_addr("raft_addr", &m.raft_addr, true)?;
        check_addr("grpc_addr", &m.grpc_addr, false)?;
        let id = PeerId(m.node_id);
        let s = self.leader_status()?;
        let dir = self.directory_of(&s);
        if s.voters.contains(&id) {
            let recorded = dir
                .0
                .get(&m.node_id)
                .map(|r| r.incarnation.clone())
                .unwrap_or_default();
            if m.incarnation.is_empty() || recorded == m.incarnation {
                return self.update_addresses(&s, dir, &m, recorded).await;
            }
            let matched = s
                .progress
                .iter()
                .find(|p| p.peer == id)
                .map_or(0, |p| p.matched);
            if recorded.is_empty() && matched == 0 {
                // An initial member that never registered an incarnation and that this leader
                // never heard hold any entry: its first start, after the others formed the
                // group without it (D126). It stays the voter it is: record its incarnation
                // and let it catch up.
                tracing::info!(
                    node = m.node_id,
                    "an initial member starts for the first time: recording its incarnation"
                );
                let mut dir = dir;
                dir.0.insert(m.node_id, Self::addr_of(&m));
                self.propose(ConfChangeType::AddNode, m.node_id, &dir)
                    .await?;
                let timeout = match m.catch_up_timeout_ms {
                    0 => DEFAULT_CATCH_UP,
                    ms => Duration::from_millis(ms),
                };
                self.wait_caught_up(id, timeout).await?;
                return Ok(pb::AddNodeResponse {
                    members: self.members_now()?,
                    already_member: true,
                });
            }
            // A new data directory under a member's id: the old member goes first.
            tracing::info!(
                node = m.node_id,
                "node rejoins with a new incarnation: removing the old member"
            );
            self.remove(m.node_id).await?;
        }
        let s = self.leader_status()?;
        let mut dir = self.directory_of(&s);
        dir.0.insert(m.node_id, Self::addr_of(&m));
        if !s.learners.contains(&id) {
            tracing::info!(node = m.node_id, raft = %m.raft_addr, "adding a learner");
            self.propose(ConfChangeType::AddLearnerNode, m.node_id, &dir)
                .await?;
        }
        let timeout = match m.catch_up_timeout_ms {
            0 => DEFAULT_CATCH_UP,
            ms => Duration::from_millis(ms),
        };
        self.wait_caught_up(id, timeout).await?;
        tracing::info!(node = m.node_id, "promoting the learner to voter");
        self.propose(ConfChangeType::AddNode, m.node_id, &dir)
            .await?;
        Ok(pb::AddNodeResponse {
            members: self.members_now()?,
            already_member: false,
        })
    }

    /// AddNode of a voter it already is (same incarnation, or none given): a member at a
    /// new address is moved there, through a membership change that changes no member
    /// (raft-rs's AddNode of a voter) carrying the directory with its new addresses; every
    /// replica's transport then dials the new Raft address once it applies it. An empty
    /// `grpc_addr` keeps the recorded one. Nothing to change: nothing proposed.
    async fn update_addresses(
        &self,
        s: &ReplicaStatus,
        mut dir: MemberDirectory,
        m: &pb::AddNodeRequest,
        recorded_incarnation: String,
    ) -> Result<pb::AddNodeResponse, Status> {
        // What the replicated directory holds (for this node itself, `dir` shows its own
        // configured addresses instead).
        let current = self
            .state
            .members()
            .0
            .get(&m.node_id)
            .cloned()
            .or_else(|| dir.0.get(&m.node_id).cloned())
            .unwrap_or_default();
        let grpc = if m.grpc_addr.is_empty() {
            current.grpc.clone()
        } else {
            m.grpc_addr.clone()
        };
        if current.raft == m.raft_addr && current.grpc == grpc {
            return Ok(pb::AddNodeResponse {
                members: self.rows(s, &dir),
                already_member: true,
            });
        }
        if m.node_id == self.node_id && (m.raft_addr != self.own.raft || grpc != self.own.grpc) {
            return Err(refused(format!(
                "node {} leads the data shard and listens at {} (gRPC {}): restart it with \
                 the new addresses, then add it again",
                m.node_id, self.own.raft, self.own.grpc
            )));
        }
        tracing::info!(
            node = m.node_id,
            from = %current.raft,
            to = %m.raft_addr,
            "a member moves to a new address"
        );
        dir.0.insert(
            m.node_id,
            MemberAddr {
                raft: m.raft_addr.clone(),
                grpc,
                incarnation: recorded_incarnation,
            },
        );
        self.propose(ConfChangeType::AddNode, m.node_id, &dir)
            .await?;
        Ok(pb::AddNodeResponse {
            members: self.members_now()?,
            already_member: true,
        })
    }

    fn addr_of(m: &pb::AddNodeRequest) -> MemberAddr {
        MemberAddr {
            raft: m.raft_addr.clone(),
            grpc: m.grpc_addr.clone(),
            incarnation: m.incarnation.clone(),
        }
    }

    /// Records the incarnation of a voter that holds its log (it says so by calling
    /// `Register`, which only a node whose replica opened with a log does): a membership
    /// change that changes no member (raft-rs's AddNode of a voter) carrying the directory.
    async fn register(&self, m: pb::AddNodeRequest) -> Result<pb::AddNodeResponse, Status> {
        if m.incarnation.is_empty() {
            return Err(invalid_field("incarnation", "a registration names one"));
        }
        check_addr("raft_addr", &m.raft_addr, true)?;
        check_addr("grpc_addr", &m.grpc_addr, false)?;
        let s = self.leader_status()?;
        let mut dir = self.directory_of(&s);
        if !s.voters.contains(&PeerId(m.node_id)) {
            return Err(refused(format!(
                "node {} is not a voter of the data shard",
                m.node_id
            )));
        }
        let recorded = dir
            .0
            .get(&m.node_id)
            .map(|r| r.incarnation.clone())
            .unwrap_or_default();
        if recorded == m.incarnation {
            return Ok(pb::AddNodeResponse {
                members: self.rows(&s, &dir),
                already_member: true,
            });
        }
        if !recorded.is_empty() {
            return Err(refused(format!(
                "node {} is recorded with incarnation {recorded}, not {}: its data directory \
                 is not the member's",
                m.node_id, m.incarnation
            )));
        }
        // Bookkeeping only: not worth a change that may not commit.
        let (_, live) = self.live_among(&s.voters).await?;
        if live < s.voters.len() / 2 + 1 {
            return Err(refused(
                "no live majority of voters to record an incarnation with",
            ));
        }
        tracing::info!(node = m.node_id, incarnation = %m.incarnation, "recording a member's incarnation");
        dir.0.insert(m.node_id, Self::addr_of(&m));
        self.propose(ConfChangeType::AddNode, m.node_id, &dir)
            .await?;
        Ok(pb::AddNodeResponse {
            members: self.members_now()?,
            already_member: true,
        })
    }

    /// Waits until the leader sees `peer` hold its log through the commit index of now.
    async fn wait_caught_up(&self, peer: PeerId, timeout: Duration) -> Result<(), Status> {
        let target = self.leader_status()?.commit;
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.leader_status()?;
            let matched = s
                .progress
                .iter()
                .find(|p| p.peer == peer)
                .map_or(0, |p| p.matched);
            if matched >= target {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(status(
                    ErrorReason::CatchUpTimeout,
                    format!(
                        "node {} did not catch up within {timeout:?} (it has the log through {matched}, \
                         the leader committed {target}); it stays a learner: check that it runs and \
                         that its Raft address is reachable, then call AddNode again",
                        peer.0
                    ),
                    |_| {},
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The most caught-up live voter other than this node.
    fn successor(s: &ReplicaStatus, except: PeerId) -> Option<PeerId> {
        s.progress
            .iter()
            .filter(|p| p.peer != except && p.recent_active && s.voters.contains(&p.peer))
            .max_by_key(|p| (p.matched, p.peer))
            .map(|p| p.peer)
    }

    /// Hands this leader's leadership to its most caught-up live voter, then answers
    /// `NOT_LEADER` naming it (the caller follows it there).
    async fn step_down(&self, s: &ReplicaStatus, why: &str) -> Result<(), Status> {
        let me = PeerId(self.node_id);
        let Some(to) = Self::successor(s, me) else {
            return Err(refused(format!(
                "{why}: node {} leads and no other live voter can take over",
                self.node_id
            )));
        };
        tracing::info!(to = to.0, why, "handing leadership over");
        self.handle
            .transfer_leader(DATA_SHARD, to)
            .await
            .map_err(raft_status)?;
        Err(not_leader(
            Some(to.0),
            format!("leadership moved to node {}", to.0),
        ))
    }

    /// Removes `node`; false when it was not a member.
    async fn remove(&self, node: u64) -> Result<bool, Status> {
        let id = PeerId(node);
        let s = self.leader_status()?;
        if !s.voters.contains(&id) && !s.learners.contains(&id) {
            return Ok(false);
        }
        if s.voters.contains(&id) {
            let remaining: Vec<PeerId> = s.voters.iter().copied().filter(|v| *v != id).collect();
            if remaining.is_empty() {
                return Err(refused(format!(
                    "node {node} is the last voter: removing it would leave the data shard with no replica"
                )));
            }
            let (s, live) = self.live_among(&remaining).await?;
            let majority = remaining.len() / 2 + 1;
            if live < majority {
                return Err(refused(format!(
                    "removing node {node} would leave {} voters of which only {live} are live, \
                     fewer than the {majority} a quorum needs: bring the down nodes back first",
                    remaining.len()
                )));
            }
            if node == self.node_id {
                self.step_down(&s, &format!("removing node {node}")).await?;
            }
        }
        let mut dir = self.directory_of(&s);
        dir.0.remove(&node);
        tracing::info!(node, "removing a member");
        self.propose(ConfChangeType::RemoveNode, node, &dir).await?;
        Ok(true)
    }

    async fn transfer(&self, node: u64) -> Result<(), Status> {
        let s = self.leader_status()?;
        let id = PeerId(node);
        if !s.voters.contains(&id) {
            return Err(refused(format!(
                "node {node} is not a voter of the data shard"
            )));
        }
        if node == self.node_id {
            return Ok(());
        }
        self.handle
            .transfer_leader(DATA_SHARD, id)
            .await
            .map_err(|e| match e {
                RaftStoreError::Timeout(m) => not_leader(
                    None,
                    format!("node {node} did not take over leadership in time: {m}"),
                ),
                e => raft_status(e),
            })
    }

    async fn decommission(
        &self,
        m: pb::DecommissionRequest,
    ) -> Result<pb::DecommissionResponse, Status> {
        let node = m.node_id;
        let id = PeerId(node);
        let rf = match m.replication_factor {
            0 => DEFAULT_REPLICATION_FACTOR,
            n => n as usize,
        };
        let mut done = Vec::new();
        let s = self.leader_status()?;
        if s.voters.contains(&id) {
            let remaining = s.voters.len() - 1;
            if remaining < rf {
                let replacement = s
                    .progress
                    .iter()
                    .filter(|p| {
                        s.learners.contains(&p.peer) && p.recent_active && p.matched >= s.commit
                    })
                    .max_by_key(|p| p.matched)
                    .map(|p| p.peer);
                let Some(r) = replacement else {
                    return Err(refused(format!(
                        "decommissioning node {node} would leave {remaining} voters, fewer than the \
                         replication factor {rf}, and no other node is available to take its place: \
                         add a node first"
                    )));
                };
                let dir = self.directory_of(&s);
                self.propose(ConfChangeType::AddNode, r.0, &dir).await?;
                done.push(format!("promoted node {} in its place", r.0));
            }
        }
        let was_member = self.remove(node).await?;
        done.push(if was_member {
            format!("removed node {node}")
        } else {
            format!("node {node} is not a member")
        });
        Ok(pb::DecommissionResponse {
            state: DrainState::Drained as i32,
            members: self.members_now()?,
            summary: done.join("; "),
        })
    }

    /// What a joining node asks a seed for first.
    pub fn members_reply(&self) -> ipb::MembersResponse {
        let Some(s) = self.handle.status(DATA_SHARD) else {
            return ipb::MembersResponse::default();
        };
        let mut dir = self.directory_of(&s);
        dir.0
            .entry(self.node_id)
            .or_insert_with(|| self.own.clone());
        ipb::MembersResponse {
            members: self.rows(&s, &dir),
            leader_node_id: s.leader.map_or(0, |p| p.0),
        }
    }
}

async fn connect(
    addr: &str,
) -> Result<MembershipClient<tonic::transport::Channel>, tonic::transport::Error> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect()
        .await?;
    Ok(MembershipClient::new(channel))
}

mod joining;
mod service;

#[cfg(test)]
pub(crate) use joining::SKIP_REGISTRATION;
pub use joining::{join, move_seeds, probe_cluster, register, removed_per_peers, Probe};
pub use service::MembershipService;
