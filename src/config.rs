//! Configuration: the embedded `config.toml` defaults, an optional file on top, then
//! `PELOTON_*` environment variables, then command-line flags.
//!
//! Loading works on a TOML table so every layer is merged the same way and every error can
//! name the exact key (`ws.max_frame_bytes`). The typed [`Config`] is only built once the
//! merged table is complete, then checked by [`Config::validate`].

use crate::actors::race::state::StartMode;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The defaults, compiled in so the binary runs with no file beside it.
pub const DEFAULT_CONFIG: &str = include_str!("../config.toml");

/// A configuration problem, always naming the key (or file) at fault.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

/// Everything the server can be told. Mirrors `config.toml` section by section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to listen and keep data.
    pub server: ServerConfig,
    /// WebSocket limits, per socket.
    pub ws: WsConfig,
    /// Token signing and checking.
    pub auth: AuthConfig,
    /// Journal, snapshots and backups.
    pub persist: PersistConfig,
    /// Actor restarts and call timeouts.
    pub supervision: SupervisionConfig,
    /// Race validation limits.
    pub race: RaceConfig,
    /// How racers' GPS fixes are judged.
    pub tracking: TrackingConfig,
    /// The spectator web page.
    pub web: WebConfig,
    /// Logging.
    pub log: LogConfig,
    /// Mail jobs: retries, breaker, transports.
    pub mail: MailConfig,
    /// Patrol: duty windows, proximity, connections, points, messages.
    pub patrol: PatrolConfig,
}

/// `[patrol]`: officers on duty, citizens near them, and what a connection is worth.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatrolConfig {
    /// H3 resolution of the proximity index (0..=15); cells a few times smaller than the
    /// nearby radius keep lookups to a few cells.
    pub h3_resolution: u8,
    /// A citizen is told about on-duty officers within this many metres.
    pub nearby_radius_m: f64,
    /// Largest radius an N-nearest query searches, metres.
    pub nearest_max_radius_m: f64,
    /// Most officers one N-nearest query returns.
    pub nearest_max_count: u32,
    /// H3 resolution an officer's position is coarsened to before a citizen sees it.
    pub privacy_resolution: u8,
    /// Distances shown to citizens are rounded to this many metres.
    pub distance_step_m: f64,
    /// Duty window when the officer does not ask for one, minutes.
    pub duty_default_minutes: u32,
    /// Longest duty window, minutes.
    pub duty_max_minutes: u32,
    /// A connect request not answered within this many seconds expires.
    pub connect_timeout_secs: u64,
    /// An accepted request becomes a connection only if the two are this close, metres.
    pub in_person_m: f64,
    /// A position whose reported accuracy is worse than this many metres is refused.
    pub max_accuracy_m: f64,
    /// Points the officer earns for a connection.
    pub officer_points: u64,
    /// Points the citizen earns for a connection.
    pub citizen_points: u64,
    /// Most points one user may be awarded per UTC day.
    pub daily_points_cap: u64,
    /// Longest direct message, characters.
    pub max_message_chars: usize,
}

/// `[server]`: the listening socket and the data folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `ip:port` to accept HTTP and WebSocket connections on; port 0 takes a free port.
    pub listen: String,
    /// Folder for sled, the signing secret and backups.
    pub data_dir: PathBuf,
    /// Time a graceful shutdown waits for sockets to close.
    pub shutdown_grace_ms: u64,
    /// Longest time to read an HTTP request head.
    pub header_read_timeout_ms: u64,
}

/// `[ws]`: per-socket buffers and limits; small by default so sockets stay cheap.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsConfig {
    /// tokio-tungstenite read buffer per socket.
    pub read_buffer_bytes: usize,
    /// Bytes buffered before a write reaches the socket.
    pub write_buffer_bytes: usize,
    /// Outgoing bytes one socket may hold before it is treated as stuck.
    pub max_write_buffer_bytes: usize,
    /// Largest incoming frame.
    pub max_frame_bytes: usize,
    /// Largest incoming message for every role but admin.
    pub max_message_bytes: usize,
    /// Largest incoming message for admins (GPX uploads).
    pub admin_max_message_bytes: usize,
    /// Capacity of one socket's outbound queue, in frames.
    pub outbound_queue: usize,
    /// Sustained messages per second per socket.
    pub rate_limit_per_sec: u32,
    /// Burst allowance above the sustained rate.
    pub rate_limit_burst: u32,
    /// Rate-limited messages within one `flood_window_ms` that close the socket with 1008:
    /// a client persistently above the limit goes, one that overshoots briefly stays.
    pub flood_close_after: u32,
    /// The window over which refusals are counted; a refused message is answered with
    /// `rate_limited` at most once per window, the rest are dropped silently.
    pub flood_window_ms: u64,
    /// A socket that neither sent anything nor was sent anything for this long is closed
    /// with 1001, so abandoned sockets do not hold descriptors forever.
    pub idle_timeout_ms: u64,
    /// Grace after token expiry before the socket is closed.
    pub token_expiry_grace_ms: u64,
    /// A peer that does not accept our bytes for this long is disconnected.
    pub write_timeout_ms: u64,
    /// A spectator whose every update was skipped for this long is closed (4008).
    pub slow_consumer_close_ms: u64,
    /// Sockets all non-admin clients share, so the server cannot run out of descriptors.
    pub max_sockets: usize,
    /// Sockets beyond `max_sockets` only admins may open, so operators always get in.
    pub admin_reserve_sockets: usize,
    /// Sockets one identity (role, race scope, subject) may hold, for racers, officers and
    /// citizens: one stolen or buggy token cannot take the server.
    pub max_sockets_per_subject: usize,
    /// Upgrade attempts per client address per minute (admins excepted).
    pub max_upgrades_per_addr_per_min: u32,
    /// Whether loopback clients skip the per-address limits (a local reverse proxy or the
    /// load generator would otherwise share one allowance).
    pub addr_limits_exempt_loopback: bool,
}

