//! Write batches: the unit of atomicity.
//!
//! A batch holds puts, deletes and range deletions across column families. The engine gives
//! its entries consecutive sequence numbers, writes it to the WAL as one record and applies it
//! to the memtable, so a reader sees all of it or none of it, and recovery restores whole
//! batches only.
//!
//! The encoded form is what the WAL stores, and (with `first_seq` 0) what a replicated
//! command carries ([`WriteBatch::to_bytes`], [`WriteBatch::from_bytes`]):
//!
//! ```text
//!   first_seq: u64 LE | count: u32 LE | entry*
//!   entry := Put:         0x01 cf key:lp value:lp
//!          | Delete:      0x00 cf key:lp
//!          | DeleteRange: 0x02 cf start:lp end:lp     (deletes [start, end))
//!          | DeleteFrom:  0x03 cf start:lp            (deletes [start, end of the family))
//!   lp    := varint length, bytes
//! ```

use super::coding::{put_length_prefixed, Decoder};
use super::error::{Error, Result};
use super::key::{ColumnFamily, SeqNo};

const TAG_DELETE: u8 = 0;
const TAG_PUT: u8 = 1;
const TAG_DELETE_RANGE: u8 = 2;
const TAG_DELETE_FROM: u8 = 3;
/// Bytes of a batch's header: `first_seq: u64 LE | count: u32 LE`.
pub const HEADER_LEN: usize = 12;

/// Largest key the engine accepts (the API layer enforces tighter, documented limits).
pub const MAX_KEY_LEN: usize = 1 << 20;
/// Largest value the engine accepts.
pub const MAX_VALUE_LEN: usize = 64 << 20;
/// Largest encoded batch the engine accepts.
pub const MAX_BATCH_BYTES: usize = 512 << 20;

/// One operation of a batch, borrowed from its encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOp<'a> {
    /// Set `key` to `value`.
    Put {
        cf: ColumnFamily,
        key: &'a [u8],
        value: &'a [u8],
    },
    /// Delete `key`.
    Delete { cf: ColumnFamily, key: &'a [u8] },
    /// Delete every key in `[start, end)`.
    DeleteRange {
        cf: ColumnFamily,
        start: &'a [u8],
        end: &'a [u8],
    },
    /// Delete every key of the family from `start` on.
    DeleteFrom { cf: ColumnFamily, start: &'a [u8] },
}

/// An atomic group of writes across column families.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteBatch {
    rep: Vec<u8>,
    count: u32,
    /// Bytes of keys and values the caller asked to write (for write amplification).
    user_bytes: u64,
    /// Set when an operation broke a limit; reported by [`WriteBatch::validate`].
    invalid: Option<String>,
}

