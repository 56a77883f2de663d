//! Bloom filters: one per SSTable, over its *engine keys* (internal keys minus the trailer),
//! so a point lookup can skip a table that certainly lacks the key without touching a data
//! block; and, in tables built with a prefix extractor, a second one over the keys'
//! prefixes (see `prefix.rs`), in the same encoding.
//!
//! ```text
//!   +--------------------------------------+---+
//!   |  bit array (n bytes, n*8 bits)       | k |   k = number of probes, 1..=30
//!   +--------------------------------------+---+
//! ```
//!
//! Each key is hashed once with [`hash64`], a small hash defined here so the on-disk filter
//! does not depend on the Rust standard library's hasher (which may change between
//! releases). The `k` probe positions come from double hashing: `h, h + d, h + 2d, ...`
//! modulo the number of bits, with `d` the hash rotated by 17 bits.
//!
//! With `b` bits per key, `k = round(b * ln 2)` minimises the false-positive rate, about 1%
//! at 10 bits per key. A filter that is empty or malformed (unknown `k`) answers "may
//! contain" for every key: a damaged filter costs reads, never correctness.

/// Fixed seed mixed into every hash, so the hash of the empty key is not 0.
const SEED: u64 = 0x5354_5241_5441_424c; // "STRATABL"

const M1: u64 = 0x87c3_7b91_1142_53d5;
const M2: u64 = 0x4cf5_ad43_2745_937f;
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// Murmur3's 64-bit finaliser: every input bit affects every output bit.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn mix_word(w: u64) -> u64 {
    w.wrapping_mul(M1).rotate_left(31).wrapping_mul(M2)
}

/// A stable 64-bit hash of `data` (part of the on-disk format: never change it).
///
/// Words of 8 bytes are mixed Murmur3-style into the state, the tail is zero-padded, and the
/// length is folded in before the final avalanche.
pub fn hash64(data: &[u8]) -> u64 {
    let mut h = SEED ^ (data.len() as u64).wrapping_mul(GOLDEN);
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        h ^= mix_word(u64::from_le_bytes(w));
        h = h.rotate_left(27).wrapping_mul(5).wrapping_add(0x52dc_e729);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut w = [0u8; 8];
        w[..tail.len()].copy_from_slice(tail);
        h ^= mix_word(u64::from_le_bytes(w));
    }
    fmix64(h ^ data.len() as u64)
}

/// The number of probes for `bits_per_key`.
fn num_probes(bits_per_key: usize) -> u8 {
    let k = (bits_per_key as f64 * std::f64::consts::LN_2).round();
    k.clamp(1.0, 30.0) as u8
}

/// Collects the keys of one table and encodes their filter.
#[derive(Debug, Clone)]
pub struct BloomBuilder {
    bits_per_key: usize,
    hashes: Vec<u64>,
}

impl BloomBuilder {
    /// A builder spending about `bits_per_key` bits per added key (0 builds an empty filter,
    /// which matches everything).
    pub fn new(bits_per_key: usize) -> Self {
        BloomBuilder {
            bits_per_key,
            hashes: Vec::new(),
        }
    }

    /// Adds an engine key. Callers add each distinct engine key once (duplicates only waste
    /// nothing but time: they set the same bits).
    pub fn add_key(&mut self, engine_key: &[u8]) {
        if self.bits_per_key > 0 {
            self.hashes.push(hash64(engine_key));
        }
    }

    /// Keys added so far.
    pub fn num_keys(&self) -> usize {
        self.hashes.len()
    }

    /// Encodes the filter: the bit array followed by the probe count.
    pub fn finish(self) -> Vec<u8> {
        if self.bits_per_key == 0 {
            return Vec::new();
        }
        let k = num_probes(self.bits_per_key);
        // At least 64 bits so that tiny tables do not have absurd false-positive rates.
        let bits = (self.hashes.len().saturating_mul(self.bits_per_key)).max(64);
        let bytes = bits.div_ceil(8);
        let nbits = (bytes * 8) as u64;
        let mut out = vec![0u8; bytes + 1];
        for h in self.hashes {
            let delta = h.rotate_left(17) | 1;
            let mut pos = h;
            for _ in 0..k {
                let bit = pos % nbits;
                out[(bit / 8) as usize] |= 1 << (bit % 8);
                pos = pos.wrapping_add(delta);
            }
        }
        out[bytes] = k;
        out
    }
}

