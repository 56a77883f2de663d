//! The shard state machine over the LSM: [`KvApply`] applies one shard's committed
//! [`RaftCommand`]s to the node's [`Db`], builds snapshots of the shard from it and restores
//! them.
//!
//! ## Apply without the WAL
//! The entries of one apply call become LSM batches: the commands' writes, the replicated
//! values they raise and the shard's applied index (the last entry's), written without the
//! LSM's WAL (the raft log already holds the entries). Consecutive entries share one batch
//! (D159), which ends after a membership change and before the engine's batch limit: one
//! engine write and one applied-index record per run of entries, not per entry. So the
//! applied index on disk is always exactly the state beside it, and a crash loses a suffix
//! of applies, never part of one:
//!
//! ```text
//!   entries i..=j ──► one unlogged LSM batch { their writes ; tso ; safe point ; applied = j }
//!                   │ (memtable: visible at once)
//!                   ▼ flush (Db::flushed_seq passes the batch's sequence number)
//!                 durable: durable_applied_index() = j   ──► the raft log may be compacted to j
//! ```
//!
//! At open the applied index is read from the LSM, which after a crash holds what the last
//! flush covered; `Peer::open` replays the raft log from there. Entries whose command is for
//! another shard, carries a stale epoch `version`, writes outside the shard's range or into
//! the node-local `raft-state` family change nothing but the applied index and are reported
//! refused, the same on every replica. A command that does not decode stops the replica: it
//! is damage (or a proposer bug), and applying around it would let replicas diverge.
//!
//! ## Keys in `raft-state` (the family other node-local metadata shares, under its own prefix)
//!
//! ```text
//!   "strata/shard/" ++ shard u64 BE ++ "/applied"             v1 | u64 LE   local progress
//!   "strata/shard/" ++ shard u64 BE ++ "/r/tso_high_water"    v1 | u64 LE   replicated
//!   "strata/shard/" ++ shard u64 BE ++ "/r/gc_safe_point"     v1 | u64 LE   replicated
//!   "strata/shard/" ++ shard u64 BE ++ "/r/members"           MemberDirectory replicated
//!   "strata/restoring/" ++ shard u64 BE                       v1 | u64 LE   restore marker
//! ```
//!
//! ## Snapshots
//! [`Apply::snapshot`] reads an LSM snapshot taken on the loop thread between applies, so it
//! is exactly the state at the applied index: the shard's range in `default`, `lock` and
//! `write` plus its replicated `raft-state` values (`/r/`), in the framed format of
//! [`super::snapshot`], bounded by [`KvApplyConfig::max_snapshot_bytes`]. A restore checks
//! the whole snapshot first, then: writes the restore marker durably (WAL, fsync), deletes
//! the shard's data and state, writes the pairs without the WAL in batches of at most
//! [`KvApplyConfig::restore_batch_bytes`], sets the applied index to the snapshot's, flushes,
//! and deletes the marker durably. A replica that finds the marker at open was stopped
//! mid-restore: it deletes the shard's data and state again (applied 0), so that its peer
//! fetches a snapshot anew.
//!
//! ## Members
//! A membership change (`EntryConfChangeV2`) whose context holds a [`MemberDirectory`] (the
//! whole membership's addresses after the change, see [`super::members`]) replaces the stored
//! directory in the same batch as its applied index; [`ShardState::members`] and, when one is
//! attached ([`KvApply::with_address_book`]), the transport's [`AddressBook`] follow it, so a
//! member added on another node becomes dialable here as soon as this replica applies it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{ConfChangeV2, Entry, EntryType};

use crate::lsm::batch::{BatchOp, MAX_BATCH_BYTES};
use crate::lsm::key::prefix_successor;
use crate::lsm::{ColumnFamily, Db, IterOptions, ReadOptions, SeqNo, WriteBatch, WriteOptions};

use super::apply::{Apply, ApplyOutcome};
use super::command::{Op, RaftCommand};
use super::error::{RaftStoreError, Result};
use super::members::MemberDirectory;
use super::snapshot::{SnapshotHeader, SnapshotReader, SnapshotWriter};
use super::transport::AddressBook;
use super::types::{KeyRange, NodeId, ShardEpoch, ShardId};

