//! Tracking apps over HTTP, on the same port as everything else: the OsmAnd protocol
//! (Traccar Client, OsmAnd: a GET query, a POST form, or Traccar Client's JSON body) at
//! [`OSMAND_PATH`] and at `/` (Traccar Client's "server URL" is usually just the host and
//! port), and OwnTracks' HTTP mode at [`OWNTRACKS_PATH`].
//!
//! This file reads bytes and picks status codes; the decoders are the protocol crate's
//! (`device`), and what a fix means is [`crate::api::device`]'s, which answers only once the
//! fix is durable. The status codes are chosen for what those apps do with them: any 2xx
//! and the app deletes the fix from its queue; anything else and it keeps the fix and sends
//! it again later (Traccar Client, OsmAnd and OwnTracks all behave so). So:
//!
//! | answer | when | the app |
//! | --- | --- | --- |
//! | 200 | stored, or a resend already stored | drops it |
//! | 200 + `X-Peloton-Dropped` | a fix no retry can make useful: the device marked it invalid, its race is not live, its clock is far off | drops it |
//! | 400 | malformed request (missing id, bad value): only a broken app or a hand-made request sends one | retries |
//! | 403 | unknown or revoked device id: an admin may bind it yet | keeps it and retries |
//! | 409 | the id is bound in two live races: an admin must revoke one | keeps it |
//! | 413 | body over the decoders' limit | retries |
//! | 429 + `Retry-After` | this address presented too many unknown ids this minute | keeps it |
//! | 503 + `Retry-After` | storage or the racer briefly unavailable | keeps it |
//!
//! A device id is the only credential these protocols carry, so unknown ids are counted per
//! client address ([`Admission::device_miss`]) and an address over its budget waits out the
//! minute for every id, known or not, so the answer never tells a guesser which guess was
//! right.

use super::limits::Admission;
use super::response::{json_error, refused, Body};
use crate::api::device::{ingest, DeviceRefusal};
use crate::engine::Engine;
use crate::error::ErrorCode;
use crate::metrics as m;
use crate::time::now_ms;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use peloton_protocol::device::{
    osmand, owntracks, DeviceError, DeviceErrorCode, DeviceReport, MAX_BODY_BYTES,
};
use std::net::IpAddr;
use std::time::Instant;

/// Where OsmAnd-protocol apps report (`/` works too).
pub const OSMAND_PATH: &str = "/osmand";
/// Where OwnTracks reports in HTTP mode.
pub const OWNTRACKS_PATH: &str = "/owntracks";

/// The header that says why a 200 dropped the fix, for whoever reads the app's log.
const DROPPED_HEADER: &str = "x-peloton-dropped";

/// Seconds a 503 asks the app to wait before resending.
const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

/// Which protocol a request speaks, from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// OsmAnd protocol: query, form or JSON.
    OsmAnd,
    /// OwnTracks HTTP mode: JSON.
    OwnTracks,
}

impl Dialect {
    /// The metrics label.
    fn label(self) -> &'static str {
        match self {
            Dialect::OsmAnd => "osmand",
            Dialect::OwnTracks => "owntracks",
        }
    }
}

/// Whether a request is a tracking app's report: anything at [`OSMAND_PATH`] or
/// [`OWNTRACKS_PATH`], a POST to `/`, or a GET of `/` whose query has OsmAnd fields (a
/// device id or a position; the spectator page's own queries have neither).
pub fn is_device_report(method: &Method, path: &str, query: Option<&str>) -> bool {
    dialect(method, path, query).is_some()
}

fn dialect(method: &Method, path: &str, query: Option<&str>) -> Option<Dialect> {
    match (method, path) {
        (&Method::GET | &Method::POST, OSMAND_PATH) => Some(Dialect::OsmAnd),
        (&Method::POST, OWNTRACKS_PATH) => Some(Dialect::OwnTracks),
        (&Method::POST, "/") => Some(Dialect::OsmAnd),
        (&Method::GET, "/") if query.is_some_and(has_report_fields) => Some(Dialect::OsmAnd),
        _ => None,
    }
}

