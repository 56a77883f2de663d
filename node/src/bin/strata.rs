//! The `strata` command line.
//!
//! Subcommands nest by area so later milestones slot in beside the first one:
//!
//! ```text
//!   strata bench engine [options]      storage-engine macro-benchmark (this milestone)
//!   strata get | put | scan | txn ...  client commands (later milestones)
//!   strata playground                  a local cluster to try things on (later)
//! ```
//!
//! The binary only parses arguments, sets up logging (`RUST_LOG`, to stderr, so stdout stays
//! clean for reports) and calls into the library, where the work and its tests live.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use strata::bench::engine::{self, EngineBenchConfig};

/// Strata: a distributed key-value store.
#[derive(Debug, Parser)]
#[command(name = "strata", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain of causes on one line, without a backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Bench(BenchCommand::Engine(config)) => {
            let mut stdout = std::io::stdout().lock();
            engine::run(&config, &mut stdout)?;
        }
    }
    Ok(())
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
        let Command::Bench(BenchCommand::Engine(c)) = cli.command;
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