/// `[auth]`: where the signing secret lives and how tokens are checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Secret file; empty means `<data_dir>/secret.key`.
    pub secret_file: String,
    /// Clock skew tolerated on expiry.
    pub leeway_secs: u64,
    /// Longest token lifetime the CLI will issue.
    pub max_ttl_secs: u64,
}

/// `[persist]`: group commit, snapshots and backups.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistConfig {
    /// Most writes committed by one flush.
    pub group_commit_max_batch: usize,
    /// Events between snapshots of one actor.
    pub snapshot_every: u64,
    /// Hours between scheduled backups (0 = off).
    pub backup_every_hours: u64,
    /// Scheduled backups kept.
    pub backup_keep: usize,
    /// Scheduled backup folder, relative to the data folder unless absolute.
    pub backup_dir: PathBuf,
}

/// `[supervision]`: how hard supervisors try to keep actors alive.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisionConfig {
    /// Restarts allowed per actor per window.
    pub restart_budget: u32,
    /// The window for the restart budget.
    pub restart_window_secs: u64,
    /// How long the API waits for an actor.
    pub call_timeout_ms: u64,
}

/// `[race]`: limits on what an admin may create.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaceConfig {
    /// Longest race name.
    pub max_name_chars: usize,
    /// Most course points.
    pub max_course_points: usize,
    /// Most racers per race.
    pub max_racers: usize,
    /// Milliseconds between spectator updates.
    pub tick_ms: u64,
    /// Bytes of recent updates kept per watched race for reconnecting spectators.
    pub resume_buffer_bytes: usize,
    /// Whether scheduled races go live by themselves at their start or wait for the gun;
    /// read through `start_mode()` so a misspelling names the key.
    #[serde(deserialize_with = "start_mode")]
    pub start_mode: StartMode,
}

/// Reads `race.start_mode` as its typed mode; an unknown spelling is an error naming the key
/// and the accepted values, like every other configuration error.
fn start_mode<'de, D: serde::Deserializer<'de>>(value: D) -> Result<StartMode, D::Error> {
    let text = String::deserialize(value)?;
    StartMode::parse(&text).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "race.start_mode must be \"auto\" or \"gun\", got `{text}`"
        ))
    })
}

/// `[tracking]`: rules for GPS fixes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingConfig {
    /// Fixes less accurate than this (metres) do not move a racer.
    pub max_accuracy_m: f64,
    /// Faster than this (m/s) between two fixes is a GPS spike.
    pub max_speed_mps: f64,
    /// Farther than this from the course (metres) is off the course.
    pub off_course_m: f64,
    /// Off the course this long (ms) raises the off-course flag.
    pub off_course_after_ms: i64,
    /// How far behind its last progress a racer may be placed (metres).
    pub window_behind_m: f64,
    /// Least distance ahead searched for the next position (metres).
    pub min_window_ahead_m: f64,
    /// Half the finish line's width (metres).
    pub finish_half_width_m: f64,
    /// Fastest sustained average along the course (m/s); more is a suspected course cut.
    pub max_course_speed_mps: f64,
    /// Progress beyond that speed by less than this (metres) is noise, not a cut.
    pub cut_tolerance_m: f64,
    /// Back on the course after a spell seen off it, farther than this many times the
    /// racer's own pace allows: a shortcut.
    pub cut_pace_factor: f64,
    /// What a suspected cut does: "flag" (credit and flag) or "hold" (credit nothing past
    /// the cut until the racer is back behind its end).
    pub cut_rule: String,
    /// Most fixes in one batch from a device.
    pub max_fixes_per_batch: usize,
    /// How far ahead of the server's clock a client-supplied time (a fix's `at_ms`, a mail's
    /// `sent_at_ms`) may be, ms; later is `bad_time`, since one far-future fix would make
    /// every later real fix of its racer stale.
    pub max_future_skew_ms: u64,
    /// How long before a race's start (planned or gun, the earlier) a fix may be dated, ms;
    /// earlier is `bad_time`, since it cannot belong to the race.
    pub max_fix_age_before_start_ms: u64,
}

