//! `strata-operator`: runs the StrataCluster and StrataBackup controllers.
//!
//! ```text
//!   start   logs (JSON by default), HTTP port (/metrics /healthz /readyz), API client
//!   campaign for the Lease (unless --leader-election=false); followers stay ready and wait
//!   lead    run the controllers; renew the lease every 2 s
//!   stop    SIGTERM/SIGINT: controllers finish their running reconciles, the lease is
//!           released, exit 0. A lost lease exits 1 (the pod restarts as a follower).
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use strata_operator::controller::{self, Context};
use strata_operator::lease::{LeaderElector, LeaseConfig};
use strata_operator::metrics::Metrics;
use strata_operator::runtime::{lead, stopped};
use tokio::sync::watch;

/// Flags, each also read from the environment variable named beside it.
#[derive(Debug, Parser)]
#[command(
    name = "strata-operator",
    version,
    about = "The Strata Kubernetes operator"
)]
struct Args {
    /// Address of the HTTP port (/metrics, /healthz, /readyz).
    #[arg(
        long,
        env = "STRATA_OPERATOR_HTTP_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    http_addr: SocketAddr,
    /// Watch only this namespace (all namespaces when unset).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Campaign for a Lease before reconciling, so several replicas can run.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "strata-operator")]
    lease_name: String,
    /// Namespace of the Lease (the client's default namespace when unset).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's identity in the Lease and in events (the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %e, "strata-operator failed");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let signal = shutdown_signal();
    let metrics = Arc::new(Metrics::default());
    let listener = strata_operator::http::bind(args.http_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "http listening");
    let http = tokio::spawn(strata_operator::http::serve(listener, Arc::clone(&metrics)));

    let client = strata_operator::client::infer().await?;
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("strata-operator-{}", std::process::id()));
    let ctx = Arc::new(Context::new(
        client.clone(),
        Some(identity.clone()),
        Arc::clone(&metrics),
    ));

    // `true` once SIGTERM or SIGINT arrives.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        signal.await;
        tracing::info!("shutdown requested");
        let _ = stop_tx.send(true);
    });

    let code = if args.leader_election {
        let namespace = args
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let elector = LeaderElector::new(
            client,
            LeaseConfig::new(args.lease_name.clone(), namespace, identity),
        );
        lead(elector, ctx, args.namespace.clone(), stop_rx).await?
    } else {
        client.apiserver_version().await?;
        metrics.set_ready(true);
        metrics.set_leader(true);
        controller::run(ctx, args.namespace.clone(), stopped(stop_rx)).await;
        ExitCode::SUCCESS
    };
    http.abort();
    tracing::info!("stopped");
    Ok(code)
}

/// Installs the SIGTERM and SIGINT handlers now (a signal arriving during start-up must
/// not kill the process with the default action) and returns a future that completes on
/// either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                (term, int) => {
                    let error = term.err().or(int.err());
                    tracing::warn!(error = ?error, "cannot watch SIGTERM/SIGINT; falling back to ctrl-c");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
