//! The `StrataCluster` reconcile: plan -> build -> apply -> status, behind a finalizer.
//!
//! ```text
//!   finalizer absent         add `strata.dev/cleanup`, wait for the next event
//!   apply                    read StatefulSet, list pods -> plan
//!                            -> drain step (a scale-in: Admin.DecommissionStatus, and
//!                               Decommission on a task; see drain.rs) -> plan again
//!                            -> server-side apply ConfigMap, Services, StatefulSet, PDB
//!                               (one field manager, forced)
//!                            -> a drain whose pods are gone: delete their volume claims
//!                            -> Admin.Status of the ready pods
//!                            -> status (subresource) -> events
//!   deleting                 cleanup (PVCs when reclaimPolicy: Delete) -> drop finalizer;
//!                            owner references delete the rest
//! ```
//!
//! Every write is a server-side apply with the field manager `strata-operator`, forced, so
//! the operator owns exactly the fields its builders set and a `kubectl edit` of one of them
//! is put back. The status is applied with the same manager to the status subresource, and
//! only when it changed. Events mark the changes a person cares about: created, scaling
//! out, draining (which nodes), a node drained, scaling in, scaled in, spec updated, became
//! available, a refusal (once per reason), cleanup.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::finalizer::{finalizer, Event};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use super::names::{ClusterNames, DATA_VOLUME, FIELD_MANAGER, GRPC_PORT};
use super::plan::Plan;
use super::status::{AVAILABLE, DEGRADED};
use super::{config_map, drain, pdb, plan, probe, service, statefulset, status};
use crate::backup;
use crate::controller::{instrumented, Context};
use crate::crd::{DrainStatus, ReclaimPolicy, StrataCluster, StrataClusterStatus};
use crate::error::{Error, Result};

/// The finalizer the operator puts on every `StrataCluster`.
pub const FINALIZER: &str = "strata.dev/cleanup";

/// How often a settled cluster is looked at again without any event.
pub const RESYNC: Duration = Duration::from_secs(300);
/// How often a cluster that is changing is looked at again.
pub const WHILE_PROGRESSING: Duration = Duration::from_secs(15);
/// How often a cluster that drains nodes is looked at again.
pub const WHILE_DRAINING: Duration = Duration::from_secs(5);

/// Reconciles one `StrataCluster`.
pub async fn reconcile(cluster: Arc<StrataCluster>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = cluster
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<StrataCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let run = finalizer(&api, FINALIZER, Arc::clone(&cluster), |event| async {
        match event {
            // Boxed: the apply future is large, and a debug build's stack is not.
            Event::Apply(cluster) => Box::pin(apply(&cluster, &ctx)).await,
            Event::Cleanup(cluster) => Box::pin(cleanup(&cluster, &ctx)).await,
        }
    });
    instrumented("StrataCluster", cluster.as_ref(), &ctx, async {
        run.await.map_err(|e| Error::Finalizer(Box::new(e)))
    })
    .await
}

