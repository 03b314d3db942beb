//! One racer's tracking rules: which fixes count, where on the course they put the racer,
//! off-course episodes, suspected cuts, splits and the finish.

pub mod state;

pub use state::{
    CourseGeometry, CutRule, Fix, FixVerdict, Incidents, OffCourseEpisode, RacerEvent, RacerState,
    SuspectedCut, TrackingRules,
};
