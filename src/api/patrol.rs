//! The patrol part of the API: protocol patrol requests → [`PatrolDomain`] calls, and
//! domain answers and notices back into protocol views. [`rule`] says which role may send
//! each (none through a race-scoped token: patrol is not about races); the dispatch checks
//! it before [`handle`]. The user is always the token's subject, never a field.

use super::rules::{Rule, Scope, ADMIN, NOBODY};
use crate::actors::patrol::domain::NearbyOfficer;
use crate::actors::patrol::import::{Charity, ImportRows, Offer, Officer};
use crate::actors::patrol::ledger::{Cause, Entry, ReportRow};
use crate::actors::patrol::notice::{Connection, Notice, StoredMessage};
use crate::actors::patrol::{PatrolDomain, PatrolLink, PatrolRole};
use crate::auth::{Claims, Role};
use crate::engine::Engine;
use crate::error::{ErrorCode, Rejection};
use crate::net::protocol::{
    CharityRow, ConnectionView, DirectMessageView, ImportBatch, OfferRow, OfficerNearbyView,
    OfficerRow, Push, Reply, ReportRowView, Request, RewardEntryView,
};
use crate::time::{format_day, parse_day};

/// Most days one report spans.
const MAX_REPORT_DAYS: u32 = 366;

/// Citizens only: their profile, finding officers, asking one to connect.
const CITIZEN: &[Role] = &[Role::Citizen];
/// Officers only: duty windows and answering connect requests.
const OFFICER: &[Role] = &[Role::Officer];
/// Both sides of patrol: positions, rewards, messages.
const MEMBERS: &[Role] = &[Role::Officer, Role::Citizen];
/// What members spend points on, which organisers also read.
const MEMBERS_AND_ADMIN: &[Role] = &[Role::Officer, Role::Citizen, Role::Admin];

/// Who may send which patrol request.
pub(super) fn rule(request: &Request) -> Rule<'_> {
    let roles = match request {
        Request::PatrolImport(_) | Request::PatrolReport { .. } => ADMIN,
        Request::PatrolProfile { .. }
        | Request::OfficersNearest { .. }
        | Request::ConnectRequest { .. } => CITIZEN,
        Request::DutyStart { .. } | Request::DutyEnd | Request::ConnectAnswer { .. } => OFFICER,
        Request::PatrolPosition { .. }
        | Request::RewardsBalance
        | Request::RewardsHistory { .. }
        | Request::RewardsRedeem { .. }
        | Request::RewardsDonate { .. }
        | Request::MessageSend { .. }
        | Request::MessageHistory { .. } => MEMBERS,
        Request::OffersList | Request::CharitiesList => MEMBERS_AND_ADMIN,
        _ => NOBODY,
    };
    Rule::new(roles, Scope::Global)
}

/// The patrol role of a token, if it has one.
fn patrol_role(role: Role) -> Option<PatrolRole> {
    match role {
        Role::Officer => Some(PatrolRole::Officer),
        Role::Citizen => Some(PatrolRole::Citizen),
        _ => None,
    }
}

/// Opens the patrol session of an officer's or citizen's socket as it connects, so pushes
/// (messages that waited, a duty window that continues) start without a request; `None`
/// for other roles, or while recovering (the first patrol request opens it then).
pub(super) async fn open_on_connect(engine: &Engine, claims: &Claims) -> Option<PatrolLink> {
    let role = patrol_role(claims.role)?;
    let services = engine.services()?;
    match services.patrol.open(&claims.sub, role).await {
        Ok(link) => Some(link),
        Err(e) => {
            tracing::warn!(user = %claims.sub, "patrol session not opened on connect: {e}");
            None
        }
    }
}

/// This socket's session, opened on connect or on its first patrol request.
async fn link<'a>(
    patrol: &PatrolDomain,
    claims: &Claims,
    session: &'a mut Option<PatrolLink>,
) -> Result<&'a PatrolLink, Rejection> {
    if session.is_none() {
        let role = patrol_role(claims.role).ok_or_else(|| {
            Rejection::new(
                ErrorCode::Forbidden,
                "only officers and citizens have sessions",
            )
        })?;
        *session = Some(patrol.open(&claims.sub, role).await?);
    }
    session
        .as_ref()
        .ok_or_else(|| Rejection::internal("patrol session missing"))
}

