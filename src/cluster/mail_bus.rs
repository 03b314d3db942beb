//! Mission control's stream in cluster mode: envelopes submitted on any node are published
//! to `<prefix>.mission-control.incoming` and consumed by the one node holding the `mail`
//! lease; what became of each job is published to `<prefix>.mission-control.outcomes`.
//! Both subjects live in one stream, `<prefix>_mission_control`, replicated like the
//! journal's streams.
//!
//! Bytes in, bytes out, as [`super::forward`]: what an envelope or an outcome means is the
//! mail domain's (`crate::actors::mail`). Every publish carries `Nats-Msg-Id`, so a
//! submission retried within the stream's duplicate window is stored once; the mail
//! domain's own (correlation, sequence) idempotency covers what is older.
//!
//! The owner reads incoming through one durable pull consumer (`mission-control`): a message
//! is acknowledged only once the owner says it handled it (its jobs journaled), so an owner
//! that dies mid-way leaves it to be delivered again to the next owner.

use super::link::Link;
use async_nats::jetstream::consumer::{pull, AckPolicy};
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::AckKind;
use bytes::Bytes;
use futures_util::StreamExt;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The durable consumer of incoming envelopes: one per deployment, whichever node owns it.
const CONSUMER: &str = "mission-control";
/// Envelopes fetched at once: a few, so a lost owner leaves few to wait for redelivery.
const BATCH: usize = 8;
/// How long one fetch waits for envelopes before the loop looks again whether anyone
/// still listens.
const FETCH_WAIT: Duration = Duration::from_secs(1);
/// Shortest wait before an unacknowledged envelope is delivered again (an owner that died
/// while handling it); longer when the configured acknowledgement wait is.
const MIN_ACK_WAIT: Duration = Duration::from_secs(10);
/// How long JetStream remembers a `Nats-Msg-Id` and drops a message carrying it again.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long the stream keeps envelopes and outcomes: an envelope is read within seconds
/// (its jobs then live in the journal), and outcomes are for whoever follows them; without
/// a limit a season of mail would pile up in NATS. Far longer than the duplicate window.
pub const RETAIN: Duration = Duration::from_secs(7 * 24 * 3600);
/// Pause before an envelope the owner could not handle now is offered again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The subjects and stream of one deployment's mission control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// `<prefix>_mission_control`.
    pub stream: String,
    /// `<prefix>.mission-control.incoming`: submitted envelopes.
    pub incoming: String,
    /// `<prefix>.mission-control.outcomes`: jobs sent or dead.
    pub outcomes: String,
}

impl Names {
    /// The names under cluster prefix `prefix`.
    pub fn new(prefix: &str) -> Names {
        Names {
            stream: format!("{prefix}_mission_control"),
            incoming: format!("{prefix}.mission-control.incoming"),
            outcomes: format!("{prefix}.mission-control.outcomes"),
        }
    }
}

/// Mission control's stream, as one node sees it; cloned freely.
#[derive(Clone)]
pub struct MailBus {
    /// The connection and its runtime.
    link: Link,
    /// The stream, found or created at start.
    stream: stream::Stream,
    /// Its names.
    names: Names,
}

/// One incoming envelope handed to the owner: settled with whether it was handled.
pub struct Delivery {
    /// The envelope's bytes, as published.
    pub payload: Bytes,
    /// Told the outcome; dropped unsettled, the envelope is delivered again later.
    settle: oneshot::Sender<bool>,
}

impl Delivery {
    /// `true`: handled for good (acknowledged, never delivered again); `false`: not now
    /// (delivered again after a pause).
    pub fn settle(self, handled: bool) {
        let _ = self.settle.send(handled);
    }
}

impl MailBus {
    /// Finds or creates the stream, trying again for a while when JetStream cannot answer
    /// yet (a NATS node restarting, a meta leader being elected).
    pub async fn start(link: &Link) -> Result<MailBus, String> {
        let names = Names::new(&link.config().prefix);
        let config = stream::Config {
            name: names.stream.clone(),
            description: Some("Peloton mission control: envelopes in, outcomes out".into()),
            subjects: vec![names.incoming.clone(), names.outcomes.clone()],
            storage: StorageType::File,
            num_replicas: usize::try_from(link.config().replicas).unwrap_or(1),
            duplicate_window: DUPLICATE_WINDOW,
            max_age: RETAIN,
            ..Default::default()
        };
        let context = link.context().clone();
        let limit = link.timeout() * 6;
        let name = names.stream.clone();
        let stream = link
            .run(async move {
                patiently(&format!("stream {name}"), limit, || {
                    context.get_or_create_stream(config.clone())
                })
                .await
            })
            .await??;
        Ok(MailBus {
            link: link.clone(),
            stream,
            names,
        })
    }

