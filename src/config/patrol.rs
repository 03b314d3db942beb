//! `[patrol]`: duty windows, proximity, connections, points and messages.
//!
//! The duty window lengths and the points a connection is worth are the patrol rules' own
//! types ([`DutyRules`], [`AwardRules`]), read straight from their keys (`duty_*`,
//! `*_points`, `daily_points_cap`), so each key has one definition; the checks below name
//! them.

use super::check::{all_within, ConfigError};
use crate::actors::patrol::ledger::AwardRules;
use crate::actors::patrol::session::DutyRules;
use serde::Deserialize;

/// `[patrol]`: officers on duty, citizens near them, and what a connection is worth.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatrolConfig {
    /// H3 resolution of the proximity index (0..=15); cells a few times smaller than the
    /// nearby radius keep lookups to a few cells.
    pub h3_resolution: u8,
    /// A citizen is told about on-duty officers within this many metres.
    pub nearby_radius_m: f64,
    /// Largest radius an N-nearest query searches, metres.
    pub nearest_max_radius_m: f64,
    /// Most officers one N-nearest query returns.
    pub nearest_max_count: u32,
    /// H3 resolution an officer's position is coarsened to before a citizen sees it.
    pub privacy_resolution: u8,
    /// Distances shown to citizens are rounded to this many metres.
    pub distance_step_m: f64,
    /// `duty_default_minutes`, `duty_max_minutes`: how long a duty window lasts.
    #[serde(flatten)]
    pub duty: DutyRules,
    /// A connect request not answered within this many seconds expires.
    pub connect_timeout_secs: u64,
    /// An accepted request becomes a connection only if the two are this close, metres.
    pub in_person_m: f64,
    /// A position whose reported accuracy is worse than this many metres is refused.
    pub max_accuracy_m: f64,
    /// `officer_points`, `citizen_points`, `daily_points_cap`: what a connection is worth.
    #[serde(flatten)]
    pub award: AwardRules,
    /// Longest direct message, characters.
    pub max_message_chars: usize,
}

impl PatrolConfig {
    /// The `[patrol]` checks, each naming its key.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let p = self;
        let fail = |key: &str, why: String| Err(ConfigError(format!("patrol.{key} {why}")));
        for (key, value) in [
            ("h3_resolution", p.h3_resolution),
            ("privacy_resolution", p.privacy_resolution),
        ] {
            if value > 15 {
                return fail(key, format!("must be an H3 resolution 0..=15, got {value}"));
            }
        }
        for (key, value, max) in [
            ("nearby_radius_m", p.nearby_radius_m, 100_000.0),
            ("nearest_max_radius_m", p.nearest_max_radius_m, 1_000_000.0),
            ("distance_step_m", p.distance_step_m, 10_000.0),
            ("in_person_m", p.in_person_m, 10_000.0),
            ("max_accuracy_m", p.max_accuracy_m, 100_000.0),
        ] {
            if !(value.is_finite() && value > 0.0 && value <= max) {
                return fail(key, format!("must be a number in (0, {max}], got {value}"));
            }
        }
        all_within(
            "patrol",
            &[
                (
                    "nearest_max_count",
                    u64::from(p.nearest_max_count),
                    1,
                    1_000,
                ),
                (
                    "duty_default_minutes",
                    u64::from(p.duty.default_minutes),
                    1,
                    u64::from(p.duty.max_minutes),
                ),
                (
                    "duty_max_minutes",
                    u64::from(p.duty.max_minutes),
                    1,
                    7 * 24 * 60,
                ),
                ("connect_timeout_secs", p.connect_timeout_secs, 1, 86_400),
                ("officer_points", p.award.officer_points, 0, 1_000_000),
                ("citizen_points", p.award.citizen_points, 0, 1_000_000),
                ("daily_points_cap", p.award.daily_cap, 0, 1_000_000_000),
                ("max_message_chars", p.max_message_chars as u64, 1, 16_384),
            ],
            |min, max, value| format!("must be in {min}..={max}, got {value}"),
        )
    }
}
