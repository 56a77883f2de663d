//! What a benchmark run cost the servers: CPU time and fsyncs per operation, summed over every
//! node of the cluster, and how many proposals each Raft ready carried.
//!
//! ```text
//!   discover: Admin.Status of every --endpoints address ─► node ids, and the members each
//!             one knows with a gRPC address ─► connect to those too (a member that does not
//!             answer is listed as unmeasured, it does not fail the run)
//!   before the timed phase: sample every node's counters (Admin.Status `counters`)
//!   after it:               sample again
//!   cost = Σ over nodes sampled both times (same node id, no counter went backwards)
//!          of after − before, divided by the operations the clients completed
//! ```
//!
//! The counters come from `Admin.Status`, not from the node's own host: CPU is the node
//! process's `utime + stime` (all its threads), so the figures hold for remote nodes too, and
//! the client's own CPU is never counted. fsyncs are the raft log's synced writes plus the
//! storage engine's WAL fsyncs (applies of replicated entries skip that WAL, so on the write
//! path the raft log's are the ones that matter). A node restarted during the run (its
//! counters went backwards) is left out of the sum and reported, since its delta would be
//! meaningless. The background work of the nodes during the run (ticks, heartbeats, GC,
//! compactions) is included: it is what the run cost.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;
use strata_proto::v1;

use crate::cli::Clients;

/// One node's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct NodeSample {
    /// The node's id.
    pub node_id: u64,
    /// CPU seconds of its process.
    pub cpu_seconds: f64,
    /// Raft log writes fsynced.
    pub raft_log_syncs: u64,
    /// Engine WAL fsyncs.
    pub engine_wal_syncs: u64,
    /// Proposals handed to Raft.
    pub raft_proposals: u64,
    /// Readies that carried a proposal.
    pub raft_proposal_readies: u64,
    /// Blind writes committed as leader (D157).
    pub blind_writes_committed: u64,
    /// Blind writes declined (run as transactions instead).
    pub blind_writes_declined: u64,
    /// Keys of latest reads served as leader (D162).
    pub latest_reads_served: u64,
    /// Keys of latest reads declined (read in transactions instead).
    pub latest_reads_declined: u64,
}

impl NodeSample {
    /// The sample in a status response; `None` from a server that sends no counters.
    pub fn from_status(s: &v1::StatusResponse) -> Option<NodeSample> {
        let c = s.counters.as_ref()?;
        Some(NodeSample {
            node_id: s.node_id,
            cpu_seconds: c.cpu_seconds,
            raft_log_syncs: c.raft_log_syncs,
            engine_wal_syncs: c.engine_wal_syncs,
            raft_proposals: c.raft_proposals,
            raft_proposal_readies: c.raft_proposal_readies,
            blind_writes_committed: c.blind_writes_committed,
            blind_writes_declined: c.blind_writes_declined,
            latest_reads_served: c.latest_reads_served,
            latest_reads_declined: c.latest_reads_declined,
        })
    }

    /// `self − before`, or `None` if a counter went backwards (the node restarted).
    fn delta(&self, before: &NodeSample) -> Option<NodeSample> {
        let d = |a: u64, b: u64| a.checked_sub(b);
        if self.cpu_seconds < before.cpu_seconds {
            return None;
        }
        Some(NodeSample {
            node_id: self.node_id,
            cpu_seconds: self.cpu_seconds - before.cpu_seconds,
            raft_log_syncs: d(self.raft_log_syncs, before.raft_log_syncs)?,
            engine_wal_syncs: d(self.engine_wal_syncs, before.engine_wal_syncs)?,
            raft_proposals: d(self.raft_proposals, before.raft_proposals)?,
            raft_proposal_readies: d(self.raft_proposal_readies, before.raft_proposal_readies)?,
            blind_writes_committed: d(self.blind_writes_committed, before.blind_writes_committed)?,
            blind_writes_declined: d(self.blind_writes_declined, before.blind_writes_declined)?,
            latest_reads_served: d(self.latest_reads_served, before.latest_reads_served)?,
            latest_reads_declined: d(self.latest_reads_declined, before.latest_reads_declined)?,
        })
    }
}

