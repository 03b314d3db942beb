//! The race lifecycle as a pure, event-sourced state: `Scheduled -> Live -> Finished |
//! Cancelled`.
//!
//! [`RaceState::handle`] decides (command -> events or a typed rejection) without changing
//! anything; [`RaceState::apply`] folds an event in and never fails, because events are facts
//! that were already accepted and journaled. Recovery is therefore just `apply` over the
//! journal, and the actor shell stays free of rules.

use crate::aggregate::{Aggregate, Decision};
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

    /// Finished and cancelled races accept no further commands, except that a finished
    /// race's results may still be corrected by disqualifying or reinstating a racer.
    pub fn is_terminal(self) -> bool {
        matches!(self, RaceStatus::Finished | RaceStatus::Cancelled)
    }
}

/// How a scheduled race goes live: the organiser's choice, from `race.start_mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum StartMode {
    /// At its planned start, by itself; `race start` still starts it early.
    #[default]
    Auto,
    /// Only when an admin fires the gun (`race start`); the planned start is a guide.
    Gun,
}

impl StartMode {
    /// The configuration spelling (`"auto"`, `"gun"`), or `None` for anything else.
    pub fn parse(text: &str) -> Option<StartMode> {
        match text {
            "auto" => Some(StartMode::Auto),
            "gun" => Some(StartMode::Gun),
            _ => None,
        }
    }

    /// The configuration spelling, for logs and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            StartMode::Auto => "auto",
            StartMode::Gun => "gun",
        }
    }
}

/// The reason recorded when a race waiting for its gun is overtaken by its cut-off: it never
/// ran, so there are no results to make final.
pub const CUTOFF_BEFORE_START: &str = "the cut-off passed before the race was started";

/// What the clock requires of a race at some moment (see [`RaceState::due`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockAction {
    /// The planned start has come (automatic start): the race goes live.
    Start,
    /// The cut-off has passed for a live race: results become final, the unfinished DNF.
    Finish,
    /// The cut-off passed before an automatic start happened (the server was down across
    /// both moments): the race was due to run and is over, so it goes live and finishes,
    /// and its racers are judged like any race's (DNS/DNF), instead of waiting forever.
    StartAndFinish,
    /// Gun mode: the cut-off passed and nobody fired the gun; the race is called off with
    /// [`CUTOFF_BEFORE_START`].
    Cancel,
}

impl ClockAction {
    /// The ordinary commands that carry it out, in order; each is decided, journaled and
    /// applied like an admin's, so the clock adds no path around the rules.
    pub fn commands(self) -> Vec<RaceCommand> {
        match self {
            ClockAction::Start => vec![RaceCommand::Start],
            ClockAction::Finish => vec![RaceCommand::Finish],
            ClockAction::StartAndFinish => vec![RaceCommand::Start, RaceCommand::Finish],
            ClockAction::Cancel => vec![RaceCommand::Cancel {
                reason: Some(CUTOFF_BEFORE_START.to_owned()),
            }],
        }
    }

    /// Why the race changed by itself, for the log.
    pub fn describe(self) -> &'static str {
        match self {
            ClockAction::Start => "went live at its start time",
            ClockAction::Finish => "finished: the cut-off has passed",
            ClockAction::StartAndFinish => {
                "went live and finished: its start and cut-off both passed while it waited"
            }
            ClockAction::Cancel => "cancelled: the cut-off passed before the gun",
        }
    }
}

/// Limits that come from configuration (`[race]`, read directly into this type), passed
/// in so the rules stay pure.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// The organiser's decision that a racer broke the rules (a confirmed cut, or any other
    /// breach): listed `dsq` in the results, whatever the tracking says. Allowed while the
    /// race is live or finished, since results are corrected after the race too.
    Disqualify {
        /// The racer; must be registered.
        bib: u32,
        /// Why, in the organiser's words: published with the results, so required.
        reason: String,
    },
    /// Undo a disqualification that was a mistake; the racer's tracked status returns.
    Reinstate {
        /// The racer; must be registered.
        bib: u32,
    },
}

