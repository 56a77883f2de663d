//! A node's own side of membership at start: joining a running cluster (`--join`), asking
//! the other initial members whether a cluster already remembers this node before a fresh
//! bootstrap (D125), recording this incarnation once it is a voter (D126), and asking peers
//! whether this node was removed (D127). Everything here is a client of the `Membership`
//! service of other nodes, or routes through this node's [`Membership`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use strata_proto::internal::v1 as ipb;
use strata_proto::v1 as pb;
use tokio::sync::watch;
use tonic::Request;

use super::{connect, Call, Membership, CALL_TIMEOUT};
use crate::raftstore::transport::AddressBook;
use crate::raftstore::{MemberDirectory, NodeId, PeerId};
use crate::server::replica::DATA_SHARD;

/// Asks `seeds` (Raft addresses), in turn and with backoff, to add this node (`me`) until
/// one succeeds or `shutdown` is set; fills `book` from the first seed's directory before.
/// A member already, at other addresses, is moved by the same call (D169).
pub async fn join(
    seeds: Vec<String>,
    me: pb::AddNodeRequest,
    book: AddressBook,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 0usize;
    loop {
        let seed = &seeds[attempt % seeds.len().max(1)];
        attempt += 1;
        let attempt_result = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            r = join_once(seed, &me, &book) => r,
        };
        match attempt_result {
            Ok(already) => {
                if already {
                    tracing::info!(node = me.node_id, %seed, raft = %me.raft_addr, "the cluster has this member at its addresses");
                } else {
                    tracing::info!(node = me.node_id, %seed, "joined the cluster");
                }
                return;
            }
            Err(e) => tracing::info!(%seed, error = %e, "join attempt failed; retrying"),
        }
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// One attempt; whether the node was a member already.
async fn join_once(
    seed: &str,
    me: &pb::AddNodeRequest,
    book: &AddressBook,
) -> Result<bool, String> {
    let mut client = connect(seed).await.map_err(|e| e.to_string())?;
    let members = client
        .members(ipb::MembersRequest {})
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner();
    for m in &members.members {
        if m.node_id != me.node_id && !m.raft_addr.is_empty() {
            book.set(NodeId(m.node_id), m.raft_addr.clone());
        }
    }
    let mut req = Request::new(me.clone());
    req.set_timeout(CALL_TIMEOUT);
    client
        .add_node(req)
        .await
        .map(|r| r.into_inner().already_member)
        .map_err(|s| s.message().to_owned())
}

/// The peers (their Raft addresses) that member `node_id`, restarted with its recorded
/// `incarnation` at addresses other than `dir` records (its Raft address, or a recorded gRPC
/// address), asks to add it again, which moves it (D169); `None` when it has not moved or
/// has no peer. It asks its peers rather than waiting to learn the leader: they still dial
/// its old address, so no leader would reach it.
pub fn move_seeds(
    dir: &MemberDirectory,
    node_id: u64,
    incarnation: &str,
    raft_addr: &str,
    grpc_addr: &str,
) -> Option<Vec<String>> {
    let recorded = dir.0.get(&node_id)?;
    let moved = recorded.incarnation == incarnation
        && !recorded.raft.is_empty()
        && (recorded.raft != raft_addr
            || (!recorded.grpc.is_empty() && recorded.grpc != grpc_addr));
    let seeds: Vec<String> = dir
        .0
        .iter()
        .filter(|(id, m)| **id != node_id && !m.raft.is_empty())
        .map(|(_, m)| m.raft.clone())
        .collect();
    (moved && !seeds.is_empty()).then_some(seeds)
}

/// Raft addresses of in-process test nodes that never register their incarnation (a hook
/// that forces the window between a first acknowledgment and the registration).
#[cfg(test)]
pub(crate) static SKIP_REGISTRATION: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

#[cfg(test)]
fn registration_skipped(raft_addr: &str) -> bool {
    SKIP_REGISTRATION
        .lock()
        .map(|s| s.contains(raft_addr))
        .unwrap_or(false)
}

#[cfg(not(test))]
fn registration_skipped(_raft_addr: &str) -> bool {
    false
}

/// How long a fresh initial member waits for each initial peer's answer before it counts
/// the peer as knowing nothing.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a fresh initial member learnt from its initial peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// No peer answered with a cluster that remembers this node (by an incarnation it
    /// registered, or by having removed it): its first start (bootstrap as an initial
    /// member), even if the others elected already.
    NoCluster,
    /// A cluster exists (why, in words): join it.
    Cluster(String),
}

/// Asks every initial peer (`peers`: id -> Raft address, this node excluded) at once,
/// each bounded by one second, whether a cluster exists that this fresh node
/// (`node_id`, new `incarnation`) must join rather than bootstrap (D125).
pub async fn probe_cluster(
    node_id: u64,
    incarnation: &str,
    peers: &BTreeMap<u64, String>,
) -> Probe {
    let mut found = None;
    for (peer, answer) in ask_members(peers).await {
        let members = match answer {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(peer, error = %e, "initial peer did not answer the probe");
                continue;
            }
        };
        if let Some(why) = cluster_in(node_id, incarnation, peer, &members) {
            found.get_or_insert(why);
        }
    }
    match found {
        Some(why) => Probe::Cluster(why),
        None => Probe::NoCluster,
    }
}

