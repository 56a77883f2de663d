//! [`ReplicatedTso`]: the cluster's one timestamp oracle, served by the leader of the Raft
//! group that holds it, its high-water window persisted through that group.
//!
//! The rule is [`LocalTso`](super::LocalTso)'s, with Raft in place of the mark file: no
//! timestamp with a physical part at or above the *applied* mark is issued before a higher
//! mark is committed and applied. A new leader applies every committed entry before it
//! serves (leader readiness), so it starts above every window an earlier leader may have
//! issued from.
//!
//! ```text
//!   leader term t                          leader term t+1 (elected while t was cut off)
//!   ── issue from [.., mark) ──┐           start = compose(applied mark, 0) > all of t's
//!   propose SetTsoHighWater ───┘ commit    ── issue from [start, new mark) ──
//! ```
//!
//! **Real-time order across a leader change.** An old leader cut off from the majority
//! still believes it leads and could keep issuing from its window after the new leader has
//! issued larger timestamps: a transaction starting later in real time would then read
//! below a commit it should see. So every allocation is confirmed after it is made: the
//! oracle asks the group to confirm its leadership ([`TsoGroup::confirm_leadership`], a
//! ReadIndex round, or a valid lease when lease reads are configured) and hands the
//! timestamps out only when that succeeds. A successful confirmation means a quorum
//! accepted this leader's term after the allocation; any later leader needs a quorum of
//! votes in a higher term, and one voter is in both quorums and voted only after it had
//! accepted the old term, so the new leader was elected, and issued anything, only after
//! this allocation. Its timestamps are larger (above the applied mark), and real-time
//! order holds. An unconfirmed batch is thrown away (timestamps are never reused).
//!
//! **Commit timestamps of writes that commit through the group** (D138) are not confirmed
//! ([`Tso::get_timestamp_in_term`]): a one-phase commit on the group's leader takes its
//! commit timestamp in the term its write is proposed in, and the write becomes visible
//! only if that entry commits. A committed entry of term t is in the log of every later
//! leader, which applies it before it serves (leader readiness), so every read a later
//! leader serves sees it, and every timestamp a later leader issues is above it (above the
//! applied mark). Nothing needs the timestamp to be fresh in real time: a transaction
//! that starts after the write was acknowledged takes a confirmed start timestamp, issued
//! after this one by this leader or above it by a later one. A read served by this leader
//! at a timestamp above this one (one a later leader issued) is caught by the one-phase
//! commit's `max_ts` check, which refuses the commit. The entry of a leader already cut off
//! cannot commit, and its caller settles the outcome as for any lost write.
//!
//! The wall clock is injected ([`Clock`]), and the group is a trait, so the window logic is
//! tested without a cluster; the server implements [`TsoGroup`] over its Raft driver.

use std::sync::Arc;

use parking_lot::Mutex;

use super::{batch_last, compose, physical, Clock, Timestamp, Tso, TsoError, MAX_PHYSICAL_MS};

/// How long [`Tso::try_timestamp_in_term`] waits for another allocation to release the
/// state before answering that it would have to wait.
const STATE_WAIT: std::time::Duration = std::time::Duration::from_micros(100);

/// What the oracle needs from the Raft group that holds it.
pub trait TsoGroup: Send + Sync + std::fmt::Debug {
    /// The term this node leads in, once it is ready to serve (it has applied an entry of
    /// that term), or `None` when it does not lead. The error, if any, says who leads.
    fn leader_term(&self) -> Result<u64, TsoError>;

    /// The mark applied so far (0 before any): a new leader starts above it.
    fn applied_mark_ms(&self) -> u64;

    /// Commits `mark_ms` as the new high-water mark and returns once it is applied here.
    /// Fails if this node stops leading first (then the mark may or may not be committed,
    /// which is safe: marks only ever rise, and nothing was issued under it yet).
    fn persist_mark(&self, mark_ms: u64) -> Result<(), TsoError>;

    /// Confirms that this node still leads in `term`, after everything issued so far.
    fn confirm_leadership(&self, term: u64) -> Result<(), TsoError>;

    /// [`leader_term`](TsoGroup::leader_term) without waiting: `Ok(None)` where it would
    /// wait (an election on, or this leader not ready yet). By default it may wait.
    fn leader_term_now(&self) -> Result<Option<u64>, TsoError> {
        self.leader_term().map(Some)
    }
}

#[derive(Debug, Default)]
struct State {
    /// The term the window below belongs to; 0 before the first allocation.
    term: u64,
    /// The next timestamp that may be issued.
    next: Timestamp,
    /// This leader's applied mark: nothing at or above it is issued.
    mark_ms: u64,
    persists: u64,
}

