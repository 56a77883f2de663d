//! Tests of [`KvApply`] on real engines in temporary directories: apply, determinism,
//! refusals, the crash of unflushed applies, the durable index, snapshots and restores.

use raft::eraftpb::{Entry, EntryType};

use crate::lsm::{ColumnFamily, Db, Options, ReadOptions, WriteBatch, WriteOptions};

use super::apply::Apply;
use super::command::{Op, RaftCommand};
use super::error::RaftStoreError;
use super::kv_apply::{KvApply, KvApplyConfig};
use super::types::{KeyRange, ShardEpoch, ShardId};

const SHARD: ShardId = ShardId(5);
const EPOCH: ShardEpoch = ShardEpoch {
    conf_ver: 1,
    version: 3,
};

fn range() -> KeyRange {
    KeyRange {
        start: b"m".to_vec(),
        end: Some(b"t".to_vec()),
    }
}

/// Foreground-only engine whose memtable flushes only when asked.
fn open_db(dir: &std::path::Path) -> Db {
    let opts = Options {
        background_work: false,
        memtable_size: 1 << 20,
        ..Options::small_for_tests()
    };
    Db::open(dir, opts).unwrap()
}

fn open_apply(db: &Db, cfg: KvApplyConfig) -> KvApply {
    KvApply::open(db.clone(), SHARD, range(), EPOCH, cfg).unwrap()
}

fn normal(index: u64, data: Vec<u8>) -> Entry {
    let mut e = Entry::default();
    e.set_entry_type(EntryType::EntryNormal);
    e.index = index;
    e.term = 1;
    e.data = data.into();
    e
}

fn conf_change(index: u64) -> Entry {
    let mut e = normal(index, Vec::new());
    e.set_entry_type(EntryType::EntryConfChange);
    e
}

fn command(ops: Vec<Op>) -> Vec<u8> {
    RaftCommand {
        shard: SHARD,
        term: 0,
        epoch: EPOCH,
        ops,
    }
    .encode()
}

fn puts(cf: ColumnFamily, pairs: &[(&str, &str)]) -> Op {
    let mut b = WriteBatch::new();
    for (k, v) in pairs {
        b.put(cf, k.as_bytes(), v.as_bytes());
    }
    Op::Write(b)
}

/// A varied run of entries: writes in every replicated family, deletes, a range deletion,
/// the replicated values (one lowering attempt), a conf change, an empty entry, refusals.
fn entries() -> Vec<Entry> {
    let mut out = vec![conf_change(1), normal(2, Vec::new())];
    let mut i = 3;
    for round in 0..6 {
        let mut ops = vec![
            puts(
                ColumnFamily::Default,
                &[("m1", "a"), ("n2", "b"), ("s9", "c")],
            ),
            puts(ColumnFamily::Lock, &[("n2", "lock")]),
            puts(ColumnFamily::Write, &[("n2\x00ts", "commit")]),
            Op::SetTsoHighWater(1000 + round),
        ];
        if round == 3 {
            let mut d = WriteBatch::new();
            d.delete(ColumnFamily::Lock, b"n2");
            d.delete_range(ColumnFamily::Default, b"m", b"n");
            ops.push(Op::Write(d));
            ops.push(Op::SetTsoHighWater(5));
            ops.push(Op::SetGcSafePoint(77));
        }
        out.push(normal(i, command(ops)));
        i += 1;
        let stale = RaftCommand {
            shard: SHARD,
            term: 0,
            epoch: ShardEpoch {
                version: 2,
                ..EPOCH
            },
            ops: vec![puts(ColumnFamily::Default, &[("p", "stale")])],
        };
        out.push(normal(i, stale.encode()));
        i += 1;
    }
    out
}

/// Every pair of every family.
fn dump(db: &Db) -> Vec<(ColumnFamily, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for cf in ColumnFamily::ALL {
        for (k, v) in db.scan(cf, b"", None, usize::MAX, false, None).unwrap() {
            out.push((cf, k, v));
        }
    }
    out
}

