//! The commit path of [`TxnManager`], and how its waits are run.
//!
//! ```text
//!   take the write buffer (state: Committing)   a write arriving from now on is refused
//!   SERIALIZABLE scans: range locks, check      may wait: another transaction's lock
//!   small enough: one-phase commit, done        may wait: a live lock, a range lock;
//!     (refused by the leader: go on below)      an unknown outcome is settled by a
//!                                               rollback record on the primary
//!   prewrite every key, the first as primary    may wait: a live lock, a range lock
//!   commit_ts from the TSO, commit the primary  the commit point; range locks released
//!   commit the secondaries
//!   finish (state: Finished, forgotten)         however the commit ended
//! ```
//!
//! Every step that touches the engine is a synchronous function. A step that may have to
//! wait (an *attempt*) does not sleep: when it meets a live lock it takes a place among the
//! key's waiters ([`LockWait`]: the key's queue when the shard is led here, see
//! [`crate::txn::lock_wait`], a long poll at the leader otherwise) and returns
//! [`Attempt::Blocked`]. The driver ([`Exec::drive`]) sleeps on that place until the lock
//! is released, the lock's TTL runs out or `lock_wait` (counted from the first attempt)
//! passes, and runs the attempt again, handing it back its place so that a woken waiter
//! that must wait again keeps its turn. Past the deadline the blocked attempt's error is
//! returned (`Locked`, or a conflict for range waits: both retryable).
//!
//! The sequence is written once, as `async` code over an [`Exec`]:
//! - `Inline` runs each step on the calling thread and blocks it in waits: the synchronous
//!   API ([`TxnManager::commit`], [`TxnManager::execute`]), driven by [`block_on`], under
//!   which every await completes at once;
//! - `Pool` runs each step on tokio's blocking pool and waits with futures that hold no
//!   thread ([`TxnManager::commit_async`], [`TxnManager::execute_async`]): any number of
//!   blocked commits costs no blocking threads, so they cannot starve other requests.
//!
//! **One hand-off, not one per step** (D136). A `Pool` operation starts as a whole on one
//! blocking-pool thread ([`first_leg`]): its steps run there one after the other, inline,
//! until it completes or must sleep in a lock wait. Only a sleeping operation moves to the
//! runtime, where it sleeps as a future and runs its later steps on the pool one by one.
//! An uncontended `Kv.Put` (prepare, then a one-phase commit) thus costs one trip to the
//! pool instead of two, each trip a wake-up of a pool thread and one of the runtime.

use std::cell::Cell;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{
    ActiveTxn, ConflictKind, ExecuteRequest, ExecuteResponse, Result, TxnError, TxnId, TxnManager,
    TxnState,
};
use crate::mvcc::{LockInfo, MvccError, Timestamp};
use crate::tso::physical;
use crate::txn::actions::{Mutation, PrewriteOptions};
use crate::txn::range_locks::KeyRange;
use crate::txn::shard_client::{LockWait, ShardClient};

/// Errors before the commit point (the primary's commit) leave nothing committed: a
/// prewrite whose outcome is unknown may have left locks, which expire and are resolved
/// like a crashed coordinator's, but the transaction did not commit, so the caller is told
/// to retry rather than that the outcome is unknown.
fn before_commit_point(e: TxnError) -> TxnError {
    match e {
        TxnError::Mvcc(MvccError::OutcomeUnknown(reason)) => TxnError::NotCommitted(reason),
        e => e,
    }
}

/// The conflict a prewrite or a one-phase commit reports as the transaction's abort: a newer
/// commit of one of its keys, or a rollback of it by another transaction. Any other error is
/// passed on as it is.
fn abort(start_ts: Timestamp, e: MvccError) -> TxnError {
    match e {
        MvccError::WriteConflict {
            key,
            conflict_start_ts,
            conflict_commit_ts,
            ..
        } => TxnError::Conflict {
            kind: ConflictKind::WriteConflict,
            start_ts,
            key: Some(key),
            conflicting_start_ts: Some(conflict_start_ts),
            reason: format!("write conflict with a transaction committed at {conflict_commit_ts}"),
        },
        MvccError::AlreadyRolledBack { key, .. } => TxnError::Conflict {
            kind: ConflictKind::RolledBack,
            start_ts,
            key: Some(key),
            conflicting_start_ts: None,
            reason: "rolled back by another transaction".into(),
        },
        e => TxnError::Mvcc(e),
    }
}

