//! `peloton sim patrol`: officers and citizens moving around a city over real sockets, the
//! demo and the load generator of the patrol domain.
//!
//! Officers go on duty and walk at random inside the box. Each citizen walks towards an
//! officer (the simulator knows where its officers are; the server only tells citizens a
//! coarse position), asks to connect once within a few metres, and picks another officer
//! once connected, thanking the officer with a direct message. Officers accept every
//! request they are pushed, retrying while the server says they are still too far apart.
//! At the end it prints what every device heard.

use super::rng::SplitMix64;
use crate::auth::{claims_for, Role};
use crate::cli::keys::{server_keys, ServerFiles};
use crate::cli::{output, CliError};
use crate::error::ErrorCode;
use crate::geo::Position;
use crate::net::client::{Client, ClientError};
use crate::net::codec::Codec;
use crate::net::protocol::{ImportBatch, OfficerRow, Push, Reply, Request};
use crate::time::{now_ms, parse_duration};
use clap::Args;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Walking pace of officers, m/s.
const OFFICER_SPEED_MPS: f64 = 0.7;
/// Walking pace of citizens, m/s.
const CITIZEN_SPEED_MPS: f64 = 3.0;
/// A citizen asks to connect once this close to its officer, metres.
const ASK_WITHIN_M: f64 = 25.0;
/// Citizens start this far (at most) from their first officer, metres.
const START_SPREAD_M: f64 = 200.0;

/// `peloton sim patrol`.
#[derive(Debug, Args)]
pub struct SimPatrolArgs {
    /// Server address, ws://HOST:PORT.
    #[arg(long, env = "PELOTON_SERVER", default_value = "ws://127.0.0.1:7400")]
    pub server: String,
    /// Admin token: it imports the simulated officers' accounts.
    #[arg(long, env = "PELOTON_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// On-duty officers to simulate.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub officers: u32,
    /// Citizens to simulate.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub citizens: u32,
    /// The city: MIN_LON,MIN_LAT,MAX_LON,MAX_LAT in degrees.
    #[arg(long, allow_hyphen_values = true)]
    pub bbox: String,
    /// How long to run.
    #[arg(long, default_value = "60s")]
    pub duration: String,
    /// Seconds between two positions of one device.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Seed of the starting positions and walks.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where the server's secret is, to sign the devices' tokens.
    #[command(flatten)]
    pub files: ServerFiles,
    /// Print the summary as exactly one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// The city box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bbox {
    /// West edge, degrees.
    pub min_lon: f64,
    /// South edge.
    pub min_lat: f64,
    /// East edge.
    pub max_lon: f64,
    /// North edge.
    pub max_lat: f64,
}

impl Bbox {
    /// Parses `MIN_LON,MIN_LAT,MAX_LON,MAX_LAT`.
    pub fn parse(text: &str) -> Result<Bbox, String> {
        let parts: Vec<f64> = text
            .split(',')
            .map(|p| p.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("--bbox must be MIN_LON,MIN_LAT,MAX_LON,MAX_LAT, got `{text}`"))?;
        let [min_lon, min_lat, max_lon, max_lat] = parts[..] else {
            return Err(format!("--bbox needs 4 numbers, got {}", parts.len()));
        };
        Position::from_degrees(min_lat, min_lon).map_err(|e| format!("--bbox: {e}"))?;
        Position::from_degrees(max_lat, max_lon).map_err(|e| format!("--bbox: {e}"))?;
        if min_lon >= max_lon || min_lat >= max_lat {
            return Err("--bbox: the minimum must be below the maximum on both axes".into());
        }
        let diagonal = Position::from_degrees(min_lat, min_lon)
            .map_err(|e| format!("--bbox: {e}"))?
            .distance_m(
                Position::from_degrees(max_lat, max_lon).map_err(|e| format!("--bbox: {e}"))?,
            );
        if diagonal > 200_000.0 {
            return Err(format!(
                "--bbox spans {:.0} km; a city is at most 200 km across",
                diagonal / 1000.0
            ));
        }
        Ok(Bbox {
            min_lon,
            min_lat,
            max_lon,
            max_lat,
        })
    }

    fn random_point(&self, rng: &mut SplitMix64) -> Position {
        let lat = self.min_lat + rng.unit() * (self.max_lat - self.min_lat);
        let lon = self.min_lon + rng.unit() * (self.max_lon - self.min_lon);
        Position::from_degrees(lat, lon).unwrap_or(Position {
            lat_e7: 0,
            lon_e7: 0,
        })
    }

    fn clamp(&self, p: Position) -> Position {
        Position::from_degrees(
            p.lat().clamp(self.min_lat, self.max_lat),
            p.lon().clamp(self.min_lon, self.max_lon),
        )
        .unwrap_or(p)
    }
}

