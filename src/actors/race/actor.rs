//! The race actor: owns one race's [`RaceState`], journals the events its rules produce,
//! applies them, publishes the race's summary to the directory and replies.
//!
//! It holds no rule of its own: what a command means, when the race's clock acts, when
//! everyone has finished, who is registered and who is disqualified are the race's rules
//! (`RaceState`, `disqualification`), journaled through the one shell
//! ([`crate::actors::journaled`]), which also rebuilds the state on start (first spawn,
//! restart after a panic, recovery) from the latest snapshot plus the journal after it.

use super::device_index::DeviceIndex;
use super::devices::{
    generated_device_id, DeviceBinding, DevicesChange, DevicesCommand, DevicesInputs, RaceDevices,
};
use super::disqualification::verdict;
use super::feed::{Feed, Published, RecentTick, RecentTicks, TickEncoder};
use super::news::RaceNews;
use super::pace::{paces, Pace, PaceRules};
use super::residency::{residency, Residency};
use super::results::{results, ResultRow};
use super::standings::{RacerProgress, Standing, Standings};
use super::state::RaceStatus;
use super::state::StartMode;
use super::state::{
    RaceCommand, RaceEvent, RaceInputs, RaceLimits, RaceState, RaceSummary, RacerEntry,
};
use super::{DEVICES_KIND, KIND};
use crate::actors::events::DomainEvent;
use crate::actors::journaled::{Journaled, SnapshotPolicy};
use crate::actors::racer::msg::RacerMsg;
use crate::actors::racer::{CourseGeometry, Incidents, TrackingRules};
use crate::actors::registry::Registry;
use crate::error::Rejection;
use crate::ids::RaceId;
use crate::metrics as m;
use crate::persist::{ActorKey, Compaction, Journal};
use crate::time::{now_ms, UnixMillis};
use dashmap::DashMap;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::Arc;

/// What every race actor shares: storage, the directory it publishes to, and limits.
pub struct RaceContext {
    /// Appends events and snapshots.
    pub journal: Journal,
    /// Summaries of every race, read by list/show without asking actors.
    pub directory: DashMap<RaceId, RaceSummary>,
    /// Validation limits from configuration.
    pub limits: RaceLimits,
    /// Events between snapshots.
    pub snapshot_every: u64,
    /// How racers' fixes are judged.
    pub rules: TrackingRules,
    /// Live race actors by id.
    pub races: Arc<Registry<RaceId, RaceMsg>>,
    /// Live racer actors by race and bib.
    pub racers: Arc<Registry<(RaceId, u32), RacerMsg>>,
    /// Encodes spectator ticks once for every subscriber.
    pub encoder: TickEncoder,
    /// Time between spectator ticks.
    pub tick: std::time::Duration,
    /// Bytes of recent ticks kept for reconnecting spectators.
    pub resume_buffer_bytes: usize,
    /// How many ticks behind a subscriber may fall and still be sent only what changed.
    pub catch_up_ticks: usize,
    /// Where domain events (a race finished) are published.
    pub events: tokio::sync::broadcast::Sender<crate::actors::events::DomainEvent>,
    /// Whether scheduled races go live by themselves at their start or wait for the gun.
    pub start_mode: StartMode,
    /// Every race's device ids, for fixes that arrive with nothing else (HTTP apps).
    pub devices: DeviceIndex,
    /// How the reporting interval of each device is chosen.
    pub pace: PaceRules,
    /// Each racer's reporting interval as its race last paced it, read after every ack.
    pub paces: DashMap<(RaceId, u32), Pace>,
    /// How long a race or racer with nothing to do stays resident (`None`: for ever).
    pub passivate_after: Option<std::time::Duration>,
    /// Cluster mode: the leases that make this node the owner of a race (`None`: one node,
    /// which owns every race).
    pub leases: Option<crate::cluster::Leases>,
    /// Cluster mode: spectators following a race from other nodes, by race, while this
    /// node relays its ticks to them (their sum, as the nodes' last watch asks said).
    pub remote_spectators: DashMap<RaceId, u32>,
    /// Cluster mode: where a race's summary goes after each change, for the other nodes'
    /// directories (`None`: one node).
    pub news: Option<super::news::News>,
}

