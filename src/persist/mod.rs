//! Durable state: a per-actor journal of events plus snapshots, in sled.
//!
//! - [`store`]: the sled layout: opens the database, checks the schema version, raw reads.
//! - [`journal`]: the handle every actor shell writes and reads through: typed events and
//!   snapshots, gap checks, recovery (`restore`: snapshot + later events folded).
//! - [`backend`]: the [`JournalBackend`] trait under it, and the contract a backend keeps
//!   (acknowledged means durable, snapshot before compaction).
//! - [`sled_backend`]: the embedded backend: a single writer thread whose group commit
//!   batches appends and flushes them together; an append resolves only once on disk.
//! - [`record`]: the versioned byte encoding of every stored value, and the batch framing
//!   that stores all the events of one append as one journal record.
//! - [`jetstream`]: the replicated backend (cluster mode): journals on NATS JetStream,
//!   appends acknowledged once a majority of replicas stored them, fenced per actor.
//! - [`backup`]: consistent backup files, their verification, and restore.
//!
//! Nothing here knows what an event means: persist stores bytes for actor keys. The domains
//! decide what to store; this module decides how.

pub mod backend;
pub mod backup;
pub mod jetstream;
pub mod journal;
pub mod record;
pub mod sled_backend;
pub mod store;

pub use backend::{Compaction, Durable, JournalBackend};
pub use journal::{Journal, Recovered, Restored};
pub use sled_backend::JournalWriter;

/// What keeps a journal's writes going, stopped last at shutdown: the sled writer thread
/// (the embedded default) or the runtime of the JetStream writer (cluster mode).
pub enum JournalOwner {
    /// The embedded backend's writer thread.
    Sled(JournalWriter),
    /// The replicated backend's writer and NATS client.
    JetStream(jetstream::JetStreamWriter),
}

impl JournalOwner {
    /// Waits for the writer to finish what was queued, then stops it. Call after every
    /// [`Journal`] handle is gone, from a blocking context.
    pub fn join(self) {
        match self {
            JournalOwner::Sled(writer) => writer.join(),
            JournalOwner::JetStream(writer) => writer.join(),
        }
    }
}
pub use store::{ActorKey, Store};

/// A storage failure. Each variant says enough to act on without reading the code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PersistError {
    /// sled (or the file system under it) failed.
    #[error("storage: {0}")]
    Storage(String),
    /// A stored record could not be decoded: recovery stops rather than lose it silently.
    #[error("corrupt record for actor {actor} at sequence {seq}: {reason}")]
    Corrupt {
        /// The actor key the record belongs to.
        actor: String,
        /// Its sequence number (0 for a snapshot header).
        seq: u64,
        /// The decoder's complaint.
        reason: String,
    },
    /// The data folder was written by an incompatible version of Peloton.
    #[error("data folder has schema version {found}; this build reads version {expected}")]
    SchemaMismatch {
        /// Version on disk.
        found: u32,
        /// Version this build writes.
        expected: u32,
    },
    /// The journal writer has stopped (shutdown or a fatal storage error).
    #[error("the journal is closed")]
    Closed,
    /// The actor's journal moved on without this writer (another node appended, or a
    /// record reported as failed landed after all): nothing was stored, and the actor must
    /// recover from the journal before it writes again.
    #[error("journal of {actor} was written elsewhere: {reason}")]
    Fenced {
        /// The actor key.
        actor: String,
        /// What the journal held instead.
        reason: String,
    },
    /// A backup file is damaged or not a backup.
    #[error("backup: {0}")]
    Backup(String),
    /// One append is larger than the journal can take as one record (cluster mode: the NATS
    /// servers' `max_payload`): nothing was stored, and sending it again cannot help.
    #[error("an append of {bytes} bytes for {actor} is more than the journal takes as one record ({limit} bytes: the NATS servers' max_payload)")]
    TooLarge {
        /// The actor key.
        actor: String,
        /// The record's size.
        bytes: usize,
        /// The largest record the journal takes.
        limit: usize,
    },
}

impl From<sled::Error> for PersistError {
    fn from(e: sled::Error) -> Self {
        PersistError::Storage(e.to_string())
    }
}

impl From<String> for PersistError {
    /// A storage service's own message (NATS), with no finer kind to give it.
    fn from(message: String) -> Self {
        PersistError::Storage(message)
    }
}

impl From<std::io::Error> for PersistError {
    fn from(e: std::io::Error) -> Self {
        PersistError::Storage(e.to_string())
    }
}
