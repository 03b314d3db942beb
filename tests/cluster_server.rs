//! The server in cluster mode, against a real `nats-server`: a node journals to JetStream,
//! is killed with `kill -9`, and another node, with an empty data folder of its own and the
//! cluster's secret, takes its race over once the lease lapses and serves everything the
//! first one acknowledged. A node paused past its lease (SIGSTOP) and resumed never writes
//! again for the race another node took.

mod common;

use common::nats::NatsServer;
use common::patrol::officer_row;
use common::{
    fix_at, free_port, keys_for, live_race, node_folder, racer_phone, standings, token,
    ChildServer, LiveTable,
};
use peloton::auth::{Keys, Role};
use peloton::geo::{Course, CourseIndex};
use peloton::net::client::Client;
use peloton::net::codec::Codec;
use peloton::net::protocol::{ImportBatch, Reply, Request, StandingView};
use peloton::time::now_ms;
use std::time::{Duration, Instant};

const RIDE: &str = "loop-celje-resevno-2020-09-20.gpx";

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
        Err(e) => {
            eprintln!("fix {i} not acknowledged: {e}");
            false
        }
    }
}

fn progress(rows: &[StandingView], bib: u32) -> u32 {
    rows.iter()
        .find(|r| r.bib == bib)
        .map_or(0, |r| r.progress_dm)
}

/// Two cluster nodes on one NATS server: `a`, where a live race with two racers was
/// created, and `b`, started after it with nothing in its folder but the shared secret.
struct TwoNodes {
    /// The NATS server (dropped last).
    _nats: NatsServer,
    /// The journal prefix both nodes share.
    prefix: String,
    /// Node A (until killed) and its folder.
    node_a: Option<ChildServer>,
    _dir_a: tempfile::TempDir,
    /// Node B and its folder.
    node_b: ChildServer,
    dir_b: tempfile::TempDir,
    /// The cluster's signing keys.
    keys: Keys,
    /// An admin token valid on both nodes.
    admin_token: String,
    /// The race, created on A.
    race: String,
    /// Its course, for fixes along it.
    index: CourseIndex,
    /// Its start, from which fix times count.
    start: i64,
}

impl TwoNodes {
    /// Starts A, creates the race there, then starts B; `test` names the journal prefix.
    async fn start(test: &str) -> TwoNodes {
        let nats = NatsServer::start();
        let prefix = format!("{test}{}", free_port());
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
        let dir_b = node_folder(dir_a.path());
        let node_b = ChildServer::start(dir_b.path(), &node_env(&nats.url, &prefix, "b"));
        TwoNodes {
            _nats: nats,
            prefix,
            node_a: Some(node_a),
            _dir_a: dir_a,
            node_b,
            dir_b,
            keys,
            admin_token,
            race,
            index: CourseIndex::from(&course),
            start,
        }
    }

    /// Node A.
    fn a(&self) -> &ChildServer {
        self.node_a.as_ref().expect("node A runs")
    }

    /// `kill -9` of node A.
    fn kill_a(&mut self) {
        if let Some(node) = self.node_a.take() {
            node.kill9();
        }
    }

    /// An admin socket on `node`.
    async fn admin(&self, node: &ChildServer) -> Client {
        Client::connect(&node.url, &self.admin_token, Codec::Json)
            .await
            .unwrap()
    }

    /// Bib 1's phone on `node`.
    async fn phone(&self, node: &ChildServer) -> Client {
        racer_phone(&node.url, &self.keys, &self.race, 1).await
    }

    /// Bib 1's fix `i` through `phone`: acknowledged or not.
    async fn fix(&self, phone: &mut Client, i: u32) -> bool {
        send_fix(phone, &self.index, self.start, i).await
    }

