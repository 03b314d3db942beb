//! The two encodings of protocol v1, chosen per socket by WebSocket subprotocol:
//!
//! - `peloton.v1.bin`: binary frames; bincode 2 standard configuration over serde
//!   (little-endian, LEB-style varints as PROTOCOL.md specifies byte by byte).
//! - `peloton.v1.json`: text frames; the same model as JSON (serde's external tagging).
//!
//! Decoding never panics and never trusts a length prefix beyond [`MAX_DECODE_BYTES`]; a
//! frame that does not decode yields a [`DecodeError`] carrying the request id when it could
//! be read, so the error reply can still be matched to its request.

use crate::protocol::{ClientFrame, Request, ServerFrame};
use crate::ErrorCode;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

/// Subprotocol name of the binary encoding.
pub const BINARY_SUBPROTOCOL: &str = "peloton.v1.bin";
/// Subprotocol name of the JSON encoding.
pub const JSON_SUBPROTOCOL: &str = "peloton.v1.json";
/// Upper bound on what any length prefix may claim while decoding; also the ceiling for
/// `ws.admin_max_message_bytes`.
pub const MAX_DECODE_BYTES: usize = 64 * 1024 * 1024;

/// Which encoding a socket speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// `peloton.v1.bin`.
    Binary,
    /// `peloton.v1.json`.
    Json,
}

/// A frame that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The request id, if the frame got that far.
    pub id: Option<u64>,
    /// `bad_request` or `unknown_type`.
    pub code: ErrorCode,
    /// What was wrong, for people.
    pub message: String,
}

type BincodeConfig = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_DECODE_BYTES>,
>;

fn bincode_config() -> BincodeConfig {
    bincode::config::standard().with_limit::<MAX_DECODE_BYTES>()
}

impl Codec {
    /// The subprotocol name.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Codec::Binary => BINARY_SUBPROTOCOL,
            Codec::Json => JSON_SUBPROTOCOL,
        }
    }

    /// The first supported name in a `Sec-WebSocket-Protocol` header value, in the client's
    /// order of preference.
    pub fn negotiate(header: &str) -> Option<Codec> {
        header
            .split(',')
            .map(str::trim)
            .find_map(|name| match name {
                BINARY_SUBPROTOCOL => Some(Codec::Binary),
                JSON_SUBPROTOCOL => Some(Codec::Json),
                _ => None,
            })
    }

    /// Encodes a server frame as a WebSocket message of this codec's frame type.
    pub fn encode_server(self, frame: &ServerFrame) -> Result<Message, String> {
        self.encode(frame)
    }

    /// Encodes a client frame (for [`super::client`] and tests).
    pub fn encode_client(self, frame: &ClientFrame) -> Result<Message, String> {
        self.encode(frame)
    }

    /// Encodes a client frame to raw payload bytes.
    pub fn encode_client_bytes(self, frame: &ClientFrame) -> Result<Vec<u8>, String> {
        self.encode_bytes(frame)
    }

    /// Encodes a server frame to raw payload bytes (for benchmarks and size reports).
    pub fn encode_server_bytes(self, frame: &ServerFrame) -> Result<Vec<u8>, String> {
        self.encode_bytes(frame)
    }

    fn encode_bytes<T: Serialize>(self, value: &T) -> Result<Vec<u8>, String> {
        match self {
            Codec::Binary => {
                bincode::serde::encode_to_vec(value, bincode_config()).map_err(|e| e.to_string())
            }
            Codec::Json => serde_json::to_vec(value).map_err(|e| e.to_string()),
        }
    }

    fn encode<T: Serialize>(self, value: &T) -> Result<Message, String> {
        let bytes = self.encode_bytes(value)?;
        Ok(match self {
            Codec::Binary => Message::Binary(Bytes::from(bytes)),
            // serde_json only writes UTF-8.
            Codec::Json => {
                Message::Text(String::from_utf8(bytes).map_err(|e| e.to_string())?.into())
            }
        })
    }

    /// Decodes a client frame's payload.
    pub fn decode_client(self, payload: &[u8]) -> Result<ClientFrame, DecodeError> {
        match self {
            Codec::Binary => decode_binary_client(payload),
            Codec::Json => decode_json_client(payload),
        }
    }

    /// Decodes a server frame's payload (for [`super::client`]).
    pub fn decode_server(self, payload: &[u8]) -> Result<ServerFrame, String> {
        match self {
            Codec::Binary => decode_binary_exact(payload),
            Codec::Json => serde_json::from_slice(payload).map_err(|e| e.to_string()),
        }
    }
}

