//! The values of the `lock` and `write` families.
//!
//! ```text
//!   lock  (key)            := version=1 | kind | start_ts | ttl_ms | min_commit_ts
//!                             | primary:lp | flags(bit 0: has short value) [| short value:lp]
//!   write (key, commit_ts) := version=1 | kind | start_ts [| short value:lp]
//! ```
//!
//! Integers are varints. A *short value* (up to [`SHORT_VALUE_MAX`] bytes) is stored inline in
//! the lock during prewrite and in the write record at commit, so small values need no read of
//! the `default` family. Decoding never panics: malformed bytes are an error the caller turns
//! into a corruption report naming the key.

use crate::lsm::coding::{put_length_prefixed, put_varint, Decoder};

use super::Timestamp;

/// Values up to this size live inline in lock and write records.
pub const SHORT_VALUE_MAX: usize = 64;

const VERSION: u8 = 1;

/// What a lock or write record does to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// Sets the key.
    Put,
    /// Deletes the key.
    Delete,
    /// Writes nothing: locks a key that was only read (SERIALIZABLE) so that a concurrent
    /// writer of it conflicts.
    Lock,
}

impl LockKind {
    fn to_u8(self) -> u8 {
        match self {
            LockKind::Put => 1,
            LockKind::Delete => 2,
            LockKind::Lock => 3,
        }
    }

    fn from_u8(b: u8) -> Option<LockKind> {
        match b {
            1 => Some(LockKind::Put),
            2 => Some(LockKind::Delete),
            3 => Some(LockKind::Lock),
            _ => None,
        }
    }
}

/// A Percolator lock: the key is being written by transaction `start_ts`, whose fate is
/// decided by its `primary` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    /// What the transaction does to the key.
    pub kind: LockKind,
    /// The transaction's primary key: its commit record is the transaction's commit point.
    pub primary: Vec<u8>,
    /// The transaction's start timestamp.
    pub start_ts: Timestamp,
    /// Milliseconds after `start_ts`'s physical time (or after the last heartbeat) before
    /// other transactions may roll the lock's transaction back.
    pub ttl_ms: u64,
    /// The commit timestamp may not be lower than this (raised by readers and heartbeats).
    pub min_commit_ts: Timestamp,
    /// The value, when short enough to live inline.
    pub short_value: Option<Vec<u8>>,
}

impl Lock {
    /// Encodes the lock.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION, self.kind.to_u8()];
        put_varint(&mut out, self.start_ts);
        put_varint(&mut out, self.ttl_ms);
        put_varint(&mut out, self.min_commit_ts);
        put_length_prefixed(&mut out, &self.primary);
        match &self.short_value {
            Some(v) => {
                out.push(1);
                put_length_prefixed(&mut out, v);
            }
            None => out.push(0),
        }
        out
    }

    /// Decodes a lock; `None` if malformed.
    pub fn decode(data: &[u8]) -> Option<Lock> {
        let mut d = Decoder::new(data);
        if d.u8()? != VERSION {
            return None;
        }
        let kind = LockKind::from_u8(d.u8()?)?;
        let start_ts = d.varint()?;
        let ttl_ms = d.varint()?;
        let min_commit_ts = d.varint()?;
        let primary = d.length_prefixed()?.to_vec();
        let short_value = match d.u8()? {
            0 => None,
            1 => Some(d.length_prefixed()?.to_vec()),
            _ => return None,
        };
        d.is_empty().then_some(Lock {
            kind,
            primary,
            start_ts,
            ttl_ms,
            min_commit_ts,
            short_value,
        })
    }
}

/// What a commit record says about the version at its commit timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// A value was written (in the `default` family at `start_ts`, or inline).
    Put,
    /// The key was deleted.
    Delete,
    /// The key was locked and committed without a change (SERIALIZABLE reads).
    Lock,
    /// The transaction `start_ts` was rolled back; it can never commit this key.
    Rollback,
}

impl WriteKind {
    fn to_u8(self) -> u8 {
        match self {
            WriteKind::Put => 1,
            WriteKind::Delete => 2,
            WriteKind::Lock => 3,
            WriteKind::Rollback => 4,
        }
    }

    fn from_u8(b: u8) -> Option<WriteKind> {
        match b {
            1 => Some(WriteKind::Put),
            2 => Some(WriteKind::Delete),
            3 => Some(WriteKind::Lock),
            4 => Some(WriteKind::Rollback),
            _ => None,
        }
    }

    /// The write kind that commits a lock of `kind`.
    pub fn from_lock(kind: LockKind) -> WriteKind {
        match kind {
            LockKind::Put => WriteKind::Put,
            LockKind::Delete => WriteKind::Delete,
            LockKind::Lock => WriteKind::Lock,
        }
    }
}

/// A commit (or rollback) record in the `write` family, keyed by `(key, commit_ts)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// What happened.
    pub kind: WriteKind,
    /// The start timestamp of the transaction that wrote it.
    pub start_ts: Timestamp,
    /// The value, when short enough to live inline.
    pub short_value: Option<Vec<u8>>,
}

impl Write {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION, self.kind.to_u8()];
        put_varint(&mut out, self.start_ts);
        if let Some(v) = &self.short_value {
            put_length_prefixed(&mut out, v);
        }
        out
    }

    /// Decodes a record; `None` if malformed.
    pub fn decode(data: &[u8]) -> Option<Write> {
        let mut d = Decoder::new(data);
        if d.u8()? != VERSION {
            return None;
        }
        let kind = WriteKind::from_u8(d.u8()?)?;
        let start_ts = d.varint()?;
        let short_value = if d.is_empty() {
            None
        } else {
            Some(d.length_prefixed()?.to_vec())
        };
        d.is_empty().then_some(Write {
            kind,
            start_ts,
            short_value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kinds() -> impl Strategy<Value = LockKind> {
        prop_oneof![
            Just(LockKind::Put),
            Just(LockKind::Delete),
            Just(LockKind::Lock)
        ]
    }

    proptest! {
        #[test]
        fn lock_roundtrips(kind in kinds(), primary: Vec<u8>, start_ts: u64, ttl_ms: u64, min_commit_ts: u64,
                           short_value: Option<Vec<u8>>) {
            let lock = Lock { kind, primary, start_ts, ttl_ms, min_commit_ts, short_value };
            prop_assert_eq!(Lock::decode(&lock.encode()), Some(lock));
        }

        #[test]
        fn write_roundtrips(k in 1u8..5, start_ts: u64, short_value: Option<Vec<u8>>) {
            let w = Write { kind: WriteKind::from_u8(k).unwrap(), start_ts, short_value };
            prop_assert_eq!(Write::decode(&w.encode()), Some(w));
        }

        #[test]
        fn garbage_never_panics(data: Vec<u8>) {
            let _ = Lock::decode(&data);
            let _ = Write::decode(&data);
        }
    }

    #[test]
    fn truncations_are_rejected() {
        let lock = Lock {
            kind: LockKind::Put,
            primary: b"pk".to_vec(),
            start_ts: 10,
            ttl_ms: 3000,
            min_commit_ts: 11,
            short_value: Some(b"v".to_vec()),
        };
        let enc = lock.encode();
        for cut in 0..enc.len() {
            assert_eq!(Lock::decode(&enc[..cut]), None);
        }
        assert_eq!(Write::decode(&[9, 1, 5]), None, "unknown version");
    }
}
