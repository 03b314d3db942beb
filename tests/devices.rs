//! Racers tracked by the apps they already have: the OsmAnd protocol (Traccar Client,
//! OsmAnd) and OwnTracks' HTTP mode, over real HTTP on the server's one port, beside a racer
//! on Peloton's own WebSocket, in one race with one standings table. Device ids are bound by
//! an admin over the protocol; unknown, revoked and guessed ids, malformed values, resends
//! and a `kill -9` right after an answer are each checked against what the server promises.

mod common;

use common::{gpx, keys_for, live_race_on, racer_phone, standings, token, ChildServer, TestServer};
use peloton::auth::Role;
use peloton::geo::{Course, CourseIndex};
use peloton::net::client::Client;
use peloton::net::codec::Codec;
use peloton::net::protocol::{DeviceView, Reply, Request, StandingView};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RIDE: &str = "loop-celje-resevno-2020-09-20.gpx";
/// The race's start, in the past so it is live at once.
const T0: i64 = 1_796_115_600_000;

/// One HTTP/1.1 request over a real socket: (status, head lower-cased, body).
async fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("the server answers in time")
        .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// The course position `d` metres along, in degrees.
fn at(index: &CourseIndex, d: f64) -> (f64, f64) {
    let p = index.position_at(d);
    (p.lat(), p.lon())
}

/// Device time of a fix `d` metres along at 8 m/s from the start.
fn time_ms(d: f64) -> i64 {
    T0 + (d * 125.0) as i64
}

fn osmand_query(id: &str, index: &CourseIndex, d: f64) -> String {
    let (lat, lon) = at(index, d);
    format!(
        "id={id}&lat={lat}&lon={lon}&timestamp={}&speed=15.5&bearing=90&altitude=250&accuracy=5&batt=80",
        time_ms(d) / 1000
    )
}

fn owntracks_location(index: &CourseIndex, d: f64) -> String {
    let (lat, lon) = at(index, d);
    format!(
        r#"{{"_type":"location","lat":{lat},"lon":{lon},"tst":{},"acc":5,"alt":250,"vel":29,"batt":80,"tid":"r2","topic":"owntracks/r2/phone"}}"#,
        time_ms(d) / 1000
    )
}

fn traccar_json(id: &str, index: &CourseIndex, d: f64) -> String {
    let (lat, lon) = at(index, d);
    let secs = time_ms(d) / 1000;
    // Traccar Client's body: ISO 8601 time, coordinates under location.coords.
    let stamp = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap()),
    );
    format!(
        r#"{{"device_id":"{id}","location":{{"timestamp":"{stamp}","coords":{{"latitude":{lat},"longitude":{lon},"accuracy":5,"speed":8,"heading":90,"altitude":250}},"battery":{{"level":0.8}}}}}}"#
    )
}

fn progress_of(rows: &[StandingView], bib: u32) -> u32 {
    rows.iter()
        .find(|r| r.bib == bib)
        .map(|r| r.progress_dm)
        .unwrap_or(0)
}

async fn bind(admin: &mut Client, race: &str, bib: u32, device_id: Option<&str>) -> DeviceView {
    let reply = admin
        .request(Request::RaceDeviceBind {
            race_id: race.into(),
            bib,
            device_id: device_id.map(str::to_owned),
        })
        .await
        .unwrap();
    let Reply::Devices { mut devices, .. } = reply else {
        panic!("devices")
    };
    devices.pop().expect("the binding")
}

fn course() -> CourseIndex {
    let course = Course::from_gpx(gpx(RIDE).as_bytes(), 200_000).unwrap();
    CourseIndex::from(&course)
}