/// What is left of an `execute` attempt once its reads and writes are done.
pub(super) enum Prepared {
    /// Nothing to commit (a precondition failed): the response as it is.
    Done(ExecuteResponse),
    /// Commit transaction `id`, then complete `response` with the commit timestamp.
    Commit {
        /// The transaction holding the writes.
        id: TxnId,
        /// The response, without its commit timestamp.
        response: ExecuteResponse,
    },
}

/// What an attempt came to.
enum Attempt<T> {
    /// Finished.
    Done(T),
    /// Must wait, and then be attempted again.
    Blocked(Blocked),
}

/// Why an attempt must wait, and for how long at most.
struct Blocked {
    /// The place in the queue of what it waits for.
    waiter: LockWait,
    /// Retry at this time even if not woken (the lock's TTL runs out then).
    retry_at: Option<Instant>,
    /// The error to return if the deadline passes.
    on_timeout: TxnError,
}

/// The transaction's buffered work, taken by the commit.
struct CommitPlan {
    start_ts: Timestamp,
    /// Writes first (the first is the primary), then `Lock` mutations for reads.
    mutations: Arc<Vec<Mutation>>,
    /// Ranges scanned under SERIALIZABLE.
    ranges: Arc<Vec<KeyRange>>,
}

/// The range locks a committing transaction holds at its shard's leader, registered in
/// leader `term`; released when dropped (without waiting for the network: a lost release
/// ends with the lease).
struct RangeLockHold {
    shards: Arc<dyn ShardClient>,
    owner: Timestamp,
    term: u64,
}

impl Drop for RangeLockHold {
    fn drop(&mut self) {
        self.shards.unlock_ranges(self.owner);
    }
}

/// Finishes a committing transaction when dropped, however the commit ended (also when an
/// asynchronous commit is dropped half-way).
struct Finishing<'a> {
    manager: &'a TxnManager,
    id: TxnId,
    txn: Arc<Mutex<ActiveTxn>>,
}

impl Drop for Finishing<'_> {
    fn drop(&mut self) {
        self.txn.lock().state = TxnState::Finished;
        self.manager.txns.lock().remove(&self.id);
    }
}

/// Runs `fut` to completion on the calling thread (parking it while the future is pending).
pub(super) fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => std::thread::park(),
        }
    }
}

thread_local! {
    /// Set while this (blocking-pool) thread polls the first leg of a `Pool` operation.
    static ON_FIRST_LEG: Cell<bool> = const { Cell::new(false) };
}

/// A `Pool` operation, movable between the blocking pool and the runtime.
type PoolOp<T> = Pin<Box<dyn Future<Output = Result<T>> + Send>>;

/// Polls `op` once on this thread with its steps inline (see the module documentation):
/// its output if it completed, `None` if it sleeps in a lock wait. The waker is a no-op:
/// whoever polls `op` next registers its own, and every wait checks its condition when
/// polled, so nothing that happens in between is missed.
fn first_leg<T>(op: &mut PoolOp<T>) -> Option<Result<T>> {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            ON_FIRST_LEG.with(|f| f.set(false));
        }
    }
    ON_FIRST_LEG.with(|f| f.set(true));
    let _reset = Reset;
    let mut cx = Context::from_waker(Waker::noop());
    match op.as_mut().poll(&mut cx) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

/// Runs a `Pool` operation: its first leg on the blocking pool, the rest (if it had to
/// sleep) here, on the runtime.
async fn on_pool<T: Send + 'static>(op: PoolOp<T>) -> Result<T> {
    let (op, out) = tokio::task::spawn_blocking(move || {
        let mut op = op;
        let out = first_leg(&mut op);
        (op, out)
    })
    .await
    .map_err(|e| TxnError::TaskFailed(e.to_string()))?;
    match out {
        Some(out) => out,
        None => op.await,
    }
}

/// A time far enough ahead to stand for "no deadline".
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
}

/// Where the steps of an operation run, and how its waits sleep.
enum Exec<'a> {
    /// On the calling thread, which blocks in waits.
    Inline(&'a TxnManager),
    /// Steps on tokio's blocking pool; waits are futures that hold no thread.
    Pool(Arc<TxnManager>),
}

