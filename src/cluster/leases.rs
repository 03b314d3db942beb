//! Leases in a JetStream KV bucket: which node owns what (a race, later a patrol shard).
//!
//! The bucket (`<prefix>_leases`) keeps a key for `cluster.lease_ttl_ms` after its last
//! write. Taking a lease is `create` (it succeeds only when no node holds the key),
//! renewing it is `update` against the revision this node last wrote (compare-and-swap), so
//! a node that lost a lease can never renew it over the new owner. A task renews every
//! lease a third of the TTL after its last write; when renewals keep failing, the rule in
//! [`super::lease`] gives the lease up before the bucket could forget it, and every lease
//! lost (taken by another node, or lapsed) is announced on [`Leases::lost`], so its owner
//! stops acting on it.

use super::lease::LeaseTable;
use super::link::Link;
use crate::metrics as m;
use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use async_nats::jetstream::stream::StorageType;
use bytes::Bytes;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Lost leases a slow listener may fall behind by before it misses some (it then treats
/// every lease as lost: see [`Leases::lost`]).
const LOST_CAPACITY: usize = 4096;

/// Whether a lease was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// This node holds it.
    Here,
    /// Another node does: its name.
    ElseWhere(String),
}

/// The node's leases; cloned freely.
#[derive(Clone)]
pub struct Leases {
    /// Shared with the renewal task.
    inner: Arc<Inner>,
}

/// What the handle and the renewal task share.
struct Inner {
    /// The bucket.
    bucket: kv::Store,
    /// The connection, its runtime and this node's name.
    link: Link,
    /// What this node holds, and the timing rule.
    table: Mutex<LeaseTable>,
    /// Announces every lease lost.
    lost: broadcast::Sender<String>,
}

impl Leases {
    /// Finds or creates the lease bucket and starts renewing.
    pub async fn start(link: &Link) -> Result<Leases, String> {
        let ttl = Duration::from_millis(link.config().lease_ttl_ms);
        let name = format!("{}_leases", link.config().prefix);
        let config = kv::Config {
            bucket: name.clone(),
            description: "Peloton leases: which node owns what".into(),
            history: 1,
            max_age: ttl,
            storage: StorageType::File,
            num_replicas: usize::try_from(link.config().replicas).unwrap_or(1),
            ..Default::default()
        };
        let context = link.context().clone();
        let bucket = link
            .run(async move {
                match context.get_key_value(&config.bucket).await {
                    Ok(bucket) => Ok(bucket),
                    Err(_) => context
                        .create_key_value(config)
                        .await
                        .map_err(|e| format!("lease bucket {name}: {e}")),
                }
            })
            .await??;
        let leases = Leases {
            inner: Arc::new(Inner {
                bucket,
                link: link.clone(),
                table: Mutex::new(LeaseTable::new(ttl)),
                lost: broadcast::channel(LOST_CAPACITY).0,
            }),
        };
        // Every series from the first scrape, so rates and alerts see the first event.
        metrics::gauge!(m::CLUSTER_LEASES_HELD).set(0.0);
        for outcome in ["ok", "taken", "failed"] {
            metrics::counter!(m::CLUSTER_LEASE_RENEWALS, "outcome" => outcome).increment(0);
        }
        metrics::counter!(m::CLUSTER_LEASES_LOST).increment(0);
        let renewer = Arc::downgrade(&leases.inner);
        let tick = ttl / 10;
        link.spawn(async move {
            let mut every = tokio::time::interval(tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(inner) = renewer.upgrade() else {
                    return;
                };
                inner.renew_due().await;
            }
        });
        Ok(leases)
    }

    /// Takes lease `key` for this node, unless another node holds it. A lease under this
    /// node's own name that this process does not hold (left by an earlier run of the node)
    /// is taken over.
    pub async fn take(&self, key: &str) -> Result<Taken, String> {
        if self.holds(key) {
            return Ok(Taken::Here);
        }
        let inner = self.inner.clone();
        let key = key.to_owned();
        self.inner
            .link
            .run(async move { inner.take(&key).await })
            .await?
    }

    /// Whether this node may act on `key` now.
    pub fn holds(&self, key: &str) -> bool {
        self.inner.table().holds(key, Instant::now())
    }

    /// The node holding `key` when it is another one: `None` when this node holds it,
    /// nobody does, or the bucket could not say (the caller then acts itself, and is told
    /// by the lease or the journal if it may not).
    pub async fn holder_elsewhere(&self, key: &str) -> Option<String> {
        if self.holds(key) {
            return None;
        }
        match self.owner(key).await {
            Ok(Some(owner)) if owner != self.inner.link.node() && !owner.is_empty() => Some(owner),
            _ => None,
        }
    }

    /// Which node holds `key`, if any.
    pub async fn owner(&self, key: &str) -> Result<Option<String>, String> {
        let bucket = self.inner.bucket.clone();
        let key = key.to_owned();
        self.inner
            .link
            .run(async move {
                let value = bucket
                    .get(&key)
                    .await
                    .map_err(|e| format!("lease {key}: {e}"))?;
                Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
            })
            .await?
    }

