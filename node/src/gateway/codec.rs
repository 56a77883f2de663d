//! The shard protocol's messages to and from the storage layer's types.
//!
//! Errors travel as `ShardError`, one message per kind and field for field, so that a
//! remote leader's error is the very [`MvccError`] or [`TsoError`] the local `Storage` or
//! oracle would have returned: the coordinator cannot tell them apart, and must not. The
//! refusals of the protocol itself (not the leader, another epoch, no such shard, a
//! malformed request) decode to the router's own [`CallError`] kinds.

use std::path::PathBuf;

use bytes::Bytes;
use strata_proto::internal::v1 as pb;
use strata_proto::internal::v1::shard_error::Kind;

use crate::lsm;
use crate::mvcc::{Coordinator, LockInfo, LockKind, MvccError, ScanPage};
use crate::raftstore::ShardEpoch;
use crate::tso::TsoError;
use crate::txn::actions::{Mutation, PrewriteOptions, TxnStatus};
use crate::txn::range_locks::KeyRange;

/// Why a call to a shard did not succeed, as the router sees it.
#[derive(Debug, Clone)]
pub(crate) enum CallError {
    /// The shard answered with a storage error (never `NotLeader`: see below).
    Mvcc(MvccError),
    /// The oracle answered with an error (never `NotLeader`).
    Tso(TsoError),
    /// The node does not lead the shard (or the oracle); nothing was done. `leader` is the
    /// node it believes leads.
    NotLeader {
        /// The shard.
        shard: u64,
        /// The node believed to lead.
        leader: Option<u64>,
    },
    /// The request named another epoch than the leader's replica: this is the current one.
    EpochNotMatch(ShardEpoch),
    /// The node holds no replica of the shard.
    ShardNotFound,
    /// The request was refused as malformed (the two sides disagree on the protocol).
    Invalid(String),
    /// The request never left this node (no leader known, no address, connection
    /// refused): nothing was done.
    NotSent(String),
    /// The answer was lost (a transport error after the request was sent, or a timeout):
    /// the command may or may not have been carried out.
    Lost(String),
}

impl CallError {
    /// A local storage error, with `NotLeader` lifted out (the router follows it).
    pub(crate) fn from_mvcc(e: MvccError) -> CallError {
        match e {
            MvccError::NotLeader { shard, leader } => CallError::NotLeader { shard, leader },
            e => CallError::Mvcc(e),
        }
    }

    /// A local oracle error, with `NotLeader` lifted out.
    pub(crate) fn from_tso(e: TsoError, shard: u64) -> CallError {
        match e {
            TsoError::NotLeader { leader } => CallError::NotLeader { shard, leader },
            e => CallError::Tso(e),
        }
    }
}

fn kind_of(kind: Kind) -> pb::ShardError {
    pb::ShardError { kind: Some(kind) }
}

fn message(m: &str) -> pb::Message {
    pb::Message {
        message: m.to_string(),
    }
}

/// A refusal: this node does not lead `shard` (`leader` does, if known).
pub(crate) fn not_leader(shard: u64, leader: Option<u64>) -> pb::ShardError {
    kind_of(Kind::NotLeader(pb::NotLeader {
        shard_id: shard,
        leader_node_id: leader,
    }))
}

/// A refusal: the request's epoch is not `current`.
pub(crate) fn epoch_not_match(current: ShardEpoch) -> pb::ShardError {
    kind_of(Kind::EpochNotMatch(pb::EpochNotMatch {
        conf_ver: current.conf_ver,
        version: current.version,
    }))
}

/// A refusal: no replica of `shard` here.
pub(crate) fn shard_not_found(shard: u64) -> pb::ShardError {
    kind_of(Kind::ShardNotFound(pb::ShardNotFound { shard_id: shard }))
}

/// A refusal: the request is malformed.
pub(crate) fn invalid_request(why: impl Into<String>) -> pb::ShardError {
    kind_of(Kind::InvalidRequest(pb::InvalidRequest {
        message: why.into(),
    }))
}

