//! `[mail]`: mission control's retry policy, circuit breakers and transports.
//!
//! The retry policy and the breaker policy are the mail rules' own types ([`Backoff`],
//! [`BreakerPolicy`]), read straight from their keys (`max_attempts`, `backoff_*`,
//! `breaker_*`), so each key has one definition; the checks below name them.

use super::check::{all_within, ConfigError};
use crate::actors::mail::backoff::Backoff;
use crate::actors::mail::breaker::BreakerPolicy;
use serde::Deserialize;

/// `[mail]`: mission control's retry policy, circuit breakers and transports.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    /// Transport new jobs use (`smtp` or `http`).
    pub transport: String,
    /// The From address of every mail.
    pub from: String,
    /// Right-hand side of every Message-ID.
    pub message_id_domain: String,
    /// `max_attempts` and `backoff_base_ms`, `backoff_factor`, `backoff_cap_ms`: when and
    /// how often a failed send is retried.
    #[serde(flatten)]
    pub backoff: Backoff,
    /// How long envelopes are remembered for deduplication.
    pub idempotency_retention_secs: u64,
    /// `breaker_*`: when a transport's breaker opens and how long it stays open.
    #[serde(flatten)]
    pub breaker: BreakerPolicy,
    /// SMTP server host.
    pub smtp_host: String,
    /// SMTP server port.
    pub smtp_port: u16,
    /// `none`, `starttls` or `tls`.
    pub smtp_tls: String,
    /// PEM file of the CA(s) a TLS SMTP server's certificate must chain to, instead of the
    /// system's roots: a private relay with its own CA. Empty: the system's roots.
    pub smtp_ca_file: String,
    /// SMTP connections open at once (kept between mails; a send waits for a free one).
    pub smtp_pool_max: u32,
    /// SMTP connect (and per-command) timeout.
    pub smtp_connect_timeout_ms: u64,
    /// SMTP whole-send timeout.
    pub smtp_total_timeout_ms: u64,
    /// SMTP sends in flight.
    pub smtp_concurrency: u32,
    /// The HTTP mail API endpoint (http://host:port/path).
    pub http_url: String,
    /// HTTP connect timeout.
    pub http_connect_timeout_ms: u64,
    /// HTTP whole-request timeout.
    pub http_total_timeout_ms: u64,
    /// HTTP requests in flight.
    pub http_concurrency: u32,
}

