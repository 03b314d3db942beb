//! One mail job's lifecycle (pure): Accepted → Sending → Sent, or after a failed attempt
//! RetryWaiting { attempt, next_at } → Sending → … and finally Dead once the attempts are
//! used up (or the failure is permanent). An admin re-drive turns a dead job back into a
//! waiting one with a fresh attempt budget.
//!
//! `handle` decides with the time and a jitter source as arguments; `apply` folds an event
//! and never fails. A job interrupted while Sending (a crash) may start another attempt: the
//! mail is then sent at least once, always with the same Message-ID so the receiver can
//! drop the duplicate.

use super::backoff::{Backoff, Jitter};
use super::message::{JobId, MailMessage};
use crate::aggregate::{Aggregate, Decision};
use crate::error::{ErrorCode, Rejection};
use crate::time::UnixMillis;
use serde::{Deserialize, Serialize};

/// Longest error text kept per failed attempt; provider answers can be long.
pub const MAX_ERROR_CHARS: usize = 300;

/// Which transport sends a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransportKind {
    /// SMTP (lettre).
    Smtp,
    /// The HTTP JSON mail API.
    Http,
}

impl TransportKind {
    /// The name used in config, metrics and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Smtp => "smtp",
            TransportKind::Http => "http",
        }
    }

    /// Parses a configured name.
    pub fn parse(text: &str) -> Option<TransportKind> {
        match text {
            "smtp" => Some(TransportKind::Smtp),
            "http" => Some(TransportKind::Http),
            _ => None,
        }
    }
}

/// Where a job came from: the envelope that carried it. The idempotency window and the
/// job id are built from this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The submitter's correlation id (one conversation, order, race…).
    pub correlation: String,
    /// The envelope's sequence number within the correlation.
    pub sequence: u64,
    /// The message's position in the envelope.
    pub index: u32,
    /// How many messages the envelope carried: recovery remembers an envelope as processed
    /// only when all of them were stored (a crash can interrupt an envelope half-way).
    pub of: u32,
    /// When the submitter sent the envelope (its clock), for the stale-update rule.
    pub sent_at_ms: UnixMillis,
    /// The contact whose address this message records, if any (stale-update rule).
    pub contact: Option<String>,
}

/// Where a job is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobStatus {
    /// Stored, not yet attempted.
    Accepted,
    /// Attempt `attempt` is under way (or was, when the server stopped).
    Sending {
        /// 1-based attempt number.
        attempt: u32,
    },
    /// Delivered to the transport.
    Sent {
        /// The attempt that succeeded.
        attempt: u32,
        /// When.
        at_ms: UnixMillis,
    },
    /// Attempt `attempt` failed; the next one is due at `next_at_ms`.
    RetryWaiting {
        /// The attempt that failed.
        attempt: u32,
        /// When to try again.
        next_at_ms: UnixMillis,
    },
    /// Given up: in the dead letters until an admin re-drives it.
    Dead {
        /// When it died.
        at_ms: UnixMillis,
    },
}

impl JobStatus {
    /// The state's name, as `list --state` takes it.
    pub fn name(&self) -> &'static str {
        match self {
            JobStatus::Accepted => "accepted",
            JobStatus::Sending { .. } => "sending",
            JobStatus::Sent { .. } => "sent",
            JobStatus::RetryWaiting { .. } => "retry_waiting",
            JobStatus::Dead { .. } => "dead",
        }
    }

    /// Every state name, for validation messages and metrics.
    pub const NAMES: [&'static str; 5] = ["accepted", "sending", "sent", "retry_waiting", "dead"];

    /// When the job wants its next attempt, if it wants one.
    pub fn due_at(&self, now_ms: UnixMillis) -> Option<UnixMillis> {
        match self {
            JobStatus::Accepted | JobStatus::Sending { .. } => Some(now_ms),
            JobStatus::RetryWaiting { next_at_ms, .. } => Some(*next_at_ms),
            JobStatus::Sent { .. } | JobStatus::Dead { .. } => None,
        }
    }
}

/// One failed attempt, as the failed-message log lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedAttempt {
    /// Which attempt.
    pub attempt: u32,
    /// When it failed.
    pub at_ms: UnixMillis,
    /// What the transport said.
    pub error: String,
}

/// A job that exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Its id (derived from the origin).
    pub id: JobId,
    /// The envelope it came from.
    pub origin: Origin,
    /// What to send.
    pub message: MailMessage,
    /// How to send it.
    pub transport: TransportKind,
    /// When it was accepted (server clock).
    pub accepted_at_ms: UnixMillis,
    /// Where it is.
    pub status: JobStatus,
    /// Attempts started, over its whole life.
    pub attempts: u32,
    /// Failed attempts since acceptance or the last re-drive: what the backoff counts.
    pub round_failures: u32,
    /// Every failed attempt (bounded by max attempts per round).
    pub failures: Vec<FailedAttempt>,
}

