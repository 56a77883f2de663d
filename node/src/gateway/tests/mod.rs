//! Gateways in one process: two or three "nodes", each with its own engine, `Storage`,
//! `TxnManager`, router and internal shard service on 127.0.0.1, and a fake locator per node
//! (its view of who leads). The leader's storage holds the data; the others only route.
//!
//! This module is the harness; `routing.rs` runs transactions through gateways (reads,
//! writes, conflicts, lock waits, SERIALIZABLE, hints), `faults.rs` leader changes, lost
//! replies, refusals, unreachable leaders, batching and one-phase commits.
//!
//! Nothing here synchronises by sleeping: waits poll a condition under a deadline, and
//! races are forced with the service's hook (hold a command back, drop a reply, act after a
//! command).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use strata_proto::internal::v1 as pb;

use super::{
    Connections, LeaderLocator, NodeAddr, RoutedTso, RouterConfig, ServiceHook, ShardRouter,
    ShardService,
};
use crate::lsm::{Db, Options, WriteBatch};
use crate::mvcc::{GcSafePoint, MvccError, ScanLimit, Timestamp};
use crate::raftstore::{ShardEpoch, ShardId};
use crate::tso::{BatchingTso, LocalTso, LocalTsoOptions, Tso, TsoError};
use crate::txn::actions::{Mutation, PrewriteOptions};
use crate::txn::{
    ConflictKind, EngineWriter, ExecuteRequest, Isolation, ShardClient, ShardWriter, Storage,
    TxnConfig, TxnError, TxnId, TxnManager, WriteTicket,
};

const SHARD: ShardId = ShardId(1);

/// How long a test waits for something that must happen promptly.
const PATIENCE: Duration = Duration::from_secs(30);

/// Long enough that a lock never expires during a test.
const HOUR_MS: u64 = 3_600_000;

/// Polls `cond` until it holds; fails the test past `PATIENCE`.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The internal addresses of all nodes.
#[derive(Debug, Default)]
struct Book(Mutex<HashMap<u64, String>>);

/// One node's view of the shard: who leads, and its replica's epoch.
#[derive(Debug)]
struct View {
    me: u64,
    leader: Mutex<Option<u64>>,
    epoch: Mutex<ShardEpoch>,
    book: Arc<Book>,
}

impl LeaderLocator for View {
    fn local_leader_ready(&self, _shard: ShardId) -> bool {
        *self.leader.lock() == Some(self.me)
    }

    fn leader(&self, _shard: ShardId) -> Option<NodeAddr> {
        let node_id = (*self.leader.lock())?;
        Some(NodeAddr {
            node_id,
            addr: self.address(node_id)?,
        })
    }

    fn address(&self, node_id: u64) -> Option<String> {
        self.book.0.lock().get(&node_id).cloned()
    }

    fn local_epoch(&self, _shard: ShardId) -> Option<ShardEpoch> {
        Some(*self.epoch.lock())
    }
}

/// Writes straight into the engine, under a leader term the test sets.
#[derive(Debug)]
struct TermWriter {
    engine: EngineWriter,
    term: AtomicU64,
}

impl ShardWriter for TermWriter {
    fn begin_write(&self) -> crate::mvcc::Result<WriteTicket> {
        Ok(WriteTicket {
            term: self.term.load(Ordering::SeqCst),
        })
    }

    fn write(&self, ticket: WriteTicket, batch: WriteBatch) -> crate::mvcc::Result<()> {
        self.engine.write(ticket, batch)
    }

    fn read_barrier(&self) -> crate::mvcc::Result<()> {
        Ok(())
    }
}

/// A gate a held command waits at until it is opened.
#[derive(Debug, Default)]
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    fn wait(&self) {
        let deadline = Instant::now() + PATIENCE;
        let mut open = self.open.lock();
        while !*open {
            if self.cv.wait_until(&mut open, deadline).timed_out() {
                return;
            }
        }
    }

    fn open(&self) {
        *self.open.lock() = true;
        self.cv.notify_all();
    }
}

type Action = Box<dyn Fn() + Send + Sync>;

/// What the tests make the service do between commands and replies.
#[derive(Default)]
struct Hook {
    /// Replies to drop, per method.
    drop: Mutex<HashMap<&'static str, u32>>,
    /// Commands held at a gate, per method.
    hold: Mutex<HashMap<&'static str, Arc<Gate>>>,
    /// Run once after a method.
    after: Mutex<HashMap<&'static str, Action>>,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook").finish_non_exhaustive()
    }
}

impl ServiceHook for Hook {
    fn before(&self, method: &'static str) {
        let gate = self.hold.lock().get(method).cloned();
        if let Some(gate) = gate {
            gate.wait();
        }
    }

