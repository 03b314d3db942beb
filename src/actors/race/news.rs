//! Cluster mode: what a node tells the others about the races it serves, so that every
//! node's directory (what `race_list` and the race page read without an actor round trip)
//! and device index (which racer a tracking app's device id reports for, over HTTP to any
//! node) follow races created and changed anywhere, not only those it started with.
//!
//! Each race actor hands its summary after every accepted change, and every device id it
//! binds or unbinds, to [`News`] (never waiting on NATS: an unbounded queue drained by one
//! task), which publishes it on the cluster topic `races`; every node applies what other
//! nodes published (the race facade does, `domain.rs`). At most
//! once, like any topic: a node that missed one catches up with the race's next change, or
//! reads the journal at start.

use super::state::RaceSummary;
use crate::cluster::{topic, Link};
use crate::ids::RaceId;
use crate::persist::record;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The topic the news goes on.
const TOPIC: &str = "races";

/// News received and not yet applied; beyond this NATS drops them for this node.
const QUEUE: usize = 1024;

/// What changed about a race, for the other nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RaceNews {
    /// The race as it is after an accepted change.
    Summary(RaceSummary),
    /// A tracking app's device id now reports for racer `bib` of `race`.
    Bound {
        /// The id.
        device_id: String,
        /// The race.
        race: RaceId,
        /// The racer.
        bib: u32,
    },
    /// A device id no longer reports for `race`.
    Unbound {
        /// The id.
        device_id: String,
        /// The race.
        race: RaceId,
    },
}

/// One piece of news as a node published it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Published {
    /// The node that published it (its own are not applied again).
    node: String,
    /// What changed.
    news: RaceNews,
}

/// Where race actors hand what changed for the other nodes.
#[derive(Debug, Clone)]
pub struct News {
    /// Drained by the publishing task.
    queue: tokio::sync::mpsc::UnboundedSender<RaceNews>,
}

impl News {
    /// Tells the other nodes `news` (dropped if the node's link is gone: their directories
    /// catch up with the next change, their device indexes at their next start).
    pub fn tell(&self, news: RaceNews) {
        let _ = self.queue.send(news);
    }
}

/// Starts publishing what [`News`] is told, and hands over what other nodes publish (for
/// this node's directory and device index).
pub async fn start(link: &Link) -> Result<(News, tokio::sync::mpsc::Receiver<RaceNews>), String> {
    let node = link.node().to_owned();
    let mut received = topic::subscribe(link, TOPIC, QUEUE).await?;
    let (heard, others) = tokio::sync::mpsc::channel(QUEUE);
    let own = node.clone();
    tokio::spawn(async move {
        while let Some(bytes) = received.recv().await {
            match record::decode::<Published>(&bytes) {
                Ok(published) if published.node != own => {
                    if heard.send(published.news).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("race news from another node not decoded: {e}"),
            }
        }
    });
    let (queue, mut told) = tokio::sync::mpsc::unbounded_channel::<RaceNews>();
    let link = link.clone();
    tokio::spawn(async move {
        while let Some(news) = told.recv().await {
            let published = Published {
                node: node.clone(),
                news,
            };
            let sent = match record::encode(&published) {
                Ok(bytes) => topic::publish(&link, TOPIC, Bytes::from(bytes)).await,
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                tracing::warn!("race news not published: {e}");
            }
        }
    });
    Ok((News { queue }, others))
}
