//! Cluster mode: what a node tells the others about the races it serves, so that every
//! node's directory (what `race_list` and the race page read without an actor round trip)
//! follows races created and changed anywhere, not only those it started with or serves.
//!
//! Each race actor hands its summary after every accepted change to [`News`] (never
//! waiting on NATS: an unbounded queue drained by one task), which publishes it on the
//! cluster topic `races`; every node puts the summaries other nodes published into its
//! directory (the race facade does, `domain.rs`). At most
//! once, like any topic: a node that missed one catches up with the race's next change, or
//! reads the journal at start.

use super::state::RaceSummary;
use crate::cluster::{topic, Link};
use crate::persist::record;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The topic the summaries go on.
const TOPIC: &str = "races";

/// Summaries received and not yet applied; beyond this NATS drops them for this node.
const QUEUE: usize = 1024;

/// One race's summary as a node published it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Published {
    /// The node that published it (its own are not applied again).
    node: String,
    /// The race as it is after the change.
    summary: RaceSummary,
}

/// Where race actors hand their summaries for the other nodes.
#[derive(Debug, Clone)]
pub struct News {
    /// Drained by the publishing task.
    queue: tokio::sync::mpsc::UnboundedSender<RaceSummary>,
}

impl News {
    /// Tells the other nodes that the race is now `summary` (dropped if the node's link is
    /// gone: their directories catch up with the next change).
    pub fn tell(&self, summary: RaceSummary) {
        let _ = self.queue.send(summary);
    }
}

/// Starts publishing what [`News`] is told, and hands over what other nodes publish (for
/// this node's directory).
pub async fn start(
    link: &Link,
) -> Result<(News, tokio::sync::mpsc::Receiver<RaceSummary>), String> {
    let node = link.node().to_owned();
    let mut received = topic::subscribe(link, TOPIC, QUEUE).await?;
    let (heard, others) = tokio::sync::mpsc::channel(QUEUE);
    let own = node.clone();
    tokio::spawn(async move {
        while let Some(bytes) = received.recv().await {
            match record::decode::<Published>(&bytes) {
                Ok(published) if published.node != own => {
                    if heard.send(published.summary).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("race summary from another node not decoded: {e}"),
            }
        }
    });
    let (queue, mut told) = tokio::sync::mpsc::unbounded_channel::<RaceSummary>();
    let link = link.clone();
    tokio::spawn(async move {
        while let Some(summary) = told.recv().await {
            let published = Published {
                node: node.clone(),
                summary,
            };
            let sent = match record::encode(&published) {
                Ok(bytes) => topic::publish(&link, TOPIC, Bytes::from(bytes)).await,
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                tracing::warn!(race = %published.summary.id, "race summary not published: {e}");
            }
        }
    });
    Ok((News { queue }, others))
}
