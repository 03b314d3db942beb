//! One actor per connected officer or citizen: holds the session's role, duty window,
//! position and cell, keeps the proximity indexes current, and queues what its device must
//! hear as [`Notice`]s for the socket to send.
//!
//! The actor only reads the clock, updates the indexes and forwards; the rules are in
//! [`super::session`]. Durable changes (connections) go through the book actor, which
//! journals them before this actor answers.

use super::context::PatrolContext;
use super::msg::{BookMsg, OfficerCard, SessionMsg};
use super::notice::{Connection, Notice};
use super::session::{AnswerOutcome, NearbyChange, PatrolRole, SessionState};
use crate::actors::ask::ask;
use crate::error::{ErrorCode, Rejection};
use crate::geo::Position;
use crate::metrics as m;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Notices one session may have queued for its socket; a device that falls this far behind
/// is disconnected (it reconnects and gets a fresh view) rather than holding memory.
pub const NOTICE_QUEUE: usize = 1024;

/// Spawn arguments.
pub struct SessionArgs {
    /// Who.
    pub user: String,
    /// Officer or citizen.
    pub role: PatrolRole,
    /// Shared patrol state.
    pub ctx: Arc<PatrolContext>,
    /// Into the socket.
    pub notices: mpsc::Sender<Notice>,
    /// An officer's imported account (none: not imported, cannot go on duty).
    pub card: Option<OfficerCard>,
}

/// The actor's state.
pub struct SessionActorState {
    /// The rules' state.
    state: SessionState,
    /// Shared patrol state.
    ctx: Arc<PatrolContext>,
    /// Into the socket.
    notices: mpsc::Sender<Notice>,
    /// Last known position.
    position: Option<Position>,
    /// An officer's account.
    card: Option<OfficerCard>,
    /// Set when a newer session took over, so stopping leaves the indexes to it.
    replaced: bool,
}

/// The ractor behaviour of a session.
pub struct SessionActor;

/// The `kind` label of [`m::PATROL_PUSHES`]: the name of the push the notice becomes on the
/// wire (section 17), so the metric and the protocol speak of the same things.
fn push_kind(notice: &Notice) -> &'static str {
    match notice {
        Notice::DutyEnded { .. } => "duty_ended",
        Notice::OfficerNearby { .. } => "officer_nearby",
        Notice::OfficerGone { .. } => "officer_gone",
        Notice::ConnectRequested { .. } => "connect_requested",
        Notice::ConnectClosed { .. } => "connect_closed",
        Notice::ConnectionEstablished(_) => "connection_established",
        Notice::DirectMessage(_) => "direct_message",
    }
}

impl SessionActorState {
    fn now(&self) -> i64 {
        self.ctx.clock.now_ms()
    }

    fn user(&self) -> &str {
        &self.state.user
    }

    /// Queues a notice; a full queue means the device stopped reading, so the session ends.
    /// A direct message queued is confirmed to the book, which then counts it delivered.
    fn push(&self, myself: &ActorRef<SessionMsg>, notice: Notice) {
        let confirm = match &notice {
            Notice::DirectMessage(m) => Some((super::book::pair_key(&m.from, &m.to), m.seq)),
            _ => None,
        };
        let kind = push_kind(&notice);
        match self.notices.try_send(notice) {
            Ok(()) => {
                metrics::counter!(m::PATROL_PUSHES, "kind" => kind).increment(1);
                if let (Some((pair, seq)), Ok(book)) = (confirm, self.ctx.book()) {
                    let _ = book.cast(BookMsg::Delivered {
                        user: self.state.user.clone(),
                        pair,
                        seq,
                    });
                }
            }
            Err(e) => {
                if matches!(e, mpsc::error::TrySendError::Full(_)) {
                    metrics::counter!(m::PATROL_SLOW_SESSIONS).increment(1);
                    tracing::warn!(
                        user = self.user(),
                        "patrol notices backed up; closing session"
                    );
                }
                myself.stop(Some("notices not read".into()));
            }
        }
    }

