//! Deterministic inputs for benchmarks: a PRNG, fixed-width keys and compressible values.
//!
//! Every engine in a run must see exactly the same operations, so nothing here reads a clock
//! or the OS's entropy: a [`SplitMix64`] seeded from `--seed` (and the workload's name) drives
//! key choice and value contents.
//!
//! * [`KeyGen`] turns an index into a key of exactly `key_size` bytes: the index in zero-padded
//!   decimal (`0000000000000042`), so keys sort in index order and are readable in a hex dump.
//! * [`ValueGen`] hands out values cut from a pool filled like LevelDB's `db_bench` does: each
//!   100-byte piece is half random printable bytes and half a copy of them, so a block
//!   compressor saves about half, neither the nothing of random bytes nor the everything of
//!   zeros.

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, passes BigCrush; plenty for choosing keys.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// A generator for one stream of a run: `seed` mixed with a stream name, so that two
    /// workloads of the same run draw different sequences, and two runs with the same seed
    /// draw the same ones.
    pub fn for_stream(seed: u64, stream: &str) -> Self {
        // FNV-1a of the name, then mixed with the seed.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in stream.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let mut mixer = SplitMix64::new(seed ^ h);
        SplitMix64::new(mixer.next_u64())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform integer in `0..bound` (`bound > 0`), by Lemire's multiply-shift; the bias is
    /// below 2^-32 for any bound a benchmark uses.
    pub fn below(&mut self, bound: u64) -> u64 {
        debug_assert!(bound > 0);
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// `0..n` in a uniformly random order (Fisher–Yates).
    pub fn permutation(&mut self, n: u64) -> Vec<u64> {
        let mut v: Vec<u64> = (0..n).collect();
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
        v
    }
}

/// Makes fixed-width keys from indexes: zero-padded decimal, so byte order is index order.
#[derive(Debug, Clone)]
pub struct KeyGen {
    key_size: usize,
}

impl KeyGen {
    /// Fewest bytes a key may have.
    pub const MIN_KEY_SIZE: usize = 1;

    /// A generator of `key_size`-byte keys for indexes `0..keys`; an error if the largest
    /// index does not fit in `key_size` decimal digits.
    pub fn new(key_size: usize, keys: u64) -> Result<Self, String> {
        let needed = decimal_digits(keys.saturating_sub(1));
        if key_size < needed.max(Self::MIN_KEY_SIZE) {
            return Err(format!(
                "--key-size {key_size} is too small for {keys} keys: they need {needed} bytes"
            ));
        }
        Ok(KeyGen { key_size })
    }

    /// Length of every key.
    pub fn key_size(&self) -> usize {
        self.key_size
    }

    /// Writes the key of `index` into `buf` (cleared first) and returns it.
    pub fn key_into<'a>(&self, index: u64, buf: &'a mut Vec<u8>) -> &'a [u8] {
        buf.clear();
        buf.resize(self.key_size, b'0');
        let mut i = index;
        for slot in buf.iter_mut().rev() {
            if i == 0 {
                break;
            }
            *slot = b'0' + (i % 10) as u8;
            i /= 10;
        }
        buf
    }

    /// The key of `index`, allocated.
    pub fn key(&self, index: u64) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.key_size);
        self.key_into(index, &mut buf);
        buf
    }
}

fn decimal_digits(mut n: u64) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

/// Hands out `value_size`-byte values from a pool of moderately compressible bytes.
#[derive(Debug, Clone)]
pub struct ValueGen {
    pool: Vec<u8>,
    pos: usize,
    value_size: usize,
}

impl ValueGen {
    /// Bytes in a piece of the pool: half random, half a repeat of that half.
    const PIECE: usize = 100;
    /// Smallest pool: big enough that values repeat only after 1 MiB.
    const MIN_POOL: usize = 1 << 20;

