//! `StrataCluster`: the desired shape of one Strata cluster, and what the operator saw of it.
//!
//! The spec is what a user edits (`kubectl edit`, `kubectl scale`); the status is written by
//! the operator alone, through the status subresource. Field names are camelCase on the wire,
//! as every Kubernetes API. Each field carries its own schema constraints (minimums, enums)
//! so the API server rejects a bad value at `kubectl apply` time; the rules that relate two
//! fields, or a field to its previous value, are CEL rules (`x-kubernetes-validations`):
//!
//! | rule | where | why |
//! |---|---|---|
//! | `replicas >= replicationFactor` | spec | fewer nodes than replicas per shard cannot place a shard |
//! | `replicationFactor` is odd | spec | a Raft group of 2 or 4 tolerates no more failures than 1 or 3 |
//! | `replicationFactor` unchanged | spec.replicationFactor | the first `replicationFactor` pods are the initial members every pod is given |
//! | storage size and class unchanged | spec.storage | a StatefulSet's volume claim templates are immutable |
//! | `metadata.name` at most 52 characters | root (added in `crd::cluster_crd`) | pod names and revision labels must fit 63 |
//!
//! The node configuration (`spec.nodeConfig`) mirrors the node's own YAML file field for
//! field (camelCase here, snake_case in the file); an unset field keeps the node's default.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The spec of a `StrataCluster`.
// Several `printcolumn(type_ = ...)` look alike to clippy; they are distinct columns.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "strata.dev",
    version = "v1alpha1",
    kind = "StrataCluster",
    namespaced,
    status = "StrataClusterStatus",
    shortname = "strata",
    category = "strata",
    derive = "PartialEq",
    doc = "A Strata cluster: a StatefulSet of strata-node pods, their Services, configuration and disruption budget.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Desired number of nodes"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Nodes whose readiness probe passes"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Summary of the conditions"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("self.replicas >= self.replicationFactor").message("spec.replicas must be at least spec.replicationFactor: every shard needs that many nodes").field_path(".replicas"),
    validation = Rule::new("self.replicationFactor % 2 == 1").message("spec.replicationFactor must be odd (1, 3, 5 or 7): an even Raft group tolerates no more failures than the odd one below it").field_path(".replicationFactor")
)]
#[serde(rename_all = "camelCase")]
pub struct StrataClusterSpec {
    /// Number of strata-node pods.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: i32,
    /// Container image of strata-node, for example `registry.example/strata-node:0.1.0`.
    #[schemars(length(min = 1, max = 1024))]
    pub image: String,
    /// When the kubelet pulls the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// How many replicas each shard keeps (odd, at most 7).
    #[serde(default = "default_replication_factor")]
    #[schemars(range(min = 1, max = 7))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.replicationFactor is immutable: the first replicationFactor pods are the cluster's initial members, which a pod with an empty volume bootstraps from"))]
    pub replication_factor: i32,
    /// Each node's persistent volume.
    #[serde(default)]
    pub storage: StorageSpec,
    /// CPU and memory of each node's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Settings written into each node's configuration file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_config: Option<NodeConfigSpec>,
    /// Periodic backups: the operator creates a `StrataBackup` at each time the schedule
    /// names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupScheduleSpec>,
}

fn default_replicas() -> i32 {
    3
}

fn default_replication_factor() -> i32 {
    3
}

/// The kubelet's image pull policy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull on every start.
    Always,
    /// Pull only when the image is not on the node.
    IfNotPresent,
    /// Never pull.
    Never,
}

impl PullPolicy {
    /// The spelling Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Each node's persistent volume; fixed once the cluster exists.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.size == oldSelf.size").message("spec.storage.size is immutable: a StatefulSet's volume claims cannot be resized by the operator yet"),
    validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)").message("spec.storage.storageClassName is immutable")
)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each node's volume, as a Kubernetes quantity (`10Gi`).
    #[serde(default = "default_storage_size")]
    #[schemars(
        regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"),
        length(max = 64)
    )]
    pub size: String,
    /// Storage class of the volumes; the cluster's default class when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
    /// What happens to the volumes when the `StrataCluster` is deleted.
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,
}

fn default_storage_size() -> String {
    "10Gi".into()
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            size: default_storage_size(),
            storage_class_name: None,
            reclaim_policy: ReclaimPolicy::default(),
        }
    }
}

/// What happens to a cluster's volumes when it is deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReclaimPolicy {
    /// Keep the PersistentVolumeClaims (and so the data); delete them by hand.
    #[default]
    Retain,
    /// Delete the PersistentVolumeClaims with the cluster.
    Delete,
}

/// The node settings a cluster may set; each maps to one field of the node's YAML file.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeConfigSpec {
    /// Storage engine settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineSpec>,
    /// Transaction settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<TxnSpec>,
    /// Logging settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<LogSpec>,
}

/// Storage engine settings (`engine.*` in the node file).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EngineSpec {
    /// Size of one memtable, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4096))]
    pub memtable_mb: Option<i64>,
    /// Size of the block cache, in MiB (0 disables it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1048576))]
    pub block_cache_mb: Option<i64>,
    /// Block compression of new tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
}

/// Block compression.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// No compression.
    None,
    /// LZ4.
    Lz4,
}

