//! The HTTP answers every endpoint of the one port shares: plain text, the JSON error shape
//! of the protocol (`code`, `message`), and refusals by the admission limits with their
//! `Retry-After`. Used by [`super::http`] and [`super::ingest`], so both answer alike.

use super::limits::Refusal;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

/// Every response body: whole, in memory (nothing served here is large or streamed).
pub type Body = Full<Bytes>;

/// A short plain-text answer.
pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A JSON body, never cached (what it says is about now).
pub fn json(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A JSON error body with the same `code`/`message` shape as protocol errors.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json(
        status,
        &serde_json::json!({ "code": code, "message": message }),
    )
}

/// The answer to a refusal by the admission limits: 503 when the server is full, 429 when
/// this client asked too much, both with `Retry-After`.
pub fn refused(refusal: Refusal) -> Response<Body> {
    let (status, code) = if refusal.is_server_full() {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    } else {
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    };
    let mut response = json_error(status, code, refusal.message());
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(refusal.retry_after_secs()),
    );
    response
}
