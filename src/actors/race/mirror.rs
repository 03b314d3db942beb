//! Cluster mode, spectators of a race another node owns: this node keeps one mirror of the
//! race's feed, fed by the owner's relayed ticks (see [`super::relay`], and [`super::watch`] for the
//! messages), and serves every
//! local spectator from it exactly as the race actor serves its own: the same
//! [`Subscription`], the same published ticks (same sequence numbers, encoded once on this
//! node), the same resume from `since_seq` out of the mirror's recent ticks.
//!
//! The mirror asks the race's owner every [`WATCH_EVERY`] (found by its lease, so an owner
//! change is followed within one ask), for a full snapshot when it has a gap; a gap is
//! never passed on silently (the mirror's next tick carries every row its sockets lack).
//! Nobody left watching for [`IDLE_AFTER`], and the mirror goes.

use super::actor::Subscription;
use super::feed::{Published, RecentTicks, TickEncoder};
use super::lease_key;
use super::state::{RaceSummary, RacerEntry};
use super::watch::{
    tick_topic, RaceSnapshot, WatchReply, WatchRequest, WATCH_EVERY, WATCH_SERVICE,
};
use crate::cluster::{forward, topic, Leases, Link};
use crate::error::{ErrorCode, Rejection};
use crate::geo::{Checkpoint, Position};
use crate::ids::RaceId;
use crate::persist::record;
use dashmap::DashMap;
use peloton_domain::race::relay::{Followed, Mirror, RelayedTick};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a mirror with no spectator left stays, so a page reloading or a socket moving
/// between nodes finds it still warm.
pub const IDLE_AFTER: Duration = Duration::from_secs(10);

/// Relayed ticks waiting for the mirror; beyond this NATS drops them for this node and the
/// mirror mends the gap from a snapshot.
const RELAY_QUEUE: usize = 64;

/// Every mirror on this node, by race.
#[derive(Clone)]
pub struct Mirrors {
    /// Shared with every mirror task.
    inner: Arc<MirrorsInner>,
}

/// What [`Mirrors`] shares.
struct MirrorsInner {
    /// Where the owner is asked and ticks arrive.
    link: Link,
    /// Who owns each race.
    leases: Leases,
    /// Encodes the mirror's ticks for this node's sockets.
    encoder: TickEncoder,
    /// Ticks behind that a socket still gets only what changed.
    catch_up_ticks: usize,
    /// Bytes of recent ticks kept for spectators that reconnect.
    resume_buffer_bytes: usize,
    /// The mirrors, each started once by whoever needed it first.
    races: DashMap<RaceId, Arc<tokio::sync::OnceCell<Arc<RaceMirror>>>>,
}

/// One race's mirror.
struct RaceMirror {
    /// Everything a subscriber is served from, changed by the mirror's task.
    state: Mutex<MirrorState>,
}

/// A mirror's contents.
struct MirrorState {
    /// The race, as its owner last said.
    summary: RaceSummary,
    /// The course, in order.
    course: Vec<Position>,
    /// Its checkpoints.
    checkpoints: Vec<Checkpoint>,
    /// The start list, as of the last snapshot.
    roster: Vec<RacerEntry>,
    /// The feed as this node publishes it.
    mirror: Mirror,
    /// Spectators on the owner at the last tick.
    spectators: u32,
    /// Recent ticks, for sockets that reconnect with `since_seq`.
    recent: RecentTicks,
    /// This node's sockets' ticks.
    publisher: tokio::sync::watch::Sender<Option<Arc<Published>>>,
    /// Set once the mirror stopped following: a subscriber that finds it starts another.
    retired: bool,
    /// The node whose ticks the mirror follows: another one answering means the race
    /// moved, and the new owner's feed starts from a snapshot.
    owner: String,
    /// Whether the last ask found the owner had relayed a tick the mirror does not have.
    behind: bool,
}

