//! The wire contract: every message survives a prost round trip, an `ErrorDetail` survives a
//! `tonic::Status` (in memory and over a real loopback connection), and the descriptor set
//! covers every service.

use std::fmt::Debug;

use prost::Message;
use strata_proto::v1::{self, *};
use tonic::{Code, Request, Response, Status};

/// Encodes and decodes `message`, checks nothing is lost, and that a set field is on the wire.
fn roundtrip<M: Message + Default + PartialEq + Debug>(message: M) {
    let bytes = message.encode_to_vec();
    let decoded = M::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(decoded, message);
    if message != M::default() {
        assert!(!bytes.is_empty(), "{message:?} encoded to nothing");
    }
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value.into(),
    }
}

fn found(key: &str, value: &str) -> GetResult {
    GetResult {
        key: key.into(),
        found: true,
        value: value.into(),
    }
}

fn absent(key: &str) -> GetResult {
    GetResult {
        key: key.into(),
        found: false,
        value: Vec::new(),
    }
}

#[test]
fn common_messages_roundtrip() {
    roundtrip(kv("k", "v"));
    roundtrip(found("k", ""));
    roundtrip(absent("k"));
    roundtrip(ErrorDetail {
        reason: "KEY_LOCKED".into(),
        retryable: true,
        limit_name: "max_key_bytes".into(),
        limit: 8192,
        key: b"\x00\xffkey".to_vec(),
        conflicting_start_ts: 1 << 40,
        conflicting_commit_ts: (1 << 40) + 7,
        primary_key: b"primary".to_vec(),
        lock_ttl_ms: 3000,
        start_ts: 42,
        txn_id: 9,
        safe_point: 17,
        retry_after_ms: 50,
        field: "keys[3]".into(),
        leader_node_id: 2,
        leader_endpoint: "strata-1.strata-peer:20160".into(),
    });
}

#[test]
fn kv_messages_roundtrip() {
    roundtrip(GetRequest {
        key: b"k".to_vec(),
        read_ts: 5,
    });
    roundtrip(GetResponse {
        found: true,
        value: b"v".to_vec(),
        read_ts: 5,
    });
    roundtrip(BatchGetRequest {
        keys: vec![b"a".to_vec(), b"b".to_vec(), b"a".to_vec()],
        read_ts: 0,
    });
    roundtrip(BatchGetResponse {
        results: vec![found("a", "1"), absent("b"), found("a", "1")],
        read_ts: 11,
    });
    roundtrip(PutRequest {
        key: b"k".to_vec(),
        value: vec![0; 1000],
    });
    roundtrip(PutResponse { commit_ts: 12 });
    roundtrip(DeleteRequest { key: b"k".to_vec() });
    roundtrip(DeleteResponse { commit_ts: 13 });
    roundtrip(ScanRequest {
        start: b"a".to_vec(),
        end: b"z".to_vec(),
        limit: 10_000,
        reverse: true,
        read_ts: 14,
    });
    roundtrip(ScanResponse {
        kvs: vec![kv("y", "2"), kv("b", "1")],
        more: true,
        read_ts: 14,
    });
    roundtrip(KvBatchRequest {
        calls: vec![
            KvCall {
                id: 1,
                call: Some(kv_call::Call::Put(PutRequest {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                })),
            },
            KvCall {
                id: u64::MAX,
                call: Some(kv_call::Call::Get(GetRequest {
                    key: b"k".to_vec(),
                    read_ts: 3,
                })),
            },
            KvCall { id: 2, call: None },
        ],
    });
    let mut detail = ErrorDetail::new(ErrorReason::KeyEmpty);
    detail.limit_name = "max_key_bytes".into();
    roundtrip(KvBatchResponse {
        results: vec![
            KvResult {
                id: u64::MAX,
                result: Some(kv_result::Result::Get(GetResponse {
                    found: true,
                    value: b"v".to_vec(),
                    read_ts: 3,
                })),
            },
            KvResult {
                id: 2,
                result: Some(kv_result::Result::Error(CallError {
                    code: Code::InvalidArgument as i32,
                    message: "empty key".into(),
                    detail: Some(detail),
                })),
            },
        ],
    });
}

