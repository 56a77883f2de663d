//! `strata playground`: a local cluster of `--nodes N` real `strata-node` processes on
//! 127.0.0.1, in the foreground until Ctrl-C or SIGTERM.
//!
//! ```text
//!   strata playground --nodes 3
//!     node i (1..=N): its own process (strata-node beside this executable), data dir
//!                     <data>/node-<i>, log <data>/node-<i>/node.log, ports base + 10·(i-1):
//!                     gRPC 7379, HTTP 7380, Raft 7381 for node 1; 7389/7390/7391 for node 2 …
//!                     (--grpc-addr 127.0.0.1:0: every port free, chosen by the OS)
//!     initial members: all N nodes (for N > 1)
//!   wait until every node's /readyz answers (deadline) ─► print addresses + commands
//!   Ctrl-C / SIGTERM ─► SIGTERM to every node, bounded wait, SIGKILL what remains
//! ```
//!
//! The printed commands work pasted into another terminal: they name this `strata`
//! binary by its absolute path and pass `--endpoints` with every node's gRPC address.
//!
//! The N nodes form one Raft group (a single node is a one-voter group); a node that dies
//! is reported and the others keep serving while a majority lives. No orphans: see
//! [`node_process`](super::node_process) (each node stops when this process's end of its
//! stdin pipe closes).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::node_process::{reserve_loopback_ports, NodeProcess, NodeSpec};
use super::Clients;
use crate::server::identity::BoundAddresses;
use crate::server::Member;

/// How long each node may take to become ready.
pub const READY_DEADLINE: Duration = Duration::from_secs(60);

/// How many times a playground on free ports and a temporary directory tries to start.
const START_ATTEMPTS: u32 = 3;
/// How long a node gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(15);
/// Port distance between consecutive nodes.
pub const PORT_STRIDE: u16 = 10;

/// Options of `strata playground`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlaygroundArgs {
    /// How many nodes (each its own strata-node process).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    pub nodes: u64,
    /// Keep the data here (node i in DIR/node-i; a restart finds it again); default: a
    /// temporary directory, removed on exit.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Node 1's gRPC address; node i uses the port + 10·(i-1). Port 0: free ports for all.
    #[arg(long, default_value = super::DEFAULT_ENDPOINT)]
    pub grpc_addr: SocketAddr,
    /// Node 1's HTTP address (metrics, health); node i uses the port + 10·(i-1).
    #[arg(long, default_value = "127.0.0.1:7380")]
    pub http_addr: SocketAddr,
    /// Node 1's Raft address; node i uses the port + 10·(i-1).
    #[arg(long, default_value = "127.0.0.1:7381")]
    pub raft_addr: SocketAddr,
    /// The strata-node binary (default: the one beside this executable).
    #[arg(long, hide = true)]
    pub node_binary: Option<PathBuf>,
}

/// The address of node `index` (0-based): `base` shifted by the stride, or port 0 kept.
fn shifted(base: SocketAddr, index: u64) -> Result<SocketAddr> {
    if base.port() == 0 {
        return Ok(base);
    }
    let offset = u16::try_from(index)
        .ok()
        .and_then(|i| i.checked_mul(PORT_STRIDE))
        .and_then(|o| base.port().checked_add(o))
        .with_context(|| format!("no port {index} strides above {base}"))?;
    Ok(SocketAddr::new(base.ip(), offset))
}

