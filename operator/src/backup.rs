//! The `StrataBackup` reconcile, and the schedule that creates them.
//!
//! A backup waits (`Pending`) until its cluster exists, then asks the cluster to write the
//! backup through `Admin.Backup` (through the cluster's client Service) and follows it to
//! `Succeeded` or `Failed`. strata-node does not implement `Admin.Backup` yet: it answers
//! `UNIMPLEMENTED`, and the backup ends in phase `NotSupported`, with a message saying
//! plainly that nothing was written. A node that answers anything else serves a call this
//! operator version cannot drive yet: phase `Failed`, saying so. A cluster that cannot be
//! reached leaves the backup `Pending` (reason `ClusterUnreachable`) and is asked again a
//! minute later: a condition, never a failing reconcile in backoff. A backup in a final
//! phase is not asked again. The resource is kept, so the request stays on record.
//!
//! **Schedule.** A cluster with `spec.backup` gets a `StrataBackup` named
//! `<cluster>-<yyyymmddhhmm>` (UTC) at each time its cron schedule names, owned by the
//! cluster and labelled `strata.dev/scheduled-by: <cluster>`; the cluster's
//! `status.backupSchedule` records the last one and the next time, and the reconcile
//! requeues for it. A time missed while the operator was down is made up once. Of the
//! scheduled backups in a final phase, the newest `keep` are kept and older ones deleted.
//! [`schedule_step`] is the pure part, driven by any clock in the tests.

use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::cluster::admin::BackupAnswer;
use crate::cluster::names::{ClusterNames, FIELD_MANAGER, GRPC_PORT};
use crate::controller::{instrumented, Context};
use crate::crd::{
    BackupPhase, BackupScheduleStatus, StrataBackup, StrataBackupSpec, StrataBackupStatus,
    StrataCluster,
};
use crate::error::{Error, Result};
use crate::schedule::Schedule;

/// The label on the backups a cluster's schedule creates; its value is the cluster's name.
pub const SCHEDULE_LABEL: &str = "strata.dev/scheduled-by";

/// How often a backup waiting for its cluster looks again.
pub const WAIT_FOR_CLUSTER: Duration = Duration::from_secs(60);

/// The message of a backup the node cannot take yet.
pub const NOT_SUPPORTED: &str = "backups are not implemented yet: strata-node answers UNIMPLEMENTED to Admin.Backup, so nothing was written; this StrataBackup is kept as a record of the request";

fn finished(phase: Option<BackupPhase>) -> bool {
    matches!(
        phase,
        Some(BackupPhase::Succeeded | BackupPhase::Failed | BackupPhase::NotSupported)
    )
}

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
    let done = backup
        .status
        .as_ref()
        .is_some_and(|s| finished(s.phase) && s.observed_generation == backup.metadata.generation);
    if done {
        return Ok(Action::await_change());
    }
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
        Some(cluster) => {
            let names = ClusterNames::of(&cluster)?;
            let endpoint = format!(
                "{}.{}.svc:{GRPC_PORT}",
                names.statefulset(),
                names.namespace
            );
            match ctx.admin.backup(endpoint).await {
                Ok(BackupAnswer::Unimplemented(_)) => (
                    status_for(
                        backup,
                        BackupPhase::NotSupported,
                        "NotSupported",
                        NOT_SUPPORTED.to_owned(),
                        &now,
                    ),
                    Action::await_change(),
                ),
                Ok(BackupAnswer::Served { code, message }) => (
                    status_for(
                        backup,
                        BackupPhase::Failed,
                        "OperatorTooOld",
                        format!(
                            "strata-node serves Admin.Backup (it answered {code} {message:?} to an empty request), which this operator version cannot drive: upgrade the operator; nothing was written"
                        ),
                        &now,
                    ),
                    Action::await_change(),
                ),
                Err(e) => (
                    status_for(
                        backup,
                        BackupPhase::Pending,
                        "ClusterUnreachable",
                        format!("cannot reach StrataCluster {}: {e}", backup.spec.cluster),
                        &now,
                    ),
                    Action::requeue(WAIT_FOR_CLUSTER),
                ),
            }
        }
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

