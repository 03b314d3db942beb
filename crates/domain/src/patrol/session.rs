//! The rules of one patrol session, pure: an officer's duty window and the connect requests
//! waiting for their answer, a citizen's set of officers it has been told are nearby.
//!
//! The session actor (the shell's `session_actor`) owns one [`SessionState`]; it reads the
//! clock and the proximity index and passes what it found in, so every rule here is tested
//! without tokio.

use super::privacy::Coarse;
use crate::error::{ErrorCode, Rejection};
use std::collections::BTreeMap;

/// Who is on the other end of a patrol session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatrolRole {
    /// Streams position while on duty, answers connect requests.
    Officer,
    /// Streams position, is told about officers nearby, asks to connect.
    Citizen,
}

/// Duty window lengths from `[patrol]` (read directly into this type under the
/// configuration's names).
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DutyRules {
    /// When the officer does not say, minutes.
    #[serde(rename = "duty_default_minutes")]
    pub default_minutes: u32,
    /// Longest, minutes.
    #[serde(rename = "duty_max_minutes")]
    pub max_minutes: u32,
}

/// Where a connect request stands, from the officer's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestState {
    /// Waiting for the officer.
    Pending,
    /// The officer accepted and the connection is recorded.
    Accepted,
    /// The officer declined.
    Declined,
    /// Nobody answered in time.
    Expired,
}

impl RequestState {
    fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Accepted => "accepted",
            RequestState::Declined => "declined",
            RequestState::Expired => "expired",
        }
    }
}

/// A connect request to this officer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    /// The citizen who asked.
    pub citizen: String,
    /// When it expires unanswered, ms since the epoch.
    pub expires_at_ms: i64,
    /// Where it stands.
    pub state: RequestState,
}

/// What an officer's answer leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerOutcome {
    /// Record a connection with this citizen (then call [`SessionState::accepted`]).
    Connect {
        /// The citizen.
        citizen: String,
    },
    /// Declined: tell the citizen.
    Declined {
        /// The citizen.
        citizen: String,
    },
}

/// A change in what a citizen has been told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NearbyChange {
    /// Tell the citizen about this officer: new, or what the citizen sees of it changed.
    Nearby(String, Coarse),
    /// Tell the citizen this officer is gone.
    Gone(String),
}

/// Answered requests are remembered this long after their expiry, so a late or repeated
/// answer gets a precise error instead of `not_found`.
pub const ANSWERED_MEMORY_MS: i64 = 10 * 60 * 1000;

/// One session's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    /// The user (token subject).
    pub user: String,
    /// Officer or citizen.
    pub role: PatrolRole,
    /// An officer's duty window end, ms since the epoch, while on duty.
    pub duty_until_ms: Option<i64>,
    /// Bumped each time a window starts, so a timer armed for an older window is ignored.
    pub duty_generation: u64,
    /// Officers this citizen has been told are nearby (and not yet gone), with what it was
    /// last told, so an update goes out only when what the citizen sees changes.
    pub nearby: BTreeMap<String, Coarse>,
    /// Connect requests to this officer, by request id.
    pub requests: BTreeMap<String, ConnectRequest>,
}

impl SessionState {
    /// A fresh session; an officer whose window from an earlier socket is still open
    /// continues it (`duty_until_ms`).
    pub fn new(user: String, role: PatrolRole, duty_until_ms: Option<i64>, now_ms: i64) -> Self {
        SessionState {
            user,
            role,
            duty_until_ms: duty_until_ms.filter(|until| *until > now_ms),
            duty_generation: 0,
            nearby: BTreeMap::new(),
            requests: BTreeMap::new(),
        }
    }

    /// Whether an officer is on duty at `now_ms`.
    pub fn on_duty(&self, now_ms: i64) -> bool {
        self.duty_until_ms.is_some_and(|until| until > now_ms)
    }