fn lock_kind_to_pb(kind: LockKind) -> i32 {
    match kind {
        LockKind::Put => pb::LockKind::Put as i32,
        LockKind::Delete => pb::LockKind::Delete as i32,
        LockKind::Lock => pb::LockKind::Lock as i32,
    }
}

fn lock_kind_from_pb(kind: i32) -> Option<LockKind> {
    match pb::LockKind::try_from(kind).ok()? {
        pb::LockKind::Put => Some(LockKind::Put),
        pb::LockKind::Delete => Some(LockKind::Delete),
        pb::LockKind::Lock => Some(LockKind::Lock),
        pb::LockKind::Unspecified => None,
    }
}

/// The wire form of a storage error.
pub(crate) fn mvcc_error_to_pb(e: &MvccError) -> pb::ShardError {
    kind_of(match e {
        MvccError::Engine(e) => Kind::Engine(engine_error_to_pb(e)),
        MvccError::KeyIsLocked(info) => Kind::KeyIsLocked(pb::LockInfo {
            key: Bytes::copy_from_slice(&info.key),
            primary: Bytes::copy_from_slice(&info.primary),
            start_ts: info.start_ts,
            ttl_ms: info.ttl_ms,
            kind: lock_kind_to_pb(info.kind),
        }),
        MvccError::WriteConflict {
            key,
            start_ts,
            conflict_start_ts,
            conflict_commit_ts,
        } => Kind::WriteConflict(pb::WriteConflict {
            key: Bytes::copy_from_slice(key),
            start_ts: *start_ts,
            conflict_start_ts: *conflict_start_ts,
            conflict_commit_ts: *conflict_commit_ts,
        }),
        MvccError::AlreadyRolledBack { key, start_ts } => Kind::AlreadyRolledBack(pb::TxnKey {
            key: Bytes::copy_from_slice(key),
            start_ts: *start_ts,
        }),
        MvccError::TxnLockNotFound { key, start_ts } => Kind::TxnLockNotFound(pb::TxnKey {
            key: Bytes::copy_from_slice(key),
            start_ts: *start_ts,
        }),
        MvccError::CommitTsExpired {
            start_ts,
            commit_ts,
            min_commit_ts,
        } => Kind::CommitTsExpired(pb::CommitTsExpired {
            start_ts: *start_ts,
            commit_ts: *commit_ts,
            min_commit_ts: *min_commit_ts,
        }),
        MvccError::RangeLocked { key, owner } => Kind::RangeLocked(pb::RangeLocked {
            key: Bytes::copy_from_slice(key),
            owner: *owner,
        }),
        MvccError::Committed {
            key,
            start_ts,
            commit_ts,
        } => Kind::Committed(pb::AlreadyCommitted {
            key: Bytes::copy_from_slice(key),
            start_ts: *start_ts,
            commit_ts: *commit_ts,
        }),
        MvccError::ReadBelowSafePoint { ts, safe_point } => {
            Kind::ReadBelowSafePoint(pb::ReadBelowSafePoint {
                ts: *ts,
                safe_point: *safe_point,
            })
        }
        MvccError::NotLeader { shard, leader } => Kind::NotLeader(pb::NotLeader {
            shard_id: *shard,
            leader_node_id: *leader,
        }),
        MvccError::OutcomeUnknown(m) => Kind::OutcomeUnknown(message(m)),
        MvccError::Unavailable(m) => Kind::Unavailable(message(m)),
        MvccError::RangeLocksLost { owner } => {
            Kind::RangeLocksLost(pb::RangeLocksLost { owner: *owner })
        }
        MvccError::OnePcRefused(m) => Kind::OnePcRefused(message(m)),
        MvccError::Corrupt { key, reason } => Kind::Corrupt(pb::Corrupt {
            key: Bytes::copy_from_slice(key),
            reason: reason.clone(),
        }),
    })
}