/// The families a shard's commands write and its snapshots carry.
pub const REPLICATED_FAMILIES: [ColumnFamily; 3] = [
    ColumnFamily::Default,
    ColumnFamily::Lock,
    ColumnFamily::Write,
];

const SHARD_PREFIX: &[u8] = b"strata/shard/";
const RESTORING_PREFIX: &[u8] = b"strata/restoring/";
const APPLIED: &[u8] = b"applied";
/// Under the shard's prefix, the values that are part of the replicated state.
const REPLICATED: &[u8] = b"r/";
const TSO_HIGH_WATER: &[u8] = b"r/tso_high_water";
const GC_SAFE_POINT: &[u8] = b"r/gc_safe_point";
const MEMBERS: &[u8] = b"r/members";
const RECORD_VERSION: u8 = 1;

/// Limits of snapshots and restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvApplyConfig {
    /// Largest snapshot built, in bytes (it is held in memory while sent); a larger shard
    /// fails with [`RaftStoreError::SnapshotTooLarge`].
    pub max_snapshot_bytes: u64,
    /// Target payload of one snapshot data frame (the unit a transport may send as a chunk).
    pub snapshot_frame_bytes: usize,
    /// Largest LSM batch a restore writes at once.
    pub restore_batch_bytes: usize,
}

impl Default for KvApplyConfig {
    fn default() -> Self {
        Self {
            max_snapshot_bytes: 256 << 20,
            snapshot_frame_bytes: 256 << 10,
            restore_batch_bytes: 4 << 20,
        }
    }
}

/// A shard's applied state as the server reads it, updated after every apply without going
/// through the ready loop. Cheap to share (`Arc`).
#[derive(Debug, Default)]
pub struct ShardState {
    applied: AtomicU64,
    durable_applied: AtomicU64,
    tso_high_water: AtomicU64,
    gc_safe_point: AtomicU64,
    members: parking_lot::RwLock<MemberDirectory>,
    /// Every (node id, incarnation) an applied directory listed since the state opened, with
    /// the index of the first entry (or of the opened state) that listed it.
    seen: parking_lot::RwLock<BTreeMap<(u64, String), u64>>,
}

impl ShardState {
    /// Installs the directory applied at `index`.
    fn set_members(&self, dir: MemberDirectory, index: u64) {
        {
            let mut seen = self.seen.write();
            for (id, m) in &dir.0 {
                if !m.incarnation.is_empty() {
                    seen.entry((*id, m.incarnation.clone())).or_insert(index);
                }
            }
        }
        *self.members.write() = dir;
    }

    /// Whether a directory applied since this state opened (the stored one included) listed
    /// `node` with `incarnation`: how a node tells that it was a member under its own
    /// incarnation, not only under an earlier one whose history it replays.
    pub fn has_listed(&self, node: u64, incarnation: &str) -> bool {
        self.listed_at(node, incarnation).is_some()
    }

    /// The index of the first applied entry (or opened state) whose directory listed `node`
    /// with `incarnation`. A configuration is evidence about that incarnation only when it
    /// was read at or after this index: the replica's published status can lag the state
    /// machine by one apply batch.
    pub fn listed_at(&self, node: u64, incarnation: &str) -> Option<u64> {
        if incarnation.is_empty() {
            return None;
        }
        self.seen
            .read()
            .get(&(node, incarnation.to_owned()))
            .copied()
    }

    /// The member directory as last applied (empty before the first membership change that
    /// carried one).
    pub fn members(&self) -> MemberDirectory {
        self.members.read().clone()
    }

