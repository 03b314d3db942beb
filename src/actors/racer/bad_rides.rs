//! The tracking rules against real rides that go wrong: recorded rides from
//! `shared/data/gpx`, edited the way races really go wrong (a detour around a closed road, a
//! cut across the course's own bends, a GPS dropout, a detour next to a self-crossing), and
//! property tests over random tracks for each rule. The course is the ride itself, so the
//! true distance along the course of every fix is known.

use super::state::{
    CourseGeometry, CutRule, Fix, FixVerdict, RacerEvent, RacerState, SuspectedCut, TrackingRules,
};
use crate::actors::race::domain::RaceSettings;
use crate::cli::sim::faults;
use crate::cli::sim::ride::{Ride, RidePoint, Sample};
use crate::config::Config;
use crate::geo::{Course, CourseIndex, Position};
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::LazyLock;

/// The shipped defaults (`config.toml`, read as the server reads it), so the tests judge
/// what users run.
static RULES: LazyLock<TrackingRules> = LazyLock::new(|| {
    RaceSettings::from_config(&Config::defaults().expect("the embedded config is valid")).rules
});

/// Device time of a ride's first point: any fixed epoch will do.
const T0: i64 = 1_790_000_000_000;

/// One fix of a derived track, with the distance along the course the racer truly is at
/// (`None` where the racer is not on the course).
#[derive(Debug, Clone, Copy)]
struct Step {
    fix: Fix,
    truth_m: Option<f64>,
}

/// A real ride as a course and as the fixes of a racer who rides it exactly.
struct RealRide {
    geo: CourseGeometry,
    steps: Vec<Step>,
}

fn real_ride(name: &str) -> RealRide {
    let path = format!("{}/../shared/data/gpx/{name}", env!("CARGO_MANIFEST_DIR"));
    let Ok(bytes) = std::fs::read(&path) else {
        panic!("shared data missing at {path}");
    };
    let course = Course::from_gpx(&bytes, 200_000).unwrap();
    let ride = Ride::from_gpx(&bytes, 200_000).unwrap();
    let index = CourseIndex::from(&course);
    // Truth: the ride's own cumulative distance (the course is the ride); the run-out past
    // the finish is at the course's end.
    let mut cum = 0.0;
    let mut steps = Vec::with_capacity(ride.points.len());
    for (k, p) in ride.points.iter().enumerate() {
        if k > 0 && k < ride.recorded {
            cum += ride.points[k - 1].position.distance_m(p.position);
        }
        steps.push(Step {
            fix: fix_at(T0 + p.elapsed_ms, p.position),
            truth_m: Some(cum.min(index.length_m())),
        });
    }
    RealRide {
        geo: CourseGeometry::new(&course, &[], &RULES),
        steps,
    }
}

fn fix_at(at_ms: i64, position: Position) -> Fix {
    Fix {
        at_ms,
        position,
        accuracy_m: 5.0,
        speed_mps: None,
        elevation_m: None,
    }
}

/// What feeding a track did: the final state, the events, and the worst lag of credited
/// progress behind the truth once the racer was back on the course.
struct Outcome {
    state: RacerState,
    events: Vec<RacerEvent>,
    /// (fix index, credited progress, truth) at every fix on the course.
    trace: Vec<(usize, f64, f64)>,
}

fn ride(geo: &CourseGeometry, steps: &[Step], rules: &TrackingRules) -> Outcome {
    let mut state = RacerState::default();
    let mut events = Vec::new();
    let mut trace = Vec::new();
    for (k, step) in steps.iter().enumerate() {
        let before = state.progress_m;
        match state.handle(step.fix, geo, rules) {
            Ok(produced) => {
                for e in &produced {
                    state.apply(e);
                }
                events.extend(produced);
            }
            Err(FixVerdict::AlreadyFinished) => break,
            // Real recordings have GPS spikes; refusing them is the rule working.
            Err(FixVerdict::TooFast | FixVerdict::Inaccurate) => {}
            Err(other) => panic!("fix {k} refused: {other:?}"),
        }
        assert!(state.progress_m >= before, "progress went back at fix {k}");
        if let (Some(truth), Some(p)) = (step.truth_m, state.progress_m) {
            trace.push((k, p, truth));
        }
    }
    // Replaying the journal rebuilds the same state: the rules are a fold of events.
    let mut replayed = RacerState::default();
    for e in &events {
        replayed.apply(e);
    }
    assert_eq!(replayed, state);
    Outcome {
        state,
        events,
        trace,
    }
}

