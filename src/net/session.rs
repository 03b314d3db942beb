//! One WebSocket session, from the first frame to the close code.
//!
//! A reader loop enforces the rate limit, decodes frames with the socket's [`Codec`], asks
//! [`crate::api`] to handle each request and queues exactly one reply per request. A writer
//! task drains a bounded queue into the socket, feeding every queued frame before one flush
//! so a burst costs one write. Protocol violations close only this socket, with the code
//! PROTOCOL.md lists. The token's lifetime, the idle timeout and a peer that stops reading
//! are deadlines in the same loop, so they fire even when nothing else happens. After the
//! server's close frame the session keeps reading and discarding input until the peer's
//! close frame or [`CLOSE_DRAIN`] (RFC 6455 §7.1.1), so the close code reaches a client that
//! is still sending instead of being destroyed by a reset.

use super::close_code;
use super::codec::Codec;
use super::protocol::{Push, ServerFrame, Welcome, WireError, PROTOCOL_VERSION};
use super::ratelimit::{FloodWindow, Refusal, TokenBucket};
use crate::api::{self, Caller, Outcome, ReplayPacer, TickFeed, TickView};
use crate::auth::{Claims, Role};
use crate::engine::Engine;
use crate::error::{ErrorCode, Rejection};
use crate::metrics as m;
use crate::time::now_ms;
use bytes::Bytes;
use futures_util::stream::{SplitSink, StreamExt};
use futures_util::SinkExt;
use std::io::Read;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data as OpData, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// Bytes per backup chunk pushed to the client: small enough that even as a JSON array of
/// numbers (up to 4 characters a byte) a chunk stays far below `ws.max_write_buffer_bytes`.
const BACKUP_CHUNK_BYTES: usize = 64 * 1024;

/// How long, after the server sent its close frame, it keeps reading and discarding what
/// the peer still sends, waiting for the peer's close frame, before it shuts the TCP stream
/// (RFC 6455 §7.1.1). Closing with unread data queued makes the kernel answer with a reset,
/// which destroys the close frame in flight.
const CLOSE_DRAIN: Duration = Duration::from_secs(2);

/// The same wait while the server shuts down: sockets are closed all at once, and a client
/// that does not answer must not hold up the shutdown for long.
const SHUTDOWN_DRAIN: Duration = Duration::from_millis(250);

/// What the writer task is handed, in order.
enum Outbound {
    /// A data frame.
    Frame(Message),
    /// A subscription's reply and the ticks a resuming spectator missed, to send in order;
    /// from then on follow `watching`'s race, replacing any earlier subscription. Its live
    /// ticks follow these frames.
    Watch {
        /// The reply and the missed ticks.
        frames: Vec<Message>,
        /// The subscription.
        watching: Watching,
    },
    /// The last frame: close with this code and reason.
    Close(u16, String),
}

/// Why the reader stopped, when the server is the one closing.
type CloseReason = (u16, String);

/// The reader side's state.
struct Session {
    /// The socket's encoding.
    codec: Codec,
    /// Who is on the other end (a refresh replaces their token) and the domain sessions
    /// their socket holds open, whose pushes this socket carries.
    caller: Caller,
    /// Into the writer task.
    out: mpsc::Sender<Outbound>,
    /// Rate limit.
    bucket: TokenBucket,
    /// Judges the bucket's refusals over a window: answer once, drop, or close.
    flood: FloodWindow,
    /// Shared server state.
    engine: Arc<Engine>,
    /// A replay being played to this socket; aborted when the session ends or replaced.
    replay: Option<tokio::task::JoinHandle<()>>,
    /// The token's expiry in ms, shared with the replay task so it pauses at `exp` and
    /// resumes after a refresh.
    expires_at: Arc<AtomicI64>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(replay) = self.replay.take() {
            replay.abort();
        }
    }
}

