//! Command-line shapes (clap derive). Kept apart from the code that runs them so `--help`
//! is readable in one place.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Peloton: live races, patrol proximity and durable mail over WebSockets.
#[derive(Debug, Parser)]
#[command(name = "peloton", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Administer a running server (and issue tokens offline).
    Admin(AdminArgs),
    /// Restore a backup file into an empty data folder (server stopped).
    Restore(RestoreArgs),
    /// Simulate racers against a running server: the demo and the load generator.
    #[command(subcommand)]
    Sim(SimCommand),
}

/// `peloton serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A config file layered over the embedded defaults.
    #[arg(long, env = "PELOTON_CONFIG")]
    pub config: Option<PathBuf>,
    /// Listen address, e.g. 127.0.0.1:0 for a free port (overrides server.listen).
    #[arg(long)]
    pub listen: Option<String>,
    /// Data folder (overrides server.data_dir).
    #[arg(long)]
    pub data: Option<PathBuf>,
}

/// `peloton admin`.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Server address, ws://HOST:PORT.
    #[arg(
        long,
        env = "PELOTON_SERVER",
        default_value = "ws://127.0.0.1:7400",
        global = true
    )]
    pub server: String,
    /// Admin token (see `peloton admin token issue`).
    #[arg(long, env = "PELOTON_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Print exactly one JSON document instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// The admin command.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// Admin commands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Signed tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Races.
    #[command(subcommand)]
    Race(RaceCommand),
    /// Download a consistent backup of the running server.
    Backup {
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Mail jobs: send, status, lists, failed log, dead letters, re-drive.
    #[command(subcommand)]
    Mail(super::mail::MailCommand),
    /// Bulk-import officers, offers or charities from CSV or JSON.
    Import(super::patrol::ImportArgs),
    /// Voucher codes.
    #[command(subcommand)]
    Voucher(super::patrol::VoucherCommand),
    /// Patrol reports.
    #[command(subcommand)]
    Patrol(super::patrol::PatrolCommand),
}

/// `peloton admin token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Sign a token offline with the server's secret.
    Issue(TokenIssueArgs),
}

/// `peloton admin token issue`.
#[derive(Debug, Args)]
pub struct TokenIssueArgs {
    /// admin, racer, spectator, officer or citizen.
    #[arg(long)]
    pub role: String,
    /// Subject id: the user, device or admin.
    #[arg(long)]
    pub sub: String,
    /// Limit the token to one race.
    #[arg(long)]
    pub race: Option<String>,
    /// Lifetime, e.g. 1h, 15m, 7d.
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// The server's data folder (where the secret lives).
    #[arg(long, env = "PELOTON_DATA")]
    pub data: Option<PathBuf>,
    /// The server's config file, if it sets auth.secret_file.
    #[arg(long, env = "PELOTON_CONFIG")]
    pub config: Option<PathBuf>,
}

/// `peloton admin race …`.
#[derive(Debug, Subcommand)]
pub enum RaceCommand {
    /// Create a race from a GPX course.
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        /// GPX file with the course.
        #[arg(long)]
        course: PathBuf,
        /// Planned start, RFC 3339 (2026-12-01T09:00:00Z).
        #[arg(long)]
        start: String,
        /// Cut-off, RFC 3339.
        #[arg(long)]
        cutoff: Option<String>,
    },
    /// Edit a scheduled race.
    Update {
        /// Race id.
        id: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// New GPX course.
        #[arg(long)]
        course: Option<PathBuf>,
        /// New planned start.
        #[arg(long)]
        start: Option<String>,
        /// New cut-off.
        #[arg(long, conflicts_with = "clear_cutoff")]
        cutoff: Option<String>,
        /// Remove the cut-off.
        #[arg(long)]
        clear_cutoff: bool,
    },
    /// List races.
    List,
    /// Show one race.
    Show {
        /// Race id.
        id: String,
    },
    /// Open a scheduled race.
    Start {
        /// Race id.
        id: String,
    },
    /// Finish a live race.
    Finish {
        /// Race id.
        id: String,
    },
    /// Results: finishers by time, then DNF by distance, then DNS.
    Results {
        /// Race id.
        id: String,
        /// Output format (`--json` is the same as `--format json`).
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
    /// Live standings of a race.
    Standings {
        /// Race id.
        id: String,
    },
    /// A public, read-only link to watch a race: mints a spectator token for this race only.
    Share {
        /// Race id.
        id: String,
        /// How long the link works, e.g. 6h, 2d (at most auth.max_ttl_secs).
        #[arg(long, default_value = "6h")]
        expires: String,
    },
    /// Register and list racers.
    #[command(subcommand)]
    Racers(RacersCommand),
    /// Cancel a scheduled or live race.
    Cancel {
        /// Race id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Disqualify a racer of a live or finished race (a confirmed cut, any other breach):
    /// the results list them `dsq` with the reason.
    Dsq {
        /// Race id.
        race: String,
        /// The racer's bib.
        bib: u32,
        /// Why, published with the results (1..=500 characters).
        #[arg(long)]
        reason: String,
    },
    /// Withdraw a racer's disqualification: their tracked status returns.
    Reinstate {
        /// Race id.
        race: String,
        /// The racer's bib.
        bib: u32,
    },
}

/// How tabular reports print (`race results`, `patrol report`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// A table for people.
    Table,
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON array.
    Json,
}

/// `peloton admin race racers …`.
#[derive(Debug, Subcommand)]
pub enum RacersCommand {
    /// Register one racer.
    Add {
        /// Race id.
        race: String,
        /// Bib number.
        #[arg(long)]
        bib: u32,
        /// Name.
        #[arg(long)]
        name: String,
        /// Team.
        #[arg(long)]
        team: Option<String>,
        /// Contact email.
        #[arg(long)]
        email: Option<String>,
    },
    /// Register racers from a CSV file with a header row: bib,name[,team][,email].
    /// All or nothing: any bad line is reported and nothing is registered.
    Import {
        /// Race id.
        race: String,
        /// The CSV file.
        file: PathBuf,
    },
    /// List a race's racers.
    List {
        /// Race id.
        race: String,
    },
}

/// `peloton restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file.
    pub file: PathBuf,
    /// The data folder to restore into (must not hold a database).
    #[arg(long, env = "PELOTON_DATA")]
    pub data: PathBuf,
    /// Replace an existing database in the data folder.
    #[arg(long)]
    pub force: bool,
    /// Print exactly one JSON document.
    #[arg(long)]
    pub json: bool,
}

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
    Patrol(super::sim_patrol::SimPatrolArgs),
}

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
    /// Window the start offsets are drawn from, e.g. 0s for a mass start
    /// [default: 15s per racer].
    #[arg(long)]
    pub spread: Option<String>,
    /// Give up (exit 1) after this long.
    #[arg(long, default_value = "2h")]
    pub timeout: String,
    /// The server's data folder (where the signing secret lives).
    #[arg(long, env = "PELOTON_DATA")]
    pub data: Option<PathBuf>,
    /// The server's config file, if it sets auth.secret_file.
    #[arg(long, env = "PELOTON_CONFIG")]
    pub config: Option<PathBuf>,
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
