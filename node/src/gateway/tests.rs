//! Gateways in one process: two or three "nodes", each with its own engine, `Storage`,
//! `TxnManager`, router and internal shard service on 127.0.0.1, and a fake locator per node
//! (its view of who leads). The leader's storage holds the data; the others only route.
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

#[test]
fn transactions_begun_on_any_gateway_run_on_the_leaders_storage() {
    let c = three();
    let (a, b, cc) = (c.node(1), c.node(2), c.node(3));
    for i in 0..10u8 {
        let key = format!("k/{i:02}").into_bytes();
        b.put(&key, &[b'v', i]).unwrap();
    }
    // The data is on the leader only: B and C merely routed.
    assert_eq!(a.stored(b"k/03"), Some(b"v\x03".to_vec()));
    assert_eq!(b.stored(b"k/03"), None);
    assert_eq!(cc.stored(b"k/03"), None);
    assert_eq!(cc.read(b"k/03"), Some(b"v\x03".to_vec()));

    // A scan from C, three pairs a page, through the leader.
    let (t, _) = cc.mgr.begin(Isolation::Snapshot, true).unwrap();
    let mut from = b"k/".to_vec();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = cc
            .mgr
            .scan_page(t, &from, Some(b"k0"), ScanLimit::pairs(3), false)
            .unwrap();
        pages += 1;
        seen.extend(page.pairs.iter().map(|(k, _)| k.clone()));
        match (page.more, page.pairs.last()) {
            (true, Some((last, _))) => {
                from = last.clone();
                from.push(0);
            }
            _ => break,
        }
    }
    cc.mgr.rollback(t).unwrap();
    assert_eq!(seen.len(), 10);
    assert!(pages >= 4, "{pages} pages");
    // Reverse, with the transaction's own writes laid over the leader's rows.
    let (t, _) = b.mgr.begin(Isolation::Snapshot, false).unwrap();
    b.mgr.write(t, b"k/05", None).unwrap();
    let rows = b.mgr.scan(t, b"k/", Some(b"k0"), 3, true).unwrap();
    let keys: Vec<&[u8]> = rows.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(keys, [&b"k/09"[..], b"k/08", b"k/07"]);
    b.mgr.rollback(t).unwrap();

    assert_eq!(b.router.stats().local.load(Ordering::Relaxed), 0);
    assert!(b.router.stats().remote.load(Ordering::Relaxed) > 0);
    assert_eq!(
        b.connections.channels(),
        1,
        "one channel to the leader, reused"
    );
    assert_eq!(a.connections.channels(), 0, "the leader calls nobody");
    assert!(a.service.calls("prewrite") >= 10);
    assert!(a.service.calls("scan_page") >= 4);
    // On the leader itself, commands run in-process.
    a.put(b"own", b"1").unwrap();
    assert!(a.router.stats().local.load(Ordering::Relaxed) > 0);
    assert_eq!(a.router.stats().remote.load(Ordering::Relaxed), 0);
    assert_eq!(cc.read(b"own"), Some(b"1".to_vec()));
}

