//! The race domain's requests: races (create, update, lifecycle, disqualifications, share
//! links), racers (registration, start list, fixes) and watching (standings, results,
//! subscriptions, replays). [`rule`] says who may send each and which race it reaches;
//! [`handle`] turns each into [`RaceDomain`](crate::actors::race::RaceDomain) calls. GPX
//! text is parsed into a validated [`Course`] here, so the domain only sees valid courses;
//! wire views are in [`super::race_views`], what streams after a reply in
//! [`super::race_stream`].

use super::caller::Caller;
use super::outcome::Outcome;
use super::race_stream::{ReplayPacer, TickFeed};
use super::race_views::{
    device_view, fix_from_wire, race_view, racer_entries, racer_views, results_reply, snapshot,
    standing_view,
};
use super::rules::{device_time_limits, Rule, Scope, ADMIN, NOBODY};
use super::token::mint;
use crate::actors::race::devices::DevicesCommand;
use crate::actors::race::replay::Replayer;
use crate::actors::race::state::bib_not_registered;
use crate::actors::race::RaceCommand;
use crate::actors::racer::msg::FixesOutcome;
use crate::auth::{claims_for, share_claims, Claims, Role};
use crate::device_time::fix_window;
use crate::engine::{Engine, Services};
use crate::error::{ErrorCode, Rejection};
use crate::geo::Course;
use crate::ids::RaceId;
use crate::net::protocol::{Push, RaceCreate, RaceUpdate, RacerView, Reply, Request, WireFix};
use crate::time::now_ms;
use std::time::Duration;

/// Who may watch races: organisers, spectators and racers.
const WATCHERS: &[Role] = &[Role::Admin, Role::Spectator, Role::Racer];
/// Who sends fixes: a racer's phone.
const RACER: &[Role] = &[Role::Racer];

/// Who may send which race request, and which race it reaches.
pub(super) fn rule(request: &Request) -> Rule<'_> {
    match request {
        // Filtered to the token's race instead.
        Request::RaceList => Rule::new(WATCHERS, Scope::Any),
        Request::RaceGet { id } => Rule::new(WATCHERS, Scope::Race(id)),
        Request::RacerList { race_id }
        | Request::RaceStandings { race_id }
        | Request::RaceSubscribe { race_id, .. }
        | Request::RaceResults { race_id }
        | Request::RaceReplay { race_id, .. } => Rule::new(WATCHERS, Scope::Race(race_id)),
        // A racer's fixes go to the token's own race.
        Request::Fixes { .. } => Rule::new(RACER, Scope::Any),
        // Not about one race: a scoped admin token manages its race only.
        Request::RaceCreate(_) => Rule::new(ADMIN, Scope::Global),
        Request::RaceUpdate(update) => Rule::new(ADMIN, Scope::Race(&update.id)),
        Request::RaceStart { id } | Request::RaceFinish { id } | Request::RaceCancel { id, .. } => {
            Rule::new(ADMIN, Scope::Race(id))
        }
        Request::RacerRegister { race_id, .. }
        | Request::RaceShare { race_id, .. }
        | Request::RaceDisqualify { race_id, .. }
        | Request::RaceReinstate { race_id, .. }
        | Request::RaceDeviceBind { race_id, .. }
        | Request::RaceDeviceRevoke { race_id, .. }
        | Request::RaceDevices { race_id }
        | Request::RacerLink { race_id, .. } => Rule::new(ADMIN, Scope::Race(race_id)),
        _ => Rule::new(NOBODY, Scope::Global),
    }
}

