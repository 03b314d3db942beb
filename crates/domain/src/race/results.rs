//! Results of a race, derived from its roster and standings: pure.
//!
//! As published results are: finishers ranked 1..n by finish time; while the race is live,
//! racers still out on the course ranked provisionally after them by position. Once the race
//! is over, the racers who did not finish (DNF, by distance covered), were disqualified (DSQ)
//! or never started (DNS) follow without a rank, each with a reason a person can read. A
//! disqualified racer is never ranked, live or not. Times are from the race's start time (the
//! gun), so a racer's time is what the clock at the line shows.

use super::standings::Standing;
use super::state::{Race, RaceStatus};
use crate::racer::{Incidents, OffCourseEpisode, SuspectedCut};
use crate::time::UnixMillis;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// How a racer's race ended (or stands). Variants are only ever appended (a stored or
/// encoded status keeps its position).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    /// Crossed the finish line.
    Finished,
    /// Still out on the course (the race is live), or waiting for the start.
    Racing,
    /// Did not finish: started, but the race is over.
    Dnf,
    /// Did not start: no accepted fix.
    Dns,
    /// Disqualified (a missed mandatory checkpoint, a confirmed course cut): listed with the
    /// reason, never ranked.
    Dsq,
}

/// One row of the results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    /// 1-based place: finishers by time, then (while live) racers on the course by position.
    /// `None` for DNF, DSQ and DNS, which published results list without a place, and for
    /// racers who have no position yet.
    pub rank: Option<u32>,
    /// Bib number.
    pub bib: u32,
    /// Name.
    pub name: String,
    /// Team.
    pub team: Option<String>,
    /// Finish time minus the race's start time, for finishers.
    pub time_ms: Option<i64>,
    /// Course length over time, for finishers, in km/h.
    pub avg_speed_kmh: Option<f64>,
    /// Distance covered, metres.
    pub distance_m: f64,
    /// Time from the gun at each checkpoint passed, in course order.
    pub splits_ms: Vec<i64>,
    /// How it ended.
    pub status: ResultStatus,
    /// Why an unranked row is unranked, in words for the results page and the racer's mail
    /// ("did not finish: 42.3 of 80.0 km when the race closed"); `None` for ranked rows.
    pub reason: Option<String>,
    /// Spells off the course that raised the flag, oldest first: organisers look here
    /// first when a result is disputed.
    pub off_course: Vec<OffCourseEpisode>,
    /// Suspected course cuts with the stretch skipped, for the organiser to judge.
    pub cuts: Vec<SuspectedCut>,
}

