//! The operator's monitoring files (deploy/) against the real thing: `promtool` checks the
//! alert rules and the example configuration; then a real Peloton server runs a small real
//! workload over real sockets (a live race with racers and spectators, a slow spectator
//! closed with 4008, mail to an SMTP port nobody listens on, a good and a failed scheduled
//! backup, a patrol officer on duty meeting a citizen, a patrol device that stops reading
//! closed with 4009, refusals and a flood), Debian's Prometheus scrapes it every
//! second with deploy/prometheus/alerts.yml loaded, and every query of the Grafana
//! dashboard and every metric an alert names must have series. An empty panel or an alert
//! that can never fire because its metric is misspelt fails here, not on a bad day.
//!
//! Needs `/usr/bin/prometheus` and `/usr/bin/promtool` (`apt-get install prometheus`; .ci/run
//! installs them). Without them these tests fail, never skip.

mod common;

use common::nats::NatsServer;
use common::patrol::{answer, ask, at, import_basics, officer_row};
use common::{
    counter, dense_gpx, fix_at, free_port, http_get, http_request, live_race_on, racer_phone,
    TestServer,
};
use futures_util::SinkExt;
use peloton::auth::Role;
use peloton::geo::{Course, CourseIndex, Position};
use peloton::net::client::Client;
use peloton::net::codec::Codec;
use peloton::net::protocol::{
    ClientFrame, ImportBatch, MailEnvelope, MailMessageView, Reply, Request, WireFix,
};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Debian's Prometheus server.
const PROMETHEUS: &str = "/usr/bin/prometheus";
/// Debian's rule and configuration checker, from the same package.
const PROMTOOL: &str = "/usr/bin/promtool";
/// The shared ride the race runs on.
const RIDE: &str = "out-and-back-ljubljana.gpx";
/// The race's start: in the past, so it is live at once.
const T0: i64 = 1_796_115_600_000;
/// Racers riding in the race.
const RACERS: u32 = 4;
/// Officers on duty around the citizen whose device stops reading.
const CROWD: usize = 30;

/// A file of the repository.
fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `binary`, or a failure that says how to get it: CI installs it, so a missing binary is
/// a broken machine, not a reason to skip.
fn required(binary: &str) -> &str {
    assert!(
        Path::new(binary).is_file(),
        "{binary} is missing: install Debian's Prometheus (`apt-get install -y prometheus`; \
         .ci/run does) to run the monitoring tests"
    );
    binary
}

