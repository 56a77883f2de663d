//! The gRPC services: `Kv`, `Txn` and `Admin` over one [`TxnManager`].
//!
//! Every handler validates its request against the limits first (see [`super::error`]), then
//! runs the synchronous transaction layer on tokio's blocking pool, and turns its errors into
//! statuses with an `ErrorDetail`. Kv calls are auto-committed one-shot transactions
//! ([`TxnManager::execute`]), retried internally up to [`KV_ATTEMPTS`] times on retryable
//! conflicts.
//!
//! The calls that may wait for another transaction's lock (Commit, Execute, Kv Put and
//! Delete) use the manager's asynchronous path: its engine steps run on the blocking pool,
//! but its lock waits are futures, so blocked commits hold no blocking thread and cannot
//! starve other requests. They run as tasks of their own (`detached`), so a commit
//! finishes even if its client goes away. Kv Put and Delete first try the asynchronous
//! write path of single-key writes ([`TxnManager::write_one`], D157), which runs on the
//! runtime with no blocking-pool trip, no timestamp round and no thread held while the
//! write commits, and falls back to the one-shot transaction where it would wait.
//!
//! A shutdown does not wait for calls in flight: each races the shutdown signal and, cut
//! short, answers `OUTCOME_UNKNOWN` if it may change state, else `NOT_LEADER` (D156).
//!
//! Response budgets: a scan is read as one page of at most `limit` pairs and
//! `scan_response_bytes` (`scan_limit_of`); the storage stops before loading a value past
//! it and the response says `more`. Point-read batches (BatchGet, Execute) cannot be paged,
//! so they are all or nothing: reading stops at the first value past `max_response_bytes`
//! and the call fails with `RESPONSE_TOO_LARGE`.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use strata_proto::limits;
use strata_proto::v1 as pb;
use strata_proto::v1::{ErrorDetail, ErrorReason};
use tonic::{Request, Response, Status};

use super::error::{
    check_batch, check_key, check_keys, check_range, check_value, invalid_field, mvcc_status,
    scan_limit, status, tso_status, txn_status,
};
use super::membership::{Call, Reply};
use super::State;
use crate::mvcc::{ScanLimit, ScanPage, Timestamp};
use crate::txn::limits::ResponseBudget;
use crate::txn::{ExecuteRequest, Isolation, Precondition, TxnId, TxnManager};

/// How many times a Kv call or Execute runs on retryable conflicts before giving up.
pub const KV_ATTEMPTS: usize = 8;

/// The calls that may change state: cut short by a shutdown, their outcome is unknown.
const STATE_CHANGING: &[&str] = &[
    "kv.Put",
    "kv.Delete",
    "txn.Commit",
    "txn.Execute",
    "admin.AddNode",
    "admin.RemoveNode",
    "admin.TransferLeader",
    "admin.Decommission",
];

/// Resolves once `rx` says true (the node shuts down); never if its sender goes first.
pub(crate) async fn closed(mut rx: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Runs `f` on the blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Status> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(status(
            ErrorReason::StorageError,
            format!("request task failed: {e}"),
            |_| {},
        )),
    }
}

