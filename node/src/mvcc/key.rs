//! Memcomparable encoding of MVCC keys.
//!
//! A user key is encoded so that the bytewise order of encodings equals the order of keys
//! and no encoding is a prefix of another (TiKV's and CockroachDB's "memcomparable bytes"):
//! the key is cut into groups of 8 bytes, the last group zero padded, and each group is
//! followed by a marker byte `0xff - padding`:
//!
//! ```text
//!   "abc"        -> 61 62 63 00 00 00 00 00 | fa
//!   "abcdefgh"   -> 61 .. 68 | ff | 00 00 00 00 00 00 00 00 | f7
//! ```
//!
//! Versioned keys (the `default` and `write` families) append the timestamp inverted and
//! big-endian, so for one user key newer versions sort first and a seek to `(key, ts)` lands
//! on the newest version at or below `ts`:
//!
//! ```text
//!   versioned key := encode(user key) ++ (!ts as u64 big endian)
//! ```
//!
//! The `lock` family uses the bare encoded key (one lock per key).
//!
//! [`MvccPrefixExtractor`] tells the engine where a `write`-family key's timestamp starts,
//! so its tables carry a bloom filter over encoded user keys and a read of a key's commit
//! records ([`crate::lsm::Db::prefix_iter`]) skips the tables that lack the key.

use crate::lsm::{ColumnFamily, Db, PrefixExtractor};

use super::Timestamp;

const GROUP: usize = 8;
const MARKER: u8 = 0xff;
const PAD: u8 = 0;

/// Appends the memcomparable encoding of `key` to `out`.
pub fn encode_bytes(key: &[u8], out: &mut Vec<u8>) {
    out.reserve((key.len() / GROUP + 1) * (GROUP + 1));
    let mut chunks = key.chunks_exact(GROUP);
    for chunk in &mut chunks {
        out.extend_from_slice(chunk);
        out.push(MARKER);
    }
    let rest = chunks.remainder();
    out.extend_from_slice(rest);
    out.extend(std::iter::repeat_n(PAD, GROUP - rest.len()));
    out.push(MARKER - (GROUP - rest.len()) as u8);
}

/// Decodes a memcomparable key from the front of `input`: the key and the bytes consumed.
/// `None` if the input is not a valid encoding.
pub fn decode_bytes(input: &[u8]) -> Option<(Vec<u8>, usize)> {
    let n = encoded_len(input)?;
    let encoded = &input[..n];
    // `encoded_len` checked the last marker: its padding is at most one group.
    let pad = usize::from(MARKER - encoded[n - 1]);
    let mut key = Vec::with_capacity(n);
    for group in encoded.chunks_exact(GROUP + 1) {
        key.extend_from_slice(&group[..GROUP]);
    }
    key.truncate(key.len() - pad);
    Some((key, n))
}

/// The `lock`-family key of `key`.
pub fn lock_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_bytes(key, &mut out);
    out
}

/// The versioned key `(key, ts)` of the `default` and `write` families.
pub fn versioned_key(key: &[u8], ts: Timestamp) -> Vec<u8> {
    let mut out = Vec::new();
    encode_bytes(key, &mut out);
    out.extend_from_slice(&(!ts).to_be_bytes());
    out
}

/// Splits a versioned key into the user key and its timestamp.
pub fn decode_versioned_key(encoded: &[u8]) -> Option<(Vec<u8>, Timestamp)> {
    let (key, n) = decode_bytes(encoded)?;
    let ts: [u8; 8] = encoded.get(n..)?.try_into().ok()?;
    Some((key, !u64::from_be_bytes(ts)))
}

/// The encoded-key part of a versioned key (everything but the 8 timestamp bytes).
pub fn versioned_key_prefix(encoded: &[u8]) -> &[u8] {
    &encoded[..encoded.len().saturating_sub(8)]
}

/// The length of the memcomparable encoding at the front of `input`, found without
/// decoding it; `None` if the input does not start with a valid encoding.
pub fn encoded_len(input: &[u8]) -> Option<usize> {
    let mut pos = 0;
    loop {
        let group = input.get(pos..pos + GROUP)?;
        let marker = *input.get(pos + GROUP)?;
        pos += GROUP + 1;
        if marker == MARKER {
            continue;
        }
        let pad = usize::from(MARKER.checked_sub(marker)?);
        if pad > GROUP || group[GROUP - pad..].iter().any(|&b| b != PAD) {
            return None;
        }
        return Some(pos);
    }
}

