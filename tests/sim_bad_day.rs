//! `peloton sim race` rehearsing a bad day, as an organiser runs it: the real binary against a
//! real server in a child process, replaying a real recorded ride with a phone that loses its
//! signal for ten minutes, a racer who abandons and one who never shows up. The run waits only
//! for the racers expected to finish, and the results say what happened to each.

mod common;

use common::{bin, gpx_path, keys_for, token, ChildServer};
use peloton::auth::Role;
use peloton::time::{format_rfc3339, now_ms};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const RIDE: &str = "loop-celje-resevno-2020-09-20.gpx";

/// A child server with a fresh data folder and an admin token signed with its secret.
struct Setup {
    /// The server's data folder; the simulator reads the signing secret from it.
    dir: tempfile::TempDir,
    /// The server, killed when the test ends.
    server: ChildServer,
    /// What an operator exports as PELOTON_TOKEN.
    admin_token: String,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_for(dir.path());
    let admin_token = token(&keys, Role::Admin, "ops", None, 3600);
    let server = ChildServer::start(dir.path(), &[]);
    Setup {
        dir,
        server,
        admin_token,
    }
}

impl Setup {
    /// `peloton <args>` pointed at this server with the admin token, and nothing from the
    /// developer's environment that could change where the secret is found.
    fn peloton(&self, args: &[&str]) -> Command {
        let mut command = bin();
        command
            .args(args)
            .env("PELOTON_SERVER", &self.server.url)
            .env("PELOTON_TOKEN", &self.admin_token)
            .env_remove("PELOTON_AUTH_SECRET")
            .env_remove("PELOTON_CONFIG")
            .env_remove("PELOTON_DATA");
        command
    }

    fn admin_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["admin"];
        all.extend_from_slice(args);
        let out = self.peloton(&all).output().unwrap();
        assert!(
            out.status.success(),
            "{all:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A scheduled race on `RIDE` starting now; its id.
    fn race_starting_now(&self) -> String {
        self.race_starting_at(now_ms())
    }

    /// A scheduled race on `RIDE` starting at `at_ms`; its id.
    fn race_starting_at(&self, at_ms: i64) -> String {
        let course = gpx_path(RIDE);
        let created = self.admin_json(&[
            "race",
            "create",
            "--name",
            "Bad day",
            "--course",
            course.to_str().unwrap(),
            "--start",
            &format_rfc3339(at_ms),
            "--json",
        ]);
        created["id"].as_str().unwrap().to_owned()
    }

    /// `peloton sim race` on `race` with the ride, the data folder and `extra` flags.
    fn sim(&self, race: &str, extra: &[&str]) -> Command {
        let ride = gpx_path(RIDE);
        let data = self.dir.path().to_str().unwrap();
        let mut args = vec![
            "sim",
            "race",
            "--race",
            race,
            "--gpx",
            ride.to_str().unwrap(),
            "--data",
            data,
        ];
        args.extend_from_slice(extra);
        self.peloton(&args)
    }
}

/// Runs `command` to completion, killing it and failing the test after `limit`.
fn run_bounded(mut command: Command, limit: Duration, scratch: &Path) -> Output {
    let stdout_path = scratch.join("sim.stdout");
    let stderr_path = scratch.join("sim.stderr");
    // Files rather than pipes: nothing can block on a full pipe while we wait.
    command
        .stdout(Stdio::from(std::fs::File::create(&stdout_path).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&stderr_path).unwrap()));
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the simulator did not exit within {limit:?}; stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Output {
        status,
        stdout: std::fs::read(&stdout_path).unwrap(),
        stderr: std::fs::read(&stderr_path).unwrap(),
    }
}

#[test]
fn a_dropout_an_abandon_and_a_no_show_end_as_they_would_on_the_day() {
    let s = setup();
    let race = s.race_starting_now();
    let started = Instant::now();
    // 3 h 18 min of ride at 2000x is about 6 s.
    let out = run_bounded(
        s.sim(
            &race,
            &[
                "--racers",
                "5",
                "--speedup",
                "2000",
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
                "--json",
            ],
        ),
        Duration::from_secs(120),
        s.dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));

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

    let course_km = s.admin_json(&["race", "show", &race, "--json"])["course_length_m"]
        .as_f64()
        .unwrap()
        / 1000.0;
    assert!((course_km - 33.6).abs() < 1.0, "{course_km}");
    let results = s.admin_json(&["race", "results", &race, "--format", "json"]);
    let rows = results.as_array().unwrap();
    assert_eq!(rows.len(), 5, "{results}");
    let row = |bib: u64| {
        rows.iter()
            .find(|r| r["bib"].as_u64() == Some(bib))
            .unwrap_or_else(|| panic!("bib {bib} missing: {results}"))
    };
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
        let out = run_bounded(s.sim(&race, &args), Duration::from_secs(60), s.dir.path());
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
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
    let out = run_bounded(
        s.sim(
            &race,
            &[
                "--racers",
                "5",
                "--speedup",
                "2000",
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
                "--json",
            ],
        ),
        Duration::from_secs(120),
        s.dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
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

    let course_km = s.admin_json(&["race", "show", &race, "--json"])["course_length_m"]
        .as_f64()
        .unwrap()
        / 1000.0;
    let results = s.admin_json(&["race", "results", &race, "--format", "json"]);
    let rows = results.as_array().unwrap();
    let row = |bib: u64| {
        rows.iter()
            .find(|r| r["bib"].as_u64() == Some(bib))
            .unwrap_or_else(|| panic!("bib {bib} missing: {results}"))
    };
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
