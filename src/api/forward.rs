//! Cluster mode: a race request that must be answered by the node owning the race (its
//! lease holder) is sent there and its answer relayed, so a client may connect to any node.
//! Mail requests other than a submission are answered by the holder of the `mail` lease,
//! the one node that runs mission control (a submission is stored on mission control's
//! stream by whichever node takes it), through the same path.
//!
//! The envelope is the wire's own binary encoding, so nothing new needs a schema: the
//! caller's claims (JSON, length-prefixed), then the request as a `peloton.v1.bin` client
//! frame; the answer is one or two `peloton.v1.bin` server frames, length-prefixed: the
//! reply or error, then the push that follows it (a racer's new pace). The owner checks
//! role, expiry and scope again from the claims, as for its own sockets, and never forwards
//! a forwarded request: a node that lost the race meanwhile answers `unavailable` naming
//! the new owner, and the client retries.
//!
//! Not forwarded: subscriptions (this node's mirror of the race serves them,
//! `actors::race::mirror`) and replays (played here from the shared journals), the race
//! list and race creation (any node answers them).

use super::outcome::Outcome;
use super::race;
use crate::actors::mail::cluster::LEASE as MAIL_LEASE;
use crate::actors::race::lease_key;
use crate::api::rules::Scope;
use crate::auth::Claims;
use crate::engine::Engine;
use crate::error::{ErrorCode, Rejection};
use crate::ids::RaceId;
use crate::net::codec::Codec;
use crate::net::protocol::{ClientFrame, Request, ServerFrame, WireError};

/// What owns `request`'s answer: the lease whose holder answers it, and what it is, for
/// messages (`None`: this node answers it).
fn owner_lease(request: &Request, claims: &Claims) -> Option<(String, String)> {
    match request {
        Request::MailStatus { .. }
        | Request::MailList { .. }
        | Request::MailFailed { .. }
        | Request::MailRetry { .. }
        | Request::MailRetryAllDead => Some((MAIL_LEASE.to_owned(), "mission control".to_owned())),
        other => {
            owned_by_race(other, claims).map(|race| (lease_key(&race), format!("race {race}")))
        }
    }
}

/// The race whose owner must answer `request` (`None`: this node answers it).
fn owned_by_race(request: &Request, claims: &Claims) -> Option<RaceId> {
    let race = match request {
        Request::Fixes { .. } => claims.race.clone()?,
        Request::RaceSubscribe { .. } | Request::RaceReplay { .. } => return None,
        other => match race::rule(other).scope {
            Scope::Race(id) => id.to_owned(),
            Scope::Any | Scope::Global => return None,
        },
    };
    RaceId::parse(&race).ok()
}

/// In cluster mode, the answer of the node that owns `request`'s race (or mission
/// control), when that is another node (`None`: this node answers).
pub(super) async fn elsewhere(
    engine: &Engine,
    claims: &Claims,
    request: &Request,
) -> Option<Outcome> {
    let node = engine.cluster.as_ref()?;
    let (key, what) = owner_lease(request, claims)?;
    if node.leases.holds(&key) {
        return None;
    }
    let owner = match node.leases.holder_elsewhere(&key).await {
        Some(owner) => owner,
        // Mission control is nowhere yet (its owner died, the lease has not lapsed or
        // been taken): only its owner knows the jobs.
        None if key == MAIL_LEASE => {
            return Some(Outcome::Reply(Err(Rejection::new(
                ErrorCode::Unavailable,
                "mission control is changing nodes; retry",
            ))))
        }
        // Nobody serves it (this node takes it), or the bucket could not say (this node
        // tries, and says why not).
        None => return None,
    };
    let envelope = match envelope(claims, request) {
        Ok(envelope) => envelope,
        Err(e) => return Some(Outcome::Reply(Err(Rejection::internal(e)))),
    };
    let answer =
        crate::cluster::forward::ask(&node.link, &owner, crate::cluster::forward::API, envelope)
            .await;
    Some(match answer.and_then(|bytes| outcome(bytes.as_ref())) {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Reply(Err(Rejection::new(
            ErrorCode::Unavailable,
            format!("{what} is served by node {owner}, which did not answer ({e}); retry"),
        ))),
    })
}