/// Longest disqualification reason in characters: a sentence or two for the results, not
/// a report.
pub const MAX_DSQ_REASON_CHARS: usize = 500;

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
    /// The organiser disqualified a racer (or changed the reason of a disqualification).
    RacerDisqualified {
        /// The racer.
        bib: u32,
        /// Why, validated and trimmed.
        reason: String,
        /// When the decision was taken, for the record.
        at_ms: UnixMillis,
    },
    /// The organiser withdrew a racer's disqualification.
    RacerReinstated {
        /// The racer.
        bib: u32,
        /// When, for the record.
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
    /// The organiser's disqualifications: bib -> reason. Kept apart from tracking, which
    /// only flags suspected cuts: the decision is a person's, and it wins in the results.
    pub disqualified: std::collections::BTreeMap<u32, String>,
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
    /// The highest bib with an email address: the last results mail a finish submits (they
    /// go in bib order), so a restart can tell from the mail it finds whether they all went
    /// without waking the race. `None`: nobody to mail.
    pub last_bib_with_email: Option<u32>,
}

impl RaceSummary {
    /// The earliest moment the race's clock will act (see [`RaceState::next_due_ms`]),
    /// read from the summary alone: what a sleeping race's supervisor wakes it for.
    pub fn next_due_ms(&self, mode: StartMode) -> Option<UnixMillis> {
        next_due_ms(self.status, self.start_at_ms, self.cutoff_at_ms, mode)
    }
}

/// The earliest moment at which [`RaceState::due`] asks for something, from the fields it
/// reads: one rule for the race and its summary.
fn next_due_ms(
    status: RaceStatus,
    start_at_ms: UnixMillis,
    cutoff_at_ms: Option<UnixMillis>,
    mode: StartMode,
) -> Option<UnixMillis> {
    match (status, mode) {
        (RaceStatus::Scheduled, StartMode::Auto) => {
            Some(cutoff_at_ms.map_or(start_at_ms, |c| c.min(start_at_ms)))
        }
        (RaceStatus::Scheduled, StartMode::Gun) | (RaceStatus::Live, _) => cutoff_at_ms,
        (RaceStatus::Finished | RaceStatus::Cancelled, _) => None,
    }
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
            last_bib_with_email: self
                .roster
                .values()
                .rev()
                .find(|racer| racer.email.is_some())
                .map(|racer| racer.bib),
        }
    }
}

impl RaceSummary {
    /// Whether racers' fixes are taken now: only while the race is live. Read from the
    /// summary the directory keeps, so a device of a race not live costs no actor.
    pub fn takes_fixes(&self) -> Result<(), Rejection> {
        if self.status == RaceStatus::Live {
            return Ok(());
        }
        Err(Rejection::new(
            ErrorCode::InvalidTransition,
            format!(
                "race {} is {}; fixes are taken while it is live",
                self.id,
                self.status.as_str()
            ),
        ))
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
                _ => Err(not_found(id)),
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
            RaceCommand::Disqualify { bib, reason } => {
                if !corrects_results(race.status) {
                    return refuse("disqualify a racer (only live or finished races can)");
                }
                registered_bib(race, bib)?;
                let reason =
                    validate_text("disqualification reason", &reason, MAX_DSQ_REASON_CHARS)?;
                // Repeating the decision (a retried request) changes nothing and costs no write.
                if race.disqualified.get(&bib) == Some(&reason) {
                    return Ok(Vec::new());
                }
                Ok(vec![RaceEvent::RacerDisqualified {
                    bib,
                    reason,
                    at_ms: now_ms,
                }])
            }
            RaceCommand::Reinstate { bib } => {
                if !corrects_results(race.status) {
                    return refuse("reinstate a racer (only live or finished races can)");
                }
                registered_bib(race, bib)?;
                if !race.disqualified.contains_key(&bib) {
                    return Ok(Vec::new());
                }
                Ok(vec![RaceEvent::RacerReinstated { bib, at_ms: now_ms }])
            }
        }
    }

    /// What the clock requires of this race at `now_ms` under `mode`, if anything.
    ///
    /// Pure, so the timer in the actor only asks and executes: a scheduled race whose start
    /// has come goes live (automatic mode); one whose cut-off has passed first is run and
    /// finished (automatic) or cancelled (gun); a live race past its cut-off finishes.
    /// Terminal races never need anything.
    pub fn due(&self, now_ms: UnixMillis, mode: StartMode) -> Option<ClockAction> {
        let race = self.race.as_ref()?;
        let cutoff_passed = race.cutoff_at_ms.is_some_and(|c| now_ms >= c);
        match race.status {
            RaceStatus::Scheduled if cutoff_passed => Some(match mode {
                StartMode::Auto => ClockAction::StartAndFinish,
                StartMode::Gun => ClockAction::Cancel,
            }),
            RaceStatus::Scheduled if mode == StartMode::Auto && now_ms >= race.start_at_ms => {
                Some(ClockAction::Start)
            }
            RaceStatus::Live if cutoff_passed => Some(ClockAction::Finish),
            _ => None,
        }
    }

    /// The earliest moment at which [`RaceState::due`] will ask for something, for the
    /// actor's timer; `None` when the clock has nothing left to do for this race.
    /// `due(t, mode)` is `Some` exactly when this is `Some(d)` with `d <= t`.
    pub fn next_due_ms(&self, mode: StartMode) -> Option<UnixMillis> {
        let race = self.race.as_ref()?;
        next_due_ms(race.status, race.start_at_ms, race.cutoff_at_ms, mode)
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
                    disqualified: std::collections::BTreeMap::new(),
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
            RaceEvent::RacerDisqualified { bib, reason, .. } => {
                if let Some(race) = &mut self.race {
                    race.disqualified.insert(*bib, reason.clone());
                }
            }
            RaceEvent::RacerReinstated { bib, .. } => {
                if let Some(race) = &mut self.race {
                    race.disqualified.remove(bib);
                }
            }
        }
    }
}

