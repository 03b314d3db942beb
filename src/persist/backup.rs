//! Backup files: a consistent copy of every sled tree in one checksummed file, its
//! verification (with a typed [`BackupError`] saying what is wrong with a bad file), restore
//! into an empty data folder, the scheduled-backup rotation, and the verified copy of a
//! backup into a second folder (cold storage, [`copy_verified`]).
//!
//! Format (all integers big-endian):
//! ```text
//! "PELOTONB" | u32 format = 1 | u32 schema version
//! repeated:  0x01 | u16 tree-name length | name | u32 key length | key | u32 value length | value
//! trailer:   0xFF | u64 record count | u32 CRC-32 of every byte before the trailer's CRC
//! ```
//! The writer thread produces it (see [`super::journal`]), so no write interleaves with the
//! copy. Records are copied as stored, so a backup holds the journal's batch records as they
//! are (see [`super::store`]). The schema version in the header is the writing build's; a
//! backup of any schema this build reads ([`readable_schema`]: 3 or 4) verifies and
//! restores, and a restored schema 3 folder is upgraded when it is first opened, like any
//! schema 3 folder.

use super::store::{readable_schema, Store, SCHEMA_VERSION};
use super::PersistError;
use serde::Serialize;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"PELOTONB";
const FORMAT: u32 = 1;
const RECORD: u8 = 0x01;
const TRAILER: u8 = 0xFF;
/// sled's own default tree holds nothing of ours.
const SLED_DEFAULT_TREE: &[u8] = b"__sled__default";
/// Extension of backup files, so rotation only ever deletes backups.
pub const EXTENSION: &str = "pbak";

/// What a backup holds, as checked by reading it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupSummary {
    /// Where it is.
    pub path: PathBuf,
    /// Size in bytes.
    pub bytes: u64,
    /// Key/value records in it.
    pub records: u64,
    /// CRC-32 of its content.
    pub crc32: u32,
    /// The schema version in its header: which builds can restore it.
    pub schema: u32,
}

/// What is wrong with a file that does not verify as a backup, so an operator (and
/// `peloton backup verify`) can tell a half-copied file from a damaged or foreign one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupDefect {
    /// The file could not be opened or read at all.
    Unreadable,
    /// It does not start with the backup magic: some other file.
    NotABackup,
    /// It ends early: an interrupted write or copy.
    Truncated,
    /// Its bytes are not what was written: checksum, record count or structure.
    Corrupt,
    /// A backup format this build does not know.
    UnknownFormat,
    /// A schema version this build cannot restore.
    UnreadableSchema {
        /// The version in the header.
        found: u32,
    },
}

impl BackupDefect {
    /// A stable code for scripts and logs.
    pub fn code(&self) -> &'static str {
        match self {
            BackupDefect::Unreadable => "unreadable",
            BackupDefect::NotABackup => "not_a_backup",
            BackupDefect::Truncated => "truncated",
            BackupDefect::Corrupt => "corrupt",
            BackupDefect::UnknownFormat => "unknown_format",
            BackupDefect::UnreadableSchema { .. } => "unreadable_schema",
        }
    }
}

/// A file that did not verify: which one, what kind of defect, and the details.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", path.display())]
pub struct BackupError {
    /// The file checked.
    pub path: PathBuf,
    /// The kind of defect (its `code()` is stable).
    pub defect: BackupDefect,
    /// What exactly was found, for people.
    pub detail: String,
}

impl From<BackupError> for PersistError {
    /// A schema the build cannot read stays the storage-wide schema error (restore reports
    /// it like a data folder's); every other defect is a backup error naming the file.
    fn from(e: BackupError) -> Self {
        match e.defect {
            BackupDefect::UnreadableSchema { found } => PersistError::SchemaMismatch {
                found,
                expected: SCHEMA_VERSION,
            },
            _ => PersistError::Backup(e.to_string()),
        }
    }
}

