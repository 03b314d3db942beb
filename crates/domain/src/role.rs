//! Who is on the other end of a socket, as the rules and the wire both name it.
//!
//! Roles are part of the domain (which role may do what is a rule) and of the protocol (a
//! token and the welcome frame carry one); they live here so both crates can name them
//! without the protocol depending on how tokens are signed.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What a token holder is; decides which messages they may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs the system: races, imports, backups, mail.
    Admin,
    /// A racer's phone, bound to one race.
    Racer,
    /// Watches races; may be scoped to one race (share links).
    Spectator,
    /// A police officer's device.
    Officer,
    /// A citizen's device.
    Citizen,
}

impl Role {
    /// Every role, for help texts and validation messages.
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Racer,
        Role::Spectator,
        Role::Officer,
        Role::Citizen,
    ];

    /// The lowercase name used in tokens and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Racer => "racer",
            Role::Spectator => "spectator",
            Role::Officer => "officer",
            Role::Citizen => "citizen",
        }
    }

    /// Parses a role name as typed on the command line.
    pub fn parse(text: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == text)
            .ok_or_else(|| format!("unknown role `{text}`; expected one of admin, racer, spectator, officer, citizen"))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