/// `[web]`: the spectator web page served at `/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Whether anonymous visitors get a guest spectator token (else share links only).
    pub public_races: bool,
    /// Lifetime of a guest token, seconds.
    pub guest_token_ttl_secs: u64,
    /// Guest tokens one client address may get per minute, so the open endpoint cannot
    /// mint tokens without bound.
    pub guest_tokens_per_addr_per_min: u32,
}

/// `[log]`: the default tracing filter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing `EnvFilter` directive; `RUST_LOG` wins when set.
    pub filter: String,
}

/// `[mail]`: mission control's retry policy, circuit breakers and transports.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    /// Transport new jobs use (`smtp` or `http`).
    pub transport: String,
    /// The From address of every mail.
    pub from: String,
    /// Right-hand side of every Message-ID.
    pub message_id_domain: String,
    /// Attempts before the dead letters.
    pub max_attempts: u32,
    /// First retry's upper bound.
    pub backoff_base_ms: u64,
    /// Growth of the bound per failure.
    pub backoff_factor: f64,
    /// Longest wait between attempts.
    pub backoff_cap_ms: u64,
    /// How long envelopes are remembered for deduplication.
    pub idempotency_retention_secs: u64,
    /// Failures in a row that open a breaker.
    pub breaker_consecutive_failures: u32,
    /// Failure share in the window that opens a breaker.
    pub breaker_failure_rate: f64,
    /// Attempts in the window before the rate counts.
    pub breaker_min_calls: u32,
    /// The breaker's sliding window.
    pub breaker_window_ms: u64,
    /// How long an open breaker refuses attempts.
    pub breaker_open_ms: u64,
    /// Probes a half-open breaker lets through.
    pub breaker_half_open_probes: u32,
    /// SMTP server host.
    pub smtp_host: String,
    /// SMTP server port.
    pub smtp_port: u16,
    /// `none`, `starttls` or `tls`.
    pub smtp_tls: String,
    /// Pooled SMTP connections.
    pub smtp_pool_max: u32,
    /// SMTP connect (and per-command) timeout.
    pub smtp_connect_timeout_ms: u64,
    /// SMTP whole-send timeout.
    pub smtp_total_timeout_ms: u64,
    /// SMTP sends in flight.
    pub smtp_concurrency: u32,
    /// The HTTP mail API endpoint (http://host:port/path).
    pub http_url: String,
    /// HTTP connect timeout.
    pub http_connect_timeout_ms: u64,
    /// HTTP whole-request timeout.
    pub http_total_timeout_ms: u64,
    /// HTTP requests in flight.
    pub http_concurrency: u32,
}

