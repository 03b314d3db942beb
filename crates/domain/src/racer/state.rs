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
//!
//! Real rides go wrong, and each way has its rule here:
//! - **Detours** (a closed road, a wrong turn): a racer off the course is searched again from
//!   their last *confirmed* progress (the last fix on the course), as far ahead as they could
//!   have ridden since that fix, not since the previous one; so a racer who comes back
//!   anywhere within reach is found where they really are. Each spell off the course long
//!   enough to raise the flag is kept as an [`OffCourseEpisode`].
//! - **Course cuts**: a racer found farther ahead than [`TrackingRules::max_course_speed_mps`]
//!   allows since their last confirmed fix (plus [`TrackingRules::cut_tolerance_m`]) skipped
//!   course they could not have ridden: a [`SuspectedCut`]. Found beyond even the plausible
//!   reach, they are placed there only when the fix before agrees (it lies on the course just
//!   behind, at a speed a racer has), so a racer passing near a later leg of a loop or an
//!   out-and-back is not snapped onto it. [`CutRule`] says whether a cut is credited and
//!   flagged or held.
//! - **GPS dropouts** (minutes without a fix, then a fix far ahead): not cuts, because the
//!   distance is judged against the time since the last confirmed fix: a dropout's jump is at
//!   a speed a racer rides, a cut's is not.

use crate::aggregate::{Aggregate, Decision};
use crate::error::Rejection;
use crate::geo::finish::FinishLine;
use crate::geo::projection::{CourseIndex, Projection, ProjectionWindow};
use crate::geo::{Course, Position};
use crate::time::UnixMillis;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// How long a span of recent progress the pace (and so speed and ETA) is measured over.
pub const PACE_WINDOW_MS: i64 = 120_000;
/// Shortest span of samples a pace is computed from; shorter is noise.
const MIN_PACE_SPAN_MS: i64 = 10_000;
/// Most off-course episodes and suspected cuts kept per racer: enough for any real ride, and a
/// bound on what a device that zigzags on purpose can make the server store.
pub const MAX_INCIDENTS: usize = 256;
/// How far around an off-course fix the course is looked for, metres: farther, the racer is
/// simply "more than this" off the course, and no search along it is made.
const OFF_COURSE_MEASURE_M: f64 = 1_000.0;
/// The least ground between two fixes that can tell which way a racer rides: below it, GPS
/// noise alone could point either way.
const MIN_AGREEING_MOVE_M: f64 = 10.0;

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

/// What a suspected course cut does to the racer's progress; chosen by the organiser
/// (`tracking.cut_rule`, written `flag` or `hold`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutRule {
    /// Credit the progress and flag the racer: the organiser judges after the race (a GPS
    /// glitch must not cost an honest racer their finish).
    Flag,
    /// Credit nothing beyond the cut's start until the racer is found on the course behind
    /// the cut's end again (they went back); riding on ahead earns no progress.
    Hold,
}

impl CutRule {
    /// The rule as written in `tracking.cut_rule`.
    pub fn as_str(self) -> &'static str {
        match self {
            CutRule::Flag => "flag",
            CutRule::Hold => "hold",
        }
    }

    /// Reads the rule as written in `tracking.cut_rule` (exactly: the file is the docs).
    pub fn parse(text: &str) -> Option<CutRule> {
        [CutRule::Flag, CutRule::Hold]
            .into_iter()
            .find(|rule| rule.as_str() == text)
    }
}

impl Serialize for CutRule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Read from text, so a misspelt `tracking.cut_rule` is refused naming the key and the
/// values it takes, like every other configuration error.
impl<'de> Deserialize<'de> for CutRule {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        CutRule::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "tracking.cut_rule must be \"flag\" or \"hold\", got `{text}`"
            ))
        })
    }
}