impl RaceContext {
    /// Whether an actor last busy at `last_activity` has been idle long enough to sleep.
    pub fn idle_since(&self, last_activity: std::time::Instant) -> bool {
        self.passivate_after
            .is_some_and(|idle| last_activity.elapsed() >= idle)
    }

    /// [`residency`] under this server's clock mode and idle time, for a race's summary
    /// (`None`: a race that does not exist, a rejected create, has nothing to keep). With
    /// passivation off every race is resident, as every race was before actors could sleep.
    pub fn placement(&self, summary: Option<&RaceSummary>, watched: bool) -> Residency {
        let (Some(idle), Some(summary)) = (self.passivate_after, summary) else {
            return if self.passivate_after.is_none() {
                Residency::Resident
            } else {
                Residency::Asleep { wake_at_ms: None }
            };
        };
        let idle_ms = UnixMillis::try_from(idle.as_millis()).unwrap_or(UnixMillis::MAX);
        residency(summary, now_ms(), self.start_mode, idle_ms, watched)
    }
}

/// The latest published tick, shared with every subscribed session.
pub type UpdatesReceiver = tokio::sync::watch::Receiver<Option<Arc<Published>>>;

/// What a new spectator gets: a consistent snapshot and the feed that continues it.
pub struct Subscription {
    /// The race.
    pub summary: RaceSummary,
    /// The course, in order (empty when resuming).
    pub course: Vec<crate::geo::Position>,
    /// The course's checkpoints (empty when resuming).
    pub checkpoints: Vec<crate::geo::Checkpoint>,
    /// The start list.
    pub roster: Vec<RacerEntry>,
    /// The standings now, leader first (empty when resuming).
    pub standings: Vec<Standing>,
    /// Resuming: the ticks after the spectator's `since_seq`, to send before live ones; the
    /// snapshot then carries no course or standings. `None`: a full snapshot.
    pub missed: Option<Vec<RecentTick>>,
    /// The feed's sequence number the snapshot continues from.
    pub seq: u64,
    /// Spectators subscribed, this one included.
    pub spectators: u32,
    /// Later ticks.
    pub updates: UpdatesReceiver,
}

