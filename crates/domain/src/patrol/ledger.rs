//! The patrol rewards ledger as a pure, event-sourced state.
//!
//! When a citizen and an on-duty officer meet in person, both earn reward points; points are
//! later redeemed for a retailer offer (a voucher) or donated to a charity. The ledger actor
//! calls [`Ledger::handle`] to decide (no mutation), journals the returned events durably,
//! then calls [`Ledger::apply`] for each; recovery replays `apply` over a snapshot, so `apply`
//! must be deterministic and total (it never rejects, it only records).
//!
//! Rules decided here:
//! - a balance never goes negative;
//! - one award per (officer, citizen) pair per UTC day, and at most
//!   [`AwardRules::daily_cap`] points per user per UTC day (a connection beyond either limit is
//!   still recorded, with 0 points);
//! - redemptions and donations are idempotent by request id per user, connections by
//!   connection id: a retry with the same content is answered with the original event
//!   ([`Decision::Replayed`], so the same voucher serial), a different content is an error.
//!
//! The state is kept lean because it is snapshotted whole: per user only the balance, the
//! entries and the request ids; award bookkeeping only for the latest UTC day seen and the one
//! before; report totals kept incrementally per (day, precinct) so a report never scans entries.
//! Every map that is serialized is keyed by strings or serialized as a list of pairs, so the
//! snapshot encodes the same with bincode or a self-describing format.

use crate::time::UnixMillis;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Milliseconds in one UTC day; UTC days are what the award limits and reports count in.
const DAY_MS: i64 = 86_400_000;
/// Latest accepted time (2200-01-01): a wildly wrong clock must not move "today" so far ahead
/// that every later award lands on a pruned day.
const LATEST_MS: UnixMillis = 7_258_118_400_000;
/// The precinct a redemption or donation is counted under when its user never connected.
pub const NO_PRECINCT: &str = "none";
/// Balances stay within `i64` so every entry's signed delta is exact.
const MAX_BALANCE: u64 = i64::MAX as u64;

/// The UTC day (days since 1970-01-01) of a time, the unit of award limits and reports.
pub fn utc_day(at_ms: UnixMillis) -> u32 {
    let day = at_ms.div_euclid(DAY_MS).max(0);
    u32::try_from(day).unwrap_or(u32::MAX)
}

/// How many points a connection is worth; from configuration (`[patrol]`, read directly
/// into this type under the configuration's names), passed to every decision so a changed
/// configuration applies from the next connection without touching history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwardRules {
    /// Points the officer earns for one connection.
    pub officer_points: u64,
    /// Points the citizen earns for one connection.
    pub citizen_points: u64,
    /// Most points one user may be awarded per UTC day, so farming connections does not pay.
    #[serde(rename = "daily_points_cap")]
    pub daily_cap: u64,
}

/// An accepted connect request between a citizen and an officer, already checked in person
/// by the caller. The book is asked for it and hands it to the ledger as it came.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectRequest {
    /// Caller-chosen id of the connection; a retry carries the same id.
    pub connection_id: String,
    /// The on-duty officer's user id.
    pub officer: String,
    /// The citizen's user id.
    pub citizen: String,
    /// Where it happened: the report's grouping and both users' new home precinct.
    pub precinct: String,
    /// When, ms since the epoch; decides the UTC day the award counts against.
    pub at_ms: UnixMillis,
}

/// A gift of points to a charity. The book is asked for it, checks the charity exists and
/// hands it to the ledger as it came.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DonateRequest {
    /// Client-chosen id making the donation idempotent per user.
    pub request_id: String,
    /// Whose points.
    pub user: String,
    /// The charity.
    pub charity_id: String,
    /// How many points.
    pub points: u64,
    /// When, ms since the epoch.
    pub at_ms: UnixMillis,
}

/// What the ledger is asked to do; times are passed in by the caller, never read from a clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerCommand {
    /// A connection to record, with its awards.
    Connect(ConnectRequest),
    /// Spend points on a retailer offer, for a voucher.
    Redeem {
        /// Client-chosen id making the redemption idempotent per user.
        request_id: String,
        /// Whose points.
        user: String,
        /// The retailer offer.
        offer_id: String,
        /// Points the offer costs (from the directory, at the time of the request).
        cost: u64,
        /// When, ms since the epoch.
        at_ms: UnixMillis,
        /// The precinct to report it under; the user's home precinct when `None`.
        precinct: Option<String>,
    },
    /// Give points to a charity.
    Donate(DonateRequest),
}

/// What happened, as journaled; [`Ledger::apply`] rebuilds the state from these alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerEvent {
    /// Both parties' awards in one event, so a crash never leaves one side paid. An award may
    /// be 0 when the pair was already awarded that day or the user hit the daily cap (the
    /// connection itself is still recorded).
    Connected {
        /// The connection's id, for idempotency.
        connection_id: String,
        /// The officer's user id.
        officer: String,
        /// The citizen's user id.
        citizen: String,
        /// Where it happened.
        precinct: String,
        /// When, ms since the epoch.
        at_ms: UnixMillis,
        /// Points credited to the officer (maybe 0).
        officer_points: u64,
        /// Points credited to the citizen (maybe 0).
        citizen_points: u64,
    },
    /// Points spent on an offer; the serial goes into the voucher code.
    Redeemed {
        /// The request's id, for idempotency.
        request_id: String,
        /// Whose points.
        user: String,
        /// The offer.
        offer_id: String,
        /// Points debited.
        cost: u64,
        /// Unique, strictly increasing serial of the voucher issued.
        voucher_serial: u64,
        /// When, ms since the epoch.
        at_ms: UnixMillis,
        /// The precinct it is reported under, resolved at decision time.
        precinct: String,
    },
    /// Points given to a charity.
    Donated {
        /// The request's id, for idempotency.
        request_id: String,
        /// Whose points.
        user: String,
        /// The charity.
        charity_id: String,
        /// Points debited.
        points: u64,
        /// When, ms since the epoch.
        at_ms: UnixMillis,
        /// The precinct it is reported under, resolved at decision time.
        precinct: String,
    },
}

