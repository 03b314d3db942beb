//! Protocol v1 codec benchmarks: binary (`peloton.v1.bin`, bincode) versus JSON
//! (`peloton.v1.json`, serde_json), message by message.
//!
//! What it measures, for every [`Request`] variant and every server frame (`Reply` of each
//! kind, `Error`, `Push::Welcome`, `Push::BackupChunk`):
//! - `encode_binary` / `encode_json`: one frame to payload bytes (`Codec::encode_*_bytes`);
//! - `decode_binary` / `decode_json`: payload bytes back to a frame (`Codec::decode_*`),
//!   including the validation the server does on every incoming client frame.
//!
//! Why: the subprotocol is chosen per socket, so the cost a server pays per frame and the
//! bytes it puts on the wire depend on it. Before the first benchmark runs, a table of the
//! encoded size of each message in both encodings is printed to stderr.
//!
//! The payloads are realistic rather than minimal: `race_create` carries a real GPX course
//! (`../shared/data/gpx/out-and-back-ljubljana.gpx`, about 300 KiB), `races` lists 100
//! races, and `backup_chunk` carries 256 KiB (and 64 KiB, the size the server sends) of
//! pseudo-random bytes (JSON writes each byte as a decimal number).
//!
//! Run with `nice -n 10 cargo bench --bench protocol`.

use criterion::{criterion_group, criterion_main, Criterion};
use peloton::auth::Role;
use peloton::error::ErrorCode;
use peloton::net::codec::Codec;
use peloton::net::protocol::{
    BackupInfo, ClientFrame, Push, RaceCreate, RaceStateView, RaceStatsView, RaceTick, RaceUpdate,
    RaceView, RacerView, Reply, Request, ResultStatusView, ResultView, ServerFrame, StandingView,
    Welcome, WireError, WireFix, PROTOCOL_VERSION,
};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

/// The GPX course used for `race_create`, relative to the package root.
const GPX: &str = "../shared/data/gpx/out-and-back-ljubljana.gpx";
/// A request id that takes three bytes as a varint, like most ids of a long-lived socket.
const REQUEST_ID: u64 = 1_234;
/// A server-generated race id: 12 hex digits of milliseconds, 8 random hex digits.
const RACE_ID: &str = "0193a5c1f2e04b7c9d2a";
/// Size of the `backup_chunk` payloads: 256 KiB, and the 64 KiB the server sends today
/// (`BACKUP_CHUNK_BYTES` in `src/net/session.rs`).
const BACKUP_CHUNK_BYTES: usize = 256 * 1024;
const SERVER_BACKUP_CHUNK_BYTES: usize = 64 * 1024;

/// One message of either direction.
enum Frame {
    Client(ClientFrame),
    Server(ServerFrame),
}

impl Frame {
    fn encode(&self, codec: Codec) -> Vec<u8> {
        match self {
            Frame::Client(frame) => codec.encode_client_bytes(frame),
            Frame::Server(frame) => codec.encode_server_bytes(frame),
        }
        .expect("every benchmark frame encodes")
    }

    /// Decodes `bytes` and checks it is this frame again (once, outside the timed loop).
    fn check_round_trip(&self, codec: Codec, bytes: &[u8]) {
        match self {
            Frame::Client(frame) => {
                let decoded = codec.decode_client(bytes).expect("client frame decodes");
                assert_eq!(&decoded, frame, "{codec:?} client round trip");
            }
            Frame::Server(frame) => {
                let decoded = codec.decode_server(bytes).expect("server frame decodes");
                assert_eq!(&decoded, frame, "{codec:?} server round trip");
            }
        }
    }
}

fn read_gpx() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(GPX);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the protocol benchmark needs the GPX course {} (a real course makes \
             race_create realistic): {e}",
            path.display()
        )
    })
}

