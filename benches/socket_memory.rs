//! Memory per WebSocket: the server's resident set growth per idle, authenticated socket,
//! with our configured buffers against tokio-tungstenite's default buffers (128 KiB read,
//! 128 KiB write) measured in the same run on the same binary.
//!
//! Run: `cargo bench --bench socket_memory` (optionally `SOCKETS=5000`). It starts the real
//! `peloton` binary twice on 127.0.0.1, opens the sockets, pings each once so every buffer
//! that is allocated lazily is allocated, reads VmRSS from /proc, and stops the servers.

mod support;

use peloton::auth::{claims_for, Role};
use peloton::net::client::Client;
use peloton::net::codec::Codec;
use peloton::net::protocol::Request;
use std::time::Duration;

/// Resident set size of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn measure(label: &str, sockets: usize, env: &[(&str, &str)]) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, url) = support::start_server(dir.path(), env);
    let keys = support::server_keys(dir.path());
    let now = peloton::time::now_ms() / 1000;
    let token = keys
        .issue(&claims_for(Role::Spectator, "fan", None, now, 3600))
        .expect("token");
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
    let before = rss_kib(child.id());
    let mut clients = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        clients.push(
            Client::connect(&url, &token, Codec::Binary)
                .await
                .expect("connect"),
        );
    }
    for client in &mut clients {
        client.request(Request::Ping).await.expect("ping");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(child.id());
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
        let ours = measure("peloton config (4 KiB read/write buffers)", sockets, &[]).await;
        let defaults = measure(
            "tungstenite default buffers (128 KiB)",
            sockets,
            &[
                ("PELOTON_WS_READ_BUFFER_BYTES", "131072"),
                ("PELOTON_WS_WRITE_BUFFER_BYTES", "131072"),
            ],
        )
        .await;
        if ours > 0.0 {
            println!(
                "ratio: default buffers cost {:.1}x our configuration per socket",
                defaults / ours
            );
        }
    });
}
