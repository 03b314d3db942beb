//! The replicated backend: actors' journals on NATS JetStream (cluster mode, `[cluster]`).
//!
//! - [`names`]: where an actor's journal lives (stream per kind, subject per actor, snapshot
//!   key), pure.
//! - [`writer`]: the append pipeline; an append is answered once JetStream acknowledged its
//!   record, which it does after a majority of the stream's replicas stored it. Every record
//!   expects its actor's previous one, so a second writer of one journal is refused.
//! - [`streams`]: finding and creating streams, reading an actor's records, snapshot values.
//!
//! Everything NATS runs on the [`Link`]'s runtime: the trait's reads are synchronous (sled
//! answers them from memory or disk), so here the caller's thread waits for the answer from
//! that runtime, which never waits for the caller's. Reads happen when an actor recovers,
//! not per request.

mod names;
mod streams;
mod writer;

use super::backend::{JournalBackend, WriteQueue};
use super::store::{ActorKey, RawEvents};
use super::{Journal, PersistError};
use crate::cluster::Link;
use async_nats::jetstream::{kv, stream::StorageType};
use futures_util::StreamExt;
use names::Layout;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use streams::Streams;
pub use writer::WriteGuard;
use writer::Writer;

/// Capacity of the channel into the writer; a full channel slows appenders down.
const QUEUE_CAPACITY: usize = 65_536;

/// The JetStream backend: appends to the writer task, reads answered from the streams.
pub struct JetStreamJournal {
    /// Into the writer task.
    writes: WriteQueue,
    /// The streams, for reads.
    streams: Arc<Streams>,
    /// The snapshot bucket.
    snapshots: kv::Store,
    /// The connection and the runtime NATS work runs on.
    link: Link,
}

/// The writer's end: [`JetStreamWriter::join`] waits for it to answer everything queued.
pub struct JetStreamWriter {
    /// Signalled when the writer task ended.
    finished: std::sync::mpsc::Receiver<()>,
}

impl JetStreamJournal {
    /// Finds or creates the snapshot bucket over `link` and starts the writer, which asks
    /// `guard` before each record. Fails, naming what, when JetStream refuses or does not
    /// answer.
    pub fn start(
        link: &Link,
        guard: Option<WriteGuard>,
    ) -> Result<(Journal, JetStreamWriter), PersistError> {
        let (writes, rx) = WriteQueue::new(QUEUE_CAPACITY);
        let (finished_tx, finished) = std::sync::mpsc::channel();
        let setup = {
            let link = link.clone();
            async move {
                let (streams, snapshots) = buckets(&link).await?;
                let writer = Writer::new(
                    streams.clone(),
                    snapshots.clone(),
                    Layout::new(&link.config().prefix),
                    link.node().to_owned(),
                    guard,
                );
                tokio::spawn(async move {
                    writer.run(rx).await;
                    let _ = finished_tx.send(());
                });
                Ok::<_, PersistError>((streams, snapshots))
            }
        };
        let (streams, snapshots) = link.block_on(link.timeout() * 8, setup)?;
        let backend = JetStreamJournal {
            writes,
            streams,
            snapshots,
            link: link.clone(),
        };
        Ok((
            Journal::new(Arc::new(backend)),
            JetStreamWriter { finished },
        ))
    }

    /// Runs `read` on the NATS runtime and waits for its answer.
    fn read<T, F>(&self, read: impl FnOnce(Arc<Streams>, kv::Store) -> F) -> Result<T, PersistError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, PersistError>> + Send + 'static,
    {
        let future = read(self.streams.clone(), self.snapshots.clone());
        // A read waits for several messages, each within the read timeout; the bound here
        // only stops a caller waiting forever on a runtime that stopped.
        self.link.block_on(self.streams.read_timeout() * 60, future)
    }
}

/// The streams' handle and the snapshot bucket, found or created.
async fn buckets(link: &Link) -> Result<(Arc<Streams>, kv::Store), PersistError> {
    let layout = Layout::new(&link.config().prefix);
    let replicas = usize::try_from(link.config().replicas).unwrap_or(1);
    let bucket = layout.snapshot_bucket();
    let bucket_config = kv::Config {
        bucket: bucket.clone(),
        description: "Peloton actor snapshots".into(),
        history: 1,
        storage: StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    };
    let context = link.context().clone();
    let snapshots = streams::patiently(&format!("bucket {bucket}"), link.timeout(), || async {
        match context.get_key_value(&bucket).await {
            Ok(store) => Ok(store),
            Err(_) => context
                .create_key_value(bucket_config.clone())
                .await
                .map_err(|e| e.to_string()),
        }
    })
    .await?;
    let streams = Arc::new(Streams::new(context, layout, replicas, link.timeout()));
    Ok((streams, snapshots))
}

