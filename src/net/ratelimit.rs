//! The per-socket token bucket: `rate` messages per second sustained, `burst` at once.
//! Pure: the caller passes the time, so tests need no clock.

use std::time::Instant;

/// One socket's allowance.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens added per second.
    rate: f64,
    /// Most tokens held.
    burst: f64,
    /// Tokens now.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_sec: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: f64::from(rate_per_sec.max(1)),
            burst,
            tokens: burst,
            updated: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_sustained_rate() {
        let t = Instant::now();
        let mut b = TokenBucket::new(10, 3, t);
        assert!((0..3).all(|_| b.try_take(t)));
        assert!(!b.try_take(t));
        assert!(b.try_take(t + Duration::from_millis(100)));
        assert!(!b.try_take(t + Duration::from_millis(100)));
        assert!(
            (0..3).all(|_| b.try_take(t + Duration::from_secs(60))),
            "refills only up to the burst"
        );
        assert!(!b.try_take(t + Duration::from_secs(60)));
    }
}
