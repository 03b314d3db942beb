//! Durable direct messages per second: one sender against many senders at once, on the real
//! server over real sockets. Every message is journaled (flushed) before its sender gets
//! the ack, and all go through the one patrol book actor; queued in order without waiting
//! for each flush, concurrent conversations share group commits, so many senders get far
//! more through than one. The ratio (many ÷ one) is that sharing, measured in one run.
//!
//! Run: `cargo bench --bench patrol_messages` (`PAIRS=50 MESSAGES=40` by default). It
//! starts the `peloton` binary on 127.0.0.1, imports officers, connects each officer to its
//! citizen in person, then times the citizens' messages, and stops the server.

mod support;

use support::figures::env_or;

use peloton::auth::{claims_for, Role};
use peloton::net::client::Client;
use peloton::net::codec::Codec;
use peloton::net::protocol::{ImportBatch, OfficerRow, Reply, Request};
use std::time::Instant;

/// One connected officer–citizen pair; the citizen's socket sends the messages.
async fn pair(url: &str, keys: &peloton::auth::Keys, i: usize) -> Client {
    let now = peloton::time::now_ms() / 1000;
    let token = |role, sub: &str| {
        keys.issue(&claims_for(role, sub, None, now, 3600))
            .expect("token")
    };
    let (o, c) = (format!("o{i}"), format!("c{i}"));
    let mut officer = Client::connect(url, &token(Role::Officer, &o), Codec::Binary)
        .await
        .expect("officer");
    let mut citizen = Client::connect(url, &token(Role::Citizen, &c), Codec::Binary)
        .await
        .expect("citizen");
    officer
        .request(Request::DutyStart { minutes: None })
        .await
        .expect("duty");
    // Each pair in its own street.
    let (lat_e7, lon_e7) = (488_000_000 + i as i32 * 200_000, 23_500_000);
    for client in [&mut officer, &mut citizen] {
        client
            .request(Request::PatrolPosition {
                lat_e7,
                lon_e7,
                accuracy_m: None,
            })
            .await
            .expect("position");
    }
    let Ok(Reply::ConnectPending { request_id, .. }) = citizen
        .request(Request::ConnectRequest { officer_id: o })
        .await
    else {
        panic!("connect request refused")
    };
    officer
        .request(Request::ConnectAnswer {
            request_id,
            accept: true,
        })
        .await
        .expect("accepted");
    // The officer's socket stays open (its pushes are not read; 40 messages fit its queue).
    std::mem::forget(officer);
    citizen
}

/// Sends `messages` from each citizen (one at a time per socket, all sockets at once);
/// returns acknowledged messages per second.
async fn run(
    citizens: Vec<(usize, Client)>,
    messages: usize,
    round: &str,
) -> (Vec<(usize, Client)>, f64) {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut citizen) in citizens {
        let round = round.to_owned();
        tasks.spawn(async move {
            for m in 0..messages {
                citizen
                    .request(Request::MessageSend {
                        request_id: format!("{round}-{m}"),
                        to: format!("o{i}"),
                        text: format!("message {m}"),
                    })
                    .await
                    .expect("message acknowledged");
            }
            (i, citizen)
        });
    }
    let mut back = Vec::new();
    while let Some(citizen) = tasks.join_next().await {
        back.push(citizen.expect("sender task"));
    }
    let sent = back.len() * messages;
    (back, sent as f64 / started.elapsed().as_secs_f64())
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let pairs = env_or("PAIRS", if benching { 50 } else { 4 });
    let messages = env_or("MESSAGES", if benching { 40 } else { 5 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        // One socket sends far faster than a phone would: lift the per-socket rate limit.
        let (child, url) = support::start_server(
            dir.path(),
            &[
                ("PELOTON_WS_RATE_LIMIT_PER_SEC", "1000000"),
                ("PELOTON_WS_RATE_LIMIT_BURST", "1000000"),
            ],
        );
        let mut server = Server(child);
        let keys = support::server_keys(dir.path());
        let now = peloton::time::now_ms() / 1000;
        let admin_token = keys
            .issue(&claims_for(Role::Admin, "ops", None, now, 3600))
            .expect("token");
        let mut admin = Client::connect(&url, &admin_token, Codec::Binary)
            .await
            .expect("admin");
        let rows = (0..pairs)
            .map(|i| OfficerRow {
                id: format!("o{i}"),
                display_name: format!("Officer {i}"),
                precinct: "p".into(),
                email: None,
            })
            .collect();
        admin
            .request(Request::PatrolImport(ImportBatch::Officers(rows)))
            .await
            .expect("import");
        let mut citizens = Vec::new();
        for i in 0..pairs {
            citizens.push((i, pair(&url, &keys, i).await));
        }
        let mut rounds = Vec::new();
        for round in 0..3 {
            let one = citizens.split_off(1);
            let (first, alone) = run(citizens, messages, &format!("solo{round}")).await;
            let (rest, together) = run(
                first.into_iter().chain(one).collect(),
                messages,
                &format!("all{round}"),
            )
            .await;
            citizens = rest;
            rounds.push((alone, together));
        }
        rounds.sort_by(|a, b| (a.1 / a.0).total_cmp(&(b.1 / b.0)));
        let (alone, together) = rounds[rounds.len() / 2];
        println!(
            "durable messages/s: 1 sender {alone:.0}, {pairs} senders {together:.0} \
             (median of 3 rounds, {messages} messages per sender): {:.1}x",
            together / alone
        );
        let _ = server.0.kill();
    });
}

/// The server process, killed when the bench ends, also by a panic.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
