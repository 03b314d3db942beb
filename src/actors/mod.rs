//! Actors: one per live thing, each a thin ractor shell around a pure state type.
//!
//! - [`root`]: the root supervisor; starts one supervisor per domain.
//! - [`ask`]: call an actor with a timeout; silence becomes `unavailable`.
//! - [`clock`]: wall-clock time that advances with tokio's (pausable) clock.
//! - [`events`]: domain events one domain publishes for others.
//! - [`journaled`]: the one shell that journals, applies, snapshots and recovers every
//!   aggregate (race, racer, mail job, patrol book).
//! - [`mail`]: mission control, durable mail jobs (rules, actors, transports).
//! - [`patrol`]: officers, citizens, proximity, rewards and direct messages.
//! - [`race`]: the race domain (state, actor, supervisor, the facade the API calls).
//! - [`racer`]: one racer's tracking rules (fixes, progress, splits, finish).
//! - [`registry`]: id → actor handle, read without asking any actor.
//! - [`restart`]: the restart budget every supervisor applies.
//! - [`slot`]: where a domain's current supervisor publishes itself for its facade.
//!
//! Rules live in `state.rs` files and never touch tokio, sockets or sled; actor shells only
//! load, persist, apply and reply.

pub mod ask;
pub mod clock;
pub mod events;
pub mod journaled;
pub mod mail;
pub mod patrol;
pub mod race;
pub mod racer;
pub mod registry;
pub mod restart;
pub mod root;
pub mod slot;