/// Results of `race` given its current `standings` (leader first), each racer's checkpoint
/// passing times (`splits_of(bib)`, in course order) and whether a racer is disqualified
/// (`disqualified_of(bib)`: the reason, in words, if so).
pub fn results<'s>(
    race: &Race,
    standings: &[Standing],
    splits_of: impl Fn(u32) -> &'s [UnixMillis],
    incidents_of: impl Fn(u32) -> &'s Incidents,
    disqualified_of: impl Fn(u32) -> Option<String>,
) -> Vec<ResultRow> {
    let over = race.status.is_terminal();
    let gun: UnixMillis = race.start_at_ms;
    let course_km = race.course.length_m / 1000.0;
    let mut rows: Vec<ResultRow> = Vec::with_capacity(race.roster.len());
    // Racers with a position: everyone else in the roster never sent one.
    let mut positioned: HashSet<u32> = HashSet::with_capacity(standings.len());
    for s in standings {
        let Some(entry) = race.roster.get(&s.bib) else {
            continue;
        };
        if !positioned.insert(s.bib) {
            continue;
        }
        let disqualified = disqualified_of(s.bib);
        let (status, reason) = match (disqualified, s.finished_at_ms, over) {
            (Some(why), _, _) => (ResultStatus::Dsq, Some(why)),
            (None, Some(_), _) => (ResultStatus::Finished, None),
            (None, None, false) => (ResultStatus::Racing, None),
            (None, None, true) => (
                ResultStatus::Dnf,
                Some(format!(
                    "did not finish: {:.1} of {course_km:.1} km when the race closed",
                    s.progress_m / 1000.0
                )),
            ),
        };
        // A disqualified racer's time is not a result: it counts for no winning time.
        let time_ms = s
            .finished_at_ms
            .map(|f| f - gun)
            .filter(|t| *t > 0 && status == ResultStatus::Finished);
        rows.push(ResultRow {
            rank: None,
            bib: s.bib,
            name: entry.name.clone(),
            team: entry.team.clone(),
            time_ms,
            avg_speed_kmh: time_ms.map(|t| course_km / (t as f64 / 3_600_000.0)),
            distance_m: s.progress_m,
            splits_ms: splits_of(s.bib).iter().map(|t| t - gun).collect(),
            status,
            reason,
            off_course: incidents_of(s.bib).episodes.clone(),
            cuts: incidents_of(s.bib).cuts.clone(),
        });
    }
    for entry in race.roster.values() {
        if positioned.contains(&entry.bib) {
            continue;
        }
        let (status, reason) = match disqualified_of(entry.bib) {
            Some(why) => (ResultStatus::Dsq, Some(why)),
            None if race.status == RaceStatus::Scheduled => (ResultStatus::Racing, None),
            None => (
                ResultStatus::Dns,
                Some("did not start: no position received".to_owned()),
            ),
        };
        rows.push(ResultRow {
            rank: None,
            bib: entry.bib,
            name: entry.name.clone(),
            team: entry.team.clone(),
            time_ms: None,
            avg_speed_kmh: None,
            distance_m: 0.0,
            splits_ms: Vec::new(),
            status,
            reason,
            off_course: Vec::new(),
            cuts: Vec::new(),
        });
    }
    // Ranked rows keep the standings' order (finish time, then position); the unranked
    // follow by kind, DNF by distance (the sort is stable, so ties keep standings order).
    rows.sort_by(|a, b| {
        group(a).cmp(&group(b)).then_with(|| match a.status {
            ResultStatus::Dnf | ResultStatus::Dsq => b.distance_m.total_cmp(&a.distance_m),
            _ => std::cmp::Ordering::Equal,
        })
    });
    let mut place = 0u32;
    for row in &mut rows {
        let placed = match row.status {
            ResultStatus::Finished => true,
            // Provisionally, and only with a position: a racer waiting for the start has none.
            ResultStatus::Racing => positioned.contains(&row.bib),
            ResultStatus::Dnf | ResultStatus::Dns | ResultStatus::Dsq => false,
        };
        if placed {
            place = place.saturating_add(1);
            row.rank = Some(place);
        }
    }
    rows
}

/// Where a row goes in the results: finishers, racers on the course, then the unranked kinds
/// in the order published results list them.
fn group(row: &ResultRow) -> u8 {
    match row.status {
        ResultStatus::Finished => 0,
        ResultStatus::Racing => 1,
        ResultStatus::Dnf => 2,
        ResultStatus::Dsq => 3,
        ResultStatus::Dns => 4,
    }
}

/// Figures about a race as a whole, derived from its results.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RaceStats {
    /// Registered racers.
    pub entrants: u32,
    /// Racers with at least one accepted fix.
    pub starters: u32,
    /// Racers who crossed the finish line.
    pub finishers: u32,
    /// Started but did not finish (the race is over).
    pub dnf: u32,
    /// Never started.
    pub dns: u32,
    /// Disqualified: counted apart from DNF, as published results do.
    pub dsq: u32,
    /// The winner's time, ms.
    pub winning_time_ms: Option<i64>,
    /// The middle finisher's time (lower middle for an even count), ms.
    pub median_time_ms: Option<i64>,
    /// The best average speed of a finisher, km/h.
    pub fastest_avg_speed_kmh: Option<f64>,
    /// Distance covered by all racers together, metres.
    pub total_distance_m: f64,
}

