//! Strata's integration-test crate: clusters of real `strata-node` processes on 127.0.0.1.
//!
//! ```text
//!   Cluster::builder(node_binary!()).nodes(3).start()
//!     <tmp>/node-<id>/        each node's data directory (wipe(i) deletes it)
//!     <tmp>/node-<id>.log     its stdout and stderr, appended across restarts
//!     ports: gRPC and HTTP free ones on the first start (learnt from the node's
//!            addresses.json), Raft ones reserved up front (the initial members name them);
//!            restart(i) reuses all three
//!   kill9(i)  SIGKILL          stop(i)  SIGTERM, bounded wait      restart(i)  same dir, ports
//! ```
//!
//! Nodes are indexed from 0; node `i` has node id `i + 1`. Every node is started with
//! `--stop-when-stdin-closes` and a pipe this process holds, so no node outlives the test
//! process, even one that dies by `kill -9` (see `strata::cli::node_process`). When a test
//! panics, dropping the [`Cluster`] prints the end of every node's log to stderr.
//!
//! Which binary: [`node_binary!`] is this package's `strata-test-node`, which runs the same
//! `main` as `strata-node` (`strata::server::process::main`) and which cargo builds fresh for
//! these tests; `STRATA_NODE_BIN` overrides it (to test a release or installed binary).
//! Engine-level crash tests, which need only the storage engine, live in `node/tests/`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use strata::cli::node_process::{reserve_loopback_ports, NodeProcess, NodeSpec};
use strata::cli::Clients;
use strata::server::identity::BoundAddresses;
use strata::server::Member;

/// How long a node may take to become ready.
pub const READY_DEADLINE: Duration = Duration::from_secs(30);
/// How long `stop` waits after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(15);

/// The node binary for this package's integration tests: `STRATA_NODE_BIN` if set, else
/// the `strata-test-node` cargo built.
#[macro_export]
macro_rules! node_binary {
    () => {
        $crate::resolve_node_binary(env!("CARGO_BIN_EXE_strata-test-node"))
    };
}

/// `STRATA_NODE_BIN` if set, else `built`.
pub fn resolve_node_binary(built: &str) -> PathBuf {
    match std::env::var_os("STRATA_NODE_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(built),
    }
}

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    binary: PathBuf,
    nodes: usize,
    args: Vec<String>,
}

impl ClusterBuilder {
    /// `n` nodes (at least 1).
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    /// Extra flags for every node.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Starts every node at once and waits until all are ready.
    pub async fn start(self) -> Result<Cluster> {
        if self.nodes == 0 {
            bail!("a cluster needs at least one node");
        }
        if !self.binary.is_file() {
            bail!("no node binary at {}", self.binary.display());
        }
        let dir = tempfile::Builder::new()
            .prefix("strata-cluster-")
            .tempdir()
            .context("creating the cluster's directory")?;
        let raft: Vec<SocketAddr> = reserve_loopback_ports(self.nodes)?
            .into_iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        let members: Vec<Member> = if self.nodes > 1 {
            raft.iter()
                .zip(1..)
                .map(|(a, id)| {
                    Ok(Member {
                        id,
                        raft_addr: a.to_string().parse().map_err(|e: String| anyhow!(e))?,
                    })
                })
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut args = vec![
            "--memtable-mb".to_owned(),
            "4".to_owned(),
            "--block-cache-mb".to_owned(),
            "8".to_owned(),
            "--log-level".to_owned(),
            "info".to_owned(),
        ];
        args.extend(self.args);
        let nodes = raft
            .iter()
            .zip(1u64..)
            .map(|(&raft_addr, id)| Slot {
                spec: NodeSpec {
                    binary: self.binary.clone(),
                    node_id: id,
                    data_dir: dir.path().join(format!("node-{id}")),
                    grpc_addr: any,
                    http_addr: any,
                    raft_addr,
                    initial_members: members.clone(),
                    log_file: dir.path().join(format!("node-{id}.log")),
                    extra_args: args.clone(),
                    env: Vec::new(),
                },
                process: None,
                addresses: None,
            })
            .collect();
        let mut cluster = Cluster { dir, nodes };
        for slot in &mut cluster.nodes {
            slot.process = Some(NodeProcess::spawn(&slot.spec)?);
        }
        let deadline = Instant::now() + READY_DEADLINE;
        for i in 0..cluster.nodes.len() {
            cluster.wait_ready(i, deadline).await?;
        }
        Ok(cluster)
    }
}

#[derive(Debug)]
struct Slot {
    spec: NodeSpec,
    process: Option<NodeProcess>,
    /// What the node bound the last time it was ready.
    addresses: Option<BoundAddresses>,
}

/// A running cluster of node processes; every node is killed when it is dropped.
#[derive(Debug)]
pub struct Cluster {
    dir: tempfile::TempDir,
    nodes: Vec<Slot>,
}

impl Cluster {
    /// A cluster of nodes run from `binary` (see [`node_binary!`]).
    pub fn builder(binary: impl Into<PathBuf>) -> ClusterBuilder {
        ClusterBuilder {
            binary: binary.into(),
            nodes: 3,
            args: Vec::new(),
        }
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no node (never: `start` refuses that).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn slot(&self, i: usize) -> Result<&Slot> {
        self.nodes
            .get(i)
            .ok_or_else(|| anyhow!("no node {i} in a cluster of {}", self.nodes.len()))
    }

    fn slot_mut(&mut self, i: usize) -> Result<&mut Slot> {
        let n = self.nodes.len();
        self.nodes
            .get_mut(i)
            .ok_or_else(|| anyhow!("no node {i} in a cluster of {n}"))
    }

    /// Node `i`'s id.
    pub fn node_id(&self, i: usize) -> u64 {
        i as u64 + 1
    }

    /// Node `i`'s addresses (those of its last ready start).
    pub fn addresses(&self, i: usize) -> Result<&BoundAddresses> {
        self.slot(i)?
            .addresses
            .as_ref()
            .ok_or_else(|| anyhow!("node {i} has never been ready"))
    }

    /// Node `i`'s gRPC endpoint, HOST:PORT.
    pub fn endpoint(&self, i: usize) -> Result<String> {
        Ok(self.addresses(i)?.grpc.to_string())
    }

    /// Every node's gRPC endpoint, in order (running or not).
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter_map(|s| s.addresses.as_ref().map(|a| a.grpc.to_string()))
            .collect()
    }

