//! Strata's wire contract: the public gRPC API, compiled from `proto/strata/v1/*.proto`.
//!
//! ```text
//!   common.proto   Isolation, KeyValue, GetResult, ErrorReason, ErrorDetail; limits, timings
//!   kv.proto       service Kv:    Get, BatchGet, Put, Delete, Scan   (each auto-committed);
//!                                 Batch (many of them over one stream)
//!   txn.proto      service Txn:   Begin, Get, BatchGet, Scan, Put, Delete, Commit, Rollback,
//!                                 Heartbeat, Execute (one-shot: preconditions, reads, writes)
//!   admin.proto    service Admin: Status, GetGcSafePoint
//!
//!   internal/v1/raft.proto   service Raft: Stream, Snapshot   (node to node, internal port)
//!   internal/v1/shard.proto  service Shard: a gateway's transactional commands and
//!                            GetTimestamps at a shard's leader (node to node, internal port)
//!   internal/v1/membership.proto  service Membership: Admin membership calls passed to
//!                            the data shard's leader, and Members for joining nodes
//! ```
//!
//! The `.proto` files are the contract: clients in any language are written from them alone,
//! so every message and field there is documented. This crate adds, for the Rust server and
//! clients, the generated prost messages and tonic services ([`v1`]), the file descriptor set
//! (for gRPC reflection), the limits as constants ([`limits`]), and the error encoding
//! ([`ErrorDetail::into_status`] and [`ErrorDetail::from_status`], and [`CallError`] for a
//! `Kv.Batch` call's status): an [`ErrorDetail`] travels in
//! the status details as a `google.rpc.Status` holding one `google.protobuf.Any`, the standard
//! gRPC rich error model that other languages' gRPC libraries decode.
//!
//! [`ErrorDetail`]: v1::ErrorDetail
//! [`ErrorDetail::into_status`]: v1::ErrorDetail::into_status
//! [`ErrorDetail::from_status`]: v1::ErrorDetail::from_status
//! [`CallError`]: v1::CallError

mod error;
pub mod limits;

/// The generated messages, clients (`*_client`) and servers (`*_server`) of package
/// `strata.v1`.
pub mod v1 {
    tonic::include_proto!("strata.v1");

    /// The encoded `FileDescriptorSet` of the `strata.v1` protos, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("strata_v1_descriptor");
}

/// The internal node-to-node protocol (package `strata.internal.v1`): served on a node's
/// internal port only, never part of the public API, and not in [`v1::FILE_DESCRIPTOR_SET`].
pub mod internal {
    /// Raft traffic between nodes (batched message streams and chunked snapshots), a
    /// gateway's commands at a shard's leader, and membership calls passed to the leader.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/internal/strata.internal.v1.rs"));
    }
}

pub use error::ERROR_DETAIL_TYPE_URL;