fn engine_error_to_pb(e: &lsm::Error) -> pb::EngineError {
    use pb::engine_error::Kind as E;
    let kind = match e {
        lsm::Error::Corruption {
            file,
            offset,
            reason,
        } => E::Corruption(pb::EngineCorruption {
            file: file.display().to_string(),
            offset: *offset,
            reason: reason.clone(),
        }),
        lsm::Error::NoSpace { context } => E::NoSpace(context.clone()),
        lsm::Error::Io {
            context,
            message,
            kind,
        } => E::Io(pb::EngineIo {
            context: context.clone(),
            message: message.clone(),
            kind: format!("{kind:?}"),
        }),
        lsm::Error::InvalidArgument(m) => E::InvalidArgument(m.clone()),
        lsm::Error::Background(m) => E::Background(m.clone()),
        lsm::Error::Closed => E::Closed(true),
    };
    pb::EngineError { kind: Some(kind) }
}

/// The `std::io::ErrorKind` named `name` (its `Debug` form); unknown names are `Other`.
fn io_kind_from_name(name: &str) -> std::io::ErrorKind {
    use std::io::ErrorKind as K;
    const KINDS: &[K] = &[
        K::NotFound,
        K::PermissionDenied,
        K::ConnectionRefused,
        K::ConnectionReset,
        K::HostUnreachable,
        K::NetworkUnreachable,
        K::ConnectionAborted,
        K::NotConnected,
        K::AddrInUse,
        K::AddrNotAvailable,
        K::NetworkDown,
        K::BrokenPipe,
        K::AlreadyExists,
        K::WouldBlock,
        K::NotADirectory,
        K::IsADirectory,
        K::DirectoryNotEmpty,
        K::ReadOnlyFilesystem,
        K::StaleNetworkFileHandle,
        K::InvalidInput,
        K::InvalidData,
        K::TimedOut,
        K::WriteZero,
        K::StorageFull,
        K::NotSeekable,
        K::QuotaExceeded,
        K::FileTooLarge,
        K::ResourceBusy,
        K::ExecutableFileBusy,
        K::Deadlock,
        K::CrossesDevices,
        K::TooManyLinks,
        K::InvalidFilename,
        K::ArgumentListTooLong,
        K::Interrupted,
        K::Unsupported,
        K::UnexpectedEof,
        K::OutOfMemory,
        K::Other,
    ];
    KINDS
        .iter()
        .copied()
        .find(|k| format!("{k:?}") == name)
        .unwrap_or(K::Other)
}

fn engine_error_from_pb(e: pb::EngineError) -> lsm::Error {
    use pb::engine_error::Kind as E;
    match e.kind {
        Some(E::Corruption(c)) => lsm::Error::Corruption {
            file: PathBuf::from(c.file),
            offset: c.offset,
            reason: c.reason,
        },
        Some(E::NoSpace(context)) => lsm::Error::NoSpace { context },
        Some(E::Io(io)) => lsm::Error::Io {
            context: io.context,
            message: io.message,
            kind: io_kind_from_name(&io.kind),
        },
        Some(E::InvalidArgument(m)) => lsm::Error::InvalidArgument(m),
        Some(E::Background(m)) => lsm::Error::Background(m),
        Some(E::Closed(_)) => lsm::Error::Closed,
        None => lsm::Error::InvalidArgument("an engine error of no known kind".into()),
    }
}

/// The wire form of an oracle error.
pub(crate) fn tso_error_to_pb(e: &TsoError) -> pb::ShardError {
    use pb::tso_error::Kind as T;
    let kind = match e {
        TsoError::Io { context, message } => T::Io(pb::TsoIo {
            context: context.clone(),
            message: message.clone(),
        }),
        TsoError::Corrupt { path, reason } => T::Corrupt(pb::TsoCorrupt {
            path: path.display().to_string(),
            reason: reason.clone(),
        }),
        TsoError::ClockOverflow => T::ClockOverflow(true),
        TsoError::InvalidArgument(m) => T::InvalidArgument(m.clone()),
        TsoError::NotLeader { leader } => T::NotLeader(pb::TsoNotLeader {
            leader_node_id: *leader,
        }),
        TsoError::Unavailable(m) => T::Unavailable(m.clone()),
    };
    kind_of(Kind::Tso(pb::TsoError { kind: Some(kind) }))
}

