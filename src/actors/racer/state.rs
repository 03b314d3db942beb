//! One racer's tracking as a pure, event-sourced state.
//!
//! [`RacerState::handle`] judges one GPS fix against the racer's history and the course:
//! a fix older than or equal to the last applied one is stale (this is what makes a device's
//! re-sent buffer after a reconnect harmless), a fix with poor accuracy or implying an
//! impossible speed does not move the racer, and a good fix is projected onto the course by
//! searching only a plausible window around the racer's last progress, so loops,
//! out-and-back and self-crossing courses do not confuse it. Progress never goes backwards.
//! Checkpoint splits and the finish time are interpolated between the two fixes around the
//! crossing; finishing means crossing the finish line, not coming near it.

use crate::geo::finish::FinishLine;
use crate::geo::projection::{CourseIndex, ProjectionWindow};
use crate::geo::{Course, Position};
use crate::time::UnixMillis;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// How long a span of recent progress the pace (and so speed and ETA) is measured over.
pub const PACE_WINDOW_MS: i64 = 120_000;
/// Shortest span of samples a pace is computed from; shorter is noise.
const MIN_PACE_SPAN_MS: i64 = 10_000;

/// One GPS fix as the device reports it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fix {
    /// Device time of the fix, ms since the epoch: orders fixes and dates splits.
    pub at_ms: UnixMillis,
    /// Where.
    pub position: Position,
    /// Horizontal accuracy (1 sigma) in metres as the device estimates it.
    pub accuracy_m: f32,
    /// Device speed in m/s, if it has one.
    pub speed_mps: Option<f32>,
    /// Elevation in metres, if known.
    pub elevation_m: Option<f32>,
}

/// Rules for judging fixes; from configuration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrackingRules {
    /// Fixes less accurate than this do not move the racer.
    pub max_accuracy_m: f64,
    /// Faster than this between two fixes is a GPS spike, not a racer.
    pub max_speed_mps: f64,
    /// Farther than this from the course is off the course.
    pub off_course_m: f64,
    /// Off the course for this long raises the off-course flag.
    pub off_course_after_ms: i64,
    /// How far behind its last progress a racer may be placed (GPS noise, a U-turn).
    pub window_behind_m: f64,
    /// The least distance ahead searched, however short the time since the last fix.
    pub min_window_ahead_m: f64,
    /// Half the finish line's width.
    pub finish_half_width_m: f64,
}

/// The course as tracking needs it, built once per race and shared by its racers.
#[derive(Debug, Clone)]
pub struct CourseGeometry {
    /// Fast projection onto the course.
    pub index: CourseIndex,
    /// The line to cross.
    pub finish: Option<FinishLine>,
    /// Checkpoint distances along the course, ascending, excluding start and finish.
    pub checkpoints: Vec<f64>,
}

impl CourseGeometry {
    /// Geometry of `course` with checkpoints at `checkpoints_m` (sorted and clamped here).
    pub fn new(course: &Course, checkpoints_m: &[f64], rules: &TrackingRules) -> CourseGeometry {
        let index = CourseIndex::new(course);
        let length = index.length_m();
        let mut checkpoints: Vec<f64> = checkpoints_m
            .iter()
            .copied()
            .filter(|d| d.is_finite() && *d > 0.0 && *d < length)
            .collect();
        checkpoints.sort_by(f64::total_cmp);
        checkpoints.dedup();
        CourseGeometry {
            finish: FinishLine::from_course(course, rules.finish_half_width_m),
            index,
            checkpoints,
        }
    }
}

/// Why a fix changed nothing. Not errors: the device is told and moves on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FixVerdict {
    /// Not newer than the last applied fix (a duplicate or out of order).
    Stale,
    /// Accuracy worse than the rules allow.
    Inaccurate,
    /// Implies a speed no racer has: a GPS spike.
    TooFast,
    /// Coordinates or accuracy out of range.
    Invalid,
    /// The racer has finished; later fixes are kept out of the results.
    AlreadyFinished,
}

/// What happened to a racer: the journal's content for racer actors.
///
/// The variant order is the storage encoding: append only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RacerEvent {
    /// A fix was accepted.
    FixAccepted {
        /// The fix.
        fix: Fix,
        /// Progress along the course after it (never less than before).
        progress_m: f64,
        /// Distance from the course at this fix.
        offset_m: f64,
        /// Whether the fix was within the off-course distance.
        on_course: bool,
    },
    /// A checkpoint was passed.
    CheckpointReached {
        /// Index into the course's checkpoints.
        index: u16,
        /// Interpolated passing time.
        at_ms: UnixMillis,
    },
    /// The racer has been off the course for too long.
    WentOffCourse {
        /// When the flag was raised.
        at_ms: UnixMillis,
    },
    /// The racer is back on the course.
    BackOnCourse {
        /// When.
        at_ms: UnixMillis,
    },
    /// The racer crossed the finish line.
    Finished {
        /// Interpolated crossing time.
        at_ms: UnixMillis,
    },
}

