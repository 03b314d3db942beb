//! The one journaled shell: how every actor that owns an [`Aggregate`] persists it.
//!
//! An actor keeps a [`Journaled`] for its state and calls [`Journaled::execute`] for every
//! change: the aggregate decides, the events are appended (group-committed with everyone
//! else's) and only once they are durable applied, then a snapshot is queued every
//! `snapshot_every` events. [`Journaled::recover`] is the way back: the latest snapshot plus
//! every later event, applied in order. The actor around it only talks: it turns messages
//! into commands and sends what the outcome says to whom.
//!
//! This is where the invariant "acknowledged means durable" lives for every aggregate at
//! once: nothing here applies an event that was not stored, and a failed append leaves the
//! state exactly as it was and answers `unavailable`.

use crate::error::Rejection;
use crate::persist::{ActorKey, Compaction, Journal, PersistError, Restored};
use peloton_domain::aggregate::{Aggregate, Decision};

/// When an actor snapshots its state and what becomes of the events a snapshot covers.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotPolicy {
    /// Events between snapshots; 0 never snapshots (short-lived actors, like a mail job).
    pub every: u64,
    /// Deleted, or kept when the events are data of their own (a racer's fixes).
    pub compaction: Compaction,
}

/// An aggregate with its place in the journal.
pub struct Journaled<A: Aggregate> {
    /// Where its events and snapshots are kept.
    key: ActorKey,
    /// The state, as of the last durable event.
    state: A,
    /// Sequence number of the last journaled event.
    seq: u64,
    /// Sequence number the latest snapshot covers.
    snapshot_seq: u64,
    /// Changes since the latest snapshot: events, and amendments of what the state keeps
    /// beside its events.
    changes: u64,
    /// The journal every actor writes through.
    journal: Journal,
    /// When to snapshot.
    policy: SnapshotPolicy,
    /// Set when an append was fenced: the journal holds events this state lacks.
    fenced: bool,
}

impl<A: Aggregate> Journaled<A> {
    /// Rebuilds the aggregate stored under `key`: its latest snapshot and every later event
    /// (a new aggregate when nothing is stored). A gap or an undecodable record is an error
    /// naming the key and sequence.
    pub fn recover(
        journal: Journal,
        key: ActorKey,
        policy: SnapshotPolicy,
    ) -> Result<Journaled<A>, PersistError> {
        let Restored {
            state,
            last_seq,
            snapshot_seq,
        } = journal.restore::<A, A::Event>(&key, A::apply)?;
        Ok(Journaled {
            key,
            state,
            seq: last_seq,
            snapshot_seq,
            changes: last_seq - snapshot_seq,
            journal,
            policy,
            fenced: false,
        })
    }

    /// Whether an append was fenced: another writer appended to this journal (cluster
    /// mode), so the state is stale and every later append would be refused too. The actor
    /// fails, and its supervisor restarts it from the journal.
    pub fn fenced(&self) -> bool {
        self.fenced
    }

    /// The state as of the last durable event.
    pub fn state(&self) -> &A {
        &self.state
    }

    /// Where the aggregate is journaled.
    pub fn key(&self) -> &ActorKey {
        &self.key
    }

    /// Decide, append and wait for durability, apply, snapshot when due: the only order in
    /// which the state changes. Returns the events applied and the decision's outcome. When
    /// the append fails, nothing is applied and the error is `unavailable` with
    /// `retry_hint`, since sending the request again is safe.
    pub async fn execute(
        &mut self,
        command: A::Command,
        context: A::Context<'_>,
        retry_hint: &str,
    ) -> Result<Decision<A::Event, A::Outcome>, Rejection> {
        let decision = self.state.decide(command, context)?;
        // A command that changes nothing (a retried registration) costs no write.
        if decision.events.is_empty() {
            return Ok(decision);
        }
        if let Err(refused) = self
            .journal
            .append_or_unavailable(&self.key, self.seq + 1, &decision.events, retry_hint)
            .await
        {
            self.fenced |= refused.fenced;
            return Err(refused.rejection);
        }
        for event in &decision.events {
            self.state.apply(event);
        }
        self.seq += decision.events.len() as u64;
        self.changes += decision.events.len() as u64;
        self.snapshot_if_due().await;
        Ok(decision)
    }

    /// Changes what the state keeps beside its events: bookkeeping that recovery rebuilds
    /// from other journals (a conversation's numbering, from its messages) and snapshots
    /// save, so a restart replays less. Counts towards the snapshot cadence; the caller
    /// awaits [`Journaled::snapshot_if_due`] when it is done amending.
    pub fn amend<R>(&mut self, change: impl FnOnce(&mut A) -> R) -> R {
        self.changes += 1;
        change(&mut self.state)
    }

    /// Queues a snapshot once enough changes passed since the last one: `policy.every`, or
    /// an eighth of the state's size if larger. A snapshot that cannot be queued only
    /// lengthens the next recovery, so it is logged, not returned.
    pub async fn snapshot_if_due(&mut self) {
        if self.policy.every == 0 {
            return;
        }
        let due = self
            .policy
            .every
            .max(u64::try_from(self.state.size_hint() / 8).unwrap_or(u64::MAX));
        if self.changes < due {
            return;
        }
        match self
            .journal
            .snapshot(&self.key, self.seq, &self.state, self.policy.compaction)
            .await
        {
            Ok(()) => {
                self.snapshot_seq = self.seq;
                self.changes = 0;
            }
            Err(e) => tracing::warn!(key = %self.key, seq = self.seq, "snapshot not queued: {e}"),
        }
    }
}