/// Answers one race request for the holder of `claims`.
pub(super) async fn handle(
    engine: &Engine,
    services: &Services,
    caller: &mut Caller,
    request: Request,
) -> Outcome {
    let claims = &caller.claims;
    let reply = match request {
        Request::RaceCreate(create) => race_create(services, create).await,
        Request::RaceUpdate(update) => race_update(services, update).await,
        Request::RaceList => Ok(race_list(services, claims)),
        Request::RaceGet { id } => RaceId::parse(&id)
            .and_then(|id| services.races.get(&id))
            .map(|r| Reply::Race(race_view(&r))),
        Request::RaceStart { id } => race_command(services, &id, RaceCommand::Start).await,
        Request::RaceFinish { id } => race_command(services, &id, RaceCommand::Finish).await,
        Request::RaceCancel { id, reason } => {
            race_command(services, &id, RaceCommand::Cancel { reason }).await
        }
        Request::RaceDisqualify {
            race_id,
            bib,
            reason,
        } => race_command(services, &race_id, RaceCommand::Disqualify { bib, reason }).await,
        Request::RaceReinstate { race_id, bib } => {
            race_command(services, &race_id, RaceCommand::Reinstate { bib }).await
        }
        Request::RaceDeviceBind {
            race_id,
            bib,
            device_id,
        } => change_devices(services, &race_id, DevicesCommand::Bind { bib, device_id }).await,
        Request::RaceDeviceRevoke { race_id, bib } => {
            change_devices(services, &race_id, DevicesCommand::Revoke { bib }).await
        }
        Request::RaceDevices { race_id } => list_devices(services, race_id).await,
        Request::RacerLink {
            race_id,
            bib,
            ttl_secs,
        } => racer_link(engine, services, &race_id, bib, ttl_secs).await,
        Request::RaceShare { race_id, ttl_secs } => {
            race_share(engine, services, &race_id, ttl_secs)
        }
        Request::RacerRegister { race_id, racers } => {
            racer_register(services, &race_id, racers).await
        }
        Request::RacerList { race_id } => racer_list(services, &race_id, claims.role).await,
        Request::Fixes { fixes } => return submit_fixes(engine, services, caller, fixes).await,
        Request::RaceStandings { race_id } => standings(services, &race_id).await,
        Request::RaceResults { race_id } => race_results(services, &race_id).await,
        Request::RaceReplay {
            race_id,
            speed,
            from_ms,
        } => return replay(engine, services, race_id, speed, from_ms).await,
        Request::RaceSubscribe { race_id, since_seq } => {
            return subscribe(services, &race_id, since_seq).await
        }
        other => Err(Rejection::internal(format!(
            "{} is not a race request",
            other.type_name()
        ))),
    };
    Outcome::Reply(reply)
}

/// Every race, or only its own for a race-scoped token.
fn race_list(services: &Services, claims: &Claims) -> Reply {
    let races = services
        .races
        .list()
        .iter()
        .filter(|r| {
            claims
                .race
                .as_deref()
                .is_none_or(|scope| scope == r.id.as_str())
        })
        .map(race_view)
        .collect();
    Reply::Races(races)
}

fn parse_course(services: &Services, gpx: &str) -> Result<Course, Rejection> {
    Course::from_gpx(gpx.as_bytes(), services.races.limits().max_course_points)
        .map_err(|e| Rejection::new(ErrorCode::InvalidCourse, e.to_string()))
}

async fn race_create(services: &Services, create: RaceCreate) -> Result<Reply, Rejection> {
    let course = parse_course(services, &create.course_gpx)?;
    let command = RaceCommand::Create {
        name: create.name,
        course,
        start_at_ms: create.start_at_ms,
        cutoff_at_ms: create.cutoff_at_ms,
    };
    services
        .races
        .create(command)
        .await
        .map(|r| Reply::Race(race_view(&r)))
}

async fn race_update(services: &Services, update: RaceUpdate) -> Result<Reply, Rejection> {
    let id = RaceId::parse(&update.id)?;
    let course = update
        .course_gpx
        .as_deref()
        .map(|gpx| parse_course(services, gpx))
        .transpose()?;
    let cutoff_at_ms = if update.clear_cutoff {
        Some(None)
    } else {
        update.cutoff_at_ms.map(Some)
    };
    let command = RaceCommand::Update {
        name: update.name,
        course,
        start_at_ms: update.start_at_ms,
        cutoff_at_ms,
    };
    race_command_parsed(services, &id, command).await
}

