//! Requests checked against the API's limits, and layer errors turned into gRPC statuses.
//!
//! Every failure leaves the server as a [`Status`] carrying an [`ErrorDetail`] whose reason
//! and code follow the table in `common.proto` (via [`ErrorDetail::into_status`]).

use strata_proto::limits;
use strata_proto::v1::{ErrorDetail, ErrorReason};
use tonic::{Code, Status};

use crate::lsm;
use crate::mvcc::MvccError;
use crate::tso::TsoError;
use crate::txn::{ConflictKind, TxnError, TxnId};

/// A status for `reason` with `detail` filled in by `fill`.
pub(crate) fn status(
    reason: ErrorReason,
    message: impl Into<String>,
    fill: impl FnOnce(&mut ErrorDetail),
) -> Status {
    let mut detail = ErrorDetail::new(reason);
    fill(&mut detail);
    detail.into_status(message)
}

/// The answer to a call cut short because this node shuts down (D156): `OUTCOME_UNKNOWN`
/// when the call may change state (`changes_state`: it may or may not have taken effect),
/// else `NOT_LEADER` with no leader hint (nothing was done: call another node).
pub(crate) fn shutting_down(node: u64, method: &str, changes_state: bool) -> Status {
    if changes_state {
        status(
            ErrorReason::OutcomeUnknown,
            format!(
                "node {node} is shutting down: {method} was cut short and may or may not have \
                 taken effect; check before calling again (another node)"
            ),
            |_| {},
        )
    } else {
        status(
            ErrorReason::NotLeader,
            format!("node {node} is shutting down: {method} did nothing; call another node"),
            |_| {},
        )
    }
}

fn limit_status(
    reason: ErrorReason,
    name: &str,
    limit: u64,
    field: &str,
    message: String,
) -> Status {
    status(reason, message, |d| {
        d.limit_name = name.into();
        d.limit = limit;
        d.field = field.into();
    })
}

fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// A key: non-empty and at most `max_key_bytes`.
pub(crate) fn check_key(field: &str, key: &[u8]) -> Result<(), Status> {
    if key.is_empty() {
        return Err(status(
            ErrorReason::KeyEmpty,
            format!("{field}: empty key"),
            |d| d.field = field.into(),
        ));
    }
    if len_u64(key.len()) > limits::MAX_KEY_BYTES {
        let prefix = key[..usize::try_from(limits::MAX_KEY_BYTES).unwrap_or(key.len())].to_vec();
        let mut s = limit_status(
            ErrorReason::KeyTooLarge,
            "max_key_bytes",
            limits::MAX_KEY_BYTES,
            field,
            format!(
                "{field}: key of {} bytes exceeds max_key_bytes = {}",
                key.len(),
                limits::MAX_KEY_BYTES
            ),
        );
        // Re-encode with the key prefix set.
        if let Some(mut d) = ErrorDetail::from_status(&s) {
            d.key = prefix;
            s = d.into_status(s.message().to_owned());
        }
        return Err(s);
    }
    Ok(())
}

/// A value: at most `max_value_bytes`.
pub(crate) fn check_value(field: &str, key: &[u8], value: &[u8]) -> Result<(), Status> {
    if len_u64(value.len()) > limits::MAX_VALUE_BYTES {
        return Err(status(
            ErrorReason::ValueTooLarge,
            format!(
                "{field}: value of {} bytes exceeds max_value_bytes = {}",
                value.len(),
                limits::MAX_VALUE_BYTES
            ),
            |d| {
                d.limit_name = "max_value_bytes".into();
                d.limit = limits::MAX_VALUE_BYTES;
                d.field = field.into();
                d.key = key.to_vec();
            },
        ));
    }
    Ok(())
}

