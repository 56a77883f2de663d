//! One replica's view of the log store: the `raft::Storage` raft-rs reads from.
//!
//! raft-rs 0.7 reads storage through `&self`, while the ready loop changes it; the replica's
//! small mutable state (hard state, conf state, the bounds of its log) therefore sits behind
//! a lock, and entries are read from raft-engine on demand. Writes are two-phase so that many
//! replicas share one fsync: `PeerStorage::stage` checks a ready's log changes and adds them
//! to the shared batch, and once the batch is durable `PeerStorage::commit_staged` moves the
//! cached bounds forward. Nothing raft-rs reads changes before the write is durable.
//!
//! Errors come back as `raft::Error` as the trait requires; corruption found while reading is
//! `StorageError::Other` holding the [`RaftStoreError`], never a panic (raft-rs's own
//! `MemStorage` panics on an out-of-range read; this one returns `Unavailable`).

use parking_lot::RwLock;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use super::error::{RaftStoreError, Result};
use super::log_store::{LogState, LogStore, LogWriteBatch};
use super::types::{ReplicaMeta, ShardId};

#[derive(Debug, Clone)]
struct Cache {
    hard_state: HardState,
    conf_state: ConfState,
    truncated_index: u64,
    truncated_term: u64,
    last_index: u64,
    last_term: u64,
    /// The snapshot built for raft-rs's next request, taken (and so dropped) by it.
    snapshot: Option<Snapshot>,
    /// The highest index raft-rs asked a snapshot for since one was last installed.
    snapshot_request: Option<u64>,
}

/// What a staged ready will change in the cache once its batch is durable.
#[derive(Debug, Default)]
pub(crate) struct Staged {
    last: Option<(u64, u64)>,
    hard_state: Option<HardState>,
    snapshot: Option<SnapshotMetadata>,
}

/// A replica's `raft::Storage` over the node's [`LogStore`].
#[derive(Debug)]
pub struct PeerStorage {
    store: LogStore,
    meta: ReplicaMeta,
    applied: u64,
    cache: RwLock<Cache>,
}

fn store_err(e: RaftStoreError) -> raft::Error {
    e.into_raft()
}

impl PeerStorage {
    /// Opens the storage of a replica recorded in `store`.
    pub fn open(store: LogStore, shard: ShardId) -> Result<Self> {
        let state = store.load(shard)?;
        Ok(Self::from_state(store, state))
    }

    fn from_state(store: LogStore, s: LogState) -> Self {
        Self {
            store,
            meta: s.meta,
            applied: s.applied,
            cache: RwLock::new(Cache {
                hard_state: s.hard_state,
                conf_state: s.conf_state,
                truncated_index: s.truncated_index,
                truncated_term: s.truncated_term,
                last_index: s.last_index,
                last_term: s.last_term,
                snapshot: None,
                snapshot_request: None,
            }),
        }
    }

    /// The replica this storage belongs to.
    pub fn meta(&self) -> ReplicaMeta {
        self.meta
    }

    /// The shard.
    pub fn shard(&self) -> ShardId {
        self.meta.shard
    }

    /// The apply index the stored conf state is current at (applying resumes after it).
    pub fn persisted_applied(&self) -> u64 {
        self.applied
    }

    /// The hard state as last made durable.
    pub fn hard_state(&self) -> HardState {
        self.cache.read().hard_state.clone()
    }

    /// The conf state as last stored.
    pub fn conf_state(&self) -> ConfState {
        self.cache.read().conf_state.clone()
    }

    /// Index of the last entry dropped by compaction or covered by a snapshot.
    pub fn truncated_index(&self) -> u64 {
        self.cache.read().truncated_index
    }

    /// The log store this storage reads from.
    pub fn log_store(&self) -> &LogStore {
        &self.store
    }

    /// Checks a ready's snapshot, entries and hard state and adds them to `batch`. Nothing is
    /// visible to raft-rs until `PeerStorage::commit_staged`.
    pub(crate) fn stage(
        &self,
        batch: &mut LogWriteBatch,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hs: Option<&HardState>,
    ) -> Result<Staged> {
        let shard = self.shard();
        let c = self.cache.read();
        let mut staged = Staged::default();
        let (mut first, mut last) = (c.truncated_index + 1, c.last_index);
        if let Some(snap) = snapshot {
            let m = snap.get_metadata();
            if m.index < c.truncated_index {
                return Err(RaftStoreError::Invalid(format!(
                    "{shard}: snapshot at {} is older than the truncated index {}",
                    m.index, c.truncated_index
                )));
            }
            batch.clear_log(shard, m.index, m.term)?;
            batch.put_apply_state(shard, m.get_conf_state(), m.index)?;
            first = m.index + 1;
            last = m.index;
            staged.last = Some((m.index, m.term));
            staged.snapshot = Some(m.clone());
        }
        if let (Some(head), Some(tail)) = (entries.first(), entries.last()) {
            if head.index < first || head.index > last + 1 {
                return Err(RaftStoreError::Invalid(format!(
                    "{shard}: append at {} outside [{first}, {}]",
                    head.index,
                    last + 1
                )));
            }
            if tail.index != head.index + entries.len() as u64 - 1 {
                return Err(RaftStoreError::Invalid(format!(
                    "{shard}: appended entries are not contiguous"
                )));
            }
            batch.append(shard, entries)?;
            staged.last = Some((tail.index, tail.term));
        }
        if let Some(hs) = hs {
            batch.put_hard_state(shard, hs)?;
            staged.hard_state = Some(hs.clone());
        }
        Ok(staged)
    }

