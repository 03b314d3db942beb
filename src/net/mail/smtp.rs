//! SMTP with lettre: a pooled async transport; plain by default, STARTTLS or implicit TLS
//! with the `mail-tls` cargo feature (rustls + ring).

use super::{Outgoing, SendError, Timeouts};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::sync::Arc;
use std::time::Duration;

/// Owns lettre's transport. lettre's pool spawns a clean-up task when dropped, which panics
/// outside a tokio runtime (a process exiting after its runtime, a test dropping a server
/// late); there the pool is leaked instead, as the process is going away anyway.
struct PoolOwner(Option<AsyncSmtpTransport<Tokio1Executor>>);

impl Drop for PoolOwner {
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_err() {
            if let Some(transport) = self.0.take() {
                std::mem::forget(transport);
            }
        }
    }
}

/// How to reach the SMTP server.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// `none`, `starttls` or `tls`.
    pub tls: String,
    /// Pooled connections.
    pub pool_max: u32,
    /// Connect and total timeouts.
    pub timeouts: Timeouts,
}

/// A pooled SMTP transport; cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct SmtpSender {
    /// lettre's transport with its connection pool.
    transport: Arc<PoolOwner>,
    /// The whole-send limit.
    total: Duration,
}

impl SmtpSender {
    /// Builds the transport; no connection is made until the first send.
    pub fn new(settings: &SmtpSettings) -> Result<SmtpSender, String> {
        let builder = match settings.tls.as_str() {
            #[cfg(feature = "mail-tls")]
            "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host)
                .map_err(|e| format!("smtp tls: {e}"))?,
            #[cfg(feature = "mail-tls")]
            "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host)
                .map_err(|e| format!("smtp tls: {e}"))?,
            "none" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host),
            other => {
                return Err(format!(
                    "smtp tls mode `{other}` is not available in this build"
                ))
            }
        };
        let transport = builder
            .port(settings.port)
            .timeout(Some(settings.timeouts.connect))
            .pool_config(PoolConfig::new().max_size(settings.pool_max))
            .build();
        Ok(SmtpSender {
            transport: Arc::new(PoolOwner(Some(transport))),
            total: settings.timeouts.total,
        })
    }

    /// The whole-send limit.
    pub fn total_timeout(&self) -> Duration {
        self.total
    }

    /// Sends one mail. 5xx answers are permanent, everything else (4xx, refused, timeouts,
    /// broken connections) is worth a retry.
    pub async fn send(&self, mail: Outgoing<'_>) -> Result<(), SendError> {
        let message = build(mail)?;
        let Some(transport) = self.transport.0.as_ref() else {
            return Err(SendError::transient("smtp: the transport is shutting down"));
        };
        match transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(SendError::permanent(format!("smtp: {e}"))),
            Err(e) => Err(SendError::transient(format!("smtp: {e}"))),
        }
    }
}

/// The RFC 5322 message: From, To, Subject, Message-ID, plain-text body.
fn build(mail: Outgoing<'_>) -> Result<Message, SendError> {
    let from: Mailbox = mail
        .from
        .parse()
        .map_err(|e| SendError::permanent(format!("from address `{}`: {e}", mail.from)))?;
    let to: Mailbox = mail
        .to
        .parse()
        .map_err(|e| SendError::permanent(format!("to address `{}`: {e}", mail.to)))?;
    Message::builder()
        .from(from)
        .to(to)
        .subject(mail.subject)
        .message_id(Some(mail.message_id.to_owned()))
        .header(ContentType::TEXT_PLAIN)
        .body(mail.body.to_owned())
        .map_err(|e| SendError::permanent(format!("message: {e}")))
}
