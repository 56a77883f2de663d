//! Strata's integration-test crate.
//!
//! Multi-process cluster tests (real `strata-node` processes on 127.0.0.1, fault injection,
//! workloads) live here once the server exists; they check the histories they record with
//! `strata::check::history`, the same checker the node's own tests use. Engine-level crash
//! tests, which need only the storage engine, live beside it in `node/tests/`.
