//! The HTTP side of the one port: `/healthz`, `/readyz`, `/metrics`, the spectator web page
//! (`/`, its files, and `/api/guest-token`), and the WebSocket upgrade at `/ws`, served by
//! hyper. After a successful upgrade the raw connection is handed
//! to tokio-tungstenite with our own small buffers and limits, and to [`super::session`].
//!
//! Authentication happens here, before the upgrade: a missing, invalid or expired token gets
//! HTTP 401 and never becomes a socket.

use super::codec::{Codec, BINARY_SUBPROTOCOL, JSON_SUBPROTOCOL};
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
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role as WsRole, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

/// The WebSocket endpoint's path.
pub const WS_PATH: &str = "/ws";
/// Largest HTTP request head we read.
const MAX_HEAD_BYTES: usize = 16 * 1024;

type Body = Full<Bytes>;

/// Accepts connections until shutdown begins.
pub async fn serve(listener: TcpListener, engine: Arc<Engine>) {
    let mut shutdown = engine.shutdown_signal();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve_connection(stream, engine.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, engine: Arc<Engine>) {
    let mut shutdown = engine.shutdown_signal();
    let service = {
        let engine = engine.clone();
        service_fn(move |req| route(req, engine.clone()))
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

async fn route(req: Request<Incoming>, engine: Arc<Engine>) -> Result<Response<Body>, Infallible> {
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
        (&Method::GET, WS_PATH) => upgrade(req, &engine),
        (&Method::GET, super::web::GUEST_TOKEN_PATH) => guest_token(&engine),

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

/// A short-lived, read-only spectator token for the web page, when races are public.
fn guest_token(engine: &Engine) -> Response<Body> {
    let web = &engine.config.web;
    if !web.public_races {
        return json_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "races on this server are not public; open a share link",
        );
    }
    let claims = crate::auth::claims_for(
        Role::Spectator,
        "guest",
        None,
        crate::time::now_ms() / 1000,
        web.guest_token_ttl_secs,
    );
    match engine.keys.issue(&claims) {
        Ok(token) => {
            let body = serde_json::json!({
                "token": token,
                "expires_at_ms": claims.expires_at_ms(),
            })
            .to_string();
            let mut response = Response::new(Full::new(Bytes::from(body)));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e) => {
            tracing::error!("cannot sign a guest token: {e}");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "cannot sign a guest token",
            )
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A JSON error body with the same `code`/`message` shape as protocol errors.
fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "code": code, "message": message }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
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

fn upgrade(mut req: Request<Incoming>, engine: &Arc<Engine>) -> Response<Body> {
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
    let config = socket_config(engine, &claims);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let engine = engine.clone();
    tokio::spawn(async move {
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