    /// The index applied through.
    pub fn applied_index(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// The index through which the applied state is flushed (as last computed: it can lag
    /// a flush until the next apply or compaction check).
    pub fn durable_applied_index(&self) -> u64 {
        self.durable_applied.load(Ordering::Acquire)
    }

    /// The cluster timestamp oracle's persisted high-water mark (0: none yet).
    pub fn tso_high_water(&self) -> u64 {
        self.tso_high_water.load(Ordering::Acquire)
    }

    /// The cluster GC safe point (0: none yet).
    pub fn gc_safe_point(&self) -> u64 {
        self.gc_safe_point.load(Ordering::Acquire)
    }
}

/// One shard's state machine over the node's LSM.
#[derive(Debug)]
pub struct KvApply {
    db: Db,
    shard: ShardId,
    range: KeyRange,
    epoch: ShardEpoch,
    cfg: KvApplyConfig,
    applied: u64,
    tso_high_water: u64,
    gc_safe_point: u64,
    /// Applies no flush covers yet, oldest first: (the batch's sequence number, its index).
    unflushed: VecDeque<(SeqNo, u64)>,
    /// The newest applied index known to be flushed.
    durable: u64,
    state: Arc<ShardState>,
    members: MemberDirectory,
    /// The transport's book to keep in step with `members`, and this node (never in it).
    book: Option<(AddressBook, NodeId)>,
    /// Called when an applied directory drops this node after listing it under its own
    /// incarnation, before the entry's batch is written ([`KvApply::on_own_removal`]).
    removal: Option<RemovalHook>,
}

/// What [`KvApply::on_own_removal`] watches for: this node, its incarnation, and what to do
/// (durably) before its own removal is applied.
pub struct RemovalHook {
    node: u64,
    incarnation: String,
    hook: Box<dyn FnMut() -> std::io::Result<()> + Send>,
}

impl std::fmt::Debug for RemovalHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemovalHook")
            .field("node", &self.node)
            .field("incarnation", &self.incarnation)
            .finish_non_exhaustive()
    }
}

fn shard_prefix(shard: ShardId) -> Vec<u8> {
    let mut k = SHARD_PREFIX.to_vec();
    k.extend_from_slice(&shard.0.to_be_bytes());
    k.push(b'/');
    k
}

fn shard_key(shard: ShardId, name: &[u8]) -> Vec<u8> {
    let mut k = shard_prefix(shard);
    k.extend_from_slice(name);
    k
}

fn restoring_key(shard: ShardId) -> Vec<u8> {
    let mut k = RESTORING_PREFIX.to_vec();
    k.extend_from_slice(&shard.0.to_be_bytes());
    k
}

fn encode_u64(v: u64) -> [u8; 9] {
    let mut out = [RECORD_VERSION; 9];
    out[1..].copy_from_slice(&v.to_le_bytes());
    out
}

/// Deletes `range` from `cf` in `batch`.
fn delete_range(batch: &mut WriteBatch, cf: ColumnFamily, range: &KeyRange) {
    match &range.end {
        Some(end) => batch.delete_range(cf, &range.start, end),
        None => batch.delete_range_from(cf, &range.start),
    }
}

/// The keys of a prefix, as a range.
fn prefix_range(prefix: Vec<u8>) -> KeyRange {
    KeyRange {
        end: prefix_successor(&prefix),
        start: prefix,
    }
}

impl KvApply {
    /// Opens the state machine of `shard` (its `range`, at `epoch`) over `db`: reads the
    /// applied index and replicated values from the LSM, first resetting a restore a crash
    /// interrupted. `db` is shared with the node's other replicas and metadata.
    pub fn open(
        db: Db,
        shard: ShardId,
        range: KeyRange,
        epoch: ShardEpoch,
        cfg: KvApplyConfig,
    ) -> Result<KvApply> {
        let mut me = KvApply {
            db,
            shard,
            range,
            epoch,
            cfg,
            applied: 0,
            tso_high_water: 0,
            gc_safe_point: 0,
            unflushed: VecDeque::new(),
            durable: 0,
            state: Arc::default(),
            members: MemberDirectory::default(),
            book: None,
            removal: None,
        };
        if let Some(index) = me.read_u64(&restoring_key(shard), None)? {
            tracing::warn!(
                shard = shard.0,
                index,
                "a snapshot restore was interrupted; resetting the replica to empty"
            );
            me.reset()?;
        }
        me.load()?;
        Ok(me)
    }

