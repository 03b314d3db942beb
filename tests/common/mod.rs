//! Shared test harness: real servers (in-process or as a child process), real sockets,
//! real files. Nothing here fakes the server.
#![allow(dead_code)]

pub mod cli;
pub mod mail;
pub mod nats;
pub mod patrol;
pub mod sim;

use peloton::auth::{claims_for, Keys, Role};
use peloton::config::{Config, Overrides};
use peloton::engine::RunningServer;
use peloton::net::client::Client;
use peloton::net::codec::Codec;
use peloton::net::protocol::{
    RaceCreate, RaceStatsView, RacerView, Reply, Request, ResultView, WireFix,
};
use peloton::time::now_ms;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A real GPX ride from the shared data folder.
pub fn gpx_path(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/gpx")
        .join(name);
    assert!(path.exists(), "shared ride missing: {}", path.display());
    path
}

/// The GPX text of a shared ride.
pub fn gpx(name: &str) -> String {
    std::fs::read_to_string(gpx_path(name)).expect("read shared gpx")
}

/// Defaults with a free port and the given data folder, independent of the process env.
pub fn test_config(dir: &Path) -> Config {
    Config::load_from(
        None,
        &[],
        &Overrides {
            listen: Some("127.0.0.1:0".into()),
            data_dir: Some(dir.to_path_buf()),
        },
    )
    .expect("test config")
}

/// An in-process server on a free port with its own data folder.
pub struct TestServer {
    /// The running server (taken by `stop`).
    pub server: Option<RunningServer>,
    /// Its data folder.
    pub dir: tempfile::TempDir,
    /// `ws://127.0.0.1:PORT`.
    pub url: String,
    /// The bound address.
    pub addr: SocketAddr,
    /// Its signing keys.
    pub keys: Keys,
}

impl TestServer {
    /// Starts with the default test configuration.
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Starts after letting the caller adjust the configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path());
        adjust(&mut config);
        let keys = Keys::load_or_create(&config).expect("keys");
        let server = peloton::engine::start(config).await.expect("server starts");
        let addr = server.addr;
        TestServer {
            server: Some(server),
            dir,
            url: format!("ws://{addr}"),
            addr,
            keys,
        }
    }

    /// The running domains (recovery has finished once `start` returned).
    pub fn services(&self) -> &peloton::engine::Services {
        self.server
            .as_ref()
            .and_then(|s| s.engine.services())
            .expect("a started server has its services")
    }

    /// A token for `role`/`sub`, valid for an hour.
    pub fn token(&self, role: Role, sub: &str) -> String {
        token(&self.keys, role, sub, None, 3600)
    }

    /// A client of `role` speaking `codec`.
    pub async fn client(&self, role: Role, codec: Codec) -> Client {
        Client::connect(&self.url, &self.token(role, "tester"), codec)
            .await
            .expect("connect")
    }

    /// Graceful shutdown.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

/// Signs a token with explicit lifetime (negative `ttl_secs` gives an expired token).
pub fn token(keys: &Keys, role: Role, sub: &str, race: Option<&str>, ttl_secs: i64) -> String {
    let now = now_ms() / 1000;
    let mut claims = claims_for(role, sub, race, now, 1);
    claims.exp = now + ttl_secs;
    keys.issue(&claims).expect("sign")
}

/// A binary-protocol client of `url` as `role`/`sub`, with a token valid for an hour.
pub async fn client_as(url: &str, keys: &Keys, role: Role, sub: &str) -> Client {
    Client::connect(url, &token(keys, role, sub, None, 3600), Codec::Binary)
        .await
        .expect("connect")
}

/// A racer's phone in `race` as bib `bib`: a binary-protocol client of `url` with a race-scoped
/// racer token valid for ten minutes.
pub async fn racer_phone(url: &str, keys: &Keys, race: &str, bib: u32) -> Client {
    let token = token(keys, Role::Racer, &bib.to_string(), Some(race), 600);
    Client::connect(url, &token, Codec::Binary).await.unwrap()
}