/// Command-line values that beat every other layer.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--data`.
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// The embedded defaults alone.
    pub fn defaults() -> Result<Config, ConfigError> {
        Self::from_table(parse_table(DEFAULT_CONFIG, "embedded config.toml")?)
    }

    /// Loads defaults, then `file`, then the process environment, then `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, &vars, overrides)
    }

    /// [`Config::load`] with an explicit environment, so tests need not touch the process's.
    pub fn load_from(
        file: Option<&Path>,
        env: &[(String, String)],
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut table = parse_table(DEFAULT_CONFIG, "embedded config.toml")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
            let layer = parse_table(&text, &path.display().to_string())?;
            merge_layer(&mut table, layer, &path.display().to_string())?;
        }
        apply_env(&mut table, env)?;
        if let Some(listen) = &overrides.listen {
            set_key(
                &mut table,
                "server",
                "listen",
                toml::Value::String(listen.clone()),
            );
        }
        if let Some(dir) = &overrides.data_dir {
            set_key(
                &mut table,
                "server",
                "data_dir",
                toml::Value::String(dir.display().to_string()),
            );
        }
        Self::from_table(table)
    }

    fn from_table(table: toml::Table) -> Result<Config, ConfigError> {
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError(e.message().trim().to_owned()))?;
        config.validate()?;
        Ok(config)
    }

    /// Range checks serde cannot express; each error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn at_least(key: &str, value: u64, min: u64) -> Result<(), ConfigError> {
            if value < min {
                return Err(ConfigError(format!(
                    "{key} must be at least {min}, got {value}"
                )));
            }
            Ok(())
        }
        fn at_most(key: &str, value: u64, max: u64) -> Result<(), ConfigError> {
            if value > max {
                return Err(ConfigError(format!(
                    "{key} must be at most {max}, got {value}"
                )));
            }
            Ok(())
        }
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError(format!(
                "server.listen must be ip:port such as 127.0.0.1:7400, got `{}`",
                self.server.listen
            )));
        }
        if self.server.data_dir.as_os_str().is_empty() {
            return Err(ConfigError("server.data_dir must not be empty".into()));
        }
        let ws = &self.ws;
        at_least("ws.read_buffer_bytes", ws.read_buffer_bytes as u64, 512)?;
        at_least("ws.max_frame_bytes", ws.max_frame_bytes as u64, 128)?;
        at_least(
            "ws.max_message_bytes",
            ws.max_message_bytes as u64,
            ws.max_frame_bytes as u64,
        )?;
        at_least(
            "ws.admin_max_message_bytes",
            ws.admin_max_message_bytes as u64,
            ws.max_message_bytes as u64,
        )?;
        at_least(
            "ws.max_write_buffer_bytes",
            ws.max_write_buffer_bytes as u64,
            (ws.write_buffer_bytes + 1) as u64,
        )?;
        at_least("ws.outbound_queue", ws.outbound_queue as u64, 1)?;
        at_least("ws.rate_limit_per_sec", ws.rate_limit_per_sec.into(), 1)?;
        at_least("ws.rate_limit_burst", ws.rate_limit_burst.into(), 1)?;
        at_least("ws.flood_close_after", ws.flood_close_after.into(), 1)?;
        at_least("ws.flood_window_ms", ws.flood_window_ms, 1)?;
        at_least("ws.idle_timeout_ms", ws.idle_timeout_ms, 1)?;
        at_least("ws.write_timeout_ms", ws.write_timeout_ms, 1)?;
        at_least("ws.slow_consumer_close_ms", ws.slow_consumer_close_ms, 1)?;
        at_least("ws.max_sockets", ws.max_sockets as u64, 1)?;
        at_least(
            "ws.admin_reserve_sockets",
            ws.admin_reserve_sockets as u64,
            1,
        )?;
        at_least(
            "ws.max_sockets_per_subject",
            ws.max_sockets_per_subject as u64,
            1,
        )?;
        at_least(
            "ws.max_upgrades_per_addr_per_min",
            ws.max_upgrades_per_addr_per_min.into(),
            1,
        )?;
        if ws.admin_max_message_bytes > crate::net::codec::MAX_DECODE_BYTES {
            return Err(ConfigError(format!(
                "ws.admin_max_message_bytes must be at most {}, got {}",
                crate::net::codec::MAX_DECODE_BYTES,
                ws.admin_max_message_bytes
            )));
        }
        at_least("auth.max_ttl_secs", self.auth.max_ttl_secs, 1)?;
        at_least(
            "persist.group_commit_max_batch",
            self.persist.group_commit_max_batch as u64,
            1,
        )?;
        at_least("persist.snapshot_every", self.persist.snapshot_every, 1)?;
        at_least("persist.backup_keep", self.persist.backup_keep as u64, 1)?;
        at_least(
            "supervision.restart_window_secs",
            self.supervision.restart_window_secs,
            1,
        )?;
        at_least(
            "supervision.call_timeout_ms",
            self.supervision.call_timeout_ms,
            1,
        )?;
        at_least("race.max_name_chars", self.race.max_name_chars as u64, 1)?;
        at_least(
            "race.max_course_points",
            self.race.max_course_points as u64,
            2,
        )?;
        at_least("race.max_racers", self.race.max_racers as u64, 1)?;
        at_least("race.tick_ms", self.race.tick_ms, 10)?;
        at_most(
            "race.resume_buffer_bytes",
            self.race.resume_buffer_bytes as u64,
            256 * 1024 * 1024,
        )?;
        at_least(
            "web.guest_token_ttl_secs",
            self.web.guest_token_ttl_secs,
            60,
        )?;
        at_most(
            "web.guest_token_ttl_secs",
            self.web.guest_token_ttl_secs,
            self.auth.max_ttl_secs,
        )?;
        at_least(
            "web.guest_tokens_per_addr_per_min",
            self.web.guest_tokens_per_addr_per_min.into(),
            1,
        )?;
        let t = &self.tracking;
        for (key, value) in [
            ("tracking.max_accuracy_m", t.max_accuracy_m),
            ("tracking.max_speed_mps", t.max_speed_mps),
            ("tracking.off_course_m", t.off_course_m),
            ("tracking.window_behind_m", t.window_behind_m),
            ("tracking.min_window_ahead_m", t.min_window_ahead_m),
            ("tracking.finish_half_width_m", t.finish_half_width_m),
            ("tracking.max_course_speed_mps", t.max_course_speed_mps),
            ("tracking.cut_tolerance_m", t.cut_tolerance_m),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(ConfigError(format!(
                    "{key} must be a positive number, got {value}"
                )));
            }
        }
        if t.max_course_speed_mps > t.max_speed_mps {
            return Err(ConfigError(format!(
                "tracking.max_course_speed_mps ({}) must not exceed tracking.max_speed_mps ({}): \
                 a sustained average cannot be faster than a single jump",
                t.max_course_speed_mps, t.max_speed_mps
            )));
        }
        if !(t.cut_pace_factor.is_finite() && t.cut_pace_factor >= 1.2) {
            return Err(ConfigError(format!(
                "tracking.cut_pace_factor must be at least 1.2 (a detour is about as fast as \
                 the course), got {}",
                t.cut_pace_factor
            )));
        }
        if !matches!(t.cut_rule.as_str(), "flag" | "hold") {
            return Err(ConfigError(format!(
                "tracking.cut_rule must be \"flag\" or \"hold\", got `{}`",
                t.cut_rule
            )));
        }
        at_least(
            "tracking.off_course_after_ms",
            t.off_course_after_ms.max(0) as u64,
            1,
        )?;
        at_least(
            "tracking.max_fixes_per_batch",
            t.max_fixes_per_batch as u64,
            1,
        )?;
        // A second covers clocks that agree; a week is as far as a simulation's sped-up
        // race time may usefully run ahead.
        at_least("tracking.max_future_skew_ms", t.max_future_skew_ms, 1_000)?;
        at_most(
            "tracking.max_future_skew_ms",
            t.max_future_skew_ms,
            7 * 86_400_000,
        )?;
        at_most(
            "tracking.max_fix_age_before_start_ms",
            t.max_fix_age_before_start_ms,
            7 * 86_400_000,
        )?;
        self.validate_mail()?;
        self.validate_patrol()?;
        if tracing_subscriber::EnvFilter::try_new(&self.log.filter).is_err() {
            return Err(ConfigError(format!(
                "log.filter is not a valid tracing filter: `{}`",
                self.log.filter
            )));
        }
        Ok(())
    }

    /// The `[patrol]` checks, each naming its key.
    fn validate_patrol(&self) -> Result<(), ConfigError> {
        let p = &self.patrol;
        let fail = |key: &str, why: String| Err(ConfigError(format!("patrol.{key} {why}")));
        for (key, value) in [
            ("h3_resolution", p.h3_resolution),
            ("privacy_resolution", p.privacy_resolution),
        ] {
            if value > 15 {
                return fail(key, format!("must be an H3 resolution 0..=15, got {value}"));
            }
        }
        for (key, value, max) in [
            ("nearby_radius_m", p.nearby_radius_m, 100_000.0),
            ("nearest_max_radius_m", p.nearest_max_radius_m, 1_000_000.0),
            ("distance_step_m", p.distance_step_m, 10_000.0),
            ("in_person_m", p.in_person_m, 10_000.0),
            ("max_accuracy_m", p.max_accuracy_m, 100_000.0),
        ] {
            if !(value.is_finite() && value > 0.0 && value <= max) {
                return fail(key, format!("must be a number in (0, {max}], got {value}"));
            }
        }
        for (key, value, min, max) in [
            (
                "nearest_max_count",
                u64::from(p.nearest_max_count),
                1,
                1_000,
            ),
            (
                "duty_default_minutes",
                u64::from(p.duty_default_minutes),
                1,
                u64::from(p.duty_max_minutes),
            ),
            (
                "duty_max_minutes",
                u64::from(p.duty_max_minutes),
                1,
                7 * 24 * 60,
            ),
            ("connect_timeout_secs", p.connect_timeout_secs, 1, 86_400),
            ("officer_points", p.officer_points, 0, 1_000_000),
            ("citizen_points", p.citizen_points, 0, 1_000_000),
            ("daily_points_cap", p.daily_points_cap, 0, 1_000_000_000),
            ("max_message_chars", p.max_message_chars as u64, 1, 16_384),
        ] {
            if value < min || value > max {
                return fail(key, format!("must be in {min}..={max}, got {value}"));
            }
        }
        Ok(())
    }

    /// The `[mail]` checks, each naming its key.
    fn validate_mail(&self) -> Result<(), ConfigError> {
        let m = &self.mail;
        let fail = |key: &str, why: String| Err(ConfigError(format!("mail.{key} {why}")));
        if !matches!(m.transport.as_str(), "smtp" | "http") {
            return fail(
                "transport",
                format!("must be \"smtp\" or \"http\", got `{}`", m.transport),
            );
        }
        if m.from.parse::<lettre::message::Mailbox>().is_err() {
            return fail(
                "from",
                format!(
                    "must be an address like \"Name <a@b.org>\", got `{}`",
                    m.from
                ),
            );
        }
        if m.message_id_domain.is_empty()
            || !m
                .message_id_domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        {
            return fail(
                "message_id_domain",
                format!("must be a domain name, got `{}`", m.message_id_domain),
            );
        }
        for (key, value, min, max) in [
            ("max_attempts", u64::from(m.max_attempts), 1, 1_000),
            ("backoff_base_ms", m.backoff_base_ms, 1, 86_400_000),
            (
                "backoff_cap_ms",
                m.backoff_cap_ms,
                m.backoff_base_ms,
                7 * 86_400_000,
            ),
            (
                "idempotency_retention_secs",
                m.idempotency_retention_secs,
                1,
                365 * 86_400,
            ),
            (
                "breaker_consecutive_failures",
                u64::from(m.breaker_consecutive_failures),
                1,
                1_000_000,
            ),
            (
                "breaker_min_calls",
                u64::from(m.breaker_min_calls),
                1,
                1_000_000,
            ),
            ("breaker_window_ms", m.breaker_window_ms, 1, 86_400_000),
            ("breaker_open_ms", m.breaker_open_ms, 1, 86_400_000),
            (
                "breaker_half_open_probes",
                u64::from(m.breaker_half_open_probes),
                1,
                1_000,
            ),
            ("smtp_port", u64::from(m.smtp_port), 1, 65_535),
            ("smtp_pool_max", u64::from(m.smtp_pool_max), 1, 1_000),
            (
                "smtp_connect_timeout_ms",
                m.smtp_connect_timeout_ms,
                1,
                600_000,
            ),
            (
                "smtp_total_timeout_ms",
                m.smtp_total_timeout_ms,
                m.smtp_connect_timeout_ms,
                3_600_000,
            ),
            ("smtp_concurrency", u64::from(m.smtp_concurrency), 1, 10_000),
            (
                "http_connect_timeout_ms",
                m.http_connect_timeout_ms,
                1,
                600_000,
            ),
            (
                "http_total_timeout_ms",
                m.http_total_timeout_ms,
                m.http_connect_timeout_ms,
                3_600_000,
            ),
            ("http_concurrency", u64::from(m.http_concurrency), 1, 10_000),
        ] {
            if !(min..=max).contains(&value) {
                return fail(key, format!("must be between {min} and {max}, got {value}"));
            }
        }
        if !(m.backoff_factor.is_finite() && (1.0..=100.0).contains(&m.backoff_factor)) {
            return fail(
                "backoff_factor",
                format!("must be between 1.0 and 100.0, got {}", m.backoff_factor),
            );
        }
        if !(m.breaker_failure_rate.is_finite()
            && m.breaker_failure_rate > 0.0
            && m.breaker_failure_rate <= 1.0)
        {
            return fail(
                "breaker_failure_rate",
                format!("must be in (0, 1], got {}", m.breaker_failure_rate),
            );
        }
        if m.smtp_host.is_empty() {
            return fail("smtp_host", "must not be empty".into());
        }
        match m.smtp_tls.as_str() {
            "none" => {}
            "starttls" | "tls" if cfg!(feature = "mail-tls") => {}
            "starttls" | "tls" => {
                return fail("smtp_tls", format!("is `{}` but this build has no TLS; rebuild with --features mail-tls or use \"none\"", m.smtp_tls));
            }
            other => {
                return fail(
                    "smtp_tls",
                    format!("must be \"none\", \"starttls\" or \"tls\", got `{other}`"),
                )
            }
        }
        if let Err(why) = crate::net::mail::http::Endpoint::parse(&m.http_url) {
            return fail("http_url", why);
        }
        Ok(())
    }

    /// The scheduled backup folder, resolved against the data folder.
    pub fn backup_dir(&self) -> PathBuf {
        if self.persist.backup_dir.is_absolute() {
            self.persist.backup_dir.clone()
        } else {
            self.server.data_dir.join(&self.persist.backup_dir)
        }
    }
}

