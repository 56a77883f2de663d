//! `Kv.Batch`: many Kv calls over one stream (D172).
//!
//! A unary gRPC call costs both ends an HTTP/2 stream of its own: request headers, a data
//! frame, response headers, a data frame and trailers, each framed, HPACK-coded and
//! dispatched. A client with many concurrent callers (the benchmark's 64 clients over three
//! connections, an application's worker pool) pays that per call. `Kv.Batch` lets such a
//! client carry every call it has queued in one stream message, and get the answers back
//! in as few messages as they complete in, as TiKV's clients do with `BatchCommands`.
//!
//! ```text
//!   inbound messages ──► reader task ──► one task per call ──► answers (unbounded queue)
//!   [call, call, ...]     permits:          KvService::put/get/...      │
//!                         calls, bytes      (the unary handler)         ▼
//!                                                            Answers: every answer
//!                                                            queued now, in one message
//! ```
//!
//! Each call runs the unary handler itself, so it gets the same checks, errors, metrics and
//! shutdown behaviour as the unary call. Flow control: the reader holds a permit per call in
//! flight and one per request byte in flight ([`MAX_STREAM_CALLS`], [`MAX_STREAM_BYTES`]),
//! and stops reading the stream while either is used up, which backs the client off through
//! HTTP/2's own window. A response message holds whatever answers are queued when it is
//! sent, up to [`RESPONSE_SOFT_BYTES`] (one larger answer goes alone), so answers that
//! complete together (the puts of one Raft ready) leave together.
//!
//! The stream ends once the client closed its side and every call read was answered. A
//! broken inbound stream (a malformed message, a client gone) stops the reading; the calls
//! already read still run to their end (a write is not abandoned half-way) and their
//! answers go out if the response still can, then the stream ends with the inbound error.
//! A shutdown stops the reading at once; the calls in flight are answered by the shutdown
//! (`OUTCOME_UNKNOWN` or `NOT_LEADER`, as unary calls are), the calls read but not yet
//! started (waiting for permits) `NOT_LEADER` (they did nothing), so an open stream never
//! holds the server's drain.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use prost::Message as _;
use strata_proto::limits::{MAX_MESSAGE_BYTES, MAX_STREAM_BYTES, MAX_STREAM_CALLS};
use strata_proto::v1 as pb;
use strata_proto::v1::kv_call::Call;
use strata_proto::v1::kv_result::Result as Answer;
use strata_proto::v1::kv_server::Kv as _;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::Stream;
use tonic::{Request, Status, Streaming};

use super::error::invalid_field;
use super::service::{closed, KvService};

/// A response message stops taking queued answers once it holds this many bytes.
pub(crate) const RESPONSE_SOFT_BYTES: usize = 4 << 20;

/// The response stream of one `Kv.Batch` call.
pub(crate) type BatchStream =
    Pin<Box<dyn Stream<Item = Result<pb::KvBatchResponse, Status>> + Send>>;

/// Serves one `Kv.Batch` stream: reads its calls, runs each, and returns the stream of
/// their answers.
pub(crate) fn serve(service: KvService, inbound: Streaming<pb::KvBatchRequest>) -> BatchStream {
    let (tx, rx) = mpsc::unbounded_channel();
    let failure = Arc::new(Mutex::new(None));
    tokio::spawn(read(service, inbound, tx, Arc::clone(&failure)));
    Box::pin(Answers {
        rx,
        held: None,
        failure,
        ended: false,
    })
}