/// Whether a race in `status` takes disqualifications and reinstatements: a live race's
/// provisional results and a finished race's final ones can be corrected; a scheduled race
/// has no results yet, and a cancelled one is kept as it was called off.
fn corrects_results(status: RaceStatus) -> bool {
    matches!(status, RaceStatus::Live | RaceStatus::Finished)
}

/// `not_found` unless `bib` is on the race's roster: a decision about nobody is a typo.
pub(crate) fn registered_bib(race: &Race, bib: u32) -> Result<(), Rejection> {
    if race.roster.contains_key(&bib) {
        Ok(())
    } else {
        Err(bib_not_registered(&race.id, bib))
    }
}

/// The one refusal of a bib a race does not have, wherever it is found out.
pub fn bib_not_registered(race: &RaceId, bib: u32) -> Rejection {
    Rejection::new(
        ErrorCode::NotFound,
        format!("bib {bib} is not registered in race {race}"),
    )
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

impl RaceState {
    /// Whether the race should finish by itself now: it is live, has racers, and every one
    /// of them has finished (`has_finished` reads the live standings the shell keeps).
    pub fn everyone_finished(&self, has_finished: impl Fn(u32) -> bool) -> bool {
        self.race.as_ref().is_some_and(|race| {
            race.status == RaceStatus::Live
                && !race.roster.is_empty()
                && race.roster.keys().all(|bib| has_finished(*bib))
        })
    }

    /// The race, when `bib` is registered in it: who may be tracked.
    pub fn registered(&self, id: &RaceId, bib: u32) -> Result<&Race, Rejection> {
        let race = self.existing(id)?;
        registered_bib(race, bib)?;
        Ok(race)
    }

    /// The race, or `not_found` naming `id` for a race that was never created.
    pub fn existing(&self, id: &RaceId) -> Result<&Race, Rejection> {
        self.race.as_ref().ok_or_else(|| not_found(id))
    }
}

/// The answer for a race that was never created, the same wherever it is asked.
pub fn not_found(id: &RaceId) -> Rejection {
    Rejection::new(ErrorCode::NotFound, format!("race {id} does not exist"))
}

/// What deciding on a race command reads besides the race.
#[derive(Clone, Copy)]
pub struct RaceInputs<'a> {
    /// The race's id (a create names it).
    pub id: &'a RaceId,
    /// The clock, read once by the shell.
    pub now_ms: UnixMillis,
    /// Validation limits from configuration.
    pub limits: RaceLimits,
}

