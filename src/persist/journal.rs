//! The journal writer: one OS thread owns every write to sled and commits in groups.
//!
//! Actors send [`WriteOp`]s through a bounded channel. The writer takes everything queued
//! (up to `group_commit_max_batch`), applies it, flushes once, and only then resolves each
//! append's future. Under load many appends share one fsync; alone, an append costs one. A
//! single writer also makes backups consistent: while it copies the database nothing else
//! writes.

use super::store::{ActorKey, Store};
use super::{backup, record, PersistError};
use crate::metrics as m;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// Capacity of the channel into the writer; a full channel slows appenders down instead of
/// growing memory.
const QUEUE_CAPACITY: usize = 65_536;

/// Where the outcome of an append or flush goes once its group is on disk.
type Waiter = oneshot::Sender<Result<(), PersistError>>;

/// What happens to the events a snapshot covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compaction {
    /// Deleted: the snapshot is all that is needed.
    Delete,
    /// Moved to the archive tree: the history itself is data (a racer's fixes, for
    /// replays), but recovery no longer reads it.
    Archive,
}

/// One request to the writer.
enum WriteOp {
    /// Store events `first_seq..` of `actor`; `done` resolves after the flush.
    Append {
        actor: ActorKey,
        first_seq: u64,
        events: Vec<Vec<u8>>,
        done: oneshot::Sender<Result<(), PersistError>>,
    },
    /// Replace `actor`'s snapshot with `state` at `seq` and drop (or archive) the events it
    /// covers.
    Snapshot {
        actor: ActorKey,
        seq: u64,
        state: Vec<u8>,
        compaction: Compaction,
    },
    /// Resolve once everything sent before is on disk.
    Flush {
        done: oneshot::Sender<Result<(), PersistError>>,
    },
    /// Write a consistent backup file.
    Backup {
        path: PathBuf,
        done: oneshot::Sender<Result<backup::BackupSummary, PersistError>>,
    },
}

/// A cheap, cloneable handle for appending to the journal.
#[derive(Clone)]
pub struct Journal {
    /// Into the writer thread.
    tx: mpsc::Sender<WriteOp>,
}

/// Owns the writer thread; dropping every [`Journal`] and calling [`JournalWriter::join`]
/// drains and stops it.
pub struct JournalWriter {
    /// The thread, joined at shutdown so the last flush completes before exit.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl JournalWriter {
    /// Starts the writer thread over `store`.
    pub fn start(store: Store, max_batch: usize) -> Result<(Journal, JournalWriter), PersistError> {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("peloton-journal".into())
            .spawn(move || writer_loop(store, rx, max_batch.max(1)))?;
        Ok((
            Journal { tx },
            JournalWriter {
                thread: Some(thread),
            },
        ))
    }

    /// Waits for the writer to drain its queue and stop. Call after every [`Journal`] handle
    /// is dropped, from a blocking context.
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Resolves once queued events are durable (see [`Journal::enqueue`]).
pub struct Durable(oneshot::Receiver<Result<(), PersistError>>);

impl Durable {
    /// Waits until the events are on disk (or the write failed).
    pub async fn wait(self) -> Result<(), PersistError> {
        self.0.await.map_err(|_| PersistError::Closed)?
    }
}

impl Journal {
    /// Appends already-encoded events for `actor`, numbered from `first_seq`, and waits until
    /// they are durable.
    pub async fn append_encoded(
        &self,
        actor: &ActorKey,
        first_seq: u64,
        events: Vec<Vec<u8>>,
    ) -> Result<(), PersistError> {
        self.enqueue_encoded(actor, first_seq, events)
            .await?
            .wait()
            .await
    }

    /// Queues already-encoded events now, in the caller's order, and returns what resolves
    /// once they are durable: an actor that must not wait for each flush in turn (one
    /// writer for many conversations) queues in order and answers when each resolves, so
    /// its writes share group commits.
    pub async fn enqueue_encoded(
        &self,
        actor: &ActorKey,
        first_seq: u64,
        events: Vec<Vec<u8>>,
    ) -> Result<Durable, PersistError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(WriteOp::Append {
                actor: actor.clone(),
                first_seq,
                events,
                done,
            })
            .await
            .map_err(|_| PersistError::Closed)?;
        Ok(Durable(wait))
    }