    /// Starts (or restarts) the duty window; returns its end.
    pub fn start_duty(
        &mut self,
        minutes: Option<u32>,
        rules: DutyRules,
        now_ms: i64,
    ) -> Result<i64, Rejection> {
        if self.role != PatrolRole::Officer {
            return Err(Rejection::new(
                ErrorCode::Forbidden,
                "only officers go on duty",
            ));
        }
        let minutes = minutes.unwrap_or(rules.default_minutes);
        if minutes == 0 || minutes > rules.max_minutes {
            return Err(Rejection::invalid(format!(
                "minutes must be 1..={}, got {minutes}",
                rules.max_minutes
            )));
        }
        let until = now_ms.saturating_add(i64::from(minutes) * 60_000);
        self.duty_until_ms = Some(until);
        self.duty_generation += 1;
        Ok(until)
    }

    /// Ends the duty window; false if the officer was not on duty.
    pub fn end_duty(&mut self) -> bool {
        self.duty_until_ms.take().is_some()
    }

    /// Whether the timer armed for `generation` ends the window now.
    pub fn duty_expires(&self, generation: u64, now_ms: i64) -> bool {
        generation == self.duty_generation
            && self.duty_until_ms.is_some_and(|until| until <= now_ms)
    }

    /// A citizen asks this officer to connect. Asking again while a request is pending
    /// returns that request instead of a second one.
    pub fn request_connect(
        &mut self,
        request_id: &str,
        citizen: &str,
        timeout_ms: i64,
        now_ms: i64,
    ) -> Result<(String, i64, bool), Rejection> {
        if !self.on_duty(now_ms) {
            return Err(Rejection::new(
                ErrorCode::InvalidTransition,
                format!("officer {} is not on duty", self.user),
            ));
        }
        self.expire_requests(now_ms);
        if let Some((id, pending)) = self
            .requests
            .iter()
            .find(|(_, r)| r.citizen == citizen && r.state == RequestState::Pending)
        {
            return Ok((id.clone(), pending.expires_at_ms, false));
        }
        let expires_at_ms = now_ms.saturating_add(timeout_ms);
        self.requests.insert(
            request_id.to_owned(),
            ConnectRequest {
                citizen: citizen.to_owned(),
                expires_at_ms,
                state: RequestState::Pending,
            },
        );
        Ok((request_id.to_owned(), expires_at_ms, true))
    }

    /// The officer answers `request_id`. Answering twice, after a decline or after expiry
    /// is refused with `invalid_transition` naming what happened.
    pub fn answer(
        &mut self,
        request_id: &str,
        accept: bool,
        now_ms: i64,
    ) -> Result<AnswerOutcome, Rejection> {
        self.expire_requests(now_ms);
        let Some(request) = self.requests.get_mut(request_id) else {
            return Err(Rejection::new(
                ErrorCode::NotFound,
                format!("no connect request {request_id} for this officer"),
            ));
        };
        if request.state != RequestState::Pending {
            return Err(Rejection::new(
                ErrorCode::InvalidTransition,
                format!(
                    "connect request {request_id} is already {}",
                    request.state.as_str()
                ),
            ));
        }
        if accept {
            Ok(AnswerOutcome::Connect {
                citizen: request.citizen.clone(),
            })
        } else {
            request.state = RequestState::Declined;
            Ok(AnswerOutcome::Declined {
                citizen: request.citizen.clone(),
            })
        }
    }

    /// The connection for `request_id` is recorded: the request is answered.
    pub fn accepted(&mut self, request_id: &str) {
        if let Some(request) = self.requests.get_mut(request_id) {
            request.state = RequestState::Accepted;
        }
    }

    /// Marks requests past their expiry as expired and forgets answered ones long past it;
    /// returns the requests that just expired, with their citizens, to tell both sides.
    pub fn expire_requests(&mut self, now_ms: i64) -> Vec<(String, String)> {
        let mut expired = Vec::new();
        for (id, request) in &mut self.requests {
            if request.state == RequestState::Pending && request.expires_at_ms <= now_ms {
                request.state = RequestState::Expired;
                expired.push((id.clone(), request.citizen.clone()));
            }
        }
        self.requests.retain(|_, r| {
            r.state == RequestState::Pending
                || r.expires_at_ms.saturating_add(ANSWERED_MEMORY_MS) > now_ms
        });
        expired
    }