/// Registers `racers` in race `race_id`, which must be accepted.
pub async fn register(admin: &mut Client, race_id: &str, racers: Vec<RacerView>) {
    admin
        .request(Request::RacerRegister {
            race_id: race_id.to_owned(),
            racers,
        })
        .await
        .expect("register");
}

/// The results of `race` as `client` sees them: the rows and the race's statistics.
pub async fn results(client: &mut Client, race: &str) -> (Vec<ResultView>, RaceStatsView) {
    match client
        .request(Request::RaceResults {
            race_id: race.to_owned(),
        })
        .await
        .expect("results")
    {
        Reply::Results { rows, stats } => (rows, stats),
        other => panic!("expected results, got {other:?}"),
    }
}

/// The race's current standings, as `admin` is answered them.
pub async fn standings(
    admin: &mut Client,
    race: &str,
) -> Vec<peloton::net::protocol::StandingView> {
    let Ok(Reply::Standings(rows)) = admin
        .request(Request::RaceStandings {
            race_id: race.into(),
        })
        .await
    else {
        panic!("standings of {race}")
    };
    rows
}

/// A free loopback port: bound, then released for whatever the test starts on it.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The `peloton` binary built for these tests.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_peloton"))
}

/// The server as a child process, as an operator runs it.
pub struct ChildServer {
    /// The process.
    pub child: Child,
    /// `ws://127.0.0.1:PORT`.
    pub url: String,
    /// The bound address.
    pub addr: SocketAddr,
}

impl ChildServer {
    /// Runs `peloton serve --listen 127.0.0.1:0 --data DIR` with extra environment, and
    /// waits for its `listening on` line.
    pub fn start(data: &Path, env: &[(&str, &str)]) -> ChildServer {
        ChildServer::start_at(data, "127.0.0.1:0", env)
    }

    /// As [`ChildServer::start`], on a given address (a restart on the same port).
    pub fn start_at(data: &Path, listen: &str, env: &[(&str, &str)]) -> ChildServer {
        let mut command = bin();
        command
            .args(["serve", "--listen", listen, "--data"])
            .arg(data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn peloton serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read listening line");
        let addr: SocketAddr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .parse()
            .expect("address");
        ChildServer {
            child,
            url: format!("ws://{addr}"),
            addr,
        }
    }

    /// An admin's binary-protocol client of this server, whose data folder is `data`, with a
    /// token valid for an hour.
    pub async fn admin(&self, data: &Path) -> Client {
        let token = token(&keys_for(data), Role::Admin, "ops", None, 3600);
        Client::connect(&self.url, &token, Codec::Binary)
            .await
            .expect("admin connects")
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit; returns the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keys as a child server in `data` uses them (the secret file it creates or finds).
pub fn keys_for(data: &Path) -> Keys {
    Keys::load_or_create(&test_config(data)).expect("keys")
}

/// A plain HTTP/1.1 GET over a real socket: (status, body). `path_and_headers` is the
/// request line's target and version plus any extra header lines.
pub async fn http_get(addr: SocketAddr, path_and_headers: &str) -> (u16, String) {
    // A 101 keeps the connection open: read what arrives within a short window.
    http_request(
        addr,
        &format!("GET {path_and_headers}"),
        None,
        Duration::from_millis(1500),
    )
    .await
}

/// A plain HTTP/1.1 request over a real socket (`Connection: close`): `request_line` is
/// the method, target and version plus any extra header lines; a body is sent as JSON.
/// Reads until the server closes or `limit` passes; answers (status, body).
pub async fn http_request(
    addr: SocketAddr,
    request_line: &str,
    json_body: Option<&str>,
    limit: Duration,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let body = json_body.unwrap_or("");
    let content = match json_body {
        Some(b) => format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ),
        None => String::new(),
    };
    let request =
        format!("{request_line}\r\nHost: {addr}\r\n{content}Connection: close\r\n\r\n{body}");
    stream.write_all(request.as_bytes()).await.expect("write");
    // Read until the server closes, or until a `Content-Length` body is complete (some
    // servers, chromedriver among them, answer `Connection: close` but leave closing to us).
    let mut response = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => response.extend_from_slice(&chunk[..n]),
            }
            if complete(&response) {
                return;
            }
        }
    })
    .await;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Whether `response` holds a head and a body as long as its `Content-Length` says.
