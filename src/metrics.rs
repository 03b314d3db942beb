//! Prometheus metrics: one recorder per process, rendered by `GET /metrics`.
//!
//! Metric names live here as constants so the exposition is documented in one place
//! (PROTOCOL.md repeats them for operators) and no caller invents a near-duplicate name.
//!
//! Most series are recorded where things happen, through the `metrics` crate. Three kinds
//! are read at scrape time instead, by [`render`]: the process's own figures (resident
//! memory, open descriptors, read from `/proc`), the build's version, and the per-race
//! gauges of live races ([`LiveRaces`]), which must disappear when a race finishes and the
//! `metrics` crate cannot forget a series.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

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
/// Gauge: 1 while the server serves requests (`/readyz` 200), 0 while it recovers or shuts
/// down, so "not ready" is an alert of its own, not only "not scraped".
pub const READY: &str = "peloton_ready";
/// Gauge (seconds): how long the last start took from opening the data folder to ready
/// (journal read, resident actors recovered).
pub const RECOVERY_SECONDS: &str = "peloton_recovery_seconds";
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
/// Counter by `outcome`: racers' fixes judged by their racer actor, `accepted` or why one
/// changed nothing (`stale`, `inaccurate`, `too_fast`, `invalid`, `after_finish`), so an
/// operator sees a fleet of phones with bad GPS or skewed clocks before the organiser does.
pub const FIXES: &str = "peloton_fixes_total";
/// Counter by `flag` (`off_course`, `suspected_cut`): racer episodes flagged as they are
/// journaled, so a course marked wrongly shows as a burst before the results do.
pub const RACER_FLAGS: &str = "peloton_racer_flags_total";
/// Counter by `kind` (the push names of section 17: `officer_nearby`, `officer_gone`,
/// `connect_requested`, `connect_closed`, `connection_established`, `direct_message`,
/// `duty_ended`): patrol notices queued for an officer's or citizen's socket.
pub const PATROL_PUSHES: &str = "peloton_patrol_pushes_total";
/// Gauge by `race`, live races only: racers on the race's start list. Rendered at scrape
/// time from [`LiveRaces`], so a finished race's series goes.
pub const RACE_RACERS: &str = "peloton_race_racers";
/// Gauge by `race`, live races only: spectators subscribed to the race's updates, as of its
/// last tick. Rendered at scrape time from [`LiveRaces`].
pub const RACE_SPECTATORS: &str = "peloton_race_spectators";
/// Gauge: the process's resident memory in bytes (`/proc/self/statm`), read at scrape time.
pub const PROCESS_RESIDENT_BYTES: &str = "peloton_process_resident_bytes";
/// Gauge: the process's open file descriptors (`/proc/self/fd`), read at scrape time: each
/// socket is one, and running out refuses clients (section 2.3).
pub const PROCESS_OPEN_FDS: &str = "peloton_process_open_fds";
/// Gauge by `version`, always 1: which build is running, for dashboards across an upgrade.
pub const BUILD_INFO: &str = "peloton_build_info";
/// Gauge, cluster mode only: 1 while this node's connection to NATS is up, 0 while the
/// client is reconnecting. A node cut off from NATS can neither journal nor renew its
/// leases, so its races move to another node within `cluster.lease_ttl_ms`.
pub const CLUSTER_NATS_CONNECTED: &str = "peloton_cluster_nats_connected";
/// Gauge, cluster mode only: leases this node holds now (the races it owns).
pub const CLUSTER_LEASES_HELD: &str = "peloton_cluster_leases_held";
/// Counter by `outcome`, cluster mode only: lease renewals, `ok`, `taken` (another node
/// wrote the key since: the lease is lost) or `failed` (NATS did not answer; tried again
/// until the lease lapses).
pub const CLUSTER_LEASE_RENEWALS: &str = "peloton_cluster_lease_renewals_total";
/// Counter, cluster mode only: leases this node lost without giving them up, taken by
/// another node or lapsed because renewals failed for too long.
pub const CLUSTER_LEASES_LOST: &str = "peloton_cluster_leases_lost_total";
/// Counter by `outcome`, cluster mode only: requests this node sent to the node that owns
/// what they are about, `ok` (answered), `no_responders` (no node listens under that name:
/// it is down), `timeout` (no answer within `cluster.ack_timeout_ms`) or `error`.
pub const CLUSTER_FORWARDED: &str = "peloton_cluster_forwarded_total";
/// Histogram (seconds), cluster mode only: from publishing one journal record to
/// JetStream's acknowledgement (stored on a majority of the replicas), what every append
/// in cluster mode waits for.
pub const JOURNAL_PUBLISH_SECONDS: &str = "peloton_journal_publish_seconds";

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
                })
                .and_then(|b| {
                    // A round trip to a majority of the NATS servers: a millisecond on one
                    // network, up to cluster.ack_timeout_ms (5 s) when one is struggling.
                    b.set_buckets_for_metric(
                        Matcher::Full(JOURNAL_PUBLISH_SECONDS.into()),
                        &[
                            0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0,
                        ],
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

/// The Prometheus text exposition of every metric: what was recorded, then the figures
/// read now (process, build, live races).
pub fn render() -> String {
    let Some(handle) = install() else {
        return String::new();
    };
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let process = ProcessReading::now();
    if let Some(bytes) = process.resident_bytes {
        metrics::gauge!(PROCESS_RESIDENT_BYTES).set(bytes as f64);
    }
    if let Some(fds) = process.open_fds {
        metrics::gauge!(PROCESS_OPEN_FDS).set(fds as f64);
    }
    handle.run_upkeep();
    let mut text = handle.render();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    live_races().render_into(&mut text);
    text
}

/// The process's own figures as `/proc` tells them now; `None` where it cannot be read
/// (not Linux, or `/proc` not mounted), so the series is left out rather than made up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessReading {
    /// Resident set size in bytes: `/proc/self/statm`'s second field times the page size.
    pub resident_bytes: Option<u64>,
    /// Entries of `/proc/self/fd` (the directory handle read to count them included).
    pub open_fds: Option<u64>,
}

impl ProcessReading {
    /// Reads `/proc/self` now.
    pub fn now() -> ProcessReading {
        ProcessReading {
            resident_bytes: resident_bytes(),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|entries| entries.count() as u64),
        }
    }
}

/// Resident pages from `/proc/self/statm`, in bytes.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant; it has no memory effects.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = u64::try_from(page).ok().filter(|p| *p > 0)?;
    Some(pages.saturating_mul(page))
}

