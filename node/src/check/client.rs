//! Recording register histories from real clients of Strata's public gRPC API.
//!
//! A [`RegisterClient`] runs single-key operations against one node (any node is a
//! gateway) and records each one in a [`RegisterRecorder`] as the client saw it:
//!
//! ```text
//!   read   Kv.Get(key, read_ts 0)                               ─► ok Read(value | absent)
//!   write  Kv.Put(key, value)                                   ─► ok Write
//!   cas    Txn.Execute(precondition VALUE_EQUALS / NOT_EXISTS,
//!                      mutation PUT)                            ─► ok CompareAndSet(succeeded)
//!
//!   an error ──► classify ──► Refused: fail (left out; it wrote nothing)
//!                          └► Unknown: unknown (it may take effect at any later point)
//! ```
//!
//! **Classification** follows the contract in `proto/strata/v1/common.proto`: a write is
//! *refused* only when the answer says nothing was committed (NOT_LEADER, the ABORTED
//! reasons WRITE_CONFLICT, TXN_ROLLED_BACK and KEY_LOCKED, TIMESTAMP_UNAVAILABLE,
//! SERVER_BUSY, TOO_MANY_TXNS). Everything else is *unknown*: OUTCOME_UNKNOWN,
//! STORAGE_ERROR, DEADLINE_EXCEEDED, CANCELLED, a broken connection (UNAVAILABLE without an
//! ErrorDetail), and statuses a correct client never provokes (INVALID_ARGUMENT and the
//! like), which [`OpEnd::Unexpected`] also reports so a test can fail on them. A failed read
//! constrains nothing whatever the error, so it is left out. Recording a refusal as a
//! failure is what lets the checker catch a server that reports "nothing committed" and
//! commits anyway: the write's unique value, read later, has no write to come from.
//!
//! Every value written is unique (`c<client>-<n>`), so a read names the write it observed.
//! [`RegisterWorkload`] picks operations from a seeded generator; a compare-and-set
//! expects the value this client last saw on the key, so that some succeed.
//!
//! [`inject_stale_read`] adds to a recorded history a read that returns an overwritten
//! value after the overwrite returned: a test asserts the checker rejects it, so a
//! "linearizable" verdict on the same history cannot be vacuous.

use std::collections::HashMap;
use std::time::Duration;

use strata_proto::v1 as pb;
use strata_proto::v1::kv_client::KvClient;
use strata_proto::v1::txn_client::TxnClient;
use strata_proto::v1::{ErrorDetail, ErrorReason};
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::history::{Key, Value};
use super::linearizability::{
    ClientId, Completion, Operation, RegisterHistory, RegisterInput, RegisterOutput,
    RegisterRecorder,
};
use crate::raftstore::rng::Rng;

/// What an error tells a client about a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Nothing was committed.
    Refused,
    /// It may or may not have committed.
    Unknown,
    /// It may or may not have committed, and a correct client should never see this
    /// status (a bad argument, an unknown transaction, ...).
    Unexpected,
}

/// Classifies the error of a write (Kv.Put, Kv.Delete, Txn.Execute, Txn.Commit).
pub fn classify_write_error(status: &Status) -> ErrorClass {
    let reason = ErrorDetail::from_status(status).and_then(|d| d.reason_enum());
    match (status.code(), reason) {
        (
            _,
            Some(
                ErrorReason::NotLeader
                | ErrorReason::WriteConflict
                | ErrorReason::TxnRolledBack
                | ErrorReason::KeyLocked
                | ErrorReason::TimestampUnavailable
                | ErrorReason::ServerBusy
                | ErrorReason::TooManyTxns,
            ),
        ) => ErrorClass::Refused,
        (_, Some(ErrorReason::OutcomeUnknown | ErrorReason::StorageError)) => ErrorClass::Unknown,
        // gRPC's own statuses carry no detail: a timeout, a cancel, a broken connection.
        (Code::DeadlineExceeded | Code::Cancelled | Code::Unavailable | Code::Unknown, None) => {
            ErrorClass::Unknown
        }
        _ => ErrorClass::Unexpected,
    }
}

