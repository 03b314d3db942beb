//! What a racer actor is told and what it answers. Apart from the actor so the race shell,
//! which sends `Report`, and the racer shell, which asks its race for the course, need not
//! import each other.

use super::state::Fix;
use crate::error::Rejection;
use ractor::RpcReplyPort;

/// What a batch of fixes did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixesOutcome {
    /// Fixes that were accepted and journaled.
    pub accepted: u32,
    /// Fixes that changed nothing (stale, inaccurate, impossible, after the finish).
    pub ignored: u32,
    /// The newest applied fix time: the device may forget every fix up to it.
    pub last_at_ms: Option<i64>,
}

/// Messages a racer actor accepts.
pub enum RacerMsg {
    /// Judge and store a batch of fixes, oldest first.
    Fixes {
        /// The fixes.
        fixes: Vec<Fix>,
        /// The outcome, once the accepted ones are durable.
        reply: RpcReplyPort<Result<FixesOutcome, Rejection>>,
    },
    /// Report progress to the race again (its actor restarted and lost its standings).
    Report,
    /// Whether the racer has had nothing to do for the idle time, so it may sleep in its
    /// journal (its race keeps its standing): asked by the supervisor's idle sweep.
    Idle {
        /// True when idle.
        reply: RpcReplyPort<bool>,
    },
    /// Panics inside the handler, to prove supervision restarts racers from the journal.
    #[cfg(test)]
    Panic,
}
