//! The controllers: what they watch, the shared context, and the error policy.
//!
//! Two kube-runtime controllers run side by side, one per custom resource. The
//! `StrataCluster` controller also watches the objects it owns (filtered by the
//! `managed-by` label, so the watch caches no one else's ConfigMaps or Services), so a
//! StatefulSet whose pods turn ready triggers a status update.
//!
//! A failed reconcile requeues its object after an exponential backoff (1 s doubling to
//! 5 min), reset by the next success; an object that keeps failing never spins.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use parking_lot::Mutex;

use crate::cluster::admin::{ClusterAdmin, GrpcAdmin};
use crate::cluster::drain::DrainTasks;
use crate::cluster::probe::{GrpcProbe, NodeProbe};
use crate::crd::{StrataBackup, StrataCluster};
use crate::error::Error;
use crate::metrics::Metrics;

/// The name controllers report as in events.
pub const CONTROLLER_NAME: &str = "strata-operator";

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Kubernetes events.
    pub recorder: Recorder,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// Asks nodes for their `Admin.Status`.
    pub probe: Arc<dyn NodeProbe>,
    /// Makes the clusters' membership calls (`Admin.Decommission`).
    pub admin: Arc<dyn ClusterAdmin>,
    /// The `Admin.Decommission` calls in flight.
    pub drains: DrainTasks,
    failures: Mutex<HashMap<String, u32>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    /// A context for `client`; `instance` (the pod name) tells replicas apart in events.
    pub fn new(client: Client, instance: Option<String>, metrics: Arc<Metrics>) -> Context {
        Context::with_probe(client, instance, metrics, Arc::new(GrpcProbe::default()))
    }

    /// A context whose node status calls go to `probe`.
    pub fn with_probe(
        client: Client,
        instance: Option<String>,
        metrics: Arc<Metrics>,
        probe: Arc<dyn NodeProbe>,
    ) -> Context {
        let admin = Arc::new(GrpcAdmin::default());
        Context::with_cluster(client, instance, metrics, probe, admin)
    }

    /// A context whose node status calls go to `probe` and membership calls to `admin`.
    pub fn with_cluster(
        client: Client,
        instance: Option<String>,
        metrics: Arc<Metrics>,
        probe: Arc<dyn NodeProbe>,
        admin: Arc<dyn ClusterAdmin>,
    ) -> Context {
        let reporter = Reporter {
            controller: CONTROLLER_NAME.to_owned(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            probe,
            admin,
            drains: DrainTasks::default(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn succeeded(&self, key: &str) {
        self.failures.lock().remove(key);
    }

    /// Counts a failure of `key` and returns how long to wait before retrying.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock();
        let n = failures.entry(key.to_owned()).or_default();
        *n = n.saturating_add(1);
        backoff(*n)
    }
}

/// The longest wait between retries of a failing object.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The wait after the `failures`-th consecutive failure: 1 s, 2 s, 4 s ... up to 5 min.
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exponent).min(MAX_BACKOFF)
}

/// The key of an object in the failure table.
pub fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// Wraps a reconcile: metrics, logging, and the failure count that drives the backoff.
pub async fn instrumented<K, F>(
    kind: &'static str,
    obj: &K,
    ctx: &Context,
    run: F,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()>,
    F: Future<Output = Result<Action, Error>>,
{
    let started = Instant::now();
    let result = run.await;
    ctx.metrics.reconciled(kind, started.elapsed());
    if result.is_ok() {
        ctx.succeeded(&object_key(obj));
    }
    result
}

/// The kind of `K` as a metric label (derived resources name their kind statically).
fn static_kind<K: Resource<DynamicType = ()>>() -> &'static str {
    match K::kind(&()) {
        std::borrow::Cow::Borrowed(kind) => kind,
        std::borrow::Cow::Owned(_) => "other",
    }
}

/// The error policy of both controllers: log, count, requeue after the backoff.
pub fn error_policy<K>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()> + ResourceExt,
{
    let key = object_key(obj.as_ref());
    let wait = ctx.failed(&key);
    ctx.metrics.failed(static_kind::<K>(), error.label());
    tracing::warn!(object = %key, error = %error, retry_in_s = wait.as_secs(), "reconcile failed");
    Action::requeue(wait)
}

/// Runs both controllers until `shutdown` completes, then lets running reconciles finish.
/// `namespace` limits them to one namespace; `None` watches all.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let api = |client: Client| -> (Api<StrataCluster>, Api<StrataBackup>) {
        match &namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client, ns),
            ),
            None => (Api::all(client.clone()), Api::all(client)),
        }
    };
    fn owned<K>(client: &Client, namespace: &Option<String>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let (clusters, backups) = api(client.clone());
    let mine = watcher::Config::default().labels(&format!(
        "app.kubernetes.io/managed-by={}",
        crate::cluster::names::FIELD_MANAGER
    ));
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let cluster_controller = Controller::new(clusters, watcher::Config::default().any_semantic())
        .owns(owned::<StatefulSet>(&client, &namespace), mine.clone())
        .owns(owned::<ConfigMap>(&client, &namespace), mine.clone())
        .owns(owned::<Service>(&client, &namespace), mine.clone())
        .owns(owned::<PodDisruptionBudget>(&client, &namespace), mine)
        .graceful_shutdown_on(shutdown.clone())
        .run(
            crate::cluster::reconcile::reconcile,
            error_policy,
            Arc::clone(&ctx),
        )
        .for_each(|result| async move { log_result(result) });
    let backup_controller = Controller::new(backups, watcher::Config::default().any_semantic())
        .graceful_shutdown_on(shutdown)
        .run(crate::backup::reconcile, error_policy, Arc::clone(&ctx))
        .for_each(|result| async move { log_result(result) });
    ctx.metrics.set_ready(true);
    futures::future::join(cluster_controller, backup_controller).await;
}

fn log_result<K, E: std::fmt::Display>(
    result: Result<(kube::runtime::reflector::ObjectRef<K>, Action), E>,
) where
    K: Resource,
    K::DynamicType: std::fmt::Debug,
{
    match result {
        Ok((object, _)) => tracing::debug!(%object, "reconciled"),
        Err(e) => tracing::debug!(error = %e, "controller"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_ceiling() {
        let waits: Vec<u64> = (1..=12).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
