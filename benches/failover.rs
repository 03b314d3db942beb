//! Failover in cluster mode (issue 19): two real `peloton` nodes on one real `nats-server`,
//! a live race with a racer whose phone is connected to the node that does not own the race
//! (its fixes are forwarded to the owner). The owner is killed with `kill -9` `KILLS` times
//! (each time the other node owns the race, and the killed one is started again). For each
//! kill it measures, from the kill:
//! - **fix**: until the survivor acknowledges the racer's next fix (it took the race over:
//!   lease lapsed, journal replayed);
//! - **tick**: until a spectator subscribing on the survivor receives a race update.
//!
//! Reports p50 / p99 / max of both against the lease TTL (`cluster.lease_ttl_ms`).
//! `KILLS=20 cargo bench --bench failover`

#[path = "../tests/common/nats.rs"]
mod nats;
mod support;

use peloton::auth::{claims_for, Role};
use peloton::geo::{Course, CourseIndex, Position};
use peloton::net::client::Client;
use peloton::net::codec::Codec;
use peloton::net::protocol::{Push, Reply, Request, WireFix};
use peloton::time::now_ms;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};
use support::figures::{env_or, ms, pct};

const RIDE: &str = "loop-celje-resevno-2020-09-20.gpx";

/// One node: its process, address and folder.
struct Node {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
    name: &'static str,
}

impl Node {
    fn start(dir: tempfile::TempDir, name: &'static str, env: &[(&str, &str)]) -> Node {
        let mut env = env.to_vec();
        env.push(("PELOTON_CLUSTER_NODE_ID", name));
        let (child, url) = support::start_server(dir.path(), &env);
        Node {
            child,
            url,
            dir,
            name,
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A phone's fix `i`: 10 m along the course per fix, a second apart (36 km/h).
fn fix(index: &CourseIndex, start: i64, i: u32) -> WireFix {
    let p: Position = index.position_at(f64::from(i) * 10.0);
    WireFix {
        at_ms: start + i64::from(i) * 1000,
        lat_e7: p.lat_e7,
        lon_e7: p.lon_e7,
        accuracy_dm: 50,
        speed_cmps: None,
        elevation_dm: None,
    }
}

fn token(keys: &peloton::auth::Keys, role: Role, sub: &str, race: Option<&str>) -> String {
    let claims = claims_for(role, sub, race, now_ms() / 1000, 3600);
    keys.issue(&claims).expect("token")
}

fn copy_secret(from: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(from.join("secret.key"), dir.path().join("secret.key")).expect("secret");
    dir
}

fn main() {
    let kills = env_or("KILLS", 20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(kills));
}

async fn run(kills: usize) {
    let nats = nats::NatsServer::start();
    let config = nats::cluster_config(&nats.url, 1);
    let ttl = config.lease_ttl_ms;
    let env = [
        ("PELOTON_CLUSTER_NATS_URL", nats.url.as_str()),
        ("PELOTON_CLUSTER_PREFIX", config.prefix.as_str()),
    ];
    let mut a = Node::start(tempfile::tempdir().expect("tempdir"), "a", &env);
    let keys = support::server_keys(a.dir.path());
    let mut b = Node::start(copy_secret(a.dir.path()), "b", &env);
    let admin = token(&keys, Role::Admin, "ops", None);
    let mut admin_a = Client::connect(&a.url, &admin, Codec::Binary)
        .await
        .expect("admin");
    let gpx = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/data/gpx")
            .join(RIDE),
    )
    .expect("shared ride");
    let start = now_ms() - 60_000;
    let race = support::live_race(&mut admin_a, "failover".into(), &gpx, start, &[1]).await;
    drop(admin_a);
    let course = Course::from_gpx(gpx.as_bytes(), 200_000).expect("course");
    let index = CourseIndex::from(&course);
    let racer = token(&keys, Role::Racer, "1", Some(&race));
    let viewer = token(&keys, Role::Spectator, "viewer", None);

    let (mut owner, mut survivor) = (&mut a, &mut b);
    let mut next_fix = 1u32;
    let (mut to_fix, mut to_tick) = (Vec::new(), Vec::new());
    for k in 0..kills {
        // The racer's phone is on the survivor-to-be: its fixes go to the owner until the kill.
        let mut phone = Client::connect(&survivor.url, &racer, Codec::Binary)
            .await
            .expect("phone");
        let ack = phone
            .request(Request::Fixes {
                fixes: vec![fix(&index, start, next_fix)],
            })
            .await;
        assert!(
            matches!(ack, Ok(Reply::FixesAck { .. })),
            "forwarded fix: {ack:?}"
        );
        next_fix += 1;
        owner.kill9();
        let killed = Instant::now();
        loop {
            let sent = phone
                .request(Request::Fixes {
                    fixes: vec![fix(&index, start, next_fix)],
                })
                .await;
            if matches!(sent, Ok(Reply::FixesAck { .. })) {
                next_fix += 1;
                break;
            }
            assert!(killed.elapsed() < Duration::from_secs(30), "no takeover");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        to_fix.push(killed.elapsed());
        let mut spectator = Client::connect(&survivor.url, &viewer, Codec::Binary)
            .await
            .expect("spectator");
        let subscribed = spectator
            .request(Request::RaceSubscribe {
                race_id: race.clone(),
                since_seq: None,
            })
            .await;
        assert!(
            subscribed.is_ok(),
            "subscribe on the new owner: {subscribed:?}"
        );
        let moved = phone
            .request(Request::Fixes {
                fixes: vec![fix(&index, start, next_fix)],
            })
            .await;
        assert!(
            matches!(moved, Ok(Reply::FixesAck { accepted: 1, .. })),
            "{moved:?}"
        );
        next_fix += 1;
        loop {
            match spectator.next_push(Duration::from_secs(10)).await {
                Ok(Push::RaceUpdate(_)) => break,
                Ok(_) => continue,
                Err(e) => panic!("no tick after the takeover: {e}"),
            }
        }
        to_tick.push(killed.elapsed());
        eprintln!(
            "kill {k}: node {} killed; node {} acknowledged after {}, ticked after {}",
            owner.name,
            survivor.name,
            ms(*to_fix.last().expect("a time")),
            ms(*to_tick.last().expect("a time"))
        );
        // The killed node comes back (same folder and name) and is the standby now.
        let name = owner.name;
        let dir = std::mem::replace(&mut owner.dir, tempfile::tempdir().expect("tempdir"));
        *owner = Node::start(dir, name, &env);
        std::mem::swap(&mut owner, &mut survivor);
    }
    to_fix.sort();
    to_tick.sort();
    println!("\nfailover over {kills} kills of the owning node (lease TTL {ttl} ms):");
    println!("| from the kill to | p50 | p99 | max |");
    println!("|---|---:|---:|---:|");
    for (what, times) in [
        ("the racer's next fix acknowledged", &to_fix),
        ("a spectator's first tick", &to_tick),
    ] {
        println!(
            "| {what} | {} | {} | {} |",
            ms(pct(times, 0.5)),
            ms(pct(times, 0.99)),
            ms(*times.last().expect("a time"))
        );
    }
    a.kill9();
    b.kill9();
}
