//! In-process tests: a real server on 127.0.0.1:0, driven through the generated clients.

use std::time::{Duration, Instant};

use strata_proto::v1 as pb;
use strata_proto::v1::{
    admin_client::AdminClient, kv_client::KvClient, txn_client::TxnClient, ErrorDetail, ErrorReason,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::Channel;
use tonic::Code;

use super::{NodeConfig, Server, ServerHandle};

pub(crate) fn test_config(dir: &std::path::Path) -> NodeConfig {
    let mut config = NodeConfig::on_free_ports(dir);
    config.engine.memtable_mb = 4;
    config.engine.block_cache_mb = 8;
    config.txn.lock_wait_ms = 100;
    config
}

pub(super) async fn channel(handle: &ServerHandle) -> Channel {
    Channel::from_shared(format!("http://{}", handle.grpc_addr()))
        .expect("a uri")
        .connect()
        .await
        .expect("connect")
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .expect("a response in time")
        .expect("read");
    out
}

fn detail(status: &tonic::Status) -> ErrorDetail {
    ErrorDetail::from_status(status).expect("the status carries an ErrorDetail")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_kv_txn_admin_and_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let handle = Server::start(test_config(dir.path())).await.expect("start");
    let ch = channel(&handle).await;
    let mut kv = KvClient::new(ch.clone());
    let mut txn = TxnClient::new(ch.clone());
    let mut admin = AdminClient::new(ch);

    // Kv put / get / delete / scan.
    for (k, v) in [("a", "1"), ("b", "2"), ("c", "3")] {
        let r = kv
            .put(pb::PutRequest {
                key: k.into(),
                value: v.into(),
            })
            .await
            .expect("put");
        assert!(r.into_inner().commit_ts > 0);
    }
    let r = kv
        .get(pb::GetRequest {
            key: b"b".to_vec(),
            read_ts: 0,
        })
        .await
        .expect("get")
        .into_inner();
    assert!(r.found);
    assert_eq!(r.value, b"2");
    let snapshot = r.read_ts;
    kv.delete(pb::DeleteRequest { key: b"b".to_vec() })
        .await
        .expect("delete");
    let r = kv
        .get(pb::GetRequest {
            key: b"b".to_vec(),
            read_ts: 0,
        })
        .await
        .expect("get")
        .into_inner();
    assert!(!r.found);
    // A read at the earlier snapshot still sees it.
    let r = kv
        .get(pb::GetRequest {
            key: b"b".to_vec(),
            read_ts: snapshot,
        })
        .await
        .expect("get at ts")
        .into_inner();
    assert_eq!(r.value, b"2");
    let r = kv
        .scan(pb::ScanRequest {
            start: b"a".to_vec(),
            end: Vec::new(),
            limit: 1,
            reverse: false,
            read_ts: 0,
        })
        .await
        .expect("scan")
        .into_inner();
    assert_eq!(r.kvs.len(), 1);
    assert!(r.more);
    let r = kv
        .scan(pb::ScanRequest {
            start: Vec::new(),
            end: b"z".to_vec(),
            limit: 0,
            reverse: true,
            read_ts: 0,
        })
        .await
        .expect("scan")
        .into_inner();
    let keys: Vec<_> = r.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, vec![b"c".to_vec(), b"a".to_vec()]);
    assert!(!r.more);
    let r = kv
        .batch_get(pb::BatchGetRequest {
            keys: vec![b"a".to_vec(), b"b".to_vec()],
            read_ts: 0,
        })
        .await
        .expect("batch get")
        .into_inner();
    assert_eq!(
        r.results.iter().map(|g| g.found).collect::<Vec<_>>(),
        [true, false]
    );

    // An interactive transaction.
    let t = txn
        .begin(pb::BeginRequest::default())
        .await
        .expect("begin")
        .into_inner();
    assert_eq!(t.idle_timeout_ms, 60_000);
    txn.put(pb::TxnPutRequest {
        txn_id: t.txn_id,
        key: b"t".to_vec(),
        value: b"tv".to_vec(),
    })
    .await
    .expect("txn put");
    let g = txn
        .get(pb::TxnGetRequest {
            txn_id: t.txn_id,
            key: b"t".to_vec(),
        })
        .await
        .expect("txn get")
        .into_inner();
    assert_eq!((g.found, g.value.as_slice()), (true, &b"tv"[..]));
    txn.heartbeat(pb::HeartbeatRequest { txn_id: t.txn_id })
        .await
        .expect("heartbeat");
    let c = txn
        .commit(pb::CommitRequest { txn_id: t.txn_id })
        .await
        .expect("commit")
        .into_inner();
    assert!(c.commit_ts > t.start_ts);

    // A write-write conflict: the second committer aborts, retryable.
    let t1 = txn
        .begin(pb::BeginRequest::default())
        .await
        .expect("begin")
        .into_inner();
    let t2 = txn
        .begin(pb::BeginRequest::default())
        .await
        .expect("begin")
        .into_inner();
    for t in [&t1, &t2] {
        txn.put(pb::TxnPutRequest {
            txn_id: t.txn_id,
            key: b"x".to_vec(),
            value: t.txn_id.to_le_bytes().to_vec(),
        })
        .await
        .expect("put");
    }
    txn.commit(pb::CommitRequest { txn_id: t1.txn_id })
        .await
        .expect("first commit");
    let err = txn
        .commit(pb::CommitRequest { txn_id: t2.txn_id })
        .await
        .expect_err("second commit conflicts");
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    let d = detail(&err);
    assert_eq!(d.reason, "WRITE_CONFLICT");
    assert!(d.retryable);
    assert_eq!(d.key, b"x");

    // Oversized key.
    let err = kv
        .put(pb::PutRequest {
            key: vec![b'k'; 8193],
            value: b"v".to_vec(),
        })
        .await
        .expect_err("key too large");
    assert_eq!(err.code(), Code::InvalidArgument);
    let d = detail(&err);
    assert_eq!(
        (d.reason.as_str(), d.limit_name.as_str()),
        ("KEY_TOO_LARGE", "max_key_bytes")
    );
    assert_eq!(d.limit, strata_proto::limits::MAX_KEY_BYTES);

    // Values up to max_value_bytes travel (the server's message limit is raised to 16 MiB);
    // one byte more is refused with the limit named.
    let max_value = usize::try_from(strata_proto::limits::MAX_VALUE_BYTES).expect("fits");
    let max_message = usize::try_from(strata_proto::limits::MAX_MESSAGE_BYTES).expect("fits");
    let mut big_kv = kv.clone().max_decoding_message_size(max_message);
    big_kv
        .put(pb::PutRequest {
            key: b"big".to_vec(),
            value: vec![7; max_value],
        })
        .await
        .expect("a maximal value");
    let r = big_kv
        .get(pb::GetRequest {
            key: b"big".to_vec(),
            read_ts: 0,
        })
        .await
        .expect("get the maximal value")
        .into_inner();
    assert_eq!(r.value.len(), max_value);
    let err = kv
        .put(pb::PutRequest {
            key: b"big".to_vec(),
            value: vec![7; max_value + 1],
        })
        .await
        .expect_err("value too large");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(detail(&err).limit_name, "max_value_bytes");

    // Unknown transaction.
    let err = txn
        .get(pb::TxnGetRequest {
            txn_id: 987_654,
            key: b"a".to_vec(),
        })
        .await
        .expect_err("unknown txn");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(detail(&err).reason, "TXN_NOT_FOUND");
    assert_eq!(detail(&err).txn_id, 987_654);

    // Bad scan range and limit.
    let err = kv
        .scan(pb::ScanRequest {
            start: b"b".to_vec(),
            end: b"a".to_vec(),
            ..pb::ScanRequest::default()
        })
        .await
        .expect_err("bad range");
    assert_eq!(detail(&err).reason, "INVALID_RANGE");
    let err = kv
        .scan(pb::ScanRequest {
            limit: 10_001,
            ..pb::ScanRequest::default()
        })
        .await
        .expect_err("limit too large");
    assert_eq!(detail(&err).limit_name, "max_scan_limit");

    // Execute as compare-and-swap.
    let cas = |expected: &str, new: &str| pb::ExecuteRequest {
        preconditions: vec![pb::Precondition {
            key: b"cas".to_vec(),
            kind: pb::precondition::Kind::ValueEquals as i32,
            value: expected.into(),
        }],
        reads: vec![b"cas".to_vec()],
        mutations: vec![pb::Mutation {
            kind: pb::mutation::Kind::Put as i32,
            key: b"cas".to_vec(),
            value: new.into(),
        }],
        ..pb::ExecuteRequest::default()
    };
    kv.put(pb::PutRequest {
        key: b"cas".to_vec(),
        value: b"v1".to_vec(),
    })
    .await
    .expect("put");
    let r = txn
        .execute(cas("v1", "v2"))
        .await
        .expect("cas")
        .into_inner();
    assert!(r.succeeded);
    assert!(r.commit_ts > r.start_ts);
    assert_eq!(r.reads[0].value, b"v1");
    let r = txn
        .execute(cas("v1", "v3"))
        .await
        .expect("cas")
        .into_inner();
    assert!(!r.succeeded);
    assert_eq!(r.failed_preconditions, vec![0]);
    assert_eq!(r.reads[0].value, b"v2");
    assert_eq!(r.commit_ts, 0);
    let mut bad = cas("v2", "v3");
    bad.mutations[0].kind = 0;
    let err = txn.execute(bad).await.expect_err("unspecified kind");
    assert_eq!(detail(&err).reason, "INVALID_FIELD");

    // Admin.
    let open = txn
        .begin(pb::BeginRequest::default())
        .await
        .expect("begin")
        .into_inner();
    let s = admin
        .status(pb::StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(s.node_id, 1);
    assert_eq!(s.active_transactions, 1);
    let engine = s.engine.expect("engine stats");
    assert!(engine.user_bytes_written > 0);
    assert!(engine.wal_syncs > 0);
    let sp = admin
        .get_gc_safe_point(pb::GetGcSafePointRequest {})
        .await
        .expect("safe point")
        .into_inner();
    // The safe point starts at now - gc_life_time: reads below it are refused.
    assert!(sp.safe_point > 0 && sp.safe_point < snapshot);
    assert_eq!(s.gc_safe_point, sp.safe_point);
    let err = kv
        .get(pb::GetRequest {
            key: b"a".to_vec(),
            read_ts: 1,
        })
        .await
        .expect_err("below the safe point");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(detail(&err).reason, "READ_BELOW_SAFE_POINT");
    let err = kv
        .get(pb::GetRequest {
            key: b"a".to_vec(),
            read_ts: u64::MAX,
        })
        .await
        .expect_err("in the future");
    assert_eq!(detail(&err).reason, "READ_TS_IN_FUTURE");

    // A GC tick (normally every GC_INTERVAL) runs and never moves the safe point back.
    handle.state.gc_tick().expect("gc tick");
    assert!(handle.state.gc_safe_point() >= sp.safe_point);

    // HTTP.
    let metrics = http_get(handle.http_addr(), "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("strata_rpc_requests_total{method=\"kv.Put\"}"));
    assert!(
        metrics.contains("strata_rpc_errors_total{code=\"Aborted\",reason=\"WRITE_CONFLICT\"} 1")
    );
    assert!(metrics.contains("strata_active_transactions 1"));
    assert!(metrics.contains("strata_engine_wal_syncs_total"));
    assert!(http_get(handle.http_addr(), "/healthz")
        .await
        .starts_with("HTTP/1.1 200"));
    assert!(http_get(handle.http_addr(), "/readyz")
        .await
        .starts_with("HTTP/1.1 200"));
    assert!(http_get(handle.http_addr(), "/nope")
        .await
        .starts_with("HTTP/1.1 404"));

    // Garbage on the gRPC port closes that connection only.
    let mut raw = TcpStream::connect(handle.grpc_addr())
        .await
        .expect("connect");
    raw.write_all(&[0xde; 4096]).await.expect("write garbage");
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut sink)).await;
    drop(raw);
    let mut kv2 = KvClient::new(channel(&handle).await);
    let r = kv2
        .get(pb::GetRequest {
            key: b"a".to_vec(),
            read_ts: 0,
        })
        .await
        .expect("still serving")
        .into_inner();
    assert_eq!(r.value, b"1");

    // Shutdown rolls the open transaction back and returns.
    let _ = open;
    let started = Instant::now();
    drop((kv, kv2, txn, admin));
    handle.shutdown().await.expect("shutdown");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_a_restart_and_a_busy_port_fails_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let handle = Server::start(test_config(dir.path())).await.expect("start");
    let mut kv = KvClient::new(channel(&handle).await);
    kv.put(pb::PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
    })
    .await
    .expect("put");
    // A second server on the same gRPC port fails to start with a clear error.
    let other = tempfile::tempdir().expect("tempdir");
    let mut busy = test_config(other.path());
    busy.grpc_addr = handle.grpc_addr();
    let err = Server::start(busy).await.expect_err("address in use");
    assert!(
        format!("{err:#}").contains("binding the gRPC address"),
        "{err:#}"
    );
    drop(kv);
    handle.shutdown().await.expect("shutdown");

    let handle = Server::start(test_config(dir.path()))
        .await
        .expect("restart");
    let mut kv = KvClient::new(channel(&handle).await);
    let r = kv
        .get(pb::GetRequest {
            key: b"k".to_vec(),
            read_ts: 0,
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(r.value, b"v");
    drop(kv);
    handle.shutdown().await.expect("shutdown");
}

/// Commits blocked on one lock, more of them than the blocking pool has threads, leave the
/// node free to serve everything else: their waits hold no thread. (When a blocked commit
/// slept on the blocking pool, two of them filled this pool and every other request queued
/// behind them until their lock wait ran out.)
#[test]
fn commits_waiting_on_a_lock_do_not_starve_other_requests() {
    const BLOCKING_THREADS: usize = 2;
    const WAITERS: usize = 16;
    const PATIENCE: Duration = Duration::from_secs(30);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path());
        // Neither the lock wait nor the holder's TTL ends during the test.
        config.txn.lock_wait_ms = 3_600_000;
        let handle = Server::start(config).await.expect("start");
        let ch = channel(&handle).await;
        let storage = std::sync::Arc::clone(handle.state.manager.storage());
        let holder = crate::tso::Tso::get_timestamp(handle.state.tso.as_ref()).expect("ts");
        let options = crate::txn::actions::PrewriteOptions {
            primary: b"hot".to_vec(),
            ttl_ms: 3_600_000,
            min_commit_ts: holder + 1,
            coordinator: None,
        };
        storage
            .prewrite(
                &[crate::txn::actions::Mutation::Put(
                    b"hot".to_vec(),
                    b"held".to_vec(),
                )],
                &options,
                holder,
            )
            .expect("the holder's lock");

        let commits = tokio::time::timeout(PATIENCE, async {
            let mut commits = Vec::new();
            for i in 0..WAITERS {
                let mut txn = TxnClient::new(ch.clone());
                let t = txn
                    .begin(pb::BeginRequest::default())
                    .await
                    .expect("begin")
                    .into_inner();
                txn.put(pb::TxnPutRequest {
                    txn_id: t.txn_id,
                    key: b"hot".to_vec(),
                    value: vec![u8::try_from(i).expect("small")],
                })
                .await
                .expect("put");
                commits.push(tokio::spawn(async move {
                    txn.commit(pb::CommitRequest { txn_id: t.txn_id }).await
                }));
            }
            while storage.lock_waits().waiting(b"hot") < WAITERS {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            commits
        })
        .await
        .expect("every commit is queued on the lock");

        // Everything else is served meanwhile: Kv writes and reads, an interactive
        // transaction with its own commit.
        let mut kv = KvClient::new(ch.clone());
        let mut txn = TxnClient::new(ch.clone());
        tokio::time::timeout(PATIENCE, async {
            for i in 0..20u32 {
                kv.put(pb::PutRequest {
                    key: format!("other/{i}").into_bytes(),
                    value: b"v".to_vec(),
                })
                .await
                .expect("put");
            }
            let r = kv
                .get(pb::GetRequest {
                    key: b"other/7".to_vec(),
                    read_ts: 0,
                })
                .await
                .expect("get")
                .into_inner();
            assert!(r.found);
            let t = txn
                .begin(pb::BeginRequest::default())
                .await
                .expect("begin")
                .into_inner();
            txn.put(pb::TxnPutRequest {
                txn_id: t.txn_id,
                key: b"other/txn".to_vec(),
                value: b"v".to_vec(),
            })
            .await
            .expect("txn put");
            txn.commit(pb::CommitRequest { txn_id: t.txn_id })
                .await
                .expect("commit");
        })
        .await
        .expect("other requests are served while the commits wait");
        assert_eq!(
            storage.lock_waits().waiting(b"hot"),
            WAITERS,
            "the commits were waiting all along"
        );

        // Released: the first waiter commits, the rest abort (first committer wins).
        storage
            .rollback(&[b"hot".to_vec()], holder)
            .expect("release");
        let (mut committed, mut aborted) = (0, 0);
        for c in commits {
            let r = tokio::time::timeout(PATIENCE, c)
                .await
                .expect("woken by the release")
                .expect("task");
            match r {
                Ok(_) => committed += 1,
                Err(s) => {
                    assert_eq!(s.code(), Code::Aborted, "{s:?}");
                    assert_eq!(detail(&s).reason, "WRITE_CONFLICT");
                    aborted += 1;
                }
            }
        }
        assert_eq!((committed, aborted), (1, WAITERS - 1));
        handle.shutdown().await.expect("shutdown");
    });
}

