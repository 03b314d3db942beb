//! What cluster mode (`[cluster]`) adds besides the replicated journal
//! (`persist::jetstream`): the node's connection to NATS ([`link`]), leases that make one
//! node the owner of a race ([`lease`], the rule; [`leases`], the bucket), and requests
//! sent to the node that owns what they are about ([`forward`]); messages every interested
//! node gets ([`topic`]); who is up and what they hold ([`status`]).
//!
//! Nothing here knows what a race is: a lease is a key. The race supervisor decides what
//! to lease and what to stop when a lease is lost.

pub mod forward;
pub mod lease;
pub mod leases;
pub mod link;
pub mod mail_bus;
pub mod status;
pub mod topic;

pub use leases::{Leases, Taken};
pub use link::{Link, LinkRuntime};

/// This node's part in the cluster, shared by the engine and the API.
#[derive(Clone)]
pub struct Node {
    /// The connection to NATS.
    pub link: Link,
    /// The leases this node holds, and who holds the others.
    pub leases: Leases,
    /// The nodes up, for clients that must move when their node dies.
    pub members: status::Members,
}
