//! Members that come back: a wiped initial member rejoins as a new member (with the same
//! configuration, started late, started one after another, never registered), and a
//! removed node retires, stays out, and returns only wiped (D125-D127, D155).

use super::*;

/// Waits until node `id`'s own replica has applied what node `leader` has committed.
async fn wait_caught_up(c: &TestCluster, id: u64, leader: u64) {
    let own = |s: &pb::StatusResponse| {
        s.replicas
            .iter()
            .find(|r| r.node_id == s.node_id)
            .map(|r| (r.commit_index, r.applied_index))
            .unwrap_or_default()
    };
    let target = own(&c.status(leader).await).0;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let applied = own(&c.status(id).await).1;
        if applied >= target {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {id} applied {applied}, the leader committed {target}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A removed node answers a client with `NODE_REMOVED` (UNAVAILABLE), serving nothing.
async fn refuses_clients(c: &TestCluster, id: u64) {
    let err = c
        .kv(id)
        .await
        .get(pb::GetRequest {
            key: b"k".to_vec(),
            read_ts: 0,
        })
        .await
        .expect_err("a removed node serves no client");
    assert_eq!(reason(&err), Some(ErrorReason::NodeRemoved), "{err:?}");
    assert_eq!(err.code(), tonic::Code::Unavailable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wiped_initial_member_restarted_with_the_same_config_rejoins_as_a_new_member() {
    let mut c = TestCluster::start(3).await;
    wait_registered(&c).await;
    put(&mut c.kv(1).await, "before", "wipe").await;
    let leader = c.leader(1).await;
    let wiped = (1..=3).find(|id| *id != leader).expect("a follower");
    let old = c.node(wiped).identity().incarnation.clone();
    c.stop_and_wipe(wiped).await;
    put(&mut c.kv(leader).await, "while", "down").await;
    // Same configuration (its id and the initial members), empty volume: it must find the
    // cluster, not bootstrap a second log under its old id.
    c.restart(wiped).await;
    let new = c.node(wiped).identity().incarnation.clone();
    assert_ne!(new, old, "a wiped directory is a new incarnation");
    assert!(
        c.node(wiped).state.replica.found_cluster().is_some(),
        "the wiped node joins instead of bootstrapping"
    );
    // The old identity is removed and the node added back as a new voter, caught up.
    for id in 1..=3 {
        wait_voter_with(&c, id, wiped, &new).await;
        wait_voters(&c, id, &[1, 2, 3]).await;
    }
    let leader = c.leader(1).await;
    wait_caught_up(&c, wiped, leader).await;
    // It serves as a gateway, and holds the data on its own replica once it leads.
    let mut kv = c.kv(wiped).await;
    assert_eq!(get(&mut kv, "before").await.as_deref(), Some(&b"wipe"[..]));
    assert_eq!(get(&mut kv, "while").await.as_deref(), Some(&b"down"[..]));
    c.admin(wiped)
        .await
        .transfer_leader(pb::TransferLeaderRequest { node_id: wiped })
        .await
        .expect("the rejoined node can lead");
    assert_eq!(c.leader(1).await, wiped);
    assert_eq!(get(&mut kv, "while").await.as_deref(), Some(&b"down"[..]));
    put(&mut kv, "after", "rejoin").await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_initial_member_that_starts_after_the_others_elected_stays_the_voter_it_is() {
    // Order 1: nodes 1 and 2 form the group and elect; node 3 starts for the first time.
    let (mut c, ports) = TestCluster::plan(3);
    c.start_some(&ports, &[1, 2]).await;
    let leader = c.leader(1).await;
    put(&mut c.kv(1).await, "k", "before 3").await;
    c.start_some(&ports, &[3]).await;
    let three = c.node(3).identity().incarnation.clone();
    // The group lists it without an incarnation (it never registered one): its first start,
    // so it bootstraps as an initial member. It stays a voter throughout (never removed,
    // never a learner), catches up and registers.
    assert!(c.node(3).state.replica.found_cluster().is_none());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = c.status(leader).await;
        assert_eq!(
            voters(&s.members),
            vec![1, 2, 3],
            "node 3 is never removed: {:?}",
            s.members
        );
        if s.members
            .iter()
            .any(|m| m.node_id == 3 && m.incarnation == three)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 3 not recorded: {:?}",
            s.members
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_registered(&c).await;
    wait_caught_up(&c, 3, c.leader(1).await).await;
    assert_eq!(
        get(&mut c.kv(3).await, "k").await.as_deref(),
        Some(&b"before 3"[..])
    );
    // It counts: with node 1 down, nodes 2 and 3 are a majority and keep serving.
    c.stop(1).await;
    put(&mut c.kv(3).await, "k2", "without 1").await;
    assert_eq!(
        get(&mut c.kv(2).await, "k2").await.as_deref(),
        Some(&b"without 1"[..])
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn initial_members_that_start_one_after_another_before_any_election_bootstrap() {
    // Order 2: node 1 starts alone (no peer answers: it bootstraps, and cannot elect), then
    // nodes 2 and 3, which find node 1 without a leader: no cluster yet, they bootstrap too.
    let (mut c, ports) = TestCluster::plan(3);
    c.start_some(&ports, &[1]).await;
    assert!(c.node(1).state.replica.found_cluster().is_none());
    c.start_some(&ports, &[2, 3]).await;
    for id in 2..=3 {
        assert!(
            c.node(id).state.replica.found_cluster().is_none(),
            "node {id} bootstraps"
        );
    }
    for id in 1..=3 {
        wait_voters(&c, id, &[1, 2, 3]).await;
    }
    wait_registered(&c).await;
    put(&mut c.kv(3).await, "k", "v").await;
    assert_eq!(
        get(&mut c.kv(1).await, "k").await.as_deref(),
        Some(&b"v"[..])
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_node_stops_refuses_clients_stays_out_and_comes_back_only_wiped() {
    let mut c = TestCluster::start(3).await;
    wait_registered(&c).await;
    put(&mut c.kv(1).await, "k", "v").await;
    let leader = c.leader(1).await;
    let gone = (1..=3).find(|id| *id != leader).expect("a follower");
    let r = c
        .admin(leader)
        .await
        .remove_node(pb::RemoveNodeRequest { node_id: gone })
        .await
        .expect("remove")
        .into_inner();
    assert!(r.was_member);
    // It applies its removal and says so; it keeps running.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c.status(gone).await.removed {
        assert!(
            Instant::now() < deadline,
            "node {gone} does not report its removal"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let own = |s: &pb::StatusResponse| {
        s.replicas
            .iter()
            .find(|r| r.node_id == s.node_id)
            .map(|r| r.term)
            .unwrap_or_default()
    };
    // Over many election timeouts (20 ms ticks, elections after 10 to 20 ticks) it sends
    // nothing, so the group's term stays where it is.
    let term = own(&c.status(leader).await);
    // Messages of the ready that applied the removal may still be on their way out (the
    // counter moves when the link sends them): wait until it stands still for 100 ms. A
    // node that campaigns keeps sending every election timeout, which the loop below sees.
    let sent_now = || c.node(gone).state.replica.transport_stats().messages_sent;
    let mut sent = sent_now();
    let settle = Instant::now() + Duration::from_secs(2);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = sent_now();
        if now == sent || Instant::now() > settle {
            break;
        }
        sent = now;
    }
    let until = Instant::now() + Duration::from_millis(2_000);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            own(&c.status(leader).await),
            term,
            "the group's term climbs"
        );
        assert_eq!(
            c.node(gone).state.replica.transport_stats().messages_sent,
            sent,
            "the removed node still sends Raft messages"
        );
    }
    // Clients are told to go elsewhere.
    refuses_clients(&c, gone).await;
    // A restart on its data does not bring it back as a voter.
    c.stop(gone).await;
    c.restart(gone).await;
    assert!(
        c.status(gone).await.removed,
        "still removed after a restart"
    );
    let sent = c.node(gone).state.replica.transport_stats().messages_sent;
    let term = own(&c.status(leader).await);
    let until = Instant::now() + Duration::from_millis(1_000);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            own(&c.status(leader).await),
            term,
            "the group's term climbs"
        );
    }
    assert_eq!(
        c.node(gone).state.replica.transport_stats().messages_sent,
        sent
    );
    let mut others: Vec<u64> = (1..=3).filter(|id| *id != gone).collect();
    others.sort_unstable();
    wait_voters(&c, leader, &others).await;
    // Wiped and started again with `--join`, it comes back as a new member.
    c.stop_and_wipe(gone).await;
    c.restart_joining(gone).await;
    let new = c.node(gone).identity().incarnation.clone();
    assert!(!c.status(gone).await.removed);
    for id in 1..=3 {
        wait_voter_with(&c, id, gone, &new).await;
    }
    wait_caught_up(&c, gone, c.leader(leader).await).await;
    assert_eq!(
        get(&mut c.kv(gone).await, "k").await.as_deref(),
        Some(&b"v"[..])
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wiped_member_that_never_registered_finds_its_lost_log_and_rejoins() {
    // The window registration cannot close: a member acknowledged entries and lost them
    // (wiped) before its incarnation was recorded. Forced: no node of this cluster
    // registers (so the new incarnation below is recorded only by its AddNode).
    let (mut c, ports) = TestCluster::plan(3);
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    crate::server::membership::SKIP_REGISTRATION
        .lock()
        .expect("hook")
        .extend(addrs.iter().cloned());
    c.start_some(&ports, &[1, 2, 3]).await;
    let leader = c.leader(1).await;
    let wiped = (1..=3).find(|id| *id != leader).expect("a follower");
    put(&mut c.kv(leader).await, "k", "acknowledged").await;
    wait_caught_up(&c, wiped, leader).await;
    let old = c.node(wiped).identity().incarnation.clone();
    let s = c.status(leader).await;
    assert!(
        s.members
            .iter()
            .any(|m| m.node_id == wiped && m.incarnation != old),
        "its incarnation is not recorded: {:?}",
        s.members
    );
    c.stop_and_wipe(wiped).await;
    // Listed without an incarnation, it bootstraps (it cannot tell this from a first
    // start); the leader's first heartbeat says more is committed there than its log holds,
    // and it asks to be added again: the old member is removed, the new one added.
    c.restart(wiped).await;
    assert!(c.node(wiped).state.replica.found_cluster().is_none());
    let new = c.node(wiped).identity().incarnation.clone();
    for id in 1..=3 {
        wait_voter_with(&c, id, wiped, &new).await;
    }
    wait_caught_up(&c, wiped, c.leader(leader).await).await;
    assert_eq!(
        get(&mut c.kv(wiped).await, "k").await.as_deref(),
        Some(&b"acknowledged"[..])
    );
    c.shutdown().await;
    let mut skip = crate::server::membership::SKIP_REGISTRATION
        .lock()
        .expect("hook");
    for a in &addrs {
        skip.remove(a);
    }
}

/// D155: the crash window between applying its own removal and the periodic check that
/// retires the node (and wrote the marker). Forced: the check never runs on the removed
/// node (as if it was killed first), which then stops with its removal applied and flushed
/// (its stored directory no longer lists it, so nothing on restart could tell it had been
/// a member). The marker written as the removal was applied brings it up retired.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_stopped_before_its_removal_check_comes_back_retired() {
    let scenario = fail::FailScenario::setup();
    let mut c = TestCluster::start(3).await;
    wait_registered(&c).await;
    put(&mut c.kv(1).await, "k", "v").await;
    let leader = c.leader(1).await;
    let gone = (1..=3).find(|id| *id != leader).expect("a follower");
    let incarnation = c.node(gone).identity().incarnation.clone();
    fail::cfg(
        "server::replica::check_removal",
        &format!("return({incarnation})"),
    )
    .expect("failpoint");
    // The leader keeps its address, so the removal's commit reaches it.
    let leader_incarnation = c.node(leader).identity().incarnation.clone();
    fail::cfg(
        "raftstore::kv_apply::keep_removed_addresses",
        &format!("return({leader_incarnation})"),
    )
    .expect("failpoint");
    let r = c
        .admin(leader)
        .await
        .remove_node(pb::RemoveNodeRequest { node_id: gone })
        .await
        .expect("remove")
        .into_inner();
    assert!(r.was_member);
    // It applies its removal: its own configuration no longer lists it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = c
            .node(gone)
            .state
            .replica
            .status()
            .expect("the replica's status");
        let me = crate::raftstore::PeerId(gone);
        if !s.voters.contains(&me) && !s.learners.contains(&me) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {gone} does not apply its removal: {s:?}, removed {}",
            c.node(gone).state.replica.is_removed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dir = c.node(gone).state.config.data_dir.clone();
    assert!(
        dir.join(crate::server::identity::REMOVED_FILE).exists(),
        "the marker is written as the removal is applied"
    );
    c.stop(gone).await;
    fail::remove("server::replica::check_removal");
    c.restart(gone).await;
    assert!(c.status(gone).await.removed, "retired after a restart");
    refuses_clients(&c, gone).await;
    let sent = c.node(gone).state.replica.transport_stats().messages_sent;
    let until = Instant::now() + Duration::from_millis(1_000);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        c.node(gone).state.replica.transport_stats().messages_sent,
        sent,
        "the restarted removed node sends Raft messages"
    );
    c.shutdown().await;
    scenario.teardown();
}