/// Decodes with a bincode limit tied to the payload's size. bincode allocates a string's or
/// byte buffer's claimed length *before* checking those bytes arrived, so under the global
/// [`MAX_DECODE_BYTES`] limit alone a 12-byte frame could make it allocate (and zero) tens
/// of megabytes (found by the fuzzer, `peloton::fuzz`). It charges its limit at most 8
/// bytes per byte it reads (a one-byte varint stands for a u64), so a limit of 8 × the
/// payload never refuses a valid frame; limits are types, hence the buckets.
fn decode_bounded<T: DeserializeOwned>(
    payload: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    const SMALL: usize = 4 * 1024;
    const MEDIUM: usize = 256 * 1024;
    const LARGE: usize = 16 * 1024 * 1024;
    fn with_limit<T: DeserializeOwned, const LIMIT: usize>(
        payload: &[u8],
    ) -> Result<(T, usize), bincode::error::DecodeError> {
        bincode::serde::decode_from_slice::<T, _>(
            payload,
            bincode::config::standard().with_limit::<LIMIT>(),
        )
    }
    match payload.len().saturating_mul(8) {
        claim if claim <= SMALL => with_limit::<T, SMALL>(payload),
        claim if claim <= MEDIUM => with_limit::<T, MEDIUM>(payload),
        claim if claim <= LARGE => with_limit::<T, LARGE>(payload),
        _ => bincode::serde::decode_from_slice::<T, _>(payload, bincode_config()),
    }
}

fn decode_binary_exact<T: DeserializeOwned>(payload: &[u8]) -> Result<T, String> {
    let (value, used) = decode_bounded::<T>(payload).map_err(|e| e.to_string())?;
    if used != payload.len() {
        return Err(format!(
            "{} bytes after the end of the message",
            payload.len() - used
        ));
    }
    Ok(value)
}

/// Reads the id first so that even a frame with an unknown or broken body gets an error
/// reply the client can match.
fn decode_binary_client(payload: &[u8]) -> Result<ClientFrame, DecodeError> {
    let broken = |id, message: String| DecodeError {
        id,
        code: ErrorCode::BadRequest,
        message,
    };
    let (id, used) = decode_bounded::<u64>(payload)
        .map_err(|e| broken(None, format!("cannot read the request id: {e}")))?;
    let body = &payload[used..];
    if let Ok((tag, _)) = decode_bounded::<u32>(body) {
        if tag as usize >= Request::TYPES.len() {
            return Err(DecodeError {
                id: Some(id),
                code: ErrorCode::UnknownType,
                message: format!(
                    "unknown request type tag {tag}; this server knows 0..={}",
                    Request::TYPES.len() - 1
                ),
            });
        }
    }
    let request = decode_binary_exact::<Request>(body)
        .map_err(|e| broken(Some(id), format!("malformed request: {e}")))?;
    Ok(ClientFrame { id, request })
}

