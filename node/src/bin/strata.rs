//! The `strata` command line.
//!
//! Subcommands nest by area so later milestones slot in beside the first one:
//!
//! ```text
//!   strata get | put | delete | scan | txn | status   client commands (see strata::cli)
//!   strata bench engine [options]                     storage-engine macro-benchmark
//!   strata bench run [options]                        YCSB-style benchmark of running nodes
//!   strata bench recovery [options]                   restart time of a node after kill -9
//!   strata playground [--nodes N]                     local strata-node processes
//! ```
//!
//! The binary only parses arguments, sets up logging (`RUST_LOG`, to stderr, so stdout stays
//! clean for reports) and calls into the library, where the work and its tests live.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use strata::bench::cluster::{self, ClusterBenchConfig};
use strata::bench::engine::{self, EngineBenchConfig};
use strata::bench::recovery::{self, RecoveryBenchConfig};
use strata::cli::playground::{self, PlaygroundArgs};
use strata::cli::{self, ClientOptions, Clients, CommandError, ExitStatus, ScanArgs};

/// Strata: a distributed key-value store.
#[derive(Debug, Parser)]
#[command(name = "strata", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: ClientOptions,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read a key (exit status 3 if it does not exist).
    Get {
        /// The key.
        key: String,
    },
    /// Write a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: String,
    },
    /// Read a range of keys, or every key with a prefix.
    Scan(ScanArgs),
    /// An interactive transaction: commands from a prompt, or one per line from stdin.
    Txn,
    /// The server's status.
    Status,
    /// Cluster membership: add, remove or decommission a node (any node takes the call
    /// and passes it to the leader).
    #[command(subcommand)]
    Node(cli::NodeCommand),
    /// Hand the data shard's leadership to a voter.
    TransferLeader {
        /// The node to lead.
        node_id: u64,
    },
    /// Run local Strata nodes (each its own strata-node process) in the foreground, ready
    /// for the other commands.
    Playground(PlaygroundArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// db_bench-style macro-benchmark of the storage engine, Strata's LSM beside fjall:
    /// fillseq, fillrandom, overwrite, readrandom, readseq, seekrandom.
    Engine(EngineBenchConfig),
    /// YCSB-style benchmark of a running node at --endpoint: ycsb-a/b/c, put, get, bank.
    Run(ClusterBenchConfig),
    /// Load a node, kill -9 it, restart it: time until it serves, raft log replayed.
    Recovery(RecoveryBenchConfig),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,strata::bench=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(status) => ExitCode::from(status as u8),
        Err(e) => {
            // The whole chain of causes on one line, without a backtrace.
            eprintln!("error: {:#}", e.error);
            ExitCode::from(e.status as u8)
        }
    }
}

fn run(cli: Cli) -> Result<ExitStatus, CommandError> {
    if let Command::Bench(BenchCommand::Engine(config)) = &cli.command {
        let mut stdout = std::io::stdout().lock();
        engine::run(config, &mut stdout)?;
        return Ok(ExitStatus::Ok);
    }
    if let Command::Bench(BenchCommand::Run(config)) = &cli.command {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)?;
        let mut stdout = std::io::stdout().lock();
        let report = runtime.block_on(cluster::run(config, &cli.client, &mut stdout))?;
        if let Some(check) = report.bank.filter(|b| !b.holds()) {
            return Err(anyhow::anyhow!(
                "bank invariant violated: balance sum {} before, {} after",
                check.sum_before,
                check.sum_after
            )
            .into());
        }
        return Ok(ExitStatus::Ok);
    }
    if let Command::Bench(BenchCommand::Recovery(config)) = &cli.command {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)?;
        let mut stdout = std::io::stdout().lock();
        runtime.block_on(recovery::run(config, &mut stdout))?;
        return Ok(ExitStatus::Ok);
    }
    if let Command::Playground(args) = &cli.command {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)?;
        let mut stdout = std::io::stdout();
        // Registered now, before any node starts: a signal that arrives while the banner
        // is printed must stop the playground cleanly, not kill it.
        let stop = {
            let _in_runtime = runtime.enter();
            stop_signal()
        };
        runtime.block_on(playground::run(args, &mut stdout, stop))?;
        return Ok(ExitStatus::Ok);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)?;
    runtime.block_on(client_command(cli))
}

async fn client_command(cli: Cli) -> Result<ExitStatus, CommandError> {
    let o = &cli.client;
    let mut c = Clients::connect(o).await?;
    let mut stdout = std::io::stdout().lock();
    match &cli.command {
        Command::Get { key } => cli::get(&mut c, o, key, &mut stdout).await,
        Command::Put { key, value } => cli::put(&mut c, o, key, value, &mut stdout).await,
        Command::Delete { key } => cli::delete(&mut c, o, key, &mut stdout).await,
        Command::Scan(args) => cli::scan(&mut c, o, args, &mut stdout).await,
        Command::Status => cli::status(&mut c, o, &mut stdout).await,
        Command::Node(cmd) => cli::node(&mut c, o, cmd, &mut stdout).await,
        Command::TransferLeader { node_id } => {
            cli::transfer_leader(&mut c, o, *node_id, &mut stdout).await
        }
        Command::Txn => {
            let interactive = std::io::stdin().is_terminal();
            let mut input = std::io::stdin().lock();
            cli::txn_shell::run(&mut c, o, &mut input, &mut stdout, interactive).await
        }
        Command::Bench(_) | Command::Playground(_) => Ok(ExitStatus::Ok),
    }
}

