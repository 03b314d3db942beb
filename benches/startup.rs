//! Start-up and memory with a season of history (issue 18, item 2): a data folder holding
//! `FINISHED` finished races of `RACERS` racers each and `LIVE` live ones, every racer with
//! `FIXES` stored fixes. The real `peloton` binary is started on it twice in the same run:
//! with passivation off (`supervision.passivate_after_ms = 0`: every stored race and racer
//! started, as before actors could sleep) and on (the default: only live races resident).
//!
//! For each it reports: time from spawn to `/readyz` 200, RSS once ready, the first query of
//! a sleeping race (results, then a replay's start) p50/p99 over `QUERIES` races, and, with
//! passivation on, the RSS a resident racer costs against a sleeping one (the RSS growth
//! from waking `WAKE` races, per racer) and the wake-up time the server measured itself.
//!
//! The data set is built once in-process through the race facade (the same actors and
//! journal as the server) into `target/bench-data/`, and reused while its shape matches:
//! `FINISHED=1000 RACERS=100 LIVE=10 cargo bench --bench startup`.

mod support;

use peloton::actors::race::{RaceCommand, RacerEntry};
use peloton::actors::racer::Fix;
use peloton::config::{Config, Overrides};
use peloton::geo::{Course, CourseIndex};
use peloton::net::client::Client;
use peloton::net::codec::Codec;
use peloton::net::protocol::{Reply, Request};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};
use support::figures::{env_or, ms, pct, ratio};
use support::process::rss_kib;

/// The shape of the data set, also its folder's name so a different shape builds anew.
#[derive(Debug, Clone, Copy)]
struct Shape {
    finished: usize,
    live: usize,
    racers: usize,
    fixes: usize,
}

const RIDE: &str = "loop-celje-resevno-2020-09-20.gpx";

/// Set (to the data folder) when this binary is started again to build the data set: in a
/// process of its own, so the folder's lock is gone when the servers measured open it.
const BUILD_ENV: &str = "STARTUP_BUILD_DATA";

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: a tiny smoke then.
    let benching = std::env::args().any(|a| a == "--bench");
    let scale =
        |name: &str, full: usize, smoke: usize| env_or(name, if benching { full } else { smoke });
    let shape = Shape {
        finished: scale("FINISHED", 1000, 6),
        live: scale("LIVE", 10, 1),
        racers: scale("RACERS", 100, 3),
        fixes: scale("FIXES", 10, 3),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(dir) = std::env::var_os(BUILD_ENV) {
        runtime.block_on(build(Path::new(&dir), shape));
        return;
    }
    let queries = scale("QUERIES", 50, 2).min(shape.finished / 2);
    let wake = scale("WAKE", 20, 2).min(shape.finished - 2 * queries);
    let data = data_set(shape);
    println!(
        "data set: {} finished + {} live races × {} racers × {} fixes, {} MiB on disk",
        shape.finished,
        shape.live,
        shape.racers,
        shape.fixes,
        folder_bytes(&data) >> 20
    );
    let races = runtime.block_on(race_ids(&data));
    let finished: Vec<String> = races.finished;
    let mut rows = Vec::new();
    for (label, passivate_ms) in [
        ("passivation off (before)", "0"),
        ("passivation on", "300000"),
    ] {
        rows.push((
            label,
            runtime.block_on(measure(&data, passivate_ms, &finished, queries, wake)),
        ));
    }
    println!();
    println!(
        "| server | ready after | RSS ready | results, 1st query p50 / p99 | replay start, 1st query p50 / p99 |"
    );
    println!("|---|---|---|---|---|");
    for (label, r) in &rows {
        println!(
            "| {label} | {} | {:.1} MiB | {} / {} | {} / {} |",
            ms(r.ready),
            r.rss_ready_kib as f64 / 1024.0,
            ms(pct(&r.results, 0.5)),
            ms(pct(&r.results, 0.99)),
            ms(pct(&r.replays, 0.5)),
            ms(pct(&r.replays, 0.99)),
        );
    }
    let (before, after) = (&rows[0].1, &rows[1].1);
    println!();
    println!(
        "ready: {}× the time; RSS: {}× the memory (after ÷ before)",
        ratio(after.ready.as_secs_f64(), before.ready.as_secs_f64()),
        ratio(after.rss_ready_kib as f64, before.rss_ready_kib as f64)
    );
    if let Some(woken) = &after.woken {
        println!(
            "woke {wake} sleeping races ({} racers): RSS +{:.1} MiB, {:.0} bytes per resident racer; \
             asleep, a racer costs {:.0} bytes (RSS ready ÷ racers stored)",
            wake * shape.racers,
            woken.rss_growth_kib as f64 / 1024.0,
            woken.rss_growth_kib as f64 * 1024.0 / (wake * shape.racers) as f64,
            after.rss_ready_kib as f64 * 1024.0
                / ((shape.finished + shape.live) * shape.racers) as f64,
        );
        println!(
            "server's own wake-up time (race + its racers, peloton_race_activation_seconds): {}",
            woken.activation_summary
        );
    }
}

