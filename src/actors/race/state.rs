//! The race lifecycle as a pure, event-sourced state: `Scheduled -> Live -> Finished |
//! Cancelled`.
//!
//! [`RaceState::handle`] decides (command -> events or a typed rejection) without changing
//! anything; [`RaceState::apply`] folds an event in and never fails, because events are facts
//! that were already accepted and journaled. Recovery is therefore just `apply` over the
//! journal, and the actor shell stays free of rules.

use crate::error::{ErrorCode, Rejection};
use crate::geo::Course;
use crate::ids::RaceId;
use crate::time::UnixMillis;
use serde::{Deserialize, Serialize};

/// Where a race is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RaceStatus {
    /// Created, not started; may still be edited.
    Scheduled,
    /// Racing now.
    Live,
    /// Over; results are final.
    Finished,
    /// Called off; kept for the record.
    Cancelled,
}

impl RaceStatus {
    /// The lowercase name used in JSON and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            RaceStatus::Scheduled => "scheduled",
            RaceStatus::Live => "live",
            RaceStatus::Finished => "finished",
            RaceStatus::Cancelled => "cancelled",
        }
    }

    /// Finished and cancelled races accept no further commands.
    pub fn is_terminal(self) -> bool {
        matches!(self, RaceStatus::Finished | RaceStatus::Cancelled)
    }
}

/// Limits that come from configuration, passed in so the rules stay pure.
#[derive(Debug, Clone, Copy)]
pub struct RaceLimits {
    /// Longest name in characters.
    pub max_name_chars: usize,
    /// Most points a course may have.
    pub max_course_points: usize,
    /// Most racers one race may register.
    pub max_racers: usize,
}

/// A registered racer: who wears which bib.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RacerEntry {
    /// Bib number, unique within the race; racer tokens are bound to it.
    pub bib: u32,
    /// Display name.
    pub name: String,
    /// Team, if any.
    pub team: Option<String>,
    /// Contact email for results mail, if given.
    pub email: Option<String>,
}

/// Highest bib number accepted.
pub const MAX_BIB: u32 = 999_999;

/// What an admin asks of a race.
#[derive(Debug, Clone, PartialEq)]
pub enum RaceCommand {
    /// Bring a new race into existence.
    Create {
        /// Display name.
        name: String,
        /// Validated course.
        course: Course,
        /// Planned start.
        start_at_ms: UnixMillis,
        /// Time after which unfinished racers are DNF.
        cutoff_at_ms: Option<UnixMillis>,
    },
    /// Change a scheduled race; `None` leaves a field as it is.
    Update {
        /// New name.
        name: Option<String>,
        /// New course.
        course: Option<Course>,
        /// New planned start.
        start_at_ms: Option<UnixMillis>,
        /// New cut-off; `Some(None)` removes it.
        cutoff_at_ms: Option<Option<UnixMillis>>,
    },
    /// Open the race.
    Start,
    /// Close the race; results become final.
    Finish,
    /// Register racers, all or none. Re-registering a bib with identical details is a
    /// no-op, so a retried import is harmless.
    RegisterRacers {
        /// The racers.
        racers: Vec<RacerEntry>,
    },
    /// Call the race off.
    Cancel {
        /// Why, for the record.
        reason: Option<String>,
    },
}

/// What happened to a race: the journal's content.
///
/// The variant order is the storage encoding: append new variants at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RaceEvent {
    /// The race was created.
    Created {
        /// Its id, so a journal read alone says which race it is.
        id: RaceId,
        /// Display name.
        name: String,
        /// The course.
        course: Course,
        /// Planned start.
        start_at_ms: UnixMillis,
        /// Cut-off, if any.
        cutoff_at_ms: Option<UnixMillis>,
        /// When it was created.
        at_ms: UnixMillis,
    },
    /// A scheduled race was edited; only the `Some` fields changed.
    Updated {
        /// New name.
        name: Option<String>,
        /// New course.
        course: Option<Course>,
        /// New planned start.
        start_at_ms: Option<UnixMillis>,
        /// New cut-off (`Some(None)` removed it).
        cutoff_at_ms: Option<Option<UnixMillis>>,
        /// When.
        at_ms: UnixMillis,
    },
    /// The race went live.
    Started {
        /// When.
        at_ms: UnixMillis,
    },
    /// The race finished.
    Finished {
        /// When.
        at_ms: UnixMillis,
    },
    /// The race was cancelled.
    Cancelled {
        /// Why, if given.
        reason: Option<String>,
        /// When.
        at_ms: UnixMillis,
    },
    /// Racers were registered.
    RacersRegistered {
        /// The new entries (validated, not yet registered before).
        racers: Vec<RacerEntry>,
        /// When.
        at_ms: UnixMillis,
    },
}