/// How one operation ended, for a test's counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpEnd {
    /// Answered; recorded as ok.
    Ok,
    /// Definitely not applied; recorded as failed (left out).
    Refused,
    /// Outcome unknown; recorded as unknown.
    Unknown,
    /// A status a correct client should never get (recorded as unknown for a write,
    /// failed for a read); the test should fail on it.
    Unexpected(String),
}

/// Counts of how operations ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// Reads answered.
    pub reads: u64,
    /// Writes acknowledged.
    pub writes: u64,
    /// Compare-and-sets that wrote.
    pub cas_written: u64,
    /// Compare-and-sets answered "precondition failed".
    pub cas_refused: u64,
    /// Definite refusals (reads that failed included).
    pub refused: u64,
    /// Unknown outcomes.
    pub unknown: u64,
}

impl OpCounts {
    /// Adds one operation's end.
    pub fn add(&mut self, input: &RegisterInput, output: Option<&RegisterOutput>, end: &OpEnd) {
        match (end, input, output) {
            (OpEnd::Ok, _, Some(RegisterOutput::Read(_))) => self.reads += 1,
            (OpEnd::Ok, _, Some(RegisterOutput::Write)) => self.writes += 1,
            (OpEnd::Ok, _, Some(RegisterOutput::CompareAndSet(true))) => self.cas_written += 1,
            (OpEnd::Ok, _, Some(RegisterOutput::CompareAndSet(false))) => self.cas_refused += 1,
            (OpEnd::Refused, _, _) => self.refused += 1,
            (OpEnd::Unknown | OpEnd::Unexpected(_), RegisterInput::Read, _) => self.refused += 1,
            (OpEnd::Unknown | OpEnd::Unexpected(_), _, _) => self.unknown += 1,
            (OpEnd::Ok, _, None) => {}
        }
    }

    /// The sum of two counts.
    pub fn merged(self, o: OpCounts) -> OpCounts {
        OpCounts {
            reads: self.reads + o.reads,
            writes: self.writes + o.writes,
            cas_written: self.cas_written + o.cas_written,
            cas_refused: self.cas_refused + o.cas_refused,
            refused: self.refused + o.refused,
            unknown: self.unknown + o.unknown,
        }
    }
}

/// A client of one node that runs and records register operations.
#[derive(Debug, Clone)]
pub struct RegisterClient {
    id: ClientId,
    kv: KvClient<Channel>,
    txn: TxnClient<Channel>,
    timeout: Duration,
}

impl RegisterClient {
    /// A client `id` over `channel`, each call bounded by `timeout` (past it the outcome is
    /// unknown).
    pub fn new(id: ClientId, channel: Channel, timeout: Duration) -> RegisterClient {
        RegisterClient {
            id,
            kv: KvClient::new(channel.clone()),
            txn: TxnClient::new(channel),
            timeout,
        }
    }