/// A writer that feeds a CRC and counts bytes as it goes.
struct Checksummed<W> {
    /// Where the bytes go.
    inner: W,
    /// CRC of everything written so far, for the trailer.
    crc: crc32fast::Hasher,
    /// Bytes written so far.
    bytes: u64,
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a backup of `db` to `path` (via a temporary file renamed into place), then reads it
/// back to verify it.
pub fn write_verified(db: &sled::Db, path: &Path) -> Result<BackupSummary, PersistError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("partial");
    let file = std::fs::File::create(&tmp)?;
    let mut out = Checksummed {
        inner: BufWriter::new(file),
        crc: crc32fast::Hasher::new(),
        bytes: 0,
    };
    out.write_all(MAGIC)?;
    out.write_all(&FORMAT.to_be_bytes())?;
    out.write_all(&SCHEMA_VERSION.to_be_bytes())?;
    let mut records = 0u64;
    for name in db.tree_names() {
        if name.as_ref() == SLED_DEFAULT_TREE {
            continue;
        }
        let tree = db.open_tree(&name)?;
        let name_len = u16::try_from(name.len())
            .map_err(|_| PersistError::Backup("tree name too long".into()))?;
        for entry in tree.iter() {
            let (key, value) = entry?;
            out.write_all(&[RECORD])?;
            out.write_all(&name_len.to_be_bytes())?;
            out.write_all(&name)?;
            write_block(&mut out, &key)?;
            write_block(&mut out, &value)?;
            records += 1;
        }
    }
    out.write_all(&[TRAILER])?;
    out.write_all(&records.to_be_bytes())?;
    let crc = out.crc.clone().finalize();
    let mut inner = out.inner;
    inner.write_all(&crc.to_be_bytes())?;
    let file = inner
        .into_inner()
        .map_err(|e| PersistError::Storage(e.to_string()))?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    let summary = verify(path)?;
    if summary.records != records || summary.crc32 != crc {
        return Err(PersistError::Backup(format!(
            "{} did not read back as written",
            path.display()
        )));
    }
    Ok(summary)
}

fn write_block(out: &mut impl Write, bytes: &[u8]) -> Result<(), PersistError> {
    let len =
        u32::try_from(bytes.len()).map_err(|_| PersistError::Backup("record over 4 GiB".into()))?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(bytes)?;
    Ok(())
}

/// One record read from a backup.
struct Entry {
    /// The sled tree it belongs to.
    tree: Vec<u8>,
    /// Its key, as stored.
    key: Vec<u8>,
    /// Its value, as stored (a journal value may be a batch record).
    value: Vec<u8>,
}

