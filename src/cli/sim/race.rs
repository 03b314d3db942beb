//! `peloton sim race` from start to summary: reads the ride, plans the field and its faults,
//! checks the race and registers the racers (nothing changes on the server when a check
//! fails), signs each racer's token, spawns the racer tasks, runs the monitor until the run is
//! over, and prints the summary (a line for people or one JSON document).
//!
//! How it fits: [`super::run`] calls [`race`] with the flags of [`super::options`]; the pure
//! parts it assembles are [`super::ride`], [`super::plan`] and [`super::faults`]; the tasks
//! are [`super::racer`] and [`super::monitor`].

use super::faults::{plan_faults, Fault};
use super::monitor::{count, monitor, RunInfo, StandingsLink};
use super::options::{Options, SimRaceArgs};
use super::plan::{plan_racers, RacerPlan};
use super::racer::Racer;
use super::ride::Ride;
use super::shared::{Counters, Shared, CONNECT_CONCURRENCY};
use super::text::{clock, state_name};
use crate::auth::{claims_for, Role};
use crate::cli::keys::server_keys;
use crate::cli::{output, CliError};
use crate::error::ErrorCode;
use crate::geo::Position;
use crate::net::client::Client;
use crate::net::codec::Codec;
use crate::net::protocol::{RaceStateView, RaceView, RacerView, Reply, Request};
use crate::time::now_ms;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// The gun goes this long after the racers are spawned, plus [`GUN_LEAD_PER_RACER`] each, so
/// phones are connected before their first fix is due.
const GUN_LEAD: Duration = Duration::from_millis(500);
/// See [`GUN_LEAD`].
const GUN_LEAD_PER_RACER: Duration = Duration::from_millis(1);
/// At the end, how long racers get to close their sockets politely.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// A ride ending farther than this from the race's finish cannot cross its line (30 m half
/// width by default, plus GPS noise), so the run would only time out: refuse it up front.
const FINISH_TOLERANCE_M: f64 = 50.0;
/// Racer tokens outlive `--timeout` by this much, so none expires during a run.
const TOKEN_MARGIN_SECS: u64 = 3600;

/// The final report.
#[derive(Debug, Serialize)]
struct Summary {
    /// Race id.
    race: String,
    /// Simulated racers.
    racers: u32,
    /// Of them, finished per the server's standings.
    finished: u32,
    /// Of them, those the run waited for: all but abandons, no-shows and cutters.
    expected: u32,
    /// Of those, finished.
    expected_finished: u32,
    /// Each racer who had a fault, and how it ended.
    faults: Vec<FaultOutcome>,
    /// First bib; the racers are `first_bib..first_bib + racers`.
    first_bib: u32,
    /// Distinct fixes sent.
    fixes_sent: u64,
    /// Recorded fixes left out to obey the server's pace (`--obey-pace`).
    fixes_paced_out: u64,
    /// Fixes sent again after a lost connection.
    fixes_resent: u64,
    /// Fixes the server accepted.
    fixes_accepted: u64,
    /// Fixes the server ignored (resends, spikes, after the finish).
    fixes_ignored: u64,
    /// `fixes` messages sent.
    messages: u64,
    /// Connections lost and made again.
    reconnects: u64,
    /// Wall-clock seconds from start-up to every racer finished.
    wall_s: f64,
    /// The speedup used.
    speedup: f64,
    /// The seed used (same seed, same offsets, paces and noise).
    seed: u64,
}

/// How one racer's bad day ended, for the summary.
#[derive(Debug, Serialize)]
struct FaultOutcome {
    /// Bib.
    bib: u32,
    /// The fault's name ([`Fault::name`]).
    fault: &'static str,
    /// Whether the standings had it finished when the run ended.
    finished: bool,
}

