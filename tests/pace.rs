//! The server sets each racer's reporting interval: a racer alone on the road is asked for a
//! fix every `pace_max_ms`, two racers fighting for a place every `pace_min_ms`, each told
//! by a `pace` push right after a `fixes_ack`, and only when the interval changes.

mod common;

use common::{gpx, live_race_on, racer_phone, TestServer};
use peloton::auth::Role;
use peloton::geo::{Course, CourseIndex};
use peloton::net::client::Client;
use peloton::net::codec::Codec;
use peloton::net::protocol::{Push, Request, WireFix};
use std::time::Duration;

const RIDE: &str = "loop-celje-resevno-2020-09-20.gpx";
const T0: i64 = 1_796_115_600_000;

/// At 8 m/s from the start.
fn fix(index: &CourseIndex, d: f64) -> WireFix {
    common::fix_at(index, d, T0 + (d * 125.0) as i64)
}

/// Sends fixes `from..` metres on, one batch at a time, until a `pace` push for `reason`
/// arrives (earlier ones, from before the others reported, are passed over); the pushes
/// come after their ack, so each send also collects what came with the last one.
async fn ride_until_paced(
    phone: &mut Client,
    index: &CourseIndex,
    from: f64,
    reason: &str,
) -> (u32, String) {
    for step in 0..40 {
        let d = from + f64::from(step) * 2.0;
        phone
            .request(Request::Fixes {
                fixes: vec![fix(index, d)],
            })
            .await
            .unwrap();
        while let Ok(push) = phone.next_push(Duration::from_millis(150)).await {
            if let Push::Pace {
                interval_ms,
                reason: why,
            } = push
            {
                if why == reason {
                    return (interval_ms, why);
                }
            }
        }
    }
    panic!("no `{reason}` pace push after 40 batches")
}

#[tokio::test]
async fn a_lone_racer_is_asked_for_fewer_fixes_than_two_fighting_for_a_place() {
    let server = TestServer::start().await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    let race = live_race_on(&mut admin, "Paced", gpx(RIDE), T0, 3).await;
    let course = Course::from_gpx(gpx(RIDE).as_bytes(), 200_000).unwrap();
    let index = CourseIndex::from(&course);

    // Two racers side by side at 1 km, one alone at 3 km.
    let mut two = racer_phone(&server.url, &server.keys, &race, 2).await;
    let mut three = racer_phone(&server.url, &server.keys, &race, 3).await;
    for d in [1_000.0, 1_008.0] {
        two.request(Request::Fixes {
            fixes: vec![fix(&index, d)],
        })
        .await
        .unwrap();
        three
            .request(Request::Fixes {
                fixes: vec![fix(&index, d + 5.0)],
            })
            .await
            .unwrap();
    }
    let mut one = racer_phone(&server.url, &server.keys, &race, 1).await;
    let alone = ride_until_paced(&mut one, &index, 3_000.0, "alone").await;
    assert_eq!(alone, (10_000, "alone".to_owned()));
    let battle = ride_until_paced(&mut two, &index, 1_016.0, "battle").await;
    assert_eq!(battle, (1_000, "battle".to_owned()));

    // Still alone: no second push for the same interval.
    for step in 0..6 {
        one.request(Request::Fixes {
            fixes: vec![fix(&index, 3_400.0 + f64::from(step) * 8.0)],
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        one.next_push(Duration::from_millis(300)).await.is_err(),
        "a pace push only when the interval changes"
    );
}
