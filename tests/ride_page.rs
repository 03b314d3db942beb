//! The racer page (`/ride`) in a real browser: Debian's headless Chromium, driven through
//! chromedriver, with its GPS emulated over the DevTools protocol, rides the start of a real
//! recorded ride on a real server process. The page stores every position in IndexedDB
//! before it uploads it, keeps queuing while the server is killed (and through a reload of
//! the page meanwhile), uploads the backlog after the restart, and shows the finish and the
//! result; the server's journal then holds every position the page took, once. A second test
//! reads the page's plain words for what keeps a position from counting: a refused location
//! permission, a rough fix (sent, ignored by the server, not resent), and a race that is over
//! (the position is given up on). A third has the page obey the server's pace: alone on the
//! course, it takes a position every ten seconds, not every one the GPS gives.

mod common;
mod webdriver;

use common::{free_port, gpx, keys_for, live_race_on, results, token, ChildServer};
use peloton::actors::racer::actor::racer_key;
use peloton::actors::racer::RacerEvent;
use peloton::auth::Role;
use peloton::geo::{Course, CourseIndex, Position};
use peloton::ids::RaceId;
use peloton::net::client::Client;
use peloton::net::codec::Codec;
use peloton::net::protocol::{Reply, Request, ResultStatusView};
use peloton::persist::{record, Store};
use peloton::time::now_ms;
use serde_json::{json, Value};
use std::time::Duration;
use webdriver::Browser;

/// The recorded ride whose start is the course.
const RIDE: &str = "loop-celje-resevno-2020-09-20.gpx";
/// The course: the ride's first points up to about this far. Short enough to ride in about
/// forty seconds of real time at a cyclist's speed (fix times are the browser's clock).
const COURSE_M: f64 = 600.0;
/// Metres of real track between two emulated positions...
const STEP_M: f64 = 6.0;
/// ...one every this often: 15 m/s, 54 km/h, a fast cyclist and far below the rules' 40 m/s.
const EVERY: Duration = Duration::from_millis(400);
/// Positions go on this far past the finish point, so the finish line is crossed.
const BEYOND_M: f64 = 24.0;
/// How long the server stays dead while positions keep coming.
const DEAD_FOR: Duration = Duration::from_secs(3);
/// The racer's bib.
const BIB: u32 = 1;
/// The server asks for a position every 100 ms whatever the racer's situation, so the ride
/// test's page takes every emulated position (the pace itself has its own test).
const EVERY_POSITION: &[(&str, &str)] = &[
    ("PELOTON_TRACKING_PACE_MIN_MS", "100"),
    ("PELOTON_TRACKING_PACE_CRUISE_MS", "100"),
    ("PELOTON_TRACKING_PACE_MAX_MS", "100"),
];

/// The ride's first points, up to [`COURSE_M`], as a GPX course; and the whole ride's index,
/// along which the racer rides (the course's points are its first points).
fn course_and_ride() -> (String, CourseIndex) {
    let ride = Course::from_gpx(gpx(RIDE).as_bytes(), 200_000).unwrap();
    let mut length = 0.0;
    let mut points: Vec<Position> = vec![ride.points[0]];
    for pair in ride.points.windows(2) {
        if length >= COURSE_M {
            break;
        }
        length += pair[0].distance_m(pair[1]);
        points.push(pair[1]);
    }
    let trkpts: String = points
        .iter()
        .map(|p| format!("<trkpt lat=\"{:.7}\" lon=\"{:.7}\"/>\n", p.lat(), p.lon()))
        .collect();
    let course = format!(
        "<?xml version=\"1.0\"?>\n<gpx version=\"1.1\" creator=\"ride_page test\" \
         xmlns=\"http://www.topografix.com/GPX/1/1\"><trk><name>first {COURSE_M} m of \
         {RIDE}</name><trkseg>\n{trkpts}</trkseg></trk></gpx>\n"
    );
    (course, CourseIndex::from(&ride))
}

/// The page's model, as `window.ride` holds it.
async fn model(browser: &Browser) -> Value {
    browser
        .eval("return JSON.parse(JSON.stringify(window.ride));")
        .await
}

/// A list of device times from the page.
fn times(list: &Value) -> Vec<i64> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect()
}

