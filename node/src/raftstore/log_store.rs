//! The node's one raft-engine instance, holding the logs and Raft state of every replica.
//!
//! raft-engine is a log-structured store made for multi-raft: each Raft group is a
//! "region" with its own entry index and a small key-value map, and one `write(batch, sync)`
//! appends the changes of many groups with one fsync. Strata uses the shard id as the group
//! id. Per shard the engine holds:
//!
//! ```text
//!   group = ShardId.0
//!   ├─ entries  [first ..= last]     raft-rs Entry, rust-protobuf encoded by raft-engine
//!   ├─ "replica"  ReplicaMeta        version byte, peer id, epoch (conf_ver, version)
//!   ├─ "hs"       HardState          term, vote, commit (protobuf)
//!   ├─ "cs"       ConfState          voters, learners, joint halves (protobuf)
//!   ├─ "applied"  u64                the index the ConfState above is current at
//!   └─ "trunc"    (u64, u64)         index and term of the last entry dropped by compaction
//!                                    or covered by a snapshot; entries start right after it
//! ```
//!
//! The conf state is stored with the apply index it belongs to, in the same batch, because
//! raft-rs must restart with a conf state that matches its applied index: on reopen the
//! replica resumes applying from "applied" and re-applies later conf changes itself (see
//! `docs/architecture/raft.md`). Compaction never passes "applied".
//!
//! Nothing read from disk is trusted: a value of the wrong length, an unparsable message, a
//! hole between "trunc" and the first entry or a commit index past the last entry is a
//! [`RaftStoreError::Corruption`], never a panic (raft-rs would panic on the latter).

use std::path::Path;
use std::sync::Arc;

use raft::eraftpb::{ConfState, Entry, HardState};
use raft_engine::{Command, Engine, LogBatch, MessageExt};

use super::log_fs::ZeroFilledFileSystem;

use super::error::{RaftStoreError, Result};
use super::types::{PeerId, ReplicaMeta, ShardEpoch, ShardId};

const KEY_REPLICA: &[u8] = b"replica";
const KEY_HARD_STATE: &[u8] = b"hs";
const KEY_CONF_STATE: &[u8] = b"cs";
const KEY_APPLIED: &[u8] = b"applied";
const KEY_TRUNCATED: &[u8] = b"trunc";

/// Version byte of the encoded [`ReplicaMeta`].
const REPLICA_META_V1: u8 = 1;

/// Tells raft-engine how to find a raft-rs entry's index (raft-engine 0.4 is not generic over
/// the entry type; the type rides on each call).
#[derive(Debug, Clone, Copy)]
pub struct EntryExt;

impl MessageExt for EntryExt {
    type Entry = Entry;

    fn index(e: &Entry) -> u64 {
        e.index
    }
}

/// Everything stored for one replica, as loaded at open.
#[derive(Debug, Clone, PartialEq)]
pub struct LogState {
    /// Who this replica is.
    pub meta: ReplicaMeta,
    /// raft-rs's persisted term, vote and commit.
    pub hard_state: HardState,
    /// The membership as of `applied`.
    pub conf_state: ConfState,
    /// The apply index `conf_state` is current at; applying resumes after it.
    pub applied: u64,
    /// Index of the last entry removed by compaction or covered by a snapshot (0 if none).
    pub truncated_index: u64,
    /// Term of that entry.
    pub truncated_term: u64,
    /// Index of the last entry in the log (`truncated_index` when the log is empty).
    pub last_index: u64,
    /// Term of the last entry.
    pub last_term: u64,
}

/// The node's raft log store: one raft-engine instance shared by all replicas.
#[derive(Clone)]
pub struct LogStore {
    engine: Arc<Engine<ZeroFilledFileSystem>>,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("dir", &self.engine.path())
            .finish()
    }
}

/// Changes to the logs of any number of replicas, written by one [`LogStore::write`].
#[derive(Default)]
pub struct LogWriteBatch {
    batch: LogBatch,
}

impl std::fmt::Debug for LogWriteBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriteBatch")
            .field("empty", &self.batch.is_empty())
            .finish()
    }
}

