//! One WebSocket session, from the first frame to the close code.
//!
//! A reader loop enforces the rate limit, decodes frames with the socket's [`Codec`], asks
//! [`crate::api`] to handle each request and queues exactly one reply per request. A writer
//! task drains a bounded queue into the socket, feeding every queued frame before one flush
//! so a burst costs one write. Protocol violations close only this socket, with the code
//! PROTOCOL.md lists.

use super::close_code;
use super::codec::Codec;
use super::protocol::{Push, ServerFrame, Welcome, WireError, PROTOCOL_VERSION};
use super::ratelimit::TokenBucket;
use crate::actors::patrol::notice::Notice;
use crate::actors::patrol::PatrolLink;
use crate::actors::race::actor::UpdatesReceiver;
use crate::actors::race::feed::Frames;
use crate::actors::race::replay::Replayer;
use crate::api::{self, Outcome};
use crate::auth::Claims;
use crate::engine::Engine;
use crate::error::{ErrorCode, Rejection};
use crate::metrics as m;
use crate::time::now_ms;
use futures_util::stream::{SplitSink, StreamExt};
use futures_util::SinkExt;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// Bytes per backup chunk pushed to the client: small enough that even as a JSON array of
/// numbers (up to 4 characters a byte) a chunk stays far below `ws.max_write_buffer_bytes`.
const BACKUP_CHUNK_BYTES: usize = 64 * 1024;

/// Race updates one socket may have queued or unflushed at once: one being written, one
/// waiting. More would only be a backlog of stale standings; instead the next update is
/// skipped and the one after goes out as the full table.
const MAX_UPDATES_IN_FLIGHT: usize = 2;

/// What the writer task sends.
enum Outbound {
    /// A data frame.
    Frame(Message),
    /// A race update: a data frame counted in [`UpdatesInFlight`] until flushed.
    Update(Message),
    /// The last frame: close with this code and reason.
    Close(u16, String),
}

/// Why the reader stopped, when the server is the one closing.
type CloseReason = (u16, String);

/// Race updates queued or written but not yet flushed to the socket: shared by the reader,
/// which skips updates while it is at [`MAX_UPDATES_IN_FLIGHT`], and the writer, which
/// counts them down after each flush.
type UpdatesInFlight = Arc<AtomicUsize>;

/// The reader side's state.
struct Session {
    /// The socket's encoding.
    codec: Codec,
    /// Who is on the other end; replaced by a token refresh.
    claims: Claims,
    /// Into the writer task.
    out: mpsc::Sender<Outbound>,
    /// Rate limit.
    bucket: TokenBucket,
    /// Consecutive rate-limited messages.
    violations: u32,
    /// Shared server state.
    engine: Arc<Engine>,
    /// The race this socket watches, if any.
    watching: Option<Watching>,
    /// A replay being played to this socket; aborted when the session ends or replaced.
    replay: Option<tokio::task::JoinHandle<()>>,
    /// Race updates not yet flushed.
    in_flight: UpdatesInFlight,
    /// How long updates may all be skipped before the socket is closed as too slow.
    slow_close_after: Duration,
    /// This socket's patrol session (officers and citizens), opened on its first patrol
    /// request; its notices are pushed as they come.
    patrol: Option<PatrolLink>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(replay) = self.replay.take() {
            replay.abort();
        }
    }
}

/// A race subscription: the race's published ticks and how far this socket has got.
struct Watching {
    /// The race's latest tick.
    updates: UpdatesReceiver,
    /// Sequence number of the last tick sent to this socket.
    last_seq: u64,
    /// Since when every tick has been skipped (none: the last one went out).
    skipping_since: Option<Instant>,
}