impl Exec<'_> {
    fn manager(&self) -> &TxnManager {
        match self {
            Exec::Inline(m) => m,
            Exec::Pool(m) => m,
        }
    }

    /// Runs one synchronous step: on this thread if it is inline or already on the pool
    /// (the first leg of a `Pool` operation), else on the blocking pool.
    async fn run<T, F>(&self, step: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&TxnManager) -> Result<T> + Send + 'static,
    {
        match self {
            Exec::Inline(m) => step(m),
            Exec::Pool(m) if ON_FIRST_LEG.with(Cell::get) => step(m),
            Exec::Pool(m) => {
                let m = Arc::clone(m);
                tokio::task::spawn_blocking(move || step(&m))
                    .await
                    .map_err(|e| TxnError::TaskFailed(e.to_string()))?
            }
        }
    }

    /// Sleeps on `waiter` until it is woken or `until`.
    async fn sleep(&self, waiter: &LockWait, until: Instant) {
        match self {
            Exec::Inline(_) => {
                waiter.wait_blocking(until);
            }
            Exec::Pool(_) => {
                waiter.wait(until).await;
            }
        }
    }

    /// Runs `attempt` until it is done, sleeping whenever it is blocked, for at most
    /// `lock_wait` in all.
    async fn drive<T, F>(&self, attempt: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&TxnManager, Option<LockWait>) -> Result<Attempt<T>> + Send + Sync + 'static,
    {
        let lock_wait = self.manager().config.lock_wait;
        let deadline = Instant::now()
            .checked_add(lock_wait)
            .unwrap_or_else(far_future);
        let attempt = Arc::new(attempt);
        let mut place = None;
        loop {
            let attempt = Arc::clone(&attempt);
            let held = place.take();
            match self.run(move |m| attempt(m, held)).await? {
                Attempt::Done(out) => return Ok(out),
                Attempt::Blocked(Blocked {
                    waiter,
                    retry_at,
                    on_timeout,
                }) => {
                    if Instant::now() >= deadline {
                        return Err(on_timeout);
                    }
                    let until = retry_at.map_or(deadline, |t| t.min(deadline));
                    self.sleep(&waiter, until).await;
                    place = Some(waiter);
                }
            }
        }
    }

    /// Commits transaction `id` (see the module documentation).
    async fn commit(&self, id: TxnId) -> Result<Option<Timestamp>> {
        let manager = self.manager();
        // In memory and brief: done here, so that nothing can cancel the commit between
        // taking the buffer and arming `Finishing`.
        let (txn, plan) = manager.take_for_commit(id)?;
        let _finishing = Finishing { manager, id, txn };
        let Some(plan) = plan else {
            return Ok(None);
        };
        let start_ts = plan.start_ts;
        // SERIALIZABLE scans: hold range locks over the scanned ranges at the shard's
        // leader until the commit point, and make sure nothing changed in them since
        // start_ts; the primary's commit is guarded by the term they were registered in.
        let range_locks = if plan.ranges.is_empty() {
            None
        } else {
            let ranges = Arc::clone(&plan.ranges);
            let lease = manager.range_lock_lease();
            // Armed before the registration: a registration whose reply was lost is
            // released too.
            let mut hold = RangeLockHold {
                shards: Arc::clone(&manager.shards),
                owner: start_ts,
                term: 0,
            };
            hold.term = self
                .run(move |m| Ok(m.shards.lock_ranges(start_ts, &ranges, lease)?))
                .await
                .map_err(before_commit_point)?;
            let ranges = Arc::clone(&plan.ranges);
            self.drive(move |m, held| m.check_ranges_attempt(&ranges, start_ts, held))
                .await
                .map_err(before_commit_point)?;
            Some(hold)
        };
        if manager.one_pc_fits(&plan.mutations) {
            let mutations = Arc::clone(&plan.mutations);
            let range_lock_term = range_locks.as_ref().map(|h| h.term);
            let done = self
                .drive(move |m, held| m.one_pc_attempt(&mutations, start_ts, range_lock_term, held))
                .await?;
            if let Some(commit_ts) = done {
                drop(range_locks);
                return Ok(Some(commit_ts));
            }
            // Refused by the leader: nothing was written; two phases.
        }
        let mutations = Arc::clone(&plan.mutations);
        self.drive(move |m, held| m.prewrite_attempt(&mutations, start_ts, held))
            .await
            .map_err(before_commit_point)?;
        let mutations = Arc::clone(&plan.mutations);
        self.run(move |m| {
            let range_lock_term = range_locks.as_ref().map(|h| h.term);
            let commit_ts = m.commit_primary(&mutations, start_ts, range_lock_term)?;
            drop(range_locks);
            m.commit_secondaries(&mutations, start_ts, commit_ts);
            Ok(Some(commit_ts))
        })
        .await
    }

    /// Runs `request` as one-shot transactions, up to `attempts` times on retryable errors.
    async fn execute(
        &self,
        request: Arc<ExecuteRequest>,
        attempts: usize,
    ) -> Result<ExecuteResponse> {
        let mut last_err = None;
        for _ in 0..attempts.max(1) {
            let r = Arc::clone(&request);
            let once = match self.run(move |m| m.execute_prepare(&r)).await {
                Ok(Prepared::Done(response)) => Ok(response),
                Ok(Prepared::Commit { id, mut response }) => {
                    self.commit(id).await.map(|commit_ts| {
                        response.commit_ts = commit_ts;
                        response
                    })
                }
                Err(e) => Err(e),
            };
            match once {
                // The node's memory is not freed by retrying at once: report it.
                Err(e @ TxnError::Busy { .. }) => return Err(e),
                Err(e) if e.is_retryable() => last_err = Some(e),
                other => return other,
            }
        }
        Err(last_err.unwrap_or(TxnError::InvalidArgument(
            "execute needs at least one attempt".into(),
        )))
    }
}

