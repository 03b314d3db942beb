//! Broadcast between nodes: a message published on a topic reaches every node subscribed
//! to it, once per node (NATS core publish–subscribe, at most once: a subscriber that
//! must not miss anything checks sequence numbers itself).
//!
//! Topics live under `<prefix>.topic.`; what a topic carries is its users' business (a
//! race's relayed spectator ticks, `actors::race::relay`).

use super::link::Link;
use bytes::Bytes;
use futures_util::StreamExt;

/// The subject of `topic`.
fn subject(prefix: &str, topic: &str) -> String {
    format!("{prefix}.topic.{topic}")
}

/// Publishes `payload` to every node subscribed to `topic`.
pub async fn publish(link: &Link, topic: &str, payload: Bytes) -> Result<(), String> {
    let client = link.context().client();
    let subject = subject(&link.config().prefix, topic);
    link.run(async move { client.publish(subject, payload).await })
        .await?
        .map_err(|e| format!("cannot publish on topic {topic}: {e}"))
}

/// Subscribes to `topic`: its messages arrive on the returned receiver, at most
/// `capacity` waiting (beyond that NATS drops them for this node, which the subscriber
/// notices from its sequence numbers). Dropping the receiver ends the subscription.
pub async fn subscribe(
    link: &Link,
    topic: &str,
    capacity: usize,
) -> Result<tokio::sync::mpsc::Receiver<Bytes>, String> {
    let client = link.context().client();
    let subject = subject(&link.config().prefix, topic);
    let mut messages = link
        .run(async move { client.subscribe(subject).await })
        .await?
        .map_err(|e| format!("cannot subscribe to topic {topic}: {e}"))?;
    let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
    link.spawn(async move {
        loop {
            let message = tokio::select! {
                _ = tx.closed() => break,
                message = messages.next() => message,
            };
            let Some(message) = message else { break };
            if tx.send(message.payload).await.is_err() {
                break;
            }
        }
        // Dropping the subscriber unsubscribes this node from the subject.
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_live_under_the_prefix() {
        assert_eq!(subject("p", "tick.race.r1"), "p.topic.tick.race.r1");
    }
}
