//! The server in cluster mode, against a real `nats-server`: a node journals to JetStream,
//! is killed with `kill -9`, and another node, with an empty data folder of its own and the
//! cluster's secret, takes its race over once the lease lapses and serves everything the
//! first one acknowledged. A node paused past its lease (SIGSTOP) and resumed never writes
//! again for the race another node took.

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
use std::time::{Duration, Instant};

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

/// The environment of cluster node `node` on NATS `url` under `prefix`.
fn node_env<'a>(url: &'a str, prefix: &'a str, node: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("PELOTON_CLUSTER_NATS_URL", url),
        ("PELOTON_CLUSTER_PREFIX", prefix),
        ("PELOTON_CLUSTER_NODE_ID", node),
        // Snapshots every few events, so a takeover reads snapshot + stream.
        ("PELOTON_PERSIST_SNAPSHOT_EVERY", "5"),
    ]
}

/// Asks `admin` for the race's standings until a node serves them; how long that took.
async fn served_within(admin: &mut Client, race: &str, limit: Duration) -> Vec<StandingView> {
    let began = Instant::now();
    loop {
        match admin
            .request(Request::RaceStandings {
                race_id: race.into(),
            })
            .await
        {
            Ok(Reply::Standings(rows)) => return rows,
            Ok(other) => panic!("standings: {other:?}"),
            Err(e) => assert!(
                began.elapsed() < limit,
                "race not served within {limit:?}: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends bib 1's fix `i` (60 m apart, 10 s apart) and answers whether it was acknowledged.
async fn send_fix(phone: &mut Client, index: &CourseIndex, start: i64, i: u32) -> bool {
    let fix = fix_at(index, f64::from(i) * 60.0, start + i64::from(i) * 10_000);
    match phone.request(Request::Fixes { fixes: vec![fix] }).await {
        Ok(Reply::FixesAck { accepted, .. }) => {
            assert_eq!(accepted, 1, "fix {i} judged good");
            true
        }
        Ok(other) => panic!("fix {i}: {other:?}"),
        Err(_) => false,
    }
}

fn progress(rows: &[StandingView], bib: u32) -> u32 {
    rows.iter()
        .find(|r| r.bib == bib)
        .map_or(0, |r| r.progress_dm)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_node_takes_over_what_a_killed_node_acknowledged_within_5_s() {
    let nats = NatsServer::start();
    let prefix = format!("srv{}", free_port());
    let dir_a = tempfile::tempdir().unwrap();
    let node_a = ChildServer::start(dir_a.path(), &node_env(&nats.url, &prefix, "a"));
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
    for i in 1..=30u32 {
        assert!(
            send_fix(&mut phone, &index, start, i).await,
            "fix {i} acked by A"
        );
    }
    let progress_before = progress(&standings(&mut admin, &race).await, 1);
    assert!(progress_before >= 30 * 600 - 300, "{progress_before}");
    drop(phone);
    drop(admin);

    // Node B is up (nothing in its folder but the secret) when A dies.
    let dir_b = node_folder(dir_a.path());
    let node_b = ChildServer::start(dir_b.path(), &node_env(&nats.url, &prefix, "b"));
    let mut admin = Client::connect(&node_b.url, &admin_token, Codec::Json)
        .await
        .unwrap();
    node_a.kill9();
    let killed = Instant::now();
    let rows = served_within(&mut admin, &race, Duration::from_secs(10)).await;
    let took = killed.elapsed();
    eprintln!("race taken over {took:?} after the kill");
    assert!(took < Duration::from_secs(5), "taken over in {took:?}");
    assert_eq!(
        progress(&rows, 1),
        progress_before,
        "bib 1's acknowledged fixes rebuilt the same standing on node B"
    );
    // The racer carries on against node B, after what node A stored.
    let mut phone = racer_phone(&node_b.url, &keys, &race, 1).await;
    assert!(
        send_fix(&mut phone, &index, start, 31).await,
        "fix 31 acked by B"
    );
    assert!(progress(&standings(&mut admin, &race).await, 1) > progress_before);
    assert!(
        !dir_b.path().join("db").exists(),
        "cluster mode writes no sled database"
    );
    node_b.kill9();
}

/// A node paused (SIGSTOP) past its lease, while another takes its race over, and then
/// resumed: it no longer writes the race's journals itself (its socket's fixes are answered
/// by the new owner), and the new owner's journal goes on undisturbed, which it could not if
/// the old owner had appended behind its back (the next append would be fenced).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_that_resumes_never_writes_again() {
    let nats = NatsServer::start();
    let prefix = format!("pause{}", free_port());
    let dir_a = tempfile::tempdir().unwrap();
    let node_a = ChildServer::start(dir_a.path(), &node_env(&nats.url, &prefix, "a"));
    let keys = keys_for(dir_a.path());
    let admin_token = token(&keys, Role::Admin, "ops", None, 3600);
    let mut admin_a = Client::connect(&node_a.url, &admin_token, Codec::Binary)
        .await
        .unwrap();
    let start = now_ms() - 600_000;
    let race = live_race(&mut admin_a, RIDE, start, 2).await;
    let course = Course::from_gpx(common::gpx(RIDE).as_bytes(), 200_000).unwrap();
    let index = CourseIndex::from(&course);
    let mut phone_a = racer_phone(&node_a.url, &keys, &race, 1).await;
    for i in 1..=10u32 {
        assert!(send_fix(&mut phone_a, &index, start, i).await);
    }
    let dir_b = node_folder(dir_a.path());
    let node_b = ChildServer::start(dir_b.path(), &node_env(&nats.url, &prefix, "b"));
    let mut admin_b = Client::connect(&node_b.url, &admin_token, Codec::Json)
        .await
        .unwrap();

    let paused = std::process::Command::new("kill")
        .args(["-STOP", &node_a.child.id().to_string()])
        .status()
        .unwrap();
    assert!(paused.success());
    let rows = served_within(&mut admin_b, &race, Duration::from_secs(10)).await;
    assert_eq!(progress(&rows, 1), 10 * 600, "B took over A's journal");
    let mut phone_b = racer_phone(&node_b.url, &keys, &race, 1).await;
    for i in 11..=15u32 {
        assert!(
            send_fix(&mut phone_b, &index, start, i).await,
            "fix {i} acked by B"
        );
    }

    let resumed = std::process::Command::new("kill")
        .args(["-CONT", &node_a.child.id().to_string()])
        .status()
        .unwrap();
    assert!(resumed.success());
    // A's socket is still open: its fixes now go to B, the race's owner.
    for i in 16..=18u32 {
        assert!(
            send_fix(&mut phone_a, &index, start, i).await,
            "fix {i} on A answered by B"
        );
    }
    // B's journal was never written behind its back: it keeps acknowledging in order.
    for i in 19..=20u32 {
        assert!(
            send_fix(&mut phone_b, &index, start, i).await,
            "fix {i} acked by B"
        );
    }
    let rows = standings(&mut admin_b, &race).await;
    assert_eq!(progress(&rows, 1), 20 * 600);
    drop(phone_a);
    node_a.kill9();
    node_b.kill9();
}

/// Any node takes any socket: a racer and an admin connected to the node that does not own
/// the race are answered by the one that does (fixes acknowledged, standings current); a
/// spectator there is told which node serves the race. When the owner dies, the node the
/// sockets are on takes the race over and the same sockets carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_on_any_node_are_answered_by_the_owner() {
    let nats = NatsServer::start();
    let prefix = format!("fwd{}", free_port());
    let dir_a = tempfile::tempdir().unwrap();
    let node_a = ChildServer::start(dir_a.path(), &node_env(&nats.url, &prefix, "a"));
    let keys = keys_for(dir_a.path());
    let admin_token = token(&keys, Role::Admin, "ops", None, 3600);
    let mut admin_a = Client::connect(&node_a.url, &admin_token, Codec::Binary)
        .await
        .unwrap();
    let start = now_ms() - 600_000;
    let race = live_race(&mut admin_a, RIDE, start, 2).await;
    let course = Course::from_gpx(common::gpx(RIDE).as_bytes(), 200_000).unwrap();
    let index = CourseIndex::from(&course);

    let dir_b = node_folder(dir_a.path());
    let node_b = ChildServer::start(dir_b.path(), &node_env(&nats.url, &prefix, "b"));
    let mut phone_b = racer_phone(&node_b.url, &keys, &race, 1).await;
    let mut admin_b = Client::connect(&node_b.url, &admin_token, Codec::Json)
        .await
        .unwrap();
    for i in 1..=10u32 {
        assert!(
            send_fix(&mut phone_b, &index, start, i).await,
            "fix {i} sent to B, acknowledged by A"
        );
    }
    // Both nodes answer with A's current standing.
    assert_eq!(progress(&standings(&mut admin_b, &race).await, 1), 10 * 600);
    assert_eq!(progress(&standings(&mut admin_a, &race).await, 1), 10 * 600);
    // A spectator on B is told where the race is served.
    let viewer = token(&keys, Role::Spectator, "viewer", None, 600);
    let mut spectator = Client::connect(&node_b.url, &viewer, Codec::Binary)
        .await
        .unwrap();
    let refused = spectator
        .request(Request::RaceSubscribe {
            race_id: race.clone(),
            since_seq: None,
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("served by node a"), "{refused}");

    drop(admin_a);
    node_a.kill9();
    // The same sockets on B carry on once B has taken the race over.
    let began = Instant::now();
    let mut i = 11;
    while i <= 15 {
        if send_fix(&mut phone_b, &index, start, i).await {
            i += 1;
        } else {
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "B never took over"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(progress(&standings(&mut admin_b, &race).await, 1), 15 * 600);
    node_b.kill9();
}
