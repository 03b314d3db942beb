//! `peloton admin mail …`: send one mail, show jobs, the failed-message log and the dead
//! letters, and re-drive dead jobs, over the binary protocol.

use super::{output, CliError};
use crate::net::client::Client;
use crate::net::protocol::{MailEnvelope, MailMessageView, Reply, Request};
use crate::time::now_ms;
use clap::Subcommand;

/// `peloton admin mail …`.
#[derive(Debug, Subcommand)]
pub enum MailCommand {
    /// Send one mail (a one-message envelope).
    Send {
        /// Recipient address.
        #[arg(long)]
        to: String,
        /// Subject line.
        #[arg(long)]
        subject: String,
        /// Plain-text body.
        #[arg(long)]
        body: String,
        /// Correlation id of the envelope (with --sequence: resending is idempotent).
        #[arg(long, default_value = "admin")]
        correlation: String,
        /// Sequence number (default: now in milliseconds, i.e. a new envelope).
        #[arg(long)]
        sequence: Option<u64>,
    },
    /// One job with its Message-ID and failed attempts.
    Status {
        /// Job id.
        id: String,
    },
    /// Jobs, oldest first.
    List {
        /// Only this state: accepted, sending, sent, retry_waiting, dead.
        #[arg(long)]
        state: Option<String>,
        /// Most rows.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// The failed-message log, newest first.
    Failed {
        /// Most rows.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// The dead letters.
    Dead {
        /// Most rows.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Re-drive a dead job, or every dead job with --all-dead.
    Retry {
        /// Job id.
        #[arg(required_unless_present = "all_dead", conflicts_with = "all_dead")]
        id: Option<String>,
        /// Re-drive every dead job.
        #[arg(long)]
        all_dead: bool,
    },
}

/// The request for a mail command.
pub fn request(command: MailCommand) -> Result<Request, CliError> {
    Ok(match command {
        MailCommand::Send {
            to,
            subject,
            body,
            correlation,
            sequence,
        } => Request::MailSubmit(MailEnvelope {
            correlation_id: correlation,
            sequence: sequence.unwrap_or_else(|| u64::try_from(now_ms()).unwrap_or(0)),
            sent_at_ms: now_ms(),
            messages: vec![MailMessageView {
                to,
                subject,
                body,
                contact: None,
            }],
        }),
        MailCommand::Status { id } => Request::MailStatus { id },
        MailCommand::List { state, limit } => Request::MailList { state, limit },
        MailCommand::Failed { limit } => Request::MailFailed { limit },
        MailCommand::Dead { limit } => Request::MailList {
            state: Some("dead".into()),
            limit,
        },
        MailCommand::Retry { id: Some(id), .. } => Request::MailRetry { id },
        MailCommand::Retry { id: None, all_dead } => {
            if !all_dead {
                return Err(CliError::Usage("give a job id or --all-dead".into()));
            }
            Request::MailRetryAllDead
        }
    })
}

/// Runs a mail command on a connected client and prints the answer.
pub async fn run(client: &mut Client, command: MailCommand, json: bool) -> Result<(), CliError> {
    let reply = client.request(request(command)?).await?;
    match reply {
        Reply::MailJobs(jobs) => output::json_or(json, jobs.as_slice(), output::mail_jobs),
        Reply::MailJob(detail) => output::json_or(json, &*detail, output::mail_job),
        Reply::MailFailures(rows) => output::json_or(json, rows.as_slice(), output::mail_failures),
        other => Err(CliError::unexpected(&other)),
    }
}