fn parse_table(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError(format!("{origin}: {}", e.message().trim())))
}

/// Copies `layer` onto `base`, refusing keys the defaults do not have so a typo is an error
/// rather than a silently ignored setting.
fn merge_layer(
    base: &mut toml::Table,
    layer: toml::Table,
    origin: &str,
) -> Result<(), ConfigError> {
    for (section, value) in layer {
        let Some(toml::Value::Table(base_section)) = base.get_mut(&section) else {
            return Err(ConfigError(format!(
                "{origin}: unknown section [{section}]"
            )));
        };
        let toml::Value::Table(entries) = value else {
            return Err(ConfigError(format!(
                "{origin}: `{section}` must be a [section]"
            )));
        };
        for (key, value) in entries {
            let Some(default) = base_section.get(&key) else {
                return Err(ConfigError(format!(
                    "{origin}: unknown key {section}.{key}"
                )));
            };
            if default.type_str() != value.type_str() {
                return Err(ConfigError(format!(
                    "{origin}: {section}.{key} must be {} {}, got {} {}",
                    article(default.type_str()),
                    default.type_str(),
                    article(value.type_str()),
                    value.type_str(),
                )));
            }
            base_section.insert(key, value);
        }
    }
    Ok(())
}

/// Applies `PELOTON_<SECTION>_<KEY>` (and the short forms) to known keys, parsing each value
/// as the type the default has.
fn apply_env(table: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut keys = Vec::new();
    for (section, value) in table.iter() {
        if let toml::Value::Table(entries) = value {
            for (key, default) in entries {
                keys.push((section.clone(), key.clone(), default.clone()));
            }
        }
    }
    for (section, key, default) in keys {
        let mut names = vec![format!(
            "PELOTON_{}_{}",
            section.to_uppercase(),
            key.to_uppercase()
        )];
        match (section.as_str(), key.as_str()) {
            ("server", "listen") => names.push("PELOTON_LISTEN".into()),
            ("server", "data_dir") => names.push("PELOTON_DATA".into()),
            _ => {}
        }
        // The short forms are what users type, so they win over the long forms.
        let Some((name, raw)) = names
            .iter()
            .rev()
            .find_map(|n| lookup(n).map(|v| (n.clone(), v)))
        else {
            continue;
        };
        let value = match default {
            toml::Value::String(_) => toml::Value::String(raw),
            toml::Value::Integer(_) => toml::Value::Integer(raw.trim().parse().map_err(|_| {
                ConfigError(format!(
                    "{section}.{key} (from {name}) must be an integer, got `{raw}`"
                ))
            })?),
            toml::Value::Boolean(_) => toml::Value::Boolean(raw.trim().parse().map_err(|_| {
                ConfigError(format!(
                    "{section}.{key} (from {name}) must be true or false, got `{raw}`"
                ))
            })?),
            toml::Value::Float(_) => toml::Value::Float(raw.trim().parse().map_err(|_| {
                ConfigError(format!(
                    "{section}.{key} (from {name}) must be a number, got `{raw}`"
                ))
            })?),
            _ => {
                return Err(ConfigError(format!(
                    "{section}.{key} cannot be set from the environment"
                )))
            }
        };
        set_key(table, &section, &key, value);
    }
    Ok(())
}