/// Messages a race actor accepts.
pub enum RaceMsg {
    /// Run a lifecycle command and reply with the race as it is afterwards.
    Command {
        /// What to do.
        command: RaceCommand,
        /// Where the outcome goes.
        reply: RpcReplyPort<Result<RaceSummary, Rejection>>,
    },
    /// The course geometry for racer `bib`, if the race has that bib registered.
    Track {
        /// The bib asking.
        bib: u32,
        /// The shared geometry, or why not.
        reply: RpcReplyPort<Result<Arc<CourseGeometry>, Rejection>>,
    },
    /// A racer's new progress, folded into the standings.
    Progress {
        /// Whose.
        bib: u32,
        /// Where they are.
        progress: RacerProgress,
        /// Every checkpoint passing time so far, in course order.
        splits_ms: Vec<UnixMillis>,
        /// The racer's off-course episodes and suspected cuts so far.
        incidents: Incidents,
    },
    /// The current standings, leader first.
    Standings {
        /// Where they go.
        reply: RpcReplyPort<Vec<Standing>>,
    },
    /// Subscribe a spectator: snapshot plus feed.
    Subscribe {
        /// The last sequence number a reconnecting spectator saw.
        since_seq: Option<u64>,
        /// The snapshot and feed, or why not.
        reply: RpcReplyPort<Result<Subscription, Rejection>>,
    },
    /// Time to publish a spectator tick.
    Tick,
    /// A moment the race's clock was waiting for (its start, its cut-off) may have come.
    ClockCheck,
    /// The results as they stand (final once the race is over).
    Results {
        /// The rows, or why not.
        reply: RpcReplyPort<Result<Vec<ResultRow>, Rejection>>,
    },
    /// The registered racers, by bib.
    Roster {
        /// Where they go.
        reply: RpcReplyPort<Vec<RacerEntry>>,
    },
    /// Binds or revokes a tracking app's device id.
    Devices {
        /// What to do.
        command: DevicesCommand,
        /// The bib's binding afterwards, or why not.
        reply: RpcReplyPort<Result<DevicesChange, Rejection>>,
    },
    /// Every device binding of the race (admins only: the ids are credentials).
    DeviceList {
        /// The bindings by bib, or why not.
        reply: RpcReplyPort<Result<Vec<DeviceBinding>, Rejection>>,
    },
    /// Where the race should be now (see [`residency`]): asked by the supervisor's idle
    /// sweep; resident while anything but its own timers kept it busy within the idle time.
    Residency {
        /// The answer.
        reply: RpcReplyPort<Residency>,
    },
    /// The supervisor started every racer of the race that has a journal, each of which
    /// reported on starting: the questions held until now are answered.
    RacersStarted,
    /// Panics inside the handler: lets tests prove that supervision restarts a failed race
    /// from its persisted state. Not reachable from the protocol.
    #[cfg(test)]
    Panic,
}

impl RaceMsg {
    /// Whether this message is work someone asked for, as opposed to the race's own timers
    /// and the idle sweep: only work keeps a race from sleeping.
    fn is_work(&self) -> bool {
        !matches!(
            self,
            RaceMsg::Tick | RaceMsg::ClockCheck | RaceMsg::Residency { .. }
        )
    }

    /// Whether this message asks about the standings, which a race just started rebuilds
    /// from its racers' first reports: held until they are in.
    fn asks_standings(&self) -> bool {
        matches!(
            self,
            RaceMsg::Subscribe { .. } | RaceMsg::Standings { .. } | RaceMsg::Results { .. }
        )
    }
}

/// Spawn arguments: which race, and the shared context.
pub struct RaceArgs {
    /// The race this actor serves.
    pub id: RaceId,
    /// Shared storage and directory.
    pub ctx: Arc<RaceContext>,
    /// The race as start-up already read it to decide whether it is resident; `None`: read
    /// it from the journal (a new race, a restart, a wake-up).
    pub loaded: Option<LoadedRace>,
    /// Whether the supervisor starts the race's racers next and says so
    /// ([`RaceMsg::RacersStarted`]): questions about the standings wait for it, since the
    /// actor is findable (and asked, on another node's behalf too) before their reports.
    pub racers_to_come: bool,
}

/// A race read back from its two journals, published to the directory and the device index:
/// what start-up does for every stored race, resident or not, so lists, device lookups and
/// the sleeping races' clocks work without their actors.
pub struct LoadedRace {
    /// The race's rules' state.
    race: Journaled<RaceState>,
    /// Its tracking apps' device ids.
    devices: Journaled<RaceDevices>,
}

impl LoadedRace {
    /// Reads race `id` (snapshot plus later events, for the race and its device bindings)
    /// and publishes its summary and bindings.
    pub fn load(
        ctx: &RaceContext,
        id: &RaceId,
    ) -> Result<LoadedRace, crate::persist::PersistError> {
        // The race and its device bindings: two journals, one snapshot policy.
        let policy = SnapshotPolicy {
            every: ctx.snapshot_every,
            compaction: Compaction::Delete,
        };
        let race = Journaled::<RaceState>::recover(
            ctx.journal.clone(),
            ActorKey::new(KIND, id.as_str()),
            policy,
        )?;
        if let Some(race) = &race.state().race {
            ctx.directory.insert(id.clone(), race.summary());
        }
        let devices = Journaled::<RaceDevices>::recover(
            ctx.journal.clone(),
            ActorKey::new(DEVICES_KIND, id.as_str()),
            policy,
        )?;
        for binding in devices.state().all() {
            ctx.devices.bind(&binding.device_id, id, binding.bib);
        }
        Ok(LoadedRace { race, devices })
    }