impl Aggregate for RaceState {
    type Command = RaceCommand;
    type Event = RaceEvent;
    type Context<'a> = RaceInputs<'a>;
    type Outcome = ();

    fn decide(
        &self,
        command: RaceCommand,
        inputs: RaceInputs<'_>,
    ) -> Result<Decision<RaceEvent, ()>, Rejection> {
        self.handle(inputs.id, command, inputs.now_ms, inputs.limits)
            .map(Decision::events)
    }

    fn apply(&mut self, event: &RaceEvent) {
        RaceState::apply(self, event);
    }
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

    /// A scheduled race starting at `START` with the given cut-off.
    fn scheduled(cutoff_at_ms: Option<UnixMillis>) -> RaceState {
        let mut s = RaceState::default();
        let events = s
            .handle(
                &id(),
                RaceCommand::Create {
                    name: "Clock".into(),
                    course: course(),
                    start_at_ms: START,
                    cutoff_at_ms,
                },
                START - 60_000,
                LIMITS,
            )
            .unwrap();
        for e in &events {
            s.apply(e);
        }
        s
    }

    /// Runs what the clock asks at `now`, as the actor does: each command through `handle`.
    fn tick(s: &mut RaceState, now: UnixMillis, mode: StartMode) -> Option<ClockAction> {
        let action = s.due(now, mode)?;
        for command in action.commands() {
            for e in &s.handle(&id(), command, now, LIMITS).unwrap() {
                s.apply(e);
            }
        }
        Some(action)
    }

    fn status(s: &RaceState) -> RaceStatus {
        s.race.as_ref().unwrap().status
    }

    #[test]
    fn auto_mode_starts_at_the_start_time_and_not_before() {
        let mut s = scheduled(Some(START + 3_000));
        assert_eq!(s.next_due_ms(StartMode::Auto), Some(START));
        assert_eq!(tick(&mut s, START - 1, StartMode::Auto), None);
        assert_eq!(
            tick(&mut s, START, StartMode::Auto),
            Some(ClockAction::Start)
        );
        assert_eq!(status(&s), RaceStatus::Live);
        assert_eq!(s.race.as_ref().unwrap().started_at_ms, Some(START));
        assert_eq!(s.next_due_ms(StartMode::Auto), Some(START + 3_000));
        assert_eq!(tick(&mut s, START + 2_999, StartMode::Auto), None);
        assert_eq!(
            tick(&mut s, START + 3_000, StartMode::Auto),
            Some(ClockAction::Finish)
        );
        assert_eq!(status(&s), RaceStatus::Finished);
        assert_eq!(s.next_due_ms(StartMode::Auto), None);
        assert_eq!(s.due(START + 10_000_000, StartMode::Auto), None);
    }

    #[test]
    fn without_a_cutoff_a_live_race_waits_for_its_finish() {
        let mut s = scheduled(None);
        assert_eq!(
            tick(&mut s, START + 5, StartMode::Auto),
            Some(ClockAction::Start)
        );
        assert_eq!(s.next_due_ms(StartMode::Auto), None);
        assert_eq!(s.due(UnixMillis::MAX, StartMode::Auto), None);
    }

    #[test]
    fn a_start_and_cutoff_both_missed_run_and_finish_the_race_in_auto_mode() {
        let mut s = scheduled(Some(START + 3_000));
        assert_eq!(
            tick(&mut s, START + 60_000, StartMode::Auto),
            Some(ClockAction::StartAndFinish)
        );
        let race = s.race.as_ref().unwrap();
        assert_eq!(race.status, RaceStatus::Finished);
        assert!(race.started_at_ms.is_some() && race.finished_at_ms.is_some());
    }

