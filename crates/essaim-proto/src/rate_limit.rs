//! A token bucket for upload and download caps. Pure: the caller passes the
//! time and sleeps for the delay it is told.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TokenBucket {
    /// Bytes per second.
    rate: u64,
    /// Most tokens that can pile up (a burst).
    capacity: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A bucket refilled at `rate` bytes per second, holding at most a
    /// quarter second of burst (and at least 64 KiB).
    pub fn new(rate: u64) -> Self {
        let capacity = (rate as f64 / 4.0).max(64.0 * 1024.0);
        TokenBucket {
            rate: rate.max(1),
            capacity,
            tokens: capacity,
            last: None,
        }
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Takes `n` bytes' worth of tokens (going into debt if need be) and
    /// returns how long the caller must wait before using them.
    pub fn take(&mut self, n: u64, now: Instant) -> Duration {
        let last = *self.last.get_or_insert(now);
        let elapsed = now.saturating_duration_since(last).as_secs_f64();
        self.last = Some(now);
        self.tokens = (self.tokens + elapsed * self.rate as f64).min(self.capacity);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_rate_over_time() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1_000_000);
        // Spend the initial burst, then each 100 KB costs 0.1 s.
        let mut now = t0;
        let mut waited = Duration::ZERO;
        for _ in 0..50 {
            let d = b.take(100_000, now);
            now += d;
            waited += d;
        }
        // 5 MB at 1 MB/s, minus the 256 KB burst: about 4.75 s.
        let secs = waited.as_secs_f64();
        assert!((4.6..4.9).contains(&secs), "{secs}");
    }

    #[test]
    fn idle_time_refills_only_up_to_capacity() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1_000_000);
        assert_eq!(b.take(250_000, t0), Duration::ZERO);
        let later = t0 + Duration::from_secs(100);
        assert_eq!(b.take(250_000, later), Duration::ZERO);
        assert!(b.take(100_000, later) > Duration::ZERO);
    }
}