fn tso_error_from_pb(e: pb::TsoError, shard: u64) -> CallError {
    use pb::tso_error::Kind as T;
    CallError::Tso(match e.kind {
        Some(T::Io(io)) => TsoError::Io {
            context: io.context,
            message: io.message,
        },
        Some(T::Corrupt(c)) => TsoError::Corrupt {
            path: PathBuf::from(c.path),
            reason: c.reason,
        },
        Some(T::ClockOverflow(_)) => TsoError::ClockOverflow,
        Some(T::InvalidArgument(m)) => TsoError::InvalidArgument(m),
        Some(T::NotLeader(n)) => {
            return CallError::NotLeader {
                shard,
                leader: n.leader_node_id,
            }
        }
        Some(T::Unavailable(m)) => TsoError::Unavailable(m),
        None => return CallError::Invalid("an oracle error of no known kind".into()),
    })
}

/// What a response's `error` says, for a request to `shard`.
pub(crate) fn error_from_pb(e: pb::ShardError, shard: u64) -> CallError {
    let Some(kind) = e.kind else {
        return CallError::Invalid("an error of no known kind".into());
    };
    let mvcc = match kind {
        Kind::NotLeader(n) => {
            return CallError::NotLeader {
                shard: n.shard_id,
                leader: n.leader_node_id,
            }
        }
        Kind::EpochNotMatch(e) => {
            return CallError::EpochNotMatch(ShardEpoch {
                conf_ver: e.conf_ver,
                version: e.version,
            })
        }
        Kind::ShardNotFound(_) => return CallError::ShardNotFound,
        Kind::InvalidRequest(r) => return CallError::Invalid(r.message),
        Kind::Tso(t) => return tso_error_from_pb(t, shard),
        Kind::KeyIsLocked(info) => match lock_info_from_pb(info) {
            Some(info) => MvccError::KeyIsLocked(info),
            None => return CallError::Invalid("a lock of no known kind".into()),
        },
        Kind::WriteConflict(w) => MvccError::WriteConflict {
            key: w.key.to_vec(),
            start_ts: w.start_ts,
            conflict_start_ts: w.conflict_start_ts,
            conflict_commit_ts: w.conflict_commit_ts,
        },
        Kind::AlreadyRolledBack(t) => MvccError::AlreadyRolledBack {
            key: t.key.to_vec(),
            start_ts: t.start_ts,
        },
        Kind::TxnLockNotFound(t) => MvccError::TxnLockNotFound {
            key: t.key.to_vec(),
            start_ts: t.start_ts,
        },
        Kind::CommitTsExpired(c) => MvccError::CommitTsExpired {
            start_ts: c.start_ts,
            commit_ts: c.commit_ts,
            min_commit_ts: c.min_commit_ts,
        },
        Kind::RangeLocked(r) => MvccError::RangeLocked {
            key: r.key.to_vec(),
            owner: r.owner,
        },
        Kind::Committed(c) => MvccError::Committed {
            key: c.key.to_vec(),
            start_ts: c.start_ts,
            commit_ts: c.commit_ts,
        },
        Kind::ReadBelowSafePoint(r) => MvccError::ReadBelowSafePoint {
            ts: r.ts,
            safe_point: r.safe_point,
        },
        Kind::OutcomeUnknown(m) => MvccError::OutcomeUnknown(m.message),
        Kind::Unavailable(m) => MvccError::Unavailable(m.message),
        Kind::OnePcRefused(m) => MvccError::OnePcRefused(m.message),
        Kind::Corrupt(c) => MvccError::Corrupt {
            key: c.key.to_vec(),
            reason: c.reason,
        },
        Kind::Engine(e) => MvccError::Engine(engine_error_from_pb(e)),
        Kind::RangeLocksLost(r) => MvccError::RangeLocksLost { owner: r.owner },
    };
    CallError::Mvcc(mvcc)
}