/// Statistics of a race from its result rows.
pub fn statistics(rows: &[ResultRow]) -> RaceStats {
    let count = |status: ResultStatus| {
        u32::try_from(rows.iter().filter(|r| r.status == status).count()).unwrap_or(u32::MAX)
    };
    let mut times: Vec<i64> = rows.iter().filter_map(|r| r.time_ms).collect();
    times.sort_unstable();
    let entrants = u32::try_from(rows.len()).unwrap_or(u32::MAX);
    let dns = count(ResultStatus::Dns);
    RaceStats {
        entrants,
        starters: entrants - dns,
        finishers: count(ResultStatus::Finished),
        dnf: count(ResultStatus::Dnf),
        dns,
        dsq: count(ResultStatus::Dsq),
        winning_time_ms: times.first().copied(),
        median_time_ms: times.get(times.len().saturating_sub(1) / 2).copied(),
        fastest_avg_speed_kmh: rows
            .iter()
            .filter_map(|r| r.avg_speed_kmh)
            .max_by(f64::total_cmp),
        total_distance_m: rows.iter().map(|r| r.distance_m).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clean record, for rows whose incidents do not matter.
    static NO_INCIDENTS: Incidents = Incidents {
        episodes: Vec::new(),
        cuts: Vec::new(),
    };
    use crate::geo::Course;
    use crate::ids::RaceId;
    use crate::race::state::{RaceCommand, RaceLimits, RaceState, RacerEntry};

    fn race(status_after_start: Option<RaceCommand>) -> Race {
        let limits = RaceLimits {
            max_name_chars: 50,
            max_course_points: 10,
            max_racers: 10,
        };
        let id = RaceId::parse("r").unwrap();
        let mut s = RaceState::default();
        let course = Course::from_degrees(&[(46.0, 15.0), (46.09, 15.0)], 10).unwrap();
        let racers = (1..=3)
            .map(|bib| RacerEntry {
                bib,
                name: format!("R{bib}"),
                team: None,
                email: None,
            })
            .collect();
        let mut commands = vec![
            RaceCommand::Create {
                name: "T".into(),
                course,
                start_at_ms: 1_000_000_000_000,
                cutoff_at_ms: None,
            },
            RaceCommand::RegisterRacers { racers },
            RaceCommand::Start,
        ];
        commands.extend(status_after_start);
        for c in commands {
            for e in s.handle(&id, c, 0, limits).unwrap() {
                s.apply(&e);
            }
        }
        s.race.unwrap()
    }

    /// Results with no splits and a clean record for everyone.
    fn plain(
        race: &Race,
        standings: &[Standing],
        disqualified_of: impl Fn(u32) -> Option<String>,
    ) -> Vec<ResultRow> {
        results(race, standings, |_| &[], |_| &NO_INCIDENTS, disqualified_of)
    }

    /// Each row's place, bib and status: what the tests are about.
    fn summary(rows: &[ResultRow]) -> Vec<(Option<u32>, u32, ResultStatus)> {
        rows.iter().map(|r| (r.rank, r.bib, r.status)).collect()
    }

    fn standing(bib: u32, rank: u32, progress_m: f64, finished_after_ms: Option<i64>) -> Standing {
        Standing {
            bib,
            rank,
            progress_m,
            gap_ms: None,
            finished_at_ms: finished_after_ms.map(|t| 1_000_000_000_000 + t),
            off_course: false,
            cut_suspected: false,
            checkpoints_passed: 0,
            last_split_ms: None,
            live: Default::default(),
        }
    }

    #[test]
    fn finishers_then_dnf_then_dns_with_times_from_the_gun() {
        let race = race(Some(RaceCommand::Finish));
        let rows = results(
            &race,
            &[
                standing(2, 1, 10_000.0, Some(1_800_000)),
                standing(1, 2, 4_000.0, None),
            ],
            |bib| if bib == 2 { &[1_000_000_600_000] } else { &[] },
            |_| &NO_INCIDENTS,
            |_| None,
        );
        assert_eq!(
            summary(&rows),
            vec![
                (Some(1), 2, ResultStatus::Finished),
                (None, 1, ResultStatus::Dnf),
                (None, 3, ResultStatus::Dns)
            ]
        );
        assert_eq!(rows[0].reason, None);
        assert_eq!(
            rows[1].reason.as_deref(),
            Some("did not finish: 4.0 of 10.0 km when the race closed")
        );
        assert_eq!(
            rows[2].reason.as_deref(),
            Some("did not start: no position received")
        );
        assert_eq!(rows[0].time_ms, Some(1_800_000));
        assert_eq!(
            rows[0].splits_ms,
            vec![600_000],
            "splits count from the gun"
        );
        let stats = statistics(&rows);
        assert_eq!(
            (
                stats.entrants,
                stats.starters,
                stats.finishers,
                stats.dnf,
                stats.dns,
                stats.dsq
            ),
            (3, 2, 1, 1, 1, 0)
        );
        assert_eq!(stats.winning_time_ms, Some(1_800_000));
        assert_eq!(stats.median_time_ms, Some(1_800_000));
        assert!((stats.total_distance_m - 14_000.0).abs() < 1e-9);
        let speed = rows[0].avg_speed_kmh.unwrap();
        assert!(
            (speed - race.course.length_m / 1000.0 * 2.0).abs() < 1e-9,
            "{speed}"
        );
        assert_eq!(rows[1].time_ms, None);
    }

    #[test]
    fn while_live_unfinished_racers_are_racing() {
        let race = race(None);
        let rows = plain(
            &race,
            &[
                standing(2, 1, 900.0, Some(60_000)),
                standing(1, 2, 100.0, None),
            ],
            |_| None,
        );
        assert_eq!(
            summary(&rows),
            vec![
                (Some(1), 2, ResultStatus::Finished),
                (Some(2), 1, ResultStatus::Racing),
                (None, 3, ResultStatus::Dns)
            ],
            "racers on the course are placed provisionally after the finishers"
        );
        assert_eq!(rows[1].reason, None);
    }

    #[test]
    fn before_the_start_nobody_is_placed() {
        let mut race = race(None);
        race.status = RaceStatus::Scheduled;
        let rows = plain(&race, &[], |_| None);
        assert!(rows
            .iter()
            .all(|r| r.rank.is_none() && r.status == ResultStatus::Racing && r.reason.is_none()));
    }

    #[test]
    fn once_over_dnf_by_distance_then_dsq_then_dns_all_unranked() {
        let race = race(Some(RaceCommand::Finish));
        let rows = plain(
            &race,
            &[
                standing(3, 1, 10_000.0, Some(1_700_000)),
                standing(1, 2, 10_000.0, Some(1_800_000)),
                standing(2, 3, 6_500.0, None),
            ],
            |bib| (bib == 3).then(|| "disqualified: missed checkpoint CP2".to_owned()),
        );
        assert_eq!(
            summary(&rows),
            vec![
                (Some(1), 1, ResultStatus::Finished),
                (None, 2, ResultStatus::Dnf),
                (None, 3, ResultStatus::Dsq),
            ],
            "the first across the line was disqualified: the next finisher wins"
        );
        assert_eq!(
            rows[2].reason.as_deref(),
            Some("disqualified: missed checkpoint CP2")
        );
        assert_eq!(rows[2].time_ms, None, "a disqualified time is no result");
        assert_eq!(rows[2].distance_m, 10_000.0);
        let stats = statistics(&rows);
        assert_eq!(
            (stats.finishers, stats.dnf, stats.dsq, stats.dns),
            (1, 1, 1, 0)
        );
        assert_eq!(stats.winning_time_ms, Some(1_800_000));
    }

    #[test]
    fn dnf_rows_go_by_distance_and_a_racer_without_a_position_can_be_disqualified() {
        let race = race(Some(RaceCommand::Finish));
        let rows = plain(
            &race,
            &[standing(2, 1, 700.0, None), standing(1, 2, 2_500.0, None)],
            |bib| (bib == 3).then(|| "disqualified: no tracker carried".to_owned()),
        );
        assert_eq!(
            summary(&rows),
            vec![
                (None, 1, ResultStatus::Dnf),
                (None, 2, ResultStatus::Dnf),
                (None, 3, ResultStatus::Dsq),
            ]
        );
        assert_eq!(
            rows[1].reason.as_deref(),
            Some("did not finish: 0.7 of 10.0 km when the race closed")
        );
    }
}
