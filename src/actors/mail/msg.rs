//! The messages of the mail shell's actors: a job actor's and the supervisor's.
//!
//! They live apart from both actors because each actor sends to the other (the supervisor
//! spawns and wakes jobs; a job reports its schedule and outcome back). Holding the two
//! enums here lets `actor.rs` and `supervisor.rs` both depend on this file, one way,
//! instead of on each other (tests/module_cycles.rs checks that).

use super::job::{JobSummary, Origin, TransportKind};
use super::message::{JobId, MailMessage};
use crate::error::Rejection;
use crate::time::UnixMillis;
use ractor::{ActorRef, RpcReplyPort};

/// Messages a job actor accepts.
pub enum JobMsg {
    /// Store the job (idempotent) and reply with its summary.
    Accept {
        /// The envelope it came from.
        origin: Origin,
        /// What to send.
        message: MailMessage,
        /// How.
        transport: TransportKind,
        /// The job as stored, or why not.
        reply: RpcReplyPort<Result<JobSummary, Rejection>>,
    },
    /// Make one attempt now (the scheduler has admitted it), then report and stop.
    Attempt,
    /// Bring a dead job back (admin).
    Redrive {
        /// The job afterwards, or why not.
        reply: RpcReplyPort<Result<JobSummary, Rejection>>,
    },
}

/// Messages the mail supervisor accepts.
pub enum MailSupervisorMsg {
    /// The actor of job `id` (spawned if it is not awake).
    Spawn {
        /// The job.
        id: JobId,
        /// Its actor, or why it could not start.
        reply: RpcReplyPort<Result<ActorRef<JobMsg>, Rejection>>,
    },
    /// Job `id` wants an attempt at `due_ms`.
    Schedule {
        /// The job.
        id: JobId,
        /// Its transport's lane.
        transport: TransportKind,
        /// When.
        due_ms: UnixMillis,
    },
    /// A woken job finished its attempt; `due_ms` is its next one, if any.
    Settled {
        /// The job.
        id: JobId,
        /// Its lane.
        transport: TransportKind,
        /// The next attempt.
        due_ms: Option<UnixMillis>,
    },
    /// The schedule's timer fired.
    Tick,
    /// Cluster mode: time to take the `mail` lease if nobody holds it (its owner died),
    /// or to notice that this node's lapsed.
    Claim,
    /// Cluster mode: this node lost lease `key`; if it is `mail`, mission control stops
    /// here at once.
    LeaseLost {
        /// The lease.
        key: String,
    },
    /// Cluster mode: losses went unheard (the listener fell behind): mission control stops
    /// here unless this node still holds `mail`.
    LeasesUnknown,
}
