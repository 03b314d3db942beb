//! Live race tracking end to end: real recorded rides replayed as racers over real sockets.

mod common;

use common::{
    gpx, gpx_with_checkpoints, keys_for, live_race, live_race_on, register, results, token,
    ChildServer, TestServer,
};
use peloton::actors::events::DomainEvent;
use peloton::auth::{Keys, Role};
use peloton::geo::{Course, CourseIndex, Position};
use peloton::net::client::Client;
use peloton::net::codec::Codec;
use peloton::net::protocol::{
    RaceCreate, RaceStateView, RacerView, Reply, Request, ResultStatusView, StandingView, WireFix,
};

const RIDE: &str = "loop-celje-resevno-2020-09-20.gpx";
const T0: i64 = 1_796_115_600_000;

/// A racer riding the whole course at `speed` m/s from `start_ms`, one fix every 20 m with
/// up to 4 m of deterministic noise, carrying on 60 m past the finish.
fn ride(course: &Course, start_ms: i64, speed: f64, seed: u64) -> Vec<WireFix> {
    let index = CourseIndex::from(course);
    let length = index.length_m();
    let mut fixes = Vec::new();
    let mut noise = seed;
    let mut d = 0.0;
    while d <= length {
        noise = noise
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let jitter = ((noise >> 33) % 80) as i32 - 40; // ±40 e-7 degrees ≈ ±4 m
        let p = index.position_at(d);
        fixes.push(fix(
            start_ms + (d / speed * 1000.0) as i64,
            p.lat_e7 + jitter,
            p.lon_e7 - jitter,
        ));
        d += 20.0;
    }
    // Past the line, continuing along the last leg.
    let (a, b) = (index.position_at(length - 10.0), index.position_at(length));
    for k in 1..=3 {
        let at = start_ms + ((length + 20.0 * k as f64) / speed * 1000.0) as i64;
        let beyond = |x: i32, y: i32| y + (y - x) * 2 * k;
        fixes.push(fix(
            at,
            beyond(a.lat_e7, b.lat_e7),
            beyond(a.lon_e7, b.lon_e7),
        ));
    }
    fixes
}

fn fix(at_ms: i64, lat_e7: i32, lon_e7: i32) -> WireFix {
    WireFix {
        at_ms,
        lat_e7,
        lon_e7,
        accuracy_dm: 50,
        speed_cmps: None,
        elevation_dm: None,
    }
}

async fn device(url: &str, keys: &Keys, race: &str, bib: u32) -> Client {
    Client::connect(
        url,
        &token(keys, Role::Racer, &bib.to_string(), Some(race), 3600),
        Codec::Binary,
    )
    .await
    .unwrap()
}

async fn send(device: &mut Client, fixes: &[WireFix]) -> (u32, u32) {
    match device
        .request(Request::Fixes {
            fixes: fixes.to_vec(),
        })
        .await
        .unwrap()
    {
        Reply::FixesAck {
            accepted,
            ignored,
            last_at_ms,
        } => {
            assert!(last_at_ms.is_some());
            (accepted, ignored)
        }
        other => panic!("{other:?}"),
    }
}

async fn standings(client: &mut Client, race: &str) -> Vec<StandingView> {
    match client
        .request(Request::RaceStandings {
            race_id: race.into(),
        })
        .await
        .unwrap()
    {
        Reply::Standings(rows) => rows,
        other => panic!("{other:?}"),
    }
}

fn course() -> Course {
    Course::from_gpx(gpx(RIDE).as_bytes(), 200_000).unwrap()
}