    /// The race's rules' state as read.
    pub fn state(&self) -> &RaceState {
        self.race.state()
    }

    /// Where the race belongs at start-up, before anyone watches or asks for it.
    pub fn residency(&self, ctx: &RaceContext) -> Residency {
        let summary = self.race.state().race.as_ref().map(|race| race.summary());
        ctx.placement(summary.as_ref(), false)
    }
}

/// The actor's state: the pure race state plus journal bookkeeping.
pub struct RaceActorState {
    /// The race this actor serves.
    id: RaceId,
    /// The rules' state, journaled.
    race: Journaled<RaceState>,
    /// The tracking apps' device ids, journaled beside the race (they are credentials).
    devices: Journaled<RaceDevices>,
    /// Shared storage and directory.
    ctx: Arc<RaceContext>,
    /// The course prepared for projection, built on first use and shared with racers.
    geometry: Option<Arc<CourseGeometry>>,
    /// Live standings: derived from racers' reports, rebuilt by them after a restart.
    standings: Standings,
    /// What spectators were last sent.
    feed: Feed,
    /// The last ticks, for spectators that reconnect.
    recent: RecentTicks,
    /// Where ticks are published; its receivers are the subscribers.
    publisher: tokio::sync::watch::Sender<Option<Arc<Published>>>,
    /// The tick timer, started with the first subscriber.
    ticker: Option<tokio::task::JoinHandle<()>>,
    /// When the racers were last paced: at most once a tick, however many reports come.
    paced_at: Option<std::time::Instant>,
    /// The one pending clock check, while the clock still has something to do for the race
    /// (start it, end it at its cut-off); re-armed whenever the race changes.
    clock_timer: Option<tokio::task::JoinHandle<Result<(), ractor::MessagingErr<RaceMsg>>>>,
    /// When the race last did work someone asked for (see [`RaceMsg::is_work`]).
    last_activity: std::time::Instant,
    /// Questions about the standings held until the racers' first reports are in (`None`:
    /// they are, answer at once).
    held: Option<Vec<RaceMsg>>,
}

/// The ractor behaviour of a race.
pub struct RaceActor;

