//! The circuit breaker of one transport (pure; time is an argument in milliseconds).
//!
//! Closed: traffic flows; the breaker counts consecutive failures and the outcomes within a
//! sliding window. It opens after `consecutive_failures` failures in a row, or when at least
//! `min_calls` outcomes in the window fail at `failure_rate` or more. Open: nothing goes
//! through until `open_ms` has passed, so an outage costs the provider (and us) no traffic
//! and waiting jobs hold no socket. Half-open: up to `half_open_probes` attempts go through;
//! the first success closes the breaker, a failure opens it again.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// When a breaker opens and how long it stays open: the `breaker_*` keys of `[mail]`, read
/// directly into this type (the names are the configuration's).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerPolicy {
    /// Failures in a row that open the breaker.
    #[serde(rename = "breaker_consecutive_failures")]
    pub consecutive_failures: u32,
    /// Failure share within the window (0..=1) that opens the breaker.
    #[serde(rename = "breaker_failure_rate")]
    pub failure_rate: f64,
    /// Outcomes needed in the window before the rate counts, so one early failure does not
    /// read as 100 %.
    #[serde(rename = "breaker_min_calls")]
    pub min_calls: u32,
    /// Length of the sliding window of outcomes, in milliseconds.
    #[serde(rename = "breaker_window_ms")]
    pub window_ms: u64,
    /// How long the breaker stays open before probing, in milliseconds.
    #[serde(rename = "breaker_open_ms")]
    pub open_ms: u64,
    /// Attempts let through while half-open.
    #[serde(rename = "breaker_half_open_probes")]
    pub half_open_probes: u32,
}

/// Where the breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BreakerState {
    /// Traffic flows.
    Closed,
    /// Nothing flows until `until_ms`.
    Open {
        /// When probing may start.
        until_ms: u64,
    },
    /// A few probes flow; `in_flight` of them have not reported yet.
    HalfOpen {
        /// Probes admitted and not yet reported.
        in_flight: u32,
        /// When the first of them was admitted: probes that never report (their job actor
        /// died mid-send) are given up after `open_ms`, so the breaker cannot stick here.
        since_ms: u64,
    },
}

impl BreakerState {
    /// The name used in metrics and the CLI.
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half_open",
        }
    }

    /// 0 closed, 1 half-open, 2 open: the gauge value.
    pub fn gauge(&self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen { .. } => 1.0,
            BreakerState::Open { .. } => 2.0,
        }
    }
}

/// The answer to "may an attempt go now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Yes, normal traffic.
    Allowed,
    /// Yes, as a half-open probe: its outcome decides whether the breaker closes.
    Probe,
    /// No; ask again at `retry_at_ms`.
    Rejected {
        /// The earliest time an attempt may be admitted.
        retry_at_ms: u64,
    },
}

