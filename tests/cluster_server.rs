//! The server in cluster mode, against a real `nats-server`: a node journals to JetStream,
//! is killed with `kill -9`, and another node, with an empty data folder of its own and the
//! cluster's secret, serves everything the first one acknowledged: races, their states, a
//! racer's fixes.

mod common;

use common::nats::NatsServer;
use common::{fix_at, free_port, keys_for, live_race, racer_phone, token, ChildServer};
use peloton::auth::Role;
use peloton::geo::{Course, CourseIndex};
use peloton::net::client::Client;
use peloton::net::codec::Codec;
use peloton::net::protocol::{Reply, Request, StandingView};
use peloton::time::now_ms;
use std::path::Path;

const RIDE: &str = "loop-celje-resevno-2020-09-20.gpx";

/// A node's data folder holding the cluster's signing secret (copied from the first node,
/// as an operator shares it with `PELOTON_AUTH_SECRET` or the secret file).
fn node_folder(secret_from: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        secret_from.join("secret.key"),
        dir.path().join("secret.key"),
    )
    .unwrap();
    dir
}

async fn standings(admin: &mut Client, race: &str) -> Vec<StandingView> {
    let Ok(Reply::Standings(rows)) = admin
        .request(Request::RaceStandings {
            race_id: race.into(),
        })
        .await
    else {
        panic!("standings")
    };
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_node_serves_what_a_killed_node_acknowledged() {
    let nats = NatsServer::start();
    let prefix = format!("srv{}", free_port());
    let env = [
        ("PELOTON_CLUSTER_NATS_URL", nats.url.as_str()),
        ("PELOTON_CLUSTER_PREFIX", prefix.as_str()),
        // Snapshots every few events, so the takeover reads snapshot + stream.
        ("PELOTON_PERSIST_SNAPSHOT_EVERY", "5"),
    ];
    let dir_a = tempfile::tempdir().unwrap();
    let node_a = ChildServer::start(dir_a.path(), &env);
    let keys = keys_for(dir_a.path());
    let admin_token = token(&keys, Role::Admin, "ops", None, 3600);
    let mut admin = Client::connect(&node_a.url, &admin_token, Codec::Binary)
        .await
        .unwrap();
    let start = now_ms() - 600_000;
    let race = live_race(&mut admin, RIDE, start, 3).await;
    let course = Course::from_gpx(common::gpx(RIDE).as_bytes(), 200_000).unwrap();
    let index = CourseIndex::from(&course);
    let mut phone = racer_phone(&node_a.url, &keys, &race, 1).await;
    let mut acked_at_m = 0.0;
    for i in 1..=30u32 {
        let position_m = f64::from(i) * 60.0;
        let fix = fix_at(&index, position_m, start + i64::from(i) * 10_000);
        match phone.request(Request::Fixes { fixes: vec![fix] }).await {
            Ok(Reply::FixesAck { accepted, .. }) => {
                assert_eq!(accepted, 1, "fix {i} accepted");
                acked_at_m = position_m;
            }
            other => panic!("fix {i}: {other:?}"),
        }
    }
    let before = standings(&mut admin, &race).await;
    let progress_before = before.iter().find(|r| r.bib == 1).unwrap().progress_dm;
    assert!(f64::from(progress_before) >= acked_at_m * 10.0 - 300.0);
    drop(phone);
    drop(admin);
    node_a.kill9();

    // Another node: nothing in its own folder but the secret.
    let dir_b = node_folder(dir_a.path());
    let node_b = ChildServer::start(dir_b.path(), &env);
    let mut admin = Client::connect(&node_b.url, &admin_token, Codec::Json)
        .await
        .unwrap();
    let Reply::Races(races) = admin.request(Request::RaceList).await.unwrap() else {
        panic!("list")
    };
    assert!(
        races.iter().any(|r| r.id == race),
        "the race is served by node B"
    );
    let after = standings(&mut admin, &race).await;
    let progress_after = after.iter().find(|r| r.bib == 1).unwrap().progress_dm;
    assert_eq!(
        progress_after, progress_before,
        "bib 1's acknowledged fixes rebuilt the same standing on node B"
    );
    // The racer carries on against node B, after what node A stored.
    let mut phone = racer_phone(&node_b.url, &keys, &race, 1).await;
    let fix = fix_at(&index, 31.0 * 60.0, start + 310_000);
    match phone.request(Request::Fixes { fixes: vec![fix] }).await {
        Ok(Reply::FixesAck { accepted, .. }) => assert_eq!(accepted, 1),
        other => panic!("fix on node B: {other:?}"),
    }
    let moved = standings(&mut admin, &race).await;
    assert!(moved.iter().find(|r| r.bib == 1).unwrap().progress_dm > progress_after);
    // Node B keeps nothing of the race in its own folder: sled is not opened at all.
    assert!(
        !dir_b.path().join("db").exists(),
        "cluster mode writes no sled database"
    );
    node_b.kill9();
}
