//! Per-peer token buckets for the inbox: messages, and payload bytes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Per-peer token buckets: `rate` tokens (messages, or bytes) per second,
/// up to `burst` saved.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(rate: u32, burst: u32) -> RateLimiter {
        RateLimiter::with_rates(f64::from(rate), f64::from(burst))
    }

    /// A limiter: `rate` per second, `burst` saved. A single request costing
    /// more than the burst is let through only when the bucket is full, and
    /// is charged in full: the bucket goes into debt, so the peer waits as
    /// long as if it had sent the same in small requests.
    pub fn with_rates(rate: f64, burst: f64) -> RateLimiter {
        RateLimiter {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `cost` tokens for `peer`, or says in how many seconds to retry.
    pub fn take(&self, peer: &str, cost: usize) -> Result<(), u64> {
        let cost = cost as f64;
        // What must be saved up before this request may pass.
        let needed = cost.min(self.burst);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = buckets.entry(peer.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        if *tokens >= needed {
            *tokens -= cost;
            Ok(())
        } else {
            Err(((needed - *tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimiter;

    #[test]
    fn a_request_above_the_burst_is_charged_in_full() {
        let limiter = RateLimiter::new(1, 10);
        // A full bucket lets one large request through...
        assert!(limiter.take("p", 1000).is_ok());
        // ...which leaves it ~990 in debt: the next waits that long.
        let wait = limiter.take("p", 1).unwrap_err();
        assert!(wait >= 900, "{wait}");
        // Another peer has its own bucket.
        assert!(limiter.take("q", 10).is_ok());
        assert!(limiter.take("q", 1).is_err());
    }
}