#[test]
fn txn_messages_roundtrip() {
    roundtrip(BeginRequest {
        isolation: Isolation::Serializable as i32,
        read_only: true,
    });
    roundtrip(BeginResponse {
        txn_id: 1,
        start_ts: 100,
        idle_timeout_ms: 60_000,
    });
    roundtrip(TxnGetRequest {
        txn_id: 1,
        key: b"k".to_vec(),
    });
    roundtrip(TxnGetResponse {
        found: true,
        value: Vec::new(),
    });
    roundtrip(TxnBatchGetRequest {
        txn_id: 1,
        keys: vec![b"a".to_vec()],
    });
    roundtrip(TxnBatchGetResponse {
        results: vec![absent("a")],
    });
    roundtrip(TxnScanRequest {
        txn_id: 1,
        start: Vec::new(),
        end: b"m".to_vec(),
        limit: 0,
        reverse: false,
    });
    roundtrip(TxnScanResponse {
        kvs: vec![kv("a", "1")],
        more: false,
    });
    roundtrip(TxnPutRequest {
        txn_id: 1,
        key: b"k".to_vec(),
        value: b"v".to_vec(),
    });
    roundtrip(TxnPutResponse {});
    roundtrip(TxnDeleteRequest {
        txn_id: 1,
        key: b"k".to_vec(),
    });
    roundtrip(TxnDeleteResponse {});
    roundtrip(CommitRequest { txn_id: 1 });
    roundtrip(CommitResponse { commit_ts: 101 });
    roundtrip(RollbackRequest { txn_id: 1 });
    roundtrip(RollbackResponse {});
    roundtrip(HeartbeatRequest { txn_id: 1 });
    roundtrip(HeartbeatResponse {
        idle_timeout_ms: 60_000,
    });
    roundtrip(ExecuteRequest {
        isolation: Isolation::Snapshot as i32,
        preconditions: vec![
            Precondition {
                key: b"a".to_vec(),
                kind: precondition::Kind::Exists as i32,
                value: Vec::new(),
            },
            Precondition {
                key: b"b".to_vec(),
                kind: precondition::Kind::NotExists as i32,
                value: Vec::new(),
            },
            Precondition {
                key: b"c".to_vec(),
                kind: precondition::Kind::ValueEquals as i32,
                value: b"old".to_vec(),
            },
        ],
        reads: vec![b"c".to_vec()],
        mutations: vec![
            Mutation {
                kind: mutation::Kind::Put as i32,
                key: b"c".to_vec(),
                value: b"new".to_vec(),
            },
            Mutation {
                kind: mutation::Kind::Delete as i32,
                key: b"a".to_vec(),
                value: Vec::new(),
            },
        ],
    });
    roundtrip(ExecuteResponse {
        succeeded: false,
        failed_preconditions: vec![0, 2],
        reads: vec![found("c", "older")],
        start_ts: 200,
        commit_ts: 0,
    });
}