    /// Gives `key` up at once (a race put to sleep, a node shutting down), so another node
    /// need not wait for it to lapse.
    pub async fn give_up(&self, key: &str) {
        let revision = {
            let mut table = self.inner.table();
            let revision = table.revision(key);
            table.forget(key);
            metrics::gauge!(m::CLUSTER_LEASES_HELD).set(table.keys().len() as f64);
            revision
        };
        let Some(revision) = revision else {
            return;
        };
        let bucket = self.inner.bucket.clone();
        let key = key.to_owned();
        let _ = self
            .inner
            .link
            .run(async move {
                if let Err(e) = bucket.purge_expect_revision(&key, Some(revision)).await {
                    tracing::debug!("lease {key} not given up (another node may hold it): {e}");
                }
            })
            .await;
    }

    /// How long the bucket keeps a lease after its last write.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.inner.link.config().lease_ttl_ms)
    }

    /// Every lease this node holds.
    pub fn held(&self) -> Vec<String> {
        self.inner.table().keys()
    }

    /// The leases this node loses from now on. A receiver that fell behind gets
    /// `RecvError::Lagged` and must treat every lease it acts on as lost.
    pub fn lost(&self) -> broadcast::Receiver<String> {
        self.inner.lost.subscribe()
    }
}

impl Inner {
    /// The table (a poisoned lock still holds a consistent table: every change is one call).
    fn table(&self) -> std::sync::MutexGuard<'_, LeaseTable> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `create`, else take over a lease left under this node's name.
    async fn take(&self, key: &str) -> Result<Taken, String> {
        let node = Bytes::from(self.link.node().to_owned());
        let sent = Instant::now();
        match self.bucket.create(key, node.clone()).await {
            Ok(revision) => {
                self.written(key, revision, sent);
                return Ok(Taken::Here);
            }
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("lease {key}: {e}")),
        }
        let entry = self
            .bucket
            .entry(key)
            .await
            .map_err(|e| format!("lease {key}: {e}"))?;
        let Some(entry) = entry else {
            // Lapsed between the two requests: the next attempt creates it.
            return Ok(Taken::ElseWhere(String::new()));
        };
        let holder = String::from_utf8_lossy(&entry.value).into_owned();
        if holder != self.link.node() || entry.operation != kv::Operation::Put {
            return Ok(Taken::ElseWhere(holder));
        }
        let sent = Instant::now();
        match self.bucket.update(key, node, entry.revision).await {
            Ok(revision) => {
                self.written(key, revision, sent);
                Ok(Taken::Here)
            }
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                Ok(Taken::ElseWhere(holder))
            }
            Err(e) => Err(format!("lease {key}: {e}")),
        }
    }

    /// Renews what is due, and announces what was taken or lapsed.
    async fn renew_due(&self) {
        let due = self.table().due(Instant::now());
        let node = Bytes::from(self.link.node().to_owned());
        for (key, revision) in due {
            let sent = Instant::now();
            match self.bucket.update(&key, node.clone(), revision).await {
                Ok(revision) => {
                    metrics::counter!(m::CLUSTER_LEASE_RENEWALS, "outcome" => "ok").increment(1);
                    let mut table = self.table();
                    // Given up meanwhile: stays given up.
                    if table.revision(&key).is_some() {
                        table.written(&key, revision, sent);
                    }
                }
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                    tracing::warn!(lease = %key, "lease taken by another node");
                    metrics::counter!(m::CLUSTER_LEASE_RENEWALS, "outcome" => "taken").increment(1);
                    metrics::counter!(m::CLUSTER_LEASES_LOST).increment(1);
                    self.table().forget(&key);
                    let _ = self.lost.send(key);
                }
                // Tried again at the next tick, until the lease lapses.
                Err(e) => {
                    tracing::warn!(lease = %key, "lease not renewed: {e}");
                    metrics::counter!(m::CLUSTER_LEASE_RENEWALS, "outcome" => "failed")
                        .increment(1);
                }
            }
        }
        let lapsed = self.table().lapse(Instant::now());
        for key in lapsed {
            tracing::error!(lease = %key, "lease lapsed: renewals failed for too long");
            metrics::counter!(m::CLUSTER_LEASES_LOST).increment(1);
            let _ = self.lost.send(key);
        }
        self.count_held();
    }

    /// Records a lease taken at `revision`, and the new number held.
    fn written(&self, key: &str, revision: u64, sent: Instant) {
        let mut table = self.table();
        table.written(key, revision, sent);
        metrics::gauge!(m::CLUSTER_LEASES_HELD).set(table.keys().len() as f64);
    }

    /// Sets [`m::CLUSTER_LEASES_HELD`] to what the table holds now.
    fn count_held(&self) {
        metrics::gauge!(m::CLUSTER_LEASES_HELD).set(self.table().keys().len() as f64);
    }
}
