//! Issue 14, the per-socket parts, over real sockets: token lifetimes end their sockets,
//! close codes arrive at clients that are still sending, the rate limit is judged over a
//! window, idle and never-reading sockets are closed.

mod common;

use common::{counter, dense_gpx, gpx, http_get, live_race, racer_phone, token, TestServer};
use futures_util::{SinkExt, StreamExt};
use peloton::auth::Role;
use peloton::error::ErrorCode;
use peloton::geo::{Course, CourseIndex};
use peloton::net::client::Client;
use peloton::net::codec::Codec;
use peloton::net::protocol::{ClientFrame, Push, Request, ServerFrame, WireFix};
use peloton::time::now_ms;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const RIDE: &str = "out-and-back-ljubljana.gpx";
const T0: i64 = 1_796_115_600_000;

/// The upgrade request for `token` speaking `codec`.
fn upgrade(
    server: &TestServer,
    token: &str,
    codec: Codec,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut request = format!("{}/ws", server.url).into_client_request().unwrap();
    let auth = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    request.headers_mut().insert("Authorization", auth);
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(codec.subprotocol()),
    );
    request
}

/// A bare binary WebSocket with `token`, the welcome frame already read.
async fn raw_with(server: &TestServer, token: &str) -> Ws {
    let config = WebSocketConfig::default()
        .max_frame_size(None)
        .max_message_size(None);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(
        upgrade(server, token, Codec::Binary),
        Some(config),
        false,
    )
    .await
    .unwrap();
    match next_data(&mut ws, Duration::from_secs(10)).await {
        Some(ServerFrame::Push(Push::Welcome(_))) => {}
        other => panic!("expected the welcome, got {other:?}"),
    }
    ws
}

/// What arrived next on a socket.
#[derive(Debug)]
enum Got {
    Frame(Box<ServerFrame>),
    Close(u16),
    /// The stream ended or failed without a close frame (the client would see 1006).
    Gone(String),
}

async fn next_got(ws: &mut Ws, limit: Duration) -> Got {
    loop {
        match tokio::time::timeout(limit, ws.next()).await {
            Err(_) => panic!("nothing within {limit:?}"),
            Ok(Some(Ok(Message::Binary(b)))) => {
                return Got::Frame(Box::new(Codec::Binary.decode_server(&b).unwrap()))
            }
            Ok(Some(Ok(Message::Close(Some(frame))))) => return Got::Close(u16::from(frame.code)),
            Ok(Some(Ok(Message::Close(None)))) => return Got::Gone("close without a code".into()),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return Got::Gone(e.to_string()),
            Ok(None) => return Got::Gone("end of stream".into()),
        }
    }
}

async fn next_data(ws: &mut Ws, limit: Duration) -> Option<ServerFrame> {
    match next_got(ws, limit).await {
        Got::Frame(frame) => Some(*frame),
        _ => None,
    }
}

fn ping(id: u64) -> Message {
    Codec::Binary
        .encode_client(&ClientFrame {
            id,
            request: Request::Ping,
        })
        .unwrap()
}

