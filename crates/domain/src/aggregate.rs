//! The shape every journaled rule set has: decide on a command, then apply the events.
//!
//! An aggregate is the state one actor owns (a race, a racer, a mail job, the patrol book).
//! [`Aggregate::decide`] reads the state and a context (the time, the rules) and says what
//! happened, without changing anything; [`Aggregate::apply`] folds one event in and never
//! fails. The server's one journaled shell (`actors::journaled`) runs every aggregate the same
//! way: decide, append the events and wait for durability, apply, snapshot now and then; and
//! on start, the latest snapshot plus every later event, applied in order. So an aggregate is
//! tested here without tokio, and a crash loses nothing that was answered.

use crate::error::Rejection;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// State that changes only through events it decided itself.
pub trait Aggregate: Default + Serialize + DeserializeOwned + Send + 'static {
    /// What the aggregate is asked to do.
    type Command;
    /// What happened: journaled before it is applied, replayed on recovery.
    type Event: Serialize + DeserializeOwned + Send + Sync;
    /// Everything a decision reads besides the state (the time, rules, shared geometry),
    /// handed in so `decide` stays pure and replayable.
    type Context<'a>;
    /// What the caller learns besides the events (counts, the mails to send): carried out
    /// by the shell only once the events are durable.
    type Outcome;

    /// Decides what `command` means now. An error changes nothing and writes nothing.
    fn decide(
        &self,
        command: Self::Command,
        context: Self::Context<'_>,
    ) -> Result<Decision<Self::Event, Self::Outcome>, Rejection>;

    /// Folds one event in. Never fails and never reads the clock: recovery depends on it.
    fn apply(&mut self, event: &Self::Event);

    /// Roughly how many entries the state holds. A snapshot costs time in proportion, so a
    /// large state is snapshotted less often: every `max(policy, size_hint / 8)` changes.
    /// States that stay small keep the default, 0.
    fn size_hint(&self) -> usize {
        0
    }
}

/// A decision: the events to journal and apply, and what follows from them.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision<E, O> {
    /// In order; empty when the command changes nothing (a retry), which costs no write.
    pub events: Vec<E>,
    /// What the shell hands back or carries out after the events are durable.
    pub outcome: O,
}

impl<E> Decision<E, ()> {
    /// A decision that is only its events.
    pub fn events(events: Vec<E>) -> Decision<E, ()> {
        Decision {
            events,
            outcome: (),
        }
    }
}
