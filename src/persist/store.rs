//! The sled database and the read side of persistence: schema check on open, an actor's
//! latest snapshot plus the journal after it, and the list of actors of a kind.
//!
//! Layout (one sled tree each):
//! - `meta`: `schema_version` → u32 big-endian.
//! - `journal`: `<actor key> 0x00 <seq u64 BE>` → one *record*: all the events of one
//!   append, keyed by the first one's sequence number (see [`super::record`]: a single event
//!   is stored as its value, as schema 3 stored every event; several as a batch). Big-endian
//!   sequence numbers make sled's byte order the replay order, and records of one actor never
//!   overlap: the record at key `s` holding `n` events covers `s..s+n`, and the next starts
//!   at `s+n`.
//! - `snapshots`: `<actor key>` → `<seq u64 BE>` ++ record(state).
//! - `archive`: journal records that older versions moved out at snapshots (same keys, one
//!   event each); read by [`Store::history`], never written.
//!
//! Writes go through the writer thread ([`super::sled_backend`]) only, so this type exposes
//! raw reads (bytes, one entry per event, in sequence order, whatever record holds it) and the
//! handles the writer needs; decoding and gap checks are the [`super::Journal`]'s, the same
//! for every backend.

use super::{record, PersistError};
use std::fmt;
use std::ops::Bound;
use std::path::Path;

/// Events in sequence order, one entry per event with its sequence number, still encoded:
/// what every backend reads back, however it stores them, decoded by the journal.
pub type RawEvents = Vec<(u64, Vec<u8>)>;

/// The storage schema this build writes.
/// 2: courses carry checkpoints. 3: checkpoints may be mandatory; racers keep off-course
/// episodes and suspected cuts; races keep the organiser's disqualifications. 4: a journal
/// record holds every event of one append (a batch record under the first event's key).
///
/// A version 3 folder is read as it is (its records are single events, which version 4 still
/// reads) and its marker is raised to 4 when this build opens it: a version 3 binary then
/// refuses the folder, which is right, since it cannot read the batch records written after.
pub const SCHEMA_VERSION: u32 = 4;
/// The oldest schema this build reads (and upgrades on open); older ones are refused.
pub const OLDEST_READABLE_SCHEMA: u32 = 3;
const SCHEMA_KEY: &[u8] = b"schema_version";
pub(crate) const META_TREE: &str = "meta";
pub(crate) const JOURNAL_TREE: &str = "journal";
pub(crate) const SNAPSHOT_TREE: &str = "snapshots";
pub(crate) const ARCHIVE_TREE: &str = "archive";

/// Addresses one actor's journal and snapshot: `<kind>/<id>`, e.g. `race/01h…`.
///
/// Ids are validated to exclude `/` and NUL (see [`crate::ids`]), so keys never collide and
/// the NUL separator in journal keys is unambiguous.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActorKey(String);

impl ActorKey {
    /// The key for actor `id` of `kind`.
    pub fn new(kind: &str, id: &str) -> ActorKey {
        ActorKey(format!("{kind}/{id}"))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id part (after `<kind>/`).
    pub fn id(&self) -> &str {
        self.0.split_once('/').map_or(&self.0, |(_, id)| id)
    }

    /// The journal key of event `seq`.
    pub(crate) fn journal_key(&self, seq: u64) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.0.len() + 9);
        key.extend_from_slice(self.0.as_bytes());
        key.push(0);
        key.extend_from_slice(&seq.to_be_bytes());
        key
    }

    /// The prefix all of this actor's journal keys share.
    pub(crate) fn journal_prefix(&self) -> Vec<u8> {
        let mut key = self.0.as_bytes().to_vec();
        key.push(0);
        key
    }
}

impl fmt::Display for ActorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The open database.
#[derive(Clone)]
pub struct Store {
    /// The database, for flushes and backups.
    pub(crate) db: sled::Db,
    /// Journal records by actor and first sequence number (one per append since schema 4).
    pub(crate) journal: sled::Tree,
    /// Latest snapshot per actor.
    pub(crate) snapshots: sled::Tree,
    /// History that older versions moved out of the journal at snapshots (same keys); read,
    /// no longer written.
    pub(crate) archive: sled::Tree,
}

