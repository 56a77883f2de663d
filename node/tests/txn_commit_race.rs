//! A write racing its own transaction's commit: it is either part of the commit or refused
//! with `TXN_NOT_ACTIVE`, never acknowledged and then dropped.
//!
//! Failpoints force the two interleavings: a Put that looked its transaction up before the
//! commit and reaches the buffer after it (`txn::write::before_lock`), and a Put that arrives
//! while the commit holds the buffer it took (`txn::commit::after_taking_writes`). They are
//! process-global, so these tests live in their own binary, and each configures its point
//! under `FailScenario` (which runs them one at a time).
#![cfg(feature = "failpoints")]

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use strata::lsm::{Db, Options};
use strata::server::{NodeConfig, Server};
use strata::tso::{LocalTso, LocalTsoOptions};
use strata::txn::{Isolation, Storage, TxnConfig, TxnError, TxnManager, TxnState};
use strata_proto::v1 as pb;
use strata_proto::v1::{kv_client::KvClient, txn_client::TxnClient, ErrorDetail};
use tonic::transport::Channel;
use tonic::Code;

/// The first thread to pass a failpoint, held there until released.
struct Pause {
    name: &'static str,
    arrived: mpsc::Receiver<()>,
    resume: Option<mpsc::Sender<()>>,
}

impl Pause {
    fn at(name: &'static str) -> Pause {
        let (arrived_tx, arrived) = mpsc::channel();
        let (resume, resume_rx) = mpsc::channel::<()>();
        let arrived_tx = Mutex::new(arrived_tx);
        let resume_rx = Mutex::new(resume_rx);
        fail::cfg_callback(name, move || {
            let _ = arrived_tx.lock().unwrap().send(());
            // Returns once resumed (or at once after the sender is gone).
            let _ = resume_rx.lock().unwrap().recv();
        })
        .unwrap();
        Pause {
            name,
            arrived,
            resume: Some(resume),
        }
    }

    /// Blocks until a thread is held at the point.
    fn wait_arrived(&self) {
        self.arrived.recv().expect("a thread reaches the failpoint");
    }

    /// Lets the held thread go; later passes do not stop.
    fn resume(&mut self) {
        fail::remove(self.name);
        self.resume.take();
    }
}

fn manager(dir: &std::path::Path) -> Arc<TxnManager> {
    let db = Db::open(dir.join("db"), Options::small_for_tests()).unwrap();
    let tso = Arc::new(LocalTso::open(LocalTsoOptions::new(dir.join("tso"))).unwrap());
    Arc::new(TxnManager::new(
        Arc::new(Storage::new(db)),
        tso,
        TxnConfig::default(),
    ))
}

fn read(m: &TxnManager, key: &[u8]) -> Option<Vec<u8>> {
    let (id, _) = m.begin(Isolation::Snapshot, true).unwrap();
    let v = m.get(id, key).unwrap();
    m.rollback(id).unwrap();
    v
}

#[test]
fn a_put_that_reaches_the_buffer_after_the_commit_fails() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path());
    let (id, _) = m.begin(Isolation::Snapshot, false).unwrap();
    m.write(id, b"a", Some(b"1")).unwrap();

    let mut pause = Pause::at("txn::write::before_lock");
    let put = {
        let m = Arc::clone(&m);
        std::thread::spawn(move || m.write(id, b"b", Some(b"2")))
    };
    // The Put has found the transaction and is about to buffer its write; the commit runs
    // to the end in between.
    pause.wait_arrived();
    let commit_ts = m.commit(id).expect("the commit succeeds");
    assert!(commit_ts.is_some());
    pause.resume();

    let r = put.join().unwrap();
    assert!(
        matches!(
            r,
            Err(TxnError::NotActive {
                state: TxnState::Finished,
                ..
            })
        ),
        "a write to a finished transaction must fail, got {r:?}"
    );
    // The commit holds exactly what was acknowledged before it.
    assert_eq!(read(&m, b"a"), Some(b"1".to_vec()));
    assert_eq!(read(&m, b"b"), None);
    scenario.teardown();
}

fn detail(s: &tonic::Status) -> ErrorDetail {
    ErrorDetail::from_status(s).expect("the status carries an ErrorDetail")
}

#[test]
fn a_put_while_the_commit_holds_the_buffer_is_refused_over_the_wire() {
    let scenario = fail::FailScenario::setup();
    // Enough workers that one held at the failpoint leaves others to serve the Put.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig::on_free_ports(dir.path());
        let handle = Server::start(config).await.unwrap();
        let ch = Channel::from_shared(format!("http://{}", handle.grpc_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut txn = TxnClient::new(ch.clone());
        let mut kv = KvClient::new(ch);
        let t = txn
            .begin(pb::BeginRequest::default())
            .await
            .unwrap()
            .into_inner();
        txn.put(pb::TxnPutRequest {
            txn_id: t.txn_id,
            key: b"a".to_vec(),
            value: b"1".to_vec(),
        })
        .await
        .unwrap();

        let pause = Pause::at("txn::commit::after_taking_writes");
        let commit = {
            let mut txn = txn.clone();
            tokio::spawn(async move { txn.commit(pb::CommitRequest { txn_id: t.txn_id }).await })
        };
        let pause = tokio::task::spawn_blocking(move || {
            pause.wait_arrived();
            pause
        })
        .await
        .unwrap();

        // The commit has taken the buffer: a Put now cannot join it, nor can a Rollback
        // undo it.
        let err = txn
            .put(pb::TxnPutRequest {
                txn_id: t.txn_id,
                key: b"b".to_vec(),
                value: b"2".to_vec(),
            })
            .await
            .expect_err("a Put during the commit is refused");
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        let d = detail(&err);
        assert_eq!(
            (d.reason.as_str(), d.retryable, d.txn_id),
            ("TXN_NOT_ACTIVE", false, t.txn_id)
        );
        assert!(err.message().contains("committing"), "{}", err.message());
        let err = txn
            .rollback(pb::RollbackRequest { txn_id: t.txn_id })
            .await
            .expect_err("a committing transaction cannot be rolled back");
        assert_eq!(detail(&err).reason, "TXN_NOT_ACTIVE");

        let mut pause = pause;
        pause.resume();
        let r = commit.await.unwrap().expect("the commit succeeds");
        assert!(r.into_inner().commit_ts > 0);

        // The outcome is what was written before the commit, and nothing else.
        let get = |key: &'static [u8]| {
            let mut kv = kv.clone();
            async move {
                kv.get(pb::GetRequest {
                    key: key.to_vec(),
                    read_ts: 0,
                })
                .await
                .unwrap()
                .into_inner()
            }
        };
        let a = get(b"a").await;
        assert!(a.found && a.value == b"1");
        assert!(!get(b"b").await.found);
        let err = txn
            .put(pb::TxnPutRequest {
                txn_id: t.txn_id,
                key: b"c".to_vec(),
                value: b"3".to_vec(),
            })
            .await
            .expect_err("the transaction is over");
        assert_eq!(detail(&err).reason, "TXN_NOT_FOUND");
        kv.put(pb::PutRequest {
            key: b"after".to_vec(),
            value: b"x".to_vec(),
        })
        .await
        .expect("the node keeps serving");
        handle.shutdown().await.unwrap();
    });
    scenario.teardown();
}
