//! The assembled server: configuration, keys, storage, the supervision tree and the HTTP
//! listener, started in the order that makes readiness honest, and stopped gracefully.
//!
//! Start: open storage → start the journal writer → bind the socket (health answers, ready
//! does not) → start the root supervisor and recover every domain → ready → print
//! `listening on`. Stop (SIGTERM/SIGINT or [`RunningServer::shutdown`]): stop accepting →
//! close sockets with 1001 → stop actors → flush the journal.

use crate::actors::mail::{MailDomain, MailSettings};
use crate::actors::patrol::context::PatrolSettings;
use crate::actors::patrol::PatrolDomain;
use crate::actors::race::domain::RaceSettings;
use crate::actors::race::RaceDomain;
use crate::actors::root::{RootArgs, RootMsg, RootSupervisor};
use crate::auth::Keys;
use crate::cluster::{Leases, Link, LinkRuntime, Node};
use crate::config::Config;
use crate::net::http;
use crate::net::mail::{transports, TransportSettings};
use crate::persist::jetstream::JetStreamJournal;
use crate::persist::{backup, Journal, JournalOwner, JournalWriter, Store};
use crate::time::now_ms;
use ractor::{Actor, ActorRef};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

mod handle;
mod writers;

pub use handle::{Engine, Services, SessionGuard, SessionTracker};

/// Why the server could not start. Each message names what to fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// Start-up failed before the supervision tree exists: the listener stops.
fn abandon_listener(listener: &tokio::task::JoinHandle<()>, failed: String) -> StartError {
    listener.abort();
    StartError(failed)
}

/// A domain that did not recover stops what was started before it (the supervision tree
/// and the listener), so a failed start leaves nothing running; `failed` says what failed.
fn abandon(
    root: &ActorRef<RootMsg>,
    listener: &tokio::task::JoinHandle<()>,
    failed: String,
) -> StartError {
    root.stop(None);
    abandon_listener(listener, failed)
}

/// A started server.
pub struct RunningServer {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    /// Shared state, for in-process tests.
    pub engine: Arc<Engine>,
    /// The supervision tree's root.
    root: ActorRef<RootMsg>,
    /// The accept loop.
    listener: tokio::task::JoinHandle<()>,
    /// Scheduled backups, stopped at shutdown.
    backups: Option<tokio::task::JoinHandle<()>>,
    /// Turns race events into mail jobs, stopped at shutdown.
    mail_trigger: Option<tokio::task::JoinHandle<()>>,
    /// The journal's writer (sled's thread, or the JetStream writer), stopped last.
    writer: Option<JournalOwner>,
    /// Cluster mode: the NATS connection and the leases, stopped after the writer.
    cluster: Option<Cluster>,
}

