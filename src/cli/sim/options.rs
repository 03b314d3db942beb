//! The flags of `peloton sim race` (clap shapes) and what clap cannot check of them: ids,
//! the speedup, the bib range, durations, and whether there are enough racers for the faults
//! asked for.
//!
//! How it fits: [`super::SimCommand`] carries [`SimRaceArgs`]; the command
//! (`race`) turns them into `Options` before anything touches the server.

use super::faults::FaultOptions;
use crate::cli::keys::ServerFiles;
use crate::cli::CliError;
use crate::ids::validate_id;
use crate::time::parse_duration;
use clap::Args;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Default window of start offsets per racer: a rolling start, as in a gran fondo.
const SPREAD_PER_RACER_MS: i64 = 15_000;

/// `peloton sim race`.
#[derive(Debug, Args)]
pub struct SimRaceArgs {
    /// Server address, ws://HOST:PORT.
    #[arg(long, env = "PELOTON_SERVER", default_value = "ws://127.0.0.1:7400")]
    pub server: String,
    /// Admin token: it registers the simulated racers and starts a scheduled race.
    #[arg(long, env = "PELOTON_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The race: a scheduled one is started, a live one joined.
    #[arg(long)]
    pub race: String,
    /// The recorded ride to replay (GPX); its timestamps set the pace (8 m/s without them).
    /// It must end at the race's finish.
    #[arg(long)]
    pub gpx: PathBuf,
    /// How many racers to simulate.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub racers: u32,
    /// Race time per wall-clock time: 1 is real time, 60 a minute per second.
    #[arg(long, default_value_t = 1.0)]
    pub speedup: f64,
    /// Bib of the first simulated racer; the others follow.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=999_999))]
    pub first_bib: u32,
    /// Seed of the start offsets, paces and GPS noise: the same seed replays the same race.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Fixes per message (a phone streaming live sends 1). A racer behind schedule sends
    /// everything already due at once, so one socket never exceeds the server's rate limit.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub batch: u32,
    /// Report at the interval the server asks for (its `pace` pushes) instead of sending
    /// every recorded fix: the ride's fixes closer together than the interval are left out,
    /// as a phone that obeys would not take them.
    #[arg(long)]
    pub obey_pace: bool,
    /// Window the start offsets are drawn from, e.g. 0s for a mass start
    /// [default: 15s per racer].
    #[arg(long)]
    pub spread: Option<String>,
    /// Give up (exit 1) after this long.
    #[arg(long, default_value = "2h")]
    pub timeout: String,
    /// Where the server's secret is, to sign the racers' tokens.
    #[command(flatten)]
    pub files: ServerFiles,
    /// Print the final summary as exactly one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Racers whose phone loses its signal once (no fixes, then a jump ahead). Every fault
    /// below goes to its own seeded racers; each racer gets at most one.
    #[arg(long, default_value_t = 0, help_heading = "Bad day")]
    pub dropouts: u32,
    /// How long a dropout lasts, in seconds of race time.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=43_200), help_heading = "Bad day")]
    pub dropout_secs: u32,
    /// Racers who leave the course sideways once and come back.
    #[arg(long, default_value_t = 0, help_heading = "Bad day")]
    pub detours: u32,
    /// How far from the course a detour goes, in metres.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(10..=20_000), help_heading = "Bad day")]
    pub detour_m: u32,
    /// How long a detour lasts (out, alongside, back), in seconds of race time.
    #[arg(long, default_value_t = 180, value_parser = clap::value_parser!(u32).range(1..=43_200), help_heading = "Bad day")]
    pub detour_secs: u32,
    /// Racers who take a shortcut once: a straight line across a bend.
    #[arg(long, default_value_t = 0, help_heading = "Bad day")]
    pub cuts: u32,
    /// How much course a cut skips, in metres.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(100..=200_000), help_heading = "Bad day")]
    pub cut_m: u32,
    /// Racers who give up partway (DNF); the run does not wait for them.
    #[arg(long, default_value_t = 0, help_heading = "Bad day")]
    pub abandons: u32,
    /// Racers who stand still once, their phone still sending.
    #[arg(long, default_value_t = 0, help_heading = "Bad day")]
    pub pauses: u32,
    /// How long a pause lasts, in seconds of race time.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u32).range(1..=43_200), help_heading = "Bad day")]
    pub pause_secs: u32,
    /// Racers registered who never connect (DNS); the run does not wait for them.
    #[arg(long, default_value_t = 0, help_heading = "Bad day")]
    pub no_shows: u32,
}

/// Validated flags.
#[derive(Debug, Clone)]
pub(super) struct Options {
    /// Race time per wall-clock time.
    pub(super) speedup: f64,
    /// Window of start offsets, ms.
    pub(super) spread_ms: i64,
    /// How long the run may take.
    pub(super) timeout: Duration,
    /// What goes wrong, for how many racers.
    pub(super) faults: FaultOptions,
}

impl Options {
    /// Checks what clap cannot.
    pub(super) fn from_args(args: &SimRaceArgs) -> Result<Options, CliError> {
        validate_id("--race", &args.race).map_err(|r| CliError::Usage(r.message))?;
        if !args.speedup.is_finite() || args.speedup <= 0.0 {
            return Err(CliError::Usage(format!(
                "--speedup must be a number above 0, got {}",
                args.speedup
            )));
        }
        let last_bib = u64::from(args.first_bib) + u64::from(args.racers) - 1;
        if last_bib > 999_999 {
            return Err(CliError::Usage(format!(
                "bibs {}..={last_bib} go past 999999; lower --first-bib or --racers",
                args.first_bib
            )));
        }
        let spread_ms = match &args.spread {
            Some(text) => {
                let spread =
                    parse_duration(text).map_err(|e| CliError::Usage(format!("--spread: {e}")))?;
                i64::try_from(spread.as_millis())
                    .map_err(|_| CliError::Usage("--spread is too long".into()))?
            }
            None => i64::from(args.racers) * SPREAD_PER_RACER_MS,
        };
        let timeout = parse_duration(&args.timeout)
            .map_err(|e| CliError::Usage(format!("--timeout: {e}")))?;
        if timeout.is_zero() || Instant::now().checked_add(timeout).is_none() {
            return Err(CliError::Usage(format!(
                "--timeout must be positive and finite, got {}",
                args.timeout
            )));
        }
        let faults = FaultOptions {
            dropouts: args.dropouts,
            dropout_ms: i64::from(args.dropout_secs) * 1000,
            detours: args.detours,
            detour_m: f64::from(args.detour_m),
            detour_ms: i64::from(args.detour_secs) * 1000,
            cuts: args.cuts,
            cut_m: f64::from(args.cut_m),
            abandons: args.abandons,
            pauses: args.pauses,
            pause_ms: i64::from(args.pause_secs) * 1000,
            no_shows: args.no_shows,
        };
        // Checked here too (the plan checks it again) so a miscount fails before the ride
        // is read.
        if faults.faulty() > u64::from(args.racers) {
            return Err(CliError::Usage(format!(
                "{} racers with a fault (--dropouts, --detours, --cuts, --abandons, --pauses and \
                 --no-shows together) but only {} --racers; each racer gets at most one",
                faults.faulty(),
                args.racers
            )));
        }
        Ok(Options {
            speedup: args.speedup,
            spread_ms,
            timeout,
            faults,
        })
    }
}
