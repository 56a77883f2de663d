//! Strata's wire contract.
//!
//! This crate will compile `proto/*.proto` (kv, txn, admin, meta, raft) into tonic/prost
//! types. The storage-engine milestone has no network API yet, so the crate holds no
//! generated code; the transactions milestone adds the services and their build step.
//! Keeping tonic out of the build until then keeps CI fast.
