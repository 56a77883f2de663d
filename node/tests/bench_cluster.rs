//! `strata bench run` and `strata bench recovery` against real node processes on 127.0.0.1:
//! the servers' cost is measured on every node of a 3-node cluster, and a killed node is
//! timed back to serving. Sizes are tiny: these check the measuring, not the figures.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use strata::bench::cluster::{self, ClusterBenchConfig, ClusterWorkload};
use strata::bench::engine::OutputFormat;
use strata::bench::recovery::{self, RecoveryBenchConfig};
use strata::cli::node_process::NodeProcess;
use strata::cli::playground::{self, PlaygroundArgs};
use strata::cli::ClientOptions;

const NODE: &str = env!("CARGO_BIN_EXE_strata-node");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_run_measures_every_node_of_a_three_node_cluster() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let any: SocketAddr = "127.0.0.1:0".parse()?;
    let args = PlaygroundArgs {
        nodes: 3,
        data_dir: None,
        grpc_addr: any,
        http_addr: any,
        raft_addr: any,
        node_binary: None,
    };
    let specs = playground::plan(&args, Path::new(NODE), dir.path())?;
    let mut nodes = specs
        .iter()
        .map(NodeProcess::spawn)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut endpoints = Vec::new();
    for n in &mut nodes {
        endpoints.push(n.wait_ready(deadline).await?.grpc.to_string());
    }
    let config = ClusterBenchConfig {
        workload: ClusterWorkload::Put,
        clients: 3,
        duration: 1,
        keys: 100,
        format: OutputFormat::Json,
        ..Default::default()
    };
    let options = ClientOptions {
        endpoints: Some(endpoints.join(",")),
        timeout: 10,
        ..ClientOptions::for_endpoint("unused:1")
    };
    let mut out = Vec::new();
    let report = cluster::run(&config, &options, &mut out).await?;
    assert!(
        report.total.ops > 0 && report.total.errors == 0,
        "{:?}",
        report.total
    );
    let s = &report.server;
    assert_eq!(s.nodes.len(), 3, "{s:?}");
    assert!(s.unmeasured.is_empty(), "{s:?}");
    // A replicated write is fsynced on the leader and on the followers: every node synced.
    for n in &s.nodes {
        assert!(
            n.raft_log_syncs > 0,
            "node {} did not fsync: {s:?}",
            n.node_id
        );
        assert!(n.cpu_seconds > 0.0, "{s:?}");
    }
    // Only the leader proposes.
    assert_eq!(
        s.nodes.iter().filter(|n| n.raft_proposals > 0).count(),
        1,
        "{s:?}"
    );
    assert!(s.fsyncs_per_op > 0.0 && s.cpu_us_per_op > 0.0, "{s:?}");
    assert!(s.proposals_per_ready >= 1.0, "{s:?}");
    let text = String::from_utf8(out)?;
    let total: serde_json::Value = serde_json::from_str(text.lines().last().unwrap_or(""))?;
    assert_eq!(total["server_nodes"], 3, "{total}");
    for n in &mut nodes {
        n.stop(Duration::from_secs(30)).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_bench_times_a_killed_node_back_to_serving() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = RecoveryBenchConfig {
        data_mb: 1,
        value_size: 4096,
        clients: 8,
        data_dir: Some(dir.path().to_path_buf()),
        deadline: 60,
        format: OutputFormat::Text,
        node_binary: Some(NODE.into()),
    };
    let mut out = Vec::new();
    // `run` itself fails unless the last key loaded reads back after the restart.
    let r = recovery::run(&config, &mut out).await?;
    assert_eq!(r.keys, 256);
    assert!(r.listening_seconds <= r.ready_seconds && r.ready_seconds <= r.serving_seconds);
    // Every acknowledged put was in the raft log the restart found.
    assert!(r.last_index_at_open >= r.applied_before_kill, "{r:?}");
    assert!(r.applied_at_open <= r.last_index_at_open, "{r:?}");
    assert_eq!(r.entries_replayed, r.last_index_at_open - r.applied_at_open);
    assert!(r.raft_log_bytes_at_open > 0, "{r:?}");
    let text = String::from_utf8(out)?;
    assert!(text.contains("restart: listening"), "{text}");
    Ok(())
}
