//! Summary statistics and histogram buckets of a list of samples (nanoseconds). Pure.

use serde::Serialize;

/// Summary statistics of a list of samples (nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Number of samples.
    pub count: usize,
    /// Smallest.
    pub min: u64,
    /// Median (nearest rank).
    pub p50: u64,
    /// 99th percentile (nearest rank).
    pub p99: u64,
    /// Largest.
    pub max: u64,
    /// Arithmetic mean, rounded down.
    pub mean: u64,
}

/// The `p`-th percentile (0 < p <= 100) of sorted samples by the nearest-rank method:
/// the smallest sample with at least `p` percent of the samples at or below it. `None`
/// for no samples.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

impl Stats {
    /// Statistics of `samples` (in any order); `None` when there are none.
    pub fn from_samples(samples: &[u64]) -> Option<Stats> {
        let mut s = samples.to_vec();
        s.sort_unstable();
        let sum: u128 = s.iter().map(|&x| u128::from(x)).sum();
        Some(Stats {
            count: s.len(),
            min: *s.first()?,
            p50: percentile(&s, 50.0)?,
            p99: percentile(&s, 99.0)?,
            max: *s.last()?,
            mean: (sum / s.len() as u128) as u64,
        })
    }
}

/// One histogram bucket: samples in `lo..=hi` nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Lowest value of the bucket.
    pub lo: u64,
    /// Highest value of the bucket.
    pub hi: u64,
    /// Samples in it.
    pub count: usize,
}

/// Power-of-two buckets from the one holding the smallest sample to the one holding the
/// largest (`[0, 1]`, `[2, 3]`, `[4, 7]`, ...), empty ones in between included.
pub fn buckets(samples: &[u64]) -> Vec<Bucket> {
    let class = |x: u64| if x < 2 { 0 } else { 63 - x.leading_zeros() };
    let (Some(&min), Some(&max)) = (samples.iter().min(), samples.iter().max()) else {
        return Vec::new();
    };
    let (first, last) = (class(min), class(max));
    let mut out: Vec<Bucket> = (first..=last)
        .map(|k| Bucket {
            lo: if k == 0 { 0 } else { 1u64 << k },
            hi: if k >= 63 { u64::MAX } else { (1u64 << (k + 1)) - 1 },
            count: 0,
        })
        .collect();
    for &x in samples {
        out[(class(x) - first) as usize].count += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let s: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&s, 50.0), Some(50));
        assert_eq!(percentile(&s, 99.0), Some(99));
        assert_eq!(percentile(&s, 100.0), Some(100));
        assert_eq!(percentile(&s, 0.1), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[1, 2, 3, 4], 50.0), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4, 5], 50.0), Some(3));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn stats_sort_their_input() {
        let st = Stats::from_samples(&[30, 10, 20, 1000]).unwrap();
        assert_eq!(st, Stats { count: 4, min: 10, p50: 20, p99: 1000, max: 1000, mean: 265 });
        assert_eq!(Stats::from_samples(&[]), None);
    }

    #[test]
    fn buckets_are_powers_of_two_with_gaps_kept() {
        let b = buckets(&[5, 6, 40, 1]);
        assert_eq!(b.first().unwrap(), &Bucket { lo: 0, hi: 1, count: 1 });
        assert_eq!(b.iter().map(|x| x.count).sum::<usize>(), 4);
        assert_eq!(b[2], Bucket { lo: 4, hi: 7, count: 2 });
        assert_eq!(b[3], Bucket { lo: 8, hi: 15, count: 0 });
        assert_eq!(b.last().unwrap(), &Bucket { lo: 32, hi: 63, count: 1 });
        assert_eq!(b.len(), 6);
        assert!(buckets(&[]).is_empty());
        let top = buckets(&[u64::MAX]);
        assert_eq!(top, vec![Bucket { lo: 1 << 63, hi: u64::MAX, count: 1 }]);
    }
}