    /// Encodes and appends `events` for `actor` from `first_seq`, waiting for durability.
    pub async fn append<E: Serialize>(
        &self,
        actor: &ActorKey,
        first_seq: u64,
        events: &[E],
    ) -> Result<(), PersistError> {
        self.enqueue(actor, first_seq, events).await?.wait().await
    }

    /// Encodes and queues `events` (see [`Journal::enqueue_encoded`]).
    pub async fn enqueue<E: Serialize>(
        &self,
        actor: &ActorKey,
        first_seq: u64,
        events: &[E],
    ) -> Result<Durable, PersistError> {
        let encoded = events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                record::encode(e).map_err(|reason| PersistError::Corrupt {
                    actor: actor.to_string(),
                    seq: first_seq + i as u64,
                    reason: format!("cannot encode: {reason}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.enqueue_encoded(actor, first_seq, encoded).await
    }

    /// [`Journal::append`] for an actor answering a client: a failure is logged with the
    /// actor's key and becomes `unavailable` with `retry_hint` as the message, since the
    /// events were neither stored nor applied and sending the request again is safe.
    pub async fn append_or_unavailable<E: Serialize>(
        &self,
        actor: &ActorKey,
        first_seq: u64,
        events: &[E],
        retry_hint: &str,
    ) -> Result<(), crate::error::Rejection> {
        self.append(actor, first_seq, events).await.map_err(|e| {
            tracing::error!(%actor, first_seq, "journal append failed: {e}");
            crate::error::Rejection::new(crate::error::ErrorCode::Unavailable, retry_hint)
        })
    }

    /// Queues a snapshot of `state` covering events up to `seq`. Not awaited: a lost snapshot
    /// only means a longer replay, never lost data.
    pub async fn snapshot<S: Serialize>(
        &self,
        actor: &ActorKey,
        seq: u64,
        state: &S,
        compaction: Compaction,
    ) -> Result<(), PersistError> {
        let mut bytes = seq.to_be_bytes().to_vec();
        let body = record::encode(state).map_err(|reason| PersistError::Corrupt {
            actor: actor.to_string(),
            seq,
            reason: format!("cannot encode snapshot: {reason}"),
        })?;
        bytes.extend_from_slice(&body);
        self.tx
            .send(WriteOp::Snapshot {
                actor: actor.clone(),
                seq,
                state: bytes,
                compaction,
            })
            .await
            .map_err(|_| PersistError::Closed)
    }

    /// Waits until everything queued before is durable.
    pub async fn flush(&self) -> Result<(), PersistError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(WriteOp::Flush { done })
            .await
            .map_err(|_| PersistError::Closed)?;
        wait.await.map_err(|_| PersistError::Closed)?
    }

    /// Writes a consistent backup of the whole database to `path` and verifies it.
    pub async fn backup(&self, path: PathBuf) -> Result<backup::BackupSummary, PersistError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(WriteOp::Backup { path, done })
            .await
            .map_err(|_| PersistError::Closed)?;
        wait.await.map_err(|_| PersistError::Closed)?
    }
}

fn writer_loop(store: Store, mut rx: mpsc::Receiver<WriteOp>, max_batch: usize) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        commit(&store, &mut batch);
    }
    if let Err(e) = store.db.flush() {
        tracing::error!("final journal flush failed: {e}");
    }
}

