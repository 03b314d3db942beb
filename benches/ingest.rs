//! Fix intake from tracking apps over HTTP (the OsmAnd protocol, PROTOCOL.md section 18)
//! against Peloton's own WebSocket `fixes` path, in the same run and the same `peloton
//! serve` process.
//!
//! Why: a racer may ride with Traccar Client or OsmAnd instead of a Peloton client. Every
//! such fix is a whole HTTP request (request line, headers, status line, headers) where a
//! socket sends one small binary frame, and it takes its own way through hyper, the query
//! decoder and the device-id lookup before it joins the WebSocket path's `store_fixes`. This
//! measures what that costs: fixes per second, ack latency, bytes on the wire per fix and
//! the server's CPU per fix, with the WebSocket path as the baseline.
//!
//! Run: `nice -n 5 cargo bench --bench ingest`. Knobs: `DEVICES` (R, default 1000),
//! `SECONDS` (D, window per phase, default 10), `ROUNDS` (default 1: phase A then B; 2:
//! A B B A, so a drift of the server's speed over the run falls on both paths alike; the
//! summary pools the rounds). `cargo test --benches` runs a smoke instead (3 devices, 1 s,
//! one round; the same knobs override it) that fails when either path stores no fix or
//! answers an error.
//!
//! Baseline: Peloton's own WebSocket path (phase B), in the same run, against the same
//! server process and race, with the same number of connections and the same fixes. The
//! summary's ratio column is HTTP ÷ WebSocket.
//!
//! Setup: `peloton serve` on 127.0.0.1:0 with a temporary data folder, its WebSocket rate
//! limit and burst raised to 1,000,000 (a closed loop far exceeds the default 50/s), loopback
//! exempt from the per-address limits (`ws.addr_limits_exempt_loopback`) and the future
//! skew at its maximum, a week (fixes are dated a second apart and sent as fast as they are
//! answered, so their device time runs ahead of the clock). One live race on the Celje loop,
//! starting now, with 2R racers: bibs 1..=R have device ids `dev-<bib>` bound over the
//! protocol (`race_device_bind`; the bib has six digits, `dev-000001`, as an id an admin
//! gives has at least six characters), bibs R+1..=2R ride with racer tokens.
//!
//! Phase A (HTTP): R keep-alive HTTP/1.1 connections (hyper's client connection over a
//! tokio `TcpStream`, `TCP_NODELAY` like the server's side), one per device, each a closed
//! loop for D seconds:
//! `GET /osmand?id=dev-<bib>&lat=..&lon=..&timestamp=..&accuracy=5&speed=..` with a `Host`
//! header and nothing else (real apps add a user agent and more, so real
//! requests are larger), wait for the answer and its (empty) body, send the next. A fix is
//! counted when its `200` without `X-Peloton-Dropped` arrives inside the window; the server's
//! own `peloton_device_reports_total{outcome="accepted"}` over the phase is printed beside
//! it, so a 200 that stored nothing (a resend) would show.
//!
//! Phase B (WebSocket): R racer sockets (tokio-tungstenite with the `Client`'s 8 KiB
//! buffers, binary subprotocol, the same loop as `fanout`'s `MODE=saturate`), each a closed
//! loop for D seconds of `fixes` with one fix per request; a fix is counted by the
//! `fixes_ack.accepted` of the acks that arrive inside the window.
//!
//! Both paths send the same fixes: device time +1 s and 8 m further along the course per
//! fix, 5 m between consecutive racers, standing still 1 km before the finish so every fix
//! stays acceptable; accuracy 5 m and speed 8 m/s. Each racer's sequence continues from
//! round to round. Connections are opened before a phase's window and closed after it.
//!
//! Measured per phase: fixes per second (counted ÷ D), ack latency (send → answer) median
//! and p99, bytes per fix on each path (what the client wrote and read on its TCP socket,
//! counted by a wrapper around the stream, from the start of its loop to its last answer
//! inside the window, ÷ the answers counted: connection setup and the unanswered last
//! request are excluded; TCP/IP headers are not counted), and the CPU time (utime + stime of
//! /proc/<pid>/stat) of the server process and of this bench process inside the window, so
//! fixes per server CPU-second can be compared. The bench's clients run on the same
//! machine and share its cores with the server; the client CPU line says how much they took.

mod support;