/// Transaction settings (`txn.*` in the node file).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TxnSpec {
    /// How long a committing transaction's locks stay valid without progress, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub lock_ttl_ms: Option<i64>,
    /// How long a request waits on a locked key, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub lock_wait_ms: Option<i64>,
    /// Interactive transactions idle this long (seconds) are rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub idle_timeout_s: Option<i64>,
    /// How long old versions stay readable, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub gc_life_time_s: Option<i64>,
}

/// Logging settings (`log.*` in the node file).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogSpec {
    /// A `tracing` filter, for example `info` or `strata=debug,info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub level: Option<String>,
    /// Output format; `json` when unset, so log collectors can parse it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<LogFormat>,
}

/// Log output format.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Periodic backups of a cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleSpec {
    /// A five-field cron expression (`0 3 * * *`).
    #[schemars(regex(pattern = r"^\S+ \S+ \S+ \S+ \S+$"), length(max = 128))]
    pub schedule: String,
    /// Where each backup goes.
    pub destination: super::backup::BackupDestination,
    /// How many completed backups to keep.
    #[serde(default = "default_keep")]
    #[schemars(range(min = 1, max = 1000))]
    pub keep: i32,
}

fn default_keep() -> i32 {
    7
}

/// What the operator observed of a cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StrataClusterStatus {
    /// `Available`, `Progressing` and `Degraded`, each `True`, `False` or `Unknown`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods the StatefulSet currently runs (the scale subresource reads it).
    #[serde(default)]
    pub replicas: i32,
    /// Pods whose readiness probe passes.
    #[serde(default)]
    pub ready_replicas: i32,
    /// The label selector of the pods, for the scale subresource (HorizontalPodAutoscaler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// A one-word summary of the conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClusterPhase>,
    /// Each node's id and state, as seen from its pod.
    #[serde(default)]
    pub nodes: Vec<NodeStatus>,
    /// Distinct shards the reachable nodes report replicas of.
    #[serde(default)]
    pub shards: i32,
    /// Shards a reachable node reports itself leading (fewer than `shards`: an election is on,
    /// or the leader is unreachable).
    #[serde(default)]
    pub led_shards: i32,
    /// The data shard's members (voters and learners) as its leader reports them (else as
    /// the first reachable node does), with the incarnation each was added under.
    #[serde(default)]
    pub members: Vec<MemberStatus>,
    /// The scale-in in progress, if any: the nodes drained before the StatefulSet shrinks.
    /// Kept here so that an operator restarted mid-drain resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainStatus>,
    /// The backup schedule (`spec.backup`): the last backup it created and the next time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_schedule: Option<BackupScheduleStatus>,
}

/// Where a cluster's backup schedule is.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleStatus {
    /// The scheduled time of the last `StrataBackup` created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// The name of that `StrataBackup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<String>,
    /// The next time a backup is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// Why no backup is scheduled (an invalid schedule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One member of the data shard's Raft group.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// The member's node id.
    pub id: i64,
    /// A voter (false: a learner being added).
    pub voter: bool,
    /// The incarnation of the data directory it was added with; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<String>,
}

/// A scale-in in progress: `Admin.Decommission` of the highest ordinals, then a smaller
/// StatefulSet, then the drained pods' volume claims deleted.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DrainStatus {
    /// The StatefulSet's size when the drain began.
    #[schemars(range(min = 1))]
    pub from: i32,
    /// The size it shrinks to once every node below is drained.
    #[schemars(range(min = 1))]
    pub to: i32,
    /// The nodes drained: the pods of ordinals `to` to `from - 1`, highest first.
    #[serde(default)]
    pub nodes: Vec<DrainNode>,
}

/// One node of a drain.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DrainNode {
    /// The node's id.
    pub id: i64,
    /// The pod that runs it.
    pub pod: String,
    /// Where it is in the drain.
    pub state: DrainNodeState,
    /// What the last call about it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where a node is in a drain.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainNodeState {
    /// It still holds a replica; `Admin.Decommission` is moving it off.
    Draining,
    /// It holds no replica and is no member of the cluster: its pod may go.
    Drained,
}

/// A one-word summary of a cluster's conditions, for `kubectl get`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterPhase {
    /// Objects are being created; no node is ready yet.
    Creating,
    /// Every node is ready and the spec is applied.
    Running,
    /// The StatefulSet is rolling out a change or changing size.
    Progressing,
    /// Some nodes are not ready, or the spec asks for something refused.
    Degraded,
}

/// One node of a cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// The node's id (the pod's StatefulSet ordinal plus one).
    pub id: i64,
    /// The pod that runs it.
    pub pod: String,
    /// The node's state, from its pod and its own `Admin.Status`.
    pub state: NodeState,
    /// The strata-node version it reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Why the node is not `Ready`, when the operator knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Replicas the node holds (one per shard), from its own report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i64>,
    /// Of those, the ones it leads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_of: Option<i64>,
    /// The incarnation of its data directory, from its own report: a pod that came back
    /// with an empty volume reports a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<String>,
}

/// A node's state, from its pod and its own `Admin.Status`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// The pod is not scheduled or its container has not started.
    Pending,
    /// The container runs but the node does not serve yet.
    Starting,
    /// The readiness probe passes and the node answers `Admin.Status` with its id.
    Ready,
    /// The readiness probe passes but the node does not answer `Admin.Status`.
    Unreachable,
    /// The container failed or is being deleted, or the node runs under another id.
    Failed,
}