#[tokio::test]
async fn three_apps_and_a_socket_ride_one_race_with_one_standings_table() {
    let server = TestServer::start().await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    let race = live_race_on(&mut admin, "Mixed devices", gpx(RIDE), T0, 4).await;
    let index = course();
    let addr = server.addr;

    // Bib 1: Traccar Client / OsmAnd with a generated id; bib 2: OwnTracks with the id the
    // admin typed; bib 3: Traccar Client's JSON body; bib 4: Peloton's own socket.
    let generated = bind(&mut admin, &race, 1, None).await;
    assert_eq!(generated.device_id.len(), 16, "{generated:?}");
    assert!(generated
        .device_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric()));
    let owntracks = bind(&mut admin, &race, 2, Some("r2-owntracks")).await;
    let json_id = bind(&mut admin, &race, 3, Some("traccar-218604")).await;
    let Ok(Reply::Devices { devices, .. }) = admin
        .request(Request::RaceDevices {
            race_id: race.clone(),
        })
        .await
    else {
        panic!("devices")
    };
    assert_eq!(devices.len(), 3);

    // The OsmAnd protocol three ways: GET at /, GET at /osmand, POST form at /osmand, and
    // older Traccar Clients' POST with the fields in the URL and no body.
    let id = &generated.device_id;
    for (i, d) in [100.0, 200.0, 300.0, 400.0].into_iter().enumerate() {
        let query = osmand_query(id, &index, d);
        let (status, _, body) = match i {
            0 => http(addr, "GET", &format!("/?{query}"), &[], "").await,
            // OsmAnd's own template (README): accuracy as hdop.
            1 => {
                let (lat, lon) = at(&index, d);
                let template = format!(
                    "id={id}&lat={lat}&lon={lon}&timestamp={}&hdop=5&altitude=250&speed=15&bearing=90",
                    time_ms(d) / 1000
                );
                http(addr, "GET", &format!("/osmand?{template}"), &[], "").await
            }
            2 => {
                let form = [("Content-Type", "application/x-www-form-urlencoded")];
                http(addr, "POST", "/osmand", &form, &query).await
            }
            _ => http(addr, "POST", &format!("/?{query}"), &[], "").await,
        };
        assert_eq!(status, 200, "fix {i}: {body}");
        assert_eq!(body, "", "Traccar reads a body as a command: none");
    }
    for d in [150.0, 250.0] {
        let (status, _, body) = http(
            addr,
            "POST",
            "/owntracks",
            &[
                ("Content-Type", "application/json"),
                ("X-Limit-U", "r2"),
                ("X-Limit-D", "r2-owntracks"),
            ],
            &owntracks_location(&index, d),
        )
        .await;
        assert_eq!(
            (status, body.as_str()),
            (200, "[]"),
            "OwnTracks wants a JSON array"
        );
    }
    // OwnTracks' other messages (here its last will) are taken and ignored.
    let (status, _, body) = http(
        addr,
        "POST",
        "/owntracks",
        &[
            ("Content-Type", "application/json"),
            ("X-Limit-D", "r2-owntracks"),
        ],
        r#"{"_type":"lwt","tst":1796115700}"#,
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "[]"));
    let (status, _, body) = http(
        addr,
        "POST",
        "/",
        &[("Content-Type", "application/json")],
        &traccar_json(&json_id.device_id, &index, 350.0),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut phone = racer_phone(&server.url, &server.keys, &race, 4).await;
    let fix = |d: f64| common::fix_at(&index, d, time_ms(d));
    phone
        .request(Request::Fixes {
            fixes: vec![fix(120.0), fix(220.0)],
        })
        .await
        .unwrap();

    let rows = standings(&mut admin, &race).await;
    let order: Vec<u32> = rows.iter().map(|r| r.bib).collect();
    assert_eq!(
        order,
        vec![1, 3, 2, 4],
        "one table, furthest first: {rows:?}"
    );
    for (bib, metres) in [(1, 400.0), (2, 250.0), (3, 350.0), (4, 220.0)] {
        let got = f64::from(progress_of(&rows, bib)) / 10.0;
        assert!(
            (got - metres).abs() < 30.0,
            "bib {bib}: {got} m, not ~{metres} m"
        );
    }
    assert_eq!(owntracks.bib, 2);

    // A resend (the app had no answer) is answered 200 and changes nothing.
    let before = standings(&mut admin, &race).await;
    let (status, _, _) = http(
        addr,
        "GET",
        &format!("/?{}", osmand_query(id, &index, 300.0)),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(standings(&mut admin, &race).await, before);

    // Unknown ids: 403, which the apps treat as "keep it and retry". Malformed values: 400
    // naming the field.
    let (status, _, body) = http(
        addr,
        "GET",
        &format!("/?{}", osmand_query("nobody-123", &index, 500.0)),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not_found"), "{body}");
    for (field, bad) in [
        ("lat", "lat=91"),
        ("lon", "lon=east"),
        ("timestamp", "timestamp=yesterday"),
        ("speed", "speed=NaN"),
        ("accuracy", "accuracy=-"),
        ("id", "id=has%20space"),
    ] {
        let query = format!("{}&{bad}", osmand_query(id, &index, 500.0));
        let (status, _, body) = http(addr, "GET", &format!("/osmand?{query}"), &[], "").await;
        assert_eq!(status, 400, "{field}: {body}");
        assert!(body.contains(field), "{field}: {body}");
    }
    let (status, _, _) = http(
        addr,
        "POST",
        "/owntracks",
        &[
            ("Content-Type", "application/json"),
            ("X-Limit-D", "r2-owntracks"),
        ],
        "{not json",
    )
    .await;
    assert_eq!(status, 400);

    // Revoked at once: the old id is unknown, the rest of the race goes on.
    let Ok(Reply::Devices { devices, .. }) = admin
        .request(Request::RaceDeviceRevoke {
            race_id: race.clone(),
            bib: 1,
        })
        .await
    else {
        panic!("revoke")
    };
    assert!(devices.is_empty());
    let (status, _, _) = http(
        addr,
        "GET",
        &format!("/?{}", osmand_query(id, &index, 600.0)),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 403);

    // Spectators never see device ids: only admins may list them.
    let mut spectator = server.client(Role::Spectator, Codec::Json).await;
    let refused = spectator
        .request(Request::RaceDevices {
            race_id: race.clone(),
        })
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("forbidden"), "{refused}");
}

#[tokio::test]
async fn a_fix_for_a_race_that_is_not_live_is_dropped_not_queued() {
    let server = TestServer::start().await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    // Scheduled a day from now.
    let later = peloton::time::now_ms() + 86_400_000;
    let create = peloton::net::protocol::RaceCreate {
        name: "Tomorrow".into(),
        course_gpx: gpx(RIDE),
        start_at_ms: later,
        cutoff_at_ms: None,
    };
    let Ok(Reply::Race(race)) = admin.request(Request::RaceCreate(create)).await else {
        panic!("create")
    };
    common::register(
        &mut admin,
        &race.id,
        vec![peloton::net::protocol::RacerView {
            bib: 9,
            name: "Early bird".into(),
            team: None,
            email: None,
        }],
    )
    .await;
    let device = bind(&mut admin, &race.id, 9, Some("early-bird-phone")).await;
    let query = osmand_query(&device.device_id, &course(), 10.0);
    let (status, head, body) = http(server.addr, "GET", &format!("/?{query}"), &[], "").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        head.contains("x-peloton-dropped: race") && head.contains("scheduled"),
        "{head}"
    );
    // Binding refuses what the race does not have.
    let refused = admin
        .request(Request::RaceDeviceBind {
            race_id: race.id.clone(),
            bib: 10,
            device_id: None,
        })
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("not registered"), "{refused}");
}