/// Why a command was refused; nothing is journaled for a refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The user's balance does not cover the cost or donation.
    #[error("insufficient points: balance is {balance}, {wanted} wanted")]
    InsufficientPoints {
        /// The user's balance now.
        balance: u64,
        /// Points the command asked for.
        wanted: u64,
    },
    /// The same request id was used before by this user for something else.
    #[error("request_id {request_id:?} was already used for a different request")]
    RequestIdReused {
        /// The reused id.
        request_id: String,
    },
    /// The same connection id was recorded before for a different connection.
    #[error("connection_id {connection_id:?} already records a different connection")]
    DuplicateConnection {
        /// The reused id.
        connection_id: String,
    },
    /// The command is malformed (zero points, empty id, impossible time); names the field.
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl LedgerError {
    /// The stable, machine-readable code clients branch on (the message is for humans).
    pub fn code(&self) -> &'static str {
        match self {
            LedgerError::InsufficientPoints { .. } => "insufficient_points",
            LedgerError::RequestIdReused { .. } => "conflict",
            LedgerError::DuplicateConnection { .. } => "already_exists",
            LedgerError::Invalid(_) => "invalid_argument",
        }
    }
}

/// The outcome of [`Ledger::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// New events: journal them, then apply them, then answer.
    Apply(Vec<LedgerEvent>),
    /// A retry of something already recorded: answer with the original outcome (e.g. the same
    /// voucher serial); nothing new is journaled.
    Replayed(LedgerEvent),
}

/// Why a user's balance changed; what a history screen shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cause {
    /// Points from meeting someone.
    Connection {
        /// The connection's id.
        connection_id: String,
        /// The other party (the citizen for an officer, the officer for a citizen).
        with: String,
    },
    /// Points spent on an offer.
    Redemption {
        /// The request's id.
        request_id: String,
        /// The offer.
        offer_id: String,
        /// The voucher issued.
        voucher_serial: u64,
    },
    /// Points given to a charity.
    Donation {
        /// The request's id.
        request_id: String,
        /// The charity.
        charity_id: String,
    },
}

/// One line of a user's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the user's history (0 = first); the pagination cursor.
    pub index: u64,
    /// When, ms since the epoch.
    pub at_ms: UnixMillis,
    /// Balance change: positive for awards (or 0), negative for redemptions and donations.
    pub delta: i64,
    /// Why.
    pub cause: Cause,
}

/// Totals of one precinct on one UTC day, for the operators' report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRow {
    /// Days since 1970-01-01, UTC.
    pub day: u32,
    /// The precinct.
    pub precinct: String,
    /// Connections recorded (awarded or not).
    pub connections: u64,
    /// Points credited to officers and citizens together.
    pub points_awarded: u64,
    /// Points spent on offers.
    pub points_redeemed: u64,
    /// Points given to charities.
    pub points_donated: u64,
}

/// An entry as stored: the index is its position, the precinct an interned id, so a history
/// line costs no more than its cause's strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredEntry {
    at_ms: UnixMillis,
    delta: i64,
    precinct: usize,
    cause: Cause,
}

/// One user's standing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Account {
    balance: u64,
    entries: Vec<StoredEntry>,
    /// Request id -> index of its entry: a retry is answered from the entry, without a scan.
    requests: BTreeMap<String, u64>,
    /// Interned precinct of the latest connection: where the user's redemptions count.
    home: Option<usize>,
}

/// Where a recorded connection's event can be rebuilt from (both entries plus the officer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ConnectionRef {
    officer: String,
    officer_entry: u64,
    citizen_entry: u64,
}

/// Award bookkeeping of one UTC day; only the latest day seen and the one before are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DayBook {
    day: u32,
    /// (officer, citizen) pairs that connected that day.
    pairs: BTreeSet<(String, String)>,
    /// Points awarded per user that day.
    awarded: BTreeMap<String, u64>,
}

/// Running report totals of one (day, precinct).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Totals {
    connections: u64,
    awarded: u64,
    redeemed: u64,
    donated: u64,
}

/// The whole rewards ledger: what the ledger actor owns, snapshots and rebuilds by replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    accounts: BTreeMap<String, Account>,
    connections: BTreeMap<String, ConnectionRef>,
    /// Interned precinct names; entries hold indexes into this.
    precincts: Vec<String>,
    precinct_ids: BTreeMap<String, usize>,
    next_voucher_serial: u64,
    /// The latest UTC day of any applied event: award bookkeeping older than the day before it
    /// is pruned.
    latest_day: u32,
    /// Sorted by day; at most the latest day and the one before.
    days: Vec<DayBook>,
    #[serde(with = "pairs")]
    report: BTreeMap<u32, BTreeMap<String, Totals>>,
    entry_count: usize,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            accounts: BTreeMap::new(),
            connections: BTreeMap::new(),
            precincts: Vec::new(),
            precinct_ids: BTreeMap::new(),
            // Serial 0 is never issued, so a zero in a voucher is always a forgery or a bug.
            next_voucher_serial: 1,
            latest_day: 0,
            days: Vec::new(),
            report: BTreeMap::new(),
            entry_count: 0,
        }
    }
}