/// Resolves on Ctrl-C or SIGTERM (or at once if they cannot be watched).
/// Resolves on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when this is
/// called (inside a runtime), not when the future is first polled.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            // Without handlers the default dispositions stop the process anyway.
            _ => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use strata::bench::engine::{BenchCompression, EngineKind, OutputFormat, Workload};

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_bench_engine_options() {
        let cli = Cli::try_parse_from([
            "strata",
            "bench",
            "engine",
            "--keys",
            "1000",
            "--workloads",
            "fillrandom,readrandom",
            "--engines",
            "strata",
            "--format",
            "json",
            "--compression",
            "lz4",
            "--sync",
            "--scan-len",
            "5",
        ])
        .unwrap();
        let Command::Bench(BenchCommand::Engine(c)) = cli.command else {
            panic!("parsed as another command");
        };
        assert_eq!(c.keys, 1000);
        assert_eq!(c.reads(), 1000);
        assert_eq!(
            c.workloads,
            vec![Workload::Fillrandom, Workload::Readrandom]
        );
        assert_eq!(c.engines, vec![EngineKind::Strata]);
        assert_eq!(c.format, OutputFormat::Json);
        assert_eq!(c.compression, BenchCompression::Lz4);
        assert!(c.sync);
        assert_eq!(c.scan_len, 5);
        assert!(Cli::try_parse_from(["strata", "bench", "engine", "--workloads", "nope"]).is_err());
    }

    #[test]
    fn parses_bench_run_options() {
        use strata::bench::cluster::{ClusterWorkload, Distribution};
        let cli = Cli::try_parse_from([
            "strata",
            "--endpoint",
            "127.0.0.1:7479",
            "bench",
            "run",
            "--workload",
            "ycsb-b",
            "--clients",
            "64",
            "--connections",
            "8",
            "--duration",
            "3",
            "--keys",
            "500",
            "--no-load",
            "--distribution",
            "uniform",
            "--format",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.client.endpoint, "127.0.0.1:7479");
        assert_eq!(
            cli.client.endpoint_list().unwrap(),
            ["127.0.0.1:7479".to_string()]
        );
        let Command::Bench(BenchCommand::Run(c)) = cli.command else {
            panic!("parsed as another command");
        };
        assert_eq!(c.workload, ClusterWorkload::YcsbB);
        assert_eq!((c.clients, c.duration, c.keys), (64, 3, 500));
        assert_eq!(c.connections, 8);
        assert!(c.no_load);
        assert_eq!(c.distribution, Distribution::Uniform);
        assert_eq!(c.format, OutputFormat::Json);
        assert_eq!(c.value_size, 100);
        let defaults = Cli::try_parse_from(["strata", "bench", "run"]).unwrap();
        let Command::Bench(BenchCommand::Run(d)) = defaults.command else {
            panic!("parsed as another command");
        };
        assert_eq!(
            (d.workload, d.duration, d.keys),
            (ClusterWorkload::YcsbA, 10, 10_000)
        );
        assert_eq!(d.distribution, Distribution::Zipfian);
        assert_eq!(d.connections, 0);
        assert!(Cli::try_parse_from(["strata", "bench", "run", "--workload", "nope"]).is_err());
    }

    #[test]
    fn parses_several_endpoints_and_the_playground() {
        let cli = Cli::try_parse_from([
            "strata",
            "--endpoints",
            "127.0.0.1:1, 127.0.0.1:2,,127.0.0.1:3",
            "get",
            "k",
        ])
        .unwrap();
        assert_eq!(
            cli.client.endpoint_list().unwrap(),
            ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
        );
        let cli = Cli::try_parse_from(["strata", "--endpoints", ",", "get", "k"]).unwrap();
        assert!(cli.client.endpoint_list().is_err());
        let cli = Cli::try_parse_from(["strata", "playground", "--nodes", "1"]).unwrap();
        let Command::Playground(p) = cli.command else {
            panic!("parsed as another command");
        };
        assert_eq!(p.nodes, 1);
        let d = Cli::try_parse_from(["strata", "playground"]).unwrap();
        let Command::Playground(d) = d.command else {
            panic!("parsed as another command");
        };
        assert_eq!(d.nodes, 3, "a three-node cluster by default");
        assert!(Cli::try_parse_from(["strata", "playground", "--nodes", "0"]).is_err());
    }
}
