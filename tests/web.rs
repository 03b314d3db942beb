//! The spectator web page in a real browser: Debian's headless Chromium, driven through
//! chromedriver, watching a race that racers' sockets drive on a real server process. The page
//! lists the race, draws it, keeps its leaderboard equal to the server's standings, and
//! reconnects and keeps updating after the server is killed and started again.

mod common;
mod webdriver;

use common::{
    free_port, gpx_with_checkpoints, keys_for, live_race_on, racer_phone, token, ChildServer,
};
use peloton::auth::{Keys, Role};
use peloton::geo::{Course, CourseIndex};
use peloton::net::client::Client;
use peloton::net::codec::Codec;
use peloton::net::protocol::{Reply, Request, StandingView, WireFix};
use std::time::Duration;
use webdriver::Browser;

const RIDE: &str = "loop-celje-resevno-2020-09-20.gpx";
const T0: i64 = 1_796_115_600_000;
const RACERS: u32 = 5;

/// One batch of fixes for racer `i` (0-based): 25 m apart, racer `i` `60·i` m ahead.
fn batch(index: &CourseIndex, i: u32, step: usize) -> Vec<WireFix> {
    (0..4)
        .map(|k| {
            let d = (step * 4 + k) as f64 * 25.0;
            common::fix_at(index, d + 60.0 * f64::from(i), T0 + (d * 125.0) as i64)
        })
        .collect()
}

async fn phones(url: &str, keys: &Keys, race: &str) -> Vec<Client> {
    let mut out = Vec::new();
    for bib in 1..=RACERS {
        out.push(racer_phone(url, keys, race, bib).await);
    }
    out
}