/// The replicated oracle; see the module documentation.
#[derive(Debug)]
pub struct ReplicatedTso {
    group: Arc<dyn TsoGroup>,
    clock: Arc<dyn Clock>,
    save_interval_ms: u64,
    state: Mutex<State>,
}

impl ReplicatedTso {
    /// An oracle over `group`; each new mark is `save_interval_ms` above what was issued.
    pub fn new(group: Arc<dyn TsoGroup>, clock: Arc<dyn Clock>, save_interval_ms: u64) -> Self {
        Self {
            group,
            clock,
            save_interval_ms: save_interval_ms.max(1),
            state: Mutex::new(State::default()),
        }
    }

    /// How many marks this instance has persisted (metrics and tests).
    pub fn persist_count(&self) -> u64 {
        self.state.lock().persists
    }

    /// Allocates `count` timestamps; confirmed unless `in_term` names the term the
    /// caller's write must commit in (see [`Tso::get_timestamp_in_term`]).
    fn allocate(&self, count: u64, in_term: Option<u64>) -> Result<Timestamp, TsoError> {
        if count == 0 {
            return Err(TsoError::InvalidArgument(
                "timestamp batch count must be at least 1".to_string(),
            ));
        }
        let term = self.group.leader_term()?;
        if in_term.is_some_and(|t| t != term) {
            return Err(TsoError::NotLeader { leader: None });
        }
        let state = self.state.lock();
        let last = self.issue(state, term, count, true)?;
        let last = last.ok_or_else(|| TsoError::Unavailable("no timestamp issued".into()))?;
        // Confirmed after the allocation, outside the lock (concurrent batches share the
        // group's confirmation rounds). A timestamp for a write that must commit in `term`
        // is not: see the module documentation.
        if in_term.is_none() {
            self.group.confirm_leadership(term)?;
        }
        Ok(last)
    }

    /// [`Tso::try_timestamp_in_term`]: one timestamp in `term` if nothing has to wait for
    /// it (the group's leadership is known, no other allocation holds the state, the
    /// window has room).
    fn allocate_now(&self, term: u64) -> Result<Option<Timestamp>, TsoError> {
        match self.group.leader_term_now()? {
            Some(t) if t == term => {}
            Some(_) => return Err(TsoError::NotLeader { leader: None }),
            None => return Ok(None),
        }
        // Another allocation holds the state for a moment (or, once per save interval, for
        // a mark's Raft round): wait for the former, not the latter.
        let Some(state) = self.state.try_lock_for(STATE_WAIT) else {
            return Ok(None);
        };
        self.issue(state, term, 1, false)
    }

    /// Issues `count` timestamps of `term` under the state lock, persisting a new mark
    /// first when the window runs out (only if `may_persist`: `Ok(None)` otherwise).
    fn issue(
        &self,
        mut state: parking_lot::MutexGuard<'_, State>,
        term: u64,
        count: u64,
        may_persist: bool,
    ) -> Result<Option<Timestamp>, TsoError> {
        let now = self.clock.now_ms();
        if now >= MAX_PHYSICAL_MS {
            return Err(TsoError::ClockOverflow);
        }
        if state.term != term {
            // A new term: whatever this node issued before, a leader in between may have
            // issued up to the applied mark; start above it.
            let applied = self.group.applied_mark_ms();
            state.next = state.next.max(compose(applied, 0));
            state.mark_ms = applied;
            state.term = term;
        }
        let last = batch_last(state.next, now, count)?;
        if physical(last) >= state.mark_ms {
            if !may_persist {
                return Ok(None);
            }
            let mark = physical(last)
                .saturating_add(self.save_interval_ms)
                .min(MAX_PHYSICAL_MS);
            if let Err(e) = self.group.persist_mark(mark) {
                // The mark may still commit: the next term starts above it then.
                // Nothing was issued, and this window is no longer trusted.
                state.term = 0;
                return Err(e);
            }
            state.mark_ms = mark;
            state.persists += 1;
        }
        state.next = last + 1;
        Ok(Some(last))
    }
}

impl Tso for ReplicatedTso {
    fn get_timestamp(&self) -> Result<Timestamp, TsoError> {
        self.allocate(1, None)
    }

    fn get_timestamps(&self, count: u32) -> Result<Timestamp, TsoError> {
        self.allocate(u64::from(count), None)
    }

    fn get_timestamp_in_term(&self, term: u64) -> Result<Timestamp, TsoError> {
        self.allocate(1, Some(term))
    }

    fn try_timestamp_in_term(&self, term: u64) -> Result<Option<Timestamp>, TsoError> {
        self.allocate_now(term)
    }
}
