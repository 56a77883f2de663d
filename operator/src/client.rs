//! The operator's API client: every request names the operator in its `User-Agent`.
//!
//! The API server records who owns each field in `managedFields`. A server-side apply names
//! its field manager in the request (`strata-operator`), but every other write takes its
//! manager from the `User-Agent`: the finalizer's JSON patch (made by kube-runtime, which
//! passes no field manager), the Lease's create and replace, the events. kube-rs sends no
//! `User-Agent` of its own, so a real API server files those writes under `unknown`, a name
//! any other tool without one shares. The header `strata-operator/<version>` makes the API
//! server derive `strata-operator` (the part before the `/`): one field manager for every
//! write, whatever the call.

use http::header::{HeaderValue, USER_AGENT};
use kube::{Client, Config};

use crate::cluster::names::FIELD_MANAGER;

/// The `User-Agent` every request carries: `strata-operator/<crate version>`.
pub fn user_agent() -> String {
    format!("{FIELD_MANAGER}/{}", env!("CARGO_PKG_VERSION"))
}

/// `config`, with the operator's `User-Agent` on every request (replacing any set before).
pub fn configure(mut config: Config) -> Config {
    config.headers.retain(|(name, _)| name != USER_AGENT);
    // The value is ASCII built from constants, never a client's input.
    if let Ok(value) = HeaderValue::from_str(&user_agent()) {
        config.headers.push((USER_AGENT, value));
    }
    config
}

/// A client for the cluster the environment points to (in-cluster or `KUBECONFIG`),
/// configured by [`configure`].
pub async fn infer() -> anyhow::Result<Client> {
    let config = Config::infer().await?;
    Ok(Client::try_from(configure(config))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn the_agent_derives_the_field_manager() {
        // The API server takes the manager from the User-Agent up to its first '/'.
        let agent = user_agent();
        assert_eq!(agent.split('/').next(), Some(FIELD_MANAGER));
        assert!(agent.len() > FIELD_MANAGER.len() + 1, "{agent}");
    }

    #[test]
    fn configure_sets_one_user_agent() {
        let mut config = Config::new("http://127.0.0.1:1".parse().unwrap());
        config
            .headers
            .push((USER_AGENT, HeaderValue::from_static("something-else/1")));
        let config = configure(configure(config));
        let agents: Vec<_> = config
            .headers
            .iter()
            .filter(|(name, _)| name == USER_AGENT)
            .map(|(_, value)| value.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(agents, [user_agent()]);
    }

    /// The header reaches the wire: a loopback listener reads the request the client sends.
    #[tokio::test]
    async fn requests_carry_the_user_agent() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "the connection closed before the request head ended");
                head.extend_from_slice(&buf[..n]);
            }
            let body = r#"{"major":"1","minor":"28","gitVersion":"v1.28.7","gitCommit":"","gitTreeState":"","buildDate":"","goVersion":"","compiler":"","platform":""}"#;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).await.unwrap();
            String::from_utf8(head).unwrap()
        });
        let client = Client::try_from(configure(Config::new(url.parse().unwrap()))).unwrap();
        let version = client.apiserver_version().await.unwrap();
        assert_eq!(version.minor, "28");
        let head = server.await.unwrap().to_ascii_lowercase();
        let line = head
            .lines()
            .find(|line| line.starts_with("user-agent:"))
            .unwrap_or_else(|| panic!("no user-agent in {head}"));
        assert_eq!(line.trim(), format!("user-agent: {}", user_agent()));
    }
}
