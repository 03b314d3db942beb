//! The mail job actor: one per job, alive only while the job has something to do.
//!
//! It is spawned to accept a job, to make one attempt, or to re-drive it; it journals every
//! transition (and waits for the flush) before it replies or reports, then stops. A job
//! waiting for its retry is only a directory entry and a line in the supervisor's schedule,
//! so 100,000 waiting jobs cost no task, no actor and no socket.

use super::backoff::{Backoff, JitterSource};
use super::cluster::{MailCluster, Outcome};
use super::contacts::ContactBook;
use super::gate::Gate;
use super::idempotency::IdempotencyWindow;
use super::job::{JobCommand, JobInputs, JobStatus, JobSummary, MailJobState, TransportKind};
use super::message::JobId;
use super::msg::JobMsg;
use super::msg::MailSupervisorMsg;
use super::transport::Outgoing;
use super::KIND;
use crate::actors::clock::Clock;
use crate::actors::journaled::{Journaled, SnapshotPolicy};
use crate::actors::registry::Registry;
use crate::error::{ErrorCode, Rejection};
use crate::metrics as m;
use crate::persist::{ActorKey, Compaction, Journal};
use dashmap::DashMap;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What every mail job actor, the supervisor and the facade share.
pub struct MailContext {
    /// Journals transitions.
    pub journal: Journal,
    /// The domain's clock (pausable in tests).
    pub clock: Clock,
    /// The retry policy.
    pub backoff: Backoff,
    /// Where retry jitter comes from.
    pub jitter: JitterSource,
    /// From mailbox of every mail.
    pub from: String,
    /// Right-hand side of Message-IDs.
    pub message_id_domain: String,
    /// Transport of new jobs.
    pub default_transport: TransportKind,
    /// Every transport behind its breaker.
    pub gates: HashMap<TransportKind, Arc<Gate>>,
    /// Every job's summary, read by status/list without loading or waking jobs.
    pub directory: DashMap<JobId, JobSummary>,
    /// Live job actors.
    pub jobs: Registry<JobId, JobMsg>,
    /// Envelopes seen within the retention and the jobs they made.
    pub window: Mutex<IdempotencyWindow<Vec<JobId>>>,
    /// Contacts' newest addresses (the stale-update rule).
    pub contacts: Mutex<ContactBook>,
    /// How long the window remembers an envelope, to start it afresh.
    pub retention_ms: i64,
    /// Cluster mode: the `mail` lease and mission control's stream (`None`: one node).
    pub cluster: Option<MailCluster>,
    /// Whether this node runs mission control now (always, on one node): set by the
    /// supervisor, watched by the reader of submitted envelopes.
    pub owning: tokio::sync::watch::Sender<bool>,
}

impl MailContext {
    /// Records `summary` in the directory and moves the jobs-by-state gauge.
    pub fn publish(&self, summary: JobSummary) {
        let new = summary.status.name();
        if let Some(old) = self.directory.insert(summary.id.clone(), summary) {
            metrics::gauge!(m::MAIL_JOBS, "state" => old.status.name()).decrement(1.0);
        }
        metrics::gauge!(m::MAIL_JOBS, "state" => new).increment(1.0);
    }

