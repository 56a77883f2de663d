//! The client's side of `Kv.Batch` (D172): many callers' Kv calls over one stream.
//!
//! ```text
//!   callers ── call() ──► queue ──► stream task ── KvBatchRequest [calls queued] ──► server
//!      ▲                               │  ids → waiting callers
//!      └──────── answer ◄──────────────┴─◄ KvBatchResponse [answers, any order] ◄──
//! ```
//!
//! A [`KvBatch`] belongs to one channel (one HTTP/2 connection). Its task opens a
//! `Kv.Batch` stream on the first call, then sends every call queued at the time as one
//! message (split at [`REQUEST_SOFT_BYTES`]; a larger call goes alone) and routes each
//! answer to its caller by id. Before gathering it yields once, so that callers woken by
//! the same response message (the puts of one Raft ready) queue their next calls in time to
//! share a message. A call answers exactly what the unary call would have: the same
//! response, or the same status, with its `ErrorDetail`.
//!
//! When the stream ends or breaks, every call in flight fails (`UNAVAILABLE`, or the
//! stream's status): its outcome is unknown, as after a lost connection, and the caller
//! decides whether to retry. The next call opens a new stream. Dropping every handle closes
//! the stream once the calls in flight are answered.

use std::collections::HashMap;

use prost::Message as _;
use strata_proto::v1 as pb;
use strata_proto::v1::kv_call::Call;
use strata_proto::v1::kv_client::KvClient;
use strata_proto::v1::kv_result::Result as Answer;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use tonic::Status;

/// A request message stops taking queued calls once it holds this many bytes.
pub const REQUEST_SOFT_BYTES: usize = 4 << 20;

/// The most calls one request message carries.
const MAX_CALLS_PER_MESSAGE: usize = 1024;

/// Kv calls carried over `Kv.Batch` streams of one channel. Cheap to clone: clones share
/// the stream.
#[derive(Debug, Clone)]
pub struct KvBatch {
    queue: mpsc::UnboundedSender<Queued>,
}

/// A call waiting to be sent, and where its answer goes.
struct Queued {
    call: Call,
    reply: oneshot::Sender<Result<Answer, Status>>,
}

impl KvBatch {
    /// Carries calls over `client`'s channel. Spawns the stream's task: call within a tokio
    /// runtime.
    pub fn new(client: KvClient<Channel>) -> KvBatch {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(client, rx));
        KvBatch { queue }
    }

    /// Sends one call and waits for its answer.
    pub async fn call(&self, call: Call) -> Result<Answer, Status> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Queued { call, reply })
            .map_err(|_| Status::unavailable("the Kv.Batch stream's task has stopped"))?;
        match answer.await {
            Ok(Ok(Answer::Error(e))) => Err(e.into_status()),
            Ok(r) => r,
            Err(_) => Err(Status::unavailable(
                "the Kv.Batch stream's task stopped before the answer: the call's outcome is unknown",
            )),
        }
    }

    /// `Kv.Get` over the stream.
    pub async fn get(&self, request: pb::GetRequest) -> Result<pb::GetResponse, Status> {
        match self.call(Call::Get(request)).await? {
            Answer::Get(r) => Ok(r),
            other => Err(mismatched("get", &other)),
        }
    }

    /// `Kv.Put` over the stream.
    pub async fn put(&self, request: pb::PutRequest) -> Result<pb::PutResponse, Status> {
        match self.call(Call::Put(request)).await? {
            Answer::Put(r) => Ok(r),
            other => Err(mismatched("put", &other)),
        }
    }

    /// `Kv.Delete` over the stream.
    pub async fn delete(&self, request: pb::DeleteRequest) -> Result<pb::DeleteResponse, Status> {
        match self.call(Call::Delete(request)).await? {
            Answer::Delete(r) => Ok(r),
            other => Err(mismatched("delete", &other)),
        }
    }
}

fn mismatched(call: &str, answer: &Answer) -> Status {
    Status::internal(format!(
        "the server answered a Kv.Batch {call} call with {answer:?}"
    ))
}

/// The stream's task: opens a stream when a call comes, carries calls until the stream
/// ends, and again; returns once every handle is dropped and nothing is in flight.
async fn run(mut client: KvClient<Channel>, mut queue: mpsc::UnboundedReceiver<Queued>) {
    let mut next_id = 0u64;
    while let Some(first) = queue.recv().await {
        let mut pending = HashMap::new();
        let (out, out_rx) = mpsc::unbounded_channel();
        for message in gather(first, &mut queue, &mut next_id, &mut pending).await {
            let _ = out.send(message);
        }
        let mut inbound = match client.batch(UnboundedReceiverStream::new(out_rx)).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                fail_all(&mut pending, &status);
                continue;
            }
        };
        let mut out = Some(out);
        let ended = loop {
            tokio::select! {
                queued = queue.recv(), if out.is_some() => match queued {
                    Some(first) => {
                        for message in gather(first, &mut queue, &mut next_id, &mut pending).await {
                            if let Some(o) = &out {
                                let _ = o.send(message);
                            }
                        }
                    }
                    // Every handle is gone: close our side; the server ends the stream
                    // once the calls in flight are answered.
                    None => out = None,
                },
                message = inbound.message() => match message {
                    Ok(Some(response)) => {
                        for r in response.results {
                            if let Some(reply) = pending.remove(&r.id) {
                                let answer = r.result.ok_or_else(|| {
                                    Status::internal("a Kv.Batch result carried no answer")
                                });
                                let _ = reply.send(answer);
                            }
                        }
                    }
                    Ok(None) => break Status::unavailable(
                        "the Kv.Batch stream ended before the answer: the call's outcome is unknown",
                    ),
                    Err(status) => break status,
                },
            }
        };
        fail_all(&mut pending, &ended);
        if out.is_none() {
            return;
        }
    }
}

