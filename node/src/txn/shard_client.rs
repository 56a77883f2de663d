//! [`ShardClient`]: the commands the coordinator runs on a shard, wherever its leader is.
//!
//! The coordinator ([`TxnManager`](super::TxnManager)) never touches a [`Storage`] itself:
//! it asks a shard client, which is either the local `Storage` (a single node, or tests) or
//! the gateway's router (`crate::gateway::ShardRouter`), which runs each command on this
//! node's replica when it leads the shard and sends it to the leader otherwise. The contract
//! is `Storage`'s, error for error: a remote leader's `KeyIsLocked`, `WriteConflict`,
//! `OutcomeUnknown`, ... arrive as the same [`MvccError`](crate::mvcc::MvccError) values, so the coordinator's
//! handling (lock resolution, waits, outcome settling in `manager/commit.rs`) is the same
//! whether the shard is here or not.
//!
//! Two things are more than a call and an answer:
//!
//! - **Lock waits.** A blocked writer takes a place among the waiters of a lock *before* it
//!   asks the lock's primary whether the owner is alive (see [`super::lock_wait`]). For a
//!   shard led here that place is in the `Storage`'s queue ([`LockWait::Local`]); for a
//!   remote leader it is a long poll at the leader ([`LockWait::Remote`]), sent when the
//!   wait begins: the leader enqueues, checks that the lock is still held (a release between
//!   the primary's answer and the poll would otherwise be missed) and answers when it is
//!   released or the timeout passes, holding no thread on either side while it waits.
//! - **Range locks** (SERIALIZABLE scans) live on the shard's leader under a lease and are
//!   registered in a leader term; the primary's commit names that term and the leader
//!   refuses it (`RangeLocksLost`) unless it still holds them in the term it commits in (see
//!   [`super::range_locks`]). Releasing them never waits for the network.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::mvcc::{Result, ScanLimit, ScanPage, Timestamp};

use super::actions::{Mutation, PrewriteOptions, TxnStatus};
use super::lock_wait::Waiter;
use super::range_locks::KeyRange;
use super::storage::{BlindWrite, LatestReads, Storage};

/// A future a remote wait returns.
pub type WaitFuture<'a> = Pin<Box<dyn Future<Output = bool> + Send + 'a>>;

/// A wait at a remote leader (see [`LockWait::Remote`]).
pub trait RemoteWait: Send + Sync + Debug {
    /// Waits at the leader until the lock (or the range locks) waited for is released, or
    /// `deadline` passes; `true` if released. A wait that could not be made (the leader is
    /// unreachable or moved) also answers `true`, after a short pause: the caller retries
    /// its command, which tells it what changed.
    fn wait(&self, deadline: Instant) -> WaitFuture<'_>;

    /// [`wait`](RemoteWait::wait), blocking the calling thread (never an async task's).
    fn wait_blocking(&self, deadline: Instant) -> bool;
}

/// A place among the waiters for a lock to be released.
#[derive(Debug)]
pub enum LockWait {
    /// In this node's queue: the shard is led here.
    Local(Waiter),
    /// At the shard's remote leader: a long poll, sent when the wait begins.
    Remote(Box<dyn RemoteWait>),
}

impl LockWait {
    /// Sleeps until woken or `deadline`, holding no thread; returns whether it was woken.
    pub async fn wait(&self, deadline: Instant) -> bool {
        match self {
            LockWait::Local(w) => w.wait(deadline).await,
            LockWait::Remote(r) => r.wait(deadline).await,
        }
    }

    /// Blocks the calling thread until woken or `deadline`; returns whether it was woken.
    pub fn wait_blocking(&self, deadline: Instant) -> bool {
        match self {
            LockWait::Local(w) => w.wait_blocking(deadline),
            LockWait::Remote(r) => r.wait_blocking(deadline),
        }
    }

    /// The caller now holds the key: leave the queue without passing the turn on (a remote
    /// place is only a poll, so there is nothing to keep).
    pub fn keep(self) {
        if let LockWait::Local(w) = self {
            w.keep();
        }
    }

    /// The local place, if this is one.
    pub fn into_local(self) -> Option<Waiter> {
        match self {
            LockWait::Local(w) => Some(w),
            LockWait::Remote(_) => None,
        }
    }
}