#[test]
fn promtool_accepts_the_alert_rules_and_the_example_config() {
    let promtool = required(PROMTOOL);
    for args in [
        ["check", "rules", "deploy/prometheus/alerts.yml"],
        ["check", "config", "deploy/prometheus/prometheus.yml"],
    ] {
        let out = Command::new(promtool)
            .args(args)
            .current_dir(repo(""))
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_and_alert_metric_has_series_from_a_real_server() {
    let prometheus = required(PROMETHEUS);
    let dashboard = dashboard_queries();
    assert_every_family_has_a_panel(&dashboard);

    let smtp_port = free_port();
    let server = TestServer::start_with(|c| {
        // Fast ticks and a short patience, so one spectator that never reads is closed
        // with 4008 within the test (as tests/spectators.rs does it).
        c.race.tick_ms = 20;
        c.ws.slow_consumer_close_ms = 300;
        c.ws.write_timeout_ms = 60_000;
        c.ws.max_write_buffer_bytes = 64 << 20;
        // One socket per subject, and loopback under the per-address limits with one guest
        // token a minute, so a second socket and a second guest token are refused.
        c.ws.max_sockets_per_subject = 1;
        c.ws.addr_limits_exempt_loopback = false;
        c.web.guest_tokens_per_addr_per_min = 1;
        // Snapshots within a few fixes.
        c.persist.snapshot_every = 5;
        // A finished race falls asleep within the workload, to be woken by a question.
        c.supervision.passivate_after_ms = 300;
        // Scheduled backups are copied to a second folder and handed to a command.
        c.persist.backup_copy_dir = "cold".into();
        c.persist.after_backup = vec!["true".into()];
        // Nothing listens on the SMTP port: attempts fail, the breaker opens, and jobs go
        // to the dead letters within seconds.
        c.mail.smtp_port = smtp_port;
        c.mail.backoff.base_ms = 20;
        c.mail.backoff.cap_ms = 100;
        c.mail.backoff.max_attempts = 3;
        c.mail.breaker.consecutive_failures = 2;
        // Open for a second at a time: the attempts spread over several scrapes, as they
        // would on a real bad day, so their rates are not all in one sample.
        c.mail.breaker.open_ms = 1_000;
        c.mail.smtp_connect_timeout_ms = 500;
        c.mail.smtp_total_timeout_ms = 1_000;
    })
    .await;

    // A second node in the same process, in cluster mode on a real nats-server: the
    // metrics recorder is the process's, so the scraped server's `/metrics` also carries
    // the cluster families (NATS connection, leases, forwarding, JetStream publishes).
    let nats = NatsServer::start();
    let clustered = TestServer::start_with(|c| {
        c.cluster.nats_url = nats.url.clone();
        c.cluster.node_id = "prom".into();
        c.cluster.prefix = format!("prom{}", free_port());
    })
    .await;

    let scratch = tempfile::tempdir().expect("tempdir");
    let prom = Prometheus::start(prometheus, scratch.path(), server.addr).await;
    prom.wait_for_a_scrape(Duration::from_secs(30)).await;

    // Journal records published to JetStream before and after the workload, so their
    // latency histogram has a rate within the queries' window.
    let mut cluster_admin = clustered.client(Role::Admin, Codec::Binary).await;
    let course_gpx = common::gpx(RIDE);
    let cluster_race =
        live_race_on(&mut cluster_admin, "Clustered", course_gpx.clone(), T0, 2).await;
    // Kept open while Prometheus is asked: the officer stays on duty and in the index.
    let _alive = workload(&server).await;
    let course = Course::from_gpx(course_gpx.as_bytes(), 200_000).expect("course");
    let index = CourseIndex::from(&course);
    let mut phone = racer_phone(&clustered.url, &clustered.keys, &cluster_race, 1).await;
    for step in 0..5 {
        let fixes = fixes(&index, 0.0, step as f64 * 100.0, (step + 1) as f64 * 100.0);
        phone
            .request(Request::Fixes { fixes })
            .await
            .expect("fixes on the cluster node");
    }
    let done = unix_seconds();
    // Two more scrapes after the workload, so every rate has the samples it needs.
    prom.wait_for_scrape_after(done + 2.0, Duration::from_secs(30))
        .await;

    let mut empty = Vec::new();
    for (panel, expr) in &dashboard {
        let query = concrete(expr);
        if !prom.has_series(&query).await {
            empty.push(format!("dashboard panel {panel:?}: {query}"));
        }
    }
    let rules = prom.alert_rules(Duration::from_secs(30)).await;
    let written = std::fs::read_to_string(repo("deploy/prometheus/alerts.yml"))
        .expect("alerts.yml")
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert!(written >= 7, "alerts.yml has its rules");
    assert_eq!(
        rules.len(),
        written,
        "every rule of alerts.yml is loaded: {rules:?}"
    );
    for (alert, expr) in &rules {
        for selector in metric_selectors(expr) {
            if !prom.has_series(&selector).await {
                empty.push(format!("alert {alert}: {selector} (in {expr})"));
            }
        }
    }
    assert!(
        empty.is_empty(),
        "{} queries have no series from a real server under the workload:\n{}",
        empty.len(),
        empty.join("\n")
    );
    drop(prom);
    drop(cluster_admin);
    clustered.stop().await;
    server.stop().await;
    drop(nats);
}

/// Every target expression of deploy/grafana/peloton.json, with its panel's title.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo("deploy/grafana/peloton.json")).expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    assert_eq!(dashboard["schemaVersion"], 39);
    let mut out = Vec::new();
    let mut panels: Vec<&serde_json::Value> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .collect();
    while let Some(panel) = panels.pop() {
        // A collapsed row holds its panels inside it.
        if let Some(inner) = panel["panels"].as_array() {
            panels.extend(inner);
        }
        let title = panel["title"].as_str().unwrap_or("?").to_owned();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a target has an expr");
            out.push((title.clone(), expr.to_owned()));
        }
    }
    assert!(out.len() > 20, "the dashboard has its panels: {out:?}");
    out
}