/// What the directory keeps per job: enough to list, filter and schedule without loading
/// it, small enough for 100,000 waiting jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    /// The job.
    pub id: JobId,
    /// Where it is.
    pub status: JobStatus,
    /// Attempts started.
    pub attempts: u32,
    /// Failed attempts logged.
    pub failures: u32,
    /// Its transport.
    pub transport: TransportKind,
    /// The recipient.
    pub to: String,
    /// The subject.
    pub subject: String,
    /// The envelope's correlation id.
    pub correlation: String,
    /// The envelope's sequence number.
    pub sequence: u64,
    /// Position in the envelope.
    pub index: u32,
    /// When it was accepted.
    pub accepted_at_ms: UnixMillis,
    /// The latest failure's text, if any.
    pub last_error: Option<String>,
}

impl Job {
    /// The directory entry for this job.
    pub fn summary(&self) -> JobSummary {
        JobSummary {
            id: self.id.clone(),
            status: self.status,
            attempts: self.attempts,
            failures: u32::try_from(self.failures.len()).unwrap_or(u32::MAX),
            transport: self.transport,
            to: self.message.to.clone(),
            subject: self.message.subject.clone(),
            correlation: self.origin.correlation.clone(),
            sequence: self.origin.sequence,
            index: self.origin.index,
            accepted_at_ms: self.accepted_at_ms,
            last_error: self.failures.last().map(|f| f.error.clone()),
        }
    }
}

/// A job actor's state: empty until accepted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MailJobState {
    /// The job, once accepted.
    pub job: Option<Job>,
}

/// What a job can be asked to do.
#[derive(Debug, Clone, PartialEq)]
pub enum JobCommand {
    /// Create the job (a second accept of the same job changes nothing).
    Accept {
        /// Its id.
        id: JobId,
        /// The envelope it came from.
        origin: Origin,
        /// What to send.
        message: MailMessage,
        /// How.
        transport: TransportKind,
    },
    /// Start an attempt now.
    Begin,
    /// The attempt under way succeeded.
    Succeed,
    /// The attempt under way failed.
    Fail {
        /// The transport's error.
        error: String,
        /// True when retrying cannot help (the provider refused the message itself).
        permanent: bool,
    },
    /// Bring a dead job back with a fresh attempt budget (admin).
    Redrive,
}

/// What happened to a job; journaled, then applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobEvent {
    /// The job was stored.
    Accepted {
        /// The job as accepted.
        job: Job,
    },
    /// Attempt `attempt` started.
    AttemptStarted {
        /// 1-based attempt number.
        attempt: u32,
        /// When.
        at_ms: UnixMillis,
    },
    /// The attempt succeeded.
    Sent {
        /// Which attempt.
        attempt: u32,
        /// When.
        at_ms: UnixMillis,
    },
    /// The attempt failed; `next_at_ms` is the retry, or `None` for the dead letters.
    AttemptFailed {
        /// What failed and when.
        failure: FailedAttempt,
        /// When to retry, if at all.
        next_at_ms: Option<UnixMillis>,
    },
    /// An admin brought the dead job back; it is due at `at_ms`.
    Redriven {
        /// When.
        at_ms: UnixMillis,
    },
}

impl MailJobState {
    /// Decides what `command` does at `now_ms`.
    pub fn handle(
        &self,
        command: JobCommand,
        now_ms: UnixMillis,
        backoff: &Backoff,
        jitter: &mut dyn Jitter,
    ) -> Result<Vec<JobEvent>, Rejection> {
        if let JobCommand::Accept {
            id,
            origin,
            message,
            transport,
        } = command
        {
            if self.job.is_some() {
                return Ok(Vec::new());
            }
            message.validate()?;
            return Ok(vec![JobEvent::Accepted {
                job: Job {
                    id,
                    origin,
                    message,
                    transport,
                    accepted_at_ms: now_ms,
                    status: JobStatus::Accepted,
                    attempts: 0,
                    round_failures: 0,
                    failures: Vec::new(),
                },
            }]);
        }
        let job = self
            .job
            .as_ref()
            .ok_or_else(|| Rejection::new(ErrorCode::NotFound, "the mail job does not exist"))?;
        let wrong = |what: &str| {
            Rejection::new(
                ErrorCode::InvalidTransition,
                format!(
                    "mail job {} is {}; cannot {what}",
                    job.id,
                    job.status.name()
                ),
            )
        };
        match (command, job.status) {
            (JobCommand::Accept { .. }, _) => Ok(Vec::new()),
            (
                JobCommand::Begin,
                JobStatus::Accepted | JobStatus::Sending { .. } | JobStatus::RetryWaiting { .. },
            ) => Ok(vec![JobEvent::AttemptStarted {
                attempt: job.attempts.saturating_add(1),
                at_ms: now_ms,
            }]),
            (JobCommand::Begin, _) => Err(wrong("start an attempt")),
            (JobCommand::Succeed, JobStatus::Sending { attempt }) => Ok(vec![JobEvent::Sent {
                attempt,
                at_ms: now_ms,
            }]),
            (JobCommand::Succeed, _) => Err(wrong("succeed")),
            (JobCommand::Fail { error, permanent }, JobStatus::Sending { attempt }) => {
                let failures = job.round_failures.saturating_add(1);
                let next_at_ms = if permanent {
                    None
                } else {
                    backoff
                        .delay_ms(failures, jitter)
                        .map(|d| now_ms.saturating_add(i64::try_from(d).unwrap_or(i64::MAX)))
                };
                Ok(vec![JobEvent::AttemptFailed {
                    failure: FailedAttempt {
                        attempt,
                        at_ms: now_ms,
                        error: error.chars().take(MAX_ERROR_CHARS).collect(),
                    },
                    next_at_ms,
                }])
            }
            (JobCommand::Fail { .. }, _) => Err(wrong("fail")),
            (JobCommand::Redrive, JobStatus::Dead { .. }) => {
                Ok(vec![JobEvent::Redriven { at_ms: now_ms }])
            }
            (JobCommand::Redrive, _) => Err(wrong("be re-driven (only dead jobs can)")),
        }
    }