impl Actor for RaceActor {
    type Msg = RaceMsg;
    type State = RaceActorState;
    type Arguments = RaceArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<RaceMsg>,
        args: RaceArgs,
    ) -> Result<RaceActorState, ActorProcessingErr> {
        let LoadedRace { race, devices } = match args.loaded {
            Some(loaded) => loaded,
            None => LoadedRace::load(&args.ctx, &args.id)?,
        };
        let resume_buffer_bytes = args.ctx.resume_buffer_bytes;
        let catch_up_ticks = args.ctx.catch_up_ticks;
        let mut st = RaceActorState {
            id: args.id,
            race,
            devices,
            ctx: args.ctx,
            geometry: None,
            standings: Standings::default(),
            // Sequence numbers from the clock (x1000 leaves room for 1000 ticks a
            // millisecond) keep increasing across restarts: see `feed`.
            feed: Feed::starting_after(
                u64::try_from(now_ms()).unwrap_or(0).saturating_mul(1000),
                catch_up_ticks,
            ),
            recent: RecentTicks::new(resume_buffer_bytes),
            publisher: tokio::sync::watch::Sender::new(None),
            ticker: None,
            paced_at: None,
            clock_timer: None,
            last_activity: std::time::Instant::now(),
            held: args.racers_to_come.then(Vec::new),
        };
        // Recovery catches up with the clock before the server reports ready: a start or
        // cut-off that passed while it was down takes effect now, journaled like any change.
        run_clock(&mut st).await;
        record_gauges(&st);
        Ok(st)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<RaceMsg>,
        st: &mut RaceActorState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(ticker) = st.ticker.take() {
            ticker.abort();
        }
        if let Some(timer) = st.clock_timer.take() {
            timer.abort();
        }
        m::live_races().remove(st.id.as_str());
        Ok(())
    }

    async fn post_start(
        &self,
        myself: ActorRef<RaceMsg>,
        st: &mut RaceActorState,
    ) -> Result<(), ActorProcessingErr> {
        schedule_clock(&myself, st);
        // After a restart the standings are empty: running racers report again. (At first
        // start there are none yet; they report as they recover.)
        for (_, racer) in st.ctx.racers.entries(|(race, _)| *race == st.id) {
            let _ = racer.cast(RacerMsg::Report);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<RaceMsg>,
        message: RaceMsg,
        st: &mut RaceActorState,
    ) -> Result<(), ActorProcessingErr> {
        if message.is_work() {
            st.last_activity = std::time::Instant::now();
        }
        if let Some(held) = st.held.as_mut() {
            if message.asks_standings() {
                held.push(message);
                return Ok(());
            }
        }
        match message {
            RaceMsg::RacersStarted => {
                // Behind the racers' reports in the mailbox, so answered after them.
                for question in st.held.take().unwrap_or_default() {
                    let _ = myself.send_message(question);
                }
            }
            RaceMsg::Command { command, reply } => {
                let outcome = execute(st, command).await;
                let _ = reply.send(outcome);
                // A rejected create leaves nothing behind: no actor for a race that does not exist.
                if st.race.state().race.is_none() {
                    myself.stop(Some("no such race".into()));
                }
                // A new race, an edited start or cut-off, or a start by the gun moves the
                // clock's next moment.
                schedule_clock(&myself, st);
            }
            RaceMsg::Track { bib, reply } => {
                let _ = reply.send(track(st, bib));
            }
            RaceMsg::Progress {
                bib,
                progress,
                splits_ms,
                incidents,
            } => {
                st.standings.update(bib, progress);
                st.standings.update_splits(bib, &splits_ms);
                st.standings.update_incidents(bib, &incidents);
                pace_racers(st);
                if st
                    .race
                    .state()
                    .everyone_finished(|bib| st.standings.has_finished(bib))
                {
                    finish_by_itself(st, "every racer has finished").await;
                }
            }
            RaceMsg::ClockCheck => {
                // The pending handle is left for `arm_clock` to replace: this check may be a
                // stale one whose timer was already replaced, and the newer must not leak.
                if run_clock(st).await {
                    schedule_clock(&myself, st);
                } else {
                    // The journal refused: try again soon rather than at once, in a loop.
                    arm_clock(&myself, st, CLOCK_RETRY_MS);
                }
            }
            RaceMsg::Results { reply } => {
                let outcome = st.race.state().existing(&st.id).map(|race| {
                    results(
                        race,
                        &st.standings.ranked(now_ms()),
                        |bib| st.standings.splits(bib),
                        |bib| st.standings.incidents(bib),
                        |bib| {
                            verdict(
                                race,
                                bib,
                                st.standings.incidents(bib),
                                st.standings.has_finished(bib),
                            )
                        },
                    )
                });
                let _ = reply.send(outcome);
            }
            RaceMsg::Subscribe { since_seq, reply } => {
                if st.ticker.is_none() {
                    st.ticker = Some(myself.send_interval(st.ctx.tick, || RaceMsg::Tick));
                }
                let _ = reply.send(subscribe(st, since_seq));
            }
            RaceMsg::Tick => publish(st),
            RaceMsg::Standings { reply } => {
                let _ = reply.send(st.standings.ranked(now_ms()));
            }
            RaceMsg::Devices { command, reply } => {
                let _ = reply.send(change_devices(st, command).await);
            }
            RaceMsg::DeviceList { reply } => {
                let bindings = st
                    .race
                    .state()
                    .existing(&st.id)
                    .map(|_| st.devices.state().all().cloned().collect());
                let _ = reply.send(bindings);
            }
            RaceMsg::Roster { reply } => {
                let roster = st
                    .race
                    .state()
                    .race
                    .as_ref()
                    .map(|r| r.roster.values().cloned().collect())
                    .unwrap_or_default();
                let _ = reply.send(roster);
            }
            RaceMsg::Residency { reply } => {
                let answer = if st.ctx.idle_since(st.last_activity) {
                    let watched = st.publisher.receiver_count() > 0;
                    let summary = st.race.state().race.as_ref().map(|race| race.summary());
                    st.ctx.placement(summary.as_ref(), watched)
                } else {
                    Residency::Resident
                };
                let _ = reply.send(answer);
            }
            #[cfg(test)]
            RaceMsg::Panic => panic!("race {} asked to panic", st.id),
        }
        Ok(())
    }
}

