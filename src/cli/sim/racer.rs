//! One simulated phone: a tokio task that connects with its racer token, sends its fixes as
//! they fall due on the race clock, catches up in bigger messages when behind, reconnects and
//! resends after a lost connection, and stops when its ride ends, the race closes or the
//! monitor says stop.
//!
//! How it fits: spawned by [`super::race`], one per racer that shows up; its fixes come from
//! [`super::track::RacerTrack`], its clock and counters from [`super::shared::Shared`]; how it
//! ended goes to [`super::monitor`].

use super::plan::RacerPlan;
use super::ride::Ride;
use super::shared::{Counters, Shared};
use super::track::RacerTrack;
use crate::cli::CliError;
use crate::error::ErrorCode;
use crate::net::client::{Client, ClientError};
use crate::net::codec::Codec;
use crate::net::protocol::{Push, Reply, Request, WireFix};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Most fixes in one message when a racer catches up; ~28 bytes each keeps the frame well
/// under the server's 64 KiB limit for racer sockets.
const MAX_FIXES_PER_MESSAGE: usize = 1000;
/// Least time between two messages on one socket: 40 per second stays under the server's
/// sustained rate limit (50/s by default) whatever the speedup.
const MIN_SEND_INTERVAL: Duration = Duration::from_millis(25);
/// Attempts to (re)connect one racer before the run fails, with a doubling pause between them.
const CONNECT_ATTEMPTS: u32 = 20;
/// First pause between connection attempts.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest pause between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Resends of one message the server refused as `rate_limited` or `unavailable` (both mean
/// "later") before giving up.
const BUSY_RETRIES: u32 = 30;
/// Pause before such a resend.
const BUSY_PAUSE: Duration = Duration::from_secs(1);

/// How a racer task ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RacerEnd {
    /// Sent its whole ride, run-out included.
    RodeOut,
    /// The race stopped taking fixes (it finished, by itself or by an admin, or was
    /// cancelled); whether that is success is the standings' to say.
    RaceClosed,
    /// Told to stop by the monitor.
    Stopped,
}

/// How delivering one message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// The server acknowledged it.
    Acked,
    /// The race is no longer live.
    RaceClosed,
}

/// One simulated phone.
pub(super) struct Racer {
    /// Who it is.
    pub(super) plan: RacerPlan,
    /// What it rides: the shared ride, or its own copy with its fault in it.
    pub(super) ride: Arc<Ride>,
    /// Its racer token (race and bib bound).
    pub(super) token: String,
    /// The run's shared state.
    pub(super) shared: Arc<Shared>,
    /// Set to true when the run is over.
    pub(super) stop: watch::Receiver<bool>,
    /// The socket, when connected.
    pub(super) client: Option<Client>,
    /// The interval the server last asked for (its `pace` push), when obeying it.
    pub(super) pace_ms: Option<u32>,
}

impl Racer {
    /// Connects, then sends the ride on schedule until it is done, the race closes, or the
    /// monitor says stop.
    pub(super) async fn run(mut self) -> Result<RacerEnd, CliError> {
        let shared = Arc::clone(&self.shared);
        let mut track =
            RacerTrack::new(Arc::clone(&self.ride), self.plan, shared.start_at_ms).peekable();
        // Phones are on before the gun, so the start is not a connection storm.
        let client = self.connect().await?;
        self.client = Some(client);
        let mut last_send: Option<Instant> = None;
        let mut last_kept_ms: Option<i64> = None;
        loop {
            let mut fixes: Vec<WireFix> = Vec::with_capacity(shared.batch);
            let mut due_ms = None;
            while fixes.len() < shared.batch {
                let Some(next) = track.next() else { break };
                if self.paced_out(next.race_ms, &mut last_kept_ms, track.peek().is_none()) {
                    continue;
                }
                due_ms = Some(next.race_ms);
                fixes.push(next.fix);
            }
            let Some(due_ms) = due_ms else { break };
            let mut wake = shared.wall(due_ms);
            if let Some(at) = last_send {
                wake = wake.max(at + MIN_SEND_INTERVAL);
            }
            if self.stopped_while_waiting(wake).await {
                self.close().await;
                return Ok(RacerEnd::Stopped);
            }
            // Behind schedule (a high speedup, a slow ack): what is already due goes along, so
            // the message rate stays bounded and the racer catches up.
            let now = Instant::now();
            while fixes.len() < MAX_FIXES_PER_MESSAGE {
                let Some(next) = track.next_if(|next| shared.wall(next.race_ms) <= now) else {
                    break;
                };
                if !self.paced_out(next.race_ms, &mut last_kept_ms, track.peek().is_none()) {
                    fixes.push(next.fix);
                }
            }
            last_send = Some(Instant::now());
            if self.deliver(&fixes).await? == Delivery::RaceClosed {
                self.close().await;
                return Ok(RacerEnd::RaceClosed);
            }
        }
        self.close().await;
        Ok(RacerEnd::RodeOut)
    }