    /// Clients of node `i`.
    pub async fn client(&self, i: usize) -> Result<Clients> {
        Clients::connect_one(&self.endpoint(i)?, Duration::from_secs(10)).await
    }

    /// Node `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> Result<&Path> {
        Ok(&self.slot(i)?.spec.data_dir)
    }

    /// Node `i`'s log file (all its runs).
    pub fn log_file(&self, i: usize) -> Result<&Path> {
        Ok(&self.slot(i)?.spec.log_file)
    }

    /// The directory holding every node's data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether node `i`'s process is running.
    pub fn is_running(&mut self, i: usize) -> Result<bool> {
        Ok(match &mut self.slot_mut(i)?.process {
            Some(p) => p.try_wait()?.is_none(),
            None => false,
        })
    }

    /// The process id of node `i`, while it runs.
    pub fn pid(&self, i: usize) -> Result<Option<u32>> {
        Ok(self.slot(i)?.process.as_ref().map(NodeProcess::pid))
    }

    /// `kill -9` node `i`; returns once it is reaped.
    pub fn kill9(&mut self, i: usize) -> Result<ExitStatus> {
        let slot = self.slot_mut(i)?;
        let mut p = slot
            .process
            .take()
            .ok_or_else(|| anyhow!("node {i} is not running"))?;
        p.kill()
    }

    /// SIGTERM node `i` and wait for it (SIGKILL after [`STOP_GRACE`]); returns its exit
    /// status and whether it had to be killed.
    pub async fn stop(&mut self, i: usize) -> Result<(ExitStatus, bool)> {
        let slot = self.slot_mut(i)?;
        let mut p = slot
            .process
            .take()
            .ok_or_else(|| anyhow!("node {i} is not running"))?;
        p.stop(STOP_GRACE).await
    }

    /// Starts node `i` again on the same data directory and the same ports, and waits until
    /// it is ready.
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        let slot = self.slot_mut(i)?;
        if slot.process.is_some() {
            bail!("node {i} is still running; stop or kill it first");
        }
        if let Some(a) = &slot.addresses {
            slot.spec.grpc_addr = a.grpc;
            slot.spec.http_addr = a.http;
            slot.spec.raft_addr = a.raft;
        }
        slot.process = Some(NodeProcess::spawn(&slot.spec)?);
        self.wait_ready(i, Instant::now() + READY_DEADLINE).await
    }

    /// Like [`Cluster::restart`], but waits only until the node listens, not until it is
    /// ready (a node that is refused by its group never becomes ready).
    pub async fn restart_unready(&mut self, i: usize) -> Result<()> {
        let slot = self.slot_mut(i)?;
        if slot.process.is_some() {
            bail!("node {i} is still running; stop or kill it first");
        }
        if let Some(a) = &slot.addresses {
            slot.spec.grpc_addr = a.grpc;
            slot.spec.http_addr = a.http;
            slot.spec.raft_addr = a.raft;
        }
        let mut process = NodeProcess::spawn(&slot.spec)?;
        let addresses = process
            .wait_listening(Instant::now() + READY_DEADLINE)
            .await?;
        slot.addresses = Some(addresses);
        slot.process = Some(process);
        Ok(())
    }

    /// Deletes node `i`'s data directory (the node must not be running): its next start is
    /// a fresh identity.
    pub fn wipe(&mut self, i: usize) -> Result<()> {
        if self.is_running(i)? {
            bail!("node {i} is running; stop or kill it before wiping its data");
        }
        let dir = self.slot(i)?.spec.data_dir.clone();
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("wiping {}", dir.display()))
            }
            _ => Ok(()),
        }
    }

    /// The last `lines` lines of node `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> Result<String> {
        let text = std::fs::read_to_string(&self.slot(i)?.spec.log_file).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        Ok(all[all.len().saturating_sub(lines)..].join("\n"))
    }

    async fn wait_ready(&mut self, i: usize, deadline: Instant) -> Result<()> {
        let slot = self.slot_mut(i)?;
        let process = slot
            .process
            .as_mut()
            .ok_or_else(|| anyhow!("node {i} is not running"))?;
        let addresses = process.wait_ready(deadline).await?;
        slot.addresses = Some(addresses);
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0..self.nodes.len() {
                let tail = self.log_tail(i, 40).unwrap_or_default();
                eprintln!(
                    "---- node {} log ({}), last lines:\n{tail}",
                    i + 1,
                    self.nodes[i].spec.log_file.display()
                );
            }
        }
        for slot in &mut self.nodes {
            if let Some(mut p) = slot.process.take() {
                let _ = p.kill();
            }
        }
    }
}