async fn ride(phones: &mut [Client], index: &CourseIndex, steps: std::ops::Range<usize>) {
    for step in steps {
        for (i, phone) in phones.iter_mut().enumerate() {
            phone
                .request(Request::Fixes {
                    fixes: batch(index, i as u32, step),
                })
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn standings(admin: &mut Client, race: &str) -> Vec<StandingView> {
    let Reply::Standings(rows) = admin
        .request(Request::RaceStandings {
            race_id: race.into(),
        })
        .await
        .unwrap()
    else {
        panic!("standings")
    };
    rows
}

/// The page's leaderboard, top to bottom, as (bib, km text).
const BOARD: &str = "return [...document.querySelectorAll('#board tbody tr')]\
    .map(r => [Number(r.dataset.bib), r.children[3].textContent]);";

/// Where the page drew racer 1.
const MARKER: &str = "const g = document.querySelector('#racers g[data-bib=\"1\"]');\
    return g && g.style.display !== 'none' ? g.getAttribute('transform') : null;";

/// Polls the page's board until its bib order equals the server's standings.
async fn board_matches(browser: &Browser, admin: &mut Client, race: &str) {
    let expected: Vec<u64> = standings(admin, race)
        .await
        .iter()
        .map(|s| u64::from(s.bib))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let board = browser.eval(BOARD).await;
        let bibs: Vec<u64> = board
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|row| row[0].as_u64())
            .collect();
        if bibs == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page's board {board} never matched the server's order {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_watches_a_live_race_and_survives_a_server_restart() {
    let data = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let server = ChildServer::start_at(data.path(), &listen, &[]);
    let keys = keys_for(data.path());
    let admin_token = token(&keys, Role::Admin, "ops", None, 600);
    let mut admin = Client::connect(&server.url, &admin_token, Codec::Binary)
        .await
        .unwrap();
    let race = live_race_on(
        &mut admin,
        "Celje evening loop",
        gpx_with_checkpoints(RIDE, &[0.25, 0.5, 0.75]),
        T0,
        RACERS,
    )
    .await;
    let course = Course::from_gpx(common::gpx(RIDE).as_bytes(), 200_000).unwrap();
    let index = CourseIndex::from(&course);
    let mut riders = phones(&server.url, &keys, &race).await;
    ride(&mut riders, &index, 0..2).await;

    // The list at / shows the race; clicking it opens the race view.
    let browser = Browser::start().await;
    let page = format!("http://{listen}/");
    browser.goto(&page).await;
    browser
        .wait_for(
            &format!("return document.querySelector('#races tr[data-race=\"{race}\"]') !== null;"),
            Duration::from_secs(15),
        )
        .await;
    browser
        .eval(&format!(
            "document.querySelector('#races tr[data-race=\"{race}\"] a').click(); return true;"
        ))
        .await;
    browser
        .wait_for(
            "return document.querySelector('#course').getAttribute('points');",
            Duration::from_secs(10),
        )
        .await;
    let checkpoints = browser
        .eval("return document.querySelectorAll('#checkpoints [data-checkpoint]').length;")
        .await;
    assert_eq!(checkpoints, 3, "the course's checkpoints are drawn");

    // Racers move on the page while they ride.
    let before = browser.wait_for(MARKER, Duration::from_secs(10)).await;
    ride(&mut riders, &index, 2..8).await;
    let moved = browser
        .wait_for(
            &format!("const t = (function() {{ {MARKER} }})(); return t !== {before} ? t : null;"),
            Duration::from_secs(10),
        )
        .await;
    assert_ne!(moved, before);
    board_matches(&browser, &mut admin, &race).await;
    let spectators = browser
        .eval("return document.querySelector('#spectators').textContent;")
        .await;
    assert!(
        spectators.as_str().unwrap().contains("watching"),
        "{spectators}"
    );

    let artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(artifacts.join("web-live-race.png"), &png).unwrap();

    // The server dies: the page says it is reconnecting, then resumes on the new process.
    let seq_before = browser.eval("return window.peloton.seq;").await;
    drop(riders);
    admin.close().await;
    server.kill9();
    browser
        .wait_for(
            "return document.querySelector('#status').dataset.state === 'reconnecting';",
            Duration::from_secs(10),
        )
        .await;
    let server = ChildServer::start_at(data.path(), &listen, &[]);
    let mut admin = Client::connect(&server.url, &admin_token, Codec::Binary)
        .await
        .unwrap();
    browser
        .wait_for(
            "return document.querySelector('#status').dataset.state === 'live';",
            Duration::from_secs(20),
        )
        .await;
    let mut riders = phones(&server.url, &keys, &race).await;
    ride(&mut riders, &index, 8..14).await;
    browser
        .wait_for(
            &format!("return window.peloton.seq > {seq_before};"),
            Duration::from_secs(10),
        )
        .await;
    board_matches(&browser, &mut admin, &race).await;
    let leader_km = browser.eval(BOARD).await[0][1]
        .as_str()
        .unwrap()
        .parse::<f64>()
        .unwrap();
    assert!(
        leader_km > 0.9,
        "the leader's distance kept growing after the restart: {leader_km} km"
    );
    std::fs::write(
        artifacts.join("web-after-restart.png"),
        browser.screenshot().await,
    )
    .unwrap();

    // A share link opens the race directly, with no list and no guest token.
    let Reply::Shared { token: share, .. } = admin
        .request(Request::RaceShare {
            race_id: race.clone(),
            ttl_secs: 3600,
        })
        .await
        .unwrap()
    else {
        panic!("shared")
    };
    let link = format!("http://{listen}/?race={race}#token={share}");
    // Pasted into the tab that watches the race, only the fragment changes: the page stays,
    // switches to the link's token and keeps a board that matches the server's, even when a
    // live update lands while it re-subscribes.
    browser.eval("window.samePage = true; return true;").await;
    browser.goto(&link).await;
    board_matches(&browser, &mut admin, &race).await;
    assert_eq!(
        browser.eval("return window.samePage === true;").await,
        true,
        "a new fragment does not reload the page"
    );
    // Opened in a fresh tab, the link loads the page straight into the race.
    browser.goto("about:blank").await;
    browser.goto(&link).await;
    browser
        .wait_for(
            "return document.querySelector('#race-name').textContent === 'Celje evening loop';",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        browser.eval("return window.samePage === undefined;").await,
        true,
        "the link loaded a fresh page"
    );
    board_matches(&browser, &mut admin, &race).await;
    drop(browser);
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_keeps_up_with_a_thousand_racers() {
    const MANY: u32 = 1000;
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
    let race = live_race_on(&mut admin, "Mass start", common::gpx(RIDE), T0, MANY).await;
    let course = Course::from_gpx(common::gpx(RIDE).as_bytes(), 200_000).unwrap();
    let index = CourseIndex::from(&course);
    let Reply::Shared { token: share, .. } = admin
        .request(Request::RaceShare {
            race_id: race.clone(),
            ttl_secs: 3600,
        })
        .await
        .unwrap()
    else {
        panic!("shared")
    };
    let browser = Browser::start().await;
    browser
        .goto(&format!(
            "http://{}/?race={race}#token={share}",
            server.addr
        ))
        .await;
    browser
        .wait_for(
            "return document.querySelector('#course').getAttribute('points');",
            Duration::from_secs(15),
        )
        .await;

    // Every racer rides two batches, spread along the first kilometres.
    let mut riders = Vec::new();
    for bib in 1..=MANY {
        riders.push(racer_phone(&server.url, &keys, &race, bib).await);
    }
    for step in 0..2 {
        for (i, rider) in riders.iter_mut().enumerate() {
            let fixes = batch(&index, 0, step)
                .into_iter()
                .map(|mut f| {
                    let p = index.position_at(100.0 * step as f64 + 3.0 * i as f64);
                    f.lat_e7 = p.lat_e7;
                    f.lon_e7 = p.lon_e7;
                    f
                })
                .collect::<Vec<_>>();
            rider.request(Request::Fixes { fixes }).await.unwrap();
        }
    }
    // The page shows all of them, on the map and on the board, in the server's order.
    let shown = browser
        .wait_for(
            "const n = document.querySelectorAll('#racers g.racer:not([style*=\"none\"])').length;\
             const rows = document.querySelectorAll('#board tbody tr').length;\
             return n === 1000 && rows === 1000 ? [n, rows] : null;",
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(shown, serde_json::json!([1000, 1000]));
    board_matches(&browser, &mut admin, &race).await;
    std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("artifacts")
            .join("web-1000-racers.png"),
        browser.screenshot().await,
    )
    .ok();
    drop(browser);
    server.terminate();
}
