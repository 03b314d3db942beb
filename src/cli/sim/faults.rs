//! What can go wrong on a ride, so `peloton sim race` can rehearse a bad day: GPS dropouts,
//! detours, course cuts, abandons, pauses and racers who never start.
//!
//! Pure: [`plan_faults`] picks, from the run's seed, which racers get which fault and where on
//! the ride it happens; [`Fault::apply`] turns the shared [`Ride`] into that racer's own ride.
//! Everything here works on the ride's recorded clock (the `elapsed_ms` of its points); the
//! planner converts the operator's race-time durations with each racer's pace, so "10 minutes
//! of dropout" is ten minutes on the race clock whatever the racer's pace. GPS noise is not
//! added here: [`super::track::RacerTrack`] scatters every fix of a faulty ride as it does any
//! other, which is also what makes a pausing phone's fixes jitter around the spot it stands on.

use super::plan::{RacerPlan, PACE_RANGE};
use super::ride::{path_length_m, Ride, RidePoint};
use super::rng::SplitMix64;
use super::text::clock;
use crate::geo::Position;

/// Least time a detour takes to move out to its offset (and again to come back), in race ms:
/// a rider turns off and rejoins over half a minute, not in one fix.
const DETOUR_RAMP_MS: i64 = 30_000;
/// Fastest sideways speed while leaving or rejoining the course (m/s); a longer detour ramps
/// over more time, so the track stays far under the server's impossible-speed limit.
const DETOUR_SIDEWAYS_MPS: f64 = 12.0;
/// The ramp is a smoothstep, whose steepest slope is this many times the average one.
const SMOOTHSTEP_PEAK_SLOPE: f64 = 1.5;
/// Dropouts, detours and pauses happen within this part of the ride (fractions of its
/// duration), so the racer has started properly before and has ride left after.
const WINDOW_RANGE: (f64, f64) = (0.1, 0.9);
/// Abandons happen within this part of the ride (fractions of its duration).
const ABANDON_RANGE: (f64, f64) = (0.2, 0.8);
/// Cuts start and end within this part of the ride (fractions of its length).
const CUT_RANGE: (f64, f64) = (0.1, 0.9);
/// A stretch is worth cutting when it is at least this many times longer than the straight
/// line across it (a bend, a switchback); only if the ride has none is the best it has taken.
const CUT_MIN_RATIO: f64 = 2.0;
/// Distances along a ride are summed over points at least this far apart, so a recorder's
/// jitter while its rider stood still does not count as course to cut.
const THIN_M: f64 = 10.0;
/// A pausing racer's phone keeps sending a fix this often, in race ms.
const PAUSE_FIX_EVERY_MS: i64 = 1_000;
/// Mixed into the run's seed for the fault plan, so the same seed draws the same offsets,
/// paces and noise whether or not faults are asked for.
const FAULT_SALT: u64 = 0x6261_645F_6461_7921;

/// How many racers get each fault and how bad it is, as validated from the command line.
/// Durations are race time.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FaultOptions {
    /// Racers whose phone loses its signal once.
    pub dropouts: u32,
    /// How long a dropout lasts, ms.
    pub dropout_ms: i64,
    /// Racers who leave the course sideways once.
    pub detours: u32,
    /// How far from the course a detour goes, metres.
    pub detour_m: f64,
    /// How long a detour lasts, ms, the way out and back included.
    pub detour_ms: i64,
    /// Racers who take a shortcut once.
    pub cuts: u32,
    /// Course length a cut skips, metres.
    pub cut_m: f64,
    /// Racers who give up (DNF).
    pub abandons: u32,
    /// Racers who stand still once.
    pub pauses: u32,
    /// How long a pause lasts, ms.
    pub pause_ms: i64,
    /// Racers registered who never connect (DNS).
    pub no_shows: u32,
}

impl FaultOptions {
    /// Racers that get a fault: each gets at most one, so this may not exceed the racers.
    pub fn faulty(&self) -> u64 {
        [
            self.dropouts,
            self.detours,
            self.cuts,
            self.abandons,
            self.pauses,
            self.no_shows,
        ]
        .iter()
        .map(|&n| u64::from(n))
        .sum()
    }
}

/// One racer's fault, placed on the ride. Times are on the ride's recorded clock (already
/// scaled by the racer's pace), positions are indices into the shared ride's points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// No fix at all from `from_ms` for `len_ms`: the phone had no signal and buffered
    /// nothing, so the next fix is far ahead.
    Dropout {
        /// Start of the silence.
        from_ms: i64,
        /// Its length.
        len_ms: i64,
    },
    /// Off the course sideways from `from_ms` for `len_ms`: out over `ramp_ms`, parallel to
    /// the course, and back over `ramp_ms`, keeping the course's timing so the whole length
    /// is still ridden.
    Detour {
        /// When the racer turns off.
        from_ms: i64,
        /// How long until it is back on the course.
        len_ms: i64,
        /// How long the way out (and the way back) takes.
        ramp_ms: i64,
        /// The full offset, metres east...
        east_m: f64,
        /// ...and north; its length is the detour's distance.
        north_m: f64,
    },
    /// A straight line from point `from` to point `to` of the ride, skipping the course
    /// between them, at the speed the racer rode that stretch.
    Cut {
        /// Index of the point the racer leaves the course at.
        from: usize,
        /// Index of the point it rejoins at.
        to: usize,
    },
    /// No fix after `at_ms`: the racer gave up.
    Abandon {
        /// Time of the last fix.
        at_ms: i64,
    },
    /// Standing at point `at` for `len_ms`, the phone sending a fix every `every_ms`.
    Pause {
        /// Index of the point the racer stops at.
        at: usize,
        /// How long it stands.
        len_ms: i64,
        /// Time between its fixes meanwhile.
        every_ms: i64,
    },
    /// Registered, but never connects.
    NoShow,
}