    /// Folds one journaled event into the state.
    pub fn apply(&mut self, event: &JobEvent) {
        if let JobEvent::Accepted { job } = event {
            if self.job.is_none() {
                self.job = Some(job.clone());
            }
            return;
        }
        let Some(job) = self.job.as_mut() else {
            return;
        };
        match event {
            JobEvent::Accepted { .. } => {}
            JobEvent::AttemptStarted { attempt, .. } => {
                job.attempts = *attempt;
                job.status = JobStatus::Sending { attempt: *attempt };
            }
            JobEvent::Sent { attempt, at_ms } => {
                job.status = JobStatus::Sent {
                    attempt: *attempt,
                    at_ms: *at_ms,
                };
            }
            JobEvent::AttemptFailed {
                failure,
                next_at_ms,
            } => {
                job.round_failures = job.round_failures.saturating_add(1);
                job.status = match next_at_ms {
                    Some(next_at_ms) => JobStatus::RetryWaiting {
                        attempt: failure.attempt,
                        next_at_ms: *next_at_ms,
                    },
                    None => JobStatus::Dead {
                        at_ms: failure.at_ms,
                    },
                };
                job.failures.push(failure.clone());
            }
            JobEvent::Redriven { at_ms } => {
                job.round_failures = 0;
                job.status = JobStatus::RetryWaiting {
                    attempt: job.attempts,
                    next_at_ms: *at_ms,
                };
            }
        }
    }
}

/// What deciding on a job command reads besides the job.
pub struct JobInputs<'a> {
    /// The clock, read once by the shell.
    pub now_ms: UnixMillis,
    /// Retry timing.
    pub backoff: &'a Backoff,
    /// Where retry jitter comes from (fixed in tests).
    pub jitter: &'a mut (dyn Jitter + Send),
}

impl Aggregate for MailJobState {
    type Command = JobCommand;
    type Event = JobEvent;
    type Context<'a> = JobInputs<'a>;
    type Outcome = ();

    fn decide(
        &self,
        command: JobCommand,
        inputs: JobInputs<'_>,
    ) -> Result<Decision<JobEvent, ()>, Rejection> {
        self.handle(command, inputs.now_ms, inputs.backoff, inputs.jitter)
            .map(Decision::events)
    }