/// Runs `fut` as a task of its own and waits for it: it goes on to the end even if the
/// caller is dropped (a client that disconnects must not stop a commit half-way, leaving
/// its locks for others to wait out).
async fn detached<T, F>(fut: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: Future<Output = Result<T, Status>> + Send + 'static,
{
    match tokio::spawn(fut).await {
        Ok(r) => r,
        Err(e) => Err(status(
            ErrorReason::StorageError,
            format!("request task failed: {e}"),
            |_| {},
        )),
    }
}

impl State {
    /// Runs one RPC: times it, counts its outcome, logs failures.
    async fn call<T>(
        &self,
        method: &'static str,
        fut: impl Future<Output = Result<T, Status>>,
    ) -> Result<Response<T>, Status> {
        let start = Instant::now();
        let result = if self.replica.is_removed() && !method.starts_with("admin.") {
            Err(super::error::status(
                strata_proto::v1::ErrorReason::NodeRemoved,
                format!(
                    "node {} was removed from the cluster and serves no requests: use another node",
                    self.config.node_id
                ),
                |_| {},
            ))
        } else {
            // A shutdown does not wait for calls in flight (D156): it answers them. What
            // they started (a detached commit, a membership change) goes on without them.
            #[cfg(test)]
            let fut = async {
                self.test_hold.hold(method).await;
                fut.await
            };
            tokio::select! {
                r = fut => r,
                () = closed(self.closing.clone()) => Err(super::error::shutting_down(
                    self.config.node_id,
                    method,
                    STATE_CHANGING.contains(&method),
                )),
            }
        };
        let error = result.as_ref().err().map(|s| {
            let reason = ErrorDetail::from_status(s).map(|d| d.reason).unwrap_or_default();
            tracing::debug!(method, code = ?s.code(), %reason, message = s.message(), "request failed");
            (format!("{:?}", s.code()), reason)
        });
        self.metrics.record(method, start.elapsed(), error);
        result.map(Response::new)
    }

    fn manager(&self) -> Arc<TxnManager> {
        Arc::clone(&self.manager)
    }
}

fn isolation(value: i32) -> Result<Isolation, Status> {
    match pb::Isolation::try_from(value) {
        Ok(pb::Isolation::Unspecified | pb::Isolation::Snapshot) => Ok(Isolation::Snapshot),
        Ok(pb::Isolation::Serializable) => Ok(Isolation::Serializable),
        Err(_) => Err(invalid_field(
            "isolation",
            format!("unknown isolation {value}"),
        )),
    }
}

/// Checks that `read_ts` is not above every issued timestamp.
fn check_read_ts(state: &State, read_ts: Timestamp) -> Result<(), Status> {
    let now = state.tso.get_timestamp().map_err(|e| tso_status(&e))?;
    if read_ts > now {
        return Err(status(
            ErrorReason::ReadTsInFuture,
            format!("read_ts {read_ts} is above every issued timestamp"),
            |d| d.field = "read_ts".into(),
        ));
    }
    Ok(())
}

/// Keys and their values (`None`: absent).
type Reads = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// Reads `keys` at `read_ts` (0: a fresh snapshot); returns the values and the read ts.
/// [`read_keys`], first on the runtime without a transaction where the leader can (reads at
/// the latest state only, D162), else on a blocking thread.
async fn read_keys_async(
    state: &Arc<State>,
    keys: Vec<Vec<u8>>,
    read_ts: Timestamp,
) -> Result<(Reads, Timestamp), Status> {
    if read_ts == 0 {
        if let Some((values, ts)) = state.manager.read_latest(&keys).await {
            let mut budget = ResponseBudget::new(state.manager.config().max_response_bytes);
            let mut out = Vec::with_capacity(keys.len());
            for (key, v) in keys.into_iter().zip(values) {
                budget
                    .charge(&key, v.as_deref())
                    .map_err(|e| txn_status(&e, None))?;
                out.push((key, v));
            }
            return Ok((out, ts));
        }
    }
    let state = Arc::clone(state);
    blocking(move || read_keys(&state, keys, read_ts)).await
}

fn read_keys(
    state: &State,
    keys: Vec<Vec<u8>>,
    read_ts: Timestamp,
) -> Result<(Reads, Timestamp), Status> {
    if read_ts == 0 {
        let request = ExecuteRequest {
            reads: keys,
            ..ExecuteRequest::default()
        };
        let r = state
            .manager
            .execute(&request, KV_ATTEMPTS)
            .map_err(|e| txn_status(&e, None))?;
        return Ok((r.reads, r.start_ts));
    }
    // A read at a client-chosen timestamp: locks met are reported, not resolved.
    check_read_ts(state, read_ts)?;
    let shards = state.manager.shards();
    let mut budget = ResponseBudget::new(state.manager.config().max_response_bytes);
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let v = shards
            .get(&key, read_ts, &[])
            .map_err(|e| mvcc_status(&e, 0))?;
        budget
            .charge(&key, v.as_deref())
            .map_err(|e| txn_status(&e, None))?;
        out.push((key, v));
    }
    Ok((out, read_ts))
}