    /// Bib 1's fix `i` through `phone`, sent again while it is answered `unavailable`
    /// (allowed for a moment around a takeover, PROTOCOL.md section 19) for at most 5 s.
    async fn fix_within_5_s(&self, phone: &mut Client, i: u32) {
        let began = Instant::now();
        while !self.fix(phone, i).await {
            assert!(
                began.elapsed() < Duration::from_secs(5),
                "fix {i} never acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_node_takes_over_what_a_killed_node_acknowledged_within_5_s() {
    let mut nodes = TwoNodes::start("srv").await;
    let race = &nodes.race.clone();
    let mut phone = nodes.phone(nodes.a()).await;
    for i in 1..=30u32 {
        assert!(nodes.fix(&mut phone, i).await, "fix {i} acked by A");
    }
    let mut admin = nodes.admin(nodes.a()).await;
    let progress_before = progress(&standings(&mut admin, race).await, 1);
    assert_eq!(progress_before, 30 * 600);
    drop(phone);

    // Node B is up (nothing in its folder but the secret) when A dies.
    let mut admin = nodes.admin(&nodes.node_b).await;
    nodes.kill_a();
    let killed = Instant::now();
    let rows = served_within(&mut admin, race, Duration::from_secs(10)).await;
    let took = killed.elapsed();
    eprintln!("race taken over {took:?} after the kill");
    assert!(took < Duration::from_secs(5), "taken over in {took:?}");
    assert_eq!(
        progress(&rows, 1),
        progress_before,
        "bib 1's acknowledged fixes rebuilt the same standing on node B"
    );
    // The racer carries on against node B, after what node A stored.
    let mut phone = nodes.phone(&nodes.node_b).await;
    assert!(nodes.fix(&mut phone, 31).await, "fix 31 acked by B");
    assert!(progress(&standings(&mut admin, race).await, 1) > progress_before);
    assert!(
        !nodes.dir_b.path().join("db").exists(),
        "cluster mode writes no sled database"
    );
}

/// A node paused (SIGSTOP) past its lease, while another takes its race over, and then
/// resumed: it no longer writes the race's journals itself (its socket's fixes are answered
/// by the new owner), and the new owner's journal goes on undisturbed, which it could not if
/// the old owner had appended behind its back (the next append would be fenced).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_that_resumes_never_writes_again() {
    let nodes = TwoNodes::start("pause").await;
    let race = &nodes.race.clone();
    let mut phone_a = nodes.phone(nodes.a()).await;
    for i in 1..=10u32 {
        assert!(nodes.fix(&mut phone_a, i).await, "fix {i} acked by A");
    }
    let mut admin_b = nodes.admin(&nodes.node_b).await;
    let signal = |which: &str| {
        let sent = std::process::Command::new("kill")
            .args([which, &nodes.a().child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {which}");
    };
    signal("-STOP");
    let rows = served_within(&mut admin_b, race, Duration::from_secs(10)).await;
    assert_eq!(progress(&rows, 1), 10 * 600, "B took over A's journal");
    let mut phone_b = nodes.phone(&nodes.node_b).await;
    for i in 11..=15u32 {
        nodes.fix_within_5_s(&mut phone_b, i).await;
    }
    signal("-CONT");
    // A's socket is still open: its fixes now go to B, the race's owner.
    for i in 16..=18u32 {
        assert!(
            nodes.fix(&mut phone_a, i).await,
            "fix {i} on A answered by B"
        );
    }
    // B's journal was never written behind its back: it keeps acknowledging in order.
    for i in 19..=20u32 {
        assert!(nodes.fix(&mut phone_b, i).await, "fix {i} acked by B");
    }
    assert_eq!(progress(&standings(&mut admin_b, race).await, 1), 20 * 600);
}

/// Any node takes any socket: a racer and an admin connected to the node that does not own
/// the race are answered by the one that does (fixes acknowledged, standings current). When
/// the owner dies, the node the
/// sockets are on takes the race over and the same sockets carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_on_any_node_are_answered_by_the_owner() {
    let mut nodes = TwoNodes::start("fwd").await;
    let race = &nodes.race.clone();
    let mut phone_b = nodes.phone(&nodes.node_b).await;
    let mut admin_b = nodes.admin(&nodes.node_b).await;
    for i in 1..=10u32 {
        assert!(
            nodes.fix(&mut phone_b, i).await,
            "fix {i} sent to B, acknowledged by A"
        );
    }
    // Both nodes answer with A's current standing.
    assert_eq!(progress(&standings(&mut admin_b, race).await, 1), 10 * 600);
    let mut admin_a = nodes.admin(nodes.a()).await;
    assert_eq!(progress(&standings(&mut admin_a, race).await, 1), 10 * 600);
    drop(admin_a);
    nodes.kill_a();
    // The same sockets on B carry on once B has taken the race over.
    let began = Instant::now();
    let mut i = 11;
    while i <= 15 {
        if nodes.fix(&mut phone_b, i).await {
            i += 1;
        } else {
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "B never took over"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(progress(&standings(&mut admin_b, race).await, 1), 15 * 600);
}

/// `/readyz` answers 503 while the node has no NATS connection (it could neither write a
/// journal nor renew a lease), and 200 again once the client has reconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_nats_is_not_ready() {
    let mut nats = NatsServer::start();
    let prefix = format!("ready{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let node = ChildServer::start(dir.path(), &node_env(&nats.url, &prefix, "a"));
    let ready = |want: u16| {
        let addr = node.addr;
        async move {
            let began = Instant::now();
            loop {
                let (status, _) = common::http_get(addr, "/readyz HTTP/1.1\r\nHost: x").await;
                if status == want {
                    return began.elapsed();
                }
                assert!(
                    began.elapsed() < Duration::from_secs(15),
                    "/readyz never answered {want} (last {status})"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    ready(200).await;
    nats.kill9();
    ready(503).await;
    nats.restart();
    ready(200).await;
}

/// `peloton cluster status --json` reads the cluster from NATS: both nodes up with their
/// addresses, the race's lease held by the node that created it, the journal streams with
/// their records. Without `[cluster]` it says cluster mode is off, exit code 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_lists_nodes_leases_and_streams() {
    let nodes = TwoNodes::start("status").await;
    let nats_url = nodes._nats.url.clone();
    let prefix = nodes.prefix.clone();
    let output = common::bin()
        .args(["cluster", "status", "--json"])
        .env("PELOTON_CLUSTER_NATS_URL", &nats_url)
        .env("PELOTON_CLUSTER_PREFIX", &prefix)
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_str(&common::cli::ok(output)).unwrap();
    let names: Vec<&str> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"], "{status}");
    assert_eq!(status["nodes"][0]["address"], nodes.a().addr.to_string());
    let race_lease = format!("race.{}", nodes.race);
    assert!(
        status["leases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["key"] == race_lease.as_str() && l["node"] == "a"),
        "{status}"
    );
    let race_stream = status["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == format!("{prefix}_race").as_str())
        .unwrap_or_else(|| panic!("{status}"));
    assert!(race_stream["messages"].as_u64().unwrap() > 0);

    let off = common::bin()
        .args(["cluster", "status"])
        .env_remove("PELOTON_CLUSTER_NATS_URL")
        .output()
        .unwrap();
    assert_eq!(off.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&off.stderr).contains("cluster mode is off"));
}

/// A spectator socket on `node` subscribed to `race`, and its table.
async fn spectator(nodes: &TwoNodes, node: &ChildServer) -> (Client, LiveTable) {
    let viewer = token(&nodes.keys, Role::Spectator, "viewer", None, 600);
    let mut socket = Client::connect(&node.url, &viewer, Codec::Binary)
        .await
        .unwrap();
    let reply = socket
        .request(Request::RaceSubscribe {
            race_id: nodes.race.clone(),
            since_seq: None,
        })
        .await
        .unwrap();
    let Reply::Subscribed(snapshot) = reply else {
        panic!("subscribed: {reply:?}")
    };
    assert!(
        !snapshot.course.is_empty(),
        "a first snapshot has the course"
    );
    (socket, LiveTable::from_snapshot(snapshot))
}

/// Applies `socket`'s updates to `table` until `until` holds (panics on a silent gap, any
/// other push, or 15 s without it).
async fn read_while(
    socket: &mut Client,
    table: &mut LiveTable,
    until: impl Fn(&LiveTable) -> bool,
) {
    let began = Instant::now();
    while !until(table) {
        assert!(
            began.elapsed() < Duration::from_secs(15),
            "stuck at {table:?}"
        );
        let push = socket
            .next_push(Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("no update after {table:?}: {e}"));
        if let Err(other) = table.apply(push) {
            panic!("unexpected push {other:?}");
        }
    }
}

/// Any node serves spectators: one on the owner A and one on B follow the same ticks (B's
/// through its mirror of A's feed, relayed once per tick: the same sequence numbers, the
/// same rows, the same count of spectators on both nodes), and a spectator moving from B to A resumes with `since_seq`. When A is killed, B takes the race over and its spectator carries on on the
/// same socket: the owner's new feed reaches it as a marked full table or catch-up, never a
/// silent gap, and the racer's later fixes (now sent to B) reach it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spectators_on_any_node_follow_the_owner_and_carry_on_after_its_kill() {
    let mut nodes = TwoNodes::start("mirror").await;
    let race = nodes.race.clone();
    let (mut on_a, mut table_a) = spectator(&nodes, nodes.a()).await;
    let (mut on_b, mut table_b) = spectator(&nodes, &nodes.node_b).await;
    // Each node's ticks count the race's spectators on every node.
    read_while(&mut on_a, &mut table_a, |t| t.spectators == 2).await;
    read_while(&mut on_b, &mut table_b, |t| t.spectators == 2).await;
    let first_on_b = (table_b.seq, table_b.rows.clone());
    let mut phone = nodes.phone(nodes.a()).await;
    for i in 1..=10u32 {
        assert!(nodes.fix(&mut phone, i).await, "fix {i} acked by A");
    }
    let moved = |t: &LiveTable| t.rows.get(&1).is_some_and(|r| r.progress_dm >= 10 * 600);
    read_while(&mut on_a, &mut table_a, moved).await;
    read_while(&mut on_b, &mut table_b, moved).await;
    // The same tick on both nodes is the same table, row for row.
    for _ in 0..20 {
        if table_a.seq == table_b.seq {
            break;
        }
        let (behind, table, ahead) = if table_a.seq < table_b.seq {
            (&mut on_a, &mut table_a, table_b.seq)
        } else {
            (&mut on_b, &mut table_b, table_a.seq)
        };
        read_while(behind, table, |t| t.seq >= ahead).await;
    }
    assert_eq!(
        table_a.seq, table_b.seq,
        "both nodes publish the owner's ticks"
    );
    assert_eq!(table_a.rows, table_b.rows, "the same rows at the same tick");
    drop(phone);

    // A spectator leaving B for A resumes from the last tick B sent it: B published A's
    // sequence numbers, so A's recent ticks continue it exactly.
    let viewer = token(&nodes.keys, Role::Spectator, "mover", None, 600);
    let mut moved = Client::connect(&nodes.a().url, &viewer, Codec::Binary)
        .await
        .unwrap();
    let reply = moved
        .request(Request::RaceSubscribe {
            race_id: race.clone(),
            since_seq: Some(first_on_b.0),
        })
        .await
        .unwrap();
    let Reply::Subscribed(snapshot) = reply else {
        panic!("subscribed: {reply:?}")
    };
    assert!(snapshot.resumed, "A still has every tick after B's first");
    let mut table = LiveTable {
        rows: first_on_b.1,
        seq: first_on_b.0,
        ..LiveTable::default()
    };
    read_while(&mut moved, &mut table, |t| t.seq >= table_a.seq).await;
    assert_eq!(table.rows, table_a.rows, "resumed on A, the same table");

    let before_kill = table_b.seq;
    nodes.kill_a();
    let killed = Instant::now();
    // B's spectator sees the new owner's feed (its sequence numbers start past A's).
    read_while(&mut on_b, &mut table_b, |t| t.seq > before_kill + 1_000).await;
    eprintln!(
        "spectator on B back on the new owner's feed {:?} after the kill",
        killed.elapsed()
    );
    assert_eq!(
        table_b.rows.get(&1).map(|r| r.progress_dm),
        Some(10 * 600),
        "the new owner's table holds every acknowledged fix"
    );
    let mut phone = nodes.phone(&nodes.node_b).await;
    let mut i = 11;
    while i <= 15 {
        if nodes.fix(&mut phone, i).await {
            i += 1;
        } else {
            assert!(
                killed.elapsed() < Duration::from_secs(15),
                "B never took over"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    read_while(&mut on_b, &mut table_b, |t| {
        t.rows.get(&1).is_some_and(|r| r.progress_dm >= 15 * 600)
    })
    .await;
    let mut admin = nodes.admin(&nodes.node_b).await;
    let rows = standings(&mut admin, &race).await;
    assert_eq!(progress(&rows, 1), 15 * 600);
}

/// The nodes `node` lists at `GET /api/nodes`, as (name, url), once it lists `count`.
async fn listed_nodes(node: &ChildServer, count: usize) -> Vec<(String, String)> {
    let began = Instant::now();
    loop {
        let (status, body) = common::http_get(node.addr, "/api/nodes HTTP/1.1\r\nHost: x").await;
        assert_eq!(status, 200, "{body}");
        let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
        let nodes: Vec<(String, String)> = listed["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["node"].as_str().unwrap().to_owned(),
                    n["url"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        if nodes.len() == count {
            return nodes;
        }
        assert!(began.elapsed() < Duration::from_secs(10), "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client is given every node's address (`GET /api/nodes`) and moves to another when its
/// node dies: a spectator on B (following A's race through B's mirror) whose node is killed
/// tries the list, skips the dead node, and subscribes on A with the last sequence number
/// it applied: A still has every tick after it (B published A's numbers), so it resumes
/// without a snapshot and without a gap, and follows the racer's later fixes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spectator_whose_node_dies_moves_along_the_node_list_and_resumes() {
    let mut nodes = TwoNodes::start("moves").await;
    let listed = listed_nodes(&nodes.node_b, 2).await;
    let url = |node: &ChildServer| format!("ws://{}/ws", node.addr);
    assert_eq!(
        listed,
        vec![
            ("a".to_owned(), url(nodes.a())),
            ("b".to_owned(), url(&nodes.node_b))
        ]
    );
    let (mut on_b, mut table_b) = spectator(&nodes, &nodes.node_b).await;
    let mut phone = nodes.phone(nodes.a()).await;
    for i in 1..=5u32 {
        assert!(nodes.fix(&mut phone, i).await, "fix {i} acked by A");
    }
    read_while(&mut on_b, &mut table_b, |t| {
        t.rows.get(&1).is_some_and(|r| r.progress_dm >= 5 * 600)
    })
    .await;

    nodes.node_b.child.kill().unwrap();
    nodes.node_b.child.wait().unwrap();
    assert!(
        on_b.next_push(Duration::from_secs(5)).await.is_err(),
        "B's socket ended with B"
    );
    // The dead node first: the client moves past it to the next one listed.
    let viewer = token(&nodes.keys, Role::Spectator, "viewer", None, 600);
    let order = [url(&nodes.node_b), url(nodes.a())];
    let (mut moved, index) = Client::connect_any(&order, &viewer, Codec::Binary)
        .await
        .unwrap();
    assert_eq!(index, 1, "connected to A");
    let reply = moved
        .request(Request::RaceSubscribe {
            race_id: nodes.race.clone(),
            since_seq: Some(table_b.seq),
        })
        .await
        .unwrap();
    let Reply::Subscribed(snapshot) = reply else {
        panic!("subscribed: {reply:?}")
    };
    assert!(
        snapshot.resumed,
        "A has every tick after B's last: {snapshot:?}"
    );
    for i in 6..=8u32 {
        assert!(nodes.fix(&mut phone, i).await, "fix {i} acked by A");
    }
    // The same table goes on from B's last update, through A's.
    read_while(&mut moved, &mut table_b, |t| {
        t.rows.get(&1).is_some_and(|r| r.progress_dm >= 8 * 600)
    })
    .await;
}

/// A replay is served on any node: B, which does not own the race, reads the race's and
/// racers' journals from JetStream and plays them, and the race stays with A (which keeps
/// acknowledging its racer's fixes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_is_played_on_a_node_that_does_not_own_the_race() {
    let nodes = TwoNodes::start("replay").await;
    let mut phone = nodes.phone(nodes.a()).await;
    for i in 1..=10u32 {
        assert!(nodes.fix(&mut phone, i).await, "fix {i} acked by A");
    }
    let viewer = token(&nodes.keys, Role::Spectator, "viewer", None, 600);
    let mut on_b = Client::connect(&nodes.node_b.url, &viewer, Codec::Binary)
        .await
        .unwrap();
    let reply = on_b
        .request(Request::RaceReplay {
            race_id: nodes.race.clone(),
            speed: 5000.0,
            from_ms: None,
        })
        .await
        .unwrap();
    assert!(matches!(reply, Reply::ReplayStarted { .. }), "{reply:?}");
    let table = common::replay_to_end(&mut on_b).await;
    assert_eq!(table.get(&1).map(|r| r.progress_dm), Some(10 * 600));
    // A still owns the race: its racer's next fix is acknowledged there at once.
    assert!(nodes.fix(&mut phone, 11).await, "fix 11 acked by A");
    let mut admin_b = nodes.admin(&nodes.node_b).await;
    assert_eq!(
        progress(&standings(&mut admin_b, &nodes.race).await, 1),
        11 * 600
    );
}

/// Imports `batch` through `admin`, sent again while the answer is `unavailable` (a book
/// that found the journal moved on restarts from it meanwhile): how many were refused.
async fn import_until_stored(admin: &mut Client, batch: ImportBatch) -> u32 {
    let mut refused = 0;
    loop {
        match admin.request(Request::PatrolImport(batch.clone())).await {
            Ok(Reply::Imported { .. }) => return refused,
            Ok(other) => panic!("import: {other:?}"),
            Err(e) => {
                assert!(e.to_string().contains("unavailable"), "{e}");
                refused += 1;
                assert!(refused < 20, "never stored: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The patrol book is one journal that every node writes with the expected last sequence:
/// a node whose book is behind another node's write is refused (`unavailable`, nothing
/// stored), restarts its book from the journal, and the same request sent again is stored.
/// Without the restart the stale book would be refused for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_book_behind_another_nodes_write_catches_up_and_stores() {
    let nodes = TwoNodes::start("book").await;
    let mut admin_a = nodes.admin(nodes.a()).await;
    let mut admin_b = nodes.admin(&nodes.node_b).await;
    let officers = |id: &str| ImportBatch::Officers(vec![officer_row(id, "north", None)]);
    assert_eq!(import_until_stored(&mut admin_a, officers("o1")).await, 0);
    // B read the book before A's import: its first write is refused, the next one stored.
    let refused = import_until_stored(&mut admin_b, officers("o2")).await;
    assert!(refused >= 1, "B's stale book was written through");
    // And A, now behind B, catches up the same way.
    import_until_stored(&mut admin_a, officers("o3")).await;
    // Each node's book holds what it read when it last caught up: A every officer, B
    // those before its restart and its own (reads between two nodes' writes can lag).
    let checks = [
        (nodes.a(), "o1"),
        (nodes.a(), "o2"),
        (nodes.a(), "o3"),
        (&nodes.node_b, "o1"),
        (&nodes.node_b, "o2"),
    ];
    for (node, id) in checks {
        let officer = token(&nodes.keys, Role::Officer, id, None, 600);
        let mut socket = Client::connect(&node.url, &officer, Codec::Binary)
            .await
            .unwrap();
        let reply = socket.request(Request::DutyStart { minutes: None }).await;
        assert!(matches!(reply, Ok(Reply::OnDuty { .. })), "{id}: {reply:?}");
    }
}

/// Every node's race list follows races changed on other nodes: B, which read the race at
/// its start (live), lists it cancelled within a second or so of A cancelling it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_race_changed_on_one_node_is_listed_changed_by_the_others() {
    let nodes = TwoNodes::start("list").await;
    let mut admin_a = nodes.admin(nodes.a()).await;
    let mut admin_b = nodes.admin(&nodes.node_b).await;
    let state_on_b = |races: &[peloton::net::protocol::RaceView]| {
        races
            .iter()
            .find(|r| r.id == nodes.race)
            .map(|r| format!("{:?}", r.state))
    };
    let Ok(Reply::Races(races)) = admin_b.request(Request::RaceList).await else {
        panic!("race list")
    };
    assert_eq!(state_on_b(&races).as_deref(), Some("Live"));
    let cancelled = admin_a
        .request(Request::RaceCancel {
            id: nodes.race.clone(),
            reason: Some("storm".into()),
        })
        .await;
    assert!(matches!(cancelled, Ok(Reply::Race(_))), "{cancelled:?}");
    let began = Instant::now();
    loop {
        let Ok(Reply::Races(races)) = admin_b.request(Request::RaceList).await else {
            panic!("race list")
        };
        let listed = state_on_b(&races);
        if listed.as_deref() == Some("Cancelled") {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "B lists {listed:?} for the race A cancelled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A tracking app reports to any node: a device id bound on A (the race's owner) after B
/// started is known to B within a second or so, and B hands the app's fixes (OsmAnd over
/// HTTP) to A, which stores them for the racer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracking_app_reports_to_a_node_that_does_not_own_the_race() {
    let nodes = TwoNodes::start("device").await;
    let mut admin_a = nodes.admin(nodes.a()).await;
    let reply = admin_a
        .request(Request::RaceDeviceBind {
            race_id: nodes.race.clone(),
            bib: 2,
            device_id: Some("phone-of-bib-2".into()),
        })
        .await
        .unwrap();
    assert!(matches!(reply, Reply::Devices { .. }), "{reply:?}");
    let report = |i: u32| {
        let p = nodes.index.position_at(f64::from(i) * 60.0);
        format!(
            "/?id=phone-of-bib-2&lat={}&lon={}&timestamp={}&accuracy=5 HTTP/1.1\r\nHost: x",
            p.lat(),
            p.lon(),
            (nodes.start + i64::from(i) * 10_000) / 1000
        )
    };
    let began = Instant::now();
    let mut i = 1;
    while i <= 5 {
        let (status, body) = common::http_get(nodes.node_b.addr, &report(i)).await;
        if status == 200 {
            i += 1;
            continue;
        }
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "report {i} to B: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut admin_b = nodes.admin(&nodes.node_b).await;
    assert_eq!(
        progress(&standings(&mut admin_b, &nodes.race).await, 2),
        5 * 600
    );
}
