//! Where a Raft message goes: replica -> node ([`NodeResolver`]), node -> address
//! ([`AddressBook`]).
//!
//! A raft-rs message names its destination replica (`msg.to`, a [`PeerId`] inside one
//! shard's group). The transport connects to nodes, so it first asks the resolver which node
//! hosts that replica, then the address book where that node listens. Today every node hosts
//! one replica per shard whose peer id *is* the node id ([`PeerIdIsNodeId`]); the sharding
//! milestone, where a node hosts replicas with their own ids, replaces the resolver without
//! touching the transport. The address book is updated while the node runs (nodes join
//! later, a pod moves); a connection notices its node's address changed and reconnects.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::super::types::{NodeId, PeerId, ShardId};

/// Maps a replica of a shard to the node hosting it.
pub trait NodeResolver: Send + Sync + std::fmt::Debug {
    /// The node hosting `peer` of `shard`, if known.
    fn node_of(&self, shard: ShardId, peer: PeerId) -> Option<NodeId>;
}

/// The resolver of a cluster where replica ids are node ids (one replica per node and shard,
/// as bootstrapped today).
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerIdIsNodeId;

impl NodeResolver for PeerIdIsNodeId {
    fn node_of(&self, _shard: ShardId, peer: PeerId) -> Option<NodeId> {
        (peer.0 != 0).then_some(NodeId(peer.0))
    }
}

#[derive(Debug, Clone)]
struct Entry {
    addr: String,
    generation: u64,
}

#[derive(Debug, Default)]
struct Book {
    entries: HashMap<NodeId, Entry>,
    generation: u64,
}

/// Node id -> `host:port` of its internal port; shared and updatable at run time.
#[derive(Debug, Clone, Default)]
pub struct AddressBook(Arc<RwLock<Book>>);

impl AddressBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or moves) `node`'s address, `host:port`; open connections to it reconnect.
    pub fn set(&self, node: NodeId, addr: impl Into<String>) {
        let mut b = self.0.write();
        b.generation += 1;
        let generation = b.generation;
        b.entries.insert(
            node,
            Entry {
                addr: addr.into(),
                generation,
            },
        );
    }

    /// Forgets `node`'s address; messages to it are dropped until it is set again.
    pub fn remove(&self, node: NodeId) {
        let mut b = self.0.write();
        b.generation += 1;
        b.entries.remove(&node);
    }

    /// `node`'s address.
    pub fn get(&self, node: NodeId) -> Option<String> {
        self.0.read().entries.get(&node).map(|e| e.addr.clone())
    }

    /// `node`'s address and the version of that entry.
    pub(super) fn lookup(&self, node: NodeId) -> Option<(String, u64)> {
        self.0
            .read()
            .entries
            .get(&node)
            .map(|e| (e.addr.clone(), e.generation))
    }

    /// The version of `node`'s entry (changes whenever the address does).
    pub(super) fn generation(&self, node: NodeId) -> Option<u64> {
        self.0.read().entries.get(&node).map(|e| e.generation)
    }
}