/// A race that exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Race {
    /// Its id.
    pub id: RaceId,
    /// Display name.
    pub name: String,
    /// The course.
    pub course: Course,
    /// Planned start.
    pub start_at_ms: UnixMillis,
    /// Cut-off, if any.
    pub cutoff_at_ms: Option<UnixMillis>,
    /// Lifecycle position.
    pub status: RaceStatus,
    /// When it was created.
    pub created_at_ms: UnixMillis,
    /// When it actually went live.
    pub started_at_ms: Option<UnixMillis>,
    /// When it finished.
    pub finished_at_ms: Option<UnixMillis>,
    /// When it was cancelled.
    pub cancelled_at_ms: Option<UnixMillis>,
    /// Why it was cancelled.
    pub cancel_reason: Option<String>,
    /// Registered racers by bib.
    pub roster: std::collections::BTreeMap<u32, RacerEntry>,
}

/// What lists and lookups need of a race, without its course points: kept in the
/// directory so reading it costs no actor round trip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RaceSummary {
    /// Its id.
    pub id: RaceId,
    /// Display name.
    pub name: String,
    /// Lifecycle position.
    pub status: RaceStatus,
    /// Planned start.
    pub start_at_ms: UnixMillis,
    /// Cut-off, if any.
    pub cutoff_at_ms: Option<UnixMillis>,
    /// When it was created.
    pub created_at_ms: UnixMillis,
    /// When it went live.
    pub started_at_ms: Option<UnixMillis>,
    /// When it finished.
    pub finished_at_ms: Option<UnixMillis>,
    /// When it was cancelled.
    pub cancelled_at_ms: Option<UnixMillis>,
    /// Why it was cancelled.
    pub cancel_reason: Option<String>,
    /// Number of course points.
    pub course_points: u32,
    /// Geodesic course length in metres.
    pub course_length_m: f64,
    /// Registered racers.
    pub racers: u32,
}

impl Race {
    /// The race without its course geometry.
    pub fn summary(&self) -> RaceSummary {
        RaceSummary {
            id: self.id.clone(),
            name: self.name.clone(),
            status: self.status,
            start_at_ms: self.start_at_ms,
            cutoff_at_ms: self.cutoff_at_ms,
            created_at_ms: self.created_at_ms,
            started_at_ms: self.started_at_ms,
            finished_at_ms: self.finished_at_ms,
            cancelled_at_ms: self.cancelled_at_ms,
            cancel_reason: self.cancel_reason.clone(),
            course_points: u32::try_from(self.course.points.len()).unwrap_or(u32::MAX),
            course_length_m: self.course.length_m,
            racers: u32::try_from(self.roster.len()).unwrap_or(u32::MAX),
        }
    }
}

/// The state of one race actor: nothing yet, or a race.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RaceState {
    /// `None` until the `Created` event is applied.
    pub race: Option<Race>,
}

/// Earliest and latest times accepted for a start or cut-off (2000-01-01 .. 2200-01-01):
/// anything outside is a typo, not a race.
const EARLIEST_MS: UnixMillis = 946_684_800_000;
const LATEST_MS: UnixMillis = 7_258_118_400_000;

