//! The transaction coordinator: interactive transactions with buffered writes.
//!
//! ```text
//!   begin            start_ts from the TSO; nothing is written
//!   get / scan       read at start_ts, overlaid with the transaction's own buffered writes;
//!                    locks met on the way are resolved through their primary
//!   put / delete     buffered in memory (bounded by TxnLimits)
//!   commit           prewrite every key (the first key is the primary; SERIALIZABLE also
//!                    locks the keys it read), take commit_ts from the TSO, commit the
//!                    primary (the commit point), then the secondaries
//!   rollback         drop the buffer (no locks exist before commit)
//! ```
//!
//! GC: [`TxnManager::gc_tick`] advances the storage's safe point to the start_ts of the
//! oldest transaction that is active, committing, or holding a lock, and never past
//! `now - gc_life_time`. A transaction whose start_ts fell below the safe point (it outlived
//! the life time while a newer one advanced it) fails with `ReadBelowSafePoint`.
//!
//! Read-only transactions and transactions that wrote nothing never prewrite. A transaction
//! left idle longer than `idle_timeout` is rolled back by [`TxnManager::reap_idle`], and one
//! kept alive (by heartbeats) past `max_lifetime` by [`TxnManager::reap_overdue`], so that no
//! client holds the GC safe point back for ever.
//!
//! Identity: transaction ids come from [`TxnIds`] (unique across restarts and nodes), and
//! every lock a commit writes names this node's run ([`TxnManager::with_identity`]), so a
//! later run can resolve it at once (see `txn::resolver`).
//!
//! Lock resolution: a reader that meets a lock asks the lock's primary
//! (`check_txn_status`). A committed or rolled-back owner has its lock resolved forward or
//! backward; an owner whose lock expired is rolled back; a live owner has its
//! `min_commit_ts` pushed above the reader, which may then ignore the lock (its transaction
//! will commit after the read). A writer that meets a live lock waits in the key's queue
//! until the lock is released, up to `lock_wait`, and then fails with a retryable error; the
//! commit path and its waits are in `manager/commit.rs` (an asynchronous variant holds no thread
//! while it waits).
//!
//! A transaction is *active*, then *committing* (from the moment its commit takes the write
//! buffer), then *finished*. A request that finds it committing or finished (it raced its
//! own transaction's Commit or Rollback) fails with [`TxnError::NotActive`] and does
//! nothing, so a write is either in the buffer the commit took or refused, never
//! acknowledged and then dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::mvcc::{
    compute_safe_point, Coordinator, LockInfo, MvccError, ScanLimit, ScanPage, Timestamp,
};
use crate::tso::{physical, Tso, TsoError};

use super::actions::TxnStatus;
use super::limits::{OpenTxnMemory, ResponseBudget, TxnFootprint};
use super::overlay::overlay;
use super::range_locks::KeyRange;
use super::shard_client::ShardClient;
use super::storage::Storage;
use super::txn_id::TxnIds;

mod commit;
mod kv;

/// The smallest key greater than `key`.
fn key_successor(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

/// A key and what reading it returned (`None`: absent).
pub type KeyRead = (Vec<u8>, Option<Vec<u8>>);

/// A transaction's id: never reused, across restarts and nodes (see [`TxnIds`]).
pub type TxnId = u64;

/// Isolation level of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Snapshot isolation: reads see the snapshot at start_ts; write-write conflicts abort.
    #[default]
    Snapshot,
    /// Serializable: additionally, keys read are locked at commit, so a transaction whose
    /// reads were overwritten concurrently aborts (no write skew).
    Serializable,
}

/// A condition `execute` checks before it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// The key exists.
    Exists(Vec<u8>),
    /// The key does not exist.
    NotExists(Vec<u8>),
    /// The key exists with exactly this value.
    ValueEquals(Vec<u8>, Vec<u8>),
}

impl Precondition {
    /// The key the condition is about.
    pub fn key(&self) -> &[u8] {
        match self {
            Precondition::Exists(k)
            | Precondition::NotExists(k)
            | Precondition::ValueEquals(k, _) => k,
        }
    }

