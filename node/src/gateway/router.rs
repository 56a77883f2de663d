//! [`ShardRouter`]: the coordinator's [`ShardClient`] on a gateway: this node's replica when
//! it leads the shard, the leader's shard service otherwise.
//!
//! ```text
//!   command ─► target: a NotLeader hint's node ─► else this replica, if it leads and is ready
//!                                               ─► else the locator's leader (remote)
//!              run it ─┬─ answer (Ok or a storage error) ─────────────────────► return it
//!                      ├─ NotLeader{hint} / EpochNotMatch / not sent ─► retry (hint, epoch)
//!                      └─ answer lost (maybe done) ─┬─ idempotent: re-send, same request
//!                                                   └─ LockRanges: OutcomeUnknown at once
//!              past the retry deadline: the last error; OutcomeUnknown if a write's answer
//!              was lost on the way
//! ```
//!
//! **What is re-sent (decision D77).** Nothing the router re-sends can do twice what was
//! meant once: a refusal (`NotLeader`, `EpochNotMatch`, no such shard, a refused
//! connection) did nothing, and every command but one is idempotent for the same
//! transaction and timestamps, so a re-send after a lost answer is safe too:
//! reads, `check_ranges` and `oldest_lock_ts` change nothing; `check_txn_status` decides a
//! transaction once (its rollback record, or a pushed `min_commit_ts`, answer the re-send
//! the same way); a `prewrite` finding its own lock or commit record succeeds without
//! writing; a `commit` finding its own commit record succeeds; a `rollback` or
//! `resolve_lock` finding the same decision already written does nothing; a `heartbeat`
//! only raises the TTL. Even a late duplicate arriving after the transaction moved on is
//! harmless (a prewrite after the commit finds the commit record). The exception is
//! `lock_ranges`: a duplicate delayed past the lease would register the range locks again
//! after they lapsed, and the guarded commit could then pass although a write entered the
//! range in between; a lost answer to it is reported at once, the commit fails before its
//! commit point (nothing committed, retryable), and the registration, if it was made, is
//! released or lapses. `one_pc` is re-sent too (a retry finds its commit records), but an
//! error answer after a lost one is reported as `OutcomeUnknown` (`Resend::Decisive`): the
//! lost attempt may still run. An `OutcomeUnknown` *answer* (the leader's replication does not
//! know) is passed up unchanged, exactly as a local replica returns it: the coordinator's
//! own outcome handling (`manager/commit.rs`) settles it through the primary.
//!
//! **Waits** for a remote leader's lock are long polls ([`LockWait::Remote`]), sent when
//! the wait begins and answered by the leader when the lock is released or the timeout
//! passes; a wait that cannot be made pauses briefly and lets the command be retried.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use strata_proto::internal::v1 as pb;

use super::codec::{self, CallError};
use super::remote::{unary, Connections};
use super::{LeaderLocator, NodeAddr};
use crate::lsm;
use crate::mvcc::{MvccError, Result, ScanLimit, ScanPage, Timestamp};
use crate::raftstore::{ShardEpoch, ShardId};
use crate::txn::actions::{Mutation, PrewriteOptions, TxnStatus};
use crate::txn::range_locks::KeyRange;
use crate::txn::shard_client::{
    BlindFuture, LatestFuture, LockWait, RemoteWait, ShardClient, WaitFuture,
};
use crate::txn::{BlindWrite, LatestRead, LatestReads, Storage};

mod attempts;
mod forward;

use attempts::Attempts;
use forward::{Forward, Forwards, ReadForward};

/// A wait that could not be made pauses this long before the command is retried.
const FAILED_WAIT_PAUSE: Duration = Duration::from_millis(20);

/// Hints followed at once, without a pause, per command: nodes that disagree on who leads
/// (during an election) must not bounce a command between them at full speed.
const MAX_HOPS: u32 = 3;

