//! Results of a race, derived from its roster and standings: pure.
//!
//! Finishers rank by finish time; then racers who started but did not finish (DNF once the
//! race is over, "racing" while it is live) by distance; then racers with no accepted fix
//! (DNS). Times are from the race's start time (the gun), so a racer's time is what the
//! clock at the line shows.

use super::standings::Standing;
use super::state::{Race, RaceStatus};
use crate::time::UnixMillis;
use serde::{Deserialize, Serialize};

/// How a racer's race ended (or stands).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    /// Crossed the finish line.
    Finished,
    /// Still out on the course (the race is live).
    Racing,
    /// Did not finish: started, but the race is over.
    Dnf,
    /// Did not start: no accepted fix.
    Dns,
}

/// One row of the results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    /// 1-based position in the results.
    pub rank: u32,
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
}

/// Results of `race` given its current `standings` (leader first) and each racer's
/// checkpoint passing times (`splits_of(bib)`, in course order).
pub fn results<'s>(
    race: &Race,
    standings: &[Standing],
    splits_of: impl Fn(u32) -> &'s [UnixMillis],
) -> Vec<ResultRow> {
    let over = race.status.is_terminal();
    let gun: UnixMillis = race.start_at_ms;
    let mut rows: Vec<ResultRow> = Vec::with_capacity(race.roster.len());
    for s in standings {
        let Some(entry) = race.roster.get(&s.bib) else {
            continue;
        };
        let time_ms = s.finished_at_ms.map(|f| f - gun).filter(|t| *t > 0);
        let status = match (s.finished_at_ms, over) {
            (Some(_), _) => ResultStatus::Finished,
            (None, false) => ResultStatus::Racing,
            (None, true) => ResultStatus::Dnf,
        };
        rows.push(ResultRow {
            rank: 0,
            bib: s.bib,
            name: entry.name.clone(),
            team: entry.team.clone(),
            time_ms,
            avg_speed_kmh: time_ms
                .map(|t| race.course.length_m / 1000.0 / (t as f64 / 3_600_000.0)),
            distance_m: s.progress_m,
            splits_ms: splits_of(s.bib).iter().map(|t| t - gun).collect(),
            status,
        });
    }
    for entry in race.roster.values() {
        if !rows.iter().any(|r| r.bib == entry.bib) {
            rows.push(ResultRow {
                rank: 0,
                bib: entry.bib,
                name: entry.name.clone(),
                team: entry.team.clone(),
                time_ms: None,
                avg_speed_kmh: None,
                distance_m: 0.0,
                splits_ms: Vec::new(),
                status: if race.status == RaceStatus::Scheduled {
                    ResultStatus::Racing
                } else {
                    ResultStatus::Dns
                },
            });
        }
    }
    for (i, row) in rows.iter_mut().enumerate() {
        row.rank = u32::try_from(i + 1).unwrap_or(u32::MAX);
    }
    rows
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
    use crate::actors::race::state::{RaceCommand, RaceLimits, RaceState, RacerEntry};
    use crate::geo::Course;
    use crate::ids::RaceId;

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

    fn standing(bib: u32, rank: u32, progress_m: f64, finished_after_ms: Option<i64>) -> Standing {
        Standing {
            bib,
            rank,
            progress_m,
            gap_ms: None,
            finished_at_ms: finished_after_ms.map(|t| 1_000_000_000_000 + t),
            off_course: false,
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
        );
        let summary: Vec<_> = rows.iter().map(|r| (r.rank, r.bib, r.status)).collect();
        assert_eq!(
            summary,
            vec![
                (1, 2, ResultStatus::Finished),
                (2, 1, ResultStatus::Dnf),
                (3, 3, ResultStatus::Dns)
            ]
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
                stats.dns
            ),
            (3, 2, 1, 1, 1)
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
        let rows = results(&race, &[standing(1, 1, 100.0, None)], |_| &[]);
        assert_eq!(rows[0].status, ResultStatus::Racing);
        assert_eq!(rows[2].status, ResultStatus::Dns);
    }
}