/// The servers' cost of a run, summed over the nodes measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServerCost {
    /// Per node measured: what it did during the run.
    pub nodes: Vec<NodeSample>,
    /// Nodes that could not be measured before and after (unreachable, restarted, or a
    /// server without counters), by id or address.
    pub unmeasured: Vec<String>,
    /// CPU seconds of all measured nodes.
    pub cpu_seconds: f64,
    /// Microseconds of server CPU per completed operation.
    pub cpu_us_per_op: f64,
    /// Raft log fsyncs of all measured nodes.
    pub raft_log_syncs: u64,
    /// Engine WAL fsyncs of all measured nodes.
    pub engine_wal_syncs: u64,
    /// All fsyncs per completed operation.
    pub fsyncs_per_op: f64,
    /// Proposals per ready that carried one (over all nodes: the leader's, in practice).
    pub proposals_per_ready: f64,
    /// Blind writes committed, and declined to the transaction path, over all nodes.
    pub blind_writes_committed: u64,
    /// See `blind_writes_committed`.
    pub blind_writes_declined: u64,
    /// Keys of latest reads served, and declined to the read transaction, over all nodes.
    pub latest_reads_served: u64,
    /// See `latest_reads_served`.
    pub latest_reads_declined: u64,
}

/// Sums the deltas of the nodes sampled both `before` and `after` (the same node at the
/// same position, `None` where it did not answer) over `ops` operations. `unreachable`
/// names nodes known not to have answered at all.
pub fn server_cost(
    before: &[Option<NodeSample>],
    after: &[Option<NodeSample>],
    ops: u64,
    unreachable: &[String],
) -> ServerCost {
    let mut cost = ServerCost {
        unmeasured: unreachable.to_vec(),
        ..ServerCost::default()
    };
    let mut proposals = 0u64;
    let mut readies = 0u64;
    for i in 0..before.len().max(after.len()) {
        let (b, a) = (
            before.get(i).copied().flatten(),
            after.get(i).copied().flatten(),
        );
        let id = a
            .or(b)
            .map_or(format!("#{}", i + 1), |s| s.node_id.to_string());
        match (b, a) {
            (Some(b), Some(a)) => match a.delta(&b) {
                Some(d) => {
                    cost.cpu_seconds += d.cpu_seconds;
                    cost.raft_log_syncs += d.raft_log_syncs;
                    cost.engine_wal_syncs += d.engine_wal_syncs;
                    proposals += d.raft_proposals;
                    readies += d.raft_proposal_readies;
                    cost.blind_writes_committed += d.blind_writes_committed;
                    cost.blind_writes_declined += d.blind_writes_declined;
                    cost.latest_reads_served += d.latest_reads_served;
                    cost.latest_reads_declined += d.latest_reads_declined;
                    cost.nodes.push(d);
                }
                None => cost.unmeasured.push(format!("node {id} (restarted)")),
            },
            _ => cost.unmeasured.push(format!("node {id}")),
        }
    }
    let per_op = |v: f64| if ops > 0 { v / ops as f64 } else { 0.0 };
    cost.cpu_us_per_op = per_op(cost.cpu_seconds * 1e6);
    cost.fsyncs_per_op = per_op((cost.raft_log_syncs + cost.engine_wal_syncs) as f64);
    cost.proposals_per_ready = if readies > 0 {
        proposals as f64 / readies as f64
    } else {
        0.0
    };
    cost
}

/// The nodes of a cluster a run measures: one client per distinct node, told apart by the
/// Raft address it advertises (unique within a cluster, and across unrelated single nodes
/// that all carry id 1).
#[derive(Debug, Clone, Default)]
pub struct ClusterNodes {
    nodes: Vec<(String, Clients)>,
    /// Members that did not answer when discovered (their gRPC addresses).
    pub unreachable: Vec<String>,
}

impl ClusterNodes {
    /// The nodes behind `servers` (the run's endpoints, already connected) and every member
    /// they report a gRPC address for.
    pub async fn discover(servers: &[(String, Clients)], timeout: Duration) -> ClusterNodes {
        let mut found = ClusterNodes::default();
        // Raft addresses of the nodes found, and of the members they reported.
        let mut seen = BTreeSet::new();
        let mut members: Vec<(String, String)> = Vec::new();
        for (addr, c) in servers {
            let mut c = c.clone();
            let Ok(s) = c.admin.status(v1::StatusRequest {}).await else {
                found.unreachable.push(addr.clone());
                continue;
            };
            let s = s.into_inner();
            if seen.insert(s.raft_addr.clone()) {
                found.nodes.push((addr.clone(), c));
            }
            members.extend(
                s.members
                    .into_iter()
                    .filter(|m| !m.grpc_addr.is_empty())
                    .map(|m| (m.raft_addr, m.grpc_addr)),
            );
        }
        for (raft, addr) in members {
            if !seen.insert(raft.clone()) {
                continue;
            }
            let Ok(mut c) = Clients::connect_one(&addr, timeout).await else {
                found.unreachable.push(addr);
                continue;
            };
            match c.admin.status(v1::StatusRequest {}).await {
                Ok(s) => {
                    // The member list may spell the address differently from what the
                    // node advertises: a node already found under its own is not counted
                    // twice.
                    let own = s.get_ref().raft_addr.clone();
                    if own == raft || seen.insert(own) {
                        found.nodes.push((addr, c));
                    }
                }
                Err(_) => found.unreachable.push(addr),
            }
        }
        found
    }

