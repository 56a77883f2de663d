//! The `strata` command line.
//!
//! Subcommands nest by area so later milestones slot in beside the first one:
//!
//! ```text
//!   strata get | put | delete | scan | txn | status   client commands (see strata::cli)
//!   strata bench engine [options]                     storage-engine macro-benchmark
//! ```
//!
//! The binary only parses arguments, sets up logging (`RUST_LOG`, to stderr, so stdout stays
//! clean for reports) and calls into the library, where the work and its tests live.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use strata::bench::engine::{self, EngineBenchConfig};
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
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// db_bench-style macro-benchmark of the storage engine, Strata's LSM beside fjall:
    /// fillseq, fillrandom, overwrite, readrandom, readseq, seekrandom.
    Engine(EngineBenchConfig),
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
        Command::Txn => {
            let interactive = std::io::stdin().is_terminal();
            let mut input = std::io::stdin().lock();
            cli::txn_shell::run(&mut c, o, &mut input, &mut stdout, interactive).await
        }
        Command::Bench(_) => Ok(ExitStatus::Ok),
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
}