/// The page limit of a scan of at most `limit` pairs: that many, and no pair added once the
/// response holds `scan_response_bytes`.
fn scan_limit_of(limit: usize) -> ScanLimit {
    ScanLimit {
        pairs: limit,
        bytes: usize::try_from(limits::SCAN_RESPONSE_BYTES).unwrap_or(usize::MAX),
    }
}

fn key_values(page: ScanPage) -> Vec<pb::KeyValue> {
    page.pairs
        .into_iter()
        .map(|(key, value)| pb::KeyValue { key, value })
        .collect()
}

fn get_results(reads: Reads) -> Vec<pb::GetResult> {
    reads
        .into_iter()
        .map(|(key, v)| pb::GetResult {
            key,
            found: v.is_some(),
            value: v.unwrap_or_default(),
        })
        .collect()
}

/// Runs a one-shot transaction on the asynchronous path (see the module documentation).
async fn execute(
    m: Arc<TxnManager>,
    request: ExecuteRequest,
) -> Result<crate::txn::ExecuteResponse, Status> {
    detached(async move {
        m.execute_async(request, KV_ATTEMPTS)
            .await
            .map_err(|e| txn_status(&e, None))
    })
    .await
}

/// Writes one key on the asynchronous write path (D157), as its own task: once proposed, a
/// write is not cut short by its caller going away.
async fn write_one(
    m: Arc<TxnManager>,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
) -> Result<crate::txn::ExecuteResponse, Status> {
    detached(async move {
        m.write_one(key, value, KV_ATTEMPTS)
            .await
            .map_err(|e| txn_status(&e, None))
    })
    .await
}

/// The `Kv` service.
#[derive(Debug, Clone)]
pub struct KvService {
    pub(crate) state: Arc<State>,
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    type BatchStream = super::batch::BatchStream;

    async fn batch(
        &self,
        req: Request<tonic::Streaming<pb::KvBatchRequest>>,
    ) -> Result<Response<Self::BatchStream>, Status> {
        Ok(Response::new(super::batch::serve(
            self.clone(),
            req.into_inner(),
        )))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let req = req.into_inner();
        let state = Arc::clone(&self.state);
        self.state
            .call("kv.Get", async move {
                check_key("key", &req.key)?;
                let (mut reads, read_ts) =
                    read_keys_async(&state, vec![req.key], req.read_ts).await?;
                let value = reads.pop().and_then(|(_, v)| v);
                Ok(pb::GetResponse {
                    found: value.is_some(),
                    value: value.unwrap_or_default(),
                    read_ts,
                })
            })
            .await
    }

    async fn batch_get(
        &self,
        req: Request<pb::BatchGetRequest>,
    ) -> Result<Response<pb::BatchGetResponse>, Status> {
        let req = req.into_inner();
        let state = Arc::clone(&self.state);
        self.state
            .call("kv.BatchGet", async move {
                check_keys("keys", &req.keys)?;
                let (reads, read_ts) = read_keys_async(&state, req.keys, req.read_ts).await?;
                Ok(pb::BatchGetResponse {
                    results: get_results(reads),
                    read_ts,
                })
            })
            .await
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let req = req.into_inner();
        let m = self.state.manager();
        self.state
            .call("kv.Put", async move {
                check_key("key", &req.key)?;
                check_value("value", &req.key, &req.value)?;
                let r = write_one(m, req.key, Some(req.value)).await?;
                Ok(pb::PutResponse {
                    commit_ts: r.commit_ts.unwrap_or(0),
                })
            })
            .await
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let req = req.into_inner();
        let m = self.state.manager();
        self.state
            .call("kv.Delete", async move {
                check_key("key", &req.key)?;
                let r = write_one(m, req.key, None).await?;
                Ok(pb::DeleteResponse {
                    commit_ts: r.commit_ts.unwrap_or(0),
                })
            })
            .await
    }

