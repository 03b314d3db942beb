//! What the benches that drive the real `peloton` binary share: starting it on a free
//! loopback port with its own data folder, and the signing keys that folder holds.

use peloton::auth::Keys;
use peloton::config::{Config, Overrides};
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
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("spawn peloton");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let addr = line.trim().trim_start_matches("listening on ").to_owned();
    (child, format!("ws://{addr}"))
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