#[test]
fn conflicts_and_lock_resolution_cross_gateways() {
    let c = three();
    let (a, b, cc) = (c.node(1), c.node(2), c.node(3));
    // Two gateways write the same key: the second to commit aborts.
    let (t1, _) = b.mgr.begin(Isolation::Snapshot, false).unwrap();
    let (t2, _) = cc.mgr.begin(Isolation::Snapshot, false).unwrap();
    b.mgr.write(t1, b"x", Some(b"b")).unwrap();
    cc.mgr.write(t2, b"x", Some(b"c")).unwrap();
    b.mgr.commit(t1).unwrap();
    let r = cc.mgr.commit(t2);
    assert!(
        matches!(
            r,
            Err(TxnError::Conflict {
                kind: ConflictKind::WriteConflict,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(a.stored(b"x"), Some(b"b".to_vec()));

    // A transaction that committed only its primary (through B's router); C's read of the
    // secondary resolves it through the primary, over the RPC.
    let start = b.tso.get_timestamp().unwrap();
    let keys = [b"p".to_vec(), b"s".to_vec()];
    let ms: Vec<Mutation> = keys
        .iter()
        .map(|k| Mutation::Put(k.clone(), b"2pc".to_vec()))
        .collect();
    let opts = PrewriteOptions {
        primary: keys[0].clone(),
        ttl_ms: HOUR_MS,
        min_commit_ts: start + 1,
        coordinator: None,
    };
    b.router.prewrite(&ms, &opts, start).unwrap();
    let commit_ts = b.tso.get_timestamp().unwrap();
    b.router.commit(&keys[..1], start, commit_ts, None).unwrap();
    assert_eq!(a.storage.lock_holder(b"s").unwrap(), Some(start));
    assert_eq!(cc.read(b"s"), Some(b"2pc".to_vec()));
    assert_eq!(
        a.storage.lock_holder(b"s").unwrap(),
        None,
        "resolved forward at the leader"
    );
    assert!(a.service.calls("check_txn_status") >= 1);
    assert!(a.service.calls("resolve_lock") >= 1);
}

#[test]
fn lock_waits_at_a_remote_leader_are_woken_by_a_release_over_the_rpc() {
    let c = Cluster::start(
        3,
        TxnConfig {
            // Only a release can end these waits in time.
            lock_wait: PATIENCE,
            ..TxnConfig::default()
        },
        router_config(),
    );
    let (a, b, cc) = (c.node(1), c.node(2), c.node(3));
    let holder = a.local_tso.get_timestamp().unwrap();
    let opts = PrewriteOptions {
        primary: b"hot".to_vec(),
        ttl_ms: HOUR_MS,
        min_commit_ts: holder + 1,
        coordinator: None,
    };
    a.storage
        .prewrite(
            &[Mutation::Put(b"hot".to_vec(), b"held".to_vec())],
            &opts,
            holder,
        )
        .unwrap();

    // Two gateways block on the lock: C synchronously (a thread waits on the poll), B on
    // the asynchronous path (the poll is a future: no thread held while it waits).
    let began = Instant::now();
    let (tc, _) = cc.mgr.begin(Isolation::Snapshot, false).unwrap();
    cc.mgr.write(tc, b"hot", Some(b"c")).unwrap();
    let sync_commit = {
        let mgr = Arc::clone(&cc.mgr);
        std::thread::spawn(move || mgr.commit(tc))
    };
    let (tb, _) = b.mgr.begin(Isolation::Snapshot, false).unwrap();
    b.mgr.write(tb, b"hot", Some(b"b")).unwrap();
    let async_commit = c.rt().spawn(Arc::clone(&b.mgr).commit_async(tb));
    wait_until("both gateways wait at the leader", || {
        a.storage.lock_waits().waiting(b"hot") == 2
    });
    assert_eq!(a.service.calls("wait_for_lock"), 2);

    // Released over the RPC, from the third node's router.
    b.router.rollback(&[b"hot".to_vec()], holder).unwrap();
    let rc = sync_commit.join().unwrap();
    let rb = c.rt().block_on(async_commit).unwrap();
    assert!(began.elapsed() < PATIENCE, "woken, not timed out");
    // Both were woken and went on: one took the key and committed, the other then met
    // its commit (a newer write than its start) and aborted, retryably.
    let winner = match (&rc, &rb) {
        (Ok(Some(_)), r) if is_conflict(r) => b"c",
        (r, Ok(Some(_))) if is_conflict(r) => b"b",
        _ => panic!("expected one commit and one conflict: {rc:?} {rb:?}"),
    };
    assert_eq!(a.stored(b"hot"), Some(winner.to_vec()));
    assert_eq!(a.storage.lock_waits().total_waiting(), 0);
    // Woken by releases, not polling: the two first polls, and at most one more each.
    assert!(a.service.calls("wait_for_lock") <= 4);
}

#[test]
fn serializable_write_skew_is_refused_across_gateways() {
    let c = three();
    let (a, b, cc) = (c.node(1), c.node(2), c.node(3));
    a.put(b"x", b"1").unwrap();
    a.put(b"y", b"1").unwrap();
    // Point reads: B reads x and writes y, C reads y and writes x.
    let t1 = b.begin_serializable();
    let t2 = cc.begin_serializable();
    assert_eq!(b.mgr.get(t1, b"x").unwrap(), Some(b"1".to_vec()));
    assert_eq!(cc.mgr.get(t2, b"y").unwrap(), Some(b"1".to_vec()));
    b.mgr.write(t1, b"y", Some(b"0")).unwrap();
    cc.mgr.write(t2, b"x", Some(b"0")).unwrap();
    let r1 = b.mgr.commit(t1);
    let r2 = cc.mgr.commit(t2);
    assert!(
        r1.is_ok() != r2.is_ok(),
        "exactly one commits: {r1:?} {r2:?}"
    );
    assert!(is_conflict(&r2), "{r2:?}");
    // Scans (range locks at the leader): B scans a/ and writes b/1, C scans b/ and writes a/1.
    let t3 = b.begin_serializable();
    let t4 = cc.begin_serializable();
    assert!(b
        .mgr
        .scan(t3, b"a/", Some(b"a0"), 10, false)
        .unwrap()
        .is_empty());
    assert!(cc
        .mgr
        .scan(t4, b"b/", Some(b"b0"), 10, false)
        .unwrap()
        .is_empty());
    b.mgr.write(t3, b"b/1", Some(b"1")).unwrap();
    cc.mgr.write(t4, b"a/1", Some(b"1")).unwrap();
    assert!(b.mgr.commit(t3).is_ok());
    let r4 = cc.mgr.commit(t4);
    assert!(is_conflict(&r4), "{r4:?}");
    assert_eq!(
        a.stored(b"a/1"),
        None,
        "nothing of the aborted one committed"
    );
    assert!(a.service.calls("lock_ranges") >= 2);
    wait_until("the range locks are released at the leader", || {
        a.storage.range_locks().is_empty()
    });
}

#[test]
fn a_not_leader_hint_is_followed_to_the_node_that_leads_now() {
    let c = three();
    let (a, b, cc) = (c.node(1), c.node(2), c.node(3));
    // Leadership moves to B; A and B know it, C's view is stale.
    *a.view.leader.lock() = Some(2);
    *b.view.leader.lock() = Some(2);
    let r = cc.mgr.execute(
        &ExecuteRequest {
            writes: vec![(b"moved".to_vec(), Some(b"1".to_vec()))],
            ..ExecuteRequest::default()
        },
        1,
    );
    assert!(r.unwrap().commit_ts.is_some());
    assert_eq!(b.stored(b"moved"), Some(b"1".to_vec()));
    assert_eq!(a.stored(b"moved"), None);
    assert!(cc.router.stats().hints_followed.load(Ordering::Relaxed) >= 2);
    assert!(
        cc.tso
            .inner()
            .stats()
            .hints_followed
            .load(Ordering::Relaxed)
            >= 1
    );
    assert!(
        a.service.calls("prewrite") >= 1,
        "tried the old leader first"
    );
    assert_eq!(
        cc.connections.channels(),
        2,
        "one channel per leader address"
    );
    // Once C's view catches up it goes to B directly.
    *cc.view.leader.lock() = Some(2);
    let hints = cc.router.stats().hints_followed.load(Ordering::Relaxed);
    assert_eq!(cc.read(b"moved"), Some(b"1".to_vec()));
    assert_eq!(
        cc.router.stats().hints_followed.load(Ordering::Relaxed),
        hints
    );
}

#[test]
fn a_leader_change_between_range_locks_and_commit_fails_the_commit_with_nothing_committed() {
    let c = three();
    let (a, b) = (c.node(1), c.node(2));
    // Right after the range locks are registered, the leader is in a new term (it lost
    // its lead and regained it: another leader may have accepted writes meanwhile).
    let writer = Arc::clone(&a.writer);
    a.hook.after.lock().insert(
        "lock_ranges",
        Box::new(move || {
            writer.term.fetch_add(1, Ordering::SeqCst);
        }),
    );
    let t = b.begin_serializable();
    assert!(b
        .mgr
        .scan(t, b"r/", Some(b"r0"), 10, false)
        .unwrap()
        .is_empty());
    b.mgr.write(t, b"w", Some(b"1")).unwrap();
    let r = b.mgr.commit(t);
    assert!(
        matches!(
            r,
            Err(TxnError::Conflict {
                kind: ConflictKind::RangeLocked,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(r.unwrap_err().is_retryable());
    assert_eq!(a.stored(b"w"), None, "nothing committed");
    assert_eq!(
        a.storage.lock_holder(b"w").unwrap(),
        None,
        "rolled back: nobody waits out its locks"
    );
    assert_eq!(a.service.calls("lock_ranges"), 1);
    // Run again with a stable leader: it commits.
    let t = b.begin_serializable();
    assert!(b
        .mgr
        .scan(t, b"r/", Some(b"r0"), 10, false)
        .unwrap()
        .is_empty());
    b.mgr.write(t, b"w", Some(b"2")).unwrap();
    assert!(b.mgr.commit(t).unwrap().is_some());
    assert_eq!(a.stored(b"w"), Some(b"2".to_vec()));
}

#[test]
fn the_guard_refuses_range_locks_of_another_term_or_another_leader() {
    let c = Cluster::start(2, TxnConfig::default(), router_config());
    let (a, b) = (c.node(1), c.node(2));
    let lease = Duration::from_secs(60);
    let owner = a.local_tso.get_timestamp().unwrap();
    let opts = PrewriteOptions {
        primary: b"g".to_vec(),
        ttl_ms: HOUR_MS,
        min_commit_ts: owner + 1,
        coordinator: None,
    };
    let put = [Mutation::Put(b"g".to_vec(), b"1".to_vec())];
    let range = [(b"q/".to_vec(), Some(b"q0".to_vec()))];
    // Registered in term 1, committing in term 2: refused, nothing written.
    let term = a.storage.lock_ranges(owner, &range, lease).unwrap();
    a.storage.prewrite(&put, &opts, owner).unwrap();
    a.writer.term.store(term + 1, Ordering::SeqCst);
    let ts = a.local_tso.get_timestamp().unwrap();
    assert!(matches!(
        a.storage
            .commit_guarded(&[b"g".to_vec()], owner, ts, Some(term)),
        Err(MvccError::RangeLocksLost { .. })
    ));
    assert_eq!(a.storage.lock_holder(b"g").unwrap(), Some(owner));
    // A leader that never saw the registration (another node) refuses too.
    b.storage.prewrite(&put, &opts, owner).unwrap();
    assert!(matches!(
        b.storage
            .commit_guarded(&[b"g".to_vec()], owner, ts, Some(term)),
        Err(MvccError::RangeLocksLost { .. })
    ));
    // Registered and committed in the same term: committed; a retry of that commit is Ok
    // even once the locks are gone (the guard only applies while the primary is locked).
    a.writer.term.store(term, Ordering::SeqCst);
    a.storage
        .commit_guarded(&[b"g".to_vec()], owner, ts, Some(term))
        .unwrap();
    a.storage.unlock_ranges(owner);
    a.storage
        .commit_guarded(&[b"g".to_vec()], owner, ts, Some(term))
        .unwrap();
    assert_eq!(a.stored(b"g"), Some(b"1".to_vec()));
}

#[test]
fn a_lost_reply_is_settled_through_the_primary_and_never_run_again() {
    let c = Cluster::start(
        2,
        TxnConfig {
            outcome_resolve_timeout: Duration::from_millis(300),
            ..TxnConfig::default()
        },
        RouterConfig {
            retry_deadline: Duration::from_millis(200),
            ..router_config()
        },
    );
    let (a, b) = (c.node(1), c.node(2));
    let write = |key: &[u8]| ExecuteRequest {
        writes: vec![(key.to_vec(), Some(b"v".to_vec()))],
        ..ExecuteRequest::default()
    };
    // The primary's commit is carried out and its reply lost: the re-sent commit finds
    // the commit record and answers Ok; the transaction is not run again.
    a.hook.drop.lock().insert("commit", 1);
    let r = b.mgr.execute(&write(b"once"), 8).unwrap();
    assert!(r.commit_ts.is_some());
    assert_eq!(a.service.calls("prewrite"), 1);
    assert_eq!(a.service.calls("commit"), 2);
    assert!(b.router.stats().resent.load(Ordering::Relaxed) >= 1);
    assert_eq!(a.stored(b"once"), Some(b"v".to_vec()));

    // Every reply lost: the outcome cannot be settled, the client is told so (not a
    // failure, not a success), and Execute does not run the transaction again.
    a.hook.drop.lock().insert("commit", u32::MAX);
    let err = b.mgr.execute(&write(b"unknown"), 8).unwrap_err();
    assert!(
        matches!(err, TxnError::Mvcc(MvccError::OutcomeUnknown(_))),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert_eq!(
        a.service.calls("prewrite"),
        2,
        "one prewrite per transaction"
    );
    // It did commit (the first commit was carried out): nothing invented either way.
    assert_eq!(a.stored(b"unknown"), Some(b"v".to_vec()));
}

#[test]
fn a_lost_range_lock_reply_fails_the_commit_before_its_commit_point() {
    let c = Cluster::start(2, TxnConfig::default(), router_config());
    let (a, b) = (c.node(1), c.node(2));
    a.hook.drop.lock().insert("lock_ranges", 1);
    let t = b.begin_serializable();
    assert!(b
        .mgr
        .scan(t, b"r/", Some(b"r0"), 10, false)
        .unwrap()
        .is_empty());
    b.mgr.write(t, b"w", Some(b"1")).unwrap();
    let r = b.mgr.commit(t);
    assert!(matches!(r, Err(TxnError::NotCommitted(_))), "{r:?}");
    assert!(r.unwrap_err().is_retryable());
    assert_eq!(a.service.calls("lock_ranges"), 1, "not re-sent");
    assert_eq!(a.service.calls("prewrite"), 0);
    wait_until("the registration whose reply was lost is released", || {
        a.storage.range_locks().is_empty()
    });
}

#[test]
fn remote_timestamps_are_fetched_in_batches() {
    let c = Cluster::start(2, TxnConfig::default(), router_config());
    let (a, b) = (c.node(1), c.node(2));
    let gate = Arc::new(Gate::default());
    a.hook.hold.lock().insert("get_timestamps", gate.clone());
    let ask = || {
        let tso = Arc::clone(&b.tso);
        std::thread::spawn(move || tso.get_timestamp())
    };
    // The first caller's round is held at the leader...
    let first = ask();
    wait_until("the first round reached the leader", || {
        a.service.calls("get_timestamps") == 1
    });
    // ...while seven more callers queue behind it for the next round.
    let rest: Vec<_> = (0..7).map(|_| ask()).collect();
    wait_until("seven callers queue", || b.tso.queued() == 7);
    gate.open();
    let mut all: Vec<Timestamp> = std::iter::once(first)
        .chain(rest)
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    assert_eq!(
        a.service.calls("get_timestamps"),
        2,
        "eight callers, two calls"
    );
    assert_eq!(b.tso.rounds(), 2);
    assert_eq!(b.tso.inner().stats().remote.load(Ordering::Relaxed), 2);
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 8, "every caller its own timestamp");
    // On the leader, the local oracle serves: no call.
    a.tso.get_timestamp().unwrap();
    assert_eq!(a.service.calls("get_timestamps"), 2);
}

#[test]
fn requests_for_another_shard_epoch_or_leader_are_refused_and_epochs_adopted() {
    let c = three();
    let (a, b) = (c.node(1), c.node(2));
    let addr = a.view.address(1).unwrap();
    let call = |header: pb::ShardHeader| {
        let addr = addr.clone();
        c.rt().block_on(async move {
            let mut client = pb::shard_client::ShardClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            client
                .get(pb::ShardGetRequest {
                    header: Some(header),
                    key: bytes::Bytes::from_static(b"k"),
                    ts: 1,
                    bypass: Vec::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .error
                .and_then(|e| e.kind)
        })
    };
    use pb::shard_error::Kind;
    let header = |shard_id, conf_ver| pb::ShardHeader {
        shard_id,
        conf_ver,
        version: 0,
        from_node_id: 9,
    };
    assert!(matches!(call(header(7, 0)), Some(Kind::ShardNotFound(s)) if s.shard_id == 7));
    *a.view.epoch.lock() = ShardEpoch {
        conf_ver: 5,
        version: 1,
    };
    assert!(matches!(
        call(header(1, 0)),
        Some(Kind::EpochNotMatch(e)) if e.conf_ver == 5 && e.version == 1
    ));
    // The router adopts the leader's epoch and goes on.
    b.put(b"e", b"1").unwrap();
    assert_eq!(a.stored(b"e"), Some(b"1".to_vec()));
    // A node that does not lead names the one that does.
    let b_addr = b.view.address(2).unwrap();
    let refused = c.rt().block_on(async move {
        let mut client = pb::shard_client::ShardClient::connect(format!("http://{b_addr}"))
            .await
            .unwrap();
        client
            .get(pb::ShardGetRequest {
                header: Some(header(1, 0)),
                key: bytes::Bytes::from_static(b"k"),
                ts: 1,
                bypass: Vec::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .error
            .and_then(|e| e.kind)
    });
    assert!(
        matches!(refused, Some(Kind::NotLeader(n)) if n.leader_node_id == Some(1)),
        "{refused:?}"
    );
}

#[test]
fn an_unreachable_leader_is_not_an_unknown_outcome() {
    let c = Cluster::start(
        2,
        TxnConfig::default(),
        RouterConfig {
            retry_deadline: Duration::from_millis(200),
            ..router_config()
        },
    );
    let b = c.node(2);
    // A port nobody listens on: connections are refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    b.view.book.0.lock().insert(9, closed);
    *b.view.leader.lock() = Some(9);
    let start = b.local_tso.get_timestamp().unwrap();
    let opts = PrewriteOptions {
        primary: b"k".to_vec(),
        ttl_ms: HOUR_MS,
        min_commit_ts: start + 1,
        coordinator: None,
    };
    let r = b
        .router
        .prewrite(&[Mutation::Put(b"k".to_vec(), b"v".to_vec())], &opts, start);
    assert!(
        matches!(r, Err(MvccError::NotLeader { leader: None, .. })),
        "a request that never left is no unknown outcome: {r:?}"
    );
    let r = b.tso.get_timestamp();
    assert!(matches!(r, Err(TsoError::Unavailable(_))), "{r:?}");
}

#[test]
fn gc_and_the_resolver_are_leader_work() {
    let c = Cluster::start(2, TxnConfig::default(), router_config());
    let (a, b) = (c.node(1), c.node(2));
    assert!(a.mgr.local_leader().is_some());
    assert!(b.mgr.local_leader().is_none());
    let now = a.local_tso.get_timestamp().unwrap();
    let life = Duration::from_millis(1);
    assert_eq!(
        b.mgr.gc_tick(now, life).unwrap(),
        0,
        "a follower does not advance GC"
    );
    assert!(a.mgr.gc_tick(now, life).unwrap() > 0);
    assert_eq!(a.id, 1);
}

#[test]
fn nodes_that_disagree_on_the_leader_do_not_bounce_a_command_for_ever() {
    let c = Cluster::start(
        3,
        TxnConfig::default(),
        RouterConfig {
            retry_deadline: Duration::from_millis(200),
            ..router_config()
        },
    );
    let (a, b, cc) = (c.node(1), c.node(2), c.node(3));
    // Mid-election: A believes B leads, B believes A does.
    *a.view.leader.lock() = Some(2);
    *b.view.leader.lock() = Some(1);
    let r = cc.router.get(b"k", 1, &[]);
    assert!(matches!(r, Err(MvccError::NotLeader { .. })), "{r:?}");
    assert!(a.service.calls("get") >= 1 && b.service.calls("get") >= 1);
}

#[test]
fn blocking_callers_do_not_starve_a_one_worker_runtime() {
    // Sixteen synchronous commits on the blocking pool of a runtime with one worker thread,
    // each waiting on remote calls that run on that worker: all finish.
    let c = Cluster::start_with(2, TxnConfig::default(), router_config(), 1);
    let b = c.node(2);
    let tasks: Vec<_> = (0..16u8)
        .map(|i| {
            let mgr = Arc::clone(&b.mgr);
            c.rt().spawn_blocking(move || {
                let (t, _) = mgr.begin(Isolation::Snapshot, false)?;
                mgr.write(t, &[b'n', i], Some(b"1"))?;
                mgr.commit(t)
            })
        })
        .collect();
    for task in tasks {
        let r = c.rt().block_on(task).unwrap();
        assert!(r.unwrap().is_some());
    }
    assert_eq!(c.node(1).stored(b"n\x0f"), Some(b"1".to_vec()));
}

#[test]
fn one_phase_commits_run_at_a_remote_leader_and_settle_lost_replies() {
    let c = Cluster::start(
        2,
        TxnConfig {
            outcome_resolve_timeout: Duration::from_millis(300),
            ..TxnConfig::default()
        },
        RouterConfig {
            retry_deadline: Duration::from_millis(200),
            ..router_config()
        },
    );
    let (a, b) = (c.node(1), c.node(2));
    // The leader may take its max_ts floor from its oracle: one phase is allowed there.
    a.storage.set_ts_source(a.local_tso.clone());
    let write = |key: &[u8]| ExecuteRequest {
        writes: vec![
            (key.to_vec(), Some(b"v".to_vec())),
            ([key, b"/2"].concat(), Some(b"w".to_vec())),
        ],
        ..ExecuteRequest::default()
    };
    let r = b.mgr.execute(&write(b"one"), 8).unwrap();
    assert!(r.commit_ts.is_some());
    assert_eq!(a.service.calls("one_pc"), 1);
    assert_eq!(a.service.calls("prewrite"), 0, "no locks, one proposal");
    assert_eq!(a.stored(b"one/2"), Some(b"w".to_vec()));

    // Carried out, its reply lost: the re-send finds the commit record and answers with
    // the same commit timestamp; nothing runs twice.
    a.hook.drop.lock().insert("one_pc", 1);
    let r = b.mgr.execute(&write(b"again"), 8).unwrap();
    assert!(r.commit_ts.is_some());
    assert_eq!(a.service.calls("one_pc"), 3);
    assert_eq!(a.stored(b"again"), Some(b"v".to_vec()));

    // Every reply lost: the coordinator settles through the primary (rollback answers
    // Committed) and reports the commit, not an invented failure.
    a.hook.drop.lock().insert("one_pc", u32::MAX);
    let r = b.mgr.execute(&write(b"settled"), 8).unwrap();
    assert!(r.commit_ts.is_some());
    assert!(a.service.calls("rollback") >= 1, "settled at the primary");
    assert_eq!(a.stored(b"settled"), Some(b"v".to_vec()));
    a.hook.drop.lock().remove("one_pc");

    // SERIALIZABLE write skew across gateways, both in one phase: the second is refused.
    b.mgr.execute(&write(b"x"), 8).unwrap();
    let t1 = b.begin_serializable();
    let t2 = a.begin_serializable();
    assert!(b.mgr.get(t1, b"x").unwrap().is_some());
    assert!(a.mgr.get(t2, b"x/2").unwrap().is_some());
    b.mgr.write(t1, b"x/2", None).unwrap();
    a.mgr.write(t2, b"x", None).unwrap();
    assert!(b.mgr.commit(t1).unwrap().is_some());
    assert!(matches!(a.mgr.commit(t2), Err(TxnError::Conflict { .. })));
}