/// Timings of the router (and of the routed oracle).
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// How long one remote call may take before its answer counts as lost.
    pub rpc_timeout: Duration,
    /// How long a command is retried (other nodes, re-sends) before the router gives up.
    pub retry_deadline: Duration,
    /// The first pause between retries; it doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// The longest pause between retries.
    pub max_backoff: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            rpc_timeout: Duration::from_secs(3),
            retry_deadline: Duration::from_secs(5),
            min_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(200),
        }
    }
}

/// What the router counted (tests and metrics).
#[derive(Debug, Default)]
pub struct RouterStats {
    /// Commands run on this node's replica.
    pub local: AtomicU64,
    /// Calls sent to other nodes.
    pub remote: AtomicU64,
    /// `NotLeader` hints followed to another node.
    pub hints_followed: AtomicU64,
    /// Calls sent again after their answer was lost.
    pub resent: AtomicU64,
    /// Blind writes queued to be forwarded to the leader (D160).
    pub forwarded: AtomicU64,
    /// Batches of them sent.
    pub forward_batches: AtomicU64,
    /// Calls of latest reads queued to be forwarded to the leader (D162).
    pub forwarded_reads: AtomicU64,
    /// Batches of them sent.
    pub read_batches: AtomicU64,
}

/// Whether a command may be sent again after its answer was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resend {
    /// Idempotent and without effect: re-send; a lost answer at the end is "unreachable".
    Read,
    /// Idempotent with an effect: re-send; a lost answer at the end is `OutcomeUnknown`.
    Write,
    /// Idempotent, but an error answer after a lost answer settles nothing: the lost
    /// attempt may still be carried out later (a one-phase commit refused for a lock that
    /// is then released). Re-send; once an answer was lost, only success is returned as
    /// such, every error becomes `OutcomeUnknown`.
    Decisive,
    /// Not safe to re-send after a lost answer: `OutcomeUnknown` at once.
    Never,
}

/// Where one attempt of a command runs.
pub(crate) enum Target {
    /// This node, which leads.
    Local,
    /// Another node's shard service, under this header.
    Remote(Box<RemoteTarget>),
}

/// A remote shard service and the header of requests to it.
#[derive(Clone)]
pub(crate) struct RemoteTarget {
    pub(crate) node_id: u64,
    pub(crate) client:
        strata_proto::internal::v1::shard_client::ShardClient<tonic::transport::Channel>,
    pub(crate) header: pb::ShardHeader,
}

/// What the retry loop needs from a router-like client (the shard router and the routed
/// oracle share it).
pub(crate) struct Routing<'a> {
    pub(crate) node_id: u64,
    pub(crate) shard: ShardId,
    pub(crate) locator: &'a dyn LeaderLocator,
    pub(crate) connections: &'a Connections,
    pub(crate) config: &'a RouterConfig,
    pub(crate) epoch: &'a Mutex<Option<ShardEpoch>>,
    pub(crate) stats: &'a RouterStats,
}

