//! The leader's life: campaign, lead, stop.
//!
//! ```text
//!   follower   try the Lease every 2 s (ready: it reached the API server)
//!   leader     controllers run; the Lease is renewed every 2 s
//!   signal     controllers finish their running reconciles; the Lease is released; exit 0
//!   lost       another replica holds the Lease, or no renewal for 10 s: controllers stop;
//!              exit 1, so the pod restarts as a follower
//! ```

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use crate::controller::{self, Context};
use crate::error::Result;
use crate::lease::LeaderElector;

/// Campaigns, then leads until a signal (exit 0, lease released) or a lost lease (exit 1).
pub async fn lead(
    elector: LeaderElector,
    ctx: Arc<Context>,
    namespace: Option<String>,
    mut stop: watch::Receiver<bool>,
) -> Result<ExitCode> {
    let config = elector.config().clone();
    tracing::info!(lease = %config.name, namespace = %config.namespace, identity = %config.identity, "campaigning");
    loop {
        // A hung API call must neither delay a shutdown nor stall the campaign.
        let attempt = tokio::select! {
            _ = stop.changed() => return Ok(ExitCode::SUCCESS),
            attempt = tokio::time::timeout(config.lease_duration, elector.try_acquire_or_renew()) => attempt,
        };
        match attempt {
            Ok(Ok(true)) => break,
            Ok(Ok(false)) => ctx.metrics.set_ready(true),
            Ok(Err(e)) => tracing::warn!(error = %e, "lease check failed"),
            Err(_) => tracing::warn!("lease check timed out"),
        }
        tokio::select! {
            _ = stop.changed() => return Ok(ExitCode::SUCCESS),
            _ = tokio::time::sleep(config.retry_every) => {}
        }
    }
    tracing::info!("leading");
    ctx.metrics.set_ready(true);
    ctx.metrics.set_leader(true);

    // The controllers stop when `halt` turns true: on a signal or a lost lease.
    let (halt_tx, halt_rx) = watch::channel(false);
    let controllers = tokio::spawn(controller::run(
        Arc::clone(&ctx),
        namespace,
        stopped(halt_rx),
    ));
    let mut last_renewal = Instant::now();
    let lost = loop {
        tokio::select! {
            _ = stop.changed() => break false,
            _ = tokio::time::sleep(config.renew_every) => {}
        }
        // Each renewal is bounded by what is left of the deadline, and gives way to a signal.
        let left = config.renew_deadline.saturating_sub(last_renewal.elapsed());
        let renewal = tokio::select! {
            _ = stop.changed() => break false,
            renewal = tokio::time::timeout(left, elector.try_acquire_or_renew()) => renewal,
        };
        match renewal {
            Ok(Ok(true)) => last_renewal = Instant::now(),
            Ok(Ok(false)) => break true,
            Ok(Err(e)) => tracing::warn!(error = %e, "lease renewal failed"),
            Err(_) => tracing::warn!("lease renewal timed out"),
        }
        if last_renewal.elapsed() > config.renew_deadline {
            break true;
        }
    };
    let _ = halt_tx.send(true);
    if let Err(e) = controllers.await {
        tracing::error!(error = %e, "controller task failed");
    }
    ctx.metrics.set_leader(false);
    if lost {
        tracing::error!("lost the lease; exiting so the pod restarts as a follower");
        return Ok(ExitCode::FAILURE);
    }
    if let Err(e) = elector.release().await {
        tracing::warn!(error = %e, "could not release the lease; it expires on its own");
    }
    Ok(ExitCode::SUCCESS)
}

