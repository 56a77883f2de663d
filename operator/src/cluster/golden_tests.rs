//! Each builder's output for `testdata/cluster.yaml`, compared with `testdata/golden/*.yaml`.
//!
//! After an intended change, `STRATA_UPDATE_GOLDEN=1 cargo test -p strata-operator golden`
//! rewrites the files; review the diff before committing it.

use std::path::PathBuf;

use serde::Serialize;

use super::{config_map, pdb, service, statefulset};
use crate::crd::StrataCluster;

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/cluster/testdata")
}

fn fixture() -> StrataCluster {
    let text = std::fs::read_to_string(testdata().join("cluster.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn assert_golden(name: &str, object: &impl Serialize) {
    let actual = serde_yaml::to_string(object).unwrap();
    let path = testdata().join("golden").join(name);
    if std::env::var_os("STRATA_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; set STRATA_UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    assert!(
        actual == expected,
        "{name} differs from its golden file:\n--- expected\n{expected}\n--- actual\n{actual}"
    );
}

#[test]
fn golden_config_map() {
    assert_golden("configmap.yaml", &config_map::build(&fixture()).unwrap());
}

#[test]
fn golden_services() {
    assert_golden(
        "peer-service.yaml",
        &service::build_peer(&fixture()).unwrap(),
    );
    assert_golden(
        "client-service.yaml",
        &service::build_client(&fixture()).unwrap(),
    );
}

#[test]
fn golden_statefulset() {
    assert_golden(
        "statefulset.yaml",
        &statefulset::build(&fixture(), 3).unwrap(),
    );
}

#[test]
fn golden_pdb() {
    assert_golden("pdb.yaml", &pdb::build(&fixture()).unwrap());
}

#[test]
fn the_node_config_parses_as_the_node_reads_it() {
    // The node rejects unknown fields; this checks the shape against its documented keys.
    let text = config_map::node_config_yaml(&fixture()).unwrap();
    let value: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let top: Vec<_> = value
        .as_mapping()
        .unwrap()
        .keys()
        .filter_map(|k| k.as_str())
        .collect();
    assert_eq!(
        top,
        [
            "data_dir",
            "grpc_addr",
            "http_addr",
            "cluster",
            "engine",
            "txn",
            "log"
        ]
    );
    assert_eq!(value["engine"]["memtable_mb"], serde_yaml::Value::from(32));
    assert_eq!(
        value["engine"]["compression"],
        serde_yaml::Value::from("lz4")
    );
    assert!(value["engine"].get("block_cache_mb").is_none());
    assert_eq!(value["log"]["format"], serde_yaml::Value::from("json"));

    let mut bare = fixture();
    bare.spec.node_config = None;
    let text = config_map::node_config_yaml(&bare).unwrap();
    assert_eq!(
        text,
        "data_dir: /var/lib/strata\ngrpc_addr: 0.0.0.0:7379\nhttp_addr: 0.0.0.0:7380\ncluster:\n  raft_addr: 0.0.0.0:20170\nlog:\n  format: json\n"
    );
}

#[test]
fn a_config_change_changes_the_pod_template() {
    let base = statefulset::build(&fixture(), 3).unwrap();
    let mut changed = fixture();
    changed
        .spec
        .node_config
        .as_mut()
        .unwrap()
        .engine
        .as_mut()
        .unwrap()
        .memtable_mb = Some(64);
    let rolled = statefulset::build(&changed, 3).unwrap();
    let hash = |s: &k8s_openapi::api::apps::v1::StatefulSet| {
        s.spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .clone()
    };
    assert_ne!(hash(&base), hash(&rolled));
    assert_eq!(
        hash(&base),
        hash(&statefulset::build(&fixture(), 5).unwrap())
    );
}

#[test]
fn builders_need_the_fields_the_api_server_sets() {
    let mut no_uid = fixture();
    no_uid.metadata.uid = None;
    assert!(matches!(
        pdb::build(&no_uid),
        Err(crate::error::Error::MissingField("metadata.uid"))
    ));
    let mut no_ns = fixture();
    no_ns.metadata.namespace = None;
    assert!(statefulset::build(&no_ns, 3).is_err());
}

#[test]
fn the_node_loads_the_config_map_with_the_pods_flags() {
    use strata::server::config::{CompressionConfig, ConfigArgs, LogFormat, NodeConfig};
    let mut cluster = fixture();
    cluster.spec.node_config = Some(crate::crd::NodeConfigSpec {
        engine: Some(crate::crd::EngineSpec {
            memtable_mb: Some(16),
            block_cache_mb: Some(0),
            compression: Some(crate::crd::Compression::Lz4),
        }),
        txn: Some(crate::crd::TxnSpec {
            lock_ttl_ms: Some(5000),
            lock_wait_ms: Some(0),
            idle_timeout_s: Some(30),
            gc_life_time_s: Some(1200),
        }),
        log: Some(crate::crd::LogSpec {
            level: Some("debug".into()),
            format: Some(crate::crd::LogFormat::Text),
        }),
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.yaml");
    std::fs::write(&path, config_map::node_config_yaml(&cluster).unwrap()).unwrap();
    // What the StatefulSet runs in pod `demo-3`: its command, and its environment as the
    // flags each `STRATA_*` variable stands for (`$(POD_NAME)` expanded as the kubelet does).
    let set = statefulset::build(&cluster, 5).unwrap();
    let container = &set.spec.unwrap().template.spec.unwrap().containers[0];
    let mut argv: Vec<String> = container.command.clone().unwrap();
    argv.retain(|a| !a.ends_with("node.yaml") && a != "--config");
    argv.push("--config".into());
    argv.push(path.display().to_string());
    for var in container.env.clone().unwrap() {
        if let (Some(flag), Some(value)) = (var.name.strip_prefix("STRATA_"), var.value) {
            argv.push(format!("--{}", flag.to_ascii_lowercase().replace('_', "-")));
            argv.push(value.replace("$(POD_NAME)", "demo-3"));
        }
    }
    use clap::Parser;
    let cli = strata::server::process::NodeCli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let args: ConfigArgs = cli.config;
    let config = NodeConfig::load(&args).unwrap();
    assert_eq!(config.node_id, 4);
    let resolved = config.cluster_config().unwrap();
    assert_eq!(
        resolved.advertise_raft_addr.as_str(),
        "demo-3.demo-peers.db.svc:20170"
    );
    assert_eq!(
        resolved.advertise_grpc_addr.as_str(),
        "demo-3.demo-peers.db.svc:7379"
    );
    assert_eq!(resolved.raft_listen, "0.0.0.0:20170".parse().unwrap());
    // demo-3 is beyond the initial members (replicationFactor 3): it joins through them.
    assert!(
        matches!(resolved.bootstrap, strata::server::Bootstrap::Join { ref seeds } if seeds.len() == 3),
        "{:?}",
        resolved.bootstrap
    );
    assert_eq!(config.data_dir, PathBuf::from(super::names::DATA_DIR));
    assert_eq!(config.grpc_addr, "0.0.0.0:7379".parse().unwrap());
    assert_eq!(config.http_addr.port(), 7380);
    assert_eq!(config.engine.memtable_mb, 16);
    assert_eq!(config.engine.block_cache_mb, 0);
    assert_eq!(config.engine.compression, CompressionConfig::Lz4);
    assert_eq!(config.txn.lock_ttl_ms, 5000);
    assert_eq!(config.txn.lock_wait_ms, 0);
    assert_eq!(config.txn.idle_timeout_s, 30);
    assert_eq!(config.txn.gc_life_time_s, 1200);
    assert_eq!(config.log.level, "debug");
    assert_eq!(config.log.format, LogFormat::Text);
}
