//! The race domain: lifecycle rules ([`state`]), live standings ([`standings`]), the actor that persists and applies them
//! ([`actor`]), the supervisor that recovers and restarts race actors ([`supervisor`]), and
//! the facade the API layer calls ([`domain`]).

pub mod actor;
pub mod device_index;
pub mod domain;
pub mod supervisor;

// The race's rules (the domain crate), beside the shell that runs them.
pub use peloton_domain::race::{
    devices, disqualification, feed, pace, replay, residency, results, standings, state,
};

pub use domain::RaceDomain;
pub use state::{
    Race, RaceCommand, RaceEvent, RaceLimits, RaceState, RaceStatus, RaceSummary, RacerEntry,
};

/// Journal key prefix and metrics label for race actors.
pub const KIND: &str = "race";

/// Journal key prefix of a race's device bindings (`devices/<race>`): journaled beside the
/// race, not in it, since they are credentials.
pub const DEVICES_KIND: &str = "devices";