/// Finishes a live race without an admin asking.
async fn finish_by_itself(st: &mut RaceActorState, why: &str) {
    if st.race.state().race.as_ref().map(|r| r.status) != Some(RaceStatus::Live) {
        return;
    }
    match execute(st, RaceCommand::Finish).await {
        Ok(_) => tracing::info!(race = %st.id, "race finished: {why}"),
        Err(e) => tracing::error!(race = %st.id, "race could not finish ({why}): {e}"),
    }
}

/// Longest single sleep of the clock timer: a start days away is re-checked at least hourly,
/// so no sleep is ever long enough to overflow and a changed wall clock is noticed.
const CLOCK_RECHECK_MS: UnixMillis = 3_600_000;

/// Wait before the clock retries a step the journal could not store, so an outage of the
/// storage is not a busy loop.
const CLOCK_RETRY_MS: UnixMillis = 1_000;

/// Carries out what the race's clock requires now (see `RaceState::due`), each step decided,
/// journaled and applied by `execute` like an admin's command. False when a step could not be
/// stored (nothing further is tried then; the caller retries later).
async fn run_clock(st: &mut RaceActorState) -> bool {
    let Some(action) = st.race.state().due(now_ms(), st.ctx.start_mode) else {
        return true;
    };
    for command in action.commands() {
        if let Err(e) = execute(st, command).await {
            tracing::error!(race = %st.id, ?action, "the race's clock could not act: {e}");
            return false;
        }
    }
    tracing::info!(race = %st.id, "race {}", action.describe());
    true
}

/// (Re)arms the race's one clock timer for the clock's next moment.
fn schedule_clock(myself: &ActorRef<RaceMsg>, st: &mut RaceActorState) {
    arm_clock(myself, st, 0);
}

/// Replaces the pending clock check by one at the race's next due moment, but no sooner than
/// `min_wait_ms` and no later than [`CLOCK_RECHECK_MS`] from now; a race the clock has
/// nothing left to do for (no cut-off, finished, cancelled) keeps no timer.
fn arm_clock(myself: &ActorRef<RaceMsg>, st: &mut RaceActorState, min_wait_ms: UnixMillis) {
    if let Some(timer) = st.clock_timer.take() {
        timer.abort();
    }
    let Some(due_ms) = st.race.state().next_due_ms(st.ctx.start_mode) else {
        return;
    };
    let wait = due_ms
        .saturating_sub(now_ms())
        .clamp(min_wait_ms, CLOCK_RECHECK_MS);
    let wait = std::time::Duration::from_millis(u64::try_from(wait).unwrap_or(0));
    st.clock_timer = Some(myself.send_after(wait, || RaceMsg::ClockCheck));
}

