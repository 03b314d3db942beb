//! The journal every actor shell writes through: typed appends, snapshots and reads over a
//! [`JournalBackend`].
//!
//! This handle encodes events and snapshots ([`super::record`]), checks that what comes back
//! has no gap and decodes it, and turns a failed append into the `unavailable` a client can
//! retry. Where the bytes go is the backend's business (sled by default, see
//! [`super::sled_backend`]); what they mean is the domains'.

use super::backend::{Compaction, Durable, JournalBackend};
use super::store::{ActorKey, RawEvents};
use super::{backup, record, PersistError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

/// A cheap, cloneable handle on the journal.
#[derive(Clone)]
pub struct Journal {
    /// Where events and snapshots are kept.
    backend: Arc<dyn JournalBackend>,
}

/// Why [`Journal::append_or_unavailable`] stored nothing.
#[derive(Debug)]
pub struct AppendRefused {
    /// What the client is answered.
    pub rejection: crate::error::Rejection,
    /// The journal moved on without this writer (another node appended: cluster mode):
    /// the actor's state is stale, and it must recover from the journal before it decides
    /// anything again.
    pub fenced: bool,
}

impl Journal {
    /// A journal over `backend` (sled: [`super::JournalWriter::start`]).
    pub fn new(backend: Arc<dyn JournalBackend>) -> Journal {
        Journal { backend }
    }

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
        self.backend.enqueue(actor.clone(), first_seq, events).await
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
    /// events were neither stored nor applied and sending the request again is safe (or
    /// `invalid_argument` for an append too large to store at all).
    pub async fn append_or_unavailable<E: Serialize>(
        &self,
        actor: &ActorKey,
        first_seq: u64,
        events: &[E],
        retry_hint: &str,
    ) -> Result<(), AppendRefused> {
        self.append(actor, first_seq, events).await.map_err(|e| {
            tracing::error!(%actor, first_seq, "journal append failed: {e}");
            let fenced = matches!(e, PersistError::Fenced { .. });
            let rejection = match e {
                // Sent again it would fail again: the sender must make it smaller.
                PersistError::TooLarge { bytes, limit, .. } => crate::error::Rejection::new(
                    crate::error::ErrorCode::InvalidArgument,
                    format!(
                        "the change is {bytes} bytes once stored, more than this deployment's \
                         journal takes in one record ({limit} bytes, the NATS servers' \
                         max_payload); it was not applied"
                    ),
                ),
                _ => crate::error::Rejection::new(crate::error::ErrorCode::Unavailable, retry_hint),
            };
            AppendRefused { rejection, fenced }
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
        self.backend
            .snapshot(actor.clone(), seq, bytes, compaction)
            .await
    }

    /// Waits until everything queued before is durable.
    pub async fn flush(&self) -> Result<(), PersistError> {
        self.backend.flush().await
    }

    /// Writes a consistent backup of the whole database to `path` and verifies it.
    pub async fn backup(&self, path: PathBuf) -> Result<backup::BackupSummary, PersistError> {
        self.backend.backup(path).await
    }

    /// Reads an actor back: its latest snapshot and every later event, decoded. A record that
    /// does not decode, or a gap in the sequence, is an error naming the actor and sequence.
    pub fn load<S: DeserializeOwned, E: DeserializeOwned>(
        &self,
        actor: &ActorKey,
    ) -> Result<Recovered<S, E>, PersistError> {
        let corrupt = |seq: u64, reason: String| PersistError::Corrupt {
            actor: actor.to_string(),
            seq,
            reason,
        };
        let snapshot = match self.backend.latest_snapshot(actor)? {
            None => None,
            Some((seq, body)) => {
                let state = record::decode::<S>(&body)
                    .map_err(|e| corrupt(seq, format!("snapshot: {e}")))?;
                Some((seq, state))
            }
        };
        let covered = snapshot.as_ref().map_or(0, |(seq, _)| *seq);
        let mut events = Vec::new();
        let mut expected = covered + 1;
        for (seq, value) in self.backend.events_after(actor, covered)? {
            if seq != expected {
                return Err(corrupt(
                    expected,
                    format!("journal jumps from {} to {seq}", expected - 1),
                ));
            }
            let event = record::decode::<E>(&value).map_err(|e| corrupt(seq, e))?;
            events.push((seq, event));
            expected += 1;
        }
        Ok(Recovered {
            snapshot,
            events,
            last_seq: expected - 1,
        })
    }

    /// Recovery in one call: [`Journal::load`], then every later event applied to the
    /// snapshot (or to `S::default()`) with `apply`, the aggregate's own fold.
    pub fn restore<S: DeserializeOwned + Default, E: DeserializeOwned>(
        &self,
        actor: &ActorKey,
        apply: impl FnMut(&mut S, &E),
    ) -> Result<Restored<S>, PersistError> {
        Ok(self.load::<S, E>(actor)?.fold(apply))
    }

    /// Every event `actor` ever journaled, archived or not, in sequence order: its history
    /// (a racer's fixes for a replay), as opposed to [`Journal::load`], which recovery uses.
    pub fn history<E: DeserializeOwned>(
        &self,
        actor: &ActorKey,
    ) -> Result<Vec<(u64, E)>, PersistError> {
        decode_all(actor, self.backend.history(actor)?)
    }

    /// The sequence number of `actor`'s newest journal entry (0: none), without reading the
    /// others: for actors whose journal is their data and is never compacted (conversations).
    pub fn last_seq(&self, actor: &ActorKey) -> Result<u64, PersistError> {
        self.backend.last_seq(actor)
    }

    /// Up to `limit` of `actor`'s journal entries with a sequence below `before` (none: from
    /// the newest), newest first: one page of a never-compacted journal.
    pub fn page_before<E: DeserializeOwned>(
        &self,
        actor: &ActorKey,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, E)>, PersistError> {
        decode_all(actor, self.backend.page_before(actor, before, limit)?)
    }

    /// Every actor of `kind` that has a snapshot or journal entries, in key order.
    pub fn actors(&self, kind: &str) -> Result<Vec<ActorKey>, PersistError> {
        self.backend.actors(kind, "")
    }

    /// Every actor of `kind` whose id starts with `id_prefix`, in key order: the racers of
    /// one race (`<race>.`) without walking every racer of every race.
    pub fn actors_under(&self, kind: &str, id_prefix: &str) -> Result<Vec<ActorKey>, PersistError> {
        self.backend.actors(kind, id_prefix)
    }
}

/// Decodes stored events, naming the actor and sequence of the first that does not decode.
fn decode_all<E: DeserializeOwned>(
    actor: &ActorKey,
    raw: RawEvents,
) -> Result<Vec<(u64, E)>, PersistError> {
    raw.into_iter()
        .map(|(seq, value)| {
            record::decode::<E>(&value)
                .map(|event| (seq, event))
                .map_err(|reason| PersistError::Corrupt {
                    actor: actor.to_string(),
                    seq,
                    reason,
                })
        })
        .collect()
}

/// What recovery found for one actor.
#[derive(Debug)]
pub struct Recovered<S, E> {
    /// The latest snapshot and the sequence number it covers.
    pub snapshot: Option<(u64, S)>,
    /// Events after the snapshot, in order, with their sequence numbers.
    pub events: Vec<(u64, E)>,
    /// The highest sequence number seen (0 when the actor has no history).
    pub last_seq: u64,
}

/// An actor's state rebuilt from what recovery found.
#[derive(Debug)]
pub struct Restored<S> {
    /// The snapshot with every later event applied.
    pub state: S,
    /// Sequence number of the last event (the next append is `last_seq + 1`).
    pub last_seq: u64,
    /// Sequence number the snapshot covers (0 without one).
    pub snapshot_seq: u64,
}

impl<S: Default, E> Recovered<S, E> {
    /// Applies every event after the snapshot (or to `S::default()`), in order.
    pub fn fold(self, mut apply: impl FnMut(&mut S, &E)) -> Restored<S> {
        let (snapshot_seq, mut state) = self.snapshot.unwrap_or_default();
        for (_, event) in &self.events {
            apply(&mut state, event);
        }
        Restored {
            state,
            last_seq: self.last_seq,
            snapshot_seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::{JournalWriter, Store};

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
        let (journal, _writer) = JournalWriter::start(store, 16).unwrap();
        let r = journal.load::<String, String>(&actor).unwrap();
        assert!(r.snapshot.is_none());
        assert_eq!(r.last_seq, 3);
        assert_eq!(
            r.events
                .iter()
                .map(|(s, e)| (*s, e.as_str()))
                .collect::<Vec<_>>(),
            vec![(1, "one"), (2, "two"), (3, "three")]
        );
        assert_eq!(journal.actors("race").unwrap(), vec![actor]);
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
        let r = journal.load::<u64, u64>(&a).unwrap();
        assert_eq!(r.snapshot, Some((3, 30)));
        assert_eq!(r.events, vec![(4, 4), (5, 5)]);
        assert_eq!(
            store.journal_len(),
            3,
            "events 1..=3 of a are compacted, b's stays"
        );
        assert_eq!(journal.actors("race").unwrap(), vec![a, b]);
        assert!(journal.actors("mail").unwrap().is_empty());
    }

    #[tokio::test]
    async fn kept_compaction_keeps_the_history_but_not_in_recovery() {
        let (_dir, store) = open();
        let (journal, _writer) = JournalWriter::start(store.clone(), 16).unwrap();
        let racer = ActorKey::new("racer", "r.1");
        for seq in 1..=5u64 {
            journal.append(&racer, seq, &[seq * 10]).await.unwrap();
        }
        journal
            .snapshot(&racer, 4, &40u64, Compaction::Keep)
            .await
            .unwrap();
        journal.flush().await.unwrap();
        let recovered = journal.load::<u64, u64>(&racer).unwrap();
        assert_eq!(
            (recovered.snapshot, recovered.events),
            (Some((4, 40)), vec![(5, 50)])
        );
        let history = journal.history::<u64>(&racer).unwrap();
        assert_eq!(history, (1..=5u64).map(|s| (s, s * 10)).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_damaged_record_stops_recovery_naming_actor_and_seq() {
        let (_dir, store) = open();
        let (journal, _writer) = JournalWriter::start(store.clone(), 16).unwrap();
        let actor = ActorKey::new("race", "x");
        // Two appends, so event 2 is a record of its own (one record per append).
        journal.append(&actor, 1, &[1u64]).await.unwrap();
        journal.append(&actor, 2, &[2u64]).await.unwrap();
        store
            .journal
            .insert(
                actor.journal_key(2),
                vec![record::RECORD_VERSION, 0xff, 0xff],
            )
            .unwrap();
        let err = journal.load::<u64, u64>(&actor).unwrap_err().to_string();
        assert!(
            err.contains("race/x") && err.contains("sequence 2"),
            "{err}"
        );
        store.journal.remove(actor.journal_key(2)).unwrap();
        journal.append(&actor, 3, &[3u64]).await.unwrap();
        let err = journal.load::<u64, u64>(&actor).unwrap_err().to_string();
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