impl Fault {
    /// The fault's name, as printed and in the JSON summary.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Dropout { .. } => "dropout",
            Fault::Detour { .. } => "detour",
            Fault::Cut { .. } => "cut",
            Fault::Abandon { .. } => "abandon",
            Fault::Pause { .. } => "pause",
            Fault::NoShow => "no-show",
        }
    }

    /// Whether the run waits for this racer to finish. A racer who abandons or never starts
    /// cannot; whether a cutter finishes is the server's rules to decide, so nor is it waited
    /// for. Dropouts, detours and pauses still ride the whole course.
    pub fn expected_to_finish(&self) -> bool {
        matches!(
            self,
            Fault::Dropout { .. } | Fault::Detour { .. } | Fault::Pause { .. }
        )
    }

    /// The racer's own ride: `ride` with this fault in it; `None` when the racer never rides.
    pub fn apply(&self, ride: &Ride) -> Option<Ride> {
        match *self {
            Fault::Dropout { from_ms, len_ms } => Some(dropout(ride, from_ms, len_ms)),
            Fault::Detour {
                from_ms,
                len_ms,
                ramp_ms,
                east_m,
                north_m,
            } => Some(detour(ride, from_ms, len_ms, ramp_ms, (east_m, north_m))),
            Fault::Cut { from, to } => Some(cut(ride, from, to)),
            Fault::Abandon { at_ms } => Some(abandon(ride, at_ms)),
            Fault::Pause {
                at,
                len_ms,
                every_ms,
            } => Some(pause(ride, at, len_ms, every_ms)),
            Fault::NoShow => None,
        }
    }

    /// One line for the operator: what happens, where and when (in the racer's own race time,
    /// from its start), so a rehearsal knows what to look for.
    pub fn describe(&self, ride: &Ride, pace: f64) -> String {
        let race = |ms: i64| clock(ms as f64 / 1000.0 / pace);
        let km_at_ms = |ms: i64| {
            let i = ride
                .points
                .partition_point(|p| p.elapsed_ms < ms)
                .min(ride.recorded.saturating_sub(1));
            along_km(ride, i)
        };
        match *self {
            Fault::Dropout { from_ms, len_ms } => format!(
                "no signal for {} from {} into its ride (km {:.1}), then a jump",
                race(len_ms),
                race(from_ms),
                km_at_ms(from_ms)
            ),
            Fault::Detour {
                from_ms,
                len_ms,
                east_m,
                north_m,
                ..
            } => format!(
                "leaves the course by {:.0} m for {} from {} into its ride (km {:.1})",
                east_m.hypot(north_m),
                race(len_ms),
                race(from_ms),
                km_at_ms(from_ms)
            ),
            Fault::Cut { from, to } => {
                let (Some(a), Some(b)) = (ride.points.get(from), ride.points.get(to)) else {
                    return "cuts the course".into();
                };
                format!(
                    "cuts from km {:.1} straight to km {:.1} ({:.2} km of course for {:.2} km) \
                     {} into its ride",
                    along_km(ride, from),
                    along_km(ride, to),
                    along_km(ride, to) - along_km(ride, from),
                    a.position.distance_m(b.position) / 1000.0,
                    race(a.elapsed_ms)
                )
            }
            Fault::Abandon { at_ms } => format!(
                "abandons {} into its ride (km {:.1})",
                race(at_ms),
                km_at_ms(at_ms)
            ),
            Fault::Pause { at, len_ms, .. } => format!(
                "stands still for {} from {} into its ride (km {:.1})",
                race(len_ms),
                race(ride.points.get(at).map_or(0, |p| p.elapsed_ms)),
                along_km(ride, at)
            ),
            Fault::NoShow => "never starts: registered, never connects".into(),
        }
    }
}

/// Kilometres ridden from the start to point `index` (the recording's own path).
fn along_km(ride: &Ride, index: usize) -> f64 {
    let end = (index + 1).min(ride.points.len());
    path_length_m(ride.points.get(..end).unwrap_or_default()) / 1000.0
}

/// A ride with new points, `recorded` of them the recording, its length measured again.
fn rebuilt(points: Vec<RidePoint>, recorded: usize, timed: bool) -> Ride {
    let recorded = recorded.min(points.len());
    let length_m = path_length_m(points.get(..recorded).unwrap_or_default());
    Ride {
        points,
        recorded,
        length_m,
        timed,
    }
}

