//! Live standings as a pure state: who leads, in what order, and how far behind in time.
//!
//! Ranks: finished racers first by finish time, then by progress along the course, ties
//! going to whoever reached that point first. Gaps are time behind the leader *at the same
//! course point*: each racer keeps a passage log (time at every ~`SAMPLE_M` metres of
//! progress), and a racer at distance d at time t is `t - leader_time_at(d)` behind. This is
//! what a race commentator means by a gap, and unlike a distance gap it does not swing with
//! climbs and descents.
//!
//! Gaps are computed for one instant, the moment the standings are read (a spectator tick,
//! a request, a replay step): a racer last seen at distance d is `now - leader_time_at(d)`
//! behind, not `t - leader_time_at(d)` for the time t of its own last fix. Computed per fix,
//! a racer whose phone reported long ago kept the small gap of that moment and could show
//! less time behind than a racer ranked ahead of it; computed for one instant, the leader's
//! passage time only grows along the course, so a racer further back is never shown closer
//! in time. Rank order and gap order agree on every read.

use crate::geo::Position;
use crate::racer::Incidents;
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
    /// Off-course episodes and suspected cuts, as the racer last reported them; apart from
    /// [`RacerProgress`] for the same reason as the splits.
    incidents: Incidents,
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
    /// Time behind the leader at the same course point, for the instant the row was computed
    /// (0 for the leader; whole seconds, rounded up, for racers on the course; the exact
    /// finish-time difference between finishers).
    pub gap_ms: Option<i64>,
    /// Finish time, if finished.
    pub finished_at_ms: Option<UnixMillis>,
    /// Off the course for too long.
    pub off_course: bool,
    /// A suspected course cut is on the racer's record: for the organiser to judge.
    pub cut_suspected: bool,
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

    /// Records racer `bib`'s off-course episodes and suspected cuts. A racer reports them
    /// in order and its record only grows, so the latest report replaces the previous one.
    pub fn update_incidents(&mut self, bib: u32, incidents: &Incidents) {
        let entry = self.entries.entry(bib).or_default();
        if entry.incidents != *incidents {
            entry.incidents = incidents.clone();
        }
    }

    /// Racer `bib`'s off-course episodes and suspected cuts (empty when unknown).
    pub fn incidents(&self, bib: u32) -> &Incidents {
        static NONE: Incidents = Incidents {
            episodes: Vec::new(),
            cuts: Vec::new(),
        };
        self.entries.get(&bib).map_or(&NONE, |e| &e.incidents)
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

    /// The ranked rows as of `now_ms`, leader first. Racers with no fix yet come last, by
    /// bib.
    ///
    /// Gaps are for that instant (see the module documentation), and never for an instant
    /// before what the standings already know: a phone's clock may run ahead of the server's,
    /// and a replay's clock may sit between two fixes, so the instant is at least the newest
    /// time any racer reported. That keeps every gap non-negative and every racer still on
    /// the course at least as far behind as the finishers ranked ahead of it.
    pub fn ranked(&self, now_ms: UnixMillis) -> Vec<Standing> {
        let mut rows: Vec<(u32, &Entry)> = self.entries.iter().map(|(b, e)| (*b, e)).collect();
        rows.sort_by(|(bib_a, a), (bib_b, b)| compare(a, b).then(bib_a.cmp(bib_b)));
        let leader = rows.first().copied();
        let instant = self
            .entries
            .values()
            .filter_map(newest_time)
            .fold(now_ms, UnixMillis::max);
        rows.iter()
            .enumerate()
            .map(|(i, (bib, entry))| {
                let latest = entry.latest;
                Standing {
                    bib: *bib,
                    rank: u32::try_from(i + 1).unwrap_or(u32::MAX),
                    progress_m: latest.map_or(0.0, |l| l.progress_m),
                    gap_ms: leader.and_then(|(leader_bib, leader)| {
                        if leader_bib == *bib {
                            latest.map(|_| 0)
                        } else {
                            gap(leader, entry, instant)
                        }
                    }),
                    finished_at_ms: latest.and_then(|l| l.finished_at_ms),
                    off_course: latest.is_some_and(|l| l.off_course),
                    cut_suspected: entry.incidents.cut_suspected(),
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

/// The newest time an entry knows of: its latest fix, its finish, its last passage. Its
/// passage times never exceed it (the latest report is never older than a sample).
fn newest_time(entry: &Entry) -> Option<UnixMillis> {
    let latest = entry.latest?;
    Some(
        [
            latest.finished_at_ms,
            entry.passages.last().map(|&(_, t)| t),
        ]
        .into_iter()
        .flatten()
        .fold(latest.at_ms, UnixMillis::max),
    )
}

/// When the leader passed distance `d`. Beyond what its log covers (a finished leader's
/// last sample can lie short of a racer who has not crossed the line yet, or a stale report
/// left its latest behind its log) it is the newest time the leader knows, which keeps the
/// result growing with `d`. A finished leader passed every point by its finish, so that caps
/// it: a racer still on the course is then at least `instant - finish` behind, never less
/// than a finisher.
fn leader_time_at(leader: &Entry, d: f64) -> Option<UnixMillis> {
    let newest = newest_time(leader)?;
    let passed = leader.time_at(d).unwrap_or(newest).min(newest);
    Some(match leader.latest.and_then(|l| l.finished_at_ms) {
        Some(finish) => passed.min(finish),
        None => passed,
    })
}

/// Time behind `leader` at `instant`: finishers by finish time, everyone else by how long
/// ago the leader passed the point they have reached.
fn gap(leader: &Entry, entry: &Entry, instant: UnixMillis) -> Option<i64> {
    let latest = entry.latest?;
    let lead = leader.latest?;
    if let (Some(f), Some(lf)) = (latest.finished_at_ms, lead.finished_at_ms) {
        return Some(f.saturating_sub(lf).max(0));
    }
    let passed = leader_time_at(leader, latest.progress_m)?;
    Some(whole_seconds_up(instant.saturating_sub(passed).max(0)))
}

/// A gap of a racer still on the course, in whole seconds rounded up.
///
/// Such a gap grows with the clock, so unrounded it would change every tick and every row
/// would be in every delta. In whole seconds the clock alone changes a row at most once a
/// second, which bounds what a quiet field costs the feed (see `feed.rs`). Rounding up, not
/// to the nearest second, keeps it at or above the exact finish-time gaps of the finishers
/// ranked ahead, so rounding never makes the gap order disagree with the rank order.
fn whole_seconds_up(ms: i64) -> i64 {
    ms.saturating_add(999) / 1000 * 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        let rows = s.ranked(200_000);
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
        assert_eq!(s.ranked(50_000)[0].bib, 8, "same point, reached earlier");
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
        let rows = s.ranked(95_000);
        assert_eq!(
            rows.iter().map(|r| r.bib).collect::<Vec<_>>(),
            vec![9, 7, 8]
        );
        assert_eq!(
            rows[1].gap_ms,
            Some(4_500),
            "finishers: exact finish-time gap"
        );
        // Racer 8 is at 500 m, which the winner passed at some time up to 89.5 s at the
        // latest; at 95 s it is at least 5.5 s behind, so never ahead of 7 in time.
        assert!(rows[2].gap_ms.unwrap() >= 5_500, "{rows:?}");
    }

    #[test]
    fn splits_only_grow_and_show_in_the_row() {
        let mut s = Standings::default();
        s.update(1, at(300.0, 30));
        s.update_splits(1, &[10_000, 25_000]);
        s.update_splits(1, &[10_000]);
        assert_eq!(s.splits(1), &[10_000, 25_000]);
        let row = s.ranked(30_000)[0];
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
        assert_eq!(s.ranked(30_000)[0].progress_m, 300.0);
    }

    /// The board: rank 9 at 10.74 km showed +7:48 and rank 10 at 10.73 km +7:17,
    /// because rank 10's phone had reported later than rank 9's. For one instant both are
    /// measured against the same clock.
    #[test]
    fn a_racer_further_back_is_never_shown_closer_in_time() {
        let mut s = Standings::default();
        // The leader rides 10 m/s: 10.73 km at 1073 s, 10.74 km at 1074 s, 12 km at 1200 s.
        for t in 0..=1200 {
            s.update(1, at(10.0 * t as f64, t));
        }
        // Rank 2 reached 10.74 km at 1542 s and has not reported since; rank 3 reached
        // 10.73 km at 1510 s and reported that just now (1510 s).
        s.update(2, at(10_740.0, 1_542));
        s.update(3, at(10_730.0, 1_510));
        // Per fix those were 468 s and 437 s: the further-back racer looked closer.
        let rows = s.ranked(1_542_000);
        assert_eq!(
            rows.iter().map(|r| r.bib).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(rows[0].gap_ms, Some(0));
        assert_eq!(rows[1].gap_ms, Some(468_000));
        assert_eq!(rows[2].gap_ms, Some(469_000), "{rows:?}");
        // A minute later with no news from either, both are a minute further behind.
        let later = s.ranked(1_602_000);
        assert_eq!(later[1].gap_ms, Some(528_000));
        assert_eq!(later[2].gap_ms, Some(529_000));
    }

    #[test]
    fn gaps_on_the_course_are_whole_seconds_rounded_up() {
        let mut s = Standings::default();
        for t in 0..=100 {
            s.update(1, at(10.0 * t as f64, t));
        }
        s.update(2, at(500.0, 60));
        // The leader passed 500 m at 50 s: at 100 s that is 50 s ago, a millisecond
        // later it shows as 51 s until 101 s.
        assert_eq!(s.ranked(100_000)[1].gap_ms, Some(50_000));
        assert_eq!(s.ranked(100_001)[1].gap_ms, Some(51_000));
        assert_eq!(s.ranked(100_999)[1].gap_ms, Some(51_000));
        assert_eq!(s.ranked(101_000)[1].gap_ms, Some(51_000));
    }

    #[test]
    fn an_instant_before_what_is_known_counts_as_the_newest_report() {
        let mut s = Standings::default();
        assert!(s.ranked(0).is_empty());
        for t in 0..=100 {
            s.update(1, at(10.0 * t as f64, t));
        }
        s.update(2, at(400.0, 70));
        // A clock behind the phones' (here: at the epoch) neither goes negative nor
        // panics: the instant is the newest report, 100 s.
        let rows = s.ranked(0);
        assert_eq!(rows[0].gap_ms, Some(0));
        assert_eq!(rows[1].gap_ms, Some(60_000));
        // Splits alone make a row with no fix: it comes last, without a gap.
        s.update_splits(3, &[5_000]);
        let rows = s.ranked(0);
        assert_eq!((rows[2].bib, rows[2].gap_ms), (3, None));
    }

    #[test]
    fn racers_past_a_finished_leaders_last_sample_are_behind_its_finish() {
        let mut s = Standings::default();
        for t in 0..=99 {
            s.update(1, at(10.0 * t as f64, t));
        }
        s.update(
            1,
            RacerProgress {
                progress_m: 995.0,
                at_ms: 100_000,
                finished_at_ms: Some(99_600),
                off_course: false,
                live: Default::default(),
            },
        );
        // Racer 2 is a few metres past the leader's last sample but has not crossed the
        // line (the two phones' projections differ by metres).
        s.update(2, at(998.0, 130));
        let rows = s.ranked(140_000);
        assert_eq!(rows[0].bib, 1);
        assert_eq!(rows[1].gap_ms, Some(41_000), "{rows:?}");
    }

    /// One racer's reports: a start, steps of (progress, time) that may go backwards in
    /// either (stale or projected-back reports), and maybe a finish at one of them.
    fn racer_log() -> impl Strategy<Value = (i64, Vec<(f64, i64)>, Option<usize>)> {
        (
            0i64..200_000,
            proptest::collection::vec((-30.0f64..80.0, -5_000i64..20_000), 1..40),
            proptest::option::of(0usize..40),
        )
    }

    proptest! {
        /// Any passage logs and any instant: every racer with a fix has a gap, none is
        /// negative, the leader's is 0, and down the ranked rows gaps never decrease while
        /// distance never increases among racers still on the course. So rank order and gap
        /// order agree. A later instant never shows anyone closer.
        #[test]
        fn rank_order_and_gap_order_agree(
            logs in proptest::collection::vec(racer_log(), 1..8),
            now_ms in -100_000i64..2_000_000,
            later_by in 0i64..100_000,
        ) {
            let mut s = Standings::default();
            for (i, (start, steps, finish_at)) in logs.iter().enumerate() {
                let bib = u32::try_from(i + 1).unwrap();
                let (mut progress, mut time) = (0.0f64, *start);
                let mut finished = None;
                for (k, (dp, dt)) in steps.iter().enumerate() {
                    progress = (progress + dp).max(0.0);
                    time += dt;
                    if finished.is_none() && *finish_at == Some(k) {
                        finished = Some(time);
                    }
                    s.update(bib, RacerProgress {
                        progress_m: progress,
                        at_ms: time,
                        finished_at_ms: finished,
                        off_course: false,
                        live: Default::default(),
                    });
                }
            }
            let rows = s.ranked(now_ms);
            prop_assert_eq!(rows.len(), logs.len());
            prop_assert_eq!(rows[0].gap_ms, Some(0));
            for row in &rows {
                prop_assert!(row.gap_ms.is_some_and(|g| g >= 0), "{:?}", row);
            }
            for pair in rows.windows(2) {
                prop_assert!(pair[0].gap_ms <= pair[1].gap_ms, "gap order: {:?}", rows);
                if pair[0].finished_at_ms.is_none() {
                    prop_assert!(pair[1].finished_at_ms.is_none(), "finishers first: {:?}", rows);
                    prop_assert!(pair[0].progress_m >= pair[1].progress_m, "distance order: {:?}", rows);
                }
            }
            let later = s.ranked(now_ms + later_by);
            for (a, b) in rows.iter().zip(&later) {
                prop_assert_eq!(a.bib, b.bib);
                prop_assert!(a.gap_ms <= b.gap_ms, "{:?} then {:?}", a, b);
            }
        }
    }
}
