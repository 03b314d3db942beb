//! What the racer tasks and the monitor of one `sim race` run share: the ride, the race clock
//! (gun, speedup, deadline), the handshake gate and the statistics.
//!
//! How it fits: built once by [`super::race`], read by every [`super::racer::Racer`] and by
//! [`super::monitor`]; only the counters change, and only as statistics.

use super::ride::Ride;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// WebSocket handshakes in flight at once, so 10,000 racers do not open 10,000 TCP
/// connections in the same millisecond.
pub(super) const CONNECT_CONCURRENCY: usize = 64;

/// Counts shared by every racer task and the monitor (relaxed atomics: they are statistics).
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Sockets open now.
    pub(super) connected: AtomicU64,
    /// Distinct fixes sent (a resend is not counted again).
    pub(super) fixes_sent: AtomicU64,
    /// Recorded fixes left out because the server's pace asked for fewer.
    pub(super) fixes_paced_out: AtomicU64,
    /// Fixes sent again on a new connection because their ack never came.
    pub(super) fixes_resent: AtomicU64,
    /// Fixes the server accepted (sum of `fixes_ack.accepted`).
    pub(super) accepted: AtomicU64,
    /// Fixes the server ignored: resends, noise spikes, fixes after the racer finished.
    pub(super) ignored: AtomicU64,
    /// `fixes` messages sent, resends included.
    pub(super) messages: AtomicU64,
    /// Connections lost and made again.
    pub(super) reconnects: AtomicU64,
}

impl Counters {
    /// Reads one counter.
    pub(super) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Adds to one counter.
    pub(super) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What every racer task shares.
#[derive(Debug)]
pub(super) struct Shared {
    /// `ws://HOST:PORT`.
    pub(super) server: String,
    /// The ride every racer without a fault replays (a faulty one has its own copy).
    pub(super) ride: Arc<Ride>,
    /// The race's start time, ms since the epoch: the base of every device timestamp.
    pub(super) start_at_ms: i64,
    /// Race time per wall-clock time.
    pub(super) speedup: f64,
    /// Fixes a racer collects before it sends (more when it falls behind).
    pub(super) batch: usize,
    /// Whether racers thin their fixes to the interval the server asks for.
    pub(super) obey_pace: bool,
    /// Wall-clock instant of the gun.
    pub(super) gun: Instant,
    /// The run gives up at this instant; anything scheduled later never happens.
    pub(super) deadline: Instant,
    /// Limits simultaneous handshakes ([`CONNECT_CONCURRENCY`]).
    pub(super) gate: Semaphore,
    /// Statistics.
    pub(super) counters: Counters,
}

impl Shared {
    /// When `race_ms` after the gun happens on the wall clock.
    pub(super) fn wall(&self, race_ms: i64) -> Instant {
        let secs = race_ms.max(0) as f64 / 1000.0 / self.speedup;
        Duration::try_from_secs_f64(secs)
            .ok()
            .and_then(|d| self.gun.checked_add(d))
            .unwrap_or(self.deadline)
    }
}
