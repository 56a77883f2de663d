//! Restart safety of transactions and GC, against the real `strata-node` binary: a process
//! killed in the middle of a commit (a failpoint aborts it at the chosen moment; these tests
//! need the `failpoints` feature) or by `kill -9`, then restarted on the same data directory.

mod support;

use strata_proto::v1 as pb;
use strata_proto::v1::kv_client::KvClient;
use strata_proto::v1::txn_client::TxnClient;
use strata_proto::v1::ErrorDetail;
use support::{channel, start_with, wait_ready};
use tonic::transport::Channel;

async fn get(kv: &mut KvClient<Channel>, key: &str) -> (Option<Vec<u8>>, u64) {
    let r = kv
        .get(pb::GetRequest {
            key: key.into(),
            read_ts: 0,
        })
        .await
        .unwrap_or_else(|s| panic!("get {key}: {s}"))
        .into_inner();
    (r.found.then_some(r.value), r.read_ts)
}

/// The crash tests: a failpoint aborts the process at a chosen moment of a commit.
#[cfg(feature = "failpoints")]
mod crashes {
    use std::time::{Duration, Instant};

    use strata_proto::v1 as pb;
    use strata_proto::v1::admin_client::AdminClient;
    use strata_proto::v1::kv_client::KvClient;
    use strata_proto::v1::txn_client::TxnClient;
    use strata_proto::v1::ErrorDetail;
    use tonic::transport::Channel;

    use super::get;
    use super::support::{channel, start_with, wait_exit, wait_ready, Node, DEADLINE};

    /// The physical milliseconds of a hybrid timestamp.
    fn physical_ms(ts: u64) -> u64 {
        ts >> 18
    }

    async fn put(kv: &mut KvClient<Channel>, key: &str, value: &str) -> Result<u64, tonic::Status> {
        Ok(kv
            .put(pb::PutRequest {
                key: key.into(),
                value: value.into(),
            })
            .await?
            .into_inner()
            .commit_ts)
    }

    /// Begins a transaction, buffers `writes` and sends Commit, which the failpoint armed in
    /// `node` turns into a crash; waits for the process to die. Returns the start_ts.
    async fn commit_and_crash(mut node: Node, writes: &[(&str, &str)]) -> u64 {
        let mut txn = TxnClient::new(channel(&node).await);
        let begin = txn
            .begin(pb::BeginRequest::default())
            .await
            .expect("begin")
            .into_inner();
        for (k, v) in writes {
            txn.put(pb::TxnPutRequest {
                txn_id: begin.txn_id,
                key: (*k).into(),
                value: (*v).into(),
            })
            .await
            .expect("put");
        }
        let commit = txn
            .commit(pb::CommitRequest {
                txn_id: begin.txn_id,
            })
            .await;
        assert!(commit.is_err(), "the failpoint ends the process mid-commit");
        assert_eq!(wait_exit(&mut node), None, "killed by abort(), not exited");
        begin.start_ts
    }

    /// Item 7: the primary committed, the process died before the secondary; the primary is
    /// overwritten, the node restarts and GC compacts. The secondary must come out committed,
    /// not rolled back: GC may not drop the primary's commit record while the secondary's lock
    /// still needs it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_secondary_of_a_committed_primary_survives_restart_overwrite_and_gc() {
        let dir = tempfile::tempdir().expect("tempdir");
        let quiet_gc = ["--gc-life-time-s", "1", "--gc-interval-ms", "3600000"];
        // Two phases: the crash point is between the primary's commit and the secondary's.
        let two_pc = [&quiet_gc[..], &["--one-pc-max-kb", "0"]].concat();
        let node = start_with(
            dir.path(),
            &two_pc,
            &[("FAILPOINTS", "txn_commit_abort_before_secondaries=return")],
        );
        wait_ready(&node).await;
        // The first key is the primary.
        commit_and_crash(
            node,
            &[("a/primary", "committed"), ("b/secondary", "committed")],
        )
        .await;

