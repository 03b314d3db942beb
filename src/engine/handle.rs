//! The handle every connection shares with the server: configuration, keys, the running
//! domains once recovery finished, readiness, the shutdown signal and the open sessions.
//!
//! It sits below both the assembly ([`super`], which creates and fills it) and the
//! connection code (`net::http`, `net::session`, `api`), which only read it, so neither
//! depends on how the server is started.

use super::writers::WriterRuntime;
use crate::actors::mail::MailDomain;
use crate::actors::patrol::PatrolDomain;
use crate::actors::race::RaceDomain;
use crate::auth::Keys;
use crate::config::Config;
use crate::persist::Journal;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// The running domains, available once recovery has finished.
pub struct Services {
    /// The race domain.
    pub races: RaceDomain,
    /// The mail domain.
    pub mail: MailDomain,
    /// The patrol domain.
    pub patrol: PatrolDomain,
    /// The journal, for backups and the final flush.
    pub journal: Journal,
}

/// What every connection handler shares.
pub struct Engine {
    /// The effective configuration.
    pub config: Config,
    /// Token verification.
    pub keys: Keys,
    /// Set once, when recovery has finished.
    services: OnceLock<Services>,
    /// True from the end of recovery until shutdown begins.
    ready: AtomicBool,
    /// Flips to true when shutdown begins; every session watches it.
    shutdown: watch::Sender<bool>,
    /// Open WebSocket sessions, so shutdown can wait for them to close.
    pub sessions: Arc<SessionTracker>,
    /// Where the sockets' writers run (`ws.writer_threads`; none: on the server's runtime).
    writers: Option<WriterRuntime>,
    /// Cluster mode: this node's connection and leases (none: one node, which serves all).
    pub cluster: Option<crate::cluster::Node>,
}

impl Engine {
    /// A server that is not ready yet: no services, not shutting down, no sessions.
    pub fn new(config: Config, keys: Keys, cluster: Option<crate::cluster::Node>) -> Engine {
        let (shutdown, _) = watch::channel(false);
        let writers = match config.ws.writer_threads {
            0 => None,
            threads => match WriterRuntime::start(threads, config.ws.writer_nice) {
                Ok(writers) => Some(writers),
                Err(e) => {
                    tracing::warn!("socket writers run on the server's runtime: {e}");
                    None
                }
            },
        };
        Engine {
            config,
            keys,
            services: OnceLock::new(),
            ready: AtomicBool::new(false),
            shutdown,
            sessions: Arc::new(SessionTracker::default()),
            writers,
            cluster,
        }
    }

    /// Runs a socket's writer: an audience's (spectators') on the writers' runtime, below
    /// the server's priority, when there is one; any other on the server's runtime.
    pub fn spawn_writer<F>(&self, audience: bool, writer: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.writers {
            Some(writers) if audience => writers.spawn(writer),
            _ => tokio::spawn(writer),
        }
    }

    /// Hands over the recovered domains and starts serving requests; refused if they were
    /// handed over before, since sessions may already hold the first ones.
    pub fn become_ready(&self, services: Services) -> Result<(), &'static str> {
        self.services
            .set(services)
            .map_err(|_| "services were set twice")?;
        self.ready.store(true, Ordering::Release);
        metrics::gauge!(crate::metrics::READY).set(1.0);
        Ok(())
    }

    /// Stops serving new requests and tells every session to close.
    pub fn begin_shutdown(&self) {
        self.ready.store(false, Ordering::Release);
        metrics::gauge!(crate::metrics::READY).set(0.0);
        let _ = self.shutdown.send(true);
    }

    /// The domains, or `None` while recovering.
    pub fn services(&self) -> Option<&Services> {
        self.services.get()
    }

    /// Whether requests are served (recovery done, not shutting down).
    pub fn is_ready(&self) -> bool {
        // In cluster mode a node without its NATS connection can neither write a journal
        // nor renew a lease: a load balancer should send sockets elsewhere.
        self.ready.load(Ordering::Acquire)
            && self
                .cluster
                .as_ref()
                .is_none_or(|node| node.link.connected())
    }

    /// A receiver that changes to `true` when shutdown begins.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}

/// Counts open sessions and wakes a waiter when the last one closes.
#[derive(Default)]
pub struct SessionTracker {
    /// Sessions open now.
    open: AtomicUsize,
    /// Notified whenever a session closes.
    closed: Notify,
}

/// Held by a session for its lifetime.
pub struct SessionGuard(Arc<SessionTracker>);

impl SessionTracker {
    /// Registers a session until the guard drops.
    pub fn enter(self: &Arc<Self>) -> SessionGuard {
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        metrics::gauge!(crate::metrics::OPEN_SOCKETS).set(open as f64);
        SessionGuard(self.clone())
    }

    /// Sessions open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Waits until every session closed, or `limit` passed.
    pub async fn wait_idle(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            loop {
                let notified = self.closed.notified();
                if self.open() == 0 {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let open = self.0.open.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        metrics::gauge!(crate::metrics::OPEN_SOCKETS).set(open as f64);
        self.0.closed.notify_waiters();
    }
}