/// The index of the first step at or after `at_ms`.
fn step_at(steps: &[Step], at_ms: i64) -> usize {
    steps.partition_point(|s| s.fix.at_ms < at_ms)
}

/// The steps as the simulator's ride, so the simulator's own faults edit them: the tests
/// rehearse exactly the bad day `peloton sim race` does.
fn as_ride(steps: &[Step]) -> Ride {
    Ride {
        points: steps
            .iter()
            .map(|s| RidePoint {
                position: s.fix.position,
                elapsed_ms: s.fix.at_ms - T0,
                elevation_dm: None,
            })
            .collect(),
        recorded: steps.len(),
        length_m: 0.0,
        timed: true,
    }
}

/// An edited ride back as steps: a point still where it was keeps its truth, a moved or
/// new one (off the course) has none.
fn from_ride(ride: &Ride, original: &[Step]) -> Vec<Step> {
    let truth: HashMap<Position, Option<f64>> = original
        .iter()
        .map(|s| (s.fix.position, s.truth_m))
        .collect();
    ride.points
        .iter()
        .map(|p| Step {
            fix: fix_at(T0 + p.elapsed_ms, p.position),
            truth_m: truth.get(&p.position).copied().flatten(),
        })
        .collect()
}

/// A detour on a parallel road `offset_m` to the right of the stretch's overall heading,
/// from `from_ms` for `for_ms` (easing out and back over a minute): the racer is off the
/// course meanwhile and rides the whole course in the same time.
fn detour(steps: &[Step], from_ms: i64, for_ms: i64, offset_m: f64) -> Vec<Step> {
    let first = steps[step_at(steps, from_ms).min(steps.len() - 1)]
        .fix
        .position;
    let last = steps[step_at(steps, from_ms + for_ms).min(steps.len() - 1)]
        .fix
        .position;
    let (dx, dy) = first.offset_m(last);
    let norm = dx.hypot(dy).max(1e-9);
    let right = (dy / norm * offset_m, -dx / norm * offset_m);
    let edited = faults::detour(&as_ride(steps), from_ms - T0, for_ms, 60_000, right);
    from_ride(&edited, steps)
}

/// No fix at all from `from_ms` for `for_ms`: a phone without signal that buffered nothing.
fn dropout(steps: &[Step], from_ms: i64, for_ms: i64) -> Vec<Step> {
    from_ride(
        &faults::dropout(&as_ride(steps), from_ms - T0, for_ms),
        steps,
    )
}

/// A cut: a straight line from step `i` to step `j`, ridden at the speed of the stretch it
/// skips, and the ride from `j` on, earlier by the time saved.
fn cut(steps: &[Step], i: usize, j: usize) -> Vec<Step> {
    from_ride(&faults::cut(&as_ride(steps), i, j), steps)
}

/// Where a cutter cuts: the place on a ride where a straight line of at most
/// `max_straight_m`, leaving the course (its middle at least 120 m from it), skips the most
/// course for its length, skipping `skip_m` metres, away from both ends.
fn best_cut(r: &RealRide, skip_m: std::ops::Range<f64>, max_straight_m: f64) -> (usize, usize) {
    let steps = &r.steps;
    let truth = |k: usize| steps[k].truth_m.unwrap_or(0.0);
    let end = r.geo.index.length_m();
    let mut best = (0, 0, 0.0);
    for i in (0..steps.len()).step_by(4) {
        if truth(i) < 500.0 {
            continue;
        }
        for j in (i..steps.len()).step_by(4) {
            let skipped = truth(j) - truth(i);
            if !skip_m.contains(&skipped) || truth(j) > end - 300.0 {
                continue;
            }
            let (a, b) = (steps[i].fix.position, steps[j].fix.position);
            let straight = a.distance_m(b).max(1.0);
            if straight > max_straight_m || skipped / straight <= best.2 {
                continue;
            }
            let (dx, dy) = a.offset_m(b);
            let middle = a.moved_m(dx / 2.0, dy / 2.0);
            let off = r.geo.index.project_between(middle, 0.0, end, 0.0).unwrap();
            if off.offset_m >= 120.0 {
                best = (i, j, skipped / straight);
            }
        }
    }
    assert!(best.2 > 0.0, "the ride has no place to cut");
    (best.0, best.1)
}

