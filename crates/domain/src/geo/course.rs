//! A race course: the ordered points racers follow, parsed from GPX and measured
//! geodesically. Validation lives here so every way of creating a race (CLI, protocol,
//! recovery) applies the same rules.

use super::position::Position;
use super::projection::{CourseIndex, ProjectionWindow};
use serde::{Deserialize, Serialize};

/// Why a GPX document is not a usable course.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CourseError {
    /// The bytes are not GPX the parser accepts.
    #[error("not a readable GPX document: {0}")]
    Unreadable(String),
    /// Fewer than two distinct points.
    #[error("a course needs at least 2 points, found {0}")]
    TooFewPoints(usize),
    /// More points than the configured maximum.
    #[error("a course may have at most {max} points, found {found}")]
    TooManyPoints {
        /// The configured limit.
        max: usize,
        /// What the file had.
        found: usize,
    },
    /// A point outside the globe.
    #[error("point {index}: {reason}")]
    BadPoint {
        /// Zero-based index among the course points.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The course has zero length (all points on top of each other).
    #[error("the course has zero length")]
    ZeroLength,
    /// A waypoint meant as a checkpoint is not on the course.
    #[error("checkpoint {name:?} is {offset_m:.0} m from the course (at most {max_m:.0} m)")]
    CheckpointOffCourse {
        /// The waypoint's name (or its number when unnamed).
        name: String,
        /// How far the course passes from it.
        offset_m: f64,
        /// The allowed distance, [`MAX_CHECKPOINT_OFFSET_M`].
        max_m: f64,
    },
    /// More waypoints than a course may have checkpoints.
    #[error("a course may have at most {max} checkpoints, found {found}")]
    TooManyCheckpoints {
        /// [`MAX_CHECKPOINTS`].
        max: usize,
        /// What the file had.
        found: usize,
    },
}

/// How far from the course a GPX waypoint may be and still mark a checkpoint: farther and
/// it is almost certainly a mistake (a waypoint of another course), which must be said at
/// creation rather than discovered as missing splits after the race.
pub const MAX_CHECKPOINT_OFFSET_M: f64 = 100.0;

/// Checkpoints per course: splits travel in every standings row, so they stay few.
pub const MAX_CHECKPOINTS: usize = 64;

/// A waypoint this close to the start or the finish (along the course) marks that end.
const END_MARGIN_M: f64 = 25.0;

/// Longest checkpoint name kept; longer names are cut, not refused.
const MAX_CHECKPOINT_NAME_CHARS: usize = 64;

/// A timing point along the course, where racers get a split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Shown to spectators and in the results ("Summit", "CP2").
    pub name: String,
    /// Where it is, on the course line.
    pub position: Position,
    /// Distance along the course from the start, metres; strictly increasing between
    /// checkpoints and strictly between start and finish.
    pub distance_m: f64,
    /// A finisher must have passed it by riding (not skipped it by a suspected cut); missing
    /// it disqualifies. Marked in GPX by the waypoint's `<type>` containing "mandatory".
    pub mandatory: bool,
}

/// A GPX waypoint offered as a checkpoint, before it is placed on the course.
#[derive(Debug, Clone, PartialEq)]
pub struct WaypointMark {
    /// Its name (or "CP<n>" when unnamed).
    pub name: String,
    /// Where the file puts it.
    pub position: Position,
    /// Whether it is a mandatory checkpoint.
    pub mandatory: bool,
}

/// Whether a GPX waypoint's `<type>` marks a mandatory checkpoint: any type that says
/// "mandatory", whatever its case ("Mandatory", "checkpoint:mandatory"), so route planners
/// that only offer free text can mark one.
pub fn is_mandatory_type(type_: Option<&str>) -> bool {
    type_.is_some_and(|t| t.to_ascii_lowercase().contains("mandatory"))
}

/// A validated course.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Course {
    /// Points in riding order, consecutive duplicates removed.
    pub points: Vec<Position>,
    /// Geodesic length in metres, the sum of the legs between points.
    pub length_m: f64,
    /// Timing points in riding order (GPX waypoints placed on the course); start and finish
    /// are not checkpoints.
    pub checkpoints: Vec<Checkpoint>,
}

impl Course {
    /// Each checkpoint's distance along the course, metres, in riding order: what tracking
    /// (splits) and pacing (the approach to a timing point) measure against.
    pub fn checkpoint_distances_m(&self) -> Vec<f64> {
        self.checkpoints.iter().map(|c| c.distance_m).collect()
    }