/// A race subscription, followed by the writer: the race's published ticks and how far
/// this socket has got.
struct Watching {
    /// The race's latest tick.
    updates: TickFeed,
    /// Sequence number of the last tick sent to this socket.
    last_seq: u64,
    /// Since when every frame this socket was sent had to cover ticks it missed (none: the
    /// last one was a plain delta): a reader that never catches up for
    /// `ws.slow_consumer_close_ms` is too slow, even if a frame gets through now and then.
    behind_since: Option<Instant>,
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
    let activity = Activity::new();
    let expires_at = Arc::new(AtomicI64::new(claims.expires_at_ms()));
    // A spectator's writer is one of the many a tick wakes at once: it runs below the
    // server's priority, so the wave never delays a racer's acknowledgement, which its own
    // writer (at normal priority) carries.
    let audience = claims.role == Role::Spectator;
    let mut writer = engine.spawn_writer(
        audience,
        Writer {
            sink,
            queue,
            write_timeout: Duration::from_millis(ws_config.write_timeout_ms),
            activity: activity.clone(),
            codec,
            expires_at: expires_at.clone(),
            slow_close_after: Duration::from_millis(ws_config.slow_consumer_close_ms),
            watching: None,
            fragment_bytes: ws_config.fragment_bytes,
            sent_updates: metrics::counter!(m::MESSAGES_OUT, "type" => "race_update"),
            sent_catch_ups: metrics::counter!(m::MESSAGES_OUT, "type" => "race_catch_up"),
            skipped_updates: metrics::counter!(m::SKIPPED_UPDATES),
        }
        .run(),
    );
    let mut session = Session {
        codec,
        bucket: TokenBucket::new(
            ws_config.rate_limit_per_sec,
            ws_config.rate_limit_burst,
            Instant::now(),
        ),
        flood: FloodWindow::new(
            Duration::from_millis(ws_config.flood_window_ms),
            ws_config.flood_close_after,
        ),
        out,
        engine: engine.clone(),
        replay: None,
        caller: Caller::new(claims),
        expires_at: expires_at.clone(),
    };
    let claims = session.caller.claims();
    let welcome = Welcome {
        protocol: PROTOCOL_VERSION,
        server_version: env!("CARGO_PKG_VERSION").to_owned(),
        role: claims.role,
        sub: claims.sub.clone(),
        race: claims.race.clone(),
        expires_at_ms: claims.expires_at_ms(),
    };
    session
        .send(&ServerFrame::Push(Push::Welcome(welcome)))
        .await;
    session.caller.connect(&engine).await;
    let grace = Duration::from_millis(ws_config.token_expiry_grace_ms);
    let idle_timeout = Duration::from_millis(ws_config.idle_timeout_ms);

    // Absolute deadlines, armed once and reset only when a refresh changes the token: a
    // sleep re-created from "time left" on every wake-up would restart the grace period
    // each time anything (a ping, a tick) happened after `exp`.
    let (pushes_until, close_at) = token_deadlines(session.caller.claims(), grace);
    let pushes_stop = tokio::time::sleep_until(pushes_until);
    let token_close = tokio::time::sleep_until(close_at);
    let idle_check = tokio::time::sleep_until(
        activity
            .last()
            .checked_add(idle_timeout)
            .unwrap_or_else(far_future),
    );
    tokio::pin!(pushes_stop, token_close, idle_check);
    // The token expiry the two deadlines above were armed for.
    let mut deadlines_for = session.caller.claims().expires_at_ms();
    let mut writer_end: Option<WriterOutcome<S>> = None;
    let mut writer_done = false;

