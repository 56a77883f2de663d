//! A log-bucketed latency histogram, in the spirit of HdrHistogram.
//!
//! Values (nanoseconds) below 128 get a bucket each; above that, every power of two is split
//! into 64 equal sub-buckets, so a bucket spans at most 1/64 of its lower bound and a
//! percentile read back as the bucket's midpoint is within ~0.8% of the truth (1.6% at
//! worst). 3,776 buckets cover all of `u64`, recording is a few shifts and an increment, and
//! two histograms merge by adding counts.
//!
//! ```text
//!   value:  0 1 2 .. 127 | 128 130 132 .. 254 | 256 260 .. 508 | 512 ..
//!   bucket: 0 1 2 .. 127 | 128 129 130 .. 191 | 192 193 .. 255 | 256 ..
//!           (exact)        (width 2)            (width 4)        (width 8)
//! ```

/// Sub-buckets per power of two, as a bit count: 2^6 = 64.
const SUB_BITS: u32 = 6;
/// Values below this are recorded exactly.
const LINEAR: u64 = 1 << (SUB_BITS + 1);
const HALF: u64 = 1 << SUB_BITS;
/// Number of buckets needed for all of `u64`.
const BUCKETS: usize = (LINEAR + (63 - SUB_BITS as u64) * HALF) as usize;

/// Counts of recorded values in logarithmic buckets, plus the exact min, max and sum.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.total)
            .field("min", &self.min())
            .field("p50", &self.percentile(50.0))
            .field("p99", &self.percentile(99.0))
            .field("max", &self.max())
            .finish()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    fn index(value: u64) -> usize {
        if value < LINEAR {
            return value as usize;
        }
        let msb = 63 - value.leading_zeros();
        let shift = msb - SUB_BITS; // >= 1
        let top = value >> shift; // in HALF..2*HALF
        (LINEAR + u64::from(shift - 1) * HALF + (top - HALF)) as usize
    }

    /// The smallest and largest value that fall into bucket `index`.
    fn bounds(index: usize) -> (u64, u64) {
        let i = index as u64;
        if i < LINEAR {
            return (i, i);
        }
        let shift = (i - LINEAR) / HALF + 1;
        let top = (i - LINEAR) % HALF + HALF;
        let low = top << shift;
        let high = low.saturating_add((1u64 << shift) - 1);
        (low, high)
    }

    /// Records one value.
    pub fn record(&mut self, value: u64) {
        self.counts[Self::index(value)] += 1;
        self.total += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.sum += u128::from(value);
    }

    /// Records a duration in nanoseconds.
    pub fn record_duration(&mut self, d: std::time::Duration) {
        self.record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Adds all of `other`'s values to this histogram.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Smallest value recorded (0 when empty).
    pub fn min(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            self.min
        }
    }

    /// Largest value recorded (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Arithmetic mean (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The value at percentile `p` (0..=100): the smallest recorded value such that at least
    /// `p`% of the values are at or below it, read back as its bucket's midpoint (clamped to
    /// the exact min and max). 0 when empty.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let p = p.clamp(0.0, 100.0);
        let rank = (p * self.total as f64 / 100.0).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, high) = Self::bounds(i);
                let mid = low + (high - low) / 2;
                return mid.clamp(self.min, self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_u64_contiguously() {
        assert_eq!(Histogram::index(0), 0);
        assert_eq!(Histogram::index(127), 127);
        assert_eq!(Histogram::index(128), 128);
        assert_eq!(Histogram::index(u64::MAX), BUCKETS - 1);
        // Each bucket's bounds map back to it, and buckets tile the line without gaps.
        let mut expected_low = 0u64;
        for i in 0..BUCKETS {
            let (low, high) = Histogram::bounds(i);
            assert_eq!(low, expected_low, "bucket {i}");
            assert_eq!(Histogram::index(low), i);
            assert_eq!(Histogram::index(high), i);
            if high == u64::MAX {
                assert_eq!(i, BUCKETS - 1);
                break;
            }
            expected_low = high + 1;
        }
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.percentile(50.0), 50);
        assert_eq!(h.percentile(99.0), 99);
        assert_eq!(h.percentile(100.0), 100);
        assert_eq!(h.percentile(0.0), 1);
        assert_eq!(h.min(), 1);
        assert_eq!(h.max(), 100);
        assert!((h.mean() - 50.5).abs() < 1e-9);
    }

    #[test]
    fn percentiles_of_a_uniform_range_are_within_two_percent() {
        let mut h = Histogram::new();
        for v in 1..=1_000_000u64 {
            h.record(v * 1000); // 1 µs .. 1 s in ns
        }
        for (p, want) in [
            (50.0, 500_000_000.0),
            (90.0, 900_000_000.0),
            (99.0, 990_000_000.0),
            (99.9, 999_000_000.0),
        ] {
            let got = h.percentile(p) as f64;
            let err = (got - want).abs() / want;
            assert!(err < 0.02, "p{p}: got {got}, want {want} (err {err})");
        }
        assert_eq!(h.percentile(100.0), 1_000_000_000);
    }

    #[test]
    fn percentiles_of_a_skewed_distribution() {
        // 98 fast ops and 2 slow ones: p50 is fast, p99 lands on a slow one.
        let mut h = Histogram::new();
        for _ in 0..98 {
            h.record(2_000);
        }
        h.record(1_000_000);
        h.record(5_000_000);
        let p50 = h.percentile(50.0) as f64;
        assert!((p50 - 2_000.0).abs() / 2_000.0 < 0.02, "{p50}");
        let p99 = h.percentile(99.0) as f64;
        assert!((p99 - 1_000_000.0).abs() / 1_000_000.0 < 0.02, "{p99}");
        assert_eq!(h.percentile(100.0), 5_000_000);
    }

    #[test]
    fn empty_and_merge() {
        let mut a = Histogram::new();
        assert_eq!(a.percentile(50.0), 0);
        assert_eq!(a.min(), 0);
        assert_eq!(a.mean(), 0.0);
        let mut b = Histogram::new();
        for v in 0..10 {
            a.record(v);
            b.record(v + 10);
        }
        a.merge(&b);
        assert_eq!(a.count(), 20);
        assert_eq!(a.min(), 0);
        assert_eq!(a.max(), 19);
        assert_eq!(a.percentile(50.0), 9);
        a.record_duration(std::time::Duration::from_micros(3));
        assert_eq!(a.max(), 3_000);
    }
}
