//! Spectator fan-out: how the real server delivers live race updates to many spectator
//! sockets, against a bare tokio-tungstenite broadcast server measured in the same run; and
//! (`MODE=saturate`) how many fixes per second the whole ingest path accepts, against a bare
//! tokio-tungstenite request/answer server.
//!
//! Why: every race update is encoded once and the same bytes go to every subscriber
//! (PROTOCOL.md 7.16); this checks what that path costs next to the simplest possible
//! broadcast server with the same sockets, frame sizes and tick rate.
//!
//! Run: `nice -n 5 cargo bench --bench fanout` (defaults R=100 racers, S=1000 spectators,
//! D=20 s; `RACERS`, `SPECTATORS`, `SECONDS` override). `RACES=N` (default 1) runs N races
//! of R racers each, with the S spectators spread evenly over them (`RACES=100 RACERS=100
//! SPECTATORS=10000`: 100 per race). `MODE=saturate` measures saturated fix intake instead
//! (`BATCH` fixes per request, default 1, at most 2,000 so a frame stays under 64 KiB;
//! `SPECTATORS` defaults to 0 there). `cargo test --benches` runs a tiny smoke: the default
//! mode (3 racers, 5 spectators, 2 s), then 2 races (3 racers each, 4 spectators, 1 s), then
//! saturate (3 racers, 1 s), then the cluster mode below (3 racers, 6 spectators, 2 s); with
//! `MODE`, `RACES` or `NODES` set it runs only that scenario.
//!
//! Cluster (`NODES=3`, issue 19; defaults R=100, S=1000, D=15 s): the same fan-out on
//! cluster mode (NATS JetStream), twice in the same run, each time on a fresh local
//! `nats-server` (monitoring port on): (a) one `peloton` node with all S spectators, then (b)
//! `NODES` nodes sharing the first node's signing secret, the races created on node 0 (their
//! owner), every racer's phone on node 0, and the S spectators split evenly over the nodes
//! (spectator k of a race on node k mod N; the other nodes serve theirs from a mirror fed by
//! the owner's relayed ticks). No bare baseline: (a) is the reference. Besides the fan-out
//! figures (CPU summed over every `peloton` process), it reads the NATS server's counters
//! (`/connz`, per node by its connection name, and `/varz`, the whole server) before and
//! after the window and divides the bytes and messages by the ticks the races published in
//! it (node 0's `peloton_race_tick_bytes_count`): bytes on NATS per tick per node, in (node →
//! NATS: journal appends, the relay's ticks, watch asks) and out (NATS → node: journal acks,
//! relayed ticks, watch answers). A connection of the bench's own, subscribed to the tick
//! topics as one more node would be, counts the relayed ticks alone. The nats-server's own
//! CPU is shown apart.
//!
//! Peloton side: starts `peloton serve` on 127.0.0.1:0 with a temporary data folder, creates
//! N races on the Celje loop starting now (same course, same start), registers R racers
//! (bibs 1..=R) in each, starts them, opens S binary spectator sockets (`race_subscribe`,
//! race-scoped tokens, S/N per race), then every racer (a racer token scoped to its race,
//! `sub` = bib) sends one fix per second of wall time (device time +1 s per fix, ~8 m/s
//! along the course, staggered by 5 m; the N×R racers' phases spread over the second, each
//! race's racers interleaved with the others') and waits for its `fixes_ack`. Measured, totals over all races:
//! - delivered `race_update` frames per second over all spectators (arrivals inside the
//!   D-second window, divided by D);
//! - per-update spread: last spectator arrival − first spectator arrival of the same
//!   (race, `seq`);
//! - fix → spectator latency on about 50 sampled spectators (the first ⌈50/N⌉ of each
//!   race): from the racer's send instant to the arrival of the first update whose row for
//!   that bib carries the fix's position;
//! - fix ack latency: send → `fixes_ack`.
//!
//! Baseline: a bare broadcast server in a process of its own, as Peloton is (this bench's
//! own binary started again with `FANOUT_BASELINE_SERVER` set, on a tokio runtime of 2
//! worker threads like Peloton's on this machine), so neither server shares a runtime with
//! the bench's client sockets: `accept_hdr_async_with_config` (only to echo the
//! subprotocol), 4 KiB buffers, one writer task per socket fed by a
//! `tokio::sync::broadcast` of `Bytes`, feeding every queued frame then flushing once. It
//! sends a welcome, then every 250 ms one binary `race_update` frame with as many rows as
//! Peloton's median update, to S sockets opened with the same client. With N races it has N
//! broadcast channels (a socket picks one by its URL path), each sending its own frame sized
//! like that race's median Peloton delta, the N channels' sends spread evenly over the
//! 250 ms. Measured the same way (frames/s, spread, CPU and memory); it has no fixes, so no
//! fix latency. It stops when the bench kills it or its standard input closes.
//!
//! Saturate (`MODE=saturate`): N races × R racers as above, but each racer socket runs a
//! closed loop for D seconds: send `fixes` with the next `BATCH` fixes (device time +1 s and
//! 8 m along the course per fix, standing still 1 km before the finish so that every fix
//! stays acceptable), wait for `fixes_ack`, send the next. Measured: fixes accepted per
//! second (sum of `fixes_ack.accepted` of the acks that arrived inside the window, ÷ D)
//! through the whole path (socket → session → racer actor → journal group commit → ack) and
//! ack latency. The server runs with `ws.rate_limit_per_sec` and `ws.rate_limit_burst`
//! raised to 1,000,000 (the default bucket, 50/s, would refuse a closed loop). Both sides
//! use the same small client (tokio-tungstenite with the `Client`'s 8 KiB buffers, real
//! encoding of every request and real decoding of every answer). Baseline: an in-process
//! server (same accept and buffers as above) that answers every binary frame with the same
//! bytes: a real `ServerFrame::Reply{FixesAck}` encoded once, with a request id chosen so its
//! size matches Peloton's median ack. It decodes nothing, stores nothing and, unlike
//! Peloton's journal (group commit, then sled's `flush`, an fsync, before every ack), never
//! syncs to disk: it is the socket-path limit of this machine for the same sockets and loop.
//!
//! For both fan-out servers: the CPU time the process used (utime + stime of
//! /proc/<pid>/stat) inside the D-second window per 1,000 delivered frames, and its
//! resident memory per socket under load: (VmRSS at the end of the window − VmRSS before
//! the first socket connected) ÷ the sockets it holds (spectators, plus racers for
//! Peloton). Every mode ends with one line on the `peloton serve` child process: its peak
//! RSS (`VmHWM`, at the end of the run) and its CPU time in the window ÷ the window = cores
//! used. The saturate baseline runs inside the bench process (it has no spectators), so it
//! has no such line.

#[path = "../tests/common/nats.rs"]
mod nats;
mod support;

use support::figures::{env_or, ms, pct, ratio};
use support::process::{cpu_seconds, peak_rss_kib, rss_kib};
use support::{connect_all, CONNECTING};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use peloton::auth::{claims_for, Keys, Role};
use peloton::geo::{Course, CourseIndex};
use peloton::net::client::Client;
use peloton::net::codec::{Codec, MAX_DECODE_BYTES};
use peloton::net::protocol::{
    ClientFrame, Push, RaceTick, Reply, Request, ServerFrame, StandingView, Welcome, WireFix,
    PROTOCOL_VERSION,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, Semaphore};
use tokio_tungstenite::tungstenite::handshake::server::{Request as HsRequest, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const GPX: &str = "../shared/data/gpx/loop-celje-resevno-2020-09-20.gpx";
/// Spectators that check rows against the racers' send instants (spread over the races).
const LATENCY_SAMPLES: usize = 50;
/// Set (to anything) in the environment of the bench's own binary started again as the
/// bare broadcast server; its rows per race and spectator count come in the two below.
const BASELINE_SERVER_ENV: &str = "FANOUT_BASELINE_SERVER";
/// The baseline server's frame rows, one number per race, comma-separated.
const BASELINE_ROWS_ENV: &str = "FANOUT_BASELINE_ROWS";
/// The spectator count the baseline's frames carry.
const BASELINE_SPECTATORS_ENV: &str = "FANOUT_BASELINE_SPECTATORS";
/// Most fixes per saturate request: 33 + 28 × (n − 1) bytes stays under the 64 KiB frame limit.
const MAX_BATCH: usize = 2000;
/// Rate limit (messages/s and burst) for the saturate run: a closed loop far exceeds 50/s.
const SATURATE_RATE_LIMIT: &str = "1000000";
/// Client buffers, as `Client` uses.
const CLIENT_BUFFER_BYTES: usize = 8 * 1024;

/// p50, p99 and the number of samples of a set of durations.
type Quantiles = (Duration, Duration, usize);

/// Send instants of fixes, by (race, bib, lat, lon).
type Sent = Arc<Mutex<HashMap<(usize, u32, i32, i32), Instant>>>;

/// A client socket of the saturate loop.
type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Fanout,
    Saturate,
    /// The fan-out on cluster mode: one node, then `Scenario::nodes` nodes.
    Cluster,
}

/// One run's shape.
#[derive(Clone, Copy, Debug)]
struct Scenario {
    mode: Mode,
    races: usize,
    racers: usize,
    spectators: usize,
    /// Of the spectators, how many subscribe and then never read.
    stalled: usize,
    secs: u64,
    batch: usize,
    /// Cluster mode: the nodes of the second run (the first has one).
    nodes: usize,
}

impl Scenario {
    fn from_env(benching: bool) -> Scenario {
        let nodes = std::env::var_os("NODES").is_some();
        let mode = match std::env::var("MODE").as_deref() {
            Err(_) | Ok("") if nodes => Mode::Cluster,
            Err(_) | Ok("") | Ok("fanout") | Ok("fan-out") => Mode::Fanout,
            Ok("saturate") => Mode::Saturate,
            Ok("cluster") => Mode::Cluster,
            Ok(other) => panic!("MODE={other}: expected fanout, saturate or cluster"),
        };
        let spectators = match mode {
            Mode::Fanout | Mode::Cluster => {
                env_or("SPECTATORS", if benching { 1000 } else { 5 }).max(1)
            }
            Mode::Saturate => env_or("SPECTATORS", 0),
        };
        let secs = match mode {
            Mode::Cluster => 15,
            Mode::Fanout | Mode::Saturate => 20,
        };
        Scenario {
            mode,
            races: env_or("RACES", 1).max(1),
            racers: env_or("RACERS", if benching { 100 } else { 3 }).max(1),
            spectators,
            secs: env_or("SECONDS", if benching { secs } else { 2 }).max(1) as u64,
            batch: env_or("BATCH", 1).clamp(1, MAX_BATCH),
            stalled: env_or("STALLED", 0).min(spectators),
            nodes: env_or("NODES", 3).max(1),
        }
    }
}