impl TxnManager {
    /// Commits transaction `id`; returns its commit timestamp, or `None` if it wrote
    /// nothing (read-only transactions never prewrite). The calling thread blocks while the
    /// commit waits for other transactions' locks; servers use
    /// [`commit_async`](TxnManager::commit_async).
    pub fn commit(&self, id: TxnId) -> Result<Option<Timestamp>> {
        block_on(Exec::Inline(self).commit(id))
    }

    /// [`commit`](TxnManager::commit) with its engine work on tokio's blocking pool and its
    /// lock waits as futures that hold no thread. Dropping the future part-way leaves the
    /// transaction as a crashed coordinator would (its locks are resolved by others after
    /// their TTL): spawn it as a task to let it finish whatever its caller does.
    pub async fn commit_async(self: Arc<Self>, id: TxnId) -> Result<Option<Timestamp>> {
        on_pool(Box::pin(async move { Exec::Pool(self).commit(id).await })).await
    }

    /// Runs a one-shot transaction: checks `request.preconditions` at the transaction's
    /// snapshot, and only if all hold, applies `request.writes`; returns the values of
    /// `request.reads` either way. Precondition keys are locked at commit, so they still
    /// hold when the writes become visible (a compare-and-swap). Retryable conflicts are
    /// retried up to `attempts` times. Blocks the calling thread in lock waits, like
    /// [`commit`](TxnManager::commit).
    pub fn execute(&self, request: &ExecuteRequest, attempts: usize) -> Result<ExecuteResponse> {
        block_on(Exec::Inline(self).execute(Arc::new(request.clone()), attempts))
    }

    /// [`execute`](TxnManager::execute) on the blocking pool, waiting without a thread (see
    /// [`commit_async`](TxnManager::commit_async)).
    pub async fn execute_async(
        self: Arc<Self>,
        request: ExecuteRequest,
        attempts: usize,
    ) -> Result<ExecuteResponse> {
        on_pool(Box::pin(async move {
            Exec::Pool(self).execute(Arc::new(request), attempts).await
        }))
        .await
    }

