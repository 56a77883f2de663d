//! The node server: Strata's gRPC API, a small HTTP port, and the node's replica of the data
//! shard, over one engine.
//!
//! ```text
//!   gRPC (tonic)  Kv / Txn / Admin ──┐            HTTP  /metrics /healthz /readyz /
//!                                    ▼                    │
//!                 validate ─► spawn_blocking ─► TxnManager ─► Storage ─► RaftShardWriter
//!                                                  │                          │ propose
//!                                   BatchingTso ─► ReplicatedTso              ▼
//!                                                  (window via Raft)   replica (server/replica.rs):
//!   Raft port     strata.internal.v1.Raft ◄──────────────────────────► driver, raft-engine
//!                                                                     (<data_dir>/raft), KvApply
//!                                                                     ─► Db (<data_dir>/db)
//!   background    transaction reaper (every second); GC on the leader: resolve stale locks,
//!                 advance the safe point through Raft, sweep (every txn.gc_interval_ms);
//!                 followers follow the applied safe point; readiness (a leader is known)
//! ```
//!
//! [`Server::start`] checks the data directory's identity (`identity.json`: the node id owns
//! the data, see [`identity`]), opens the engine, binds the gRPC, HTTP and Raft listeners
//! (port 0 picks a free port; [`ServerHandle::addresses`] tells which, and so does
//! `<data_dir>/addresses.json`, written last), opens the data shard's replica (bootstrapping
//! it from the cluster configuration, [`ClusterConfig`], on fresh data, unless the other
//! initial members remember this node: it then joins as a new member) and spawns the tasks
//! (an initial member also registers its incarnation; a removed node serves no client and
//! answers `NODE_REMOVED`).
//! A single node is a one-voter group on the same path: it elects itself before `start`
//! returns. Every write is a Raft proposal acknowledged once applied on this node, the
//! leader; a node that does not lead answers `NOT_LEADER` with the leader's id (forwarding
//! comes with the gateway). [`ServerHandle::shutdown`] stops accepting, waits for in-flight
//! calls (bounded), rolls back open transactions (they wrote nothing yet, so this only
//! forgets them), flushes the engine and stops the replica. Applies skip the engine's WAL;
//! the raft log (fsynced before any acknowledgment) replays what the engine lost.
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
//! that the leader's background task advances every `txn.gc_interval_ms`: it first resolves
//! stale locks ([`resolver`](crate::txn::resolver): expired, or left by an earlier run), then
//! advances the safe point (`TxnManager::gc_tick`: the oldest live transaction or lock, and
//! at most `now - txn.gc_life_time_s`), committing it through Raft before it takes effect,
//! then sweeps what compactions reported (`Storage::gc_sweep`, its deletes proposed too).
//! Every replica's filter follows the safe point its state machine applied, so no read above
//! it can tell replicas apart. On start the safe point is the applied one; it is never
//! recomputed from the clock, which would let GC pass a lock that survived the restart and
//! drop the commit record its secondaries are resolved by. A node that leads at start runs
//! its first GC tick before it serves.
//!
//! Not yet here: TLS and authentication.

mod batch;
pub mod cluster;
pub mod config;
pub mod error;
mod grpc;
pub mod http;
pub mod identity;
pub mod membership;
pub mod metrics;
pub mod process;
pub mod replica;
pub mod service;

#[cfg(test)]
mod batch_tests;
#[cfg(test)]
mod grpc_tests;
#[cfg(test)]
mod membership_tests;
#[cfg(test)]
mod partition_tests;
#[cfg(test)]
mod partition_txn_tests;
#[cfg(test)]
mod restart_tests;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::BTreeMap;
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

pub use cluster::{Bootstrap, ClusterConfig, ClusterSettings, Member, PeerAddr};
pub use config::{ConfigArgs, LogConfig, LogFormat, NodeConfig};
pub use metrics::Metrics;
pub use service::{AdminService, KvService, TxnService};

use crate::gateway::{self, Connections, LeaderLocator, RoutedTso, RouterConfig, ShardRouter};
use crate::lsm::Db;
use crate::mvcc::gc::GcBacklog;
use crate::mvcc::{Coordinator, GcSafePoint, MvccGcFilter};
use crate::tso::{BatchingTso, LocalTso, LocalTsoOptions, ReplicatedTso, SystemClock, Tso};
use crate::txn::resolver::resolve_stale_locks;
use crate::txn::{NodeMeta, Storage, TxnIds, TxnManager};
use identity::{BoundAddresses, NodeIdentity};
use replica::{Membership, Replica, ReplicaOptions, DATA_SHARD};