fn get(db: &Db, cf: ColumnFamily, key: &str) -> Option<Vec<u8>> {
    db.get(cf, key.as_bytes(), &ReadOptions::default()).unwrap()
}

#[test]
fn each_entry_applies_with_its_index_and_updates_the_shared_state() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let mut sm = open_apply(&db, KvApplyConfig::default());
    let state = sm.state();
    assert_eq!((sm.applied_index(), state.applied_index()), (0, 0));
    let all = entries();
    let out = sm.apply(SHARD, &all).unwrap();
    assert_eq!(out.applied, all.len() as u64);
    assert_eq!(sm.applied_index(), all.len() as u64);
    assert_eq!(state.applied_index(), all.len() as u64);
    // The replicated values only rise: round 3's lower TSO mark was ignored.
    assert_eq!(state.tso_high_water(), 1005);
    assert_eq!(state.gc_safe_point(), 77);
    assert_eq!(get(&db, ColumnFamily::Default, "s9"), Some(b"c".to_vec()));
    assert_eq!(get(&db, ColumnFamily::Lock, "n2"), Some(b"lock".to_vec()));
    assert_eq!(
        get(&db, ColumnFamily::Default, "p"),
        None,
        "stale never applied"
    );
    // Six stale commands, each refused with a retryable StaleEpoch.
    assert_eq!(out.rejected.len(), 6);
    for (index, why) in &out.rejected {
        assert_eq!(index % 2, 0, "the stale entries are the even ones");
        assert!(
            matches!(why, RaftStoreError::StaleEpoch { requested, current, .. }
                if requested.version == 2 && *current == EPOCH),
            "{why}"
        );
        assert!(why.is_retryable());
    }
    // A gap is an error, not a silent skip.
    assert!(sm.apply(SHARD, &[normal(100, Vec::new())]).is_err());
    // Reopened after a flush, everything is read back from the LSM.
    db.flush().unwrap();
    drop(sm);
    let sm = open_apply(&db, KvApplyConfig::default());
    assert_eq!(sm.applied_index(), all.len() as u64);
    assert_eq!(sm.state().tso_high_water(), 1005);
    assert_eq!(sm.state().gc_safe_point(), 77);
}

#[test]
fn replicas_fed_the_same_entries_hold_the_same_bytes() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (db1, db2) = (open_db(d1.path()), open_db(d2.path()));
    let mut a = open_apply(&db1, KvApplyConfig::default());
    let mut b = open_apply(&db2, KvApplyConfig::default());
    let all = entries();
    // One replica applies everything at once; the other in uneven runs, flushing between
    // them.
    a.apply(SHARD, &all).unwrap();
    for chunk in all.chunks(3) {
        b.apply(SHARD, chunk).unwrap();
        db2.flush().unwrap();
    }
    assert_eq!(dump(&db1), dump(&db2));
    assert!(dump(&db1).len() > 5);
    // And after both restart from what they flushed.
    db1.flush().unwrap();
    drop((a, b));
    let (a, b) = (
        open_apply(&db1, KvApplyConfig::default()),
        open_apply(&db2, KvApplyConfig::default()),
    );
    assert_eq!(a.applied_index(), b.applied_index());
    assert_eq!(dump(&db1), dump(&db2));
}

