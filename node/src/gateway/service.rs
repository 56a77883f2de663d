//! [`ShardService`]: the internal `Shard` service, a shard leader's side of the gateway.
//!
//! Every request is admitted first, on the async thread and without touching the engine:
//! its header must name the shard this node serves, under the epoch of this node's replica,
//! and this replica must lead the shard and be ready; otherwise the answer is a refusal
//! (`shard_not_found`, `epoch_not_match` with the current epoch, `not_leader` with the
//! leader the locator believes in) and nothing is done. The service never forwards a
//! command to another node: the caller follows the hint, so no call waits on another call.
//! (The replica's `ShardWriter` checks leadership again, authoritatively, when the command
//! runs: a replica that lost its lead in between answers `NotLeader` from there.)
//!
//! An admitted command runs on tokio's blocking pool against the local [`Storage`] or the
//! local oracle, and its result, error or not, travels in the reply (`error`): a gRPC status
//! other than OK only ever means the call broke on the way.
//!
//! The two waits are long polls that hold no thread while they wait: the request enqueues
//! in the replica's queue first, then checks (on the blocking pool) that the lock is still
//! held by the transaction named, and answers at once if it is not; otherwise it sleeps as a
//! future until the release wakes it or the timeout (at most [`MAX_WAIT`]) passes. Enqueued
//! before the check, a release after the check always finds it.
//!
//! A [`ServiceHook`] lets tests act between a command and its reply (hold a command back,
//! drop a reply that was carried out).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use strata_proto::internal::v1 as pb;
use strata_proto::internal::v1::shard_server::{Shard, ShardServer};
use tonic::{Request, Response, Status};

use super::codec;
use super::remote::INTERNAL_MESSAGE_BYTES;
use super::LeaderLocator;
use crate::mvcc::MvccError;
use crate::mvcc::ScanLimit;
use crate::raftstore::ShardId;
use crate::tso::Tso;
use crate::txn::{BlindWrite, LatestRead, LatestReads, Storage};

/// The longest a wait request is held, whatever timeout it asks for.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// A test seam between a command and its reply.
pub trait ServiceHook: Send + Sync + Debug {
    /// Called on the blocking pool before the admitted command `method` runs.
    fn before(&self, method: &'static str) {
        let _ = method;
    }

    /// Called after `method` ran; `true` drops its reply (the caller sees a broken call
    /// although the command was carried out).
    fn drop_reply(&self, method: &'static str) -> bool {
        let _ = method;
        false
    }
}

/// The shard leader's side of the gateway; see the module documentation.
#[derive(Debug, Clone)]
pub struct ShardService {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: u64,
    shard: ShardId,
    storage: Arc<Storage>,
    tso: Arc<dyn Tso>,
    locator: Arc<dyn LeaderLocator>,
    hook: Mutex<Option<Arc<dyn ServiceHook>>>,
    calls: Mutex<HashMap<&'static str, u64>>,
}

impl Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardService")
            .field("node_id", &self.node_id)
            .field("shard", &self.shard)
            .field("locator", &self.locator)
            .finish()
    }
}

/// The tonic service for `shard` on node `node_id`, over its replica `storage` and the
/// node's own oracle `tso` (never a routed one: the service does not forward), ready to be
/// added to the internal port's server.
pub fn shard_service(
    node_id: u64,
    shard: ShardId,
    storage: Arc<Storage>,
    tso: Arc<dyn Tso>,
    locator: Arc<dyn LeaderLocator>,
) -> ShardServer<ShardService> {
    ShardService::new(node_id, shard, storage, tso, locator).into_server()
}

/// A reply type: each has an `error` field.
trait Reply: Default + Send + 'static {
    fn with_error(error: pb::ShardError) -> Self;
}

macro_rules! replies {
    ($($t:ty),* $(,)?) => {
        $(impl Reply for $t {
            fn with_error(error: pb::ShardError) -> Self {
                let mut reply = Self::default();
                reply.error = Some(error);
                reply
            }
        })*
    };
}

