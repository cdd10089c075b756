//! Per-token rate limit: a token bucket per API token, on each node (a client that spreads
//! its calls over N gateways gets up to N times the rate; a tablet talks to one).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept before full (idle) ones are forgotten.
const MAX_BUCKETS: usize = 10_000;

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// A token bucket per key: `burst` requests at once, `per_sec` sustained.
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `per_sec` of 0 turns the limit off.
    pub fn new(per_sec: f64, burst: u32) -> Self {
        // Anything not a sensible positive rate is "off"; tiny rates are held at one
        // request an hour (a wait must stay representable).
        let per_sec = if per_sec.is_finite() && per_sec > 0.0 {
            per_sec.max(1.0 / 3600.0)
        } else {
            0.0
        };
        Self {
            per_sec,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.per_sec > 0.0
    }

    /// Takes one request from `key`'s bucket, or says how long until one is available.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if !self.enabled() {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            self.forget_full(&mut buckets, now);
        }
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: self.burst,
            refilled: now,
        });
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_sec).min(self.burst);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_sec,
            ))
        }
    }

    /// Drops the buckets that have refilled completely: forgetting them changes nothing.
    fn forget_full(&self, buckets: &mut HashMap<String, Bucket>, now: Instant) {
        let full_after = self.burst / self.per_sec;
        buckets.retain(|_, b| now.saturating_duration_since(b.refilled).as_secs_f64() < full_after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let limiter = RateLimiter::new(10.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at("a", t0).is_ok());
        }
        let wait = limiter.check_at("a", t0).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert!(
            limiter.check_at("b", t0).is_ok(),
            "another token has its own bucket"
        );
        assert!(
            limiter
                .check_at("a", t0 + Duration::from_millis(100))
                .is_ok()
        );
        assert!(
            limiter
                .check_at("a", t0 + Duration::from_millis(100))
                .is_err()
        );
    }

    #[test]
    fn zero_rate_means_no_limit() {
        let limiter = RateLimiter::new(0.0, 1);
        for _ in 0..1000 {
            assert!(limiter.check("a").is_ok());
        }
    }
}