/// The specs of the nodes: ids 1..=N, their ports, and (N > 1) every node as an initial
/// member.
pub fn plan(args: &PlaygroundArgs, binary: &Path, data: &Path) -> Result<Vec<NodeSpec>> {
    let n = args.nodes;
    let mut raft = Vec::new();
    if args.raft_addr.port() == 0 {
        // Members must know each other's Raft ports before they start.
        let ports = reserve_loopback_ports(usize::try_from(n)?)?;
        raft.extend(
            ports
                .into_iter()
                .map(|p| SocketAddr::new(args.raft_addr.ip(), p)),
        );
    } else {
        for i in 0..n {
            raft.push(shifted(args.raft_addr, i)?);
        }
    }
    let members: Vec<Member> = if n > 1 {
        raft.iter()
            .zip(1..)
            .map(|(addr, id)| {
                Ok(Member {
                    id,
                    raft_addr: addr.to_string().parse().map_err(anyhow::Error::msg)?,
                })
            })
            .collect::<Result<_>>()?
    } else {
        Vec::new()
    };
    (0..n)
        .map(|i| {
            let id = i + 1;
            let dir = data.join(format!("node-{id}"));
            Ok(NodeSpec {
                binary: binary.to_path_buf(),
                node_id: id,
                log_file: dir.join("node.log"),
                data_dir: dir,
                grpc_addr: shifted(args.grpc_addr, i)?,
                http_addr: shifted(args.http_addr, i)?,
                raft_addr: raft[usize::try_from(i)?],
                initial_members: members.clone(),
                extra_args: Vec::new(),
                env: Vec::new(),
            })
        })
        .collect()
}

/// A word quoted for a POSIX shell when it needs it.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:,=+@%".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// What the playground prints once every node is ready.
pub fn banner(
    nodes: &[BoundAddresses],
    strata: &Path,
    data: &Path,
    temporary: bool,
    replicated: bool,
) -> String {
    let mut out = String::new();
    let endpoints: Vec<String> = nodes.iter().map(|a| a.grpc.to_string()).collect();
    let cmd = format!(
        "{} --endpoints {}",
        shell_quote(&strata.display().to_string()),
        endpoints.join(",")
    );
    let count = if nodes.len() == 1 {
        "one node".to_owned()
    } else {
        format!("{} nodes", nodes.len())
    };
    out.push_str(&format!("Strata playground: {count} on 127.0.0.1\n"));
    for a in nodes {
        out.push_str(&format!(
            "  node {}: gRPC on {}, HTTP on http://{}, Raft on {} (pid {})\n",
            a.node_id, a.grpc, a.http, a.raft, a.pid
        ));
    }
    if nodes.len() > 1 && !replicated {
        out.push_str(
            "note: the nodes do not replicate yet: each one is a separate single-node store, \
             and a write through one is not seen by the others (the CLI uses the first \
             reachable endpoint)\n",
        );
    }
    out.push_str(&format!(
        "data: {}{}\n\n",
        data.display(),
        if temporary { " (removed on exit)" } else { "" }
    ));
    out.push_str("Try, in another terminal:\n");
    out.push_str(&format!("  {cmd} put greeting hello\n"));
    out.push_str(&format!("  {cmd} get greeting\n"));
    out.push_str(&format!(
        "  printf 'put a 1\\nput b 2\\ncommit\\n' | {cmd} txn && {cmd} scan --prefix ''\n"
    ));
    out.push_str(&format!("  {cmd} status\n\n"));
    out.push_str(if nodes.len() == 1 {
        "Ctrl-C stops the node.\n"
    } else {
        "Ctrl-C stops the nodes.\n"
    });
    out
}

/// Runs the playground until `stop` resolves (Ctrl-C or SIGTERM in the binary), writing
/// the banner to `out`.
pub async fn run(
    args: &PlaygroundArgs,
    out: &mut dyn Write,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let strata = std::env::current_exe().context("locating the strata executable")?;
    let binary = match &args.node_binary {
        Some(b) => b.clone(),
        None => super::node_process::sibling_node_binary()?,
    };
    let temporary = args.data_dir.is_none();
    let data = match &args.data_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("strata-playground-{}", std::process::id())),
    };
    let result = run_in(args, out, stop, &strata, &binary, &data, temporary).await;
    if temporary {
        let _ = std::fs::remove_dir_all(&data);
    }
    result
}