fn complete(response: &[u8]) -> bool {
    let Some(head_end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&response[..head_end]).to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|len| response.len() >= head_end + 4 + len)
}

/// A phone's fix `position_m` along the course at device time `at_ms`, 5 m accurate.
pub fn fix_at(index: &peloton::geo::CourseIndex, position_m: f64, at_ms: i64) -> WireFix {
    wire_fix(index.position_at(position_m), at_ms)
}

/// A phone's fix at `p` at device time `at_ms`, 5 m accurate.
pub fn wire_fix(p: peloton::geo::Position, at_ms: i64) -> WireFix {
    WireFix {
        at_ms,
        lat_e7: p.lat_e7,
        lon_e7: p.lon_e7,
        accuracy_dm: 50,
        speed_cmps: None,
        elevation_dm: None,
    }
}

/// Creates a live race on a shared ride with bibs 1..=n registered (with contact emails);
/// returns its id.
pub async fn live_race(admin: &mut Client, ride: &str, start_at_ms: i64, n: u32) -> String {
    live_race_on(admin, &format!("Race on {ride}"), gpx(ride), start_at_ms, n).await
}

/// A recorded ride with checkpoints added as GPX waypoints at these fractions of its length
/// (the shared rides have none), named CP1, CP2, ….
pub fn gpx_with_checkpoints(ride: &str, fractions: &[f64]) -> String {
    let text = gpx(ride);
    let course = peloton::geo::Course::from_gpx(text.as_bytes(), 200_000).unwrap();
    let index = peloton::geo::CourseIndex::from(&course);
    let waypoints: String = fractions
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let p = index.position_at(course.length_m * f);
            format!(
                "<wpt lat=\"{}\" lon=\"{}\"><name>CP{}</name></wpt>\n",
                p.lat(),
                p.lon(),
                i + 1
            )
        })
        .collect();
    let at = text.find("<trk>").expect("the ride has a track");
    format!("{}{waypoints}{}", &text[..at], &text[at..])
}

/// Creates a race on this GPX text, registers `n` racers and starts it.
pub async fn live_race_on(
    admin: &mut Client,
    name: &str,
    course_gpx: String,
    start_at_ms: i64,
    n: u32,
) -> String {
    let create = RaceCreate {
        name: name.to_owned(),
        course_gpx,
        start_at_ms,
        cutoff_at_ms: None,
    };
    let Ok(Reply::Race(race)) = admin.request(Request::RaceCreate(create)).await else {
        panic!("race create failed")
    };
    let racers = (1..=n)
        .map(|bib| RacerView {
            bib,
            name: format!("Racer {bib}"),
            team: None,
            email: Some(format!("r{bib}@example.si")),
        })
        .collect();
    register(admin, &race.id, racers).await;
    // A start that has already passed makes the race live by itself (`race.start_mode` auto),
    // and then the clock was first: that refusal is fine, the race is live either way.
    match admin
        .request(Request::RaceStart {
            id: race.id.clone(),
        })
        .await
    {
        Ok(_) => {}
        Err(e) if e.code() == Some(peloton::error::ErrorCode::InvalidTransition) => {}
        Err(e) => panic!("start: {e}"),
    }
    race.id
}

