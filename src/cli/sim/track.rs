//! One racer's fixes (pure): the ride at that racer's offset and pace, stamped with device
//! times from the race's start and scattered by its phone's GPS noise, made one fix at a time.
//!
//! How it fits: each racer task (`racer`) sends what its [`RacerTrack`] yields when
//! it falls due; the ride comes from [`super::ride`], the plan from [`super::plan`], the noise
//! from [`super::rng`].

use super::plan::RacerPlan;
use super::ride::Ride;
use super::rng::SplitMix64;
use crate::net::protocol::WireFix;
use std::sync::Arc;

/// Race time (ms after the gun) at which a racer with `offset_ms` and `pace` reaches the
/// point recorded `elapsed_ms` into the ride. The device stamps its fix with the race's start
/// time plus this.
pub fn race_ms(offset_ms: i64, elapsed_ms: i64, pace: f64) -> i64 {
    offset_ms + (elapsed_ms as f64 / pace).round() as i64
}

/// One fix and when, in race time, it is due.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scheduled {
    /// Ms after the gun: decides when the fix is sent (divided by the speedup).
    pub race_ms: i64,
    /// The fix as the phone sends it.
    pub fix: WireFix,
}

/// A racer's fixes, made one at a time so 10,000 racers do not each hold a copy of the ride.
#[derive(Debug, Clone)]
pub struct RacerTrack {
    /// The shared ride.
    ride: Arc<Ride>,
    /// This racer.
    plan: RacerPlan,
    /// The race's start time (the gun), ms since the epoch.
    start_at_ms: i64,
    /// Next point of the ride.
    next: usize,
    /// This racer's noise.
    noise: SplitMix64,
    /// Device time of the previous fix.
    last_at_ms: Option<i64>,
}

impl RacerTrack {
    /// The fixes of `plan` riding `ride` in a race that starts at `start_at_ms`.
    pub fn new(ride: Arc<Ride>, plan: RacerPlan, start_at_ms: i64) -> RacerTrack {
        RacerTrack {
            ride,
            plan,
            start_at_ms,
            next: 0,
            noise: SplitMix64::new(plan.noise_seed),
            last_at_ms: None,
        }
    }
}

impl Iterator for RacerTrack {
    type Item = Scheduled;

    fn next(&mut self) -> Option<Scheduled> {
        let point = *self.ride.points.get(self.next)?;
        self.next += 1;
        let race_ms = race_ms(self.plan.offset_ms, point.elapsed_ms, self.plan.pace);
        let mut at_ms = self.start_at_ms.saturating_add(race_ms);
        // Scaling can round two close points to the same millisecond, and the server ignores
        // a fix that is not newer than the last one.
        if let Some(last) = self.last_at_ms {
            at_ms = at_ms.max(last + 1);
        }
        self.last_at_ms = Some(at_ms);
        let n = self.plan.noise_m;
        let (east, north) = (self.noise.range(-n, n), self.noise.range(-n, n));
        let p = point.position.moved_m(east, north);
        Some(Scheduled {
            race_ms,
            fix: WireFix {
                at_ms,
                lat_e7: p.lat_e7,
                lon_e7: p.lon_e7,
                // What the phone believes its error is, as phones report it.
                accuracy_dm: (n * 10.0).round() as u32,
                speed_cmps: None,
                elevation_dm: point.elevation_dm,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::ride::fixtures::{straight, T0};
    use super::*;
    use crate::geo::Position;

    #[test]
    fn device_time_is_the_gun_plus_offset_plus_recorded_time_over_pace() {
        assert_eq!(race_ms(0, 0, 1.0), 0);
        assert_eq!(race_ms(30_000, 3_600_000, 1.0), 3_630_000);
        assert_eq!(race_ms(30_000, 3_600_000, 1.2), 3_030_000);
        assert_eq!(race_ms(0, 1_000, 0.8), 1_250);

        let ride = Arc::new(Ride::from_samples(&straight(50, 10.0, Some(2_000))).unwrap());
        let plan = RacerPlan {
            bib: 3,
            offset_ms: 45_000,
            pace: 1.25,
            noise_m: 0.0,
            noise_seed: 9,
        };
        let fixes: Vec<Scheduled> = RacerTrack::new(Arc::clone(&ride), plan, T0).collect();
        assert_eq!(fixes.len(), ride.points.len());
        assert_eq!(fixes[0].fix.at_ms, T0 + 45_000);
        assert_eq!(fixes[0].race_ms, 45_000);
        // Point 10 was recorded 20 s in; 25 % faster makes it 16 s.
        assert_eq!(fixes[10].fix.at_ms, T0 + 45_000 + 16_000);
        assert_eq!(fixes[10].fix.elevation_dm, Some(2370));
        assert!(fixes.windows(2).all(|w| w[1].fix.at_ms > w[0].fix.at_ms));
    }

    #[test]
    fn device_times_stay_strictly_increasing_when_rounding_would_merge_them() {
        // Points 1 ms apart at a pace that rounds several of them to the same millisecond.
        let ride = Arc::new(Ride::from_samples(&straight(40, 0.01, Some(1))).unwrap());
        let plan = RacerPlan {
            bib: 1,
            offset_ms: 0,
            pace: 3.0,
            noise_m: 0.0,
            noise_seed: 1,
        };
        let at: Vec<i64> = RacerTrack::new(ride, plan, T0)
            .map(|s| s.fix.at_ms)
            .collect();
        assert!(at.windows(2).all(|w| w[1] > w[0]), "{at:?}");
    }

    #[test]
    fn noise_stays_within_the_racers_error_and_differs_between_racers() {
        let ride = Arc::new(Ride::from_samples(&straight(100, 10.0, Some(1_000))).unwrap());
        let plan = |seed| RacerPlan {
            bib: 1,
            offset_ms: 0,
            pace: 1.0,
            noise_m: 4.0,
            noise_seed: seed,
        };
        let a: Vec<Scheduled> = RacerTrack::new(Arc::clone(&ride), plan(1), T0).collect();
        let b: Vec<Scheduled> = RacerTrack::new(Arc::clone(&ride), plan(2), T0).collect();
        let mut moved = 0;
        for (s, p) in a.iter().zip(&ride.points) {
            let at = Position {
                lat_e7: s.fix.lat_e7,
                lon_e7: s.fix.lon_e7,
            };
            let d = at.distance_m(p.position);
            assert!(d <= 4.0 * 2f64.sqrt() + 0.05, "{d}");
            moved += usize::from(d > 0.5);
            assert_eq!(s.fix.accuracy_dm, 40);
        }
        assert!(moved > 80, "noise moves most fixes: {moved}");
        assert_ne!(a, b);
        let again: Vec<Scheduled> = RacerTrack::new(ride, plan(1), T0).collect();
        assert_eq!(a, again, "same seed, same noise");
    }
}