/// Reads a backup, calling `each` per record, and checks magic, schema, count and CRC. The
/// file's own defects are [`BackupError`]s; `each`'s errors (a restore's writes) pass through.
fn read<E: From<BackupError>>(
    path: &Path,
    mut each: impl FnMut(Entry) -> Result<(), E>,
) -> Result<BackupSummary, E> {
    let bad = |defect: BackupDefect, detail: &str| BackupError {
        path: path.to_path_buf(),
        defect,
        detail: detail.to_owned(),
    };
    let unreadable = |e: std::io::Error| bad(BackupDefect::Unreadable, &e.to_string());
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let bytes_total = file.metadata().map_err(unreadable)?.len();
    let mut input = BufReader::new(file);
    let mut crc = crc32fast::Hasher::new();
    // Whatever the file holds first: a short file that is not the start of the magic is
    // another file, not a truncated backup.
    let mut head = Vec::with_capacity(MAGIC.len());
    (&mut input)
        .take(MAGIC.len() as u64)
        .read_to_end(&mut head)
        .map_err(unreadable)?;
    if !MAGIC.starts_with(&head) || head.is_empty() {
        return Err(bad(BackupDefect::NotABackup, "not a Peloton backup").into());
    }
    if head.len() < MAGIC.len() {
        return Err(bad(
            BackupDefect::Truncated,
            "truncated: the file ends inside the header",
        )
        .into());
    }
    crc.update(&head);
    // Bytes read so far: a length the rest of the file cannot hold is a cut-off file (and
    // is never allocated, whatever a damaged length says).
    let mut pos = head.len() as u64;
    let mut take =
        |n: usize, input: &mut BufReader<std::fs::File>| -> Result<Vec<u8>, BackupError> {
            if n as u64 > bytes_total.saturating_sub(pos) {
                return Err(bad(
                    BackupDefect::Truncated,
                    "truncated: the file ends inside a record or before the trailer",
                ));
            }
            pos += n as u64;
            let mut buf = vec![0u8; n];
            input
                .read_exact(&mut buf)
                .map_err(|_| bad(BackupDefect::Truncated, "truncated: the file ends early"))?;
            crc.update(&buf);
            Ok(buf)
        };
    let format = be_u32(&take(4, &mut input)?);
    if format != FORMAT {
        return Err(bad(
            BackupDefect::UnknownFormat,
            &format!("backup format {format} is unknown"),
        )
        .into());
    }
    let schema = be_u32(&take(4, &mut input)?);
    if !readable_schema(schema) {
        return Err(bad(
            BackupDefect::UnreadableSchema { found: schema },
            &format!("schema version {schema} cannot be restored by this build (it writes {SCHEMA_VERSION})"),
        )
        .into());
    }
    let mut records = 0u64;
    loop {
        match take(1, &mut input)?[0] {
            RECORD => {
                let name_len = usize::from(be_u16(&take(2, &mut input)?));
                let tree = take(name_len, &mut input)?;
                let key_len = be_u32(&take(4, &mut input)?) as usize;
                let key = take(key_len, &mut input)?;
                let value_len = be_u32(&take(4, &mut input)?) as usize;
                let value = take(value_len, &mut input)?;
                records += 1;
                each(Entry { tree, key, value })?;
            }
            TRAILER => break,
            other => {
                return Err(bad(
                    BackupDefect::Corrupt,
                    &format!("unknown record tag {other:#x}"),
                )
                .into())
            }
        }
    }
    let count = u64::from_be_bytes(take(8, &mut input)?.try_into().map_err(|_| {
        bad(
            BackupDefect::Truncated,
            "truncated: the file ends inside the trailer",
        )
    })?);
    let expected = crc.finalize();
    let mut stored = [0u8; 4];
    input.read_exact(&mut stored).map_err(|_| {
        bad(
            BackupDefect::Truncated,
            "truncated: the file ends inside the checksum",
        )
    })?;
    if u32::from_be_bytes(stored) != expected {
        return Err(bad(
            BackupDefect::Corrupt,
            "checksum mismatch: the file is damaged",
        )
        .into());
    }
    if count != records {
        return Err(bad(
            BackupDefect::Corrupt,
            &format!("trailer says {count} records, found {records}"),
        )
        .into());
    }
    if input.read(&mut [0u8; 1]).map_err(unreadable)? != 0 {
        return Err(bad(BackupDefect::Corrupt, "bytes after the trailer").into());
    }
    Ok(BackupSummary {
        path: path.to_path_buf(),
        bytes: bytes_total,
        records,
        crc32: expected,
        schema,
    })
}

fn be_u32(b: &[u8]) -> u32 {
    b.iter().fold(0u32, |acc, &x| (acc << 8) | u32::from(x))
}

fn be_u16(b: &[u8]) -> u16 {
    b.iter().fold(0u16, |acc, &x| (acc << 8) | u16::from(x))
}

/// Reads a whole backup and checks it without restoring anything: the one check every
/// backup gets (after writing, after copying, before restoring, `peloton backup verify`).
pub fn verify(path: &Path) -> Result<BackupSummary, BackupError> {
    read(path, |_| Ok::<(), BackupError>(()))
}

/// Restores a verified backup into `data_dir`, which must not hold a database yet (or is
/// wiped first when `force`).
pub fn restore(path: &Path, data_dir: &Path, force: bool) -> Result<BackupSummary, PersistError> {
    verify(path)?;
    let db_dir = data_dir.join("db");
    if db_dir.exists() {
        if !force {
            return Err(PersistError::Backup(format!(
                "{} already holds a database; restore into an empty folder or pass --force",
                data_dir.display()
            )));
        }
        std::fs::remove_dir_all(&db_dir)?;
    }
    let store = Store::open(data_dir)?;
    let summary = read::<PersistError>(path, |entry| {
        store
            .db
            .open_tree(&entry.tree)?
            .insert(entry.key, entry.value)?;
        Ok(())
    })?;
    store.db.flush()?;
    Ok(summary)
}

/// The backup files in `dir` (by extension, so nothing else is ever touched), oldest name
/// first: scheduled names sort by time.
fn backup_files(dir: &Path) -> Result<Vec<PathBuf>, PersistError> {
    let mut backups: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some(EXTENSION))
        .collect();
    backups.sort();
    Ok(backups)
}

