//! The cluster's calls the operator makes: `Admin.Decommission` and
//! `Admin.DecommissionStatus`, over gRPC, and `Admin.Backup`.
//!
//! A membership call may go to any node: one that does not lead the data shard passes it to
//! the leader. The reconcile sends each call to the reachable pods in turn (the ones that
//! stay first) and takes the first answer; a node that cannot be reached, or that found no
//! leader, sends it on to the next. `DecommissionStatus` is cheap and bounded by a short
//! timeout; `Decommission` returns only once the node holds no replica, so the reconcile
//! never awaits it: it runs on a task of its own (see `drain.rs`), and the reconcile polls
//! `DecommissionStatus`.
//!
//! `Admin.Backup` is not in strata-node's API yet. The operator asks for it anyway, by its
//! method path with an empty request (no message type of its own), so that a node that
//! answers `UNIMPLEMENTED` is reported as exactly that, and one that answers anything else
//! is reported as a node this operator version cannot drive yet.
//!
//! The [`ClusterAdmin`] trait lets the scenario tests answer for a model of the cluster;
//! [`GrpcAdmin`] is the real one, tested against in-process nodes on loopback.

use std::time::Duration;

use futures::future::BoxFuture;
use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::{DecommissionRequest, DecommissionStatusRequest, DrainState};
use tonic::Code;

/// Why a membership call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminError {
    /// Another node may answer (this one is unreachable, or found no leader).
    pub try_another: bool,
    /// What went wrong, for the status.
    pub message: String,
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Whether a node still holds a replica, as the leader sees the membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// A voter or learner of the data shard.
    Active,
    /// No member: it holds no replica.
    Drained,
}

/// What a node answered to `Admin.Backup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupAnswer {
    /// `UNIMPLEMENTED`, with the node's message.
    Unimplemented(String),
    /// Anything else: the node serves the call.
    Served {
        /// The gRPC code.
        code: String,
        /// The node's message.
        message: String,
    },
}

/// The calls, each sent to one node at `endpoint` (`host:port`).
pub trait ClusterAdmin: Send + Sync {
    /// `Admin.Decommission` of `node_id`, keeping `replication_factor` voters; the summary
    /// of what it did. Returns once the node is drained (or the call failed).
    fn decommission(
        &self,
        endpoint: String,
        node_id: u64,
        replication_factor: u32,
    ) -> BoxFuture<'static, Result<String, AdminError>>;

    /// `Admin.DecommissionStatus` of `node_id`.
    fn drain_state(
        &self,
        endpoint: String,
        node_id: u64,
    ) -> BoxFuture<'static, Result<Drain, AdminError>>;

    /// `Admin.Backup`, with an empty request: whether the node serves it.
    fn backup(&self, endpoint: String) -> BoxFuture<'static, Result<BackupAnswer, AdminError>>;
}

/// The method path of `Admin.Backup`.
pub const BACKUP_METHOD: &str = "/strata.v1.Admin/Backup";

/// The calls over a fresh gRPC connection each.
#[derive(Debug, Clone)]
pub struct GrpcAdmin {
    /// Connect timeout, and the bound of a `DecommissionStatus` call.
    pub timeout: Duration,
    /// The bound of a `Decommission` call (it moves the node's replicas away).
    pub decommission_timeout: Duration,
}

impl Default for GrpcAdmin {
    fn default() -> Self {
        GrpcAdmin {
            timeout: Duration::from_secs(2),
            decommission_timeout: Duration::from_secs(120),
        }
    }
}

async fn connect(
    endpoint: &str,
    timeout: Duration,
) -> Result<AdminClient<tonic::transport::Channel>, AdminError> {
    let unreachable = |message: String| AdminError {
        try_another: true,
        message,
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
        .map_err(|e| unreachable(format!("bad endpoint {endpoint}: {e}")))?
        .connect_timeout(timeout)
        .connect()
        .await
        .map_err(|e| unreachable(format!("cannot connect to {endpoint}: {e}")))?;
    Ok(AdminClient::new(channel))
}

fn call_error(call: &str, endpoint: &str, s: &tonic::Status) -> AdminError {
    AdminError {
        // UNAVAILABLE: no leader reachable from there, or a catch-up timeout; another node
        // (or a later try) may do. Anything else (a refusal, a bad request) is the answer.
        try_another: matches!(
            s.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled
        ),
        message: format!("{call} at {endpoint}: {:?}: {}", s.code(), s.message()),
    }
}

/// `work`, bounded by `timeout`; a call that timed out is sent on to another node when
/// `try_another` (a `Decommission` that timed out may still run at the leader: it is not).
async fn bounded<T>(
    call: &str,
    endpoint: &str,
    timeout: Duration,
    try_another: bool,
    work: impl std::future::Future<Output = Result<T, AdminError>>,
) -> Result<T, AdminError> {
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| {
            Err(AdminError {
                try_another,
                message: format!("{call} at {endpoint}: no answer in {timeout:?}"),
            })
        })
}