    /// Parses a GPX document: the points of every track segment in order, or, for a file with
    /// no tracks, its routes. Waypoints alone are not a course: they are its checkpoints, in
    /// file order (see [`Course::with_checkpoints`]).
    pub fn from_gpx(bytes: &[u8], max_points: usize) -> Result<Course, CourseError> {
        let gpx = gpx::read(bytes).map_err(|e| CourseError::Unreadable(e.to_string()))?;
        let mut raw: Vec<(f64, f64)> = Vec::new();
        for track in &gpx.tracks {
            for segment in &track.segments {
                raw.extend(
                    segment
                        .points
                        .iter()
                        .map(|w| (w.point().y(), w.point().x())),
                );
            }
        }
        if raw.is_empty() {
            for route in &gpx.routes {
                raw.extend(route.points.iter().map(|w| (w.point().y(), w.point().x())));
            }
        }
        let course = Course::from_degrees(&raw, max_points)?;
        let waypoints: Vec<WaypointMark> = gpx
            .waypoints
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let name = w.name.clone().unwrap_or_else(|| format!("CP{}", i + 1));
                let mandatory = is_mandatory_type(w.type_.as_deref());
                Position::from_degrees(w.point().y(), w.point().x())
                    .map(|position| WaypointMark {
                        name,
                        position,
                        mandatory,
                    })
                    .map_err(|reason| CourseError::BadPoint {
                        index: raw.len() + i,
                        reason: format!("waypoint {}: {reason}", i + 1),
                    })
            })
            .collect::<Result<_, _>>()?;
        course.with_checkpoints(&waypoints)
    }

    /// Places named waypoints on the course as checkpoints, in the order given: each is
    /// searched only after the previous one, so a waypoint on an out-and-back or a loop lands
    /// on the pass the racers reach first after the previous checkpoint, not on whichever pass
    /// happens to be nearest. Waypoints at the start or the finish mark those, not a split,
    /// and are dropped; one more than [`MAX_CHECKPOINT_OFFSET_M`] from the course is refused.
    pub fn with_checkpoints(mut self, waypoints: &[WaypointMark]) -> Result<Course, CourseError> {
        if waypoints.len() > MAX_CHECKPOINTS {
            return Err(CourseError::TooManyCheckpoints {
                max: MAX_CHECKPOINTS,
                found: waypoints.len(),
            });
        }
        let index = CourseIndex::from(&self);
        let length = index.length_m();
        let mut after_m = 0.0;
        let mut checkpoints = Vec::with_capacity(waypoints.len());
        for WaypointMark {
            name,
            position,
            mandatory,
        } in waypoints
        {
            let window = ProjectionWindow {
                behind_m: 0.0,
                ahead_m: length,
            };
            let Some(placed) = index.project(*position, Some(after_m), window) else {
                return Err(CourseError::ZeroLength);
            };
            if placed.offset_m > MAX_CHECKPOINT_OFFSET_M {
                return Err(CourseError::CheckpointOffCourse {
                    name: name.clone(),
                    offset_m: placed.offset_m,
                    max_m: MAX_CHECKPOINT_OFFSET_M,
                });
            }
            let at_an_end =
                placed.progress_m < END_MARGIN_M || placed.progress_m > length - END_MARGIN_M;
            if at_an_end || placed.progress_m <= after_m {
                continue;
            }
            after_m = placed.progress_m;
            checkpoints.push(Checkpoint {
                name: name.chars().take(MAX_CHECKPOINT_NAME_CHARS).collect(),
                position: placed.point,
                distance_m: placed.progress_m,
                mandatory: *mandatory,
            });
        }
        self.checkpoints = checkpoints;
        Ok(self)
    }

    /// Builds a course from `(lat, lon)` pairs in degrees, with the same validation as GPX.
    pub fn from_degrees(raw: &[(f64, f64)], max_points: usize) -> Result<Course, CourseError> {
        if raw.len() > max_points {
            return Err(CourseError::TooManyPoints {
                max: max_points,
                found: raw.len(),
            });
        }
        let mut points: Vec<Position> = Vec::with_capacity(raw.len());
        for (index, &(lat, lon)) in raw.iter().enumerate() {
            let p = Position::from_degrees(lat, lon)
                .map_err(|reason| CourseError::BadPoint { index, reason })?;
            if points.last() != Some(&p) {
                points.push(p);
            }
        }
        if points.len() < 2 {
            return Err(CourseError::TooFewPoints(points.len()));
        }
        let length_m = points
            .windows(2)
            .map(|w| w[0].distance_m(w[1]))
            .sum::<f64>();
        if length_m <= 0.0 {
            return Err(CourseError::ZeroLength);
        }
        Ok(Course {
            points,
            length_m,
            checkpoints: Vec::new(),
        })
    }

    /// The first point.
    pub fn start(&self) -> Option<Position> {
        self.points.first().copied()
    }

    /// The last point.
    pub fn finish(&self) -> Option<Position> {
        self.points.last().copied()
    }
}

