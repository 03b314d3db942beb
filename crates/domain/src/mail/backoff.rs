//! Retry timing: exponential backoff with full jitter (pure).
//!
//! The delay before retry `n` (1-based count of failed attempts) is a uniform pick in
//! `[0, min(cap, base · factor^(n-1))]` ("full jitter"): after a provider outage the retries
//! of many jobs spread over the whole window instead of arriving together. The random source
//! is injected ([`Jitter`]) so tests are deterministic; the actor passes a real one.

use serde::{Deserialize, Serialize};

/// The retry policy: `max_attempts` and the `backoff_*` keys of `[mail]`, read directly
/// into this type (the names are the configuration's).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// Upper bound of the first retry's delay, in milliseconds.
    #[serde(rename = "backoff_base_ms")]
    pub base_ms: u64,
    /// Growth of the upper bound per further failure (≥ 1).
    #[serde(rename = "backoff_factor")]
    pub factor: f64,
    /// No delay is ever longer than this, so a job is never forgotten for days.
    #[serde(rename = "backoff_cap_ms")]
    pub cap_ms: u64,
    /// Attempts (the first send included) before a job is dead-lettered.
    pub max_attempts: u32,
}

/// Where the randomness of full jitter comes from: a uniform pick in `0..=upper`.
pub trait Jitter {
    /// A value in `0..=upper`.
    fn pick(&mut self, upper: u64) -> u64;
}

/// The process's random source (getrandom); the default outside tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsJitter;

impl Jitter for OsJitter {
    fn pick(&mut self, upper: u64) -> u64 {
        let mut bytes = [0u8; 8];
        // Without entropy the retry is simply not jittered: still correct, only less spread.
        if getrandom::fill(&mut bytes).is_err() {
            return upper;
        }
        match upper.checked_add(1) {
            Some(span) => u64::from_le_bytes(bytes) % span,
            None => u64::from_le_bytes(bytes),
        }
    }
}

/// A fixed sequence of fractions of the upper bound, for deterministic tests.
#[derive(Debug, Clone)]
pub struct FixedJitter(pub f64);

impl Jitter for FixedJitter {
    fn pick(&mut self, upper: u64) -> u64 {
        let fraction = self.0.clamp(0.0, 1.0);
        ((upper as f64) * fraction).round().min(upper as f64) as u64
    }
}

/// The jitter the mail domain is configured with: real randomness, or a fixed fraction that
/// tests inject to make retry times exact.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum JitterSource {
    /// [`OsJitter`].
    Os,
    /// [`FixedJitter`] with this fraction.
    Fixed(f64),
}

impl Jitter for JitterSource {
    fn pick(&mut self, upper: u64) -> u64 {
        match self {
            JitterSource::Os => OsJitter.pick(upper),
            JitterSource::Fixed(f) => FixedJitter(*f).pick(upper),
        }
    }
}

impl Backoff {
    /// The upper bound of the delay after `failures` failed attempts (≥ 1), capped.
    pub fn ceiling_ms(&self, failures: u32) -> u64 {
        let exponent = failures.saturating_sub(1).min(1_000) as i32;
        let grown = (self.base_ms as f64) * self.factor.max(1.0).powi(exponent);
        if !grown.is_finite() || grown >= self.cap_ms as f64 {
            self.cap_ms
        } else {
            (grown as u64).min(self.cap_ms)
        }
    }

    /// The delay before the next attempt after `failures` failed attempts, or `None` when the
    /// job has used its attempts and goes to the dead letters.
    pub fn delay_ms(&self, failures: u32, jitter: &mut dyn Jitter) -> Option<u64> {
        if failures >= self.max_attempts {
            return None;
        }
        let upper = self.ceiling_ms(failures);
        Some(jitter.pick(upper).min(upper))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> Backoff {
        Backoff {
            base_ms: 1_000,
            factor: 2.0,
            cap_ms: 60_000,
            max_attempts: 5,
        }
    }

    #[test]
    fn the_ceiling_grows_exponentially_up_to_the_cap() {
        let b = policy();
        let ceilings: Vec<u64> = (1..=8).map(|n| b.ceiling_ms(n)).collect();
        assert_eq!(
            ceilings,
            vec![1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]
        );
    }

    #[test]
    fn full_jitter_picks_inside_the_window_and_stops_after_max_attempts() {
        let b = policy();
        assert_eq!(b.delay_ms(3, &mut FixedJitter(1.0)), Some(4_000));
        assert_eq!(b.delay_ms(3, &mut FixedJitter(0.0)), Some(0));
        assert_eq!(b.delay_ms(3, &mut FixedJitter(0.5)), Some(2_000));
        assert_eq!(b.delay_ms(5, &mut FixedJitter(0.5)), None, "5 of 5 used");
    }

    proptest! {
        #[test]
        fn a_delay_is_always_within_zero_and_the_cap(
            base in 0u64..100_000, factor in 0.5f64..10.0, cap in 0u64..10_000_000,
            failures in 0u32..200, fraction in 0.0f64..=1.0,
        ) {
            let b = Backoff { base_ms: base, factor, cap_ms: cap, max_attempts: 1_000 };
            let d = b.delay_ms(failures, &mut FixedJitter(fraction)).unwrap();
            prop_assert!(d <= cap);
            let os = b.delay_ms(failures, &mut OsJitter).unwrap();
            prop_assert!(os <= cap && os <= b.ceiling_ms(failures));
        }
    }
}