#[tokio::test]
async fn the_finish_order_is_the_arrival_order_and_spikes_and_resends_change_nothing() {
    let server = TestServer::start().await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    // Checkpoints a third and two thirds of the way: the ride is out and back, so the second
    // lies on the way back, near the first one's place on the way out.
    let race = live_race_on(
        &mut admin,
        "Checkpointed",
        gpx_with_checkpoints(RIDE, &[1.0 / 3.0, 2.0 / 3.0]),
        T0,
        3,
    )
    .await;
    let mut events = server.services().races.domain_events();
    let course = course();
    // Same pace, staggered starts: 1 arrives first, then 2, then 3.
    let rides: Vec<Vec<WireFix>> = (0..3u32)
        .map(|i| ride(&course, T0 + 60_000 * i64::from(i), 8.0, u64::from(i) + 1))
        .collect();
    let mut devices = Vec::new();
    for bib in 1..=3 {
        devices.push(device(&server.url, &server.keys, &race, bib).await);
    }
    let half = rides[0].len() / 2;
    for (i, fixes) in rides.iter().enumerate() {
        let (accepted, _) = send(&mut devices[i], &fixes[..half]).await;
        assert!(
            accepted as usize >= half - 2,
            "racer {} accepted {accepted} of {half}",
            i + 1
        );
    }
    let mid = standings(&mut admin, &race).await;
    assert_eq!(mid.iter().map(|s| s.bib).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(
        mid[0].checkpoints_passed, 1,
        "half way: past the first checkpoint"
    );
    let cp1 = T0 + (course.length_m / 3.0 / 8.0 * 1000.0) as i64;
    assert!(
        (mid[0].last_split_ms.unwrap() - cp1).abs() < 5_000,
        "{mid:?} vs {cp1}"
    );

    // A GPS spike 5 km away moves nobody.
    let last = rides[1][half - 1];
    let spike = fix(last.at_ms + 1000, last.lat_e7 + 450_000, last.lon_e7);
    assert_eq!(send(&mut devices[1], &[spike]).await, (0, 1));
    // Gaps of racers on the course grow with the clock (they are for the instant the
    // standings are read), so "no effect" is everything else staying the same.
    let no_gaps = |rows: Vec<StandingView>| -> Vec<StandingView> {
        rows.into_iter()
            .map(|s| StandingView { gap_ms: None, ..s })
            .collect()
    };
    assert_eq!(
        no_gaps(standings(&mut admin, &race).await),
        no_gaps(mid.clone())
    );

    // Racer 1 loses its connection, reconnects and re-sends its last batch: no effect.
    devices[0] = device(&server.url, &server.keys, &race, 1).await;
    let resent = &rides[0][half - 50..half];
    assert_eq!(send(&mut devices[0], resent).await, (0, 50));
    assert_eq!(
        no_gaps(standings(&mut admin, &race).await),
        no_gaps(mid.clone())
    );

    for (i, fixes) in rides.iter().enumerate() {
        for batch in fixes[half..].chunks(200) {
            send(&mut devices[i], batch).await;
        }
    }
    let end = standings(&mut admin, &race).await;
    assert_eq!(
        end.iter().map(|s| (s.rank, s.bib)).collect::<Vec<_>>(),
        vec![(1, 1), (2, 2), (3, 3)],
        "{end:?}"
    );
    assert!(end.iter().all(|s| s.finished_at_ms.is_some()), "{end:?}");
    let gap = |s: &StandingView| s.gap_ms.unwrap();
    assert!(
        (gap(&end[1]) - 60_000).abs() < 2_000 && (gap(&end[2]) - 120_000).abs() < 2_000,
        "{end:?}"
    );
    // Everyone finished: the race finishes by itself, tells other domains, and its results
    // are final.
    let mut finished = false;
    for _ in 0..100 {
        if let Reply::Race(r) = admin
            .request(Request::RaceGet { id: race.clone() })
            .await
            .unwrap()
        {
            if r.state == RaceStateView::Finished {
                finished = true;
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(finished, "the race finished by itself");
    match events.try_recv() {
        Ok(DomainEvent::RaceFinished { race: id, .. }) => assert_eq!(id.as_str(), race),
        other => panic!("expected RaceFinished, got {other:?}"),
    }
    let (results, _) = results(&mut admin, &race).await;
    assert_eq!(
        results
            .iter()
            .map(|r| (r.rank, r.bib, r.status))
            .collect::<Vec<_>>(),
        vec![
            (Some(1), 1, ResultStatusView::Finished),
            (Some(2), 2, ResultStatusView::Finished),
            (Some(3), 3, ResultStatusView::Finished)
        ]
    );
    let expected_s = course.length_m / 8.0;
    let time_s = results[0].time_ms.unwrap() as f64 / 1000.0;
    assert!(
        (time_s - expected_s).abs() < 10.0,
        "{time_s} vs {expected_s}"
    );
    assert!((results[0].avg_speed_kmh.unwrap() - 28.8).abs() < 0.5);
    // Splits are interpolated at each checkpoint and count from the gun.
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.splits_ms.len(), 2, "{r:?}");
        for (k, split) in r.splits_ms.iter().enumerate() {
            let expected =
                course.length_m * (k + 1) as f64 / 3.0 / 8.0 * 1000.0 + 60_000.0 * i as f64;
            assert!(
                (*split as f64 - expected).abs() < 5_000.0,
                "racer {} split {k}: {split} vs {expected}",
                r.bib
            );
        }
    }
    // A replay from the stored fixes ends where the race ended.
    let mut viewer = server.client(Role::Spectator, Codec::Binary).await;
    let Reply::ReplayStarted { from_ms, to_ms } = viewer
        .request(Request::RaceReplay {
            race_id: race.clone(),
            speed: 5000.0,
            from_ms: None,
        })
        .await
        .unwrap()
    else {
        panic!("replay")
    };
    assert!(from_ms.is_some() && to_ms > from_ms);
    let table = common::replay_to_end(&mut viewer).await;
    let replayed: Vec<_> = table
        .values()
        .map(|s| (s.bib, s.rank, s.finished_at_ms))
        .collect();
    let live: Vec<_> = end
        .iter()
        .map(|s| (s.bib, s.rank, s.finished_at_ms))
        .collect();
    assert_eq!(
        replayed, live,
        "the replay ends with the race's own standings"
    );
    // After the finish, fixes are refused.
    let after = fix(
        rides[0].last().unwrap().at_ms + 5_000,
        rides[0].last().unwrap().lat_e7,
        rides[0].last().unwrap().lon_e7,
    );
    let refused = devices[0]
        .request(Request::Fixes { fixes: vec![after] })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(peloton::error::ErrorCode::InvalidTransition)
    );
    server.stop().await;
}

#[tokio::test]
async fn fixes_are_refused_outside_a_live_race_and_from_unregistered_bibs() {
    let server = TestServer::start().await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    let race = live_race(&mut admin, RIDE, T0, 1).await;
    let first = ride(&course(), T0, 8.0, 1)[0];
    let mut stranger = device(&server.url, &server.keys, &race, 99).await;
    let refused = stranger
        .request(Request::Fixes { fixes: vec![first] })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(peloton::error::ErrorCode::NotFound),
        "{refused}"
    );
    let mut bad = device(&server.url, &server.keys, &race, 1).await;
    let outside = WireFix {
        lat_e7: 950_000_000,
        ..first
    };
    let refused = bad
        .request(Request::Fixes {
            fixes: vec![outside],
        })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(peloton::error::ErrorCode::InvalidArgument)
    );
    let mut spectator = server.client(Role::Spectator, Codec::Json).await;
    assert_eq!(
        spectator
            .request(Request::Fixes { fixes: vec![first] })
            .await
            .unwrap_err()
            .code(),
        Some(peloton::error::ErrorCode::Forbidden)
    );
    admin
        .request(Request::RaceFinish { id: race.clone() })
        .await
        .unwrap();
    let refused = bad
        .request(Request::Fixes { fixes: vec![first] })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(peloton::error::ErrorCode::InvalidTransition)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_race_resumes_identical_standings() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("PELOTON_PERSIST_SNAPSHOT_EVERY", "100")];
    let server = ChildServer::start(dir.path(), &env);
    let keys = keys_for(dir.path());
    let mut admin = server.admin(dir.path()).await;
    let race = live_race(&mut admin, RIDE, T0, 3).await;
    let course = course();
    for bib in 1..=3u32 {
        let fixes = ride(
            &course,
            T0 + 45_000 * i64::from(bib),
            7.0 + f64::from(bib) * 0.5,
            u64::from(bib),
        );
        let mut phone = device(&server.url, &keys, &race, bib).await;
        for batch in fixes[..fixes.len() / 2].chunks(100) {
            send(&mut phone, batch).await;
        }
    }
    let before = standings(&mut admin, &race).await;
    assert_eq!(before.len(), 3);
    server.kill9();

    let server = ChildServer::start(dir.path(), &env);
    let mut admin = server.admin(dir.path()).await;
    // Identical but for gaps, which are for the instant the standings are read and grow
    // with the clock for racers on the course.
    let no_gaps = |rows: Vec<StandingView>| -> Vec<StandingView> {
        rows.into_iter()
            .map(|s| StandingView { gap_ms: None, ..s })
            .collect()
    };
    assert_eq!(no_gaps(standings(&mut admin, &race).await), no_gaps(before));
    server.kill9();
}