/// Starts everything and returns once recovery has finished and connections are served.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    crate::metrics::install();
    let starting = std::time::Instant::now();
    metrics::gauge!(crate::metrics::READY).set(0.0);
    let keys = Keys::load_or_create(&config).map_err(|e| StartError(e.to_string()))?;
    let cluster = match config.cluster.enabled() {
        true => Some(join_cluster(&config).await?),
        false => None,
    };
    let (journal, writer) = match &cluster {
        Some(cluster) => cluster.journal()?,
        None => sled_journal(&config)?,
    };
    let listener = TcpListener::bind(&config.server.listen)
        .await
        .map_err(|e| StartError(format!("cannot listen on {}: {e}", config.server.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError(e.to_string()))?;
    let engine = Arc::new(Engine::new(
        config.clone(),
        keys,
        cluster.as_ref().map(|c| c.node.clone()),
    ));
    let listener = tokio::spawn(http::serve(listener, engine.clone()));
    if let Some(cluster) = &cluster {
        let advertised = config.cluster.advertise_url.trim();
        let card = crate::cluster::status::NodeCard {
            node: cluster.node.link.node().to_owned(),
            address: addr.to_string(),
            url: if advertised.is_empty() {
                format!("ws://{addr}{}", http::WS_PATH)
            } else {
                advertised.to_owned()
            },
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at_ms: now_ms(),
        };
        crate::cluster::status::announce(&cluster.node.link, card, cluster.node.members.clone())
            .await
            .map_err(|e| abandon_listener(&listener, format!("cluster: {e}")))?;
        // Requests other nodes forward here are answered as this node's own sockets' are
        // ("still recovering" until recovery ends).
        let answering = engine.clone();
        let answer: crate::cluster::forward::Answerer = Arc::new(move |envelope| {
            let engine = answering.clone();
            Box::pin(async move { crate::api::answer_forwarded(&engine, &envelope).await })
        });
        crate::cluster::forward::serve(
            &cluster.node.link,
            tokio::runtime::Handle::current(),
            crate::cluster::forward::API,
            answer,
        )
        .await
        .map_err(|e| abandon_listener(&listener, format!("cluster: {e}")))?;
    }

    let restart_window = Duration::from_secs(config.supervision.restart_window_secs);
    let (root, _) = RootSupervisor::spawn(
        None,
        RootSupervisor,
        RootArgs {
            restart_budget: config.supervision.restart_budget,
            restart_window,
        },
    )
    .await
    .map_err(|e| StartError(format!("supervision tree: {e}")))?;
    let races = RaceDomain::start(
        &root,
        journal.clone(),
        RaceSettings::from_config(&config),
        crate::api::tick_encoder(),
        cluster.as_ref().map(|c| c.node.clone()),
    )
    .await
    .map_err(|e| abandon(&root, &listener, format!("recovery failed: {e}")))?;
    if let Some(cluster) = &cluster {
        // Other nodes' spectators of the races this node owns are served by relaying
        // each tick once to those nodes.
        let relays = crate::actors::race::relay::Relays::new(
            cluster.node.link.clone(),
            cluster.node.leases.clone(),
            races.clone(),
        );
        crate::actors::race::relay::serve(&cluster.node.link, relays)
            .await
            .map_err(|e| abandon(&root, &listener, format!("cluster: {e}")))?;
    }
    let mail_started = match transports(&TransportSettings::from_config(&config)) {
        Ok(transports) => {
            let settings = MailSettings::from_config(&config);
            let node = cluster.as_ref().map(|c| c.node.clone());
            MailDomain::start_in(&root, journal.clone(), settings, transports, node).await
        }
        Err(e) => Err(e),
    };
    let mail = mail_started
        .map_err(|e| abandon(&root, &listener, format!("mail recovery failed: {e}")))?;
    let patrol_settings =
        PatrolSettings::from_config(&config).map_err(|e| abandon(&root, &listener, e))?;
    let patrol = PatrolDomain::start(
        &root,
        journal.clone(),
        mail.clone(),
        patrol_settings,
        engine.keys.voucher_key().clone(),
        config.supervision.restart_budget,
        restart_window,
    )
    .await
    .map_err(|e| abandon(&root, &listener, format!("patrol recovery failed: {e}")))?;
    let mail_trigger = Some(tokio::spawn(crate::actors::mail::trigger::race_results(
        mail.clone(),
        races.clone(),
        Duration::from_secs(config.mail.idempotency_retention_secs),
    )));
    // In cluster mode the journal is JetStream's, replicated there: its backups are the
    // NATS servers' (`nats stream backup`), not a file of this node's.
    let backups = (config.persist.backup_every_hours > 0 && !config.cluster.enabled())
        .then(|| tokio::spawn(scheduled_backups(config.clone(), journal.clone())));
    engine
        .become_ready(Services {
            races,
            mail,
            patrol,
            journal,
        })
        .map_err(|e| StartError(e.into()))?;
    let recovery = starting.elapsed();
    metrics::gauge!(crate::metrics::RECOVERY_SECONDS).set(recovery.as_secs_f64());
    tracing::info!(%addr, recovery_ms = recovery.as_millis() as u64, "ready");
    Ok(RunningServer {
        addr,
        engine,
        root,
        listener,
        backups,
        mail_trigger,
        writer: Some(writer),
        cluster,
    })
}

/// What cluster mode gives this node: the connection and its leases, and the runtime both
/// run on (stopped last at shutdown).
struct Cluster {
    /// The connection and the leases, shared with the API.
    node: Node,
    /// Owns the NATS runtime.
    runtime: LinkRuntime,
}

/// Connects to the cluster's NATS servers and starts the leases.
async fn join_cluster(config: &Config) -> Result<Cluster, StartError> {
    let (link, runtime) =
        Link::connect(&config.cluster).map_err(|e| StartError(format!("cluster: {e}")))?;
    let leases = Leases::start(&link)
        .await
        .map_err(|e| StartError(format!("cluster leases: {e}")))?;
    tracing::info!(
        node = link.node(),
        nats = %config.cluster.nats_url,
        replicas = config.cluster.replicas,
        "cluster mode: journal on NATS JetStream, races leased"
    );
    // A journal record is one NATS message: a course of `race.max_course_points` must fit
    // (10 bytes a point at most, plus the rest of the race), or creating it is refused.
    let max_payload = link.context().client().server_info().max_payload;
    let largest_course = config.race.limits.max_course_points.saturating_mul(10) + (64 << 10);
    if max_payload > 0 && max_payload < largest_course {
        tracing::warn!(
            max_payload,
            largest_course,
            "the NATS servers' max_payload is below a course of race.max_course_points: \
             larger courses are refused; raise max_payload (8MB) or lower the limit"
        );
    }
    Ok(Cluster {
        node: Node {
            link,
            leases,
            members: Default::default(),
        },
        runtime,
    })
}

impl Cluster {
    /// The JetStream journal, whose writes of a race's journals go out only while this node
    /// holds the race's lease (and of mail jobs only while it holds `mail`): a node that
    /// could not renew stops writing before another can take over, whatever its actors are
    /// doing.
    fn journal(&self) -> Result<(Journal, JournalOwner), StartError> {
        let leases = self.node.leases.clone();
        let guard: crate::persist::jetstream::WriteGuard = Arc::new(move |actor| {
            match crate::actors::race::lease_of_actor(actor)
                .or_else(|| crate::actors::mail::lease_of_actor(actor))
            {
                Some(lease) if !leases.holds(&lease) => {
                    Err(format!("this node does not hold lease {lease}"))
                }
                _ => Ok(()),
            }
        });
        let (journal, writer) = JetStreamJournal::start(&self.node.link, Some(guard))
            .map_err(|e| StartError(format!("cluster journal: {e}")))?;
        Ok((journal, JournalOwner::JetStream(writer)))
    }
}

/// The embedded journal: sled in the data folder.
fn sled_journal(config: &Config) -> Result<(Journal, JournalOwner), StartError> {
    let data_dir = &config.server.data_dir;
    let store = Store::open(data_dir)
        .map_err(|e| StartError(format!("data folder {}: {e}", data_dir.display())))?;
    let (journal, writer) = JournalWriter::start(store, config.persist.group_commit_max_batch)
        .map_err(|e| StartError(format!("journal writer: {e}")))?;
    Ok((journal, JournalOwner::Sled(writer)))
}

impl RunningServer {
    /// Graceful shutdown: stop accepting, close sockets with 1001, stop actors, flush.
    pub async fn shutdown(mut self) {
        let engine = self.engine.clone();
        engine.begin_shutdown();
        let grace = Duration::from_millis(engine.config.server.shutdown_grace_ms);
        let _ = tokio::time::timeout(grace, &mut self.listener).await;
        self.listener.abort();
        engine.sessions.wait_idle(grace).await;
        if let Some(task) = self.backups.take() {
            task.abort();
        }
        if let Some(task) = self.mail_trigger.take() {
            task.abort();
        }
        if let Err(e) = self
            .root
            .stop_and_wait(Some("shutdown".into()), Some(grace))
            .await
        {
            tracing::warn!("actors did not stop in time: {e}");
        }
        if let Some(services) = engine.services() {
            if let Err(e) = services.journal.flush().await {
                tracing::error!("final journal flush failed: {e}");
            }
        }
        // The writer thread stops once every journal handle is gone; sled flushed above.
        drop(self.writer.take());
        if let Some(cluster) = self.cluster.take() {
            cluster.runtime.stop();
        }
        tracing::info!("stopped");
    }

    /// Calls `announce` with the bound address once SIGTERM and SIGINT are caught (so a
    /// signal sent by whoever waited for the announcement is never the default, abrupt
    /// exit), runs until one comes, then shuts down gracefully.
    pub async fn run_until_signal(self, announce: impl FnOnce(SocketAddr)) {
        let signals = StopSignals::catch();
        announce(self.addr);
        signals.wait().await;
        tracing::info!("signal received; shutting down");
        self.shutdown().await;
    }
}

/// SIGTERM and SIGINT, caught from the moment this exists.
struct StopSignals {
    /// Both handlers, when the platform has them (else Ctrl-C is waited for).
    #[cfg(unix)]
    caught: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl StopSignals {
    fn catch() -> StopSignals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let caught = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(term), Ok(int)) => Some((term, int)),
                _ => None,
            };
            StopSignals { caught }
        }
        #[cfg(not(unix))]
        {
            StopSignals {}
        }
    }

    async fn wait(self) {
        #[cfg(unix)]
        if let Some((mut term, mut int)) = self.caught {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Every `backup_every_hours`: one [`scheduled_backup`]. First, the newest verified backup
/// already in the folder sets the last-success gauge, so an alert on the backups' age holds
/// across a restart.
async fn scheduled_backups(config: Config, journal: Journal) {
    let dir = config.backup_dir();
    match tokio::task::spawn_blocking(move || backup::newest_verified(&dir)).await {
        Ok(Some((summary, taken_at_ms))) => {
            metrics::gauge!(crate::metrics::BACKUP_LAST_SUCCESS).set(taken_at_ms as f64 / 1000.0);
            tracing::info!(path = %summary.path.display(), "newest verified backup found");
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("looking for the newest backup failed: {e}"),
    }
    let every = Duration::from_secs(config.persist.backup_every_hours.saturating_mul(3600));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        ticks.tick().await;
        let _ = scheduled_backup(&config, &journal).await;
    }
}

/// What one scheduled backup did: the backup, and what followed it.
#[derive(Debug)]
pub struct ScheduledBackup {
    /// The verified backup in `persist.backup_dir`.
    pub summary: backup::BackupSummary,
    /// The verified copy in `persist.backup_copy_dir` or why there is none; `None` when
    /// copies are off.
    pub copy: Option<Result<backup::BackupSummary, crate::persist::PersistError>>,
    /// How `persist.after_backup` ended; `None` when there is no hook.
    pub hook: Option<HookOutcome>,
}

/// How one run of the `persist.after_backup` command ended (its metric label is
/// [`HookOutcome::result`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    /// It exited with status 0.
    Ok,
    /// It exited with another status, or was killed by a signal it did not get from us.
    Failed(String),
    /// It ran past `persist.after_backup_timeout_secs` and was killed.
    Timeout,
    /// It could not be started (no such program, not executable).
    SpawnError(String),
}

impl HookOutcome {
    /// The `result` label of `peloton_backup_hooks_total`.
    pub fn result(&self) -> &'static str {
        match self {
            HookOutcome::Ok => "ok",
            HookOutcome::Failed(_) => "failed",
            HookOutcome::Timeout => "timeout",
            HookOutcome::SpawnError(_) => "spawn_error",
        }
    }
}