/// A list of at most `max_batch_keys` entries.
pub(crate) fn check_batch(field: &str, len: usize) -> Result<(), Status> {
    if len_u64(len) > limits::MAX_BATCH_KEYS {
        return Err(limit_status(
            ErrorReason::BatchTooLarge,
            "max_batch_keys",
            limits::MAX_BATCH_KEYS,
            field,
            format!(
                "{field}: {len} entries exceed max_batch_keys = {}",
                limits::MAX_BATCH_KEYS
            ),
        ));
    }
    Ok(())
}

/// Every key of a list, and the list's length.
pub(crate) fn check_keys(field: &str, keys: &[Vec<u8>]) -> Result<(), Status> {
    check_batch(field, keys.len())?;
    keys.iter().try_for_each(|k| check_key(field, k))
}

/// A scan limit: 0 means `max_scan_limit`; above it is refused.
pub(crate) fn scan_limit(limit: u32) -> Result<usize, Status> {
    let limit = u64::from(limit);
    if limit > limits::MAX_SCAN_LIMIT {
        return Err(status(
            ErrorReason::ScanLimitTooLarge,
            format!(
                "scan limit {limit} exceeds max_scan_limit = {}",
                limits::MAX_SCAN_LIMIT
            ),
            |d| {
                d.limit_name = "max_scan_limit".into();
                d.limit = limits::MAX_SCAN_LIMIT;
                d.field = "limit".into();
            },
        ));
    }
    let limit = if limit == 0 {
        limits::MAX_SCAN_LIMIT
    } else {
        limit
    };
    Ok(usize::try_from(limit).unwrap_or(usize::MAX))
}

/// A scan range `[start, end)`: an empty `end` means unbounded; otherwise `end > start`.
/// An empty `start` is the beginning of the key space. Returns the end, if bounded.
pub(crate) fn check_range<'a>(start: &[u8], end: &'a [u8]) -> Result<Option<&'a [u8]>, Status> {
    if !start.is_empty() && len_u64(start.len()) > limits::MAX_KEY_BYTES {
        check_key("start", start)?;
    }
    if end.is_empty() {
        return Ok(None);
    }
    if len_u64(end.len()) > limits::MAX_KEY_BYTES {
        check_key("end", end)?;
    }
    if end <= start {
        return Err(status(
            ErrorReason::InvalidRange,
            "scan end must be after start (or empty for no end)",
            |d| d.field = "end".into(),
        ));
    }
    Ok(Some(end))
}

/// An unknown or unacceptable field value.
pub(crate) fn invalid_field(field: &str, message: impl Into<String>) -> Status {
    status(ErrorReason::InvalidField, message, |d| {
        d.field = field.into()
    })
}

/// A status for a transaction-layer error; `txn_id` names the transaction, if any.
pub(crate) fn txn_status(err: &TxnError, txn_id: Option<TxnId>) -> Status {
    let msg = err.to_string();
    let id = txn_id.unwrap_or(0);
    match err {
        TxnError::NotFound(id) => status(ErrorReason::TxnNotFound, msg, |d| d.txn_id = *id),
        TxnError::Conflict {
            kind,
            start_ts,
            key,
            conflicting_start_ts,
            ..
        } => {
            let r = match kind {
                ConflictKind::RolledBack => ErrorReason::TxnRolledBack,
                ConflictKind::WriteConflict | ConflictKind::RangeLocked => {
                    ErrorReason::WriteConflict
                }
            };
            status(r, msg, |d| {
                d.start_ts = *start_ts;
                d.key = key.clone().unwrap_or_default();
                d.conflicting_start_ts = conflicting_start_ts.unwrap_or(0);
                d.txn_id = id;
            })
        }
        TxnError::Locked(info) => status(ErrorReason::KeyLocked, msg, |d| {
            d.key = info.key.clone();
            d.primary_key = info.primary.clone();
            d.conflicting_start_ts = info.start_ts;
            d.lock_ttl_ms = info.ttl_ms;
            d.txn_id = id;
        }),
        TxnError::ReadOnly(_) => status(ErrorReason::TxnReadOnly, msg, |d| d.txn_id = id),
        TxnError::TooLarge { limit_name, limit } => status(ErrorReason::TxnTooLarge, msg, |d| {
            // The wire names of the limits (strata_proto::limits).
            d.limit_name = match *limit_name {
                "max_keys" => "max_txn_keys",
                _ => "max_txn_bytes",
            }
            .into();
            d.limit = *limit;
            d.txn_id = id;
        }),
        TxnError::ResponseTooLarge { limit_name, limit } => {
            status(ErrorReason::ResponseTooLarge, msg, |d| {
                d.limit_name = (*limit_name).into();
                d.limit = *limit;
                d.txn_id = id;
            })
        }
        TxnError::Busy { limit_name, limit } => status(ErrorReason::ServerBusy, msg, |d| {
            d.limit_name = (*limit_name).into();
            d.limit = *limit;
            d.txn_id = id;
        }),
        TxnError::InvalidArgument(_) => status(ErrorReason::InvalidField, msg, |_| {}),
        TxnError::NotActive { id, .. } => {
            status(ErrorReason::TxnNotActive, msg, |d| d.txn_id = *id)
        }
        TxnError::TaskFailed(_) => status(ErrorReason::StorageError, msg, |_| {}),
        TxnError::NotCommitted(_) => status(ErrorReason::NotLeader, msg, |d| {
            d.txn_id = txn_id.unwrap_or(0)
        }),
        TxnError::Tso(e) => tso_status(e),
        TxnError::Mvcc(e) => mvcc_status(e, id),
    }
}

