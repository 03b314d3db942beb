//! Passivation: races and racers with nothing to do stop and live on in their journals, and
//! any request wakes them with the same answers as before they slept (issue 18). Real
//! servers, real sockets, real rides; `supervision.passivate_after_ms` made short so the
//! tests see actors fall asleep within a second.

mod common;

use common::{
    fix_at, gpx, keys_for, live_race, racer_phone, results, token, ChildServer, TestServer,
};
use peloton::actors::race::RaceDomain;
use peloton::auth::Role;
use peloton::geo::{Course, CourseIndex};
use peloton::ids::RaceId;
use peloton::net::client::Client;
use peloton::net::codec::Codec;
use peloton::net::protocol::{Push, RaceCreate, RaceTick, Reply, Request, WireFix};
use peloton::time::now_ms;
use std::time::Duration;

const RIDE: &str = "loop-celje-resevno-2020-09-20.gpx";
const IDLE_MS: u64 = 200;

fn index() -> CourseIndex {
    let course = Course::from_gpx(gpx(RIDE).as_bytes(), 200_000).unwrap();
    CourseIndex::from(&course)
}

/// A server whose idle actors sleep after [`IDLE_MS`], its race domain, and an admin.
async fn sleepy_server() -> (TestServer, RaceDomain, Client) {
    let server = TestServer::start_with(|c| c.supervision.passivate_after_ms = IDLE_MS).await;
    let races = server.services().races.clone();
    let admin = server.client(Role::Admin, Codec::Binary).await;
    (server, races, admin)
}

/// Sends `fixes` as racer `bib`'s phone; returns (accepted, ignored).
async fn send(phone: &mut Client, fixes: Vec<WireFix>) -> (u32, u32) {
    match phone.request(Request::Fixes { fixes }).await.unwrap() {
        Reply::FixesAck {
            accepted, ignored, ..
        } => (accepted, ignored),
        other => panic!("expected fixes_ack, got {other:?}"),
    }
}

/// Waits until `done` holds, polling; panics naming `what` after ten seconds.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never happened"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Every step of a replay of `race` at high speed, until `replay_done`.
async fn replay(client: &mut Client, race: &str) -> Vec<RaceTick> {
    let request = Request::RaceReplay {
        race_id: race.to_owned(),
        speed: 10_000.0,
        from_ms: None,
    };
    match client.request(request).await.unwrap() {
        Reply::ReplayStarted { .. } => {}
        other => panic!("expected replay_started, got {other:?}"),
    }
    let mut ticks = Vec::new();
    loop {
        match client.next_push(Duration::from_secs(10)).await.unwrap() {
            Push::ReplayTick(tick) => ticks.push(tick),
            Push::ReplayDone { .. } => return ticks,
            _ => {}
        }
    }
}

