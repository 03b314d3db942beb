//! Memory per WebSocket: the server's resident set growth per idle, authenticated socket,
//! with our configured buffers against tokio-tungstenite's default buffers (128 KiB read,
//! 128 KiB write) measured in the same run on the same binary; and per citizen socket with a
//! patrol session (its actor, its entry in the proximity index), whose difference to the
//! idle socket is the memory of one patrol session.
//!
//! Run: `cargo bench --bench socket_memory` (optionally `SOCKETS=5000`). It starts the real
//! `peloton` binary twice on 127.0.0.1, opens the sockets, pings each once so every buffer
//! that is allocated lazily is allocated, reads VmRSS from /proc, and stops the servers.

mod support;

use support::process::rss_kib;

use peloton::auth::{claims_for, Role};
use peloton::net::client::Client;
use peloton::net::codec::Codec;
use peloton::net::protocol::Request;
use std::time::Duration;

/// What each measured socket does after connecting.
#[derive(Clone, Copy, PartialEq)]
enum Load {
    /// One ping: an idle authenticated socket.
    Idle,
    /// A citizen's position: opens its patrol session and indexes it.
    PatrolSession,
}

async fn measure(label: &str, sockets: usize, env: &[(&str, &str)], load: Load) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, url) = support::start_server(dir.path(), env);
    let keys = support::server_keys(dir.path());
    let now = peloton::time::now_ms() / 1000;
    let token = keys
        .issue(&claims_for(Role::Spectator, "fan", None, now, 3600))
        .expect("token");
    // One patrol session per user: each citizen socket has its own subject.
    let citizen = |i: usize| {
        keys.issue(&claims_for(
            Role::Citizen,
            &format!("c{i}"),
            None,
            now,
            3600,
        ))
        .expect("token")
    };
    // Warm up the allocator and runtime with a few sockets before the baseline reading.
    let mut warm = Vec::new();
    for _ in 0..10 {
        warm.push(
            Client::connect(&url, &token, Codec::Binary)
                .await
                .expect("connect"),
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(child.id()).unwrap_or(0);
    let mut clients = Vec::with_capacity(sockets);
    for i in 0..sockets {
        let token = match load {
            Load::Idle => token.clone(),
            Load::PatrolSession => citizen(i),
        };
        clients.push(
            Client::connect(&url, &token, Codec::Binary)
                .await
                .expect("connect"),
        );
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let request = match load {
            Load::Idle => Request::Ping,
            // Spread over a 20 km city so cells fill as they would.
            Load::PatrolSession => Request::PatrolPosition {
                lat_e7: 487_650_000 + ((i * 7_919) % 1_800_000) as i32,
                lon_e7: 22_200_000 + ((i * 104_729) % 2_700_000) as i32,
                accuracy_m: Some(5.0),
            },
        };
        client.request(request).await.expect("request");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(child.id()).unwrap_or(0);
    let per_socket = (after.saturating_sub(before)) as f64 / sockets as f64;
    println!(
        "{label:<44} sockets {sockets:>6}  RSS {before:>8} KiB -> {after:>8} KiB  = {per_socket:>7.1} KiB per socket"
    );
    drop(clients);
    drop(warm);
    let _ = child.kill();
    let _ = child.wait();
    per_socket
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run a tiny smoke.
    let benching = std::env::args().any(|a| a == "--bench");
    let sockets: usize = std::env::var("SOCKETS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if benching { 2000 } else { 20 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let ours = measure(
            "peloton config (4 KiB read/write buffers)",
            sockets,
            &[],
            Load::Idle,
        )
        .await;
        let defaults = measure(
            "tungstenite default buffers (128 KiB)",
            sockets,
            &[
                ("PELOTON_WS_READ_BUFFER_BYTES", "131072"),
                ("PELOTON_WS_WRITE_BUFFER_BYTES", "131072"),
            ],
            Load::Idle,
        )
        .await;
        let patrol = measure(
            "citizen socket with a patrol session",
            sockets,
            &[],
            Load::PatrolSession,
        )
        .await;
        println!(
            "patrol session (actor + index entry + notice queue): {:.1} KiB beyond an idle socket",
            patrol - ours
        );
        if ours > 0.0 {
            println!(
                "ratio: default buffers cost {:.1}x our configuration per socket",
                defaults / ours
            );
        }
    });
}