    let ending: Ending = loop {
        if *shutdown.borrow() {
            break Ending::Server(close_code::GOING_AWAY, "server shutting down".into());
        }
        // A refresh changed the token: move both deadlines.
        let expires_at_ms = session.caller.claims().expires_at_ms();
        if expires_at_ms != deadlines_for {
            deadlines_for = expires_at_ms;
            let (pushes_until, close_at) = token_deadlines(session.caller.claims(), grace);
            pushes_stop.as_mut().reset(pushes_until);
            token_close.as_mut().reset(close_at);
        }
        // Pushes stop at `exp`; only a refresh (or the close) follows.
        let pushing = tokio::time::Instant::now() < pushes_stop.deadline();
        tokio::select! {
            _ = shutdown.changed() => continue,
            // The writer gave up: the peer is gone, or it stopped taking our bytes.
            joined = &mut writer => {
                writer_done = true;
                match joined {
                    Ok(outcome) => {
                        let stop = outcome.stop;
                        writer_end = Some(outcome);
                        match stop {
                            WriterStop::Stalled => break Ending::Stalled,
                            WriterStop::TooSlow => break Ending::Server(
                                close_code::TOO_SLOW,
                                "too slow: race updates were skipped for too long".into(),
                            ),
                            // A reset or closed connection under a write is the client
                            // going, as it is under a read: not a failure of ours.
                            WriterStop::PeerGone => break Ending::Client,
                            WriterStop::Done => {}
                        }
                    }
                    Err(e) => tracing::error!("a socket's writer failed: {e}"),
                }
                break Ending::Dropped;
            }
            _ = &mut token_close => {
                break Ending::Server(close_code::POLICY_VIOLATION, "token expired".into());
            }
            _ = &mut pushes_stop, if pushing => continue,
            _ = &mut idle_check => {
                let idle_until = activity.last().checked_add(idle_timeout).unwrap_or_else(far_future);
                if idle_until <= tokio::time::Instant::now() {
                    break Ending::Server(close_code::GOING_AWAY, "idle: nothing sent or received for ws.idle_timeout_ms".into());
                }
                idle_check.as_mut().reset(idle_until);
            }
            push = session.caller.next_push(), if pushing => match push {
                Some(push) => session.send(&ServerFrame::Push(push)).await,
                None => {
                    break Ending::Server(
                        close_code::SESSION_ENDED,
                        "patrol session ended: replaced by a newer socket of this user, or notices were not read".into(),
                    );
                }
            },
            message = stream.next() => {
                activity.touch();
                let payload = match message {
                    None | Some(Ok(Message::Close(_))) => break Ending::Client,
                    Some(Ok(Message::Binary(bytes))) if codec == Codec::Binary => bytes,
                    Some(Ok(Message::Text(text))) if codec == Codec::Json => text.into(),
                    Some(Ok(Message::Binary(_))) => {
                        break Ending::Server(close_code::UNSUPPORTED_DATA, "binary frames are not accepted on peloton.v1.json".into());
                    }
                    Some(Ok(Message::Text(_))) => {
                        break Ending::Server(close_code::UNSUPPORTED_DATA, "text frames are not accepted on peloton.v1.bin".into());
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => break ending_for(&e),
                };
                if let Some((code, reason)) = session.on_payload(&payload).await {
                    break Ending::Server(code, reason);
                }
            }
        }
    };
    metrics::counter!(m::CLOSES, "code" => ending.label()).increment(1);
    let drain_for = if *shutdown.borrow() {
        SHUTDOWN_DRAIN
    } else {
        CLOSE_DRAIN
    };
    // Stop producing: the replay and patrol pushes end with the session.
    let out = session.out.clone();
    drop(session);
    let framing_broken = matches!(ending, Ending::Broken(..));
    let close = match ending {
        Ending::Server(code, reason) | Ending::Broken(code, reason) => Some((code, reason)),
        Ending::Stalled => Some((
            close_code::TOO_SLOW,
            "too slow: the socket did not take our bytes within ws.write_timeout_ms".into(),
        )),
        Ending::Client | Ending::Dropped => None,
    };
    let outcome = if writer_done {
        writer_end
    } else {
        // RFC 6455 §7.1.1: while our close frame goes out, and for a while after, keep
        // reading (and discarding) until the peer's close frame, so the peer's unread data
        // does not make the kernel answer with a reset that destroys the close frame.
        let mut peer_done = close.is_none() || framing_broken;
        let finish = async {
            if let Some((code, reason)) = &close {
                let _ = out.send(Outbound::Close(*code, reason.clone())).await;
            }
            drop(out);
            writer.await.ok()
        };
        tokio::pin!(finish);
        let outcome = loop {
            tokio::select! {
                outcome = &mut finish => break outcome,
                message = stream.next(), if !peer_done => {
                    peer_done = !matches!(message, Some(Ok(_)));
                }
            }
        };
        if !peer_done {
            let drain = async { while let Some(Ok(_)) = stream.next().await {} };
            let _ = tokio::time::timeout(drain_for, drain).await;
        }
        outcome
    };
    let Some(mut outcome) = outcome else {
        return;
    };
    let stalled = outcome.stop == WriterStop::Stalled;
    if writer_done || stalled {
        // The writer stopped on its own (or its close frame did not go out): the close
        // frame must still be attempted, but only briefly when the peer is not reading and
        // its buffers are full.
        if let Some((code, reason)) = close {
            let message = Message::Close(Some(close_frame(code, reason)));
            let sent = tokio::time::timeout(drain_for, outcome.sink.send(message)).await;
            if !stalled && matches!(sent, Ok(Ok(()))) {
                // A peer that reads, only slowly: wait for its close frame as after any
                // close the server starts.
                let drain = async {
                    while let Some(Ok(message)) = stream.next().await {
                        if message.is_close() {
                            break;
                        }
                    }
                };
                let _ = tokio::time::timeout(drain_for, drain).await;
            }
        }
    }
    let Ok(mut ws) = stream.reunite(outcome.sink) else {
        return;
    };
    if framing_broken || stalled {
        // The framing can no longer be parsed (or was never read further): discard raw
        // bytes until the peer closes or the drain time is over, then shut the stream.
        let raw = ws.get_mut();
        let mut scratch = vec![0u8; 4096];
        let drain = async {
            while let Ok(n) = raw.read(&mut scratch).await {
                if n == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(drain_for, drain).await;
    }
    let _ = tokio::time::timeout(drain_for, ws.get_mut().shutdown()).await;
}

/// How a session ended, for the close frame, the drain and the metric.
enum Ending {
    /// The server closes with this code; the framing is intact, so the peer's close frame
    /// can be read.
    Server(u16, String),
    /// The server closes with this code after a framing or size error: what follows on the
    /// socket cannot be parsed as frames, so it is drained raw.
    Broken(u16, String),
    /// The writer could not hand our bytes to the peer within `ws.write_timeout_ms`.
    Stalled,
    /// The client closed (close frame, EOF, reset): not a protocol error.
    Client,
    /// The connection failed under the writer.
    Dropped,
}

impl Ending {
    /// The `code` label of `peloton_ws_closes_total`: the close code the server sent, or
    /// `client` / `dropped` when it sent none.
    fn label(&self) -> String {
        match self {
            Ending::Server(code, _) | Ending::Broken(code, _) => code.to_string(),
            Ending::Stalled => close_code::TOO_SLOW.to_string(),
            Ending::Client => "client".into(),
            Ending::Dropped => "dropped".into(),
        }
    }
}

/// Tokio instants for the token's `exp` (pushes stop) and `exp` + grace (the socket
/// closes), computed without overflow: a far-future `exp` becomes a far-future deadline.
fn token_deadlines(
    claims: &Claims,
    grace: Duration,
) -> (tokio::time::Instant, tokio::time::Instant) {
    let left_ms = u64::try_from(claims.expires_at_ms().saturating_sub(now_ms())).unwrap_or(0);
    let now = tokio::time::Instant::now();
    let exp = now
        .checked_add(Duration::from_millis(left_ms))
        .unwrap_or_else(far_future);
    (exp, exp.checked_add(grace).unwrap_or(exp))
}

/// A deadline that never comes in practice (about 30 years ahead), for sums that would
/// overflow an `Instant`.
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

/// When this socket last received a frame or had one written to it: the idle timeout
/// counts from here. Shared by the reader and the writer task.
#[derive(Clone)]
struct Activity {
    /// The reference point the stored milliseconds count from.
    origin: tokio::time::Instant,
    /// Milliseconds since `origin` of the last activity.
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    /// Activity now.
    fn new() -> Activity {
        Activity {
            origin: tokio::time::Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Records activity now.
    fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::AcqRel);
    }

    /// When the last activity was.
    fn last(&self) -> tokio::time::Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Acquire))
    }
}

