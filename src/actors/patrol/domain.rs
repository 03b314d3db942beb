//! The patrol facade the API calls: opens a session actor per socket, answers N-nearest
//! queries straight from the index, and routes everything durable to the book.

use super::book::pair_key;
use super::book_actor::CONVERSATION_KIND;
use super::context::{PatrolContext, PatrolSettings};
use super::import::{Charity, ImportRows, Offer};
use super::ledger::{Entry, ReportRow};
use super::msg::SessionMsg;
use super::msg::{BookMsg, Redemption};
use super::notice::{Connection, MessageRecord, Notice, StoredMessage};
use super::privacy::Coarse;
use super::proximity::ProximityIndex;
use super::reach::may_ask;
use super::session::PatrolRole;
use super::session_actor::{SessionActor, SessionArgs, NOTICE_QUEUE};
use super::supervisor::{PatrolSupervisor, PatrolSupervisorArgs};
use super::voucher::VoucherKey;
use crate::actors::ask::ask;
use crate::actors::clock::Clock;
use crate::actors::mail::MailDomain;
use crate::actors::registry::Registry;
use crate::actors::root::{start_domain, DomainSpec, RootMsg};
use crate::error::{ErrorCode, Rejection};
use crate::geo::Position;
use crate::ids::validate_id;
use crate::persist::{ActorKey, Journal};
use dashmap::DashMap;
use ractor::{Actor, ActorRef};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Longest page of history or messages.
pub const MAX_PAGE: u32 = 500;

/// Handle to the running patrol domain.
#[derive(Clone)]
pub struct PatrolDomain {
    /// Shared with the supervisor, the book and every session.
    ctx: Arc<PatrolContext>,
    /// The current supervisor incarnation, under which sessions are spawned.
    supervisor: Arc<Mutex<Option<ActorRef<()>>>>,
}

/// A socket's patrol session: its actor and the notices for its device. Dropping it ends
/// the session.
pub struct PatrolLink {
    /// Who.
    pub user: String,
    /// The session actor.
    actor: ActorRef<SessionMsg>,
    /// Notices to send; `None` from `recv` means the session ended (replaced or too slow).
    pub notices: mpsc::Receiver<Notice>,
}

impl Drop for PatrolLink {
    fn drop(&mut self) {
        self.actor.stop(None);
    }
}

/// An officer near a citizen, as an N-nearest answer lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NearbyOfficer {
    /// The officer.
    pub officer: String,
    /// Their display name.
    pub display_name: String,
    /// What the citizen may see.
    pub view: Coarse,
}