/// Rules for judging fixes: the `[tracking]` section of the configuration, read directly
/// into this type (with [`TrackingRules::validate`]) so there is one definition of each key.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// The fastest average speed along the course a racer sustains between two confirmed
    /// positions; progress that would need more skipped course. Below `max_speed_mps`, which
    /// judges single jumps between fixes, not sustained riding.
    pub max_course_speed_mps: f64,
    /// Progress beyond what `max_course_speed_mps` allows by less than this is projection
    /// noise at a hairpin or GPS error, not a cut.
    pub cut_tolerance_m: f64,
    /// A racer seen off the course who comes back farther along than this many times their
    /// own pace allows took a shortcut (a detour takes about as long as the course).
    pub cut_pace_factor: f64,
    /// What a suspected cut does.
    pub cut_rule: CutRule,
}

impl TrackingRules {
    /// The ranges serde cannot express; each error names its `tracking.*` key, since these
    /// values come from the configuration.
    pub fn validate(&self) -> Result<(), String> {
        for (key, value) in [
            ("max_accuracy_m", self.max_accuracy_m),
            ("max_speed_mps", self.max_speed_mps),
            ("off_course_m", self.off_course_m),
            ("window_behind_m", self.window_behind_m),
            ("min_window_ahead_m", self.min_window_ahead_m),
            ("finish_half_width_m", self.finish_half_width_m),
            ("max_course_speed_mps", self.max_course_speed_mps),
            ("cut_tolerance_m", self.cut_tolerance_m),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(format!(
                    "tracking.{key} must be a positive number, got {value}"
                ));
            }
        }
        if self.max_course_speed_mps > self.max_speed_mps {
            return Err(format!(
                "tracking.max_course_speed_mps ({}) must not exceed tracking.max_speed_mps ({}): \
                 a sustained average cannot be faster than a single jump",
                self.max_course_speed_mps, self.max_speed_mps
            ));
        }
        if !(self.cut_pace_factor.is_finite() && self.cut_pace_factor >= 1.2) {
            return Err(format!(
                "tracking.cut_pace_factor must be at least 1.2 (a detour is about as fast as \
                 the course), got {}",
                self.cut_pace_factor
            ));
        }
        if self.off_course_after_ms < 1 {
            return Err(format!(
                "tracking.off_course_after_ms must be at least 1, got {}",
                self.off_course_after_ms.max(0)
            ));
        }
        Ok(())
    }
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
        let index = CourseIndex::from(course);
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

/// A spell off the course long enough to raise the off-course flag.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OffCourseEpisode {
    /// The first fix off the course.
    pub from_ms: UnixMillis,
    /// The first fix back on it; `None` while the racer is still off.
    pub to_ms: Option<UnixMillis>,
    /// The farthest the racer was from the course, metres.
    pub max_offset_m: f64,
}

/// Progress that skipped course the racer could not have ridden in the time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SuspectedCut {
    /// The fix that showed it.
    pub at_ms: UnixMillis,
    /// Where the skipped stretch starts: the racer's last confirmed progress, metres.
    pub from_m: f64,
    /// Where the racer was found, metres along the course.
    pub to_m: f64,
    /// Whether progress was held at `from_m` ([`CutRule::Hold`]) instead of credited.
    pub held: bool,
}

impl SuspectedCut {
    /// Whether checkpoint distance `distance_m` lies in the stretch this cut skipped and was
    /// credited: such a checkpoint was not passed by riding.
    pub fn skipped(&self, distance_m: f64) -> bool {
        !self.held && distance_m > self.from_m && distance_m <= self.to_m
    }
}

/// What a racer's ride has on its record besides progress: the race keeps it for the
/// standings (a flag) and the results (the list), and judges disqualifications from it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Incidents {
    /// Spells off the course that raised the flag, oldest first (the open one last, with no
    /// end), at most [`MAX_INCIDENTS`].
    pub episodes: Vec<OffCourseEpisode>,
    /// Suspected cuts, oldest first, at most [`MAX_INCIDENTS`].
    pub cuts: Vec<SuspectedCut>,
}