/// What one spectator saw.
#[derive(Default)]
struct Seen {
    /// The race it watched (index into the bench's races).
    race: usize,
    /// The node it was connected to (0: the races' owner; always 0 outside cluster mode).
    node: usize,
    /// (seq, arrival, form) per update frame.
    frames: Vec<(u64, Instant, Form)>,
    /// Fix → arrival latencies (sampled spectators only).
    latencies: Vec<Duration>,
    /// Encoded sizes and row counts of deltas (the first spectator of each race only).
    sizes: Vec<(usize, usize)>,
}

/// Which form of a race update a frame was.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Form {
    /// The rows changed since the previous tick.
    Delta,
    /// The rows changed since the socket's last update, several ticks back.
    CatchUp,
    /// The whole table.
    Full,
}

/// One side's figures.
struct Figures {
    frames_per_s: f64,
    /// Frames delivered inside the window.
    delivered: usize,
    spread_p50: Duration,
    spread_p99: Duration,
    updates: usize,
    full_frames: usize,
    catch_up_frames: usize,
    delivered_share: f64,
    /// Delta frame: for Peloton the mean of the ticks its races published in the window
    /// (the median of what its spectators saw when the server does not say), for the
    /// baseline the frame it was sized to.
    frame_bytes: usize,
    rows: usize,
    latency: Option<(Duration, Duration, usize)>,
    ack: Option<(Duration, Duration, usize)>,
}

/// One spectator socket to open.
struct Target {
    race: usize,
    /// The node `url` is (0 outside cluster mode), kept with what the socket saw.
    node: usize,
    url: String,
    token: String,
    subscribe: Option<String>,
    sample: bool,
    sizes: bool,
}

/// A server child's use of the machine.
struct ServerUse {
    pid: u32,
    peak_rss_kib: Option<u64>,
    cpu_s: Option<f64>,
    window: Duration,
    /// VmRSS before the first socket connected and at the end of the window, in KiB.
    rss_idle_kib: Option<u64>,
    rss_load_kib: Option<u64>,
}

/// CPU time of `pid` at the start of a window, read again (with its resident memory) when
/// the window ends.
struct CpuWindow {
    pid: u32,
    task: tokio::task::JoinHandle<(Option<f64>, Duration, Option<u64>)>,
}

fn p50_p99(mut v: Vec<Duration>) -> Option<(Duration, Duration, usize)> {
    if v.is_empty() {
        return None;
    }
    v.sort();
    Some((pct(&v, 0.5), pct(&v, 0.99), v.len()))
}

/// `total` split over `parts` as evenly as possible (the first ones get the remainder).
fn spread(total: usize, parts: usize) -> Vec<usize> {
    (0..parts)
        .map(|j| total / parts + usize::from(j < total % parts))
        .collect()
}

impl CpuWindow {
    /// Reads `pid`'s CPU time now and again at `end`.
    fn start(pid: u32, end: Instant) -> CpuWindow {
        let (c0, w0) = (cpu_seconds(pid), Instant::now());
        let task = tokio::spawn(async move {
            tokio::time::sleep_until(end.into()).await;
            let c1 = cpu_seconds(pid);
            (c0.zip(c1).map(|(a, b)| b - a), w0.elapsed(), rss_kib(pid))
        });
        CpuWindow { pid, task }
    }

    /// The CPU seconds and wall time of the window and the resident memory at its end, with
    /// `rss_idle_kib`, read before any socket connected.
    async fn finish(self, rss_idle_kib: Option<u64>) -> ServerUse {
        let (cpu_s, window, rss_load_kib) = self.task.await.expect("cpu window");
        ServerUse {
            pid: self.pid,
            peak_rss_kib: None,
            cpu_s,
            window,
            rss_idle_kib,
            rss_load_kib,
        }
    }
}

impl ServerUse {
    /// CPU seconds per 1,000 frames delivered in the window.
    fn cpu_per_1000_frames(&self, delivered: usize) -> Option<f64> {
        let cpu = self.cpu_s?;
        (delivered > 0).then(|| cpu * 1000.0 / delivered as f64)
    }

    /// KiB of resident memory the sockets added, per socket.
    fn rss_per_socket_kib(&self, sockets: usize) -> Option<f64> {
        let (idle, load) = (self.rss_idle_kib?, self.rss_load_kib?);
        (sockets > 0).then(|| load.saturating_sub(idle) as f64 / sockets as f64)
    }

    fn print(&self) {
        let rss = self
            .peak_rss_kib
            .map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        let cpu = match self.cpu_s {
            Some(c) => {
                let w = self.window.as_secs_f64();
                format!(
                    "CPU {c:.2} s (utime+stime) in the {w:.2} s window = {:.2} cores",
                    c / w.max(1e-9)
                )
            }
            None => "CPU n/a".into(),
        };
        println!(
            "server (peloton serve, pid {}): peak RSS (VmHWM) {rss}; {cpu}",
            self.pid
        );
    }
}

/// Reads pushes until `stop`, recording update arrivals (and latencies when `sent` is given).
async fn watch(
    mut client: Client,
    race: usize,
    stop: Arc<AtomicBool>,
    sent: Option<Sent>,
    sizes: bool,
) -> Seen {
    let mut seen = Seen {
        race,
        ..Seen::default()
    };
    let mut last_pos: HashMap<u32, (i32, i32)> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let push = match client.next_push(Duration::from_millis(200)).await {
            Ok(p) => p,
            Err(peloton::net::client::ClientError::Timeout(_)) => continue,
            Err(_) => break,
        };
        let now = Instant::now();
        let (seq, form, standings) = match push {
            Push::RaceUpdate(tick) => {
                if sizes && !tick.full {
                    let n = tick.standings.len();
                    let bytes = Codec::Binary
                        .encode_server_bytes(&ServerFrame::Push(Push::RaceUpdate(tick.clone())))
                        .map(|b| b.len())
                        .unwrap_or(0);
                    seen.sizes.push((bytes, n));
                }
                let form = if tick.full { Form::Full } else { Form::Delta };
                (tick.seq, form, tick.standings)
            }
            Push::RaceCatchUp(up) => (up.seq, Form::CatchUp, up.standings),
            _ => continue,
        };
        seen.frames.push((seq, now, form));
        if let Some(sent) = &sent {
            let sent = sent.lock().expect("sent");
            for row in &standings {
                let pos = (row.lat_e7, row.lon_e7);
                if last_pos.insert(row.bib, pos) != Some(pos) {
                    if let Some(at) = sent.get(&(race, row.bib, pos.0, pos.1)) {
                        seen.latencies.push(now.saturating_duration_since(*at));
                    }
                }
            }
        }
    }
    client.close().await;
    seen
}

/// Merges what the spectators of `races` races saw into frames/s and spread over
/// `[t0, t0 + d]`.
fn summarise(seen: &[Seen], races: usize, t0: Instant, d: Duration) -> Figures {
    let end = t0 + d;
    let mut by_seq: BTreeMap<(usize, u64), (Instant, Instant)> = BTreeMap::new();
    let mut sockets = vec![0usize; races];
    let mut delivered = 0usize;
    let mut full_frames = 0usize;
    let mut catch_up_frames = 0usize;
    for s in seen {
        sockets[s.race] += 1;
        for &(seq, at, form) in &s.frames {
            if at < t0 {
                continue;
            }
            if at <= end {
                delivered += 1;
                match form {
                    Form::Full => full_frames += 1,
                    Form::CatchUp => catch_up_frames += 1,
                    Form::Delta => {}
                }
            }
            let e = by_seq.entry((s.race, seq)).or_insert((at, at));
            e.0 = e.0.min(at);
            e.1 = e.1.max(at);
        }
    }
    let expected = by_seq
        .iter()
        .filter(|(_, (first, _))| *first <= end)
        .map(|((race, _), _)| sockets[*race])
        .sum::<usize>() as f64;
    let mut spreads: Vec<Duration> = by_seq
        .values()
        .filter(|(first, _)| *first <= end)
        .map(|(first, last)| *last - *first)
        .collect();
    spreads.sort();
    let mut race_frames = vec![None; races];
    for s in seen.iter().filter(|s| !s.sizes.is_empty()) {
        let mut sizes = s.sizes.clone();
        sizes.sort();
        race_frames[s.race] = Some(sizes[sizes.len() / 2]);
    }
    let mut medians: Vec<(usize, usize)> = race_frames.iter().flatten().copied().collect();
    medians.sort();
    let (frame_bytes, rows) = medians.get(medians.len() / 2).copied().unwrap_or((0, 0));
    Figures {
        frames_per_s: delivered as f64 / d.as_secs_f64(),
        delivered,
        spread_p50: pct(&spreads, 0.5),
        spread_p99: pct(&spreads, 0.99),
        updates: spreads.len(),
        full_frames,
        catch_up_frames,
        delivered_share: if expected > 0.0 {
            delivered as f64 / expected
        } else {
            0.0
        },
        frame_bytes,
        rows,
        latency: p50_p99(seen.iter().flat_map(|s| s.latencies.clone()).collect()),
        ack: None,
    }
}