/// Applies one group, flushes once, then answers everyone in it.
///
/// All appends of the group go into one `sled::Batch`: sled writes (and syncs) a buffer per
/// applied batch, so one batch per group is what makes group commit pay. A snapshot first
/// applies the appends queued before it, so it never compacts events not yet written.
fn commit(store: &Store, batch: &mut Vec<WriteOp>) {
    let mut waiting: Vec<(Waiter, Result<(), PersistError>)> = Vec::new();
    let mut backups = Vec::new();
    let mut pending = PendingAppends::default();
    let mut appended = 0u64;
    for op in batch.drain(..) {
        match op {
            WriteOp::Append {
                actor,
                first_seq,
                events,
                done,
            } => {
                pending.count += events.len() as u64;
                for (i, event) in events.into_iter().enumerate() {
                    pending
                        .batch
                        .insert(actor.journal_key(first_seq + i as u64), event);
                }
                pending.waiters.push(done);
            }
            WriteOp::Snapshot {
                actor,
                seq,
                state,
                compaction,
            } => {
                appended += pending.apply(store, &mut waiting);
                if let Err(e) = snapshot(store, &actor, seq, state, compaction) {
                    tracing::warn!(%actor, seq, "snapshot not written: {e}");
                }
            }
            WriteOp::Flush { done } => waiting.push((done, Ok(()))),
            WriteOp::Backup { path, done } => backups.push((path, done)),
        }
    }
    appended += pending.apply(store, &mut waiting);
    let started = Instant::now();
    let flushed = store.db.flush().map(|_| ()).map_err(PersistError::from);
    metrics::histogram!(m::JOURNAL_FLUSH_SECONDS).record(started.elapsed().as_secs_f64());
    metrics::histogram!(m::JOURNAL_BATCH_EVENTS).record(appended as f64);
    metrics::counter!(m::JOURNAL_FLUSHES).increment(1);
    metrics::counter!(m::JOURNAL_APPENDS).increment(appended);
    if let Err(e) = &flushed {
        tracing::error!("journal flush failed: {e}");
    }
    for (done, result) in waiting {
        let _ = done.send(result.and_then(|()| flushed.clone()));
    }
    // Everything before is flushed and nothing else writes while we copy: consistent.
    for (path, done) in backups {
        let _ = done.send(backup::write_verified(&store.db, &path));
    }
}

/// Appends collected for one `sled::Batch`, and who waits for them.
#[derive(Default)]
struct PendingAppends {
    /// The journal inserts.
    batch: sled::Batch,
    /// Events in the batch.
    count: u64,
    /// One per append request.
    waiters: Vec<Waiter>,
}

impl PendingAppends {
    /// Applies the collected appends; their waiters get the outcome after the flush. Returns
    /// how many events were written.
    fn apply(
        &mut self,
        store: &Store,
        waiting: &mut Vec<(Waiter, Result<(), PersistError>)>,
    ) -> u64 {
        if self.waiters.is_empty() {
            return 0;
        }
        let pending = std::mem::take(self);
        let result = store
            .journal
            .apply_batch(pending.batch)
            .map_err(PersistError::from);
        let written = if result.is_ok() { pending.count } else { 0 };
        waiting.extend(pending.waiters.into_iter().map(|w| (w, result.clone())));
        written
    }
}

