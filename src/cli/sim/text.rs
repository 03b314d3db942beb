//! How the simulator words what it prints: race-time clocks and race states.
//!
//! How it fits: shared by the fault descriptions ([`super::faults`]), the start-up line of
//! `sim race` ([`super::race`]) and the monitor's progress and failures ([`super::monitor`]).

use crate::net::protocol::RaceStateView;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_reads_well() {
        assert_eq!(clock(3_725.4), "1:02:05");
        assert_eq!(clock(-3.0), "0:00:00");
    }
}
