//! The whole scale-out scenario on real parts: three `nats-server`s routed into one cluster
//! (JetStream, every stream and bucket with three replicas) and three `peloton` nodes. A
//! live race is created on node A, which owns it; its racers' phones send their fixes to A,
//! spectators watch from B and C (each node's mirror of A's feed). Half way through, A is
//! killed with `kill -9`: the race's lease moves to a survivor, the phones move along the
//! node list and send again what was not acknowledged, the spectators stay on their sockets
//! and follow the new owner. At the end:
//! - no acknowledged fix is lost: every racer's standing is its last acknowledged fix;
//! - the standings equal those of one node (sled, in process) fed the same fixes;
//! - every spectator's table, built only from the pushes it was sent, with a panic on any
//!   delta that skips a sequence number (`LiveTable`), equals the standings.

mod common;

use common::nats::NatsServer;
use common::{
    fix_at, keys_for, live_race, live_race_on, node_folder, token, ChildServer, LiveTable,
};
use peloton::auth::{Keys, Role};
use peloton::geo::{Course, CourseIndex};
use peloton::net::client::Client;
use peloton::net::codec::Codec;
use peloton::net::protocol::{Reply, Request, StandingView};
use peloton::time::now_ms;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const RIDE: &str = "loop-celje-resevno-2020-09-20.gpx";
/// Racers in the race.
const RACERS: u32 = 4;
/// Fixes each racer sends, 10 s of device time apart.
const FIXES: u32 = 30;
/// The owner is killed once every racer had this many fixes acknowledged.
const KILL_AFTER: u32 = 12;

/// Where racer `bib`'s fix `i` is along the course: each racer at its own pace.
fn metres(bib: u32, i: u32) -> f64 {
    f64::from(i) * f64::from(50 + 5 * bib)
}

/// Node `node`'s environment on the three NATS servers `urls`.
fn node_env<'a>(urls: &'a str, prefix: &'a str, node: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("PELOTON_CLUSTER_NATS_URL", urls),
        ("PELOTON_CLUSTER_PREFIX", prefix),
        ("PELOTON_CLUSTER_NODE_ID", node),
        ("PELOTON_CLUSTER_REPLICAS", "3"),
        ("PELOTON_PERSIST_SNAPSHOT_EVERY", "5"),
    ]
}

/// One racer's phone and what it had acknowledged.
struct Phone {
    /// Its bib.
    bib: u32,
    /// Its socket (moved to another node when its node dies).
    socket: Client,
    /// Its racer token, to connect again.
    token: String,
    /// The fixes acknowledged, in order.
    acked: Vec<u32>,
    /// How many times it connected to another node.
    moves: u32,
}

