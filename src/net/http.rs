//! The HTTP side of the one port: `/healthz`, `/readyz`, `/metrics`, the spectator web page
//! (`/`, its files, and `/api/guest-token`), and the WebSocket upgrade at `/ws`, served by
//! hyper. After a successful upgrade the raw connection is handed
//! to tokio-tungstenite with our own small buffers and limits, and to [`super::session`].
//!
//! Authentication happens here, before the upgrade: a missing, invalid or expired token gets
//! HTTP 401 and never becomes a socket. So does admission ([`super::limits`]): a full server
//! answers 503, a subject or address over its limit 429, before any socket exists; an
//! admitted socket's slot travels into its session task and is given back when it ends.
//!
//! The accept loop keeps one spare descriptor: when the process runs out, the spare is
//! released to accept the waiting client and answer it 503, instead of leaving it hanging.

use super::codec::{Codec, BINARY_SUBPROTOCOL, JSON_SUBPROTOCOL};
use super::limits::{Admission, AdmissionLimits, Refusal, SocketClass, SubjectKey};
use super::response::{json, json_error, refused, text, Body};
use super::session;
use crate::auth::{Claims, Role, TokenError};
use crate::engine::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role as WsRole, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

/// The WebSocket endpoint's path.
pub const WS_PATH: &str = "/ws";
/// Where a client learns every node it may connect to (see [`nodes`]).
pub const NODES_PATH: &str = "/api/nodes";
/// Largest HTTP request head we read.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Pause after an `accept` failure with no spare to answer with.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait for a client to be accepted on the freed spare descriptor.
const SPARE_ACCEPT_LIMIT: Duration = Duration::from_millis(100);
/// Longest time the spare descriptor is spent on one client: writing the 503 to a fresh
/// socket is immediate; the rest drains the request the client already sent, so the close is
/// not a reset that would discard our answer. Short, because every starved client waits in
/// line for the one spare.
const SPARE_ANSWER_LIMIT: Duration = Duration::from_millis(25);

/// The admission limits the configuration sets.
fn admission_limits(engine: &Engine) -> AdmissionLimits {
    let ws = &engine.config.ws;
    AdmissionLimits {
        max_sockets: ws.max_sockets,
        admin_reserve_sockets: ws.admin_reserve_sockets,
        max_sockets_per_subject: ws.max_sockets_per_subject,
        upgrades_per_addr_per_min: ws.max_upgrades_per_addr_per_min,
        guest_tokens_per_addr_per_min: engine.config.web.guest_tokens_per_addr_per_min,
        device_misses_per_addr_per_min: engine.config.web.device_misses_per_addr_per_min,
        exempt_loopback: ws.addr_limits_exempt_loopback,
    }
}

/// Whether `accept` failed because the process (EMFILE) or the system (ENFILE) has no file
/// descriptor left. The numbers are the same on Linux, macOS and the BSDs.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// The spare descriptor kept for answering clients when none are left.
fn open_spare() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// Accepts connections until shutdown begins.
pub async fn serve(listener: TcpListener, engine: Arc<Engine>) {
    // At zero from the start, so a dashboard shows "none" rather than "no data".
    metrics::counter!(crate::metrics::ACCEPT_ERRORS).increment(0);
    let mut shutdown = engine.shutdown_signal();
    let admission = Admission::new(fit_to_open_file_limit(admission_limits(&engine)));
    let mut spare = open_spare();
    // Logged once per episode of starvation, not once per failed accept.
    let mut starved = false;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if starved {
                        tracing::info!("file descriptors available again");
                        starved = false;
                    }
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve_connection(stream, peer, engine.clone(), admission.clone()));
                }
                Err(e) if out_of_descriptors(&e) => {
                    if !starved {
                        tracing::warn!("accept failed, out of file descriptors: {e}");
                        starved = true;
                    }
                    // Free the spare, spend it on the waiting client, then take it back.
                    let answered = match spare.take() {
                        Some(file) => {
                            drop(file);
                            answer_with_spare(&listener).await
                        }
                        None => false,
                    };
                    spare = open_spare();
                    if answered {
                        // More starved clients may be waiting: answer them next, but let
                        // sessions run in between.
                        tokio::task::yield_now().await;
                    } else {
                        // No spare to answer with: back off instead of spinning.
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    }
                }
                Err(e) => {
                    // Anything else (a connection reset before accept, …): back off instead of
                    // spinning, keep serving.
                    metrics::counter!(crate::metrics::ACCEPT_ERRORS).increment(1);
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
        }
    }
}

/// The limits with `ws.max_sockets` lowered to fit the process's open-file limit (read from
/// `/proc/self/limits` where there is one), so a full server still has descriptors for
/// `/healthz` and admins.
fn fit_to_open_file_limit(limits: AdmissionLimits) -> AdmissionLimits {
    let Some(soft) = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| super::limits::soft_open_file_limit(&text))
    else {
        return limits;
    };
    let fitted = super::limits::fit_to_descriptors(limits, soft);
    if fitted.max_sockets < limits.max_sockets {
        tracing::info!(
            "ws.max_sockets lowered from {} to {} to fit the open-file limit ({soft}); raise \
             `ulimit -n` for more",
            limits.max_sockets,
            fitted.max_sockets
        );
    }
    fitted
}