/// Answers one patrol request.
pub(super) async fn handle(
    patrol: &PatrolDomain,
    claims: &Claims,
    session: &mut Option<PatrolLink>,
    request: Request,
) -> Result<Reply, Rejection> {
    let user = claims.sub.as_str();
    match request {
        Request::PatrolProfile {
            display_name,
            email,
        } => {
            patrol.set_profile(user, display_name, email).await?;
            Ok(Reply::ProfileSaved)
        }
        Request::DutyStart { minutes } => {
            let link = link(patrol, claims, session).await?;
            let until_ms = patrol.duty_start(link, minutes).await?;
            Ok(Reply::OnDuty { until_ms })
        }
        Request::DutyEnd => {
            let link = link(patrol, claims, session).await?;
            patrol.duty_end(link).await?;
            Ok(Reply::OffDuty)
        }
        Request::PatrolPosition {
            lat_e7,
            lon_e7,
            accuracy_m,
        } => {
            let link = link(patrol, claims, session).await?;
            let (cell_changed, duty_until_ms) =
                patrol.position(link, lat_e7, lon_e7, accuracy_m).await?;
            Ok(Reply::PositionAck {
                cell_changed,
                duty_until_ms,
            })
        }
        Request::OfficersNearest { count } => {
            let link = link(patrol, claims, session).await?;
            let found = patrol.nearest(link, count)?;
            Ok(Reply::Officers(
                found.into_iter().map(nearby_view).collect(),
            ))
        }
        Request::ConnectRequest { officer_id } => {
            let link = link(patrol, claims, session).await?;
            let (request_id, expires_at_ms) = patrol.connect_request(link, &officer_id).await?;
            Ok(Reply::ConnectPending {
                request_id,
                expires_at_ms,
            })
        }
        Request::ConnectAnswer { request_id, accept } => {
            let link = link(patrol, claims, session).await?;
            let connection = patrol.connect_answer(link, &request_id, accept).await?;
            Ok(Reply::ConnectAnswered {
                connection: connection.map(connection_view),
            })
        }
        Request::RewardsBalance => Ok(Reply::Balance {
            points: patrol.balance(user).await?,
        }),
        Request::RewardsHistory { before, limit } => {
            let entries = patrol.history(user, before, limit).await?;
            Ok(Reply::RewardsHistory(
                entries.into_iter().map(entry_view).collect(),
            ))
        }
        Request::OffersList => Ok(Reply::Offers(
            patrol.offers().await?.into_iter().map(offer_row).collect(),
        )),
        Request::CharitiesList => Ok(Reply::Charities(
            patrol
                .charities()
                .await?
                .into_iter()
                .map(charity_row)
                .collect(),
        )),
        Request::RewardsRedeem {
            request_id,
            offer_id,
        } => {
            let r = patrol.redeem(user, &request_id, &offer_id).await?;
            Ok(Reply::Redeemed {
                voucher_code: r.voucher_code,
                points: r.points,
                balance: r.balance,
            })
        }
        Request::RewardsDonate {
            request_id,
            charity_id,
            points,
        } => {
            let (points, balance) = patrol
                .donate(user, &request_id, &charity_id, points)
                .await?;
            Ok(Reply::Donated { points, balance })
        }
        Request::MessageSend {
            request_id,
            to,
            text,
        } => {
            let message = patrol.send_message(user, &request_id, &to, text).await?;
            Ok(Reply::MessageSent(message_view(message)))
        }
        Request::MessageHistory {
            with,
            before_seq,
            limit,
        } => {
            let page = patrol.messages(user, &with, before_seq, limit)?;
            Ok(Reply::Messages(
                page.into_iter().map(message_view).collect(),
            ))
        }
        Request::PatrolImport(batch) => {
            let (kind, rows) = import_rows(batch)?;
            let (rows, total) = patrol.import(rows).await?;
            Ok(Reply::Imported {
                kind: kind.into(),
                rows,
                total,
            })
        }
        Request::PatrolReport { from, to } => {
            let from_day =
                parse_day(&from).map_err(|e| Rejection::invalid(format!("from: {e}")))?;
            let to_day = parse_day(&to).map_err(|e| Rejection::invalid(format!("to: {e}")))?;
            if to_day < from_day || to_day - from_day >= MAX_REPORT_DAYS {
                return Err(Rejection::invalid(format!(
                    "to must be on or after from and at most {MAX_REPORT_DAYS} days later"
                )));
            }
            let rows = patrol.report(from_day, to_day).await?;
            Ok(Reply::PatrolReport(
                rows.into_iter().map(report_view).collect(),
            ))
        }
        other => Err(Rejection::internal(format!(
            "{} is not a patrol request",
            other.type_name()
        ))),
    }
}

/// Turns an import batch into domain rows and validates every row: any bad row refuses the
/// whole batch with its index and field, so nothing is half-imported.
fn import_rows(batch: ImportBatch) -> Result<(&'static str, ImportRows), Rejection> {
    let rows = match batch {
        ImportBatch::Officers(rows) => ImportRows::Officers(
            rows.into_iter()
                .map(|r| Officer {
                    id: r.id,
                    display_name: r.display_name,
                    precinct: r.precinct,
                    email: r.email,
                })
                .collect(),
        ),
        ImportBatch::Offers(rows) => ImportRows::Offers(
            rows.into_iter()
                .map(|r| Offer {
                    id: r.id,
                    retailer: r.retailer,
                    title: r.title,
                    points: r.points,
                })
                .collect(),
        ),
        ImportBatch::Charities(rows) => ImportRows::Charities(
            rows.into_iter()
                .map(|r| Charity {
                    id: r.id,
                    name: r.name,
                })
                .collect(),
        ),
    };
    rows.validate().map_err(|(index, field, reason)| {
        Rejection::invalid(format!("row {index}: {field}: {reason}"))
    })?;
    Ok((rows.kind().as_str(), rows))
}