/// `ride` without the points from `from_ms` (inclusive) for `len_ms`; the rest keeps its
/// times, so the fix after the silence lands where the racer has got to meanwhile.
pub fn dropout(ride: &Ride, from_ms: i64, len_ms: i64) -> Ride {
    let until = from_ms.saturating_add(len_ms);
    let silent = |p: &RidePoint| p.elapsed_ms >= from_ms && p.elapsed_ms < until;
    let removed_recorded = ride
        .points
        .iter()
        .take(ride.recorded)
        .filter(|p| silent(p))
        .count();
    let points = ride.points.iter().filter(|p| !silent(p)).copied().collect();
    rebuilt(points, ride.recorded - removed_recorded, ride.timed)
}

/// How far out a detour is at `t_ms`, from 0 (on the course) to 1 (the full offset): a
/// smoothstep over `ramp_ms` at each end, so the racer turns away and back without a jolt.
fn detour_weight(t_ms: i64, from_ms: i64, len_ms: i64, ramp_ms: i64) -> f64 {
    let into = t_ms - from_ms;
    let left = from_ms + len_ms - t_ms;
    if into <= 0 || left <= 0 {
        return 0.0;
    }
    let w = (into.min(left) as f64 / ramp_ms.max(1) as f64).min(1.0);
    w * w * (3.0 - 2.0 * w)
}

/// `ride` moved sideways by up to `offset` (metres east, north) from `from_ms` for `len_ms`.
/// Every point keeps its time, so the racer still covers the whole course in the same time
/// and rides the detour on top.
pub fn detour(ride: &Ride, from_ms: i64, len_ms: i64, ramp_ms: i64, offset: (f64, f64)) -> Ride {
    let points = ride
        .points
        .iter()
        .map(|p| {
            let w = detour_weight(p.elapsed_ms, from_ms, len_ms, ramp_ms);
            if w <= 0.0 {
                return *p;
            }
            RidePoint {
                position: p.position.moved_m(offset.0 * w, offset.1 * w),
                ..*p
            }
        })
        .collect();
    rebuilt(points, ride.recorded, ride.timed)
}

/// `ride` with the points strictly between `from` and `to` replaced by a straight line,
/// ridden at the speed the racer rode the skipped stretch; everything after arrives that
/// much earlier.
pub fn cut(ride: &Ride, from: usize, to: usize) -> Ride {
    let (Some(a), Some(b)) = (ride.points.get(from).copied(), ride.points.get(to).copied()) else {
        return ride.clone();
    };
    if to <= from + 1 || to >= ride.recorded {
        return ride.clone();
    }
    let stretch_ms = b.elapsed_ms - a.elapsed_ms;
    let stretch_m = path_length_m(&ride.points[from..=to]);
    let chord_m = a.position.distance_m(b.position);
    let chord_ms = if stretch_m > 0.0 {
        ((chord_m * stretch_ms as f64 / stretch_m).round() as i64).clamp(1, stretch_ms)
    } else {
        stretch_ms
    };
    // Fixes along the line come as often as they did on the stretch.
    let every_ms = (stretch_ms / (to - from) as i64).max(1);
    let (east, north) = a.position.offset_m(b.position);
    let mut points: Vec<RidePoint> = ride.points[..=from].to_vec();
    let mut t = every_ms;
    while t < chord_ms {
        let f = t as f64 / chord_ms as f64;
        points.push(RidePoint {
            position: a.position.moved_m(east * f, north * f),
            elapsed_ms: a.elapsed_ms + t,
            elevation_dm: match (a.elevation_dm, b.elevation_dm) {
                (Some(x), Some(y)) => {
                    Some((f64::from(x) + (f64::from(y) - f64::from(x)) * f).round() as i32)
                }
                (x, _) => x,
            },
        });
        t += every_ms;
    }
    let line = points.len() - (from + 1);
    let shift = a.elapsed_ms + chord_ms - b.elapsed_ms;
    points.extend(ride.points[to..].iter().map(|p| RidePoint {
        elapsed_ms: p.elapsed_ms + shift,
        ..*p
    }));
    let recorded = ride.recorded - (to - from - 1) + line;
    rebuilt(points, recorded, ride.timed)
}

/// `ride` up to and including its last point at or before `at_ms`, without the run-out: the
/// racer stops there for good.
pub fn abandon(ride: &Ride, at_ms: i64) -> Ride {
    let kept = ride
        .points
        .iter()
        .take(ride.recorded)
        .take_while(|p| p.elapsed_ms <= at_ms)
        .count()
        .max(1);
    let points = ride.points.iter().take(kept).copied().collect();
    rebuilt(points, kept, ride.timed)
}

/// `ride` standing at point `at` for `len_ms`, a fix every `every_ms` on the very spot (the
/// phone's noise scatters them); everything after comes `len_ms` later.
pub fn pause(ride: &Ride, at: usize, len_ms: i64, every_ms: i64) -> Ride {
    let Some(stop) = ride.points.get(at).copied() else {
        return ride.clone();
    };
    let every_ms = every_ms.max(1);
    let mut points: Vec<RidePoint> = ride.points[..=at].to_vec();
    let mut t = every_ms;
    while t < len_ms {
        points.push(RidePoint {
            elapsed_ms: stop.elapsed_ms + t,
            ..stop
        });
        t += every_ms;
    }
    let standing = points.len() - (at + 1);
    points.extend(ride.points[at + 1..].iter().map(|p| RidePoint {
        elapsed_ms: p.elapsed_ms + len_ms.max(0),
        ..*p
    }));
    let recorded = if at < ride.recorded {
        ride.recorded + standing
    } else {
        ride.recorded
    };
    rebuilt(points, recorded, ride.timed)
}