    /// Whether the condition holds for the key's current `value`.
    pub fn holds(&self, value: Option<&[u8]>) -> bool {
        match self {
            Precondition::Exists(_) => value.is_some(),
            Precondition::NotExists(_) => value.is_none(),
            Precondition::ValueEquals(_, expected) => value == Some(expected.as_slice()),
        }
    }
}

/// A one-shot transaction for [`TxnManager::execute`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecuteRequest {
    /// Isolation level.
    pub isolation: Isolation,
    /// Conditions that must all hold for the writes to be applied.
    pub preconditions: Vec<Precondition>,
    /// Keys whose values to return.
    pub reads: Vec<Vec<u8>>,
    /// Writes to apply if the preconditions hold (`None` deletes).
    pub writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// What [`TxnManager::execute`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecuteResponse {
    /// Whether every precondition held (and the writes were applied).
    pub succeeded: bool,
    /// Index of the first precondition that failed.
    pub failed_precondition: Option<usize>,
    /// The requested reads, at the transaction's snapshot.
    pub reads: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// The transaction's start timestamp.
    pub start_ts: Timestamp,
    /// The commit timestamp, if anything was written.
    pub commit_ts: Option<Timestamp>,
}

/// Limits and timings of transactions.
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// Lock time to live after the commit starts, in milliseconds.
    pub lock_ttl_ms: u64,
    /// How long a writer waits on a live lock before giving up.
    pub lock_wait: Duration,
    /// Transactions idle longer than this are rolled back.
    pub idle_timeout: Duration,
    /// Most keys one transaction may write; also the most keys read plus ranges scanned a
    /// SERIALIZABLE transaction may record.
    pub max_keys: usize,
    /// Most bytes one transaction may hold: keys and values of its writes, and under
    /// SERIALIZABLE the keys it read and the bounds of the ranges it scanned.
    pub max_bytes: usize,
    /// Most bytes all open transactions of the node may hold together (as counted for
    /// `max_bytes`, plus [`TXN_OVERHEAD_BYTES`](super::limits::TXN_OVERHEAD_BYTES) each).
    pub max_open_txn_bytes: usize,
    /// Most key and value bytes the point reads of one [`TxnManager::execute`] or
    /// [`TxnManager::batch_get`] may return.
    pub max_response_bytes: usize,
    /// How long old versions stay readable: the GC safe point is never newer than
    /// `now - gc_life_time`.
    pub gc_life_time: Duration,
    /// Transactions older than this (from their start_ts) are rolled back even if kept
    /// alive by heartbeats.
    pub max_lifetime: Duration,
    /// How long a commit keeps asking the primary when the outcome of committing it is
    /// unknown (the leader changed, or replication timed out) before it answers "outcome
    /// unknown".
    pub outcome_resolve_timeout: Duration,
    /// How long the range locks of a committing SERIALIZABLE transaction stay registered
    /// at the shard's leader if they are not released (a coordinator that vanished). At
    /// least twice `lock_wait` plus a second is used, so that a commit waiting its full
    /// `lock_wait` twice (range check, prewrite) still finds them.
    pub range_lock_lease: Duration,
    /// A transaction whose mutations (keys and values, SERIALIZABLE read keys included)
    /// total at most this many bytes, and number at most `one_pc_max_keys`, commits in one
    /// phase (one Raft proposal, no locks) when its shard's leader allows it; larger ones,
    /// whose longer apply would keep readers of their keys waiting, commit in two. 0
    /// disables one-phase commits.
    pub one_pc_max_bytes: usize,
    /// The most mutations a one-phase commit carries.
    pub one_pc_max_keys: usize,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            lock_ttl_ms: 3_000,
            lock_wait: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            max_keys: 100_000,
            max_bytes: 64 << 20,
            max_open_txn_bytes: 1 << 30,
            max_response_bytes: 15 << 20,
            gc_life_time: Duration::from_secs(10 * 60),
            max_lifetime: Duration::from_secs(10 * 60),
            outcome_resolve_timeout: Duration::from_secs(5),
            range_lock_lease: Duration::from_secs(10),
            one_pc_max_bytes: 256 << 10,
            one_pc_max_keys: 1024,
        }
    }
}