#[test]
fn admin_messages_roundtrip() {
    roundtrip(StatusRequest {});
    roundtrip(StatusResponse {
        node_id: 1,
        version: "0.1.0".into(),
        uptime_seconds: 3600,
        engine: Some(EngineStats {
            write_amplification: 7.5,
            read_amplification: 1.25,
            space_amplification: 1.1,
            levels: vec![
                LevelStats {
                    level: 0,
                    files: 2,
                    bytes: 1 << 20,
                    score: 0.5,
                },
                LevelStats {
                    level: 1,
                    files: 10,
                    bytes: 10 << 20,
                    score: 1.2,
                },
            ],
            total_sst_bytes: 11 << 20,
            memtable_bytes: 1 << 16,
            immutable_memtables: 1,
            live_bytes_estimate: 10 << 20,
            user_bytes_written: 1 << 30,
            wal_bytes_written: 1 << 30,
            wal_syncs: 1000,
            flushes: 20,
            compactions: 30,
            compaction_bytes_read: 1 << 31,
            compaction_bytes_written: 1 << 31,
            gets: 5000,
            block_cache_hits: 4000,
            block_cache_misses: 1000,
            block_cache_bytes: 1 << 25,
            write_stalls: 3,
            write_stall_micros: 1500,
            background_errors: 0,
        }),
        active_transactions: 4,
        gc_safe_point: 99,
        replicated: true,
        members: vec![ClusterMember {
            node_id: 2,
            raft_addr: "strata-1.strata-peers.ns.svc:20170".into(),
            grpc_addr: "strata-1.strata-peers.ns.svc:7379".into(),
            voter: true,
            incarnation: "9f00".into(),
        }],
        replicas: vec![ReplicaStatus {
            shard_id: 1,
            node_id: 2,
            peer_id: 12,
            role: ReplicaRole::Follower as i32,
            term: 7,
            leader_peer_id: 11,
            commit_index: 100,
            applied_index: 99,
            lag: 1,
            leader_node_id: 1,
            recently_active: true,
        }],
        raft_addr: "strata-1.strata-peers.ns.svc:20170".into(),
        grpc_addr: "strata-1.strata-peers.ns.svc:7379".into(),
        incarnation: "9f00".into(),
        counters: Some(NodeCounters {
            cpu_seconds: 12.34,
            raft_log_writes: 1200,
            raft_log_syncs: 1100,
            engine_wal_syncs: 3,
            raft_proposals: 4000,
            raft_proposal_readies: 1000,
            raft_readies: 1300,
            raft_messages_stepped: 2600,
            raft_log_bytes: 1 << 26,
            blind_writes_committed: 3900,
            blind_writes_declined: 100,
            latest_reads_served: 5200,
            latest_reads_declined: 40,
        }),
        recovery: Some(RecoveryInfo {
            applied_index_at_open: 28_017,
            last_index_at_open: 32_778,
            raft_log_bytes_at_open: 1 << 28,
            open_seconds: 0.15,
        }),
        removed: true,
    });
    roundtrip(AddNodeRequest {
        node_id: 4,
        raft_addr: "strata-3.strata-peers.ns.svc:20170".into(),
        grpc_addr: "strata-3.strata-peers.ns.svc:7379".into(),
        incarnation: "ab".into(),
        catch_up_timeout_ms: 5000,
    });
    roundtrip(DecommissionResponse {
        state: DrainState::Drained as i32,
        members: Vec::new(),
        summary: "removed node 4".into(),
    });
    roundtrip(GetGcSafePointRequest {});
    roundtrip(GetGcSafePointResponse { safe_point: 99 });
}

#[test]
fn the_cluster_fields_of_status_are_new_field_numbers() {
    // A response from a server before the cluster fields: the same bytes decode, the new
    // fields at their defaults; the node fields keep their numbers (1..=6), the cluster
    // ones start at 20.
    let old = StatusResponse {
        node_id: 3,
        version: "0.1.0".into(),
        gc_safe_point: 5,
        ..StatusResponse::default()
    };
    let bytes = old.encode_to_vec();
    assert_eq!(bytes[0], 1 << 3, "node_id is field 1, a varint");
    let back = StatusResponse::decode(bytes.as_slice()).unwrap();
    assert!(!back.replicated && back.members.is_empty() && back.replicas.is_empty());
    let new = StatusResponse {
        replicated: true,
        ..StatusResponse::default()
    };
    // Field 20, varint: tag (20 << 3) | 0 = 160, two varint bytes.
    assert_eq!(new.encode_to_vec(), vec![0xa0, 0x01, 0x01]);
}

