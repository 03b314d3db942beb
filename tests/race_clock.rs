//! Races run by the clock, against the real server over real sockets: a scheduled race goes
//! live at its start time by itself, its cut-off ends it (or, waiting for a gun that never
//! came, cancels it), and both happen after a restart when the server was down at the moment
//! they were due.

mod common;

use common::{gpx, keys_for, register, results, token, ChildServer, TestServer};
use peloton::actors::race::state::{StartMode, CUTOFF_BEFORE_START};
use peloton::auth::Role;
use peloton::net::client::Client;
use peloton::net::codec::Codec;
use peloton::net::protocol::{
    RaceCreate, RaceStateView, RaceUpdate, RaceView, RacerView, Reply, Request, ResultStatusView,
};
use peloton::time::now_ms;
use std::time::Duration;

const RIDE: &str = "loop-celje-resevno-2020-09-20.gpx";

/// Slack on top of a due moment for the server to notice it and for our polling: generous,
/// because a shared 2-core machine can be slow, yet bounded.
const SLACK_MS: i64 = 5_000;

/// Creates a race on the shared ride; the reply is checked to be a race.
async fn create(admin: &mut Client, name: &str, start_at_ms: i64, cutoff: Option<i64>) -> RaceView {
    let request = Request::RaceCreate(RaceCreate {
        name: name.into(),
        course_gpx: gpx(RIDE),
        start_at_ms,
        cutoff_at_ms: cutoff,
    });
    match admin.request(request).await.expect("create") {
        Reply::Race(race) => race,
        other => panic!("expected a race, got {other:?}"),
    }
}

/// The race as the server shows it now.
async fn get(admin: &mut Client, id: &str) -> RaceView {
    match admin
        .request(Request::RaceGet { id: id.into() })
        .await
        .expect("race get")
    {
        Reply::Race(race) => race,
        other => panic!("expected a race, got {other:?}"),
    }
}

