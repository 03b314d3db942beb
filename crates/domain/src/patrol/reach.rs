//! How close two people must be, pure: a citizen may ask an on-duty officer to connect only
//! within the nearby radius (they could not have seen each other otherwise), and the
//! officer may accept only once the two stand within `patrol.in_person_m` of each other.
//!
//! The facade and the officer's session measure nothing themselves: they pass the two
//! positions they know and the configured distance, and answer with what is decided here.

use crate::error::{ErrorCode, Rejection};
use crate::geo::Position;

/// Whether a citizen at `citizen` may ask `officer` (at `officer_at`) to connect: within
/// `radius_m`. Returns how far apart they are, which the officer is shown.
pub fn may_ask(
    citizen: Position,
    officer: &str,
    officer_at: Position,
    radius_m: f64,
) -> Result<f64, Rejection> {
    let apart = citizen.distance_m(officer_at);
    if apart > radius_m {
        return Err(Rejection::new(
            ErrorCode::TooFar,
            format!(
                "officer {officer} is {apart:.0} m away; only officers within {radius_m:.0} m can be asked"
            ),
        ));
    }
    Ok(apart)
}

/// Whether an officer at `me` and a citizen at `them` are close enough to connect in
/// person: both positions known and at most `in_person_m` apart. A refusal leaves the
/// request open, since the two may still walk up to each other.
pub fn in_person(
    me: Option<Position>,
    them: Option<Position>,
    in_person_m: f64,
) -> Result<f64, Rejection> {
    let (Some(me), Some(them)) = (me, them) else {
        return Err(Rejection::new(
            ErrorCode::TooFar,
            "both positions must be known to connect in person (the request stays open)",
        ));
    };
    let apart = me.distance_m(them);
    if apart > in_person_m {
        return Err(Rejection::new(
            ErrorCode::TooFar,
            format!(
                "you are {apart:.0} m apart; a connection needs at most {in_person_m:.0} m (the request stays open)"
            ),
        ));
    }
    Ok(apart)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(lat_e7: i32, lon_e7: i32) -> Position {
        Position { lat_e7, lon_e7 }
    }

    /// About 11 m north per 1_000 units of 1e-7 degree.
    const HERE: (i32, i32) = (515_000_000, -1_000_000);

    #[test]
    fn a_citizen_asks_only_officers_within_the_radius() {
        let citizen = at(HERE.0, HERE.1);
        let near = at(HERE.0 + 10_000, HERE.1);
        let apart = may_ask(citizen, "o1", near, 500.0).unwrap();
        assert!((apart - 111.0).abs() < 2.0, "{apart}");
        let far = at(HERE.0 + 100_000, HERE.1);
        let refused = may_ask(citizen, "o1", far, 500.0).unwrap_err();
        assert_eq!(refused.code, ErrorCode::TooFar);
        assert_eq!(
            refused.message,
            "officer o1 is 1113 m away; only officers within 500 m can be asked"
        );
    }

    #[test]
    fn connecting_needs_both_positions_within_the_in_person_distance() {
        let me = at(HERE.0, HERE.1);
        let close = at(HERE.0 + 1_000, HERE.1);
        assert!(in_person(Some(me), Some(close), 30.0).unwrap() < 30.0);
        let refused = in_person(Some(me), Some(at(HERE.0 + 10_000, HERE.1)), 30.0).unwrap_err();
        assert_eq!(refused.code, ErrorCode::TooFar);
        assert_eq!(
            refused.message,
            "you are 111 m apart; a connection needs at most 30 m (the request stays open)"
        );
        for (a, b) in [(None, Some(close)), (Some(me), None), (None, None)] {
            let refused = in_person(a, b, 30.0).unwrap_err();
            assert_eq!(refused.code, ErrorCode::TooFar);
            assert!(refused.message.contains("both positions must be known"));
        }
    }

    proptest! {
        /// The rules agree with the distance: exactly the pairs within the limit pass, in
        /// either order, and the distance they report is the measured one.
        #[test]
        fn within_the_limit_is_exactly_what_passes(
            dlat in -50_000i32..50_000,
            dlon in -50_000i32..50_000,
            limit in 1.0f64..800.0,
        ) {
            let a = at(HERE.0, HERE.1);
            let b = at(HERE.0 + dlat, HERE.1 + dlon);
            let apart = a.distance_m(b);
            prop_assert_eq!(in_person(Some(a), Some(b), limit).is_ok(), apart <= limit);
            prop_assert_eq!(in_person(Some(b), Some(a), limit).is_ok(), b.distance_m(a) <= limit);
            prop_assert_eq!(may_ask(a, "o", b, limit).ok(), (apart <= limit).then_some(apart));
        }
    }
}