impl Store {
    /// Opens (or creates) the database in `dir` and checks its schema version.
    pub fn open(dir: &Path) -> Result<Store, PersistError> {
        std::fs::create_dir_all(dir)?;
        let db = sled::Config::new().path(dir.join("db")).open()?;
        let meta = db.open_tree(META_TREE)?;
        match meta.get(SCHEMA_KEY)? {
            None => {
                meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
                db.flush()?;
            }
            Some(found) => {
                let found = <[u8; 4]>::try_from(found.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| PersistError::Storage("schema_version is not 4 bytes".into()))?;
                if !readable_schema(found) {
                    return Err(PersistError::SchemaMismatch {
                        found,
                        expected: SCHEMA_VERSION,
                    });
                }
                if found != SCHEMA_VERSION {
                    // Durable before any batch record can be written, so a crash never leaves
                    // batch records in a folder a version 3 binary would still open.
                    meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
                    db.flush()?;
                    tracing::info!(from = found, to = SCHEMA_VERSION, "data folder upgraded");
                }
            }
        }
        Ok(Store {
            journal: db.open_tree(JOURNAL_TREE)?,
            snapshots: db.open_tree(SNAPSHOT_TREE)?,
            archive: db.open_tree(ARCHIVE_TREE)?,
            db,
        })
    }

    /// `actor`'s latest snapshot: the sequence number it covers and the encoded state.
    pub fn latest_snapshot(
        &self,
        actor: &ActorKey,
    ) -> Result<Option<(u64, Vec<u8>)>, PersistError> {
        let Some(bytes) = self.snapshots.get(actor.as_str())? else {
            return Ok(None);
        };
        if bytes.len() < 8 {
            return Err(PersistError::Corrupt {
                actor: actor.to_string(),
                seq: 0,
                reason: "snapshot shorter than its header".into(),
            });
        }
        let (seq_bytes, body) = bytes.split_at(8);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(seq_bytes);
        Ok(Some((u64::from_be_bytes(seq), body.to_vec())))
    }

    /// `actor`'s journal entries after `seq`, one per event, in sequence order.
    ///
    /// The record holding event `seq + 1` may start at or before `seq` (an append of several
    /// events that a snapshot's sequence falls inside), so the read starts at the last record
    /// keyed at or below `seq + 1` and skips the events of it at or below `seq`.
    pub fn events_after(&self, actor: &ActorKey, seq: u64) -> Result<RawEvents, PersistError> {
        let Some(from) = seq.checked_add(1) else {
            return Ok(Vec::new());
        };
        let mut events = Vec::new();
        if let Some((key, value)) = self
            .journal
            .range(actor.journal_key(0)..=actor.journal_key(from))
            .next_back()
            .transpose()?
        {
            unpack_into(actor, &key, &value, &mut events, |s| s > seq)?;
        }
        for entry in self.journal.range((
            Bound::Excluded(actor.journal_key(from)),
            Bound::Included(actor.journal_key(u64::MAX)),
        )) {
            let (key, value) = entry?;
            unpack_into(actor, &key, &value, &mut events, |_| true)?;
        }
        Ok(events)
    }

    /// Every event `actor` ever journaled, in sequence order. Data folders written before
    /// compaction kept the history in place also hold some of it in the archive tree, where
    /// snapshots moved it; an event in both trees (a crash between the two writes) is read
    /// once.
    pub fn history(&self, actor: &ActorKey) -> Result<RawEvents, PersistError> {
        let mut events = std::collections::BTreeMap::new();
        let mut unpacked = Vec::new();
        for tree in [&self.archive, &self.journal] {
            for entry in tree.scan_prefix(actor.journal_prefix()) {
                let (key, value) = entry?;
                unpack_into(actor, &key, &value, &mut unpacked, |_| true)?;
                for (seq, event) in unpacked.drain(..) {
                    events.entry(seq).or_insert(event);
                }
            }
        }
        Ok(events.into_iter().collect())
    }

    /// The sequence number of `actor`'s newest journal entry (0: none), without reading the
    /// others: the last record's first sequence plus its event count, less one, read from the
    /// record's header.
    pub fn last_seq(&self, actor: &ActorKey) -> Result<u64, PersistError> {
        match self
            .journal
            .range(actor.journal_key(0)..=actor.journal_key(u64::MAX))
            .next_back()
            .transpose()?
        {
            None => Ok(0),
            Some((key, value)) => record_end(actor, &key, &value),
        }
    }