fn lock_info_from_pb(info: pb::LockInfo) -> Option<LockInfo> {
    Some(LockInfo {
        key: info.key.to_vec(),
        primary: info.primary.to_vec(),
        start_ts: info.start_ts,
        ttl_ms: info.ttl_ms,
        kind: lock_kind_from_pb(info.kind)?,
    })
}

/// `Ok` unless the response carries an error.
pub(crate) fn check(error: Option<pb::ShardError>, shard: u64) -> Result<(), CallError> {
    match error {
        None => Ok(()),
        Some(e) => Err(error_from_pb(e, shard)),
    }
}

pub(crate) fn range_to_pb(range: &KeyRange) -> pb::KeyRange {
    pb::KeyRange {
        start: Bytes::copy_from_slice(&range.0),
        end: range.1.as_deref().map(Bytes::copy_from_slice),
    }
}

pub(crate) fn range_from_pb(range: pb::KeyRange) -> KeyRange {
    (range.start.to_vec(), range.end.map(|e| e.to_vec()))
}

pub(crate) fn mutation_to_pb(m: &Mutation) -> pb::Mutation {
    let (kind, key, value) = match m {
        Mutation::Put(k, v) => (pb::MutationKind::Put, k, Bytes::copy_from_slice(v)),
        Mutation::Delete(k) => (pb::MutationKind::Delete, k, Bytes::new()),
        Mutation::Lock(k) => (pb::MutationKind::Lock, k, Bytes::new()),
    };
    pb::Mutation {
        kind: kind as i32,
        key: Bytes::copy_from_slice(key),
        value,
    }
}

pub(crate) fn mutation_from_pb(m: pb::Mutation) -> Result<Mutation, pb::ShardError> {
    let key = m.key.to_vec();
    match pb::MutationKind::try_from(m.kind) {
        Ok(pb::MutationKind::Put) => Ok(Mutation::Put(key, m.value.to_vec())),
        Ok(pb::MutationKind::Delete) => Ok(Mutation::Delete(key)),
        Ok(pb::MutationKind::Lock) => Ok(Mutation::Lock(key)),
        Ok(pb::MutationKind::Unspecified) | Err(_) => Err(invalid_request(format!(
            "mutation of unknown kind {}",
            m.kind
        ))),
    }
}

/// The prewrite options carried by `req`.
pub(crate) fn prewrite_options_from_pb(req: &pb::PrewriteRequest) -> PrewriteOptions {
    PrewriteOptions {
        primary: req.primary.to_vec(),
        ttl_ms: req.ttl_ms,
        min_commit_ts: req.min_commit_ts,
        coordinator: req.coordinator.map(|c| Coordinator {
            node_id: c.node_id,
            run_id: c.run_id,
        }),
    }
}

pub(crate) fn coordinator_to_pb(c: &Coordinator) -> pb::Coordinator {
    pb::Coordinator {
        node_id: c.node_id,
        run_id: c.run_id,
    }
}

pub(crate) fn status_to_pb(s: TxnStatus) -> pb::TxnStatus {
    use pb::txn_status::Status as S;
    let status = match s {
        TxnStatus::Locked {
            ttl_ms,
            min_commit_ts,
        } => S::Locked(pb::txn_status::Locked {
            ttl_ms,
            min_commit_ts,
        }),
        TxnStatus::Committed { commit_ts } => S::Committed(pb::txn_status::Committed { commit_ts }),
        TxnStatus::RolledBack { now } => S::RolledBack(pb::txn_status::RolledBack { now }),
    };
    pb::TxnStatus {
        status: Some(status),
    }
}

