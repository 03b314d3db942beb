//! What the mail tests share: an envelope of numbered mails, and waiting for jobs to settle.

use peloton::actors::mail::job::JobSummary;
use peloton::actors::mail::message::MailMessage;
use peloton::actors::mail::{EnvelopeMessage, MailDomain, MailRequest};
use std::time::Duration;

/// An envelope of `n` mails to racer0…, each body naming its place (`Body of mail {i} in
/// {correlation}/{sequence}`), so a sink's copy can be matched to its job.
pub fn envelope(correlation: &str, sequence: u64, n: usize) -> MailRequest {
    MailRequest {
        correlation: correlation.into(),
        sequence,
        sent_at_ms: 1_000,
        messages: (0..n)
            .map(|i| EnvelopeMessage {
                message: MailMessage {
                    to: format!("racer{i}@example.org"),
                    subject: format!("Hello {i}"),
                    body: format!("Body of mail {i} in {correlation}/{sequence}\n"),
                },
                contact: None,
            })
            .collect(),
    }
}

/// Waits until every job in `jobs` is sent or dead; returns them as they ended.
pub async fn settled(mail: &MailDomain, jobs: &[JobSummary], limit: Duration) -> Vec<JobSummary> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let now: Vec<JobSummary> = jobs.iter().map(|j| mail.summary(&j.id).unwrap()).collect();
        if now
            .iter()
            .all(|j| matches!(j.status.name(), "sent" | "dead"))
        {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "jobs not settled: {:?}",
            now.iter()
                .map(|j| (j.status.name(), j.attempts))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
