//! The bytes of a normal Raft entry: a [`RaftCommand`], the unit the leader proposes and every
//! replica's [`KvApply`](super::KvApply) applies.
//!
//! A command names the shard and the epoch it was built for, so a replica can refuse, on
//! every replica alike, a command routed under an out-of-date view of the shard. It also
//! names the leader term its writes were computed in (0: not tied to one): an entry of any
//! other term is refused, because a leader that lost and regained leadership between
//! computing and proposing may have missed another leader's writes to the same keys (D67). Its ops run
//! in order, all in one LSM batch with the shard's applied index, so many client commands
//! (each an `Op::Write` the leader computed) can ride in one entry:
//!
//! ```text
//!   command := version u8 (1) | shard u64 LE | conf_ver u64 LE | epoch version u64 LE
//!              | term u64 LE | op count: varint | op* | crc u32 LE
//!   op      := 0x01 batch:lp    Op::Write: lsm::WriteBatch::to_bytes (sequence field 0)
//!            | 0x02 u64 LE      Op::SetTsoHighWater
//!            | 0x03 u64 LE      Op::SetGcSafePoint
//!   lp      := varint length, bytes
//!   crc      = masked crc32c of every byte before it
//! ```
//!
//! The encoding is deterministic (the same command is the same bytes) and versioned by its
//! first byte. Decoding trusts nothing: a wrong version, a bad checksum, a truncated field,
//! an unknown op, trailing bytes or a malformed batch are each a
//! [`RaftStoreError::Corruption`] naming what is wrong, never a panic. The raft log and the
//! transport already checksum what they carry; this checksum covers the command from the
//! proposer's encoder to the state machine, across every copy in between.

use crate::lsm::coding::{masked_crc, put_length_prefixed, put_varint, Decoder};
use crate::lsm::WriteBatch;

use super::error::{RaftStoreError, Result};
use super::types::{ShardEpoch, ShardId};

/// The command encoding's version byte.
pub const COMMAND_VERSION: u8 = 1;

const OP_WRITE: u8 = 1;
const OP_SET_TSO_HIGH_WATER: u8 = 2;
const OP_SET_GC_SAFE_POINT: u8 = 3;

/// Version, shard, conf_ver, version, term.
const HEADER_LEN: usize = 1 + 8 + 8 + 8 + 8;
const CRC_LEN: usize = 4;

/// One operation of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Writes to the replicated families (`default`, `lock`, `write`), inside the shard's
    /// range. The `raft-state` family is the replica's own and refused here.
    Write(WriteBatch),
    /// Raises the cluster timestamp oracle's persisted window to this timestamp; a lower
    /// value leaves it where it is (the window never moves back).
    SetTsoHighWater(u64),
    /// Raises the cluster GC safe point to this timestamp; a lower value is ignored.
    SetGcSafePoint(u64),
}

/// What a normal Raft entry carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftCommand {
    /// The shard the command was built for.
    pub shard: ShardId,
    /// The shard's epoch as the proposer knew it; only `version` is checked at apply.
    pub epoch: ShardEpoch,
    /// The leader term the writes were computed in; an entry of another term is refused.
    /// 0 when the command does not depend on the state it was computed from.
    pub term: u64,
    /// The operations, applied in order and atomically.
    pub ops: Vec<Op>,
}

impl RaftCommand {
    /// A command with no operations yet.
    pub fn new(shard: ShardId, epoch: ShardEpoch) -> RaftCommand {
        RaftCommand {
            shard,
            epoch,
            term: 0,
            ops: Vec::new(),
        }
    }

    /// Ties the command to the leader term its writes were computed in.
    pub fn in_term(mut self, term: u64) -> RaftCommand {
        self.term = term;
        self
    }

    /// Adds an operation.
    pub fn push(&mut self, op: Op) -> &mut RaftCommand {
        self.ops.push(op);
        self
    }

