//! The node's replica of the data shard, and the three seams the transaction layer reaches
//! Raft through: the write path ([`RaftShardWriter`]), the timestamp oracle's group
//! ([`RaftTsoGroup`]) and the GC safe point ([`RaftSafePointStore`]).
//!
//! ```text
//!   TxnManager ─► Storage ──(latches, compute batch)──► RaftShardWriter ─┐
//!        │                                                                │ RaftCommand
//!        └─► BatchingTso ─► ReplicatedTso ─► RaftTsoGroup ──────────────┤ (shard, epoch,
//!   GC task ─► GcSafePoint ─► RaftSafePointStore ────────────────────────┤  term, ops)
//!                                                                         ▼
//!                        RaftHandle ─► driver thread: RaftStore (raft-engine <data>/raft)
//!                                         │ apply                 ▲ │ GrpcTransport
//!                                         ▼                       │ ▼  (internal port)
//!                         KvApply ─► Db (<data>/db, no WAL)     other nodes
//! ```
//!
//! One data shard for now ([`DATA_SHARD`], the whole key space); a replica's peer id is its
//! node id. The transport's address book starts from the configured members and then follows
//! the member directory the membership changes carry (`raftstore::members`, applied and
//! persisted by `KvApply`); `server/membership.rs` drives the changes. A single node is a one-voter group on the same path: it campaigns at start, so
//! it leads at once. Every blocking call here runs on the calling thread (the server calls
//! the transaction layer from tokio's blocking pool): the driver's answer is awaited on that
//! thread itself ([`crate::park`]), woken directly by the driver, so nothing here needs to
//! run inside the runtime and no task is spawned per request (D135).
//!
//! **The write path** (D67). `begin_write` waits, bounded, until this replica leads and is
//! ready (it has applied its term's first entry) and returns the term as the ticket; `write`
//! proposes the batch tied to that term and returns once it is applied here. While the
//! proposal is pending the writer watches the replica: if it stops leading in the ticket's
//! term first, the outcome is unknown (`OutcomeUnknown`) — the entry may still commit under
//! a later leader — and never otherwise, however long it takes, because the command's
//! latches must stay held until its fate is settled.
//!
//! **Reads** pass `read_barrier` first: a ReadIndex (or lease) confirmation through the
//! driver, which resolves once this replica has applied up to the read index.
//!
//! **Removal** (D127). [`Replica::check_removal`], run every 100 ms, retires the replica
//! (`RaftHandle::retire`: no ticks, no messages, no proposals) once its configuration drops
//! this node after a directory listed it with this data directory's incarnation, or, while it
//! is a member in its own view but knows no leader for a second, once a peer lists members
//! without it; it writes `<data_dir>/removed`, so a restart opens the replica retired. The
//! state machine writes that marker itself before it applies the entry that removes this
//! node (D155), so a crash cannot leave the removal applied and unmarked. A wiped
//! node replaying its predecessor's removal, or a joiner replaying the log before its own
//! addition, never counts as removed. On fresh data an initial member first asks the other
//! initial members whether the cluster remembers it, and joins instead of bootstrapping when
//! it does (D125, [`Replica::found_cluster`]).
//!
//! **The GC safe point** is replicated (`Op::SetGcSafePoint`): the leader's GC task saves a
//! new one through [`RaftSafePointStore`] before it takes effect; every replica's compaction
//! filter follows the value its own state machine applied ([`Replica::sync_safe_point`]), so
//! no read above the safe point can tell replicas apart.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::lsm::{Db, WriteBatch};
use crate::mvcc::gc::SafePointStore;
use crate::mvcc::{GcSafePoint, MvccError, Timestamp};
use tokio::sync::watch;