impl Routing<'_> {
    /// The header of a request to the shard now.
    fn header(&self) -> pb::ShardHeader {
        let epoch = self
            .epoch
            .lock()
            .or_else(|| self.locator.local_epoch(self.shard))
            .unwrap_or_default();
        pb::ShardHeader {
            shard_id: self.shard.0,
            conf_ver: epoch.conf_ver,
            version: epoch.version,
            from_node_id: self.node_id,
        }
    }

    /// Where the next attempt goes: the hinted node, else this replica if it leads and is
    /// ready, else the leader the locator names.
    pub(crate) fn target(&self, hint: Option<u64>) -> std::result::Result<Target, CallError> {
        let hinted = hint.filter(|&n| n != self.node_id).and_then(|node_id| {
            let addr = self.locator.address(node_id)?;
            Some(NodeAddr { node_id, addr })
        });
        let leader = match hinted {
            Some(leader) => leader,
            None => {
                if self.locator.local_leader_ready(self.shard) {
                    return Ok(Target::Local);
                }
                match self.locator.leader(self.shard) {
                    Some(leader) if leader.node_id != self.node_id => leader,
                    Some(_) => {
                        return Err(CallError::NotSent(format!(
                            "{}: this node leads it but is not ready yet",
                            self.shard
                        )))
                    }
                    None => {
                        return Err(CallError::NotSent(format!(
                            "{}: no leader known",
                            self.shard
                        )))
                    }
                }
            }
        };
        let client = self.connections.client(leader.node_id, &leader.addr)?;
        Ok(Target::Remote(Box::new(RemoteTarget {
            node_id: leader.node_id,
            client,
            header: self.header(),
        })))
    }

    /// Runs one command: `call` is one attempt at a target. See the module documentation.
    pub(crate) fn route<T>(
        &self,
        resend: Resend,
        mut call: impl FnMut(Target) -> std::result::Result<T, CallError>,
    ) -> std::result::Result<T, CallError> {
        let mut attempts = Attempts::new(self.config, resend);
        loop {
            let result = attempts.target(self).and_then(&mut call);
            match result {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if let Some(pause) = attempts.failed(self, e)? {
                        std::thread::sleep(pause);
                    }
                }
            }
        }
    }

    /// [`route`](Self::route) for an asynchronous `call`, pausing without a thread.
    pub(crate) async fn route_async<T, F>(
        &self,
        resend: Resend,
        mut call: impl FnMut(Target) -> F,
    ) -> std::result::Result<T, CallError>
    where
        F: Future<Output = std::result::Result<T, CallError>>,
    {
        let mut attempts = Attempts::new(self.config, resend);
        loop {
            let result = match attempts.target(self) {
                Ok(target) => call(target).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if let Some(pause) = attempts.failed(self, e)? {
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        }
    }

    /// Runs a remote call from this (blocking) thread.
    pub(crate) fn block<T, F>(&self, fut: F) -> std::result::Result<T, CallError>
    where
        T: Send + 'static,
        F: Future<Output = std::result::Result<T, CallError>> + Send + 'static,
    {
        self.connections.block(self.config.rpc_timeout, fut)
    }
}

/// A call error in words.
pub(crate) fn describe(e: &CallError) -> String {
    match e {
        CallError::Mvcc(e) => e.to_string(),
        CallError::Tso(e) => e.to_string(),
        CallError::NotLeader { shard, leader } => {
            format!("shard {shard}: not the leader (leader: {leader:?})")
        }
        CallError::EpochNotMatch(epoch) => format!("epoch not match (current {epoch:?})"),
        CallError::ShardNotFound => "no such shard there".into(),
        CallError::Invalid(m) => format!("refused as malformed: {m}"),
        CallError::NotSent(m) => format!("not sent: {m}"),
        CallError::Lost(m) => format!("answer lost: {m}"),
    }
}

/// The storage error a router's final [`CallError`] stands for, for a command of kind
/// `resend` on `shard`.
fn to_mvcc(e: CallError, shard: ShardId, resend: Resend) -> MvccError {
    match e {
        CallError::Mvcc(e) => e,
        CallError::NotLeader { shard, leader } => MvccError::NotLeader { shard, leader },
        CallError::Lost(m) if resend != Resend::Read => MvccError::OutcomeUnknown(m),
        // Nothing was done (or a read's answer was lost): the leader could not be reached.
        CallError::Lost(_)
        | CallError::EpochNotMatch(_)
        | CallError::ShardNotFound
        | CallError::NotSent(_) => {
            tracing::debug!(%shard, error = %describe(&e), "gave up reaching the shard's leader");
            MvccError::NotLeader {
                shard: shard.0,
                leader: None,
            }
        }
        CallError::Invalid(m) => MvccError::Engine(lsm::Error::InvalidArgument(format!(
            "the shard service refused the request: {m}"
        ))),
        CallError::Tso(e) => MvccError::Unavailable(e.to_string()),
    }
}

/// The coordinator's [`ShardClient`] on a gateway; see the module documentation.
#[derive(Debug)]
pub struct ShardRouter {
    node_id: u64,
    shard: ShardId,
    local: Arc<Storage>,
    locator: Arc<dyn LeaderLocator>,
    connections: Arc<Connections>,
    config: RouterConfig,
    /// The shard's epoch as the leader last told it (`None`: this replica's).
    epoch: Mutex<Option<ShardEpoch>>,
    stats: RouterStats,
    forwards: Forwards<Forward>,
    read_forwards: Forwards<ReadForward>,
}

impl ShardRouter {
    /// A router for `shard`, on node `node_id` whose replica of it is `local`; leaders
    /// come from `locator`, channels from `connections`.
    pub fn new(
        node_id: u64,
        shard: ShardId,
        local: Arc<Storage>,
        locator: Arc<dyn LeaderLocator>,
        connections: Arc<Connections>,
        config: RouterConfig,
    ) -> ShardRouter {
        ShardRouter {
            node_id,
            shard,
            local,
            locator,
            connections,
            config,
            epoch: Mutex::new(None),
            stats: RouterStats::default(),
            forwards: Forwards::default(),
            read_forwards: Forwards::default(),
        }
    }

    /// What the router counted.
    pub fn stats(&self) -> &RouterStats {
        &self.stats
    }

    fn routing(&self) -> Routing<'_> {
        Routing {
            node_id: self.node_id,
            shard: self.shard,
            locator: &*self.locator,
            connections: &self.connections,
            config: &self.config,
            epoch: &self.epoch,
            stats: &self.stats,
        }
    }

    /// Runs a command: `local` on this replica, `remote` (a call to build from a target)
    /// on the leader.
    fn run<T, L, R, F>(&self, resend: Resend, local: L, remote: R) -> Result<T>
    where
        T: Send + 'static,
        L: Fn(&Storage) -> Result<T>,
        R: Fn(RemoteTarget) -> F,
        F: Future<Output = std::result::Result<T, CallError>> + Send + 'static,
    {
        let routing = self.routing();
        let timeout = self.config.rpc_timeout;
        routing
            .route(resend, |target| match target {
                Target::Local => local(&self.local).map_err(CallError::from_mvcc),
                Target::Remote(r) => routing.block(with_timeout(timeout, remote(*r))),
            })
            .map_err(|e| to_mvcc(e, self.shard, resend))
    }
}

