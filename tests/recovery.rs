//! Recovery from snapshot + journal tail across a graceful restart, graceful shutdown
//! closing sockets with 1001, backup while running and restore, and a damaged record
//! stopping start-up with a message naming the actor and sequence.

mod common;

use common::{bin, gpx, keys_for, token, ChildServer};
use peloton::auth::Role;
use peloton::net::client::{Client, ClientError};
use peloton::net::codec::Codec;
use peloton::net::protocol::{RaceCreate, RaceUpdate, RaceView, Reply, Request};
use std::time::Duration;

async fn create(client: &mut Client, name: &str) -> RaceView {
    match client
        .request(Request::RaceCreate(RaceCreate {
            name: name.into(),
            course_gpx: gpx("out-and-back-ljubljana.gpx"),
            start_at_ms: 4_102_477_200_000, // far ahead: the clock leaves it alone
            cutoff_at_ms: None,
        }))
        .await
        .unwrap()
    {
        Reply::Race(r) => r,
        other => panic!("{other:?}"),
    }
}

/// Creates a race and starts it.
async fn create_live(client: &mut Client, name: &str) -> RaceView {
    let race = create(client, name).await;
    match client
        .request(Request::RaceStart {
            id: race.id.clone(),
        })
        .await
        .unwrap()
    {
        Reply::Race(r) => r,
        other => panic!("{other:?}"),
    }
}

/// A child server on `dir` with an admin client connected to it.
async fn serve_with_admin(dir: &std::path::Path) -> (ChildServer, String, Client) {
    let server = ChildServer::start(dir, &[]);
    let admin = token(&keys_for(dir), Role::Admin, "ops", None, 3600);
    let client = Client::connect(&server.url, &admin, Codec::Binary)
        .await
        .unwrap();
    (server, admin, client)
}

async fn list(client: &mut Client) -> Vec<RaceView> {
    match client.request(Request::RaceList).await.unwrap() {
        Reply::Races(r) => r,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_plus_tail_survives_restart_and_shutdown_closes_with_1001() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("PELOTON_PERSIST_SNAPSHOT_EVERY", "2")];
    let server = ChildServer::start(dir.path(), &env);
    let admin = token(&keys_for(dir.path()), Role::Admin, "ops", None, 3600);
    let mut client = Client::connect(&server.url, &admin, Codec::Binary)
        .await
        .unwrap();
    let a = create(&mut client, "A").await;
    for name in ["A1", "A2", "A3"] {
        let update = RaceUpdate {
            id: a.id.clone(),
            name: Some(name.into()),
            course_gpx: None,
            start_at_ms: None,
            cutoff_at_ms: None,
            clear_cutoff: false,
        };
        client.request(Request::RaceUpdate(update)).await.unwrap();
    }
    client
        .request(Request::RaceStart { id: a.id.clone() })
        .await
        .unwrap();
    let b = create(&mut client, "B").await;
    client
        .request(Request::RaceCancel {
            id: b.id.clone(),
            reason: Some("rain".into()),
        })
        .await
        .unwrap();
    create(&mut client, "C").await;
    let before = list(&mut client).await;

    let mut watcher = Client::connect(&server.url, &admin, Codec::Json)
        .await
        .unwrap();
    let waiting = tokio::spawn(async move { watcher.next_push(Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.terminate(), Some(0), "SIGTERM exits cleanly");
    match waiting.await.unwrap() {
        Err(ClientError::Closed(Some((1001, _)))) => {}
        other => panic!("expected close 1001 at shutdown, got {other:?}"),
    }

    let server = ChildServer::start(dir.path(), &env);
    let mut client = Client::connect(&server.url, &admin, Codec::Binary)
        .await
        .unwrap();
    assert_eq!(
        list(&mut client).await,
        before,
        "identical after snapshot + journal replay"
    );
    server.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_running_restores_into_a_new_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin, mut client) = serve_with_admin(dir.path()).await;
    create_live(&mut client, "kept").await;
    let at_backup = list(&mut client).await;

    let file = dir.path().join("snap.pbak");
    let out = bin()
        .args([
            "admin",
            "--server",
            &server.url,
            "--token",
            &admin,
            "backup",
            "--json",
            "--out",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(summary["records"].as_u64().unwrap() >= 3, "{summary}");
    create(&mut client, "after the backup").await;
    server.kill9();

    let restore = |data: &std::path::Path| {
        bin()
            .arg("restore")
            .arg(&file)
            .arg("--data")
            .arg(data)
            .output()
            .unwrap()
    };
    let restored = tempfile::tempdir().unwrap();
    let out = restore(restored.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = restore(restored.path());
    assert_eq!(
        again.status.code(),
        Some(1),
        "restoring over a database is refused"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    let (server, _, mut client) = serve_with_admin(restored.path()).await;
    assert_eq!(list(&mut client).await, at_backup);
    server.kill9();

    let mut damaged = std::fs::read(&file).unwrap();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    std::fs::write(&file, damaged).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let out = restore(elsewhere.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        !elsewhere.path().join("db").exists(),
        "nothing restored from a damaged file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_stops_startup_naming_actor_and_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _, mut client) = serve_with_admin(dir.path()).await;
    let race = create_live(&mut client, "fragile").await;
    server.kill9();

    {
        let db = sled::open(dir.path().join("db")).unwrap();
        let journal = db.open_tree("journal").unwrap();
        let (key, _) = journal.last().unwrap().unwrap();
        journal.insert(key, vec![1u8, 0xff, 0xff, 0xff]).unwrap();
        db.flush().unwrap();
    }
    let out = bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("race/{}", race.id)) && stderr.contains("sequence 2"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening on"));
}
