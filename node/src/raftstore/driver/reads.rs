//! The reads waiting on one shard's replica, from arrival to answer, and its leader lease.
//!
//! ```text
//!   parked ──(leader ready)──┬── lease valid ──────────────────────────┐
//!                            └── one ReadIndex ctx for all ── rounds ──┴─▶ confirmed(index)
//!                                                                         applied >= index
//!                                                                              └─▶ Ok(index)
//! ```
//! A round belongs to the term it was started in: when the replica stops leading or its
//! term moves, raft-rs forgets the round, so its readers get `NotLeader`. A confirmed read
//! stays valid after a step-down (it was linearized when confirmed) and only waits for apply.
//!
//! The lease (lease mode only) is renewed from the start of each confirmed round or committed
//! proposal of the leader's term. A leader transfer ends it for the rest of the term (the
//! target campaigns without waiting for any lease); a membership change ends it and refuses
//! renewals from rounds started before the change was applied (their quorum was the old
//! configuration's).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use raft::ReadState;

use super::super::error::RaftStoreError;
use super::super::peer::Peer;
use super::super::types::ShardId;
use super::Reply;

/// A caller waiting for a read index.
#[derive(Debug)]
pub(super) struct ReadWaiter {
    pub(super) reply: Reply<u64>,
    /// The read fails `Timeout` past this.
    pub(super) deadline: Instant,
    /// While parked on a leader that is not ready, it fails `LeaderNotReady` past this.
    pub(super) ready_deadline: Instant,
}

impl ReadWaiter {
    fn answer(self, result: Result<u64, RaftStoreError>) {
        let _ = self.reply.send(result);
    }

    fn is_gone(&self) -> bool {
        self.reply.is_closed()
    }
}

#[derive(Debug)]
struct Round {
    term: u64,
    /// When the round was started: a confirmation proves the quorum heard from the leader
    /// after this instant, so a lease may count from here.
    started: Instant,
    waiters: Vec<ReadWaiter>,
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    term: u64,
    until: Instant,
}

/// What serving the parked reads did.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Served {
    pub(super) rounds: u64,
    pub(super) lease_reads: u64,
}

/// Reads of one shard.
#[derive(Debug, Default)]
pub(super) struct ShardReads {
    parked: Vec<ReadWaiter>,
    rounds: HashMap<u64, Round>,
    confirmed: Vec<(u64, ReadWaiter)>,
    lease: Option<Lease>,
    /// A leader transfer was requested in this term: no lease until the term changes.
    no_lease_term: Option<u64>,
    /// Rounds started at or before this instant cannot renew the lease.
    lease_floor: Option<Instant>,
    /// The membership version last seen, to notice applied changes.
    conf_ver: Option<u64>,
}

impl ShardReads {
    pub(super) fn park(&mut self, w: ReadWaiter) {
        self.parked.push(w);
    }

    pub(super) fn waiting(&self) -> usize {
        self.parked.len()
            + self.confirmed.len()
            + self.rounds.values().map(|r| r.waiters.len()).sum::<usize>()
    }

    pub(super) fn has_parked(&self) -> bool {
        !self.parked.is_empty()
    }

    pub(super) fn has_rounds(&self) -> bool {
        !self.rounds.is_empty()
    }

    /// Serves the parked reads if `peer` is a ready leader: from the lease when it holds,
    /// otherwise by one new ReadIndex round for all of them. Fails them at once on a replica
    /// that does not lead; leaves them parked on a leader not ready yet.
    pub(super) fn serve(&mut self, peer: &mut Peer, now: Instant, next_ctx: &mut u64) -> Served {
        let mut served = Served::default();
        if self.parked.is_empty() {
            return served;
        }
        if !peer.is_leader() {
            let shard = peer.meta().shard;
            let leader = peer.leader();
            for w in self.parked.drain(..) {
                w.answer(Err(RaftStoreError::NotLeader { shard, leader }));
            }
            return served;
        }
        if !peer.is_leader_ready() {
            return served;
        }
        let term = peer.term();
        if self.lease_valid(term, now) {
            let index = peer.commit_index();
            served.lease_reads = self.parked.len() as u64;
            self.confirmed
                .extend(self.parked.drain(..).map(|w| (index, w)));
            return served;
        }
        let ctx = *next_ctx;
        *next_ctx += 1;
        peer.read_index(ctx.to_le_bytes().to_vec());
        self.rounds.insert(
            ctx,
            Round {
                term,
                started: now,
                waiters: std::mem::take(&mut self.parked),
            },
        );
        served.rounds = 1;
        served
    }

