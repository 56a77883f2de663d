//! The raft driver when its log store fails a write, forced with a failpoint: the driver
//! stops without panicking, every caller (waiting, queued or later) gets `Stopped` naming
//! the cause, and the thread can still be joined. Its own test binary because failpoints
//! are process-global; built only with the `failpoints` feature.
#![cfg(feature = "failpoints")]

use std::time::{Duration, Instant};

use raft::eraftpb::{Entry, EntryType};
use strata::raftstore::{
    Apply, ApplyOutcome, DriverConfig, LogStore, PeerConfig, PeerId, RaftDriver, RaftMessage,
    RaftStore, RaftStoreError, ReplicaMeta, Result, Role, ShardEpoch, ShardId, Transport,
};

const SHARD: ShardId = ShardId(1);

/// Counts the non-empty entries applied.
#[derive(Debug, Default)]
struct Counter {
    applied: u64,
    commands: u64,
}

impl Apply for Counter {
    fn apply(&mut self, _shard: ShardId, entries: &[Entry]) -> Result<ApplyOutcome> {
        for e in entries {
            if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
                self.commands += 1;
            }
            self.applied = e.index;
        }
        Ok(ApplyOutcome::applied(self.applied))
    }

    fn applied_index(&self) -> u64 {
        self.applied
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        Ok(self.commands.to_le_bytes().to_vec())
    }

    fn restore(&mut self, _shard: ShardId, index: u64, data: &[u8]) -> Result<()> {
        let bytes: [u8; 8] = data
            .try_into()
            .map_err(|_| RaftStoreError::Apply("bad snapshot".into()))?;
        self.commands = u64::from_le_bytes(bytes);
        self.applied = index;
        Ok(())
    }
}

/// A single-voter group sends nothing.
#[derive(Debug)]
struct Nowhere;

impl Transport for Nowhere {
    fn send(&mut self, _msg: RaftMessage) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_log_write_stops_the_driver_and_answers_every_caller() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let log = LogStore::open(dir.path()).unwrap();
    let mut store = RaftStore::new(log, Nowhere, PeerConfig::default());
    let meta = ReplicaMeta {
        shard: SHARD,
        peer: PeerId(1),
        epoch: ShardEpoch::default(),
    };
    store
        .bootstrap_shard(meta, &[PeerId(1)], Box::new(Counter::default()))
        .unwrap();
    let raft = RaftDriver::new(DriverConfig {
        tick: Duration::from_millis(10),
        ..DriverConfig::default()
    })
    .start(store)
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !raft
        .status(SHARD)
        .is_some_and(|s| s.role == Role::Leader && s.leader_ready)
    {
        assert!(Instant::now() < deadline, "no ready leader");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(raft.propose(SHARD, b"before".to_vec()).await.is_ok());

    fail::cfg("raftstore::log_store::write", "return").unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..3 {
        let raft = raft.clone();
        tasks.spawn(async move { raft.propose(SHARD, format!("during{i}").into_bytes()).await });
    }
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            Err(RaftStoreError::Stopped(why)) => {
                assert!(why.contains("injected raft log write failure"), "{why}")
            }
            other => panic!("a proposal during the failure: {other:?}"),
        }
    }
    // Later callers learn it at once, with the same cause; the node shows no replica.
    for result in [
        raft.propose(SHARD, b"after".to_vec()).await,
        raft.read_index(SHARD).await,
    ] {
        assert!(
            matches!(&result, Err(RaftStoreError::Stopped(why)) if why.contains("injected")),
            "{result:?}"
        );
    }
    assert!(!RaftStoreError::Stopped(String::new()).is_retryable());
    assert!(raft
        .stop_reason()
        .is_some_and(|r| r.contains("restart the node")));
    assert!(raft.status(SHARD).is_none());
    // The thread ended by itself, without a panic.
    raft.shutdown().unwrap();
    fail::remove("raftstore::log_store::write");
    scenario.teardown();
}
