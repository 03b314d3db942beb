//! The sled database and the read side of persistence: schema check on open, an actor's
//! latest snapshot plus the journal after it, and the list of actors of a kind.
//!
//! Layout (one sled tree each):
//! - `meta`: `schema_version` → u32 big-endian.
//! - `journal`: `<actor key> 0x00 <seq u64 BE>` → record(event). Big-endian sequence
//!   numbers make sled's byte order the replay order.
//! - `snapshots`: `<actor key>` → `<seq u64 BE>` ++ record(state).
//!
//! Writes go through [`super::Journal`] only, so this type exposes reads and the handles the
//! writer needs.

use super::{record, PersistError};
use serde::de::DeserializeOwned;
use std::fmt;
use std::path::Path;

/// The storage schema this build writes and reads.
/// 2: courses carry checkpoints. 3: checkpoints may be mandatory; racers keep off-course
/// episodes and suspected cuts; races keep the organiser's disqualifications.
pub const SCHEMA_VERSION: u32 = 3;
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

/// The open database.
#[derive(Clone)]
pub struct Store {
    /// The database, for flushes and backups.
    pub(crate) db: sled::Db,
    /// Events by actor and sequence.
    pub(crate) journal: sled::Tree,
    /// Latest snapshot per actor.
    pub(crate) snapshots: sled::Tree,
    /// Events compacted out of the journal that are kept as history (same keys).
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
                if found != SCHEMA_VERSION {
                    return Err(PersistError::SchemaMismatch {
                        found,
                        expected: SCHEMA_VERSION,
                    });
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
        let snapshot = match self.snapshots.get(actor.as_str())? {
            None => None,
            Some(bytes) => {
                if bytes.len() < 8 {
                    return Err(corrupt(0, "snapshot shorter than its header".into()));
                }
                let (seq_bytes, body) = bytes.split_at(8);
                let mut seq = [0u8; 8];
                seq.copy_from_slice(seq_bytes);
                let seq = u64::from_be_bytes(seq);
                let state = record::decode::<S>(body)
                    .map_err(|e| corrupt(seq, format!("snapshot: {e}")))?;
                Some((seq, state))
            }
        };
        let covered = snapshot.as_ref().map_or(0, |(seq, _)| *seq);
        let mut events = Vec::new();
        let mut expected = covered + 1;
        for entry in self
            .journal
            .range(actor.journal_key(covered + 1)..actor.journal_key(u64::MAX))
        {
            let (key, value) = entry?;
            let seq = parse_seq(&key)
                .ok_or_else(|| corrupt(expected, "journal key without a sequence".into()))?;
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

    /// Every event `actor` ever journaled, archived or not, in sequence order: its history
    /// (a racer's fixes for a replay), as opposed to [`Store::load`], which recovery uses.
    pub fn history<E: DeserializeOwned>(
        &self,
        actor: &ActorKey,
    ) -> Result<Vec<(u64, E)>, PersistError> {
        let mut events = std::collections::BTreeMap::new();
        for tree in [&self.archive, &self.journal] {
            for entry in tree.scan_prefix(actor.journal_prefix()) {
                let (key, value) = entry?;
                let seq = parse_seq(&key).ok_or_else(|| PersistError::Corrupt {
                    actor: actor.to_string(),
                    seq: 0,
                    reason: "history key without a sequence".into(),
                })?;
                if let std::collections::btree_map::Entry::Vacant(slot) = events.entry(seq) {
                    let event =
                        record::decode::<E>(&value).map_err(|reason| PersistError::Corrupt {
                            actor: actor.to_string(),
                            seq,
                            reason,
                        })?;
                    slot.insert(event);
                }
            }
        }
        Ok(events.into_iter().collect())
    }

    /// The sequence number of `actor`'s newest journal entry (0: none), without reading the
    /// others: for actors whose journal is their data and is never compacted (conversations).
    pub fn last_seq(&self, actor: &ActorKey) -> Result<u64, PersistError> {
        match self
            .journal
            .range(actor.journal_key(0)..=actor.journal_key(u64::MAX))
            .next_back()
            .transpose()?
        {
            None => Ok(0),
            Some((key, _)) => parse_seq(&key).ok_or_else(|| PersistError::Corrupt {
                actor: actor.to_string(),
                seq: 0,
                reason: "journal key without a sequence".into(),
            }),
        }
    }

    /// Up to `limit` of `actor`'s journal entries with a sequence below `before` (none: from
    /// the newest), newest first: one page of a never-compacted journal.
    pub fn page_before<E: DeserializeOwned>(
        &self,
        actor: &ActorKey,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, E)>, PersistError> {
        let end = before.unwrap_or(u64::MAX);
        let mut page = Vec::new();
        for entry in self
            .journal
            .range(actor.journal_key(0)..actor.journal_key(end))
            .rev()
            .take(limit)
        {
            let (key, value) = entry?;
            let seq = parse_seq(&key).unwrap_or(0);
            let event = record::decode::<E>(&value).map_err(|reason| PersistError::Corrupt {
                actor: actor.to_string(),
                seq,
                reason,
            })?;
            page.push((seq, event));
        }
        Ok(page)
    }

    /// Every actor of `kind` that has a snapshot or journal entries, in key order.
    pub fn actors(&self, kind: &str) -> Result<Vec<ActorKey>, PersistError> {
        let prefix = format!("{kind}/");
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

    /// Number of journal entries stored (all actors); for tests and metrics.
    pub fn journal_len(&self) -> usize {
        self.journal.len()
    }
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