/// Accepts one waiting client on the just-freed spare descriptor and answers it 503, so it
/// gets an answer instead of a hang. Whether a client was answered.
async fn answer_with_spare(listener: &TcpListener) -> bool {
    let Ok(Ok((mut stream, _))) = tokio::time::timeout(SPARE_ACCEPT_LIMIT, listener.accept()).await
    else {
        return false;
    };
    metrics::counter!(crate::metrics::HTTP_REFUSED, "reason" => "out_of_descriptors").increment(1);
    let body = r#"{"code":"unavailable","message":"the server is out of file descriptors; retry shortly"}"#;
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
         Retry-After: {}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        super::limits::FULL_RETRY_AFTER_SECS,
        body.len()
    );
    let _ = tokio::time::timeout(SPARE_ANSWER_LIMIT, async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await?;
        // Drain what the client sent, so closing does not reset the connection and discard
        // the answer before the client reads it.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
    true
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    engine: Arc<Engine>,
    admission: Arc<Admission>,
) {
    let mut shutdown = engine.shutdown_signal();
    let service = {
        let engine = engine.clone();
        let peer = peer.ip();
        service_fn(move |req| route(req, engine.clone(), admission.clone(), peer))
    };
    let timeout = Duration::from_millis(engine.config.server.header_read_timeout_ms);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!("http connection ended: {e}");
            }
        }
        _ = shutdown.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

async fn route(
    req: Request<Incoming>,
    engine: Arc<Engine>,
    admission: Arc<Admission>,
    peer: IpAddr,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    let response = match (req.method(), path) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            if engine.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        (&Method::GET, "/metrics") => {
            let mut response = Response::new(Full::new(Bytes::from(crate::metrics::render())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        (&Method::GET, WS_PATH) => upgrade(req, &engine, &admission, peer),
        _ if super::ingest::is_device_report(req.method(), path, req.uri().query()) => {
            super::ingest::handle(req, &engine, &admission, peer).await
        }
        (&Method::GET, super::web::GUEST_TOKEN_PATH) => guest_token(&engine, &admission, peer),
        (&Method::GET, NODES_PATH) => nodes(&engine, &req),

        (&Method::GET, path) => match super::web::asset(path) {
            Some(asset) => asset_response(asset),
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        },
        (_, "/healthz" | "/readyz" | "/metrics" | WS_PATH) => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(response)
}

/// An embedded web asset, never cached stale: the page and the server change together.
fn asset_response(asset: &super::web::Asset) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(asset.body)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// A short-lived, read-only spectator token for the web page, when races are public (what
/// it is and when there is one is [`crate::api::guest_token`]'s rule); at most
/// `web.guest_tokens_per_addr_per_min` per client address.
/// `GET /api/nodes`: the WebSocket URL of every node up, so a client whose node dies moves
/// to another (PROTOCOL.md section 19). In cluster mode the nodes' cards as this node last
/// read them; on one node, itself: `cluster.advertise_url`, else the host the client asked
/// for. Public: the addresses clients connect to are no secret.
fn nodes(engine: &Engine, req: &Request<Incoming>) -> Response<Body> {
    let nodes: Vec<serde_json::Value> = match &engine.cluster {
        Some(node) => node
            .members
            .cards()
            .into_iter()
            .filter(|card| !card.url.is_empty())
            .map(|card| serde_json::json!({ "node": card.node, "url": card.url }))
            .collect(),
        None => {
            let advertised = engine.config.cluster.advertise_url.trim();
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| is_host(h));
            let url = match host {
                _ if !advertised.is_empty() => Some(advertised.to_owned()),
                Some(host) => Some(format!("ws://{host}{WS_PATH}")),
                None => None,
            };
            url.map(
                |url| serde_json::json!({ "node": engine.config.cluster.node_name(), "url": url }),
            )
            .into_iter()
            .collect()
        }
    };
    json(StatusCode::OK, &serde_json::json!({ "nodes": nodes }))
}

/// Whether `host` is a plain `host[:port]` (a name, an IPv4 address or a bracketed IPv6
/// one), safe to put in a URL we hand back.
fn is_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

fn guest_token(engine: &Engine, admission: &Admission, peer: IpAddr) -> Response<Body> {
    if let Err(refusal) = crate::api::guests_welcome(engine) {
        return json_error(
            StatusCode::FORBIDDEN,
            refusal.code.as_str(),
            &refusal.message,
        );
    }
    if let Err(refusal) = admission.take_guest_token(peer, Instant::now()) {
        metrics::counter!(crate::metrics::HTTP_REFUSED, "reason" => refusal.reason()).increment(1);
        return refused(refusal);
    }
    match crate::api::guest_token(engine) {
        Ok(minted) => json(
            StatusCode::OK,
            &serde_json::json!({
                "token": minted.token,
                "expires_at_ms": minted.expires_at_ms,
            }),
        ),
        Err(e) => {
            tracing::error!("{}", e.message);
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "cannot sign a guest token",
            )
        }
    }
}

/// Counts an upgrade refused by the admission limits and answers it.
fn refused_upgrade(refusal: Refusal) -> Response<Body> {
    metrics::counter!(crate::metrics::WS_REFUSED, "reason" => refusal.reason()).increment(1);
    refused(refusal)
}

fn header_has_token(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The token from `Authorization: Bearer …` or the `token` query parameter.
fn presented_token(req: &Request<Incoming>) -> Option<String> {
    if let Some(value) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        // The auth scheme is case-insensitive (RFC 9110 §11.1).
        if let Some((scheme, token)) = value.split_once(' ') {
            if scheme.eq_ignore_ascii_case("bearer") {
                return Some(token.trim().to_owned());
            }
        }
    }
    req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| v.to_owned())
    })
}

