//! Request metrics and their Prometheus text rendering.
//!
//! Per RPC: a request counter and a latency histogram with fixed buckets; per error reason:
//! a counter. Engine and transaction gauges are rendered from the live [`Stats`] at scrape
//! time, so nothing has to be copied in the background.
//!
//! [`NodeCounters`] are the process and write-path counters a benchmark divides by the
//! operations it ran (CPU seconds, raft log and WAL fsyncs, proposals per ready): rendered
//! here as `process_cpu_seconds_total` (the name Prometheus client libraries use) and
//! `strata_raft_*`, and sent in `Admin.Status` as `counters`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use parking_lot::Mutex;

use crate::lsm::Stats;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

#[derive(Debug, Default, Clone)]
struct RpcStats {
    count: u64,
    errors: u64,
    /// Cumulative counts per bucket of `BUCKETS`.
    buckets: [u64; BUCKETS.len()],
    sum_seconds: f64,
}

/// The process and write-path counters of a node, cumulative since it started (see the
/// module comment).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NodeCounters {
    /// CPU time of the process (user + system, all threads); `None` where `/proc` is hidden.
    pub cpu_seconds: Option<f64>,
    /// Raft log writes.
    pub raft_log_writes: u64,
    /// Raft log writes fsynced.
    pub raft_log_syncs: u64,
    /// Storage engine WAL fsyncs.
    pub engine_wal_syncs: u64,
    /// Proposals handed to Raft.
    pub raft_proposals: u64,
    /// Readies that carried at least one proposal.
    pub raft_proposal_readies: u64,
    /// Ready-loop iterations with work.
    pub raft_readies: u64,
    /// Raft messages stepped.
    pub raft_messages_stepped: u64,
    /// Bytes of the raft log on disk (a gauge).
    pub raft_log_bytes: u64,
    /// Blind writes this replica committed as leader (D157).
    pub blind_writes_committed: u64,
    /// Blind writes it declined (run as transactions instead).
    pub blind_writes_declined: u64,
    /// Keys of latest reads this replica served as leader (D162).
    pub latest_reads_served: u64,
    /// Keys of latest reads it declined (read in transactions instead).
    pub latest_reads_declined: u64,
}

impl NodeCounters {
    /// The wire form for `Admin.Status`.
    pub fn to_proto(&self) -> strata_proto::v1::NodeCounters {
        strata_proto::v1::NodeCounters {
            cpu_seconds: self.cpu_seconds.unwrap_or(0.0),
            raft_log_writes: self.raft_log_writes,
            raft_log_syncs: self.raft_log_syncs,
            engine_wal_syncs: self.engine_wal_syncs,
            raft_proposals: self.raft_proposals,
            raft_proposal_readies: self.raft_proposal_readies,
            raft_readies: self.raft_readies,
            raft_messages_stepped: self.raft_messages_stepped,
            raft_log_bytes: self.raft_log_bytes,
            blind_writes_committed: self.blind_writes_committed,
            blind_writes_declined: self.blind_writes_declined,
            latest_reads_served: self.latest_reads_served,
            latest_reads_declined: self.latest_reads_declined,
        }
    }

    /// Appends the Prometheus text of these counters to `out`.
    pub fn render(&self, out: &mut String) {
        if let Some(cpu) = self.cpu_seconds {
            header(
                out,
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
            );
            let _ = writeln!(out, "process_cpu_seconds_total {cpu}");
        }
        let counters: [(&str, &str, u64); 10] = [
            (
                "strata_raft_log_writes_total",
                "Raft log (raft-engine) writes.",
                self.raft_log_writes,
            ),
            (
                "strata_raft_log_syncs_total",
                "Raft log writes fsynced.",
                self.raft_log_syncs,
            ),
            (
                "strata_raft_proposals_total",
                "Proposals handed to Raft.",
                self.raft_proposals,
            ),
            (
                "strata_raft_proposal_readies_total",
                "Raft readies (log writes) that carried at least one proposal.",
                self.raft_proposal_readies,
            ),
            (
                "strata_raft_readies_total",
                "Raft ready-loop iterations that had work.",
                self.raft_readies,
            ),
            (
                "strata_raft_messages_stepped_total",
                "Raft messages received from peers and stepped.",
                self.raft_messages_stepped,
            ),
            (
                "strata_blind_writes_committed_total",
                "Single-key writes committed as blind writes by this leader.",
                self.blind_writes_committed,
            ),
            (
                "strata_blind_writes_declined_total",
                "Blind writes this leader declined (run as transactions instead).",
                self.blind_writes_declined,
            ),
            (
                "strata_latest_reads_served_total",
                "Keys of latest reads this leader read at one timestamp behind one barrier.",
                self.latest_reads_served,
            ),
            (
                "strata_latest_reads_declined_total",
                "Keys of latest reads this leader declined (read in transactions instead).",
                self.latest_reads_declined,
            ),
        ];
        for (name, help, v) in counters {
            header(out, name, "counter", help);
            let _ = writeln!(out, "{name} {v}");
        }
        gauge(
            out,
            "strata_raft_log_bytes",
            "Bytes of the raft log on disk.",
            self.raft_log_bytes as f64,
        );
    }
}

