//! The append pipeline: one task that publishes every journal record and snapshot, and
//! answers each append once JetStream acknowledged it (stored on a majority of replicas).
//!
//! Group commit here is pipelining: records of different actors are published back to back
//! on one connection without waiting for each other's acknowledgement, so under load many
//! appends share the round trip to the replicas, as many sled appends share one fsync.
//!
//! One actor has at most one record in flight, because each record carries the stream
//! sequence of the actor's previous record (`Nats-Expected-Last-Subject-Sequence`): a
//! second writer of the same journal (a stale owner, a record that landed after its caller
//! was told it failed) makes the publish fail instead of interleaving two histories. Appends
//! of an actor that arrive while its record is in flight wait, and go out together as one
//! record when it is acknowledged.

use super::super::backend::{Compaction, Waiter, WriteOp};
use super::super::store::ActorKey;
use super::super::{record, PersistError};
use super::names::{ActorNames, Layout, NODE_HEADER, SEQ_HEADER};
use super::streams::{encode_snapshot, last_record, last_record_start, Streams, Tip};
use crate::metrics as m;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv;
use async_nats::jetstream::message::PublishMessage;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// Whether this node may write `actor`'s journal now (`Err`: why not). Cluster mode
/// installs one that checks the lease of the actor's race, so a node that lost (or could
/// not renew) a lease stops writing at once, before another node can take it over.
pub type WriteGuard = Arc<dyn Fn(&ActorKey) -> Result<(), String> + Send + Sync>;

/// A record's payload is kept below this when appends queued behind one in flight are
/// merged, well under NATS's default `max_payload` of 1 MiB; a single larger append goes
/// alone, and NATS refuses it if it is over the server's limit.
const MERGE_BYTES: usize = 256 * 1024;

/// What a record's headers and subject may take of the servers' `max_payload`.
const HEADROOM_BYTES: usize = 1024;

/// An append waiting for its actor's record in flight.
struct Pending {
    /// Sequence number of its first event.
    first_seq: u64,
    /// Its events.
    events: Vec<Vec<u8>>,
    /// Its caller.
    done: Waiter,
    /// Its place in the order appends arrived, for flushes.
    ticket: u64,
}

/// What the writer knows of one actor's journal.
struct ActorLog {
    /// Its names.
    names: ActorNames,
    /// Its newest record (`None`: not known yet; looked up before the next publish).
    tip: Option<Tip>,
    /// A lookup or a publish of this actor is in flight.
    busy: bool,
    /// Appends waiting for it.
    queued: Vec<Pending>,
    /// The newest snapshot not yet stored (a newer one replaces it: only the newest matters).
    snapshot: Option<(u64, Vec<u8>, Compaction)>,
    /// A snapshot of this actor is being stored.
    snapshotting: bool,
}

/// What an in-flight operation ended with.
enum Completion {
    /// An actor's newest record was looked up.
    Looked {
        /// Whose.
        actor: ActorKey,
        /// The record, or why not.
        tip: Result<Tip, PersistError>,
    },
    /// A record was acknowledged or failed.
    Published {
        /// Whose.
        actor: ActorKey,
        /// The appends it carried.
        group: Vec<Pending>,
        /// The stream sequence it got, or why not.
        result: Result<u64, PublishFailure>,
        /// When it was published.
        started: Instant,
    },
    /// A snapshot was stored (or failed, which only lengthens a replay).
    Snapshotted {
        /// Whose.
        actor: ActorKey,
        /// After a purge, the actor's newest record (`None`: unknown, after a failure).
        tip: Option<Tip>,
    },
}

/// Why a publish failed.
enum PublishFailure {
    /// The actor's journal has a newer record than the one this writer expected: someone
    /// else wrote it. Nothing was stored.
    Fenced(String),
    /// Anything else: the record may or may not have been stored.
    InDoubt(String),
    /// The record is over the servers' `max_payload`: not sent.
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The servers' limit.
        limit: usize,
    },
}

/// An operation in flight.
type InFlight = Pin<Box<dyn Future<Output = Completion> + Send>>;