use support::connect_all;
use support::figures::{env_or, ms, pct, ratio};
use support::process::cpu_seconds;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use peloton::auth::{claims_for, Keys, Role};
use peloton::geo::{Course, CourseIndex};
use peloton::net::client::Client;
use peloton::net::codec::{Codec, MAX_DECODE_BYTES};
use peloton::net::protocol::{ClientFrame, Push, Reply, Request, ServerFrame, WireFix};
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const GPX: &str = "../shared/data/gpx/loop-celje-resevno-2020-09-20.gpx";
/// Admin sockets that bind the device ids side by side (each bind is a journaled request).
const ADMIN_SOCKETS: usize = 8;
/// Rate limit (messages/s and burst): a closed loop far exceeds the default 50/s.
const RATE_LIMIT: &str = "1000000";
/// Client buffers, as `Client` uses.
const CLIENT_BUFFER_BYTES: usize = 8 * 1024;
/// Metres a racer moves per fix (one fix per device second: 8 m/s).
const STEP_M: f64 = 8.0;
/// The speed of [`STEP_M`] per second in knots, which the OsmAnd protocol speaks (8 m/s).
const SPEED_KNOTS: &str = "15.55";
/// The same speed as a `WireFix` carries it.
const SPEED_CMPS: u32 = 800;

/// One run's shape, from the environment.
#[derive(Clone, Copy, Debug)]
struct Settings {
    /// R: devices over HTTP, and as many racer sockets.
    devices: usize,
    /// D: each phase's window.
    secs: u64,
    /// How many times phases A and B run, one after the other.
    rounds: usize,
}

impl Settings {
    fn from_env(benching: bool) -> Settings {
        Settings {
            devices: env_or("DEVICES", if benching { 1000 } else { 3 }).max(1),
            secs: env_or("SECONDS", if benching { 10 } else { 1 }).max(1) as u64,
            rounds: env_or("ROUNDS", 1).max(1),
        }
    }
}

/// Bytes one socket wrote and read, shared between the stream (owned by hyper's connection
/// task or by tungstenite) and the loop that reads the totals.
#[derive(Default)]
struct Counters {
    /// Bytes the client wrote: its requests.
    written: AtomicU64,
    /// Bytes the client read: the server's answers.
    read: AtomicU64,
}

impl Counters {
    /// (written, read) now.
    fn snapshot(&self) -> (u64, u64) {
        (
            self.written.load(Ordering::Relaxed),
            self.read.load(Ordering::Relaxed),
        )
    }
}

