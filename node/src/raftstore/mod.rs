//! Multi-raft replication: many shard replicas, one raft-engine log, one ready loop.
//!
//! Each shard replica is a raft-rs `RawNode` ([`Peer`]) whose log, hard state and conf state
//! live in the node's single raft-engine instance ([`LogStore`]), keyed by [`ShardId`]. The
//! [`RaftStore`] drives all replicas through one loop, in the order raft-rs prescribes
//! (its `five_mem_node` example), with the persistence of every replica folded into one write:
//!
//! ```text
//!   tick() / step(msg) / propose()            (driver: a timer, the network, clients)
//!                 │
//!   begin_ready()  ── for each replica with a ready ────────────────────────────┐
//!   │  1. send messages            (followers may receive before we persist)    │
//!   │  2. apply snapshot           (log replaced up to the snapshot index)      │
//!   │  3. apply committed entries  (conf changes -> raft-rs, all -> Apply)      │
//!   │  4. stage entries + hard state + apply state into the shared batch        │
//!   └───────────────────────────────────────────────────────────────────────────┘
//!                 │
//!   take_outcomes()   what step 3 settled: those entries were already durable here,
//!                 │   so the driver answers them before the write below (D167)
//!   complete_ready(): LogStore::write(batch, sync)   one raft-engine write, one fsync
//!                 │
//!   ── for each replica again ──────────────────────────────────────────────────┐
//!   │  5. send persisted messages  (votes, append responses: only after fsync)  │
//!   │  6. advance                   -> light ready                              │
//!   │  7. light ready: send messages, apply newly committed entries             │
//!   │  8. advance apply                                                          │
//!   └───────────────────────────────────────────────────────────────────────────┘
//!                 │
//!   build requested snapshots   (leaders: Apply::snapshot at the applied index)
//!                 │
//!   take_outcomes()   the rest: proposals applied or refused by the state machine, or
//!                     NotLeader when a new leader dropped them
//! ```
//!
//! The store reads no clock and starts no thread: [`driver`] runs it on a thread with a
//! clock (the node talks to it through a [`RaftHandle`]), and tests drive it round by round
//! (`cluster_tests`, over a deterministic in-memory network). [`transport`] carries its
//! messages between nodes over tonic.
//!
//! Files: [`types`] (ids, epoch, key range), [`error`], [`log_store`] (raft-engine layout),
//! [`storage`] (`raft::Storage` per replica), [`peer`] (one replica), [`store`] (the loop),
//! [`apply`] (the state machine and transport seams), [`driver`] (the thread, handle, reads
//! and lease), [`transport`] (gRPC sender and receiver, routing, snapshots, fault injection),
//! [`rng`] (seeded generator), [`logger`] (slog to tracing), [`command`] (the bytes of a
//! normal entry), [`kv_apply`] (the state machine over the LSM), [`snapshot`] (the bytes of a
//! shard snapshot), [`compaction`] (when to compact the log).

pub mod apply;
pub mod command;
pub mod compaction;
pub mod driver;
pub mod error;
pub mod kv_apply;
pub mod log_fs;
pub mod log_store;
pub mod logger;
pub mod members;
pub mod peer;
pub mod rng;
pub mod snapshot;
pub mod storage;
pub mod store;
pub mod transport;
pub mod types;

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod grpc_cluster_tests;
#[cfg(test)]
mod kv_apply_tests;
#[cfg(test)]
mod leader_read_tests;
#[cfg(test)]
mod log_store_tests;
#[cfg(test)]
mod lsm_cluster_tests;
#[cfg(test)]
mod sim;

pub use apply::{Apply, ApplyOutcome, ProposalResult, RaftMessage, Transport};
pub use command::{Op, RaftCommand};
pub use compaction::{LogCompactionPolicy, LogView};
pub use driver::{
    DriverConfig, DriverStats, LeaderView, PeerProgress, RaftDriver, RaftHandle, ReadMode,
    ReplicaStatus, Role,
};
pub use error::{RaftStoreError, Result};
pub use kv_apply::{KvApply, KvApplyConfig, RemovalHook, ShardState};
pub use log_store::{LogState, LogStore, LogWriteBatch};
pub use members::{MemberAddr, MemberDirectory};
pub use peer::{Peer, PeerConfig};
pub use storage::PeerStorage;
pub use store::{LoopStats, RaftStore};
pub use types::{KeyRange, NodeId, PeerId, ProposalId, ReplicaMeta, ShardEpoch, ShardId};