/// The socket a replay plays to.
struct ReplayTarget {
    /// Into the socket's writer.
    out: mpsc::Sender<Outbound>,
    /// The socket token's expiry in ms: the replay pauses while it is past.
    expires_at: Arc<AtomicI64>,
    /// The socket's encoding.
    codec: Codec,
}

/// Plays a replay as `pacer` paces it: each step's push, then its wait. Pushes stop at the
/// token's `exp`, so while it is past the replay pauses, asking for no further step, and it
/// resumes where it was after a refresh. Waits for queue room, since a replay belongs to
/// this one socket and may as well go at its reader's pace.
async fn play(to: ReplayTarget, mut pacer: ReplayPacer) {
    loop {
        if to.expires_at.load(Ordering::Acquire) <= now_ms() {
            tokio::time::sleep(pacer.tick()).await;
            continue;
        }
        let Some(step) = pacer.next() else {
            return;
        };
        if let Some(push) = step.push {
            if let Some(message) = encoded(to.codec, &ServerFrame::Push(push)) {
                if to.out.send(Outbound::Frame(message)).await.is_err() {
                    return;
                }
            }
        }
        if !step.then_wait.is_zero() {
            tokio::time::sleep(step.then_wait).await;
        }
    }
}

/// Encodes a frame for the socket and counts it; `None` (logged) if it cannot be encoded.
fn encoded(codec: Codec, frame: &ServerFrame) -> Option<Message> {
    match codec.encode_server(frame) {
        Ok(message) => {
            metrics::counter!(m::MESSAGES_OUT, "type" => frame.type_name()).increment(1);
            Some(message)
        }
        Err(e) => {
            tracing::error!("cannot encode {}: {e}", frame.type_name());
            None
        }
    }
}