/// The course length the server measured for `race`, in metres.
async fn course_length_m(admin: &mut Client, race: &str) -> f64 {
    let Reply::Race(view) = admin
        .request(Request::RaceGet { id: race.into() })
        .await
        .unwrap()
    else {
        panic!("race")
    };
    view.course_length_m
}

/// Device times of every fix the server accepted for `bib` in `race`, read from the
/// journal in `data` (the server must have exited).
fn accepted_fix_times(data: &std::path::Path, race: &str, bib: u32) -> Vec<i64> {
    let store = Store::open(data).unwrap();
    let key = racer_key(&RaceId::parse(race).unwrap(), bib);
    store
        .history(&key)
        .unwrap()
        .into_iter()
        .filter_map(
            |(_, bytes)| match record::decode::<RacerEvent>(&bytes).unwrap() {
                RacerEvent::FixAccepted { fix, .. } => Some(fix.at_ms),
                _ => None,
            },
        )
        .collect()
}

/// The ride itself: start to finish at a cyclist's speed, the server killed on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_rides_the_course_through_a_server_restart_and_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let server = ChildServer::start_at(data.path(), &listen, EVERY_POSITION);
    let keys = keys_for(data.path());
    let admin_token = token(&keys, Role::Admin, "ops", None, 600);
    let mut admin = Client::connect(&server.url, &admin_token, Codec::Binary)
        .await
        .unwrap();
    let (course, ride) = course_and_ride();
    let race = live_race_on(&mut admin, "Celje morning sprint", course, now_ms(), 1).await;
    let length_m = course_length_m(&mut admin, &race).await;
    assert!(
        (COURSE_M..COURSE_M + 200.0).contains(&length_m),
        "{length_m}"
    );
    let racer = token(&keys, Role::Racer, &BIB.to_string(), Some(&race), 600);
    admin.close().await;

    let browser = Browser::start().await;
    let origin = format!("http://{listen}");
    browser.set_geolocation_permission(&origin, "granted").await;
    browser.goto(&format!("{origin}/ride#token={racer}")).await;
    // The race, its state and the racer appear; the Start button is ready.
    browser
        .wait_for(
            "return document.querySelector('#race-name').textContent === 'Celje morning sprint'\
             && document.querySelector('#rider-name').textContent === 'Racer 1'\
             && !document.querySelector('#start').disabled;",
            Duration::from_secs(15),
        )
        .await;
    assert_eq!(
        browser
            .eval("return [document.querySelector('#race-state').textContent, document.querySelector('#bib').textContent];")
            .await,
        json!(["live", "1"])
    );

    let positions: Vec<Position> = (0..)
        .map(|i| f64::from(i) * STEP_M)
        .take_while(|d| *d <= length_m + BEYOND_M)
        .map(|d| ride.position_at(d))
        .collect();
    browser
        .set_position(positions[0].lat(), positions[0].lon(), 5.0)
        .await;
    browser
        .eval("document.querySelector('#start').click(); return true;")
        .await;
    browser
        .wait_for("return window.ride.tracking;", Duration::from_secs(5))
        .await;

    // Ride: one position every EVERY. About 40 % of the way the server dies for DEAD_FOR and
    // comes back on the same data and port while the positions keep coming.
    let kill_at = positions.len() * 2 / 5;
    let dead_steps = (DEAD_FOR.as_millis() / EVERY.as_millis()) as usize;
    let mut server = Some(server);
    let mut restarting = None;
    let mut queued_when_killed = 0;
    let mut taken_before_reload = Vec::new();
    let mut ticker = tokio::time::interval(EVERY);
    // A late tick must not be made up by a burst: positions closer in time than in space are
    // impossible speeds, which the server ignores.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for (i, p) in positions.iter().enumerate() {
        ticker.tick().await;
        browser.set_position(p.lat(), p.lon(), 5.0).await;
        if i == kill_at {
            server.take().unwrap().kill9();
            browser
                .wait_for(
                    "return window.ride.status === 'reconnecting';",
                    Duration::from_secs(5),
                )
                .await;
            queued_when_killed = model(&browser).await["queued"].as_u64().unwrap();
        }
        if i == kill_at + dead_steps / 2 {
            // A reload while the server is down: the page opens from its offline copy (its
            // service worker), its queue is in IndexedDB, and tracking starts again by itself. The reloaded page lists only what it takes from now on, so the
            // position just set must be stored, and listed, before the list is read.
            browser
                .wait_for(
                    &format!(
                        "const f = window.ride.lastFix;\
                         return f && Math.abs(f.lat_e7 - {}) <= 1 && Math.abs(f.lon_e7 - {}) <= 1;",
                        p.lat_e7, p.lon_e7
                    ),
                    Duration::from_secs(5),
                )
                .await;
            let before = model(&browser).await;
            taken_before_reload = times(&before["takenAt"]);
            browser.eval("location.reload(); return true;").await;
            browser
                .wait_for(
                    &format!(
                        "return window.ride && window.ride.tracking && window.ride.queued >= {};",
                        before["queued"]
                    ),
                    Duration::from_secs(10),
                )
                .await;
        }
        if i == kill_at + dead_steps {
            let queued = model(&browser).await["queued"].as_u64().unwrap();
            assert!(
                queued >= queued_when_killed + dead_steps as u64 / 2,
                "the page queues positions while the server is down: {queued_when_killed} then {queued}"
            );
            let (data, listen) = (data.path().to_owned(), listen.clone());
            restarting = Some(tokio::task::spawn_blocking(move || {
                ChildServer::start_at(&data, &listen, EVERY_POSITION)
            }));
        }
    }
    let server = restarting.expect("the server was restarted").await.unwrap();

    // The page uploads its backlog and shows the finish, then the final result. The model
    // changes first and the screen on the next animation frame: wait for the screen too.
    let page = browser
        .wait_for(
            "const r = window.ride;\
             return r.finished && r.queued === 0 && r.resultFinal\
               && !document.querySelector('#finish').hidden\
               && !document.querySelector('#result').hidden\
               && !document.querySelector('#result-text').textContent.startsWith('Provisional')\
               ? r : null;",
            Duration::from_secs(30),
        )
        .await;
    let finish_text = browser
        .eval("return [document.querySelector('#finish-time').textContent, document.querySelector('#result-text').textContent, document.querySelector('#race-state').textContent];")
        .await;
    let mut admin = Client::connect(&server.url, &admin_token, Codec::Binary)
        .await
        .unwrap();
    let (rows, stats) = results(&mut admin, &race).await;
    let row = rows.iter().find(|r| r.bib == BIB).unwrap();
    assert_eq!(row.status, ResultStatusView::Finished, "{row:?}");
    assert_eq!(row.rank, Some(1));
    assert_eq!(stats.finishers, 1);
    let time_ms = row.time_ms.expect("a finisher has a time");
    let shown = |ms: i64| {
        let s = (ms + 500) / 1000;
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    };
    assert_eq!(
        finish_text,
        json!([
            shown(time_ms),
            format!(
                "Place 1 · {} · {:.1} km/h",
                shown(time_ms),
                row.avg_speed_kmh.unwrap()
            ),
            "finished"
        ]),
        "the page shows the server's finish"
    );
    assert_eq!(page["rank"], 1);
    let artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(
        artifacts.join("ride-finished.png"),
        browser.screenshot().await,
    )
    .unwrap();
    admin.close().await;
    drop(browser);
    assert_eq!(server.terminate(), Some(0), "a clean shutdown");

    // Every position the page took up to the finish, before and after the reload, is in the
    // journal, once, in order; the page counted each fix it took as answered (accepted, or
    // ignored as a resend after a lost reply) or given up on once the race was over, and
    // nothing waits.
    let mut taken = taken_before_reload;
    taken.extend(times(&page["takenAt"]));
    let stored = accepted_fix_times(data.path(), &race, BIB);
    let last = *stored.last().expect("fixes were stored");
    let expected: Vec<i64> = taken.iter().copied().filter(|t| *t <= last).collect();
    // In order and once each; nothing the page did not take. A taken position may be
    // missing only if the server judged it and ignored it (two emulated positions that a
    // loaded machine dated too close together are an impossible speed): never lost.
    assert!(
        stored.windows(2).all(|w| w[0] < w[1]),
        "the journal holds each position once, in order"
    );
    assert!(
        stored.iter().all(|t| expected.contains(t)),
        "the journal holds only positions the page took"
    );
    let missing = expected.iter().filter(|t| !stored.contains(t)).count() as u64;
    let ignored = page["ignored"].as_u64().unwrap();
    assert!(
        missing <= ignored,
        "{missing} taken positions are not stored but the server ignored only {ignored}"
    );
    assert!(
        stored.len() + 4 >= positions.len() - (BEYOND_M / STEP_M) as usize,
        "the page took nearly every emulated position: {} of {}",
        stored.len(),
        positions.len()
    );
    let count = |k: &str| page[k].as_u64().unwrap();
    eprintln!(
        "ride: {} positions sent, {} stored; page took {}, acked {} (accepted {}, ignored {}), \
         discarded {}; {queued_when_killed} queued at the kill",
        positions.len(),
        stored.len(),
        count("taken"),
        count("acked"),
        count("accepted"),
        count("ignored"),
        count("discarded"),
    );
    assert_eq!(count("taken"), taken.len() as u64);
    assert_eq!(count("queued"), 0);
    assert_eq!(count("acked") + count("discarded"), count("taken"));
    assert_eq!(count("accepted") + count("ignored"), count("acked"));
    assert!(
        count("accepted") <= stored.len() as u64,
        "no fix was accepted twice"
    );
    assert!(
        taken.len() - stored.len() <= 3,
        "only the positions between the finish and the page learning of it went unused"
    );
}