impl Phone {
    /// Sends fix `i` until a node acknowledges it, moving along `nodes` (the node list)
    /// whenever its socket fails; at most 20 s.
    async fn send(&mut self, i: u32, index: &CourseIndex, start: i64, nodes: &[String]) {
        let fix = fix_at(index, metres(self.bib, i), start + i64::from(i) * 10_000);
        let began = Instant::now();
        loop {
            match self
                .socket
                .request(Request::Fixes { fixes: vec![fix] })
                .await
            {
                Ok(Reply::FixesAck { .. }) => {
                    self.acked.push(i);
                    return;
                }
                Ok(other) => panic!("bib {} fix {i}: {other:?}", self.bib),
                Err(e) => {
                    assert!(
                        began.elapsed() < Duration::from_secs(20),
                        "bib {} fix {i} never acknowledged: {e}",
                        self.bib
                    );
                    if let Ok((socket, _)) =
                        Client::connect_any(nodes, &self.token, Codec::Binary).await
                    {
                        self.socket = socket;
                        self.moves += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// A spectator socket on `url`, subscribed, and its table.
async fn spectator(url: &str, keys: &Keys, race: &str, name: &str) -> (Client, LiveTable) {
    let viewer = token(keys, Role::Spectator, name, None, 600);
    let mut socket = Client::connect(url, &viewer, Codec::Binary).await.unwrap();
    let reply = socket
        .request(Request::RaceSubscribe {
            race_id: race.to_owned(),
            since_seq: None,
        })
        .await
        .unwrap();
    let Reply::Subscribed(snapshot) = reply else {
        panic!("{name} subscribed: {reply:?}")
    };
    (socket, LiveTable::from_snapshot(snapshot))
}

/// Reads the spectator's pushes into its table (panicking on a silent gap) until `stop`.
async fn watch(
    mut socket: Client,
    mut table: LiveTable,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (Client, LiveTable) {
    while !*stop.borrow_and_update() {
        tokio::select! {
            push = socket.next_push(Duration::from_secs(1)) => {
                if let Ok(push) = push {
                    if let Err(other) = table.apply(push) {
                        panic!("unexpected push {other:?}");
                    }
                }
            }
            _ = stop.changed() => {}
        }
    }
    (socket, table)
}

/// (rank, progress, checkpoints) by bib: what two runs of the same fixes must agree on.
fn by_bib(rows: &[StandingView]) -> BTreeMap<u32, (u32, u32, u16)> {
    rows.iter()
        .map(|r| (r.bib, (r.rank, r.progress_dm, r.checkpoints_passed)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_lose_the_owner_and_lose_nothing() {
    let nats = NatsServer::cluster(3);
    let urls = nats
        .iter()
        .map(|n| n.url.clone())
        .collect::<Vec<_>>()
        .join(",");
    let prefix = format!("three{}", common::free_port());
    let dir_a = tempfile::tempdir().unwrap();
    let mut node_a = Some(ChildServer::start(
        dir_a.path(),
        &node_env(&urls, &prefix, "a"),
    ));
    let keys = keys_for(dir_a.path());
    let admin_token = token(&keys, Role::Admin, "ops", None, 3600);
    let a_url = node_a.as_ref().unwrap().url.clone();
    let mut admin_a = Client::connect(&a_url, &admin_token, Codec::Binary)
        .await
        .unwrap();
    let start = now_ms() - 600_000;
    let race = live_race(&mut admin_a, RIDE, start, RACERS).await;
    drop(admin_a);
    let (dir_b, dir_c) = (node_folder(dir_a.path()), node_folder(dir_a.path()));
    let node_b = ChildServer::start(dir_b.path(), &node_env(&urls, &prefix, "b"));
    let node_c = ChildServer::start(dir_c.path(), &node_env(&urls, &prefix, "c"));
    let survivors = vec![node_b.url.clone(), node_c.url.clone()];
    let course = Course::from_gpx(common::gpx(RIDE).as_bytes(), 200_000).unwrap();
    let index = CourseIndex::from(&course);

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut watchers = Vec::new();
    for (n, url) in survivors.iter().chain(survivors.iter()).enumerate() {
        let (socket, table) = spectator(url, &keys, &race, &format!("fan{n}")).await;
        watchers.push(tokio::spawn(watch(socket, table, stopped.clone())));
    }
    let mut phones = Vec::new();
    for bib in 1..=RACERS {
        let token = token(&keys, Role::Racer, &bib.to_string(), Some(&race), 600);
        let socket = Client::connect(&a_url, &token, Codec::Binary)
            .await
            .unwrap();
        phones.push(Phone {
            bib,
            socket,
            token,
            acked: Vec::new(),
            moves: 0,
        });
    }
    let mut killed = None;
    for i in 1..=FIXES {
        if i == KILL_AFTER + 1 {
            if let Some(owner) = node_a.take() {
                owner.kill9();
                killed = Some(Instant::now());
            }
        }
        for phone in &mut phones {
            phone.send(i, &index, start, &survivors).await;
        }
        if i == KILL_AFTER + 1 {
            eprintln!(
                "every racer's fix acknowledged again {:?} after the kill",
                killed.map(|k| k.elapsed())
            );
        }
    }
    for phone in &phones {
        assert!(
            phone.moves >= 1,
            "bib {} moved off the killed owner",
            phone.bib
        );
        assert_eq!(phone.acked, (1..=FIXES).collect::<Vec<_>>());
    }

    // Every acknowledged fix is in the survivors' standings.
    let mut admin = Client::connect(&node_b.url, &admin_token, Codec::Binary)
        .await
        .unwrap();
    let rows = common::standings(&mut admin, &race).await;
    for phone in &phones {
        let last = *phone.acked.last().unwrap();
        let row = rows.iter().find(|r| r.bib == phone.bib).unwrap();
        assert_eq!(
            f64::from(row.progress_dm),
            (metres(phone.bib, last) * 10.0).round(),
            "bib {}: its last acknowledged fix",
            phone.bib
        );
    }

    // One node fed the same acknowledged fixes agrees row for row.
    let single = common::TestServer::start().await;
    let mut single_admin = single.client(Role::Admin, Codec::Binary).await;
    let single_race = live_race_on(
        &mut single_admin,
        "Same fixes",
        common::gpx(RIDE),
        start,
        RACERS,
    )
    .await;
    for phone in &phones {
        let mut socket =
            common::racer_phone(&single.url, &single.keys, &single_race, phone.bib).await;
        for &i in &phone.acked {
            let fix = fix_at(&index, metres(phone.bib, i), start + i64::from(i) * 10_000);
            let reply = socket.request(Request::Fixes { fixes: vec![fix] }).await;
            assert!(matches!(reply, Ok(Reply::FixesAck { .. })), "{reply:?}");
        }
    }
    let single_rows = common::standings(&mut single_admin, &single_race).await;
    assert_eq!(
        by_bib(&rows),
        by_bib(&single_rows),
        "three nodes through a kill and one node, the same fixes, the same standings"
    );
    single.stop().await;

    // Each spectator's table, from its pushes alone, reaches the same standings.
    let _ = stop.send(true);
    let want: BTreeMap<u32, u32> = rows.iter().map(|r| (r.bib, r.progress_dm)).collect();
    for watcher in watchers {
        let (mut socket, mut table) = watcher.await.expect("no spectator saw a silent gap");
        let seq_before = table.seq;
        let began = Instant::now();
        loop {
            let have: BTreeMap<u32, u32> = table
                .rows
                .values()
                .map(|r| (r.bib, r.progress_dm))
                .collect();
            if have == want {
                break;
            }
            assert!(
                began.elapsed() < Duration::from_secs(15),
                "a spectator's table {have:?} never reached {want:?}"
            );
            if let Ok(push) = socket.next_push(Duration::from_secs(1)).await {
                if let Err(other) = table.apply(push) {
                    panic!("unexpected push {other:?}");
                }
            }
        }
        eprintln!(
            "spectator: seq {} (at stop {seq_before}), {} catch-ups",
            table.seq, table.catch_ups
        );
    }
    drop(nats);
}
