//! Mission control in cluster mode: what the mail shell adds when the journal is shared by
//! several nodes, so each mail goes out from one node only.
//!
//! One node at a time owns mission control, by holding the lease [`LEASE`] (the same
//! leases as races): only it recovers, schedules and sends jobs, and the journal refuses
//! mail-job writes from any other ([`lease_of_actor`], used by the engine's write guard).
//! Any node takes submissions: it publishes the envelope on mission control's stream
//! ([`crate::cluster::mail_bus`]) with `Nats-Msg-Id` = [`envelope_message_id`], and the
//! owner accepts its jobs from there. Each job that ends (sent or dead) is announced on the
//! outcomes subject as an [`Outcome`], with `Nats-Msg-Id` = [`Outcome::message_id`].
//!
//! The names and payloads here are pure; the stream is the cluster module's.

use super::job::{JobStatus, JobSummary};
use super::message::JobId;
use super::KIND;
use crate::cluster::mail_bus::MailBus;
use crate::cluster::Leases;
use crate::persist::ActorKey;
use crate::time::UnixMillis;
use serde::{Deserialize, Serialize};

/// The lease that makes a node mission control's owner.
pub const LEASE: &str = "mail";

/// What mission control needs of cluster mode; absent on a single node.
#[derive(Clone)]
pub struct MailCluster {
    /// Who holds [`LEASE`], taken and renewed like a race's.
    pub leases: Leases,
    /// Envelopes in, outcomes out.
    pub bus: MailBus,
}

/// The lease a journal key is written under: every mail job's is [`LEASE`] (`None`: not a
/// mail job's journal).
pub fn lease_of_actor(actor: &ActorKey) -> Option<String> {
    let (kind, _) = actor.as_str().split_once('/')?;
    (kind == KIND).then(|| LEASE.to_owned())
}

/// The `Nats-Msg-Id` of envelope (`correlation`, `sequence`): the same key the idempotency
/// window uses, so JetStream drops a resubmission within its duplicate window. A
/// correlation id never holds `:` (ids are letters, digits, `_`, `-`, `.`), so two
/// envelopes never share one.
pub fn envelope_message_id(correlation: &str, sequence: u64) -> String {
    format!("{correlation}:{sequence}")
}

/// What became of a job, published on the outcomes subject once it is sent or dead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The job.
    pub job: JobId,
    /// `sent` or `dead`.
    pub status: String,
    /// Attempts it took.
    pub attempts: u32,
    /// When it was sent or died.
    pub at_ms: UnixMillis,
}

impl Outcome {
    /// The outcome of a job that has ended (`None`: it has not).
    pub fn of(summary: &JobSummary) -> Option<Outcome> {
        let at_ms = match summary.status {
            JobStatus::Sent { at_ms, .. } | JobStatus::Dead { at_ms } => at_ms,
            _ => return None,
        };
        Some(Outcome {
            job: summary.id.clone(),
            status: summary.status.name().to_owned(),
            attempts: summary.attempts,
            at_ms,
        })
    }

    /// `<job id>.<status>`: one outcome of each kind per job however often it is announced
    /// (a re-driven job that dies again is one `dead`, within the duplicate window).
    pub fn message_id(&self) -> String {
        format!("{}.{}", self.job, self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::mail::job::TransportKind;
    use proptest::prelude::*;

    fn summary(status: JobStatus) -> JobSummary {
        JobSummary {
            id: JobId::derive("order", 7, 0),
            status,
            attempts: 3,
            failures: 2,
            transport: TransportKind::Smtp,
            to: "ana@example.org".into(),
            subject: "Results".into(),
            correlation: "order".into(),
            sequence: 7,
            index: 0,
            accepted_at_ms: 1_000,
            last_error: None,
        }
    }

    #[test]
    fn only_ended_jobs_have_an_outcome_keyed_by_job_and_status() {
        let sent = Outcome::of(&summary(JobStatus::Sent {
            attempt: 3,
            at_ms: 5_000,
        }))
        .unwrap();
        assert_eq!(sent.status, "sent");
        assert_eq!(sent.at_ms, 5_000);
        assert_eq!(sent.message_id(), format!("{}.sent", sent.job));
        let dead = Outcome::of(&summary(JobStatus::Dead { at_ms: 6_000 })).unwrap();
        assert_eq!(dead.message_id(), format!("{}.dead", dead.job));
        assert_eq!(Outcome::of(&summary(JobStatus::Accepted)), None);
        let waiting = JobStatus::RetryWaiting {
            attempt: 1,
            next_at_ms: 9,
        };
        assert_eq!(Outcome::of(&summary(waiting)), None);
        let json = serde_json::to_value(&sent).unwrap();
        assert_eq!(json["job"], sent.job.as_str());
        assert_eq!(json["attempts"], 3);
    }

    #[test]
    fn only_mail_jobs_are_written_under_the_mail_lease() {
        assert_eq!(
            lease_of_actor(&ActorKey::new(KIND, "0123456789abcdef01234567")),
            Some(LEASE.to_owned())
        );
        assert_eq!(lease_of_actor(&ActorKey::new("race", "r1")), None);
        assert_eq!(lease_of_actor(&ActorKey::new("mailer", "x")), None);
    }

    proptest! {
        /// Two different envelopes never share a `Nats-Msg-Id` (JetStream would drop the
        /// second as a duplicate), and the same envelope always has the same one.
        #[test]
        fn envelope_message_ids_are_one_to_one(
            a in "[A-Za-z0-9_.-]{1,16}", sa in 0u64..1000,
            b in "[A-Za-z0-9_.-]{1,16}", sb in 0u64..1000,
        ) {
            let same = a == b && sa == sb;
            prop_assert_eq!(envelope_message_id(&a, sa) == envelope_message_id(&b, sb), same);
        }
    }
}
