//! The two seams between the raftstore and the rest of the node: where committed entries go
//! ([`Apply`], the state machine) and where outgoing Raft messages go ([`Transport`]).
//!
//! Both are traits so that the same ready loop drives the LSM and the network in production
//! and an in-memory map and a fault-injecting queue in tests.

use protobuf::Message as _;
use raft::eraftpb::{Entry, Message};

use super::error::{RaftStoreError, Result};
use super::types::{ProposalId, ShardId};

/// A shard's state machine. Entries arrive in index order, each exactly once per process
/// (entries at or below [`Apply::applied_index`] are never passed again); conf-change and
/// empty entries arrive too, so the state machine can count them as applied.
pub trait Apply: Send {
    /// Applies `entries` in order and reports the index applied through (the last entry's)
    /// and the entries it refused.
    ///
    /// Applying must be deterministic: the same entries give the same state, and the same
    /// refusals, on every replica. A refused entry changes nothing but the applied index; its
    /// proposer gets the refusal (a retryable [`RaftStoreError::StaleEpoch`], say). An `Err`
    /// is not a refusal: it means this replica cannot go on (a damaged command, a failing
    /// disk) and stops the ready loop.
    fn apply(&mut self, shard: ShardId, entries: &[Entry]) -> Result<ApplyOutcome>;

    /// The index applied through so far (0 for a fresh state machine); used at restart.
    fn applied_index(&self) -> u64;

    /// The index through which the applied state survives a crash. The raft log is never
    /// compacted past it, since a restart replays the log from there.
    ///
    /// The default, [`Apply::applied_index`], suits a state machine that persists each apply
    /// before returning. An in-memory machine (the tests') takes it too: it loses everything
    /// in a crash, and a replica whose log was compacted then waits for a snapshot from the
    /// leader (see `Peer::open`).
    fn durable_applied_index(&self) -> u64 {
        self.applied_index()
    }

    /// The state as of [`Apply::applied_index`], as bytes a replica can [`Apply::restore`]
    /// (sent to followers that need entries the leader's log no longer has). Built on demand,
    /// when raft-rs asks for a snapshot, on the ready loop's thread.
    fn snapshot(&self) -> Result<Vec<u8>>;

    /// Replaces the whole state with a snapshot's, applied through `index`.
    fn restore(&mut self, shard: ShardId, index: u64, data: &[u8]) -> Result<()>;
}

/// What [`Apply::apply`] did with a run of entries.
#[derive(Debug, Default)]
pub struct ApplyOutcome {
    /// The index applied through (refused entries count as applied).
    pub applied: u64,
    /// The entries refused, by index, with the error their proposers get.
    pub rejected: Vec<(u64, RaftStoreError)>,
}

impl ApplyOutcome {
    /// Everything through `applied` applied, nothing refused.
    pub fn applied(applied: u64) -> ApplyOutcome {
        ApplyOutcome {
            applied,
            rejected: Vec::new(),
        }
    }
}

/// One Raft message on its way to another node's replica of `shard`.
#[derive(Debug, Clone, PartialEq)]
pub struct RaftMessage {
    /// The shard whose group the message belongs to.
    pub shard: ShardId,
    /// The raft-rs message (`to` names the destination replica).
    pub msg: Message,
}

impl RaftMessage {
    /// Encodes as `shard id (u64 LE) || protobuf message`, the bytes carried between nodes.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = self.shard.0.to_le_bytes().to_vec();
        self.msg.write_to_vec(&mut out)?;
        Ok(out)
    }

    /// Decodes [`RaftMessage::encode`]'s bytes. Only ever fed bytes from authenticated peers
    /// (rust-protobuf 2 has a known recursion advisory on crafted input).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < 8 {
            return Err(RaftStoreError::Corruption(format!(
                "raft message of {} bytes",
                bytes.len()
            )));
        }
        let (head, body) = bytes.split_at(8);
        let mut id = [0u8; 8];
        id.copy_from_slice(head);
        Ok(Self {
            shard: ShardId(u64::from_le_bytes(id)),
            msg: Message::parse_from_bytes(body)?,
        })
    }
}

/// Delivers outgoing Raft messages. Sending never blocks the ready loop and may lose
/// messages: Raft retries on its own.
pub trait Transport {
    /// Queues `msg` for its destination.
    fn send(&mut self, msg: RaftMessage);
}

/// How a proposal ended, reported only once its entry was applied (or can no longer be).
#[derive(Debug)]
pub struct ProposalResult {
    /// The shard proposed to.
    pub shard: ShardId,
    /// The caller's id for the proposal.
    pub id: ProposalId,
    /// The entry's index when applied, or why it will never be (a [`RaftStoreError::NotLeader`]
    /// when a new leader did not keep it, or the state machine's refusal, such as
    /// [`RaftStoreError::StaleEpoch`]: both retryable).
    pub result: Result<u64>,
}
