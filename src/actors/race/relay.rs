//! Cluster mode, the owner's side of spectators on other nodes: while any node asks to
//! watch a race this node owns, one relay task follows the race's ticks, like one more
//! subscribed socket, and publishes each on the race's topic once for the whole cluster
//! (one NATS message per tick, whatever the number of nodes and sockets). The other nodes'
//! side is [`super::mirror`].
//!
//! A node watching a race asks again every [`WATCH_EVERY`], with how many sockets it
//! serves (the messages are in [`super::watch`]); a relay nobody asked for within
//! [`WATCH_LAPSE`] stops, as does one whose race
//! this node no longer owns. The ask is answered with the race's summary, or with a full
//! snapshot (course, roster, standings and their tick) when the watcher has nothing yet or
//! found a gap in the ticks.
//!
//! What a relayed tick carries, and how a mirror checks it builds on what it has, is the
//! pure rule in `peloton_domain::race::relay`.

use super::actor::UpdatesReceiver;
use super::domain::RaceDomain;
use super::feed::Published;
use super::lease_key;
use super::watch::{
    tick_topic, RaceSnapshot, WatchReply, WatchRequest, WATCH_EVERY, WATCH_LAPSE, WATCH_SERVICE,
};
use crate::cluster::{forward, topic, Leases, Link};
use crate::error::{ErrorCode, Rejection};
use crate::ids::RaceId;
use crate::persist::record;
use bytes::Bytes;
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One relay task's shared state.
struct RelayEntry {
    /// When a node last asked to watch.
    asked_at: Mutex<Instant>,
    /// The last tick published.
    relayed: AtomicU64,
    /// Spectators on each watching node, as its last ask said, and when it asked.
    watchers: Mutex<HashMap<String, (u32, Instant)>>,
}

impl RelayEntry {
    /// Records node `node`'s ask; the spectators of every node that asked lately.
    fn asked(&self, node: String, spectators: u32) -> u32 {
        let now = Instant::now();
        if let Ok(mut at) = self.asked_at.lock() {
            *at = now;
        }
        let Ok(mut watchers) = self.watchers.lock() else {
            return 0;
        };
        watchers.insert(node, (spectators, now));
        watchers.retain(|_, (_, at)| now.duration_since(*at) <= WATCH_LAPSE);
        watchers
            .values()
            .fold(0u32, |sum, (count, _)| sum.saturating_add(*count))
    }
}

/// The relays this node runs for the races it owns.
#[derive(Clone)]
pub struct Relays {
    /// Shared by every relay task.
    inner: Arc<RelaysInner>,
}

/// What [`Relays`] shares.
struct RelaysInner {
    /// Where ticks are published.
    link: Link,
    /// Whether this node still owns a race.
    leases: Leases,
    /// The races, subscribed to like any spectator.
    races: RaceDomain,
    /// The running relays, by race.
    running: DashMap<RaceId, Arc<RelayEntry>>,
}

impl Relays {
    /// Relays for the races `races` serves, as this node owns them by `leases`.
    pub fn new(link: Link, leases: Leases, races: RaceDomain) -> Relays {
        Relays {
            inner: Arc::new(RelaysInner {
                link,
                leases,
                races,
                running: DashMap::new(),
            }),
        }
    }

    /// Answers one watch ask's bytes (an undecodable ask is refused, never a panic).
    pub async fn answer(&self, request: &[u8]) -> Vec<u8> {
        let reply = match record::decode::<WatchRequest>(request) {
            Ok(request) => self.watch(request).await,
            Err(e) => WatchReply::Refused(Rejection::new(
                ErrorCode::InvalidArgument,
                format!("watch request: {e}"),
            )),
        };
        record::encode(&reply).unwrap_or_default()
    }