/// Every metric family src/metrics.rs names is queried by some panel.
fn assert_every_family_has_a_panel(dashboard: &[(String, String)]) {
    let source = std::fs::read_to_string(repo("src/metrics.rs")).expect("src/metrics.rs");
    let families: BTreeSet<&str> = source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("peloton_"))
        .collect();
    assert!(families.len() > 20, "families found: {families:?}");
    let missing: Vec<&&str> = families
        .iter()
        .filter(|family| {
            !dashboard.iter().any(|(_, expr)| {
                metric_selectors(expr).iter().any(|s| {
                    s.split('{').next() == Some(family) || s.starts_with(&format!("{family}_"))
                })
            })
        })
        .collect();
    assert!(missing.is_empty(), "no dashboard panel for {missing:?}");
}

/// A dashboard expression with Grafana's variables replaced by what Grafana would send:
/// every instance, a rate window a few scrapes long, the test's whole run as the range.
fn concrete(expr: &str) -> String {
    let query = expr
        .replace("$__rate_interval", "1m")
        .replace("$__range", "1h")
        .replace("$instance", ".+");
    assert!(
        !query.contains('$'),
        "a Grafana variable the test does not know: {expr}"
    );
    query
}

/// The series selectors (metric name with its matchers) in a PromQL expression: names of
/// Peloton's families and `up`; functions, keywords, label names and strings are skipped.
fn metric_selectors(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i = skip_string(&chars, i);
        } else if c == '{' || c == '[' {
            // Matchers or a range not after a metric name (after `by`, say): skip.
            let close = if c == '{' { '}' } else { ']' };
            while i < chars.len() && chars[i] != close {
                i = if chars[i] == '"' {
                    skip_string(&chars, i)
                } else {
                    i + 1
                };
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let name: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let is_metric = name.starts_with("peloton_") || name == "up";
            if is_metric && j < chars.len() && chars[j] == '{' {
                let open = j;
                while j < chars.len() && chars[j] != '}' {
                    j = if chars[j] == '"' {
                        skip_string(&chars, j)
                    } else {
                        j + 1
                    };
                }
                let matchers: String = chars[open..=j.min(chars.len() - 1)].iter().collect();
                out.push(format!("{name}{matchers}"));
                i = j + 1;
            } else if is_metric {
                out.push(name);
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn selectors_are_read_from_promql_without_functions_labels_or_strings() {
    let expr = "histogram_quantile(0.99, sum by (instance, le) \
                (rate(peloton_journal_flush_seconds_bucket{job=\"peloton\", x=\"a}b\"}[5m]))) \
                > 0.1 or up == 0 unless on (instance) peloton_ws_open_sockets";
    assert_eq!(
        metric_selectors(expr),
        [
            "peloton_journal_flush_seconds_bucket{job=\"peloton\", x=\"a}b\"}",
            "up",
            "peloton_ws_open_sockets",
        ]
    );
}

/// The index just past the string literal starting at `i`.
fn skip_string(chars: &[char], mut i: usize) -> usize {
    i += 1;
    while i < chars.len() && chars[i] != '"' {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

/// Seconds since the epoch, as Prometheus counts time.
fn unix_seconds() -> f64 {
    peloton::time::now_ms() as f64 / 1000.0
}

/// Sockets the workload leaves open until Prometheus has been asked.
struct Alive {
    _clients: Vec<Client>,
}

/// Everything the server does on a small real day, over real sockets.
async fn workload(server: &TestServer) -> Alive {
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    let mut keep = Vec::new();

    // A live race on a dense course (a JSON snapshot of megabytes, more than the kernel's
    // socket buffers hold), racers sending fixes, a spectator reading its updates and one
    // that never reads.
    let dense = dense_gpx(RIDE, 150);
    let race_id = live_race_on(&mut admin, "Monitored", dense.clone(), T0, RACERS).await;
    let course = Course::from_gpx(dense.as_bytes(), 200_000).expect("course");
    let index = CourseIndex::from(&course);
    let mut riders = Vec::new();
    for bib in 1..=RACERS {
        riders.push(racer_phone(&server.url, &server.keys, &race_id, bib).await);
    }
    let mut fan = server.client(Role::Spectator, Codec::Binary).await;
    let subscribe = Request::RaceSubscribe {
        race_id: race_id.clone(),
        since_seq: None,
    };
    let Ok(Reply::Subscribed(_)) = fan.request(subscribe.clone()).await else {
        panic!("the spectator subscribes")
    };
    let mut slow = unread_socket(server, Role::Spectator, "slow").await;
    send_raw(&mut slow, 1, subscribe).await;
    for step in 0..30 {
        let (from, to) = (step as f64 * 100.0, (step + 1) as f64 * 100.0);
        for (i, phone) in riders.iter_mut().enumerate() {
            let fixes = fixes(&index, 100.0 * i as f64, from, to);
            phone
                .request(Request::Fixes { fixes })
                .await
                .expect("fixes acknowledged");
        }
        while fan.next_push(Duration::from_millis(40)).await.is_ok() {}
    }
    // The spectator that never read is closed as too slow.
    counted(server, "peloton_ws_closes_total{code=\"4008\"}").await;
    drop(slow);
    // A racer 300 m off the course for a minute is flagged off course.
    let astray: Vec<WireFix> = [(600_000, 300.0), (660_000, 320.0)]
        .into_iter()
        .map(|(after_ms, east_m)| {
            let lost = index.position_at(3_000.0).moved_m(east_m, 0.0);
            common::wire_fix(lost, T0 + 3_000 * 125 + after_ms)
        })
        .collect();
    riders[0]
        .request(Request::Fixes { fixes: astray })
        .await
        .expect("fixes acknowledged");
    counted(server, "peloton_racer_flags_total{flag=\"off_course\"}").await;

    // A race that finished falls asleep in its journal; a question wakes it.
    let done = live_race_on(&mut admin, "Done", dense.clone(), T0, 2).await;
    admin
        .request(Request::RaceFinish { id: done.clone() })
        .await
        .expect("finished");
    counted(server, "peloton_actor_passivations_total{kind=\"race\"}").await;
    admin
        .request(Request::RaceResults { race_id: done })
        .await
        .expect("results of a sleeping race");

    // A tracking app whose device id nobody registered.
    let (status, _) = http_request(
        server.addr,
        "GET /osmand?id=unbound-phone&lat=46.05&lon=14.50 HTTP/1.1",
        None,
        Duration::from_secs(5),
    )
    .await;
    assert!(status >= 400, "an unknown device is refused: {status}");

    // Mail to an SMTP port nobody listens on: attempts fail, the breaker opens, the jobs die.
    let envelope = MailEnvelope {
        correlation_id: "monitoring".into(),
        sequence: 1,
        sent_at_ms: peloton::time::now_ms(),
        messages: (0..3)
            .map(|i| MailMessageView {
                to: format!("ops{i}@example.org"),
                subject: format!("Mail {i}"),
                body: "nobody will receive this\n".into(),
                contact: None,
            })
            .collect(),
    };
    let Ok(Reply::MailJobs(_)) = admin.request(Request::MailSubmit(envelope)).await else {
        panic!("mail submitted")
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let dead = Request::MailList {
            state: Some("dead".into()),
            limit: 10,
        };
        if let Ok(Reply::MailJobs(jobs)) = admin.request(dead).await {
            if jobs.len() == 3 {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "mail jobs never died"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Backups: one streamed to the admin client, one scheduled that is written and
    // verified, and one scheduled into a folder that cannot exist (a path under a file).
    let mut streamed = Vec::new();
    admin.backup(&mut streamed).await.expect("backup streamed");
    let services = server.services();
    let config = &server.server.as_ref().expect("running").engine.config;
    peloton::engine::scheduled_backup(config, &services.journal)
        .await
        .expect("a scheduled backup");
    let blocked = server.dir.path().join("not-a-folder");
    std::fs::write(&blocked, b"a file where the backup folder should be").expect("write");
    let mut broken = config.clone();
    broken.persist.backup_dir = blocked.join("backups");
    assert!(
        peloton::engine::scheduled_backup(&broken, &services.journal)
            .await
            .is_err(),
        "a backup into a folder under a file fails"
    );

    // Patrol: an officer on duty, a citizen who meets them in person.
    import_basics(&mut admin, vec![officer_row("o1", "p1", None)]).await;
    let centre = Position::from_degrees(46.0511, 14.5051).expect("position");
    let mut officer = client_of(server, Role::Officer, "o1").await;
    at(&mut officer, centre).await;
    let Ok(Reply::OnDuty { .. }) = officer.request(Request::DutyStart { minutes: None }).await
    else {
        panic!("on duty")
    };
    at(&mut officer, centre).await;
    let mut citizen = client_of(server, Role::Citizen, "c1").await;
    citizen
        .request(Request::PatrolProfile {
            display_name: "Ana".into(),
            email: None,
        })
        .await
        .expect("profile");
    at(&mut citizen, centre.moved_m(10.0, 0.0)).await;
    let request_id = ask(&mut citizen, "o1").await;
    let Ok(Reply::ConnectAnswered {
        connection: Some(_),
    }) = answer(&mut officer, &request_id, true).await
    else {
        panic!("connected in person")
    };

    // A citizen's device that stops reading while officers come and go around it: its
    // notices back up and the session is closed (4009). Every move of the citizen in and
    // out of reach tells it about every officer nearby, so a burst of moves is thousands
    // of notices, more than the queue and the kernel's buffers hold.
    let crowd: Vec<_> = (0..CROWD)
        .map(|i| officer_row(&format!("w{i}"), "p2", None))
        .collect();
    admin
        .request(Request::PatrolImport(ImportBatch::Officers(crowd)))
        .await
        .expect("officers imported");
    for i in 0..CROWD {
        let mut walker = client_of(server, Role::Officer, &format!("w{i}")).await;
        let Ok(Reply::OnDuty { .. }) = walker.request(Request::DutyStart { minutes: None }).await
        else {
            panic!("on duty")
        };
        at(&mut walker, centre.moved_m(5.0 * i as f64, 20.0)).await;
        keep.push(walker);
    }
    let mut deaf = unread_socket(server, Role::Citizen, "deaf").await;
    for id in 1..=90u64 {
        let p = if id % 2 == 1 {
            centre
        } else {
            centre.moved_m(5_000.0, 0.0)
        };
        let position = Request::PatrolPosition {
            lat_e7: p.lat_e7,
            lon_e7: p.lon_e7,
            accuracy_m: Some(5.0),
        };
        send_raw(&mut deaf, id, position).await;
    }
    counted(server, "peloton_patrol_slow_sessions_total").await;
    drop(deaf);

    // Refusals: a second socket for one citizen, a second guest token within the minute.
    let twice = common::token(&server.keys, Role::Citizen, "c1", None, 600);
    assert!(
        Client::connect(&server.url, &twice, Codec::Binary)
            .await
            .is_err(),
        "a second socket for one subject is refused"
    );
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let (status, _) = http_request(
            server.addr,
            "GET /api/guest-token HTTP/1.1",
            None,
            Duration::from_secs(5),
        )
        .await;
        statuses.push(status);
    }
    assert_eq!(statuses, [200, 429], "one guest token a minute");

    // An error reply, then a flood: one `rate_limited` answer, drops, and a 1008 close.
    let missing = Request::RaceResults {
        race_id: "no-such-race".into(),
    };
    assert!(admin.request(missing).await.is_err(), "an unknown race");
    let mut flood = client_of(server, Role::Spectator, "flood").await;
    for _ in 0..300 {
        if flood.send(Request::Ping).await.is_err() {
            break;
        }
    }
    // Read until the server closes the flooding socket.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while flood.next_push(Duration::from_secs(10)).await.is_ok() {}
    })
    .await;

    keep.extend(riders);
    keep.extend([fan, officer, citizen, admin]);
    Alive { _clients: keep }
}

/// The fixes of a racer `offset_m` ahead, from `from` to `to` metres along, every 25 m.
fn fixes(index: &CourseIndex, offset_m: f64, from: f64, to: f64) -> Vec<WireFix> {
    let mut out = Vec::new();
    let mut d = from;
    while d < to {
        out.push(fix_at(index, d + offset_m, T0 + (d * 125.0) as i64));
        d += 25.0;
    }
    out
}

/// A raw JSON-protocol socket as `role`/`sub` with a tiny receive buffer, which the test
/// never reads: the server's writes to it stall.
async fn unread_socket(server: &TestServer, role: Role, sub: &str) -> RawSocket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(2048).expect("receive buffer");
    let stream = socket.connect(server.addr).await.expect("connect");
    let mut request = format!("{}/ws", server.url)
        .into_client_request()
        .expect("request");
    let bearer = format!("Bearer {}", server.token(role, sub));
    let headers = request.headers_mut();
    headers.insert("Authorization", bearer.parse().expect("header"));
    headers.insert(
        "Sec-WebSocket-Protocol",
        "peloton.v1.json".parse().expect("header"),
    );
    let (ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("upgrade");
    ws
}

/// A socket the test speaks the protocol on by hand.
type RawSocket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Sends `request` as frame `id` on a raw socket, without reading anything.
async fn send_raw(ws: &mut RawSocket, id: u64, request: Request) {
    let frame = Codec::Json
        .encode_client(&ClientFrame { id, request })
        .expect("encode");
    ws.send(frame).await.expect("send");
}

/// Waits (20 s at most) until the server's own `/metrics` shows `series` above zero. A
/// socket the server gave up on may get its close frame or only see the connection end,
/// so the count is what is waited for.
async fn counted(server: &TestServer, series: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, metrics) = http_get(server.addr, "/metrics HTTP/1.1").await;
        if counter(&metrics, series) > 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A binary-protocol client of `server` as `role`/`sub`.
async fn client_of(server: &TestServer, role: Role, sub: &str) -> Client {
    Client::connect(&server.url, &server.token(role, sub), Codec::Binary)
        .await
        .expect("connect")
}

/// Debian's Prometheus on a free loopback port, scraping the server under test every
/// second with deploy/prometheus/alerts.yml loaded; killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
}

impl Prometheus {
    /// Starts it with its own configuration and storage in `scratch`, and waits until it
    /// is ready (at most 60 s).
    async fn start(binary: &str, scratch: &Path, target: SocketAddr) -> Prometheus {
        let config = scratch.join("prometheus.yml");
        let rules = repo("deploy/prometheus/alerts.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules:?}\n\
                 scrape_configs:\n  - job_name: peloton\n    static_configs:\n      \
                 - targets: [\"{target}\"]\n"
            ),
        )
        .expect("write prometheus.yml");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                scratch.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("prometheus starts");
        let mut prom = Prometheus { child, addr };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            // Nothing listens until it has opened its storage: connect before asking.
            if tokio::net::TcpStream::connect(addr).await.is_ok()
                && prom.get("/-/ready").await.0 == 200
            {
                return prom;
            }
            if let Ok(Some(exit)) = prom.child.try_wait() {
                panic!("prometheus exited before it was ready: {exit}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "prometheus never got ready"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `GET path` (HTTP/1.0: Go answers it without chunking): (status, body).
    async fn get(&self, path: &str) -> (u16, String) {
        http_request(
            self.addr,
            &format!("GET {path} HTTP/1.0"),
            None,
            Duration::from_secs(10),
        )
        .await
    }

    /// The result array of an instant query; panics on an error answer (a query that does
    /// not parse is a broken dashboard, not an empty one).
    async fn query(&self, query: &str) -> Vec<serde_json::Value> {
        let (status, body) = self
            .get(&format!("/api/v1/query?query={}", url_encode(query)))
            .await;
        let answer: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{query}: answer is not JSON ({e}): {status} {body}"));
        assert_eq!(answer["status"], "success", "{query}: {body}");
        match &answer["data"]["result"] {
            serde_json::Value::Array(series) => series.clone(),
            // A scalar or string result is one value.
            other => vec![other.clone()],
        }
    }

    /// Whether `query` returns at least one series with a number now: a NaN (a quantile or
    /// a mean over a window where nothing happened) is a gap in Grafana, not data.
    async fn has_series(&self, query: &str) -> bool {
        self.query(query).await.iter().any(|series| {
            series["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| !v.is_nan())
        })
    }

    /// Waits until one scrape of the server succeeded.
    async fn wait_for_a_scrape(&self, limit: Duration) {
        self.wait_for_scrape_after(0.0, limit).await;
    }

    /// Waits until a successful scrape of the server happened after `after` (Unix seconds).
    async fn wait_for_scrape_after(&self, after: f64, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let up = self.query("timestamp(up{job=\"peloton\"} == 1)").await;
            let last = up
                .first()
                .and_then(|s| s["value"][0].as_f64())
                .unwrap_or(0.0);
            if last > after {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no successful scrape of the server after {after}: {up:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Every alerting rule Prometheus loaded, as (name, expression), once each has been
    /// evaluated; panics on a rule whose evaluation failed.
    async fn alert_rules(&self, limit: Duration) -> Vec<(String, String)> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let (_, body) = self.get("/api/v1/rules?type=alert").await;
            let answer: serde_json::Value = serde_json::from_str(&body).expect("rules JSON");
            let rules: Vec<&serde_json::Value> = answer["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            let evaluated = !rules.is_empty() && rules.iter().all(|r| r["health"] != "unknown");
            if evaluated {
                for rule in &rules {
                    assert_eq!(rule["health"], "ok", "rule evaluation failed: {rule}");
                }
                return rules
                    .iter()
                    .map(|r| {
                        let text = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
                        (text("name"), text("query"))
                    })
                    .collect();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "alert rules never evaluated: {body}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query string value (everything but unreserved characters).
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
