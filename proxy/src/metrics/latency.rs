//! A latency histogram the request path can observe without a lock.
//!
//! prometheus-client's `Histogram` takes a write lock per observation; every request
//! observes one or two, from every worker, so this one keeps one atomic per bucket and
//! hands the counts to prometheus-client's encoder at scrape time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds in seconds: a sidecar adds tens of microseconds, an upstream takes
/// milliseconds to seconds, so the buckets run from 25µs to 10s in 1-2.5-5 steps.
pub const BOUNDS: [f64; 19] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0,
];

/// The same bounds in nanoseconds, for the comparison on the request path.
const BOUNDS_NANOS: [u64; 19] = {
    let mut nanos = [0; 19];
    let mut i = 0;
    while i < BOUNDS.len() {
        nanos[i] = (BOUNDS[i] * 1e9) as u64;
        i += 1;
    }
    nanos
};

#[derive(Default)]
struct Inner {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

/// Cheap to clone: clones share the counts.
#[derive(Clone, Default)]
pub struct LatencyHistogram(Arc<Inner>);

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count())
            .finish()
    }
}

impl LatencyHistogram {
    pub fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NANOS.iter().position(|&b| nanos <= b).unwrap_or(BOUNDS.len());
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far (the sum of the buckets, so it always agrees with them).
    pub fn count(&self) -> u64 {
        self.0.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut buckets = [(0.0, 0); BOUNDS.len() + 1];
        for (i, slot) in buckets.iter_mut().enumerate() {
            *slot = (
                BOUNDS.get(i).copied().unwrap_or(f64::MAX),
                self.0.buckets[i].load(Ordering::Relaxed),
            );
        }
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_observation_lands_in_the_first_bucket_that_holds_it() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(25));
        h.observe(Duration::from_micros(26));
        h.observe(Duration::from_secs(60));
        let counts: Vec<u64> = h.0.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        assert_eq!(counts[0], 1, "25µs is in le=0.000025");
        assert_eq!(counts[1], 1, "26µs is in le=0.00005");
        assert_eq!(counts[BOUNDS.len()], 1, "a minute is only in +Inf");
        assert_eq!(h.count(), 3);
    }
}