pub(crate) fn status_from_pb(s: Option<pb::TxnStatus>) -> Result<TxnStatus, CallError> {
    use pb::txn_status::Status as S;
    match s.and_then(|s| s.status) {
        Some(S::Locked(l)) => Ok(TxnStatus::Locked {
            ttl_ms: l.ttl_ms,
            min_commit_ts: l.min_commit_ts,
        }),
        Some(S::Committed(c)) => Ok(TxnStatus::Committed {
            commit_ts: c.commit_ts,
        }),
        Some(S::RolledBack(r)) => Ok(TxnStatus::RolledBack { now: r.now }),
        None => Err(CallError::Invalid(
            "a transaction status answer without a status".into(),
        )),
    }
}

pub(crate) fn page_to_pb(page: ScanPage) -> (Vec<pb::Pair>, bool) {
    let pairs = page
        .pairs
        .into_iter()
        .map(|(k, v)| pb::Pair {
            key: Bytes::from(k),
            value: Bytes::from(v),
        })
        .collect();
    (pairs, page.more)
}

pub(crate) fn page_from_pb(pairs: Vec<pb::Pair>, more: bool) -> ScanPage {
    ScanPage {
        pairs: pairs
            .into_iter()
            .map(|p| (p.key.to_vec(), p.value.to_vec()))
            .collect(),
        more,
    }
}

pub(crate) fn keys_to_pb(keys: &[Vec<u8>]) -> Vec<Bytes> {
    keys.iter().map(|k| Bytes::copy_from_slice(k)).collect()
}

