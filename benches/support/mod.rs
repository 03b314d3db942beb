//! What the benches that drive the real `peloton` binary share: starting it on a free
//! loopback port with its own data folder, the signing keys that folder holds, opening many
//! sockets to it, reading its `/metrics` (and a nats-server's monitoring JSON), what /proc
//! says of it (`process`), and how figures are printed (`figures`). Each bench uses a part
//! of it, so unused items are allowed here.
#![allow(dead_code)]

pub mod figures;
pub mod process;

use peloton::auth::Keys;
use peloton::config::{Config, Overrides};
use peloton::error::ErrorCode;
use peloton::net::client::Client;
use peloton::net::protocol::{RaceCreate, RacerView, Reply, Request};
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

/// Connection handshakes the benches run at once.
pub const CONNECTING: usize = 32;

/// Runs `connect(i)` for `i` in `0..n`, [`CONNECTING`] at a time, and returns the results in
/// order.
pub async fn connect_all<T, F, Fut>(n: usize, connect: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let gate = gate.clone();
        let connecting = connect(i);
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("gate");
            connecting.await
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.expect("connect"));
    }
    out
}

/// The server's `/metrics` text, from `host` (`127.0.0.1:port`, or a `ws://` address);
/// `None` when it does not answer 200 within 10 s.
pub async fn metrics_text(host: &str) -> Option<String> {
    let host = host.trim_start_matches("ws://").split('/').next()?;
    http_body(host, "/metrics").await
}

/// The body of `GET path` from `host` (`127.0.0.1:port`), asked as HTTP/1.0 so that the
/// answer is never chunked (nats-server's monitoring endpoints chunk larger answers to
/// HTTP/1.1); `None` when it does not answer 200 within 10 s.
pub async fn http_body(host: &str, path: &str) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(host).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut text))
        .await
        .ok()?
        .ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_owned())
}

/// Runs `peloton serve` on 127.0.0.1:0 with data in `data` and extra environment `env`,
/// waits for its `listening on` line, and returns the process and its `ws://` address.
pub fn start_server(data: &Path, env: &[(&str, &str)]) -> (Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_peloton"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env("RUST_LOG", "error");
    for (k, v) in env {
        command.env(k, v);
    }
    spawn_listening(command)
}

/// Spawns a server process that prints `listening on <addr>` first, and returns it with its
/// `ws://` address.
pub fn spawn_listening(mut command: Command) -> (Child, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let addr = line.trim().trim_start_matches("listening on ").to_owned();
    (child, format!("ws://{addr}"))
}

/// The upgrade request `Client::connect` makes: `url`'s WebSocket endpoint, the bearer
/// `token`, the binary subprotocol; for benches that open sockets of their own.
pub fn upgrade_request(
    url: &str,
    token: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = peloton::net::client::endpoint(url)
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        peloton::net::codec::Codec::Binary
            .subprotocol()
            .parse()
            .expect("header"),
    );
    request
}

/// The signing keys of the server whose data folder is `data` (after it started).
pub fn server_keys(data: &Path) -> Keys {
    let overrides = Overrides {
        listen: None,
        data_dir: Some(data.to_path_buf()),
    };
    let config = Config::load_from(None, &[], &overrides).expect("config");
    Keys::load_or_create(&config).expect("keys")
}

/// Creates a race on `gpx` starting at `start_at_ms`, registers `bibs` (200 a request) and
/// starts it; returns its id. A start that has passed makes the race live by itself
/// (`race.start_mode` auto), so the clock may start it first: live either way.
pub async fn live_race(
    admin: &mut Client,
    name: String,
    gpx: &str,
    start_at_ms: i64,
    bibs: &[u32],
) -> String {
    let Ok(Reply::Race(race)) = admin
        .request(Request::RaceCreate(RaceCreate {
            name,
            course_gpx: gpx.to_owned(),
            start_at_ms,
            cutoff_at_ms: None,
        }))
        .await
    else {
        panic!("race create failed")
    };
    for chunk in bibs.chunks(200) {
        admin
            .request(Request::RacerRegister {
                race_id: race.id.clone(),
                racers: chunk
                    .iter()
                    .map(|&bib| RacerView {
                        bib,
                        name: format!("Racer {bib}"),
                        team: None,
                        email: None,
                    })
                    .collect(),
            })
            .await
            .expect("register");
    }
    match admin
        .request(Request::RaceStart {
            id: race.id.clone(),
        })
        .await
    {
        Ok(_) => {}
        Err(e) if e.code() == Some(ErrorCode::InvalidTransition) => {}
        Err(e) => panic!("start: {e}"),
    }
    race.id
}
