//! A 3-node cluster of real node processes on 127.0.0.1: every acknowledged write survives
//! `kill -9` of a node and its restart on the same data and ports, a node stopped, wiped and
//! restarted under its old id never crashes the cluster, and a kill -9 of every node at once
//! loses nothing acknowledged.
//!
//! Any node is a gateway: a client of one node alone reads and writes through it. Clients
//! given every endpoint fail over when the node they talk to is killed; reads are served by
//! the leader (ReadIndex), so "readable" means readable from the cluster, and a restarted
//! node's own progress is read from its Admin.Status.

use std::time::{Duration, Instant};

use strata::cli::Clients;
use strata::server::identity::IDENTITY_FILE;
use strata_proto::v1;
use strata_tests::{node_binary, Cluster};

async fn put(c: &mut Clients, key: &str, value: &str) {
    let req = v1::PutRequest {
        key: key.into(),
        value: value.into(),
    };
    c.write(|mut c| {
        let req = req.clone();
        async move { c.kv.put(req).await }
    })
    .await
    .expect("put");
}

async fn get(c: &mut Clients, key: &str) -> Option<Vec<u8>> {
    let req = v1::GetRequest {
        key: key.into(),
        read_ts: 0,
    };
    let r = c
        .idempotent(|mut c| {
            let req = req.clone();
            async move { c.kv.get(req).await }
        })
        .await
        .expect("get")
        .into_inner();
    r.found.then_some(r.value)
}

async fn status(cluster: &Cluster, i: usize) -> v1::StatusResponse {
    let mut c = cluster.client(i).await.expect("connect");
    c.admin
        .status(v1::StatusRequest {})
        .await
        .expect("status")
        .into_inner()
}