    /// How many nodes were found.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True if none was.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node's counters now, in the order found; `None` for a node that does not
    /// answer or sends none.
    pub async fn sample(&self) -> Vec<Option<NodeSample>> {
        let mut out = Vec::with_capacity(self.nodes.len());
        for (_, c) in &self.nodes {
            let mut c = c.clone();
            let s = c.admin.status(v1::StatusRequest {}).await.ok();
            out.push(s.and_then(|s| NodeSample::from_status(s.get_ref())));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: u64, cpu: f64, syncs: u64, wal: u64, props: u64, readies: u64) -> NodeSample {
        NodeSample {
            node_id: id,
            cpu_seconds: cpu,
            raft_log_syncs: syncs,
            engine_wal_syncs: wal,
            raft_proposals: props,
            raft_proposal_readies: readies,
            ..NodeSample::default()
        }
    }

    #[test]
    fn sums_deltas_over_nodes_and_divides_by_ops() {
        let before = [
            Some(sample(1, 10.0, 100, 5, 1000, 500)),
            Some(sample(2, 3.0, 50, 0, 0, 0)),
        ];
        let after = [
            Some(sample(1, 12.0, 1100, 7, 5000, 1500)),
            Some(sample(2, 4.5, 1050, 0, 0, 0)),
        ];
        let c = server_cost(&before, &after, 2000, &[]);
        assert_eq!(c.nodes.len(), 2);
        assert!(c.unmeasured.is_empty());
        assert!((c.cpu_seconds - 3.5).abs() < 1e-9);
        assert!(
            (c.cpu_us_per_op - 1750.0).abs() < 1e-6,
            "{}",
            c.cpu_us_per_op
        );
        assert_eq!((c.raft_log_syncs, c.engine_wal_syncs), (2000, 2));
        assert!((c.fsyncs_per_op - 1.001).abs() < 1e-9);
        // 4000 proposals in 1000 readies (node 2 proposed nothing).
        assert!((c.proposals_per_ready - 4.0).abs() < 1e-9);
        assert_eq!(c.nodes[0], sample(1, 2.0, 1000, 2, 4000, 1000));
    }

    #[test]
    fn leaves_out_restarted_and_missing_nodes() {
        let before = [
            Some(sample(1, 10.0, 100, 0, 10, 10)),
            Some(sample(2, 5.0, 100, 0, 0, 0)),
            None,
            Some(sample(4, 1.0, 1, 0, 0, 0)),
        ];
        // Node 2 restarted (its counters went back), node 3 answered only after, node 4
        // only before.
        let after = [
            Some(sample(1, 11.0, 200, 0, 20, 15)),
            Some(sample(2, 0.5, 3, 0, 0, 0)),
            Some(sample(3, 1.0, 1, 0, 0, 0)),
            None,
        ];
        let c = server_cost(&before, &after, 100, &["10.0.0.9:7379".into()]);
        assert_eq!(c.nodes.len(), 1);
        assert_eq!(
            c.unmeasured,
            vec!["10.0.0.9:7379", "node 2 (restarted)", "node 3", "node 4"]
        );
        assert!((c.cpu_us_per_op - 10_000.0).abs() < 1e-6);
        assert!((c.fsyncs_per_op - 1.0).abs() < 1e-9);
        assert!((c.proposals_per_ready - 2.0).abs() < 1e-9);
        // No operations, no readies: zeros, not NaN.
        let c = server_cost(&before[..1], &before[..1], 0, &[]);
        assert_eq!((c.cpu_us_per_op, c.fsyncs_per_op), (0.0, 0.0));
        assert_eq!(c.proposals_per_ready, 0.0);
    }

    #[test]
    fn reads_counters_from_a_status_response() {
        let s = v1::StatusResponse {
            node_id: 7,
            counters: Some(v1::NodeCounters {
                cpu_seconds: 1.25,
                raft_log_syncs: 3,
                engine_wal_syncs: 4,
                raft_proposals: 5,
                raft_proposal_readies: 6,
                ..v1::NodeCounters::default()
            }),
            ..v1::StatusResponse::default()
        };
        assert_eq!(
            NodeSample::from_status(&s),
            Some(sample(7, 1.25, 3, 4, 5, 6))
        );
        let old = v1::StatusResponse {
            node_id: 7,
            ..v1::StatusResponse::default()
        };
        assert_eq!(NodeSample::from_status(&old), None);
    }
}