/// Asks `peers` (id -> Raft address) at once, each bounded by one second, whether
/// they still count `node_id` a member: why not, when the leader (a peer that names itself
/// the leader) answers with members without it, so its removal was committed. Only the
/// leader is believed: a joiner replaying old log may hold a configuration that lacks it.
pub async fn removed_per_peers(node_id: u64, peers: &BTreeMap<u64, String>) -> Option<String> {
    for (peer, answer) in ask_members(peers).await {
        if let Ok(m) = answer {
            if m.leader_node_id == peer
                && m.members.iter().any(|r| r.voter)
                && !m.members.iter().any(|r| r.node_id == node_id)
            {
                return Some(format!(
                    "the leader, node {peer}, lists members without this node"
                ));
            }
        }
    }
    None
}

/// Every peer's `Members` answer, asked at once, each bounded by [`PROBE_TIMEOUT`].
async fn ask_members(
    peers: &BTreeMap<u64, String>,
) -> Vec<(u64, Result<ipb::MembersResponse, String>)> {
    let mut asks = tokio::task::JoinSet::new();
    for (id, addr) in peers {
        let (id, addr) = (*id, addr.clone());
        asks.spawn(async move {
            let answer = tokio::time::timeout(PROBE_TIMEOUT, async {
                let mut client = connect(&addr).await.map_err(|e| e.to_string())?;
                client
                    .members(ipb::MembersRequest {})
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|s| s.message().to_owned())
            })
            .await
            .unwrap_or_else(|_| Err("no answer in time".into()));
            (id, answer)
        });
    }
    let mut out = Vec::new();
    while let Some(joined) = asks.join_next().await {
        if let Ok(a) = joined {
            out.push(a);
        }
    }
    out
}

/// Whether `peer`'s answer shows a cluster this fresh node must join, and why.
fn cluster_in(
    node_id: u64,
    incarnation: &str,
    peer: u64,
    m: &ipb::MembersResponse,
) -> Option<String> {
    // A peer without a membership (its replica waits to be added) knows no cluster.
    if !m.members.iter().any(|r| r.voter) {
        return None;
    }
    match m.members.iter().find(|r| r.node_id == node_id) {
        None => Some(format!(
            "node {peer} lists members without this node: it was removed"
        )),
        Some(r) if !r.incarnation.is_empty() && r.incarnation != incarnation => Some(format!(
            "node {peer} records this node with incarnation {}, an earlier data directory",
            r.incarnation
        )),
        // Listed without an incarnation: it never registered one, so it never ran with a
        // leader long enough to (D126): its first start, whatever the others did already.
        _ => None,
    }
}

/// Until it succeeds or `shutdown` is set: once this node (`me`), an initial member whose
/// replica holds a log, is a voter that knows a leader and has committed beyond the
/// `bootstrap_entries` (so a leader extended its log: it is not a fresh log the leader
/// believes longer), records its incarnation in the member directory through the leader
/// (`Register`), so that a later start of its id on fresh data is told apart from it.
/// A replica that finds it lost acknowledged entries (`lost_log`: an earlier incarnation
/// acknowledged them before it could register) asks to be added again instead
/// (`AddNode`), which removes the old member and adds it back as a new one (D126).
/// Does nothing once the directory has its incarnation.
pub async fn register(
    membership: Arc<Membership>,
    me: pb::AddNodeRequest,
    bootstrap_entries: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let s = membership.handle.status(DATA_SHARD);
        let recorded = membership
            .state
            .members()
            .0
            .get(&me.node_id)
            .map(|m| m.incarnation.clone());
        if recorded.as_deref() == Some(me.incarnation.as_str())
            || s.as_ref().is_some_and(|s| s.retired)
        {
            return;
        }
        let lost = s.as_ref().is_some_and(|s| s.lost_log);
        let voter = s.as_ref().is_some_and(|s| {
            s.voters.contains(&PeerId(me.node_id))
                && s.leader.is_some()
                && s.commit > bootstrap_entries
        });
        if lost || (voter && !registration_skipped(&me.raft_addr)) {
            let call = if lost {
                tracing::warn!(
                    node = me.node_id,
                    "this replica lost entries it had acknowledged: asking to be added again"
                );
                Call::Add(me.clone())
            } else {
                Call::Register(me.clone())
            };
            // A call may wait on a change that cannot commit now: shutdown does not wait.
            let result = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                r = membership.route(call, false) => r,
            };
            match result {
                Ok(_) => {
                    tracing::info!(node = me.node_id, "incarnation recorded");
                    return;
                }
                Err(e) => tracing::debug!(error = %e.message(), "registration failed; retrying"),
            }
        }
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}
