//! Configuration: the embedded `config.toml` defaults, an optional file on top, then
//! `PELOTON_*` environment variables, then command-line flags (`layers.rs`).
//!
//! Loading works on a TOML table so every layer is merged the same way and every error can
//! name the exact key (`ws.max_frame_bytes`). The typed [`Config`] is only built once the
//! merged table is complete, then checked by [`Config::validate`], which asks each section
//! to check itself. One file per group of sections: `server.rs` (server, ws, auth, web,
//! log), `persist.rs` (persist, supervision), `race.rs` (race, tracking), `mail.rs`,
//! `patrol.rs`. Where a section holds a domain's rule set, its keys are read straight into
//! the domain's type (flattened, so the file keeps one flat section), so each key has one
//! definition and one check.

mod check;
mod cluster;
mod layers;
mod mail;
mod patrol;
mod persist;
mod race;
mod server;

pub use check::ConfigError;
pub use cluster::ClusterConfig;
pub use layers::DEFAULT_CONFIG;
pub use mail::MailConfig;
pub use patrol::PatrolConfig;
pub use persist::{PersistConfig, SupervisionConfig};
pub use race::{RaceConfig, TrackingConfig};
pub use server::{AuthConfig, LogConfig, LogFormat, ServerConfig, WebConfig, WsConfig};