/// Completes when `rx` turns true (or its sender is gone).
pub async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::api::coordination::v1::Lease;
    use serde_json::json;

    use super::*;
    use crate::fake_api::FakeApi;
    use crate::lease::LeaseConfig;
    use crate::metrics::Metrics;

    const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/strata-operator";

    fn setup() -> (FakeApi, LeaderElector, Arc<Context>) {
        let (client, fake) = FakeApi::start();
        let mut config = LeaseConfig::new("strata-operator".into(), "ops".into(), "op-a".into());
        config.renew_every = Duration::from_millis(20);
        config.retry_every = Duration::from_millis(20);
        let elector = LeaderElector::new(client.clone(), config);
        let ctx = Arc::new(Context::new(client, None, Arc::new(Metrics::default())));
        (fake, elector, ctx)
    }

    fn holder(fake: &FakeApi) -> Option<String> {
        fake.get_as::<Lease>(LEASE)
            .spec
            .and_then(|s| s.holder_identity)
    }

    async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_signal_stops_the_leader_and_releases_the_lease() {
        let (fake, elector, ctx) = setup();
        let (stop_tx, stop_rx) = watch::channel(false);
        let leader = tokio::spawn(lead(elector, Arc::clone(&ctx), Some("db".into()), stop_rx));
        wait_until("the replica leads", || ctx.metrics.is_leader()).await;
        assert_eq!(holder(&fake).as_deref(), Some("op-a"));
        // The controllers are running: they list the custom resources.
        wait_until("the controllers watch", || {
            fake.calls()
                .iter()
                .any(|c| c.path.ends_with("/strataclusters"))
        })
        .await;

        stop_tx.send(true).unwrap();
        let code = tokio::time::timeout(Duration::from_secs(10), leader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(code.unwrap(), ExitCode::SUCCESS);
        assert_eq!(holder(&fake), None, "the lease is released on shutdown");
        assert!(!ctx.metrics.is_leader());
    }

    #[tokio::test]
    async fn a_lost_lease_stops_the_controllers_with_a_failure() {
        let (fake, elector, ctx) = setup();
        let (_stop_tx, stop_rx) = watch::channel(false);
        let leader = tokio::spawn(lead(elector, Arc::clone(&ctx), Some("db".into()), stop_rx));
        wait_until("the replica leads", || ctx.metrics.is_leader()).await;
        // Another replica took the lease (as after a long pause of this one).
        fake.edit(LEASE, |lease| {
            lease["spec"]["holderIdentity"] = json!("op-b");
            lease["spec"]["renewTime"] = json!("2999-01-01T00:00:00.000000Z");
        });
        let code = tokio::time::timeout(Duration::from_secs(10), leader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(code.unwrap(), ExitCode::FAILURE);
        assert_eq!(
            holder(&fake).as_deref(),
            Some("op-b"),
            "the other holder keeps it"
        );
    }

    #[tokio::test]
    async fn a_hung_api_server_delays_neither_shutdown_nor_the_renew_deadline() {
        // Campaigning: the lease call hangs; a signal still stops the replica.
        let (fake, elector, ctx) = setup();
        fake.stall("GET", "/leases/");
        let (stop_tx, stop_rx) = watch::channel(false);
        let replica = tokio::spawn(lead(elector, Arc::clone(&ctx), Some("db".into()), stop_rx));
        wait_until("the lease is asked for", || {
            fake.calls().iter().any(|c| c.path.contains("/leases/"))
        })
        .await;
        stop_tx.send(true).unwrap();
        let code = tokio::time::timeout(Duration::from_secs(10), replica)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(code.unwrap(), ExitCode::SUCCESS);

        // Leading: renewals hang; the leader gives up at the renew deadline.
        let (fake, mut elector, ctx) = setup();
        elector = {
            let mut config = elector.config().clone();
            config.renew_deadline = Duration::from_millis(300);
            LeaderElector::new(ctx.client.clone(), config)
        };
        let (_stop_tx, stop_rx) = watch::channel(false);
        let leader = tokio::spawn(lead(elector, Arc::clone(&ctx), Some("db".into()), stop_rx));
        wait_until("the replica leads", || ctx.metrics.is_leader()).await;
        fake.stall("GET", "/leases/");
        let code = tokio::time::timeout(Duration::from_secs(10), leader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(code.unwrap(), ExitCode::FAILURE);
    }

    #[tokio::test]
    async fn a_follower_waits_and_stops_on_a_signal() {
        let (fake, elector, ctx) = setup();
        fake.insert(
            LEASE,
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": "strata-operator", "namespace": "ops"},
                   "spec": {"holderIdentity": "op-b", "leaseDurationSeconds": 15,
                            "renewTime": "2999-01-01T00:00:00.000000Z"}}),
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let follower = tokio::spawn(lead(elector, Arc::clone(&ctx), Some("db".into()), stop_rx));
        wait_until("the follower is ready", || ctx.metrics.is_ready()).await;
        assert!(!ctx.metrics.is_leader());
        stop_tx.send(true).unwrap();
        let code = tokio::time::timeout(Duration::from_secs(10), follower)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(code.unwrap(), ExitCode::SUCCESS);
        assert!(!fake
            .calls()
            .iter()
            .any(|c| c.path.contains("strataclusters")));
        assert_eq!(holder(&fake).as_deref(), Some("op-b"));
    }
}