/// Writes the snapshot first, then removes the events it covers; a crash between the two
/// leaves extra events that recovery skips, never a gap.
fn snapshot(
    store: &Store,
    actor: &ActorKey,
    seq: u64,
    state: Vec<u8>,
    compaction: Compaction,
) -> Result<(), PersistError> {
    store.snapshots.insert(actor.as_str(), state)?;
    let mut removed = sled::Batch::default();
    let mut archived = sled::Batch::default();
    for entry in store
        .journal
        .range(actor.journal_prefix()..=actor.journal_key(seq))
    {
        let (key, value) = entry?;
        if compaction == Compaction::Archive {
            archived.insert(key.clone(), value);
        }
        removed.remove(key);
    }
    // Archive before removing: a crash in between leaves an event in both trees (history
    // reads deduplicate), never in neither.
    store.archive.apply_batch(archived)?;
    store.journal.apply_batch(removed)?;
    metrics::counter!(m::SNAPSHOTS).increment(1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn appends_are_readable_in_order_after_reopen() {
        let (dir, store) = open();
        let (journal, writer) = JournalWriter::start(store.clone(), 16).unwrap();
        let actor = ActorKey::new("race", "a");
        journal
            .append(&actor, 1, &["one".to_string(), "two".to_string()])
            .await
            .unwrap();
        journal
            .append(&actor, 3, &["three".to_string()])
            .await
            .unwrap();
        drop(journal);
        tokio::task::spawn_blocking(move || writer.join())
            .await
            .unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let r = store.load::<String, String>(&actor).unwrap();
        assert!(r.snapshot.is_none());
        assert_eq!(r.last_seq, 3);
        assert_eq!(
            r.events
                .iter()
                .map(|(s, e)| (*s, e.as_str()))
                .collect::<Vec<_>>(),
            vec![(1, "one"), (2, "two"), (3, "three")]
        );
        assert_eq!(store.actors("race").unwrap(), vec![actor]);
    }

    #[tokio::test]
    async fn snapshots_compact_the_events_they_cover() {
        let (_dir, store) = open();
        let (journal, _writer) = JournalWriter::start(store.clone(), 16).unwrap();
        let a = ActorKey::new("race", "a");
        let b = ActorKey::new("race", "b");
        for seq in 1..=5u64 {
            journal.append(&a, seq, &[seq]).await.unwrap();
        }
        journal.append(&b, 1, &[100u64]).await.unwrap();
        journal
            .snapshot(&a, 3, &30u64, Compaction::Delete)
            .await
            .unwrap();
        journal.flush().await.unwrap();
        let r = store.load::<u64, u64>(&a).unwrap();
        assert_eq!(r.snapshot, Some((3, 30)));
        assert_eq!(r.events, vec![(4, 4), (5, 5)]);
        assert_eq!(
            store.journal_len(),
            3,
            "events 1..=3 of a are compacted, b's stays"
        );
        assert_eq!(store.actors("race").unwrap(), vec![a, b]);
        assert!(store.actors("mail").unwrap().is_empty());
    }

    #[tokio::test]
    async fn archived_compaction_keeps_the_history_but_not_in_recovery() {
        let (_dir, store) = open();
        let (journal, _writer) = JournalWriter::start(store.clone(), 16).unwrap();
        let racer = ActorKey::new("racer", "r.1");
        for seq in 1..=5u64 {
            journal.append(&racer, seq, &[seq * 10]).await.unwrap();
        }
        journal
            .snapshot(&racer, 4, &40u64, Compaction::Archive)
            .await
            .unwrap();
        journal.flush().await.unwrap();
        let recovered = store.load::<u64, u64>(&racer).unwrap();
        assert_eq!(
            (recovered.snapshot, recovered.events),
            (Some((4, 40)), vec![(5, 50)])
        );
        let history = store.history::<u64>(&racer).unwrap();
        assert_eq!(history, (1..=5u64).map(|s| (s, s * 10)).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_damaged_record_stops_recovery_naming_actor_and_seq() {
        let (_dir, store) = open();
        let (journal, _writer) = JournalWriter::start(store.clone(), 16).unwrap();
        let actor = ActorKey::new("race", "x");
        journal.append(&actor, 1, &[1u64, 2]).await.unwrap();
        store
            .journal
            .insert(
                actor.journal_key(2),
                vec![record::RECORD_VERSION, 0xff, 0xff],
            )
            .unwrap();
        let err = store.load::<u64, u64>(&actor).unwrap_err().to_string();
        assert!(
            err.contains("race/x") && err.contains("sequence 2"),
            "{err}"
        );
        store.journal.remove(actor.journal_key(2)).unwrap();
        journal.append(&actor, 3, &[3u64]).await.unwrap();
        let err = store.load::<u64, u64>(&actor).unwrap_err().to_string();
        assert!(
            err.contains("jumps"),
            "a gap is reported, not skipped: {err}"
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let (dir, store) = open();
        store
            .db
            .open_tree("meta")
            .unwrap()
            .insert("schema_version", &99u32.to_be_bytes())
            .unwrap();
        store.db.flush().unwrap();
        drop(store);
        assert!(matches!(
            Store::open(dir.path()),
            Err(PersistError::SchemaMismatch { found: 99, .. })
        ));
    }
}