/// Why a transaction was aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictKind {
    /// Another transaction committed a key it writes (or a range it scanned) after its start.
    WriteConflict,
    /// Another transaction rolled it back (its locks had expired).
    RolledBack,
    /// It waited too long on a range read by a committing SERIALIZABLE transaction, or on
    /// a lock inside a range it scanned; or the range locks of its own scans were lost
    /// before its commit (the shard's leader changed), so nothing was committed.
    RangeLocked,
}

/// Errors of the transaction layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TxnError {
    /// The MVCC layer or the engine failed.
    #[error(transparent)]
    Mvcc(#[from] MvccError),
    /// The timestamp oracle failed.
    #[error(transparent)]
    Tso(#[from] TsoError),
    /// No active transaction has this id (never began, finished, or timed out).
    #[error("no active transaction {0}")]
    NotFound(TxnId),
    /// The transaction conflicted with another and was rolled back; retry it.
    #[error("transaction {start_ts} aborted: {reason}")]
    Conflict {
        /// What kind of conflict.
        kind: ConflictKind,
        /// The aborted transaction.
        start_ts: Timestamp,
        /// The conflicting key, if known.
        key: Option<Vec<u8>>,
        /// The other transaction, if known.
        conflicting_start_ts: Option<Timestamp>,
        /// What happened.
        reason: String,
    },
    /// A live lock held the key past the wait limit; retry later.
    #[error("key {:?} is locked by transaction {} (primary {:?}); gave up waiting", .0.key, .0.start_ts, .0.primary)]
    Locked(LockInfo),
    /// A write in a read-only transaction.
    #[error("transaction {0} is read-only")]
    ReadOnly(TxnId),
    /// The transaction would exceed a limit (`limit_name` is `max_keys` or `max_bytes`).
    #[error("transaction exceeds {limit_name} = {limit}")]
    TooLarge {
        /// The configuration name of the limit.
        limit_name: &'static str,
        /// Its value.
        limit: u64,
    },
    /// The request is not allowed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The values one request read passed the response budget (`limit_name` is
    /// `max_response_bytes`); reading stopped there and nothing is returned.
    #[error("the values read exceed {limit_name} = {limit}; split the request")]
    ResponseTooLarge {
        /// The configuration name of the limit.
        limit_name: &'static str,
        /// Its value.
        limit: u64,
    },
    /// The node's open transactions together would hold more than their budget
    /// (`limit_name` is `max_open_txn_bytes`); retry when other transactions have finished.
    #[error("open transactions on this node would exceed {limit_name} = {limit}")]
    Busy {
        /// The configuration name of the limit.
        limit_name: &'static str,
        /// Its value.
        limit: u64,
    },
    /// The transaction is committing or finished: the request raced its own transaction's
    /// commit or rollback, and did nothing.
    #[error("transaction {id} is {state}; the request did nothing")]
    NotActive {
        /// The transaction.
        id: TxnId,
        /// Where it is.
        state: TxnState,
    },
    /// A task running part of the request failed (panicked or was cancelled).
    #[error("request task failed: {0}")]
    TaskFailed(String),
    /// Replication lost the leader while the transaction prewrote: it did not commit (its
    /// locks, if any were written, expire and are resolved); run it again.
    #[error("the transaction did not commit: {0}")]
    NotCommitted(String),
}

/// Where a transaction is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    /// Accepting reads and writes.
    Active,
    /// Its commit has taken the write buffer; nothing more can join it.
    Committing,
    /// Committed, rolled back or reaped.
    Finished,
}

impl std::fmt::Display for TxnState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TxnState::Active => "active",
            TxnState::Committing => "committing",
            TxnState::Finished => "finished",
        })
    }
}

impl TxnError {
    /// Whether retrying the transaction (from `begin`) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            TxnError::Conflict { .. }
            | TxnError::Locked(_)
            | TxnError::Busy { .. }
            | TxnError::NotCommitted(_) => true,
            TxnError::Mvcc(e) => matches!(
                e,
                MvccError::KeyIsLocked(_) | MvccError::WriteConflict { .. }
            ),
            TxnError::Tso(_)
            | TxnError::NotFound(_)
            | TxnError::ReadOnly(_)
            | TxnError::TooLarge { .. }
            | TxnError::ResponseTooLarge { .. }
            | TxnError::InvalidArgument(_)
            | TxnError::NotActive { .. }
            | TxnError::TaskFailed(_) => false,
        }
    }
}

