//! OwnTracks' HTTP mode (owntracks/booklet `docs/tech/http.md` and `docs/tech/json.md`):
//! the app POSTs each message as a JSON object and reads the reply as a JSON array. The
//! ingest calls [`decode`] with the body and, when it has one, the device identity from
//! the request, then answers `200 OK`, `Content-Type: application/json`, body
//! [`OWNTRACKS_EMPTY_RESPONSE`] for `Ok(_)` (the app may also be sent friends' locations
//! and cards in that array; we send none). Any 2xx counts as delivered; otherwise the app
//! queues the message and retries.
//!
//! # Identity
//!
//! In order of preference:
//! 1. `device_hint` from the caller: the `X-Limit-U` and `X-Limit-D` headers joined as
//!    `user/device` (both Android and iOS send them when Identification is filled in), or
//!    the HTTP basic-auth user name. It comes from the request, which the ingest
//!    authenticates, so it wins over the body.
//! 2. The body's `topic` (iOS, Android ≥ 2.4), `owntracks/user/device` by default: the
//!    leading `owntracks/` is dropped, giving `user/device`.
//!
//! `tid` (two characters, meant for map labels) is never used as an identity: Traccar
//! falls back to it, but two riders called Jane would collide.
//!
//! # `_type=location` fields
//!
//! `lat`, `lon` (degrees) and `tst` (epoch **seconds**, integer) are required; `acc`
//! (metres), `alt` (metres), `vel` (**km/h**), `cog` (degrees) and `batt` (percent) are
//! optional. The booklet says `acc`, `alt`, `cog`, `vel` are left out when zero; we still
//! read an absent one as "not reported" (and `acc` as unknown accuracy), since older app
//! versions leave them out for lack of a value too. Negative `batt` (the booklet's Lua
//! example sends -1), `vel`, `cog` or `acc` are unknown.
//!
//! # Everything else
//!
//! Other `_type`s (`transition`, `waypoint`, `waypoints`, `lwt`, `card`, `status`, `steps`,
//! `beacon`, `cmd`, `configuration`, `request`, `encrypted`, ...) are `Ok(None)`: accepted
//! and ignored. `encrypted` is not decrypted, so a phone with encryption switched on
//! sends nothing usable; the ingest may want to log it. An empty (or all-whitespace) body
//! is also `Ok(None)`: the app POSTs a zero-length payload when a friend is deleted, and
//! the booklet says to ignore it.

use super::{
    accuracy_dm, battery_pct, bearing, check_size, elevation_dm, json_object, lat_e7, lon_e7,
    number, optional, speed_cmps, timestamp, validate_device_id, DeviceError, DeviceProtocol,
    DeviceReport, Reading,
};
use serde_json::Value;

/// The reply body OwnTracks expects with `200 OK`: an empty JSON array (nothing to push
/// back to the phone).
pub const OWNTRACKS_EMPTY_RESPONSE: &str = "[]";

/// The default topic prefix the apps publish under, dropped from a `topic` identity.
const TOPIC_PREFIX: &str = "owntracks/";

/// Decode one OwnTracks HTTP POST body. `device_hint` is the identity from the request
/// (`user/device` from `X-Limit-U`/`X-Limit-D`, or the basic-auth user), if any.
/// `Ok(None)`: a well-formed message that is not a location; answer `[]` and drop it.
pub fn decode(body: &[u8], device_hint: Option<&str>) -> Result<Option<DeviceReport>, DeviceError> {
    check_size(body.len())?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let root = &json_object(body)?;
    match root.get("_type") {
        Some(Value::String(t)) if t == "location" => {}
        Some(Value::String(_)) => return Ok(None),
        Some(Value::Null) | None => return Err(DeviceError::missing("_type")),
        Some(_) => return Err(DeviceError::bad("_type", "is not a string")),
    }

    let device_id = match device_hint {
        Some(hint) => validate_device_id("device_hint", hint)?,
        None => match root.get("topic") {
            Some(Value::String(topic)) => {
                validate_device_id("topic", topic.strip_prefix(TOPIC_PREFIX).unwrap_or(topic))?
            }
            Some(Value::Null) | None => {
                return Err(DeviceError {
                    field: Some("topic"),
                    message: "no device identity: no X-Limit-U/X-Limit-D headers, no \
                              basic-auth user and no `topic` in the body"
                        .into(),
                    ..DeviceError::missing("topic")
                })
            }
            Some(_) => return Err(DeviceError::bad("topic", "is not a string")),
        },
    };

    let lat = number(root, "lat", "lat")?.ok_or_else(|| DeviceError::missing("lat"))?;
    let lon = number(root, "lon", "lon")?.ok_or_else(|| DeviceError::missing("lon"))?;
    let lat = lat_e7("lat", lat)?;
    let lon = lon_e7("lon", lon)?;

    let at_ms = match root.get("tst") {
        Some(Value::Number(n)) => match n.as_i64() {
            Some(s) => timestamp::from_epoch_seconds(s).ok_or_else(|| {
                DeviceError::bad(
                    "tst",
                    format_args!("is {s}, not seconds between 1970 and 9999"),
                )
            })?,
            None => {
                return Err(DeviceError::bad(
                    "tst",
                    format_args!("is {n}, not whole epoch seconds"),
                ))
            }
        },
        Some(Value::Null) | None => return Err(DeviceError::missing("tst")),
        Some(_) => return Err(DeviceError::bad("tst", "is not a number")),
    };

    let reading = Reading {
        accuracy_dm: optional(root, "acc", "acc", accuracy_dm)?,
        elevation_dm: optional(root, "alt", "alt", |field, m| {
            elevation_dm(field, m).map(Some)
        })?,
        speed_cmps: optional(root, "vel", "vel", |field, kmh| {
            speed_cmps(field, kmh / 3.6)
        })?,
        bearing_deg: optional(root, "cog", "cog", bearing)?,
        battery_pct: optional(root, "batt", "batt", battery_pct)?,
        ..Reading::at(device_id, at_ms, lat, lon)
    };
    Ok(Some(reading.report(DeviceProtocol::OwnTracks)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::DeviceErrorCode;

    #[test]
    fn hint_wins_over_topic() {
        let body = br#"{"_type":"location","lat":1,"lon":2,"tst":1,"topic":"owntracks/a/b"}"#;
        assert_eq!(decode(body, None).unwrap().unwrap().device_id, "a/b");
        assert_eq!(decode(body, Some("u/d")).unwrap().unwrap().device_id, "u/d");
    }

    #[test]
    fn kmh_become_cm_per_second() {
        let body = br#"{"_type":"location","lat":1,"lon":2,"tst":1,"vel":36}"#;
        let r = decode(body, Some("u")).unwrap().unwrap();
        assert_eq!(r.fix.speed_cmps, Some(1000));
        assert_eq!(r.fix.at_ms, 1000);
    }

    #[test]
    fn empty_and_other_types_are_ignored() {
        assert_eq!(decode(b"", None), Ok(None));
        assert_eq!(decode(b" \n", None), Ok(None));
        assert_eq!(decode(br#"{"_type":"lwt","tst":1}"#, None), Ok(None));
        let e = decode(br#"{"lat":1}"#, None).unwrap_err();
        assert_eq!(
            (e.code, e.field),
            (DeviceErrorCode::MissingField, Some("_type"))
        );
    }
}
