//! The mail supervisor: recovers every stored job into the directory and the schedule,
//! wakes jobs when they are due and their transport's breaker lets traffic through, and
//! supervises the job actors it spawns.
//!
//! In cluster mode it does all that only while this node holds the `mail` lease
//! ([`super::cluster`]): it tries to take it at start and every third of the lease's TTL
//! (a dead owner's lease lapses, and the first node to ask takes mission control over,
//! reading every job from the shared journal), and when the lease is lost it stops its job
//! actors and its schedule at once and forgets what it had read.
//!
//! It is also the scheduler: one timer for the earliest due job (a `BTreeMap`-like queue per
//! transport), instead of one timer or actor per waiting job. A job actor that fails is not
//! respawned at once; its job is rescheduled after the backoff base, like a failed attempt.

use super::actor::{JobActor, JobArgs, MailContext};
use super::breaker::Admission;
use super::cluster::{Outcome, LEASE};
use super::idempotency::EnvelopeKey;
use super::job::{JobEvent, JobSummary, MailJobState, TransportKind};
use super::message::JobId;
use super::msg::JobMsg;
use super::msg::MailSupervisorMsg;
use super::schedule::Schedule;
use super::KIND;
use crate::actors::slot::SupervisorSlot;
use crate::cluster::mail_bus::DUPLICATE_WINDOW;
use crate::cluster::Taken;
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
    /// Whether this node runs mission control now (always on one node; in cluster mode
    /// while it holds the `mail` lease and has read the jobs).
    owner: bool,
    /// Cluster mode: relays lost leases into this supervisor's mailbox.
    lease_watch: Option<tokio::task::JoinHandle<()>>,
    /// Cluster mode: the periodic `Claim`.
    claim_timer: Option<tokio::task::JoinHandle<()>>,
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

    /// Reads every stored job and runs mission control from now on.
    fn take_over(&mut self) -> Result<(), ActorProcessingErr> {
        let mut schedule = Schedule::default();
        let jobs = recover(&self.ctx, &mut schedule)?;
        tracing::info!(jobs, waiting = schedule.len(), "mail jobs recovered");
        self.schedule = schedule;
        self.owner = true;
        self.ctx.owning.send_replace(true);
        Ok(())
    }

    /// Cluster mode: takes the `mail` lease if nobody holds it and then takes mission
    /// control over (true: taken now, the schedule wants a dispatch); notices a lease of
    /// this node's that lapsed unannounced.
    async fn claim(&mut self) -> bool {
        let Some(cluster) = self.ctx.cluster.clone() else {
            return false;
        };
        if self.owner {
            if !cluster.leases.holds(LEASE) {
                self.release();
            }
            return false;
        }
        match cluster.leases.take(LEASE).await {
            Ok(Taken::Here) => {}
            Ok(Taken::ElseWhere(_)) => return false,
            Err(e) => {
                tracing::debug!("mail lease not decided: {e}");
                return false;
            }
        }
        match self.take_over() {
            Ok(()) => {
                tracing::info!("mission control runs on this node (mail lease taken)");
                true
            }
            Err(e) => {
                // Another node may do better; this one tries again at the next claim.
                tracing::error!("mail jobs not recovered; mail lease given up: {e}");
                self.release();
                cluster.leases.give_up(LEASE).await;
                false
            }
        }
    }

    /// Cluster mode: the `mail` lease is lost, so mission control stops here now, before
    /// the new owner sends anything: job actors killed (an attempt in flight is dropped,
    /// and its job, still `sending` in the journal, is attempted again by the new owner
    /// with the same Message-ID), the schedule and what was read forgotten.
    fn release(&mut self) {
        if self.owner {
            tracing::warn!("mail lease lost: mission control no longer runs on this node");
        }
        self.owner = false;
        self.ctx.owning.send_replace(false);
        if let Some((_, handle)) = self.timer.take() {
            handle.abort();
        }
        for (id, actor) in self.ctx.jobs.entries(|_| true) {
            self.ctx.jobs.remove_if(&id, actor.get_id());
            actor.kill();
        }
        self.schedule = Schedule::default();
        self.awake.clear();
        self.ctx.forget_all();
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
        let summary = job.summary();
        if ended_lately(&summary, now) {
            // Its announcement may have been cut short by its owner's death; one that was
            // not is dropped by JetStream as a duplicate.
            ctx.announce(&summary);
        }
        ctx.publish(summary);
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

/// Whether `summary` ended (sent or dead) recently enough at `now` that JetStream still
/// remembers its outcome's `Nats-Msg-Id`, so announcing it again is safe.
fn ended_lately(summary: &JobSummary, now: UnixMillis) -> bool {
    let window = i64::try_from(DUPLICATE_WINDOW.as_millis()).unwrap_or(i64::MAX);
    // Half the window: the dead owner's clock may run ahead of this node's.
    Outcome::of(summary).is_some_and(|o| o.at_ms >= now.saturating_sub(window / 2))
}

/// Cluster mode: relays every lease this node loses into the supervisor's mailbox.
fn watch_leases(
    leases: &crate::cluster::Leases,
    supervisor: &ActorRef<MailSupervisorMsg>,
) -> tokio::task::JoinHandle<()> {
    use tokio::sync::broadcast::error::RecvError;
    let mut lost = leases.lost();
    let supervisor = supervisor.clone();
    tokio::spawn(async move {
        loop {
            let told = match lost.recv().await {
                Ok(key) if key == LEASE => supervisor.cast(MailSupervisorMsg::LeaseLost { key }),
                Ok(_) => Ok(()),
                Err(RecvError::Lagged(_)) => supervisor.cast(MailSupervisorMsg::LeasesUnknown),
                Err(RecvError::Closed) => return,
            };
            if told.is_err() {
                return;
            }
        }
    })
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
        let mut state = MailSupervisorState {
            ctx: args.ctx,
            children: HashMap::new(),
            awake: HashMap::new(),
            schedule: Schedule::default(),
            timer: None,
            owner: false,
            lease_watch: None,
            claim_timer: None,
        };
        match state.ctx.cluster.clone() {
            // One node: it always runs mission control; a failed recovery fails the start.
            None => state.take_over()?,
            Some(cluster) => {
                state.lease_watch = Some(watch_leases(&cluster.leases, &myself));
                let every = cluster.leases.ttl() / 3;
                state.claim_timer = Some(myself.send_interval(every, || MailSupervisorMsg::Claim));
                // Jobs are woken in `post_start`, once this supervisor runs.
                state.claim().await;
                if !state.owner {
                    tracing::info!("mission control runs on another node (mail lease held)");
                }
            }
        }
        args.slot.publish(myself);
        Ok(state)
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
        for task in [state.lease_watch.take(), state.claim_timer.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        myself.stop_children(None);
        // Another node may take mission control over at once instead of after the TTL.
        if let (true, Some(cluster)) = (state.owner, &state.ctx.cluster) {
            state.owner = false;
            state.ctx.owning.send_replace(false);
            cluster.leases.give_up(LEASE).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<MailSupervisorMsg>,
        message: MailSupervisorMsg,
        state: &mut MailSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MailSupervisorMsg::Spawn { reply, .. } if !state.owner => {
                let _ = reply.send(Err(Rejection::new(
                    ErrorCode::Unavailable,
                    "mission control does not run on this node now; retry",
                )));
            }
            MailSupervisorMsg::Schedule { .. }
            | MailSupervisorMsg::Settled { .. }
            | MailSupervisorMsg::Tick
                if !state.owner => {}
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
            MailSupervisorMsg::Claim => {
                if state.claim().await {
                    state.dispatch(&myself).await;
                }
            }
            MailSupervisorMsg::LeaseLost { key } => {
                if key == LEASE {
                    state.release();
                }
            }
            MailSupervisorMsg::LeasesUnknown => {
                let held = state.ctx.cluster.as_ref().map(|c| c.leases.holds(LEASE));
                if held == Some(false) {
                    state.release();
                }
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
        if !state.owner {
            // Killed when the lease was lost: the new owner has the job.
            return Ok(());
        }
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
