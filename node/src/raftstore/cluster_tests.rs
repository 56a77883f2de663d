//! Deterministic in-process cluster tests over the fault-injecting network of [`super::sim`].
//!
//! Every test is seeded, bounded in rounds, and reads no clock.

use std::collections::BTreeMap;

use super::sim::{Cluster, Faults, SHARD};
use super::types::{PeerId, ProposalId};
use super::RaftStoreError;

/// Runs a membership change on `leader`'s replica and waits for its applied outcome.
fn change_membership(
    c: &mut Cluster,
    leader: u64,
    id: u64,
    change: impl FnOnce(&mut super::Peer, ProposalId) -> super::Result<()>,
) {
    let id = ProposalId(id);
    change(c.store(leader).peer_mut(SHARD).unwrap(), id).unwrap();
    assert!(c.run_until(300, |c| c.outcome(id).is_some()));
    assert!(matches!(c.outcome(id), Some(Ok(_))), "{:?}", c.outcome(id));
}

fn voters_of(c: &mut Cluster, node: u64) -> Vec<u64> {
    let mut v = c.store(node).peer(SHARD).unwrap().conf_state().voters;
    v.sort_unstable();
    v
}

/// Steps every message due into its destination, without running any ready loop.
fn deliver(c: &mut Cluster) {
    for (_, msg) in c.net.take_due() {
        let to = msg.msg.to;
        c.store(to).step(msg).unwrap();
    }
}

#[test]
fn an_applied_entry_is_answered_before_the_log_write_of_newer_ones() {
    let mut c = Cluster::new(3, 11);
    let leader = c.wait_leader();
    // Everything the election appended is applied everywhere first.
    assert!(c.run_until(300, |c| {
        let last = c.store(leader).peer(SHARD).unwrap().last_index();
        (1..=3).all(|n| c.applied(n) == last)
    }));
    let followers: Vec<u64> = (1..=3).filter(|n| *n != leader).collect();
    // p1 reaches every log; the followers' acknowledgements are on their way back.
    let p1 = c.propose_at(leader, "a", "1").unwrap();
    c.store(leader).process_ready().unwrap();
    deliver(&mut c);
    for f in &followers {
        c.store(*f).process_ready().unwrap();
    }
    // p2 is proposed before they arrive: the leader's next ready commits p1 and holds p2.
    let p2 = c.propose_at(leader, "b", "2").unwrap();
    deliver(&mut c);
    let writes = c.store(leader).stats().writes;
    let pending = c.store(leader).begin_ready().unwrap().expect("a ready");
    let early: BTreeMap<ProposalId, bool> = c
        .store(leader)
        .take_outcomes()
        .into_iter()
        .map(|o| (o.id, o.result.is_ok()))
        .collect();
    assert_eq!(early, BTreeMap::from([(p1, true)]), "p1 only, applied");
    assert_eq!(c.value(leader, "a").as_deref(), Some("1"));
    assert_eq!(
        c.store(leader).stats().writes,
        writes,
        "p2 is not written yet"
    );
    c.store(leader).complete_ready(pending).unwrap();
    assert_eq!(c.store(leader).stats().writes, writes + 1);
    assert!(c.run_until(100, |c| matches!(c.outcome(p2), Some(Ok(_)))));
}

#[test]
fn a_leader_is_elected_and_only_one_per_term() {
    let mut c = Cluster::new(3, 1);
    let leader = c.wait_leader();
    // Let the followers learn of it, then check no two nodes lead in the same term.
    c.run_until(50, |_| false);
    let leaders = c.leaders();
    assert_eq!(leaders.len(), 1, "{leaders:?}");
    assert_eq!(leaders[0].0, leader);
    for id in 1..=3 {
        assert_eq!(
            c.store(id).peer(SHARD).unwrap().leader(),
            Some(PeerId(leader))
        );
    }
}

#[test]
fn proposals_replicate_to_every_node_and_report_after_apply() {
    let mut c = Cluster::new(3, 2);
    let leader = c.wait_leader();
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            c.propose_at(leader, &format!("k{i}"), &format!("v{i}"))
                .unwrap(),
        );
    }
    // Nothing is reported before apply: the leader has not even persisted yet.
    assert!(ids.iter().all(|id| c.outcome(*id).is_none()));
    assert!(c.run_until(200, |c| ids.iter().all(|id| c.outcome(*id).is_some())));
    for id in &ids {
        assert!(
            matches!(c.outcome(*id), Some(Ok(_))),
            "{:?}",
            c.outcome(*id)
        );
    }
    assert!(c.converge(&[1, 2, 3]));
    for n in 1..=3 {
        assert_eq!(c.value(n, "k19").as_deref(), Some("v19"), "node {n}");
        assert_eq!(c.kv_snapshot(n), c.kv_snapshot(leader));
    }
    // Proposing to a follower fails at once with a hint naming the leader.
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    match c.propose_at(follower, "x", "y") {
        Err(RaftStoreError::NotLeader { leader: hint, .. }) => {
            assert_eq!(hint, Some(PeerId(leader)))
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }
    // The ready loop batched: fewer fsyncs than proposals on the leader.
    let stats = c.store(leader).stats();
    assert!(stats.syncs < 20 + 10, "{stats:?}");
}

