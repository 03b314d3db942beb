//! Rank order and gap order agree on every update a spectator receives, over a whole race.
//!
//! A real recorded ride is raced by racers of different paces and start offsets against the
//! real in-process server, their phones sending fixes over real sockets in race-time order
//! (as `peloton sim race` does, with its pure ride and track code, but paced by this test so
//! it runs in seconds). A spectator subscribed from before the start applies the snapshot and
//! then every update it receives, and checks the whole table after each one: ranks are
//! 1..n, finishers come first, distance never increases down the racers still on the course,
//! and the gap to the leader never decreases down the ranks. A racer further back is never
//! shown closer to the leader in time than a racer ahead of it.

mod common;

use common::{gpx, live_race_on, racer_phone, token, TestServer};
use peloton::auth::Role;
use peloton::cli::sim::plan::RacerPlan;
use peloton::cli::sim::ride::Ride;
use peloton::cli::sim::track::{RacerTrack, Scheduled};
use peloton::net::client::Client;
use peloton::net::codec::Codec;
use peloton::net::protocol::{RaceStateView, Reply, Request, StandingView, WireFix};
use peloton::time::now_ms;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const RIDE: &str = "loop-celje-resevno-2020-09-20.gpx";
/// Race time per step of the test: every phone sends what it recorded in this much.
const STEP_MS: i64 = 90_000;
/// (pace relative to the recording, start offset after the gun): the fast ones start late
/// and the slow ones early, so the field overtakes and ranks change along the way.
const RACERS: [(f64, i64); 5] = [
    (1.12, 240_000),
    (0.88, 0),
    (1.0, 60_000),
    (0.94, 20_000),
    (1.06, 120_000),
];

/// What the spectator saw.
#[derive(Debug, Default)]
struct Seen {
    /// Updates received and checked (the snapshot not counted).
    updates: usize,
    /// Updates after which at least three racers on the course had different gaps.
    spread: usize,
    /// Leaders seen, in order of first appearance.
    leaders: Vec<u32>,
    /// The last table.
    table: BTreeMap<u32, StandingView>,
}

/// The spectator's check on one whole table.
fn check(table: &BTreeMap<u32, StandingView>, seen: &mut Seen, what: &str) {
    let mut rows: Vec<StandingView> = table.values().copied().collect();
    rows.sort_by_key(|r| r.rank);
    let ranks: Vec<u32> = rows.iter().map(|r| r.rank).collect();
    let expected: Vec<u32> = (1..=u32::try_from(rows.len()).unwrap()).collect();
    assert_eq!(ranks, expected, "{what}: ranks are 1..n: {rows:?}");
    if let Some(leader) = rows.first() {
        if leader.gap_ms.is_some() {
            assert_eq!(leader.gap_ms, Some(0), "{what}: the leader's gap: {rows:?}");
        }
        if !seen.leaders.contains(&leader.bib) {
            seen.leaders.push(leader.bib);
        }
    }
    for pair in rows.windows(2) {
        let (ahead, behind) = (&pair[0], &pair[1]);
        if let (Some(a), Some(b)) = (ahead.gap_ms, behind.gap_ms) {
            assert!(
                a <= b,
                "{what}: rank {} is +{a} ms but rank {} behind it is +{b} ms: {rows:?}",
                ahead.rank,
                behind.rank
            );
        }
        assert!(
            behind.gap_ms.is_none() || ahead.gap_ms.is_some(),
            "{what}: a row without a gap ranks above one with: {rows:?}"
        );
        if ahead.finished_at_ms.is_none() {
            assert!(
                behind.finished_at_ms.is_none(),
                "{what}: finishers come first: {rows:?}"
            );
            assert!(
                ahead.progress_dm >= behind.progress_dm,
                "{what}: rank {} at {} dm ahead of rank {} at {} dm: {rows:?}",
                ahead.rank,
                ahead.progress_dm,
                behind.rank,
                behind.progress_dm
            );
        }
    }
    let mut racing_gaps: Vec<i64> = rows
        .iter()
        .filter(|r| r.finished_at_ms.is_none())
        .filter_map(|r| r.gap_ms)
        .collect();
    racing_gaps.dedup();
    if racing_gaps.len() >= 3 {
        seen.spread += 1;
    }
}

/// Subscribes and checks every update until all `racers` have finished or `limit` passes.
async fn watch(mut fan: Client, race_id: String, racers: usize, limit: Duration) -> Seen {
    let Reply::Subscribed(snapshot) = fan
        .request(Request::RaceSubscribe {
            race_id,
            since_seq: None,
        })
        .await
        .unwrap()
    else {
        panic!("subscribed")
    };
    let mut live = common::LiveTable::from_snapshot(snapshot);
    let mut seen = Seen {
        table: live.rows.clone(),
        ..Seen::default()
    };
    check(&seen.table.clone(), &mut seen, "snapshot");
    let deadline = tokio::time::Instant::now() + limit;
    while seen
        .table
        .values()
        .filter(|r| r.finished_at_ms.is_some())
        .count()
        < racers
    {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(
            !left.is_zero(),
            "the race did not finish in time: {:?}",
            seen.table
        );
        match fan.next_push(left).await {
            // A delta never skips a sequence number; a catch-up continues the last update.
            Ok(push) => {
                if let Err(other) = live.apply(push) {
                    panic!("unexpected push {other:?}");
                }
            }
            Err(e) => panic!("spectator stopped hearing: {e}; {:?}", seen.table),
        }
        seen.table = live.rows.clone();
        seen.updates += 1;
        let what = format!("update {}", live.seq);
        check(&seen.table.clone(), &mut seen, &what);
    }
    fan.close().await;
    seen
}

