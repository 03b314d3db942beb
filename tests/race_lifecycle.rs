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
