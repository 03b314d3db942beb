//! The mail supervisor: recovers every stored job into the directory and the schedule,
//! wakes jobs when they are due and their transport's breaker lets traffic through, and
//! supervises the job actors it spawns.
//!
//! It is also the scheduler: one timer for the earliest due job (a `BTreeMap`-like queue per
//! transport), instead of one timer or actor per waiting job. A job actor that fails is not
//! respawned at once; its job is rescheduled after the backoff base, like a failed attempt.

use super::actor::{JobActor, JobArgs, MailContext};
use super::breaker::Admission;
use super::idempotency::EnvelopeKey;
use super::job::{JobEvent, MailJobState, TransportKind};
use super::message::JobId;
use super::msg::JobMsg;
use super::msg::MailSupervisorMsg;
use super::schedule::Schedule;
use super::KIND;
use crate::actors::slot::SupervisorSlot;
use crate::error::{ErrorCode, Rejection};
use crate::time::UnixMillis;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Spawn arguments of the mail supervisor; cloned by the root to restart it.
#[derive(Clone)]
pub struct MailSupervisorArgs {
    /// Where the running supervisor publishes itself for the facade.
    pub slot: SupervisorSlot<MailSupervisorMsg>,
    /// Shared with every job actor.
    pub ctx: Arc<MailContext>,
}

/// The supervisor's state.
pub struct MailSupervisorState {
    /// Shared with every job actor.
    ctx: Arc<MailContext>,
    /// Which job each live actor serves.
    children: HashMap<ActorId, JobId>,
    /// Jobs woken for an attempt and not settled yet, with their lane.
    awake: HashMap<JobId, TransportKind>,
    /// Waiting jobs by due time, per transport.
    schedule: Schedule,
    /// The pending wake-up and its time.
    timer: Option<(UnixMillis, Wakeup)>,
}

/// The pending `Tick` of the schedule.
type Wakeup = tokio::task::JoinHandle<Result<(), ractor::MessagingErr<MailSupervisorMsg>>>;

/// The ractor behaviour of the mail supervisor.
#[derive(Clone)]
pub struct MailSupervisor;

impl MailSupervisorState {
    async fn spawn_job(
        &mut self,
        myself: &ActorRef<MailSupervisorMsg>,
        id: JobId,
    ) -> Result<ActorRef<JobMsg>, ActorProcessingErr> {
        if let Some(actor) = self.ctx.jobs.get(&id) {
            return Ok(actor);
        }
        let args = JobArgs {
            id: id.clone(),
            ctx: self.ctx.clone(),
            supervisor: myself.clone(),
        };
        let (actor, _) = JobActor::spawn_linked(None, JobActor, args, myself.get_cell()).await?;
        self.children.insert(actor.get_id(), id.clone());
        self.ctx.jobs.insert(id, actor.clone());
        Ok(actor)
    }