    /// The handle the server reads the shard's applied state through.
    pub fn state(&self) -> Arc<ShardState> {
        Arc::clone(&self.state)
    }

    /// Keeps `book` in step with the applied member directory (every member but `own`),
    /// starting with the one stored now.
    pub fn with_address_book(mut self, book: AddressBook, own: NodeId) -> KvApply {
        self.book = Some((book, own));
        self.sync_book(&MemberDirectory::default());
        self
    }

    /// Runs `hook` when an entry's member directory drops `node` after the directory in force
    /// listed it with `incarnation` (its own removal, not an earlier incarnation's), before
    /// that entry's batch is written: neither the state machine nor the raft log's apply
    /// state can then record the removal as applied before `hook` returned (D155). A failing
    /// hook fails the apply, so the entry is applied again after a restart.
    pub fn on_own_removal(
        mut self,
        node: NodeId,
        incarnation: String,
        hook: Box<dyn FnMut() -> std::io::Result<()> + Send>,
    ) -> KvApply {
        self.removal = Some(RemovalHook {
            node: node.0,
            incarnation,
            hook,
        });
        self
    }

    /// Whether `new` drops the node of the removal hook after the directory in force listed
    /// it under the hook's incarnation.
    fn removes_own(&self, new: &MemberDirectory) -> bool {
        let Some(r) = &self.removal else {
            return false;
        };
        !r.incarnation.is_empty()
            && self
                .members
                .0
                .get(&r.node)
                .is_some_and(|m| m.incarnation == r.incarnation)
            && !new.0.contains_key(&r.node)
    }

    /// Sets every member's address in the book and forgets those `old` had and the
    /// directory no longer has.
    fn sync_book(&self, old: &MemberDirectory) {
        let Some((book, own)) = &self.book else {
            return;
        };
        // A test keeps the addresses of removed members here (the failpoint's argument names
        // this node's incarnation), so that the commit of a removal reliably reaches the node
        // removed, which then applies its own removal.
        let own_incarnation = self.removal.as_ref().map(|r| r.incarnation.clone());
        let keep = fail::eval("raftstore::kv_apply::keep_removed_addresses", |arg| {
            arg.is_some() && arg == own_incarnation
        }) == Some(true);
        for id in old.0.keys() {
            if !keep && !self.members.0.contains_key(id) && NodeId(*id) != *own {
                book.remove(NodeId(*id));
            }
        }
        for (id, m) in &self.members.0 {
            if NodeId(*id) != *own
                && !m.raft.is_empty()
                && book.get(NodeId(*id)).as_deref() != Some(m.raft.as_str())
            {
                book.set(NodeId(*id), m.raft.clone());
            }
        }
    }

    fn read_members(&self) -> Result<MemberDirectory> {
        match self.db.get(
            ColumnFamily::RaftState,
            &shard_key(self.shard, MEMBERS),
            &ReadOptions::default(),
        )? {
            Some(v) => MemberDirectory::decode(&v),
            None => Ok(MemberDirectory::default()),
        }
    }

    /// The shard.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// The shard's key range.
    pub fn range(&self) -> &KeyRange {
        &self.range
    }

    /// The engine.
    pub fn db(&self) -> &Db {
        &self.db
    }

    fn read_u64(&self, key: &[u8], at: Option<SeqNo>) -> Result<Option<u64>> {
        let opts = ReadOptions {
            snapshot: at,
            ..ReadOptions::default()
        };
        let Some(v) = self.db.get(ColumnFamily::RaftState, key, &opts)? else {
            return Ok(None);
        };
        match v.as_slice() {
            [RECORD_VERSION, rest @ ..] if rest.len() == 8 => {
                let mut w = [0u8; 8];
                w.copy_from_slice(rest);
                Ok(Some(u64::from_le_bytes(w)))
            }
            _ => Err(RaftStoreError::Corruption(format!(
                "{}: raft-state value {:?} of {} bytes",
                self.shard,
                String::from_utf8_lossy(key),
                v.len()
            ))),
        }
    }