/// Asserts the racer finished, credited with the whole course, and that wherever they were
/// on the course their credited progress was close to the truth (allowing `settle` fixes
/// after each return for the projection to catch up).
fn assert_rode_it(outcome: &Outcome, geo: &CourseGeometry) {
    let length = geo.index.length_m();
    assert!(
        outcome.state.finished_at_ms.is_some(),
        "not finished: progress {:?} of {length}",
        outcome.state.progress_m
    );
    let last = outcome.state.progress_m.unwrap();
    assert!((last - length).abs() < 100.0, "credited {last} of {length}");
    let worst = outcome
        .trace
        .iter()
        .map(|&(_, p, truth)| (p - truth).abs())
        .fold(0.0, f64::max);
    assert!(worst < 600.0, "progress strayed {worst} m from the truth");
}

/// Feeds `steps` under the default rules and asserts the racer rode the course (see
/// [`assert_rode_it`]) with no cut suspected.
fn rides_it_without_a_cut(geo: &CourseGeometry, steps: &[Step]) -> Outcome {
    let o = ride(geo, steps, &RULES);
    assert_rode_it(&o, geo);
    assert!(
        o.state.incidents.cuts.is_empty(),
        "no cut here: {:?}",
        o.state.incidents.cuts
    );
    o
}

/// Rides `r` with the stretch from step `i` to step `j` cut out: the outcome and the one
/// cut it flagged (the test fails if it flagged none or several).
fn ride_a_cut(r: &RealRide, i: usize, j: usize, rules: &TrackingRules) -> (Outcome, SuspectedCut) {
    let o = ride(&r.geo, &cut(&r.steps, i, j), rules);
    let cuts = &o.state.incidents.cuts;
    assert_eq!(cuts.len(), 1, "{cuts:?}");
    let c = cuts[0];
    (o, c)
}

/// Fails unless the cut `c` starts within 300 m of where step `i` of `r` truly is.
fn assert_cut_starts_near(c: &SuspectedCut, r: &RealRide, i: usize) {
    let from = r.steps[i].truth_m.unwrap();
    assert!(
        (c.from_m - from).abs() < 300.0,
        "cut from {} vs {from}",
        c.from_m
    );
}

/// Fails unless the cut `c` ends within 600 m of where step `j` of `r` truly is.
fn assert_cut_ends_near(c: &SuspectedCut, r: &RealRide, j: usize) {
    let to = r.steps[j].truth_m.unwrap();
    assert!((c.to_m - to).abs() < 600.0, "cut to {} vs {to}", c.to_m);
}

#[test]
fn the_rides_as_recorded_finish_with_no_incident() {
    for name in [
        "road-zwolle-amsterdam.gpx",
        "loop-celje-lokalni-hribcki.gpx",
        "loop-celje-resevno-2021-03-27.gpx",
        "out-and-back-ljubljana.gpx",
    ] {
        let r = real_ride(name);
        let o = rides_it_without_a_cut(&r.geo, &r.steps);
        assert!(
            o.state.incidents.episodes.is_empty(),
            "{name}: {:?}",
            o.state.incidents.episodes
        );
    }
}

#[test]
fn a_detour_of_400_m_for_nine_minutes_rejoins_and_finishes() {
    let r = real_ride("road-zwolle-amsterdam.gpx");
    let from = T0 + 40 * 60_000;
    let steps = detour(&r.steps, from, 9 * 60_000, 400.0);
    let o = rides_it_without_a_cut(&r.geo, &steps);
    let episodes = &o.state.incidents.episodes;
    assert_eq!(episodes.len(), 1, "{episodes:?}");
    let e = episodes[0];
    assert!(e.to_ms.is_some());
    assert!(
        (300.0..460.0).contains(&e.max_offset_m),
        "max distance {}",
        e.max_offset_m
    );
    assert!(
        e.from_ms >= from && e.to_ms.unwrap() <= from + 9 * 60_000,
        "{e:?}"
    );
    assert!(!o.state.off_course);
}

#[test]
fn a_detour_longer_than_the_search_window_of_two_fixes_still_rejoins() {
    // The bug this guards against: the search grew only with the time since the previous
    // fix, so a racer rejoining kilometres ahead was never found again.
    let r = real_ride("loop-celje-lokalni-hribcki.gpx");
    let from = T0 + 20 * 60_000;
    let steps = detour(&r.steps, from, 12 * 60_000, 500.0);
    rides_it_without_a_cut(&r.geo, &steps);
}

