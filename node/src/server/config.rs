//! Node configuration: a YAML file (optional), overridden by command-line flags and
//! `STRATA_*` environment variables.
//!
//! ```text
//!   defaults  <-  --config FILE (YAML)  <-  flags / env (clap)
//! ```
//!
//! Every field and its default is documented in `docs/configuration.md`; unknown fields in
//! the file are rejected so that a typo is an error, not a silently ignored setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::cluster::{
    node_id_from_hostname, system_hostname, AddrList, ClusterConfig, ClusterSettings, MemberList,
};
use crate::lsm::{Compression, Options};
use crate::txn::TxnConfig;

/// The whole configuration of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Directory holding the engine (`db/`) and the timestamp oracle (`tso`).
    pub data_dir: PathBuf,
    /// Address the gRPC API listens on (port 0 picks a free port).
    pub grpc_addr: SocketAddr,
    /// Address of the HTTP port: `/metrics`, `/healthz`, `/readyz`, `/`.
    pub http_addr: SocketAddr,
    /// This node's id (at least 1; see `cluster.node_id_from_hostname`).
    pub node_id: u64,
    /// The node's place in a cluster: Raft port, advertised addresses, initial members,
    /// join addresses.
    pub cluster: ClusterSettings,
    /// Storage engine settings.
    pub engine: EngineConfig,
    /// Transaction settings.
    pub txn: TxnSettings,
    /// Logging settings.
    pub log: LogConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("./strata-data"),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 7379)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 7380)),
            node_id: 1,
            cluster: ClusterSettings::default(),
            engine: EngineConfig::default(),
            txn: TxnSettings::default(),
            log: LogConfig::default(),
        }
    }
}

/// Storage engine settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Size of one memtable, in MiB.
    pub memtable_mb: u64,
    /// Size of the block cache, in MiB.
    pub block_cache_mb: u64,
    /// Block compression.
    pub compression: CompressionConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            memtable_mb: 64,
            block_cache_mb: 256,
            compression: CompressionConfig::None,
        }
    }
}

/// Block compression, as spelled in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CompressionConfig {
    /// No compression.
    #[default]
    None,
    /// LZ4.
    Lz4,
}

/// Transaction settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TxnSettings {
    /// How long a committing transaction's locks stay valid without progress, in ms.
    pub lock_ttl_ms: u64,
    /// How long a request waits on a locked key before failing with KEY_LOCKED, in ms.
    pub lock_wait_ms: u64,
    /// Interactive transactions idle this long (seconds) are rolled back.
    pub idle_timeout_s: u64,
    /// How long old versions are kept for reads before GC may collect them, in seconds
    /// (at least 1).
    pub gc_life_time_s: u64,
    /// The most memory all open transactions of the node may hold together, in MiB.
    pub max_open_txn_mb: u64,
    /// How often the GC task resolves stale locks, advances the safe point and sweeps, in
    /// ms.
    pub gc_interval_ms: u64,
    /// Transactions older than this (seconds since their start) are rolled back even if
    /// heartbeats keep them alive.
    pub max_lifetime_s: u64,
    /// Transactions of at most this many KiB of mutations commit in one phase (one Raft
    /// proposal); 0 turns one-phase commits off.
    pub one_pc_max_kb: u64,
}