#[tokio::test]
async fn guessing_device_ids_is_rate_limited_per_address() {
    let server = TestServer::start_with(|c| {
        c.ws.addr_limits_exempt_loopback = false;
        c.web.device_misses_per_addr_per_min = 3;
    })
    .await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    let race = live_race_on(&mut admin, "Guessed", gpx(RIDE), T0, 1).await;
    let index = course();
    let real = bind(&mut admin, &race, 1, None).await;
    for guess in 0..3 {
        let query = osmand_query(&format!("guess-{guess:04}"), &index, 100.0);
        let (status, _, _) = http(server.addr, "GET", &format!("/?{query}"), &[], "").await;
        assert_eq!(status, 403, "guess {guess}");
    }
    // Over the budget, even the right id waits: the answer must not tell a guesser which
    // guess was right. The app keeps the fix and resends after Retry-After.
    let query = osmand_query(&real.device_id, &index, 100.0);
    let (status, head, _) = http(server.addr, "GET", &format!("/?{query}"), &[], "").await;
    assert_eq!(status, 429);
    assert!(head.contains("retry-after:"), "{head}");
}

#[tokio::test]
async fn an_answered_fix_survives_kill_9_and_the_id_still_works_after() {
    let data = tempfile::tempdir().unwrap();
    let server = ChildServer::start(data.path(), &[]);
    let keys = keys_for(data.path());
    let admin_token = token(&keys, Role::Admin, "ops", None, 600);
    let mut admin = Client::connect(&server.url, &admin_token, Codec::Binary)
        .await
        .unwrap();
    let race = live_race_on(&mut admin, "Crash", gpx(RIDE), T0, 1).await;
    let index = course();
    let device = bind(&mut admin, &race, 1, Some("crash-test-phone")).await;
    let (status, _, _) = http(
        server.addr,
        "GET",
        &format!("/osmand?{}", osmand_query(&device.device_id, &index, 500.0)),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200);
    let before = progress_of(&standings(&mut admin, &race).await, 1);
    assert!(before > 4000, "{before} dm");
    admin.close().await;
    let addr = server.addr.to_string();
    server.kill9();

    let server = ChildServer::start_at(data.path(), &addr, &[]);
    let mut admin = Client::connect(&server.url, &admin_token, Codec::Binary)
        .await
        .unwrap();
    assert_eq!(
        progress_of(&standings(&mut admin, &race).await, 1),
        before,
        "the answered fix was durable"
    );
    // The binding came back with the race: the same id reports on.
    let (status, _, body) = http(
        server.addr,
        "GET",
        &format!("/osmand?{}", osmand_query(&device.device_id, &index, 800.0)),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(progress_of(&standings(&mut admin, &race).await, 1) > before);
    server.terminate();
}

/// Every request line of Traccar's own OsmAnd decoder test, sent to the server as the apps
/// send them, with its device ids bound: each gets the status its decoding says (a 200 for
/// what decodes, stored or dropped as too old for the race; a 400 naming the field for what
/// does not).
#[tokio::test]
async fn traccars_own_request_lines_get_the_status_their_decoding_says() {
    let server = TestServer::start().await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    let data = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crates/protocol/tests/data/traccar/osmand_requests.txt"
    ))
    .unwrap();
    let lines: Vec<(&str, &str)> = data
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut fields = l.split(' ');
            let (_traccar, ours, target) = (fields.next(), fields.next(), fields.next());
            (ours.unwrap().trim_start_matches("ours="), target.unwrap())
        })
        .collect();
    assert!(lines.len() >= 10, "the data file holds Traccar's lines");
    let ids = [
        "123456",
        "902064",
        "353861053849681",
        "861001000719969",
        "123456789012345",
    ];
    let race = live_race_on(&mut admin, "Traccar lines", gpx(RIDE), T0, ids.len() as u32).await;
    for (bib, id) in ids.iter().enumerate() {
        bind(&mut admin, &race, bib as u32 + 1, Some(id)).await;
    }
    for (ours, target) in lines {
        let (status, head, body) = http(server.addr, "GET", target, &[], "").await;
        if ours == "accept" {
            assert_eq!(status, 200, "{target}: {body}");
        } else {
            let field = ours.rsplit(':').next().unwrap();
            assert_eq!(status, 400, "{target}: {head}");
            assert!(body.contains(field), "{target}: {body}");
        }
    }
}
