//! The JetStream side both the writer and the reads use: the streams (created on first use
//! with the configured replicas), an actor's newest record, reading an actor's records in
//! order, and the snapshot value's layout.

use super::super::{record, PersistError};
use super::names::{Layout, SEQ_HEADER};
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind, StorageType};
use async_nats::jetstream::{self as js};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::Mutex;

/// JetStream's error code for a stream that does not exist.
const STREAM_NOT_FOUND: u64 = 10059;

/// An actor's newest record: where the next one must follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tip {
    /// Its stream sequence (0: the actor has no record), which the next record expects.
    pub record: u64,
    /// The sequence number of its last event (0: none).
    pub last_event: u64,
}

impl Tip {
    /// An actor with no record.
    pub const EMPTY: Tip = Tip {
        record: 0,
        last_event: 0,
    };
}

/// The streams of one deployment, found or created once per process.
pub(super) struct Streams {
    /// Publishes and requests go through it.
    context: js::Context,
    /// The naming scheme.
    layout: Layout,
    /// Replicas of a stream this process creates.
    replicas: usize,
    /// How long one read may wait for the next message.
    read_timeout: Duration,
    /// Streams found so far, by kind.
    found: Mutex<HashMap<String, stream::Stream>>,
}

impl Streams {
    /// The streams reached through `context`.
    pub(super) fn new(
        context: js::Context,
        layout: Layout,
        replicas: usize,
        read_timeout: Duration,
    ) -> Streams {
        Streams {
            context,
            layout,
            replicas,
            read_timeout,
            found: Mutex::new(HashMap::new()),
        }
    }

    /// The JetStream context.
    pub(super) fn context(&self) -> &js::Context {
        &self.context
    }

    /// The naming scheme.
    pub(super) fn layout(&self) -> &Layout {
        &self.layout
    }

    /// How long one read may wait.
    pub(super) fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    /// The stream of actor kind `kind`; created when `create` (an append), else `None` when
    /// it does not exist yet (a read of a kind nothing was written to).
    pub(super) async fn stream(
        &self,
        kind: &str,
        create: bool,
    ) -> Result<Option<stream::Stream>, PersistError> {
        let mut found = self.found.lock().await;
        if let Some(stream) = found.get(kind) {
            return Ok(Some(stream.clone()));
        }
        let (name, subjects) = self.layout.stream_of(kind)?;
        let stream = if create {
            let config = stream::Config {
                name: name.clone(),
                subjects: vec![subjects],
                storage: StorageType::File,
                num_replicas: self.replicas,
                allow_direct: true,
                ..Default::default()
            };
            patiently(&format!("stream {name}"), self.read_timeout, || {
                self.context.get_or_create_stream(config.clone())
            })
            .await?
        } else {
            match self.context.get_stream(&name).await {
                Ok(stream) => stream,
                Err(e) => match e.kind() {
                    GetStreamErrorKind::JetStream(js_error)
                        if js_error.error_code().0 == STREAM_NOT_FOUND =>
                    {
                        return Ok(None)
                    }
                    _ => return Err(unavailable(&format!("stream {name}"), e)),
                },
            }
        };
        found.insert(kind.to_owned(), stream.clone());
        Ok(Some(stream))
    }
}

/// A JetStream failure as a storage error naming what was asked.
pub(super) fn unavailable(what: &str, e: impl std::fmt::Display) -> PersistError {
    PersistError::Storage(format!("NATS JetStream, {what}: {e}"))
}

/// The stream sequence and first event sequence of `subject`'s newest record, if any.
pub(super) async fn last_record_start(
    stream: &stream::Stream,
    subject: &str,
) -> Result<Option<(u64, u64)>, PersistError> {
    Ok(newest(stream, subject)
        .await?
        .map(|(record, first, _)| (record, first)))
}

/// `subject`'s newest record as a [`Tip`].
pub(super) async fn last_record(
    stream: &stream::Stream,
    subject: &str,
) -> Result<Tip, PersistError> {
    Ok(match newest(stream, subject).await? {
        Some((record, first, count)) => Tip {
            record,
            last_event: first + count - 1,
        },
        None => Tip::EMPTY,
    })
}

/// The newest record of `subject`: stream sequence, first event, event count.
async fn newest(
    stream: &stream::Stream,
    subject: &str,
) -> Result<Option<(u64, u64, u64)>, PersistError> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => {
            let first = first_seq(&message.headers, subject, message.sequence)?;
            let count = record::batch_len(&message.payload)
                .map_err(|reason| corrupt(subject, first, reason))?;
            Ok(Some((message.sequence, first, count)))
        }
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(unavailable(&format!("newest record of {subject}"), e)),
    }
}

/// A record's first event sequence, from its header.
fn first_seq(
    headers: &async_nats::HeaderMap,
    subject: &str,
    record: u64,
) -> Result<u64, PersistError> {
    headers
        .get(SEQ_HEADER)
        .and_then(|value| value.as_str().parse().ok())
        .ok_or_else(|| {
            corrupt(
                subject,
                0,
                format!("record {record} has no {SEQ_HEADER} header"),
            )
        })
}

/// A record that cannot be read.
fn corrupt(subject: &str, seq: u64, reason: String) -> PersistError {
    PersistError::Corrupt {
        actor: subject.to_owned(),
        seq,
        reason,
    }
}

