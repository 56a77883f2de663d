//! The transport's edges, over a real loopback connection: headers that name another node
//! or cluster are refused before anything reaches the driver, snapshots reach it only whole,
//! and the sender's backoff and drop accounting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::eraftpb::{Message, MessageType};
use strata_proto::internal::v1::raft_client::RaftClient;
use strata_proto::internal::v1::{RaftBatch, SnapshotChunk};
use tokio::net::TcpListener;
use tonic::Code;

use super::super::apply::{RaftMessage, Transport};
use super::super::driver::{DriverConfig, RaftDriver, RaftHandle};
use super::super::log_store::LogStore;
use super::super::peer::PeerConfig;
use super::super::store::RaftStore;
use super::super::types::{NodeId, ShardId};
use super::link::Backoff;
use super::snapshot::{chunks, SnapshotAssembler};
use super::*;

const CLUSTER: u64 = 7;

#[derive(Debug)]
struct Nowhere;

impl Transport for Nowhere {
    fn send(&mut self, _msg: RaftMessage) {}
}

/// A driver over a store with no replica: every message stepped into it counts as a step
/// error, so its stats tell exactly how many messages got through.
fn empty_driver(dir: &tempfile::TempDir) -> RaftHandle {
    let log = LogStore::open(dir.path()).unwrap();
    let store = RaftStore::new(log, Nowhere, PeerConfig::default());
    RaftDriver::new(DriverConfig {
        tick: Duration::from_millis(10),
        ..DriverConfig::default()
    })
    .start(store)
    .unwrap()
}

