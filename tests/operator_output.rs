//! What an operator sees of a running server (issue 18, item 8), from a real `peloton serve`
//! child process: its log lines on stderr (JSON when `log.format = "json"`, text without
//! colour codes when stderr is not a terminal, a wrong format refused by name), and the
//! `/metrics` series a small real workload leaves: fixes by outcome, racer flags, live race
//! gauges that go when the race finishes, patrol pushes, process figures, the build, and
//! clients that reset their connection counted as `client`, not as errors.

mod common;

use common::patrol::{at, import_basics, officer_row};
use common::{bin, client_as, fix_at, gpx, http_get, keys_for, live_race, racer_phone, token};
use futures_util::{SinkExt, StreamExt};
use peloton::auth::{Keys, Role};
use peloton::geo::{Course, CourseIndex, Position};
use peloton::net::client::Client;
use peloton::net::codec::Codec;
use peloton::net::protocol::{
    ClientFrame, MailEnvelope, MailMessageView, Push, Reply, Request, WireFix,
};
use peloton::time::now_ms;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::MaybeTlsStream;

const RIDE: &str = "loop-celje-resevno-2020-09-20.gpx";

/// `peloton serve` with its stderr captured (a pipe: not a terminal), as a log collector or
/// a service manager runs it.
struct Served {
    /// The process.
    child: Child,
    /// Where it listens, once it said so; `None` when it exited first.
    addr: Option<SocketAddr>,
    /// Everything it writes to stderr, whole once it exits.
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl Served {
    /// Starts `peloton serve` on a free port in `data` with this environment, and waits for
    /// its `listening on` line (or its exit).
    fn start(data: &std::path::Path, env: &[(&str, &str)]) -> Served {
        let mut command = bin();
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn peloton serve");
        let mut stderr = child.stderr.take().expect("stderr");
        let collector = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stderr.read_to_end(&mut bytes);
            bytes
        });
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read stdout");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .map(|a| a.parse().expect("an address"));
        Served {
            child,
            addr,
            stderr: Some(collector),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.addr.expect("the server is listening")
    }

    /// SIGTERM, then the exit code and all of stderr.
    fn stop(mut self) -> (Option<i32>, Vec<u8>) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.finish()
    }

    /// Waits for the exit (killing after 10 s), then the exit code and all of stderr.
    fn finish(&mut self) -> (Option<i32>, Vec<u8>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let code = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stderr = self
            .stderr
            .take()
            .map(|t| t.join().expect("stderr reader"))
            .unwrap_or_default();
        (code, stderr)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of one exact series (name and labels) in the exposition, if present.
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (name, v) = line.rsplit_once(' ')?;
        (name == series).then(|| v.parse().ok())?
    })
}