/// Reads the stream's calls and starts each, within the stream's permits, until the client
/// closes its side, the stream breaks (recorded in `failure`) or the server shuts down.
async fn read(
    service: KvService,
    mut inbound: Streaming<pb::KvBatchRequest>,
    tx: mpsc::UnboundedSender<pb::KvResult>,
    failure: Arc<Mutex<Option<Status>>>,
) {
    let calls = Arc::new(Semaphore::new(MAX_STREAM_CALLS as usize));
    let bytes = Arc::new(Semaphore::new(MAX_STREAM_BYTES as usize));
    let closing = closed(service.state.closing.clone());
    tokio::pin!(closing);
    loop {
        let message = tokio::select! {
            m = inbound.message() => m,
            () = &mut closing => return,
        };
        let batch = match message {
            Ok(Some(batch)) => batch,
            Ok(None) => return,
            Err(status) => {
                tracing::debug!(code = ?status.code(), message = status.message(), "Kv.Batch stream broke");
                *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
                return;
            }
        };
        let mut batch = batch.calls.into_iter();
        while let Some(call) = batch.next() {
            // A call's request bytes, capped so that a call larger than the budget can
            // still run alone once the others are done.
            let size = call.encoded_len().min(MAX_STREAM_BYTES as usize);
            // The shutdown first: permits freed by calls the shutdown answered must not
            // start another call.
            let permits = tokio::select! {
                biased;
                () = &mut closing => {
                    // Read but never started: they did nothing, and say so.
                    let node = service.state.config.node_id;
                    for call in std::iter::once(call).chain(batch) {
                        let _ = tx.send(not_started(node, call));
                    }
                    return;
                }
                p = async {
                    let c = Arc::clone(&calls).acquire_owned().await;
                    let b = Arc::clone(&bytes).acquire_many_owned(size as u32).await;
                    (c, b)
                } => p,
            };
            let (Ok(call_permit), Ok(byte_permit)) = permits else {
                return; // never: the semaphores are not closed
            };
            let service = service.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let result = answer(&service, call).await;
                drop((call_permit, byte_permit));
                // The response may be gone (the client left): the call ran all the same.
                let _ = tx.send(result);
            });
        }
    }
}

/// The answer to a call the stream read but never started because the node shuts down.
fn not_started(node: u64, call: pb::KvCall) -> pb::KvResult {
    let method = match call.call {
        Some(Call::Get(_)) => "kv.Get",
        Some(Call::BatchGet(_)) => "kv.BatchGet",
        Some(Call::Put(_)) => "kv.Put",
        Some(Call::Delete(_)) => "kv.Delete",
        Some(Call::Scan(_)) => "kv.Scan",
        None => "a Kv.Batch call",
    };
    let status = super::error::shutting_down(node, method, false);
    pb::KvResult {
        id: call.id,
        result: Some(Answer::Error(pb::CallError::from_status(&status))),
    }
}

/// Runs one call through the unary handler it wraps.
async fn answer(service: &KvService, call: pb::KvCall) -> pb::KvResult {
    let answer = match call.call {
        Some(Call::Get(r)) => service
            .get(Request::new(r))
            .await
            .map(|r| Answer::Get(r.into_inner())),
        Some(Call::BatchGet(r)) => service
            .batch_get(Request::new(r))
            .await
            .map(|r| Answer::BatchGet(r.into_inner())),
        Some(Call::Put(r)) => service
            .put(Request::new(r))
            .await
            .map(|r| Answer::Put(r.into_inner())),
        Some(Call::Delete(r)) => service
            .delete(Request::new(r))
            .await
            .map(|r| Answer::Delete(r.into_inner())),
        Some(Call::Scan(r)) => service
            .scan(Request::new(r))
            .await
            .map(|r| Answer::Scan(r.into_inner())),
        None => Err(invalid_field(
            "call",
            "a Kv.Batch call must set one of get, batch_get, put, delete or scan",
        )),
    };
    pb::KvResult {
        id: call.id,
        result: Some(answer.unwrap_or_else(|s| Answer::Error(pb::CallError::from_status(&s)))),
    }
}

/// The response stream: each message takes every answer queued when it is polled.
struct Answers {
    rx: mpsc::UnboundedReceiver<pb::KvResult>,
    /// An answer that did not fit in the previous message.
    held: Option<pb::KvResult>,
    /// Why the inbound stream broke, sent once every answer is out.
    failure: Arc<Mutex<Option<Status>>>,
    ended: bool,
}

/// What one result adds to a message: its bytes and its field's tag and length.
fn framed_len(r: &pb::KvResult) -> usize {
    let len = r.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

impl Stream for Answers {
    type Item = Result<pb::KvBatchResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let first = match self.held.take() {
            Some(r) => r,
            None => match self.rx.poll_recv(cx) {
                Poll::Ready(Some(r)) => r,
                Poll::Ready(None) => {
                    // Every call is answered and the reader is done.
                    self.ended = true;
                    let failure = self
                        .failure
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take();
                    return Poll::Ready(failure.map(Err));
                }
                Poll::Pending => return Poll::Pending,
            },
        };
        let limit = (MAX_MESSAGE_BYTES as usize).min(RESPONSE_SOFT_BYTES);
        let mut size = framed_len(&first);
        let mut results = vec![first];
        while size < limit {
            let Ok(next) = self.rx.try_recv() else {
                break;
            };
            let len = framed_len(&next);
            if size + len > limit {
                self.held = Some(next);
                break;
            }
            size += len;
            results.push(next);
        }
        Poll::Ready(Some(Ok(pb::KvBatchResponse { results })))
    }
}