/// The commands the coordinator runs on a shard; see the module documentation. Each has
/// the meaning of the [`Storage`] method of the same name.
pub trait ShardClient: Send + Sync + Debug {
    /// [`Storage::get`].
    fn get(&self, key: &[u8], ts: Timestamp, bypass: &[Timestamp]) -> Result<Option<Vec<u8>>>;

    /// [`Storage::scan_page`].
    fn scan_page(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: ScanLimit,
        ts: Timestamp,
        reverse: bool,
        bypass: &[Timestamp],
    ) -> Result<ScanPage>;

    /// [`Storage::prewrite`].
    fn prewrite(
        &self,
        mutations: &[Mutation],
        options: &PrewriteOptions,
        start_ts: Timestamp,
    ) -> Result<()>;

    /// [`Storage::commit_guarded`] (plain [`Storage::commit`] without `range_lock_term`).
    fn commit(
        &self,
        keys: &[Vec<u8>],
        start_ts: Timestamp,
        commit_ts: Timestamp,
        range_lock_term: Option<u64>,
    ) -> Result<()>;

    /// [`Storage::one_pc`]. A remote leader's answer that arrives after an earlier
    /// attempt's answer was lost is `OutcomeUnknown` unless it is the commit itself: that
    /// attempt may still be applied later (see the router's `Resend::Decisive`).
    fn one_pc(
        &self,
        mutations: &[Mutation],
        start_ts: Timestamp,
        range_lock_term: Option<u64>,
    ) -> Result<Timestamp>;

    /// [`Storage::rollback`].
    fn rollback(&self, keys: &[Vec<u8>], start_ts: Timestamp) -> Result<()>;

    /// [`Storage::check_txn_status`].
    fn check_txn_status(
        &self,
        primary: &[u8],
        start_ts: Timestamp,
        current_ts: Timestamp,
        push_to: Option<Timestamp>,
    ) -> Result<TxnStatus>;

    /// [`Storage::heartbeat`].
    fn heartbeat(&self, primary: &[u8], start_ts: Timestamp, ttl_ms: u64) -> Result<Option<u64>>;

    /// [`Storage::resolve_lock`].
    fn resolve_lock(
        &self,
        keys: &[Vec<u8>],
        start_ts: Timestamp,
        commit_ts: Option<Timestamp>,
    ) -> Result<()>;

    /// [`Storage::check_ranges`].
    fn check_ranges(&self, ranges: &[KeyRange], start_ts: Timestamp) -> Result<()>;

    /// [`Storage::oldest_lock_ts`].
    fn oldest_lock_ts(&self) -> Result<Option<Timestamp>>;

    /// [`Storage::lock_ranges`]: returns the leader term the locks are registered in.
    fn lock_ranges(&self, owner: Timestamp, ranges: &[KeyRange], lease: Duration) -> Result<u64>;

    /// [`Storage::unlock_ranges`]. Never waits for the network: a remote release is sent in
    /// the background, and if it is lost the lease ends the locks.
    fn unlock_ranges(&self, owner: Timestamp);

    /// A place among the waiters for the release of the lock of transaction `lock_ts` on
    /// `key`, to be taken before the lock's primary is asked. `prev`, the place the caller
    /// already holds, is kept if it is a local place on the same key (see
    /// [`LockWaits::requeue`](super::lock_wait::LockWaits::requeue)).
    fn wait_for_lock(&self, prev: Option<LockWait>, key: &[u8], lock_ts: Timestamp) -> LockWait;

    /// A place among the waiters for `owner`'s range locks and, if known, when they lapse;
    /// `None` if they are known to be released already.
    fn wait_for_range_locks(&self, owner: Timestamp) -> Option<(LockWait, Option<Instant>)>;

    /// This node's replica, if it leads the shard now: leader work (GC, the stale-lock
    /// resolver) runs only there.
    fn local_leader(&self) -> Option<&Storage>;

    /// [`Storage::blind_write`] at the shard's leader, as a future that holds no thread
    /// (D157); `None` when this client has no such path (the caller runs the write as a
    /// transaction). Besides `Storage::blind_write`'s outcomes: `OutcomeUnknown` when the
    /// leader's answer was lost (the timestamp is then unknown: nothing to settle by).
    fn blind_write(self: Arc<Self>, mutation: Mutation) -> Option<BlindFuture> {
        let _ = mutation;
        None
    }

    /// [`Storage::latest_reads`] at the shard's leader, as a future that holds no thread
    /// (D162); `None` when this client has no such path (the caller reads in a transaction).
    fn latest_reads(self: Arc<Self>, keys: Vec<Vec<u8>>) -> Option<LatestFuture> {
        let _ = keys;
        None
    }
}

