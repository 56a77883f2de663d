//! The real `strata-node` binary: start, serve, SIGTERM (exit 0), restart on the same data
//! directory, and `kill -9` under a load of acknowledged writes, none of which may be lost.
//!
//! It lives in the node crate (not `tests/`) because only a package's own integration tests
//! get `CARGO_BIN_EXE_<name>`, which makes cargo build the binary first.

mod support;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_proto::v1 as pb;
use strata_proto::v1::kv_client::KvClient;
use strata_proto::v1::txn_client::TxnClient;
use support::{channel, http_status, start_with, wait_exit, wait_ready, Node, DEADLINE};
use tonic::transport::Channel;

/// Starts the binary on free ports with the default flags of these tests.
fn start(data_dir: &std::path::Path) -> Node {
    start_with(data_dir, &[], &[])
}

async fn get(kv: &mut KvClient<Channel>, key: &[u8]) -> Option<Vec<u8>> {
    let r = kv
        .get(pb::GetRequest {
            key: key.to_vec(),
            read_ts: 0,
        })
        .await
        .expect("get")
        .into_inner();
    r.found.then_some(r.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_restart_and_kill9_keep_acknowledged_writes() {
    let dir = tempfile::tempdir().expect("tempdir");

    // Start, write through Kv and an interactive transaction, then SIGTERM.
    let mut node = start(dir.path());
    wait_ready(&node).await;
    assert_eq!(http_status(node.http, "/healthz").await, Some(200));
    let ch = channel(&node).await;
    let mut kv = KvClient::new(ch.clone());
    let mut txn = TxnClient::new(ch);
    kv.put(pb::PutRequest {
        key: b"kv".to_vec(),
        value: b"1".to_vec(),
    })
    .await
    .expect("put");
    let t = txn
        .begin(pb::BeginRequest::default())
        .await
        .expect("begin")
        .into_inner();
    for (k, v) in [("t1", "a"), ("t2", "b")] {
        txn.put(pb::TxnPutRequest {
            txn_id: t.txn_id,
            key: k.into(),
            value: v.into(),
        })
        .await
        .expect("txn put");
    }
    txn.commit(pb::CommitRequest { txn_id: t.txn_id })
        .await
        .expect("commit");
    // An open transaction at shutdown is rolled back, not committed.
    let open = txn
        .begin(pb::BeginRequest::default())
        .await
        .expect("begin")
        .into_inner();
    txn.put(pb::TxnPutRequest {
        txn_id: open.txn_id,
        key: b"uncommitted".to_vec(),
        value: b"x".to_vec(),
    })
    .await
    .expect("txn put");
    drop((kv, txn));
    let pid = node.child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(killed.success());
    assert_eq!(wait_exit(&mut node), Some(0), "graceful shutdown exits 0");
    drop(node);

    // Restart on the same data directory: the committed data is there.
    let node = start(dir.path());
    wait_ready(&node).await;
    let mut kv = KvClient::new(channel(&node).await);
    assert_eq!(get(&mut kv, b"kv").await.as_deref(), Some(&b"1"[..]));
    assert_eq!(get(&mut kv, b"t1").await.as_deref(), Some(&b"a"[..]));
    assert_eq!(get(&mut kv, b"t2").await.as_deref(), Some(&b"b"[..]));
    assert_eq!(get(&mut kv, b"uncommitted").await, None);

    // kill -9 under load: every acknowledged put must survive.
    let acked: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..4u32 {
        let mut kv = kv.clone();
        let acked = Arc::clone(&acked);
        writers.push(tokio::spawn(async move {
            for i in 0u32.. {
                let key = format!("load/{w}/{i:06}").into_bytes();
                let put = kv.put(pb::PutRequest {
                    key: key.clone(),
                    value: key.clone(),
                });
                match put.await {
                    Ok(_) => acked.lock().expect("lock").push(key),
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    let deadline = Instant::now() + DEADLINE;
    while acked.lock().expect("lock").len() < 200 {
        assert!(Instant::now() < deadline, "the load made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut node = node;
    node.child.kill().expect("kill -9");
    let _ = node.child.wait();
    for w in writers {
        let _ = w.await;
    }
    drop((kv, node));
    let acked = acked.lock().expect("lock").clone();

    let node = start(dir.path());
    wait_ready(&node).await;
    let mut kv = KvClient::new(channel(&node).await);
    for key in &acked {
        assert_eq!(
            get(&mut kv, key).await.as_deref(),
            Some(key.as_slice()),
            "acknowledged put of {:?} lost after kill -9",
            String::from_utf8_lossy(key)
        );
    }
    assert!(acked.len() >= 200);
}

#[test]
fn a_bad_config_prints_one_line_and_exits_1() {
    let out = Command::new(env!("CARGO_BIN_EXE_strata-node"))
        .args(["--config", "/nonexistent/strata.yaml"])
        .output()
        .expect("run strata-node");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/strata.yaml"), "{stderr}");
}

#[test]
fn a_bad_flag_prints_one_line_and_exits_1() {
    let out = Command::new(env!("CARGO_BIN_EXE_strata-node"))
        .args(["--grpc-addr", "not-an-address"])
        .output()
        .expect("run strata-node");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--grpc-addr"), "{stderr}");
}

/// One transfer in an interactive transaction; returns whether it committed.
async fn transfer(
    txn: &mut TxnClient<Channel>,
    from: usize,
    to: usize,
    amount: i64,
    id: u64,
) -> Result<bool, tonic::Status> {
    let begin = pb::BeginRequest {
        isolation: pb::Isolation::Snapshot as i32,
        read_only: false,
    };
    let txn_id = txn.begin(begin).await?.into_inner().txn_id;
    let mut balances = [0i64; 2];
    for (slot, acct) in [from, to].into_iter().enumerate() {
        let r = txn
            .get(pb::TxnGetRequest {
                txn_id,
                key: format!("acct/{acct:02}").into_bytes(),
            })
            .await?
            .into_inner();
        balances[slot] = String::from_utf8_lossy(&r.value).parse().unwrap_or(0);
    }
    let writes = [
        (
            format!("acct/{from:02}"),
            (balances[0] - amount).to_string(),
        ),
        (format!("acct/{to:02}"), (balances[1] + amount).to_string()),
        (format!("done/{id:08}"), "1".to_string()),
    ];
    for (k, v) in writes {
        txn.put(pb::TxnPutRequest {
            txn_id,
            key: k.into_bytes(),
            value: v.into_bytes(),
        })
        .await?;
    }
    match txn.commit(pb::CommitRequest { txn_id }).await {
        Ok(_) => Ok(true),
        Err(s) if s.code() == tonic::Code::Aborted => Ok(false),
        Err(s) => Err(s),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_bank_transfers_keeps_the_total_and_every_acknowledged_transfer() {
    const ACCOUNTS: usize = 10;
    const START: i64 = 1000;
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path());
    wait_ready(&node).await;
    let ch = channel(&node).await;
    let mut kv = KvClient::new(ch.clone());
    for a in 0..ACCOUNTS {
        kv.put(pb::PutRequest {
            key: format!("acct/{a:02}").into_bytes(),
            value: START.to_string().into_bytes(),
        })
        .await
        .expect("load an account");
    }
    // Four clients transfer until the node dies; each remembers what was acknowledged.
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let mut tasks = Vec::new();
    for c in 0..4u64 {
        let (mut txn, acked) = (TxnClient::new(ch.clone()), Arc::clone(&acked));
        tasks.push(tokio::spawn(async move {
            let mut seed = c.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            for i in 0..100_000u64 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let from = (seed % ACCOUNTS as u64) as usize;
                let to = (from + 1 + (seed >> 8) as usize % (ACCOUNTS - 1)) % ACCOUNTS;
                let id = c * 1_000_000 + i;
                match transfer(&mut txn, from, to, (seed >> 20) as i64 % 50 + 1, id).await {
                    Ok(true) => acked.lock().expect("lock").push(id),
                    Ok(false) => {}
                    Err(_) => return, // the node is gone
                }
            }
        }));
    }
    // Let some transfers land, then kill -9.
    let deadline = Instant::now() + DEADLINE;
    while acked.lock().expect("lock").len() < 100 {
        assert!(Instant::now() < deadline, "transfers did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut node = node;
    node.child.kill().expect("kill -9");
    let _ = node.child.wait();
    for t in tasks {
        let _ = t.await;
    }
    let acked: Vec<u64> = acked.lock().expect("lock").clone();

    let node = start(dir.path());
    wait_ready(&node).await;
    let mut kv = KvClient::new(channel(&node).await);
    let mut total = 0i64;
    for a in 0..ACCOUNTS {
        let v = get(&mut kv, format!("acct/{a:02}").as_bytes())
            .await
            .expect("the account exists");
        total += String::from_utf8_lossy(&v)
            .parse::<i64>()
            .expect("a number");
    }
    assert_eq!(
        total,
        START * ACCOUNTS as i64,
        "money is neither created nor destroyed"
    );
    for id in &acked {
        assert!(
            get(&mut kv, format!("done/{id:08}").as_bytes())
                .await
                .is_some(),
            "acknowledged transfer {id} is missing after the restart"
        );
    }
    assert!(acked.len() >= 100);
}