fn decode_json_client(payload: &[u8]) -> Result<ClientFrame, DecodeError> {
    match serde_json::from_slice::<ClientFrame>(payload) {
        Ok(frame) => Ok(frame),
        Err(e) => {
            // Read what we can to answer precisely: the id, and whether the type is unknown.
            let value: Option<serde_json::Value> = serde_json::from_slice(payload).ok();
            let id = value
                .as_ref()
                .and_then(|v| v.get("id"))
                .and_then(serde_json::Value::as_u64);
            let type_name = value
                .as_ref()
                .and_then(|v| v.get("request"))
                .and_then(|r| match r {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Object(o) if o.len() == 1 => o.keys().next().cloned(),
                    _ => None,
                });
            match type_name {
                Some(name) if !Request::TYPES.contains(&name.as_str()) => Err(DecodeError {
                    id,
                    code: ErrorCode::UnknownType,
                    message: format!("unknown request type `{name}`"),
                }),
                _ => Err(DecodeError {
                    id,
                    code: ErrorCode::BadRequest,
                    message: format!("malformed request: {e}"),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Reply, WireError};
    use proptest::prelude::*;

    /// One request of every type: the same samples the fuzz targets mutate.
    fn sample_requests() -> Vec<Request> {
        crate::samples::sample_requests()
    }

    #[test]
    fn every_request_round_trips_in_both_codecs_and_tags_match_type_names() {
        for (tag, request) in sample_requests().into_iter().enumerate() {
            assert_eq!(request.type_name(), Request::TYPES[tag]);
            let frame = ClientFrame { id: 300, request };
            for codec in [Codec::Binary, Codec::Json] {
                let bytes = codec.encode_client_bytes(&frame).unwrap();
                assert_eq!(codec.decode_client(&bytes).unwrap(), frame);
            }
            let bytes = Codec::Binary.encode_client_bytes(&frame).unwrap();
            // id 300 is a 3-byte varint (251, u16 LE); the tag follows as one byte.
            assert_eq!(&bytes[..4], &[251, 0x2c, 0x01, tag as u8]);
        }
    }

    #[test]
    fn ping_is_two_bytes_on_the_wire() {
        let bytes = Codec::Binary
            .encode_client_bytes(&ClientFrame {
                id: 7,
                request: Request::Ping,
            })
            .unwrap();
        assert_eq!(bytes, vec![7, 0]);
        let json = Codec::Json
            .encode_client_bytes(&ClientFrame {
                id: 7,
                request: Request::Ping,
            })
            .unwrap();
        assert_eq!(json, br#"{"id":7,"request":"ping"}"#);
    }

    #[test]
    fn broken_frames_are_classified_with_their_id() {
        assert_eq!(Codec::Binary.decode_client(&[]).unwrap_err().id, None);
        let unknown = Codec::Binary.decode_client(&[9, 200]).unwrap_err();
        assert_eq!(
            (unknown.id, unknown.code),
            (Some(9), ErrorCode::UnknownType)
        );
        let truncated = Codec::Binary.decode_client(&[9, 2, 5, b'a']).unwrap_err();
        assert_eq!(
            (truncated.id, truncated.code),
            (Some(9), ErrorCode::BadRequest)
        );
        let trailing = Codec::Binary.decode_client(&[9, 0, 0]).unwrap_err();
        assert_eq!(trailing.code, ErrorCode::BadRequest);
        let huge_claim = Codec::Binary
            .decode_client(&[9, 1, 253, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f])
            .unwrap_err();
        assert_eq!(huge_claim.code, ErrorCode::BadRequest);

        let unknown = Codec::Json
            .decode_client(br#"{"id":4,"request":"fly"}"#)
            .unwrap_err();
        assert_eq!(
            (unknown.id, unknown.code),
            (Some(4), ErrorCode::UnknownType)
        );
        let shape = Codec::Json
            .decode_client(br#"{"id":4,"request":{"race_get":{"id":5}}}"#)
            .unwrap_err();
        assert_eq!((shape.id, shape.code), (Some(4), ErrorCode::BadRequest));
        assert_eq!(Codec::Json.decode_client(b"[1,2").unwrap_err().id, None);
    }

    #[test]
    fn server_frames_round_trip() {
        let frames = [
            ServerFrame::Reply {
                id: 1,
                reply: Reply::Pong { server_time_ms: 5 },
            },
            ServerFrame::Error {
                id: None,
                error: WireError {
                    code: ErrorCode::Forbidden,
                    message: "no".into(),
                },
            },
        ];
        for frame in frames {
            for codec in [Codec::Binary, Codec::Json] {
                let bytes = codec.encode_server_bytes(&frame).unwrap();
                assert_eq!(codec.decode_server(&bytes).unwrap(), frame);
            }
        }
    }

    #[test]
    fn a_lying_length_prefix_allocates_nothing_like_its_claim() {
        // id 7, race_start, then a string claiming 47 MB (a u32 varint) and one byte of it:
        // refused before the claim is allocated, because the limit follows the frame's size.
        let frame = [7, 6, 252, 0xa0, 0xd5, 0xcd, 0x02, b'A'];
        let error = Codec::Binary.decode_client(&frame).unwrap_err();
        assert_eq!((error.id, error.code), (Some(7), ErrorCode::BadRequest));
        assert!(
            error.message.to_lowercase().contains("limit"),
            "{}",
            error.message
        );
    }

    #[test]
    fn frames_of_one_byte_varints_fit_their_limit() {
        // The densest claims per byte: fixes of zeros (8 bytes of limit for a 1-byte i64).
        let fix = crate::protocol::WireFix {
            at_ms: 0,
            lat_e7: 0,
            lon_e7: 0,
            accuracy_dm: 0,
            speed_cmps: None,
            elevation_dm: None,
        };
        for n in [0, 1, 100, 700, 40_000] {
            let frame = ClientFrame {
                id: 0,
                request: Request::Fixes {
                    fixes: vec![fix; n],
                },
            };
            let bytes = Codec::Binary.encode_client_bytes(&frame).unwrap();
            assert_eq!(Codec::Binary.decode_client(&bytes).unwrap(), frame);
        }
    }

    #[test]
    fn negotiation_follows_client_preference() {
        assert_eq!(
            Codec::negotiate("peloton.v1.json, peloton.v1.bin"),
            Some(Codec::Json)
        );
        assert_eq!(
            Codec::negotiate("chat, peloton.v1.bin"),
            Some(Codec::Binary)
        );
        assert_eq!(Codec::negotiate("peloton.v2.bin"), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Arbitrary bytes never panic either decoder.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Codec::Binary.decode_client(&bytes);
            let _ = Codec::Json.decode_client(&bytes);
            let _ = Codec::Binary.decode_server(&bytes);
            let _ = Codec::Json.decode_server(&bytes);
        }

        /// Valid frames with random mutations never panic and never decode to garbage ids.
        #[test]
        fn mutated_frames_never_panic(index in 0usize..17, id in any::<u64>(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
            let frame = ClientFrame { id, request: sample_requests().swap_remove(index) };
            for codec in [Codec::Binary, Codec::Json] {
                let mut bytes = codec.encode_client_bytes(&frame).unwrap();
                for (at, value) in &flips {
                    let i = at.index(bytes.len());
                    bytes[i] = *value;
                }
                let _ = codec.decode_client(&bytes);
            }
        }
    }
}
