//! `StrataBackup`: one backup of one cluster, and its progress.
//!
//! A backup names its cluster (in the same namespace) and one destination: a path on a
//! PersistentVolumeClaim, or a bucket of an S3-compatible store. The operator drives the
//! backup through the cluster's `Admin.Backup` call and tracks it in `status.phase`. The node
//! does not implement `Admin.Backup` yet, so today every backup ends in phase `NotSupported`
//! with a message saying so; the spec is fixed now so that manifests written today keep
//! working when it lands.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The spec of a `StrataBackup`; immutable once created.
// Several `printcolumn(type_ = ...)` look alike to clippy; they are distinct columns.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "strata.dev",
    version = "v1alpha1",
    kind = "StrataBackup",
    namespaced,
    status = "StrataBackupStatus",
    shortname = "stratabak",
    category = "strata",
    derive = "PartialEq",
    doc = "One backup of a StrataCluster to a volume path or an S3-compatible bucket.",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.cluster",
        description = "The StrataCluster backed up"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Where the backup is"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("self == oldSelf").message("a StrataBackup's spec is immutable: create a new backup instead")
)]
#[serde(rename_all = "camelCase")]
pub struct StrataBackupSpec {
    /// Name of the `StrataCluster` to back up, in the backup's namespace.
    #[schemars(length(min = 1, max = 63))]
    pub cluster: String,
    /// Where the backup is written.
    pub destination: BackupDestination,
}

/// Where a backup goes: exactly one of `volume` or `s3`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("has(self.volume) != has(self.s3)").message("set exactly one of destination.volume or destination.s3")
)]
#[serde(rename_all = "camelCase")]
pub struct BackupDestination {
    /// A directory on a PersistentVolumeClaim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeDestination>,
    /// A bucket of an S3-compatible object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,
}

/// A directory on a PersistentVolumeClaim.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeDestination {
    /// The claim, in the backup's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
    /// Directory inside the volume.
    #[serde(default = "default_path")]
    #[schemars(length(min = 1, max = 4096))]
    pub path: String,
}

fn default_path() -> String {
    "/".into()
}

/// A bucket of an S3-compatible object store.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Destination {
    /// Bucket name.
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Key prefix inside the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub prefix: Option<String>,
    /// Endpoint URL; the AWS endpoint of `region` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://"), length(max = 2048))]
    pub endpoint: Option<String>,
    /// Region of the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub region: Option<String>,
    /// A Secret in the backup's namespace with keys `accessKeyId` and `secretAccessKey`.
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: String,
}

/// Progress of a backup.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StrataBackupStatus {
    /// Where the backup is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,
    /// A sentence a person can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The cluster timestamp the backup is consistent at, once taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_ts: Option<i64>,
    /// Bytes written, once complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// Standard conditions (`Complete`).
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// Where a backup is.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupPhase {
    /// Waiting for its cluster.
    Pending,
    /// The cluster is writing it.
    Running,
    /// Complete.
    Succeeded,
    /// Failed; see the message.
    Failed,
    /// The node does not implement backups yet; nothing was written.
    NotSupported,
}