/// A race's encoded frame as this socket's kind of message, the bytes shared, not copied
/// (`None`, logged, if the JSON bytes are not UTF-8, which the encoder never produces).
fn update_message(codec: Codec, bytes: Bytes) -> Option<Message> {
    match codec {
        Codec::Binary => Some(Message::Binary(bytes)),
        Codec::Json => match Utf8Bytes::try_from(bytes) {
            Ok(text) => Some(Message::Text(text)),
            Err(e) => {
                tracing::error!("a JSON race update is not UTF-8: {e}");
                None
            }
        },
    }
}

/// A data message as the frames that carry it: itself, or, when it is larger than `max`
/// bytes, its fragments (RFC 6455 §5.4), each a slice of its bytes (for a race update, the
/// race's shared bytes). tungstenite copies every frame it sends into the socket's write
/// buffer, which then keeps the size of the largest frame it ever held: one course in a
/// `subscribed` reply, or one table, would otherwise cost every spectator socket that much
/// memory for as long as it is open. A JSON message is cut between bytes, not characters:
/// clients check the text of the whole message.
fn fragments(message: Message, max: usize) -> Vec<Message> {
    let kind = match &message {
        Message::Binary(_) => OpData::Binary,
        Message::Text(_) => OpData::Text,
        _ => return vec![message],
    };
    if message.len() <= max {
        return vec![message];
    }
    let bytes = Bytes::from(message);
    let mut out = Vec::with_capacity(bytes.len().div_ceil(max));
    let mut at = 0;
    while at < bytes.len() {
        let end = (at + max).min(bytes.len());
        let opcode = if at == 0 {
            OpCode::Data(kind)
        } else {
            OpCode::Data(OpData::Continue)
        };
        let frame = Frame::message(bytes.slice(at..end), opcode, end == bytes.len());
        out.push(Message::Frame(frame));
        at = end;
    }
    out
}

/// Resolves when the watched race publishes a new tick (`false`: the race is gone);
/// never, when nothing is watched.
async fn next_tick(watching: &mut Option<Watching>) -> bool {
    match watching {
        Some(w) => w.updates.changed().await,
        None => std::future::pending().await,
    }
}

/// How a read error ends the session. The peer simply going (EOF without a close frame,
/// reset, broken pipe) is the client's doing, not a protocol error.
fn ending_for(error: &WsError) -> Ending {
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    match error {
        WsError::Capacity(e) => Ending::Broken(close_code::MESSAGE_TOO_BIG, e.to_string()),
        WsError::Utf8(_) => Ending::Server(
            close_code::INVALID_PAYLOAD,
            "text frame is not valid UTF-8".into(),
        ),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Ending::Client,
        WsError::Protocol(e) => Ending::Broken(close_code::PROTOCOL_ERROR, e.to_string()),
        _ => Ending::Client,
    }
}