    /// Reads the applied index and replicated values from the LSM.
    fn load(&mut self) -> Result<()> {
        self.applied = self
            .read_u64(&shard_key(self.shard, APPLIED), None)?
            .unwrap_or(0);
        self.tso_high_water = self
            .read_u64(&shard_key(self.shard, TSO_HIGH_WATER), None)?
            .unwrap_or(0);
        self.gc_safe_point = self
            .read_u64(&shard_key(self.shard, GC_SAFE_POINT), None)?
            .unwrap_or(0);
        let stored = self.read_members()?;
        let old = std::mem::replace(&mut self.members, stored);
        self.state.set_members(self.members.clone(), self.applied);
        self.sync_book(&old);
        self.unflushed.clear();
        // Read right after open (or a flush): nothing unflushed is in the LSM.
        self.durable = self.applied;
        self.state
            .durable_applied
            .store(self.applied, Ordering::Release);
        self.publish();
        Ok(())
    }

    fn publish(&self) {
        let s = &self.state;
        s.applied.store(self.applied, Ordering::Release);
        s.tso_high_water
            .store(self.tso_high_water, Ordering::Release);
        s.gc_safe_point.store(self.gc_safe_point, Ordering::Release);
    }

    /// Writes a value that must survive a crash at once (the restore marker): logged and
    /// synced, or flushed on an engine without a WAL.
    fn write_durably(&self, batch: WriteBatch) -> Result<()> {
        self.db.write(batch, &WriteOptions::synced())?;
        if !self.db.options().wal {
            self.db.flush()?;
        }
        Ok(())
    }

    /// Adds the deletion of everything of the shard (data and state, the marker aside).
    fn delete_all(&self, batch: &mut WriteBatch) {
        for cf in REPLICATED_FAMILIES {
            delete_range(batch, cf, &self.range);
        }
        delete_range(
            batch,
            ColumnFamily::RaftState,
            &prefix_range(shard_prefix(self.shard)),
        );
    }

    /// Empties the shard (applied 0) and clears the restore marker, durably.
    fn reset(&mut self) -> Result<()> {
        let mut batch = WriteBatch::new();
        self.delete_all(&mut batch);
        self.db.write(batch, &WriteOptions::unlogged())?;
        self.db.flush()?;
        let mut clear = WriteBatch::new();
        clear.delete(ColumnFamily::RaftState, &restoring_key(self.shard));
        self.write_durably(clear)
    }

    /// Why `cmd` must not be applied, if it must not.
    fn refusal(&self, cmd: &RaftCommand, entry_term: u64) -> Option<RaftStoreError> {
        if cmd.shard != self.shard {
            return Some(RaftStoreError::WrongShard {
                shard: self.shard,
                requested: cmd.shard,
            });
        }
        if cmd.term != 0 && cmd.term != entry_term {
            return Some(RaftStoreError::StaleTerm {
                shard: self.shard,
                computed: cmd.term,
                entry: entry_term,
            });
        }
        if cmd.epoch.version != self.epoch.version {
            return Some(RaftStoreError::StaleEpoch {
                shard: self.shard,
                requested: cmd.epoch,
                current: self.epoch,
            });
        }
        let mut bytes = 0;
        for op in &cmd.ops {
            let Op::Write(batch) = op else { continue };
            bytes += batch.encoded_len();
            for op in batch.ops() {
                let (cf, key, inside) = match op {
                    Ok(BatchOp::Put { cf, key, .. } | BatchOp::Delete { cf, key }) => {
                        (cf, key, self.range.contains(key))
                    }
                    Ok(BatchOp::DeleteRange { cf, start, end }) => {
                        (cf, start, self.range.covers(start, Some(end)))
                    }
                    Ok(BatchOp::DeleteFrom { cf, start }) => {
                        (cf, start, self.range.covers(start, None))
                    }
                    // Decoding checked every operation.
                    Err(()) => {
                        return Some(RaftStoreError::Invalid("malformed write batch".into()))
                    }
                };
                if !REPLICATED_FAMILIES.contains(&cf) {
                    return Some(RaftStoreError::Invalid(format!(
                        "{}: a command cannot write the node-local {cf} family",
                        self.shard
                    )));
                }
                if !inside {
                    return Some(RaftStoreError::KeyNotInShard {
                        shard: self.shard,
                        key: key.to_vec(),
                    });
                }
            }
        }
        if bytes > MAX_BATCH_BYTES {
            return Some(RaftStoreError::Invalid(format!(
                "{}: command writes {bytes} bytes, more than one engine batch holds \
                 ({MAX_BATCH_BYTES})",
                self.shard
            )));
        }
        None
    }