    /// Up to `limit` of `actor`'s journal entries with a sequence below `before` (none: from
    /// the newest), newest first. Records are read newest first from the last one starting
    /// below `before`, whose events at or above `before` are skipped.
    pub fn page_before(
        &self,
        actor: &ActorKey,
        before: Option<u64>,
        limit: usize,
    ) -> Result<RawEvents, PersistError> {
        let end = before.unwrap_or(u64::MAX);
        let mut page = Vec::new();
        let mut unpacked = Vec::new();
        for entry in self
            .journal
            .range(actor.journal_key(0)..actor.journal_key(end))
            .rev()
        {
            if page.len() >= limit {
                break;
            }
            let (key, value) = entry?;
            unpack_into(actor, &key, &value, &mut unpacked, |s| s < end)?;
            let room = limit - page.len();
            page.extend(unpacked.drain(..).rev().take(room));
        }
        Ok(page)
    }

    /// Every actor of `kind` whose id starts with `id_prefix` (empty: every one) that has a
    /// snapshot or journal entries, in key order.
    pub fn actors(&self, kind: &str, id_prefix: &str) -> Result<Vec<ActorKey>, PersistError> {
        let prefix = format!("{kind}/{id_prefix}");
        let mut found = std::collections::BTreeSet::new();
        for key in self.snapshots.scan_prefix(prefix.as_bytes()).keys() {
            found.insert(key_text(&key?)?);
        }
        // Hop from actor to actor instead of reading every event: after an actor's last
        // possible key comes the next actor's first.
        let mut from = prefix.as_bytes().to_vec();
        loop {
            let Some((key, _)) = self.journal.range(from.clone()..).next().transpose()? else {
                break;
            };
            if !key.starts_with(prefix.as_bytes()) {
                break;
            }
            let Some(split) = key.iter().position(|&b| b == 0) else {
                return Err(PersistError::Storage(
                    "journal key without separator".into(),
                ));
            };
            let actor = key_text(&key[..split])?;
            from = key[..split].to_vec();
            from.push(1);
            found.insert(actor);
        }
        Ok(found.into_iter().map(ActorKey).collect())
    }

    /// Number of journal entries (events) stored, all actors; for tests and benches: it
    /// reads every record's header.
    pub fn journal_len(&self) -> usize {
        self.journal
            .iter()
            .values()
            .map(|value| {
                value
                    .map_err(PersistError::from)
                    .and_then(|v| record::batch_len(&v).map_err(PersistError::Storage))
                    .map_or(0, |n| n as usize)
            })
            .sum()
    }

    /// Number of journal records stored (one per append since schema 4), all actors; for
    /// tests and benches.
    pub fn journal_records(&self) -> usize {
        self.journal.len()
    }
}

/// Whether this build reads (and, if older, upgrades) a folder or backup of `schema`.
pub fn readable_schema(schema: u32) -> bool {
    (OLDEST_READABLE_SCHEMA..=SCHEMA_VERSION).contains(&schema)
}

/// Appends the events of one of `actor`'s journal records (key `key`, stored `value`) whose
/// sequence numbers pass `keep` to `out`, in order. A record that does not unpack is an error
/// naming the actor and the record's first sequence number.
fn unpack_into(
    actor: &ActorKey,
    key: &[u8],
    value: &[u8],
    out: &mut RawEvents,
    keep: impl Fn(u64) -> bool,
) -> Result<(), PersistError> {
    let first = seq_of(actor, key)?;
    let events = record::unbatch(value).map_err(|reason| PersistError::Corrupt {
        actor: actor.to_string(),
        seq: first,
        reason,
    })?;
    for (i, event) in events.into_iter().enumerate() {
        let seq = first
            .checked_add(i as u64)
            .ok_or_else(|| PersistError::Corrupt {
                actor: actor.to_string(),
                seq: first,
                reason: "record runs past the last sequence number".into(),
            })?;
        if keep(seq) {
            out.push((seq, event.to_vec()));
        }
    }
    Ok(())
}

/// The sequence number of the last event in one of `actor`'s journal records, from its key
/// and header.
pub(crate) fn record_end(actor: &ActorKey, key: &[u8], value: &[u8]) -> Result<u64, PersistError> {
    let first = seq_of(actor, key)?;
    let corrupt = |reason: String| PersistError::Corrupt {
        actor: actor.to_string(),
        seq: first,
        reason,
    };
    let count = record::batch_len(value).map_err(corrupt)?;
    first
        .checked_add(count - 1)
        .ok_or_else(|| corrupt("record runs past the last sequence number".into()))
}