/// `fut`, lost if it takes longer than `timeout`.
async fn with_timeout<T>(
    timeout: Duration,
    fut: impl Future<Output = std::result::Result<T, CallError>>,
) -> std::result::Result<T, CallError> {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| {
            Err(CallError::Lost(format!(
                "no answer within {} ms",
                timeout.as_millis()
            )))
        })
}

fn bytes(b: &[u8]) -> Bytes {
    Bytes::copy_from_slice(b)
}

impl ShardClient for ShardRouter {
    fn get(&self, key: &[u8], ts: Timestamp, bypass: &[Timestamp]) -> Result<Option<Vec<u8>>> {
        let shard = self.shard.0;
        let timeout = self.config.rpc_timeout;
        self.run(
            Resend::Read,
            |s| s.get(key, ts, bypass),
            |mut r| {
                let req = pb::ShardGetRequest {
                    header: Some(r.header),
                    key: bytes(key),
                    ts,
                    bypass: bypass.to_vec(),
                };
                async move {
                    let resp = unary(timeout, r.client.get(req)).await?;
                    codec::check(resp.error, shard)?;
                    Ok(resp.found.then(|| resp.value.to_vec()))
                }
            },
        )
    }

    fn scan_page(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: ScanLimit,
        ts: Timestamp,
        reverse: bool,
        bypass: &[Timestamp],
    ) -> Result<ScanPage> {
        let shard = self.shard.0;
        let timeout = self.config.rpc_timeout;
        self.run(
            Resend::Read,
            |s| s.scan_page(start, end, limit, ts, reverse, bypass),
            |mut r| {
                let req = pb::ScanPageRequest {
                    header: Some(r.header),
                    range: Some(pb::KeyRange {
                        start: bytes(start),
                        end: end.map(bytes),
                    }),
                    limit_pairs: u64::try_from(limit.pairs).unwrap_or(u64::MAX),
                    limit_bytes: u64::try_from(limit.bytes).unwrap_or(u64::MAX),
                    ts,
                    reverse,
                    bypass: bypass.to_vec(),
                };
                async move {
                    let resp = unary(timeout, r.client.scan_page(req)).await?;
                    codec::check(resp.error, shard)?;
                    Ok(codec::page_from_pb(resp.pairs, resp.more))
                }
            },
        )
    }

