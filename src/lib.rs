//! Peloton: an actor-based real-time engine for live races, patrol proximity and durable mail.
//!
//! The crate is split so that rules never depend on transport or storage:
//! - [`actors`]: one actor per live thing; each actor's rules live in a pure `state.rs`
//!   (`handle(cmd) -> events`, `apply(event)`) beside a thin ractor shell.
//! - [`geo`]: pure geometry (courses, distances), no async.
//! - [`persist`]: snapshot + journal in sled, group commit, recovery, backup.
//! - [`net`]: the wire protocol, the HTTP/WebSocket server and the Rust client.
//! - [`api`]: maps protocol requests onto domain commands and checks roles.
//! - [`cli`]: `peloton admin …`, `peloton restore`, built on [`net::client`].
//!
//! See ARCHITECTURE.md for the map and the dependency rules.

pub mod actors;
pub mod api;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod fuzz;
pub mod metrics;
pub mod net;
pub mod persist;

// The shared vocabulary and every rule live in the domain crate; the server names them
// where it always did.
pub use peloton_domain::{device_time, error, geo, ids, role, time};
