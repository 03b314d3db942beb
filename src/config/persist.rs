//! `[persist]` and `[supervision]`: how the journal stores, and how hard supervisors try
//! to keep actors alive.

use super::check::{all_at_least_one, at_most, ConfigError};
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};

/// The longest `persist.after_backup_timeout_secs`: a day. The next scheduled backup waits
/// for the hook, so a longer one would only hide a hung command.
const MAX_AFTER_BACKUP_TIMEOUT_SECS: u64 = 86_400;

/// `[persist]`: group commit, snapshots and backups.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistConfig {
    /// Most writes committed by one flush.
    pub group_commit_max_batch: usize,
    /// Events between snapshots of one actor.
    pub snapshot_every: u64,
    /// Hours between scheduled backups (0 = off).
    pub backup_every_hours: u64,
    /// Scheduled backups kept.
    pub backup_keep: usize,
    /// Scheduled backup folder, relative to the data folder unless absolute.
    pub backup_dir: PathBuf,
    /// A second folder (another disk, a mounted volume) each verified scheduled backup is
    /// copied to, verified again and rotated with `backup_keep`, so losing the data disk
    /// does not lose the backups; relative to the data folder unless absolute. Empty: none.
    pub backup_copy_dir: PathBuf,
    /// A program and its arguments (no shell) run after each scheduled backup with the
    /// backup's path appended, to ship it off the machine (rclone, a script). Empty: none.
    #[serde(deserialize_with = "argv")]
    pub after_backup: Vec<String>,
    /// How long `after_backup` may run before it is killed, so a hung upload never piles up.
    pub after_backup_timeout_secs: u64,
}

/// Reads `persist.after_backup` as strings, naming the key and the element that is not one
/// (serde's own message would name neither).
fn argv<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let values = Vec::<toml::Value>::deserialize(deserializer)?;
    values
        .into_iter()
        .enumerate()
        .map(|(i, value)| match value {
            toml::Value::String(s) => Ok(s),
            other => Err(serde::de::Error::custom(format!(
                "persist.after_backup[{i}] must be a string, got {}",
                other.type_str()
            ))),
        })
        .collect()
}

impl PersistConfig {
    /// Batches, snapshot spacing and kept backups of at least one; a copy folder that is
    /// not the backup folder; a hook whose program and arguments are real strings; a hook
    /// timeout of 1 s to a day.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        all_at_least_one(&[
            (
                "persist.group_commit_max_batch",
                self.group_commit_max_batch as u64,
            ),
            ("persist.snapshot_every", self.snapshot_every),
            ("persist.backup_keep", self.backup_keep as u64),
            (
                "persist.after_backup_timeout_secs",
                self.after_backup_timeout_secs,
            ),
        ])?;
        at_most(
            "persist.after_backup_timeout_secs",
            self.after_backup_timeout_secs,
            MAX_AFTER_BACKUP_TIMEOUT_SECS,
        )?;
        let copy_dir = self.backup_copy_dir.as_os_str();
        if copy_dir.to_string_lossy().contains('\0') {
            return Err(ConfigError(
                "persist.backup_copy_dir must not contain a NUL character".into(),
            ));
        }
        if !copy_dir.is_empty() && self.backup_copy_dir == self.backup_dir {
            return Err(ConfigError(format!(
                "persist.backup_copy_dir must be another folder than persist.backup_dir ({})",
                self.backup_dir.display()
            )));
        }
        for (i, arg) in self.after_backup.iter().enumerate() {
            if arg.is_empty() {
                return Err(ConfigError(format!(
                    "persist.after_backup[{i}] must not be empty (a program, then its arguments)"
                )));
            }
            if arg.contains('\0') {
                return Err(ConfigError(format!(
                    "persist.after_backup[{i}] must not contain a NUL character"
                )));
            }
        }
        Ok(())
    }

    /// The copy folder, resolved against the data folder like `backup_dir`; `None` when
    /// copies are off.
    pub fn backup_copy_dir(&self, data_dir: &Path) -> Option<PathBuf> {
        if self.backup_copy_dir.as_os_str().is_empty() {
            None
        } else if self.backup_copy_dir.is_absolute() {
            Some(self.backup_copy_dir.clone())
        } else {
            Some(data_dir.join(&self.backup_copy_dir))
        }
    }

    /// The hook's program and arguments, `None` when there is no hook.
    pub fn after_backup(&self) -> Option<(&str, &[String])> {
        self.after_backup
            .split_first()
            .map(|(program, args)| (program.as_str(), args))
    }
}

