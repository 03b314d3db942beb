//! What a handled request asks of its socket: one reply, or a reply followed by a stream
//! (a race's live ticks, a paced replay, a backup file). Every domain module returns it
//! and the session carries it out without knowing which domain asked.

use super::race_stream::{ReplayPacer, TickFeed};
use crate::actors::race::feed::RecentTick;
use crate::error::Rejection;
use crate::net::protocol::{Push, Reply};
use std::path::PathBuf;

/// What the session should send back.
pub enum Outcome {
    /// One reply or error.
    Reply(Result<Reply, Rejection>),
    /// Send `reply`, then forward the race's ticks after `seq` from `updates`.
    Subscribed {
        /// The snapshot reply.
        reply: Reply,
        /// The feed the snapshot continues from.
        seq: u64,
        /// Ticks a resuming spectator missed, oldest first, to send right after `reply`.
        missed: Vec<RecentTick>,
        /// The race's published ticks.
        updates: TickFeed,
    },
    /// Send `reply`, then play the replay's steps to the socket as `pacer` paces them.
    Replay {
        /// The reply announcing the replay.
        reply: Reply,
        /// The replay's pushes and the waits between them.
        pacer: ReplayPacer,
    },
    /// Send `reply`, then `push` (a racer's new reporting interval after its ack).
    ReplyThenPush {
        /// The answer.
        reply: Reply,
        /// What the caller is told right after it.
        push: Push,
    },
    /// Stream this file as backup chunks, then send `reply`, then delete the file.
    StreamFile {
        /// The file to stream.
        path: PathBuf,
        /// The reply that ends the stream.
        reply: Reply,
    },
}

impl From<Result<Reply, Rejection>> for Outcome {
    fn from(result: Result<Reply, Rejection>) -> Self {
        Outcome::Reply(result)
    }
}