    fn push_change(&self, myself: &ActorRef<SessionMsg>, change: NearbyChange) {
        let notice = match change {
            NearbyChange::Nearby(officer, view) => Notice::OfficerNearby {
                display_name: self
                    .ctx
                    .cards
                    .get(&officer)
                    .map_or_else(|| officer.clone(), |c| c.display_name.clone()),
                officer,
                view,
            },
            NearbyChange::Gone(officer) => Notice::OfficerGone { officer },
        };
        self.push(myself, notice);
    }

    /// What a citizen at `me` sees of an on-duty officer at `officer`, if within the radius.
    fn view_of(&self, me: Position, officer: Position) -> Option<super::privacy::Coarse> {
        let distance = me.distance_m(officer);
        (distance <= self.ctx.settings.nearby_radius_m)
            .then(|| self.ctx.settings.coarsening.view(me, officer, distance))
    }

    fn on_position(&mut self, myself: &ActorRef<SessionMsg>, at: Position) -> bool {
        let previous = self.position.replace(at);
        let user = self.state.user.clone();
        match self.state.role {
            PatrolRole::Officer => {
                if !self.state.on_duty(self.now()) {
                    return false;
                }
                let changed = self.ctx.officers.upsert(&user, at);
                if previous.is_none() {
                    self.ctx.report_officers();
                }
                let around: Vec<Position> = previous.into_iter().chain([at]).collect();
                self.ctx.tell_citizens(&user, &around, Some(at));
                changed
            }
            PatrolRole::Citizen => {
                let changed = self.ctx.citizens.upsert(&user, at);
                let found = self
                    .ctx
                    .officers
                    .within(at, self.ctx.settings.nearby_radius_m)
                    .into_iter()
                    .map(|n| {
                        let view = self
                            .ctx
                            .settings
                            .coarsening
                            .view(at, n.position, n.distance_m);
                        (n.id.to_string(), view)
                    })
                    .collect();
                for change in self.state.reconcile_nearby(found) {
                    self.push_change(myself, change);
                }
                changed
            }
        }
    }

    fn start_duty(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        minutes: Option<u32>,
    ) -> Result<i64, Rejection> {
        let Some(card) = self.card.clone() else {
            return Err(Rejection::new(
                ErrorCode::NotFound,
                format!(
                    "officer {} has no account; an admin imports officers first",
                    self.user()
                ),
            ));
        };
        let now = self.now();
        let until = self
            .state
            .start_duty(minutes, self.ctx.settings.duty, now)?;
        self.on_duty_from(myself, card, until, now);
        Ok(until)
    }

    /// Enters the indexes for a window ending at `until` and arms its timer.
    fn on_duty_from(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        card: OfficerCard,
        until: i64,
        now: i64,
    ) {
        let user = self.state.user.clone();
        self.ctx.duty_windows.insert(user.clone(), until);
        self.ctx.cards.insert(user.clone(), card);
        if let Some(at) = self.position {
            self.ctx.officers.upsert(&user, at);
            self.ctx.report_officers();
            self.ctx.tell_citizens(&user, &[at], Some(at));
        }
        let generation = self.state.duty_generation;
        let wait = Duration::from_millis(u64::try_from(until - now).unwrap_or(0));
        myself.send_after(wait, move || SessionMsg::DutyTimer { generation });
    }

    /// Leaves the index and tells everyone who must know. `reason` is sent to the officer's
    /// own device when set.
    fn off_duty(&mut self, myself: &ActorRef<SessionMsg>, reason: Option<&'static str>) {
        if !self.state.end_duty() {
            return;
        }
        let user = self.state.user.clone();
        self.ctx.duty_windows.remove(&user);
        self.leave_index();
        if let Some(reason) = reason {
            self.push(
                myself,
                Notice::DutyEnded {
                    reason,
                    at_ms: self.now(),
                },
            );
        }
    }