/// What one start of the server measured.
struct Measured {
    ready: Duration,
    rss_ready_kib: u64,
    results: Vec<Duration>,
    replays: Vec<Duration>,
    woken: Option<Woken>,
}

/// Memory and time of waking more sleeping races.
struct Woken {
    rss_growth_kib: u64,
    activation_summary: String,
}

/// Starts the server on `data`, waits for `/readyz`, then asks `queries` finished races for
/// their results and `queries` others for a replay, each its first query since start.
async fn measure(
    data: &Path,
    passivate_ms: &str,
    finished: &[String],
    queries: usize,
    wake: usize,
) -> Measured {
    let spawned = Instant::now();
    let (child, url) = support::start_server(
        data,
        &[("PELOTON_SUPERVISION_PASSIVATE_AFTER_MS", passivate_ms)],
    );
    let host = url.trim_start_matches("ws://").to_owned();
    wait_ready(&host).await;
    let ready = spawned.elapsed();
    let pid = child.id();
    // Let the allocator settle after recovery's burst.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_ready_kib = rss_kib(pid).unwrap_or(0);
    let admin = admin_token(data);
    let mut client = Client::connect(&url, &admin, Codec::Binary)
        .await
        .expect("connect");
    let mut results = Vec::new();
    for race in &finished[..queries] {
        let asked = Instant::now();
        match client
            .request(Request::RaceResults {
                race_id: race.clone(),
            })
            .await
        {
            Ok(Reply::Results { .. }) => results.push(asked.elapsed()),
            other => panic!("results of {race}: {other:?}"),
        }
    }
    let mut replays = Vec::new();
    for race in &finished[queries..2 * queries] {
        let asked = Instant::now();
        let request = Request::RaceReplay {
            race_id: race.clone(),
            speed: 10_000.0,
            from_ms: None,
        };
        match client.request(request).await {
            Ok(Reply::ReplayStarted { .. }) => replays.push(asked.elapsed()),
            other => panic!("replay of {race}: {other:?}"),
        }
        // Only the start is timed; the replay's pushes are drained so the socket stays clean.
        while let Ok(push) = client.next_push(Duration::from_secs(10)).await {
            if matches!(push, peloton::net::protocol::Push::ReplayDone { .. }) {
                break;
            }
        }
    }
    results.sort();
    replays.sort();
    let woken = if passivate_ms != "0" && wake > 0 {
        let before = rss_kib(pid).unwrap_or(0);
        for race in &finished[2 * queries..2 * queries + wake] {
            let _ = client
                .request(Request::RaceResults {
                    race_id: race.clone(),
                })
                .await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss_kib(pid).unwrap_or(0);
        let metrics = support::metrics_text(&host).await.unwrap_or_default();
        let activation_summary = metrics
            .lines()
            .filter(|l| l.starts_with("peloton_race_activation_seconds"))
            .map(|l| l.trim_start_matches("peloton_race_activation_seconds"))
            .collect::<Vec<_>>()
            .join(", ");
        Some(Woken {
            rss_growth_kib: after.saturating_sub(before),
            activation_summary,
        })
    } else {
        None
    };
    stop(child);
    Measured {
        ready,
        rss_ready_kib,
        results,
        replays,
        woken,
    }
}

/// Polls `/readyz` every 5 ms until it answers 200 (at most ten minutes: with every stored racer started, start-up takes long).
async fn wait_ready(host: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(host).await {
            let request =
                format!("GET /readyz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            if stream.write_all(request.as_bytes()).await.is_ok() {
                let mut head = [0u8; 12];
                if stream.read_exact(&mut head).await.is_ok() && head.ends_with(b"200") {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the server never became ready");
}

/// SIGTERM, then SIGKILL if it has not exited within 10 s; only the child this bench started.
fn stop(mut child: Child) {
    let pid = child.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    for _ in 0..200 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn admin_token(data: &Path) -> String {
    let keys = support::server_keys(data);
    let claims = peloton::auth::claims_for(
        peloton::auth::Role::Admin,
        "bench",
        None,
        peloton::time::now_ms() / 1000,
        3600,
    );
    keys.issue(&claims).expect("sign")
}

/// The bench's data folder for `shape`, built (by this binary started again with
/// [`BUILD_ENV`]) unless a complete one is there.
fn data_set(shape: Shape) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "target/bench-data/startup-{}f-{}l-{}r-{}x",
        shape.finished, shape.live, shape.racers, shape.fixes
    ));
    let complete = dir.join("complete");
    if complete.exists() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("data folder");
    let built = Instant::now();
    let status = std::process::Command::new(std::env::current_exe().expect("this bench"))
        .env(BUILD_ENV, &dir)
        .env("FINISHED", shape.finished.to_string())
        .env("LIVE", shape.live.to_string())
        .env("RACERS", shape.racers.to_string())
        .env("FIXES", shape.fixes.to_string())
        .arg("--bench")
        .status()
        .expect("data set builder");
    assert!(status.success(), "building the data set failed: {status}");
    std::fs::write(&complete, b"").expect("marker");
    println!(
        "built the data set in {:.0} s",
        built.elapsed().as_secs_f64()
    );
    dir
}

/// Creates the races through the real actors and journal, in-process, several at a time.
async fn build(dir: &Path, shape: Shape) {
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.to_path_buf()),
    };
    let mut config = Config::load_from(None, &[], &overrides).expect("config");
    // Finished races' racers sleep while the rest is built, so building stays small too.
    config.supervision.passivate_after_ms = 2_000;
    let server = peloton::engine::start(config).await.expect("server");
    let races = server.engine.services().expect("recovered").races.clone();
    let gpx = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/data/gpx")
            .join(RIDE),
    )
    .expect("shared ride");
    let course = Course::from_gpx(&gpx, 200_000).expect("course");
    let index = CourseIndex::from(&course);
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = Vec::new();
    for n in 0..shape.finished + shape.live {
        let (races, course, index, gate) =
            (races.clone(), course.clone(), index.clone(), gate.clone());
        let finish = n < shape.finished;
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("gate");
            let start = peloton::time::now_ms() - 3_600_000;
            let summary = races
                .create(RaceCommand::Create {
                    name: format!("Season race {n}"),
                    course,
                    start_at_ms: start,
                    cutoff_at_ms: None,
                })
                .await
                .expect("create");
            let racers = (1..=shape.racers as u32)
                .map(|bib| RacerEntry {
                    bib,
                    name: format!("Racer {bib}"),
                    team: None,
                    email: None,
                })
                .collect::<Vec<_>>();
            for chunk in racers.chunks(200) {
                races
                    .command(
                        &summary.id,
                        RaceCommand::RegisterRacers {
                            racers: chunk.to_vec(),
                        },
                    )
                    .await
                    .expect("register");
            }
            // The start has passed: the clock may have started it first.
            let _ = races.command(&summary.id, RaceCommand::Start).await;
            for bib in 1..=shape.racers as u32 {
                let fixes = (0..shape.fixes)
                    .map(|i| {
                        let p = index.position_at(30.0 * i as f64 + f64::from(bib));
                        Fix {
                            at_ms: start + 60_000 + 6_000 * i as i64,
                            position: p,
                            accuracy_m: 5.0,
                            speed_mps: None,
                            elevation_m: None,
                        }
                    })
                    .collect();
                races
                    .submit_fixes(&summary.id, bib, fixes)
                    .await
                    .expect("fixes");
            }
            if finish {
                races
                    .command(&summary.id, RaceCommand::Finish)
                    .await
                    .expect("finish");
            }
        }));
    }
    for task in tasks {
        task.await.expect("race built");
    }
    server.shutdown().await;
}

/// Every race of the data set, finished ones apart, read from the server's own list.
struct Races {
    finished: Vec<String>,
}

async fn race_ids(data: &Path) -> Races {
    let (child, url) = support::start_server(data, &[]);
    wait_ready(url.trim_start_matches("ws://")).await;
    let mut client = Client::connect(&url, &admin_token(data), Codec::Binary)
        .await
        .expect("connect");
    let Ok(Reply::Races(races)) = client.request(Request::RaceList).await else {
        panic!("race list")
    };
    stop(child);
    Races {
        finished: races
            .into_iter()
            .filter(|r| r.state == peloton::net::protocol::RaceStateView::Finished)
            .map(|r| r.id)
            .collect(),
    }
}

/// Bytes of every file under `dir`.
fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => folder_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