/// Every reason, by name, as the server will send it.
const ALL_REASONS: &[ErrorReason] = &[
    ErrorReason::WriteConflict,
    ErrorReason::TxnRolledBack,
    ErrorReason::KeyLocked,
    ErrorReason::TxnNotFound,
    ErrorReason::KeyEmpty,
    ErrorReason::KeyTooLarge,
    ErrorReason::ValueTooLarge,
    ErrorReason::BatchTooLarge,
    ErrorReason::ScanLimitTooLarge,
    ErrorReason::TxnTooLarge,
    ErrorReason::InvalidRange,
    ErrorReason::InvalidField,
    ErrorReason::ReadTsInFuture,
    ErrorReason::TxnReadOnly,
    ErrorReason::ReadBelowSafePoint,
    ErrorReason::ServerBusy,
    ErrorReason::TooManyTxns,
    ErrorReason::ResponseTooLarge,
    ErrorReason::TimestampUnavailable,
    ErrorReason::StorageError,
    ErrorReason::DataCorrupted,
    ErrorReason::TxnNotActive,
    ErrorReason::NotLeader,
    ErrorReason::OutcomeUnknown,
    ErrorReason::NodeRemoved,
];

#[test]
fn error_detail_roundtrips_through_a_status() {
    for &reason in ALL_REASONS {
        let mut detail = ErrorDetail::new(reason);
        detail.key = b"key".to_vec();
        detail.start_ts = 7;
        let status = detail
            .clone()
            .into_status(format!("failed: {}", reason.reason()));
        assert_eq!(status.code(), reason.code());
        assert_eq!(status.message(), format!("failed: {}", reason.reason()));
        let back = ErrorDetail::from_status(&status).expect("the status carries the detail");
        assert_eq!(back, detail);
        assert_eq!(back.reason_enum(), Some(reason));
        assert_eq!(back.retryable, reason.is_retryable());
    }
}

#[test]
fn error_detail_survives_status_with_details_built_by_hand() {
    // A status built directly with `Status::with_details` (here: the bytes of one built by
    // the helper, under another code) decodes the same.
    let mut detail = ErrorDetail::new(ErrorReason::KeyTooLarge);
    detail.limit_name = "max_key_bytes".into();
    detail.limit = strata_proto::limits::MAX_KEY_BYTES;
    let details = detail.clone().into_status("too large").details().to_vec();
    let status = Status::with_details(Code::InvalidArgument, "too large", details.into());
    assert_eq!(ErrorDetail::from_status(&status), Some(detail));
}

#[test]
fn the_limits_and_the_reason_table_agree_with_the_brief() {
    use strata_proto::limits::*;
    assert_eq!(MAX_KEY_BYTES, 8 * 1024);
    assert_eq!(MAX_VALUE_BYTES, 8 * 1024 * 1024);
    assert_eq!(MAX_SCAN_LIMIT, 10_000);
    // A maximal key and value fit in one message, with room for framing.
    const LARGEST_PAIR: u64 = MAX_KEY_BYTES + MAX_VALUE_BYTES + 1024;
    const { assert!(LARGEST_PAIR < MAX_MESSAGE_BYTES) };
    const { assert!(SCAN_RESPONSE_BYTES + LARGEST_PAIR < MAX_MESSAGE_BYTES) };
    // A BatchGet or Execute response at max_response_bytes fits one message: each of at most
    // max_batch_keys results adds under 16 bytes of framing. A maximal pair fits the budget.
    const { assert!(MAX_RESPONSE_BYTES + MAX_BATCH_KEYS * 16 + 1024 < MAX_MESSAGE_BYTES) };
    const { assert!(LARGEST_PAIR < MAX_RESPONSE_BYTES) };
    // One transaction fits in the node's default budget of open transactions.
    const { assert!(MAX_TXN_BYTES < MAX_OPEN_TXN_BYTES) };

    assert_eq!(ErrorReason::WriteConflict.code(), Code::Aborted);
    assert_eq!(ErrorReason::TxnRolledBack.code(), Code::Aborted);
    assert_eq!(ErrorReason::KeyLocked.code(), Code::Aborted);
    assert_eq!(ErrorReason::KeyTooLarge.code(), Code::InvalidArgument);
    assert_eq!(ErrorReason::ServerBusy.code(), Code::ResourceExhausted);
    assert_eq!(ErrorReason::TxnNotFound.code(), Code::NotFound);
    assert_eq!(
        ErrorReason::ReadBelowSafePoint.code(),
        Code::FailedPrecondition
    );
    for &reason in ALL_REASONS {
        if reason.code() == Code::Aborted {
            assert!(reason.is_retryable(), "{reason:?}: conflicts are retryable");
        }
        if reason.code() == Code::InvalidArgument {
            assert!(!reason.is_retryable(), "{reason:?}: bad input is not");
        }
    }
}