/// What keeps a position from counting, said plainly: a refused permission, a rough fix, a
/// race that is over.
/// What the shorter page tests start from: a server child process on its default
/// configuration with a live race on the short course and bib 1 registered, an admin's
/// socket, bib 1's racer token, and a browser.
struct OneRacer {
    /// The server's data folder, removed at the end.
    _data: tempfile::TempDir,
    /// The server.
    server: ChildServer,
    /// An admin's socket.
    admin: Client,
    /// Where the racer rides (the course is its start).
    ride: CourseIndex,
    /// The race.
    race: String,
    /// Bib 1's racer token, for the page's link.
    racer: String,
    /// Headless Chromium.
    browser: Browser,
    /// `http://host:port` of the server.
    origin: String,
}

impl OneRacer {
    async fn start(race_name: &str) -> OneRacer {
        let data = tempfile::tempdir().unwrap();
        let server = ChildServer::start(data.path(), &[]);
        let keys = keys_for(data.path());
        let mut admin = Client::connect(
            &server.url,
            &token(&keys, Role::Admin, "ops", None, 600),
            Codec::Binary,
        )
        .await
        .unwrap();
        let (course, ride) = course_and_ride();
        let race = live_race_on(&mut admin, race_name, course, now_ms(), 1).await;
        let racer = token(&keys, Role::Racer, "1", Some(&race), 600);
        let origin = format!("http://{}", server.addr);
        OneRacer {
            _data: data,
            server,
            admin,
            ride,
            race,
            racer,
            browser: Browser::start().await,
            origin,
        }
    }
}

