//! Mission control: every outgoing mail is a durable job.
//!
//! Pure rules (no tokio, no sled):
//! - [`message`]: a mail, its validation, the job id and `Message-ID` derived from its origin.
//! - [`job`]: one job's lifecycle (Accepted → Sending → Sent | RetryWaiting → … | Dead).
//! - [`backoff`]: exponential backoff with full jitter, the jitter source injected.
//! - [`breaker`]: the circuit breaker of one transport.
//! - [`idempotency`]: envelopes processed once within a retention window.
//! - [`contacts`]: the stale-update rule (older sent-at never overwrites newer state).

pub mod backoff;
pub mod breaker;
pub mod contacts;
pub mod idempotency;
pub mod job;
pub mod message;

/// The journal kind of mail job actors (`mail/<job id>`).
pub const KIND: &str = "mail";
