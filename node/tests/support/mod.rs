//! Running the real `strata-node` binary from integration tests: start it on free ports
//! (with extra flags and environment, such as `FAILPOINTS`), wait until it is ready or has
//! exited, and connect to it.

#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

/// How long any wait in these tests may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A running `strata-node` process, killed when dropped.
pub struct Node {
    pub child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on `data_dir` with `args` and `env` set, and reads the addresses it
/// prints. Both ports are free ones picked by the node unless `args` sets `--grpc-addr`.
pub fn start_with(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Node {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata-node"));
    cmd.arg("--data-dir").arg(data_dir);
    if !args.contains(&"--grpc-addr") {
        cmd.args(["--grpc-addr", "127.0.0.1:0"]);
    }
    if !args.contains(&"--raft-addr") {
        cmd.args(["--raft-addr", "127.0.0.1:0"]);
    }
    cmd.args(["--http-addr", "127.0.0.1:0"])
        .args([
            "--memtable-mb",
            "4",
            "--block-cache-mb",
            "8",
            "--log-level",
            "warn",
        ])
        .args(args)
        .env_remove("STRATA_CONFIG")
        .env_remove("FAILPOINTS")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn strata-node");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the address line");
    // {"event":"listening","grpc":"127.0.0.1:P","http":"127.0.0.1:Q","raft":…,…}
    let v: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("the address line {line:?} is not JSON: {e}"));
    assert_eq!(v["event"], "listening", "{line}");
    let addr = |name: &str| -> SocketAddr {
        v[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .parse()
            .expect("an address")
    };
    let (grpc, http) = (addr("grpc"), addr("http"));
    Node { child, grpc, http }
}

/// The HTTP status code of `GET path`, if the port answers.
pub async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    out.split(' ').nth(1)?.parse().ok()
}

/// Polls `/readyz` until it answers 200, or fails after the deadline.
pub async fn wait_ready(node: &Node) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if http_status(node.http, "/readyz").await == Some(200) {
            return;
        }
        assert!(Instant::now() < deadline, "strata-node never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A channel to the node's gRPC port.
pub async fn channel(node: &Node) -> Channel {
    Channel::from_shared(format!("http://{}", node.grpc))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

/// Waits for the process to exit, with a deadline; returns its exit code (`None` if a
/// signal ended it).
pub fn wait_exit(node: &mut Node) -> Option<i32> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = node.child.try_wait().expect("try_wait") {
            return status.code();
        }
        assert!(Instant::now() < deadline, "strata-node did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}
