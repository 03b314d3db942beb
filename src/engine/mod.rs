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
use crate::config::Config;
use crate::net::http;
use crate::net::mail::{transports, TransportSettings};
use crate::persist::{backup, Journal, JournalWriter, Store};
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
    /// The journal writer thread, joined last.
    writer: Option<JournalWriter>,
}

/// Starts everything and returns once recovery has finished and connections are served.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    crate::metrics::install();
    let keys = Keys::load_or_create(&config).map_err(|e| StartError(e.to_string()))?;
    let data_dir = config.server.data_dir.clone();
    let store = Store::open(&data_dir)
        .map_err(|e| StartError(format!("data folder {}: {e}", data_dir.display())))?;
    let (journal, writer) = JournalWriter::start(store, config.persist.group_commit_max_batch)
        .map_err(|e| StartError(format!("journal writer: {e}")))?;
    let listener = TcpListener::bind(&config.server.listen)
        .await
        .map_err(|e| StartError(format!("cannot listen on {}: {e}", config.server.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError(e.to_string()))?;
    let engine = Arc::new(Engine::new(config.clone(), keys));
    let listener = tokio::spawn(http::serve(listener, engine.clone()));

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
    let races = match RaceDomain::start(
        &root,
        journal.clone(),
        RaceSettings::from_config(&config),
        crate::api::tick_encoder(),
    )
    .await
    {
        Ok(races) => races,
        Err(e) => {
            root.stop(None);
            listener.abort();
            return Err(StartError(format!("recovery failed: {e}")));
        }
    };
    let mail_started = match transports(&TransportSettings::from_config(&config)) {
        Ok(transports) => {
            let settings = MailSettings::from_config(&config);
            MailDomain::start(&root, journal.clone(), settings, transports).await
        }
        Err(e) => Err(e),
    };
    let mail = match mail_started {
        Ok(mail) => mail,
        Err(e) => {
            root.stop(None);
            listener.abort();
            return Err(StartError(format!("mail recovery failed: {e}")));
        }
    };
    let patrol_settings = PatrolSettings::from_config(&config).map_err(StartError)?;
    let patrol = match PatrolDomain::start(
        &root,
        journal.clone(),
        mail.clone(),
        patrol_settings,
        engine.keys.voucher_key().clone(),
        config.supervision.restart_budget,
        restart_window,
    )
    .await
    {
        Ok(patrol) => patrol,
        Err(e) => {
            root.stop(None);
            listener.abort();
            return Err(StartError(format!("patrol recovery failed: {e}")));
        }
    };
    let mail_trigger = Some(tokio::spawn(crate::actors::mail::trigger::race_results(
        mail.clone(),
        races.clone(),
        Duration::from_secs(config.mail.idempotency_retention_secs),
    )));
    let backups = (config.persist.backup_every_hours > 0)
        .then(|| tokio::spawn(scheduled_backups(config.clone(), journal.clone())));
    engine
        .become_ready(Services {
            races,
            mail,
            patrol,
            journal,
        })
        .map_err(|e| StartError(e.into()))?;
    tracing::info!(%addr, "ready");
    Ok(RunningServer {
        addr,
        engine,
        root,
        listener,
        backups,
        mail_trigger,
        writer: Some(writer),
    })
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
        tracing::info!("stopped");
    }

    /// Runs until SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn run_until_signal(self) {
        wait_for_signal().await;
        tracing::info!("signal received; shutting down");
        self.shutdown().await;
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Every `backup_every_hours`: one [`scheduled_backup`].
async fn scheduled_backups(config: Config, journal: Journal) {
    let every = Duration::from_secs(config.persist.backup_every_hours.saturating_mul(3600));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        ticks.tick().await;
        let _ = scheduled_backup(&config, &journal).await;
    }
}

/// Writes a backup through the journal writer (so it is consistent), verifies it, and keeps
/// only the newest `persist.backup_keep`.
pub async fn scheduled_backup(
    config: &Config,
    journal: &Journal,
) -> Result<backup::BackupSummary, crate::persist::PersistError> {
    let dir = config.backup_dir();
    match journal.backup(backup::scheduled_name(&dir, now_ms())).await {
        Ok(summary) => {
            metrics::counter!(crate::metrics::BACKUPS, "result" => "ok").increment(1);
            tracing::info!(path = %summary.path.display(), records = summary.records, "scheduled backup written and verified");
            if let Err(e) = backup::rotate_names(&dir, config.persist.backup_keep) {
                tracing::warn!("old backups not rotated: {e}");
            }
            Ok(summary)
        }
        Err(e) => {
            metrics::counter!(crate::metrics::BACKUPS, "result" => "error").increment(1);
            tracing::error!("scheduled backup failed: {e}");
            Err(e)
        }
    }
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
}
