//! `strata playground` and the CLI as a user runs them: real processes on 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the playground");
    // The first line names the gRPC address.
    let mut lines = BufReader::new(node.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a first line").expect("readable");
    let endpoint = first
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
    assert!(data.join("db").exists(), "a --data-dir is kept");
}