    /// Starts (or keeps) the relay of the asked race and answers with the race.
    async fn watch(&self, request: WatchRequest) -> WatchReply {
        let id = request.race;
        if !self.inner.leases.holds(&lease_key(&id)) {
            return WatchReply::NotOwner;
        }
        tracing::debug!(race = %id, node = %request.node, spectators = request.spectators, "watched");
        let running = self.inner.running.get(&id).map(|entry| entry.clone());
        let entry = match running {
            Some(entry) => entry,
            None => match self.start(&id).await {
                Ok(entry) => entry,
                Err(e) => return WatchReply::Refused(e),
            },
        };
        let elsewhere = entry.asked(request.node, request.spectators);
        self.inner.races.watched_elsewhere(&id, Some(elsewhere));
        if request.snapshot {
            return match self.inner.races.subscribe_here(&id, None).await {
                Ok(sub) => WatchReply::Snapshot(Box::new(RaceSnapshot {
                    summary: sub.summary,
                    course: sub.course,
                    checkpoints: sub.checkpoints,
                    roster: sub.roster,
                    standings: sub.standings,
                    seq: sub.seq,
                    spectators: sub.spectators,
                })),
                Err(e) => WatchReply::Refused(e),
            };
        }
        match self.inner.races.get(&id) {
            Ok(summary) => WatchReply::Relaying {
                summary,
                seq: entry.relayed.load(Ordering::Relaxed),
            },
            Err(e) => WatchReply::Refused(e),
        }
    }

    /// Subscribes to race `id` and relays its ticks until nobody asks or the race moves.
    async fn start(&self, id: &RaceId) -> Result<Arc<RelayEntry>, Rejection> {
        let subscription = self.inner.races.subscribe_here(id, None).await?;
        let entry = Arc::new(RelayEntry {
            asked_at: Mutex::new(Instant::now()),
            relayed: AtomicU64::new(subscription.seq),
            watchers: Mutex::new(HashMap::new()),
        });
        // Two asks at once start one relay: the second finds the first's entry.
        match self.inner.running.entry(id.clone()) {
            dashmap::Entry::Occupied(running) => return Ok(running.get().clone()),
            dashmap::Entry::Vacant(vacant) => {
                vacant.insert(entry.clone());
            }
        }
        let relays = self.clone();
        let id = id.clone();
        let running = entry.clone();
        tokio::spawn(async move {
            relays
                .relay(&id, subscription.updates, subscription.seq, &running)
                .await;
            let removed = relays
                .inner
                .running
                .remove_if(&id, |_, current| Arc::ptr_eq(current, &running));
            if removed.is_some() {
                relays.inner.races.watched_elsewhere(&id, None);
            }
        });
        Ok(entry)
    }

    /// Publishes each tick of `updates` after tick `seq`, as what changed since the last
    /// one relayed (every row when the window no longer covers it).
    async fn relay(
        &self,
        id: &RaceId,
        mut updates: UpdatesReceiver,
        mut relayed: u64,
        entry: &RelayEntry,
    ) {
        let topic = tick_topic(id);
        let key = lease_key(id);
        let mut check = tokio::time::interval(WATCH_EVERY);
        loop {
            tokio::select! {
                changed = updates.changed() => {
                    if changed.is_err() {
                        // The race actor stopped: watchers find a gap in the next ticks.
                        return;
                    }
                    let latest: Option<Arc<Published>> = updates.borrow_and_update().clone();
                    let Some(tick) = latest.and_then(|p| p.relay_since(relayed)) else {
                        continue;
                    };
                    let seq = tick.seq;
                    match record::encode(&tick) {
                        Ok(bytes) => {
                            if let Err(e) = topic::publish(&self.inner.link, &topic, Bytes::from(bytes)).await {
                                // Watchers see the gap and ask for the table.
                                tracing::warn!(race = %id, "tick not relayed: {e}");
                            }
                        }
                        Err(e) => tracing::error!(race = %id, "tick not encoded for relay: {e}"),
                    }
                    relayed = seq;
                    entry.relayed.store(seq, Ordering::Relaxed);
                }
                _ = check.tick() => {
                    let asked = entry.asked_at.lock().map(|at| at.elapsed()).unwrap_or(Duration::MAX);
                    if asked > WATCH_LAPSE || !self.inner.leases.holds(&key) {
                        return;
                    }
                }
            }
        }
    }
}

/// Serves watch asks on this node.
pub async fn serve(link: &Link, relays: Relays) -> Result<(), String> {
    let answer: forward::Answerer = Arc::new(move |request| {
        let relays = relays.clone();
        Box::pin(async move { relays.answer(&request).await })
    });
    forward::serve(
        link,
        tokio::runtime::Handle::current(),
        WATCH_SERVICE,
        answer,
    )
    .await
}