    /// The names in use.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Publishes an envelope on incoming and waits until JetStream has stored it.
    pub async fn submit(&self, message_id: &str, payload: Vec<u8>) -> Result<(), String> {
        self.publish(self.names.incoming.clone(), message_id, payload)
            .await
    }

    /// Publishes an outcome and waits until JetStream has stored it.
    pub async fn outcome(&self, message_id: &str, payload: Vec<u8>) -> Result<(), String> {
        self.publish(self.names.outcomes.clone(), message_id, payload)
            .await
    }

    /// Publishes `payload` on `subject` with `Nats-Msg-Id` = `message_id`, acknowledged.
    async fn publish(
        &self,
        subject: String,
        message_id: &str,
        payload: Vec<u8>,
    ) -> Result<(), String> {
        let context = self.link.context().clone();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, message_id);
        let timeout = self.link.timeout();
        self.link
            .run(async move {
                let sent = context
                    .publish_with_headers(subject.clone(), headers, payload.into())
                    .await
                    .map_err(|e| format!("publish on {subject}: {e}"))?;
                match tokio::time::timeout(timeout, sent).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("publish on {subject}: {e}")),
                    Err(_) => Err(format!(
                        "publish on {subject}: no acknowledgement within {} ms",
                        timeout.as_millis()
                    )),
                }
            })
            .await?
    }

    /// Starts reading incoming envelopes through the durable consumer, oldest first. They
    /// arrive on the answered channel one at a time (the next only once the previous is
    /// settled); dropping the receiver stops the reading, and what was fetched but not
    /// settled is delivered again after the acknowledgement wait.
    pub async fn consume(&self) -> Result<mpsc::Receiver<Delivery>, String> {
        let ack_wait = (self.link.timeout() * 2).max(MIN_ACK_WAIT);
        let config = pull::Config {
            durable_name: Some(CONSUMER.to_owned()),
            description: Some("the mail lease holder's reader of submitted envelopes".into()),
            filter_subject: self.names.incoming.clone(),
            ack_policy: AckPolicy::Explicit,
            ack_wait,
            ..Default::default()
        };
        let stream = self.stream.clone();
        let limit = self.link.timeout() * 6;
        let consumer = self
            .link
            .run(async move {
                patiently("consumer mission-control", limit, || {
                    stream.get_or_create_consumer::<pull::Config>(CONSUMER, config.clone())
                })
                .await
            })
            .await??;
        let (deliveries, receiver) = mpsc::channel(1);
        self.link.spawn(read(consumer, deliveries));
        Ok(receiver)
    }
}

/// Fetches envelopes and hands each to `deliveries` until nobody listens.
async fn read(
    consumer: async_nats::jetstream::consumer::Consumer<pull::Config>,
    deliveries: mpsc::Sender<Delivery>,
) {
    while !deliveries.is_closed() {
        let batch = consumer
            .fetch()
            .max_messages(BATCH)
            .expires(FETCH_WAIT)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!("mission control: fetching envelopes failed: {e}");
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        while let Some(message) = batch.next().await {
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    tracing::debug!("mission control: a fetch ended: {e}");
                    break;
                }
            };
            let (settle, settled) = oneshot::channel();
            let delivery = Delivery {
                payload: message.payload.clone(),
                settle,
            };
            if deliveries.send(delivery).await.is_err() {
                return;
            }
            let acked = match settled.await {
                Ok(true) => message.ack().await,
                Ok(false) => message.ack_with(AckKind::Nak(Some(RETRY_PAUSE))).await,
                // The owner stopped mid-way: the envelope is delivered again.
                Err(_) => return,
            };
            if let Err(e) = acked {
                tracing::warn!("mission control: an envelope's acknowledgement failed: {e}");
            }
        }
    }
}

/// Tries `attempt` until it succeeds or `limit` has passed, pausing longer each time.
async fn patiently<T, E, F, Fut>(what: &str, limit: Duration, mut attempt: F) -> Result<T, String>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let give_up = tokio::time::Instant::now() + limit;
    let mut pause = Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if tokio::time::Instant::now() + pause >= give_up => {
                return Err(format!("{what}: {e}"));
            }
            Err(e) => {
                tracing::debug!("{what}: {e}; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_subjects_are_in_the_deployments_stream() {
        let names = Names::new("peloton");
        assert_eq!(names.stream, "peloton_mission_control");
        assert_eq!(names.incoming, "peloton.mission-control.incoming");
        assert_eq!(names.outcomes, "peloton.mission-control.outcomes");
        assert_ne!(Names::new("other").stream, names.stream);
    }
}