    async fn scan(
        &self,
        req: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        let req = req.into_inner();
        let state = Arc::clone(&self.state);
        self.state
            .call("kv.Scan", async move {
                check_range(&req.start, &req.end)?;
                let limit = scan_limit(req.limit)?;
                let (page, read_ts) = blocking(move || {
                    let end = (!req.end.is_empty()).then_some(req.end.as_slice());
                    let limit = scan_limit_of(limit);
                    if req.read_ts == 0 {
                        let m = &state.manager;
                        let (id, start_ts) = m
                            .begin(Isolation::Snapshot, true)
                            .map_err(|e| txn_status(&e, None))?;
                        let r = m.scan_page(id, &req.start, end, limit, req.reverse);
                        let _ = m.rollback(id);
                        Ok((r.map_err(|e| txn_status(&e, None))?, start_ts))
                    } else {
                        check_read_ts(&state, req.read_ts)?;
                        let page = state
                            .manager
                            .shards()
                            .scan_page(&req.start, end, limit, req.read_ts, req.reverse, &[])
                            .map_err(|e| mvcc_status(&e, 0))?;
                        Ok((page, req.read_ts))
                    }
                })
                .await?;
                let more = page.more;
                Ok(pb::ScanResponse {
                    kvs: key_values(page),
                    more,
                    read_ts,
                })
            })
            .await
    }
}

/// The `Txn` service.
#[derive(Debug, Clone)]
pub struct TxnService {
    pub(crate) state: Arc<State>,
}

impl TxnService {
    /// Runs `f` against the manager on the blocking pool, mapping errors for txn `id`.
    async fn on<T: Send + 'static>(
        &self,
        id: TxnId,
        f: impl FnOnce(&TxnManager) -> crate::txn::manager::Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        let m = self.state.manager();
        blocking(move || f(&m).map_err(|e| txn_status(&e, Some(id)))).await
    }
}

#[tonic::async_trait]
impl pb::txn_server::Txn for TxnService {
    async fn begin(
        &self,
        req: Request<pb::BeginRequest>,
    ) -> Result<Response<pb::BeginResponse>, Status> {
        let req = req.into_inner();
        let idle_timeout_ms = self.state.config.txn.idle_timeout_s.saturating_mul(1000);
        self.state
            .call("txn.Begin", async move {
                let isolation = isolation(req.isolation)?;
                let active = u64::try_from(self.state.manager.active()).unwrap_or(u64::MAX);
                if active >= limits::MAX_ACTIVE_TXNS {
                    return Err(status(
                        ErrorReason::TooManyTxns,
                        format!("{active} transactions open (max_active_txns)"),
                        |d| {
                            d.limit_name = "max_active_txns".into();
                            d.limit = limits::MAX_ACTIVE_TXNS;
                        },
                    ));
                }
                let (txn_id, start_ts) = self
                    .on(0, move |m| m.begin(isolation, req.read_only))
                    .await?;
                Ok(pb::BeginResponse {
                    txn_id,
                    start_ts,
                    idle_timeout_ms,
                })
            })
            .await
    }

    async fn get(
        &self,
        req: Request<pb::TxnGetRequest>,
    ) -> Result<Response<pb::TxnGetResponse>, Status> {
        let req = req.into_inner();
        self.state
            .call("txn.Get", async move {
                check_key("key", &req.key)?;
                let v = self
                    .on(req.txn_id, move |m| m.get(req.txn_id, &req.key))
                    .await?;
                Ok(pb::TxnGetResponse {
                    found: v.is_some(),
                    value: v.unwrap_or_default(),
                })
            })
            .await
    }

    async fn batch_get(
        &self,
        req: Request<pb::TxnBatchGetRequest>,
    ) -> Result<Response<pb::TxnBatchGetResponse>, Status> {
        let req = req.into_inner();
        self.state
            .call("txn.BatchGet", async move {
                check_keys("keys", &req.keys)?;
                let id = req.txn_id;
                let reads = self.on(id, move |m| m.batch_get(id, &req.keys)).await?;
                Ok(pb::TxnBatchGetResponse {
                    results: get_results(reads),
                })
            })
            .await
    }