/// The name [`MvccPrefixExtractor`] stores in the tables it builds filters for.
pub const MVCC_PREFIX_EXTRACTOR: &str = "strata.mvcc.write-user-key.v1";

/// The engine's prefix extractor for MVCC data: a `write`-family key
/// `encode(user key) ++ !commit_ts` has the prefix `encode(user key)`. The other families
/// have none: a lock key carries no timestamp, so the whole-key bloom filter already serves
/// lock lookups, and a value is read by its exact key `(key, start_ts)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MvccPrefixExtractor;

impl PrefixExtractor for MvccPrefixExtractor {
    fn name(&self) -> &str {
        MVCC_PREFIX_EXTRACTOR
    }

    fn prefix_len(&self, cf: ColumnFamily, key: &[u8]) -> Option<usize> {
        if cf != ColumnFamily::Write {
            return None;
        }
        let n = encoded_len(key)?;
        (key.len() == n + 8).then_some(n)
    }
}

/// Whether `db` was opened with [`MvccPrefixExtractor`], so commit records can be read with
/// prefix reads.
pub fn prefix_reads_enabled(db: &Db) -> bool {
    db.options()
        .prefix_extractor
        .as_ref()
        .is_some_and(|e| e.name() == MVCC_PREFIX_EXTRACTOR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        let mut out = Vec::new();
        encode_bytes(b"abc", &mut out);
        assert_eq!(out, [0x61, 0x62, 0x63, 0, 0, 0, 0, 0, 0xfa]);
        let mut out = Vec::new();
        encode_bytes(b"", &mut out);
        assert_eq!(out, [0, 0, 0, 0, 0, 0, 0, 0, 0xf7]);
        let mut out = Vec::new();
        encode_bytes(b"abcdefgh", &mut out);
        assert_eq!(out.len(), 18);
        assert_eq!(out[8], 0xff);
        assert_eq!(out[17], 0xf7);
    }

    #[test]
    fn malformed_encodings_are_rejected() {
        assert_eq!(decode_bytes(&[1, 2, 3]), None);
        assert_eq!(
            decode_bytes(&[0, 0, 0, 0, 0, 0, 0, 1, 0xf8]),
            None,
            "padding must be zero"
        );
        assert_eq!(
            decode_bytes(&[0, 0, 0, 0, 0, 0, 0, 0, 0x10]),
            None,
            "marker out of range"
        );
        assert_eq!(decode_versioned_key(&lock_key(b"k")), None, "no timestamp");
    }

    proptest! {
        #[test]
        fn roundtrip_and_order(a: Vec<u8>, b: Vec<u8>, ta: u64, tb: u64) {
            let (ea, eb) = (lock_key(&a), lock_key(&b));
            prop_assert_eq!(decode_bytes(&ea), Some((a.clone(), ea.len())));
            prop_assert_eq!(ea.cmp(&eb), a.cmp(&b));
            let (va, vb) = (versioned_key(&a, ta), versioned_key(&b, tb));
            prop_assert_eq!(decode_versioned_key(&va), Some((a.clone(), ta)));
            // Key ascending, then timestamp descending.
            prop_assert_eq!(va.cmp(&vb), a.cmp(&b).then(tb.cmp(&ta)));
            prop_assert_eq!(versioned_key_prefix(&va), ea.as_slice());
            // The extractor finds the encoded key in versioned write keys only.
            prop_assert_eq!(encoded_len(&va), Some(ea.len()));
            prop_assert_eq!(MvccPrefixExtractor.prefix_len(ColumnFamily::Write, &va), Some(ea.len()));
            prop_assert_eq!(MvccPrefixExtractor.prefix_len(ColumnFamily::Write, &ea), None);
            prop_assert_eq!(MvccPrefixExtractor.prefix_len(ColumnFamily::Lock, &ea), None);
            prop_assert_eq!(MvccPrefixExtractor.prefix_len(ColumnFamily::Default, &va), None);
        }

        #[test]
        fn decoding_garbage_never_panics(data: Vec<u8>) {
            let _ = decode_bytes(&data);
            let _ = decode_versioned_key(&data);
            prop_assert_eq!(encoded_len(&data), decode_bytes(&data).map(|(_, n)| n));
            let _ = MvccPrefixExtractor.prefix_len(ColumnFamily::Write, &data);
        }
    }
}