/// Reads frames until the close frame; panics on anything but a close frame at the end.
async fn close_code_within(ws: &mut Ws, limit: Duration) -> (u16, Vec<ServerFrame>) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut frames = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_got(ws, left).await {
            Got::Frame(frame) => frames.push(*frame),
            Got::Close(code) => return (code, frames),
            Got::Gone(why) => panic!("no close frame: {why}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_pinging_sockets_are_closed_with_1008_after_exp_and_grace() {
    let server = TestServer::start_with(|c| {
        c.ws.token_expiry_grace_ms = 500;
        c.auth.leeway_secs = 0;
        // Shorter than the configuration allows, so the page's guest token expires here too.
        c.web.guest_token_ttl_secs = 2;
    })
    .await;
    let exp_ms = (now_ms() / 1000 + 2) * 1000;
    let short = token(&server.keys, Role::Spectator, "brief", None, 2);
    let mut idle = raw_with(&server, &short).await;
    let mut pinging = raw_with(&server, &short).await;
    // Every other role too, idle: an officer's and a citizen's socket hold a patrol session.
    let mut others = Vec::new();
    for (role, race) in [
        (Role::Admin, None),
        (Role::Racer, Some("some-race")),
        (Role::Officer, None),
        (Role::Citizen, None),
    ] {
        let brief = token(&server.keys, role, &format!("brief-{role}"), race, 2);
        others.push((role, raw_with(&server, &brief).await));
    }
    // And the token the spectator page gets from /api/guest-token.
    let (status, body) = http_get(server.addr, "/api/guest-token HTTP/1.1").await;
    assert_eq!(status, 200, "{body}");
    let json_start = body.find('{').expect("a JSON body");
    let guest: serde_json::Value = serde_json::from_str(&body[json_start..]).unwrap();
    let guest = guest["token"].as_str().unwrap().to_owned();
    others.push((Role::Spectator, raw_with(&server, &guest).await));
    let pinger = tokio::spawn(async move {
        let mut id = 0;
        let code = loop {
            id += 1;
            if pinging.send(ping(id)).await.is_err() {
                break None;
            }
            if pinging.send(Message::Ping(vec![1].into())).await.is_err() {
                break None;
            }
            // Read for 200 ms, then ping again: a few messages a second, far below the limit.
            let until = tokio::time::Instant::now() + Duration::from_millis(200);
            let mut ended = None;
            while let Ok(next) = tokio::time::timeout_at(until, pinging.next()).await {
                match next {
                    Some(Ok(Message::Close(Some(frame)))) => {
                        ended = Some(Some(u16::from(frame.code)));
                        break;
                    }
                    None | Some(Err(_)) => {
                        ended = Some(None);
                        break;
                    }
                    _ => {}
                }
            }
            if let Some(code) = ended {
                break code;
            }
        };
        (code, now_ms())
    });
    let (code, _) = close_code_within(&mut idle, Duration::from_secs(10)).await;
    let idle_closed_at = now_ms();
    assert_eq!(code, 1008);
    assert!(
        idle_closed_at >= exp_ms + 400,
        "not before exp + grace: closed {} ms after exp",
        idle_closed_at - exp_ms
    );
    for (role, mut ws) in others {
        let (code, _) = close_code_within(&mut ws, Duration::from_secs(5)).await;
        assert_eq!(code, 1008, "{role}");
    }
    let (code, closed_at) = tokio::time::timeout(Duration::from_secs(10), pinger)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, Some(1008), "a pinging socket is closed too");
    assert!(
        closed_at >= exp_ms + 400,
        "not before exp + grace: closed {} ms after exp",
        closed_at - exp_ms
    );
    server.stop().await;
}

fn fixes(index: &CourseIndex, from: f64, to: f64) -> Vec<WireFix> {
    let mut out = Vec::new();
    let mut d = from;
    while d < to {
        out.push(common::fix_at(index, d, T0 + (d * 125.0) as i64));
        d += 25.0;
    }
    out
}

