//! The race supervisor: supervises every race actor and every racer actor of the races.
//! It recovers all stored races, then all stored racers, before it reports started; spawns
//! new ones on demand; and restarts a failed child from its persisted state, within a
//! restart budget.
//!
//! ractor's default supervision stops the supervisor when any child fails; this one never
//! does. A child that stops normally (a rejected create) is simply forgotten.

use super::actor::{RaceActor, RaceArgs, RaceContext, RaceMsg};
use super::KIND;
use crate::actors::racer::actor::{parse_racer_id, RacerActor, RacerArgs};
use crate::actors::racer::msg::RacerMsg;
use crate::actors::racer::KIND as RACER_KIND;
use crate::actors::restart::RestartBudget;
use crate::actors::slot::SupervisorSlot;
use crate::error::{ErrorCode, Rejection};
use crate::ids::RaceId;
use crate::metrics as m;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Messages the race supervisor accepts.
pub enum RaceSupervisorMsg {
    /// Start an actor for a race id that has none yet.
    Spawn {
        /// The race.
        id: RaceId,
        /// The new actor, or why it could not start.
        reply: RpcReplyPort<Result<ActorRef<RaceMsg>, Rejection>>,
    },
    /// Start the actor of racer `bib` in `race` (or return the running one).
    SpawnRacer {
        /// The race.
        race: RaceId,
        /// The racer's bib.
        bib: u32,
        /// The actor, or why it could not start (unknown race or bib).
        reply: RpcReplyPort<Result<ActorRef<RacerMsg>, Rejection>>,
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

impl fmt::Display for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Child::Race(id) => write!(f, "race {id}"),
            Child::Racer(race, bib) => write!(f, "racer {bib} of race {race}"),
        }
    }
}

/// The supervisor's state.
pub struct RaceSupervisorState {
    /// Shared by every child, registries included.
    ctx: Arc<RaceContext>,
    /// Which entity each child actor serves, to act on its supervision events.
    children: HashMap<ActorId, Child>,
    /// Guards against restart loops.
    budget: RestartBudget<Child>,
}

/// The ractor behaviour of the race supervisor.
#[derive(Clone)]
pub struct RaceSupervisor;

impl RaceSupervisorState {
    async fn spawn_race(
        &mut self,
        myself: &ActorRef<RaceSupervisorMsg>,
        id: RaceId,
    ) -> Result<ActorRef<RaceMsg>, ActorProcessingErr> {
        let args = RaceArgs {
            id: id.clone(),
            ctx: self.ctx.clone(),
        };
        let (actor, _) = RaceActor::spawn_linked(None, RaceActor, args, myself.get_cell()).await?;
        self.children
            .insert(actor.get_id(), Child::Race(id.clone()));
        self.ctx.races.insert(id, actor.clone());
        Ok(actor)
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
            Child::Race(id) => self.spawn_race(myself, id).await.map(drop),
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
}

impl Actor for RaceSupervisor {
    type Msg = RaceSupervisorMsg;
    type State = RaceSupervisorState;
    type Arguments = RaceSupervisorArgs;

    /// Recovery: every race, then every racer (which needs its race's course), gets its
    /// actor back before the supervisor reports started, so readiness means recovered.
    async fn pre_start(
        &self,
        myself: ActorRef<RaceSupervisorMsg>,
        args: RaceSupervisorArgs,
    ) -> Result<RaceSupervisorState, ActorProcessingErr> {
        let mut state = RaceSupervisorState {
            ctx: args.ctx,
            children: HashMap::new(),
            budget: RestartBudget::new(args.restart_budget, args.restart_window),
        };
        for key in state.ctx.journal.actors(KIND)? {
            let id = RaceId::parse(key.id())
                .map_err(|r| format!("stored race key {key}: {}", r.message))?;
            state
                .spawn_race(&myself, id)
                .await
                .map_err(|e| format!("recovering {key}: {e}"))?;
        }
        let races = state.children.len();
        for key in state.ctx.journal.actors(RACER_KIND)? {
            let (race, bib) = parse_racer_id(key.id())
                .ok_or_else(|| format!("stored racer key {key} is not <race>.<bib>"))?;
            state
                .spawn_racer(&myself, race, bib)
                .await
                .map_err(|e| format!("recovering {key}: {e}"))?;
        }
        tracing::info!(
            races,
            racers = state.children.len() - races,
            "races recovered"
        );
        args.slot.publish(myself);
        Ok(state)
    }

    async fn post_stop(
        &self,
        myself: ActorRef<RaceSupervisorMsg>,
        _state: &mut RaceSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        myself.stop_children(None);
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
                    None => state.spawn_race(&myself, id.clone()).await.map_err(|e| {
                        tracing::error!(race = %id, "race actor did not start: {e}");
                        Rejection::new(
                            ErrorCode::Unavailable,
                            format!("race {id} could not be started"),
                        )
                    }),
                };
                let _ = reply.send(outcome);
            }
            RaceSupervisorMsg::SpawnRacer { race, bib, reply } => {
                // pre_start refuses unknown races and bibs; its reason is the answer.
                let outcome = state
                    .racer(&myself, race, bib)
                    .await
                    .map_err(|e| Rejection::new(ErrorCode::NotFound, e.to_string()));
                let _ = reply.send(outcome);
            }
            RaceSupervisorMsg::StartRacers { race, bibs } => {
                for bib in bibs {
                    if let Err(e) = state.racer(&myself, race.clone(), bib).await {
                        // Its first fix starts it (or says why it cannot).
                        tracing::warn!(race = %race, bib, "racer actor did not start: {e}");
                    }
                }
            }
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
                state.forget(cell.get_id());
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some(child) = state.forget(cell.get_id()) else {
                    return Ok(());
                };
                tracing::error!("{child} failed: {error}");
                if !state.budget.allow(child.clone(), Instant::now()) {
                    tracing::error!("{child}: restart budget exhausted; it stays stopped until the server restarts");
                    return Ok(());
                }
                let kind = match child {
                    Child::Race(_) => KIND,
                    Child::Racer(..) => RACER_KIND,
                };
                metrics::counter!(m::ACTOR_RESTARTS, "kind" => kind).increment(1);
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
        };
        let domain = RaceDomain::start(&root, journal, settings, crate::api::tick_encoder())
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