/// `[supervision]`: how hard supervisors try to keep actors alive.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisionConfig {
    /// Restarts allowed per actor per window.
    pub restart_budget: u32,
    /// The window for the restart budget.
    pub restart_window_secs: u64,
    /// How long the API waits for an actor.
    pub call_timeout_ms: u64,
    /// How long an actor with nothing to do stays resident before it stops and lives on in
    /// its journal (woken by id on demand); 0 keeps every actor resident. Memory and start-up
    /// then grow with what is live, not with history.
    pub passivate_after_ms: u64,
}

impl SupervisionConfig {
    /// A restart window and a call timeout of at least one unit.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        all_at_least_one(&[
            ("supervision.restart_window_secs", self.restart_window_secs),
            ("supervision.call_timeout_ms", self.call_timeout_ms),
        ])
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Overrides};
    use std::path::Path;

    /// The defaults with `layer` (a `[persist]` TOML body) as a config file on top.
    fn with_persist(layer: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("peloton.toml");
        std::fs::write(&file, format!("[persist]\n{layer}\n")).unwrap();
        Config::load_from(Some(&file), &[], &Overrides::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn cold_storage_is_off_by_default() {
        let c = Config::defaults().unwrap();
        assert_eq!(c.persist.backup_copy_dir(Path::new("/data")), None);
        assert_eq!(c.persist.after_backup(), None);
        assert_eq!(c.persist.after_backup_timeout_secs, 300);
    }

    #[test]
    fn copy_folder_and_hook_are_read_and_resolved() {
        let c = with_persist(
            "backup_copy_dir = \"cold\"\nafter_backup = [\"rclone\", \"copy\"]\nafter_backup_timeout_secs = 60",
        )
        .unwrap();
        assert_eq!(
            c.persist.backup_copy_dir(Path::new("/data")),
            Some(Path::new("/data/cold").to_path_buf())
        );
        let (program, args) = c.persist.after_backup().unwrap();
        assert_eq!((program, args), ("rclone", &["copy".to_owned()][..]));
        let absolute = with_persist("backup_copy_dir = \"/mnt/cold\"").unwrap();
        assert_eq!(
            absolute.persist.backup_copy_dir(Path::new("/data")),
            Some(Path::new("/mnt/cold").to_path_buf())
        );
        let env = [(
            "PELOTON_PERSIST_BACKUP_COPY_DIR".to_owned(),
            "/mnt/usb".to_owned(),
        )];
        let from_env = Config::load_from(None, &env, &Overrides::default()).unwrap();
        assert_eq!(
            from_env.persist.backup_copy_dir(Path::new("/data")),
            Some(Path::new("/mnt/usb").to_path_buf())
        );
    }

    #[test]
    fn cold_storage_keys_are_checked_by_name() {
        for (layer, expected) in [
            (
                "after_backup = [\"\"]",
                "persist.after_backup[0] must not be empty",
            ),
            (
                "after_backup = [\"rclone\", 3]",
                "persist.after_backup[1] must be a string, got integer",
            ),
            (
                "after_backup = [\"a\\u0000b\"]",
                "persist.after_backup[0] must not contain a NUL",
            ),
            (
                "after_backup = \"rclone copy\"",
                "persist.after_backup must be an array",
            ),
            (
                "after_backup_timeout_secs = 0",
                "persist.after_backup_timeout_secs must be at least 1",
            ),
            (
                "after_backup_timeout_secs = 86401",
                "persist.after_backup_timeout_secs must be at most 86400",
            ),
            (
                "backup_copy_dir = \"backups\"",
                "persist.backup_copy_dir must be another folder than persist.backup_dir",
            ),
            (
                "backup_copy_dir = \"a\\u0000\"",
                "persist.backup_copy_dir must not contain a NUL",
            ),
            (
                "backup_copy_dir = 5",
                "persist.backup_copy_dir must be a string",
            ),
        ] {
            let e = with_persist(layer).unwrap_err();
            assert!(e.contains(expected), "{layer}: {e}");
        }
    }
}