/// The writer task's state.
pub(super) struct Writer {
    /// The JetStream streams, and the context they are published through.
    streams: Arc<Streams>,
    /// The snapshot bucket.
    snapshots: kv::Store,
    /// The naming scheme.
    layout: Layout,
    /// This node's name, written in every record's header.
    node: String,
    /// Asked before each record whether this node may write the actor's journal.
    guard: Option<WriteGuard>,
    /// Every actor written to since start.
    actors: HashMap<ActorKey, ActorLog>,
    /// Operations in flight.
    in_flight: FuturesUnordered<InFlight>,
    /// Tickets of appends not yet answered.
    outstanding: BTreeSet<u64>,
    /// The next append's ticket.
    next_ticket: u64,
    /// Flushes waiting, with the newest ticket issued when each was asked.
    flushes: Vec<(u64, Waiter)>,
}

impl Writer {
    /// A writer publishing through `streams` and storing snapshots in `snapshots`.
    pub(super) fn new(
        streams: Arc<Streams>,
        snapshots: kv::Store,
        layout: Layout,
        node: String,
        guard: Option<WriteGuard>,
    ) -> Writer {
        Writer {
            streams,
            snapshots,
            layout,
            node,
            guard,
            actors: HashMap::new(),
            in_flight: FuturesUnordered::new(),
            outstanding: BTreeSet::new(),
            next_ticket: 0,
            flushes: Vec::new(),
        }
    }

