//! The `strata-operator` process: health endpoints up, not ready while the API server does
//! not answer, and SIGTERM exits 0 promptly even then.
//!
//! The "API server" is a loopback socket that accepts connections and never answers, the
//! worst case for a shutdown: every call the operator has in flight hangs.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Accepts and holds connections without answering, until `stop`.
fn silent_server(stop: Arc<AtomicBool>) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let thread = std::thread::spawn(move || {
        let mut held = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => held.push(stream),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    (url, thread)
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).ok()?;
    Some(out)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        // Never leave the process behind, whatever the test's outcome.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sigterm_exits_zero_while_api_calls_hang() {
    let stop = Arc::new(AtomicBool::new(false));
    let (url, server) = silent_server(Arc::clone(&stop));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {url}\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n    namespace: ops\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_strata-operator"))
        .args([
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "text",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("WATCH_NAMESPACE")
        .env_remove("POD_NAMESPACE")
        .env_remove("POD_NAME")
        .env_remove("LEADER_ELECTION")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Reaped(child);

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(answer) = get(port, "/healthz") {
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the operator's HTTP port never came up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let ready = get(port, "/readyz").unwrap();
    assert!(
        ready.starts_with("HTTP/1.1 503"),
        "not ready without an API server: {ready}"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(code) = child.0.try_wait().unwrap() {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "SIGTERM did not stop the operator"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code.code(), Some(0));
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
}
