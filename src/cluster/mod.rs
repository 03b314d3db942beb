//! What cluster mode (`[cluster]`) adds besides the replicated journal
//! (`persist::jetstream`): the node's connection to NATS ([`link`]), and leases that make
//! one node the owner of a race ([`lease`], the rule; [`leases`], the bucket).
//!
//! Nothing here knows what a race is: a lease is a key. The race supervisor decides what
//! to lease and what to stop when a lease is lost.

pub mod lease;
pub mod leases;
pub mod link;

pub use leases::{Leases, Taken};
pub use link::{Link, LinkRuntime};