    /// Adds entry `e` to `group` (the entries of one LSM batch, see [`Apply::apply`]);
    /// returns why it was refused, if it was (a refused entry only advances the index).
    fn stage(&mut self, e: &Entry, group: &mut Group) -> Result<Option<RaftStoreError>> {
        let after = group.last.unwrap_or(self.applied);
        if e.index != after + 1 {
            return Err(RaftStoreError::Apply(format!(
                "{}: entry {} after {after}",
                self.shard, e.index
            )));
        }
        let mut refused = None;
        if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
            let cmd = RaftCommand::decode(&e.data).map_err(|err| {
                RaftStoreError::Corruption(format!("{}: entry {}: {err}", self.shard, e.index))
            })?;
            refused = self.refusal(&cmd, e.term);
            if refused.is_none() {
                for op in &cmd.ops {
                    match op {
                        Op::Write(b) => group.batch.append(b),
                        Op::SetTsoHighWater(t) => group.tso = group.tso.max(*t),
                        Op::SetGcSafePoint(t) => group.gc = group.gc.max(*t),
                    }
                }
            }
        }
        if e.get_entry_type() == EntryType::EntryConfChangeV2 {
            let cc = ConfChangeV2::parse_from_bytes(&e.data)?;
            if !cc.context.is_empty() {
                let dir = MemberDirectory::decode(&cc.context).map_err(|err| {
                    RaftStoreError::Corruption(format!(
                        "{}: entry {}: member directory: {err}",
                        self.shard, e.index
                    ))
                })?;
                // Before anything of the entry is staged: an error leaves the group as the
                // entries before it left it.
                if self.removes_own(&dir) {
                    if let Some(r) = self.removal.as_mut() {
                        (r.hook)().map_err(|err| {
                            RaftStoreError::Apply(format!(
                                "{}: entry {}: recording this node's removal: {err}",
                                self.shard, e.index
                            ))
                        })?;
                    }
                }
                group.batch.put(
                    ColumnFamily::RaftState,
                    &shard_key(self.shard, MEMBERS),
                    &cc.context,
                );
                group.members = Some(dir);
            }
        }
        group.last = Some(e.index);
        Ok(refused)
    }

    /// Writes `group` as one unlogged LSM batch with the applied index of its last entry,
    /// then publishes what it changed.
    fn write_group(&mut self, group: Group) -> Result<()> {
        let Group {
            mut batch,
            last,
            tso,
            gc,
            members,
        } = group;
        let Some(last) = last else {
            return Ok(());
        };
        if tso != self.tso_high_water {
            batch.put(
                ColumnFamily::RaftState,
                &shard_key(self.shard, TSO_HIGH_WATER),
                &encode_u64(tso),
            );
        }
        if gc != self.gc_safe_point {
            batch.put(
                ColumnFamily::RaftState,
                &shard_key(self.shard, GC_SAFE_POINT),
                &encode_u64(gc),
            );
        }
        batch.put(
            ColumnFamily::RaftState,
            &shard_key(self.shard, APPLIED),
            &encode_u64(last),
        );
        let seq = self.db.write(batch, &WriteOptions::unlogged())?;
        self.unflushed.push_back((seq, last));
        self.applied = last;
        self.tso_high_water = tso;
        self.gc_safe_point = gc;
        if let Some(dir) = members {
            let old = std::mem::replace(&mut self.members, dir);
            self.state.set_members(self.members.clone(), self.applied);
            self.sync_book(&old);
        }
        self.publish();
        Ok(())
    }

    /// Writes `group` and starts the next one after it.
    fn flush_group(&mut self, group: &mut Group) -> Result<()> {
        self.write_group(std::mem::take(group))?;
        // Only now: the next group starts from the state this one left.
        *group = self.group();
        Ok(())
    }

    /// An empty group after the applied state.
    fn group(&self) -> Group {
        Group {
            batch: WriteBatch::new(),
            last: None,
            tso: self.tso_high_water,
            gc: self.gc_safe_point,
            members: None,
        }
    }

    /// Forgets the applies a flush now covers.
    fn note_flushed(&mut self) {
        let flushed = self.db.flushed_seq();
        while let Some(&(seq, index)) = self.unflushed.front() {
            if seq > flushed {
                break;
            }
            self.durable = index;
            self.unflushed.pop_front();
        }
        self.state
            .durable_applied
            .fetch_max(self.durable, Ordering::AcqRel);
    }

    /// Checks that a restore would only write the shard's own keys.
    fn check_pairs(&self, reader: &SnapshotReader<'_>) -> Result<()> {
        let state = prefix_range(shard_key(self.shard, REPLICATED));
        for pair in reader.pairs() {
            let (cf, key, _) = pair?;
            let ok = if cf == ColumnFamily::RaftState {
                state.contains(key)
            } else {
                self.range.contains(key)
            };
            if !ok {
                return Err(RaftStoreError::SnapshotCorrupt(format!(
                    "{}: pair {:?} of {cf} is outside the shard",
                    self.shard,
                    String::from_utf8_lossy(key)
                )));
            }
        }
        Ok(())
    }

    /// Stops a restore half-way when a test asks for it (failpoint
    /// `raftstore::kv_apply::restore`, configured `return(<shard id>)`: only that shard's
    /// restores stop, so tests of other shards in the same process are not hit).
    fn injected_restore_crash(&self) -> Result<()> {
        #[cfg(feature = "failpoints")]
        {
            let me = self.shard.0.to_string();
            if fail::eval("raftstore::kv_apply::restore", |arg| {
                arg.as_deref() == Some(me.as_str())
            }) == Some(true)
            {
                return Err(RaftStoreError::Apply(format!(
                    "{}: injected crash in the middle of a restore",
                    self.shard
                )));
            }
        }
        Ok(())
    }
}

