//! `kill -9` in the middle of a stream of acknowledged admin commands: after a restart every
//! acknowledged change is there.

mod common;

use common::{gpx, keys_for, token, ChildServer};
use peloton::auth::Role;
use peloton::net::client::Client;
use peloton::net::codec::Codec;
use peloton::net::protocol::{RaceCreate, RaceStateView, Reply, Request};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn next(state: RaceStateView) -> Option<RaceStateView> {
    match state {
        RaceStateView::Scheduled => Some(RaceStateView::Live),
        RaceStateView::Live => Some(RaceStateView::Finished),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_change_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    // Snapshot every 2 events so the kill also lands around snapshots and compaction.
    let server = ChildServer::start(dir.path(), &[("PELOTON_PERSIST_SNAPSHOT_EVERY", "2")]);
    let admin = token(&keys_for(dir.path()), Role::Admin, "ops", None, 3600);
    let course = gpx("loop-celje-resevno-2020-09-20.gpx");
    let acked: Arc<Mutex<HashMap<String, RaceStateView>>> = Arc::default();
    // The races start far ahead (2100), so only acknowledged commands move them, not the clock.

    let stream = {
        let (url, admin, acked) = (server.url.clone(), admin.clone(), acked.clone());
        tokio::spawn(async move {
            let mut client = Client::connect(&url, &admin, Codec::Binary).await.unwrap();
            for i in 0.. {
                let request = if i % 3 == 0 {
                    Request::RaceCreate(RaceCreate {
                        name: format!("race {i}"),
                        course_gpx: course.clone(),
                        start_at_ms: 4_102_477_200_000,
                        cutoff_at_ms: None,
                    })
                } else {
                    let pending = acked
                        .lock()
                        .unwrap()
                        .iter()
                        .find(|(_, s)| next(**s).is_some())
                        .map(|(id, s)| (id.clone(), *s));
                    match pending {
                        Some((id, RaceStateView::Scheduled)) => Request::RaceStart { id },
                        Some((id, _)) => Request::RaceFinish { id },
                        None => continue,
                    }
                };
                match client.request(request).await {
                    Ok(Reply::Race(race)) => {
                        acked.lock().unwrap().insert(race.id, race.state);
                    }
                    Ok(other) => panic!("unexpected reply {other:?}"),
                    Err(_) => return i,
                }
            }
            unreachable!()
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9();
    let sent = stream.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 5,
        "the stream made progress before the kill ({sent} requests)"
    );

    let server = ChildServer::start(dir.path(), &[]);
    let mut client = Client::connect(&server.url, &admin, Codec::Json)
        .await
        .unwrap();
    let Reply::Races(races) = client.request(Request::RaceList).await.unwrap() else {
        panic!("list")
    };
    let found: HashMap<String, RaceStateView> =
        races.into_iter().map(|r| (r.id, r.state)).collect();
    let mut ahead = 0;
    for (id, state) in &acked {
        let now = found
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged race {id} lost"));
        if now != state {
            // Only the one command in flight at the kill may have landed without its ack.
            assert_eq!(
                Some(*now),
                next(*state),
                "race {id} went from acked {state:?} to {now:?}"
            );
            ahead += 1;
        }
    }
    assert!(ahead <= 1, "{ahead} races moved without an acknowledgement");
    assert!(
        found.len() <= acked.len() + 1,
        "at most one unacknowledged create"
    );
    // The recovered server keeps working.
    let Reply::Race(_) = client
        .request(Request::RaceCreate(RaceCreate {
            name: "after".into(),
            course_gpx: gpx("loop-celje-resevno-2020-09-20.gpx"),
            start_at_ms: 4_102_477_200_000,
            cutoff_at_ms: None,
        }))
        .await
        .unwrap()
    else {
        panic!("create after recovery")
    };
    server.kill9();
}