    /// Makes a durable staged ready visible.
    pub(crate) fn commit_staged(&mut self, staged: Staged) {
        let mut c = self.cache.write();
        if let Some(m) = staged.snapshot {
            c.truncated_index = m.index;
            c.truncated_term = m.term;
            c.conf_state = m.get_conf_state().clone();
            if c.hard_state.commit < m.index {
                c.hard_state.commit = m.index;
            }
            self.applied = m.index;
        }
        if let Some((index, term)) = staged.last {
            c.last_index = index;
            c.last_term = term;
        }
        if let Some(hs) = staged.hard_state {
            c.hard_state = hs;
        }
    }

    /// Records a conf state and the apply index it is current at in `batch`; the cache follows
    /// once the batch is durable through `PeerStorage::set_apply_state`.
    pub(crate) fn stage_apply_state(
        &self,
        batch: &mut LogWriteBatch,
        cs: &ConfState,
        applied: u64,
        hs: &HardState,
    ) -> Result<()> {
        batch.put_apply_state(self.shard(), cs, applied)?;
        // The commit index rides along so that a stored applied index never passes the stored
        // commit index.
        batch.put_hard_state(self.shard(), hs)
    }

    /// Updates the cache after a durable `PeerStorage::stage_apply_state`.
    pub(crate) fn set_apply_state(&mut self, cs: ConfState, applied: u64, hs: HardState) {
        let mut c = self.cache.write();
        c.conf_state = cs;
        c.hard_state = hs;
        self.applied = applied;
    }

    /// Drops the entries before `first_kept`. The caller guarantees they are applied and the
    /// apply state covering them is stored; at most up to the stored applied index + 1.
    pub fn compact_to(&mut self, first_kept: u64) -> Result<()> {
        let shard = self.shard();
        let (truncated, last) = {
            let c = self.cache.read();
            (c.truncated_index, c.last_index)
        };
        if first_kept <= truncated + 1 {
            return Ok(());
        }
        if first_kept > self.applied + 1 || first_kept > last + 1 {
            return Err(RaftStoreError::Invalid(format!(
                "{shard}: cannot compact to {first_kept}: applied {} (stored), last {last}",
                self.applied
            )));
        }
        let term = self.term(first_kept - 1).map_err(|e| {
            RaftStoreError::Corruption(format!("{shard}: term of {}: {e}", first_kept - 1))
        })?;
        let mut batch = LogWriteBatch::new();
        batch.compact(shard, first_kept, term)?;
        // Not synced: losing a compaction only keeps entries longer.
        self.store.write(&mut batch, false)?;
        let mut c = self.cache.write();
        c.truncated_index = first_kept - 1;
        c.truncated_term = term;
        Ok(())
    }

    /// Installs the snapshot raft-rs's next request is answered with (it answers the
    /// recorded request).
    pub fn set_snapshot(&self, snapshot: Snapshot) {
        let mut c = self.cache.write();
        c.snapshot = Some(snapshot);
        c.snapshot_request = None;
    }

    /// The index raft-rs last asked a snapshot for without getting one, if it did.
    pub fn snapshot_request(&self) -> Option<u64> {
        self.cache.read().snapshot_request
    }

    /// Drops the installed snapshot and the recorded request (stale: this replica stopped
    /// leading, or the snapshot could not be built).
    pub fn clear_snapshot(&self) {
        let mut c = self.cache.write();
        c.snapshot = None;
        c.snapshot_request = None;
    }

    /// Writes a new replica's initial records to `batch`.
    pub fn bootstrap(
        batch: &mut LogWriteBatch,
        meta: &ReplicaMeta,
        cs: &ConfState,
        entries: &[Entry],
        hs: &HardState,
    ) -> Result<()> {
        batch.put_replica(meta)?;
        batch.put_apply_state(meta.shard, cs, 0)?;
        batch.append(meta.shard, entries)?;
        batch.put_hard_state(meta.shard, hs)
    }
}

impl Storage for PeerStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let c = self.cache.read();
        Ok(RaftState::new(c.hard_state.clone(), c.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let (truncated, last) = {
            let c = self.cache.read();
            (c.truncated_index, c.last_index)
        };
        if low <= truncated {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > last + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max = max_size
            .into()
            .map(|m| usize::try_from(m).unwrap_or(usize::MAX));
        self.store
            .entries(self.shard(), low, high, max)
            .map_err(store_err)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let c = self.cache.read();
        if idx == c.truncated_index {
            return Ok(c.truncated_term);
        }
        if idx < c.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > c.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if idx == c.last_index {
            return Ok(c.last_term);
        }
        drop(c);
        self.store.entry_term(self.shard(), idx).map_err(store_err)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.cache.read().truncated_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.cache.read().last_index)
    }

    /// Hands out the installed snapshot if it is recent enough, dropping it: raft-rs puts it
    /// in the message it sends. Otherwise records the request, for the replica to build one
    /// after the ready, and answers `SnapshotTemporarilyUnavailable`: raft-rs asks again on
    /// the follower's next heartbeat response.
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let mut c = self.cache.write();
        if let Some(s) = c.snapshot.take() {
            if s.get_metadata().index >= request_index {
                return Ok(s);
            }
        }
        c.snapshot_request = Some(
            c.snapshot_request
                .map_or(request_index, |r| r.max(request_index)),
        );
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}