/// Every fix racer `bib` will send, in order.
fn track(
    ride: &Arc<Ride>,
    bib: u32,
    pace: f64,
    offset_ms: i64,
    start_at_ms: i64,
) -> Vec<Scheduled> {
    let plan = RacerPlan {
        bib,
        offset_ms,
        pace,
        noise_m: 2.0,
        noise_seed: 0x5eed_0000 + u64::from(bib),
    };
    RacerTrack::new(Arc::clone(ride), plan, start_at_ms).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rank_order_and_gap_order_agree_on_every_update_of_a_whole_race() {
    let server = TestServer::start_with(|c| {
        c.race.tick_ms = 20;
        // Race time runs hours ahead of the wall clock here, as a sped-up simulation's does.
        c.tracking.device_time.max_future_skew_ms = 86_400_000;
    })
    .await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    let n = u32::try_from(RACERS.len()).unwrap();
    // The phones stamp their fixes with race time from the planned start, running ahead of
    // the wall clock by the speed-up, as `peloton sim race` does. A minute ahead, so the
    // race is still waiting for its start when the helper fires the gun.
    let start_at_ms = now_ms() + 60_000;
    let race_id = live_race_on(&mut admin, "Standings order", gpx(RIDE), start_at_ms, n).await;

    let fan = Client::connect(
        &server.url,
        &token(&server.keys, Role::Spectator, "fan", Some(&race_id), 600),
        Codec::Json,
    )
    .await
    .unwrap();
    let spectator = tokio::spawn(watch(
        fan,
        race_id.clone(),
        RACERS.len(),
        Duration::from_secs(60),
    ));

    let ride = Arc::new(Ride::from_gpx(gpx(RIDE).as_bytes(), 200_000).unwrap());
    let mut phones = Vec::new();
    let mut last_ms = 0;
    for (i, (pace, offset_ms)) in RACERS.iter().enumerate() {
        let bib = u32::try_from(i + 1).unwrap();
        let phone = racer_phone(&server.url, &server.keys, &race_id, bib).await;
        let fixes = track(&ride, bib, *pace, *offset_ms, start_at_ms);
        last_ms = last_ms.max(fixes.last().map_or(0, |s| s.race_ms));
        phones.push((phone, fixes.into_iter().peekable()));
    }
    let mut clock_ms = 0;
    let mut closed = vec![false; phones.len()];
    while clock_ms <= last_ms + STEP_MS {
        clock_ms += STEP_MS;
        for (i, (phone, fixes)) in phones.iter_mut().enumerate() {
            let mut due: Vec<WireFix> = Vec::new();
            while let Some(next) = fixes.next_if(|s| s.race_ms <= clock_ms) {
                due.push(next.fix);
            }
            if due.is_empty() || closed[i] {
                continue;
            }
            match phone.request(Request::Fixes { fixes: due }).await {
                Ok(Reply::FixesAck { .. }) => {}
                // The race finished by itself once the last racer crossed the line; the
                // rest of the run-out has nowhere to go.
                Err(e) if e.code() == Some(peloton::error::ErrorCode::InvalidTransition) => {
                    closed[i] = true
                }
                other => panic!("bib {}: {other:?}", i + 1),
            }
        }
        // Let a tick or two go out between steps, as between a real race's fixes.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let seen = spectator.await.unwrap();
    assert!(
        seen.updates >= 100,
        "a whole race of updates: {}",
        seen.updates
    );
    assert!(
        seen.spread >= 20,
        "the field was spread out in time on many updates: {seen:?}"
    );
    assert!(
        seen.leaders.len() >= 2,
        "the lead changed hands at least once: {:?}",
        seen.leaders
    );
    let Reply::Race(race) = admin
        .request(Request::RaceGet {
            id: race_id.clone(),
        })
        .await
        .unwrap()
    else {
        panic!("race")
    };
    assert_eq!(race.state, RaceStateView::Finished, "everyone finished");
    let mut by_finish: Vec<(i64, u32)> = seen
        .table
        .values()
        .map(|r| (r.finished_at_ms.unwrap(), r.bib))
        .collect();
    by_finish.sort_unstable();
    let mut by_rank: Vec<&StandingView> = seen.table.values().collect();
    by_rank.sort_by_key(|r| r.rank);
    assert_eq!(
        by_rank.iter().map(|r| r.bib).collect::<Vec<_>>(),
        by_finish.iter().map(|(_, bib)| *bib).collect::<Vec<_>>(),
        "the final table is in finishing order"
    );
    server.stop().await;
}
