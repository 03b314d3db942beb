//! Spectator fan-out: how the real server delivers live race updates to many spectator
//! sockets, against a bare tokio-tungstenite broadcast server measured in the same run.
//!
//! Why: every race update is encoded once and the same bytes go to every subscriber
//! (PROTOCOL.md 7.16); this checks what that path costs next to the simplest possible
//! broadcast server with the same sockets, frame sizes and tick rate.
//!
//! Run: `nice -n 5 cargo bench --bench fanout` (defaults R=100 racers, S=1000 spectators,
//! D=20 s; `RACERS`, `SPECTATORS`, `SECONDS` override). `cargo test --benches` runs a tiny
//! smoke (3 racers, 5 spectators, 2 s).
//!
//! Peloton side: starts `peloton serve` on 127.0.0.1:0 with a temporary data folder, creates
//! a race on the Celje loop starting now, registers R racers, starts it, opens S binary
//! spectator sockets (`race_subscribe`), then every racer sends one fix per second of wall
//! time (device time +1 s per fix, ~8 m/s along the course, staggered by 5 m) and waits for
//! its `fixes_ack`. Measured:
//! - delivered `race_update` frames per second over all spectators (arrivals inside the
//!   D-second window, divided by D);
//! - per-update spread: last spectator arrival − first spectator arrival of the same `seq`;
//! - fix → spectator latency on up to 50 sampled spectators: from the racer's send instant
//!   to the arrival of the first update whose row for that bib carries the fix's position;
//! - fix ack latency: send → `fixes_ack`.
//!
//! Baseline: an in-process server (`accept_hdr_async_with_config`, only to echo the
//! subprotocol; 4 KiB buffers; one writer task per socket fed by a `tokio::sync::broadcast`
//! of `Bytes`, feeding every queued frame then flushing once) sends a welcome, then every
//! 250 ms one binary `race_update` frame with as many rows as Peloton's median update, to S
//! sockets opened with the same client. Measured the same way (frames/s, spread); it has no
//! fixes, so no fix latency.

mod support;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use peloton::auth::{claims_for, Role};
use peloton::geo::{Course, CourseIndex};
use peloton::net::client::Client;
use peloton::net::codec::Codec;
use peloton::net::protocol::{
    Push, RaceCreate, RaceTick, RacerView, Reply, Request, ServerFrame, StandingView, Welcome,
    WireFix, PROTOCOL_VERSION,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, Semaphore};