#[test]
fn the_descriptor_set_covers_every_service() {
    let set = v1::FILE_DESCRIPTOR_SET;
    let contains = |needle: &str| set.windows(needle.len()).any(|w| w == needle.as_bytes());
    for file in ["common.proto", "kv.proto", "txn.proto", "admin.proto"] {
        assert!(contains(&format!("strata/v1/{file}")), "{file} missing");
    }
    for name in ["Kv", "Txn", "Admin", "ErrorDetail", "ExecuteRequest"] {
        assert!(contains(name), "{name} missing");
    }
}

#[test]
fn the_internal_protocol_roundtrips_and_stays_out_of_the_public_descriptor_set() {
    use strata_proto::internal::v1::{RaftBatch, RaftStreamReply, SnapshotChunk};
    roundtrip(RaftBatch {
        cluster_id: 7,
        from_node: 1,
        to_node: 2,
        messages: vec![vec![1u8, 2, 3].into(), Vec::new().into()],
    });
    roundtrip(RaftStreamReply { node_id: 2 });
    roundtrip(SnapshotChunk {
        cluster_id: 7,
        from_node: 1,
        to_node: 2,
        message: vec![9u8; 10].into(),
        data_size: 1 << 33,
        data_crc32c: 0xdead_beef,
        data: vec![0u8; 100].into(),
    });
    // The client port's reflection serves this set: it must not reveal the internal port.
    let set = v1::FILE_DESCRIPTOR_SET;
    let contains = |needle: &str| set.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(!contains("strata.internal") && !contains("RaftBatch"));
}

/// A Kv server that stores nothing: Get finds "hello", Put fails with a write conflict.
#[derive(Debug)]
struct StubKv;

#[tonic::async_trait]
impl kv_server::Kv for StubKv {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        Ok(Response::new(GetResponse {
            found: request.get_ref().key == b"hello",
            value: b"world".to_vec(),
            read_ts: 1,
        }))
    }

    async fn batch_get(
        &self,
        _: Request<BatchGetRequest>,
    ) -> Result<Response<BatchGetResponse>, Status> {
        Err(Status::unimplemented("stub"))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let mut detail = ErrorDetail::new(ErrorReason::WriteConflict);
        detail.key = request.into_inner().key;
        detail.conflicting_start_ts = 3;
        detail.conflicting_commit_ts = 4;
        detail.start_ts = 2;
        Err(detail.into_status("write conflict"))
    }

    async fn delete(&self, _: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        Err(Status::unimplemented("stub"))
    }

    async fn scan(&self, _: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        Err(Status::unimplemented("stub"))
    }

    type BatchStream = tonic::Streaming<KvBatchResponse>;

    async fn batch(
        &self,
        _: Request<tonic::Streaming<KvBatchRequest>>,
    ) -> Result<Response<Self::BatchStream>, Status> {
        Err(Status::unimplemented("stub"))
    }
}

#[tokio::test]
async fn error_detail_crosses_a_real_connection() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(kv_server::KvServer::new(StubKv))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );

    let mut client = kv_client::KvClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let got = client
        .get(GetRequest {
            key: b"hello".to_vec(),
            read_ts: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.found);
    assert_eq!(got.value, b"world");

    let status = client
        .put(PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(status.message(), "write conflict");
    let detail = ErrorDetail::from_status(&status).expect("the detail crossed the wire");
    assert_eq!(detail.reason, "WRITE_CONFLICT");
    assert!(detail.retryable);
    assert_eq!(detail.key, b"k");
    assert_eq!(
        (detail.conflicting_start_ts, detail.conflicting_commit_ts),
        (3, 4)
    );

    let unimplemented = client.scan(ScanRequest::default()).await.unwrap_err();
    assert_eq!(unimplemented.code(), Code::Unimplemented);
    assert_eq!(ErrorDetail::from_status(&unimplemented), None);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