#[test]
fn refused_commands_change_nothing_but_the_applied_index() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let mut sm = open_apply(&db, KvApplyConfig::default());
    let with = |shard: ShardId, epoch: ShardEpoch, ops: Vec<Op>| {
        RaftCommand {
            shard,
            epoch,
            term: 0,
            ops,
        }
        .encode()
    };
    let good = puts(ColumnFamily::Default, &[("n", "ok")]);
    let mut raft_state = WriteBatch::new();
    raft_state.put(ColumnFamily::RaftState, b"n", b"x");
    let mut wide = WriteBatch::new();
    wide.delete_range_from(ColumnFamily::Write, b"n");
    let mut below = WriteBatch::new();
    below.delete_range(ColumnFamily::Default, b"a", b"n");
    let run = vec![
        normal(1, with(ShardId(6), EPOCH, vec![good.clone()])),
        normal(
            2,
            with(
                SHARD,
                ShardEpoch {
                    version: 4,
                    ..EPOCH
                },
                vec![good.clone()],
            ),
        ),
        // The refusal is all or nothing: a good op before a bad one is not applied either.
        normal(
            3,
            command(vec![
                good.clone(),
                puts(ColumnFamily::Default, &[("z", "outside")]),
            ]),
        ),
        normal(4, command(vec![Op::Write(raft_state)])),
        normal(5, command(vec![Op::Write(wide)])),
        normal(6, command(vec![Op::Write(below), Op::SetGcSafePoint(9)])),
        // A different conf_ver alone is not stale: only splits and merges change what a
        // command may touch.
        normal(
            7,
            with(
                SHARD,
                ShardEpoch {
                    conf_ver: 9,
                    ..EPOCH
                },
                vec![puts(ColumnFamily::Default, &[("o", "applied")])],
            ),
        ),
    ];
    let out = sm.apply(SHARD, &run).unwrap();
    assert_eq!(out.applied, 7);
    let kinds: Vec<(u64, &str)> = out
        .rejected
        .iter()
        .map(|(i, e)| {
            let kind = match e {
                RaftStoreError::WrongShard { requested, .. } if *requested == ShardId(6) => {
                    "wrong shard"
                }
                RaftStoreError::StaleEpoch { .. } => "stale",
                RaftStoreError::KeyNotInShard { key, .. } if key == b"z" => "outside",
                RaftStoreError::KeyNotInShard { .. } => "range outside",
                RaftStoreError::Invalid(msg) if msg.contains("raft-state") => "node-local",
                other => panic!("unexpected refusal {other}"),
            };
            (*i, kind)
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (1, "wrong shard"),
            (2, "stale"),
            (3, "outside"),
            (4, "node-local"),
            (5, "range outside"),
            (6, "range outside"),
        ]
    );
    assert_eq!(get(&db, ColumnFamily::Default, "n"), None);
    assert_eq!(
        get(&db, ColumnFamily::Default, "o"),
        Some(b"applied".to_vec())
    );
    assert_eq!(get(&db, ColumnFamily::RaftState, "n"), None);
    assert_eq!(sm.state().gc_safe_point(), 0);
}

#[test]
fn a_damaged_command_stops_apply_instead_of_skipping_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let mut sm = open_apply(&db, KvApplyConfig::default());
    let mut bytes = command(vec![puts(ColumnFamily::Default, &[("n", "v")])]);
    bytes[10] ^= 1;
    match sm.apply(SHARD, &[normal(1, Vec::new()), normal(2, bytes)]) {
        Err(RaftStoreError::Corruption(msg)) => assert!(msg.contains("entry 2"), "{msg}"),
        other => panic!("{other:?}"),
    }
    // Entry 1 went in; entry 2 did not.
    assert_eq!(sm.applied_index(), 1);
    assert_eq!(get(&db, ColumnFamily::Default, "n"), None);
}

