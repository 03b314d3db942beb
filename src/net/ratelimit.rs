//! The per-socket token bucket: `rate` messages per second sustained, `burst` at once; and
//! the [`FloodWindow`] that judges its refusals over a window.
//! Pure: the caller passes the time, so tests need no clock.

use std::time::{Duration, Instant};

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

/// What to do with a message the bucket refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The first refusal of its window: answer it with a `rate_limited` error, so the
    /// client learns why.
    Answer,
    /// Already answered in this window: drop it silently (counted in a metric), so a flood
    /// costs the server no error frames.
    Drop,
    /// `close_after` refusals within one window: the client is persistently above the
    /// limit; close the socket with 1008.
    Close,
}

/// Judges refusals over a fixed window instead of a run of consecutive refusals, which a
/// client could dodge by letting one message in every few. Pure, like [`TokenBucket`].
#[derive(Debug, Clone)]
pub struct FloodWindow {
    /// Length of one judging window.
    window: Duration,
    /// Refusals within one window that close the socket.
    close_after: u32,
    /// When the current window began (its first refusal); `None` before any refusal.
    started: Option<Instant>,
    /// Refusals in the current window.
    refusals: u32,
}

impl FloodWindow {
    /// A judge with no refusals yet; `close_after` of 0 is taken as 1.
    pub fn new(window: Duration, close_after: u32) -> Self {
        FloodWindow {
            window,
            close_after: close_after.max(1),
            started: None,
            refusals: 0,
        }
    }

    /// Records one refused message at `now` and says what to do with it. A window starts
    /// at the first refusal after the previous one ran out.
    pub fn refuse(&mut self, now: Instant) -> Refusal {
        let fresh = self
            .started
            .is_none_or(|s| now.saturating_duration_since(s) >= self.window);
        if fresh {
            self.started = Some(now);
            self.refusals = 0;
        }
        self.refusals = self.refusals.saturating_add(1);
        if self.refusals >= self.close_after {
            Refusal::Close
        } else if self.refusals == 1 {
            Refusal::Answer
        } else {
            Refusal::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    #[test]
    fn one_answer_per_window_then_close_when_persistent() {
        let t = Instant::now();
        let mut w = FloodWindow::new(Duration::from_secs(2), 4);
        assert_eq!(w.refuse(t), Refusal::Answer);
        assert_eq!(w.refuse(t), Refusal::Drop);
        assert_eq!(w.refuse(t + Duration::from_millis(500)), Refusal::Drop);
        // A new window: answered again, and the count starts over.
        let t2 = t + Duration::from_secs(2);
        assert_eq!(w.refuse(t2), Refusal::Answer);
        assert_eq!(w.refuse(t2), Refusal::Drop);
        assert_eq!(w.refuse(t2), Refusal::Drop);
        assert_eq!(w.refuse(t2 + Duration::from_secs(1)), Refusal::Close);
    }

    proptest! {
        /// Whatever the timing, a window answers at most once, and fewer than
        /// `close_after` refusals in a window never close.
        #[test]
        fn at_most_one_answer_per_window(gaps in proptest::collection::vec(0u64..3000, 1..200), close_after in 1u32..50) {
            let window = Duration::from_millis(1000);
            let mut w = FloodWindow::new(window, close_after);
            let mut now = Instant::now();
            let (mut window_start, mut in_window, mut answers) = (None::<Instant>, 0u32, 0u32);
            for gap in gaps {
                now += Duration::from_millis(gap);
                if window_start.is_none_or(|s| now.duration_since(s) >= window) {
                    window_start = Some(now);
                    in_window = 0;
                    answers = 0;
                }
                in_window += 1;
                match w.refuse(now) {
                    Refusal::Answer => answers += 1,
                    Refusal::Drop => {}
                    Refusal::Close => {
                        prop_assert!(in_window >= close_after);
                        break;
                    }
                }
                prop_assert!(answers <= 1);
                prop_assert!(in_window < close_after);
            }
        }
    }
}
