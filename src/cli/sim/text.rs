//! How the simulator words what it prints: race-time clocks, race states, and a reply it did
//! not expect.
//!
//! How it fits: shared by the fault descriptions ([`super::faults`]), the start-up line of
//! `sim race` ([`super::race`]) and the monitor's progress and failures ([`super::monitor`]).

use crate::cli::CliError;
use crate::net::protocol::{RaceStateView, Reply};

/// `h:mm:ss`.
pub(crate) fn clock(secs: f64) -> String {
    let total = secs.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", total / 3600, total / 60 % 60, total % 60)
}

/// A race state as the CLI prints it.
pub(super) fn state_name(state: RaceStateView) -> &'static str {
    match state {
        RaceStateView::Scheduled => "scheduled",
        RaceStateView::Live => "live",
        RaceStateView::Finished => "finished",
        RaceStateView::Cancelled => "cancelled",
    }
}

/// A reply of the wrong type: a server bug or a version mismatch.
pub(super) fn unexpected(reply: &Reply) -> CliError {
    CliError::Failed(format!("unexpected reply {}", reply.type_name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_reads_well() {
        assert_eq!(clock(3_725.4), "1:02:05");
        assert_eq!(clock(-3.0), "0:00:00");
    }
}