#[test]
fn a_ten_minute_dropout_then_a_jump_far_ahead_is_not_a_cut() {
    let r = real_ride("road-zwolle-amsterdam.gpx");
    let from = T0 + 30 * 60_000;
    let steps = dropout(&r.steps, from, 10 * 60_000);
    let k = step_at(&steps, from);
    let jump = steps[k].truth_m.unwrap() - steps[k - 1].truth_m.unwrap();
    assert!(jump > 3_000.0, "the dropout jumps {jump} m");
    let o = rides_it_without_a_cut(&r.geo, &steps);
    assert!(o.state.incidents.episodes.is_empty());
}

#[test]
fn a_cut_across_the_course_s_own_bends_is_flagged_and_credited_under_flag() {
    let r = real_ride("mtb-pause-celje-2018-06-26.gpx");
    let (i, j) = best_cut(&r, 10_000.0..20_000.0, 500.0);
    let (o, c) = ride_a_cut(&r, i, j, &RULES);
    assert!(!c.held);
    assert_cut_starts_near(&c, &r, i);
    assert_cut_ends_near(&c, &r, j);
    assert!(o.state.incidents.cut_suspected());
    assert!(
        o.state.finished_at_ms.is_some(),
        "flag credits the progress"
    );
}

#[test]
fn a_short_cut_of_two_kilometres_through_250_m_is_flagged_too() {
    let r = real_ride("loop-celje-resevno-2021-03-27.gpx");
    let (i, j) = best_cut(&r, 1_500.0..5_000.0, 600.0);
    let (o, c) = ride_a_cut(&r, i, j, &RULES);
    assert_cut_starts_near(&c, &r, i);
    assert_cut_ends_near(&c, &r, j);
    assert!(o.state.finished_at_ms.is_some());
}

#[test]
fn a_shortcut_at_a_plausible_speed_is_caught_by_the_racer_s_own_pace() {
    // 1.5 km of course skipped through 450 m at the racer's speed: a speed along the course
    // a racer could ride (below max_course_speed_mps), but three times this racer's pace
    // while they were seen off the course all along.
    let r = real_ride("loop-celje-lokalni-hribcki.gpx");
    let (i, j) = best_cut(&r, 1_200.0..2_000.0, 500.0);
    let (from, to) = (r.steps[i].truth_m.unwrap(), r.steps[j].truth_m.unwrap());
    let straight = r.steps[i].fix.position.distance_m(r.steps[j].fix.position);
    let speed = (to - from) / ((r.steps[j].fix.at_ms - r.steps[i].fix.at_ms) as f64 / 1000.0);
    assert!(
        (to - from) / (straight / speed) < RULES.max_course_speed_mps,
        "the speed rule alone would see this one"
    );
    let (_, c) = ride_a_cut(&r, i, j, &RULES);
    assert_cut_starts_near(&c, &r, i);
}

#[test]
fn under_hold_a_cutter_is_not_credited_past_the_cut() {
    let r = real_ride("mtb-pause-celje-2018-06-26.gpx");
    let (i, j) = best_cut(&r, 10_000.0..20_000.0, 500.0);
    let from = r.steps[i].truth_m.unwrap();
    let hold = TrackingRules {
        cut_rule: CutRule::Hold,
        ..*RULES
    };
    let (o, c) = ride_a_cut(&r, i, j, &hold);
    assert!(c.held);
    assert!(o.state.finished_at_ms.is_none());
    let p = o.state.progress_m.unwrap();
    assert!((p - from).abs() < 300.0, "held at {p}, cut from {from}");
    assert!(o.state.held_cut.is_some());
}

