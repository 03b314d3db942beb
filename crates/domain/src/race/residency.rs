//! Whether a race needs its actor in memory now, or may sleep in its journal until a
//! request or its clock wakes it: the one placement rule of the race domain, asked at
//! start-up for every stored race and by an idle race actor before it stops.
//!
//! Pure: the shell passes the time, how long idle lasts and whether anyone is watching, and
//! keeps the wake-up time this answers, so a race scheduled for later is woken when its
//! clock has something to do even though no actor waits for it.

use super::state::{RaceStatus, RaceSummary, StartMode};
use crate::time::UnixMillis;

/// Where a race should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Residency {
    /// In memory: it is live, watched, or its clock acts within the idle time.
    Resident,
    /// In its journal only, until a request asks for it or `wake_at_ms` comes.
    Asleep {
        /// When its clock next has something to do (a start, a cut-off); `None`: never.
        wake_at_ms: Option<UnixMillis>,
    },
}

/// Where race `summary` should be at `now_ms`, for races whose clock runs in `mode`, when
/// an actor with nothing to do stays resident for `idle_ms` and `watched` says whether
/// spectators are subscribed. Read from the summary, so the supervisor can decide for a race
/// whose actor is gone as well as the actor for itself.
///
/// A live race is always resident: fixes, standings and ticks are its work, and its racers
/// sleep one by one instead. A race whose clock acts within `idle_ms` stays, so a start a
/// few minutes away does not cost a stop and a wake-up.
pub fn residency(
    summary: &RaceSummary,
    now_ms: UnixMillis,
    mode: StartMode,
    idle_ms: UnixMillis,
    watched: bool,
) -> Residency {
    if watched || summary.status == RaceStatus::Live {
        return Residency::Resident;
    }
    match summary.next_due_ms(mode) {
        Some(due) if due <= now_ms.saturating_add(idle_ms) => Residency::Resident,
        wake_at_ms => Residency::Asleep { wake_at_ms },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Aggregate;
    use crate::geo::Course;
    use crate::ids::RaceId;
    use crate::race::state::{RaceCommand, RaceInputs, RaceLimits, RaceState};
    use proptest::prelude::*;

    const T0: UnixMillis = 1_795_856_400_000;
    const IDLE: UnixMillis = 300_000;

    fn race(start_at_ms: UnixMillis, cutoff_at_ms: Option<UnixMillis>) -> RaceState {
        let mut state = RaceState::default();
        let id = RaceId::parse("r1").expect("valid id");
        let inputs = RaceInputs {
            id: &id,
            now_ms: T0 - 10 * IDLE,
            limits: RaceLimits {
                max_name_chars: 50,
                max_course_points: 100,
                max_racers: 10,
            },
        };
        let course = Course::from_degrees(&[(46.0, 15.0), (46.01, 15.0)], 10).expect("course");
        let create = RaceCommand::Create {
            name: "Sleepy".into(),
            course,
            start_at_ms,
            cutoff_at_ms,
        };
        let decision = state.decide(create, inputs).expect("created");
        for event in &decision.events {
            state.apply(event);
        }
        state
    }

    fn run(state: &mut RaceState, command: RaceCommand) {
        let id = RaceId::parse("r1").expect("valid id");
        let inputs = RaceInputs {
            id: &id,
            now_ms: T0,
            limits: RaceLimits {
                max_name_chars: 50,
                max_course_points: 100,
                max_racers: 10,
            },
        };
        let decision = state.decide(command, inputs).expect("accepted");
        for event in &decision.events {
            state.apply(event);
        }
    }

    fn placed(
        state: &RaceState,
        now_ms: UnixMillis,
        mode: StartMode,
        idle_ms: UnixMillis,
        watched: bool,
    ) -> Residency {
        let summary = state.race.as_ref().expect("created").summary();
        residency(&summary, now_ms, mode, idle_ms, watched)
    }

    #[test]
    fn a_live_race_stays_and_a_finished_one_sleeps_for_good() {
        let mut state = race(T0, None);
        run(&mut state, RaceCommand::Start);
        assert_eq!(
            placed(&state, T0, StartMode::Gun, IDLE, false),
            Residency::Resident
        );
        run(&mut state, RaceCommand::Finish);
        assert_eq!(
            placed(&state, T0, StartMode::Gun, IDLE, false),
            Residency::Asleep { wake_at_ms: None }
        );
        assert_eq!(
            placed(&state, T0, StartMode::Gun, IDLE, true),
            Residency::Resident,
            "a watched race is not put to sleep under its spectators"
        );
    }

    #[test]
    fn a_race_scheduled_for_later_sleeps_until_its_start() {
        let start = T0 + 10 * IDLE;
        let state = race(start, None);
        assert_eq!(
            placed(&state, T0, StartMode::Auto, IDLE, false),
            Residency::Asleep {
                wake_at_ms: Some(start)
            }
        );
        assert_eq!(
            placed(&state, start - IDLE, StartMode::Auto, IDLE, false),
            Residency::Resident,
            "a start within the idle time keeps it"
        );
        assert_eq!(
            placed(&state, T0, StartMode::Gun, IDLE, false),
            Residency::Asleep { wake_at_ms: None },
            "waiting for the gun, only a request wakes it"
        );
    }

    proptest! {
        /// Whenever the clock would act while the race sleeps, the race is woken no later:
        /// a sleeping race never misses its start or cut-off.
        #[test]
        fn a_sleeping_race_is_woken_by_the_time_its_clock_acts(
            start_after in 0i64..10_000_000,
            cutoff_after_start in proptest::option::of(1i64..20_000_000),
            now_after in 0i64..20_000_000,
            later in 0i64..40_000_000,
            auto in any::<bool>(),
        ) {
            let mode = if auto { StartMode::Auto } else { StartMode::Gun };
            let start = T0 + start_after;
            let state = race(start, cutoff_after_start.map(|c| start + c));
            let now = T0 + now_after;
            if let Residency::Asleep { wake_at_ms } = placed(&state, now, mode, IDLE, false) {
                let t = now + later;
                if state.due(t, mode).is_some() {
                    prop_assert!(wake_at_ms.is_some_and(|w| w <= t));
                }
                prop_assert!(state.due(now, mode).is_none(), "nothing is due while asleep");
            }
        }
    }
}
