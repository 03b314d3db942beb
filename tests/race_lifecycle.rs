//! The race lifecycle end to end over real WebSockets, in both subprotocols, with auth.

mod common;

use common::{gpx, token, TestServer};
use peloton::auth::Role;
use peloton::error::ErrorCode;
use peloton::net::client::{Client, ClientError};
use peloton::net::codec::Codec;
use peloton::net::protocol::{RaceCreate, RaceStateView, RaceUpdate, RaceView, Reply, Request};

// Far ahead, so the clock never starts these races by itself (`race.start_mode` auto).
const START: i64 = 4_102_477_200_000;

fn create(name: &str, ride: &str) -> Request {
    Request::RaceCreate(RaceCreate {
        name: name.into(),
        course_gpx: gpx(ride),
        start_at_ms: START,
        cutoff_at_ms: None,
    })
}

fn race(reply: Reply) -> RaceView {
    match reply {
        Reply::Race(r) => r,
        other => panic!("expected a race, got {other:?}"),
    }
}

fn code(result: Result<Reply, ClientError>) -> ErrorCode {
    result
        .expect_err("should be refused")
        .code()
        .expect("typed server error")
}

async fn lifecycle(codec: Codec) {
    let server = TestServer::start().await;
    let mut admin = server.client(Role::Admin, codec).await;
    let created = race(
        admin
            .request(create("Tour de Test", "out-and-back-ljubljana.gpx"))
            .await
            .unwrap(),
    );
    assert_eq!(created.state, RaceStateView::Scheduled);
    assert!(
        created.course_points > 100 && created.course_length_m > 1000.0,
        "{created:?}"
    );

    let updated = race(
        admin
            .request(Request::RaceUpdate(RaceUpdate {
                id: created.id.clone(),
                name: Some("Tour de Test 2".into()),
                course_gpx: None,
                start_at_ms: None,
                cutoff_at_ms: Some(START + 3_600_000),
                clear_cutoff: false,
            }))
            .await
            .unwrap(),
    );
    assert_eq!(
        (updated.name.as_str(), updated.cutoff_at_ms),
        ("Tour de Test 2", Some(START + 3_600_000))
    );

    let Reply::Races(list) = admin.request(Request::RaceList).await.unwrap() else {
        panic!("list")
    };
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, created.id);

    let live = race(
        admin
            .request(Request::RaceStart {
                id: created.id.clone(),
            })
            .await
            .unwrap(),
    );
    assert_eq!(live.state, RaceStateView::Live);
    assert!(live.started_at_ms.is_some());
    assert_eq!(
        code(
            admin
                .request(Request::RaceStart {
                    id: created.id.clone()
                })
                .await
        ),
        ErrorCode::InvalidTransition
    );
    let update_live = Request::RaceUpdate(RaceUpdate {
        id: created.id.clone(),
        name: Some("late".into()),
        course_gpx: None,
        start_at_ms: None,
        cutoff_at_ms: None,
        clear_cutoff: false,
    });
    assert_eq!(
        code(admin.request(update_live).await),
        ErrorCode::InvalidTransition
    );
    let finished = race(
        admin
            .request(Request::RaceFinish {
                id: created.id.clone(),
            })
            .await
            .unwrap(),
    );
    assert_eq!(finished.state, RaceStateView::Finished);
    assert_eq!(
        code(
            admin
                .request(Request::RaceCancel {
                    id: created.id.clone(),
                    reason: None
                })
                .await
        ),
        ErrorCode::InvalidTransition
    );

    let other = race(
        admin
            .request(create("Loop", "loop-celje-resevno-2020-09-20.gpx"))
            .await
            .unwrap(),
    );
    let cancelled = race(
        admin
            .request(Request::RaceCancel {
                id: other.id.clone(),
                reason: Some("storm".into()),
            })
            .await
            .unwrap(),
    );
    assert_eq!(
        (cancelled.state, cancelled.cancel_reason.as_deref()),
        (RaceStateView::Cancelled, Some("storm"))
    );

    let shown = race(
        admin
            .request(Request::RaceGet {
                id: created.id.clone(),
            })
            .await
            .unwrap(),
    );
    assert_eq!(shown, finished);
    assert_eq!(
        code(admin.request(Request::RaceGet { id: "nope".into() }).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(
            admin
                .request(Request::RaceStart {
                    id: "bad/id".into()
                })
                .await
        ),
        ErrorCode::InvalidArgument
    );
    server.stop().await;
}