/// Which racers get which fault and where, drawn from `seed` (the same seed, the same plan),
/// one entry per racer in `racers`' order. Each racer gets at most one fault. Refuses, with a
/// message naming the flag, what cannot happen on this ride.
pub fn plan_faults(
    ride: &Ride,
    racers: &[RacerPlan],
    options: &FaultOptions,
    seed: u64,
) -> Result<Vec<Option<Fault>>, String> {
    let faulty = options.faulty();
    if faulty > racers.len() as u64 {
        return Err(format!(
            "{faulty} racers with a fault (dropouts, detours, cuts, abandons, pauses and \
             no-shows together) but only {} racers; each racer gets at most one",
            racers.len()
        ));
    }
    let duration = ride.duration_ms();
    let slowest = PACE_RANGE.1;
    let window = ((WINDOW_RANGE.1 - WINDOW_RANGE.0) * duration as f64) as i64;
    let fits = |flag: &str, len_ms: i64| {
        if (len_ms as f64 * slowest) as i64 > window {
            Err(format!(
                "{flag} {} is too long for this ride: it must fit in the middle {:.0} % of the \
                 ride's {} for every pace, so at most {:.0} s",
                len_ms / 1000,
                (WINDOW_RANGE.1 - WINDOW_RANGE.0) * 100.0,
                clock(duration as f64 / 1000.0),
                window as f64 / slowest / 1000.0
            ))
        } else {
            Ok(())
        }
    };
    if options.dropouts > 0 {
        fits("--dropout-secs", options.dropout_ms)?;
    }
    if options.pauses > 0 {
        fits("--pause-secs", options.pause_ms)?;
    }
    let ramp_ms = detour_ramp_ms(options.detour_m);
    if options.detours > 0 {
        fits("--detour-secs", options.detour_ms)?;
        if options.detour_ms < 2 * ramp_ms {
            return Err(format!(
                "--detour-secs {} is too short to go {:.0} m out and back at a plausible speed: \
                 at least {} s",
                options.detour_ms / 1000,
                options.detour_m,
                (2 * ramp_ms + 999) / 1000
            ));
        }
    }
    let cuts = if options.cuts > 0 {
        cut_candidates(ride, options.cut_m)?
    } else {
        Vec::new()
    };

    let mut rng = SplitMix64::new(seed ^ FAULT_SALT);
    let mut order: Vec<usize> = (0..racers.len()).collect();
    for i in (1..order.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let kinds = [
        (options.dropouts, Kind::Dropout),
        (options.detours, Kind::Detour),
        (options.cuts, Kind::Cut),
        (options.abandons, Kind::Abandon),
        (options.pauses, Kind::Pause),
        (options.no_shows, Kind::NoShow),
    ];
    let mut plan: Vec<Option<Fault>> = vec![None; racers.len()];
    let mut next = order.into_iter();
    for (count, kind) in kinds {
        for _ in 0..count {
            let Some(i) = next.next() else { break };
            let pace = racers.get(i).map_or(1.0, |r| r.pace);
            // A race-time duration on the ride's recorded clock for this racer.
            let rec = |ms: i64| (ms as f64 * pace).round() as i64;
            let fault = match kind {
                Kind::Dropout => {
                    let len_ms = rec(options.dropout_ms);
                    Fault::Dropout {
                        from_ms: window_start(&mut rng, duration, len_ms),
                        len_ms,
                    }
                }
                Kind::Detour => {
                    let len_ms = rec(options.detour_ms);
                    let from_ms = window_start(&mut rng, duration, len_ms);
                    let (east_m, north_m) =
                        sideways(ride, from_ms, len_ms, options.detour_m, rng.unit() < 0.5);
                    Fault::Detour {
                        from_ms,
                        len_ms,
                        ramp_ms: rec(ramp_ms),
                        east_m,
                        north_m,
                    }
                }
                Kind::Cut => pick_cut(&cuts, &mut rng),
                Kind::Abandon => Fault::Abandon {
                    at_ms: (duration as f64 * rng.range(ABANDON_RANGE.0, ABANDON_RANGE.1)) as i64,
                },
                Kind::Pause => {
                    let at_ms = window_start(&mut rng, duration, 0);
                    Fault::Pause {
                        at: ride
                            .points
                            .partition_point(|p| p.elapsed_ms < at_ms)
                            .min(ride.recorded.saturating_sub(2)),
                        len_ms: rec(options.pause_ms),
                        every_ms: rec(PAUSE_FIX_EVERY_MS).max(1),
                    }
                }
                Kind::NoShow => Fault::NoShow,
            };
            if let Some(slot) = plan.get_mut(i) {
                *slot = Some(fault);
            }
        }
    }
    Ok(plan)
}

/// The kinds of fault, in the order racers are dealt them.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// See [`Fault::Dropout`].
    Dropout,
    /// See [`Fault::Detour`].
    Detour,
    /// See [`Fault::Cut`].
    Cut,
    /// See [`Fault::Abandon`].
    Abandon,
    /// See [`Fault::Pause`].
    Pause,
    /// See [`Fault::NoShow`].
    NoShow,
}

