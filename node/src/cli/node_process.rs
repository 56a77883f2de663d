//! A `strata-node` child process: start it, learn the addresses it bound, wait until it is
//! ready, stop it (SIGTERM, a bounded wait, then SIGKILL) or kill it.
//!
//! ```text
//!   spawn ─► strata-node --data-dir D --node-id N … --stop-when-stdin-closes
//!            stdin: a pipe this process holds    stderr/stdout: appended to the log file
//!   wait_ready: poll D/addresses.json (the node writes it once bound) ─► poll GET /readyz
//!               (until a deadline; a child that exits meanwhile fails it, with its log's tail)
//!   stop:       SIGTERM ─► wait up to `grace` ─► SIGKILL
//! ```
//!
//! Each child runs in its own process group, so a terminal's Ctrl-C (SIGINT to the
//! foreground group) reaches only the parent, which stops its children itself.
//!
//! The child never outlives this process: it holds the read end of its stdin pipe, and the
//! kernel closes the write end when this process exits, by any means, `kill -9` included;
//! the node takes end-of-file as SIGTERM (`--stop-when-stdin-closes`). Dropping a
//! [`NodeProcess`] kills the child and reaps it.
//!
//! Used by `strata playground` and by the multi-process test harness (`strata-tests`), so
//! both run nodes the same way.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::server::identity::BoundAddresses;
use crate::server::Member;

/// How to start one node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The `strata-node` binary.
    pub binary: PathBuf,
    /// Node id.
    pub node_id: u64,
    /// Data directory (created by the node if missing).
    pub data_dir: PathBuf,
    /// gRPC listen address (port 0: a free one).
    pub grpc_addr: SocketAddr,
    /// HTTP listen address.
    pub http_addr: SocketAddr,
    /// Raft listen address.
    pub raft_addr: SocketAddr,
    /// Initial members (empty: a single node).
    pub initial_members: Vec<Member>,
    /// Where the node's stdout and stderr go (appended).
    pub log_file: PathBuf,
    /// Further flags.
    pub extra_args: Vec<String>,
    /// Environment variables to set.
    pub env: Vec<(String, String)>,
}

impl NodeSpec {
    /// The command line this spec runs.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--node-id", &self.node_id.to_string()])
            .args(["--grpc-addr", &self.grpc_addr.to_string()])
            .args(["--http-addr", &self.http_addr.to_string()])
            .args(["--raft-addr", &self.raft_addr.to_string()])
            .arg("--stop-when-stdin-closes");
        if !self.initial_members.is_empty() {
            let members: Vec<String> = self
                .initial_members
                .iter()
                .cloned()
                .map(String::from)
                .collect();
            cmd.args(["--initial-members", &members.join(",")]);
        }
        cmd.args(&self.extra_args);
        // The parent's own node settings must not leak into the child.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("STRATA_") {
                cmd.env_remove(k);
            }
        }
        cmd.env_remove("FAILPOINTS");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }
}

/// A running (or exited) `strata-node` child.
#[derive(Debug)]
pub struct NodeProcess {
    spec: NodeSpec,
    child: Child,
    /// Held open for the child's life; dropping it tells the child to stop.
    stdin: Option<ChildStdin>,
    /// Where the log file ended when this run started (its tail is this run's).
    log_start: u64,
    addresses: Option<BoundAddresses>,
}