fn race_view(i: usize) -> RaceView {
    let state = [
        RaceStateView::Scheduled,
        RaceStateView::Live,
        RaceStateView::Finished,
        RaceStateView::Cancelled,
    ][i % 4];
    let start = 1_767_000_000_000 + i as i64 * 86_400_000;
    RaceView {
        id: format!("0193a5c1f2e0{:08x}", 0x4b7c_9d2a_u32.wrapping_add(i as u32)),
        name: format!("Ljubljana out-and-back #{i}"),
        state,
        start_at_ms: start,
        cutoff_at_ms: Some(start + 6 * 3_600_000),
        created_at_ms: start - 30 * 86_400_000,
        started_at_ms: (state != RaceStateView::Scheduled).then_some(start + 12_345),
        finished_at_ms: (state == RaceStateView::Finished).then_some(start + 4 * 3_600_000),
        cancelled_at_ms: (state == RaceStateView::Cancelled).then_some(start + 600_000),
        cancel_reason: (state == RaceStateView::Cancelled)
            .then(|| "storm warning for the whole course".to_owned()),
        course_points: 4_117,
        course_length_m: 42_195.7,
    }
}

/// Deterministic pseudo-random bytes (xorshift64), so runs are comparable.
/// A registered racer with realistic text lengths.
fn racer(bib: u32) -> RacerView {
    RacerView {
        bib,
        name: format!("Racer Number {bib}"),
        team: Some("Kolesarski klub Celje".into()),
        email: Some(format!("racer{bib}@example.si")),
    }
}

/// A fix one second after the previous, moving north-east, as a phone streams it.
fn wire_fix(i: u32) -> WireFix {
    WireFix {
        at_ms: 1_796_115_600_000 + i64::from(i) * 1000,
        lat_e7: 462_309_000 + i as i32 * 70,
        lon_e7: 152_604_000 + i as i32 * 90,
        accuracy_dm: 48,
        speed_cmps: Some(830),
        elevation_dm: Some(2_410),
    }
}

/// A standings row mid-race.
fn standing(bib: u32) -> StandingView {
    StandingView {
        bib,
        rank: bib,
        progress_dm: 250_000 - bib * 37,
        gap_ms: Some(i64::from(bib) * 4_200),
        finished_at_ms: None,
        off_course: false,
        cut_suspected: false,
        lat_e7: 462_309_000 + bib as i32 * 11,
        lon_e7: 152_604_000 - bib as i32 * 13,
        speed_cmps: Some(812),
        eta_ms: Some(2_261_000 + i64::from(bib) * 1_000),
        checkpoints_passed: 2,
        last_split_ms: Some(1_796_116_800_000),
    }
}

/// A results row of a finisher.
fn result_row(bib: u32) -> ResultView {
    ResultView {
        rank: Some(bib),
        bib,
        name: format!("Racer Number {bib}"),
        team: Some("Kolesarski klub Celje".into()),
        time_ms: Some(3_600_000 + i64::from(bib) * 4_200),
        avg_speed_kmh: Some(27.4),
        distance_dm: 270_000,
        status: ResultStatusView::Finished,
        splits_ms: vec![1_200_000, 2_400_000],
        reason: None,
        off_course: Vec::new(),
        cuts: Vec::new(),
    }
}

