//! The race domain's facade: what the API layer calls. It finds race actors through the
//! registry, reads summaries from the directory, and turns actor-call failures into typed
//! rejections, so callers never handle ractor types.

use super::actor::Subscription;
use super::actor::{LoadedRace, RaceContext, RaceMsg};
use super::devices::{DeviceBinding, DevicesChange, DevicesCommand};
use super::feed::TickEncoder;
use super::news::RaceNews;
use super::pace::{Pace, PaceRules};
use super::replay::{timeline, Replayer};
use super::results::ResultRow;
use super::standings::Standing;
use super::state::{
    bib_not_registered, not_found, RaceCommand, RaceLimits, RaceStatus, RaceSummary, RacerEntry,
    StartMode,
};
use super::supervisor::{RaceSupervisor, RaceSupervisorArgs, RaceSupervisorMsg};
use crate::actors::ask::{ask, ask_or, unanswered, Silence};
use crate::actors::racer::actor::racer_key;
use crate::actors::racer::msg::{FixesOutcome, RacerMsg};
use crate::actors::racer::RacerEvent;
use crate::actors::racer::{Fix, TrackingRules};
use crate::actors::registry::Registry;
use crate::actors::root::{start_domain, DomainSpec, RootMsg};
use crate::actors::slot::SupervisorSlot;
use crate::config::Config;
use crate::error::{ErrorCode, Rejection};
use crate::ids::RaceId;
use crate::persist::Journal;
use crate::time::now_ms;
use dashmap::DashMap;
use ractor::ActorRef;
use std::sync::Arc;
use std::time::Duration;

/// Race-domain settings taken from configuration.
#[derive(Debug, Clone, Copy)]
pub struct RaceSettings {
    /// Validation limits.
    pub limits: RaceLimits,
    /// Events between snapshots.
    pub snapshot_every: u64,
    /// Restarts per race per window.
    pub restart_budget: u32,
    /// The restart window.
    pub restart_window: Duration,
    /// How long to wait for a race actor.
    pub call_timeout: Duration,
    /// How racers' fixes are judged.
    pub rules: TrackingRules,
    /// The reporting interval asked of each device.
    pub pace: PaceRules,
    /// Time between spectator ticks.
    pub tick: Duration,
    /// Bytes of recent ticks a watched race keeps for reconnecting spectators.
    pub resume_buffer_bytes: usize,
    /// How many ticks behind a subscriber may be and still get only the rows that changed.
    pub catch_up_ticks: usize,
    /// Whether scheduled races go live by themselves at their start or wait for the gun.
    pub start_mode: StartMode,
    /// How long a race or racer with nothing to do stays resident (`None`: for ever).
    pub passivate_after: Option<Duration>,
}

impl RaceSettings {
    /// Reads the race settings out of the configuration.
    pub fn from_config(config: &Config) -> RaceSettings {
        RaceSettings {
            limits: config.race.limits,
            snapshot_every: config.persist.snapshot_every,
            restart_budget: config.supervision.restart_budget,
            restart_window: Duration::from_secs(config.supervision.restart_window_secs),
            call_timeout: Duration::from_millis(config.supervision.call_timeout_ms),
            tick: Duration::from_millis(config.race.tick_ms),
            resume_buffer_bytes: config.race.resume_buffer_bytes,
            catch_up_ticks: config.race.catch_up_ticks,
            start_mode: config.race.start_mode,
            passivate_after: (config.supervision.passivate_after_ms > 0)
                .then(|| Duration::from_millis(config.supervision.passivate_after_ms)),
            rules: config.tracking.rules,
            pace: config.tracking.pace,
        }
    }
}

/// Handle to the running race domain.
#[derive(Clone)]
pub struct RaceDomain {
    /// Shared with every race actor.
    ctx: Arc<RaceContext>,
    /// The current race supervisor (replaced when the root restarts it).
    supervisor: SupervisorSlot<RaceSupervisorMsg>,
    /// How long to wait for an actor.
    call_timeout: Duration,
    /// Cluster mode: this node's mirrors of races other nodes own, which serve their
    /// spectators here (`None`: one node, which owns every race).
    mirrors: Option<super::mirror::Mirrors>,
}