/// Runs a session until the client leaves, a violation closes it, or shutdown begins.
pub async fn run<S>(ws: WebSocketStream<S>, codec: Codec, claims: Claims, engine: Arc<Engine>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _guard = engine.sessions.enter();
    let mut shutdown = engine.shutdown_signal();
    let ws_config = &engine.config.ws;
    let (sink, mut stream) = ws.split();
    let (out, queue) = mpsc::channel(ws_config.outbound_queue);
    let write_timeout = Duration::from_millis(ws_config.write_timeout_ms);
    let in_flight = UpdatesInFlight::default();
    let mut writer = tokio::spawn(write_loop(sink, queue, write_timeout, in_flight.clone()));
    let mut writer_done = false;
    let mut session = Session {
        codec,
        bucket: TokenBucket::new(
            ws_config.rate_limit_per_sec,
            ws_config.rate_limit_burst,
            Instant::now(),
        ),
        violations: 0,
        out,
        engine: engine.clone(),
        watching: None,
        replay: None,
        in_flight,
        slow_close_after: Duration::from_millis(ws_config.slow_consumer_close_ms),
        patrol: None,
        claims,
    };
    let welcome = Welcome {
        protocol: PROTOCOL_VERSION,
        server_version: env!("CARGO_PKG_VERSION").to_owned(),
        role: session.claims.role,
        sub: session.claims.sub.clone(),
        race: session.claims.race.clone(),
        expires_at_ms: session.claims.expires_at_ms(),
    };
    session
        .send(&ServerFrame::Push(Push::Welcome(welcome)))
        .await;
    session.patrol = crate::api::patrol::open_on_connect(&engine, &session.claims).await;
    let grace = Duration::from_millis(ws_config.token_expiry_grace_ms);

    let close: Option<CloseReason> = loop {
        if *shutdown.borrow() {
            break Some((close_code::GOING_AWAY, "server shutting down".into()));
        }
        let expires_in = Duration::from_millis(
            u64::try_from(session.claims.expires_at_ms() - now_ms()).unwrap_or(0),
        ) + grace;
        tokio::select! {
            _ = shutdown.changed() => continue,
            // The writer gave up (peer gone or not reading): the session ends too.
            _ = &mut writer => {
                writer_done = true;
                break None;
            }
            _ = tokio::time::sleep(expires_in) => {
                break Some((close_code::POLICY_VIOLATION, "token expired".into()));
            }
            notice = next_notice(&mut session.patrol) => match notice {
                Some(notice) => {
                    let push = crate::api::patrol::notice_push(notice);
                    session.send(&ServerFrame::Push(push)).await;
                }
                None => {
                    break Some((
                        close_code::SESSION_ENDED,
                        "patrol session ended: replaced by a newer socket of this user, or notices were not read".into(),
                    ));
                }
            },
            changed = next_tick(&mut session.watching) => match changed {
                Ok(()) => {
                    if let Some(close) = session.forward_tick() {
                        break Some(close);
                    }
                }
                // The race actor is gone (restarting); the client subscribes again.
                Err(_) => session.watching = None,
            },
            message = stream.next() => {
                let payload = match message {
                    None | Some(Ok(Message::Close(_))) => break None,
                    Some(Ok(Message::Binary(bytes))) if codec == Codec::Binary => bytes,
                    Some(Ok(Message::Text(text))) if codec == Codec::Json => text.into(),
                    Some(Ok(Message::Binary(_))) => {
                        break Some((close_code::UNSUPPORTED_DATA, "binary frames are not accepted on peloton.v1.json".into()));
                    }
                    Some(Ok(Message::Text(_))) => {
                        break Some((close_code::UNSUPPORTED_DATA, "text frames are not accepted on peloton.v1.bin".into()));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => break close_for(&e),
                };
                if let Some(close) = session.on_payload(&payload).await {
                    break Some(close);
                }
            }
        }
    };
    if let Some((code, reason)) = close {
        metrics::counter!(m::CLOSES, "code" => code.to_string()).increment(1);
        let _ = session.out.send(Outbound::Close(code, reason)).await;
    }
    drop(session);
    if !writer_done {
        let _ = writer.await;
    }
}

/// Plays a replay: every `tick` of wall time the race clock moves `tick × speed` and the
/// change goes out (the first step as a full table); waits for queue room, since a replay
/// belongs to this one socket and may as well go at its reader's pace.
async fn play(
    out: mpsc::Sender<Outbound>,
    codec: Codec,
    race_id: String,
    mut replayer: Replayer,
    speed: f64,
    start_ms: Option<i64>,
    tick: Duration,
) {
    let send = |frame: ServerFrame| {
        let out = out.clone();
        async move {
            match encoded(codec, &frame) {
                Some(message) => out.send(message).await.is_ok(),
                None => true,
            }
        }
    };
    if let Some((from, to)) = replayer.span() {
        let step = (tick.as_millis() as f64 * speed).round().max(1.0) as i64;
        let mut clock = start_ms.map_or(from, |s| s.clamp(from, to));
        let mut first = true;
        loop {
            if let Some(update) = replayer.advance(clock) {
                let tick_frame = crate::api::race_tick(&race_id, &update, first);
                first = false;
                if !send(ServerFrame::Push(Push::ReplayTick(tick_frame))).await {
                    return;
                }
            }
            if replayer.done() {
                break;
            }
            clock += step;
            tokio::time::sleep(tick).await;
        }
    }
    send(ServerFrame::Push(Push::ReplayDone { race_id })).await;
}

/// Encodes a frame for the writer and counts it; `None` (logged) if it cannot be encoded.
fn encoded(codec: Codec, frame: &ServerFrame) -> Option<Outbound> {
    match codec.encode_server(frame) {
        Ok(message) => {
            metrics::counter!(m::MESSAGES_OUT, "type" => frame.type_name()).increment(1);
            Some(Outbound::Frame(message))
        }
        Err(e) => {
            tracing::error!("cannot encode {}: {e}", frame.type_name());
            None
        }
    }
}

/// A published update as this socket's kind of frame (`None`, logged, if the JSON bytes are
/// not UTF-8, which the encoder never produces).
fn update_message(codec: Codec, frames: &Frames) -> Option<Message> {
    match codec {
        Codec::Binary => Some(Message::Binary(frames.binary.clone())),
        Codec::Json => match Utf8Bytes::try_from(frames.json.clone()) {
            Ok(text) => Some(Message::Text(text)),
            Err(e) => {
                tracing::error!("a JSON race update is not UTF-8: {e}");
                None
            }
        },
    }
}

/// The next notice of this socket's patrol session (`None`: the session ended); never,
/// when the socket has no patrol session.
async fn next_notice(patrol: &mut Option<PatrolLink>) -> Option<Notice> {
    match patrol {
        Some(link) => link.notices.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves when the watched race publishes a new tick; never, when nothing is watched.
async fn next_tick(
    watching: &mut Option<Watching>,
) -> Result<(), tokio::sync::watch::error::RecvError> {
    match watching {
        Some(w) => w.updates.changed().await,
        None => std::future::pending().await,
    }
}

/// The close code for a read error, or `None` when the peer is simply gone.
fn close_for(error: &WsError) -> Option<CloseReason> {
    match error {
        WsError::Capacity(e) => Some((close_code::MESSAGE_TOO_BIG, e.to_string())),
        WsError::Utf8(_) => Some((
            close_code::INVALID_PAYLOAD,
            "text frame is not valid UTF-8".into(),
        )),
        WsError::Protocol(e) => Some((close_code::PROTOCOL_ERROR, e.to_string())),
        _ => None,
    }
}

impl Session {
    /// Queues the latest tick without waiting: the delta when this socket has every tick
    /// before it, else the full table. While [`MAX_UPDATES_IN_FLIGHT`] earlier updates are
    /// still unflushed the tick is skipped; the next one then goes out as a full table, so a
    /// slow reader gets the latest state, never a backlog. A socket that has skipped every
    /// tick for `slow_close_after` gets a close reason.
    fn forward_tick(&mut self) -> Option<CloseReason> {
        let watching = self.watching.as_mut()?;
        let latest = watching.updates.borrow_and_update().clone()?;
        if latest.seq <= watching.last_seq {
            return None;
        }
        if self.in_flight.load(Ordering::Acquire) >= MAX_UPDATES_IN_FLIGHT {
            metrics::counter!(m::SKIPPED_UPDATES).increment(1);
            let since = *watching.skipping_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.slow_close_after {
                return Some((
                    close_code::TOO_SLOW,
                    "too slow: race updates were skipped for too long".into(),
                ));
            }
            return None;
        }
        let frames = if latest.seq == watching.last_seq + 1 {
            &latest.delta
        } else {
            &latest.full
        };
        let message = update_message(self.codec, frames)?;
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        match self.out.try_send(Outbound::Update(message)) {
            Ok(()) => {
                watching.last_seq = latest.seq;
                watching.skipping_since = None;
                metrics::counter!(m::MESSAGES_OUT, "type" => "race_update").increment(1);
            }
            Err(_) => {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                metrics::counter!(m::SKIPPED_UPDATES).increment(1);
            }
        }
        None
    }

    /// Handles one data frame; returns a close reason when the socket must go.
    async fn on_payload(&mut self, payload: &[u8]) -> Option<CloseReason> {
        if !self.bucket.try_take(Instant::now()) {
            self.violations += 1;
            if self.violations >= self.engine.config.ws.flood_close_after {
                return Some((close_code::POLICY_VIOLATION, "rate limit exceeded".into()));
            }
            self.reject(
                None,
                Rejection::new(ErrorCode::RateLimited, "slow down: rate limit exceeded"),
            )
            .await;
            return None;
        }
        self.violations = 0;
        let frame = match self.codec.decode_client(payload) {
            Ok(frame) => frame,
            Err(e) => {
                metrics::counter!(m::MESSAGES_IN, "type" => "undecodable").increment(1);
                self.reject(e.id, Rejection::new(e.code, e.message)).await;
                return None;
            }
        };
        metrics::counter!(m::MESSAGES_IN, "type" => frame.request.type_name()).increment(1);
        match api::handle(
            &self.engine,
            &mut self.claims,
            &mut self.patrol,
            frame.request,
        )
        .await
        {
            Outcome::Reply(Ok(reply)) => {
                self.send(&ServerFrame::Reply {
                    id: frame.id,
                    reply,
                })
                .await
            }
            Outcome::Reply(Err(rejection)) => self.reject(Some(frame.id), rejection).await,
            Outcome::Replay {
                reply,
                race_id,
                replayer,
                speed,
                start_ms,
            } => {
                self.send(&ServerFrame::Reply {
                    id: frame.id,
                    reply,
                })
                .await;
                if let Some(previous) = self.replay.take() {
                    previous.abort();
                }
                let tick = Duration::from_millis(self.engine.config.race.tick_ms);
                self.replay = Some(tokio::spawn(play(
                    self.out.clone(),
                    self.codec,
                    race_id,
                    replayer,
                    speed,
                    start_ms,
                    tick,
                )));
            }
            Outcome::Subscribed {
                reply,
                seq,
                missed,
                updates,
            } => {
                self.send(&ServerFrame::Reply {
                    id: frame.id,
                    reply,
                })
                .await;
                // What a resuming spectator missed belongs to its answer: wait for room.
                for tick in missed {
                    if let Some(message) = update_message(self.codec, &tick.delta) {
                        let _ = self.out.send(Outbound::Frame(message)).await;
                    }
                }
                self.watching = Some(Watching {
                    updates,
                    last_seq: seq,
                    skipping_since: None,
                });
            }
            Outcome::StreamFile { path, reply } => {
                let result = self.stream_file(frame.id, &path).await;
                let _ = std::fs::remove_file(&path);
                match result {
                    Ok(()) => {
                        self.send(&ServerFrame::Reply {
                            id: frame.id,
                            reply,
                        })
                        .await
                    }
                    Err(e) => {
                        self.reject(
                            Some(frame.id),
                            Rejection::internal(format!("backup stream failed: {e}")),
                        )
                        .await
                    }
                }
            }
        }
        None
    }

    async fn stream_file(
        &mut self,
        request_id: u64,
        path: &std::path::Path,
    ) -> std::io::Result<()> {
        let mut file = std::fs::File::open(path)?;
        let mut offset = 0u64;
        loop {
            let mut data = vec![0u8; BACKUP_CHUNK_BYTES];
            let n = file.read(&mut data)?;
            if n == 0 {
                return Ok(());
            }
            data.truncate(n);
            self.send(&ServerFrame::Push(Push::BackupChunk {
                request_id,
                offset,
                data,
            }))
            .await;
            offset += n as u64;
        }
    }

    async fn reject(&mut self, id: Option<u64>, rejection: Rejection) {
        metrics::counter!(m::ERRORS, "code" => rejection.code.as_str()).increment(1);
        let frame = ServerFrame::Error {
            id,
            error: WireError {
                code: rejection.code,
                message: rejection.message,
            },
        };
        self.send(&frame).await;
    }

    /// Encodes and queues a frame; waits when the queue is full (replies are never dropped).
    async fn send(&mut self, frame: &ServerFrame) {
        if let Some(message) = encoded(self.codec, frame) {
            let _ = self.out.send(message).await;
        }
    }
}

/// Drains the queue into the socket: every frame already queued is fed before one flush.
/// A peer that does not take our bytes within `write_timeout` is dropped, so a client that
/// stops reading holds at most its queue and write buffer, and only until then.
async fn write_loop<S>(
    mut sink: SplitSink<WebSocketStream<S>, Message>,
    mut queue: mpsc::Receiver<Outbound>,
    write_timeout: Duration,
    in_flight: UpdatesInFlight,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(first) = queue.recv().await {
        let mut next = Some(first);
        let mut updates = 0;
        while let Some(item) = next.take() {
            if matches!(item, Outbound::Update(_)) {
                updates += 1;
            }
            match item {
                Outbound::Frame(message) | Outbound::Update(message) => {
                    let fed = tokio::time::timeout(write_timeout, sink.feed(message)).await;
                    if !matches!(fed, Ok(Ok(()))) {
                        return;
                    }
                }
                Outbound::Close(code, reason) => {
                    let frame = CloseFrame {
                        code: CloseCode::from(code),
                        reason: truncate_reason(reason).into(),
                    };
                    let _ =
                        tokio::time::timeout(write_timeout, sink.send(Message::Close(Some(frame))))
                            .await;
                    let _ = tokio::time::timeout(write_timeout, sink.close()).await;
                    return;
                }
            }
            next = queue.try_recv().ok();
        }
        let flushed = tokio::time::timeout(write_timeout, sink.flush()).await;
        in_flight.fetch_sub(updates, Ordering::AcqRel);
        if !matches!(flushed, Ok(Ok(()))) {
            return;
        }
    }
    let _ = tokio::time::timeout(write_timeout, sink.close()).await;
}

/// RFC 6455 allows at most 123 bytes of close reason.
fn truncate_reason(mut reason: String) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.truncate(end);
    reason
}