impl MailConfig {
    /// The `[mail]` checks, each naming its key.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let m = self;
        let (backoff, breaker) = (&m.backoff, &m.breaker);
        let fail = |key: &str, why: String| Err(ConfigError(format!("mail.{key} {why}")));
        if !matches!(m.transport.as_str(), "smtp" | "http") {
            return fail(
                "transport",
                format!("must be \"smtp\" or \"http\", got `{}`", m.transport),
            );
        }
        if m.from.parse::<lettre::message::Mailbox>().is_err() {
            return fail(
                "from",
                format!(
                    "must be an address like \"Name <a@b.org>\", got `{}`",
                    m.from
                ),
            );
        }
        if m.message_id_domain.is_empty()
            || !m
                .message_id_domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        {
            return fail(
                "message_id_domain",
                format!("must be a domain name, got `{}`", m.message_id_domain),
            );
        }
        all_within(
            "mail",
            &[
                ("max_attempts", u64::from(backoff.max_attempts), 1, 1_000),
                ("backoff_base_ms", backoff.base_ms, 1, 86_400_000),
                (
                    "backoff_cap_ms",
                    backoff.cap_ms,
                    backoff.base_ms,
                    7 * 86_400_000,
                ),
                (
                    "idempotency_retention_secs",
                    m.idempotency_retention_secs,
                    1,
                    365 * 86_400,
                ),
                (
                    "breaker_consecutive_failures",
                    u64::from(breaker.consecutive_failures),
                    1,
                    1_000_000,
                ),
                (
                    "breaker_min_calls",
                    u64::from(breaker.min_calls),
                    1,
                    1_000_000,
                ),
                ("breaker_window_ms", breaker.window_ms, 1, 86_400_000),
                ("breaker_open_ms", breaker.open_ms, 1, 86_400_000),
                (
                    "breaker_half_open_probes",
                    u64::from(breaker.half_open_probes),
                    1,
                    1_000,
                ),
                ("smtp_port", u64::from(m.smtp_port), 1, 65_535),
                ("smtp_pool_max", u64::from(m.smtp_pool_max), 1, 1_000),
                (
                    "smtp_connect_timeout_ms",
                    m.smtp_connect_timeout_ms,
                    1,
                    600_000,
                ),
                (
                    "smtp_total_timeout_ms",
                    m.smtp_total_timeout_ms,
                    m.smtp_connect_timeout_ms,
                    3_600_000,
                ),
                ("smtp_concurrency", u64::from(m.smtp_concurrency), 1, 10_000),
                (
                    "http_connect_timeout_ms",
                    m.http_connect_timeout_ms,
                    1,
                    600_000,
                ),
                (
                    "http_total_timeout_ms",
                    m.http_total_timeout_ms,
                    m.http_connect_timeout_ms,
                    3_600_000,
                ),
                ("http_concurrency", u64::from(m.http_concurrency), 1, 10_000),
            ],
            |min, max, value| format!("must be between {min} and {max}, got {value}"),
        )?;
        if !(backoff.factor.is_finite() && (1.0..=100.0).contains(&backoff.factor)) {
            return fail(
                "backoff_factor",
                format!("must be between 1.0 and 100.0, got {}", backoff.factor),
            );
        }
        if !(breaker.failure_rate.is_finite()
            && breaker.failure_rate > 0.0
            && breaker.failure_rate <= 1.0)
        {
            return fail(
                "breaker_failure_rate",
                format!("must be in (0, 1], got {}", breaker.failure_rate),
            );
        }
        if m.smtp_host.is_empty() {
            return fail("smtp_host", "must not be empty".into());
        }
        if !matches!(m.smtp_tls.as_str(), "none" | "starttls" | "tls") {
            return fail(
                "smtp_tls",
                format!(
                    "must be \"none\", \"starttls\" or \"tls\", got `{}`",
                    m.smtp_tls
                ),
            );
        }
        // Checked whatever the TLS mode, so a file named for later is already known good.
        if !m.smtp_ca_file.is_empty() {
            let path = std::path::Path::new(&m.smtp_ca_file);
            if let Err(why) = crate::net::mail::smtp::load_ca_file(path) {
                return fail("smtp_ca_file", why);
            }
        }
        if let Err(why) = crate::net::mail::http::Endpoint::parse(&m.http_url) {
            return fail("http_url", why);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::process::Command;

    /// `[mail]` with `smtp_ca_file = path`, validated.
    fn with_ca_file(path: &str) -> Result<(), String> {
        let mut config = Config::defaults().unwrap();
        config.mail.smtp_ca_file = path.into();
        config.mail.validate().map_err(|e| e.0)
    }

    #[test]
    fn an_empty_ca_file_means_the_system_roots() {
        assert_eq!(with_ca_file(""), Ok(()));
    }

    #[test]
    fn a_ca_file_must_hold_certificates_a_ca_can_be_made_of() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("ca.key");
        let pem = dir.path().join("ca.pem");
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=Config test CA", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&pem)
            .output()
            .expect("the `openssl` command makes the test's CA");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(with_ca_file(pem.to_str().unwrap()), Ok(()));

        let missing = with_ca_file("/nonexistent/ca.pem").unwrap_err();
        assert!(missing.starts_with("mail.smtp_ca_file "), "{missing}");
        assert!(missing.contains("cannot be read"), "{missing}");

        let key_only = with_ca_file(key.to_str().unwrap()).unwrap_err();
        assert!(key_only.starts_with("mail.smtp_ca_file "), "{key_only}");
        assert!(key_only.contains("no PEM certificate"), "{key_only}");

        let not_base64 = dir.path().join("bad.pem");
        std::fs::write(
            &not_base64,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let bad = with_ca_file(not_base64.to_str().unwrap()).unwrap_err();
        assert!(bad.starts_with("mail.smtp_ca_file "), "{bad}");
    }

    #[test]
    fn only_the_three_tls_modes_exist() {
        for mode in ["none", "starttls", "tls"] {
            let mut config = Config::defaults().unwrap();
            config.mail.smtp_tls = mode.into();
            assert!(config.mail.validate().is_ok(), "{mode}");
        }
        let mut config = Config::defaults().unwrap();
        config.mail.smtp_tls = "ssl".into();
        let err = config.mail.validate().unwrap_err().0;
        assert!(err.starts_with("mail.smtp_tls "), "{err}");
    }
}
