//! The ConfigMap holding each node's configuration file.
//!
//! `spec.nodeConfig` (camelCase, every field optional) becomes the node's YAML file
//! (snake_case, as `strata-node --config` reads it). Fields the spec leaves unset are left
//! out, so the node's own default applies; the listen addresses and the data directory are
//! fixed by the pod layout. The node rejects unknown fields, so this file only ever names
//! fields `docs/configuration.md` documents. The file holds what every pod shares (the Raft
//! listen address among it); the node id, the advertised addresses and the initial members
//! differ per pod or per cluster size and come from the StatefulSet (see `statefulset`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde::Serialize;

use super::names::{
    owned_meta, ClusterNames, CONFIG_KEY, DATA_DIR, GRPC_PORT, HTTP_PORT, RAFT_PORT,
};
use crate::crd::{Compression, LogFormat, StrataCluster};
use crate::error::Result;

#[derive(Serialize)]
struct NodeFile {
    data_dir: &'static str,
    grpc_addr: String,
    http_addr: String,
    cluster: ClusterFile,
    #[serde(skip_serializing_if = "EngineFile::is_empty")]
    engine: EngineFile,
    #[serde(skip_serializing_if = "TxnFile::is_empty")]
    txn: TxnFile,
    log: LogFile,
}

/// The cluster section's part common to every pod (the per-pod values, node id and
/// advertised addresses, and the initial members come as flags and environment from the
/// StatefulSet).
#[derive(Serialize)]
struct ClusterFile {
    raft_addr: String,
}

#[derive(Serialize, Default, PartialEq)]
struct EngineFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    memtable_mb: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    block_cache_mb: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    compression: Option<Compression>,
}

impl EngineFile {
    fn is_empty(&self) -> bool {
        *self == EngineFile::default()
    }
}

#[derive(Serialize, Default, PartialEq)]
struct TxnFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    lock_ttl_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lock_wait_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_timeout_s: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gc_life_time_s: Option<i64>,
}

impl TxnFile {
    fn is_empty(&self) -> bool {
        *self == TxnFile::default()
    }
}

#[derive(Serialize)]
struct LogFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    level: Option<String>,
    format: LogFormat,
}

/// The text of the node's configuration file for `cluster`.
pub fn node_config_yaml(cluster: &StrataCluster) -> Result<String> {
    let config = cluster.spec.node_config.clone().unwrap_or_default();
    let engine = config.engine.unwrap_or_default();
    let txn = config.txn.unwrap_or_default();
    let log = config.log.unwrap_or_default();
    let file = NodeFile {
        data_dir: DATA_DIR,
        grpc_addr: format!("0.0.0.0:{GRPC_PORT}"),
        http_addr: format!("0.0.0.0:{HTTP_PORT}"),
        cluster: ClusterFile {
            raft_addr: format!("0.0.0.0:{RAFT_PORT}"),
        },
        engine: EngineFile {
            memtable_mb: engine.memtable_mb,
            block_cache_mb: engine.block_cache_mb,
            compression: engine.compression,
        },
        txn: TxnFile {
            lock_ttl_ms: txn.lock_ttl_ms,
            lock_wait_ms: txn.lock_wait_ms,
            idle_timeout_s: txn.idle_timeout_s,
            gc_life_time_s: txn.gc_life_time_s,
        },
        log: LogFile {
            level: log.level,
            // Log collectors in a cluster parse JSON; text stays one setting away.
            format: log.format.unwrap_or(LogFormat::Json),
        },
    };
    Ok(serde_yaml::to_string(&file)?)
}

/// The ConfigMap `<cluster>-config` with key `node.yaml`.
pub fn build(cluster: &StrataCluster) -> Result<ConfigMap> {
    let names = ClusterNames::of(cluster)?;
    Ok(ConfigMap {
        metadata: owned_meta(cluster, &names, names.config_map())?,
        data: Some(BTreeMap::from([(
            CONFIG_KEY.to_owned(),
            node_config_yaml(cluster)?,
        )])),
        ..ConfigMap::default()
    })
}

/// A stable 64-bit FNV-1a hash of the configuration text, as hex: the same text gives the
/// same hash on every build and platform (unlike `DefaultHasher`), so an unchanged
/// configuration never rolls the pods.
pub fn config_hash(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}
