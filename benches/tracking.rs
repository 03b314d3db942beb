//! Racer tracking: what judging a fix costs, for a ride that goes as planned and for the
//! same ride gone wrong, measured in the same run.
//!
//! Why: every fix of every racer goes through `RacerState::handle` in its racer actor. On the
//! course, a fix is projected within a small window around the last progress; off the course
//! (a detour) it is searched again from the last confirmed fix as far as the racer could
//! have ridden, and then anywhere ahead: those fixes cost more, and this says how much.
//!
//! Cases, each a whole ride fed fix by fix (fixes/s is the throughput):
//! - `clean`: `road-zwolle-amsterdam.gpx` (100 km, 10,863 fixes at 1 Hz) as recorded: the
//!   baseline;
//! - `detour`: the same ride with a 400 m detour for nine minutes at 40 min (about 540 fixes
//!   off the course, each searching up to the whole reach since the last confirmed fix);
//! - `cut`: `mtb-pause-celje-2018-06-26.gpx` as recorded, and with 15 km skipped through a
//!   shortcut of at most 500 m (the simulator's own `cut`), so the two compare on one course.
//!
//! Run: `cargo bench --bench tracking` (about a minute). Report ratios against `clean` from
//! the same run; quote medians.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use peloton::actors::race::domain::RaceSettings;
use peloton::actors::racer::{CourseGeometry, Fix, RacerState, TrackingRules};
use peloton::cli::sim::faults;
use peloton::cli::sim::ride::Ride;
use peloton::config::Config;
use peloton::geo::Course;
use std::hint::black_box;
use std::sync::LazyLock;
use std::time::Duration;

/// The shipped defaults (`config.toml`, read as the server reads it).
static RULES: LazyLock<TrackingRules> = LazyLock::new(|| {
    RaceSettings::from_config(&Config::defaults().expect("the embedded config is valid")).rules
});

/// Device time of a ride's first fix.
const T0: i64 = 1_790_000_000_000;

/// The course and the ride of a shared GPX file.
fn load(name: &str) -> (CourseGeometry, Ride) {
    let path = format!("{}/../shared/data/gpx/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let course = Course::from_gpx(&bytes, 200_000).expect("course");
    let ride = Ride::from_gpx(&bytes, 200_000).expect("ride");
    (CourseGeometry::new(&course, &[], &RULES), ride)
}

/// A ride's points as a phone's fixes.
fn fixes(ride: &Ride) -> Vec<Fix> {
    ride.points
        .iter()
        .map(|p| Fix {
            at_ms: T0 + p.elapsed_ms,
            position: p.position,
            accuracy_m: 5.0,
            speed_mps: None,
            elevation_m: None,
        })
        .collect()
}

/// Feeds every fix, as a racer actor does; the state at the end (so nothing is optimised
/// away) and how many fixes were accepted.
fn feed(geo: &CourseGeometry, fixes: &[Fix]) -> (RacerState, usize) {
    let mut state = RacerState::default();
    let mut accepted = 0;
    for fix in fixes {
        if let Ok(events) = state.handle(*fix, geo, &RULES) {
            for e in &events {
                state.apply(e);
            }
            accepted += 1;
        }
    }
    (state, accepted)
}

/// Point indices of the ride where a straight line of at most `straight_m`, leaving the
/// course (its middle more than 120 m from any part of it), skips the most.
fn widest_cut(geo: &CourseGeometry, ride: &Ride, straight_m: f64) -> (usize, usize) {
    let n = ride.recorded;
    let mut cum = vec![0.0; n];
    for k in 1..n {
        cum[k] = cum[k - 1]
            + ride.points[k - 1]
                .position
                .distance_m(ride.points[k].position);
    }
    let mut best = (0, 0, 0.0);
    for i in (0..n).step_by(10) {
        for j in (i..n.saturating_sub(50)).step_by(10) {
            let skipped = cum[j] - cum[i];
            let (a, b) = (ride.points[i].position, ride.points[j].position);
            if skipped > best.2 && a.distance_m(b) <= straight_m {
                let (east, north) = a.offset_m(b);
                let middle = a.moved_m(east / 2.0, north / 2.0);
                if geo
                    .index
                    .distance_to_course(middle, 0.0, f64::INFINITY, 120.0)
                    .is_none()
                {
                    best = (i, j, skipped);
                }
            }
        }
    }
    (best.0, best.1)
}

fn bench_tracking(c: &mut Criterion) {
    let (road, ride) = load("road-zwolle-amsterdam.gpx");
    let clean = fixes(&ride);
    let from_ms = 40 * 60_000;
    let heading = |ms: i64| {
        ride.points
            .iter()
            .find(|p| p.elapsed_ms >= ms)
            .map_or(ride.points[0].position, |p| p.position)
    };
    let (dx, dy) = heading(from_ms).offset_m(heading(from_ms + 540_000));
    let norm = dx.hypot(dy).max(1e-9);
    let detoured = fixes(&faults::detour(
        &ride,
        from_ms,
        540_000,
        60_000,
        (dy / norm * 400.0, -dx / norm * 400.0),
    ));
    let (mtb, mtb_ride) = load("mtb-pause-celje-2018-06-26.gpx");
    let (i, j) = widest_cut(&mtb, &mtb_ride, 500.0);
    let mtb_clean = fixes(&mtb_ride);
    let cut = fixes(&faults::cut(&mtb_ride, i, j));

    // What each case does, so a figure is never read without knowing the ride worked.
    for (name, geo, fixes) in [
        ("clean", &road, &clean),
        ("detour", &road, &detoured),
        ("mtb clean", &mtb, &mtb_clean),
        ("mtb cut", &mtb, &cut),
    ] {
        let (state, accepted) = feed(geo, fixes);
        eprintln!(
            "{name}: {} fixes, {accepted} accepted, progress {:.0} m of {:.0}, finished {}, \
             {} off-course episodes, {} suspected cuts",
            fixes.len(),
            state.progress_m.unwrap_or(0.0),
            geo.index.length_m(),
            state.finished_at_ms.is_some(),
            state.incidents.episodes.len(),
            state.incidents.cuts.len()
        );
    }

    let mut group = c.benchmark_group("tracking");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for (name, geo, fixes) in [
        ("clean", &road, &clean),
        ("detour", &road, &detoured),
        ("mtb_clean", &mtb, &mtb_clean),
        ("mtb_cut", &mtb, &cut),
    ] {
        group.throughput(Throughput::Elements(fixes.len() as u64));
        group.bench_function(name, |b| b.iter(|| feed(geo, black_box(fixes))));
    }
    group.finish();
}

criterion_group!(benches, bench_tracking);
criterion_main!(benches);