/// How long shutdown waits for in-flight gRPC calls before dropping them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a gateway waits to connect to another node's internal port.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a one-node group may take to elect itself at start.
const LONE_LEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How far ahead of what it issued the timestamp oracle's persisted window reaches (one Raft
/// proposal per this much issued time).
const TSO_SAVE_INTERVAL_MS: u64 = 3_000;

/// What the services and the HTTP port share.
#[derive(Debug)]
pub(crate) struct State {
    config: NodeConfig,
    /// The resolved cluster configuration (with the Raft port actually bound).
    cluster: ClusterConfig,
    /// Who the data directory belongs to.
    identity: NodeIdentity,
    manager: Arc<TxnManager>,
    tso: Arc<dyn Tso>,
    /// The data shard's replica on this node.
    replica: Replica,
    /// Membership changes of the data shard (Admin calls, passed to the leader).
    membership: Arc<membership::Membership>,
    gc_backlog: GcBacklog,
    /// This run of the node.
    run: Coordinator,
    /// Locks the GC task's resolver committed or rolled back since the start.
    stale_locks_resolved: AtomicU64,
    metrics: Metrics,
    started: Instant,
    /// What `/readyz` and the gRPC health service answer.
    readiness: grpc::Readiness,
    /// Set once the node shuts down: calls in flight are answered at once (D156).
    closing: watch::Receiver<bool>,
    /// Calls a test holds in flight.
    #[cfg(test)]
    test_hold: tests::CallHold,
}

impl State {
    /// The GC safe point.
    fn gc_safe_point(&self) -> u64 {
        self.manager.storage().safe_point().get()
    }