impl Default for TxnSettings {
    fn default() -> Self {
        TxnSettings {
            lock_ttl_ms: 3_000,
            lock_wait_ms: 1_000,
            idle_timeout_s: 60,
            gc_life_time_s: 600,
            max_open_txn_mb: strata_proto::limits::MAX_OPEN_TXN_BYTES >> 20,
            gc_interval_ms: 10_000,
            max_lifetime_s: 600,
            one_pc_max_kb: 256,
        }
    }
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter directive, for example `info` or `strata=debug,info`.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Command-line flags (each also read from a `STRATA_*` environment variable). A flag that
/// is given overrides the configuration file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// YAML configuration file.
    #[arg(long = "config", env = "STRATA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory.
    #[arg(long, env = "STRATA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address.
    #[arg(long, env = "STRATA_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// HTTP (metrics, health) listen address.
    #[arg(long, env = "STRATA_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Node id (at least 1).
    #[arg(long, env = "STRATA_NODE_ID", conflicts_with = "node_id_from_hostname")]
    pub node_id: Option<u64>,
    /// Take the node id from the host name's StatefulSet ordinal: `strata-2` is node 3.
    #[arg(long, env = "STRATA_NODE_ID_FROM_HOSTNAME")]
    pub node_id_from_hostname: bool,
    /// The host name `--node-id-from-hostname` reads (default: this machine's).
    #[arg(long, env = "STRATA_HOSTNAME", value_name = "NAME")]
    pub hostname: Option<String>,
    /// Internal Raft listen address (peers only).
    #[arg(long, env = "STRATA_RAFT_ADDR")]
    pub raft_addr: Option<SocketAddr>,
    /// The Raft address peers dial, HOST:PORT (a pod's DNS name in Kubernetes).
    #[arg(long, env = "STRATA_ADVERTISE_RAFT_ADDR", value_name = "HOST:PORT")]
    pub advertise_raft_addr: Option<super::cluster::PeerAddr>,
    /// The gRPC address clients dial, HOST:PORT.
    #[arg(long, env = "STRATA_ADVERTISE_GRPC_ADDR", value_name = "HOST:PORT")]
    pub advertise_grpc_addr: Option<super::cluster::PeerAddr>,
    /// The members a new cluster starts with: ID=HOST:RAFT_PORT,... (replaces the file's list).
    #[arg(long, env = "STRATA_INITIAL_MEMBERS", value_name = "ID=HOST:PORT,...")]
    pub initial_members: Option<MemberList>,
    /// Raft addresses of an existing cluster's nodes, for a node added later: HOST:PORT,...
    #[arg(long, env = "STRATA_JOIN", value_name = "HOST:PORT,...")]
    pub join: Option<AddrList>,
    /// One Raft tick in milliseconds (heartbeat 2 ticks, election 10-20 ticks).
    #[arg(long, env = "STRATA_RAFT_TICK_MS", value_name = "MS")]
    pub raft_tick_ms: Option<u64>,
    /// Memtable size in MiB.
    #[arg(long, env = "STRATA_MEMTABLE_MB")]
    pub memtable_mb: Option<u64>,
    /// Block cache size in MiB.
    #[arg(long, env = "STRATA_BLOCK_CACHE_MB")]
    pub block_cache_mb: Option<u64>,
    /// Block compression.
    #[arg(long, env = "STRATA_COMPRESSION")]
    pub compression: Option<CompressionConfig>,
    /// Lock time to live in ms.
    #[arg(long, env = "STRATA_LOCK_TTL_MS")]
    pub lock_ttl_ms: Option<u64>,
    /// Lock wait in ms.
    #[arg(long, env = "STRATA_LOCK_WAIT_MS")]
    pub lock_wait_ms: Option<u64>,
    /// Idle transaction timeout in seconds.
    #[arg(long, env = "STRATA_IDLE_TIMEOUT_S")]
    pub idle_timeout_s: Option<u64>,
    /// GC life time in seconds.
    #[arg(long, env = "STRATA_GC_LIFE_TIME_S")]
    pub gc_life_time_s: Option<u64>,
    /// Memory budget of all open transactions, in MiB.
    #[arg(long, env = "STRATA_MAX_OPEN_TXN_MB")]
    pub max_open_txn_mb: Option<u64>,
    /// GC interval in ms.
    #[arg(long, env = "STRATA_GC_INTERVAL_MS")]
    pub gc_interval_ms: Option<u64>,
    /// Largest transaction committed in one phase, in KiB (0: always two phases).
    #[arg(long, env = "STRATA_ONE_PC_MAX_KB")]
    pub one_pc_max_kb: Option<u64>,
    /// Longest a transaction may live, in seconds.
    #[arg(long, env = "STRATA_MAX_LIFETIME_S")]
    pub max_lifetime_s: Option<u64>,
    /// Log filter.
    #[arg(long, env = "STRATA_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log format.
    #[arg(long, env = "STRATA_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid configuration YAML.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        source: serde_yaml::Error,
    },
    /// A setting has a value the node cannot run with.
    #[error("invalid setting {0}")]
    Invalid(String),
}

