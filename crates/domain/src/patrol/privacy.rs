//! What a citizen may learn about an officer: a coarsened position, a rounded distance and
//! a bearing to the nearest 45°. Exact figures would let anyone triangulate an officer from
//! a few readings, so everything an officer's position produces for citizens passes here.

use crate::geo::Position;
use h3o::{LatLng, Resolution};

/// How much a citizen is told; from `[patrol]` in the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Coarsening {
    /// Positions become the centre of their H3 cell at this resolution.
    pub resolution: Resolution,
    /// Distances are rounded to this many metres.
    pub distance_step_m: f64,
}

/// An officer's position, distance and bearing as a citizen sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coarse {
    /// The centre of the officer's cell at the privacy resolution.
    pub position: Position,
    /// Rounded distance, metres.
    pub distance_m: u32,
    /// Bearing rounded to 45°, 0..=315.
    pub bearing_deg: u16,
}

impl Coarsening {
    /// The coarse view of an officer at `officer` from a citizen at `citizen`, `distance_m`
    /// (exact) apart.
    pub fn view(&self, citizen: Position, officer: Position, distance_m: f64) -> Coarse {
        Coarse {
            position: self.position(officer),
            distance_m: self.distance(distance_m),
            bearing_deg: bearing_octant(super::proximity::bearing_deg(citizen, officer)),
        }
    }

    /// The centre of `at`'s cell; `at` itself if H3 refuses it (it cannot for a validated
    /// position, but a fallback that reveals more is never taken: it is the same position).
    pub fn position(&self, at: Position) -> Position {
        LatLng::new(at.lat(), at.lon())
            .ok()
            .map(|ll| LatLng::from(ll.to_cell(self.resolution)))
            .and_then(|centre| Position::from_degrees(centre.lat(), centre.lng()).ok())
            .unwrap_or(at)
    }

    /// `metres` rounded to the step (never below one step, so "right here" is not exact).
    pub fn distance(&self, metres: f64) -> u32 {
        let step = self.distance_step_m.max(1.0);
        let rounded = ((metres / step).round() * step).max(step);
        // Below u32::MAX for any distance on Earth.
        rounded.min(f64::from(u32::MAX)) as u32
    }
}

/// A bearing in degrees rounded to the nearest multiple of 45, in 0..=315.
pub fn bearing_octant(degrees: f64) -> u16 {
    if !degrees.is_finite() {
        return 0;
    }
    let octant = (degrees.rem_euclid(360.0) / 45.0).round() as u16 % 8;
    octant * 45
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coarsening() -> Coarsening {
        Coarsening {
            resolution: Resolution::Eight,
            distance_step_m: 50.0,
        }
    }

    #[test]
    fn nearby_officers_share_one_coarse_position() {
        let c = coarsening();
        let a = Position::from_degrees(48.8566, 2.3522).unwrap();
        let b = a.moved_m(20.0, 10.0);
        assert_eq!(c.position(a), c.position(b));
        assert!(a.distance_m(c.position(a)) < 1_500.0);
    }

    #[test]
    fn distances_round_to_the_step_and_never_to_zero() {
        let c = coarsening();
        assert_eq!(c.distance(0.0), 50);
        assert_eq!(c.distance(74.0), 50);
        assert_eq!(c.distance(76.0), 100);
        assert_eq!(c.distance(1_234.0), 1_250);
    }

    #[test]
    fn bearings_snap_to_octants() {
        assert_eq!(bearing_octant(0.0), 0);
        assert_eq!(bearing_octant(22.0), 0);
        assert_eq!(bearing_octant(23.0), 45);
        assert_eq!(bearing_octant(359.0), 0);
        assert_eq!(bearing_octant(-90.0), 270);
        assert_eq!(bearing_octant(f64::NAN), 0);
    }
}
