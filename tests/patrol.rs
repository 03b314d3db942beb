//! Patrol over real sockets: duty windows, nearby and gone pushes, N-nearest, connect
//! requests and their answers, points, vouchers, donations, direct messages, reports, the
//! import and voucher CLIs, the simulator, and `kill -9` in the middle of a burst of
//! connections.

mod common;

use common::patrol::{answer, ask, at, history, import_basics, officer_row};
use common::{bin, client_as, keys_for, token, ChildServer, TestServer};
use peloton::actors::patrol::voucher;
use peloton::actors::patrol::PatrolRole;
use peloton::auth::Role;
use peloton::error::ErrorCode;
use peloton::geo::Position;
use peloton::net::client::{Client, ClientError};
use peloton::net::codec::Codec;
use peloton::net::protocol::{Push, Reply, Request};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Paris, Île de la Cité.
fn centre() -> Position {
    Position::from_degrees(48.8534, 2.3488).unwrap()
}

/// The next push that `wanted` accepts, skipping others, within 5 s.
async fn push_where(client: &mut Client, wanted: impl Fn(&Push) -> bool) -> Push {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let push = client
            .next_push(left)
            .await
            .expect("the expected push arrives");
        if wanted(&push) {
            return push;
        }
    }
}

fn code_of(result: Result<Reply, ClientError>) -> ErrorCode {
    result.expect_err("refused").code().expect("a typed error")
}

