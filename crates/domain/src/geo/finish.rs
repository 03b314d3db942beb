//! The finish line: a line across the course at its last point, perpendicular to the last
//! leg. A racer finishes by crossing it from the course side, not by coming near it, so a
//! racer who stops a few metres short, or who passes the finish point on a loop course
//! early in the race, has not finished.
//!
//! Geometry is done in a local tangent plane (metres east/north of the finish point), which
//! is exact enough within the few hundred metres a crossing spans.

use super::course::Course;
use super::position::Position;

/// How far back along the course the last leg's direction is taken from, so a final GPX
/// point a few centimetres from the one before cannot set the line's angle.
const DIRECTION_BASE_M: f64 = 20.0;

/// A finish line across the end of a course.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FinishLine {
    /// The course's last point: the middle of the line.
    finish: Position,
    /// Unit vector (east, north) of the direction of travel over the line.
    direction: (f64, f64),
    /// Half the line's width: crossings farther than this to the side do not count.
    half_width_m: f64,
}

impl FinishLine {
    /// The line at the end of `course`, `half_width_m` to each side.
    pub fn from_course(course: &Course, half_width_m: f64) -> Option<FinishLine> {
        let finish = course.finish()?;
        // Walk back until the leg is long enough to give a stable direction.
        let base = course
            .points
            .iter()
            .rev()
            .skip(1)
            .find(|p| p.distance_m(finish) >= DIRECTION_BASE_M)
            .or_else(|| course.points.iter().rev().nth(1))?;
        let (east, north) = finish.offset_m(*base);
        let norm = (east * east + north * north).sqrt();
        if norm <= f64::EPSILON {
            return None;
        }
        // `base` lies behind the finish: travel runs from it to the finish.
        Some(FinishLine {
            finish,
            direction: (-east / norm, -north / norm),
            half_width_m,
        })
    }

    /// Signed distance of `p` along the direction of travel (negative before the line) and
    /// its distance to the side of the course's axis, both in metres.
    pub fn along_and_across(&self, p: Position) -> (f64, f64) {
        let (east, north) = self.finish.offset_m(p);
        let along = east * self.direction.0 + north * self.direction.1;
        let across = (east * self.direction.1 - north * self.direction.0).abs();
        (along, across)
    }

    /// Where between `from` and `to` (0.0 ..= 1.0) the move crosses the line forwards within
    /// its width, if it does. A move that starts exactly on the line does not cross it again.
    pub fn crossing(&self, from: Position, to: Position) -> Option<f64> {
        let (a0, c0) = self.along_and_across(from);
        let (a1, c1) = self.along_and_across(to);
        if !(a0 < 0.0 && a1 >= 0.0) {
            return None;
        }
        let fraction = -a0 / (a1 - a0);
        let across = c0 + (c1 - c0) * fraction;
        (across <= self.half_width_m).then_some(fraction.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn north_course() -> Course {
        Course::from_degrees(&[(46.0, 15.0), (46.01, 15.0)], 10).unwrap()
    }

    fn at(lat: f64, lon: f64) -> Position {
        Position::from_degrees(lat, lon).unwrap()
    }

    #[test]
    fn crossing_forwards_within_the_width_counts_and_interpolates() {
        let line = FinishLine::from_course(&north_course(), 15.0).unwrap();
        let before = at(46.0099, 15.0);
        let after = at(46.0101, 15.0);
        let f = line.crossing(before, after).unwrap();
        assert!((f - 0.5).abs() < 0.01, "{f}");
    }

    #[test]
    fn coming_near_passing_beside_or_going_backwards_does_not_count() {
        let line = FinishLine::from_course(&north_course(), 15.0).unwrap();
        assert_eq!(
            line.crossing(at(46.0098, 15.0), at(46.00999, 15.0)),
            None,
            "stopped short"
        );
        assert_eq!(
            line.crossing(at(46.0101, 15.0), at(46.0099, 15.0)),
            None,
            "backwards"
        );
        assert_eq!(
            line.crossing(at(46.0099, 15.001), at(46.0101, 15.001)),
            None,
            "77 m to the side"
        );
        let (along, across) = line.along_and_across(at(46.0101, 15.0));
        assert!(
            (along - 11.1).abs() < 0.2 && across < 0.01,
            "{along} {across}"
        );
    }

    #[test]
    fn a_tiny_last_leg_does_not_set_the_direction() {
        let course =
            Course::from_degrees(&[(46.0, 15.0), (46.01, 15.0), (46.01, 15.000001)], 10).unwrap();
        let line = FinishLine::from_course(&course, 15.0).unwrap();
        assert!(line
            .crossing(at(46.0099, 15.0), at(46.0101, 15.0))
            .is_some());
    }
}