impl ClusterAdmin for GrpcAdmin {
    fn decommission(
        &self,
        endpoint: String,
        node_id: u64,
        replication_factor: u32,
    ) -> BoxFuture<'static, Result<String, AdminError>> {
        let (timeout, bound) = (self.timeout, self.decommission_timeout);
        Box::pin(async move {
            bounded("Admin.Decommission", &endpoint, bound, false, async {
                let mut client = connect(&endpoint, timeout).await?;
                let response = client
                    .decommission(DecommissionRequest {
                        node_id,
                        replication_factor,
                    })
                    .await
                    .map_err(|s| call_error("Admin.Decommission", &endpoint, &s))?
                    .into_inner();
                Ok(response.summary)
            })
            .await
        })
    }

    fn drain_state(
        &self,
        endpoint: String,
        node_id: u64,
    ) -> BoxFuture<'static, Result<Drain, AdminError>> {
        let timeout = self.timeout;
        Box::pin(async move {
            bounded(
                "Admin.DecommissionStatus",
                &endpoint,
                timeout,
                true,
                async {
                    let mut client = connect(&endpoint, timeout).await?;
                    let response = client
                        .decommission_status(DecommissionStatusRequest { node_id })
                        .await
                        .map_err(|s| call_error("Admin.DecommissionStatus", &endpoint, &s))?
                        .into_inner();
                    match DrainState::try_from(response.state) {
                        Ok(DrainState::Drained) => Ok(Drain::Drained),
                        Ok(DrainState::Active) => Ok(Drain::Active),
                        _ => Err(AdminError {
                            try_another: true,
                            message: format!(
                                "Admin.DecommissionStatus at {endpoint}: unknown drain state {}",
                                response.state
                            ),
                        }),
                    }
                },
            )
            .await
        })
    }

    fn backup(&self, endpoint: String) -> BoxFuture<'static, Result<BackupAnswer, AdminError>> {
        let this = self.clone();
        Box::pin(async move {
            let timeout = this.timeout;
            let at = endpoint.clone();
            bounded(
                "Admin.Backup",
                &at,
                timeout,
                true,
                this.backup_call(endpoint),
            )
            .await
        })
    }
}

impl GrpcAdmin {
    async fn backup_call(&self, endpoint: String) -> Result<BackupAnswer, AdminError> {
        let timeout = self.timeout;
        let unreachable = |message: String| AdminError {
            try_another: true,
            message,
        };
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
            .map_err(|e| unreachable(format!("bad endpoint {endpoint}: {e}")))?
            .connect_timeout(timeout)
            .connect()
            .await
            .map_err(|e| unreachable(format!("cannot connect to {endpoint}: {e}")))?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| unreachable(format!("{endpoint} is not ready: {e}")))?;
        // An empty message: StatusRequest has no field, and encodes to nothing.
        let answer = grpc
            .unary::<_, strata_proto::v1::StatusRequest, _>(
                tonic::Request::new(strata_proto::v1::StatusRequest {}),
                http::uri::PathAndQuery::from_static(BACKUP_METHOD),
                tonic_prost::ProstCodec::default(),
            )
            .await;
        Ok(match answer {
            Err(s) if s.code() == Code::Unimplemented => {
                BackupAnswer::Unimplemented(s.message().to_owned())
            }
            Err(s) if s.code() == Code::Unavailable => {
                return Err(unreachable(format!(
                    "Admin.Backup at {endpoint}: {:?}: {}",
                    s.code(),
                    s.message()
                )))
            }
            Err(s) => BackupAnswer::Served {
                code: format!("{:?}", s.code()),
                message: s.message().to_owned(),
            },
            Ok(_) => BackupAnswer::Served {
                code: "Ok".to_owned(),
                message: String::new(),
            },
        })
    }
}

/// Sends `call` to each of `endpoints` in turn until one answers (or refuses): the first
/// answer, or the last error.
pub async fn first_answer<T, F>(endpoints: &[String], mut call: F) -> Result<T, AdminError>
where
    F: FnMut(String) -> BoxFuture<'static, Result<T, AdminError>>,
{
    let mut last = AdminError {
        try_another: true,
        message: "no node is ready to ask".to_owned(),
    };
    for endpoint in endpoints {
        match call(endpoint.clone()).await {
            Ok(answer) => return Ok(answer),
            Err(e) if e.try_another => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata::server::config::NodeConfig;
    use strata::server::Server;

    /// A real node has no Admin.Backup yet: the probe says UNIMPLEMENTED, not an error; a
    /// node that is down is unreachable.
    #[tokio::test]
    async fn a_real_node_answers_unimplemented_to_backup() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(NodeConfig::on_free_ports(dir.path()))
            .await
            .unwrap();
        let admin = GrpcAdmin::default();
        let answer = admin.backup(server.grpc_addr().to_string()).await.unwrap();
        assert!(
            matches!(answer, BackupAnswer::Unimplemented(_)),
            "{answer:?}"
        );
        let down = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let error = admin.backup(down).await.unwrap_err();
        assert!(error.try_another, "{error:?}");
        assert!(error.message.contains("cannot connect"), "{error:?}");
        server.shutdown().await.unwrap();
    }
}