#[tokio::test]
async fn lifecycle_over_the_binary_subprotocol() {
    lifecycle(Codec::Binary).await;
}

#[tokio::test]
async fn lifecycle_over_the_json_subprotocol() {
    lifecycle(Codec::Json).await;
}

#[tokio::test]
async fn bad_courses_and_fields_get_typed_errors() {
    let server = TestServer::start().await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    let with = |gpx: &str, name: &str, start: i64, cutoff: Option<i64>| {
        Request::RaceCreate(RaceCreate {
            name: name.into(),
            course_gpx: gpx.into(),
            start_at_ms: start,
            cutoff_at_ms: cutoff,
        })
    };
    let one_point = r#"<gpx version="1.1" creator="t"><trk><trkseg><trkpt lat="46" lon="15"/></trkseg></trk></gpx>"#;
    let bad_lat = r#"<gpx version="1.1" creator="t"><trk><trkseg><trkpt lat="146" lon="15"/><trkpt lat="46" lon="15.1"/></trkseg></trk></gpx>"#;
    let ride = gpx("loop-celje-resevno-2020-09-20.gpx");
    assert_eq!(
        code(admin.request(with("not xml", "x", START, None)).await),
        ErrorCode::InvalidCourse
    );
    assert_eq!(
        code(admin.request(with(one_point, "x", START, None)).await),
        ErrorCode::InvalidCourse
    );
    assert_eq!(
        code(admin.request(with(bad_lat, "x", START, None)).await),
        ErrorCode::InvalidCourse
    );
    assert_eq!(
        code(admin.request(with(&ride, "  ", START, None)).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(
            admin
                .request(with(&ride, "x", START, Some(START - 1)))
                .await
        ),
        ErrorCode::InvalidArgument
    );
    let Reply::Races(list) = admin.request(Request::RaceList).await.unwrap() else {
        panic!("list")
    };
    assert!(list.is_empty(), "rejected creates leave nothing behind");
    server.stop().await;
}

#[tokio::test]
async fn roles_are_enforced_and_the_socket_stays_open() {
    let server = TestServer::start().await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    let a = race(
        admin
            .request(create("A", "loop-celje-resevno-2020-09-20.gpx"))
            .await
            .unwrap(),
    );
    let b = race(
        admin
            .request(create("B", "loop-celje-resevno-2021-03-27.gpx"))
            .await
            .unwrap(),
    );
    for role in [Role::Spectator, Role::Racer, Role::Officer, Role::Citizen] {
        let mut client = server.client(role, Codec::Json).await;
        assert_eq!(
            code(
                client
                    .request(Request::RaceStart { id: a.id.clone() })
                    .await
            ),
            ErrorCode::Forbidden
        );
        assert_eq!(
            code(client.request(Request::Backup).await),
            ErrorCode::Forbidden
        );
        assert!(
            matches!(client.request(Request::Ping).await, Ok(Reply::Pong { .. })),
            "socket stays open after forbidden"
        );
    }
    let scoped = token(&server.keys, Role::Spectator, "fan", Some(&b.id), 600);
    let mut fan = Client::connect(&server.url, &scoped, Codec::Binary)
        .await
        .unwrap();
    assert_eq!(fan.welcome().race.as_deref(), Some(b.id.as_str()));
    let Reply::Races(visible) = fan.request(Request::RaceList).await.unwrap() else {
        panic!("list")
    };
    assert_eq!(
        visible.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        vec![b.id.clone()]
    );
    assert_eq!(
        code(fan.request(Request::RaceGet { id: a.id.clone() }).await),
        ErrorCode::Forbidden
    );
    assert_eq!(
        race(
            fan.request(Request::RaceGet { id: b.id.clone() })
                .await
                .unwrap()
        )
        .id,
        b.id
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_tokens_get_401_at_upgrade_and_tokens_refresh_in_place() {
    let server = TestServer::start().await;
    let status = |e: ClientError| match e {
        ClientError::Http { status, body } => (status, body),
        other => panic!("expected an HTTP refusal, got {other}"),
    };
    let (s, body) = status(
        Client::connect(&server.url, "", Codec::Binary)
            .await
            .err()
            .unwrap(),
    );
    assert_eq!(s, 401, "{body}");
    let (s, _) = status(
        Client::connect(&server.url, "garbage.token.here", Codec::Binary)
            .await
            .err()
            .unwrap(),
    );
    assert_eq!(s, 401);
    let expired = token(&server.keys, Role::Admin, "ops", None, -3600);
    let (s, body) = status(
        Client::connect(&server.url, &expired, Codec::Binary)
            .await
            .err()
            .unwrap(),
    );
    assert_eq!(s, 401);
    assert!(body.contains("token_expired"), "{body}");
    let foreign = peloton::auth::Keys::from_secret(&[9u8; 32], 0).unwrap();
    let (s, _) = status(
        Client::connect(
            &server.url,
            &token(&foreign, Role::Admin, "ops", None, 600),
            Codec::Json,
        )
        .await
        .err()
        .unwrap(),
    );
    assert_eq!(s, 401);

    // The token also works as a query parameter, and a missing subprotocol is a 400.
    let good = server.token(Role::Spectator, "fan");
    let (s, _) = common::http_get(
        server.addr,
        &format!("/ws?token={good} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: peloton.v1.json"),
    )
    .await;
    assert_eq!(s, 101);
    let (s, body) = common::http_get(
        server.addr,
        &format!("/ws?token={good} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="),
    )
    .await;
    assert_eq!(s, 400, "{body}");

    let mut client = Client::connect(
        &server.url,
        &token(&server.keys, Role::Racer, "rider", None, 60),
        Codec::Binary,
    )
    .await
    .unwrap();
    let fresh = token(&server.keys, Role::Racer, "rider", None, 7200);
    match client
        .request(Request::RefreshToken { token: fresh })
        .await
        .unwrap()
    {
        Reply::TokenRefreshed { expires_at_ms } => {
            assert!(expires_at_ms > peloton::time::now_ms() + 3_600_000)
        }
        other => panic!("{other:?}"),
    }
    let someone_else = token(&server.keys, Role::Racer, "thief", None, 7200);
    assert_eq!(
        code(
            client
                .request(Request::RefreshToken {
                    token: someone_else
                })
                .await
        ),
        ErrorCode::Forbidden
    );
    let promoted = token(&server.keys, Role::Admin, "rider", None, 7200);
    assert_eq!(
        code(
            client
                .request(Request::RefreshToken { token: promoted })
                .await
        ),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(
            client
                .request(Request::RefreshToken {
                    token: "junk".into()
                })
                .await
        ),
        ErrorCode::Unauthenticated
    );
    assert!(matches!(
        client.request(Request::Ping).await,
        Ok(Reply::Pong { .. })
    ));
    server.stop().await;
}

#[tokio::test]
async fn a_socket_whose_token_expired_is_refused_then_closed() {
    let server = TestServer::start_with(|c| {
        c.auth.leeway_secs = 0;
        c.ws.token_expiry_grace_ms = 3000;
    })
    .await;
    let mut client = Client::connect(
        &server.url,
        &token(&server.keys, Role::Spectator, "fan", None, 2),
        Codec::Binary,
    )
    .await
    .unwrap();
    assert!(client.request(Request::Ping).await.is_ok());
    // Expiry has second resolution: the token expires 1 to 2 s from now; the socket closes
    // 3 s after that, so at 2.1 s the token is expired and the socket still open.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(
        code(client.request(Request::RaceList).await),
        ErrorCode::TokenExpired
    );
    match client.next_push(std::time::Duration::from_secs(10)).await {
        Err(ClientError::Closed(Some((1008, reason)))) => assert!(reason.contains("expired")),
        other => panic!("expected close 1008, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served_on_the_same_port() {
    let server = TestServer::start().await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    admin
        .request(create("M", "loop-celje-resevno-2020-09-20.gpx"))
        .await
        .unwrap();
    let _ = admin
        .request(Request::RaceStart {
            id: "missing".into(),
        })
        .await;
    assert_eq!(
        common::http_get(server.addr, "/healthz HTTP/1.1").await,
        (200, "ok\n".into())
    );
    assert_eq!(
        common::http_get(server.addr, "/readyz HTTP/1.1").await,
        (200, "ready\n".into())
    );
    // One node lists itself, at the host the client asked for (cluster mode lists every
    // node: tests/cluster_server.rs); a host that is not a plain host is not echoed.
    let (status, nodes) =
        common::http_get(server.addr, "/api/nodes HTTP/1.1\r\nHost: 127.0.0.1:7400").await;
    assert_eq!(status, 200);
    let nodes: serde_json::Value = serde_json::from_str(&nodes).unwrap();
    assert_eq!(
        nodes["nodes"][0]["url"], "ws://127.0.0.1:7400/ws",
        "{nodes}"
    );
    let (_, nodes) = common::http_get(server.addr, "/api/nodes HTTP/1.1\r\nHost: a/b?c").await;
    assert_eq!(nodes, r#"{"nodes":[]}"#);
    let (status, metrics) = common::http_get(server.addr, "/metrics HTTP/1.1").await;
    assert_eq!(status, 200);
    for name in [
        "peloton_ws_open_sockets",
        "peloton_ws_messages_in_total",
        "peloton_ws_messages_out_total",
        "peloton_errors_total",
        "peloton_journal_appends_total",
        "peloton_journal_flushes_total",
        "peloton_journal_flush_seconds",
        "peloton_actors_live",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    assert!(metrics.contains("type=\"race_create\""));
    assert!(metrics.contains("code=\"not_found\""));
    assert_eq!(
        common::http_get(server.addr, "/nowhere HTTP/1.1").await.0,
        404
    );
    server.stop().await;
}

#[tokio::test]
async fn racers_register_all_or_nothing_and_spectators_see_no_emails() {
    use peloton::net::protocol::RacerView;
    let server = TestServer::start().await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    let r = race(
        admin
            .request(create("Roster", "loop-celje-resevno-2020-09-20.gpx"))
            .await
            .unwrap(),
    );
    let racer = |bib: u32, name: &str| RacerView {
        bib,
        name: name.into(),
        team: Some("Celje".into()),
        email: Some(format!("{bib}@example.si")),
    };
    let register = |racers| Request::RacerRegister {
        race_id: r.id.clone(),
        racers,
    };
    assert_eq!(
        admin
            .request(register(vec![racer(1, "Ana"), racer(2, "Bor")]))
            .await
            .unwrap(),
        Reply::Registered { racers: 2 }
    );
    assert_eq!(
        admin
            .request(register(vec![racer(1, "Ana")]))
            .await
            .unwrap(),
        Reply::Registered { racers: 2 },
        "a retry is harmless"
    );
    assert_eq!(
        code(
            admin
                .request(register(vec![racer(3, "Cene"), racer(2, "Not Bor")]))
                .await
        ),
        ErrorCode::InvalidArgument
    );
    let Reply::Racers(listed) = admin
        .request(Request::RacerList {
            race_id: r.id.clone(),
        })
        .await
        .unwrap()
    else {
        panic!("racers")
    };
    assert_eq!(listed, vec![racer(1, "Ana"), racer(2, "Bor")]);

    let mut fan = server.client(Role::Spectator, Codec::Json).await;
    assert_eq!(
        code(fan.request(register(vec![racer(9, "Eve")])).await),
        ErrorCode::Forbidden
    );
    let Reply::Racers(public) = fan
        .request(Request::RacerList {
            race_id: r.id.clone(),
        })
        .await
        .unwrap()
    else {
        panic!("racers")
    };
    assert!(public.iter().all(|p| p.email.is_none()) && public.len() == 2);
    assert_eq!(
        code(
            fan.request(Request::RacerList {
                race_id: "nope".into()
            })
            .await
        ),
        ErrorCode::NotFound
    );
    server.stop().await;
}

/// A recorded ride whose course the disqualification tests race on.
const DSQ_RIDE: &str = "loop-celje-resevno-2020-09-20.gpx";

/// The results of race `id` as `client` sees them: rows and the DSQ count.
async fn results_of(
    client: &mut Client,
    id: &str,
) -> (Vec<peloton::net::protocol::ResultView>, u32) {
    let (rows, stats) = common::results(client, id).await;
    (rows, stats.dsq)
}

/// Bib `bib`'s row.
fn row_of(
    rows: &[peloton::net::protocol::ResultView],
    bib: u32,
) -> &peloton::net::protocol::ResultView {
    rows.iter()
        .find(|r| r.bib == bib)
        .unwrap_or_else(|| panic!("no row for bib {bib} in {rows:?}"))
}

fn disqualify(race_id: &str, bib: u32, reason: &str) -> Request {
    Request::RaceDisqualify {
        race_id: race_id.into(),
        bib,
        reason: reason.into(),
    }
}

fn reinstate(race_id: &str, bib: u32) -> Request {
    Request::RaceReinstate {
        race_id: race_id.into(),
        bib,
    }
}

/// Racer `bib` of race `id` rides the first 200 m of the course, so it has a position.
async fn ride_a_little(server: &TestServer, id: &str, bib: u32, start_ms: i64) {
    use peloton::geo::{Course, CourseIndex};
    use peloton::net::protocol::WireFix;
    let course = Course::from_gpx(gpx(DSQ_RIDE).as_bytes(), 200_000).unwrap();
    let index = CourseIndex::from(&course);
    let fixes: Vec<WireFix> = (0..10)
        .map(|i| {
            let p = index.position_at(20.0 * i as f64);
            WireFix {
                at_ms: start_ms + 4_000 * i,
                lat_e7: p.lat_e7,
                lon_e7: p.lon_e7,
                accuracy_dm: 50,
                speed_cmps: None,
                elevation_dm: None,
            }
        })
        .collect();
    let mut phone = common::racer_phone(&server.url, &server.keys, id, bib).await;
    match phone.request(Request::Fixes { fixes }).await.unwrap() {
        Reply::FixesAck { accepted, .. } => assert!(accepted > 0, "bib {bib}'s fixes accepted"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_organiser_disqualifies_a_racer_and_reinstates_them() {
    use peloton::net::protocol::ResultStatusView;
    let server = TestServer::start().await;
    let mut admin = server.client(Role::Admin, Codec::Json).await;
    let start = peloton::time::now_ms() - 600_000;
    let id = common::live_race(&mut admin, DSQ_RIDE, start, 3).await;
    for bib in [1, 2] {
        ride_a_little(&server, &id, bib, start + 60_000).await;
    }
    // Racers report their progress to the race after their fixes are stored: wait for it.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (rows, _) = results_of(&mut admin, &id).await;
        if [1, 2].iter().all(|b| row_of(&rows, *b).rank.is_some()) {
            assert_eq!(row_of(&rows, 2).status, ResultStatusView::Racing);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let view = race(
        admin
            .request(disqualify(&id, 2, "  took the bridge shortcut at km 3 "))
            .await
            .unwrap(),
    );
    assert_eq!(
        (view.id.as_str(), view.state),
        (id.as_str(), RaceStateView::Live)
    );
    let (rows, dsq) = results_of(&mut admin, &id).await;
    let two = row_of(&rows, 2);
    assert_eq!(
        (two.status, two.rank, dsq),
        (ResultStatusView::Dsq, None, 1)
    );
    assert_eq!(
        two.reason.as_deref(),
        Some("disqualified: took the bridge shortcut at km 3"),
        "the admin's words, trimmed"
    );
    assert_eq!(row_of(&rows, 1).rank, Some(1), "the others move up");
    // The same decision again is harmless; spectators see what the admin sees.
    admin
        .request(disqualify(&id, 2, "took the bridge shortcut at km 3"))
        .await
        .unwrap();
    let mut fan = server.client(Role::Spectator, Codec::Binary).await;
    assert_eq!(results_of(&mut fan, &id).await, (rows, 1));

    race(admin.request(reinstate(&id, 2)).await.unwrap());
    let (rows, dsq) = results_of(&mut admin, &id).await;
    let two = row_of(&rows, 2);
    assert_eq!(
        (two.status, two.reason.as_deref(), dsq),
        (ResultStatusView::Racing, None, 0)
    );
    assert!(two.rank.is_some(), "{two:?}");
    // Reinstating someone who is not disqualified changes nothing.
    race(admin.request(reinstate(&id, 2)).await.unwrap());

    // Results are corrected after the race too: the one change a finished race accepts.
    race(
        admin
            .request(Request::RaceFinish { id: id.clone() })
            .await
            .unwrap(),
    );
    race(
        admin
            .request(disqualify(&id, 1, "no helmet"))
            .await
            .unwrap(),
    );
    let (rows, dsq) = results_of(&mut admin, &id).await;
    assert_eq!((row_of(&rows, 1).status, dsq), (ResultStatusView::Dsq, 1));
    race(admin.request(reinstate(&id, 1)).await.unwrap());
    let (rows, _) = results_of(&mut admin, &id).await;
    assert_eq!(
        row_of(&rows, 1).status,
        ResultStatusView::Dnf,
        "back to what it rode"
    );
    server.stop().await;
}

#[tokio::test]
async fn disqualifications_are_refused_for_unknown_bibs_empty_reasons_scheduled_races_and_non_admins(
) {
    use peloton::net::protocol::RacerView;
    let server = TestServer::start().await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    let live = common::live_race(&mut admin, DSQ_RIDE, peloton::time::now_ms() - 60_000, 2).await;
    assert_eq!(
        code(admin.request(disqualify(&live, 99, "cut")).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(admin.request(reinstate(&live, 99)).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(admin.request(disqualify("nope", 1, "cut")).await),
        ErrorCode::NotFound
    );
    for reason in ["", "   ", &"x".repeat(501)[..]] {
        assert_eq!(
            code(admin.request(disqualify(&live, 1, reason)).await),
            ErrorCode::InvalidArgument,
            "{reason:?}"
        );
    }
    let scheduled = race(admin.request(create("Later", DSQ_RIDE)).await.unwrap());
    common::register(
        &mut admin,
        &scheduled.id,
        vec![RacerView {
            bib: 1,
            name: "Ana".into(),
            team: None,
            email: None,
        }],
    )
    .await;
    assert_eq!(
        code(admin.request(disqualify(&scheduled.id, 1, "cut")).await),
        ErrorCode::InvalidTransition
    );
    assert_eq!(
        code(admin.request(reinstate(&scheduled.id, 1)).await),
        ErrorCode::InvalidTransition
    );
    for role in [Role::Spectator, Role::Racer] {
        let mut client = server.client(role, Codec::Json).await;
        assert_eq!(
            code(client.request(disqualify(&live, 1, "cut")).await),
            ErrorCode::Forbidden
        );
        assert_eq!(
            code(client.request(reinstate(&live, 1)).await),
            ErrorCode::Forbidden
        );
    }
    // An admin token scoped to another race may not judge this one.
    let scoped = token(&server.keys, Role::Admin, "judge", Some(&scheduled.id), 600);
    let mut judge = Client::connect(&server.url, &scoped, Codec::Binary)
        .await
        .unwrap();
    assert_eq!(
        code(judge.request(disqualify(&live, 1, "cut")).await),
        ErrorCode::Forbidden
    );
    let (rows, dsq) = results_of(&mut admin, &live).await;
    assert_eq!(dsq, 0, "nothing refused left a mark: {rows:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disqualification_survives_a_hard_restart() {
    use peloton::net::protocol::ResultStatusView;
    let dir = tempfile::tempdir().unwrap();
    // Snapshots every two events, so the decision is read back from a snapshot and a tail.
    let env = [("PELOTON_PERSIST_SNAPSHOT_EVERY", "2")];
    let server = common::ChildServer::start(dir.path(), &env);
    let admin = token(
        &common::keys_for(dir.path()),
        Role::Admin,
        "ops",
        None,
        3600,
    );
    let mut client = Client::connect(&server.url, &admin, Codec::Binary)
        .await
        .unwrap();
    let id = common::live_race(&mut client, DSQ_RIDE, peloton::time::now_ms() - 60_000, 3).await;
    for request in [
        disqualify(&id, 1, "wrong bib"),
        disqualify(&id, 2, "confirmed cut"),
        reinstate(&id, 1),
        disqualify(&id, 3, "no helmet"),
        disqualify(&id, 3, "drafting a car"),
    ] {
        race(client.request(request).await.unwrap());
    }
    let before = results_of(&mut client, &id).await;
    server.kill9();

    let server = common::ChildServer::start(dir.path(), &env);
    let mut client = Client::connect(&server.url, &admin, Codec::Binary)
        .await
        .unwrap();
    let after = results_of(&mut client, &id).await;
    assert_eq!(after, before, "acknowledged decisions are durable");
    let (rows, dsq) = after;
    assert_eq!(dsq, 2);
    assert_eq!(row_of(&rows, 1).status, ResultStatusView::Dns);
    assert_eq!(
        row_of(&rows, 2).reason.as_deref(),
        Some("disqualified: confirmed cut")
    );
    assert_eq!(
        row_of(&rows, 3).reason.as_deref(),
        Some("disqualified: drafting a car")
    );
    server.kill9();
}

/// Registering racers starts their actors in the background, so that at the race's start
/// every racer's first fix finds its actor running instead of 1,000 first fixes starting
/// 1,000 actors one by one (each asking a race actor busy with the racers already riding).
#[tokio::test]
async fn registered_racers_have_their_actors_before_their_first_fix() {
    let server = TestServer::start().await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    let Reply::Race(race) = admin
        .request(Request::RaceCreate(RaceCreate {
            name: "Early start".into(),
            course_gpx: gpx("loop-celje-resevno-2020-09-20.gpx"),
            start_at_ms: START,
            cutoff_at_ms: None,
        }))
        .await
        .unwrap()
    else {
        panic!("race")
    };
    let racers = (1..=50)
        .map(|bib| peloton::net::protocol::RacerView {
            bib,
            name: format!("Racer {bib}"),
            team: None,
            email: None,
        })
        .collect();
    common::register(&mut admin, &race.id, racers).await;
    let races = server.services().races.clone();
    let id = peloton::ids::RaceId::parse(&race.id).unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !(1..=50).all(|bib| races.racer_running(&id, bib)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "racer actors not started after registration"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!races.racer_running(&id, 51), "only registered bibs");
    server.stop().await;
}
