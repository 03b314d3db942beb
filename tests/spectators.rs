//! Spectators watching a live race over real sockets: a consistent snapshot, then updates
//! that keep a local table equal to the server's standings; a spectator that never reads
//! does not hold the others back.

mod common;

use common::{gpx, live_race, token, TestServer};
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
        let p = index.position_at(d + offset_m);
        out.push(WireFix {
            at_ms: T0 + (d * 125.0) as i64,
            lat_e7: p.lat_e7,
            lon_e7: p.lon_e7,
            accuracy_dm: 50,
            speed_cmps: None,
            elevation_dm: None,
        });
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
    let mut table: BTreeMap<u32, StandingView> =
        snapshot.standings.into_iter().map(|s| (s.bib, s)).collect();
    let mut seq = snapshot.seq;

    let course = Course::from_gpx(gpx(RIDE).as_bytes(), 200_000).unwrap();
    let index = CourseIndex::new(&course);
    let mut phones = Vec::new();
    for bib in 1..=3u32 {
        phones.push(
            Client::connect(
                &server.url,
                &token(
                    &server.keys,
                    Role::Racer,
                    &bib.to_string(),
                    Some(&race_id),
                    600,
                ),
                Codec::Binary,
            )
            .await
            .unwrap(),
        );
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
    while table.values().copied().collect::<Vec<_>>() != sorted_by_bib(&expected) {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(
            !remaining.is_zero(),
            "table {table:?} never matched {expected:?}"
        );
        match fan.next_push(remaining).await.unwrap() {
            Push::RaceUpdate(update) => {
                assert!(
                    update.full || update.seq == seq + 1,
                    "a delta never skips a sequence number"
                );
                seq = update.seq;
                spectators_seen = spectators_seen.max(update.spectators);
                apply(&mut table, update.full, update.standings);
            }
            other => panic!("unexpected push {other:?}"),
        }
    }
    let mut ranked: Vec<_> = table.values().copied().collect();
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

fn sorted_by_bib(rows: &[StandingView]) -> Vec<StandingView> {
    let mut rows = rows.to_vec();
    rows.sort_by_key(|s| s.bib);
    rows
}