/// What the owner answers for `outcome`, as bytes for the asking node.
pub(super) fn answer_bytes(outcome: Outcome) -> Vec<u8> {
    let frames = match outcome {
        Outcome::Reply(Ok(reply)) => vec![ServerFrame::Reply { id: 0, reply }],
        Outcome::Reply(Err(rejection)) => vec![refusal(rejection)],
        Outcome::ReplyThenPush { reply, push } => {
            vec![ServerFrame::Reply { id: 0, reply }, ServerFrame::Push(push)]
        }
        Outcome::Subscribed { .. } | Outcome::Replay { .. } | Outcome::StreamFile { .. } => {
            vec![refusal(Rejection::new(
                ErrorCode::Unavailable,
                "a stream is answered only by the node the socket is on",
            ))]
        }
    };
    let mut out = Vec::new();
    for frame in frames {
        match Codec::Binary.encode_server_bytes(&frame) {
            Ok(bytes) => push_part(&mut out, &bytes),
            Err(e) => tracing::error!("a forwarded answer could not be encoded: {e}"),
        }
    }
    out
}

/// A refusal of a forwarded request that could not be opened.
pub(super) fn unreadable(why: String) -> Vec<u8> {
    answer_bytes(Outcome::Reply(Err(Rejection::new(
        ErrorCode::BadRequest,
        why,
    ))))
}

/// A rejection as an error frame.
fn refusal(rejection: Rejection) -> ServerFrame {
    ServerFrame::Error {
        id: Some(0),
        error: WireError {
            code: rejection.code,
            message: rejection.message,
        },
    }
}

/// The claims and the request, as sent to the owner.
fn envelope(claims: &Claims, request: &Request) -> Result<Vec<u8>, String> {
    let claims = serde_json::to_vec(claims).map_err(|e| e.to_string())?;
    let frame = Codec::Binary.encode_client_bytes(&ClientFrame {
        id: 0,
        request: request.clone(),
    })?;
    let mut out = Vec::with_capacity(8 + claims.len() + frame.len());
    push_part(&mut out, &claims);
    push_part(&mut out, &frame);
    Ok(out)
}

/// The claims and request of an envelope.
pub(super) fn open(bytes: &[u8]) -> Result<(Claims, Request), String> {
    let parts = parts(bytes)?;
    let [claims, frame] = parts.as_slice() else {
        return Err(format!(
            "a forwarded request has {} parts, not 2",
            parts.len()
        ));
    };
    let claims: Claims = serde_json::from_slice(claims).map_err(|e| format!("claims: {e}"))?;
    let frame = Codec::Binary
        .decode_client(frame)
        .map_err(|e| format!("request: {}", e.message))?;
    Ok((claims, frame.request))
}

/// The outcome an owner's answer carries.
fn outcome(bytes: &[u8]) -> Result<Outcome, String> {
    let mut frames = Vec::new();
    for part in parts(bytes)? {
        frames.push(Codec::Binary.decode_server(part)?);
    }
    match (frames.pop(), frames.pop()) {
        (Some(ServerFrame::Reply { reply, .. }), None) => Ok(Outcome::Reply(Ok(reply))),
        (Some(ServerFrame::Error { error, .. }), None) => Ok(Outcome::Reply(Err(Rejection::new(
            error.code,
            error.message,
        )))),
        (Some(ServerFrame::Push(push)), Some(ServerFrame::Reply { reply, .. })) => {
            Ok(Outcome::ReplyThenPush { reply, push })
        }
        _ => Err("an answer of unexpected frames".into()),
    }
}

/// Appends `part` with its length (u32, big-endian).
fn push_part(out: &mut Vec<u8>, part: &[u8]) {
    let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&part[..len as usize]);
}

