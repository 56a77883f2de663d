//! Benchmarks behind `strata bench ...`, kept in the library so the CLI stays a thin shell.
//!
//! ```text
//!   strata bench engine ──► engine::run(config, out)
//!                             │  for each engine (Strata's LSM, fjall when compiled in):
//!                             │    fresh db ─► fillseq
//!                             │    fresh db ─► fillrandom ─► overwrite ─► readrandom
//!                             │                            ─► readseq ─► seekrandom
//!                             ▼
//!                           one result per (workload, engine) ─► text tables or JSON lines
//! ```
//!
//! `strata bench run` ──► [`cluster::run`]: a YCSB-style client benchmark against a running
//! node over gRPC (see [`cluster`]), with what it cost the servers ([`server_cost`]).
//!
//! `strata bench recovery` ──► [`recovery::run`]: load a node, `kill -9` it, time its restart.
//!
//! The pieces are one idea per file: [`generator`] (deterministic keys, values and PRNG),
//! [`histogram`] (log-bucketed latencies), [`procfs`] (bytes written and peak RSS as the
//! kernel counts them) and [`engine`] (the engine trait, its adapters, the workloads and the
//! report). Errors are `anyhow`: this is a tool's edge, not a storage layer.

pub mod cluster;
pub mod engine;
pub mod generator;
pub mod histogram;
pub mod procfs;
pub mod recovery;
pub mod server_cost;