/// A status for a timestamp-oracle error.
pub(crate) fn tso_status(err: &TsoError) -> Status {
    match err {
        TsoError::NotLeader { leader } => status(ErrorReason::NotLeader, err.to_string(), |d| {
            d.leader_node_id = leader.unwrap_or(0);
        }),
        _ => status(ErrorReason::TimestampUnavailable, err.to_string(), |_| {}),
    }
}

/// A status for an MVCC-layer error.
pub(crate) fn mvcc_status(err: &MvccError, txn_id: TxnId) -> Status {
    let msg = err.to_string();
    match err {
        MvccError::KeyIsLocked(info) => status(ErrorReason::KeyLocked, msg, |d| {
            d.key = info.key.clone();
            d.primary_key = info.primary.clone();
            d.conflicting_start_ts = info.start_ts;
            d.lock_ttl_ms = info.ttl_ms;
            d.txn_id = txn_id;
        }),
        MvccError::WriteConflict {
            key,
            start_ts,
            conflict_start_ts,
            conflict_commit_ts,
        } => status(ErrorReason::WriteConflict, msg, |d| {
            d.key = key.clone();
            d.start_ts = *start_ts;
            d.conflicting_start_ts = *conflict_start_ts;
            d.conflicting_commit_ts = *conflict_commit_ts;
            d.txn_id = txn_id;
        }),
        MvccError::AlreadyRolledBack { key, start_ts }
        | MvccError::TxnLockNotFound { key, start_ts } => {
            status(ErrorReason::TxnRolledBack, msg, |d| {
                d.key = key.clone();
                d.start_ts = *start_ts;
                d.txn_id = txn_id;
            })
        }
        MvccError::RangeLocked { key, owner } => status(ErrorReason::KeyLocked, msg, |d| {
            d.key = key.clone();
            d.conflicting_start_ts = *owner;
            d.txn_id = txn_id;
        }),
        MvccError::RangeLocksLost { owner } => status(ErrorReason::WriteConflict, msg, |d| {
            d.start_ts = *owner;
            d.txn_id = txn_id;
        }),
        MvccError::ReadBelowSafePoint { ts, safe_point } => {
            status(ErrorReason::ReadBelowSafePoint, msg, |d| {
                d.start_ts = *ts;
                d.safe_point = *safe_point;
                d.txn_id = txn_id;
            })
        }
        MvccError::Corrupt { key, .. } => {
            status(ErrorReason::DataCorrupted, msg, |d| d.key = key.clone())
        }
        MvccError::Engine(e) => engine_status(e),
        MvccError::NotLeader { leader, .. } => status(ErrorReason::NotLeader, msg, |d| {
            d.leader_node_id = leader.unwrap_or(0);
            d.txn_id = txn_id;
        }),
        MvccError::OutcomeUnknown(_) => {
            status(ErrorReason::OutcomeUnknown, msg, |d| d.txn_id = txn_id)
        }
        MvccError::Unavailable(_) => status(ErrorReason::StorageError, msg, |d| d.txn_id = txn_id),
        _ => status(ErrorReason::StorageError, msg, |_| {}),
    }
}

