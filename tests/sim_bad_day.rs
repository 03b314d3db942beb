//! `peloton sim race` rehearsing a bad day, as an organiser runs it: the real binary against a
//! real server in a child process, replaying a real recorded ride with a phone that loses its
//! signal for ten minutes, a racer who abandons and one who never shows up. The run waits only
//! for the racers expected to finish, and the results say what happened to each.

mod common;

use common::sim::{summary, SimSetup};
use peloton::time::now_ms;

/// A child server for the simulator, its races named for this file.
fn setup() -> SimSetup {
    SimSetup::start("Bad day")
}

/// Bib `bib`'s row in the JSON `results`.
fn row_of(results: &serde_json::Value, bib: u64) -> &serde_json::Value {
    results
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["bib"].as_u64() == Some(bib))
        .unwrap_or_else(|| panic!("bib {bib} missing: {results}"))
}

#[test]
fn a_dropout_an_abandon_and_a_no_show_end_as_they_would_on_the_day() {
    let s = setup();
    let race = s.race_starting_now();
    // 3 h 18 min of ride at 2000x is about 6 s.
    let (out, stderr) = s.run_ok_within_a_minute(s.five_racers(
        &race,
        &[
            "--seed",
            "7",
            "--dropouts",
            "1",
            "--dropout-secs",
            "600",
            "--abandons",
            "1",
            "--no-shows",
            "1",
        ],
    ));
    let summary = summary(&out);

    // Who got which fault: one line each at the start, and in the summary.
    let faults = summary["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 3, "{summary}");
    let bib_of = |name: &str| -> u64 {
        let hit: Vec<&serde_json::Value> = faults.iter().filter(|f| f["fault"] == name).collect();
        assert_eq!(hit.len(), 1, "{name}: {summary}");
        hit[0]["bib"].as_u64().unwrap()
    };
    let (dropout, abandon, no_show) = (bib_of("dropout"), bib_of("abandon"), bib_of("no-show"));
    assert!(
        stderr.contains(&format!(
            "sim: bib {dropout} dropout: no signal for 0:10:00"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("sim: bib {abandon} abandon: abandons")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("sim: bib {no_show} no-show: never starts")),
        "{stderr}"
    );
    let normal: Vec<u64> = (1..=5)
        .filter(|b| ![dropout, abandon, no_show].contains(b))
        .collect();
    assert_eq!(normal.len(), 2);

    // The run waited for the three expected to finish, and they did.
    assert_eq!(summary["racers"], 5, "{summary}");
    assert_eq!(summary["expected"], 3, "{summary}");
    assert_eq!(summary["expected_finished"], 3, "{summary}");
    assert_eq!(summary["finished"], 3, "{summary}");

    let course_km = s.course_km(&race);
    assert!((course_km - 33.6).abs() < 1.0, "{course_km}");
    let results = s.results(&race);
    let rows = results.as_array().unwrap();
    assert_eq!(rows.len(), 5, "{results}");
    let row = |bib: u64| row_of(&results, bib);
    let km = |bib: u64| row(bib)["distance_km"].as_f64().unwrap();

    // The normal riders and the one whose phone went silent for ten minutes rode it all.
    for bib in normal.iter().copied().chain([dropout]) {
        assert_eq!(row(bib)["status"], "finished", "bib {bib}: {results}");
        assert!(
            (km(bib) - course_km).abs() < 0.02 * course_km,
            "bib {bib} rode {} of {course_km} km: {results}",
            km(bib)
        );
    }
    // The one who abandoned got partway and no further.
    assert_ne!(row(abandon)["status"], "finished", "{results}");
    assert!(km(abandon) > 0.0, "{results}");
    assert!(km(abandon) < 0.9 * course_km, "{results}");
    // The one who never showed up has no fix at all.
    assert_eq!(row(no_show)["status"], "dns", "{results}");
    assert_eq!(km(no_show), 0.0, "{results}");
}

#[test]
fn bad_day_flags_that_cannot_happen_are_refused_before_anything_changes() {
    let s = setup();
    // Starting in an hour, so only the simulator could have started it.
    let race = s.race_starting_at(now_ms() + 3_600_000);
    let refused = |extra: &[&str]| {
        let mut args = vec!["--racers", "3", "--speedup", "2000"];
        args.extend_from_slice(extra);
        s.exit_and_stderr(s.sim(&race, &args))
    };
    let (code, err) = refused(&["--abandons", "2", "--no-shows", "2"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("4 racers with a fault"), "{err}");
    let (code, err) = refused(&["--dropouts", "1", "--dropout-secs", "20000"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--dropout-secs 20000 is too long"), "{err}");
    let (code, err) = refused(&[
        "--detours",
        "1",
        "--detour-m",
        "2000",
        "--detour-secs",
        "60",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--detour-secs 60 is too short"), "{err}");
    let (code, err) = refused(&["--cuts", "1", "--cut-m", "40000"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--cut-m 40000 is too long"), "{err}");
    // Out of range for clap itself.
    let (code, err) = refused(&["--pauses", "1", "--pause-secs", "0"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--pause-secs"), "{err}");
    let (code, err) = refused(&["--detours", "-1"]);
    assert_eq!(code, Some(2), "{err}");
    // Nothing was registered, nothing started.
    let shown = s.admin_json(&["race", "show", &race, "--json"]);
    assert_eq!(shown["state"], "scheduled");
    let racers = s.admin_json(&["race", "racers", "list", &race, "--json"]);
    assert_eq!(racers.as_array().unwrap().len(), 0);
}

#[test]
fn detours_and_pauses_ride_it_all_and_a_cutter_is_flagged_with_the_stretch_skipped() {
    let s = setup();
    let race = s.race_starting_now();
    let (out, _) = s.run_ok(s.five_racers(
        &race,
        &[
            "--seed",
            "11",
            "--detours",
            "2",
            "--detour-m",
            "400",
            "--detour-secs",
            "540",
            "--pauses",
            "1",
            "--pause-secs",
            "300",
            "--cuts",
            "1",
            "--cut-m",
            "3000",
        ],
    ));
    let summary = summary(&out);
    let faults = summary["faults"].as_array().unwrap();
    let bibs_of = |name: &str| -> Vec<u64> {
        faults
            .iter()
            .filter(|f| f["fault"] == name)
            .map(|f| f["bib"].as_u64().unwrap())
            .collect()
    };
    let (detours, pauses, cutters) = (bibs_of("detour"), bibs_of("pause"), bibs_of("cut"));
    assert_eq!(
        (detours.len(), pauses.len(), cutters.len()),
        (2, 1, 1),
        "{summary}"
    );

    let course_km = s.course_km(&race);
    let results = s.results(&race);
    let row = |bib: u64| row_of(&results, bib);
    // Everyone who rode on, around a closed road or after a rest, finished with the course
    // and no cut; a detour of 400 m for nine minutes is one off-course episode.
    for bib in (1..=5).filter(|b| !cutters.contains(b)) {
        let r = row(bib);
        assert_eq!(r["status"], "finished", "bib {bib}: {results}");
        let km = r["distance_km"].as_f64().unwrap();
        assert!(
            (km - course_km).abs() < 0.02 * course_km,
            "bib {bib} rode {km}: {results}"
        );
        assert_eq!(
            r["cuts"].as_array().unwrap().len(),
            0,
            "bib {bib}: {results}"
        );
    }
    // A detour is kept as spells off the course (more than one where the side road passes
    // near the course), the farthest up to the detour's width (less where another part of
    // the course is nearer than the one left), and each ended.
    for &bib in &detours {
        let episodes = row(bib)["off_course"].as_array().unwrap().clone();
        assert!(!episodes.is_empty(), "bib {bib}: {results}");
        let farthest = episodes
            .iter()
            .map(|e| e["max_offset_m"].as_u64().unwrap())
            .max()
            .unwrap();
        assert!((200..=460).contains(&farthest), "bib {bib}: {results}");
        assert!(
            episodes.iter().all(|e| e["to_ms"].is_i64()),
            "back on the course: {results}"
        );
    }
    // The cutter is flagged with the stretch skipped, about as long as the cut.
    let cutter = row(cutters[0]);
    let cuts = cutter["cuts"].as_array().unwrap();
    assert_eq!(cuts.len(), 1, "{results}");
    let skipped = cuts[0]["to_km"].as_f64().unwrap() - cuts[0]["from_km"].as_f64().unwrap();
    assert!(skipped > 1.0, "skipped {skipped} km: {results}");
    assert_eq!(cuts[0]["held"], false, "the default rule flags: {results}");
}