/// A request id seen before: the same content is a replay of `original`, anything else a
/// reused id (redemptions and donations share one set of request ids per user).
fn replayed_or_reused(
    original: LedgerEvent,
    same: bool,
    request_id: &str,
) -> Result<Decision, LedgerError> {
    if same {
        Ok(Decision::Replayed(original))
    } else {
        Err(LedgerError::RequestIdReused {
            request_id: request_id.to_owned(),
        })
    }
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Decides what `cmd` does, without changing anything.
    pub fn handle(&self, cmd: &LedgerCommand, rules: &AwardRules) -> Result<Decision, LedgerError> {
        match cmd {
            LedgerCommand::Connect(c) => self.decide_connect(
                &c.connection_id,
                &c.officer,
                &c.citizen,
                &c.precinct,
                c.at_ms,
                rules,
            ),
            LedgerCommand::Redeem {
                request_id,
                user,
                offer_id,
                cost,
                at_ms,
                precinct,
            } => self.decide_redeem(
                request_id,
                user,
                offer_id,
                *cost,
                *at_ms,
                precinct.as_deref(),
            ),
            LedgerCommand::Donate(d) => {
                self.decide_donate(&d.request_id, &d.user, &d.charity_id, d.points, d.at_ms)
            }
        }
    }

    fn decide_connect(
        &self,
        connection_id: &str,
        officer: &str,
        citizen: &str,
        precinct: &str,
        at_ms: UnixMillis,
        rules: &AwardRules,
    ) -> Result<Decision, LedgerError> {
        non_empty("connection_id", connection_id)?;
        non_empty("officer", officer)?;
        non_empty("citizen", citizen)?;
        non_empty("precinct", precinct)?;
        valid_time(at_ms)?;
        if officer == citizen {
            return Err(LedgerError::Invalid(
                "officer and citizen must be different users".into(),
            ));
        }
        if let Some(reference) = self.connections.get(connection_id) {
            let original = self.connection_event(connection_id, reference);
            return match original {
                Some(original) if same_connection(&original, officer, citizen, precinct) => {
                    Ok(Decision::Replayed(original))
                }
                _ => Err(LedgerError::DuplicateConnection {
                    connection_id: connection_id.to_owned(),
                }),
            };
        }
        let day = utc_day(at_ms);
        let (officer_points, citizen_points) = if day.saturating_add(1) < self.latest_day {
            // That day's bookkeeping is pruned, so limits cannot be checked: record, pay nothing.
            (0, 0)
        } else {
            let book = self.days.iter().find(|b| b.day == day);
            let pair_seen =
                book.is_some_and(|b| b.pairs.contains(&(officer.to_owned(), citizen.to_owned())));
            if pair_seen {
                (0, 0)
            } else {
                let award = |user: &str, points: u64| {
                    let today = book.and_then(|b| b.awarded.get(user)).copied().unwrap_or(0);
                    let headroom = MAX_BALANCE.saturating_sub(self.balance(user));
                    points
                        .min(rules.daily_cap.saturating_sub(today))
                        .min(headroom)
                };
                (
                    award(officer, rules.officer_points),
                    award(citizen, rules.citizen_points),
                )
            }
        };
        Ok(Decision::Apply(vec![LedgerEvent::Connected {
            connection_id: connection_id.to_owned(),
            officer: officer.to_owned(),
            citizen: citizen.to_owned(),
            precinct: precinct.to_owned(),
            at_ms,
            officer_points,
            citizen_points,
        }]))
    }

    fn decide_redeem(
        &self,
        request_id: &str,
        user: &str,
        offer_id: &str,
        cost: u64,
        at_ms: UnixMillis,
        precinct: Option<&str>,
    ) -> Result<Decision, LedgerError> {
        non_empty("request_id", request_id)?;
        non_empty("user", user)?;
        non_empty("offer_id", offer_id)?;
        if let Some(p) = precinct {
            non_empty("precinct", p)?;
        }
        positive("cost", cost)?;
        valid_time(at_ms)?;
        if let Some(original) = self.request_event(user, request_id) {
            // A retry without a precinct means "as before"; an explicit one must match.
            let same = matches!(
                &original,
                LedgerEvent::Redeemed { offer_id: o, cost: c, precinct: p, .. }
                    if o == offer_id && *c == cost && precinct.is_none_or(|given| given == p)
            );
            return replayed_or_reused(original, same, request_id);
        }
        self.covers(user, cost)?;
        Ok(Decision::Apply(vec![LedgerEvent::Redeemed {
            request_id: request_id.to_owned(),
            user: user.to_owned(),
            offer_id: offer_id.to_owned(),
            cost,
            voucher_serial: self.next_voucher_serial,
            at_ms,
            precinct: precinct.map_or_else(|| self.home_precinct(user), str::to_owned),
        }]))
    }

    fn decide_donate(
        &self,
        request_id: &str,
        user: &str,
        charity_id: &str,
        points: u64,
        at_ms: UnixMillis,
    ) -> Result<Decision, LedgerError> {
        non_empty("request_id", request_id)?;
        non_empty("user", user)?;
        non_empty("charity_id", charity_id)?;
        positive("points", points)?;
        valid_time(at_ms)?;
        if let Some(original) = self.request_event(user, request_id) {
            let same = matches!(
                &original,
                LedgerEvent::Donated { charity_id: c, points: p, .. }
                    if c == charity_id && *p == points
            );
            return replayed_or_reused(original, same, request_id);
        }
        self.covers(user, points)?;
        Ok(Decision::Apply(vec![LedgerEvent::Donated {
            request_id: request_id.to_owned(),
            user: user.to_owned(),
            charity_id: charity_id.to_owned(),
            points,
            at_ms,
            precinct: self.home_precinct(user),
        }]))
    }

    fn covers(&self, user: &str, wanted: u64) -> Result<(), LedgerError> {
        let balance = self.balance(user);
        if wanted > balance {
            return Err(LedgerError::InsufficientPoints { balance, wanted });
        }
        Ok(())
    }

    fn home_precinct(&self, user: &str) -> String {
        self.accounts
            .get(user)
            .and_then(|a| a.home)
            .map_or_else(|| NO_PRECINCT.to_owned(), |id| self.precinct_name(id))
    }

    fn precinct_name(&self, id: usize) -> String {
        self.precincts
            .get(id)
            .cloned()
            .unwrap_or_else(|| NO_PRECINCT.to_owned())
    }

    fn stored_entry(&self, user: &str, index: u64) -> Option<&StoredEntry> {
        let index = usize::try_from(index).ok()?;
        self.accounts.get(user)?.entries.get(index)
    }

    /// Rebuilds the journaled event of a recorded redemption or donation from its entry.
    fn request_event(&self, user: &str, request_id: &str) -> Option<LedgerEvent> {
        let index = *self.accounts.get(user)?.requests.get(request_id)?;
        let entry = self.stored_entry(user, index)?;
        let points = entry.delta.unsigned_abs();
        match &entry.cause {
            Cause::Redemption {
                request_id,
                offer_id,
                voucher_serial,
            } => Some(LedgerEvent::Redeemed {
                request_id: request_id.clone(),
                user: user.to_owned(),
                offer_id: offer_id.clone(),
                cost: points,
                voucher_serial: *voucher_serial,
                at_ms: entry.at_ms,
                precinct: self.precinct_name(entry.precinct),
            }),
            Cause::Donation {
                request_id,
                charity_id,
            } => Some(LedgerEvent::Donated {
                request_id: request_id.clone(),
                user: user.to_owned(),
                charity_id: charity_id.clone(),
                points,
                at_ms: entry.at_ms,
                precinct: self.precinct_name(entry.precinct),
            }),
            Cause::Connection { .. } => None,
        }
    }

    /// Rebuilds the journaled event of a recorded connection from its two entries.
    fn connection_event(
        &self,
        connection_id: &str,
        reference: &ConnectionRef,
    ) -> Option<LedgerEvent> {
        let officer_entry = self.stored_entry(&reference.officer, reference.officer_entry)?;
        let Cause::Connection { with: citizen, .. } = &officer_entry.cause else {
            return None;
        };
        let citizen_entry = self.stored_entry(citizen, reference.citizen_entry)?;
        Some(LedgerEvent::Connected {
            connection_id: connection_id.to_owned(),
            officer: reference.officer.clone(),
            citizen: citizen.clone(),
            precinct: self.precinct_name(officer_entry.precinct),
            at_ms: officer_entry.at_ms,
            officer_points: officer_entry.delta.unsigned_abs(),
            citizen_points: citizen_entry.delta.unsigned_abs(),
        })
    }

    /// Records one journaled event. Never refuses: the decision was made in [`Ledger::handle`],
    /// and replay must rebuild exactly what was there.
    pub fn apply(&mut self, e: &LedgerEvent) {
        let at_ms = match e {
            LedgerEvent::Connected { at_ms, .. }
            | LedgerEvent::Redeemed { at_ms, .. }
            | LedgerEvent::Donated { at_ms, .. } => *at_ms,
        };
        let day = utc_day(at_ms);
        if day > self.latest_day {
            self.latest_day = day;
            let keep_from = day.saturating_sub(1);
            self.days.retain(|b| b.day >= keep_from);
        }
        match e {
            LedgerEvent::Connected {
                connection_id,
                officer,
                citizen,
                precinct,
                at_ms,
                officer_points,
                citizen_points,
            } => {
                if day.saturating_add(1) >= self.latest_day {
                    let book = self.day_book(day);
                    book.pairs.insert((officer.clone(), citizen.clone()));
                    for (user, points) in [(officer, officer_points), (citizen, citizen_points)] {
                        let total = book.awarded.entry(user.clone()).or_insert(0);
                        *total = total.saturating_add(*points);
                    }
                }
                let precinct_id = self.intern(precinct);
                let officer_entry = self.credit(
                    officer,
                    *at_ms,
                    *officer_points,
                    precinct_id,
                    Cause::Connection {
                        connection_id: connection_id.clone(),
                        with: citizen.clone(),
                    },
                );
                let citizen_entry = self.credit(
                    citizen,
                    *at_ms,
                    *citizen_points,
                    precinct_id,
                    Cause::Connection {
                        connection_id: connection_id.clone(),
                        with: officer.clone(),
                    },
                );
                self.connections.insert(
                    connection_id.clone(),
                    ConnectionRef {
                        officer: officer.clone(),
                        officer_entry,
                        citizen_entry,
                    },
                );
                let totals = self.totals(day, precinct);
                totals.connections = totals.connections.saturating_add(1);
                totals.awarded = totals
                    .awarded
                    .saturating_add(*officer_points)
                    .saturating_add(*citizen_points);
            }
            LedgerEvent::Redeemed {
                request_id,
                user,
                offer_id,
                cost,
                voucher_serial,
                at_ms,
                precinct,
            } => {
                let cause = Cause::Redemption {
                    request_id: request_id.clone(),
                    offer_id: offer_id.clone(),
                    voucher_serial: *voucher_serial,
                };
                let totals = self.debit(user, request_id, *at_ms, *cost, precinct, cause);
                totals.redeemed = totals.redeemed.saturating_add(*cost);
                self.next_voucher_serial = self
                    .next_voucher_serial
                    .max(voucher_serial.saturating_add(1));
            }
            LedgerEvent::Donated {
                request_id,
                user,
                charity_id,
                points,
                at_ms,
                precinct,
            } => {
                let cause = Cause::Donation {
                    request_id: request_id.clone(),
                    charity_id: charity_id.clone(),
                };
                let totals = self.debit(user, request_id, *at_ms, *points, precinct, cause);
                totals.donated = totals.donated.saturating_add(*points);
            }
        }
    }

    fn day_book(&mut self, day: u32) -> &mut DayBook {
        let position = match self.days.binary_search_by_key(&day, |b| b.day) {
            Ok(position) => position,
            Err(position) => {
                self.days.insert(
                    position,
                    DayBook {
                        day,
                        pairs: BTreeSet::new(),
                        awarded: BTreeMap::new(),
                    },
                );
                position
            }
        };
        &mut self.days[position]
    }

    fn totals(&mut self, day: u32, precinct: &str) -> &mut Totals {
        self.report
            .entry(day)
            .or_default()
            .entry(precinct.to_owned())
            .or_default()
    }

    fn intern(&mut self, precinct: &str) -> usize {
        if let Some(id) = self.precinct_ids.get(precinct) {
            return *id;
        }
        let id = self.precincts.len();
        self.precincts.push(precinct.to_owned());
        self.precinct_ids.insert(precinct.to_owned(), id);
        id
    }

    /// Appends an entry and returns its index.
    fn push_entry(&mut self, user: &str, entry: StoredEntry) -> (&mut Account, u64) {
        self.entry_count = self.entry_count.saturating_add(1);
        let account = self.accounts.entry(user.to_owned()).or_default();
        let index = u64::try_from(account.entries.len()).unwrap_or(u64::MAX);
        account.entries.push(entry);
        (account, index)
    }

    fn credit(
        &mut self,
        user: &str,
        at_ms: i64,
        points: u64,
        precinct: usize,
        cause: Cause,
    ) -> u64 {
        let entry = StoredEntry {
            at_ms,
            delta: i64::try_from(points).unwrap_or(i64::MAX),
            precinct,
            cause,
        };
        let (account, index) = self.push_entry(user, entry);
        account.balance = account.balance.saturating_add(points);
        account.home = Some(precinct);
        index
    }

    /// Takes `points` from `user` for `request_id` (remembered, so a retry answers from this
    /// entry), and returns the totals of the day and precinct the debit counts in, for the
    /// caller to say as what (a redemption or a donation).
    fn debit(
        &mut self,
        user: &str,
        request_id: &str,
        at_ms: i64,
        points: u64,
        precinct: &str,
        cause: Cause,
    ) -> &mut Totals {
        let entry = StoredEntry {
            at_ms,
            delta: i64::try_from(points).map_or(i64::MIN, |p| -p),
            precinct: self.intern(precinct),
            cause,
        };
        let (account, index) = self.push_entry(user, entry);
        account.balance = account.balance.saturating_sub(points);
        account.requests.insert(request_id.to_owned(), index);
        self.totals(utc_day(at_ms), precinct)
    }

    /// A user's points now (0 for a user never seen).
    pub fn balance(&self, user: &str) -> u64 {
        self.accounts.get(user).map_or(0, |a| a.balance)
    }

    /// A user's entries newest first, paginated: entries with index < `before` (or from the
    /// newest when `None`), at most `limit`.
    pub fn history(&self, user: &str, before: Option<u64>, limit: usize) -> Vec<Entry> {
        let Some(account) = self.accounts.get(user) else {
            return Vec::new();
        };
        let len = account.entries.len();
        let end = before.map_or(len, |b| usize::try_from(b).map_or(len, |b| b.min(len)));
        account.entries[..end]
            .iter()
            .enumerate()
            .rev()
            .take(limit)
            .map(|(index, e)| Entry {
                index: u64::try_from(index).unwrap_or(u64::MAX),
                at_ms: e.at_ms,
                delta: e.delta,
                cause: e.cause.clone(),
            })
            .collect()
    }

    /// Per (day, precinct) totals for the UTC days `from_day..=to_day`, sorted by day then
    /// precinct; only pairs with some activity appear.
    pub fn report(&self, from_day: u32, to_day: u32) -> Vec<ReportRow> {
        if from_day > to_day {
            return Vec::new();
        }
        self.report
            .range(from_day..=to_day)
            .flat_map(|(day, precincts)| {
                precincts.iter().map(move |(precinct, t)| ReportRow {
                    day: *day,
                    precinct: precinct.clone(),
                    connections: t.connections,
                    points_awarded: t.awarded,
                    points_redeemed: t.redeemed,
                    points_donated: t.donated,
                })
            })
            .collect()
    }

    /// The serial the next redemption's voucher will carry.
    pub fn next_voucher_serial(&self) -> u64 {
        self.next_voucher_serial
    }

    /// Entries over all users, for sizing snapshots.
    pub fn entry_count(&self) -> usize {
        self.entry_count
    }
}

