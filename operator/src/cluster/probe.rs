//! Each node's own view of itself: `Admin.Status` over gRPC.
//!
//! A pod whose readiness probe passes only says the node's listener is up. The reconcile
//! also asks every ready pod's node for its status, through the pod's stable name, and
//! checks the id it reports against the one its ordinal gives it: a pod serving another
//! node's identity (a volume moved by hand, a wrong start command) is caught here. A node
//! that does not answer is reported in the status, never an error of the reconcile: an
//! unreachable cluster is a condition, not a crash. Calls run concurrently, each bounded by
//! a timeout, so a reconcile waits at most one timeout for the whole cluster.
//!
//! The [`NodeProbe`] trait lets the scenario tests answer for the nodes; [`GrpcProbe`] is
//! the real one, tested against a node on loopback.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::StatusRequest;

/// What a node says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeReport {
    /// The id it runs as.
    pub node_id: u64,
    /// Its strata-node version.
    pub version: String,
    /// The shards it holds a replica of, each with whether this node leads it.
    pub replicas: Vec<ReplicaReport>,
    /// The incarnation of its data directory.
    pub incarnation: String,
    /// The data shard's members as this node last applied them.
    pub members: Vec<MemberReport>,
}

/// One member of the data shard, as a node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberReport {
    /// The member's id.
    pub node_id: u64,
    /// A voter (false: a learner).
    pub voter: bool,
    /// The incarnation it was added with; empty when unknown.
    pub incarnation: String,
}

/// One replica a node holds, as it reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaReport {
    /// The shard.
    pub shard_id: u64,
    /// Whether this node's replica leads the shard.
    pub leader: bool,
    /// The node the replica believes leads the shard (0: none known).
    pub leader_node_id: u64,
}

/// Asks one node, at `endpoint` (`host:port`), for its status.
pub trait NodeProbe: Send + Sync {
    /// The node's report, or why it could not be had.
    fn status(&self, endpoint: String) -> BoxFuture<'static, Result<NodeReport, String>>;
}

/// `Admin.Status` over a fresh gRPC connection, bounded by `timeout`.
#[derive(Debug, Clone)]
pub struct GrpcProbe {
    /// Connect and call timeout.
    pub timeout: Duration,
}

impl Default for GrpcProbe {
    fn default() -> Self {
        GrpcProbe {
            timeout: Duration::from_secs(2),
        }
    }
}

impl NodeProbe for GrpcProbe {
    fn status(&self, endpoint: String) -> BoxFuture<'static, Result<NodeReport, String>> {
        let timeout = self.timeout;
        Box::pin(async move {
            let call = async {
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
                    .map_err(|e| format!("bad endpoint {endpoint}: {e}"))?
                    .connect_timeout(timeout)
                    .timeout(timeout)
                    .connect()
                    .await
                    .map_err(|e| format!("cannot connect to {endpoint}: {e}"))?;
                let response = AdminClient::new(channel)
                    .status(StatusRequest {})
                    .await
                    .map_err(|s| {
                        format!(
                            "Admin.Status at {endpoint}: {:?}: {}",
                            s.code(),
                            s.message()
                        )
                    })?
                    .into_inner();
                let node_id = response.node_id;
                let replicas = response
                    .replicas
                    .iter()
                    .filter(|r| r.node_id == node_id)
                    .map(|r| ReplicaReport {
                        shard_id: r.shard_id,
                        leader: r.role == strata_proto::v1::ReplicaRole::Leader as i32,
                        leader_node_id: r.leader_node_id,
                    })
                    .collect();
                let members = response
                    .members
                    .iter()
                    .map(|m| MemberReport {
                        node_id: m.node_id,
                        voter: m.voter,
                        incarnation: m.incarnation.clone(),
                    })
                    .collect();
                Ok(NodeReport {
                    node_id,
                    version: response.version,
                    replicas,
                    incarnation: response.incarnation,
                    members,
                })
            };
            tokio::time::timeout(timeout, call)
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "Admin.Status at {endpoint}: no answer in {timeout:?}"
                    ))
                })
        })
    }
}

/// Asks every `(ordinal, endpoint)` at once.
pub async fn probe_all(
    probe: &dyn NodeProbe,
    targets: Vec<(i32, String)>,
) -> BTreeMap<i32, Result<NodeReport, String>> {
    let calls = targets.into_iter().map(|(ordinal, endpoint)| {
        let call = probe.status(endpoint);
        async move { (ordinal, call.await) }
    });
    futures::future::join_all(calls).await.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata::server::config::NodeConfig;
    use strata::server::Server;

    #[tokio::test]
    async fn asks_a_real_node_and_reports_one_that_is_down() {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig {
            node_id: 4,
            ..NodeConfig::on_free_ports(dir.path())
        };
        let server = Server::start(config).await.unwrap();
        let up = server.grpc_addr().to_string();
        // A port nothing listens on: bind one, then free it.
        let down = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let probe = GrpcProbe::default();
        let reports = probe_all(&probe, vec![(3, up), (5, down)]).await;
        let report = reports[&3].clone().unwrap();
        assert_eq!(report.node_id, 4);
        assert!(!report.version.is_empty());
        assert!(!report.incarnation.is_empty());
        assert_eq!(report.members.len(), 1);
        assert_eq!(
            (report.members[0].node_id, report.members[0].voter),
            (4, true)
        );
        // A lone node leads its one data shard.
        assert_eq!(
            report.replicas,
            vec![ReplicaReport {
                shard_id: 1,
                leader: true,
                leader_node_id: 4,
            }]
        );
        let error = reports[&5].clone().unwrap_err();
        assert!(error.contains("cannot connect"), "{error}");
        server.shutdown().await.unwrap();
    }
}
