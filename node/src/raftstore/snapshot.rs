//! The bytes of a shard snapshot: the key-value pairs of one shard, in checksummed frames.
//!
//! [`KvApply`](super::KvApply) writes a snapshot from an LSM snapshot taken at its applied
//! index, and a follower's `KvApply` restores it. The bytes are a sequence of frames, each
//! self-delimiting and checksummed, so a transport can cut the snapshot into chunks at frame
//! boundaries and a receiver can check every chunk as it arrives ([`complete_frame_len`]):
//!
//! ```text
//!   snapshot := header frame | data frame* | end frame
//!   frame    := len u32 LE | kind u8 | ordinal u32 LE | payload (len bytes) | crc u32 LE
//!               crc = masked crc32c of len, kind, ordinal and payload; ordinals count 0, 1, ..
//!   header   := kind 1: magic "STRATA-SNAP" | version u8 (1) | shard u64 LE | index u64 LE
//!               | range start:lp | has end u8 | range end:lp (if has end)
//!   data     := kind 2: (cf id u8 | key:lp | value:lp)*      a few hundred KiB at most
//!   end      := kind 3: frames u32 LE | pairs u64 LE | payload bytes u64 LE
//!   lp       := varint length, bytes
//! ```
//!
//! The ordinals and the end frame's totals make a lost, repeated or reordered frame an error
//! as surely as a flipped bit. Reading trusts nothing: every problem is a
//! [`RaftStoreError::SnapshotCorrupt`] naming the frame, never a panic. [`SnapshotReader`]
//! checks the whole snapshot before it hands out the first pair, so a restore never starts
//! on a damaged one.

use crate::lsm::coding::{masked_crc, put_length_prefixed, Decoder};
use crate::lsm::ColumnFamily;

use super::error::{RaftStoreError, Result};
use super::types::{KeyRange, ShardId};

const MAGIC: &[u8] = b"STRATA-SNAP";
/// The snapshot format's version.
pub const SNAPSHOT_VERSION: u8 = 1;

const KIND_HEADER: u8 = 1;
const KIND_DATA: u8 = 2;
const KIND_END: u8 = 3;

/// Length, kind and ordinal before the payload.
const FRAME_HEAD: usize = 4 + 1 + 4;
const FRAME_CRC: usize = 4;
/// Bytes a frame adds to its payload.
pub const FRAME_OVERHEAD: usize = FRAME_HEAD + FRAME_CRC;
/// The end frame's payload: frames u32, pairs u64, payload bytes u64.
const END_LEN: usize = 4 + 8 + 8;

/// What a snapshot is of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// The shard.
    pub shard: ShardId,
    /// The applied index the snapshot's state is at.
    pub index: u64,
    /// The shard's key range.
    pub range: KeyRange,
}

fn corrupt(what: String) -> RaftStoreError {
    RaftStoreError::SnapshotCorrupt(what)
}