/// Whether a query has an OsmAnd field that names a device or a position, so a broken
/// report (no id) is answered as one, not with the page.
fn has_report_fields(query: &str) -> bool {
    query.split('&').any(|pair| {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        matches!(key, "id" | "deviceid" | "lat" | "lon" | "location")
    })
}

/// Answers one report.
pub async fn handle(
    req: Request<Incoming>,
    engine: &Engine,
    admission: &Admission,
    peer: IpAddr,
) -> Response<Body> {
    let Some(dialect) = dialect(req.method(), req.uri().path(), req.uri().query()) else {
        return json_error(StatusCode::NOT_FOUND, "not_found", "not a device endpoint");
    };
    let (response, outcome) = answer(req, dialect, engine, admission, peer).await;
    metrics::counter!(m::DEVICE_REPORTS, "protocol" => dialect.label(), "outcome" => outcome)
        .increment(1);
    response
}

/// The response and the metrics outcome label.
async fn answer(
    req: Request<Incoming>,
    dialect: Dialect,
    engine: &Engine,
    admission: &Admission,
    peer: IpAddr,
) -> (Response<Body>, &'static str) {
    if let Err(refusal) = admission.admit_device(peer, Instant::now()) {
        return (refused(refusal), "rate_limited");
    }
    let report = match decode(req, dialect).await {
        Ok(Some(report)) => report,
        Ok(None) => return (ok(dialect, None), "not_a_location"),
        Err(Undecodable::TooLarge) => {
            let message = format!("a report is at most {MAX_BODY_BYTES} bytes");
            return (
                json_error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", &message),
                "too_large",
            );
        }
        Err(Undecodable::Unreadable(message)) => {
            return (
                json_error(StatusCode::BAD_REQUEST, "bad_request", &message),
                "bad_request",
            )
        }
        Err(Undecodable::Decoder(e)) if e.code == DeviceErrorCode::NotALocation => {
            return (ok(dialect, Some("not a valid fix")), "not_a_location")
        }
        Err(Undecodable::Decoder(e)) => {
            let code = if e.code == DeviceErrorCode::TooLarge {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return (json_error(code, "bad_request", &e.message), "bad_request");
        }
    };
    match ingest(engine, &report.device_id, &[report.fix]).await {
        Ok(ack) => {
            let outcome = if ack.outcome.accepted > 0 {
                "accepted"
            } else {
                "ignored"
            };
            (ok(dialect, None), outcome)
        }
        Err(DeviceRefusal::UnknownDevice(rejection)) => {
            admission.device_miss(peer, Instant::now());
            let response = json_error(
                StatusCode::FORBIDDEN,
                rejection.code.as_str(),
                &rejection.message,
            );
            (response, "unknown_device")
        }
        Err(DeviceRefusal::Refused(rejection)) => refusal_response(dialect, &rejection),
    }
}

/// A refusal of a known device's fix, by what a retry could change.
fn refusal_response(
    dialect: Dialect,
    rejection: &crate::error::Rejection,
) -> (Response<Body>, &'static str) {
    match rejection.code {
        // Resending will never make these useful: drop them.
        ErrorCode::InvalidTransition | ErrorCode::BadTime => {
            (ok(dialect, Some(&rejection.message)), "dropped")
        }
        ErrorCode::Unavailable => {
            let mut response = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                rejection.code.as_str(),
                &rejection.message,
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(UNAVAILABLE_RETRY_AFTER_SECS),
            );
            (response, "unavailable")
        }
        ErrorCode::Conflict => (
            json_error(
                StatusCode::CONFLICT,
                rejection.code.as_str(),
                &rejection.message,
            ),
            "conflict",
        ),
        ErrorCode::Internal => (
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                rejection.code.as_str(),
                &rejection.message,
            ),
            "internal",
        ),
        _ => (
            json_error(
                StatusCode::BAD_REQUEST,
                rejection.code.as_str(),
                &rejection.message,
            ),
            "bad_request",
        ),
    }
}

