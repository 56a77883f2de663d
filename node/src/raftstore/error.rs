//! The raftstore's one error type.
//!
//! Errors from the layer's two libraries (raft-rs and raft-engine) are converted here, at the
//! boundary. [`RaftStoreError::NotLeader`] is the retryable one a client learns from: it names
//! the leader this replica believes in, when it knows one. The driver adds its own retryable
//! ones (`LeaderNotReady`, `Timeout`, `Busy`) and `Stopped`, which is not: the node itself
//! cannot serve until it is restarted.

use super::types::{PeerId, ShardId};

/// Everything that can go wrong in the raftstore.
#[derive(Debug, thiserror::Error)]
pub enum RaftStoreError {
    /// This replica does not lead the shard (or lost leadership before the proposal was
    /// committed). Retryable at the hinted leader.
    #[error("{shard}: not leader (leader hint: {leader:?})")]
    NotLeader {
        /// The shard the request was for.
        shard: ShardId,
        /// The leader this replica knows of, if any.
        leader: Option<PeerId>,
    },
    /// No replica of this shard is hosted here.
    #[error("{0}: no replica on this node")]
    ShardNotFound(ShardId),
    /// A replica of this shard already exists here.
    #[error("{0}: replica already exists")]
    ShardExists(ShardId),
    /// The raft log or its state on disk is damaged or inconsistent.
    #[error("raft log corrupt: {0}")]
    Corruption(String),
    /// The request cannot be served as asked (bad conf change, index out of range...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// An error from raft-rs.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// An error from raft-engine.
    #[error("raft-engine: {0}")]
    Engine(#[from] raft_engine::Error),
    /// An error from the state machine the entries are applied to.
    #[error("apply: {0}")]
    Apply(String),
    /// A protobuf message could not be encoded or decoded.
    #[error("protobuf: {0}")]
    Protobuf(#[from] protobuf::ProtobufError),
    /// This replica leads, but has not yet applied an entry of its own term, so its state
    /// machine may miss writes an earlier leader acknowledged. Retryable (soon, same replica).
    #[error("{shard}: leader not ready yet (its term's first entry is not applied)")]
    LeaderNotReady {
        /// The shard the request was for.
        shard: ShardId,
    },
    /// The request did not complete in time. For a read this is retryable; the driver never
    /// times out a proposal it has handed to Raft (its outcome would be unknown).
    #[error("timed out: {0}")]
    Timeout(String),
    /// Too many requests are waiting in the driver; retryable after a while.
    #[error("busy: {0}")]
    Busy(String),
    /// The driver is not running: shut down, or stopped by a fatal error (a failed log write,
    /// after which raft-rs cannot continue: the node must be restarted).
    #[error("raft driver stopped: {0}")]
    Stopped(String),
    /// An I/O error outside the log (a listener, a thread).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl RaftStoreError {
    /// True when the same request may succeed if sent again (possibly elsewhere).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RaftStoreError::NotLeader { .. }
                | RaftStoreError::LeaderNotReady { .. }
                | RaftStoreError::Timeout(_)
                | RaftStoreError::Busy(_)
        )
    }

    /// Converts this error into the form raft-rs's `Storage` trait must return.
    pub(crate) fn into_raft(self) -> raft::Error {
        match self {
            RaftStoreError::Raft(e) => e,
            other => raft::Error::Store(raft::StorageError::Other(Box::new(other))),
        }
    }
}

/// The raftstore's result type.
pub type Result<T> = std::result::Result<T, RaftStoreError>;