/// Result alias of the transaction layer.
pub type Result<T, E = TxnError> = std::result::Result<T, E>;

/// Start timestamps of the transactions that may still read or write (a multiset), which
/// the GC safe point must not pass.
type LiveStarts = Arc<Mutex<BTreeMap<Timestamp, usize>>>;

/// A transaction's entry in [`LiveStarts`], removed when the transaction is dropped (after
/// its commit finished, or on rollback or reaping).
#[derive(Debug)]
struct LiveStart {
    starts: LiveStarts,
    start_ts: Timestamp,
}

impl LiveStart {
    fn new(starts: &LiveStarts, start_ts: Timestamp) -> LiveStart {
        *starts.lock().entry(start_ts).or_insert(0) += 1;
        LiveStart {
            starts: Arc::clone(starts),
            start_ts,
        }
    }
}

impl Drop for LiveStart {
    fn drop(&mut self) {
        let mut starts = self.starts.lock();
        if let Some(n) = starts.get_mut(&self.start_ts) {
            *n -= 1;
            if *n == 0 {
                starts.remove(&self.start_ts);
            }
        }
    }
}

#[derive(Debug)]
struct ActiveTxn {
    start_ts: Timestamp,
    state: TxnState,
    /// Holds back the GC safe point while this transaction exists.
    _live: LiveStart,
    isolation: Isolation,
    read_only: bool,
    /// Buffered writes: `None` is a delete.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// What the writes, reads and ranges hold, against the transaction's and the node's
    /// limits; gives the node's budget back when the transaction is dropped.
    memory: TxnFootprint,
    /// Keys whose reads are locked at commit (every read under SERIALIZABLE; precondition
    /// keys of `execute`).
    reads: BTreeSet<Vec<u8>>,
    /// Ranges scanned (SERIALIZABLE range-locks and re-checks them at commit).
    ranges: Vec<KeyRange>,
    /// Locks of live transactions this one may read past (their min_commit_ts was pushed
    /// above start_ts).
    bypass: Vec<Timestamp>,
    last_used: Instant,
}

impl ActiveTxn {
    /// Fails unless the transaction still accepts requests.
    fn ensure_active(&self, id: TxnId) -> Result<()> {
        match self.state {
            TxnState::Active => Ok(()),
            state => Err(TxnError::NotActive { id, state }),
        }
    }
}

/// Runs interactive transactions over a [`ShardClient`].
pub struct TxnManager {
    /// This node's replica: its safe point, engine and statistics.
    storage: Arc<Storage>,
    /// Where the commands go: the replica itself, or the shard's leader.
    shards: Arc<dyn ShardClient>,
    tso: Arc<dyn Tso>,
    config: TxnConfig,
    txns: Mutex<HashMap<TxnId, Arc<Mutex<ActiveTxn>>>>,
    live_starts: LiveStarts,
    ids: TxnIds,
    /// This node's run, recorded in every lock (`None`: not recorded).
    coordinator: Option<Coordinator>,
    /// The memory all open transactions hold (`max_open_txn_bytes`).
    memory: Arc<OpenTxnMemory>,
}

impl std::fmt::Debug for TxnManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnManager")
            .field("active", &self.txns.lock().len())
            .field("config", &self.config)
            .finish()
    }
}

impl TxnManager {
    /// A coordinator over `storage`, taking timestamps from `tso`; its commands run on
    /// `storage` itself until [`with_shards`](TxnManager::with_shards) routes them.
    pub fn new(storage: Arc<Storage>, tso: Arc<dyn Tso>, config: TxnConfig) -> TxnManager {
        let memory = Arc::new(OpenTxnMemory::new(config.max_open_txn_bytes));
        TxnManager {
            shards: Arc::clone(&storage) as Arc<dyn ShardClient>,
            storage,
            tso,
            config,
            txns: Mutex::new(HashMap::new()),
            live_starts: LiveStarts::default(),
            ids: TxnIds::ephemeral(),
            coordinator: None,
            memory,
        }
    }

