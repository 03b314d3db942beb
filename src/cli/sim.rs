//! `peloton sim race`: replays a recorded ride as N racers of a race, each streaming its GPS
//! fixes over its own WebSocket as a phone would. It is the demo, and the load generator for
//! the tracking benchmarks.
//!
//! How it fits: it is a client like the admin CLI ([`super::admin`]): it connects with
//! `--server` and an admin `--token`, speaks the binary protocol through
//! [`crate::net::client`], registers its racers with `racer_register` and starts a scheduled
//! race with `race_start`, then watches `race_standings` until every simulated racer expected
//! to finish has finished. The one thing protocol v1 does not hand out is a racer token per
//! bib, and it should not: those are signed here with the server's own secret, found exactly as
//! `peloton admin token issue` finds it (`--data`, `--config`, `PELOTON_DATA`,
//! `PELOTON_AUTH_SECRET`). So **the simulator must run where it can read the server's
//! secret**: on the server's machine, or with the secret in `PELOTON_AUTH_SECRET`.
//!
//! The pure parts are plain functions tested below: reading the ride with its recorded times
//! ([`Ride`]), the seeded start offset, pace and GPS noise of each racer ([`plan_racers`]),
//! device timestamps ([`race_ms`]) and the run-out past the finish line. What can go wrong on a
//! ride (dropouts, detours, cuts, abandons, pauses, no-shows) is planned and applied to a
//! racer's own copy of the ride in [`super::sim_faults`]; the run then waits only for the
//! racers expected to finish. The async parts (one tokio task per racer, the monitor that
//! prints progress) only schedule, send and count.

use super::args::{SimCommand, SimRaceArgs};
use super::sim_faults::{plan_faults, Fault, FaultOptions};
use super::{output, CliError};
use crate::auth::{claims_for, secret_path, Keys, Role, SECRET_ENV};
use crate::config::{Config, Overrides};
use crate::error::ErrorCode;
use crate::geo::Position;
use crate::ids::validate_id;
use crate::net::client::{Client, ClientError};
use crate::net::codec::Codec;
use crate::net::protocol::{RaceStateView, RaceView, RacerView, Reply, Request, WireFix};
use crate::time::{now_ms, parse_duration, parse_rfc3339};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Pace of a ride whose file has no timestamps: a steady amateur on a road bike (m/s).
const FALLBACK_SPEED_MPS: f64 = 8.0;
/// Each racer rides this much slower or faster than the recording (factor on speed), so the
/// field spreads out and overtakes instead of riding in lockstep.
pub(crate) const PACE_RANGE: (f64, f64) = (0.85, 1.15);
/// Each racer's GPS error, in metres to each side on each axis: phones differ, and a few
/// metres of scatter is what a live tracker must cope with.
const NOISE_RANGE_M: (f64, f64) = (1.0, 5.0);
/// Default window of start offsets per racer: a rolling start, as in a gran fondo.
const SPREAD_PER_RACER_MS: i64 = 15_000;
/// Distances past the ride's last point of the extra fixes, in metres. A racer finishes only by
/// crossing the finish line between two fixes, and a recording usually stops on or just
/// before it.
const RUN_OUT_M: [f64; 4] = [10.0, 25.0, 40.0, 60.0];
/// The last leg's direction is taken from at least this far back, so two GPS points a few
/// centimetres apart cannot aim the run-out sideways (the server's finish line does the same).
const DIRECTION_BASE_M: f64 = 20.0;
/// The run-out is ridden at the ride's average speed over its last this-many milliseconds...
const FINISH_SPEED_WINDOW_MS: i64 = 30_000;
/// ...kept within these bounds (m/s): a rider who stopped the recorder standing still must
/// still roll over the line, and noise on a sprint must stay under the server's speed limit.
const FINISH_SPEED_RANGE_MPS: (f64, f64) = (2.0, 12.0);
/// Most fixes in one message when a racer catches up; ~28 bytes each keeps the frame well
/// under the server's 64 KiB limit for racer sockets.
const MAX_FIXES_PER_MESSAGE: usize = 1000;
/// Least time between two messages on one socket: 40 per second stays under the server's
/// sustained rate limit (50/s by default) whatever the speedup.
const MIN_SEND_INTERVAL: Duration = Duration::from_millis(25);
/// WebSocket handshakes in flight at once, so 10,000 racers do not open 10,000 TCP
/// connections in the same millisecond.
const CONNECT_CONCURRENCY: usize = 64;
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
/// The gun goes this long after the racers are spawned, plus [`GUN_LEAD_PER_RACER`] each, so
/// phones are connected before their first fix is due.
const GUN_LEAD: Duration = Duration::from_millis(500);
/// See [`GUN_LEAD`].
const GUN_LEAD_PER_RACER: Duration = Duration::from_millis(1);
/// How often the standings are asked for.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// How often a progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// Once every racer has sent its whole ride, how long to wait for the standings to show them
/// all finished before calling it a failure.
const SETTLE: Duration = Duration::from_secs(10);
/// Consecutive failed standings polls (lost connection) before the run fails.
const ADMIN_FAILURES: u32 = 10;
/// At the end, how long racers get to close their sockets politely.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// A ride ending farther than this from the race's finish cannot cross its line (30 m half
/// width by default, plus GPS noise), so the run would only time out: refuse it up front.
const FINISH_TOLERANCE_M: f64 = 50.0;
/// Racer tokens outlive `--timeout` by this much, so none expires during a run.
const TOKEN_MARGIN_SECS: u64 = 3600;

/// Runs `peloton sim …`.
pub async fn run(command: SimCommand) -> Result<(), CliError> {
    match command {
        SimCommand::Race(args) => race(args).await,
        SimCommand::Patrol(args) => super::sim_patrol::run(args).await,
    }
}

// ---------------------------------------------------------------------------------------------
// The ride (pure)
// ---------------------------------------------------------------------------------------------

/// One point of a GPX file before it becomes a [`RidePoint`]: the recorded time may be missing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Where the recorder was.
    pub position: Position,
    /// When, in ms since the epoch, if the file says.
    pub at_ms: Option<i64>,
    /// Elevation in decimetres, if the file says; passed on as a phone would.
    pub elevation_dm: Option<i32>,
}

/// One point of the ride as it is replayed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RidePoint {
    /// Where the rider is.
    pub position: Position,
    /// Time since the ride's first point, in ms of the recording; each racer scales it by its
    /// pace. Strictly increasing along the ride, since the server ignores a fix that is not
    /// newer than the last.
    pub elapsed_ms: i64,
    /// Elevation in decimetres.
    pub elevation_dm: Option<i32>,
}

/// A recorded ride, ready to replay: the recorded points, then the run-out past the finish.
#[derive(Debug, Clone, PartialEq)]
pub struct Ride {
    /// Every point to send, in order.
    pub points: Vec<RidePoint>,
    /// How many of `points` are the recording; the rest is the run-out.
    pub recorded: usize,
    /// Length of the recording in metres (for the start-up line).
    pub length_m: f64,
    /// Whether the file's timestamps set the pace (else [`FALLBACK_SPEED_MPS`]).
    pub timed: bool,
}

