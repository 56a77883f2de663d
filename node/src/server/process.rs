//! The `strata-node` process: what its `main` does, in the library so that every program
//! that must run a node (the binary, and test harnesses in other packages, which cannot get
//! at another package's binary through cargo) runs the same code.
//!
//! ```text
//!   parse flags ─► load config ─► logging ─► Server::start
//!        │                                     │ binds gRPC, HTTP, Raft; writes <data_dir>/addresses.json
//!        │                                     ▼
//!        │                       stdout: {"event":"listening","node_id":…,"grpc":…,"http":…,"raft":…}
//!        ▼
//!   wait for: SIGTERM | SIGINT | stdin closed (--stop-when-stdin-closes) | the server failing
//!        ─► graceful shutdown ─► exit 0 (a start-up failure: one line on stderr, exit 1)
//! ```
//!
//! Orphans: a parent that starts nodes (`strata playground`, the test harness) gives each a
//! pipe as stdin and `--stop-when-stdin-closes`. The kernel closes the pipe's write end when
//! the parent exits, however it exits (a `kill -9` included), so the node sees end-of-file
//! and shuts down as on SIGTERM. This needs no `prctl(PR_SET_PDEATHSIG)` (Linux-only, and
//! tied to the parent *thread*) and no polling of the parent pid (which can be reused).
//!
//! Built with the `failpoints` feature (tests only), the process reads failpoints from the
//! `FAILPOINTS` environment variable (`name=action;...`, as fail-rs defines it), so process
//! tests can crash it at a chosen moment.

use std::io::Read;
use std::process::ExitCode;

use clap::Parser;
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};

use super::{init_logging, ConfigArgs, NodeConfig, Server};

/// The Strata storage node.
#[derive(Debug, Parser)]
#[command(name = "strata-node", version, about)]
pub struct NodeCli {
    /// Configuration flags.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Shut down (as on SIGTERM) when standard input reaches end-of-file: a parent process
    /// that holds the other end of a pipe takes the node down with it when it exits.
    #[arg(long)]
    pub stop_when_stdin_closes: bool,
}

/// `strata-node`'s `main`.
pub fn main() -> ExitCode {
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cli = match NodeCli::try_parse() {
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

async fn run(cli: NodeCli) -> anyhow::Result<()> {
    let config = NodeConfig::load(&cli.config)?;
    init_logging(&config.log)?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let stdin_closed = cli.stop_when_stdin_closes.then(watch_stdin);
    let mut handle = Server::start(config).await?;
    let mut line = serde_json::to_value(handle.addresses())?;
    line["event"] = json!("listening");
    println!("{line}");
    let stdin_closed = async move {
        match stdin_closed {
            Some(rx) => {
                let _ = rx.await;
            }
            None => std::future::pending().await,
        }
    };
    let failed = tokio::select! {
        _ = sigterm.recv() => { tracing::info!("SIGTERM received"); None }
        _ = sigint.recv() => { tracing::info!("SIGINT received"); None }
        _ = stdin_closed => { tracing::info!("standard input closed (the parent is gone)"); None }
        r = handle.wait() => Some(r),
    };
    handle.shutdown().await?;
    match failed {
        Some(Err(e)) => Err(e),
        _ => Ok(()),
    }
}

/// A thread that reads (and discards) standard input until end-of-file or an error, then
/// fires the returned channel.
fn watch_stdin() -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("stdin-watch".into())
        .spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 256];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            let _ = tx.send(());
        });
    if let Err(e) = spawned {
        // Without the watcher the node still stops on signals; say why it will not on EOF.
        tracing::warn!(error = %e, "cannot watch standard input");
    }
    rx
}