    /// Takes raft-rs's answers: each confirms a round at a read index, and (in lease mode)
    /// extends the lease from the round's start.
    pub(super) fn on_read_states(
        &mut self,
        states: Vec<ReadState>,
        term: u64,
        lease_len: Option<Duration>,
    ) {
        for rs in states {
            let Ok(ctx) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()) else {
                continue;
            };
            let Some(round) = self.rounds.remove(&u64::from_le_bytes(ctx)) else {
                continue;
            };
            if let Some(len) = lease_len {
                if round.term == term {
                    self.renew_lease(term, round.started, len);
                }
            }
            self.confirmed
                .extend(round.waiters.into_iter().map(|w| (rs.index, w)));
        }
    }

    /// Extends the lease of `term` to `started + len`, for a quorum round that started at
    /// `started` (never shortens it).
    pub(super) fn renew_lease(&mut self, term: u64, started: Instant, len: Duration) {
        if self.no_lease_term == Some(term) || self.lease_floor.is_some_and(|f| started <= f) {
            return;
        }
        let until = started + len;
        match &mut self.lease {
            Some(l) if l.term == term => l.until = l.until.max(until),
            _ => self.lease = Some(Lease { term, until }),
        }
    }

    /// A leader transfer is starting in `term`: no lease for the rest of it.
    pub(super) fn end_lease_for_term(&mut self, term: u64) {
        self.lease = None;
        self.no_lease_term = Some(term);
    }

    /// The membership is changing: the lease ends, and rounds started until `now` cannot
    /// renew it.
    pub(super) fn end_lease_before(&mut self, now: Instant) {
        self.lease = None;
        self.lease_floor = Some(self.lease_floor.map_or(now, |f| f.max(now)));
    }

    /// Whether a lease read would be served now (for tests and status).
    pub(super) fn lease_valid(&self, term: u64, now: Instant) -> bool {
        self.lease.is_some_and(|l| l.term == term && now < l.until)
    }

    /// Answers what can be answered: rounds lost with leadership fail `NotLeader`, confirmed
    /// reads succeed once `peer` applied through their index. Returns the reads answered Ok.
    pub(super) fn finish(&mut self, peer: &Peer, now: Instant) -> u64 {
        let term = peer.term();
        let leading = peer.is_leader();
        if self.lease.is_some_and(|l| l.term != term || !leading) {
            self.lease = None;
        }
        let conf_ver = peer.meta().epoch.conf_ver;
        if self.conf_ver.is_some_and(|v| v != conf_ver) {
            self.end_lease_before(now);
        }
        self.conf_ver = Some(conf_ver);
        if !self.rounds.is_empty() {
            let shard = peer.meta().shard;
            let leader = peer.leader();
            self.rounds.retain(|_, r| {
                if leading && r.term == term {
                    return true;
                }
                for w in r.waiters.drain(..) {
                    w.answer(Err(RaftStoreError::NotLeader { shard, leader }));
                }
                false
            });
        }
        let applied = peer.applied_index();
        let mut answered = 0;
        let mut i = 0;
        while i < self.confirmed.len() {
            if self.confirmed[i].0 <= applied {
                let (index, w) = self.confirmed.swap_remove(i);
                w.answer(Ok(index));
                answered += 1;
            } else {
                i += 1;
            }
        }
        answered
    }

    /// Fails reads past their deadline and forgets callers that went away.
    pub(super) fn expire(&mut self, shard: ShardId, now: Instant) {
        let timeout = |w: ReadWaiter, what: &str| {
            w.answer(Err(RaftStoreError::Timeout(format!(
                "{shard}: read {what}"
            ))))
        };
        let mut keep = Vec::with_capacity(self.parked.len());
        for w in self.parked.drain(..) {
            if w.is_gone() {
                continue;
            }
            if now >= w.deadline.min(w.ready_deadline) {
                w.answer(Err(RaftStoreError::LeaderNotReady { shard }));
            } else {
                keep.push(w);
            }
        }
        self.parked = keep;
        for r in self.rounds.values_mut() {
            let waiters = std::mem::take(&mut r.waiters);
            for w in waiters {
                if w.is_gone() {
                    continue;
                }
                if now >= w.deadline {
                    timeout(w, "not confirmed by a quorum in time");
                } else {
                    r.waiters.push(w);
                }
            }
        }
        self.rounds.retain(|_, r| !r.waiters.is_empty());
        let confirmed = std::mem::take(&mut self.confirmed);
        for (index, w) in confirmed {
            if w.is_gone() {
                continue;
            }
            if now >= w.deadline {
                timeout(w, "confirmed but not applied in time");
            } else {
                self.confirmed.push((index, w));
            }
        }
    }

    /// Answers every waiting read with `err()`.
    pub(super) fn fail_all(&mut self, err: &dyn Fn() -> RaftStoreError) {
        for w in self.parked.drain(..) {
            w.answer(Err(err()));
        }
        for (_, mut r) in self.rounds.drain() {
            for w in r.waiters.drain(..) {
                w.answer(Err(err()));
            }
        }
        for (_, w) in self.confirmed.drain(..) {
            w.answer(Err(err()));
        }
    }
}