use crate::gateway::{LeaderLocator, NodeAddr, ShardService};
use crate::raftstore::transport::{
    raft_service, AddressBook, GrpcTransport, NetFaults, PeerIdIsNodeId, TransportConfig,
    TransportCounters,
};
use crate::raftstore::{
    DriverConfig, KeyRange, KvApply, KvApplyConfig, LeaderView, LogStore, NodeId, Op, PeerConfig,
    PeerId, RaftCommand, RaftDriver, RaftHandle, RaftStore, RaftStoreError, ReplicaMeta,
    ReplicaStatus, Role, ShardEpoch, ShardId, ShardState,
};
use crate::tso::{compose, physical, TsoError, TsoGroup};
use crate::txn::{ShardWriter, WriteFuture, WriteTicket};
use strata_proto::internal::v1::membership_server::MembershipServer;
use strata_proto::internal::v1::shard_server::ShardServer;

use super::membership::{
    probe_cluster, removed_per_peers, Membership as MembershipOps, MembershipService, Probe,
};
use crate::raftstore::MemberAddr;

mod writer;

pub use writer::{RaftShardWriter, RaftTsoGroup};

/// The shard that holds every key (until the sharding milestone splits it).
pub const DATA_SHARD: ShardId = ShardId(1);

/// The transport's cluster id until the meta shard names clusters.
pub const CLUSTER_ID: u64 = 1;

/// Removal checks (one per 100 ms) without a known leader before a member asks its peers
/// whether it was removed.
const LEADERLESS_CHECKS: u64 = 10;

/// How often a pending write checks that its replica still leads in the ticket's term.
const WATCH_INTERVAL: Duration = Duration::from_millis(10);

/// How a node becomes a member of the data shard's group on fresh data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// The initial voters, this node among them (a single node: itself alone).
    Bootstrap(BTreeMap<u64, String>),
    /// An empty replica that waits to be added by the running cluster.
    Join,
}

/// What [`Replica::open`] needs.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// This node.
    pub node_id: u64,
    /// The Raft addresses of the other members known now (node id -> host:port).
    pub peers: BTreeMap<u64, String>,
    /// How the replica starts on fresh data (ignored once it exists).
    pub membership: Membership,
    /// One raft tick.
    pub tick: Duration,
    /// This data directory's incarnation. A fresh initial member (no raft log, bootstrap
    /// membership with other members) first asks those members whether a cluster already
    /// exists and joins it instead of bootstrapping when one does (D125); empty: never asks.
    pub incarnation: String,
}

/// The internal port's server: configured until [`Replica::serve`] starts it.
#[derive(Debug)]
enum Internal {
    Configured {
        cfg: TransportConfig,
        counters: Arc<TransportCounters>,
    },
    Serving {
        closing: watch::Sender<bool>,
        task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    },
    Stopped,
}

/// The data shard's replica on this node: the driver, its internal server, the shared
/// applied state.
#[derive(Debug)]
pub struct Replica {
    handle: RaftHandle,
    state: Arc<ShardState>,
    book: AddressBook,
    internal: parking_lot::Mutex<Internal>,
    runtime: tokio::runtime::Handle,
    node_id: u64,
    /// The mark a pre-replication oracle of this data directory persisted: a floor for the
    /// replicated oracle, so an upgraded node never issues below what it issued before.
    tso_floor_ms: u64,
    /// The group's only voter is this node.
    lone_voter: bool,
    /// The fault rules of this node's outgoing Raft messages (none unless a test sets some).
    faults: NetFaults,
    /// The replica has no log and no membership: it was never added to a group.
    never_joined: bool,
    /// What opening the replica found.
    recovery: RecoveryInfo,
    /// The raft log (shared with the driver's store), for its size.
    log: LogStore,
    /// The data directory (for the removal marker).
    data_dir: std::path::PathBuf,
    /// This data directory's incarnation.
    incarnation: String,
    /// Consecutive removal checks that found no leader known.
    leaderless_checks: AtomicU64,
    /// This node was removed from the group (D127): set by the state machine as it applies
    /// the removal, once the marker is written (D155), or by [`Replica::check_removal`].
    removed: Arc<AtomicBool>,
    /// The replica is retired (it was removed, and the driver was told).
    retired: AtomicBool,
    /// Why a fresh initial member joins instead of bootstrapping, when it does.
    found_cluster: Option<String>,
    /// The transport's counters.
    counters: Arc<TransportCounters>,
}