    /// Wakes every due job whose lane has room and whose breaker admits it, then arms the
    /// timer for the next wake-up.
    async fn dispatch(&mut self, myself: &ActorRef<MailSupervisorMsg>) {
        let now = self.ctx.clock.now_ms();
        let gates: Vec<_> = self.ctx.gates.values().cloned().collect();
        for gate in gates {
            loop {
                let lane = self.schedule.lane(gate.kind);
                if lane.in_flight >= gate.concurrency() {
                    break;
                }
                if let Some(until) = lane.blocked_until {
                    if now < until {
                        break;
                    }
                    lane.blocked_until = None;
                }
                let Some(id) = lane.peek_due(now).cloned() else {
                    break;
                };
                let due = self
                    .ctx
                    .directory
                    .get(&id)
                    .and_then(|s| s.status.due_at(now))
                    .is_some_and(|d| d <= now);
                if !due || self.awake.contains_key(&id) || self.ctx.jobs.get(&id).is_some() {
                    // A stale entry (already sent, rescheduled later, or busy).
                    lane.pop();
                    continue;
                }
                if let Admission::Rejected { retry_at_ms } = gate.admit(now) {
                    lane.blocked_until = Some(i64::try_from(retry_at_ms).unwrap_or(i64::MAX));
                    break;
                }
                lane.pop();
                lane.in_flight += 1;
                self.awake.insert(id.clone(), gate.kind);
                let woke = match self.spawn_job(myself, id.clone()).await {
                    Ok(actor) => actor.cast(JobMsg::Attempt).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = woke {
                    tracing::error!(job = %id, "mail job could not be woken: {e}");
                    self.settle(
                        &id,
                        Some(now.saturating_add(self.ctx.backoff.base_ms as i64)),
                    );
                }
            }
        }
        self.arm(myself);
    }

    /// A woken job is done with its attempt.
    fn settle(&mut self, id: &JobId, due_ms: Option<UnixMillis>) {
        if let Some(kind) = self.awake.remove(id) {
            let lane = self.schedule.lane(kind);
            lane.in_flight = lane.in_flight.saturating_sub(1);
            if let Some(due) = due_ms {
                self.schedule.push(kind, due, id.clone());
            }
        }
    }

    /// Makes sure a wake-up is pending for the earliest time the schedule needs one.
    fn arm(&mut self, myself: &ActorRef<MailSupervisorMsg>) {
        let gates = &self.ctx.gates;
        let Some(next) = self
            .schedule
            .next_wake(|kind| gates.get(&kind).map_or(0, |g| g.concurrency()))
        else {
            return;
        };
        if let Some((at, handle)) = &self.timer {
            if *at <= next && !handle.is_finished() {
                return;
            }
        }
        if let Some((_, handle)) = self.timer.take() {
            handle.abort();
        }
        let wait = u64::try_from(next.saturating_sub(self.ctx.clock.now_ms())).unwrap_or(0);
        let handle = myself.send_after(Duration::from_millis(wait), || MailSupervisorMsg::Tick);
        self.timer = Some((next, handle));
    }
}

/// Reads every stored job into the directory, the idempotency window, the contact book and
/// the schedule; no actor is started.
fn recover(ctx: &MailContext, schedule: &mut Schedule) -> Result<usize, ActorProcessingErr> {
    let now = ctx.clock.now_ms();
    let mut count = 0;
    let mut window = ctx.window.lock().unwrap_or_else(|e| e.into_inner());
    let mut contacts = ctx.contacts.lock().unwrap_or_else(|e| e.into_inner());
    // Envelope → (first acceptance, messages it carried, jobs found).
    let mut envelopes: HashMap<EnvelopeKey, (UnixMillis, u32, Vec<JobId>)> = HashMap::new();
    for key in ctx.journal.actors(KIND)? {
        let restored = ctx
            .journal
            .restore::<MailJobState, JobEvent>(&key, MailJobState::apply)?;
        let Some(job) = restored.state.job else {
            continue;
        };
        let origin = &job.origin;
        let envelope = envelopes
            .entry(EnvelopeKey {
                correlation: origin.correlation.clone(),
                sequence: origin.sequence,
            })
            .or_insert_with(|| (job.accepted_at_ms, origin.of, Vec::new()));
        envelope.0 = envelope.0.min(job.accepted_at_ms);
        envelope.2.push(job.id.clone());
        if let Some(contact) = &origin.contact {
            contacts.update(contact, &job.message.to, origin.sent_at_ms);
        }
        if let Some(due) = job.status.due_at(now) {
            schedule.push(job.transport, due, job.id.clone());
        }
        ctx.publish(job.summary());
        count += 1;
    }
    // Only envelopes stored whole are remembered; a resubmission of one cut short by a
    // crash is processed again, finding the stored jobs by their derived ids.
    let mut envelopes: Vec<_> = envelopes.into_iter().collect();
    envelopes.sort_by_key(|(_, (at, _, _))| *at);
    for (key, (at, of, ids)) in envelopes {
        if ids.len() == of as usize {
            window.record(key, ids, at);
        }
    }
    window.expire(now);
    Ok(count)
}

impl Actor for MailSupervisor {
    type Msg = MailSupervisorMsg;
    type State = MailSupervisorState;
    type Arguments = MailSupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<MailSupervisorMsg>,
        args: MailSupervisorArgs,
    ) -> Result<MailSupervisorState, ActorProcessingErr> {
        let mut schedule = Schedule::default();
        let jobs = recover(&args.ctx, &mut schedule)?;
        tracing::info!(jobs, waiting = schedule.len(), "mail jobs recovered");
        args.slot.publish(myself);
        Ok(MailSupervisorState {
            ctx: args.ctx,
            children: HashMap::new(),
            awake: HashMap::new(),
            schedule,
            timer: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<MailSupervisorMsg>,
        state: &mut MailSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        state.dispatch(&myself).await;
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<MailSupervisorMsg>,
        state: &mut MailSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((_, handle)) = state.timer.take() {
            handle.abort();
        }
        myself.stop_children(None);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<MailSupervisorMsg>,
        message: MailSupervisorMsg,
        state: &mut MailSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MailSupervisorMsg::Spawn { id, reply } => {
                let outcome = state.spawn_job(&myself, id.clone()).await.map_err(|e| {
                    tracing::error!(job = %id, "mail job actor did not start: {e}");
                    Rejection::new(
                        ErrorCode::Unavailable,
                        format!("mail job {id} could not be started"),
                    )
                });
                let _ = reply.send(outcome);
            }
            MailSupervisorMsg::Schedule {
                id,
                transport,
                due_ms,
            } => {
                state.schedule.push(transport, due_ms, id);
                state.dispatch(&myself).await;
            }
            MailSupervisorMsg::Settled {
                id,
                transport,
                due_ms,
            } => {
                if state.awake.contains_key(&id) {
                    state.settle(&id, due_ms);
                } else if let Some(due) = due_ms {
                    // Its termination was handled first; a duplicate entry is skipped later.
                    state.schedule.push(transport, due, id);
                }
                state.dispatch(&myself).await;
            }
            MailSupervisorMsg::Tick => {
                state.timer = None;
                state.dispatch(&myself).await;
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<MailSupervisorMsg>,
        event: SupervisionEvent,
        state: &mut MailSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (which, failure) = match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell.get_id(), None),
            SupervisionEvent::ActorFailed(cell, error) => (cell.get_id(), Some(error.to_string())),
            _ => return Ok(()),
        };
        let Some(id) = state.children.remove(&which) else {
            return Ok(());
        };
        state.ctx.jobs.remove_if(&id, which);
        // Supervision events overtake ordinary messages, so this may come before the job's
        // own `Settled`: the directory (published before the actor stopped) says what is due.
        let now = state.ctx.clock.now_ms();
        let due = match &failure {
            Some(error) => {
                tracing::error!(job = %id, "mail job actor failed: {error}");
                Some(now.saturating_add(state.ctx.backoff.base_ms as i64))
            }
            None => state
                .ctx
                .directory
                .get(&id)
                .and_then(|s| s.status.due_at(now)),
        };
        if state.awake.contains_key(&id) {
            state.settle(&id, due);
        } else if let Some(due) = due {
            let transport = state.ctx.directory.get(&id).map(|s| s.transport);
            if let Some(transport) = transport {
                state.schedule.push(transport, due, id);
            }
        }
        state.dispatch(&myself).await;
        Ok(())
    }
}