async fn apply(cluster: &StrataCluster, ctx: &Context) -> Result<Action> {
    let names = ClusterNames::of(cluster)?;
    let client = &ctx.client;
    let ns = names.namespace.as_str();
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let existing = statefulsets.get_opt(&names.statefulset()).await?;
    let running = existing
        .as_ref()
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.replicas);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pods = pods
        .list(&ListParams::default().labels(&names.selector_string()))
        .await?
        .items;
    let ready = status::ready_ordinals(&pods);

    let recorded = cluster.status.as_ref().and_then(|s| s.drain.clone());
    let plan_for = |drain: Option<&DrainStatus>| match plan::validate_name(&names.cluster) {
        Ok(()) => plan::plan(&cluster.spec, &names.statefulset(), running, drain),
        Err(refusal) => Plan::Invalid(refusal),
    };
    let first = plan_for(recorded.as_ref());
    let mut drain = match &first {
        // Nothing is applied, and the drain recorded stays recorded.
        Plan::Invalid(_) => recorded.clone(),
        Plan::Apply { drain, .. } => drain.clone(),
    };
    if let (None, Some(new)) = (&recorded, &drain) {
        // Recorded before any call is made, so that whatever happens next (an operator
        // restart, a spec edit) finds the drain and finishes it.
        let mut with_drain = cluster.status.clone().unwrap_or_default();
        with_drain.drain = Some(new.clone());
        write_status(ctx, &names, &with_drain).await?;
        let note = format!(
            "scale-in from {} to {} nodes: draining {} through Admin.Decommission first",
            new.from,
            new.to,
            node_list(new.nodes.iter().map(|n| (n.id, n.pod.as_str())))
        );
        publish(ctx, cluster, EventType::Normal, "Draining", "Scale", note).await;
    }
    let mut newly_drained = Vec::new();
    if let (Plan::Apply { .. }, Some(d)) = (&first, drain.as_mut()) {
        if !plan::all_drained(d) {
            // The pods that stay first: a drained node may already be gone.
            let mut order = ready.clone();
            order.sort_by_key(|o| (*o >= d.to, *o));
            let endpoints: Vec<String> = order
                .into_iter()
                .map(|o| format!("{}:{GRPC_PORT}", names.peer_dns(o)))
                .collect();
            let rf = u32::try_from(cluster.spec.replication_factor).unwrap_or(0);
            newly_drained = drain::advance(
                &ctx.admin,
                &ctx.drains,
                &drain_prefix(&names),
                rf,
                d,
                &endpoints,
            )
            .await;
        }
    }
    let plan = match &first {
        Plan::Invalid(_) => first,
        Plan::Apply { .. } => plan_for(drain.as_ref()),
    };

    let statefulset = match &plan {
        Plan::Invalid(_) => existing,
        Plan::Apply { replicas, .. } => {
            apply_object::<ConfigMap>(ctx, ns, config_map::build(cluster)?).await?;
            apply_object::<Service>(ctx, ns, service::build_peer(cluster)?).await?;
            apply_object::<Service>(ctx, ns, service::build_client(cluster)?).await?;
            let sts = apply_object::<StatefulSet>(ctx, ns, statefulset::build(cluster, *replicas)?)
                .await?;
            apply_object::<PodDisruptionBudget>(ctx, ns, pdb::build(cluster)?).await?;
            Some(sts)
        }
    };
    let mut scaled_in = None;
    if let (Plan::Apply { replicas, .. }, Some(d)) = (&plan, &drain) {
        if plan::all_drained(d) && *replicas == d.to && finish_shrink(ctx, &names, d, &pods).await?
        {
            ctx.drains.forget(&drain_prefix(&names));
            scaled_in = drain.take();
        }
    }

    let targets = ready
        .iter()
        .map(|ordinal| {
            (
                *ordinal,
                format!("{}:{GRPC_PORT}", names.peer_dns(*ordinal)),
            )
        })
        .collect();
    let reports = probe::probe_all(ctx.probe.as_ref(), targets).await;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let seen = status::Observed {
        plan: &plan,
        drain: drain.as_ref(),
        statefulset: statefulset.as_ref(),
        pods: &pods,
        reports: &reports,
    };
    let mut new_status = status::build(cluster, &names, seen, &now);
    let mut wait_for_backup = None;
    // A refused spec schedules nothing (the status keeps what it had).
    if !matches!(plan, Plan::Invalid(_)) {
        if let Some((schedule, wait)) = backup::run_schedule(cluster, ctx, now.0).await? {
            new_status.backup_schedule = Some(schedule);
            wait_for_backup = wait;
        }
    }
    publish_events(cluster, ctx, &plan, cluster.status.as_ref(), &new_status).await;
    if let Some(d) = &drain {
        for id in newly_drained {
            if let Some(node) = d.nodes.iter().find(|n| n.id == id) {
                let note = format!("node {id} ({}) is drained: it holds no replica", node.pod);
                publish(
                    ctx,
                    cluster,
                    EventType::Normal,
                    "NodeDrained",
                    "Scale",
                    note,
                )
                .await;
            }
        }
    }
    if let Some(d) = scaled_in {
        let note = format!(
            "scaled in from {} to {} nodes: {} drained, their pods and volume claims deleted",
            d.from,
            d.to,
            node_list(d.nodes.iter().map(|n| (n.id, n.pod.as_str())))
        );
        publish(ctx, cluster, EventType::Normal, "ScaledIn", "Scale", note).await;
    }

    let progressing = new_status
        .conditions
        .iter()
        .any(|c| c.type_ == status::PROGRESSING && c.status == "True");
    if cluster.status.as_ref() != Some(&new_status) {
        write_status(ctx, &names, &new_status).await?;
    }
    let wait = if new_status.drain.is_some() {
        WHILE_DRAINING
    } else if progressing {
        WHILE_PROGRESSING
    } else {
        RESYNC
    };
    Ok(Action::requeue(
        wait_for_backup.map_or(wait, |b| b.min(wait)),
    ))
}

/// The prefix of this cluster's keys in the table of drain calls.
fn drain_prefix(names: &ClusterNames) -> String {
    format!("{}/{}/", names.namespace, names.cluster)
}