/// What a cluster's schedule does at `now`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleStep {
    /// The backup to create now: its name and scheduled time.
    pub create: Option<(String, Timestamp)>,
    /// The schedule's status after it.
    pub status: BackupScheduleStatus,
    /// When the next backup is due.
    pub next: Option<Timestamp>,
}

/// The name of the backup scheduled at `at` for `cluster`.
pub fn scheduled_name(cluster: &str, at: Timestamp) -> String {
    format!("{cluster}-{}", at.strftime("%Y%m%d%H%M"))
}

/// The schedule of `cluster` at `now` (`None`: it has none). The first backup is the first
/// scheduled time after the cluster was created.
pub fn schedule_step(cluster: &StrataCluster, now: Timestamp) -> Option<ScheduleStep> {
    let spec = cluster.spec.backup.as_ref()?;
    let name = cluster.metadata.name.clone().unwrap_or_default();
    let old = cluster
        .status
        .as_ref()
        .and_then(|s| s.backup_schedule.clone())
        .unwrap_or_default();
    let schedule = match spec.schedule.parse::<Schedule>() {
        Ok(schedule) => schedule,
        Err(e) => {
            return Some(ScheduleStep {
                create: None,
                status: BackupScheduleStatus {
                    next_schedule_time: None,
                    message: Some(format!(
                        "spec.backup.schedule is invalid, so no backup is scheduled: {e}"
                    )),
                    ..old
                },
                next: None,
            })
        }
    };
    let since = old
        .last_schedule_time
        .as_ref()
        .or(cluster.metadata.creation_timestamp.as_ref())
        .map_or(now, |t| t.0);
    let due = schedule.latest_due(since, now);
    let next = schedule.next_after(now);
    let create = due.map(|at| (scheduled_name(&name, at), at));
    Some(ScheduleStep {
        status: BackupScheduleStatus {
            last_schedule_time: due.map(Time).or(old.last_schedule_time),
            last_backup: create.as_ref().map(|(n, _)| n.clone()).or(old.last_backup),
            next_schedule_time: next.map(Time),
            message: None,
        },
        create,
        next,
    })
}