impl RaceDomain {
    /// Starts the race supervisor under `root`, which recovers every stored race before this
    /// returns.
    pub async fn start(
        root: &ActorRef<RootMsg>,
        journal: Journal,
        settings: RaceSettings,
        encoder: TickEncoder,
        cluster: Option<crate::cluster::Node>,
    ) -> Result<RaceDomain, String> {
        let mirrors = cluster.as_ref().map(|node| {
            super::mirror::Mirrors::new(
                node.link.clone(),
                node.leases.clone(),
                encoder.clone(),
                settings.catch_up_ticks,
                settings.resume_buffer_bytes,
            )
        });
        let (news, heard) = match &cluster {
            Some(node) => {
                let (news, heard) = super::news::start(&node.link).await?;
                (Some(news), Some(heard))
            }
            None => (None, None),
        };
        let ctx = Arc::new(RaceContext {
            journal,
            directory: DashMap::new(),
            limits: settings.limits,
            snapshot_every: settings.snapshot_every,
            rules: settings.rules,
            races: Arc::new(Registry::new(super::KIND)),
            racers: Arc::new(Registry::new(crate::actors::racer::KIND)),
            encoder,
            tick: settings.tick,
            resume_buffer_bytes: settings.resume_buffer_bytes,
            catch_up_ticks: settings.catch_up_ticks,
            start_mode: settings.start_mode,
            events: tokio::sync::broadcast::channel(crate::actors::events::CHANNEL_CAPACITY).0,
            devices: Default::default(),
            pace: settings.pace,
            paces: DashMap::new(),
            passivate_after: settings.passivate_after,
            leases: cluster.map(|node| node.leases),
            remote_spectators: DashMap::new(),
            news,
        });
        if let Some(mut heard) = heard {
            // What other nodes changed, into this node's directory and device index.
            let ctx = ctx.clone();
            tokio::spawn(async move {
                while let Some(news) = heard.recv().await {
                    match news {
                        RaceNews::Summary(summary) => {
                            ctx.directory.insert(summary.id.clone(), summary);
                        }
                        RaceNews::Bound {
                            device_id,
                            race,
                            bib,
                        } => ctx.devices.bind(&device_id, &race, bib),
                        RaceNews::Unbound { device_id, race } => {
                            ctx.devices.unbind(&device_id, &race)
                        }
                    }
                }
            });
        }
        let supervisor = SupervisorSlot::new("race");
        let args = RaceSupervisorArgs {
            slot: supervisor.clone(),
            ctx: ctx.clone(),
            restart_budget: settings.restart_budget,
            restart_window: settings.restart_window,
        };
        start_domain(root, DomainSpec::new("race", RaceSupervisor, args)).await?;
        Ok(RaceDomain {
            ctx,
            supervisor,
            call_timeout: settings.call_timeout,
            mirrors,
        })
    }

    /// The validation limits, for callers that build commands (course size).
    pub fn limits(&self) -> RaceLimits {
        self.ctx.limits
    }

    /// Live race actors; for tests and metrics.
    pub fn registry(&self) -> &Registry<RaceId, RaceMsg> {
        &self.ctx.races
    }

    /// Judges and stores a batch of fixes from racer `bib` of a live race.
    pub async fn submit_fixes(
        &self,
        race: &RaceId,
        bib: u32,
        fixes: Vec<Fix>,
    ) -> Result<FixesOutcome, Rejection> {
        self.get(race)?.takes_fixes()?;
        let actor = match self.ctx.racers.get(&(race.clone(), bib)) {
            Some(actor) => actor,
            None => {
                let spawn = |reply| RaceSupervisorMsg::SpawnRacer {
                    race: race.clone(),
                    bib,
                    reply,
                };
                match self.supervisor.ask(spawn, self.call_timeout).await? {
                    Ok(actor) => actor,
                    Err(refused) => return Err(self.racer_not_started(race, bib, refused).await),
                }
            }
        };
        let question = |reply| RacerMsg::Fixes { fixes, reply };
        ask_or(&actor, question, self.call_timeout, |_| {
            let advice = "send the fixes again (duplicates are ignored)";
            unanswered(&format!("racer {bib}"), advice)
        })
        .await?
    }

