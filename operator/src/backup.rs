//! The `StrataBackup` reconcile.
//!
//! A backup waits (`Pending`) until its cluster exists, then asks the cluster to write the
//! backup through `Admin.Backup` and follows it to `Succeeded` or `Failed`. strata-node does
//! not implement `Admin.Backup` yet, so a backup whose cluster exists ends in phase
//! `NotSupported`, with a message saying plainly that nothing was written. The resource is
//! kept, so the request stays on record.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::cluster::names::FIELD_MANAGER;
use crate::controller::{instrumented, Context};
use crate::crd::{BackupPhase, StrataBackup, StrataBackupStatus, StrataCluster};
use crate::error::{Error, Result};

/// How often a backup waiting for its cluster looks again.
pub const WAIT_FOR_CLUSTER: Duration = Duration::from_secs(60);

/// The message of a backup the node cannot take yet.
pub const NOT_SUPPORTED: &str = "backups are not implemented yet: strata-node has no Admin.Backup call, so nothing was written; this StrataBackup is kept as a record of the request";

/// Reconciles one `StrataBackup`.
pub async fn reconcile(backup: Arc<StrataBackup>, ctx: Arc<Context>) -> Result<Action> {
    instrumented("StrataBackup", backup.as_ref(), &ctx, run(&backup, &ctx)).await
}

async fn run(backup: &StrataBackup, ctx: &Context) -> Result<Action> {
    let namespace = backup
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let clusters: Api<StrataCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let cluster = clusters.get_opt(&backup.spec.cluster).await?;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let (status, action) = match cluster {
        None => (
            status_for(
                backup,
                BackupPhase::Pending,
                "ClusterNotFound",
                format!(
                    "StrataCluster {} not found in namespace {namespace}",
                    backup.spec.cluster
                ),
                &now,
            ),
            Action::requeue(WAIT_FOR_CLUSTER),
        ),
        Some(_) => (
            status_for(
                backup,
                BackupPhase::NotSupported,
                "NotSupported",
                NOT_SUPPORTED.to_owned(),
                &now,
            ),
            Action::await_change(),
        ),
    };
    if backup.status.as_ref() != Some(&status) {
        let api: Api<StrataBackup> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = json!({
            "apiVersion": StrataBackup::api_version(&()),
            "kind": StrataBackup::kind(&()),
            "status": status,
        });
        api.patch_status(
            &backup.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    }
    Ok(action)
}

/// The status of `backup` in `phase`; the `Complete` condition keeps its transition time
/// while its status does not change.
pub fn status_for(
    backup: &StrataBackup,
    phase: BackupPhase,
    reason: &str,
    message: String,
    now: &Time,
) -> StrataBackupStatus {
    let old = backup.status.as_ref();
    let complete = if phase == BackupPhase::Succeeded {
        "True"
    } else {
        "False"
    };
    let since = old
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "Complete" && c.status == complete)
        })
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    StrataBackupStatus {
        phase: Some(phase),
        message: Some(message.clone()),
        observed_generation: backup.metadata.generation,
        backup_ts: None,
        size_bytes: None,
        conditions: vec![Condition {
            type_: "Complete".to_owned(),
            status: complete.to_owned(),
            reason: reason.to_owned(),
            message,
            last_transition_time: since,
            observed_generation: backup.metadata.generation,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_api::FakeApi;
    use crate::metrics::Metrics;

    const BACKUP: &str = "/apis/strata.dev/v1alpha1/namespaces/db/stratabackups/nightly";
    const CLUSTER: &str = "/apis/strata.dev/v1alpha1/namespaces/db/strataclusters/demo";

    #[tokio::test]
    async fn a_backup_waits_for_its_cluster_then_says_it_is_not_supported() {
        let (client, fake) = FakeApi::start();
        let ctx = Arc::new(Context::new(client, None, Arc::new(Metrics::default())));
        fake.insert(
            BACKUP,
            json!({"apiVersion": "strata.dev/v1alpha1", "kind": "StrataBackup",
                   "metadata": {"name": "nightly", "namespace": "db"},
                   "spec": {"cluster": "demo", "destination": {"volume": {"claimName": "b", "path": "/"}}}}),
        );
        let backup = || Arc::new(fake.get_as::<StrataBackup>(BACKUP));

        let action = reconcile(backup(), Arc::clone(&ctx)).await.unwrap();
        assert_eq!(action, Action::requeue(WAIT_FOR_CLUSTER));
        let status = backup().status.clone().unwrap();
        assert_eq!(status.phase, Some(BackupPhase::Pending));
        assert!(status
            .message
            .unwrap()
            .contains("StrataCluster demo not found"));

        fake.insert(
            CLUSTER,
            json!({"apiVersion": "strata.dev/v1alpha1", "kind": "StrataCluster",
                   "metadata": {"name": "demo", "namespace": "db"}, "spec": {"image": "s:1"}}),
        );
        let action = reconcile(backup(), Arc::clone(&ctx)).await.unwrap();
        assert_eq!(action, Action::await_change());
        let status = backup().status.clone().unwrap();
        assert_eq!(status.phase, Some(BackupPhase::NotSupported));
        assert_eq!(status.message.as_deref(), Some(NOT_SUPPORTED));
        assert_eq!(status.conditions[0].status, "False");
        assert_eq!(status.backup_ts, None);

        // Settled: a further reconcile writes nothing.
        fake.clear_calls();
        reconcile(backup(), Arc::clone(&ctx)).await.unwrap();
        assert!(!fake.calls().iter().any(|c| c.method == "PATCH"));
    }
}
