//! WebSocket close codes the server uses (RFC 6455 §7.4.1), named once for the server that
//! sends them and the clients that act on them; PROTOCOL.md lists what each means.

/// Normal closure.
pub const NORMAL: u16 = 1000;
/// Server shutting down, or the socket was idle for `ws.idle_timeout_ms`.
pub const GOING_AWAY: u16 = 1001;
/// Malformed WebSocket framing.
pub const PROTOCOL_ERROR: u16 = 1002;
/// A frame type the subprotocol does not use (binary on JSON, text on binary).
pub const UNSUPPORTED_DATA: u16 = 1003;
/// A text frame that is not UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// Rate limit flood (`ws.flood_close_after` refusals within `ws.flood_window_ms`) or a
/// token expired more than `ws.token_expiry_grace_ms` ago.
pub const POLICY_VIOLATION: u16 = 1008;
/// A frame or message over the configured size.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// The server failed unexpectedly.
pub const INTERNAL_ERROR: u16 = 1011;
/// A spectator that never caught up with the race's ticks for
/// `ws.slow_consumer_close_ms`, or any socket that did not take our bytes for
/// `ws.write_timeout_ms` (attempted briefly: its buffers are full). (Private-use range;
/// 4000 + the nearest standard code, 1008.)
pub const TOO_SLOW: u16 = 4008;
/// The patrol session of this socket ended: the same user connected on another socket
/// (one session per user), or the device stopped reading its notices.
pub const SESSION_ENDED: u16 = 4009;