#[test]
fn a_cutter_who_goes_back_to_the_cut_under_hold_is_released() {
    let r = real_ride("mtb-pause-celje-2018-06-26.gpx");
    let (i, j) = best_cut(&r, 10_000.0..20_000.0, 500.0);
    let hold = TrackingRules {
        cut_rule: CutRule::Hold,
        ..*RULES
    };
    // Cut, ride on a minute, then ride straight back to where the cut began and ride the
    // course from there: the racer is credited again.
    let from = r.steps[i].truth_m.unwrap();
    let mut steps = cut(&r.steps, i, j);
    let rejoined = (i + 1..steps.len())
        .find(|&k| steps[k].truth_m.is_some_and(|t| t > from + 1_000.0))
        .unwrap();
    let resume = step_at(&steps, steps[rejoined].fix.at_ms + 60_000);
    steps.truncate(resume);
    let here = steps[resume - 1].fix;
    let back = r.steps[i].fix.position;
    let (dx, dy) = here.position.offset_m(back);
    let secs = (dx.hypot(dy) / 7.0).ceil() as i64;
    for s in 1..=secs {
        let f = s as f64 / secs as f64;
        steps.push(Step {
            fix: fix_at(here.at_ms + s * 1000, here.position.moved_m(dx * f, dy * f)),
            truth_m: None,
        });
    }
    let offset = steps.last().unwrap().fix.at_ms + 1000 - r.steps[i].fix.at_ms;
    steps.extend(r.steps[i..].iter().map(|s| {
        let mut s = *s;
        s.fix.at_ms += offset;
        s
    }));
    let o = ride(&r.geo, &steps, &hold);
    assert!(o
        .events
        .iter()
        .any(|e| matches!(e, RacerEvent::CutReleased { .. })));
    assert!(o.state.held_cut.is_none());
    assert!(o.state.finished_at_ms.is_some(), "{:?}", o.state.progress_m);
}

#[test]
fn a_detour_near_a_self_crossing_rejoins_on_the_leg_it_left() {
    let r = real_ride("loop-celje-resevno-2021-03-27.gpx");
    // Where the ride comes back within 30 m of itself more than 3 km later along it.
    let truth = |k: usize| r.steps[k].truth_m.unwrap_or(0.0);
    let crossing = (0..r.steps.len())
        .step_by(3)
        .find(|&a| {
            truth(a) > 2_000.0
                && (a..r.steps.len()).step_by(3).any(|b| {
                    truth(b) - truth(a) > 3_000.0
                        && r.steps[a].fix.position.distance_m(r.steps[b].fix.position) < 30.0
                })
        })
        .expect("the lollipop crosses itself");
    // A three-minute detour, 250 m out, that ends right at the crossing.
    let at = r.steps[crossing].fix.at_ms;
    let steps = detour(&r.steps, at - 180_000, 200_000, 250.0);
    rides_it_without_a_cut(&r.geo, &steps);
}

#[test]
fn an_out_and_back_detour_does_not_jump_to_the_way_back() {
    let r = real_ride("out-and-back-ljubljana.gpx");
    let from = T0 + 4 * 60_000;
    let steps = detour(&r.steps, from, 4 * 60_000, 300.0);
    rides_it_without_a_cut(&r.geo, &steps);
}

/// A synthetic course due north with gentle bends, `km` long.
fn northbound(km: usize, bends: &[f64]) -> Course {
    let mut raw = Vec::new();
    for k in 0..=km * 10 {
        let east = bends[k % bends.len()];
        let p = Position::from_degrees(46.0, 15.0)
            .unwrap()
            .moved_m(east, k as f64 * 100.0);
        raw.push((p.lat(), p.lon()));
    }
    Course::from_degrees(&raw, 100_000).unwrap()
}