#[test]
fn a_crash_loses_the_unflushed_applies_and_replaying_them_gives_the_same_state() {
    let all = entries();
    let reference = tempfile::tempdir().unwrap();
    let ref_db = open_db(reference.path());
    open_apply(&ref_db, KvApplyConfig::default())
        .apply(SHARD, &all)
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (first, rest) = all.split_at(5);
    {
        let db = open_db(dir.path());
        let mut sm = open_apply(&db, KvApplyConfig::default());
        sm.apply(SHARD, first).unwrap();
        db.flush().unwrap();
        sm.apply(SHARD, rest).unwrap();
        // Node-local metadata is logged: it survives even though no flush covers it.
        db.put(
            ColumnFamily::RaftState,
            b"strata/meta/run_id",
            b"\x01\x07\0\0\0\0\0\0\0",
            &WriteOptions::synced(),
        )
        .unwrap();
        assert_eq!(sm.applied_index(), all.len() as u64);
        // Crash: the engine is dropped without a flush.
    }
    let db = open_db(dir.path());
    let mut sm = open_apply(&db, KvApplyConfig::default());
    assert_eq!(sm.applied_index(), 5, "only the flushed applies survive");
    assert_eq!(sm.durable_applied_index(), 5);
    assert_eq!(get(&db, ColumnFamily::Default, "s9"), Some(b"c".to_vec()));
    assert_eq!(sm.state().tso_high_water(), 1001, "as of entry 5");
    assert!(get(&db, ColumnFamily::RaftState, "strata/meta/run_id").is_some());
    // The raft log replays the rest: the same state as a replica that never crashed.
    sm.apply(SHARD, rest).unwrap();
    let mut got = dump(&db);
    got.retain(|(cf, k, _)| !(*cf == ColumnFamily::RaftState && k.starts_with(b"strata/meta")));
    assert_eq!(got, dump(&ref_db));
}

#[test]
fn the_durable_index_follows_flushes_not_applies() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let mut sm = open_apply(&db, KvApplyConfig::default());
    let all = entries();
    sm.apply(SHARD, &all[..4]).unwrap();
    assert_eq!(sm.durable_applied_index(), 0);
    db.flush().unwrap();
    // The flush is seen without another apply.
    assert_eq!(sm.durable_applied_index(), 4);
    assert_eq!(sm.state().durable_applied_index(), 4);
    sm.apply(SHARD, &all[4..9]).unwrap();
    // A logged write after the applies does not make them durable.
    db.put(
        ColumnFamily::RaftState,
        b"strata/meta/x",
        b"y",
        &WriteOptions::synced(),
    )
    .unwrap();
    assert_eq!(sm.durable_applied_index(), 4);
    assert_eq!(sm.applied_index(), 9);
    db.flush().unwrap();
    assert_eq!(sm.durable_applied_index(), 9);
    sm.apply(SHARD, &all[9..]).unwrap();
    assert_eq!(sm.durable_applied_index(), 9);
    assert_eq!(sm.state().durable_applied_index(), 9);
}

/// Writes keys of other shards (outside the range) straight into the engine.
fn write_neighbours(db: &Db, tag: &str) {
    let mut b = WriteBatch::new();
    for cf in [
        ColumnFamily::Default,
        ColumnFamily::Lock,
        ColumnFamily::Write,
    ] {
        b.put(cf, b"a-neighbour", tag.as_bytes());
        b.put(cf, b"z-neighbour", tag.as_bytes());
    }
    b.put(
        ColumnFamily::RaftState,
        b"strata/meta/run_id",
        tag.as_bytes(),
    );
    db.write(b, &WriteOptions::synced()).unwrap();
}

fn shard_pairs(db: &Db) -> Vec<(ColumnFamily, Vec<u8>, Vec<u8>)> {
    dump(db)
        .into_iter()
        .filter(|(cf, k, _)| {
            if *cf == ColumnFamily::RaftState {
                k.starts_with(b"strata/shard/")
            } else {
                range().contains(k)
            }
        })
        .collect()
}