/// The 2xx an app deletes the fix on: an empty body for the OsmAnd protocol (Traccar's own
/// answer; a body there would be read as a command), `[]` for OwnTracks, which expects a
/// JSON array of messages back. `dropped` says why a fix was not kept.
fn ok(dialect: Dialect, dropped: Option<&str>) -> Response<Body> {
    let (body, content_type) = match dialect {
        Dialect::OsmAnd => (Bytes::new(), "text/plain; charset=utf-8"),
        Dialect::OwnTracks => (
            Bytes::from_static(owntracks::OWNTRACKS_EMPTY_RESPONSE.as_bytes()),
            "application/json",
        ),
    };
    let mut response = Response::new(Full::new(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(reason) = dropped {
        // Header values are visible ASCII; a reason that is not stays out of the header.
        if let Ok(value) = HeaderValue::from_str(&reason.replace(|c: char| !c.is_ascii(), "?")) {
            headers.insert(DROPPED_HEADER, value);
        }
    }
    response
}

/// Why a request could not be turned into a report.
enum Undecodable {
    /// The body was longer than the decoders read.
    TooLarge,
    /// The body could not be read or is not text where text is needed.
    Unreadable(String),
    /// The decoder refused it.
    Decoder(DeviceError),
}

/// The request's report (`None`: a well-formed OwnTracks message that is not a location).
async fn decode(
    req: Request<Incoming>,
    dialect: Dialect,
) -> Result<Option<DeviceReport>, Undecodable> {
    let query = req.uri().query().unwrap_or("").to_owned();
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("json"));
    // OwnTracks names its user and device in headers when the app is configured with them.
    let hint = ["x-limit-d", "x-limit-u"].iter().find_map(|name| {
        req.headers()
            .get(*name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let is_get = req.method() == Method::GET;
    let body = if is_get {
        Bytes::new()
    } else {
        read_body(req.into_body()).await?
    };
    match dialect {
        Dialect::OwnTracks => {
            owntracks::decode(&body, hint.as_deref()).map_err(Undecodable::Decoder)
        }
        // Traccar Client's JSON, or a form body; older Traccar Client versions POST the
        // query string with an empty body.
        Dialect::OsmAnd if json => osmand::decode_json(&body)
            .map(Some)
            .map_err(Undecodable::Decoder),
        Dialect::OsmAnd => {
            let fields = if body.is_empty() {
                query
            } else {
                String::from_utf8(body.to_vec())
                    .map_err(|_| Undecodable::Unreadable("the form body is not UTF-8".into()))?
            };
            osmand::decode_query(&fields, now_ms())
                .map(Some)
                .map_err(Undecodable::Decoder)
        }
    }
}

/// Reads a body up to the decoders' limit.
async fn read_body(body: Incoming) -> Result<Bytes, Undecodable> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Undecodable::TooLarge),
        Err(e) => Err(Undecodable::Unreadable(format!(
            "the body could not be read: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_told_from_the_page_by_path_method_and_device_id() {
        assert!(is_device_report(
            &Method::GET,
            "/",
            Some("id=123&lat=1&lon=2")
        ));
        assert!(is_device_report(&Method::GET, "/", Some("deviceid=1")));
        assert!(is_device_report(
            &Method::GET,
            "/",
            Some("timestamp=1&lat=1&lon=2")
        ));
        assert!(!is_device_report(&Method::GET, "/", Some("race=abc")));
        assert!(!is_device_report(&Method::GET, "/", None));
        assert!(is_device_report(&Method::POST, "/", None));
        assert!(is_device_report(&Method::GET, OSMAND_PATH, None));
        assert!(is_device_report(&Method::POST, OWNTRACKS_PATH, None));
        assert!(!is_device_report(&Method::GET, OWNTRACKS_PATH, None));
        assert!(!is_device_report(&Method::GET, "/app.js", Some("id=1")));
    }
}