/// A decoded filter, answering "may this table contain the engine key?".
#[derive(Clone)]
pub struct BloomFilter {
    data: Vec<u8>,
}

impl std::fmt::Debug for BloomFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BloomFilter")
            .field("size", &self.data.len())
            .field("probes", &self.data.last())
            .finish()
    }
}

impl BloomFilter {
    /// Wraps an encoded filter. Any bytes are accepted; malformed ones match every key.
    pub fn new(data: Vec<u8>) -> Self {
        BloomFilter { data }
    }

    /// The encoded size in bytes.
    pub fn size(&self) -> usize {
        self.data.len()
    }

    /// `false` only if `engine_key` was certainly never added.
    pub fn may_contain(&self, engine_key: &[u8]) -> bool {
        let Some((&k, bits)) = self.data.split_last() else {
            return true;
        };
        if bits.is_empty() || !(1..=30).contains(&k) {
            return true;
        }
        let nbits = (bits.len() as u64) * 8;
        let h = hash64(engine_key);
        let delta = h.rotate_left(17) | 1;
        let mut pos = h;
        for _ in 0..k {
            let bit = pos % nbits;
            match bits.get((bit / 8) as usize) {
                Some(byte) if byte & (1 << (bit % 8)) != 0 => {}
                _ => return false,
            }
            pos = pos.wrapping_add(delta);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(i: u32) -> Vec<u8> {
        format!("\x00user-key-{i:08}").into_bytes()
    }

    #[test]
    fn hash_is_stable() {
        // Golden values: these are part of the file format.
        assert_eq!(hash64(b""), hash64(b""));
        assert_ne!(hash64(b""), hash64(b"\0"));
        assert_ne!(hash64(b"a"), hash64(b"a\0"));
        let golden = [hash64(b""), hash64(b"strata"), hash64(b"0123456789abcdef!")];
        assert_eq!(
            golden,
            [
                0x4a25_018a_e784_8f81,
                0x0b7c_776a_42d9_0a5f,
                0x4822_0fa8_87e4_7a74
            ],
            "{golden:#x?}"
        );
    }

    #[test]
    fn probes_are_clamped() {
        assert_eq!(num_probes(0), 1);
        assert_eq!(num_probes(1), 1);
        assert_eq!(num_probes(10), 7);
        assert_eq!(num_probes(100), 30);
    }

    #[test]
    fn no_false_negatives_and_low_false_positive_rate() {
        let n = 10_000;
        let mut b = BloomBuilder::new(10);
        for i in 0..n {
            b.add_key(&key(i));
        }
        assert_eq!(b.num_keys(), n as usize);
        let f = BloomFilter::new(b.finish());
        for i in 0..n {
            assert!(f.may_contain(&key(i)), "false negative for {i}");
        }
        let false_positives = (n..2 * n).filter(|&i| f.may_contain(&key(i))).count();
        let rate = false_positives as f64 / f64::from(n);
        assert!(rate < 0.02, "false-positive rate {rate}");
    }

    #[test]
    fn malformed_filters_match_everything() {
        for data in [
            vec![],
            vec![7],
            vec![0xff, 0],
            vec![0xff, 31],
            vec![0, 0, 200],
        ] {
            let f = BloomFilter::new(data);
            assert!(f.may_contain(b"anything"));
        }
        // Disabled filters are empty.
        let mut b = BloomBuilder::new(0);
        b.add_key(b"x");
        let data = b.finish();
        assert!(data.is_empty());
        assert!(BloomFilter::new(data).may_contain(b"y"));
    }

    #[test]
    fn tiny_filter_has_no_false_negatives() {
        let mut b = BloomBuilder::new(10);
        b.add_key(b"");
        b.add_key(b"a");
        let f = BloomFilter::new(b.finish());
        assert!(f.may_contain(b""));
        assert!(f.may_contain(b"a"));
    }

    proptest! {
        #[test]
        fn added_keys_always_match(
            keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..24), 0..200),
            bits in 1usize..24,
        ) {
            let mut b = BloomBuilder::new(bits);
            for k in &keys {
                b.add_key(k);
            }
            let f = BloomFilter::new(b.finish());
            for k in &keys {
                prop_assert!(f.may_contain(k));
            }
        }

        #[test]
        fn random_filters_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64), probe: Vec<u8>) {
            let _ = BloomFilter::new(data).may_contain(&probe);
        }
    }
}