    /// This client's id.
    pub fn id(&self) -> ClientId {
        self.id
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.timeout);
        r
    }

    /// Runs `input` on `key`, recording it in `rec` (invoked just before the request is
    /// sent, completed when the answer is in). Returns how it ended and what it answered.
    pub async fn run(
        &mut self,
        rec: &RegisterRecorder,
        key: &[u8],
        input: RegisterInput,
    ) -> (OpEnd, Option<RegisterOutput>) {
        let token = rec.invoke(self.id, key.to_vec(), input.clone());
        let result: Result<RegisterOutput, Status> = match &input {
            RegisterInput::Read => {
                let req = self.request(pb::GetRequest {
                    key: key.to_vec(),
                    read_ts: 0,
                });
                self.kv.get(req).await.map(|r| {
                    let r = r.into_inner();
                    RegisterOutput::Read(r.found.then_some(r.value))
                })
            }
            RegisterInput::Write(value) => {
                let req = self.request(pb::PutRequest {
                    key: key.to_vec(),
                    value: value.clone(),
                });
                self.kv.put(req).await.map(|_| RegisterOutput::Write)
            }
            RegisterInput::CompareAndSet { expected, new } => {
                let precondition = match expected {
                    Some(v) => pb::Precondition {
                        key: key.to_vec(),
                        kind: pb::precondition::Kind::ValueEquals as i32,
                        value: v.clone(),
                    },
                    None => pb::Precondition {
                        key: key.to_vec(),
                        kind: pb::precondition::Kind::NotExists as i32,
                        value: Vec::new(),
                    },
                };
                let req = self.request(pb::ExecuteRequest {
                    isolation: pb::Isolation::Snapshot as i32,
                    preconditions: vec![precondition],
                    reads: Vec::new(),
                    mutations: vec![pb::Mutation {
                        kind: pb::mutation::Kind::Put as i32,
                        key: key.to_vec(),
                        value: new.clone(),
                    }],
                });
                self.txn
                    .execute(req)
                    .await
                    .map(|r| RegisterOutput::CompareAndSet(r.into_inner().succeeded))
            }
        };
        match result {
            Ok(output) => {
                rec.ok(token, output.clone());
                (OpEnd::Ok, Some(output))
            }
            Err(status) if matches!(input, RegisterInput::Read) => {
                // A failed read constrains nothing: left out whatever the error.
                rec.fail(token);
                match classify_write_error(&status) {
                    ErrorClass::Unexpected if !is_transport_error(&status) => {
                        (OpEnd::Unexpected(status.to_string()), None)
                    }
                    _ => (OpEnd::Refused, None),
                }
            }
            Err(status) => match classify_write_error(&status) {
                ErrorClass::Refused => {
                    rec.fail(token);
                    (OpEnd::Refused, None)
                }
                ErrorClass::Unknown => {
                    rec.unknown(token);
                    (OpEnd::Unknown, None)
                }
                ErrorClass::Unexpected => {
                    rec.unknown(token);
                    (OpEnd::Unexpected(status.to_string()), None)
                }
            },
        }
    }
}

fn is_transport_error(status: &Status) -> bool {
    ErrorDetail::from_status(status).is_none()
        && matches!(
            status.code(),
            Code::DeadlineExceeded | Code::Cancelled | Code::Unavailable | Code::Unknown
        )
}

/// Seeded choice of register operations for one client over a set of keys.
#[derive(Debug)]
pub struct RegisterWorkload {
    client: ClientId,
    keys: Vec<Key>,
    rng: Rng,
    written: u64,
    /// The value this client last saw on each key (read or written).
    seen: HashMap<Key, Option<Value>>,
}

