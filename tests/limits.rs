//! Admission limits over real sockets: a full server refuses ordinary clients with 503 but
//! still answers `/healthz` and lets an admin in; one subject cannot hold more than its
//! sockets; an address cannot take guest tokens or upgrades without bound.

mod common;

use common::{counter, http_get, token, TestServer};
use peloton::auth::Role;
use peloton::net::client::{Client, ClientError};
use peloton::net::codec::Codec;
use peloton::net::protocol::Request;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The whole HTTP response (head and body) to `request`, read until the server closes or a
/// few seconds pass.
async fn raw_response(addr: SocketAddr, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => response.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&response).into_owned()
}

/// The value of header `name` in a response head, if present.
fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next()?;
    head.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A guest-token request answered with `Connection: close`.
async fn guest_token(addr: SocketAddr) -> String {
    raw_response(
        addr,
        &format!("GET /api/guest-token HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

fn status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn connect(server: &TestServer, role: Role, sub: &str, race: Option<&str>) -> Client {
    try_connect(server, role, sub, race)
        .await
        .unwrap_or_else(|e| panic!("{role} {sub} connects: {e}"))
}

async fn try_connect(
    server: &TestServer,
    role: Role,
    sub: &str,
    race: Option<&str>,
) -> Result<Client, ClientError> {
    let t = token(&server.keys, role, sub, race, 3600);
    Client::connect(&server.url, &t, Codec::Binary).await
}

fn refused_with(result: Result<Client, ClientError>, want: u16, code: &str) {
    match result {
        Err(ClientError::Http { status, body }) => {
            assert_eq!(status, want, "{body}");
            assert!(body.contains(&format!("\"code\":\"{code}\"")), "{body}");
        }
        Err(other) => panic!("expected HTTP {want}, got {other}"),
        Ok(_) => panic!("expected HTTP {want}, got a socket"),
    }
}

#[tokio::test]
async fn a_full_server_refuses_with_503_but_health_and_admins_get_in() {
    let server = TestServer::start_with(|c| c.ws.max_sockets = 50).await;
    let mut open = Vec::new();
    for i in 0..50 {
        open.push(connect(&server, Role::Spectator, &format!("watcher-{i}"), None).await);
    }
    refused_with(
        try_connect(&server, Role::Spectator, "one-too-many", None).await,
        503,
        "unavailable",
    );
    refused_with(
        try_connect(&server, Role::Racer, "7", Some("r1")).await,
        503,
        "unavailable",
    );
    // The refusal says when to come back.
    let response = raw_response(
        server.addr,
        &format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Protocol: peloton.v1.bin\r\nAuthorization: Bearer {}\r\n\r\n",
            server.addr,
            token(&server.keys, Role::Spectator, "raw", None, 3600)
        ),
    )
    .await;
    assert_eq!(status(&response), 503, "{response}");
    assert!(header(&response, "retry-after").is_some(), "{response}");

    let (code, body) = http_get(server.addr, "/healthz HTTP/1.1").await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, _) = http_get(server.addr, "/readyz HTTP/1.1").await;
    assert_eq!(code, 200);
    let mut admin = connect(&server, Role::Admin, "ops", None).await;
    admin
        .request(Request::Ping)
        .await
        .expect("the admin is served");

    let (code, metrics) = http_get(server.addr, "/metrics HTTP/1.1").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("peloton_ws_refused_total{reason=\"server_full\"}"),
        "{metrics}"
    );

    // A socket that closes frees its place for someone else.
    open.pop().expect("50 open").close().await;
    let mut admitted = None;
    for _ in 0..100 {
        if let Ok(c) = try_connect(&server, Role::Spectator, "late", None).await {
            admitted = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        admitted.is_some(),
        "a freed slot is given to the next client"
    );
    server.stop().await;
}

/// The issue's own figures: 2,000 authenticated sockets that never read nor send fill a
/// server limited to 2,000; the 2,001st is refused while `/healthz` answers; once idle for
/// `ws.idle_timeout_ms` every one of them is closed and the server takes clients again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_sockets_fill_the_server_and_are_closed_when_idle() {
    const SOCKETS: usize = 2_000;
    let server = TestServer::start_with(|c| {
        c.ws.max_sockets = SOCKETS;
        c.ws.idle_timeout_ms = 30_000;
    })
    .await;
    let url = server.url.clone();
    let mut open = Vec::with_capacity(SOCKETS);
    let mut batch = tokio::task::JoinSet::new();
    for i in 0..SOCKETS {
        let (url, t) = (
            url.clone(),
            token(
                &server.keys,
                Role::Spectator,
                &format!("idle-{i}"),
                None,
                3600,
            ),
        );
        batch.spawn(async move { Client::connect(&url, &t, Codec::Binary).await });
        if batch.len() == 100 || i + 1 == SOCKETS {
            while let Some(joined) = batch.join_next().await {
                open.push(joined.unwrap().expect("a socket below the limit connects"));
            }
        }
    }
    refused_with(
        try_connect(&server, Role::Spectator, "one-too-many", None).await,
        503,
        "unavailable",
    );
    let (code, _) = http_get(server.addr, "/healthz HTTP/1.1").await;
    assert_eq!(code, 200, "health still answers when the server is full");
    // Nobody reads or sends: after the idle time every socket is closed by the server.
    let mut closed = 0;
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, metrics) = http_get(server.addr, "/metrics HTTP/1.1").await;
        closed = counter(&metrics, "peloton_ws_closes_total{code=\"1001\"}");
        if closed >= SOCKETS as u64 {
            break;
        }
    }
    assert!(
        closed >= SOCKETS as u64,
        "{closed} of {SOCKETS} idle sockets closed"
    );
    // Each closed session gives its place back once its close handshake is over.
    let mut admitted = None;
    for _ in 0..100 {
        if let Ok(c) = try_connect(&server, Role::Spectator, "after-the-idle", None).await {
            admitted = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(admitted.is_some(), "the server takes clients again");
    drop(open);
    server.stop().await;
}

#[tokio::test]
async fn one_subject_holds_at_most_its_sockets() {
    let server = TestServer::start_with(|c| c.ws.max_sockets_per_subject = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(&server, Role::Racer, "7", Some("r1")).await);
    }
    refused_with(
        try_connect(&server, Role::Racer, "7", Some("r1")).await,
        429,
        "rate_limited",
    );
    // Another subject, and the same bib in another race, are other people.
    let _other = connect(&server, Role::Racer, "8", Some("r1")).await;
    let _elsewhere = connect(&server, Role::Racer, "7", Some("r2")).await;
    // Spectator tokens are shared by design and admins are exempt.
    let mut shared = Vec::new();
    for _ in 0..5 {
        shared.push(connect(&server, Role::Spectator, "guest", None).await);
        shared.push(connect(&server, Role::Admin, "ops", None).await);
    }

    held.pop().expect("3 held").close().await;
    let mut again = None;
    for _ in 0..100 {
        match try_connect(&server, Role::Racer, "7", Some("r1")).await {
            Ok(c) => {
                again = Some(c);
                break;
            }
            Err(ClientError::Http { status: 429, .. }) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("unexpected refusal: {e}"),
        }
    }
    assert!(again.is_some(), "closing a socket frees the subject's slot");
    server.stop().await;
}

