//! How often each racer's device should report: set by the server from where the racer is,
//! not fixed on the phone.
//!
//! A fix every second costs a phone battery and data all race long, yet most of a race is
//! riding alone between checkpoints, where a fix every ten seconds draws the same line on
//! the map. What must be sharp is where places are decided: the approach to a checkpoint
//! (its split), the finish, and two racers fighting for a place. So the race tells each
//! device the interval to use next: [`PaceRules::min_ms`] there, [`PaceRules::max_ms`] for a
//! racer alone on the road, [`PaceRules::cruise_ms`] otherwise. The rule reads only the
//! standings and the course, so it is the same for every transport; devices that cannot be
//! told (the HTTP apps) simply keep their own interval.

use super::standings::Standing;
use serde::{Deserialize, Serialize};

/// The bounds and distances of the pace rule (`[tracking]` `pace_*` keys).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PaceRules {
    /// The fastest interval asked for, ms: near a checkpoint, the finish or a rival.
    #[serde(rename = "pace_min_ms")]
    pub min_ms: u32,
    /// The interval for a racer in company but not in a fight, ms.
    #[serde(rename = "pace_cruise_ms")]
    pub cruise_ms: u32,
    /// The slowest interval asked for, ms: riding alone.
    #[serde(rename = "pace_max_ms")]
    pub max_ms: u32,
    /// How far before a checkpoint or the finish the fast pace starts, metres.
    #[serde(rename = "pace_near_m")]
    pub near_m: f64,
    /// A rival within this many metres (ahead or behind) is a fight for a place.
    #[serde(rename = "pace_battle_m")]
    pub battle_m: f64,
    /// Nobody within this many metres: riding alone.
    #[serde(rename = "pace_alone_m")]
    pub alone_m: f64,
}

impl PaceRules {
    /// Intervals ordered min <= cruise <= max, all at least 100 ms; distances positive and
    /// a fight closer than loneliness.
    pub fn validate(&self) -> Result<(), String> {
        if self.min_ms < 100 || self.min_ms > self.cruise_ms || self.cruise_ms > self.max_ms {
            return Err(format!(
                "tracking.pace_min_ms ({}) <= pace_cruise_ms ({}) <= pace_max_ms ({}) must \
                 hold, with pace_min_ms at least 100",
                self.min_ms, self.cruise_ms, self.max_ms
            ));
        }
        for (key, value) in [
            ("pace_near_m", self.near_m),
            ("pace_battle_m", self.battle_m),
            ("pace_alone_m", self.alone_m),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(format!(
                    "tracking.{key} must be a positive number, got {value}"
                ));
            }
        }
        if self.battle_m >= self.alone_m {
            return Err(format!(
                "tracking.pace_battle_m ({}) must be below tracking.pace_alone_m ({})",
                self.battle_m, self.alone_m
            ));
        }
        Ok(())
    }
}

/// Why a racer got its interval: shown to the racer, counted by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaceReason {
    /// Approaching a checkpoint: its split is timed from these fixes.
    Checkpoint,
    /// Approaching the finish.
    Finish,
    /// A rival is within [`PaceRules::battle_m`].
    Battle,
    /// Others around, nobody close.
    Cruise,
    /// Nobody within [`PaceRules::alone_m`].
    Alone,
    /// Finished: nothing left to time.
    Finished,
}

impl PaceReason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            PaceReason::Checkpoint => "checkpoint",
            PaceReason::Finish => "finish",
            PaceReason::Battle => "battle",
            PaceReason::Cruise => "cruise",
            PaceReason::Alone => "alone",
            PaceReason::Finished => "finished",
        }
    }
}

/// The interval a device should report at, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Milliseconds between fixes.
    pub interval_ms: u32,
    /// Why.
    pub reason: PaceReason,
}