    /// The same coordinator, running as `coordinator` (this node's current run, recorded in
    /// every lock it writes) and issuing ids from `ids`. Without this, ids are valid for the
    /// process only and locks name no coordinator.
    pub fn with_identity(mut self, coordinator: Coordinator, ids: TxnIds) -> TxnManager {
        self.coordinator = Some(coordinator);
        self.ids = ids;
        self
    }

    /// The same coordinator, running its commands through `shards` (the gateway's router:
    /// this node's replica when it leads the shard, the leader otherwise).
    pub fn with_shards(mut self, shards: Arc<dyn ShardClient>) -> TxnManager {
        self.shards = shards;
        self
    }

    /// This node's replica (its engine, safe point and queues), whether it leads or not.
    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// Where commands run (see [`with_shards`](TxnManager::with_shards)).
    pub fn shards(&self) -> &Arc<dyn ShardClient> {
        &self.shards
    }

    /// This node's replica if it leads the shard now: GC and the stale-lock resolver run
    /// only there (they write, and writes are the leader's).
    pub fn local_leader(&self) -> Option<&Storage> {
        self.shards.local_leader()
    }

    /// The configuration.
    pub fn config(&self) -> &TxnConfig {
        &self.config
    }

    /// Number of active transactions.
    pub fn active(&self) -> usize {
        self.txns.lock().len()
    }

    /// Starts a transaction; returns its id and start timestamp.
    pub fn begin(&self, isolation: Isolation, read_only: bool) -> Result<(TxnId, Timestamp)> {
        let memory = TxnFootprint::new(&self.memory)?;
        let start_ts = self.tso.get_timestamp()?;
        let id = self.ids.next()?;
        let txn = ActiveTxn {
            start_ts,
            state: TxnState::Active,
            _live: LiveStart::new(&self.live_starts, start_ts),
            isolation,
            read_only,
            writes: BTreeMap::new(),
            memory,
            reads: BTreeSet::new(),
            ranges: Vec::new(),
            bypass: Vec::new(),
            last_used: Instant::now(),
        };
        // Registered first, then checked: a safe point computed without this transaction
        // either shows up here or was computed from a `now` older than start_ts.
        self.storage.safe_point().check(start_ts)?;
        self.txns.lock().insert(id, Arc::new(Mutex::new(txn)));
        Ok((id, start_ts))
    }

    fn txn(&self, id: TxnId) -> Result<Arc<Mutex<ActiveTxn>>> {
        self.txns
            .lock()
            .get(&id)
            .cloned()
            .ok_or(TxnError::NotFound(id))
    }

    /// Reads `key` in transaction `id`: its own write if it made one, else the value at its
    /// start timestamp.
    pub fn get(&self, id: TxnId, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let txn = self.txn(id)?;
        let mut t = txn.lock();
        t.ensure_active(id)?;
        t.last_used = Instant::now();
        if let Some(v) = t.writes.get(key) {
            return Ok(v.clone());
        }
        let value = self.read_resolving(&mut t, |bypass, start_ts| {
            self.shards.get(key, start_ts, bypass)
        })?;
        if t.isolation == Isolation::Serializable && !t.read_only {
            self.record_read(&mut t, key)?;
        }
        Ok(value)
    }

    /// Adds `key` to the keys whose reads are locked at commit, counting it against the
    /// transaction's limits (a key already there costs nothing).
    fn record_read(&self, t: &mut ActiveTxn, key: &[u8]) -> Result<()> {
        if !t.reads.contains(key) {
            t.memory.add_read(key.len(), &self.config)?;
            t.reads.insert(key.to_vec());
        }
        Ok(())
    }

