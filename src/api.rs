//! The API layer: turns a decoded [`Request`] from an authenticated socket into domain
//! commands and the result into a [`Reply`].
//!
//! Role checks live here, in [`permitted`], so one table decides who may send what. GPX
//! text is parsed into a validated [`Course`] here, so the domain only sees valid courses.
//! Nothing here knows about sockets or encodings.

mod mail;
pub mod patrol;

use crate::actors::race::actor::UpdatesReceiver;
use crate::actors::race::feed::{Frames, Published, TickEncoder, TickUpdate};
use crate::actors::race::replay::Replayer;
use crate::actors::race::results::{statistics, ResultStatus};
use crate::actors::race::standings::Standing;
use crate::actors::race::{RaceCommand, RaceStatus, RaceSummary, RacerEntry};
use crate::actors::racer::Fix;
use crate::auth::{Claims, Role};
use crate::device_time::{fix_window, DeviceTimeLimits};
use crate::engine::{Engine, Services};
use crate::error::{ErrorCode, Rejection};
use crate::geo::Course;
use crate::geo::Position;
use crate::ids::RaceId;
use crate::net::codec::Codec;
use crate::net::protocol::{
    BackupInfo, CheckpointView, CoursePoint, CutView, OffCourseView, Push, RaceCreate,
    RaceSnapshot, RaceStateView, RaceStatsView, RaceTick, RaceUpdate, RaceView, RacerView, Reply,
    Request, ResultStatusView, ResultView, ServerFrame, StandingView, WireFix,
};
use crate::time::now_ms;
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::Arc;

/// What the session should send back.
pub enum Outcome {
    /// One reply or error.
    Reply(Result<Reply, Rejection>),
    /// Send `reply`, then forward the race's ticks after `seq` from `updates`.
    Subscribed {
        /// The snapshot reply.
        reply: Reply,
        /// The feed the snapshot continues from.
        seq: u64,
        /// Ticks a resuming spectator missed, oldest first, to send right after `reply`.
        missed: Vec<Arc<Published>>,
        /// The race's published ticks.
        updates: UpdatesReceiver,
    },
    /// Send `reply`, then play `replayer` to the socket at `speed`.
    Replay {
        /// The reply announcing the replay.
        reply: Reply,
        /// The race.
        race_id: String,
        /// The stored fixes, ready to play.
        replayer: Replayer,
        /// Race seconds per wall-clock second.
        speed: f64,
        /// Race time to start at (clamped to the replay's span); none: the beginning.
        start_ms: Option<i64>,
    },
    /// Stream this file as backup chunks, then send `reply`, then delete the file.
    StreamFile {
        /// The file to stream.
        path: PathBuf,
        /// The reply that ends the stream.
        reply: Reply,
    },
}

impl From<Result<Reply, Rejection>> for Outcome {
    fn from(result: Result<Reply, Rejection>) -> Self {
        Outcome::Reply(result)
    }
}