fn put_frame(out: &mut Vec<u8>, kind: u8, ordinal: u32, payload: &[u8]) {
    let len = (payload.len() as u32).to_le_bytes();
    let ord = ordinal.to_le_bytes();
    out.extend_from_slice(&len);
    out.push(kind);
    out.extend_from_slice(&ord);
    out.extend_from_slice(payload);
    let crc = masked_crc(&[&len, &[kind], &ord, payload]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Builds a snapshot frame by frame, refusing to grow past a size limit.
#[derive(Debug)]
pub struct SnapshotWriter {
    shard: ShardId,
    out: Vec<u8>,
    data: Vec<u8>,
    frame_bytes: usize,
    max_bytes: u64,
    frames: u32,
    pairs: u64,
    payload_bytes: u64,
}

impl SnapshotWriter {
    /// Starts a snapshot of `header`'s shard with data frames of about `frame_bytes` and at
    /// most `max_bytes` in all.
    pub fn new(header: &SnapshotHeader, frame_bytes: usize, max_bytes: u64) -> Result<Self> {
        let mut payload = MAGIC.to_vec();
        payload.push(SNAPSHOT_VERSION);
        payload.extend_from_slice(&header.shard.0.to_le_bytes());
        payload.extend_from_slice(&header.index.to_le_bytes());
        put_length_prefixed(&mut payload, &header.range.start);
        match &header.range.end {
            Some(end) => {
                payload.push(1);
                put_length_prefixed(&mut payload, end);
            }
            None => payload.push(0),
        }
        let mut w = SnapshotWriter {
            shard: header.shard,
            out: Vec::new(),
            data: Vec::new(),
            frame_bytes: frame_bytes.max(1),
            max_bytes,
            frames: 0,
            pairs: 0,
            payload_bytes: 0,
        };
        w.emit(KIND_HEADER, payload);
        w.check_size()?;
        Ok(w)
    }

    fn emit(&mut self, kind: u8, payload: Vec<u8>) {
        put_frame(&mut self.out, kind, self.frames, &payload);
        self.frames += 1;
        self.payload_bytes += payload.len() as u64;
    }

    /// What the snapshot will measure if it ends now: the frames written, the pending data
    /// frame and the end frame.
    fn projected_len(&self) -> u64 {
        let pending = if self.data.is_empty() {
            0
        } else {
            self.data.len() + FRAME_OVERHEAD
        };
        (self.out.len() + pending + END_LEN + FRAME_OVERHEAD) as u64
    }

    fn check_size(&self) -> Result<()> {
        if self.projected_len() > self.max_bytes {
            return Err(RaftStoreError::SnapshotTooLarge {
                shard: self.shard,
                limit: self.max_bytes,
            });
        }
        Ok(())
    }

    /// Adds one pair of `cf`. Fails with [`RaftStoreError::SnapshotTooLarge`] once the
    /// snapshot would pass its limit (the writer is then of no further use).
    pub fn add(&mut self, cf: ColumnFamily, key: &[u8], value: &[u8]) -> Result<()> {
        self.data.push(cf.id());
        put_length_prefixed(&mut self.data, key);
        put_length_prefixed(&mut self.data, value);
        self.check_size()?;
        self.pairs += 1;
        if self.data.len() >= self.frame_bytes {
            self.flush_data();
        }
        Ok(())
    }

    fn flush_data(&mut self) {
        if !self.data.is_empty() {
            let data = std::mem::take(&mut self.data);
            self.emit(KIND_DATA, data);
        }
    }

    /// Ends the snapshot and returns its bytes (at most the limit).
    pub fn finish(mut self) -> Vec<u8> {
        self.flush_data();
        let mut end = Vec::with_capacity(END_LEN);
        // The end frame counts itself.
        end.extend_from_slice(&(self.frames + 1).to_le_bytes());
        end.extend_from_slice(&self.pairs.to_le_bytes());
        end.extend_from_slice(&self.payload_bytes.to_le_bytes());
        self.emit(KIND_END, end);
        self.out
    }
}

/// The length of the complete, intact frame at the start of `buf`: `Ok(None)` while `buf`
/// holds only part of one, an error if the frame is damaged. A receiver can check each chunk
/// of a snapshot with it as the chunk arrives.
pub fn complete_frame_len(buf: &[u8]) -> Result<Option<usize>> {
    let Some(head) = buf.get(..FRAME_HEAD) else {
        return Ok(None);
    };
    let mut len = [0u8; 4];
    len.copy_from_slice(&head[..4]);
    let payload_len = u32::from_le_bytes(len) as usize;
    let total = FRAME_HEAD + payload_len + FRAME_CRC;
    let Some(frame) = buf.get(..total) else {
        return Ok(None);
    };
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&frame[total - FRAME_CRC..]);
    if masked_crc(&[&frame[..total - FRAME_CRC]]) != u32::from_le_bytes(crc) {
        return Err(corrupt(format!(
            "frame of {payload_len} payload bytes: checksum mismatch"
        )));
    }
    Ok(Some(total))
}

struct Frame<'a> {
    kind: u8,
    ordinal: u32,
    payload: &'a [u8],
}

/// Splits `data` into intact frames.
fn frames(data: &[u8]) -> Result<Vec<Frame<'_>>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let n = complete_frame_len(&data[pos..])
            .map_err(|e| corrupt(format!("at byte {pos}: {e}")))?
            .ok_or_else(|| corrupt(format!("truncated frame at byte {pos}")))?;
        let frame = &data[pos..pos + n];
        let mut ord = [0u8; 4];
        ord.copy_from_slice(&frame[5..9]);
        out.push(Frame {
            kind: frame[4],
            ordinal: u32::from_le_bytes(ord),
            payload: &frame[FRAME_HEAD..n - FRAME_CRC],
        });
        pos += n;
    }
    Ok(out)
}

fn parse_header(payload: &[u8]) -> Option<SnapshotHeader> {
    let mut d = Decoder::new(payload);
    if d.bytes(MAGIC.len())? != MAGIC || d.u8()? != SNAPSHOT_VERSION {
        return None;
    }
    let shard = ShardId(d.u64()?);
    let index = d.u64()?;
    let start = d.length_prefixed()?.to_vec();
    let end = match d.u8()? {
        0 => None,
        1 => Some(d.length_prefixed()?.to_vec()),
        _ => return None,
    };
    d.is_empty().then_some(SnapshotHeader {
        shard,
        index,
        range: KeyRange { start, end },
    })
}