/// One line per kind of fault: how many racers had it and how many of them finished.
fn fault_tally(outcomes: &[FaultOutcome]) -> String {
    let mut kinds: Vec<(&str, u32, u32)> = Vec::new();
    for o in outcomes {
        match kinds.iter_mut().find(|k| k.0 == o.fault) {
            Some(k) => {
                k.1 += 1;
                k.2 += u32::from(o.finished);
            }
            None => kinds.push((o.fault, 1, u32::from(o.finished))),
        }
    }
    kinds
        .iter()
        .map(|(name, n, done)| format!("{n} {name} ({done} finished)"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `peloton sim race`.
pub(super) async fn race(args: SimRaceArgs) -> Result<(), CliError> {
    let started = Instant::now();
    let options = Options::from_args(&args)?;
    let token = args
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            CliError::Usage(
            "no token: pass --token or set PELOTON_TOKEN to an admin token (see `peloton admin \
             token issue`)"
                .into(),
        )
        })?;
    let config = args.files.config()?;
    let keys = server_keys(&config)?;
    let bytes = std::fs::read(&args.gpx)
        .map_err(|e| CliError::Usage(format!("cannot read ride {}: {e}", args.gpx.display())))?;
    let ride = Ride::from_gpx(&bytes, config.race.limits.max_course_points)
        .map_err(|e| CliError::Usage(format!("{}: {e}", args.gpx.display())))?;

    let mut admin = Client::connect(&args.server, token, Codec::Binary).await?;
    if admin.welcome().role != Role::Admin {
        return Err(CliError::Usage(format!(
            "--token must be an admin token (this one is a {} token): the simulator registers \
             its racers and starts the race",
            admin.welcome().role.as_str()
        )));
    }
    let plans = plan_racers(args.racers, args.first_bib, options.spread_ms, args.seed);
    // Planned before anything changes on the server, so a fault the ride cannot hold is
    // refused with nothing registered.
    let faults = plan_faults(&ride, &plans, &options.faults, args.seed)
        .map_err(|e| CliError::Usage(format!("{}: {e}", args.gpx.display())))?;
    let race = prepare_race(&mut admin, &args, token, &ride, &plans).await?;

    let ttl = (options.timeout.as_secs() + TOKEN_MARGIN_SECS).min(config.auth.max_ttl_secs);
    let now_s = now_ms() / 1000;
    let mut racers = Vec::with_capacity(plans.len());
    for (plan, fault) in plans.iter().zip(&faults) {
        if matches!(fault, Some(Fault::NoShow)) {
            // Registered, but never connects: no token needed.
            continue;
        }
        let claims = claims_for(
            Role::Racer,
            &plan.bib.to_string(),
            Some(&race.id),
            now_s,
            ttl,
        );
        let token = keys
            .issue(&claims)
            .map_err(|e| CliError::Failed(format!("cannot sign a racer token: {e}")))?;
        racers.push((*plan, fault.and_then(|f| f.apply(&ride)), token));
    }
    // The monitor watches on a token of its own, scoped to the race and read-only: the admin
    // token (an hour by default) may expire long before a real-time race ends, and the server
    // then closes its socket.
    let watch_token = keys
        .issue(&claims_for(
            Role::Spectator,
            "sim",
            Some(&race.id),
            now_s,
            ttl,
        ))
        .map_err(|e| CliError::Failed(format!("cannot sign the monitor's token: {e}")))?;
    admin.close().await;

    eprintln!(
        "sim: race {} ({}), {} racers (bibs {}-{}), ride {} points, {:.1} km, {} {}, speedup {}",
        race.id,
        state_name(race.state),
        args.racers,
        args.first_bib,
        args.first_bib + args.racers - 1,
        ride.recorded,
        ride.length_m / 1000.0,
        clock(ride.duration_ms() as f64 / 1000.0),
        if ride.timed {
            "recorded"
        } else {
            "at 8 m/s (the file has no times)"
        },
        args.speedup,
    );
    for (plan, fault) in plans.iter().zip(&faults) {
        if let Some(fault) = fault {
            eprintln!(
                "sim: bib {} {}: {}",
                plan.bib,
                fault.name(),
                fault.describe(&ride, plan.pace)
            );
        }
    }

    let lead = GUN_LEAD + GUN_LEAD_PER_RACER * args.racers;
    let now = Instant::now();
    let shared = Arc::new(Shared {
        server: args.server.clone(),
        ride: Arc::new(ride),
        start_at_ms: race.start_at_ms,
        speedup: options.speedup,
        batch: usize::try_from(args.batch).unwrap_or(1).max(1),
        obey_pace: args.obey_pace,
        gun: now + lead,
        deadline: started + options.timeout,
        gate: Semaphore::new(CONNECT_CONCURRENCY),
        counters: Counters::default(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for (plan, own_ride, token) in racers {
        let racer = Racer {
            plan,
            ride: own_ride.map_or_else(|| Arc::clone(&shared.ride), Arc::new),
            token,
            shared: Arc::clone(&shared),
            stop: stop_rx.clone(),
            client: None,
            pace_ms: None,
        };
        tasks.spawn(racer.run());
    }

    let mut link = StandingsLink {
        server: args.server.clone(),
        token: watch_token,
        race: race.id.clone(),
        client: None,
        failures: 0,
    };
    let info = RunInfo {
        first_bib: args.first_bib,
        racers: args.racers,
        expected: faults
            .iter()
            .map(|f| f.as_ref().is_none_or(Fault::expected_to_finish))
            .collect(),
        timeout: options.timeout,
        started,
    };
    let outcome = monitor(&mut link, &mut tasks, &shared, &info).await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(STOP_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.shutdown().await;
    link.close().await;
    let finished = outcome?;
    let outcomes: Vec<FaultOutcome> = plans
        .iter()
        .zip(&faults)
        .filter_map(|(plan, fault)| {
            fault.map(|f| FaultOutcome {
                bib: plan.bib,
                fault: f.name(),
                finished: finished.contains(&plan.bib),
            })
        })
        .collect();

    let c = &shared.counters;
    let summary = Summary {
        race: race.id.clone(),
        racers: args.racers,
        finished: count(finished.len()),
        expected: info.expected_count(),
        expected_finished: info.expected_finished(&finished),
        faults: outcomes,
        first_bib: args.first_bib,
        fixes_sent: Counters::get(&c.fixes_sent),
        fixes_paced_out: Counters::get(&c.fixes_paced_out),
        fixes_resent: Counters::get(&c.fixes_resent),
        fixes_accepted: Counters::get(&c.accepted),
        fixes_ignored: Counters::get(&c.ignored),
        messages: Counters::get(&c.messages),
        reconnects: Counters::get(&c.reconnects),
        wall_s: started.elapsed().as_secs_f64(),
        speedup: args.speedup,
        seed: args.seed,
    };
    if args.json {
        output::json(&summary)
    } else {
        println!(
            "race {}: {}/{} simulated racers finished in {:.1} s; {} fixes sent ({} accepted, {} \
             ignored, {} resent, {} left out to obey the server's pace) in {} messages, {} \
             reconnects",
            summary.race,
            summary.finished,
            summary.racers,
            summary.wall_s,
            summary.fixes_sent,
            summary.fixes_accepted,
            summary.fixes_ignored,
            summary.fixes_resent,
            summary.fixes_paced_out,
            summary.messages,
            summary.reconnects
        );
        if !summary.faults.is_empty() {
            println!(
                "bad day: {}/{} racers expected to finish did; {}",
                summary.expected_finished,
                summary.expected,
                fault_tally(&summary.faults)
            );
        }
        Ok(())
    }
}

/// Checks the race can be raced with this ride, registers the racers, and starts the race if
/// it is scheduled. Nothing changes on the server when a check fails.
async fn prepare_race(
    admin: &mut Client,
    args: &SimRaceArgs,
    token: &str,
    ride: &Ride,
    plans: &[RacerPlan],
) -> Result<RaceView, CliError> {
    let id = args.race.clone();
    let race = match admin.request(Request::RaceGet { id: id.clone() }).await {
        Ok(Reply::Race(race)) => race,
        Ok(other) => return Err(CliError::unexpected(&other)),
        Err(e) => return Err(CliError::Failed(format!("race {id}: {e}"))),
    };
    if !matches!(race.state, RaceStateView::Scheduled | RaceStateView::Live) {
        return Err(CliError::Failed(format!(
            "race {id} is {}; the simulator needs a scheduled or live race",
            state_name(race.state)
        )));
    }
    check_finish(&args.server, token, &id, ride, &args.gpx).await?;
    let racers = plans
        .iter()
        .map(|p| RacerView {
            bib: p.bib,
            name: format!("Sim {}", p.bib),
            team: None,
            email: None,
        })
        .collect();
    match admin
        .request(Request::RacerRegister {
            race_id: id.clone(),
            racers,
        })
        .await
    {
        Ok(Reply::Registered { .. }) => {}
        Ok(other) => return Err(CliError::unexpected(&other)),
        Err(e) => {
            return Err(CliError::Failed(format!(
                "cannot register the simulated racers in race {id}: {e}"
            )))
        }
    }
    if race.state == RaceStateView::Live {
        return Ok(race);
    }
    match admin.request(Request::RaceStart { id: id.clone() }).await {
        Ok(Reply::Race(race)) => Ok(race),
        Ok(other) => Err(CliError::unexpected(&other)),
        // Its start time may have come since it was read: the clock started it (`race.start_mode`
        // auto), which is as good.
        Err(e) if e.code() == Some(ErrorCode::InvalidTransition) => {
            match admin.request(Request::RaceGet { id: id.clone() }).await {
                Ok(Reply::Race(race)) if race.state == RaceStateView::Live => Ok(race),
                _ => Err(CliError::Failed(format!("cannot start race {id}: {e}"))),
            }
        }
        Err(e) => Err(CliError::Failed(format!("cannot start race {id}: {e}"))),
    }
}

/// Refuses a ride that does not end at the race's finish: its racers could never cross the
/// line and the run would only time out. The course comes from a `race_subscribe` snapshot on
/// a socket of its own, closed at once, so no updates pile up unread.
async fn check_finish(
    server: &str,
    token: &str,
    id: &str,
    ride: &Ride,
    gpx: &std::path::Path,
) -> Result<(), CliError> {
    let mut watcher = Client::connect(server, token, Codec::Binary).await?;
    let reply = watcher
        .request(Request::RaceSubscribe {
            race_id: id.to_owned(),
            since_seq: None,
        })
        .await;
    watcher.close().await;
    let snapshot = match reply {
        Ok(Reply::Subscribed(snapshot)) => snapshot,
        Ok(other) => return Err(CliError::unexpected(&other)),
        Err(e) => return Err(CliError::Failed(format!("race {id}: {e}"))),
    };
    let finish = snapshot.course.last().map(|p| Position {
        lat_e7: p.lat_e7,
        lon_e7: p.lon_e7,
    });
    if let (Some(finish), Some(end)) = (finish, ride.finish()) {
        let apart = finish.distance_m(end);
        if apart > FINISH_TOLERANCE_M {
            return Err(CliError::Failed(format!(
                "the ride in {} ends {apart:.0} m from the finish of race {id}, so its racers \
                 could never cross the finish line; replay a ride that ends at the race's finish \
                 (such as its course file)",
                gpx.display()
            )));
        }
    }
    Ok(())
}
