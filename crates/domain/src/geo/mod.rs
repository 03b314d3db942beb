//! Pure geometry shared by the domains: positions in fixed point, geodesic distances and
//! race courses. No async, no I/O beyond parsing bytes handed in.

pub mod course;
pub mod finish;
pub mod grid;
pub mod position;
pub mod projection;

pub use course::{Checkpoint, Course, CourseError, WaypointMark};
pub use position::Position;
pub use projection::{CourseIndex, Projection, ProjectionWindow};