#[test]
fn positions_used_by_the_rides_are_on_the_globe() {
    let c = course();
    let p: Position = CourseIndex::from(&c).position_at(100.0);
    assert!(p.validate().is_ok());
}

#[tokio::test]
async fn a_race_finishes_at_its_cutoff_with_dnf_and_dns() {
    let server = TestServer::start().await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    let now = peloton::time::now_ms();
    let Reply::Race(r) = admin
        .request(Request::RaceCreate(RaceCreate {
            name: "Short".into(),
            course_gpx: gpx(RIDE),
            start_at_ms: now - 60_000,
            cutoff_at_ms: Some(now + 1_500),
        }))
        .await
        .unwrap()
    else {
        panic!("create")
    };
    let racers = (1..=2)
        .map(|bib| RacerView {
            bib,
            name: format!("R{bib}"),
            team: None,
            email: None,
        })
        .collect();
    register(&mut admin, &r.id, racers).await;
    // Its start has passed, so the clock may have started it already: live either way.
    let _ = admin.request(Request::RaceStart { id: r.id.clone() }).await;
    let mut phone = device(&server.url, &server.keys, &r.id, 1).await;
    send(&mut phone, &ride(&course(), now - 60_000, 8.0, 3)[..20]).await;
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    let Reply::Race(after) = admin
        .request(Request::RaceGet { id: r.id.clone() })
        .await
        .unwrap()
    else {
        panic!("get")
    };
    assert_eq!(
        after.state,
        RaceStateView::Finished,
        "the cut-off finished the race"
    );
    let (results, _) = results(&mut admin, &r.id).await;
    assert_eq!(
        results
            .iter()
            .map(|x| (x.bib, x.status))
            .collect::<Vec<_>>(),
        vec![(1, ResultStatusView::Dnf), (2, ResultStatusView::Dns)]
    );
    assert!(results.iter().all(|x| x.time_ms.is_none()));
    server.stop().await;
}