    fn prewrite(
        &self,
        mutations: &[Mutation],
        options: &PrewriteOptions,
        start_ts: Timestamp,
    ) -> Result<()> {
        let shard = self.shard.0;
        let timeout = self.config.rpc_timeout;
        // Built once; each attempt sends a copy under its own header.
        let base = pb::PrewriteRequest {
            header: None,
            start_ts,
            mutations: mutations.iter().map(codec::mutation_to_pb).collect(),
            primary: bytes(&options.primary),
            ttl_ms: options.ttl_ms,
            min_commit_ts: options.min_commit_ts,
            coordinator: options.coordinator.as_ref().map(codec::coordinator_to_pb),
        };
        self.run(
            Resend::Write,
            |s| s.prewrite(mutations, options, start_ts),
            |mut r| {
                let mut req = base.clone();
                req.header = Some(r.header);
                async move {
                    let resp = unary(timeout, r.client.prewrite(req)).await?;
                    codec::check(resp.error, shard)
                }
            },
        )
    }

    fn commit(
        &self,
        keys: &[Vec<u8>],
        start_ts: Timestamp,
        commit_ts: Timestamp,
        range_lock_term: Option<u64>,
    ) -> Result<()> {
        let shard = self.shard.0;
        let timeout = self.config.rpc_timeout;
        self.run(
            Resend::Write,
            |s| s.commit_guarded(keys, start_ts, commit_ts, range_lock_term),
            |mut r| {
                let req = pb::ShardCommitRequest {
                    header: Some(r.header),
                    keys: codec::keys_to_pb(keys),
                    start_ts,
                    commit_ts,
                    range_lock_term,
                };
                async move {
                    let resp = unary(timeout, r.client.commit(req)).await?;
                    codec::check(resp.error, shard)
                }
            },
        )
    }

    fn one_pc(
        &self,
        mutations: &[Mutation],
        start_ts: Timestamp,
        range_lock_term: Option<u64>,
    ) -> Result<Timestamp> {
        let shard = self.shard.0;
        let timeout = self.config.rpc_timeout;
        let base = pb::OnePcRequest {
            header: None,
            start_ts,
            mutations: mutations.iter().map(codec::mutation_to_pb).collect(),
            range_lock_term,
        };
        self.run(
            Resend::Decisive,
            |s| s.one_pc(mutations, start_ts, range_lock_term),
            |mut r| {
                let mut req = base.clone();
                req.header = Some(r.header);
                async move {
                    let resp = unary(timeout, r.client.one_pc(req)).await?;
                    codec::check(resp.error, shard)?;
                    Ok(resp.commit_ts)
                }
            },
        )
    }

    fn rollback(&self, keys: &[Vec<u8>], start_ts: Timestamp) -> Result<()> {
        let shard = self.shard.0;
        let timeout = self.config.rpc_timeout;
        self.run(
            Resend::Write,
            |s| s.rollback(keys, start_ts),
            |mut r| {
                let req = pb::ShardRollbackRequest {
                    header: Some(r.header),
                    keys: codec::keys_to_pb(keys),
                    start_ts,
                };
                async move {
                    let resp = unary(timeout, r.client.rollback(req)).await?;
                    codec::check(resp.error, shard)
                }
            },
        )
    }