/// A checked snapshot: its header, then its pairs in order.
pub struct SnapshotReader<'a> {
    header: SnapshotHeader,
    data: Vec<&'a [u8]>,
    pairs: u64,
}

impl std::fmt::Debug for SnapshotReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotReader")
            .field("header", &self.header)
            .field("frames", &self.data.len())
            .field("pairs", &self.pairs)
            .finish()
    }
}

impl<'a> SnapshotReader<'a> {
    /// Checks all of `data` (every frame's checksum, their order and count, every pair's
    /// structure) and opens it for reading.
    pub fn open(data: &'a [u8]) -> Result<SnapshotReader<'a>> {
        let frames = frames(data)?;
        for (i, f) in frames.iter().enumerate() {
            if f.ordinal as usize != i {
                return Err(corrupt(format!(
                    "frame {i} carries ordinal {}: a frame is missing, repeated or out of order",
                    f.ordinal
                )));
            }
        }
        let (Some(first), Some(last)) = (frames.first(), frames.last()) else {
            return Err(corrupt("no frames".into()));
        };
        if first.kind != KIND_HEADER || frames.len() < 2 {
            return Err(corrupt("does not start with a header frame".into()));
        }
        let header = parse_header(first.payload)
            .ok_or_else(|| corrupt("unreadable header (magic, version or range)".into()))?;
        if last.kind != KIND_END {
            return Err(corrupt("does not end with an end frame".into()));
        }
        let mut d = Decoder::new(last.payload);
        let (Some(count), Some(pairs), Some(payload_bytes), true) =
            (d.u32(), d.u64(), d.u64(), last.payload.len() == END_LEN)
        else {
            return Err(corrupt("unreadable end frame".into()));
        };
        let middle = &frames[1..frames.len() - 1];
        let mut data_frames = Vec::with_capacity(middle.len());
        let mut seen_pairs = 0u64;
        let mut seen_bytes = 0u64;
        for f in frames.iter().take(frames.len() - 1) {
            seen_bytes += f.payload.len() as u64;
        }
        for f in middle {
            if f.kind != KIND_DATA {
                return Err(corrupt(format!(
                    "frame {} has kind {}, expected data",
                    f.ordinal, f.kind
                )));
            }
            seen_pairs += count_pairs(f.payload).ok_or_else(|| {
                corrupt(format!("data frame {} holds a malformed pair", f.ordinal))
            })?;
            data_frames.push(f.payload);
        }
        if count as usize != frames.len() || pairs != seen_pairs || payload_bytes != seen_bytes {
            return Err(corrupt(format!(
                "end frame counts {count} frames, {pairs} pairs, {payload_bytes} bytes; found {}, \
                 {seen_pairs}, {seen_bytes}",
                frames.len()
            )));
        }
        Ok(SnapshotReader {
            header,
            data: data_frames,
            pairs,
        })
    }

    /// What the snapshot is of.
    pub fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    /// How many pairs it holds.
    pub fn len(&self) -> u64 {
        self.pairs
    }

    /// Whether it holds no pair.
    pub fn is_empty(&self) -> bool {
        self.pairs == 0
    }

    /// The pairs, in the order they were written.
    pub fn pairs(&self) -> Pairs<'a, '_> {
        Pairs {
            frames: &self.data,
            frame: 0,
            decoder: None,
        }
    }
}

/// Counts the pairs of a data frame, or `None` if one is malformed.
fn count_pairs(payload: &[u8]) -> Option<u64> {
    let mut d = Decoder::new(payload);
    let mut n = 0;
    while !d.is_empty() {
        read_pair(&mut d)?;
        n += 1;
    }
    Some(n)
}

fn read_pair<'a>(d: &mut Decoder<'a>) -> Option<(ColumnFamily, &'a [u8], &'a [u8])> {
    let cf = ColumnFamily::from_id(d.u8()?)?;
    let key = d.length_prefixed()?;
    let value = d.length_prefixed()?;
    Some((cf, key, value))
}

/// Iterator over a checked snapshot's pairs.
pub struct Pairs<'a, 'r> {
    frames: &'r [&'a [u8]],
    frame: usize,
    decoder: Option<Decoder<'a>>,
}

impl std::fmt::Debug for Pairs<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pairs")
            .field("frames", &self.frames.len())
            .field("frame", &self.frame)
            .finish()
    }
}