use tokio_tungstenite::tungstenite::handshake::server::{Request as HsRequest, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

const GPX: &str = "../shared/data/gpx/loop-celje-resevno-2020-09-20.gpx";
/// Spectators that check rows against the racers' send instants.
const LATENCY_SAMPLES: usize = 50;
/// Concurrent connection handshakes.
const CONNECTING: usize = 32;

/// Send instants of fixes, by (bib, lat, lon).
type Sent = Arc<Mutex<HashMap<(u32, i32, i32), Instant>>>;

/// What one spectator saw.
#[derive(Default)]
struct Seen {
    /// (seq, arrival, full) per update frame.
    frames: Vec<(u64, Instant, bool)>,
    /// Fix → arrival latencies (sampled spectators only).
    latencies: Vec<Duration>,
    /// Encoded sizes and row counts of deltas (spectator 0 only).
    sizes: Vec<(usize, usize)>,
}

/// One side's figures.
struct Figures {
    frames_per_s: f64,
    spread_p50: Duration,
    spread_p99: Duration,
    updates: usize,
    full_frames: usize,
    delivered_share: f64,
    frame_bytes: usize,
    rows: usize,
    latency: Option<(Duration, Duration, usize)>,
    ack: Option<(Duration, Duration, usize)>,
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn p50_p99(mut v: Vec<Duration>) -> Option<(Duration, Duration, usize)> {
    if v.is_empty() {
        return None;
    }
    v.sort();
    Some((pct(&v, 0.5), pct(&v, 0.99), v.len()))
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Reads pushes until `stop`, recording update arrivals (and latencies when `sent` is given).
async fn watch(mut client: Client, stop: Arc<AtomicBool>, sent: Option<Sent>, sizes: bool) -> Seen {
    let mut seen = Seen::default();
    let mut last_pos: HashMap<u32, (i32, i32)> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let push = match client.next_push(Duration::from_millis(200)).await {
            Ok(p) => p,
            Err(peloton::net::client::ClientError::Timeout(_)) => continue,
            Err(_) => break,
        };
        let now = Instant::now();
        let Push::RaceUpdate(tick) = push else {
            continue;
        };
        seen.frames.push((tick.seq, now, tick.full));
        if sizes && !tick.full {
            let n = tick.standings.len();
            let bytes = Codec::Binary
                .encode_server_bytes(&ServerFrame::Push(Push::RaceUpdate(tick.clone())))
                .map(|b| b.len())
                .unwrap_or(0);
            seen.sizes.push((bytes, n));
        }
        if let Some(sent) = &sent {
            let sent = sent.lock().expect("sent");
            for row in &tick.standings {
                let pos = (row.lat_e7, row.lon_e7);
                if last_pos.insert(row.bib, pos) != Some(pos) {
                    if let Some(at) = sent.get(&(row.bib, pos.0, pos.1)) {
                        seen.latencies.push(now.saturating_duration_since(*at));
                    }
                }
            }
        }
    }
    client.close().await;
    seen
}

/// Merges what the spectators saw into frames/s and spread over `[t0, t0 + d]`.
fn summarise(seen: &[Seen], t0: Instant, d: Duration) -> Figures {
    let end = t0 + d;
    let mut by_seq: BTreeMap<u64, (Instant, Instant)> = BTreeMap::new();
    let mut delivered = 0usize;
    let mut full_frames = 0usize;
    for s in seen {
        for &(seq, at, full) in &s.frames {
            if at < t0 {
                continue;
            }
            if at <= end {
                delivered += 1;
                if full {
                    full_frames += 1;
                }
            }
            let e = by_seq.entry(seq).or_insert((at, at));
            e.0 = e.0.min(at);
            e.1 = e.1.max(at);
        }
    }
    let expected = (by_seq.values().filter(|(first, _)| *first <= end).count() * seen.len()) as f64;
    let mut spreads: Vec<Duration> = by_seq
        .values()
        .filter(|(first, _)| *first <= end)
        .map(|(first, last)| *last - *first)
        .collect();
    spreads.sort();
    let mut sizes: Vec<(usize, usize)> = seen.iter().flat_map(|s| s.sizes.clone()).collect();
    sizes.sort();
    let (frame_bytes, rows) = sizes.get(sizes.len() / 2).copied().unwrap_or((0, 0));
    Figures {
        frames_per_s: delivered as f64 / d.as_secs_f64(),
        spread_p50: pct(&spreads, 0.5),
        spread_p99: pct(&spreads, 0.99),
        updates: spreads.len(),
        full_frames,
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
    url: &str,
    token: &str,
    n: usize,
    subscribe: Option<&str>,
    stop: &Arc<AtomicBool>,
    sent: Option<&Sent>,
) -> Vec<tokio::task::JoinHandle<Seen>> {
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(n.max(1));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (url, token, gate, ready) = (
            url.to_owned(),
            token.to_owned(),
            gate.clone(),
            ready_tx.clone(),
        );
        let subscribe = subscribe.map(str::to_owned);
        let stop = stop.clone();
        let sent = (i < LATENCY_SAMPLES).then(|| sent.cloned()).flatten();
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.expect("gate");
            let mut client = Client::connect(&url, &token, Codec::Binary)
                .await
                .expect("spectator connect");
            if let Some(race_id) = subscribe {
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
            watch(client, stop, sent, i == 0).await
        }));
    }
    drop(ready_tx);
    for _ in 0..n {
        ready_rx.recv().await.expect("spectator ready");
    }
    tasks
}