/// How long a detour of `offset_m` takes to move out (race ms): at least
/// [`DETOUR_RAMP_MS`], longer when a wide detour would otherwise move sideways faster than
/// [`DETOUR_SIDEWAYS_MPS`].
fn detour_ramp_ms(offset_m: f64) -> i64 {
    let needed = offset_m.max(0.0) * SMOOTHSTEP_PEAK_SLOPE / DETOUR_SIDEWAYS_MPS * 1000.0;
    DETOUR_RAMP_MS.max(needed.ceil() as i64)
}

/// A seeded start for a window of `len_ms` inside the middle [`WINDOW_RANGE`] of a ride of
/// `duration` ms.
fn window_start(rng: &mut SplitMix64, duration: i64, len_ms: i64) -> i64 {
    let low = (duration as f64 * WINDOW_RANGE.0) as i64;
    let high = ((duration as f64 * WINDOW_RANGE.1) as i64 - len_ms).max(low);
    rng.range(low as f64, high as f64 + 1.0).floor() as i64
}

/// The offset of a detour from `from_ms` for `len_ms`: `distance_m` square to the way the
/// course heads over that stretch, to the left or the right. A stretch that ends where it
/// began (a hairpin, a loop) has no heading; its first leg of any length decides, and a rider
/// who stood still all along goes east or west.
fn sideways(ride: &Ride, from_ms: i64, len_ms: i64, distance_m: f64, left: bool) -> (f64, f64) {
    let first = ride.points.partition_point(|p| p.elapsed_ms < from_ms);
    let last = ride
        .points
        .partition_point(|p| p.elapsed_ms < from_ms + len_ms)
        .min(ride.recorded.saturating_sub(1));
    let stretch = ride.points.get(first..=last).unwrap_or_default();
    let heading = stretch
        .first()
        .map(|a| {
            let (east, north) = stretch
                .last()
                .map_or((0.0, 0.0), |b| a.position.offset_m(b.position));
            if east.hypot(north) >= 2.0 * THIN_M {
                return (east, north);
            }
            stretch
                .iter()
                .find(|b| a.position.distance_m(b.position) >= THIN_M)
                .map_or((0.0, 1.0), |b| a.position.offset_m(b.position))
        })
        .unwrap_or((0.0, 1.0));
    let norm = heading.0.hypot(heading.1).max(f64::EPSILON);
    let (east, north) = (heading.0 / norm, heading.1 / norm);
    // Left of the heading is (-north, east); right is (north, -east).
    if left {
        (-north * distance_m, east * distance_m)
    } else {
        (north * distance_m, -east * distance_m)
    }
}

/// A place a cut can start: the point it leaves at, the point it rejoins at, and how many
/// times longer the skipped course is than the straight line.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CutPlace {
    /// Index of the point left at.
    from: usize,
    /// Index of the point rejoined at.
    to: usize,
    /// Course over straight line.
    ratio: f64,
}

/// Every place in the middle [`CUT_RANGE`] of the ride where a cut skipping `cut_m` of
/// course can start, with its rejoining point. Refuses a `cut_m` the ride cannot hold.
fn cut_candidates(ride: &Ride, cut_m: f64) -> Result<Vec<CutPlace>, String> {
    let points = ride.points.get(..ride.recorded).unwrap_or_default();
    // Distance along the ride, counting only moves of at least THIN_M.
    let mut along = Vec::with_capacity(points.len());
    let mut total = 0.0;
    let mut anchor: Option<Position> = None;
    for p in points {
        match anchor {
            None => anchor = Some(p.position),
            Some(a) => {
                let d = a.distance_m(p.position);
                if d >= THIN_M {
                    total += d;
                    anchor = Some(p.position);
                }
            }
        }
        along.push(total);
    }
    let low = total * CUT_RANGE.0;
    let high = total * CUT_RANGE.1 - cut_m;
    let mut places = Vec::new();
    let mut to = 0;
    for from in 0..points.len() {
        let a = along[from];
        if a < low || a > high {
            continue;
        }
        // Only where the thinned distance moved, so a standing rider is one place, not many.
        if from > 0 && along[from - 1] == a {
            continue;
        }
        to = to.max(from + 1);
        while to < points.len() && along[to] - a < cut_m {
            to += 1;
        }
        let Some(b) = points.get(to) else { break };
        let chord = points[from].position.distance_m(b.position).max(1.0);
        places.push(CutPlace {
            from,
            to,
            ratio: (along[to] - a) / chord,
        });
    }
    if places.is_empty() {
        return Err(format!(
            "--cut-m {cut_m:.0} is too long for this ride: a cut must lie in the middle {:.0} % \
             of its {:.1} km",
            (CUT_RANGE.1 - CUT_RANGE.0) * 100.0,
            total / 1000.0
        ));
    }
    Ok(places)
}