/// A ride's course with `per_leg` points on every leg, as GPX: the same course, a much
/// bigger snapshot (for slow-reader and large-snapshot tests).
pub fn dense_gpx(ride: &str, per_leg: usize) -> String {
    let course = peloton::geo::Course::from_gpx(gpx(ride).as_bytes(), 200_000).unwrap();
    let mut out = String::from(
        "<?xml version=\"1.0\"?>\n<gpx version=\"1.1\" creator=\"test\" \
         xmlns=\"http://www.topografix.com/GPX/1/1\"><trk><trkseg>\n",
    );
    for leg in course.points.windows(2) {
        for k in 0..per_leg {
            let t = k as f64 / per_leg as f64;
            let lat = leg[0].lat() + (leg[1].lat() - leg[0].lat()) * t;
            let lon = leg[0].lon() + (leg[1].lon() - leg[0].lon()) * t;
            out.push_str(&format!("<trkpt lat=\"{lat:.7}\" lon=\"{lon:.7}\"/>\n"));
        }
    }
    if let Some(last) = course.points.last() {
        out.push_str(&format!(
            "<trkpt lat=\"{:.7}\" lon=\"{:.7}\"/>\n",
            last.lat(),
            last.lon()
        ));
    }
    out.push_str("</trkseg></trk></gpx>\n");
    out
}

/// The value of one series in the Prometheus text of `/metrics`, 0 when absent.
pub fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|rest| rest.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// A spectator's table of a live race as it applies `race_update` and `race_catch_up`
/// pushes, checking the rule PROTOCOL.md gives clients: a delta continues the update before
/// it, a catch-up the one it names, a full table replaces everything, so no row is ever
/// applied across a gap.
#[derive(Debug, Default)]
pub struct LiveTable {
    /// Rows by bib.
    pub rows: std::collections::BTreeMap<u32, peloton::net::protocol::StandingView>,
    /// The last update applied.
    pub seq: u64,
    /// Spectators as the last update said.
    pub spectators: u32,
    /// Catch-ups applied.
    pub catch_ups: usize,
}

impl LiveTable {
    /// A table starting from a `subscribed` snapshot.
    pub fn from_snapshot(snapshot: peloton::net::protocol::RaceSnapshot) -> LiveTable {
        LiveTable {
            rows: snapshot.standings.into_iter().map(|s| (s.bib, s)).collect(),
            seq: snapshot.seq,
            spectators: snapshot.spectators,
            catch_ups: 0,
        }
    }

    /// Applies a live update; `Err(push)` for any other push. Panics on a gap.
    pub fn apply(
        &mut self,
        push: peloton::net::protocol::Push,
    ) -> Result<(), peloton::net::protocol::Push> {
        use peloton::net::protocol::Push;
        let (seq, spectators, rows) = match push {
            Push::RaceUpdate(update) => {
                assert!(
                    update.full || update.seq == self.seq + 1,
                    "a delta never skips a sequence number: {} after {}",
                    update.seq,
                    self.seq
                );
                if update.full {
                    self.rows.clear();
                }
                (update.seq, update.spectators, update.standings)
            }
            Push::RaceCatchUp(up) => {
                assert_eq!(
                    up.since_seq, self.seq,
                    "a catch-up continues the last update this socket was sent"
                );
                assert!(up.seq > up.since_seq + 1, "a catch-up covers missed ticks");
                self.catch_ups += 1;
                (up.seq, up.spectators, up.standings)
            }
            other => return Err(other),
        };
        self.seq = seq;
        self.spectators = spectators;
        for row in rows {
            self.rows.insert(row.bib, row);
        }
        Ok(())
    }
}

/// A data folder for another cluster node, holding the cluster's signing secret copied from
/// the first node's folder (as an operator shares it with `PELOTON_AUTH_SECRET` or the file).
pub fn node_folder(secret_from: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        secret_from.join("secret.key"),
        dir.path().join("secret.key"),
    )
    .unwrap();
    dir
}

/// Reads a started replay's pushes to its `replay_done`: the table they build, by bib.
pub async fn replay_to_end(
    viewer: &mut Client,
) -> std::collections::BTreeMap<u32, peloton::net::protocol::StandingView> {
    let mut table = std::collections::BTreeMap::new();
    loop {
        match viewer
            .next_push(std::time::Duration::from_secs(20))
            .await
            .unwrap()
        {
            peloton::net::protocol::Push::ReplayTick(tick) => {
                if tick.full {
                    table.clear();
                }
                for row in tick.standings {
                    table.insert(row.bib, row);
                }
            }
            peloton::net::protocol::Push::ReplayDone { .. } => return table,
            other => panic!("unexpected {other:?}"),
        }
    }
}
