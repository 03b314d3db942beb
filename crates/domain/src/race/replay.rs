//! Replaying a race from its stored fixes: pure.
//!
//! A racer's history (every event its actor journaled, archived or not) is folded back
//! through [`RacerState`] to recover its progress at each fix; all racers' points are merged
//! in time order; a [`Replayer`] then plays them into fresh [`Standings`] at whatever pace
//! the caller advances its clock, and the same [`Feed`] as live spectating turns each step
//! into a delta. So a replay shows exactly what the live race showed, at any speed.

use super::feed::{Feed, TickUpdate};
use super::standings::{Live, RacerProgress, Standings};
use crate::racer::{RacerEvent, RacerState};
use crate::time::UnixMillis;
use std::collections::BTreeMap;

/// One racer's progress at one fix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayPoint {
    /// Whose.
    pub bib: u32,
    /// Where, when, how fast.
    pub progress: RacerProgress,
    /// Checkpoints this racer had passed by this point: a prefix of its splits.
    pub checkpoints_passed: u16,
}

/// A whole race's stored history, ready to play.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    /// Every racer's points, oldest first.
    pub points: Vec<ReplayPoint>,
    /// Each racer's checkpoint splits in course order; a point shows the first
    /// `checkpoints_passed` of them.
    pub splits: BTreeMap<u32, Vec<UnixMillis>>,
}

/// Folds each racer's journaled events back into a time-ordered timeline.
pub fn timeline(histories: Vec<(u32, Vec<RacerEvent>)>, course_length_m: f64) -> Timeline {
    let mut points: Vec<ReplayPoint> = Vec::new();
    let mut splits = BTreeMap::new();
    for (bib, events) in histories {
        let mut state = RacerState::default();
        for event in &events {
            state.apply(event);
            let (Some(progress_m), Some(fix)) = (state.progress_m, state.last_fix) else {
                continue;
            };
            let point = ReplayPoint {
                bib,
                progress: RacerProgress {
                    progress_m,
                    at_ms: fix.at_ms,
                    finished_at_ms: state.finished_at_ms,
                    off_course: state.off_course,
                    live: Live {
                        position: Some(fix.position),
                        speed_mps: state.pace_mps(),
                        eta_ms: state.eta_ms(course_length_m),
                    },
                },
                checkpoints_passed: u16::try_from(state.splits_ms.len()).unwrap_or(u16::MAX),
            };
            // Later events about the same fix (a split, the finish) refine its point.
            match points.last_mut() {
                Some(last) if last.bib == bib && last.progress.at_ms == fix.at_ms => *last = point,
                _ => points.push(point),
            }
        }
        splits.insert(bib, state.splits_ms);
    }
    points.sort_by_key(|p| (p.progress.at_ms, p.bib));
    Timeline { points, splits }
}

/// Plays a timeline forward.
#[derive(Debug)]
pub struct Replayer {
    /// The points, oldest first.
    points: Vec<ReplayPoint>,
    /// Each racer's splits, shown as far as a point has got.
    splits: BTreeMap<u32, Vec<UnixMillis>>,
    /// Index of the next point to play.
    next: usize,
    /// Standings as of the replay clock.
    standings: Standings,
    /// Deltas between steps.
    feed: Feed,
}

impl Replayer {
    /// A replayer over a race's timeline.
    pub fn new(timeline: Timeline) -> Replayer {
        Replayer {
            points: timeline.points,
            splits: timeline.splits,
            next: 0,
            standings: Standings::default(),
            feed: Feed::default(),
        }
    }

    /// Race time of the first and last point, if any.
    pub fn span(&self) -> Option<(UnixMillis, UnixMillis)> {
        Some((
            self.points.first()?.progress.at_ms,
            self.points.last()?.progress.at_ms,
        ))
    }

    /// Plays every point up to `clock_ms`; the change since the last step, if any. Gaps are
    /// for the replay clock, as live gaps are for the wall clock at each tick.
    pub fn advance(&mut self, clock_ms: UnixMillis) -> Option<TickUpdate> {
        while let Some(point) = self
            .points
            .get(self.next)
            .filter(|p| p.progress.at_ms <= clock_ms)
        {
            self.standings.update(point.bib, point.progress);
            if let Some(splits) = self.splits.get(&point.bib) {
                let passed = usize::from(point.checkpoints_passed).min(splits.len());
                self.standings.update_splits(point.bib, &splits[..passed]);
            }
            self.next += 1;
        }
        self.feed.tick(self.standings.ranked(clock_ms), 1)
    }

    /// Whether every point has been played.
    pub fn done(&self) -> bool {
        self.next >= self.points.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::Position;
    use crate::racer::Fix;

    fn fix_event(at_s: i64, progress_m: f64) -> RacerEvent {
        RacerEvent::FixAccepted {
            fix: Fix {
                at_ms: at_s * 1000,
                position: Position::from_degrees(46.0, 15.0).unwrap(),
                accuracy_m: 5.0,
                speed_mps: None,
                elevation_m: None,
            },
            progress_m,
            offset_m: 1.0,
            on_course: true,
        }
    }

    #[test]
    fn a_replay_reaches_the_final_standings_in_time_order() {
        let histories = vec![
            (
                1,
                vec![
                    fix_event(0, 0.0),
                    fix_event(10, 100.0),
                    RacerEvent::CheckpointReached {
                        index: 0,
                        at_ms: 9_000,
                    },
                    fix_event(20, 200.0),
                    RacerEvent::Finished { at_ms: 20_000 },
                ],
            ),
            (
                2,
                vec![
                    fix_event(5, 0.0),
                    fix_event(15, 150.0),
                    fix_event(30, 200.0),
                    RacerEvent::Finished { at_ms: 30_000 },
                ],
            ),
        ];
        let line = timeline(histories, 200.0);
        let points = &line.points;
        assert_eq!(
            points.len(),
            6,
            "a split and the finish refine their fix's point"
        );
        assert!(points
            .windows(2)
            .all(|w| w[0].progress.at_ms <= w[1].progress.at_ms));
        let mut replay = Replayer::new(line);
        assert_eq!(replay.span(), Some((0, 30_000)));
        let before = replay.advance(5_000).unwrap();
        assert_eq!(before.full[0].checkpoints_passed, 0, "not yet at the split");
        let early = replay.advance(16_000).unwrap();
        assert_eq!(early.full[0].bib, 2, "at 16 s racer 2 is further along");
        let one = early.full.iter().find(|s| s.bib == 1).unwrap();
        assert_eq!(
            (one.checkpoints_passed, one.last_split_ms),
            (1, Some(9_000))
        );
        let end = replay.advance(30_000).unwrap();
        assert!(replay.done());
        assert_eq!(
            end.full
                .iter()
                .map(|s| (s.bib, s.finished_at_ms))
                .collect::<Vec<_>>(),
            vec![(1, Some(20_000)), (2, Some(30_000))]
        );
        assert!(
            replay.advance(40_000).is_none(),
            "nothing changes after the end"
        );
    }
}