    fn check_txn_status(
        &self,
        primary: &[u8],
        start_ts: Timestamp,
        current_ts: Timestamp,
        push_to: Option<Timestamp>,
    ) -> Result<TxnStatus> {
        let shard = self.shard.0;
        let timeout = self.config.rpc_timeout;
        self.run(
            Resend::Read,
            |s| s.check_txn_status(primary, start_ts, current_ts, push_to),
            |mut r| {
                let req = pb::CheckTxnStatusRequest {
                    header: Some(r.header),
                    primary: bytes(primary),
                    start_ts,
                    current_ts,
                    push_to,
                };
                async move {
                    let resp = unary(timeout, r.client.check_txn_status(req)).await?;
                    codec::check(resp.error, shard)?;
                    codec::status_from_pb(resp.status)
                }
            },
        )
    }

    fn heartbeat(&self, primary: &[u8], start_ts: Timestamp, ttl_ms: u64) -> Result<Option<u64>> {
        let shard = self.shard.0;
        let timeout = self.config.rpc_timeout;
        self.run(
            Resend::Write,
            |s| s.heartbeat(primary, start_ts, ttl_ms),
            |mut r| {
                let req = pb::ShardHeartbeatRequest {
                    header: Some(r.header),
                    primary: bytes(primary),
                    start_ts,
                    ttl_ms,
                };
                async move {
                    let resp = unary(timeout, r.client.heartbeat(req)).await?;
                    codec::check(resp.error, shard)?;
                    Ok(resp.ttl_ms)
                }
            },
        )
    }

    fn resolve_lock(
        &self,
        keys: &[Vec<u8>],
        start_ts: Timestamp,
        commit_ts: Option<Timestamp>,
    ) -> Result<()> {
        let shard = self.shard.0;
        let timeout = self.config.rpc_timeout;
        self.run(
            Resend::Write,
            |s| s.resolve_lock(keys, start_ts, commit_ts),
            |mut r| {
                let req = pb::ResolveLockRequest {
                    header: Some(r.header),
                    keys: codec::keys_to_pb(keys),
                    start_ts,
                    commit_ts,
                };
                async move {
                    let resp = unary(timeout, r.client.resolve_lock(req)).await?;
                    codec::check(resp.error, shard)
                }
            },
        )
    }

    fn check_ranges(&self, ranges: &[KeyRange], start_ts: Timestamp) -> Result<()> {
        let shard = self.shard.0;
        let timeout = self.config.rpc_timeout;
        self.run(
            Resend::Read,
            |s| s.check_ranges(ranges, start_ts),
            |mut r| {
                let req = pb::CheckRangesRequest {
                    header: Some(r.header),
                    ranges: ranges.iter().map(codec::range_to_pb).collect(),
                    start_ts,
                };
                async move {
                    let resp = unary(timeout, r.client.check_ranges(req)).await?;
                    codec::check(resp.error, shard)
                }
            },
        )
    }

    fn oldest_lock_ts(&self) -> Result<Option<Timestamp>> {
        let shard = self.shard.0;
        let timeout = self.config.rpc_timeout;
        self.run(
            Resend::Read,
            |s| s.oldest_lock_ts(),
            |mut r| {
                let req = pb::OldestLockTsRequest {
                    header: Some(r.header),
                };
                async move {
                    let resp = unary(timeout, r.client.oldest_lock_ts(req)).await?;
                    codec::check(resp.error, shard)?;
                    Ok(resp.start_ts)
                }
            },
        )
    }

    fn lock_ranges(&self, owner: Timestamp, ranges: &[KeyRange], lease: Duration) -> Result<u64> {
        let shard = self.shard.0;
        let timeout = self.config.rpc_timeout;
        self.run(
            Resend::Never,
            |s| s.lock_ranges(owner, ranges, lease),
            |mut r| {
                let req = pb::LockRangesRequest {
                    header: Some(r.header),
                    owner,
                    ranges: ranges.iter().map(codec::range_to_pb).collect(),
                    lease_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
                };
                async move {
                    let resp = unary(timeout, r.client.lock_ranges(req)).await?;
                    codec::check(resp.error, shard)?;
                    Ok(resp.term)
                }
            },
        )
    }