/// Entries staged for one LSM batch: their writes, the last one's index, and the
/// replicated state they leave.
#[derive(Default)]
struct Group {
    batch: WriteBatch,
    last: Option<u64>,
    tso: u64,
    gc: u64,
    members: Option<MemberDirectory>,
}

impl Apply for KvApply {
    fn apply(&mut self, shard: ShardId, entries: &[Entry]) -> Result<ApplyOutcome> {
        if shard != self.shard {
            return Err(RaftStoreError::Invalid(format!(
                "{shard}: entries handed to the state machine of {}",
                self.shard
            )));
        }
        // Consecutive entries share one LSM batch (D159): one write and one applied-index
        // record per group instead of per entry. A group ends after a membership change
        // (the next entries' checks see its epoch and directory) and before it would pass
        // the engine's batch limit.
        let mut rejected = Vec::new();
        let mut group = self.group();
        for e in entries {
            if group.last.is_some() && group.batch.encoded_len() + e.data.len() > MAX_BATCH_BYTES {
                self.flush_group(&mut group)?;
            }
            match self.stage(e, &mut group) {
                Ok(Some(why)) => rejected.push((e.index, why)),
                Ok(None) => {}
                Err(err) => {
                    // The entries before the damaged one are applied, as one by one.
                    self.write_group(group)?;
                    return Err(err);
                }
            }
            if e.get_entry_type() != EntryType::EntryNormal {
                self.flush_group(&mut group)?;
            }
        }
        self.write_group(group)?;
        self.note_flushed();
        Ok(ApplyOutcome {
            applied: self.applied,
            rejected,
        })
    }

