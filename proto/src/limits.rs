//! The default limits of the API, as documented in the header of `common.proto`.
//!
//! The server enforces them (some are configurable per node); a request that breaks one gets
//! `INVALID_ARGUMENT` (or `RESOURCE_EXHAUSTED` where noted) with an `ErrorDetail` whose
//! `limit_name` is the lowercase name of the constant here and whose `limit` is its value.

/// `max_key_bytes`: the longest key (8 KiB). Keys must also be non-empty.
pub const MAX_KEY_BYTES: u64 = 8 << 10;
/// `max_value_bytes`: the longest value (8 MiB).
pub const MAX_VALUE_BYTES: u64 = 8 << 20;
/// `max_batch_keys`: the most entries in one list of a request.
pub const MAX_BATCH_KEYS: u64 = 10_000;
/// `max_scan_limit`: the largest scan limit; a limit of 0 means this.
pub const MAX_SCAN_LIMIT: u64 = 10_000;
/// `max_txn_keys`: the most distinct keys one transaction may write; also the most keys
/// read plus ranges scanned a SERIALIZABLE transaction may record.
pub const MAX_TXN_KEYS: u64 = 100_000;
/// `max_txn_bytes`: the most bytes one transaction may hold (64 MiB): keys and values of its
/// writes, and under SERIALIZABLE the keys it read and the bounds of the ranges it scanned.
pub const MAX_TXN_BYTES: u64 = 64 << 20;
/// `max_active_txns`: the most open interactive transactions per node (`RESOURCE_EXHAUSTED`).
pub const MAX_ACTIVE_TXNS: u64 = 10_000;
/// `max_open_txn_bytes`: the default of the most bytes all open transactions of a node may
/// hold together (1 GiB; `RESOURCE_EXHAUSTED`, retryable). Configurable per node
/// (`txn.max_open_txn_mb`).
pub const MAX_OPEN_TXN_BYTES: u64 = 1 << 30;
/// `max_response_bytes`: the most key and value bytes the results of one `BatchGet` or
/// `Execute` may carry (15 MiB, leaving room for framing in a `max_message_bytes` message);
/// past it the call fails with `RESPONSE_TOO_LARGE` (`RESOURCE_EXHAUSTED`).
pub const MAX_RESPONSE_BYTES: u64 = 15 << 20;
/// `max_message_bytes`: the largest gRPC message the server accepts or sends (16 MiB).
pub const MAX_MESSAGE_BYTES: u64 = 16 << 20;
/// `max_stream_calls`: the most calls a `Kv.Batch` stream may have in flight; past it the
/// server reads no more of the stream until answers go out.
pub const MAX_STREAM_CALLS: u64 = 1024;
/// `max_stream_bytes`: the most request bytes a `Kv.Batch` stream may have in flight (64
/// MiB); past it the server reads no more of the stream until answers go out.
pub const MAX_STREAM_BYTES: u64 = 64 << 20;
/// `scan_response_bytes`: a scan stops adding pairs once its response reaches this (4 MiB).
pub const SCAN_RESPONSE_BYTES: u64 = 4 << 20;