async fn scrape(addr: SocketAddr) -> String {
    let (status, body) = http_get(addr, "/metrics HTTP/1.1").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Scrapes until `ready` holds (5 s at most), returning that exposition.
async fn scrape_until(addr: SocketAddr, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = scrape(addr).await;
        if ready(&metrics) {
            return metrics;
        }
        assert!(Instant::now() < deadline, "{what}:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A racer's batch, answered with (accepted, ignored).
async fn send(phone: &mut Client, fixes: Vec<WireFix>) -> (u32, u32) {
    match phone.request(Request::Fixes { fixes }).await.unwrap() {
        Reply::FixesAck {
            accepted, ignored, ..
        } => (accepted, ignored),
        other => panic!("{other:?}"),
    }
}

/// A point with no part of the course within 300 m, less than 1200 m from `near`: a racer
/// who rode off the course there at up to 40 m/s for 30 s.
fn off_the_course(index: &CourseIndex, near: Position) -> Position {
    for step in 3..=10 {
        for (north, east) in [(1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0)] {
            let d = 100.0 * f64::from(step);
            let p = near.moved_m(north * d, east * d);
            if index
                .distance_to_course(p, 0.0, f64::INFINITY, 300.0)
                .is_none()
            {
                return p;
            }
        }
    }
    panic!("no point off the course near {near:?}")
}

/// A bare binary WebSocket with `token` on `addr`, its welcome read: the client a test can
/// reset (SO_LINGER 0: the kernel answers the server with RST, no close frame, no FIN).
async fn raw_socket(
    addr: SocketAddr,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>> {
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    let auth = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    request.headers_mut().insert("Authorization", auth);
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(Codec::Binary.subprotocol()),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let welcome = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the welcome arrives");
    assert!(matches!(welcome, Some(Ok(_))), "{welcome:?}");
    ws
}

fn reset(ws: tokio_tungstenite::WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>) {
    match ws.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp.set_zero_linger().unwrap(),
        _ => panic!("a plain socket"),
    }
    drop(ws);
}

/// The race part of the workload: a live race of three, bib 1 sending good, stale,
/// inaccurate and impossible fixes, a cut and a spell off the course; a spectator
/// watching. Returns the race id and the spectator.
async fn race_workload(addr: SocketAddr, keys: &Keys, admin: &mut Client) -> (String, Client) {
    let url = format!("ws://{addr}");
    let now = now_ms();
    let race = live_race(admin, RIDE, now - 600_000, 3).await;
    let mut spectator = client_as(&url, keys, Role::Spectator, "watcher").await;
    match spectator
        .request(Request::RaceSubscribe {
            race_id: race.clone(),
            since_seq: None,
        })
        .await
        .unwrap()
    {
        Reply::Subscribed(_) => {}
        other => panic!("{other:?}"),
    }
    let course = Course::from_gpx(gpx(RIDE).as_bytes(), 200_000).unwrap();
    let index = CourseIndex::from(&course);
    assert!(index.length_m() > 5_000.0);
    let base = now - 300_000;
    let mut phone = racer_phone(&url, keys, &race, 1).await;
    let mut inaccurate = fix_at(&index, 150.0, base + 5_000);
    inaccurate.accuracy_dm = 5_000;
    // A good fix, then one older than it, then one 500 m inaccurate.
    let first = vec![
        fix_at(&index, 100.0, base),
        fix_at(&index, 100.0, base - 1_000),
        inaccurate,
    ];
    assert_eq!(send(&mut phone, first).await, (1, 2));
    // 5 km away 6 s later (a GPS spike), then 2.3 km further along the course a minute
    // after the good fix: possible at 38 m/s, not at the 30 m/s a course allows plus
    // 300 m tolerance, so a suspected cut.
    let start = index.position_at(100.0);
    let spike = common::wire_fix(start.moved_m(5_000.0, 0.0), base + 6_000);
    let cut = fix_at(&index, 2_400.0, base + 60_000);
    assert_eq!(send(&mut phone, vec![spike, cut]).await, (1, 1));
    // Off the course for 35 s: the off-course flag goes up.
    let off = off_the_course(&index, index.position_at(2_400.0));
    let spell = vec![
        common::wire_fix(off, base + 90_000),
        common::wire_fix(off, base + 125_000),
    ];
    assert_eq!(send(&mut phone, spell).await, (2, 0));
    (race, spectator)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_and_the_operator_metrics_of_a_real_workload() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(
        dir.path(),
        &[("PELOTON_LOG_FORMAT", "json"), ("RUST_LOG", "info")],
    );
    let addr = served.addr();
    let url = format!("ws://{addr}");
    let keys = keys_for(dir.path());
    let mut admin = Client::connect(
        &url,
        &token(&keys, Role::Admin, "ops", None, 3600),
        Codec::Binary,
    )
    .await
    .unwrap();
    let (race, _spectator) = race_workload(addr, &keys, &mut admin).await;

    // Patrol: an officer going on duty near a citizen is pushed to the citizen.
    import_basics(&mut admin, vec![officer_row("o1", "p1", None)]).await;
    let centre = Position::from_degrees(46.2309, 15.2604).unwrap();
    let mut officer = client_as(&url, &keys, Role::Officer, "o1").await;
    let mut citizen = client_as(&url, &keys, Role::Citizen, "c1").await;
    at(&mut citizen, centre.moved_m(300.0, 0.0)).await;
    officer
        .request(Request::DutyStart { minutes: None })
        .await
        .unwrap();
    at(&mut officer, centre).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match citizen.next_push(left).await {
            Ok(Push::OfficerNearby(_)) => break,
            Ok(_) => continue,
            Err(e) => panic!("the citizen is told of the officer: {e}"),
        }
    }

    let racers = format!("peloton_race_racers{{race=\"{race}\"}}");
    let spectators = format!("peloton_race_spectators{{race=\"{race}\"}}");
    let metrics = scrape_until(addr, "the workload's series", |m| {
        // Each series is recorded just after its effect, which the client may see first.
        value(m, "peloton_racer_flags_total{flag=\"off_course\"}").is_some()
            && value(m, &spectators).is_some()
            && value(m, "peloton_patrol_pushes_total{kind=\"officer_nearby\"}").is_some()
    })
    .await;
    let series = |name: &str| value(&metrics, name).unwrap_or_else(|| panic!("{name}\n{metrics}"));
    assert_eq!(series("peloton_fixes_total{outcome=\"accepted\"}"), 4.0);
    assert_eq!(series("peloton_fixes_total{outcome=\"stale\"}"), 1.0);
    assert_eq!(series("peloton_fixes_total{outcome=\"inaccurate\"}"), 1.0);
    assert_eq!(series("peloton_fixes_total{outcome=\"too_fast\"}"), 1.0);
    assert_eq!(
        series("peloton_racer_flags_total{flag=\"suspected_cut\"}"),
        1.0
    );
    assert_eq!(
        series("peloton_racer_flags_total{flag=\"off_course\"}"),
        1.0
    );
    assert_eq!(series(&racers), 3.0);
    assert_eq!(series(&spectators), 1.0);
    assert!(series("peloton_patrol_pushes_total{kind=\"officer_nearby\"}") >= 1.0);
    assert_eq!(
        series(&format!(
            "peloton_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    assert!(series("peloton_process_resident_bytes") > 1_000_000.0);
    // At least the listener, the journal's files and our open sockets.
    assert!(series("peloton_process_open_fds") > 5.0);

    // Two clients reset their connections (one watching the race, one not): the client's
    // doing, counted as `client`, never as 1002 or as a failed write.
    let client_closes = |m: &str| value(m, "peloton_ws_closes_total{code=\"client\"}");
    // Every error frame sent so far (the race's start, which the clock made first).
    let errors = |m: &str| -> Vec<String> {
        m.lines()
            .filter(|l| l.starts_with("peloton_errors_total"))
            .map(str::to_owned)
            .collect()
    };
    let metrics = scrape(addr).await;
    let before = client_closes(&metrics).unwrap_or(0.0);
    let errors_before = errors(&metrics);
    let plain = raw_socket(addr, &token(&keys, Role::Spectator, "r1", None, 600)).await;
    let mut watching = raw_socket(addr, &token(&keys, Role::Spectator, "r2", None, 600)).await;
    let subscribe = Codec::Binary
        .encode_client(&ClientFrame {
            id: 1,
            request: Request::RaceSubscribe {
                race_id: race.clone(),
                since_seq: None,
            },
        })
        .unwrap();
    watching.send(subscribe).await.unwrap();
    let subscribed = tokio::time::timeout(Duration::from_secs(5), watching.next()).await;
    assert!(matches!(subscribed, Ok(Some(Ok(_)))), "{subscribed:?}");
    // The race moves while the watcher goes, so the server may be writing to it then.
    let mut phone = racer_phone(&url, &keys, &race, 2).await;
    let index = CourseIndex::from(&Course::from_gpx(gpx(RIDE).as_bytes(), 200_000).unwrap());
    let at_ms = now_ms() - 60_000;
    send(&mut phone, vec![fix_at(&index, 50.0, at_ms)]).await;
    reset(plain);
    reset(watching);
    let metrics = scrape_until(addr, "two resets counted as client closes", |m| {
        client_closes(m).unwrap_or(0.0) >= before + 2.0
    })
    .await;
    assert_eq!(client_closes(&metrics), Some(before + 2.0), "{metrics}");
    assert!(!metrics.contains("code=\"1002\""), "{metrics}");
    assert!(!metrics.contains("code=\"dropped\""), "{metrics}");
    assert_eq!(errors(&metrics), errors_before);

    // A finished race's gauges go.
    admin
        .request(Request::RaceFinish { id: race.clone() })
        .await
        .unwrap();
    let metrics = scrape_until(addr, "the finished race's gauges gone", |m| {
        value(m, &racers).is_none()
    })
    .await;
    assert!(!metrics.contains(&format!("race=\"{race}\"")), "{metrics}");

    drop(phone);
    drop(officer);
    drop(citizen);
    drop(admin);
    let (code, stderr) = served.stop();
    assert_eq!(code, Some(0));
    assert!(
        !stderr.contains(&0x1b),
        "no escape codes in JSON logs: {}",
        String::from_utf8_lossy(&stderr)
    );
    let text = String::from_utf8(stderr).expect("UTF-8 logs");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "ready and stopped at least: {text}");
    let mut messages = Vec::new();
    for line in &lines {
        let json: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(json["timestamp"].is_string(), "{line}");
        assert!(json["level"].is_string(), "{line}");
        messages.push(json["fields"]["message"].as_str().unwrap_or("").to_owned());
    }
    assert!(messages.iter().any(|m| m == "ready"), "{messages:?}");
    assert!(messages.iter().any(|m| m == "stopped"), "{messages:?}");
}

#[test]
fn text_logs_into_a_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    // Even with a terminal type set: what counts is whether stderr is a terminal.
    let served = Served::start(
        dir.path(),
        &[("RUST_LOG", "info"), ("TERM", "xterm-256color")],
    );
    served.addr();
    // The server installs its SIGTERM handler just after it prints `listening on`: a
    // signal in that instant ends it by the default action, with no `stopped` line.
    std::thread::sleep(Duration::from_millis(500));
    let (code, stderr) = served.stop();
    assert_eq!(code, Some(0));
    let text = String::from_utf8_lossy(&stderr).into_owned();
    assert!(!stderr.contains(&0x1b), "escape codes in: {text:?}");
    let ready = text
        .lines()
        .find(|l| l.contains("ready"))
        .unwrap_or_else(|| panic!("no ready line: {text}"));
    assert!(ready.contains(" INFO "), "{ready}");
    assert!(
        serde_json::from_str::<serde_json::Value>(ready).is_err(),
        "text, not JSON: {ready}"
    );
}

#[test]
fn a_wrong_log_format_stops_the_server_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = Served::start(dir.path(), &[("PELOTON_LOG_FORMAT", "yaml")]);
    assert!(served.addr.is_none(), "it must not start");
    let (code, stderr) = served.finish();
    assert_ne!(code, Some(0));
    let text = String::from_utf8_lossy(&stderr);
    assert!(
        text.contains("log.format must be \"text\" or \"json\", got `yaml`"),
        "{text}"
    );
}

/// A mail API on loopback that answers 503 to the first `failures` requests and 200 after:
/// a provider having an outage, then back. Returns its URL and the requests it answered.
async fn flaky_mail_api(failures: usize) -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/send", listener.local_addr().unwrap());
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            // The head and the JSON body, as far as Content-Length says.
            let mut request = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stream.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        break;
                    }
                }
            }
            let n = count.fetch_add(1, Ordering::SeqCst);
            let status = if n < failures {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            let response =
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    (url, answered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_breaker_is_logged_when_it_opens_and_when_it_closes() {
    let (api, answered) = flaky_mail_api(2).await;
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(
        dir.path(),
        &[
            ("PELOTON_LOG_FORMAT", "json"),
            ("RUST_LOG", "info"),
            ("PELOTON_MAIL_TRANSPORT", "http"),
            ("PELOTON_MAIL_HTTP_URL", &api),
            ("PELOTON_MAIL_BACKOFF_BASE_MS", "20"),
            ("PELOTON_MAIL_BACKOFF_CAP_MS", "200"),
            ("PELOTON_MAIL_BREAKER_CONSECUTIVE_FAILURES", "2"),
            ("PELOTON_MAIL_BREAKER_OPEN_MS", "300"),
        ],
    );
    let addr = served.addr();
    let keys = keys_for(dir.path());
    let mut admin = Client::connect(
        &format!("ws://{addr}"),
        &token(&keys, Role::Admin, "ops", None, 3600),
        Codec::Binary,
    )
    .await
    .unwrap();
    let submitted = admin
        .request(Request::MailSubmit(MailEnvelope {
            correlation_id: "breaker".into(),
            sequence: 1,
            sent_at_ms: now_ms(),
            messages: vec![MailMessageView {
                to: "racer@example.org".into(),
                subject: "Results".into(),
                body: "You finished.\n".into(),
                contact: None,
            }],
        }))
        .await
        .unwrap();
    assert!(matches!(submitted, Reply::MailJobs(_)), "{submitted:?}");
    // Two failures open the breaker; the probe 300 ms later is answered 200 and closes it.
    scrape_until(addr, "the mail sent after the outage", |m| {
        value(
            m,
            "peloton_mail_attempts_total{transport=\"http\",result=\"sent\"}",
        ) == Some(1.0)
    })
    .await;
    assert_eq!(answered.load(Ordering::SeqCst), 3);
    drop(admin);
    let (code, stderr) = served.stop();
    assert_eq!(code, Some(0));
    let text = String::from_utf8(stderr).expect("UTF-8 logs");
    let events: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let breaker = |level: &str, starts: &str| {
        events.iter().position(|e| {
            e["level"] == level
                && e["fields"]["transport"] == "http"
                && e["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(starts))
        })
    };
    let opened = breaker("WARN", "mail circuit breaker opened").unwrap_or_else(|| panic!("{text}"));
    let closed = breaker("INFO", "mail circuit breaker closed").unwrap_or_else(|| panic!("{text}"));
    assert!(opened < closed, "{text}");
    assert_eq!(events[opened]["fields"]["open_for_ms"], 300, "{text}");
}
