//! The root of the supervision tree: one child supervisor per domain.
//!
//! A domain supervisor recovers its domain in `pre_start`, so restarting a failed one is a
//! full recovery of that domain from storage while the others keep running.

use crate::actors::mail::supervisor::{MailSupervisor, MailSupervisorArgs};
use crate::actors::patrol::supervisor::{PatrolSupervisor, PatrolSupervisorArgs};
use crate::actors::race::supervisor::{RaceSupervisor, RaceSupervisorArgs};
use crate::actors::restart::RestartBudget;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How to (re)start one domain's supervisor.
#[derive(Clone)]
pub enum DomainSpec {
    /// The race domain.
    Race(RaceSupervisorArgs),
    /// The mail domain.
    Mail(MailSupervisorArgs),
    /// The patrol domain.
    Patrol(PatrolSupervisorArgs),
}

impl DomainSpec {
    fn name(&self) -> &'static str {
        match self {
            DomainSpec::Race(_) => "race",
            DomainSpec::Mail(_) => "mail",
            DomainSpec::Patrol(_) => "patrol",
        }
    }

    async fn spawn(&self, root: &ActorRef<RootMsg>) -> Result<ActorId, ActorProcessingErr> {
        match self {
            DomainSpec::Race(args) => {
                let (actor, _) = RaceSupervisor::spawn_linked(
                    None,
                    RaceSupervisor,
                    args.clone(),
                    root.get_cell(),
                )
                .await?;
                Ok(actor.get_id())
            }
            DomainSpec::Mail(args) => {
                let (actor, _) = MailSupervisor::spawn_linked(
                    None,
                    MailSupervisor,
                    args.clone(),
                    root.get_cell(),
                )
                .await?;
                Ok(actor.get_id())
            }
            DomainSpec::Patrol(args) => {
                let (actor, _) = PatrolSupervisor::spawn_linked(
                    None,
                    PatrolSupervisor,
                    args.clone(),
                    root.get_cell(),
                )
                .await?;
                Ok(actor.get_id())
            }
        }
    }
}

/// Starts a domain's supervisor under `root` and waits until it has recovered the domain:
/// the one way every domain facade starts.
pub async fn start_domain(root: &ActorRef<RootMsg>, spec: DomainSpec) -> Result<(), String> {
    match root
        .call(|reply| RootMsg::StartDomain { spec, reply }, None)
        .await
    {
        Ok(ractor::rpc::CallResult::Success(outcome)) => outcome,
        Ok(_) | Err(_) => Err("the root supervisor did not answer".into()),
    }
}

/// Messages the root supervisor accepts.
pub enum RootMsg {
    /// Start a domain supervisor (and so recover the domain) under the root.
    StartDomain {
        /// Which domain and with what.
        spec: DomainSpec,
        /// Done, or why recovery failed.
        reply: RpcReplyPort<Result<(), String>>,
    },
}

/// The root's state.
pub struct RootState {
    /// Which domain each child supervisor runs, to restart it.
    domains: HashMap<ActorId, DomainSpec>,
    /// Guards against a domain that fails on every start.
    budget: RestartBudget<&'static str>,
}

/// The ractor behaviour of the root supervisor.
pub struct RootSupervisor;

/// Spawn arguments: the restart budget for domain supervisors.
pub struct RootArgs {
    /// Restarts per domain per window.
    pub restart_budget: u32,
    /// The window.
    pub restart_window: Duration,
}

impl Actor for RootSupervisor {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = RootArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<RootMsg>,
        args: RootArgs,
    ) -> Result<RootState, ActorProcessingErr> {
        Ok(RootState {
            domains: HashMap::new(),
            budget: RestartBudget::new(args.restart_budget, args.restart_window),
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<RootMsg>,
        _state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        myself.stop_children(None);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<RootMsg>,
        message: RootMsg,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RootMsg::StartDomain { spec, reply } => {
                let outcome = match spec.spawn(&myself).await {
                    Ok(id) => {
                        state.domains.insert(id, spec);
                        Ok(())
                    }
                    Err(e) => Err(format!("{} domain: {e}", spec.name())),
                };
                let _ = reply.send(outcome);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RootMsg>,
        event: SupervisionEvent,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.domains.remove(&cell.get_id());
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some(spec) = state.domains.remove(&cell.get_id()) else {
                    return Ok(());
                };
                tracing::error!(domain = spec.name(), "domain supervisor failed: {error}");
                if !state.budget.allow(spec.name(), Instant::now()) {
                    tracing::error!(
                        domain = spec.name(),
                        "restart budget exhausted; the domain stays down"
                    );
                    return Ok(());
                }
                match spec.spawn(&myself).await {
                    Ok(id) => {
                        state.domains.insert(id, spec);
                    }
                    Err(e) => tracing::error!("domain supervisor could not restart: {e}"),
                }
            }
            _ => {}
        }
        Ok(())
    }
}
