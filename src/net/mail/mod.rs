//! Mail transports: bytes to an SMTP server or an HTTP mail API, nothing about jobs.
//!
//! - [`smtp`]: SMTP with lettre's sessions over pooled TCP_NODELAY connections (plain,
//!   STARTTLS or implicit TLS with rustls).
//! - [`http`]: a JSON POST to a mail API, with an `Idempotency-Key` header.
//!
//! A transport sends one mail and says whether a failure is worth retrying; retries,
//! breakers and concurrency limits belong to the mail domain that calls it.

pub mod http;
pub mod smtp;

use crate::config::Config;
use peloton_domain::mail::job::TransportKind;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use peloton_domain::mail::transport::{MailTransport, Outgoing, SendError};

/// A configured transport.
#[derive(Clone)]
pub enum Transport {
    /// SMTP.
    Smtp(smtp::SmtpSender),
    /// The HTTP mail API.
    Http(http::HttpSender),
}

impl MailTransport for Transport {
    fn send<'a>(
        &'a self,
        mail: Outgoing<'a>,
    ) -> Pin<Box<dyn Future<Output = Result<(), SendError>> + Send + 'a>> {
        Box::pin(self.send_within_timeout(mail))
    }
}

impl Transport {
    /// Sends one mail within the transport's total timeout.
    async fn send_within_timeout(&self, mail: Outgoing<'_>) -> Result<(), SendError> {
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

/// Where each transport connects and how long it waits, from `[mail]`.
#[derive(Debug, Clone)]
pub struct TransportSettings {
    /// SMTP.
    pub smtp: smtp::SmtpSettings,
    /// HTTP mail API URL.
    pub http_url: String,
    /// HTTP timeouts.
    pub http_timeouts: Timeouts,
}

impl TransportSettings {
    /// Reads the transport keys of `[mail]` (validated already).
    pub fn from_config(config: &Config) -> TransportSettings {
        let m = &config.mail;
        let ms = Duration::from_millis;
        TransportSettings {
            smtp: smtp::SmtpSettings {
                host: m.smtp_host.clone(),
                port: m.smtp_port,
                tls: m.smtp_tls.clone(),
                ca_file: m.smtp_ca_file.clone(),
                pool_max: m.smtp_pool_max,
                timeouts: Timeouts {
                    connect: ms(m.smtp_connect_timeout_ms),
                    total: ms(m.smtp_total_timeout_ms),
                },
            },
            http_url: m.http_url.clone(),
            http_timeouts: Timeouts {
                connect: ms(m.http_connect_timeout_ms),
                total: ms(m.http_total_timeout_ms),
            },
        }
    }
}

/// Every transport the mail domain can send through, by kind, built from `settings`.
pub fn transports(
    settings: &TransportSettings,
) -> Result<HashMap<TransportKind, Arc<dyn MailTransport>>, String> {
    let smtp = smtp::SmtpSender::new(&settings.smtp)?;
    let http = http::HttpSender::new(&settings.http_url, settings.http_timeouts)?;
    let mut all: HashMap<TransportKind, Arc<dyn MailTransport>> = HashMap::new();
    all.insert(TransportKind::Smtp, Arc::new(Transport::Smtp(smtp)));
    all.insert(TransportKind::Http, Arc::new(Transport::Http(http)));
    Ok(all)
}