    async fn scan(
        &self,
        req: Request<pb::TxnScanRequest>,
    ) -> Result<Response<pb::TxnScanResponse>, Status> {
        let req = req.into_inner();
        self.state
            .call("txn.Scan", async move {
                check_range(&req.start, &req.end)?;
                let limit = scan_limit(req.limit)?;
                let id = req.txn_id;
                let page = self
                    .on(id, move |m| {
                        let end = (!req.end.is_empty()).then_some(req.end.as_slice());
                        m.scan_page(id, &req.start, end, scan_limit_of(limit), req.reverse)
                    })
                    .await?;
                let more = page.more;
                Ok(pb::TxnScanResponse {
                    kvs: key_values(page),
                    more,
                })
            })
            .await
    }

    async fn put(
        &self,
        req: Request<pb::TxnPutRequest>,
    ) -> Result<Response<pb::TxnPutResponse>, Status> {
        let req = req.into_inner();
        self.state
            .call("txn.Put", async move {
                check_key("key", &req.key)?;
                check_value("value", &req.key, &req.value)?;
                let id = req.txn_id;
                self.on(id, move |m| m.write(id, &req.key, Some(&req.value)))
                    .await?;
                Ok(pb::TxnPutResponse {})
            })
            .await
    }

    async fn delete(
        &self,
        req: Request<pb::TxnDeleteRequest>,
    ) -> Result<Response<pb::TxnDeleteResponse>, Status> {
        let req = req.into_inner();
        self.state
            .call("txn.Delete", async move {
                check_key("key", &req.key)?;
                let id = req.txn_id;
                self.on(id, move |m| m.write(id, &req.key, None)).await?;
                Ok(pb::TxnDeleteResponse {})
            })
            .await
    }

    async fn commit(
        &self,
        req: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let id = req.into_inner().txn_id;
        self.state
            .call("txn.Commit", async move {
                let m = self.state.manager();
                let commit_ts = detached(async move {
                    m.commit_async(id)
                        .await
                        .map_err(|e| txn_status(&e, Some(id)))
                })
                .await?;
                Ok(pb::CommitResponse {
                    commit_ts: commit_ts.unwrap_or(0),
                })
            })
            .await
    }

