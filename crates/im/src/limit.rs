//! Token buckets: a user's sends (`im.send_rate`, `im.send_burst`) and a conversation's
//! fan-out budget (`im.conversation_fanout_rate`).

use std::time::Duration;

use tokio::time::Instant;

/// `rate` tokens a second up to `burst`; full when made.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket of `burst` tokens at `now`.
    pub(crate) fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
    }

    /// Takes `cost` tokens, or says how long until there are enough (nothing is taken
    /// then). A cost above `burst` is taken as `burst`: the largest thing still goes
    /// through, once the bucket is full.
    pub(crate) fn take(
        &mut self,
        cost: f64,
        rate: f64,
        burst: f64,
        now: Instant,
    ) -> Result<(), Duration> {
        self.refill(rate, burst, now);
        let cost = cost.min(burst);
        if self.tokens >= cost {
            self.tokens -= cost;
            return Ok(());
        }
        let wait = (cost - self.tokens) / rate;
        // At least a millisecond: a client told 0 would retry at once and fail again.
        Err(Duration::from_secs_f64(wait).max(Duration::from_millis(1)))
    }

    /// Puts `cost` tokens back (as [`Bucket::take`] took them: at most `burst`), never
    /// above `burst`.
    pub(crate) fn give(&mut self, cost: f64, burst: f64) {
        self.tokens = (self.tokens + cost.min(burst)).min(burst);
    }

    /// When the bucket is full again (`now` if it is).
    pub(crate) fn full_at(&self, rate: f64, burst: f64) -> Instant {
        let missing = (burst - self.tokens).max(0.0);
        self.at + Duration::from_secs_f64(missing / rate)
    }
}

/// How long a client is told to wait, in whole milliseconds (rounded up).
pub(crate) fn retry_ms(wait: Duration) -> u64 {
    wait.as_micros().div_ceil(1000) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::full(3.0, t0);
        for _ in 0..3 {
            assert!(b.take(1.0, 10.0, 3.0, t0).is_ok());
        }
        let wait = b.take(1.0, 10.0, 3.0, t0).unwrap_err();
        assert_eq!(retry_ms(wait), 100, "one token at 10/s");
        // Half a token later: still refused, sooner.
        let wait = b
            .take(1.0, 10.0, 3.0, t0 + Duration::from_millis(50))
            .unwrap_err();
        assert_eq!(retry_ms(wait), 50);
        assert!(b
            .take(1.0, 10.0, 3.0, t0 + Duration::from_millis(100))
            .is_ok());
        // Never above the burst, however long it rested.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(b.take(1.0, 10.0, 3.0, later).is_ok());
        }
        assert!(b.take(1.0, 10.0, 3.0, later).is_err());
    }

    #[test]
    fn a_cost_above_the_burst_waits_for_a_full_bucket() {
        let t0 = Instant::now();
        let mut b = Bucket::full(100.0, t0);
        assert!(
            b.take(1000.0, 100.0, 100.0, t0).is_ok(),
            "taken as the burst"
        );
        let wait = b.take(1000.0, 100.0, 100.0, t0).unwrap_err();
        assert_eq!(retry_ms(wait), 1000);
        assert_eq!(b.full_at(100.0, 100.0), t0 + Duration::from_secs(1));
        // Given back (a send that stored nothing): there again, never above the burst.
        b.give(1000.0, 100.0);
        assert!(b.take(100.0, 100.0, 100.0, t0).is_ok());
        b.give(60.0, 100.0);
        b.give(60.0, 100.0);
        assert!(b.take(100.0, 100.0, 100.0, t0).is_ok());
        assert!(b.take(1.0, 100.0, 100.0, t0).is_err());
    }
}