/// Polls until the race is in `state`, failing at `deadline_ms` (wall clock) with what it
/// was instead; `still(&race)` is checked on every poll until then.
async fn wait_for(
    admin: &mut Client,
    id: &str,
    state: RaceStateView,
    deadline_ms: i64,
    still: impl Fn(&RaceView),
) -> RaceView {
    loop {
        let race = get(admin, id).await;
        if race.state == state {
            return race;
        }
        still(&race);
        assert!(
            now_ms() < deadline_ms,
            "race {id} is still {:?}, expected {state:?} by now",
            race.state
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_race_goes_live_by_itself_at_its_start_also_after_its_start_was_edited() {
    let server = TestServer::start().await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    let start = now_ms() + 2_000;
    let race = create(&mut admin, "By the clock", start, None).await;
    assert_eq!(race.state, RaceStateView::Scheduled);
    // A race planned an hour away, moved to start soon: the clock follows the edit.
    let later = create(&mut admin, "Moved up", now_ms() + 3_600_000, None).await;
    let Reply::Race(moved) = admin
        .request(Request::RaceUpdate(RaceUpdate {
            id: later.id.clone(),
            name: None,
            course_gpx: None,
            start_at_ms: Some(start),
            cutoff_at_ms: None,
            clear_cutoff: false,
        }))
        .await
        .expect("update")
    else {
        panic!("update")
    };
    assert_eq!(moved.state, RaceStateView::Scheduled);

    for id in [&race.id, &later.id] {
        let live = wait_for(&mut admin, id, RaceStateView::Live, start + SLACK_MS, |r| {
            assert_eq!(r.state, RaceStateView::Scheduled, "{r:?}");
        })
        .await;
        let started = live.started_at_ms.expect("a live race has its start time");
        assert!(
            started >= start,
            "went live at {started}, before its start {start}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_race_that_went_live_by_itself_finishes_at_its_cutoff() {
    let server = TestServer::start().await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    let start = now_ms() + 2_000;
    let cutoff = start + 3_000;
    let race = create(&mut admin, "Short", start, Some(cutoff)).await;
    let racers = vec![RacerView {
        bib: 1,
        name: "Ana".into(),
        team: None,
        email: None,
    }];
    register(&mut admin, &race.id, racers).await;
    wait_for(
        &mut admin,
        &race.id,
        RaceStateView::Live,
        start + SLACK_MS,
        |_| {},
    )
    .await;
    let finished = wait_for(
        &mut admin,
        &race.id,
        RaceStateView::Finished,
        cutoff + SLACK_MS,
        |r| {
            assert_ne!(r.state, RaceStateView::Cancelled, "{r:?}");
        },
    )
    .await;
    assert!(finished.finished_at_ms.is_some_and(|f| f >= cutoff));
    // The racer who never sent a fix did not start; results are final.
    let (rows, _) = results(&mut admin, &race.id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, ResultStatusView::Dns, "{rows:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_and_cutoffs_missed_while_the_server_was_down_apply_at_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path(), &[]);
    let admin_token = token(&keys_for(dir.path()), Role::Admin, "ops", None, 3600);
    let mut admin = Client::connect(&server.url, &admin_token, Codec::Binary)
        .await
        .unwrap();
    let start = now_ms() + 3_000;
    let live = create(&mut admin, "Runs on", start, Some(start + 3_600_000)).await;
    let over = create(&mut admin, "Over", start, Some(start + 1_000)).await;
    let open = create(&mut admin, "No cut-off", start, None).await;
    drop(admin);
    // SIGKILL before any of them was due, so only recovery can start or close them.
    assert!(now_ms() < start, "creating three races took over 3 s");
    server.kill9();
    // The server stays down across the start and the second race's cut-off.
    let after = start + 1_500 - now_ms();
    tokio::time::sleep(Duration::from_millis(u64::try_from(after).unwrap_or(0))).await;

    // `start` returns once the server printed `listening on`, i.e. after recovery: no polling.
    let server = ChildServer::start(dir.path(), &[]);
    let mut admin = Client::connect(&server.url, &admin_token, Codec::Json)
        .await
        .unwrap();
    for (race, expected) in [
        (&live, RaceStateView::Live),
        (&over, RaceStateView::Finished),
        (&open, RaceStateView::Live),
    ] {
        let now = get(&mut admin, &race.id).await;
        assert_eq!(now.state, expected, "{now:?}");
        assert!(now.started_at_ms.is_some_and(|s| s >= start), "{now:?}");
    }
    // What recovery did was journaled: it is still so after another hard kill and restart.
    drop(admin);
    server.kill9();
    let server = ChildServer::start(dir.path(), &[]);
    let mut admin = Client::connect(&server.url, &admin_token, Codec::Binary)
        .await
        .unwrap();
    assert_eq!(
        get(&mut admin, &over.id).await.state,
        RaceStateView::Finished
    );
    assert_eq!(get(&mut admin, &live.id).await.state, RaceStateView::Live);
    server.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_gun_mode_a_race_waits_for_the_gun_and_its_cutoff_cancels_it() {
    let server = TestServer::start_with(|c| c.race.start_mode = StartMode::Gun).await;
    let mut admin = server.client(Role::Admin, Codec::Json).await;
    let start = now_ms() + 1_000;
    let cutoff = start + 2_000;
    let waiting = create(&mut admin, "Waiting", start, Some(cutoff)).await;
    let fired = create(&mut admin, "Fired", start, Some(cutoff)).await;
    // The gun: an admin's start, here before the planned time.
    let Reply::Race(live) = admin
        .request(Request::RaceStart {
            id: fired.id.clone(),
        })
        .await
        .expect("gun")
    else {
        panic!("start")
    };
    assert_eq!(live.state, RaceStateView::Live);

    let cancelled = wait_for(
        &mut admin,
        &waiting.id,
        RaceStateView::Cancelled,
        cutoff + SLACK_MS,
        |r| {
            // Past its start it is still waiting: only the cut-off may change it.
            assert_eq!(r.state, RaceStateView::Scheduled, "{r:?}");
            assert!(r.started_at_ms.is_none());
        },
    )
    .await;
    assert!(
        now_ms() >= cutoff,
        "cancelled before its cut-off: {cancelled:?}"
    );
    assert_eq!(
        cancelled.cancel_reason.as_deref(),
        Some(CUTOFF_BEFORE_START)
    );
    // The race whose gun was fired is finished by the same cut-off.
    let finished = wait_for(
        &mut admin,
        &fired.id,
        RaceStateView::Finished,
        cutoff + SLACK_MS,
        |_| {},
    )
    .await;
    assert!(finished.cancel_reason.is_none());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_gun_mode_from_the_environment_a_restart_cancels_a_race_whose_cutoff_passed() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("PELOTON_RACE_START_MODE", "gun")];
    let server = ChildServer::start(dir.path(), &env);
    let admin_token = token(&keys_for(dir.path()), Role::Admin, "ops", None, 3600);
    let mut admin = Client::connect(&server.url, &admin_token, Codec::Binary)
        .await
        .unwrap();
    let start = now_ms() + 1_000;
    let race = create(&mut admin, "Never fired", start, Some(start + 1_000)).await;
    drop(admin);
    server.kill9();
    let after = start + 1_500 - now_ms();
    tokio::time::sleep(Duration::from_millis(u64::try_from(after).unwrap_or(0))).await;
    let server = ChildServer::start(dir.path(), &env);
    let mut admin = Client::connect(&server.url, &admin_token, Codec::Binary)
        .await
        .unwrap();
    let now = get(&mut admin, &race.id).await;
    assert_eq!(now.state, RaceStateView::Cancelled, "{now:?}");
    assert_eq!(now.cancel_reason.as_deref(), Some(CUTOFF_BEFORE_START));
    server.kill9();
}
