//! Channels to other nodes' shard services, and how a synchronous caller waits for them.
//!
//! One tonic channel per internal address, created on first use (`connect_lazy`: no
//! connection is made until a call needs it, and a broken one is re-established by the
//! channel itself) and reused by every call to that address afterwards, from the router and
//! the routed oracle alike.
//!
//! **Blocking callers.** The coordinator is synchronous and runs on tokio's blocking pool
//! (or a thread of its own, in tests). A remote call from there is polled on the calling
//! thread with the runtime the connections were made with entered ([`crate::park`]): the
//! connection's tasks run there and wake the caller directly when the answer arrives, with
//! the call's own timeout plus a margin as a backstop. Those tasks run on the runtime's
//! worker threads, which the transaction layer never blocks (the server hands
//! every synchronous call to the blocking pool), and the service at the other end never
//! calls another node while it serves (it answers `NotLeader` instead of forwarding), so
//! no cycle of waits can form: the call completes or times out. Calling the synchronous API
//! from an async task of a current-thread runtime would starve that task: this is why the
//! server never does, and why the wait is bounded all the same.
//!
//! **Fault injection.** Built [`Connections::with_faults`], a call to a node whose link from
//! this one the node's [`NetFaults`] cut fails before it is sent (`NotSent`), so a test's
//! partition cuts the gateway's forwards and oracle calls as well as the Raft messages. A
//! call already on its way when the cut comes completes, as one whose packets had crossed.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use strata_proto::internal::v1::shard_client::ShardClient as ShardStub;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use super::codec::CallError;
use crate::raftstore::transport::NetFaults;
use crate::raftstore::types::NodeId;

/// The largest message on the internal port: room for the prewrite of a transaction of
/// `max_txn_bytes` (64 MiB) with its framing.
pub const INTERNAL_MESSAGE_BYTES: usize = 160 << 20;

/// How long past a call's own timeout a blocked caller waits before it gives up on the
/// task that runs the call.
const BLOCK_MARGIN: Duration = Duration::from_secs(1);

/// How often a blocked caller looks at its backstop deadline.
const BLOCK_POLL: Duration = Duration::from_millis(100);

/// Channels to other nodes' internal ports, by address; see the module documentation.
#[derive(Debug)]
pub struct Connections {
    runtime: tokio::runtime::Handle,
    connect_timeout: Duration,
    channels: Mutex<HashMap<String, Channel>>,
    /// This node's id and fault rules, when calls obey them.
    faults: Option<(NodeId, NetFaults)>,
}

impl Connections {
    /// Connections made, and calls run, on `runtime`; a connection attempt gives up after
    /// `connect_timeout`.
    pub fn new(runtime: tokio::runtime::Handle, connect_timeout: Duration) -> Arc<Connections> {
        Self::build(runtime, connect_timeout, None)
    }

    /// As [`Connections::new`], for node `node`, whose calls fail unsent while `faults`
    /// cut its link to their destination (the rules its Raft transport obeys).
    pub fn with_faults(
        runtime: tokio::runtime::Handle,
        connect_timeout: Duration,
        node: NodeId,
        faults: NetFaults,
    ) -> Arc<Connections> {
        Self::build(runtime, connect_timeout, Some((node, faults)))
    }

    fn build(
        runtime: tokio::runtime::Handle,
        connect_timeout: Duration,
        faults: Option<(NodeId, NetFaults)>,
    ) -> Arc<Connections> {
        Arc::new(Connections {
            runtime,
            connect_timeout,
            channels: Mutex::new(HashMap::new()),
            faults,
        })
    }

    /// The runtime calls run on.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// How many channels exist (one per address called so far).
    pub fn channels(&self) -> usize {
        self.channels.lock().len()
    }

    /// A client of the shard service of node `to` at `addr` (`host:port`), over its one
    /// channel; `NotSent` while fault rules cut the link to `to`.
    pub(crate) fn client(&self, to: u64, addr: &str) -> Result<ShardStub<Channel>, CallError> {
        if let Some((from, faults)) = &self.faults {
            if faults.is_blocked(*from, NodeId(to)) {
                return Err(CallError::NotSent(format!(
                    "the link from node {from} to node {to} is cut (fault injection)"
                )));
            }
        }
        let mut channels = self.channels.lock();
        let channel = match channels.get(addr) {
            Some(channel) => channel.clone(),
            None => {
                let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| CallError::NotSent(format!("bad internal address {addr:?}: {e}")))?
                    .connect_timeout(self.connect_timeout)
                    .tcp_nodelay(true);
                // The channel's worker is spawned on our runtime, whatever thread asks.
                let _entered = self.runtime.enter();
                let channel = endpoint.connect_lazy();
                channels.insert(addr.to_string(), channel.clone());
                channel
            }
        };
        Ok(ShardStub::new(channel)
            .max_decoding_message_size(INTERNAL_MESSAGE_BYTES)
            .max_encoding_message_size(INTERNAL_MESSAGE_BYTES))
    }

    /// Runs `fut` on the calling thread (never an async task's) with the runtime entered,
    /// parked until it ends or `limit` plus a margin passes: the connection's I/O wakes
    /// this thread directly, no task is spawned per call ([`crate::park`], D135).
    pub(crate) fn block<T, F>(&self, limit: Duration, fut: F) -> Result<T, CallError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, CallError>> + Send + 'static,
    {
        let _entered = self.runtime.enter();
        let deadline = Instant::now() + limit.saturating_add(BLOCK_MARGIN);
        crate::park::block_on(fut, BLOCK_POLL, || {
            (Instant::now() >= deadline)
                .then(|| Err(CallError::Lost("the call did not finish in time".into())))
        })
    }

    /// Runs `fut` on the runtime in the background.
    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.runtime.spawn(fut);
    }
}

/// One unary call with a deadline: the response, or why there is none.
pub(crate) async fn unary<R>(
    timeout: Duration,
    call: impl Future<Output = Result<tonic::Response<R>, Status>>,
) -> Result<R, CallError> {
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(CallError::Lost(format!(
            "no answer within {} ms",
            timeout.as_millis()
        ))),
        Ok(Err(status)) => Err(status_error(&status)),
        Ok(Ok(response)) => Ok(response.into_inner()),
    }
}

/// A gRPC status instead of an answer: the request never left (the connection was
/// refused), or its answer is lost (anything else: our service always answers `OK` with
/// its errors inside, so any other status means the call broke somewhere on the way).
fn status_error(status: &Status) -> CallError {
    let message = format!("{}: {}", status.code(), status.message());
    if connection_refused(status) {
        CallError::NotSent(message)
    } else {
        CallError::Lost(message)
    }
}

/// Whether an I/O error in `status`'s chain of causes is a refused connection.
fn connection_refused(status: &Status) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    // Bounded: causes chains are short, but a malformed one must not loop for ever.
    for _ in 0..16 {
        let Some(e) = cause else {
            return false;
        };
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        cause = e.source();
    }
    false
}
