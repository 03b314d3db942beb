//! Command-line shapes (clap derive). Kept apart from the code that runs them so `--help`
//! is readable in one place.

use super::output::ReportFormat;
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
    /// Check backup files offline (the server need not run).
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Simulate racers against a running server: the demo and the load generator.
    #[command(subcommand)]
    Sim(super::sim::SimCommand),
    /// Cluster mode: what NATS holds of the cluster (no node need be up).
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

/// `peloton cluster …`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Nodes up, leases and their holders, journal streams with their replicas' lag.
    Status {
        /// A config file layered over the embedded defaults (its `[cluster]` is used).
        #[arg(long, env = "PELOTON_CONFIG")]
        config: Option<PathBuf>,
        /// Print exactly one JSON document.
        #[arg(long)]
        json: bool,
    },
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
    /// Where the server's secret is.
    #[command(flatten)]
    pub files: super::keys::ServerFiles,
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
    /// Each racer's invitation: their personal racer-page link (`/ride#token=…`) and, when
    /// bound, their tracking app's settings; printed, and mailed with `--send`.
    Invite {
        /// Race id.
        id: String,
        /// Only this racer.
        #[arg(long)]
        bib: Option<u32>,
        /// How long the personal links work, e.g. 12h, 3d (at most auth.max_ttl_secs).
        #[arg(long, default_value = "3d")]
        expires: String,
        /// Mail each invitation to the racer's address (once: a second run sends nothing).
        #[arg(long)]
        send: bool,
    },
    /// Tracking apps' device ids (Traccar Client, OsmAnd, OwnTracks): the id an app sends is
    /// the racer's credential for those apps, so keep it private to the racer.
    #[command(subcommand)]
    Devices(DevicesCommand),
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
        /// The id the racer's tracking app sends (Traccar Client, OsmAnd, OwnTracks), bound
        /// once the racer is registered; see `race devices`.
        #[arg(long, conflicts_with = "new_device_id")]
        device_id: Option<String>,
        /// Bind a generated, unguessable device id for the racer's tracking app.
        #[arg(long)]
        new_device_id: bool,
    },
    /// Register racers from a CSV file with a header row: bib,name[,team][,email][,device_id].
    /// All or nothing: any bad line is reported and nothing is registered. A `device_id`
    /// cell binds that id to the racer's tracking app once registered.
    Import {
        /// Race id.
        race: String,
        /// The CSV file.
        file: PathBuf,
        /// Bind a generated device id for every racer whose row has none.
        #[arg(long)]
        new_device_ids: bool,
    },
    /// List a race's racers.
    List {
        /// Race id.
        race: String,
    },
}

/// `peloton admin race devices …`.
#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// Bind a device id to a racer (replacing their earlier one); prints the id to give them.
    Bind {
        /// Race id.
        race: String,
        /// The racer's bib.
        #[arg(long)]
        bib: u32,
        /// The id the racer's app sends (6..=64 printable characters); leave it out for a
        /// generated, unguessable one, which the racer types into the app.
        #[arg(long)]
        device_id: Option<String>,
    },
    /// Stop accepting a racer's device id at once (a lost or swapped phone).
    Revoke {
        /// Race id.
        race: String,
        /// The racer's bib.
        #[arg(long)]
        bib: u32,
    },
    /// List a race's device ids by bib.
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

/// `peloton backup …`: backup files checked where they lie (a copy on another disk, a
/// download from cold storage) before anyone has to restore from them.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Read a backup file through and check its header, every record, the record count and
    /// the CRC; exits non-zero, naming the defect, when it is not a good backup.
    Verify {
        /// The backup file.
        file: PathBuf,
        /// Print exactly one JSON document.
        #[arg(long)]
        json: bool,
    },
}