/// Takes `first` and every call queued now, gives each an id (recording its caller in
/// `pending`), and packs them into request messages.
async fn gather(
    first: Queued,
    queue: &mut mpsc::UnboundedReceiver<Queued>,
    next_id: &mut u64,
    pending: &mut HashMap<u64, oneshot::Sender<Result<Answer, Status>>>,
) -> Vec<pb::KvBatchRequest> {
    // Let the callers woken with `first` queue theirs too.
    tokio::task::yield_now().await;
    let mut messages = Vec::new();
    let mut calls = Vec::new();
    let mut size = 0;
    let mut next = Some(first);
    while let Some(q) = next.take() {
        let call = pb::KvCall {
            id: *next_id,
            call: Some(q.call),
        };
        pending.insert(*next_id, q.reply);
        *next_id = next_id.wrapping_add(1);
        let len = call.encoded_len();
        let len = 1 + prost::length_delimiter_len(len) + len;
        if !calls.is_empty()
            && (size + len > REQUEST_SOFT_BYTES || calls.len() >= MAX_CALLS_PER_MESSAGE)
        {
            messages.push(pb::KvBatchRequest {
                calls: std::mem::take(&mut calls),
            });
            size = 0;
        }
        size += len;
        calls.push(call);
        next = queue.try_recv().ok();
    }
    messages.push(pb::KvBatchRequest { calls });
    messages
}

fn fail_all(pending: &mut HashMap<u64, oneshot::Sender<Result<Answer, Status>>>, status: &Status) {
    for (_, reply) in pending.drain() {
        let copy = Status::with_details(
            status.code(),
            status.message(),
            status.details().to_vec().into(),
        );
        let _ = reply.send(Err(copy));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(calls: Vec<Call>) -> mpsc::UnboundedReceiver<Queued> {
        let (tx, rx) = mpsc::unbounded_channel();
        for call in calls {
            let (reply, _) = oneshot::channel();
            tx.send(Queued { call, reply }).expect("queued");
        }
        rx
    }

    fn put(value_bytes: usize) -> Call {
        Call::Put(pb::PutRequest {
            key: b"k".to_vec(),
            value: vec![0; value_bytes],
        })
    }

    /// Calls queued together share a message up to the soft size, a larger one goes alone,
    /// and ids are given in order.
    #[tokio::test]
    async fn queued_calls_are_packed_into_messages_under_the_size_limit() {
        let mut rx = queue(vec![
            put(10),
            put(3 << 20),
            put(3 << 20),
            put(7 << 20),
            put(10),
        ]);
        let first = rx.try_recv().expect("a call");
        let mut next_id = 7;
        let mut pending = HashMap::new();
        let messages = gather(first, &mut rx, &mut next_id, &mut pending).await;
        let shape: Vec<Vec<u64>> = messages
            .iter()
            .map(|m| m.calls.iter().map(|c| c.id).collect())
            .collect();
        assert_eq!(shape, vec![vec![7, 8], vec![9], vec![10], vec![11]]);
        for m in &messages {
            assert!(
                m.encoded_len() <= REQUEST_SOFT_BYTES || m.calls.len() == 1,
                "a message of {} bytes with {} calls",
                m.encoded_len(),
                m.calls.len()
            );
        }
        assert_eq!(next_id, 12);
        assert_eq!(pending.len(), 5);
    }

    /// No message carries more than `MAX_CALLS_PER_MESSAGE` calls.
    #[tokio::test]
    async fn a_message_carries_at_most_its_call_limit() {
        let n = MAX_CALLS_PER_MESSAGE * 2 + 1;
        let mut rx = queue((0..n).map(|_| put(1)).collect());
        let first = rx.try_recv().expect("a call");
        let mut next_id = 0;
        let messages = gather(first, &mut rx, &mut next_id, &mut HashMap::new()).await;
        let sizes: Vec<usize> = messages.iter().map(|m| m.calls.len()).collect();
        assert_eq!(sizes, vec![MAX_CALLS_PER_MESSAGE, MAX_CALLS_PER_MESSAGE, 1]);
    }
}