        // Overwrite the primary, then let the clock run past the overwrite by more than the GC
        // life time, so that a later safe point covers both versions of the primary.
        let node = start_with(dir.path(), &quiet_gc, &[]);
        wait_ready(&node).await;
        let mut kv = KvClient::new(channel(&node).await);
        let overwrite_ts = put(&mut kv, "a/primary", "overwritten")
            .await
            .expect("overwrite the primary");
        let deadline = Instant::now() + DEADLINE;
        while physical_ms(get(&mut kv, "a/primary").await.1) <= physical_ms(overwrite_ts) + 1_500 {
            assert!(Instant::now() < deadline, "the clock does not move");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop((kv, node)); // kill -9

        // Restart with GC every 100 ms, each tick compacting the whole engine.
        let node = start_with(
            dir.path(),
            &["--gc-life-time-s", "1", "--gc-interval-ms", "100"],
            &[("FAILPOINTS", "gc_tick_compact_all=return")],
        );
        wait_ready(&node).await;
        let ch = channel(&node).await;
        let mut admin = AdminClient::new(ch.clone());
        let deadline = Instant::now() + DEADLINE;
        loop {
            let s = admin
                .status(pb::StatusRequest {})
                .await
                .expect("status")
                .into_inner();
            let compactions = s.engine.map_or(0, |e| e.compactions);
            if s.gc_safe_point > overwrite_ts && compactions > 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "GC never ran past the overwrite (safe point {}, compactions {compactions})",
                s.gc_safe_point
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut kv = KvClient::new(ch);
        assert_eq!(
            get(&mut kv, "b/secondary").await.0.as_deref(),
            Some(&b"committed"[..]),
            "the committed secondary was rolled back"
        );
        assert_eq!(
            get(&mut kv, "a/primary").await.0.as_deref(),
            Some(&b"overwritten"[..])
        );
    }

    /// Item 8: locks left by a crash before the commit point. A later run knows their
    /// coordinator is gone: a write to such a key succeeds at once although the lock's TTL has
    /// ten minutes to go and writers may not wait on live locks at all (`--lock-wait-ms 0`),
    /// and the background resolver clears locks nobody touches, so the safe point moves past
    /// them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn locks_of_a_crashed_run_are_resolved_at_once_and_stop_pinning_gc() {
        let dir = tempfile::tempdir().expect("tempdir");
        let long_ttl = ["--lock-ttl-ms", "600000"];
        let crash = [("FAILPOINTS", "txn_commit_abort_before_primary=return")];

        // Two phases: the crash leaves prewritten locks.
        let node = start_with(
            dir.path(),
            &[&long_ttl[..], &["--one-pc-max-kb", "0"]].concat(),
            &crash,
        );
        wait_ready(&node).await;
        commit_and_crash(node, &[("k/1", "lost"), ("k/2", "lost")]).await;

        let node = start_with(
            dir.path(),
            &[
                "--lock-ttl-ms",
                "600000",
                "--lock-wait-ms",
                "0",
                "--gc-interval-ms",
                "3600000",
            ],
            &[],
        );
        wait_ready(&node).await;
        let mut kv = KvClient::new(channel(&node).await);
        if let Err(s) = put(&mut kv, "k/2", "new").await {
            panic!(
                "a write to a key locked by the crashed run failed ({:?}): {s}",
                ErrorDetail::from_status(&s).map(|d| d.reason)
            );
        }
        assert_eq!(get(&mut kv, "k/2").await.0.as_deref(), Some(&b"new"[..]));
        assert_eq!(get(&mut kv, "k/1").await.0, None, "rolled back");
        drop((kv, node));

        // Another crash leaves locks on keys no one will touch again.
        let node = start_with(
            dir.path(),
            &[&long_ttl[..], &["--one-pc-max-kb", "0"]].concat(),
            &crash,
        );
        wait_ready(&node).await;
        let lock_ts = commit_and_crash(node, &[("j/1", "lost"), ("j/2", "lost")]).await;
        let node = start_with(
            dir.path(),
            &[
                "--lock-ttl-ms",
                "600000",
                "--gc-life-time-s",
                "1",
                "--gc-interval-ms",
                "100",
            ],
            &[],
        );
        wait_ready(&node).await;
        let mut admin = AdminClient::new(channel(&node).await);
        let deadline = Instant::now() + DEADLINE;
        loop {
            let sp = admin
                .get_gc_safe_point(pb::GetGcSafePointRequest {})
                .await
                .expect("safe point")
                .into_inner()
                .safe_point;
            if sp > lock_ts {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the safe point {sp} stays pinned at the crashed transaction's lock ({lock_ts})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Item 11: a transaction id handed out before a restart never names a transaction after
/// it. Client A's stale id gets NOT_FOUND; client B's transaction is not disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_id_from_before_a_restart_is_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_with(dir.path(), &[], &[]);
    wait_ready(&node).await;
    let grpc_port = node.grpc.port().to_string();
    let mut a = TxnClient::new(channel(&node).await);
    let a_id = a
        .begin(pb::BeginRequest::default())
        .await
        .expect("begin A")
        .into_inner()
        .txn_id;
    a.put(pb::TxnPutRequest {
        txn_id: a_id,
        key: b"a".to_vec(),
        value: b"from A".to_vec(),
    })
    .await
    .expect("A buffers a put");
    drop(node); // kill -9

    // The same address, so A's channel reconnects to the new process by itself.
    let grpc_addr = format!("127.0.0.1:{grpc_port}");
    let node = start_with(dir.path(), &["--grpc-addr", &grpc_addr], &[]);
    wait_ready(&node).await;
    let mut b = TxnClient::new(channel(&node).await);
    let b_id = b
        .begin(pb::BeginRequest::default())
        .await
        .expect("begin B")
        .into_inner()
        .txn_id;
    assert_ne!(a_id, b_id, "an id was reused across the restart");

    let not_found = |r: Result<_, tonic::Status>, what: &str| {
        let s = r.expect_err(what);
        assert_eq!(s.code(), tonic::Code::NotFound, "{what}: {s}");
        let d = ErrorDetail::from_status(&s).expect("an ErrorDetail");
        assert_eq!(d.reason, "TXN_NOT_FOUND", "{what}");
    };
    let stale_put = a
        .put(pb::TxnPutRequest {
            txn_id: a_id,
            key: b"a2".to_vec(),
            value: b"from A".to_vec(),
        })
        .await;
    not_found(stale_put.map(|_| ()), "A's stale put");
    let stale_commit = a.commit(pb::CommitRequest { txn_id: a_id }).await;
    not_found(stale_commit.map(|_| ()), "A's stale commit");

    b.put(pb::TxnPutRequest {
        txn_id: b_id,
        key: b"b".to_vec(),
        value: b"from B".to_vec(),
    })
    .await
    .expect("B's put");
    let commit = b
        .commit(pb::CommitRequest { txn_id: b_id })
        .await
        .expect("B commits")
        .into_inner();
    assert!(commit.commit_ts > 0);
    let mut kv = KvClient::new(channel(&node).await);
    assert_eq!(get(&mut kv, "b").await.0.as_deref(), Some(&b"from B"[..]));
    assert_eq!(get(&mut kv, "a").await.0, None);
    assert_eq!(get(&mut kv, "a2").await.0, None);
}