#[test]
fn leader_crash_elects_a_new_leader_and_loses_no_acknowledged_write() {
    let mut c = Cluster::new(3, 3);
    let old = c.wait_leader();
    for i in 0..10 {
        assert!(c.put(&format!("a{i}"), "1"));
    }
    c.crash(old);
    let new = c.wait_leader();
    assert_ne!(new, old);
    for i in 0..10 {
        assert!(c.put(&format!("b{i}"), "2"));
    }
    let live: Vec<u64> = (1..=3).filter(|n| *n != old).collect();
    assert!(c.converge(&live));
    for n in &live {
        for i in 0..10 {
            assert_eq!(c.value(*n, &format!("a{i}")).as_deref(), Some("1"));
            assert_eq!(c.value(*n, &format!("b{i}")).as_deref(), Some("2"));
        }
    }
    // The old leader comes back from its raft-engine directory and catches up.
    c.restart(old, false);
    assert!(c.converge(&[1, 2, 3]));
    assert_eq!(c.kv_snapshot(old), c.kv_snapshot(new));
}

#[test]
fn a_minority_partition_commits_nothing_while_the_majority_continues() {
    let mut c = Cluster::new(5, 4);
    let old = c.wait_leader();
    assert!(c.put("before", "1"));
    let others: Vec<u64> = (1..=5).filter(|n| *n != old).collect();
    let minority = vec![old, others[0]];
    let majority = others[1..].to_vec();
    c.net.partition(&minority, &majority);
    // The old leader accepts a proposal but cannot commit it.
    let stale = c.propose_at(old, "minority", "x").unwrap();
    let old_commit = c.store(old).peer(SHARD).unwrap().commit_index();
    assert!(c.run_until(400, |c| c.leader().is_some_and(|l| majority.contains(&l))));
    let new = c.leader().unwrap();
    for i in 0..5 {
        let id = c.propose_at(new, &format!("m{i}"), "2").unwrap();
        assert!(c.run_until(300, |c| c.outcome(id).is_some()));
        assert!(matches!(c.outcome(id), Some(Ok(_))));
    }
    // Minority side: no commit advanced, nothing applied, no outcome reported.
    for n in &minority {
        assert_eq!(c.value(*n, "minority"), None);
        assert_eq!(c.value(*n, "m0"), None);
    }
    assert_eq!(c.store(old).peer(SHARD).unwrap().commit_index(), old_commit);
    assert!(c.outcome(stale).is_none());
    // check_quorum: the isolated leader steps down, so no two leaders serve at once.
    c.run_until(100, |_| false);
    let leaders = c.leaders();
    assert_eq!(leaders.len(), 1, "split brain: {leaders:?}");
    // Heal: the minority's proposal is replaced and reported retryable NotLeader.
    c.net.heal();
    assert!(c.run_until(400, |c| c.outcome(stale).is_some()));
    match c.outcome(stale) {
        Some(Err(e)) => assert!(e.is_retryable(), "{e}"),
        other => panic!("stale proposal: {other:?}"),
    }
    assert!(c.converge(&[1, 2, 3, 4, 5]));
    for n in 1..=5 {
        assert_eq!(c.value(n, "minority"), None);
        assert_eq!(c.value(n, "m4").as_deref(), Some("2"));
        assert_eq!(c.value(n, "before").as_deref(), Some("1"));
    }
}

#[test]
fn loss_duplication_and_reordering_do_not_change_the_outcome() {
    for seed in [5, 6, 7] {
        let mut c = Cluster::new(3, seed);
        c.wait_leader();
        c.net.set_faults(Faults {
            drop_percent: 20,
            duplicate_percent: 15,
            max_delay_rounds: 4,
        });
        let mut acked = BTreeMap::new();
        for i in 0..25 {
            let (k, v) = (format!("k{i}"), format!("v{i}-{seed}"));
            assert!(c.put(&k, &v), "seed {seed}: put {k}");
            acked.insert(k, v);
        }
        assert!(c.net.dropped() > 0, "faults were injected");
        c.net.heal();
        assert!(c.converge(&[1, 2, 3]), "seed {seed}");
        for n in 1..=3 {
            for (k, v) in &acked {
                assert_eq!(
                    c.value(n, k).as_deref(),
                    Some(v.as_str()),
                    "seed {seed} node {n}"
                );
            }
            // Duplicated messages never apply an entry twice.
            let kv = c.nodes[&n].kv.0.lock().unwrap();
            assert!(kv.writes.values().all(|w| *w == 1), "seed {seed} node {n}");
        }
    }
}