async fn run_in(
    args: &PlaygroundArgs,
    out: &mut dyn Write,
    stop: impl std::future::Future<Output = ()>,
    strata: &Path,
    binary: &Path,
    data: &Path,
    temporary: bool,
) -> Result<()> {
    // Free Raft ports are found by binding port 0 and releasing it, since every member must
    // know the others' ports before any starts; another process may bind one in between,
    // and that node then exits. With a fresh temporary directory nothing is lost by trying
    // again on new ports; with the caller's directory the nodes' data names the old ports.
    let attempts = if temporary && args.raft_addr.port() == 0 {
        START_ATTEMPTS
    } else {
        1
    };
    let mut attempt = 1;
    let (specs, mut nodes, addresses) = loop {
        match start_nodes(args, binary, data).await {
            Ok(started) => break started,
            Err(e) if attempt < attempts => {
                eprintln!("starting the playground failed, trying again on new ports: {e:#}");
                match std::fs::remove_dir_all(data) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(anyhow::Error::new(e)
                            .context(format!("clearing {} to start again", data.display())));
                    }
                    _ => {}
                }
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    };
    let replicated =
        match Clients::connect_one(&addresses[0].grpc.to_string(), Duration::from_secs(5)).await {
            Ok(mut c) => c
                .admin
                .status(strata_proto::v1::StatusRequest {})
                .await
                .map(|s| s.into_inner().replicated)
                .unwrap_or(false),
            Err(_) => false,
        };
    write!(
        out,
        "{}",
        banner(&addresses, strata, data, temporary, replicated)
    )?;
    out.flush()?;

    // Until asked to stop, or every node is gone. A node that dies (killed to try a
    // failure, say) is reported; the others go on serving while a majority lives.
    tokio::pin!(stop);
    let mut dead: Vec<u64> = Vec::new();
    loop {
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                for (id, status) in exited(&mut nodes) {
                    if dead.contains(&id) {
                        continue;
                    }
                    dead.push(id);
                    writeln!(
                        out,
                        "node {id} exited ({status}); the others keep serving while a majority \
                         lives. Its log: {}",
                        specs[usize::try_from(id - 1)?].log_file.display()
                    )?;
                    out.flush()?;
                }
                if dead.len() == nodes.len() {
                    bail!("every node exited; their logs are in {}", data.display());
                }
            }
        }
    }
    writeln!(out, "stopping...")?;
    out.flush()?;
    stop_all(&mut nodes).await;
    Ok(())
}

/// Plans and starts every node, and waits until each is ready; on failure every started
/// node is stopped.
async fn start_nodes(
    args: &PlaygroundArgs,
    binary: &Path,
    data: &Path,
) -> Result<(Vec<NodeSpec>, Vec<NodeProcess>, Vec<BoundAddresses>)> {
    let specs = plan(args, binary, data)?;
    let mut nodes = Vec::with_capacity(specs.len());
    // All start at once: initial members wait for each other.
    for spec in &specs {
        match NodeProcess::spawn(spec) {
            Ok(n) => nodes.push(n),
            Err(e) => {
                stop_all(&mut nodes).await;
                return Err(e);
            }
        }
    }
    let deadline = Instant::now() + READY_DEADLINE;
    let mut addresses = Vec::new();
    for node in &mut nodes {
        match node.wait_ready(deadline).await {
            Ok(a) => addresses.push(a),
            Err(e) => {
                stop_all(&mut nodes).await;
                return Err(e.context("starting the playground"));
            }
        }
    }
    Ok((specs, nodes, addresses))
}

fn exited(nodes: &mut [NodeProcess]) -> Vec<(u64, std::process::ExitStatus)> {
    nodes
        .iter_mut()
        .filter_map(|n| {
            let id = n.spec().node_id;
            n.try_wait().ok().flatten().map(|s| (id, s))
        })
        .collect()
}

