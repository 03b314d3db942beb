//! The race supervisor: recovers every stored race on start, spawns new races, and restarts
//! a race actor that fails from its persisted state, within a restart budget.
//!
//! ractor's default supervision stops the supervisor when any child fails; this one never
//! does. A child that stops normally (a rejected create) is simply forgotten.

use super::actor::{RaceActor, RaceArgs, RaceContext, RaceMsg};
use super::KIND;
use crate::actors::registry::Registry;
use crate::actors::restart::RestartBudget;
use crate::error::{ErrorCode, Rejection};
use crate::ids::RaceId;
use crate::metrics as m;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::HashMap;
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
}

/// Spawn arguments of the race supervisor; cloned by the root to restart it.
#[derive(Clone)]
pub struct RaceSupervisorArgs {
    /// Where the running supervisor publishes itself, so the facade can reach the current
    /// incarnation after a restart.
    pub slot: Arc<std::sync::Mutex<Option<ActorRef<RaceSupervisorMsg>>>>,
    /// Shared by every race actor.
    pub ctx: Arc<RaceContext>,
    /// Where live race actors are published.
    pub registry: Arc<Registry<RaceId, RaceMsg>>,
    /// Restarts allowed per race per window.
    pub restart_budget: u32,
    /// The budget's window.
    pub restart_window: Duration,
}

/// The supervisor's state.
pub struct RaceSupervisorState {
    /// Shared by every race actor.
    ctx: Arc<RaceContext>,
    /// Where live race actors are published.
    registry: Arc<Registry<RaceId, RaceMsg>>,
    /// Which race each child actor serves, to act on its supervision events.
    children: HashMap<ActorId, RaceId>,
    /// Guards against restart loops.
    budget: RestartBudget<RaceId>,
}

/// The ractor behaviour of the race supervisor.
pub struct RaceSupervisor;

impl RaceSupervisorState {
    async fn spawn_child(
        &mut self,
        myself: &ActorRef<RaceSupervisorMsg>,
        id: RaceId,
    ) -> Result<ActorRef<RaceMsg>, ActorProcessingErr> {
        let args = RaceArgs {
            id: id.clone(),
            ctx: self.ctx.clone(),
        };
        let (actor, _) = RaceActor::spawn_linked(None, RaceActor, args, myself.get_cell()).await?;
        self.children.insert(actor.get_id(), id.clone());
        self.registry.insert(id, actor.clone());
        Ok(actor)
    }
}

impl Actor for RaceSupervisor {
    type Msg = RaceSupervisorMsg;
    type State = RaceSupervisorState;
    type Arguments = RaceSupervisorArgs;

    /// Recovery: every race with stored history gets its actor back before the supervisor
    /// reports started, so readiness means recovered.
    async fn pre_start(
        &self,
        myself: ActorRef<RaceSupervisorMsg>,
        args: RaceSupervisorArgs,
    ) -> Result<RaceSupervisorState, ActorProcessingErr> {
        let mut state = RaceSupervisorState {
            ctx: args.ctx,
            registry: args.registry,
            children: HashMap::new(),
            budget: RestartBudget::new(args.restart_budget, args.restart_window),
        };
        let stored = state.ctx.store.actors(KIND)?;
        for key in stored {
            let id = RaceId::parse(key.id())
                .map_err(|r| format!("stored race key {key}: {}", r.message))?;
            state
                .spawn_child(&myself, id)
                .await
                .map_err(|e| format!("recovering {key}: {e}"))?;
        }
        tracing::info!(races = state.children.len(), "races recovered");
        *args.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(myself);
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
                let outcome = match state.registry.get(&id) {
                    Some(existing) => Ok(existing),
                    None => state.spawn_child(&myself, id.clone()).await.map_err(|e| {
                        tracing::error!(race = %id, "race actor did not start: {e}");
                        Rejection::new(
                            ErrorCode::Unavailable,
                            format!("race {id} could not be started"),
                        )
                    }),
                };
                let _ = reply.send(outcome);
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
                if let Some(id) = state.children.remove(&cell.get_id()) {
                    state.registry.remove_if(&id, cell.get_id());
                }
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some(id) = state.children.remove(&cell.get_id()) else {
                    return Ok(());
                };
                state.registry.remove_if(&id, cell.get_id());
                tracing::error!(race = %id, "race actor failed: {error}");
                if !state.budget.allow(id.clone(), Instant::now()) {
                    tracing::error!(race = %id, "restart budget exhausted; the race stays stopped until the server restarts");
                    return Ok(());
                }
                metrics::counter!(m::ACTOR_RESTARTS, "kind" => KIND).increment(1);
                if let Err(e) = state.spawn_child(&myself, id.clone()).await {
                    tracing::error!(race = %id, "race actor could not be restarted: {e}");
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
        };
        let domain = RaceDomain::start(&root, store, journal, settings)
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
        domain.command(&race.id, RaceCommand::Start).await.unwrap();
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
        let finished = domain.command(&race.id, RaceCommand::Finish).await.unwrap();
        assert_eq!(
            finished.status,
            RaceStatus::Finished,
            "restarted with its live state"
        );
        root.stop_and_wait(None, None).await.unwrap();
    }
}