/// One counter of the server's `/metrics`.
async fn counter(addr: std::net::SocketAddr, series: &str) -> u64 {
    let (status, metrics) = common::http_get(addr, "/metrics HTTP/1.1").await;
    assert_eq!(status, 200);
    common::counter(&metrics, series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_race_asleep_answers_results_and_replay_exactly_as_before_it_slept() {
    let (server, races, mut admin) = sleepy_server().await;
    let start = now_ms() - 600_000;
    let id = live_race(&mut admin, RIDE, start, 3).await;
    let index = index();
    for bib in 1..=3u32 {
        let mut phone = racer_phone(&server.url, &server.keys, &id, bib).await;
        let fixes = (0..8)
            .map(|i| fix_at(&index, (40 * i * bib) as f64, start + 10_000 * i64::from(i)))
            .collect();
        assert_eq!(send(&mut phone, fixes).await.0, 8);
    }
    // Racers report after their acks: wait until the race has all three.
    let race = RaceId::parse(&id).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while races.standings(&race).await.unwrap().len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "racers never reported"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    admin
        .request(Request::RaceFinish { id: id.clone() })
        .await
        .unwrap();
    let before = results(&mut admin, &id).await;
    let replay_before = replay(&mut admin, &id).await;
    assert!(!replay_before.is_empty());

    until("the finished race and its racers falling asleep", || {
        !races.race_resident(&race) && (1..=3).all(|bib| !races.racer_running(&race, bib))
    })
    .await;
    let slept = counter(
        server.addr,
        "peloton_actor_passivations_total{kind=\"race\"}",
    )
    .await;
    assert!(slept >= 1, "passivations are counted");

    assert_eq!(
        results(&mut admin, &id).await,
        before,
        "results after sleeping are the results before"
    );
    assert_eq!(replay(&mut admin, &id).await, replay_before);
    assert!(races.race_resident(&race), "the question woke it");
    let listed = races.list();
    assert_eq!(listed.len(), 1, "a sleeping race is still listed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fix_for_a_live_racer_whose_actor_slept_wakes_it_and_is_applied_once() {
    let (server, races, mut admin) = sleepy_server().await;
    let start = now_ms() - 600_000;
    let id = live_race(&mut admin, RIDE, start, 2).await;
    let race = RaceId::parse(&id).unwrap();
    let index = index();
    let mut phone = racer_phone(&server.url, &server.keys, &id, 1).await;
    assert_eq!(
        send(&mut phone, vec![fix_at(&index, 100.0, start + 60_000)]).await,
        (1, 0)
    );

    until("racer 1 falling asleep", || !races.racer_running(&race, 1)).await;
    assert!(races.race_resident(&race), "a live race never sleeps");

    let later = fix_at(&index, 400.0, start + 120_000);
    assert_eq!(
        send(&mut phone, vec![later]).await,
        (1, 0),
        "the fix woke the racer and was accepted"
    );
    assert!(races.racer_running(&race, 1));
    assert_eq!(
        send(&mut phone, vec![later]).await,
        (0, 1),
        "the same fix again changes nothing: applied once"
    );
    let mut spectator = server.client(Role::Spectator, Codec::Binary).await;
    let (rows, _) = results(&mut spectator, &id).await;
    let row = rows.iter().find(|r| r.bib == 1).expect("racer 1 has a row");
    assert!(
        (f64::from(row.distance_dm) / 10.0 - 400.0).abs() < 30.0,
        "progress from the fix after waking: {row:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_race_scheduled_for_later_sleeps_and_its_clock_wakes_it_at_its_start() {
    let (server, races, mut admin) = sleepy_server().await;
    let start = now_ms() + 2_500;
    let create = RaceCreate {
        name: "Later".into(),
        course_gpx: gpx(RIDE),
        start_at_ms: start,
        cutoff_at_ms: None,
    };
    let Ok(Reply::Race(created)) = admin.request(Request::RaceCreate(create)).await else {
        panic!("race create failed")
    };
    let race = RaceId::parse(&created.id).unwrap();
    until("the scheduled race falling asleep", || {
        !races.race_resident(&race)
    })
    .await;
    assert!(now_ms() < start, "it slept before its start");
    until("the race going live at its start", || {
        races
            .get(&race)
            .is_ok_and(|s| s.status == peloton::actors::race::RaceStatus::Live)
    })
    .await;
    assert!(now_ms() >= start, "not before its start");
    assert!(races.race_resident(&race), "live, it is resident");
    server.stop().await;
}

/// Racer `bib`'s phone sends fixes with pauses longer than the idle time, so its actor
/// keeps falling asleep and waking, and records the newest acknowledged fix time.
async fn ride_with_pauses(
    url: String,
    keys: peloton::auth::Keys,
    race: String,
    bib: u32,
    start: i64,
    acked: std::sync::Arc<std::sync::Mutex<Vec<i64>>>,
) {
    let index = index();
    let Ok(mut phone) = Client::connect(
        &url,
        &token(&keys, Role::Racer, &bib.to_string(), Some(&race), 600),
        Codec::Binary,
    )
    .await
    else {
        return;
    };
    for i in 1..10_000i64 {
        let at = start + 5_000 * i;
        let fix = fix_at(&index, 20.0 * i as f64 + f64::from(bib), at);
        match phone.request(Request::Fixes { fixes: vec![fix] }).await {
            Ok(Reply::FixesAck { accepted: 1, .. }) => {
                if let Ok(mut slot) = acked.lock() {
                    slot[bib as usize] = at;
                }
            }
            Ok(_) | Err(_) => return,
        }
        // Around the idle time: some fixes find the actor awake, some asleep, some draining.
        tokio::time::sleep(Duration::from_millis(40 + 37 * (i as u64 % 5))).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_actors_fall_asleep_and_wake_loses_no_acknowledged_fix() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("PELOTON_SUPERVISION_PASSIVATE_AFTER_MS", "100")];
    let server = ChildServer::start(dir.path(), &env);
    let keys = keys_for(dir.path());
    let mut admin = server.admin(dir.path()).await;
    let start = now_ms() - 600_000;
    let racers = 6u32;
    let id = live_race(&mut admin, RIDE, start, racers).await;
    // A finished race beside it, asleep by the time of the kill.
    let done = live_race(&mut admin, RIDE, start, 2).await;
    admin
        .request(Request::RaceFinish { id: done.clone() })
        .await
        .unwrap();
    let done_results = results(&mut admin, &done).await;

    let acked = std::sync::Arc::new(std::sync::Mutex::new(vec![0i64; racers as usize + 1]));
    let riders: Vec<_> = (1..=racers)
        .map(|bib| {
            tokio::spawn(ride_with_pauses(
                server.url.clone(),
                keys.clone(),
                id.clone(),
                bib,
                start,
                acked.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let slept = counter(
        server.addr,
        "peloton_actor_passivations_total{kind=\"racer\"}",
    )
    .await;
    assert!(
        slept > 0,
        "racers fell asleep between their fixes before the kill"
    );
    server.kill9();
    for rider in riders {
        let _ = rider.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked[1..].iter().all(|&t| t > 0),
        "every racer got acks: {acked:?}"
    );

    let server = ChildServer::start(dir.path(), &env);
    let mut admin = server.admin(dir.path()).await;
    // Start-up left the finished race asleep, and its results mails, all submitted before
    // the kill, did not need it woken.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        counter(
            server.addr,
            "peloton_actor_activations_total{kind=\"race\"}"
        )
        .await,
        0,
        "nothing woke the finished race at start-up"
    );
    let index = index();
    for bib in 1..=racers {
        let last = acked[bib as usize];
        let mut phone = racer_phone(&server.url, &keys, &id, bib).await;
        // The newest acknowledged fix again: stored, so it changes nothing.
        let again = fix_at(&index, 0.0, last);
        assert_eq!(
            send(&mut phone, vec![again]).await,
            (0, 1),
            "racer {bib}'s fix at {last} was acknowledged, so it survived the kill"
        );
    }
    assert_eq!(
        results(&mut admin, &done).await,
        done_results,
        "the finished race, asleep at the kill, answers as before"
    );
    assert!(
        counter(
            server.addr,
            "peloton_actor_activations_total{kind=\"race\"}"
        )
        .await
            >= 1,
        "start-up left the finished race asleep; the question woke it"
    );
}