use layers::{apply_env, merge_layer, parse_table, set_key};
use serde::Deserialize;
use std::path::{Path, PathBuf};

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
    /// Cluster mode: the journal on NATS JetStream (off unless `nats_url` is set).
    pub cluster: ClusterConfig,
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

    /// Range checks serde cannot express, section by section; each error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.ws.validate()?;
        self.auth.validate()?;
        self.persist.validate()?;
        self.supervision.validate()?;
        self.race.validate()?;
        self.web.validate(&self.auth)?;
        self.tracking.validate()?;
        self.mail.validate()?;
        self.patrol.validate()?;
        self.cluster.validate()?;
        self.log.validate()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::race::state::StartMode;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The defaults with one environment variable set.
    fn with_env(var: &str, value: &str) -> Result<Config, ConfigError> {
        Config::load_from(None, &env(&[(var, value)]), &Overrides::default())
    }

    /// The error one environment variable causes.
    fn bad(var: &str, value: &str) -> String {
        with_env(var, value).unwrap_err().0
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
        let e = with_env("PELOTON_WS_MAX_FRAME_BYTES", "lots").unwrap_err();
        assert!(e.0.contains("ws.max_frame_bytes"), "{e}");
        let e = with_env("PELOTON_PERSIST_SNAPSHOT_EVERY", "0").unwrap_err();
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
        let c = with_env("PELOTON_RACE_START_MODE", "gun").unwrap();
        assert_eq!(c.race.start_mode, StartMode::Gun);
        let e = with_env("PELOTON_RACE_START_MODE", "pistol").unwrap_err();
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
        let defaults = Config::defaults().unwrap().tracking.device_time;
        assert_eq!(defaults.max_future_skew_ms, 120_000);
        assert_eq!(defaults.max_fix_age_before_start_ms, 21_600_000);
        assert!(
            bad("PELOTON_TRACKING_MAX_FUTURE_SKEW_MS", "0").contains("tracking.max_future_skew_ms")
        );
        assert!(bad("PELOTON_TRACKING_MAX_FUTURE_SKEW_MS", "604800001")
            .contains("tracking.max_future_skew_ms"));
        assert!(
            bad("PELOTON_TRACKING_MAX_FIX_AGE_BEFORE_START_MS", "604800001")
                .contains("tracking.max_fix_age_before_start_ms")
        );
        let c = with_env("PELOTON_TRACKING_MAX_FUTURE_SKEW_MS", "86400000").unwrap();
        assert_eq!(c.tracking.device_time.max_future_skew_ms, 86_400_000);
    }

    #[test]
    fn admission_limit_keys_are_checked_by_name() {
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
        assert!(bad("PELOTON_PATROL_H3_RESOLUTION", "16").contains("patrol.h3_resolution"));
        assert!(bad("PELOTON_PATROL_NEARBY_RADIUS_M", "0").contains("patrol.nearby_radius_m"));
        assert!(bad("PELOTON_PATROL_IN_PERSON_M", "NaN").contains("patrol.in_person_m"));
        assert!(bad("PELOTON_PATROL_DUTY_DEFAULT_MINUTES", "9999")
            .contains("patrol.duty_default_minutes"));
        assert!(bad("PELOTON_PATROL_NEAREST_MAX_COUNT", "0").contains("patrol.nearest_max_count"));
        let c = with_env("PELOTON_PATROL_OFFICER_POINTS", "25").unwrap();
        assert_eq!(c.patrol.award.officer_points, 25);
    }

    #[test]
    fn mail_keys_are_checked_by_name() {
        assert!(bad("PELOTON_MAIL_TRANSPORT", "pigeon").contains("mail.transport"));
        assert!(bad("PELOTON_MAIL_FROM", "not an address").contains("mail.from"));
        assert!(bad("PELOTON_MAIL_MAX_ATTEMPTS", "0").contains("mail.max_attempts"));
        assert!(bad("PELOTON_MAIL_BACKOFF_FACTOR", "0.5").contains("mail.backoff_factor"));
        assert!(bad("PELOTON_MAIL_BACKOFF_CAP_MS", "10").contains("mail.backoff_cap_ms"));
        assert!(
            bad("PELOTON_MAIL_BREAKER_FAILURE_RATE", "1.5").contains("mail.breaker_failure_rate")
        );
        assert!(bad("PELOTON_MAIL_HTTP_URL", "https://x/").contains("mail.http_url"));
        assert!(bad("PELOTON_MAIL_SMTP_TLS", "ssl").contains("mail.smtp_tls"));
        let c = with_env("PELOTON_MAIL_SMTP_TLS", "starttls").unwrap();
        assert_eq!(c.mail.smtp_tls, "starttls");
        assert!(
            bad("PELOTON_MAIL_SMTP_CA_FILE", "/nonexistent/ca.pem").contains("mail.smtp_ca_file")
        );
        let c = with_env("PELOTON_MAIL_SMTP_PORT", "2525").unwrap();
        assert_eq!(c.mail.smtp_port, 2525);
    }

    #[test]
    fn sections_read_into_domain_types_keep_their_keys_and_messages() {
        let c = Config::defaults().unwrap();
        assert_eq!(
            c.tracking.rules.cut_rule,
            crate::actors::racer::CutRule::Flag
        );
        assert_eq!(
            c.race.limits.max_course_points,
            c.race.limits.max_course_points.max(2)
        );
        assert_eq!(
            bad("PELOTON_TRACKING_CUT_RULE", "ignore"),
            "tracking.cut_rule must be \"flag\" or \"hold\", got `ignore`"
        );
        assert!(with_env("PELOTON_TRACKING_CUT_RULE", "hold").is_ok());
        assert_eq!(
            bad("PELOTON_TRACKING_MAX_SPEED_MPS", "0"),
            "tracking.max_speed_mps must be a positive number, got 0"
        );
        assert!(bad("PELOTON_TRACKING_MAX_COURSE_SPEED_MPS", "500")
            .starts_with("tracking.max_course_speed_mps (500) must not exceed"));
        assert!(bad("PELOTON_TRACKING_OFF_COURSE_AFTER_MS", "-5")
            .contains("tracking.off_course_after_ms must be at least 1, got 0"));
        assert!(bad("PELOTON_RACE_MAX_COURSE_POINTS", "1").contains("race.max_course_points"));
        assert!(bad("PELOTON_TRACKING_MAX_FIXES_PER_BATCH", "0")
            .contains("tracking.max_fixes_per_batch"));
        // The embedded defaults are read by serde alone: an unknown key in a flattened
        // section is still refused, not silently dropped.
        for section in ["race", "tracking", "mail", "patrol"] {
            let mut table = parse_table(DEFAULT_CONFIG, "test").unwrap();
            set_key(&mut table, section, "surprise", toml::Value::Integer(1));
            let e = Config::from_table(table).unwrap_err();
            assert!(e.0.contains("surprise"), "{e}");
        }
    }
}
