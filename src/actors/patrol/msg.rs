//! The messages of the patrol shell's actors: the book's and a session's, and the values
//! they carry.
//!
//! They live apart from the actors and from the shared context because each of those
//! names the others' messages (sessions ask the book, the book and the context tell
//! sessions, the context holds the book's handle). With the messages here, `context.rs`,
//! `book_actor.rs` and `session_actor.rs` all depend on this file one way instead of on
//! each other (tests/module_cycles.rs checks that).

use super::import::{Charity, ImportRows, Offer};
use super::ledger::{Entry, ReportRow};
use super::notice::{Connection, Notice, StoredMessage};
use crate::error::Rejection;
use crate::geo::Position;
use ractor::RpcReplyPort;

/// An on-duty officer as citizens' sessions need it, without asking the book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfficerCard {
    /// The imported display name.
    pub display_name: String,
    /// The imported precinct (connections are reported under it).
    pub precinct: String,
}

// A redemption as answered: decided (voucher and all) by the book's rules.
pub use super::book_rules::Redemption;

/// Messages the book accepts.
pub enum BookMsg {
    /// An officer's account, as sessions need it.
    Officer {
        /// The officer.
        id: String,
        /// The card, if imported.
        reply: RpcReplyPort<Option<OfficerCard>>,
    },
    /// The name others see for a user.
    DisplayName {
        /// The user.
        user: String,
        /// The name.
        reply: RpcReplyPort<String>,
    },
    /// A citizen's profile.
    SetProfile {
        /// The user.
        user: String,
        /// Name officers see.
        display_name: String,
        /// Mail address.
        email: Option<String>,
        /// Saved.
        reply: RpcReplyPort<Result<(), Rejection>>,
    },
    /// Imported rows (already validated).
    Import {
        /// The rows.
        rows: ImportRows,
        /// Rows written and rows of that kind now stored.
        reply: RpcReplyPort<Result<(u64, u64), Rejection>>,
    },
    /// Record a connection and its awards.
    Connect {
        /// The request id.
        connection_id: String,
        /// The officer.
        officer: String,
        /// The citizen.
        citizen: String,
        /// The officer's precinct.
        precinct: String,
        /// When.
        at_ms: i64,
        /// The connection as the officer and as the citizen see it.
        reply: RpcReplyPort<Result<(Connection, Connection), Rejection>>,
    },
    /// A user's balance.
    Balance {
        /// The user.
        user: String,
        /// Points.
        reply: RpcReplyPort<u64>,
    },
    /// A page of a user's history.
    History {
        /// The user.
        user: String,
        /// Entries below this index.
        before: Option<u64>,
        /// Most entries.
        limit: usize,
        /// Newest first.
        reply: RpcReplyPort<Vec<Entry>>,
    },
    /// Every offer.
    Offers {
        /// By id.
        reply: RpcReplyPort<Vec<Offer>>,
    },
    /// Every charity.
    Charities {
        /// By id.
        reply: RpcReplyPort<Vec<Charity>>,
    },
    /// Spend points on an offer.
    Redeem {
        /// Idempotency key.
        request_id: String,
        /// The user.
        user: String,
        /// The offer.
        offer_id: String,
        /// When.
        at_ms: i64,
        /// The voucher.
        reply: RpcReplyPort<Result<Redemption, Rejection>>,
    },
    /// Give points to a charity.
    Donate {
        /// Idempotency key.
        request_id: String,
        /// The user.
        user: String,
        /// The charity.
        charity_id: String,
        /// Points.
        points: u64,
        /// When.
        at_ms: i64,
        /// Points given and balance after.
        reply: RpcReplyPort<Result<(u64, u64), Rejection>>,
    },
    /// Figures per day and precinct.
    Report {
        /// First day (days since the epoch).
        from_day: u32,
        /// Last day.
        to_day: u32,
        /// Rows.
        reply: RpcReplyPort<Vec<ReportRow>>,
    },
    /// Store and deliver a direct message.
    SendMessage {
        /// Sender.
        from: String,
        /// Recipient.
        to: String,
        /// Idempotency key.
        request_id: String,
        /// Text.
        text: String,
        /// When.
        at_ms: i64,
        /// The stored message.
        reply: RpcReplyPort<Result<StoredMessage, Rejection>>,
    },
    /// A queued message's journal write finished (`stored`) or failed.
    Settled {
        /// The sender.
        from: String,
        /// The sender's request id.
        request_id: String,
        /// Whether it is durable.
        stored: bool,
        /// The conversation's journal moved on without this node (cluster mode): the
        /// book's message bookkeeping is stale.
        fenced: bool,
    },
    /// Messages of `pair` up to `seq` reached a session of `user`.
    Delivered {
        /// The recipient.
        user: String,
        /// The conversation.
        pair: String,
        /// The message.
        seq: u64,
    },
    /// Messages `user` has not had yet; each counts as delivered once its session confirms
    /// it queued it for the socket.
    Undelivered {
        /// The user.
        user: String,
        /// Oldest first per conversation.
        reply: RpcReplyPort<Result<Vec<StoredMessage>, Rejection>>,
    },
}

/// Messages a session actor accepts.
pub enum SessionMsg {
    /// The device's position (already validated).
    Position {
        /// Where.
        at: Position,
        /// Whether it changed H3 cell, and the duty window's end while on duty.
        reply: RpcReplyPort<Result<(bool, Option<i64>), Rejection>>,
    },
    /// Go on duty.
    DutyStart {
        /// Window length; none: the default.
        minutes: Option<u32>,
        /// The window's end.
        reply: RpcReplyPort<Result<i64, Rejection>>,
    },
    /// Go off duty.
    DutyEnd {
        /// Done.
        reply: RpcReplyPort<Result<(), Rejection>>,
    },
    /// The duty window armed as `generation` may have ended.
    DutyTimer {
        /// Which window armed it.
        generation: u64,
    },
    /// An officer moved (`Some`) or left (`None`); sent to citizens around it.
    OfficerMoved {
        /// The officer.
        officer: String,
        /// Where it is now, if still on duty.
        at: Option<Position>,
    },
    /// A citizen asks this officer to connect.
    IncomingRequest {
        /// The citizen.
        citizen: String,
        /// Their display name.
        display_name: String,
        /// How far apart the two are, metres (measured by whoever checked the radius).
        distance_m: f64,
        /// The request id and its expiry.
        reply: RpcReplyPort<Result<(String, i64), Rejection>>,
    },
    /// The officer answers a request.
    Answer {
        /// The request.
        request_id: String,
        /// Accept or decline.
        accept: bool,
        /// The connection, when accepted.
        reply: RpcReplyPort<Result<Option<Connection>, Rejection>>,
    },
    /// A connect request may have expired.
    RequestTimer,
    /// Pass a notice to the device.
    Notify(Notice),
    /// A newer socket of the same user took over: stop without touching shared state.
    Replaced,
}