impl MirrorState {
    /// A mirror of the owner's `snapshot`, answered by node `owner`.
    fn new(
        snapshot: RaceSnapshot,
        owner: String,
        catch_up_ticks: usize,
        resume_buffer_bytes: usize,
    ) -> MirrorState {
        let mut st = MirrorState {
            summary: snapshot.summary.clone(),
            course: Vec::new(),
            checkpoints: Vec::new(),
            roster: Vec::new(),
            mirror: Mirror::new(snapshot.seq, &snapshot.standings, catch_up_ticks),
            spectators: snapshot.spectators,
            recent: RecentTicks::new(resume_buffer_bytes),
            publisher: tokio::sync::watch::Sender::new(None),
            retired: false,
            owner: String::new(),
            behind: false,
        };
        // The mirror starts at the snapshot's tick: its table as a tick adds nothing.
        let _ = st.adopt(snapshot, owner);
        st
    }

    /// Takes the race as `snapshot` (answered by node `owner`) has it; its standings as a
    /// full tick, for the caller to follow.
    fn adopt(&mut self, snapshot: RaceSnapshot, owner: String) -> RelayedTick {
        self.summary = snapshot.summary;
        self.course = snapshot.course;
        self.checkpoints = snapshot.checkpoints;
        self.roster = snapshot.roster;
        self.owner = owner;
        self.behind = false;
        RelayedTick {
            seq: snapshot.seq,
            since_seq: 0,
            spectators: snapshot.spectators,
            full: true,
            rows: snapshot.standings,
        }
    }

    /// A new spectator's snapshot and feed: the ticks after `since_seq` when the mirror
    /// still has them, else the whole race as of the mirror's tick.
    fn subscription(&self, since_seq: Option<u64>) -> Subscription {
        let current = self.mirror.seq();
        let missed = since_seq.and_then(|seq| self.recent.since(seq, current));
        let resuming = missed.is_some();
        Subscription {
            summary: self.summary.clone(),
            course: if resuming {
                Vec::new()
            } else {
                self.course.clone()
            },
            checkpoints: if resuming {
                Vec::new()
            } else {
                self.checkpoints.clone()
            },
            roster: self.roster.clone(),
            standings: if resuming {
                Vec::new()
            } else {
                self.mirror.table()
            },
            missed,
            seq: current,
            spectators: self.spectators,
            updates: self.publisher.subscribe(),
        }
    }
}

impl Mirrors {
    /// Mirrors asking owners over `link`, found by `leases`, publishing ticks encoded by
    /// `encoder` with the race actor's own catch-up window and resume buffer.
    pub fn new(
        link: Link,
        leases: Leases,
        encoder: TickEncoder,
        catch_up_ticks: usize,
        resume_buffer_bytes: usize,
    ) -> Mirrors {
        Mirrors {
            inner: Arc::new(MirrorsInner {
                link,
                leases,
                encoder,
                catch_up_ticks,
                resume_buffer_bytes,
                races: DashMap::new(),
            }),
        }
    }

    /// The node that owns race `id` when it is another one (`None`: this node serves the
    /// race itself, taking it if nobody does).
    pub async fn owned_elsewhere(&self, id: &RaceId) -> Option<String> {
        self.inner.leases.holder_elsewhere(&lease_key(id)).await
    }

    /// Subscribes a spectator of race `id`, owned by another node, to this node's mirror
    /// of it: a snapshot, or the ticks after `since_seq` when the mirror still has them.
    pub async fn subscribe(
        &self,
        id: &RaceId,
        since_seq: Option<u64>,
    ) -> Result<Subscription, Rejection> {
        for _ in 0..3 {
            let cell = self.inner.races.entry(id.clone()).or_default().clone();
            let mirror = cell.get_or_try_init(|| self.start(id)).await?.clone();
            let st = mirror
                .state
                .lock()
                .map_err(|_| Rejection::internal("a race mirror failed; subscribe again"))?;
            if !st.retired {
                return Ok(st.subscription(since_seq));
            }
            // It retired between the lookup and now: start a fresh one.
            drop(st);
            self.forget(id, &mirror);
        }
        Err(Rejection::new(
            ErrorCode::Unavailable,
            format!("race {id} cannot be followed from this node now; retry"),
        ))
    }

