//! Hostile and broken input over real sockets: every case gets a typed error reply or the
//! right close code, and the server keeps serving everyone else.

mod common;

use common::TestServer;
use futures_util::{SinkExt, StreamExt};
use peloton::auth::Role;
use peloton::error::ErrorCode;
use peloton::net::codec::Codec;
use peloton::net::protocol::{Reply, Request, ServerFrame};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A bare WebSocket (no Peloton client logic) with the welcome frame already read.
async fn raw(server: &TestServer, role: Role, codec: Codec) -> Ws {
    let mut request = format!("{}/ws", server.url).into_client_request().unwrap();
    let auth = HeaderValue::from_str(&format!("Bearer {}", server.token(role, "raw"))).unwrap();
    request.headers_mut().insert("Authorization", auth);
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(codec.subprotocol()),
    );
    let config = WebSocketConfig::default()
        .max_frame_size(None)
        .max_message_size(None);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), false)
        .await
        .unwrap();
    let welcome = next_frame(&mut ws, codec).await;
    assert!(matches!(welcome, ServerFrame::Push(_)), "{welcome:?}");
    ws
}

async fn next_message(ws: &mut Ws) -> Option<Message> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("server answers")
        {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(m)) => return Some(m),
            _ => return None,
        }
    }
}

async fn next_frame(ws: &mut Ws, codec: Codec) -> ServerFrame {
    let payload = match next_message(ws).await.expect("a frame") {
        Message::Binary(b) => b.to_vec(),
        Message::Text(t) => t.as_bytes().to_vec(),
        other => panic!("expected a data frame, got {other:?}"),
    };
    codec.decode_server(&payload).unwrap()
}

async fn expect_error(ws: &mut Ws, codec: Codec, id: Option<u64>, code: ErrorCode) {
    match next_frame(ws, codec).await {
        ServerFrame::Error { id: got, error } => {
            assert_eq!((got, error.code), (id, code), "{}", error.message);
            assert!(!error.message.is_empty());
        }
        other => panic!("expected error {code}, got {other:?}"),
    }
}

async fn expect_close(ws: &mut Ws, code: u16) {
    loop {
        match next_message(ws).await {
            Some(Message::Close(Some(frame))) => {
                assert_eq!(u16::from(frame.code), code, "reason: {}", frame.reason);
                return;
            }
            Some(Message::Close(None)) | None => panic!("closed without code {code}"),
            Some(_) => continue,
        }
    }
}

async fn still_serving(server: &TestServer) {
    let mut client = server.client(Role::Spectator, Codec::Binary).await;
    assert!(matches!(
        client.request(Request::Ping).await,
        Ok(Reply::Pong { .. })
    ));
}

#[tokio::test]
async fn undecodable_binary_frames_get_typed_errors_and_the_socket_stays_open() {
    let server = TestServer::start().await;
    let mut ws = raw(&server, Role::Admin, Codec::Binary).await;
    ws.send(Message::Binary(vec![].into())).await.unwrap();
    expect_error(&mut ws, Codec::Binary, None, ErrorCode::BadRequest).await;
    ws.send(Message::Binary(vec![0xff, 0xff, 0xff].into()))
        .await
        .unwrap();
    expect_error(&mut ws, Codec::Binary, None, ErrorCode::BadRequest).await;
    // id 5, race_get, string claiming 40 bytes with 2 present: truncated.
    ws.send(Message::Binary(vec![5, 5, 40, b'a', b'b'].into()))
        .await
        .unwrap();
    expect_error(&mut ws, Codec::Binary, Some(5), ErrorCode::BadRequest).await;
    ws.send(Message::Binary(vec![6, 77].into())).await.unwrap();
    expect_error(&mut ws, Codec::Binary, Some(6), ErrorCode::UnknownType).await;
    // A length prefix claiming 2^63 bytes must not allocate or panic.
    ws.send(Message::Binary(
        vec![7, 5, 253, 0, 0, 0, 0, 0, 0, 0, 0x80].into(),
    ))
    .await
    .unwrap();
    expect_error(&mut ws, Codec::Binary, Some(7), ErrorCode::BadRequest).await;
    ws.send(Message::Binary(vec![8, 0].into())).await.unwrap();
    assert!(matches!(
        next_frame(&mut ws, Codec::Binary).await,
        ServerFrame::Reply {
            id: 8,
            reply: Reply::Pong { .. }
        }
    ));
    server.stop().await;
}

