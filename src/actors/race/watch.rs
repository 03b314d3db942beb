//! The messages between a race's owner and the nodes that mirror its feed for their own
//! spectators, in cluster mode: the watch ask and its answer (NATS request–reply to the
//! owner's `watch` service, [`crate::cluster::forward`]) and the topic the owner relays
//! ticks on ([`crate::cluster::topic`]). Both ends, [`super::relay`] and [`super::mirror`],
//! depend on this file and not on each other. Encoded as journal records are
//! (`persist::record`: versioned bincode).

use super::lease_key;
use super::standings::Standing;
use super::state::{RaceSummary, RacerEntry};
use crate::error::Rejection;
use crate::geo::{Checkpoint, Position};
use crate::ids::RaceId;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The service on each node that answers [`WatchRequest`]s.
pub const WATCH_SERVICE: &str = "watch";

/// How often a node with spectators of a race it does not own asks its owner again.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);

/// How long a relay runs after the last ask: several missed asks, so one slow answer
/// does not stop the ticks.
pub const WATCH_LAPSE: Duration = Duration::from_secs(5);

/// The topic race `id`'s ticks are relayed on.
pub fn tick_topic(id: &RaceId) -> String {
    format!("tick.{}", lease_key(id))
}

/// A node's ask to watch a race, sent to the race's owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchRequest {
    /// The race.
    pub race: RaceId,
    /// The asking node, for the owner's logs.
    pub node: String,
    /// Sockets following the race on the asking node.
    pub spectators: u32,
    /// Whether the asking node needs the full snapshot (it has nothing, or missed a tick).
    pub snapshot: bool,
}

/// Everything a node needs to serve a race's spectators from its own mirror.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RaceSnapshot {
    /// The race.
    pub summary: RaceSummary,
    /// The course, in order.
    pub course: Vec<Position>,
    /// The course's checkpoints.
    pub checkpoints: Vec<Checkpoint>,
    /// The start list.
    pub roster: Vec<RacerEntry>,
    /// The standings as of tick `seq`, leader first.
    pub standings: Vec<Standing>,
    /// The tick the standings are as of.
    pub seq: u64,
    /// Spectators subscribed on the owner at that tick.
    pub spectators: u32,
}

/// The owner's answer to a [`WatchRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WatchReply {
    /// The race's ticks are relayed; the race as it is now.
    Relaying {
        /// The race.
        summary: RaceSummary,
        /// The last tick relayed: a watcher still behind it an ask later lost a tick.
        seq: u64,
    },
    /// The same, with the full snapshot that was asked for.
    Snapshot(Box<RaceSnapshot>),
    /// This node does not own the race: ask its owner.
    NotOwner,
    /// The race cannot be watched (it does not exist, or its actor could not start).
    Refused(Rejection),
}