/// The data shard's replica as [`Replica::open`] found it: how much raft log lay beyond the
/// state machine's durable applied index, to be replayed, and how long opening took.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RecoveryInfo {
    /// The applied index the state machine held durably at open.
    pub applied_index: u64,
    /// The raft log's last index at open (0 on fresh data).
    pub last_index: u64,
    /// Bytes of the raft log on disk at open.
    pub raft_log_bytes: u64,
    /// Time spent opening the log store and the state machine.
    pub open_duration: Duration,
}

impl RecoveryInfo {
    /// Entries beyond the durable applied index: what the replica replays (at most; the
    /// uncommitted tail of a former leader may be replaced instead).
    pub fn entries_to_replay(&self) -> u64 {
        self.last_index.saturating_sub(self.applied_index)
    }
}

impl Replica {
    /// Opens `<dir>/raft`, the data shard's state machine over `db`, bootstraps or creates
    /// the replica on fresh data and starts the driver; [`Replica::serve`] then serves the
    /// internal port. Must be called on the tokio runtime (the transport runs there); the
    /// blocking opens run on the blocking pool.
    pub async fn open(
        dir: std::path::PathBuf,
        db: Db,
        options: ReplicaOptions,
        tso_floor_ms: u64,
    ) -> Result<Replica, RaftStoreError> {
        let runtime = tokio::runtime::Handle::current();
        let node = NodeId(options.node_id);
        let book = AddressBook::new();
        for (id, addr) in &options.peers {
            if *id != options.node_id {
                book.set(NodeId(*id), addr.clone());
            }
        }
        let driver = RaftDriver::new(DriverConfig {
            tick: options.tick,
            ..DriverConfig::default()
        });
        let cfg = TransportConfig::new(CLUSTER_ID, node);
        let faults = NetFaults::new(options.node_id);
        let transport = GrpcTransport::new(
            cfg.clone(),
            Arc::new(PeerIdIsNodeId),
            book.clone(),
            faults.clone(),
            driver.handle(),
            runtime.clone(),
        );
        let counters = transport.counters();
        let mut opts = options.clone();
        let store_book = book.clone();
        let began = std::time::Instant::now();
        let log_dir = dir.join("raft");
        let log = tokio::task::spawn_blocking(move || -> Result<LogStore, RaftStoreError> {
            std::fs::create_dir_all(&log_dir)?;
            LogStore::open(&log_dir)
        })
        .await
        .map_err(|e| RaftStoreError::Invalid(format!("opening the raft log: {e}")))??;
        let mut found_cluster = None;
        if log.replica(DATA_SHARD)?.is_none() && !opts.incarnation.is_empty() {
            if let Membership::Bootstrap(members) = &opts.membership {
                let others: BTreeMap<u64, String> = members
                    .iter()
                    .filter(|(id, _)| **id != options.node_id)
                    .map(|(id, a)| (*id, a.clone()))
                    .collect();
                if !others.is_empty() {
                    match probe_cluster(options.node_id, &opts.incarnation, &others).await {
                        Probe::Cluster(why) => {
                            tracing::warn!(%why, "fresh data directory, but the cluster exists: \
                                joining it as a new member instead of bootstrapping");
                            opts.membership = Membership::Join;
                            found_cluster = Some(why);
                        }
                        Probe::NoCluster => tracing::info!(
                            "fresh data directory and no initial member knows a cluster: bootstrapping"
                        ),
                    }
                }
            }
        }
        let marked = super::identity::is_marked_removed(&dir);
        let removed = Arc::new(AtomicBool::new(marked));
        let data_dir = dir.clone();
        let on_removal = removal_hook(dir.clone(), Arc::clone(&removed));
        let (store, state, lone_voter, never_joined, mut recovery, log) =
            tokio::task::spawn_blocking(move || {
                open_store(log, db, transport, store_book, &opts, marked, on_removal)
            })
            .await
            .map_err(|e| RaftStoreError::Invalid(format!("opening the raft store: {e}")))??;
        recovery.open_duration = began.elapsed();
        tracing::info!(
            applied = recovery.applied_index,
            last_index = recovery.last_index,
            to_replay = recovery.entries_to_replay(),
            log_bytes = recovery.raft_log_bytes,
            secs = recovery.open_duration.as_secs_f64(),
            "opened the data shard's replica"
        );
        let handle = driver.start(store)?;
        Ok(Replica {
            handle,
            state,
            book,
            internal: parking_lot::Mutex::new(Internal::Configured {
                cfg,
                counters: Arc::clone(&counters),
            }),
            runtime,
            node_id: options.node_id,
            tso_floor_ms,
            lone_voter,
            faults,
            never_joined,
            recovery,
            log,
            data_dir,
            incarnation: options.incarnation,
            leaderless_checks: AtomicU64::new(0),
            removed,
            retired: AtomicBool::new(marked),
            found_cluster,
            counters,
        })
    }