impl From<&Course> for CourseIndex {
    /// Measures the course for projections (see [`CourseIndex::from_points`]).
    fn from(course: &Course) -> CourseIndex {
        CourseIndex::from_points(&course.points)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GPX: &str = r#"<?xml version="1.0"?>
<gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1">
<trk><trkseg>
<trkpt lat="46.0" lon="15.0"></trkpt>
<trkpt lat="46.0" lon="15.0"></trkpt>
<trkpt lat="46.01" lon="15.0"></trkpt>
</trkseg></trk></gpx>"#;

    #[test]
    fn parses_tracks_and_drops_repeated_points() {
        let c = Course::from_gpx(GPX.as_bytes(), 100).unwrap();
        assert_eq!(c.points.len(), 2);
        assert!((c.length_m - 1111.9).abs() < 2.0, "{}", c.length_m);
    }

    #[test]
    fn refuses_garbage_short_and_oversized_courses() {
        assert!(matches!(
            Course::from_gpx(b"<nope", 100),
            Err(CourseError::Unreadable(_))
        ));
        assert_eq!(
            Course::from_degrees(&[(1.0, 1.0)], 100),
            Err(CourseError::TooFewPoints(1))
        );
        assert!(matches!(
            Course::from_degrees(&[(1.0, 1.0), (2.0, 2.0), (3.0, 3.0)], 2),
            Err(CourseError::TooManyPoints { .. })
        ));
        assert!(matches!(
            Course::from_degrees(&[(1.0, 1.0), (95.0, 2.0)], 10),
            Err(CourseError::BadPoint { index: 1, .. })
        ));
    }

    #[test]
    fn waypoints_become_checkpoints_on_the_first_pass_after_the_previous_one() {
        // Out and back: 0 → 2 km north → 0. A waypoint at 1 km is passed twice; in file
        // order after a turn-around waypoint it must land on the way back.
        let gpx = r#"<?xml version="1.0"?>
<gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1">
<wpt lat="46.0" lon="15.0"><name>Start</name></wpt>
<wpt lat="46.009" lon="15.0"><name>Out</name></wpt>
<wpt lat="46.018" lon="15.0001"><name>Turn</name></wpt>
<wpt lat="46.009" lon="15.0"><name>Back</name></wpt>
<trk><trkseg>
<trkpt lat="46.0" lon="15.0"></trkpt>
<trkpt lat="46.018" lon="15.0"></trkpt>
<trkpt lat="46.0" lon="15.0"></trkpt>
</trkseg></trk></gpx>"#;
        let c = Course::from_gpx(gpx.as_bytes(), 100).unwrap();
        let names: Vec<&str> = c.checkpoints.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(
            names,
            ["Out", "Turn", "Back"],
            "the start waypoint is not a split"
        );
        let km: Vec<f64> = c
            .checkpoints
            .iter()
            .map(|k| k.distance_m / 1000.0)
            .collect();
        assert!((km[0] - 1.0).abs() < 0.01, "{km:?}");
        assert!((km[1] - 2.0).abs() < 0.01, "{km:?}");
        assert!((km[2] - 3.0).abs() < 0.01, "{km:?}");
    }

    #[test]
    fn a_waypoint_far_from_the_course_is_refused_by_name() {
        let course = Course::from_degrees(&[(46.0, 15.0), (46.02, 15.0)], 10).unwrap();
        let far = Position::from_degrees(46.01, 15.01).unwrap();
        assert!(matches!(
            course.with_checkpoints(&[WaypointMark {
                name: "Lost".into(),
                position: far,
                mandatory: false,
            }]),
            Err(CourseError::CheckpointOffCourse { name, .. }) if name == "Lost"
        ));
    }

    #[test]
    fn a_real_recorded_ride_parses_with_a_plausible_length() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/gpx/out-and-back-ljubljana.gpx"
        );
        let Ok(bytes) = std::fs::read(path) else {
            panic!("shared data missing at {path}");
        };
        let c = Course::from_gpx(&bytes, 200_000).unwrap();
        assert!(c.points.len() > 100);
        assert!(
            c.length_m > 1_000.0 && c.length_m < 500_000.0,
            "{}",
            c.length_m
        );
    }
}