/// One racer's tracking state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RacerState {
    /// The last accepted fix.
    pub last_fix: Option<Fix>,
    /// Distance along the course; `None` before the first accepted fix.
    pub progress_m: Option<f64>,
    /// Distance from the course at the last fix.
    pub offset_m: f64,
    /// First fix time of the current off-course streak.
    pub off_since_ms: Option<UnixMillis>,
    /// The off-course flag.
    pub off_course: bool,
    /// Split times, one per checkpoint passed, in order.
    pub splits_ms: Vec<UnixMillis>,
    /// Finish time.
    pub finished_at_ms: Option<UnixMillis>,
    /// Recent (time, progress) samples for pace, speed and ETA.
    pub recent: VecDeque<(UnixMillis, f64)>,
}

impl RacerState {
    /// Judges `fix`: the events it causes, or why it changes nothing.
    pub fn handle(
        &self,
        fix: Fix,
        geo: &CourseGeometry,
        rules: &TrackingRules,
    ) -> Result<Vec<RacerEvent>, FixVerdict> {
        if fix.position.validate().is_err() || !fix.accuracy_m.is_finite() || fix.accuracy_m < 0.0 {
            return Err(FixVerdict::Invalid);
        }
        if self.finished_at_ms.is_some() {
            return Err(FixVerdict::AlreadyFinished);
        }
        if self.last_fix.is_some_and(|last| fix.at_ms <= last.at_ms) {
            return Err(FixVerdict::Stale);
        }
        if f64::from(fix.accuracy_m) > rules.max_accuracy_m {
            return Err(FixVerdict::Inaccurate);
        }
        let elapsed_s = self
            .last_fix
            .map(|last| (fix.at_ms - last.at_ms) as f64 / 1000.0);
        if let (Some(last), Some(dt)) = (self.last_fix, elapsed_s) {
            if last.position.distance_m(fix.position) / dt > rules.max_speed_mps {
                return Err(FixVerdict::TooFast);
            }
        }
        let ahead = elapsed_s.map_or(rules.min_window_ahead_m, |dt| {
            (rules.max_speed_mps * dt + f64::from(fix.accuracy_m)).max(rules.min_window_ahead_m)
        });
        let window = ProjectionWindow {
            behind_m: rules.window_behind_m,
            ahead_m: ahead,
        };
        let Some(projection) = geo.index.project(fix.position, self.progress_m, window) else {
            return Err(FixVerdict::Invalid);
        };
        let on_course = projection.offset_m <= rules.off_course_m;
        let before = self.progress_m.unwrap_or(0.0);
        let progress_m = if on_course {
            before.max(projection.progress_m)
        } else {
            before
        };
        let mut events = vec![RacerEvent::FixAccepted {
            fix,
            progress_m,
            offset_m: projection.offset_m,
            on_course,
        }];

        // Splits: interpolate the passing time between the previous fix and this one.
        let (t0, p0) = self
            .last_fix
            .map_or((fix.at_ms, before), |last| (last.at_ms, before));
        for (index, &distance) in geo
            .checkpoints
            .iter()
            .enumerate()
            .skip(self.splits_ms.len())
        {
            if distance > progress_m {
                break;
            }
            let at_ms = interpolate_time(t0, p0, fix.at_ms, progress_m, distance);
            events.push(RacerEvent::CheckpointReached {
                index: u16::try_from(index).unwrap_or(u16::MAX),
                at_ms,
            });
        }

        match (on_course, self.off_course, self.off_since_ms) {
            (false, false, since) => {
                let since = since.unwrap_or(fix.at_ms);
                if fix.at_ms - since >= rules.off_course_after_ms {
                    events.push(RacerEvent::WentOffCourse { at_ms: fix.at_ms });
                }
            }
            (true, true, _) => events.push(RacerEvent::BackOnCourse { at_ms: fix.at_ms }),
            _ => {}
        }

        // The finish counts only near the end of the course (a loop's start is its finish
        // too) and only when the line is crossed between two fixes.
        let near_end = progress_m >= geo.index.length_m() - ahead.max(rules.window_behind_m);
        if let (Some(line), Some(last), true) = (geo.finish, self.last_fix, near_end) {
            if let Some(fraction) = line.crossing(last.position, fix.position) {
                let at_ms =
                    last.at_ms + ((fix.at_ms - last.at_ms) as f64 * fraction).round() as i64;
                events.push(RacerEvent::Finished { at_ms });
            }
        }
        Ok(events)
    }

