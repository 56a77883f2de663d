//! The raftstore's one error type.
//!
//! Errors from the layer's libraries (raft-rs, raft-engine and the LSM the state machine
//! writes) are converted here, at the boundary. The retryable ones are those a client learns
//! from: [`RaftStoreError::NotLeader`] names the leader this replica believes in, when it
//! knows one; [`RaftStoreError::StaleEpoch`], [`RaftStoreError::StaleTerm`],
//! [`RaftStoreError::WrongShard`] and [`RaftStoreError::KeyNotInShard`] reject a command the
//! state machine refused to apply, on every replica alike, because it was routed or computed
//! under an out-of-date view of the shard. The driver adds its own retryable ones
//! (`LeaderNotReady`, `Timeout`, `Busy`) and `Stopped`, which is not: the node itself cannot
//! serve until it is restarted.

use super::types::{PeerId, ShardEpoch, ShardId};

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
    /// The command was built for an older (or newer) shape of the shard: its epoch's
    /// `version` differs from the one the shard had when the command was applied. Nothing of
    /// it was applied; retryable once the proposer has the shard's current epoch.
    #[error("{shard}: stale epoch (command {requested:?}, shard {current:?})")]
    StaleEpoch {
        /// The shard that refused the command.
        shard: ShardId,
        /// The epoch the command carried.
        requested: ShardEpoch,
        /// The shard's epoch when the command was applied.
        current: ShardEpoch,
    },
    /// The command's writes were computed under another leader term than the one its entry
    /// was committed in. Nothing of it was applied; retryable (compute it again).
    #[error("{shard}: command computed in term {computed}, committed in term {entry}")]
    StaleTerm {
        /// The shard that refused the command.
        shard: ShardId,
        /// The term the command was computed in.
        computed: u64,
        /// The term of its entry.
        entry: u64,
    },
    /// The command names another shard than the group it was committed in. Nothing of it
    /// was applied; retryable at the right shard.
    #[error("{shard}: command for {requested}")]
    WrongShard {
        /// The shard whose log held the command.
        shard: ShardId,
        /// The shard the command names.
        requested: ShardId,
    },
    /// A command writes a key outside the shard's range. Nothing of it was applied;
    /// retryable once the proposer has the shard's current range.
    #[error("{shard}: key {key:?} is outside the shard's range")]
    KeyNotInShard {
        /// The shard that refused the command.
        shard: ShardId,
        /// The first key found outside the range.
        key: Vec<u8>,
    },
    /// A snapshot of the shard would pass the configured size limit.
    #[error("{shard}: snapshot passes {limit} bytes (the configured maximum)")]
    SnapshotTooLarge {
        /// The shard whose snapshot was being built.
        shard: ShardId,
        /// The configured maximum, in bytes.
        limit: u64,
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
    /// A snapshot's bytes are damaged, truncated or out of order.
    #[error("snapshot corrupt: {0}")]
    SnapshotCorrupt(String),
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
    /// The storage engine the state machine applies to failed.
    #[error("lsm: {0}")]
    Lsm(#[from] crate::lsm::Error),
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
                | RaftStoreError::StaleEpoch { .. }
                | RaftStoreError::StaleTerm { .. }
                | RaftStoreError::WrongShard { .. }
                | RaftStoreError::KeyNotInShard { .. }
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
