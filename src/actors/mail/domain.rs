//! The mail domain's facade: what the API layer and other domains call. Envelopes are
//! checked against the idempotency window, contacts against the stale-update rule, and each
//! message becomes a job with a derived id, accepted (durably) by its own actor.
//!
//! In cluster mode ([`super::cluster`]) a submission is published on mission control's
//! stream instead, acknowledged by JetStream, and answered with its jobs as accepted; the
//! node that owns mission control reads the stream and accepts them as above.

use super::actor::MailContext;
use super::backoff::{Backoff, JitterSource};
use super::breaker::{BreakerPolicy, BreakerState};
use super::cluster::{envelope_message_id, MailCluster};
use super::contacts::{ContactBook, Update};
use super::gate::Gate;
use super::idempotency::{EnvelopeKey, IdempotencyWindow};
use super::job::{
    FailedAttempt, Job, JobEvent, JobStatus, JobSummary, MailJobState, Origin, TransportKind,
};
use super::message::{JobId, MailMessage};
use super::msg::JobMsg;
use super::msg::MailSupervisorMsg;
use super::supervisor::{MailSupervisor, MailSupervisorArgs};
use super::transport::MailTransport;
use super::KIND;
use crate::actors::ask::{ask, ask_or, unanswered};
use crate::actors::clock::Clock;
use crate::actors::registry::Registry;
use crate::actors::root::{start_domain, DomainSpec, RootMsg};
use crate::actors::slot::SupervisorSlot;
use crate::config::Config;
use crate::error::{ErrorCode, Rejection};
use crate::ids::validate_id;
use crate::persist::{ActorKey, Journal};
use crate::time::UnixMillis;
use dashmap::DashMap;
use ractor::ActorRef;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most messages one envelope may carry.
pub const MAX_MESSAGES_PER_ENVELOPE: usize = 1_000;
/// Most rows one listing returns.
pub const MAX_LIST: usize = 10_000;

/// One message of an envelope (serialised as mission control's stream carries it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvelopeMessage {
    /// What to send.
    pub message: MailMessage,
    /// The contact whose address `message.to` is, as of the envelope's sent-at.
    pub contact: Option<String>,
}

/// What another system (or domain) submits: processed once per (correlation, sequence).
/// In cluster mode it travels as JSON on mission control's stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MailRequest {
    /// The submitter's correlation id.
    pub correlation: String,
    /// Its sequence number within the correlation.
    pub sequence: u64,
    /// When the submitter sent it (its clock).
    pub sent_at_ms: UnixMillis,
    /// The mails.
    pub messages: Vec<EnvelopeMessage>,
}

/// A job with its failed attempts and Message-ID.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDetail {
    /// The summary.
    pub summary: JobSummary,
    /// The Message-ID every attempt carries.
    pub message_id: String,
    /// The failed attempts, oldest first.
    pub failures: Vec<FailedAttempt>,
}

/// One line of the failed-message log.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedEntry {
    /// The job.
    pub id: JobId,
    /// The recipient.
    pub to: String,
    /// The failure.
    pub failure: FailedAttempt,
}

/// Mail settings from configuration, plus what tests inject.
#[derive(Clone)]
pub struct MailSettings {
    /// Retry policy.
    pub backoff: Backoff,
    /// Jitter source (fixed in tests).
    pub jitter: JitterSource,
    /// Breaker policy, the same for each transport.
    pub breaker: BreakerPolicy,
    /// From mailbox.
    pub from: String,
    /// Message-ID domain.
    pub message_id_domain: String,
    /// Transport of new jobs.
    pub default_transport: TransportKind,
    /// Envelope retention.
    pub retention: Duration,
    /// SMTP concurrency.
    pub smtp_concurrency: u32,
    /// HTTP concurrency.
    pub http_concurrency: u32,
    /// How long to wait for an actor.
    pub call_timeout: Duration,
}

