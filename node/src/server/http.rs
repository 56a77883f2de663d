//! The small HTTP/1.1 port: `GET /metrics`, `/healthz`, `/readyz` and `/` (a status page).
//!
//! Hand-written on a tokio `TcpListener` so that the node needs no HTTP framework: one
//! request per connection (the response says `Connection: close`), the request head is
//! bounded by [`MAX_REQUEST_BYTES`] (431 beyond it), and a slow client is dropped after
//! [`READ_TIMEOUT`]. Request bodies are ignored.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::State;

/// The largest request head accepted.
pub const MAX_REQUEST_BYTES: usize = 8 << 10;
/// How long a client may take to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    /// The response on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Unknown",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        out.extend_from_slice(self.body.as_bytes());
        out
    }
}

/// What the handler needs to answer.
pub trait Endpoints {
    /// The Prometheus text of `/metrics`.
    fn metrics(&self) -> String;
    /// Whether the gRPC listener is serving.
    fn ready(&self) -> bool;
    /// The status page.
    fn status_page(&self) -> String;
}

/// The path of a complete request head, or the response refusing it.
pub fn parse_request(head: &[u8]) -> Result<String, Response> {
    let text = std::str::from_utf8(head).map_err(|_| Response::text(400, "bad request\n"))?;
    let line = text.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let (Some(method), Some(target), Some(version)) = (method, target, version) else {
        return Err(Response::text(400, "bad request line\n"));
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return Err(Response::text(400, "bad request line\n"));
    }
    if method != "GET" {
        return Err(Response::text(405, "only GET is supported\n"));
    }
    let path = target.split('?').next().unwrap_or_default();
    Ok(path.to_owned())
}

/// The response to `GET path`.
pub fn route(path: &str, endpoints: &(dyn Endpoints + Sync)) -> Response {
    match path {
        "/metrics" => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: endpoints.metrics(),
        },
        "/healthz" => Response::text(200, "ok\n"),
        "/readyz" if endpoints.ready() => Response::text(200, "ready\n"),
        "/readyz" => Response::text(503, "not ready\n"),
        "/" => Response {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: endpoints.status_page(),
        },
        _ => Response::text(404, "not found\n"),
    }
}

/// Reads one request head from `stream` (bounded), answers it and closes.
pub async fn handle<S>(mut stream: S, endpoints: &(dyn Endpoints + Sync))
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let response = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Err(_) => Response::text(408, "request timeout\n"),
        Ok(Err(response)) => response,
        Ok(Ok(head)) => match parse_request(&head) {
            Ok(path) => route(&path, endpoints),
            Err(response) => response,
        },
    };
    let _ = stream.write_all(&response.to_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn read_head<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, Response> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| Response::text(400, "read error\n"))?;
        if n == 0 {
            return Err(Response::text(400, "incomplete request\n"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if end + 4 > MAX_REQUEST_BYTES {
                return Err(Response::text(431, "request too large\n"));
            }
            buf.truncate(end);
            return Ok(buf);
        }
        if buf.len() > MAX_REQUEST_BYTES {
            return Err(Response::text(431, "request too large\n"));
        }
    }
}

/// Accepts connections until `shutdown` changes, one task per connection.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted: std::io::Result<(TcpStream, _)> = tokio::select! {
            _ = shutdown.changed() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => {
                let state = Arc::clone(&state);
                tokio::spawn(async move { handle(stream, state.as_ref()).await });
            }
            Err(e) => {
                tracing::warn!(error = %e, "http accept failed");
                // Back off briefly so a persistent error (EMFILE) does not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(bool);

    impl Endpoints for Fake {
        fn metrics(&self) -> String {
            "strata_up 1\n".into()
        }
        fn ready(&self) -> bool {
            self.0
        }
        fn status_page(&self) -> String {
            "<html></html>".into()
        }
    }

    async fn exchange(request: &[u8], endpoints: &Fake) -> String {
        let (mut client, server) = tokio::io::duplex(64 << 10);
        client.write_all(request).await.unwrap();
        handle(server, endpoints).await;
        let mut out = String::new();
        client.read_to_string(&mut out).await.unwrap();
        out
    }

    #[test]
    fn parses_request_lines() {
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\nHost: x").unwrap(),
            "/metrics"
        );
        assert_eq!(
            parse_request(b"GET /readyz?x=1 HTTP/1.0").unwrap(),
            "/readyz"
        );
        assert_eq!(parse_request(b"POST / HTTP/1.1").unwrap_err().status, 405);
        assert_eq!(parse_request(b"GARBAGE").unwrap_err().status, 400);
        assert_eq!(parse_request(&[0xff, 0xfe]).unwrap_err().status, 400);
    }

    #[tokio::test]
    async fn answers_routes_and_closes() {
        let ready = Fake(true);
        let out = exchange(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", &ready).await;
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("Connection: close"));
        assert!(out.ends_with("strata_up 1\n"));
        let out = exchange(b"GET /healthz HTTP/1.1\r\n\r\n", &ready).await;
        assert!(out.starts_with("HTTP/1.1 200"));
        let out = exchange(b"GET /nope HTTP/1.1\r\n\r\n", &ready).await;
        assert!(out.starts_with("HTTP/1.1 404"));
        let out = exchange(b"GET /readyz HTTP/1.1\r\n\r\n", &Fake(false)).await;
        assert!(out.starts_with("HTTP/1.1 503"));
        let out = exchange(b"GET / HTTP/1.1\r\n\r\n", &ready).await;
        assert!(out.contains("text/html"));
    }

    #[tokio::test]
    async fn refuses_oversized_and_truncated_requests() {
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_REQUEST_BYTES + 10));
        big.extend_from_slice(b"\r\n\r\n");
        let out = exchange(&big, &Fake(true)).await;
        assert!(out.starts_with("HTTP/1.1 431"), "{out}");
        // The client closes its side before the head ends.
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b"GET / HT").await.unwrap();
        client.shutdown().await.unwrap();
        handle(server, &Fake(true)).await;
        let mut out = String::new();
        client.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    }
}
