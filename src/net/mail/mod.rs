//! Mail transports: bytes to an SMTP server or an HTTP mail API, nothing about jobs.
//!
//! - [`smtp`]: SMTP with lettre (pooled; TLS with the `mail-tls` feature).
//! - [`http`]: a JSON POST to a mail API, with an `Idempotency-Key` header.
//!
//! A transport sends one mail and says whether a failure is worth retrying; retries,
//! breakers and concurrency limits belong to the mail domain that calls it.

pub mod http;
pub mod smtp;

use std::time::Duration;

/// One mail ready for the wire.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The From mailbox (`Name <a@b>`).
    pub from: &'a str,
    /// The recipient's address.
    pub to: &'a str,
    /// Subject line.
    pub subject: &'a str,
    /// Plain-text body.
    pub body: &'a str,
    /// The stable `Message-ID` (`<id@domain>`), the same on every attempt.
    pub message_id: &'a str,
    /// The key a receiver deduplicates resends by (the job id).
    pub idempotency_key: &'a str,
}

/// Why a send failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// What the transport or server said.
    pub message: String,
    /// True when the server refused the mail itself (a retry would get the same answer);
    /// false for outages, timeouts and "try later" answers.
    pub permanent: bool,
}

impl SendError {
    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> SendError {
        SendError {
            message: message.into(),
            permanent: false,
        }
    }

    /// A refusal no retry will change.
    pub fn permanent(message: impl Into<String>) -> SendError {
        SendError {
            message: message.into(),
            permanent: true,
        }
    }
}

/// A configured transport.
#[derive(Clone)]
pub enum Transport {
    /// SMTP.
    Smtp(smtp::SmtpSender),
    /// The HTTP mail API.
    Http(http::HttpSender),
}

impl Transport {
    /// Sends one mail within the transport's total timeout.
    pub async fn send(&self, mail: Outgoing<'_>) -> Result<(), SendError> {
        let (total, sending) = match self {
            Transport::Smtp(s) => (
                s.total_timeout(),
                futures_util::future::Either::Left(s.send(mail)),
            ),
            Transport::Http(h) => (
                h.total_timeout(),
                futures_util::future::Either::Right(h.send(mail)),
            ),
        };
        match tokio::time::timeout(total, sending).await {
            Ok(outcome) => outcome,
            Err(_) => Err(SendError::transient(format!(
                "no answer within the total timeout of {} ms",
                total.as_millis()
            ))),
        }
    }
}

/// Timeouts shared by both transports.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Longest wait for a connection.
    pub connect: Duration,
    /// Longest wait for one whole send.
    pub total: Duration,
}