/// A seeded cut among the places where the straight line is at most 1/[`CUT_MIN_RATIO`] of
/// the course it skips; on a ride without any, the place that skips the most per metre
/// ridden.
fn pick_cut(places: &[CutPlace], rng: &mut SplitMix64) -> Fault {
    let good: Vec<&CutPlace> = places.iter().filter(|p| p.ratio >= CUT_MIN_RATIO).collect();
    let chosen = if good.is_empty() {
        places.iter().max_by(|a, b| a.ratio.total_cmp(&b.ratio))
    } else {
        let i = (rng.next_u64() % good.len() as u64) as usize;
        good.get(i).copied()
    };
    match chosen {
        Some(p) => Fault::Cut {
            from: p.from,
            to: p.to,
        },
        // Not reached: `cut_candidates` refuses an empty list; no cut is the harmless answer.
        None => Fault::Cut { from: 0, to: 0 },
    }
}

#[cfg(test)]
mod tests {
    use super::super::plan::plan_racers;
    use super::super::ride::fixtures::{self, shared_ride};
    use super::*;
    use proptest::prelude::*;

    const RIDE: &str = "loop-celje-resevno-2020-09-20.gpx";

    /// Due north from (46, 15), a point every 10 m and every second.
    fn straight(n: usize) -> Ride {
        Ride::from_samples(&fixtures::straight(n, 10.0, Some(1_000))).unwrap()
    }

    fn strictly_increasing(ride: &Ride) -> bool {
        ride.points
            .windows(2)
            .all(|w| w[1].elapsed_ms > w[0].elapsed_ms)
    }

    /// The fastest move between two consecutive points, m/s.
    fn top_speed(ride: &Ride) -> f64 {
        ride.points
            .windows(2)
            .map(|w| {
                w[0].position.distance_m(w[1].position)
                    / ((w[1].elapsed_ms - w[0].elapsed_ms) as f64 / 1000.0)
            })
            .fold(0.0, f64::max)
    }

    fn options() -> FaultOptions {
        FaultOptions {
            dropout_ms: 600_000,
            detour_m: 300.0,
            detour_ms: 180_000,
            cut_m: 1_000.0,
            pause_ms: 120_000,
            ..FaultOptions::default()
        }
    }

    #[test]
    fn a_dropout_removes_exactly_its_window_and_keeps_every_other_time() {
        let ride = shared_ride(RIDE);
        let (from, len) = (3_600_000, 600_000);
        let out = dropout(&ride, from, len);
        let inside = |t: i64| t >= from && t < from + len;
        assert!(ride.points.iter().any(|p| inside(p.elapsed_ms)));
        let kept: Vec<RidePoint> = ride
            .points
            .iter()
            .filter(|p| !inside(p.elapsed_ms))
            .copied()
            .collect();
        assert_eq!(out.points, kept);
        assert_eq!(
            out.recorded,
            ride.recorded - (ride.points.len() - kept.len())
        );
        assert_eq!(
            out.points.len() - out.recorded,
            ride.points.len() - ride.recorded
        );
        assert!(strictly_increasing(&out));
        // The fix after the silence is far ahead of the one before: the jump.
        let before = out.points.iter().rfind(|p| p.elapsed_ms < from).unwrap();
        let after = out.points.iter().find(|p| p.elapsed_ms >= from).unwrap();
        assert!(after.elapsed_ms >= from + len);
        assert!(before.position.distance_m(after.position) > 300.0);
    }

    #[test]
    fn a_detour_goes_out_about_its_distance_and_comes_back_in_time() {
        let ride = shared_ride(RIDE);
        let (from, len, d) = (4_000_000, 300_000, 300.0);
        let ramp = detour_ramp_ms(d);
        assert_eq!(ramp, 37_500);
        let offset = sideways(&ride, from, len, d, true);
        assert!((offset.0.hypot(offset.1) - d).abs() < 1e-6);
        let out = detour(&ride, from, len, ramp, offset);
        assert_eq!(out.points.len(), ride.points.len());
        assert_eq!(out.recorded, ride.recorded);
        let mut widest: f64 = 0.0;
        for (p, q) in ride.points.iter().zip(&out.points) {
            assert_eq!(p.elapsed_ms, q.elapsed_ms);
            let apart = p.position.distance_m(q.position);
            if p.elapsed_ms <= from || p.elapsed_ms >= from + len {
                assert_eq!(p, q);
            }
            widest = widest.max(apart);
        }
        assert!((widest - d).abs() < 2.0, "{widest}");
        // Away from the original track as a whole, not only from the point it stood for.
        let farthest = out
            .points
            .iter()
            .map(|q| {
                ride.points
                    .iter()
                    .map(|p| p.position.distance_m(q.position))
                    .fold(f64::INFINITY, f64::min)
            })
            .fold(0.0, f64::max);
        assert!(farthest > 0.8 * d && farthest < d + 2.0, "{farthest}");
        // The whole course is still ridden (and more), within the ride's time.
        assert!(
            out.length_m > ride.length_m + d,
            "{} {}",
            out.length_m,
            ride.length_m
        );
        assert_eq!(out.duration_ms(), ride.duration_ms());
        assert!(strictly_increasing(&out));
        // Turning away is smooth: no faster than the recording's own top speed plus the
        // sideways limit.
        assert!(top_speed(&out) < top_speed(&ride) + DETOUR_SIDEWAYS_MPS + 1.0);
    }