/// SIGTERM to every node at once, then each gets the rest of one grace period.
async fn stop_all(nodes: &mut [NodeProcess]) {
    for n in nodes.iter_mut() {
        if let Err(e) = n.terminate() {
            tracing::warn!(error = %e, "stopping a node");
        }
    }
    for n in nodes.iter_mut() {
        match n.stop(STOP_GRACE).await {
            Ok((_, true)) => {
                tracing::warn!(node_id = n.spec().node_id, "killed after the grace period")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "stopping a node"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(nodes: u64) -> PlaygroundArgs {
        PlaygroundArgs {
            nodes,
            data_dir: None,
            grpc_addr: "127.0.0.1:7379".parse().unwrap(),
            http_addr: "127.0.0.1:7380".parse().unwrap(),
            raft_addr: "127.0.0.1:7381".parse().unwrap(),
            node_binary: None,
        }
    }

    #[test]
    fn nodes_get_strided_ports_and_every_node_is_an_initial_member() {
        let specs = plan(&args(3), Path::new("/bin/strata-node"), Path::new("/d")).unwrap();
        assert_eq!(specs.len(), 3);
        assert_eq!(specs[2].node_id, 3);
        assert_eq!(specs[2].grpc_addr.port(), 7399);
        assert_eq!(specs[2].http_addr.port(), 7400);
        assert_eq!(specs[2].raft_addr.port(), 7401);
        assert_eq!(specs[1].data_dir, Path::new("/d/node-2"));
        assert_eq!(specs[1].log_file, Path::new("/d/node-2/node.log"));
        let members: Vec<String> = specs[0]
            .initial_members
            .iter()
            .cloned()
            .map(String::from)
            .collect();
        assert_eq!(
            members,
            ["1=127.0.0.1:7381", "2=127.0.0.1:7391", "3=127.0.0.1:7401"]
        );
        // One node: no members, a single-node cluster.
        let one = plan(&args(1), Path::new("/n"), Path::new("/d")).unwrap();
        assert!(one[0].initial_members.is_empty());
        assert_eq!(one[0].grpc_addr.port(), 7379);
    }

    #[test]
    fn port_zero_gives_free_ports_and_distinct_raft_ports() {
        let a = PlaygroundArgs {
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            http_addr: "127.0.0.1:0".parse().unwrap(),
            raft_addr: "127.0.0.1:0".parse().unwrap(),
            ..args(3)
        };
        let specs = plan(&a, Path::new("/n"), Path::new("/d")).unwrap();
        assert!(specs.iter().all(|s| s.grpc_addr.port() == 0));
        let mut raft: Vec<u16> = specs.iter().map(|s| s.raft_addr.port()).collect();
        assert!(raft.iter().all(|&p| p != 0));
        raft.dedup();
        assert_eq!(raft.len(), 3);
        assert!(shifted("127.0.0.1:65530".parse().unwrap(), 1).is_err());
    }

    #[test]
    fn the_banner_names_the_binary_and_every_endpoint() {
        let node = |id: u64, port: u16| BoundAddresses {
            node_id: id,
            pid: 100 + id as u32,
            grpc: SocketAddr::from(([127, 0, 0, 1], port)),
            http: SocketAddr::from(([127, 0, 0, 1], port + 1)),
            raft: SocketAddr::from(([127, 0, 0, 1], port + 2)),
            advertise_grpc: String::new(),
            advertise_raft: String::new(),
        };
        let text = banner(
            &[node(1, 7379), node(2, 7389)],
            Path::new("/opt/my tools/strata"),
            Path::new("/tmp/p"),
            true,
            false,
        );
        assert!(text.contains("2 nodes"), "{text}");
        assert!(text.contains("do not replicate yet"), "{text}");
        assert!(
            text.contains("  '/opt/my tools/strata' --endpoints 127.0.0.1:7379,127.0.0.1:7389 put greeting hello\n"),
            "{text}"
        );
        assert!(text.contains("(removed on exit)"));
        let replicated = banner(
            &[node(1, 7379), node(2, 7389)],
            Path::new("/s"),
            Path::new("/p"),
            false,
            true,
        );
        assert!(!replicated.contains("replicate"), "{replicated}");
        let one = banner(
            &[node(1, 7379)],
            Path::new("/s"),
            Path::new("/p"),
            false,
            false,
        );
        assert!(
            one.contains("one node") && !one.contains("replicate"),
            "{one}"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("/a/b-c"), "/a/b-c");
    }
}