impl MailSettings {
    /// Reads `[mail]` (validated already).
    pub fn from_config(config: &Config) -> MailSettings {
        let m = &config.mail;
        let ms = Duration::from_millis;
        MailSettings {
            backoff: m.backoff,
            jitter: JitterSource::Os,
            breaker: m.breaker,
            from: m.from.clone(),
            message_id_domain: m.message_id_domain.clone(),
            default_transport: TransportKind::parse(&m.transport).unwrap_or(TransportKind::Smtp),
            retention: Duration::from_secs(m.idempotency_retention_secs),
            smtp_concurrency: m.smtp_concurrency,
            http_concurrency: m.http_concurrency,
            call_timeout: ms(config.supervision.call_timeout_ms),
        }
    }
}

/// Handle to the running mail domain.
#[derive(Clone)]
pub struct MailDomain {
    /// Shared with the supervisor and every job actor.
    ctx: Arc<MailContext>,
    /// The current supervisor incarnation.
    supervisor: SupervisorSlot<MailSupervisorMsg>,
    /// How long to wait for an actor.
    call_timeout: Duration,
}

impl MailDomain {
    /// Puts each of `transports` behind its breaker and starts the mail supervisor under
    /// `root`, which recovers every stored job (without waking any) before this returns.
    pub async fn start(
        root: &ActorRef<RootMsg>,
        journal: Journal,
        settings: MailSettings,
        transports: HashMap<TransportKind, Arc<dyn MailTransport>>,
    ) -> Result<MailDomain, String> {
        MailDomain::start_in(root, journal, settings, transports, None).await
    }

    /// As [`MailDomain::start`], on cluster node `node` when there is one: mission control
    /// then runs here only while this node holds the `mail` lease, and submissions go
    /// through mission control's stream (created here if it does not exist).
    pub async fn start_in(
        root: &ActorRef<RootMsg>,
        journal: Journal,
        settings: MailSettings,
        transports: HashMap<TransportKind, Arc<dyn MailTransport>>,
        node: Option<crate::cluster::Node>,
    ) -> Result<MailDomain, String> {
        let cluster = match node {
            Some(node) => Some(MailCluster {
                bus: crate::cluster::mail_bus::MailBus::start(&node.link)
                    .await
                    .map_err(|e| format!("mission control stream: {e}"))?,
                leases: node.leases,
            }),
            None => None,
        };
        let gates = transports
            .into_iter()
            .map(|(kind, transport)| {
                let concurrency = match kind {
                    TransportKind::Smtp => settings.smtp_concurrency,
                    TransportKind::Http => settings.http_concurrency,
                };
                let gate = Gate::new(kind, transport, settings.breaker, concurrency);
                (kind, Arc::new(gate))
            })
            .collect();
        let retention = i64::try_from(settings.retention.as_millis()).unwrap_or(i64::MAX);
        let ctx = Arc::new(MailContext {
            journal,
            clock: Clock::new(),
            backoff: settings.backoff,
            jitter: settings.jitter,
            from: settings.from,
            message_id_domain: settings.message_id_domain,
            default_transport: settings.default_transport,
            gates,
            directory: DashMap::new(),
            jobs: Registry::new(KIND),
            window: Mutex::new(IdempotencyWindow::new(retention)),
            contacts: Mutex::new(ContactBook::default()),
            retention_ms: retention,
            cluster: cluster.clone(),
            owning: tokio::sync::watch::channel(false).0,
        });
        let supervisor = SupervisorSlot::new("mail");
        let args = MailSupervisorArgs {
            slot: supervisor.clone(),
            ctx: ctx.clone(),
        };
        start_domain(root, DomainSpec::new("mail", MailSupervisor, args)).await?;
        let domain = MailDomain {
            ctx,
            supervisor,
            call_timeout: settings.call_timeout,
        };
        if let Some(cluster) = cluster {
            tokio::spawn(read_submissions(domain.clone(), cluster));
        }
        Ok(domain)
    }

    /// Whether envelope (`correlation`, `sequence`) was submitted within the idempotency
    /// retention: a caller that submits in order learns from its last envelope whether all
    /// went, without building them again.
    pub fn submitted(&self, correlation: &str, sequence: u64) -> bool {
        let key = EnvelopeKey {
            correlation: correlation.to_owned(),
            sequence,
        };
        let now = self.ctx.clock.now_ms();
        self.ctx
            .window
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check(&key, now)
            .is_some()
    }