    fn applied_index(&self) -> u64 {
        self.applied
    }

    fn durable_applied_index(&self) -> u64 {
        let flushed = self.db.flushed_seq();
        let covered = self.unflushed.partition_point(|(seq, _)| *seq <= flushed);
        let durable = match covered {
            0 => self.durable,
            n => self.unflushed[n - 1].1,
        };
        self.state
            .durable_applied
            .fetch_max(durable, Ordering::AcqRel);
        durable
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        // Applies run on the caller's thread, and nothing else writes this shard's keys: an
        // LSM snapshot taken now holds exactly the state at the applied index.
        let snap = self.db.snapshot();
        let at = self.read_u64(&shard_key(self.shard, APPLIED), Some(snap.seq()))?;
        if at.unwrap_or(0) != self.applied {
            return Err(RaftStoreError::Apply(format!(
                "{}: the LSM holds applied index {at:?}, the state machine {}",
                self.shard, self.applied
            )));
        }
        let header = SnapshotHeader {
            shard: self.shard,
            index: self.applied,
            range: self.range.clone(),
        };
        let mut w = SnapshotWriter::new(
            &header,
            self.cfg.snapshot_frame_bytes,
            self.cfg.max_snapshot_bytes,
        )?;
        let state = prefix_range(shard_key(self.shard, REPLICATED));
        let sources = REPLICATED_FAMILIES
            .iter()
            .map(|cf| (*cf, &self.range))
            .chain([(ColumnFamily::RaftState, &state)]);
        for (cf, range) in sources {
            let mut it = self.db.iter(
                cf,
                IterOptions {
                    lower_bound: Some(range.start.clone()),
                    upper_bound: range.end.clone(),
                    snapshot: Some(snap.seq()),
                    fill_cache: false,
                },
            )?;
            it.seek_to_first()?;
            while it.valid() {
                w.add(cf, it.key(), it.value())?;
                it.next()?;
            }
        }
        Ok(w.finish())
    }

    fn restore(&mut self, shard: ShardId, index: u64, data: &[u8]) -> Result<()> {
        let reader = SnapshotReader::open(data)?;
        let h = reader.header();
        if shard != self.shard || h.shard != self.shard || h.index != index {
            return Err(RaftStoreError::SnapshotCorrupt(format!(
                "{}: snapshot of {} at {} offered as {shard} at {index}",
                self.shard, h.shard, h.index
            )));
        }
        if h.range != self.range {
            return Err(RaftStoreError::Invalid(format!(
                "{}: snapshot of range {:?}, the replica holds {:?}",
                self.shard, h.range, self.range
            )));
        }
        self.check_pairs(&reader)?;
        // From here on a crash leaves the marker, and the next open empties the shard.
        let mut marker = WriteBatch::new();
        marker.put(
            ColumnFamily::RaftState,
            &restoring_key(self.shard),
            &encode_u64(index),
        );
        self.write_durably(marker)?;
        let mut batch = WriteBatch::new();
        self.delete_all(&mut batch);
        for pair in reader.pairs() {
            let (cf, key, value) = pair?;
            batch.put(cf, key, value);
            if batch.encoded_len() >= self.cfg.restore_batch_bytes {
                let full = std::mem::take(&mut batch);
                self.db.write(full, &WriteOptions::unlogged())?;
                self.injected_restore_crash()?;
            }
        }
        batch.put(
            ColumnFamily::RaftState,
            &shard_key(self.shard, APPLIED),
            &encode_u64(index),
        );
        self.db.write(batch, &WriteOptions::unlogged())?;
        self.db.flush()?;
        let mut clear = WriteBatch::new();
        clear.delete(ColumnFamily::RaftState, &restoring_key(self.shard));
        self.write_durably(clear)?;
        self.load()?;
        if self.applied != index {
            return Err(RaftStoreError::Apply(format!(
                "{}: restored to {index} but reads back {}",
                self.shard, self.applied
            )));
        }
        Ok(())
    }
}