/// Writes a backup through the journal writer (so it is consistent), verifies it, and keeps
/// only the newest `persist.backup_keep`; then copies it to `persist.backup_copy_dir` and
/// runs `persist.after_backup`. The copy and the hook run on blocking threads after the
/// writer is done with the backup, so the journal never waits for them; their failures are
/// logged and counted, never returned: only a failed backup is an error.
pub async fn scheduled_backup(
    config: &Config,
    journal: &Journal,
) -> Result<ScheduledBackup, crate::persist::PersistError> {
    let dir = config.backup_dir();
    let taken_at_ms = now_ms();
    let summary = match journal
        .backup(backup::scheduled_name(&dir, taken_at_ms))
        .await
    {
        Ok(summary) => summary,
        Err(e) => {
            metrics::counter!(crate::metrics::BACKUPS, "result" => "error").increment(1);
            tracing::error!("scheduled backup failed: {e}");
            return Err(e);
        }
    };
    metrics::counter!(crate::metrics::BACKUPS, "result" => "ok").increment(1);
    metrics::gauge!(crate::metrics::BACKUP_LAST_SUCCESS).set(taken_at_ms as f64 / 1000.0);
    tracing::info!(path = %summary.path.display(), records = summary.records, "scheduled backup written and verified");
    if let Err(e) = backup::rotate_names(&dir, config.persist.backup_keep) {
        tracing::warn!("old backups not rotated: {e}");
    }
    let copy = match config.persist.backup_copy_dir(&config.server.data_dir) {
        Some(copy_dir) => {
            Some(copy_backup(summary.clone(), copy_dir, config.persist.backup_keep).await)
        }
        None => None,
    };
    let timeout = Duration::from_secs(config.persist.after_backup_timeout_secs);
    let hook = match config.persist.after_backup() {
        Some((program, args)) => Some(after_backup(program, args, &summary.path, timeout).await),
        None => None,
    };
    Ok(ScheduledBackup {
        summary,
        copy,
        hook,
    })
}

