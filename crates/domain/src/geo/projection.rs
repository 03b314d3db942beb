//! Where a racer is along the course: a GPS fix projected onto the course line, measured in
//! geodesic metres. The race state builds one [`CourseIndex`] per course (it is derived from the
//! `Course`, so it is rebuilt on recovery rather than journaled) and projects every fix with a
//! [`ProjectionWindow`] around the racer's last progress. Searching only that window, instead of
//! the whole course, is what keeps loops, out-and-backs and self-crossing courses from snapping a
//! racer onto another leg that merely passes close by; it also keeps a projection to the few
//! hundred segments in the window, found by binary search on cumulative distance.
//!
//! Distances along the course are geodesic (the same WGS84 sums as `Course::length_m`). The
//! closest point on a segment is found in a local tangent plane centred on the fix, which is
//! exact to well under a metre for the segments and offsets that matter (a few km) and costs one
//! cosine per projection instead of a geodesic solution per segment.

use super::grid::SegmentGrid;
use super::position::{Position, E7};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Passes of the course whose cross-track distances differ by less than this are a tie: about
/// twice what a phone's GPS cannot resolve, so between two passes this close to a fix,
/// continuity with the last progress decides rather than noise. A pass farther than this
/// beyond the nearest never wins.
pub const AMBIGUITY_M: f64 = 20.0;

/// A graded tie: within [`AMBIGUITY_M`], each metre a pass lies farther from the fix than the
/// nearest pass counts as this many metres of progress away from the last progress. A flat tie
/// would let the pass nearest the last progress win whenever it is within the band, so on a
/// hairpin, a spur or a wiggly recorded line progress would lag by up to the band's width; the
/// weight was chosen on the recorded rides in `shared/data/gpx` (fixes 50 m apart with 10 m of
/// noise): 5 to 12 all stay within 30 m, 8 keeps backward steps smallest.
pub const OFFSET_WEIGHT: f64 = 8.0;

/// A tied pass behind the last progress counts this many times its distance when breaking ties:
/// racers move forward and noise moves them back only a little, so a racer who just rounded a
/// turnaround must not be pulled back onto the outbound leg that runs beside them.
pub const BACKWARD_PENALTY: f64 = 4.0;

/// A first fix (no last progress) this close to the start region is taken there, even if another
/// part of the course passes closer: racers gather around the start, and on a loop the finish
/// lies on top of it.
pub const START_RADIUS_M: f64 = 200.0;

/// WGS84 semi-major axis in metres: the ellipsoid `Position::distance_m` measures on, so the local
/// frame's scale agrees with the geodesic distances along the course.
const WGS84_A: f64 = 6_378_137.0;

/// WGS84 flattening, for the same reason as [`WGS84_A`].
const WGS84_F: f64 = 1.0 / 298.257_223_563;

/// A full turn of longitude in 1e-7 degrees, to take the short way across the antimeridian.
const FULL_TURN_E7: i64 = 3_600_000_000;

/// Half a turn of longitude in 1e-7 degrees.
const HALF_TURN_E7: i64 = 1_800_000_000;

/// How far around the last progress a fix may plausibly be. The caller sizes it from the time
/// since the last fix and a maximum plausible speed: too small and a racer who really moved is
/// held back; too large and other legs of the course come into reach (ties still favour the
/// pass nearest the last progress, see [`AMBIGUITY_M`] and [`OFFSET_WEIGHT`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProjectionWindow {
    /// Metres before the last progress still considered: GPS noise and a racer who rode back
    /// a little must not be forced forward.
    pub behind_m: f64,
    /// Metres after the last progress considered. For a first fix, the length of the start
    /// region that is preferred.
    pub ahead_m: f64,
}

/// A fix placed on the course.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Projection {
    /// Geodesic distance along the course from the start to [`Projection::point`]: what ranks,
    /// gaps and splits are computed from.
    pub progress_m: f64,
    /// Cross-track distance in metres from the fix to [`Projection::point`]: what off-course
    /// detection compares with its threshold.
    pub offset_m: f64,
    /// Index of the segment from `points[segment]` to `points[segment + 1]` the point lies on,
    /// so a caller can tell which leg a racer was placed on.
    pub segment: usize,
    /// The closest point of the course (within the window) to the fix, for drawing the racer on
    /// the line.
    pub point: Position,
}

/// A course prepared for projection: its points and the cumulative geodesic distance at each.
/// Built once per course in O(n); 16 bytes per point, nothing per segment, because a segment's
/// local frame costs less to compute on the fly than to load from memory.
#[derive(Debug, Clone, PartialEq)]
pub struct CourseIndex {
    /// The course points in riding order, copied so the index can live beside the race state
    /// without borrowing it.
    points: Vec<Position>,
    /// `cum_m[i]` is the geodesic distance along the course from the start to `points[i]`;
    /// non-decreasing, so a distance finds its segment by binary search.
    cum_m: Vec<f64>,
    /// The segments by map cell, for distances to any part of the course; `None` for a
    /// course the grid does not take (see [`SegmentGrid::new`]), which is walked instead.
    grid: Option<SegmentGrid>,
}