    /// What a client is told when racer `bib`'s actor could not start: that the bib is not
    /// registered when the roster says so, else that it should retry. The supervisor's reason
    /// carries the actor runtime's error text ("Actor panicked during startup…"), which is
    /// for the log, never for the client.
    async fn racer_not_started(&self, race: &RaceId, bib: u32, refused: Rejection) -> Rejection {
        // Asked only on this failure path, so a first fix of a registered racer costs no
        // extra hop.
        match self.roster(race).await {
            Ok(roster) if !roster.iter().any(|r| r.bib == bib) => bib_not_registered(race, bib),
            Ok(_) | Err(_) => {
                tracing::warn!(race = %race, bib, "racer actor did not start: {}", refused.message);
                Rejection::new(
                    ErrorCode::Unavailable,
                    format!("racer {bib} of race {race} could not be started; retry"),
                )
            }
        }
    }

    /// Subscribes a spectator to a race: a snapshot and the feed of ticks after it, or,
    /// for a spectator coming back with the last sequence number it saw (`since_seq`), the
    /// ticks it missed when the race still has them.
    /// In cluster mode a race another node owns is followed through this node's mirror
    /// of it, which serves the same snapshot and ticks.
    pub async fn subscribe(
        &self,
        id: &RaceId,
        since_seq: Option<u64>,
    ) -> Result<Subscription, Rejection> {
        if let Some(mirrors) = &self.mirrors {
            if mirrors.owned_elsewhere(id).await.is_some() {
                return mirrors.subscribe(id, since_seq).await;
            }
        }
        self.subscribe_here(id, since_seq).await
    }

    /// Subscribes to the race actor on this node (started, and its lease taken, when it is
    /// not running): what [`RaceDomain::subscribe`] does for races this node serves, and
    /// what the relay of a race to other nodes follows.
    pub async fn subscribe_here(
        &self,
        id: &RaceId,
        since_seq: Option<u64>,
    ) -> Result<Subscription, Rejection> {
        self.ask(id, |reply| RaceMsg::Subscribe { since_seq, reply })
            .await?
    }

    /// Records how many spectators other nodes serve race `id` to, through this node's
    /// relay of its ticks (`None`: the relay stopped), for the count every tick carries.
    pub fn watched_elsewhere(&self, id: &RaceId, spectators: Option<u32>) {
        match spectators {
            Some(count) => {
                self.ctx.remote_spectators.insert(id.clone(), count);
            }
            None => {
                self.ctx.remote_spectators.remove(id);
            }
        }
    }

    /// Cluster mode: the node that owns race `id` when it is another one.
    async fn owned_elsewhere(&self, id: &RaceId) -> Option<String> {
        self.mirrors.as_ref()?.owned_elsewhere(id).await
    }

    /// Race `id` and its bibs as its journal holds them, read without starting its actor
    /// (and published to this node's directory, which they bring up to date).
    async fn read_stored(&self, id: &RaceId) -> Result<(RaceSummary, Vec<u32>), Rejection> {
        let (ctx, race_id) = (self.ctx.clone(), id.clone());
        let loaded = tokio::task::spawn_blocking(move || LoadedRace::load(&ctx, &race_id))
            .await
            .map_err(|e| Rejection::internal(format!("race {id} not read: {e}")))?
            .map_err(|e| {
                tracing::error!(race = %id, "race journal unreadable: {e}");
                Rejection::new(
                    ErrorCode::Unavailable,
                    format!("race {id} could not be read here; retry"),
                )
            })?;
        let race = loaded.state().existing(id)?;
        Ok((race.summary(), race.roster.keys().copied().collect()))
    }

    /// Domain events of the race domain (a race finished), for other domains to react to.
    pub fn domain_events(
        &self,
    ) -> tokio::sync::broadcast::Receiver<crate::actors::events::DomainEvent> {
        self.ctx.events.subscribe()
    }

    /// The results as they stand; final once the race is over.
    pub async fn results(&self, id: &RaceId) -> Result<Vec<ResultRow>, Rejection> {
        self.ask(id, |reply| RaceMsg::Results { reply }).await?
    }

