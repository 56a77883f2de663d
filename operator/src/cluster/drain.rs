//! The scale-in drain: decommission the highest ordinals, then shrink, then forget them.
//!
//! ```text
//!   spec.replicas < running (>= replicationFactor)
//!     │ plan: start_drain(from = running, to = replicas)     nodes ordinals to..from, Draining
//!     ▼ status.drain written first (before any call)          an operator restart resumes here
//!   Draining   each reconcile, per node still Draining:
//!                Admin.DecommissionStatus (any ready pod, the ones that stay first)
//!                  DRAINED -> node Drained
//!                  ACTIVE  -> Admin.Decommission on a task of its own, unless one runs
//!                             (the reconcile never waits for it; a failure is retried
//!                             at the next reconcile and shown in the node's message)
//!              StatefulSet stays at `from`; requeue after WHILE_DRAINING
//!     ▼ every node Drained
//!   Shrinking  StatefulSet lowered to `to`; once the drained pods are gone, their volume
//!              claims are deleted; once no claim is left, status.drain is cleared
//!     ▼
//!   done       a scale-out asked for meanwhile is applied now, on fresh volumes
//! ```
//!
//! `Admin.Decommission` leaves the drained node no member of the data shard (it removes it
//! after moving leadership and, if needed, promoting a learner), so there is no
//! `RemoveNode` to make. The drained pods' volume claims are deleted because a drained
//! node's data is of no use and would harm: a pod started on it later (a scale-out reuses
//! the ordinal) would find a raft log, skip `--join`, and sit outside the cluster. On a
//! fresh volume it joins as a new member instead.
//!
//! What must survive a restart of the operator is in `status.drain` (the sizes and the node
//! ids, which the StatefulSet ordinals give); the calls in flight are not (a restarted
//! operator issues `Decommission` again, which is idempotent).

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use parking_lot::Mutex;

use super::admin::{first_answer, ClusterAdmin, Drain};
use crate::crd::{DrainNodeState, DrainStatus};

#[derive(Debug, Clone)]
enum Task {
    Running,
    Finished(Result<String, String>),
}

/// The `Decommission` calls this operator process has in flight, by cluster and node.
#[derive(Debug, Default)]
pub struct DrainTasks {
    tasks: Mutex<HashMap<String, Arc<Mutex<Task>>>>,
}

impl DrainTasks {
    /// Starts `call` under `key` unless one runs there. Returns what the call finished
    /// before it said (`None`: none finished since the last look, or one still runs).
    pub fn ensure(
        &self,
        key: &str,
        call: impl FnOnce() -> BoxFuture<'static, Result<String, String>>,
    ) -> Option<Result<String, String>> {
        let mut tasks = self.tasks.lock();
        let previous = match tasks.get(key).map(|t| t.lock().clone()) {
            Some(Task::Running) => return None,
            Some(Task::Finished(outcome)) => Some(outcome),
            None => None,
        };
        let slot = Arc::new(Mutex::new(Task::Running));
        tasks.insert(key.to_owned(), Arc::clone(&slot));
        let work = call();
        tokio::spawn(async move {
            let outcome = work.await;
            *slot.lock() = Task::Finished(outcome);
        });
        previous
    }

    /// Forgets the calls of keys starting with `prefix` (a finished drain).
    pub fn forget(&self, prefix: &str) {
        self.tasks.lock().retain(|key, _| !key.starts_with(prefix));
    }

    /// Whether a call runs under `key`.
    pub fn running(&self, key: &str) -> bool {
        self.tasks
            .lock()
            .get(key)
            .is_some_and(|t| matches!(*t.lock(), Task::Running))
    }
}

/// The key of node `id`'s call within the cluster `prefix` (`<namespace>/<name>/`).
pub fn task_key(prefix: &str, id: i64) -> String {
    format!("{prefix}{id}")
}

/// One look at every node of `drain` still draining: marks the drained ones, starts (or
/// restarts) `Decommission` for the others. `endpoints` are the gRPC addresses to ask, in
/// order. Returns the ids that turned drained.
pub async fn advance(
    admin: &Arc<dyn ClusterAdmin>,
    tasks: &DrainTasks,
    prefix: &str,
    replication_factor: u32,
    drain: &mut DrainStatus,
    endpoints: &[String],
) -> Vec<i64> {
    let mut drained = Vec::new();
    // Every node's state at once: a reconcile waits at most one call's timeout per endpoint.
    let asks = drain
        .nodes
        .iter()
        .filter(|n| n.state == DrainNodeState::Draining)
        .filter_map(|n| u64::try_from(n.id).ok())
        .map(|id| async move {
            (
                id,
                first_answer(endpoints, |e| admin.drain_state(e, id)).await,
            )
        });
    let states: HashMap<u64, _> = futures::future::join_all(asks).await.into_iter().collect();
    for node in drain
        .nodes
        .iter_mut()
        .filter(|n| n.state == DrainNodeState::Draining)
    {
        let Some((id, state)) = u64::try_from(node.id)
            .ok()
            .and_then(|id| Some((id, states.get(&id)?.clone())))
        else {
            node.message = Some(format!("node id {} is not a valid id", node.id));
            continue;
        };
        node.message = Some(match state {
            Ok(Drain::Drained) => {
                node.state = DrainNodeState::Drained;
                drained.push(node.id);
                "holds no replica and is no member of the cluster".to_owned()
            }
            Ok(Drain::Active) => {
                let admin = Arc::clone(admin);
                let endpoints = endpoints.to_vec();
                let previous = tasks.ensure(&task_key(prefix, node.id), move || {
                    Box::pin(async move {
                        first_answer(&endpoints, |e| {
                            admin.decommission(e, id, replication_factor)
                        })
                        .await
                        .map_err(|e| e.message)
                    })
                });
                match previous {
                    None => "Admin.Decommission in progress".to_owned(),
                    Some(Ok(summary)) => format!(
                        "Admin.Decommission returned ({summary}) but the node still holds a replica; asked again"
                    ),
                    Some(Err(e)) => format!("Admin.Decommission failed, retrying: {e}"),
                }
            }
            Err(e) => format!("its drain state is unknown: {e}"),
        });
    }
    drained
}
