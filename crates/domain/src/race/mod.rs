//! The race domain's rules: lifecycle and roster ([`state`]), live standings
//! ([`standings`]), what spectators are told per tick ([`feed`]), results and statistics
//! ([`results`]), the organiser's and the checkpoints' disqualifications
//! ([`disqualification`]), the reporting interval asked of each device ([`pace`]), replays of
//! stored fixes ([`replay`]), whether a race needs its actor in memory ([`residency`]) and the device ids tracking
//! apps report with ([`devices`]).

pub mod devices;
pub mod disqualification;
pub mod feed;
pub mod pace;
pub mod relay;
pub mod replay;
pub mod residency;
pub mod results;
pub mod standings;
pub mod state;

pub use state::{
    Race, RaceCommand, RaceEvent, RaceLimits, RaceState, RaceStatus, RaceSummary, RacerEntry,
};
