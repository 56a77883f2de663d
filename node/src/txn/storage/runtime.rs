//! The asynchronous paths of [`Storage`] on the runtime, which hold no thread and never
//! wait: blind writes (`Kv.Put`, `Kv.Delete`; D157, D165) and latest reads (`Kv.Get`,
//! `Kv.BatchGet` without a read timestamp; D162). Each tries every latch, lock and oracle
//! state instead of waiting for it and declines where the blocking path would wait; the
//! caller then runs that path. The reasoning is in `docs/architecture/transactions.md`,
//! "Blind writes" and "Latest reads".

use std::sync::Arc;

use crate::lsm::WriteBatch;
use crate::mvcc::{MvccError, MvccReader, MvccTxn, Result, Timestamp};

use super::Storage;
use crate::txn::actions::{self, Mutation};
use crate::txn::shard_writer::WriteTicket;

/// What blind writes came to on a replica, counted since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlindWriteCounts {
    /// Committed.
    pub committed: u64,
    /// Declined: run as transactions instead.
    pub declined: u64,
    /// Failed or of unknown outcome.
    pub failed: u64,
}

#[derive(Debug, Default)]
pub(super) struct BlindCounters {
    committed: std::sync::atomic::AtomicU64,
    declined: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
    /// Keys of latest reads read, and declined (D162).
    reads_served: std::sync::atomic::AtomicU64,
    reads_declined: std::sync::atomic::AtomicU64,
}

/// What latest reads came to on a replica, in keys, counted since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatestReadCounts {
    /// Read at the call's timestamp.
    pub served: u64,
    /// Declined (alone or with their whole call): read in a transaction instead.
    pub declined: u64,
}

/// What [`Storage::blind_write`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlindWrite {
    /// Committed at this timestamp (the transaction's start_ts too).
    Committed(Timestamp),
    /// Nothing was written and nothing is pending: why. Run it as a transaction.
    Declined(&'static str),
    /// Proposed, but whether it commits is unknown: settle it through the key at `ts`.
    Unknown {
        /// The transaction's start_ts (and commit_ts, if it committed).
        ts: Timestamp,
        /// Why the outcome is unknown.
        reason: String,
    },
}

/// Bytes of records in one proposal of [`Storage::blind_write_batch`], at most (or one
/// write, if larger): far below the Raft transport's message limit.
const BLIND_PROPOSAL_BYTES: usize = 8 << 20;

/// A blind write checked and recorded, holding what it holds until its apply (declared in
/// the order they are released: the memory lock first, as before, then the latch and the
/// gate).
struct PreparedBlind<'a> {
    ts: Timestamp,
    ticket: WriteTicket,
    batch: WriteBatch,
    _memory: crate::txn::concurrency::MemoryLocks<'a>,
    _latches: crate::txn::latches::LatchGuard<'a>,
    _gate: parking_lot::RwLockReadGuard<'a, ()>,
}

/// How a proposal of blind writes ended.
#[derive(Debug, Clone)]
enum Proposed {
    Committed,
    /// Refused without effect (`NotLeader`).
    Refused,
    Unknown(String),
}

impl Proposed {
    /// The outcome of a write at `ts` in the proposal.
    fn at(self, ts: Timestamp) -> BlindWrite {
        match self {
            Proposed::Committed => BlindWrite::Committed(ts),
            Proposed::Refused => BlindWrite::Declined("the proposal was refused"),
            Proposed::Unknown(reason) => BlindWrite::Unknown { ts, reason },
        }
    }
}

/// One key's answer of [`Storage::latest_reads`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LatestRead {
    /// The key's value at the reads' timestamp (`None`: no value there).
    Value(Option<Vec<u8>>),
    /// Not read, and why: a lock, or a one-phase commit in flight, on the key. Read it as a
    /// transaction reads, which waits and resolves.
    Declined(&'static str),
}

/// What [`Storage::latest_reads`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LatestReads {
    /// Read at `ts`: one answer per key, in order.
    Read {
        /// The timestamp every key was read at.
        ts: Timestamp,
        /// One answer per key.
        values: Vec<LatestRead>,
    },
    /// Nothing was read, and why. Read as a transaction.
    Declined(&'static str),
}