    /// Why this fresh initial member joins the existing cluster instead of bootstrapping
    /// (None when it bootstrapped, or its replica existed).
    pub fn found_cluster(&self) -> Option<&str> {
        self.found_cluster.as_deref()
    }

    /// The transport's counters now (messages sent and received...).
    pub fn transport_stats(&self) -> crate::raftstore::transport::TransportStats {
        self.counters.stats()
    }

    /// True once this node was removed from the group (this run or an earlier one).
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// Checks whether this node has been removed from the group (D128); called
    /// periodically. A replica counts as removed once its configuration no longer lists
    /// it after it was seen a member *under this incarnation* (the member directory names
    /// it with this data directory's incarnation): a wiped node replaying its earlier
    /// incarnation's removal, or a joiner catching up on the log before its own addition,
    /// is not removed. Then the replica is retired (it stops campaigning and sending), a
    /// marker is written (`<data_dir>/removed`: a restart stays retired) and true is
    /// returned, as it is from then on. A removal this replica applies needs no check: the
    /// state machine writes the marker before it applies it (D155), and this retires.
    pub async fn check_removal(&self) -> bool {
        if self.retired.load(Ordering::Acquire) {
            return true;
        }
        // A test stops the check here (its argument names the incarnation): the node as if
        // killed before it acted on its removal.
        if fail::eval("server::replica::check_removal", |arg| {
            arg.as_deref() == Some(self.incarnation.as_str())
        }) == Some(true)
        {
            return false;
        }
        let why = if self.is_removed() {
            // The state machine applied the removal and wrote the marker (D155).
            "it applied its own removal".to_owned()
        } else {
            let Some(why) = self.find_removal().await else {
                return false;
            };
            self.removed.store(true, Ordering::Release);
            let dir = self.data_dir.clone();
            match tokio::task::spawn_blocking(move || super::identity::mark_removed(&dir)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "writing the removal marker failed"),
                Err(e) => tracing::warn!(error = %e, "writing the removal marker failed"),
            }
            why
        };
        tracing::warn!(
            node = self.node_id,
            %why,
            "this node was removed from the cluster: its replica stops; wipe its data \
             directory to bring it back as a new member"
        );
        if let Err(e) = self.handle.retire(DATA_SHARD).await {
            tracing::warn!(error = %e, "retiring the replica failed");
        }
        self.retired.store(true, Ordering::Release);
        true
    }

    /// Why this node counts as removed, when it does (see [`Replica::check_removal`]).
    async fn find_removal(&self) -> Option<String> {
        // The listing is read before the status: the status is published after each apply
        // batch, so it may still show a configuration from before the entry that listed this
        // incarnation (a wiped node replaying its predecessor's removal, then its own add).
        let listed_at = self.state.listed_at(self.node_id, &self.incarnation)?;
        let s = self.status()?;
        if !judges_this_incarnation(listed_at, s.applied) {
            return None;
        }
        let me = PeerId(self.node_id);
        if !(s.voters.contains(&me) || s.learners.contains(&me)) {
            return Some("it applied its own removal".to_owned());
        }
        // A member in its own view: unless it knows no leader for a while (a removed node
        // whose removal's commit never reached it), it is one.
        if s.leader.is_some() {
            self.leaderless_checks.store(0, Ordering::Release);
            return None;
        }
        let n = self.leaderless_checks.fetch_add(1, Ordering::AcqRel) + 1;
        if !n.is_multiple_of(LEADERLESS_CHECKS) {
            return None;
        }
        let peers: BTreeMap<u64, String> = s
            .voters
            .iter()
            .chain(&s.learners)
            .filter(|p| **p != me)
            .filter_map(|p| self.book.get(NodeId(p.0)).map(|a| (p.0, a)))
            .collect();
        removed_per_peers(self.node_id, &peers).await
    }

    /// The fault rules of this node's outgoing Raft messages: a test hook (partition,
    /// isolate, drop, delay, duplicate, heal). A cut is enforced by the sender, so a test
    /// partitioning nodes sets the same cut on every node's handle. Rules are never set
    /// outside tests; while none is, the transport pays one atomic load per message.
    pub fn net_faults(&self) -> &NetFaults {
        &self.faults
    }

    /// True when the replica has neither log nor membership: it has never been added to a
    /// group (a joining node that must still ask to be added).
    pub fn never_joined(&self) -> bool {
        self.never_joined
    }

    /// What opening the replica found (raft log to replay, time taken).
    pub fn recovery(&self) -> RecoveryInfo {
        self.recovery
    }

    /// Bytes of the raft log on disk now.
    pub fn raft_log_bytes(&self) -> u64 {
        u64::try_from(self.log.used_bytes()).unwrap_or(u64::MAX)
    }

    /// True when this node is the group's only voter (it elects itself at start).
    pub fn is_lone_voter(&self) -> bool {
        self.lone_voter
    }

    /// The driver's handle.
    pub fn handle(&self) -> &RaftHandle {
        &self.handle
    }

    /// What the state machine applied (index, TSO mark, safe point).
    pub fn state(&self) -> &Arc<ShardState> {
        &self.state
    }

    /// The Raft addresses of the other nodes.
    pub fn address_book(&self) -> &AddressBook {
        &self.book
    }

    /// The data shard's status as the driver last published it.
    pub fn status(&self) -> Option<ReplicaStatus> {
        self.handle.status(DATA_SHARD)
    }

    /// True while this replica leads the data shard and has caught up in its term.
    pub fn leads(&self) -> bool {
        self.status()
            .is_some_and(|s| s.role == Role::Leader && s.leader_ready)
    }

    /// Raises this node's safe point (read by its compaction filter and readers) to what
    /// the state machine applied. Followers call it periodically; the leader's GC task
    /// advances through [`RaftSafePointStore`] instead.
    pub fn sync_safe_point(&self, safe_point: &GcSafePoint) {
        safe_point.advance(self.state.gc_safe_point());
    }

    /// A writer for `Storage`.
    pub fn writer(&self) -> RaftShardWriter {
        RaftShardWriter {
            handle: self.handle.clone(),
            shard: DATA_SHARD,
            ready_timeout: DriverConfig::default().leader_ready_timeout,
        }
    }

    /// The oracle's group.
    pub fn tso_group(&self) -> RaftTsoGroup {
        RaftTsoGroup {
            writer: self.writer(),
            state: Arc::clone(&self.state),
            floor_ms: self.tso_floor_ms,
        }
    }

    /// The GC safe point's store.
    pub fn safe_point_store(&self) -> RaftSafePointStore {
        RaftSafePointStore {
            writer: self.writer(),
            state: Arc::clone(&self.state),
        }
    }

    /// The data shard's membership driven from this node (`own`: this node's addresses and
    /// incarnation).
    pub fn membership(&self, own: MemberAddr) -> MembershipOps {
        MembershipOps::new(
            self.handle.clone(),
            Arc::clone(&self.state),
            self.book.clone(),
            self.node_id,
            own,
        )
    }

    /// Serves the internal port on `listener`: the Raft service, `shard`, the gateway's
    /// service of this node's storage, and the membership calls passed to the leader. Once
    /// only.
    pub fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shard: ShardServer<ShardService>,
        membership: Arc<MembershipOps>,
    ) -> Result<(), RaftStoreError> {
        let mut internal = self.internal.lock();
        let Internal::Configured { cfg, counters } = &*internal else {
            return Err(RaftStoreError::Invalid(
                "the internal port is served once".into(),
            ));
        };
        let (closing, closing_rx) = watch::channel(false);
        let raft = raft_service(
            self.handle.clone(),
            cfg.clone(),
            Arc::clone(counters),
            closing_rx.clone(),
        );
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let mut stop = closing_rx;
        let task = self.runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(raft)
                .add_service(shard)
                .add_service(MembershipServer::new(MembershipService::new(membership)))
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop.wait_for(|closing| *closing).await;
                }),
        );
        *internal = Internal::Serving { closing, task };
        Ok(())
    }

    /// A locator of the data shard's leader for the gateway.
    pub fn locator(&self) -> ReplicaLocator {
        ReplicaLocator {
            handle: self.handle.clone(),
            book: self.book.clone(),
            node_id: self.node_id,
        }
    }

    /// Stops serving the internal port and the driver. Bounded; errors are logged.
    pub async fn shutdown(&self) {
        let internal = std::mem::replace(&mut *self.internal.lock(), Internal::Stopped);
        if let Internal::Serving { closing, task } = internal {
            let _ = closing.send(true);
            match tokio::time::timeout(Duration::from_secs(10), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the internal port failed"),
                Ok(Err(e)) => tracing::warn!(error = %e, "the internal port's task failed"),
                Err(_) => tracing::warn!("the internal port did not stop in time"),
            }
        }
        let handle = self.handle.clone();
        let joined = tokio::task::spawn_blocking(move || handle.shutdown()).await;
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "stopping the raft driver"),
            Err(e) => tracing::warn!(error = %e, "stopping the raft driver"),
        }
        tracing::debug!(node = self.node_id, "replica stopped");
    }
}

