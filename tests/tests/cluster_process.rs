//! The harness as tests use it: three real node processes on 127.0.0.1, one killed with
//! `kill -9` and restarted on the same data and ports, one stopped with SIGTERM and wiped.
//!
//! The nodes do not replicate yet, so each one's data is its own: these checks are about the
//! processes (start, serve, crash, restart, identity), not about the cluster agreeing.

use std::time::Duration;

use strata::cli::Clients;
use strata::server::identity::IDENTITY_FILE;
use strata_proto::v1;
use strata_tests::{node_binary, Cluster};

async fn put(c: &mut Clients, key: &str, value: &str) {
    c.kv.put(v1::PutRequest {
        key: key.into(),
        value: value.into(),
    })
    .await
    .expect("put");
}

async fn get(c: &mut Clients, key: &str) -> Option<Vec<u8>> {
    let r =
        c.kv.get(v1::GetRequest {
            key: key.into(),
            read_ts: 0,
        })
        .await
        .expect("get")
        .into_inner();
    r.found.then_some(r.value)
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
async fn three_nodes_serve_and_one_killed_with_sigkill_serves_again_after_a_restart() {
    let mut cluster = Cluster::builder(node_binary!())
        .nodes(3)
        .start()
        .await
        .expect("three nodes start");
    assert_eq!(cluster.len(), 3);
    assert_eq!(cluster.endpoints().len(), 3);

    // Every node serves, knows its id and the three configured members.
    for i in 0..3 {
        let mut c = cluster.client(i).await.expect("connect");
        put(&mut c, "who", &format!("node {}", i + 1)).await;
        let s = c
            .admin
            .status(v1::StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        assert_eq!(s.node_id, cluster.node_id(i));
        assert!(!s.replicated);
        assert_eq!(s.members.len(), 3);
        let raft = cluster.addresses(i).unwrap().raft.to_string();
        assert_eq!(s.raft_addr, raft, "advertises its initial-member address");
    }

    // kill -9 node 2; a client given every endpoint fails over past it.
    let before = cluster.addresses(1).unwrap().clone();
    let first = incarnation(&cluster, 1);
    assert!(!cluster.kill9(1).expect("kill -9").success());
    assert!(!cluster.is_running(1).unwrap());
    let endpoints = [cluster.endpoint(1).unwrap(), cluster.endpoint(2).unwrap()];
    let mut c = Clients::connect_first(&endpoints, Duration::from_secs(2))
        .await
        .expect("fails over to node 3");
    assert_eq!(c.endpoint(), endpoints[1]);
    assert_eq!(get(&mut c, "who").await.as_deref(), Some(&b"node 3"[..]));

    // Restarted on the same data and ports, it serves what it acknowledged before.
    cluster.restart(1).await.expect("restart");
    let after = cluster.addresses(1).unwrap().clone();
    assert_eq!(
        (after.grpc, after.http, after.raft),
        (before.grpc, before.http, before.raft)
    );
    assert_ne!(after.pid, before.pid);
    let mut c = cluster.client(1).await.expect("connect");
    assert_eq!(get(&mut c, "who").await.as_deref(), Some(&b"node 2"[..]));
    assert_eq!(incarnation(&cluster, 1), first, "same data, same identity");

    // SIGTERM is a clean stop; a wiped node comes back as a fresh identity, empty.
    let (status, killed) = cluster.stop(2).await.expect("stop");
    assert!(status.success() && !killed, "{status}");
    let old = incarnation(&cluster, 2);
    cluster.wipe(2).expect("wipe");
    cluster.restart(2).await.expect("restart after the wipe");
    let mut c = cluster.client(2).await.expect("connect");
    assert_eq!(get(&mut c, "who").await, None, "the wiped data is gone");
    assert_ne!(
        incarnation(&cluster, 2),
        old,
        "a wiped volume is a new identity"
    );
    assert!(cluster.wipe(2).is_err(), "a running node is not wiped");
    let log = cluster.log_tail(2, 200).unwrap();
    assert!(
        log.contains("\"event\":\"listening\""),
        "logs are captured: {log}"
    );
}