impl RaceState {
    /// Decides what `command` means for this race at `now_ms`.
    pub fn handle(
        &self,
        id: &RaceId,
        command: RaceCommand,
        now_ms: UnixMillis,
        limits: RaceLimits,
    ) -> Result<Vec<RaceEvent>, Rejection> {
        let Some(race) = &self.race else {
            return match command {
                RaceCommand::Create {
                    name,
                    course,
                    start_at_ms,
                    cutoff_at_ms,
                } => {
                    let name = validate_name(&name, limits)?;
                    validate_times(start_at_ms, cutoff_at_ms)?;
                    Ok(vec![RaceEvent::Created {
                        id: id.clone(),
                        name,
                        course,
                        start_at_ms,
                        cutoff_at_ms,
                        at_ms: now_ms,
                    }])
                }
                _ => Err(Rejection::new(
                    ErrorCode::NotFound,
                    format!("race {id} does not exist"),
                )),
            };
        };
        let refuse = |what: &str| {
            Err(Rejection::new(
                ErrorCode::InvalidTransition,
                format!(
                    "race {} is {}; cannot {what}",
                    race.id,
                    race.status.as_str()
                ),
            ))
        };
        match command {
            RaceCommand::Create { .. } => Err(Rejection::new(
                ErrorCode::InvalidTransition,
                format!("race {} already exists", race.id),
            )),
            RaceCommand::Update {
                name,
                course,
                start_at_ms,
                cutoff_at_ms,
            } => {
                if race.status != RaceStatus::Scheduled {
                    return refuse("update it (only scheduled races can be edited)");
                }
                let name = name.map(|n| validate_name(&n, limits)).transpose()?;
                let start = start_at_ms.unwrap_or(race.start_at_ms);
                let cutoff = cutoff_at_ms.unwrap_or(race.cutoff_at_ms);
                validate_times(start, cutoff)?;
                if name.is_none()
                    && course.is_none()
                    && start_at_ms.is_none()
                    && cutoff_at_ms.is_none()
                {
                    return Err(Rejection::invalid("update names no field to change"));
                }
                Ok(vec![RaceEvent::Updated {
                    name,
                    course,
                    start_at_ms,
                    cutoff_at_ms,
                    at_ms: now_ms,
                }])
            }
            RaceCommand::Start => match race.status {
                RaceStatus::Scheduled => Ok(vec![RaceEvent::Started { at_ms: now_ms }]),
                _ => refuse("start it"),
            },
            RaceCommand::Finish => match race.status {
                RaceStatus::Live => Ok(vec![RaceEvent::Finished { at_ms: now_ms }]),
                _ => refuse("finish it (only live races can finish)"),
            },
            RaceCommand::RegisterRacers { racers } => {
                if race.status.is_terminal() {
                    return refuse("register racers");
                }
                let racers = validate_roster(race, racers, limits)?;
                if racers.is_empty() {
                    return Ok(Vec::new());
                }
                Ok(vec![RaceEvent::RacersRegistered {
                    racers,
                    at_ms: now_ms,
                }])
            }
            RaceCommand::Cancel { reason } => {
                if race.status.is_terminal() {
                    return refuse("cancel it");
                }
                let reason = reason
                    .map(|r| validate_text("cancel reason", &r, 500))
                    .transpose()?;
                Ok(vec![RaceEvent::Cancelled {
                    reason,
                    at_ms: now_ms,
                }])
            }
        }
    }

    /// Folds one accepted event into the state.
    pub fn apply(&mut self, event: &RaceEvent) {
        match event {
            RaceEvent::Created {
                id,
                name,
                course,
                start_at_ms,
                cutoff_at_ms,
                at_ms,
            } => {
                self.race = Some(Race {
                    id: id.clone(),
                    name: name.clone(),
                    course: course.clone(),
                    start_at_ms: *start_at_ms,
                    cutoff_at_ms: *cutoff_at_ms,
                    status: RaceStatus::Scheduled,
                    created_at_ms: *at_ms,
                    started_at_ms: None,
                    finished_at_ms: None,
                    cancelled_at_ms: None,
                    cancel_reason: None,
                    roster: std::collections::BTreeMap::new(),
                });
            }
            RaceEvent::Updated {
                name,
                course,
                start_at_ms,
                cutoff_at_ms,
                ..
            } => {
                if let Some(race) = &mut self.race {
                    if let Some(name) = name {
                        race.name = name.clone();
                    }
                    if let Some(course) = course {
                        race.course = course.clone();
                    }
                    if let Some(start) = start_at_ms {
                        race.start_at_ms = *start;
                    }
                    if let Some(cutoff) = cutoff_at_ms {
                        race.cutoff_at_ms = *cutoff;
                    }
                }
            }
            RaceEvent::Started { at_ms } => {
                if let Some(race) = &mut self.race {
                    race.status = RaceStatus::Live;
                    race.started_at_ms = Some(*at_ms);
                }
            }
            RaceEvent::Finished { at_ms } => {
                if let Some(race) = &mut self.race {
                    race.status = RaceStatus::Finished;
                    race.finished_at_ms = Some(*at_ms);
                }
            }
            RaceEvent::RacersRegistered { racers, .. } => {
                if let Some(race) = &mut self.race {
                    for racer in racers {
                        race.roster.insert(racer.bib, racer.clone());
                    }
                }
            }
            RaceEvent::Cancelled { reason, at_ms } => {
                if let Some(race) = &mut self.race {
                    race.status = RaceStatus::Cancelled;
                    race.cancelled_at_ms = Some(*at_ms);
                    race.cancel_reason = reason.clone();
                }
            }
        }
    }
}