fn upgrade(
    mut req: Request<Incoming>,
    engine: &Arc<Engine>,
    admission: &Arc<Admission>,
    peer: IpAddr,
) -> Response<Body> {
    if !engine.is_ready() {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server is not ready; retry shortly",
        );
    }
    let is_upgrade = header_has_token(&req, header::CONNECTION, "upgrade")
        && header_has_token(&req, header::UPGRADE, "websocket");
    let Some(key) = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec())
    else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "not a WebSocket upgrade request",
        );
    };
    if !is_upgrade {
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "not a WebSocket upgrade request",
        );
    }
    if req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        let mut response = json_error(
            StatusCode::UPGRADE_REQUIRED,
            "bad_request",
            "WebSocket version 13 is required",
        );
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return response;
    }
    let claims = match presented_token(&req).map(|t| engine.keys.verify(&t)) {
        None => Err(TokenError::Missing),
        Some(result) => result,
    };
    // Every attempt counts against its address, failed ones too (guessing tokens costs the
    // same as opening sockets); only a valid admin token skips it, so operators get in.
    let is_admin = matches!(&claims, Ok(c) if c.role == Role::Admin);
    if !is_admin {
        if let Err(refusal) = admission.take_upgrade(peer, Instant::now()) {
            return refused_upgrade(refusal);
        }
    }
    let claims = match claims {
        Ok(claims) => claims,
        Err(e) => {
            let code = if e == TokenError::Expired {
                "token_expired"
            } else {
                "unauthenticated"
            };
            let mut response = json_error(StatusCode::UNAUTHORIZED, code, &e.to_string());
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    };
    let offered = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let Some(codec) = Codec::negotiate(&offered) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            &format!("request subprotocol {BINARY_SUBPROTOCOL} or {JSON_SUBPROTOCOL} in Sec-WebSocket-Protocol"),
        );
    };
    let subject = SubjectKey::new(claims.role, claims.race.as_deref(), &claims.sub);
    let slot = match admission.admit_socket(SocketClass::of(claims.role), subject) {
        Ok(slot) => slot,
        Err(refusal) => return refused_upgrade(refusal),
    };
    metrics::gauge!(crate::metrics::WS_ADMITTED).set(admission.open_sockets() as f64);
    let config = socket_config(engine, &claims);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let engine = engine.clone();
    let admission = admission.clone();
    tokio::spawn(async move {
        // The slot lives exactly as long as this task: the session, or a failed upgrade.
        let _slot = ReleaseOnDrop {
            slot: Some(slot),
            admission,
        };
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    WsRole::Server,
                    Some(config),
                )
                .await;
                session::run(ws, codec, claims, engine).await;
            }
            Err(e) => tracing::debug!("upgrade failed: {e}"),
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(&key)) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    headers.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(codec.subprotocol()),
    );
    response
}

/// An admitted socket's slot, given back (and the gauge updated) when the task holding it
/// ends, however it ends.
struct ReleaseOnDrop {
    /// The admission slot; taken on drop so the gauge reads the count after release.
    slot: Option<super::limits::SocketGuard>,
    /// Where the slot came from, to read the count for the gauge.
    admission: Arc<Admission>,
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        drop(self.slot.take());
        metrics::gauge!(crate::metrics::WS_ADMITTED).set(self.admission.open_sockets() as f64);
    }
}

/// Per-socket buffers and limits; admins get a larger message limit for course uploads.
fn socket_config(engine: &Engine, claims: &Claims) -> WebSocketConfig {
    let ws = &engine.config.ws;
    let max_message = if claims.role == Role::Admin {
        ws.admin_max_message_bytes
    } else {
        ws.max_message_bytes
    };
    let max_frame = if claims.role == Role::Admin {
        max_message
    } else {
        ws.max_frame_bytes
    };
    WebSocketConfig::default()
        .read_buffer_size(ws.read_buffer_bytes)
        .write_buffer_size(ws.write_buffer_bytes)
        .max_write_buffer_size(ws.max_write_buffer_bytes)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_frame))
        .accept_unmasked_frames(false)
}
