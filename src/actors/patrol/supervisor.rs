//! The patrol supervisor: recovers the book in `pre_start` (so a restart of the domain is a
//! full recovery from storage), restarts the book within the restart budget, and cleans up
//! after a session actor that failed, which cannot clean up after itself.

use super::book_actor::BookActor;
use super::context::PatrolContext;
use super::msg::BookMsg;
use crate::actors::restart::RestartBudget;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Spawn arguments; cloned by the root to restart the domain.
#[derive(Clone)]
pub struct PatrolSupervisorArgs {
    /// Shared patrol state.
    pub ctx: Arc<PatrolContext>,
    /// Where the running supervisor publishes itself, so sessions are spawned under it.
    pub slot: Arc<Mutex<Option<ActorRef<()>>>>,
    /// Book restarts allowed per window.
    pub restart_budget: u32,
    /// The window.
    pub restart_window: Duration,
}

/// The supervisor's state.
pub struct PatrolSupervisorState {
    /// Shared patrol state.
    ctx: Arc<PatrolContext>,
    /// The current book actor.
    book: ActorId,
    /// Guards against a book that fails on every start.
    budget: RestartBudget<&'static str>,
}

/// The ractor behaviour of the patrol supervisor.
#[derive(Clone)]
pub struct PatrolSupervisor;

async fn spawn_book(
    myself: &ActorRef<()>,
    ctx: &Arc<PatrolContext>,
) -> Result<ActorRef<BookMsg>, ActorProcessingErr> {
    let (book, _) =
        BookActor::spawn_linked(None, BookActor, ctx.clone(), myself.get_cell()).await?;
    if let Ok(mut slot) = ctx.book.lock() {
        *slot = Some(book.clone());
    }
    Ok(book)
}

impl Actor for PatrolSupervisor {
    type Msg = ();
    type State = PatrolSupervisorState;
    type Arguments = PatrolSupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<()>,
        args: PatrolSupervisorArgs,
    ) -> Result<PatrolSupervisorState, ActorProcessingErr> {
        // At zero from the start, so a dashboard shows "none" rather than "no data".
        metrics::counter!(crate::metrics::ACTOR_RESTARTS, "kind" => "patrol_book").increment(0);
        let book = spawn_book(&myself, &args.ctx).await?;
        if let Ok(mut slot) = args.slot.lock() {
            *slot = Some(myself.clone());
        }
        Ok(PatrolSupervisorState {
            ctx: args.ctx,
            book: book.get_id(),
            budget: RestartBudget::new(args.restart_budget, args.restart_window),
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<()>,
        st: &mut PatrolSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        if let Ok(mut slot) = st.ctx.book.lock() {
            *slot = None;
        }
        myself.stop_children(None);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        event: SupervisionEvent,
        st: &mut PatrolSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let SupervisionEvent::ActorFailed(cell, error) = event else {
            return Ok(());
        };
        let id = cell.get_id();
        if id != st.book {
            if let Some((_, (user, role))) = st.ctx.session_of.remove(&id) {
                tracing::error!(%user, "patrol session failed: {error}");
                st.ctx.forget_session(&user, role, id);
            }
            return Ok(());
        }
        if let Ok(mut slot) = st.ctx.book.lock() {
            *slot = None;
        }
        tracing::error!("patrol book failed: {error}");
        metrics::counter!(crate::metrics::ACTOR_RESTARTS, "kind" => "patrol_book").increment(1);
        if !st.budget.allow("book", Instant::now()) {
            tracing::error!("patrol book restart budget exhausted; patrol stays unavailable");
            return Ok(());
        }
        match spawn_book(&myself, &st.ctx).await {
            Ok(book) => st.book = book.get_id(),
            Err(e) => tracing::error!("patrol book could not restart: {e}"),
        }
        Ok(())
    }
}