async fn race_command(
    services: &Services,
    id: &str,
    command: RaceCommand,
) -> Result<Reply, Rejection> {
    race_command_parsed(services, &RaceId::parse(id)?, command).await
}

/// Runs a lifecycle command; the reply is the race as it is afterwards.
async fn race_command_parsed(
    services: &Services,
    id: &RaceId,
    command: RaceCommand,
) -> Result<Reply, Rejection> {
    services
        .races
        .command(id, command)
        .await
        .map(|r| Reply::Race(race_view(&r)))
}

async fn racer_register(
    services: &Services,
    race_id: &str,
    racers: Vec<RacerView>,
) -> Result<Reply, Rejection> {
    let id = RaceId::parse(race_id)?;
    let racers = racer_entries(racers);
    let bibs = racers.iter().map(|r| r.bib).collect();
    let race = services
        .races
        .command(&id, RaceCommand::RegisterRacers { racers })
        .await?;
    services.races.start_racers(&id, bibs);
    Ok(Reply::Registered {
        racers: race.racers,
    })
}

async fn racer_list(services: &Services, race_id: &str, role: Role) -> Result<Reply, Rejection> {
    let id = RaceId::parse(race_id)?;
    let roster = services.races.roster(&id).await?;
    // Contact details are for organisers, not for the public start list.
    Ok(Reply::Racers(racer_views(roster, role == Role::Admin)))
}

/// A racer's batch over the socket, acknowledged once durable; followed by a `pace` push
/// when the interval the race asks of this device changed since this socket was last told.
async fn submit_fixes(
    engine: &Engine,
    services: &Services,
    caller: &mut Caller,
    fixes: Vec<WireFix>,
) -> Outcome {
    let (race, bib) = match racer_of(&caller.claims) {
        Ok(racer) => racer,
        Err(rejection) => return Outcome::Reply(Err(rejection)),
    };
    let outcome = match store_fixes(engine, services, &race, bib, &fixes).await {
        Ok(outcome) => outcome,
        Err(rejection) => return Outcome::Reply(Err(rejection)),
    };
    let reply = Reply::FixesAck {
        accepted: outcome.accepted,
        ignored: outcome.ignored,
        last_at_ms: outcome.last_at_ms,
    };
    match services.races.pace(&race, bib) {
        Some(pace) if caller.pace_told_ms != Some(pace.interval_ms) => {
            caller.pace_told_ms = Some(pace.interval_ms);
            Outcome::ReplyThenPush {
                reply,
                push: Push::Pace {
                    interval_ms: pace.interval_ms,
                    reason: pace.reason.as_str().to_owned(),
                },
            }
        }
        _ => Outcome::Reply(Ok(reply)),
    }
}

/// The race and bib a racer token speaks for.
fn racer_of(claims: &Claims) -> Result<(RaceId, u32), Rejection> {
    let Some(race) = &claims.race else {
        return Err(Rejection::new(
            ErrorCode::Forbidden,
            "a racer token must be bound to a race",
        ));
    };
    let race = RaceId::parse(race)?;
    let bib: u32 = claims.sub.parse().map_err(|_| {
        Rejection::new(
            ErrorCode::Forbidden,
            "a racer token's subject must be the bib number",
        )
    })?;
    Ok((race, bib))
}

/// Every device binding of a race.
async fn list_devices(services: &Services, race_id: String) -> Result<Reply, Rejection> {
    let id = RaceId::parse(&race_id)?;
    let devices = services.races.devices(&id).await?;
    Ok(Reply::Devices {
        race_id,
        devices: devices.iter().map(device_view).collect(),
    })
}

