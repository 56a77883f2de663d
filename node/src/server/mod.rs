//! The single-node server: Strata's gRPC API and a small HTTP port over one engine.
//!
//! ```text
//!   gRPC (tonic)  Kv / Txn / Admin ──┐            HTTP  /metrics /healthz /readyz /
//!                                    ▼                    │
//!                 validate ─► spawn_blocking ─► TxnManager ─► Storage ─► Db (<data_dir>/db)
//!                                                  │
//!                                               LocalTso (<data_dir>/tso)
//!   background    idle-transaction reaper (every second); GC tick + sweep (every 10 s)
//! ```
//!
//! [`Server::start`] opens the engine and the timestamp oracle, binds both listeners (port 0
//! picks a free port; [`ServerHandle::grpc_addr`] tells which) and spawns the tasks.
//! [`ServerHandle::shutdown`] stops accepting, waits for in-flight calls (bounded), rolls
//! back open transactions (they wrote nothing yet, so this only forgets them) and flushes
//! the engine. Every commit is synced to the WAL by `Storage`, so an abrupt stop loses no
//! acknowledged write.
//!
//! GC: the engine runs the MVCC compaction filter ([`MvccGcFilter`]) against a safe point
//! that a background task advances every [`GC_INTERVAL`] (`TxnManager::gc_tick`, bounded by
//! `txn.gc_life_time_s`) and then sweeps what compactions reported (`Storage::gc_sweep`).
//! The safe point is not persisted: on start it is set to `now - gc_life_time`, which is at
//! or above any safe point an earlier run can have collected up to (that one was at most
//! `then - gc_life_time`), so no read is served from versions GC may have removed.
//!
//! Not yet here: TLS and authentication.

pub mod config;
pub mod error;
pub mod http;
pub mod metrics;
pub mod service;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use strata_proto::limits::MAX_MESSAGE_BYTES;
use strata_proto::v1::{admin_server::AdminServer, kv_server::KvServer, txn_server::TxnServer};

pub use config::{ConfigArgs, LogConfig, LogFormat, NodeConfig};
pub use metrics::Metrics;
pub use service::{AdminService, KvService, TxnService};

use crate::lsm::Db;
use crate::mvcc::gc::GcBacklog;
use crate::mvcc::{compute_safe_point, GcSafePoint, MvccGcFilter};
use crate::tso::{LocalTso, LocalTsoOptions, Tso};
use crate::txn::{Storage, TxnManager};

/// How long shutdown waits for in-flight gRPC calls before dropping them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the GC safe point is advanced and the GC backlog swept.
pub const GC_INTERVAL: Duration = Duration::from_secs(10);

/// What the services and the HTTP port share.
#[derive(Debug)]
pub(crate) struct State {
    config: NodeConfig,
    manager: Arc<TxnManager>,
    tso: Arc<LocalTso>,
    gc_backlog: GcBacklog,
    metrics: Metrics,
    started: Instant,
    ready: AtomicBool,
}

impl State {
    /// The GC safe point.
    fn gc_safe_point(&self) -> u64 {
        self.manager.storage().safe_point().get()
    }

    /// Advances the safe point and sweeps the GC backlog (blocking).
    fn gc_tick(&self) -> anyhow::Result<()> {
        let now = self.tso.get_timestamp()?;
        let life_time = Duration::from_secs(self.config.txn.gc_life_time_s);
        let safe_point = self.manager.gc_tick(now, life_time)?;
        let swept = self.manager.storage().gc_sweep(&self.gc_backlog)?;
        if swept.values_deleted + swept.deletes_removed > 0 {
            tracing::debug!(safe_point, ?swept, "GC sweep");
        }
        Ok(())
    }
}

