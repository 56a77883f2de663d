//! Tests of the log store and the per-replica `raft::Storage`: persistence across reopen,
//! compaction, snapshots replacing the log, and damaged or missing state as clear errors.

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, Storage, StorageError};

use super::error::RaftStoreError;
use super::log_store::{LogStore, LogWriteBatch};
use super::storage::PeerStorage;
use super::types::{PeerId, ReplicaMeta, ShardEpoch, ShardId};

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("cmd-{index}").into_bytes().into(),
        ..Default::default()
    }
}

fn meta(shard: u64, peer: u64) -> ReplicaMeta {
    ReplicaMeta {
        shard: ShardId(shard),
        peer: PeerId(peer),
        epoch: ShardEpoch {
            conf_ver: 3,
            version: 7,
        },
    }
}

fn voters(ids: &[u64]) -> ConfState {
    ConfState {
        voters: ids.to_vec(),
        ..Default::default()
    }
}

fn hs(term: u64, commit: u64) -> HardState {
    HardState {
        term,
        commit,
        vote: 1,
        ..Default::default()
    }
}

/// Creates a replica of `shard` with entries 1..=n at term 1.
fn seeded(store: &LogStore, shard: u64, n: u64) -> PeerStorage {
    let ents: Vec<Entry> = (1..=n).map(|i| entry(i, 1)).collect();
    let mut b = LogWriteBatch::new();
    PeerStorage::bootstrap(
        &mut b,
        &meta(shard, 1),
        &voters(&[1, 2, 3]),
        &ents,
        &hs(1, n),
    )
    .unwrap();
    store.write(&mut b, true).unwrap();
    PeerStorage::open(store.clone(), ShardId(shard)).unwrap()
}

fn ctx() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

#[test]
fn state_and_entries_survive_reopen_per_shard() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = LogStore::open(dir.path()).unwrap();
        let s1 = seeded(&store, 1, 10);
        let _s2 = seeded(&store, 2, 3);
        // Staged appends become visible only after commit_staged.
        let mut b = LogWriteBatch::new();
        let staged = s1
            .stage(
                &mut b,
                None,
                &[entry(11, 2), entry(12, 2)],
                Some(&hs(2, 11)),
            )
            .unwrap();
        assert_eq!(s1.last_index().unwrap(), 10);
        store.write(&mut b, true).unwrap();
        let mut s1 = s1;
        s1.commit_staged(staged);
        assert_eq!(s1.last_index().unwrap(), 12);
    }
    let store = LogStore::open(dir.path()).unwrap();
    let metas = store.replicas().unwrap();
    assert_eq!(metas, vec![meta(1, 1), meta(2, 1)]);
    let s1 = PeerStorage::open(store.clone(), ShardId(1)).unwrap();
    assert_eq!(s1.first_index().unwrap(), 1);
    assert_eq!(s1.last_index().unwrap(), 12);
    assert_eq!(s1.term(12).unwrap(), 2);
    assert_eq!(s1.term(5).unwrap(), 1);
    let st = s1.initial_state().unwrap();
    assert_eq!(st.hard_state, hs(2, 11));
    assert_eq!(st.conf_state, voters(&[1, 2, 3]));
    let ents = s1.entries(3, 13, None, ctx()).unwrap();
    assert_eq!(ents.len(), 10);
    assert_eq!(ents[0], entry(3, 1));
    assert_eq!(ents[9], entry(12, 2));
    // max_size stops early but returns at least one entry.
    assert_eq!(s1.entries(3, 13, Some(1), ctx()).unwrap().len(), 1);
    let s2 = PeerStorage::open(store, ShardId(2)).unwrap();
    assert_eq!(s2.last_index().unwrap(), 3);
}

