//! Counters and histograms of the Socket.IO layer, read by the server's metrics. Relaxed
//! atomics: these are statistics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the histogram buckets, in microseconds (the last bucket is +Inf).
const BOUNDS_US: [u64; 18] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
];

/// A latency histogram with fixed buckets from 50 µs to 30 s: one atomic add per
/// observation.
#[derive(Debug)]
pub struct Histogram {
    counts: [AtomicU64; BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

/// A histogram read at one moment, in the Prometheus form.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Cumulative counts: `(upper bound in seconds, observations at or below it)`, the
    /// last with bound `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of all observations, in seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let at = BOUNDS_US.partition_point(|&b| b < us);
        self.counts[at].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            let bound = BOUNDS_US.get(i).map_or(f64::INFINITY, |&b| b as f64 / 1e6);
            buckets.push((bound, cumulative));
        }
        HistogramSnapshot {
            buckets,
            sum: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            count: cumulative,
        }
    }
}

/// What the Socket.IO layer counts.
#[derive(Debug, Default)]
pub struct Stats {
    /// Events received from clients.
    pub events_in: AtomicU64,
    /// Events refused by the per-socket rate limit.
    pub events_rate_limited: AtomicU64,
    /// Broadcasts (one per emit to a room, namespace or set of rooms).
    pub broadcasts: AtomicU64,
    /// Packets queued to sockets by broadcasts, one per recipient.
    pub deliveries: AtomicU64,
    /// Volatile packets dropped because the recipient's queue was full.
    pub dropped_volatile: AtomicU64,
    /// Packets lost with a connection closed as a slow consumer (the one that did not
    /// fit).
    pub dropped_slow_consumer: AtomicU64,
    /// Time from an emit with ack to its answer.
    pub ack_rtt: Histogram,
    /// Time to encode a broadcast and queue it on every local recipient.
    pub broadcast_fanout: Histogram,
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Observations land in the first bucket whose bound holds them; counts are
    /// cumulative and end at +Inf.
    #[test]
    fn buckets() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(10));
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(51));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(100));
        let s = h.snapshot();
        assert_eq!(s.count, 5);
        assert_eq!(s.buckets[0], (0.00005, 2));
        assert_eq!(s.buckets[1], (0.0001, 3));
        assert_eq!(s.buckets[6].1, 4);
        assert_eq!(s.buckets.last().unwrap(), &(f64::INFINITY, 5));
        assert!((s.sum - 100.003111).abs() < 1e-9);
    }
}