/// Runs the schedule of `cluster` at `now`: creates the backup due, prunes old ones.
/// Returns the schedule's status and when to look again.
pub async fn run_schedule(
    cluster: &StrataCluster,
    ctx: &Context,
    now: Timestamp,
) -> Result<Option<(BackupScheduleStatus, Option<std::time::Duration>)>> {
    let Some(step) = schedule_step(cluster, now) else {
        return Ok(None);
    };
    let names = ClusterNames::of(cluster)?;
    let api: Api<StrataBackup> = Api::namespaced(ctx.client.clone(), &names.namespace);
    if let (Some((name, _)), Some(spec)) = (&step.create, cluster.spec.backup.as_ref()) {
        let labels = BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), "strata".to_owned()),
            (
                "app.kubernetes.io/instance".to_owned(),
                names.cluster.clone(),
            ),
            (
                "app.kubernetes.io/component".to_owned(),
                "backup".to_owned(),
            ),
            (
                "app.kubernetes.io/managed-by".to_owned(),
                FIELD_MANAGER.to_owned(),
            ),
            (SCHEDULE_LABEL.to_owned(), names.cluster.clone()),
        ]);
        let owner = cluster
            .controller_owner_ref(&())
            .ok_or(Error::MissingField("metadata.uid"))?;
        let backup = StrataBackup {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(names.namespace.clone()),
                labels: Some(labels),
                owner_references: Some(vec![owner]),
                ..ObjectMeta::default()
            },
            spec: StrataBackupSpec {
                cluster: names.cluster.clone(),
                destination: spec.destination.clone(),
            },
            status: None,
        };
        let mut body = serde_json::to_value(&backup)?;
        body["apiVersion"] = json!(StrataBackup::api_version(&()));
        body["kind"] = json!(StrataBackup::kind(&()));
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
        let note = format!("created StrataBackup {name} (schedule {:?})", spec.schedule);
        crate::cluster::reconcile::publish(
            ctx,
            cluster,
            kube::runtime::events::EventType::Normal,
            "BackupScheduled",
            "Backup",
            note,
        )
        .await;
    }
    if let Some(spec) = cluster.spec.backup.as_ref() {
        let listed = api
            .list(&ListParams::default().labels(&format!("{SCHEDULE_LABEL}={}", names.cluster)))
            .await?;
        let mut done: Vec<String> = listed
            .items
            .iter()
            .filter(|b| finished(b.status.as_ref().and_then(|s| s.phase)))
            .map(|b| b.name_any())
            .collect();
        // Names sort by their scheduled time: newest last.
        done.sort();
        let keep = usize::try_from(spec.keep).unwrap_or(1).max(1);
        let excess = done.len().saturating_sub(keep);
        for name in &done[..excess] {
            api.delete(name, &DeleteParams::default()).await?;
        }
    }
    let wait = step.next.and_then(|next| {
        let seconds = next.as_second().saturating_sub(now.as_second()).max(1);
        u64::try_from(seconds)
            .ok()
            .map(std::time::Duration::from_secs)
    });
    Ok(Some((step.status, wait)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::admin::{AdminError, ClusterAdmin, Drain};
    use crate::fake_api::FakeApi;
    use crate::metrics::Metrics;
    use futures::future::BoxFuture;
    use parking_lot::Mutex;

    const BACKUP: &str = "/apis/strata.dev/v1alpha1/namespaces/db/stratabackups/nightly";
    const BACKUPS: &str = "/apis/strata.dev/v1alpha1/namespaces/db/stratabackups";
    const CLUSTER: &str = "/apis/strata.dev/v1alpha1/namespaces/db/strataclusters/demo";

    /// Answers `Admin.Backup` as told, and counts the calls.
    struct FakeBackup {
        answer: Mutex<Result<BackupAnswer, AdminError>>,
        asked: Mutex<Vec<String>>,
    }

    impl ClusterAdmin for FakeBackup {
        fn decommission(
            &self,
            _: String,
            _: u64,
            _: u32,
        ) -> BoxFuture<'static, Result<String, AdminError>> {
            unreachable!("a backup decommissions nothing")
        }

        fn drain_state(&self, _: String, _: u64) -> BoxFuture<'static, Result<Drain, AdminError>> {
            unreachable!("a backup drains nothing")
        }

        fn backup(&self, endpoint: String) -> BoxFuture<'static, Result<BackupAnswer, AdminError>> {
            self.asked.lock().push(endpoint);
            let answer = self.answer.lock().clone();
            Box::pin(async move { answer })
        }
    }

    fn setup(answer: Result<BackupAnswer, AdminError>) -> (FakeApi, Arc<Context>, Arc<FakeBackup>) {
        let (client, fake) = FakeApi::start();
        let admin = Arc::new(FakeBackup {
            answer: Mutex::new(answer),
            asked: Mutex::new(Vec::new()),
        });
        let ctx = Arc::new(Context::with_cluster(
            client,
            None,
            Arc::new(Metrics::default()),
            Arc::new(crate::cluster::probe::GrpcProbe::default()),
            Arc::clone(&admin) as Arc<dyn ClusterAdmin>,
        ));
        (fake, ctx, admin)
    }

    fn insert_backup(fake: &FakeApi) {
        fake.insert(
            BACKUP,
            json!({"apiVersion": "strata.dev/v1alpha1", "kind": "StrataBackup",
                   "metadata": {"name": "nightly", "namespace": "db"},
                   "spec": {"cluster": "demo", "destination": {"volume": {"claimName": "b", "path": "/"}}}}),
        );
    }

    fn insert_cluster(fake: &FakeApi) {
        fake.insert(
            CLUSTER,
            json!({"apiVersion": "strata.dev/v1alpha1", "kind": "StrataCluster",
                   "metadata": {"name": "demo", "namespace": "db"}, "spec": {"image": "s:1"}}),
        );
    }

    #[tokio::test]
    async fn a_backup_waits_for_its_cluster_then_says_it_is_not_supported() {
        let unimplemented = BackupAnswer::Unimplemented("unknown method Backup".into());
        let (fake, ctx, admin) = setup(Ok(unimplemented));
        insert_backup(&fake);
        let backup = || Arc::new(fake.get_as::<StrataBackup>(BACKUP));

        let action = reconcile(backup(), Arc::clone(&ctx)).await.unwrap();
        assert_eq!(action, Action::requeue(WAIT_FOR_CLUSTER));
        let status = backup().status.clone().unwrap();
        assert_eq!(status.phase, Some(BackupPhase::Pending));
        assert!(status
            .message
            .unwrap()
            .contains("StrataCluster demo not found"));
        assert!(admin.asked.lock().is_empty());

        insert_cluster(&fake);
        let action = reconcile(backup(), Arc::clone(&ctx)).await.unwrap();
        assert_eq!(action, Action::await_change());
        assert_eq!(*admin.asked.lock(), ["demo.db.svc:7379"]);
        let status = backup().status.clone().unwrap();
        assert_eq!(status.phase, Some(BackupPhase::NotSupported));
        assert_eq!(status.message.as_deref(), Some(NOT_SUPPORTED));
        assert!(NOT_SUPPORTED.contains("UNIMPLEMENTED"));
        assert_eq!(status.conditions[0].status, "False");
        assert_eq!(status.backup_ts, None);

        // Settled: a further reconcile asks nothing and writes nothing.
        fake.clear_calls();
        reconcile(backup(), Arc::clone(&ctx)).await.unwrap();
        assert!(!fake.calls().iter().any(|c| c.method == "PATCH"));
        assert_eq!(admin.asked.lock().len(), 1);
    }

    #[tokio::test]
    async fn an_unreachable_cluster_leaves_the_backup_pending_not_failing() {
        let (fake, ctx, admin) = setup(Err(AdminError {
            try_another: true,
            message: "cannot connect to demo.db.svc:7379".into(),
        }));
        insert_backup(&fake);
        insert_cluster(&fake);
        let backup = || Arc::new(fake.get_as::<StrataBackup>(BACKUP));
        // Not an error: no backoff, a plain requeue.
        let action = reconcile(backup(), Arc::clone(&ctx)).await.unwrap();
        assert_eq!(action, Action::requeue(WAIT_FOR_CLUSTER));
        let status = backup().status.clone().unwrap();
        assert_eq!(status.phase, Some(BackupPhase::Pending));
        assert_eq!(status.conditions[0].reason, "ClusterUnreachable");
        assert!(status.message.unwrap().contains("cannot connect"));
        // The node answers once it is up: a node that serves the call is a newer node.
        *admin.answer.lock() = Ok(BackupAnswer::Served {
            code: "InvalidArgument".into(),
            message: "destination is required".into(),
        });
        reconcile(backup(), Arc::clone(&ctx)).await.unwrap();
        let status = backup().status.clone().unwrap();
        assert_eq!(status.phase, Some(BackupPhase::Failed));
        assert_eq!(status.conditions[0].reason, "OperatorTooOld");
        assert!(status.message.unwrap().contains("upgrade the operator"));
    }

    fn scheduled(schedule: &str, created: &str, status: serde_json::Value) -> StrataCluster {
        serde_json::from_value(json!({
            "apiVersion": "strata.dev/v1alpha1", "kind": "StrataCluster",
            "metadata": {"name": "demo", "namespace": "db", "uid": "u1", "creationTimestamp": created},
            "spec": {"image": "s:1", "backup": {"schedule": schedule, "keep": 2,
                     "destination": {"volume": {"claimName": "b", "path": "/"}}}},
            "status": status,
        }))
        .unwrap()
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn the_schedule_is_a_function_of_a_fake_clock() {
        let cluster = scheduled("0 3 * * *", "2026-12-01T01:00:00Z", json!({}));
        // Before the first time: nothing, and the next time.
        let step = schedule_step(&cluster, at("2026-12-01T02:00:00Z")).unwrap();
        assert_eq!(step.create, None);
        assert_eq!(step.next, Some(at("2026-12-01T03:00:00Z")));
        // At it: one backup, named by its time.
        let step = schedule_step(&cluster, at("2026-12-01T03:00:20Z")).unwrap();
        assert_eq!(
            step.create,
            Some(("demo-202612010300".to_owned(), at("2026-12-01T03:00:00Z")))
        );
        assert_eq!(
            step.status.last_backup.as_deref(),
            Some("demo-202612010300")
        );
        assert_eq!(step.next, Some(at("2026-12-02T03:00:00Z")));
        // Recorded: not again that day; three days missed: the latest one, once.
        let status = json!({"backupSchedule": {"lastScheduleTime": "2026-12-01T03:00:00Z",
                                                "lastBackup": "demo-202612010300"}});
        let cluster = scheduled("0 3 * * *", "2026-12-01T01:00:00Z", status);
        assert_eq!(
            schedule_step(&cluster, at("2026-12-01T23:00:00Z"))
                .unwrap()
                .create,
            None
        );
        assert_eq!(
            schedule_step(&cluster, at("2026-12-04T05:00:00Z"))
                .unwrap()
                .create,
            Some(("demo-202612040300".to_owned(), at("2026-12-04T03:00:00Z")))
        );
        // An invalid schedule says so and schedules nothing.
        let cluster = scheduled("0 25 * * *", "2026-12-01T01:00:00Z", json!({}));
        let step = schedule_step(&cluster, at("2026-12-05T00:00:00Z")).unwrap();
        assert_eq!((step.create, step.next), (None, None));
        assert!(step.status.message.unwrap().contains("hour"));
    }

    #[tokio::test]
    async fn the_schedule_creates_backups_and_keeps_the_newest_finished() {
        let (fake, ctx, _) = setup(Ok(BackupAnswer::Unimplemented(String::new())));
        let created = "2020-01-01T00:00:00Z";
        let cluster = scheduled("0 3 * * *", created, json!({}));
        // Three finished scheduled backups from before, and one still pending.
        for (name, phase) in [
            ("demo-201901010300", "NotSupported"),
            ("demo-201901020300", "Failed"),
            ("demo-201901030300", "Succeeded"),
            ("demo-201901040300", "Pending"),
        ] {
            fake.insert(
                &format!("{BACKUPS}/{name}"),
                json!({"apiVersion": "strata.dev/v1alpha1", "kind": "StrataBackup",
                       "metadata": {"name": name, "namespace": "db", "labels": {SCHEDULE_LABEL: "demo"}},
                       "spec": {"cluster": "demo", "destination": {"volume": {"claimName": "b", "path": "/"}}},
                       "status": {"phase": phase}}),
            );
        }
        let now = Timestamp::now();
        let (status, wait) = run_schedule(&cluster, &ctx, now).await.unwrap().unwrap();
        let name = status.last_backup.clone().unwrap();
        let created: StrataBackup = fake.get_as(&format!("{BACKUPS}/{name}"));
        assert_eq!(created.spec.cluster, "demo");
        assert_eq!(
            created.labels().get(SCHEDULE_LABEL).map(String::as_str),
            Some("demo")
        );
        let owner = &created.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("StrataCluster", "u1")
        );
        let wait = wait.unwrap();
        assert!(
            wait <= std::time::Duration::from_secs(24 * 3600),
            "{wait:?}"
        );
        // keep: 2 of the finished ones (the new one is not finished yet).
        assert!(!fake.exists(&format!("{BACKUPS}/demo-201901010300")));
        assert!(fake.exists(&format!("{BACKUPS}/demo-201901020300")));
        assert!(fake.exists(&format!("{BACKUPS}/demo-201901030300")));
        assert!(fake.exists(&format!("{BACKUPS}/demo-201901040300")));

        // With the status recorded, the same moment creates nothing more.
        let mut cluster = cluster;
        cluster.status = Some(crate::crd::StrataClusterStatus {
            backup_schedule: Some(status.clone()),
            ..Default::default()
        });
        fake.clear_calls();
        let (again, _) = run_schedule(&cluster, &ctx, now).await.unwrap().unwrap();
        assert_eq!(again.last_backup, status.last_backup);
        assert!(!fake.calls().iter().any(|c| c.method == "PATCH"));
    }
}