/// A consistent snapshot and a receiver for the ticks after it; for a reconnecting
/// spectator whose missed ticks are still held, those ticks instead of the snapshot.
fn subscribe(st: &mut RaceActorState, since_seq: Option<u64>) -> Result<Subscription, Rejection> {
    st.race.state().existing(&st.id)?;
    let updates = st.publisher.subscribe();
    // Changes made while nobody watched were never published; publish them now (there is a
    // subscriber at last), so a resuming spectator's missed ticks include them.
    publish(st);
    let Some(race) = st.race.state().race.as_ref() else {
        return Err(Rejection::internal("the race vanished while subscribing"));
    };
    let current = st.feed.seq();
    let missed = since_seq.and_then(|seq| st.recent.since(seq, current));
    let resuming = missed.is_some();
    Ok(Subscription {
        summary: race.summary(),
        course: if resuming {
            Vec::new()
        } else {
            race.course.points.clone()
        },
        checkpoints: if resuming {
            Vec::new()
        } else {
            race.course.checkpoints.clone()
        },
        roster: race.roster.values().cloned().collect(),
        standings: if resuming {
            Vec::new()
        } else {
            st.standings.ranked(now_ms())
        },
        missed,
        seq: current,
        spectators: spectators(st),
        updates,
    })
}

/// Spectators of the race across the cluster: the sockets subscribed here, plus those
/// other nodes serve from their mirrors, in place of the one subscription through which
/// this node relays the ticks to them.
fn spectators(st: &RaceActorState) -> u32 {
    let here = u32::try_from(st.publisher.receiver_count()).unwrap_or(u32::MAX);
    match st.ctx.remote_spectators.get(&st.id) {
        Some(elsewhere) => here.saturating_sub(1).saturating_add(*elsewhere),
        None => here,
    }
}

/// Encodes what changed once and hands it to every subscriber (nobody watching: nothing).
fn publish(st: &mut RaceActorState) {
    let spectators = spectators(st);
    record_gauges(st);
    if spectators == 0 {
        return;
    }
    if let Some(update) = st.feed.tick(st.standings.ranked(now_ms()), spectators) {
        let rows = update.changed.len();
        if let Some(published) = Published::new(st.id.clone(), update, st.ctx.encoder.clone()) {
            metrics::histogram!(m::RACE_TICK_BYTES).record(published.delta.binary.len() as f64);
            metrics::histogram!(m::RACE_TICK_ROWS).record(rows as f64);
            st.recent.push(&published);
            st.publisher.send_replace(Some(Arc::new(published)));
        }
    }
}

/// The geometry for a registered bib, built once per course.
fn track(st: &mut RaceActorState, bib: u32) -> Result<Arc<CourseGeometry>, Rejection> {
    let race = st.race.state().registered(&st.id, bib)?;
    if let Some(geometry) = &st.geometry {
        return Ok(geometry.clone());
    }
    let checkpoints_m = race.course.checkpoint_distances_m();
    let geometry = Arc::new(CourseGeometry::new(
        &race.course,
        &checkpoints_m,
        &st.ctx.rules,
    ));
    st.geometry = Some(geometry.clone());
    Ok(geometry)
}

/// Decide, persist, apply (the journaled shell), then tell what changed: the directory,
/// the prepared geometry, and other domains when the race finished.
async fn execute(st: &mut RaceActorState, command: RaceCommand) -> Result<RaceSummary, Rejection> {
    let inputs = RaceInputs {
        id: &st.id,
        now_ms: now_ms(),
        limits: st.ctx.limits,
    };
    let decision = st
        .race
        .execute(
            command,
            inputs,
            "the change could not be stored and was not applied; retry",
        )
        .await?;
    for event in &decision.events {
        // A new course invalidates the prepared geometry (only scheduled races change course).
        if matches!(
            event,
            RaceEvent::Updated {
                course: Some(_),
                ..
            }
        ) {
            st.geometry = None;
        }
        if let RaceEvent::Finished { at_ms } = event {
            // Nobody listening is fine: mail subscribes when it runs.
            let _ = st.ctx.events.send(DomainEvent::RaceFinished {
                race: st.id.clone(),
                at_ms: *at_ms,
            });
        }
    }
    let Some(race) = &st.race.state().race else {
        return Err(Rejection::internal(
            "race vanished after an accepted command",
        ));
    };
    let summary = race.summary();
    st.ctx.directory.insert(st.id.clone(), summary.clone());
    if let Some(news) = &st.ctx.news {
        news.tell(RaceNews::Summary(summary.clone()));
    }
    record_gauges(st);
    Ok(summary)
}