/// Opens the racer page with `racer`'s link and presses Start once the page allows it.
async fn press_start(browser: &Browser, origin: &str, racer: &str) {
    browser.goto(&format!("{origin}/ride#token={racer}")).await;
    browser
        .wait_for(
            "return !document.querySelector('#start').disabled;",
            Duration::from_secs(15),
        )
        .await;
    browser
        .eval("document.querySelector('#start').click(); return true;")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_permission_a_poor_fix_and_a_closed_race_are_said_plainly() {
    let OneRacer {
        _data,
        server,
        mut admin,
        ride,
        race,
        racer,
        browser,
        origin,
    } = OneRacer::start("Celje refusal").await;
    let (start, next) = (ride.position_at(0.0), ride.position_at(STEP_M));
    browser.set_geolocation_permission(&origin, "denied").await;
    press_start(&browser, &origin, &racer).await;
    let message = browser
        .wait_for(
            "const m = document.querySelector('#gps-message');\
             return !m.hidden && window.ride.gps === 'denied' ? m.textContent : null;",
            Duration::from_secs(10),
        )
        .await;
    assert!(
        message
            .as_str()
            .unwrap()
            .starts_with("Location permission was refused"),
        "{message}"
    );
    // The page is not tracking, offers Start again, and took nothing. The button's label
    // is set in the same turn as the message on a quiet machine, a turn later on a busy one.
    let state = browser
        .wait_for(
            "const label = document.querySelector('#start').textContent;\
             return !window.ride.tracking && label === 'Start'\
                 ? [window.ride.tracking, label, window.ride.taken] : null;",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(state, json!([false, "Start", 0]));

    // Allowed now, Start again: a fix 120 m rough is stored, said to be poor, sent, and
    // ignored by the server (tracking.max_accuracy_m is 50): done, not resent.
    browser.set_geolocation_permission(&origin, "granted").await;
    browser.set_position(start.lat(), start.lon(), 120.0).await;
    browser
        .eval("document.querySelector('#start').click(); return true;")
        .await;
    let message = browser
        .wait_for(
            "const m = document.querySelector('#gps-message');\
             return window.ride.gps === 'poor' && !m.hidden ? m.textContent : null;",
            Duration::from_secs(10),
        )
        .await;
    assert!(message.as_str().unwrap().contains("±120 m"), "{message}");
    let counts = browser
        .wait_for(
            "const r = window.ride;\
             return r.acked === 1 && r.queued === 0 ? [r.taken, r.accepted, r.ignored] : null;",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(counts, json!([1, 0, 1]));

    // The organiser closes the race: the next position is refused (the race is over), given
    // up on rather than kept forever, the page stops tracking and shows the result: DNS.
    let Reply::Race(closed) = admin
        .request(Request::RaceFinish { id: race.clone() })
        .await
        .unwrap()
    else {
        panic!("race")
    };
    assert_eq!(closed.id, race);
    browser.set_position(next.lat(), next.lon(), 5.0).await;
    let shown = browser
        .wait_for(
            "const r = window.ride;\
             return r.discarded === 1 && r.queued === 0 && !r.tracking && r.resultFinal\
               && !document.querySelector('#result').hidden\
               ? [document.querySelector('#race-state').textContent,\
                  document.querySelector('#result-text').textContent,\
                  document.querySelector('#start').textContent] : null;",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(shown[0], "finished");
    assert!(
        shown[1]
            .as_str()
            .unwrap()
            .starts_with("DNS · did not start"),
        "{shown}"
    );
    assert_eq!(shown[2], "Race over");
    admin.close().await;
    drop(browser);
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_reports_at_the_pace_the_server_asks() {
    // Default pace: a racer alone is asked for a fix every 10 s.
    let OneRacer {
        _data,
        server,
        admin,
        ride,
        racer,
        browser,
        origin,
        ..
    } = OneRacer::start("Celje pace").await;
    browser.set_geolocation_permission(&origin, "granted").await;
    let first = ride.position_at(0.0);
    browser.set_position(first.lat(), first.lon(), 5.0).await;
    press_start(&browser, &origin, &racer).await;
    // Ride on at 15 m/s until the server's pace has arrived and the page leaves positions
    // out; each position is one the GPS gave, 400 ms after the last.
    let mut paced = Value::Null;
    for step in 1..40u32 {
        let p = ride.position_at(f64::from(step) * STEP_M);
        browser.set_position(p.lat(), p.lon(), 5.0).await;
        tokio::time::sleep(EVERY).await;
        paced = browser
            .eval(
                "const r = window.ride;\
                 return r.paceMs != null && r.pacedOut >= 8 ? [r.paceMs, r.paceReason, r.taken, r.pacedOut] : null;",
            )
            .await;
        if !paced.is_null() {
            break;
        }
    }
    assert_eq!(paced[0], 10_000, "{paced}");
    assert_eq!(paced[1], "alone", "{paced}");
    let taken = paced[2].as_u64().unwrap();
    let left_out = paced[3].as_u64().unwrap();
    assert!(
        left_out > taken,
        "alone, most positions are left out: {paced}"
    );
    let said = browser
        .eval("return document.querySelector('#upload').textContent;")
        .await;
    assert!(
        said.as_str()
            .unwrap()
            .contains("Reporting every 10 s (alone)"),
        "{said}"
    );
    admin.close().await;
    drop(browser);
    server.terminate();
}