#[tokio::test]
async fn a_data_directory_refuses_another_node_id_and_records_the_addresses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let handle = Server::start(test_config(dir.path())).await.expect("start");
    let written = super::identity::BoundAddresses::read(dir.path())
        .expect("readable")
        .expect("the address file is written once the node listens");
    assert_eq!(&written, handle.addresses());
    assert_eq!(written.raft, handle.raft_addr());
    assert_ne!(written.raft.port(), 0);
    assert_eq!(
        handle.cluster().advertise_raft_addr.port(),
        written.raft.port()
    );
    // The Raft port is really bound: another node cannot take it.
    let other_dir = tempfile::tempdir().expect("tempdir");
    let mut clash = test_config(other_dir.path());
    clash.cluster.raft_addr = handle.raft_addr();
    let err = Server::start(clash)
        .await
        .expect_err("the Raft port is taken");
    assert!(
        format!("{err:#}").contains("binding the Raft address"),
        "{err:#}"
    );
    // The Raft service answers there (the transport's own tests talk to it).
    let status = handle
        .state
        .replica
        .status()
        .expect("the data shard is open");
    assert_eq!(status.role, crate::raftstore::Role::Leader);
    handle.shutdown().await.expect("shutdown");

    let mut other = test_config(dir.path());
    other.node_id = 2;
    let err = Server::start(other).await.expect_err("another node's data");
    let text = format!("{err:#}");
    assert!(text.contains("belongs to node 1"), "{text}");
    assert!(text.contains("starts as node 2"), "{text}");
    // The refused start opened nothing: the right id still starts.
    let handle = Server::start(test_config(dir.path())).await.expect("start");
    handle.shutdown().await.expect("shutdown");
}