async fn connect(server: &TestServer, role: Role, sub: &str) -> Client {
    Client::connect(&server.url, &server.token(role, sub), Codec::Binary)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_citizen_meets_an_officer_earns_points_and_spends_them() {
    let server = TestServer::start().await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    import_basics(&mut admin, vec![officer_row("o1", "p1", None)]).await;

    let mut officer = connect(&server, Role::Officer, "o1").await;
    let mut citizen = connect(&server, Role::Citizen, "c1").await;
    citizen
        .request(Request::PatrolProfile {
            display_name: "Ana".into(),
            email: None,
        })
        .await
        .unwrap();
    // Off duty, the officer is invisible.
    at(&mut officer, centre()).await;
    at(&mut citizen, centre().moved_m(300.0, 0.0)).await;
    let Reply::Officers(none) = citizen
        .request(Request::OfficersNearest { count: 5 })
        .await
        .unwrap()
    else {
        panic!("officers")
    };
    assert!(none.is_empty());

    let Reply::OnDuty { until_ms } = officer
        .request(Request::DutyStart { minutes: None })
        .await
        .unwrap()
    else {
        panic!("on duty")
    };
    assert_eq!(
        at(&mut officer, centre()).await,
        Reply::PositionAck {
            cell_changed: false,
            duty_until_ms: Some(until_ms)
        }
    );
    let default_window = until_ms - peloton::time::now_ms();
    assert!((14 * 60_000..=15 * 60_000).contains(&default_window));
    let Push::OfficerNearby(nearby) =
        push_where(&mut citizen, |p| matches!(p, Push::OfficerNearby(_))).await
    else {
        unreachable!()
    };
    assert_eq!(nearby.officer_id, "o1");
    assert_eq!(nearby.display_name, "Officer o1");
    assert_eq!(nearby.distance_m, 300, "rounded to 50 m");
    assert_eq!(
        nearby.bearing_deg, 270,
        "the officer is west of the citizen"
    );
    let coarse = Position {
        lat_e7: nearby.lat_e7,
        lon_e7: nearby.lon_e7,
    };
    assert_ne!(coarse, centre(), "never the exact position");
    assert!(coarse.distance_m(centre()) < 1_000.0);

    let Reply::Officers(found) = citizen
        .request(Request::OfficersNearest { count: 5 })
        .await
        .unwrap()
    else {
        panic!("officers")
    };
    assert_eq!(found.len(), 1);

    // Asking while 300 m apart is allowed (nearby), accepting is not (not in person).
    let request_id = ask(&mut citizen, "o1").await;
    let Push::ConnectRequested {
        request_id: asked,
        display_name,
        citizen_id,
        ..
    } = push_where(&mut officer, |p| matches!(p, Push::ConnectRequested { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(
        (asked.as_str(), citizen_id.as_str(), display_name.as_str()),
        (request_id.as_str(), "c1", "Ana")
    );
    let accept = Request::ConnectAnswer {
        request_id: request_id.clone(),
        accept: true,
    };
    assert_eq!(
        code_of(officer.request(accept.clone()).await),
        ErrorCode::TooFar
    );

    at(&mut citizen, centre().moved_m(10.0, 0.0)).await;
    let Reply::ConnectAnswered {
        connection: Some(made),
    } = officer.request(accept.clone()).await.unwrap()
    else {
        panic!("connected")
    };
    assert_eq!((made.points, made.with_name.as_str()), (10, "Ana"));
    let Push::ConnectionEstablished(theirs) = push_where(&mut citizen, |p| {
        matches!(p, Push::ConnectionEstablished(_))
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(
        (theirs.points, theirs.with_name.as_str()),
        (10, "Officer o1")
    );
    // Accepting twice is refused, and pays nothing more.
    assert_eq!(
        code_of(officer.request(accept).await),
        ErrorCode::InvalidTransition
    );

    // A second connection the same day is recorded but earns nothing.
    let second = ask(&mut citizen, "o1").await;
    let Reply::ConnectAnswered {
        connection: Some(again),
    } = answer(&mut officer, &second, true).await.unwrap()
    else {
        panic!("connected")
    };
    assert_eq!(again.points, 0, "one award per pair per day");

    for client in [&mut officer, &mut citizen] {
        assert_eq!(
            client.request(Request::RewardsBalance).await.unwrap(),
            Reply::Balance { points: 10 }
        );
    }
    let entries = history(&mut citizen).await;
    assert_eq!(entries[0].cause, "connection");
    assert_eq!(entries.iter().map(|e| e.delta).sum::<i64>(), 10);

    // Redeem: a voucher anyone with the key verifies offline; a replay is the same voucher.
    let redeem = Request::RewardsRedeem {
        request_id: "r-1".into(),
        offer_id: "coffee".into(),
    };
    let first = citizen.request(redeem.clone()).await.unwrap();
    let Reply::Redeemed {
        voucher_code,
        points,
        balance,
    } = first.clone()
    else {
        panic!("redeemed")
    };
    assert_eq!((points, balance), (5, 5));
    let checked = voucher::verify(server.keys.voucher_key(), &voucher_code).unwrap();
    assert_eq!(
        (checked.offer_id.as_str(), checked.holder.as_str()),
        ("coffee", "c1")
    );
    assert_eq!(citizen.request(redeem).await.unwrap(), first, "idempotent");
    assert_eq!(
        code_of(
            citizen
                .request(Request::RewardsRedeem {
                    request_id: "r-1".into(),
                    offer_id: "nothing".into(),
                })
                .await
        ),
        ErrorCode::NotFound
    );
    assert_eq!(
        code_of(
            citizen
                .request(Request::RewardsDonate {
                    request_id: "r-1".into(),
                    charity_id: "food-bank".into(),
                    points: 1,
                })
                .await
        ),
        ErrorCode::Conflict,
        "a request id names one request"
    );
    assert_eq!(
        code_of(
            citizen
                .request(Request::RewardsDonate {
                    request_id: "d-1".into(),
                    charity_id: "food-bank".into(),
                    points: 6,
                })
                .await
        ),
        ErrorCode::InsufficientPoints
    );
    assert_eq!(
        citizen
            .request(Request::RewardsDonate {
                request_id: "d-2".into(),
                charity_id: "food-bank".into(),
                points: 5,
            })
            .await
            .unwrap(),
        Reply::Donated {
            points: 5,
            balance: 0
        }
    );
    assert_eq!(
        code_of(
            citizen
                .request(Request::RewardsRedeem {
                    request_id: "r-2".into(),
                    offer_id: "coffee".into(),
                })
                .await
        ),
        ErrorCode::InsufficientPoints,
        "a balance never goes negative"
    );

    // Off duty: the citizen is told the officer is gone.
    officer.request(Request::DutyEnd).await.unwrap();
    let Push::OfficerGone { officer_id } =
        push_where(&mut citizen, |p| matches!(p, Push::OfficerGone { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(officer_id, "o1");

    let today =
        peloton::time::format_day(u32::try_from(peloton::time::now_ms() / 86_400_000).unwrap());
    let Reply::PatrolReport(rows) = admin
        .request(Request::PatrolReport {
            from: today.clone(),
            to: today,
        })
        .await
        .unwrap()
    else {
        panic!("report")
    };
    let p1 = rows
        .iter()
        .find(|r| r.precinct == "p1")
        .expect("precinct p1");
    assert_eq!((p1.connections, p1.points_awarded), (2, 20));
    assert_eq!(rows.iter().map(|r| r.points_redeemed).sum::<u64>(), 5);
    assert_eq!(rows.iter().map(|r| r.points_donated).sum::<u64>(), 5);
    server.stop().await;
}

#[tokio::test]
async fn declined_and_expired_requests_cannot_be_accepted() {
    let server = TestServer::start_with(|c| c.patrol.connect_timeout_secs = 1).await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    import_basics(&mut admin, vec![officer_row("o1", "p1", None)]).await;
    let mut officer = connect(&server, Role::Officer, "o1").await;
    let mut citizen = connect(&server, Role::Citizen, "c1").await;
    officer
        .request(Request::DutyStart { minutes: Some(30) })
        .await
        .unwrap();
    at(&mut officer, centre()).await;
    at(&mut citizen, centre().moved_m(5.0, 0.0)).await;

    let request_id = ask(&mut citizen, "o1").await;
    answer(&mut officer, &request_id, false).await.unwrap();
    let Push::ConnectClosed { outcome, .. } =
        push_where(&mut citizen, |p| matches!(p, Push::ConnectClosed { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(outcome, "declined");
    assert_eq!(
        code_of(answer(&mut officer, &request_id, true).await),
        ErrorCode::InvalidTransition
    );

    let request_id = ask(&mut citizen, "o1").await;
    let Push::ConnectClosed { outcome, .. } =
        push_where(&mut citizen, |p| matches!(p, Push::ConnectClosed { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(outcome, "expired");
    let late = answer(&mut officer, &request_id, true).await;
    assert_eq!(code_of(late), ErrorCode::InvalidTransition);
    assert_eq!(
        citizen.request(Request::RewardsBalance).await.unwrap(),
        Reply::Balance { points: 0 }
    );

    // Nobody off duty or out of range can be asked, and roles are enforced.
    assert_eq!(
        code_of(
            citizen
                .request(Request::ConnectRequest {
                    officer_id: "nobody".into()
                })
                .await
        ),
        ErrorCode::NotFound
    );
    assert_eq!(
        code_of(citizen.request(Request::DutyStart { minutes: None }).await),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code_of(
            officer
                .request(Request::DutyStart {
                    minutes: Some(10_000)
                })
                .await
        ),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code_of(
            citizen
                .request(Request::PatrolPosition {
                    lat_e7: 950_000_000,
                    lon_e7: 0,
                    accuracy_m: None
                })
                .await
        ),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code_of(
            citizen
                .request(Request::PatrolPosition {
                    lat_e7: 0,
                    lon_e7: 0,
                    accuracy_m: Some(5_000.0)
                })
                .await
        ),
        ErrorCode::InvalidArgument
    );
    let mut unimported = connect(&server, Role::Officer, "o-unknown").await;
    assert_eq!(
        code_of(
            unimported
                .request(Request::DutyStart { minutes: None })
                .await
        ),
        ErrorCode::NotFound
    );
    server.stop().await;
}

#[tokio::test]
async fn a_duty_window_expires_by_itself_on_a_controlled_clock() {
    let server = TestServer::start().await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    import_basics(&mut admin, vec![officer_row("o1", "p1", None)]).await;
    let patrol = server.services().patrol.clone();
    let mut citizen = patrol.open("c1", PatrolRole::Citizen).await.unwrap();
    patrol
        .position(&citizen, centre().lat_e7, centre().lon_e7 + 10, None)
        .await
        .unwrap();
    // From here on nothing waits for the journal thread, so the paused clock moves only
    // when the test says.
    tokio::time::pause();
    let mut officer = patrol.open("o1", PatrolRole::Officer).await.unwrap();
    patrol.duty_start(&officer, Some(1)).await.unwrap();
    patrol
        .position(&officer, centre().lat_e7, centre().lon_e7, None)
        .await
        .unwrap();
    assert_eq!(patrol.officers_indexed(), 1);
    let nearby = citizen.notices.recv().await.unwrap();
    assert!(matches!(
        nearby,
        peloton::actors::patrol::notice::Notice::OfficerNearby { .. }
    ));

    tokio::time::advance(Duration::from_secs(59)).await;
    tokio::task::yield_now().await;
    assert!(officer.notices.try_recv().is_err(), "still on duty at 59 s");
    assert_eq!(patrol.officers_indexed(), 1);

    tokio::time::advance(Duration::from_secs(2)).await;
    let ended = officer.notices.recv().await.unwrap();
    assert!(
        matches!(
            ended,
            peloton::actors::patrol::notice::Notice::DutyEnded {
                reason: "expired",
                ..
            }
        ),
        "{ended:?}"
    );
    assert_eq!(patrol.officers_indexed(), 0, "gone from every search");
    let gone = citizen.notices.recv().await.unwrap();
    assert!(
        matches!(gone, peloton::actors::patrol::notice::Notice::OfficerGone { ref officer } if officer == "o1"),
        "{gone:?}"
    );
    tokio::time::resume();
    drop((officer, citizen));
    server.stop().await;
}

#[tokio::test]
async fn connected_users_message_each_other_and_offline_messages_arrive_on_reconnect() {
    let server = TestServer::start().await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    import_basics(&mut admin, vec![officer_row("o1", "p1", None)]).await;
    let mut officer = connect(&server, Role::Officer, "o1").await;
    let mut citizen = connect(&server, Role::Citizen, "c1").await;
    let send = |request_id: &str, to: &str, text: &str| Request::MessageSend {
        request_id: request_id.into(),
        to: to.into(),
        text: text.into(),
    };
    assert_eq!(
        code_of(citizen.request(send("m0", "o1", "hello?")).await),
        ErrorCode::Forbidden,
        "only connected users"
    );
    officer
        .request(Request::DutyStart { minutes: None })
        .await
        .unwrap();
    at(&mut officer, centre()).await;
    at(&mut citizen, centre()).await;
    let request_id = ask(&mut citizen, "o1").await;
    answer(&mut officer, &request_id, true).await.unwrap();

    let before = peloton::time::now_ms();
    let Reply::MessageSent(sent) = citizen
        .request(send("m1", "o1", "thank you!"))
        .await
        .unwrap()
    else {
        panic!("sent")
    };
    assert_eq!((sent.from.as_str(), sent.seq), ("c1", 1));
    // No request carries a date: the server's clock sets it.
    assert!(
        (sent.at_ms - before).abs() < 60_000,
        "the server dates messages"
    );
    let Push::DirectMessage(live) =
        push_where(&mut officer, |p| matches!(p, Push::DirectMessage(_))).await
    else {
        unreachable!()
    };
    assert_eq!(live, sent);
    assert_eq!(
        citizen
            .request(send("m1", "o1", "thank you!"))
            .await
            .unwrap(),
        Reply::MessageSent(sent.clone()),
        "a resent request is the same message"
    );

    // The officer goes offline; three messages wait for it.
    officer.close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 2..=4 {
        citizen
            .request(send(&format!("m{i}"), "o1", &format!("message {i}")))
            .await
            .unwrap();
    }
    let mut officer = connect(&server, Role::Officer, "o1").await;
    let mut waiting = Vec::new();
    while waiting.len() < 3 {
        if let Push::DirectMessage(m) =
            push_where(&mut officer, |p| matches!(p, Push::DirectMessage(_))).await
        {
            waiting.push(m.seq);
        }
    }
    assert_eq!(waiting, vec![2, 3, 4]);

    let page = |before_seq| Request::MessageHistory {
        with: "c1".into(),
        before_seq,
        limit: 2,
    };
    let Reply::Messages(newest) = officer.request(page(None)).await.unwrap() else {
        panic!("messages")
    };
    assert_eq!(newest.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![4, 3]);
    let Reply::Messages(older) = officer.request(page(Some(3))).await.unwrap() else {
        panic!("messages")
    };
    assert_eq!(older.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![2, 1]);
    assert_eq!(older[1].text, "thank you!");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_in_a_burst_of_connections_loses_no_acknowledged_points() {
    const PAIRS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path(), &[("PELOTON_PERSIST_SNAPSHOT_EVERY", "3")]);
    let keys = keys_for(dir.path());
    let admin_token = token(&keys, Role::Admin, "ops", None, 3600);
    let mut admin = Client::connect(&server.url, &admin_token, Codec::Binary)
        .await
        .unwrap();
    let officers: Vec<String> = (0..PAIRS).map(|i| format!("o{i}")).collect();
    import_basics(
        &mut admin,
        officers
            .iter()
            .map(|id| officer_row(id, "p1", None))
            .collect(),
    )
    .await;
    admin.close().await;

    // Acknowledged connections: connection id → officer.
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let mut pairs = tokio::task::JoinSet::new();
    for i in 0..PAIRS {
        let (url, keys, acked) = (server.url.clone(), keys.clone(), acked.clone());
        pairs.spawn(async move {
            let o = format!("o{i}");
            let c = format!("c{i}");
            let mut officer = Client::connect(
                &url,
                &token(&keys, Role::Officer, &o, None, 3600),
                Codec::Binary,
            )
            .await
            .ok()?;
            let mut citizen = Client::connect(
                &url,
                &token(&keys, Role::Citizen, &c, None, 3600),
                Codec::Binary,
            )
            .await
            .ok()?;
            officer
                .request(Request::DutyStart { minutes: None })
                .await
                .ok()?;
            // Each pair in its own street, so nobody else's pushes pile up.
            let spot = centre().moved_m(0.0, 2_000.0 * i as f64);
            at(&mut officer, spot).await;
            at(&mut citizen, spot).await;
            let Ok(Reply::ConnectPending { request_id, .. }) = citizen
                .request(Request::ConnectRequest {
                    officer_id: o.clone(),
                })
                .await
            else {
                return None;
            };
            if let Ok(Reply::ConnectAnswered {
                connection: Some(c),
            }) = answer(&mut officer, &request_id, true).await
            {
                acked.lock().unwrap().insert(c.connection_id, o);
            }
            Some(())
        });
    }
    // Kill once some connections are acknowledged and others are still in flight.
    for _ in 0..400 {
        if acked.lock().unwrap().len() >= PAIRS / 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let addr = server.addr;
    server.kill9();
    while pairs.join_next().await.is_some() {}
    let acked = acked.lock().unwrap().clone();
    assert!(
        !acked.is_empty(),
        "some connections were acknowledged before the kill"
    );

    let server = ChildServer::start_at(dir.path(), &addr.to_string(), &[]);
    for (connection_id, officer) in &acked {
        let mut client = client_as(&server.url, &keys, Role::Officer, officer).await;
        assert_eq!(
            client.request(Request::RewardsBalance).await.unwrap(),
            Reply::Balance { points: 10 },
            "{officer} was told it earned 10 points"
        );
        assert!(history(&mut client)
            .await
            .iter()
            .any(|e| &e.reference == connection_id));
        client.close().await;
    }
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_import_cli_reports_bad_rows_and_the_voucher_cli_verifies_offline() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path(), &[]);
    let keys = keys_for(dir.path());
    let admin = token(&keys, Role::Admin, "ops", None, 3600);
    let csv = dir.path().join("officers.csv");
    std::fs::write(
        &csv,
        "id,display_name,precinct,email\n\
         o1,Ana Novak,north,ana@example.org\n\
         o2,,north,\n\
         o3,Bo Li,north,not-an-address\n\
         o4,Cy Ode,south,\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        bin()
            .args(["admin", "--server", &server.url, "--token", &admin])
            .args(args)
            .output()
            .unwrap()
    };
    let strict = run(&[
        "import",
        "officers",
        csv.to_str().unwrap(),
        "--all-or-nothing",
        "--json",
    ]);
    assert_eq!(strict.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&strict.stdout).unwrap();
    assert_eq!(report["imported"], 0);
    assert_eq!(report["refused"], 2);
    let lines: Vec<(u64, String)> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["line"].as_u64().unwrap(),
                p["field"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![(3, "display_name".to_owned()), (4, "email".to_owned())]
    );

    let lenient = run(&["import", "officers", csv.to_str().unwrap()]);
    assert_eq!(
        lenient.status.code(),
        Some(1),
        "refused rows are an error for scripts"
    );
    let text = String::from_utf8_lossy(&lenient.stdout);
    assert!(text.contains("imported 2 of 4"), "{text}");
    assert!(
        String::from_utf8_lossy(&lenient.stderr).contains("imported"),
        "a progress bar"
    );

    // The imported officer can go on duty; the refused one cannot.
    let mut o4 = client_as(&server.url, &keys, Role::Officer, "o4").await;
    o4.request(Request::DutyStart { minutes: None })
        .await
        .unwrap();
    let mut o2 = client_as(&server.url, &keys, Role::Officer, "o2").await;
    assert_eq!(
        code_of(o2.request(Request::DutyStart { minutes: None }).await),
        ErrorCode::NotFound
    );

    let code = voucher::issue(
        keys.voucher_key(),
        &voucher::Voucher {
            serial: 7,
            offer_id: "coffee".into(),
            points: 5,
            issued_day: 20_000,
            holder: "c1".into(),
        },
    );
    let verify = |code: &str| {
        bin()
            .args(["admin", "voucher", "verify", code, "--data"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let ok = verify(&code.to_lowercase());
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("coffee"));
    let mut forged = code.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let bad = verify(std::str::from_utf8(&forged).unwrap());
    assert_eq!(bad.status.code(), Some(1));

    // The example files the README imports are valid and end up listed.
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/patrol");
    for (kind, file) in [
        ("officers", "officers.csv"),
        ("offers", "offers.csv"),
        ("charities", "charities.json"),
    ] {
        let out = run(&["import", kind, examples.join(file).to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let offers = run(&["patrol", "offers", "--json"]);
    let offers: serde_json::Value = serde_json::from_slice(&offers.stdout).unwrap();
    assert_eq!(offers.as_array().unwrap().len(), 3);
    assert!(String::from_utf8_lossy(&run(&["patrol", "charities"]).stdout).contains("food-bank"));

    let report = run(&[
        "patrol",
        "report",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-31",
        "--format",
        "csv",
    ]);
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    assert!(String::from_utf8_lossy(&report.stdout).starts_with("date,precinct,connections"));
    let bad_dates = run(&[
        "patrol",
        "report",
        "--from",
        "2026-02-30",
        "--to",
        "2026-03-01",
    ]);
    assert_eq!(bad_dates.status.code(), Some(2));
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_patrol_simulator_makes_connections_over_real_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path(), &[]);
    let keys = keys_for(dir.path());
    let admin = token(&keys, Role::Admin, "ops", None, 3600);
    let output = bin()
        .args([
            "sim",
            "patrol",
            "--server",
            &server.url,
            "--token",
            &admin,
            "--officers",
            "4",
            "--citizens",
            "8",
            "--bbox",
            "2.34,48.85,2.36,48.86",
            "--duration",
            "12s",
            "--interval",
            "0.5",
            "--json",
            "--data",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        summary["positions_sent"].as_u64().unwrap() > 100,
        "{summary}"
    );
    assert!(
        summary["officer_nearby_events"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert!(summary["connections"].as_u64().unwrap() > 0, "{summary}");
    assert!(summary["points_awarded"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(
        summary["messages_sent"], summary["connections"],
        "every connection is thanked: {summary}"
    );
    assert_eq!(summary["errors"], 0, "{summary}");
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_survive_kill_9_and_a_resend_after_the_crash_is_not_a_second_message() {
    let dir = tempfile::tempdir().unwrap();
    // No book snapshot in this run: everything comes back from the journals.
    let server = ChildServer::start(dir.path(), &[]);
    let keys = keys_for(dir.path());
    let mut admin = client_as(&server.url, &keys, Role::Admin, "ops").await;
    import_basics(&mut admin, vec![officer_row("o1", "p1", None)]).await;
    let mut officer = client_as(&server.url, &keys, Role::Officer, "o1").await;
    let mut citizen = client_as(&server.url, &keys, Role::Citizen, "c1").await;
    officer
        .request(Request::DutyStart { minutes: None })
        .await
        .unwrap();
    at(&mut officer, centre()).await;
    at(&mut citizen, centre()).await;
    let request_id = ask(&mut citizen, "o1").await;
    answer(&mut officer, &request_id, true).await.unwrap();
    officer.close().await;
    let send = Request::MessageSend {
        request_id: "m-1".into(),
        to: "o1".into(),
        text: "are you still there?".into(),
    };
    let Reply::MessageSent(first) = citizen.request(send.clone()).await.unwrap() else {
        panic!("sent")
    };
    let addr = server.addr;
    server.kill9();

    let server = ChildServer::start_at(dir.path(), &addr.to_string(), &[]);
    let mut citizen = client_as(&server.url, &keys, Role::Citizen, "c1").await;
    // The phone never saw the ack and sends again: the same message, not a second one.
    assert_eq!(
        citizen.request(send).await.unwrap(),
        Reply::MessageSent(first.clone())
    );
    let mut officer = client_as(&server.url, &keys, Role::Officer, "o1").await;
    let Push::DirectMessage(waiting) =
        push_where(&mut officer, |p| matches!(p, Push::DirectMessage(_))).await
    else {
        unreachable!()
    };
    assert_eq!(waiting, first, "delivered after the restart");
    let Reply::Messages(all) = officer
        .request(Request::MessageHistory {
            with: "c1".into(),
            before_seq: None,
            limit: 10,
        })
        .await
        .unwrap()
    else {
        panic!("messages")
    };
    assert_eq!(all, vec![first]);
    assert_eq!(
        officer.request(Request::RewardsBalance).await.unwrap(),
        Reply::Balance { points: 10 }
    );
    // Duty windows do not outlive the server: the officer app learns it from its next ack.
    let Reply::PositionAck { duty_until_ms, .. } = at(&mut officer, centre()).await else {
        panic!("ack")
    };
    assert_eq!(duty_until_ms, None);
    server.terminate();
}
