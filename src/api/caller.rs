//! Who is on the other end of one socket, as the API sees them between requests: the
//! token's claims (a refresh replaces them) and the domain sessions their socket holds
//! open (an officer's or citizen's patrol session), with the pushes those produce. The
//! network session keeps one and hands it to every [`super::handle`], so it never holds
//! a domain's handle itself.

use super::patrol::{next_push, open_on_connect};
use crate::actors::patrol::PatrolLink;
use crate::auth::Claims;
use crate::engine::Engine;
use crate::net::protocol::Push;

/// One socket's caller.
pub struct Caller {
    /// The socket's token, as verified at the upgrade or by the latest refresh.
    pub(super) claims: Claims,
    /// The patrol session of an officer's or citizen's socket: opened on connect or by the
    /// first patrol request, ended when the caller is dropped.
    pub(super) patrol: Option<PatrolLink>,
    /// The reporting interval this racer's device was last told, so a `pace` push goes out
    /// only when it changes.
    pub(super) pace_told_ms: Option<u32>,
}

impl Caller {
    /// The holder of `claims`, with no domain session open yet.
    pub fn new(claims: Claims) -> Caller {
        Caller {
            claims,
            patrol: None,
            pace_told_ms: None,
        }
    }

    /// The socket's current token claims.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// Opens the sessions this caller's role keeps while connected (an officer's or
    /// citizen's patrol session), so their pushes start without a request. Called once,
    /// after the welcome; failures are logged and retried by the first request needing it.
    pub async fn connect(&mut self, engine: &Engine) {
        if self.patrol.is_none() {
            self.patrol = open_on_connect(engine, &self.claims).await;
        }
    }

    /// The next push from this caller's domain sessions; `None` when a session ended
    /// under it (replaced by a newer socket of the same user, or its notices were not
    /// read), which ends the socket. Never resolves when no session is open.
    pub async fn next_push(&mut self) -> Option<Push> {
        next_push(&mut self.patrol).await
    }
}
