//! `[cluster]`: cluster mode, off by default. With `nats_url` empty the server is the one
//! process it always was, its journal in sled under the data folder; with it set, actors
//! journal to NATS JetStream (`persist::jetstream`), whose servers replicate every append
//! before acknowledging it.

use super::check::{all_within, ConfigError};
use serde::Deserialize;
use std::path::PathBuf;

/// Most replicas a JetStream stream may have (the NATS server's own limit).
const MAX_REPLICAS: u64 = 5;

/// `[cluster]`: where the NATS servers are and how the journal is kept there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS server URLs, comma separated (`nats://a:4222,nats://b:4222`), as every NATS
    /// client takes them, so one variable (`PELOTON_CLUSTER_NATS_URL`) sets the whole list.
    /// Empty: cluster mode off, the journal in sled.
    pub nats_url: String,
    /// This node's name: in its leases (a node restarted under the same name takes its
    /// own leases back at once), in logs, and in the header of every journal record it
    /// writes. Must differ between nodes running at the same time. Empty: the host name
    /// (a StatefulSet pod's name).
    pub node_id: String,
    /// A NATS credentials file (JWT and NKey seed, as `nsc` writes it). Empty: none, for a
    /// NATS server without accounts (tests, a private network).
    pub credentials_file: PathBuf,
    /// Copies JetStream keeps of every stream and of the snapshot bucket: an append is
    /// acknowledged once a majority of them stored it. 3 survives the loss of one NATS
    /// server; 1 is a single point of failure, for tests.
    pub replicas: u64,
    /// How long an append waits for JetStream's acknowledgement before the server answers
    /// the client `unavailable`, and how long a read may take.
    pub ack_timeout_ms: u64,
    /// How long the lease bucket keeps a node's lease on a race after its last renewal: a
    /// node that dies loses its races to another within this, plus the takeover's replay.
    /// Renewed every third of it; the node stops writing a fifth of it before it lapses.
    pub lease_ttl_ms: u64,
    /// First part of every stream, subject and bucket name, so several deployments (or
    /// tests) can share one NATS cluster without seeing each other's journals.
    pub prefix: String,
    /// The WebSocket URL clients reach this node at (`wss://a.example.com/ws`), listed by
    /// every node at `/api/nodes` so a client whose node dies moves to another. Empty:
    /// `ws://` + the address the node listens on + `/ws`, right only where clients reach
    /// that address directly.
    pub advertise_url: String,
}

impl ClusterConfig {
    /// Whether cluster mode is on.
    pub fn enabled(&self) -> bool {
        !self.nats_url.trim().is_empty()
    }

    /// The node's name: `node_id`, else the host name, else `peloton`.
    pub fn node_name(&self) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        // A host name may hold dots, which separate the tokens of the subject the node
        // takes forwarded requests on: anything but letters, digits, `-` and `_` becomes `-`.
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|name| {
                name.trim()
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '_' {
                            c
                        } else {
                            '-'
                        }
                    })
                    .collect::<String>()
            })
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "peloton".to_owned())
    }

    /// Replicas 1 to 5; an acknowledgement wait of 100 ms to 5 minutes; a prefix and node
    /// id NATS accepts inside a name (letters, digits, `-`, `_`); URLs that name a scheme
    /// NATS speaks.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        all_within(
            "cluster",
            &[
                ("replicas", self.replicas, 1, MAX_REPLICAS),
                ("ack_timeout_ms", self.ack_timeout_ms, 100, 300_000),
                ("lease_ttl_ms", self.lease_ttl_ms, 1000, 600_000),
            ],
            |min, max, value| format!("must be between {min} and {max}, got {value}"),
        )?;
        name_part("cluster.prefix", &self.prefix, false)?;
        let advertised = self.advertise_url.trim();
        let ws_url = ["ws://", "wss://"]
            .iter()
            .any(|scheme| advertised.len() > scheme.len() && advertised.starts_with(scheme));
        if !advertised.is_empty() && !ws_url {
            return Err(ConfigError(format!(
                "cluster.advertise_url must be a ws:// or wss:// URL, got `{advertised}`"
            )));
        }
        name_part("cluster.node_id", &self.node_id, true)?;
        for url in self.nats_url.split(',').map(str::trim) {
            if url.is_empty() {
                if self.enabled() {
                    return Err(ConfigError(format!(
                        "cluster.nats_url has an empty entry: `{}`",
                        self.nats_url
                    )));
                }
                continue;
            }
            let scheme_ok = ["nats://", "tls://"]
                .iter()
                .any(|scheme| url.starts_with(scheme));
            if !scheme_ok {
                return Err(ConfigError(format!(
                    "cluster.nats_url entries must start with nats:// or tls://, got `{url}`"
                )));
            }
        }
        Ok(())
    }
}

/// `value` is usable inside a stream, bucket or subject name: 1 to 32 letters, digits, `-`
/// or `_` (or empty where `may_be_empty`).
fn name_part(key: &str, value: &str, may_be_empty: bool) -> Result<(), ConfigError> {
    if value.is_empty() && may_be_empty {
        return Ok(());
    }
    let fits = !value.is_empty()
        && value.len() <= 32
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if fits {
        Ok(())
    } else {
        Err(ConfigError(format!(
            "{key} must be 1 to 32 letters, digits, `-` or `_`, got `{value}`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(nats_url: &str) -> ClusterConfig {
        ClusterConfig {
            nats_url: nats_url.into(),
            node_id: String::new(),
            credentials_file: PathBuf::new(),
            replicas: 3,
            ack_timeout_ms: 5000,
            lease_ttl_ms: 3000,
            prefix: "peloton".into(),
            advertise_url: String::new(),
        }
    }

    #[test]
    fn off_by_default_and_on_with_urls() {
        assert!(!cluster("").enabled());
        assert!(!cluster("  ").enabled());
        assert!(cluster("nats://127.0.0.1:4222").enabled());
        cluster("").validate().unwrap();
        cluster("nats://a:4222, tls://b:4222").validate().unwrap();
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = cluster("http://a:4222").validate().unwrap_err().to_string();
        assert!(err.contains("cluster.nats_url"), "{err}");
        let err = cluster("nats://a:4222,")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty entry"), "{err}");
        let mut c = cluster("nats://a:4222");
        c.replicas = 7;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("cluster.replicas"), "{err}");
        let mut c = cluster("nats://a:4222");
        c.prefix = "pe.lo".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("cluster.prefix"), "{err}");
        let mut c = cluster("nats://a:4222");
        c.node_id = "node 1".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("cluster.node_id"), "{err}");
        let mut c = cluster("nats://a:4222");
        c.advertise_url = "http://a:7400/ws".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("cluster.advertise_url"), "{err}");
        c.advertise_url = "wss://a.example.com/ws".into();
        c.validate().unwrap();
    }
}