    /// Removes an officer from the index and the cards, tells citizens around it and ends
    /// its pending requests.
    fn leave_index(&mut self) {
        let user = self.state.user.clone();
        self.ctx.cards.remove(&user);
        if let Some(last) = self.ctx.officers.remove(&user) {
            self.ctx.report_officers();
            self.ctx.tell_citizens(&user, &[last], None);
        }
        for (request_id, citizen) in self.state.withdraw_requests() {
            self.ctx.notify(
                &citizen,
                Notice::ConnectClosed {
                    request_id,
                    outcome: "officer_left",
                },
            );
        }
    }

    fn incoming_request(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        citizen: String,
        display_name: String,
        distance_m: f64,
    ) -> Result<(String, i64), Rejection> {
        let now = self.now();
        let timeout = self.ctx.settings.connect_timeout_ms;
        let fresh = crate::ids::time_ordered_id(now);
        let (request_id, expires_at_ms, new) =
            self.state.request_connect(&fresh, &citizen, timeout, now)?;
        if new {
            self.push(
                myself,
                Notice::ConnectRequested {
                    request_id: request_id.clone(),
                    citizen,
                    display_name,
                    distance_m: self.ctx.settings.coarsening.distance(distance_m),
                    expires_at_ms,
                },
            );
            let wait = Duration::from_millis(u64::try_from(expires_at_ms - now).unwrap_or(0));
            myself.send_after(wait, || SessionMsg::RequestTimer);
        }
        Ok((request_id, expires_at_ms))
    }

    async fn answer(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        request_id: String,
        accept: bool,
    ) -> Result<Option<Connection>, Rejection> {
        let now = self.now();
        let citizen = match self.state.answer(&request_id, accept, now)? {
            AnswerOutcome::Declined { citizen } => {
                self.ctx.notify(
                    &citizen,
                    Notice::ConnectClosed {
                        request_id,
                        outcome: "declined",
                    },
                );
                return Ok(None);
            }
            AnswerOutcome::Connect { citizen } => citizen,
        };
        super::reach::in_person(
            self.position,
            self.ctx.citizens.get(&citizen),
            self.ctx.settings.in_person_m,
        )?;
        let precinct = self
            .card
            .as_ref()
            .map_or_else(|| "none".to_owned(), |c| c.precinct.clone());
        let book = self.ctx.book()?;
        let officer = self.state.user.clone();
        let (for_officer, for_citizen) = ask(
            &book,
            |reply| BookMsg::Connect {
                connection_id: request_id.clone(),
                officer,
                citizen: citizen.clone(),
                precinct,
                at_ms: now,
                reply,
            },
            self.ctx.settings.call_timeout,
            "the patrol book",
        )
        .await??;
        self.state.accepted(&request_id);
        self.push(myself, Notice::ConnectionEstablished(for_officer.clone()));
        self.ctx
            .notify(&citizen, Notice::ConnectionEstablished(for_citizen));
        Ok(Some(for_officer))
    }

    fn expire_requests(&mut self, myself: &ActorRef<SessionMsg>) {
        for (request_id, citizen) in self.state.expire_requests(self.now()) {
            self.push(
                myself,
                Notice::ConnectClosed {
                    request_id: request_id.clone(),
                    outcome: "expired",
                },
            );
            self.ctx.notify(
                &citizen,
                Notice::ConnectClosed {
                    request_id,
                    outcome: "expired",
                },
            );
        }
    }