/// Holds the calls of chosen methods in flight (a test hook in `State::call`): a held call
/// never finishes on its own.
#[derive(Debug, Default)]
pub(crate) struct CallHold {
    methods: parking_lot::Mutex<Vec<&'static str>>,
    held: std::sync::atomic::AtomicUsize,
}

impl CallHold {
    /// Holds every later call of `method`.
    pub(crate) fn set(&self, method: &'static str) {
        self.methods.lock().push(method);
    }

    /// Calls held now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Never returns for a held method.
    pub(crate) async fn hold(&self, method: &str) {
        let held = self.methods.lock().contains(&method);
        if held {
            self.held.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            std::future::pending::<()>().await;
        }
    }
}

/// D156: a shutdown answers the calls in flight instead of waiting for them (it waited up
/// to its drain timeout, 10 s, for a call that would not end: a membership change waiting
/// out its quorum, say). A held write is answered OUTCOME_UNKNOWN, a held read NOT_LEADER
/// (UNAVAILABLE both); the shutdown takes well under the drain timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_calls_in_flight_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let handle = Server::start(test_config(dir.path())).await.expect("start");
    let mut kv = KvClient::new(channel(&handle).await);
    kv.put(pb::PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
    })
    .await
    .expect("a put before the hold");
    handle.state.test_hold.set("kv.Put");
    handle.state.test_hold.set("kv.Get");
    let mut c = kv.clone();
    let put = tokio::spawn(async move {
        c.put(pb::PutRequest {
            key: b"k".to_vec(),
            value: b"w".to_vec(),
        })
        .await
    });
    let mut c = kv.clone();
    let get = tokio::spawn(async move {
        c.get(pb::GetRequest {
            key: b"k".to_vec(),
            read_ts: 0,
        })
        .await
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while handle.state.test_hold.held() < 2 {
        assert!(Instant::now() < deadline, "the calls were not held in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let began = Instant::now();
    handle.shutdown().await.expect("shutdown");
    let took = began.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "shutdown took {took:?} with calls in flight"
    );
    let put = put
        .await
        .expect("put task")
        .expect_err("the held put is cut short");
    assert_eq!(put.code(), Code::Unavailable, "{put:?}");
    assert_eq!(
        detail(&put).reason_enum(),
        Some(ErrorReason::OutcomeUnknown)
    );
    let get = get
        .await
        .expect("get task")
        .expect_err("the held get is cut short");
    assert_eq!(get.code(), Code::Unavailable, "{get:?}");
    assert_eq!(detail(&get).reason_enum(), Some(ErrorReason::NotLeader));
}
