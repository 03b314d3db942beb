//! The API layer: turns a decoded [`Request`] from an authenticated socket into domain
//! calls and the result into an [`Outcome`]. Nothing here knows about sockets or
//! encodings.
//!
//! Each domain owns its requests in one module: [`token`] (ping, refresh), [`race`] (races,
//! racers, watching), [`backup`], [`mail`], [`patrol`]. Each states who may send each of
//! its requests and which race it reaches in one `rule` function, and answers them in one
//! `handle`. This file only routes: [`domain_of`] names each request's domain once, and
//! [`handle`] checks that domain's rule (role, token expiry, race scope), then calls it. A
//! new request is one line here and its domain's `rule` and `handle`.

mod backup;
mod caller;
mod mail;
mod outcome;
pub mod patrol;
mod race;
mod race_stream;
mod race_views;
mod rules;
mod token;

pub use self::caller::Caller;
pub use self::outcome::Outcome;
pub use self::race_stream::{ReplayPacer, ReplayStep, TickFeed};
pub use self::race_views::{race_tick, race_view, tick_encoder};
pub use self::rules::{Rule, Scope};
pub use self::token::{guest_token, guests_welcome, Minted};
pub use crate::actors::race::feed::{Frames, Published};

use crate::auth::Role;
use crate::engine::Engine;
use crate::error::{ErrorCode, Rejection};
use crate::net::protocol::Request;
use crate::time::now_ms;

/// The module that owns a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Domain {
    /// The socket's own requests: [`token`].
    Token,
    /// Races, racers and watching them: [`race`].
    Race,
    /// The store's backup: [`backup`].
    Backup,
    /// Mail jobs: [`mail`].
    Mail,
    /// Officers, citizens and rewards: [`patrol`].
    Patrol,
}

/// The one place that names every request: which domain answers it. Exhaustive, so a new
/// request does not compile until it has a domain.
fn domain_of(request: &Request) -> Domain {
    match request {
        Request::Ping | Request::RefreshToken { .. } => Domain::Token,
        Request::RaceCreate(_)
        | Request::RaceUpdate(_)
        | Request::RaceList
        | Request::RaceGet { .. }
        | Request::RaceStart { .. }
        | Request::RaceFinish { .. }
        | Request::RaceCancel { .. }
        | Request::RaceDisqualify { .. }
        | Request::RaceReinstate { .. }
        | Request::RaceShare { .. }
        | Request::RacerRegister { .. }
        | Request::RacerList { .. }
        | Request::Fixes { .. }
        | Request::RaceStandings { .. }
        | Request::RaceSubscribe { .. }
        | Request::RaceResults { .. }
        | Request::RaceReplay { .. } => Domain::Race,
        Request::Backup => Domain::Backup,
        Request::MailSubmit(_)
        | Request::MailStatus { .. }
        | Request::MailList { .. }
        | Request::MailFailed { .. }
        | Request::MailRetry { .. }
        | Request::MailRetryAllDead => Domain::Mail,
        Request::PatrolProfile { .. }
        | Request::DutyStart { .. }
        | Request::DutyEnd
        | Request::PatrolPosition { .. }
        | Request::OfficersNearest { .. }
        | Request::ConnectRequest { .. }
        | Request::ConnectAnswer { .. }
        | Request::RewardsBalance
        | Request::RewardsHistory { .. }
        | Request::OffersList
        | Request::CharitiesList
        | Request::RewardsRedeem { .. }
        | Request::RewardsDonate { .. }
        | Request::MessageSend { .. }
        | Request::MessageHistory { .. }
        | Request::PatrolImport(_)
        | Request::PatrolReport { .. } => Domain::Patrol,
    }
}

/// Who may send `request` and what it reaches, as its domain states it.
pub fn rule(request: &Request) -> Rule<'_> {
    match domain_of(request) {
        Domain::Token => token::rule(request),
        Domain::Race => race::rule(request),
        Domain::Backup => backup::rule(request),
        Domain::Mail => mail::rule(request),
        Domain::Patrol => patrol::rule(request),
    }
}

/// Whether `role` may send `request` at all (race scope is checked per request).
pub fn permitted(role: Role, request: &Request) -> bool {
    rule(request).permits(role)
}

