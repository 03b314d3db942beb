//! The race domain's rules: lifecycle and roster ([`state`]), live standings
//! ([`standings`]), what spectators are told per tick ([`feed`]), results and statistics
//! ([`results`]), the organiser's and the checkpoints' disqualifications
//! ([`disqualification`]) and replays of stored fixes ([`replay`]).

pub mod disqualification;
pub mod feed;
pub mod replay;
pub mod results;
pub mod standings;
pub mod state;

pub use state::{
    Race, RaceCommand, RaceEvent, RaceLimits, RaceState, RaceStatus, RaceSummary, RacerEntry,
};