/// Deletes all but the newest `keep` backups in `dir`; answers the deleted files.
pub fn rotate_names(dir: &Path, keep: usize) -> Result<Vec<PathBuf>, PersistError> {
    let mut backups = backup_files(dir)?;
    let excess = backups.len().saturating_sub(keep);
    let removed: Vec<PathBuf> = backups.drain(..excess).collect();
    for path in &removed {
        std::fs::remove_file(path)?;
    }
    Ok(removed)
}

/// The file name of a scheduled backup taken at `now_ms`: sortable by time.
pub fn scheduled_name(dir: &Path, now_ms: i64) -> PathBuf {
    dir.join(format!("peloton-{now_ms:015}.{EXTENSION}"))
}

/// When a backup was taken: the time in a scheduled backup's name, else (a file an operator
/// named) its modification time.
pub fn taken_at_ms(path: &Path) -> Option<i64> {
    let from_name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.strip_prefix("peloton-"))
        .and_then(|ms| ms.parse::<i64>().ok());
    from_name.or_else(|| {
        let modified = std::fs::metadata(path).ok()?.modified().ok()?;
        let since = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
        i64::try_from(since.as_millis()).ok()
    })
}

/// The newest backup in `dir` that verifies, with when it was taken: what a restart reports
/// as the last good backup. Newer files that do not verify are skipped with a warning.
pub fn newest_verified(dir: &Path) -> Option<(BackupSummary, i64)> {
    let files = backup_files(dir).ok()?;
    files.iter().rev().find_map(|path| match verify(path) {
        Ok(summary) => taken_at_ms(path).map(|at| (summary, at)),
        Err(e) => {
            tracing::warn!(code = e.defect.code(), "backup skipped: {e}");
            None
        }
    })
}

