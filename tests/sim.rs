//! `peloton sim race` as an operator runs it: the real binary against a real server in a child
//! process, replaying a real recorded ride until every simulated racer has finished, and
//! refusing with one clear line what it cannot run.

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
    // Creates the secret the server will find in the same folder.
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
            "Sim test",
            "--course",
            course.to_str().unwrap(),
            "--start",
            &format_rfc3339(at_ms),
            "--json",
        ]);
        created["id"].as_str().unwrap().to_owned()
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
fn five_simulated_racers_replay_a_real_ride_until_all_have_finished() {
    let s = setup();
    let race = s.race_starting_now();
    let ride = gpx_path(RIDE);
    let started = Instant::now();
    // The ride took 3 h 18 min; at 2000x that is about 6 s, plus each racer's pace and offset.
    let out = run_bounded(
        s.peloton(&[
            "sim",
            "race",
            "--race",
            &race,
            "--gpx",
            ride.to_str().unwrap(),
            "--racers",
            "5",
            "--speedup",
            "2000",
            "--data",
            s.dir.path().to_str().unwrap(),
            "--json",
        ]),
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
    assert_eq!(summary["race"], race.as_str());
    assert_eq!(summary["racers"], 5);
    assert_eq!(summary["finished"], 5, "{summary}");
    let sent = summary["fixes_sent"].as_u64().unwrap();
    let accepted = summary["fixes_accepted"].as_u64().unwrap();
    // Every racer sends the whole recording (3414 points) and its run-out past the line.
    assert!(sent >= 5 * 3000, "{summary}");
    assert!(accepted >= sent * 9 / 10, "{summary}");
    assert!(stderr.contains("5 racers (bibs 1-5)"), "{stderr}");

    // The race finished by itself once all five had crossed the line; the results are final.
    let mut state = serde_json::Value::Null;
    for _ in 0..50 {
        state = s.admin_json(&["race", "show", &race, "--json"])["state"].clone();
        if state == "finished" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(state, "finished");
    let results = s.admin_json(&["race", "results", &race, "--format", "json"]);
    let rows = results.as_array().unwrap();
    assert_eq!(rows.len(), 5, "{results}");
    for row in rows {
        assert_eq!(row["status"], "finished", "{results}");
        assert!(row["name"].as_str().unwrap().starts_with("Sim "), "{row}");
        // At least the recorded ride at the fastest pace (3 h 18 min / 1.15).
        assert!(row["time_s"].as_f64().unwrap() > 10_000.0, "{row}");
    }
}

#[test]
fn the_simulator_refuses_what_it_cannot_run_with_one_clear_line() {
    let s = setup();
    // Starting in an hour, so the clock leaves it scheduled while the simulator refuses.
    let race = s.race_starting_at(now_ms() + 3_600_000);
    let data = s.dir.path().to_str().unwrap().to_owned();
    let ride = gpx_path(RIDE);
    let ride = ride.to_str().unwrap();
    let sim = |gpx: &str, racers: &str, speedup: &str, extra: &[&str]| {
        let mut args = vec![
            "sim",
            "race",
            "--race",
            &race,
            "--gpx",
            gpx,
            "--racers",
            racers,
            "--speedup",
            speedup,
        ];
        args.extend_from_slice(extra);
        let out = run_bounded(s.peloton(&args), Duration::from_secs(60), s.dir.path());
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // A ride that ends elsewhere could never cross the finish line: refused up front, and
    // nothing changes on the server.
    let other = gpx_path("out-and-back-ljubljana.gpx");
    let (code, err) = sim(other.to_str().unwrap(), "3", "2000", &["--data", &data]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("could never cross the finish line"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let shown = s.admin_json(&["race", "show", &race, "--json"]);
    assert_eq!(shown["state"], "scheduled");
    let racers = s.admin_json(&["race", "racers", "list", &race, "--json"]);
    assert_eq!(racers.as_array().unwrap().len(), 0);

    // Without the server's secret it cannot sign racer tokens, and says where it looked.
    let empty = tempfile::tempdir().unwrap();
    let (code, err) = sim(
        ride,
        "3",
        "2000",
        &["--data", empty.path().to_str().unwrap()],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no signing secret"), "{err}");
    assert!(
        !empty.path().join("secret.key").exists(),
        "a secret the server does not know is never created"
    );

    // Bad flags.
    let (code, err) = sim(ride, "0", "2000", &["--data", &data]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = sim(ride, "3", "0", &["--data", &data]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--speedup"), "{err}");

    // A token that is not an admin's.
    let spectator = token(&keys_for(s.dir.path()), Role::Spectator, "fan", None, 3600);
    let (code, err) = sim(ride, "3", "2000", &["--data", &data, "--token", &spectator]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("admin token"), "{err}");
}