impl Incidents {
    /// Whether any cut is on the record (held or credited).
    pub fn cut_suspected(&self) -> bool {
        !self.cuts.is_empty()
    }
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
        /// Whether the fix confirmed the racer's progress: on the course, where they were
        /// credited to be.
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
    /// The racer is back on the course; the episode that raised the flag is over.
    BackOnCourse {
        /// When.
        at_ms: UnixMillis,
        /// The episode, with its end, as it is kept for the results.
        episode: OffCourseEpisode,
    },
    /// The racer crossed the finish line.
    Finished {
        /// Interpolated crossing time.
        at_ms: UnixMillis,
    },
    /// Progress skipped course the racer could not have ridden.
    CutSuspected {
        /// What was skipped and whether it was credited.
        cut: SuspectedCut,
    },
    /// A held cut is over: the racer was found on the course behind its end again.
    CutReleased {
        /// When.
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
    /// The farthest from the course during the current streak, metres.
    pub off_max_m: f64,
    /// The off-course flag.
    pub off_course: bool,
    /// Time of the last fix that confirmed the progress (on the course where credited):
    /// re-acquisition and cut detection measure what was possible from here.
    pub confirmed_at_ms: Option<UnixMillis>,
    /// The first confirmed fix (time, progress): the racer's average pace since is the
    /// reference a shortcut is measured against when the recent pace says nothing (a stop).
    pub first_confirmed: Option<(UnixMillis, f64)>,
    /// The longest wait between two fixes since the last confirmed one: a spell off the
    /// course during which fixes kept arriving is a spell in which the racer was seen.
    pub off_gap_ms: i64,
    /// Split times, one per checkpoint passed, in order.
    pub splits_ms: Vec<UnixMillis>,
    /// Finish time.
    pub finished_at_ms: Option<UnixMillis>,
    /// Recent (time, progress) samples of fixes on the course, for pace, speed, ETA and
    /// what progress is plausible.
    pub recent: VecDeque<(UnixMillis, f64)>,
    /// Off-course episodes and suspected cuts, for the standings and the results.
    pub incidents: Incidents,
    /// The cut progress is held at, under [`CutRule::Hold`].
    pub held_cut: Option<SuspectedCut>,
}

/// How a fix was placed on the course.
#[derive(Debug, Clone, Copy)]
struct Placement {
    /// Where on the course.
    projection: Projection,
    /// Whether it lies within the off-course distance.
    on_course: bool,
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
        let placement = self
            .place(fix, geo, rules, ahead)
            .ok_or(FixVerdict::Invalid)?;
        let before = self.progress_m.unwrap_or(0.0);
        let found = placement.projection.progress_m;
        let advance = (found - before).max(0.0);
        let too_far = advance > self.plausible_advance_m(fix.at_ms, rules)
            || self.shortcut_while_seen(fix, advance, rules);
        let cut = (placement.on_course && too_far).then_some(SuspectedCut {
            at_ms: fix.at_ms,
            from_m: before,
            to_m: found,
            held: rules.cut_rule == CutRule::Hold,
        });
        // Under the hold rule nothing beyond a cut's start counts until the racer is behind
        // the cut's end again: a new cut, or a position past the held cut's end, confirms
        // nothing.
        let held_back = cut.is_some_and(|c| c.held)
            || self
                .held_cut
                .is_some_and(|h| found >= h.to_m && advance > 0.0);
        let on_course = placement.on_course && !held_back;
        let progress_m = if on_course { before.max(found) } else { before };
        let mut events = vec![RacerEvent::FixAccepted {
            fix,
            progress_m,
            offset_m: placement.projection.offset_m,
            on_course,
        }];
        let new_cut = cut.filter(|c| !(c.held && self.held_cut.is_some()));
        if let Some(cut) = new_cut {
            events.push(RacerEvent::CutSuspected { cut });
        }
        if on_course && self.held_cut.is_some() {
            events.push(RacerEvent::CutReleased { at_ms: fix.at_ms });
        }

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
            (true, true, since) => events.push(RacerEvent::BackOnCourse {
                at_ms: fix.at_ms,
                episode: OffCourseEpisode {
                    from_ms: since.unwrap_or(fix.at_ms),
                    to_ms: Some(fix.at_ms),
                    max_offset_m: self.off_max_m,
                },
            }),
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

