//! The domains' clock: wall-clock milliseconds that advance with tokio's clock.
//!
//! Due times are stored as wall-clock milliseconds (they must mean the same after a
//! restart), but schedulers and duty windows sleep on tokio timers. Deriving "now" from tokio's
//! `Instant` since start keeps the two consistent, and lets tests pause and advance time
//! (`start_paused = true`) to check backoff, breaker and duty-window timing without waiting.

use crate::time::{now_ms, UnixMillis};
use tokio::time::Instant;

/// Wall-clock time, advancing with tokio's clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Wall-clock time when the clock was made.
    wall_at_start: UnixMillis,
    /// tokio's time then.
    started: Instant,
}

impl Clock {
    /// A clock reading the wall clock now.
    pub fn new() -> Clock {
        Clock {
            wall_at_start: now_ms(),
            started: Instant::now(),
        }
    }

    /// The current time in milliseconds since the epoch.
    pub fn now_ms(&self) -> UnixMillis {
        let elapsed = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.wall_at_start.saturating_add(elapsed)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
