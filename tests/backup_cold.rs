//! Backups to cold storage (issue 18, item 6), against real servers and real files: a
//! scheduled backup copied and verified into a second folder, the `after_backup` command
//! (succeeding, failing, not starting, hanging past its timeout) counted in `/metrics` while
//! the server keeps answering over its socket, the last-success gauge read back from the
//! backup folder by a restarted server, and `peloton backup verify` run as a user runs it.

mod common;

use common::{bin, http_get, live_race, ChildServer, TestServer};
use peloton::auth::Role;
use peloton::config::Config;
use peloton::engine::{scheduled_backup, HookOutcome, ScheduledBackup};
use peloton::net::codec::Codec;
use peloton::net::protocol::{Reply, Request};
use peloton::persist::backup;
use peloton::time::now_ms;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The ride the races of these tests are created on.
const RIDE: &str = "out-and-back-ljubljana.gpx";

/// Held by every test that runs scheduled backups in this process: the metrics recorder is
/// the process's, so one test's backups must not move another's counters or gauge.
static IN_PROCESS_BACKUPS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The value of one series (`name{labels}` exactly as exposed) in `/metrics`, 0 when absent
/// (a counter not yet recorded).
async fn metric(addr: SocketAddr, series: &str) -> f64 {
    let (status, body) = http_get(addr, "/metrics HTTP/1.1").await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a number"))
        .unwrap_or(0.0)
}

/// `peloton_backup_hooks_total{result="…"}`.
fn hooks(result: &str) -> String {
    format!("peloton_backup_hooks_total{{result=\"{result}\"}}")
}

/// `peloton_backup_hooks_total{result="…"}` now.
async fn hook_count(addr: SocketAddr, result: &'static str) -> f64 {
    metric(addr, &hooks(result)).await
}

/// `peloton_backup_copies_total{result="…"}`.
fn copies(result: &str) -> String {
    format!("peloton_backup_copies_total{{result=\"{result}\"}}")
}

/// The server's configuration, to run scheduled backups with it (or a variant of it).
fn config_of(server: &TestServer) -> Config {
    server.server.as_ref().unwrap().engine.config.clone()
}

/// One scheduled backup of `server`'s journal with `config`, as the timer runs it.
async fn backup_now(server: &TestServer, config: &Config) -> ScheduledBackup {
    scheduled_backup(config, &server.services().journal)
        .await
        .expect("the backup itself succeeds")
}

/// A race created and started over a real socket, so backups hold real data; its id.
async fn a_race(server: &TestServer) -> String {
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    let id = live_race(&mut admin, RIDE, now_ms() + 60_000, 3).await;
    admin.close().await;
    id
}

/// The server answers a request over a new socket: the ids of its races.
async fn race_ids(server: &TestServer) -> Vec<String> {
    let mut client = server.client(Role::Admin, Codec::Json).await;
    let reply = tokio::time::timeout(Duration::from_secs(5), client.request(Request::RaceList))
        .await
        .expect("answered in time")
        .expect("race list");
    client.close().await;
    let Reply::Races(races) = reply else {
        panic!("expected races, got {reply:?}")
    };
    races.into_iter().map(|r| r.id).collect()
}

/// The `.pbak` files of `dir`, by name (none while it does not exist).
fn backups_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pbak"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn scheduled_backups_land_verified_and_rotated_in_the_copy_folder() {
    let _serial = IN_PROCESS_BACKUPS.lock().await;
    let cold = tempfile::tempdir().unwrap();
    let cold_dir = cold.path().join("volume");
    let server = TestServer::start_with(|c| {
        c.persist.backup_copy_dir = cold_dir.clone();
        c.persist.backup_keep = 2;
    })
    .await;
    let race = a_race(&server).await;
    let config = config_of(&server);
    let copied_before = metric(server.addr, &copies("ok")).await;
    let started_s = now_ms() as f64 / 1000.0;
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(backup_now(&server, &config).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for run in &runs {
        let copy = run.copy.as_ref().expect("copies are on").as_ref().unwrap();
        assert_eq!(copy.path.parent(), Some(cold_dir.as_path()));
        assert_eq!(copy.path.file_name(), run.summary.path.file_name());
        assert_eq!(
            (copy.crc32, copy.records),
            (run.summary.crc32, run.summary.records)
        );
        assert!(run.hook.is_none(), "no hook configured");
    }
    // Rotated like the originals: the newest two, each a good backup of the same bytes.
    let kept = backups_in(&cold_dir);
    let originals = backups_in(&config.backup_dir());
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(
        kept.iter().map(|p| p.file_name()).collect::<Vec<_>>(),
        originals.iter().map(|p| p.file_name()).collect::<Vec<_>>()
    );
    for (copy, original) in kept.iter().zip(&originals) {
        assert_eq!(
            std::fs::read(copy).unwrap(),
            std::fs::read(original).unwrap()
        );
        assert!(backup::verify(copy).unwrap().records > 1);
    }
    assert_eq!(
        kept[1],
        runs[2].copy.as_ref().unwrap().as_ref().unwrap().path
    );
    let names: Vec<_> = std::fs::read_dir(&cold_dir).unwrap().collect();
    assert_eq!(names.len(), 2, "no temporary files left behind");

    // The copy restores into a new data folder with the race in it.
    let restored = tempfile::tempdir().unwrap();
    backup::restore(&kept[1], restored.path(), false).unwrap();
    let again = TestServer::start_with(|c| c.server.data_dir = restored.path().to_path_buf()).await;
    assert_eq!(race_ids(&again).await, vec![race.clone()]);
    again.stop().await;

    assert_eq!(
        metric(server.addr, &copies("ok")).await - copied_before,
        3.0
    );
    let last = metric(server.addr, "peloton_backup_last_success_timestamp_seconds").await;
    assert!(
        last >= started_s && last <= now_ms() as f64 / 1000.0 + 1.0,
        "last success {last}, backups taken from {started_s}"
    );
    server.stop().await;
}

