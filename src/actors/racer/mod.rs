//! The racer domain: one racer's tracking rules ([`state`]) and the actor that journals
//! and applies them ([`actor`]) — which fixes count, how far
//! along the course the racer is, checkpoints, off-course and finish. The race actor folds
//! racers' progress into standings.

pub mod actor;
#[cfg(test)]
mod bad_rides;
pub mod msg;
#[cfg(test)]
mod size_tests;

// The racer's rules (the domain crate), beside the shell that runs them.
pub use peloton_domain::racer::state;

pub use state::{
    CourseGeometry, CutRule, Fix, FixVerdict, Incidents, OffCourseEpisode, RacerEvent, RacerState,
    SuspectedCut, TrackingRules,
};

/// Journal key prefix and metrics label for racer actors.
pub const KIND: &str = "racer";