async fn connect_spectators(
    targets: Vec<Target>,
    stop: &Arc<AtomicBool>,
    sent: Option<&Sent>,
) -> Vec<tokio::task::JoinHandle<Seen>> {
    let n = targets.len();
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(n.max(1));
    let mut tasks = Vec::with_capacity(n);
    for target in targets {
        let (gate, ready) = (gate.clone(), ready_tx.clone());
        let stop = stop.clone();
        let sent = target.sample.then(|| sent.cloned()).flatten();
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.expect("gate");
            let mut client = Client::connect(&target.url, &target.token, Codec::Binary)
                .await
                .expect("spectator connect");
            if let Some(race_id) = target.subscribe {
                let reply = client
                    .request(Request::RaceSubscribe {
                        race_id,
                        since_seq: None,
                    })
                    .await
                    .expect("subscribe");
                assert!(matches!(reply, Reply::Subscribed(_)), "subscribed");
            }
            drop(permit);
            let _ = ready.send(()).await;
            let mut seen = watch(client, target.race, stop, sent, target.sizes).await;
            seen.node = target.node;
            seen
        }));
    }
    drop(ready_tx);
    for _ in 0..n {
        ready_rx.recv().await.expect("spectator ready");
    }
    tasks
}

/// Opens `n` spectator sockets that subscribe (when `make(k)` names a race) and then never
/// read, each with a 4 KiB receive buffer so the server's writes stall once the kernel's
/// buffers are full. Held open until the returned sockets are dropped.
async fn stall_spectators<F>(n: usize, make: F) -> Vec<WebSocketStream<TcpStream>>
where
    F: Fn(usize) -> (String, String, Option<String>),
{
    let mut held = Vec::with_capacity(n);
    for k in 0..n {
        let (url, token, race_id) = make(k);
        let addr = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .expect("address")
            .parse()
            .expect("socket address");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("receive buffer");
        let stream = socket.connect(addr).await.expect("stalled connect");
        let request = support::upgrade_request(&url, &token);
        let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
            .await
            .expect("stalled upgrade");
        if let Some(race_id) = race_id {
            let frame = Codec::Binary
                .encode_client(&ClientFrame {
                    id: 1,
                    request: Request::RaceSubscribe {
                        race_id,
                        since_seq: None,
                    },
                })
                .expect("encode");
            ws.send(frame).await.expect("subscribe");
        }
        held.push(ws);
    }
    held
}

/// The value of one series in the server's `/metrics` (0 when absent).
async fn metric(url: &str, series: &str) -> Option<u64> {
    Some(series_value(&support::metrics_text(url).await?, series))
}

/// The value of `series` in a `/metrics` text (0 when absent: a series appears only once
/// something was counted).
fn series_value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// What the server's races published so far: (delta bytes, delta rows, ticks), summed, from
/// one reading of `/metrics`.
async fn published_ticks(url: &str) -> Option<(u64, u64, u64)> {
    let text = support::metrics_text(url).await?;
    Some((
        series_value(&text, "peloton_race_tick_bytes_sum"),
        series_value(&text, "peloton_race_tick_rows_sum"),
        series_value(&text, "peloton_race_tick_bytes_count"),
    ))
}

/// The course every race runs on: its GPX text and its index.
fn course() -> (String, Arc<CourseIndex>) {
    let gpx = std::fs::read_to_string(GPX).expect("gpx");
    let course = Course::from_gpx(gpx.as_bytes(), 200_000).expect("course");
    let index = Arc::new(CourseIndex::from(&course));
    (gpx, index)
}

/// Where racer `i` of a race starts: 5 m behind racer `i - 1`, within the first half.
fn start_offset(index: &CourseIndex, i: usize) -> f64 {
    (i as f64 * 5.0) % (index.length_m() * 0.5)
}

/// A running `peloton serve` with N live races of R registered racers.
struct Server {
    /// Its data folder (in cluster mode the other nodes copy its signing secret).
    dir: tempfile::TempDir,
    child: std::process::Child,
    url: String,
    keys: Keys,
    /// The admin socket that set the races up, closed at [`Server::stop`].
    admin: Option<Client>,
    now_s: i64,
    start_ms: i64,
    races: Vec<String>,
}