impl Ride {
    /// Reads the track points of a GPX file (its route points if it has no track, as for
    /// courses) with their recorded times.
    pub fn from_gpx(bytes: &[u8], max_points: usize) -> Result<Ride, String> {
        let doc = gpx::read(bytes).map_err(|e| format!("not a readable GPX document: {e}"))?;
        let mut waypoints: Vec<&gpx::Waypoint> = doc
            .tracks
            .iter()
            .flat_map(|t| t.segments.iter())
            .flat_map(|s| s.points.iter())
            .collect();
        if waypoints.is_empty() {
            waypoints = doc.routes.iter().flat_map(|r| r.points.iter()).collect();
        }
        if waypoints.len() > max_points {
            return Err(format!(
                "a ride may have at most {max_points} points, found {}",
                waypoints.len()
            ));
        }
        let mut samples = Vec::with_capacity(waypoints.len());
        for (index, w) in waypoints.iter().enumerate() {
            let position = Position::from_degrees(w.point().y(), w.point().x())
                .map_err(|e| format!("point {index}: {e}"))?;
            samples.push(Sample {
                position,
                at_ms: w.time.and_then(gpx_time_ms),
                elevation_dm: w
                    .elevation
                    .filter(|e| e.is_finite() && e.abs() < 100_000.0)
                    .map(|e| (e * 10.0).round() as i32),
            });
        }
        Ride::from_samples(&samples)
    }

    /// Builds the ride: recorded times when every point has one, else a steady
    /// [`FALLBACK_SPEED_MPS`]; then the run-out.
    pub fn from_samples(samples: &[Sample]) -> Result<Ride, String> {
        let mut timed = samples.len() >= 2 && samples.iter().all(|s| s.at_ms.is_some());
        let mut points = if timed {
            timed_points(samples)
        } else {
            Vec::new()
        };
        // A file whose points all carry the same time is as good as untimed.
        if points.len() < 2 {
            timed = false;
            points = paced_points(samples, FALLBACK_SPEED_MPS);
        }
        if points.len() < 2 {
            return Err(format!(
                "a ride needs at least 2 distinct points, found {}",
                points.len()
            ));
        }
        let length_m = path_length_m(&points);
        if length_m <= 0.0 {
            return Err("the ride has zero length".into());
        }
        let recorded = points.len();
        let tail = run_out(&points, timed);
        points.extend(tail);
        Ok(Ride {
            points,
            recorded,
            length_m,
            timed,
        })
    }

    /// Recorded duration in ms (without the run-out).
    pub fn duration_ms(&self) -> i64 {
        self.recorded
            .checked_sub(1)
            .and_then(|i| self.points.get(i))
            .map_or(0, |p| p.elapsed_ms)
    }

    /// The ride's last recorded point, where it should meet the race's finish.
    pub fn finish(&self) -> Option<Position> {
        self.recorded
            .checked_sub(1)
            .and_then(|i| self.points.get(i))
            .map(|p| p.position)
    }
}

/// The `gpx` crate keeps times as `time::OffsetDateTime`, a crate this one does not depend on;
/// its ISO 8601 rendering (UTC, nanoseconds) is RFC 3339, which [`parse_rfc3339`] reads.
fn gpx_time_ms(time: gpx::Time) -> Option<i64> {
    time.format().ok().and_then(|s| parse_rfc3339(&s).ok())
}

/// Elapsed times from the recorded clock, dropping points not after the previous one (a
/// recorder writing the same second twice).
fn timed_points(samples: &[Sample]) -> Vec<RidePoint> {
    let Some(first) = samples.first().and_then(|s| s.at_ms) else {
        return Vec::new();
    };
    let mut points: Vec<RidePoint> = Vec::with_capacity(samples.len());
    for s in samples {
        let Some(at_ms) = s.at_ms else { continue };
        let elapsed_ms = at_ms - first;
        if points.last().is_none_or(|p| elapsed_ms > p.elapsed_ms) {
            points.push(RidePoint {
                position: s.position,
                elapsed_ms,
                elevation_dm: s.elevation_dm,
            });
        }
    }
    points
}

/// Elapsed times at a steady `speed_mps`, dropping repeated points (they would share a time).
fn paced_points(samples: &[Sample], speed_mps: f64) -> Vec<RidePoint> {
    let mut points: Vec<RidePoint> = Vec::with_capacity(samples.len());
    let mut distance_m = 0.0;
    for s in samples {
        if let Some(last) = points.last() {
            distance_m += last.position.distance_m(s.position);
        }
        let elapsed_ms = (distance_m / speed_mps * 1000.0).round() as i64;
        if points.last().is_none_or(|p| elapsed_ms > p.elapsed_ms) {
            points.push(RidePoint {
                position: s.position,
                elapsed_ms,
                elevation_dm: s.elevation_dm,
            });
        }
    }
    points
}

/// Sum of the geodesic legs between consecutive points.
fn path_length_m(points: &[RidePoint]) -> f64 {
    points
        .windows(2)
        .map(|w| w[0].position.distance_m(w[1].position))
        .sum()
}

/// Points continuing [`RUN_OUT_M`] past the ride's end along its last leg, so a racer crosses
/// the finish line (which the server draws across the course's last leg) however the
/// recording ended. Empty for a ride whose last leg has no direction.
fn run_out(points: &[RidePoint], timed: bool) -> Vec<RidePoint> {
    let Some(last) = points.last().copied() else {
        return Vec::new();
    };
    let base = points
        .iter()
        .rev()
        .skip(1)
        .find(|p| p.position.distance_m(last.position) >= DIRECTION_BASE_M)
        .or_else(|| points.iter().rev().nth(1));
    let Some(base) = base else {
        return Vec::new();
    };
    let (east, north) = base.position.offset_m(last.position);
    let norm = east.hypot(north);
    if norm <= f64::EPSILON {
        return Vec::new();
    }
    let speed = if timed {
        finish_speed_mps(points)
    } else {
        FALLBACK_SPEED_MPS
    };
    RUN_OUT_M
        .iter()
        .map(|&d| RidePoint {
            position: last.position.moved_m(east / norm * d, north / norm * d),
            elapsed_ms: last.elapsed_ms + (d / speed * 1000.0).round() as i64,
            elevation_dm: last.elevation_dm,
        })
        .collect()
}

/// Average speed over the ride's last [`FINISH_SPEED_WINDOW_MS`], within
/// [`FINISH_SPEED_RANGE_MPS`].
fn finish_speed_mps(points: &[RidePoint]) -> f64 {
    let (low, high) = FINISH_SPEED_RANGE_MPS;
    let Some(last) = points.last() else {
        return low;
    };
    let from = points
        .iter()
        .rposition(|p| last.elapsed_ms - p.elapsed_ms >= FINISH_SPEED_WINDOW_MS)
        .unwrap_or(0);
    let tail = points.get(from..).unwrap_or_default();
    let span_ms = tail.first().map_or(0, |p| last.elapsed_ms - p.elapsed_ms);
    if span_ms <= 0 {
        return low;
    }
    (path_length_m(tail) / (span_ms as f64 / 1000.0)).clamp(low, high)
}

