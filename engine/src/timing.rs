//! Per-stage timing, recorded on the real-time thread without locks.
//!
//! Each stage has two [`Histogram`]s: *wait* (cycle scheduled -> stage
//! started) and *busy* (stage started -> finished). The real-time thread is
//! the only writer, so each record is a few relaxed loads and stores, no
//! locked instruction. The control side reads the atomics whenever it likes
//! and diffs two [`HistogramSnapshot`]s for a windowed view (the `top` table).

use std::sync::atomic::{AtomicU64, Ordering};

const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Values below this get a bucket each.
const LINEAR: u64 = 2 * SUB as u64;
/// Buckets: 16 linear, then 8 per power of two up to 2^64.
pub const BUCKETS: usize = LINEAR as usize + (64 - 4) * SUB;

fn bucket_of(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // >= 4
    let m = ((v >> (e - SUB_BITS)) & (SUB as u64 - 1)) as usize;
    LINEAR as usize + (e as usize - 4) * SUB + m
}

/// Upper bound (exclusive) of a bucket's values.
fn bucket_upper(i: usize) -> u64 {
    if i < LINEAR as usize {
        return i as u64 + 1;
    }
    let k = i - LINEAR as usize;
    let e = (k / SUB) as u32 + 4;
    let m = (k % SUB) as u64;
    let upper = ((SUB as u128 + m as u128 + 1) << (e - SUB_BITS)) - 1;
    upper.min(u64::MAX as u128) as u64
}

/// A log-linear histogram of nanosecond values (12.5 % resolution).
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count.load(Ordering::Relaxed))
            .finish()
    }
}

fn bump(a: &AtomicU64, by: u64) {
    a.store(
        a.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

impl Histogram {
    /// Records one value. Single writer only (the domain's thread).
    #[inline]
    pub fn record(&self, ns: u64) {
        bump(&self.buckets[bucket_of(ns)], 1);
        bump(&self.sum, ns);
        if ns > self.max.load(Ordering::Relaxed) {
            self.max.store(ns, Ordering::Relaxed);
        }
        // Count last: a reader that sees the count sees the bucket too (on the
        // same thread order; readers tolerate being one sample behind).
        self.count
            .store(self.count.load(Ordering::Relaxed) + 1, Ordering::Release);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let count = self.count.load(Ordering::Acquire);
        HistogramSnapshot {
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            count,
            sum: self.sum.load(Ordering::Relaxed),
            max: self.max.load(Ordering::Relaxed),
        }
    }
}

/// A copy of a histogram's counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum: u64,
    /// Largest value ever recorded (not windowed).
    pub max: u64,
}

impl HistogramSnapshot {
    /// The counts recorded since `earlier`.
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        if earlier.buckets.len() != self.buckets.len() {
            return self.clone();
        }
        HistogramSnapshot {
            buckets: self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            count: self.count.saturating_sub(earlier.count),
            sum: self.sum.saturating_sub(earlier.sum),
            max: self.max,
        }
    }

    /// The value at quantile `q` (0..=1), as its bucket's upper bound; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_upper(i).min(self.max.max(1));
            }
        }
        self.max
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }
}

/// Timing of one stage.
#[derive(Debug, Default)]
pub struct StageTiming {
    /// Cycle scheduled -> stage started, ns.
    pub wait: Histogram,
    /// Stage started -> finished, ns.
    pub busy: Histogram,
}

/// Counters of one scheduler domain.
#[derive(Debug, Default)]
pub struct DomainTiming {
    pub cycles: AtomicU64,
    /// Cycles that finished after their deadline.
    pub xruns: AtomicU64,
    /// Whole-cycle busy time.
    pub cycle_busy: Histogram,
}

impl DomainTiming {
    #[inline]
    pub(crate) fn cycle_done(&self, busy_ns: u64, late: bool) {
        bump(&self.cycles, 1);
        if late {
            bump(&self.xruns, 1);
        }
        self.cycle_busy.record(busy_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_bounded() {
        let mut last = 0;
        for v in [
            0u64,
            1,
            15,
            16,
            17,
            31,
            32,
            100,
            1000,
            20_000_000,
            u64::MAX / 2,
            u64::MAX,
        ] {
            let b = bucket_of(v);
            assert!(b < BUCKETS, "{v} -> {b}");
            assert!(b >= last, "bucket order broke at {v}");
            last = b;
            assert!(
                v <= bucket_upper(b),
                "{v} above its bucket's upper bound {}",
                bucket_upper(b)
            );
        }
    }

    #[test]
    fn quantiles_within_resolution() {
        let h = Histogram::default();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let s = h.snapshot();
        let p50 = s.quantile(0.5) as f64;
        let p99 = s.quantile(0.99) as f64;
        assert!((p50 / 500_000.0 - 1.0).abs() < 0.13, "p50 {p50}");
        assert!((p99 / 990_000.0 - 1.0).abs() < 0.13, "p99 {p99}");
        assert_eq!(s.count, 1000);
        let later = {
            h.record(5);
            h.snapshot()
        };
        let d = later.since(&s);
        assert_eq!(d.count, 1);
        assert_eq!(d.quantile(0.5), 6);
    }
}
