//! A position on Earth as the wire and the journal store it: latitude and longitude in
//! 1e-7 degree integers (≈ 1.1 cm at the equator), which encode as small varints and compare
//! exactly, unlike floats.

use geo::{Distance, Geodesic, Point};
use serde::{Deserialize, Serialize};

/// Degrees to the fixed-point unit.
pub const E7: f64 = 10_000_000.0;
/// Mean Earth radius (IUGG), for the local tangent plane.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// A latitude/longitude pair in 1e-7 degrees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    /// Latitude × 1e7, in −900,000,000 ..= 900,000,000.
    pub lat_e7: i32,
    /// Longitude × 1e7, in −1,800,000,000 ..= 1,800,000,000.
    pub lon_e7: i32,
}

impl Position {
    /// Converts degrees, refusing values outside the globe or not finite.
    pub fn from_degrees(lat: f64, lon: f64) -> Result<Position, String> {
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return Err(format!("latitude {lat} is outside -90..=90"));
        }
        if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
            return Err(format!("longitude {lon} is outside -180..=180"));
        }
        // In range by the checks above, so the casts cannot saturate.
        Ok(Position {
            lat_e7: (lat * E7).round() as i32,
            lon_e7: (lon * E7).round() as i32,
        })
    }

    /// Checks a position that arrived already in fixed point.
    pub fn validate(self) -> Result<Position, String> {
        Position::from_degrees(self.lat(), self.lon())
    }

    /// Latitude in degrees.
    pub fn lat(self) -> f64 {
        f64::from(self.lat_e7) / E7
    }

    /// Longitude in degrees.
    pub fn lon(self) -> f64 {
        f64::from(self.lon_e7) / E7
    }

    /// As a geo point (x = longitude, y = latitude).
    pub fn point(self) -> Point<f64> {
        Point::new(self.lon(), self.lat())
    }

    /// Metres east and north from `self` to `to` in the tangent plane at `self`: exact
    /// enough over the few hundred metres finish lines and run-outs span. Across the
    /// anti-meridian the short way round is meant.
    pub fn offset_m(self, to: Position) -> (f64, f64) {
        let mut dlon = to.lon() - self.lon();
        if dlon > 180.0 {
            dlon -= 360.0;
        } else if dlon < -180.0 {
            dlon += 360.0;
        }
        let east = dlon.to_radians() * self.lat().to_radians().cos() * EARTH_RADIUS_M;
        let north = (to.lat() - self.lat()).to_radians() * EARTH_RADIUS_M;
        (east, north)
    }

    /// This position moved `east_m` and `north_m` metres; unmoved if that would leave the
    /// globe's ranges (only at a pole or the anti-meridian can a few metres do that).
    pub fn moved_m(self, east_m: f64, north_m: f64) -> Position {
        let lat = self.lat() + (north_m / EARTH_RADIUS_M).to_degrees();
        let cos = self.lat().to_radians().cos().max(1e-6);
        let lon = self.lon() + (east_m / (EARTH_RADIUS_M * cos)).to_degrees();
        Position::from_degrees(lat, lon).unwrap_or(self)
    }

    /// Geodesic (WGS84 ellipsoid) distance in metres.
    pub fn distance_m(self, other: Position) -> f64 {
        Geodesic.distance(self.point(), other.point())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degrees_round_trip_within_fixed_point_precision() {
        let p = Position::from_degrees(46.2309, 15.2604).unwrap();
        assert_eq!(p.lat_e7, 462_309_000);
        assert!((p.lon() - 15.2604).abs() < 1e-7);
    }

    #[test]
    fn out_of_range_and_nan_are_refused() {
        assert!(Position::from_degrees(91.0, 0.0).is_err());
        assert!(Position::from_degrees(0.0, -180.5).is_err());
        assert!(Position::from_degrees(f64::NAN, 0.0).is_err());
        assert!(Position {
            lat_e7: i32::MAX,
            lon_e7: 0
        }
        .validate()
        .is_err());
    }

    #[test]
    fn one_degree_of_latitude_is_about_111_km() {
        let a = Position::from_degrees(0.0, 0.0).unwrap();
        let b = Position::from_degrees(1.0, 0.0).unwrap();
        assert!((a.distance_m(b) - 110_574.0).abs() < 5.0);
    }
}
