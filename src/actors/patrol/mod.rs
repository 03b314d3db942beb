//! Patrol: on-duty officers, citizens near them, connections, reward points, vouchers,
//! donations and direct messages.
//!
//! Pure rules (no tokio, no sled):
//! - [`proximity`]: the H3 proximity index, read directly by every session (no actor hop).
//! - [`privacy`]: what a citizen may see of an officer (coarse position, rounded figures).
//! - [`session`]: one session's rules: duty window, connect requests, nearby set.
//! - [`directory`]: officer accounts, retailer offers and charities; bulk-import validation.
//! - [`ledger`]: the event-sourced rewards ledger (awards, redemptions, donations).
//! - [`book`]: everything durable but messages, as one event-sourced state.
//! - [`book_rules`]: the book's decisions, with the vouchers and mails they issue.
//! - [`reach`]: how close people must be to ask to connect, and to connect in person.
//! - [`voucher`]: voucher codes anyone holding the key can verify offline.
//! - [`notice`]: what a session's device is told unasked.
//!
//! Shell (tokio, ractor, the journal):
//! - [`context`]: settings, indexes and live sessions every patrol actor shares.
//! - [`msg`]: the book's and the sessions' messages, which the context and both actors import.
//! - [`session_actor`]: one actor per connected officer or citizen.
//! - [`book_actor`]: the one writer of the book; journals before it answers.
//! - [`supervisor`]: recovers the book, restarts it, cleans up after failed sessions.
//! - [`domain`]: the facade the API calls.

pub mod book_actor;
pub mod context;
pub mod domain;
pub mod msg;
pub mod session_actor;
pub mod supervisor;

// Patrol's rules (the domain crate), beside the shells that run them.
pub use peloton_domain::patrol::{
    book, book_rules, directory, import, ledger, notice, privacy, proximity, reach, session,
    voucher,
};

pub use domain::{PatrolDomain, PatrolLink};
pub use session::PatrolRole;
