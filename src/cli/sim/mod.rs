//! `peloton sim …`: the simulators, the demo and the load generators. `peloton sim race`
//! replays a recorded ride as N racers of a race, each streaming its GPS fixes over its own
//! WebSocket as a phone would (the load generator for the tracking benchmarks);
//! `peloton sim patrol` ([`patrol`]) walks officers and citizens around a city.
//!
//! How it fits: it is a client like the admin CLI ([`super::admin`]): it connects with
//! `--server` and an admin `--token`, speaks the binary protocol through
//! [`crate::net::client`], registers its racers with `racer_register` and starts a scheduled
//! race with `race_start`, then watches `race_standings` until every simulated racer expected
//! to finish has finished. The one thing protocol v1 does not hand out is a racer token per
//! bib, and it should not: those are signed here with the server's own secret, found exactly as
//! `peloton admin token issue` finds it (`--data`, `--config`, `PELOTON_DATA`,
//! `PELOTON_AUTH_SECRET`). So **the simulator must run where it can read the server's
//! secret**: on the server's machine, or with the secret in `PELOTON_AUTH_SECRET`.
//!
//! The pure parts are plain functions tested in their files: reading the ride with its
//! recorded times ([`ride::Ride`]), the seeded start offset, pace and GPS noise of each racer
//! ([`plan::plan_racers`]), device timestamps ([`track::race_ms`]) and the run-out past the
//! finish line. What can go wrong on a ride (dropouts, detours, cuts, abandons, pauses,
//! no-shows) is planned and applied to a racer's own copy of the ride in [`faults`]; the run
//! then waits only for the racers expected to finish. The async parts (one tokio task per
//! racer, the monitor that prints progress) only schedule, send and count.
//!
//! The files, one concept each, from the pure leaves up:
//! [`rng`] (the seeded generator), [`ride`] (the recorded ride and its run-out), [`plan`]
//! (each racer's offset, pace and phone), [`track`] (one racer's fixes), [`faults`] (the bad
//! day), [`options`] (the flags and their checks); then the shell: `shared` (what the tasks
//! share), `racer` (one phone's task), `monitor` (standings, progress, the end), `race` (the
//! command from start to summary), `text` (how it words things). [`patrol`] is
//! `peloton sim patrol`.

pub mod faults;
mod monitor;
pub mod options;
pub mod patrol;
pub mod plan;
mod race;
mod racer;
pub mod ride;
pub mod rng;
mod shared;
mod text;
pub mod track;

use super::CliError;
use clap::Subcommand;
use options::SimRaceArgs;

/// `peloton sim …`.
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Replay a recorded ride as N racers of a race, each streaming fixes over its own socket;
    /// exits 0 once every simulated racer expected to finish has (`--abandons`, `--no-shows`
    /// and `--cuts` are not waited for). Signs its racers' tokens with the
    /// server's secret, so run it where it can read that secret (or set PELOTON_AUTH_SECRET).
    Race(SimRaceArgs),
    /// Move officers and citizens around a city over real sockets: officers go on duty,
    /// citizens walk up to them and ask to connect, officers accept; prints what happened
    /// and exits 0 after --duration. Imports its officers with the admin token and signs its
    /// devices' tokens with the server's secret.
    Patrol(patrol::SimPatrolArgs),
}

/// Runs `peloton sim …`.
pub async fn run(command: SimCommand) -> Result<(), CliError> {
    match command {
        SimCommand::Race(args) => race::race(args).await,
        SimCommand::Patrol(args) => patrol::run(args).await,
    }
}
