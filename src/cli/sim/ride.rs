//! The recorded ride every simulated racer replays (pure): a GPX track read with its recorded
//! times ([`Ride::from_gpx`]), paced at a steady speed when the file has none, and extended by
//! a short run-out past its last point so every racer crosses the finish line however the
//! recording ended.
//!
//! How it fits: [`super::track::RacerTrack`] turns a ride into one racer's fixes,
//! [`super::faults`] edits a racer's own copy of it, and the `sim race` command
//! (`race`) reads it once and checks it ends at the race's finish. The tracking tests
//! and benchmarks replay the same rides.

use crate::geo::Position;
use crate::time::parse_rfc3339;

/// Pace of a ride whose file has no timestamps: a steady amateur on a road bike (m/s).
const FALLBACK_SPEED_MPS: f64 = 8.0;

/// Distances past the ride's last point of the extra fixes, in metres. A racer finishes only by
/// crossing the finish line between two fixes, and a recording usually stops on or just
/// before it.
const RUN_OUT_M: [f64; 4] = [10.0, 25.0, 40.0, 60.0];

/// The last leg's direction is taken from at least this far back, so GPS noise cannot aim
/// the run-out sideways: two points 20 m apart with 14 m of noise each can point anywhere
/// within 90° of the way the rider went, and a run-out aimed that far off misses the finish
/// line (a property test found such a ride); 100 m back keeps it within about 15°.
const DIRECTION_BASE_M: f64 = 100.0;

/// The run-out is ridden at the ride's average speed over its last this-many milliseconds...
const FINISH_SPEED_WINDOW_MS: i64 = 30_000;

/// ...kept within these bounds (m/s): a rider who stopped the recorder standing still must
/// still roll over the line, and noise on a sprint must stay under the server's speed limit.
const FINISH_SPEED_RANGE_MPS: (f64, f64) = (2.0, 12.0);

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
        push_if_later(&mut points, s, at_ms - first);
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
        push_if_later(&mut points, s, elapsed_ms);
    }
    points
}

/// Appends `s` at `elapsed_ms` unless that is not after the last point: two points at the
/// same time would be an infinite speed.
fn push_if_later(points: &mut Vec<RidePoint>, s: &Sample, elapsed_ms: i64) {
    if points.last().is_none_or(|p| elapsed_ms > p.elapsed_ms) {
        points.push(RidePoint {
            position: s.position,
            elapsed_ms,
            elevation_dm: s.elevation_dm,
        });
    }
}

/// Sum of the geodesic legs between consecutive points.
pub(super) fn path_length_m(points: &[RidePoint]) -> f64 {
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

/// The rides the simulator's tests share: made-up straight ones and the recorded ones in
/// `shared/data/gpx`.
#[cfg(test)]
pub(super) mod fixtures {
    use super::{Ride, Sample};
    use crate::geo::Position;

    /// When made-up rides were recorded, ms since the epoch.
    pub const T0: i64 = 1_796_115_600_000;

    /// A straight ride due north from (46, 15), one point every `step_m` for `n` points, one
    /// per `dt_ms` when timed.
    pub fn straight(n: usize, step_m: f64, dt_ms: Option<i64>) -> Vec<Sample> {
        let start = Position::from_degrees(46.0, 15.0).unwrap();
        (0..n)
            .map(|i| Sample {
                position: start.moved_m(0.0, step_m * i as f64),
                at_ms: dt_ms.map(|dt| T0 + dt * i as i64),
                elevation_dm: Some(2370),
            })
            .collect()
    }

    /// The recorded ride `name` from `shared/data/gpx`.
    pub fn shared_ride(name: &str) -> Ride {
        let path = format!("{}/../shared/data/gpx/{name}", env!("CARGO_MANIFEST_DIR"));
        let Ok(bytes) = std::fs::read(&path) else {
            panic!("shared data missing at {path}");
        };
        Ride::from_gpx(&bytes, 200_000).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{shared_ride, straight, T0};
    use super::*;
    use crate::geo::finish::FinishLine;
    use crate::geo::Course;

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
}