    fn unlock_ranges(&self, owner: Timestamp) {
        let routing = self.routing();
        match routing.target(None) {
            Ok(Target::Local) => {
                self.local.unlock_ranges(owner);
                return;
            }
            Ok(Target::Remote(mut r)) => {
                let timeout = self.config.rpc_timeout;
                let req = pb::UnlockRangesRequest {
                    header: Some(r.header),
                    owner,
                };
                self.connections.spawn(async move {
                    if let Err(e) = unary(timeout, r.client.unlock_ranges(req)).await {
                        tracing::debug!(owner, error = %describe(&e), "releasing range locks failed; their lease ends them");
                    }
                });
            }
            Err(e) => {
                tracing::debug!(owner, error = %describe(&e), "releasing range locks: no leader; their lease ends them");
            }
        }
        // This replica may hold them from a term it led in: drop them here too.
        self.local.unlock_ranges(owner);
    }

    fn wait_for_lock(&self, prev: Option<LockWait>, key: &[u8], lock_ts: Timestamp) -> LockWait {
        match self.routing().target(None) {
            Ok(Target::Local) => LockWait::Local(
                self.local
                    .lock_waits()
                    .requeue(prev.and_then(LockWait::into_local), key),
            ),
            Ok(Target::Remote(r)) => LockWait::Remote(Box::new(LeaderWait {
                target: Some(*r),
                what: WaitFor::Lock {
                    key: key.to_vec(),
                    lock_ts,
                },
                connections: Arc::clone(&self.connections),
                rpc_timeout: self.config.rpc_timeout,
                shard: self.shard.0,
            })),
            Err(_) => LockWait::Remote(Box::new(LeaderWait {
                target: None,
                what: WaitFor::Lock {
                    key: key.to_vec(),
                    lock_ts,
                },
                connections: Arc::clone(&self.connections),
                rpc_timeout: self.config.rpc_timeout,
                shard: self.shard.0,
            })),
        }
    }

    fn wait_for_range_locks(&self, owner: Timestamp) -> Option<(LockWait, Option<Instant>)> {
        let target = match self.routing().target(None) {
            Ok(Target::Local) => {
                return self
                    .local
                    .wait_for_range_locks(owner)
                    .map(|(waiter, lapses)| (LockWait::Local(waiter), Some(lapses)));
            }
            Ok(Target::Remote(r)) => Some(*r),
            Err(_) => None,
        };
        // The leader answers at once if they are already released.
        Some((
            LockWait::Remote(Box::new(LeaderWait {
                target,
                what: WaitFor::RangeLocks { owner },
                connections: Arc::clone(&self.connections),
                rpc_timeout: self.config.rpc_timeout,
                shard: self.shard.0,
            })),
            None,
        ))
    }

    fn local_leader(&self) -> Option<&Storage> {
        self.locator
            .local_leader_ready(self.shard)
            .then_some(&*self.local)
    }

    /// On this replica when it leads (as a task of its own: once proposed, the write must
    /// not be cut short, see the shard service's `blind_writes`), else forwarded to the
    /// leader with the other blind writes of this gateway in flight (`Forwards`, D160).
    /// Never re-sent: the leader chooses the timestamp, so a second attempt would be a
    /// second write; a lost answer is `OutcomeUnknown` at once.
    fn blind_write(self: Arc<Self>, mutation: Mutation) -> Option<BlindFuture> {
        Some(Box::pin(async move {
            if self.locator.local_leader_ready(self.shard) {
                self.stats.local.fetch_add(1, Ordering::Relaxed);
                return self.local.spawn_blind_write(mutation).await;
            }
            let (reply, answer) = tokio::sync::oneshot::channel();
            let start = self.forwards.push(Forward { mutation, reply });
            self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
            if start {
                tokio::spawn(Arc::clone(&self).send_forwards());
            }
            answer.await.unwrap_or_else(|_| {
                Err(MvccError::OutcomeUnknown(
                    "the task forwarding the write ended without its answer".into(),
                ))
            })
        }))
    }