/// The wire twin of an imported officer row (used by the CLI, which validates locally).
pub fn officer_row(o: &Officer) -> OfficerRow {
    OfficerRow {
        id: o.id.clone(),
        display_name: o.display_name.clone(),
        precinct: o.precinct.clone(),
        email: o.email.clone(),
    }
}

/// The wire twin of an offer.
pub fn offer_row(o: Offer) -> OfferRow {
    OfferRow {
        id: o.id,
        retailer: o.retailer,
        title: o.title,
        points: o.points,
    }
}

/// The wire twin of a charity.
pub fn charity_row(c: Charity) -> CharityRow {
    CharityRow {
        id: c.id,
        name: c.name,
    }
}

fn nearby_view(n: NearbyOfficer) -> OfficerNearbyView {
    OfficerNearbyView {
        officer_id: n.officer,
        display_name: n.display_name,
        lat_e7: n.view.position.lat_e7,
        lon_e7: n.view.position.lon_e7,
        distance_m: n.view.distance_m,
        bearing_deg: n.view.bearing_deg,
    }
}

fn connection_view(c: Connection) -> ConnectionView {
    ConnectionView {
        connection_id: c.connection_id,
        officer_id: c.officer,
        citizen_id: c.citizen,
        with_name: c.with_name,
        points: c.points,
        at_ms: c.at_ms,
    }
}

fn message_view(m: StoredMessage) -> DirectMessageView {
    DirectMessageView {
        from: m.from,
        to: m.to,
        seq: m.seq,
        at_ms: m.at_ms,
        text: m.text,
    }
}

fn entry_view(e: Entry) -> RewardEntryView {
    let (cause, reference, detail) = match e.cause {
        Cause::Connection {
            connection_id,
            with,
        } => ("connection", connection_id, with),
        Cause::Redemption {
            request_id,
            offer_id,
            ..
        } => ("redemption", request_id, offer_id),
        Cause::Donation {
            request_id,
            charity_id,
        } => ("donation", request_id, charity_id),
    };
    RewardEntryView {
        index: e.index,
        at_ms: e.at_ms,
        delta: e.delta,
        cause: cause.into(),
        reference,
        detail,
    }
}

fn report_view(r: ReportRow) -> ReportRowView {
    ReportRowView {
        date: format_day(r.day),
        precinct: r.precinct,
        connections: r.connections,
        points_awarded: r.points_awarded,
        points_redeemed: r.points_redeemed,
        points_donated: r.points_donated,
    }
}

/// The next push of this socket's patrol session (`None`: the session ended); never
/// resolves when the socket has no patrol session.
pub(super) async fn next_push(session: &mut Option<PatrolLink>) -> Option<Push> {
    match session {
        Some(link) => link.notices.recv().await.map(notice_push),
        None => std::future::pending().await,
    }
}

/// A notice as the push its device receives.
pub fn notice_push(notice: Notice) -> Push {
    match notice {
        Notice::DutyEnded { reason, at_ms } => Push::DutyEnded {
            reason: reason.into(),
            at_ms,
        },
        Notice::OfficerNearby {
            officer,
            display_name,
            view,
        } => Push::OfficerNearby(nearby_view(NearbyOfficer {
            officer,
            display_name,
            view,
        })),
        Notice::OfficerGone { officer } => Push::OfficerGone {
            officer_id: officer,
        },
        Notice::ConnectRequested {
            request_id,
            citizen,
            display_name,
            distance_m,
            expires_at_ms,
        } => Push::ConnectRequested {
            request_id,
            citizen_id: citizen,
            display_name,
            distance_m,
            expires_at_ms,
        },
        Notice::ConnectClosed {
            request_id,
            outcome,
        } => Push::ConnectClosed {
            request_id,
            outcome: outcome.into(),
        },
        Notice::ConnectionEstablished(c) => Push::ConnectionEstablished(connection_view(c)),
        Notice::DirectMessage(m) => Push::DirectMessage(message_view(m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patrol_roles_are_kept_apart_and_no_race_scope_reaches_patrol() {
        let who = |request: &Request| {
            Role::ALL
                .into_iter()
                .filter(|&role| rule(request).permits(role))
                .collect::<Vec<_>>()
        };
        assert_eq!(who(&Request::DutyEnd), vec![Role::Officer]);
        assert_eq!(
            who(&Request::OfficersNearest { count: 1 }),
            vec![Role::Citizen]
        );
        assert_eq!(
            who(&Request::RewardsBalance),
            vec![Role::Officer, Role::Citizen]
        );
        assert_eq!(
            who(&Request::OffersList),
            vec![Role::Admin, Role::Officer, Role::Citizen]
        );
        assert_eq!(who(&Request::Ping), Vec::<Role>::new(), "not ours");
        assert_eq!(rule(&Request::CharitiesList).scope, Scope::Global);
    }
}
