//! Time from devices is bounded, over real sockets: a fix or a mail envelope dated far from
//! the server's clock is refused with `bad_time` and changes nothing, so one bad clock cannot
//! make a racer's real fixes stale; and a fix from an unregistered bib is told so, without
//! the actor runtime's internals.

mod common;

use common::{live_race, racer_phone, TestServer};
use peloton::auth::Role;
use peloton::error::ErrorCode;
use peloton::geo::{Course, CourseIndex};
use peloton::net::client::{Client, ClientError};
use peloton::net::codec::Codec;
use peloton::net::protocol::{MailEnvelope, MailMessageView, Reply, Request, WireFix};
use peloton::time::now_ms;

const RIDE: &str = "out-and-back-ljubljana.gpx";

/// A fix `along_m` metres along the course, dated `at_ms`.
fn fix_at(at_ms: i64, along_m: f64) -> WireFix {
    let course = Course::from_gpx(common::gpx(RIDE).as_bytes(), 200_000).unwrap();
    common::fix_at(&CourseIndex::from(&course), along_m, at_ms)
}

/// Sends `fixes` and expects them refused with `code`; the refusal's message.
async fn refused(phone: &mut Client, fixes: Vec<WireFix>, code: ErrorCode) -> String {
    match phone.request(Request::Fixes { fixes }).await {
        Err(ClientError::Server(r)) => {
            assert_eq!(r.code, code, "{}", r.message);
            r.message
        }
        other => panic!("expected {code}, got {other:?}"),
    }
}

/// Sends `fixes` and expects them acknowledged; how many were accepted.
async fn accepted(phone: &mut Client, fixes: Vec<WireFix>) -> u32 {
    match phone.request(Request::Fixes { fixes }).await {
        Ok(Reply::FixesAck { accepted, .. }) => accepted,
        other => panic!("expected fixes_ack, got {other:?}"),
    }
}

#[tokio::test]
async fn a_year_9999_fix_is_refused_and_the_racers_next_real_fix_is_accepted() {
    let server = TestServer::start().await;
    let mut admin = server.client(Role::Admin, Codec::Json).await;
    let race = live_race(&mut admin, RIDE, now_ms() - 60_000, 2).await;
    let mut phone = racer_phone(&server.url, &server.keys, &race, 1).await;

    // 9999-12-31T23:59:59Z: before this fix, it was accepted and every real fix after it
    // was ignored as stale, for good.
    let year_9999 = 253_402_300_799_000;
    let message = refused(&mut phone, vec![fix_at(year_9999, 0.0)], ErrorCode::BadTime).await;
    assert!(message.starts_with("fix 0: at_ms"), "{message}");
    assert!(message.contains("9999-12-31T23:59:59Z"), "{message}");
    let now = now_ms();
    assert_eq!(
        accepted(&mut phone, vec![fix_at(now - 20_000, 0.0)]).await,
        1
    );

    // The whole batch is refused for its first bad fix, and nothing of it was stored: its
    // good fixes are accepted when sent again on their own.
    let batch = vec![
        fix_at(now - 10_000, 40.0),
        fix_at(now - 5_000, 80.0),
        fix_at(i64::MAX, 90.0),
        fix_at(i64::MIN, 100.0),
    ];
    let message = refused(&mut phone, batch.clone(), ErrorCode::BadTime).await;
    assert!(message.starts_with("fix 2: "), "{message}");
    assert_eq!(accepted(&mut phone, batch[..2].to_vec()).await, 2);
}