/// Where a segment's unconstrained closest point fell relative to the part of it inside the
/// window; used to tell real passes of the course near the fix from segment ends that are merely
/// close because their neighbour is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clamp {
    /// Before the allowed part: distance to the fix grows along this segment.
    Low,
    /// Strictly inside: the segment's own minimum.
    Interior,
    /// After the allowed part: distance to the fix shrinks along this segment.
    High,
}

/// The closest point of one segment (limited to the window) to a fix.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    /// Segment index.
    segment: usize,
    /// Position along the segment, 0 at its start and 1 at its end.
    t: f64,
    /// Geodesic distance along the course.
    progress_m: f64,
    /// Distance to the fix in the local frame.
    offset_m: f64,
    /// Whether the window or the segment's ends cut the minimum short.
    clamp: Clamp,
}

/// A tangent plane at a fix: east and north metres from it, with the ellipsoid's radii of
/// curvature at its latitude. An equirectangular approximation: its error grows with the square
/// of the distance from the fix, so it is only ever trusted near the fix, where the answer is.
#[derive(Debug, Clone, Copy)]
struct Frame {
    /// The fix, at (0, 0).
    origin: Position,
    /// Metres per 1e-7 degree northward.
    north_per_e7: f64,
    /// Metres per 1e-7 degree eastward, at the fix's latitude.
    east_per_e7: f64,
}

impl Frame {
    /// The frame centred at `origin`.
    fn at(origin: Position) -> Frame {
        let phi = origin.lat().to_radians();
        let e2 = WGS84_F * (2.0 - WGS84_F);
        let sin = phi.sin();
        let w = (1.0 - e2 * sin * sin).sqrt();
        let meridian = WGS84_A * (1.0 - e2) / (w * w * w);
        let prime_vertical = WGS84_A / w;
        let rad_per_e7 = (1.0 / E7).to_radians();
        Frame {
            origin,
            north_per_e7: meridian * rad_per_e7,
            east_per_e7: prime_vertical * phi.cos() * rad_per_e7,
        }
    }

    /// East and north metres of `p` from the origin.
    fn xy(&self, p: Position) -> (f64, f64) {
        let dlat = i64::from(p.lat_e7) - i64::from(self.origin.lat_e7);
        let dlon = wrap_lon_e7(i64::from(p.lon_e7) - i64::from(self.origin.lon_e7));
        (
            dlon as f64 * self.east_per_e7,
            dlat as f64 * self.north_per_e7,
        )
    }
}

/// A longitude difference taken the short way round, in `-HALF_TURN_E7..HALF_TURN_E7`.
fn wrap_lon_e7(d: i64) -> i64 {
    (d + HALF_TURN_E7).rem_euclid(FULL_TURN_E7) - HALF_TURN_E7
}

/// The point a fraction `t` of the way from `a` to `b`, linear in latitude and longitude (the
/// same straight line the local frame sees), the short way across the antimeridian.
fn lerp(a: Position, b: Position, t: f64) -> Position {
    let dlat = i64::from(b.lat_e7) - i64::from(a.lat_e7);
    let dlon = wrap_lon_e7(i64::from(b.lon_e7) - i64::from(a.lon_e7));
    let lat = i64::from(a.lat_e7) + (t * dlat as f64).round() as i64;
    let lon = wrap_lon_e7(i64::from(a.lon_e7) + (t * dlon as f64).round() as i64);
    // For t in 0..=1 the latitude lies between two i32 values and the longitude was wrapped
    // into ±180°, so both conversions succeed; the fallbacks only guard a caller's bad t.
    Position {
        lat_e7: i32::try_from(lat).unwrap_or(a.lat_e7),
        lon_e7: i32::try_from(lon).unwrap_or(a.lon_e7),
    }
}

