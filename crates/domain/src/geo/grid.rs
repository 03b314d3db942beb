//! The course's segments bucketed by map cell, so "how far is this fix from any part of the
//! course" costs a few cells instead of a walk over the whole course.
//!
//! Tracking asks it of every fix that is off the course near the racer: a racer far from
//! every part of the course (a detour, a lost phone, a hostile device) is answered from the
//! cells around the fix, and only a fix near some part of the course pays for the searches
//! along it that could place the racer there. Built once per course with the
//! [`CourseIndex`](super::CourseIndex) that owns it.

use super::position::{Position, E7};
use std::collections::HashMap;

/// Side of a cell in metres, at least, in both directions: a few segments of a recorded ride
/// per cell, and a search radius of a few hundred metres touches a handful of cells.
pub const CELL_M: f64 = 250.0;

/// Most cells one segment may be filed under; a course with a longer segment (thousands of
/// kilometres in one straight line) is not worth a grid, and searches walk it instead.
const MAX_CELLS_PER_SEGMENT: i64 = 4_096;

/// Metres per degree of latitude, rounded down so a cell is never shorter than [`CELL_M`].
const M_PER_DEG: f64 = 110_574.0;

/// Segment numbers by cell.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentGrid {
    /// Cell height in 1e-7 degrees of latitude.
    cell_lat_e7: i64,
    /// Cell width in 1e-7 degrees of longitude: wide enough to be [`CELL_M`] at the course's
    /// most poleward point, so nearer the equator cells are only wider.
    cell_lon_e7: i64,
    /// Segment `i` (from point `i` to `i + 1`) is filed under every cell its bounding box
    /// touches.
    cells: HashMap<(i64, i64), Vec<u32>>,
}

impl SegmentGrid {
    /// Files the segments between consecutive `points`. `None` when the course crosses the
    /// antimeridian or has a segment too long to file (see [`MAX_CELLS_PER_SEGMENT`]): its
    /// searches then walk the course.
    pub fn new(points: &[Position]) -> Option<SegmentGrid> {
        let max_abs_lat = points.iter().map(|p| p.lat().abs()).fold(0.0, f64::max);
        let cos = max_abs_lat.to_radians().cos().max(0.01);
        let cell_lat_e7 = (CELL_M / M_PER_DEG * E7).ceil() as i64;
        let cell_lon_e7 = (CELL_M / (M_PER_DEG * cos) * E7).ceil() as i64;
        let mut grid = SegmentGrid {
            cell_lat_e7,
            cell_lon_e7,
            cells: HashMap::new(),
        };
        for (i, pair) in points.windows(2).enumerate() {
            let (a, b) = (pair[0], pair[1]);
            if (i64::from(a.lon_e7) - i64::from(b.lon_e7)).abs() > 1_800_000_000 {
                return None;
            }
            let (lat0, lat1) = minmax(grid.row(a.lat_e7), grid.row(b.lat_e7));
            let (lon0, lon1) = minmax(grid.column(a.lon_e7), grid.column(b.lon_e7));
            if (lat1 - lat0 + 1) * (lon1 - lon0 + 1) > MAX_CELLS_PER_SEGMENT {
                return None;
            }
            let segment = u32::try_from(i).ok()?;
            for row in lat0..=lat1 {
                for column in lon0..=lon1 {
                    grid.cells.entry((row, column)).or_default().push(segment);
                }
            }
        }
        Some(grid)
    }

    /// The segments filed in the cells within `radius_m` of `p`, each once, ascending: every
    /// segment that passes within `radius_m` of `p` is among them.
    pub fn segments_near(&self, p: Position, radius_m: f64) -> Vec<u32> {
        let radius = radius_m.max(0.0);
        let rows = (radius / CELL_M).ceil() as i64 + 1;
        // Cells are narrower in metres the farther from the equator; measured at the fix.
        let m_per_column =
            self.cell_lon_e7 as f64 / E7 * M_PER_DEG * p.lat().to_radians().cos().max(0.01);
        let columns = ((radius / m_per_column).ceil() as i64 + 1).min(4 * MAX_CELLS_PER_SEGMENT);
        let (row, column) = (self.row(p.lat_e7), self.column(p.lon_e7));
        let mut found: Vec<u32> = Vec::new();
        for r in row - rows..=row + rows {
            for c in column - columns..=column + columns {
                if let Some(segments) = self.cells.get(&(r, c)) {
                    found.extend_from_slice(segments);
                }
            }
        }
        found.sort_unstable();
        found.dedup();
        found
    }

    /// The row of cells a latitude lies in.
    fn row(&self, lat_e7: i32) -> i64 {
        i64::from(lat_e7).div_euclid(self.cell_lat_e7)
    }

    /// The column of cells a longitude lies in.
    fn column(&self, lon_e7: i32) -> i64 {
        i64::from(lon_e7).div_euclid(self.cell_lon_e7)
    }
}

/// The pair in ascending order.
fn minmax(a: i64, b: i64) -> (i64, i64) {
    (a.min(b), a.max(b))
}