    /// Moves transaction `id` to `Committing` and takes its buffered work; the plan is
    /// `None` if there is nothing to commit.
    fn take_for_commit(&self, id: TxnId) -> Result<(Arc<Mutex<ActiveTxn>>, Option<CommitPlan>)> {
        let txn = self.txn(id)?;
        let plan = {
            let mut t = txn.lock();
            t.ensure_active(id)?;
            t.state = TxnState::Committing;
            let writes = std::mem::take(&mut t.writes);
            let reads = std::mem::take(&mut t.reads);
            let ranges = std::mem::take(&mut t.ranges);
            // A transaction that writes nothing has nothing to commit: its reads came from
            // one snapshot, and without writes it cannot take part in a write skew.
            if t.read_only || writes.is_empty() {
                None
            } else {
                // Keys whose reads must still hold at commit: every read under
                // SERIALIZABLE, and the precondition keys of `execute` under either level.
                let locks: Vec<Mutation> = reads
                    .into_iter()
                    .filter(|k| !writes.contains_key(k))
                    .map(Mutation::Lock)
                    .collect();
                let mut mutations: Vec<Mutation> = writes
                    .into_iter()
                    .map(|(k, v)| match v {
                        Some(v) => Mutation::Put(k, v),
                        None => Mutation::Delete(k),
                    })
                    .collect();
                mutations.extend(locks);
                Some(CommitPlan {
                    start_ts: t.start_ts,
                    mutations: Arc::new(mutations),
                    ranges: Arc::new(ranges),
                })
            }
        };
        // A request racing the commit arrives here at the latest: it finds the
        // transaction committing and is refused.
        fail::fail_point!("txn::commit::after_taking_writes");
        Ok((txn, plan))
    }

    /// The lease range locks are registered under: `range_lock_lease`, and at least long
    /// enough for a commit that waits its full `lock_wait` twice.
    fn range_lock_lease(&self) -> Duration {
        let floor = self
            .config
            .lock_wait
            .saturating_mul(2)
            .saturating_add(Duration::from_secs(1));
        self.config.range_lock_lease.max(floor)
    }

