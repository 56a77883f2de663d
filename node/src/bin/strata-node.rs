//! `strata-node`: the single-node Strata server.
//!
//! Reads its configuration (YAML file, flags, `STRATA_*` environment variables), serves the
//! gRPC API and the HTTP port until SIGINT or SIGTERM, then shuts down gracefully and exits
//! 0. A startup failure prints one line to stderr and exits 1.
//!
//! Built with the `failpoints` feature (tests only), it reads failpoints from the
//! `FAILPOINTS` environment variable (`name=action;...`, as fail-rs defines it), so process
//! tests can crash it at a chosen moment.

use std::process::ExitCode;

use clap::Parser;
use strata::server::{init_logging, ConfigArgs, NodeConfig, Server};
use tokio::signal::unix::{signal, SignalKind};

/// The Strata storage node.
#[derive(Debug, Parser)]
#[command(name = "strata-node", version, about)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
}

fn main() -> ExitCode {
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            let line = text.lines().next().unwrap_or_default();
            eprintln!(
                "strata-node: {} (see --help)",
                line.strip_prefix("error: ").unwrap_or(line)
            );
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("strata-node: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = NodeConfig::load(&cli.config)?;
    init_logging(&config.log)?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut handle = Server::start(config).await?;
    println!(
        "strata-node grpc={} http={}",
        handle.grpc_addr(),
        handle.http_addr()
    );
    let failed = tokio::select! {
        _ = sigterm.recv() => { tracing::info!("SIGTERM received"); None }
        _ = sigint.recv() => { tracing::info!("SIGINT received"); None }
        r = handle.wait() => Some(r),
    };
    handle.shutdown().await?;
    match failed {
        Some(Err(e)) => Err(e),
        _ => Ok(()),
    }
}
