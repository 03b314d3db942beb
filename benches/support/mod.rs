//! What the benches that drive the real `peloton` binary share: starting it on a free
//! loopback port with its own data folder, and the signing keys that folder holds.

use peloton::auth::Keys;
use peloton::config::{Config, Overrides};
use peloton::error::ErrorCode;
use peloton::net::client::Client;
use peloton::net::protocol::{RaceCreate, RacerView, Reply, Request};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

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
#[allow(dead_code)] // the fan-out and ingest benches use it; the others do not
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
#[allow(dead_code)] // the race benches use it; the patrol and memory benches do not
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