/// Checks a registration batch against itself and the roster; returns the entries that are
/// new. Every problem is reported with the row it is on (0-based within the batch), so a
/// CSV import can name the line.
fn validate_roster(
    race: &Race,
    racers: Vec<RacerEntry>,
    limits: RaceLimits,
) -> Result<Vec<RacerEntry>, Rejection> {
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeMap::new();
    let mut fresh = Vec::new();
    for (row, entry) in racers.into_iter().enumerate() {
        match validate_entry(entry) {
            Err(reason) => problems.push(format!("row {row}: {reason}")),
            Ok(entry) => {
                if let Some(first) = seen.insert(entry.bib, row) {
                    problems.push(format!(
                        "row {row}: bib {} is also on row {first}",
                        entry.bib
                    ));
                    continue;
                }
                match race.roster.get(&entry.bib) {
                    Some(existing) if *existing == entry => {}
                    Some(existing) => problems.push(format!(
                        "row {row}: bib {} is already registered to {}",
                        entry.bib, existing.name
                    )),
                    None => fresh.push(entry),
                }
            }
        }
    }
    if race.roster.len() + fresh.len() > limits.max_racers {
        problems.push(format!(
            "a race may have at most {} racers",
            limits.max_racers
        ));
    }
    if problems.is_empty() {
        return Ok(fresh);
    }
    let shown = problems.len().min(20);
    let more = problems.len() - shown;
    let mut message = format!(
        "nothing registered; {} problem(s): {}",
        problems.len(),
        problems[..shown].join("; ")
    );
    if more > 0 {
        message.push_str(&format!("; and {more} more"));
    }
    Err(Rejection::invalid(message))
}

/// Validates and normalises one registration (trimmed text, empty optional fields dropped);
/// public so an import tool can report every bad line before sending anything.
pub fn validate_entry(entry: RacerEntry) -> Result<RacerEntry, String> {
    if entry.bib == 0 || entry.bib > MAX_BIB {
        return Err(format!("bib must be 1..={MAX_BIB}, got {}", entry.bib));
    }
    let name = validate_text("name", &entry.name, 120).map_err(|r| r.message)?;
    let team = entry
        .team
        .filter(|t| !t.trim().is_empty())
        .map(|t| validate_text("team", &t, 120))
        .transpose()
        .map_err(|r| r.message)?;
    let email = entry
        .email
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let e = e.trim();
            crate::ids::validate_email("email", e)
                .map(|()| e.to_owned())
                .map_err(|r| r.message)
        })
        .transpose()?;
    Ok(RacerEntry {
        bib: entry.bib,
        name,
        team,
        email,
    })
}

fn validate_name(name: &str, limits: RaceLimits) -> Result<String, Rejection> {
    validate_text("race name", name, limits.max_name_chars)
}

