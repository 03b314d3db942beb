//! The socket's own requests (`ping`, `refresh_token`), which every role may send whatever
//! its scope, and the tokens the server signs itself: guest tokens for the spectator page
//! and share links. What those tokens contain is [`crate::auth`]'s rule; this module
//! decides when they are handed out and signs them.

use super::rules::{Rule, Scope, ANYONE, NOBODY};
use crate::auth::{guest_claims, Claims, TokenError};
use crate::engine::Engine;
use crate::error::{ErrorCode, Rejection};
use crate::net::protocol::{Reply, Request};
use crate::time::now_ms;

/// Who may send which of this module's requests.
pub(super) fn rule(request: &Request) -> Rule<'_> {
    match request {
        Request::Ping => Rule::new(ANYONE, Scope::Any),
        // The way out of an expired token, so it is served after the expiry.
        Request::RefreshToken { .. } => Rule::new(ANYONE, Scope::Any).after_expiry(),
        _ => Rule::new(NOBODY, Scope::Global),
    }
}

/// Answers `ping` and `refresh_token`; a refresh replaces `claims`.
pub(super) fn handle(
    engine: &Engine,
    claims: &mut Claims,
    request: Request,
) -> Result<Reply, Rejection> {
    match request {
        Request::Ping => Ok(Reply::Pong {
            server_time_ms: now_ms(),
        }),
        Request::RefreshToken { token } => refresh(engine, claims, &token),
        other => Err(Rejection::internal(format!(
            "{} is not a token request",
            other.type_name()
        ))),
    }
}

/// A refresh keeps who the socket is: only the expiry may change.
fn refresh(engine: &Engine, claims: &mut Claims, token: &str) -> Result<Reply, Rejection> {
    let fresh = engine.keys.verify(token).map_err(|e| match e {
        TokenError::Expired => {
            Rejection::new(ErrorCode::TokenExpired, "the new token has already expired")
        }
        other => Rejection::new(ErrorCode::Unauthenticated, other.to_string()),
    })?;
    if fresh.sub != claims.sub || fresh.role != claims.role || fresh.race != claims.race {
        return Err(Rejection::new(
            ErrorCode::Forbidden,
            "a refreshed token must have the same subject, role and race as the socket's",
        ));
    }
    let expires_at_ms = fresh.expires_at_ms();
    *claims = fresh;
    Ok(Reply::TokenRefreshed { expires_at_ms })
}

/// A token the server signed for someone who did not bring one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    /// The signed token.
    pub token: String,
    /// Its expiry, ms since the epoch, for the client to refresh or fetch another before.
    pub expires_at_ms: i64,
}

/// Signs `claims`; a failure is internal (the key is the server's own).
pub(super) fn mint(engine: &Engine, claims: &Claims, what: &str) -> Result<Minted, Rejection> {
    let token = engine
        .keys
        .issue(claims)
        .map_err(|e| Rejection::internal(format!("cannot sign a {what}: {e}")))?;
    Ok(Minted {
        token,
        expires_at_ms: claims.expires_at_ms(),
    })
}

/// Whether this server hands out guest tokens at all (`web.public_races`); `forbidden`
/// otherwise, since a private race is watched through a share link. Checked before any
/// per-address budget is spent.
pub fn guests_welcome(engine: &Engine) -> Result<(), Rejection> {
    if engine.config.web.public_races {
        Ok(())
    } else {
        Err(Rejection::new(
            ErrorCode::Forbidden,
            "races on this server are not public; open a share link",
        ))
    }
}

/// A guest token for the spectator page, as [`crate::auth::guest_claims`] defines it,
/// living `web.guest_token_ttl_secs`.
pub fn guest_token(engine: &Engine) -> Result<Minted, Rejection> {
    let claims = guest_claims(now_ms() / 1000, engine.config.web.guest_token_ttl_secs);
    mint(engine, &claims, "guest token")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn anyone_pings_and_refreshes_and_only_a_refresh_outlives_the_token() {
        let refresh = Request::RefreshToken { token: "t".into() };
        for role in Role::ALL {
            assert!(rule(&Request::Ping).permits(role));
            assert!(rule(&refresh).permits(role));
        }
        assert!(!rule(&Request::Ping).after_expiry);
        assert!(rule(&refresh).after_expiry);
        assert_eq!(rule(&refresh).scope, Scope::Any);
        assert!(!rule(&Request::Backup).permits(Role::Admin), "not ours");
    }
}