#[tokio::test]
async fn guest_tokens_per_address_are_limited_with_retry_after() {
    let server = TestServer::start_with(|c| {
        c.web.guest_tokens_per_addr_per_min = 3;
        c.ws.addr_limits_exempt_loopback = false;
    })
    .await;
    for _ in 0..3 {
        let response = guest_token(server.addr).await;
        assert_eq!(status(&response), 200, "{response}");
        assert!(response.contains("\"token\""), "{response}");
    }
    let response = guest_token(server.addr).await;
    assert_eq!(status(&response), 429, "{response}");
    assert!(response.contains("\"code\":\"rate_limited\""), "{response}");
    let wait: u64 = header(&response, "retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("Retry-After in {response}"));
    assert!((1..=60).contains(&wait), "{wait}");
    server.stop().await;
}

#[tokio::test]
async fn guest_tokens_from_loopback_are_exempt_by_default() {
    let server = TestServer::start_with(|c| c.web.guest_tokens_per_addr_per_min = 2).await;
    for _ in 0..5 {
        let response = guest_token(server.addr).await;
        assert_eq!(status(&response), 200, "{response}");
    }
    server.stop().await;
}

#[tokio::test]
async fn upgrades_per_address_are_limited_but_admins_get_in() {
    let server = TestServer::start_with(|c| {
        c.ws.max_upgrades_per_addr_per_min = 3;
        c.ws.addr_limits_exempt_loopback = false;
    })
    .await;
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(connect(&server, Role::Spectator, &format!("s{i}"), None).await);
    }
    refused_with(
        try_connect(&server, Role::Spectator, "s4", None).await,
        429,
        "rate_limited",
    );
    // Failed attempts count too, and keep being refused before the token is even judged.
    refused_with(
        Client::connect(&server.url, "not-a-token", Codec::Binary).await,
        429,
        "rate_limited",
    );
    let mut admin = connect(&server, Role::Admin, "ops", None).await;
    admin
        .request(Request::Ping)
        .await
        .expect("the admin is served");
    let (code, metrics) = http_get(server.addr, "/metrics HTTP/1.1").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("peloton_ws_refused_total{reason=\"upgrade_rate\"}"),
        "{metrics}"
    );
    server.stop().await;
}

/// Out of file descriptors, the server answers new clients 503 with its spare descriptor
/// instead of leaving them hanging, keeps accepting, and serves `/healthz` again once
/// descriptors free up.
#[tokio::test]
async fn out_of_descriptors_clients_get_503_and_the_server_recovers() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().expect("tempdir");
    // The child runs with a small open-file limit, set by the shell before it execs.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_peloton"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .env("RUST_LOG", "error")
        .env("PELOTON_SERVER_HEADER_READ_TIMEOUT_MS", "60000")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn peloton serve");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("listening line");
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .parse()
        .expect("address");
    let server = common::ChildServer {
        child,
        url: format!("ws://{addr}"),
        addr,
    };

    // Idle connections until the server has no descriptor left for another.
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    let response = raw_response(
        addr,
        &format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status(&response), 503, "{response}");
    assert!(response.contains("\"code\":\"unavailable\""), "{response}");
    assert!(header(&response, "retry-after").is_some(), "{response}");
    assert!(response.contains("file descriptors"), "{response}");

    drop(held);
    let mut healthy = false;
    for _ in 0..100 {
        let (code, _) = http_get(addr, "/healthz HTTP/1.1").await;
        if code == 200 {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(healthy, "the server serves again once descriptors are free");
    drop(stdout);
    server.kill9();
}