/// One transport's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    /// Thresholds and timings.
    policy: BreakerPolicy,
    /// Where it is now.
    state: BreakerState,
    /// Failures since the last success.
    consecutive: u32,
    /// Recent outcomes (time, failed?) inside the window, oldest first.
    window: VecDeque<(u64, bool)>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(policy: BreakerPolicy) -> Breaker {
        Breaker {
            policy,
            state: BreakerState::Closed,
            consecutive: 0,
            window: VecDeque::new(),
        }
    }

    /// Where the breaker is (an open breaker whose time is up still reads open until the
    /// next admission moves it to half-open).
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Decides whether an attempt may start at `now_ms`; an admitted probe is counted.
    pub fn admit(&mut self, now_ms: u64) -> Admission {
        match self.state {
            BreakerState::Closed => Admission::Allowed,
            BreakerState::Open { until_ms } if now_ms < until_ms => Admission::Rejected {
                retry_at_ms: until_ms,
            },
            BreakerState::Open { .. } => {
                self.state = BreakerState::HalfOpen {
                    in_flight: 1,
                    since_ms: now_ms,
                };
                Admission::Probe
            }
            BreakerState::HalfOpen { since_ms, .. }
                if now_ms >= since_ms.saturating_add(self.policy.open_ms) =>
            {
                self.state = BreakerState::HalfOpen {
                    in_flight: 1,
                    since_ms: now_ms,
                };
                Admission::Probe
            }
            BreakerState::HalfOpen {
                in_flight,
                since_ms,
            } if in_flight < self.policy.half_open_probes => {
                self.state = BreakerState::HalfOpen {
                    in_flight: in_flight + 1,
                    since_ms,
                };
                Admission::Probe
            }
            // Probes are out: check again once they could have timed out.
            BreakerState::HalfOpen { .. } => Admission::Rejected {
                retry_at_ms: now_ms.saturating_add(self.policy.open_ms.clamp(1, 1_000)),
            },
        }
    }

    /// Records the outcome of an admitted attempt.
    pub fn record(&mut self, now_ms: u64, success: bool) {
        self.window.push_back((now_ms, !success));
        let horizon = now_ms.saturating_sub(self.policy.window_ms);
        while self.window.front().is_some_and(|(at, _)| *at < horizon) {
            self.window.pop_front();
        }
        if success {
            self.consecutive = 0;
            if !matches!(self.state, BreakerState::Closed) {
                // A success closes the breaker and starts a fresh window: the failures that
                // opened it belong to the outage that is over.
                self.window.clear();
            }
            self.state = BreakerState::Closed;
            return;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        let trip = match self.state {
            BreakerState::HalfOpen { .. } => true,
            BreakerState::Open { .. } => false,
            BreakerState::Closed => {
                self.consecutive >= self.policy.consecutive_failures.max(1) || {
                    let calls = self.window.len() as u32;
                    let failed = self.window.iter().filter(|(_, f)| *f).count() as f64;
                    calls >= self.policy.min_calls.max(1)
                        && failed / f64::from(calls) >= self.policy.failure_rate
                }
            }
        };
        if trip {
            self.state = BreakerState::Open {
                until_ms: now_ms.saturating_add(self.policy.open_ms),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            consecutive_failures: 3,
            failure_rate: 0.5,
            min_calls: 10,
            window_ms: 10_000,
            open_ms: 5_000,
            half_open_probes: 1,
        }
    }

    /// A breaker opened by three failures at 0..3 ms, whose first probe was admitted at
    /// `at_ms` (after `open_ms`).
    fn half_open_at(at_ms: u64) -> Breaker {
        let mut b = Breaker::new(policy());
        for t in 0..3 {
            b.record(t, false);
        }
        assert_eq!(b.admit(at_ms), Admission::Probe);
        b
    }

    #[test]
    fn consecutive_failures_open_then_a_probe_success_closes() {
        let mut b = Breaker::new(policy());
        for t in 0..3 {
            assert_eq!(b.admit(t), Admission::Allowed);
            b.record(t, false);
        }
        assert_eq!(b.state(), BreakerState::Open { until_ms: 5_002 });
        assert_eq!(b.admit(4_000), Admission::Rejected { retry_at_ms: 5_002 });
        assert_eq!(b.admit(5_002), Admission::Probe);
        assert!(
            matches!(b.admit(5_003), Admission::Rejected { .. }),
            "one probe at a time"
        );
        b.record(5_100, true);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(5_101), Admission::Allowed);
    }

    #[test]
    fn a_probe_that_never_reports_is_given_up_after_open_ms() {
        let mut b = half_open_at(6_000);
        assert!(matches!(b.admit(10_999), Admission::Rejected { .. }));
        assert_eq!(
            b.admit(11_000),
            Admission::Probe,
            "the lost probe is replaced"
        );
    }

    #[test]
    fn a_failed_probe_opens_again() {
        let mut b = half_open_at(6_000);
        b.record(6_001, false);
        assert_eq!(b.state(), BreakerState::Open { until_ms: 11_001 });
    }

    #[test]
    fn a_failure_rate_over_the_window_opens_without_a_streak() {
        let mut b = Breaker::new(policy());
        // fail, ok, fail, ok…: never 3 in a row, but 50 % over 10 calls.
        for t in 0..9u64 {
            b.record(t, t % 2 == 1);
            assert_eq!(b.state(), BreakerState::Closed, "call {t}");
        }
        b.record(9, false);
        assert!(matches!(b.state(), BreakerState::Open { .. }));
    }

    #[test]
    fn old_outcomes_leave_the_window() {
        let mut b = Breaker::new(policy());
        for t in 0..9u64 {
            b.record(t, t % 2 == 1);
        }
        b.record(50_000, false);
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "only one call in the window"
        );
    }

    proptest! {
        /// Whatever happens, while open (before its time) nothing is admitted, and while
        /// half-open at most `half_open_probes` attempts are outstanding.
        #[test]
        fn open_lets_nothing_through_but_probes(
            steps in proptest::collection::vec((0u64..3_000, any::<bool>(), any::<bool>()), 1..300),
        ) {
            let mut b = Breaker::new(policy());
            let mut now = 0u64;
            let mut outstanding: Vec<Admission> = Vec::new();
            for (dt, ask, success) in steps {
                now += dt;
                if ask {
                    let before = b.state();
                    let a = b.admit(now);
                    if let BreakerState::Open { until_ms } = before {
                        if now < until_ms {
                            let rejected = matches!(a, Admission::Rejected { .. });
                            prop_assert!(rejected);
                        } else {
                            prop_assert_eq!(a, Admission::Probe);
                        }
                    }
                    if !matches!(a, Admission::Rejected { .. }) {
                        outstanding.push(a);
                    }
                    if let BreakerState::HalfOpen { in_flight, .. } = b.state() {
                        prop_assert!(in_flight <= policy().half_open_probes);
                    }
                } else if let Some(_a) = outstanding.pop() {
                    b.record(now, success);
                }
            }
        }
    }
}