    /// Whether a phone obeying the server's pace would leave out the fix at `race_ms`: one
    /// taken before the interval since the last kept fix (`last_kept_ms`, updated when the
    /// fix is kept) has passed. The ride's last fix always goes, so the finish is seen.
    fn paced_out(&self, race_ms: i64, last_kept_ms: &mut Option<i64>, last: bool) -> bool {
        let too_soon = match (self.pace_ms, *last_kept_ms) {
            (Some(pace), Some(kept)) if self.shared.obey_pace => race_ms - kept < i64::from(pace),
            _ => false,
        };
        if too_soon && !last {
            Counters::add(&self.shared.counters.fixes_paced_out, 1);
            return true;
        }
        *last_kept_ms = Some(race_ms);
        false
    }

    /// Sleeps until `at`; true if the monitor said stop meanwhile.
    async fn stopped_while_waiting(&mut self, at: Instant) -> bool {
        if *self.stop.borrow() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => false,
            // A dropped sender means the run is over too.
            _ = self.stop.changed() => true,
        }
    }

    /// Sends `fixes` until acknowledged, reconnecting and resending after a lost connection
    /// (the server ignores what it already has).
    async fn deliver(&mut self, fixes: &[WireFix]) -> Result<Delivery, CliError> {
        let shared = Arc::clone(&self.shared);
        let counters = &shared.counters;
        let bib = self.plan.bib;
        Counters::add(&counters.fixes_sent, fixes.len() as u64);
        let mut busy = 0;
        loop {
            let mut client = match self.client.take() {
                Some(client) => client,
                None => self.connect().await?,
            };
            Counters::add(&counters.messages, 1);
            let result = client
                .request(Request::Fixes {
                    fixes: fixes.to_vec(),
                })
                .await;
            match result {
                Ok(Reply::FixesAck {
                    accepted, ignored, ..
                }) => {
                    Counters::add(&counters.accepted, u64::from(accepted));
                    Counters::add(&counters.ignored, u64::from(ignored));
                    // The pace follows its ack; what arrived by the next request is kept.
                    while let Some(push) = client.queued_push() {
                        if let Push::Pace { interval_ms, .. } = push {
                            self.pace_ms = Some(interval_ms);
                        }
                    }
                    self.client = Some(client);
                    return Ok(Delivery::Acked);
                }
                Ok(other) => {
                    return Err(CliError::Failed(format!(
                        "bib {bib}: unexpected reply {} to fixes",
                        other.type_name()
                    )))
                }
                Err(e) => match e.code() {
                    Some(ErrorCode::InvalidTransition) => {
                        self.client = Some(client);
                        return Ok(Delivery::RaceClosed);
                    }
                    Some(ErrorCode::RateLimited | ErrorCode::Unavailable)
                        if busy < BUSY_RETRIES =>
                    {
                        busy += 1;
                        self.client = Some(client);
                        tokio::time::sleep(BUSY_PAUSE).await;
                    }
                    // The simulator dates fixes in race time, ahead of the wall clock by the
                    // speed-up: a server that bounds device time refuses them.
                    Some(ErrorCode::BadTime) => {
                        return Err(CliError::Failed(format!(
                            "bib {bib}: the server refused its fixes: {e}. A sped-up \
                             simulation dates its fixes ahead of the clock; run the server it \
                             targets with tracking.max_future_skew_ms raised (e.g. \
                             PELOTON_TRACKING_MAX_FUTURE_SKEW_MS=604800000) or use --speedup 1"
                        )))
                    }
                    Some(_) => {
                        return Err(CliError::Failed(format!(
                            "bib {bib}: the server refused its fixes: {e}"
                        )))
                    }
                    None => {
                        // The connection broke with the message in flight: resend it on a
                        // new one.
                        counters.connected.fetch_sub(1, Ordering::Relaxed);
                        Counters::add(&counters.reconnects, 1);
                        Counters::add(&counters.fixes_resent, fixes.len() as u64);
                    }
                },
            }
        }
    }

    /// Opens this racer's socket, retrying with backoff; a refused token fails at once.
    async fn connect(&self) -> Result<Client, CliError> {
        let bib = self.plan.bib;
        let mut pause = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result =
                {
                    let _permit =
                        self.shared.gate.acquire().await.map_err(|_| {
                            CliError::Failed("the simulator is shutting down".into())
                        })?;
                    Client::connect(&self.shared.server, &self.token, Codec::Binary).await
                };
            match result {
                Ok(client) => {
                    Counters::add(&self.shared.counters.connected, 1);
                    return Ok(client);
                }
                Err(ClientError::Http { status: 401, body }) => {
                    return Err(CliError::Failed(format!(
                        "the server refused the racer token of bib {bib} (HTTP 401: {}); the \
                         simulator signs racer tokens with the server's secret, so run it with \
                         the server's --data or --config, or PELOTON_AUTH_SECRET",
                        body.trim()
                    )))
                }
                Err(e) if attempt >= CONNECT_ATTEMPTS => {
                    return Err(CliError::Failed(format!(
                        "bib {bib}: {e} (gave up after {attempt} attempts)"
                    )))
                }
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Closes the socket politely, if there is one.
    async fn close(&mut self) {
        if let Some(client) = self.client.take() {
            self.shared
                .counters
                .connected
                .fetch_sub(1, Ordering::Relaxed);
            client.close().await;
        }
    }
}