#[test]
fn a_snapshot_restores_exactly_the_shard_on_another_replica() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (db1, db2) = (open_db(d1.path()), open_db(d2.path()));
    write_neighbours(&db1, "leader's");
    write_neighbours(&db2, "follower's");
    let cfg = KvApplyConfig {
        snapshot_frame_bytes: 64,
        restore_batch_bytes: 100,
        ..KvApplyConfig::default()
    };
    let mut leader = open_apply(&db1, cfg);
    let all = entries();
    leader.apply(SHARD, &all).unwrap();
    // Part of it flushed, part in the memtable: the snapshot reads both.
    db1.flush().unwrap();
    let mut more = WriteBatch::new();
    for i in 0..30 {
        more.put(
            ColumnFamily::Default,
            format!("q{i:02}").as_bytes(),
            &[i; 40],
        );
    }
    let last = all.len() as u64 + 1;
    leader
        .apply(SHARD, &[normal(last, command(vec![Op::Write(more)]))])
        .unwrap();
    let data = leader.snapshot().unwrap();

    // The follower holds stale data of the shard that the restore must remove.
    let mut follower = open_apply(&db2, cfg);
    follower
        .apply(
            SHARD,
            &[normal(
                1,
                command(vec![
                    puts(ColumnFamily::Default, &[("r-stale", "x")]),
                    Op::SetTsoHighWater(1 << 50),
                ]),
            )],
        )
        .unwrap();
    // A wrong index or damaged bytes are refused before anything changes.
    assert!(follower.restore(SHARD, last + 1, &data).is_err());
    let mut bad = data.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x20;
    assert!(matches!(
        follower.restore(SHARD, last, &bad),
        Err(RaftStoreError::SnapshotCorrupt(_))
    ));
    assert_eq!(
        get(&db2, ColumnFamily::Default, "r-stale"),
        Some(b"x".to_vec())
    );

    follower.restore(SHARD, last, &data).unwrap();
    assert_eq!(follower.applied_index(), last);
    assert_eq!(
        follower.durable_applied_index(),
        last,
        "a restore ends flushed"
    );
    assert_eq!(shard_pairs(&db2), shard_pairs(&db1));
    assert_eq!(
        follower.state().tso_high_water(),
        1005,
        "lowered to the snapshot's"
    );
    assert_eq!(follower.state().gc_safe_point(), 77);
    // Other shards' keys and node-local metadata are untouched.
    for cf in [
        ColumnFamily::Default,
        ColumnFamily::Lock,
        ColumnFamily::Write,
    ] {
        assert_eq!(get(&db2, cf, "z-neighbour"), Some(b"follower's".to_vec()));
        assert_eq!(get(&db2, cf, "a-neighbour"), Some(b"follower's".to_vec()));
    }
    assert_eq!(
        get(&db2, ColumnFamily::RaftState, "strata/meta/run_id"),
        Some(b"follower's".to_vec())
    );
    // Both continue identically from the snapshot's index, and the restore survives a crash.
    let next = normal(last + 1, command(vec![Op::SetGcSafePoint(100)]));
    leader.apply(SHARD, std::slice::from_ref(&next)).unwrap();
    follower.apply(SHARD, std::slice::from_ref(&next)).unwrap();
    assert_eq!(shard_pairs(&db2), shard_pairs(&db1));
    drop((follower, db2));
    let db2 = open_db(d2.path());
    let follower = open_apply(&db2, cfg);
    assert_eq!(follower.applied_index(), last);
    assert_eq!(get(&db2, ColumnFamily::Default, "q29"), Some(vec![29; 40]));
}

#[test]
fn a_snapshot_past_the_size_limit_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let cfg = KvApplyConfig {
        max_snapshot_bytes: 300,
        ..KvApplyConfig::default()
    };
    let mut sm = open_apply(&db, cfg);
    assert!(sm.snapshot().is_ok(), "an empty shard fits");
    let all = entries();
    sm.apply(SHARD, &all).unwrap();
    let mut big = WriteBatch::new();
    big.put(ColumnFamily::Default, b"n-big", &[7; 400]);
    let next = all.len() as u64 + 1;
    sm.apply(SHARD, &[normal(next, command(vec![Op::Write(big)]))])
        .unwrap();
    match sm.snapshot() {
        Err(RaftStoreError::SnapshotTooLarge { shard, limit }) => {
            assert_eq!((shard, limit), (SHARD, 300));
        }
        other => panic!("{other:?}"),
    }
}