/// Copies a verified backup into the copy folder and rotates the copies there, on a
/// blocking thread (a slow volume never stalls the runtime); counted by result.
async fn copy_backup(
    summary: backup::BackupSummary,
    dir: std::path::PathBuf,
    keep: usize,
) -> Result<backup::BackupSummary, crate::persist::PersistError> {
    let copied = tokio::task::spawn_blocking(move || {
        let copy = backup::copy_verified(&summary, &dir)?;
        if let Err(e) = backup::rotate_names(&dir, keep) {
            tracing::warn!("old backup copies not rotated: {e}");
        }
        Ok(copy)
    })
    .await
    .unwrap_or_else(|e| {
        Err(crate::persist::PersistError::Backup(format!(
            "the copy task failed: {e}"
        )))
    });
    match &copied {
        Ok(copy) => {
            metrics::counter!(crate::metrics::BACKUP_COPIES, "result" => "ok").increment(1);
            tracing::info!(path = %copy.path.display(), "backup copied and verified");
        }
        Err(e) => {
            metrics::counter!(crate::metrics::BACKUP_COPIES, "result" => "error").increment(1);
            tracing::error!("backup copy failed: {e}");
        }
    }
    copied
}

/// The most output of each stream of the hook kept for the log: enough for an error
/// message, bounded whatever the command prints.
const HOOK_OUTPUT_BYTES: usize = 16 * 1024;

