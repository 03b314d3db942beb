//! The seam between the journal's users and where events are kept.
//!
//! Actors hold a [`super::Journal`], which encodes, decodes and checks sequence numbers; the
//! journal hands bytes to a [`JournalBackend`]. The embedded backend is sled with a single
//! group-committing writer thread ([`super::sled_backend`]); a replicated one plugs in here
//! without any actor changing, as long as it keeps the contract below.
//!
//! The contract every backend keeps:
//! - An append's [`Durable`] resolves only once its events survive a crash of this process
//!   (the acknowledgement rule); appends queued in order are stored in that order.
//! - A snapshot is stored before the events it covers are removed or archived, so a crash
//!   between the two never leaves a gap; losing a queued snapshot only lengthens a replay.
//! - Reads see every append whose `Durable` resolved, one entry per event with its sequence
//!   number, however the backend groups them (sled stores each append as one record).

use super::backup::BackupSummary;
use super::store::{ActorKey, RawEvents};
use super::PersistError;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use tokio::sync::{mpsc, oneshot};

/// A boxed future, so the trait stays object safe and a backend is chosen at run time.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What happens to the events a snapshot covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compaction {
    /// Deleted: the snapshot is all that is needed.
    Delete,
    /// Kept where they are: the history itself is data (a racer's fixes, for replays), and
    /// recovery reads only what follows the snapshot (a range read from its sequence), so
    /// leaving them costs nothing. (Moving them to an archive tree at every snapshot wrote
    /// each fix twice more and halved the durable intake of a large race.)
    Keep,
}

/// Resolves once queued events are durable (see [`super::Journal::enqueue`]).
pub struct Durable(oneshot::Receiver<Result<(), PersistError>>);

impl Durable {
    /// A pending acknowledgement and the sender the backend resolves once the events are on
    /// disk (or failed).
    pub fn pending() -> (oneshot::Sender<Result<(), PersistError>>, Durable) {
        let (done, wait) = oneshot::channel();
        (done, Durable(wait))
    }

    /// Waits until the events are on disk (or the write failed).
    pub async fn wait(self) -> Result<(), PersistError> {
        self.0.await.map_err(|_| PersistError::Closed)?
    }
}

/// Where the outcome of an append or flush goes once the writer made it durable (or failed).
pub type Waiter = oneshot::Sender<Result<(), PersistError>>;

/// One request to a backend's writer, in the order the journal sent them.
pub enum WriteOp {
    /// Store events `first_seq..` of `actor` as one record; `done` resolves once durable.
    Append {
        /// Whose journal.
        actor: ActorKey,
        /// Sequence number of the first event.
        first_seq: u64,
        /// The encoded events, in order.
        events: Vec<Vec<u8>>,
        /// Answered once durable.
        done: Waiter,
    },
    /// Replace `actor`'s snapshot with `state` at `seq`, and do with the events it covers
    /// what `compaction` says.
    Snapshot {
        /// Whose snapshot.
        actor: ActorKey,
        /// The last event it covers.
        seq: u64,
        /// `seq` big-endian ++ the encoded state.
        state: Vec<u8>,
        /// What becomes of the covered events.
        compaction: Compaction,
    },
    /// Resolve once everything sent before is durable.
    Flush {
        /// Answered then.
        done: Waiter,
    },
    /// Write a consistent backup file.
    Backup {
        /// Where the file goes.
        path: PathBuf,
        /// Answered with the verified file's summary.
        done: oneshot::Sender<Result<BackupSummary, PersistError>>,
    },
}

/// The bounded queue into a backend's writer: a full queue slows appenders down instead of
/// growing memory.
pub struct WriteQueue(mpsc::Sender<WriteOp>);

impl WriteQueue {
    /// A queue of `capacity` operations and the writer's end of it.
    pub fn new(capacity: usize) -> (WriteQueue, mpsc::Receiver<WriteOp>) {
        let (tx, rx) = mpsc::channel(capacity);
        (WriteQueue(tx), rx)
    }

    /// Sends one operation; a stopped writer is [`PersistError::Closed`].
    pub async fn send(&self, op: WriteOp) -> Result<(), PersistError> {
        self.0.send(op).await.map_err(|_| PersistError::Closed)
    }
}

/// Where events and snapshots are kept: bytes for actor keys, nothing about what they mean.
///
/// Writes go to the backend's writer through its [`WriteQueue`], in order; the provided
/// methods send them. Reads are the backend's own.
pub trait JournalBackend: Send + Sync + 'static {
    /// The queue into this backend's writer.
    fn writes(&self) -> &WriteQueue;

    /// Queues events `first_seq..` of `actor`, in the caller's order; the returned
    /// [`Durable`] resolves after they are durable.
    fn enqueue(
        &self,
        actor: ActorKey,
        first_seq: u64,
        events: Vec<Vec<u8>>,
    ) -> BoxFuture<'_, Result<Durable, PersistError>> {
        Box::pin(async move {
            let (done, durable) = Durable::pending();
            self.writes()
                .send(WriteOp::Append {
                    actor,
                    first_seq,
                    events,
                    done,
                })
                .await?;
            Ok(durable)
        })
    }

    /// Queues `actor`'s snapshot (`state`: the sequence number it covers, 8 bytes
    /// big-endian, then the encoded state) covering events up to `seq`, and what becomes of
    /// those events.
    fn snapshot(
        &self,
        actor: ActorKey,
        seq: u64,
        state: Vec<u8>,
        compaction: Compaction,
    ) -> BoxFuture<'_, Result<(), PersistError>> {
        Box::pin(self.writes().send(WriteOp::Snapshot {
            actor,
            seq,
            state,
            compaction,
        }))
    }

    /// Resolves once everything queued before is durable.
    fn flush(&self) -> BoxFuture<'_, Result<(), PersistError>> {
        Box::pin(async move {
            let (done, wait) = oneshot::channel();
            self.writes().send(WriteOp::Flush { done }).await?;
            wait.await.map_err(|_| PersistError::Closed)?
        })
    }

    /// Writes a consistent, verified backup file of everything stored.
    fn backup(&self, path: PathBuf) -> BoxFuture<'_, Result<BackupSummary, PersistError>> {
        Box::pin(async move {
            let (done, wait) = oneshot::channel();
            self.writes().send(WriteOp::Backup { path, done }).await?;
            wait.await.map_err(|_| PersistError::Closed)?
        })
    }

    /// `actor`'s latest snapshot: the sequence number it covers and the encoded state.
    fn latest_snapshot(&self, actor: &ActorKey) -> Result<Option<(u64, Vec<u8>)>, PersistError>;

    /// `actor`'s journal entries after `seq`, in order (compacted ones are not included).
    fn events_after(&self, actor: &ActorKey, seq: u64) -> Result<RawEvents, PersistError>;

    /// Every event `actor` ever journaled, archived or not, in order.
    fn history(&self, actor: &ActorKey) -> Result<RawEvents, PersistError>;

    /// The sequence number of `actor`'s newest journal entry (0: none).
    fn last_seq(&self, actor: &ActorKey) -> Result<u64, PersistError>;

    /// Up to `limit` of `actor`'s journal entries below `before` (none: from the newest),
    /// newest first.
    fn page_before(
        &self,
        actor: &ActorKey,
        before: Option<u64>,
        limit: usize,
    ) -> Result<RawEvents, PersistError>;

    /// Every actor of `kind` whose id starts with `id_prefix` (empty: all of them) with a
    /// snapshot or journal entries, in key order.
    fn actors(&self, kind: &str, id_prefix: &str) -> Result<Vec<ActorKey>, PersistError>;
}