    /// The entry bytes.
    pub fn encode(&self) -> Vec<u8> {
        let body: usize = self
            .ops
            .iter()
            .map(|op| match op {
                Op::Write(b) => 1 + 10 + b.encoded_len(),
                Op::SetTsoHighWater(_) | Op::SetGcSafePoint(_) => 9,
            })
            .sum();
        let mut out = Vec::with_capacity(HEADER_LEN + 10 + body + CRC_LEN);
        out.push(COMMAND_VERSION);
        out.extend_from_slice(&self.shard.0.to_le_bytes());
        out.extend_from_slice(&self.epoch.conf_ver.to_le_bytes());
        out.extend_from_slice(&self.epoch.version.to_le_bytes());
        out.extend_from_slice(&self.term.to_le_bytes());
        put_varint(&mut out, self.ops.len() as u64);
        for op in &self.ops {
            match op {
                Op::Write(batch) => {
                    out.push(OP_WRITE);
                    put_length_prefixed(&mut out, &batch.to_bytes());
                }
                Op::SetTsoHighWater(ts) => {
                    out.push(OP_SET_TSO_HIGH_WATER);
                    out.extend_from_slice(&ts.to_le_bytes());
                }
                Op::SetGcSafePoint(ts) => {
                    out.push(OP_SET_GC_SAFE_POINT);
                    out.extend_from_slice(&ts.to_le_bytes());
                }
            }
        }
        let crc = masked_crc(&[&out]);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes [`RaftCommand::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<RaftCommand> {
        let bad = |what: String| {
            RaftStoreError::Corruption(format!("raft command of {} bytes: {what}", bytes.len()))
        };
        if bytes.len() < HEADER_LEN + 1 + CRC_LEN {
            return Err(bad("too short".into()));
        }
        let (body, crc) = bytes.split_at(bytes.len() - CRC_LEN);
        let mut stored = [0u8; CRC_LEN];
        stored.copy_from_slice(crc);
        if masked_crc(&[body]) != u32::from_le_bytes(stored) {
            return Err(bad("checksum mismatch".into()));
        }
        if body[0] != COMMAND_VERSION {
            return Err(bad(format!("unknown version {}", body[0])));
        }
        let mut d = Decoder::new(&body[1..]);
        let mut word = |what: &str| d.u64().ok_or_else(|| bad(format!("truncated {what}")));
        let shard = ShardId(word("shard id")?);
        let epoch = ShardEpoch {
            conf_ver: word("conf_ver")?,
            version: word("epoch version")?,
        };
        let term = word("term")?;
        let count = d.varint().ok_or_else(|| bad("truncated op count".into()))?;
        // Every op takes at least 9 bytes: never reserve more than the input can hold.
        let mut ops = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(body.len() / 9));
        for i in 0..count {
            let tag = d
                .u8()
                .ok_or_else(|| bad(format!("truncated op {i} of {count}")))?;
            let op = match tag {
                OP_WRITE => {
                    let raw = d
                        .length_prefixed()
                        .ok_or_else(|| bad(format!("truncated write batch in op {i}")))?;
                    Op::Write(
                        WriteBatch::from_bytes(raw)
                            .map_err(|e| bad(format!("write batch in op {i}: {e}")))?,
                    )
                }
                OP_SET_TSO_HIGH_WATER => Op::SetTsoHighWater(
                    d.u64()
                        .ok_or_else(|| bad(format!("truncated timestamp in op {i}")))?,
                ),
                OP_SET_GC_SAFE_POINT => Op::SetGcSafePoint(
                    d.u64()
                        .ok_or_else(|| bad(format!("truncated safe point in op {i}")))?,
                ),
                other => return Err(bad(format!("unknown op {other} at op {i}"))),
            };
            ops.push(op);
        }
        if !d.is_empty() {
            return Err(bad("trailing bytes after the last op".into()));
        }
        Ok(RaftCommand {
            shard,
            epoch,
            term,
            ops,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsm::ColumnFamily;

    fn sample() -> RaftCommand {
        let mut a = WriteBatch::new();
        a.put(ColumnFamily::Default, b"k1", b"v1");
        a.put(ColumnFamily::Write, b"k1\x00", b"commit");
        let mut b = WriteBatch::new();
        b.delete(ColumnFamily::Lock, b"k2");
        b.delete_range(ColumnFamily::Default, b"a", b"b");
        let mut cmd = RaftCommand::new(
            ShardId(7),
            ShardEpoch {
                conf_ver: 3,
                version: 2,
            },
        );
        cmd.push(Op::Write(a))
            .push(Op::SetTsoHighWater(1 << 40))
            .push(Op::Write(b))
            .push(Op::SetGcSafePoint(12345));
        cmd
    }

    #[test]
    fn roundtrips_and_encodes_deterministically() {
        let cmd = sample();
        let bytes = cmd.encode();
        assert_eq!(bytes, sample().encode(), "same command, same bytes");
        assert_eq!(bytes[0], COMMAND_VERSION);
        let back = RaftCommand::decode(&bytes).unwrap();
        assert_eq!(back, cmd);
        assert_eq!(back.encode(), bytes);
        // No ops at all is a valid (empty) command.
        let empty = RaftCommand::new(ShardId(1), ShardEpoch::default());
        assert_eq!(RaftCommand::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn every_truncation_and_flipped_bit_is_a_clear_error() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            match RaftCommand::decode(&bytes[..cut]) {
                Err(RaftStoreError::Corruption(msg)) => assert!(msg.contains("raft command")),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= bit;
                assert!(
                    matches!(
                        RaftCommand::decode(&bad),
                        Err(RaftStoreError::Corruption(_))
                    ),
                    "byte {i} bit {bit:#x}"
                );
            }
        }
        let mut extra = bytes.clone();
        extra.insert(bytes.len() - CRC_LEN, 0);
        assert!(RaftCommand::decode(&extra).is_err());
    }

    /// Bytes with a valid checksum but a bad structure are refused by what they get wrong.
    #[test]
    fn well_checksummed_nonsense_is_refused_by_its_structure() {
        let seal = |mut body: Vec<u8>| {
            let crc = masked_crc(&[&body]);
            body.extend_from_slice(&crc.to_le_bytes());
            body
        };
        let header = |version: u8| {
            let mut h = vec![version];
            h.extend_from_slice(&[0u8; 32]);
            h
        };
        let expect = |bytes: Vec<u8>, what: &str| match RaftCommand::decode(&bytes) {
            Err(RaftStoreError::Corruption(msg)) => assert!(msg.contains(what), "{msg}"),
            other => panic!("{what}: {other:?}"),
        };
        let mut v2 = header(2);
        v2.push(0);
        expect(seal(v2), "unknown version");
        let mut unknown = header(1);
        unknown.extend_from_slice(&[1, 9]);
        expect(seal(unknown), "unknown op 9");
        let mut huge_count = header(1);
        put_varint(&mut huge_count, u64::MAX);
        expect(seal(huge_count), "truncated op 0");
        let mut bad_batch = header(1);
        bad_batch.extend_from_slice(&[1, OP_WRITE]);
        put_length_prefixed(&mut bad_batch, &[0xff; 20]);
        expect(seal(bad_batch), "write batch in op 0");
        let mut trailing = header(1);
        trailing.extend_from_slice(&[0, 0]);
        expect(seal(trailing), "trailing bytes");
    }
}
