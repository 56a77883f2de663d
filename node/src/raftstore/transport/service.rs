//! The receiving side: the `strata.internal.v1.Raft` service and a server for the internal
//! port.
//!
//! Every batch and every snapshot's first chunk must name this node's cluster, this node as
//! the destination and another node as the sender; anything else ends the stream with
//! FAILED_PRECONDITION before a single message is decoded. Messages are then decoded with
//! rust-protobuf (only here, on the internal port) and handed to [`RaftHandle::step`].
//!
//! Streams from other nodes never end by themselves, and a graceful server shutdown waits for
//! open streams: so the service watches a closing signal and ends each of its streams with
//! UNAVAILABLE once it is raised (the senders reconnect elsewhere or later).

use std::net::SocketAddr;
use std::sync::Arc;

use strata_proto::internal::v1::raft_server::{Raft, RaftServer};
use strata_proto::internal::v1::{RaftBatch, RaftStreamReply, SnapshotChunk, SnapshotDone};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::super::apply::RaftMessage;
use super::super::driver::RaftHandle;
use super::super::error::{RaftStoreError, Result};
use super::snapshot::SnapshotAssembler;
use super::{bump, TransportConfig, TransportCounters};

/// The `Raft` service of one node.
#[derive(Debug, Clone)]
pub struct RaftService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    raft: RaftHandle,
    cfg: TransportConfig,
    counters: Arc<TransportCounters>,
    closing: watch::Receiver<bool>,
    snapshots: Arc<Semaphore>,
}

/// The tonic service for `raft`, to mount on the node's internal port. Streams end when
/// `closing` turns true (or its sender is dropped); received traffic is counted in
/// `counters` (pass the transport's, [`super::GrpcTransport::counters`], to count both ways
/// in one place).
pub fn raft_service(
    raft: RaftHandle,
    cfg: TransportConfig,
    counters: Arc<TransportCounters>,
    closing: watch::Receiver<bool>,
) -> RaftServer<RaftService> {
    let max = cfg.max_message_bytes;
    let snapshots = Arc::new(Semaphore::new(cfg.max_inbound_snapshots.max(1)));
    RaftServer::new(RaftService {
        inner: Arc::new(Inner {
            raft,
            cfg,
            counters,
            closing,
            snapshots,
        }),
    })
    .max_decoding_message_size(max)
    .max_encoding_message_size(max)
}

impl Inner {
    fn check_header(&self, cluster_id: u64, from: u64, to: u64) -> std::result::Result<(), Status> {
        let me = self.cfg.node_id.0;
        let refuse = |why: String| {
            bump(&self.counters.refused_headers, 1);
            Err(Status::failed_precondition(why))
        };
        if cluster_id != self.cfg.cluster_id {
            return refuse(format!(
                "raft traffic for cluster {cluster_id} reached node {me} of cluster {}",
                self.cfg.cluster_id
            ));
        }
        if to != me {
            return refuse(format!("raft traffic for node {to} reached node {me}"));
        }
        if from == 0 || from == me {
            return refuse(format!("raft traffic from node {from} to node {me}"));
        }
        Ok(())
    }

    fn is_closing(closing: &watch::Receiver<bool>) -> bool {
        *closing.borrow()
    }

