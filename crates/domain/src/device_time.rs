//! How far a time that a client supplies is trusted (pure: the clock and the race's start
//! are arguments).
//!
//! A device's clock decides what the server does with its data: a racer's fixes are judged
//! in device-time order (a fix not newer than the last applied one is stale), and a mail
//! envelope's `sent_at_ms` decides which contact address is newest. One time far in the
//! future would therefore win for good (every real fix after a year-9999 fix is stale), and
//! one far in the past stretches what is derived from it (a replay's span). So every such
//! time is checked against a [`TimeWindow`] before anything changes, and a time outside it
//! is refused with `bad_time`.
//!
//! Which client-supplied times there are, and what bounds each (PROTOCOL.md §7.14, §15.1):
//! - a fix's `at_ms`: at most `tracking.max_future_skew_ms` ahead of the server's clock, and
//!   not before the race's start (the planned start or the gun, whichever came first) minus
//!   `tracking.max_fix_age_before_start_ms` ([`fix_window`]). Not the race's creation: a
//!   race may be created after the rides it tracks were recorded.
//! - a mail envelope's `sent_at_ms`: at most the same skew ahead ([`sent_at_window`]). No
//!   lower bound: an old `sent_at_ms` only loses to a newer contact update, which is what it
//!   means.
//! - race start and cut-off times already have a validated range (the race state's
//!   `validate_times`); a replay's `from_ms` is a seek position clamped to the stored span,
//!   not a recorded time; patrol positions carry no device time (the server stamps them).

use crate::time::{format_rfc3339, UnixMillis};
use serde::Deserialize;
use std::fmt;

/// Longest either bound may be, ms: a week is as far as a simulation's sped-up race time
/// may usefully run ahead, and as long as a phone may usefully record before a start.
pub const MAX_LIMIT_MS: u64 = 7 * 86_400_000;

/// The configured bounds on device time (`[tracking]` in config.toml, read directly into
/// this type and checked by [`DeviceTimeLimits::validate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceTimeLimits {
    /// How far ahead of the server's clock a device's clock may run, ms: phones keep good
    /// time, but not perfect time.
    pub max_future_skew_ms: u64,
    /// How long before the race's start a fix may be dated, ms: a phone may start recording
    /// (and buffering) before the gun, but not days before.
    pub max_fix_age_before_start_ms: u64,
}

impl DeviceTimeLimits {
    /// The ranges serde cannot express; each error names its `tracking.*` key.
    pub fn validate(&self) -> Result<(), String> {
        // A second covers clocks that agree.
        if self.max_future_skew_ms < 1_000 {
            return Err(format!(
                "tracking.max_future_skew_ms must be at least 1000, got {}",
                self.max_future_skew_ms
            ));
        }
        for (key, value) in [
            ("max_future_skew_ms", self.max_future_skew_ms),
            (
                "max_fix_age_before_start_ms",
                self.max_fix_age_before_start_ms,
            ),
        ] {
            if value > MAX_LIMIT_MS {
                return Err(format!(
                    "tracking.{key} must be at most {MAX_LIMIT_MS}, got {value}"
                ));
            }
        }
        Ok(())
    }
}

/// The plausible times for one client-supplied field, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    /// The earliest time accepted; `None` where an old time is harmless.
    pub earliest_ms: Option<UnixMillis>,
    /// The latest time accepted: the server's clock plus the allowed skew.
    pub latest_ms: UnixMillis,
}

/// Why a time is outside its window; its `Display` is the message the client reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadTime {
    /// Later than the window: the device's clock runs ahead.
    Ahead {
        /// The time sent.
        at_ms: UnixMillis,
        /// The latest time accepted.
        latest_ms: UnixMillis,
    },
    /// Earlier than the window: before anything it could belong to.
    Early {
        /// The time sent.
        at_ms: UnixMillis,
        /// The earliest time accepted.
        earliest_ms: UnixMillis,
    },
}

/// Milliseconds as RFC 3339 where that exists (1970..=9999), else as a number: the message
/// must never fail on the very times it refuses.
fn readable(ms: UnixMillis) -> String {
    /// The first millisecond of the year 10000, which RFC 3339 cannot write.
    const YEAR_10000_MS: UnixMillis = 253_402_300_800_000;
    if (0..YEAR_10000_MS).contains(&ms) {
        format_rfc3339(ms)
    } else {
        format!("{ms} ms since the epoch")
    }
}

impl fmt::Display for BadTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BadTime::Ahead { at_ms, latest_ms } => write!(
                f,
                "{at_ms} ({}) is later than {}, the server's clock plus the allowed skew; \
                 check the device's clock",
                readable(at_ms),
                readable(latest_ms)
            ),
            BadTime::Early { at_ms, earliest_ms } => write!(
                f,
                "{at_ms} ({}) is earlier than {}, the earliest time accepted here",
                readable(at_ms),
                readable(earliest_ms)
            ),
        }
    }
}