/// Shows the race's racers and spectators while it is live, and nothing otherwise (see
/// [`m::LiveRaces`]): called where either can change (a command, a tick, recovery). The
/// spectators are the tick channel's receivers, one per subscribed socket, so a socket that
/// went is no longer counted from the next tick.
fn record_gauges(st: &RaceActorState) {
    match st.race.state().race.as_ref() {
        Some(race) if race.status == RaceStatus::Live => m::live_races().set(
            st.id.as_str(),
            m::RaceGauges {
                racers: u32::try_from(race.roster.len()).unwrap_or(u32::MAX),
                spectators: spectators(st),
            },
        ),
        _ => m::live_races().remove(st.id.as_str()),
    }
}

/// Binds or revokes a device id through the journaled shell, then brings the index of ids
/// in step: only a durable change is visible to the HTTP ingest.
async fn change_devices(
    st: &mut RaceActorState,
    command: DevicesCommand,
) -> Result<DevicesChange, Rejection> {
    let race = st.race.state().existing(&st.id)?;
    // Drawn only for a bind that asks for a generated id: a revoke or a given id needs none.
    let fresh = match &command {
        DevicesCommand::Bind {
            device_id: None, ..
        } => {
            let mut random = [0u8; 10];
            getrandom::fill(&mut random).map_err(|e| {
                tracing::error!("no randomness for a device id: {e}");
                Rejection::internal("a device id could not be generated")
            })?;
            generated_device_id(random)
        }
        _ => String::new(),
    };
    let inputs = DevicesInputs {
        race,
        fresh_id: &fresh,
        now_ms: now_ms(),
    };
    let change = st
        .devices
        .execute(
            command,
            inputs,
            "the device binding could not be stored; retry",
        )
        .await?
        .outcome;
    if let Some(old) = &change.replaced {
        st.ctx.devices.unbind(old, &st.id);
        if let Some(news) = &st.ctx.news {
            news.tell(RaceNews::Unbound {
                device_id: old.clone(),
                race: st.id.clone(),
            });
        }
    }
    if let Some(binding) = &change.binding {
        st.ctx.devices.bind(&binding.device_id, &st.id, binding.bib);
        if let Some(news) = &st.ctx.news {
            news.tell(RaceNews::Bound {
                device_id: binding.device_id.clone(),
                race: st.id.clone(),
                bib: binding.bib,
            });
        }
    }
    Ok(change)
}

/// Re-paces every racer of the race from the standings, at most once a tick: the interval a
/// device is asked for changes on the scale of seconds, not of single fixes.
fn pace_racers(st: &mut RaceActorState) {
    let now = std::time::Instant::now();
    if st
        .paced_at
        .is_some_and(|at| now.saturating_duration_since(at) < st.ctx.tick)
    {
        return;
    }
    st.paced_at = Some(now);
    let Some(race) = &st.race.state().race else {
        return;
    };
    let checkpoints_m = race.course.checkpoint_distances_m();
    let rows = st.standings.ranked(now_ms());
    for (bib, pace) in paces(&rows, race.course.length_m, &checkpoints_m, &st.ctx.pace) {
        st.ctx.paces.insert((st.id.clone(), bib), pace);
    }
}