    /// Starts the mirror of race `id`: listens for its ticks first, then takes the
    /// owner's snapshot, so no tick after the snapshot can pass unseen.
    async fn start(&self, id: &RaceId) -> Result<Arc<RaceMirror>, Rejection> {
        let unavailable = |e: String| {
            Rejection::new(
                ErrorCode::Unavailable,
                format!("race {id} cannot be followed from this node ({e}); retry"),
            )
        };
        let ticks = topic::subscribe(&self.inner.link, &tick_topic(id), RELAY_QUEUE)
            .await
            .map_err(unavailable)?;
        let (owner, reply) = self.ask(id, 0, true).await.map_err(unavailable)?;
        let snapshot = match reply {
            WatchReply::Snapshot(snapshot) => *snapshot,
            WatchReply::Refused(rejection) => return Err(rejection),
            WatchReply::NotOwner | WatchReply::Relaying { .. } => {
                return Err(unavailable("its owner is changing".into()))
            }
        };
        let mirror = Arc::new(RaceMirror {
            state: Mutex::new(MirrorState::new(
                snapshot,
                owner,
                self.inner.catch_up_ticks,
                self.inner.resume_buffer_bytes,
            )),
        });
        let mirrors = self.clone();
        let id = id.clone();
        let running = mirror.clone();
        tokio::spawn(async move {
            mirrors.follow(&id, &running, ticks).await;
            if let Ok(mut st) = running.state.lock() {
                st.retired = true;
            }
            // Gone: the next subscriber starts a fresh mirror.
            mirrors.forget(&id, &running);
        });
        Ok(mirror)
    }

    /// Drops `mirror` from the registry, if it is still the one there.
    fn forget(&self, id: &RaceId, mirror: &Arc<RaceMirror>) {
        self.inner.races.remove_if(id, |_, cell| {
            cell.get().is_some_and(|m| Arc::ptr_eq(m, mirror))
        });
    }

    /// The mirror's life: follows relayed ticks, asks the owner every [`WATCH_EVERY`]
    /// (for a snapshot after a gap), and ends once nobody watched for [`IDLE_AFTER`].
    async fn follow(
        &self,
        id: &RaceId,
        mirror: &RaceMirror,
        mut ticks: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    ) {
        let mut ask = tokio::time::interval(WATCH_EVERY);
        let mut gap = false;
        let mut idle = Duration::ZERO;
        loop {
            tokio::select! {
                relayed = ticks.recv() => {
                    let Some(bytes) = relayed else {
                        // The subscription ended (the link is going): nothing more to mirror.
                        return;
                    };
                    match record::decode::<RelayedTick>(&bytes) {
                        Ok(tick) => gap |= self.apply(id, mirror, tick) == Applied::Gap,
                        Err(e) => tracing::warn!(race = %id, "relayed tick not decoded: {e}"),
                    }
                    if gap {
                        // Mend at once rather than at the next ask: sockets wait meanwhile.
                        gap = !self.refresh(id, mirror, true).await;
                    }
                }
                _ = ask.tick() => {
                    let (watchers, stale_roster) = match mirror.state.lock() {
                        Ok(st) => (
                            st.publisher.receiver_count(),
                            st.roster.len() != st.summary.racers as usize,
                        ),
                        Err(_) => return,
                    };
                    if watchers == 0 {
                        idle += WATCH_EVERY;
                        if idle >= IDLE_AFTER && self.retire(mirror) {
                            return;
                        }
                    } else {
                        idle = Duration::ZERO;
                    }
                    gap = !self.refresh(id, mirror, gap || stale_roster).await && gap;
                }
            }
        }
    }

    /// Retires an idle mirror, unless a spectator subscribed at the last moment: checked
    /// and marked under the lock subscribers take, so none can join a retired mirror.
    fn retire(&self, mirror: &RaceMirror) -> bool {
        match mirror.state.lock() {
            Ok(mut st) if st.publisher.receiver_count() == 0 => {
                st.retired = true;
                true
            }
            Ok(_) => false,
            Err(_) => true,
        }
    }

