//! Patrol's rules: the H3 proximity index ([`proximity`]), what a citizen may see of an
//! officer ([`privacy`]), duty sessions and connect requests ([`session`]), officers, offers
//! and charities ([`directory`]) and their bulk import ([`import`]), the rewards ledger
//! ([`ledger`]), the book that holds them
//! ([`book`]) and its decisions with the mails and vouchers they issue ([`book_rules`]), how
//! close people must be to ask and to connect ([`reach`]), offline-verifiable vouchers ([`voucher`]) and what a device is told
//! ([`notice`]).

pub mod book;
pub mod book_rules;
pub mod directory;
pub mod import;
pub mod ledger;
pub mod notice;
pub mod privacy;
pub mod proximity;
pub mod reach;
pub mod session;
pub mod voucher;

pub use session::PatrolRole;
