//! The race supervisor: supervises every resident race actor and racer actor, and decides
//! which are resident. It is the one place where the race domain's actors are placed:
//!
//! - **Start-up** reads every stored race (summary and device bindings, so lists and device
//!   lookups need no actor) and starts only those [`residency`] keeps: live races with their
//!   racers, and races whose clock acts within the idle time. The others sleep in their
//!   journals, so start-up and memory grow with what is live, not with history.
//! - **Waking** (`Activate`, a sleeping race's clock) starts the race and then every racer of
//!   it that has a journal, whose reports rebuild its standings before anyone's question
//!   reaches it, so a race that slept answers as if it never had.
//! - **Sleeping**: every half idle time a sweep asks each resident actor whether it has had
//!   nothing to do for `supervision.passivate_after_ms`; the idle ones leave the registry
//!   (new requests come here to wake them) and are drained: what is already in their
//!   mailbox is processed, then they stop. A request for an actor still draining waits for
//!   it to stop, so two actors never write one journal.
//! - **Restarts**: a failed child is restarted from its persisted state within a restart
//!   budget. ractor's default supervision stops the supervisor when any child fails; this
//!   one never does. A child that stops normally (a rejected create) is simply forgotten.

use super::actor::{LoadedRace, RaceActor, RaceArgs, RaceContext, RaceMsg};
use super::residency::Residency;
use super::{lease_key, race_of_lease, KIND};
use crate::actors::racer::actor::{parse_racer_id, RacerActor, RacerArgs};
use crate::actors::racer::msg::RacerMsg;
use crate::actors::racer::KIND as RACER_KIND;
use crate::actors::restart::RestartBudget;
use crate::actors::slot::SupervisorSlot;
use crate::cluster::Taken;
use crate::error::{ErrorCode, Rejection};
use crate::ids::RaceId;
use crate::metrics as m;
use crate::time::{now_ms, UnixMillis};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The reply a waker of a race gets: the race's actor, or why it could not start.
type RaceReply = RpcReplyPort<Result<ActorRef<RaceMsg>, Rejection>>;

/// The reply a starter of a racer gets: the racer's actor, or why it could not start.
type RacerReply = RpcReplyPort<Result<ActorRef<RacerMsg>, Rejection>>;

/// Messages the race supervisor accepts.
pub enum RaceSupervisorMsg {
    /// Start an actor for a race id that has none yet.
    Spawn {
        /// The race.
        id: RaceId,
        /// The new actor, or why it could not start.
        reply: RaceReply,
    },
    /// Wake race `id` from its journal with its racers (or return the resident actor).
    Activate {
        /// The race.
        id: RaceId,
        /// The actor, or why it could not start.
        reply: RaceReply,
    },
    /// Start the actor of racer `bib` in `race` (or return the running one).
    SpawnRacer {
        /// The race.
        race: RaceId,
        /// The racer's bib.
        bib: u32,
        /// The actor, or why it could not start (unknown race or bib).
        reply: RacerReply,
    },
    /// Start the actors of racers just registered in `race`, unless running already; told,
    /// not asked. Started now, while nothing waits, rather than by each racer's first fix:
    /// at a race's start every racer's first fix comes at once, and each start asks the race
    /// actor, busy with the racers already riding, for its course.
    StartRacers {
        /// The race.
        race: RaceId,
        /// The bibs registered.
        bibs: Vec<u32>,
    },
    /// Time to ask every resident actor whether it may sleep.
    Sweep,
    /// What a sweep found: actors that had nothing to do for the idle time.
    Passivate {
        /// Who may sleep.
        idle: Vec<Sleeper>,
    },
    /// A sleeping race's clock may have something to do.
    WakeDue,
    /// Cluster mode: this node lost race `key`'s lease; it stops serving the race at once.
    LeaseLost {
        /// The lease.
        key: String,
    },
    /// Cluster mode: losses went unheard (the listener fell behind); every race whose lease
    /// this node no longer holds stops.
    LeasesUnknown,
    /// Cluster mode: time to take over resident races nobody serves (their node died).
    Claim,
}

/// An actor a sweep found idle.
pub struct Sleeper {
    /// Which entity it serves.
    child: Child,
    /// The incarnation that answered: a newer one (restarted since) is not put to sleep.
    actor: ActorId,
}

