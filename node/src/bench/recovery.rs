//! `strata bench recovery`: how long a node takes to serve again after a `kill -9`, and how
//! much raft log it had to replay.
//!
//! ```text
//!   start one strata-node process (a one-voter group; ports chosen by the OS)
//!   load:    --data-mb MiB of --value-size values with Kv puts by --clients tasks
//!   status:  applied index and raft log size before the kill
//!   kill -9  (nothing flushed: applies skip the engine's WAL, so the memtables are lost and
//!             the raft log is what brings them back)
//!   restart the same data directory, clock started just before the spawn:
//!     listening   the node wrote its addresses (raft-engine and the engine are open)
//!     ready       GET /readyz answers 200 (leader of its term, its first entry applied,
//!                 which needs every earlier entry applied: the replay is done)
//!     serving     a Kv get of the last key loaded returns its value
//!   report: the three times, entries replayed (last index − durable applied index at open,
//!           from Admin.Status `recovery`), raft log bytes at open ─► text or JSON
//! ```
//!
//! The data directory is a temporary one unless `--data-dir` is given. Nothing here is
//! asserted beyond "the node came back with the data": the figures are for reading.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use strata_proto::v1;

use super::engine::OutputFormat;
use super::generator::{SplitMix64, ValueGen};
use crate::cli::node_process::{http_status, sibling_node_binary, NodeProcess, NodeSpec};
use crate::cli::Clients;

/// Options of `strata bench recovery`.
#[derive(Debug, Clone, clap::Args)]
pub struct RecoveryBenchConfig {
    /// MiB of values to load before the kill.
    #[arg(long, default_value_t = 16)]
    pub data_mb: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 4096)]
    pub value_size: usize,
    /// Concurrent loading tasks.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Keep the node's data here (default: a temporary directory, removed at the end).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Seconds the node may take to start, and to come back after the kill.
    #[arg(long, default_value_t = 300)]
    pub deadline: u64,
    /// Output format: text, or one JSON object.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// The strata-node binary (default: the one beside this executable).
    #[arg(long, hide = true)]
    pub node_binary: Option<PathBuf>,
}

/// What a recovery run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryReport {
    /// Keys loaded.
    pub keys: u64,
    /// Bytes of values loaded.
    pub bytes_loaded: u64,
    /// Seconds the load took.
    pub load_seconds: f64,
    /// The applied index before the kill.
    pub applied_before_kill: u64,
    /// Raft log bytes on disk before the kill.
    pub raft_log_bytes_before_kill: u64,
    /// Seconds from the restart's spawn until the node listened.
    pub listening_seconds: f64,
    /// Seconds until `/readyz` answered 200.
    pub ready_seconds: f64,
    /// Seconds until a read of the last key loaded returned its value.
    pub serving_seconds: f64,
    /// Seconds the node spent opening the replica (its own figure).
    pub open_seconds: f64,
    /// The durable applied index the node found at open.
    pub applied_at_open: u64,
    /// The raft log's last index at open.
    pub last_index_at_open: u64,
    /// Entries beyond the durable applied index: replayed.
    pub entries_replayed: u64,
    /// Raft log bytes on disk at open.
    pub raft_log_bytes_at_open: u64,
}

fn key(i: u64) -> Vec<u8> {
    format!("recovery{i:012}").into_bytes()
}

fn node_spec(config: &RecoveryBenchConfig, dir: &std::path::Path) -> Result<NodeSpec> {
    let binary = match &config.node_binary {
        Some(b) => b.clone(),
        None => sibling_node_binary()?,
    };
    let any: SocketAddr = "127.0.0.1:0".parse()?;
    Ok(NodeSpec {
        binary,
        node_id: 1,
        data_dir: dir.join("node-1"),
        grpc_addr: any,
        http_addr: any,
        raft_addr: any,
        initial_members: Vec::new(),
        log_file: dir.join("node-1").join("node.log"),
        extra_args: Vec::new(),
        env: Vec::new(),
    })
}