    /// Resolves stale locks, advances (and saves) the safe point and sweeps the GC backlog
    /// (blocking). Leader work: a node that does not lead the shard skips the tick.
    fn gc_tick(&self) -> anyhow::Result<()> {
        let leader = match self.manager.local_leader() {
            Some(leader) if self.replica.leads() => leader,
            _ => {
                // GC decisions are the leader's: a follower's filter collects below the safe
                // point the leader saved through Raft, and the values it reports are deleted
                // by the leader's sweeps (its own filter reports the same versions).
                self.replica
                    .sync_safe_point(self.manager.storage().safe_point());
                drop(self.gc_backlog.take());
                return Ok(());
            }
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
        self.node_counters().render(&mut out);
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
             <li>run {run}</li><li>gRPC {grpc}</li><li>Raft {raft}</li>\
             <li>data dir {dir}</li>\
             <li>active transactions {active}</li>\
             <li>SSTable bytes {sst}, memtable bytes {mem}, levels {levels}</li>\
             <li>write amplification {wa:.2}</li></ul>\
             <p><a href=\"/metrics\">metrics</a></p></body></html>\n",
            id = self.config.node_id,
            version = env!("CARGO_PKG_VERSION"),
            uptime = self.started.elapsed().as_secs(),
            run = self.run.run_id,
            grpc = html_escape(self.cluster.advertise_grpc_addr.as_str()),
            raft = html_escape(self.cluster.advertise_raft_addr.as_str()),
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
        let cluster = config.cluster_config()?;
        let data_dir = config.data_dir.clone();
        let options = config.engine_options();
        let txn_config = config.txn_config();
        let node_id = config.node_id;
        let opened = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("creating data directory {}", data_dir.display()))?;
            // A parent waiting for this run's addresses must not read the last run's.
            BoundAddresses::remove(&data_dir).context("removing the old address file")?;
            // Before anything else is opened: the data must be this node's.
            let established = identity::establish(&data_dir, node_id)?;
            if established.created {
                tracing::info!(node_id, incarnation = %established.identity.incarnation,
                    "new node identity written to the data directory");
            }
            let tso_floor_ms = legacy_tso_mark(&data_dir)?;
            // The filter needs the safe point before the engine opens, and the replicated
            // one is applied into the engine: start at 0 (collect nothing) until it is read.
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
            Ok(Opened {
                db,
                run,
                ids,
                identity: established.identity,
                gc_backlog,
                safe_point,
                tso_floor_ms,
            })
        })
        .await
        .context("opening the data directory")??;

        let grpc_listener = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("binding the gRPC address {}", config.grpc_addr))?;
        let http_listener = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("binding the HTTP address {}", config.http_addr))?;
        let raft_listener = TcpListener::bind(cluster.raft_listen)
            .await
            .with_context(|| format!("binding the Raft address {}", cluster.raft_listen))?;
        let grpc_addr = grpc_listener.local_addr()?;
        let http_addr = http_listener.local_addr()?;
        let raft_addr = raft_listener.local_addr()?;
        let mut cluster = cluster.with_bound_raft_addr(raft_addr);
        if cluster.advertise_grpc_addr.port() == 0 {
            // Port 0 asked for a free port: advertise the one bound.
            cluster.advertise_grpc_addr = cluster.advertise_grpc_addr.with_port(grpc_addr.port());
        }

        let Opened {
            db,
            run,
            ids,
            identity,
            gc_backlog,
            safe_point,
            tso_floor_ms,
        } = opened;
        let replica = Replica::open(
            config.data_dir.clone(),
            db.clone(),
            ReplicaOptions {
                incarnation: identity.incarnation.clone(),
                ..replica_options(&config, &cluster)
            },
            tso_floor_ms,
        )
        .await
        .context("opening the data shard's replica")?;
        let storage = Arc::new(
            Storage::with_writer(
                db,
                safe_point.with_store(Arc::new(replica.safe_point_store())),
                Arc::new(replica.writer()),
            )
            .with_local_run(run),
        );
        replica.sync_safe_point(storage.safe_point());
        // The oracle this node serves when it leads (to itself and to other gateways), and
        // the one its coordinator uses: local when leading, else the leader's, in batches.
        let local_tso: Arc<dyn Tso> = Arc::new(BatchingTso::new(ReplicatedTso::new(
            Arc::new(replica.tso_group()),
            Arc::new(SystemClock),
            TSO_SAVE_INTERVAL_MS,
        )));
        let locator: Arc<dyn LeaderLocator> = Arc::new(replica.locator());
        // The gateway's calls obey the node's fault rules, as its Raft messages do.
        let connections = Connections::with_faults(
            tokio::runtime::Handle::current(),
            CONNECT_TIMEOUT,
            crate::raftstore::types::NodeId(node_id),
            replica.net_faults().clone(),
        );
        let tso: Arc<dyn Tso> = Arc::new(BatchingTso::new(RoutedTso::new(
            node_id,
            DATA_SHARD,
            Arc::clone(&local_tso),
            Arc::clone(&locator),
            Arc::clone(&connections),
            RouterConfig::default(),
        )));
        // A new leader takes its max_ts floor for one-phase commits from the oracle.
        storage.set_ts_source(Arc::clone(&tso));
        let router = ShardRouter::new(
            node_id,
            DATA_SHARD,
            Arc::clone(&storage),
            Arc::clone(&locator),
            connections,
            RouterConfig::default(),
        );
        let membership = Arc::new(replica.membership(crate::raftstore::MemberAddr {
            raft: cluster.advertise_raft_addr.to_string(),
            grpc: cluster.advertise_grpc_addr.to_string(),
            incarnation: identity.incarnation.clone(),
        }));
        replica
            .serve(
                raft_listener,
                gateway::shard_service(
                    node_id,
                    DATA_SHARD,
                    Arc::clone(&storage),
                    local_tso,
                    locator,
                ),
                Arc::clone(&membership),
            )
            .context("serving the internal port")?;
        // A node that joins and has never received any log asks its seeds to add it; one
        // with a log (added before, or removed since) ignores `--join`.
        // So does an initial member that found the cluster formed when it started on fresh
        // data (D125), through the other initial members.
        let join_seeds = match &cluster.bootstrap {
            Bootstrap::Join { seeds } if replica.never_joined() => {
                Some(seeds.iter().map(ToString::to_string).collect::<Vec<_>>())
            }
            Bootstrap::Initial { members } if replica.never_joined() && !replica.is_removed() => {
                Some(
                    members
                        .iter()
                        .filter(|(id, _)| **id != cluster.node_id)
                        .map(|(_, a)| a.to_string())
                        .collect::<Vec<_>>(),
                )
            }
            _ => None,
        };
        // A member restarted at other addresses asks its peers to move it (D169).
        let move_seeds = if join_seeds.is_none() && !replica.is_removed() {
            membership::move_seeds(
                &replica.state().members(),
                cluster.node_id,
                &identity.incarnation,
                &cluster.advertise_raft_addr.to_string(),
                &cluster.advertise_grpc_addr.to_string(),
            )
        } else {
            None
        };
        let join_seeds = join_seeds.or(move_seeds);
        // An initial member with its log records its incarnation in the directory (D126).
        let registers = matches!(cluster.bootstrap, Bootstrap::Initial { .. })
            && !replica.never_joined()
            && !replica.is_removed();
        // A lone voter elects itself at once: serve only once it leads, so that a client
        // that connects as soon as this returns is not told to go elsewhere.
        if replica.is_lone_voter() {
            wait_for_leadership(&replica, LONE_LEADER_TIMEOUT).await?;
        }
        let manager = Arc::new(
            TxnManager::new(storage, Arc::clone(&tso), txn_config)
                .with_identity(run, ids)
                .with_shards(Arc::new(router)),
        );

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let state = Arc::new(State {
            config,
            cluster,
            identity,
            manager,
            tso,
            replica,
            membership,
            gc_backlog,
            run,
            stale_locks_resolved: AtomicU64::new(0),
            metrics: Metrics::default(),
            started: Instant::now(),
            readiness: grpc::Readiness::new().await,
            closing: shutdown_rx.clone(),
            #[cfg(test)]
            test_hold: tests::CallHold::default(),
        });

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

        let http_task = tokio::spawn(http::serve(
            http_listener,
            Arc::clone(&state),
            shutdown_rx.clone(),
        ));
        if state.replica.leads() {
            // A node that leads at start (a lone voter) resolves the locks its earlier runs
            // left and sets the safe point before it serves, as its GC task would later.
            let st = Arc::clone(&state);
            match tokio::task::spawn_blocking(move || st.gc_tick()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "first GC tick failed"),
                Err(e) => tracing::warn!(error = %e, "first GC tick failed"),
            }
        }
        // Ready at once when a leader is known already (always, for a lone voter), so that
        // whoever sees `start` return sees SERVING; the task follows changes from here.
        if state.replica.status().is_some_and(|s| s.leader.is_some()) {
            state.readiness.set(true).await;
        }
        let readiness_task = tokio::spawn(track_readiness(Arc::clone(&state), shutdown_rx.clone()));
        let reaper_task = tokio::spawn(reap_idle(Arc::clone(&state), shutdown_rx.clone()));
        let gc_task = tokio::spawn(run_gc(Arc::clone(&state), shutdown_rx.clone()));
        let mut tasks = vec![http_task, readiness_task, reaper_task, gc_task];
        let me = strata_proto::v1::AddNodeRequest {
            node_id: state.cluster.node_id,
            raft_addr: state.cluster.advertise_raft_addr.to_string(),
            grpc_addr: state.cluster.advertise_grpc_addr.to_string(),
            incarnation: state.identity.incarnation.clone(),
            catch_up_timeout_ms: 0,
        };
        if registers {
            let bootstrap_entries = match &state.cluster.bootstrap {
                Bootstrap::Initial { members } => members.len() as u64,
                _ => 0,
            };
            tasks.push(tokio::spawn(membership::register(
                Arc::clone(&state.membership),
                me.clone(),
                bootstrap_entries,
                shutdown_rx.clone(),
            )));
        }
        if let Some(seeds) = join_seeds {
            tasks.push(tokio::spawn(membership::join(
                seeds,
                me,
                state.replica.address_book().clone(),
                shutdown_rx,
            )));
        }

        let addresses = BoundAddresses {
            node_id: state.config.node_id,
            pid: std::process::id(),
            grpc: grpc_addr,
            http: http_addr,
            raft: raft_addr,
            advertise_grpc: state.cluster.advertise_grpc_addr.to_string(),
            advertise_raft: state.cluster.advertise_raft_addr.to_string(),
        };
        let handle = ServerHandle {
            state,
            addresses,
            shutdown_tx,
            grpc_task: Some(grpc_task),
            tasks,
        };
        // Last: whoever waits for this file may connect as soon as it appears.
        if let Err(e) = handle.addresses.write(&handle.state.config.data_dir) {
            let e = anyhow::Error::from(e).context("writing the address file");
            let _ = handle.shutdown().await;
            return Err(e);
        }
        tracing::info!(%grpc_addr, %http_addr, %raft_addr, node_id = handle.state.config.node_id,
            run_id = handle.state.run.run_id, data_dir = %handle.state.config.data_dir.display(), "strata-node serving");
        Ok(handle)
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