    #[test]
    fn a_wide_detour_ramps_longer_and_a_short_one_is_refused() {
        assert_eq!(detour_ramp_ms(100.0), DETOUR_RAMP_MS);
        assert_eq!(detour_ramp_ms(1_200.0), 150_000);
        let ride = shared_ride(RIDE);
        let racers = plan_racers(3, 1, 0, 1);
        let o = FaultOptions {
            detours: 1,
            detour_m: 1_200.0,
            detour_ms: 200_000,
            ..options()
        };
        let err = plan_faults(&ride, &racers, &o, 1).unwrap_err();
        assert!(
            err.contains("--detour-secs 200") && err.contains("300 s"),
            "{err}"
        );
    }

    #[test]
    fn a_cut_crosses_a_bend_in_a_straight_line_and_shortens_the_ride() {
        let ride = shared_ride(RIDE);
        let places = cut_candidates(&ride, 1_000.0).unwrap();
        let mut rng = SplitMix64::new(5);
        let Fault::Cut { from, to } = pick_cut(&places, &mut rng) else {
            panic!("not a cut");
        };
        let (a, b) = (ride.points[from], ride.points[to]);
        let chord = a.position.distance_m(b.position);
        let skipped = path_length_m(&ride.points[from..=to]);
        assert!(skipped >= 1_000.0, "{skipped}");
        assert!(
            chord * CUT_MIN_RATIO <= skipped + 25.0,
            "{chord} vs {skipped}"
        );

        let out = cut(&ride, from, to);
        assert!(strictly_increasing(&out));
        assert!(
            out.length_m < ride.length_m - 0.4 * skipped,
            "{}",
            out.length_m
        );
        assert!(out.duration_ms() < ride.duration_ms());
        assert_eq!(
            out.points.len() - out.recorded,
            ride.points.len() - ride.recorded
        );
        // Up to the cut the ride is unchanged, then the line, then the rest of the course.
        assert_eq!(out.points[..=from], ride.points[..=from]);
        let rejoin = out
            .points
            .iter()
            .position(|p| p.position == b.position && p.elapsed_ms > a.elapsed_ms)
            .unwrap();
        for p in &out.points[from + 1..rejoin] {
            let off_line =
                a.position.distance_m(p.position) + p.position.distance_m(b.position) - chord;
            assert!(off_line < 1.0, "{off_line}");
        }
        assert_eq!(out.points.len() - rejoin, ride.points.len() - to);
        // At the speed the racer rode the stretch, give or take a fix interval.
        let line_s = (out.points[rejoin].elapsed_ms - a.elapsed_ms) as f64 / 1000.0;
        let stretch_s = (b.elapsed_ms - a.elapsed_ms) as f64 / 1000.0;
        let (line_v, stretch_v) = (chord / line_s, skipped / stretch_s);
        assert!(
            (line_v - stretch_v).abs() < 0.05 * stretch_v + 0.1,
            "{line_v} {stretch_v}"
        );
        assert!(top_speed(&out) <= top_speed(&ride) + 0.5);
    }

    #[test]
    fn a_ride_without_a_bend_is_cut_where_it_saves_the_most() {
        let ride = straight(400);
        let places = cut_candidates(&ride, 500.0).unwrap();
        assert!(places.iter().all(|p| p.ratio < CUT_MIN_RATIO));
        let Fault::Cut { from, to } = pick_cut(&places, &mut SplitMix64::new(1)) else {
            panic!("not a cut");
        };
        assert!(to > from + 1);
        let out = cut(&ride, from, to);
        assert!(strictly_increasing(&out));
        assert!(out.length_m <= ride.length_m + 1e-6);
        // Too long a cut for the ride is refused, naming the flag.
        let err = cut_candidates(&ride, 5_000.0).unwrap_err();
        assert!(err.contains("--cut-m 5000"), "{err}");
    }

    #[test]
    fn an_abandon_stops_for_good_before_the_finish() {
        let ride = shared_ride(RIDE);
        let at = 5_000_000;
        let out = abandon(&ride, at);
        assert_eq!(
            out.points.len(),
            out.recorded,
            "no run-out past a line never reached"
        );
        assert!(out.points.last().unwrap().elapsed_ms <= at);
        assert!(ride.points[out.points.len()].elapsed_ms > at);
        assert_eq!(out.points[..], ride.points[..out.points.len()]);
        assert!(out.length_m < ride.length_m);
        assert!(strictly_increasing(&out));
    }

    #[test]
    fn a_pause_stands_on_one_spot_then_rides_on_later() {
        let ride = shared_ride(RIDE);
        let at = 1_500;
        let (len, every) = (120_000, 1_000);
        let out = pause(&ride, at, len, every);
        assert!(strictly_increasing(&out));
        let stop = ride.points[at];
        let standing = &out.points[at + 1..at + 120];
        assert!(standing.iter().all(|p| p.position == stop.position));
        assert_eq!(
            standing.last().unwrap().elapsed_ms,
            stop.elapsed_ms + 119_000
        );
        assert_eq!(out.points.len(), ride.points.len() + 119);
        assert_eq!(out.recorded, ride.recorded + 119);
        for (p, q) in ride.points[at + 1..].iter().zip(&out.points[at + 120..]) {
            assert_eq!(q.elapsed_ms, p.elapsed_ms + len);
            assert_eq!(q.position, p.position);
        }
        assert_eq!(out.duration_ms(), ride.duration_ms() + len);
    }

