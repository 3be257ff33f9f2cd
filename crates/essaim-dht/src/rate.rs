//! Rate limits that keep the node from being used as an amplifier: a token
//! bucket for the queries we send, and one per source IP (plus a global
//! one) for the replies we send.
//!
//! The per-IP map is bounded: at [`MAX_TRACKED_IPS`] entries, idle ones
//! (full buckets) are forgotten; if none is idle, queries from new IPs are
//! refused until some are — a flood of spoofed sources then costs us only
//! the global budget.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Source IPs tracked by the reply limiter.
pub const MAX_TRACKED_IPS: usize = 10_000;

/// A token bucket counting events (packets), refilled continuously.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// Starts full: `burst` events may pass at once, then `per_sec`.
    pub fn new(per_sec: u32, burst: u32, now: Instant) -> Self {
        TokenBucket {
            per_sec: f64::from(per_sec.max(1)),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.per_sec).min(self.burst);
        self.last = self.last.max(now);
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next token will be there (now if there is one).
    pub fn next_token(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.tokens >= 1.0 {
            now
        } else {
            now + Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec)
        }
    }

    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// Replies allowed per source IP and in total.
pub struct ReplyLimiter {
    per_ip: BTreeMap<IpAddr, TokenBucket>,
    global: TokenBucket,
    rate: u32,
    burst: u32,
}

impl ReplyLimiter {
    pub fn new(per_ip_rate: u32, per_ip_burst: u32, global_rate: u32, now: Instant) -> Self {
        ReplyLimiter {
            per_ip: BTreeMap::new(),
            global: TokenBucket::new(global_rate, global_rate, now),
            rate: per_ip_rate,
            burst: per_ip_burst,
        }
    }

    /// Whether we may answer one more query from `ip` now.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if !self.per_ip.contains_key(&ip) && self.per_ip.len() >= MAX_TRACKED_IPS {
            self.prune(now);
            if self.per_ip.len() >= MAX_TRACKED_IPS {
                return false;
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        let bucket = self
            .per_ip
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(rate, burst, now));
        // Both must agree; a refused IP does not spend the global budget.
        bucket.try_take(now) && self.global.try_take(now)
    }

    /// Forgets IPs whose bucket has refilled (they sent nothing lately).
    pub fn prune(&mut self, now: Instant) {
        self.per_ip.retain(|_, b| !b.is_full(now));
    }

    pub fn tracked(&self) -> usize {
        self.per_ip.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_rate_and_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5, t0);
        assert_eq!((0..20).filter(|_| b.try_take(t0)).count(), 5);
        assert_eq!(b.next_token(t0), t0 + Duration::from_millis(100));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            (0..20).filter(|_| b.try_take(t1)).count(),
            5,
            "capped at burst"
        );
        // Over 10 s at one query per ms, about 100 pass.
        let mut passed = 0;
        for ms in 0..10_000 {
            if b.try_take(t1 + Duration::from_millis(ms)) {
                passed += 1;
            }
        }
        assert!((99..=101).contains(&passed), "{passed}");
    }

    #[test]
    fn per_ip_and_global() {
        let t0 = Instant::now();
        let mut l = ReplyLimiter::new(2, 4, 10, t0);
        let a: IpAddr = "1.1.1.1".parse().unwrap();
        let b: IpAddr = "2.2.2.2".parse().unwrap();
        assert_eq!((0..100).filter(|_| l.allow(a, t0)).count(), 4);
        assert_eq!(
            (0..100).filter(|_| l.allow(b, t0)).count(),
            4,
            "b has its own budget"
        );
        let others = (0..100u32)
            .filter(|i| l.allow(IpAddr::from(std::net::Ipv4Addr::from(0x0300_0000 + i)), t0))
            .count();
        assert_eq!(others, 2, "global budget of 10 is spent");
        l.prune(t0 + Duration::from_secs(60));
        assert_eq!(l.tracked(), 0);
    }
}