impl JetStreamWriter {
    /// Waits (up to a minute) for the writer to answer everything queued, once every
    /// [`Journal`] handle is gone. Call from a blocking context.
    pub fn join(self) {
        let _ = self.finished.recv_timeout(Duration::from_secs(60));
    }
}

impl JournalBackend for JetStreamJournal {
    fn writes(&self) -> &WriteQueue {
        &self.writes
    }

    fn latest_snapshot(&self, actor: &ActorKey) -> Result<Option<(u64, Vec<u8>)>, PersistError> {
        let names = self.streams.layout().actor(actor)?;
        self.read(move |_, snapshots| async move {
            Ok(snapshot_of(&snapshots, &names.snapshot_key)
                .await?
                .map(|(seq, _, state)| (seq, state)))
        })
    }

    fn events_after(&self, actor: &ActorKey, seq: u64) -> Result<RawEvents, PersistError> {
        let names = self.streams.layout().actor(actor)?;
        self.read(move |streams, snapshots| async move {
            let Some(stream) = streams.stream(&names.kind, false).await? else {
                return Ok(Vec::new());
            };
            // The snapshot says where its records end: later events are read from there.
            let from = match snapshot_of(&snapshots, &names.snapshot_key).await? {
                Some((covered, from, _)) if covered <= seq => from,
                _ => 0,
            };
            let records = streams::records(&streams, &stream, &names.subject, from).await?;
            streams::events(&names.subject, &records, seq)
        })
    }

    fn history(&self, actor: &ActorKey) -> Result<RawEvents, PersistError> {
        self.events_after(actor, 0)
    }

    fn last_seq(&self, actor: &ActorKey) -> Result<u64, PersistError> {
        let names = self.streams.layout().actor(actor)?;
        self.read(move |streams, _| async move {
            match streams.stream(&names.kind, false).await? {
                Some(stream) => Ok(streams::last_record(&stream, &names.subject)
                    .await?
                    .last_event),
                None => Ok(0),
            }
        })
    }

    fn page_before(
        &self,
        actor: &ActorKey,
        before: Option<u64>,
        limit: usize,
    ) -> Result<RawEvents, PersistError> {
        let end = before.unwrap_or(u64::MAX);
        let mut events = self.events_after(actor, 0)?;
        events.retain(|(seq, _)| *seq < end);
        events.reverse();
        events.truncate(limit);
        Ok(events)
    }

    fn actors(&self, kind: &str, id_prefix: &str) -> Result<Vec<ActorKey>, PersistError> {
        let kind = kind.to_owned();
        let id_prefix = id_prefix.to_owned();
        let (_, subjects) = self.streams.layout().stream_of(&kind)?;
        self.read(move |streams, snapshots| async move {
            let layout = streams.layout().clone();
            let mut found = BTreeSet::new();
            // The kind's journal subjects, and its snapshot keys (a purged journal leaves
            // only the snapshot): both listed by the server, filtered to this kind, rather
            // than every key of every kind read back here.
            if let Some(stream) = streams.stream(&kind, false).await? {
                for subject in subjects_of(&stream, &subjects).await? {
                    found.extend(layout.actor_of_subject(&subject));
                }
            }
            let snapshot_keys = format!("{}{kind}.>", snapshots.prefix);
            for subject in subjects_of(&snapshots.stream, &snapshot_keys).await? {
                found.extend(
                    subject
                        .strip_prefix(snapshots.prefix.as_str())
                        .and_then(|key| layout.actor_of_snapshot_key(key)),
                );
            }
            let prefix = format!("{kind}/{id_prefix}");
            Ok(found
                .into_iter()
                .filter(|actor| actor.as_str().starts_with(&prefix))
                .collect())
        })
    }
}

/// The subjects of `stream` matching `filter` that hold messages, as the server lists them.
async fn subjects_of(
    stream: &async_nats::jetstream::stream::Stream,
    filter: &str,
) -> Result<Vec<String>, PersistError> {
    let failed = |e: &dyn std::fmt::Display| streams::unavailable(&format!("subjects {filter}"), e);
    let mut listed = stream
        .info_with_subjects(filter)
        .await
        .map_err(|e| failed(&e))?;
    let mut subjects = Vec::new();
    while let Some(entry) = listed.next().await {
        subjects.push(entry.map_err(|e| failed(&e))?.0);
    }
    Ok(subjects)
}

/// An actor's snapshot: (last event covered, record to read from, state).
async fn snapshot_of(
    snapshots: &kv::Store,
    key: &str,
) -> Result<Option<(u64, u64, Vec<u8>)>, PersistError> {
    let value = snapshots
        .get(key)
        .await
        .map_err(|e| streams::unavailable(&format!("snapshot {key}"), e))?;
    value
        .map(|value| streams::decode_snapshot(key, &value))
        .transpose()
}