/// The length-prefixed parts of `bytes`; refused when a length runs past the end.
fn parts(mut bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut parts = Vec::new();
    while !bytes.is_empty() {
        let Some((len, rest)) = bytes.split_first_chunk::<4>() else {
            return Err("a part without its length".into());
        };
        let len = u32::from_be_bytes(*len) as usize;
        if len > rest.len() {
            return Err("a part runs past the end".into());
        }
        let (part, rest) = rest.split_at(len);
        parts.push(part);
        bytes = rest;
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;
    use crate::net::protocol::{Push, Reply};

    fn claims() -> Claims {
        crate::auth::claims_for(Role::Racer, "r1-7", Some("r1"), 1_000, 600)
    }

    #[test]
    fn an_envelope_opens_to_what_was_sent() {
        let request = Request::RaceStandings {
            race_id: "r1".into(),
        };
        let bytes = envelope(&claims(), &request).unwrap();
        let (opened_claims, opened) = open(&bytes).unwrap();
        assert_eq!(opened_claims, claims());
        assert_eq!(opened, request);
        assert!(open(&bytes[..bytes.len() - 1]).is_err(), "cut short");
        assert!(open(&[0, 0, 0, 9, 1]).is_err(), "a length past the end");
    }

    #[test]
    fn which_requests_the_owner_answers() {
        let racer = claims();
        let fixes = Request::Fixes { fixes: Vec::new() };
        assert_eq!(owned_by_race(&fixes, &racer), RaceId::parse("r1").ok());
        let standings = Request::RaceStandings {
            race_id: "r2".into(),
        };
        assert_eq!(owned_by_race(&standings, &racer), RaceId::parse("r2").ok());
        assert_eq!(owned_by_race(&Request::RaceList, &racer), None);
        assert_eq!(owned_by_race(&Request::Ping, &racer), None);
        let mail = Request::MailList {
            state: None,
            limit: 10,
        };
        assert_eq!(
            owner_lease(&mail, &racer).map(|(key, _)| key),
            Some("mail".into())
        );
        assert_eq!(
            owner_lease(&standings, &racer).map(|(key, _)| key),
            Some("race.r2".into())
        );
        let submit = Request::MailSubmit(crate::net::protocol::MailEnvelope {
            correlation_id: "c".into(),
            sequence: 1,
            sent_at_ms: 0,
            messages: Vec::new(),
        });
        assert_eq!(
            owner_lease(&submit, &racer),
            None,
            "any node stores a submission"
        );
    }

    #[test]
    fn an_answer_carries_a_reply_its_push_or_an_error() {
        let mut bytes = Vec::new();
        let reply = ServerFrame::Reply {
            id: 0,
            reply: Reply::Pong { server_time_ms: 1 },
        };
        push_part(
            &mut bytes,
            &Codec::Binary.encode_server_bytes(&reply).unwrap(),
        );
        assert!(matches!(
            outcome(&bytes),
            Ok(Outcome::Reply(Ok(Reply::Pong { .. })))
        ));
        let push = ServerFrame::Push(Push::Pace {
            interval_ms: 5000,
            reason: "cruise".into(),
        });
        push_part(
            &mut bytes,
            &Codec::Binary.encode_server_bytes(&push).unwrap(),
        );
        assert!(matches!(outcome(&bytes), Ok(Outcome::ReplyThenPush { .. })));
        let refused = refusal(Rejection::new(ErrorCode::Unavailable, "later"));
        let mut bytes = Vec::new();
        push_part(
            &mut bytes,
            &Codec::Binary.encode_server_bytes(&refused).unwrap(),
        );
        match outcome(&bytes) {
            Ok(Outcome::Reply(Err(rejection))) => {
                assert_eq!(rejection.code, ErrorCode::Unavailable)
            }
            _ => panic!("an error frame is a refusal"),
        }
    }
}