    #[test]
    fn gun_mode_waits_for_the_gun_and_cancels_at_the_cutoff() {
        let mut s = scheduled(Some(START + 3_000));
        assert_eq!(s.next_due_ms(StartMode::Gun), Some(START + 3_000));
        assert_eq!(tick(&mut s, START + 2_999, StartMode::Gun), None);
        assert_eq!(status(&s), RaceStatus::Scheduled);
        assert_eq!(
            tick(&mut s, START + 3_000, StartMode::Gun),
            Some(ClockAction::Cancel)
        );
        let race = s.race.as_ref().unwrap();
        assert_eq!(race.status, RaceStatus::Cancelled);
        assert_eq!(race.cancel_reason.as_deref(), Some(CUTOFF_BEFORE_START));
        // Without a cut-off a gun-mode race never changes by itself.
        let s = scheduled(None);
        assert_eq!(s.next_due_ms(StartMode::Gun), None);
        assert_eq!(s.due(UnixMillis::MAX, StartMode::Gun), None);
    }

    #[test]
    fn a_fired_gun_hands_the_race_to_its_cutoff() {
        let mut s = scheduled(Some(START + 3_000));
        run(&mut s, RaceCommand::Start).unwrap();
        assert_eq!(s.next_due_ms(StartMode::Gun), Some(START + 3_000));
        assert_eq!(
            tick(&mut s, START + 3_000, StartMode::Gun),
            Some(ClockAction::Finish)
        );
        assert_eq!(status(&s), RaceStatus::Finished);
    }

    #[test]
    fn an_edited_start_moves_the_next_due_time() {
        let mut s = scheduled(Some(START + 3_000));
        run(
            &mut s,
            RaceCommand::Update {
                name: None,
                course: None,
                start_at_ms: Some(START + 1_000),
                cutoff_at_ms: None,
            },
        )
        .unwrap();
        assert_eq!(s.next_due_ms(StartMode::Auto), Some(START + 1_000));
        assert_eq!(s.due(START + 500, StartMode::Auto), None);
    }

    #[test]
    fn start_modes_parse_their_spelling_only() {
        for mode in [StartMode::Auto, StartMode::Gun] {
            assert_eq!(StartMode::parse(mode.as_str()), Some(mode));
        }
        assert_eq!(StartMode::parse("Auto"), None);
        assert_eq!(StartMode::default(), StartMode::Auto);
    }

    /// A race in any lifecycle position, with any start, cut-off and mode.
    fn any_clock_case() -> impl Strategy<Value = (RaceState, UnixMillis, StartMode)> {
        (
            -10_000i64..10_000,
            proptest::option::of(1i64..10_000),
            0u8..4,
            -20_000i64..30_000,
            any::<bool>(),
        )
            .prop_map(|(shift, cutoff_after, position, now, gun)| {
                let start = START + shift;
                let mut s = RaceState::default();
                s.apply(&RaceEvent::Created {
                    id: id(),
                    name: "Clock".into(),
                    course: course(),
                    start_at_ms: start,
                    cutoff_at_ms: cutoff_after.map(|c| start + c),
                    at_ms: START - 100_000,
                });
                let at_ms = START - 50_000;
                match position {
                    0 => {}
                    1 => s.apply(&RaceEvent::Started { at_ms }),
                    2 => {
                        s.apply(&RaceEvent::Started { at_ms });
                        s.apply(&RaceEvent::Finished { at_ms });
                    }
                    _ => s.apply(&RaceEvent::Cancelled {
                        reason: None,
                        at_ms,
                    }),
                }
                let mode = if gun { StartMode::Gun } else { StartMode::Auto };
                (s, START + now, mode)
            })
    }

    proptest! {
        /// Whatever the times and mode: `due` agrees with `next_due_ms`; what it asks is
        /// accepted by the ordinary rules and leaves nothing more due; status only moves
        /// along lifecycle edges; terminal races are never touched.
        #[test]
        fn the_clock_settles_in_one_step_and_never_touches_terminal_races(
            (state, now, mode) in any_clock_case()
        ) {
            let before = state.race.as_ref().unwrap().status;
            let due = state.due(now, mode);
            prop_assert_eq!(
                due.is_some(),
                state.next_due_ms(mode).is_some_and(|t| t <= now)
            );
            if before.is_terminal() {
                prop_assert_eq!(due, None);
                prop_assert_eq!(state.next_due_ms(mode), None);
            }
            let mut after = state.clone();
            if let Some(action) = due {
                for command in action.commands() {
                    let events = after.handle(&id(), command, now, LIMITS);
                    prop_assert!(events.is_ok(), "{:?} refused: {:?}", action, events);
                    for e in &events.unwrap() { after.apply(e); }
                }
                prop_assert_ne!(after.race.as_ref().unwrap().status, before);
            } else {
                prop_assert_eq!(&after, &state);
            }
            prop_assert_eq!(after.due(now, mode), None);
            // Later, the clock can only want the race's next lifecycle step, never a step back.
            let status = after.race.as_ref().unwrap().status;
            if let Some(next) = after.next_due_ms(mode) {
                prop_assert!(next > now);
                prop_assert!(!status.is_terminal());
            }
            prop_assert!(matches!(
                (before, status),
                (a, b) if a == b
            ) || matches!(
                (before, status),
                (RaceStatus::Scheduled, RaceStatus::Live | RaceStatus::Finished | RaceStatus::Cancelled)
                    | (RaceStatus::Live, RaceStatus::Finished)
            ));
        }
    }