/// A `u64` duration as a signed one; beyond `i64::MAX` is as good as forever.
fn signed(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

impl TimeWindow {
    /// Whether `at_ms` lies in the window, and if not, on which side.
    pub fn check(&self, at_ms: UnixMillis) -> Result<(), BadTime> {
        if at_ms > self.latest_ms {
            return Err(BadTime::Ahead {
                at_ms,
                latest_ms: self.latest_ms,
            });
        }
        match self.earliest_ms {
            Some(earliest_ms) if at_ms < earliest_ms => Err(BadTime::Early { at_ms, earliest_ms }),
            _ => Ok(()),
        }
    }

    /// The first of `times` outside the window, with its index: a batch is refused whole,
    /// and the message names the first offender so the client can find it.
    pub fn first_outside(
        &self,
        times: impl IntoIterator<Item = UnixMillis>,
    ) -> Option<(usize, BadTime)> {
        times
            .into_iter()
            .enumerate()
            .find_map(|(i, at_ms)| self.check(at_ms).err().map(|bad| (i, bad)))
    }
}

/// The window for a fix's device time in a race planned to start at `start_at_ms` and
/// started (the gun) at `started_at_ms`, as the server's clock reads `now_ms`.
///
/// The earlier of the two starts counts, so neither an early gun nor a late one refuses the
/// fixes a phone recorded while waiting for it. Saturating throughout: any `i64` is a valid
/// argument and no bound wraps around.
pub fn fix_window(
    now_ms: UnixMillis,
    start_at_ms: UnixMillis,
    started_at_ms: Option<UnixMillis>,
    limits: &DeviceTimeLimits,
) -> TimeWindow {
    let start = started_at_ms.map_or(start_at_ms, |gun| gun.min(start_at_ms));
    TimeWindow {
        earliest_ms: Some(start.saturating_sub(signed(limits.max_fix_age_before_start_ms))),
        latest_ms: now_ms.saturating_add(signed(limits.max_future_skew_ms)),
    }
}

/// The window for a mail envelope's `sent_at_ms` as the server's clock reads `now_ms`: not
/// ahead of the clock by more than the skew (a future `sent_at_ms` would pin a contact's
/// address against every later update); any past time is fine.
pub fn sent_at_window(now_ms: UnixMillis, limits: &DeviceTimeLimits) -> TimeWindow {
    TimeWindow {
        earliest_ms: None,
        latest_ms: now_ms.saturating_add(signed(limits.max_future_skew_ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: UnixMillis = 1_796_115_600_000;
    const LIMITS: DeviceTimeLimits = DeviceTimeLimits {
        max_future_skew_ms: 120_000,
        max_fix_age_before_start_ms: 6 * 3_600_000,
    };

    #[test]
    fn a_fix_from_year_9999_or_the_far_past_is_refused_and_a_near_one_accepted() {
        let w = fix_window(NOW, NOW - 600_000, Some(NOW - 300_000), &LIMITS);
        let year_9999 = 253_402_300_799_000;
        assert!(matches!(w.check(year_9999), Err(BadTime::Ahead { .. })));
        assert!(matches!(w.check(i64::MIN), Err(BadTime::Early { .. })));
        assert!(matches!(w.check(i64::MAX), Err(BadTime::Ahead { .. })));
        assert!(matches!(w.check(0), Err(BadTime::Early { .. })));
        assert_eq!(w.check(NOW + 30_000), Ok(()));
        assert_eq!(w.check(NOW + 120_000), Ok(()), "the skew is inclusive");
        assert!(w.check(NOW + 120_001).is_err());
        assert!(w.check(NOW + 600_000).is_err(), "ten minutes ahead");
        // Warming up before the planned start is fine, a day before is not.
        assert_eq!(w.check(NOW - 600_000 - 3_600_000), Ok(()));
        assert!(w.check(NOW - 600_000 - 24 * 3_600_000).is_err());
    }

    #[test]
    fn the_earlier_of_planned_start_and_gun_bounds_the_past() {
        let early_gun = fix_window(NOW, NOW, Some(NOW - 3_600_000), &LIMITS);
        assert_eq!(early_gun.earliest_ms, Some(NOW - 7 * 3_600_000));
        let late_gun = fix_window(NOW, NOW - 3_600_000, Some(NOW), &LIMITS);
        assert_eq!(late_gun.earliest_ms, Some(NOW - 7 * 3_600_000));
        let no_gun = fix_window(NOW, NOW - 3_600_000, None, &LIMITS);
        assert_eq!(no_gun.earliest_ms, Some(NOW - 7 * 3_600_000));
    }

    #[test]
    fn sent_at_has_no_lower_bound_but_the_same_skew() {
        let w = sent_at_window(NOW, &LIMITS);
        assert_eq!(w.check(i64::MIN), Ok(()));
        assert_eq!(w.check(1_000), Ok(()));
        assert_eq!(w.check(NOW + 120_000), Ok(()));
        assert!(matches!(w.check(NOW + 120_001), Err(BadTime::Ahead { .. })));
    }

    #[test]
    fn a_batch_names_its_first_offender() {
        let w = fix_window(NOW, NOW, None, &LIMITS);
        assert_eq!(w.first_outside([NOW, NOW + 1, NOW + 2]), None);
        let (i, bad) = w.first_outside([NOW, i64::MAX, i64::MIN]).unwrap();
        assert_eq!(i, 1);
        assert!(matches!(bad, BadTime::Ahead { .. }));
    }

    #[test]
    fn messages_never_fail_on_extreme_times() {
        for at_ms in [i64::MIN, -1, 0, 253_402_300_800_000, i64::MAX] {
            let w = fix_window(NOW, NOW, None, &LIMITS);
            let text = w.check(at_ms).unwrap_err().to_string();
            assert!(text.contains(&at_ms.to_string()), "{text}");
        }
        let text = fix_window(NOW, NOW, None, &LIMITS)
            .check(253_402_300_799_000)
            .unwrap_err()
            .to_string();
        assert!(text.contains("9999-12-31T23:59:59Z"), "{text}");
        assert!(text.contains("device's clock"), "{text}");
    }

    proptest! {
        /// A fix's `at_ms`: for any i64 time, start, gun and clock, the window never panics,
        /// accepts exactly the times within it, and a refusal says on which side.
        #[test]
        fn fix_at_ms_is_judged_for_any_i64(
            at_ms in any::<i64>(),
            now in any::<i64>(),
            start in any::<i64>(),
            gun in proptest::option::of(any::<i64>()),
            skew in any::<u64>(),
            age in any::<u64>(),
        ) {
            let limits = DeviceTimeLimits { max_future_skew_ms: skew, max_fix_age_before_start_ms: age };
            let w = fix_window(now, start, gun, &limits);
            prop_assert!(w.latest_ms >= now);
            let earliest = w.earliest_ms.unwrap();
            prop_assert!(earliest <= start);
            match w.check(at_ms) {
                Ok(()) => prop_assert!(earliest <= at_ms && at_ms <= w.latest_ms),
                Err(BadTime::Ahead { latest_ms, .. }) => prop_assert!(at_ms > latest_ms),
                Err(BadTime::Early { earliest_ms, .. }) => prop_assert!(at_ms < earliest_ms),
            }
            if let Err(bad) = w.check(at_ms) {
                prop_assert!(!bad.to_string().is_empty());
            }
        }

        /// With the default limits and a sane clock, only times near now pass: nothing in
        /// the far future (which would make every later real fix stale) and nothing before
        /// the start's margin (which would stretch a replay).
        #[test]
        fn with_defaults_only_plausible_fix_times_pass(
            at_ms in any::<i64>(),
            start_offset in -86_400_000i64..86_400_000,
        ) {
            let w = fix_window(NOW, NOW + start_offset, Some(NOW.min(NOW + start_offset)), &LIMITS);
            if w.check(at_ms).is_ok() {
                prop_assert!(at_ms <= NOW + 120_000);
                prop_assert!(at_ms >= NOW + start_offset.min(0) - 6 * 3_600_000);
            }
        }

        /// A mail envelope's `sent_at_ms`: any i64 is judged without panicking; only the
        /// future beyond the skew is refused.
        #[test]
        fn sent_at_ms_is_judged_for_any_i64(
            sent_at in any::<i64>(),
            now in any::<i64>(),
            skew in any::<u64>(),
        ) {
            let limits = DeviceTimeLimits { max_future_skew_ms: skew, max_fix_age_before_start_ms: 0 };
            let w = sent_at_window(now, &limits);
            prop_assert_eq!(w.check(sent_at).is_ok(), sent_at <= w.latest_ms);
            if let Err(bad) = w.check(sent_at) {
                prop_assert!(!bad.to_string().is_empty());
            }
        }

        /// A batch is refused for its first bad time, whichever it is.
        #[test]
        fn the_first_offender_of_any_batch_is_named(times in proptest::collection::vec(any::<i64>(), 0..50)) {
            let w = fix_window(NOW, NOW, None, &LIMITS);
            match w.first_outside(times.iter().copied()) {
                None => prop_assert!(times.iter().all(|t| w.check(*t).is_ok())),
                Some((i, _)) => {
                    prop_assert!(w.check(times[i]).is_err());
                    prop_assert!(times[..i].iter().all(|t| w.check(*t).is_ok()));
                }
            }
        }
    }
}