/// Whether `role` may send `request` at all (race scope is checked per request).
pub fn permitted(role: Role, request: &Request) -> bool {
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

/// Handles one request for the holder of `claims` (which a refresh may replace).
pub async fn handle(
    engine: &Engine,
    claims: &mut Claims,
    patrol: &mut Option<crate::actors::patrol::PatrolLink>,
    request: Request,
) -> Outcome {
    if !permitted(claims.role, &request) {
        return Outcome::Reply(Err(Rejection::new(
            ErrorCode::Forbidden,
            format!("role {} may not send {}", claims.role, request.type_name()),
        )));
    }
    let leeway_ms =
        i64::try_from(engine.config.auth.leeway_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let expired = claims.expired_at(now_ms(), leeway_ms);
    if expired && !matches!(request, Request::RefreshToken { .. }) {
        return Outcome::Reply(Err(Rejection::new(
            ErrorCode::TokenExpired,
            "token expired; send refresh_token or reconnect",
        )));
    }
    if let Err(rejection) = within_scope(claims, &request) {
        return Outcome::Reply(Err(rejection));
    }
    let Some(services) = engine.services() else {
        return Outcome::Reply(Err(Rejection::new(
            ErrorCode::Unavailable,
            "the server is still recovering",
        )));
    };
    match request {
        Request::Ping => Outcome::Reply(Ok(Reply::Pong {
            server_time_ms: now_ms(),
        })),
        Request::RefreshToken { token } => refresh(engine, claims, &token).into(),
        Request::RaceCreate(create) => race_create(services, create).await.into(),
        Request::RaceUpdate(update) => race_update(services, update).await.into(),
        Request::RaceList => {
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
            Outcome::Reply(Ok(Reply::Races(races)))
        }
        Request::RaceGet { id } => {
            let result = RaceId::parse(&id)
                .and_then(|id| services.races.get(&id))
                .map(|r| Reply::Race(race_view(&r)));
            Outcome::Reply(result)
        }
        Request::RaceStart { id } => race_command(services, &id, RaceCommand::Start).await.into(),
        Request::RaceFinish { id } => race_command(services, &id, RaceCommand::Finish)
            .await
            .into(),
        Request::RaceCancel { id, reason } => {
            race_command(services, &id, RaceCommand::Cancel { reason })
                .await
                .into()
        }
        Request::RaceDisqualify {
            race_id,
            bib,
            reason,
        } => race_command(services, &race_id, RaceCommand::Disqualify { bib, reason })
            .await
            .into(),
        Request::RaceReinstate { race_id, bib } => {
            race_command(services, &race_id, RaceCommand::Reinstate { bib })
                .await
                .into()
        }
        Request::Backup => backup(engine, services).await,
        Request::RacerRegister { race_id, racers } => {
            racer_register(services, &race_id, racers).await.into()
        }
        Request::RacerList { race_id } => racer_list(services, &race_id, claims.role).await.into(),
        Request::MailSubmit(_)
        | Request::MailStatus { .. }
        | Request::MailList { .. }
        | Request::MailFailed { .. }
        | Request::MailRetry { .. }
        | Request::MailRetryAllDead => {
            mail::handle(&services.mail, &device_time_limits(engine), request)
                .await
                .into()
        }
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
        | Request::PatrolReport { .. } => patrol::handle(&services.patrol, claims, patrol, request)
            .await
            .into(),
        Request::Fixes { fixes } => submit_fixes(engine, services, claims, fixes).await.into(),
        Request::RaceStandings { race_id } => standings(services, &race_id).await.into(),
        Request::RaceResults { race_id } => race_results(services, &race_id).await.into(),
        Request::RaceReplay {
            race_id,
            speed,
            from_ms,
        } => match replay(services, &race_id, speed).await {
            Ok(replayer) => {
                let span = replayer.span();
                Outcome::Replay {
                    reply: Reply::ReplayStarted {
                        from_ms: span.map(|s| s.0),
                        to_ms: span.map(|s| s.1),
                    },
                    race_id,
                    replayer,
                    speed,
                    start_ms: from_ms,
                }
            }
            Err(rejection) => Outcome::Reply(Err(rejection)),
        },
        Request::RaceSubscribe { race_id, since_seq } => {
            match subscribe(services, &race_id, since_seq).await {
                Ok((snapshot, missed, updates)) => Outcome::Subscribed {
                    seq: snapshot.seq,
                    reply: Reply::Subscribed(snapshot),
                    missed,
                    updates,
                },
                Err(rejection) => Outcome::Reply(Err(rejection)),
            }
        }
        Request::RaceShare { race_id, ttl_secs } => {
            race_share(engine, services, &race_id, ttl_secs).into()
        }
    }
}

fn refresh(engine: &Engine, claims: &mut Claims, token: &str) -> Result<Reply, Rejection> {
    let fresh = engine.keys.verify(token).map_err(|e| match e {
        crate::auth::TokenError::Expired => {
            Rejection::new(ErrorCode::TokenExpired, "the new token has already expired")
        }
        other => Rejection::new(ErrorCode::Unauthenticated, other.to_string()),
    })?;
    if fresh.sub != claims.sub || fresh.role != claims.role || fresh.race != claims.race {
        return Err(Rejection::new(
            ErrorCode::Forbidden,
            "a refreshed token must have the same subject, role and race as the socket's",
        ));
    }
    let expires_at_ms = fresh.expires_at_ms();
    *claims = fresh;
    Ok(Reply::TokenRefreshed { expires_at_ms })
}

/// A race-scoped token reaches only its race: requests naming another race, and requests
/// that are not about one race (create, backup), are forbidden. Lists are filtered instead.
fn within_scope(claims: &Claims, request: &Request) -> Result<(), Rejection> {
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
    services
        .races
        .command(&id, command)
        .await
        .map(|r| Reply::Race(race_view(&r)))
}

async fn race_command(
    services: &Services,
    id: &str,
    command: RaceCommand,
) -> Result<Reply, Rejection> {
    let id = RaceId::parse(id)?;
    services
        .races
        .command(&id, command)
        .await
        .map(|r| Reply::Race(race_view(&r)))
}

async fn racer_register(
    services: &Services,
    race_id: &str,
    racers: Vec<RacerView>,
) -> Result<Reply, Rejection> {
    let id = RaceId::parse(race_id)?;
    let racers = racers
        .into_iter()
        .map(|r| RacerEntry {
            bib: r.bib,
            name: r.name,
            team: r.team,
            email: r.email,
        })
        .collect();
    let race = services
        .races
        .command(&id, RaceCommand::RegisterRacers { racers })
        .await?;
    Ok(Reply::Registered {
        racers: race.racers,
    })
}

async fn racer_list(services: &Services, race_id: &str, role: Role) -> Result<Reply, Rejection> {
    let id = RaceId::parse(race_id)?;
    let roster = services.races.roster(&id).await?;
    let racers = roster
        .into_iter()
        .map(|r| RacerView {
            bib: r.bib,
            name: r.name,
            team: r.team,
            // Contact details are for organisers, not for the public start list.
            email: if role == Role::Admin { r.email } else { None },
        })
        .collect();
    Ok(Reply::Racers(racers))
}

async fn submit_fixes(
    engine: &Engine,
    services: &Services,
    claims: &Claims,
    fixes: Vec<WireFix>,
) -> Result<Reply, Rejection> {
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
    let max = engine.config.tracking.max_fixes_per_batch;
    if fixes.is_empty() || fixes.len() > max {
        return Err(Rejection::invalid(format!(
            "send 1 to {max} fixes at a time, got {}",
            fixes.len()
        )));
    }
    // Device time is judged before anything changes: one far-future fix would make every
    // later real fix of this racer stale, one from long ago would stretch the replay.
    let summary = services.races.get(&race)?;
    let window = fix_window(
        now_ms(),
        summary.start_at_ms,
        summary.started_at_ms,
        &device_time_limits(engine),
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
    let outcome = services.races.submit_fixes(&race, bib, fixes).await?;
    Ok(Reply::FixesAck {
        accepted: outcome.accepted,
        ignored: outcome.ignored,
        last_at_ms: outcome.last_at_ms,
    })
}

/// The configured bounds on client-supplied times.
fn device_time_limits(engine: &Engine) -> DeviceTimeLimits {
    let t = &engine.config.tracking;
    DeviceTimeLimits {
        max_future_skew_ms: t.max_future_skew_ms,
        max_fix_age_before_start_ms: t.max_fix_age_before_start_ms,
    }
}

/// Converts and range-checks a wire fix.
fn fix_from_wire(f: &WireFix) -> Result<Fix, String> {
    let position = Position {
        lat_e7: f.lat_e7,
        lon_e7: f.lon_e7,
    }
    .validate()?;
    Ok(Fix {
        at_ms: f.at_ms,
        position,
        accuracy_m: f.accuracy_dm as f32 / 10.0,
        speed_mps: f.speed_cmps.map(|s| s as f32 / 100.0),
        elevation_m: f.elevation_dm.map(|e| e as f32 / 10.0),
    })
}

async fn standings(services: &Services, race_id: &str) -> Result<Reply, Rejection> {
    let id = RaceId::parse(race_id)?;
    let rows = services.races.standings(&id).await?;
    Ok(Reply::Standings(rows.iter().map(standing_view).collect()))
}

async fn replay(services: &Services, race_id: &str, speed: f64) -> Result<Replayer, Rejection> {
    if !(speed.is_finite() && (0.1..=10_000.0).contains(&speed)) {
        return Err(Rejection::invalid(format!(
            "replay speed must be 0.1..=10000, got {speed}"
        )));
    }
    services.races.replay(&RaceId::parse(race_id)?).await
}

/// The wire view of a tick: a live update or a replay step.
pub fn race_tick(race_id: &str, update: &TickUpdate, full: bool) -> RaceTick {
    let rows = if full { &update.full } else { &update.changed };
    RaceTick {
        race_id: race_id.to_owned(),
        seq: update.seq,
        full,
        spectators: update.spectators,
        standings: rows.iter().map(standing_view).collect(),
    }
}

async fn race_results(services: &Services, race_id: &str) -> Result<Reply, Rejection> {
    let id = RaceId::parse(race_id)?;
    let rows = services.races.results(&id).await?;
    let s = statistics(&rows);
    let stats = RaceStatsView {
        entrants: s.entrants,
        starters: s.starters,
        finishers: s.finishers,
        dnf: s.dnf,
        dns: s.dns,
        winning_time_ms: s.winning_time_ms,
        median_time_ms: s.median_time_ms,
        fastest_avg_speed_kmh: s.fastest_avg_speed_kmh,
        total_distance_m: s.total_distance_m,
        dsq: s.dsq,
    };
    let rows = rows
        .into_iter()
        .map(|r| ResultView {
            rank: r.rank,
            bib: r.bib,
            name: r.name,
            team: r.team,
            time_ms: r.time_ms,
            avg_speed_kmh: r.avg_speed_kmh,
            distance_dm: decimetres(r.distance_m),
            status: match r.status {
                ResultStatus::Finished => ResultStatusView::Finished,
                ResultStatus::Racing => ResultStatusView::Racing,
                ResultStatus::Dnf => ResultStatusView::Dnf,
                ResultStatus::Dns => ResultStatusView::Dns,
                ResultStatus::Dsq => ResultStatusView::Dsq,
            },
            splits_ms: r.splits_ms,
            reason: r.reason,
            off_course: r
                .off_course
                .iter()
                .map(|e| OffCourseView {
                    from_ms: e.from_ms,
                    to_ms: e.to_ms,
                    max_offset_m: whole(e.max_offset_m),
                })
                .collect(),
            cuts: r
                .cuts
                .iter()
                .map(|c| CutView {
                    at_ms: c.at_ms,
                    from_dm: decimetres(c.from_m),
                    to_dm: decimetres(c.to_m),
                    held: c.held,
                })
                .collect(),
        })
        .collect();
    Ok(Reply::Results { rows, stats })
}

/// The wire view of a standings row.
fn standing_view(s: &Standing) -> StandingView {
    StandingView {
        bib: s.bib,
        rank: s.rank,
        progress_dm: decimetres(s.progress_m),
        gap_ms: s.gap_ms,
        finished_at_ms: s.finished_at_ms,
        off_course: s.off_course,
        lat_e7: s.live.position.map_or(0, |p| p.lat_e7),
        lon_e7: s.live.position.map_or(0, |p| p.lon_e7),
        speed_cmps: s.live.speed_mps.map(|v| whole(v * 100.0)),
        eta_ms: s.live.eta_ms,
        checkpoints_passed: s.checkpoints_passed,
        last_split_ms: s.last_split_ms,
        cut_suspected: s.cut_suspected,
    }
}

/// Metres as the wire's whole decimetres, saturating (distances are never negative).
fn decimetres(metres: f64) -> u32 {
    whole(metres * 10.0)
}

/// `units` rounded to a whole number for the wire, clamped into `u32` (NaN is 0).
fn whole(units: f64) -> u32 {
    units.round().clamp(0.0, f64::from(u32::MAX)) as u32
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
    let max = engine.config.auth.max_ttl_secs;
    if ttl_secs == 0 || ttl_secs > max {
        return Err(Rejection::new(
            ErrorCode::InvalidArgument,
            format!("ttl_secs must be between 1 and {max} (auth.max_ttl_secs), got {ttl_secs}"),
        ));
    }
    let claims = crate::auth::claims_for(
        Role::Spectator,
        &format!("share-{}", id.as_str()),
        Some(id.as_str()),
        now_ms() / 1000,
        ttl_secs,
    );
    let token = engine
        .keys
        .issue(&claims)
        .map_err(|e| Rejection::internal(format!("cannot sign a share token: {e}")))?;
    Ok(Reply::Shared {
        race_id: id.as_str().to_owned(),
        token,
        expires_at_ms: claims.expires_at_ms(),
    })
}

async fn subscribe(
    services: &Services,
    race_id: &str,
    since_seq: Option<u64>,
) -> Result<(RaceSnapshot, Vec<Arc<Published>>, UpdatesReceiver), Rejection> {
    let id = RaceId::parse(race_id)?;
    let sub = services.races.subscribe(&id, since_seq).await?;
    let snapshot = RaceSnapshot {
        resumed: sub.missed.is_some(),
        checkpoints: sub
            .checkpoints
            .iter()
            .map(|c| CheckpointView {
                name: c.name.clone(),
                lat_e7: c.position.lat_e7,
                lon_e7: c.position.lon_e7,
                distance_dm: decimetres(c.distance_m),
                mandatory: c.mandatory,
            })
            .collect(),
        race: race_view(&sub.summary),
        course: sub
            .course
            .iter()
            .map(|p| CoursePoint {
                lat_e7: p.lat_e7,
                lon_e7: p.lon_e7,
            })
            .collect(),
        // The public start list: no contact details.
        racers: sub
            .roster
            .into_iter()
            .map(|r| RacerView {
                bib: r.bib,
                name: r.name,
                team: r.team,
                email: None,
            })
            .collect(),
        standings: sub.standings.iter().map(standing_view).collect(),
        seq: sub.seq,
        spectators: sub.spectators,
    };
    Ok((snapshot, sub.missed.unwrap_or_default(), sub.updates))
}

/// Encodes spectator ticks once per wire encoding, as delta and as full table; the race
/// actor calls it once per tick and every subscribed session sends the same bytes.
pub fn tick_encoder() -> TickEncoder {
    Arc::new(|race: &RaceId, update: &TickUpdate| {
        let frames = |full: bool| -> Option<Frames> {
            let frame = ServerFrame::Push(Push::RaceUpdate(race_tick(race.as_str(), update, full)));
            let encode = |codec: Codec| match codec.encode_server_bytes(&frame) {
                Ok(bytes) => Some(Bytes::from(bytes)),
                Err(e) => {
                    tracing::error!(%race, "cannot encode a race update: {e}");
                    None
                }
            };
            Some(Frames {
                binary: encode(Codec::Binary)?,
                json: encode(Codec::Json)?,
            })
        };
        Some(Published {
            seq: update.seq,
            delta: frames(false)?,
            full: frames(true)?,
        })
    })
}

async fn backup(engine: &Engine, services: &Services) -> Outcome {
    let mut suffix = [0u8; 4];
    let _ = getrandom::fill(&mut suffix);
    let path = engine.config.backup_dir().join(format!(
        "stream-{}-{:08x}.tmp",
        now_ms(),
        u32::from_be_bytes(suffix)
    ));
    match services.journal.backup(path.clone()).await {
        Ok(summary) => Outcome::StreamFile {
            path,
            reply: Reply::BackupDone(BackupInfo {
                bytes: summary.bytes,
                records: summary.records,
                crc32: summary.crc32,
            }),
        },
        Err(e) => {
            tracing::error!("backup failed: {e}");
            let _ = std::fs::remove_file(&path);
            Outcome::Reply(Err(Rejection::internal(format!("backup failed: {e}"))))
        }
    }
}

/// The wire view of a race summary.
pub fn race_view(r: &RaceSummary) -> RaceView {
    RaceView {
        id: r.id.to_string(),
        name: r.name.clone(),
        state: match r.status {
            RaceStatus::Scheduled => RaceStateView::Scheduled,
            RaceStatus::Live => RaceStateView::Live,
            RaceStatus::Finished => RaceStateView::Finished,
            RaceStatus::Cancelled => RaceStateView::Cancelled,
        },
        start_at_ms: r.start_at_ms,
        cutoff_at_ms: r.cutoff_at_ms,
        created_at_ms: r.created_at_ms,
        started_at_ms: r.started_at_ms,
        finished_at_ms: r.finished_at_ms,
        cancelled_at_ms: r.cancelled_at_ms,
        cancel_reason: r.cancel_reason.clone(),
        course_points: r.course_points,
        course_length_m: r.course_length_m,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let start = |id: &str| Request::RaceStart { id: id.into() };
        assert!(within_scope(&claims, &start("r1")).is_ok());
        assert_eq!(
            within_scope(&claims, &start("r2")).unwrap_err().code,
            ErrorCode::Forbidden
        );
        assert!(within_scope(&claims, &Request::Backup).is_err());
        assert!(within_scope(&claims, &Request::RaceList).is_ok());
        let unscoped = crate::auth::claims_for(Role::Admin, "ops", None, 0, 60);
        assert!(within_scope(&unscoped, &Request::Backup).is_ok());
    }
}
