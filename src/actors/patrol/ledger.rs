//! Placeholder: filled in by the patrol work.
