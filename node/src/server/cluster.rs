//! The node's place in a cluster: its id, the Raft port, the addresses it advertises, and how
//! it becomes a member (static bootstrap or join).
//!
//! ```text
//!   YAML `cluster:` / flags / env      ─► ClusterSettings (as written)
//!   node_id (or the hostname ordinal)  ─┐
//!                                       ├─► ClusterConfig::resolve ─► ClusterConfig (typed, checked)
//!   grpc_addr                          ─┘        node_id, raft_listen, advertise addresses,
//!                                                Bootstrap::{Single | Initial{members} | Join{seeds}}
//! ```
//!
//! How a node becomes a member, decided once from the configuration:
//!
//! | `initial_members` | `join`  | own id in members | mode                                   |
//! |-------------------|---------|-------------------|----------------------------------------|
//! | empty             | empty   | -                 | `Single`: a one-member cluster of itself |
//! | given             | empty   | yes               | `Initial`: static bootstrap of all members |
//! | given             | empty   | no                | `Join`, through the members' addresses |
//! | empty or given    | given   | no                | `Join`, through the `join` addresses   |
//! | given             | given   | yes               | error: both bootstrap and join         |
//!
//! A node outside the initial members joins through their addresses so that one StatefulSet
//! pod template (every pod is given the same `initial_members`) serves both the first pods
//! and the ones a scale-out adds later. A wrong node id is still caught where it can be: a
//! node whose own advertised Raft address is listed under another id is refused.
//!
//! Addresses are `host:port` strings ([`PeerAddr`]): DNS names are allowed and are not
//! resolved here (a pod's name resolves only once the headless Service publishes it).
//!
//! The node id derived from a hostname is the StatefulSet ordinal plus one
//! ([`node_id_from_hostname`]: `strata-2` is node 3), since Raft reserves id 0 for "no node".

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::config::ConfigError;

/// The default Raft (internal) port.
pub const DEFAULT_RAFT_PORT: u16 = 20170;

/// The `cluster:` section of the node configuration, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// Take the node id from this host's name (`<name>-<ordinal>` is node ordinal + 1)
    /// instead of `node_id`.
    pub node_id_from_hostname: bool,
    /// The host name to derive the node id from; default: the kernel's host name (in a
    /// StatefulSet pod, the pod's name).
    pub hostname: Option<String>,
    /// Address the internal Raft port listens on (peers only; port 0 picks a free port).
    pub raft_addr: SocketAddr,
    /// The Raft address peers dial, `host:port` (a pod's DNS name in Kubernetes). Default:
    /// this node's entry in `initial_members`, else `raft_addr` when it names a host.
    pub advertise_raft_addr: Option<PeerAddr>,
    /// The gRPC address clients and gateways dial, `host:port`. Default: `grpc_addr` when
    /// it names a host, else the host of the advertised Raft address with `grpc_addr`'s
    /// port.
    pub advertise_grpc_addr: Option<PeerAddr>,
    /// The members a new cluster starts with, `"<id>=<host>:<raft port>"` each.
    pub initial_members: Vec<Member>,
    /// Raft addresses of nodes of an existing cluster, for a node added later.
    pub join: Vec<PeerAddr>,
    /// One Raft tick in milliseconds: heartbeats go every 2 ticks, an election starts after
    /// 10 to 20 ticks without a leader. Every node of a cluster should use the same value.
    pub raft_tick_ms: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            node_id_from_hostname: false,
            hostname: None,
            raft_addr: SocketAddr::from(([127, 0, 0, 1], DEFAULT_RAFT_PORT)),
            advertise_raft_addr: None,
            advertise_grpc_addr: None,
            initial_members: Vec::new(),
            join: Vec::new(),
            raft_tick_ms: 100,
        }
    }
}

/// A `host:port` address that may name a DNS host; checked when parsed, not resolved.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PeerAddr(String);

impl PeerAddr {
    /// The host part (a DNS name, an IPv4 address, or an IPv6 address in brackets).
    pub fn host(&self) -> &str {
        self.split().0
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.split().1
    }

    /// The address as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The same host with another port.
    pub fn with_port(&self, port: u16) -> PeerAddr {
        PeerAddr(format!("{}:{port}", self.host()))
    }

    fn split(&self) -> (&str, u16) {
        // Checked in `from_str`: a colon is there and the port parses.
        match self.0.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().unwrap_or(0)),
            None => (&self.0, 0),
        }
    }

    /// The address of a socket address that names a host (not 0.0.0.0 or ::).
    pub fn of_socket(addr: SocketAddr) -> Option<PeerAddr> {
        (!addr.ip().is_unspecified()).then(|| PeerAddr(addr.to_string()))
    }

    /// A key that compares two spellings of one host equal (DNS names are case-insensitive).
    fn normalized(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl FromStr for PeerAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(format!("{s:?} is not host:port"));
        };
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?}: the port {port:?} is not a number from 1 to 65535"))?;
        if port == 0 {
            return Err(format!("{s:?}: port 0 cannot be dialled"));
        }
        let valid_host = if let Some(inner) = host.strip_prefix('[') {
            inner
                .strip_suffix(']')
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
        } else {
            !host.is_empty()
                && host.len() <= 253
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        };
        if !valid_host {
            return Err(format!(
                "{s:?}: {host:?} is not a host name or address (IPv6 goes in brackets)"
            ));
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified())
        {
            return Err(format!("{s:?}: an unspecified address cannot be dialled"));
        }
        Ok(PeerAddr(s.to_owned()))
    }
}

