//! The sender task of one destination node: one connection, one `Raft.Stream`, batches.
//!
//! ```text
//!   wait for a message ─▶ address? ─▶ connect ─▶ open stream with the first batch
//!         ▲                  │ no        │ fail      │ refused (wrong node/cluster)
//!         │                  ▼           ▼           ▼
//!         └──── backoff ◀── drop what is queued, report its replicas unreachable
//!                  ▲
//!   streaming: every message queued so far goes into the next batch; the receiver's reply
//!   (header accepted) resets the backoff; a broken stream or a moved address ends it
//! ```
//! Nothing waits for a connection: what cannot be sent is dropped and reported, and raft-rs
//! resends. The backoff doubles from `backoff_initial` up to `backoff_max`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strata_proto::internal::v1::raft_client::RaftClient;
use strata_proto::internal::v1::RaftBatch;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use super::super::apply::RaftMessage;
use super::super::types::{NodeId, PeerId, ShardId};
use super::{bump, SendContext, TransportConfig};

/// Capped exponential backoff.
#[derive(Debug)]
pub(super) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(super) fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Self {
            initial,
            max: max.max(initial),
            next: initial,
        }
    }

    /// The wait before the next attempt; doubles the one after.
    pub(super) fn next_wait(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub(super) fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Opens a channel to `addr` (`host:port`).
pub(super) async fn connect(addr: &str, cfg: &TransportConfig) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("bad address {addr:?}: {e}"))?
        .connect_timeout(cfg.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(cfg.keepalive_interval)
        .keep_alive_timeout(cfg.keepalive_timeout)
        .keep_alive_while_idle(true);
    match tokio::time::timeout(cfg.connect_timeout, endpoint.connect()).await {
        Ok(Ok(ch)) => Ok(ch),
        Ok(Err(e)) => Err(format!("connect to {addr}: {e}")),
        Err(_) => Err(format!("connect to {addr}: timed out")),
    }
}

/// Messages of one batch, encoded, and the replicas they were for.
struct Batcher {
    /// A message taken from the queue that did not fit the previous batch.
    held: Option<(Bytes, (ShardId, PeerId))>,
    /// Replicas messages went to on the current connection (reported unreachable if it
    /// breaks).
    targets: BTreeSet<(ShardId, PeerId)>,
}

impl Batcher {
    fn new() -> Self {
        Self {
            held: None,
            targets: BTreeSet::new(),
        }
    }

    fn encode(
        &mut self,
        msg: &RaftMessage,
        ctx: &SendContext,
    ) -> Option<(Bytes, (ShardId, PeerId))> {
        let target = (msg.shard, PeerId(msg.msg.to));
        match msg.encode() {
            Ok(b) if b.len() + 64 > ctx.cfg.max_message_bytes => {
                bump(&ctx.counters.dropped_too_large, 1);
                tracing::error!(shard = %msg.shard, to = %target.1, bytes = b.len(),
                    "raft message larger than max_message_bytes dropped");
                None
            }
            Ok(b) => Some((Bytes::from(b), target)),
            Err(e) => {
                tracing::error!(error = %e, "raft message does not encode");
                None
            }
        }
    }

    /// A batch holding `first` (if any), the held message and whatever else is queued, up to
    /// `max_batch_bytes`. None when nothing could be encoded.
    fn fill(
        &mut self,
        node: NodeId,
        first: Option<RaftMessage>,
        rx: &mut mpsc::Receiver<RaftMessage>,
        ctx: &SendContext,
    ) -> Option<RaftBatch> {
        let mut messages = Vec::new();
        let mut bytes = 0usize;
        let limit = ctx
            .cfg
            .max_batch_bytes
            .min(ctx.cfg.max_message_bytes / 2)
            .max(1);
        let mut push = |this: &mut Self, (b, target): (Bytes, (ShardId, PeerId))| -> bool {
            if !messages.is_empty() && bytes + b.len() > limit {
                this.held = Some((b, target));
                return false;
            }
            bytes += b.len();
            messages.push(b);
            this.targets.insert(target);
            true
        };
        if let Some(held) = self.held.take() {
            push(self, held);
        }
        if let Some(m) = first {
            if let Some(e) = self.encode(&m, ctx) {
                if !push(self, e) {
                    return self.finish(node, messages, ctx);
                }
            }
        }
        while self.held.is_none() {
            let Ok(m) = rx.try_recv() else { break };
            if let Some(e) = self.encode(&m, ctx) {
                push(self, e);
            }
        }
        self.finish(node, messages, ctx)
    }

    fn finish(&self, node: NodeId, messages: Vec<Bytes>, ctx: &SendContext) -> Option<RaftBatch> {
        if messages.is_empty() {
            return None;
        }
        Some(RaftBatch {
            cluster_id: ctx.cfg.cluster_id,
            from_node: ctx.cfg.node_id.0,
            to_node: node.0,
            messages,
        })
    }

    /// Drops the held message and everything queued, and reports every replica messages were
    /// meant for since the connection was made.
    fn lose_all(&mut self, rx: &mut mpsc::Receiver<RaftMessage>, ctx: &SendContext) {
        let mut lost = 0u64;
        if let Some((_, target)) = self.held.take() {
            self.targets.insert(target);
            lost += 1;
        }
        while let Ok(m) = rx.try_recv() {
            self.targets.insert((m.shard, PeerId(m.msg.to)));
            lost += 1;
        }
        bump(&ctx.counters.dropped_disconnected, lost);
        for (shard, peer) in std::mem::take(&mut self.targets) {
            ctx.raft.report_unreachable(shard, peer);
        }
    }
}