impl http::Endpoints for State {
    fn metrics(&self) -> String {
        let stats = self.manager.storage().db().stats();
        self.metrics
            .render(&stats, self.manager.active(), self.started.elapsed())
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn status_page(&self) -> String {
        let stats = self.manager.storage().db().stats();
        format!(
            "<!doctype html><html><head><title>strata-node {id}</title></head><body>\
             <h1>strata-node {id}</h1><ul>\
             <li>version {version}</li><li>uptime {uptime} s</li>\
             <li>gRPC {grpc}</li><li>data dir {dir}</li>\
             <li>active transactions {active}</li>\
             <li>SSTable bytes {sst}, memtable bytes {mem}, levels {levels}</li>\
             <li>write amplification {wa:.2}</li></ul>\
             <p><a href=\"/metrics\">metrics</a></p></body></html>\n",
            id = self.config.node_id,
            version = env!("CARGO_PKG_VERSION"),
            uptime = self.started.elapsed().as_secs(),
            grpc = self.config.grpc_addr,
            dir = html_escape(&self.config.data_dir.display().to_string()),
            active = self.manager.active(),
            sst = stats.total_sst_bytes,
            mem = stats.memtable_bytes,
            levels = stats.levels.len(),
            wa = stats.write_amplification(),
        )
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Starts servers; see the module documentation.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Opens `<data_dir>/db` and `<data_dir>/tso`, binds the gRPC and HTTP listeners and
    /// starts serving. Fails if the data directory cannot be opened or an address cannot be
    /// bound.
    pub async fn start(config: NodeConfig) -> anyhow::Result<ServerHandle> {
        config.validate()?;
        let data_dir = config.data_dir.clone();
        let options = config.engine_options();
        let txn_config = config.txn_config();
        let (manager, tso, gc_backlog) =
            tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                std::fs::create_dir_all(&data_dir)
                    .with_context(|| format!("creating data directory {}", data_dir.display()))?;
                let tso = Arc::new(
                    LocalTso::open(LocalTsoOptions::new(data_dir.join("tso")))
                        .context("opening the timestamp oracle")?,
                );
                // See the module documentation for why this start is safe.
                let now = tso.get_timestamp().context("taking the first timestamp")?;
                let safe_point =
                    GcSafePoint::new(compute_safe_point(None, now, txn_config.gc_life_time));
                let filter = MvccGcFilter::new(safe_point.clone());
                let gc_backlog = filter.backlog().clone();
                let mut options = options;
                options.compaction_filter = Some(Arc::new(filter));
                let db = Db::open(data_dir.join("db"), options).with_context(|| {
                    format!("opening the engine in {}", data_dir.join("db").display())
                })?;
                let storage = Arc::new(Storage::with_safe_point(db, safe_point));
                let manager = Arc::new(TxnManager::new(storage, tso.clone(), txn_config));
                Ok((manager, tso, gc_backlog))
            })
            .await
            .context("opening the data directory")??;

        let grpc_listener = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("binding the gRPC address {}", config.grpc_addr))?;
        let http_listener = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("binding the HTTP address {}", config.http_addr))?;
        let grpc_addr = grpc_listener.local_addr()?;
        let http_addr = http_listener.local_addr()?;

        let state = Arc::new(State {
            config,
            manager,
            tso,
            gc_backlog,
            metrics: Metrics::default(),
            started: Instant::now(),
            ready: AtomicBool::new(false),
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);

        let max = usize::try_from(MAX_MESSAGE_BYTES).unwrap_or(usize::MAX);
        let kv = KvServer::new(KvService {
            state: Arc::clone(&state),
        })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
        let txn = TxnServer::new(TxnService {
            state: Arc::clone(&state),
        })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
        let admin = AdminServer::new(AdminService {
            state: Arc::clone(&state),
        })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
        let mut grpc_shutdown = shutdown_rx.clone();
        let incoming =
            tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
        let grpc_task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(kv)
                .add_service(txn)
                .add_service(admin)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = grpc_shutdown.changed().await;
                })
                .await
        });
        state.ready.store(true, Ordering::Release);

        let http_task = tokio::spawn(http::serve(
            http_listener,
            Arc::clone(&state),
            shutdown_rx.clone(),
        ));
        let reaper_task = tokio::spawn(reap_idle(Arc::clone(&state), shutdown_rx.clone()));
        let gc_task = tokio::spawn(run_gc(Arc::clone(&state), shutdown_rx));

        tracing::info!(%grpc_addr, %http_addr, node_id = state.config.node_id,
            data_dir = %state.config.data_dir.display(), "strata-node serving");
        Ok(ServerHandle {
            state,
            grpc_addr,
            http_addr,
            shutdown_tx,
            grpc_task: Some(grpc_task),
            tasks: vec![http_task, reaper_task, gc_task],
        })
    }
}

