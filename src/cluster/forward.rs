//! Requests between nodes: any node takes any socket, and what must be answered by the
//! node that owns a race is sent there over NATS request–reply and answered back.
//!
//! Bytes in, bytes out: what a request means is the caller's (the API's client requests,
//! [`crate::api::forward`]; a race's spectator relay, `actors::race::relay`). Each node
//! listens on `<prefix>.node.<node>.<service>`, one subject per service; a request waits at
//! most the link's timeout for its answer. NATS core, not JetStream: a forwarded request is retried by the client
//! that sent it, as any request that got `unavailable`.

use super::link::Link;
use crate::metrics as m;
use async_nats::RequestErrorKind;
use bytes::Bytes;
use futures_util::StreamExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Answers one forwarded request's bytes.
pub type Answerer =
    Arc<dyn Fn(Bytes) -> Pin<Box<dyn Future<Output = Vec<u8>> + Send>> + Send + Sync>;

/// The service that answers the API's client requests.
pub const API: &str = "api";

/// The subject node `node` takes requests for `service` on.
fn subject(prefix: &str, node: &str, service: &str) -> String {
    format!("{prefix}.node.{node}.{service}")
}

/// Sends one request's bytes to `service` on node `node` and waits for its answer.
pub async fn ask(
    link: &Link,
    node: &str,
    service: &str,
    request: Vec<u8>,
) -> Result<Bytes, String> {
    let client = link.context().client();
    let subject = subject(&link.config().prefix, node, service);
    let timeout = link.timeout();
    link.run(async move {
        let (outcome, answer) =
            match tokio::time::timeout(timeout, client.request(subject, request.into())).await {
                Ok(Ok(message)) => ("ok", Ok(message.payload)),
                Ok(Err(e)) => {
                    let outcome = match e.kind() {
                        RequestErrorKind::NoResponders => "no_responders",
                        RequestErrorKind::TimedOut => "timeout",
                        _ => "error",
                    };
                    (outcome, Err(e.to_string()))
                }
                Err(_) => (
                    "timeout",
                    Err(format!("no answer within {} ms", timeout.as_millis())),
                ),
            };
        metrics::counter!(m::CLUSTER_FORWARDED, "outcome" => outcome).increment(1);
        answer
    })
    .await?
}

/// Listens for requests to this node's `service` and answers each with `answer`, one task
/// per request, on the server's runtime (`server`), where the actors are.
pub async fn serve(
    link: &Link,
    server: tokio::runtime::Handle,
    service: &str,
    answer: Answerer,
) -> Result<(), String> {
    // Every outcome's series from the first scrape, so a rate of failures starts at 0.
    for outcome in ["ok", "no_responders", "timeout", "error"] {
        metrics::counter!(m::CLUSTER_FORWARDED, "outcome" => outcome).increment(0);
    }
    let client = link.context().client();
    let subject = subject(&link.config().prefix, link.node(), service);
    let mut requests = link
        .run({
            let client = client.clone();
            let subject = subject.clone();
            async move { client.subscribe(subject).await }
        })
        .await?
        .map_err(|e| format!("cannot listen on {subject}: {e}"))?;
    link.spawn(async move {
        while let Some(request) = requests.next().await {
            let Some(reply_to) = request.reply.clone() else {
                continue;
            };
            let answer = answer.clone();
            let client = client.clone();
            server.spawn(async move {
                let answered = answer(request.payload).await;
                if let Err(e) = client.publish(reply_to, answered.into()).await {
                    tracing::warn!("a forwarded request's answer was not sent: {e}");
                }
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_node_has_its_own_subject() {
        assert_eq!(subject("peloton", "a", API), "peloton.node.a.api");
        assert_ne!(subject("peloton", "a", API), subject("peloton", "b", API));
        assert_ne!(
            subject("peloton", "a", API),
            subject("peloton", "a", "watch")
        );
    }
}
