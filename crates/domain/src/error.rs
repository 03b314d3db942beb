//! Typed errors that cross the wire.
//!
//! Every failure a client can see is an [`ErrorCode`] (stable, machine readable, part of the
//! protocol) plus a human message. Domain code returns [`Rejection`]s; the API layer passes
//! them to the client unchanged, so the same code means the same thing everywhere.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The stable, machine-readable reason a request failed.
///
/// The discriminant order is part of the binary protocol (a varint tag): append new codes at
/// the end, never reorder. PROTOCOL.md lists them with their meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame could not be decoded as a message of this protocol (garbage, truncated,
    /// JSON of the wrong shape).
    BadRequest,
    /// The frame decoded far enough to read a message type this server does not know.
    UnknownType,
    /// A field has a value outside its allowed range or format.
    InvalidArgument,
    /// The course file is not a usable GPX course.
    InvalidCourse,
    /// The addressed race (or other entity) does not exist.
    NotFound,
    /// The entity exists but its current state does not allow this command.
    InvalidTransition,
    /// The token's role or scope does not allow this message.
    Forbidden,
    /// The session's token has expired; refresh it or reconnect.
    TokenExpired,
    /// The presented token is not valid (bad signature, malformed, wrong subject).
    Unauthenticated,
    /// The socket sends faster than its rate limit.
    RateLimited,
    /// The server is starting up, shutting down, or a dependency is unavailable; retry later.
    Unavailable,
    /// A bug or storage failure on our side; the request had no effect.
    Internal,
    /// Spending more points than the balance holds.
    InsufficientPoints,
    /// A request id was used before for a different request.
    Conflict,
    /// The two people are not close enough for what was asked (an in-person connection).
    TooFar,
    /// A time the client supplied (a fix's `at_ms`, a mail envelope's `sent_at_ms`) is
    /// implausible: too far ahead of the server's clock, or before the window it could belong
    /// to. Kept apart from `invalid_argument` because the usual fix is the device's clock.
    BadTime,
}

impl ErrorCode {
    /// The snake_case name used in JSON, metrics labels and CLI output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::InvalidCourse => "invalid_course",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidTransition => "invalid_transition",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::InsufficientPoints => "insufficient_points",
            ErrorCode::Conflict => "conflict",
            ErrorCode::TooFar => "too_far",
            ErrorCode::BadTime => "bad_time",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused request: the code a program branches on and the message a person reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Rejection {
    /// Why, for programs.
    pub code: ErrorCode,
    /// Why, for people: names the field or state involved.
    pub message: String,
}

impl Rejection {
    /// Builds a rejection from a code and any displayable message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
        }
    }

    /// A field failed validation; the message should name the field.
    pub fn invalid(message: impl Into<String>) -> Self {
        Rejection::new(ErrorCode::InvalidArgument, message)
    }

    /// A storage or internal failure; details go to the log, the client gets a short reason.
    pub fn internal(message: impl Into<String>) -> Self {
        Rejection::new(ErrorCode::Internal, message)
    }
}