async fn peloton_side(racers: usize, spectators: usize, secs: u64) -> Figures {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, url) = support::start_server(dir.path(), &[]);
    let keys = support::server_keys(dir.path());
    let now_s = peloton::time::now_ms() / 1000;
    let admin_token = keys
        .issue(&claims_for(Role::Admin, "bench", None, now_s, 3600))
        .expect("token");
    let mut admin = Client::connect(&url, &admin_token, Codec::Binary)
        .await
        .expect("admin connect");
    let gpx = std::fs::read_to_string(GPX).expect("gpx");
    let start_ms = peloton::time::now_ms();
    let Ok(Reply::Race(race)) = admin
        .request(Request::RaceCreate(RaceCreate {
            name: "Fan-out bench".into(),
            course_gpx: gpx.clone(),
            start_at_ms: start_ms,
            cutoff_at_ms: None,
        }))
        .await
    else {
        panic!("race create failed")
    };
    let bibs: Vec<u32> = (1..=racers as u32).collect();
    for chunk in bibs.chunks(200) {
        admin
            .request(Request::RacerRegister {
                race_id: race.id.clone(),
                racers: chunk
                    .iter()
                    .map(|&bib| RacerView {
                        bib,
                        name: format!("Racer {bib}"),
                        team: None,
                        email: None,
                    })
                    .collect(),
            })
            .await
            .expect("register");
    }
    admin
        .request(Request::RaceStart {
            id: race.id.clone(),
        })
        .await
        .expect("start");

    let spectator_token = keys
        .issue(&claims_for(
            Role::Spectator,
            "fan",
            Some(&race.id),
            now_s,
            3600,
        ))
        .expect("token");
    let stop = Arc::new(AtomicBool::new(false));
    let sent: Sent = Arc::new(Mutex::new(HashMap::new()));
    let watchers = connect_spectators(
        &url,
        &spectator_token,
        spectators,
        Some(&race.id),
        &stop,
        Some(&sent),
    )
    .await;

    let course = Course::from_gpx(gpx.as_bytes(), 200_000).expect("course");
    let index = Arc::new(CourseIndex::new(&course));
    let mut phones = Vec::with_capacity(racers);
    for &bib in &bibs {
        let token = keys
            .issue(&claims_for(
                Role::Racer,
                &bib.to_string(),
                Some(&race.id),
                now_s,
                3600,
            ))
            .expect("token");
        phones.push(
            Client::connect(&url, &token, Codec::Binary)
                .await
                .expect("racer connect"),
        );
    }
    let t0 = Instant::now();
    let d = Duration::from_secs(secs);
    let mut riders = Vec::with_capacity(racers);
    for (i, mut phone) in phones.into_iter().enumerate() {
        let (index, sent, bib) = (index.clone(), sent.clone(), bibs[i]);
        let phase = Duration::from_millis((i as u64 * 1000) / racers as u64);
        riders.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            let mut tick = tokio::time::interval_at((t0 + phase).into(), Duration::from_secs(1));
            let offset = (i as f64 * 5.0) % (index.length_m() * 0.5);
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
                    .insert((bib, p.lat_e7, p.lon_e7), at);
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
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::with_capacity(spectators);
    for w in watchers {
        seen.push(w.await.expect("spectator"));
    }
    let mut figures = summarise(&seen, t0, d);
    figures.ack = p50_p99(acks);
    admin.close().await;
    let _ = child.kill();
    let _ = child.wait();
    figures
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

async fn baseline_side(bytes: usize, spectators: usize, secs: u64) -> Figures {
    let rows = rows_for(bytes, spectators);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("addr"));
    let (tx, _) = broadcast::channel::<Bytes>(64);
    let welcome = Bytes::from(
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
    );
    let accept_tx = tx.clone();
    let acceptor = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                break;
            };
            let (tx, welcome) = (accept_tx.clone(), welcome.clone());
            tokio::spawn(async move {
                let config = WebSocketConfig::default()
                    .read_buffer_size(4096)
                    .write_buffer_size(4096);
                // tungstenite's handshake callback fixes this signature (`ErrorResponse`).
                #[allow(clippy::result_large_err)]
                let echo = |_: &HsRequest, mut response: Response| {
                    response.headers_mut().insert(
                        "Sec-WebSocket-Protocol",
                        Codec::Binary.subprotocol().parse().expect("header"),
                    );
                    Ok(response)
                };
                let Ok(ws) =
                    tokio_tungstenite::accept_hdr_async_with_config(stream, echo, Some(config))
                        .await
                else {
                    return;
                };
                let mut rx = tx.subscribe();
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
            });
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let watchers = connect_spectators(&url, "none", spectators, None, &stop, None).await;
    let t0 = Instant::now();
    let d = Duration::from_secs(secs);
    let mut tick = tokio::time::interval_at(t0.into(), Duration::from_millis(250));
    let mut seq = 0u64;
    while t0.elapsed() < d {
        tick.tick().await;
        seq += 1;
        let _ = tx.send(baseline_frame(seq, rows, spectators));
    }
    tokio::time::sleep(Duration::from_millis(750)).await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::with_capacity(spectators);
    for w in watchers {
        seen.push(w.await.expect("spectator"));
    }
    acceptor.abort();
    drop(tx);
    let mut figures = summarise(&seen, t0, d);
    figures.frame_bytes = baseline_frame(1_000, rows, spectators).len();
    figures.rows = rows;
    figures
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run a tiny smoke.
    let benching = std::env::args().any(|a| a == "--bench");
    let racers = env_or("RACERS", if benching { 100 } else { 3 }).max(1);
    let spectators = env_or("SPECTATORS", if benching { 1000 } else { 5 }).max(1);
    let secs = env_or("SECONDS", if benching { 20 } else { 2 }).max(1) as u64;
    let baseline_spectators = spectators.min(9000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!("fan-out: {racers} racers, {spectators} spectators, {secs} s");
        let ours = peloton_side(racers, spectators, secs).await;
        let base = baseline_side(ours.frame_bytes.max(1), baseline_spectators, secs).await;
        println!(
            "{:<34} {:>14} {:>14} {:>8}",
            "", "peloton", "baseline", "ratio"
        );
        let row = |name: &str, a: String, b: String, r: String| {
            println!("{name:<34} {a:>14} {b:>14} {r:>8}");
        };
        row(
            "spectator sockets",
            spectators.to_string(),
            baseline_spectators.to_string(),
            "".into(),
        );
        row(
            "median delta frame (bytes / rows)",
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
    });
}