    /// Places `fix` on the course, searching wider the longer the racer has been unconfirmed:
    /// first the window `ahead` of the last progress (sized from the time since the previous
    /// fix); if that finds the racer off the course, everything they could have reached since
    /// their last confirmed fix; if still off, anywhere ahead. Beyond the first window a
    /// place is taken only when the previous fix agrees (see [`agrees`]): a racer crossing a
    /// later leg, or riding the other way along it, is not snapped onto it, and one who
    /// rejoins is placed one fix later. `None` only for a degenerate course.
    fn place(
        &self,
        fix: Fix,
        geo: &CourseGeometry,
        rules: &TrackingRules,
        ahead: f64,
    ) -> Option<Placement> {
        let placed = |projection: Projection| Placement {
            projection,
            on_course: projection.offset_m <= rules.off_course_m,
        };
        let window = ProjectionWindow {
            behind_m: rules.window_behind_m,
            ahead_m: ahead,
        };
        let near = placed(geo.index.project(fix.position, self.progress_m, window)?);
        let (Some(before), Some(last)) = (self.progress_m, self.last_fix) else {
            return Some(near);
        };
        if near.on_course {
            return Some(near);
        }
        let since = self.confirmed_at_ms.unwrap_or(last.at_ms);
        let reach =
            rules.max_speed_mps * ((fix.at_ms - since) as f64 / 1000.0) + f64::from(fix.accuracy_m);
        // How far the racer is from their own part of the course (all they could have reached
        // since their last confirmed fix), from the cells around the fix: what the off-course
        // episode records (the near window's end can be kilometres behind a racer on a long
        // detour, and another leg passing by is not where they should be).
        let off = Placement {
            projection: Projection {
                offset_m: geo
                    .index
                    .distance_to_course(
                        fix.position,
                        before - rules.window_behind_m,
                        before + reach.max(ahead),
                        OFF_COURSE_MEASURE_M,
                    )
                    .unwrap_or(near.projection.offset_m),
                ..near.projection
            },
            on_course: false,
        };
        // Far from every part of the course (a detour, a lost phone, a hostile device): no
        // search along it could place the racer, so none is made.
        let length = geo.index.length_m();
        // (The racer's own part lies within that range: when it is near, so is the course.)
        if off.projection.offset_m > rules.off_course_m
            && geo
                .index
                .distance_to_course(
                    fix.position,
                    before - rules.window_behind_m,
                    length,
                    rules.off_course_m,
                )
                .is_none()
        {
            return Some(off);
        }
        if reach > ahead {
            let wide = ProjectionWindow {
                behind_m: rules.window_behind_m,
                ahead_m: reach,
            };
            let within_reach = placed(geo.index.project(fix.position, Some(before), wide)?);
            if within_reach.on_course && agrees(last, fix, within_reach.projection, geo, rules) {
                return Some(within_reach);
            }
        }
        // Anywhere ahead, where the previous fix agrees. (Only the nearest pass is tried:
        // trying farther ones let a racer rejoining an out-and-back be taken for one on its
        // way back often enough to be wrong.)
        let anywhere = geo
            .index
            .project_between(fix.position, before, length, before)
            .map(placed)
            .filter(|p| p.on_course && agrees(last, fix, p.projection, geo, rules));
        if let Some(pass) = anywhere {
            return Some(pass);
        }
        // Near the course but not where the previous fix agrees the racer rides: not yet
        // back on it.
        Some(off)
    }

