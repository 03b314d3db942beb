//! `peloton sim race` as an operator runs it: the real binary against a real server in a child
//! process, replaying a real recorded ride until every simulated racer has finished, and
//! refusing with one clear line what it cannot run.

mod common;

use common::sim::{summary, SimSetup, RIDE};
use common::{gpx_path, keys_for, token};
use peloton::auth::Role;
use peloton::time::now_ms;
use std::time::Duration;

/// A child server for the simulator, its races named for this file.
fn setup() -> SimSetup {
    SimSetup::start("Sim test")
}

#[test]
fn five_simulated_racers_replay_a_real_ride_until_all_have_finished() {
    let s = setup();
    let race = s.race_starting_now();
    // The ride took 3 h 18 min; at 2000x that is about 6 s, plus each racer's pace and offset.
    let (out, stderr) = s.run_ok_within_a_minute(s.five_racers(&race, &[]));
    let summary = summary(&out);
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
    let results = s.results(&race);
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
        s.exit_and_stderr(s.peloton(&args))
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

/// The same five racers on the same recorded ride, once sending every recorded fix and once
/// obeying the interval the server asks for: everyone still finishes, with far fewer fixes.
#[test]
fn racers_that_obey_the_servers_pace_finish_with_fewer_fixes() {
    let s = setup();
    let every = s.race_starting_now();
    let (out, _) = s.run_ok_within_a_minute(s.five_racers(&every, &[]));
    let every = summary(&out);
    let paced = s.race_starting_now();
    let (out, _) = s.run_ok_within_a_minute(s.five_racers(&paced, &["--obey-pace"]));
    let paced = summary(&out);
    assert_eq!(paced["finished"], 5, "{paced}");
    let sent = |s: &serde_json::Value| s["fixes_sent"].as_u64().unwrap();
    let left_out = paced["fixes_paced_out"].as_u64().unwrap();
    println!(
        "every recorded fix: {} sent; obeying the pace: {} sent, {left_out} left out ({:.1}x fewer)",
        sent(&every),
        sent(&paced),
        sent(&every) as f64 / sent(&paced).max(1) as f64
    );
    assert_eq!(every["fixes_paced_out"], 0, "{every}");
    // The recording has a point every 3.5 s, so only stretches alone (10 s) thin out; at
    // 2000x the pace also lags by a few hundred race seconds. A quarter fewer is the floor.
    assert!(sent(&paced) * 4 < sent(&every) * 3, "{every} {paced}");
    // The same ride either way: what was sent plus what was left out is the recording.
    let recorded = sent(&paced) + left_out;
    assert!(
        recorded.abs_diff(sent(&every)) < sent(&every) / 20,
        "{every} {paced}"
    );
}