    /// The race's live standings, leader first.
    pub async fn standings(&self, id: &RaceId) -> Result<Vec<Standing>, Rejection> {
        self.ask(id, |reply| RaceMsg::Standings { reply }).await
    }

    /// Creates a race with a fresh id.
    pub async fn create(&self, command: RaceCommand) -> Result<RaceSummary, Rejection> {
        let id = RaceId::generate(now_ms());
        let spawn = |reply| RaceSupervisorMsg::Spawn {
            id: id.clone(),
            reply,
        };
        let actor = self.supervisor.ask(spawn, self.call_timeout).await??;
        self.call(&id, &actor, command).await
    }

    /// Runs a lifecycle command on an existing race.
    pub async fn command(
        &self,
        id: &RaceId,
        command: RaceCommand,
    ) -> Result<RaceSummary, Rejection> {
        let actor = self.actor(id).await?;
        self.call(id, &actor, command).await
    }

    /// Race `id`'s actor: the resident one, else the race woken from its journal by the
    /// supervisor (a sleeping race answers as if it had never slept); `not_found` for an id
    /// the directory does not know.
    async fn actor(&self, id: &RaceId) -> Result<ActorRef<RaceMsg>, Rejection> {
        if let Some(actor) = self.ctx.races.get(id) {
            return Ok(actor);
        }
        if !self.ctx.directory.contains_key(id) {
            return Err(not_found(id));
        }
        let wake = |reply| RaceSupervisorMsg::Activate {
            id: id.clone(),
            reply,
        };
        self.supervisor.ask(wake, self.call_timeout).await?
    }

    /// Whether race `id`'s actor is resident (not asleep in its journal); for tests and
    /// benches.
    pub fn race_resident(&self, id: &RaceId) -> bool {
        self.ctx.races.get(id).is_some()
    }

    /// Binds or revokes a tracking app's device id in race `id`.
    pub async fn change_devices(
        &self,
        id: &RaceId,
        command: DevicesCommand,
    ) -> Result<DevicesChange, Rejection> {
        self.ask(id, |reply| RaceMsg::Devices { command, reply })
            .await?
    }

    /// The reporting interval racer `bib` of `race` should use next, once the race has
    /// paced it (after its first reports).
    pub fn pace(&self, race: &RaceId, bib: u32) -> Option<Pace> {
        self.ctx
            .paces
            .get(&(race.clone(), bib))
            .map(|entry| *entry.value())
    }

    /// Race `id`'s device bindings, by bib.
    pub async fn devices(&self, id: &RaceId) -> Result<Vec<DeviceBinding>, Rejection> {
        self.ask(id, |reply| RaceMsg::DeviceList { reply }).await?
    }

    /// The live race and bib `device_id` reports for. Unknown (or revoked) ids are
    /// `not_found`; an id whose races are none of them live gets the race's own refusal
    /// (not live yet, or any more); an id live in two races at once is a `conflict` an
    /// admin must resolve, never a guess.
    pub fn device_racer(&self, device_id: &str) -> Result<(RaceId, u32), Rejection> {
        let bound = self.ctx.devices.lookup(device_id);
        if bound.is_empty() {
            return Err(Rejection::new(
                ErrorCode::NotFound,
                "this device id is not bound to any racer",
            ));
        }
        let mut refusal = None;
        let mut live = Vec::new();
        for (race, bib) in bound {
            match self.get(&race).and_then(|summary| summary.takes_fixes()) {
                Ok(()) => live.push((race, bib)),
                Err(rejection) => refusal = Some(rejection),
            }
        }
        match live.len() {
            1 => Ok(live.swap_remove(0)),
            0 => Err(refusal.unwrap_or_else(|| {
                Rejection::new(
                    ErrorCode::NotFound,
                    "this device id is not bound to any racer",
                )
            })),
            _ => Err(Rejection::new(
                ErrorCode::Conflict,
                "this device id is bound in two live races; an admin must revoke one",
            )),
        }
    }

    /// Starts the actors of racers just registered in `race` in the background (see
    /// `RaceSupervisorMsg::StartRacers`); a racer whose actor is not running yet when its
    /// first fix comes is started by that fix, as before.
    pub fn start_racers(&self, race: &RaceId, bibs: Vec<u32>) {
        if let Ok(supervisor) = self.supervisor.current() {
            let message = RaceSupervisorMsg::StartRacers {
                race: race.clone(),
                bibs,
            };
            if let Err(e) = supervisor.cast(message) {
                tracing::warn!(race = %race, "racers not started ahead of their first fix: {e}");
            }
        }
    }

