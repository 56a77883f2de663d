//! The report of `strata bench run`: per operation type ops, ops/s, percentiles, errors and
//! aborts, the bank invariant, and what the servers spent, as text or JSON lines.

use std::io::Write;

use anyhow::Result;
use serde_json::json;

use super::super::engine::OutputFormat;
use super::super::server_cost::ServerCost;
use super::{ClusterBenchConfig, ClusterReport, ClusterWorkload, Rpc};

/// How the run's calls travelled, as the report names it.
fn rpc_name(config: &ClusterBenchConfig) -> &'static str {
    match (config.workload, config.rpc) {
        (ClusterWorkload::Bank, _) | (_, Rpc::Unary) => "unary",
        (_, Rpc::Batch) => "Kv.Batch streams, one per connection",
    }
}

pub(super) fn write_report(
    config: &ClusterBenchConfig,
    r: &ClusterReport,
    out: &mut dyn Write,
) -> Result<()> {
    match config.format {
        OutputFormat::Json => {
            for op in &r.ops {
                writeln!(out, "{}", serde_json::to_string(op)?)?;
            }
            let mut total = serde_json::to_value(&r.total)?;
            total["seconds"] = json!(r.seconds);
            total["distribution"] = json!(config.distribution);
            total["endpoints"] = json!(r.endpoints);
            total["connections"] = json!(r.connections);
            total["rpc"] = json!(rpc_name(config));
            let s = &r.server;
            total["server_nodes"] = json!(s.nodes.len());
            total["server_cpu_seconds"] = json!(s.cpu_seconds);
            total["server_cpu_us_per_op"] = json!(s.cpu_us_per_op);
            total["raft_log_syncs"] = json!(s.raft_log_syncs);
            total["engine_wal_syncs"] = json!(s.engine_wal_syncs);
            total["fsyncs_per_op"] = json!(s.fsyncs_per_op);
            total["proposals_per_ready"] = json!(s.proposals_per_ready);
            total["server_per_node"] = json!(s.nodes);
            total["server_unmeasured"] = json!(s.unmeasured);
            if let Some(b) = r.bank {
                total["balance_sum_before"] = json!(b.sum_before);
                total["balance_sum_after"] = json!(b.sum_after);
                total["invariant_holds"] = json!(b.holds());
            }
            writeln!(out, "{total}")?;
        }
        OutputFormat::Text => {
            writeln!(
                out,
                "{}: {} clients, {:.1} s, {}, {:?} key choice",
                config.workload.name(),
                config.clients,
                r.seconds,
                if config.workload == ClusterWorkload::Bank {
                    format!("{} accounts", config.accounts)
                } else {
                    format!("{} keys, {}-byte values", config.keys, config.value_size)
                },
                config.distribution,
            )?;
            if r.endpoints.len() > 1 || r.connections > 1 {
                writeln!(
                    out,
                    "  clients spread round-robin over {} connection{} to {}",
                    r.connections,
                    if r.connections == 1 { "" } else { "s" },
                    r.endpoints.join(", ")
                )?;
            }
            writeln!(out, "  calls: {}", rpc_name(config))?;
            writeln!(
                out,
                "  {:<10} {:>10} {:>12} {:>10} {:>10} {:>10} {:>8} {:>8}",
                "op", "ops", "ops/s", "p50 µs", "p95 µs", "p99 µs", "aborts", "errors"
            )?;
            for op in r.ops.iter().chain(std::iter::once(&r.total)) {
                writeln!(
                    out,
                    "  {:<10} {:>10} {:>12.0} {:>10.1} {:>10.1} {:>10.1} {:>7.2}% {:>8}",
                    op.op,
                    op.ops,
                    op.ops_per_sec,
                    op.p50_us,
                    op.p95_us,
                    op.p99_us,
                    op.abort_rate * 100.0,
                    op.errors
                )?;
            }
            write_server_cost(&r.server, out)?;
            if let Some(b) = r.bank {
                writeln!(
                    out,
                    "  balance sum: {} (before: {}) {}",
                    b.sum_after,
                    b.sum_before,
                    if b.holds() { "ok" } else { "MISMATCH" }
                )?;
            }
        }
    }
    Ok(())
}

/// The text lines of the servers' cost.
pub(super) fn write_server_cost(s: &ServerCost, out: &mut dyn Write) -> Result<()> {
    if s.nodes.is_empty() {
        writeln!(out, "  servers: not measured (no node sent counters)")?;
    } else {
        writeln!(
            out,
            "  servers ({} nodes): CPU {:.1} µs/op ({:.2} s), fsyncs {:.3}/op \
             (raft log {}, engine WAL {}), proposals/ready {:.2}",
            s.nodes.len(),
            s.cpu_us_per_op,
            s.cpu_seconds,
            s.fsyncs_per_op,
            s.raft_log_syncs,
            s.engine_wal_syncs,
            s.proposals_per_ready,
        )?;
        let blind = s.blind_writes_committed + s.blind_writes_declined;
        if blind > 0 {
            writeln!(
                out,
                "    blind writes: {} committed, {} declined ({:.1}%, run as transactions)",
                s.blind_writes_committed,
                s.blind_writes_declined,
                100.0 * s.blind_writes_declined as f64 / blind as f64,
            )?;
        }
        let reads = s.latest_reads_served + s.latest_reads_declined;
        if reads > 0 {
            writeln!(
                out,
                "    latest reads: {} keys served, {} declined ({:.1}%, read in transactions)",
                s.latest_reads_served,
                s.latest_reads_declined,
                100.0 * s.latest_reads_declined as f64 / reads as f64,
            )?;
        }
        for n in &s.nodes {
            writeln!(
                out,
                "    node {}: CPU {:.2} s, raft log fsyncs {}, WAL fsyncs {}, proposals {} in {} readies",
                n.node_id,
                n.cpu_seconds,
                n.raft_log_syncs,
                n.engine_wal_syncs,
                n.raft_proposals,
                n.raft_proposal_readies,
            )?;
        }
    }
    if !s.unmeasured.is_empty() {
        writeln!(out, "  not measured: {}", s.unmeasured.join(", "))?;
    }
    Ok(())
}