    /// Folds one accepted event in.
    pub fn apply(&mut self, event: &RacerEvent) {
        match event {
            RacerEvent::FixAccepted {
                fix,
                progress_m,
                offset_m,
                on_course,
            } => {
                self.last_fix = Some(*fix);
                self.progress_m = Some(*progress_m);
                self.offset_m = *offset_m;
                if *on_course {
                    self.off_since_ms = None;
                } else {
                    self.off_since_ms.get_or_insert(fix.at_ms);
                }
                self.recent.push_back((fix.at_ms, *progress_m));
                while self
                    .recent
                    .front()
                    .is_some_and(|(t, _)| fix.at_ms - t > PACE_WINDOW_MS)
                {
                    self.recent.pop_front();
                }
            }
            RacerEvent::CheckpointReached { at_ms, .. } => self.splits_ms.push(*at_ms),
            RacerEvent::WentOffCourse { .. } => self.off_course = true,
            RacerEvent::BackOnCourse { .. } => self.off_course = false,
            RacerEvent::Finished { at_ms } => self.finished_at_ms = Some(*at_ms),
        }
    }

    /// Recent pace in metres per second along the course, if there is enough history.
    pub fn pace_mps(&self) -> Option<f64> {
        let (&(t0, p0), &(t1, p1)) = (self.recent.front()?, self.recent.back()?);
        let span = t1 - t0;
        (span >= MIN_PACE_SPAN_MS).then(|| (p1 - p0).max(0.0) / (span as f64 / 1000.0))
    }

    /// Estimated time to the finish at the recent pace, in ms.
    pub fn eta_ms(&self, course_length_m: f64) -> Option<i64> {
        let pace = self.pace_mps().filter(|p| *p > 0.1)?;
        let remaining = (course_length_m - self.progress_m?).max(0.0);
        Some((remaining / pace * 1000.0).round() as i64)
    }
}

