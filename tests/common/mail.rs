//! What the mail tests share: starting a sink, reading what it received, an envelope of
//! numbered mails, and waiting for jobs to settle.

use peloton::actors::mail::job::JobSummary;
use peloton::actors::mail::message::MailMessage;
use peloton::actors::mail::{EnvelopeMessage, MailDomain, MailRequest};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Starts a Python sink server (`command`, whose stdout is taken) and waits for the
/// `ready` line it prints once it listens; `what` names it when it does not start.
pub fn start_sink(mut command: Command, what: &str) -> Child {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("python3 runs {what} (pip install aiosmtpd): {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the sink's first line");
    assert_eq!(line.trim(), "ready", "{what} did not start");
    child
}

/// The mails a sink wrote into `dir` (`.eml` files, named in the order they came), oldest
/// first.
pub fn received_mails(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("eml"))
        .collect();
    files.sort();
    files
}

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