/// A status for a storage-engine error.
pub(crate) fn engine_status(err: &lsm::Error) -> Status {
    let msg = err.to_string();
    match err {
        lsm::Error::Corruption { .. } => status(ErrorReason::DataCorrupted, msg, |_| {}),
        // Out of space is not in the reason table: keep STORAGE_ERROR (not retryable as is)
        // but with the RESOURCE_EXHAUSTED class the table gives resource shortages.
        lsm::Error::NoSpace { .. } => ErrorDetail::new(ErrorReason::StorageError)
            .into_status_with_code(Code::ResourceExhausted, msg),
        _ => status(ErrorReason::StorageError, msg, |_| {}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::{LockInfo, LockKind};
    use crate::txn::TxnState;

    fn detail(s: &Status) -> ErrorDetail {
        ErrorDetail::from_status(s).expect("a detail")
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key("key", b"k").is_ok());
        let s = check_key("key", b"").unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(detail(&s).reason, "KEY_EMPTY");
        let big = vec![b'x'; 8193];
        let s = check_key("key", &big).unwrap_err();
        let d = detail(&s);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(d.reason, "KEY_TOO_LARGE");
        assert_eq!(d.limit_name, "max_key_bytes");
        assert_eq!(d.limit, 8192);
        assert_eq!(d.key.len(), 8192);
        assert!(!d.retryable);
        assert!(check_key("key", &big[..8192]).is_ok());
    }

    #[test]
    fn values_batches_limits_and_ranges_are_checked() {
        let v = vec![0u8; (8 << 20) + 1];
        let d = detail(&check_value("value", b"k", &v).unwrap_err());
        assert_eq!(
            (d.reason.as_str(), d.limit_name.as_str()),
            ("VALUE_TOO_LARGE", "max_value_bytes")
        );
        assert!(check_value("value", b"k", &v[..8 << 20]).is_ok());
        let d = detail(&check_batch("keys", 10_001).unwrap_err());
        assert_eq!((d.reason.as_str(), d.limit), ("BATCH_TOO_LARGE", 10_000));
        assert_eq!(scan_limit(0).unwrap(), 10_000);
        assert_eq!(scan_limit(5).unwrap(), 5);
        let d = detail(&scan_limit(10_001).unwrap_err());
        assert_eq!(
            (d.reason.as_str(), d.limit_name.as_str()),
            ("SCAN_LIMIT_TOO_LARGE", "max_scan_limit")
        );
        assert_eq!(check_range(b"a", b"").unwrap(), None);
        assert_eq!(check_range(b"", b"b").unwrap(), Some(&b"b"[..]));
        let s = check_range(b"b", b"b").unwrap_err();
        assert_eq!(detail(&s).reason, "INVALID_RANGE");
        assert!(check_range(b"c", b"b").is_err());
    }

    #[test]
    fn txn_errors_map_to_the_reason_table() {
        let s = txn_status(&TxnError::NotFound(9), Some(9));
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(
            (detail(&s).reason.as_str(), detail(&s).txn_id),
            ("TXN_NOT_FOUND", 9)
        );

        let s = txn_status(
            &TxnError::Conflict {
                kind: ConflictKind::WriteConflict,
                start_ts: 5,
                key: Some(b"k".to_vec()),
                conflicting_start_ts: Some(4),
                reason: "write conflict".into(),
            },
            None,
        );
        let d = detail(&s);
        assert_eq!(s.code(), Code::Aborted);
        assert_eq!(d.reason, "WRITE_CONFLICT");
        assert!(d.retryable);
        assert_eq!(
            (d.key.as_slice(), d.conflicting_start_ts, d.start_ts),
            (&b"k"[..], 4, 5)
        );

        let info = LockInfo {
            key: b"k".to_vec(),
            primary: b"p".to_vec(),
            start_ts: 3,
            ttl_ms: 3000,
            kind: LockKind::Put,
        };
        let s = txn_status(&TxnError::Locked(info), Some(1));
        let d = detail(&s);
        assert_eq!(
            (s.code(), d.reason.as_str(), d.retryable),
            (Code::Aborted, "KEY_LOCKED", true)
        );
        assert_eq!(d.primary_key, b"p");

        let s = txn_status(&TxnError::ReadOnly(1), Some(1));
        assert_eq!(
            (s.code(), detail(&s).reason.as_str()),
            (Code::FailedPrecondition, "TXN_READ_ONLY")
        );
        let s = txn_status(
            &TxnError::NotActive {
                id: 6,
                state: TxnState::Committing,
            },
            Some(6),
        );
        let d = detail(&s);
        assert_eq!(
            (s.code(), d.reason.as_str(), d.retryable, d.txn_id),
            (Code::FailedPrecondition, "TXN_NOT_ACTIVE", false, 6)
        );
        assert!(s.message().contains("committing"), "{}", s.message());
        let s = txn_status(
            &TxnError::TooLarge {
                limit_name: "max_keys",
                limit: 3,
            },
            Some(1),
        );
        assert_eq!(detail(&s).limit_name, "max_txn_keys");
        let s = txn_status(
            &TxnError::ResponseTooLarge {
                limit_name: "max_response_bytes",
                limit: 15 << 20,
            },
            None,
        );
        let d = detail(&s);
        assert_eq!(
            (s.code(), d.reason.as_str(), d.retryable),
            (Code::ResourceExhausted, "RESPONSE_TOO_LARGE", false)
        );
        assert_eq!(
            (d.limit_name.as_str(), d.limit),
            ("max_response_bytes", 15 << 20)
        );
        let s = txn_status(
            &TxnError::Busy {
                limit_name: "max_open_txn_bytes",
                limit: 1 << 20,
            },
            Some(4),
        );
        let d = detail(&s);
        assert_eq!(
            (s.code(), d.reason.as_str(), d.retryable),
            (Code::ResourceExhausted, "SERVER_BUSY", true)
        );
        assert_eq!(
            (d.limit_name.as_str(), d.limit, d.txn_id),
            ("max_open_txn_bytes", 1 << 20, 4)
        );

        let corrupt = lsm::Error::Corruption {
            file: "x.sst".into(),
            offset: 0,
            reason: "bad crc".into(),
        };
        let s = txn_status(&TxnError::Mvcc(MvccError::Engine(corrupt)), None);
        assert_eq!(
            (s.code(), detail(&s).reason.as_str()),
            (Code::DataLoss, "DATA_CORRUPTED")
        );
        let s = engine_status(&lsm::Error::NoSpace {
            context: "wal".into(),
        });
        assert_eq!(s.code(), Code::ResourceExhausted);
        let s = engine_status(&lsm::Error::Closed);
        assert_eq!(
            (s.code(), detail(&s).reason.as_str()),
            (Code::Internal, "STORAGE_ERROR")
        );
        let s = mvcc_status(
            &MvccError::ReadBelowSafePoint {
                ts: 5,
                safe_point: 9,
            },
            0,
        );
        let d = detail(&s);
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(
            (d.reason.as_str(), d.safe_point, d.start_ts),
            ("READ_BELOW_SAFE_POINT", 9, 5)
        );
        let s = tso_status(&TsoError::ClockOverflow);
        assert_eq!(s.code(), Code::Unavailable);
    }
}