    /// The officer leaves (off duty or disconnected): every pending request ends; returns
    /// them with their citizens, to tell each one.
    pub fn withdraw_requests(&mut self) -> Vec<(String, String)> {
        let pending = self.pending_requests();
        for (id, _) in &pending {
            if let Some(request) = self.requests.get_mut(id) {
                request.state = RequestState::Expired;
            }
        }
        pending
    }

    /// Pending requests, for telling citizens when the officer leaves.
    pub fn pending_requests(&self) -> Vec<(String, String)> {
        self.requests
            .iter()
            .filter(|(_, r)| r.state == RequestState::Pending)
            .map(|(id, r)| (id.clone(), r.citizen.clone()))
            .collect()
    }

    /// A citizen's whole view recomputed from the officers now within the radius
    /// (`found`, from the index, with what the citizen would see of each): officers new or
    /// seen differently are announced, officers announced before and not found are gone.
    pub fn reconcile_nearby(&mut self, found: Vec<(String, Coarse)>) -> Vec<NearbyChange> {
        let now: BTreeMap<String, Coarse> = found.into_iter().collect();
        let mut changes: Vec<NearbyChange> = self
            .nearby
            .keys()
            .filter(|id| !now.contains_key(*id))
            .map(|gone| NearbyChange::Gone(gone.clone()))
            .collect();
        changes.extend(
            now.iter()
                .filter(|(id, view)| self.nearby.get(*id) != Some(view))
                .map(|(id, view)| NearbyChange::Nearby(id.clone(), *view)),
        );
        self.nearby = now;
        changes
    }