impl<'a> Iterator for Pairs<'a, '_> {
    type Item = Result<(ColumnFamily, &'a [u8], &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(d) = self.decoder.as_mut() {
                if !d.is_empty() {
                    // `open` checked every pair, so this only fails if that check is wrong.
                    return Some(
                        read_pair(d).ok_or_else(|| corrupt("malformed pair after check".into())),
                    );
                }
            }
            let payload = self.frames.get(self.frame)?;
            self.frame += 1;
            self.decoder = Some(Decoder::new(payload));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> SnapshotHeader {
        SnapshotHeader {
            shard: ShardId(3),
            index: 42,
            range: KeyRange {
                start: b"a".to_vec(),
                end: Some(b"q".to_vec()),
            },
        }
    }

    type Expected = Vec<(ColumnFamily, Vec<u8>, Vec<u8>)>;

    fn sample(frame_bytes: usize) -> (Vec<u8>, Expected) {
        let mut pairs = Vec::new();
        for i in 0..50u32 {
            let cf = ColumnFamily::ALL[(i % 4) as usize];
            pairs.push((
                cf,
                format!("key{i:03}").into_bytes(),
                vec![i as u8; i as usize],
            ));
        }
        let mut w = SnapshotWriter::new(&header(), frame_bytes, 1 << 20).unwrap();
        for (cf, k, v) in &pairs {
            w.add(*cf, k, v).unwrap();
        }
        (w.finish(), pairs)
    }

    #[test]
    fn roundtrips_over_many_frames() {
        let (bytes, pairs) = sample(128);
        let r = SnapshotReader::open(&bytes).unwrap();
        assert_eq!(r.header(), &header());
        assert_eq!(r.len(), 50);
        assert!(r.data.len() > 5, "several data frames: {}", r.data.len());
        let back: Vec<_> = r
            .pairs()
            .map(|p| p.map(|(cf, k, v)| (cf, k.to_vec(), v.to_vec())))
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(back, pairs);
        // A chunked transfer can check each frame as it arrives.
        let mut pos = 0;
        while pos < bytes.len() {
            assert_eq!(complete_frame_len(&bytes[pos..pos + 3]).unwrap(), None);
            let n = complete_frame_len(&bytes[pos..]).unwrap().unwrap();
            pos += n;
        }
        // An empty shard is a header and an end frame.
        let w = SnapshotWriter::new(&header(), 128, 1 << 20).unwrap();
        let empty = w.finish();
        let r = SnapshotReader::open(&empty).unwrap();
        assert!(r.is_empty());
        assert_eq!(r.pairs().count(), 0);
    }

    #[test]
    fn damage_truncation_and_reordering_are_errors() {
        let (bytes, _) = sample(128);
        for cut in 0..bytes.len() {
            assert!(SnapshotReader::open(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(
                matches!(
                    SnapshotReader::open(&bad),
                    Err(RaftStoreError::SnapshotCorrupt(_))
                ),
                "byte {i}"
            );
        }
        // Swap two intact data frames: every checksum holds, the ordinals do not.
        let mut spans = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let n = complete_frame_len(&bytes[pos..]).unwrap().unwrap();
            spans.push(pos..pos + n);
            pos += n;
        }
        let mut swapped = bytes[spans[0].clone()].to_vec();
        swapped.extend_from_slice(&bytes[spans[2].clone()]);
        swapped.extend_from_slice(&bytes[spans[1].clone()]);
        for s in &spans[3..] {
            swapped.extend_from_slice(&bytes[s.clone()]);
        }
        assert!(SnapshotReader::open(&swapped).is_err());
        // Drop one data frame: the ordinals skip.
        let mut dropped = Vec::new();
        for (i, s) in spans.iter().enumerate() {
            if i != 1 {
                dropped.extend_from_slice(&bytes[s.clone()]);
            }
        }
        assert!(SnapshotReader::open(&dropped).is_err());
    }

    #[test]
    fn the_size_limit_is_a_clear_error() {
        let mut w = SnapshotWriter::new(&header(), 64, 300).unwrap();
        let mut result = Ok(());
        for i in 0..100u32 {
            result = w.add(ColumnFamily::Default, &i.to_be_bytes(), &[0; 10]);
            if result.is_err() {
                break;
            }
        }
        match result {
            Err(RaftStoreError::SnapshotTooLarge { shard, limit }) => {
                assert_eq!((shard, limit), (ShardId(3), 300));
            }
            other => panic!("{other:?}"),
        }
        // Within the limit, the result respects it.
        let mut w = SnapshotWriter::new(&header(), 64, 300).unwrap();
        w.add(ColumnFamily::Default, b"k", b"v").unwrap();
        assert!(w.finish().len() <= 300);
    }
}
