//! The gRPC conventions the node follows beside its own API, so that generic tools work
//! against it: the standard health service and server reflection.
//!
//! ```text
//!   grpc.health.v1.Health              Check / Watch for "" (the whole server) and for
//!                                      strata.v1.Kv, strata.v1.Txn, strata.v1.Admin
//!   grpc.reflection.v1.ServerReflection      (and v1alpha, for older grpcurl and clients)
//! ```
//!
//! Health follows the HTTP `/readyz` answer exactly: every name starts `NOT_SERVING`,
//! turns `SERVING` where `/readyz` turns ready, and back to `NOT_SERVING` when shutdown
//! begins, before the listener stops accepting ([`Readiness`] moves both at once, so the two
//! can never disagree). A name the node does not serve is `NOT_FOUND`, as the protocol says.
//!
//! `Watch` is a stream that never ends by itself, and a graceful shutdown waits for every
//! open stream: one watching client would hold the drain for its whole timeout. So each
//! `Watch` stream ([`DrainingWatch`]) first delivers the `NOT_SERVING` change, then ends
//! with `OK` once shutdown has begun; watchers (load balancers, the `grpc_health_probe`
//! `-watch` style) see the change and then a clean end, and the drain is not held up.
//! `Check` keeps answering `NOT_SERVING` on connections still open while draining.
//!
//! Reflection serves the file descriptor set `proto/build.rs` emits
//! ([`strata_proto::v1::FILE_DESCRIPTOR_SET`]) plus the health service's own, so
//! `grpcurl <addr> list` / `describe` work without the `.proto` files.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use anyhow::Context as _;
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;

use strata_proto::v1::{admin_server::AdminServer, kv_server::KvServer, txn_server::TxnServer};

use super::service::{AdminService, KvService, TxnService};

/// The fully qualified names of Strata's gRPC services, as health and reflection know them.
pub const SERVICE_NAMES: [&str; 3] = [
    <KvServer<KvService> as NamedService>::NAME,
    <TxnServer<TxnService> as NamedService>::NAME,
    <AdminServer<AdminService> as NamedService>::NAME,
];

/// Whether the node serves: the flag `/readyz` reads and the gRPC health statuses, moved
/// together.
#[derive(Debug)]
pub(crate) struct Readiness {
    ready: AtomicBool,
    reporter: HealthReporter,
    /// What the health statuses say now; a `set` that changes nothing sends nothing, so a
    /// `Watch` stream sees each change once (held across the sends, so two `set`s at once
    /// cannot leave the statuses on the older one).
    published: tokio::sync::Mutex<Option<bool>>,
}

impl Readiness {
    /// Not ready: `/readyz` answers 503, and health `NOT_SERVING` for "" and every service.
    pub(crate) async fn new() -> Readiness {
        let readiness = Readiness {
            ready: AtomicBool::new(false),
            // It starts with "" SERVING; `set` below overrides that before anyone can ask.
            reporter: HealthReporter::new(),
            published: tokio::sync::Mutex::new(None),
        };
        readiness.set(false).await;
        readiness
    }

    /// Whether the node is ready (what `/readyz` answers).
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the node ready or not, for `/readyz` and for every health name.
    pub(crate) async fn set(&self, ready: bool) {
        let mut published = self.published.lock().await;
        self.ready.store(ready, Ordering::Release);
        if *published == Some(ready) {
            return;
        }
        *published = Some(ready);
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in std::iter::once("").chain(SERVICE_NAMES) {
            self.reporter.set_service_status(name, status).await;
        }
    }

    /// The `grpc.health.v1.Health` service over these statuses; its `Watch` streams end once
    /// `shutdown` turns true.
    pub(crate) fn health_server(
        &self,
        shutdown: watch::Receiver<bool>,
    ) -> HealthServer<DrainingHealth> {
        HealthServer::new(DrainingHealth {
            inner: HealthService::from_health_reporter(self.reporter.clone()),
            shutdown,
        })
    }
}

/// `grpc.health.v1.Health` whose `Watch` streams end at shutdown (see the module docs).
#[derive(Debug)]
pub struct DrainingHealth {
    inner: HealthService,
    shutdown: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl Health for DrainingHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = DrainingWatch;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<DrainingWatch>, Status> {
        let inner = self.inner.watch(request).await?.into_inner();
        let mut shutdown = self.shutdown.clone();
        Ok(Response::new(DrainingWatch {
            inner,
            shutdown: Some(Box::pin(async move {
                // An error means the server is gone, which ends the stream just the same.
                let _ = shutdown.wait_for(|stopping| *stopping).await;
            })),
        }))
    }
}