/// Polls node `i` until its replica has applied `index`, with a deadline.
async fn wait_applied(cluster: &Cluster, i: usize, index: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(cluster, i).await;
        let own = s.replicas.iter().find(|r| r.node_id == s.node_id);
        if own.is_some_and(|r| r.applied_index >= index) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {} did not apply {index}: {:?}",
            i + 1,
            s.replicas
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The highest commit index any running node reports.
async fn cluster_commit(cluster: &Cluster, running: &[usize]) -> u64 {
    let mut best = 0;
    for &i in running {
        let s = status(cluster, i).await;
        for r in &s.replicas {
            if r.node_id == s.node_id {
                best = best.max(r.commit_index);
            }
        }
    }
    best
}

fn incarnation(cluster: &Cluster, i: usize) -> String {
    let text = std::fs::read_to_string(cluster.data_dir(i).unwrap().join(IDENTITY_FILE))
        .expect("the identity file");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["node_id"], cluster.node_id(i));
    v["incarnation"]
        .as_str()
        .expect("an incarnation")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_keeps_every_acknowledged_write_through_kill_restart_and_wipe() {
    let mut cluster = Cluster::builder(node_binary!())
        .nodes(3)
        .start()
        .await
        .expect("three nodes start");
    assert_eq!(cluster.endpoints().len(), 3);
    let endpoints = cluster.endpoints();
    let mut c = Clients::connect_first(&endpoints, Duration::from_secs(10))
        .await
        .expect("connect");

    // One group: every node reports it, with the same three members and one leader.
    put(&mut c, "k0", "v0").await;
    let mut leaders = Vec::new();
    for i in 0..3 {
        let s = status(&cluster, i).await;
        assert_eq!(s.node_id, cluster.node_id(i));
        assert!(s.replicated);
        assert_eq!(s.members.len(), 3);
        let own = s
            .replicas
            .iter()
            .find(|r| r.node_id == s.node_id)
            .expect("its own replica row");
        leaders.push(own.leader_node_id);
        let raft = cluster.addresses(i).unwrap().raft.to_string();
        assert_eq!(s.raft_addr, raft, "advertises its initial-member address");
    }
    leaders.dedup();
    assert_eq!(leaders.len(), 1, "one leader for all: {leaders:?}");

    // Any node is a gateway: a client of one node alone writes and reads through it,
    // whichever node leads (no NOT_LEADER reaches the client).
    for i in 0..3 {
        let mut only = cluster.client(i).await.expect("connect");
        let key = format!("via{i}");
        only.kv
            .put(v1::PutRequest {
                key: key.clone().into(),
                value: b"gw".to_vec(),
            })
            .await
            .unwrap_or_else(|e| panic!("put through node {}: {e}", i + 1));
        for j in 0..3 {
            let mut reader = cluster.client(j).await.expect("connect");
            let r = reader
                .kv
                .get(v1::GetRequest {
                    key: key.clone().into(),
                    read_ts: 0,
                })
                .await
                .unwrap_or_else(|e| panic!("get through node {}: {e}", j + 1))
                .into_inner();
            assert_eq!(
                r.value,
                b"gw",
                "written via node {}, read via node {}",
                i + 1,
                j + 1
            );
        }
    }

    // kill -9 node 2 under writes: the others are a majority and keep acknowledging.
    let before = cluster.addresses(1).unwrap().clone();
    let first = incarnation(&cluster, 1);
    for n in 1..=10 {
        put(&mut c, &format!("k{n}"), &format!("v{n}")).await;
    }
    assert!(!cluster.kill9(1).expect("kill -9").success());
    // A client connected to the killed node must not resend a write whose connection broke
    // (it may have been applied), so connect again: the first reachable endpoint.
    let mut c = Clients::connect_first(&endpoints, Duration::from_secs(10))
        .await
        .expect("connect to a live node");
    for n in 11..=20 {
        put(&mut c, &format!("k{n}"), &format!("v{n}")).await;
    }
    for n in 0..=20 {
        assert_eq!(
            get(&mut c, &format!("k{n}")).await,
            Some(format!("v{n}").into_bytes()),
            "k{n} after the kill"
        );
    }

    // Restarted on the same data and ports, it catches up with what was written meanwhile.
    cluster.restart(1).await.expect("restart");
    let after = cluster.addresses(1).unwrap().clone();
    assert_eq!(
        (after.grpc, after.http, after.raft),
        (before.grpc, before.http, before.raft)
    );
    assert_ne!(after.pid, before.pid);
    assert_eq!(incarnation(&cluster, 1), first, "same data, same identity");
    let commit = cluster_commit(&cluster, &[0, 2]).await;
    wait_applied(&cluster, 1, commit).await;

    // SIGTERM is a clean stop. Wiped and restarted under the same id, the node has lost log
    // it acknowledged, which Raft assumes never happens. Depending on what the leader
    // believes of it, it either gets the log again and catches up, or it is sent heartbeats
    // claiming more is committed than its log holds, which it refuses, saying it must be
    // removed and added back as a new member (that path comes with membership changes
    // through the Admin API). Either way it never crashes, and the cluster keeps serving.
    let (stopped, killed) = cluster.stop(2).await.expect("stop");
    assert!(stopped.success() && !killed, "{stopped}");
    let old = incarnation(&cluster, 2);
    let mut c = Clients::connect_first(&endpoints, Duration::from_secs(10))
        .await
        .expect("connect to a live node");
    put(&mut c, "k21", "v21").await;
    cluster.wipe(2).expect("wipe");
    cluster
        .restart_unready(2)
        .await
        .expect("restart after the wipe");
    assert_ne!(
        incarnation(&cluster, 2),
        old,
        "a wiped volume is a new identity"
    );
    let commit = cluster_commit(&cluster, &[0, 1]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(cluster.log_file(2).unwrap()).unwrap_or_default();
        let refused = log.contains("lost acknowledged entries");
        let s = status(&cluster, 2).await;
        let caught_up = s
            .replicas
            .iter()
            .any(|r| r.node_id == s.node_id && r.applied_index >= commit);
        if refused || caught_up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the wiped node neither caught up nor said why it is refused: {:?}",
            s.replicas
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cluster.is_running(2).unwrap(), "the wiped node is still up");
    put(&mut c, "k22", "v22").await;
    for n in 0..=22 {
        assert_eq!(
            get(&mut c, &format!("k{n}")).await,
            Some(format!("v{n}").into_bytes()),
            "k{n} at the end"
        );
    }
    assert!(cluster.wipe(2).is_err(), "a running node is not wiped");

    // kill -9 every node at once and restart them all: the acknowledged writes survive a
    // crash of the whole cluster (each node replays its raft log into its engine).
    for i in 0..3 {
        assert!(!cluster.kill9(i).expect("kill -9").success());
    }
    for i in 0..3 {
        cluster.restart_unready(i).await.expect("restart");
    }
    let mut c = Clients::connect_first(&endpoints, Duration::from_secs(10))
        .await
        .expect("connect after the restart");
    for n in 0..=22 {
        assert_eq!(
            get(&mut c, &format!("k{n}")).await,
            Some(format!("v{n}").into_bytes()),
            "k{n} after every node was killed and restarted"
        );
    }
    let log = cluster.log_tail(2, 200).unwrap();
    assert!(
        log.contains("\"event\":\"listening\""),
        "logs are captured: {log}"
    );
}