/// Every record of `subject` from stream sequence `from` on (0: the first), in order, as
/// (first event sequence, payload). Reads through an ordered consumer up to the newest
/// record found before reading, so a read always ends.
pub(super) async fn records(
    streams: &Streams,
    stream: &stream::Stream,
    subject: &str,
    from: u64,
) -> Result<Vec<(u64, Bytes)>, PersistError> {
    let Some((end, _, _)) = newest(stream, subject).await? else {
        return Ok(Vec::new());
    };
    if end < from {
        return Ok(Vec::new());
    }
    let deliver_policy = if from <= 1 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: from,
        }
    };
    let consumer = ordered_reader(streams, stream, subject, deliver_policy).await?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| unavailable(&format!("reader of {subject}"), e))?;
    let mut out = Vec::new();
    loop {
        let next = tokio::time::timeout(streams.read_timeout(), messages.next())
            .await
            .map_err(|_| unavailable(&format!("reading {subject}"), "timed out"))?;
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(e)) => return Err(unavailable(&format!("reading {subject}"), e)),
            None => {
                return Err(unavailable(
                    &format!("reading {subject}"),
                    "the reader ended early",
                ))
            }
        };
        let sequence = message
            .info()
            .map_err(|e| unavailable(&format!("reading {subject}"), e))?
            .stream_sequence;
        let headers = message.headers.clone().unwrap_or_default();
        out.push((
            first_seq(&headers, subject, sequence)?,
            message.payload.clone(),
        ));
        if sequence >= end {
            return Ok(out);
        }
    }
}

/// An ordered consumer of `subject`.
async fn ordered_reader(
    streams: &Streams,
    stream: &stream::Stream,
    subject: &str,
    deliver_policy: DeliverPolicy,
) -> Result<js::consumer::Consumer<OrderedConfig>, PersistError> {
    patiently(
        &format!("reader of {subject}"),
        streams.read_timeout(),
        || {
            stream.create_consumer(OrderedConfig {
                filter_subject: subject.to_owned(),
                deliver_policy,
                ..Default::default()
            })
        },
    )
    .await
}

/// Tries `attempt` until it succeeds or six `timeout`s have passed. What needs the
/// cluster's meta leader (creating a consumer, a stream or a bucket) fails for a few seconds
/// after a NATS node dies, while a new one is elected: a node starting or an actor
/// recovering then waits and tries again rather than failing.
pub(super) async fn patiently<T, E, F, Fut>(
    what: &str,
    timeout: Duration,
    mut attempt: F,
) -> Result<T, PersistError>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let give_up = tokio::time::Instant::now() + timeout * 6;
    let mut pause = Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if tokio::time::Instant::now() + pause >= give_up => {
                return Err(unavailable(what, e));
            }
            Err(e) => {
                tracing::debug!("{what}: {e}; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// The events of `records` after `after`, one entry per event.
pub(super) fn events(
    subject: &str,
    records: &[(u64, Bytes)],
    after: u64,
) -> Result<Vec<(u64, Vec<u8>)>, PersistError> {
    let mut out = Vec::new();
    for (first, payload) in records {
        let events = record::unbatch(payload).map_err(|reason| corrupt(subject, *first, reason))?;
        for (i, event) in events.into_iter().enumerate() {
            let seq = first + i as u64;
            if seq > after {
                out.push((seq, event.to_vec()));
            }
        }
    }
    Ok(out)
}

/// A snapshot's value in the bucket: the stream sequence recovery reads from (0: the
/// start), then the snapshot as the journal encoded it (the last event it covers, 8 bytes
/// big-endian, then the state).
pub(super) fn encode_snapshot(from_record: u64, snapshot: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + snapshot.len());
    value.extend_from_slice(&from_record.to_be_bytes());
    value.extend_from_slice(snapshot);
    value
}

/// The parts of a snapshot value: (last event covered, record to read from, state).
pub(super) fn decode_snapshot(
    key: &str,
    value: &[u8],
) -> Result<(u64, u64, Vec<u8>), PersistError> {
    let header = |range: std::ops::Range<usize>| {
        value
            .get(range)
            .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
            .map(u64::from_be_bytes)
    };
    match (header(0..8), header(8..16)) {
        (Some(from), Some(seq)) => Ok((seq, from, value[16..].to_vec())),
        _ => Err(corrupt(
            key,
            0,
            format!("snapshot value of {} bytes", value.len()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_value_round_trips_and_a_short_one_is_corrupt() {
        let snapshot = [&42u64.to_be_bytes()[..], b"state"].concat();
        let value = encode_snapshot(7, &snapshot);
        assert_eq!(
            decode_snapshot("k", &value).unwrap(),
            (42, 7, b"state".to_vec())
        );
        let empty = encode_snapshot(0, &1u64.to_be_bytes());
        assert_eq!(decode_snapshot("k", &empty).unwrap(), (1, 0, Vec::new()));
        assert!(matches!(
            decode_snapshot("k", &value[..15]),
            Err(PersistError::Corrupt { .. })
        ));
    }

    #[test]
    fn events_are_cut_at_the_sequence_asked_for() {
        let records = vec![
            (
                1,
                Bytes::from(record::batch(vec![b"a".to_vec(), b"b".to_vec()])),
            ),
            (3, Bytes::from(record::batch(vec![b"c".to_vec()]))),
        ];
        let after_one = events("s", &records, 1).unwrap();
        assert_eq!(after_one, vec![(2, b"b".to_vec()), (3, b"c".to_vec())]);
        assert_eq!(events("s", &records, 0).unwrap().len(), 3);
        assert!(events("s", &records, 3).unwrap().is_empty());
    }
}
