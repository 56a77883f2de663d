//! The files a node keeps beside its data: its identity, and the addresses it listens on.
//!
//! ```text
//!   <data_dir>/identity.json    {"format":1,"node_id":3,"incarnation":"9f…","created_unix_s":…}
//!                               written once, on the first start; checked on every start
//!   <data_dir>/addresses.json   {"node_id":3,"pid":…,"grpc":"…","http":"…","raft":"…",…}
//!                               rewritten on every start, once all listeners are bound
//! ```
//!
//! Identity: the node id belongs to the data. A node started with another id on the same
//! data directory would present another node's Raft log and replicas as its own, so the
//! start is refused before the engine opens. The `incarnation` is random per data directory:
//! a node whose volume was wiped comes back with its old id (in Kubernetes the id follows the
//! pod's ordinal) but a new incarnation, which is how the cluster can tell a returning node
//! from a new one that reuses the id (it must be removed and re-added as a new member, its
//! replicas rebuilt from snapshots, never trusted to still hold what the old one held).
//! A data directory written before identity files existed (an engine but no identity file) is
//! adopted with the id it is started with.
//!
//! `<data_dir>/removed` marks a node removed from the cluster (written once it sees its own
//! removal): later starts keep its replica retired, until the directory is wiped.
//!
//! Both files are written atomically: a temporary file, fsynced, renamed over the old one,
//! and the directory fsynced, so a reader sees the old file or the new one, never a part.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The identity file's name inside the data directory.
pub const IDENTITY_FILE: &str = "identity.json";
/// The address file's name inside the data directory.
pub const ADDRESS_FILE: &str = "addresses.json";
/// The marker a node writes in its data directory once it was removed from the cluster.
pub const REMOVED_FILE: &str = "removed";
/// The identity file's format version.
const IDENTITY_FORMAT: u32 = 1;

/// Who a data directory belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeIdentity {
    /// Format version of the file.
    pub format: u32,
    /// The node id the data belongs to.
    pub node_id: u64,
    /// Random, fixed for the life of the data directory (hex): a wiped volume gets a new one.
    pub incarnation: String,
    /// When the identity was created, in seconds since the Unix epoch.
    pub created_unix_s: u64,
}

/// An identity that could not be established.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The data belongs to another node id.
    #[error(
        "the data directory {dir} belongs to node {found} (its {IDENTITY_FILE} says so), \
         but this node starts as node {wanted}: a node id never changes for its data; start it \
         as node {found}, or give node {wanted} an empty data directory (it then joins as a new member)"
    )]
    Mismatch {
        /// The data directory.
        dir: PathBuf,
        /// The id on disk.
        found: u64,
        /// The configured id.
        wanted: u64,
    },
    /// The file is not an identity file this version understands.
    #[error("{path}: not a valid identity file ({reason}); it is never rewritten automatically")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The identity found in, or created for, a data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Established {
    /// The identity.
    pub identity: NodeIdentity,
    /// Whether it was created by this start (fresh or pre-identity data).
    pub created: bool,
}