/// Handles one request for `caller` (whose token a refresh may replace): the role first,
/// then the token's expiry, then the race scope, then whether the server has finished
/// recovering, and only then the domain.
pub async fn handle(engine: &Engine, caller: &mut Caller, request: Request) -> Outcome {
    let claims = &caller.claims;
    let rule = rule(&request);
    if !rule.permits(claims.role) {
        return Outcome::Reply(Err(Rejection::new(
            ErrorCode::Forbidden,
            format!("role {} may not send {}", claims.role, request.type_name()),
        )));
    }
    let leeway_ms =
        i64::try_from(engine.config.auth.leeway_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    if !rule.after_expiry && claims.expired_at(now_ms(), leeway_ms) {
        return Outcome::Reply(Err(Rejection::new(
            ErrorCode::TokenExpired,
            "token expired; send refresh_token or reconnect",
        )));
    }
    if let Err(rejection) = rule.check_scope(claims) {
        return Outcome::Reply(Err(rejection));
    }
    let Some(services) = engine.services() else {
        return Outcome::Reply(Err(Rejection::new(
            ErrorCode::Unavailable,
            "the server is still recovering",
        )));
    };
    match domain_of(&request) {
        Domain::Token => token::handle(engine, &mut caller.claims, request).into(),
        Domain::Race => race::handle(engine, services, &caller.claims, request).await,
        Domain::Backup => backup::handle(engine, services, request).await,
        Domain::Mail => mail::handle(&services.mail, &engine.config, request)
            .await
            .into(),
        Domain::Patrol => patrol::handle(
            &services.patrol,
            &caller.claims,
            &mut caller.patrol,
            request,
        )
        .await
        .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Claims;
    use peloton_protocol::samples::sample_requests;

    #[test]
    fn only_admins_change_races_and_patrol_roles_cannot_read_them() {
        let start = Request::RaceStart { id: "r".into() };
        assert!(permitted(Role::Admin, &start));
        for role in [Role::Racer, Role::Spectator, Role::Officer, Role::Citizen] {
            assert!(!permitted(role, &start));
            assert!(!permitted(role, &Request::Backup));
            assert!(permitted(role, &Request::Ping));
        }
        assert!(permitted(Role::Spectator, &Request::RaceList));
        assert!(!permitted(Role::Citizen, &Request::RaceList));
    }

    #[test]
    fn race_scoped_tokens_reach_only_their_race() {
        let claims = crate::auth::claims_for(Role::Admin, "ops", Some("r1"), 0, 60);
        let within_scope = |request: &Request| rule(request).check_scope(&claims);
        let start = |id: &str| Request::RaceStart { id: id.into() };
        assert!(within_scope(&start("r1")).is_ok());
        assert_eq!(
            within_scope(&start("r2")).unwrap_err().code,
            ErrorCode::Forbidden
        );
        assert!(within_scope(&Request::Backup).is_err());
        assert!(within_scope(&Request::RaceList).is_ok());
        let unscoped = crate::auth::claims_for(Role::Admin, "ops", None, 0, 60);
        assert!(rule(&Request::Backup).check_scope(&unscoped).is_ok());
    }

    /// Every request's domain claims it: someone may send it, and only a refresh is served
    /// past the token's expiry. A request routed to a domain that forgot it would be sent
    /// by nobody.
    #[test]
    fn every_request_is_owned_by_the_domain_it_is_routed_to() {
        for request in sample_requests() {
            let rule = rule(&request);
            assert!(
                !rule.roles.is_empty(),
                "{} is routed to {:?}, which has no rule for it",
                request.type_name(),
                domain_of(&request)
            );
            assert_eq!(
                rule.after_expiry,
                matches!(request, Request::RefreshToken { .. }),
                "{}",
                request.type_name()
            );
        }
    }

    /// The role table and the race scopes as they were in one function each before the
    /// domains owned their requests: the split must not change who may send what.
    fn permitted_before_the_split(role: Role, request: &Request) -> bool {
        match request {
            Request::Ping | Request::RefreshToken { .. } => true,
            Request::Fixes { .. } => role == Role::Racer,
            Request::RaceList
            | Request::RaceGet { .. }
            | Request::RacerList { .. }
            | Request::RaceStandings { .. }
            | Request::RaceSubscribe { .. }
            | Request::RaceResults { .. }
            | Request::RaceReplay { .. } => {
                matches!(role, Role::Admin | Role::Spectator | Role::Racer)
            }
            Request::RaceCreate(_)
            | Request::RaceUpdate(_)
            | Request::RaceStart { .. }
            | Request::RaceFinish { .. }
            | Request::RaceCancel { .. }
            | Request::RaceDisqualify { .. }
            | Request::RaceReinstate { .. }
            | Request::RacerRegister { .. }
            | Request::RaceShare { .. }
            | Request::Backup => role == Role::Admin,
            Request::MailSubmit(_)
            | Request::MailStatus { .. }
            | Request::MailList { .. }
            | Request::MailFailed { .. }
            | Request::MailRetry { .. }
            | Request::MailRetryAllDead
            | Request::PatrolImport(_)
            | Request::PatrolReport { .. } => role == Role::Admin,
            Request::PatrolProfile { .. }
            | Request::OfficersNearest { .. }
            | Request::ConnectRequest { .. } => role == Role::Citizen,
            Request::DutyStart { .. } | Request::DutyEnd | Request::ConnectAnswer { .. } => {
                role == Role::Officer
            }
            Request::PatrolPosition { .. }
            | Request::RewardsBalance
            | Request::RewardsHistory { .. }
            | Request::RewardsRedeem { .. }
            | Request::RewardsDonate { .. }
            | Request::MessageSend { .. }
            | Request::MessageHistory { .. } => matches!(role, Role::Officer | Role::Citizen),
            Request::OffersList | Request::CharitiesList => {
                matches!(role, Role::Officer | Role::Citizen | Role::Admin)
            }
        }
    }

    /// See [`permitted_before_the_split`].
    fn within_scope_before_the_split(claims: &Claims, request: &Request) -> Result<(), Rejection> {
        let Some(scope) = &claims.race else {
            return Ok(());
        };
        let target = match request {
            Request::Ping | Request::RefreshToken { .. } | Request::RaceList => return Ok(()),
            Request::RaceCreate(_) | Request::Backup => None,
            // Mail is not race-scoped: a race-scoped (admin) token may not use it.
            Request::MailSubmit(_)
            | Request::MailStatus { .. }
            | Request::MailList { .. }
            | Request::MailFailed { .. }
            | Request::MailRetry { .. }
            | Request::MailRetryAllDead => None,
            // Patrol is not race-scoped either.
            Request::PatrolProfile { .. }
            | Request::DutyStart { .. }
            | Request::DutyEnd
            | Request::PatrolPosition { .. }
            | Request::OfficersNearest { .. }
            | Request::ConnectRequest { .. }
            | Request::ConnectAnswer { .. }
            | Request::RewardsBalance
            | Request::RewardsHistory { .. }
            | Request::OffersList
            | Request::CharitiesList
            | Request::RewardsRedeem { .. }
            | Request::RewardsDonate { .. }
            | Request::MessageSend { .. }
            | Request::MessageHistory { .. }
            | Request::PatrolImport(_)
            | Request::PatrolReport { .. } => None,
            Request::RaceUpdate(update) => Some(&update.id),
            Request::RaceGet { id }
            | Request::RaceStart { id }
            | Request::RaceFinish { id }
            | Request::RaceCancel { id, .. } => Some(id),
            Request::RacerRegister { race_id, .. }
            | Request::RacerList { race_id }
            | Request::RaceStandings { race_id }
            | Request::RaceSubscribe { race_id, .. }
            | Request::RaceResults { race_id }
            | Request::RaceShare { race_id, .. }
            | Request::RaceReplay { race_id, .. }
            | Request::RaceDisqualify { race_id, .. }
            | Request::RaceReinstate { race_id, .. } => Some(race_id),
            // A racer's fixes go to the token's own race.
            Request::Fixes { .. } => return Ok(()),
        };
        match target {
            Some(id) if id == scope => Ok(()),
            _ => Err(Rejection::new(
                ErrorCode::Forbidden,
                format!("this token is limited to race {scope}"),
            )),
        }
    }

    #[test]
    fn the_rules_are_exactly_the_table_before_the_split() {
        let claims = |race: Option<&str>| crate::auth::claims_for(Role::Admin, "ops", race, 0, 60);
        for request in sample_requests() {
            for role in Role::ALL {
                assert_eq!(
                    permitted(role, &request),
                    permitted_before_the_split(role, &request),
                    "{role} sending {}",
                    request.type_name()
                );
            }
            for race in [None, Some("r"), Some("other")] {
                assert_eq!(
                    rule(&request).check_scope(&claims(race)),
                    within_scope_before_the_split(&claims(race), &request),
                    "{} with a token scoped to {race:?}",
                    request.type_name()
                );
            }
        }
    }
}
