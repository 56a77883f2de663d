//! Keys inside the engine.
//!
//! The engine keeps every column family in one tree: an *engine key* is the column family's
//! id byte followed by the caller's key, so each family is a contiguous, bytewise-ordered
//! slice of the tree and one write batch (one sequence-number range, one WAL record, one
//! flush) covers all families atomically.
//!
//! An *internal key* is an engine key followed by an 8-byte little-endian trailer,
//! `seq << 8 | kind`. Internal keys order by engine key ascending, then by trailer
//! descending, so the newest version of a key comes first:
//!
//! ```text
//!   +----+-------------------+-------------------------------+
//!   | cf |   user key bytes  | (seq << 8 | kind) as u64 LE   |
//!   +----+-------------------+-------------------------------+
//!   |<----- engine key ----->|<---------- trailer ---------->|
//! ```

use std::cmp::Ordering;

/// A sequence number: the engine's logical clock. Every entry of every write batch gets its
/// own, in commit order; a snapshot is a sequence number.
pub type SeqNo = u64;

/// The largest sequence number a trailer can hold (56 bits).
pub const MAX_SEQ: SeqNo = (1 << 56) - 1;

/// Length of the trailer at the end of an internal key.
pub const TRAILER_LEN: usize = 8;

/// A column family: a separate key space of the engine, written atomically with the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ColumnFamily {
    /// Values (for MVCC: `key@start_ts -> value`).
    Default,
    /// Percolator locks.
    Lock,
    /// Percolator commit records.
    Write,
    /// Raft metadata of shard replicas (applied index, hard state mirrors).
    RaftState,
}

impl ColumnFamily {
    /// All column families, in id order.
    pub const ALL: [ColumnFamily; 4] = [
        ColumnFamily::Default,
        ColumnFamily::Lock,
        ColumnFamily::Write,
        ColumnFamily::RaftState,
    ];

    /// The byte that prefixes this family's keys on disk. Never renumber these.
    pub const fn id(self) -> u8 {
        match self {
            ColumnFamily::Default => 0,
            ColumnFamily::Lock => 1,
            ColumnFamily::Write => 2,
            ColumnFamily::RaftState => 3,
        }
    }

    /// The family with the given id byte.
    pub fn from_id(id: u8) -> Option<ColumnFamily> {
        ColumnFamily::ALL.get(usize::from(id)).copied()
    }

    /// The family's name, as configuration and statistics spell it.
    pub const fn name(self) -> &'static str {
        match self {
            ColumnFamily::Default => "default",
            ColumnFamily::Lock => "lock",
            ColumnFamily::Write => "write",
            ColumnFamily::RaftState => "raft-state",
        }
    }
}

impl std::fmt::Display for ColumnFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What an internal key's entry means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// A point deletion (tombstone).
    Delete = 0,
    /// A value.
    Put = 1,
}

impl ValueKind {
    /// Decodes the kind byte of a trailer.
    pub fn from_u8(b: u8) -> Option<ValueKind> {
        match b {
            0 => Some(ValueKind::Delete),
            1 => Some(ValueKind::Put),
            _ => None,
        }
    }
}

/// The kind byte used in seek targets: it sorts before every real kind of the same sequence
/// number, so a seek to `(key, seq)` lands on the newest entry with sequence `<= seq`.
const SEEK_KIND: u8 = 0xff;

/// Builds the engine key `cf || key`.
pub fn engine_key(cf: ColumnFamily, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.push(cf.id());
    out.extend_from_slice(key);
    out
}

/// Appends the internal key `(engine_key, seq, kind)` to `buf`.
pub fn put_internal_key(buf: &mut Vec<u8>, engine_key: &[u8], seq: SeqNo, kind: ValueKind) {
    buf.extend_from_slice(engine_key);
    buf.extend_from_slice(&((seq << 8) | kind as u64).to_le_bytes());
}

/// The internal key `(engine_key, seq, kind)`.
pub fn internal_key(engine_key: &[u8], seq: SeqNo, kind: ValueKind) -> Vec<u8> {
    let mut out = Vec::with_capacity(engine_key.len() + TRAILER_LEN);
    put_internal_key(&mut out, engine_key, seq, kind);
    out
}