/// Checks `data_dir`'s identity against `node_id`, creating it on the first start.
/// `data_dir` must exist.
pub fn establish(data_dir: &Path, node_id: u64) -> Result<Established, IdentityError> {
    let path = data_dir.join(IDENTITY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let identity: NodeIdentity =
                serde_json::from_slice(&bytes).map_err(|e| IdentityError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            if identity.format != IDENTITY_FORMAT {
                return Err(IdentityError::Corrupt {
                    path,
                    reason: format!("format {} is not {IDENTITY_FORMAT}", identity.format),
                });
            }
            if identity.node_id != node_id {
                return Err(IdentityError::Mismatch {
                    dir: data_dir.to_path_buf(),
                    found: identity.node_id,
                    wanted: node_id,
                });
            }
            Ok(Established {
                identity,
                created: false,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let identity = NodeIdentity {
                format: IDENTITY_FORMAT,
                node_id,
                incarnation: new_incarnation(),
                created_unix_s: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            };
            let mut text =
                serde_json::to_vec_pretty(&identity).map_err(|e| IdentityError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            text.push(b'\n');
            write_atomically(&path, &text).map_err(|source| IdentityError::Io {
                what: "writing",
                path,
                source,
            })?;
            Ok(Established {
                identity,
                created: true,
            })
        }
        Err(source) => Err(IdentityError::Io {
            what: "reading",
            path,
            source,
        }),
    }
}

/// 128 random bits as hex, from the standard library's OS-seeded hasher keys.
fn new_incarnation() -> String {
    let word = |salt: u64| {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.write_u32(std::process::id());
        h.finish()
    };
    format!("{:016x}{:016x}", word(1), word(2))
}

/// What a running node listens on, as `<data_dir>/addresses.json` and the stdout line say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundAddresses {
    /// The node id.
    pub node_id: u64,
    /// The node process.
    pub pid: u32,
    /// The gRPC listener.
    pub grpc: SocketAddr,
    /// The HTTP listener.
    pub http: SocketAddr,
    /// The Raft listener.
    pub raft: SocketAddr,
    /// The gRPC address advertised to clients.
    pub advertise_grpc: String,
    /// The Raft address advertised to peers.
    pub advertise_raft: String,
}

impl BoundAddresses {
    /// Writes them to `<data_dir>/addresses.json`, atomically.
    pub fn write(&self, data_dir: &Path) -> std::io::Result<()> {
        let mut text = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        text.push(b'\n');
        write_atomically(&data_dir.join(ADDRESS_FILE), &text)
    }

    /// Reads `<data_dir>/addresses.json`; `None` if it is not there (yet). A file that does
    /// not parse is an error: it is only ever replaced whole.
    pub fn read(data_dir: &Path) -> std::io::Result<Option<BoundAddresses>> {
        match std::fs::read(data_dir.join(ADDRESS_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes a previous run's file (before starting a node whose file is awaited).
    pub fn remove(data_dir: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(data_dir.join(ADDRESS_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Records in `data_dir` that this node was removed from the cluster: its replica stays
/// retired on later starts, until the directory is wiped (D128).
pub fn mark_removed(data_dir: &Path) -> std::io::Result<()> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    write_atomically(
        &data_dir.join(REMOVED_FILE),
        format!("removed from the cluster at {secs} (seconds since the Unix epoch)\n").as_bytes(),
    )
}

/// Whether `data_dir` holds the removal marker.
pub fn is_marked_removed(data_dir: &Path) -> bool {
    data_dir.join(REMOVED_FILE).exists()
}

/// Writes `bytes` to `path` so that a reader sees the old content or the new, never part.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_start_creates_the_identity_and_later_starts_check_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = establish(dir.path(), 3).unwrap();
        assert!(first.created);
        assert_eq!(first.identity.node_id, 3);
        assert_eq!(first.identity.incarnation.len(), 32);
        let again = establish(dir.path(), 3).unwrap();
        assert!(!again.created);
        assert_eq!(
            again.identity, first.identity,
            "the identity is kept, not remade"
        );

        let err = establish(dir.path(), 4).unwrap_err();
        assert!(matches!(
            err,
            IdentityError::Mismatch {
                found: 3,
                wanted: 4,
                ..
            }
        ));
        let text = err.to_string();
        assert!(text.contains("belongs to node 3"), "{text}");
        assert!(text.contains("starts as node 4"), "{text}");
        // The refused start changed nothing.
        assert_eq!(establish(dir.path(), 3).unwrap().identity, first.identity);
        assert!(!dir.path().join(".identity.json.tmp").exists());
    }

    #[test]
    fn a_wiped_directory_is_a_fresh_identity() {
        let dir = tempfile::tempdir().unwrap();
        let old = establish(dir.path(), 2).unwrap().identity;
        std::fs::remove_file(dir.path().join(IDENTITY_FILE)).unwrap();
        let new = establish(dir.path(), 2).unwrap();
        assert!(new.created);
        assert_ne!(new.identity.incarnation, old.incarnation);
    }

    #[test]
    fn a_damaged_identity_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        for bad in [
            &b"{\"node_id\": 1"[..],
            b"{\"format\":7,\"node_id\":1,\"incarnation\":\"x\",\"created_unix_s\":0}",
            b"{\"format\":1,\"node_id\":1,\"incarnation\":\"x\",\"created_unix_s\":0,\"x\":1}",
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = establish(dir.path(), 1).unwrap_err();
            assert!(matches!(err, IdentityError::Corrupt { .. }), "{err}");
            assert_eq!(std::fs::read(&path).unwrap(), bad);
        }
    }

    #[test]
    fn addresses_roundtrip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(BoundAddresses::read(dir.path()).unwrap(), None);
        let a = BoundAddresses {
            node_id: 1,
            pid: 42,
            grpc: "127.0.0.1:1".parse().unwrap(),
            http: "127.0.0.1:2".parse().unwrap(),
            raft: "127.0.0.1:3".parse().unwrap(),
            advertise_grpc: "127.0.0.1:1".into(),
            advertise_raft: "127.0.0.1:3".into(),
        };
        a.write(dir.path()).unwrap();
        assert_eq!(BoundAddresses::read(dir.path()).unwrap(), Some(a.clone()));
        let text = std::fs::read_to_string(dir.path().join(ADDRESS_FILE)).unwrap();
        assert_eq!(text.lines().count(), 1, "one JSON line");
        BoundAddresses::remove(dir.path()).unwrap();
        BoundAddresses::remove(dir.path()).unwrap();
        assert_eq!(BoundAddresses::read(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join(ADDRESS_FILE), "{").unwrap();
        assert!(BoundAddresses::read(dir.path()).is_err());
    }
}
