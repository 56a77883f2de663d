//! The single-node server: Strata's gRPC API and a small HTTP port over one engine.
//!
//! ```text
//!   gRPC (tonic)  Kv / Txn / Admin ──┐            HTTP  /metrics /healthz /readyz /
//!                                    ▼                    │
//!                 validate ─► spawn_blocking ─► TxnManager ─► Storage ─► Db (<data_dir>/db)
//!                                                  │
//!                                               LocalTso (<data_dir>/tso)
//!   background    transaction reaper (every second); GC: resolve stale locks, advance and
//!                 save the safe point, sweep (every txn.gc_interval_ms, 10 s)
//! ```
//!
//! [`Server::start`] opens the engine and the timestamp oracle, binds both listeners (port 0
//! picks a free port; [`ServerHandle::grpc_addr`] tells which) and spawns the tasks.
//! [`ServerHandle::shutdown`] stops accepting, waits for in-flight calls (bounded), rolls
//! back open transactions (they wrote nothing yet, so this only forgets them) and flushes
//! the engine. Every commit is synced to the WAL by `Storage`, so an abrupt stop loses no
//! acknowledged write.
//!
//! Beside Strata's services the gRPC port serves the standard `grpc.health.v1.Health`
//! (statuses that follow `/readyz`: `NOT_SERVING` until ready and again once shutdown
//! begins) and server reflection v1 and v1alpha, so Kubernetes gRPC probes, load balancers
//! and grpcurl-style tools work against the node (`server/grpc.rs`).
//!
//! Runs: every start takes a new run id ([`NodeMeta`], durable in the engine's `raft-state`
//! family). The run names the coordinator in every lock this node writes, and transaction
//! ids carry node id and run ([`TxnIds`]), so an id from an earlier run is `NOT_FOUND` and a
//! lock from an earlier run is resolved at once rather than waited out.
//!
//! GC: the engine runs the MVCC compaction filter ([`MvccGcFilter`]) against a safe point
//! that a background task advances every `txn.gc_interval_ms` on the node that leads the
//! shard (leader work: see `crate::gateway`; elsewhere the tick does nothing): it first
//! resolves stale locks
//! ([`resolver`](crate::txn::resolver): expired, or left by an earlier run), then advances
//! the safe point (`TxnManager::gc_tick`: the oldest live transaction or lock, and at most
//! `now - txn.gc_life_time_s`), saving it before it takes effect, then sweeps what
//! compactions reported (`Storage::gc_sweep`). On start the safe point is the saved one
//! (compactions of earlier runs may have collected up to it), lowered to the oldest lock on
//! disk if one is older (see [`start_safe_point`]); it is never recomputed from the clock,
//! which would let GC pass a lock that survived the restart and drop the commit record its
//! secondaries are resolved by.
//!
//! Not yet here: TLS and authentication.

pub mod config;
pub mod error;
mod grpc;
pub mod http;
pub mod metrics;
pub mod service;

#[cfg(test)]
mod grpc_tests;
#[cfg(test)]
mod restart_tests;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
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
use crate::mvcc::gc::{start_safe_point, GcBacklog, SafePointStore};
use crate::mvcc::{Coordinator, GcSafePoint, MvccGcFilter};
use crate::tso::{LocalTso, LocalTsoOptions, Tso};
use crate::txn::resolver::resolve_stale_locks;
use crate::txn::{NodeMeta, Storage, TxnIds, TxnManager};

/// How long shutdown waits for in-flight gRPC calls before dropping them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the services and the HTTP port share.
#[derive(Debug)]
pub(crate) struct State {
    config: NodeConfig,
    manager: Arc<TxnManager>,
    tso: Arc<LocalTso>,
    gc_backlog: GcBacklog,
    /// This run of the node.
    run: Coordinator,
    /// Locks the GC task's resolver committed or rolled back since the start.
    stale_locks_resolved: AtomicU64,
    metrics: Metrics,
    started: Instant,
    /// What `/readyz` and the gRPC health service answer.
    readiness: grpc::Readiness,
}

