//! The HTTP JSON mail API transport: one `POST` per mail over hyper's HTTP/1 client, with
//! the mail as JSON and an `Idempotency-Key` header (the job id) so a resend after a crash
//! is deduplicated by the provider. Plain `http://` only; TLS belongs to a relay in front.

use super::{Outgoing, SendError, Timeouts};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::time::Duration;

/// Longest part of an error answer kept in the failed-message log.
const MAX_ERROR_BODY: usize = 200;

/// Where the API lives, parsed once from `mail.http_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` to connect to.
    pub authority: String,
    /// The request path (with query).
    pub path: String,
}

impl Endpoint {
    /// Parses `http://host[:port]/path`.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("must be an http:// URL, got `{url}` ({e})"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!(
                "must start with http:// (no TLS here), got `{url}`"
            ));
        }
        let host = uri.host().ok_or_else(|| format!("has no host: `{url}`"))?;
        let port = uri.port_u16().unwrap_or(80);
        Ok(Endpoint {
            authority: format!("{host}:{port}"),
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        })
    }
}

/// The HTTP transport.
#[derive(Debug, Clone)]
pub struct HttpSender {
    /// Where to POST.
    endpoint: Endpoint,
    /// Connect and total timeouts.
    timeouts: Timeouts,
}

impl HttpSender {
    /// A sender for `url`.
    pub fn new(url: &str, timeouts: Timeouts) -> Result<HttpSender, String> {
        Ok(HttpSender {
            endpoint: Endpoint::parse(url)?,
            timeouts,
        })
    }

    /// The whole-request limit.
    pub fn total_timeout(&self) -> Duration {
        self.timeouts.total
    }

    /// POSTs one mail. 2xx is sent; 408, 429 and 5xx are worth a retry; other 4xx mean the
    /// API refused this mail and a retry would not change that.
    pub async fn send(&self, mail: Outgoing<'_>) -> Result<(), SendError> {
        let stream = tokio::time::timeout(
            self.timeouts.connect,
            tokio::net::TcpStream::connect(&self.endpoint.authority),
        )
        .await
        .map_err(|_| {
            SendError::transient(format!(
                "http: no connection to {} within {} ms",
                self.endpoint.authority,
                self.timeouts.connect.as_millis()
            ))
        })?
        .map_err(|e| {
            SendError::transient(format!("http: connect {}: {e}", self.endpoint.authority))
        })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SendError::transient(format!("http: handshake: {e}")))?;
        let driver = tokio::spawn(connection);
        let body = serde_json::json!({
            "message_id": mail.message_id,
            "from": mail.from,
            "to": mail.to,
            "subject": mail.subject,
            "text": mail.body,
        });
        let request = hyper::Request::post(self.endpoint.path.as_str())
            .header(hyper::header::HOST, self.endpoint.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", mail.idempotency_key)
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| SendError::permanent(format!("http: request: {e}")))?;
        let outcome = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| SendError::transient(format!("http: {e}")))?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let text = match response.into_body().collect().await {
                Ok(body) => String::from_utf8_lossy(&body.to_bytes())
                    .chars()
                    .take(MAX_ERROR_BODY)
                    .collect(),
                Err(_) => String::new(),
            };
            let message = format!("http: {status} {}", text.trim());
            let code = status.as_u16();
            if status.is_client_error() && code != 408 && code != 429 {
                Err(SendError::permanent(message))
            } else {
                Err(SendError::transient(message))
            }
        }
        .await;
        driver.abort();
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_need_http_and_a_host() {
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:8025/send?x=1").unwrap(),
            Endpoint {
                authority: "127.0.0.1:8025".into(),
                path: "/send?x=1".into()
            }
        );
        assert_eq!(
            Endpoint::parse("http://mail.local").unwrap().authority,
            "mail.local:80"
        );
        assert!(Endpoint::parse("https://mail.local/").is_err());
        assert!(Endpoint::parse("nonsense").is_err());
    }
}