#[test]
fn overwriting_a_tail_drops_the_old_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    let mut s = seeded(&store, 1, 10);
    let mut b = LogWriteBatch::new();
    // A new leader replaces the uncommitted tail after 5.
    let staged = s
        .stage(&mut b, None, &[entry(6, 3)], Some(&hs(3, 5)))
        .unwrap();
    store.write(&mut b, true).unwrap();
    s.commit_staged(staged);
    assert_eq!(s.last_index().unwrap(), 6);
    drop(s);
    let s = PeerStorage::open(store, ShardId(1)).unwrap();
    assert_eq!(s.last_index().unwrap(), 6);
    assert_eq!(s.term(6).unwrap(), 3);
    assert_eq!(
        s.entries(5, 8, None, ctx()),
        Err(raft::Error::Store(StorageError::Unavailable))
    );
}

#[test]
fn appends_that_leave_a_hole_are_refused_not_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    let s = seeded(&store, 1, 5);
    let mut b = LogWriteBatch::new();
    let err = s.stage(&mut b, None, &[entry(9, 1)], None).unwrap_err();
    assert!(matches!(err, RaftStoreError::Invalid(_)), "{err}");
    assert!(b.is_empty(), "nothing staged for a refused append");
}

#[test]
fn compaction_keeps_term_of_the_boundary_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = LogStore::open(dir.path()).unwrap();
        let mut s = seeded(&store, 1, 10);
        // Only entries covered by the stored apply state may go.
        let mut b = LogWriteBatch::new();
        s.stage_apply_state(&mut b, &voters(&[1, 2, 3]), 8, &hs(1, 10))
            .unwrap();
        store.write(&mut b, true).unwrap();
        s.set_apply_state(voters(&[1, 2, 3]), 8, hs(1, 10));
        assert!(matches!(s.compact_to(10), Err(RaftStoreError::Invalid(_))));
        s.compact_to(7).unwrap();
        assert_eq!(s.first_index().unwrap(), 7);
        assert_eq!(s.term(6).unwrap(), 1);
        assert_eq!(s.term(5), Err(raft::Error::Store(StorageError::Compacted)));
        assert_eq!(
            s.entries(5, 8, None, ctx()),
            Err(raft::Error::Store(StorageError::Compacted))
        );
        assert_eq!(s.entries(7, 11, None, ctx()).unwrap().len(), 4);
        store.purge_expired_files().unwrap();
    }
    let store = LogStore::open(dir.path()).unwrap();
    let s = PeerStorage::open(store, ShardId(1)).unwrap();
    assert_eq!(s.first_index().unwrap(), 7);
    assert_eq!(s.last_index().unwrap(), 10);
    assert_eq!(s.term(6).unwrap(), 1);
    assert_eq!(s.persisted_applied(), 8);
}

#[test]
fn a_snapshot_replaces_the_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = LogStore::open(dir.path()).unwrap();
        let mut s = seeded(&store, 1, 5);
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 20;
        snap.mut_metadata().term = 4;
        snap.mut_metadata().set_conf_state(voters(&[1, 2, 3, 4]));
        let mut b = LogWriteBatch::new();
        let staged = s
            .stage(&mut b, Some(&snap), &[entry(21, 4)], Some(&hs(4, 20)))
            .unwrap();
        store.write(&mut b, true).unwrap();
        s.commit_staged(staged);
        assert_eq!(s.first_index().unwrap(), 21);
        assert_eq!(s.term(20).unwrap(), 4);
    }
    let store = LogStore::open(dir.path()).unwrap();
    let s = PeerStorage::open(store, ShardId(1)).unwrap();
    assert_eq!(s.first_index().unwrap(), 21);
    assert_eq!(s.last_index().unwrap(), 21);
    assert_eq!(s.term(20).unwrap(), 4);
    assert_eq!(s.term(21).unwrap(), 4);
    assert_eq!(s.persisted_applied(), 20);
    assert_eq!(s.initial_state().unwrap().conf_state, voters(&[1, 2, 3, 4]));
}