    /// A generator of `value_size`-byte values drawn from a pool filled by `rng`.
    pub fn new(value_size: usize, rng: &mut SplitMix64) -> Self {
        let len = Self::MIN_POOL.max(value_size);
        let mut pool = Vec::with_capacity(len + Self::PIECE);
        while pool.len() < len {
            let half = Self::PIECE / 2;
            let start = pool.len();
            for _ in 0..half {
                // Printable ASCII ' '..='~', as db_bench's RandomString.
                pool.push(b' ' + rng.below(95) as u8);
            }
            pool.extend_from_within(start..start + half);
        }
        pool.truncate(len);
        ValueGen {
            pool,
            pos: 0,
            value_size,
        }
    }

    /// Length of every value.
    pub fn value_size(&self) -> usize {
        self.value_size
    }

    /// The next value: the pool's next `value_size` bytes, wrapping to the start.
    pub fn next_value(&mut self) -> &[u8] {
        if self.pos + self.value_size > self.pool.len() {
            self.pos = 0;
        }
        let start = self.pos;
        self.pos += self.value_size;
        &self.pool[start..start + self.value_size]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_deterministic_and_streams_differ() {
        let a: Vec<u64> = {
            let mut r = SplitMix64::new(7);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = SplitMix64::new(7);
            (0..4).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        let mut x = SplitMix64::for_stream(7, "readrandom");
        let mut y = SplitMix64::for_stream(7, "overwrite");
        assert_ne!(x.next_u64(), y.next_u64());
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = SplitMix64::new(1);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            let v = r.below(10);
            assert!(v < 10);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn permutation_has_every_index_once() {
        let mut r = SplitMix64::new(3);
        let mut p = r.permutation(1000);
        assert_ne!(p, (0..1000).collect::<Vec<_>>(), "should be shuffled");
        p.sort_unstable();
        assert_eq!(p, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn keys_are_fixed_width_and_ordered() {
        let g = KeyGen::new(16, 1_000_000).unwrap();
        assert_eq!(g.key(0), b"0000000000000000");
        assert_eq!(g.key(42), b"0000000000000042");
        assert_eq!(g.key(999_999), b"0000000000999999");
        let mut prev = g.key(0);
        for i in [1, 9, 10, 11, 99, 100, 12345, 999_999] {
            let k = g.key(i);
            assert_eq!(k.len(), 16);
            assert!(k > prev, "key order must follow index order");
            prev = k;
        }
        let mut buf = Vec::new();
        assert_eq!(g.key_into(7, &mut buf), b"0000000000000007");
    }

    #[test]
    fn key_size_must_fit_the_largest_index() {
        assert!(KeyGen::new(3, 1000).is_ok()); // 0..=999
        assert!(KeyGen::new(3, 1001).is_err()); // 1000 needs 4 digits
        assert!(KeyGen::new(1, 1).is_ok());
        assert!(KeyGen::new(0, 1).is_err());
    }

    #[test]
    fn values_have_the_size_and_are_half_compressible() {
        let mut r = SplitMix64::new(9);
        let mut g = ValueGen::new(100, &mut r);
        let v = g.next_value().to_vec();
        assert_eq!(v.len(), 100);
        assert!(v.iter().all(|b| (b' '..=b'~').contains(b)));
        // Second half of each piece repeats the first.
        assert_eq!(v[..50], v[50..]);
        let w = g.next_value().to_vec();
        assert_ne!(v, w);

        // LZ4 should save a good part but not nearly all of a block of values.
        let block: Vec<u8> = (0..40).flat_map(|_| g.next_value().to_vec()).collect();
        let compressed = lz4_flex::block::compress(&block);
        let ratio = compressed.len() as f64 / block.len() as f64;
        assert!((0.4..0.8).contains(&ratio), "ratio {ratio}");
    }

    #[test]
    fn values_wrap_around_the_pool() {
        let mut r = SplitMix64::new(9);
        let mut g = ValueGen::new(300_000, &mut r);
        for _ in 0..10 {
            assert_eq!(g.next_value().len(), 300_000);
        }
        let mut big = ValueGen::new(3 << 20, &mut r);
        assert_eq!(big.next_value().len(), 3 << 20);
        assert_eq!(big.next_value().len(), 3 << 20);
        assert_eq!(big.value_size(), 3 << 20);
    }
}