/// `from` moved up to `step_m` towards `to` (arriving if closer).
pub fn step_towards(from: Position, to: Position, step_m: f64) -> Position {
    let (east, north) = from.offset_m(to);
    let distance = (east * east + north * north).sqrt();
    if distance <= step_m || distance == 0.0 {
        return to;
    }
    from.moved_m(east / distance * step_m, north / distance * step_m)
}

/// Where every simulated officer is (e7 lat/lon packed), shared with the citizens.
struct Positions(Vec<(AtomicI64, AtomicI64)>);

impl Positions {
    fn get(&self, i: usize) -> Option<Position> {
        let (lat, lon) = self.0.get(i)?;
        Some(Position {
            lat_e7: i32::try_from(lat.load(Ordering::Relaxed)).ok()?,
            lon_e7: i32::try_from(lon.load(Ordering::Relaxed)).ok()?,
        })
    }

    fn set(&self, i: usize, p: Position) {
        if let Some((lat, lon)) = self.0.get(i) {
            lat.store(i64::from(p.lat_e7), Ordering::Relaxed);
            lon.store(i64::from(p.lon_e7), Ordering::Relaxed);
        }
    }
}

/// What all devices saw, counted.
#[derive(Debug, Default)]
struct Tally {
    positions: AtomicU64,
    nearby: AtomicU64,
    gone: AtomicU64,
    requests: AtomicU64,
    connections: AtomicU64,
    points: AtomicU64,
    too_far: AtomicU64,
    refused: AtomicU64,
    messages_sent: AtomicU64,
    messages_received: AtomicU64,
    errors: AtomicU64,
}