#[tokio::test]
async fn failing_hooks_and_copies_are_counted_and_the_server_keeps_serving() {
    let _serial = IN_PROCESS_BACKUPS.lock().await;
    let server = TestServer::start().await;
    let race = a_race(&server).await;
    let base = config_of(&server);
    let (failed, spawn_error, ok, copy_errors) = (
        hook_count(server.addr, "failed").await,
        hook_count(server.addr, "spawn_error").await,
        hook_count(server.addr, "ok").await,
        metric(server.addr, &copies("error")).await,
    );

    // A command that exits 1.
    let mut config = base.clone();
    config.persist.after_backup = vec!["false".into()];
    let run = backup_now(&server, &config).await;
    assert!(
        matches!(&run.hook, Some(HookOutcome::Failed(status)) if status.contains('1')),
        "{:?}",
        run.hook
    );
    assert!(
        backup::verify(&run.summary.path).is_ok(),
        "the backup stays"
    );

    // A program that does not exist, and a copy folder that cannot be made (a file is in
    // the way): both counted, neither fails the backup.
    let blocker = server.dir.path().join("not-a-folder");
    std::fs::write(&blocker, b"in the way").unwrap();
    let mut config = base.clone();
    config.persist.after_backup =
        vec![server.dir.path().join("no-such-hook").display().to_string()];
    config.persist.backup_copy_dir = blocker.join("copies");
    let run = backup_now(&server, &config).await;
    assert!(
        matches!(&run.hook, Some(HookOutcome::SpawnError(_))),
        "{:?}",
        run.hook
    );
    assert!(matches!(run.copy, Some(Err(_))), "{:?}", run.copy);

    // A command that works gets the backup's path as its last argument: here it ships the
    // file to another folder, where it verifies.
    let shipped = server.dir.path().join("shipped.pbak");
    let mut config = base.clone();
    // `cp SOURCE DEST` wants the path first, so a shell script puts it there (the server
    // itself never uses a shell: `$1` is the appended path, `$0` the first argument).
    config.persist.after_backup = vec![
        "sh".into(),
        "-c".into(),
        "cp -- \"$1\" \"$0\"".into(),
        shipped.display().to_string(),
    ];
    let run = backup_now(&server, &config).await;
    assert_eq!(run.hook, Some(HookOutcome::Ok));
    let summary = backup::verify(&shipped).unwrap();
    assert_eq!(summary.crc32, run.summary.crc32);

    let after = |r| hook_count(server.addr, r);
    assert_eq!(after("failed").await - failed, 1.0);
    assert_eq!(after("spawn_error").await - spawn_error, 1.0);
    assert_eq!(after("ok").await - ok, 1.0);
    assert_eq!(
        metric(server.addr, &copies("error")).await - copy_errors,
        1.0
    );
    assert_eq!(race_ids(&server).await, vec![race], "still serving");
    server.stop().await;
}

/// This test process's own children running `sleep` (other tests start no `sleep`).
fn sleeping_children() -> Vec<u32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // `pid (comm) state ppid …`
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some((comm, rest)) = stat.split_once(") ") else {
                return false;
            };
            let mut fields = rest.split(' ');
            let state = fields.next();
            comm.ends_with("(sleep") && state != Some("Z") && fields.next() == Some(me.as_str())
        })
        .collect()
}

