//! `strata playground` and the CLI as a user runs them: real processes on 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

fn cli(endpoint: &str, args: &[&str], stdin: Option<&str>) -> (i32, String) {
    let mut cmd = Command::new(STRATA);
    cmd.arg("--endpoint")
        .arg(endpoint)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().expect("run strata");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait for strata");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn playground_serves_the_cli_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut node = Command::new(STRATA)
        .args([
            "playground",
            "--nodes",
            "1",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--raft-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the playground");
    let _guard = KillOnDrop(node.id());
    // The second line names node 1's gRPC address.
    let mut lines = BufReader::new(node.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a first line").expect("readable");
    assert!(first.contains("one node"), "{first}");
    let second = lines.next().expect("a second line").expect("readable");
    let endpoint = second
        .split("gRPC on ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .expect("the playground prints its gRPC address")
        .to_string();
    // Drain the rest of the banner in the background so the pipe never fills.
    std::thread::spawn(move || for _ in lines {});

    let deadline = Instant::now() + Duration::from_secs(20);
    while cli(&endpoint, &["status"], None).0 != 0 {
        assert!(Instant::now() < deadline, "playground did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(cli(&endpoint, &["put", "greeting", "hello"], None).0, 0);
    assert_eq!(
        cli(&endpoint, &["get", "greeting"], None),
        (0, "hello\n".to_string())
    );
    assert_eq!(
        cli(&endpoint, &["get", "missing"], None).0,
        3,
        "not found has its own exit code"
    );
    assert_eq!(
        cli(&endpoint, &["txn"], Some("put a 1\nput b 2\ncommit\n")).0,
        0
    );
    assert_eq!(
        cli(&endpoint, &["txn"], Some("put c 3\n")).0,
        1,
        "an unfinished transaction fails"
    );
    let (code, out) = cli(
        &endpoint,
        &["--encoding", "hex", "scan", "--prefix", ""],
        None,
    );
    assert_eq!(code, 0);
    assert_eq!(out, "61\t31\n62\t32\n6772656574696e67\t68656c6c6f\n");
    let (code, out) = cli(&endpoint, &["-o", "json", "get", "a"], None);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json output");
    assert_eq!(v["value"], "1");
    assert_eq!(
        cli(&endpoint, &["put", "", "x"], None).0,
        1,
        "an empty key is refused"
    );

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(node.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = node.try_wait().expect("try_wait") {
            assert!(status.success(), "playground exits 0 on SIGTERM");
            break;
        }
        assert!(Instant::now() < deadline, "playground did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(data.join("node-1/db").exists(), "a --data-dir is kept");
}

/// Whether process `pid` is still running (a zombie is not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills a playground (by pid) when a test ends early: its nodes then stop by themselves
/// (their stdin pipe closes), so a failing test leaves no processes behind.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Only while that pid is still a playground: a reaped one's pid may be reused.
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.0)).unwrap_or_default();
        let ours = String::from_utf8_lossy(&cmdline).contains("playground");
        if ours && alive(self.0) {
            let _ = Command::new("kill")
                .args(["-9", &self.0.to_string()])
                .status();
        }
    }
}

/// A playground of `nodes` on free ports; returns it, its banner, each node's (pid, gRPC).
fn start_playground(nodes: &str) -> Started {
    start_playground_with(nodes, &[]).0
}

/// A started playground, its banner and each node's (pid, gRPC address).
type Started = (Child, Vec<String>, Vec<(u32, String)>);

/// [`start_playground`] with more arguments; also returns the reader of its stderr, which
/// yields the whole text once the playground exits.
fn start_playground_with(
    nodes: &str,
    extra: &[&std::ffi::OsStr],
) -> (Started, std::thread::JoinHandle<String>) {
    let mut child = Command::new(STRATA)
        .args(["playground", "--nodes", nodes])
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--raft-addr", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the playground");
    let mut stderr = child.stderr.take().expect("stderr");
    // Read to the end so that the pipe never fills.
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut banner = Vec::new();
    let mut complete = false;
    for line in lines.by_ref() {
        let line = line.expect("readable");
        complete = line.starts_with("Ctrl-C");
        banner.push(line);
        if complete {
            break;
        }
    }
    if !complete {
        // The playground exited before its banner ended: its stderr says why.
        let why = stderr.join().unwrap_or_default();
        panic!("the playground stopped before its banner ended: {banner:?}\n{why}");
    }
    std::thread::spawn(move || for _ in lines {});
    let nodes = banner
        .iter()
        .filter(|l| l.starts_with("  node "))
        .map(|l| {
            let grpc = l
                .split("gRPC on ")
                .nth(1)
                .and_then(|r| r.split(',').next())
                .expect("a gRPC address")
                .to_string();
            let pid = l
                .split("(pid ")
                .nth(1)
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|p| p.parse().ok())
                .expect("a pid");
            (pid, grpc)
        })
        .collect();
    ((child, banner, nodes), stderr)
}

#[test]
fn a_three_node_playground_prints_working_commands_survives_a_kill_and_stops_every_node() {
    let (mut playground, banner, nodes) = start_playground("3");
    let _guard = KillOnDrop(playground.id());
    let text = banner.join("\n");
    assert_eq!(nodes.len(), 3, "{text}");
    assert!(text.contains("3 nodes"), "{text}");
    assert!(!text.contains("do not replicate yet"), "{text}");
    // The printed commands work as printed, run by a shell.
    let put = banner
        .iter()
        .find(|l| l.ends_with("put greeting hello"))
        .expect("a put command");
    let absolute = std::fs::canonicalize(STRATA).expect("the binary");
    assert!(
        put.trim_start()
            .starts_with(&absolute.display().to_string()),
        "names the binary by its absolute path: {put}"
    );
    let endpoints: Vec<&str> = nodes.iter().map(|(_, g)| g.as_str()).collect();
    let endpoints = endpoints.join(",");
    assert!(put.contains(&format!("--endpoints {endpoints}")), "{put}");
    for wanted in ["put greeting hello", "get greeting"] {
        let line = banner
            .iter()
            .find(|l| l.ends_with(wanted))
            .expect("the command");
        let out = Command::new("sh")
            .arg("-c")
            .arg(line.trim())
            .env_remove("STRATA_ENDPOINT")
            .env_remove("STRATA_ENDPOINTS")
            .output()
            .expect("sh");
        assert!(out.status.success(), "{line}: {out:?}");
        if wanted == "get greeting" {
            assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
        }
    }
    // Each node is its own process: kill -9 the first; the other two are a majority and
    // keep serving (after an election if the first led), and the playground stays up.
    let killed = Command::new("kill")
        .args(["-9", &nodes[0].0.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    wait_until("node 1 is gone", || !alive(nodes[0].0));
    let strata = |args: &[&str]| {
        Command::new(STRATA)
            .args(["--endpoints", &endpoints])
            .args(args)
            .output()
            .expect("strata")
    };
    wait_until("a write is acknowledged by the remaining majority", || {
        strata(&["put", "after", "kill"]).status.success()
    });
    let out = strata(&["get", "greeting"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n", "{out:?}");
    let out = strata(&["-o", "json", "status"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_ne!(v["node_id"], 1, "answered by a live node");
    assert_eq!(v["replicated"], true);
    assert_eq!(v["members"].as_array().map(Vec::len), Some(3));
    assert!(
        playground.try_wait().expect("try_wait").is_none(),
        "the playground outlives one node"
    );
    stop_playground(&mut playground, "-TERM");
    for (pid, _) in &nodes[1..] {
        wait_until("the other nodes are stopped", || !alive(*pid));
    }
}

/// Sends `signal` (`-TERM`, `-INT`) to the playground and waits until it has exited.
fn stop_playground(playground: &mut Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &playground.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    wait_until("the playground exits", || {
        playground.try_wait().expect("try_wait").is_some()
    });
}

#[test]
fn sigterm_stops_the_nodes_and_a_killed_playground_leaves_no_orphans() {
    let (mut playground, _, nodes) = start_playground("2");
    let _guard = KillOnDrop(playground.id());
    stop_playground(&mut playground, "-TERM");
    assert!(
        playground.wait().expect("wait").success(),
        "exits 0 on SIGTERM"
    );
    for (pid, _) in &nodes {
        assert!(!alive(*pid), "node {pid} outlived a stopped playground");
    }

    // Ctrl-C (SIGINT) likewise; the nodes, in their own process group, are stopped by it.
    let (mut playground, _, nodes) = start_playground("2");
    let _guard = KillOnDrop(playground.id());
    stop_playground(&mut playground, "-INT");
    assert!(
        playground.wait().expect("wait").success(),
        "exits 0 on SIGINT"
    );
    for (pid, _) in &nodes {
        assert!(!alive(*pid), "node {pid} outlived a stopped playground");
    }

    // kill -9 the playground itself: its nodes see their stdin close and stop.
    let (mut playground, _, nodes) = start_playground("2");
    let _guard = KillOnDrop(playground.id());
    let temporary = std::env::temp_dir().join(format!("strata-playground-{}", playground.id()));
    playground.kill().expect("kill -9");
    let _ = playground.wait();
    for (pid, _) in &nodes {
        wait_until("an orphaned node stops", || !alive(*pid));
    }
    // Nobody was left to remove the temporary data.
    let _ = std::fs::remove_dir_all(temporary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_whose_connection_is_lost_mid_transaction_fails_and_resends_nothing() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut node = support::start_with(dir.path(), &[], &[]);
    support::wait_ready(&node).await;
    let endpoint = node.grpc.to_string();
    let mut shell = Command::new(STRATA)
        .args(["--endpoint", &endpoint, "txn"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strata txn");
    let mut stdin = shell.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(shell.stdout.take().expect("stdout"));
    stdin.write_all(b"put a 1\n").unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "OK\n");
    node.child.kill().expect("kill -9");
    let _ = node.child.wait();
    stdin.write_all(b"put b 2\ncommit\n").unwrap();
    drop(stdin);
    let out = shell.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is lost: nothing it wrote was committed"),
        "{stderr}"
    );
    assert!(stderr.contains(&endpoint), "{stderr}");
}

/// Free Raft ports are found by binding port 0 and releasing it (every member must know the
/// others' ports before it starts), so another process may bind one first and that node
/// exits. A node binary that exits on its first run forces the same failure: a playground
/// on free ports and a temporary directory starts again on new ports, and serves.
#[test]
fn a_node_that_exits_at_start_makes_the_playground_try_again_on_new_ports() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("failed-once");
    let script = dir.path().join("strata-node-fails-once");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nmkdir '{}' 2>/dev/null && exit 1\nexec '{}' \"$@\"\n",
            marker.display(),
            env!("CARGO_BIN_EXE_strata-node")
        ),
    )
    .expect("write the script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let ((mut playground, banner, nodes), errors) =
        start_playground_with("3", &["--node-binary".as_ref(), script.as_os_str()]);
    let _guard = KillOnDrop(playground.id());
    let text = banner.join("\n");
    assert!(marker.exists(), "the first node run failed: {text}");
    assert_eq!(nodes.len(), 3, "{text}");
    let endpoint = &nodes[0].1;
    let (code, out) = cli(endpoint, &["put", "again", "served"], None);
    assert_eq!(code, 0, "{out}");
    stop_playground(&mut playground, "-INT");
    assert!(playground.wait().expect("wait").success(), "exits 0");
    let errors = errors.join().expect("stderr reader");
    assert!(
        errors.contains("trying again on new ports"),
        "says why it started again: {errors}"
    );
}