    /// Submits an envelope: validated, deduplicated by (correlation, sequence) within the
    /// retention, and each message accepted durably as a job before this returns. A
    /// duplicate gets the jobs the first submission made, as they are now.
    ///
    /// In cluster mode: validated, then stored on mission control's stream (durable once
    /// JetStream acknowledges it), and answered with its jobs as accepted; the owner of
    /// mission control accepts them from the stream, deduplicated as above.
    pub async fn submit(&self, request: MailRequest) -> Result<Vec<JobSummary>, Rejection> {
        check_envelope(&request)?;
        let Some(cluster) = &self.ctx.cluster else {
            return self.accept_envelope(request).await;
        };
        let payload = serde_json::to_vec(&request)
            .map_err(|e| Rejection::internal(format!("the envelope could not be encoded: {e}")))?;
        let message_id = envelope_message_id(&request.correlation, request.sequence);
        cluster
            .bus
            .submit(&message_id, payload)
            .await
            .map_err(|e| {
                tracing::warn!(envelope = %message_id, "mail envelope not stored: {e}");
                Rejection::new(
                    ErrorCode::Unavailable,
                    "mission control could not store the envelope; submit again (duplicates \
                     are ignored)",
                )
            })?;
        Ok(accepted_jobs(
            &request,
            self.ctx.default_transport,
            self.ctx.clock.now_ms(),
        ))
    }

    /// Cluster mode: handles one envelope read from mission control's stream on the owner;
    /// `true` when it is done with for good (its jobs journaled, or refused for a reason
    /// that no retry changes), `false` to have it delivered again.
    async fn take_delivery(&self, payload: &[u8]) -> bool {
        let request: MailRequest = match serde_json::from_slice(payload) {
            Ok(request) => request,
            Err(e) => {
                tracing::error!("an unreadable envelope on mission control's stream dropped: {e}");
                return true;
            }
        };
        let envelope = envelope_message_id(&request.correlation, request.sequence);
        if let Err(refused) = check_envelope(&request) {
            tracing::error!(%envelope, "a submitted envelope refused: {}", refused.message);
            return true;
        }
        match self.accept_envelope(request).await {
            Ok(_) => true,
            Err(refused)
                if matches!(refused.code, ErrorCode::Unavailable | ErrorCode::Internal) =>
            {
                tracing::warn!(%envelope, "a submitted envelope waits: {}", refused.message);
                false
            }
            Err(refused) => {
                tracing::error!(%envelope, "a submitted envelope refused: {}", refused.message);
                true
            }
        }
    }