    /// Asks the race's owner to keep relaying, for the snapshot when `snapshot`, and
    /// applies the answer; asks again for the snapshot when the answer shows the mirror
    /// cannot go on from the ticks alone (the race moved to another node, or a relayed
    /// tick is still missing an ask later). Whether the mirror is whole afterwards.
    async fn refresh(&self, id: &RaceId, mirror: &RaceMirror, snapshot: bool) -> bool {
        let mut snapshot = snapshot;
        for _ in 0..2 {
            let watchers = mirror
                .state
                .lock()
                .map(|st| st.publisher.receiver_count())
                .unwrap_or(0);
            let (owner, reply) = match self.ask(id, watchers, snapshot).await {
                Ok(answered) => answered,
                Err(e) => {
                    tracing::debug!(race = %id, "owner not reached: {e}");
                    return false;
                }
            };
            let Ok(mut st) = mirror.state.lock() else {
                return false;
            };
            match reply {
                WatchReply::Relaying { summary, seq } => {
                    st.summary = summary;
                    let moved = owner != st.owner;
                    let lost = seq > st.mirror.seq() && st.behind;
                    st.behind = seq > st.mirror.seq();
                    if !moved && !lost {
                        return true;
                    }
                    tracing::debug!(race = %id, %owner, moved, lost, "mirror asks for a snapshot");
                    snapshot = true;
                }
                WatchReply::Snapshot(snapshot) => {
                    let tick = st.adopt(*snapshot, owner);
                    // A snapshot at the mirror's own tick or before it mends nothing new:
                    // the ticks after it are on their way.
                    let _ = self.publish(id, &mut st, tick);
                    return true;
                }
                WatchReply::NotOwner | WatchReply::Refused(_) => return false,
            }
        }
        false
    }

    /// Applies one relayed tick under the mirror's lock.
    fn apply(&self, id: &RaceId, mirror: &RaceMirror, tick: RelayedTick) -> Applied {
        match mirror.state.lock() {
            Ok(mut st) => self.publish(id, &mut st, tick),
            Err(_) => Applied::Gap,
        }
    }

    /// Follows `tick` and, when it is new, publishes it to this node's sockets.
    fn publish(&self, id: &RaceId, st: &mut MirrorState, tick: RelayedTick) -> Applied {
        match st.mirror.follow(tick) {
            Followed::Tick(update) => {
                st.spectators = update.spectators;
                if let Some(published) =
                    Published::new(id.clone(), update, self.inner.encoder.clone())
                {
                    st.recent.push(&published);
                    st.publisher.send_replace(Some(Arc::new(published)));
                }
                Applied::Published
            }
            Followed::Stale => Applied::Published,
            Followed::Gap => Applied::Gap,
        }
    }

    /// Sends one watch ask to the race's owner: who that is, and its answer.
    async fn ask(
        &self,
        id: &RaceId,
        spectators: usize,
        snapshot: bool,
    ) -> Result<(String, WatchReply), String> {
        let owner = self
            .inner
            .leases
            .owner(&lease_key(id))
            .await?
            .ok_or_else(|| "nobody serves it now".to_owned())?;
        let request = WatchRequest {
            race: id.clone(),
            node: self.inner.link.node().to_owned(),
            spectators: u32::try_from(spectators).unwrap_or(u32::MAX),
            snapshot,
        };
        let bytes = forward::ask(
            &self.inner.link,
            &owner,
            WATCH_SERVICE,
            record::encode(&request)?,
        )
        .await?;
        Ok((owner, record::decode(&bytes)?))
    }
}

/// What became of a relayed tick.
#[derive(Debug, PartialEq, Eq)]
enum Applied {
    /// Published (or already had).
    Published,
    /// It did not build on the mirror's tick: a snapshot is needed.
    Gap,
}