/// Sets its flag when dropped: tells a hook's blocking thread that nobody waits for it any
/// more (the backup task was aborted at shutdown), so it kills the hook instead of holding
/// the runtime's shutdown until the timeout.
struct Abandoned(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Abandoned {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Runs `program` with `args` and `backup` as its last argument (no shell), on a blocking
/// thread, killed at `timeout`; logs and counts how it ended.
async fn after_backup(
    program: &str,
    args: &[String],
    backup: &std::path::Path,
    timeout: Duration,
) -> HookOutcome {
    let mut command = std::process::Command::new(program);
    command
        .args(args)
        .arg(backup)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _abandoned = Abandoned(flag.clone());
    let outcome = tokio::task::spawn_blocking(move || run_hook(command, timeout, &flag))
        .await
        .unwrap_or_else(|e| HookOutcome::SpawnError(format!("the hook task failed: {e}")));
    metrics::counter!(crate::metrics::BACKUP_HOOKS, "result" => outcome.result()).increment(1);
    match &outcome {
        HookOutcome::Ok => tracing::info!(%program, "after_backup succeeded"),
        HookOutcome::Failed(status) => {
            tracing::warn!(
                %program,
                "after_backup failed: {status} (its output is logged at debug)"
            )
        }
        HookOutcome::Timeout => tracing::warn!(
            %program,
            "after_backup still ran after {} s and was killed",
            timeout.as_secs()
        ),
        HookOutcome::SpawnError(e) => tracing::error!(%program, "after_backup did not start: {e}"),
    }
    outcome
}

/// Starts the hook, waits for it until `timeout` (or until `abandoned`), killing its
/// process (only that one) when it outlives either, and logs its output at debug.
fn run_hook(
    mut command: std::process::Command,
    timeout: Duration,
    abandoned: &std::sync::atomic::AtomicBool,
) -> HookOutcome {
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return HookOutcome::SpawnError(e.to_string()),
    };
    let stdout = capture(child.stdout.take());
    let stderr = capture(child.stderr.take());
    let deadline = std::time::Instant::now() + timeout;
    let outcome = loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break HookOutcome::Ok,
            Ok(Some(status)) => break HookOutcome::Failed(status.to_string()),
            Ok(None) if abandoned.load(std::sync::atomic::Ordering::Relaxed) => {
                let _ = child.kill();
                let _ = child.wait();
                tracing::warn!("after_backup killed: the server is shutting down");
                break HookOutcome::Failed("killed at shutdown".into());
            }
            Ok(None) if std::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break HookOutcome::Timeout;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(25)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                break HookOutcome::Failed(format!("waiting for it failed: {e}"));
            }
        }
    };
    // A grandchild may hold the pipes open after the hook ended: its output is not worth
    // waiting for.
    let grace = Duration::from_secs(1);
    let stdout = stdout.recv_timeout(grace).unwrap_or_default();
    let stderr = stderr.recv_timeout(grace).unwrap_or_default();
    tracing::debug!(result = outcome.result(), %stdout, %stderr, "after_backup output");
    outcome
}