/// Binds or revokes a device id; the answer lists the bib's binding afterwards.
async fn change_devices(
    services: &Services,
    race_id: &str,
    command: DevicesCommand,
) -> Result<Reply, Rejection> {
    let id = RaceId::parse(race_id)?;
    let change = services.races.change_devices(&id, command).await?;
    Ok(Reply::Devices {
        race_id: race_id.to_owned(),
        devices: change.binding.iter().map(device_view).collect(),
    })
}

/// The one way fixes enter a race, whatever carried them (the WebSocket, a tracking app
/// over HTTP): the batch size, each fix's values and device time are checked before
/// anything changes, then the racer's rules judge them and the journal keeps them; the
/// answer comes once they are durable.
pub(super) async fn store_fixes(
    engine: &Engine,
    services: &Services,
    race: &RaceId,
    bib: u32,
    fixes: &[WireFix],
) -> Result<FixesOutcome, Rejection> {
    let max = engine.config.tracking.max_fixes_per_batch;
    if fixes.is_empty() || fixes.len() > max {
        return Err(Rejection::invalid(format!(
            "send 1 to {max} fixes at a time, got {}",
            fixes.len()
        )));
    }
    // Device time is judged before anything changes: one far-future fix would make every
    // later real fix of this racer stale, one from long ago would stretch the replay.
    let summary = services.races.get(race)?;
    let window = fix_window(
        now_ms(),
        summary.start_at_ms,
        summary.started_at_ms,
        &device_time_limits(&engine.config),
    );
    // The whole batch is refused for its first bad fix, whatever is wrong with it.
    let fixes = fixes
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let fix = fix_from_wire(f)
                .map_err(|reason| Rejection::invalid(format!("fix {i}: {reason}")))?;
            window.check(fix.at_ms).map_err(|bad| {
                Rejection::new(ErrorCode::BadTime, format!("fix {i}: at_ms {bad}"))
            })?;
            Ok(fix)
        })
        .collect::<Result<Vec<_>, Rejection>>()?;
    services.races.submit_fixes(race, bib, fixes).await
}

async fn standings(services: &Services, race_id: &str) -> Result<Reply, Rejection> {
    let id = RaceId::parse(race_id)?;
    let rows = services.races.standings(&id).await?;
    Ok(Reply::Standings(rows.iter().map(standing_view).collect()))
}

async fn race_results(services: &Services, race_id: &str) -> Result<Reply, Rejection> {
    let id = RaceId::parse(race_id)?;
    let rows = services.races.results(&id).await?;
    Ok(results_reply(rows))
}

/// A replay of the race's stored fixes, paced one step per `race.tick_ms`.
async fn replay(
    engine: &Engine,
    services: &Services,
    race_id: String,
    speed: f64,
    start_ms: Option<i64>,
) -> Outcome {
    let replayer = match replayer(services, &race_id, speed).await {
        Ok(replayer) => replayer,
        Err(rejection) => return Outcome::Reply(Err(rejection)),
    };
    let span = replayer.span();
    let tick = Duration::from_millis(engine.config.race.tick_ms);
    Outcome::Replay {
        reply: Reply::ReplayStarted {
            from_ms: span.map(|s| s.0),
            to_ms: span.map(|s| s.1),
        },
        pacer: ReplayPacer::new(race_id, replayer, speed, start_ms, tick),
    }
}

async fn replayer(services: &Services, race_id: &str, speed: f64) -> Result<Replayer, Rejection> {
    if !(speed.is_finite() && (0.1..=10_000.0).contains(&speed)) {
        return Err(Rejection::invalid(format!(
            "replay speed must be 0.1..=10000, got {speed}"
        )));
    }
    services.races.replay(&RaceId::parse(race_id)?).await
}