    /// How far beyond the last confirmed progress the racer may plausibly be at `at_ms`:
    /// sustained course speed over the time since each recent confirmed sample, the tightest
    /// of them, plus the tolerance.
    fn plausible_advance_m(&self, at_ms: UnixMillis, rules: &TrackingRules) -> f64 {
        let Some(before) = self.progress_m else {
            // A first fix may be anywhere near the start; there is nothing to cut from.
            return f64::INFINITY;
        };
        let Some(confirmed) = self.confirmed_at_ms else {
            return f64::INFINITY;
        };
        let allowance =
            |t: UnixMillis| rules.max_course_speed_mps * ((at_ms - t).max(0) as f64 / 1000.0);
        let mut limit = allowance(confirmed);
        for &(t, p) in &self.recent {
            // A sample `before - p` behind the current progress had that much more to ride.
            limit = limit.min(allowance(t) - (before - p));
        }
        limit.max(0.0) + rules.cut_tolerance_m
    }

    /// Whether the racer, seen off the course the whole time since their last confirmed fix
    /// (no wait between fixes longer than `off_course_after_ms`), came back farther along
    /// than `cut_pace_factor` times their own pace allows: they skipped a stretch with no
    /// fix near it while fixes were arriving. A detour around a closed road takes about as
    /// long as the course; a shortcut does not. A GPS dropout is not judged here: fixes
    /// were not arriving.
    fn shortcut_while_seen(&self, fix: Fix, advance: f64, rules: &TrackingRules) -> bool {
        let (Some(confirmed), Some(last), Some(_)) =
            (self.confirmed_at_ms, self.last_fix, self.off_since_ms)
        else {
            return false;
        };
        let longest_gap = self.off_gap_ms.max(fix.at_ms - last.at_ms);
        if longest_gap > rules.off_course_after_ms {
            return false;
        }
        // The recent pace, or the average since the first confirmed fix when that is more
        // (a racer who stopped for a while before leaving the course has no recent pace).
        let average = self.first_confirmed.and_then(|(t0, p0)| {
            let span_s = (confirmed - t0) as f64 / 1000.0;
            (span_s >= 60.0).then(|| (self.progress_m.unwrap_or(p0) - p0) / span_s)
        });
        let Some(pace) = [self.pace_mps(), average]
            .into_iter()
            .flatten()
            .max_by(f64::total_cmp)
            .filter(|p| *p > 0.0)
        else {
            return false;
        };
        let elapsed_s = (fix.at_ms - confirmed) as f64 / 1000.0;
        advance > rules.cut_pace_factor * pace * elapsed_s + rules.cut_tolerance_m
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
                let gap = self.last_fix.map_or(0, |last| fix.at_ms - last.at_ms);
                self.last_fix = Some(*fix);
                self.progress_m = Some(*progress_m);
                self.offset_m = *offset_m;
                if *on_course {
                    self.off_since_ms = None;
                    self.off_max_m = 0.0;
                    self.confirmed_at_ms = Some(fix.at_ms);
                    self.first_confirmed.get_or_insert((fix.at_ms, *progress_m));
                    self.off_gap_ms = 0;
                } else {
                    self.off_gap_ms = self.off_gap_ms.max(gap);
                    self.off_since_ms.get_or_insert(fix.at_ms);
                    self.off_max_m = self.off_max_m.max(*offset_m);
                    if let Some(open) = self
                        .incidents
                        .episodes
                        .last_mut()
                        .filter(|e| e.to_ms.is_none())
                    {
                        open.max_offset_m = open.max_offset_m.max(*offset_m);
                    }
                }
                // Only confirmed positions say where the racer was when: an off-course fix
                // carries the progress it was held at, not where the racer is.
                if *on_course {
                    self.recent.push_back((fix.at_ms, *progress_m));
                }
                while self
                    .recent
                    .front()
                    .is_some_and(|(t, _)| fix.at_ms - t > PACE_WINDOW_MS)
                {
                    self.recent.pop_front();
                }
            }
            RacerEvent::CheckpointReached { at_ms, .. } => self.splits_ms.push(*at_ms),
            RacerEvent::WentOffCourse { .. } => {
                self.off_course = true;
                if self.incidents.episodes.len() < MAX_INCIDENTS {
                    self.incidents.episodes.push(OffCourseEpisode {
                        from_ms: self.off_since_ms.unwrap_or_default(),
                        to_ms: None,
                        max_offset_m: self.off_max_m,
                    });
                }
            }
            RacerEvent::BackOnCourse { episode, .. } => {
                self.off_course = false;
                if let Some(open) = self
                    .incidents
                    .episodes
                    .last_mut()
                    .filter(|e| e.to_ms.is_none())
                {
                    *open = *episode;
                }
            }
            RacerEvent::Finished { at_ms } => self.finished_at_ms = Some(*at_ms),
            RacerEvent::CutSuspected { cut } => {
                if self.incidents.cuts.len() < MAX_INCIDENTS {
                    self.incidents.cuts.push(*cut);
                }
                if cut.held {
                    self.held_cut = Some(*cut);
                }
            }
            RacerEvent::CutReleased { .. } => self.held_cut = None,
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

/// Whether the previous fix `last` backs placing `fix` at `candidate`, far ahead of where the
/// racer was confirmed: the racer moved (two fixes at one spot say nothing about direction),
/// and `last` lies on the course behind the candidate by about the ground covered, no farther
/// than a racer rides in the time between. A racer riding the other way past a later leg of
/// an out-and-back, or across it at a crossing, fails this.
fn agrees(
    last: Fix,
    fix: Fix,
    candidate: Projection,
    geo: &CourseGeometry,
    rules: &TrackingRules,
) -> bool {
    let moved = last.position.distance_m(fix.position);
    let noise = f64::from(fix.accuracy_m) + f64::from(last.accuracy_m);
    if moved < noise.max(MIN_AGREEING_MOVE_M) {
        return false;
    }
    let dt_s = (fix.at_ms - last.at_ms) as f64 / 1000.0;
    let ridden = rules.max_speed_mps * dt_s + noise;
    let lo = candidate.progress_m - ridden - rules.window_behind_m;
    let hi = candidate.progress_m + rules.window_behind_m;
    geo.index
        .project_between(last.position, lo, hi, candidate.progress_m)
        .is_some_and(|p| {
            p.offset_m <= rules.off_course_m && candidate.progress_m - p.progress_m >= moved / 2.0
        })
}

/// The time at which `distance` was passed, moving from (t0, p0) to (t1, p1).
fn interpolate_time(t0: UnixMillis, p0: f64, t1: UnixMillis, p1: f64, distance: f64) -> UnixMillis {
    if p1 <= p0 {
        return t1;
    }
    let fraction = ((distance - p0) / (p1 - p0)).clamp(0.0, 1.0);
    t0 + ((t1 - t0) as f64 * fraction).round() as i64
}

/// What deciding on a batch of fixes reads besides the racer.
#[derive(Clone, Copy)]
pub struct RacerInputs<'a> {
    /// The course, prepared once per race and shared by its racers.
    pub geometry: &'a CourseGeometry,
    /// How fixes are judged.
    pub rules: &'a TrackingRules,
}

/// How a batch of fixes went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCounts {
    /// Fixes that were accepted (and are journaled).
    pub accepted: u32,
    /// Fixes that changed nothing, by why: the device is told how many, an operator why.
    pub ignored: IgnoredFixes,
}

