//! Percolator transactions: per-key actions, latched commands ([`Storage`]) and the
//! coordinator of interactive transactions ([`TxnManager`]).
//!
//! An *action* is a pure function of what an [`MvccReader`](crate::mvcc::MvccReader) sees
//! and its arguments: it either fails with an [`MvccError`](crate::mvcc::MvccError) or adds
//! writes to an [`MvccTxn`](crate::mvcc::MvccTxn). It never touches the engine itself, so
//! the same action runs on a single node (batch applied directly) and on a replicated shard
//! (batch proposed through Raft). Commands must serialise actions on the same keys (key
//! latches) so that the state an action read is still the state its batch applies to.

pub mod actions;
pub mod concurrency;
pub mod latches;
pub mod limits;
pub mod lock_wait;
pub mod manager;
pub mod node_meta;
pub mod overlay;
pub mod range_locks;
pub mod resolver;
pub mod shard_client;
pub mod shard_writer;
pub mod storage;
pub mod txn_id;

#[cfg(test)]
mod latest_read_tests;
#[cfg(test)]
mod limits_tests;
#[cfg(test)]
mod lock_wait_tests;
#[cfg(test)]
mod manager_tests;
#[cfg(test)]
mod one_pc_tests;
#[cfg(test)]
mod outcome_tests;

pub use manager::{
    ConflictKind, ExecuteRequest, ExecuteResponse, Isolation, Precondition, TxnConfig, TxnError,
    TxnId, TxnManager, TxnState,
};
pub use node_meta::NodeMeta;
pub use shard_client::{LockWait, RemoteWait, ShardClient};
pub use shard_writer::{EngineWriter, ShardWriter, WriteFuture, WriteTicket};
pub use storage::{
    BlindWrite, BlindWriteCounts, LatestRead, LatestReadCounts, LatestReads, Storage,
};
pub use txn_id::TxnIds;

/// Tests: a runtime for the asynchronous paths (blind writes spawn their tasks).
#[cfg(test)]
pub(crate) mod test_runtime {
    /// Runs `f` to completion on a current-thread runtime of its own.
    pub(crate) fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a test runtime")
            .block_on(f)
    }
}