impl TryFrom<String> for PeerAddr {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<PeerAddr> for String {
    fn from(a: PeerAddr) -> String {
        a.0
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One initial member: `<id>=<host>:<raft port>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Member {
    /// The member's node id.
    pub id: u64,
    /// Its Raft address.
    pub raft_addr: PeerAddr,
}

impl FromStr for Member {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let Some((id, addr)) = s.trim().split_once('=') else {
            return Err(format!("{s:?} is not <id>=<host>:<port>"));
        };
        let id = id
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: the node id {id:?} is not a number"))?;
        Ok(Member {
            id,
            raft_addr: addr.parse()?,
        })
    }
}

impl TryFrom<String> for Member {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Member> for String {
    fn from(m: Member) -> String {
        format!("{}={}", m.id, m.raft_addr)
    }
}

/// Parses a comma-separated list (`a,b,c`; blanks ignored) with `T`'s `FromStr`.
pub fn parse_list<T: FromStr<Err = String>>(s: &str) -> Result<Vec<T>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(T::from_str)
        .collect()
}

/// A clap value list: one flag value `1=a:1,2=b:2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberList(pub Vec<Member>);

impl FromStr for MemberList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        parse_list(s).map(MemberList)
    }
}

/// A clap value list: one flag value `a:1,b:2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrList(pub Vec<PeerAddr>);

impl FromStr for AddrList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        parse_list(s).map(AddrList)
    }
}

/// How this node becomes a member of its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// No members and no join addresses: a one-member cluster of this node alone.
    Single,
    /// Static bootstrap: this node is one of `members` (id -> Raft address), and on fresh
    /// data the cluster starts with exactly them.
    Initial {
        /// Every initial member, this node included.
        members: BTreeMap<u64, PeerAddr>,
    },
    /// A node added to a running cluster: it asks these nodes to add it.
    Join {
        /// Raft addresses of existing members.
        seeds: Vec<PeerAddr>,
    },
}

/// The node's cluster identity and membership configuration, resolved and checked: what
/// the Raft layer is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's id (at least 1).
    pub node_id: u64,
    /// Where the Raft port listens.
    pub raft_listen: SocketAddr,
    /// The Raft address peers dial.
    pub advertise_raft_addr: PeerAddr,
    /// The gRPC address clients and other gateways dial.
    pub advertise_grpc_addr: PeerAddr,
    /// How the node becomes a member.
    pub bootstrap: Bootstrap,
}

impl ClusterConfig {
    /// Resolves `settings` for node `node_id` whose gRPC port listens on `grpc_listen`.
    /// Errors name the setting at fault.
    pub fn resolve(
        node_id: u64,
        grpc_listen: SocketAddr,
        http_listen: SocketAddr,
        settings: &ClusterSettings,
    ) -> Result<ClusterConfig, ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if node_id == 0 {
            return invalid(
                "node_id = 0: node ids start at 1 (Raft reserves 0 for \"no node\")".into(),
            );
        }
        let raft = settings.raft_addr;
        for (name, other) in [("grpc_addr", grpc_listen), ("http_addr", http_listen)] {
            if raft.port() != 0 && raft.port() == other.port() && same_host(raft, other) {
                return invalid(format!(
                    "cluster.raft_addr = {raft}: the Raft port must differ from {name} ({other})"
                ));
            }
        }

