//! Fixes from tracking apps that report over HTTP (Traccar Client, OsmAnd, OwnTracks) with
//! nothing but a device id: the id names the racer (an admin bound it, `devices` in the race
//! domain), then the fix takes exactly the WebSocket path's way in ([`super::race`]'s
//! `store_fixes`): the same checks, the racer's rules, the journal, and an answer only once
//! it is durable. In cluster mode an app may report to any node: a node that does not own
//! the race forwards the fixes to the one that does, as the racer's phone would be. A resend (these apps resend whatever got no answer) is a fix the racer's
//! rules already have, so it is ignored and changes nothing.
//!
//! How each refusal becomes an HTTP status is the net layer's choice (`net::ingest`); here
//! refusals are typed rejections like any other request's.

use super::outcome::Outcome;
use super::race::store_fixes;
use crate::actors::racer::msg::FixesOutcome;
use crate::auth::Role;
use crate::engine::Engine;
use crate::error::{ErrorCode, Rejection};
use crate::ids::RaceId;
use crate::net::protocol::{Reply, Request, WireFix};
use crate::time::now_ms;

/// Where a device's fix went and what the racer's rules made of it.
#[derive(Debug, Clone)]
pub struct DeviceAck {
    /// The race the device reports for.
    pub race: RaceId,
    /// The racer.
    pub bib: u32,
    /// Accepted and ignored counts, as a WebSocket batch is answered.
    pub outcome: FixesOutcome,
}

/// Why a device's fix was not taken.
#[derive(Debug, Clone)]
pub enum DeviceRefusal {
    /// The id is bound to nobody (never, or revoked): a guess, a typo, or a phone an admin
    /// has not bound yet. Counted against the client's address.
    UnknownDevice(Rejection),
    /// The id is known; the race or the racer's rules refused the fix.
    Refused(Rejection),
}

impl DeviceRefusal {
    /// The typed rejection, whichever kind.
    pub fn rejection(&self) -> &Rejection {
        match self {
            DeviceRefusal::UnknownDevice(r) | DeviceRefusal::Refused(r) => r,
        }
    }
}

/// Judges and stores one app's fixes for the racer its device id is bound to.
pub async fn ingest(
    engine: &Engine,
    device_id: &str,
    fixes: &[WireFix],
) -> Result<DeviceAck, DeviceRefusal> {
    let Some(services) = engine.services() else {
        return Err(DeviceRefusal::Refused(Rejection::new(
            ErrorCode::Unavailable,
            "the server is still recovering",
        )));
    };
    let (race, bib) =
        services
            .races
            .device_racer(device_id)
            .map_err(|rejection| match rejection.code {
                ErrorCode::NotFound => DeviceRefusal::UnknownDevice(rejection),
                _ => DeviceRefusal::Refused(rejection),
            })?;
    if let Some(forwarded) = fixes_elsewhere(engine, &race, bib, fixes).await {
        let outcome = forwarded.map_err(DeviceRefusal::Refused)?;
        return Ok(DeviceAck { race, bib, outcome });
    }
    let outcome = store_fixes(engine, services, &race, bib, fixes)
        .await
        .map_err(DeviceRefusal::Refused)?;
    Ok(DeviceAck { race, bib, outcome })
}

/// Cluster mode, a race another node owns: that node judges the fixes as if the racer's
/// phone had sent them there (the device's binding stands for the racer's token) and its
/// answer is returned; `None` on one node, or when this node serves the race.
async fn fixes_elsewhere(
    engine: &Engine,
    race: &RaceId,
    bib: u32,
    fixes: &[WireFix],
) -> Option<Result<FixesOutcome, Rejection>> {
    engine.cluster.as_ref()?;
    let claims = crate::auth::claims_for(
        Role::Racer,
        &bib.to_string(),
        Some(race.as_str()),
        now_ms() / 1000,
        FORWARDED_CLAIMS_SECS,
    );
    let request = Request::Fixes {
        fixes: fixes.to_vec(),
    };
    let reply = match super::forward::elsewhere(engine, &claims, &request).await? {
        Outcome::Reply(Ok(reply)) | Outcome::ReplyThenPush { reply, .. } => reply,
        Outcome::Reply(Err(rejection)) => return Some(Err(rejection)),
        _ => {
            return Some(Err(Rejection::internal(
                "the race's node answered a device's fixes with a stream",
            )))
        }
    };
    Some(match reply {
        Reply::FixesAck {
            accepted,
            ignored,
            last_at_ms,
        } => Ok(FixesOutcome {
            accepted,
            ignored,
            last_at_ms,
        }),
        other => Err(Rejection::internal(format!(
            "the race's node answered a device's fixes with {}",
            other.type_name()
        ))),
    })
}

/// How long the claims a device's forwarded fixes carry stay good: the owner checks expiry
/// as for any token, and the forward takes at most the link's timeout.
const FORWARDED_CLAIMS_SECS: u64 = 60;
