//! The tonic transport between nodes: [`GrpcTransport`] sends, [`RaftService`] receives.
//!
//! ```text
//!  node A: driver thread                                   node B: internal port
//!  ─────────────────────                                   ─────────────────────
//!  Transport::send(msg)   never blocks
//!    │ resolve  (shard, msg.to) -> node    NodeResolver
//!    │ NetFaults::decide(A, B)             drop / duplicate / delay / cut
//!    ├─ MsgSnapshot ─▶ task: Raft.Snapshot (client stream, 1 MiB chunks) ─▶ assemble, check
//!    │                   └─ report_snapshot(Finish | Failure) ─▶ driver      size + crc, step
//!    └─ bounded queue per node (full: drop, count, report_unreachable)
//!         │
//!       link task per node: connect (address book), Raft.Stream (bidirectional)
//!         │ everything queued -> one RaftBatch {cluster, from, to, [msg bytes]} ─▶ check header,
//!         │ ◀─ RaftStreamReply once the header is accepted (resets the backoff)   step each
//!         └ stream or connect failure: report_unreachable for its replicas,       into
//!           reconnect after a capped exponential backoff                          RaftHandle
//! ```
//!
//! Messages are rust-protobuf bytes ([`RaftMessage::encode`]); this layer never looks inside
//! them except to route (`msg.to`) and to move a snapshot's data out of band. Every batch and
//! snapshot names the cluster and both nodes, so a receiver refuses traffic that reached the
//! wrong process with FAILED_PRECONDITION rather than stepping it into a Raft group.
//!
//! Loss is normal here: a full queue, a lost connection or a fault rule drops messages and
//! Raft sends again. What the transport owes raft-rs is to say so: unreachable replicas
//! (`report_unreachable`, so the leader stops pipelining into a void) and the fate of every
//! snapshot (`report_snapshot`; without a failure report the leader would wait forever).
//!
//! Files: `resolve` (replica -> node -> address), `faults` ([`NetFaults`]), `link` (the
//! per-node sender task), `snapshot` (chunking and assembly), `service` (the receiving
//! service and the internal server).

mod faults;
mod link;
mod resolve;
mod service;
mod snapshot;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use raft::eraftpb::MessageType;
use tokio::sync::mpsc;

use super::apply::{RaftMessage, Transport};
use super::driver::RaftHandle;
use super::types::{NodeId, PeerId};

pub use faults::{FaultStats, LinkFaults, NetFaults, Verdict};
pub use resolve::{AddressBook, NodeResolver, PeerIdIsNodeId};
pub use service::{raft_service, InternalServer, RaftService};

/// Transport settings of one node.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// The cluster this node belongs to; traffic naming another is refused.
    pub cluster_id: u64,
    /// This node.
    pub node_id: NodeId,
    /// Messages queued per destination node before new ones are dropped.
    pub queue_capacity: usize,
    /// A batch is closed once it holds this many bytes of messages.
    pub max_batch_bytes: usize,
    /// The largest gRPC message either side accepts (a batch, a snapshot chunk).
    pub max_message_bytes: usize,
    /// Snapshot data per chunk.
    pub snapshot_chunk_bytes: usize,
    /// The largest snapshot a receiver assembles (RESOURCE_EXHAUSTED beyond).
    pub max_snapshot_bytes: u64,
    /// Snapshots received at once at most (RESOURCE_EXHAUSTED beyond; the sender retries).
    pub max_inbound_snapshots: usize,
    /// Connecting gives up after this long.
    pub connect_timeout: Duration,
    /// First wait before reconnecting; doubles up to `backoff_max`, back to the first once
    /// a receiver accepted the stream.
    pub backoff_initial: Duration,
    /// Longest wait before reconnecting.
    pub backoff_max: Duration,
    /// HTTP/2 keepalive pings on idle connections, so a silent peer is noticed.
    pub keepalive_interval: Duration,
    /// A keepalive ping unanswered this long closes the connection.
    pub keepalive_timeout: Duration,
}

