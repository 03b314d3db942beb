//! The API layer: turns a decoded [`Request`] from an authenticated socket into domain
//! calls and the result into an [`Outcome`]. Nothing here knows about sockets or
//! encodings.
//!
//! Each domain owns its requests in one module: [`token`] (ping, refresh), [`race`] (races,
//! racers, watching), [`backup`], [`mail`], [`patrol`]; [`device`] takes tracking apps' HTTP
//! fixes into the race domain the same way. Each states who may send each of
//! its requests and which race it reaches in one `rule` function, and answers them in one
//! `handle`. This file only routes: [`domain_of`] names each request's domain once, and
//! [`handle`] checks that domain's rule (role, token expiry, race scope), then calls it. A
//! new request is one line here and its domain's `rule` and `handle`.

mod backup;
mod caller;
pub mod device;
pub mod forward;
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
pub use self::race_stream::{wire_encoding, ReplayPacer, ReplayStep, TickFeed};
pub use self::race_views::{race_tick, race_view, tick_encoder};
pub use self::rules::{Rule, Scope};
pub use self::token::{guest_token, guests_welcome, Minted};
pub use crate::actors::race::feed::{Frames, Outgoing, TickView};

use crate::auth::{Claims, Role};
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
        | Request::RaceReplay { .. }
        | Request::RaceDeviceBind { .. }
        | Request::RaceDeviceRevoke { .. }
        | Request::RaceDevices { .. }
        | Request::RacerLink { .. } => Domain::Race,
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
    if let Err(refused) = admit(engine, &caller.claims, &request) {
        return Outcome::Reply(Err(refused));
    }
    // Cluster mode: what only a race's owner can answer is answered there.
    if let Some(answered) = forward::elsewhere(engine, &caller.claims, &request).await {
        return answered;
    }
    dispatch(engine, caller, request).await
}

/// Cluster mode: answers a request another node forwarded here (see [`forward`]) as this
/// node answers its own sockets, never forwarding it again.
pub async fn answer_forwarded(engine: &Engine, envelope: &[u8]) -> Vec<u8> {
    let (claims, request) = match forward::open(envelope) {
        Ok(opened) => opened,
        Err(why) => return forward::unreadable(why),
    };
    let mut caller = Caller::new(claims);
    let outcome = match admit(engine, &caller.claims, &request) {
        Ok(()) => dispatch(engine, &mut caller, request).await,
        Err(refused) => Outcome::Reply(Err(refused)),
    };
    forward::answer_bytes(outcome)
}

/// The request's rule for the holder of `claims`: role, then token expiry, then race scope.
fn admit(engine: &Engine, claims: &Claims, request: &Request) -> Result<(), Rejection> {
    let rule = rule(request);
    if !rule.permits(claims.role) {
        return Err(Rejection::new(
            ErrorCode::Forbidden,
            format!("role {} may not send {}", claims.role, request.type_name()),
        ));
    }
    let leeway_ms =
        i64::try_from(engine.config.auth.leeway_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    if !rule.after_expiry && claims.expired_at(now_ms(), leeway_ms) {
        return Err(Rejection::new(
            ErrorCode::TokenExpired,
            "token expired; send refresh_token or reconnect",
        ));
    }
    rule.check_scope(claims)
}

/// Hands an admitted request to its domain, once recovery has finished.
async fn dispatch(engine: &Engine, caller: &mut Caller, request: Request) -> Outcome {
    let Some(services) = engine.services() else {
        return Outcome::Reply(Err(Rejection::new(
            ErrorCode::Unavailable,
            "the server is still recovering",
        )));
    };
    match domain_of(&request) {
        Domain::Token => token::handle(engine, &mut caller.claims, request).into(),
        Domain::Race => race::handle(engine, services, caller, request).await,
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

    /// Where the access table is fixed: who may send each sample request and what a token
    /// scoped to a race reaches. Reviewed as text, so a change to any domain's rule shows
    /// up as a diff of this file; rewritten with `PELOTON_BLESS_GOLDEN=1`.
    const ACCESS_TABLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/access_v1.txt");

    /// One line per sample request: its type, the roles that may send it, and the answer
    /// to a token scoped to no race, to the request's race `r`, and to another race.
    fn access_table() -> String {
        let claims = |race: Option<&str>| crate::auth::claims_for(Role::Admin, "ops", race, 0, 60);
        let mut table = String::from(
            "# Written by src/api/mod.rs's tests with PELOTON_BLESS_GOLDEN=1; do not edit by hand.\n\
             # request | roles that may send it | scope: none, race r, race other\n",
        );
        for request in sample_requests() {
            let roles: Vec<String> = Role::ALL
                .into_iter()
                .filter(|role| permitted(*role, &request))
                .map(|role| role.to_string())
                .collect();
            let scopes: Vec<String> = [None, Some("r"), Some("other")]
                .into_iter()
                .map(|race| match rule(&request).check_scope(&claims(race)) {
                    Ok(()) => "ok".to_string(),
                    Err(rejection) => rejection.code.as_str().to_string(),
                })
                .collect();
            table.push_str(&format!(
                "{} | {} | {}\n",
                request.type_name(),
                roles.join(" "),
                scopes.join(" ")
            ));
        }
        table
    }

    #[test]
    fn the_access_table_is_the_reviewed_one() {
        let table = access_table();
        if std::env::var_os("PELOTON_BLESS_GOLDEN").is_some() {
            std::fs::write(ACCESS_TABLE, &table).unwrap();
        }
        let fixed = std::fs::read_to_string(ACCESS_TABLE).unwrap();
        assert!(
            fixed == table,
            "the access table changed; review the diff and rerun with PELOTON_BLESS_GOLDEN=1:\n{}",
            table
        );
    }
}
