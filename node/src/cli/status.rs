//! `strata status`: one node's view of itself and of its cluster, as text or JSON.
//!
//! ```text
//!   node 1 (strata 0.1.0), up 42 s, raft strata-0.…:20170, grpc strata-0.…:7379
//!   active transactions / GC safe point / engine lines
//!   members:   NODE  RAFT ADDRESS  GRPC ADDRESS            (one row per member)
//!   replicas:  SHARD NODE PEER ROLE TERM LEADER COMMIT APPLIED LAG
//!              (or one line saying the node is not replicated yet)
//! ```
//!
//! Rendering is a pure function of the `StatusResponse` ([`render_text`], [`render_json`]),
//! golden-tested from constructed responses; tables are padded to their widest cell.

use std::fmt::Write as _;

use serde_json::json;
use strata_proto::v1::{self, ReplicaRole, StatusResponse};

/// The role's short name in the table.
fn role_name(role: i32) -> &'static str {
    match ReplicaRole::try_from(role) {
        Ok(ReplicaRole::Leader) => "leader",
        Ok(ReplicaRole::Follower) => "follower",
        Ok(ReplicaRole::Candidate) => "candidate",
        Ok(ReplicaRole::PreCandidate) => "pre-candidate",
        Ok(ReplicaRole::Learner) => "learner",
        Ok(ReplicaRole::Unspecified) | Err(_) => "-",
    }
}