/// Spawn arguments of the race supervisor; cloned by the root to restart it.
#[derive(Clone)]
pub struct RaceSupervisorArgs {
    /// Where the running supervisor publishes itself, so the facade can reach the current
    /// incarnation after a restart.
    pub slot: SupervisorSlot<RaceSupervisorMsg>,
    /// Shared by every race and racer actor, registries included.
    pub ctx: Arc<RaceContext>,
    /// Restarts allowed per child per window.
    pub restart_budget: u32,
    /// The budget's window.
    pub restart_window: Duration,
}

/// Which entity a child actor serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Child {
    /// A race actor.
    Race(RaceId),
    /// A racer actor.
    Racer(RaceId, u32),
}

impl Child {
    /// The metrics label of its kind.
    fn kind(&self) -> &'static str {
        match self {
            Child::Race(_) => KIND,
            Child::Racer(..) => RACER_KIND,
        }
    }
}

impl fmt::Display for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Child::Race(id) => write!(f, "race {id}"),
            Child::Racer(race, bib) => write!(f, "racer {bib} of race {race}"),
        }
    }
}

/// Someone waiting for an actor that is draining on its way to sleep.
enum Waiter {
    /// A request for the race, answered once it is awake again.
    Race(RaceReply),
    /// A fix's request for the racer, answered once it is started again.
    Racer(RacerReply),
    /// The racer's race woke meanwhile: start it again so it reports.
    Start,
}

/// The supervisor's state.
pub struct RaceSupervisorState {
    /// Shared by every child, registries included.
    ctx: Arc<RaceContext>,
    /// Which entity each child actor serves, to act on its supervision events.
    children: HashMap<ActorId, Child>,
    /// Guards against restart loops.
    budget: RestartBudget<Child>,
    /// Children drained on their way to sleep, not stopped yet, and who waits for them.
    stopping: HashMap<Child, Vec<Waiter>>,
    /// Sleeping races whose clock acts later, by when.
    wakes: BTreeSet<(UnixMillis, RaceId)>,
    /// Each sleeping race's entry in `wakes`, so a new one replaces it.
    wake_of: HashMap<RaceId, UnixMillis>,
    /// The one pending `WakeDue`, for the earliest of `wakes`.
    wake_timer:
        Option<tokio::task::JoinHandle<Result<(), ractor::MessagingErr<RaceSupervisorMsg>>>>,
    /// The sweep's interval timer (none when actors never sleep).
    sweep_timer: Option<tokio::task::JoinHandle<()>>,
    /// A sweep is asking actors now: the next waits, so sweeps never pile up.
    sweeping: bool,
    /// Cluster mode: relays lost leases into this supervisor's mailbox.
    lease_watch: Option<tokio::task::JoinHandle<()>>,
    /// Cluster mode: the interval timer of [`RaceSupervisorMsg::Claim`].
    claim_timer: Option<tokio::task::JoinHandle<()>>,
}

/// The ractor behaviour of the race supervisor.
#[derive(Clone)]
pub struct RaceSupervisor;

/// Longest single wait of the wake timer, so a wake days away never overflows a timer and
/// a changed wall clock is noticed.
const WAKE_RECHECK_MS: UnixMillis = 3_600_000;

impl RaceSupervisorState {
    /// Cluster mode: takes race `id`'s lease for this node (nothing to take on one node).
    /// The refusal names the node that serves the race.
    async fn own(&self, id: &RaceId) -> Result<(), Rejection> {
        let Some(leases) = &self.ctx.leases else {
            return Ok(());
        };
        match leases.take(&lease_key(id)).await {
            Ok(Taken::Here) => Ok(()),
            Ok(Taken::ElseWhere(node)) => Err(Rejection::new(
                ErrorCode::Unavailable,
                format!("race {id} is served by node {node}; connect to that node, or retry"),
            )),
            Err(e) => {
                tracing::warn!(race = %id, "race lease not decided: {e}");
                Err(Rejection::new(
                    ErrorCode::Unavailable,
                    format!("race {id}: which node serves it could not be decided; retry"),
                ))
            }
        }
    }

    /// Cluster mode: gives race `id`'s lease up (it sleeps, or the node stops), so another
    /// node may take it at once.
    async fn disown(&self, id: &RaceId) {
        if let Some(leases) = &self.ctx.leases {
            leases.give_up(&lease_key(id)).await;
        }
    }

