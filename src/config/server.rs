//! `[server]`, `[ws]`, `[auth]`, `[web]` and `[log]`: how the process listens, what one
//! socket may cost, how tokens are checked, the spectator page, and logging.

use super::check::{all_at_least_one, at_least, at_most, ConfigError};
use serde::Deserialize;
use std::path::PathBuf;

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

impl ServerConfig {
    /// The listening address must parse; the data folder must be named.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError(format!(
                "server.listen must be ip:port such as 127.0.0.1:7400, got `{}`",
                self.listen
            )));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError("server.data_dir must not be empty".into()));
        }
        Ok(())
    }
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
    /// Largest WebSocket frame the server writes: a larger message goes out in fragments of
    /// this size, so no socket's write buffer grows to its largest message.
    pub fragment_bytes: usize,
    /// Threads of the runtime the sockets' writers run on, below the server's priority
    /// (0: writers share the server's runtime).
    pub writer_threads: usize,
    /// How much lower the writer threads' priority is than the server's (Linux nice, 0..=19):
    /// the fairness knob between fan-out and intake on a busy machine (BENCHMARKS.md).
    pub writer_nice: u32,
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

impl WsConfig {
    /// Buffers large enough to work, messages at least a frame, every limit switched on.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        at_least("ws.read_buffer_bytes", self.read_buffer_bytes as u64, 512)?;
        at_least("ws.max_frame_bytes", self.max_frame_bytes as u64, 128)?;
        at_least(
            "ws.max_message_bytes",
            self.max_message_bytes as u64,
            self.max_frame_bytes as u64,
        )?;
        at_least(
            "ws.admin_max_message_bytes",
            self.admin_max_message_bytes as u64,
            self.max_message_bytes as u64,
        )?;
        at_least(
            "ws.max_write_buffer_bytes",
            self.max_write_buffer_bytes as u64,
            (self.write_buffer_bytes + 1) as u64,
        )?;
        at_least("ws.fragment_bytes", self.fragment_bytes as u64, 1024)?;
        at_most("ws.writer_nice", self.writer_nice.into(), 19)?;
        at_most(
            "ws.fragment_bytes",
            self.fragment_bytes as u64,
            self.max_write_buffer_bytes as u64,
        )?;
        all_at_least_one(&[
            ("ws.outbound_queue", self.outbound_queue as u64),
            ("ws.rate_limit_per_sec", self.rate_limit_per_sec.into()),
            ("ws.rate_limit_burst", self.rate_limit_burst.into()),
            ("ws.flood_close_after", self.flood_close_after.into()),
            ("ws.flood_window_ms", self.flood_window_ms),
            ("ws.idle_timeout_ms", self.idle_timeout_ms),
            ("ws.write_timeout_ms", self.write_timeout_ms),
            ("ws.slow_consumer_close_ms", self.slow_consumer_close_ms),
            ("ws.max_sockets", self.max_sockets as u64),
            (
                "ws.admin_reserve_sockets",
                self.admin_reserve_sockets as u64,
            ),
            (
                "ws.max_sockets_per_subject",
                self.max_sockets_per_subject as u64,
            ),
            (
                "ws.max_upgrades_per_addr_per_min",
                self.max_upgrades_per_addr_per_min.into(),
            ),
        ])?;
        // The codec refuses to decode more, so a larger limit would only be a broken promise.
        at_most(
            "ws.admin_max_message_bytes",
            self.admin_max_message_bytes as u64,
            crate::net::codec::MAX_DECODE_BYTES as u64,
        )
    }
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

impl AuthConfig {
    /// A token must be able to live at all.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        at_least("auth.max_ttl_secs", self.max_ttl_secs, 1)
    }
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
    /// Unknown device ids one client address may present per minute to the tracking-app
    /// endpoints before all its device requests wait out the minute (429): device ids are
    /// those apps' only credential.
    pub device_misses_per_addr_per_min: u32,
}

impl WebConfig {
    /// Guest tokens live at least a minute and no longer than any token may (`auth`).
    pub(super) fn validate(&self, auth: &AuthConfig) -> Result<(), ConfigError> {
        at_least("web.guest_token_ttl_secs", self.guest_token_ttl_secs, 60)?;
        at_most(
            "web.guest_token_ttl_secs",
            self.guest_token_ttl_secs,
            auth.max_ttl_secs,
        )?;
        at_least(
            "web.guest_tokens_per_addr_per_min",
            self.guest_tokens_per_addr_per_min.into(),
            1,
        )?;
        at_least(
            "web.device_misses_per_addr_per_min",
            self.device_misses_per_addr_per_min.into(),
            1,
        )
    }
}

/// `[log]`: the default tracing filter and the shape of a log line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing `EnvFilter` directive; `RUST_LOG` wins when set.
    pub filter: String,
    /// Lines for people (`text`) or one JSON object per line for a log collector (`json`).
    pub format: LogFormat,
}

/// How log lines are written (`log.format`). Colour is never a setting: text lines are
/// coloured only when stderr is a terminal, so files and collectors get no escape codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `time LEVEL target: message key=value`, for a person reading a terminal or a file.
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`, spans), for
    /// collectors that should not parse text.
    Json,
}

impl LogFormat {
    /// The format as written in `log.format`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }

    /// Reads `log.format` (exactly: the file is the docs).
    pub fn parse(text: &str) -> Option<LogFormat> {
        [LogFormat::Text, LogFormat::Json]
            .into_iter()
            .find(|format| format.as_str() == text)
    }
}

/// Read from text, so a misspelt `log.format` is refused naming the key and the values it
/// takes, like every other configuration error.
impl<'de> Deserialize<'de> for LogFormat {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        LogFormat::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "log.format must be \"text\" or \"json\", got `{text}`"
            ))
        })
    }
}

impl LogConfig {
    /// The filter must parse, or the server would start with no logs at all.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if tracing_subscriber::EnvFilter::try_new(&self.filter).is_err() {
            return Err(ConfigError(format!(
                "log.filter is not a valid tracing filter: `{}`",
                self.filter
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::LogFormat;
    use crate::config::{Config, Overrides};

    /// The configuration with one environment variable set.
    fn with_env(var: &str, value: &str) -> Result<Config, crate::config::ConfigError> {
        Config::load_from(
            None,
            &[(var.to_owned(), value.to_owned())],
            &Overrides::default(),
        )
    }

    #[test]
    fn log_format_is_text_by_default_and_json_on_request() {
        assert_eq!(Config::defaults().unwrap().log.format, LogFormat::Text);
        let c = with_env("PELOTON_LOG_FORMAT", "json").unwrap();
        assert_eq!(c.log.format, LogFormat::Json);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[log]\nformat = \"json\"\n").unwrap();
        let c = Config::load_from(Some(&path), &[], &Overrides::default()).unwrap();
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn a_wrong_log_format_is_refused_naming_the_key_and_its_values() {
        assert_eq!(
            with_env("PELOTON_LOG_FORMAT", "xml").unwrap_err().0,
            "log.format must be \"text\" or \"json\", got `xml`"
        );
        // Exactly as written: the file is the documentation.
        let e = with_env("PELOTON_LOG_FORMAT", "JSON").unwrap_err();
        assert!(e.0.contains("log.format"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[log]\nformat = 1\n").unwrap();
        let e = Config::load_from(Some(&path), &[], &Overrides::default()).unwrap_err();
        assert!(e.0.contains("log.format"), "{e}");
    }
}