impl Default for WriteBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty batch with room for `bytes` of keys and values without reallocating.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut rep = Vec::with_capacity(HEADER_LEN + bytes + 16);
        rep.resize(HEADER_LEN, 0);
        WriteBatch {
            rep,
            count: 0,
            user_bytes: 0,
            invalid: None,
        }
    }

    fn check_key(&mut self, key: &[u8]) {
        if self.invalid.is_none() && key.len() > MAX_KEY_LEN {
            self.invalid = Some(format!(
                "key of {} bytes exceeds the limit of {MAX_KEY_LEN} bytes",
                key.len()
            ));
        }
    }

    /// Adds a put.
    pub fn put(&mut self, cf: ColumnFamily, key: &[u8], value: &[u8]) {
        self.check_key(key);
        if self.invalid.is_none() && value.len() > MAX_VALUE_LEN {
            self.invalid = Some(format!(
                "value of {} bytes exceeds the limit of {MAX_VALUE_LEN} bytes",
                value.len()
            ));
        }
        self.rep.push(TAG_PUT);
        self.rep.push(cf.id());
        put_length_prefixed(&mut self.rep, key);
        put_length_prefixed(&mut self.rep, value);
        self.count += 1;
        self.user_bytes += (key.len() + value.len()) as u64;
    }

    /// Adds a point delete.
    pub fn delete(&mut self, cf: ColumnFamily, key: &[u8]) {
        self.check_key(key);
        self.rep.push(TAG_DELETE);
        self.rep.push(cf.id());
        put_length_prefixed(&mut self.rep, key);
        self.count += 1;
        self.user_bytes += key.len() as u64;
    }

    /// Adds a deletion of every key of `cf` in `[start, end)`. It costs one entry no matter
    /// how many keys it covers.
    pub fn delete_range(&mut self, cf: ColumnFamily, start: &[u8], end: &[u8]) {
        self.check_key(start);
        self.check_key(end);
        if self.invalid.is_none() && start > end {
            self.invalid = Some("range deletion start is after its end".to_string());
        }
        self.rep.push(TAG_DELETE_RANGE);
        self.rep.push(cf.id());
        put_length_prefixed(&mut self.rep, start);
        put_length_prefixed(&mut self.rep, end);
        self.count += 1;
        self.user_bytes += (start.len() + end.len()) as u64;
    }

    /// Adds a deletion of every key of `cf` at or after `start` (a range with no end).
    pub fn delete_range_from(&mut self, cf: ColumnFamily, start: &[u8]) {
        self.check_key(start);
        self.rep.push(TAG_DELETE_FROM);
        self.rep.push(cf.id());
        put_length_prefixed(&mut self.rep, start);
        self.count += 1;
        self.user_bytes += start.len() as u64;
    }

    /// Adds every operation of `other`, after this batch's own.
    pub fn append(&mut self, other: &WriteBatch) {
        self.rep.extend_from_slice(&other.rep[HEADER_LEN..]);
        self.count += other.count;
        self.user_bytes += other.user_bytes;
        if self.invalid.is_none() {
            self.invalid.clone_from(&other.invalid);
        }
    }

    /// The batch's encoding with `first_seq` 0: the same operations always give the same
    /// bytes. [`WriteBatch::from_bytes`] reads it back.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.rep.clone();
        out[..8].copy_from_slice(&0u64.to_le_bytes());
        out[8..12].copy_from_slice(&self.count.to_le_bytes());
        out
    }

    /// Decodes [`WriteBatch::to_bytes`]'s bytes, checking the whole structure and the
    /// engine's limits; anything malformed is `InvalidArgument`, never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<WriteBatch> {
        let decoded = DecodedBatch::decode(bytes).ok_or_else(|| {
            Error::InvalidArgument(format!("malformed write batch of {} bytes", bytes.len()))
        })?;
        if decoded.first_seq != 0 {
            return Err(Error::InvalidArgument(
                "an encoded write batch carries no sequence number".into(),
            ));
        }
        let mut batch = WriteBatch::with_capacity(bytes.len());
        for op in decoded.ops() {
            match op {
                Ok(BatchOp::Put { cf, key, value }) => batch.put(cf, key, value),
                Ok(BatchOp::Delete { cf, key }) => batch.delete(cf, key),
                Ok(BatchOp::DeleteRange { cf, start, end }) => batch.delete_range(cf, start, end),
                Ok(BatchOp::DeleteFrom { cf, start }) => batch.delete_range_from(cf, start),
                // `decode` checked every operation already.
                Err(()) => {
                    return Err(Error::InvalidArgument("malformed write batch".into()));
                }
            }
        }
        batch.validate()?;
        Ok(batch)
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether the batch has no operations.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the encoded batch in bytes.
    pub fn encoded_len(&self) -> usize {
        self.rep.len()
    }

    /// Key and value bytes the caller asked to write.
    pub fn user_bytes(&self) -> u64 {
        self.user_bytes
    }

    /// Removes every operation.
    pub fn clear(&mut self) {
        *self = WriteBatch::new();
    }

    /// Checks the batch against the engine's limits.
    pub fn validate(&self) -> Result<()> {
        if let Some(msg) = &self.invalid {
            return Err(Error::InvalidArgument(msg.clone()));
        }
        if self.rep.len() > MAX_BATCH_BYTES {
            return Err(Error::InvalidArgument(format!(
                "write batch of {} bytes exceeds the limit of {MAX_BATCH_BYTES} bytes",
                self.rep.len()
            )));
        }
        Ok(())
    }

    /// Stamps the batch with the sequence number of its first entry and returns the encoding.
    pub(crate) fn encode_with_seq(&mut self, first_seq: SeqNo) -> &[u8] {
        self.rep[..8].copy_from_slice(&first_seq.to_le_bytes());
        self.rep[8..12].copy_from_slice(&self.count.to_le_bytes());
        &self.rep
    }

    /// The operations, in order.
    pub fn ops(&self) -> BatchIter<'_> {
        BatchIter {
            decoder: Decoder::new(&self.rep[HEADER_LEN..]),
            remaining: self.count,
        }
    }

    /// The encoding, as last stamped by `encode_with_seq`.
    pub(crate) fn encoded(&self) -> &[u8] {
        &self.rep
    }
}

/// A batch decoded from the WAL.
#[derive(Debug)]
pub struct DecodedBatch<'a> {
    /// Sequence number of the first entry.
    pub first_seq: SeqNo,
    /// Number of entries.
    pub count: u32,
    body: &'a [u8],
}

