//! Whether a racer's own record disqualifies them: pure.
//!
//! A finisher must have passed every mandatory checkpoint by riding. A checkpoint whose
//! distance lies in the stretch of a credited suspected cut was skipped, not passed: under
//! `tracking.cut_rule = "flag"` the progress past it counts, so the rule is applied here,
//! when results are drawn up. (Under `"hold"` a cutter is never credited past the cut, so
//! they never finish without going back.) Suspected cuts alone do not disqualify: they are
//! flagged for the organiser, whose decision is theirs.

use crate::geo::Checkpoint;
use crate::race::state::Race;
use crate::racer::Incidents;

/// Why racer with `incidents` is disqualified on a course with `checkpoints`, if they are:
/// only finishers are (a racer who did not finish is listed DNF, which says enough).
pub fn disqualification(
    checkpoints: &[Checkpoint],
    incidents: &Incidents,
    finished: bool,
) -> Option<String> {
    if !finished {
        return None;
    }
    let missed: Vec<String> = checkpoints
        .iter()
        .filter(|c| c.mandatory)
        .filter_map(|c| {
            let cut = incidents
                .cuts
                .iter()
                .find(|cut| cut.skipped(c.distance_m))?;
            Some(format!(
                "{} (skipped {:.1}–{:.1} km)",
                c.name,
                cut.from_m / 1000.0,
                cut.to_m / 1000.0
            ))
        })
        .collect();
    match missed.len() {
        0 => None,
        1 => Some(format!("missed mandatory checkpoint {}", missed[0])),
        _ => Some(format!(
            "missed mandatory checkpoints {}",
            missed.join(", ")
        )),
    }
}

/// Why `bib` is disqualified from `race`, if they are: the organiser's decision wins over
/// what the record implies; otherwise a finisher who skipped a mandatory checkpoint is.
pub fn verdict(race: &Race, bib: u32, incidents: &Incidents, finished: bool) -> Option<String> {
    if let Some(reason) = race.disqualified.get(&bib) {
        return Some(format!("disqualified: {reason}"));
    }
    disqualification(&race.course.checkpoints, incidents, finished)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::Position;
    use crate::racer::SuspectedCut;

    fn checkpoint(name: &str, distance_m: f64, mandatory: bool) -> Checkpoint {
        Checkpoint {
            name: name.into(),
            position: Position::from_degrees(46.0, 15.0).unwrap(),
            distance_m,
            mandatory,
        }
    }

    fn cut(from_m: f64, to_m: f64, held: bool) -> SuspectedCut {
        SuspectedCut {
            at_ms: 0,
            from_m,
            to_m,
            held,
        }
    }

    #[test]
    fn a_finisher_who_skipped_a_mandatory_checkpoint_is_disqualified_with_its_name() {
        let course = [
            checkpoint("Bridge", 2_000.0, false),
            checkpoint("Summit", 5_000.0, true),
            checkpoint("Hut", 9_000.0, true),
        ];
        let record = Incidents {
            episodes: Vec::new(),
            cuts: vec![cut(1_500.0, 6_200.0, false)],
        };
        assert_eq!(
            disqualification(&course, &record, true).as_deref(),
            Some("missed mandatory checkpoint Summit (skipped 1.5–6.2 km)")
        );
        assert_eq!(
            disqualification(&course, &record, false),
            None,
            "DNF says enough"
        );
        let both = Incidents {
            episodes: Vec::new(),
            cuts: vec![cut(1_500.0, 6_200.0, false), cut(8_000.0, 9_500.0, false)],
        };
        assert!(disqualification(&course, &both, true)
            .unwrap()
            .starts_with("missed mandatory checkpoints Summit"));
    }

    #[test]
    fn optional_checkpoints_held_cuts_and_clean_rides_disqualify_nobody() {
        let course = [
            checkpoint("Bridge", 2_000.0, false),
            checkpoint("Summit", 5_000.0, true),
        ];
        let skipped_optional = Incidents {
            episodes: Vec::new(),
            cuts: vec![cut(1_000.0, 3_000.0, false)],
        };
        assert_eq!(disqualification(&course, &skipped_optional, true), None);
        let held = Incidents {
            episodes: Vec::new(),
            cuts: vec![cut(4_000.0, 7_000.0, true)],
        };
        assert_eq!(disqualification(&course, &held, true), None);
        assert_eq!(disqualification(&course, &Incidents::default(), true), None);
    }
}