#[test]
fn a_learner_joins_is_promoted_and_a_voter_is_removed() {
    let mut c = Cluster::new(3, 8);
    let leader = c.wait_leader();
    for i in 0..5 {
        assert!(c.put(&format!("k{i}"), "1"));
    }
    c.add_joining_node(4);
    change_membership(&mut c, leader, 10_000, |p, id| p.add_learner(id, PeerId(4)));
    // The learner replays the log from index 1, the bootstrap membership included.
    assert!(c.converge(&[1, 2, 3, 4]));
    assert_eq!(c.value(4, "k4").as_deref(), Some("1"));
    assert_eq!(voters_of(&mut c, 4), vec![1, 2, 3]);
    assert_eq!(
        c.store(4).peer(SHARD).unwrap().conf_state().learners,
        vec![4]
    );

    change_membership(&mut c, leader, 10_001, |p, id| p.promote(id, PeerId(4)));
    assert!(c.converge(&[1, 2, 3, 4]));
    assert_eq!(voters_of(&mut c, leader), vec![1, 2, 3, 4]);

    let victim = (1..=3).find(|n| *n != leader).unwrap();
    change_membership(&mut c, leader, 10_002, |p, id| p.remove(id, PeerId(victim)));
    let remaining: Vec<u64> = (1..=4).filter(|n| *n != victim).collect();
    assert!(c.converge(&remaining));
    let mut expect = remaining.clone();
    expect.sort_unstable();
    assert_eq!(voters_of(&mut c, leader), expect);
    // The group commits without the removed voter: crash it, the other three carry on.
    c.crash(victim);
    assert!(c.put("after", "x"));
    assert!(c.converge(&remaining));
    assert_eq!(c.value(4, "after").as_deref(), Some("x"));
    // The epoch's conf_ver followed the three changes.
    let epoch = c.store(4).peer(SHARD).unwrap().meta().epoch;
    assert!(epoch.conf_ver >= 3, "{epoch:?}");
}

#[test]
fn leadership_transfers_to_the_chosen_replica() {
    let mut c = Cluster::new(3, 9);
    let leader = c.wait_leader();
    assert!(c.put("k", "v"));
    let target = (1..=3).find(|n| *n != leader).unwrap();
    c.store(leader)
        .peer_mut(SHARD)
        .unwrap()
        .transfer_leader(PeerId(target))
        .unwrap();
    assert!(c.run_until(200, |c| c.leader() == Some(target)));
    assert!(c.put("k2", "v2"));
    assert!(c.converge(&[1, 2, 3]));
    assert_eq!(c.value(leader, "k2").as_deref(), Some("v2"));
}

#[test]
fn a_restarted_replica_rebuilds_from_its_log_and_catches_up() {
    let mut c = Cluster::new(3, 10);
    let leader = c.wait_leader();
    for i in 0..10 {
        assert!(c.put(&format!("a{i}"), "1"));
    }
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    assert!(c.converge(&[1, 2, 3]));
    c.crash(follower);
    for i in 0..10 {
        assert!(c.put(&format!("b{i}"), "2"));
    }
    // Its state machine is lost too (as the LSM without a WAL): the replica rebuilds it
    // from its own raft-engine log, then takes the rest from the leader.
    c.restart(follower, true);
    assert!(c.converge(&[1, 2, 3]));
    assert_eq!(c.kv_snapshot(follower), c.kv_snapshot(leader));
    assert_eq!(c.value(follower, "a0").as_deref(), Some("1"));
    assert_eq!(c.value(follower, "b9").as_deref(), Some("2"));
    // Restarting every node keeps all acknowledged writes.
    for n in 1..=3 {
        c.crash(n);
    }
    for n in 1..=3 {
        c.restart(n, true);
    }
    c.wait_leader();
    assert!(c.put("c", "3"));
    assert!(c.converge(&[1, 2, 3]));
    for n in 1..=3 {
        assert_eq!(c.value(n, "a9").as_deref(), Some("1"));
        assert_eq!(c.value(n, "b9").as_deref(), Some("2"));
        assert_eq!(c.value(n, "c").as_deref(), Some("3"));
    }
}