/// Copies a verified backup into `dir` (a second disk, a mounted volume) under the same
/// name: written to a temporary name, synced, renamed into place, the folder synced, then
/// verified there and compared with the original, so a copy that is present is a good one.
/// A copy that does not verify is deleted, so rotation never keeps it over good ones.
pub fn copy_verified(source: &BackupSummary, dir: &Path) -> Result<BackupSummary, PersistError> {
    let name = source.path.file_name().ok_or_else(|| {
        PersistError::Backup(format!("{} has no file name", source.path.display()))
    })?;
    std::fs::create_dir_all(dir)?;
    let target = dir.join(name);
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same(&target, &source.path) {
        return Err(PersistError::Backup(format!(
            "{} is the backup itself: the copy folder must be another folder",
            target.display()
        )));
    }
    let tmp = target.with_extension("partial");
    let copied = (|| -> std::io::Result<()> {
        std::fs::copy(&source.path, &tmp)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &target)?;
        // The rename is only durable once the folder's entry is.
        std::fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&tmp);
        return Err(PersistError::Backup(format!(
            "copying {} to {}: {e}",
            source.path.display(),
            target.display()
        )));
    }
    let checked = verify(&target)
        .map_err(PersistError::from)
        .and_then(|copy| {
            if copy.crc32 == source.crc32 && copy.records == source.records {
                Ok(copy)
            } else {
                Err(PersistError::Backup(format!(
                    "{} verifies but differs from {}",
                    target.display(),
                    source.path.display()
                )))
            }
        });
    if checked.is_err() {
        let _ = std::fs::remove_file(&target);
    }
    checked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::{ActorKey, JournalWriter};

    #[tokio::test]
    async fn backup_restores_every_record_and_detects_damage() {
        let src = tempfile::tempdir().unwrap();
        let store = Store::open(src.path()).unwrap();
        let (journal, _w) = JournalWriter::start(store.clone(), 8).unwrap();
        let actor = ActorKey::new("race", "b");
        journal.append(&actor, 1, &[1u64, 2, 3]).await.unwrap();
        journal
            .snapshot(&actor, 2, &20u64, crate::persist::Compaction::Delete)
            .await
            .unwrap();
        let out = src.path().join("x.pbak");
        let summary = journal.backup(out.clone()).await.unwrap();
        assert_eq!(
            summary.records, 3,
            "schema version, snapshot, one event after compaction"
        );

        let dst = tempfile::tempdir().unwrap();
        restore(&out, dst.path(), false).unwrap();
        let restored = Store::open(dst.path()).unwrap();
        let (reader, reader_writer) = JournalWriter::start(restored, 16).unwrap();
        let r = reader.load::<u64, u64>(&actor).unwrap();
        assert_eq!(r.snapshot, Some((2, 20)));
        assert_eq!(r.events, vec![(3, 3)]);
        drop(reader);
        tokio::task::spawn_blocking(move || reader_writer.join())
            .await
            .unwrap();
        assert!(restore(&out, dst.path(), false)
            .unwrap_err()
            .to_string()
            .contains("--force"));

        let good = std::fs::read(&out).unwrap();
        let defect = |bytes: &[u8]| {
            std::fs::write(&out, bytes).unwrap();
            verify(&out).unwrap_err().defect
        };
        // The last byte of the last value: only the checksum can tell.
        let mut flipped = good.clone();
        flipped[good.len() - 14] ^= 0x55;
        assert_eq!(defect(&flipped), BackupDefect::Corrupt);
        let mut tagged = good.clone();
        tagged[16] = 0x7e;
        assert_eq!(defect(&tagged), BackupDefect::Corrupt, "unknown record tag");
        // The first record's key length claiming more than the file holds reads as a cut-off
        // file: a damaged length and a short file look the same from here.
        let mut long_key = good.clone();
        let name_len = usize::from(be_u16(&good[17..19]));
        long_key[16 + 1 + 2 + name_len] ^= 0x40;
        assert_eq!(defect(&long_key), BackupDefect::Truncated);
        assert_eq!(defect(&good[..good.len() - 3]), BackupDefect::Truncated);
        assert_eq!(defect(&good[..5]), BackupDefect::Truncated, "half a header");
        assert_eq!(defect(b"hello"), BackupDefect::NotABackup);
        assert_eq!(defect(b""), BackupDefect::NotABackup);
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(defect(&longer), BackupDefect::Corrupt);
        std::fs::write(&out, b"hello").unwrap();
        assert!(verify(&out)
            .unwrap_err()
            .to_string()
            .contains("not a Peloton backup"));
        let missing = verify(&src.path().join("none.pbak")).unwrap_err();
        assert_eq!(missing.defect, BackupDefect::Unreadable);
    }

    /// A backup as a schema 3 build wrote it: its header and marker say 3, and its journal
    /// holds one key per event.
    fn schema_3_backup(path: &Path, actor: &ActorKey) {
        let mut out = Checksummed {
            inner: Vec::new(),
            crc: crc32fast::Hasher::new(),
            bytes: 0,
        };
        out.write_all(MAGIC).unwrap();
        out.write_all(&FORMAT.to_be_bytes()).unwrap();
        out.write_all(&3u32.to_be_bytes()).unwrap();
        let mut records = vec![(
            b"meta".to_vec(),
            b"schema_version".to_vec(),
            3u32.to_be_bytes().to_vec(),
        )];
        for seq in 1..=3u64 {
            records.push((
                b"journal".to_vec(),
                actor.journal_key(seq),
                crate::persist::record::encode(&(seq * 10)).unwrap(),
            ));
        }
        for (tree, key, value) in &records {
            out.write_all(&[RECORD]).unwrap();
            out.write_all(&(tree.len() as u16).to_be_bytes()).unwrap();
            out.write_all(tree).unwrap();
            write_block(&mut out, key).unwrap();
            write_block(&mut out, value).unwrap();
        }
        out.write_all(&[TRAILER]).unwrap();
        out.write_all(&(records.len() as u64).to_be_bytes())
            .unwrap();
        let crc = out.crc.clone().finalize();
        let mut bytes = out.inner;
        bytes.extend_from_slice(&crc.to_be_bytes());
        std::fs::write(path, bytes).unwrap();
    }

    #[tokio::test]
    async fn a_schema_3_backup_restores_and_takes_batches_after() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("v3.pbak");
        let actor = ActorKey::new("racer", "r.1");
        schema_3_backup(&file, &actor);
        assert_eq!(verify(&file).unwrap().records, 4);
        let data = dir.path().join("data");
        restore(&file, &data, false).unwrap();
        let store = Store::open(&data).unwrap();
        let marker = store
            .db
            .open_tree("meta")
            .unwrap()
            .get("schema_version")
            .unwrap()
            .unwrap();
        assert_eq!(
            marker.as_ref(),
            SCHEMA_VERSION.to_be_bytes(),
            "upgraded on open"
        );
        let (journal, _w) = JournalWriter::start(store.clone(), 8).unwrap();
        journal.append(&actor, 4, &[40u64, 50]).await.unwrap();
        let history = journal.history::<u64>(&actor).unwrap();
        assert_eq!(history, (1..=5u64).map(|s| (s, s * 10)).collect::<Vec<_>>());

        // Backed up again, it is a schema 4 backup holding both shapes, and restores.
        let again = dir.path().join("v4.pbak");
        journal.backup(again.clone()).await.unwrap();
        let copy = dir.path().join("copy");
        restore(&again, &copy, false).unwrap();
        let (reader, _r) = JournalWriter::start(Store::open(&copy).unwrap(), 8).unwrap();
        let r = reader.load::<u64, u64>(&actor).unwrap();
        assert_eq!(
            r.events,
            (1..=5u64).map(|s| (s, s * 10)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_backup_of_an_unreadable_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("v3.pbak");
        schema_3_backup(&file, &ActorKey::new("race", "a"));
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[12..16].copy_from_slice(&2u32.to_be_bytes());
        let body = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_be_bytes());
        std::fs::write(&file, bytes).unwrap();
        let refused = verify(&file).unwrap_err();
        assert_eq!(refused.defect, BackupDefect::UnreadableSchema { found: 2 });
        assert!(matches!(
            PersistError::from(refused),
            PersistError::SchemaMismatch { found: 2, .. }
        ));
        assert!(matches!(
            restore(&file, &dir.path().join("data"), false),
            Err(PersistError::SchemaMismatch { found: 2, .. })
        ));
    }

    #[test]
    fn rotation_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        for t in [3, 1, 2, 4] {
            std::fs::write(scheduled_name(dir.path(), t), b"x").unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), b"keep me").unwrap();
        let removed = rotate_names(dir.path(), 2).unwrap();
        assert_eq!(
            removed,
            vec![scheduled_name(dir.path(), 1), scheduled_name(dir.path(), 2)]
        );
        assert!(dir.path().join("notes.txt").exists());
    }

    /// A real backup of a small journal in `dir`, named as a scheduled one taken at `at_ms`.
    async fn scheduled_in(dir: &Path, at_ms: i64) -> BackupSummary {
        let data = tempfile::tempdir().unwrap();
        let (journal, _w) = JournalWriter::start(Store::open(data.path()).unwrap(), 8).unwrap();
        journal
            .append(&ActorKey::new("race", "c"), 1, &[7u64, 8])
            .await
            .unwrap();
        journal.backup(scheduled_name(dir, at_ms)).await.unwrap()
    }

    #[tokio::test]
    async fn a_copy_is_synced_verified_and_refused_onto_itself() {
        let dir = tempfile::tempdir().unwrap();
        let original = scheduled_in(&dir.path().join("backups"), 1_000).await;
        assert_eq!(original.schema, SCHEMA_VERSION);
        let cold = dir.path().join("cold");
        let copy = copy_verified(&original, &cold).unwrap();
        assert_eq!(copy.path, cold.join(original.path.file_name().unwrap()));
        assert_eq!(
            (copy.crc32, copy.records),
            (original.crc32, original.records)
        );
        let names: Vec<_> = std::fs::read_dir(&cold)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
        let onto_itself = copy_verified(&original, &dir.path().join("backups")).unwrap_err();
        assert!(
            onto_itself.to_string().contains("another folder"),
            "{onto_itself}"
        );
        assert!(original.path.exists());
    }

    #[tokio::test]
    async fn the_newest_verified_backup_skips_damaged_newer_ones() {
        let dir = tempfile::tempdir().unwrap();
        assert!(newest_verified(dir.path()).is_none());
        let good = scheduled_in(dir.path(), 2_000).await;
        let newer = scheduled_name(dir.path(), 3_000);
        let bytes = std::fs::read(&good.path).unwrap();
        std::fs::write(&newer, &bytes[..bytes.len() / 2]).unwrap();
        let (summary, at) = newest_verified(dir.path()).unwrap();
        assert_eq!((summary.path, at), (good.path.clone(), 2_000));
        let named = dir.path().join("manual.pbak");
        std::fs::copy(&good.path, &named).unwrap();
        assert!(
            taken_at_ms(&named).unwrap() > 1_600_000_000_000,
            "modification time"
        );
    }
}