    /// Cluster mode: announces a job that has ended on the outcomes subject, in the
    /// background (the job's own journal is what counts; a lost announcement is logged).
    pub fn announce(&self, summary: &JobSummary) {
        let (Some(cluster), Some(outcome)) = (&self.cluster, Outcome::of(summary)) else {
            return;
        };
        let bus = cluster.bus.clone();
        tokio::spawn(async move {
            let published = match serde_json::to_vec(&outcome) {
                Ok(payload) => bus.outcome(&outcome.message_id(), payload).await,
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = published {
                tracing::warn!(job = %outcome.job, "mail outcome not announced: {e}");
            }
        });
    }

    /// Forgets every job, envelope and contact (this node no longer runs mission control:
    /// the next owner has them, and this node reads them again if it owns it again).
    pub fn forget_all(&self) {
        for entry in self.directory.iter() {
            let state = entry.value().status.name();
            metrics::gauge!(m::MAIL_JOBS, "state" => state).decrement(1.0);
        }
        self.directory.clear();
        *self.window.lock().unwrap_or_else(|e| e.into_inner()) =
            IdempotencyWindow::new(self.retention_ms);
        *self.contacts.lock().unwrap_or_else(|e| e.into_inner()) = ContactBook::default();
    }
}

/// Spawn arguments.
pub struct JobArgs {
    /// The job.
    pub id: JobId,
    /// Shared context.
    pub ctx: Arc<MailContext>,
    /// Where to report schedules and outcomes.
    pub supervisor: ActorRef<MailSupervisorMsg>,
}

/// The actor's state.
pub struct JobActorState {
    /// The job.
    id: JobId,
    /// The rules' state, journaled (never snapshotted: a job's life is a few events).
    job: Journaled<MailJobState>,
    /// Shared context.
    ctx: Arc<MailContext>,
    /// The supervisor.
    supervisor: ActorRef<MailSupervisorMsg>,
}

/// The ractor behaviour of a mail job.
pub struct JobActor;

impl Actor for JobActor {
    type Msg = JobMsg;
    type State = JobActorState;
    type Arguments = JobArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<JobMsg>,
        args: JobArgs,
    ) -> Result<JobActorState, ActorProcessingErr> {
        let job = Journaled::recover(
            args.ctx.journal.clone(),
            ActorKey::new(KIND, args.id.as_str()),
            SnapshotPolicy {
                every: 0,
                compaction: Compaction::Delete,
            },
        )?;
        Ok(JobActorState {
            id: args.id,
            job,
            ctx: args.ctx,
            supervisor: args.supervisor,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<JobMsg>,
        message: JobMsg,
        st: &mut JobActorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            JobMsg::Accept {
                origin,
                message,
                transport,
                reply,
            } => {
                let command = JobCommand::Accept {
                    id: st.id.clone(),
                    origin,
                    message,
                    transport,
                };
                let outcome = execute(st, command).await;
                if outcome.is_ok() {
                    schedule(st);
                }
                let _ = reply.send(outcome);
            }
            JobMsg::Redrive { reply } => {
                let outcome = execute(st, JobCommand::Redrive).await;
                if outcome.is_ok() {
                    schedule(st);
                }
                let _ = reply.send(outcome);
            }
            JobMsg::Attempt => attempt(st).await,
        }
        // Passivate: the journal holds the job; the schedule wakes it when it is due.
        myself.stop(None);
        Ok(())
    }
}

/// Hands the job's next due time to the scheduler.
fn schedule(st: &JobActorState) {
    if let Some(job) = &st.job.state().job {
        if let Some(due) = job.status.due_at(st.ctx.clock.now_ms()) {
            let _ = st.supervisor.cast(MailSupervisorMsg::Schedule {
                id: st.id.clone(),
                transport: job.transport,
                due_ms: due,
            });
        }
    }
}

/// One attempt: journal its start, send through the gate, journal the outcome, report.
async fn attempt(st: &mut JobActorState) {
    let Some(transport) = st.job.state().job.as_ref().map(|j| j.transport) else {
        return;
    };
    let settled = |st: &JobActorState, due_ms: Option<i64>| {
        let _ = st.supervisor.cast(MailSupervisorMsg::Settled {
            id: st.id.clone(),
            transport,
            due_ms,
        });
    };
    if let Err(e) = execute(st, JobCommand::Begin).await {
        // Not due (already sent, dead) or the journal failed: report, and retry a failed
        // write a little later.
        let due = (e.code == ErrorCode::Unavailable).then(|| {
            st.ctx
                .clock
                .now_ms()
                .saturating_add(st.ctx.backoff.base_ms as i64)
        });
        settled(st, due);
        return;
    }
    let Some(job) = st.job.state().job.clone() else {
        return;
    };
    let Some(gate) = st.ctx.gates.get(&transport).cloned() else {
        settled(st, None);
        return;
    };
    let message_id = st.id.message_id(&st.ctx.message_id_domain);
    let mail = Outgoing {
        from: &st.ctx.from,
        to: &job.message.to,
        subject: &job.message.subject,
        body: &job.message.body,
        message_id: &message_id,
        idempotency_key: st.id.as_str(),
    };
    let clock = st.ctx.clock;
    let command = match gate.send(mail, || clock.now_ms()).await {
        Ok(()) => JobCommand::Succeed,
        Err(e) => {
            tracing::warn!(job = %st.id, attempt = job.attempts, "mail attempt failed: {e}");
            JobCommand::Fail {
                error: e.message,
                permanent: e.permanent,
            }
        }
    };
    let due = match execute(st, command).await {
        Ok(summary) => {
            st.ctx.announce(&summary);
            summary.status.due_at(st.ctx.clock.now_ms())
        }
        // The outcome is not stored: the job is still Sending and will be attempted again
        // (same Message-ID), which the receiver can deduplicate.
        Err(_) => Some(
            st.ctx
                .clock
                .now_ms()
                .saturating_add(st.ctx.backoff.base_ms as i64),
        ),
    };
    if let Some(JobStatus::Dead { .. }) = st.job.state().job.as_ref().map(|j| j.status) {
        tracing::error!(job = %st.id, "mail job dead-lettered after {} attempts", job.attempts);
    }
    settled(st, due);
}

/// Decide, persist, apply (the journaled shell), then publish the job's new summary.
async fn execute(st: &mut JobActorState, command: JobCommand) -> Result<JobSummary, Rejection> {
    let mut jitter = st.ctx.jitter;
    let inputs = JobInputs {
        now_ms: st.ctx.clock.now_ms(),
        backoff: &st.ctx.backoff,
        jitter: &mut jitter,
    };
    let decision = st
        .job
        .execute(command, inputs, "the mail job could not be stored; retry")
        .await?;
    let job = st
        .job
        .state()
        .job
        .as_ref()
        .ok_or_else(|| Rejection::internal("mail job vanished after an accepted command"))?;
    let summary = job.summary();
    if !decision.events.is_empty() {
        st.ctx.publish(summary.clone());
    }
    Ok(summary)
}