/// Trims and checks free text: not empty, not too long, no control characters.
fn validate_text(field: &str, text: &str, max_chars: usize) -> Result<String, Rejection> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Rejection::invalid(format!("{field} must not be empty")));
    }
    let chars = text.chars().count();
    if chars > max_chars {
        return Err(Rejection::invalid(format!(
            "{field} is {chars} characters; the limit is {max_chars}"
        )));
    }
    if text.chars().any(char::is_control) {
        return Err(Rejection::invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(text.to_owned())
}

fn validate_times(
    start_at_ms: UnixMillis,
    cutoff_at_ms: Option<UnixMillis>,
) -> Result<(), Rejection> {
    if !(EARLIEST_MS..=LATEST_MS).contains(&start_at_ms) {
        return Err(Rejection::invalid(
            "start time must be between 2000 and 2200",
        ));
    }
    if let Some(cutoff) = cutoff_at_ms {
        if cutoff <= start_at_ms || cutoff > LATEST_MS {
            return Err(Rejection::invalid(
                "cut-off must be after the start time (and before 2200)",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: RaceLimits = RaceLimits {
        max_name_chars: 40,
        max_course_points: 100,
        max_racers: 3,
    };
    const START: UnixMillis = 1_795_856_400_000;

    fn id() -> RaceId {
        RaceId::parse("r1").unwrap()
    }

    fn course() -> Course {
        Course::from_degrees(&[(46.0, 15.0), (46.01, 15.0)], 10).unwrap()
    }

    fn create() -> RaceCommand {
        RaceCommand::Create {
            name: " Tour ".into(),
            course: course(),
            start_at_ms: START,
            cutoff_at_ms: None,
        }
    }

    fn run(state: &mut RaceState, command: RaceCommand) -> Result<(), Rejection> {
        let events = state.handle(&id(), command, START, LIMITS)?;
        for e in &events {
            state.apply(e);
        }
        Ok(())
    }

    #[test]
    fn the_happy_path_goes_scheduled_live_finished() {
        let mut s = RaceState::default();
        run(&mut s, create()).unwrap();
        assert_eq!(s.race.as_ref().unwrap().name, "Tour");
        assert_eq!(s.race.as_ref().unwrap().status, RaceStatus::Scheduled);
        run(&mut s, RaceCommand::Start).unwrap();
        assert_eq!(s.race.as_ref().unwrap().status, RaceStatus::Live);
        run(&mut s, RaceCommand::Finish).unwrap();
        assert_eq!(s.race.as_ref().unwrap().status, RaceStatus::Finished);
    }

    #[test]
    fn invalid_transitions_are_typed() {
        let mut s = RaceState::default();
        assert_eq!(
            run(&mut s, RaceCommand::Start).unwrap_err().code,
            ErrorCode::NotFound
        );
        run(&mut s, create()).unwrap();
        assert_eq!(
            run(&mut s, RaceCommand::Finish).unwrap_err().code,
            ErrorCode::InvalidTransition
        );
        assert_eq!(
            run(&mut s, create()).unwrap_err().code,
            ErrorCode::InvalidTransition
        );
        run(&mut s, RaceCommand::Start).unwrap();
        let update = RaceCommand::Update {
            name: Some("x".into()),
            course: None,
            start_at_ms: None,
            cutoff_at_ms: None,
        };
        assert_eq!(
            run(&mut s, update).unwrap_err().code,
            ErrorCode::InvalidTransition
        );
        run(
            &mut s,
            RaceCommand::Cancel {
                reason: Some("storm".into()),
            },
        )
        .unwrap();
        let err = run(&mut s, RaceCommand::Start).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidTransition);
        assert!(err.message.contains("cancelled"), "{}", err.message);
    }

    #[test]
    fn bad_names_and_times_are_invalid_arguments() {
        let s = RaceState::default();
        for (name, start, cutoff) in [
            ("   ", START, None),
            ("a\u{7}b", START, None),
            (&"x".repeat(41)[..], START, None),
            ("ok", 0, None),
            ("ok", START, Some(START)),
        ] {
            let cmd = RaceCommand::Create {
                name: name.into(),
                course: course(),
                start_at_ms: start,
                cutoff_at_ms: cutoff,
            };
            assert_eq!(
                s.handle(&id(), cmd, START, LIMITS).unwrap_err().code,
                ErrorCode::InvalidArgument
            );
        }
    }

    fn entry(bib: u32, name: &str) -> RacerEntry {
        RacerEntry {
            bib,
            name: name.into(),
            team: None,
            email: Some("a@b.si".into()),
        }
    }

    #[test]
    fn registration_is_all_or_nothing_and_idempotent() {
        let mut s = RaceState::default();
        run(&mut s, create()).unwrap();
        run(
            &mut s,
            RaceCommand::RegisterRacers {
                racers: vec![entry(1, "Ana"), entry(2, "Bor")],
            },
        )
        .unwrap();
        let err = run(
            &mut s,
            RaceCommand::RegisterRacers {
                racers: vec![
                    entry(3, "Cene"),
                    entry(3, "Dan"),
                    entry(0, "Eva"),
                    entry(1, "Not Ana"),
                ],
            },
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert!(
            err.message.contains("row 1")
                && err.message.contains("row 2")
                && err.message.contains("row 3"),
            "{}",
            err.message
        );
        assert_eq!(
            s.race.as_ref().unwrap().roster.len(),
            2,
            "nothing of a bad batch is registered"
        );
        // A retried batch changes nothing and emits nothing.
        let events = s
            .handle(
                &id(),
                RaceCommand::RegisterRacers {
                    racers: vec![entry(1, "Ana")],
                },
                START,
                LIMITS,
            )
            .unwrap();
        assert!(events.is_empty());
        let mut bad_mail = entry(4, "Fran");
        bad_mail.email = Some("fran at home".into());
        assert!(run(
            &mut s,
            RaceCommand::RegisterRacers {
                racers: vec![bad_mail]
            }
        )
        .unwrap_err()
        .message
        .contains("email"));
        run(
            &mut s,
            RaceCommand::RegisterRacers {
                racers: vec![entry(3, "Cene")],
            },
        )
        .unwrap();
        let err = run(
            &mut s,
            RaceCommand::RegisterRacers {
                racers: vec![entry(4, "Dan")],
            },
        )
        .unwrap_err();
        assert!(err.message.contains("at most 3"), "{}", err.message);
    }

    fn any_command() -> impl Strategy<Value = RaceCommand> {
        prop_oneof![
            (any::<bool>(), 0i64..3).prop_map(|(named, shift)| RaceCommand::Create {
                name: if named { "Race".into() } else { String::new() },
                course: course(),
                start_at_ms: START + shift,
                cutoff_at_ms: None,
            }),
            (
                proptest::option::of("[a-z ]{0,50}"),
                proptest::option::of(proptest::option::of(START - 5..START + 5))
            )
                .prop_map(|(name, cutoff)| RaceCommand::Update {
                    name,
                    course: None,
                    start_at_ms: None,
                    cutoff_at_ms: cutoff
                }),
            Just(RaceCommand::Start),
            Just(RaceCommand::Finish),
            proptest::option::of("[a-z]{0,8}").prop_map(|reason| RaceCommand::Cancel { reason }),
        ]
    }

    proptest! {
        /// Any command sequence: status only moves along the lifecycle's edges, terminal
        /// states accept nothing, and replaying the accepted events rebuilds the same state.
        #[test]
        fn lifecycle_edges_hold_and_replay_is_exact(commands in proptest::collection::vec(any_command(), 0..30)) {
            let mut state = RaceState::default();
            let mut journal = Vec::new();
            for command in commands {
                let before = state.race.as_ref().map(|r| r.status);
                match state.handle(&id(), command, START, LIMITS) {
                    Ok(events) => {
                        prop_assert!(!before.is_some_and(RaceStatus::is_terminal));
                        for e in &events { state.apply(e); }
                        journal.extend(events);
                    }
                    Err(rejection) => prop_assert!(!rejection.message.is_empty()),
                }
                let after = state.race.as_ref().map(|r| r.status);
                let allowed = matches!(
                    (before, after),
                    (a, b) if a == b
                ) || matches!(
                    (before, after),
                    (None, Some(RaceStatus::Scheduled))
                        | (Some(RaceStatus::Scheduled), Some(RaceStatus::Live | RaceStatus::Cancelled))
                        | (Some(RaceStatus::Live), Some(RaceStatus::Finished | RaceStatus::Cancelled))
                );
                prop_assert!(allowed, "{:?} -> {:?}", before, after);
            }
            let mut replayed = RaceState::default();
            for e in &journal { replayed.apply(e); }
            prop_assert_eq!(replayed, state);
        }
    }
}