/// A course cut: the first place, away from the ends, where a straight line of at most
/// 400 m that leaves the course (its middle 100 m or more from it) skips 1.5 to 5 km.
/// (from, to) metres along the course.
fn cut_on(course: &Course) -> (f64, f64) {
    let index = CourseIndex::from(course);
    let length = index.length_m();
    let mut from = 1_000.0;
    while from < length - 6_000.0 {
        let mut to = from + 1_500.0;
        while to < (from + 5_000.0).min(length - 1_000.0) {
            let (a, b) = (index.position_at(from), index.position_at(to));
            let middle = Position {
                lat_e7: ((i64::from(a.lat_e7) + i64::from(b.lat_e7)) / 2) as i32,
                lon_e7: ((i64::from(a.lon_e7) + i64::from(b.lon_e7)) / 2) as i32,
            };
            if a.distance_m(b) <= 400.0
                && index
                    .project_between(middle, 0.0, length, 0.0)
                    .is_some_and(|off| off.offset_m >= 100.0)
            {
                return (from, to);
            }
            to += 50.0;
        }
        from += 50.0;
    }
    panic!("no place to cut on this course")
}

/// `fixes` of a racer riding at `speed` who, at `from` metres, rides straight to the point
/// `to` metres along and carries on from there (one fix every 2 s on the shortcut).
fn with_cut(
    course: &Course,
    fixes: &[WireFix],
    speed: f64,
    (from, to): (f64, f64),
) -> Vec<WireFix> {
    let index = CourseIndex::from(course);
    let (a, b) = (index.position_at(from), index.position_at(to));
    let leave_ms = fixes[0].at_ms + (from / speed * 1000.0) as i64;
    let crossing_ms = (a.distance_m(b) / speed * 1000.0) as i64;
    let saved_ms = ((to - from) / speed * 1000.0) as i64 - crossing_ms;
    let mut out: Vec<WireFix> = fixes
        .iter()
        .copied()
        .filter(|f| f.at_ms < leave_ms)
        .collect();
    let mut t = 0;
    while t < crossing_ms {
        let f = t as f64 / crossing_ms as f64;
        let lerp = |x: i32, y: i32| x + ((y - x) as f64 * f) as i32;
        out.push(fix(
            leave_ms + t,
            lerp(a.lat_e7, b.lat_e7),
            lerp(a.lon_e7, b.lon_e7),
        ));
        t += 2_000;
    }
    let rejoin_ms = leave_ms + ((to - from) / speed * 1000.0) as i64;
    out.extend(
        fixes
            .iter()
            .filter(|f| f.at_ms >= rejoin_ms)
            .map(|f| WireFix {
                at_ms: f.at_ms - saved_ms,
                ..*f
            }),
    );
    out
}

