//! The internal `Membership` gRPC service: each call is validated, then routed to the data
//! shard's leader by [`Membership::route`] (run here when this node leads, passed on once
//! otherwise, marked with [`FORWARDED`] so it is never passed on again).

use std::sync::Arc;

use strata_proto::internal::v1 as ipb;
use strata_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::{Call, Membership, Reply, FORWARDED};

/// The internal `Membership` service.
#[derive(Debug, Clone)]
pub struct MembershipService {
    membership: Arc<Membership>,
}

impl MembershipService {
    /// Serves `membership`.
    pub fn new(membership: Arc<Membership>) -> Self {
        Self { membership }
    }

    async fn run<T>(
        &self,
        call: Call,
        forwarded: bool,
        pick: fn(Reply) -> Option<T>,
    ) -> Result<Response<T>, Status> {
        let changes = !matches!(call, Call::DrainStatus(_));
        let closing = self.membership.closing.subscribe();
        let reply = tokio::select! {
            r = self.membership.route(call, forwarded) => r?,
            () = crate::server::service::closed(closing) => {
                return Err(crate::server::error::shutting_down(
                    self.membership.node_id,
                    "a membership call",
                    changes,
                ))
            }
        };
        pick(reply)
            .map(Response::new)
            .ok_or_else(|| Status::internal("mismatched membership reply"))
    }
}

fn is_forwarded<T>(r: &Request<T>) -> bool {
    r.metadata().contains_key(FORWARDED)
}

#[tonic::async_trait]
impl ipb::membership_server::Membership for MembershipService {
    async fn add_node(
        &self,
        r: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::AddNodeResponse>, Status> {
        let f = is_forwarded(&r);
        self.run(Call::Add(r.into_inner()), f, |r| match r {
            Reply::Add(m) => Some(m),
            _ => None,
        })
        .await
    }

    async fn remove_node(
        &self,
        r: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        let f = is_forwarded(&r);
        self.run(Call::Remove(r.into_inner()), f, |r| match r {
            Reply::Remove(m) => Some(m),
            _ => None,
        })
        .await
    }

    async fn transfer_leader(
        &self,
        r: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let f = is_forwarded(&r);
        self.run(Call::Transfer(r.into_inner()), f, |r| match r {
            Reply::Transfer(m) => Some(m),
            _ => None,
        })
        .await
    }

    async fn decommission(
        &self,
        r: Request<pb::DecommissionRequest>,
    ) -> Result<Response<pb::DecommissionResponse>, Status> {
        let f = is_forwarded(&r);
        self.run(Call::Decommission(r.into_inner()), f, |r| match r {
            Reply::Decommission(m) => Some(m),
            _ => None,
        })
        .await
    }

    async fn decommission_status(
        &self,
        r: Request<pb::DecommissionStatusRequest>,
    ) -> Result<Response<pb::DecommissionStatusResponse>, Status> {
        let f = is_forwarded(&r);
        self.run(Call::DrainStatus(r.into_inner()), f, |r| match r {
            Reply::DrainStatus(m) => Some(m),
            _ => None,
        })
        .await
    }

    async fn register(
        &self,
        r: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::AddNodeResponse>, Status> {
        let f = is_forwarded(&r);
        self.run(Call::Register(r.into_inner()), f, |r| match r {
            Reply::Add(m) => Some(m),
            _ => None,
        })
        .await
    }

    async fn members(
        &self,
        _r: Request<ipb::MembersRequest>,
    ) -> Result<Response<ipb::MembersResponse>, Status> {
        Ok(Response::new(self.membership.members_reply()))
    }
}