/// Runs the link to `node` until the transport is dropped.
pub(super) async fn run(node: NodeId, mut rx: mpsc::Receiver<RaftMessage>, ctx: Arc<SendContext>) {
    let mut backoff = Backoff::new(ctx.cfg.backoff_initial, ctx.cfg.backoff_max);
    let mut batcher = Batcher::new();
    let mut carry: Option<RaftMessage> = None;
    loop {
        if carry.is_none() && batcher.held.is_none() {
            match rx.recv().await {
                Some(m) => carry = Some(m),
                None => return,
            }
        }
        match stream_once(
            node,
            &mut rx,
            &ctx,
            &mut batcher,
            &mut backoff,
            carry.take(),
        )
        .await
        {
            Ended::TransportDropped => return,
            Ended::AddressMoved(m) => {
                // Reconnect at once to the new address, keeping what is queued.
                carry = m;
                continue;
            }
            Ended::Failed(why) => {
                tracing::debug!(to = %node, %why, "raft link down");
                batcher.lose_all(&mut rx, &ctx);
            }
        }
        tokio::time::sleep(backoff.next_wait()).await;
        // What queued during the wait is stale; Raft sends fresh messages.
        batcher.lose_all(&mut rx, &ctx);
    }
}

enum Ended {
    TransportDropped,
    AddressMoved(Option<RaftMessage>),
    Failed(String),
}

/// One connection and stream: connects, sends batches until something breaks.
async fn stream_once(
    node: NodeId,
    rx: &mut mpsc::Receiver<RaftMessage>,
    ctx: &SendContext,
    batcher: &mut Batcher,
    backoff: &mut Backoff,
    first: Option<RaftMessage>,
) -> Ended {
    let Some((addr, generation)) = ctx.book.lookup(node) else {
        if let Some(m) = first {
            batcher.targets.insert((m.shard, PeerId(m.msg.to)));
            bump(&ctx.counters.dropped_unresolved, 1);
        }
        return Ended::Failed(format!("no address for {node}"));
    };
    let channel = match connect(&addr, &ctx.cfg).await {
        Ok(c) => c,
        Err(e) => {
            bump(&ctx.counters.connect_failures, 1);
            if let Some(m) = first {
                batcher.targets.insert((m.shard, PeerId(m.msg.to)));
                bump(&ctx.counters.dropped_disconnected, 1);
            }
            return Ended::Failed(e);
        }
    };
    let max = ctx.cfg.max_message_bytes;
    let mut client = RaftClient::new(channel)
        .max_encoding_message_size(max)
        .max_decoding_message_size(max);
    let (req_tx, req_rx) = mpsc::channel::<RaftBatch>(2);
    let Some(batch) = batcher.fill(node, first, rx, ctx) else {
        return Ended::Failed("nothing to send".into());
    };
    let sent = batch.messages.len() as u64;
    if req_tx.send(batch).await.is_err() {
        return Ended::Failed("stream closed before the first batch".into());
    }
    let response = tokio::time::timeout(
        ctx.cfg.connect_timeout,
        client.stream(ReceiverStream::new(req_rx)),
    )
    .await;
    let mut replies = match response {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(status)) => return refused(ctx, node, &status),
        Err(_) => return Ended::Failed(format!("{node} did not answer the stream in time")),
    };
    count_batch(ctx, sent);
    loop {
        tokio::select! {
            reply = replies.message() => match reply {
                Ok(Some(_)) => {
                    bump(&ctx.counters.streams_accepted, 1);
                    backoff.reset();
                }
                Ok(None) => return Ended::Failed(format!("{node} ended the stream")),
                Err(status) => return refused(ctx, node, &status),
            },
            msg = rx.recv(), if batcher.held.is_none() => {
                let Some(msg) = msg else { return Ended::TransportDropped };
                if ctx.book.generation(node) != Some(generation) {
                    return Ended::AddressMoved(Some(msg));
                }
                if let Some(batch) = batcher.fill(node, Some(msg), rx, ctx) {
                    let n = batch.messages.len() as u64;
                    if req_tx.send(batch).await.is_err() {
                        return Ended::Failed(format!("stream to {node} closed"));
                    }
                    count_batch(ctx, n);
                }
            },
            // A message held back from a full batch goes out without waiting for another.
            _ = std::future::ready(()), if batcher.held.is_some() => {
                if let Some(batch) = batcher.fill(node, None, rx, ctx) {
                    let n = batch.messages.len() as u64;
                    if req_tx.send(batch).await.is_err() {
                        return Ended::Failed(format!("stream to {node} closed"));
                    }
                    count_batch(ctx, n);
                }
            },
        }
    }
}

fn count_batch(ctx: &SendContext, messages: u64) {
    bump(&ctx.counters.batches_sent, 1);
    bump(&ctx.counters.messages_sent, messages);
}

fn refused(ctx: &SendContext, node: NodeId, status: &tonic::Status) -> Ended {
    if status.code() == Code::FailedPrecondition {
        bump(&ctx.counters.streams_refused, 1);
        tracing::warn!(to = %node, message = status.message(),
            "raft stream refused: the address book points at the wrong node or cluster");
    }
    Ended::Failed(format!("{node}: {}", status.message()))
}