#[tokio::test]
async fn detours_dropouts_and_cuts_over_real_sockets_end_as_organisers_expect() {
    const LOLLIPOP: &str = "loop-celje-resevno-2021-03-27.gpx";
    let server = TestServer::start().await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    let course = Course::from_gpx(gpx(LOLLIPOP).as_bytes(), 200_000).unwrap();
    let (from, to) = cut_on(&course);
    // A mandatory checkpoint in the middle of the stretch the cutter skips, an optional one
    // before it.
    let index = CourseIndex::from(&course);
    let mandatory = index.position_at((from + to) / 2.0);
    let optional = index.position_at(from / 2.0);
    let text = gpx(LOLLIPOP);
    let at = text.find("<trk>").unwrap();
    let waypoints = format!(
        "<wpt lat=\"{}\" lon=\"{}\"><name>Spring</name></wpt>\n\
         <wpt lat=\"{}\" lon=\"{}\"><name>Summit</name><type>Mandatory</type></wpt>\n",
        optional.lat(),
        optional.lon(),
        mandatory.lat(),
        mandatory.lon()
    );
    let course_gpx = format!("{}{waypoints}{}", &text[..at], &text[at..]);
    let race = live_race_on(&mut admin, "Bad day", course_gpx, T0, 3).await;

    // 1 rides it all; 2 cuts; 3 loses its signal for ten minutes mid-race.
    let honest = ride(&course, T0, 8.0, 1);
    let cutter = with_cut(
        &course,
        &ride(&course, T0 + 10_000, 8.0, 2),
        8.0,
        (from, to),
    );
    let silent_from = T0 + 20_000 + 1_200_000;
    let dropout: Vec<WireFix> = ride(&course, T0 + 20_000, 8.0, 3)
        .into_iter()
        .filter(|f| f.at_ms < silent_from || f.at_ms >= silent_from + 600_000)
        .collect();
    for (bib, fixes) in [(1u32, honest), (2, cutter), (3, dropout)] {
        let mut phone = device(&server.url, &server.keys, &race, bib).await;
        for batch in fixes.chunks(300) {
            send(&mut phone, batch).await;
        }
        phone.close().await;
    }

    // The admin sees the suspicion in the standings, for the cutter only.
    let rows = standings(&mut admin, &race).await;
    let flagged: Vec<u32> = rows
        .iter()
        .filter(|r| r.cut_suspected)
        .map(|r| r.bib)
        .collect();
    assert_eq!(flagged, vec![2], "{rows:?}");

    let (results, _) = results(&mut admin, &race).await;
    let row = |bib: u32| results.iter().find(|r| r.bib == bib).unwrap();
    // The honest racer and the one whose phone went silent rode the whole course, unflagged.
    for bib in [1, 3] {
        let r = row(bib);
        assert_eq!(r.status, ResultStatusView::Finished, "{r:?}");
        assert!(
            (f64::from(r.distance_dm) / 10.0 - course.length_m).abs() < 50.0,
            "{r:?}"
        );
        assert!(r.cuts.is_empty() && r.off_course.is_empty(), "{r:?}");
    }
    assert_eq!((row(1).rank, row(3).rank), (Some(1), Some(2)));
    // The cutter skipped the mandatory checkpoint: disqualified, unranked, with the reason
    // and the stretch skipped.
    let r = row(2);
    assert_eq!(r.status, ResultStatusView::Dsq, "{r:?}");
    assert_eq!(r.rank, None);
    assert!(
        r.reason
            .as_deref()
            .is_some_and(|why| why.contains("Summit")),
        "{r:?}"
    );
    assert_eq!(r.cuts.len(), 1, "{r:?}");
    let cut = r.cuts[0];
    assert!(
        (f64::from(cut.from_dm) / 10.0 - from).abs() < 300.0,
        "{cut:?} vs {from}"
    );
    assert!(
        (f64::from(cut.to_dm) / 10.0 - to).abs() < 600.0,
        "{cut:?} vs {to}"
    );
    server.stop().await;
}
