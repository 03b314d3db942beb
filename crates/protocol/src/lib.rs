//! Peloton's wire: the v1 message model, its two encodings, the close codes and the Rust
//! client, shared by the server, the admin CLI, the simulators, the benches and the tests.
//!
//! - [`protocol`]: every client and server frame (requests, replies, pushes, errors).
//! - [`codec`]: `peloton.v1.bin` (bincode) and `peloton.v1.json`, decoding bounded.
//! - [`close_code`]: the WebSocket close codes the server sends.
//! - [`client`]: one socket, one request at a time, pushes kept aside.
//! - [`samples`]: one request of every type, for round-trip tests and fuzz seeds.
//! - [`device`]: pure decoders for phone tracking apps' HTTP protocols (OsmAnd/Traccar,
//!   OwnTracks), for the server's HTTP ingest.
//!
//! It depends on the domain crate only for [`ErrorCode`] and [`Role`], which the wire
//! carries; it holds no rule and knows nothing of the server. A v2 is a new module pair
//! beside `protocol` and `codec`; PROTOCOL.md documents every byte.

pub mod client;
pub mod close_code;
pub mod codec;
pub mod device;
pub mod protocol;
pub mod samples;

pub use peloton_domain::error::ErrorCode;
pub use peloton_domain::role::Role;