    /// One officer moved or left: what the citizen must hear, if anything. `view` is what
    /// the citizen would see when the officer is on duty and within the radius.
    pub fn officer_update(&mut self, officer: &str, view: Option<Coarse>) -> Option<NearbyChange> {
        match view {
            Some(view) => {
                let previous = self.nearby.insert(officer.to_owned(), view);
                (previous != Some(view)).then(|| NearbyChange::Nearby(officer.to_owned(), view))
            }
            None => self
                .nearby
                .remove(officer)
                .map(|_| NearbyChange::Gone(officer.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RULES: DutyRules = DutyRules {
        default_minutes: 15,
        max_minutes: 60,
    };

    fn officer_on_duty(now: i64) -> SessionState {
        let mut s = SessionState::new("o1".into(), PatrolRole::Officer, None, now);
        s.start_duty(None, RULES, now).unwrap();
        s
    }

    #[test]
    fn the_default_window_is_used_and_the_maximum_enforced() {
        let mut s = SessionState::new("o1".into(), PatrolRole::Officer, None, 0);
        assert_eq!(
            s.start_duty(None, RULES, 1_000).unwrap(),
            1_000 + 15 * 60_000
        );
        assert!(s.start_duty(Some(61), RULES, 1_000).is_err());
        assert!(s.start_duty(Some(0), RULES, 1_000).is_err());
        let mut c = SessionState::new("c1".into(), PatrolRole::Citizen, None, 0);
        assert_eq!(
            c.start_duty(None, RULES, 0).unwrap_err().code,
            ErrorCode::Forbidden
        );
    }

    #[test]
    fn only_the_latest_windows_timer_expires_it() {
        let mut s = officer_on_duty(0);
        let first = s.duty_generation;
        let until = s.start_duty(Some(30), RULES, 60_000).unwrap();
        assert!(!s.duty_expires(first, until), "an older window's timer");
        assert!(!s.duty_expires(s.duty_generation, until - 1));
        assert!(s.duty_expires(s.duty_generation, until));
        assert!(!s.on_duty(until));
    }

    #[test]
    fn a_window_from_an_earlier_socket_continues_only_if_still_open() {
        assert!(SessionState::new("o".into(), PatrolRole::Officer, Some(500), 100).on_duty(100));
        assert!(!SessionState::new("o".into(), PatrolRole::Officer, Some(50), 100).on_duty(100));
    }

    #[test]
    fn double_accept_accept_after_decline_and_after_expiry_are_refused() {
        let mut s = officer_on_duty(0);
        let (a, _, new) = s.request_connect("a", "c1", 1_000, 0).unwrap();
        assert!(new);
        assert_eq!(
            s.answer(&a, true, 10).unwrap(),
            AnswerOutcome::Connect {
                citizen: "c1".into()
            }
        );
        s.accepted(&a);
        let again = s.answer(&a, true, 20).unwrap_err();
        assert_eq!(again.code, ErrorCode::InvalidTransition);
        assert!(again.message.contains("already accepted"));

        let (b, _, _) = s.request_connect("b", "c2", 1_000, 0).unwrap();
        s.answer(&b, false, 10).unwrap();
        assert!(s
            .answer(&b, true, 20)
            .unwrap_err()
            .message
            .contains("already declined"));

        let (c, expires, _) = s.request_connect("c", "c3", 1_000, 0).unwrap();
        let late = s.answer(&c, true, expires).unwrap_err();
        assert!(late.message.contains("already expired"));
        assert_eq!(
            s.answer("nope", true, 0).unwrap_err().code,
            ErrorCode::NotFound
        );
    }

    #[test]
    fn asking_twice_returns_the_pending_request() {
        let mut s = officer_on_duty(0);
        let first = s.request_connect("a", "c1", 1_000, 0).unwrap();
        let second = s.request_connect("b", "c1", 1_000, 5).unwrap();
        assert_eq!((first.0, first.1), (second.0, second.1));
        assert!(!second.2);
    }

    #[test]
    fn an_officer_off_duty_takes_no_requests() {
        let mut s = SessionState::new("o1".into(), PatrolRole::Officer, None, 0);
        assert_eq!(
            s.request_connect("a", "c1", 1_000, 0).unwrap_err().code,
            ErrorCode::InvalidTransition
        );
    }

    #[test]
    fn expiry_reports_each_request_once_and_forgets_old_answers() {
        let mut s = officer_on_duty(0);
        s.request_connect("a", "c1", 1_000, 0).unwrap();
        assert_eq!(s.expire_requests(999), vec![]);
        assert_eq!(s.expire_requests(1_000), vec![("a".into(), "c1".into())]);
        assert_eq!(s.expire_requests(2_000), vec![]);
        s.expire_requests(1_000 + ANSWERED_MEMORY_MS);
        assert!(s.requests.is_empty());
    }

    fn view(i: u8) -> Coarse {
        Coarse {
            position: crate::geo::Position {
                lat_e7: i32::from(i),
                lon_e7: 0,
            },
            distance_m: 50,
            bearing_deg: 0,
        }
    }

    #[test]
    fn an_officer_update_is_pushed_only_when_the_citizen_would_see_a_change() {
        let mut s = SessionState::new("c".into(), PatrolRole::Citizen, None, 0);
        assert_eq!(
            s.officer_update("o", Some(view(1))),
            Some(NearbyChange::Nearby("o".into(), view(1)))
        );
        assert_eq!(s.officer_update("o", Some(view(1))), None);
        assert!(s.officer_update("o", Some(view(2))).is_some());
        assert_eq!(
            s.officer_update("o", None),
            Some(NearbyChange::Gone("o".into()))
        );
        assert_eq!(s.officer_update("o", None), None);
    }

    proptest! {
        /// Whatever order officers come and go in, a citizen hears `gone` only for an
        /// officer it heard `nearby` for, and its view equals the last reconciliation.
        #[test]
        fn nearby_and_gone_alternate_per_officer(
            steps in proptest::collection::vec(
                proptest::collection::btree_map(0u8..6, 0u8..3, 0..6), 1..30)
        ) {
            let mut s = SessionState::new("c".into(), PatrolRole::Citizen, None, 0);
            let mut told: BTreeMap<String, Coarse> = BTreeMap::new();
            for found in steps {
                let found: Vec<(String, Coarse)> =
                    found.iter().map(|(o, v)| (format!("o{o}"), view(*v))).collect();
                for change in s.reconcile_nearby(found.clone()) {
                    match change {
                        NearbyChange::Nearby(o, v) => {
                            prop_assert_ne!(told.insert(o, v), Some(v));
                        }
                        NearbyChange::Gone(o) => prop_assert!(told.remove(&o).is_some()),
                    }
                }
                let expected: BTreeMap<String, Coarse> = found.into_iter().collect();
                prop_assert_eq!(&told, &expected);
                prop_assert_eq!(&s.nearby, &expected);
            }
        }
    }
}