/// A racer riding on in the background: 100 m every 100 ms.
fn keep_riding(mut phone: Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let course = Course::from_gpx(gpx(RIDE).as_bytes(), 200_000).unwrap();
        let index = CourseIndex::from(&course);
        for step in 0..200 {
            let (from, to) = (step as f64 * 100.0, (step + 1) as f64 * 100.0);
            if phone
                .request(Request::Fixes {
                    fixes: fixes(&index, from, to),
                })
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_share_link_stops_receiving_updates_at_exp_and_is_closed() {
    let server = TestServer::start_with(|c| {
        c.race.tick_ms = 50;
        c.ws.token_expiry_grace_ms = 1500;
    })
    .await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    let race_id = live_race(&mut admin, RIDE, T0, 1).await;
    let rider = keep_riding(racer_phone(&server.url, &server.keys, &race_id, 1).await);
    // A share link is a race-scoped spectator token.
    let exp_ms = (now_ms() / 1000 + 2) * 1000;
    let share = token(&server.keys, Role::Spectator, "share", Some(&race_id), 2);
    let mut ws = raw_with(&server, &share).await;
    let subscribe = Codec::Binary
        .encode_client(&ClientFrame {
            id: 1,
            request: Request::RaceSubscribe {
                race_id: race_id.clone(),
                since_seq: None,
            },
        })
        .unwrap();
    ws.send(subscribe).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (mut before, mut after) = (0, 0);
    let code = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_got(&mut ws, left).await {
            Got::Frame(frame) => {
                if matches!(
                    *frame,
                    ServerFrame::Push(Push::RaceUpdate(_) | Push::RaceCatchUp(_))
                ) {
                    // A tick already in flight at exp may still arrive just after it.
                    if now_ms() > exp_ms + 250 {
                        after += 1;
                    } else {
                        before += 1;
                    }
                }
            }
            Got::Close(code) => break code,
            Got::Gone(why) => panic!("no close frame: {why}"),
        }
    };
    assert!(before > 0, "updates flowed while the link was valid");
    assert_eq!(after, 0, "no race_update after exp");
    assert_eq!(code, 1008);
    assert!(
        now_ms() >= exp_ms + 1400,
        "closed at exp + grace, not before"
    );
    rider.abort();
    server.stop().await;
}

#[tokio::test]
async fn a_token_living_beyond_the_maximum_lifetime_is_refused_at_the_upgrade() {
    let server = TestServer::start_with(|c| c.auth.max_ttl_secs = 3600).await;
    let now = now_ms() / 1000;
    for exp in [i64::MAX, now + 3600 + 86_400, i64::MAX / 1000 + 7] {
        let mut claims = peloton::auth::claims_for(Role::Spectator, "far", None, now, 60);
        claims.exp = exp;
        let far = server.keys.issue(&claims).unwrap();
        match tokio_tungstenite::connect_async(upgrade(&server, &far, Codec::Binary)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 401);
                let body =
                    String::from_utf8_lossy(response.body().as_deref().unwrap_or(&[])).into_owned();
                assert!(body.contains("max_ttl_secs"), "{body}");
            }
            other => panic!("expected 401 for exp {exp}, got {:?}", other.map(|_| ())),
        }
    }
    // Within the maximum is fine.
    let fine = token(&server.keys, Role::Spectator, "near", None, 3000);
    drop(raw_with(&server, &fine).await);
    server.stop().await;
}

/// Sends `message()` every `pause` until the send fails or `limit` passes.
fn keep_sending(
    mut sink: futures_util::stream::SplitSink<Ws, Message>,
    message: impl Fn() -> Message + Send + 'static,
    pause: Duration,
    limit: Duration,
) -> tokio::task::JoinHandle<u32> {
    tokio::spawn(async move {
        let until = Instant::now() + limit;
        let mut sent = 0;
        while Instant::now() < until {
            if sink.send(message()).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(pause).await;
        }
        sent
    })
}