    async fn rollback(
        &self,
        req: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::RollbackResponse>, Status> {
        let id = req.into_inner().txn_id;
        self.state
            .call("txn.Rollback", async move {
                self.on(id, move |m| m.rollback(id)).await?;
                Ok(pb::RollbackResponse {})
            })
            .await
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let id = req.into_inner().txn_id;
        let idle_timeout_ms = self.state.config.txn.idle_timeout_s.saturating_mul(1000);
        self.state
            .call("txn.Heartbeat", async move {
                // Interactive transactions hold no locks before Commit, so a heartbeat only
                // has to postpone the idle timeout.
                self.on(id, move |m| m.touch(id)).await?;
                Ok(pb::HeartbeatResponse { idle_timeout_ms })
            })
            .await
    }

    async fn execute(
        &self,
        req: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        let req = req.into_inner();
        self.state
            .call("txn.Execute", async move {
                let request = execute_request(req)?;
                let user_reads = request.reads.len() - request.preconditions.len();
                let preconditions = request.preconditions.clone();
                let r = execute(self.state.manager(), request).await?;
                let mut reads = r.reads;
                // The precondition keys were appended to the reads (all at start_ts), so
                // every failed precondition can be reported, not only the first.
                let checked = reads.split_off(user_reads);
                let failed_preconditions = if r.succeeded {
                    Vec::new()
                } else {
                    preconditions
                        .iter()
                        .zip(&checked)
                        .enumerate()
                        .filter(|(_, (p, (_, v)))| !p.holds(v.as_deref()))
                        .filter_map(|(i, _)| u32::try_from(i).ok())
                        .collect()
                };
                Ok(pb::ExecuteResponse {
                    succeeded: r.succeeded,
                    failed_preconditions,
                    reads: get_results(reads),
                    start_ts: r.start_ts,
                    commit_ts: r.commit_ts.unwrap_or(0),
                })
            })
            .await
    }
}

/// The manager's request for a validated `Execute`, with the precondition keys appended to
/// the reads.
fn execute_request(req: pb::ExecuteRequest) -> Result<ExecuteRequest, Status> {
    use pb::mutation::Kind as M;
    use pb::precondition::Kind as P;
    check_batch("preconditions", req.preconditions.len())?;
    check_keys("reads", &req.reads)?;
    check_batch("mutations", req.mutations.len())?;
    let isolation = isolation(req.isolation)?;
    let mut preconditions = Vec::with_capacity(req.preconditions.len());
    for p in req.preconditions {
        check_key("preconditions.key", &p.key)?;
        preconditions.push(match P::try_from(p.kind) {
            Ok(P::Exists) => Precondition::Exists(p.key),
            Ok(P::NotExists) => Precondition::NotExists(p.key),
            Ok(P::ValueEquals) => {
                check_value("preconditions.value", &p.key, &p.value)?;
                Precondition::ValueEquals(p.key, p.value)
            }
            Ok(P::Unspecified) | Err(_) => {
                return Err(invalid_field(
                    "preconditions.kind",
                    format!("precondition kind {} is not accepted", p.kind),
                ))
            }
        });
    }
    let mut writes = Vec::with_capacity(req.mutations.len());
    let mut txn_bytes: u64 = 0;
    for m in req.mutations {
        check_key("mutations.key", &m.key)?;
        txn_bytes = txn_bytes
            .saturating_add(u64::try_from(m.key.len() + m.value.len()).unwrap_or(u64::MAX));
        writes.push(match M::try_from(m.kind) {
            Ok(M::Put) => {
                check_value("mutations.value", &m.key, &m.value)?;
                (m.key, Some(m.value))
            }
            Ok(M::Delete) => (m.key, None),
            Ok(M::Unspecified) | Err(_) => {
                return Err(invalid_field(
                    "mutations.kind",
                    format!("mutation kind {} is not accepted", m.kind),
                ))
            }
        });
    }
    if txn_bytes > limits::MAX_TXN_BYTES {
        return Err(status(
            ErrorReason::TxnTooLarge,
            format!("mutations of {txn_bytes} bytes exceed max_txn_bytes"),
            |d| {
                d.limit_name = "max_txn_bytes".into();
                d.limit = limits::MAX_TXN_BYTES;
            },
        ));
    }
    let mut reads = req.reads;
    reads.extend(preconditions.iter().map(|p| p.key().to_vec()));
    Ok(ExecuteRequest {
        isolation,
        preconditions,
        reads,
        writes,
    })
}

/// The `Admin` service.
#[derive(Debug, Clone)]
pub struct AdminService {
    pub(crate) state: Arc<State>,
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let state = Arc::clone(&self.state);
        self.state
            .call("admin.Status", async move {
                let (stats, counters) = blocking(move || {
                    Ok((
                        state.manager.storage().db().stats(),
                        state.node_counters().to_proto(),
                    ))
                })
                .await?;
                Ok(pb::StatusResponse {
                    node_id: self.state.config.node_id,
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    uptime_seconds: self.state.started.elapsed().as_secs(),
                    engine: Some(engine_stats(&stats)),
                    active_transactions: u64::try_from(self.state.manager.active())
                        .unwrap_or(u64::MAX),
                    gc_safe_point: self.state.gc_safe_point(),
                    replicated: true,
                    members: self.state.members(),
                    replicas: self.state.replica_rows(),
                    raft_addr: self.state.cluster.advertise_raft_addr.to_string(),
                    grpc_addr: self.state.cluster.advertise_grpc_addr.to_string(),
                    incarnation: self.state.identity.incarnation.clone(),
                    counters: Some(counters),
                    recovery: Some(self.state.recovery_info()),
                    removed: self.state.replica.is_removed(),
                })
            })
            .await
    }

