//! How `strata bench run` picks keys: uniformly, or by YCSB's scrambled Zipfian
//! distribution (constant 0.99), drawn from [`SplitMix64`] so that two runs with the same
//! seed ask for the same keys; and the keys' names.

use super::super::generator::SplitMix64;
use super::Distribution;

/// The Zipfian constant of YCSB.
pub const ZIPFIAN_CONSTANT: f64 = 0.99;

/// YCSB's Zipfian generator (Gray et al., "Quickly generating billion-record synthetic
/// databases"), over items `0..n`, item 0 the most popular.
#[derive(Debug, Clone)]
pub struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipfian {
    /// A generator over `0..items` (`items > 0`) with constant `theta` (0 < theta < 1).
    pub fn new(items: u64, theta: f64) -> Self {
        let zeta = |n: u64| (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        let zetan = zeta(items);
        let zeta2 = zeta(2.min(items));
        let alpha = 1.0 / (1.0 - theta);
        let eta = (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Zipfian {
            items,
            theta,
            alpha,
            zetan,
            eta,
        }
    }

    /// The next item, by popularity rank.
    pub fn next(&self, rng: &mut SplitMix64) -> u64 {
        let u = unit(rng);
        let uz = u * self.zetan;
        if uz < 1.0 || self.items == 1 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        let v = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        v.min(self.items - 1)
    }

    /// The next item, hashed so the popular ones are spread over the key space (YCSB's
    /// scrambled Zipfian).
    pub fn next_scrambled(&self, rng: &mut SplitMix64) -> u64 {
        fnv64(self.next(rng)) % self.items
    }
}

/// A uniform float in `[0, 1)`.
pub(super) fn unit(rng: &mut SplitMix64) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn fnv64(v: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in v.to_le_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Picks key indexes by the configured distribution.
#[derive(Debug, Clone)]
pub(super) struct KeyChooser {
    pub(super) items: u64,
    zipf: Option<Zipfian>,
}

impl KeyChooser {
    pub(super) fn new(items: u64, distribution: Distribution) -> Self {
        KeyChooser {
            items,
            zipf: (distribution == Distribution::Zipfian)
                .then(|| Zipfian::new(items, ZIPFIAN_CONSTANT)),
        }
    }

    pub(super) fn next(&self, rng: &mut SplitMix64) -> u64 {
        match &self.zipf {
            Some(z) => z.next_scrambled(rng),
            None => rng.below(self.items),
        }
    }
}

pub(super) fn ycsb_key(i: u64) -> Vec<u8> {
    format!("user{i:012}").into_bytes()
}

pub(super) fn account_key(i: u64) -> Vec<u8> {
    format!("bank{i:012}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipfian_is_skewed_and_in_range() {
        let z = Zipfian::new(1000, ZIPFIAN_CONSTANT);
        let mut rng = SplitMix64::new(1);
        let mut counts = vec![0u64; 1000];
        for _ in 0..100_000 {
            let v = z.next(&mut rng);
            counts[v as usize] += 1;
        }
        // Item 0 is the most popular, by far.
        assert!(
            counts[0] > counts[10] * 5,
            "{} vs {}",
            counts[0],
            counts[10]
        );
        assert!(counts[0] > 5_000);
        for _ in 0..10_000 {
            assert!(z.next_scrambled(&mut rng) < 1000);
        }
    }
}