/// Reads until the close frame (panicking on a stream that ends without one), counting
/// `rate_limited` errors.
async fn close_while_sending(
    stream: &mut futures_util::stream::SplitStream<Ws>,
    limit: Duration,
) -> (u16, u32) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut limited = 0;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, stream.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Binary(b))) => {
                if let ServerFrame::Error { error, .. } = Codec::Binary.decode_server(&b).unwrap() {
                    assert_eq!(error.code, ErrorCode::RateLimited);
                    limited += 1;
                }
            }
            Some(Ok(Message::Close(Some(frame)))) => return (u16::from(frame.code), limited),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_sees_1008_while_still_sending() {
    let server = TestServer::start_with(|c| {
        c.ws.rate_limit_per_sec = 5;
        c.ws.rate_limit_burst = 5;
        c.ws.flood_close_after = 10;
        c.ws.flood_window_ms = 10_000;
    })
    .await;
    for _ in 0..3 {
        let ws = raw_with(&server, &server.token(Role::Spectator, "flood")).await;
        let (sink, mut stream) = ws.split();
        let sender = keep_sending(
            sink,
            || ping(1),
            Duration::from_micros(200),
            Duration::from_secs(8),
        );
        let (code, limited) = close_while_sending(&mut stream, Duration::from_secs(10)).await;
        assert_eq!(code, 1008);
        assert_eq!(limited, 1, "one rate_limited answer per window");
        let sent = sender.await.unwrap();
        assert!(sent > 15, "the client was still sending: {sent}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_sees_1009_while_still_sending() {
    let server = TestServer::start_with(|c| {
        c.ws.max_frame_bytes = 1024;
        c.ws.max_message_bytes = 1024;
    })
    .await;
    for _ in 0..3 {
        let ws = raw_with(&server, &server.token(Role::Spectator, "big")).await;
        let (sink, mut stream) = ws.split();
        let sender = keep_sending(
            sink,
            || Message::Binary(vec![0u8; 8192].into()),
            Duration::from_millis(1),
            Duration::from_secs(5),
        );
        let (code, _) = close_while_sending(&mut stream, Duration::from_secs(10)).await;
        assert_eq!(code, 1009);
        sender.abort();
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_at_five_times_the_rate_is_closed_and_answered_once_per_window() {
    let server = TestServer::start_with(|c| {
        c.ws.rate_limit_per_sec = 10;
        c.ws.rate_limit_burst = 10;
        c.ws.flood_window_ms = 1000;
        c.ws.flood_close_after = 30;
    })
    .await;
    let ws = raw_with(&server, &server.token(Role::Spectator, "fast")).await;
    let (sink, mut stream) = ws.split();
    let started = Instant::now();
    // 50 messages a second: five times the limit.
    let sender = keep_sending(
        sink,
        || ping(1),
        Duration::from_millis(20),
        Duration::from_secs(15),
    );
    let (code, limited) = close_while_sending(&mut stream, Duration::from_secs(15)).await;
    let windows = started.elapsed().as_millis() as u32 / 1000 + 1;
    assert_eq!(code, 1008, "persistently above the limit");
    assert!(
        limited >= 1 && limited <= windows,
        "{limited} answers in {windows} windows"
    );
    sender.abort();
    let (status, metrics) = http_get(server.addr, "/metrics HTTP/1.1").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("peloton_ws_rate_limited_dropped_total"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_socket_is_closed_and_a_busy_one_is_not() {
    let server = TestServer::start_with(|c| c.ws.idle_timeout_ms = 1000).await;
    let mut idle = raw_with(&server, &server.token(Role::Spectator, "idle")).await;
    let mut busy = raw_with(&server, &server.token(Role::Spectator, "busy")).await;
    let started = Instant::now();
    let busy_task = tokio::spawn(async move {
        for id in 0..12 {
            busy.send(ping(id)).await.unwrap();
            match next_data(&mut busy, Duration::from_secs(5)).await {
                Some(ServerFrame::Reply { .. }) => {}
                other => panic!("the busy socket is served: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let (code, _) = close_code_within(&mut idle, Duration::from_secs(10)).await;
    assert_eq!(code, 1001);
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "not before the idle timeout"
    );
    tokio::time::timeout(Duration::from_secs(20), busy_task)
        .await
        .unwrap()
        .unwrap();
    // A client's own close is not a protocol error: the busy socket went, one more drops
    // its connection and one closes properly.
    let client = raw_with(&server, &server.token(Role::Spectator, "leaver")).await;
    drop(client);
    let mut client = raw_with(&server, &server.token(Role::Spectator, "closer")).await;
    client.close(None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, metrics) = http_get(server.addr, "/metrics HTTP/1.1").await;
        if counter(&metrics, "peloton_ws_closes_total{code=\"client\"}") >= 3 {
            assert!(!metrics.contains("code=\"1002\""), "{metrics}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "client closes counted: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

/// A spectator that never reads, and the issue's slow reader that takes 512 bytes a second,
/// are each closed as too slow in time. One after the other in one test: the metrics that
/// tell the server gave up are the process's, shared by every server a test binary starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spectators_that_never_read_or_read_512_bytes_a_second_are_closed_as_too_slow() {
    closed_as_too_slow(None).await;
    closed_as_too_slow(Some(512)).await;
}

/// A stream that lets through at most `per_sec` bytes a second to its reader.
struct Throttled {
    /// The socket.
    inner: tokio::net::TcpStream,
    /// Bytes a second.
    per_sec: usize,
    /// Bytes still allowed in the current second.
    budget: usize,
    /// When the budget is refilled.
    refill: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl tokio::io::AsyncRead for Throttled {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        if self.per_sec == usize::MAX {
            return std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        if self.budget == 0 {
            if std::future::Future::poll(self.refill.as_mut(), cx).is_pending() {
                return Poll::Pending;
            }
            let next = tokio::time::Instant::now() + Duration::from_secs(1);
            self.refill.as_mut().reset(next);
            self.budget = self.per_sec;
        }
        let mut chunk = vec![0u8; self.budget.min(buf.remaining())];
        let mut limited = tokio::io::ReadBuf::new(&mut chunk);
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, &mut limited);
        if let Poll::Ready(Ok(())) = polled {
            let read = limited.filled().len();
            buf.put_slice(limited.filled());
            self.budget -= read;
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Throttled {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A spectator of a busy race that reads `per_sec` bytes a second (`None`: nothing) is
/// counted as closed with 4008 within the configured time, and its stream then ends.
async fn closed_as_too_slow(per_sec: Option<usize>) {
    let server = TestServer::start_with(|c| {
        c.race.tick_ms = 50;
        c.ws.write_timeout_ms = 1000;
        c.ws.slow_consumer_close_ms = 1500;
        c.ws.max_write_buffer_bytes = 64 << 20;
    })
    .await;
    // What the process had counted before this spectator: see the test above.
    let (_, metrics) = http_get(server.addr, "/metrics HTTP/1.1").await;
    let too_slow_before = counter(&metrics, "peloton_ws_closes_total{code=\"4008\"}");
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    // A snapshot of several MB, more than the kernel's socket buffers hold, so the server's
    // writes to a spectator that does not read really stall.
    let race_id = common::live_race_on(&mut admin, "Dense", dense_gpx(RIDE, 150), T0, 2).await;
    let mut riding = Vec::new();
    for bib in [1, 2] {
        riding.push(keep_riding(
            racer_phone(&server.url, &server.keys, &race_id, bib).await,
        ));
    }
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let stream = Throttled {
        inner: socket.connect(server.addr).await.unwrap(),
        // A never-reader reads its handshake at full speed, then simply stops reading.
        per_sec: per_sec.unwrap_or(usize::MAX),
        budget: per_sec.unwrap_or(usize::MAX),
        refill: Box::pin(tokio::time::sleep(Duration::from_secs(1))),
    };
    let token = server.token(Role::Spectator, "never-reads");
    let (mut slow, _) =
        tokio_tungstenite::client_async(upgrade(&server, &token, Codec::Json), stream)
            .await
            .unwrap();
    let subscribe = Codec::Json
        .encode_client(&ClientFrame {
            id: 1,
            request: Request::RaceSubscribe {
                race_id: race_id.clone(),
                since_seq: None,
            },
        })
        .unwrap();
    slow.send(subscribe).await.unwrap();
    // A slow reader keeps reading (at its pace) all along; a never-reader does not.
    let (slow, reader) = match per_sec {
        Some(_) => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let reader = tokio::spawn(async move {
                let mut slow = slow;
                let ended = loop {
                    match slow.next().await {
                        Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                        Some(Ok(_)) => continue,
                        Some(Err(_)) | None => break None,
                    }
                };
                let _ = tx.send(ended);
            });
            (None, Some((reader, rx)))
        }
        None => (Some(slow), None),
    };
    // Never read, until the server has given up on this socket: write timeout plus the
    // bounded close attempt and drain.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, metrics) = http_get(server.addr, "/metrics HTTP/1.1").await;
        if counter(&metrics, "peloton_ws_closes_total{code=\"4008\"}") > too_slow_before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never closed as too slow: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Now read: whatever was buffered, then the end of the stream (the close frame, if it
    // fitted behind the unsent data, or the end of the TCP stream), never a hang.
    let ended = match (slow, reader) {
        (Some(mut slow), _) => tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match slow.next().await {
                    Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => break None,
                }
            }
        })
        .await
        .expect("the socket ends"),
        (None, Some((reader, mut ended))) => {
            // At 512 B/s what the kernel still holds takes minutes to read: the server has
            // let go (counted above); the close frame, if it has arrived, is the 4008.
            reader.abort();
            ended.try_recv().ok().flatten()
        }
        (None, None) => None,
    };
    assert!(matches!(ended, None | Some(4008)), "{ended:?}");
    for rider in riding {
        rider.abort();
    }
    server.stop().await;
}
