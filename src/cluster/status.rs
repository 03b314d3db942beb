//! Who is in the cluster and what it holds, for operators (`peloton cluster status`) and
//! for clients (the node list a client moves along when its node dies, [`Members`]).
//!
//! Each node announces itself in the bucket `<prefix>_nodes`, whose keys lapse one lease TTL
//! after their last write, and rewrites its card every third of the TTL, reading the others'
//! cards as it does: a node that died leaves the list as its leases lapse. The status reads that bucket, the lease bucket, and
//! every stream of the deployment (messages, bytes, actors, replicas and how far the furthest
//! replica lags behind the leader).

use super::link::Link;
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::StorageType;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a node says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCard {
    /// Its name (`cluster.node_id`).
    pub node: String,
    /// The address it listens on, as bound.
    pub address: String,
    /// Where clients reach its WebSocket (`cluster.advertise_url`, else `ws://<address>/ws`);
    /// empty in a card written before nodes had it.
    #[serde(default)]
    pub url: String,
    /// Its build's version.
    pub version: String,
    /// When it started, ms since the epoch.
    pub started_at_ms: i64,
}

/// A lease and its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseRow {
    /// The lease key (`race.<id>`).
    pub key: String,
    /// The node holding it.
    pub node: String,
}

/// One journal stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamRow {
    /// Its name (`<prefix>_<kind>`).
    pub name: String,
    /// Records in it.
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Actors (subjects) with records.
    pub actors: u64,
    /// Replicas configured.
    pub replicas: usize,
    /// The NATS server leading it (none on a single server).
    pub leader: Option<String>,
    /// Records the furthest replica is behind the leader (0 when all are current).
    pub max_lag: u64,
}

/// The whole picture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    /// Nodes that announced themselves within one lease TTL, by name.
    pub nodes: Vec<NodeCard>,
    /// Leases held, by key.
    pub leases: Vec<LeaseRow>,
    /// The deployment's journal streams, by name.
    pub streams: Vec<StreamRow>,
}

/// The nodes bucket, found or created.
async fn nodes_bucket(link: &Link) -> Result<kv::Store, String> {
    let config = kv::Config {
        bucket: format!("{}_nodes", link.config().prefix),
        description: "Peloton nodes: who is up".into(),
        history: 1,
        max_age: Duration::from_millis(link.config().lease_ttl_ms),
        storage: StorageType::Memory,
        num_replicas: usize::try_from(link.config().replicas).unwrap_or(1),
        ..Default::default()
    };
    let context = link.context();
    match context.get_key_value(&config.bucket).await {
        Ok(bucket) => Ok(bucket),
        Err(_) => context
            .create_key_value(config.clone())
            .await
            .map_err(|e| format!("nodes bucket {}: {e}", config.bucket)),
    }
}

/// The nodes up, as this node last read their cards (refreshed every third of the lease
/// TTL), by name: what `/api/nodes` lists without a NATS round trip per request.
#[derive(Debug, Clone, Default)]
pub struct Members {
    /// The cards.
    cards: std::sync::Arc<std::sync::RwLock<Vec<NodeCard>>>,
}

impl Members {
    /// The nodes up, by name (this one at least, once it announced itself).
    pub fn cards(&self) -> Vec<NodeCard> {
        self.cards.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// Replaces the list.
    fn set(&self, mut cards: Vec<NodeCard>) {
        cards.sort_by(|a, b| a.node.cmp(&b.node));
        if let Ok(mut current) = self.cards.write() {
            *current = cards;
        }
    }
}

/// Writes `card` into the nodes bucket now and every third of the lease TTL, and each time
/// reads every node's card into `members`.
pub async fn announce(link: &Link, card: NodeCard, members: Members) -> Result<(), String> {
    let value = serde_json::to_vec(&card).map_err(|e| e.to_string())?;
    let every = Duration::from_millis(link.config().lease_ttl_ms) / 3;
    let task_link = link.clone();
    let bucket = link
        .run(async move { nodes_bucket(&task_link).await })
        .await??;
    let key = card.node.clone();
    link.spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = bucket.put(&key, value.clone().into()).await {
                tracing::warn!("node card not written: {e}");
            }
            match entries(&bucket).await {
                Ok(found) => members.set(
                    found
                        .iter()
                        .filter_map(|(_, v)| serde_json::from_slice::<NodeCard>(v).ok())
                        .collect(),
                ),
                Err(e) => tracing::warn!("node cards not read: {e}"),
            }
        }
    });
    Ok(())
}

/// Reads the cluster's status.
pub async fn read(link: &Link) -> Result<ClusterStatus, String> {
    let link = link.clone();
    link.clone()
        .run(async move {
            let prefix = link.config().prefix.clone();
            let mut nodes = Vec::new();
            let bucket = nodes_bucket(&link).await?;
            for (_, value) in entries(&bucket).await? {
                if let Ok(card) = serde_json::from_slice::<NodeCard>(&value) {
                    nodes.push(card);
                }
            }
            nodes.sort_by(|a, b| a.node.cmp(&b.node));
            let mut leases = Vec::new();
            if let Ok(bucket) = link
                .context()
                .get_key_value(format!("{prefix}_leases"))
                .await
            {
                for (key, value) in entries(&bucket).await? {
                    leases.push(LeaseRow {
                        key,
                        node: String::from_utf8_lossy(&value).into_owned(),
                    });
                }
            }
            leases.sort_by(|a, b| a.key.cmp(&b.key));
            let mut streams = Vec::new();
            let mut names = link.context().stream_names();
            let journal = format!("{prefix}_");
            while let Some(name) = names.next().await {
                let name = name.map_err(|e| format!("streams: {e}"))?;
                // The buckets are streams too (`KV_<bucket>`): only journals are listed.
                if !name.starts_with(&journal) {
                    continue;
                }
                let mut stream = link
                    .context()
                    .get_stream(&name)
                    .await
                    .map_err(|e| format!("stream {name}: {e}"))?;
                let info = stream
                    .info()
                    .await
                    .map_err(|e| format!("stream {name}: {e}"))?;
                let (leader, max_lag) = match &info.cluster {
                    Some(cluster) => (
                        cluster.leader.clone(),
                        cluster
                            .replicas
                            .iter()
                            .filter_map(|peer| peer.lag)
                            .max()
                            .unwrap_or(0),
                    ),
                    None => (None, 0),
                };
                streams.push(StreamRow {
                    name: name.clone(),
                    messages: info.state.messages,
                    bytes: info.state.bytes,
                    actors: info.state.subjects_count,
                    replicas: info.config.num_replicas,
                    leader,
                    max_lag,
                });
            }
            streams.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(ClusterStatus {
                nodes,
                leases,
                streams,
            })
        })
        .await?
}

/// Every live key of `bucket` with its value.
async fn entries(bucket: &kv::Store) -> Result<Vec<(String, bytes::Bytes)>, String> {
    let mut keys = bucket.keys().await.map_err(|e| format!("keys: {e}"))?;
    let mut out = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| format!("keys: {e}"))?;
        if let Some(value) = bucket.get(&key).await.map_err(|e| format!("{key}: {e}"))? {
            out.push((key, value));
        }
    }
    Ok(out)
}