    /// Reads `keys` in transaction `id`, in order, as [`TxnManager::get`] does; fails with
    /// `ResponseTooLarge` (and stops reading) once the values pass `max_response_bytes`.
    pub fn batch_get(&self, id: TxnId, keys: &[Vec<u8>]) -> Result<Vec<KeyRead>> {
        let mut budget = ResponseBudget::new(self.config.max_response_bytes);
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let value = self.get(id, key)?;
            budget.charge(key, value.as_deref())?;
            out.push((key.clone(), value));
        }
        Ok(out)
    }

    /// Up to `limit` pairs of `[start, end)` as transaction `id` sees them;
    /// [`TxnManager::scan_page`] without a byte budget.
    pub fn scan(
        &self,
        id: TxnId,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan_page(id, start, end, ScanLimit::pairs(limit), reverse)
            .map(|page| page.pairs)
    }

    /// The pairs of `[start, end)` as transaction `id` sees them (its own writes laid over
    /// its snapshot), up to `limit`; `more` says the range may hold more pairs beyond the
    /// last one. Storage is read under the same limit, so values past the byte budget are
    /// never loaded. Under SERIALIZABLE the part of the range the page covers is recorded
    /// (and counted against the transaction's limits) for the commit-time check.
    pub fn scan_page(
        &self,
        id: TxnId,
        start: &[u8],
        end: Option<&[u8]>,
        limit: ScanLimit,
        reverse: bool,
    ) -> Result<ScanPage> {
        let txn = self.txn(id)?;
        let mut t = txn.lock();
        t.ensure_active(id)?;
        t.last_used = Instant::now();
        let page = self.overlaid_page(&mut t, start, end, limit, reverse)?;
        if t.isolation == Isolation::Serializable && !t.read_only {
            // The part of the range the page depends on: all of it, or up to its last key
            // when it stopped early.
            let covered = match (page.more, page.pairs.last()) {
                (true, Some((last, _))) if reverse => (last.clone(), end.map(<[u8]>::to_vec)),
                (true, Some((last, _))) => (start.to_vec(), Some(key_successor(last))),
                _ => (start.to_vec(), end.map(<[u8]>::to_vec)),
            };
            let bytes = covered.0.len() + covered.1.as_ref().map_or(0, Vec::len);
            t.memory.add_read(bytes, &self.config)?;
            t.ranges.push(covered);
        }
        Ok(page)
    }

    /// One page of `[start, end)` from storage with the transaction's buffered writes laid
    /// over it. When every stored row of a page was deleted by the transaction itself, the
    /// read goes on past that page, so that a page stopped early always holds a pair (the
    /// client continues from its last key).
    fn overlaid_page(
        &self,
        t: &mut ActiveTxn,
        start: &[u8],
        end: Option<&[u8]>,
        limit: ScanLimit,
        reverse: bool,
    ) -> Result<ScanPage> {
        let (mut from, mut to) = (start.to_vec(), end.map(<[u8]>::to_vec));
        loop {
            let range = (
                Bound::Included(from.as_slice()),
                to.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
            );
            // Each buffered write can hide or replace one stored row: fetch enough rows
            // that `limit.pairs` survive.
            let buffered = t.writes.range::<[u8], _>(range).count();
            let fetch = ScanLimit {
                pairs: limit.pairs.saturating_add(buffered),
                bytes: limit.bytes,
            };
            let stored = self.read_resolving(t, |bypass, ts| {
                self.shards
                    .scan_page(&from, to.as_deref(), fetch, ts, reverse, bypass)
            })?;
            let boundary = match (stored.more, stored.pairs.last()) {
                (true, Some((last, _))) => Some(last.clone()),
                _ => None,
            };
            let writes = t
                .writes
                .range::<[u8], _>(range)
                .map(|(k, v)| (k.as_slice(), v.as_deref()));
            let page = if reverse {
                overlay(stored, writes.rev(), true, limit)
            } else {
                overlay(stored, writes, false, limit)
            };
            match boundary {
                Some(last) if page.pairs.is_empty() => {
                    if reverse {
                        to = Some(last);
                    } else {
                        from = key_successor(&last);
                    }
                }
                _ => return Ok(page),
            }
        }
    }

    /// Buffers a write of `key` (`None` deletes it).
    pub fn write(&self, id: TxnId, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        let txn = self.txn(id)?;
        fail::fail_point!("txn::write::before_lock");
        let mut t = txn.lock();
        // A commit that took the buffer before us will not see this write: refuse it.
        t.ensure_active(id)?;
        t.last_used = Instant::now();
        if t.read_only {
            return Err(TxnError::ReadOnly(id));
        }
        let add = key.len() + value.map_or(0, <[u8]>::len);
        let replaced = t
            .writes
            .get(key)
            .map(|old| key.len() + old.as_ref().map_or(0, Vec::len));
        if replaced.is_none() && t.writes.len() >= self.config.max_keys {
            return Err(TxnError::TooLarge {
                limit_name: "max_keys",
                limit: self.config.max_keys as u64,
            });
        }
        t.memory.replace(replaced.unwrap_or(0), add, &self.config)?;
        t.writes.insert(key.to_vec(), value.map(<[u8]>::to_vec));
        Ok(())
    }

    /// Rolls transaction `id` back. Nothing was written before commit, so this only forgets
    /// it. A transaction already committing cannot be rolled back (`NotActive`).
    pub fn rollback(&self, id: TxnId) -> Result<()> {
        let txn = self.txn(id)?;
        {
            let mut t = txn.lock();
            t.ensure_active(id)?;
            t.state = TxnState::Finished;
        }
        self.txns.lock().remove(&id);
        Ok(())
    }

    /// Resolves a lock met by a transaction at `reader_ts`. Returns `None` if the lock was
    /// resolved (retry the operation), or the owner's `min_commit_ts` if the owner is alive.
    fn resolve(&self, info: &LockInfo, reader_ts: Timestamp) -> Result<Option<Timestamp>> {
        let now = self.tso.get_timestamp()?;
        let status =
            self.shards
                .check_txn_status(&info.primary, info.start_ts, now, Some(reader_ts))?;
        let commit_ts = match status {
            TxnStatus::Locked { min_commit_ts, .. } => return Ok(Some(min_commit_ts)),
            TxnStatus::Committed { commit_ts } => Some(commit_ts),
            TxnStatus::RolledBack { .. } => None,
        };
        if info.key != info.primary {
            self.shards
                .resolve_lock(std::slice::from_ref(&info.key), info.start_ts, commit_ts)?;
        }
        Ok(None)
    }

    /// Runs a read at the transaction's start_ts, resolving the locks it meets.
    ///
    /// A read never waits: a live owner has its `min_commit_ts` pushed above the reader's
    /// start_ts and the read goes past its locks. Only an owner that cannot be pushed (its
    /// primary is a `Lock`-kind lock, which this coordinator never makes: primaries are
    /// writes) would block the read, and then the read fails at once with `Locked`
    /// (retryable; an interactive transaction stays open) rather than hold a thread.
    fn read_resolving<T>(
        &self,
        t: &mut ActiveTxn,
        read: impl Fn(&[Timestamp], Timestamp) -> crate::mvcc::Result<T>,
    ) -> Result<T> {
        loop {
            match read(&t.bypass, t.start_ts) {
                Err(MvccError::KeyIsLocked(info)) => match self.resolve(&info, t.start_ts)? {
                    None => {}
                    Some(min_commit_ts)
                        if min_commit_ts > t.start_ts
                            && info.kind != crate::mvcc::LockKind::Lock =>
                    {
                        // The owner will commit after our snapshot: read past its locks.
                        t.bypass.push(info.start_ts);
                    }
                    Some(_) => return Err(TxnError::Locked(info)),
                },
                other => return other.map_err(TxnError::from),
            }
        }
    }

    /// The part of one `execute` attempt before the commit: begins a transaction, checks
    /// the preconditions, reads and buffers the writes. Returns the finished response if
    /// nothing is to be committed, or the transaction to commit and the response to
    /// complete with its commit timestamp.
    fn execute_prepare(&self, request: &ExecuteRequest) -> Result<commit::Prepared> {
        let read_only = request.writes.is_empty();
        let (id, start_ts) = self.begin(request.isolation, read_only)?;
        let result = (|| {
            let mut failed = None;
            for (i, p) in request.preconditions.iter().enumerate() {
                let value = self.get(id, p.key())?;
                if !read_only {
                    let txn = self.txn(id)?;
                    self.record_read(&mut txn.lock(), p.key())?;
                }
                if failed.is_none() && !p.holds(value.as_deref()) {
                    failed = Some(i);
                }
            }
            let reads = self.batch_get(id, &request.reads)?;
            if failed.is_some() {
                self.rollback(id)?;
                return Ok(commit::Prepared::Done(ExecuteResponse {
                    succeeded: false,
                    failed_precondition: failed,
                    reads,
                    start_ts,
                    commit_ts: None,
                }));
            }
            for (key, value) in &request.writes {
                self.write(id, key, value.as_deref())?;
            }
            Ok(commit::Prepared::Commit {
                id,
                response: ExecuteResponse {
                    succeeded: true,
                    failed_precondition: None,
                    reads,
                    start_ts,
                    commit_ts: None,
                },
            })
        })();
        if result.is_err() {
            let _ = self.rollback(id);
        }
        result
    }

    /// Marks transaction `id` as used now (a client heartbeat), postponing its idle
    /// timeout; fails with `NotFound` if it is not active.
    pub fn touch(&self, id: TxnId) -> Result<()> {
        let txn = self.txn(id)?;
        let mut t = txn.lock();
        if t.state == TxnState::Finished {
            return Err(TxnError::NotActive { id, state: t.state });
        }
        t.last_used = Instant::now();
        Ok(())
    }

    /// Advances the storage's GC safe point for time `now`: to the start_ts of the oldest
    /// transaction that is active, committing or holding a lock, but never newer than
    /// `now - life_time`, saved (if the safe point has a store) before it takes effect.
    /// Returns the safe point after the call (it never moves back).
    ///
    /// Leader work: on a node that does not lead the shard this does nothing and returns
    /// the safe point as it is. The transactions of other gateways are not in this node's
    /// live set; they are protected by `life_time` (a transaction lives at most
    /// `max_lifetime`, 600 s like the default GC life time) and, once they hold locks, by
    /// the oldest lock; a transaction that outlives both fails with `ReadBelowSafePoint`
    /// rather than read collected versions.
    pub fn gc_tick(&self, now: Timestamp, life_time: Duration) -> Result<Timestamp> {
        let Some(leader) = self.local_leader() else {
            return Ok(self.storage.safe_point().get());
        };
        // Live starts first: a transaction that commits meanwhile holds its locks before it
        // leaves the live set, so the lock scan below sees it.
        let oldest_live = self.live_starts.lock().keys().next().copied();
        let oldest_lock = leader.oldest_lock_ts()?;
        let oldest = match (oldest_live, oldest_lock) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let safe_point = compute_safe_point(oldest, now, life_time);
        Ok(leader.safe_point().advance_durably(safe_point)?)
    }

    /// Rolls back transactions idle since before `now - idle_timeout`; returns how many.
    pub fn reap_idle(&self, now: Instant) -> usize {
        let mut txns = self.txns.lock();
        let before = txns.len();
        txns.retain(|_, t| {
            // A transaction busy in another call holds its lock: it is not idle. Nor is
            // one that is committing (its commit finishes it).
            t.try_lock().is_none_or(|mut t| {
                let keep = t.state == TxnState::Committing
                    || now.saturating_duration_since(t.last_used) < self.config.idle_timeout;
                if !keep {
                    t.state = TxnState::Finished;
                }
                keep
            })
        });
        before - txns.len()
    }

    /// Rolls back transactions that started more than `max_lifetime` before `now`, however
    /// recently used; returns how many. A transaction busy in another call, or committing
    /// (its commit finishes it), is left alone.
    pub fn reap_overdue(&self, now: Timestamp) -> usize {
        let max_ms = u64::try_from(self.config.max_lifetime.as_millis()).unwrap_or(u64::MAX);
        let mut txns = self.txns.lock();
        let before = txns.len();
        txns.retain(|_, t| {
            t.try_lock().is_none_or(|mut t| {
                let keep = t.state == TxnState::Committing
                    || physical(now).saturating_sub(physical(t.start_ts)) <= max_ms;
                if !keep {
                    t.state = TxnState::Finished;
                }
                keep
            })
        });
        before - txns.len()
    }
}