impl<'a> DecodedBatch<'a> {
    /// Parses an encoded batch. `None` means malformed; the caller knows the file and offset.
    pub fn decode(rep: &'a [u8]) -> Option<DecodedBatch<'a>> {
        let mut d = Decoder::new(rep);
        let first_seq = d.u64()?;
        let count = d.u32()?;
        let body = &rep[HEADER_LEN..];
        // Validate the whole body up front so that applying it cannot fail half-way.
        let mut it = BatchIter {
            decoder: Decoder::new(body),
            remaining: count,
        };
        for _ in 0..count {
            it.next()?.ok()?;
        }
        if !it.decoder.is_empty() {
            return None;
        }
        Some(DecodedBatch {
            first_seq,
            count,
            body,
        })
    }

    /// The operations, in order.
    pub fn ops(&self) -> BatchIter<'a> {
        BatchIter {
            decoder: Decoder::new(self.body),
            remaining: self.count,
        }
    }
}

/// Iterator over a batch's operations.
#[derive(Debug)]
pub struct BatchIter<'a> {
    decoder: Decoder<'a>,
    remaining: u32,
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = std::result::Result<BatchOp<'a>, ()>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let d = &mut self.decoder;
        let op = (|| {
            let tag = d.u8()?;
            let cf = ColumnFamily::from_id(d.u8()?)?;
            let key = d.length_prefixed()?;
            Some(match tag {
                TAG_DELETE_FROM => BatchOp::DeleteFrom { cf, start: key },
                TAG_PUT => BatchOp::Put {
                    cf,
                    key,
                    value: d.length_prefixed()?,
                },
                TAG_DELETE => BatchOp::Delete { cf, key },
                TAG_DELETE_RANGE => BatchOp::DeleteRange {
                    cf,
                    start: key,
                    end: d.length_prefixed()?,
                },
                _ => return None,
            })
        })();
        match op {
            Some(op) => Some(Ok(op)),
            None => {
                self.remaining = 0;
                Some(Err(()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrips_through_encoding() {
        let mut b = WriteBatch::new();
        b.put(ColumnFamily::Default, b"k1", b"v1");
        b.delete(ColumnFamily::Lock, b"k2");
        b.delete_range(ColumnFamily::Write, b"a", b"z");
        let enc = b.encode_with_seq(42).to_vec();
        let d = DecodedBatch::decode(&enc).unwrap();
        assert_eq!(d.first_seq, 42);
        let ops: Vec<_> = d.ops().map(|o| o.unwrap()).collect();
        assert_eq!(ops, b.ops().map(|o| o.unwrap()).collect::<Vec<_>>());
        assert_eq!(ops.len(), 3);
    }

    #[test]
    fn truncated_or_garbage_encodings_are_rejected() {
        let mut b = WriteBatch::new();
        b.put(ColumnFamily::Default, b"key", b"value");
        let enc = b.encode_with_seq(1).to_vec();
        for cut in 0..enc.len() {
            assert!(DecodedBatch::decode(&enc[..cut]).is_none(), "cut at {cut}");
        }
        let mut bad_cf = enc.clone();
        bad_cf[HEADER_LEN + 1] = 99;
        assert!(DecodedBatch::decode(&bad_cf).is_none());
    }

    #[test]
    fn to_bytes_roundtrips_and_is_deterministic() {
        let mut b = WriteBatch::new();
        b.put(ColumnFamily::Default, b"k1", b"v1");
        b.delete_range_from(ColumnFamily::Write, b"m");
        let mut other = WriteBatch::new();
        other.delete(ColumnFamily::Lock, b"k2");
        b.append(&other);
        let bytes = b.to_bytes();
        // Stamping a sequence number for a write does not change the portable form.
        let mut stamped = b.clone();
        stamped.encode_with_seq(99);
        assert_eq!(stamped.to_bytes(), bytes);
        let back = WriteBatch::from_bytes(&bytes).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back.to_bytes(), bytes);
        assert_eq!(
            back.ops().map(|o| o.unwrap()).collect::<Vec<_>>(),
            vec![
                BatchOp::Put {
                    cf: ColumnFamily::Default,
                    key: b"k1",
                    value: b"v1"
                },
                BatchOp::DeleteFrom {
                    cf: ColumnFamily::Write,
                    start: b"m"
                },
                BatchOp::Delete {
                    cf: ColumnFamily::Lock,
                    key: b"k2"
                },
            ]
        );
        for cut in 0..bytes.len() {
            assert!(
                WriteBatch::from_bytes(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut seq = bytes.clone();
        seq[0] = 1;
        assert!(WriteBatch::from_bytes(&seq).is_err());
    }

    #[test]
    fn limits_are_enforced() {
        let mut b = WriteBatch::new();
        b.put(ColumnFamily::Default, &vec![0; MAX_KEY_LEN + 1], b"");
        assert!(matches!(b.validate(), Err(Error::InvalidArgument(_))));
        let mut b = WriteBatch::new();
        b.delete_range(ColumnFamily::Default, b"z", b"a");
        assert!(b.validate().is_err());
    }
}