impl Server {
    async fn start(races: usize, racers: usize, gpx: &str, env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let (child, url) = support::start_server(dir.path(), env);
        let keys = support::server_keys(dir.path());
        let now_s = peloton::time::now_ms() / 1000;
        let admin_token = keys
            .issue(&claims_for(Role::Admin, "bench", None, now_s, 3600))
            .expect("token");
        let mut admin = Client::connect(&url, &admin_token, Codec::Binary)
            .await
            .expect("admin connect");
        let start_ms = peloton::time::now_ms();
        let bibs: Vec<u32> = (1..=racers as u32).collect();
        let mut ids = Vec::with_capacity(races);
        for j in 0..races {
            let name = if races == 1 {
                "Fan-out bench".to_owned()
            } else {
                format!("Fan-out bench {}", j + 1)
            };
            let race = support::live_race(&mut admin, name, gpx, start_ms, &bibs).await;
            ids.push(race);
            // One admin socket sets up every race: keep under the server's default rate limit
            // (50 requests/s) rather than raise it for a mode that measures fan-out.
            tokio::time::sleep(Duration::from_millis(
                20 * (2 + bibs.len().div_ceil(200)) as u64,
            ))
            .await;
        }
        Server {
            dir,
            child,
            url,
            keys,
            admin: Some(admin),
            now_s,
            start_ms,
            races: ids,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A token for `sub` scoped to race number `race`.
    fn token(&self, role: Role, sub: &str, race: usize) -> String {
        self.keys
            .issue(&claims_for(
                role,
                sub,
                Some(&self.races[race]),
                self.now_s,
                3600,
            ))
            .expect("token")
    }

    /// Racer tokens of every race, race after race, bibs 1..=R.
    fn racer_tokens(&self, racers: usize) -> Vec<String> {
        (0..self.races.len())
            .flat_map(|race| (1..=racers).map(move |bib| (race, bib)))
            .map(|(race, bib)| self.token(Role::Racer, &bib.to_string(), race))
            .collect()
    }

    /// Reads the peak RSS, then ends the process (dropping it ends the process too).
    async fn stop(mut self, mut usage: ServerUse) -> ServerUse {
        usage.peak_rss_kib = peak_rss_kib(self.pid());
        if let Some(admin) = self.admin.take() {
            admin.close().await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        usage
    }
}

impl Drop for Server {
    /// A bench that fails half-way leaves no server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a run's `peloton` processes are.
#[derive(Clone, Copy)]
enum Layout<'a> {
    /// One server on its own data folder (the default mode).
    Standalone,
    /// `nodes` cluster-mode nodes on `nats`: node 0 owns the races and holds the racers'
    /// phones, the spectators are split evenly over all of them.
    Cluster {
        /// The NATS server every node connects to, whose counters the run reads.
        nats: &'a nats::NatsServer,
        /// How many `peloton` nodes, node 0 included.
        nodes: usize,
    },
}

/// A cluster node other than node 0 (which is the [`Server`] that created the races), on a
/// data folder holding only the cluster's signing secret; killed when dropped.
struct Node {
    /// Its data folder, removed when the node is dropped.
    _dir: tempfile::TempDir,
    /// The process, for its pid in /proc and to kill it.
    child: std::process::Child,
    /// `ws://127.0.0.1:PORT`, where its share of the spectators connect.
    url: String,
}

impl Node {
    /// Starts a node whose data folder gets a copy of `secret_from`'s `secret.key`, as an
    /// operator shares the secret between nodes.
    fn start(secret_from: &std::path::Path, env: &[(&str, &str)]) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(
            secret_from.join("secret.key"),
            dir.path().join("secret.key"),
        )
        .expect("copy the cluster's secret");
        let (child, url) = support::start_server(dir.path(), env);
        Node {
            _dir: dir,
            child,
            url,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment of cluster node `node` on `nats` under journal prefix `prefix`.
fn node_env(nats: &str, prefix: &str, node: usize) -> Vec<(&'static str, String)> {
    vec![
        ("PELOTON_CLUSTER_NATS_URL", nats.to_owned()),
        ("PELOTON_CLUSTER_PREFIX", prefix.to_owned()),
        ("PELOTON_CLUSTER_NODE_ID", format!("n{node}")),
    ]
}

/// What one Peloton run measured.
struct Measured {
    /// What the spectators saw, over every node.
    figures: Figures,
    /// Each `peloton` process's use of the machine, node 0 first.
    usage: Vec<ServerUse>,
    /// Sockets closed as too slow (4008), summed over the nodes.
    too_slow: Option<u64>,
    /// Fix → spectator latency of the spectators on node 0 and on the other nodes.
    latency_by_node: (Option<Quantiles>, Option<Quantiles>),
    /// Cluster mode: the NATS traffic in the window and the ticks the races published in it.
    nats: Option<(NatsCounters, u64)>,
    /// Cluster mode: the nats-server's own CPU in the window.
    nats_usage: Option<ServerUse>,
    /// Update frames delivered inside the window to each node's spectators, node 0 first.
    frames_by_node: Vec<usize>,
}

impl Measured {
    /// CPU seconds of every `peloton` process in the window, summed.
    fn cpu_s(&self) -> Option<f64> {
        self.usage.iter().map(|u| u.cpu_s).sum()
    }

    /// The window the CPU was read over, in seconds.
    fn window_s(&self) -> f64 {
        self.usage.first().map_or(0.0, |u| u.window.as_secs_f64())
    }

    /// KiB of resident memory the sockets added over every `peloton` process, per socket.
    fn rss_per_socket_kib(&self, sockets: usize) -> Option<f64> {
        let added: Option<u64> = self
            .usage
            .iter()
            .map(|u| Some(u.rss_load_kib?.saturating_sub(u.rss_idle_kib?)))
            .sum();
        if sockets == 0 {
            return None;
        }
        Some(added? as f64 / sockets as f64)
    }
}

/// Message counters of one NATS connection, or of the whole server.
#[derive(Clone, Copy, Default, Debug)]
struct Traffic {
    /// Messages the server received (from this connection).
    in_msgs: u64,
    /// Their bytes.
    in_bytes: u64,
    /// Messages the server delivered (to this connection).
    out_msgs: u64,
    /// Their bytes.
    out_bytes: u64,
}

impl Traffic {
    fn from_json(v: &serde_json::Value) -> Traffic {
        let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        Traffic {
            in_msgs: n("in_msgs"),
            in_bytes: n("in_bytes"),
            out_msgs: n("out_msgs"),
            out_bytes: n("out_bytes"),
        }
    }

    /// What was counted since `before`.
    fn since(&self, before: &Traffic) -> Traffic {
        Traffic {
            in_msgs: self.in_msgs.saturating_sub(before.in_msgs),
            in_bytes: self.in_bytes.saturating_sub(before.in_bytes),
            out_msgs: self.out_msgs.saturating_sub(before.out_msgs),
            out_bytes: self.out_bytes.saturating_sub(before.out_bytes),
        }
    }

    fn add(&mut self, other: &Traffic) {
        self.in_msgs += other.in_msgs;
        self.in_bytes += other.in_bytes;
        self.out_msgs += other.out_msgs;
        self.out_bytes += other.out_bytes;
    }
}

/// The name of the bench's own NATS connection that subscribes to the races' tick topics:
/// what NATS delivers to it is one node's copy of the relayed ticks.
const TICK_TAP: &str = "fanout bench tick tap";

/// A nats-server's counters at one instant: the whole server (`/varz`), each `peloton`
/// node's connections (`/connz`, by the name the node gives its connection,
/// `peloton <node id>`) and the bench's tick tap.
#[derive(Clone, Default, Debug)]
struct NatsCounters {
    /// The whole server, the tap included.
    total: Traffic,
    /// Each node's connections, by node id.
    by_node: BTreeMap<String, Traffic>,
    /// The bench's [`TICK_TAP`]: its `out` is one node's copy of the relayed ticks.
    tap: Traffic,
}

/// Subscribes, as one more node would, to every relayed tick under `prefix` (subject
/// `<prefix>.topic.tick.>`, `cluster::topic`), on a connection named [`TICK_TAP`], and
/// drops what arrives; its counters in `/connz` are then what one watching node receives
/// of the relay. The connection ends when the returned task is aborted.
async fn tick_tap(url: &str, prefix: &str) -> Option<tokio::task::JoinHandle<()>> {
    let client = async_nats::ConnectOptions::new()
        .name(TICK_TAP)
        .connect(url)
        .await
        .ok()?;
    let mut ticks = client
        .subscribe(format!("{prefix}.topic.tick.>"))
        .await
        .ok()?;
    client.flush().await.ok()?;
    Some(tokio::spawn(async move {
        let _client = client;
        while ticks.next().await.is_some() {}
    }))
}

impl NatsCounters {
    /// Reads `/varz` and `/connz` from the monitoring port; `None` when either fails.
    async fn read(monitor: u16) -> Option<NatsCounters> {
        let host = format!("127.0.0.1:{monitor}");
        let varz: serde_json::Value =
            serde_json::from_str(&support::http_body(&host, "/varz").await?).ok()?;
        let connz: serde_json::Value =
            serde_json::from_str(&support::http_body(&host, "/connz?limit=4096").await?).ok()?;
        let mut by_node: BTreeMap<String, Traffic> = BTreeMap::new();
        let mut tap = Traffic::default();
        for c in connz.get("connections")?.as_array()? {
            let name = c.get("name").and_then(serde_json::Value::as_str);
            if name == Some(TICK_TAP) {
                tap.add(&Traffic::from_json(c));
            } else if let Some(node) = name.and_then(|n| n.strip_prefix("peloton ")) {
                by_node
                    .entry(node.to_owned())
                    .or_default()
                    .add(&Traffic::from_json(c));
            }
        }
        Some(NatsCounters {
            total: Traffic::from_json(&varz),
            by_node,
            tap,
        })
    }

    /// What was counted since `before`.
    fn since(&self, before: &NatsCounters) -> NatsCounters {
        NatsCounters {
            total: self.total.since(&before.total),
            by_node: self
                .by_node
                .iter()
                .map(|(node, t)| {
                    let b = before.by_node.get(node).copied().unwrap_or_default();
                    (node.clone(), t.since(&b))
                })
                .collect(),
            tap: self.tap.since(&before.tap),
        }
    }
}

/// Runs the fan-out on Peloton laid out as `layout`, `counts[j]` spectators on race j, and
/// measures it; every process it started has ended when it returns.
async fn peloton_side(s: &Scenario, counts: &[usize], layout: Layout<'_>) -> Measured {
    let (racers, secs) = (s.racers, s.secs);
    let (gpx, index) = course();
    let (nodes, cluster_env) = match layout {
        Layout::Standalone => (1, None),
        Layout::Cluster { nats, nodes } => {
            let prefix = nats::cluster_config(&nats.url, 1).prefix;
            (nodes, Some((nats.url.clone(), prefix)))
        }
    };
    let env_of = |node: usize| {
        cluster_env
            .as_ref()
            .map_or_else(Vec::new, |(url, prefix)| node_env(url, prefix, node))
    };
    let env0 = env_of(0);
    let env0: Vec<(&str, &str)> = env0.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start(s.races, racers, &gpx, &env0).await;
    let others: Vec<Node> = (1..nodes)
        .map(|node| {
            let env = env_of(node);
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            Node::start(server.dir.path(), &env)
        })
        .collect();
    let urls: Vec<String> = std::iter::once(server.url.clone())
        .chain(others.iter().map(|n| n.url.clone()))
        .collect();
    let pids: Vec<u32> = std::iter::once(server.pid())
        .chain(others.iter().map(|n| n.child.id()))
        .collect();
    let start_ms = server.start_ms;

    let rss_idle: Vec<Option<u64>> = pids.iter().map(|&pid| rss_kib(pid)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let sent: Sent = Arc::new(Mutex::new(HashMap::new()));
    let samples_per_race = LATENCY_SAMPLES.div_ceil(s.races);
    let mut targets = Vec::with_capacity(s.spectators);
    for (race, &n) in counts.iter().enumerate() {
        let token = server.token(Role::Spectator, "fan", race);
        for k in 0..n {
            let node = k % nodes;
            targets.push(Target {
                race,
                node,
                url: urls[node].clone(),
                token: token.clone(),
                subscribe: Some(server.races[race].clone()),
                sample: k < samples_per_race,
                // The first spectator of each race is on node 0.
                sizes: k == 0,
            });
        }
    }
    let watchers = connect_spectators(targets, &stop, Some(&sent)).await;
    let stalled = stall_spectators(s.stalled, |k| {
        let race = k % s.races;
        let (token, race_id) = (
            server.token(Role::Spectator, "stalled", race),
            &server.races[race],
        );
        (urls[k % nodes].clone(), token, Some(race_id.clone()))
    })
    .await;

    let tokens = server.racer_tokens(racers);
    let url = server.url.clone();
    let phones = connect_all(tokens.len(), |g| {
        let (url, token) = (url.clone(), tokens[g].clone());
        async move {
            Client::connect(&url, &token, Codec::Binary)
                .await
                .expect("racer connect")
        }
    })
    .await;
    let monitor = match layout {
        Layout::Cluster { nats, .. } => Some(nats.monitor_port()),
        Layout::Standalone => None,
    };
    let tap = match (&cluster_env, layout) {
        (Some((_, prefix)), Layout::Cluster { nats, .. }) => tick_tap(&nats.url, prefix).await,
        _ => None,
    };
    let nats_before = match monitor {
        Some(port) => NatsCounters::read(port).await,
        None => None,
    };
    let ticks_before = published_ticks(&server.url).await;
    let t0 = Instant::now();
    let d = Duration::from_secs(secs);
    let cpus: Vec<CpuWindow> = pids
        .iter()
        .map(|&pid| CpuWindow::start(pid, t0 + d))
        .collect();
    let nats_cpu = match layout {
        Layout::Cluster { nats, .. } => nats.pid().map(|pid| CpuWindow::start(pid, t0 + d)),
        Layout::Standalone => None,
    };
    let total = phones.len();
    let mut riders = Vec::with_capacity(total);
    for (g, mut phone) in phones.into_iter().enumerate() {
        let (race, i) = (g / racers, g % racers);
        let (index, sent, bib) = (index.clone(), sent.clone(), i as u32 + 1);
        // Phases spread over the second, the races' racers interleaved (slot i × N + race).
        let slot = (i * s.races + race) as u64;
        let phase = Duration::from_millis((slot * 1000) / total as u64);
        riders.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            let mut tick = tokio::time::interval_at((t0 + phase).into(), Duration::from_secs(1));
            let offset = start_offset(&index, i);
            for k in 0..secs {
                tick.tick().await;
                let p = index.position_at(offset + 8.0 * k as f64);
                let fix = WireFix {
                    at_ms: start_ms + 1000 * (k as i64 + 1),
                    lat_e7: p.lat_e7,
                    lon_e7: p.lon_e7,
                    accuracy_dm: 50,
                    speed_cmps: Some(800),
                    elevation_dm: None,
                };
                let at = Instant::now();
                sent.lock()
                    .expect("sent")
                    .insert((race, bib, p.lat_e7, p.lon_e7), at);
                let reply = phone.request(Request::Fixes { fixes: vec![fix] }).await;
                if matches!(reply, Ok(Reply::FixesAck { .. })) {
                    acks.push(at.elapsed());
                }
            }
            phone.close().await;
            acks
        }));
    }
    let mut acks = Vec::new();
    for r in riders {
        acks.extend(r.await.expect("racer"));
    }
    tokio::time::sleep_until((t0 + d + Duration::from_millis(750)).into()).await;
    // The ticks and the NATS traffic, read together: the bytes per tick divide one by the other.
    let ticks_after = published_ticks(&server.url).await;
    let nats_after = match monitor {
        Some(port) => NatsCounters::read(port).await,
        None => None,
    };
    if let Some(tap) = tap {
        tap.abort();
    }
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::with_capacity(s.spectators);
    for w in watchers {
        seen.push(w.await.expect("spectator"));
    }
    let mut figures = summarise(&seen, s.races, t0, d);
    figures.ack = p50_p99(acks);
    let latency_on = |owner: bool| {
        p50_p99(
            seen.iter()
                .filter(|s| (s.node == 0) == owner)
                .flat_map(|s| s.latencies.clone())
                .collect(),
        )
    };
    let latency_by_node = (latency_on(true), latency_on(false));
    let mut frames_by_node = vec![0usize; nodes];
    for s in &seen {
        frames_by_node[s.node] += s
            .frames
            .iter()
            .filter(|(_, at, _)| *at >= t0 && *at <= t0 + d)
            .count();
    }
    let mut usage = Vec::with_capacity(cpus.len());
    for (cpu, idle) in cpus.into_iter().zip(rss_idle) {
        usage.push(cpu.finish(idle).await);
    }
    let nats_usage = match nats_cpu {
        Some(cpu) => Some(cpu.finish(None).await),
        None => None,
    };
    let mut too_slow = None;
    for url in &urls {
        if let Some(n) = metric(url, "peloton_ws_closes_total{code=\"4008\"}").await {
            *too_slow.get_or_insert(0) += n;
        }
    }
    // The deltas the races published in the window, whatever the spectators got.
    let mut ticks = 0;
    if let (Some(before), Some(after)) = (ticks_before, ticks_after) {
        ticks = after.2.saturating_sub(before.2);
        let per = ticks.max(1);
        figures.frame_bytes = (after.0.saturating_sub(before.0) / per) as usize;
        figures.rows = (after.1.saturating_sub(before.1) / per) as usize;
    }
    let nats = nats_before
        .zip(nats_after)
        .map(|(before, after)| (after.since(&before), ticks));
    drop(stalled);
    for (use_, node) in usage.iter_mut().skip(1).zip(&others) {
        use_.peak_rss_kib = peak_rss_kib(node.child.id());
    }
    drop(others);
    let first = usage.remove(0);
    usage.insert(0, server.stop(first).await);
    Measured {
        figures,
        usage,
        too_slow,
        latency_by_node,
        nats,
        nats_usage,
        frames_by_node,
    }
}

fn baseline_frame(seq: u64, rows: usize, spectators: usize) -> Bytes {
    let standings = (0..rows as u32)
        .map(|i| StandingView {
            bib: i + 1,
            rank: i + 1,
            progress_dm: 10_000 + 7 * i + seq as u32 * 80,
            gap_ms: Some(i as i64 * 1_250),
            finished_at_ms: None,
            off_course: false,
            cut_suspected: false,
            lat_e7: 462_300_000 + i as i32 * 37 + seq as i32,
            lon_e7: 152_600_000 + i as i32 * 41 + seq as i32,
            speed_cmps: Some(800),
            eta_ms: Some(3_600_000 - seq as i64 * 1000),
            checkpoints_passed: 1,
            last_split_ms: Some(1_796_116_800_000),
        })
        .collect();
    let frame = ServerFrame::Push(Push::RaceUpdate(RaceTick {
        race_id: "b".repeat(20),
        seq,
        full: false,
        spectators: spectators as u32,
        standings,
    }));
    Bytes::from(Codec::Binary.encode_server_bytes(&frame).expect("encode"))
}

/// The row count whose baseline frame size is closest to `bytes`.
fn rows_for(bytes: usize, spectators: usize) -> usize {
    (1..=10_000)
        .map(|rows| {
            (
                baseline_frame(1_000, rows, spectators)
                    .len()
                    .abs_diff(bytes),
                rows,
            )
        })
        .take_while(|(diff, rows)| *rows < 4 || *diff < bytes)
        .min()
        .map(|(_, rows)| rows)
        .unwrap_or(1)
}

/// The baseline's welcome frame.
fn baseline_welcome() -> Bytes {
    Bytes::from(
        Codec::Binary
            .encode_server_bytes(&ServerFrame::Push(Push::Welcome(Welcome {
                protocol: PROTOCOL_VERSION,
                server_version: "baseline".into(),
                role: Role::Spectator,
                sub: "fan".into(),
                race: None,
                expires_at_ms: 0,
            })))
            .expect("welcome"),
    )
}

/// The baseline's WebSocket handshake: 4 KiB buffers, the subprotocol echoed; returns the
/// socket and the request's path.
async fn baseline_accept(stream: TcpStream) -> Option<(WebSocketStream<TcpStream>, String)> {
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(4096);
    let mut path = String::new();
    // tungstenite's handshake callback fixes this signature (`ErrorResponse`).
    #[allow(clippy::result_large_err)]
    let echo = |request: &HsRequest, mut response: Response| {
        path = request.uri().path().to_owned();
        response.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            Codec::Binary.subprotocol().parse().expect("header"),
        );
        Ok(response)
    };
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, echo, Some(config))
        .await
        .ok()?;
    Some((ws, path))
}

/// The baseline race a socket asked for by its path (`/r<j>/ws`; anything else is race 0).
fn race_of_path(path: &str) -> usize {
    path.strip_prefix("/r")
        .and_then(|p| p.split('/').next())
        .and_then(|j| j.parse().ok())
        .unwrap_or(0)
}

/// The bare broadcast server, run as a process of its own (this binary with
/// [`BASELINE_SERVER_ENV`] set): prints `listening on <addr>`, then serves until killed or
/// until its standard input closes (the bench is gone).
fn baseline_server() {
    let rows: Vec<usize> = std::env::var(BASELINE_ROWS_ENV)
        .expect("rows")
        .split(',')
        .map(|r| r.parse().expect("rows"))
        .collect();
    let spectators = env_or(BASELINE_SPECTATORS_ENV, 1);
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("listening on {}", listener.local_addr().expect("addr"));
        use std::io::Write;
        std::io::stdout().flush().expect("stdout");
        let races = rows.len();
        let channels: Vec<broadcast::Sender<Bytes>> =
            (0..races).map(|_| broadcast::channel(64).0).collect();
        let welcome = baseline_welcome();
        let accept_channels = channels.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (channels, welcome) = (accept_channels.clone(), welcome.clone());
                tokio::spawn(baseline_socket(stream, channels, welcome));
            }
        });
        // One race's frame every 250 ms / N: each race every 250 ms, the races evenly phased.
        let mut tick = tokio::time::interval(Duration::from_millis(250) / races as u32);
        let mut n = 0usize;
        loop {
            tick.tick().await;
            let (race, seq) = (n % races, (n / races) as u64 + 1);
            n += 1;
            let _ = channels[race].send(baseline_frame(seq, rows[race], spectators));
        }
    });
}