replies!(
    pb::ShardGetResponse,
    pb::ScanPageResponse,
    pb::PrewriteResponse,
    pb::ShardCommitResponse,
    pb::OnePcResponse,
    pb::BlindWriteResponse,
    pb::ShardRollbackResponse,
    pb::CheckTxnStatusResponse,
    pb::ShardHeartbeatResponse,
    pb::ResolveLockResponse,
    pb::CheckRangesResponse,
    pb::OldestLockTsResponse,
    pb::LockRangesResponse,
    pb::UnlockRangesResponse,
    pb::WaitResponse,
    pb::GetTimestampsResponse,
);

type Outcome<R> = Result<R, pb::ShardError>;

fn mvcc<T>(r: crate::mvcc::Result<T>) -> Outcome<T> {
    r.map_err(|e| codec::mvcc_error_to_pb(&e))
}

fn usize_of(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl ShardService {
    /// The service (see [`shard_service`]).
    pub fn new(
        node_id: u64,
        shard: ShardId,
        storage: Arc<Storage>,
        tso: Arc<dyn Tso>,
        locator: Arc<dyn LeaderLocator>,
    ) -> ShardService {
        ShardService {
            inner: Arc::new(Inner {
                node_id,
                shard,
                storage,
                tso,
                locator,
                hook: Mutex::new(None),
                calls: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Puts `hook` between the commands and their replies from now on (`None` removes it).
    pub fn set_hook(&self, hook: Option<Arc<dyn ServiceHook>>) {
        *self.inner.hook.lock() = hook;
    }

    /// How many requests of `method` (the RPC's name in snake case) arrived.
    pub fn calls(&self, method: &str) -> u64 {
        self.inner.calls.lock().get(method).copied().unwrap_or(0)
    }

    /// The tonic server of this service, with the internal port's message limits.
    pub fn into_server(self) -> ShardServer<ShardService> {
        ShardServer::new(self)
            .max_decoding_message_size(INTERNAL_MESSAGE_BYTES)
            .max_encoding_message_size(INTERNAL_MESSAGE_BYTES)
    }

    /// Refuses a request this node must not serve; see the module documentation.
    fn admit(&self, header: Option<&pb::ShardHeader>) -> Outcome<()> {
        let inner = &self.inner;
        let header = header.ok_or_else(|| codec::invalid_request("the request has no header"))?;
        if header.shard_id != inner.shard.0 {
            return Err(codec::shard_not_found(header.shard_id));
        }
        let epoch = inner
            .locator
            .local_epoch(inner.shard)
            .ok_or_else(|| codec::shard_not_found(header.shard_id))?;
        if (header.conf_ver, header.version) != (epoch.conf_ver, epoch.version) {
            return Err(codec::epoch_not_match(epoch));
        }
        if !inner.locator.local_leader_ready(inner.shard) {
            let leader = inner
                .locator
                .leader(inner.shard)
                .map(|l| l.node_id)
                .filter(|&n| n != inner.node_id);
            return Err(codec::not_leader(inner.shard.0, leader));
        }
        Ok(())
    }

    fn count(&self, method: &'static str) {
        *self.inner.calls.lock().entry(method).or_insert(0) += 1;
    }

    /// Admits a request, runs `work` on the blocking pool, and replies.
    async fn serve<R: Reply>(
        &self,
        method: &'static str,
        header: Option<pb::ShardHeader>,
        work: impl FnOnce(&Inner) -> Outcome<R> + Send + 'static,
    ) -> Result<Response<R>, Status> {
        self.count(method);
        if let Err(e) = self.admit(header.as_ref()) {
            tracing::debug!(
                method,
                from = header.map(|h| h.from_node_id),
                "shard request refused"
            );
            return Ok(Response::new(R::with_error(e)));
        }
        let inner = Arc::clone(&self.inner);
        let hook = self.inner.hook.lock().clone();
        let (reply, dropped) = tokio::task::spawn_blocking(move || {
            if let Some(hook) = &hook {
                hook.before(method);
            }
            let reply = work(&inner).unwrap_or_else(R::with_error);
            let dropped = hook.as_ref().is_some_and(|h| h.drop_reply(method));
            (reply, dropped)
        })
        .await
        .map_err(|e| Status::internal(format!("shard command task failed: {e}")))?;
        if dropped {
            return Err(Status::unavailable("the reply was dropped (test hook)"));
        }
        Ok(Response::new(reply))
    }

    /// Admits a blind write request (counted as `method`) and runs the test hook's
    /// `before` on the blocking pool; the inner error is the refusal to send.
    async fn admit_blind(
        &self,
        method: &'static str,
        header: Option<&pb::ShardHeader>,
    ) -> Result<Outcome<()>, Status> {
        self.count(method);
        if let Err(e) = self.admit(header) {
            return Ok(Err(e));
        }
        let hook = self.inner.hook.lock().clone();
        if let Some(h) = hook {
            tokio::task::spawn_blocking(move || h.before(method))
                .await
                .map_err(|e| Status::internal(format!("shard command hook failed: {e}")))?;
        }
        Ok(Ok(()))
    }

    /// Sends `reply`, unless the test hook drops it.
    fn reply_blind<R>(&self, method: &'static str, reply: R) -> Result<Response<R>, Status> {
        let hook = self.inner.hook.lock().clone();
        if hook.is_some_and(|h| h.drop_reply(method)) {
            return Err(Status::unavailable("the reply was dropped (test hook)"));
        }
        Ok(Response::new(reply))
    }

    /// Admits a wait request; `None` if admitted, else the refusal to send.
    fn admit_wait(
        &self,
        method: &'static str,
        header: Option<&pb::ShardHeader>,
    ) -> Option<Response<pb::WaitResponse>> {
        self.count(method);
        self.admit(header)
            .err()
            .map(|e| Response::new(pb::WaitResponse::with_error(e)))
    }
}

/// The answer to one blind write at this leader (see `Shard::blind_writes`).
fn blind_reply(outcome: crate::mvcc::Result<BlindWrite>) -> pb::BlindWriteResponse {
    match outcome {
        Ok(BlindWrite::Committed(ts)) => pb::BlindWriteResponse { error: None, ts },
        Ok(BlindWrite::Declined(why)) => pb::BlindWriteResponse::with_error(
            codec::mvcc_error_to_pb(&MvccError::OnePcRefused(why.into())),
        ),
        Ok(BlindWrite::Unknown { ts, reason }) => pb::BlindWriteResponse {
            error: Some(codec::mvcc_error_to_pb(&MvccError::OutcomeUnknown(reason))),
            ts,
        },
        Err(e) => pb::BlindWriteResponse::with_error(codec::mvcc_error_to_pb(&e)),
    }
}

/// One key's answer of `Shard::latest_reads`.
fn latest_read_to_pb(read: LatestRead) -> pb::LatestRead {
    match read {
        LatestRead::Value(v) => pb::LatestRead {
            declined: String::new(),
            found: v.is_some(),
            value: v.map(Bytes::from).unwrap_or_default(),
        },
        LatestRead::Declined(why) => pb::LatestRead {
            declined: why.into(),
            ..Default::default()
        },
    }
}

fn wait_deadline(timeout_ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(timeout_ms).min(MAX_WAIT)
}

#[tonic::async_trait]
impl Shard for ShardService {
    async fn get(
        &self,
        request: Request<pb::ShardGetRequest>,
    ) -> Result<Response<pb::ShardGetResponse>, Status> {
        let req = request.into_inner();
        let header = req.header;
        self.serve("get", header, move |inner| {
            let value = mvcc(inner.storage.get(&req.key, req.ts, &req.bypass))?;
            Ok(pb::ShardGetResponse {
                error: None,
                found: value.is_some(),
                value: value.map(Bytes::from).unwrap_or_default(),
            })
        })
        .await
    }

    async fn scan_page(
        &self,
        request: Request<pb::ScanPageRequest>,
    ) -> Result<Response<pb::ScanPageResponse>, Status> {
        let req = request.into_inner();
        let header = req.header;
        self.serve("scan_page", header, move |inner| {
            let range = req
                .range
                .ok_or_else(|| codec::invalid_request("a scan without a range"))?;
            let (start, end) = codec::range_from_pb(range);
            let limit = ScanLimit {
                pairs: usize_of(req.limit_pairs),
                bytes: usize_of(req.limit_bytes),
            };
            let page = mvcc(inner.storage.scan_page(
                &start,
                end.as_deref(),
                limit,
                req.ts,
                req.reverse,
                &req.bypass,
            ))?;
            let (pairs, more) = codec::page_to_pb(page);
            Ok(pb::ScanPageResponse {
                error: None,
                pairs,
                more,
            })
        })
        .await
    }

    async fn prewrite(
        &self,
        request: Request<pb::PrewriteRequest>,
    ) -> Result<Response<pb::PrewriteResponse>, Status> {
        let mut req = request.into_inner();
        let header = req.header.take();
        self.serve("prewrite", header, move |inner| {
            let options = codec::prewrite_options_from_pb(&req);
            let mutations = std::mem::take(&mut req.mutations)
                .into_iter()
                .map(codec::mutation_from_pb)
                .collect::<Outcome<Vec<_>>>()?;
            mvcc(inner.storage.prewrite(&mutations, &options, req.start_ts))?;
            Ok(pb::PrewriteResponse::default())
        })
        .await
    }

    async fn one_pc(
        &self,
        request: Request<pb::OnePcRequest>,
    ) -> Result<Response<pb::OnePcResponse>, Status> {
        let mut req = request.into_inner();
        let header = req.header.take();
        self.serve("one_pc", header, move |inner| {
            let mutations = std::mem::take(&mut req.mutations)
                .into_iter()
                .map(codec::mutation_from_pb)
                .collect::<Outcome<Vec<_>>>()?;
            let commit_ts = mvcc(inner.storage.one_pc(
                &mutations,
                req.start_ts,
                req.range_lock_term,
            ))?;
            Ok(pb::OnePcResponse {
                error: None,
                commit_ts,
            })
        })
        .await
    }

    /// Not through `serve`: each write runs on the runtime, holding no thread while it
    /// commits (D157), as a task of its own, so that a caller giving up cannot cut it short
    /// between its proposal and its apply (its latch and memory lock are held until the
    /// apply). All of a batch's writes run at once (D160).
    async fn blind_writes(
        &self,
        request: Request<pb::BlindWritesRequest>,
    ) -> Result<Response<pb::BlindWritesResponse>, Status> {
        const METHOD: &str = "blind_writes";
        let req = request.into_inner();
        if let Err(e) = self.admit_blind(METHOD, req.header.as_ref()).await? {
            return Ok(Response::new(pb::BlindWritesResponse {
                error: Some(e),
                results: Vec::new(),
            }));
        }
        // The well-formed mutations are proposed together (D165); a malformed one is
        // answered on its own.
        let mut mutations = Vec::with_capacity(req.mutations.len());
        let malformed: Vec<_> = req
            .mutations
            .into_iter()
            .map(|m| match codec::mutation_from_pb(m) {
                Ok(m) => {
                    mutations.push(m);
                    None
                }
                Err(e) => Some(e),
            })
            .collect();
        let mut outcomes = self
            .inner
            .storage
            .spawn_blind_write_batch(mutations)
            .await
            .into_iter();
        let results = malformed
            .into_iter()
            .map(|m| match m {
                None => blind_reply(outcomes.next().unwrap_or_else(|| {
                    Err(MvccError::OutcomeUnknown("no answer for the write".into()))
                })),
                Some(e) => pb::BlindWriteResponse::with_error(e),
            })
            .collect();
        self.reply_blind(
            METHOD,
            pb::BlindWritesResponse {
                error: None,
                results,
            },
        )
    }

    /// Not through `serve`: the reads run on the runtime, holding no thread while the read
    /// barrier is passed (D162), all of a call's keys at one timestamp.
    async fn latest_reads(
        &self,
        request: Request<pb::LatestReadsRequest>,
    ) -> Result<Response<pb::LatestReadsResponse>, Status> {
        const METHOD: &str = "latest_reads";
        let req = request.into_inner();
        let refused = |error| pb::LatestReadsResponse {
            error: Some(error),
            ..Default::default()
        };
        if let Err(e) = self.admit_blind(METHOD, req.header.as_ref()).await? {
            return Ok(Response::new(refused(e)));
        }
        let keys: Vec<Vec<u8>> = req.keys.iter().map(|k| k.to_vec()).collect();
        let reply = match self.inner.storage.latest_reads(&keys).await {
            Ok(LatestReads::Read { ts, values }) => pb::LatestReadsResponse {
                error: None,
                declined: String::new(),
                read_ts: ts,
                results: values.into_iter().map(latest_read_to_pb).collect(),
            },
            Ok(LatestReads::Declined(why)) => pb::LatestReadsResponse {
                declined: why.into(),
                ..Default::default()
            },
            Err(e) => refused(codec::mvcc_error_to_pb(&e)),
        };
        self.reply_blind(METHOD, reply)
    }

    async fn commit(
        &self,
        request: Request<pb::ShardCommitRequest>,
    ) -> Result<Response<pb::ShardCommitResponse>, Status> {
        let req = request.into_inner();
        let header = req.header;
        self.serve("commit", header, move |inner| {
            let keys = codec::keys_from_pb(req.keys);
            mvcc(inner.storage.commit_guarded(
                &keys,
                req.start_ts,
                req.commit_ts,
                req.range_lock_term,
            ))?;
            Ok(pb::ShardCommitResponse::default())
        })
        .await
    }

    async fn rollback(
        &self,
        request: Request<pb::ShardRollbackRequest>,
    ) -> Result<Response<pb::ShardRollbackResponse>, Status> {
        let req = request.into_inner();
        let header = req.header;
        self.serve("rollback", header, move |inner| {
            let keys = codec::keys_from_pb(req.keys);
            mvcc(inner.storage.rollback(&keys, req.start_ts))?;
            Ok(pb::ShardRollbackResponse::default())
        })
        .await
    }

    async fn check_txn_status(
        &self,
        request: Request<pb::CheckTxnStatusRequest>,
    ) -> Result<Response<pb::CheckTxnStatusResponse>, Status> {
        let req = request.into_inner();
        let header = req.header;
        self.serve("check_txn_status", header, move |inner| {
            let status = mvcc(inner.storage.check_txn_status(
                &req.primary,
                req.start_ts,
                req.current_ts,
                req.push_to,
            ))?;
            Ok(pb::CheckTxnStatusResponse {
                error: None,
                status: Some(codec::status_to_pb(status)),
            })
        })
        .await
    }

    async fn heartbeat(
        &self,
        request: Request<pb::ShardHeartbeatRequest>,
    ) -> Result<Response<pb::ShardHeartbeatResponse>, Status> {
        let req = request.into_inner();
        let header = req.header;
        self.serve("heartbeat", header, move |inner| {
            let ttl_ms = mvcc(
                inner
                    .storage
                    .heartbeat(&req.primary, req.start_ts, req.ttl_ms),
            )?;
            Ok(pb::ShardHeartbeatResponse {
                error: None,
                ttl_ms,
            })
        })
        .await
    }

    async fn resolve_lock(
        &self,
        request: Request<pb::ResolveLockRequest>,
    ) -> Result<Response<pb::ResolveLockResponse>, Status> {
        let req = request.into_inner();
        let header = req.header;
        self.serve("resolve_lock", header, move |inner| {
            let keys = codec::keys_from_pb(req.keys);
            mvcc(
                inner
                    .storage
                    .resolve_lock(&keys, req.start_ts, req.commit_ts),
            )?;
            Ok(pb::ResolveLockResponse::default())
        })
        .await
    }

    async fn check_ranges(
        &self,
        request: Request<pb::CheckRangesRequest>,
    ) -> Result<Response<pb::CheckRangesResponse>, Status> {
        let req = request.into_inner();
        let header = req.header;
        self.serve("check_ranges", header, move |inner| {
            let ranges: Vec<_> = req.ranges.into_iter().map(codec::range_from_pb).collect();
            mvcc(inner.storage.check_ranges(&ranges, req.start_ts))?;
            Ok(pb::CheckRangesResponse::default())
        })
        .await
    }

    async fn oldest_lock_ts(
        &self,
        request: Request<pb::OldestLockTsRequest>,
    ) -> Result<Response<pb::OldestLockTsResponse>, Status> {
        let header = request.into_inner().header;
        self.serve("oldest_lock_ts", header, move |inner| {
            let start_ts = mvcc(inner.storage.oldest_lock_ts())?;
            Ok(pb::OldestLockTsResponse {
                error: None,
                start_ts,
            })
        })
        .await
    }

    async fn lock_ranges(
        &self,
        request: Request<pb::LockRangesRequest>,
    ) -> Result<Response<pb::LockRangesResponse>, Status> {
        let req = request.into_inner();
        let header = req.header;
        self.serve("lock_ranges", header, move |inner| {
            let ranges: Vec<_> = req.ranges.into_iter().map(codec::range_from_pb).collect();
            let lease = Duration::from_millis(req.lease_ms);
            let term = mvcc(inner.storage.lock_ranges(req.owner, &ranges, lease))?;
            Ok(pb::LockRangesResponse { error: None, term })
        })
        .await
    }

    async fn unlock_ranges(
        &self,
        request: Request<pb::UnlockRangesRequest>,
    ) -> Result<Response<pb::UnlockRangesResponse>, Status> {
        let req = request.into_inner();
        self.count("unlock_ranges");
        // No admission: releasing is right on any node that may hold them, leader or not.
        if req.header.map(|h| h.shard_id) != Some(self.inner.shard.0) {
            return Ok(Response::new(pb::UnlockRangesResponse::with_error(
                codec::shard_not_found(req.header.map_or(0, |h| h.shard_id)),
            )));
        }
        self.inner.storage.unlock_ranges(req.owner);
        Ok(Response::new(pb::UnlockRangesResponse::default()))
    }

    async fn wait_for_lock(
        &self,
        request: Request<pb::WaitForLockRequest>,
    ) -> Result<Response<pb::WaitResponse>, Status> {
        let req = request.into_inner();
        if let Some(refused) = self.admit_wait("wait_for_lock", req.header.as_ref()) {
            return Ok(refused);
        }
        let deadline = wait_deadline(req.timeout_ms);
        let storage = Arc::clone(&self.inner.storage);
        let key = req.key.to_vec();
        let waiter = storage.lock_waits().enqueue(&key);
        let holder = tokio::task::spawn_blocking(move || storage.lock_holder(&key))
            .await
            .map_err(|e| Status::internal(format!("lock check task failed: {e}")))?;
        let released = match holder {
            Err(e) => {
                return Ok(Response::new(pb::WaitResponse::with_error(
                    codec::mvcc_error_to_pb(&e),
                )))
            }
            // Released already, or another transaction's lock now: let the caller retry.
            Ok(holder) if holder != Some(req.lock_ts) => true,
            Ok(_) => waiter.wait(deadline).await,
        };
        // Dropping the place: a woken waiter that leaves passes the turn on.
        drop(waiter);
        Ok(Response::new(pb::WaitResponse {
            error: None,
            released,
        }))
    }

    async fn wait_for_range_locks(
        &self,
        request: Request<pb::WaitForRangeLocksRequest>,
    ) -> Result<Response<pb::WaitResponse>, Status> {
        let req = request.into_inner();
        if let Some(refused) = self.admit_wait("wait_for_range_locks", req.header.as_ref()) {
            return Ok(refused);
        }
        let deadline = wait_deadline(req.timeout_ms);
        let released = match self.inner.storage.wait_for_range_locks(req.owner) {
            None => true,
            Some((waiter, lapses)) => {
                waiter.wait(deadline.min(lapses)).await || Instant::now() >= lapses
            }
        };
        Ok(Response::new(pb::WaitResponse {
            error: None,
            released,
        }))
    }

    async fn get_timestamps(
        &self,
        request: Request<pb::GetTimestampsRequest>,
    ) -> Result<Response<pb::GetTimestampsResponse>, Status> {
        let req = request.into_inner();
        let header = req.header;
        self.serve("get_timestamps", header, move |inner| {
            let last = inner
                .tso
                .get_timestamps(req.count)
                .map_err(|e| codec::tso_error_to_pb(&e))?;
            Ok(pb::GetTimestampsResponse { error: None, last })
        })
        .await
    }
}
