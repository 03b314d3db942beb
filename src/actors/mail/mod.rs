//! Mission control: every outgoing mail is a durable job.
//!
//! Pure rules (no tokio, no sled):
//! - [`message`]: a mail, its validation, the job id and `Message-ID` derived from its origin.
//! - [`job`]: one job's lifecycle (Accepted → Sending → Sent | RetryWaiting → … | Dead).
//! - [`backoff`]: exponential backoff with full jitter, the jitter source injected.
//! - [`breaker`]: the circuit breaker of one transport.
//! - [`idempotency`]: envelopes processed once within a retention window.
//! - [`contacts`]: the stale-update rule (older sent-at never overwrites newer state).

//!
//! Shell (tokio, ractor, the journal):
//! - [`schedule`]: waiting jobs by due time, one lane per transport (pure).
//! - [`gate`]: a transport behind its breaker and concurrency limit.
//! - [`actor`]: one actor per awake job; journals each transition, then passivates.
//! - [`supervisor`]: recovery, the scheduler's single timer, supervision of job actors.
//! - [`msg`]: the job actor's and the supervisor's messages, which both of them import.
//! - [`domain`]: the facade (`MailDomain::submit`, status, lists, re-drive).
//! - [`trigger`]: results mails when a race finishes.
//! - [`cluster`]: cluster mode: one owner by the `mail` lease, submissions and outcomes
//!   on mission control's stream.

pub mod actor;
pub mod cluster;
pub mod domain;
pub mod gate;
pub mod msg;
pub mod supervisor;
pub mod trigger;

// Mission control's rules (the domain crate), beside the shells that run them.
pub use peloton_domain::mail::{
    backoff, breaker, contacts, idempotency, job, message, schedule, transport,
};

pub use cluster::lease_of_actor;
pub use domain::{EnvelopeMessage, MailDomain, MailRequest, MailSettings};

/// The journal kind of mail job actors (`mail/<job id>`).
pub const KIND: &str = "mail";
