//! Little helpers for the on-disk encodings: LEB128 varints, fixed-width integers, and the
//! masked crc32c used on every block and log record.
//!
//! Decoders never panic: they return `None` on truncated or malformed input, and callers turn
//! that into [`super::Error::Corruption`] with the file and offset they know.

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Decodes a varint from the front of `input`, returning it and the bytes consumed.
#[inline]
pub fn get_varint(input: &[u8]) -> Option<(u64, usize)> {
    // Most lengths in blocks are below 128: one byte, decided without a loop.
    match input.first() {
        Some(&b) if b < 0x80 => Some((u64::from(b), 1)),
        Some(_) => get_varint_multi(input),
        None => None,
    }
}

fn get_varint_multi(input: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &b) in input.iter().enumerate().take(10) {
        let part = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return None; // overflows 64 bits
        }
        v |= part << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Appends a varint length followed by the bytes.
pub fn put_length_prefixed(buf: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// A cursor over an encoded buffer; every getter fails softly on truncation.
#[derive(Debug)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// Starts decoding `buf` from its first byte.
    pub fn new(buf: &'a [u8]) -> Self {
        Decoder { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Whether everything has been consumed.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Reads a varint.
    pub fn varint(&mut self) -> Option<u64> {
        let (v, n) = get_varint(&self.buf[self.pos..])?;
        self.pos += n;
        Some(v)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// Reads a little-endian u32.
    pub fn u32(&mut self) -> Option<u32> {
        let bytes = self.bytes(4)?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?))
    }

    /// Reads a little-endian u64.
    pub fn u64(&mut self) -> Option<u64> {
        let bytes = self.bytes(8)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }

    /// Reads exactly `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    /// Reads a varint length and that many bytes.
    pub fn length_prefixed(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        self.bytes(n)
    }
}

/// Reads a little-endian u32 at `pos`, if the buffer is long enough.
pub fn read_u32(buf: &[u8], pos: usize) -> Option<u32> {
    Some(u32::from_le_bytes(buf.get(pos..pos + 4)?.try_into().ok()?))
}

/// Reads a little-endian u64 at `pos`, if the buffer is long enough.
pub fn read_u64(buf: &[u8], pos: usize) -> Option<u64> {
    Some(u64::from_le_bytes(buf.get(pos..pos + 8)?.try_into().ok()?))
}

const MASK_DELTA: u32 = 0xa282_ead8;

/// crc32c of the concatenation of `parts`, masked so that a crc stored inside checksummed
/// data does not checksum to a fixed point (the LevelDB convention).
pub fn masked_crc(parts: &[&[u8]]) -> u32 {
    let mut crc = 0u32;
    for part in parts {
        crc = crc32c::crc32c_append(crc, part);
    }
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varint_roundtrips(v: u64) {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            prop_assert_eq!(get_varint(&buf), Some((v, buf.len())));
        }

        #[test]
        fn decoder_never_panics(bytes: Vec<u8>) {
            let mut d = Decoder::new(&bytes);
            let _ = d.varint();
            let _ = d.length_prefixed();
            let _ = d.u64();
            let _ = d.u32();
        }
    }

    #[test]
    fn truncated_varint_is_none() {
        assert_eq!(get_varint(&[0x80, 0x80]), None);
        assert_eq!(get_varint(&[0xff; 11]), None);
    }

    #[test]
    fn masked_crc_differs_from_plain() {
        let data = b"strata";
        assert_ne!(masked_crc(&[data]), crc32c::crc32c(data));
        assert_eq!(masked_crc(&[b"stra", b"ta"]), masked_crc(&[data]));
    }
}
