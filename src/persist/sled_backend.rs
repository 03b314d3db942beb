//! The embedded backend: sled, with one OS thread that owns every write and commits in groups.
//!
//! Actors' appends arrive as [`WriteOp`]s through a bounded channel. The writer takes
//! everything queued (up to `group_commit_max_batch`), applies it, flushes once, and only
//! then resolves each append's [`Durable`]. Under load many appends share one fsync; alone,
//! an append costs one. A single writer also makes backups consistent: while it copies the
//! database nothing else writes. Reads go straight to the [`Store`].
//!
//! Each append becomes one journal record (one sled key, however many events it holds, see
//! [`super::store`]): the writer is the only thread that inserts, so what it spends per key
//! (tree walk, node splits, allocation) bounds intake; per event it was half the server's CPU
//! under saturated fix intake.

use super::backend::{Compaction, JournalBackend, Waiter, WriteOp, WriteQueue};
use super::store::{record_end, ActorKey, RawEvents, Store};
use super::{backup, record, Journal, PersistError};
use crate::metrics as m;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// Capacity of the channel into the writer; a full channel slows appenders down instead of
/// growing memory.
const QUEUE_CAPACITY: usize = 65_536;

/// The sled backend: appends to the writer thread, reads from the database.
pub struct SledJournal {
    /// Into the writer thread.
    writes: WriteQueue,
    /// The database, read directly: sled's reads see every applied batch.
    store: Store,
}

impl JournalBackend for SledJournal {
    fn writes(&self) -> &WriteQueue {
        &self.writes
    }

    fn latest_snapshot(&self, actor: &ActorKey) -> Result<Option<(u64, Vec<u8>)>, PersistError> {
        self.store.latest_snapshot(actor)
    }

    fn events_after(&self, actor: &ActorKey, seq: u64) -> Result<RawEvents, PersistError> {
        self.store.events_after(actor, seq)
    }

    fn history(&self, actor: &ActorKey) -> Result<RawEvents, PersistError> {
        self.store.history(actor)
    }

    fn last_seq(&self, actor: &ActorKey) -> Result<u64, PersistError> {
        self.store.last_seq(actor)
    }

    fn page_before(
        &self,
        actor: &ActorKey,
        before: Option<u64>,
        limit: usize,
    ) -> Result<RawEvents, PersistError> {
        self.store.page_before(actor, before, limit)
    }

    fn actors(&self, kind: &str, id_prefix: &str) -> Result<Vec<ActorKey>, PersistError> {
        self.store.actors(kind, id_prefix)
    }
}

/// Owns the writer thread; dropping every [`Journal`] and calling [`JournalWriter::join`]
/// drains and stops it.
pub struct JournalWriter {
    /// The thread, joined at shutdown so the last flush completes before exit.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl JournalWriter {
    /// Starts the writer thread over `store` and returns the journal that writes through it.
    pub fn start(store: Store, max_batch: usize) -> Result<(Journal, JournalWriter), PersistError> {
        let (writes, rx) = WriteQueue::new(QUEUE_CAPACITY);
        let store_for_reads = store.clone();
        let thread = std::thread::Builder::new()
            .name("peloton-journal".into())
            .spawn(move || writer_loop(store, rx, max_batch.max(1)))?;
        Ok((
            Journal::new(Arc::new(SledJournal {
                writes,
                store: store_for_reads,
            })),
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
/// applied batch, so one batch per group is what makes group commit pay. Snapshots are
/// written after the group's appends, and only ever cover events of earlier groups.
fn commit(store: &Store, batch: &mut Vec<WriteOp>) {
    let mut waiting: Vec<(Waiter, Result<(), PersistError>)> = Vec::new();
    let mut backups = Vec::new();
    let mut pending = PendingAppends::default();
    let mut appended = 0u64;
    let mut snapshots = Vec::new();
    for op in batch.drain(..) {
        match op {
            WriteOp::Append {
                actor,
                first_seq,
                events,
                done,
            } => {
                pending.count += events.len() as u64;
                // An empty append stores nothing but is still answered after the flush.
                if !events.is_empty() {
                    pending
                        .batch
                        .insert(actor.journal_key(first_seq), record::batch(events));
                }
                pending.waiters.push(done);
            }
            // After the group's appends, so they go in one `sled::Batch` however many
            // snapshots are queued among them: an actor queues its snapshot only once the
            // events it covers are durable (an earlier group), and later appends of the same
            // actor lie beyond the snapshot's range.
            WriteOp::Snapshot {
                actor,
                seq,
                state,
                compaction,
            } => snapshots.push((actor, seq, state, compaction)),
            WriteOp::Flush { done } => waiting.push((done, Ok(()))),
            WriteOp::Backup { path, done } => backups.push((path, done)),
        }
    }
    appended += pending.apply(store, &mut waiting);
    for (actor, seq, state, compaction) in snapshots {
        if let Err(e) = snapshot(store, &actor, seq, state, compaction) {
            tracing::warn!(%actor, seq, "snapshot not written: {e}");
        }
    }
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
    /// The journal inserts: one record per append.
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

/// Writes the snapshot first, then (for [`Compaction::Delete`]) removes the records it
/// covers entirely; a crash between the two leaves extra events that recovery skips, never a
/// gap. A record whose last event lies past `seq` (an append the snapshot's sequence falls
/// inside) stays whole: recovery reads it and skips its covered events. A record whose header
/// does not read stays too: deleting what cannot be read would hide the damage.
fn snapshot(
    store: &Store,
    actor: &ActorKey,
    seq: u64,
    state: Vec<u8>,
    compaction: Compaction,
) -> Result<(), PersistError> {
    store.snapshots.insert(actor.as_str(), state)?;
    if compaction == Compaction::Delete {
        let mut removed = sled::Batch::default();
        for entry in store
            .journal
            .range(actor.journal_prefix()..=actor.journal_key(seq))
        {
            let (key, value) = entry?;
            match record_end(actor, &key, &value) {
                Ok(last) if last <= seq => removed.remove(key),
                Ok(_) => {}
                Err(e) => tracing::warn!(%actor, seq, "journal record kept at compaction: {e}"),
            }
        }
        store.journal.apply_batch(removed)?;
    }
    metrics::counter!(m::SNAPSHOTS).increment(1);
    Ok(())
}