impl PatrolDomain {
    /// Starts the patrol supervisor under `root`, which recovers the book before this
    /// returns.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        root: &ActorRef<RootMsg>,
        journal: Journal,
        mail: MailDomain,
        settings: PatrolSettings,
        voucher_key: VoucherKey,
        restart_budget: u32,
        restart_window: Duration,
    ) -> Result<PatrolDomain, String> {
        let ctx = Arc::new(PatrolContext {
            officers: ProximityIndex::new(settings.h3_resolution)?,
            citizens: ProximityIndex::new(settings.h3_resolution)?,
            settings,
            clock: Clock::new(),
            cards: DashMap::new(),
            sessions: Registry::new("patrol_session"),
            session_of: DashMap::new(),
            duty_windows: DashMap::new(),
            book: Mutex::new(None),
            journal,
            mail,
            voucher_key,
        });
        let supervisor = Arc::new(Mutex::new(None));
        let args = PatrolSupervisorArgs {
            ctx: ctx.clone(),
            slot: supervisor.clone(),
            restart_budget,
            restart_window,
        };
        start_domain(root, DomainSpec::new("patrol", PatrolSupervisor, args)).await?;
        Ok(PatrolDomain { ctx, supervisor })
    }

    async fn book<T: Send + 'static>(
        &self,
        question: impl FnOnce(ractor::RpcReplyPort<T>) -> BookMsg,
    ) -> Result<T, Rejection> {
        let book = self.ctx.book()?;
        ask(
            &book,
            question,
            self.ctx.settings.call_timeout,
            "the patrol book",
        )
        .await
    }

    async fn session<T: Send + 'static>(
        &self,
        link: &PatrolLink,
        question: impl FnOnce(ractor::RpcReplyPort<T>) -> SessionMsg,
    ) -> Result<T, Rejection> {
        ask(
            &link.actor,
            question,
            self.ctx.settings.call_timeout,
            "this patrol session",
        )
        .await
    }

    /// Opens the session of `user` for a socket. A session the same user had on another
    /// socket is replaced (that socket's notices end).
    pub async fn open(&self, user: &str, role: PatrolRole) -> Result<PatrolLink, Rejection> {
        let supervisor = self
            .supervisor
            .lock()
            .ok()
            .and_then(|slot| slot.clone())
            .ok_or_else(|| Rejection::new(ErrorCode::Unavailable, "patrol is restarting; retry"))?;
        let card = match role {
            PatrolRole::Officer => {
                let id = user.to_owned();
                self.book(|reply| BookMsg::Officer { id, reply }).await?
            }
            PatrolRole::Citizen => None,
        };
        let (notices_tx, notices) = mpsc::channel(NOTICE_QUEUE);
        let args = SessionArgs {
            user: user.to_owned(),
            role,
            ctx: self.ctx.clone(),
            notices: notices_tx,
            card,
        };
        let (actor, _) =
            SessionActor::spawn_linked(None, SessionActor, args, supervisor.get_cell())
                .await
                .map_err(|e| {
                    // The actor runtime's text is for the log, not for the device.
                    tracing::error!(user, "patrol session did not start: {e}");
                    Rejection::new(
                        ErrorCode::Unavailable,
                        "the patrol session could not be started; reconnect",
                    )
                })?;
        self.ctx
            .session_of
            .insert(actor.get_id(), (user.to_owned(), role));
        let previous = self.ctx.sessions.get(&user.to_owned());
        self.ctx.sessions.insert(user.to_owned(), actor.clone());
        if let Some(previous) = previous {
            let _ = previous.cast(SessionMsg::Replaced);
        }
        Ok(PatrolLink {
            user: user.to_owned(),
            actor,
            notices,
        })
    }

    /// A device's position: whether it moved to another H3 cell, and an officer's duty
    /// window end while on duty.
    pub async fn position(
        &self,
        link: &PatrolLink,
        lat_e7: i32,
        lon_e7: i32,
        accuracy_m: Option<f32>,
    ) -> Result<(bool, Option<i64>), Rejection> {
        let at = Position { lat_e7, lon_e7 }
            .validate()
            .map_err(Rejection::invalid)?;
        if let Some(accuracy) = accuracy_m {
            let max = self.ctx.settings.max_accuracy_m;
            if !accuracy.is_finite() || accuracy < 0.0 || f64::from(accuracy) > max {
                return Err(Rejection::invalid(format!(
                    "accuracy_m must be 0..={max}, got {accuracy}"
                )));
            }
        }
        self.session(link, |reply| SessionMsg::Position { at, reply })
            .await?
    }

    /// Goes on duty; returns the window's end.
    pub async fn duty_start(
        &self,
        link: &PatrolLink,
        minutes: Option<u32>,
    ) -> Result<i64, Rejection> {
        self.session(link, |reply| SessionMsg::DutyStart { minutes, reply })
            .await?
    }

    /// Goes off duty.
    pub async fn duty_end(&self, link: &PatrolLink) -> Result<(), Rejection> {
        self.session(link, |reply| SessionMsg::DutyEnd { reply })
            .await?
    }

    /// The `count` on-duty officers nearest to the citizen's last position, read straight
    /// from the index.
    pub fn nearest(&self, link: &PatrolLink, count: u32) -> Result<Vec<NearbyOfficer>, Rejection> {
        let max = self.ctx.settings.nearest_max_count;
        if count == 0 || count > max {
            return Err(Rejection::invalid(format!(
                "count must be 1..={max}, got {count}"
            )));
        }
        let at = self.own_position(link)?;
        Ok(self
            .ctx
            .officers
            .nearest(at, count as usize, self.ctx.settings.nearest_max_radius_m)
            .into_iter()
            .filter_map(|n| {
                // An officer that went off duty between the two reads is skipped.
                let card = self.ctx.cards.get(&*n.id)?;
                Some(NearbyOfficer {
                    officer: n.id.to_string(),
                    display_name: card.display_name.clone(),
                    view: self
                        .ctx
                        .settings
                        .coarsening
                        .view(at, n.position, n.distance_m),
                })
            })
            .collect())
    }

    fn own_position(&self, link: &PatrolLink) -> Result<Position, Rejection> {
        self.ctx.citizens.get(&link.user).ok_or_else(|| {
            Rejection::new(
                ErrorCode::InvalidTransition,
                "send patrol_position first: your position is not known",
            )
        })
    }

    /// A citizen asks an on-duty officer within the nearby radius to connect; returns the
    /// request id and its expiry.
    pub async fn connect_request(
        &self,
        link: &PatrolLink,
        officer_id: &str,
    ) -> Result<(String, i64), Rejection> {
        validate_id("officer_id", officer_id)?;
        let at = self.own_position(link)?;
        let not_on_duty = || {
            Rejection::new(
                ErrorCode::NotFound,
                format!("officer {officer_id} is not on duty"),
            )
        };
        let officer_at = self.ctx.officers.get(officer_id).ok_or_else(not_on_duty)?;
        let session = self
            .ctx
            .sessions
            .get(&officer_id.to_owned())
            .ok_or_else(not_on_duty)?;
        let apart = may_ask(
            at,
            officer_id,
            officer_at,
            self.ctx.settings.nearby_radius_m,
        )?;
        let user = link.user.clone();
        let display_name = self
            .book(|reply| BookMsg::DisplayName { user, reply })
            .await?;
        let citizen = link.user.clone();
        ask(
            &session,
            |reply| SessionMsg::IncomingRequest {
                citizen,
                display_name,
                distance_m: apart,
                reply,
            },
            self.ctx.settings.call_timeout,
            "the officer's session",
        )
        .await?
    }

    /// The officer answers a connect request.
    pub async fn connect_answer(
        &self,
        link: &PatrolLink,
        request_id: &str,
        accept: bool,
    ) -> Result<Option<Connection>, Rejection> {
        validate_id("request_id", request_id)?;
        let request_id = request_id.to_owned();
        self.session(link, |reply| SessionMsg::Answer {
            request_id,
            accept,
            reply,
        })
        .await?
    }

    /// Sets a user's display name and mail address.
    pub async fn set_profile(
        &self,
        user: &str,
        display_name: String,
        email: Option<String>,
    ) -> Result<(), Rejection> {
        let user = user.to_owned();
        self.book(|reply| BookMsg::SetProfile {
            user,
            display_name,
            email,
            reply,
        })
        .await?
    }

    /// A user's points.
    pub async fn balance(&self, user: &str) -> Result<u64, Rejection> {
        let user = user.to_owned();
        self.book(|reply| BookMsg::Balance { user, reply }).await
    }

    /// A page of a user's points history, newest first.
    pub async fn history(
        &self,
        user: &str,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Entry>, Rejection> {
        check_page(limit)?;
        let user = user.to_owned();
        self.book(|reply| BookMsg::History {
            user,
            before,
            limit: limit as usize,
            reply,
        })
        .await
    }

    /// Every offer.
    pub async fn offers(&self) -> Result<Vec<Offer>, Rejection> {
        self.book(|reply| BookMsg::Offers { reply }).await
    }

    /// Every charity.
    pub async fn charities(&self) -> Result<Vec<Charity>, Rejection> {
        self.book(|reply| BookMsg::Charities { reply }).await
    }

    /// Spends points on an offer; idempotent by `request_id`.
    pub async fn redeem(
        &self,
        user: &str,
        request_id: &str,
        offer_id: &str,
    ) -> Result<Redemption, Rejection> {
        validate_id("request_id", request_id)?;
        validate_id("offer_id", offer_id)?;
        let (user, request_id, offer_id) =
            (user.to_owned(), request_id.to_owned(), offer_id.to_owned());
        let at_ms = self.ctx.clock.now_ms();
        self.book(|reply| BookMsg::Redeem {
            request_id,
            user,
            offer_id,
            at_ms,
            reply,
        })
        .await?
    }

    /// Gives points to a charity; idempotent by `request_id`.
    pub async fn donate(
        &self,
        user: &str,
        request_id: &str,
        charity_id: &str,
        points: u64,
    ) -> Result<(u64, u64), Rejection> {
        validate_id("request_id", request_id)?;
        validate_id("charity_id", charity_id)?;
        if points == 0 {
            return Err(Rejection::invalid("points must be at least 1"));
        }
        let (user, request_id, charity_id) = (
            user.to_owned(),
            request_id.to_owned(),
            charity_id.to_owned(),
        );
        let at_ms = self.ctx.clock.now_ms();
        self.book(|reply| BookMsg::Donate {
            request_id,
            user,
            charity_id,
            points,
            at_ms,
            reply,
        })
        .await?
    }

    /// Stores a direct message (server time) and delivers it if the recipient is online.
    pub async fn send_message(
        &self,
        from: &str,
        request_id: &str,
        to: &str,
        text: String,
    ) -> Result<StoredMessage, Rejection> {
        let (from, request_id, to) = (from.to_owned(), request_id.to_owned(), to.to_owned());
        let at_ms = self.ctx.clock.now_ms();
        self.book(|reply| BookMsg::SendMessage {
            from,
            to,
            request_id,
            text,
            at_ms,
            reply,
        })
        .await?
    }

    /// A page of the conversation of `user` with `with`, newest first, read straight from
    /// the journal.
    pub fn messages(
        &self,
        user: &str,
        with: &str,
        before_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, Rejection> {
        validate_id("with", with)?;
        check_page(limit)?;
        let key = ActorKey::new(CONVERSATION_KIND, &pair_key(user, with));
        self.ctx
            .journal
            .page_before::<MessageRecord>(&key, before_seq, limit as usize)
            .map(|page| page.into_iter().map(|(_, r)| r.message).collect())
            .map_err(|e| Rejection::internal(format!("conversation not readable: {e}")))
    }

    /// Imports validated rows; returns rows written and rows of that kind stored.
    pub async fn import(&self, rows: ImportRows) -> Result<(u64, u64), Rejection> {
        self.book(|reply| BookMsg::Import { rows, reply }).await?
    }

    /// Figures per UTC day (days since the epoch, inclusive) and precinct.
    pub async fn report(&self, from_day: u32, to_day: u32) -> Result<Vec<ReportRow>, Rejection> {
        self.book(|reply| BookMsg::Report {
            from_day,
            to_day,
            reply,
        })
        .await
    }

    /// On-duty officers in the index (for metrics and tests).
    pub fn officers_indexed(&self) -> usize {
        self.ctx.officers.len()
    }
}

fn check_page(limit: u32) -> Result<(), Rejection> {
    if limit == 0 || limit > MAX_PAGE {
        return Err(Rejection::invalid(format!(
            "limit must be 1..={MAX_PAGE}, got {limit}"
        )));
    }
    Ok(())
}