/// Fixes of a batch that changed nothing, counted by [`FixVerdict`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IgnoredFixes {
    /// Not newer than the last applied fix.
    pub stale: u32,
    /// Accuracy worse than the rules allow.
    pub inaccurate: u32,
    /// A speed no racer has.
    pub too_fast: u32,
    /// Coordinates or accuracy out of range.
    pub invalid: u32,
    /// After the racer finished.
    pub after_finish: u32,
}

impl IgnoredFixes {
    /// Counts one more fix ignored for `verdict`.
    pub fn add(&mut self, verdict: FixVerdict) {
        let count = match verdict {
            FixVerdict::Stale => &mut self.stale,
            FixVerdict::Inaccurate => &mut self.inaccurate,
            FixVerdict::TooFast => &mut self.too_fast,
            FixVerdict::Invalid => &mut self.invalid,
            FixVerdict::AlreadyFinished => &mut self.after_finish,
        };
        *count += 1;
    }

    /// Every fix ignored, whatever the reason.
    pub fn total(&self) -> u32 {
        self.stale + self.inaccurate + self.too_fast + self.invalid + self.after_finish
    }

    /// Each verdict with its count.
    pub fn by_verdict(&self) -> [(FixVerdict, u32); 5] {
        [
            (FixVerdict::Stale, self.stale),
            (FixVerdict::Inaccurate, self.inaccurate),
            (FixVerdict::TooFast, self.too_fast),
            (FixVerdict::Invalid, self.invalid),
            (FixVerdict::AlreadyFinished, self.after_finish),
        ]
    }
}