impl TransportConfig {
    /// Defaults for `node_id` of `cluster_id`.
    pub fn new(cluster_id: u64, node_id: NodeId) -> Self {
        Self {
            cluster_id,
            node_id,
            queue_capacity: 4096,
            max_batch_bytes: 4 << 20,
            max_message_bytes: 64 << 20,
            snapshot_chunk_bytes: 1 << 20,
            max_snapshot_bytes: 1 << 30,
            max_inbound_snapshots: 4,
            connect_timeout: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
        }
    }
}

/// Counters of the transport of one node (both directions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Batches written to streams.
    pub batches_sent: u64,
    /// Messages in them.
    pub messages_sent: u64,
    /// Dropped: the destination's queue was full.
    pub dropped_queue_full: u64,
    /// Dropped: no node or no address for the destination.
    pub dropped_unresolved: u64,
    /// Dropped: no connection to the destination.
    pub dropped_disconnected: u64,
    /// Dropped by [`NetFaults`].
    pub dropped_by_faults: u64,
    /// Dropped: larger than `max_message_bytes` on its own.
    pub dropped_too_large: u64,
    /// Streams a receiver accepted (a restarted peer is reconnected: this grows).
    pub streams_accepted: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Streams a receiver refused (wrong cluster or node).
    pub streams_refused: u64,
    /// Snapshots sent completely.
    pub snapshots_sent: u64,
    /// Snapshots that failed to send.
    pub snapshots_failed: u64,
    /// Chunks of the snapshots sent.
    pub snapshot_chunks_sent: u64,
    /// Batches received and accepted.
    pub batches_received: u64,
    /// Messages received and handed to the driver.
    pub messages_received: u64,
    /// Received batches or snapshots refused for their header.
    pub refused_headers: u64,
    /// Received messages that did not decode.
    pub decode_errors: u64,
    /// Snapshots received completely and handed to the driver.
    pub snapshots_received: u64,
    /// Snapshot chunks received.
    pub snapshot_chunks_received: u64,
    /// Snapshots refused or abandoned (too large, truncated, damaged, too many at once).
    pub snapshots_refused: u64,
}

/// The transport's shared counters.
#[derive(Debug, Default)]
pub struct TransportCounters {
    batches_sent: AtomicU64,
    messages_sent: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_unresolved: AtomicU64,
    dropped_disconnected: AtomicU64,
    dropped_by_faults: AtomicU64,
    dropped_too_large: AtomicU64,
    streams_accepted: AtomicU64,
    connect_failures: AtomicU64,
    streams_refused: AtomicU64,
    snapshots_sent: AtomicU64,
    snapshots_failed: AtomicU64,
    snapshot_chunks_sent: AtomicU64,
    batches_received: AtomicU64,
    messages_received: AtomicU64,
    refused_headers: AtomicU64,
    decode_errors: AtomicU64,
    snapshots_received: AtomicU64,
    snapshot_chunks_received: AtomicU64,
    snapshots_refused: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl TransportCounters {
    /// The counters now.
    pub fn stats(&self) -> TransportStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransportStats {
            batches_sent: g(&self.batches_sent),
            messages_sent: g(&self.messages_sent),
            dropped_queue_full: g(&self.dropped_queue_full),
            dropped_unresolved: g(&self.dropped_unresolved),
            dropped_disconnected: g(&self.dropped_disconnected),
            dropped_by_faults: g(&self.dropped_by_faults),
            dropped_too_large: g(&self.dropped_too_large),
            streams_accepted: g(&self.streams_accepted),
            connect_failures: g(&self.connect_failures),
            streams_refused: g(&self.streams_refused),
            snapshots_sent: g(&self.snapshots_sent),
            snapshots_failed: g(&self.snapshots_failed),
            snapshot_chunks_sent: g(&self.snapshot_chunks_sent),
            batches_received: g(&self.batches_received),
            messages_received: g(&self.messages_received),
            refused_headers: g(&self.refused_headers),
            decode_errors: g(&self.decode_errors),
            snapshots_received: g(&self.snapshots_received),
            snapshot_chunks_received: g(&self.snapshot_chunks_received),
            snapshots_refused: g(&self.snapshots_refused),
        }
    }
}

/// What the sending tasks share.
#[derive(Debug)]
struct SendContext {
    cfg: TransportConfig,
    book: AddressBook,
    faults: NetFaults,
    raft: RaftHandle,
    counters: Arc<TransportCounters>,
}

