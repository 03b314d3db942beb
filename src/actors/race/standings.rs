//! Live standings as a pure state: who leads, in what order, and how far behind in time.
//!
//! Ranks: finished racers first by finish time, then by progress along the course, ties
//! going to whoever reached that point first. Gaps are time behind the leader *at the same
//! course point*: each racer keeps a passage log (time at every ~`SAMPLE_M` metres of
//! progress), and a racer at distance d at time t is `t - leader_time_at(d)` behind. This is
//! what a race commentator means by a gap, and unlike a distance gap it does not swing with
//! climbs and descents.

use crate::geo::Position;
use crate::time::UnixMillis;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// Spacing of passage-log samples; gaps are interpolated between them.
pub const SAMPLE_M: f64 = 25.0;

/// One racer's latest position in the race, as the racer's state reports it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RacerProgress {
    /// Distance along the course.
    pub progress_m: f64,
    /// Time of the fix that gave this progress.
    pub at_ms: UnixMillis,
    /// Finish time, once finished.
    pub finished_at_ms: Option<UnixMillis>,
    /// Off the course for too long.
    pub off_course: bool,
    /// Where the racer is and how fast it goes, for spectators.
    pub live: Live,
}

/// What spectators see of a racer beyond rank and gap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Live {
    /// Position at the last fix.
    pub position: Option<Position>,
    /// Recent pace along the course, m/s.
    pub speed_mps: Option<f64>,
    /// Estimated time to the finish at that pace, ms.
    pub eta_ms: Option<i64>,
}

/// A racer's entry in the standings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Entry {
    /// Latest progress.
    latest: Option<RacerProgress>,
    /// (progress, time) samples, ascending in both.
    passages: Vec<(f64, UnixMillis)>,
    /// Checkpoint passing times in course order, as the racer last reported them. Kept
    /// apart from [`RacerProgress`] so that stays `Copy` for the per-fix path; splits change
    /// a handful of times per race.
    splits_ms: Vec<UnixMillis>,
}

impl Entry {
    /// When this racer passed `distance`, interpolated between samples (the latest report
    /// counts as the last sample, since samples are spaced out).
    fn time_at(&self, distance: f64) -> Option<UnixMillis> {
        let latest = self.latest.map(|l| (l.progress_m, l.at_ms));
        let i = self.passages.partition_point(|(p, _)| *p < distance);
        let (p1, t1) = match self.passages.get(i) {
            Some(&sample) => sample,
            None => latest.filter(|(p, _)| *p >= distance)?,
        };
        let Some(&(p0, t0)) = i.checked_sub(1).and_then(|j| self.passages.get(j)) else {
            return Some(t1);
        };
        if p1 <= p0 {
            return Some(t1);
        }
        let fraction = ((distance - p0) / (p1 - p0)).clamp(0.0, 1.0);
        Some(t0 + ((t1 - t0) as f64 * fraction).round() as i64)
    }
}

/// A row of the standings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Standing {
    /// Bib number.
    pub bib: u32,
    /// 1-based rank.
    pub rank: u32,
    /// Distance along the course.
    pub progress_m: f64,
    /// Time behind the leader at the same course point (0 for the leader).
    pub gap_ms: Option<i64>,
    /// Finish time, if finished.
    pub finished_at_ms: Option<UnixMillis>,
    /// Off the course for too long.
    pub off_course: bool,
    /// Checkpoints passed so far.
    pub checkpoints_passed: u16,
    /// When the last checkpoint was passed (its split), if any.
    pub last_split_ms: Option<UnixMillis>,
    /// Position, speed and ETA.
    pub live: Live,
}

/// Standings of one race.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Standings {
    /// Entries by bib.
    entries: BTreeMap<u32, Entry>,
}

impl Standings {
    /// Records a racer's new progress. Older or non-advancing reports only refresh the
    /// finish time; the passage log only grows.
    pub fn update(&mut self, bib: u32, progress: RacerProgress) {
        let entry = self.entries.entry(bib).or_default();
        let advances = entry
            .passages
            .last()
            .is_none_or(|&(p, t)| progress.progress_m > p && progress.at_ms >= t);
        if advances {
            let far_enough = entry
                .passages
                .last()
                .is_none_or(|&(p, _)| progress.progress_m - p >= SAMPLE_M);
            if far_enough || progress.finished_at_ms.is_some() {
                entry.passages.push((progress.progress_m, progress.at_ms));
            }
        }
        if entry.latest.is_none_or(|l| progress.at_ms >= l.at_ms) {
            entry.latest = Some(progress);
        }
    }

    /// Records racer `bib`'s checkpoint splits (all of them, in course order). The racer's
    /// state only ever adds splits, so a shorter list is an older report and is ignored.
    pub fn update_splits(&mut self, bib: u32, splits_ms: &[UnixMillis]) {
        let entry = self.entries.entry(bib).or_default();
        if splits_ms.len() > entry.splits_ms.len() {
            entry.splits_ms = splits_ms.to_vec();
        }
    }

    /// Racer `bib`'s checkpoint splits in course order (empty when unknown).
    pub fn splits(&self, bib: u32) -> &[UnixMillis] {
        self.entries
            .get(&bib)
            .map_or(&[], |e| e.splits_ms.as_slice())
    }

    /// Whether racer `bib` has finished.
    pub fn has_finished(&self, bib: u32) -> bool {
        self.entries
            .get(&bib)
            .and_then(|e| e.latest)
            .is_some_and(|l| l.finished_at_ms.is_some())
    }