impl NodeConfig {
    /// The defaults with `data_dir`, and every listener (gRPC, HTTP, Raft) on a free port
    /// of 127.0.0.1: for tests and programs that embed a node.
    pub fn on_free_ports(data_dir: impl Into<PathBuf>) -> NodeConfig {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut config = NodeConfig {
            data_dir: data_dir.into(),
            grpc_addr: any,
            http_addr: any,
            ..NodeConfig::default()
        };
        config.cluster.raft_addr = any;
        config
    }

    /// Parses a YAML document (an empty document gives the defaults).
    pub fn from_yaml(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
        if text.trim().is_empty() {
            return Ok(NodeConfig::default());
        }
        serde_yaml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The configuration file named by `args` (or the defaults), with `args` applied on top.
    pub fn load(args: &ConfigArgs) -> Result<NodeConfig, ConfigError> {
        let mut config = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                NodeConfig::from_yaml(&text, path)?
            }
            None => NodeConfig::default(),
        };
        config.apply(args);
        config.resolve_node_id()?;
        config.validate()?;
        Ok(config)
    }

    /// With `cluster.node_id_from_hostname`, sets `node_id` from the host name's ordinal.
    pub fn resolve_node_id(&mut self) -> Result<(), ConfigError> {
        if self.cluster.node_id_from_hostname {
            let hostname = match &self.cluster.hostname {
                Some(h) => h.clone(),
                None => system_hostname()?,
            };
            self.node_id = node_id_from_hostname(&hostname)?;
        }
        Ok(())
    }

    /// The node's resolved and checked cluster configuration (see
    /// [`ClusterConfig::resolve`]).
    pub fn cluster_config(&self) -> Result<ClusterConfig, ConfigError> {
        ClusterConfig::resolve(self.node_id, self.grpc_addr, self.http_addr, &self.cluster)
    }

    /// Overrides fields with the flags that are set.
    pub fn apply(&mut self, args: &ConfigArgs) {
        fn set<T: Clone>(field: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *field = v.clone();
            }
        }
        set(&mut self.data_dir, &args.data_dir);
        set(&mut self.grpc_addr, &args.grpc_addr);
        set(&mut self.http_addr, &args.http_addr);
        set(&mut self.node_id, &args.node_id);
        if args.node_id_from_hostname {
            self.cluster.node_id_from_hostname = true;
        } else if args.node_id.is_some() {
            // An explicit id on the command line wins over the file's hostname setting.
            self.cluster.node_id_from_hostname = false;
        }
        if let Some(h) = &args.hostname {
            self.cluster.hostname = Some(h.clone());
        }
        set(&mut self.cluster.raft_addr, &args.raft_addr);
        if let Some(a) = &args.advertise_raft_addr {
            self.cluster.advertise_raft_addr = Some(a.clone());
        }
        if let Some(a) = &args.advertise_grpc_addr {
            self.cluster.advertise_grpc_addr = Some(a.clone());
        }
        if let Some(MemberList(m)) = &args.initial_members {
            self.cluster.initial_members = m.clone();
        }
        if let Some(AddrList(j)) = &args.join {
            self.cluster.join = j.clone();
        }
        set(&mut self.cluster.raft_tick_ms, &args.raft_tick_ms);
        set(&mut self.engine.memtable_mb, &args.memtable_mb);
        set(&mut self.engine.block_cache_mb, &args.block_cache_mb);
        set(&mut self.engine.compression, &args.compression);
        set(&mut self.txn.lock_ttl_ms, &args.lock_ttl_ms);
        set(&mut self.txn.lock_wait_ms, &args.lock_wait_ms);
        set(&mut self.txn.idle_timeout_s, &args.idle_timeout_s);
        set(&mut self.txn.gc_life_time_s, &args.gc_life_time_s);
        set(&mut self.txn.max_open_txn_mb, &args.max_open_txn_mb);
        set(&mut self.txn.gc_interval_ms, &args.gc_interval_ms);
        set(&mut self.txn.max_lifetime_s, &args.max_lifetime_s);
        set(&mut self.txn.one_pc_max_kb, &args.one_pc_max_kb);
        set(&mut self.log.level, &args.log_level);
        set(&mut self.log.format, &args.log_format);
    }

    /// Checks values the node cannot run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=10_000).contains(&self.cluster.raft_tick_ms) {
            return Err(ConfigError::Invalid(format!(
                "cluster.raft_tick_ms = {}: must be 1..=10000",
                self.cluster.raft_tick_ms
            )));
        }
        if self.engine.memtable_mb == 0 || self.engine.memtable_mb > 4096 {
            return Err(ConfigError::Invalid(format!(
                "engine.memtable_mb = {}: must be 1..=4096",
                self.engine.memtable_mb
            )));
        }
        if self.engine.block_cache_mb > 1 << 20 {
            return Err(ConfigError::Invalid(format!(
                "engine.block_cache_mb = {}: must be at most 1048576",
                self.engine.block_cache_mb
            )));
        }
        if self.txn.idle_timeout_s == 0 {
            return Err(ConfigError::Invalid(
                "txn.idle_timeout_s = 0: must be at least 1".into(),
            ));
        }
        if self.txn.max_open_txn_mb == 0 || self.txn.max_open_txn_mb > 1 << 20 {
            return Err(ConfigError::Invalid(format!(
                "txn.max_open_txn_mb = {}: must be 1..=1048576",
                self.txn.max_open_txn_mb
            )));
        }
        if self.txn.lock_ttl_ms == 0 {
            return Err(ConfigError::Invalid(
                "txn.lock_ttl_ms = 0: must be at least 1".into(),
            ));
        }
        if self.txn.gc_life_time_s == 0 {
            // A zero life time lets GC collect the versions a transaction that has just
            // started reads, and the commit records its locks' readers resolve by.
            return Err(ConfigError::Invalid(
                "txn.gc_life_time_s = 0: must be at least 1 (old versions must outlive the transactions reading them)".into(),
            ));
        }
        if self.txn.gc_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "txn.gc_interval_ms = 0: must be at least 1".into(),
            ));
        }
        if self.txn.max_lifetime_s == 0 {
            return Err(ConfigError::Invalid(
                "txn.max_lifetime_s = 0: must be at least 1".into(),
            ));
        }
        if self.node_id > crate::txn::txn_id::MAX_NODE_ID {
            return Err(ConfigError::Invalid(format!(
                "node_id = {}: must be at most {} (it is part of every transaction id)",
                self.node_id,
                crate::txn::txn_id::MAX_NODE_ID
            )));
        }
        for m in &self.cluster.initial_members {
            if m.id > crate::txn::txn_id::MAX_NODE_ID {
                return Err(ConfigError::Invalid(format!(
                    "cluster.initial_members: node id {} is above {}",
                    m.id,
                    crate::txn::txn_id::MAX_NODE_ID
                )));
            }
        }
        self.cluster_config()?;
        Ok(())
    }

    /// The engine options this configuration asks for (WAL on).
    pub fn engine_options(&self) -> Options {
        let mb = |n: u64| usize::try_from(n << 20).unwrap_or(usize::MAX);
        Options {
            wal: true,
            create_if_missing: true,
            memtable_size: mb(self.engine.memtable_mb),
            block_cache_bytes: mb(self.engine.block_cache_mb),
            compression: match self.engine.compression {
                CompressionConfig::None => Compression::None,
                CompressionConfig::Lz4 => Compression::Lz4,
            },
            // Commit-record reads skip the tables that lack the key.
            prefix_extractor: Some(std::sync::Arc::new(crate::mvcc::key::MvccPrefixExtractor)),
            ..Options::default()
        }
    }

    /// One Raft tick, in milliseconds.
    pub fn raft_tick_ms(&self) -> u64 {
        self.cluster.raft_tick_ms
    }

    /// The transaction coordinator's settings.
    pub fn txn_config(&self) -> TxnConfig {
        TxnConfig {
            lock_ttl_ms: self.txn.lock_ttl_ms,
            lock_wait: Duration::from_millis(self.txn.lock_wait_ms),
            idle_timeout: Duration::from_secs(self.txn.idle_timeout_s),
            max_keys: usize::try_from(strata_proto::limits::MAX_TXN_KEYS).unwrap_or(usize::MAX),
            max_bytes: usize::try_from(strata_proto::limits::MAX_TXN_BYTES).unwrap_or(usize::MAX),
            max_open_txn_bytes: usize::try_from(self.txn.max_open_txn_mb << 20)
                .unwrap_or(usize::MAX),
            max_response_bytes: usize::try_from(strata_proto::limits::MAX_RESPONSE_BYTES)
                .unwrap_or(usize::MAX),
            gc_life_time: Duration::from_secs(self.txn.gc_life_time_s),
            max_lifetime: Duration::from_secs(self.txn.max_lifetime_s),
            one_pc_max_bytes: usize::try_from(self.txn.one_pc_max_kb.saturating_mul(1024))
                .unwrap_or(usize::MAX),
            ..TxnConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_yaml_gives_defaults() {
        let c = NodeConfig::from_yaml("", Path::new("x.yaml")).unwrap();
        assert_eq!(c, NodeConfig::default());
        assert_eq!(c.grpc_addr.port(), 7379);
        assert_eq!(c.engine.block_cache_mb, 256);
        assert_eq!(c.txn.gc_life_time_s, 600);
    }

    #[test]
    fn yaml_sets_nested_fields_and_keeps_other_defaults() {
        let yaml = "data_dir: /var/lib/strata\nnode_id: 7\nengine:\n  compression: lz4\n  memtable_mb: 16\ntxn:\n  lock_wait_ms: 50\nlog:\n  format: json\n";
        let c = NodeConfig::from_yaml(yaml, Path::new("x.yaml")).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/strata"));
        assert_eq!(c.node_id, 7);
        assert_eq!(c.engine.compression, CompressionConfig::Lz4);
        assert_eq!(c.engine.memtable_mb, 16);
        assert_eq!(c.engine.block_cache_mb, 256);
        assert_eq!(c.txn.lock_wait_ms, 50);
        assert_eq!(c.txn.lock_ttl_ms, 3000);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, "info");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = NodeConfig::from_yaml("grpc_adr: 1.2.3.4:5\n", Path::new("x.yaml")).unwrap_err();
        assert!(err.to_string().contains("grpc_adr"), "{err}");
        let err =
            NodeConfig::from_yaml("engine:\n  memtable: 3\n", Path::new("x.yaml")).unwrap_err();
        assert!(err.to_string().contains("memtable"), "{err}");
        assert!(NodeConfig::from_yaml("engine:\n  compression: zstd\n", Path::new("x")).is_err());
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.yaml");
        std::fs::write(
            &path,
            "node_id: 3\ngrpc_addr: 0.0.0.0:9000\nlog:\n  level: debug\n",
        )
        .unwrap();
        let args = ConfigArgs {
            config: Some(path),
            grpc_addr: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: Some(PathBuf::from("/tmp/d")),
            ..ConfigArgs::default()
        };
        let c = NodeConfig::load(&args).unwrap();
        assert_eq!(c.node_id, 3);
        assert_eq!(c.grpc_addr, "127.0.0.1:0".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("/tmp/d"));
        assert_eq!(c.log.level, "debug");
    }

    #[test]
    fn flags_parse_with_clap() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            config: ConfigArgs,
        }
        let cli = Cli::try_parse_from([
            "strata-node",
            "--grpc-addr",
            "127.0.0.1:1",
            "--compression",
            "lz4",
            "--log-format",
            "json",
            "--idle-timeout-s",
            "5",
        ])
        .unwrap();
        let mut c = NodeConfig::default();
        c.apply(&cli.config);
        assert_eq!(c.grpc_addr.port(), 1);
        assert_eq!(c.engine.compression, CompressionConfig::Lz4);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.txn.idle_timeout_s, 5);
        assert!(Cli::try_parse_from(["strata-node", "--grpc-addr", "nonsense"]).is_err());
        assert!(Cli::try_parse_from(["strata-node", "--compression", "zstd"]).is_err());
    }

    #[test]
    fn a_missing_file_and_bad_values_are_errors() {
        let args = ConfigArgs {
            config: Some(PathBuf::from("/nonexistent/strata.yaml")),
            ..ConfigArgs::default()
        };
        assert!(matches!(
            NodeConfig::load(&args),
            Err(ConfigError::Read { .. })
        ));
        let args = ConfigArgs {
            memtable_mb: Some(0),
            ..ConfigArgs::default()
        };
        assert!(matches!(
            NodeConfig::load(&args),
            Err(ConfigError::Invalid(_))
        ));
    }

    #[test]
    fn a_zero_gc_life_time_is_refused_with_its_name() {
        let args = ConfigArgs {
            gc_life_time_s: Some(0),
            ..ConfigArgs::default()
        };
        let err = NodeConfig::load(&args).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid(_)));
        assert!(err.to_string().contains("txn.gc_life_time_s = 0"), "{err}");
        let err = NodeConfig::from_yaml("txn:\n  gc_life_time_s: 0\n", Path::new("x"))
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("gc_life_time_s"), "{err}");
        let too_big = NodeConfig {
            node_id: 1 << 16,
            ..NodeConfig::default()
        };
        assert!(too_big
            .validate()
            .unwrap_err()
            .to_string()
            .contains("node_id"));
    }

    #[test]
    fn cluster_flags_parse_and_resolve() {
        use super::super::cluster::Bootstrap;
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            config: ConfigArgs,
        }
        let cli = Cli::try_parse_from([
            "strata-node",
            "--node-id-from-hostname",
            "--hostname",
            "strata-1",
            "--grpc-addr",
            "0.0.0.0:7379",
            "--raft-addr",
            "0.0.0.0:20170",
            "--initial-members",
            "1=strata-0.strata-peers.ns.svc:20170,2=strata-1.strata-peers.ns.svc:20170,3=strata-2.strata-peers.ns.svc:20170",
        ])
        .unwrap();
        let c = NodeConfig::load(&cli.config).unwrap();
        assert_eq!(c.node_id, 2);
        let cluster = c.cluster_config().unwrap();
        assert!(
            matches!(cluster.bootstrap, Bootstrap::Initial { ref members } if members.len() == 3)
        );
        assert_eq!(
            cluster.advertise_raft_addr.as_str(),
            "strata-1.strata-peers.ns.svc:20170"
        );
        // --node-id and --node-id-from-hostname exclude each other.
        assert!(
            Cli::try_parse_from(["strata-node", "--node-id", "2", "--node-id-from-hostname"])
                .is_err()
        );
        // A bad member is a parse error naming it.
        let err =
            Cli::try_parse_from(["strata-node", "--initial-members", "1=a:1,2=b"]).unwrap_err();
        assert!(err.to_string().contains("\"b\" is not host:port"), "{err}");
        // Join.
        let cli = Cli::try_parse_from([
            "strata-node",
            "--node-id",
            "4",
            "--advertise-raft-addr",
            "strata-3.p:20170",
            "--join",
            "strata-0.p:20170,strata-1.p:20170",
        ])
        .unwrap();
        let c = NodeConfig::load(&cli.config).unwrap();
        assert!(
            matches!(c.cluster_config().unwrap().bootstrap, Bootstrap::Join { ref seeds } if seeds.len() == 2)
        );
        // Both: refused at load.
        let args = ConfigArgs {
            initial_members: Some("1=a:1".parse().unwrap()),
            join: Some("b:1".parse().unwrap()),
            ..ConfigArgs::default()
        };
        let err = NodeConfig::load(&args).unwrap_err().to_string();
        assert!(err.contains("both cluster.initial_members"), "{err}");
        // A host name without an ordinal.
        let args = ConfigArgs {
            node_id_from_hostname: true,
            hostname: Some("laptop".into()),
            ..ConfigArgs::default()
        };
        let err = NodeConfig::load(&args).unwrap_err().to_string();
        assert!(err.contains("does not end in -<ordinal>"), "{err}");
    }

    #[test]
    fn the_cluster_section_reads_from_the_file() {
        let yaml = "node_id: 9\ncluster:\n  node_id_from_hostname: true\n  hostname: db-4\n  raft_addr: 127.0.0.1:20175\n  initial_members: [\"5=127.0.0.1:20175\", \"6=127.0.0.1:20176\"]\n";
        let mut c = NodeConfig::from_yaml(yaml, Path::new("x")).unwrap();
        c.resolve_node_id().unwrap();
        assert_eq!(
            c.node_id, 5,
            "the hostname ordinal replaces the file's node_id"
        );
        c.validate().unwrap();
        assert_eq!(
            c.cluster_config().unwrap().advertise_raft_addr.as_str(),
            "127.0.0.1:20175"
        );
        // An explicit --node-id wins over the file's hostname setting.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.yaml");
        std::fs::write(&path, yaml).unwrap();
        let c = NodeConfig::load(&ConfigArgs {
            config: Some(path),
            node_id: Some(6),
            ..ConfigArgs::default()
        })
        .unwrap();
        assert_eq!(c.node_id, 6);
        assert!(NodeConfig::from_yaml("cluster:\n  joinn: []\n", Path::new("x")).is_err());
    }
}