/// Runs the benchmark and writes its report to `out`.
pub async fn run(config: &RecoveryBenchConfig, out: &mut dyn Write) -> Result<RecoveryReport> {
    if config.value_size == 0 || config.clients == 0 {
        bail!("--value-size and --clients must be at least 1");
    }
    let temporary = config.data_dir.is_none();
    let dir = match &config.data_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!(
            "strata-bench-recovery-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        )),
    };
    let result = run_in(config, &dir, out).await;
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn run_in(
    config: &RecoveryBenchConfig,
    dir: &std::path::Path,
    out: &mut dyn Write,
) -> Result<RecoveryReport> {
    let spec = node_spec(config, dir)?;
    let deadline = Duration::from_secs(config.deadline.max(1));
    let mut node = NodeProcess::spawn(&spec)?;
    let addrs = node.wait_ready(Instant::now() + deadline).await?;
    let endpoint = addrs.grpc.to_string();
    let clients = Clients::connect_one(&endpoint, deadline).await?;

    let keys = (config.data_mb * 1024 * 1024)
        .div_ceil(config.value_size as u64)
        .max(1);
    let mut rng = SplitMix64::for_stream(0x5eed, "recovery");
    let values = ValueGen::new(config.value_size, &mut rng);
    let began = Instant::now();
    let last_value = load(&clients, keys, config.clients, &values).await?;
    let load_seconds = began.elapsed().as_secs_f64();
    let before = status(&clients).await?;
    let applied_before_kill = before.replicas.first().map_or(0, |r| r.applied_index);
    let raft_log_bytes_before_kill = before.counters.map_or(0, |c| c.raft_log_bytes);
    drop(clients);

    node.kill()?;
    let restarted = Instant::now();
    let mut node = NodeProcess::spawn(&spec)?;
    let until = restarted + deadline;
    let addrs = node.wait_listening(until).await?;
    let listening_seconds = restarted.elapsed().as_secs_f64();
    loop {
        if http_status(addrs.http, "/readyz").await == Some(200) {
            break;
        }
        if node.try_wait()?.is_some() || Instant::now() >= until {
            bail!(
                "the node did not become ready again:\n{}",
                node.log_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ready_seconds = restarted.elapsed().as_secs_f64();
    let mut c = Clients::connect_one(&addrs.grpc.to_string(), deadline).await?;
    let last_key = key(keys - 1);
    loop {
        let got =
            c.kv.get(v1::GetRequest {
                key: last_key.clone(),
                read_ts: 0,
            })
            .await;
        match got {
            Ok(r) => {
                let r = r.into_inner();
                if !r.found || r.value != last_value {
                    bail!(
                        "the last key loaded came back {} after the restart",
                        if r.found { "changed" } else { "missing" }
                    );
                }
                break;
            }
            Err(_) if Instant::now() < until => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(s) => {
                return Err(crate::cli::status_error(s)
                    .error
                    .context("reading after the restart"))
            }
        }
    }
    let serving_seconds = restarted.elapsed().as_secs_f64();
    let after = status(&c).await?;
    let rec = after.recovery.unwrap_or_default();
    node.stop(Duration::from_secs(30)).await?;

    let report = RecoveryReport {
        keys,
        bytes_loaded: keys * config.value_size as u64,
        load_seconds,
        applied_before_kill,
        raft_log_bytes_before_kill,
        listening_seconds,
        ready_seconds,
        serving_seconds,
        open_seconds: rec.open_seconds,
        applied_at_open: rec.applied_index_at_open,
        last_index_at_open: rec.last_index_at_open,
        entries_replayed: rec
            .last_index_at_open
            .saturating_sub(rec.applied_index_at_open),
        raft_log_bytes_at_open: rec.raft_log_bytes_at_open,
    };
    write_report(config, &report, out)?;
    Ok(report)
}

async fn status(c: &Clients) -> Result<v1::StatusResponse> {
    let mut c = c.clone();
    Ok(c.admin
        .status(v1::StatusRequest {})
        .await
        .map_err(|s| crate::cli::status_error(s).error)?
        .into_inner())
}

/// Loads keys `0..keys` with `tasks` concurrent tasks; returns the last key's value.
async fn load(clients: &Clients, keys: u64, tasks: usize, values: &ValueGen) -> Result<Vec<u8>> {
    let tasks = (tasks as u64).clamp(1, keys);
    let mut handles = Vec::new();
    for t in 0..tasks {
        let mut c = clients.clone();
        let mut values = values.clone();
        handles.push(tokio::spawn(async move {
            let mut last = Vec::new();
            // Task t writes keys t, t + tasks, ...: the one that writes the last key keeps
            // its value.
            let mut i = t;
            while i < keys {
                let value = values.next_value().to_vec();
                loop {
                    let put =
                        c.kv.put(v1::PutRequest {
                            key: key(i),
                            value: value.clone(),
                        })
                        .await;
                    match put {
                        Ok(_) => break,
                        Err(s) if super::cluster::is_retryable(&s) => continue,
                        Err(s) => return Err(crate::cli::status_error(s).error.context("loading")),
                    }
                }
                if i == keys - 1 {
                    last = value;
                }
                i += tasks;
            }
            Ok::<Vec<u8>, anyhow::Error>(last)
        }));
    }
    let mut last = Vec::new();
    for h in handles {
        let v = h.await.context("a loader panicked")??;
        if !v.is_empty() {
            last = v;
        }
    }
    Ok(last)
}

fn write_report(
    config: &RecoveryBenchConfig,
    r: &RecoveryReport,
    out: &mut dyn Write,
) -> Result<()> {
    match config.format {
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string(r)?)?,
        OutputFormat::Text => {
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            writeln!(
                out,
                "recovery: {} keys, {:.1} MiB of {}-byte values loaded in {:.1} s; applied {} before kill -9, raft log {:.1} MiB",
                r.keys,
                mib(r.bytes_loaded),
                config.value_size,
                r.load_seconds,
                r.applied_before_kill,
                mib(r.raft_log_bytes_before_kill),
            )?;
            writeln!(
                out,
                "  restart: listening {:.3} s, ready {:.3} s, serving {:.3} s (opening the replica: {:.3} s)",
                r.listening_seconds, r.ready_seconds, r.serving_seconds, r.open_seconds
            )?;
            writeln!(
                out,
                "  replayed {} entries (durable applied {} → last {}), raft log at open {:.1} MiB",
                r.entries_replayed,
                r.applied_at_open,
                r.last_index_at_open,
                mib(r.raft_log_bytes_at_open),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_both_formats() {
        let r = RecoveryReport {
            keys: 256,
            bytes_loaded: 1 << 20,
            load_seconds: 1.5,
            applied_before_kill: 300,
            raft_log_bytes_before_kill: 2 << 20,
            listening_seconds: 0.25,
            ready_seconds: 0.5,
            serving_seconds: 0.625,
            open_seconds: 0.125,
            applied_at_open: 10,
            last_index_at_open: 300,
            entries_replayed: 290,
            raft_log_bytes_at_open: 2 << 20,
        };
        let mut config = RecoveryBenchConfig {
            data_mb: 1,
            value_size: 4096,
            clients: 1,
            data_dir: None,
            deadline: 1,
            format: OutputFormat::Text,
            node_binary: None,
        };
        let mut out = Vec::new();
        write_report(&config, &r, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("listening 0.250 s, ready 0.500 s, serving 0.625 s"),
            "{text}"
        );
        assert!(
            text.contains(
                "replayed 290 entries (durable applied 10 → last 300), raft log at open 2.0 MiB"
            ),
            "{text}"
        );
        config.format = OutputFormat::Json;
        let mut out = Vec::new();
        write_report(&config, &r, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["entries_replayed"], 290);
        assert_eq!(v["serving_seconds"], 0.625);
    }
}
