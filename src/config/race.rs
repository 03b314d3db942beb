//! `[race]` and `[tracking]`: what an admin may create, and how racers' fixes are judged.
//!
//! The rules' own settings are read straight into the domain's types ([`RaceLimits`],
//! [`TrackingRules`], [`DeviceTimeLimits`]; flattened, so the keys stay one flat section)
//! and checked by them, so each key has one definition; only what the server itself uses
//! (ticks, batch sizes) is defined here.

use super::check::{at_least, at_most, ConfigError};
use crate::actors::race::pace::PaceRules;
use crate::actors::race::state::{RaceLimits, StartMode};
use crate::actors::racer::TrackingRules;
use crate::device_time::DeviceTimeLimits;
use serde::Deserialize;

/// `[race]`: limits on what an admin may create.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaceConfig {
    /// `max_name_chars`, `max_course_points`, `max_racers`: the race rules' own limits.
    #[serde(flatten)]
    pub limits: RaceLimits,
    /// Milliseconds between spectator updates.
    pub tick_ms: u64,
    /// Bytes of recent updates kept per watched race for reconnecting spectators.
    pub resume_buffer_bytes: usize,
    /// How many ticks a subscriber may fall behind and still be sent one catch-up frame of
    /// the rows that changed, rather than the whole table.
    pub catch_up_ticks: usize,
    /// Whether scheduled races go live by themselves at their start or wait for the gun;
    /// read through `start_mode()` so a misspelling names the key.
    #[serde(deserialize_with = "start_mode")]
    pub start_mode: StartMode,
}

impl RaceConfig {
    /// Limits that leave room for a race, a tick the server can keep up with, and a resume
    /// buffer that cannot eat the memory.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let limits = &self.limits;
        at_least("race.max_name_chars", limits.max_name_chars as u64, 1)?;
        at_least("race.max_course_points", limits.max_course_points as u64, 2)?;
        at_least("race.max_racers", limits.max_racers as u64, 1)?;
        at_least("race.tick_ms", self.tick_ms, 10)?;
        at_most("race.catch_up_ticks", self.catch_up_ticks as u64, 64)?;
        at_most(
            "race.resume_buffer_bytes",
            self.resume_buffer_bytes as u64,
            256 * 1024 * 1024,
        )
    }
}

/// Reads `race.start_mode` as its typed mode; an unknown spelling is an error naming the key
/// and the accepted values, like every other configuration error.
fn start_mode<'de, D: serde::Deserializer<'de>>(value: D) -> Result<StartMode, D::Error> {
    let text = String::deserialize(value)?;
    StartMode::parse(&text).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "race.start_mode must be \"auto\" or \"gun\", got `{text}`"
        ))
    })
}

/// `[tracking]`: rules for GPS fixes and the device times they carry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingConfig {
    /// How each racer's fixes are judged (accuracy, speed, off-course, cuts, finish).
    #[serde(flatten)]
    pub rules: TrackingRules,
    /// `max_future_skew_ms`, `max_fix_age_before_start_ms`: the window a fix's `at_ms` (and
    /// a mail's `sent_at_ms`) must fall in.
    #[serde(flatten)]
    pub device_time: DeviceTimeLimits,
    /// Most fixes in one batch from a device.
    pub max_fixes_per_batch: usize,
    /// `pace_*`: the reporting interval asked of each device, the race rules' own keys.
    #[serde(flatten)]
    pub pace: PaceRules,
}

impl TrackingConfig {
    /// The rules' and the device-time limits' own checks, and a batch of at least one fix.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.rules.validate()?;
        self.pace.validate()?;
        at_least(
            "tracking.max_fixes_per_batch",
            self.max_fixes_per_batch as u64,
            1,
        )?;
        Ok(self.device_time.validate()?)
    }
}
