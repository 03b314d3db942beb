//! The racer domain: one racer's tracking rules ([`state`]) — which fixes count, how far
//! along the course the racer is, checkpoints, off-course and finish. The race actor folds
//! racers' progress into standings.

pub mod state;

pub use state::{CourseGeometry, Fix, FixVerdict, RacerEvent, RacerState, TrackingRules};
