//! The mail part of the API: protocol mail requests → [`MailDomain`] calls, and jobs back
//! into protocol views. [`rule`] says who may send them (organisers, never through a
//! race-scoped token: mail is not about one race); the dispatch checks it before
//! [`handle`].

use super::rules::{device_time_limits, Rule, Scope, ADMIN, NOBODY};
use crate::actors::mail::domain::{FailedEntry, JobDetail, MAX_LIST};
use crate::actors::mail::job::{JobStatus, JobSummary};
use crate::actors::mail::message::{JobId, MailMessage};
use crate::actors::mail::{EnvelopeMessage, MailDomain, MailRequest};
use crate::config::Config;
use crate::device_time::sent_at_window;
use crate::error::{ErrorCode, Rejection};
use crate::net::protocol::{
    MailEnvelope, MailFailureView, MailJobDetailView, MailJobView, Reply, Request,
};
use crate::time::now_ms;

/// Who may send which mail request.
pub(super) fn rule(request: &Request) -> Rule<'_> {
    match request {
        Request::MailSubmit(_)
        | Request::MailStatus { .. }
        | Request::MailList { .. }
        | Request::MailFailed { .. }
        | Request::MailRetry { .. }
        | Request::MailRetryAllDead => Rule::new(ADMIN, Scope::Global),
        _ => Rule::new(NOBODY, Scope::Global),
    }
}

/// Answers one mail request; the configured device-time bounds limit the submitter's
/// `sent_at_ms`.
pub(super) async fn handle(
    mail: &MailDomain,
    config: &Config,
    request: Request,
) -> Result<Reply, Rejection> {
    match request {
        Request::MailSubmit(envelope) => {
            // A future sent-at would win against every later update of a contact's address.
            sent_at_window(now_ms(), &device_time_limits(config))
                .check(envelope.sent_at_ms)
                .map_err(|bad| Rejection::new(ErrorCode::BadTime, format!("sent_at_ms {bad}")))?;
            let jobs = mail.submit(to_request(envelope)).await?;
            Ok(Reply::MailJobs(jobs.iter().map(view).collect()))
        }
        Request::MailStatus { id } => {
            let detail = mail.status(&JobId::parse(&id)?).await?;
            Ok(Reply::MailJob(Box::new(detail_view(detail))))
        }
        Request::MailList { state, limit } => {
            let jobs = mail.list(state.as_deref(), checked_limit(limit)?)?;
            Ok(Reply::MailJobs(jobs.iter().map(view).collect()))
        }
        Request::MailFailed { limit } => {
            let entries = mail.failed(checked_limit(limit)?).await?;
            Ok(Reply::MailFailures(
                entries.into_iter().map(failure_view).collect(),
            ))
        }
        Request::MailRetry { id } => {
            let job = mail.retry(&JobId::parse(&id)?).await?;
            Ok(Reply::MailJobs(vec![view(&job)]))
        }
        Request::MailRetryAllDead => {
            let jobs = mail.retry_all_dead().await?;
            Ok(Reply::MailJobs(jobs.iter().map(view).collect()))
        }
        other => Err(Rejection::internal(format!(
            "{} is not a mail request",
            other.type_name()
        ))),
    }
}

fn checked_limit(limit: u32) -> Result<usize, Rejection> {
    let limit = limit as usize;
    if limit == 0 || limit > MAX_LIST {
        return Err(Rejection::invalid(format!(
            "limit must be 1 to {MAX_LIST}, got {limit}"
        )));
    }
    Ok(limit)
}

fn to_request(envelope: MailEnvelope) -> MailRequest {
    MailRequest {
        correlation: envelope.correlation_id,
        sequence: envelope.sequence,
        sent_at_ms: envelope.sent_at_ms,
        messages: envelope
            .messages
            .into_iter()
            .map(|m| EnvelopeMessage {
                message: MailMessage {
                    to: m.to,
                    subject: m.subject,
                    body: m.body,
                },
                contact: m.contact,
            })
            .collect(),
    }
}

fn view(job: &JobSummary) -> MailJobView {
    let (next_attempt_at_ms, sent_at_ms) = match job.status {
        JobStatus::RetryWaiting { next_at_ms, .. } => (Some(next_at_ms), None),
        JobStatus::Sent { at_ms, .. } => (None, Some(at_ms)),
        _ => (None, None),
    };
    MailJobView {
        id: job.id.to_string(),
        state: job.status.name().to_owned(),
        attempts: job.attempts,
        failures: job.failures,
        transport: job.transport.as_str().to_owned(),
        to: job.to.clone(),
        subject: job.subject.clone(),
        correlation_id: job.correlation.clone(),
        sequence: job.sequence,
        index: job.index,
        accepted_at_ms: job.accepted_at_ms,
        next_attempt_at_ms,
        sent_at_ms,
        last_error: job.last_error.clone(),
    }
}

fn detail_view(detail: JobDetail) -> MailJobDetailView {
    let id = detail.summary.id.to_string();
    let to = detail.summary.to.clone();
    MailJobDetailView {
        job: view(&detail.summary),
        message_id: detail.message_id,
        failures: detail
            .failures
            .into_iter()
            .map(|f| MailFailureView {
                id: id.clone(),
                to: to.clone(),
                attempt: f.attempt,
                at_ms: f.at_ms,
                error: f.error,
            })
            .collect(),
    }
}

fn failure_view(entry: FailedEntry) -> MailFailureView {
    MailFailureView {
        id: entry.id.to_string(),
        to: entry.to,
        attempt: entry.failure.attempt,
        at_ms: entry.failure.at_ms,
        error: entry.failure.error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn only_unscoped_admins_send_mail_requests() {
        let retry = Request::MailRetry { id: "j".into() };
        for role in Role::ALL {
            assert_eq!(rule(&retry).permits(role), role == Role::Admin);
        }
        assert_eq!(rule(&Request::MailRetryAllDead).scope, Scope::Global);
        assert!(!rule(&Request::Ping).permits(Role::Admin), "not ours");
    }
}