/// What [`ShardClient::blind_write`] returns.
pub type BlindFuture = Pin<Box<dyn Future<Output = Result<BlindWrite>> + Send + 'static>>;

/// What [`ShardClient::latest_reads`] returns.
pub type LatestFuture = Pin<Box<dyn Future<Output = Result<LatestReads>> + Send + 'static>>;

impl ShardClient for Storage {
    fn get(&self, key: &[u8], ts: Timestamp, bypass: &[Timestamp]) -> Result<Option<Vec<u8>>> {
        Storage::get(self, key, ts, bypass)
    }

    fn scan_page(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: ScanLimit,
        ts: Timestamp,
        reverse: bool,
        bypass: &[Timestamp],
    ) -> Result<ScanPage> {
        Storage::scan_page(self, start, end, limit, ts, reverse, bypass)
    }

    fn prewrite(
        &self,
        mutations: &[Mutation],
        options: &PrewriteOptions,
        start_ts: Timestamp,
    ) -> Result<()> {
        Storage::prewrite(self, mutations, options, start_ts)
    }

    fn commit(
        &self,
        keys: &[Vec<u8>],
        start_ts: Timestamp,
        commit_ts: Timestamp,
        range_lock_term: Option<u64>,
    ) -> Result<()> {
        Storage::commit_guarded(self, keys, start_ts, commit_ts, range_lock_term)
    }

    fn one_pc(
        &self,
        mutations: &[Mutation],
        start_ts: Timestamp,
        range_lock_term: Option<u64>,
    ) -> Result<Timestamp> {
        Storage::one_pc(self, mutations, start_ts, range_lock_term)
    }

    fn rollback(&self, keys: &[Vec<u8>], start_ts: Timestamp) -> Result<()> {
        Storage::rollback(self, keys, start_ts)
    }

    fn check_txn_status(
        &self,
        primary: &[u8],
        start_ts: Timestamp,
        current_ts: Timestamp,
        push_to: Option<Timestamp>,
    ) -> Result<TxnStatus> {
        Storage::check_txn_status(self, primary, start_ts, current_ts, push_to)
    }

    fn heartbeat(&self, primary: &[u8], start_ts: Timestamp, ttl_ms: u64) -> Result<Option<u64>> {
        Storage::heartbeat(self, primary, start_ts, ttl_ms)
    }

    fn resolve_lock(
        &self,
        keys: &[Vec<u8>],
        start_ts: Timestamp,
        commit_ts: Option<Timestamp>,
    ) -> Result<()> {
        Storage::resolve_lock(self, keys, start_ts, commit_ts)
    }

    fn check_ranges(&self, ranges: &[KeyRange], start_ts: Timestamp) -> Result<()> {
        Storage::check_ranges(self, ranges, start_ts)
    }

    fn oldest_lock_ts(&self) -> Result<Option<Timestamp>> {
        Storage::oldest_lock_ts(self)
    }

    fn lock_ranges(&self, owner: Timestamp, ranges: &[KeyRange], lease: Duration) -> Result<u64> {
        Storage::lock_ranges(self, owner, ranges, lease)
    }

    fn unlock_ranges(&self, owner: Timestamp) {
        Storage::unlock_ranges(self, owner);
    }

    fn wait_for_lock(&self, prev: Option<LockWait>, key: &[u8], _lock_ts: Timestamp) -> LockWait {
        LockWait::Local(
            self.lock_waits()
                .requeue(prev.and_then(LockWait::into_local), key),
        )
    }

    fn wait_for_range_locks(&self, owner: Timestamp) -> Option<(LockWait, Option<Instant>)> {
        Storage::wait_for_range_locks(self, owner)
            .map(|(waiter, lapses)| (LockWait::Local(waiter), Some(lapses)))
    }

    fn local_leader(&self) -> Option<&Storage> {
        Some(self)
    }

    /// Here, as a task of its own: once proposed, a write is not cut short by its caller.
    fn blind_write(self: Arc<Self>, mutation: Mutation) -> Option<BlindFuture> {
        Some(Box::pin(self.spawn_blind_write(mutation)))
    }

    fn latest_reads(self: Arc<Self>, keys: Vec<Vec<u8>>) -> Option<LatestFuture> {
        Some(Box::pin(async move {
            Storage::latest_reads(&self, &keys).await
        }))
    }
}