impl State {
    /// The GC safe point.
    fn gc_safe_point(&self) -> u64 {
        self.manager.storage().safe_point().get()
    }

    /// Resolves stale locks, advances (and saves) the safe point and sweeps the GC backlog
    /// (blocking). Leader work: a node that does not lead the shard skips the tick.
    fn gc_tick(&self) -> anyhow::Result<()> {
        let Some(leader) = self.manager.local_leader() else {
            return Ok(());
        };
        let now = self.tso.get_timestamp()?;
        let resolved = resolve_stale_locks(leader, now)?;
        if resolved.stale > 0 {
            tracing::info!(?resolved, "resolved stale locks");
        }
        self.stale_locks_resolved
            .fetch_add(resolved.committed + resolved.rolled_back, Ordering::Relaxed);
        let life_time = Duration::from_secs(self.config.txn.gc_life_time_s);
        let safe_point = self.manager.gc_tick(now, life_time)?;
        self.compact_for_tests();
        let swept = leader.gc_sweep(&self.gc_backlog)?;
        if swept.values_deleted + swept.deletes_removed > 0 {
            tracing::debug!(safe_point, ?swept, "GC sweep");
        }
        Ok(())
    }

    /// A test hook, active only in `failpoints` builds when `gc_tick_compact_all` is set to
    /// `return`: compacts the whole engine right after the safe point advanced, so that a
    /// process test can make GC happen at a known moment.
    fn compact_for_tests(&self) {
        fail::fail_point!("gc_tick_compact_all", |_| {
            let db = self.manager.storage().db();
            use crate::lsm::ColumnFamily;
            for cf in [ColumnFamily::Write, ColumnFamily::Default] {
                if let Err(e) = db.compact_range(cf, None, None) {
                    tracing::warn!(error = %e, "test compaction failed");
                }
            }
        });
    }
}

impl http::Endpoints for State {
    fn metrics(&self) -> String {
        let stats = self.manager.storage().db().stats();
        let mut out = self
            .metrics
            .render(&stats, self.manager.active(), self.started.elapsed());
        let _ = write!(
            out,
            "# HELP strata_gc_safe_point The GC safe point (a hybrid timestamp): reads below it are refused.\n\
             # TYPE strata_gc_safe_point gauge\nstrata_gc_safe_point {}\n\
             # HELP strata_gc_stale_locks_resolved_total Locks of dead or expired transactions that GC resolved.\n\
             # TYPE strata_gc_stale_locks_resolved_total counter\nstrata_gc_stale_locks_resolved_total {}\n\
             # HELP strata_node_run_id This run of the node (grows by at least one per start).\n\
             # TYPE strata_node_run_id gauge\nstrata_node_run_id {}\n",
            self.gc_safe_point(),
            self.stale_locks_resolved.load(Ordering::Relaxed),
            self.run.run_id,
        );
        out
    }

    fn ready(&self) -> bool {
        self.readiness.is_ready()
    }