impl Storage {
    /// Reads `keys` at the latest state, on the runtime, holding no thread (D162): one
    /// fresh oracle timestamp taken in this leader's term, then one read barrier, then each
    /// key at that timestamp.
    ///
    /// The barrier does two things at once. It confirms the timestamp: the replica still
    /// leads, after the timestamp was issued, in the term it was issued in, which is what
    /// the oracle's own confirmation checks (D68). And it makes the state include every
    /// write acknowledged before the call, as [`Storage::get`]'s barrier does. A timestamp
    /// issued after the call began is above the commit timestamp of every write
    /// acknowledged before it, so the reads see them all: they are linearizable.
    ///
    /// Nothing waits. Where the blocking path would wait (no ready leader, an oracle
    /// window to extend), the whole call is declined; a key with a lock or a one-phase
    /// commit in flight on it is declined alone. Every key read raises `max_ts` to the
    /// timestamp first, as every read does, so no later one-phase commit lands below it.
    pub async fn latest_reads(&self, keys: &[Vec<u8>]) -> Result<LatestReads> {
        let outcome = self.latest_attempt(keys).await;
        let (served, declined) = match &outcome {
            Ok(LatestReads::Read { values, .. }) => {
                let declined = values
                    .iter()
                    .filter(|v| matches!(v, LatestRead::Declined(_)))
                    .count();
                (values.len() - declined, declined)
            }
            Ok(LatestReads::Declined(_)) | Err(_) => (0, keys.len()),
        };
        let c = &self.blind_counts;
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        c.reads_served.fetch_add(served as u64, relaxed);
        c.reads_declined.fetch_add(declined as u64, relaxed);
        outcome
    }

    /// [`latest_reads`](Self::latest_reads) itself.
    async fn latest_attempt(&self, keys: &[Vec<u8>]) -> Result<LatestReads> {
        let Some(tso) = self.ts_source.get() else {
            return Ok(LatestReads::Declined("no oracle"));
        };
        let Some(ticket) = self.writer.begin_write_now()? else {
            return Ok(LatestReads::Declined("no ready leader here"));
        };
        let ts = match tso.try_timestamp_in_term(ticket.term) {
            Ok(Some(ts)) => ts,
            Ok(None) | Err(_) => return Ok(LatestReads::Declined("no timestamp at once")),
        };
        match self.writer.read_barrier_async().await {
            Ok(()) => {}
            Err(MvccError::NotLeader { .. }) => {
                return Ok(LatestReads::Declined("the read barrier was refused"))
            }
            Err(e) => return Err(e),
        }
        // The barrier was served in a term at least the timestamp's; still leading in the
        // timestamp's term now, it was served in that very term.
        if self.writer.begin_write_now()?.map(|t| t.term) != Some(ticket.term) {
            return Ok(LatestReads::Declined("the leader changed during the reads"));
        }
        let readable: Vec<bool> = keys
            .iter()
            .map(|key| self.cm.try_read_point(key, ts))
            .collect();
        let snap = self.db.snapshot();
        self.safe_point.check(ts)?;
        let reader = MvccReader::new(&self.db, Some(snap.seq()));
        let mut values = Vec::with_capacity(keys.len());
        for (key, readable) in keys.iter().zip(readable) {
            values.push(if !readable {
                LatestRead::Declined("a one-phase commit holds the key")
            } else {
                match reader.get(key, ts, &[]) {
                    Ok(v) => LatestRead::Value(v),
                    Err(MvccError::KeyIsLocked(_)) => LatestRead::Declined("the key is locked"),
                    Err(e) => return Err(e),
                }
            });
        }
        Ok(LatestReads::Read { ts, values })
    }

    /// Commits the single-key write `mutation` (a put or a delete, nothing read) in one
    /// phase at a timestamp this leader chooses, holding no thread while the batch commits:
    /// the asynchronous write path of `Kv.Put` and `Kv.Delete` (D157, see
    /// `docs/architecture/transactions.md`). The timestamp is both the transaction's
    /// start_ts and its commit_ts: taken from the oracle in the ticket's term, under the
    /// key's latch and memory lock, so it is above every read served so far and every
    /// commit of the key, and no other transaction is ever given it.
    ///
    /// Whatever would wait is declined before anything is written or proposed
    /// ([`BlindWrite::Declined`]): no ready leader or no `max_ts` floor in this term yet, a
    /// held latch or range-lock gate, a lock on the key, a range lock over it, an oracle
    /// window to extend. The caller then runs the write as an ordinary transaction, which
    /// waits where this declines. Once proposed, the outcome is the writer's:
    /// [`BlindWrite::Committed`], [`BlindWrite::Unknown`] (settle it through the key, the
    /// transaction's primary, at that timestamp), `Declined` for a proposal refused
    /// without effect (`NotLeader`), or another error (nothing applied).
    // The gate, latch and memory lock are held across the proposal on purpose, as every
    // write command holds them until its batch is applied. No runtime thread ever waits for
    // them: this path only tries them, and the commands that wait for them run on blocking
    // threads, which the proposal's completion does not need.
    pub async fn blind_write(self: Arc<Self>, mutation: Mutation) -> Result<BlindWrite> {
        only_answer(self.blind_write_batch(vec![mutation]).await)
    }

