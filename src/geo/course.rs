//! A race course: the ordered points racers follow, parsed from GPX and measured
//! geodesically. Validation lives here so every way of creating a race (CLI, protocol,
//! recovery) applies the same rules.

use super::position::Position;
use serde::{Deserialize, Serialize};

/// Why a GPX document is not a usable course.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
}

/// A validated course.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Course {
    /// Points in riding order, consecutive duplicates removed.
    pub points: Vec<Position>,
    /// Geodesic length in metres, the sum of the legs between points.
    pub length_m: f64,
}

impl Course {
    /// Parses a GPX document: the points of every track segment in order, or, for a file with
    /// no tracks, its routes. Waypoints alone are not a course.
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
        Course::from_degrees(&raw, max_points)
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
        Ok(Course { points, length_m })
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
    fn a_real_recorded_ride_parses_with_a_plausible_length() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/data/gpx/out-and-back-ljubljana.gpx"
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
