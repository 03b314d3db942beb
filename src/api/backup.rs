//! The backup request: an organiser streams a consistent copy of the whole store. The
//! journal's writer thread writes it to a temporary file (so nothing else pauses); the
//! session then streams that file as `backup_chunk` pushes and deletes it.

use super::outcome::Outcome;
use super::rules::{Rule, Scope, ADMIN, NOBODY};
use crate::engine::{Engine, Services};
use crate::error::Rejection;
use crate::net::protocol::{BackupInfo, Reply, Request};
use crate::time::now_ms;

/// Who may send which backup request: organisers, and no race-scoped token, since a
/// backup holds every race.
pub(super) fn rule(request: &Request) -> Rule<'_> {
    match request {
        Request::Backup => Rule::new(ADMIN, Scope::Global),
        _ => Rule::new(NOBODY, Scope::Global),
    }
}

/// Answers one backup request.
pub(super) async fn handle(engine: &Engine, services: &Services, request: Request) -> Outcome {
    match request {
        Request::Backup => backup(engine, services).await,
        other => Outcome::Reply(Err(Rejection::internal(format!(
            "{} is not a backup request",
            other.type_name()
        )))),
    }
}

/// Writes the backup to a fresh temporary file in the backup folder and asks for it to be
/// streamed.
async fn backup(engine: &Engine, services: &Services) -> Outcome {
    let mut suffix = [0u8; 4];
    let _ = getrandom::fill(&mut suffix);
    let path = engine.config.backup_dir().join(format!(
        "stream-{}-{:08x}.tmp",
        now_ms(),
        u32::from_be_bytes(suffix)
    ));
    match services.journal.backup(path.clone()).await {
        Ok(summary) => Outcome::StreamFile {
            path,
            reply: Reply::BackupDone(BackupInfo {
                bytes: summary.bytes,
                records: summary.records,
                crc32: summary.crc32,
            }),
        },
        Err(e) => {
            tracing::error!("backup failed: {e}");
            let _ = std::fs::remove_file(&path);
            Outcome::Reply(Err(Rejection::internal(format!("backup failed: {e}"))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn only_unscoped_admins_back_up() {
        for role in Role::ALL {
            assert_eq!(rule(&Request::Backup).permits(role), role == Role::Admin);
        }
        assert_eq!(rule(&Request::Backup).scope, Scope::Global);
        assert!(!rule(&Request::Ping).permits(Role::Admin), "not ours");
    }
}
