//! Who the simulated racers are (pure): each one's bib, start offset, pace and phone, drawn
//! from the run's seed so the field spreads out and overtakes instead of riding in lockstep.
//!
//! How it fits: the `sim race` command (`race`) plans the field once;
//! [`super::track`] turns a plan and the ride into that racer's fixes; [`super::faults`]
//! converts race-time durations to the ride's clock with a plan's pace.

use super::rng::SplitMix64;

/// Each racer rides this much slower or faster than the recording (factor on speed), so the
/// field spreads out and overtakes instead of riding in lockstep.
pub(crate) const PACE_RANGE: (f64, f64) = (0.85, 1.15);
/// Each racer's GPS error, in metres to each side on each axis: phones differ, and a few
/// metres of scatter is what a live tracker must cope with.
const NOISE_RANGE_M: (f64, f64) = (1.0, 5.0);

/// What makes one simulated racer different from the others.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RacerPlan {
    /// Bib number; the racer's token subject.
    pub bib: u32,
    /// When this racer sets off after the gun, in ms of race time.
    pub offset_ms: i64,
    /// Speed relative to the recording (1.1 = 10 % faster).
    pub pace: f64,
    /// GPS error of this racer's phone, metres to each side on each axis.
    pub noise_m: f64,
    /// Seeds this racer's own noise, so racers do not share the same scatter.
    pub noise_seed: u64,
}

/// `count` racers from `first_bib`, with offsets in `0..=spread_ms`, all drawn from `seed`.
pub fn plan_racers(count: u32, first_bib: u32, spread_ms: i64, seed: u64) -> Vec<RacerPlan> {
    let mut rng = SplitMix64::new(seed);
    let spread_ms = spread_ms.max(0);
    (0..count)
        .map(|i| RacerPlan {
            bib: first_bib.saturating_add(i),
            offset_ms: ((rng.unit() * (spread_ms as f64 + 1.0)).floor() as i64).min(spread_ms),
            pace: rng.range(PACE_RANGE.0, PACE_RANGE.1),
            noise_m: rng.range(NOISE_RANGE_M.0, NOISE_RANGE_M.1),
            noise_seed: rng.next_u64(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_reproducible_from_the_seed_and_within_their_ranges() {
        let a = plan_racers(200, 7, 3_000_000, 42);
        assert_eq!(a, plan_racers(200, 7, 3_000_000, 42));
        assert_ne!(a, plan_racers(200, 7, 3_000_000, 43));
        assert_eq!(a.first().unwrap().bib, 7);
        assert_eq!(a.last().unwrap().bib, 206);
        for p in &a {
            assert!((0..=3_000_000).contains(&p.offset_ms), "{p:?}");
            assert!((0.85..1.15).contains(&p.pace), "{p:?}");
            assert!((1.0..5.0).contains(&p.noise_m), "{p:?}");
        }
        // Spread over the window, not bunched: both halves get racers.
        let early = a.iter().filter(|p| p.offset_ms < 1_500_000).count();
        assert!((60..=140).contains(&early), "{early}");
        // A mass start.
        assert!(plan_racers(50, 1, 0, 1).iter().all(|p| p.offset_ms == 0));
        // The noise streams differ between racers.
        let seeds: std::collections::HashSet<u64> = a.iter().map(|p| p.noise_seed).collect();
        assert_eq!(seeds.len(), a.len());
    }
}