fn pseudo_random_bytes(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Every message measured, by name, in protocol order.
fn messages() -> Vec<(&'static str, Frame)> {
    let gpx = read_gpx();
    // A realistic JWT: header, claims, HMAC-SHA256 signature, base64url.
    let token = format!(
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.{}.{}",
        "eyJzdWIiOiJyYWNlci0wNDIiLCJyb2xlIjoicmFjZXIiLCJyYWNlIjoiMDE5M2E1YzFmMmUwNGI3YzlkMmEiLCJpYXQiOjE3NjcwMDAwMDAsImV4cCI6MTc2NzAzNjAwMH0",
        "kY3b9Qx1mJ7s2Vt8pN4cR6wZ0aL5hE3uG9dF1iO2yTq"
    );
    let client = |request| {
        Frame::Client(ClientFrame {
            id: REQUEST_ID,
            request,
        })
    };
    let reply = |reply| {
        Frame::Server(ServerFrame::Reply {
            id: REQUEST_ID,
            reply,
        })
    };
    let id = || RACE_ID.to_owned();
    vec![
        ("ping", client(Request::Ping)),
        ("refresh_token", client(Request::RefreshToken { token })),
        (
            "race_create",
            client(Request::RaceCreate(RaceCreate {
                name: "Ljubljana out-and-back".into(),
                course_gpx: gpx,
                start_at_ms: 1_767_000_000_000,
                cutoff_at_ms: Some(1_767_021_600_000),
            })),
        ),
        (
            "race_update",
            client(Request::RaceUpdate(RaceUpdate {
                id: id(),
                name: Some("Ljubljana out-and-back (rescheduled)".into()),
                course_gpx: None,
                start_at_ms: Some(1_767_086_400_000),
                cutoff_at_ms: Some(1_767_108_000_000),
                clear_cutoff: false,
            })),
        ),
        ("race_list", client(Request::RaceList)),
        ("race_get", client(Request::RaceGet { id: id() })),
        ("race_start", client(Request::RaceStart { id: id() })),
        ("race_finish", client(Request::RaceFinish { id: id() })),
        (
            "race_cancel",
            client(Request::RaceCancel {
                id: id(),
                reason: Some("storm warning for the whole course".into()),
            }),
        ),
        ("backup", client(Request::Backup)),
        (
            "racer_register_100",
            client(Request::RacerRegister {
                race_id: id(),
                racers: (1..=100).map(racer).collect(),
            }),
        ),
        ("racer_list", client(Request::RacerList { race_id: id() })),
        (
            "fixes_1",
            client(Request::Fixes {
                fixes: vec![wire_fix(0)],
            }),
        ),
        (
            "fixes_60",
            client(Request::Fixes {
                fixes: (0..60).map(wire_fix).collect(),
            }),
        ),
        (
            "race_standings",
            client(Request::RaceStandings { race_id: id() }),
        ),
        (
            "race_subscribe",
            client(Request::RaceSubscribe {
                race_id: id(),
                since_seq: Some(1_234),
            }),
        ),
        (
            "race_results",
            client(Request::RaceResults { race_id: id() }),
        ),
        (
            "reply_pong",
            reply(Reply::Pong {
                server_time_ms: 1_767_000_123_456,
            }),
        ),
        (
            "reply_token_refreshed",
            reply(Reply::TokenRefreshed {
                expires_at_ms: 1_767_036_000_000,
            }),
        ),
        ("reply_race", reply(Reply::Race(race_view(1)))),
        (
            "reply_races_100",
            reply(Reply::Races((0..100).map(race_view).collect())),
        ),
        (
            "reply_backup_done",
            reply(Reply::BackupDone(BackupInfo {
                bytes: 734_003_200,
                records: 1_000_003,
                crc32: 0xdead_beef,
            })),
        ),
        (
            "reply_fixes_ack",
            reply(Reply::FixesAck {
                accepted: 1,
                ignored: 0,
                last_at_ms: Some(1_796_115_601_000),
            }),
        ),
        (
            "reply_standings_1000",
            reply(Reply::Standings((1..=1000).map(standing).collect())),
        ),
        (
            "reply_results_1000",
            reply(Reply::Results {
                rows: (1..=1000).map(result_row).collect(),
                stats: RaceStatsView {
                    entrants: 1000,
                    starters: 1000,
                    finishers: 1000,
                    dnf: 0,
                    dns: 0,
                    winning_time_ms: Some(3_604_200),
                    median_time_ms: Some(5_700_000),
                    fastest_avg_speed_kmh: Some(27.4),
                    total_distance_m: 27_000_000.0,
                    dsq: 0,
                },
            }),
        ),
        (
            "push_race_update_delta_50",
            Frame::Server(ServerFrame::Push(Push::RaceUpdate(RaceTick {
                race_id: id(),
                seq: 4_321,
                full: false,
                spectators: 10_000,
                standings: (1..=50).map(standing).collect(),
            }))),
        ),
        (
            "push_race_update_full_1000",
            Frame::Server(ServerFrame::Push(Push::RaceUpdate(RaceTick {
                race_id: id(),
                seq: 4_322,
                full: true,
                spectators: 10_000,
                standings: (1..=1000).map(standing).collect(),
            }))),
        ),
        (
            "error",
            Frame::Server(ServerFrame::Error {
                id: Some(REQUEST_ID),
                error: WireError {
                    code: ErrorCode::InvalidTransition,
                    message: format!(
                        "race {RACE_ID} is finished; only a scheduled race can be edited"
                    ),
                },
            }),
        ),
        (
            "push_welcome",
            Frame::Server(ServerFrame::Push(Push::Welcome(Welcome {
                protocol: PROTOCOL_VERSION,
                server_version: "0.1.0".into(),
                role: Role::Racer,
                sub: "racer-042".into(),
                race: Some(id()),
                expires_at_ms: 1_767_036_000_000,
            }))),
        ),
        (
            "push_backup_chunk_256k",
            Frame::Server(ServerFrame::Push(Push::BackupChunk {
                request_id: REQUEST_ID,
                offset: 3 * BACKUP_CHUNK_BYTES as u64,
                data: pseudo_random_bytes(BACKUP_CHUNK_BYTES),
            })),
        ),
        (
            "push_backup_chunk_64k",
            Frame::Server(ServerFrame::Push(Push::BackupChunk {
                request_id: REQUEST_ID,
                offset: 12 * SERVER_BACKUP_CHUNK_BYTES as u64,
                data: pseudo_random_bytes(SERVER_BACKUP_CHUNK_BYTES),
            })),
        ),
    ]
}

/// Prints the encoded size of each message in both encodings.
fn print_sizes(messages: &[(&'static str, Frame)]) {
    eprintln!();
    eprintln!(
        "{:<24} {:>12} {:>12} {:>12}",
        "message", "binary B", "json B", "bin/json"
    );
    for (name, frame) in messages {
        let binary = frame.encode(Codec::Binary).len();
        let json = frame.encode(Codec::Json).len();
        eprintln!(
            "{name:<24} {binary:>12} {json:>12} {:>12.3}",
            binary as f64 / json as f64
        );
    }
    eprintln!();
}

fn codec_name(codec: Codec) -> &'static str {
    match codec {
        Codec::Binary => "binary",
        Codec::Json => "json",
    }
}

fn bench_protocol(c: &mut Criterion) {
    let messages = messages();
    print_sizes(&messages);
    for (name, frame) in &messages {
        let mut group = c.benchmark_group(format!("protocol/{name}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        for codec in [Codec::Binary, Codec::Json] {
            let bytes = frame.encode(codec);
            frame.check_round_trip(codec, &bytes);
            let label = codec_name(codec);
            match frame {
                Frame::Client(frame) => {
                    group.bench_function(format!("encode_{label}"), |b| {
                        b.iter(|| codec.encode_client_bytes(black_box(frame)))
                    });
                    group.bench_function(format!("decode_{label}"), |b| {
                        b.iter(|| codec.decode_client(black_box(&bytes)))
                    });
                }
                Frame::Server(frame) => {
                    group.bench_function(format!("encode_{label}"), |b| {
                        b.iter(|| codec.encode_server_bytes(black_box(frame)))
                    });
                    group.bench_function(format!("decode_{label}"), |b| {
                        b.iter(|| codec.decode_server(black_box(&bytes)))
                    });
                }
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench_protocol);
criterion_main!(benches);