    /// Cluster mode: race `id`'s lease is lost, so its actors stop now, before the new owner
    /// could write: out of the registries first, so no request reaches them.
    fn evict(&mut self, id: &RaceId) {
        for ((race, bib), racer) in self.ctx.racers.entries(|(race, _)| race == id) {
            self.ctx.racers.remove_if(&(race, bib), racer.get_id());
            racer.stop(Some("lease lost".into()));
        }
        if let Some(race) = self.ctx.races.get(id) {
            self.ctx.races.remove_if(id, race.get_id());
            race.stop(Some("lease lost".into()));
        }
        tracing::warn!(race = %id, "lease lost: race no longer served here");
    }

    /// Cluster mode: starts the resident races nobody serves (their node died and their
    /// leases lapsed) whose lease this node can take. Races are listed from the journal, not
    /// the directory, so those created on other nodes since this one started are found too.
    async fn claim(&mut self, myself: &ActorRef<RaceSupervisorMsg>) {
        let keys = match self.ctx.journal.actors(KIND) {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!("races not listed for takeover: {e}");
                return;
            }
        };
        for key in keys {
            let Ok(id) = RaceId::parse(key.id()) else {
                continue;
            };
            let here = self.ctx.races.get(&id).is_some()
                || self.stopping.contains_key(&Child::Race(id.clone()));
            if here {
                continue;
            }
            if !self.ctx.directory.contains_key(&id) {
                if let Err(e) = LoadedRace::load(&self.ctx, &id) {
                    tracing::warn!(race = %id, "race created elsewhere not read: {e}");
                    continue;
                }
            }
            if self.placement(&id) != Residency::Resident || self.own(&id).await.is_err() {
                continue;
            }
            match self.wake(myself, &id).await {
                Ok(_) => tracing::info!(race = %id, "race taken over"),
                Err(e) => tracing::warn!(race = %id, "race not taken over: {}", e.message),
            }
        }
    }

    async fn spawn_race(
        &mut self,
        myself: &ActorRef<RaceSupervisorMsg>,
        id: RaceId,
        loaded: Option<LoadedRace>,
        racers_to_come: bool,
    ) -> Result<ActorRef<RaceMsg>, ActorProcessingErr> {
        let args = RaceArgs {
            id: id.clone(),
            ctx: self.ctx.clone(),
            loaded,
            racers_to_come,
        };
        let (actor, _) = RaceActor::spawn_linked(None, RaceActor, args, myself.get_cell()).await?;
        self.children
            .insert(actor.get_id(), Child::Race(id.clone()));
        self.ctx.races.insert(id, actor.clone());
        Ok(actor)
    }

    /// Starts race `id` and then every racer of it that has a journal and is not running,
    /// so their reports rebuild its standings before any question reaches it. What start-up,
    /// a wake-up and a restart all do.
    async fn activate(
        &mut self,
        myself: &ActorRef<RaceSupervisorMsg>,
        id: RaceId,
        loaded: Option<LoadedRace>,
    ) -> Result<ActorRef<RaceMsg>, ActorProcessingErr> {
        let race = self.spawn_race(myself, id.clone(), loaded, true).await?;
        if let Some(at) = self.wake_of.remove(&id) {
            self.wakes.remove(&(at, id.clone()));
        }
        let started = self.start_racers(myself, &id).await;
        // Whatever happened, questions held by the race are answered now (after the
        // reports of the racers that started).
        let _ = race.cast(RaceMsg::RacersStarted);
        started.map(|()| race)
    }

    /// Starts every racer of race `id` that has a journal and is not running.
    async fn start_racers(
        &mut self,
        myself: &ActorRef<RaceSupervisorMsg>,
        id: &RaceId,
    ) -> Result<(), ActorProcessingErr> {
        // Racer ids are `<race>.<bib>`; a race whose id extends this one's with a dot shares
        // the prefix, hence the check of the parsed race.
        for key in self
            .ctx
            .journal
            .actors_under(RACER_KIND, &format!("{id}."))?
        {
            let Some((race_id, bib)) = parse_racer_id(key.id()).filter(|(r, _)| r == id) else {
                continue;
            };
            if let Some(waiters) = self.stopping.get_mut(&Child::Racer(race_id.clone(), bib)) {
                waiters.push(Waiter::Start);
                continue;
            }
            // A running racer reports when the race starts (its `post_start`).
            self.racer(myself, race_id, bib)
                .await
                .map_err(|e| format!("racer {key}: {e}"))?;
        }
        Ok(())
    }

    async fn spawn_racer(
        &mut self,
        myself: &ActorRef<RaceSupervisorMsg>,
        race: RaceId,
        bib: u32,
    ) -> Result<ActorRef<RacerMsg>, ActorProcessingErr> {
        let args = RacerArgs {
            race: race.clone(),
            bib,
            ctx: self.ctx.clone(),
        };
        let (actor, _) =
            RacerActor::spawn_linked(None, RacerActor, args, myself.get_cell()).await?;
        self.children
            .insert(actor.get_id(), Child::Racer(race.clone(), bib));
        self.ctx.racers.insert((race, bib), actor.clone());
        Ok(actor)
    }

    /// Racer `bib`'s running actor, started if it has none.
    async fn racer(
        &mut self,
        myself: &ActorRef<RaceSupervisorMsg>,
        race: RaceId,
        bib: u32,
    ) -> Result<ActorRef<RacerMsg>, ActorProcessingErr> {
        match self.ctx.racers.get(&(race.clone(), bib)) {
            Some(running) => Ok(running),
            None => self.spawn_racer(myself, race, bib).await,
        }
    }

    async fn respawn(
        &mut self,
        myself: &ActorRef<RaceSupervisorMsg>,
        child: Child,
    ) -> Result<(), ActorProcessingErr> {
        match child {
            Child::Race(id) => {
                if let Err(refused) = self.own(&id).await {
                    tracing::warn!(race = %id, "not restarted here: {}", refused.message);
                    return Ok(());
                }
                self.activate(myself, id, None).await.map(drop)
            }
            Child::Racer(race, bib) => self.spawn_racer(myself, race, bib).await.map(drop),
        }
    }

    fn forget(&mut self, which: ActorId) -> Option<Child> {
        let child = self.children.remove(&which)?;
        match &child {
            Child::Race(id) => self.ctx.races.remove_if(id, which),
            Child::Racer(race, bib) => self.ctx.racers.remove_if(&(race.clone(), *bib), which),
        }
        Some(child)
    }

    /// Where race `id` belongs now, judged from its summary in the directory.
    fn placement(&self, id: &RaceId) -> Residency {
        let summary = self.ctx.directory.get(id);
        self.ctx.placement(summary.as_deref(), false)
    }

    /// Remembers when a sleeping race's clock next acts and re-arms the wake timer.
    fn schedule_wake(&mut self, myself: &ActorRef<RaceSupervisorMsg>, id: RaceId, at: UnixMillis) {
        if let Some(old) = self.wake_of.insert(id.clone(), at) {
            self.wakes.remove(&(old, id.clone()));
        }
        self.wakes.insert((at, id));
        self.arm_wake(myself);
    }

    /// One pending `WakeDue`, for the earliest sleeping race's clock.
    fn arm_wake(&mut self, myself: &ActorRef<RaceSupervisorMsg>) {
        if let Some(timer) = self.wake_timer.take() {
            timer.abort();
        }
        let Some((at, _)) = self.wakes.first() else {
            return;
        };
        let wait = at.saturating_sub(now_ms()).clamp(0, WAKE_RECHECK_MS);
        let wait = Duration::from_millis(u64::try_from(wait).unwrap_or(0));
        self.wake_timer = Some(myself.send_after(wait, || RaceSupervisorMsg::WakeDue));
    }

    /// Takes the idle actors out of the registry and drains them; what is in their mailbox
    /// is still served, anything sent later comes here and waits for them to stop.
    fn passivate(&mut self, idle: Vec<Sleeper>) {
        for Sleeper { child, actor } in idle {
            if self.children.get(&actor) != Some(&child) {
                continue; // stopped or restarted since the sweep asked
            }
            let cell = match &child {
                Child::Race(id) => {
                    // A race sleeps with its racers: awake, it starts them all again.
                    for ((race, bib), racer) in self.ctx.racers.entries(|(race, _)| race == id) {
                        self.put_to_sleep(Child::Racer(race, bib), racer.get_cell());
                    }
                    self.ctx.races.get(id).map(|a| a.get_cell())
                }
                Child::Racer(race, bib) => self
                    .ctx
                    .racers
                    .get(&(race.clone(), *bib))
                    .map(|a| a.get_cell()),
            };
            if let Some(cell) = cell.filter(|cell| cell.get_id() == actor) {
                self.put_to_sleep(child, cell);
            }
        }
    }

    /// Takes one resident actor out of the registry and drains it.
    fn put_to_sleep(&mut self, child: Child, cell: ractor::ActorCell) {
        match &child {
            Child::Race(id) => self.ctx.races.remove_if(id, cell.get_id()),
            Child::Racer(race, bib) => self
                .ctx
                .racers
                .remove_if(&(race.clone(), *bib), cell.get_id()),
        }
        metrics::counter!(m::PASSIVATIONS, "kind" => child.kind()).increment(1);
        if let Err(e) = cell.drain() {
            tracing::warn!("{child} could not be drained on its way to sleep: {e}");
        }
        self.stopping.insert(child, Vec::new());
    }

    /// A child drained on its way to sleep has stopped: wake it again at once for those who
    /// asked meanwhile (or, for a race, if it should not sleep after all: a command in its
    /// mailbox started it, or moved its start close), else remember when its clock wakes it.
    async fn stopped(
        &mut self,
        myself: &ActorRef<RaceSupervisorMsg>,
        child: Child,
        waiters: Vec<Waiter>,
    ) {
        match child {
            Child::Race(id) => {
                let placement = self.placement(&id);
                if waiters.is_empty() {
                    match placement {
                        Residency::Asleep { wake_at_ms } => {
                            self.disown(&id).await;
                            if let Some(at) = wake_at_ms {
                                self.schedule_wake(myself, id, at);
                            }
                            return;
                        }
                        Residency::Resident => {}
                    }
                }
                let woken = self.wake(myself, &id).await;
                for waiter in waiters {
                    if let Waiter::Race(reply) = waiter {
                        let _ = reply.send(woken.clone());
                    }
                }
            }
            Child::Racer(race, bib) => {
                if waiters.is_empty() {
                    return;
                }
                let started = self.racer(myself, race.clone(), bib).await.map_err(|e| {
                    tracing::warn!(race = %race, bib, "racer actor did not start: {e}");
                    Rejection::new(ErrorCode::NotFound, e.to_string())
                });
                for waiter in waiters {
                    if let Waiter::Racer(reply) = waiter {
                        let _ = reply.send(started.clone());
                    }
                }
            }
        }
    }

    /// Race `id` awake: the resident actor, or the race started from its journal with its
    /// racers; an error a client can act on when it cannot start.
    async fn wake(
        &mut self,
        myself: &ActorRef<RaceSupervisorMsg>,
        id: &RaceId,
    ) -> Result<ActorRef<RaceMsg>, Rejection> {
        if let Some(resident) = self.ctx.races.get(id) {
            return Ok(resident);
        }
        self.own(id).await?;
        let started = Instant::now();
        let woken = self.activate(myself, id.clone(), None).await.map_err(|e| {
            tracing::error!(race = %id, "race actor did not wake: {e}");
            Rejection::new(
                ErrorCode::Unavailable,
                format!("race {id} could not be started; retry"),
            )
        })?;
        metrics::counter!(m::ACTIVATIONS, "kind" => KIND).increment(1);
        metrics::histogram!(m::ACTIVATION_SECONDS).record(started.elapsed().as_secs_f64());
        Ok(woken)
    }

    /// Asks every resident actor, off the supervisor, whether it may sleep; the answer comes
    /// back as one `Passivate`.
    fn sweep(&mut self, myself: &ActorRef<RaceSupervisorMsg>) {
        if self.sweeping {
            return;
        }
        self.sweeping = true;
        let races = self.ctx.races.entries(|_| true);
        let racers = self.ctx.racers.entries(|_| true);
        let supervisor = myself.clone();
        // A busy actor is not idle: an answer slower than this counts as "stay".
        let patience = Some(Duration::from_millis(500));
        tokio::spawn(async move {
            let mut idle = Vec::new();
            for (id, race) in races {
                let asked = race.call(|reply| RaceMsg::Residency { reply }, patience);
                if let Ok(CallResult::Success(Residency::Asleep { .. })) = asked.await {
                    idle.push(Sleeper {
                        child: Child::Race(id),
                        actor: race.get_id(),
                    });
                }
            }
            for ((race, bib), racer) in racers {
                let asked = racer.call(|reply| RacerMsg::Idle { reply }, patience);
                if let Ok(CallResult::Success(true)) = asked.await {
                    idle.push(Sleeper {
                        child: Child::Racer(race, bib),
                        actor: racer.get_id(),
                    });
                }
            }
            let _ = supervisor.cast(RaceSupervisorMsg::Passivate { idle });
        });
    }
}