/// What [`open_store`] returns: the store, the applied state, whether this node is the lone
/// voter, whether it was never added to a group, what it found, and a handle on the raft log.
type Opened = (
    RaftStore<GrpcTransport>,
    Arc<ShardState>,
    bool,
    bool,
    RecoveryInfo,
    LogStore,
);

fn open_store(
    log: LogStore,
    db: Db,
    transport: GrpcTransport,
    book: AddressBook,
    options: &ReplicaOptions,
    removed: bool,
    on_removal: Box<dyn FnMut() -> std::io::Result<()> + Send>,
) -> Result<Opened, RaftStoreError> {
    let mut recovery = RecoveryInfo {
        raft_log_bytes: u64::try_from(log.used_bytes()).unwrap_or(u64::MAX),
        ..RecoveryInfo::default()
    };
    let apply = KvApply::open(
        db,
        DATA_SHARD,
        KeyRange::all(),
        ShardEpoch::default(),
        KvApplyConfig::default(),
    )?
    .with_address_book(book, NodeId(options.node_id))
    .on_own_removal(
        NodeId(options.node_id),
        options.incarnation.clone(),
        on_removal,
    );
    let state = apply.state();
    recovery.applied_index = state.applied_index();
    let mut store = RaftStore::new(log.clone(), transport, PeerConfig::default());
    let meta = ReplicaMeta {
        shard: DATA_SHARD,
        peer: PeerId(options.node_id),
        epoch: ShardEpoch::default(),
    };
    match store.log_store().replica(DATA_SHARD)? {
        Some(found) if found.peer != meta.peer => {
            return Err(RaftStoreError::Invalid(format!(
                "{DATA_SHARD}: the raft log here belongs to {} but this node is {}",
                found.peer, meta.peer
            )));
        }
        Some(_) => {
            recovery.last_index = store.log_store().load(DATA_SHARD)?.last_index;
            store.open_replica(DATA_SHARD, Box::new(apply))?
        }
        None => match &options.membership {
            Membership::Bootstrap(members) => {
                let mut voters: Vec<PeerId> = members.keys().map(|id| PeerId(*id)).collect();
                if !voters.contains(&meta.peer) {
                    voters.push(meta.peer);
                }
                tracing::info!(?voters, "bootstrapping the data shard");
                store.bootstrap_shard(meta, &voters, Box::new(apply))?;
            }
            Membership::Join => {
                tracing::info!("created an empty replica; waiting to be added to the cluster");
                store.create_joining_replica(meta, Box::new(apply))?;
            }
        },
    }
    // A lone voter need not wait out an election timeout.
    let peer = store.peer_mut(DATA_SHARD)?;
    if removed {
        // Removed in an earlier run (D128): it stays out.
        peer.retire();
    }
    let lone_voter = peer.conf_state().voters == [meta.peer.0] && !removed;
    if lone_voter {
        peer.campaign()?;
    }
    let cs = peer.conf_state();
    let never_joined = peer.last_index() == 0 && cs.voters.is_empty() && cs.learners.is_empty();
    Ok((store, state, lone_voter, never_joined, recovery, log))
}