        let mut members = BTreeMap::new();
        let mut member_addrs = BTreeMap::new();
        for m in &settings.initial_members {
            if m.id == 0 {
                return invalid(format!(
                    "cluster.initial_members: {}={}: node ids start at 1",
                    m.id, m.raft_addr
                ));
            }
            if members.insert(m.id, m.raft_addr.clone()).is_some() {
                return invalid(format!(
                    "cluster.initial_members: node id {} is listed twice",
                    m.id
                ));
            }
            if let Some(other) = member_addrs.insert(m.raft_addr.normalized(), m.id) {
                return invalid(format!(
                    "cluster.initial_members: nodes {other} and {} have the same address {}",
                    m.id, m.raft_addr
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for a in &settings.join {
            if !seen.insert(a.normalized()) {
                return invalid(format!("cluster.join: {a} is listed twice"));
            }
        }

        let own_member = members.get(&node_id).cloned();
        if own_member.is_some() && !settings.join.is_empty() {
            return invalid(format!(
                "both cluster.initial_members (which lists node {node_id}) and cluster.join are given: \
                 an initial member bootstraps the cluster, a node added later joins it; give one"
            ));
        }
        let advertise_raft_addr = match (&settings.advertise_raft_addr, &own_member) {
            (Some(a), Some(m)) if a.normalized() != m.normalized() => {
                return invalid(format!(
                    "cluster.advertise_raft_addr = {a}, but cluster.initial_members lists node {node_id} at {m}: they must agree"
                ));
            }
            (Some(a), _) => Some(a.clone()),
            (None, Some(m)) => Some(m.clone()),
            (None, None) => PeerAddr::of_socket(raft),
        };
        let clustered = members.len() > 1
            || (own_member.is_none() && !members.is_empty())
            || !settings.join.is_empty();
        let advertise_raft_addr = match advertise_raft_addr {
            Some(a) => a,
            None if clustered => {
                return invalid(format!(
                    "cluster.advertise_raft_addr is needed: cluster.raft_addr = {raft} names no host peers can dial"
                ));
            }
            // A node alone needs nobody to dial it; keep the listen port for the record.
            None => PeerAddr(format!("127.0.0.1:{}", raft.port())),
        };
        if let Some(&other) = member_addrs.get(&advertise_raft_addr.normalized()) {
            if other != node_id {
                return invalid(format!(
                    "cluster.initial_members lists this node's address {advertise_raft_addr} as node {other}, \
                     but this node is node {node_id}: is the node id right?"
                ));
            }
        }
        if settings
            .join
            .iter()
            .any(|a| a.normalized() == advertise_raft_addr.normalized())
        {
            return invalid(format!(
                "cluster.join lists this node's own address {advertise_raft_addr}: a node joins through others"
            ));
        }
        let advertise_grpc_addr = match &settings.advertise_grpc_addr {
            Some(a) => a.clone(),
            None => PeerAddr::of_socket(grpc_listen)
                .unwrap_or_else(|| advertise_raft_addr.with_port(grpc_listen.port())),
        };

        let bootstrap = if !settings.join.is_empty() {
            Bootstrap::Join {
                seeds: settings.join.clone(),
            }
        } else if members.is_empty() {
            Bootstrap::Single
        } else if own_member.is_some() {
            Bootstrap::Initial { members }
        } else {
            Bootstrap::Join {
                seeds: members.into_values().collect(),
            }
        };
        Ok(ClusterConfig {
            node_id,
            raft_listen: raft,
            advertise_raft_addr,
            advertise_grpc_addr,
            bootstrap,
        })
    }

    /// The members this node knows of from its configuration: the initial members, or
    /// itself alone (a joining node knows only itself until it is added).
    pub fn configured_members(&self) -> BTreeMap<u64, PeerAddr> {
        match &self.bootstrap {
            Bootstrap::Initial { members } => members.clone(),
            Bootstrap::Single | Bootstrap::Join { .. } => {
                BTreeMap::from([(self.node_id, self.advertise_raft_addr.clone())])
            }
        }
    }

    /// The same configuration after the Raft port was bound to `bound` (it differs when
    /// `raft_listen` asked for port 0): an advertised address taken from the listen address
    /// gets the real port.
    pub fn with_bound_raft_addr(mut self, bound: SocketAddr) -> ClusterConfig {
        if self.raft_listen.port() == 0 && self.advertise_raft_addr.port() == 0 {
            self.advertise_raft_addr = self.advertise_raft_addr.with_port(bound.port());
        }
        self.raft_listen = bound;
        self
    }
}

fn same_host(a: SocketAddr, b: SocketAddr) -> bool {
    a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified()
}

/// The node id of a StatefulSet pod named `hostname`: its ordinal plus one (`strata-2` ->
/// 3). A fully qualified name counts by its first label.
pub fn node_id_from_hostname(hostname: &str) -> Result<u64, ConfigError> {
    let name = hostname.trim();
    let first = name.split('.').next().unwrap_or_default();
    let ordinal = first
        .rsplit_once('-')
        .map(|(_, o)| o)
        .filter(|o| !o.is_empty() && o.bytes().all(|b| b.is_ascii_digit()));
    let Some(ordinal) = ordinal else {
        return Err(ConfigError::Invalid(format!(
            "cluster.node_id_from_hostname: the host name {name:?} does not end in -<ordinal> \
             (as a StatefulSet pod's does, for example strata-2); set node_id instead"
        )));
    };
    ordinal
        .parse::<u64>()
        .ok()
        .and_then(|o| o.checked_add(1))
        .ok_or_else(|| {
            ConfigError::Invalid(format!(
                "cluster.node_id_from_hostname: the ordinal in {name:?} is too large"
            ))
        })
}

/// This machine's host name: `/proc/sys/kernel/hostname` (in a pod, the pod's name), else
/// the `HOSTNAME` environment variable.
pub fn system_hostname() -> Result<String, ConfigError> {
    let from_proc = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    from_proc
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .ok_or_else(|| {
            ConfigError::Invalid(
                "cluster.node_id_from_hostname: cannot read the host name (set cluster.hostname)"
                    .into(),
            )
        })
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