    /// Checks that nothing changed in `ranges` since `start_ts`, resolving the locks met.
    fn check_ranges_attempt(
        &self,
        ranges: &[KeyRange],
        start_ts: Timestamp,
        mut held: Option<LockWait>,
    ) -> Result<Attempt<()>> {
        loop {
            match self.shards.check_ranges(ranges, start_ts) {
                // A place held is dropped: the turn passes on, this check takes no lock.
                Ok(()) => return Ok(Attempt::Done(())),
                Err(MvccError::WriteConflict {
                    key,
                    conflict_start_ts,
                    ..
                }) => {
                    return Err(TxnError::Conflict {
                        kind: ConflictKind::WriteConflict,
                        start_ts,
                        key: Some(key),
                        conflicting_start_ts: Some(conflict_start_ts),
                        reason: "a write committed in a range this transaction scanned".into(),
                    });
                }
                Err(MvccError::KeyIsLocked(info)) => {
                    let on_timeout = |info: LockInfo| TxnError::Conflict {
                        kind: ConflictKind::WriteConflict,
                        start_ts,
                        key: Some(info.key),
                        conflicting_start_ts: Some(info.start_ts),
                        reason: "a transaction is writing in a range this transaction scanned"
                            .into(),
                    };
                    if let Some(b) = self.blocked_by_lock(info, start_ts, &mut held, on_timeout)? {
                        return Ok(Attempt::Blocked(b));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Prewrites `mutations` (the first key is the primary), resolving the locks met.
    fn prewrite_attempt(
        &self,
        mutations: &[Mutation],
        start_ts: Timestamp,
        mut held: Option<LockWait>,
    ) -> Result<Attempt<()>> {
        let Some(primary) = mutations.first().map(|m| m.key().to_vec()) else {
            return Ok(Attempt::Done(()));
        };
        loop {
            // The TTL counts from start_ts: give the commit a full TTL from now.
            let now = self.tso.get_timestamp()?;
            let elapsed_ms = physical(now).saturating_sub(physical(start_ts));
            let options = PrewriteOptions {
                primary: primary.clone(),
                ttl_ms: elapsed_ms + self.config.lock_ttl_ms,
                min_commit_ts: start_ts + 1,
                coordinator: self.coordinator,
            };
            match self.shards.prewrite(mutations, &options, start_ts) {
                Ok(()) => {
                    // Every key is ours now, the one waited for included.
                    if let Some(w) = held {
                        w.keep();
                    }
                    return Ok(Attempt::Done(()));
                }
                Err(
                    e @ (MvccError::WriteConflict { .. } | MvccError::AlreadyRolledBack { .. }),
                ) => {
                    return Err(abort(start_ts, e));
                }
                Err(MvccError::RangeLocked { key, owner }) => {
                    // A committing SERIALIZABLE transaction scanned this range: wait for it.
                    drop(held.take());
                    let Some((waiter, lapses)) = self.shards.wait_for_range_locks(owner) else {
                        continue;
                    };
                    return Ok(Attempt::Blocked(Blocked {
                        waiter,
                        retry_at: lapses,
                        on_timeout: TxnError::Conflict {
                            kind: ConflictKind::RangeLocked,
                            start_ts,
                            key: Some(key),
                            conflicting_start_ts: Some(owner),
                            reason: "the key is in a range read by a committing serializable transaction".into(),
                        },
                    }));
                }
                Err(MvccError::KeyIsLocked(info)) => {
                    if let Some(b) =
                        self.blocked_by_lock(info, start_ts, &mut held, TxnError::Locked)?
                    {
                        return Ok(Attempt::Blocked(b));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Whether a commit of `mutations` is small enough for one phase.
    pub(super) fn one_pc_fits(&self, mutations: &[Mutation]) -> bool {
        let bytes: usize = mutations
            .iter()
            .map(|m| match m {
                Mutation::Put(k, v) => k.len() + v.len(),
                Mutation::Delete(k) | Mutation::Lock(k) => k.len(),
            })
            .sum();
        self.config.one_pc_max_bytes > 0
            && bytes <= self.config.one_pc_max_bytes
            && mutations.len() <= self.config.one_pc_max_keys
    }

    /// Commits `mutations` in one phase (the first key is the primary), resolving the locks
    /// met as a prewrite does. `Done(Some(commit_ts))` once committed, `Done(None)` if the
    /// leader refused one phase (nothing written: commit in two). An unknown outcome is
    /// settled before answering ([`settle_one_pc`](Self::settle_one_pc)).
    fn one_pc_attempt(
        &self,
        mutations: &[Mutation],
        start_ts: Timestamp,
        range_lock_term: Option<u64>,
        mut held: Option<LockWait>,
    ) -> Result<Attempt<Option<Timestamp>>> {
        let Some(primary) = mutations.first().map(|m| m.key().to_vec()) else {
            return Err(TxnError::InvalidArgument("a commit with no keys".into()));
        };
        loop {
            match self.shards.one_pc(mutations, start_ts, range_lock_term) {
                Ok(commit_ts) => {
                    // Committed, no lock left behind: the key's next waiter may go (it
                    // would otherwise wait for a release that never comes).
                    drop(held);
                    return Ok(Attempt::Done(Some(commit_ts)));
                }
                Err(MvccError::OnePcRefused(reason)) => {
                    tracing::debug!(start_ts, %reason, "one-phase commit refused; two phases");
                    return Ok(Attempt::Done(None));
                }
                Err(e @ MvccError::OutcomeUnknown(_)) => {
                    return self
                        .settle_one_pc(&primary, start_ts, e)
                        .map(|ts| Attempt::Done(Some(ts)));
                }
                Err(
                    e @ (MvccError::WriteConflict { .. } | MvccError::AlreadyRolledBack { .. }),
                ) => {
                    return Err(abort(start_ts, e));
                }
                Err(MvccError::RangeLocksLost { .. }) => {
                    return Err(TxnError::Conflict {
                        kind: ConflictKind::RangeLocked,
                        start_ts,
                        key: Some(primary),
                        conflicting_start_ts: None,
                        reason: "the range locks of this transaction's scans were lost with a \
                                 leader change before its commit; nothing was committed"
                            .into(),
                    });
                }
                Err(MvccError::RangeLocked { key, owner }) => {
                    drop(held.take());
                    let Some((waiter, lapses)) = self.shards.wait_for_range_locks(owner) else {
                        continue;
                    };
                    return Ok(Attempt::Blocked(Blocked {
                        waiter,
                        retry_at: lapses,
                        on_timeout: TxnError::Conflict {
                            kind: ConflictKind::RangeLocked,
                            start_ts,
                            key: Some(key),
                            conflicting_start_ts: Some(owner),
                            reason: "the key is in a range read by a committing serializable transaction".into(),
                        },
                    }));
                }
                Err(MvccError::KeyIsLocked(info)) => {
                    if let Some(b) =
                        self.blocked_by_lock(info, start_ts, &mut held, TxnError::Locked)?
                    {
                        return Ok(Attempt::Blocked(b));
                    }
                }
                Err(e) => return Err(before_commit_point(e.into())),
            }
        }
    }

    /// Settles a one-phase commit whose outcome is unknown (`first`): its commit records
    /// exist, or they never will once a rollback record is on the primary. Rolling back the
    /// primary at a leader that has applied every earlier entry does both at once: it
    /// answers `Committed` (the commit timestamp) if the batch was applied, and otherwise
    /// writes the rollback record that makes any late attempt fail (`AlreadyRolledBack`), so
    /// "not committed" is then certain. Asked until `outcome_resolve_timeout`, then
    /// `OutcomeUnknown`.
    pub(super) fn settle_one_pc(
        &self,
        primary: &[u8],
        start_ts: Timestamp,
        first: MvccError,
    ) -> Result<Timestamp> {
        fail::fail_point!("txn::one_pc::settle");
        let deadline = Instant::now() + self.config.outcome_resolve_timeout;
        let mut backoff = Duration::from_millis(10);
        let keys = [primary.to_vec()];
        loop {
            match self.shards.rollback(&keys, start_ts) {
                Ok(()) => {
                    return Err(TxnError::NotCommitted(format!(
                        "a one-phase commit's outcome was unknown ({first}); it is now rolled \
                         back for good, nothing was committed"
                    )));
                }
                Err(MvccError::Committed { commit_ts, .. }) => return Ok(commit_ts),
                Err(MvccError::OutcomeUnknown(_))
                | Err(MvccError::NotLeader { .. })
                | Err(MvccError::Unavailable(_)) => {}
                Err(e) => return Err(e.into()),
            }
            if Instant::now() >= deadline {
                tracing::warn!(start_ts, error = %first, "one-phase commit outcome unknown");
                return Err(first.into());
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// An attempt of transaction `start_ts` met the lock `info`: takes a place in its key's
    /// queue (keeping `held` if it is that key's), then asks the lock's primary. Enqueued
    /// before asking, so a release after the answer finds the place (see `lock_wait`). The
    /// owner alive: the attempt is blocked, failing with `on_timeout` past its deadline.
    /// The lock resolved: `None`, the place kept in `held` for the retry.
    fn blocked_by_lock(
        &self,
        info: LockInfo,
        start_ts: Timestamp,
        held: &mut Option<LockWait>,
        on_timeout: impl FnOnce(LockInfo) -> TxnError,
    ) -> Result<Option<Blocked>> {
        let waiter = self
            .shards
            .wait_for_lock(held.take(), &info.key, info.start_ts);
        if self.resolve(&info, start_ts)?.is_none() {
            *held = Some(waiter);
            return Ok(None);
        }
        let retry_at = self.lock_expiry(&info)?;
        Ok(Some(Blocked {
            waiter,
            retry_at,
            on_timeout: on_timeout(info),
        }))
    }

    /// When the lock `info` describes runs out of TTL (and can be rolled back by whoever
    /// meets it), if that is representable.
    fn lock_expiry(&self, info: &LockInfo) -> Result<Option<Instant>> {
        let now = self.tso.get_timestamp()?;
        let left_ms = physical(info.start_ts)
            .saturating_add(info.ttl_ms)
            .saturating_sub(physical(now))
            .saturating_add(1);
        Ok(Instant::now().checked_add(Duration::from_millis(left_ms)))
    }

    /// Commits the primary (the commit point) and returns the commit timestamp; with
    /// `range_lock_term`, guarded by the transaction's range locks (see
    /// [`crate::txn::range_locks`]).
    fn commit_primary(
        &self,
        mutations: &[Mutation],
        start_ts: Timestamp,
        range_lock_term: Option<u64>,
    ) -> Result<Timestamp> {
        let Some(primary) = mutations.first().map(|m| m.key().to_vec()) else {
            return Err(TxnError::InvalidArgument("a commit with no keys".into()));
        };
        // Crash tests: the process dies with every key prewritten and nothing committed.
        fail::fail_point!("txn_commit_abort_before_primary", |_| std::process::abort());
        let mut commit_ts = self.tso.get_timestamp().map_err(TxnError::from)?;
        // Set once a commit of the primary may have been applied without this node learning
        // it: from then on the answer must come from the primary itself.
        let mut unknown: Option<MvccError> = None;
        let deadline = Instant::now() + self.config.outcome_resolve_timeout;
        let mut backoff = Duration::from_millis(10);
        loop {
            match self.shards.commit(
                std::slice::from_ref(&primary),
                start_ts,
                commit_ts,
                range_lock_term,
            ) {
                Ok(()) => return Ok(commit_ts),
                // The guard refused: the primary still carried our lock in a term whose
                // leader has applied every earlier entry, so no attempt committed it, and
                // none can now. Roll back, so that nobody waits out our locks.
                Err(MvccError::RangeLocksLost { .. }) => {
                    self.roll_back_keys(mutations, start_ts);
                    return Err(TxnError::Conflict {
                        kind: ConflictKind::RangeLocked,
                        start_ts,
                        key: Some(primary),
                        conflicting_start_ts: None,
                        reason: "the range locks of this transaction's scans were lost with a \
                                 leader change before its commit; nothing was committed"
                            .into(),
                    });
                }
                // Settling an unknown outcome: commit the primary again. Committing is
                // idempotent (a commit record of this transaction answers Ok), and a leader
                // that serves the retry has applied every entry of earlier terms, so the
                // first attempt either shows as committed, or it never will be and this
                // attempt decides. Until a leader serves, keep asking, up to the deadline.
                Err(e @ MvccError::OutcomeUnknown(_)) => {
                    unknown.get_or_insert(e);
                }
                Err(MvccError::NotLeader { .. }) | Err(MvccError::Unavailable(_))
                    if unknown.is_some() => {}
                Err(MvccError::CommitTsExpired { min_commit_ts, .. }) => {
                    // A reader pushed min_commit_ts past our timestamp: take a newer one.
                    commit_ts = self.tso.get_timestamp()?.max(min_commit_ts);
                }
                Err(MvccError::AlreadyRolledBack { .. })
                | Err(MvccError::TxnLockNotFound { .. }) => {
                    return Err(TxnError::Conflict {
                        kind: ConflictKind::RolledBack,
                        start_ts,
                        key: Some(primary),
                        conflicting_start_ts: None,
                        reason:
                            "rolled back by another transaction while committing (lock expired)"
                                .into(),
                    });
                }
                Err(e) => return Err(e.into()),
            }
            if Instant::now() >= deadline {
                let e = unknown.take().unwrap_or_else(|| {
                    MvccError::OutcomeUnknown("the primary's commit could not be settled".into())
                });
                tracing::warn!(start_ts, error = %e, "commit outcome unknown");
                return Err(e.into());
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// Commits the secondaries after the commit point. A failure here is left to readers,
    /// who resolve the remaining locks through the committed primary.
    fn commit_secondaries(
        &self,
        mutations: &[Mutation],
        start_ts: Timestamp,
        commit_ts: Timestamp,
    ) {
        // Crash tests: the process dies with the primary committed, the secondaries locked.
        fail::fail_point!("txn_commit_abort_before_secondaries", |_| {
            std::process::abort()
        });
        let secondaries: Vec<Vec<u8>> =
            mutations.iter().skip(1).map(|m| m.key().to_vec()).collect();
        if !secondaries.is_empty() {
            if let Err(e) = self.shards.commit(&secondaries, start_ts, commit_ts, None) {
                tracing::warn!(start_ts, commit_ts, error = %e, "committing secondaries failed; readers will resolve them");
            }
        }
    }

    /// Rolls back every key of an aborted transaction, primary included (best effort: what
    /// is left is resolved through the rolled-back primary, or expires).
    fn roll_back_keys(&self, mutations: &[Mutation], start_ts: Timestamp) {
        let keys: Vec<Vec<u8>> = mutations.iter().map(|m| m.key().to_vec()).collect();
        if let Err(e) = self.shards.rollback(&keys, start_ts) {
            tracing::warn!(start_ts, error = %e, "rolling back an aborted transaction failed; its locks expire");
        }
    }
}