    /// Accepts a checked envelope's jobs here (one node, or the owner of mission control).
    async fn accept_envelope(&self, request: MailRequest) -> Result<Vec<JobSummary>, Rejection> {
        let key = EnvelopeKey {
            correlation: request.correlation.clone(),
            sequence: request.sequence,
        };
        let now = self.ctx.clock.now_ms();
        let seen = self
            .ctx
            .window
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check(&key, now);
        if let Some(ids) = seen {
            return Ok(self.summaries(&ids));
        }
        let of = u32::try_from(request.messages.len()).unwrap_or(u32::MAX);
        let mut accepts = Vec::with_capacity(request.messages.len());
        for (index, m) in request.messages.into_iter().enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            let mut message = m.message;
            if let Some(contact) = &m.contact {
                message.to = self.contact_address(contact, &message.to, request.sent_at_ms);
            }
            let id = JobId::derive(&request.correlation, request.sequence, index);
            let origin = Origin {
                correlation: request.correlation.clone(),
                sequence: request.sequence,
                index,
                of,
                sent_at_ms: request.sent_at_ms,
                contact: m.contact,
            };
            accepts.push(self.accept(id, origin, message));
        }
        let accepted = futures_util::future::join_all(accepts)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        self.ctx
            .window
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(key, accepted.iter().map(|s| s.id.clone()).collect(), now);
        Ok(accepted)
    }

    /// The address to send to for `contact`: `proposed` unless a newer envelope already set
    /// another (then the stale update is ignored and logged with both timestamps).
    fn contact_address(&self, contact: &str, proposed: &str, sent_at_ms: UnixMillis) -> String {
        let mut book = self.ctx.contacts.lock().unwrap_or_else(|e| e.into_inner());
        match book.update(contact, proposed, sent_at_ms) {
            Update::Stale {
                current_ms,
                update_ms,
            } => {
                tracing::warn!(
                    contact,
                    current_sent_at_ms = current_ms,
                    update_sent_at_ms = update_ms,
                    "stale contact update ignored: it is older than the address in use"
                );
                book.address(contact).unwrap_or(proposed).to_owned()
            }
            Update::Applied | Update::Unchanged => proposed.to_owned(),
        }
    }

    async fn accept(
        &self,
        id: JobId,
        origin: Origin,
        message: MailMessage,
    ) -> Result<JobSummary, Rejection> {
        let transport = self.ctx.default_transport;
        let actor = self.actor(&id).await?;
        let question = |reply| JobMsg::Accept {
            origin,
            message,
            transport,
            reply,
        };
        ask_or(&actor, question, self.call_timeout, |_| {
            let advice = "submit again (duplicates are ignored)";
            unanswered(&format!("mail job {id}"), advice)
        })
        .await?
    }

    /// The live actor of job `id`, woken by the supervisor if needed.
    async fn actor(&self, id: &JobId) -> Result<ActorRef<JobMsg>, Rejection> {
        if let Some(actor) = self.ctx.jobs.get(id) {
            return Ok(actor);
        }
        let spawn = |reply| MailSupervisorMsg::Spawn {
            id: id.clone(),
            reply,
        };
        self.supervisor.ask(spawn, self.call_timeout).await?
    }

    fn summaries(&self, ids: &[JobId]) -> Vec<JobSummary> {
        let mut out: Vec<JobSummary> = ids
            .iter()
            .filter_map(|id| self.ctx.directory.get(id).map(|s| s.value().clone()))
            .collect();
        out.sort_by_key(|s| s.index);
        out
    }

    /// Cluster mode: refuses a question only mission control's owner can answer, when this
    /// node is not it (a request forwarded here just as the lease moved): its directory
    /// is empty, and an empty answer would be wrong.
    fn answered_here(&self) -> Result<(), Rejection> {
        if self.ctx.cluster.is_some() && !*self.ctx.owning.borrow() {
            return Err(Rejection::new(
                ErrorCode::Unavailable,
                "mission control does not run on this node now; retry",
            ));
        }
        Ok(())
    }

    /// One job with its failures, read from storage.
    pub async fn status(&self, id: &JobId) -> Result<JobDetail, Rejection> {
        self.answered_here()?;
        let summary = self.summary(id)?;
        let job = self.load(id.clone()).await?;
        Ok(JobDetail {
            message_id: id.message_id(&self.ctx.message_id_domain),
            failures: job.map(|j| j.failures).unwrap_or_default(),
            summary,
        })
    }

    /// A job's summary from the directory.
    pub fn summary(&self, id: &JobId) -> Result<JobSummary, Rejection> {
        self.ctx
            .directory
            .get(id)
            .map(|s| s.value().clone())
            .ok_or_else(|| {
                Rejection::new(ErrorCode::NotFound, format!("mail job {id} does not exist"))
            })
    }

    /// Jobs in state `state` (any state when `None`), oldest first, at most `limit`.
    pub fn list(&self, state: Option<&str>, limit: usize) -> Result<Vec<JobSummary>, Rejection> {
        self.answered_here()?;
        if let Some(s) = state {
            if !super::job::JobStatus::NAMES.contains(&s) {
                return Err(Rejection::invalid(format!(
                    "state must be one of {}, got `{s}`",
                    super::job::JobStatus::NAMES.join(", ")
                )));
            }
        }
        let mut rows: Vec<JobSummary> = self
            .ctx
            .directory
            .iter()
            .filter(|e| state.is_none_or(|s| e.value().status.name() == s))
            .map(|e| e.value().clone())
            .collect();
        rows.sort_by(|a, b| (a.accepted_at_ms, &a.id).cmp(&(b.accepted_at_ms, &b.id)));
        rows.truncate(limit.min(MAX_LIST));
        Ok(rows)
    }

    /// The failed-message log: every failed attempt (newest first), at most `limit`.
    pub async fn failed(&self, limit: usize) -> Result<Vec<FailedEntry>, Rejection> {
        self.answered_here()?;
        let ids: Vec<JobId> = self
            .ctx
            .directory
            .iter()
            .filter(|e| e.value().failures > 0)
            .map(|e| e.key().clone())
            .collect();
        let journal = self.ctx.journal.clone();
        let mut entries = tokio::task::spawn_blocking(move || {
            let mut entries = Vec::new();
            for id in ids {
                if let Some(job) = load_job(&journal, &id)? {
                    entries.extend(job.failures.into_iter().map(|failure| FailedEntry {
                        id: job.id.clone(),
                        to: job.message.to.clone(),
                        failure,
                    }));
                }
            }
            Ok::<_, Rejection>(entries)
        })
        .await
        .map_err(|e| {
            tracing::error!("failed-log reader stopped: {e}");
            Rejection::internal("the failed-message log could not be read")
        })??;
        entries.sort_by(|a, b| (b.failure.at_ms, &b.id).cmp(&(a.failure.at_ms, &a.id)));
        entries.truncate(limit.min(MAX_LIST));
        Ok(entries)
    }

    /// Re-drives a dead job (a fresh attempt budget, due now).
    pub async fn retry(&self, id: &JobId) -> Result<JobSummary, Rejection> {
        self.answered_here()?;
        self.summary(id)?;
        let actor = self.actor(id).await?;
        let question = |reply| JobMsg::Redrive { reply };
        ask(
            &actor,
            question,
            self.call_timeout,
            &format!("mail job {id}"),
        )
        .await?
    }

    /// Re-drives every dead job; returns those re-driven.
    pub async fn retry_all_dead(&self) -> Result<Vec<JobSummary>, Rejection> {
        let dead = self.list(Some("dead"), MAX_LIST)?;
        let mut out = Vec::with_capacity(dead.len());
        for job in dead {
            out.push(self.retry(&job.id).await?);
        }
        Ok(out)
    }

    /// The breaker state of each transport.
    pub fn breakers(&self) -> Vec<(TransportKind, BreakerState)> {
        let mut out: Vec<_> = self
            .ctx
            .gates
            .values()
            .map(|g| (g.kind, g.state()))
            .collect();
        out.sort_by_key(|(k, _)| k.as_str());
        out
    }

    /// Jobs known (all states).
    pub fn len(&self) -> usize {
        self.ctx.directory.len()
    }

    /// True when there is no job.
    pub fn is_empty(&self) -> bool {
        self.ctx.directory.is_empty()
    }

    /// Job actors alive now (awake jobs); waiting jobs have none.
    pub fn live_actors(&self) -> usize {
        self.ctx.jobs.len()
    }

    async fn load(&self, id: JobId) -> Result<Option<Job>, Rejection> {
        let journal = self.ctx.journal.clone();
        tokio::task::spawn_blocking(move || load_job(&journal, &id))
            .await
            .map_err(|e| {
                tracing::error!("job reader stopped: {e}");
                Rejection::internal("the mail job could not be read")
            })?
    }
}

