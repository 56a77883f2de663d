//! Bad input over the wire: every malformed or oversized request gets a clear error naming
//! what was wrong, and the node keeps serving.

use strata::server::{NodeConfig, Server};
use strata_proto::limits;
use strata_proto::v1 as pb;
use strata_proto::v1::{kv_client::KvClient, txn_client::TxnClient, ErrorDetail};
use tonic::transport::Channel;
use tonic::Code;

fn expect_error<T: std::fmt::Debug>(
    r: Result<T, tonic::Status>,
    code: Code,
    reason: &str,
) -> ErrorDetail {
    let status = r.expect_err("the request must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    let detail = ErrorDetail::from_status(&status).expect("an ErrorDetail");
    assert_eq!(detail.reason, reason, "{status:?}");
    assert!(!status.message().is_empty(), "a readable message");
    detail
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = NodeConfig::on_free_ports(dir.path());
    let handle = Server::start(config).await.expect("start");
    let ch = Channel::from_shared(format!("http://{}", handle.grpc_addr()))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let max = limits::MAX_MESSAGE_BYTES as usize;
    let mut kv = KvClient::new(ch.clone()).max_encoding_message_size(max);
    let mut txn = TxnClient::new(ch).max_encoding_message_size(max);

    // Empty and oversized keys, oversized values.
    expect_error(
        kv.put(pb::PutRequest {
            key: vec![],
            value: b"v".to_vec(),
        })
        .await,
        Code::InvalidArgument,
        "KEY_EMPTY",
    );
    let big_key = vec![b'k'; limits::MAX_KEY_BYTES as usize + 1];
    let d = expect_error(
        kv.get(pb::GetRequest {
            key: big_key,
            read_ts: 0,
        })
        .await,
        Code::InvalidArgument,
        "KEY_TOO_LARGE",
    );
    assert_eq!(
        (d.limit_name.as_str(), d.limit),
        ("max_key_bytes", limits::MAX_KEY_BYTES)
    );
    let big_value = vec![0u8; limits::MAX_VALUE_BYTES as usize + 1];
    let d = expect_error(
        kv.put(pb::PutRequest {
            key: b"k".to_vec(),
            value: big_value,
        })
        .await,
        Code::InvalidArgument,
        "VALUE_TOO_LARGE",
    );
    assert_eq!(d.limit_name, "max_value_bytes");
    // A scan with start after end.
    expect_error(
        kv.scan(pb::ScanRequest {
            start: b"z".to_vec(),
            end: b"a".to_vec(),
            limit: 1,
            reverse: false,
            read_ts: 0,
        })
        .await,
        Code::InvalidArgument,
        "INVALID_RANGE",
    );

    // Unknown transaction ids, and a commit after a rollback.
    expect_error(
        txn.commit(pb::CommitRequest { txn_id: 424_242 }).await,
        Code::NotFound,
        "TXN_NOT_FOUND",
    );
    let begin = pb::BeginRequest {
        isolation: pb::Isolation::Snapshot as i32,
        read_only: false,
    };
    let id = txn.begin(begin).await.expect("begin").into_inner().txn_id;
    txn.put(pb::TxnPutRequest {
        txn_id: id,
        key: b"k".to_vec(),
        value: b"v".to_vec(),
    })
    .await
    .expect("put");
    txn.rollback(pb::RollbackRequest { txn_id: id })
        .await
        .expect("rollback");
    expect_error(
        txn.commit(pb::CommitRequest { txn_id: id }).await,
        Code::NotFound,
        "TXN_NOT_FOUND",
    );
    expect_error(
        txn.get(pb::TxnGetRequest {
            txn_id: id,
            key: b"k".to_vec(),
        })
        .await,
        Code::NotFound,
        "TXN_NOT_FOUND",
    );

    // A transaction that buffers more than max_txn_bytes.
    let id = txn.begin(begin).await.expect("begin").into_inner().txn_id;
    let value = vec![1u8; limits::MAX_VALUE_BYTES as usize];
    let mut refused = None;
    for i in 0..(limits::MAX_TXN_BYTES / limits::MAX_VALUE_BYTES + 2) {
        let r = txn
            .put(pb::TxnPutRequest {
                txn_id: id,
                key: format!("big/{i}").into_bytes(),
                value: value.clone(),
            })
            .await;
        if r.is_err() {
            refused = Some(r);
            break;
        }
    }
    let d = expect_error(
        refused.expect("the transaction hits its size limit"),
        Code::InvalidArgument,
        "TXN_TOO_LARGE",
    );
    assert_eq!(d.limit_name, "max_txn_bytes");
    txn.rollback(pb::RollbackRequest { txn_id: id })
        .await
        .expect("rollback");

    // A read-only transaction refuses writes.
    let ro = pb::BeginRequest {
        isolation: pb::Isolation::Snapshot as i32,
        read_only: true,
    };
    let id = txn.begin(ro).await.expect("begin").into_inner().txn_id;
    expect_error(
        txn.put(pb::TxnPutRequest {
            txn_id: id,
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        })
        .await,
        Code::FailedPrecondition,
        "TXN_READ_ONLY",
    );

    // Still serving.
    kv.put(pb::PutRequest {
        key: b"alive".to_vec(),
        value: b"yes".to_vec(),
    })
    .await
    .expect("put after all that");
    let r = kv
        .get(pb::GetRequest {
            key: b"alive".to_vec(),
            read_ts: 0,
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(r.value, b"yes");
    handle.shutdown().await.expect("shutdown");
}