/// A restore stopped half-way (a failpoint for this shard only, after its first batch)
/// leaves its marker; the next open finds it and empties the shard, applied index 0, with
/// other shards' keys untouched.
#[cfg(feature = "failpoints")]
#[test]
fn a_restore_interrupted_half_way_is_reset_to_empty_at_open() {
    let scenario = fail::FailScenario::setup();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (db1, db2) = (open_db(d1.path()), open_db(d2.path()));
    let cfg = KvApplyConfig {
        restore_batch_bytes: 64,
        ..KvApplyConfig::default()
    };
    let mut leader = open_apply(&db1, cfg);
    leader.apply(SHARD, &entries()).unwrap();
    let index = leader.applied_index();
    let data = leader.snapshot().unwrap();
    write_neighbours(&db2, "kept");
    {
        let mut follower = open_apply(&db2, cfg);
        follower
            .apply(
                SHARD,
                &[normal(
                    1,
                    command(vec![puts(ColumnFamily::Default, &[("r-old", "x")])]),
                )],
            )
            .unwrap();
        db2.flush().unwrap();
        fail::cfg(
            "raftstore::kv_apply::restore",
            &format!("return({})", SHARD.0),
        )
        .unwrap();
        let err = follower.restore(SHARD, index, &data).unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
        fail::remove("raftstore::kv_apply::restore");
        // Half of the restore is in the engine: the old data is gone, part of the new is in.
        assert_eq!(get(&db2, ColumnFamily::Default, "r-old"), None);
        assert!(!shard_pairs(&db2).is_empty());
        // Crash: engine and state machine dropped as they are.
    }
    drop(db2);
    let db2 = open_db(d2.path());
    let follower = open_apply(&db2, cfg);
    assert_eq!(follower.applied_index(), 0);
    assert_eq!(shard_pairs(&db2), Vec::new(), "the shard is empty");
    assert_eq!(
        get(&db2, ColumnFamily::Default, "z-neighbour"),
        Some(b"kept".to_vec())
    );
    // The reset is durable and the marker gone: a second open keeps it empty, and a new
    // restore of the same snapshot completes.
    drop(follower);
    drop(db2);
    let db2 = open_db(d2.path());
    let mut follower = open_apply(&db2, cfg);
    assert_eq!(follower.applied_index(), 0);
    follower.restore(SHARD, index, &data).unwrap();
    assert_eq!(shard_pairs(&db2), shard_pairs(&db1));
    scenario.teardown();
}

#[test]
fn a_run_of_entries_is_one_engine_batch_and_a_membership_change_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let mut sm = open_apply(&db, KvApplyConfig::default());
    let batches = || db.stats().batches_written;
    let before = batches();
    let run: Vec<Entry> = (1..=8)
        .map(|i| normal(i, command(vec![puts(ColumnFamily::Default, &[("n", "v")])])))
        .collect();
    sm.apply(SHARD, &run).unwrap();
    assert_eq!(batches() - before, 1, "eight entries, one batch");
    assert_eq!(sm.applied_index(), 8);
    // A TSO mark, then a membership change, then a write: the group after the change
    // starts from the mark the first one left (it must not fall back).
    let before = batches();
    sm.apply(
        SHARD,
        &[
            normal(9, command(vec![Op::SetTsoHighWater(2000)])),
            conf_change(10),
            normal(
                11,
                command(vec![puts(ColumnFamily::Default, &[("o", "w")])]),
            ),
        ],
    )
    .unwrap();
    assert_eq!(batches() - before, 2, "the change ends the first batch");
    assert_eq!(sm.state().tso_high_water(), 2000);
    assert_eq!(get(&db, ColumnFamily::Default, "o"), Some(b"w".to_vec()));
    db.flush().unwrap();
    drop(sm);
    let sm = open_apply(&db, KvApplyConfig::default());
    assert_eq!(
        (sm.applied_index(), sm.state().tso_high_water()),
        (11, 2000)
    );
}
