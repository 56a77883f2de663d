//! [`ShardWriter`]: where a transactional command's batch goes, and what a read must wait for.
//!
//! `Storage` computes every write command under its key latches from the replica's current
//! state and hands the resulting batch to a writer. Two writers exist:
//!
//! - the server's, over the shard's Raft group (`server::replica`): the batch is proposed
//!   and the call returns once the entry is applied here, so the next command on the same
//!   keys (which waits for the latches) reads its effect; reads first pass a ReadIndex
//!   barrier, so a replica that lost its leadership never answers from a stale state;
//! - [`EngineWriter`], straight into the engine with a synced WAL write, for the unit tests of
//!   the transaction layer (the server has no second write path: a single node is a
//!   one-replica Raft group).
//!
//! A command is computed between [`ShardWriter::begin_write`] and [`ShardWriter::write`]. The
//! ticket names the leader term the state was read in: a batch computed in one term must not
//! commit in another (a leader that lost and regained leadership in between may have missed
//! the other leader's writes to the same keys), so the Raft writer carries the term in the
//! command and the state machine refuses it under any other term.

use std::future::Future;
use std::pin::Pin;

use crate::lsm::{Db, WriteBatch, WriteOptions};
use crate::mvcc::Result;

/// What [`ShardWriter::write_async`] returns.
pub type WriteFuture = Pin<Box<dyn Future<Output = Result<()>> + Send + 'static>>;

/// The state a command was computed from: the leader term (0 for [`EngineWriter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteTicket {
    /// The term this replica led in when the command read its state.
    pub term: u64,
}

/// Applies command batches to a shard and guards reads; see the module documentation.
pub trait ShardWriter: Send + Sync + std::fmt::Debug {
    /// Waits until this replica may compute a write command (it leads, and it has applied
    /// every entry committed before its term) and returns the ticket the batch must carry.
    /// `NotLeader` when it does not lead.
    fn begin_write(&self) -> Result<WriteTicket>;

    /// Makes `batch` part of the shard and returns once it is applied on this replica.
    /// `NotLeader` if it definitely was not applied; `OutcomeUnknown` if it may have been.
    fn write(&self, ticket: WriteTicket, batch: WriteBatch) -> Result<()>;

    /// [`begin_write`](ShardWriter::begin_write) without waiting: `Ok(None)` where it
    /// would wait (an election on, or this leader not ready yet). The asynchronous write
    /// path (D157) then takes the blocking one. By default it may wait.
    fn begin_write_now(&self) -> Result<Option<WriteTicket>> {
        self.begin_write().map(Some)
    }

    /// [`write`](ShardWriter::write) as a future that holds no thread while the batch
    /// commits: the same outcomes. By default the write is made at once, on the calling
    /// thread (the engine writer of tests syncs its WAL there).
    fn write_async(&self, ticket: WriteTicket, batch: WriteBatch) -> WriteFuture {
        let outcome = self.write(ticket, batch);
        Box::pin(std::future::ready(outcome))
    }

    /// Returns once this replica's state includes every write acknowledged anywhere before
    /// the call (a confirmed leader that has applied up to the read index). `NotLeader`
    /// when it does not lead.
    fn read_barrier(&self) -> Result<()>;

    /// [`read_barrier`](ShardWriter::read_barrier) as a future that holds no thread: the
    /// latest-read path (D162). By default the barrier is passed at once, on the calling
    /// thread.
    fn read_barrier_async(&self) -> WriteFuture {
        Box::pin(std::future::ready(self.read_barrier()))
    }
}

/// Writes straight into the engine, synced: the transaction layer's own tests.
#[derive(Debug, Clone)]
pub struct EngineWriter {
    db: Db,
}

impl EngineWriter {
    /// A writer into `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

impl ShardWriter for EngineWriter {
    fn begin_write(&self) -> Result<WriteTicket> {
        Ok(WriteTicket { term: 0 })
    }

    fn write(&self, _ticket: WriteTicket, batch: WriteBatch) -> Result<()> {
        self.db.write(batch, &WriteOptions::synced())?;
        Ok(())
    }

    fn read_barrier(&self) -> Result<()> {
        Ok(())
    }
}