fn config(node: u64) -> TransportConfig {
    TransportConfig {
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        connect_timeout: Duration::from_millis(500),
        ..TransportConfig::new(CLUSTER, NodeId(node))
    }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn heartbeat(to: u64) -> RaftMessage {
    let mut msg = Message::default();
    msg.set_msg_type(MessageType::MsgHeartbeat);
    msg.from = 1;
    msg.to = to;
    msg.term = 3;
    RaftMessage {
        shard: ShardId(1),
        msg,
    }
}

fn snapshot_msg(to: u64, data: Vec<u8>) -> RaftMessage {
    let mut msg = Message::default();
    msg.set_msg_type(MessageType::MsgSnapshot);
    msg.from = 1;
    msg.to = to;
    msg.term = 3;
    let snap = msg.mut_snapshot();
    snap.data = data.into();
    snap.mut_metadata().index = 42;
    snap.mut_metadata().term = 3;
    RaftMessage {
        shard: ShardId(1),
        msg,
    }
}

struct Receiver {
    _dir: tempfile::TempDir,
    raft: RaftHandle,
    server: InternalServer,
    counters: Arc<TransportCounters>,
}

impl Receiver {
    async fn start(cfg: TransportConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let raft = empty_driver(&dir);
        let counters = Arc::new(TransportCounters::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = InternalServer::start(listener, raft.clone(), cfg, counters.clone()).unwrap();
        Self {
            _dir: dir,
            raft,
            server,
            counters,
        }
    }

    async fn client(&self) -> RaftClient<tonic::transport::Channel> {
        RaftClient::connect(format!("http://{}", self.server.local_addr()))
            .await
            .unwrap()
    }

    /// Messages that reached the driver (stepped or refused by the store).
    fn reached_driver(&self) -> u64 {
        let s = self.raft.stats();
        s.messages_stepped + s.step_errors
    }

    async fn stop(self) {
        self.server.shutdown().await.unwrap();
        self.raft.shutdown().unwrap();
    }
}

fn batch(cluster_id: u64, from: u64, to: u64) -> RaftBatch {
    RaftBatch {
        cluster_id,
        from_node: from,
        to_node: to,
        messages: vec![Bytes::from(heartbeat(to).encode().unwrap())],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_meant_for_another_node_or_cluster_is_refused() {
    let rx = Receiver::start(config(2)).await;
    let mut client = rx.client().await;
    for (bad, what) in [
        (batch(CLUSTER, 1, 3), "another node"),
        (batch(CLUSTER + 1, 1, 2), "another cluster"),
        (batch(CLUSTER, 2, 2), "from itself"),
        (batch(CLUSTER, 0, 2), "from node 0"),
    ] {
        let mut replies = client
            .stream(tokio_stream::iter(vec![bad]))
            .await
            .unwrap()
            .into_inner();
        let status = replies.message().await.expect_err(what);
        assert_eq!(
            status.code(),
            Code::FailedPrecondition,
            "{what}: {status:?}"
        );
    }
    assert_eq!(rx.counters.stats().refused_headers, 4);
    // A batch with the right header is accepted and reaches the driver.
    let mut replies = client
        .stream(tokio_stream::iter(vec![batch(CLUSTER, 1, 2)]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    assert_eq!(reply.node_id, 2);
    wait_for("the accepted message in the driver", || {
        rx.reached_driver() == 1
    })
    .await;

    // A sender whose address book sends node 3's traffic to node 2 is refused and counts it.
    let book = AddressBook::new();
    book.set(NodeId(3), rx.server.local_addr().to_string());
    let dir = tempfile::tempdir().unwrap();
    let sender_raft = empty_driver(&dir);
    let mut transport = GrpcTransport::new(
        config(1),
        Arc::new(PeerIdIsNodeId),
        book,
        NetFaults::default(),
        sender_raft.clone(),
        tokio::runtime::Handle::current(),
    );
    let counters = transport.counters();
    transport.send(heartbeat(3));
    wait_for("the refusal", || counters.stats().streams_refused >= 1).await;
    // No address at all: dropped and counted, nothing waits.
    transport.send(heartbeat(4));
    wait_for("the unresolved drop", || {
        counters.stats().dropped_unresolved >= 1
    })
    .await;
    assert_eq!(
        rx.reached_driver(),
        1,
        "no misrouted message reached the driver"
    );
    drop(transport);
    sender_raft.shutdown().unwrap();
    rx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_reaches_the_driver_only_whole_and_within_bounds() {
    let cfg = TransportConfig {
        max_snapshot_bytes: 100_000,
        ..config(2)
    };
    let rx = Receiver::start(cfg).await;
    let mut client = rx.client().await;
    let data: Vec<u8> = (0..80_000u32).map(|i| (i % 251) as u8).collect();
    let msg = snapshot_msg(2, data.clone());
    let pieces = chunks(&msg, CLUSTER, NodeId(1), NodeId(2), 16 << 10).unwrap();
    assert_eq!(pieces.len(), 5);

    // Cut short: the stream ends after three of five chunks.
    let err = client
        .snapshot(tokio_stream::iter(pieces[..3].to_vec()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // Damaged: one byte of one chunk flipped.
    let mut damaged = pieces.clone();
    let mut piece = damaged[2].data.to_vec();
    piece[7] ^= 1;
    damaged[2].data = piece.into();
    let err = client
        .snapshot(tokio_stream::iter(damaged))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    // Too large: refused on the first chunk.
    let big = snapshot_msg(2, vec![0; 100_001]);
    let err = client
        .snapshot(tokio_stream::iter(
            chunks(&big, CLUSTER, NodeId(1), NodeId(2), 16 << 10).unwrap(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("max_snapshot_bytes"), "{err:?}");
    // Misrouted: refused like a batch.
    let err = client
        .snapshot(tokio_stream::iter(
            chunks(&msg, CLUSTER, NodeId(1), NodeId(5), 16 << 10).unwrap(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(rx.counters.stats().snapshots_refused, 4);
    assert_eq!(
        rx.reached_driver(),
        0,
        "no partial snapshot reached the driver"
    );

    // Whole: accepted, handed over once.
    client.snapshot(tokio_stream::iter(pieces)).await.unwrap();
    wait_for("the snapshot in the driver", || rx.reached_driver() == 1).await;
    let s = rx.counters.stats();
    assert_eq!(s.snapshots_received, 1, "{s:?}");
    rx.stop().await;
}

#[test]
fn chunks_reassemble_to_the_same_message() {
    let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7) as u8).collect();
    let msg = snapshot_msg(2, data);
    let pieces = chunks(&msg, CLUSTER, NodeId(1), NodeId(2), 10_000).unwrap();
    assert_eq!(pieces.len(), 5);
    assert!(pieces[1..]
        .iter()
        .all(|c| c.message.is_empty() && c.data_size == 0));
    let mut asm = SnapshotAssembler::begin(&pieces[0], 1 << 20).unwrap();
    for c in &pieces[1..] {
        asm.push(&c.data).unwrap();
    }
    assert_eq!(asm.finish().unwrap(), msg);
    // An empty snapshot is one chunk; data past the announced size is refused.
    let empty = snapshot_msg(2, Vec::new());
    let one = chunks(&empty, CLUSTER, NodeId(1), NodeId(2), 10_000).unwrap();
    assert_eq!(one.len(), 1);
    let mut asm = SnapshotAssembler::begin(&one[0], 1 << 20).unwrap();
    assert!(asm.push(b"x").is_err());
    assert_eq!(asm.finish().unwrap(), empty);
    // A first chunk that is not a snapshot message is refused.
    let not_snapshot = SnapshotChunk {
        message: Bytes::from(heartbeat(2).encode().unwrap()),
        ..SnapshotChunk::default()
    };
    let err = SnapshotAssembler::begin(&not_snapshot, 1 << 20).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[test]
fn backoff_doubles_up_to_its_cap_and_resets() {
    let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(45));
    let waits: Vec<u128> = (0..5).map(|_| b.next_wait().as_millis()).collect();
    assert_eq!(waits, vec![10, 20, 40, 45, 45]);
    b.reset();
    assert_eq!(b.next_wait().as_millis(), 10);
}
