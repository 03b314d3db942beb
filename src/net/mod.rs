//! Everything about bytes on sockets, and nothing about rules.
//!
//! - [`protocol`]: the v1 message model (requests, replies, errors, pushes).
//! - [`codec`]: the two encodings of that model, `peloton.v1.bin` and `peloton.v1.json`.
//! - [`http`]: the HTTP server on the one port: health, readiness, metrics, WebSocket upgrade.
//! - [`session`]: one WebSocket's life: limits, decoding, dispatch to [`crate::api`], replies.
//! - [`ingest`]: tracking apps' HTTP reports (OsmAnd protocol, OwnTracks).
//! - [`response`]: the HTTP answers both share (text, JSON errors, refusals).
//! - [`ratelimit`]: the per-socket token bucket.
//! - [`limits`]: admission of connections: sockets per server and per subject, upgrades and
//!   guest tokens per client address.
//! - [`client`]: the Rust client the CLI and the tests use.
//! - [`web`]: the spectator web page's embedded files (served by [`http`]).
//! - [`mail`]: the mail transports (SMTP, HTTP mail API) the mail domain sends through.
//!
//! `protocol`, `codec`, `client` and `close_code` are the `peloton-protocol` crate: they depend on
//! nothing but the domain's shared types, so a v2 can be added beside them.

pub mod http;
pub mod ingest;
pub mod limits;
pub mod mail;
pub mod ratelimit;
pub mod response;
pub mod session;
pub mod web;

// The wire itself lives in the protocol crate, shared with the CLI, the simulator, benches
// and tests; the server names it where it always did.
pub use peloton_protocol::{client, close_code, codec, protocol};
