//! The sled database and the read side of persistence: schema check on open, an actor's
//! latest snapshot plus the journal after it, and the list of actors of a kind.
//!
//! Layout (one sled tree each):
//! - `meta`: `schema_version` → u32 big-endian.
//! - `journal`: `<actor key> 0x00 <seq u64 BE>` → record(event). Big-endian sequence
//!   numbers make sled's byte order the replay order.
//! - `snapshots`: `<actor key>` → `<seq u64 BE>` ++ record(state).
//!
//! Writes go through the writer thread ([`super::sled_backend`]) only, so this type exposes
//! raw reads (bytes, in sequence order) and the handles the writer needs; decoding and gap
//! checks are the [`super::Journal`]'s, the same for every backend.

use super::PersistError;
use std::fmt;
use std::path::Path;

/// Events in sequence order, each with its sequence number, still encoded: what every
/// backend reads back, decoded by the journal.
pub type RawEvents = Vec<(u64, Vec<u8>)>;

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

/// The open database.
#[derive(Clone)]
pub struct Store {
    /// The database, for flushes and backups.
    pub(crate) db: sled::Db,
    /// Events by actor and sequence.
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

    /// `actor`'s journal entries after `seq`, in key (= sequence) order.
    pub fn events_after(&self, actor: &ActorKey, seq: u64) -> Result<RawEvents, PersistError> {
        self.journal
            .range(actor.journal_key(seq.saturating_add(1))..actor.journal_key(u64::MAX))
            .map(|entry| {
                let (key, value) = entry?;
                Ok((seq_of(actor, &key)?, value.to_vec()))
            })
            .collect()
    }

    /// Every event `actor` ever journaled, in sequence order. Data folders written before
    /// compaction kept the history in place also hold some of it in the archive tree, where
    /// snapshots moved it; an event in both trees (a crash between the two writes) is read
    /// once.
    pub fn history(&self, actor: &ActorKey) -> Result<RawEvents, PersistError> {
        let mut events = std::collections::BTreeMap::new();
        for tree in [&self.archive, &self.journal] {
            for entry in tree.scan_prefix(actor.journal_prefix()) {
                let (key, value) = entry?;
                events
                    .entry(seq_of(actor, &key)?)
                    .or_insert_with(|| value.to_vec());
            }
        }
        Ok(events.into_iter().collect())
    }

    /// The sequence number of `actor`'s newest journal entry (0: none), without reading the
    /// others.
    pub fn last_seq(&self, actor: &ActorKey) -> Result<u64, PersistError> {
        match self
            .journal
            .range(actor.journal_key(0)..=actor.journal_key(u64::MAX))
            .next_back()
            .transpose()?
        {
            None => Ok(0),
            Some((key, _)) => seq_of(actor, &key),
        }
    }

    /// Up to `limit` of `actor`'s journal entries with a sequence below `before` (none: from
    /// the newest), newest first.
    pub fn page_before(
        &self,
        actor: &ActorKey,
        before: Option<u64>,
        limit: usize,
    ) -> Result<RawEvents, PersistError> {
        let end = before.unwrap_or(u64::MAX);
        self.journal
            .range(actor.journal_key(0)..actor.journal_key(end))
            .rev()
            .take(limit)
            .map(|entry| {
                let (key, value) = entry?;
                Ok((seq_of(actor, &key)?, value.to_vec()))
            })
            .collect()
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