fn node_list<'a>(nodes: impl Iterator<Item = (i64, &'a str)>) -> String {
    nodes
        .map(|(id, pod)| format!("node {id} ({pod})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// After the StatefulSet shrank to `drain.to`: once the drained pods are gone, deletes
/// their volume claims; true once none is left (the drain is complete).
async fn finish_shrink(
    ctx: &Context,
    names: &ClusterNames,
    drain: &DrainStatus,
    pods: &[Pod],
) -> Result<bool> {
    let left = pods
        .iter()
        .filter_map(|p| super::names::ordinal_of(p.metadata.name.as_deref()?))
        .any(|o| o >= drain.to);
    if left {
        return Ok(false);
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let drained: Vec<String> = (drain.to..drain.from)
        .map(|ordinal| format!("{DATA_VOLUME}-{}-{ordinal}", names.statefulset()))
        .collect();
    // Listed by the cluster's labels (the claim template carries them), as the cleanup.
    let listed = claims
        .list(&ListParams::default().labels(&names.selector_string()))
        .await?;
    let mut remaining = false;
    for claim in listed.items {
        let name = claim.name_any();
        if drained.contains(&name) {
            remaining = true;
            if claim.metadata.deletion_timestamp.is_none() {
                claims.delete(&name, &DeleteParams::default()).await?;
            }
        }
    }
    Ok(!remaining)
}

/// Applies `status` to the cluster's status subresource.
async fn write_status(
    ctx: &Context,
    names: &ClusterNames,
    status: &StrataClusterStatus,
) -> Result<()> {
    let api: Api<StrataCluster> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let patch = json!({
        "apiVersion": StrataCluster::api_version(&()),
        "kind": StrataCluster::kind(&()),
        "status": status,
    });
    api.patch_status(
        &names.cluster,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Server-side applies `object` (forced, one field manager) and returns what the API server
/// stored.
async fn apply_object<K>(ctx: &Context, namespace: &str, object: K) -> Result<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let name = object
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingField("metadata.name"))?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    // The typed structs omit apiVersion/kind; an apply patch needs them.
    let mut body = serde_json::to_value(&object)?;
    body["apiVersion"] = json!(K::api_version(&()));
    body["kind"] = json!(K::kind(&()));
    Ok(api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?)
}

async fn cleanup(cluster: &StrataCluster, ctx: &Context) -> Result<Action> {
    let names = ClusterNames::of(cluster)?;
    // A drain of a deleted cluster has nothing left to finish.
    ctx.drains.forget(&drain_prefix(&names));
    let mut note = "owned objects are deleted by the garbage collector".to_owned();
    if cluster.spec.storage.reclaim_policy == ReclaimPolicy::Delete {
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(ctx.client.clone(), &names.namespace);
        let prefix = format!("{DATA_VOLUME}-{}-", names.statefulset());
        let listed = claims
            .list(&ListParams::default().labels(&names.selector_string()))
            .await?;
        let mut deleted = 0;
        for claim in listed.items {
            let name = claim.name_any();
            // Only the StatefulSet's own claims, whatever else carries the labels.
            if name.starts_with(&prefix) {
                claims.delete(&name, &DeleteParams::default()).await?;
                deleted += 1;
            }
        }
        note = format!("{note}; deleted {deleted} volume claim(s) (reclaimPolicy: Delete)");
    } else {
        note = format!("{note}; volume claims kept (reclaimPolicy: Retain)");
    }
    publish(ctx, cluster, EventType::Normal, "Deleting", "Cleanup", note).await;
    Ok(Action::await_change())
}

async fn publish_events(
    cluster: &StrataCluster,
    ctx: &Context,
    plan: &Plan,
    old: Option<&StrataClusterStatus>,
    new: &StrataClusterStatus,
) {
    let condition = |status: Option<&StrataClusterStatus>, ty: &str| {
        status.and_then(|s| s.conditions.iter().find(|c| c.type_ == ty).cloned())
    };
    let refused = match plan {
        Plan::Invalid(refusal) => Some(refusal),
        Plan::Apply { refused, .. } => refused.as_ref(),
    };
    if let Some(refusal) = refused {
        let before = condition(old, DEGRADED);
        let repeated = before.is_some_and(|c| c.status == "True" && c.reason == refusal.reason);
        if !repeated {
            let (reason, message) = (refusal.reason, refusal.message.clone());
            publish(ctx, cluster, EventType::Warning, reason, "Plan", message).await;
        }
    }
    if let Plan::Apply {
        replicas, running, ..
    } = plan
    {
        match running {
            None => {
                let note = format!("created the StatefulSet with {replicas} node(s)");
                publish(ctx, cluster, EventType::Normal, "Created", "Apply", note).await;
            }
            Some(n) if replicas > n => {
                let note = format!("scaling out from {n} to {replicas} node(s)");
                publish(ctx, cluster, EventType::Normal, "ScalingOut", "Scale", note).await;
            }
            Some(n) if replicas < n => {
                let note = format!(
                    "scaling in from {n} to {replicas} node(s): the nodes above are drained"
                );
                publish(ctx, cluster, EventType::Normal, "ScalingIn", "Scale", note).await;
            }
            Some(_) if old.and_then(|s| s.observed_generation) != cluster.metadata.generation => {
                let note = "applied the updated spec".to_owned();
                publish(ctx, cluster, EventType::Normal, "Updated", "Apply", note).await;
            }
            Some(_) => {}
        }
    }
    let was_available = condition(old, AVAILABLE).is_some_and(|c| c.status == "True");
    if let Some(now) = condition(Some(new), AVAILABLE) {
        if now.status == "True" && !was_available {
            publish(
                ctx,
                cluster,
                EventType::Normal,
                "Available",
                "Status",
                now.message,
            )
            .await;
        }
    }
}

/// Publishes one event; a failure is logged, never fatal (events are best effort).
pub(crate) async fn publish(
    ctx: &Context,
    cluster: &StrataCluster,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = KubeEvent {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "could not publish an event");
    }
}