    /// Runs until every sender is gone and everything in flight has ended.
    pub(super) async fn run(mut self, mut ops: mpsc::Receiver<WriteOp>) {
        let mut open = true;
        loop {
            tokio::select! {
                op = ops.recv(), if open => match op {
                    Some(op) => self.accept(op),
                    None => open = false,
                },
                Some(done) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.complete(done);
                }
                else => break,
            }
        }
    }

    /// Takes one request.
    fn accept(&mut self, op: WriteOp) {
        match op {
            WriteOp::Append {
                actor,
                first_seq,
                events,
                done,
            } => {
                let ticket = self.next_ticket;
                self.next_ticket += 1;
                let pending = Pending {
                    first_seq,
                    events,
                    done,
                    ticket,
                };
                match self.log(&actor) {
                    Ok(log) => {
                        log.queued.push(pending);
                        self.outstanding.insert(ticket);
                        self.advance(&actor);
                    }
                    Err(e) => {
                        let _ = pending.done.send(Err(e));
                    }
                }
            }
            WriteOp::Snapshot {
                actor,
                seq,
                state,
                compaction,
            } => match self.log(&actor) {
                Ok(log) => {
                    log.snapshot = Some((seq, state, compaction));
                    self.advance(&actor);
                }
                Err(e) => tracing::warn!(%actor, "snapshot not stored: {e}"),
            },
            WriteOp::Flush { done } => self.flushes.push((self.next_ticket, done)),
            WriteOp::Backup { done, .. } => {
                let _ = done.send(Err(PersistError::Backup(
                    "in cluster mode the journal is JetStream's: back its streams and the \
                     snapshot bucket up with `nats stream backup` (the replicas are the first \
                     line of defence)"
                        .into(),
                )));
            }
        }
        self.answer_flushes();
    }

    /// The writer's record of `actor`, created on first use.
    fn log(&mut self, actor: &ActorKey) -> Result<&mut ActorLog, PersistError> {
        if !self.actors.contains_key(actor) {
            let names = self.layout.actor(actor)?;
            self.actors.insert(
                actor.clone(),
                ActorLog {
                    names,
                    tip: None,
                    busy: false,
                    queued: Vec::new(),
                    snapshot: None,
                    snapshotting: false,
                },
            );
        }
        self.actors
            .get_mut(actor)
            .ok_or_else(|| PersistError::Storage(format!("no journal state for {actor}")))
    }

    /// Starts what `actor` can do next: a lookup of its newest record when unknown, else a
    /// record of everything queued, and a snapshot whose events are all acknowledged.
    fn advance(&mut self, actor: &ActorKey) {
        let Some(log) = self.actors.get_mut(actor) else {
            return;
        };
        if !log.busy && (!log.queued.is_empty() || log.snapshot.is_some()) && log.tip.is_none() {
            log.busy = true;
            let streams = self.streams.clone();
            let names = log.names.clone();
            let actor = actor.clone();
            self.in_flight.push(Box::pin(async move {
                let tip = match streams.stream(&names.kind, true).await {
                    Ok(Some(stream)) => last_record(&stream, &names.subject).await,
                    Ok(None) => Ok(Tip::EMPTY),
                    Err(e) => Err(e),
                };
                Completion::Looked { actor, tip }
            }));
            return;
        }
        while !log.busy && !log.queued.is_empty() {
            let Some(tip) = log.tip else {
                break;
            };
            let group = take_group(&mut log.queued);
            if group.iter().all(|p| p.events.is_empty()) {
                // An empty append stores nothing; everything before it is acknowledged.
                for pending in group {
                    self.outstanding.remove(&pending.ticket);
                    let _ = pending.done.send(Ok(()));
                }
                continue;
            }
            if let Some(refused) = self.guard.as_ref().and_then(|guard| guard(actor).err()) {
                let error = PersistError::Fenced {
                    actor: actor.to_string(),
                    reason: refused,
                };
                for pending in group {
                    self.outstanding.remove(&pending.ticket);
                    let _ = pending.done.send(Err(error.clone()));
                }
                continue;
            }
            log.busy = true;
            {
                let publish = publish(
                    self.streams.clone(),
                    log.names.clone(),
                    &self.node,
                    tip,
                    actor.clone(),
                    group,
                );
                self.in_flight.push(publish);
            }
        }
        // A snapshot goes once the records it covers are acknowledged: when nothing of this
        // actor is in flight or queued, every event it was given is.
        if !log.busy && log.queued.is_empty() && !log.snapshotting {
            if let (Some((seq, state, compaction)), Some(tip)) = (log.snapshot.take(), log.tip) {
                log.snapshotting = true;
                // Purging the records changes the subject's newest record, which the next
                // publish must expect: it waits for the purge.
                log.busy = purges(compaction, seq, tip);
                self.in_flight.push(store_snapshot(
                    self.streams.clone(),
                    self.snapshots.clone(),
                    log.names.clone(),
                    actor.clone(),
                    SnapshotJob {
                        seq,
                        state,
                        compaction,
                        tip,
                    },
                ));
            }
        }
    }

    /// Handles an operation that ended.
    fn complete(&mut self, done: Completion) {
        match done {
            Completion::Looked { actor, tip } => {
                if let Some(log) = self.actors.get_mut(&actor) {
                    log.busy = false;
                    match tip {
                        Ok(tip) => log.tip = Some(tip),
                        Err(e) => {
                            // Without the newest record no publish can be fenced: fail what
                            // waits, and look again at the next append.
                            let queued = std::mem::take(&mut log.queued);
                            log.snapshot = None;
                            for pending in queued {
                                self.outstanding.remove(&pending.ticket);
                                let _ = pending.done.send(Err(e.clone()));
                            }
                        }
                    }
                }
                self.advance(&actor);
            }
            Completion::Published {
                actor,
                group,
                result,
                started,
            } => {
                let Some(log) = self.actors.get_mut(&actor) else {
                    return;
                };
                log.busy = false;
                match result {
                    Ok(sequence) => {
                        let events: usize = group.iter().map(|p| p.events.len()).sum();
                        let last_event = group
                            .last()
                            .map_or(0, |p| p.first_seq + p.events.len() as u64 - 1);
                        log.tip = Some(Tip {
                            record: sequence,
                            last_event,
                        });
                        metrics::histogram!(m::JOURNAL_FLUSH_SECONDS)
                            .record(started.elapsed().as_secs_f64());
                        metrics::histogram!(m::JOURNAL_BATCH_EVENTS).record(events as f64);
                        metrics::counter!(m::JOURNAL_FLUSHES).increment(1);
                        metrics::counter!(m::JOURNAL_APPENDS).increment(events as u64);
                        for pending in group {
                            self.outstanding.remove(&pending.ticket);
                            let _ = pending.done.send(Ok(()));
                        }
                    }
                    Err(failure) => {
                        let error = match failure {
                            PublishFailure::Fenced(why) => PersistError::Fenced {
                                actor: actor.to_string(),
                                reason: why,
                            },
                            PublishFailure::InDoubt(why) => PersistError::Storage(why),
                            PublishFailure::TooLarge { bytes, limit } => PersistError::TooLarge {
                                actor: actor.to_string(),
                                bytes,
                                limit,
                            },
                        };
                        tracing::error!(%actor, "journal publish failed: {error}");
                        // What waited behind the failed record continues it: with a gap
                        // below, it must fail too. The newest record is looked up again.
                        log.tip = None;
                        let queued = std::mem::take(&mut log.queued);
                        for pending in group.into_iter().chain(queued) {
                            self.outstanding.remove(&pending.ticket);
                            let _ = pending.done.send(Err(error.clone()));
                        }
                    }
                }
                self.advance(&actor);
            }
            Completion::Snapshotted { actor, tip } => {
                if let Some(log) = self.actors.get_mut(&actor) {
                    if log.busy {
                        // A purge held this actor's appends: its newest record is now the
                        // one the purge left (none), or unknown after a failure.
                        log.busy = false;
                        log.tip = tip;
                    }
                    log.snapshotting = false;
                }
                self.advance(&actor);
            }
        }
        self.answer_flushes();
    }

    /// Answers the flushes whose appends have all been answered.
    fn answer_flushes(&mut self) {
        let oldest = self.outstanding.first().copied().unwrap_or(u64::MAX);
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flushes)
            .into_iter()
            .partition(|(issued, _)| *issued <= oldest);
        self.flushes = waiting;
        for (_, done) in due {
            let _ = done.send(Ok(()));
        }
    }
}