impl Actor for RaceSupervisor {
    type Msg = RaceSupervisorMsg;
    type State = RaceSupervisorState;
    type Arguments = RaceSupervisorArgs;

    /// Start-up: every stored race is read into the directory and the device index; the
    /// resident ones start with their racers before the supervisor reports started, so
    /// readiness means recovered; the others sleep until asked for or due.
    async fn pre_start(
        &self,
        myself: ActorRef<RaceSupervisorMsg>,
        args: RaceSupervisorArgs,
    ) -> Result<RaceSupervisorState, ActorProcessingErr> {
        // At zero from the start, so a dashboard shows "none" rather than "no data".
        for kind in [KIND, RACER_KIND] {
            metrics::counter!(m::ACTOR_RESTARTS, "kind" => kind).increment(0);
            metrics::counter!(m::PASSIVATIONS, "kind" => kind).increment(0);
        }
        metrics::counter!(m::ACTIVATIONS, "kind" => KIND).increment(0);
        let sweep_timer = args.ctx.passivate_after.map(|idle| {
            let every = (idle / 2).clamp(Duration::from_millis(50), Duration::from_secs(60));
            myself.send_interval(every, || RaceSupervisorMsg::Sweep)
        });
        let mut state = RaceSupervisorState {
            ctx: args.ctx,
            children: HashMap::new(),
            budget: RestartBudget::new(args.restart_budget, args.restart_window),
            stopping: HashMap::new(),
            wakes: BTreeSet::new(),
            wake_of: HashMap::new(),
            wake_timer: None,
            sweep_timer,
            sweeping: false,
            lease_watch: None,
            claim_timer: None,
        };
        if let Some(leases) = state.ctx.leases.clone() {
            let mut lost = leases.lost();
            let supervisor = myself.clone();
            state.lease_watch = Some(tokio::spawn(async move {
                use tokio::sync::broadcast::error::RecvError;
                loop {
                    let told = match lost.recv().await {
                        Ok(key) => supervisor.cast(RaceSupervisorMsg::LeaseLost { key }),
                        Err(RecvError::Lagged(_)) => {
                            supervisor.cast(RaceSupervisorMsg::LeasesUnknown)
                        }
                        Err(RecvError::Closed) => return,
                    };
                    if told.is_err() {
                        return;
                    }
                }
            }));
            let every = leases.ttl() / 3;
            state.claim_timer = Some(myself.send_interval(every, || RaceSupervisorMsg::Claim));
        }
        let (mut stored, mut asleep) = (0usize, 0usize);
        for key in state.ctx.journal.actors(KIND)? {
            let id = RaceId::parse(key.id())
                .map_err(|r| format!("stored race key {key}: {}", r.message))?;
            let loaded =
                LoadedRace::load(&state.ctx, &id).map_err(|e| format!("recovering {key}: {e}"))?;
            stored += 1;
            match loaded.residency(&state.ctx) {
                Residency::Resident => {
                    if let Err(refused) = state.own(&id).await {
                        // Another node serves it; loading listed it in the directory.
                        tracing::info!(race = %id, "{}", refused.message);
                        continue;
                    }
                    state
                        .activate(&myself, id, Some(loaded))
                        .await
                        .map_err(|e| format!("recovering {key}: {e}"))?;
                }
                Residency::Asleep { wake_at_ms } => {
                    asleep += 1;
                    if let Some(at) = wake_at_ms {
                        state.schedule_wake(&myself, id, at);
                    }
                }
            }
        }
        tracing::info!(
            races = stored,
            asleep,
            racers = state.ctx.racers.len(),
            "races recovered"
        );
        args.slot.publish(myself);
        Ok(state)
    }

