//! One transport behind its circuit breaker and concurrency limit.
//!
//! The scheduler asks the gate before it wakes a job (so a job waiting behind an open
//! breaker costs no actor and no socket); the job actor sends through the gate, which holds
//! a semaphore permit for the send and records the outcome in the breaker.

use super::breaker::{Admission, Breaker, BreakerPolicy, BreakerState};
use super::job::TransportKind;
use super::transport::{MailTransport, Outgoing, SendError};
use crate::metrics as m;
use crate::time::UnixMillis;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Semaphore;

/// A transport with its breaker and limit.
pub struct Gate {
    /// Which transport, for metrics and logs.
    pub kind: TransportKind,
    /// The sender (SMTP or an HTTP mail API, built by the assembly).
    transport: Arc<dyn MailTransport>,
    /// Shared by the scheduler (admission) and the job actors (outcomes).
    breaker: Mutex<Breaker>,
    /// Sends in flight at once.
    permits: Arc<Semaphore>,
    /// The limit, so the scheduler wakes no more jobs than can send.
    concurrency: u32,
}

impl Gate {
    /// A closed gate in front of `transport`.
    pub fn new(
        kind: TransportKind,
        transport: Arc<dyn MailTransport>,
        policy: BreakerPolicy,
        concurrency: u32,
    ) -> Gate {
        let gate = Gate {
            kind,
            transport,
            breaker: Mutex::new(Breaker::new(policy)),
            permits: Arc::new(Semaphore::new(concurrency.max(1) as usize)),
            concurrency: concurrency.max(1),
        };
        gate.report(BreakerState::Closed, BreakerState::Closed, 0);
        gate
    }

    /// Sends allowed at once.
    pub fn concurrency(&self) -> u32 {
        self.concurrency
    }

    /// May an attempt start at `now_ms`? A probe is counted as admitted.
    pub fn admit(&self, now_ms: UnixMillis) -> Admission {
        let (before, admission, after) = {
            let mut breaker = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
            let before = breaker.state();
            let admission = breaker.admit(clamp(now_ms));
            (before, admission, breaker.state())
        };
        self.report(before, after, clamp(now_ms));
        admission
    }

    /// The breaker's state now.
    pub fn state(&self) -> BreakerState {
        self.breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .state()
    }

    /// Sends one mail under a permit and records the outcome in the breaker. A permanent
    /// refusal means the provider is up and answering, so it counts as a success there.
    pub async fn send(
        &self,
        mail: Outgoing<'_>,
        now: impl Fn() -> UnixMillis,
    ) -> Result<(), SendError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| SendError::transient("the transport is shutting down"))?;
        let started = Instant::now();
        let outcome = self.transport.send(mail).await;
        let kind = self.kind.as_str();
        metrics::histogram!(m::MAIL_SEND_SECONDS, "transport" => kind)
            .record(started.elapsed().as_secs_f64());
        let result = match &outcome {
            Ok(()) => "sent",
            Err(e) if e.permanent => "refused",
            Err(_) => "failed",
        };
        metrics::counter!(m::MAIL_ATTEMPTS, "transport" => kind, "result" => result).increment(1);
        let up = outcome.is_ok() || outcome.as_ref().is_err_and(|e| e.permanent);
        let at_ms = clamp(now());
        let (before, after) = {
            let mut breaker = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
            let before = breaker.state();
            breaker.record(at_ms, up);
            (before, breaker.state())
        };
        self.report(before, after, at_ms);
        outcome
    }

    /// Shows the breaker's state in [`m::MAIL_BREAKER_STATE`] and logs where it moved: an
    /// operator learns from the log that mail stopped flowing to a provider (warn) and
    /// when it flows again (info), without watching the gauge. Called after the breaker's
    /// lock is released, so a slow log writer never holds up the scheduler or a send;
    /// `now_ms` is the mail clock's time the breaker was given.
    fn report(&self, before: BreakerState, after: BreakerState, now_ms: u64) {
        let transport = self.kind.as_str();
        metrics::gauge!(m::MAIL_BREAKER_STATE, "transport" => transport).set(after.gauge());
        match (before, after) {
            (BreakerState::Open { .. }, BreakerState::Open { .. })
            | (BreakerState::Closed, BreakerState::Closed) => {}
            (_, BreakerState::Open { until_ms }) => {
                let open_for_ms = until_ms.saturating_sub(now_ms);
                tracing::warn!(
                    transport,
                    open_for_ms,
                    "mail circuit breaker opened: {transport} mail waits until a probe succeeds"
                );
            }
            (_, BreakerState::Closed) => {
                tracing::info!(
                    transport,
                    "mail circuit breaker closed: {transport} mail flows again"
                );
            }
            (BreakerState::Open { .. }, BreakerState::HalfOpen { .. }) => {
                tracing::info!(
                    transport,
                    "mail circuit breaker half-open: probing {transport}"
                );
            }
            (BreakerState::HalfOpen { .. }, BreakerState::HalfOpen { .. })
            | (BreakerState::Closed, BreakerState::HalfOpen { .. }) => {}
        }
    }
}

/// Breaker times are unsigned; times before 1970 do not occur in practice.
fn clamp(ms: UnixMillis) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}