#[tokio::test]
async fn a_hung_hook_is_killed_at_its_timeout_without_holding_the_server() {
    let _serial = IN_PROCESS_BACKUPS.lock().await;
    let server = TestServer::start().await;
    let race = a_race(&server).await;
    let mut config = config_of(&server);
    // GNU `sleep` refuses the appended path as an interval, so the hook is a shell that
    // becomes `sleep 60` (one process: the one the server kills).
    config.persist.after_backup = vec!["sh".into(), "-c".into(), "exec sleep 60".into()];
    config.persist.after_backup_timeout_secs = 3;
    let timeouts = hook_count(server.addr, "timeout").await;
    let journal = server.services().journal.clone();
    let started = Instant::now();
    let task = tokio::spawn(async move { scheduled_backup(&config, &journal).await });

    // While the hook sleeps, the server answers, and writes.
    let hung = loop {
        let sleeping = sleeping_children();
        if !sleeping.is_empty() {
            break sleeping;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the hook never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(race_ids(&server).await, vec![race.clone()]);
    let second = a_race(&server).await;
    assert!(!task.is_finished(), "the hook is still running");

    let run = task.await.unwrap().unwrap();
    let took = started.elapsed();
    assert_eq!(run.hook, Some(HookOutcome::Timeout));
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(15),
        "{took:?}"
    );
    assert_eq!(hung.len(), 1);
    assert!(
        sleeping_children().is_empty(),
        "sleep {hung:?} was killed and reaped"
    );
    assert_eq!(hook_count(server.addr, "timeout").await - timeouts, 1.0);
    let mut ids = race_ids(&server).await;
    ids.sort();
    let mut expected = vec![race, second];
    expected.sort();
    assert_eq!(ids, expected);
    server.stop().await;
}

/// `peloton backup verify <args…>`: (exit code, stdout, stderr).
fn verify_cli(args: &[&str]) -> (i32, String, String) {
    let out = bin()
        .args(["backup", "verify"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test]
async fn backup_verify_passes_a_good_file_and_names_what_is_wrong_with_a_bad_one() {
    let _serial = IN_PROCESS_BACKUPS.lock().await;
    let server = TestServer::start().await;
    a_race(&server).await;
    let run = backup_now(&server, &config_of(&server)).await;
    let good = run.summary.path.display().to_string();

    let (code, stdout, stderr) = verify_cli(&[&good]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("verified ok"), "{stdout}");
    assert!(
        stdout.contains(&format!("records  {}", run.summary.records)),
        "{stdout}"
    );
    let (code, stdout, _) = verify_cli(&[&good, "--json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["records"], run.summary.records);
    assert_eq!(json["bytes"], run.summary.bytes);
    assert_eq!(json["crc32"], run.summary.crc32);
    assert_eq!(json["schema"], 4);

    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&run.summary.path).unwrap();
    let bad = |name: &str, content: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        verify_cli(&[path.to_str().unwrap()])
    };
    let (code, stdout, stderr) = bad("cut.pbak", &bytes[..bytes.len() * 2 / 3]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("cut.pbak: truncated"),
        "{stderr}"
    );
    assert!(stderr.contains("(truncated)"), "{stderr}");
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x01;
    let (code, _, stderr) = bad("flipped.pbak", &flipped);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("checksum mismatch") && stderr.contains("(corrupt)"),
        "{stderr}"
    );
    let (code, _, stderr) = bad(
        "notes.pbak",
        b"these are not the backups you are looking for",
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("not a Peloton backup") && stderr.contains("(not_a_backup)"),
        "{stderr}"
    );
    let (code, _, stderr) = verify_cli(&[dir.path().join("missing.pbak").to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("(unreadable)"), "{stderr}");
    server.stop().await;
}

#[tokio::test]
async fn a_restarted_server_reports_its_newest_verified_backup() {
    let _serial = IN_PROCESS_BACKUPS.lock().await;
    // A good backup of a real server, placed in a new data folder's backup folder under an
    // older scheduled name, with a newer damaged one beside it.
    let source = TestServer::start().await;
    a_race(&source).await;
    let run = backup_now(&source, &config_of(&source)).await;
    let data = tempfile::tempdir().unwrap();
    let folder = data.path().join("backups");
    std::fs::create_dir_all(&folder).unwrap();
    let good_at = now_ms() - 3 * 3_600_000;
    std::fs::copy(&run.summary.path, backup::scheduled_name(&folder, good_at)).unwrap();
    let bytes = std::fs::read(&run.summary.path).unwrap();
    std::fs::write(
        backup::scheduled_name(&folder, now_ms() - 3_600_000),
        &bytes[..bytes.len() - 10],
    )
    .unwrap();
    source.stop().await;

    let child = ChildServer::start(data.path(), &[]);
    let gauge = "peloton_backup_last_success_timestamp_seconds";
    let started = Instant::now();
    let seen = loop {
        let value = metric(child.addr, gauge).await;
        if value > 0.0 || started.elapsed() > Duration::from_secs(10) {
            break value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        (seen - good_at as f64 / 1000.0).abs() < 0.01,
        "gauge {seen}, good backup taken at {good_at} ms"
    );
    assert_eq!(child.terminate(), Some(0));
}