impl Session {
    /// Handles one data frame; returns a close reason when the socket must go.
    async fn on_payload(&mut self, payload: &[u8]) -> Option<CloseReason> {
        let now = Instant::now();
        if !self.bucket.try_take(now) {
            match self.flood.refuse(now) {
                Refusal::Close => {
                    return Some((close_code::POLICY_VIOLATION, "rate limit exceeded".into()));
                }
                Refusal::Answer => {
                    self.reject(
                        None,
                        Rejection::new(ErrorCode::RateLimited, "slow down: rate limit exceeded"),
                    )
                    .await;
                }
                Refusal::Drop => metrics::counter!(m::RATE_LIMITED_DROPPED).increment(1),
            }
            return None;
        }
        let frame = match self.codec.decode_client(payload) {
            Ok(frame) => frame,
            Err(e) => {
                metrics::counter!(m::MESSAGES_IN, "type" => "undecodable").increment(1);
                self.reject(e.id, Rejection::new(e.code, e.message)).await;
                return None;
            }
        };
        metrics::counter!(m::MESSAGES_IN, "type" => frame.request.type_name()).increment(1);
        let outcome = api::handle(&self.engine, &mut self.caller, frame.request).await;
        // A refresh reaches the writer and the replay before its reply is queued, so the
        // first update after it goes out with the reply.
        let expires_at_ms = self.caller.claims().expires_at_ms();
        self.expires_at.store(expires_at_ms, Ordering::Release);
        match outcome {
            Outcome::Reply(Ok(reply)) => {
                self.send(&ServerFrame::Reply {
                    id: frame.id,
                    reply,
                })
                .await
            }
            Outcome::Reply(Err(rejection)) => self.reject(Some(frame.id), rejection).await,
            Outcome::ReplyThenPush { reply, push } => {
                self.send(&ServerFrame::Reply {
                    id: frame.id,
                    reply,
                })
                .await;
                self.send(&ServerFrame::Push(push)).await
            }
            Outcome::Replay { reply, pacer } => {
                self.send(&ServerFrame::Reply {
                    id: frame.id,
                    reply,
                })
                .await;
                if let Some(previous) = self.replay.take() {
                    previous.abort();
                }
                let to = ReplayTarget {
                    out: self.out.clone(),
                    expires_at: self.expires_at.clone(),
                    codec: self.codec,
                };
                self.replay = Some(tokio::spawn(play(to, pacer)));
            }
            Outcome::Subscribed {
                reply,
                seq,
                missed,
                updates,
            } => {
                // The reply, then what a resuming spectator missed: part of its answer, never
                // skipped, handed to the writer with the subscription in one item.
                let reply = ServerFrame::Reply {
                    id: frame.id,
                    reply,
                };
                let mut frames: Vec<Message> = encoded(self.codec, &reply).into_iter().collect();
                frames.extend(missed.into_iter().filter_map(|tick| {
                    let bytes = tick.delta.get(api::wire_encoding(self.codec)).clone();
                    update_message(self.codec, bytes)
                }));
                let watching = Watching {
                    updates,
                    last_seq: seq,
                    behind_since: None,
                };
                let _ = self.out.send(Outbound::Watch { frames, watching }).await;
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
            let _ = self.out.send(Outbound::Frame(message)).await;
        }
    }
}

/// What the writer hands back when it stops: the sink (so the session can reunite the
/// socket, drain it and shut it) and why it stopped.
struct WriterOutcome<S> {
    /// The write half of the socket.
    sink: SplitSink<WebSocketStream<S>, Message>,
    /// Why the writer stopped.
    stop: WriterStop,
}

/// Why a writer stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriterStop {
    /// Its queue closed or it sent the close frame (or a write failed for a reason other
    /// than the peer going).
    Done,
    /// A write failed because the peer reset or closed the connection: the client went.
    PeerGone,
    /// The peer did not accept our bytes within the write timeout (or would have needed
    /// more than the write buffer): it is not reading.
    Stalled,
    /// Every race update for `ws.slow_consumer_close_ms` had to cover ticks this socket
    /// missed: it reads, but never keeps up.
    TooSlow,
}

/// The socket's writing half, a task of its own: it drains the reader's queue and follows
/// the watched race's ticks itself, so a tick costs each socket one task wake-up, and the
/// frame it writes is the race's encoded bytes, shared by reference up to the socket's
/// write. Whatever woke it, it feeds every queued frame, then the frame that brings the
/// socket to the race's latest tick, then flushes once. While a write is in progress, ticks
/// only replace one another in the race's `watch` channel: a socket that fell behind gets
/// one catch-up (or the full table) when it is ready again, never a backlog, and holds at
/// most one update.
struct Writer<S> {
    /// The write half of the socket.
    sink: SplitSink<WebSocketStream<S>, Message>,
    /// Frames from the reader, in order.
    queue: mpsc::Receiver<Outbound>,
    /// A peer that does not take our bytes for this long stalls the writer, which then
    /// stops, so a client that stops reading holds its queue and write buffer only until
    /// then.
    write_timeout: Duration,
    /// Touched after every flush: a socket being written to is not idle.
    activity: Activity,
    /// The socket's encoding, which picks the race's frames.
    codec: Codec,
    /// The token's expiry in ms: no race update goes out while it is past.
    expires_at: Arc<AtomicI64>,
    /// How long a reader may take only catch-ups before it is closed as too slow.
    slow_close_after: Duration,
    /// The race this socket watches, if any.
    watching: Option<Watching>,
    /// Messages larger than this go out as fragments of this size (`ws.fragment_bytes`).
    fragment_bytes: usize,
    /// The `race_update` and `race_catch_up` series of `peloton_ws_messages_out_total` and
    /// `peloton_ws_skipped_updates_total`, looked up once per socket rather than per tick.
    sent_updates: metrics::Counter,
    /// See `sent_updates`.
    sent_catch_ups: metrics::Counter,
    /// See `sent_updates`.
    skipped_updates: metrics::Counter,
}