/// A seek target that finds the newest version of `engine_key` visible at `seq`.
pub fn seek_key(engine_key: &[u8], seq: SeqNo) -> Vec<u8> {
    let mut out = Vec::with_capacity(engine_key.len() + TRAILER_LEN);
    out.extend_from_slice(engine_key);
    out.extend_from_slice(&((seq << 8) | u64::from(SEEK_KIND)).to_le_bytes());
    out
}

/// A target that sorts after every version of `engine_key` (for reverse seeks).
pub fn seek_key_after(engine_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(engine_key.len() + TRAILER_LEN);
    out.extend_from_slice(engine_key);
    out.extend_from_slice(&0u64.to_le_bytes());
    out
}

/// The engine-key part of an internal key. Malformed (too short) keys yield an empty slice
/// rather than a panic; decoders reject them before they get this far.
pub fn user_part(ikey: &[u8]) -> &[u8] {
    &ikey[..ikey.len().saturating_sub(TRAILER_LEN)]
}

/// The trailer of an internal key (0 if malformed).
pub fn trailer(ikey: &[u8]) -> u64 {
    if ikey.len() < TRAILER_LEN {
        return 0;
    }
    let mut t = [0u8; 8];
    t.copy_from_slice(&ikey[ikey.len() - TRAILER_LEN..]);
    u64::from_le_bytes(t)
}

/// The sequence number of an internal key.
pub fn seq_of(ikey: &[u8]) -> SeqNo {
    trailer(ikey) >> 8
}

/// The kind of an internal key, or `None` if the byte is not a known kind.
pub fn kind_of(ikey: &[u8]) -> Option<ValueKind> {
    ValueKind::from_u8((trailer(ikey) & 0xff) as u8)
}

/// Whether `ikey` is long enough to be an internal key and has a known kind.
pub fn is_valid_internal_key(ikey: &[u8]) -> bool {
    ikey.len() > TRAILER_LEN && kind_of(ikey).is_some()
}

/// Total order of internal keys: engine key ascending, then trailer descending.
pub fn compare_internal(a: &[u8], b: &[u8]) -> Ordering {
    user_part(a)
        .cmp(user_part(b))
        .then_with(|| trailer(b).cmp(&trailer(a)))
}

/// An owned internal key ordered by [`compare_internal`], for ordered containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalKey(pub bytes::Bytes);

impl Ord for InternalKey {
    fn cmp(&self, other: &Self) -> Ordering {
        compare_internal(&self.0, &other.0)
    }
}

impl PartialOrd for InternalKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The smallest engine key greater than every key starting with `prefix`, or `None` if no
/// such key exists (the prefix is all `0xff`).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last < 0xff {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_version_sorts_first() {
        let a5 = internal_key(b"\0a", 5, ValueKind::Put);
        let a9 = internal_key(b"\0a", 9, ValueKind::Delete);
        let b1 = internal_key(b"\0b", 1, ValueKind::Put);
        assert_eq!(compare_internal(&a9, &a5), Ordering::Less);
        assert_eq!(compare_internal(&a5, &b1), Ordering::Less);
        // Length differences in the user key do not confuse the trailer.
        let ab = internal_key(b"\0ab", 1, ValueKind::Put);
        assert_eq!(compare_internal(&a5, &ab), Ordering::Less);
    }

    #[test]
    fn seek_key_lands_on_visible_version() {
        let a5 = internal_key(b"\0a", 5, ValueKind::Put);
        assert_eq!(compare_internal(&seek_key(b"\0a", 5), &a5), Ordering::Less);
        assert_eq!(
            compare_internal(&seek_key(b"\0a", 4), &a5),
            Ordering::Greater
        );
        assert_eq!(
            compare_internal(&seek_key_after(b"\0a"), &a5),
            Ordering::Greater
        );
        assert_eq!(seq_of(&a5), 5);
        assert_eq!(kind_of(&a5), Some(ValueKind::Put));
    }

    #[test]
    fn prefix_successor_handles_ff() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"\xff\xff"), None);
    }

    #[test]
    fn column_family_ids_roundtrip() {
        for cf in ColumnFamily::ALL {
            assert_eq!(ColumnFamily::from_id(cf.id()), Some(cf));
        }
        assert_eq!(ColumnFamily::from_id(200), None);
    }
}