    /// On this replica when it leads, else forwarded to the leader with the other latest
    /// reads of this gateway in flight, in one `LatestReads` call (D162). Reads have no
    /// effect: a lost answer is sent again.
    fn latest_reads(self: Arc<Self>, keys: Vec<Vec<u8>>) -> Option<LatestFuture> {
        Some(Box::pin(async move {
            if self.locator.local_leader_ready(self.shard) {
                self.stats.local.fetch_add(1, Ordering::Relaxed);
                return Storage::latest_reads(&self.local, &keys).await;
            }
            let (reply, answer) = tokio::sync::oneshot::channel();
            let start = self.read_forwards.push(ReadForward { keys, reply });
            self.stats.forwarded_reads.fetch_add(1, Ordering::Relaxed);
            if start {
                tokio::spawn(Arc::clone(&self).send_read_forwards());
            }
            answer.await.unwrap_or_else(|_| {
                Err(MvccError::Unavailable(
                    "the task forwarding the reads ended without their answer".into(),
                ))
            })
        }))
    }
}

/// What a remote wait waits for.
#[derive(Debug, Clone)]
enum WaitFor {
    Lock { key: Vec<u8>, lock_ts: Timestamp },
    RangeLocks { owner: Timestamp },
}

/// A long poll at the leader (or, with no leader to ask, a short pause).
struct LeaderWait {
    target: Option<RemoteTarget>,
    what: WaitFor,
    connections: Arc<Connections>,
    rpc_timeout: Duration,
    shard: u64,
}

impl std::fmt::Debug for LeaderWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderWait")
            .field("node", &self.target.as_ref().map(|t| t.node_id))
            .field("what", &self.what)
            .finish()
    }
}

impl LeaderWait {
    /// The poll, as a future that owns what it needs.
    fn poll_future(&self, deadline: Instant) -> impl Future<Output = bool> + Send + 'static {
        let target = self.target.clone();
        let what = self.what.clone();
        let shard = self.shard;
        let rpc_margin = self.rpc_timeout;
        async move {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
            let answer = match target {
                None => Err(CallError::NotSent("no leader known".into())),
                Some(mut r) => {
                    let header = Some(r.header);
                    let limit = left.saturating_add(rpc_margin);
                    let resp = match what {
                        WaitFor::Lock { key, lock_ts } => {
                            let req = pb::WaitForLockRequest {
                                header,
                                key: Bytes::from(key),
                                lock_ts,
                                timeout_ms,
                            };
                            unary(limit, r.client.wait_for_lock(req)).await
                        }
                        WaitFor::RangeLocks { owner } => {
                            let req = pb::WaitForRangeLocksRequest {
                                header,
                                owner,
                                timeout_ms,
                            };
                            unary(limit, r.client.wait_for_range_locks(req)).await
                        }
                    };
                    resp.and_then(|resp| codec::check(resp.error, shard).map(|()| resp.released))
                }
            };
            match answer {
                Ok(released) => released,
                Err(_) => {
                    // Retry the command soon: it finds out what changed.
                    tokio::time::sleep(FAILED_WAIT_PAUSE.min(left)).await;
                    true
                }
            }
        }
    }
}

impl RemoteWait for LeaderWait {
    fn wait(&self, deadline: Instant) -> WaitFuture<'_> {
        Box::pin(self.poll_future(deadline))
    }

    fn wait_blocking(&self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        let fut = self.poll_future(deadline);
        self.connections
            .block(left.saturating_add(self.rpc_timeout), async move {
                Ok(fut.await)
            })
            .unwrap_or(true)
    }
}