impl Aggregate for RacerState {
    type Command = Vec<Fix>;
    type Event = RacerEvent;
    type Context<'a> = RacerInputs<'a>;
    type Outcome = BatchCounts;

    /// Judges a batch oldest first, each fix against the racer as the earlier ones left it;
    /// a fix that changes nothing is counted, not an error, so one bad fix never costs the
    /// batch.
    fn decide(
        &self,
        fixes: Vec<Fix>,
        inputs: RacerInputs<'_>,
    ) -> Result<Decision<RacerEvent, BatchCounts>, Rejection> {
        let mut next = self.clone();
        let mut events = Vec::new();
        let mut counts = BatchCounts::default();
        for fix in fixes {
            match next.handle(fix, inputs.geometry, inputs.rules) {
                Ok(produced) => {
                    for event in &produced {
                        next.apply(event);
                    }
                    events.extend(produced);
                    counts.accepted += 1;
                }
                Err(verdict) => counts.ignored.add(verdict),
            }
        }
        Ok(Decision {
            events,
            outcome: counts,
        })
    }

    fn apply(&mut self, event: &RacerEvent) {
        RacerState::apply(self, event);
    }
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
        max_course_speed_mps: 20.0,
        cut_tolerance_m: 150.0,
        cut_pace_factor: 2.0,
        cut_rule: CutRule::Flag,
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
    fn a_batch_counts_each_ignored_fix_by_why() {
        use crate::aggregate::Aggregate;
        let geo = CourseGeometry::new(&straight(), &[], &RULES);
        let inputs = RacerInputs {
            geometry: &geo,
            rules: &RULES,
        };
        let mut poor = fix(30, north(200.0), 15.0);
        poor.accuracy_m = 200.0;
        let batch = vec![
            fix(10, north(0.0), 15.0),
            fix(20, north(100.0), 15.0),
            fix(20, north(100.0), 15.0),
            fix(15, north(50.0), 15.0),
            fix(21, north(1500.0), 15.0),
            poor,
        ];
        let decision = RacerState::default().decide(batch, inputs).unwrap();
        let outcome = decision.outcome;
        assert_eq!(outcome.accepted, 2);
        assert_eq!(
            outcome.ignored,
            IgnoredFixes {
                stale: 2,
                too_fast: 1,
                inaccurate: 1,
                ..IgnoredFixes::default()
            }
        );
        assert_eq!(outcome.ignored.total(), 4);
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
        assert!(events.contains(&RacerEvent::BackOnCourse {
            at_ms: 50_000,
            episode: OffCourseEpisode {
                from_ms: 20_000,
                to_ms: Some(50_000),
                max_offset_m: s.incidents.episodes[0].max_offset_m,
            }
        }));
        assert_eq!(s.incidents.episodes.len(), 1);
        assert!(
            (s.incidents.episodes[0].max_offset_m - 150.0).abs() < 5.0,
            "{:?}",
            s.incidents.episodes
        );
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
