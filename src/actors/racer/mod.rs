//! The racer domain: one racer's tracking rules ([`state`]) and the actor that journals
//! and applies them ([`actor`]) — which fixes count, how far
//! along the course the racer is, checkpoints, off-course and finish. The race actor folds
//! racers' progress into standings.

pub mod actor;
pub mod state;

pub use state::{CourseGeometry, Fix, FixVerdict, RacerEvent, RacerState, TrackingRules};

/// Journal key prefix and metrics label for racer actors.
pub const KIND: &str = "racer";