#[tokio::test]
async fn json_of_the_wrong_shape_gets_typed_errors() {
    let server = TestServer::start().await;
    let mut ws = raw(&server, Role::Admin, Codec::Json).await;
    for (text, id, code) in [
        ("not json", None, ErrorCode::BadRequest),
        (r#"{"id":1}"#, Some(1), ErrorCode::BadRequest),
        (
            r#"{"id":2,"request":{"race_get":{"id":42}}}"#,
            Some(2),
            ErrorCode::BadRequest,
        ),
        (
            r#"{"id":3,"request":"teleport"}"#,
            Some(3),
            ErrorCode::UnknownType,
        ),
        (r#"{"id":-4,"request":"ping"}"#, None, ErrorCode::BadRequest),
        (r#"[1,2,3]"#, None, ErrorCode::BadRequest),
    ] {
        ws.send(Message::Text(text.into())).await.unwrap();
        expect_error(&mut ws, Codec::Json, id, code).await;
    }
    ws.send(Message::Text(r#"{"id":9,"request":"ping"}"#.into()))
        .await
        .unwrap();
    assert!(matches!(
        next_frame(&mut ws, Codec::Json).await,
        ServerFrame::Reply { id: 9, .. }
    ));
    server.stop().await;
}

#[tokio::test]
async fn wrong_frame_types_close_with_1003() {
    let server = TestServer::start().await;
    let mut ws = raw(&server, Role::Spectator, Codec::Json).await;
    ws.send(Message::Binary(vec![1, 0].into())).await.unwrap();
    expect_close(&mut ws, 1003).await;
    let mut ws = raw(&server, Role::Spectator, Codec::Binary).await;
    ws.send(Message::Text(r#"{"id":1,"request":"ping"}"#.into()))
        .await
        .unwrap();
    expect_close(&mut ws, 1003).await;
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn non_utf8_text_closes_with_1007() {
    let server = TestServer::start().await;
    let mut ws = raw(&server, Role::Spectator, Codec::Json).await;
    let frame = Frame::message(vec![0xc3, 0x28, 0xff], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(frame)).await.unwrap();
    expect_close(&mut ws, 1007).await;
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn oversized_frames_close_with_1009_for_every_role_limit() {
    let server = TestServer::start_with(|c| {
        c.ws.max_frame_bytes = 1024;
        c.ws.max_message_bytes = 1024;
        c.ws.admin_max_message_bytes = 4096;
    })
    .await;
    let mut ws = raw(&server, Role::Spectator, Codec::Binary).await;
    ws.send(Message::Binary(vec![0u8; 2048].into()))
        .await
        .unwrap();
    expect_close(&mut ws, 1009).await;
    let mut admin = raw(&server, Role::Admin, Codec::Binary).await;
    admin
        .send(Message::Binary(vec![0u8; 8192].into()))
        .await
        .unwrap();
    expect_close(&mut admin, 1009).await;
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn a_flood_beyond_the_rate_limit_is_refused_then_closed_with_1008() {
    let server = TestServer::start_with(|c| {
        c.ws.rate_limit_per_sec = 5;
        c.ws.rate_limit_burst = 5;
        c.ws.flood_close_after = 10;
    })
    .await;
    let mut ws = raw(&server, Role::Spectator, Codec::Binary).await;
    for id in 0..40u8 {
        if ws.send(Message::Binary(vec![id, 0].into())).await.is_err() {
            break;
        }
    }
    let (mut pongs, mut limited) = (0, 0);
    loop {
        match next_message(&mut ws).await {
            Some(Message::Binary(b)) => match Codec::Binary.decode_server(&b).unwrap() {
                ServerFrame::Reply { .. } => pongs += 1,
                ServerFrame::Error { error, .. } => {
                    assert_eq!(error.code, ErrorCode::RateLimited);
                    limited += 1;
                }
                other => panic!("{other:?}"),
            },
            Some(Message::Close(Some(frame))) => {
                assert_eq!(u16::from(frame.code), 1008);
                break;
            }
            other => panic!("expected close 1008, got {other:?}"),
        }
    }
    assert!((5..=7).contains(&pongs), "the burst is served: {pongs}");
    assert_eq!(
        limited, 1,
        "one rate_limited answer per ws.flood_window_ms, the rest dropped until the threshold"
    );
    still_serving(&server).await;
    server.stop().await;
}

/// WebSocket framing errors (here: a reserved bit set, which no extension negotiated) close
/// with 1002. Written as raw bytes because a well-behaved client library cannot send them.
#[tokio::test]
async fn broken_websocket_framing_closes_with_1002() {
    let server = TestServer::start().await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let handshake = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: peloton.v1.bin\r\nAuthorization: Bearer {}\r\n\r\n",
        server.addr,
        server.token(Role::Spectator, "raw")
    );
    tcp.write_all(handshake.as_bytes()).await.unwrap();
    // Read the 101 response head and the welcome frame.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(seen.starts_with(b"HTTP/1.1 101"));
    // FIN + RSV1 + binary opcode, masked, 2-byte payload: the ping request [8, 0] XOR the
    // mask [1, 2, 3, 4].
    let (payload, mask) = ([8u8, 0], [1u8, 2, 3, 4]);
    tcp.write_all(&[
        0xC2,
        0x82,
        mask[0],
        mask[1],
        mask[2],
        mask[3],
        payload[0] ^ mask[0],
        payload[1] ^ mask[1],
    ])
    .await
    .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
    seen.extend_from_slice(&rest);
    let close = seen
        .windows(2)
        .position(|w| w[0] == 0x88)
        .expect("a close frame");
    let code = u16::from_be_bytes([seen[close + 2], seen[close + 3]]);
    assert_eq!(code, 1002);
    still_serving(&server).await;
    server.stop().await;
}

/// Many misbehaving sockets at once do not stop a well-behaved one from being served.
#[tokio::test]
async fn abusers_do_not_starve_others() {
    let server = TestServer::start().await;
    let mut abusers = Vec::new();
    for _ in 0..20 {
        let mut ws = raw(&server, Role::Spectator, Codec::Binary).await;
        abusers.push(tokio::spawn(async move {
            for _ in 0..200 {
                if ws
                    .send(Message::Binary(vec![0xff; 64].into()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }));
    }
    still_serving(&server).await;
    for a in abusers {
        let _ = a.await;
    }
    still_serving(&server).await;
    server.stop().await;
}

/// A socket the client closes, politely or not, releases its session on the server.
#[tokio::test]
async fn closed_sockets_release_their_sessions() {
    let server = TestServer::start().await;
    let engine = server.server.as_ref().unwrap().engine.clone();
    let polite = server.client(Role::Spectator, Codec::Binary).await;
    let mut rude = raw(&server, Role::Spectator, Codec::Json).await;
    assert_eq!(engine.sessions.open(), 2);
    polite.close().await;
    rude.send(Message::Text(r#"{"id":1,"request":"ping"}"#.into()))
        .await
        .unwrap();
    drop(rude);
    for _ in 0..100 {
        if engine.sessions.open() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        engine.sessions.open(),
        0,
        "sessions linger after their sockets closed"
    );
    server.stop().await;
}
