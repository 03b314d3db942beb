//! `peloton sim race` as an operator runs it: a child server, an admin token signed with its
//! secret, the `peloton` binary pointed at both, and a run of the simulator that cannot hang
//! the test.

use super::{bin, gpx_path, keys_for, token, ChildServer};
use peloton::auth::Role;
use peloton::time::{format_rfc3339, now_ms};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The recorded ride the simulator replays: a loop, so its finish is where it starts.
pub const RIDE: &str = "loop-celje-resevno-2020-09-20.gpx";

/// How long a run that should finish every racer may take before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// How long a run that should be refused may take before the test fails.
const REFUSAL_LIMIT: Duration = Duration::from_secs(60);

/// A child server with a fresh data folder and an admin token signed with its secret.
pub struct SimSetup {
    /// The server's data folder; the simulator reads the signing secret from it.
    pub dir: tempfile::TempDir,
    /// The server, killed when the test ends.
    pub server: ChildServer,
    /// What an operator exports as PELOTON_TOKEN.
    pub admin_token: String,
    /// The name every race this setup creates gets, so each test file's races are told apart.
    race_name: &'static str,
}

impl SimSetup {
    /// Starts the server; races created through this setup are named `race_name`.
    pub fn start(race_name: &'static str) -> SimSetup {
        let dir = tempfile::tempdir().unwrap();
        // Creates the secret the server will find in the same folder.
        let keys = keys_for(dir.path());
        let admin_token = token(&keys, Role::Admin, "ops", None, 3600);
        // The simulator dates fixes in race time, ahead of the clock by the speed-up (a 3 h
        // ride at 2000x is sent in seconds): the server must allow that much device skew.
        let server = ChildServer::start(
            dir.path(),
            &[("PELOTON_TRACKING_MAX_FUTURE_SKEW_MS", "86400000")],
        );
        SimSetup {
            dir,
            server,
            admin_token,
            race_name,
        }
    }

    /// `peloton <args>` pointed at this server with the admin token, and nothing from the
    /// developer's environment that could change where the secret is found.
    pub fn peloton(&self, args: &[&str]) -> Command {
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

    /// `peloton admin <args>`, which must succeed, its output read as JSON.
    pub fn admin_json(&self, args: &[&str]) -> serde_json::Value {
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
    pub fn race_starting_now(&self) -> String {
        self.race_starting_at(now_ms())
    }

    /// A scheduled race on `RIDE` starting at `at_ms`; its id.
    pub fn race_starting_at(&self, at_ms: i64) -> String {
        let course = gpx_path(RIDE);
        let created = self.admin_json(&[
            "race",
            "create",
            "--name",
            self.race_name,
            "--course",
            course.to_str().unwrap(),
            "--start",
            &format_rfc3339(at_ms),
            "--json",
        ]);
        created["id"].as_str().unwrap().to_owned()
    }

    /// The course length of `race` in kilometres, as the server measured it.
    pub fn course_km(&self, race: &str) -> f64 {
        self.admin_json(&["race", "show", race, "--json"])["course_length_m"]
            .as_f64()
            .unwrap()
            / 1000.0
    }

    /// The results of `race` as JSON rows.
    pub fn results(&self, race: &str) -> serde_json::Value {
        self.admin_json(&["race", "results", race, "--format", "json"])
    }

    /// `peloton sim race` on `race` with the ride, the data folder and `extra` flags.
    pub fn sim(&self, race: &str, extra: &[&str]) -> Command {
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

    /// `peloton sim race` of five racers at 2000 times real time on `race`, with `extra`
    /// flags and a JSON summary on stdout.
    pub fn five_racers(&self, race: &str, extra: &[&str]) -> Command {
        let mut args = vec!["--racers", "5", "--speedup", "2000"];
        args.extend_from_slice(extra);
        args.push("--json");
        self.sim(race, &args)
    }

    /// Runs the simulator, which must exit successfully in time: its output and its stderr.
    pub fn run_ok(&self, command: Command) -> (Output, String) {
        let out = run_bounded(command, RUN_LIMIT, self.dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
        (out, stderr)
    }

    /// As [`SimSetup::run_ok`], and the run must also have taken less than a minute: a
    /// replay sped up to seconds, not one that only just beat the limit.
    pub fn run_ok_within_a_minute(&self, command: Command) -> (Output, String) {
        let started = Instant::now();
        let (out, stderr) = self.run_ok(command);
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{:?}",
            started.elapsed()
        );
        (out, stderr)
    }

    /// Runs a command expected to be refused: its exit code and its stderr.
    pub fn exit_and_stderr(&self, command: Command) -> (Option<i32>, String) {
        let out = run_bounded(command, REFUSAL_LIMIT, self.dir.path());
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// The simulator's `--json` summary from its stdout.
pub fn summary(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Runs `command` to completion, killing it and failing the test after `limit`.
pub fn run_bounded(mut command: Command, limit: Duration, scratch: &Path) -> Output {
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