/// A racer riding `course` at `speed_mps` with a fix every `every_s` and `noise_m` of jitter,
/// and on past the finish as the simulator's rides do.
fn ridden(course: &Course, speed_mps: f64, every_s: f64, noise_m: f64, seed: u64) -> Vec<Step> {
    let index = CourseIndex::from(course);
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng >> 11) as f64 / (1u64 << 53) as f64
    };
    let length = index.length_m();
    let mut samples = Vec::new();
    let mut truth = HashMap::new();
    let mut t = 0.0;
    loop {
        let d = (t * speed_mps).min(length);
        let (r, a) = (noise_m * next(), std::f64::consts::TAU * next());
        let position = index.position_at(d).moved_m(r * a.sin(), r * a.cos());
        truth.insert(position, d);
        samples.push(Sample {
            position,
            at_ms: Some(T0 + (t * 1000.0) as i64),
            elevation_dm: None,
        });
        if d >= length {
            break;
        }
        t += every_s;
    }
    let ride = Ride::from_samples(&samples).unwrap();
    ride.points
        .iter()
        .map(|p| Step {
            fix: fix_at(T0 + p.elapsed_ms, p.position),
            truth_m: truth.get(&p.position).copied(),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Detours of any size and length and dropouts of any length, at a speed a racer rides:
    /// the racer finishes credited with the course, and no cut is suspected.
    #[test]
    fn detours_and_dropouts_never_cost_the_distance_nor_look_like_cuts(
        speed in 3.0f64..16.0,
        every in 1.0f64..15.0,
        noise in 0.0f64..15.0,
        detour_at in 0.1f64..0.6,
        detour_s in 40i64..900,
        detour_m in 150.0f64..700.0,
        dropout_at in 0.65f64..0.85,
        dropout_s in 60i64..1200,
        seed in any::<u64>(),
        bends in proptest::collection::vec(-40.0f64..40.0, 1..6),
    ) {
        let course = northbound(30, &bends);
        let geo = CourseGeometry::new(&course, &[], &RULES);
        let steps = ridden(&course, speed, every, noise, seed);
        let total_ms = steps.last().unwrap().fix.at_ms - T0;
        let at = |f: f64| T0 + (total_ms as f64 * f) as i64;
        // The detour ends before the finish too: a racer 600 m beside the line does not
        // cross it.
        let detour_ms = (detour_s * 1000).min(at(0.62) - at(detour_at));
        let steps = detour(&steps, at(detour_at), detour_ms, detour_m);
        // The dropout ends before the finish, so the racer is seen crossing the line.
        let dropout_ms = (dropout_s * 1000).min(at(0.95) - at(dropout_at));
        let steps = dropout(&steps, at(dropout_at), dropout_ms);
        let o = ride(&geo, &steps, &RULES);
        prop_assert!(o.state.incidents.cuts.is_empty(), "{:?}", o.state.incidents.cuts);
        prop_assert!(o.state.finished_at_ms.is_some(), "{:?}", o.state.progress_m);
        prop_assert!((o.state.progress_m.unwrap() - geo.index.length_m()).abs() < 100.0);
    }

    /// Skipping a stretch of a switchback course straight across saves time: whenever the
    /// stretch is longer than the sustained course speed allows in the time the shortcut
    /// took (plus the tolerance and a few fixes to be sure), the cut is suspected, from about
    /// where the racer left to about where they came back, and only that one.
    #[test]
    fn cuts_that_save_more_than_the_rules_allow_are_always_suspected(
        speed in 3.0f64..12.0,
        every in 1.0f64..10.0,
        legs_skipped in 2usize..9,
        first_leg in 1usize..4,
        seed in any::<u64>(),
    ) {
        // Legs 1 km long running east and west, 150 m apart, going north.
        let mut raw = Vec::new();
        let origin = Position::from_degrees(46.0, 15.0).unwrap();
        for leg in 0..14 {
            let north = leg as f64 * 150.0;
            let (a, b) = if leg % 2 == 0 { (0.0, 1000.0) } else { (1000.0, 0.0) };
            for (e, n) in [(a, north), (b, north)] {
                let p = origin.moved_m(e, n);
                raw.push((p.lat(), p.lon()));
            }
        }
        let course = Course::from_degrees(&raw, 10_000).unwrap();
        let geo = CourseGeometry::new(&course, &[], &RULES);
        let steps = ridden(&course, speed, every, 5.0, seed);
        let mid = |leg: usize| leg as f64 * 1150.0 + 500.0;
        let (from_m, to_m) = (mid(first_leg), mid(first_leg + legs_skipped));
        let i = steps.partition_point(|s| s.truth_m.unwrap_or(0.0) < from_m);
        let j = steps.partition_point(|s| s.truth_m.unwrap_or(0.0) < to_m);
        let crossing_s = legs_skipped as f64 * 150.0 / speed + 3.0 * every + 5.0;
        let must_flag =
            to_m - from_m > RULES.max_course_speed_mps * crossing_s + RULES.cut_tolerance_m;
        let o = ride(&geo, &cut(&steps, i, j), &RULES);
        prop_assert!(o.state.finished_at_ms.is_some(), "flag credits the cut");
        prop_assert!(o.state.incidents.cuts.len() <= 1, "{:?}", o.state.incidents.cuts);
        if must_flag {
            prop_assert_eq!(o.state.incidents.cuts.len(), 1, "{:?}", o.state.incidents.cuts);
            let c = o.state.incidents.cuts[0];
            prop_assert!((c.from_m - from_m).abs() < 400.0, "{:?} from {}", c, from_m);
            prop_assert!(c.to_m > to_m - 400.0, "{:?} to {}", c, to_m);
        }
    }
}