    fn drop_reply(&self, method: &'static str) -> bool {
        if let Some(action) = self.after.lock().remove(method) {
            action();
        }
        match self.drop.lock().get_mut(method) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}

struct Node {
    id: u64,
    _dir: tempfile::TempDir,
    writer: Arc<TermWriter>,
    storage: Arc<Storage>,
    local_tso: Arc<LocalTso>,
    view: Arc<View>,
    router: Arc<ShardRouter>,
    tso: Arc<BatchingTso<RoutedTso>>,
    mgr: Arc<TxnManager>,
    service: ShardService,
    hook: Arc<Hook>,
    connections: Arc<Connections>,
}

impl Node {
    /// What this node's replica holds for `key` now (no routing).
    fn stored(&self, key: &[u8]) -> Option<Vec<u8>> {
        let ts = self.local_tso.get_timestamp().unwrap();
        self.storage.get(key, ts, &[]).unwrap()
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<Option<Timestamp>, TxnError> {
        let (t, _) = self.mgr.begin(Isolation::Snapshot, false)?;
        self.mgr.write(t, key, Some(value))?;
        self.mgr.commit(t)
    }

    fn read(&self, key: &[u8]) -> Option<Vec<u8>> {
        let (t, _) = self.mgr.begin(Isolation::Snapshot, true).unwrap();
        let v = self.mgr.get(t, key).unwrap();
        self.mgr.rollback(t).unwrap();
        v
    }

    /// Begins a SERIALIZABLE transaction.
    fn begin_serializable(&self) -> TxnId {
        self.mgr.begin(Isolation::Serializable, false).unwrap().0
    }
}

struct Cluster {
    nodes: Vec<Node>,
    _shutdown: Vec<tokio::sync::oneshot::Sender<()>>,
    // Last: dropped after the nodes (their routers hold handles to it).
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self._shutdown.clear();
        self.nodes.clear();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

fn router_config() -> RouterConfig {
    RouterConfig {
        rpc_timeout: Duration::from_secs(10),
        retry_deadline: Duration::from_secs(3),
        min_backoff: Duration::from_millis(2),
        max_backoff: Duration::from_millis(50),
    }
}

impl Cluster {
    /// `n` nodes (ids 1..=n), node 1 leading in every view.
    fn start(n: u64, txn: TxnConfig, config: RouterConfig) -> Cluster {
        Cluster::start_with(n, txn, config, 2)
    }

    /// [`Cluster::start`] on a runtime of `workers` worker threads.
    fn start_with(n: u64, txn: TxnConfig, config: RouterConfig, workers: usize) -> Cluster {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .unwrap();
        let book = Arc::new(Book::default());
        let mut nodes = Vec::new();
        let mut shutdown = Vec::new();
        for id in 1..=n {
            let dir = tempfile::tempdir().unwrap();
            let db = Db::open(dir.path().join("db"), Options::small_for_tests()).unwrap();
            let writer = Arc::new(TermWriter {
                engine: EngineWriter::new(db.clone()),
                term: AtomicU64::new(1),
            });
            let storage = Arc::new(Storage::with_writer(
                db,
                GcSafePoint::default(),
                writer.clone(),
            ));
            let local_tso =
                Arc::new(LocalTso::open(LocalTsoOptions::new(dir.path().join("tso"))).unwrap());
            let view = Arc::new(View {
                me: id,
                leader: Mutex::new(Some(1)),
                epoch: Mutex::new(ShardEpoch::default()),
                book: Arc::clone(&book),
            });
            let connections = Connections::new(rt.handle().clone(), Duration::from_secs(2));
            let router = Arc::new(ShardRouter::new(
                id,
                SHARD,
                Arc::clone(&storage),
                view.clone(),
                Arc::clone(&connections),
                config.clone(),
            ));
            let tso = Arc::new(BatchingTso::new(RoutedTso::new(
                id,
                SHARD,
                local_tso.clone(),
                view.clone(),
                Arc::clone(&connections),
                config.clone(),
            )));
            let mgr = Arc::new(
                TxnManager::new(Arc::clone(&storage), tso.clone(), txn.clone())
                    .with_shards(router.clone()),
            );
            let service = ShardService::new(
                id,
                SHARD,
                Arc::clone(&storage),
                local_tso.clone(),
                view.clone(),
            );
            let hook = Arc::new(Hook::default());
            service.set_hook(Some(hook.clone()));
            let listener = rt
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            book.0.lock().insert(id, addr);
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let server = service.clone().into_server();
            rt.spawn(async move {
                let incoming = tonic::transport::server::TcpIncoming::from(listener);
                let _ = tonic::transport::Server::builder()
                    .add_service(server)
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = rx.await;
                    })
                    .await;
            });
            shutdown.push(tx);
            nodes.push(Node {
                id,
                _dir: dir,
                writer,
                storage,
                local_tso,
                view,
                router,
                tso,
                mgr,
                service,
                hook,
                connections,
            });
        }
        Cluster {
            nodes,
            _shutdown: shutdown,
            rt: Some(rt),
        }
    }

    fn node(&self, id: u64) -> &Node {
        &self.nodes[usize::try_from(id - 1).unwrap()]
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().unwrap()
    }
}

fn three() -> Cluster {
    Cluster::start(
        3,
        TxnConfig {
            lock_wait: Duration::from_secs(2),
            ..TxnConfig::default()
        },
        router_config(),
    )
}

fn is_conflict<T: std::fmt::Debug>(r: &Result<T, TxnError>) -> bool {
    matches!(r, Err(e @ TxnError::Conflict { .. }) if e.is_retryable())
}

mod faults;
mod routing;