    /// Pushes messages that arrived while this user was away.
    async fn deliver_waiting(&self, myself: &ActorRef<SessionMsg>) {
        let Ok(book) = self.ctx.book() else { return };
        let user = self.state.user.clone();
        match ask(
            &book,
            |reply| BookMsg::Undelivered { user, reply },
            self.ctx.settings.call_timeout,
            "the patrol book",
        )
        .await
        {
            Ok(Ok(messages)) => {
                for message in messages {
                    self.push(myself, Notice::DirectMessage(message));
                }
            }
            Ok(Err(e)) | Err(e) => {
                tracing::warn!(user = self.user(), "waiting messages not delivered: {e}")
            }
        }
    }
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionActorState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionActorState, ActorProcessingErr> {
        let now = args.ctx.clock.now_ms();
        let open_window = match args.role {
            PatrolRole::Officer => args.ctx.duty_windows.get(&args.user).map(|w| *w),
            PatrolRole::Citizen => None,
        };
        if open_window.is_some_and(|until| until <= now) {
            // It ran out while the officer was away.
            args.ctx.duty_windows.remove(&args.user);
        }
        Ok(SessionActorState {
            state: SessionState::new(args.user, args.role, open_window, now),
            ctx: args.ctx,
            notices: args.notices,
            position: None,
            card: args.card,
            replaced: false,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<SessionMsg>,
        st: &mut SessionActorState,
    ) -> Result<(), ActorProcessingErr> {
        let now = st.now();
        if let (Some(until), Some(card)) = (st.state.duty_until_ms, st.card.clone()) {
            // A window opened on an earlier socket continues on this one.
            st.on_duty_from(&myself, card, until, now);
        }
        st.deliver_waiting(&myself).await;
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<SessionMsg>,
        st: &mut SessionActorState,
    ) -> Result<(), ActorProcessingErr> {
        if !st.replaced {
            // Pending requests end with the officer's socket; the duty window stays open so
            // a reconnecting officer continues it.
            for (request_id, citizen) in st.state.withdraw_requests() {
                st.ctx.notify(
                    &citizen,
                    Notice::ConnectClosed {
                        request_id,
                        outcome: "officer_left",
                    },
                );
            }
        }
        st.ctx
            .forget_session(&st.state.user, st.state.role, myself.get_id());
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        message: SessionMsg,
        st: &mut SessionActorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SessionMsg::Position { at, reply } => {
                let changed = st.on_position(&myself, at);
                let now = st.now();
                let until = st.state.duty_until_ms.filter(|_| st.state.on_duty(now));
                let _ = reply.send(Ok((changed, until)));
            }
            SessionMsg::DutyStart { minutes, reply } => {
                let _ = reply.send(st.start_duty(&myself, minutes));
            }
            SessionMsg::DutyEnd { reply } => {
                let outcome = if st.state.on_duty(st.now()) {
                    st.off_duty(&myself, None);
                    Ok(())
                } else {
                    Err(Rejection::new(ErrorCode::InvalidTransition, "not on duty"))
                };
                let _ = reply.send(outcome);
            }
            SessionMsg::DutyTimer { generation } => {
                if st.state.duty_expires(generation, st.now()) {
                    st.off_duty(&myself, Some("expired"));
                }
            }
            SessionMsg::OfficerMoved { officer, at } => {
                let view = match (at, st.position) {
                    (Some(officer_at), Some(me)) if st.ctx.cards.contains_key(&officer) => {
                        st.view_of(me, officer_at)
                    }
                    _ => None,
                };
                if let Some(change) = st.state.officer_update(&officer, view) {
                    st.push_change(&myself, change);
                }
            }
            SessionMsg::IncomingRequest {
                citizen,
                display_name,
                distance_m,
                reply,
            } => {
                let _ = reply.send(st.incoming_request(&myself, citizen, display_name, distance_m));
            }
            SessionMsg::Answer {
                request_id,
                accept,
                reply,
            } => {
                let outcome = st.answer(&myself, request_id, accept).await;
                let _ = reply.send(outcome);
            }
            SessionMsg::RequestTimer => st.expire_requests(&myself),
            SessionMsg::Notify(notice) => st.push(&myself, notice),
            SessionMsg::Replaced => {
                st.replaced = true;
                myself.stop(Some("replaced by a newer session".into()));
            }
        }
        Ok(())
    }
}