impl<S> Writer<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Writes until the queue closes, a close frame went out, or the peer fails us.
    async fn run(mut self) -> WriterOutcome<S> {
        loop {
            let first = tokio::select! {
                item = self.queue.recv() => match item {
                    Some(item) => Some(item),
                    None => break,
                },
                alive = next_tick(&mut self.watching) => {
                    if !alive {
                        // The race actor is gone (restarting); the client subscribes again.
                        self.watching = None;
                    }
                    None
                }
            };
            let mut next = first;
            while let Some(item) = next.take() {
                match item {
                    Outbound::Frame(message) => {
                        if let Some(stop) = self.feed_all(message).await {
                            return self.stop(stop);
                        }
                    }
                    Outbound::Watch { frames, watching } => {
                        // Followed from now on, so a socket stuck writing its snapshot is
                        // behind as soon as the race moves on.
                        self.watching = Some(watching);
                        for message in frames {
                            if let Some(stop) = self.feed_all(message).await {
                                return self.stop(stop);
                            }
                        }
                    }
                    Outbound::Close(code, reason) => {
                        let message = Message::Close(Some(close_frame(code, reason)));
                        let sent =
                            tokio::time::timeout(self.write_timeout, self.sink.send(message)).await;
                        let stop = match sent {
                            Ok(result) => write_failed(result),
                            Err(_) => Some(WriterStop::Stalled),
                        };
                        return self.stop(stop.unwrap_or(WriterStop::Done));
                    }
                }
                next = self.queue.try_recv().ok();
            }
            match self.latest_update() {
                Ok(Some(message)) => {
                    if let Some(stop) = self.feed_all(message).await {
                        return self.stop(stop);
                    }
                }
                Ok(None) => {}
                Err(stop) => return self.stop(stop),
            }
            let flushed = watched_write(
                self.sink.flush(),
                self.write_timeout,
                &mut self.watching,
                &self.expires_at,
                self.slow_close_after,
            )
            .await;
            if let Some(stop) = flushed {
                return self.stop(stop);
            }
            self.activity.touch();
        }
        let _ = tokio::time::timeout(self.write_timeout, self.sink.close()).await;
        self.stop(WriterStop::Done)
    }

    /// Feeds a data message to the socket, in fragments when it is large.
    async fn feed_all(&mut self, message: Message) -> Option<WriterStop> {
        for part in fragments(message, self.fragment_bytes) {
            if let Some(stop) = self.feed(part).await {
                return Some(stop);
            }
        }
        None
    }

    /// Feeds one frame to the socket's write buffer (written out when it fills, or at the
    /// flush).
    async fn feed(&mut self, message: Message) -> Option<WriterStop> {
        watched_write(
            self.sink.feed(message),
            self.write_timeout,
            &mut self.watching,
            &self.expires_at,
            self.slow_close_after,
        )
        .await
    }

    /// The frame that brings the socket to the race's latest tick, if it lacks it: the
    /// delta, a catch-up, or the full table (see `feed.rs`). Nothing while the token is
    /// past `exp` (the tick is passed over; the first one after a refresh covers it).
    /// `Err(TooSlow)` once every frame for `slow_close_after` had to cover missed ticks.
    fn latest_update(&mut self) -> Result<Option<Message>, WriterStop> {
        let Some(watching) = self.watching.as_mut() else {
            return Ok(None);
        };
        if self.expires_at.load(Ordering::Acquire) <= now_ms() {
            watching.updates.pass_over();
            return Ok(None);
        }
        let Some((seq, frame)) = watching.updates.frame_since(watching.last_seq, self.codec) else {
            return Ok(None);
        };
        if frame.ticks == 1 {
            watching.behind_since = None;
        } else {
            self.skipped_updates.increment(frame.ticks - 1);
            let since = *watching.behind_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.slow_close_after {
                return Err(WriterStop::TooSlow);
            }
        }
        watching.last_seq = seq;
        match frame.view {
            TickView::CatchUp { .. } => self.sent_catch_ups.increment(1),
            TickView::Delta | TickView::Full => self.sent_updates.increment(1),
        }
        Ok(update_message(self.codec, frame.bytes))
    }

    /// Hands the sink back with the reason.
    fn stop(self, stop: WriterStop) -> WriterOutcome<S> {
        WriterOutcome {
            sink: self.sink,
            stop,
        }
    }
}