/// Checks an envelope that came from outside, naming what is at fault.
fn check_envelope(request: &MailRequest) -> Result<(), Rejection> {
    validate_id("correlation id", &request.correlation)?;
    if request.messages.is_empty() || request.messages.len() > MAX_MESSAGES_PER_ENVELOPE {
        return Err(Rejection::invalid(format!(
            "an envelope carries 1 to {MAX_MESSAGES_PER_ENVELOPE} messages, got {}",
            request.messages.len()
        )));
    }
    for (i, m) in request.messages.iter().enumerate() {
        m.message
            .validate()
            .map_err(|r| Rejection::invalid(format!("message {i}: {}", r.message)))?;
        if let Some(contact) = &m.contact {
            validate_id(&format!("message {i}: contact"), contact)?;
        }
    }
    Ok(())
}

/// Cluster mode: the jobs an envelope stored on mission control's stream makes, as the
/// submitter is told of them: ids derived by the same rule the owner applies, accepted at
/// `now_ms` (the owner's own acceptance time may differ slightly; a contact's newer
/// address, if the owner knows one, replaces `to`).
fn accepted_jobs(
    request: &MailRequest,
    transport: TransportKind,
    now_ms: UnixMillis,
) -> Vec<JobSummary> {
    request
        .messages
        .iter()
        .enumerate()
        .map(|(index, m)| {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            JobSummary {
                id: JobId::derive(&request.correlation, request.sequence, index),
                status: JobStatus::Accepted,
                attempts: 0,
                failures: 0,
                transport,
                to: m.message.to.clone(),
                subject: m.message.subject.clone(),
                correlation: request.correlation.clone(),
                sequence: request.sequence,
                index,
                accepted_at_ms: now_ms,
                last_error: None,
            }
        })
        .collect()
}

