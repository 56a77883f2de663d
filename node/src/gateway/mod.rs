//! Any node is a gateway: the coordinator reaches a shard's storage wherever its leader is.
//!
//! ```text
//!   client ─► any node's Txn/Kv service ─► TxnManager (coordinator: buffers, 2PC, waits)
//!                                              │ ShardClient
//!                                              ▼
//!                                          ShardRouter ──── LeaderLocator (Raft status)
//!                         this node leads ┌────┴─────┐ another node leads
//!                                         ▼          ▼
//!                                  local Storage   internal port ─► leader's ShardService
//!                                  (ShardWriter)   (Connections:      │ admit: shard, epoch,
//!                                                   one channel        │ leads and ready?
//!                                                   per address)       ▼
//!                                                               leader's Storage
//!
//!   timestamps:  TxnManager ─► BatchingTso ─► RoutedTso ─┬─ local oracle (this node leads)
//!                                                        └─ GetTimestamps(n) at the leader
//! ```
//!
//! - [`ShardRouter`] (`router.rs`) is the coordinator's [`ShardClient`](crate::txn::ShardClient)
//!   on every node: it runs a command on this node's replica when the [`LeaderLocator`]
//!   says it leads and is ready, and on the leader's [`ShardService`] otherwise, following
//!   `NotLeader` hints, adopting the leader's epoch, and re-sending what is safe to re-send.
//! - [`ShardService`] (`service.rs`) is the leader's side, mounted on the internal port:
//!   it refuses what it must not serve and runs the rest on its `Storage`; it never forwards.
//! - [`RoutedTso`] (`tso.rs`) reaches the oracle the same way; [`Connections`] (`remote.rs`)
//!   holds the channels both use; `codec.rs` maps the protocol's messages, errors above all,
//!   to the storage layer's types, so the coordinator cannot tell a remote leader from a
//!   local one.
//!
//! GC and the stale-lock resolver are leader work: they run where
//! [`TxnManager::local_leader`](crate::txn::TxnManager::local_leader) is `Some`.

mod codec;
mod remote;
mod router;
mod service;
mod tso;

#[cfg(test)]
mod tests;

use crate::raftstore::{ShardEpoch, ShardId};

pub use remote::{Connections, INTERNAL_MESSAGE_BYTES};
pub use router::{RouterConfig, RouterStats, ShardRouter};
pub use service::{shard_service, ServiceHook, ShardService, MAX_WAIT};
pub use tso::RoutedTso;

/// A node and the address of its internal port (`host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddr {
    /// The node's id.
    pub node_id: u64,
    /// Its internal port's address.
    pub addr: String,
}

/// What the gateway needs to know about leadership; the server implements it over the
/// Raft driver's status (role, term, leader, leader readiness) and its address book. Every
/// method is called on the request path, some on async threads: answer from memory,
/// without blocking.
pub trait LeaderLocator: Send + Sync + std::fmt::Debug {
    /// Whether this node's replica of `shard` leads it and is ready to serve (it has
    /// applied an entry of its own term, so its state includes every committed write).
    fn local_leader_ready(&self, shard: ShardId) -> bool;

    /// The node believed to lead `shard`, with its internal address, if known.
    fn leader(&self, shard: ShardId) -> Option<NodeAddr>;

    /// The internal address of node `node_id`, if known (to follow a `NotLeader` hint).
    fn address(&self, node_id: u64) -> Option<String>;

    /// The epoch of this node's replica of `shard`; `None` if it holds no replica.
    fn local_epoch(&self, shard: ShardId) -> Option<ShardEpoch>;
}
