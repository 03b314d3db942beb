//! Peloton's rules, with nothing of how they are run.
//!
//! Every type here is plain data with pure functions: commands are decided given the time as
//! an argument, events are applied without failing, and nothing waits, sleeps, stores or
//! sends. The server crate (`peloton`) wraps each aggregate in an actor shell that journals
//! and replies; the protocol crate names [`error::ErrorCode`] and [`role::Role`] on the wire.
//!
//! - [`aggregate`]: the decide / apply shape every journaled rule set has.
//! - [`error`], [`ids`], [`time`], [`role`]: the shared vocabulary of every domain.
//! - [`device_time`]: the window a time sent by a device must fall in.
//! - [`geo`]: positions, courses, progress along a course.
//! - [`race`], [`racer`]: a race's lifecycle, roster, standings, results and replays; one
//!   racer's tracking rules.
//! - [`mail`]: mission control's jobs, backoff, breaker, idempotency and schedule.
//! - [`patrol`]: proximity, privacy, duty sessions, the directory, the rewards ledger, vouchers.
//!
//! `Cargo.toml` keeps this crate free of tokio, ractor, sled and sockets: the compiler, not a
//! convention, keeps rules out of the shells' reach and I/O out of the rules'.

pub mod aggregate;
pub mod device_time;
pub mod error;
pub mod geo;
pub mod ids;
pub mod mail;
pub mod patrol;
pub mod race;
pub mod racer;
pub mod role;
pub mod time;
