//! The values of the `lock` and `write` families.
//!
//! ```text
//!   lock  (key)            := version | kind | start_ts | ttl_ms | min_commit_ts
//!                             | primary:lp | flags [| short value:lp] [| node_id | run_id]
//!                flags:       bit 0: has short value; bit 1: has coordinator (version 2 only)
//!   write (key, commit_ts) := version=1 | kind | start_ts [| short value:lp]
//! ```
//!
//! Integers are varints. A lock that names its [`Coordinator`] (the node and run of the node
//! that drives its transaction) is written as version 2; one without is written exactly as
//! version 1 was, and version 1 records (written before coordinators were recorded) still
//! decode, with no coordinator. A *short value* (up to [`SHORT_VALUE_MAX`] bytes) is stored inline in
//! the lock during prewrite and in the write record at commit, so small values need no read of
//! the `default` family. Decoding never panics: malformed bytes are an error the caller turns
//! into a corruption report naming the key.

use crate::lsm::coding::{put_length_prefixed, put_varint, Decoder};

use super::Timestamp;

/// Values up to this size live inline in lock and write records (D158: 255, as TiKV; a
/// value inline costs a put one memtable insert and a read one lookup instead of two).
/// Records written under an earlier, smaller bound decode as before: where a value lives
/// is recorded, not derived from its length.
pub const SHORT_VALUE_MAX: usize = 255;

const VERSION: u8 = 1;

/// The lock record version that may carry a coordinator.
const LOCK_VERSION_COORDINATOR: u8 = 2;

const FLAG_SHORT_VALUE: u8 = 1;
const FLAG_COORDINATOR: u8 = 2;

/// Who drives a transaction's commit: a node and one run of it (the run id grows with every
/// start of the node, see `txn::node_meta`). A lock whose coordinator is an earlier run of
/// the node looking at it belongs to a coordinator known to be gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Coordinator {
    /// The coordinating node's id.
    pub node_id: u64,
    /// The run of that node.
    pub run_id: u64,
}

impl Coordinator {
    /// Whether `self` is an earlier run of the same node as `current`: the coordinator
    /// died with that run, so its locks need not be waited out.
    pub fn is_earlier_run_of(&self, current: &Coordinator) -> bool {
        self.node_id == current.node_id && self.run_id < current.run_id
    }
}

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
    /// The node run driving the transaction, if recorded (locks written before
    /// coordinators were recorded have none).
    pub coordinator: Option<Coordinator>,
}

impl Lock {
    /// Encodes the lock.
    pub fn encode(&self) -> Vec<u8> {
        let version = if self.coordinator.is_some() {
            LOCK_VERSION_COORDINATOR
        } else {
            VERSION
        };
        let mut out = vec![version, self.kind.to_u8()];
        put_varint(&mut out, self.start_ts);
        put_varint(&mut out, self.ttl_ms);
        put_varint(&mut out, self.min_commit_ts);
        put_length_prefixed(&mut out, &self.primary);
        let mut flags = 0;
        if self.short_value.is_some() {
            flags |= FLAG_SHORT_VALUE;
        }
        if self.coordinator.is_some() {
            flags |= FLAG_COORDINATOR;
        }
        out.push(flags);
        if let Some(v) = &self.short_value {
            put_length_prefixed(&mut out, v);
        }
        if let Some(c) = &self.coordinator {
            put_varint(&mut out, c.node_id);
            put_varint(&mut out, c.run_id);
        }
        out
    }

    /// Decodes a lock (version 1 or 2); `None` if malformed.
    pub fn decode(data: &[u8]) -> Option<Lock> {
        let mut d = Decoder::new(data);
        let known_flags = match d.u8()? {
            VERSION => FLAG_SHORT_VALUE,
            LOCK_VERSION_COORDINATOR => FLAG_SHORT_VALUE | FLAG_COORDINATOR,
            _ => return None,
        };
        let kind = LockKind::from_u8(d.u8()?)?;
        let start_ts = d.varint()?;
        let ttl_ms = d.varint()?;
        let min_commit_ts = d.varint()?;
        let primary = d.length_prefixed()?.to_vec();
        let flags = d.u8()?;
        if flags & !known_flags != 0 {
            return None;
        }
        let short_value = if flags & FLAG_SHORT_VALUE != 0 {
            Some(d.length_prefixed()?.to_vec())
        } else {
            None
        };
        let coordinator = if flags & FLAG_COORDINATOR != 0 {
            Some(Coordinator {
                node_id: d.varint()?,
                run_id: d.varint()?,
            })
        } else {
            None
        };
        d.is_empty().then_some(Lock {
            kind,
            primary,
            start_ts,
            ttl_ms,
            min_commit_ts,
            short_value,
            coordinator,
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
                           short_value: Option<Vec<u8>>, coordinator: Option<(u64, u64)>) {
            let coordinator = coordinator.map(|(node_id, run_id)| Coordinator { node_id, run_id });
            let lock = Lock { kind, primary, start_ts, ttl_ms, min_commit_ts, short_value, coordinator };
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
            coordinator: Some(Coordinator {
                node_id: 1,
                run_id: 7,
            }),
        };
        let enc = lock.encode();
        for cut in 0..enc.len() {
            assert_eq!(Lock::decode(&enc[..cut]), None);
        }
        assert_eq!(Write::decode(&[9, 1, 5]), None, "unknown version");
    }

    #[test]
    fn version_1_locks_still_decode_and_locks_without_coordinator_keep_that_format() {
        // A lock as version 1 wrote it: Put, start_ts 10, ttl 3000, min_commit_ts 11,
        // primary "pk", short value "v".
        let v1 = [1, 1, 10, 0xb8, 0x17, 11, 2, b'p', b'k', 1, 1, b'v'];
        let lock = Lock::decode(&v1).expect("a version 1 lock decodes");
        assert_eq!(lock.primary, b"pk");
        assert_eq!(lock.ttl_ms, 3000);
        assert_eq!(lock.short_value.as_deref(), Some(&b"v"[..]));
        assert_eq!(lock.coordinator, None);
        assert_eq!(lock.encode(), v1, "no coordinator: the version 1 bytes");
        // Version 1 never had a coordinator flag.
        let mut bad = v1;
        bad[9] = 3;
        assert_eq!(Lock::decode(&bad), None);
    }

    #[test]
    fn an_earlier_run_of_the_same_node_is_gone() {
        let current = Coordinator {
            node_id: 3,
            run_id: 5,
        };
        let run = |node_id, run_id| Coordinator { node_id, run_id };
        assert!(run(3, 4).is_earlier_run_of(&current));
        assert!(!run(3, 5).is_earlier_run_of(&current), "the current run");
        assert!(!run(3, 6).is_earlier_run_of(&current));
        assert!(!run(2, 1).is_earlier_run_of(&current), "another node");
    }
}