    async fn add_node(
        &self,
        req: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::AddNodeResponse>, Status> {
        let call = Call::Add(req.into_inner());
        self.state
            .call("admin.AddNode", async move {
                match self.state.membership.route(call, false).await? {
                    Reply::Add(m) => Ok(m),
                    _ => Err(mismatched()),
                }
            })
            .await
    }

    async fn remove_node(
        &self,
        req: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        let call = Call::Remove(req.into_inner());
        self.state
            .call("admin.RemoveNode", async move {
                match self.state.membership.route(call, false).await? {
                    Reply::Remove(m) => Ok(m),
                    _ => Err(mismatched()),
                }
            })
            .await
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let call = Call::Transfer(req.into_inner());
        self.state
            .call("admin.TransferLeader", async move {
                match self.state.membership.route(call, false).await? {
                    Reply::Transfer(m) => Ok(m),
                    _ => Err(mismatched()),
                }
            })
            .await
    }

    async fn decommission(
        &self,
        req: Request<pb::DecommissionRequest>,
    ) -> Result<Response<pb::DecommissionResponse>, Status> {
        let call = Call::Decommission(req.into_inner());
        self.state
            .call("admin.Decommission", async move {
                match self.state.membership.route(call, false).await? {
                    Reply::Decommission(m) => Ok(m),
                    _ => Err(mismatched()),
                }
            })
            .await
    }

    async fn decommission_status(
        &self,
        req: Request<pb::DecommissionStatusRequest>,
    ) -> Result<Response<pb::DecommissionStatusResponse>, Status> {
        let call = Call::DrainStatus(req.into_inner());
        self.state
            .call("admin.DecommissionStatus", async move {
                match self.state.membership.route(call, false).await? {
                    Reply::DrainStatus(m) => Ok(m),
                    _ => Err(mismatched()),
                }
            })
            .await
    }

    async fn get_gc_safe_point(
        &self,
        _req: Request<pb::GetGcSafePointRequest>,
    ) -> Result<Response<pb::GetGcSafePointResponse>, Status> {
        self.state
            .call("admin.GetGcSafePoint", async move {
                Ok(pb::GetGcSafePointResponse {
                    safe_point: self.state.gc_safe_point(),
                })
            })
            .await
    }
}

fn mismatched() -> Status {
    status(
        ErrorReason::StorageError,
        "mismatched membership reply",
        |_| {},
    )
}

/// The wire form of the engine's statistics.
pub(crate) fn engine_stats(s: &crate::lsm::Stats) -> pb::EngineStats {
    let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
    pb::EngineStats {
        write_amplification: s.write_amplification(),
        read_amplification: s.read_amplification(),
        space_amplification: s.space_amplification(),
        levels: s
            .levels
            .iter()
            .enumerate()
            .map(|(i, l)| pb::LevelStats {
                level: u32::try_from(i).unwrap_or(u32::MAX),
                files: n(l.files),
                bytes: l.bytes,
                score: l.score,
            })
            .collect(),
        total_sst_bytes: s.total_sst_bytes,
        memtable_bytes: s.memtable_bytes,
        immutable_memtables: n(s.immutable_memtables),
        live_bytes_estimate: s.live_bytes_estimate,
        user_bytes_written: s.user_bytes_written,
        wal_bytes_written: s.wal_bytes_written,
        wal_syncs: s.wal_syncs,
        flushes: s.flushes,
        compactions: s.compactions,
        compaction_bytes_read: s.compaction_bytes_read,
        compaction_bytes_written: s.compaction_bytes_written,
        gets: s.gets,
        block_cache_hits: s.block_cache_hits,
        block_cache_misses: s.block_cache_misses,
        block_cache_bytes: s.block_cache_usage,
        write_stalls: s.write_stalls,
        write_stall_micros: s.write_stall_micros,
        background_errors: s.background_errors,
    }
}
