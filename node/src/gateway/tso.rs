//! [`RoutedTso`]: the cluster's one oracle, asked where it is served.
//!
//! The oracle is served by the leader of the Raft group that holds it (see
//! [`ReplicatedTso`](crate::tso::ReplicatedTso)). On that node a request goes to the local
//! oracle; elsewhere it is a `GetTimestamps(count)` call to the leader's shard service,
//! following `NotLeader` hints as the shard router does. Put a
//! [`BatchingTso`](crate::tso::BatchingTso) in front, so that a gateway's concurrent
//! requests become one call for many timestamps:
//!
//! ```text
//!   begin / commit ─► BatchingTso ─► RoutedTso ─┬─ this node leads: the local oracle
//!   (many callers)    (one round)               └─ else GetTimestamps(n) at the leader
//! ```
//!
//! A call whose answer was lost is sent again: timestamps it may have allocated are thrown
//! away, never reused, and a timestamp from a later call is fresher still, so real-time
//! order holds (each caller's timestamp comes from a round that began after it asked).

use std::sync::Arc;

use parking_lot::Mutex;
use strata_proto::internal::v1 as pb;

use super::codec::{self, CallError};
use super::remote::{unary, Connections};
use super::router::{describe, Resend, RouterConfig, RouterStats, Routing, Target};
use super::LeaderLocator;
use crate::raftstore::{ShardEpoch, ShardId};
use crate::tso::{Timestamp, Tso, TsoError};

/// The oracle of the group `shard`, local or remote; see the module documentation.
pub struct RoutedTso {
    node_id: u64,
    shard: ShardId,
    local: Arc<dyn Tso>,
    locator: Arc<dyn LeaderLocator>,
    connections: Arc<Connections>,
    config: RouterConfig,
    epoch: Mutex<Option<ShardEpoch>>,
    stats: RouterStats,
}

impl std::fmt::Debug for RoutedTso {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutedTso")
            .field("node_id", &self.node_id)
            .field("shard", &self.shard)
            .field("stats", &self.stats)
            .finish()
    }
}

impl RoutedTso {
    /// The oracle held by group `shard`, on node `node_id` whose own oracle (served when it
    /// leads the group) is `local`.
    pub fn new(
        node_id: u64,
        shard: ShardId,
        local: Arc<dyn Tso>,
        locator: Arc<dyn LeaderLocator>,
        connections: Arc<Connections>,
        config: RouterConfig,
    ) -> RoutedTso {
        RoutedTso {
            node_id,
            shard,
            local,
            locator,
            connections,
            config,
            epoch: Mutex::new(None),
            stats: RouterStats::default(),
        }
    }

    /// What it counted: `remote` is the number of `GetTimestamps` calls sent.
    pub fn stats(&self) -> &RouterStats {
        &self.stats
    }

    fn allocate(&self, count: u32) -> Result<Timestamp, TsoError> {
        let routing = Routing {
            node_id: self.node_id,
            shard: self.shard,
            locator: &*self.locator,
            connections: &self.connections,
            config: &self.config,
            epoch: &self.epoch,
            stats: &self.stats,
        };
        let shard = self.shard.0;
        let timeout = self.config.rpc_timeout;
        routing
            .route(Resend::Read, |target| match target {
                Target::Local => self
                    .local
                    .get_timestamps(count)
                    .map_err(|e| CallError::from_tso(e, shard)),
                Target::Remote(mut r) => {
                    let req = pb::GetTimestampsRequest {
                        header: Some(r.header),
                        count,
                    };
                    routing.block(async move {
                        let resp = unary(timeout, r.client.get_timestamps(req)).await?;
                        codec::check(resp.error, shard)?;
                        Ok(resp.last)
                    })
                }
            })
            .map_err(|e| match e {
                CallError::Tso(e) => e,
                CallError::NotLeader { leader, .. } => TsoError::NotLeader { leader },
                other => TsoError::Unavailable(describe(&other)),
            })
    }
}

impl Tso for RoutedTso {
    fn get_timestamp(&self) -> Result<Timestamp, TsoError> {
        self.allocate(1)
    }

    fn get_timestamps(&self, count: u32) -> Result<Timestamp, TsoError> {
        self.allocate(count)
    }

    /// The local oracle's when this node leads in `term`; otherwise a confirmed timestamp
    /// from wherever the oracle is (always acceptable).
    fn get_timestamp_in_term(&self, term: u64) -> Result<Timestamp, TsoError> {
        match self.local.get_timestamp_in_term(term) {
            Ok(ts) => Ok(ts),
            Err(TsoError::NotLeader { .. }) => self.allocate(1),
            Err(e) => Err(e),
        }
    }

    /// The local oracle's, when this node leads in `term`; never a remote call.
    fn try_timestamp_in_term(&self, term: u64) -> Result<Option<Timestamp>, TsoError> {
        match self.local.try_timestamp_in_term(term) {
            Err(TsoError::NotLeader { .. }) => Ok(None),
            other => other,
        }
    }
}