    async fn post_stop(
        &self,
        myself: ActorRef<RaceSupervisorMsg>,
        state: &mut RaceSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.sweep_timer.take() {
            timer.abort();
        }
        if let Some(timer) = state.wake_timer.take() {
            timer.abort();
        }
        for task in [state.lease_watch.take(), state.claim_timer.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        myself.stop_children(None);
        // Another node may take this node's races at once instead of after the TTL.
        if let Some(leases) = &state.ctx.leases {
            for key in leases.held() {
                if race_of_lease(&key).is_some() {
                    leases.give_up(&key).await;
                }
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<RaceSupervisorMsg>,
        message: RaceSupervisorMsg,
        state: &mut RaceSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RaceSupervisorMsg::Spawn { id, reply } => {
                let outcome = match state.ctx.races.get(&id) {
                    Some(existing) => Ok(existing),
                    None => match state.own(&id).await {
                        Err(refused) => Err(refused),
                        Ok(()) => state
                            .spawn_race(&myself, id.clone(), None, false)
                            .await
                            .map_err(|e| {
                                tracing::error!(race = %id, "race actor did not start: {e}");
                                Rejection::new(
                                    ErrorCode::Unavailable,
                                    format!("race {id} could not be started"),
                                )
                            }),
                    },
                };
                let _ = reply.send(outcome);
            }
            RaceSupervisorMsg::Activate { id, reply } => {
                match state.stopping.get_mut(&Child::Race(id.clone())) {
                    Some(waiters) => waiters.push(Waiter::Race(reply)),
                    None => {
                        let _ = reply.send(state.wake(&myself, &id).await);
                    }
                }
            }
            RaceSupervisorMsg::SpawnRacer { race, bib, reply } => {
                if let Some(waiters) = state.stopping.get_mut(&Child::Racer(race.clone(), bib)) {
                    waiters.push(Waiter::Racer(reply));
                    return Ok(());
                }
                // Cluster mode: a racer runs where its race runs, and a race taken over
                // for this racer's fix starts (with its racers) first.
                if state.ctx.leases.is_some() && state.ctx.races.get(&race).is_none() {
                    if let Err(refused) = state.wake(&myself, &race).await {
                        let _ = reply.send(Err(refused));
                        return Ok(());
                    }
                }
                // pre_start refuses unknown races and bibs; its reason is the answer.
                let outcome = state
                    .racer(&myself, race, bib)
                    .await
                    .map_err(|e| Rejection::new(ErrorCode::NotFound, e.to_string()));
                let _ = reply.send(outcome);
            }
            RaceSupervisorMsg::StartRacers { race, bibs } => {
                if state.own(&race).await.is_err() {
                    return Ok(()); // served elsewhere: that node starts them
                }
                for bib in bibs {
                    if state
                        .stopping
                        .contains_key(&Child::Racer(race.clone(), bib))
                    {
                        continue; // its first fix starts it
                    }
                    if let Err(e) = state.racer(&myself, race.clone(), bib).await {
                        // Its first fix starts it (or says why it cannot).
                        tracing::warn!(race = %race, bib, "racer actor did not start: {e}");
                    }
                }
            }
            RaceSupervisorMsg::Sweep => state.sweep(&myself),
            RaceSupervisorMsg::Passivate { idle } => {
                state.sweeping = false;
                state.passivate(idle);
            }
            RaceSupervisorMsg::WakeDue => {
                let now = now_ms();
                while let Some((at, id)) = state.wakes.first().cloned() {
                    if at > now {
                        break;
                    }
                    state.wakes.remove(&(at, id.clone()));
                    state.wake_of.remove(&id);
                    // One still draining decides again when it stops.
                    if !state.stopping.contains_key(&Child::Race(id.clone())) {
                        let _ = state.wake(&myself, &id).await;
                    }
                }
                state.arm_wake(&myself);
            }
            RaceSupervisorMsg::LeaseLost { key } => {
                if let Some(id) = race_of_lease(&key) {
                    state.evict(&id);
                }
            }
            RaceSupervisorMsg::LeasesUnknown => {
                let ids: Vec<RaceId> = state
                    .ctx
                    .races
                    .entries(|_| true)
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect();
                let leases = state.ctx.leases.clone();
                for id in ids {
                    if leases.as_ref().is_some_and(|l| !l.holds(&lease_key(&id))) {
                        state.evict(&id);
                    }
                }
            }
            RaceSupervisorMsg::Claim => state.claim(&myself).await,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RaceSupervisorMsg>,
        event: SupervisionEvent,
        state: &mut RaceSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(child) = state.forget(cell.get_id()) {
                    if let Some(waiters) = state.stopping.remove(&child) {
                        state.stopped(&myself, child, waiters).await;
                    }
                }
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some(child) = state.forget(cell.get_id()) else {
                    return Ok(());
                };
                tracing::error!("{child} failed: {error}");
                // Failed on its way to sleep: what it was draining is lost to a panic like
                // any other message; it sleeps, or wakes for whoever waits.
                if let Some(waiters) = state.stopping.remove(&child) {
                    state.stopped(&myself, child, waiters).await;
                    return Ok(());
                }
                if !state.budget.allow(child.clone(), Instant::now()) {
                    tracing::error!("{child}: restart budget exhausted; it stays stopped until the server restarts");
                    return Ok(());
                }
                metrics::counter!(m::ACTOR_RESTARTS, "kind" => child.kind()).increment(1);
                if let Err(e) = state.respawn(&myself, child.clone()).await {
                    tracing::error!("{child} could not be restarted: {e}");
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::race::domain::RaceSettings;
    use crate::actors::race::{RaceCommand, RaceDomain, RaceLimits, RaceStatus};
    use crate::actors::root::{RootArgs, RootSupervisor};
    use crate::geo::Course;
    use crate::persist::{JournalWriter, Store};

    #[tokio::test]
    async fn a_panicking_race_is_restarted_from_its_journal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (journal, _writer) = JournalWriter::start(store.clone(), 64).unwrap();
        let (root, _) = RootSupervisor::spawn(
            None,
            RootSupervisor,
            RootArgs {
                restart_budget: 3,
                restart_window: Duration::from_secs(60),
            },
        )
        .await
        .unwrap();
        let defaults = RaceSettings::from_config(&crate::config::Config::defaults().unwrap());
        let settings = RaceSettings {
            limits: RaceLimits {
                max_name_chars: 50,
                max_course_points: 100,
                max_racers: 10,
            },
            snapshot_every: 2,
            restart_budget: 3,
            restart_window: Duration::from_secs(60),
            call_timeout: Duration::from_secs(5),
            rules: defaults.rules,
            pace: defaults.pace,
            tick: Duration::from_millis(250),
            resume_buffer_bytes: 1 << 20,
            catch_up_ticks: defaults.catch_up_ticks,
            // The start below is in the past: the test fires the gun itself.
            start_mode: crate::actors::race::state::StartMode::Gun,
            passivate_after: None,
        };
        let domain = RaceDomain::start(&root, journal, settings, crate::api::tick_encoder(), None)
            .await
            .unwrap();
        let course = Course::from_degrees(&[(46.0, 15.0), (46.01, 15.0)], 10).unwrap();
        let race = domain
            .create(RaceCommand::Create {
                name: "Crashy".into(),
                course,
                start_at_ms: 1_795_856_400_000,
                cutoff_at_ms: None,
            })
            .await
            .unwrap();
        let racers = vec![crate::actors::race::RacerEntry {
            bib: 1,
            name: "Ana".into(),
            team: None,
            email: None,
        }];
        domain
            .command(&race.id, RaceCommand::RegisterRacers { racers })
            .await
            .unwrap();
        domain.command(&race.id, RaceCommand::Start).await.unwrap();
        let fixes = (0..5)
            .map(|i| crate::actors::racer::Fix {
                at_ms: 1_795_856_400_000 + i * 10_000,
                position: crate::geo::Position::from_degrees(46.0 + 0.0005 * i as f64, 15.0)
                    .unwrap(),
                accuracy_m: 5.0,
                speed_mps: None,
                elevation_m: None,
            })
            .collect();
        assert_eq!(
            domain
                .submit_fixes(&race.id, 1, fixes)
                .await
                .unwrap()
                .accepted,
            5
        );
        let standings = domain.standings(&race.id).await.unwrap();
        assert!(standings[0].progress_m > 200.0, "{standings:?}");
        let before = domain.registry().get(&race.id).unwrap();
        before.cast(RaceMsg::Panic).unwrap();
        let mut after = None;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if let Some(a) = domain.registry().get(&race.id) {
                if a.get_id() != before.get_id() {
                    after = Some(a);
                    break;
                }
            }
        }
        assert!(after.is_some(), "the race actor was restarted");
        let mut restored = Vec::new();
        for _ in 0..100 {
            restored = domain.standings(&race.id).await.unwrap();
            if !restored.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            restored, standings,
            "racers report again to the restarted race"
        );
        let finished = domain.command(&race.id, RaceCommand::Finish).await.unwrap();
        assert_eq!(
            finished.status,
            RaceStatus::Finished,
            "restarted with its live state"
        );
        root.stop_and_wait(None, None).await.unwrap();
    }
}