impl RegisterWorkload {
    /// Operations of `client` over `keys` (not empty), following `seed`.
    pub fn new(client: ClientId, keys: Vec<Key>, seed: u64) -> RegisterWorkload {
        RegisterWorkload {
            client,
            keys,
            rng: Rng::new(seed ^ client.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            written: 0,
            seen: HashMap::new(),
        }
    }

    /// The next operation: 40% reads, 30% writes, 30% compare-and-sets, every written
    /// value unique.
    pub fn next_op(&mut self) -> (Key, RegisterInput) {
        let n = u64::try_from(self.keys.len()).unwrap_or(1).max(1);
        let i = usize::try_from(self.rng.below(n)).unwrap_or(0);
        let key = self.keys.get(i).cloned().unwrap_or_default();
        let roll = self.rng.below(10);
        if roll < 4 {
            return (key, RegisterInput::Read);
        }
        self.written += 1;
        let value = format!("c{}-{}", self.client, self.written).into_bytes();
        if roll < 7 {
            (key, RegisterInput::Write(value))
        } else {
            let expected = self.seen.get(&key).cloned().flatten();
            (
                key,
                RegisterInput::CompareAndSet {
                    expected,
                    new: value,
                },
            )
        }
    }

    /// Tells the workload what an operation answered (to aim later compare-and-sets).
    pub fn observe(&mut self, key: &[u8], input: &RegisterInput, output: Option<&RegisterOutput>) {
        let seen = match (input, output) {
            (_, Some(RegisterOutput::Read(v))) => v.clone(),
            (RegisterInput::Write(v), Some(RegisterOutput::Write)) => Some(v.clone()),
            (
                RegisterInput::CompareAndSet { new, .. },
                Some(RegisterOutput::CompareAndSet(true)),
            ) => Some(new.clone()),
            _ => return,
        };
        self.seen.insert(key.to_vec(), seen);
    }
}

/// Acknowledged writes (writes and compare-and-sets that wrote) whose value is never
/// accounted for: no answered read returned it, and no other write of the key (answered
/// or with an unknown outcome) could be ordered after it (each returned before it was
/// called), so nothing could have replaced it.
/// Such a write was lost. (The linearizability check, with reads after the run, is the
/// full form of this; this names the lost writes directly.)
pub fn unaccounted_writes(history: &RegisterHistory) -> Vec<usize> {
    let value_of =
        |op: &Operation<RegisterInput, RegisterOutput>| match (&op.input, op.completion.output()) {
            (RegisterInput::Write(v), Some(RegisterOutput::Write) | None) => Some(v.clone()),
            (
                RegisterInput::CompareAndSet { new, .. },
                Some(RegisterOutput::CompareAndSet(true)) | None,
            ) => Some(new.clone()),
            _ => None,
        };
    let mut lost = Vec::new();
    for (i, op) in history.ops.iter().enumerate() {
        if !matches!(op.completion, Completion::Returned { .. }) {
            continue;
        }
        let Some(v) = value_of(op) else { continue };
        let read = history.ops.iter().any(|r| {
            r.key == op.key && r.completion.output() == Some(&RegisterOutput::Read(Some(v.clone())))
        });
        // Another write can be ordered after this one iff it had not returned by this one's
        // call (or never returned).
        let replaceable = history.ops.iter().enumerate().any(|(j, w)| {
            j != i
                && w.key == op.key
                && value_of(w).is_some()
                && w.completion.returned_at().is_none_or(|r| r > op.call)
        });
        if !read && !replaceable {
            lost.push(i);
        }
    }
    lost
}

/// `history` with one more read: of a value `v` of some key, called after a later write
/// of that key returned, where `v`'s own write returned before that write was called. No
/// order can place it (values are unique, so only `v`'s write could have set it, and that
/// write precedes the one that replaced it), so the checker must answer NotLinearizable.
/// Returns the new history and the injected read's index, or `None` when the history has
/// no two acknowledged writes of one key in real-time order (a test on it would prove
/// nothing).
pub fn inject_stale_read(history: &RegisterHistory) -> Option<(RegisterHistory, usize)> {
    let acked = |op: &Operation<RegisterInput, RegisterOutput>| match (&op.input, &op.completion) {
        (
            RegisterInput::Write(v),
            Completion::Returned {
                at,
                output: RegisterOutput::Write,
            },
        ) => Some((v.clone(), *at)),
        (
            RegisterInput::CompareAndSet { new, .. },
            Completion::Returned {
                at,
                output: RegisterOutput::CompareAndSet(true),
            },
        ) => Some((new.clone(), *at)),
        _ => None,
    };
    for first in &history.ops {
        let Some((old, first_ret)) = acked(first) else {
            continue;
        };
        let later = history.ops.iter().find_map(|w| {
            let (new, ret) = acked(w)?;
            (w.key == first.key && w.call > first_ret && new != old).then_some(ret)
        });
        if let Some(later_ret) = later {
            let mut h = history.clone();
            let index = h.push(Operation::returned(
                ClientId::MAX,
                first.key.clone(),
                RegisterInput::Read,
                later_ret + 1,
                later_ret + 2,
                RegisterOutput::Read(Some(old)),
            ));
            return Some((h, index));
        }
    }
    None
}
