//! Patrol's rules: the H3 proximity index ([`proximity`]), what a citizen may see of an
//! officer ([`privacy`]), duty sessions and connect requests ([`session`]), officers, offers
//! and charities ([`directory`]), the rewards ledger ([`ledger`]), the book that holds them
//! ([`book`]), offline-verifiable vouchers ([`voucher`]) and what a device is told
//! ([`notice`]).

pub mod book;
pub mod directory;
pub mod ledger;
pub mod notice;
pub mod privacy;
pub mod proximity;
pub mod session;
pub mod voucher;

pub use session::PatrolRole;