/// The time at which `distance` was passed, moving from (t0, p0) to (t1, p1).
fn interpolate_time(t0: UnixMillis, p0: f64, t1: UnixMillis, p1: f64, distance: f64) -> UnixMillis {
    if p1 <= p0 {
        return t1;
    }
    let fraction = ((distance - p0) / (p1 - p0)).clamp(0.0, 1.0);
    t0 + ((t1 - t0) as f64 * fraction).round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RULES: TrackingRules = TrackingRules {
        max_accuracy_m: 30.0,
        max_speed_mps: 30.0,
        off_course_m: 60.0,
        off_course_after_ms: 20_000,
        window_behind_m: 100.0,
        min_window_ahead_m: 300.0,
        finish_half_width_m: 25.0,
    };

    /// A 2 km course due north.
    fn straight() -> Course {
        Course::from_degrees(&[(46.0, 15.0), (46.009, 15.0), (46.018, 15.0)], 100).unwrap()
    }

    fn fix(at_s: i64, lat: f64, lon: f64) -> Fix {
        Fix {
            at_ms: at_s * 1000,
            position: Position::from_degrees(lat, lon).unwrap(),
            accuracy_m: 5.0,
            speed_mps: None,
            elevation_m: None,
        }
    }

    fn feed(
        state: &mut RacerState,
        geo: &CourseGeometry,
        f: Fix,
    ) -> Result<Vec<RacerEvent>, FixVerdict> {
        let events = state.handle(f, geo, &RULES)?;
        for e in &events {
            state.apply(e);
        }
        Ok(events)
    }

    /// Latitude `m` metres north of 46.0 on the straight course.
    fn north(m: f64) -> f64 {
        46.0 + m / 111_180.0
    }

    #[test]
    fn duplicates_and_older_fixes_are_stale() {
        let geo = CourseGeometry::new(&straight(), &[], &RULES);
        let mut s = RacerState::default();
        feed(&mut s, &geo, fix(10, north(0.0), 15.0)).unwrap();
        feed(&mut s, &geo, fix(20, north(100.0), 15.0)).unwrap();
        let snapshot = s.clone();
        assert_eq!(
            feed(&mut s, &geo, fix(20, north(100.0), 15.0)),
            Err(FixVerdict::Stale)
        );
        assert_eq!(
            feed(&mut s, &geo, fix(15, north(50.0), 15.0)),
            Err(FixVerdict::Stale)
        );
        assert_eq!(s, snapshot);
    }

    #[test]
    fn spikes_and_inaccurate_fixes_do_not_move_the_racer() {
        let geo = CourseGeometry::new(&straight(), &[], &RULES);
        let mut s = RacerState::default();
        feed(&mut s, &geo, fix(0, north(0.0), 15.0)).unwrap();
        feed(&mut s, &geo, fix(10, north(80.0), 15.0)).unwrap();
        assert_eq!(
            feed(&mut s, &geo, fix(11, north(1500.0), 15.0)),
            Err(FixVerdict::TooFast)
        );
        let mut poor = fix(12, north(100.0), 15.0);
        poor.accuracy_m = 200.0;
        assert_eq!(feed(&mut s, &geo, poor), Err(FixVerdict::Inaccurate));
        assert!((s.progress_m.unwrap() - 80.0).abs() < 2.0);
        feed(&mut s, &geo, fix(20, north(170.0), 15.0)).unwrap();
        assert!(
            (s.progress_m.unwrap() - 170.0).abs() < 2.0,
            "good fixes after a spike still count"
        );
    }

    #[test]
    fn splits_are_interpolated_and_the_finish_needs_a_crossing() {
        let course = straight();
        let geo = CourseGeometry::new(&course, &[1000.0], &RULES);
        let mut s = RacerState::default();
        feed(&mut s, &geo, fix(0, north(0.0), 15.0)).unwrap();
        feed(&mut s, &geo, fix(100, north(900.0), 15.0)).unwrap();
        let events = feed(&mut s, &geo, fix(120, north(1100.0), 15.0)).unwrap();
        let split = events.iter().find_map(|e| match e {
            RacerEvent::CheckpointReached { index: 0, at_ms } => Some(*at_ms),
            _ => None,
        });
        assert!(
            split.is_some_and(|t| (t - 110_000).abs() < 200),
            "{events:?}"
        );
        // Metres from the finish point along the last leg (due north), in the plane the line uses.
        let finish_lat = course.finish().unwrap().lat();
        let from_line = |m: f64| finish_lat + m / 111_194.9;
        feed(&mut s, &geo, fix(200, from_line(-3.0), 15.0)).unwrap();
        feed(&mut s, &geo, fix(230, from_line(-1.0), 15.0)).unwrap();
        assert_eq!(
            s.finished_at_ms, None,
            "standing next to the line is not finishing"
        );
        let events = feed(&mut s, &geo, fix(231, from_line(1.0), 15.0)).unwrap();
        match events.last() {
            Some(RacerEvent::Finished { at_ms }) => {
                assert!((at_ms - 230_500).abs() < 100, "{at_ms}")
            }
            other => panic!("expected a finish, got {other:?}"),
        }
        assert_eq!(
            feed(&mut s, &geo, fix(240, from_line(20.0), 15.0)),
            Err(FixVerdict::AlreadyFinished)
        );
    }

    #[test]
    fn a_loop_start_is_not_a_finish() {
        // A square loop ~1.2 km round, starting and finishing at the same corner.
        let course = Course::from_degrees(
            &[
                (46.0, 15.0),
                (46.0027, 15.0),
                (46.0027, 15.0039),
                (46.0, 15.0039),
                (46.0, 15.0),
            ],
            100,
        )
        .unwrap();
        let geo = CourseGeometry::new(&course, &[], &RULES);
        let mut s = RacerState::default();
        // Leaving the start goes over the finish point: not a finish.
        feed(&mut s, &geo, fix(0, 45.99995, 15.0)).unwrap();
        feed(&mut s, &geo, fix(10, north(50.0), 15.0)).unwrap();
        assert_eq!(s.finished_at_ms, None);
        for (i, p) in [
            (46.0027, 15.002),
            (46.0015, 15.0039),
            (46.0, 15.002),
            (46.0, 15.0003),
        ]
        .into_iter()
        .enumerate()
        {
            feed(&mut s, &geo, fix(60 + 40 * i as i64, p.0, p.1)).unwrap();
        }
        assert_eq!(s.finished_at_ms, None);
        feed(&mut s, &geo, fix(230, 46.0, 14.9997)).unwrap();
        assert!(
            s.finished_at_ms.is_some(),
            "crossing at the end of the lap finishes: {s:?}"
        );
    }

    #[test]
    fn off_course_after_the_configured_time_and_back() {
        let geo = CourseGeometry::new(&straight(), &[], &RULES);
        let mut s = RacerState::default();
        feed(&mut s, &geo, fix(0, north(0.0), 15.0)).unwrap();
        feed(&mut s, &geo, fix(10, north(100.0), 15.0)).unwrap();
        let east = 15.0 + 150.0 / 77_300.0;
        feed(&mut s, &geo, fix(20, north(150.0), east)).unwrap();
        assert!(!s.off_course);
        let events = feed(&mut s, &geo, fix(40, north(200.0), east)).unwrap();
        assert!(events.contains(&RacerEvent::WentOffCourse { at_ms: 40_000 }));
        assert!(
            (s.progress_m.unwrap() - 100.0).abs() < 2.0,
            "off-course fixes do not advance"
        );
        let events = feed(&mut s, &geo, fix(50, north(250.0), 15.0)).unwrap();
        assert!(events.contains(&RacerEvent::BackOnCourse { at_ms: 50_000 }));
    }

    #[test]
    fn pace_and_eta_come_from_recent_progress() {
        let geo = CourseGeometry::new(&straight(), &[], &RULES);
        let mut s = RacerState::default();
        for t in 0..=30 {
            feed(&mut s, &geo, fix(t, north(10.0 * t as f64), 15.0)).unwrap();
        }
        let pace = s.pace_mps().unwrap();
        assert!((pace - 10.0).abs() < 0.3, "{pace}");
        let eta = s.eta_ms(geo.index.length_m()).unwrap();
        let expected = (geo.index.length_m() - 300.0) / 10.0 * 1000.0;
        assert!(
            (eta as f64 - expected).abs() < expected * 0.05,
            "{eta} vs {expected}"
        );
    }

    proptest! {
        /// Any fix stream: progress never decreases, and replaying the journaled events
        /// rebuilds the same state.
        #[test]
        fn progress_is_monotonic_and_replay_is_exact(steps in proptest::collection::vec((0i64..20, -40.0f64..60.0, -80.0f64..80.0, 1.0f32..60.0), 1..60)) {
            let geo = CourseGeometry::new(&straight(), &[500.0, 1500.0], &RULES);
            let mut s = RacerState::default();
            let mut journal = Vec::new();
            let (mut t, mut along) = (0i64, 0.0f64);
            for (dt, forward, side, accuracy) in steps {
                t += dt;
                along = (along + forward).max(0.0);
                let mut f = fix(t, north(along), 15.0 + side / 77_300.0);
                f.accuracy_m = accuracy;
                let before = s.progress_m;
                if let Ok(events) = s.handle(f, &geo, &RULES) {
                    for e in &events { s.apply(e); }
                    journal.extend(events);
                }
                prop_assert!(s.progress_m >= before);
            }
            let mut replayed = RacerState::default();
            for e in &journal { replayed.apply(e); }
            prop_assert_eq!(replayed, s);
        }
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;
    use crate::net::codec::Codec;
    use crate::net::protocol::{ClientFrame, Request, WireFix};

    /// Bytes per fix on the wire and in the journal stay small: a regression guard for the
    /// figures quoted in BENCHMARKS.md.
    #[test]
    fn a_fix_is_compact_on_the_wire_and_in_the_journal() {
        let wire = WireFix {
            at_ms: 1_796_115_600_000,
            lat_e7: 462_309_000,
            lon_e7: 152_604_000,
            accuracy_dm: 50,
            speed_cmps: Some(830),
            elevation_dm: Some(2410),
        };
        let one = Codec::Binary
            .encode_client_bytes(&ClientFrame {
                id: 1000,
                request: Request::Fixes { fixes: vec![wire] },
            })
            .unwrap();
        let sixty = Codec::Binary
            .encode_client_bytes(&ClientFrame {
                id: 1000,
                request: Request::Fixes {
                    fixes: vec![wire; 60],
                },
            })
            .unwrap();
        let per_fix_in_batch = (sixty.len() - one.len()) as f64 / 59.0;
        let fix = Fix {
            at_ms: wire.at_ms,
            position: Position {
                lat_e7: wire.lat_e7,
                lon_e7: wire.lon_e7,
            },
            accuracy_m: 5.0,
            speed_mps: Some(8.3),
            elevation_m: Some(241.0),
        };
        let stored = crate::persist::record::encode(&RacerEvent::FixAccepted {
            fix,
            progress_m: 12_345.6,
            offset_m: 3.2,
            on_course: true,
        })
        .unwrap();
        println!("wire: {} bytes for a one-fix frame, {per_fix_in_batch:.1} bytes per fix in a batch; journal value: {} bytes", one.len(), stored.len());
        assert!(one.len() <= 36, "{}", one.len());
        assert!(per_fix_in_batch <= 30.0, "{per_fix_in_batch}");
        assert!(stored.len() <= 64, "{}", stored.len());
    }
}