/// The summary printed at the end.
#[derive(Debug, Serialize)]
struct Summary {
    officers: u32,
    citizens: u32,
    seconds: f64,
    positions_sent: u64,
    positions_per_sec: f64,
    officer_nearby_events: u64,
    officer_gone_events: u64,
    connect_requests: u64,
    connections: u64,
    points_awarded: u64,
    accepts_too_far: u64,
    requests_refused: u64,
    messages_sent: u64,
    messages_received: u64,
    errors: u64,
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Runs `peloton sim patrol`.
pub async fn run(args: SimPatrolArgs) -> Result<(), CliError> {
    let bbox = Bbox::parse(&args.bbox).map_err(CliError::Usage)?;
    let duration =
        parse_duration(&args.duration).map_err(|e| CliError::Usage(format!("--duration: {e}")))?;
    if duration.is_zero() || duration > Duration::from_secs(24 * 3600) {
        return Err(CliError::Usage("--duration must be 1s..=24h".into()));
    }
    if !(args.interval.is_finite() && (0.05..=60.0).contains(&args.interval)) {
        return Err(CliError::Usage(
            "--interval must be 0.05..=60 seconds".into(),
        ));
    }
    let token = args
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            CliError::Usage("no token: pass --token or set PELOTON_TOKEN to an admin token".into())
        })?;
    let config = args.files.config()?;
    let keys = server_keys(&config)?;
    let mut admin = Client::connect(&args.server, token, Codec::Binary).await?;
    if admin.welcome().role != Role::Admin {
        return Err(CliError::Usage("--token must be an admin token".into()));
    }
    let officer_ids: Vec<String> = (0..args.officers)
        .map(|i| format!("sim-officer-{i}"))
        .collect();
    for chunk in officer_ids.chunks(crate::cli::patrol::IMPORT_BATCH_ROWS) {
        let rows = chunk
            .iter()
            .enumerate()
            .map(|(i, id)| OfficerRow {
                id: id.clone(),
                display_name: format!("Officer {id}"),
                precinct: format!("sim-precinct-{}", i % 4),
                email: None,
            })
            .collect();
        admin
            .request(Request::PatrolImport(ImportBatch::Officers(rows)))
            .await?;
    }
    admin.close().await;

    let mut rng = SplitMix64::new(args.seed);
    let positions = Arc::new(Positions(
        (0..args.officers)
            .map(|_| {
                let p = bbox.random_point(&mut rng);
                (
                    AtomicI64::new(i64::from(p.lat_e7)),
                    AtomicI64::new(i64::from(p.lon_e7)),
                )
            })
            .collect(),
    ));
    let tally = Arc::new(Tally::default());
    let ttl = (duration.as_secs() + 3600).min(config.auth.max_ttl_secs);
    let duty_minutes = u32::try_from(duration.as_secs() / 60 + 2)
        .unwrap_or(u32::MAX)
        .min(config.patrol.duty.max_minutes);
    let interval = Duration::from_secs_f64(args.interval);
    let started = Instant::now();
    let deadline = started + duration;
    let now_s = now_ms() / 1000;
    // Each device signs in as its own user and walks with its own seed.
    let device = |role: Role, id: &str, seed: u64| -> Result<Device, CliError> {
        let token = keys
            .issue(&claims_for(role, id, None, now_s, ttl))
            .map_err(|e| CliError::Failed(e.to_string()))?;
        Ok(Device {
            server: args.server.clone(),
            token,
            tally: tally.clone(),
            positions: positions.clone(),
            bbox,
            interval,
            deadline,
            rng: SplitMix64::new(args.seed ^ seed.wrapping_mul(0x9E37_79B9)),
        })
    };
    let mut devices = JoinSet::new();
    for (i, id) in officer_ids.iter().enumerate() {
        devices.spawn(device(Role::Officer, id, i as u64 + 1)?.officer(i, duty_minutes));
    }
    for c in 0..args.citizens as usize {
        let id = format!("sim-citizen-{c}");
        let seed = (1 << 32) + c as u64;
        devices.spawn(device(Role::Citizen, &id, seed)?.citizen(c, args.officers as usize));
    }
    let mut failed = 0u32;
    while let Some(outcome) = devices.join_next().await {
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failed += 1;
                if failed <= 5 {
                    eprintln!("device failed: {e}");
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("device task failed: {e}");
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let summary = Summary {
        officers: args.officers,
        citizens: args.citizens,
        seconds,
        positions_sent: get(&tally.positions),
        positions_per_sec: get(&tally.positions) as f64 / seconds.max(0.001),
        officer_nearby_events: get(&tally.nearby),
        officer_gone_events: get(&tally.gone),
        connect_requests: get(&tally.requests),
        connections: get(&tally.connections),
        points_awarded: get(&tally.points),
        accepts_too_far: get(&tally.too_far),
        requests_refused: get(&tally.refused),
        messages_sent: get(&tally.messages_sent),
        messages_received: get(&tally.messages_received),
        errors: get(&tally.errors),
    };
    if args.json {
        output::json(&summary)?;
    } else {
        println!(
            "{} officers and {} citizens for {:.1} s: {} positions ({:.0}/s), {} officer-nearby and \
             {} officer-gone events, {} connect requests, {} connections, {} points awarded, \
             {} accepts too far, {} requests refused, {} thank-you messages sent and {} \
             received, {} errors",
            summary.officers,
            summary.citizens,
            summary.seconds,
            summary.positions_sent,
            summary.positions_per_sec,
            summary.officer_nearby_events,
            summary.officer_gone_events,
            summary.connect_requests,
            summary.connections,
            summary.points_awarded,
            summary.accepts_too_far,
            summary.requests_refused,
            summary.messages_sent,
            summary.messages_received,
            summary.errors
        );
    }
    if failed > 0 {
        return Err(CliError::Failed(format!(
            "{failed} device(s) could not run"
        )));
    }
    Ok(())
}

/// One simulated device's connection and walk.
struct Device {
    server: String,
    token: String,
    tally: Arc<Tally>,
    positions: Arc<Positions>,
    bbox: Bbox,
    interval: Duration,
    deadline: Instant,
    rng: SplitMix64,
}

impl Device {
    async fn position(&self, client: &mut Client, at: Position) -> Result<(), ClientError> {
        client
            .request(Request::PatrolPosition {
                lat_e7: at.lat_e7,
                lon_e7: at.lon_e7,
                accuracy_m: Some(5.0),
            })
            .await?;
        count(&self.tally.positions);
        Ok(())
    }

    /// Pushes already received, without waiting.
    async fn drain(client: &mut Client) -> Vec<Push> {
        let mut pushes = Vec::new();
        while let Ok(push) = client.next_push(Duration::ZERO).await {
            pushes.push(push);
        }
        pushes
    }

    async fn officer(mut self, index: usize, minutes: u32) -> Result<(), ClientError> {
        let mut client = Client::connect(&self.server, &self.token, Codec::Binary).await?;
        client
            .request(Request::DutyStart {
                minutes: Some(minutes.max(1)),
            })
            .await?;
        let mut heading = self.rng.unit() * std::f64::consts::TAU;
        let mut to_accept: VecDeque<String> = VecDeque::new();
        while Instant::now() < self.deadline {
            let here = self.positions.get(index).unwrap_or(Position {
                lat_e7: 0,
                lon_e7: 0,
            });
            heading += (self.rng.unit() - 0.5) * 0.6;
            let step = OFFICER_SPEED_MPS * self.interval.as_secs_f64();
            let next = self
                .bbox
                .clamp(here.moved_m(heading.sin() * step, heading.cos() * step));
            self.positions.set(index, next);
            if let Err(e) = self.position(&mut client, next).await {
                count(&self.tally.errors);
                return Err(e);
            }
            for push in Self::drain(&mut client).await {
                match push {
                    Push::ConnectRequested { request_id, .. } => to_accept.push_back(request_id),
                    Push::ConnectionEstablished(c) => count_points(&self.tally, c.points),
                    Push::DirectMessage(_) => count(&self.tally.messages_received),
                    _ => {}
                }
            }
            let mut retry = VecDeque::new();
            while let Some(request_id) = to_accept.pop_front() {
                match client
                    .request(Request::ConnectAnswer {
                        request_id: request_id.clone(),
                        accept: true,
                    })
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.code() == Some(ErrorCode::TooFar) => {
                        count(&self.tally.too_far);
                        retry.push_back(request_id);
                    }
                    // Expired or answered already: nothing to retry.
                    Err(e) if e.code().is_some() => {}
                    Err(e) => return Err(e),
                }
            }
            to_accept = retry;
            tokio::time::sleep(self.interval).await;
        }
        let _ = client.request(Request::DutyEnd).await;
        client.close().await;
        Ok(())
    }

    async fn citizen(mut self, index: usize, officers: usize) -> Result<(), ClientError> {
        let mut client = Client::connect(&self.server, &self.token, Codec::Binary).await?;
        let mut target = index % officers.max(1);
        let start = self.positions.get(target).unwrap_or(Position {
            lat_e7: 0,
            lon_e7: 0,
        });
        let angle = self.rng.unit() * std::f64::consts::TAU;
        let spread = START_SPREAD_M * self.rng.unit();
        let mut here = self
            .bbox
            .clamp(start.moved_m(angle.sin() * spread, angle.cos() * spread));
        let mut asked = false;
        while Instant::now() < self.deadline {
            let officer_at = self.positions.get(target).unwrap_or(here);
            here = step_towards(
                here,
                officer_at,
                CITIZEN_SPEED_MPS * self.interval.as_secs_f64(),
            );
            if let Err(e) = self.position(&mut client, here).await {
                count(&self.tally.errors);
                return Err(e);
            }
            let mut thanks = Vec::new();
            for push in Self::drain(&mut client).await {
                match push {
                    Push::OfficerNearby(_) => count(&self.tally.nearby),
                    Push::OfficerGone { .. } => count(&self.tally.gone),
                    Push::ConnectionEstablished(c) => {
                        count(&self.tally.connections);
                        count_points(&self.tally, c.points);
                        thanks.push(c);
                        target = (target + 1 + index) % officers.max(1);
                        asked = false;
                    }
                    Push::ConnectClosed { .. } => asked = false,
                    _ => {}
                }
            }
            // A connected citizen thanks the officer: the direct-message path under load.
            for c in thanks {
                let sent = client
                    .request(Request::MessageSend {
                        request_id: format!("thanks-{}", c.connection_id),
                        to: c.officer_id,
                        text: "Thank you!".into(),
                    })
                    .await;
                match sent {
                    Ok(_) => count(&self.tally.messages_sent),
                    Err(e) if e.code().is_some() => count(&self.tally.errors),
                    Err(e) => return Err(e),
                }
            }
            if !asked && here.distance_m(officer_at) <= ASK_WITHIN_M {
                match client
                    .request(Request::ConnectRequest {
                        officer_id: format!("sim-officer-{target}"),
                    })
                    .await
                {
                    Ok(Reply::ConnectPending { .. }) => {
                        count(&self.tally.requests);
                        asked = true;
                    }
                    Ok(_) => {}
                    // The officer just went off duty or moved away: the server said why.
                    Err(e) if e.code().is_some() => count(&self.tally.refused),
                    Err(e) => return Err(e),
                }
            }
            tokio::time::sleep(self.interval).await;
        }
        client.close().await;
        Ok(())
    }
}

fn count_points(tally: &Tally, points: u64) {
    tally.points.fetch_add(points, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bbox_is_validated() {
        assert!(Bbox::parse("2.25,48.81,2.42,48.90").is_ok());
        assert!(Bbox::parse("2.42,48.81,2.25,48.90").is_err());
        assert!(Bbox::parse("1,2,3").is_err());
        assert!(Bbox::parse("a,b,c,d").is_err());
        assert!(Bbox::parse("0,0,10,10").is_err(), "far larger than a city");
        assert!(Bbox::parse("179.9,-10,180.5,-9.9").is_err());
    }

    #[test]
    fn a_walker_arrives_and_never_overshoots() {
        let a = Position::from_degrees(48.85, 2.35).unwrap();
        let b = a.moved_m(100.0, 0.0);
        let mut here = a;
        for _ in 0..40 {
            let before = here.distance_m(b);
            here = step_towards(here, b, 3.0);
            assert!(here.distance_m(b) <= before);
        }
        assert_eq!(here, b);
    }

    #[test]
    fn the_walk_is_reproducible_from_the_seed() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..10 {
            let x = a.unit();
            assert_eq!(x, b.unit());
            assert!((0.0..1.0).contains(&x));
        }
    }
}