/// Whether a recorded connection is the one a retry describes; a retry is stamped when it
/// arrives, so the time is not part of its content.
fn same_connection(original: &LedgerEvent, officer: &str, citizen: &str, precinct: &str) -> bool {
    matches!(
        original,
        LedgerEvent::Connected { officer: o, citizen: c, precinct: p, .. }
            if o == officer && c == citizen && p == precinct
    )
}

fn non_empty(field: &str, value: &str) -> Result<(), LedgerError> {
    if value.trim().is_empty() {
        return Err(LedgerError::Invalid(format!("{field} must not be empty")));
    }
    Ok(())
}

fn positive(field: &str, value: u64) -> Result<(), LedgerError> {
    if value == 0 {
        return Err(LedgerError::Invalid(format!("{field} must be at least 1")));
    }
    Ok(())
}

fn valid_time(at_ms: UnixMillis) -> Result<(), LedgerError> {
    if !(0..=LATEST_MS).contains(&at_ms) {
        return Err(LedgerError::Invalid(format!(
            "at_ms {at_ms} must be between 1970 and 2200"
        )));
    }
    Ok(())
}

/// Serializes a map with non-string keys as a list of pairs, so every format can hold it.
mod pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    /// Writes the map as a sequence of `(key, value)`.
    pub fn serialize<K, V, S>(map: &BTreeMap<K, V>, serializer: S) -> Result<S::Ok, S::Error>
    where
        K: Serialize,
        V: Serialize,
        S: Serializer,
    {
        serializer.collect_seq(map.iter())
    }

    /// Reads a sequence of `(key, value)` back into the map.
    pub fn deserialize<'de, K, V, D>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RULES: AwardRules = AwardRules {
        officer_points: 10,
        citizen_points: 20,
        daily_cap: 50,
    };
    /// 2026-12-01T00:00:00Z.
    const DAY0: UnixMillis = 1_796_083_200_000;

    fn connect(
        id: &str,
        officer: &str,
        citizen: &str,
        precinct: &str,
        at_ms: i64,
    ) -> LedgerCommand {
        LedgerCommand::Connect(ConnectRequest {
            connection_id: id.into(),
            officer: officer.into(),
            citizen: citizen.into(),
            precinct: precinct.into(),
            at_ms,
        })
    }

    fn redeem(id: &str, user: &str, offer: &str, cost: u64) -> LedgerCommand {
        LedgerCommand::Redeem {
            request_id: id.into(),
            user: user.into(),
            offer_id: offer.into(),
            cost,
            at_ms: DAY0 + 1_000,
            precinct: None,
        }
    }

    fn donate(id: &str, user: &str, charity: &str, points: u64) -> LedgerCommand {
        LedgerCommand::Donate(DonateRequest {
            request_id: id.into(),
            user: user.into(),
            charity_id: charity.into(),
            points,
            at_ms: DAY0 + 2_000,
        })
    }

    /// Handles, applies, and returns what was journaled (nothing for a replay).
    fn run(ledger: &mut Ledger, cmd: &LedgerCommand) -> Result<Vec<LedgerEvent>, LedgerError> {
        match ledger.handle(cmd, &RULES)? {
            Decision::Apply(events) => {
                for e in &events {
                    ledger.apply(e);
                }
                Ok(events)
            }
            Decision::Replayed(_) => Ok(Vec::new()),
        }
    }

    fn awarded(events: &[LedgerEvent]) -> (u64, u64) {
        match events {
            [LedgerEvent::Connected {
                officer_points,
                citizen_points,
                ..
            }] => (*officer_points, *citizen_points),
            other => panic!("not one connection: {other:?}"),
        }
    }

    #[test]
    fn utc_day_counts_whole_days_since_the_epoch() {
        assert_eq!(utc_day(0), 0);
        assert_eq!(utc_day(DAY_MS - 1), 0);
        assert_eq!(utc_day(DAY_MS), 1);
        assert_eq!(utc_day(-1), 0);
        assert_eq!(utc_day(DAY0), 20_788);
    }

    #[test]
    fn a_connection_pays_both_sides() {
        let mut ledger = Ledger::new();
        let events = run(&mut ledger, &connect("k1", "off", "cit", "p1", DAY0)).unwrap();
        assert_eq!(awarded(&events), (10, 20));
        assert_eq!(ledger.balance("off"), 10);
        assert_eq!(ledger.balance("cit"), 20);
        assert_eq!(ledger.entry_count(), 2);
        let history = ledger.history("cit", None, 10);
        assert_eq!(
            history,
            vec![Entry {
                index: 0,
                at_ms: DAY0,
                delta: 20,
                cause: Cause::Connection {
                    connection_id: "k1".into(),
                    with: "off".into()
                }
            }]
        );
    }

    #[test]
    fn a_pair_is_awarded_once_per_day_and_again_the_next_day() {
        let mut ledger = Ledger::new();
        run(&mut ledger, &connect("k1", "off", "cit", "p1", DAY0)).unwrap();
        let again = run(
            &mut ledger,
            &connect("k2", "off", "cit", "p1", DAY0 + 3_600_000),
        )
        .unwrap();
        assert_eq!(awarded(&again), (0, 0), "same pair, same day");
        // The connection is still recorded, with 0 points.
        assert_eq!(ledger.history("off", None, 10).len(), 2);
        assert_eq!(ledger.history("off", None, 10)[0].delta, 0);
        let other = run(
            &mut ledger,
            &connect("k3", "off", "cit2", "p1", DAY0 + 3_600_000),
        )
        .unwrap();
        assert_eq!(awarded(&other), (10, 20), "another citizen is another pair");
        let next_day = run(
            &mut ledger,
            &connect("k4", "off", "cit", "p1", DAY0 + DAY_MS),
        )
        .unwrap();
        assert_eq!(awarded(&next_day), (10, 20));
        assert_eq!(ledger.balance("cit"), 40);
        assert_eq!(ledger.balance("off"), 30);
    }

    #[test]
    fn the_daily_cap_gives_a_partial_award_then_nothing() {
        let mut ledger = Ledger::new();
        // The citizen earns 20 a time against a cap of 50: 20, 20, 10, 0.
        let got: Vec<(u64, u64)> = ["o1", "o2", "o3", "o4"]
            .iter()
            .enumerate()
            .map(|(i, officer)| {
                let id = format!("k{i}");
                awarded(
                    &run(
                        &mut ledger,
                        &connect(&id, officer, "cit", "p1", DAY0 + i as i64),
                    )
                    .unwrap(),
                )
            })
            .collect();
        assert_eq!(got, vec![(10, 20), (10, 20), (10, 10), (10, 0)]);
        assert_eq!(ledger.balance("cit"), 50);
        // A new day, a new cap.
        let next = run(
            &mut ledger,
            &connect("k9", "o1", "cit", "p1", DAY0 + DAY_MS),
        )
        .unwrap();
        assert_eq!(awarded(&next), (10, 20));
    }

    #[test]
    fn redeeming_more_than_the_balance_is_refused() {
        let mut ledger = Ledger::new();
        run(&mut ledger, &connect("k1", "off", "cit", "p1", DAY0)).unwrap();
        let err = ledger
            .handle(&redeem("r1", "cit", "coffee", 21), &RULES)
            .unwrap_err();
        assert_eq!(
            err,
            LedgerError::InsufficientPoints {
                balance: 20,
                wanted: 21
            }
        );
        assert_eq!(err.code(), "insufficient_points");
        let err = ledger
            .handle(&redeem("r1", "nobody", "coffee", 1), &RULES)
            .unwrap_err();
        assert_eq!(err.code(), "insufficient_points");
        assert_eq!(ledger.balance("cit"), 20);
    }

    #[test]
    fn zero_points_and_empty_fields_are_invalid() {
        let ledger = Ledger::new();
        for (cmd, field) in [
            (redeem("r1", "cit", "coffee", 0), "cost"),
            (donate("d1", "cit", "shelter", 0), "points"),
            (redeem("", "cit", "coffee", 1), "request_id"),
            (redeem("r1", "cit", " ", 1), "offer_id"),
            (connect("k1", "off", "off", "p1", DAY0), "officer"),
            (connect("k1", "off", "cit", "", DAY0), "precinct"),
            (connect("k1", "off", "cit", "p1", -1), "at_ms"),
        ] {
            let err = ledger.handle(&cmd, &RULES).unwrap_err();
            assert_eq!(err.code(), "invalid_argument", "{cmd:?}");
            assert!(err.to_string().contains(field), "{err} should name {field}");
        }
    }

    #[test]
    fn a_replayed_redemption_returns_the_same_voucher_and_journals_nothing() {
        let mut ledger = Ledger::new();
        run(&mut ledger, &connect("k1", "off", "cit", "p1", DAY0)).unwrap();
        let serial = ledger.next_voucher_serial();
        let first = run(&mut ledger, &redeem("r1", "cit", "coffee", 15)).unwrap();
        assert!(matches!(
            first.as_slice(),
            [LedgerEvent::Redeemed { voucher_serial, precinct, .. }]
                if *voucher_serial == serial && precinct == "p1"
        ));
        assert_eq!(ledger.next_voucher_serial(), serial + 1);
        let before = ledger.clone();
        // The retry arrives later and is stamped later: still the same request.
        let mut retry = redeem("r1", "cit", "coffee", 15);
        if let LedgerCommand::Redeem { at_ms, .. } = &mut retry {
            *at_ms += 60_000;
        }
        match ledger.handle(&retry, &RULES).unwrap() {
            Decision::Replayed(e) => assert_eq!(e, first[0]),
            other => panic!("expected a replay, got {other:?}"),
        }
        assert_eq!(ledger, before, "handle changes nothing");
        assert_eq!(ledger.balance("cit"), 5);
        // The same id is per user: another user's "r1" is another request.
        run(&mut ledger, &connect("k2", "off2", "cit2", "p1", DAY0)).unwrap();
        let other = run(&mut ledger, &redeem("r1", "cit2", "coffee", 15)).unwrap();
        assert!(matches!(
            other.as_slice(),
            [LedgerEvent::Redeemed { voucher_serial, .. }] if *voucher_serial == serial + 1
        ));
    }

    #[test]
    fn a_reused_request_id_with_other_content_is_a_conflict() {
        let mut ledger = Ledger::new();
        run(&mut ledger, &connect("k1", "off", "cit", "p1", DAY0)).unwrap();
        run(&mut ledger, &redeem("r1", "cit", "coffee", 5)).unwrap();
        for cmd in [
            redeem("r1", "cit", "coffee", 6),
            redeem("r1", "cit", "tea", 5),
            donate("r1", "cit", "shelter", 5),
            LedgerCommand::Redeem {
                request_id: "r1".into(),
                user: "cit".into(),
                offer_id: "coffee".into(),
                cost: 5,
                at_ms: DAY0,
                precinct: Some("p9".into()),
            },
        ] {
            let err = ledger.handle(&cmd, &RULES).unwrap_err();
            assert_eq!(
                err,
                LedgerError::RequestIdReused {
                    request_id: "r1".into()
                }
            );
            assert_eq!(err.code(), "conflict");
        }
        // Naming the precinct it was already reported under is the same request.
        let same = LedgerCommand::Redeem {
            request_id: "r1".into(),
            user: "cit".into(),
            offer_id: "coffee".into(),
            cost: 5,
            at_ms: DAY0,
            precinct: Some("p1".into()),
        };
        assert!(matches!(
            ledger.handle(&same, &RULES),
            Ok(Decision::Replayed(_))
        ));
    }

    #[test]
    fn connections_are_idempotent_by_id() {
        let mut ledger = Ledger::new();
        let first = run(&mut ledger, &connect("k1", "off", "cit", "p1", DAY0)).unwrap();
        match ledger
            .handle(&connect("k1", "off", "cit", "p1", DAY0 + 5), &RULES)
            .unwrap()
        {
            Decision::Replayed(e) => assert_eq!(e, first[0]),
            other => panic!("expected a replay, got {other:?}"),
        }
        let err = ledger
            .handle(&connect("k1", "off", "cit2", "p1", DAY0), &RULES)
            .unwrap_err();
        assert_eq!(
            err,
            LedgerError::DuplicateConnection {
                connection_id: "k1".into()
            }
        );
        assert_eq!(err.code(), "already_exists");
    }

    #[test]
    fn a_donation_debits_and_is_idempotent() {
        let mut ledger = Ledger::new();
        run(&mut ledger, &connect("k1", "off", "cit", "p1", DAY0)).unwrap();
        let events = run(&mut ledger, &donate("d1", "cit", "shelter", 8)).unwrap();
        assert_eq!(
            events,
            vec![LedgerEvent::Donated {
                request_id: "d1".into(),
                user: "cit".into(),
                charity_id: "shelter".into(),
                points: 8,
                at_ms: DAY0 + 2_000,
                precinct: "p1".into(),
            }]
        );
        assert_eq!(ledger.balance("cit"), 12);
        assert_eq!(
            ledger.handle(&donate("d1", "cit", "shelter", 8), &RULES),
            Ok(Decision::Replayed(events[0].clone()))
        );
        assert_eq!(
            ledger.handle(&donate("d2", "cit", "shelter", 13), &RULES),
            Err(LedgerError::InsufficientPoints {
                balance: 12,
                wanted: 13
            })
        );
        assert_eq!(
            ledger.history("cit", None, 1)[0].cause,
            Cause::Donation {
                request_id: "d1".into(),
                charity_id: "shelter".into()
            }
        );
        assert_eq!(
            ledger.next_voucher_serial(),
            1,
            "a donation issues no voucher"
        );
    }

    #[test]
    fn the_home_precinct_is_the_latest_connections_or_none() {
        let mut ledger = Ledger::new();
        run(&mut ledger, &connect("k1", "o1", "cit", "p1", DAY0)).unwrap();
        run(&mut ledger, &connect("k2", "o2", "cit", "p2", DAY0 + 1)).unwrap();
        let events = run(&mut ledger, &donate("d1", "cit", "shelter", 1)).unwrap();
        assert!(matches!(&events[0], LedgerEvent::Donated { precinct, .. } if precinct == "p2"));
        let mut given = redeem("r1", "cit", "coffee", 1);
        if let LedgerCommand::Redeem { precinct, .. } = &mut given {
            *precinct = Some("p7".into());
        }
        let events = run(&mut ledger, &given).unwrap();
        assert!(matches!(&events[0], LedgerEvent::Redeemed { precinct, .. } if precinct == "p7"));
        assert_eq!(ledger.home_precinct("stranger"), NO_PRECINCT);
    }

    #[test]
    fn history_pages_newest_first() {
        let mut ledger = Ledger::new();
        for i in 0..5 {
            let day = DAY0 + i * DAY_MS;
            run(
                &mut ledger,
                &connect(&format!("k{i}"), "off", "cit", "p1", day),
            )
            .unwrap();
        }
        let indexes = |page: &[Entry]| page.iter().map(|e| e.index).collect::<Vec<_>>();
        let first = ledger.history("cit", None, 2);
        assert_eq!(indexes(&first), vec![4, 3]);
        assert_eq!(first[0].at_ms, DAY0 + 4 * DAY_MS);
        let second = ledger.history("cit", Some(3), 2);
        assert_eq!(indexes(&second), vec![2, 1]);
        let last = ledger.history("cit", Some(1), 2);
        assert_eq!(indexes(&last), vec![0]);
        assert!(ledger.history("cit", Some(0), 2).is_empty());
        assert_eq!(indexes(&ledger.history("cit", Some(99), 1)), vec![4]);
        assert!(ledger.history("cit", None, 0).is_empty());
        assert!(ledger.history("nobody", None, 10).is_empty());
    }

    #[test]
    fn the_report_groups_by_day_and_precinct() {
        let mut ledger = Ledger::new();
        run(&mut ledger, &connect("k1", "o1", "c1", "north", DAY0)).unwrap();
        run(&mut ledger, &connect("k2", "o1", "c1", "north", DAY0 + 1)).unwrap(); // 0 points
        run(&mut ledger, &connect("k3", "o2", "c2", "south", DAY0 + 2)).unwrap();
        run(&mut ledger, &redeem("r1", "c1", "coffee", 5)).unwrap(); // north, home
        run(&mut ledger, &donate("d1", "c2", "shelter", 3)).unwrap(); // south, home
        run(
            &mut ledger,
            &connect("k4", "o1", "c1", "north", DAY0 + DAY_MS),
        )
        .unwrap();
        let day0 = utc_day(DAY0);
        let row = |day, precinct: &str, connections, awarded, redeemed, donated| ReportRow {
            day,
            precinct: precinct.into(),
            connections,
            points_awarded: awarded,
            points_redeemed: redeemed,
            points_donated: donated,
        };
        assert_eq!(
            ledger.report(day0, day0 + 1),
            vec![
                row(day0, "north", 2, 30, 5, 0),
                row(day0, "south", 1, 30, 0, 3),
                row(day0 + 1, "north", 1, 30, 0, 0),
            ]
        );
        assert_eq!(ledger.report(day0 + 1, day0 + 1).len(), 1);
        assert!(ledger.report(day0 + 2, day0 + 9).is_empty());
        assert!(ledger.report(day0 + 1, day0).is_empty());
    }

    #[test]
    fn award_bookkeeping_keeps_only_today_and_yesterday() {
        let mut ledger = Ledger::new();
        run(&mut ledger, &connect("k1", "off", "cit", "p1", DAY0)).unwrap();
        run(
            &mut ledger,
            &connect("k2", "off", "cit", "p1", DAY0 + DAY_MS),
        )
        .unwrap();
        assert_eq!(ledger.days.len(), 2);
        run(
            &mut ledger,
            &connect("k3", "off", "cit", "p1", DAY0 + 2 * DAY_MS),
        )
        .unwrap();
        assert_eq!(
            ledger.days.iter().map(|b| b.day).collect::<Vec<_>>(),
            vec![utc_day(DAY0) + 1, utc_day(DAY0) + 2]
        );
        // Yesterday's limits still hold for a late arrival...
        let late = run(
            &mut ledger,
            &connect("k4", "off", "cit", "p1", DAY0 + DAY_MS + 5),
        )
        .unwrap();
        assert_eq!(awarded(&late), (0, 0));
        // ...and a day already pruned pays nothing, as its limits can no longer be checked.
        let older = run(&mut ledger, &connect("k5", "off", "cit2", "p1", DAY0 + 5)).unwrap();
        assert_eq!(awarded(&older), (0, 0));
        assert_eq!(ledger.days.len(), 2);
    }

    #[test]
    fn a_snapshot_round_trips_through_bincode() {
        let mut ledger = Ledger::new();
        run(&mut ledger, &connect("k1", "off", "cit", "p1", DAY0)).unwrap();
        run(&mut ledger, &redeem("r1", "cit", "coffee", 5)).unwrap();
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&ledger, config).unwrap();
        let (back, _): (Ledger, usize) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(back, ledger);
        let json = serde_json::to_string(&ledger).unwrap();
        assert_eq!(serde_json::from_str::<Ledger>(&json).unwrap(), ledger);
    }

    const USERS: [&str; 4] = ["u1", "u2", "u3", "u4"];

    fn any_command() -> impl Strategy<Value = LedgerCommand> {
        // Few ids, users and days so retries, conflicts, repeated pairs and caps all happen;
        // times wander back and forth across four days so late arrivals happen too.
        let at = 0i64..4 * DAY_MS;
        prop_oneof![
            4 => (0..12u8, 0..4usize, 0..4usize, 0..3u8, at.clone()).prop_map(|(k, o, c, p, at)| {
                connect(&format!("k{k}"), USERS[o], USERS[c], &format!("p{p}"), DAY0 + at)
            }),
            2 => (0..6u8, 0..4usize, 0..3u8, 0..40u64, at.clone(), proptest::option::of(0..3u8)).prop_map(
                |(r, u, o, cost, at, p)| LedgerCommand::Redeem {
                    request_id: format!("r{r}"),
                    user: USERS[u].into(),
                    offer_id: format!("o{o}"),
                    cost,
                    at_ms: DAY0 + at,
                    precinct: p.map(|p| format!("p{p}")),
                }
            ),
            1 => (0..6u8, 0..4usize, 0..2u8, 0..40u64, at).prop_map(|(r, u, c, points, at)| {
                LedgerCommand::Donate(DonateRequest {
                    request_id: format!("r{r}"),
                    user: USERS[u].into(),
                    charity_id: format!("c{c}"),
                    points,
                    at_ms: DAY0 + at,
                })
            }),
        ]
    }

    proptest! {
        /// Any command sequence: balances equal the sum of their entries and never go
        /// negative, no user is awarded more than the cap in a day, a replay answers with the
        /// journaled event, serials only grow, and replaying the journal (recovery) rebuilds
        /// the same state.
        #[test]
        fn balances_caps_and_recovery_hold(
            commands in proptest::collection::vec(any_command(), 0..80),
            officer_points in 0..30u64,
            citizen_points in 0..30u64,
            daily_cap in 0..60u64,
        ) {
            let rules = AwardRules { officer_points, citizen_points, daily_cap };
            let mut ledger = Ledger::new();
            let mut journal: Vec<LedgerEvent> = Vec::new();
            for cmd in &commands {
                match ledger.handle(cmd, &rules) {
                    Ok(Decision::Apply(events)) => {
                        for e in &events { ledger.apply(e); }
                        journal.extend(events);
                    }
                    Ok(Decision::Replayed(e)) => prop_assert!(journal.contains(&e), "{:?}", e),
                    Err(err) => prop_assert!(!err.to_string().is_empty()),
                }
            }
            let mut awarded: BTreeMap<(String, u32), u64> = BTreeMap::new();
            let mut last_serial = 0;
            for e in &journal {
                match e {
                    LedgerEvent::Connected { officer, citizen, at_ms, officer_points, citizen_points, .. } => {
                        *awarded.entry((officer.clone(), utc_day(*at_ms))).or_default() += officer_points;
                        *awarded.entry((citizen.clone(), utc_day(*at_ms))).or_default() += citizen_points;
                    }
                    LedgerEvent::Redeemed { voucher_serial, .. } => {
                        prop_assert!(*voucher_serial > last_serial);
                        last_serial = *voucher_serial;
                    }
                    LedgerEvent::Donated { .. } => {}
                }
            }
            for (key, total) in &awarded {
                prop_assert!(*total <= daily_cap, "{:?} awarded {}", key, total);
            }
            let mut entries = 0;
            for user in USERS {
                let history = ledger.history(user, None, usize::MAX);
                entries += history.len();
                let sum: i64 = history.iter().map(|e| e.delta).sum();
                prop_assert!(sum >= 0);
                prop_assert_eq!(u64::try_from(sum).unwrap(), ledger.balance(user));
            }
            prop_assert_eq!(entries, ledger.entry_count());
            let mut recovered = Ledger::new();
            for e in &journal { recovered.apply(e); }
            prop_assert_eq!(recovered, ledger);
        }
    }
}
