//! The Rust client of protocol v1, used by the admin CLI, the simulators and the tests.
//!
//! One socket, one request at a time: [`Client::request`] sends a frame and reads until the
//! reply with the same id arrives, keeping any pushes that arrive meanwhile for
//! [`Client::next_push`]. Every failure is a typed [`ClientError`].

use crate::codec::Codec;
use crate::protocol::{
    BackupInfo, ClientFrame, Push, Reply, Request, ServerFrame, Welcome, WireError,
    PROTOCOL_VERSION,
};
use crate::ErrorCode;
use futures_util::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not a usable `ws://` address.
    #[error("bad server address `{0}`: {1}")]
    BadUrl(String, String),
    /// No connection (refused, DNS, timeout).
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    /// The server answered the upgrade with an HTTP error (401 for bad tokens).
    #[error("server refused the connection with HTTP {status}: {body}")]
    Http {
        /// HTTP status.
        status: u16,
        /// Response body (a JSON `code`/`message` object).
        body: String,
    },
    /// The server answered the request with a typed error.
    #[error("{}: {}", .0.code, .0.message)]
    Server(WireError),
    /// The server closed the socket.
    #[error("connection closed{}", .0.as_ref().map(|(c, r)| format!(" with code {c}: {r}")).unwrap_or_default())]
    Closed(Option<(u16, String)>),
    /// A frame from the server did not decode, or the server broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// No reply in time.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// Local I/O (writing a backup file).
    #[error("{0}")]
    Io(String),
}

impl ClientError {
    /// The server's error code, when the server refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server(e) => Some(e.code),
            _ => None,
        }
    }
}

/// A connected client.
pub struct Client {
    /// The socket.
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// This socket's encoding.
    codec: Codec,
    /// Next request id.
    next_id: u64,
    /// Pushes received while waiting for replies.
    pushes: VecDeque<Push>,
    /// What the server said on connect.
    welcome: Welcome,
    /// How long to wait for a reply.
    timeout: Duration,
}

/// Read and write buffer per client socket.
const CLIENT_BUFFER_BYTES: usize = 8 * 1024;

/// Turns `ws://host:port` (or `…/ws`) into the endpoint URL.
pub fn endpoint(server: &str) -> String {
    let trimmed = server.trim_end_matches('/');
    if trimmed.ends_with("/ws") {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/ws")
    }
}