/// The distance from the origin (the fix) to the segment from `a` to `b`, in the fix's frame.
fn distance_to_segment(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (-(a.0 * dx + a.1 * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    (a.0 + t * dx).hypot(a.1 + t * dy)
}

/// How far a pass at `progress_m` is from the reference progress when breaking ties: forward
/// distances as they are, backward ones penalised (see [`BACKWARD_PENALTY`]).
fn tie_key(progress_m: f64, reference_m: f64) -> f64 {
    if progress_m >= reference_m {
        progress_m - reference_m
    } else {
        (reference_m - progress_m) * BACKWARD_PENALTY
    }
}

impl CourseIndex {
    /// Measures a course's polyline: one geodesic distance per segment. Takes the points,
    /// not a [`Course`](super::Course), so placing a course's checkpoints can use the index
    /// without the two files needing each other; `CourseIndex::from(&course)` is the usual way.
    pub fn from_points(points: &[Position]) -> CourseIndex {
        let points = points.to_vec();
        let mut cum_m = Vec::with_capacity(points.len());
        let mut total = 0.0;
        if !points.is_empty() {
            cum_m.push(0.0);
        }
        for pair in points.windows(2) {
            let d = pair[0].distance_m(pair[1]);
            // Only an unvalidated course (a point off the globe) gives a non-finite distance;
            // counting it as zero keeps `cum_m` sorted, which the binary searches rely on.
            total += if d.is_finite() && d > 0.0 { d } else { 0.0 };
            cum_m.push(total);
        }
        let grid = SegmentGrid::new(&points);
        CourseIndex {
            points,
            cum_m,
            grid,
        }
    }

    /// The distance from `fix` to the nearest point of the course between `lo_m` and `hi_m`
    /// metres along it (the whole course: `0.0, f64::INFINITY`), if one lies within
    /// `radius_m`. Costs the cells around the fix, not the stretch: it says whether a racer
    /// is near the course, or their own part of it, however long that is.
    pub fn distance_to_course(
        &self,
        fix: Position,
        lo_m: f64,
        hi_m: f64,
        radius_m: f64,
    ) -> Option<f64> {
        let segments: Vec<u32> = match &self.grid {
            Some(grid) => grid.segments_near(fix, radius_m),
            None => (0..self.points.len().saturating_sub(1))
                .filter_map(|i| u32::try_from(i).ok())
                .collect(),
        };
        let frame = Frame::at(fix);
        segments
            .into_iter()
            .filter_map(|i| {
                let i = usize::try_from(i).ok()?;
                let (start, end) = (*self.cum_m.get(i)?, *self.cum_m.get(i + 1)?);
                if end < lo_m || start > hi_m {
                    return None;
                }
                let (a, b) = (*self.points.get(i)?, *self.points.get(i + 1)?);
                Some(distance_to_segment(frame.xy(a), frame.xy(b)))
            })
            .filter(|d| *d <= radius_m)
            .min_by(f64::total_cmp)
    }

    /// Geodesic length of the course in metres.
    pub fn length_m(&self) -> f64 {
        self.cum_m.last().copied().unwrap_or(0.0)
    }

    /// Places `fix` on the course.
    ///
    /// With `last_progress_m`, only the part of the course within `window` of it is searched.
    /// Without it (a first fix), the first `window.ahead_m` metres are searched, and the whole
    /// course only if nothing there is within [`START_RADIUS_M`]. Among the passes of the course
    /// near the fix, the one with the least cross-track distance wins; passes within
    /// [`AMBIGUITY_M`] of it are a tie, won by the one nearest the last progress (forward
    /// preferred, each extra metre of offset weighted by [`OFFSET_WEIGHT`]). The answer is
    /// always within the window, however far the fix is: a large `offset_m` says the racer is
    /// off course (or the window was too small), which is the caller's to judge.
    ///
    /// `None` only for a degenerate index (fewer than two points or zero length), never for a
    /// validated `Course`.
    pub fn project(
        &self,
        fix: Position,
        last_progress_m: Option<f64>,
        window: ProjectionWindow,
    ) -> Option<Projection> {
        let total = self.length_m();
        if self.points.len() < 2 || !total.is_finite() || total <= 0.0 {
            return None;
        }
        // `max` returns the other operand for NaN, so a NaN window side counts as zero.
        let behind = window.behind_m.max(0.0);
        let ahead = window.ahead_m.max(0.0);
        match last_progress_m.filter(|p| !p.is_nan()) {
            Some(p) => {
                let p = p.max(0.0).min(total);
                let lo = (p - behind).max(0.0);
                let hi = (p + ahead).min(total);
                self.best(fix, lo, hi, p)
            }
            None => {
                let start = self.best(fix, 0.0, ahead.min(total), 0.0);
                match start {
                    Some(s) if s.offset_m <= START_RADIUS_M => Some(s),
                    _ => self.best(fix, 0.0, total, 0.0),
                }
            }
        }
    }

    /// Places `fix` on the part of the course between `lo_m` and `hi_m` metres (clamped to the
    /// course), ties going to the pass nearest `reference_m` as in [`CourseIndex::project`].
    ///
    /// For searches whose bounds are not a window around the last progress: re-acquiring a
    /// racer who left the course searches everything ahead of where they were last confirmed,
    /// and checking a candidate looks just behind it. `None` for a degenerate index or an empty
    /// or NaN range.
    pub fn project_between(
        &self,
        fix: Position,
        lo_m: f64,
        hi_m: f64,
        reference_m: f64,
    ) -> Option<Projection> {
        let total = self.length_m();
        if self.points.len() < 2 || !total.is_finite() || total <= 0.0 {
            return None;
        }
        let lo = lo_m.max(0.0).min(total);
        let hi = hi_m.max(0.0).min(total);
        if lo.is_nan() || hi.is_nan() || hi < lo {
            return None;
        }
        self.best(fix, lo, hi, reference_m.max(0.0).min(total))
    }

    /// The point `progress_m` metres along the course, clamped to its ends (NaN counts as the
    /// start), interpolated linearly within its segment. A degenerate index answers its only
    /// point, or (0, 0) when it has none.
    pub fn position_at(&self, progress_m: f64) -> Position {
        match self.points.len() {
            0 => Position {
                lat_e7: 0,
                lon_e7: 0,
            },
            1 => self.points[0],
            n => {
                let d = progress_m.max(0.0).min(self.length_m());
                let i = self
                    .cum_m
                    .partition_point(|&c| c <= d)
                    .saturating_sub(1)
                    .min(n - 2);
                let len = self.cum_m[i + 1] - self.cum_m[i];
                let t = if len > 0.0 {
                    ((d - self.cum_m[i]) / len).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                lerp(self.points[i], self.points[i + 1], t)
            }
        }
    }

    /// The segments that overlap `[lo, hi]` metres along the course (at least one when there is
    /// a segment), found by binary search so a projection never walks the rest of the course.
    fn segment_range(&self, lo: f64, hi: f64) -> Range<usize> {
        let segments = self.points.len().saturating_sub(1);
        if segments == 0 {
            return 0..0;
        }
        let first = self
            .cum_m
            .partition_point(|&c| c <= lo)
            .saturating_sub(1)
            .min(segments - 1);
        let end = self
            .cum_m
            .partition_point(|&c| c < hi)
            .max(first + 1)
            .min(segments);
        first..end
    }

    /// The closest point of segment `i`, limited to the part of it between `lo` and `hi` metres
    /// along the course. `a` and `b` are its ends in the fix's frame, so the fix is the origin;
    /// the caller passes them so each point is converted once, not once per segment it ends.
    fn candidate(&self, i: usize, a: (f64, f64), b: (f64, f64), lo: f64, hi: f64) -> Candidate {
        let (c0, c1) = (self.cum_m[i], self.cum_m[i + 1]);
        let len = c1 - c0;
        let (t_min, t_max) = if len > 0.0 {
            (
                ((lo - c0) / len).clamp(0.0, 1.0),
                ((hi - c0) / len).clamp(0.0, 1.0),
            )
        } else {
            (0.0, 0.0)
        };
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len2 = dx * dx + dy * dy;
        // Foot of the perpendicular from the origin (the fix) onto the segment's line.
        let free = if len2 > 0.0 {
            -(a.0 * dx + a.1 * dy) / len2
        } else {
            0.0
        };
        let (t, clamp) = if free <= t_min {
            (t_min, Clamp::Low)
        } else if free >= t_max {
            (t_max, Clamp::High)
        } else {
            (free, Clamp::Interior)
        };
        let (x, y) = (a.0 + t * dx, a.1 + t * dy);
        Candidate {
            segment: i,
            t,
            progress_m: c0 + t * len,
            offset_m: (x * x + y * y).sqrt(),
            clamp,
        }
    }

    /// The best pass of the course between `lo` and `hi` metres for `fix`, ties going to the pass
    /// nearest `reference_m`.
    ///
    /// Only passes, the local minima of the distance to the fix along the course, compete: the
    /// end of the segment just before the right one is nearly as close as the right one, and
    /// letting it compete would make progress lag behind every fix. A window holds only a few
    /// passes near any fix, so they are kept and weighed after the single walk over the window.
    fn best(&self, fix: Position, lo: f64, hi: f64, reference_m: f64) -> Option<Projection> {
        let frame = Frame::at(fix);
        let range = self.segment_range(lo, hi);
        let mut passes: Vec<Candidate> = Vec::with_capacity(4);
        let mut nearest: Option<Candidate> = None;
        let mut previous: Option<Clamp> = None;
        let mut a = frame.xy(*self.points.get(range.start)?);
        for i in range.clone() {
            let b = frame.xy(self.points[i + 1]);
            let c = self.candidate(i, a, b, lo, hi);
            a = b;
            if nearest.is_none_or(|n| c.offset_m < n.offset_m) {
                nearest = Some(c);
            }
            let is_pass = match c.clamp {
                Clamp::Interior => true,
                // A vertex (or the window's start) where the distance stops falling and starts
                // rising; counted on the segment after it so it is not counted twice.
                Clamp::Low => matches!(previous, None | Some(Clamp::High)),
                Clamp::High => i + 1 == range.end,
            };
            previous = Some(c.clamp);
            // Passes already beyond the band of the nearest so far can never come back into it.
            if is_pass && nearest.is_some_and(|n| c.offset_m <= n.offset_m + AMBIGUITY_M) {
                passes.push(c);
            }
        }
        let nearest = nearest?;
        let limit = nearest.offset_m + AMBIGUITY_M;
        let mut chosen: Option<(f64, Candidate)> = None;
        for c in passes.into_iter().filter(|c| c.offset_m <= limit) {
            let key = tie_key(c.progress_m, reference_m)
                + OFFSET_WEIGHT * (c.offset_m - nearest.offset_m);
            if chosen.is_none_or(|(k, best)| key < k || (key == k && c.offset_m < best.offset_m)) {
                chosen = Some((key, c));
            }
        }
        // The nearest point is itself a pass, so `chosen` is set; falling back to it only guards
        // against rounding in the pass detection.
        let c = chosen.map_or(nearest, |(_, c)| c);
        Some(Projection {
            progress_m: c.progress_m,
            offset_m: c.offset_m,
            segment: c.segment,
            point: lerp(self.points[c.segment], self.points[c.segment + 1], c.t),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::Course;
    use proptest::prelude::*;

    /// Metres per degree of latitude, near enough for building test shapes; assertions compare
    /// with geodesic distances, never with these nominal figures.
    const M_PER_DEG_LAT: f64 = 111_132.0;

    /// `p` moved roughly `east_m` and `north_m` metres.
    fn shifted(p: Position, east_m: f64, north_m: f64) -> Position {
        let lat = p.lat() + north_m / M_PER_DEG_LAT;
        let lon = p.lon() + east_m / (111_320.0 * p.lat().to_radians().cos());
        Position::from_degrees(lat, lon).unwrap()
    }

    /// A course from (east, north) metres around an origin.
    fn course_m(lat0: f64, lon0: f64, xy: &[(f64, f64)]) -> Course {
        let origin = Position::from_degrees(lat0, lon0).unwrap();
        let raw: Vec<(f64, f64)> = xy
            .iter()
            .map(|&(e, n)| {
                let p = shifted(origin, e, n);
                (p.lat(), p.lon())
            })
            .collect();
        Course::from_degrees(&raw, 100_000).unwrap()
    }

    fn window(behind_m: f64, ahead_m: f64) -> ProjectionWindow {
        ProjectionWindow { behind_m, ahead_m }
    }

    /// A deterministic xorshift generator, so noisy walks are the same on every run.
    struct Noise(u64);

    impl Noise {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }

        /// Up to `radius_m` in a random direction.
        fn jitter(&mut self, p: Position, radius_m: f64) -> Position {
            let r = radius_m * self.next();
            let a = std::f64::consts::TAU * self.next();
            shifted(p, r * a.sin(), r * a.cos())
        }
    }

    /// Whether the course itself hides where a fix at `d` is: within 20 m of the true point
    /// (twice the walk's noise) the course passes again 30–100 m earlier or later. Recorded rides
    /// have such places wherever the rider stopped (GPS drift piles up hundreds of metres of
    /// course on one spot), at spurs and at the tip of a turnaround; only timing, which a
    /// projection does not have, could tell the passes apart.
    fn locally_ambiguous(index: &CourseIndex, d: f64) -> bool {
        let frame = Frame::at(index.position_at(d));
        let mut q = (d - 100.0).max(0.0);
        while q <= (d + 100.0).min(index.length_m()) {
            let (x, y) = frame.xy(index.position_at(q));
            if (q - d).abs() > 30.0 && x.hypot(y) < 20.0 {
                return true;
            }
            q += 2.0;
        }
        false
    }

    /// Walks fixes every `step_m` along the course with up to `noise_m` of jitter, each projected
    /// with `w` from the previous progress: progress never goes back more than 10 m (noise), and
    /// is within 30 m of the truth except where the course itself hides it (see
    /// [`locally_ambiguous`]), which may excuse at most 2% of the steps.
    fn walk(index: &CourseIndex, step_m: f64, noise_m: f64, w: ProjectionWindow) {
        let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
        let mut last: Option<f64> = None;
        let steps = (index.length_m() / step_m).ceil() as usize;
        let mut excused = Vec::new();
        for k in 0..=steps {
            let d = (k as f64 * step_m).min(index.length_m());
            let fix = noise.jitter(index.position_at(d), noise_m);
            let p = index.project(fix, last, w).unwrap();
            if let Some(l) = last {
                assert!(
                    p.progress_m >= l - 10.0,
                    "went back at d={d}: {l} -> {}",
                    p.progress_m
                );
            }
            if (p.progress_m - d).abs() > 30.0 {
                assert!(
                    locally_ambiguous(index, d),
                    "at d={d} progress {} (segment {}, offset {})",
                    p.progress_m,
                    p.segment,
                    p.offset_m
                );
                excused.push((d, p.progress_m));
            }
            last = Some(p.progress_m);
        }
        assert!(excused.len() * 50 <= steps, "{excused:?} of {steps} steps");
        assert!(
            last.is_some_and(|l| l >= index.length_m() - 30.0),
            "{last:?}"
        );
    }

    fn real(name: &str) -> CourseIndex {
        let path = format!(
            "{}/../../../shared/data/gpx/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let Ok(bytes) = std::fs::read(&path) else {
            panic!("shared data missing at {path}");
        };
        CourseIndex::from(&Course::from_gpx(&bytes, 200_000).unwrap())
    }

    #[test]
    fn the_index_measures_the_course_like_the_course_does() {
        let course = course_m(46.0, 15.0, &[(0.0, 0.0), (300.0, 400.0), (300.0, 1400.0)]);
        let index = CourseIndex::from(&course);
        assert!((index.length_m() - course.length_m).abs() < 1e-6);
        assert_eq!(index.position_at(-10.0), course.points[0]);
        assert_eq!(index.position_at(f64::NAN), course.points[0]);
        assert_eq!(index.position_at(1e9), course.points[2]);
        let first_leg = course.points[0].distance_m(course.points[1]);
        let mid = index.position_at(first_leg / 2.0);
        assert!((mid.distance_m(course.points[0]) - first_leg / 2.0).abs() < 0.05);
        let later = index.position_at(first_leg + 250.0);
        assert!((later.distance_m(course.points[1]) - 250.0).abs() < 0.05);
    }

    #[test]
    fn fixes_beside_a_straight_line_project_square_onto_it() {
        // A 5 km segment along a meridian: the foot of the perpendicular is exact there.
        let course = course_m(46.0, 15.0, &[(0.0, 0.0), (0.0, 5_000.0)]);
        let index = CourseIndex::from(&course);
        for &d in &[0.0, 1.0, 777.0, 2_500.0, 4_999.0] {
            for &side in &[-30.0, 30.0, -200.0] {
                let on = index.position_at(d);
                let fix = shifted(on, side, 0.0);
                let p = index.project(fix, Some(d), window(100.0, 500.0)).unwrap();
                assert!((p.progress_m - d).abs() < 0.1, "{d} {side}: {p:?}");
                assert!((p.offset_m - fix.distance_m(on)).abs() < 0.1, "{p:?}");
                assert_eq!(p.segment, 0);
            }
        }
        // Beyond the ends, the ends.
        let past = shifted(course.points[1], 0.0, 300.0);
        let p = index
            .project(past, Some(4_900.0), window(100.0, 500.0))
            .unwrap();
        assert!((p.progress_m - index.length_m()).abs() < 1e-6);
        assert!((p.offset_m - 300.0).abs() < 2.0);
    }

    #[test]
    fn offsets_match_the_geodesic_distance_to_the_projected_point() {
        let mut noise = Noise(42);
        for &lat in &[0.0, 46.2, -33.9, 64.1] {
            for &(e, n) in &[(900.0, 0.0), (0.0, 900.0), (600.0, -700.0), (-350.0, 120.0)] {
                let course = course_m(lat, 15.0, &[(0.0, 0.0), (e, n)]);
                let index = CourseIndex::from(&course);
                for _ in 0..40 {
                    let d = index.length_m() * noise.next();
                    let fix = noise.jitter(index.position_at(d), 400.0);
                    let p = index.project(fix, None, window(0.0, 2_000.0)).unwrap();
                    let truth = fix.distance_m(p.point);
                    let tolerance = (truth * 0.01).max(0.5);
                    assert!(
                        (p.offset_m - truth).abs() <= tolerance,
                        "lat {lat}: {} vs {truth}",
                        p.offset_m
                    );
                    // And the point is the closest one: a step either way along the course
                    // is no nearer.
                    for step in [-2.0, 2.0] {
                        let q = (p.progress_m + step).clamp(0.0, index.length_m());
                        assert!(fix.distance_m(index.position_at(q)) >= truth - 0.05);
                    }
                }
            }
        }
    }

    #[test]
    fn an_out_and_back_on_one_line_never_jumps_legs() {
        // North 5 km in 500 m steps and back over exactly the same points.
        let mut xy: Vec<(f64, f64)> = (0..=10).map(|k| (0.0, f64::from(k) * 500.0)).collect();
        xy.extend((0..10).rev().map(|k| (0.0, f64::from(k) * 500.0)));
        let course = course_m(46.05, 14.5, &xy);
        let index = CourseIndex::from(&course);
        assert!(
            (index.length_m() - 2.0 * course.points[0].distance_m(course.points[10])).abs() < 1e-6
        );
        let w = window(100.0, 2_000.0);
        let mut last = index.project(course.points[0], None, w).unwrap().progress_m;
        assert!(last.abs() < 1e-6);
        let mut d = 100.0;
        while d <= index.length_m() {
            let fix = index.position_at(d);
            let p = index.project(fix, Some(last), w).unwrap();
            assert!(p.progress_m >= last, "{d}: {last} -> {}", p.progress_m);
            assert!((p.progress_m - d).abs() < 0.5, "{d}: {}", p.progress_m);
            assert_eq!(p.segment < 10, d < index.length_m() / 2.0, "{d}: {p:?}");
            last = p.progress_m;
            d += 100.0;
        }
        assert!(last > index.length_m() - 100.0);
        // With 10 m of noise, fixes 70 m apart (out of step with the turnaround) and a window
        // that always reaches the other leg; only at the tip, where both legs are one line and
        // nothing but timing could tell them apart, may a step be excused.
        walk(&index, 70.0, 10.0, window(300.0, 3_000.0));
    }

    #[test]
    fn the_end_of_a_loop_is_not_snapped_back_to_its_start() {
        // Out east 500 m, a 1 km square, and back west along the same road to the start.
        let course = course_m(
            46.23,
            15.26,
            &[
                (0.0, 0.0),
                (500.0, 0.0),
                (500.0, 1_000.0),
                (1_500.0, 1_000.0),
                (1_500.0, 0.0),
                (500.0, 0.0),
                (0.0, 0.0),
            ],
        );
        let index = CourseIndex::from(&course);
        let total = index.length_m();
        let w = window(100.0, 2_000.0);
        // A first fix at the start is at the start, though the finish is on top of it.
        let first = index.project(course.points[0], None, w).unwrap();
        assert!(first.progress_m < 1e-6 && first.segment == 0, "{first:?}");
        // Fifty metres before the finish is not fifty metres after the start.
        let fix = index.position_at(total - 50.0);
        let p = index.project(fix, Some(total - 150.0), w).unwrap();
        assert!((p.progress_m - (total - 50.0)).abs() < 0.5, "{p:?}");
        // On the line, and past it, the racer has finished.
        let p = index
            .project(course.points[0], Some(total - 50.0), w)
            .unwrap();
        assert!((p.progress_m - total).abs() < 1e-6, "{p:?}");
        let beyond = shifted(course.points[0], -20.0, 0.0);
        let p = index.project(beyond, Some(total), w).unwrap();
        assert!((p.progress_m - total).abs() < 1e-6 && (p.offset_m - 20.0).abs() < 0.5);
        walk(&index, 50.0, 10.0, w);
    }

    #[test]
    fn a_figure_eight_keeps_the_leg_it_is_on_at_the_crossing() {
        // A bow tie: the two diagonals cross at the origin.
        let course = course_m(
            45.5,
            13.7,
            &[
                (-400.0, -400.0),
                (400.0, 400.0),
                (400.0, -400.0),
                (-400.0, 400.0),
                (-400.0, -400.0),
            ],
        );
        let index = CourseIndex::from(&course);
        let crossing = shifted(course.points[0], 400.0, 400.0);
        let legs = [
            index.project(crossing, Some(0.0), window(0.0, 1_500.0)),
            index.project(crossing, Some(2_000.0), window(0.0, 1_500.0)),
        ];
        let [Some(first), Some(second)] = legs else {
            panic!("no projection: {legs:?}");
        };
        assert_eq!((first.segment, second.segment), (0, 2));
        // A window that reaches both legs: whichever leg the racer is on wins the tie.
        let wide = window(3_000.0, 3_000.0);
        let p = index
            .project(crossing, Some(first.progress_m - 30.0), wide)
            .unwrap();
        assert!(
            (p.progress_m - first.progress_m).abs() < 0.5 && p.segment == 0,
            "{p:?}"
        );
        let p = index
            .project(crossing, Some(second.progress_m - 30.0), wide)
            .unwrap();
        assert!(
            (p.progress_m - second.progress_m).abs() < 0.5 && p.segment == 2,
            "{p:?}"
        );
        // Just past the crossing on the second leg, the first leg's pass is behind: not taken.
        let p = index
            .project(crossing, Some(second.progress_m + 5.0), wide)
            .unwrap();
        assert!(
            (p.progress_m - second.progress_m).abs() < 6.0 && p.segment == 2,
            "{p:?}"
        );
        walk(&index, 25.0, 10.0, wide);
    }

    #[test]
    fn a_first_fix_prefers_the_start_region_and_falls_back_to_the_nearest() {
        // A long line that turns back so that km 6 passes 60 m from the start.
        let course = course_m(
            46.0,
            15.0,
            &[(0.0, 0.0), (0.0, 3_000.0), (60.0, 3_000.0), (60.0, -500.0)],
        );
        let index = CourseIndex::from(&course);
        let w = window(0.0, 1_000.0);
        // Between the start and the returning leg, nearer the returning leg: still the start.
        let near_start = shifted(course.points[0], 40.0, 0.0);
        let p = index.project(near_start, None, w).unwrap();
        assert!(p.progress_m < 1.0 && p.segment == 0, "{p:?}");
        // Far from the start region but beside the course: the global nearest.
        let far = shifted(course.points[0], 70.0, -400.0);
        let p = index.project(far, None, w).unwrap();
        assert_eq!(p.segment, 2);
        assert!((p.offset_m - 10.0).abs() < 1.0, "{p:?}");
    }

    #[test]
    fn degenerate_courses_project_to_nothing_and_do_not_panic() {
        let fix = Position::from_degrees(46.0, 15.0).unwrap();
        let empty = CourseIndex::from(&Course {
            points: vec![],
            length_m: 0.0,
            checkpoints: vec![],
        });
        assert_eq!(empty.project(fix, None, window(1.0, 1.0)), None);
        assert_eq!(
            empty.position_at(5.0),
            Position {
                lat_e7: 0,
                lon_e7: 0
            }
        );
        let single = CourseIndex::from(&Course {
            points: vec![fix],
            length_m: 0.0,
            checkpoints: vec![],
        });
        assert_eq!(single.project(fix, Some(0.0), window(1.0, 1.0)), None);
        assert_eq!(single.position_at(5.0), fix);
        let stacked = CourseIndex::from(&Course {
            points: vec![fix, fix],
            length_m: 0.0,
            checkpoints: vec![],
        });
        assert_eq!(stacked.project(fix, None, window(1.0, 1.0)), None);
        // Silly windows and progress are tolerated on a real course.
        let line = CourseIndex::from(&course_m(46.0, 15.0, &[(0.0, 0.0), (0.0, 1_000.0)]));
        for (last, w) in [
            (Some(f64::NAN), window(f64::NAN, f64::NAN)),
            (Some(-50.0), window(-1.0, f64::INFINITY)),
            (Some(f64::INFINITY), window(0.0, 0.0)),
        ] {
            assert!(line.project(fix, last, w).is_some());
        }
    }

    #[test]
    fn the_antimeridian_is_crossed_the_short_way() {
        let course = Course::from_degrees(&[(10.0, 179.995), (10.0, -179.995)], 10).unwrap();
        let index = CourseIndex::from(&course);
        assert!(index.length_m() < 1_200.0, "{}", index.length_m());
        let mid = index.position_at(index.length_m() / 2.0);
        assert!(mid.lon().abs() > 179.99, "{mid:?}");
        let fix = Position::from_degrees(10.001, 179.999).unwrap();
        let p = index.project(fix, None, window(0.0, 2_000.0)).unwrap();
        assert!((p.offset_m - fix.distance_m(p.point)).abs() < 0.5, "{p:?}");
        assert!(p.offset_m < 120.0, "{p:?}");
    }

    #[test]
    fn a_window_touches_only_its_own_segments() {
        // 10,000 points 10 m apart: a 2.1 km window is about 210 segments, wherever it is.
        let xy: Vec<(f64, f64)> = (0..10_000).map(|k| (0.0, f64::from(k) * 10.0)).collect();
        let index = CourseIndex::from(&course_m(46.0, 15.0, &xy));
        for &p in &[0.0, 12_345.0, 50_000.0, index.length_m()] {
            let lo = (p - 100.0).max(0.0);
            let hi = (p + 2_000.0).min(index.length_m());
            let range = index.segment_range(lo, hi);
            assert!(range.len() <= 212, "{p}: {range:?}");
            assert!(index.cum_m[range.start] <= lo && index.cum_m[range.end] >= hi);
        }
        let fix = shifted(index.position_at(50_500.0), 15.0, 0.0);
        let p = index
            .project(fix, Some(50_000.0), window(100.0, 2_000.0))
            .unwrap();
        assert!((p.progress_m - 50_500.0).abs() < 0.5, "{p:?}");
    }

    #[test]
    fn a_real_out_and_back_ride_is_followed_without_jumps() {
        let index = real("out-and-back-ljubljana.gpx");
        walk(&index, 50.0, 10.0, window(100.0, 2_000.0));
    }

    #[test]
    fn a_real_loop_ride_is_followed_without_jumps() {
        let index = real("loop-celje-resevno-2020-09-20.gpx");
        walk(&index, 50.0, 10.0, window(100.0, 2_000.0));
    }

    /// A polyline of 3–20 points within about a kilometre of a random place.
    fn polyline() -> impl Strategy<Value = Course> {
        (
            -60.0..60.0f64,
            -179.0..179.0f64,
            proptest::collection::vec((0.0..0.01f64, 0.0..0.01f64), 3..=20),
        )
            .prop_filter_map("degenerate course", |(lat, lon, offsets)| {
                let raw: Vec<(f64, f64)> =
                    offsets.iter().map(|&(a, b)| (lat + a, lon + b)).collect();
                Course::from_degrees(&raw, 100).ok()
            })
    }

    proptest! {
        /// A fix on the course, projected from just behind it, lands where it is.
        #[test]
        fn a_fix_on_the_course_projects_onto_itself(
            course in polyline(),
            fraction in 0.0..=1.0f64,
            small in 0.0..0.5f64,
            behind in 0.0..200.0f64,
            ahead in 1.0..2_000.0f64,
        ) {
            let index = CourseIndex::from(&course);
            let d = fraction * index.length_m();
            let fix = index.position_at(d);
            let p = index.project(fix, Some(d - small), window(behind, ahead));
            prop_assert!(p.is_some());
            let p = p.unwrap();
            prop_assert!((p.progress_m - d).abs() < 1.0, "{} vs {}", p.progress_m, d);
            prop_assert!(p.offset_m < 1.0, "{}", p.offset_m);
        }
    }
}
