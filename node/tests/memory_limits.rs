//! Memory bounds over the wire: scans stop reading at the response budget and say where to
//! continue, point-read batches past `max_response_bytes` fail cleanly, SERIALIZABLE read
//! sets count against `max_txn_bytes`, and the node-wide budget of open transactions
//! refuses new work with a retryable `SERVER_BUSY`. After each, the node keeps serving.

use strata::server::{NodeConfig, Server, ServerHandle};
use strata_proto::limits;
use strata_proto::v1 as pb;
use strata_proto::v1::{
    admin_client::AdminClient, kv_client::KvClient, txn_client::TxnClient, ErrorDetail,
};
use tonic::transport::Channel;
use tonic::Code;

struct Client {
    kv: KvClient<Channel>,
    txn: TxnClient<Channel>,
    admin: AdminClient<Channel>,
}

async fn start(
    configure: impl FnOnce(&mut NodeConfig),
) -> (tempfile::TempDir, ServerHandle, Client) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = NodeConfig::on_free_ports(dir.path());
    config.engine.memtable_mb = 8;
    configure(&mut config);
    let handle = Server::start(config).await.expect("start");
    let ch = Channel::from_shared(format!("http://{}", handle.grpc_addr()))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let max = limits::MAX_MESSAGE_BYTES as usize;
    let client = Client {
        kv: KvClient::new(ch.clone())
            .max_encoding_message_size(max)
            .max_decoding_message_size(max),
        txn: TxnClient::new(ch.clone())
            .max_encoding_message_size(max)
            .max_decoding_message_size(max),
        admin: AdminClient::new(ch),
    };
    (dir, handle, client)
}