pub(crate) fn keys_from_pb(keys: Vec<Bytes>) -> Vec<Vec<u8>> {
    keys.into_iter().map(|k| k.to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(e: MvccError) -> String {
        match error_from_pb(mvcc_error_to_pb(&e), 1) {
            CallError::Mvcc(back) => format!("{back:?}"),
            CallError::NotLeader { shard, leader } => {
                format!("{:?}", MvccError::NotLeader { shard, leader })
            }
            other => panic!("{e:?} came back as {other:?}"),
        }
    }

    #[test]
    fn every_storage_error_comes_back_as_itself() {
        let key = b"k\x00\xff".to_vec();
        let errors = vec![
            MvccError::KeyIsLocked(LockInfo {
                key: key.clone(),
                primary: b"p".to_vec(),
                start_ts: 7,
                ttl_ms: 3000,
                kind: LockKind::Lock,
            }),
            MvccError::WriteConflict {
                key: key.clone(),
                start_ts: 1,
                conflict_start_ts: 2,
                conflict_commit_ts: 3,
            },
            MvccError::AlreadyRolledBack {
                key: key.clone(),
                start_ts: 4,
            },
            MvccError::TxnLockNotFound {
                key: key.clone(),
                start_ts: 5,
            },
            MvccError::CommitTsExpired {
                start_ts: 1,
                commit_ts: 2,
                min_commit_ts: 3,
            },
            MvccError::RangeLocked {
                key: key.clone(),
                owner: 9,
            },
            MvccError::Committed {
                key: key.clone(),
                start_ts: 1,
                commit_ts: 2,
            },
            MvccError::ReadBelowSafePoint {
                ts: 1,
                safe_point: 2,
            },
            MvccError::NotLeader {
                shard: 1,
                leader: Some(3),
            },
            MvccError::NotLeader {
                shard: 1,
                leader: None,
            },
            MvccError::OutcomeUnknown("entry lost".into()),
            MvccError::Unavailable("log failed".into()),
            MvccError::RangeLocksLost { owner: 12 },
            MvccError::OnePcRefused("not synced".into()),
            MvccError::Corrupt {
                key: key.clone(),
                reason: "bad".into(),
            },
            MvccError::Engine(lsm::Error::Corruption {
                file: PathBuf::from("/d/000012.sst"),
                offset: 4096,
                reason: "crc".into(),
            }),
            MvccError::Engine(lsm::Error::NoSpace {
                context: "flushing".into(),
            }),
            MvccError::Engine(lsm::Error::Io {
                context: "reading".into(),
                message: "denied".into(),
                kind: std::io::ErrorKind::PermissionDenied,
            }),
            MvccError::Engine(lsm::Error::InvalidArgument("x".into())),
            MvccError::Engine(lsm::Error::Background("compaction".into())),
            MvccError::Engine(lsm::Error::Closed),
        ];
        for e in errors {
            assert_eq!(round_trip(e.clone()), format!("{e:?}"));
        }
    }

    #[test]
    fn every_oracle_error_comes_back_as_itself() {
        let errors = vec![
            TsoError::Io {
                context: "saving".into(),
                message: "EIO".into(),
            },
            TsoError::Corrupt {
                path: PathBuf::from("/d/tso"),
                reason: "magic".into(),
            },
            TsoError::ClockOverflow,
            TsoError::InvalidArgument("count 0".into()),
            TsoError::Unavailable("no quorum".into()),
        ];
        for e in errors {
            match error_from_pb(tso_error_to_pb(&e), 1) {
                CallError::Tso(back) => assert_eq!(back, e),
                other => panic!("{e:?} came back as {other:?}"),
            }
        }
        match error_from_pb(tso_error_to_pb(&TsoError::NotLeader { leader: Some(2) }), 1) {
            CallError::NotLeader { leader, .. } => assert_eq!(leader, Some(2)),
            other => panic!("came back as {other:?}"),
        }
    }

    #[test]
    fn refusals_and_unknown_kinds_decode_to_the_routers_own_errors() {
        assert!(matches!(
            error_from_pb(
                epoch_not_match(ShardEpoch {
                    conf_ver: 3,
                    version: 1
                }),
                1
            ),
            CallError::EpochNotMatch(ShardEpoch {
                conf_ver: 3,
                version: 1
            })
        ));
        assert!(matches!(
            error_from_pb(shard_not_found(4), 4),
            CallError::ShardNotFound
        ));
        assert!(matches!(
            error_from_pb(pb::ShardError { kind: None }, 1),
            CallError::Invalid(_)
        ));
        let bad_lock = kind_of(Kind::KeyIsLocked(pb::LockInfo {
            kind: 99,
            ..pb::LockInfo::default()
        }));
        assert!(matches!(error_from_pb(bad_lock, 1), CallError::Invalid(_)));
        assert_eq!(io_kind_from_name("NoSuchKind"), std::io::ErrorKind::Other);
        assert_eq!(
            io_kind_from_name("StorageFull"),
            std::io::ErrorKind::StorageFull
        );
    }

    #[test]
    fn mutations_statuses_and_ranges_round_trip() {
        for m in [
            Mutation::Put(b"a".to_vec(), b"1".to_vec()),
            Mutation::Delete(b"b".to_vec()),
            Mutation::Lock(b"c".to_vec()),
        ] {
            assert_eq!(mutation_from_pb(mutation_to_pb(&m)).unwrap(), m);
        }
        assert!(mutation_from_pb(pb::Mutation::default()).is_err());
        for s in [
            TxnStatus::Locked {
                ttl_ms: 1,
                min_commit_ts: 2,
            },
            TxnStatus::Committed { commit_ts: 3 },
            TxnStatus::RolledBack { now: true },
        ] {
            assert_eq!(status_from_pb(Some(status_to_pb(s.clone()))).unwrap(), s);
        }
        assert!(status_from_pb(None).is_err());
        for r in [
            (b"a".to_vec(), None),
            (Vec::new(), Some(b"z".to_vec())),
            (b"a".to_vec(), Some(Vec::new())),
        ] {
            assert_eq!(range_from_pb(range_to_pb(&r)), r);
        }
    }
}
