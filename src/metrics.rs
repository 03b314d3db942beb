//! Prometheus metrics: one recorder per process, rendered by `GET /metrics`.
//!
//! Metric names live here as constants so the exposition is documented in one place
//! (PROTOCOL.md repeats them for operators) and no caller invents a near-duplicate name.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Gauge: WebSocket sockets open now.
pub const OPEN_SOCKETS: &str = "peloton_ws_open_sockets";
/// Counter by `type`: messages decoded from clients.
pub const MESSAGES_IN: &str = "peloton_ws_messages_in_total";
/// Counter by `type`: messages sent to clients.
pub const MESSAGES_OUT: &str = "peloton_ws_messages_out_total";
/// Counter: spectator updates not queued because the socket's queue was full (the socket
/// gets the full table on the next tick instead).
pub const SKIPPED_UPDATES: &str = "peloton_ws_skipped_updates_total";
/// Counter by `code`: error replies sent.
pub const ERRORS: &str = "peloton_errors_total";
/// Counter by `code`: sockets closed, by the close code the server sent, or `client` (the
/// client closed or went) or `dropped` (the connection failed under the writer).
pub const CLOSES: &str = "peloton_ws_closes_total";
/// Counter: rate-limited messages dropped without an answer (only the first refusal of a
/// `ws.flood_window_ms` window is answered with `rate_limited`).
pub const RATE_LIMITED_DROPPED: &str = "peloton_ws_rate_limited_dropped_total";
/// Counter by `reason` (`server_full`, `subject_full`, `upgrade_rate`): upgrades refused by
/// the admission limits before any socket existed.
pub const WS_REFUSED: &str = "peloton_ws_refused_total";
/// Gauge: sockets holding an admission slot (admitted upgrades not yet ended).
pub const WS_ADMITTED: &str = "peloton_ws_admitted_sockets";
/// Counter by `reason` (`guest_token_rate`, `out_of_descriptors`): HTTP requests refused by
/// the admission limits, or answered 503 and closed because the process ran out of file
/// descriptors.
pub const HTTP_REFUSED: &str = "peloton_http_refused_total";
/// Counter: `accept` failures (other than out of descriptors, which `HTTP_REFUSED` counts
/// when a client could be answered).
pub const ACCEPT_ERRORS: &str = "peloton_accept_errors_total";
/// Counter: events appended to the journal.
pub const JOURNAL_APPENDS: &str = "peloton_journal_appends_total";
/// Counter: group-commit flushes.
pub const JOURNAL_FLUSHES: &str = "peloton_journal_flushes_total";
/// Histogram (seconds): time of one group-commit flush.
pub const JOURNAL_FLUSH_SECONDS: &str = "peloton_journal_flush_seconds";
/// Histogram: events committed by one flush.
pub const JOURNAL_BATCH_EVENTS: &str = "peloton_journal_batch_events";
/// Counter: snapshots written.
pub const SNAPSHOTS: &str = "peloton_snapshots_total";
/// Gauge by `kind`: actors alive now.
pub const LIVE_ACTORS: &str = "peloton_actors_live";
/// Counter by `kind`: actors restarted after a failure.
pub const ACTOR_RESTARTS: &str = "peloton_actor_restarts_total";
/// Counter by `result`: scheduled backups.
pub const BACKUPS: &str = "peloton_backups_total";
/// Gauge by `state`: mail jobs in each state (accepted, sending, sent, retry_waiting, dead).
pub const MAIL_JOBS: &str = "peloton_mail_jobs";
/// Counter by `transport` and `result` (sent, failed, refused): mail send attempts.
pub const MAIL_ATTEMPTS: &str = "peloton_mail_attempts_total";
/// Histogram (seconds) by `transport`: time of one send attempt.
pub const MAIL_SEND_SECONDS: &str = "peloton_mail_send_seconds";
/// Gauge by `transport`: circuit breaker state (0 closed, 1 half-open, 2 open).
pub const MAIL_BREAKER_STATE: &str = "peloton_mail_breaker_state";
/// Patrol sessions closed because their device stopped reading notices.
pub const PATROL_SLOW_SESSIONS: &str = "peloton_patrol_slow_sessions_total";
/// On-duty officers in the proximity index.
pub const PATROL_OFFICERS_INDEXED: &str = "peloton_patrol_officers_indexed";
/// Connections made.
pub const PATROL_CONNECTIONS: &str = "peloton_patrol_connections_total";
/// Histogram: bytes of each published race tick's delta (binary encoding), what every
/// spectator that keeps up is sent per tick.
pub const RACE_TICK_BYTES: &str = "peloton_race_tick_bytes";
/// Histogram: rows in each published race tick's delta.
pub const RACE_TICK_ROWS: &str = "peloton_race_tick_rows";
/// Counter by `kind` (race, racer): idle actors put to sleep in their journals.
pub const PASSIVATIONS: &str = "peloton_actor_passivations_total";
/// Counter by `kind`: sleeping actors woken by a request or their clock.
pub const ACTIVATIONS: &str = "peloton_actor_activations_total";
/// Histogram (seconds): time to wake a sleeping race with its racers, before the request
/// that woke it is served.
pub const ACTIVATION_SECONDS: &str = "peloton_race_activation_seconds";
/// Counter by `protocol` (osmand, owntracks) and `outcome`: tracking apps' HTTP reports.
pub const DEVICE_REPORTS: &str = "peloton_device_reports_total";
/// Counter by `result` (`ok`, `error`): copies of scheduled backups into
/// `persist.backup_copy_dir`, each verified where it landed.
pub const BACKUP_COPIES: &str = "peloton_backup_copies_total";
/// Counter by `result` (`ok`, `failed`, `timeout`, `spawn_error`): runs of the
/// `persist.after_backup` command.
pub const BACKUP_HOOKS: &str = "peloton_backup_hooks_total";
/// Gauge: unix seconds at which the newest verified scheduled backup was taken (read from
/// the backup folder at start), so an alert on its age works right after a restart.
pub const BACKUP_LAST_SUCCESS: &str = "peloton_backup_last_success_timestamp_seconds";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once; later calls return the same handle. `None` when
/// another recorder was installed first (metrics are then not exposed, nothing else breaks).
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(JOURNAL_FLUSH_SECONDS.into()),
                    &[
                        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(JOURNAL_BATCH_EVENTS.into()),
                        &[1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0],
                    )
                });
            match builder.and_then(|b| b.install_recorder()) {
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::warn!("metrics recorder not installed: {e}");
                    None
                }
            }
        })
        .clone()
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    match install() {
        Some(handle) => {
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    }
}