impl Client {
    /// Connects to `server` (`ws://HOST:PORT`) with `token`, speaking `codec`.
    pub async fn connect(server: &str, token: &str, codec: Codec) -> Result<Client, ClientError> {
        let url = endpoint(server);
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| ClientError::BadUrl(url.clone(), e.to_string()))?;
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ClientError::BadUrl(url.clone(), "token has invalid characters".into()))?;
        request.headers_mut().insert("Authorization", bearer);
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(codec.subprotocol()),
        );
        // Small buffers: the simulator opens thousands of these; large messages still fit,
        // the buffer only sets how much is read per call.
        let config = WebSocketConfig::default()
            .read_buffer_size(CLIENT_BUFFER_BYTES)
            .write_buffer_size(CLIENT_BUFFER_BYTES)
            .max_message_size(Some(crate::codec::MAX_DECODE_BYTES))
            .max_frame_size(Some(crate::codec::MAX_DECODE_BYTES));
        let connecting = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
        let (ws, _) = match tokio::time::timeout(Duration::from_secs(10), connecting).await {
            Err(_) => return Err(ClientError::Connect(url, "timed out".into())),
            Ok(Err(WsError::Http(response))) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                return Err(ClientError::Http { status, body });
            }
            Ok(Err(e)) => return Err(ClientError::Connect(url, e.to_string())),
            Ok(Ok(pair)) => pair,
        };
        let mut client = Client {
            ws,
            codec,
            next_id: 1,
            pushes: VecDeque::new(),
            welcome: Welcome {
                protocol: 0,
                server_version: String::new(),
                role: crate::Role::Spectator,
                sub: String::new(),
                race: None,
                expires_at_ms: 0,
            },
            timeout: Duration::from_secs(60),
        };
        match client.read_frame().await? {
            ServerFrame::Push(Push::Welcome(welcome)) if welcome.protocol == PROTOCOL_VERSION => {
                client.welcome = welcome
            }
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected a v{PROTOCOL_VERSION} welcome, got {other:?}"
                )))
            }
        }
        Ok(client)
    }

    /// Connects to the first of `servers` that answers (a cluster's nodes, as
    /// `GET /api/nodes` lists them: PROTOCOL.md section 19): the client and which one it
    /// is; the last failure when none answers. A client whose node died calls it with the
    /// others, then subscribes again with the last `seq` it applied.
    pub async fn connect_any(
        servers: &[String],
        token: &str,
        codec: Codec,
    ) -> Result<(Client, usize), ClientError> {
        let mut last = ClientError::Protocol("no server to connect to".into());
        for (index, server) in servers.iter().enumerate() {
            match Client::connect(server, token, codec).await {
                Ok(client) => return Ok((client, index)),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// What the server said about this session on connect.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Changes how long [`Client::request`] waits for a reply.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends `request` and waits for its reply.
    pub async fn request(&mut self, request: Request) -> Result<Reply, ClientError> {
        let id = self.send(request).await?;
        self.wait_reply(id).await
    }

    /// Sends `request` without waiting; returns its id.
    pub async fn send(&mut self, request: Request) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let message = self
            .codec
            .encode_client(&ClientFrame { id, request })
            .map_err(ClientError::Protocol)?;
        self.ws
            .send(message)
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(id)
    }

    /// Reads until the reply to `id`, keeping pushes.
    pub async fn wait_reply(&mut self, id: u64) -> Result<Reply, ClientError> {
        let limit = self.timeout;
        tokio::time::timeout(limit, async {
            loop {
                match self.read_frame().await? {
                    ServerFrame::Reply { id: got, reply } if got == id => return Ok(reply),
                    ServerFrame::Error { id: got, error } if got == Some(id) || got.is_none() => {
                        return Err(ClientError::Server(error))
                    }
                    ServerFrame::Push(push) => self.pushes.push_back(push),
                    _ => {}
                }
            }
        })
        .await
        .map_err(|_| ClientError::Timeout(limit))?
    }

    /// A push that already arrived (while waiting for a reply), without waiting for more.
    pub fn queued_push(&mut self) -> Option<Push> {
        self.pushes.pop_front()
    }

    /// The next push, waiting up to `limit`.
    pub async fn next_push(&mut self, limit: Duration) -> Result<Push, ClientError> {
        if let Some(push) = self.pushes.pop_front() {
            return Ok(push);
        }
        tokio::time::timeout(limit, async {
            loop {
                if let ServerFrame::Push(push) = self.read_frame().await? {
                    return Ok(push);
                }
            }
        })
        .await
        .map_err(|_| ClientError::Timeout(limit))?
    }

    /// Downloads a consistent backup into `out`, checking offsets and the CRC.
    pub async fn backup(
        &mut self,
        out: &mut impl std::io::Write,
    ) -> Result<BackupInfo, ClientError> {
        let id = self.send(Request::Backup).await?;
        let mut written = 0u64;
        let info = tokio::time::timeout(self.timeout, async {
            loop {
                match self.read_frame().await? {
                    ServerFrame::Push(Push::BackupChunk {
                        request_id,
                        offset,
                        data,
                    }) if request_id == id => {
                        if offset != written {
                            return Err(ClientError::Protocol(format!(
                                "backup chunk at {offset}, expected {written}"
                            )));
                        }
                        out.write_all(&data)
                            .map_err(|e| ClientError::Io(e.to_string()))?;
                        written += data.len() as u64;
                    }
                    ServerFrame::Reply {
                        id: got,
                        reply: Reply::BackupDone(info),
                    } if got == id => return Ok(info),
                    ServerFrame::Error { id: got, error } if got == Some(id) => {
                        return Err(ClientError::Server(error))
                    }
                    ServerFrame::Push(push) => self.pushes.push_back(push),
                    other => {
                        return Err(ClientError::Protocol(format!(
                            "unexpected frame during backup: {}",
                            other.type_name()
                        )))
                    }
                }
            }
        })
        .await
        .map_err(|_| ClientError::Timeout(self.timeout))??;
        if info.bytes != written {
            return Err(ClientError::Protocol(format!(
                "backup is {} bytes, received {written}",
                info.bytes
            )));
        }
        Ok(info)
    }

    /// Closes the socket politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    async fn read_frame(&mut self) -> Result<ServerFrame, ClientError> {
        loop {
            let message = match self.ws.next().await {
                None => return Err(ClientError::Closed(None)),
                Some(Err(e)) => return Err(ClientError::Protocol(e.to_string())),
                Some(Ok(m)) => m,
            };
            let payload: Vec<u8> = match message {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Close(frame) => {
                    return Err(ClientError::Closed(
                        frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                    ));
                }
                _ => continue,
            };
            return self
                .codec
                .decode_server(&payload)
                .map_err(ClientError::Protocol);
        }
    }
}
