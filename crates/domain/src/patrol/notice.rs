//! What a patrol session tells its device unasked, in domain terms. The net layer turns each
//! [`Notice`] into a protocol push; nothing here knows about sockets or encodings.

use super::privacy::Coarse;

/// A connection as one side sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The connect request's id.
    pub connection_id: String,
    /// The officer.
    pub officer: String,
    /// The citizen.
    pub citizen: String,
    /// The other side's display name.
    pub with_name: String,
    /// Points the receiver earned.
    pub points: u64,
    /// When, ms since the epoch.
    pub at_ms: i64,
}

/// A stored direct message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredMessage {
    /// Sender.
    pub from: String,
    /// Recipient.
    pub to: String,
    /// Position in the conversation, from 1.
    pub seq: u64,
    /// Server time it was accepted.
    pub at_ms: i64,
    /// The text.
    pub text: String,
}

/// A message as journaled under its conversation (`dm/<a>~<b>`): the message and the
/// sender's request id, so recovery can rebuild the idempotency window and a resend after
/// a crash is still recognised.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MessageRecord {
    /// The sender's idempotency key.
    pub request_id: String,
    /// The message.
    pub message: StoredMessage,
}

/// Something a session's device is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The duty window ended.
    DutyEnded {
        /// `expired` or `ended`.
        reason: &'static str,
        /// When.
        at_ms: i64,
    },
    /// An officer is near (or what the citizen sees of it changed).
    OfficerNearby {
        /// The officer.
        officer: String,
        /// Their display name.
        display_name: String,
        /// What the citizen may see.
        view: Coarse,
    },
    /// An officer announced before is gone.
    OfficerGone {
        /// The officer.
        officer: String,
    },
    /// A citizen asks this officer to connect.
    ConnectRequested {
        /// The request.
        request_id: String,
        /// Who.
        citizen: String,
        /// Their display name.
        display_name: String,
        /// How far, rounded metres.
        distance_m: u32,
        /// When it expires.
        expires_at_ms: i64,
    },
    /// A request ended without a connection.
    ConnectClosed {
        /// The request.
        request_id: String,
        /// `declined`, `expired` or `officer_left`.
        outcome: &'static str,
    },
    /// A connection was made.
    ConnectionEstablished(Connection),
    /// A direct message.
    DirectMessage(StoredMessage),
}