/// Every racer's pace from the standings (any order) and the course: `course_length_m`
/// and the checkpoints' distances along it. One pass after sorting by progress, so a race
/// of thousands is cheap to pace at every tick.
pub fn paces(
    standings: &[Standing],
    course_length_m: f64,
    checkpoints_m: &[f64],
    rules: &PaceRules,
) -> Vec<(u32, Pace)> {
    let mut riding: Vec<&Standing> = standings
        .iter()
        .filter(|s| s.finished_at_ms.is_none())
        .collect();
    riding.sort_by(|a, b| a.progress_m.total_cmp(&b.progress_m));
    let mut out: Vec<(u32, Pace)> = standings
        .iter()
        .filter(|s| s.finished_at_ms.is_some())
        .map(|s| {
            let pace = Pace {
                interval_ms: rules.max_ms,
                reason: PaceReason::Finished,
            };
            (s.bib, pace)
        })
        .collect();
    for (i, row) in riding.iter().enumerate() {
        let behind = i
            .checked_sub(1)
            .and_then(|j| riding.get(j))
            .map(|r| row.progress_m - r.progress_m);
        let ahead = riding.get(i + 1).map(|r| r.progress_m - row.progress_m);
        let nearest = match (behind, ahead) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let to_finish = course_length_m - row.progress_m;
        let to_checkpoint = checkpoints_m
            .iter()
            .map(|cp| cp - row.progress_m)
            .filter(|d| *d >= 0.0)
            .fold(f64::INFINITY, f64::min);
        let (interval_ms, reason) = if to_finish <= rules.near_m {
            (rules.min_ms, PaceReason::Finish)
        } else if to_checkpoint <= rules.near_m {
            (rules.min_ms, PaceReason::Checkpoint)
        } else if nearest.is_some_and(|d| d <= rules.battle_m) {
            (rules.min_ms, PaceReason::Battle)
        } else if nearest.is_none_or(|d| d > rules.alone_m) {
            (rules.max_ms, PaceReason::Alone)
        } else {
            (rules.cruise_ms, PaceReason::Cruise)
        };
        out.push((
            row.bib,
            Pace {
                interval_ms,
                reason,
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::race::standings::Live;
    use proptest::prelude::*;

    const RULES: PaceRules = PaceRules {
        min_ms: 1_000,
        cruise_ms: 3_000,
        max_ms: 10_000,
        near_m: 300.0,
        battle_m: 30.0,
        alone_m: 500.0,
    };

    fn row(bib: u32, progress_m: f64, finished: bool) -> Standing {
        Standing {
            bib,
            rank: bib,
            progress_m,
            gap_ms: None,
            finished_at_ms: finished.then_some(1),
            off_course: false,
            cut_suspected: false,
            checkpoints_passed: 0,
            last_split_ms: None,
            live: Live::default(),
        }
    }

    fn reason_of(out: &[(u32, Pace)], bib: u32) -> PaceReason {
        out.iter().find(|(b, _)| *b == bib).unwrap().1.reason
    }

    #[test]
    fn places_are_timed_sharply_and_lonely_road_slowly() {
        let rows = [
            row(1, 9_800.0, false), // 200 m from the finish
            row(2, 4_900.0, false), // 100 m before the checkpoint at 5 km
            row(3, 2_000.0, false), // fighting with 4
            row(4, 2_020.0, false),
            row(5, 3_000.0, false), // 980 m behind 2, 1 km ahead of 4: alone
            row(6, 7_000.0, false),
            row(7, 7_200.0, false), // 200 m from 6: company, no fight
            row(8, 10_000.0, true),
        ];
        let out = paces(&rows, 10_000.0, &[5_000.0], &RULES);
        assert_eq!(out.len(), rows.len());
        assert_eq!(reason_of(&out, 1), PaceReason::Finish);
        assert_eq!(reason_of(&out, 2), PaceReason::Checkpoint);
        assert_eq!(reason_of(&out, 3), PaceReason::Battle);
        assert_eq!(reason_of(&out, 4), PaceReason::Battle);
        assert_eq!(reason_of(&out, 5), PaceReason::Alone);
        assert_eq!(reason_of(&out, 7), PaceReason::Cruise);
        assert_eq!(reason_of(&out, 8), PaceReason::Finished);
    }

    #[test]
    fn a_lone_racer_on_the_course_is_alone_and_bad_rules_are_named() {
        let out = paces(&[row(1, 100.0, false)], 10_000.0, &[], &RULES);
        assert_eq!(out[0].1.interval_ms, RULES.max_ms);
        let mut bad = RULES;
        bad.min_ms = 20_000;
        assert!(bad.validate().unwrap_err().contains("pace_min_ms"));
        let mut bad = RULES;
        bad.battle_m = 600.0;
        assert!(bad.validate().unwrap_err().contains("pace_battle_m"));
        RULES.validate().unwrap();
    }

    proptest! {
        /// Every racer gets exactly one pace, always within the bounds.
        #[test]
        fn every_racer_gets_one_pace_within_bounds(
            progress in proptest::collection::vec((0.0f64..12_000.0, any::<bool>()), 0..60),
        ) {
            let rows: Vec<Standing> = progress
                .iter()
                .enumerate()
                .map(|(i, (p, f))| row(i as u32 + 1, *p, *f))
                .collect();
            let out = paces(&rows, 10_000.0, &[2_500.0, 5_000.0], &RULES);
            prop_assert_eq!(out.len(), rows.len());
            let mut bibs: Vec<u32> = out.iter().map(|(b, _)| *b).collect();
            bibs.sort_unstable();
            bibs.dedup();
            prop_assert_eq!(bibs.len(), rows.len());
            for (_, pace) in out {
                prop_assert!(pace.interval_ms >= RULES.min_ms && pace.interval_ms <= RULES.max_ms);
            }
        }
    }
}