    /// The ranked rows, leader first. Racers with no fix yet come last, by bib.
    pub fn ranked(&self) -> Vec<Standing> {
        let mut rows: Vec<(u32, &Entry)> = self.entries.iter().map(|(b, e)| (*b, e)).collect();
        rows.sort_by(|(bib_a, a), (bib_b, b)| compare(a, b).then(bib_a.cmp(bib_b)));
        let leader = rows.first().map(|(_, e)| *e);
        rows.iter()
            .enumerate()
            .map(|(i, (bib, entry))| {
                let latest = entry.latest;
                Standing {
                    bib: *bib,
                    rank: u32::try_from(i + 1).unwrap_or(u32::MAX),
                    progress_m: latest.map_or(0.0, |l| l.progress_m),
                    gap_ms: leader.and_then(|leader| gap(leader, entry)),
                    finished_at_ms: latest.and_then(|l| l.finished_at_ms),
                    off_course: latest.is_some_and(|l| l.off_course),
                    checkpoints_passed: u16::try_from(entry.splits_ms.len()).unwrap_or(u16::MAX),
                    last_split_ms: entry.splits_ms.last().copied(),
                    live: latest.map(|l| l.live).unwrap_or_default(),
                }
            })
            .collect()
    }
}

/// Order of two entries: finished by time, then further along, then earlier there.
fn compare(a: &Entry, b: &Entry) -> Ordering {
    let (Some(la), Some(lb)) = (a.latest, b.latest) else {
        return b.latest.is_some().cmp(&a.latest.is_some());
    };
    match (la.finished_at_ms, lb.finished_at_ms) {
        (Some(fa), Some(fb)) => fa.cmp(&fb),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => lb
            .progress_m
            .total_cmp(&la.progress_m)
            .then_with(|| reached(a).cmp(&reached(b))),
    }
}

/// When an entry reached its current progress.
fn reached(entry: &Entry) -> UnixMillis {
    entry
        .latest
        .and_then(|l| entry.time_at(l.progress_m))
        .unwrap_or(UnixMillis::MAX)
}

/// Time behind `leader` at the point `entry` has reached.
fn gap(leader: &Entry, entry: &Entry) -> Option<i64> {
    let latest = entry.latest?;
    let lead = leader.latest?;
    if let (Some(f), Some(lf)) = (latest.finished_at_ms, lead.finished_at_ms) {
        return Some(f - lf);
    }
    let own = entry.time_at(latest.progress_m)?;
    Some((own - leader.time_at(latest.progress_m)?).max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(progress_m: f64, at_s: i64) -> RacerProgress {
        RacerProgress {
            progress_m,
            at_ms: at_s * 1000,
            finished_at_ms: None,
            off_course: false,
            live: Default::default(),
        }
    }

    #[test]
    fn ranks_by_progress_and_gaps_by_time_at_the_same_point() {
        let mut s = Standings::default();
        // Racer 1 rides 10 m/s; racer 2 rides the same pace 30 s later.
        for t in 0..=200 {
            s.update(1, at(10.0 * t as f64, t));
            if t >= 30 {
                s.update(2, at(10.0 * (t - 30) as f64, t));
            }
        }
        s.update(3, at(0.0, 0));
        let rows = s.ranked();
        assert_eq!(
            rows.iter().map(|r| (r.bib, r.rank)).collect::<Vec<_>>(),
            vec![(1, 1), (2, 2), (3, 3)]
        );
        assert_eq!(rows[0].gap_ms, Some(0));
        assert!(
            (rows[1].gap_ms.unwrap() - 30_000).abs() <= 1_000,
            "{:?}",
            rows[1]
        );
    }

    #[test]
    fn finishers_lead_by_finish_time_and_ties_go_to_who_got_there_first() {
        let mut s = Standings::default();
        s.update(7, at(500.0, 50));
        s.update(8, at(500.0, 40));
        assert_eq!(s.ranked()[0].bib, 8, "same point, reached earlier");
        s.update(
            9,
            RacerProgress {
                progress_m: 1000.0,
                at_ms: 90_000,
                finished_at_ms: Some(89_500),
                off_course: false,
                live: Default::default(),
            },
        );
        s.update(
            7,
            RacerProgress {
                progress_m: 1000.0,
                at_ms: 95_000,
                finished_at_ms: Some(94_000),
                off_course: false,
                live: Default::default(),
            },
        );
        let rows = s.ranked();
        assert_eq!(
            rows.iter().map(|r| r.bib).collect::<Vec<_>>(),
            vec![9, 7, 8]
        );
        assert_eq!(rows[1].gap_ms, Some(4_500));
    }

    #[test]
    fn splits_only_grow_and_show_in_the_row() {
        let mut s = Standings::default();
        s.update(1, at(300.0, 30));
        s.update_splits(1, &[10_000, 25_000]);
        s.update_splits(1, &[10_000]);
        assert_eq!(s.splits(1), &[10_000, 25_000]);
        let row = s.ranked()[0];
        assert_eq!(
            (row.checkpoints_passed, row.last_split_ms),
            (2, Some(25_000))
        );
        assert!(s.splits(99).is_empty());
    }

    #[test]
    fn stale_reports_do_not_rewind_anyone() {
        let mut s = Standings::default();
        s.update(1, at(300.0, 30));
        s.update(1, at(100.0, 10));
        assert_eq!(s.ranked()[0].progress_m, 300.0);
    }
}