/// A health `Watch` stream that ends once shutdown has begun, after the changes already made.
pub struct DrainingWatch {
    inner: tonic_health::server::WatchStream,
    /// Resolves when shutdown begins; `None` once it has (the stream is over).
    shutdown: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl std::fmt::Debug for DrainingWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrainingWatch")
            .field("ended", &self.shutdown.is_none())
            .finish_non_exhaustive()
    }
}

impl Stream for DrainingWatch {
    type Item = Result<HealthCheckResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(shutdown) = this.shutdown.as_mut() else {
            return Poll::Ready(None);
        };
        // Changes first: shutdown sets NOT_SERVING before it signals, so that change is
        // already waiting here when the signal is seen, and is delivered before the end.
        if let Poll::Ready(item) = Pin::new(&mut this.inner).poll_next(cx) {
            return Poll::Ready(item);
        }
        match shutdown.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.shutdown = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The reflection services, v1 and v1alpha, over Strata's protos and the health service's.
pub(crate) fn reflection_servers() -> anyhow::Result<(
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(strata_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = builder()
        .build_v1()
        .context("building the gRPC reflection service (v1)")?;
    let v1alpha = builder()
        .build_v1alpha()
        .context("building the gRPC reflection service (v1alpha)")?;
    Ok((v1, v1alpha))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_health::pb::health_check_response::ServingStatus as Wire;

    async fn status(health: &DrainingHealth, name: &str) -> Result<i32, tonic::Code> {
        health
            .check(Request::new(HealthCheckRequest {
                service: name.to_string(),
            }))
            .await
            .map(|r| r.into_inner().status)
            .map_err(|s| s.code())
    }

    /// Asserts `/readyz`'s flag and the health status of "" and every service agree on `ready`.
    async fn assert_all(readiness: &Readiness, health: &DrainingHealth, ready: bool) {
        assert_eq!(readiness.is_ready(), ready);
        let expected = if ready {
            Wire::Serving
        } else {
            Wire::NotServing
        };
        for name in std::iter::once("").chain(SERVICE_NAMES) {
            assert_eq!(status(health, name).await, Ok(expected as i32), "{name:?}");
        }
    }

    /// The health service over `readiness`, and the sender that would end its watches.
    fn health_of(readiness: &Readiness) -> (watch::Sender<bool>, DrainingHealth) {
        let (tx, shutdown) = watch::channel(false);
        let health = DrainingHealth {
            inner: HealthService::from_health_reporter(readiness.reporter.clone()),
            shutdown,
        };
        (tx, health)
    }

    #[tokio::test]
    async fn starts_not_serving_and_follows_readiness() {
        let readiness = Readiness::new().await;
        let (_tx, health) = health_of(&readiness);
        assert_all(&readiness, &health, false).await;
        readiness.set(true).await;
        assert_all(&readiness, &health, true).await;
        readiness.set(false).await;
        assert_all(&readiness, &health, false).await;
        assert_eq!(
            status(&health, "strata.v1.Nope").await,
            Err(tonic::Code::NotFound)
        );
    }

    /// The node marks itself ready twice at start (once when its lone replica leads, once
    /// at the readiness tracker's first look): a watcher must not see SERVING twice, or it
    /// takes the repeat for the next change (a CI run once failed on it).
    #[tokio::test]
    async fn a_watch_sees_each_change_once() {
        let readiness = Readiness::new().await;
        let (_tx, health) = health_of(&readiness);
        readiness.set(true).await;
        let mut stream = health
            .watch(Request::new(HealthCheckRequest {
                service: String::new(),
            }))
            .await
            .expect("watch")
            .into_inner();
        use tokio_stream::StreamExt;
        let first = stream.next().await.expect("a message").expect("a status");
        assert_eq!(first.status, Wire::Serving as i32);
        readiness.set(true).await;
        // Nothing changed, so nothing may arrive (a repeat would be ready at once).
        let repeat =
            tokio::time::timeout(std::time::Duration::from_millis(200), stream.next()).await;
        assert!(repeat.is_err(), "a repeat was sent: {repeat:?}");
        readiness.set(false).await;
        let next = stream.next().await.expect("a message").expect("a status");
        assert_eq!(next.status, Wire::NotServing as i32);
    }

    #[test]
    fn service_names_are_the_protos() {
        assert_eq!(
            SERVICE_NAMES,
            ["strata.v1.Kv", "strata.v1.Txn", "strata.v1.Admin"]
        );
    }
}