#[test]
fn a_missing_replica_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    let err = PeerStorage::open(store, ShardId(9)).unwrap_err();
    assert!(
        matches!(err, RaftStoreError::ShardNotFound(ShardId(9))),
        "{err}"
    );
}

#[test]
fn damaged_state_values_are_corruption_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    seeded(&store, 1, 3);
    for (key, value) in [
        (&b"replica"[..], vec![1u8, 2, 3]),
        (&b"applied"[..], vec![0u8; 3]),
        (&b"trunc"[..], vec![0u8; 5]),
    ] {
        seeded(&store, 2, 3);
        store.put_raw(ShardId(2), key, value).unwrap();
        let err = PeerStorage::open(store.clone(), ShardId(2)).unwrap_err();
        assert!(
            matches!(err, RaftStoreError::Corruption(_)),
            "{key:?}: {err}"
        );
        // Reset shard 2 for the next case.
        let mut b = LogWriteBatch::new();
        b.clear_log(ShardId(2), 0, 0).unwrap();
        store.write(&mut b, true).unwrap();
        store.put_raw(ShardId(2), b"replica", Vec::new()).unwrap();
        let mut b2 = LogWriteBatch::new();
        b2.put_replica(&meta(2, 1)).unwrap();
        b2.put_apply_state(ShardId(2), &voters(&[1]), 0).unwrap();
        store.write(&mut b2, true).unwrap();
        let _ = key;
    }
    // An unparsable hard state.
    store.put_raw(ShardId(1), b"hs", vec![0xff; 7]).unwrap();
    let err = PeerStorage::open(store.clone(), ShardId(1)).unwrap_err();
    assert!(
        matches!(
            err,
            RaftStoreError::Engine(_) | RaftStoreError::Corruption(_)
        ),
        "{err}"
    );
    // A commit index past the log would make raft-rs panic; the store refuses it first.
    let mut b = LogWriteBatch::new();
    b.put_hard_state(ShardId(1), &hs(1, 99)).unwrap();
    store.write(&mut b, true).unwrap();
    let err = PeerStorage::open(store, ShardId(1)).unwrap_err();
    assert!(matches!(err, RaftStoreError::Corruption(_)), "{err}");
}

#[test]
fn damaged_log_files_are_an_error_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = LogStore::open(dir.path()).unwrap();
        seeded(&store, 1, 50);
        seeded(&store, 2, 50);
    }
    // Damage the middle of every log file (not the tail, which recovery may truncate).
    let mut damaged = 0;
    for f in std::fs::read_dir(dir.path()).unwrap() {
        let path = f.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("raftlog") {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        if bytes.len() < 400 {
            continue;
        }
        let mid = bytes.len() / 3;
        for b in &mut bytes[mid..mid + 64] {
            *b ^= 0x5a;
        }
        std::fs::write(&path, bytes).unwrap();
        damaged += 1;
    }
    assert!(damaged > 0, "no log file found to damage");
    let opened = LogStore::open(dir.path());
    match opened {
        Err(e) => assert!(matches!(e, RaftStoreError::Engine(_)), "{e}"),
        // The damage sits in the last file, so recovery may treat it as a torn tail and keep
        // the prefix before it. A shard whose committed entries were cut or damaged must then
        // fail to open with Corruption, never come back short.
        Ok(store) => {
            let mut failed = 0;
            for shard in [1, 2] {
                match PeerStorage::open(store.clone(), ShardId(shard)) {
                    Ok(s) => assert_eq!(s.last_index().unwrap(), 50),
                    // A checksum failure reading an entry is raft-engine's Corruption.
                    Err(RaftStoreError::Corruption(_))
                    | Err(RaftStoreError::ShardNotFound(_))
                    | Err(RaftStoreError::Engine(raft_engine::Error::Corruption(_))) => failed += 1,
                    Err(e) => panic!("unexpected error {e}"),
                }
            }
            assert!(failed > 0, "damage went unnoticed");
        }
    }
}