impl LogWriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when nothing has been added.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Records who the replica of `meta.shard` is.
    pub fn put_replica(&mut self, meta: &ReplicaMeta) -> Result<()> {
        let mut v = Vec::with_capacity(25);
        v.push(REPLICA_META_V1);
        v.extend_from_slice(&meta.peer.0.to_le_bytes());
        v.extend_from_slice(&meta.epoch.conf_ver.to_le_bytes());
        v.extend_from_slice(&meta.epoch.version.to_le_bytes());
        self.batch.put(meta.shard.0, KEY_REPLICA.to_vec(), v)?;
        Ok(())
    }

    /// Appends entries to a shard's log. raft-engine drops any existing entries at or after
    /// the first one given (a new leader overwriting an uncommitted tail); the caller has
    /// checked that the entries neither leave a hole nor reach into the compacted prefix.
    pub fn append(&mut self, shard: ShardId, entries: &[Entry]) -> Result<()> {
        self.batch.add_entries::<EntryExt>(shard.0, entries)?;
        Ok(())
    }

    /// Stores raft-rs's hard state.
    pub fn put_hard_state(&mut self, shard: ShardId, hs: &HardState) -> Result<()> {
        self.batch
            .put_message(shard.0, KEY_HARD_STATE.to_vec(), hs)?;
        Ok(())
    }

    /// Stores the conf state together with the apply index it is current at.
    pub fn put_apply_state(&mut self, shard: ShardId, cs: &ConfState, applied: u64) -> Result<()> {
        self.batch
            .put_message(shard.0, KEY_CONF_STATE.to_vec(), cs)?;
        self.batch.put(
            shard.0,
            KEY_APPLIED.to_vec(),
            applied.to_le_bytes().to_vec(),
        )?;
        Ok(())
    }

    /// Drops the entries before `first_kept` and records the dropped prefix's last index and
    /// term, so `term(first_kept - 1)` keeps working.
    pub fn compact(&mut self, shard: ShardId, first_kept: u64, truncated_term: u64) -> Result<()> {
        self.batch
            .add_command(shard.0, Command::Compact { index: first_kept });
        self.put_truncated(shard, first_kept.saturating_sub(1), truncated_term)
    }

    /// Drops every entry of the shard (a snapshot replaces the log up to its index) and
    /// records the snapshot's index and term as the truncated point.
    pub fn clear_log(&mut self, shard: ShardId, index: u64, term: u64) -> Result<()> {
        // `Compact` past the last entry empties raft-engine's index for the group, and the
        // next append then starts a fresh run at `index + 1`.
        self.batch
            .add_command(shard.0, Command::Compact { index: u64::MAX });
        self.put_truncated(shard, index, term)
    }

    fn put_truncated(&mut self, shard: ShardId, index: u64, term: u64) -> Result<()> {
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(&index.to_le_bytes());
        v.extend_from_slice(&term.to_le_bytes());
        self.batch.put(shard.0, KEY_TRUNCATED.to_vec(), v)?;
        Ok(())
    }
}

fn decode_u64(bytes: &[u8], what: &str, shard: ShardId) -> Result<u64> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| {
        RaftStoreError::Corruption(format!(
            "{shard}: {what} is {} bytes, expected 8",
            bytes.len()
        ))
    })?;
    Ok(u64::from_le_bytes(arr))
}

