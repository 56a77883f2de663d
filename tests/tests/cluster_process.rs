//! A 3-node cluster of real node processes on 127.0.0.1: every acknowledged write survives
//! `kill -9` of a node and its restart on the same data and ports, a node stopped, wiped and
//! restarted with its old id and configuration rejoins as a new member (new incarnation,
//! caught up, a gateway again, its old identity gone), and a kill -9 of every node at once
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

/// Waits until node `i` lists node `id` once, as a voter with `incarnation`.
async fn wait_member(cluster: &Cluster, i: usize, id: u64, incarnation: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(cluster, i).await;
        let rows: Vec<_> = s.members.iter().filter(|m| m.node_id == id).collect();
        if rows.len() == 1 && rows[0].voter && rows[0].incarnation == incarnation {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {} lists {:?}, expected node {id} a voter with incarnation {incarnation}",
            i + 1,
            s.members
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

    // SIGTERM is a clean stop. Wiped and restarted under the same id and configuration (as
    // a Kubernetes pod back with an empty volume), the node has lost log it acknowledged,
    // which Raft assumes never happens: it must not bootstrap again under its old identity.
    // It finds the running cluster through its initial members and joins it as a new member:
    // the old identity is removed and the new one (a new incarnation) added, caught up, and
    // serving as a gateway. Its old incarnation is recorded first (every initial member
    // registers its own once a leader is known).
    let old = incarnation(&cluster, 2);
    wait_member(&cluster, 0, cluster.node_id(2), &old).await;
    let (stopped, killed) = cluster.stop(2).await.expect("stop");
    assert!(stopped.success() && !killed, "{stopped}");
    let mut c = Clients::connect_first(&endpoints, Duration::from_secs(10))
        .await
        .expect("connect to a live node");
    put(&mut c, "k21", "v21").await;
    cluster.wipe(2).expect("wipe");
    cluster
        .restart_unready(2)
        .await
        .expect("restart after the wipe");
    let new = incarnation(&cluster, 2);
    assert_ne!(new, old, "a wiped volume is a new identity");
    for i in 0..3 {
        wait_member(&cluster, i, cluster.node_id(2), &new).await;
    }
    let commit = cluster_commit(&cluster, &[0, 1]).await;
    wait_applied(&cluster, 2, commit).await;
    let log = std::fs::read_to_string(cluster.log_file(2).unwrap()).unwrap_or_default();
    assert!(
        log.contains("joining it as a new member"),
        "the wiped node says it joins: {log}"
    );
    let mut only = cluster.client(2).await.expect("connect");
    only.kv
        .put(v1::PutRequest {
            key: "via-rejoined".into(),
            value: b"gw".to_vec(),
        })
        .await
        .expect("the rejoined node is a gateway");
    let r = only
        .kv
        .get(v1::GetRequest {
            key: "k21".into(),
            read_ts: 0,
        })
        .await
        .expect("a read through the rejoined node")
        .into_inner();
    assert_eq!(r.value, b"v21");
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