/// A TCP stream that counts what passes through it, so bytes per fix are what each protocol
/// really puts on the socket, framing included.
struct Counted {
    /// The socket.
    inner: TcpStream,
    /// Its totals.
    counters: Arc<Counters>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let n = (buf.filled().len() - before) as u64;
            self.counters.read.fetch_add(n, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.counters.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.counters.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A counted TCP connection to `host` (`ip:port`), with Nagle off as the server has it.
async fn counted_connect(host: &str) -> (Counted, Arc<Counters>) {
    let inner = TcpStream::connect(host).await.expect("tcp connect");
    inner.set_nodelay(true).expect("nodelay");
    let counters = Arc::new(Counters::default());
    (
        Counted {
            inner,
            counters: counters.clone(),
        },
        counters,
    )
}

/// One racer's place in its own sequence of fixes, kept from round to round.
#[derive(Clone, Copy, Debug)]
struct Rider {
    /// The racer's bib.
    bib: u32,
    /// Where its first fix is, metres along the course (racers 5 m apart).
    offset_m: f64,
    /// The number of its next fix, from 1.
    next: u64,
}

impl Rider {
    /// The next fix's position and device time (Unix seconds), and advances.
    fn advance(&mut self, track: &Track) -> (i32, i32, i64) {
        let k = self.next;
        self.next += 1;
        let d = (self.offset_m + STEP_M * (k - 1) as f64).min(track.stop_at_m.max(self.offset_m));
        let p = track.index.position_at(d);
        (p.lat_e7, p.lon_e7, track.base_s + k as i64)
    }
}

/// The course and the times every fix is dated from.
struct Track {
    /// The course, to place fixes on it.
    index: CourseIndex,
    /// 1 km before the finish: racers stand still there, so every fix stays acceptable and
    /// none finishes.
    stop_at_m: f64,
    /// Whole seconds just after the race's start: fix k is dated `base_s + k`, in whole
    /// seconds because the OsmAnd protocol's Unix timestamp has no fraction.
    base_s: i64,
}

/// The device id bound to `bib`: `dev-` and the bib padded to six digits, since an id an
/// admin gives has at least six characters.
fn device_id(bib: u32) -> String {
    format!("dev-{bib:06}")
}

/// A degree in the OsmAnd query from an E7 integer, exactly (no float rounding).
fn degrees(e7: i32) -> String {
    let sign = if e7 < 0 { "-" } else { "" };
    let a = e7.unsigned_abs();
    format!("{sign}{}.{:07}", a / 10_000_000, a % 10_000_000)
}

/// What one closed loop (one connection) got inside the window.
#[derive(Default)]
struct Tally {
    /// Requests answered inside the window (one fix each).
    requests: u64,
    /// Fixes stored: HTTP `200` without `X-Peloton-Dropped`; WebSocket `accepted`.
    stored: u64,
    /// Fixes answered but not stored: HTTP `200` with `X-Peloton-Dropped`; WebSocket
    /// `ignored`.
    not_stored: u64,
    /// Error answers or broken connections.
    errors: u64,
    /// The first error, to print.
    first_error: Option<String>,
    /// Send → answer, per request answered inside the window.
    latencies: Vec<Duration>,
    /// Bytes written from the loop's start to its last answer inside the window.
    written: u64,
    /// Bytes read over the same span.
    read: u64,
}

impl Tally {
    fn fail(&mut self, why: String) {
        self.errors += 1;
        self.first_error.get_or_insert(why);
    }

    fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.stored += other.stored;
        self.not_stored += other.not_stored;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies.extend(other.latencies);
        self.written += other.written;
        self.read += other.read;
    }
}

/// Counts the bytes of the answered requests only: from the loop's start to its last
/// answer inside the window (closed loop: nothing else is in flight then).
struct Span {
    /// The socket's totals.
    counters: Arc<Counters>,
    /// (written, read) when the loop started, after connection setup.
    start: (u64, u64),
    /// (written, read) right after the last answer inside the window.
    last: (u64, u64),
}

impl Span {
    fn start(counters: Arc<Counters>) -> Span {
        let start = counters.snapshot();
        Span {
            counters,
            start,
            last: start,
        }
    }

    fn answered(&mut self) {
        self.last = self.counters.snapshot();
    }

    fn close(&self, tally: &mut Tally) {
        tally.written = self.last.0 - self.start.0;
        tally.read = self.last.1 - self.start.1;
    }
}

/// An HTTP/1.1 keep-alive connection as a tracking app holds one.
struct HttpConn {
    /// Sends requests down the connection, one at a time.
    sender: SendRequest<Empty<Bytes>>,
    /// The connection's byte totals.
    counters: Arc<Counters>,
}

async fn http_connect(host: String) -> HttpConn {
    let (stream, counters) = counted_connect(&host).await;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("http handshake");
    // The connection drives the socket; it ends when the sender is dropped.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    HttpConn { sender, counters }
}

/// One device's closed loop over HTTP until `deadline`.
async fn http_loop(
    mut conn: HttpConn,
    mut rider: Rider,
    track: Arc<Track>,
    host: Arc<str>,
    deadline: Instant,
) -> (Tally, Rider) {
    let mut tally = Tally::default();
    let mut span = Span::start(conn.counters.clone());
    while Instant::now() < deadline {
        let (lat, lon, t) = rider.advance(&track);
        let target = format!(
            "/osmand?id={}&lat={}&lon={}&timestamp={t}&accuracy=5&speed={SPEED_KNOTS}",
            device_id(rider.bib),
            degrees(lat),
            degrees(lon)
        );
        let request = hyper::Request::get(target)
            .header(hyper::header::HOST, &*host)
            .body(Empty::<Bytes>::new())
            .expect("request");
        let at = Instant::now();
        if let Err(e) = conn.sender.ready().await {
            tally.fail(format!("connection: {e}"));
            break;
        }
        let response = match conn.sender.send_request(request).await {
            Ok(r) => r,
            Err(e) => {
                tally.fail(format!("send: {e}"));
                break;
            }
        };
        let status = response.status();
        let dropped = response.headers().get("x-peloton-dropped").cloned();
        let body = match response.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                tally.fail(format!("body: {e}"));
                break;
            }
        };
        let now = Instant::now();
        if now > deadline {
            break;
        }
        tally.requests += 1;
        tally.latencies.push(now - at);
        span.answered();
        match (status, dropped) {
            (hyper::StatusCode::OK, None) => tally.stored += 1,
            (hyper::StatusCode::OK, Some(why)) => {
                tally.not_stored += 1;
                tally
                    .first_error
                    .get_or_insert(format!("200 dropped: {why:?}"));
            }
            (status, _) => tally.fail(format!("{status}: {}", String::from_utf8_lossy(&body))),
        }
    }
    span.close(&mut tally);
    (tally, rider)
}