/// Rolls back idle transactions every second until shutdown.
async fn reap_idle(state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {
                let n = state.manager.reap_idle(Instant::now());
                if n > 0 {
                    tracing::info!(rolled_back = n, "reaped idle transactions");
                }
            }
        }
    }
}

/// Advances the GC safe point and sweeps every [`GC_INTERVAL`] until shutdown.
async fn run_gc(state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(GC_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {
                let state = Arc::clone(&state);
                match tokio::task::spawn_blocking(move || state.gc_tick()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "GC tick failed"),
                    Err(e) => tracing::warn!(error = %e, "GC task failed"),
                }
            }
        }
    }
}

type GrpcTask = JoinHandle<Result<(), tonic::transport::Error>>;

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    state: Arc<State>,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    grpc_task: Option<GrpcTask>,
    tasks: Vec<JoinHandle<()>>,
}

impl ServerHandle {
    /// The address the gRPC listener is bound to.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The address the HTTP listener is bound to.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.state.config
    }

    /// Waits until the gRPC server stops by itself (it only does on a fatal error); returns
    /// that error. Call [`ServerHandle::shutdown`] afterwards to release the engine.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        match self.grpc_task.as_mut() {
            Some(task) => {
                let r = task.await;
                self.grpc_task = None;
                r.context("the gRPC task failed")?
                    .context("the gRPC server failed")
            }
            None => std::future::pending().await,
        }
    }

    /// Stops accepting connections, waits (up to 10 s) for in-flight calls, rolls back the
    /// open transactions and flushes the engine.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        tracing::info!("shutting down");
        self.state.ready.store(false, Ordering::Release);
        let _ = self.shutdown_tx.send(true);
        if let Some(mut task) = self.grpc_task.take() {
            match tokio::time::timeout(DRAIN_TIMEOUT, &mut task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "gRPC server ended with an error"),
                Ok(Err(e)) => tracing::warn!(error = %e, "gRPC task failed"),
                Err(_) => {
                    tracing::warn!("in-flight calls did not finish in time; dropping them");
                    task.abort();
                }
            }
        }
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        let state = Arc::clone(&self.state);
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            // Open transactions have written nothing (writes are buffered until Commit):
            // rolling them back only forgets them. A time past every idle deadline reaps all.
            let far = Instant::now() + state.manager_idle_timeout() + Duration::from_secs(1);
            let rolled_back = state.manager.reap_idle(far);
            if rolled_back > 0 {
                tracing::info!(rolled_back, "rolled back open transactions");
            }
            state
                .manager
                .storage()
                .db()
                .flush()
                .context("flushing the engine")
        })
        .await
        .context("the shutdown task failed")??;
        tracing::info!("shut down");
        Ok(())
    }
}

impl State {
    fn manager_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.config.txn.idle_timeout_s)
    }
}

/// Installs the global `tracing` subscriber for `config` (text or JSON lines on stderr).
/// `RUST_LOG`, when set, overrides `config.level`.
pub fn init_logging(config: &LogConfig) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(s) if !s.is_empty() => EnvFilter::try_new(s),
        _ => EnvFilter::try_new(&config.level),
    }
    .with_context(|| format!("invalid log level {:?}", config.level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("installing the logger: {e}"))
}