fn expect_error<T: std::fmt::Debug>(
    r: Result<T, tonic::Status>,
    code: Code,
    reason: &str,
) -> ErrorDetail {
    let status = r.expect_err("the request must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    let detail = ErrorDetail::from_status(&status).expect("an ErrorDetail");
    assert_eq!(detail.reason, reason, "{status:?}");
    detail
}

/// Checks that `r` is the refusal of a point-read batch past `max_response_bytes`.
fn response_too_large<T: std::fmt::Debug>(r: Result<T, tonic::Status>) {
    let d = expect_error(r, Code::ResourceExhausted, "RESPONSE_TOO_LARGE");
    assert_eq!(
        (d.limit_name.as_str(), d.limit, d.retryable),
        ("max_response_bytes", limits::MAX_RESPONSE_BYTES, false)
    );
}

impl Client {
    async fn put(&mut self, key: &[u8], value: Vec<u8>) {
        self.kv
            .put(pb::PutRequest {
                key: key.to_vec(),
                value,
            })
            .await
            .expect("put");
    }

    async fn get(&mut self, key: &[u8]) -> Result<pb::GetResponse, tonic::Status> {
        self.kv
            .get(pb::GetRequest {
                key: key.to_vec(),
                read_ts: 0,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Engine point reads so far (each value stored apart from its commit record is one).
    async fn engine_gets(&mut self) -> u64 {
        let status = self
            .admin
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        status.engine.expect("engine stats").gets
    }

    async fn begin(&mut self, isolation: pb::Isolation) -> Result<u64, tonic::Status> {
        self.txn
            .begin(pb::BeginRequest {
                isolation: isolation as i32,
                read_only: false,
            })
            .await
            .map(|r| r.into_inner().txn_id)
    }
}

/// Pages through the whole key space with `Kv.Scan` at one snapshot, continuing as
/// `ScanResponse.more` documents; returns the pairs in key order and the page sizes.
async fn scan_all(c: &mut Client, reverse: bool) -> (Vec<pb::KeyValue>, Vec<usize>) {
    let (mut start, mut end, mut read_ts) = (Vec::new(), Vec::new(), 0);
    let (mut all, mut pages) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        let r =
            c.kv.scan(pb::ScanRequest {
                start: start.clone(),
                end: end.clone(),
                limit: 0,
                reverse,
                read_ts,
            })
            .await
            .expect("scan")
            .into_inner();
        read_ts = r.read_ts;
        pages.push(r.kvs.len());
        let last = r.kvs.last().map(|kv| kv.key.clone());
        all.extend(r.kvs);
        match (r.more, last) {
            (true, Some(last)) if reverse => end = last,
            (true, Some(mut last)) => {
                last.push(0);
                start = last;
            }
            _ => break,
        }
    }
    if reverse {
        all.reverse();
    }
    (all, pages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_stop_reading_at_the_response_budget_and_continue_exactly() {
    let (_dir, handle, mut c) = start(|_| {}).await;
    // Twelve 1 MiB values, keys that are prefixes of one another among them.
    let keys: Vec<Vec<u8>> = [
        &b"a"[..],
        b"a\0",
        b"a\0\0",
        b"a\x01",
        b"ab",
        b"b",
        b"b\0",
        b"c",
        b"d",
        b"e",
        b"f",
        b"g",
    ]
    .iter()
    .map(|k| k.to_vec())
    .collect();
    for (i, k) in keys.iter().enumerate() {
        c.put(k, vec![u8::try_from(i).expect("small"); 1 << 20])
            .await;
    }
    // One page: stops once the response holds scan_response_bytes (4 MiB), and the node
    // reads no value it does not return.
    let before = c.engine_gets().await;
    let r =
        c.kv.scan(pb::ScanRequest {
            start: Vec::new(),
            end: Vec::new(),
            limit: 0,
            reverse: false,
            read_ts: 0,
        })
        .await
        .expect("scan")
        .into_inner();
    let read = c.engine_gets().await - before;
    assert_eq!(r.kvs.len(), 4);
    assert!(r.more);
    assert!(
        read <= 4,
        "{read} values read for a page of 4: the scan read past its budget"
    );

    for reverse in [false, true] {
        let (all, pages) = scan_all(&mut c, reverse).await;
        let got: Vec<_> = all.iter().map(|kv| kv.key.clone()).collect();
        assert_eq!(got, keys, "every pair exactly once (reverse = {reverse})");
        assert_eq!(pages, [4, 4, 4], "reverse = {reverse}");
        for (i, kv) in all.iter().enumerate() {
            assert_eq!(kv.value.len(), 1 << 20);
            assert_eq!(kv.value[0], u8::try_from(i).expect("small"));
        }
    }

    // Inside a transaction, with its own writes laid over the pages.
    let id = c.begin(pb::Isolation::Serializable).await.expect("begin");
    c.txn
        .delete(pb::TxnDeleteRequest {
            txn_id: id,
            key: b"a\0".to_vec(),
        })
        .await
        .expect("delete");
    c.txn
        .put(pb::TxnPutRequest {
            txn_id: id,
            key: b"a\0\0\0".to_vec(),
            value: b"mine".to_vec(),
        })
        .await
        .expect("put");
    let mut start = Vec::new();
    let mut seen = Vec::new();
    for _ in 0..10 {
        let r = c
            .txn
            .scan(pb::TxnScanRequest {
                txn_id: id,
                start: start.clone(),
                end: Vec::new(),
                limit: 0,
                reverse: false,
            })
            .await
            .expect("txn scan")
            .into_inner();
        let bytes: usize = r.kvs.iter().map(|kv| kv.key.len() + kv.value.len()).sum();
        assert!(bytes < (5 << 20), "a page of {bytes} bytes");
        let last = r.kvs.last().map(|kv| kv.key.clone());
        seen.extend(r.kvs.into_iter().map(|kv| kv.key));
        match (r.more, last) {
            (true, Some(mut last)) => {
                last.push(0);
                start = last;
            }
            _ => break,
        }
    }
    let mut want = keys.clone();
    want.retain(|k| k != b"a\0");
    want.insert(2, b"a\0\0\0".to_vec());
    assert_eq!(seen, want);
    c.txn
        .commit(pb::CommitRequest { txn_id: id })
        .await
        .expect("commit");
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_read_batches_past_the_response_budget_fail_cleanly() {
    let (_dir, handle, mut c) = start(|_| {}).await;
    let big = limits::MAX_VALUE_BYTES as usize;
    c.put(b"big1", vec![1; big]).await;
    c.put(b"big2", vec![2; big]).await;
    c.put(b"small", b"s".to_vec()).await;
    let keys = vec![b"big1".to_vec(), b"big2".to_vec(), b"small".to_vec()];

    let r =
        c.kv.batch_get(pb::BatchGetRequest {
            keys: keys.clone(),
            read_ts: 0,
        })
        .await;
    response_too_large(r);
    let read_ts = c.get(b"small").await.expect("get").read_ts;
    let r =
        c.kv.batch_get(pb::BatchGetRequest {
            keys: keys.clone(),
            read_ts,
        })
        .await;
    response_too_large(r);

    let r = c
        .txn
        .execute(pb::ExecuteRequest {
            reads: keys.clone(),
            mutations: vec![pb::Mutation {
                kind: pb::mutation::Kind::Put as i32,
                key: b"written".to_vec(),
                value: b"w".to_vec(),
            }],
            ..pb::ExecuteRequest::default()
        })
        .await;
    response_too_large(r);
    assert!(
        !c.get(b"written").await.expect("get").found,
        "a refused Execute writes nothing"
    );

    let id = c.begin(pb::Isolation::Snapshot).await.expect("begin");
    let r = c
        .txn
        .batch_get(pb::TxnBatchGetRequest {
            txn_id: id,
            keys: keys.clone(),
        })
        .await;
    response_too_large(r);
    // The transaction stays open, and a batch that fits is served.
    let r = c
        .txn
        .batch_get(pb::TxnBatchGetRequest {
            txn_id: id,
            keys: keys[1..].to_vec(),
        })
        .await
        .expect("a batch within the budget")
        .into_inner();
    assert_eq!(r.results.len(), 2);
    assert_eq!(r.results[0].value.len(), big);
    c.txn
        .rollback(pb::RollbackRequest { txn_id: id })
        .await
        .expect("rollback");

    // The node keeps serving: a maximal value still reads alone.
    assert_eq!(c.get(b"big1").await.expect("get").value.len(), big);
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_read_sets_count_against_max_txn_bytes() {
    let (_dir, handle, mut c) = start(|_| {}).await;
    let key_bytes = limits::MAX_KEY_BYTES as usize;
    // max_txn_bytes of maximal keys is 8192 keys; read them in batches that fit a message.
    let fit = usize::try_from(limits::MAX_TXN_BYTES).expect("fits") / key_bytes;
    let key = |i: usize| {
        let mut k = format!("r{i:06}").into_bytes();
        k.resize(key_bytes, b'.');
        k
    };
    let id = c.begin(pb::Isolation::Serializable).await.expect("begin");
    let mut refused = None;
    for batch in 0..6 {
        let keys: Vec<_> = (batch * 1700..(batch + 1) * 1700).map(key).collect();
        let r = c
            .txn
            .batch_get(pb::TxnBatchGetRequest { txn_id: id, keys })
            .await;
        if r.is_err() {
            refused = Some((batch, r));
            break;
        }
    }
    let (batch, r) = refused.expect("the read set reaches max_txn_bytes");
    assert_eq!(
        batch,
        fit / 1700,
        "refused in the batch that passes {fit} keys"
    );
    let d = expect_error(r, Code::InvalidArgument, "TXN_TOO_LARGE");
    assert_eq!(
        (d.limit_name.as_str(), d.limit, d.txn_id),
        ("max_txn_bytes", limits::MAX_TXN_BYTES, id)
    );
    // The keys already read still count: one more new key is refused, a known one is not.
    let r = c
        .txn
        .get(pb::TxnGetRequest {
            txn_id: id,
            key: key(fit + 5000),
        })
        .await;
    expect_error(r, Code::InvalidArgument, "TXN_TOO_LARGE");
    c.txn
        .get(pb::TxnGetRequest {
            txn_id: id,
            key: key(0),
        })
        .await
        .expect("a key already in the read set");
    c.txn
        .rollback(pb::RollbackRequest { txn_id: id })
        .await
        .expect("rollback");

    // The same reads under SNAPSHOT are not recorded, so not refused.
    let id = c.begin(pb::Isolation::Snapshot).await.expect("begin");
    for batch in 0..2 {
        let keys: Vec<_> = (batch * 1700..(batch + 1) * 1700).map(key).collect();
        c.txn
            .batch_get(pb::TxnBatchGetRequest { txn_id: id, keys })
            .await
            .expect("snapshot reads");
    }
    c.put(b"after", b"v".to_vec()).await;
    assert!(c.get(b"after").await.expect("get").found);
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_budget_of_open_transactions_refuses_new_work_until_freed() {
    let (_dir, handle, mut c) = start(|config| config.txn.max_open_txn_mb = 1).await;
    let budget = 1u64 << 20;
    let busy = |d: ErrorDetail| {
        assert!(d.retryable);
        assert_eq!(
            (d.limit_name.as_str(), d.limit),
            ("max_open_txn_bytes", budget)
        );
    };
    let a = c.begin(pb::Isolation::Snapshot).await.expect("begin");
    // Fill the budget to within 500 bytes: A's bookkeeping (1 KiB), key and value.
    let fill = usize::try_from(budget).expect("fits") - 1024 - 1 - 500;
    c.txn
        .put(pb::TxnPutRequest {
            txn_id: a,
            key: b"a".to_vec(),
            value: vec![0; fill],
        })
        .await
        .expect("a put within the budget");
    let r = c.begin(pb::Isolation::Snapshot).await;
    busy(expect_error(r, Code::ResourceExhausted, "SERVER_BUSY"));
    let r = c
        .txn
        .put(pb::TxnPutRequest {
            txn_id: a,
            key: b"b".to_vec(),
            value: vec![0; 1000],
        })
        .await;
    let d = expect_error(r, Code::ResourceExhausted, "SERVER_BUSY");
    assert_eq!(d.txn_id, a);
    busy(d);
    let r =
        c.kv.put(pb::PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        })
        .await;
    busy(expect_error(r, Code::ResourceExhausted, "SERVER_BUSY"));
    // The refused put left A as it was: it commits its first write.
    c.txn
        .commit(pb::CommitRequest { txn_id: a })
        .await
        .expect("commit");
    // Freed: new transactions and Kv writes are served again.
    c.put(b"k", b"v".to_vec()).await;
    assert_eq!(
        c.get(b"a").await.expect("get").value.len(),
        fill,
        "the committed write"
    );
    let b = c.begin(pb::Isolation::Snapshot).await.expect("begin");
    c.txn
        .rollback(pb::RollbackRequest { txn_id: b })
        .await
        .expect("rollback");
    handle.shutdown().await.expect("shutdown");
}
