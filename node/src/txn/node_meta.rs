//! Node-local metadata the transaction layer keeps across restarts, in the engine's
//! `raft-state` family (which GC never touches):
//!
//! ```text
//!   raft-state  "strata/meta/run_id"         version=1 | u64 LE   the last run id taken
//!   raft-state  "strata/meta/gc_safe_point"  version=1 | u64 LE   the saved GC safe point
//! ```
//!
//! *Run ids* count up by one every time one is taken, and never repeat: a node takes one when
//! it starts (its run's identity, recorded in every lock its coordinator writes, see
//! [`Coordinator`]) and further ones whenever its transaction ids need a new block (see
//! [`super::txn_id`]). So every run id a run takes is above the ids of all earlier runs, and
//! a lock naming an earlier run of this node belongs to a coordinator that is gone.
//!
//! Every write is a synced engine write: a run id or a safe point is durable before it is
//! used. The keys live under a prefix of their own, apart from the Raft state that
//! replicated shards will keep in the same family. The GC safe point is stored here only
//! while it is a node-local value; the [`SafePointStore`] interface is what moves it into
//! the replicated meta shard later.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::lsm::{ColumnFamily, Db, ReadOptions, WriteOptions};
use crate::mvcc::gc::SafePointStore;
use crate::mvcc::{Coordinator, MvccError, Result, Timestamp};

use super::txn_id::IdBlocks;

const RUN_ID_KEY: &[u8] = b"strata/meta/run_id";
const SAFE_POINT_KEY: &[u8] = b"strata/meta/gc_safe_point";
const RECORD_VERSION: u8 = 1;

/// Node-local metadata over one engine; cheap to clone.
#[derive(Debug, Clone)]
pub struct NodeMeta {
    db: Db,
    /// Serialises the read-modify-write of the run id.
    run_ids: Arc<Mutex<()>>,
}

impl NodeMeta {
    /// The metadata kept in `db`.
    pub fn new(db: Db) -> NodeMeta {
        NodeMeta {
            db,
            run_ids: Arc::default(),
        }
    }

    /// Starts a new run of node `node_id`: takes the next run id (durably) and returns the
    /// run's coordinator identity.
    pub fn start_run(&self, node_id: u64) -> Result<Coordinator> {
        Ok(Coordinator {
            node_id,
            run_id: self.next_run_id()?,
        })
    }

    /// Takes the next run id: one above the last taken, made durable before it is returned.
    pub fn next_run_id(&self) -> Result<u64> {
        let _guard = self.run_ids.lock();
        let next = self
            .load(RUN_ID_KEY)?
            .unwrap_or(0)
            .checked_add(1)
            .ok_or_else(|| corrupt(RUN_ID_KEY, "the run id cannot grow past u64::MAX"))?;
        self.store(RUN_ID_KEY, next)?;
        Ok(next)
    }

    /// The last run id taken, if any.
    pub fn last_run_id(&self) -> Result<Option<u64>> {
        self.load(RUN_ID_KEY)
    }

    fn load(&self, key: &[u8]) -> Result<Option<u64>> {
        let Some(bytes) = self
            .db
            .get(ColumnFamily::RaftState, key, &ReadOptions::default())?
        else {
            return Ok(None);
        };
        match bytes.as_slice() {
            [RECORD_VERSION, rest @ ..] => {
                let word: [u8; 8] = rest
                    .try_into()
                    .map_err(|_| corrupt(key, format!("{} bytes, expected 9", bytes.len())))?;
                Ok(Some(u64::from_le_bytes(word)))
            }
            _ => Err(corrupt(key, "unknown record version")),
        }
    }

    fn store(&self, key: &[u8], value: u64) -> Result<()> {
        let mut record = Vec::with_capacity(9);
        record.push(RECORD_VERSION);
        record.extend_from_slice(&value.to_le_bytes());
        self.db.put(
            ColumnFamily::RaftState,
            key,
            &record,
            &WriteOptions::synced(),
        )?;
        Ok(())
    }
}

fn corrupt(key: &[u8], reason: impl Into<String>) -> MvccError {
    MvccError::Corrupt {
        key: key.to_vec(),
        reason: reason.into(),
    }
}

impl SafePointStore for NodeMeta {
    fn load(&self) -> Result<Option<Timestamp>> {
        NodeMeta::load(self, SAFE_POINT_KEY)
    }

    fn save(&self, safe_point: Timestamp) -> Result<()> {
        self.store(SAFE_POINT_KEY, safe_point)
    }
}

impl IdBlocks for NodeMeta {
    fn next_block(&self) -> Result<u64> {
        self.next_run_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsm::Options;

    fn open(dir: &std::path::Path) -> Db {
        Db::open(dir, Options::small_for_tests()).unwrap()
    }

    #[test]
    fn run_ids_grow_across_reopens_and_the_safe_point_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let meta = NodeMeta::new(open(dir.path()));
            assert_eq!(meta.last_run_id().unwrap(), None);
            assert_eq!(SafePointStore::load(&meta).unwrap(), None);
            assert_eq!(meta.start_run(4).unwrap().run_id, 1);
            assert_eq!(meta.next_block().unwrap(), 2);
            meta.save(1234).unwrap();
        }
        let meta = NodeMeta::new(open(dir.path()));
        assert_eq!(
            meta.start_run(4).unwrap(),
            Coordinator {
                node_id: 4,
                run_id: 3
            },
            "above every id the earlier run took"
        );
        assert_eq!(SafePointStore::load(&meta).unwrap(), Some(1234));
    }

    #[test]
    fn a_damaged_record_is_corruption_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let opts = WriteOptions::synced();
        db.put(ColumnFamily::RaftState, RUN_ID_KEY, &[1, 2, 3], &opts)
            .unwrap();
        db.put(ColumnFamily::RaftState, SAFE_POINT_KEY, &[9; 9], &opts)
            .unwrap();
        let meta = NodeMeta::new(db);
        assert!(matches!(meta.next_run_id(), Err(MvccError::Corrupt { .. })));
        assert!(matches!(
            SafePointStore::load(&meta),
            Err(MvccError::Corrupt { .. })
        ));
    }
}
