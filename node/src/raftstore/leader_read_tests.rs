//! Leader readiness and ReadIndex at the replica level, on the deterministic in-memory
//! cluster of [`super::sim`]: what the driver relies on when it parks requests.

use super::sim::{Cluster, SHARD};

fn read_ctxs(c: &mut Cluster, node: u64) -> Vec<(Vec<u8>, u64)> {
    c.store(node)
        .peer_mut(SHARD)
        .unwrap()
        .take_read_states()
        .into_iter()
        .map(|rs| (rs.request_ctx, rs.index))
        .collect()
}

#[test]
fn a_new_leader_is_ready_only_once_its_first_entry_is_applied() {
    let mut c = Cluster::new(3, 31);
    assert!(c.run_until(500, |c| c.leader().is_some()));
    let l = c.leader().unwrap();
    // Elected in the last round: its term's first entry cannot be committed yet (no
    // follower has acknowledged it).
    let p = c.store(l).peer(SHARD).unwrap();
    assert!(p.is_leader());
    assert!(!p.is_leader_ready());
    // raft-rs drops a ReadIndex on such a leader without a word; the driver must park reads.
    c.store(l)
        .peer_mut(SHARD)
        .unwrap()
        .read_index(b"early".to_vec());
    assert!(c.run_until(100, |c| c.store(l).peer(SHARD).unwrap().is_leader_ready()));
    let p = c.store(l).peer(SHARD).unwrap();
    assert_eq!(
        p.raw().raft.raft_log.term(p.applied_index()).unwrap(),
        p.term(),
        "ready means an entry of its own term is applied"
    );
    c.run_until(20, |_| false);
    assert!(
        read_ctxs(&mut c, l).is_empty(),
        "the early read was dropped"
    );
    // Followers are never ready.
    for n in (1..=3).filter(|n| *n != l) {
        assert!(!c.store(n).peer(SHARD).unwrap().is_leader_ready());
    }
    // A ready leader's ReadIndex comes back, after a quorum round, at its commit index.
    assert!(c.put("k", "v"));
    let commit = c.store(l).peer(SHARD).unwrap().commit_index();
    c.store(l)
        .peer_mut(SHARD)
        .unwrap()
        .read_index(b"late".to_vec());
    let mut got = Vec::new();
    assert!(c.run_until(50, |c| {
        got.extend(read_ctxs(c, l));
        !got.is_empty()
    }));
    assert_eq!(got, vec![(b"late".to_vec(), commit)]);
}

#[test]
fn a_partitioned_leader_gets_no_read_state() {
    let mut c = Cluster::new(3, 32);
    let l = c.wait_leader();
    assert!(c.put("k", "v"));
    let others: Vec<u64> = (1..=3).filter(|n| *n != l).collect();
    c.net.partition(&[l], &others);
    c.store(l)
        .peer_mut(SHARD)
        .unwrap()
        .read_index(b"cut".to_vec());
    let mut got = Vec::new();
    // Until check_quorum steps it down, and after: no quorum, no read state.
    c.run_until(200, |c| {
        got.extend(read_ctxs(c, l));
        false
    });
    assert!(got.is_empty(), "{got:?}");
    assert!(!c.store(l).peer(SHARD).unwrap().is_leader());
}