    /// A live race with bibs 1..=3 registered.
    fn live_with_racers() -> RaceState {
        let mut s = RaceState::default();
        run(&mut s, create()).unwrap();
        run(
            &mut s,
            RaceCommand::RegisterRacers {
                racers: vec![entry(1, "Ana"), entry(2, "Bor"), entry(3, "Cene")],
            },
        )
        .unwrap();
        run(&mut s, RaceCommand::Start).unwrap();
        s
    }

    fn dsq(bib: u32, reason: &str) -> RaceCommand {
        RaceCommand::Disqualify {
            bib,
            reason: reason.into(),
        }
    }

    fn disqualified(s: &RaceState) -> Vec<(u32, &str)> {
        s.race
            .as_ref()
            .unwrap()
            .disqualified
            .iter()
            .map(|(b, r)| (*b, r.as_str()))
            .collect()
    }

    #[test]
    fn a_disqualification_is_recorded_trimmed_and_a_repeat_is_a_no_op() {
        let mut s = live_with_racers();
        run(&mut s, dsq(2, "  cut the loop at km 12 ")).unwrap();
        assert_eq!(disqualified(&s), vec![(2, "cut the loop at km 12")]);
        let repeat = s
            .handle(&id(), dsq(2, "cut the loop at km 12"), START, LIMITS)
            .unwrap();
        assert!(repeat.is_empty(), "the same decision again changes nothing");
        let events = s
            .handle(&id(), dsq(2, "drafting a car"), START + 5, LIMITS)
            .unwrap();
        assert_eq!(
            events,
            vec![RaceEvent::RacerDisqualified {
                bib: 2,
                reason: "drafting a car".into(),
                at_ms: START + 5
            }]
        );
        for e in &events {
            s.apply(e);
        }
        assert_eq!(disqualified(&s), vec![(2, "drafting a car")], "replaced");
    }

    #[test]
    fn a_reinstatement_undoes_a_disqualification_and_is_otherwise_a_no_op() {
        let mut s = live_with_racers();
        let nothing = s
            .handle(&id(), RaceCommand::Reinstate { bib: 1 }, START, LIMITS)
            .unwrap();
        assert!(nothing.is_empty(), "bib 1 is not disqualified");
        run(&mut s, dsq(1, "no helmet")).unwrap();
        run(&mut s, dsq(3, "cut")).unwrap();
        run(&mut s, RaceCommand::Reinstate { bib: 1 }).unwrap();
        assert_eq!(disqualified(&s), vec![(3, "cut")]);
    }

