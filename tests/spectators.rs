//! Spectators watching a live race over real sockets: a consistent snapshot, then updates
//! that keep a local table equal to the server's standings; a spectator that never reads
//! does not hold the others back.

mod common;

use common::{dense_gpx, gpx, live_race, live_race_on, racer_phone, token, LiveTable, TestServer};
use futures_util::SinkExt;
use peloton::auth::Role;
use peloton::geo::{Course, CourseIndex};
use peloton::net::client::Client;
use peloton::net::codec::Codec;
use peloton::net::protocol::{Push, Reply, Request, StandingView, WireFix};
use std::collections::BTreeMap;
use std::time::Duration;

const RIDE: &str = "out-and-back-ljubljana.gpx";
const T0: i64 = 1_796_115_600_000;

fn fixes(index: &CourseIndex, offset_m: f64, from: f64, to: f64) -> Vec<WireFix> {
    let mut out = Vec::new();
    let mut d = from;
    while d < to {
        out.push(common::fix_at(index, d + offset_m, T0 + (d * 125.0) as i64));
        d += 25.0;
    }
    out
}

/// Applies updates to a local table the way a client does: full tables replace it, deltas
/// replace rows by bib.
fn apply(table: &mut BTreeMap<u32, StandingView>, full: bool, rows: Vec<StandingView>) {
    if full {
        table.clear();
    }
    for row in rows {
        table.insert(row.bib, row);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spectators_get_a_snapshot_then_updates_that_track_the_standings() {
    let server = TestServer::start_with(|c| c.race.tick_ms = 50).await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    let race_id = live_race(&mut admin, RIDE, T0, 3).await;

    // A spectator that subscribes and then never reads a byte.
    let (mut stalled, _) = {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("{}/ws", server.url).into_client_request().unwrap();
        request.headers_mut().insert(
            "Authorization",
            format!("Bearer {}", server.token(Role::Spectator, "idle"))
                .parse()
                .unwrap(),
        );
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "peloton.v1.bin".parse().unwrap());
        tokio_tungstenite::connect_async(request).await.unwrap()
    };
    let subscribe = Codec::Binary
        .encode_client(&peloton::net::protocol::ClientFrame {
            id: 1,
            request: Request::RaceSubscribe {
                race_id: race_id.clone(),
                since_seq: None,
            },
        })
        .unwrap();
    stalled.send(subscribe).await.unwrap();

    let mut fan = Client::connect(
        &server.url,
        &token(&server.keys, Role::Spectator, "fan", Some(&race_id), 600),
        Codec::Json,
    )
    .await
    .unwrap();
    let Reply::Subscribed(snapshot) = fan
        .request(Request::RaceSubscribe {
            race_id: race_id.clone(),
            since_seq: None,
        })
        .await
        .unwrap()
    else {
        panic!("subscribed")
    };
    assert_eq!(snapshot.race.id, race_id);
    assert!(snapshot.course.len() > 100);
    assert_eq!(snapshot.racers.len(), 3);
    assert!(
        snapshot.racers.iter().all(|r| r.email.is_none()),
        "no contact details for spectators"
    );
    let mut live = LiveTable::from_snapshot(snapshot);

    let course = Course::from_gpx(gpx(RIDE).as_bytes(), 200_000).unwrap();
    let index = CourseIndex::from(&course);
    let mut phones = Vec::new();
    for bib in 1..=3u32 {
        phones.push(racer_phone(&server.url, &server.keys, &race_id, bib).await);
    }
    let mut spectators_seen = 0;
    for step in 0..4 {
        let (from, to) = (step as f64 * 500.0, (step + 1) as f64 * 500.0);
        for (i, phone) in phones.iter_mut().enumerate() {
            // Racer 3 rides ahead, racer 1 behind.
            let offset = 100.0 * i as f64;
            phone
                .request(Request::Fixes {
                    fixes: fixes(&index, offset, from, to),
                })
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let Reply::Standings(expected) = admin
        .request(Request::RaceStandings {
            race_id: race_id.clone(),
        })
        .await
        .unwrap()
    else {
        panic!("standings")
    };
    // Drain updates until the local table matches the server's (or time runs out).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sorted_by_bib(&live.rows.values().copied().collect::<Vec<_>>())
        != sorted_by_bib(&expected)
    {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(
            !remaining.is_zero(),
            "table {:?} never matched {expected:?}",
            live.rows
        );
        if let Err(other) = live.apply(fan.next_push(remaining).await.unwrap()) {
            panic!("unexpected push {other:?}");
        }
        spectators_seen = spectators_seen.max(live.spectators);
    }
    let mut ranked: Vec<_> = live.rows.values().copied().collect();
    ranked.sort_by_key(|s| s.rank);
    assert_eq!(
        ranked.iter().map(|s| s.bib).collect::<Vec<_>>(),
        vec![3, 2, 1]
    );
    assert_eq!(
        spectators_seen, 2,
        "the update counts both subscribed spectators"
    );
    drop(stalled);
    server.stop().await;
}

/// Rows by bib, for comparing tables read at different instants: without gaps, which grow
/// with the clock for racers on the course (they are for the instant the table is read).
fn sorted_by_bib(rows: &[StandingView]) -> Vec<StandingView> {
    let mut rows: Vec<StandingView> = rows
        .iter()
        .map(|s| StandingView { gap_ms: None, ..*s })
        .collect();
    rows.sort_by_key(|s| s.bib);
    rows
}

/// Sends one batch of fixes for each phone, racer `i` `100·i` metres ahead.
async fn ride_step(phones: &mut [Client], index: &CourseIndex, step: usize) {
    let (from, to) = (step as f64 * 100.0, (step + 1) as f64 * 100.0);
    for (i, phone) in phones.iter_mut().enumerate() {
        phone
            .request(Request::Fixes {
                fixes: fixes(index, 100.0 * i as f64, from, to),
            })
            .await
            .unwrap();
    }
}

async fn phones(server: &TestServer, race_id: &str, n: u32) -> Vec<Client> {
    let mut out = Vec::new();
    for bib in 1..=n {
        out.push(racer_phone(&server.url, &server.keys, race_id, bib).await);
    }
    out
}

async fn server_standings(admin: &mut Client, race_id: &str) -> Vec<StandingView> {
    let Reply::Standings(rows) = admin
        .request(Request::RaceStandings {
            race_id: race_id.into(),
        })
        .await
        .unwrap()
    else {
        panic!("standings")
    };
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_spectator_gets_exactly_the_updates_it_missed_or_a_snapshot() {
    let server = TestServer::start_with(|c| c.race.tick_ms = 20).await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    let race_id = live_race(&mut admin, RIDE, T0, 3).await;
    let course = Course::from_gpx(gpx(RIDE).as_bytes(), 200_000).unwrap();
    let index = CourseIndex::from(&course);
    let mut riders = phones(&server, &race_id, 3).await;
    let spectator = token(&server.keys, Role::Spectator, "fan", Some(&race_id), 600);

    // First visit: a snapshot, then live updates into a local table.
    let mut fan = Client::connect(&server.url, &spectator, Codec::Json)
        .await
        .unwrap();
    let Reply::Subscribed(first) = fan
        .request(Request::RaceSubscribe {
            race_id: race_id.clone(),
            since_seq: None,
        })
        .await
        .unwrap()
    else {
        panic!("subscribed")
    };
    assert!(!first.resumed && first.course.len() > 100);
    let mut live = LiveTable::from_snapshot(first);
    ride_step(&mut riders, &index, 0).await;
    while let Ok(push) = fan.next_push(Duration::from_millis(300)).await {
        if let Err(other) = live.apply(push) {
            panic!("unexpected push {other:?}");
        }
    }
    fan.close().await;
    let (mut table, mut seq) = (live.rows, live.seq);

    // While it is away the race moves on.
    for step in 1..4 {
        ride_step(&mut riders, &index, step).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let expected = server_standings(&mut admin, &race_id).await;

    // Back with the last sequence number it saw: no course, no table, just what it missed,
    // in order, as deltas.
    let mut fan = Client::connect(&server.url, &spectator, Codec::Json)
        .await
        .unwrap();
    let Reply::Subscribed(back) = fan
        .request(Request::RaceSubscribe {
            race_id: race_id.clone(),
            since_seq: Some(seq),
        })
        .await
        .unwrap()
    else {
        panic!("subscribed")
    };
    assert!(back.resumed, "the race still holds what it missed");
    assert!(back.course.is_empty() && back.standings.is_empty());
    assert!(back.seq > seq, "it missed something");
    while seq < back.seq {
        let Push::RaceUpdate(update) = fan.next_push(Duration::from_secs(5)).await.unwrap() else {
            panic!("expected a race update")
        };
        assert_eq!(
            update.seq,
            seq + 1,
            "missed updates come in order, none skipped"
        );
        assert!(!update.full);
        seq = update.seq;
        apply(&mut table, update.full, update.standings);
    }
    assert_eq!(
        sorted_by_bib(&table.values().copied().collect::<Vec<_>>()),
        sorted_by_bib(&expected),
        "the missed deltas bring the old table up to date"
    );
    fan.close().await;

    // A sequence number the race no longer holds (or never issued) gets a full snapshot.
    for stale in [1, u64::MAX] {
        let mut late = Client::connect(&server.url, &spectator, Codec::Binary)
            .await
            .unwrap();
        let Reply::Subscribed(snapshot) = late
            .request(Request::RaceSubscribe {
                race_id: race_id.clone(),
                since_seq: Some(stale),
            })
            .await
            .unwrap()
        else {
            panic!("subscribed")
        };
        assert!(!snapshot.resumed && snapshot.course.len() > 100);
        assert_eq!(sorted_by_bib(&snapshot.standings), sorted_by_bib(&expected));
        late.close().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_token_watches_its_race_only_and_only_an_admin_mints_one() {
    let server = TestServer::start().await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    let race_id = live_race(&mut admin, RIDE, T0, 2).await;
    let other = live_race(&mut admin, RIDE, T0, 1).await;
    let Reply::Shared {
        race_id: shared,
        token: share,
        expires_at_ms,
    } = admin
        .request(Request::RaceShare {
            race_id: race_id.clone(),
            ttl_secs: 6 * 3600,
        })
        .await
        .unwrap()
    else {
        panic!("shared")
    };
    assert_eq!(shared, race_id);
    let in_six_hours = peloton::time::now_ms() + 6 * 3_600_000;
    assert!((expires_at_ms - in_six_hours).abs() < 60_000);

    let mut viewer = Client::connect(&server.url, &share, Codec::Json)
        .await
        .unwrap();
    let Reply::Subscribed(snapshot) = viewer
        .request(Request::RaceSubscribe {
            race_id: race_id.clone(),
            since_seq: None,
        })
        .await
        .unwrap()
    else {
        panic!("subscribed")
    };
    assert_eq!(snapshot.racers.len(), 2);
    // Each (asked by the admin?, what, the error code expected).
    let share = |race_id: &str, ttl_secs: u64| Request::RaceShare {
        race_id: race_id.into(),
        ttl_secs,
    };
    let standings_of_other = Request::RaceStandings {
        race_id: other.clone(),
    };
    let refusals = [
        (false, standings_of_other, "forbidden"),
        (false, share(&race_id, 60), "forbidden"),
        (true, share(&race_id, 0), "invalid_argument"),
        (true, share("no-such-race", 60), "not_found"),
    ];
    for (by_admin, request, code) in refusals {
        let client = if by_admin { &mut admin } else { &mut viewer };
        match client.request(request).await {
            Err(peloton::net::client::ClientError::Server(e)) => assert_eq!(e.code.as_str(), code),
            other => panic!("expected {code}, got {other:?}"),
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spectator_too_slow_for_too_long_is_closed_with_4008() {
    let server = TestServer::start_with(|c| {
        c.race.tick_ms = 20;
        c.ws.slow_consumer_close_ms = 300;
        c.ws.write_timeout_ms = 60_000;
        c.ws.max_write_buffer_bytes = 64 << 20;
    })
    .await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    // The ride with 150 points per leg: a JSON snapshot of about 6 MB, more than the
    // kernel's socket buffers hold (4 MB at most here), so the server's writes to a
    // spectator that does not read really stall.
    let dense = dense_gpx(RIDE, 150);
    let racers = 4;
    let race_id = live_race_on(&mut admin, "Dense", dense.clone(), T0, racers).await;
    let course = Course::from_gpx(dense.as_bytes(), 200_000).unwrap();
    let index = CourseIndex::from(&course);
    let mut riders = phones(&server, &race_id, racers).await;

    // A JSON spectator on a socket with a small receive buffer that never reads its
    // snapshot: the server's writes stall, so every update must be skipped.
    let addr = server.url.trim_start_matches("ws://").to_owned();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let stream = socket.connect(addr.parse().unwrap()).await.unwrap();
    let request = {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("{}/ws", server.url).into_client_request().unwrap();
        let bearer = format!("Bearer {}", server.token(Role::Spectator, "slow"));
        request
            .headers_mut()
            .insert("Authorization", bearer.parse().unwrap());
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "peloton.v1.json".parse().unwrap());
        request
    };
    let (mut slow, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    let subscribe = Codec::Json
        .encode_client(&peloton::net::protocol::ClientFrame {
            id: 1,
            request: Request::RaceSubscribe {
                race_id: race_id.clone(),
                since_seq: None,
            },
        })
        .unwrap();
    slow.send(subscribe).await.unwrap();

    // Keep the race busy for a while without reading.
    for step in 0..30 {
        ride_step(&mut riders, &index, step).await;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    // Now read: whatever was buffered, then the close frame.
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let code = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, slow.next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame))))) => {
                break u16::from(frame.code)
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, 4008, "too slow for too long");
    server.stop().await;
}

/// Reads `fan`'s live updates into `table` until it has applied `seq` (panics if it goes
/// past it or stays silent for 10 s).
async fn read_until(fan: &mut Client, table: &mut LiveTable, seq: u64) {
    while table.seq < seq {
        let push = fan.next_push(Duration::from_secs(10)).await.unwrap();
        if let Err(other) = table.apply(push) {
            panic!("unexpected push {other:?}");
        }
    }
    assert_eq!(
        table.seq, seq,
        "a spectator that keeps up passes every tick"
    );
}

/// A spectator that misses ticks gets one frame that brings it up to date: a
/// `race_catch_up` with the rows that changed while it was away, as long as it missed at
/// most `race.catch_up_ticks` ticks, else the full table, and either way its table is then
/// row for row the table of a spectator that missed nothing. The ticks are missed the
/// deterministic way: the socket's token passed `exp`, so the server sent it nothing until
/// the refresh, through the same path a socket that could not take its bytes takes (the
/// writer comes back to the race's latest tick with the last one it sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spectator_that_missed_ticks_gets_one_catch_up_or_beyond_the_window_the_full_table() {
    let server = TestServer::start_with(|c| {
        c.race.tick_ms = 40;
        c.race.catch_up_ticks = 8;
    })
    .await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    let race_id = live_race(&mut admin, RIDE, T0, 3).await;
    let course = Course::from_gpx(gpx(RIDE).as_bytes(), 200_000).unwrap();
    let index = CourseIndex::from(&course);
    let mut riders = phones(&server, &race_id, 3).await;
    let mut step = 0;
    for (missed_steps, codec) in [(3, Codec::Json), (16, Codec::Binary)] {
        let subscribe = |since_seq| Request::RaceSubscribe {
            race_id: race_id.clone(),
            since_seq,
        };
        let long = token(&server.keys, Role::Spectator, "steady", Some(&race_id), 600);
        let mut steady = Client::connect(&server.url, &long, codec).await.unwrap();
        let Reply::Subscribed(snapshot) = steady.request(subscribe(None)).await.unwrap() else {
            panic!("subscribed")
        };
        let mut steady_table = LiveTable::from_snapshot(snapshot);
        // Whole seconds: the token's `exp` is the next second but one.
        let short = token(&server.keys, Role::Spectator, "away", Some(&race_id), 2);
        let exp_ms = (peloton::time::now_ms() / 1000 + 2) * 1000;
        let mut away = Client::connect(&server.url, &short, codec).await.unwrap();
        let Reply::Subscribed(snapshot) = away.request(subscribe(None)).await.unwrap() else {
            panic!("subscribed")
        };
        let mut away_table = LiveTable::from_snapshot(snapshot);
        ride_step(&mut riders, &index, step).await;
        step += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Everything until `exp` arrives (updates may still be in flight at `exp`).
        while peloton::time::now_ms() < exp_ms + 300 {
            if let Ok(push) = away.next_push(Duration::from_millis(50)).await {
                if let Err(other) = away_table.apply(push) {
                    panic!("unexpected push {other:?}");
                }
            }
        }
        let away_since = away_table.seq;
        // The race moves on, one tick or more per step, while `away` is sent nothing.
        for _ in 0..missed_steps {
            ride_step(&mut riders, &index, step).await;
            step += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            away.next_push(Duration::from_millis(100)).await.is_err(),
            "nothing is pushed after exp"
        );
        let Reply::TokenRefreshed { .. } = away
            .request(Request::RefreshToken {
                token: token(&server.keys, Role::Spectator, "away", Some(&race_id), 600),
            })
            .await
            .unwrap()
        else {
            panic!("refreshed")
        };
        // One frame brings it to the race's latest tick.
        let push = away.next_push(Duration::from_secs(5)).await.unwrap();
        let caught_up_to = match &push {
            Push::RaceCatchUp(up) => {
                assert!(
                    missed_steps < 8,
                    "{missed_steps} steps are beyond the window"
                );
                assert_eq!(up.since_seq, away_since);
                up.seq
            }
            Push::RaceUpdate(update) => {
                assert!(
                    missed_steps >= 8,
                    "{missed_steps} steps fit the window: {update:?}"
                );
                assert!(update.full, "a delta after missed ticks: {update:?}");
                assert!(update.seq > away_since + 8);
                update.seq
            }
            other => panic!("unexpected push {other:?}"),
        };
        away_table.apply(push).unwrap();
        read_until(&mut steady, &mut steady_table, caught_up_to).await;
        assert_eq!(
            away_table.rows, steady_table.rows,
            "after {missed_steps} steps away, the same table row by row"
        );
        assert_eq!(away_table.catch_ups, usize::from(missed_steps < 8));
        steady.close().await;
        away.close().await;
    }
    server.stop().await;
}