/// Reads one of the hook's pipes to its end on its own thread (so a chatty hook never
/// blocks on a full pipe), keeping the first [`HOOK_OUTPUT_BYTES`]; the text arrives on the
/// answered channel once the pipe closes.
fn capture(pipe: Option<impl std::io::Read + Send + 'static>) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(mut pipe) = pipe {
        let reader = move || {
            let mut kept = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let room = HOOK_OUTPUT_BYTES.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            let _ = tx.send(String::from_utf8_lossy(&kept).into_owned());
        };
        if let Err(e) = std::thread::Builder::new()
            .name("after-backup-output".into())
            .spawn(reader)
        {
            tracing::warn!("after_backup output not captured: {e}");
        }
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scheduled_backups_are_verified_and_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::defaults().unwrap();
        config.server.data_dir = dir.path().to_path_buf();
        config.persist.backup_keep = 2;
        let store = Store::open(dir.path()).unwrap();
        let (journal, _writer) = JournalWriter::start(store, 16).unwrap();
        let actor = crate::persist::ActorKey::new("race", "r");
        for seq in 1..=4u64 {
            journal.append(&actor, seq, &[seq]).await.unwrap();
            scheduled_backup(&config, &journal).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut kept: Vec<_> = std::fs::read_dir(config.backup_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        kept.sort();
        assert_eq!(kept.len(), 2);
        let newest = backup::verify(&kept[1]).unwrap();
        assert_eq!(newest.records, 5, "schema version and all four events");
    }

    #[tokio::test]
    async fn a_chatty_hook_is_drained_and_a_missing_one_is_a_spawn_error() {
        let dir = tempfile::tempdir().unwrap();
        let backup = dir.path().join("b.pbak");
        std::fs::write(&backup, b"bytes").unwrap();
        // 4 MiB on stdout, far past a pipe's buffer: the hook ends only if it is read.
        let args = [
            "-c".to_owned(),
            "4194304".to_owned(),
            "/dev/zero".to_owned(),
        ];
        let chatty = after_backup("head", &args, &backup, Duration::from_secs(20)).await;
        assert_eq!(chatty, HookOutcome::Ok);
        let missing = dir.path().join("missing").display().to_string();
        let outcome = after_backup(&missing, &[], &backup, Duration::from_secs(5)).await;
        assert!(matches!(outcome, HookOutcome::SpawnError(_)), "{outcome:?}");
        let failed = after_backup("false", &[], &backup, Duration::from_secs(5)).await;
        assert_eq!(failed.result(), "failed");
    }
}
