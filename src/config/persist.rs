//! `[persist]` and `[supervision]`: how the journal stores, and how hard supervisors try
//! to keep actors alive.

use super::check::{all_at_least_one, ConfigError};
use serde::Deserialize;
use std::path::PathBuf;

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
}

impl PersistConfig {
    /// Batches, snapshot spacing and kept backups of at least one.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        all_at_least_one(&[
            (
                "persist.group_commit_max_batch",
                self.group_commit_max_batch as u64,
            ),
            ("persist.snapshot_every", self.snapshot_every),
            ("persist.backup_keep", self.backup_keep as u64),
        ])
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