// ---------------------------------------------------------------------------------------------
// The racers (pure)
// ---------------------------------------------------------------------------------------------

/// SplitMix64: a tiny, well-mixed generator, so a seed reproduces a run exactly without a
/// dependency.
#[derive(Debug, Clone, Copy)]
pub struct SplitMix64 {
    /// The generator's whole state.
    state: u64,
}

impl SplitMix64 {
    /// A generator started at `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[low, high)`.
    pub fn range(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }
}

/// What makes one simulated racer different from the others.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RacerPlan {
    /// Bib number; the racer's token subject.
    pub bib: u32,
    /// When this racer sets off after the gun, in ms of race time.
    pub offset_ms: i64,
    /// Speed relative to the recording (1.1 = 10 % faster).
    pub pace: f64,
    /// GPS error of this racer's phone, metres to each side on each axis.
    pub noise_m: f64,
    /// Seeds this racer's own noise, so racers do not share the same scatter.
    pub noise_seed: u64,
}

/// `count` racers from `first_bib`, with offsets in `0..=spread_ms`, all drawn from `seed`.
pub fn plan_racers(count: u32, first_bib: u32, spread_ms: i64, seed: u64) -> Vec<RacerPlan> {
    let mut rng = SplitMix64::new(seed);
    let spread_ms = spread_ms.max(0);
    (0..count)
        .map(|i| RacerPlan {
            bib: first_bib.saturating_add(i),
            offset_ms: ((rng.unit() * (spread_ms as f64 + 1.0)).floor() as i64).min(spread_ms),
            pace: rng.range(PACE_RANGE.0, PACE_RANGE.1),
            noise_m: rng.range(NOISE_RANGE_M.0, NOISE_RANGE_M.1),
            noise_seed: rng.next_u64(),
        })
        .collect()
}

/// Race time (ms after the gun) at which a racer with `offset_ms` and `pace` reaches the
/// point recorded `elapsed_ms` into the ride. The device stamps its fix with the race's start
/// time plus this.
pub fn race_ms(offset_ms: i64, elapsed_ms: i64, pace: f64) -> i64 {
    offset_ms + (elapsed_ms as f64 / pace).round() as i64
}

/// One fix and when, in race time, it is due.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scheduled {
    /// Ms after the gun: decides when the fix is sent (divided by the speedup).
    pub race_ms: i64,
    /// The fix as the phone sends it.
    pub fix: WireFix,
}

/// A racer's fixes, made one at a time so 10,000 racers do not each hold a copy of the ride.
#[derive(Debug, Clone)]
pub struct RacerTrack {
    /// The shared ride.
    ride: Arc<Ride>,
    /// This racer.
    plan: RacerPlan,
    /// The race's start time (the gun), ms since the epoch.
    start_at_ms: i64,
    /// Next point of the ride.
    next: usize,
    /// This racer's noise.
    noise: SplitMix64,
    /// Device time of the previous fix.
    last_at_ms: Option<i64>,
}

impl RacerTrack {
    /// The fixes of `plan` riding `ride` in a race that starts at `start_at_ms`.
    pub fn new(ride: Arc<Ride>, plan: RacerPlan, start_at_ms: i64) -> RacerTrack {
        RacerTrack {
            ride,
            plan,
            start_at_ms,
            next: 0,
            noise: SplitMix64::new(plan.noise_seed),
            last_at_ms: None,
        }
    }
}

impl Iterator for RacerTrack {
    type Item = Scheduled;