/// What the state machine runs as it applies this node's own removal, before the entry is
/// applied (D155): the marker `<data_dir>/removed` is written durably and the node counts
/// as removed from then on, so no crash can leave the removal applied and the node unaware.
fn removal_hook(
    data_dir: std::path::PathBuf,
    removed: Arc<AtomicBool>,
) -> Box<dyn FnMut() -> std::io::Result<()> + Send> {
    Box::new(move || {
        tracing::warn!("applying this node's own removal from the cluster: writing the marker");
        super::identity::mark_removed(&data_dir)?;
        removed.store(true, Ordering::Release);
        Ok(())
    })
}

/// Where the data shard's leader is, from the driver's published status: for the gateway.
#[derive(Debug, Clone)]
pub struct ReplicaLocator {
    handle: RaftHandle,
    book: AddressBook,
    node_id: u64,
}

impl LeaderLocator for ReplicaLocator {
    fn local_leader_ready(&self, shard: ShardId) -> bool {
        self.handle
            .leader_view(shard)
            .is_some_and(|s| s.role == Role::Leader && s.leader_ready)
    }

    fn leader(&self, shard: ShardId) -> Option<NodeAddr> {
        // Peer ids are node ids (`PeerIdIsNodeId`).
        let leader = self.handle.leader_view(shard)?.leader?.0;
        let addr = self.address(leader)?;
        Some(NodeAddr {
            node_id: leader,
            addr,
        })
    }

