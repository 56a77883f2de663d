//! Snapshots on their own RPC, in chunks: the sender splits a `MsgSnapshot`, the receiver
//! assembles it and hands it to Raft only once it is whole.
//!
//! ```text
//!   chunk 0: cluster, from, to, message = MsgSnapshot without its data,
//!            data_size, data_crc32c, data[0 .. c)
//!   chunk 1: data[c .. 2c)          (slices of one buffer: no copy on the sending side)
//!   ...
//!   chunk n: data[.. data_size)     end of stream -> size and CRC checked -> step
//! ```
//! The receiver refuses a snapshot announced larger than `max_snapshot_bytes` before taking
//! any of it (RESOURCE_EXHAUSTED), and one whose chunks overrun, fall short or fail the CRC
//! (INVALID_ARGUMENT / DATA_LOSS); a stream that breaks half-way is dropped with everything
//! assembled so far. The data stays opaque: what a snapshot holds is the state machine's
//! business. gRPC's flow control paces the chunks: the sender produces the next one only as
//! the connection's window opens.
//!
//! The assembly is in memory, as the snapshot itself is (`Apply::snapshot` returns bytes);
//! spilling large snapshots to disk comes with snapshots built from the LSM.

use bytes::{Bytes, BytesMut};
use strata_proto::internal::v1::raft_client::RaftClient;
use strata_proto::internal::v1::SnapshotChunk;
use tonic::Status;

use super::super::apply::RaftMessage;
use super::super::error::Result;
use super::super::types::{NodeId, PeerId};
use super::{bump, link, SendContext};

/// Splits `msg` (a `MsgSnapshot`) into chunks of at most `chunk_bytes` of data, the first
/// carrying the header and the message without its data.
pub(super) fn chunks(
    msg: &RaftMessage,
    cluster_id: u64,
    from: NodeId,
    to: NodeId,
    chunk_bytes: usize,
) -> Result<Vec<SnapshotChunk>> {
    let data: Bytes = msg.msg.get_snapshot().data.clone();
    let mut head = msg.clone();
    head.msg.mut_snapshot().data = Bytes::new();
    let message = Bytes::from(head.encode()?);
    let chunk = chunk_bytes.max(1);
    let n = data.len().div_ceil(chunk).max(1);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let piece = data.slice((i * chunk).min(data.len())..((i + 1) * chunk).min(data.len()));
        out.push(if i == 0 {
            SnapshotChunk {
                cluster_id,
                from_node: from.0,
                to_node: to.0,
                message: message.clone(),
                data_size: data.len() as u64,
                data_crc32c: crc32c::crc32c(&data),
                data: piece,
            }
        } else {
            SnapshotChunk {
                data: piece,
                ..Default::default()
            }
        });
    }
    Ok(out)
}

/// A snapshot being received.
#[derive(Debug)]
pub struct SnapshotAssembler {
    head: RaftMessage,
    size: u64,
    crc: u32,
    data: BytesMut,
}

impl SnapshotAssembler {
    /// Starts from the first chunk (whose header the caller has checked); refuses a snapshot
    /// larger than `max_bytes` before taking any of it.
    pub fn begin(first: &SnapshotChunk, max_bytes: u64) -> std::result::Result<Self, Status> {
        if first.data_size > max_bytes {
            return Err(Status::resource_exhausted(format!(
                "snapshot of {} bytes is over max_snapshot_bytes = {max_bytes}",
                first.data_size
            )));
        }
        let head = RaftMessage::decode(&first.message)
            .map_err(|e| Status::invalid_argument(format!("snapshot message: {e}")))?;
        if head.msg.get_msg_type() != raft::eraftpb::MessageType::MsgSnapshot {
            return Err(Status::invalid_argument(format!(
                "snapshot stream carries a {:?}",
                head.msg.get_msg_type()
            )));
        }
        let size = first.data_size;
        let capacity = usize::try_from(size).unwrap_or(usize::MAX).min(64 << 20);
        let mut this = Self {
            head,
            size,
            crc: first.data_crc32c,
            data: BytesMut::with_capacity(capacity),
        };
        this.push(&first.data)?;
        Ok(this)
    }

    /// Adds the next piece of data.
    pub fn push(&mut self, piece: &[u8]) -> std::result::Result<(), Status> {
        if self.data.len() as u64 + piece.len() as u64 > self.size {
            return Err(Status::invalid_argument(format!(
                "snapshot data overruns its announced {} bytes",
                self.size
            )));
        }
        self.data.extend_from_slice(piece);
        Ok(())
    }

    /// The whole snapshot message, once every byte arrived intact.
    pub fn finish(self) -> std::result::Result<RaftMessage, Status> {
        if self.data.len() as u64 != self.size {
            return Err(Status::invalid_argument(format!(
                "snapshot ended after {} of {} bytes",
                self.data.len(),
                self.size
            )));
        }
        let data = self.data.freeze();
        if crc32c::crc32c(&data) != self.crc {
            return Err(Status::data_loss("snapshot data fails its CRC-32C"));
        }
        let mut msg = self.head;
        msg.msg.mut_snapshot().data = data;
        Ok(msg)
    }
}

/// Sends one snapshot to `node` and reports the outcome to raft-rs.
pub(super) async fn send(node: NodeId, msg: RaftMessage, ctx: &SendContext) {
    let (shard, peer) = (msg.shard, PeerId(msg.msg.to));
    match attempt(node, &msg, ctx).await {
        Ok(chunks) => {
            bump(&ctx.counters.snapshots_sent, 1);
            bump(&ctx.counters.snapshot_chunks_sent, chunks);
            ctx.raft.report_snapshot(shard, peer, true);
        }
        Err(why) => {
            bump(&ctx.counters.snapshots_failed, 1);
            tracing::warn!(%shard, to = %peer, %why, "raft snapshot not delivered");
            ctx.raft.report_snapshot(shard, peer, false);
        }
    }
}

async fn attempt(
    node: NodeId,
    msg: &RaftMessage,
    ctx: &SendContext,
) -> std::result::Result<u64, String> {
    let (addr, _) = ctx
        .book
        .lookup(node)
        .ok_or_else(|| format!("no address for {node}"))?;
    let channel = link::connect(&addr, &ctx.cfg).await?;
    let max = ctx.cfg.max_message_bytes;
    let mut client = RaftClient::new(channel)
        .max_encoding_message_size(max)
        .max_decoding_message_size(max);
    let chunk_bytes = ctx.cfg.snapshot_chunk_bytes.min(max / 2).max(1);
    let chunks = chunks(msg, ctx.cfg.cluster_id, ctx.cfg.node_id, node, chunk_bytes)
        .map_err(|e| e.to_string())?;
    let n = chunks.len() as u64;
    client
        .snapshot(tokio_stream::iter(chunks))
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
    Ok(n)
}
