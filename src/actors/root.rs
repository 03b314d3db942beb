//! The root of the supervision tree: one child supervisor per domain.
//!
//! A domain supervisor recovers its domain in `pre_start`, so restarting a failed one is a
//! full recovery of that domain from storage while the others keep running.

use crate::actors::restart::RestartBudget;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The future that spawns a domain supervisor linked to the root, giving its actor id.
type SpawnFuture = Pin<Box<dyn Future<Output = Result<ActorId, ActorProcessingErr>> + Send>>;

/// How to (re)start one domain's supervisor. Built by the domain's facade, so the root knows
/// no domain: adding one touches that domain's files, and no domain depends on another
/// through the root.
#[derive(Clone)]
pub struct DomainSpec {
    /// The domain's name, for logs and the restart budget.
    name: &'static str,
    /// Spawns the supervisor with its arguments, again on every restart.
    spawn: Arc<dyn Fn(ActorCell) -> SpawnFuture + Send + Sync>,
}

impl DomainSpec {
    /// A domain whose supervisor is `behaviour` started with `args` (cloned for restarts).
    pub fn new<A>(name: &'static str, behaviour: A, args: A::Arguments) -> DomainSpec
    where
        A: Actor + Clone + Sync,
        A::Arguments: Clone + Sync,
    {
        DomainSpec {
            name,
            spawn: Arc::new(move |root: ActorCell| -> SpawnFuture {
                let (behaviour, args) = (behaviour.clone(), args.clone());
                Box::pin(async move {
                    let (actor, _) = A::spawn_linked(None, behaviour, args, root).await?;
                    Ok(actor.get_id())
                })
            }),
        }
    }

    fn name(&self) -> &'static str {
        self.name
    }

    async fn spawn(&self, root: &ActorRef<RootMsg>) -> Result<ActorId, ActorProcessingErr> {
        (self.spawn)(root.get_cell()).await
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