    #[test]
    fn disqualifying_needs_a_registered_bib_a_reason_and_a_race_with_results() {
        let mut s = RaceState::default();
        run(&mut s, create()).unwrap();
        run(
            &mut s,
            RaceCommand::RegisterRacers {
                racers: vec![entry(1, "Ana")],
            },
        )
        .unwrap();
        for command in [dsq(1, "cut"), RaceCommand::Reinstate { bib: 1 }] {
            let err = run(&mut s, command).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidTransition, "scheduled: {err:?}");
            assert!(err.message.contains("scheduled"), "{}", err.message);
        }
        run(&mut s, RaceCommand::Start).unwrap();
        for command in [dsq(9, "cut"), RaceCommand::Reinstate { bib: 9 }] {
            let err = run(&mut s, command).unwrap_err();
            assert_eq!(err.code, ErrorCode::NotFound);
            assert!(err.message.contains("bib 9"), "{}", err.message);
        }
        for reason in ["", "   ", "a\u{7}b", &"x".repeat(501)[..]] {
            assert_eq!(
                run(&mut s, dsq(1, reason)).unwrap_err().code,
                ErrorCode::InvalidArgument,
                "{reason:?}"
            );
        }
        run(&mut s, dsq(1, &"x".repeat(500))).unwrap();
        // Results are corrected after the race: the one change a finished race accepts.
        run(&mut s, RaceCommand::Finish).unwrap();
        run(&mut s, RaceCommand::Reinstate { bib: 1 }).unwrap();
        run(&mut s, dsq(1, "confirmed cut")).unwrap();
        assert_eq!(disqualified(&s), vec![(1, "confirmed cut")]);
        assert_eq!(
            run(&mut s, RaceCommand::Start).unwrap_err().code,
            ErrorCode::InvalidTransition,
            "otherwise still terminal"
        );

        let mut cancelled = live_with_racers();
        run(&mut cancelled, dsq(2, "cut")).unwrap();
        run(&mut cancelled, RaceCommand::Cancel { reason: None }).unwrap();
        for command in [dsq(1, "cut"), RaceCommand::Reinstate { bib: 2 }] {
            assert_eq!(
                run(&mut cancelled, command).unwrap_err().code,
                ErrorCode::InvalidTransition
            );
        }
        assert_eq!(disqualified(&cancelled), vec![(2, "cut")], "kept as it was");
    }

    /// Disqualify, reinstate or finish, on bibs 1..=4 (4 is not registered), with reasons
    /// that are sometimes blank.
    fn any_decision() -> impl Strategy<Value = RaceCommand> {
        prop_oneof![
            4 => (1u32..=4, prop_oneof![Just(" ".to_owned()), "[a-c]{1,2}", " [a-c] "])
                .prop_map(|(bib, reason)| RaceCommand::Disqualify { bib, reason }),
            3 => (1u32..=4).prop_map(|bib| RaceCommand::Reinstate { bib }),
            1 => Just(RaceCommand::Finish),
        ]
    }

    proptest! {
        /// Any sequence of decisions on a live (later maybe finished) race: `disqualified`
        /// equals a plain map that inserts on disqualify and removes on reinstate; a change
        /// emits exactly one event and a no-op none; replaying the journal rebuilds the state.
        #[test]
        fn disqualified_follows_a_simple_model(commands in proptest::collection::vec(any_decision(), 0..40)) {
            let mut state = live_with_racers();
            let mut model = std::collections::BTreeMap::<u32, String>::new();
            let mut journal = Vec::new();
            for command in commands {
                let before = model.clone();
                let outcome = state.handle(&id(), command.clone(), START, LIMITS);
                match &command {
                    RaceCommand::Disqualify { bib, reason } => {
                        if *bib == 4 {
                            prop_assert_eq!(outcome.as_ref().unwrap_err().code, ErrorCode::NotFound);
                        } else if reason.trim().is_empty() {
                            prop_assert_eq!(outcome.as_ref().unwrap_err().code, ErrorCode::InvalidArgument);
                        } else {
                            model.insert(*bib, reason.trim().to_owned());
                        }
                    }
                    RaceCommand::Reinstate { bib } => {
                        if *bib == 4 {
                            prop_assert_eq!(outcome.as_ref().unwrap_err().code, ErrorCode::NotFound);
                        } else {
                            model.remove(bib);
                        }
                    }
                    _ => {}
                }
                if let Ok(events) = outcome {
                    if !matches!(command, RaceCommand::Finish) {
                        prop_assert_eq!(events.len(), usize::from(model != before));
                    }
                    for e in &events { state.apply(e); }
                    journal.extend(events);
                }
                prop_assert_eq!(&state.race.as_ref().unwrap().disqualified, &model);
            }
            let mut replayed = live_with_racers();
            for e in &journal { replayed.apply(e); }
            prop_assert_eq!(replayed, state);
        }
    }
}
