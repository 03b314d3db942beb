//! Mission control's rules: a mail and its identity ([`message`]), a job's lifecycle
//! ([`job`]), retry timing ([`backoff`]), the per-transport circuit breaker ([`breaker`]),
//! envelopes accepted once ([`idempotency`]), the newest contact per address ([`contacts`])
//! waiting jobs by due time ([`schedule`]) and the port a transport implements
//! ([`transport`]).

pub mod backoff;
pub mod breaker;
pub mod contacts;
pub mod idempotency;
pub mod job;
pub mod message;
pub mod schedule;
pub mod transport;