/// The appends queued for one actor that go out as one record: the first, then those that
/// continue it without a gap while the payload stays under [`MERGE_BYTES`].
fn take_group(queued: &mut Vec<Pending>) -> Vec<Pending> {
    let mut bytes = 0;
    let mut next_seq = None;
    let mut take = 0;
    for pending in queued.iter() {
        let size: usize = pending.events.iter().map(Vec::len).sum();
        let continues = next_seq.is_none_or(|seq| seq == pending.first_seq);
        if take > 0 && (!continues || bytes + size > MERGE_BYTES) {
            break;
        }
        bytes += size;
        next_seq = Some(pending.first_seq + pending.events.len() as u64);
        take += 1;
    }
    queued.drain(..take).collect()
}

/// Publishes `group` as one record after `tip`, expecting `tip` to still be the subject's
/// newest record, and waits for the acknowledgement.
fn publish(
    streams: Arc<Streams>,
    names: ActorNames,
    node: &str,
    tip: Tip,
    actor: ActorKey,
    group: Vec<Pending>,
) -> InFlight {
    let first_seq = group.first().map_or(0, |p| p.first_seq);
    let events: Vec<Vec<u8>> = group.iter().flat_map(|p| p.events.clone()).collect();
    let node = node.to_owned();
    Box::pin(async move {
        let started = Instant::now();
        if first_seq <= tip.last_event {
            // The journal already holds this sequence number: another writer appended, or
            // a record reported as failed landed after all. The caller must recover.
            let why = format!(
                "the journal already ends at event {}, this append starts at {first_seq}",
                tip.last_event
            );
            return Completion::Published {
                actor,
                group,
                result: Err(PublishFailure::Fenced(why)),
                started,
            };
        }
        let payload = record::batch(events);
        // NATS would close the connection over a message above its limit: refuse it here,
        // with its size, before anything is sent (a few hundred bytes are the headers').
        let limit = streams.context().client().server_info().max_payload;
        if limit > 0 && payload.len() + HEADROOM_BYTES > limit {
            return Completion::Published {
                actor,
                group,
                result: Err(PublishFailure::TooLarge {
                    bytes: payload.len(),
                    limit: limit.saturating_sub(HEADROOM_BYTES),
                }),
                started,
            };
        }
        let mut headers = HeaderMap::new();
        headers.insert(SEQ_HEADER, first_seq.to_string().as_str());
        headers.insert(NODE_HEADER, node.as_str());
        let message = PublishMessage::build()
            .payload(Bytes::from(payload))
            .headers(headers)
            .expected_last_subject_sequence(tip.record);
        let published = Instant::now();
        let sent = streams
            .context()
            .send_publish(names.subject.clone(), message)
            .await;
        let result = match sent {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        let result = match result {
            Ok(ack) => {
                metrics::histogram!(m::JOURNAL_PUBLISH_SECONDS)
                    .record(published.elapsed().as_secs_f64());
                Ok(ack.sequence)
            }
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                Err(PublishFailure::Fenced(e.to_string()))
            }
            Err(e) => landed_after_all(&streams, &names, first_seq, e.to_string()).await,
        };
        Completion::Published {
            actor,
            group,
            result,
            started,
        }
    })
}

