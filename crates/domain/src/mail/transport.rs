//! The port between mission control and whatever delivers a mail: what a transport is asked
//! to send, how it says it failed, and the one method it has.
//!
//! The mail rules (retries, breakers, identity) need only this; the SMTP and HTTP senders
//! (the server's `net::mail`) implement it, and the assembly hands them to the mail domain,
//! so the actor shells never depend on a socket crate.

use std::future::Future;
use std::pin::Pin;

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

/// Delivers one mail. Implementations bound each send by their own total timeout and
/// classify failures; retries, breakers and concurrency are the caller's.
pub trait MailTransport: Send + Sync {
    /// Sends `mail` once.
    fn send<'a>(
        &'a self,
        mail: Outgoing<'a>,
    ) -> Pin<Box<dyn Future<Output = Result<(), SendError>> + Send + 'a>>;
}
