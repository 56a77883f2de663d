//! Background resolution of stale locks, so that they neither stall writers nor pin the GC
//! safe point.
//!
//! The safe point may not pass the oldest lock on disk (resolving a lock may need its
//! primary's commit record, which GC below the lock could drop). A lock whose coordinator
//! died is only resolved when someone runs into it, so without this pass one abandoned lock
//! on a key nobody touches again would hold GC back for ever. Before each safe-point advance
//! the GC task therefore walks the `lock` family, as TiKV's GC worker does, and resolves
//! every lock that is *stale*:
//!
//! ```text
//!   stale = its TTL ran out                                  (any coordinator)
//!         | its coordinator is an earlier run of this node   (that coordinator is gone)
//!
//!   per stale transaction (start_ts, primary):
//!     check_txn_status(primary) ── Committed(commit_ts) ──► commit its locks found here
//!                               ── RolledBack         ──► roll its locks found here back
//!                               ── Locked (alive)     ──► leave them (a heartbeat won)
//! ```
//!
//! `check_txn_status` rolls an expired primary back itself, so a transaction is decided
//! exactly as a reader meeting its lock would decide it. Each call looks at a bounded number
//! of locks ([`MAX_LOCKS_PER_PASS`]); what is left is taken up by the next pass.
//!
//! **Leader work.** The pass writes (rollbacks, commits), and only a shard's leader writes:
//! it is run on the replica the node leads ([`TxnManager::local_leader`]), and a node that
//! does not lead the shard skips it, as it skips the safe-point advance and the GC sweep
//! ([`TxnManager::gc_tick`]). Every lock is in the leader's replica, so nothing is missed;
//! with several shards, a lock whose primary lives on another shard will need its status
//! asked through the router.
//!
//! [`TxnManager::local_leader`]: super::TxnManager::local_leader
//! [`TxnManager::gc_tick`]: super::TxnManager::gc_tick

use std::collections::BTreeMap;

use crate::mvcc::{MvccReader, Result, Timestamp};

use super::actions::{lock_expired, TxnStatus};
use super::storage::Storage;

/// Most stale locks one pass resolves.
pub const MAX_LOCKS_PER_PASS: usize = 4096;

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResolveStats {
    /// Stale locks found.
    pub stale: u64,
    /// Locks committed because their primary had committed.
    pub committed: u64,
    /// Locks rolled back because their transaction was (or now is) rolled back.
    pub rolled_back: u64,
    /// Transactions still alive after all (their primary lock is live).
    pub alive: u64,
}

/// Resolves the stale locks of `storage` at time `now` (see the module documentation).
pub fn resolve_stale_locks(storage: &Storage, now: Timestamp) -> Result<ResolveStats> {
    let local_run = storage.local_run().copied();
    // (start_ts, primary) -> the stale keys of that transaction found here.
    let mut stale: BTreeMap<(Timestamp, Vec<u8>), Vec<Vec<u8>>> = BTreeMap::new();
    let mut found = 0usize;
    MvccReader::new(storage.db(), None).scan_locks(None, None, |key, lock| {
        if lock_expired(&lock, now, local_run.as_ref()) {
            stale
                .entry((lock.start_ts, lock.primary.clone()))
                .or_default()
                .push(key.to_vec());
            found += 1;
        }
        found < MAX_LOCKS_PER_PASS
    })?;
    let mut stats = ResolveStats::default();
    for ((start_ts, primary), keys) in stale {
        stats.stale += keys.len() as u64;
        let status = storage.check_txn_status(&primary, start_ts, now, None)?;
        let commit_ts = match status {
            TxnStatus::Locked { .. } => {
                stats.alive += 1;
                continue;
            }
            TxnStatus::Committed { commit_ts } => Some(commit_ts),
            TxnStatus::RolledBack { .. } => None,
        };
        let settled = keys.len() as u64;
        // check_txn_status already settled the primary itself.
        let secondaries: Vec<Vec<u8>> = keys.into_iter().filter(|k| *k != primary).collect();
        if !secondaries.is_empty() {
            storage.resolve_lock(&secondaries, start_ts, commit_ts)?;
        }
        match commit_ts {
            Some(_) => stats.committed += settled,
            None => stats.rolled_back += settled,
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsm::{Db, Options};
    use crate::mvcc::Coordinator;
    use crate::tso::compose;
    use crate::txn::actions::{Mutation, PrewriteOptions};

    fn storage(run: Coordinator) -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), Options::small_for_tests()).unwrap();
        (dir, Storage::new(db).with_local_run(run))
    }

    fn run(run_id: u64) -> Coordinator {
        Coordinator { node_id: 1, run_id }
    }

    fn prewrite(s: &Storage, keys: &[&[u8]], start_ts: Timestamp, ttl_ms: u64, by: Coordinator) {
        let ms: Vec<Mutation> = keys
            .iter()
            .map(|k| Mutation::Put(k.to_vec(), b"v".to_vec()))
            .collect();
        let opts = PrewriteOptions {
            primary: keys[0].to_vec(),
            ttl_ms,
            min_commit_ts: start_ts + 1,
            coordinator: Some(by),
        };
        s.prewrite(&ms, &opts, start_ts).unwrap();
    }

    fn locked(s: &Storage, key: &[u8]) -> bool {
        MvccReader::new(s.db(), None)
            .load_lock(key)
            .unwrap()
            .is_some()
    }

    #[test]
    fn stale_locks_are_rolled_forward_or_back_and_live_ones_stay() {
        let (_dir, s) = storage(run(2));
        let at = |ms: u64| compose(1_000_000 + ms, 0);
        // A transaction of the previous run that committed its primary only.
        prewrite(&s, &[b"c/p", b"c/s1", b"c/s2"], at(0), 600_000, run(1));
        s.commit(&[b"c/p".to_vec()], at(0), at(1)).unwrap();
        // A transaction of the previous run that committed nothing.
        prewrite(&s, &[b"r/p", b"r/s"], at(2), 600_000, run(1));
        // A live transaction of this run, and one of this run whose TTL ran out.
        prewrite(&s, &[b"l/p", b"l/s"], at(3), 600_000, run(2));
        prewrite(&s, &[b"e/p", b"e/s"], at(4), 10, run(2));

        let stats = resolve_stale_locks(&s, at(1_000)).unwrap();
        assert_eq!(stats.committed, 2, "{stats:?}");
        assert_eq!(stats.rolled_back, 4, "{stats:?}");
        assert_eq!(stats.alive, 0, "{stats:?}");
        let reader = MvccReader::new(s.db(), None);
        assert_eq!(
            reader.get(b"c/s2", at(2_000), &[]).unwrap(),
            Some(b"v".to_vec()),
            "rolled forward: the primary committed"
        );
        for key in [&b"c/s1"[..], b"c/s2", b"r/p", b"r/s", b"e/p", b"e/s"] {
            assert!(!locked(&s, key), "{:?} still locked", key);
        }
        assert_eq!(reader.get(b"r/s", at(2_000), &[]).unwrap(), None);
        assert!(
            locked(&s, b"l/p") && locked(&s, b"l/s"),
            "a live lock stays"
        );
        assert_eq!(s.oldest_lock_ts().unwrap(), Some(at(3)));
    }
}