/// A public spectator token for one existing race: what a share link carries.
fn race_share(
    engine: &Engine,
    services: &Services,
    race_id: &str,
    ttl_secs: u64,
) -> Result<Reply, Rejection> {
    let id = RaceId::parse(race_id)?;
    services.races.get(&id)?;
    check_ttl(engine, ttl_secs)?;
    let claims = share_claims(id.as_str(), now_ms() / 1000, ttl_secs);
    let minted = mint(engine, &claims, "share token")?;
    Ok(Reply::Shared {
        race_id: id.as_str().to_owned(),
        token: minted.token,
        expires_at_ms: minted.expires_at_ms,
    })
}

/// A link's lifetime: at least a second, at most what any token may live.
fn check_ttl(engine: &Engine, ttl_secs: u64) -> Result<(), Rejection> {
    let max = engine.config.auth.max_ttl_secs;
    if ttl_secs == 0 || ttl_secs > max {
        return Err(Rejection::new(
            ErrorCode::InvalidArgument,
            format!("ttl_secs must be between 1 and {max} (auth.max_ttl_secs), got {ttl_secs}"),
        ));
    }
    Ok(())
}

/// A racer's personal link: a racer token for this race and bib, as a racer's own phone
/// would hold, for the racer page of their invitation.
async fn racer_link(
    engine: &Engine,
    services: &Services,
    race_id: &str,
    bib: u32,
    ttl_secs: u64,
) -> Result<Reply, Rejection> {
    let id = RaceId::parse(race_id)?;
    check_ttl(engine, ttl_secs)?;
    if !services
        .races
        .roster(&id)
        .await?
        .iter()
        .any(|r| r.bib == bib)
    {
        return Err(bib_not_registered(&id, bib));
    }
    let claims = claims_for(
        Role::Racer,
        &bib.to_string(),
        Some(id.as_str()),
        now_ms() / 1000,
        ttl_secs,
    );
    let minted = mint(engine, &claims, "racer link")?;
    Ok(Reply::Shared {
        race_id: id.as_str().to_owned(),
        token: minted.token,
        expires_at_ms: minted.expires_at_ms,
    })
}

/// The snapshot reply, then the ticks the spectator missed and the live feed.
async fn subscribe(services: &Services, race_id: &str, since_seq: Option<u64>) -> Outcome {
    let sub = match RaceId::parse(race_id) {
        Ok(id) => services.races.subscribe(&id, since_seq).await,
        Err(rejection) => Err(rejection),
    };
    match sub {
        Ok(sub) => {
            let (snapshot, missed, updates) = snapshot(sub);
            Outcome::Subscribed {
                seq: snapshot.seq,
                reply: Reply::Subscribed(snapshot),
                missed,
                updates: TickFeed::new(updates),
            }
        }
        Err(rejection) => Outcome::Reply(Err(rejection)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_admins_change_races_watchers_read_them_racers_send_fixes() {
        let start = Request::RaceStart { id: "r".into() };
        assert!(rule(&start).permits(Role::Admin));
        for role in [Role::Racer, Role::Spectator, Role::Officer, Role::Citizen] {
            assert!(!rule(&start).permits(role));
        }
        for role in Role::ALL {
            let reads = matches!(role, Role::Admin | Role::Spectator | Role::Racer);
            assert_eq!(rule(&Request::RaceList).permits(role), reads);
            let fixes = Request::Fixes { fixes: Vec::new() };
            assert_eq!(rule(&fixes).permits(role), role == Role::Racer);
        }
        assert!(!rule(&Request::Ping).permits(Role::Admin), "not ours");
    }

    #[test]
    fn race_requests_reach_the_race_they_name() {
        let share = Request::RaceShare {
            race_id: "r1".into(),
            ttl_secs: 60,
        };
        assert_eq!(rule(&share).scope, Scope::Race("r1"));
        let create = Request::RaceCreate(RaceCreate {
            name: "n".into(),
            course_gpx: String::new(),
            start_at_ms: 0,
            cutoff_at_ms: None,
        });
        assert_eq!(rule(&create).scope, Scope::Global);
        assert_eq!(rule(&Request::RaceList).scope, Scope::Any);
    }
}