fn article(type_name: &str) -> &'static str {
    if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn set_key(table: &mut toml::Table, section: &str, key: &str, value: toml::Value) {
    if let Some(toml::Value::Table(entries)) = table.get_mut(section) {
        entries.insert(key.to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn embedded_defaults_are_valid() {
        let c = Config::defaults().unwrap();
        assert_eq!(c.ws.read_buffer_bytes, 4096);
        assert_eq!(c.persist.backup_every_hours, 4);
    }

    #[test]
    fn environment_overrides_defaults_and_flags_override_environment() {
        let c = Config::load_from(
            None,
            &env(&[
                ("PELOTON_WS_MAX_FRAME_BYTES", "8192"),
                ("PELOTON_LISTEN", "127.0.0.1:1"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.ws.max_frame_bytes, 8192);
        assert_eq!(c.server.listen, "127.0.0.1:1");
        let c = Config::load_from(
            None,
            &env(&[("PELOTON_LISTEN", "127.0.0.1:1")]),
            &Overrides {
                listen: Some("127.0.0.1:2".into()),
                data_dir: None,
            },
        )
        .unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:2");
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::load_from(
            None,
            &env(&[("PELOTON_WS_MAX_FRAME_BYTES", "lots")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.0.contains("ws.max_frame_bytes"), "{e}");
        let e = Config::load_from(
            None,
            &env(&[("PELOTON_PERSIST_SNAPSHOT_EVERY", "0")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.0.contains("persist.snapshot_every"), "{e}");
        let e = Config::load_from(
            None,
            &[],
            &Overrides {
                listen: Some("nowhere".into()),
                data_dir: None,
            },
        )
        .unwrap_err();
        assert!(e.0.contains("server.listen"), "{e}");
    }

    #[test]
    fn file_layers_reject_unknown_keys_and_wrong_types() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[ws]\nmax_frame_bytez = 1\n").unwrap();
        let e = Config::load_from(Some(&path), &[], &Overrides::default()).unwrap_err();
        assert!(e.0.contains("ws.max_frame_bytez"), "{e}");
        std::fs::write(&path, "[ws]\nmax_frame_bytes = \"big\"\n").unwrap();
        let e = Config::load_from(Some(&path), &[], &Overrides::default()).unwrap_err();
        assert!(e.0.contains("max_frame_bytes"), "{e}");
        std::fs::write(&path, "[ws]\nmax_frame_bytes = 2048\n").unwrap();
        let c = Config::load_from(Some(&path), &[], &Overrides::default()).unwrap();
        assert_eq!(c.ws.max_frame_bytes, 2048);
    }

    #[test]
    fn race_start_mode_is_typed_and_named_in_errors() {
        assert_eq!(Config::defaults().unwrap().race.start_mode, StartMode::Auto);
        let c = Config::load_from(
            None,
            &env(&[("PELOTON_RACE_START_MODE", "gun")]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.race.start_mode, StartMode::Gun);
        let e = Config::load_from(
            None,
            &env(&[("PELOTON_RACE_START_MODE", "pistol")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(
            e.0.contains("race.start_mode") && e.0.contains("pistol"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[race]\nstart_mode = \"Gun\"\n").unwrap();
        let e = Config::load_from(Some(&path), &[], &Overrides::default()).unwrap_err();
        assert!(e.0.contains("race.start_mode"), "{e}");
    }

    #[test]
    fn device_time_keys_are_checked_by_name() {
        let defaults = Config::defaults().unwrap().tracking;
        assert_eq!(defaults.max_future_skew_ms, 120_000);
        assert_eq!(defaults.max_fix_age_before_start_ms, 21_600_000);
        let bad = |key: &str, value: &str| {
            Config::load_from(None, &env(&[(key, value)]), &Overrides::default())
                .unwrap_err()
                .0
        };
        assert!(
            bad("PELOTON_TRACKING_MAX_FUTURE_SKEW_MS", "0").contains("tracking.max_future_skew_ms")
        );
        assert!(bad("PELOTON_TRACKING_MAX_FUTURE_SKEW_MS", "604800001")
            .contains("tracking.max_future_skew_ms"));
        assert!(
            bad("PELOTON_TRACKING_MAX_FIX_AGE_BEFORE_START_MS", "604800001")
                .contains("tracking.max_fix_age_before_start_ms")
        );
        let c = Config::load_from(
            None,
            &env(&[("PELOTON_TRACKING_MAX_FUTURE_SKEW_MS", "86400000")]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.tracking.max_future_skew_ms, 86_400_000);
    }

    #[test]
    fn admission_limit_keys_are_checked_by_name() {
        let bad = |key: &str, value: &str| {
            Config::load_from(None, &env(&[(key, value)]), &Overrides::default())
                .unwrap_err()
                .0
        };
        for (var, key) in [
            ("PELOTON_WS_MAX_SOCKETS", "ws.max_sockets"),
            (
                "PELOTON_WS_ADMIN_RESERVE_SOCKETS",
                "ws.admin_reserve_sockets",
            ),
            (
                "PELOTON_WS_MAX_SOCKETS_PER_SUBJECT",
                "ws.max_sockets_per_subject",
            ),
            (
                "PELOTON_WS_MAX_UPGRADES_PER_ADDR_PER_MIN",
                "ws.max_upgrades_per_addr_per_min",
            ),
            (
                "PELOTON_WEB_GUEST_TOKENS_PER_ADDR_PER_MIN",
                "web.guest_tokens_per_addr_per_min",
            ),
        ] {
            assert!(bad(var, "0").contains(key), "{var}");
        }
        assert!(bad("PELOTON_WS_ADDR_LIMITS_EXEMPT_LOOPBACK", "maybe")
            .contains("ws.addr_limits_exempt_loopback"));
    }

    #[test]
    fn patrol_keys_are_checked_by_name() {
        let bad = |key: &str, value: &str| {
            Config::load_from(None, &env(&[(key, value)]), &Overrides::default())
                .unwrap_err()
                .0
        };
        assert!(bad("PELOTON_PATROL_H3_RESOLUTION", "16").contains("patrol.h3_resolution"));
        assert!(bad("PELOTON_PATROL_NEARBY_RADIUS_M", "0").contains("patrol.nearby_radius_m"));
        assert!(bad("PELOTON_PATROL_IN_PERSON_M", "NaN").contains("patrol.in_person_m"));
        assert!(bad("PELOTON_PATROL_DUTY_DEFAULT_MINUTES", "9999")
            .contains("patrol.duty_default_minutes"));
        assert!(bad("PELOTON_PATROL_NEAREST_MAX_COUNT", "0").contains("patrol.nearest_max_count"));
        let c = Config::load_from(
            None,
            &env(&[("PELOTON_PATROL_OFFICER_POINTS", "25")]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.patrol.officer_points, 25);
    }

    #[test]
    fn mail_keys_are_checked_by_name() {
        let bad = |key: &str, value: &str| {
            Config::load_from(None, &env(&[(key, value)]), &Overrides::default())
                .unwrap_err()
                .0
        };
        assert!(bad("PELOTON_MAIL_TRANSPORT", "pigeon").contains("mail.transport"));
        assert!(bad("PELOTON_MAIL_FROM", "not an address").contains("mail.from"));
        assert!(bad("PELOTON_MAIL_MAX_ATTEMPTS", "0").contains("mail.max_attempts"));
        assert!(bad("PELOTON_MAIL_BACKOFF_FACTOR", "0.5").contains("mail.backoff_factor"));
        assert!(bad("PELOTON_MAIL_BACKOFF_CAP_MS", "10").contains("mail.backoff_cap_ms"));
        assert!(
            bad("PELOTON_MAIL_BREAKER_FAILURE_RATE", "1.5").contains("mail.breaker_failure_rate")
        );
        assert!(bad("PELOTON_MAIL_HTTP_URL", "https://x/").contains("mail.http_url"));
        if !cfg!(feature = "mail-tls") {
            assert!(bad("PELOTON_MAIL_SMTP_TLS", "tls").contains("mail-tls"));
        }
        let c = Config::load_from(
            None,
            &env(&[("PELOTON_MAIL_SMTP_PORT", "2525")]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.mail.smtp_port, 2525);
    }
}