    fn address(&self, node_id: u64) -> Option<String> {
        if node_id == self.node_id {
            return None;
        }
        self.book.get(NodeId(node_id))
    }

    fn local_epoch(&self, shard: ShardId) -> Option<ShardEpoch> {
        self.handle.leader_view(shard).map(|s| s.epoch)
    }
}

/// Saves the GC safe point through the data shard (`Op::SetGcSafePoint`).
#[derive(Debug, Clone)]
pub struct RaftSafePointStore {
    writer: RaftShardWriter,
    state: Arc<ShardState>,
}

impl SafePointStore for RaftSafePointStore {
    fn load(&self) -> crate::mvcc::Result<Option<Timestamp>> {
        Ok(Some(self.state.gc_safe_point()).filter(|t| *t > 0))
    }

    fn save(&self, safe_point: Timestamp) -> crate::mvcc::Result<()> {
        let mut cmd = self.writer.command()?;
        cmd.push(Op::SetGcSafePoint(safe_point));
        self.writer.propose(cmd, None).map(|_| ())
    }
}

/// Whether a replica status applied through `status_applied` says anything about the
/// incarnation first listed at `listed_at`: only a configuration at or after the listing
/// entry can show that incarnation's removal (an earlier one may be its predecessor's).
fn judges_this_incarnation(listed_at: u64, status_applied: u64) -> bool {
    status_applied >= listed_at
}

#[cfg(test)]
mod removal_tests {
    use super::judges_this_incarnation;

    #[test]
    fn a_configuration_from_before_the_listing_is_no_evidence_of_removal() {
        // A wiped node applies, in one batch, its predecessor's removal (index 30) and its
        // own add as a learner (index 31, listing the new incarnation); a status published
        // after index 30 must not retire it.
        assert!(!judges_this_incarnation(31, 30));
        assert!(judges_this_incarnation(31, 31));
        assert!(judges_this_incarnation(31, 40));
    }
}