/// Cluster mode: while this node runs mission control, reads the envelopes submitted on
/// any node from the stream and accepts their jobs, acknowledging each envelope only once
/// they are journaled; stops reading as soon as this node no longer runs it. Runs for the
/// life of the process.
async fn read_submissions(domain: MailDomain, cluster: MailCluster) {
    let mut owning = domain.ctx.owning.subscribe();
    loop {
        if owning.wait_for(|owner| *owner).await.is_err() {
            return;
        }
        let mut deliveries = match cluster.bus.consume().await {
            Ok(deliveries) => deliveries,
            Err(e) => {
                tracing::warn!("mission control cannot read submitted envelopes yet: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            tokio::select! {
                changed = owning.changed() => {
                    if changed.is_err() || !*owning.borrow_and_update() {
                        break;
                    }
                }
                delivery = deliveries.recv() => {
                    let Some(delivery) = delivery else { break };
                    let handled = domain.take_delivery(&delivery.payload).await;
                    delivery.settle(handled);
                }
            }
        }
    }
}

/// Reads one job back from storage.
fn load_job(journal: &Journal, id: &JobId) -> Result<Option<Job>, Rejection> {
    let key = ActorKey::new(KIND, id.as_str());
    journal
        .restore::<MailJobState, JobEvent>(&key, MailJobState::apply)
        .map(|r| r.state.job)
        .map_err(|e| Rejection::internal(format!("mail job {id} could not be read: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request(correlation: &str, sequence: u64, n: usize) -> MailRequest {
        MailRequest {
            correlation: correlation.into(),
            sequence,
            sent_at_ms: 1_000,
            messages: (0..n)
                .map(|i| EnvelopeMessage {
                    message: MailMessage {
                        to: format!("racer{i}@example.org"),
                        subject: format!("Result {i}"),
                        body: "You finished.\n".into(),
                    },
                    contact: (i % 2 == 0).then(|| format!("c{i}")),
                })
                .collect(),
        }
    }

    proptest! {
        /// What a submitting node answers in cluster mode names the jobs the owner makes:
        /// the ids the pure rule derives, one per message in order, all accepted; and the
        /// envelope reaches the owner as it was sent.
        #[test]
        fn a_stored_envelope_is_answered_with_the_owners_jobs(
            correlation in "[A-Za-z0-9_.-]{1,32}",
            sequence: u64,
            n in 1usize..40,
        ) {
            let sent = request(&correlation, sequence, n);
            prop_assert!(check_envelope(&sent).is_ok());
            let jobs = accepted_jobs(&sent, TransportKind::Smtp, 5_000);
            prop_assert_eq!(jobs.len(), n);
            for (i, job) in jobs.iter().enumerate() {
                prop_assert_eq!(&job.id, &JobId::derive(&correlation, sequence, i as u32));
                prop_assert_eq!(job.index, i as u32);
                prop_assert_eq!(job.status, JobStatus::Accepted);
                prop_assert_eq!(&job.to, &sent.messages[i].message.to);
            }
            let bytes = serde_json::to_vec(&sent).unwrap();
            let read: MailRequest = serde_json::from_slice(&bytes).unwrap();
            prop_assert_eq!(read, sent);
        }
    }

    #[test]
    fn an_envelope_is_checked_before_it_is_stored() {
        assert!(check_envelope(&request("ok", 1, 1)).is_ok());
        assert!(check_envelope(&request("ok", 1, 0)).is_err(), "empty");
        assert!(check_envelope(&request("not ok", 1, 1)).is_err(), "bad id");
        let mut bad = request("ok", 1, 2);
        bad.messages[1].message.to = "nobody".into();
        let refused = check_envelope(&bad).unwrap_err();
        assert!(
            refused.message.starts_with("message 1"),
            "{}",
            refused.message
        );
    }
}