    /// Whether racer `bib`'s actor is running.
    pub fn racer_running(&self, race: &RaceId, bib: u32) -> bool {
        self.ctx.racers.get(&(race.clone(), bib)).is_some()
    }

    /// A race's registered racers, by bib.
    pub async fn roster(&self, id: &RaceId) -> Result<Vec<RacerEntry>, Rejection> {
        self.ask(id, |reply| RaceMsg::Roster { reply }).await
    }

    /// A replayer over race `id`'s stored fixes (live, finished or cancelled races).
    pub async fn replay(&self, id: &RaceId) -> Result<Replayer, Rejection> {
        let (summary, bibs) = match self.owned_elsewhere(id).await {
            // Another node serves the race: its journals are readable from here, and
            // reading them leaves the race where it is.
            Some(_) => self.read_stored(id).await?,
            None => {
                let summary = self.get(id)?;
                let bibs: Vec<u32> = self.roster(id).await?.iter().map(|r| r.bib).collect();
                (summary, bibs)
            }
        };
        if summary.status == RaceStatus::Scheduled {
            return Err(Rejection::new(
                ErrorCode::InvalidTransition,
                format!("race {id} has not started; there is nothing to replay"),
            ));
        }
        let (journal, race) = (self.ctx.journal.clone(), id.clone());
        let histories = tokio::task::spawn_blocking(move || {
            bibs.into_iter()
                .map(|bib| {
                    let events = journal.history::<RacerEvent>(&racer_key(&race, bib))?;
                    Ok((bib, events.into_iter().map(|(_, e)| e).collect()))
                })
                .collect::<Result<Vec<_>, crate::persist::PersistError>>()
        })
        .await
        .map_err(|e| {
            tracing::error!(race = %id, "replay loader failed: {e}");
            Rejection::internal("the race's history could not be loaded")
        })?
        .map_err(|e| {
            tracing::error!(race = %id, "replay history unreadable: {e}");
            Rejection::internal("the race's history could not be read")
        })?;
        Ok(Replayer::new(timeline(histories, summary.course_length_m)))
    }

    /// Asks race `id` a question; a missing or silent actor becomes a typed rejection.
    async fn ask<T: Send + 'static>(
        &self,
        id: &RaceId,
        question: impl FnOnce(ractor::RpcReplyPort<T>) -> RaceMsg,
    ) -> Result<T, Rejection> {
        let actor = self.actor(id).await?;
        ask(&actor, question, self.call_timeout, &format!("race {id}")).await
    }

    /// One race's summary, read from the directory.
    pub fn get(&self, id: &RaceId) -> Result<RaceSummary, Rejection> {
        self.ctx
            .directory
            .get(id)
            .map(|s| s.value().clone())
            .ok_or_else(|| not_found(id))
    }

    /// Every race, oldest first (ids sort by creation time).
    pub fn list(&self) -> Vec<RaceSummary> {
        let mut races: Vec<RaceSummary> = self
            .ctx
            .directory
            .iter()
            .map(|e| e.value().clone())
            .collect();
        races.sort_by(|a, b| a.id.cmp(&b.id));
        races
    }

    /// Runs `command` on race `id`'s actor. A command that timed out may still take effect
    /// (PROTOCOL.md tells clients to check before retrying); one the actor never got did not.
    async fn call(
        &self,
        id: &RaceId,
        actor: &ActorRef<RaceMsg>,
        command: RaceCommand,
    ) -> Result<RaceSummary, Rejection> {
        let question = |reply| RaceMsg::Command { command, reply };
        ask_or(actor, question, self.call_timeout, |silence| {
            let message = match silence {
                Silence::TimedOut => {
                    format!("race {id} did not answer in time; the command may still take effect")
                }
                Silence::Gone => format!("race {id} is restarting; retry"),
            };
            Rejection::new(ErrorCode::Unavailable, message)
        })
        .await?
    }
}