    /// Starts [`blind_write`](Self::blind_write) as a task of its own and returns its
    /// outcome: once proposed, a write is not cut short by its caller going away (its latch
    /// and memory lock are held until the apply). A task that failed leaves the outcome
    /// unknown.
    pub fn spawn_blind_write(
        self: &Arc<Self>,
        mutation: Mutation,
    ) -> impl std::future::Future<Output = Result<BlindWrite>> + Send + 'static {
        let batch = self.spawn_blind_write_batch(vec![mutation]);
        async move { only_answer(batch.await) }
    }

    /// [`blind_write_batch`](Self::blind_write_batch) as a task of its own, for the same
    /// reason as [`spawn_blind_write`](Self::spawn_blind_write); a task that failed leaves
    /// every write's outcome unknown.
    pub fn spawn_blind_write_batch(
        self: &Arc<Self>,
        mutations: Vec<Mutation>,
    ) -> impl std::future::Future<Output = Vec<Result<BlindWrite>>> + Send + 'static {
        let n = mutations.len();
        let task = tokio::spawn(Arc::clone(self).blind_write_batch(mutations));
        async move {
            task.await.unwrap_or_else(|e| {
                vec![
                    Err(MvccError::OutcomeUnknown(format!(
                        "blind write task failed: {e}"
                    )));
                    n
                ]
            })
        }
    }

    /// What blind writes came to on this replica so far (metrics).
    pub fn blind_write_counts(&self) -> BlindWriteCounts {
        let c = &self.blind_counts;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        BlindWriteCounts {
            committed: get(&c.committed),
            declined: get(&c.declined),
            failed: get(&c.failed),
        }
    }

    /// What latest reads came to on this replica so far, in keys (metrics).
    pub fn latest_read_counts(&self) -> LatestReadCounts {
        let c = &self.blind_counts;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        LatestReadCounts {
            served: get(&c.reads_served),
            declined: get(&c.reads_declined),
        }
    }

    /// Blind writes of several keys, each checked as [`blind_write`](Self::blind_write)
    /// checks it, and all those not declined proposed together, in one Raft command per
    /// 8 MiB of records, a larger write alone (D165): one answer per mutation, in order.
    /// Each write keeps its own timestamp; the command commits, fails or stays unknown as a
    /// whole, so each write's outcome is the command's. Two writes of one batch that share a
    /// latch: the second declines. A single blind write is a batch of one.
    // Held across the proposal on purpose, as for `blind_write`.
    #[allow(clippy::await_holding_lock)]
    pub async fn blind_write_batch(
        self: Arc<Self>,
        mutations: Vec<Mutation>,
    ) -> Vec<Result<BlindWrite>> {
        let this: &Storage = &self;
        let mut answers: Vec<Result<BlindWrite>> = Vec::with_capacity(mutations.len());
        let mut prepared = Vec::new();
        for (i, m) in mutations.iter().enumerate() {
            match this.prepare_blind(m) {
                Ok(Ok(p)) => {
                    answers.push(Ok(BlindWrite::Declined("pending")));
                    prepared.push((i, p));
                }
                Ok(Err(why)) => answers.push(Ok(BlindWrite::Declined(why))),
                Err(e) => answers.push(Err(e)),
            }
        }
        // One term for the whole command: a write prepared under another ticket (the
        // leader changed in between) is declined.
        if let Some(term) = prepared.first().map(|(_, p)| p.ticket.term) {
            prepared.retain(|(i, p)| {
                let same = p.ticket.term == term;
                if !same {
                    answers[*i] = Ok(BlindWrite::Declined("the leader changed"));
                }
                same
            });
        }
        // One proposal per BLIND_PROPOSAL_BYTES of records (a larger write alone), so that a
        // large batch never makes an entry the transport would refuse to carry.
        let mut start = 0;
        while start < prepared.len() {
            let ticket = prepared[start].1.ticket;
            let mut batch = WriteBatch::new();
            let mut end = start;
            while end < prepared.len()
                && (end == start
                    || batch.encoded_len() + prepared[end].1.batch.encoded_len()
                        <= BLIND_PROPOSAL_BYTES)
            {
                batch.append(&prepared[end].1.batch);
                end += 1;
            }
            let outcome = this.propose_blind(ticket, batch).await;
            for (i, p) in &prepared[start..end] {
                answers[*i] = outcome.clone().map(|o| o.at(p.ts));
            }
            start = end;
        }
        // Applied (or not at all): readers waiting on the memory locks may go.
        drop(prepared);
        self.count_blind(&answers);
        answers
    }

    fn count_blind(&self, answers: &[Result<BlindWrite>]) {
        for a in answers {
            let counter = match a {
                Ok(BlindWrite::Committed(_)) => &self.blind_counts.committed,
                Ok(BlindWrite::Declined(_)) => &self.blind_counts.declined,
                Ok(BlindWrite::Unknown { .. }) | Err(_) => &self.blind_counts.failed,
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Proposes the batch of prepared blind writes under `ticket` and waits for its apply.
    async fn propose_blind(&self, ticket: WriteTicket, batch: WriteBatch) -> Result<Proposed> {
        match self.writer.write_async(ticket, batch).await {
            Ok(()) => Ok(Proposed::Committed),
            Err(MvccError::OutcomeUnknown(reason)) => Ok(Proposed::Unknown(reason)),
            Err(MvccError::NotLeader { .. }) => Ok(Proposed::Refused),
            Err(e) => Err(e),
        }
    }

    /// The checks of a blind write, every one tried and none waited for, and its record:
    /// the write, with its latch, memory lock and gate held, ready to propose; or why it
    /// declines (nothing taken, nothing written).
    fn prepare_blind(
        &self,
        mutation: &Mutation,
    ) -> Result<std::result::Result<PreparedBlind<'_>, &'static str>> {
        if matches!(mutation, Mutation::Lock(_)) {
            return Err(MvccError::Engine(crate::lsm::Error::InvalidArgument(
                "a blind write puts or deletes its key".into(),
            )));
        }
        let key = mutation.key();
        let Some(tso) = self.ts_source.get() else {
            return Ok(Err("no oracle"));
        };
        let Some(ticket) = self.writer.begin_write_now()? else {
            return Ok(Err("no ready leader here"));
        };
        if self.cm.synced_term() != Some(ticket.term) {
            return Ok(Err("no max_ts floor in this term yet"));
        }
        let Some(gate) = self.range_locks.try_enter_prewrite() else {
            return Ok(Err("range locks are being registered"));
        };
        // 0 is no transaction's start_ts: every range lock over the key counts.
        if self.range_locks.conflicting(key, 0).is_some() {
            return Ok(Err("the key is in a locked range"));
        }
        let Some(latches) = self.latches.try_acquire([key]) else {
            return Ok(Err("another command holds the key's latch"));
        };
        let Some(memory) = self.cm.lock_for_one_pc([key.to_vec()], ticket.term, 0, 1) else {
            return Ok(Err("the leader changed"));
        };
        let ts = match tso.try_timestamp_in_term(ticket.term) {
            Ok(Some(ts)) => ts,
            Ok(None) | Err(_) => return Ok(Err("no timestamp at once")),
        };
        if ts < memory.commit_ts {
            return Ok(Err("a read above the oracle's timestamps was served"));
        }
        self.safe_point.check(ts)?;
        // Only a lock can be in the way. A prewrite's other checks look for records at or
        // above the start_ts, and none can exist at or above `ts`: it was issued just now,
        // in this leader's term (a former leader's timestamps are all below its window);
        // a later one is committed only through this key's latch (one phase) or its lock
        // (two phases), and the latch is held and the lock checked here; and no other
        // transaction has `ts`, so no rollback record sits at it. Not scanning the
        // records saves an engine iterator per write.
        let reader = MvccReader::new(&self.db, None);
        if reader.load_lock(key)?.is_some() {
            return Ok(Err("the key is locked"));
        }
        #[cfg(test)]
        {
            let hook = self.one_pc_hook.lock().as_ref().map(|h| Arc::clone(&h.0));
            if let Some(hook) = hook {
                hook(ts);
            }
        }
        let mut txn = MvccTxn::new(ts);
        actions::one_pc_write(&mut txn, mutation, ts);
        Ok(Ok(PreparedBlind {
            ts,
            ticket,
            batch: txn.into_parts().0,
            _memory: memory,
            _latches: latches,
            _gate: gate,
        }))
    }
}

/// The one answer of a batch of one write.
fn only_answer(answers: Vec<Result<BlindWrite>>) -> Result<BlindWrite> {
    answers.into_iter().next().unwrap_or_else(|| {
        Err(MvccError::OutcomeUnknown(
            "a blind write got no answer".into(),
        ))
    })
}