    fn apply(&mut self, event: &JobEvent) {
        MailJobState::apply(self, event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::backoff::FixedJitter;
    use proptest::prelude::*;

    fn backoff() -> Backoff {
        Backoff {
            base_ms: 1_000,
            factor: 2.0,
            cap_ms: 10_000,
            max_attempts: 3,
        }
    }

    fn accept() -> JobCommand {
        JobCommand::Accept {
            id: JobId::derive("c", 1, 0),
            origin: Origin {
                correlation: "c".into(),
                sequence: 1,
                index: 0,
                of: 1,
                sent_at_ms: 5,
                contact: None,
            },
            message: MailMessage {
                to: "ana@example.org".into(),
                subject: "Hi".into(),
                body: "Body".into(),
            },
            transport: TransportKind::Smtp,
        }
    }

    fn run(s: &mut MailJobState, c: JobCommand, now: i64) -> Result<Vec<JobEvent>, Rejection> {
        let events = s.handle(c, now, &backoff(), &mut FixedJitter(1.0))?;
        for e in &events {
            s.apply(e);
        }
        Ok(events)
    }

    fn status(s: &MailJobState) -> JobStatus {
        s.job.as_ref().unwrap().status
    }

    #[test]
    fn a_job_is_sent_after_retries_with_growing_waits() {
        let mut s = MailJobState::default();
        run(&mut s, accept(), 100).unwrap();
        assert_eq!(status(&s), JobStatus::Accepted);
        assert!(
            run(&mut s, accept(), 101).unwrap().is_empty(),
            "accept is idempotent"
        );
        run(&mut s, JobCommand::Begin, 100).unwrap();
        let fail = || JobCommand::Fail {
            error: "421 busy".into(),
            permanent: false,
        };
        run(&mut s, fail(), 200).unwrap();
        assert_eq!(
            status(&s),
            JobStatus::RetryWaiting {
                attempt: 1,
                next_at_ms: 1_200
            }
        );
        run(&mut s, JobCommand::Begin, 1_200).unwrap();
        run(&mut s, fail(), 1_300).unwrap();
        assert_eq!(
            status(&s),
            JobStatus::RetryWaiting {
                attempt: 2,
                next_at_ms: 3_300
            }
        );
        run(&mut s, JobCommand::Begin, 3_300).unwrap();
        run(&mut s, JobCommand::Succeed, 3_400).unwrap();
        assert_eq!(
            status(&s),
            JobStatus::Sent {
                attempt: 3,
                at_ms: 3_400
            }
        );
        assert_eq!(s.job.as_ref().unwrap().failures.len(), 2);
        assert_eq!(
            run(&mut s, JobCommand::Begin, 4_000).unwrap_err().code,
            ErrorCode::InvalidTransition
        );
    }

    #[test]
    fn max_attempts_or_a_permanent_error_dead_letter_and_redrive_resets_the_budget() {
        let mut s = MailJobState::default();
        run(&mut s, accept(), 0).unwrap();
        for i in 0..3 {
            run(&mut s, JobCommand::Begin, i * 100_000).unwrap();
            run(
                &mut s,
                JobCommand::Fail {
                    error: "x".into(),
                    permanent: false,
                },
                i * 100_000 + 1,
            )
            .unwrap();
        }
        assert_eq!(status(&s), JobStatus::Dead { at_ms: 200_001 });
        run(&mut s, JobCommand::Redrive, 300_000).unwrap();
        assert_eq!(
            status(&s),
            JobStatus::RetryWaiting {
                attempt: 3,
                next_at_ms: 300_000
            }
        );
        run(&mut s, JobCommand::Begin, 300_000).unwrap();
        run(
            &mut s,
            JobCommand::Fail {
                error: "550 no such user".into(),
                permanent: true,
            },
            300_001,
        )
        .unwrap();
        assert_eq!(
            status(&s),
            JobStatus::Dead { at_ms: 300_001 },
            "permanent: no retry"
        );
        assert_eq!(s.job.as_ref().unwrap().attempts, 4);
        assert!(run(&mut MailJobState::default(), JobCommand::Begin, 0).is_err());
    }

    proptest! {
        /// Driven by any sequence of outcomes, a job always ends Sent or Dead within the
        /// maximum attempts, and replaying its events rebuilds the same state.
        #[test]
        fn every_job_ends_sent_or_dead(outcomes in proptest::collection::vec(0u8..3, 0..10), fraction in 0.0f64..=1.0) {
            let mut s = MailJobState::default();
            let mut log = Vec::new();
            let mut now = 0i64;
            log.extend(s.handle(accept(), now, &backoff(), &mut FixedJitter(fraction)).unwrap());
            for e in &log { s.apply(e); }
            let mut outcomes = outcomes.into_iter();
            for _ in 0..20 {
                let st = s.job.as_ref().unwrap().status;
                let Some(due) = st.due_at(now) else { break };
                now = now.max(due);
                let step = |c: JobCommand, s: &mut MailJobState, log: &mut Vec<JobEvent>| {
                    let ev = s.handle(c, now, &backoff(), &mut FixedJitter(fraction)).unwrap();
                    for e in &ev { s.apply(e); }
                    log.extend(ev);
                };
                step(JobCommand::Begin, &mut s, &mut log);
                let c = match outcomes.next().unwrap_or(0) {
                    0 => JobCommand::Succeed,
                    1 => JobCommand::Fail { error: "t".into(), permanent: false },
                    _ => JobCommand::Fail { error: "p".into(), permanent: true },
                };
                step(c, &mut s, &mut log);
                now += 1;
            }
            let job = s.job.clone().unwrap();
            prop_assert!(matches!(job.status, JobStatus::Sent { .. } | JobStatus::Dead { .. }), "{:?}", job.status);
            prop_assert!(job.attempts <= backoff().max_attempts);
            let mut replayed = MailJobState::default();
            for e in &log { replayed.apply(e); }
            prop_assert_eq!(replayed, s);
        }
    }
}