    fn next(&mut self) -> Option<Scheduled> {
        let point = *self.ride.points.get(self.next)?;
        self.next += 1;
        let race_ms = race_ms(self.plan.offset_ms, point.elapsed_ms, self.plan.pace);
        let mut at_ms = self.start_at_ms.saturating_add(race_ms);
        // Scaling can round two close points to the same millisecond, and the server ignores
        // a fix that is not newer than the last one.
        if let Some(last) = self.last_at_ms {
            at_ms = at_ms.max(last + 1);
        }
        self.last_at_ms = Some(at_ms);
        let n = self.plan.noise_m;
        let (east, north) = (self.noise.range(-n, n), self.noise.range(-n, n));
        let p = point.position.moved_m(east, north);
        Some(Scheduled {
            race_ms,
            fix: WireFix {
                at_ms,
                lat_e7: p.lat_e7,
                lon_e7: p.lon_e7,
                // What the phone believes its error is, as phones report it.
                accuracy_dm: (n * 10.0).round() as u32,
                speed_cmps: None,
                elevation_dm: point.elevation_dm,
            },
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Running it
// ---------------------------------------------------------------------------------------------

/// Counts shared by every racer task and the monitor (relaxed atomics: they are statistics).
#[derive(Debug, Default)]
struct Counters {
    /// Sockets open now.
    connected: AtomicU64,
    /// Distinct fixes sent (a resend is not counted again).
    fixes_sent: AtomicU64,
    /// Fixes sent again on a new connection because their ack never came.
    fixes_resent: AtomicU64,
    /// Fixes the server accepted (sum of `fixes_ack.accepted`).
    accepted: AtomicU64,
    /// Fixes the server ignored: resends, noise spikes, fixes after the racer finished.
    ignored: AtomicU64,
    /// `fixes` messages sent, resends included.
    messages: AtomicU64,
    /// Connections lost and made again.
    reconnects: AtomicU64,
}

impl Counters {
    /// Reads one counter.
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Adds to one counter.
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What every racer task shares.
#[derive(Debug)]
struct Shared {
    /// `ws://HOST:PORT`.
    server: String,
    /// The ride every racer without a fault replays (a faulty one has its own copy).
    ride: Arc<Ride>,
    /// The race's start time, ms since the epoch: the base of every device timestamp.
    start_at_ms: i64,
    /// Race time per wall-clock time.
    speedup: f64,
    /// Fixes a racer collects before it sends (more when it falls behind).
    batch: usize,
    /// Wall-clock instant of the gun.
    gun: Instant,
    /// The run gives up at this instant; anything scheduled later never happens.
    deadline: Instant,
    /// Limits simultaneous handshakes ([`CONNECT_CONCURRENCY`]).
    gate: Semaphore,
    /// Statistics.
    counters: Counters,
}

impl Shared {
    /// When `race_ms` after the gun happens on the wall clock.
    fn wall(&self, race_ms: i64) -> Instant {
        let secs = race_ms.max(0) as f64 / 1000.0 / self.speedup;
        Duration::try_from_secs_f64(secs)
            .ok()
            .and_then(|d| self.gun.checked_add(d))
            .unwrap_or(self.deadline)
    }
}

/// How a racer task ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RacerEnd {
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
struct Racer {
    /// Who it is.
    plan: RacerPlan,
    /// What it rides: the shared ride, or its own copy with its fault in it.
    ride: Arc<Ride>,
    /// Its racer token (race and bib bound).
    token: String,
    /// The run's shared state.
    shared: Arc<Shared>,
    /// Set to true when the run is over.
    stop: watch::Receiver<bool>,
    /// The socket, when connected.
    client: Option<Client>,
}

impl Racer {
    /// Connects, then sends the ride on schedule until it is done, the race closes, or the
    /// monitor says stop.
    async fn run(mut self) -> Result<RacerEnd, CliError> {
        let shared = Arc::clone(&self.shared);
        let mut track =
            RacerTrack::new(Arc::clone(&self.ride), self.plan, shared.start_at_ms).peekable();
        // Phones are on before the gun, so the start is not a connection storm.
        let client = self.connect().await?;
        self.client = Some(client);
        let mut last_send: Option<Instant> = None;
        loop {
            let mut fixes: Vec<WireFix> = Vec::with_capacity(shared.batch);
            let mut due_ms = None;
            while fixes.len() < shared.batch {
                let Some(next) = track.next() else { break };
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
                match track.peek() {
                    Some(next) if shared.wall(next.race_ms) <= now => fixes.push(next.fix),
                    _ => break,
                }
                track.next();
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

/// Validated flags.
#[derive(Debug, Clone)]
struct Options {
    /// Race time per wall-clock time.
    speedup: f64,
    /// Window of start offsets, ms.
    spread_ms: i64,
    /// How long the run may take.
    timeout: Duration,
    /// What goes wrong, for how many racers.
    faults: FaultOptions,
}

impl Options {
    /// Checks what clap cannot.
    fn from_args(args: &SimRaceArgs) -> Result<Options, CliError> {
        validate_id("--race", &args.race).map_err(|r| CliError::Usage(r.message))?;
        if !args.speedup.is_finite() || args.speedup <= 0.0 {
            return Err(CliError::Usage(format!(
                "--speedup must be a number above 0, got {}",
                args.speedup
            )));
        }
        let last_bib = u64::from(args.first_bib) + u64::from(args.racers) - 1;
        if last_bib > 999_999 {
            return Err(CliError::Usage(format!(
                "bibs {}..={last_bib} go past 999999; lower --first-bib or --racers",
                args.first_bib
            )));
        }
        let spread_ms = match &args.spread {
            Some(text) => {
                let spread =
                    parse_duration(text).map_err(|e| CliError::Usage(format!("--spread: {e}")))?;
                i64::try_from(spread.as_millis())
                    .map_err(|_| CliError::Usage("--spread is too long".into()))?
            }
            None => i64::from(args.racers) * SPREAD_PER_RACER_MS,
        };
        let timeout = parse_duration(&args.timeout)
            .map_err(|e| CliError::Usage(format!("--timeout: {e}")))?;
        if timeout.is_zero() || Instant::now().checked_add(timeout).is_none() {
            return Err(CliError::Usage(format!(
                "--timeout must be positive and finite, got {}",
                args.timeout
            )));
        }
        let faults = FaultOptions {
            dropouts: args.dropouts,
            dropout_ms: i64::from(args.dropout_secs) * 1000,
            detours: args.detours,
            detour_m: f64::from(args.detour_m),
            detour_ms: i64::from(args.detour_secs) * 1000,
            cuts: args.cuts,
            cut_m: f64::from(args.cut_m),
            abandons: args.abandons,
            pauses: args.pauses,
            pause_ms: i64::from(args.pause_secs) * 1000,
            no_shows: args.no_shows,
        };
        // Checked here too (the plan checks it again) so a miscount fails before the ride
        // is read.
        if faults.faulty() > u64::from(args.racers) {
            return Err(CliError::Usage(format!(
                "{} racers with a fault (--dropouts, --detours, --cuts, --abandons, --pauses and \
                 --no-shows together) but only {} --racers; each racer gets at most one",
                faults.faulty(),
                args.racers
            )));
        }
        Ok(Options {
            speedup: args.speedup,
            spread_ms,
            timeout,
            faults,
        })
    }
}

/// The final report.
#[derive(Debug, Serialize)]
struct Summary {
    /// Race id.
    race: String,
    /// Simulated racers.
    racers: u32,
    /// Of them, finished per the server's standings.
    finished: u32,
    /// Of them, those the run waited for: all but abandons, no-shows and cutters.
    expected: u32,
    /// Of those, finished.
    expected_finished: u32,
    /// Each racer who had a fault, and how it ended.
    faults: Vec<FaultOutcome>,
    /// First bib; the racers are `first_bib..first_bib + racers`.
    first_bib: u32,
    /// Distinct fixes sent.
    fixes_sent: u64,
    /// Fixes sent again after a lost connection.
    fixes_resent: u64,
    /// Fixes the server accepted.
    fixes_accepted: u64,
    /// Fixes the server ignored (resends, spikes, after the finish).
    fixes_ignored: u64,
    /// `fixes` messages sent.
    messages: u64,
    /// Connections lost and made again.
    reconnects: u64,
    /// Wall-clock seconds from start-up to every racer finished.
    wall_s: f64,
    /// The speedup used.
    speedup: f64,
    /// The seed used (same seed, same offsets, paces and noise).
    seed: u64,
}

/// How one racer's bad day ended, for the summary.
#[derive(Debug, Serialize)]
struct FaultOutcome {
    /// Bib.
    bib: u32,
    /// The fault's name ([`Fault::name`]).
    fault: &'static str,
    /// Whether the standings had it finished when the run ended.
    finished: bool,
}

/// One line per kind of fault: how many racers had it and how many of them finished.
fn fault_tally(outcomes: &[FaultOutcome]) -> String {
    let mut kinds: Vec<(&str, u32, u32)> = Vec::new();
    for o in outcomes {
        match kinds.iter_mut().find(|k| k.0 == o.fault) {
            Some(k) => {
                k.1 += 1;
                k.2 += u32::from(o.finished);
            }
            None => kinds.push((o.fault, 1, u32::from(o.finished))),
        }
    }
    kinds
        .iter()
        .map(|(name, n, done)| format!("{n} {name} ({done} finished)"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `peloton sim race`.
async fn race(args: SimRaceArgs) -> Result<(), CliError> {
    let started = Instant::now();
    let options = Options::from_args(&args)?;
    let token = args
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            CliError::Usage(
            "no token: pass --token or set PELOTON_TOKEN to an admin token (see `peloton admin \
             token issue`)"
                .into(),
        )
        })?;
    let overrides = Overrides {
        listen: None,
        data_dir: args.data.clone(),
    };
    let config = Config::load(args.config.as_deref(), &overrides)?;
    let keys = server_keys(&config)?;
    let bytes = std::fs::read(&args.gpx)
        .map_err(|e| CliError::Usage(format!("cannot read ride {}: {e}", args.gpx.display())))?;
    let ride = Ride::from_gpx(&bytes, config.race.max_course_points)
        .map_err(|e| CliError::Usage(format!("{}: {e}", args.gpx.display())))?;

    let mut admin = Client::connect(&args.server, token, Codec::Binary).await?;
    if admin.welcome().role != Role::Admin {
        return Err(CliError::Usage(format!(
            "--token must be an admin token (this one is a {} token): the simulator registers \
             its racers and starts the race",
            admin.welcome().role.as_str()
        )));
    }
    let plans = plan_racers(args.racers, args.first_bib, options.spread_ms, args.seed);
    // Planned before anything changes on the server, so a fault the ride cannot hold is
    // refused with nothing registered.
    let faults = plan_faults(&ride, &plans, &options.faults, args.seed)
        .map_err(|e| CliError::Usage(format!("{}: {e}", args.gpx.display())))?;
    let race = prepare_race(&mut admin, &args, token, &ride, &plans).await?;

    let ttl = (options.timeout.as_secs() + TOKEN_MARGIN_SECS).min(config.auth.max_ttl_secs);
    let now_s = now_ms() / 1000;
    let mut racers = Vec::with_capacity(plans.len());
    for (plan, fault) in plans.iter().zip(&faults) {
        if matches!(fault, Some(Fault::NoShow)) {
            // Registered, but never connects: no token needed.
            continue;
        }
        let claims = claims_for(
            Role::Racer,
            &plan.bib.to_string(),
            Some(&race.id),
            now_s,
            ttl,
        );
        let token = keys
            .issue(&claims)
            .map_err(|e| CliError::Failed(format!("cannot sign a racer token: {e}")))?;
        racers.push((*plan, fault.and_then(|f| f.apply(&ride)), token));
    }
    // The monitor watches on a token of its own, scoped to the race and read-only: the admin
    // token (an hour by default) may expire long before a real-time race ends, and the server
    // then closes its socket.
    let watch_token = keys
        .issue(&claims_for(
            Role::Spectator,
            "sim",
            Some(&race.id),
            now_s,
            ttl,
        ))
        .map_err(|e| CliError::Failed(format!("cannot sign the monitor's token: {e}")))?;
    admin.close().await;

    eprintln!(
        "sim: race {} ({}), {} racers (bibs {}-{}), ride {} points, {:.1} km, {} {}, speedup {}",
        race.id,
        state_name(race.state),
        args.racers,
        args.first_bib,
        args.first_bib + args.racers - 1,
        ride.recorded,
        ride.length_m / 1000.0,
        clock(ride.duration_ms() as f64 / 1000.0),
        if ride.timed {
            "recorded"
        } else {
            "at 8 m/s (the file has no times)"
        },
        args.speedup,
    );
    for (plan, fault) in plans.iter().zip(&faults) {
        if let Some(fault) = fault {
            eprintln!(
                "sim: bib {} {}: {}",
                plan.bib,
                fault.name(),
                fault.describe(&ride, plan.pace)
            );
        }
    }

    let lead = GUN_LEAD + GUN_LEAD_PER_RACER * args.racers;
    let now = Instant::now();
    let shared = Arc::new(Shared {
        server: args.server.clone(),
        ride: Arc::new(ride),
        start_at_ms: race.start_at_ms,
        speedup: options.speedup,
        batch: usize::try_from(args.batch).unwrap_or(1).max(1),
        gun: now + lead,
        deadline: started + options.timeout,
        gate: Semaphore::new(CONNECT_CONCURRENCY),
        counters: Counters::default(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for (plan, own_ride, token) in racers {
        let racer = Racer {
            plan,
            ride: own_ride.map_or_else(|| Arc::clone(&shared.ride), Arc::new),
            token,
            shared: Arc::clone(&shared),
            stop: stop_rx.clone(),
            client: None,
        };
        tasks.spawn(racer.run());
    }

    let mut link = StandingsLink {
        server: args.server.clone(),
        token: watch_token,
        race: race.id.clone(),
        client: None,
        failures: 0,
    };
    let info = RunInfo {
        first_bib: args.first_bib,
        racers: args.racers,
        expected: faults
            .iter()
            .map(|f| f.as_ref().is_none_or(Fault::expected_to_finish))
            .collect(),
        timeout: options.timeout,
        started,
    };
    let outcome = monitor(&mut link, &mut tasks, &shared, &info).await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(STOP_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.shutdown().await;
    link.close().await;
    let finished = outcome?;
    let outcomes: Vec<FaultOutcome> = plans
        .iter()
        .zip(&faults)
        .filter_map(|(plan, fault)| {
            fault.map(|f| FaultOutcome {
                bib: plan.bib,
                fault: f.name(),
                finished: finished.contains(&plan.bib),
            })
        })
        .collect();

    let c = &shared.counters;
    let summary = Summary {
        race: race.id.clone(),
        racers: args.racers,
        finished: count(finished.len()),
        expected: info.expected_count(),
        expected_finished: info.expected_finished(&finished),
        faults: outcomes,
        first_bib: args.first_bib,
        fixes_sent: Counters::get(&c.fixes_sent),
        fixes_resent: Counters::get(&c.fixes_resent),
        fixes_accepted: Counters::get(&c.accepted),
        fixes_ignored: Counters::get(&c.ignored),
        messages: Counters::get(&c.messages),
        reconnects: Counters::get(&c.reconnects),
        wall_s: started.elapsed().as_secs_f64(),
        speedup: args.speedup,
        seed: args.seed,
    };
    if args.json {
        output::json(&summary)
    } else {
        println!(
            "race {}: {}/{} simulated racers finished in {:.1} s; {} fixes sent ({} accepted, {} \
             ignored, {} resent) in {} messages, {} reconnects",
            summary.race,
            summary.finished,
            summary.racers,
            summary.wall_s,
            summary.fixes_sent,
            summary.fixes_accepted,
            summary.fixes_ignored,
            summary.fixes_resent,
            summary.messages,
            summary.reconnects
        );
        if !summary.faults.is_empty() {
            println!(
                "bad day: {}/{} racers expected to finish did; {}",
                summary.expected_finished,
                summary.expected,
                fault_tally(&summary.faults)
            );
        }
        Ok(())
    }
}

/// The server's signing keys, refusing to create a secret the server would not know.
pub(crate) fn server_keys(config: &Config) -> Result<Keys, CliError> {
    let from_env = std::env::var(SECRET_ENV).is_ok_and(|v| !v.is_empty());
    let path = secret_path(config);
    if !from_env && !path.exists() {
        return Err(CliError::Usage(format!(
            "no signing secret at {}: tokens and vouchers are signed with the server's secret, \
             so run this where it can read it (--data DIR or --config FILE as the server uses \
             them, or PELOTON_AUTH_SECRET)",
            path.display()
        )));
    }
    Keys::load_or_create(config).map_err(|e| CliError::Failed(e.to_string()))
}

/// Checks the race can be raced with this ride, registers the racers, and starts the race if
/// it is scheduled. Nothing changes on the server when a check fails.
async fn prepare_race(
    admin: &mut Client,
    args: &SimRaceArgs,
    token: &str,
    ride: &Ride,
    plans: &[RacerPlan],
) -> Result<RaceView, CliError> {
    let id = args.race.clone();
    let race = match admin.request(Request::RaceGet { id: id.clone() }).await {
        Ok(Reply::Race(race)) => race,
        Ok(other) => return Err(unexpected(&other)),
        Err(e) => return Err(CliError::Failed(format!("race {id}: {e}"))),
    };
    if !matches!(race.state, RaceStateView::Scheduled | RaceStateView::Live) {
        return Err(CliError::Failed(format!(
            "race {id} is {}; the simulator needs a scheduled or live race",
            state_name(race.state)
        )));
    }
    check_finish(&args.server, token, &id, ride, &args.gpx).await?;
    let racers = plans
        .iter()
        .map(|p| RacerView {
            bib: p.bib,
            name: format!("Sim {}", p.bib),
            team: None,
            email: None,
        })
        .collect();
    match admin
        .request(Request::RacerRegister {
            race_id: id.clone(),
            racers,
        })
        .await
    {
        Ok(Reply::Registered { .. }) => {}
        Ok(other) => return Err(unexpected(&other)),
        Err(e) => {
            return Err(CliError::Failed(format!(
                "cannot register the simulated racers in race {id}: {e}"
            )))
        }
    }
    if race.state == RaceStateView::Live {
        return Ok(race);
    }
    match admin.request(Request::RaceStart { id: id.clone() }).await {
        Ok(Reply::Race(race)) => Ok(race),
        Ok(other) => Err(unexpected(&other)),
        // Its start time may have come since it was read: the clock started it (`race.start_mode`
        // auto), which is as good.
        Err(e) if e.code() == Some(ErrorCode::InvalidTransition) => {
            match admin.request(Request::RaceGet { id: id.clone() }).await {
                Ok(Reply::Race(race)) if race.state == RaceStateView::Live => Ok(race),
                _ => Err(CliError::Failed(format!("cannot start race {id}: {e}"))),
            }
        }
        Err(e) => Err(CliError::Failed(format!("cannot start race {id}: {e}"))),
    }
}

/// Refuses a ride that does not end at the race's finish: its racers could never cross the
/// line and the run would only time out. The course comes from a `race_subscribe` snapshot on
/// a socket of its own, closed at once, so no updates pile up unread.
async fn check_finish(
    server: &str,
    token: &str,
    id: &str,
    ride: &Ride,
    gpx: &std::path::Path,
) -> Result<(), CliError> {
    let mut watcher = Client::connect(server, token, Codec::Binary).await?;
    let reply = watcher
        .request(Request::RaceSubscribe {
            race_id: id.to_owned(),
            since_seq: None,
        })
        .await;
    watcher.close().await;
    let snapshot = match reply {
        Ok(Reply::Subscribed(snapshot)) => snapshot,
        Ok(other) => return Err(unexpected(&other)),
        Err(e) => return Err(CliError::Failed(format!("race {id}: {e}"))),
    };
    let finish = snapshot.course.last().map(|p| Position {
        lat_e7: p.lat_e7,
        lon_e7: p.lon_e7,
    });
    if let (Some(finish), Some(end)) = (finish, ride.finish()) {
        let apart = finish.distance_m(end);
        if apart > FINISH_TOLERANCE_M {
            return Err(CliError::Failed(format!(
                "the ride in {} ends {apart:.0} m from the finish of race {id}, so its racers \
                 could never cross the finish line; replay a ride that ends at the race's finish \
                 (such as its course file)",
                gpx.display()
            )));
        }
    }
    Ok(())
}

/// What the monitor needs to know about the run.
#[derive(Debug, Clone)]
struct RunInfo {
    /// First simulated bib.
    first_bib: u32,
    /// Simulated racers.
    racers: u32,
    /// Per racer (bib minus `first_bib`), whether the run waits for it to finish.
    expected: Vec<bool>,
    /// `--timeout`, for the message.
    timeout: Duration,
    /// When the run started.
    started: Instant,
}

impl RunInfo {
    /// Whether `bib` is one of ours (a race may have other racers too).
    fn ours(&self, bib: u32) -> bool {
        bib >= self.first_bib && u64::from(bib) < u64::from(self.first_bib) + u64::from(self.racers)
    }

    /// Whether the run waits for `bib` to finish (a bib with no plan, as in tests, is).
    fn expects(&self, bib: u32) -> bool {
        self.ours(bib)
            && bib
                .checked_sub(self.first_bib)
                .and_then(|i| self.expected.get(i as usize))
                .is_none_or(|e| *e)
    }

    /// How many racers the run waits for.
    fn expected_count(&self) -> u32 {
        let n = (self.first_bib..self.first_bib.saturating_add(self.racers))
            .filter(|b| self.expects(*b))
            .count();
        count(n)
    }

    /// How many of `finished` the run waited for.
    fn expected_finished(&self, finished: &[u32]) -> u32 {
        count(finished.iter().filter(|b| self.expects(**b)).count())
    }
}

/// A count for the summary.
fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The socket the monitor polls standings on, connected on first use and again if it drops.
struct StandingsLink {
    /// `ws://HOST:PORT`.
    server: String,
    /// The monitor's own race-scoped spectator token.
    token: String,
    /// Race id.
    race: String,
    /// The socket, when connected.
    client: Option<Client>,
    /// Consecutive failed polls.
    failures: u32,
}

impl StandingsLink {
    /// Bibs of the simulated racers finished per the standings; `None` when this poll failed
    /// but the run can go on.
    async fn finished(&mut self, info: &RunInfo) -> Result<Option<Vec<u32>>, CliError> {
        let client = match self.client.take() {
            Some(client) => Ok(client),
            None => Client::connect(&self.server, &self.token, Codec::Binary).await,
        };
        let result = match client {
            Ok(mut client) => {
                let reply = client
                    .request(Request::RaceStandings {
                        race_id: self.race.clone(),
                    })
                    .await;
                if reply.is_ok() {
                    self.client = Some(client);
                }
                reply
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(Reply::Standings(rows)) => {
                self.failures = 0;
                Ok(Some(
                    rows.iter()
                        .filter(|r| info.ours(r.bib) && r.finished_at_ms.is_some())
                        .map(|r| r.bib)
                        .collect(),
                ))
            }
            Ok(other) => Err(unexpected(&other)),
            Err(e @ ClientError::Server(_)) => Err(CliError::Failed(format!(
                "race {}: standings refused: {e}",
                self.race
            ))),
            Err(e) => {
                self.failures += 1;
                if self.failures >= ADMIN_FAILURES {
                    return Err(CliError::Failed(format!(
                        "lost the connection to {}: {e}",
                        self.server
                    )));
                }
                Ok(None)
            }
        }
    }

    /// The race's state now, for a failure message.
    async fn state(&mut self) -> Option<RaceStateView> {
        let mut client = self.client.take()?;
        let reply = client
            .request(Request::RaceGet {
                id: self.race.clone(),
            })
            .await;
        self.client = Some(client);
        match reply {
            Ok(Reply::Race(race)) => Some(race.state),
            _ => None,
        }
    }

    /// Closes the socket politely.
    async fn close(&mut self) {
        if let Some(client) = self.client.take() {
            client.close().await;
        }
    }
}

/// Waits until every simulated racer expected to finish has finished, printing progress, and
/// returns the bibs finished by then; fails on a racer's fatal error, when the race closes or
/// the rides end without those finished, or at the timeout. With no racer expected to finish
/// (all abandon, say), it waits for every ride to end instead.
async fn monitor(
    link: &mut StandingsLink,
    tasks: &mut JoinSet<Result<RacerEnd, CliError>>,
    shared: &Shared,
    info: &RunInfo,
) -> Result<Vec<u32>, CliError> {
    let mut poll = tokio::time::interval(POLL_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_progress = Instant::now() + PROGRESS_EVERY;
    let expected = info.expected_count();
    let mut finished: Vec<u32> = Vec::new();
    let mut race_closed = false;
    let mut rode_out_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(shared.deadline.into()) => {
                return Err(CliError::Failed(format!(
                    "timed out after {}: {} of {expected} simulated racers expected to finish \
                     finished",
                    humantime::format_duration(info.timeout),
                    info.expected_finished(&finished),
                )));
            }
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => match joined {
                Ok(Ok(RacerEnd::RaceClosed)) => race_closed = true,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(e) => {
                    return Err(CliError::Failed(format!("a racer task failed: {e}")));
                }
            },
            _ = poll.tick() => {
                if let Some(bibs) = link.finished(info).await? {
                    finished = bibs;
                }
                let done = info.expected_finished(&finished);
                if done >= expected && (expected > 0 || tasks.is_empty()) {
                    return Ok(finished);
                }
                let now = Instant::now();
                if now >= next_progress {
                    next_progress = now + PROGRESS_EVERY;
                    eprintln!("{}", progress(shared, info, done, expected));
                }
                // A racer saw the race stop taking fixes, and the standings (which were final
                // by then) do not have everyone expected finished.
                if race_closed {
                    let state = link.state().await.map_or("closed", state_name);
                    return Err(CliError::Failed(format!(
                        "race {} is {state} and takes no more fixes: {done} of {expected} \
                         simulated racers expected to finish finished",
                        link.race
                    )));
                }
                if tasks.is_empty() {
                    let since = *rode_out_at.get_or_insert(now);
                    if now.duration_since(since) >= SETTLE {
                        return Err(CliError::Failed(format!(
                            "every simulated racer sent its whole ride, but only {done} of \
                             {expected} expected to finish finished in race {}",
                            link.race
                        )));
                    }
                }
            }
        }
    }
}

/// One progress line.
fn progress(shared: &Shared, info: &RunInfo, finished: u32, expected: u32) -> String {
    let c = &shared.counters;
    let race_clock = Instant::now()
        .checked_duration_since(shared.gun)
        .map_or(0.0, |d| d.as_secs_f64() * shared.speedup);
    format!(
        "sim: {} elapsed, race clock {} | {}/{} connected | fixes {} sent, {} accepted, {} \
         ignored | {}/{} finished",
        clock(info.started.elapsed().as_secs_f64()),
        clock(race_clock),
        Counters::get(&c.connected),
        info.racers,
        Counters::get(&c.fixes_sent),
        Counters::get(&c.accepted),
        Counters::get(&c.ignored),
        finished,
        expected
    )
}

/// `h:mm:ss`.
pub(crate) fn clock(secs: f64) -> String {
    let total = secs.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", total / 3600, total / 60 % 60, total % 60)
}

/// A race state as the CLI prints it.
fn state_name(state: RaceStateView) -> &'static str {
    match state {
        RaceStateView::Scheduled => "scheduled",
        RaceStateView::Live => "live",
        RaceStateView::Finished => "finished",
        RaceStateView::Cancelled => "cancelled",
    }
}

/// A reply of the wrong type: a server bug or a version mismatch.
fn unexpected(reply: &Reply) -> CliError {
    CliError::Failed(format!("unexpected reply {}", reply.type_name()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::finish::FinishLine;
    use crate::geo::Course;

    const T0: i64 = 1_796_115_600_000;

    /// A straight ride due north from (46, 15), one point every `step_m` for `n` points, one
    /// per `dt_ms` when timed.
    fn straight(n: usize, step_m: f64, dt_ms: Option<i64>) -> Vec<Sample> {
        let start = Position::from_degrees(46.0, 15.0).unwrap();
        (0..n)
            .map(|i| Sample {
                position: start.moved_m(0.0, step_m * i as f64),
                at_ms: dt_ms.map(|dt| T0 + dt * i as i64),
                elevation_dm: Some(2370),
            })
            .collect()
    }

    fn shared_ride(path: &str) -> Ride {
        let path = format!("{}/../shared/data/gpx/{path}", env!("CARGO_MANIFEST_DIR"));
        let Ok(bytes) = std::fs::read(&path) else {
            panic!("shared data missing at {path}");
        };
        Ride::from_gpx(&bytes, 200_000).unwrap()
    }

    #[test]
    fn plans_are_reproducible_from_the_seed_and_within_their_ranges() {
        let a = plan_racers(200, 7, 3_000_000, 42);
        assert_eq!(a, plan_racers(200, 7, 3_000_000, 42));
        assert_ne!(a, plan_racers(200, 7, 3_000_000, 43));
        assert_eq!(a.first().unwrap().bib, 7);
        assert_eq!(a.last().unwrap().bib, 206);
        for p in &a {
            assert!((0..=3_000_000).contains(&p.offset_ms), "{p:?}");
            assert!((0.85..1.15).contains(&p.pace), "{p:?}");
            assert!((1.0..5.0).contains(&p.noise_m), "{p:?}");
        }
        // Spread over the window, not bunched: both halves get racers.
        let early = a.iter().filter(|p| p.offset_ms < 1_500_000).count();
        assert!((60..=140).contains(&early), "{early}");
        // A mass start.
        assert!(plan_racers(50, 1, 0, 1).iter().all(|p| p.offset_ms == 0));
        // The noise streams differ between racers.
        let seeds: std::collections::HashSet<u64> = a.iter().map(|p| p.noise_seed).collect();
        assert_eq!(seeds.len(), a.len());
    }

    #[test]
    fn device_time_is_the_gun_plus_offset_plus_recorded_time_over_pace() {
        assert_eq!(race_ms(0, 0, 1.0), 0);
        assert_eq!(race_ms(30_000, 3_600_000, 1.0), 3_630_000);
        assert_eq!(race_ms(30_000, 3_600_000, 1.2), 3_030_000);
        assert_eq!(race_ms(0, 1_000, 0.8), 1_250);

        let ride = Arc::new(Ride::from_samples(&straight(50, 10.0, Some(2_000))).unwrap());
        let plan = RacerPlan {
            bib: 3,
            offset_ms: 45_000,
            pace: 1.25,
            noise_m: 0.0,
            noise_seed: 9,
        };
        let fixes: Vec<Scheduled> = RacerTrack::new(Arc::clone(&ride), plan, T0).collect();
        assert_eq!(fixes.len(), ride.points.len());
        assert_eq!(fixes[0].fix.at_ms, T0 + 45_000);
        assert_eq!(fixes[0].race_ms, 45_000);
        // Point 10 was recorded 20 s in; 25 % faster makes it 16 s.
        assert_eq!(fixes[10].fix.at_ms, T0 + 45_000 + 16_000);
        assert_eq!(fixes[10].fix.elevation_dm, Some(2370));
        assert!(fixes.windows(2).all(|w| w[1].fix.at_ms > w[0].fix.at_ms));
    }

    #[test]
    fn device_times_stay_strictly_increasing_when_rounding_would_merge_them() {
        // Points 1 ms apart at a pace that rounds several of them to the same millisecond.
        let ride = Arc::new(Ride::from_samples(&straight(40, 0.01, Some(1))).unwrap());
        let plan = RacerPlan {
            bib: 1,
            offset_ms: 0,
            pace: 3.0,
            noise_m: 0.0,
            noise_seed: 1,
        };
        let at: Vec<i64> = RacerTrack::new(ride, plan, T0)
            .map(|s| s.fix.at_ms)
            .collect();
        assert!(at.windows(2).all(|w| w[1] > w[0]), "{at:?}");
    }

    #[test]
    fn noise_stays_within_the_racers_error_and_differs_between_racers() {
        let ride = Arc::new(Ride::from_samples(&straight(100, 10.0, Some(1_000))).unwrap());
        let plan = |seed| RacerPlan {
            bib: 1,
            offset_ms: 0,
            pace: 1.0,
            noise_m: 4.0,
            noise_seed: seed,
        };
        let a: Vec<Scheduled> = RacerTrack::new(Arc::clone(&ride), plan(1), T0).collect();
        let b: Vec<Scheduled> = RacerTrack::new(Arc::clone(&ride), plan(2), T0).collect();
        let mut moved = 0;
        for (s, p) in a.iter().zip(&ride.points) {
            let at = Position {
                lat_e7: s.fix.lat_e7,
                lon_e7: s.fix.lon_e7,
            };
            let d = at.distance_m(p.position);
            assert!(d <= 4.0 * 2f64.sqrt() + 0.05, "{d}");
            moved += usize::from(d > 0.5);
            assert_eq!(s.fix.accuracy_dm, 40);
        }
        assert!(moved > 80, "noise moves most fixes: {moved}");
        assert_ne!(a, b);
        let again: Vec<Scheduled> = RacerTrack::new(ride, plan(1), T0).collect();
        assert_eq!(a, again, "same seed, same noise");
    }

    #[test]
    fn the_run_out_crosses_the_finish_line_of_the_course_it_rode() {
        let samples = straight(60, 12.0, Some(1_500));
        let ride = Ride::from_samples(&samples).unwrap();
        assert_eq!(ride.recorded, 60);
        assert_eq!(ride.points.len(), 60 + RUN_OUT_M.len());
        let raw: Vec<(f64, f64)> = samples
            .iter()
            .map(|s| (s.position.lat(), s.position.lon()))
            .collect();
        let course = Course::from_degrees(&raw, 1_000).unwrap();
        let line = FinishLine::from_course(&course, 30.0).unwrap();
        let last = ride.points[ride.recorded - 1];
        let tail = &ride.points[ride.recorded..];
        for (p, want) in tail.iter().zip(RUN_OUT_M) {
            let (along, across) = line.along_and_across(p.position);
            assert!((along - want).abs() < 0.5, "{along} vs {want}");
            assert!(across < 0.5, "{across}");
            assert!(p.elapsed_ms > last.elapsed_ms);
        }
        // 12 m per 1.5 s is 8 m/s: 10 m past the end takes 1.25 s.
        assert_eq!(tail[0].elapsed_ms - last.elapsed_ms, 1_250);
        // A racer moving from the last recorded point to the first run-out point crosses.
        let before = ride.points[ride.recorded - 2].position;
        assert!(line.crossing(before, tail[0].position).is_some());
    }

    #[test]
    fn the_run_out_keeps_rolling_after_a_recorder_left_standing_at_the_finish() {
        let mut samples = straight(30, 10.0, Some(1_000));
        let end = samples.last().unwrap().position;
        for i in 1..=60 {
            samples.push(Sample {
                position: end,
                at_ms: Some(T0 + 29_000 + i * 1_000),
                elevation_dm: None,
            });
        }
        let ride = Ride::from_samples(&samples).unwrap();
        let last = ride.points[ride.recorded - 1];
        let first_out = ride.points[ride.recorded];
        // Standing still for a minute: the floor speed of 2 m/s.
        assert_eq!(first_out.elapsed_ms - last.elapsed_ms, 5_000);
        // The direction comes from the last leg that moved: still due north.
        let (east, north) = last.position.offset_m(first_out.position);
        assert!(
            east.abs() < 0.1 && (north - 10.0).abs() < 0.1,
            "{east} {north}"
        );
    }

    #[test]
    fn a_ride_without_times_is_paced_at_eight_metres_per_second() {
        let ride = Ride::from_samples(&straight(11, 8.0, None)).unwrap();
        assert!(!ride.timed);
        // 80 m on the sphere the test steps on is a few mm less on the ellipsoid.
        assert!(
            (ride.duration_ms() - 10_000).abs() < 10,
            "{}",
            ride.duration_ms()
        );
        // Repeated points would share a time; they are dropped.
        let mut samples = straight(5, 8.0, None);
        samples.insert(2, samples[2]);
        assert_eq!(Ride::from_samples(&samples).unwrap().recorded, 5);
    }

    #[test]
    fn a_ride_drops_points_that_repeat_a_recorded_time_and_refuses_too_few_points() {
        let mut samples = straight(6, 10.0, Some(1_000));
        samples[3].at_ms = samples[2].at_ms;
        let ride = Ride::from_samples(&samples).unwrap();
        assert!(ride.timed);
        assert_eq!(ride.recorded, 5);
        assert!(Ride::from_samples(&straight(1, 10.0, Some(1_000))).is_err());
        let still = vec![straight(1, 0.0, None)[0]; 3];
        assert!(Ride::from_samples(&still).is_err());
    }

    #[test]
    fn a_real_recorded_ride_keeps_its_recorded_pace() {
        let ride = shared_ride("loop-celje-resevno-2020-09-20.gpx");
        assert!(ride.timed);
        // 12:18:08 to 15:36:05 as recorded.
        assert_eq!(ride.duration_ms(), (3 * 3600 + 17 * 60 + 57) * 1000);
        assert!(ride.recorded > 3000, "{}", ride.recorded);
        assert!(
            (ride.length_m - 33_640.0).abs() < 400.0,
            "{}",
            ride.length_m
        );
        // Fractional seconds (.000Z) parse too: 17:26:09 to 18:07:18.
        let ride = shared_ride("out-and-back-ljubljana.gpx");
        assert!(ride.timed);
        assert_eq!(ride.duration_ms(), (41 * 60 + 9) * 1000);
        assert!(Ride::from_gpx(b"<nope", 10).is_err());
    }

    #[test]
    fn clock_and_bib_ranges_read_well() {
        assert_eq!(clock(3_725.4), "1:02:05");
        assert_eq!(clock(-3.0), "0:00:00");
        let info = RunInfo {
            first_bib: 10,
            racers: 5,
            expected: vec![true, false, true, true, false],
            timeout: Duration::from_secs(1),
            started: Instant::now(),
        };
        assert!(!info.ours(9) && info.ours(10) && info.ours(14) && !info.ours(15));
        assert!(info.expects(10) && !info.expects(11) && !info.expects(15));
        assert_eq!(info.expected_count(), 3);
        assert_eq!(info.expected_finished(&[10, 11, 12, 99]), 2);
    }
}