/// The sending side of one node: implements [`Transport`] for the driver's [`RaftStore`].
///
/// [`RaftStore`]: super::RaftStore
#[derive(Debug)]
pub struct GrpcTransport {
    ctx: Arc<SendContext>,
    resolver: Arc<dyn NodeResolver>,
    runtime: tokio::runtime::Handle,
    links: HashMap<NodeId, mpsc::Sender<RaftMessage>>,
}

impl GrpcTransport {
    /// A transport for `cfg.node_id`: resolves replicas through `resolver`, addresses
    /// through `book`, reports to `raft`, runs its tasks on `runtime`, and applies `faults`
    /// (pass `NetFaults::default()` for none).
    pub fn new(
        cfg: TransportConfig,
        resolver: Arc<dyn NodeResolver>,
        book: AddressBook,
        faults: NetFaults,
        raft: RaftHandle,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            ctx: Arc::new(SendContext {
                cfg,
                book,
                faults,
                raft,
                counters: Arc::new(TransportCounters::default()),
            }),
            resolver,
            runtime,
            links: HashMap::new(),
        }
    }

    /// The counters, shared with the tasks (keep it before the store takes the transport).
    /// The receiving service of the same node can count into it too.
    pub fn counters(&self) -> Arc<TransportCounters> {
        Arc::clone(&self.ctx.counters)
    }

    fn link(&mut self, node: NodeId) -> mpsc::Sender<RaftMessage> {
        if let Some(tx) = self.links.get(&node) {
            if !tx.is_closed() {
                return tx.clone();
            }
        }
        let (tx, rx) = mpsc::channel(self.ctx.cfg.queue_capacity.max(1));
        self.runtime
            .spawn(link::run(node, rx, Arc::clone(&self.ctx)));
        self.links.insert(node, tx.clone());
        tx
    }

    fn enqueue(&mut self, node: NodeId, msg: RaftMessage) {
        let tx = self.link(node);
        if let Err(e) = tx.try_send(msg) {
            let msg = match e {
                mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => m,
            };
            bump(&self.ctx.counters.dropped_queue_full, 1);
            self.ctx
                .raft
                .report_unreachable(msg.shard, PeerId(msg.msg.to));
        }
    }

    fn send_snapshot(&self, node: NodeId, msg: RaftMessage, delay: Duration) {
        let ctx = Arc::clone(&self.ctx);
        self.runtime.spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            snapshot::send(node, msg, &ctx).await;
        });
    }
}

impl Transport for GrpcTransport {
    fn send(&mut self, msg: RaftMessage) {
        let peer = PeerId(msg.msg.to);
        let Some(node) = self.resolver.node_of(msg.shard, peer) else {
            bump(&self.ctx.counters.dropped_unresolved, 1);
            self.ctx.raft.report_unreachable(msg.shard, peer);
            return;
        };
        let verdict = self.ctx.faults.decide(self.ctx.cfg.node_id, node);
        if msg.msg.get_msg_type() == MessageType::MsgSnapshot {
            match verdict {
                Verdict::Drop => {
                    bump(&self.ctx.counters.dropped_by_faults, 1);
                    bump(&self.ctx.counters.snapshots_failed, 1);
                    self.ctx.raft.report_snapshot(msg.shard, peer, false);
                }
                Verdict::Deliver => self.send_snapshot(node, msg, Duration::ZERO),
                // One copy of a snapshot is enough: raft-rs waits for its report.
                Verdict::Delayed(d) => {
                    self.send_snapshot(node, msg, d.first().copied().unwrap_or_default())
                }
            }
            return;
        }
        match verdict {
            Verdict::Deliver => self.enqueue(node, msg),
            Verdict::Drop => bump(&self.ctx.counters.dropped_by_faults, 1),
            Verdict::Delayed(delays) => {
                for d in delays {
                    if d.is_zero() {
                        self.enqueue(node, msg.clone());
                        continue;
                    }
                    let tx = self.link(node);
                    let m = msg.clone();
                    let counters = Arc::clone(&self.ctx.counters);
                    self.runtime.spawn(async move {
                        tokio::time::sleep(d).await;
                        if tx.try_send(m).is_err() {
                            bump(&counters.dropped_queue_full, 1);
                        }
                    });
                }
            }
        }
    }
}