/// What one live race shows: [`RACE_RACERS`] and [`RACE_SPECTATORS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaceGauges {
    /// Racers on the start list.
    pub racers: u32,
    /// Spectators subscribed, as of the last tick.
    pub spectators: u32,
}

/// The per-race gauges of live races, set by each race's actor and rendered at scrape
/// time. Kept here rather than in the `metrics` crate's registry because a series there
/// cannot be removed: a server that runs races for months would expose every race it ever
/// ran, at 0. Removing a race's entry when it stops being live removes its series.
#[derive(Debug, Default)]
pub struct LiveRaces {
    /// By race id; ordered so the exposition is stable between scrapes.
    races: Mutex<BTreeMap<String, RaceGauges>>,
}

impl LiveRaces {
    /// Sets what race `race` shows now.
    pub fn set(&self, race: &str, gauges: RaceGauges) {
        let mut races = self.races.lock().unwrap_or_else(|e| e.into_inner());
        match races.get_mut(race) {
            Some(current) => *current = gauges,
            None => {
                races.insert(race.to_owned(), gauges);
            }
        }
    }

    /// Forgets race `race` (finished, cancelled, or its actor stopped): its series go.
    pub fn remove(&self, race: &str) {
        let mut races = self.races.lock().unwrap_or_else(|e| e.into_inner());
        races.remove(race);
    }

    /// What race `race` shows, if it is live.
    pub fn get(&self, race: &str) -> Option<RaceGauges> {
        let races = self.races.lock().unwrap_or_else(|e| e.into_inner());
        races.get(race).copied()
    }

    /// Appends both gauges' series in the text exposition format; nothing when no race is
    /// live (like any metric not recorded yet).
    pub fn render_into(&self, out: &mut String) {
        let races = self.races.lock().unwrap_or_else(|e| e.into_inner());
        if races.is_empty() {
            return;
        }
        for (name, value) in [
            (
                RACE_RACERS,
                (|g: &RaceGauges| g.racers) as fn(&RaceGauges) -> u32,
            ),
            (RACE_SPECTATORS, |g: &RaceGauges| g.spectators),
        ] {
            let _ = writeln!(out, "# TYPE {name} gauge");
            for (race, gauges) in races.iter() {
                let _ = writeln!(out, "{name}{{race=\"{}\"}} {}", label(race), value(gauges));
            }
            out.push('\n');
        }
    }
}

/// A label value escaped as the exposition format asks (race ids never need it; a change
/// to what an id may hold must not break the scrape).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The process's table of live races' gauges.
pub fn live_races() -> &'static LiveRaces {
    static LIVE: OnceLock<LiveRaces> = OnceLock::new();
    LIVE.get_or_init(LiveRaces::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_races_render_while_live_and_go_when_removed() {
        let live = LiveRaces::default();
        let mut empty = String::new();
        live.render_into(&mut empty);
        assert_eq!(empty, "");
        live.set(
            "spring-classic",
            RaceGauges {
                racers: 3,
                spectators: 0,
            },
        );
        live.set(
            "spring-classic",
            RaceGauges {
                racers: 3,
                spectators: 2,
            },
        );
        live.set(
            "a\"b",
            RaceGauges {
                racers: 1,
                spectators: 1,
            },
        );
        let mut text = String::new();
        live.render_into(&mut text);
        assert!(
            text.contains("# TYPE peloton_race_racers gauge\n"),
            "{text}"
        );
        assert!(
            text.contains("peloton_race_racers{race=\"spring-classic\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("peloton_race_spectators{race=\"spring-classic\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("peloton_race_racers{race=\"a\\\"b\"} 1\n"),
            "{text}"
        );
        live.remove("spring-classic");
        live.remove("a\"b");
        assert_eq!(live.get("spring-classic"), None);
        let mut gone = String::new();
        live.render_into(&mut gone);
        assert_eq!(gone, "");
    }

    #[test]
    fn process_figures_come_from_proc() {
        let reading = ProcessReading::now();
        if std::path::Path::new("/proc/self/statm").exists() {
            // A running test binary holds megabytes and at least stdin, stdout, stderr.
            assert!(reading.resident_bytes.unwrap() > 1_000_000, "{reading:?}");
            assert!(reading.open_fds.unwrap() >= 3, "{reading:?}");
            let file = std::fs::File::open("/proc/self/statm").unwrap();
            let more = ProcessReading::now().open_fds.unwrap();
            drop(file);
            assert!(more >= 4, "an open file is counted: {more}");
        }
    }
}