/// The sequence number at the end of one of `actor`'s journal keys.
fn seq_of(actor: &ActorKey, key: &[u8]) -> Result<u64, PersistError> {
    parse_seq(key).ok_or_else(|| PersistError::Corrupt {
        actor: actor.to_string(),
        seq: 0,
        reason: "journal key without a sequence".into(),
    })
}

fn parse_seq(key: &[u8]) -> Option<u64> {
    let tail = key.get(key.len().checked_sub(8)?..)?;
    let mut seq = [0u8; 8];
    seq.copy_from_slice(tail);
    Some(u64::from_be_bytes(seq))
}

fn key_text(bytes: &[u8]) -> Result<String, PersistError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| PersistError::Storage("actor key is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::{Compaction, Journal, JournalWriter};
    use proptest::prelude::*;

    /// The value journaled as event `seq` in these tests.
    fn value(seq: u64) -> u64 {
        seq * 10
    }

    /// Decoded `(seq, value)` pairs of raw events.
    fn decoded(raw: RawEvents) -> Vec<(u64, u64)> {
        raw.into_iter()
            .map(|(seq, bytes)| (seq, record::decode::<u64>(&bytes).unwrap()))
            .collect()
    }

    /// Appends one append per size, numbered on from 1; returns the last sequence.
    async fn append_sizes(journal: &Journal, actor: &ActorKey, sizes: &[u64]) -> u64 {
        let mut next = 1;
        for &n in sizes {
            let events: Vec<u64> = (next..next + n).map(value).collect();
            journal.append(actor, next, &events).await.unwrap();
            next += n;
        }
        next - 1
    }

    /// Every event in `from..=to` as the tests journal them.
    fn expected(from: u64, to: u64) -> Vec<(u64, u64)> {
        (from..=to).map(|s| (s, value(s))).collect()
    }

    /// What `page_before` must answer over events `1..=last`.
    fn expected_page(last: u64, before: Option<u64>, limit: usize) -> Vec<(u64, u64)> {
        let end = before.unwrap_or(u64::MAX);
        (1..=last)
            .rev()
            .filter(|&s| s < end)
            .take(limit)
            .map(|s| (s, value(s)))
            .collect()
    }

    /// Checks every read of `actor`, whose events are `1..=last`, at every edge.
    fn check_reads(store: &Store, actor: &ActorKey, last: u64) {
        for seq in 0..=last + 2 {
            assert_eq!(
                decoded(store.events_after(actor, seq).unwrap()),
                expected(seq + 1, last),
                "events_after({seq})"
            );
        }
        assert_eq!(store.last_seq(actor).unwrap(), last);
        assert_eq!(decoded(store.history(actor).unwrap()), expected(1, last));
        for before in (0..=last + 2).map(Some).chain([None]) {
            for limit in 0..=last as usize + 1 {
                assert_eq!(
                    decoded(store.page_before(actor, before, limit).unwrap()),
                    expected_page(last, before, limit),
                    "page_before({before:?}, {limit})"
                );
            }
        }
    }

    /// Writes `meta`'s schema marker as an older build left it.
    fn mark_schema(store: &Store, version: u32) {
        store
            .db
            .open_tree(META_TREE)
            .unwrap()
            .insert(SCHEMA_KEY, &version.to_be_bytes())
            .unwrap();
        store.db.flush().unwrap();
    }

    fn schema_on_disk(store: &Store) -> u32 {
        let bytes = store
            .db
            .open_tree(META_TREE)
            .unwrap()
            .get(SCHEMA_KEY)
            .unwrap()
            .unwrap();
        u32::from_be_bytes(bytes.as_ref().try_into().unwrap())
    }

    #[tokio::test]
    async fn one_record_per_append_reads_back_at_every_edge() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (journal, _writer) = JournalWriter::start(store.clone(), 16).unwrap();
        let actor = ActorKey::new("racer", "r.1");
        let other = ActorKey::new("racer", "r.2");
        // Records 1, 2..=4, 5, 6..=10, 11..=12; a neighbour on each side of the key range.
        let last = append_sizes(&journal, &actor, &[1, 3, 1, 5, 2]).await;
        append_sizes(&journal, &other, &[4]).await;
        append_sizes(&journal, &ActorKey::new("racer", "r.0"), &[3]).await;
        assert_eq!(last, 12);
        assert_eq!(store.journal_records(), 7, "one key per append");
        assert_eq!(store.journal_len(), 12 + 4 + 3);
        check_reads(&store, &actor, last);
        check_reads(&store, &other, 4);
        assert!(store.events_after(&actor, u64::MAX).unwrap().is_empty());
        let nobody = ActorKey::new("racer", "r.9");
        assert_eq!(store.last_seq(&nobody).unwrap(), 0);
        assert!(store.events_after(&nobody, 0).unwrap().is_empty());
        assert_eq!(
            store.actors("racer", "").unwrap(),
            vec![ActorKey::new("racer", "r.0"), actor.clone(), other]
        );
        assert_eq!(
            store.actors("racer", "r.0").unwrap(),
            vec![ActorKey::new("racer", "r.0")],
            "one id prefix: only the actors under it"
        );
        assert!(store.actors("racer", "s.").unwrap().is_empty());

        // Recovery from a snapshot inside a record: the record is found, its covered events
        // skipped.
        journal
            .snapshot(&actor, 7, &70u64, Compaction::Keep)
            .await
            .unwrap();
        journal.flush().await.unwrap();
        let r = journal.load::<u64, u64>(&actor).unwrap();
        assert_eq!((r.snapshot, r.last_seq), (Some((7, 70)), 12));
        assert_eq!(r.events, expected(8, 12));
    }

    #[tokio::test]
    async fn delete_compaction_keeps_a_record_the_snapshot_falls_inside() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (journal, _writer) = JournalWriter::start(store.clone(), 16).unwrap();
        let actor = ActorKey::new("race", "a");
        // Records 1..=3, 4..=7, 8..=9.
        append_sizes(&journal, &actor, &[3, 4, 2]).await;
        journal
            .snapshot(&actor, 5, &50u64, Compaction::Delete)
            .await
            .unwrap();
        journal.flush().await.unwrap();
        assert_eq!(store.journal_records(), 2, "only 1..=3 lay wholly below 5");
        let r = journal.load::<u64, u64>(&actor).unwrap();
        assert_eq!((r.snapshot, r.last_seq), (Some((5, 50)), 9));
        assert_eq!(r.events, expected(6, 9));
        assert_eq!(decoded(store.history(&actor).unwrap()), expected(4, 9));
        assert_eq!(store.last_seq(&actor).unwrap(), 9);

        // A snapshot at a record's last event takes it.
        journal
            .snapshot(&actor, 7, &70u64, Compaction::Delete)
            .await
            .unwrap();
        journal.flush().await.unwrap();
        assert_eq!(store.journal_records(), 1);
        let r = journal.load::<u64, u64>(&actor).unwrap();
        assert_eq!((r.snapshot, r.events), (Some((7, 70)), expected(8, 9)));
    }

    #[tokio::test]
    async fn a_gap_or_a_damaged_batch_names_the_actor_and_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (journal, _writer) = JournalWriter::start(store.clone(), 16).unwrap();
        let actor = ActorKey::new("race", "g");
        append_sizes(&journal, &actor, &[2, 3, 2]).await;
        let middle = store.journal.remove(actor.journal_key(3)).unwrap().unwrap();
        let err = journal.load::<u64, u64>(&actor).unwrap_err().to_string();
        assert!(
            err.contains("race/g") && err.contains("sequence 3") && err.contains("jumps"),
            "{err}"
        );
        let mut damaged = middle.to_vec();
        damaged.truncate(damaged.len() - 1);
        store.journal.insert(actor.journal_key(3), damaged).unwrap();
        for err in [
            journal.load::<u64, u64>(&actor).unwrap_err(),
            store.events_after(&actor, 4).unwrap_err(),
            store.history(&actor).unwrap_err(),
        ] {
            let err = err.to_string();
            assert!(
                err.contains("race/g") && err.contains("sequence 3"),
                "{err}"
            );
        }
    }

    #[tokio::test]
    async fn a_schema_3_folder_is_upgraded_and_reads_mixed_with_batches() {
        let dir = tempfile::tempdir().unwrap();
        let actor = ActorKey::new("dm", "a~b");
        {
            // What a version 3 build left: its marker and one key per event.
            let store = Store::open(dir.path()).unwrap();
            mark_schema(&store, 3);
            for seq in 1..=4 {
                store
                    .journal
                    .insert(actor.journal_key(seq), record::encode(&value(seq)).unwrap())
                    .unwrap();
            }
            store
                .snapshots
                .insert(actor.as_str(), {
                    let mut bytes = 2u64.to_be_bytes().to_vec();
                    bytes.extend(record::encode(&20u64).unwrap());
                    bytes
                })
                .unwrap();
            store.db.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(schema_on_disk(&store), SCHEMA_VERSION);
        let (journal, writer) = JournalWriter::start(store.clone(), 16).unwrap();
        let r = journal.load::<u64, u64>(&actor).unwrap();
        assert_eq!((r.snapshot, r.events), (Some((2, 20)), expected(3, 4)));
        // Batches after the singles: 5..=7, 8, 9..=10.
        journal
            .append(&actor, 5, &[value(5), value(6), value(7)])
            .await
            .unwrap();
        journal.append(&actor, 8, &[value(8)]).await.unwrap();
        journal
            .append(&actor, 9, &[value(9), value(10)])
            .await
            .unwrap();
        assert_eq!(store.journal_records(), 4 + 3);
        check_reads(&store, &actor, 10);
        drop(journal);
        tokio::task::spawn_blocking(move || writer.join())
            .await
            .unwrap();
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        check_reads(&store, &actor, 10);
        let (journal, _writer) = JournalWriter::start(store.clone(), 16).unwrap();
        let r = journal.load::<u64, u64>(&actor).unwrap();
        assert_eq!((r.snapshot, r.events), (Some((2, 20)), expected(3, 10)));
    }

    #[test]
    fn schemas_before_3_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        mark_schema(&store, 2);
        drop(store);
        assert!(matches!(
            Store::open(dir.path()),
            Err(PersistError::SchemaMismatch {
                found: 2,
                expected: SCHEMA_VERSION
            })
        ));
    }

    #[tokio::test]
    async fn archived_single_events_still_read_as_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let actor = ActorKey::new("racer", "r.5");
        for seq in 1..=3 {
            store
                .archive
                .insert(actor.journal_key(seq), record::encode(&value(seq)).unwrap())
                .unwrap();
        }
        // Event 3 in both trees (a crash between the two writes of an old build).
        store
            .journal
            .insert(actor.journal_key(3), record::encode(&value(3)).unwrap())
            .unwrap();
        let (journal, _writer) = JournalWriter::start(store.clone(), 16).unwrap();
        journal
            .append(&actor, 4, &[value(4), value(5)])
            .await
            .unwrap();
        assert_eq!(decoded(store.history(&actor).unwrap()), expected(1, 5));
        assert_eq!(
            decoded(store.events_after(&actor, 3).unwrap()),
            expected(4, 5)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Random append sizes, read back from random points.
        #[test]
        fn random_appends_read_back(
            sizes in proptest::collection::vec(1u64..8, 1..12),
            after in 0u64..64,
            before in proptest::option::of(0u64..64),
            limit in 0usize..64,
            snapshot_at in 0u64..64,
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let actor = ActorKey::new("racer", "p");
            let last = runtime.block_on(async {
                let (journal, _writer) = JournalWriter::start(store.clone(), 4).unwrap();
                append_sizes(&journal, &ActorKey::new("racer", "q"), &[2]).await;
                append_sizes(&journal, &actor, &sizes).await
            });
            let after = after.min(last + 1);
            prop_assert_eq!(
                decoded(store.events_after(&actor, after).unwrap()),
                expected(after + 1, last)
            );
            prop_assert_eq!(store.last_seq(&actor).unwrap(), last);
            prop_assert_eq!(
                decoded(store.page_before(&actor, before, limit).unwrap()),
                expected_page(last, before, limit)
            );
            // Delete compaction anywhere: recovery still reads exactly what follows.
            let snapshot_at = snapshot_at.min(last);
            let r = runtime.block_on(async {
                let (journal, _writer) = JournalWriter::start(store.clone(), 4).unwrap();
                journal
                    .snapshot(&actor, snapshot_at, &0u64, Compaction::Delete)
                    .await
                    .unwrap();
                journal.flush().await.unwrap();
                journal.load::<u64, u64>(&actor).unwrap()
            });
            prop_assert_eq!(r.events, expected(snapshot_at + 1, last));
            prop_assert_eq!(r.last_seq, last);
        }
    }
}