#[test]
fn compaction_keeps_serving_a_follower_that_is_not_behind_it() {
    let mut c = Cluster::new(3, 11);
    let leader = c.wait_leader();
    for i in 0..30 {
        assert!(c.put(&format!("k{i}"), "1"));
    }
    assert!(c.converge(&[1, 2, 3]));
    c.round();
    let applied = c
        .store(leader)
        .peer(SHARD)
        .unwrap()
        .raw()
        .store()
        .persisted_applied();
    c.store(leader).compact_log(SHARD, applied).unwrap();
    let first = c.store(leader).peer(SHARD).unwrap().first_index();
    assert_eq!(first, applied);
    // Compacting past what is stored as applied is refused.
    let last = c.store(leader).peer(SHARD).unwrap().last_index();
    assert!(c.store(leader).compact_log(SHARD, last + 5).is_err());
    assert!(c.put("after", "x"));
    assert!(c.converge(&[1, 2, 3]));
    assert_eq!(c.value(1, "after").as_deref(), Some("x"));
}

#[test]
fn a_lagging_follower_is_caught_up_by_snapshot_after_compaction() {
    let mut c = Cluster::new(3, 12);
    let leader = c.wait_leader();
    assert!(c.put("early", "0"));
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    assert!(c.converge(&[1, 2, 3]));
    c.crash(follower);
    for i in 0..30 {
        assert!(c.put(&format!("k{i}"), "1"));
    }
    c.round();
    let applied = c
        .store(leader)
        .peer(SHARD)
        .unwrap()
        .raw()
        .store()
        .persisted_applied();
    c.store(leader).compact_log(SHARD, applied).unwrap();
    let follower_last = {
        c.restart(follower, false);
        c.store(follower).peer(SHARD).unwrap().last_index()
    };
    assert!(
        follower_last + 1 < c.store(leader).peer(SHARD).unwrap().first_index(),
        "the follower needs compacted entries"
    );
    assert!(c.converge(&[1, 2, 3]));
    assert_eq!(c.kv_snapshot(follower), c.kv_snapshot(leader));
    assert_eq!(c.value(follower, "k29").as_deref(), Some("1"));
    assert_eq!(
        c.nodes[&follower].kv.0.lock().unwrap().snapshots_restored,
        1
    );
    // Its log now starts after the snapshot, and it survives a restart from there.
    assert!(c.store(follower).peer(SHARD).unwrap().first_index() > follower_last + 1);
    assert!(c.put("later", "2"));
    c.crash(follower);
    c.restart(follower, false);
    assert!(c.converge(&[1, 2, 3]));
    assert_eq!(c.value(follower, "later").as_deref(), Some("2"));
}

/// A replica whose state machine is gone (in memory, lost in a crash) behind a compacted log
/// cannot replay: it waits for a snapshot. Made leader by a transfer, it refuses proposals,
/// hands leadership back and then fetches a snapshot from the new leader.
#[test]
fn a_replica_waiting_for_a_snapshot_hands_leadership_away_and_catches_up() {
    let mut c = Cluster::new(3, 13);
    let leader = c.wait_leader();
    for i in 0..10 {
        assert!(c.put(&format!("k{i}"), "1"));
    }
    assert!(c.converge(&[1, 2, 3]));
    c.round();
    for n in 1..=3 {
        let applied = c
            .store(n)
            .peer(SHARD)
            .unwrap()
            .raw()
            .store()
            .persisted_applied();
        c.store(n).compact_log(SHARD, applied).unwrap();
    }
    let waiting = (1..=3).find(|n| *n != leader).unwrap();
    c.crash(waiting);
    c.restart(waiting, true);
    assert!(c.store(waiting).peer(SHARD).unwrap().is_awaiting_snapshot());
    assert_eq!(c.applied(waiting), 0);
    // Its log is as long as anyone's, so it can win leadership; it must not keep it.
    c.store(leader)
        .peer_mut(SHARD)
        .unwrap()
        .transfer_leader(PeerId(waiting))
        .unwrap();
    assert!(c.run_until(200, |c| c.leader() == Some(waiting)));
    assert!(matches!(
        c.propose_at(waiting, "x", "y"),
        Err(RaftStoreError::NotLeader { leader: None, .. })
    ));
    assert!(
        c.run_until(300, |c| c.leader().is_some_and(|l| l != waiting)
            && !c.store(waiting).peer(SHARD).unwrap().is_awaiting_snapshot())
    );
    assert_eq!(c.nodes[&waiting].kv.0.lock().unwrap().snapshots_restored, 1);
    assert!(c.put("after", "2"));
    assert!(c.converge(&[1, 2, 3]));
    assert_eq!(c.kv_snapshot(waiting), c.kv_snapshot(leader));
    assert_eq!(c.value(waiting, "k9").as_deref(), Some("1"));
}