/// `/readyz` and the gRPC health service say SERVING while this node's replica knows a
/// leader for the data shard (this node or another; before that, nothing can be served),
/// checked every 100 ms until shutdown.
async fn track_readiness(state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {
                let removed = state.replica.check_removal().await;
                let ready = !removed
                    && state.replica.handle().stop_reason().is_none()
                    && state.replica.status().is_some_and(|s| s.leader.is_some());
                if last != Some(ready) {
                    state.readiness.set(ready).await;
                    last = Some(ready);
                }
            }
        }
    }
}

/// Waits until `replica` leads the data shard and is ready, up to `timeout`.
async fn wait_for_leadership(replica: &Replica, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !replica.leads() {
        if let Some(reason) = replica.handle().stop_reason() {
            anyhow::bail!("the raft driver stopped: {reason}");
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "this node did not become the leader of its one-node group within {timeout:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// What the blocking part of [`Server::start`] opens.
struct Opened {
    db: Db,
    run: Coordinator,
    ids: TxnIds,
    identity: NodeIdentity,
    gc_backlog: GcBacklog,
    safe_point: GcSafePoint,
    tso_floor_ms: u64,
}

/// The mark of the oracle that data directories written before replication kept in
/// `<data_dir>/tso`, if any: the replicated oracle starts above it, so an upgraded node
/// never issues a timestamp below one it issued before.
fn legacy_tso_mark(data_dir: &std::path::Path) -> anyhow::Result<u64> {
    let path = data_dir.join("tso");
    if !path.exists() {
        return Ok(0);
    }
    let tso = LocalTso::open(LocalTsoOptions::new(path))
        .context("reading the timestamp oracle's old mark file")?;
    Ok(tso.persisted_mark_ms())
}

/// The replica's options from the node's configuration.
fn replica_options(config: &NodeConfig, cluster: &ClusterConfig) -> ReplicaOptions {
    let mut peers: BTreeMap<u64, String> = cluster
        .configured_members()
        .into_iter()
        .map(|(id, addr)| (id, addr.to_string()))
        .collect();
    peers.remove(&cluster.node_id);
    let membership = match &cluster.bootstrap {
        Bootstrap::Single => Membership::Bootstrap(BTreeMap::from([(
            cluster.node_id,
            cluster.advertise_raft_addr.to_string(),
        )])),
        Bootstrap::Initial { members } => Membership::Bootstrap(
            members
                .iter()
                .map(|(id, addr)| (*id, addr.to_string()))
                .collect(),
        ),
        Bootstrap::Join { .. } => Membership::Join,
    };
    ReplicaOptions {
        node_id: cluster.node_id,
        peers,
        membership,
        tick: Duration::from_millis(config.raft_tick_ms()),
        incarnation: String::new(),
    }
}

type GrpcTask = JoinHandle<Result<(), tonic::transport::Error>>;

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    state: Arc<State>,
    addresses: BoundAddresses,
    shutdown_tx: watch::Sender<bool>,
    grpc_task: Option<GrpcTask>,
    tasks: Vec<JoinHandle<()>>,
}

impl ServerHandle {
    /// The address the gRPC listener is bound to.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.addresses.grpc
    }

    /// The address the HTTP listener is bound to.
    pub fn http_addr(&self) -> SocketAddr {
        self.addresses.http
    }

    /// The address the Raft listener is bound to.
    pub fn raft_addr(&self) -> SocketAddr {
        self.addresses.raft
    }

    /// Every bound and advertised address (also in `<data_dir>/addresses.json`).
    pub fn addresses(&self) -> &BoundAddresses {
        &self.addresses
    }

    /// The resolved cluster configuration, with the Raft port actually bound.
    pub fn cluster(&self) -> &ClusterConfig {
        &self.state.cluster
    }

    /// The identity of the data directory.
    pub fn identity(&self) -> &NodeIdentity {
        &self.state.identity
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.state.config
    }

    /// The fault rules of this node's outgoing Raft messages, for tests that partition or
    /// degrade the network between in-process nodes (see [`Replica::net_faults`]).
    pub fn net_faults(&self) -> &crate::raftstore::transport::NetFaults {
        self.state.replica.net_faults()
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
        // Calls in flight, here and on the internal port, are answered now (D156).
        let _ = self.shutdown_tx.send(true);
        self.state.membership.close();
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
        // After the flush: what the replica applied is durable, the log need not be replayed.
        self.state.replica.shutdown().await;
        tracing::info!("shut down");
        Ok(())
    }
}

impl State {
    /// The members for Admin.Status: the data shard's configuration as this replica
    /// applied it, with the recorded addresses (a joining node not added yet: itself).
    fn members(&self) -> Vec<strata_proto::v1::ClusterMember> {
        let members = self.membership.members();
        if !members.is_empty() {
            return members;
        }
        vec![strata_proto::v1::ClusterMember {
            node_id: self.cluster.node_id,
            raft_addr: self.cluster.advertise_raft_addr.to_string(),
            grpc_addr: self.cluster.advertise_grpc_addr.to_string(),
            voter: false,
            incarnation: self.identity.incarnation.clone(),
        }]
    }

    /// The replica rows of Admin.Status: this node's replica of each shard, and on a leader
    /// the other replicas as it sees them (their match index gives their lag).
    /// The process and write-path counters of this node (`/metrics` and `Admin.Status`).
    pub(crate) fn node_counters(&self) -> metrics::NodeCounters {
        let driver = self.replica.handle().stats();
        let blind = self.manager.storage().blind_write_counts();
        let reads = self.manager.storage().latest_read_counts();
        metrics::NodeCounters {
            cpu_seconds: crate::bench::procfs::process_cpu_seconds(),
            raft_log_writes: driver.log_writes,
            raft_log_syncs: driver.log_syncs,
            engine_wal_syncs: self.manager.storage().db().stats().wal_syncs,
            raft_proposals: driver.proposals,
            raft_proposal_readies: driver.proposal_readies,
            raft_readies: driver.readies,
            raft_messages_stepped: driver.messages_stepped,
            raft_log_bytes: self.replica.raft_log_bytes(),
            blind_writes_committed: blind.committed,
            blind_writes_declined: blind.declined,
            latest_reads_served: reads.served,
            latest_reads_declined: reads.declined,
        }
    }

    /// What opening the data shard's replica found, for `Admin.Status`.
    pub(crate) fn recovery_info(&self) -> strata_proto::v1::RecoveryInfo {
        let r = self.replica.recovery();
        strata_proto::v1::RecoveryInfo {
            applied_index_at_open: r.applied_index,
            last_index_at_open: r.last_index,
            raft_log_bytes_at_open: r.raft_log_bytes,
            open_seconds: r.open_duration.as_secs_f64(),
        }
    }

    fn replica_rows(&self) -> Vec<strata_proto::v1::ReplicaStatus> {
        use strata_proto::v1::{ReplicaRole, ReplicaStatus as Row};
        let Some(s) = self.replica.status() else {
            return Vec::new();
        };
        let role = |r: crate::raftstore::Role| match r {
            crate::raftstore::Role::Leader => ReplicaRole::Leader,
            crate::raftstore::Role::Follower => ReplicaRole::Follower,
            crate::raftstore::Role::Candidate => ReplicaRole::Candidate,
            crate::raftstore::Role::PreCandidate => ReplicaRole::PreCandidate,
        };
        let leader = s.leader.map_or(0, |p| p.0);
        let mut own_role = role(s.role);
        if s.learners.contains(&s.peer) {
            own_role = ReplicaRole::Learner;
        }
        let mut rows = vec![Row {
            shard_id: s.shard.0,
            node_id: s.peer.0,
            peer_id: s.peer.0,
            role: own_role as i32,
            term: s.term,
            leader_peer_id: leader,
            commit_index: s.commit,
            applied_index: s.applied,
            lag: 0,
            leader_node_id: leader,
            recently_active: true,
        }];
        for p in &s.progress {
            let learner = s.learners.contains(&p.peer);
            rows.push(Row {
                shard_id: s.shard.0,
                node_id: p.peer.0,
                peer_id: p.peer.0,
                role: if learner {
                    ReplicaRole::Learner
                } else {
                    ReplicaRole::Follower
                } as i32,
                term: s.term,
                leader_peer_id: leader,
                commit_index: p.matched.min(s.commit),
                applied_index: 0,
                lag: s.last_index.saturating_sub(p.matched),
                leader_node_id: leader,
                recently_active: p.recent_active,
            });
        }
        rows
    }

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