#[tokio::test]
async fn fixes_far_from_the_clock_or_long_before_the_start_are_refused() {
    let server = TestServer::start().await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    let start = now_ms() - 60_000;
    let race = live_race(&mut admin, RIDE, start, 1).await;
    let mut phone = racer_phone(&server.url, &server.keys, &race, 1).await;

    // i64::MIN used to be accepted and stretch the replay's span back to the dawn of time.
    let message = refused(&mut phone, vec![fix_at(i64::MIN, 0.0)], ErrorCode::BadTime).await;
    assert!(message.starts_with("fix 0: "), "{message}");
    // Before the start by more than tracking.max_fix_age_before_start_ms (6 h).
    let day_before = start - 24 * 3_600_000;
    refused(
        &mut phone,
        vec![fix_at(day_before, 0.0)],
        ErrorCode::BadTime,
    )
    .await;
    // Warming up an hour before the start is fine.
    assert_eq!(
        accepted(&mut phone, vec![fix_at(start - 3_600_000, 0.0)]).await,
        1
    );

    // A phone clock half a minute fast is within tracking.max_future_skew_ms (2 min)...
    let now = now_ms();
    assert_eq!(
        accepted(&mut phone, vec![fix_at(now + 30_000, 50.0)]).await,
        1
    );
    // ...ten minutes fast is not.
    let message = refused(
        &mut phone,
        vec![fix_at(now + 600_000, 100.0)],
        ErrorCode::BadTime,
    )
    .await;
    assert!(message.contains("device's clock"), "{message}");

    // The replay's span is what was accepted, nothing of what was refused.
    let mut spectator = server.client(Role::Spectator, Codec::Json).await;
    match spectator
        .request(Request::RaceReplay {
            race_id: race.clone(),
            speed: 10_000.0,
            from_ms: Some(i64::MIN),
        })
        .await
    {
        Ok(Reply::ReplayStarted { from_ms, to_ms }) => {
            assert_eq!(from_ms, Some(start - 3_600_000));
            assert_eq!(to_ms, Some(now + 30_000));
        }
        other => panic!("expected replay_started, got {other:?}"),
    }
}

#[tokio::test]
async fn a_longer_configured_skew_admits_a_sped_up_simulation() {
    let server =
        TestServer::start_with(|c| c.tracking.device_time.max_future_skew_ms = 6 * 3_600_000).await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    let race = live_race(&mut admin, RIDE, now_ms() - 60_000, 1).await;
    let mut phone = racer_phone(&server.url, &server.keys, &race, 1).await;
    let now = now_ms();
    assert_eq!(
        accepted(&mut phone, vec![fix_at(now + 3_600_000, 0.0)]).await,
        1
    );
    refused(
        &mut phone,
        vec![fix_at(now + 7 * 3_600_000, 10.0)],
        ErrorCode::BadTime,
    )
    .await;
}

#[tokio::test]
async fn a_mail_envelope_sent_in_the_far_future_is_refused() {
    let server = TestServer::start().await;
    let mut admin = server.client(Role::Admin, Codec::Json).await;
    let envelope = |sent_at_ms: i64| {
        Request::MailSubmit(MailEnvelope {
            correlation_id: "clock".into(),
            sequence: 1,
            sent_at_ms,
            messages: vec![MailMessageView {
                to: "citizen@example.org".into(),
                subject: "Hello".into(),
                body: "Hi\n".into(),
                contact: Some("citizen-1".into()),
            }],
        })
    };
    for sent_at_ms in [i64::MAX, 253_402_300_799_000, now_ms() + 600_000] {
        match admin.request(envelope(sent_at_ms)).await {
            Err(ClientError::Server(r)) => {
                assert_eq!(r.code, ErrorCode::BadTime, "{}", r.message);
                assert!(r.message.starts_with("sent_at_ms "), "{}", r.message);
            }
            other => panic!("expected bad_time, got {other:?}"),
        }
    }
    // Nothing was stored: no job exists.
    match admin
        .request(Request::MailList {
            state: None,
            limit: 10,
        })
        .await
    {
        Ok(Reply::MailJobs(jobs)) => assert!(jobs.is_empty(), "{jobs:?}"),
        other => panic!("expected mail_jobs, got {other:?}"),
    }
}

#[tokio::test]
async fn a_fix_from_an_unregistered_bib_says_so_without_internals() {
    let server = TestServer::start().await;
    let mut admin = server.client(Role::Admin, Codec::Json).await;
    let race = live_race(&mut admin, RIDE, now_ms() - 60_000, 2).await;
    for codec in [Codec::Binary, Codec::Json] {
        let token = common::token(&server.keys, Role::Racer, "99", Some(&race), 600);
        let mut phone = Client::connect(&server.url, &token, codec).await.unwrap();
        let message = refused(&mut phone, vec![fix_at(now_ms(), 0.0)], ErrorCode::NotFound).await;
        assert_eq!(message, format!("bib 99 is not registered in race {race}"));
        assert!(!message.contains("panicked"), "{message}");
        assert!(!message.contains("Actor"), "{message}");
    }
    // A registered racer of the same race is unaffected.
    let mut phone = racer_phone(&server.url, &server.keys, &race, 2).await;
    assert_eq!(accepted(&mut phone, vec![fix_at(now_ms(), 0.0)]).await, 1);
}