/// Counters of the gRPC API.
#[derive(Debug, Default)]
pub struct Metrics {
    rpcs: Mutex<BTreeMap<&'static str, RpcStats>>,
    errors: Mutex<BTreeMap<(String, String), u64>>,
}

impl Metrics {
    /// Records one call of `method` that took `elapsed`; `error` is `(code, reason)` if it
    /// failed.
    pub fn record(&self, method: &'static str, elapsed: Duration, error: Option<(String, String)>) {
        let secs = elapsed.as_secs_f64();
        {
            let mut rpcs = self.rpcs.lock();
            let s = rpcs.entry(method).or_default();
            s.count += 1;
            s.sum_seconds += secs;
            for (bound, bucket) in BUCKETS.iter().zip(s.buckets.iter_mut()) {
                if secs <= *bound {
                    *bucket += 1;
                }
            }
            if error.is_some() {
                s.errors += 1;
            }
        }
        if let Some(key) = error {
            *self.errors.lock().entry(key).or_default() += 1;
        }
    }

    /// The Prometheus text exposition of these metrics, the engine's `stats` and the node
    /// gauges.
    pub fn render(&self, stats: &Stats, active_txns: usize, uptime: Duration) -> String {
        let mut out = String::new();
        let rpcs = self.rpcs.lock().clone();
        header(
            &mut out,
            "strata_rpc_requests_total",
            "counter",
            "gRPC calls by method.",
        );
        for (m, s) in &rpcs {
            let _ = writeln!(
                out,
                "strata_rpc_requests_total{{method=\"{m}\"}} {}",
                s.count
            );
        }
        header(
            &mut out,
            "strata_rpc_failures_total",
            "counter",
            "Failed gRPC calls by method.",
        );
        for (m, s) in &rpcs {
            let _ = writeln!(
                out,
                "strata_rpc_failures_total{{method=\"{m}\"}} {}",
                s.errors
            );
        }
        header(
            &mut out,
            "strata_rpc_duration_seconds",
            "histogram",
            "gRPC call latency by method.",
        );
        for (m, s) in &rpcs {
            for (bound, n) in BUCKETS.iter().zip(s.buckets.iter()) {
                let _ = writeln!(
                    out,
                    "strata_rpc_duration_seconds_bucket{{method=\"{m}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "strata_rpc_duration_seconds_bucket{{method=\"{m}\",le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "strata_rpc_duration_seconds_sum{{method=\"{m}\"}} {}",
                s.sum_seconds
            );
            let _ = writeln!(
                out,
                "strata_rpc_duration_seconds_count{{method=\"{m}\"}} {}",
                s.count
            );
        }
        header(
            &mut out,
            "strata_rpc_errors_total",
            "counter",
            "gRPC errors by status code and reason.",
        );
        for ((code, reason), n) in self.errors.lock().iter() {
            let _ = writeln!(
                out,
                "strata_rpc_errors_total{{code=\"{code}\",reason=\"{reason}\"}} {n}"
            );
        }
        gauge(
            &mut out,
            "strata_active_transactions",
            "Open interactive transactions.",
            active_txns as f64,
        );
        gauge(
            &mut out,
            "strata_uptime_seconds",
            "Seconds since the server started.",
            uptime.as_secs_f64(),
        );
        gauge(
            &mut out,
            "strata_engine_write_amplification",
            "SSTable bytes written per user byte.",
            stats.write_amplification(),
        );
        gauge(
            &mut out,
            "strata_engine_read_amplification",
            "SSTables probed per point read.",
            stats.read_amplification(),
        );
        gauge(
            &mut out,
            "strata_engine_space_amplification",
            "SSTable bytes per live byte.",
            stats.space_amplification(),
        );
        gauge(
            &mut out,
            "strata_engine_sst_bytes",
            "Bytes of all SSTables.",
            stats.total_sst_bytes as f64,
        );
        gauge(
            &mut out,
            "strata_engine_memtable_bytes",
            "Bytes held by memtables.",
            stats.memtable_bytes as f64,
        );
        gauge(
            &mut out,
            "strata_engine_immutable_memtables",
            "Memtables waiting to be flushed.",
            stats.immutable_memtables as f64,
        );
        gauge(
            &mut out,
            "strata_engine_live_bytes_estimate",
            "Estimated live bytes.",
            stats.live_bytes_estimate as f64,
        );
        gauge(
            &mut out,
            "strata_engine_block_cache_bytes",
            "Bytes held by the block cache.",
            stats.block_cache_usage as f64,
        );
        let counters: [(&str, &str, u64); 13] = [
            (
                "strata_engine_user_bytes_written_total",
                "Key and value bytes written by callers.",
                stats.user_bytes_written,
            ),
            (
                "strata_engine_wal_bytes_written_total",
                "Bytes appended to the WAL.",
                stats.wal_bytes_written,
            ),
            (
                "strata_engine_wal_syncs_total",
                "WAL fsyncs.",
                stats.wal_syncs,
            ),
            (
                "strata_engine_flushes_total",
                "Memtable flushes.",
                stats.flushes,
            ),
            (
                "strata_engine_compactions_total",
                "Merging compactions.",
                stats.compactions,
            ),
            (
                "strata_engine_compaction_bytes_read_total",
                "Bytes read by compactions.",
                stats.compaction_bytes_read,
            ),
            (
                "strata_engine_compaction_bytes_written_total",
                "Bytes written by compactions.",
                stats.compaction_bytes_written,
            ),
            (
                "strata_engine_gets_total",
                "Point reads served by the engine.",
                stats.gets,
            ),
            (
                "strata_engine_block_cache_hits_total",
                "Block cache hits.",
                stats.block_cache_hits,
            ),
            (
                "strata_engine_block_cache_misses_total",
                "Block cache misses.",
                stats.block_cache_misses,
            ),
            (
                "strata_engine_write_stalls_total",
                "Writes slowed or stopped by back-pressure.",
                stats.write_stalls,
            ),
            (
                "strata_engine_write_stall_micros_total",
                "Microseconds writers spent stalled.",
                stats.write_stall_micros,
            ),
            (
                "strata_engine_background_errors_total",
                "Background flush or compaction failures.",
                stats.background_errors,
            ),
        ];
        for (name, help, v) in counters {
            header(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {v}");
        }
        header(
            &mut out,
            "strata_engine_level_files",
            "gauge",
            "SSTables per level.",
        );
        for (i, l) in stats.levels.iter().enumerate() {
            let _ = writeln!(
                out,
                "strata_engine_level_files{{level=\"{i}\"}} {}",
                l.files
            );
        }
        header(
            &mut out,
            "strata_engine_level_bytes",
            "gauge",
            "SSTable bytes per level.",
        );
        for (i, l) in stats.levels.iter().enumerate() {
            let _ = writeln!(
                out,
                "strata_engine_level_bytes{{level=\"{i}\"}} {}",
                l.bytes
            );
        }
        header(
            &mut out,
            "strata_engine_level_score",
            "gauge",
            "Compaction score per level.",
        );
        for (i, l) in stats.levels.iter().enumerate() {
            let _ = writeln!(
                out,
                "strata_engine_level_score{{level=\"{i}\"}} {}",
                l.score
            );
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_histograms_and_error_counts() {
        let m = Metrics::default();
        m.record("kv.Get", Duration::from_micros(300), None);
        m.record(
            "kv.Get",
            Duration::from_secs(2),
            Some(("Aborted".into(), "WRITE_CONFLICT".into())),
        );
        let text = m.render(&Stats::default(), 3, Duration::from_secs(5));
        assert!(
            text.contains("strata_rpc_requests_total{method=\"kv.Get\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("strata_rpc_duration_seconds_bucket{method=\"kv.Get\",le=\"0.0005\"} 1")
        );
        assert!(
            text.contains("strata_rpc_duration_seconds_bucket{method=\"kv.Get\",le=\"+Inf\"} 2")
        );
        assert!(
            text.contains("strata_rpc_errors_total{code=\"Aborted\",reason=\"WRITE_CONFLICT\"} 1")
        );
        assert!(text.contains("strata_active_transactions 3"));
    }

    #[test]
    fn renders_node_counters() {
        let c = NodeCounters {
            cpu_seconds: Some(12.5),
            raft_log_syncs: 40,
            raft_proposals: 90,
            raft_proposal_readies: 30,
            raft_log_bytes: 4096,
            blind_writes_declined: 7,
            latest_reads_declined: 3,
            ..NodeCounters::default()
        };
        let mut text = String::new();
        c.render(&mut text);
        assert!(
            text.contains(
                "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 12.5\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("\nstrata_raft_log_syncs_total 40\n"),
            "{text}"
        );
        assert!(
            text.contains("\nstrata_raft_proposals_total 90\n"),
            "{text}"
        );
        assert!(
            text.contains("\nstrata_raft_proposal_readies_total 30\n"),
            "{text}"
        );
        assert!(text.contains("\nstrata_raft_log_bytes 4096\n"), "{text}");
        assert!(
            text.contains("\nstrata_blind_writes_declined_total 7\n"),
            "{text}"
        );
        assert!(
            text.contains("\nstrata_latest_reads_declined_total 3\n"),
            "{text}"
        );
        // Without /proc the CPU counter is left out rather than reported as 0.
        let mut text = String::new();
        NodeCounters::default().render(&mut text);
        assert!(!text.contains("process_cpu"), "{text}");
        let p = c.to_proto();
        assert_eq!(
            (p.cpu_seconds, p.raft_log_syncs, p.raft_proposals),
            (12.5, 40, 90)
        );
    }
}