    fn status_page(&self) -> String {
        let stats = self.manager.storage().db().stats();
        format!(
            "<!doctype html><html><head><title>strata-node {id}</title></head><body>\
             <h1>strata-node {id}</h1><ul>\
             <li>version {version}</li><li>uptime {uptime} s</li>\
             <li>run {run}</li><li>gRPC {grpc}</li><li>data dir {dir}</li>\
             <li>active transactions {active}</li>\
             <li>SSTable bytes {sst}, memtable bytes {mem}, levels {levels}</li>\
             <li>write amplification {wa:.2}</li></ul>\
             <p><a href=\"/metrics\">metrics</a></p></body></html>\n",
            id = self.config.node_id,
            version = env!("CARGO_PKG_VERSION"),
            uptime = self.started.elapsed().as_secs(),
            run = self.run.run_id,
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
        let node_id = config.node_id;
        let (manager, tso, gc_backlog, run) =
            tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                std::fs::create_dir_all(&data_dir)
                    .with_context(|| format!("creating data directory {}", data_dir.display()))?;
                let tso = Arc::new(
                    LocalTso::open(LocalTsoOptions::new(data_dir.join("tso")))
                        .context("opening the timestamp oracle")?,
                );
                let now = tso.get_timestamp().context("taking the first timestamp")?;
                // The filter needs the safe point before the engine opens, and the saved
                // one lives in the engine: start at 0 (collect nothing) until it is read.
                let safe_point = GcSafePoint::new(0);
                let filter = MvccGcFilter::new(safe_point.clone());
                let gc_backlog = filter.backlog().clone();
                let mut options = options;
                options.compaction_filter = Some(Arc::new(filter));
                let db = Db::open(data_dir.join("db"), options).with_context(|| {
                    format!("opening the engine in {}", data_dir.join("db").display())
                })?;
                let meta = NodeMeta::new(db.clone());
                let run = meta.start_run(node_id).context("taking a new run id")?;
                let ids = TxnIds::new(node_id, run.run_id, Arc::new(meta.clone()))
                    .context("issuing transaction ids")?;
                let saved = SafePointStore::load(&meta).context("reading the GC safe point")?;
                let storage = Storage::with_safe_point(db, safe_point.with_store(Arc::new(meta)))
                    .with_local_run(run);
                let oldest_lock = storage
                    .oldest_lock_ts()
                    .context("looking for locks left on disk")?;
                if let (Some(saved), Some(lock)) = (saved, oldest_lock) {
                    if lock < saved {
                        tracing::warn!(saved, lock, "a lock on disk is older than the saved GC safe point; starting GC below it");
                    }
                }
                let start = start_safe_point(saved, oldest_lock, now, txn_config.gc_life_time);
                storage
                    .safe_point()
                    .advance_durably(start)
                    .context("saving the GC safe point")?;
                let manager = Arc::new(
                    TxnManager::new(Arc::new(storage), tso.clone(), txn_config)
                        .with_identity(run, ids),
                );
                Ok((manager, tso, gc_backlog, run))
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
            run,
            stale_locks_resolved: AtomicU64::new(0),
            metrics: Metrics::default(),
            started: Instant::now(),
            readiness: grpc::Readiness::new().await,
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
        let health = state.readiness.health_server(shutdown_rx.clone());
        let (reflection_v1, reflection_v1alpha) = grpc::reflection_servers()?;
        let mut grpc_shutdown = shutdown_rx.clone();
        let incoming =
            tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
        let grpc_task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(kv)
                .add_service(txn)
                .add_service(admin)
                .add_service(health)
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = grpc_shutdown.changed().await;
                })
                .await
        });
        state.readiness.set(true).await;

        let http_task = tokio::spawn(http::serve(
            http_listener,
            Arc::clone(&state),
            shutdown_rx.clone(),
        ));
        let reaper_task = tokio::spawn(reap_idle(Arc::clone(&state), shutdown_rx.clone()));
        let gc_task = tokio::spawn(run_gc(Arc::clone(&state), shutdown_rx));

        tracing::info!(%grpc_addr, %http_addr, node_id = state.config.node_id,
            run_id = state.run.run_id, data_dir = %state.config.data_dir.display(), "strata-node serving");
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

/// Rolls back idle transactions, and those past their maximum lifetime, every second until
/// shutdown.
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
                let state = Arc::clone(&state);
                // The timestamp oracle may fsync: off the async threads.
                let overdue = tokio::task::spawn_blocking(move || {
                    state.tso.get_timestamp().map(|now| state.manager.reap_overdue(now))
                });
                match overdue.await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => tracing::info!(rolled_back = n, "reaped transactions past txn.max_lifetime_s"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "reaping overdue transactions failed"),
                    Err(e) => tracing::warn!(error = %e, "reaper task failed"),
                }
            }
        }
    }
}

/// Runs a GC tick ([`State::gc_tick`]) every `txn.gc_interval_ms` until shutdown; the first
/// one interval after the start.
async fn run_gc(state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let period = Duration::from_millis(state.config.txn.gc_interval_ms);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
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
        // Probes and watchers see NOT_SERVING before the listener stops accepting.
        self.state.readiness.set(false).await;
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