    /// Pumps one inbound stream into the driver; the reply channel carries the one
    /// acceptance and the final status.
    async fn pump(
        self: Arc<Self>,
        mut inbound: Streaming<RaftBatch>,
        replies: mpsc::Sender<std::result::Result<RaftStreamReply, Status>>,
    ) {
        let mut closing = self.closing.clone();
        let mut accepted = false;
        loop {
            if Self::is_closing(&closing) {
                let _ = replies
                    .send(Err(Status::unavailable("node shutting down")))
                    .await;
                return;
            }
            let next = tokio::select! {
                next = inbound.message() => next,
                changed = closing.changed() => {
                    if changed.is_err() {
                        let _ = replies.send(Err(Status::unavailable("node shutting down"))).await;
                        return;
                    }
                    continue;
                }
            };
            let batch = match next {
                Ok(Some(b)) => b,
                Ok(None) | Err(_) => return,
            };
            if let Err(status) = self.check_header(batch.cluster_id, batch.from_node, batch.to_node)
            {
                let _ = replies.send(Err(status)).await;
                return;
            }
            bump(&self.counters.batches_received, 1);
            for bytes in &batch.messages {
                match RaftMessage::decode(bytes) {
                    Ok(m) => {
                        bump(&self.counters.messages_received, 1);
                        self.raft.step(m);
                    }
                    Err(e) => {
                        bump(&self.counters.decode_errors, 1);
                        tracing::warn!(from = batch.from_node, error = %e,
                            "undecodable raft message dropped");
                    }
                }
            }
            if !accepted {
                accepted = true;
                let reply = RaftStreamReply {
                    node_id: self.cfg.node_id.0,
                };
                if replies.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
        }
    }

    async fn receive_snapshot(
        &self,
        mut inbound: Streaming<SnapshotChunk>,
    ) -> std::result::Result<RaftMessage, Status> {
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        self.check_header(first.cluster_id, first.from_node, first.to_node)?;
        bump(&self.counters.snapshot_chunks_received, 1);
        let mut asm = SnapshotAssembler::begin(&first, self.cfg.max_snapshot_bytes)?;
        let mut closing = self.closing.clone();
        loop {
            if Self::is_closing(&closing) {
                return Err(Status::unavailable("node shutting down"));
            }
            let next = tokio::select! {
                next = inbound.message() => next?,
                changed = closing.changed() => {
                    if changed.is_err() {
                        return Err(Status::unavailable("node shutting down"));
                    }
                    continue;
                }
            };
            let Some(chunk) = next else { break };
            bump(&self.counters.snapshot_chunks_received, 1);
            asm.push(&chunk.data)?;
        }
        asm.finish()
    }
}

#[tonic::async_trait]
impl Raft for RaftService {
    type StreamStream = ReceiverStream<std::result::Result<RaftStreamReply, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<RaftBatch>>,
    ) -> std::result::Result<Response<Self::StreamStream>, Status> {
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(Arc::clone(&self.inner).pump(request.into_inner(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> std::result::Result<Response<SnapshotDone>, Status> {
        let inner = &self.inner;
        let Ok(_permit) = Arc::clone(&inner.snapshots).try_acquire_owned() else {
            bump(&inner.counters.snapshots_refused, 1);
            return Err(Status::resource_exhausted(format!(
                "{} snapshots already being received (max_inbound_snapshots)",
                inner.cfg.max_inbound_snapshots
            )));
        };
        match inner.receive_snapshot(request.into_inner()).await {
            Ok(msg) => {
                bump(&inner.counters.snapshots_received, 1);
                inner.raft.step(msg);
                Ok(Response::new(SnapshotDone {}))
            }
            Err(status) => {
                bump(&inner.counters.snapshots_refused, 1);
                tracing::warn!(code = ?status.code(), message = status.message(),
                    "raft snapshot refused");
                Err(status)
            }
        }
    }
}

/// A tonic server for the internal port serving only the `Raft` service (tests, and nodes
/// that do not mount it beside other internal services).
#[derive(Debug)]
pub struct InternalServer {
    addr: SocketAddr,
    closing: watch::Sender<bool>,
    task: JoinHandle<std::result::Result<(), tonic::transport::Error>>,
}

impl InternalServer {
    /// Serves `raft` on `listener` (bind it to port 0 for a free port), on the tokio runtime
    /// this is called from (`Invalid` outside one).
    pub fn start(
        listener: TcpListener,
        raft: RaftHandle,
        cfg: TransportConfig,
        counters: Arc<TransportCounters>,
    ) -> Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            RaftStoreError::Invalid("the internal server needs a tokio runtime".into())
        })?;
        let addr = listener.local_addr()?;
        let (closing, closing_rx) = watch::channel(false);
        let service = raft_service(raft, cfg, counters, closing_rx.clone());
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let mut stop = closing_rx;
        let task = runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop.wait_for(|closing| *closing).await;
                }),
        );
        Ok(Self {
            addr,
            closing,
            task,
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Ends every stream, stops accepting, and waits for the server to finish.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.closing.send(true);
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(RaftStoreError::Io(std::io::Error::other(e))),
            Err(e) => Err(RaftStoreError::Io(std::io::Error::other(e))),
        }
    }
}
