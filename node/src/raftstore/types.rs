//! Identifiers shared by the raftstore: which shard, which replica, which configuration.
//!
//! Every internal request names a shard and carries that shard's epoch, so a request sent
//! under an old configuration or range can be told apart and refused with a hint. This layer
//! runs one data shard today, but the types already have the shape multi-raft needs: the log
//! store keys everything by [`ShardId`], and a replica is named by its [`PeerId`] inside the
//! shard's Raft group.

use std::fmt;

/// A shard (a key range replicated by one Raft group). Its raw value is the raft-engine
/// group id under which the shard's log and state live on every node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u64);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard-{}", self.0)
    }
}

/// A replica inside one shard's Raft group (raft-rs's node id). Never 0: raft-rs reserves 0
/// for "no node".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer-{}", self.0)
    }
}

/// A storage node of the cluster (the unit the transport connects to). Never 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node-{}", self.0)
    }
}

/// The version of a shard's shape, as TiKV's region epoch: `conf_ver` grows with every
/// membership change, `version` with every split or merge of the range. A request whose epoch
/// differs from the replica's is stale.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ShardEpoch {
    /// Bumped by each applied membership change.
    pub conf_ver: u64,
    /// Bumped by each split or merge of the shard's range.
    pub version: u64,
}

/// What a node knows about the replica it hosts: stored beside the replica's log so that a
/// restarted node finds its replicas again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaMeta {
    /// The shard this replica belongs to.
    pub shard: ShardId,
    /// This replica's id in the shard's Raft group.
    pub peer: PeerId,
    /// The shard's epoch as this replica last saw it.
    pub epoch: ShardEpoch,
}

/// A caller's handle on one proposal; the outcome is reported under the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProposalId(pub u64);

/// The keys a shard holds, `[start, end)` (`end: None`: to the end of the key space). Keys
/// are compared as stored in the engine's replicated families: for MVCC data, memcomparable
/// encoded user keys, whose order a timestamp suffix does not change (no encoding is a prefix
/// of another), so one range covers a key's lock, values and commit records alike.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyRange {
    /// First key of the shard.
    pub start: Vec<u8>,
    /// First key after the shard, or `None` for no upper bound.
    pub end: Option<Vec<u8>>,
}

impl KeyRange {
    /// Every key.
    pub fn all() -> KeyRange {
        KeyRange::default()
    }

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|e| key < e)
    }

    /// Whether every key of `[start, end)` (`end: None`: unbounded) lies in the range.
    pub fn covers(&self, start: &[u8], end: Option<&[u8]>) -> bool {
        if start < self.start.as_slice() {
            return false;
        }
        match (self.end.as_deref(), end) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => theirs <= mine,
        }
    }
}