/// After a publish whose outcome is unknown (a timeout, a lost connection): the record's
/// stream sequence if it landed after all, so the caller is told the truth whenever
/// JetStream can answer.
async fn landed_after_all(
    streams: &Streams,
    names: &ActorNames,
    first_seq: u64,
    why: String,
) -> Result<u64, PublishFailure> {
    let newest = match streams.stream(&names.kind, false).await {
        Ok(Some(stream)) => last_record_start(&stream, &names.subject).await,
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    };
    match newest {
        Ok(Some((record, seq))) if seq == first_seq => Ok(record),
        Ok(_) => Err(PublishFailure::InDoubt(format!(
            "{why} (the record was not stored when checked)"
        ))),
        Err(e) => Err(PublishFailure::InDoubt(format!(
            "{why}; whether the record was stored is unknown: {e}"
        ))),
    }
}

/// A snapshot to store, with the actor's newest record when it was asked for.
struct SnapshotJob {
    /// The last event it covers.
    seq: u64,
    /// The encoded state.
    state: Vec<u8>,
    /// What becomes of the records it covers.
    compaction: Compaction,
    /// The actor's newest record, all of whose events were acknowledged.
    tip: Tip,
}

/// Whether a snapshot purges the records it covers: one that deletes them and covers the
/// actor's newest record (a snapshot of less keeps everything; sled would delete only the
/// records it covers entirely, and keeping them costs space, never correctness).
fn purges(compaction: Compaction, seq: u64, tip: Tip) -> bool {
    compaction == Compaction::Delete && seq >= tip.last_event && tip.record > 0
}

/// Stores a snapshot, then (for [`Compaction::Delete`]) purges every record of the actor,
/// all of which it covers. The actor's next record then expects none before it.
fn store_snapshot(
    streams: Arc<Streams>,
    snapshots: kv::Store,
    names: ActorNames,
    actor: ActorKey,
    job: SnapshotJob,
) -> InFlight {
    Box::pin(async move {
        let purge = purges(job.compaction, job.seq, job.tip);
        // Recovery of an actor whose records are kept reads from the newest record the
        // snapshot covers, instead of from the start.
        let from = if job.seq >= job.tip.last_event && !purge {
            job.tip.record
        } else {
            0
        };
        let value = encode_snapshot(from, &job.state);
        if let Err(e) = snapshots.put(&names.snapshot_key, value.into()).await {
            tracing::warn!(%actor, "snapshot not stored: {e}");
            return Completion::Snapshotted { actor, tip: None };
        }
        metrics::counter!(m::SNAPSHOTS).increment(1);
        if !purge {
            return Completion::Snapshotted {
                actor,
                tip: Some(job.tip),
            };
        }
        let purged = match streams.stream(&names.kind, false).await {
            Ok(Some(stream)) => stream
                .purge()
                .filter(names.subject.clone())
                .sequence(job.tip.record + 1)
                .await
                .map_err(|e| e.to_string()),
            Ok(None) => Err("the stream is gone".to_owned()),
            Err(e) => Err(e.to_string()),
        };
        let tip = match purged {
            Ok(_) => Some(Tip {
                record: 0,
                last_event: job.tip.last_event,
            }),
            Err(e) => {
                tracing::warn!(%actor, "records under a snapshot not purged: {e}");
                None
            }
        };
        Completion::Snapshotted { actor, tip }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    fn pending(first_seq: u64, events: usize, bytes: usize) -> Pending {
        let (done, _) = oneshot::channel();
        Pending {
            first_seq,
            events: vec![vec![0; bytes]; events],
            done,
            ticket: first_seq,
        }
    }

    #[test]
    fn a_group_is_what_continues_without_a_gap_under_the_size() {
        let mut queued = vec![pending(5, 2, 10), pending(7, 1, 10), pending(9, 1, 10)];
        let group = take_group(&mut queued);
        assert_eq!(
            group.iter().map(|p| p.first_seq).collect::<Vec<_>>(),
            [5, 7]
        );
        assert_eq!(
            queued.len(),
            1,
            "the append after a gap waits for the next record"
        );

        let mut queued = vec![pending(1, 1, MERGE_BYTES), pending(2, 1, 10)];
        assert_eq!(take_group(&mut queued).len(), 1, "the size bound splits");
        let mut queued = vec![pending(1, 1, MERGE_BYTES * 2)];
        assert_eq!(
            take_group(&mut queued).len(),
            1,
            "a large append still goes"
        );
        assert!(take_group(&mut Vec::new()).is_empty());
    }
}