impl NodeProcess {
    /// Starts the node of `spec` (without waiting for it).
    pub fn spawn(spec: &NodeSpec) -> Result<NodeProcess> {
        std::fs::create_dir_all(&spec.data_dir)
            .with_context(|| format!("creating {}", spec.data_dir.display()))?;
        // The file this run's addresses will be in; a previous run's is no answer.
        BoundAddresses::remove(&spec.data_dir)?;
        if let Some(dir) = spec.log_file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_file)
            .with_context(|| format!("opening the log file {}", spec.log_file.display()))?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let mut command = spec.command();
        // Its own process group: a Ctrl-C at the terminal reaches the parent alone, which
        // then stops its nodes in order (rather than each racing to exit on its own).
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", spec.binary.display()))?;
        let stdin = child.stdin.take();
        Ok(NodeProcess {
            spec: spec.clone(),
            child,
            stdin,
            log_start,
            addresses: None,
        })
    }

    /// The spec it was started from.
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The addresses the node bound, once [`NodeProcess::wait_ready`] has seen them.
    pub fn addresses(&self) -> Option<&BoundAddresses> {
        self.addresses.as_ref()
    }

    /// Waits until the node has written its addresses (it listens; it may not serve yet),
    /// or fails at `deadline` or as soon as the child exits.
    pub async fn wait_listening(&mut self, deadline: Instant) -> Result<BoundAddresses> {
        let addresses = loop {
            self.fail_if_exited()?;
            if let Some(a) = BoundAddresses::read(&self.spec.data_dir)? {
                if a.pid == self.pid() {
                    break a;
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "node {} wrote no address file in time{}",
                    self.spec.node_id,
                    self.log_excerpt()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        self.addresses = Some(addresses.clone());
        Ok(addresses)
    }

    /// Waits until the node has written its addresses and `/readyz` answers 200, or fails
    /// at `deadline` or as soon as the child exits.
    pub async fn wait_ready(&mut self, deadline: Instant) -> Result<BoundAddresses> {
        let addresses = self.wait_listening(deadline).await?;
        loop {
            self.fail_if_exited()?;
            if http_status(addresses.http, "/readyz").await == Some(200) {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "node {} did not become ready in time{}",
                    self.spec.node_id,
                    self.log_excerpt()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.addresses = Some(addresses.clone());
        Ok(addresses)
    }

    fn fail_if_exited(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            return Err(anyhow!(
                "node {} exited ({status}) before it was ready{}",
                self.spec.node_id,
                self.log_excerpt()
            ));
        }
        Ok(())
    }

    /// Whether the child has exited (and how), without waiting.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Sends SIGTERM.
    pub fn terminate(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = i32::try_from(self.pid()).context("a process id out of range")?;
        match nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        ) {
            // Gone between the check and the signal.
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(anyhow!(
                "sending SIGTERM to node {}: {e}",
                self.spec.node_id
            )),
        }
    }

    /// Stops the node: SIGTERM, then up to `grace` for it to exit, then SIGKILL. Returns
    /// its exit status, and whether it had to be killed.
    pub async fn stop(&mut self, grace: Duration) -> Result<(ExitStatus, bool)> {
        self.terminate()?;
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.stdin = None;
                return Ok((status, false));
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::warn!(
            node_id = self.spec.node_id,
            "did not stop in time; killing it"
        );
        Ok((self.kill()?, true))
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        self.child.kill()?;
        let status = self.child.wait()?;
        self.stdin = None;
        Ok(status)
    }

    /// The last lines this run wrote to its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.spec.log_file) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            // At most the last 64 KiB of this run.
            let from = self.log_start.max(len.saturating_sub(64 << 10));
            if f.seek(SeekFrom::Start(from)).is_ok() {
                let _ = f.read_to_string(&mut text);
            }
        }
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn log_excerpt(&self) -> String {
        let tail = self.log_tail(20);
        if tail.is_empty() {
            format!(" (log {} is empty)", self.spec.log_file.display())
        } else {
            format!(
                "; the end of its log {}:\n{tail}",
                self.spec.log_file.display()
            )
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// The HTTP status code of `GET path`, if the port answers.
pub async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        let text = String::from_utf8_lossy(&out);
        text.split(' ').nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), io)
        .await
        .ok()
        .flatten()
}

/// `strata-node` beside the running executable (where cargo and an installation put both).
pub fn sibling_node_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running executable")?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let node = dir.join("strata-node");
    if !node.is_file() {
        bail!(
            "{} not found: strata-node must be installed beside {} (cargo build --bin strata-node puts it there)",
            node.display(),
            exe.display()
        );
    }
    Ok(node)
}

/// Free ports on 127.0.0.1, taken by binding port 0 and released at once. Another process
/// could take one before the node binds it; used only for ports that must be known before a
/// node starts (the initial members' Raft ports), and a clash fails that node's start
/// loudly.
pub fn reserve_loopback_ports(n: usize) -> Result<Vec<u16>> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()
        .context("finding free ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}
