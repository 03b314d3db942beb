//! What every patrol actor and the facade share: the settings, the two proximity indexes,
//! the live sessions, and the handle of the book actor.
//!
//! The indexes are read directly by whoever needs them (a citizen's session, the facade
//! answering an N-nearest query), never through an actor, so a lookup costs no message.

use super::ledger::AwardRules;
use super::msg::{BookMsg, OfficerCard, SessionMsg};
use super::notice::Notice;
use super::privacy::Coarsening;
use super::proximity::ProximityIndex;
use super::session::DutyRules;
use super::voucher::VoucherKey;
use crate::actors::clock::Clock;
use crate::actors::mail::MailDomain;
use crate::actors::registry::Registry;
use crate::config::Config;
use crate::error::{ErrorCode, Rejection};
use crate::geo::Position;
use crate::persist::Journal;
use dashmap::DashMap;
use ractor::ActorRef;
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

/// The patrol rules from `[patrol]` (and the timeouts they run under).
#[derive(Debug, Clone)]
pub struct PatrolSettings {
    /// H3 resolution of both indexes.
    pub h3_resolution: u8,
    /// Citizens hear about on-duty officers within this many metres.
    pub nearby_radius_m: f64,
    /// The farthest an N-nearest query looks.
    pub nearest_max_radius_m: f64,
    /// The most an N-nearest query returns.
    pub nearest_max_count: u32,
    /// What citizens may see of an officer's position.
    pub coarsening: Coarsening,
    /// Duty window lengths.
    pub duty: DutyRules,
    /// How long a connect request waits for its answer, ms.
    pub connect_timeout_ms: i64,
    /// How close two people must be for an in-person connection, metres.
    pub in_person_m: f64,
    /// Positions less accurate than this are refused, metres.
    pub max_accuracy_m: f64,
    /// Points per connection and the daily cap.
    pub award: AwardRules,
    /// Longest direct message, characters.
    pub max_message_chars: usize,
    /// How long a call to an actor may take.
    pub call_timeout: Duration,
    /// Book events between snapshots (at least; larger books snapshot less often).
    pub snapshot_every: u64,
}

impl PatrolSettings {
    /// Reads `[patrol]` (already validated by [`Config::validate`]).
    pub fn from_config(config: &Config) -> Result<PatrolSettings, String> {
        let p = &config.patrol;
        let privacy = h3o::Resolution::try_from(p.privacy_resolution)
            .map_err(|e| format!("patrol.privacy_resolution: {e}"))?;
        Ok(PatrolSettings {
            h3_resolution: p.h3_resolution,
            nearby_radius_m: p.nearby_radius_m,
            nearest_max_radius_m: p.nearest_max_radius_m,
            nearest_max_count: p.nearest_max_count,
            coarsening: Coarsening {
                resolution: privacy,
                distance_step_m: p.distance_step_m,
            },
            duty: p.duty,
            connect_timeout_ms: i64::try_from(p.connect_timeout_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            in_person_m: p.in_person_m,
            max_accuracy_m: p.max_accuracy_m,
            award: p.award,
            max_message_chars: p.max_message_chars,
            call_timeout: Duration::from_millis(config.supervision.call_timeout_ms),
            snapshot_every: config.persist.snapshot_every,
        })
    }
}

/// Shared by the facade, the supervisor, the book and every session actor.
pub struct PatrolContext {
    /// The rules.
    pub settings: PatrolSettings,
    /// Wall time that follows tokio's clock, so tests can pause it.
    pub clock: Clock,
    /// On-duty officers with a known position.
    pub officers: ProximityIndex,
    /// Citizens with a known position.
    pub citizens: ProximityIndex,
    /// On-duty officers' names and precincts.
    pub cards: DashMap<String, OfficerCard>,
    /// Live sessions by user id (one per user: a new socket replaces the old session).
    pub sessions: Registry<String, SessionMsg>,
    /// Which user and role each live session actor serves, so the supervisor can clean up
    /// after one that failed.
    pub session_of: DashMap<ractor::ActorId, (String, super::session::PatrolRole)>,
    /// Open duty windows by officer, so a reconnecting officer stays on duty.
    pub duty_windows: DashMap<String, i64>,
    /// The book actor's current incarnation (replaced when the supervisor restarts it).
    pub book: Mutex<Option<ActorRef<BookMsg>>>,
    /// Journals book events and messages.
    pub journal: Journal,
    /// Thank-you and voucher mails.
    pub mail: MailDomain,
    /// Signs voucher codes.
    pub voucher_key: VoucherKey,
}

impl PatrolContext {
    /// The book actor, or `unavailable` while it restarts.
    pub fn book(&self) -> Result<ActorRef<BookMsg>, Rejection> {
        self.book
            .lock()
            .ok()
            .and_then(|slot| slot.clone())
            .ok_or_else(|| Rejection::new(ErrorCode::Unavailable, "patrol is restarting; retry"))
    }

    /// Tells every citizen within the nearby radius of any of `around` where `officer` is
    /// now (`at`), or that it is gone (`None`); each citizen's session decides what changes
    /// for it. `around` holds the officer's previous and new positions, so citizens the
    /// officer just left are told too.
    pub fn tell_citizens(&self, officer: &str, around: &[Position], at: Option<Position>) {
        let radius = self.settings.nearby_radius_m;
        let mut told = BTreeSet::new();
        for centre in around {
            for citizen in self.citizens.within(*centre, radius) {
                if !told.insert(citizen.id.clone()) {
                    continue;
                }
                if let Some(session) = self.sessions.get(&citizen.id.to_string()) {
                    let _ = session.cast(SessionMsg::OfficerMoved {
                        officer: officer.to_owned(),
                        at,
                    });
                }
            }
        }
    }

    /// Takes a session that stopped (or failed) out of the registry and, if it was still
    /// the user's current session, out of the index, telling citizens an officer is gone.
    pub fn forget_session(
        &self,
        user: &str,
        role: super::session::PatrolRole,
        id: ractor::ActorId,
    ) {
        let key = user.to_owned();
        let current = self
            .sessions
            .get(&key)
            .is_some_and(|session| session.get_id() == id);
        self.sessions.remove_if(&key, id);
        self.session_of.remove(&id);
        if !current {
            return;
        }
        match role {
            super::session::PatrolRole::Officer => {
                self.cards.remove(user);
                if let Some(last) = self.officers.remove(user) {
                    self.report_officers();
                    self.tell_citizens(user, &[last], None);
                }
            }
            super::session::PatrolRole::Citizen => {
                self.citizens.remove(user);
            }
        }
    }

    /// Publishes how many officers are in the index (after it gained or lost one).
    pub fn report_officers(&self) {
        metrics::gauge!(crate::metrics::PATROL_OFFICERS_INDEXED).set(self.officers.len() as f64);
    }

    /// Queues `notice` for `user`'s session if they are online; false if they are not.
    pub fn notify(&self, user: &str, notice: Notice) -> bool {
        self.sessions
            .get(&user.to_owned())
            .is_some_and(|session| session.cast(SessionMsg::Notify(notice)).is_ok())
    }
}