/// One baseline socket: the welcome, then every frame of its race's channel, feeding what is
/// queued before one flush.
async fn baseline_socket(
    stream: TcpStream,
    channels: Vec<broadcast::Sender<Bytes>>,
    welcome: Bytes,
) {
    let Some((ws, path)) = baseline_accept(stream).await else {
        return;
    };
    let race = race_of_path(&path).min(channels.len() - 1);
    let mut rx = channels[race].subscribe();
    let (mut sink, _stream) = ws.split();
    if sink.send(Message::Binary(welcome)).await.is_err() {
        return;
    }
    loop {
        let first = match rx.recv().await {
            Ok(b) => b,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => break,
        };
        if sink.feed(Message::Binary(first)).await.is_err() {
            return;
        }
        while let Ok(more) = rx.try_recv() {
            if sink.feed(Message::Binary(more)).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// `bytes[j]`, `counts[j]`: race j's Peloton median delta size and baseline spectators.
async fn baseline_side(
    bytes: &[usize],
    counts: &[usize],
    stalled: usize,
    secs: u64,
) -> (Figures, ServerUse) {
    let races = counts.len();
    let spectators: usize = counts.iter().sum();
    let mut rows_by_bytes: HashMap<usize, usize> = HashMap::new();
    let rows: Vec<usize> = bytes
        .iter()
        .map(|&b| {
            *rows_by_bytes
                .entry(b)
                .or_insert_with(|| rows_for(b, spectators))
        })
        .collect();
    let mut command = std::process::Command::new(std::env::current_exe().expect("bench binary"));
    command
        .env(BASELINE_SERVER_ENV, "1")
        .env(
            BASELINE_ROWS_ENV,
            rows.iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(","),
        )
        .env(BASELINE_SPECTATORS_ENV, spectators.to_string())
        .stdin(std::process::Stdio::piped());
    let (mut child, url) = support::spawn_listening(command);
    let addr = url.trim_start_matches("ws://").to_owned();
    let pid = child.id();
    let rss_idle = rss_kib(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let mut targets = Vec::with_capacity(spectators);
    for (race, &n) in counts.iter().enumerate() {
        let url = if races == 1 {
            format!("ws://{addr}")
        } else {
            format!("ws://{addr}/r{race}")
        };
        for _ in 0..n {
            targets.push(Target {
                race,
                node: 0,
                url: url.clone(),
                token: "none".into(),
                subscribe: None,
                sample: false,
                sizes: false,
            });
        }
    }
    let watchers = connect_spectators(targets, &stop, None).await;
    let stalled = stall_spectators(stalled, |k| {
        let url = if races == 1 {
            format!("ws://{addr}")
        } else {
            format!("ws://{addr}/r{}", k % races)
        };
        (url, "none".into(), None)
    })
    .await;
    let t0 = Instant::now();
    let d = Duration::from_secs(secs);
    let cpu = CpuWindow::start(pid, t0 + d);
    tokio::time::sleep_until((t0 + d + Duration::from_millis(750)).into()).await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::with_capacity(spectators);
    for w in watchers {
        seen.push(w.await.expect("spectator"));
    }
    let mut usage = cpu.finish(rss_idle).await;
    usage.peak_rss_kib = peak_rss_kib(pid);
    drop(stalled);
    let _ = child.kill();
    let _ = child.wait();
    let mut figures = summarise(&seen, races, t0, d);
    let mut frames: Vec<(usize, usize)> = rows
        .iter()
        .map(|&r| (baseline_frame(1_000, r, spectators).len(), r))
        .collect();
    frames.sort();
    (figures.frame_bytes, figures.rows) = frames[frames.len() / 2];
    (figures, usage)
}

fn row(name: &str, a: String, b: String, r: String) {
    println!("{name:<34} {a:>14} {b:>14} {r:>8}");
}

async fn run_fanout(s: Scenario) {
    let (racers, spectators, secs, races) = (s.racers, s.spectators, s.secs, s.races);
    let counts = spread(spectators - s.stalled, races);
    if races == 1 {
        println!("fan-out: {racers} racers, {spectators} spectators, {secs} s");
    } else {
        println!(
            "fan-out: {races} races x {racers} racers, {spectators} spectators ({}-{} per race), {secs} s",
            counts.iter().min().unwrap_or(&0),
            counts.iter().max().unwrap_or(&0),
        );
    }
    let Measured {
        figures: ours,
        mut usage,
        too_slow,
        ..
    } = peloton_side(&s, &counts, Layout::Standalone).await;
    let server = usage.remove(0);
    // Every race's baseline frames are the size of the deltas Peloton published (the server's
    // median over every race's ticks: the races are alike; a spectator that fell behind got
    // catch-ups, so what the spectators saw is not a fair sample of a tick's size).
    let bytes = vec![ours.frame_bytes.max(1); races];
    let (base, base_server) = baseline_side(&bytes, &counts, s.stalled, secs).await;
    println!(
        "{:<34} {:>14} {:>14} {:>8}",
        "", "peloton", "baseline", "ratio"
    );
    if races > 1 {
        row("races", races.to_string(), races.to_string(), "".into());
        row(
            "racer sockets",
            (races * racers).to_string(),
            "0".into(),
            "".into(),
        );
    }
    row(
        "spectator sockets",
        spectators.to_string(),
        spectators.to_string(),
        "".into(),
    );
    if s.stalled > 0 {
        row(
            "of which never read",
            s.stalled.to_string(),
            s.stalled.to_string(),
            "".into(),
        );
        row(
            "closed as too slow (4008)",
            too_slow.map_or("n/a".into(), |n| n.to_string()),
            "n/a".into(),
            "".into(),
        );
    }
    row(
        "delta frame (bytes / rows)",
        format!("{} / {}", ours.frame_bytes, ours.rows),
        format!("{} / {}", base.frame_bytes, base.rows),
        "".into(),
    );
    row(
        "updates (distinct seq)",
        ours.updates.to_string(),
        base.updates.to_string(),
        "".into(),
    );
    row(
        "full-table frames delivered",
        ours.full_frames.to_string(),
        base.full_frames.to_string(),
        "".into(),
    );
    row(
        "catch-up frames delivered",
        ours.catch_up_frames.to_string(),
        "n/a".into(),
        "".into(),
    );
    row(
        "frames delivered / (seqs x sockets)",
        format!("{:.3}", ours.delivered_share),
        format!("{:.3}", base.delivered_share),
        ratio(ours.delivered_share, base.delivered_share),
    );
    row(
        "delivered frames/s",
        format!("{:.0}", ours.frames_per_s),
        format!("{:.0}", base.frames_per_s),
        ratio(ours.frames_per_s, base.frames_per_s),
    );
    row(
        "spread p50 (last - first arrival)",
        ms(ours.spread_p50),
        ms(base.spread_p50),
        ratio(ours.spread_p50.as_secs_f64(), base.spread_p50.as_secs_f64()),
    );
    row(
        "spread p99",
        ms(ours.spread_p99),
        ms(base.spread_p99),
        ratio(ours.spread_p99.as_secs_f64(), base.spread_p99.as_secs_f64()),
    );
    let cpu = |u: &ServerUse, f: &Figures| u.cpu_per_1000_frames(f.delivered);
    let (ours_cpu, base_cpu) = (cpu(&server, &ours), cpu(&base_server, &base));
    let seconds = |c: Option<f64>| c.map_or("n/a".into(), |c| format!("{:.3} s", c));
    row(
        "server CPU per 1,000 frames",
        seconds(ours_cpu),
        seconds(base_cpu),
        ratio(ours_cpu.unwrap_or(0.0), base_cpu.unwrap_or(0.0)),
    );
    let (ours_rss, base_rss) = (
        server.rss_per_socket_kib(spectators + races * racers),
        base_server.rss_per_socket_kib(spectators),
    );
    let kib = |k: Option<f64>| k.map_or("n/a".into(), |k| format!("{k:.1} KiB"));
    row(
        "server RSS per socket under load",
        kib(ours_rss),
        kib(base_rss),
        ratio(ours_rss.unwrap_or(0.0), base_rss.unwrap_or(0.0)),
    );
    if let Some((p50, p99, n)) = ours.latency {
        row(
            &format!("fix -> spectator p50 ({n} samples)"),
            ms(p50),
            "n/a".into(),
            "".into(),
        );
        row("fix -> spectator p99", ms(p99), "n/a".into(), "".into());
    }
    if let Some((p50, p99, n)) = ours.ack {
        row(
            &format!("fix ack p50 ({n} fixes)"),
            ms(p50),
            "n/a".into(),
            "".into(),
        );
        row("fix ack p99", ms(p99), "n/a".into(), "".into());
    }
    server.print();
    println!(
        "baseline server (pid {}): peak RSS (VmHWM) {}",
        base_server.pid,
        base_server
            .peak_rss_kib
            .map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
    );
}

/// One row of the cluster table: the one-node run, the N-node run, their ratio.
fn cluster_row(name: &str, a: String, b: String, r: String) {
    println!("{name:<40} {a:>22} {b:>22} {r:>7}");
}

/// A number of bytes or messages per tick (0 without ticks).
fn per_tick(value: u64, ticks: u64) -> f64 {
    if ticks == 0 {
        0.0
    } else {
        value as f64 / ticks as f64
    }
}

/// Cluster mode: the same spectators on one node, then split over `s.nodes` nodes, each
/// run on a fresh local nats-server.
async fn run_cluster(s: Scenario) {
    let (racers, spectators, secs, races) = (s.racers, s.spectators, s.secs, s.races);
    let counts = spread(spectators - s.stalled, races);
    println!(
        "cluster fan-out: {races} race(s) x {racers} racers, {spectators} spectators, {secs} s; \
         1 node, then {} nodes, each time on a fresh local nats-server (JetStream, 1 replica); \
         races created on node 0 (their owner), racers' phones on node 0, spectators split \
         evenly over the nodes",
        s.nodes
    );
    let layouts: Vec<usize> = if s.nodes > 1 {
        vec![1, s.nodes]
    } else {
        vec![1]
    };
    let mut sides: Vec<(usize, Measured)> = Vec::with_capacity(layouts.len());
    for &nodes in &layouts {
        let nats = nats::NatsServer::start();
        let measured = peloton_side(&s, &counts, Layout::Cluster { nats: &nats, nodes }).await;
        drop(nats);
        for (node, frames) in measured.frames_by_node.iter().enumerate() {
            // A node whose spectators got nothing means its mirror never followed the race.
            assert!(
                *frames > 0,
                "{nodes} node(s): the spectators on node {node} received no update"
            );
        }
        sides.push((nodes, measured));
    }
    let one = &sides[0].1;
    let many = sides.get(1).map(|(_, m)| m);
    let col = |f: &dyn Fn(&Measured) -> String| (f(one), many.map_or(String::new(), f));
    let num = |name: &str, f: &dyn Fn(&Measured) -> Option<f64>, show: &dyn Fn(f64) -> String| {
        let (a, b) = (f(one), many.and_then(f));
        cluster_row(
            name,
            a.map_or("n/a".into(), show),
            b.map_or(
                if many.is_some() {
                    "n/a".into()
                } else {
                    String::new()
                },
                show,
            ),
            a.zip(b).map_or(String::new(), |(a, b)| ratio(b, a)),
        );
    };
    cluster_row(
        "",
        "1 node".into(),
        many.map_or(String::new(), |_| format!("{} nodes", s.nodes)),
        "ratio".into(),
    );
    let per_node = |nodes: usize| {
        let mut on = vec![0usize; nodes];
        for &n in &counts {
            for (node, k) in spread(n, nodes).into_iter().enumerate() {
                on[node] += k;
            }
        }
        on.iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(" / ")
    };
    cluster_row(
        "spectator sockets per node",
        per_node(1),
        many.map_or(String::new(), |_| per_node(s.nodes)),
        String::new(),
    );
    let (a, b) = col(&|m| format!("{} / {}", m.figures.frame_bytes, m.figures.rows));
    cluster_row("delta frame (bytes / rows)", a, b, String::new());
    let (a, b) = col(&|m| m.figures.updates.to_string());
    cluster_row("updates (distinct seq)", a, b, String::new());
    let (a, b) = col(&|m| format!("{} / {}", m.figures.full_frames, m.figures.catch_up_frames));
    cluster_row("full-table / catch-up frames", a, b, String::new());
    num(
        "frames delivered / (seqs x sockets)",
        &|m| Some(m.figures.delivered_share),
        &|v| format!("{v:.3}"),
    );
    num(
        "delivered frames/s",
        &|m| Some(m.figures.frames_per_s),
        &|v| format!("{v:.0}"),
    );
    let (a, b) = col(&|m| {
        m.frames_by_node
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join(" / ")
    });
    cluster_row("frames delivered, by node", a, b, String::new());
    let millis = |v: f64| format!("{:.2} ms", v * 1000.0);
    num(
        "spread p50 (last - first arrival)",
        &|m| Some(m.figures.spread_p50.as_secs_f64()),
        &millis,
    );
    num(
        "spread p99",
        &|m| Some(m.figures.spread_p99.as_secs_f64()),
        &millis,
    );
    let samples = |l: &Option<Quantiles>| l.map_or(0, |(_, _, n)| n);
    let (a, b) = col(&|m| samples(&m.figures.latency).to_string());
    cluster_row(
        "fix -> spectator samples (fix x socket)",
        a,
        b,
        String::new(),
    );
    for (name, p99) in [
        ("fix -> spectator p50", false),
        ("fix -> spectator p99", true),
    ] {
        num(
            name,
            &|m| {
                m.figures
                    .latency
                    .map(|(p50, p99s, _)| if p99 { p99s } else { p50 }.as_secs_f64())
            },
            &millis,
        );
    }
    let (a, b) = col(&|m| {
        let show = |l: Option<Quantiles>| {
            l.map_or("-".into(), |(p50, p99, n)| {
                format!("{} / {} ({n})", ms(p50), ms(p99))
            })
        };
        show(m.latency_by_node.0)
    });
    cluster_row("  on node 0: p50 / p99 (samples)", a, b, String::new());
    if let Some(m) = many {
        let show = m.latency_by_node.1.map_or("-".into(), |(p50, p99, n)| {
            format!("{} / {} ({n})", ms(p50), ms(p99))
        });
        cluster_row(
            "  on the other nodes: p50 / p99",
            String::new(),
            show,
            String::new(),
        );
    }
    for (name, p99) in [("fix ack p50", false), ("fix ack p99", true)] {
        num(
            name,
            &|m| {
                m.figures
                    .ack
                    .map(|(p50, p99s, _)| if p99 { p99s } else { p50 }.as_secs_f64())
            },
            &millis,
        );
    }
    num(
        "peloton CPU per 1,000 frames (sum)",
        &|m| {
            let cpu = m.cpu_s()?;
            (m.figures.delivered > 0).then(|| cpu * 1000.0 / m.figures.delivered as f64)
        },
        &|v| format!("{v:.3} s"),
    );
    num(
        "peloton cores used (sum)",
        &|m| Some(m.cpu_s()? / m.window_s().max(1e-9)),
        &|v| format!("{v:.2}"),
    );
    let (a, b) = col(&|m| {
        m.usage
            .iter()
            .map(|u| {
                u.cpu_s.map_or("n/a".into(), |c| {
                    format!("{:.2}", c / m.window_s().max(1e-9))
                })
            })
            .collect::<Vec<_>>()
            .join(" / ")
    });
    cluster_row("  cores used, by node", a, b, String::new());
    num(
        "nats-server cores used",
        &|m| {
            let u = m.nats_usage.as_ref()?;
            Some(u.cpu_s? / u.window.as_secs_f64().max(1e-9))
        },
        &|v| format!("{v:.2}"),
    );
    let sockets = spectators + races * racers;
    num(
        "peloton RSS per socket (sum)",
        &|m| m.rss_per_socket_kib(sockets),
        &|v| format!("{v:.1} KiB"),
    );
    let (a, b) = col(&|m| {
        m.usage
            .iter()
            .map(|u| {
                u.peak_rss_kib
                    .map_or("n/a".into(), |k| format!("{:.0}", k as f64 / 1024.0))
            })
            .collect::<Vec<_>>()
            .join(" / ")
    });
    cluster_row("peak RSS by node (MiB)", a, b, String::new());
    let (a, b) = col(&|m| m.nats.as_ref().map_or("n/a".into(), |(_, t)| t.to_string()));
    cluster_row("ticks published in the window", a, b, String::new());
    let traffic = |t: &Traffic, ticks: u64, out: bool| {
        let (bytes, msgs) = if out {
            (t.out_bytes, t.out_msgs)
        } else {
            (t.in_bytes, t.in_msgs)
        };
        format!(
            "{:.0} B ({:.1} msgs)",
            per_tick(bytes, ticks),
            per_tick(msgs, ticks)
        )
    };
    for node in 0..s.nodes {
        let name = format!("n{node}");
        for (dir, out) in [("in (node -> NATS)", false), ("out (NATS -> node)", true)] {
            let (a, b) = col(&|m| {
                m.nats
                    .as_ref()
                    .and_then(|(c, ticks)| Some(traffic(c.by_node.get(&name)?, *ticks, out)))
                    .unwrap_or_else(|| "-".into())
            });
            cluster_row(
                &format!("NATS per tick, node {node} {dir}"),
                a,
                b,
                String::new(),
            );
        }
    }
    let (a, b) = col(&|m| {
        m.nats
            .as_ref()
            .map_or("n/a".into(), |(c, ticks)| traffic(&c.tap, *ticks, true))
    });
    cluster_row(
        "  of which relayed ticks (one node's copy)",
        a,
        b,
        String::new(),
    );
    for (dir, out) in [("in", false), ("out", true)] {
        // Without the bench's own tap, which is no node.
        let (a, b) = col(&|m| {
            m.nats.as_ref().map_or("n/a".into(), |(c, ticks)| {
                traffic(&c.total.since(&c.tap), *ticks, out)
            })
        });
        cluster_row(
            &format!("NATS per tick, whole server {dir}"),
            a,
            b,
            String::new(),
        );
    }
    if s.stalled > 0 {
        let (a, b) = col(&|m| m.too_slow.map_or("n/a".into(), |n| n.to_string()));
        cluster_row("closed as too slow (4008)", a, b, String::new());
    }
    println!(
        "note: every process (the {} peloton nodes, nats-server and this bench's client sockets) \
         shares this machine's {} cores",
        s.nodes,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}

/// What one closed-loop racer socket got.
#[derive(Default)]
struct Loop {
    /// Answers that arrived inside the window.
    requests: u64,
    accepted: u64,
    ignored: u64,
    /// Error answers (or a broken socket).
    errors: u64,
    first_error: Option<String>,
    acks: Vec<Duration>,
    ack_bytes: Vec<usize>,
}

/// One side's saturate figures.
struct Saturated {
    sockets: usize,
    requests: u64,
    accepted: u64,
    ignored: u64,
    errors: u64,
    first_error: Option<String>,
    fixes_per_s: f64,
    ack: Option<(Duration, Duration, usize)>,
    ack_bytes: usize,
    spectator_frames_per_s: Option<f64>,
}

impl Saturated {
    fn from_loops(loops: Vec<Loop>, d: Duration) -> Saturated {
        let mut acks = Vec::new();
        let mut sizes = Vec::new();
        let mut out = Saturated {
            sockets: loops.len(),
            requests: 0,
            accepted: 0,
            ignored: 0,
            errors: 0,
            first_error: None,
            fixes_per_s: 0.0,
            ack: None,
            ack_bytes: 0,
            spectator_frames_per_s: None,
        };
        for l in loops {
            out.requests += l.requests;
            out.accepted += l.accepted;
            out.ignored += l.ignored;
            out.errors += l.errors;
            out.first_error = out.first_error.or(l.first_error);
            acks.extend(l.acks);
            sizes.extend(l.ack_bytes);
        }
        sizes.sort();
        out.ack_bytes = sizes.get(sizes.len() / 2).copied().unwrap_or(0);
        out.fixes_per_s = out.accepted as f64 / d.as_secs_f64();
        out.ack = p50_p99(acks);
        out
    }
}

/// Opens a client socket like `Client::connect` (8 KiB buffers, bearer token, binary
/// subprotocol) and reads the welcome.
async fn raw_connect(url: &str, token: &str) -> Ws {
    let request = support::upgrade_request(url, token);
    let config = WebSocketConfig::default()
        .read_buffer_size(CLIENT_BUFFER_BYTES)
        .write_buffer_size(CLIENT_BUFFER_BYTES)
        .max_message_size(Some(MAX_DECODE_BYTES))
        .max_frame_size(Some(MAX_DECODE_BYTES));
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .expect("racer connect");
    match read_server(&mut ws).await {
        Some((ServerFrame::Push(Push::Welcome(_)), _)) => ws,
        _ => panic!("expected a welcome"),
    }
}

/// The next server frame and its size; `None` when the socket closed or broke.
async fn read_server(ws: &mut Ws) -> Option<(ServerFrame, usize)> {
    loop {
        match ws.next().await? {
            Ok(Message::Binary(b)) => {
                return Codec::Binary
                    .decode_server(&b)
                    .ok()
                    .map(|frame| (frame, b.len()))
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// A racer socket's closed loop until `deadline`: send the next `batch` fixes, wait for the
/// answer, repeat. `check_ids`: the answer must carry the request's id (the baseline's
/// fixed bytes do not).
async fn closed_loop(
    mut ws: Ws,
    index: Arc<CourseIndex>,
    offset: f64,
    start_ms: i64,
    batch: usize,
    deadline: Instant,
    check_ids: bool,
) -> Loop {
    // Stand still 1 km before the finish: every fix stays acceptable, none finishes.
    let stop_at = (index.length_m() - 1000.0).max(offset);
    let mut out = Loop::default();
    let mut k = 0u64;
    let mut id = 0u64;
    let fail = |out: &mut Loop, why: String| {
        out.errors += 1;
        out.first_error.get_or_insert(why);
    };
    while Instant::now() < deadline {
        let fixes = (0..batch)
            .map(|_| {
                let p = index.position_at((offset + 8.0 * k as f64).min(stop_at));
                k += 1;
                WireFix {
                    at_ms: start_ms + 1000 * k as i64,
                    lat_e7: p.lat_e7,
                    lon_e7: p.lon_e7,
                    accuracy_dm: 50,
                    speed_cmps: Some(800),
                    elevation_dm: None,
                }
            })
            .collect();
        id += 1;
        let message = Codec::Binary
            .encode_client(&ClientFrame {
                id,
                request: Request::Fixes { fixes },
            })
            .expect("encode");
        let at = Instant::now();
        if let Err(e) = ws.send(message).await {
            fail(&mut out, format!("send: {e}"));
            break;
        }
        let answer = loop {
            match read_server(&mut ws).await {
                Some((ServerFrame::Push(_), _)) => continue,
                other => break other,
            }
        };
        let now = Instant::now();
        match answer {
            Some((
                ServerFrame::Reply {
                    id: got,
                    reply:
                        Reply::FixesAck {
                            accepted, ignored, ..
                        },
                },
                bytes,
            )) if !check_ids || got == id => {
                if now <= deadline {
                    out.requests += 1;
                    out.accepted += u64::from(accepted);
                    out.ignored += u64::from(ignored);
                    out.acks.push(now - at);
                    out.ack_bytes.push(bytes);
                }
            }
            Some((frame, _)) => fail(&mut out, format!("{frame:?}")),
            None => {
                fail(&mut out, "socket closed".into());
                break;
            }
        }
    }
    let _ = ws.close(None).await;
    out
}

/// Runs one closed loop per socket (socket `g` is racer `g % racers` of its race) for `d`.
async fn saturate_loops(
    sockets: Vec<Ws>,
    racers: usize,
    index: &Arc<CourseIndex>,
    start_ms: i64,
    batch: usize,
    d: Duration,
    check_ids: bool,
) -> Vec<Loop> {
    let deadline = Instant::now() + d;
    let loops: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(g, ws)| {
            let offset = start_offset(index, g % racers);
            tokio::spawn(closed_loop(
                ws,
                index.clone(),
                offset,
                start_ms,
                batch,
                deadline,
                check_ids,
            ))
        })
        .collect();
    let mut out = Vec::with_capacity(loops.len());
    for l in loops {
        out.push(l.await.expect("racer loop"));
    }
    out
}

/// Sends every racer's first fix before the window, retrying what is answered `unavailable`:
/// a racer's actor starts with its first fix, one by one in the race supervisor, and the
/// closed loops measure intake, not a thousand actors starting at once (that start is
/// reported on its own: how long it took, and how many first fixes had to be sent again).
async fn warm_up(
    url: &str,
    tokens: &[String],
    index: &Arc<CourseIndex>,
    racers: usize,
    start_ms: i64,
) {
    let started = Instant::now();
    let retries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    connect_all(tokens.len(), |g| {
        let (url, token, index, retries) = (
            url.to_owned(),
            tokens[g].clone(),
            index.clone(),
            retries.clone(),
        );
        async move {
            let mut phone = Client::connect(&url, &token, Codec::Binary)
                .await
                .expect("warm-up connect");
            let p = index.position_at(start_offset(&index, g % racers));
            let fix = WireFix {
                at_ms: start_ms - 1000,
                lat_e7: p.lat_e7,
                lon_e7: p.lon_e7,
                accuracy_dm: 50,
                speed_cmps: Some(800),
                elevation_dm: None,
            };
            for _ in 0..10 {
                match phone.request(Request::Fixes { fixes: vec![fix] }).await {
                    Ok(_) => break,
                    Err(_) => retries.fetch_add(1, Ordering::Relaxed),
                };
            }
            phone.close().await;
        }
    })
    .await;
    println!(
        "warm-up: first fix of {} racers in {:.1} s, {} sent again after `unavailable`",
        tokens.len(),
        started.elapsed().as_secs_f64(),
        retries.load(Ordering::Relaxed)
    );
}

async fn peloton_saturate(s: &Scenario) -> (Saturated, ServerUse, i64, Arc<CourseIndex>) {
    let (gpx, index) = course();
    let env = [
        ("PELOTON_WS_RATE_LIMIT_PER_SEC", SATURATE_RATE_LIMIT),
        ("PELOTON_WS_RATE_LIMIT_BURST", SATURATE_RATE_LIMIT),
        // Fixes are dated a second apart and sent as fast as they are taken, so their device
        // time runs far ahead of the clock: allow the most skew the server accepts (a week).
        ("PELOTON_TRACKING_MAX_FUTURE_SKEW_MS", "604800000"),
    ];
    let server = Server::start(s.races, s.racers, &gpx, &env).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut targets = Vec::with_capacity(s.spectators);
    for (race, n) in spread(s.spectators, s.races).into_iter().enumerate() {
        let token = server.token(Role::Spectator, "fan", race);
        for _ in 0..n {
            targets.push(Target {
                race,
                node: 0,
                url: server.url.clone(),
                token: token.clone(),
                subscribe: Some(server.races[race].clone()),
                sample: false,
                sizes: false,
            });
        }
    }
    let rss_idle = rss_kib(server.pid());
    let watchers = connect_spectators(targets, &stop, None).await;
    let tokens = server.racer_tokens(s.racers);
    let url = server.url.clone();
    let sockets = connect_all(tokens.len(), |g| {
        let (url, token) = (url.clone(), tokens[g].clone());
        async move { raw_connect(&url, &token).await }
    })
    .await;
    warm_up(&server.url, &tokens, &index, s.racers, server.start_ms).await;
    let d = Duration::from_secs(s.secs);
    let t0 = Instant::now();
    let cpu = CpuWindow::start(server.pid(), t0 + d);
    let loops = saturate_loops(sockets, s.racers, &index, server.start_ms, s.batch, d, true).await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::with_capacity(s.spectators);
    for w in watchers {
        seen.push(w.await.expect("spectator"));
    }
    let mut figures = Saturated::from_loops(loops, d);
    if s.spectators > 0 {
        figures.spectator_frames_per_s = Some(summarise(&seen, s.races, t0, d).frames_per_s);
    }
    let start_ms = server.start_ms;
    let usage = server.stop(cpu.finish(rss_idle).await).await;
    (figures, usage, start_ms, index)
}

/// A real `fixes_ack` of `batch` fixes, encoded once; its request id is picked so its size
/// is closest to `target` bytes (Peloton's median ack; ids grow, so does their varint).
fn baseline_ack(batch: usize, start_ms: i64, target: usize) -> Bytes {
    [1u64, 200, 20_000, 3_000_000, 400_000_000]
        .into_iter()
        .map(|id| {
            let frame = ServerFrame::Reply {
                id,
                reply: Reply::FixesAck {
                    accepted: batch as u32,
                    ignored: 0,
                    last_at_ms: Some(start_ms + 1_000_000),
                },
            };
            Bytes::from(Codec::Binary.encode_server_bytes(&frame).expect("ack"))
        })
        .min_by_key(|b| b.len().abs_diff(target))
        .expect("an ack")
}

async fn baseline_saturate(
    s: &Scenario,
    ack: Bytes,
    index: &Arc<CourseIndex>,
    start_ms: i64,
) -> Saturated {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("addr"));
    let welcome = baseline_welcome();
    let acceptor = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                break;
            };
            let (welcome, ack) = (welcome.clone(), ack.clone());
            tokio::spawn(async move {
                let Some((mut ws, _)) = baseline_accept(stream).await else {
                    return;
                };
                if ws.send(Message::Binary(welcome)).await.is_err() {
                    return;
                }
                // Answer every binary frame with the same ack bytes: no decoding, no storage.
                while let Some(Ok(message)) = ws.next().await {
                    match message {
                        Message::Binary(_) => {}
                        Message::Close(_) => return,
                        _ => continue,
                    }
                    if ws.send(Message::Binary(ack.clone())).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let sockets = connect_all(s.races * s.racers, |_| {
        let url = url.clone();
        async move { raw_connect(&url, "none").await }
    })
    .await;
    let d = Duration::from_secs(s.secs);
    let loops = saturate_loops(sockets, s.racers, index, start_ms, s.batch, d, false).await;
    acceptor.abort();
    Saturated::from_loops(loops, d)
}

async fn run_saturate(s: Scenario) {
    let (races, racers, secs, batch) = (s.races, s.racers, s.secs, s.batch);
    println!(
        "saturate: {races} race(s) x {racers} racers = {} racer sockets, {batch} fix(es) per request, closed loop, {secs} s",
        races * racers
    );
    let (ours, server, start_ms, index) = peloton_saturate(&s).await;
    let ack = baseline_ack(batch, start_ms, ours.ack_bytes);
    let base = baseline_saturate(&s, ack, &index, start_ms).await;
    println!(
        "{:<34} {:>14} {:>14} {:>8}",
        "", "peloton", "baseline", "ratio"
    );
    row(
        "racer sockets",
        ours.sockets.to_string(),
        base.sockets.to_string(),
        "".into(),
    );
    row(
        "fixes per request",
        batch.to_string(),
        batch.to_string(),
        "".into(),
    );
    row(
        "requests answered in the window",
        ours.requests.to_string(),
        base.requests.to_string(),
        ratio(ours.requests as f64, base.requests as f64),
    );
    row(
        "accepted fixes/s",
        format!("{:.0}", ours.fixes_per_s),
        format!("{:.0}", base.fixes_per_s),
        ratio(ours.fixes_per_s, base.fixes_per_s),
    );
    row(
        "fixes ignored / error answers",
        format!("{} / {}", ours.ignored, ours.errors),
        format!("{} / {}", base.ignored, base.errors),
        "".into(),
    );
    row(
        "ack frame bytes (median)",
        ours.ack_bytes.to_string(),
        base.ack_bytes.to_string(),
        "".into(),
    );
    let at = |f: &Saturated, p99: bool| {
        f.ack
            .map_or(Duration::ZERO, |(a, b, _)| if p99 { b } else { a })
    };
    for (name, p99) in [("ack p50 (send -> fixes_ack)", false), ("ack p99", true)] {
        let (a, b) = (at(&ours, p99), at(&base, p99));
        row(name, ms(a), ms(b), ratio(a.as_secs_f64(), b.as_secs_f64()));
    }
    if let Some(spectator) = ours.spectator_frames_per_s {
        row(
            &format!("spectator frames/s ({} sockets)", s.spectators),
            format!("{spectator:.0}"),
            "n/a".into(),
            "".into(),
        );
    }
    for (side, f) in [("peloton", &ours), ("baseline", &base)] {
        if let Some(why) = &f.first_error {
            println!("first error ({side}): {why}");
        }
    }
    println!(
        "note: Peloton journals every accepted fix and fsyncs (group commit, sled flush) before \
         each ack, with its rate limit raised to {SATURATE_RATE_LIMIT}/s; the baseline decodes \
         nothing, stores nothing and never fsyncs (socket-path limit)"
    );
    server.print();
}

fn main() {
    if std::env::var_os(BASELINE_SERVER_ENV).is_some() {
        baseline_server();
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run a tiny smoke.
    let benching = std::env::args().any(|a| a == "--bench");
    let configured = ["MODE", "RACES", "NODES"]
        .iter()
        .any(|name| std::env::var_os(name).is_some());
    let mut scenarios = vec![Scenario::from_env(benching)];
    if !benching && !configured {
        // The smoke: the default mode above, then two races, then saturate, then cluster mode
        // on three nodes, all tiny.
        let tiny = Scenario {
            mode: Mode::Fanout,
            races: 2,
            racers: 3,
            spectators: 4,
            stalled: 0,
            secs: 1,
            batch: 1,
            nodes: 3,
        };
        scenarios.push(tiny);
        scenarios.push(Scenario {
            mode: Mode::Saturate,
            races: 1,
            spectators: 0,
            ..tiny
        });
        scenarios.push(Scenario {
            mode: Mode::Cluster,
            races: 1,
            spectators: 6,
            secs: 2,
            ..tiny
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for s in scenarios {
        runtime.block_on(async move {
            match s.mode {
                Mode::Fanout => run_fanout(s).await,
                Mode::Saturate => run_saturate(s).await,
                Mode::Cluster => run_cluster(s).await,
            }
        });
    }
}
