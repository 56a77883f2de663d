//! In-process tests of what the server guarantees across restarts and long lives: the GC
//! safe point it starts from, the run it starts as, and the maximum transaction lifetime.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{http, NodeConfig, Server};
use crate::lsm::Db;
use crate::mvcc::{MvccReader, Timestamp};
use crate::tso::compose;
use crate::txn::actions::{Mutation, PrewriteOptions};
use crate::txn::{NodeMeta, Storage};

fn config(dir: &Path, gc_life_time_s: u64) -> NodeConfig {
    let mut config = super::tests::test_config(dir);
    config.txn.gc_life_time_s = gc_life_time_s;
    config
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Leaves the lock of a transaction that started an hour ago (a coordinator that died long
/// ago, its lock still on disk) in `dir`'s engine; returns its start_ts.
fn leave_an_old_lock(dir: &Path) -> Timestamp {
    let config = config(dir, 600);
    let db = Db::open(dir.join("db"), config.engine_options()).expect("open the engine");
    let start_ts = compose(now_ms() - 3_600_000, 0);
    let opts = PrewriteOptions {
        primary: b"old/primary".to_vec(),
        ttl_ms: 3_000,
        min_commit_ts: start_ts + 1,
        coordinator: None,
    };
    let storage = Storage::new(db.clone());
    storage
        .prewrite(
            &[
                Mutation::Put(b"old/primary".to_vec(), b"p".to_vec()),
                Mutation::Put(b"old/secondary".to_vec(), b"s".to_vec()),
            ],
            &opts,
            start_ts,
        )
        .expect("prewrite");
    drop(storage);
    db.close().expect("close");
    start_ts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_safe_point_passes_a_lock_on_disk_only_once_it_is_resolved() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lock_ts = leave_an_old_lock(dir.path());
    // Well past the lock's start plus the life time: a start-up safe point computed as
    // `now - gc_life_time` would be above the lock. A node that leads at start runs its
    // first GC tick before serving: it resolves the expired lock, and only then may the
    // safe point pass it (the tick never advances past a lock it did not resolve).
    let handle = Server::start(config(dir.path(), 600)).await.expect("start");
    let reader = MvccReader::new(handle.state.manager.storage().db(), None);
    assert!(reader.load_lock(b"old/primary").expect("read").is_none());
    assert!(reader.load_lock(b"old/secondary").expect("read").is_none());
    // A later tick keeps it there.
    let state = Arc::clone(&handle.state);
    tokio::task::spawn_blocking(move || state.gc_tick())
        .await
        .expect("join")
        .expect("gc tick");
    assert!(handle.state.gc_safe_point() > lock_ts);
    let metrics = http::Endpoints::metrics(&*handle.state);
    assert!(
        metrics.contains("strata_gc_stale_locks_resolved_total 2\n"),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "strata_gc_safe_point {}\n",
        handle.state.gc_safe_point()
    )));
    let reader = MvccReader::new(handle.state.manager.storage().db(), None);
    assert!(reader.load_lock(b"old/secondary").expect("read").is_none());
    handle.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_from_the_saved_safe_point_and_takes_a_new_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Server::start(config(dir.path(), 1)).await.expect("start");
    let saved = first.state.gc_safe_point();
    let first_run = first.state.run;
    first.shutdown().await.expect("shutdown");
    // A longer life time now: recomputing `now - gc_life_time` would move the safe point
    // back below versions the first run may have collected.
    let second = Server::start(config(dir.path(), 600))
        .await
        .expect("restart");
    assert!(
        second.state.gc_safe_point() >= saved,
        "the safe point went back from {saved} to {}",
        second.state.gc_safe_point()
    );
    assert!(first_run.is_earlier_run_of(&second.state.run));
    let meta = NodeMeta::new(second.state.manager.storage().db().clone());
    assert_eq!(
        meta.last_run_id().expect("run id"),
        Some(second.state.run.run_id)
    );
    second.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_heartbeated_past_max_lifetime_is_rolled_back() {
    use std::time::{Duration, Instant};
    use strata_proto::v1 as pb;
    use strata_proto::v1::txn_client::TxnClient;

    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path(), 600);
    config.txn.max_lifetime_s = 1;
    let handle = Server::start(config).await.expect("start");
    let uri = format!("http://{}", handle.grpc_addr());
    let channel = tonic::transport::Channel::from_shared(uri)
        .expect("a uri")
        .connect()
        .await
        .expect("connect");
    let mut txn = TxnClient::new(channel);
    let id = txn
        .begin(pb::BeginRequest::default())
        .await
        .expect("begin")
        .into_inner()
        .txn_id;
    // Heartbeats keep it from idling (idle timeout 60 s), but not past its lifetime.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        match txn.heartbeat(pb::HeartbeatRequest { txn_id: id }).await {
            Ok(_) => {}
            Err(s) => break s,
        }
        assert!(Instant::now() < deadline, "still alive past its lifetime");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), tonic::Code::NotFound, "{status}");
    assert_eq!(handle.state.manager.active(), 0);
    handle.shutdown().await.expect("shutdown");
}