impl LogStore {
    /// Opens (or creates) the raft-engine directory `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let cfg = raft_engine::Config {
            dir: dir.to_string_lossy().into_owned(),
            // A damaged record in the middle of the log is an error, not silently dropped
            // history; a torn tail (a crash during the last write) is still tolerated.
            recovery_mode: raft_engine::RecoveryMode::TolerateTailCorruption,
            // Two cores: do not spawn four recovery threads.
            recovery_threads: 1,
            ..Default::default()
        };
        Self::open_with(cfg)
    }

    /// Opens with an explicit raft-engine configuration (tests use small files).
    pub fn open_with(cfg: raft_engine::Config) -> Result<Self> {
        let engine = Engine::open_with_file_system(cfg, Arc::new(ZeroFilledFileSystem))?;
        Ok(Self {
            engine: Arc::new(engine),
        })
    }

    /// Writes a batch; with `sync` it is durable when this returns (one fsync for all the
    /// replicas in it). An empty batch costs nothing. The failpoint
    /// `raftstore::log_store::write` fails it (tests of what stops on a failed write).
    pub fn write(&self, batch: &mut LogWriteBatch, sync: bool) -> Result<usize> {
        fail::fail_point!("raftstore::log_store::write", |_| Err(RaftStoreError::Io(
            std::io::Error::other("injected raft log write failure")
        )));
        Ok(self.engine.write(&mut batch.batch, sync)?)
    }

    /// The replicas recorded in this store, by shard id.
    pub fn replicas(&self) -> Result<Vec<ReplicaMeta>> {
        let mut out = Vec::new();
        let mut groups = self.engine.raft_groups();
        groups.sort_unstable();
        for g in groups {
            if let Some(meta) = self.replica(ShardId(g))? {
                out.push(meta);
            }
        }
        Ok(out)
    }

    /// The replica recorded for `shard`, if any.
    pub fn replica(&self, shard: ShardId) -> Result<Option<ReplicaMeta>> {
        let Some(v) = self.engine.get(shard.0, KEY_REPLICA) else {
            return Ok(None);
        };
        if v.len() != 25 || v[0] != REPLICA_META_V1 {
            return Err(RaftStoreError::Corruption(format!(
                "{shard}: replica record of {} bytes, version {:?}",
                v.len(),
                v.first()
            )));
        }
        let word = |i: usize| decode_u64(&v[1 + 8 * i..9 + 8 * i], "replica record", shard);
        Ok(Some(ReplicaMeta {
            shard,
            peer: PeerId(word(0)?),
            epoch: ShardEpoch {
                conf_ver: word(1)?,
                version: word(2)?,
            },
        }))
    }

    /// Loads and checks everything stored for `shard`.
    pub fn load(&self, shard: ShardId) -> Result<LogState> {
        let meta = self
            .replica(shard)?
            .ok_or(RaftStoreError::ShardNotFound(shard))?;
        let hard_state: HardState = self
            .engine
            .get_message(shard.0, KEY_HARD_STATE)?
            .unwrap_or_default();
        let conf_state: ConfState = self
            .engine
            .get_message(shard.0, KEY_CONF_STATE)?
            .unwrap_or_default();
        let applied = match self.engine.get(shard.0, KEY_APPLIED) {
            Some(v) => decode_u64(&v, "applied index", shard)?,
            None => 0,
        };
        let (truncated_index, truncated_term) = match self.engine.get(shard.0, KEY_TRUNCATED) {
            Some(v) if v.len() == 16 => (
                decode_u64(&v[..8], "truncated index", shard)?,
                decode_u64(&v[8..], "truncated term", shard)?,
            ),
            Some(v) => {
                return Err(RaftStoreError::Corruption(format!(
                    "{shard}: truncated state is {} bytes, expected 16",
                    v.len()
                )))
            }
            None => (0, 0),
        };
        let (last_index, last_term) = match (
            self.engine.first_index(shard.0),
            self.engine.last_index(shard.0),
        ) {
            (Some(first), Some(last)) => {
                if first > truncated_index + 1 {
                    return Err(RaftStoreError::Corruption(format!(
                        "{shard}: log starts at {first} but only {truncated_index} is truncated"
                    )));
                }
                if last < truncated_index {
                    return Err(RaftStoreError::Corruption(format!(
                        "{shard}: log ends at {last}, before the truncated index {truncated_index}"
                    )));
                }
                let term = if last == truncated_index {
                    truncated_term
                } else {
                    self.engine
                        .get_entry::<EntryExt>(shard.0, last)?
                        .ok_or_else(|| {
                            RaftStoreError::Corruption(format!(
                                "{shard}: last entry {last} missing"
                            ))
                        })?
                        .term
                };
                (last, term)
            }
            _ => (truncated_index, truncated_term),
        };
        if hard_state.commit > last_index {
            return Err(RaftStoreError::Corruption(format!(
                "{shard}: commit index {} is past the last entry {last_index}",
                hard_state.commit
            )));
        }
        if applied > hard_state.commit.max(truncated_index) {
            return Err(RaftStoreError::Corruption(format!(
                "{shard}: applied index {applied} is past the commit index {}",
                hard_state.commit
            )));
        }
        Ok(LogState {
            meta,
            hard_state,
            conf_state,
            applied,
            truncated_index,
            truncated_term,
            last_index,
            last_term,
        })
    }

    /// Reads entries `[low, high)` of `shard`, stopping early past `max_size` bytes (but
    /// always returning at least one). A missing entry inside the range is corruption.
    pub fn entries(
        &self,
        shard: ShardId,
        low: u64,
        high: u64,
        max_size: Option<usize>,
    ) -> Result<Vec<Entry>> {
        let mut out = Vec::with_capacity(high.saturating_sub(low).min(1024) as usize);
        if high <= low {
            return Ok(out);
        }
        self.engine
            .fetch_entries_to::<EntryExt>(shard.0, low, high, max_size, &mut out)?;
        if out.is_empty() {
            return Err(RaftStoreError::Corruption(format!(
                "{shard}: entries [{low}, {high}) missing"
            )));
        }
        if let Some((i, e)) = out
            .iter()
            .enumerate()
            .find(|(i, e)| e.index != low + *i as u64)
        {
            return Err(RaftStoreError::Corruption(format!(
                "{shard}: entry at position {} has index {}, expected {}",
                i,
                e.index,
                low + i as u64
            )));
        }
        Ok(out)
    }

    /// The term of entry `index` of `shard`, read from the log.
    pub fn entry_term(&self, shard: ShardId, index: u64) -> Result<u64> {
        self.engine
            .get_entry::<EntryExt>(shard.0, index)?
            .map(|e| e.term)
            .ok_or_else(|| RaftStoreError::Corruption(format!("{shard}: entry {index} missing")))
    }

    /// Lets raft-engine delete log files no group needs any more (after compactions); returns
    /// the shards whose old entries hold files back and should be compacted.
    pub fn purge_expired_files(&self) -> Result<Vec<ShardId>> {
        Ok(self
            .engine
            .purge_expired_files()?
            .into_iter()
            .map(ShardId)
            .collect())
    }

    /// Bytes of log files on disk.
    pub fn used_bytes(&self) -> usize {
        self.engine.get_used_size()
    }

    /// Writes a raw value under a state key, for tests that damage a stored value.
    #[cfg(test)]
    pub(crate) fn put_raw(&self, shard: ShardId, key: &[u8], value: Vec<u8>) -> Result<()> {
        let mut b = LogBatch::default();
        b.put(shard.0, key.to_vec(), value)?;
        self.engine.write(&mut b, true)?;
        Ok(())
    }
}