/// A racer socket over a counted stream.
type Ws = WebSocketStream<Counted>;

/// Opens a racer socket as `Client::connect` does (8 KiB buffers, bearer token, binary
/// subprotocol) over a counted stream, and reads the welcome.
async fn ws_connect(url: String, host: String, token: String) -> (Ws, Arc<Counters>) {
    let request = support::upgrade_request(&url, &token);
    let config = WebSocketConfig::default()
        .read_buffer_size(CLIENT_BUFFER_BYTES)
        .write_buffer_size(CLIENT_BUFFER_BYTES)
        .max_message_size(Some(MAX_DECODE_BYTES))
        .max_frame_size(Some(MAX_DECODE_BYTES));
    let (stream, counters) = counted_connect(&host).await;
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .expect("racer connect");
    match read_server(&mut ws).await {
        Some(ServerFrame::Push(Push::Welcome(_))) => (ws, counters),
        other => panic!("expected a welcome, got {other:?}"),
    }
}

/// The next server frame; `None` when the socket closed or broke.
async fn read_server(ws: &mut Ws) -> Option<ServerFrame> {
    loop {
        match ws.next().await? {
            Ok(Message::Binary(b)) => return Codec::Binary.decode_server(&b).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// One racer socket's closed loop of one-fix `fixes` requests until `deadline`.
async fn ws_loop(
    (mut ws, counters): (Ws, Arc<Counters>),
    mut rider: Rider,
    track: Arc<Track>,
    deadline: Instant,
) -> (Tally, Rider) {
    let mut tally = Tally::default();
    let mut span = Span::start(counters);
    let mut id = 0u64;
    while Instant::now() < deadline {
        let (lat_e7, lon_e7, t) = rider.advance(&track);
        let fix = WireFix {
            at_ms: t * 1000,
            lat_e7,
            lon_e7,
            accuracy_dm: 50,
            speed_cmps: Some(SPEED_CMPS),
            elevation_dm: None,
        };
        id += 1;
        let message = Codec::Binary
            .encode_client(&ClientFrame {
                id,
                request: Request::Fixes { fixes: vec![fix] },
            })
            .expect("encode");
        let at = Instant::now();
        if let Err(e) = ws.send(message).await {
            tally.fail(format!("send: {e}"));
            break;
        }
        let answer = loop {
            match read_server(&mut ws).await {
                Some(ServerFrame::Push(_)) => continue,
                other => break other,
            }
        };
        let now = Instant::now();
        if now > deadline {
            break;
        }
        let Some(frame) = answer else {
            tally.fail("socket closed".into());
            break;
        };
        tally.requests += 1;
        tally.latencies.push(now - at);
        span.answered();
        match frame {
            ServerFrame::Reply {
                id: got,
                reply: Reply::FixesAck {
                    accepted, ignored, ..
                },
            } if got == id => {
                tally.stored += u64::from(accepted);
                tally.not_stored += u64::from(ignored);
            }
            frame => tally.fail(format!("{frame:?}")),
        }
    }
    span.close(&mut tally);
    let _ = ws.close(None).await;
    (tally, rider)
}

/// CPU seconds of the server and of this process between now and `end`, read at `end`
/// by a task of its own so the loops' tail does not stretch the window.
fn cpu_window(server: u32, end: Instant) -> tokio::task::JoinHandle<(Option<f64>, Option<f64>)> {
    let me = std::process::id();
    let (s0, c0) = (cpu_seconds(server), cpu_seconds(me));
    tokio::spawn(async move {
        tokio::time::sleep_until(end.into()).await;
        let (s1, c1) = (cpu_seconds(server), cpu_seconds(me));
        (
            s0.zip(s1).map(|(a, b)| b - a),
            c0.zip(c1).map(|(a, b)| b - a),
        )
    })
}

/// The server's count of OsmAnd fixes answered `accepted` so far, from `/metrics`.
async fn server_accepted(host: &str) -> Option<u64> {
    let text = support::metrics_text(host).await?;
    // Before the first report the series does not exist yet: zero.
    let mut total = 0.0;
    for line in text.lines() {
        if line.starts_with("peloton_device_reports_total{")
            && line.contains("outcome=\"accepted\"")
        {
            total += line.split_whitespace().last()?.parse::<f64>().ok()?;
        }
    }
    Some(total as u64)
}

/// Which way fixes come in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    /// OsmAnd protocol GETs over keep-alive HTTP/1.1.
    Http,
    /// `fixes` requests over racer WebSockets.
    Ws,
}

impl Path {
    fn label(self) -> &'static str {
        match self {
            Path::Http => "HTTP (OsmAnd)",
            Path::Ws => "WebSocket",
        }
    }
}

/// One phase's (or the pooled phases') figures.
#[derive(Default)]
struct Phase {
    /// The loops' counts, pooled.
    tally: Tally,
    /// Total window time: D per phase (rates are per D; the CPU is read at the
    /// deadline, D after the loops start).
    window: Duration,
    /// Server CPU seconds inside the windows.
    server_cpu_s: Option<f64>,
    /// This process's (the clients') CPU seconds inside the windows.
    client_cpu_s: Option<f64>,
    /// HTTP only: the server's `accepted` count over the phase (window and tail).
    server_accepted: Option<u64>,
}

impl Phase {
    /// Pools `other` into this: counts and windows add up, a figure missing in either
    /// phase is missing in the pool.
    fn merge(&mut self, other: Phase) {
        let first = self.window.is_zero();
        let add = |a: Option<f64>, b: Option<f64>| {
            if first {
                b
            } else {
                a.zip(b).map(|(a, b)| a + b)
            }
        };
        self.server_cpu_s = add(self.server_cpu_s, other.server_cpu_s);
        self.client_cpu_s = add(self.client_cpu_s, other.client_cpu_s);
        self.server_accepted = if first {
            other.server_accepted
        } else {
            self.server_accepted
                .zip(other.server_accepted)
                .map(|(a, b)| a + b)
        };
        self.tally.merge(other.tally);
        self.window += other.window;
    }

    fn fixes_per_s(&self) -> f64 {
        self.tally.stored as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// (p50, p99) of the answers' latencies.
    fn latency(&self) -> (Duration, Duration) {
        let mut v = self.tally.latencies.clone();
        v.sort();
        (pct(&v, 0.5), pct(&v, 0.99))
    }

    /// (request, response) bytes per answered request (one fix each).
    fn bytes_per_fix(&self) -> (f64, f64) {
        let n = self.tally.requests.max(1) as f64;
        (self.tally.written as f64 / n, self.tally.read as f64 / n)
    }

    fn fixes_per_cpu_s(&self) -> Option<f64> {
        self.server_cpu_s
            .filter(|c| *c > 0.0)
            .map(|c| self.tally.stored as f64 / c)
    }

    fn line(&self, round: usize, path: Path) -> String {
        let (p50, p99) = self.latency();
        let (req, resp) = self.bytes_per_fix();
        format!(
            "round {round} {:<14} {:>8.0} fixes/s  ack p50 {} p99 {}  {:.0}+{:.0} B/fix  server CPU {}  client CPU {}  errors {}",
            path.label(),
            self.fixes_per_s(),
            ms(p50),
            ms(p99),
            req,
            resp,
            secs(self.server_cpu_s),
            secs(self.client_cpu_s),
            self.tally.errors,
        )
    }
}

fn secs(s: Option<f64>) -> String {
    s.map_or("n/a".into(), |s| format!("{s:.2} s"))
}

fn row(name: &str, a: String, b: String, r: String) {
    println!("{name:<36} {a:>15} {b:>15} {r:>9}");
}

/// `peloton serve`, ended when dropped, so a failing bench leaves no server behind.
struct ServerChild(std::process::Child);

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The running server, its race and what the phases need to reach it.
struct Bench {
    /// `peloton serve` (declared first: it ends before its folder is removed).
    child: ServerChild,
    /// The server's data folder, removed when the bench ends.
    _dir: tempfile::TempDir,
    /// Its `ws://` address, for sockets.
    url: String,
    /// Its `ip:port`, for HTTP and the `Host` header.
    host: Arc<str>,
    /// Its signing keys, for racer tokens.
    keys: Keys,
    /// Issue time of the tokens.
    now_s: i64,
    /// The race's id.
    race: String,
    /// Where and when the fixes are.
    track: Arc<Track>,
}

impl Bench {
    async fn start(devices: usize) -> Bench {
        let gpx = std::fs::read_to_string(GPX).expect("gpx");
        let parsed = Course::from_gpx(gpx.as_bytes(), 200_000).expect("course");
        let index = CourseIndex::from(&parsed);
        let dir = tempfile::tempdir().expect("tempdir");
        let env = [
            ("PELOTON_WS_RATE_LIMIT_PER_SEC", RATE_LIMIT),
            ("PELOTON_WS_RATE_LIMIT_BURST", RATE_LIMIT),
            ("PELOTON_WS_ADDR_LIMITS_EXEMPT_LOOPBACK", "true"),
            // Fixes are dated a second apart and sent as fast as they are answered: allow the
            // most skew the server accepts (a week).
            ("PELOTON_TRACKING_MAX_FUTURE_SKEW_MS", "604800000"),
        ];
        let (child, url) = support::start_server(dir.path(), &env);
        let child = ServerChild(child);
        let host: Arc<str> = url.trim_start_matches("ws://").into();
        let keys = support::server_keys(dir.path());
        let now_s = peloton::time::now_ms() / 1000;
        let admin_token = keys
            .issue(&claims_for(Role::Admin, "bench", None, now_s, 3600))
            .expect("token");
        let mut admin = Client::connect(&url, &admin_token, Codec::Binary)
            .await
            .expect("admin connect");
        let start_ms = peloton::time::now_ms();
        let bibs: Vec<u32> = (1..=2 * devices as u32).collect();
        let race_id =
            support::live_race(&mut admin, "Ingest bench".into(), &gpx, start_ms, &bibs).await;
        admin.close().await;
        // Each bind is journaled before its answer: several admin sockets side by side.
        let binders: Vec<_> = (0..ADMIN_SOCKETS.min(devices))
            .map(|j| {
                let (url, token, race_id) = (url.clone(), admin_token.clone(), race_id.clone());
                tokio::spawn(async move {
                    let mut admin = Client::connect(&url, &token, Codec::Binary)
                        .await
                        .expect("admin connect");
                    for bib in (1 + j as u32..=devices as u32).step_by(ADMIN_SOCKETS) {
                        let reply = admin
                            .request(Request::RaceDeviceBind {
                                race_id: race_id.clone(),
                                bib,
                                device_id: Some(device_id(bib)),
                            })
                            .await
                            .expect("bind");
                        assert!(matches!(reply, Reply::Devices { .. }), "bind {bib}");
                    }
                    admin.close().await;
                })
            })
            .collect();
        for b in binders {
            b.await.expect("binder");
        }
        let stop_at_m = (index.length_m() - 1000.0).max(0.0);
        Bench {
            _dir: dir,
            child,
            url,
            host,
            keys,
            now_s,
            race: race_id,
            track: Arc::new(Track {
                index,
                stop_at_m,
                base_s: start_ms.div_euclid(1000) + 1,
            }),
        }
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Racer `i` of a path's R racers (bibs 1..=R over HTTP, R+1..=2R over WebSockets).
    fn rider(&self, bib: u32, i: usize) -> Rider {
        Rider {
            bib,
            offset_m: (i as f64 * 5.0) % (self.track.index.length_m() * 0.5),
            next: 1,
        }
    }

    /// Phase A: every device's closed loop over HTTP for `d`.
    async fn http_phase(&self, riders: &mut [Rider], d: Duration) -> Phase {
        let host = self.host.clone();
        let conns = connect_all(riders.len(), |_| http_connect(host.to_string())).await;
        let before = server_accepted(&self.host).await;
        let deadline = Instant::now() + d;
        let cpu = cpu_window(self.pid(), deadline);
        let loops: Vec<_> = conns
            .into_iter()
            .zip(riders.iter())
            .map(|(conn, rider)| {
                tokio::spawn(http_loop(
                    conn,
                    *rider,
                    self.track.clone(),
                    self.host.clone(),
                    deadline,
                ))
            })
            .collect();
        let mut phase = Phase::default();
        for (l, rider) in loops.into_iter().zip(riders.iter_mut()) {
            let (tally, moved) = l.await.expect("http loop");
            phase.tally.merge(tally);
            *rider = moved;
        }
        let (server_cpu_s, client_cpu_s) = cpu.await.expect("cpu window");
        let after = server_accepted(&self.host).await;
        phase.window = d;
        phase.server_cpu_s = server_cpu_s;
        phase.client_cpu_s = client_cpu_s;
        phase.server_accepted = before.zip(after).map(|(a, b)| b.saturating_sub(a));
        phase
    }

    /// Phase B: every racer socket's closed loop of `fixes` for `d`.
    async fn ws_phase(&self, riders: &mut [Rider], d: Duration) -> Phase {
        let tokens: Vec<String> = riders
            .iter()
            .map(|r| {
                self.keys
                    .issue(&claims_for(
                        Role::Racer,
                        &r.bib.to_string(),
                        Some(&self.race),
                        self.now_s,
                        3600,
                    ))
                    .expect("token")
            })
            .collect();
        let (url, host) = (self.url.clone(), self.host.to_string());
        let sockets = connect_all(riders.len(), |i| {
            ws_connect(url.clone(), host.clone(), tokens[i].clone())
        })
        .await;
        let deadline = Instant::now() + d;
        let cpu = cpu_window(self.pid(), deadline);
        let loops: Vec<_> = sockets
            .into_iter()
            .zip(riders.iter())
            .map(|(socket, rider)| {
                tokio::spawn(ws_loop(socket, *rider, self.track.clone(), deadline))
            })
            .collect();
        let mut phase = Phase::default();
        for (l, rider) in loops.into_iter().zip(riders.iter_mut()) {
            let (tally, moved) = l.await.expect("ws loop");
            phase.tally.merge(tally);
            *rider = moved;
        }
        let (server_cpu_s, client_cpu_s) = cpu.await.expect("cpu window");
        phase.window = d;
        phase.server_cpu_s = server_cpu_s;
        phase.client_cpu_s = client_cpu_s;
        phase
    }
}

/// Runs the phases and prints the summary; returns (HTTP, WebSocket) pooled over rounds.
async fn run(s: Settings) -> (Phase, Phase) {
    let r = s.devices;
    println!(
        "ingest: {r} devices over HTTP (bibs 1..={r}) vs {r} racer sockets (bibs {}..={}), one race, one fix per request, closed loop, {} s per phase, {} round(s)",
        r + 1,
        2 * r,
        s.secs,
        s.rounds
    );
    let bench = Bench::start(r).await;
    let mut http_riders: Vec<Rider> = (0..r).map(|i| bench.rider(i as u32 + 1, i)).collect();
    let mut ws_riders: Vec<Rider> = (0..r).map(|i| bench.rider((r + i) as u32 + 1, i)).collect();
    let d = Duration::from_secs(s.secs);
    let (mut http, mut ws) = (Phase::default(), Phase::default());
    for round in 1..=s.rounds {
        // The server slows from phase to phase (with 1,000 devices a second round ran at
        // about half the first's rate on both paths), so the phase that runs first has the
        // fresher server: odd rounds run A then B, even rounds B then A (ABBA...), and an
        // even number of pooled rounds cancels a steady drift.
        let order = if round % 2 == 1 {
            [Path::Http, Path::Ws]
        } else {
            [Path::Ws, Path::Http]
        };
        for path in order {
            let phase = match path {
                Path::Http => bench.http_phase(&mut http_riders, d).await,
                Path::Ws => bench.ws_phase(&mut ws_riders, d).await,
            };
            println!("{}", phase.line(round, path));
            match path {
                Path::Http => http.merge(phase),
                Path::Ws => ws.merge(phase),
            }
        }
    }
    let server_pid = bench.pid();
    drop(bench);
    summary(&http, &ws, s, server_pid);
    (http, ws)
}

fn summary(http: &Phase, ws: &Phase, s: Settings, server_pid: u32) {
    println!(
        "summary over {} round(s) ({} s window per phase):",
        s.rounds, s.secs
    );
    row(
        "",
        Path::Http.label().into(),
        Path::Ws.label().into(),
        "HTTP/WS".into(),
    );
    row(
        "connections",
        s.devices.to_string(),
        s.devices.to_string(),
        "".into(),
    );
    row(
        "requests answered in the windows",
        http.tally.requests.to_string(),
        ws.tally.requests.to_string(),
        ratio(http.tally.requests as f64, ws.tally.requests as f64),
    );
    row(
        "fixes stored/s",
        format!("{:.0}", http.fixes_per_s()),
        format!("{:.0}", ws.fixes_per_s()),
        ratio(http.fixes_per_s(), ws.fixes_per_s()),
    );
    row(
        "not stored (dropped/ignored) / errors",
        format!("{} / {}", http.tally.not_stored, http.tally.errors),
        format!("{} / {}", ws.tally.not_stored, ws.tally.errors),
        "".into(),
    );
    let (hp50, hp99) = http.latency();
    let (wp50, wp99) = ws.latency();
    row(
        "ack p50 (send -> answer)",
        ms(hp50),
        ms(wp50),
        ratio(hp50.as_secs_f64(), wp50.as_secs_f64()),
    );
    row(
        "ack p99",
        ms(hp99),
        ms(wp99),
        ratio(hp99.as_secs_f64(), wp99.as_secs_f64()),
    );
    let (hq, ha) = http.bytes_per_fix();
    let (wq, wa) = ws.bytes_per_fix();
    row(
        "request bytes per fix",
        format!("{hq:.1}"),
        format!("{wq:.1}"),
        ratio(hq, wq),
    );
    row(
        "response bytes per fix",
        format!("{ha:.1}"),
        format!("{wa:.1}"),
        ratio(ha, wa),
    );
    row(
        "total bytes per fix",
        format!("{:.1}", hq + ha),
        format!("{:.1}", wq + wa),
        ratio(hq + ha, wq + wa),
    );
    let cores = |p: &Phase| {
        p.server_cpu_s.map_or("n/a".into(), |c| {
            format!("{:.2}", c / p.window.as_secs_f64())
        })
    };
    row(
        "server CPU in the windows",
        secs(http.server_cpu_s),
        secs(ws.server_cpu_s),
        ratio(
            http.server_cpu_s.unwrap_or(0.0),
            ws.server_cpu_s.unwrap_or(0.0),
        ),
    );
    row("server cores used", cores(http), cores(ws), "".into());
    let per_cpu = |p: &Phase| {
        p.fixes_per_cpu_s()
            .map_or("n/a".into(), |f| format!("{f:.0}"))
    };
    row(
        "fixes per server CPU-second",
        per_cpu(http),
        per_cpu(ws),
        ratio(
            http.fixes_per_cpu_s().unwrap_or(0.0),
            ws.fixes_per_cpu_s().unwrap_or(0.0),
        ),
    );
    row(
        "client (bench) CPU in the windows",
        secs(http.client_cpu_s),
        secs(ws.client_cpu_s),
        "".into(),
    );
    row(
        "server-counted accepted (whole phase)",
        http.server_accepted.map_or("n/a".into(), |n| n.to_string()),
        "n/a".into(),
        "".into(),
    );
    for (path, p) in [(Path::Http, http), (Path::Ws, ws)] {
        if let Some(why) = &p.tally.first_error {
            println!("first error or drop ({}): {why}", path.label());
        }
    }
    println!(
        "note: server = peloton serve pid {server_pid}; both paths journal every fix and answer \
         after the group commit's fsync; the clients run in this process on the same cores \
         (client CPU above); bytes are what the client's TCP socket carried, without TCP/IP \
         headers; the server-counted figure includes answers that arrived after the window"
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run a smoke.
    let benching = std::env::args().any(|a| a == "--bench");
    let settings = Settings::from_env(benching);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (http, ws) = runtime.block_on(run(settings));
    if !benching {
        // The smoke fails when either path breaks.
        assert!(http.tally.stored > 0, "no fix stored over HTTP");
        assert!(ws.tally.stored > 0, "no fix stored over WebSockets");
        assert_eq!(
            http.tally.errors, 0,
            "HTTP errors: {:?}",
            http.tally.first_error
        );
        assert_eq!(
            ws.tally.errors, 0,
            "WebSocket errors: {:?}",
            ws.tally.first_error
        );
        assert!(
            http.server_accepted.is_some_and(|n| n >= http.tally.stored),
            "the server counted {:?} accepted OsmAnd fixes, the client {}",
            http.server_accepted,
            http.tally.stored
        );
    }
}
