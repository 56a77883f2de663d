//! The operator's HTTP port: `GET /metrics` (Prometheus text), `/healthz` (the process
//! runs) and `/readyz` (it has reached the API server).
//!
//! As small as the node's: one request per connection, a bounded request head, a read
//! timeout, no framework.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::Metrics;

/// The largest request head read.
const MAX_HEAD: usize = 8 << 10;
/// How long a client may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The status, content type and body answering `GET path`.
pub fn route(path: &str, metrics: &Metrics) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    match path {
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        "/healthz" => (200, TEXT, "ok\n".to_owned()),
        "/readyz" if metrics.is_ready() => (200, TEXT, "ready\n".to_owned()),
        "/readyz" => (503, TEXT, "not ready\n".to_owned()),
        _ => (404, TEXT, "not found\n".to_owned()),
    }
}

/// Binds `addr`; the returned listener is served by [`serve`].
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves connections until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let metrics = Arc::clone(&metrics);
                tokio::spawn(async move { answer(stream, &metrics).await });
            }
            Err(e) => {
                tracing::warn!(error = %e, "http accept failed");
                // A persistent error (EMFILE) must not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, metrics: &Metrics) {
    let (status, content_type, body) =
        match tokio::time::timeout(READ_TIMEOUT, read_path(&mut stream)).await {
            Ok(Some(path)) => route(&path, metrics),
            Ok(None) => (400, "text/plain", "bad request\n".to_owned()),
            Err(_) => (408, "text/plain", "request timeout\n".to_owned()),
        };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        408 => "Request Timeout",
        503 => "Service Unavailable",
        _ => "Bad Request",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The path of a `GET` request, or `None` for anything else.
async fn read_path(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() + n > MAX_HEAD {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = std::str::from_utf8(&buf).ok()?.lines().next()?.to_owned();
    let mut parts = line.split(' ');
    match (parts.next(), parts.next()) {
        (Some("GET"), Some(target)) => Some(target.split('?').next()?.to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_health() {
        let metrics = Arc::new(Metrics::default());
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, Arc::clone(&metrics)));

        assert!(get(addr, "GET /healthz HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 200"));
        assert!(get(addr, "GET /readyz HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 503"));
        metrics.set_ready(true);
        assert!(get(addr, "GET /readyz HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 200"));
        let text = get(addr, "GET /metrics?x=1 HTTP/1.1\r\n\r\n").await;
        assert!(text.contains("strata_operator_leader 0"), "{text}");
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 400"));
        assert!(get(addr, "GET /nope HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 404"));
        server.abort();
    }
}