/// Waits for one write (a feed or the flush) of a socket that may watch a race. `None` when
/// it succeeded; else why the writer must stop: `Stalled` when the peer took nothing for
/// `write_timeout` (or the write buffer is full), `Done` when the peer is gone, `TooSlow`
/// when the race published a tick this socket could not be sent and the write is still
/// pending `slow_close_after` later. Watching while waiting is what closes a reader that
/// stopped for good within `ws.slow_consumer_close_ms`, even when the write timeout is
/// longer.
async fn watched_write(
    write: impl std::future::Future<Output = Result<(), WsError>>,
    write_timeout: Duration,
    watching: &mut Option<Watching>,
    expires_at: &AtomicI64,
    slow_close_after: Duration,
) -> Option<WriterStop> {
    tokio::pin!(write);
    // Most writes complete at once (the kernel takes the bytes): no timer for those.
    if let Some(result) = futures_util::FutureExt::now_or_never(write.as_mut()) {
        return write_failed(result);
    }
    let timeout = tokio::time::sleep(write_timeout);
    tokio::pin!(timeout);
    loop {
        let too_slow_at = watching
            .as_ref()
            .and_then(|w| w.behind_since)
            .map(|since| tokio::time::Instant::from_std(since + slow_close_after));
        let too_slow = async {
            match too_slow_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = &mut write => return write_failed(result),
            _ = &mut timeout => return Some(WriterStop::Stalled),
            _ = too_slow => return Some(WriterStop::TooSlow),
            alive = next_tick(watching) => match watching.as_mut() {
                Some(w) if alive => {
                    // A tick this socket cannot be sent now: it is behind from here on,
                    // unless its next update turns out to be the plain delta.
                    if expires_at.load(Ordering::Acquire) > now_ms() {
                        w.behind_since.get_or_insert_with(Instant::now);
                    }
                }
                // The race actor is gone (restarting); the client subscribes again.
                _ => *watching = None,
            },
        }
    }
}

/// `None` when a write succeeded; else `Stalled` when it failed because the write buffer is
/// full (the peer is not reading), `PeerGone` when the peer reset or closed the connection,
/// `Done` for any other failure.
fn write_failed(result: Result<(), WsError>) -> Option<WriterStop> {
    use std::io::ErrorKind;
    match result {
        Ok(()) => None,
        Err(WsError::WriteBufferFull(_)) => Some(WriterStop::Stalled),
        Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Some(WriterStop::PeerGone),
        Err(WsError::Io(e))
            if matches!(
                e.kind(),
                ErrorKind::ConnectionReset
                    | ErrorKind::BrokenPipe
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::UnexpectedEof
            ) =>
        {
            Some(WriterStop::PeerGone)
        }
        Err(_) => Some(WriterStop::Done),
    }
}

/// Our close frame, with the reason cut to what RFC 6455 allows.
fn close_frame(code: u16, reason: String) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(code),
        reason: truncate_reason(reason).into(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// A client that resets its connection makes the server's next write fail: that is the
    /// client going (`client` in `peloton_ws_closes_total`), over a real TCP connection.
    /// Any other write failure is not the client's doing.
    #[tokio::test]
    async fn a_write_to_a_peer_that_reset_is_the_client_going() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server_io, _) = listener.accept().await.unwrap();
        let mut server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        client.set_zero_linger().unwrap();
        drop(client);
        // The reset may arrive after a first write was taken by the kernel.
        let mut stop = None;
        for _ in 0..100 {
            let sent = server.send(Message::Binary(vec![7u8; 1024].into())).await;
            stop = write_failed(sent);
            if stop.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(stop, Some(WriterStop::PeerGone));
        let other = WsError::Io(std::io::Error::other("no buffer space"));
        assert_eq!(write_failed(Err(other)), Some(WriterStop::Done));
    }

    /// A race update cut into fragments arrives as the one message it was, whatever the
    /// cut splits (a multi-byte character in JSON text included), through tungstenite on
    /// both ends of a real byte stream.
    #[tokio::test]
    async fn a_fragmented_update_arrives_as_one_message() {
        let (server_io, client_io) = tokio::io::duplex(1 << 20);
        let mut server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let binary: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let text = format!("{{\"name\":\"{}\"}}", "Žan Čebašek ".repeat(500));
        for (codec, bytes) in [
            (Codec::Binary, Bytes::from(binary.clone())),
            (Codec::Json, Bytes::from(text.clone())),
        ] {
            let parts = fragments(update_message(codec, bytes.clone()).unwrap(), 1024);
            assert_eq!(parts.len(), bytes.len().div_ceil(1024));
            for part in parts {
                server.feed(part).await.unwrap();
            }
            server.flush().await.unwrap();
            let received = client.next().await.unwrap().unwrap();
            match (codec, received) {
                (Codec::Binary, Message::Binary(got)) => assert_eq!(got, binary),
                (Codec::Json, Message::Text(got)) => assert_eq!(got.as_str(), text),
                (_, other) => panic!("unexpected {other:?}"),
            }
        }
        // Small updates stay one frame.
        assert!(matches!(
            fragments(Message::Binary(Bytes::from_static(b"tick")), 1024).as_slice(),
            [Message::Binary(_)]
        ));
    }
}