/// Renders rows as a table: columns left-aligned, padded to the widest cell, two spaces
/// apart, every line indented by two spaces, no trailing blanks.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: Vec<String>| {
        let mut l = String::from(" ");
        for (cell, w) in cells.iter().zip(&widths) {
            let _ = write!(l, " {cell:<w$}");
            l.push(' ');
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// `0` shown as `-` (unknown).
fn or_dash(v: u64) -> String {
    if v == 0 {
        "-".into()
    } else {
        v.to_string()
    }
}

/// The text form of a status response.
pub fn render_text(s: &StatusResponse) -> String {
    let mut out = String::new();
    let e = s.engine.clone().unwrap_or_default();
    let _ = writeln!(
        out,
        "node {} (strata {}), up {} s",
        s.node_id, s.version, s.uptime_seconds
    );
    if !s.grpc_addr.is_empty() || !s.raft_addr.is_empty() {
        let _ = writeln!(
            out,
            "advertised: grpc {}, raft {}",
            s.grpc_addr, s.raft_addr
        );
    }
    let _ = writeln!(
        out,
        "active transactions: {}, GC safe point: {}",
        s.active_transactions, s.gc_safe_point
    );
    let _ = writeln!(
        out,
        "engine: {} B in tables, {} B in memtables; write amp {:.2}, read amp {:.2}, space amp {:.2}",
        e.total_sst_bytes, e.memtable_bytes, e.write_amplification, e.read_amplification, e.space_amplification
    );
    for l in e.levels.iter().filter(|l| l.files > 0) {
        let _ = writeln!(out, "  L{}: {} files, {} B", l.level, l.files, l.bytes);
    }
    let _ = writeln!(out, "members:");
    let members: Vec<Vec<String>> = s
        .members
        .iter()
        .map(|m| {
            vec![
                format!(
                    "{}{}",
                    m.node_id,
                    if m.node_id == s.node_id { "*" } else { "" }
                ),
                m.raft_addr.clone(),
                if m.grpc_addr.is_empty() {
                    "-".into()
                } else {
                    m.grpc_addr.clone()
                },
            ]
        })
        .collect();
    table(
        &mut out,
        &["NODE", "RAFT ADDRESS", "GRPC ADDRESS"],
        &members,
    );
    if !s.replicated {
        let _ = writeln!(
            out,
            "replicas: none; this node is not replicated yet (it serves from its own engine alone)"
        );
        return out;
    }
    let _ = writeln!(out, "replicas:");
    let mut replicas = s.replicas.clone();
    replicas.sort_by_key(|r| (r.shard_id, r.node_id, r.peer_id));
    let rows: Vec<Vec<String>> = replicas
        .iter()
        .map(|r| {
            vec![
                r.shard_id.to_string(),
                r.node_id.to_string(),
                r.peer_id.to_string(),
                role_name(r.role).into(),
                r.term.to_string(),
                match (r.leader_node_id, r.leader_peer_id) {
                    (0, 0) => "-".into(),
                    (0, p) => format!("peer {p}"),
                    (n, _) => format!("node {n}"),
                },
                r.commit_index.to_string(),
                or_dash(r.applied_index),
                r.lag.to_string(),
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "SHARD", "NODE", "PEER", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAG",
        ],
        &rows,
    );
    out
}

/// The JSON form of a status response (one object).
pub fn render_json(s: &StatusResponse) -> serde_json::Value {
    let e = s.engine.clone().unwrap_or_default();
    json!({
        "node_id": s.node_id, "version": s.version, "uptime_seconds": s.uptime_seconds,
        "active_transactions": s.active_transactions, "gc_safe_point": s.gc_safe_point,
        "write_amplification": e.write_amplification, "read_amplification": e.read_amplification,
        "space_amplification": e.space_amplification, "total_sst_bytes": e.total_sst_bytes,
        "memtable_bytes": e.memtable_bytes,
        "levels": e.levels.iter().map(|l| json!({"level": l.level, "files": l.files, "bytes": l.bytes})).collect::<Vec<_>>(),
        "grpc_addr": s.grpc_addr, "raft_addr": s.raft_addr,
        "replicated": s.replicated,
        "members": s.members.iter().map(|m: &v1::ClusterMember| json!({
            "node_id": m.node_id, "raft_addr": m.raft_addr, "grpc_addr": m.grpc_addr,
        })).collect::<Vec<_>>(),
        "replicas": s.replicas.iter().map(|r| json!({
            "shard_id": r.shard_id, "node_id": r.node_id, "peer_id": r.peer_id,
            "role": role_name(r.role), "term": r.term, "leader_peer_id": r.leader_peer_id,
            "leader_node_id": r.leader_node_id, "commit_index": r.commit_index,
            "applied_index": r.applied_index, "lag": r.lag,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use v1::{ClusterMember, EngineStats, LevelStats, ReplicaStatus};

    fn base() -> StatusResponse {
        StatusResponse {
            node_id: 1,
            version: "0.1.0".into(),
            uptime_seconds: 42,
            engine: Some(EngineStats {
                write_amplification: 2.5,
                read_amplification: 1.0,
                space_amplification: 1.25,
                total_sst_bytes: 4096,
                memtable_bytes: 512,
                levels: vec![
                    LevelStats {
                        level: 0,
                        files: 2,
                        bytes: 4096,
                        score: 0.5,
                    },
                    LevelStats {
                        level: 1,
                        files: 0,
                        bytes: 0,
                        score: 0.0,
                    },
                ],
                ..EngineStats::default()
            }),
            active_transactions: 3,
            gc_safe_point: 77,
            grpc_addr: "127.0.0.1:7379".into(),
            raft_addr: "127.0.0.1:20170".into(),
            members: vec![ClusterMember {
                node_id: 1,
                raft_addr: "127.0.0.1:20170".into(),
                grpc_addr: "127.0.0.1:7379".into(),
                ..ClusterMember::default()
            }],
            ..StatusResponse::default()
        }
    }

    fn replicated() -> StatusResponse {
        let member = |id: u64| ClusterMember {
            node_id: id,
            raft_addr: format!("strata-{}.strata-peers.ns.svc:20170", id - 1),
            grpc_addr: if id == 1 {
                "strata-0.strata-peers.ns.svc:7379".into()
            } else {
                String::new()
            },
            ..ClusterMember::default()
        };
        let row = |node: u64, role: ReplicaRole, applied: u64, lag: u64| ReplicaStatus {
            shard_id: 1,
            node_id: node,
            peer_id: 10 + node,
            role: role as i32,
            term: 7,
            leader_peer_id: 11,
            leader_node_id: 1,
            commit_index: 1042,
            applied_index: applied,
            lag,
            recently_active: true,
        };
        StatusResponse {
            replicated: true,
            members: vec![member(1), member(2), member(3)],
            // Out of order on purpose: the table sorts by shard, node, peer.
            replicas: vec![
                row(3, ReplicaRole::Learner, 0, 1042),
                row(1, ReplicaRole::Leader, 1042, 0),
                row(2, ReplicaRole::Follower, 0, 3),
                ReplicaStatus {
                    shard_id: 2,
                    node_id: 1,
                    peer_id: 21,
                    role: ReplicaRole::Candidate as i32,
                    term: 3,
                    leader_peer_id: 0,
                    leader_node_id: 0,
                    recently_active: false,
                    commit_index: 5,
                    applied_index: 5,
                    lag: 0,
                },
            ],
            grpc_addr: "strata-0.strata-peers.ns.svc:7379".into(),
            raft_addr: "strata-0.strata-peers.ns.svc:20170".into(),
            ..base()
        }
    }

    /// Compares with `testdata/<name>`; `STRATA_BLESS=1` rewrites the file.
    fn golden(name: &str, actual: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/cli/testdata")
            .join(name);
        if std::env::var_os("STRATA_BLESS").is_some() {
            std::fs::write(&path, actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (STRATA_BLESS=1 writes it)", path.display()));
        assert_eq!(actual, expected, "{name} differs from the golden file");
    }

    #[test]
    fn a_node_that_is_not_replicated_says_so() {
        let text = render_text(&base());
        golden("status_single.txt", &text);
        assert!(text.contains("not replicated yet"));
        assert!(!text.contains("SHARD"));
    }

    #[test]
    fn the_replication_view_is_a_table() {
        let text = render_text(&replicated());
        golden("status_replicated.txt", &text);
        for line in text.lines() {
            assert_eq!(line, line.trim_end(), "no trailing blanks");
        }
    }

    #[test]
    fn json_carries_members_and_replicas() {
        let v = render_json(&replicated());
        assert_eq!(v["replicated"], true);
        assert_eq!(v["members"].as_array().unwrap().len(), 3);
        assert_eq!(v["replicas"][0]["role"], "learner");
        assert_eq!(v["replicas"][1]["lag"], 0);
        let v = render_json(&base());
        assert_eq!(v["replicated"], false);
        assert_eq!(v["replicas"].as_array().unwrap().len(), 0);
        assert_eq!(v["node_id"], 1);
    }

    #[test]
    fn unknown_roles_render_as_a_dash() {
        assert_eq!(role_name(99), "-");
        assert_eq!(role_name(ReplicaRole::PreCandidate as i32), "pre-candidate");
    }
}