    #[test]
    fn the_plan_is_seeded_disjoint_and_deals_each_fault_as_asked() {
        let ride = shared_ride(RIDE);
        let racers = plan_racers(20, 1, 60_000, 9);
        let o = FaultOptions {
            dropouts: 2,
            detours: 2,
            cuts: 2,
            abandons: 3,
            pauses: 1,
            no_shows: 2,
            ..options()
        };
        let a = plan_faults(&ride, &racers, &o, 9).unwrap();
        assert_eq!(a, plan_faults(&ride, &racers, &o, 9).unwrap());
        assert_ne!(a, plan_faults(&ride, &racers, &o, 10).unwrap());
        assert_eq!(a.len(), 20);
        let count = |name: &str| a.iter().flatten().filter(|f| f.name() == name).count();
        assert_eq!(
            [
                count("dropout"),
                count("detour"),
                count("cut"),
                count("abandon"),
                count("pause"),
                count("no-show")
            ],
            [2, 2, 2, 3, 1, 2]
        );
        assert_eq!(a.iter().filter(|f| f.is_none()).count(), 8);
        let duration = ride.duration_ms();
        for (fault, racer) in a.iter().zip(&racers) {
            let Some(fault) = fault else { continue };
            match *fault {
                Fault::Dropout { from_ms, len_ms } => {
                    assert_eq!(len_ms, (600_000.0 * racer.pace).round() as i64);
                    assert!(from_ms >= duration / 10 && from_ms + len_ms <= duration * 9 / 10);
                }
                Fault::Abandon { at_ms } => {
                    assert!(at_ms >= duration / 5 && at_ms <= duration * 4 / 5);
                }
                _ => {}
            }
            assert!(!fault.describe(&ride, racer.pace).is_empty());
            // Every faulty ride (but the no-show's) is a valid, strictly increasing ride.
            match fault.apply(&ride) {
                Some(out) => {
                    assert!(strictly_increasing(&out), "{fault:?}");
                    assert!(top_speed(&out) < 40.0, "{fault:?}");
                }
                None => assert_eq!(*fault, Fault::NoShow),
            }
        }
        // Faults do not change the racers' own offsets and paces: a different stream.
        assert_eq!(racers, plan_racers(20, 1, 60_000, 9));
    }

    #[test]
    fn the_plan_refuses_what_cannot_happen_naming_the_flag() {
        let ride = shared_ride("out-and-back-ljubljana.gpx");
        let racers = plan_racers(3, 1, 0, 1);
        let too_many = FaultOptions {
            abandons: 2,
            no_shows: 2,
            ..options()
        };
        let err = plan_faults(&ride, &racers, &too_many, 1).unwrap_err();
        assert!(
            err.contains("4 racers with a fault") && err.contains("only 3"),
            "{err}"
        );
        // The ride lasts 41 min: an hour of dropout does not fit.
        let long = FaultOptions {
            dropouts: 1,
            dropout_ms: 3_600_000,
            ..options()
        };
        let err = plan_faults(&ride, &racers, &long, 1).unwrap_err();
        assert!(err.contains("--dropout-secs 3600"), "{err}");
        // Unasked faults are not checked: the same long dropout without dropouts is fine.
        let none = FaultOptions {
            dropout_ms: 3_600_000,
            ..options()
        };
        assert_eq!(
            plan_faults(&ride, &racers, &none, 1).unwrap(),
            vec![None, None, None]
        );
    }

    #[test]
    fn who_is_waited_for() {
        let waited: Vec<bool> = [
            Fault::Dropout {
                from_ms: 0,
                len_ms: 1,
            },
            Fault::Abandon { at_ms: 0 },
            Fault::Cut { from: 0, to: 0 },
            Fault::NoShow,
        ]
        .iter()
        .map(Fault::expected_to_finish)
        .collect();
        assert_eq!(waited, [true, false, false, false]);
    }

    proptest! {
        #[test]
        fn every_fault_keeps_times_strictly_increasing(
            n in 30usize..300,
            from in 0i64..300_000,
            len in 1i64..200_000,
            at in 0usize..400,
            d in 1.0f64..2_000.0,
        ) {
            let ride = straight(n);
            let at = at.min(ride.recorded - 2);
            let rides = [
                dropout(&ride, from, len),
                detour(&ride, from, len, detour_ramp_ms(d), (d, 0.0)),
                pause(&ride, at, len, 1_000),
                abandon(&ride, from),
                cut(&ride, at, (at + 1 + len as usize / 1_000).min(ride.recorded - 1)),
            ];
            for out in rides {
                prop_assert!(strictly_increasing(&out));
                prop_assert!(out.recorded <= out.points.len());
                prop_assert!(!out.points.is_empty());
            }
        }
    }
}
