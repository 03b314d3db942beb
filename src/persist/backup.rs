//! Backup files: a consistent copy of every sled tree in one checksummed file, its
//! verification, restore into an empty data folder, and the scheduled-backup rotation.
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

/// Reads a backup, calling `each` per record, and checks magic, schema, count and CRC.
fn read(
    path: &Path,
    mut each: impl FnMut(Entry) -> Result<(), PersistError>,
) -> Result<BackupSummary, PersistError> {
    let bad = |what: &str| PersistError::Backup(format!("{}: {what}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| bad(&e.to_string()))?;
    let bytes_total = file.metadata()?.len();
    let mut input = BufReader::new(file);
    let mut crc = crc32fast::Hasher::new();
    let mut take =
        |n: usize, input: &mut BufReader<std::fs::File>| -> Result<Vec<u8>, PersistError> {
            let mut buf = vec![0u8; n];
            input.read_exact(&mut buf).map_err(|_| bad("truncated"))?;
            crc.update(&buf);
            Ok(buf)
        };
    if take(8, &mut input)? != MAGIC {
        return Err(bad("not a Peloton backup"));
    }
    let format = be_u32(&take(4, &mut input)?);
    if format != FORMAT {
        return Err(bad(&format!("backup format {format} is unknown")));
    }
    let schema = be_u32(&take(4, &mut input)?);
    if !readable_schema(schema) {
        return Err(PersistError::SchemaMismatch {
            found: schema,
            expected: SCHEMA_VERSION,
        });
    }
    let mut records = 0u64;
    loop {
        match take(1, &mut input)?[0] {
            RECORD => {
                let name_len = usize::from(be_u16(&take(2, &mut input)?));
                let tree = take(name_len, &mut input)?;
                let key_len = block_len(&take(4, &mut input)?, bytes_total)
                    .ok_or_else(|| bad("key length past end"))?;
                let key = take(key_len, &mut input)?;
                let value_len = block_len(&take(4, &mut input)?, bytes_total)
                    .ok_or_else(|| bad("value length past end"))?;
                let value = take(value_len, &mut input)?;
                records += 1;
                each(Entry { tree, key, value })?;
            }
            TRAILER => break,
            other => return Err(bad(&format!("unknown record tag {other:#x}"))),
        }
    }
    let count = u64::from_be_bytes(
        take(8, &mut input)?
            .try_into()
            .map_err(|_| bad("truncated"))?,
    );
    let expected = crc.finalize();
    let mut stored = [0u8; 4];
    input
        .read_exact(&mut stored)
        .map_err(|_| bad("truncated checksum"))?;
    if u32::from_be_bytes(stored) != expected {
        return Err(bad("checksum mismatch: the file is damaged"));
    }
    if count != records {
        return Err(bad(&format!(
            "trailer says {count} records, found {records}"
        )));
    }
    if input.read(&mut [0u8; 1])? != 0 {
        return Err(bad("bytes after the trailer"));
    }
    Ok(BackupSummary {
        path: path.to_path_buf(),
        bytes: bytes_total,
        records,
        crc32: expected,
    })
}

fn be_u32(b: &[u8]) -> u32 {
    b.iter().fold(0u32, |acc, &x| (acc << 8) | u32::from(x))
}

fn be_u16(b: &[u8]) -> u16 {
    b.iter().fold(0u16, |acc, &x| (acc << 8) | u16::from(x))
}

/// A length that cannot exceed the file, so a damaged length never allocates gigabytes.
fn block_len(b: &[u8], file_len: u64) -> Option<usize> {
    let len = u64::from(be_u32(b));
    (len <= file_len).then_some(len as usize)
}

/// Reads a whole backup and checks it without restoring anything.
pub fn verify(path: &Path) -> Result<BackupSummary, PersistError> {
    read(path, |_| Ok(()))
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
    let summary = read(path, |entry| {
        store
            .db
            .open_tree(&entry.tree)?
            .insert(entry.key, entry.value)?;
        Ok(())
    })?;
    store.db.flush()?;
    Ok(summary)
}

/// Writes a scheduled backup into `dir` named by time, verifies it, and deletes all but the
/// newest `keep`.
pub fn rotate_names(dir: &Path, keep: usize) -> Result<Vec<PathBuf>, PersistError> {
    let mut backups: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some(EXTENSION))
        .collect();
    backups.sort();
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

        let mut bytes = std::fs::read(&out).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x55;
        std::fs::write(&out, &bytes).unwrap();
        assert!(verify(&out).is_err());
        std::fs::write(&out, &bytes[..bytes.len() - 3]).unwrap();
        assert!(verify(&out).is_err());
        std::fs::write(&out, b"hello").unwrap();
        assert!(
            verify(&out)
                .unwrap_err()
                .to_string()
                .contains("not a Peloton backup")
                || verify(&out).is_err()
        );
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
        assert!(matches!(
            verify(&file),
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
}
