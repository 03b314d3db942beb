//! Pure decoders for the HTTP location protocols that existing phone tracking apps speak,
//! so a racer can use an app they already have instead of Peloton's own client. The
//! server's HTTP ingest (not here) reads the request, passes the query string or body to
//! one of these decoders and forwards the resulting [`DeviceReport`]'s fix; nothing here
//! does I/O, reads a clock or panics, whatever the input.
//!
//! - [`osmand`]: the OsmAnd protocol as Traccar's `OsmAndProtocolDecoder` reads it:
//!   [`osmand::decode_query`] for a GET query string or a form-encoded POST body (the
//!   OsmAnd app, Traccar Client for Android, many scripts), [`osmand::decode_json`] for the
//!   JSON body of the newer Traccar Client apps.
//! - [`owntracks`]: OwnTracks' HTTP mode, [`owntracks::decode`].
//! - [`timestamp`]: the timestamp forms these send.
//!
//! # Rules shared by all decoders
//!
//! - Input longer than [`MAX_BODY_BYTES`] is refused with [`DeviceErrorCode::TooLarge`]
//!   before any parsing.
//! - Latitude must be in -90..=90 and longitude in -180..=180, finite; they become ×1e7
//!   integers, rounded.
//! - A device id is 1..=[`MAX_DEVICE_ID_LEN`] printable ASCII characters, no space or
//!   control character ([`validate_device_id`]); the caller maps it to a racer.
//! - Speed (≤ [`MAX_SPEED_MPS`]), accuracy (≤ [`MAX_ACCURACY_M`]), bearing (≤ 360°) and
//!   battery (≤ 100 %) above their bound are [`DeviceErrorCode::BadField`]; a *negative*
//!   value of one of these means "unknown" and becomes `None` (Traccar's JSON decoder and
//!   the OwnTracks examples send -1 for that). Altitude must lie in
//!   [`MIN_ALTITUDE_M`]..=[`MAX_ALTITUDE_M`].
//! - A fix without an accuracy gets [`UNKNOWN_ACCURACY_DM`] and
//!   [`DeviceReport::accuracy_known`] `false`, so the ingest can decide whether such a fix
//!   may count.
//! - A value that is present but malformed (not a number, wrong JSON type, NaN, infinite,
//!   out of range) is [`DeviceErrorCode::BadField`] naming the field; a required field
//!   that is absent is [`DeviceErrorCode::MissingField`]. Unknown fields are ignored, as
//!   Traccar and the OwnTracks Recorder ignore them.
//!
//! # What the caller answers
//!
//! - OsmAnd: `200 OK` with an empty body on success (Traccar may put one queued command
//!   in the body; we have none). On an error Traccar answers `400 Bad Request` (unknown or
//!   missing id); answer `400` for every [`DeviceError`] except
//!   [`DeviceErrorCode::NotALocation`] (a fix the device itself marked invalid), which
//!   should get `200` so the app does not resend it, and `TooLarge`, which is `413`.
//!   The apps resend anything not answered with a 2xx.
//! - OwnTracks: `200 OK`, `Content-Type: application/json`, body
//!   [`owntracks::OWNTRACKS_EMPTY_RESPONSE`] (`[]`) for every accepted message, including
//!   the non-location ones [`owntracks::decode`] returns as `Ok(None)`; the app treats any
//!   2xx as delivered and queues the message for a later retry otherwise.

pub mod osmand;
pub mod owntracks;
pub mod timestamp;

use crate::protocol::WireFix;
use serde_json::{Map, Value};
use std::fmt;

/// Longest query string or body any decoder reads. Real reports are a few hundred bytes;
/// the bound keeps a hostile client from making the server parse megabytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Longest device id: long enough for an IMEI, a UUID or `user/device`, short enough to
/// log and index.
pub const MAX_DEVICE_ID_LEN: usize = peloton_domain::race::devices::MAX_DEVICE_ID_CHARS;
/// Fastest believable speed, m/s (3600 km/h): anything faster is a broken sensor, and the
/// bound keeps the cm/s value far inside `u32`.
pub const MAX_SPEED_MPS: f64 = 1_000.0;
/// Worst accuracy accepted, metres; beyond that the "fix" says nothing about a position.
pub const MAX_ACCURACY_M: f64 = 100_000.0;
/// Lowest altitude accepted, metres (deep mines and sensor noise included).
pub const MIN_ALTITUDE_M: f64 = -20_000.0;
/// Highest altitude accepted, metres (stratospheric balloons included).
pub const MAX_ALTITUDE_M: f64 = 100_000.0;
/// Accuracy given to a fix that reports none, decimetres (50 m): a typical consumer
/// phone's worst case, pessimistic enough not to pass for a good fix.
pub const UNKNOWN_ACCURACY_DM: u32 = 500;

/// Which protocol a report arrived in, so the ingest can log and count per protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceProtocol {
    /// OsmAnd / Traccar Client, query string, form body or JSON body.
    OsmAnd,
    /// OwnTracks HTTP mode.
    OwnTracks,
}

/// One location report from a phone app, in the wire's units, ready to forward.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceReport {
    /// The app's own identifier (OsmAnd `id`, OwnTracks `user/device`); the ingest maps
    /// it to a racer, this module only checks its shape.
    pub device_id: String,
    /// The fix in the wire's fixed-point units.
    pub fix: WireFix,
    /// Whether the app reported an accuracy; when false `fix.accuracy_dm` is
    /// [`UNKNOWN_ACCURACY_DM`] and the ingest may prefer to refuse the fix.
    pub accuracy_known: bool,
    /// Battery level in percent, for the organiser's device-health view.
    pub battery_pct: Option<u8>,
    /// Course over ground in degrees clockwise from true north, 0..=360, if reported.
    pub bearing_deg: Option<f32>,
    /// The protocol it came in.
    pub source: DeviceProtocol,
}

/// What a decoder read from one report, in the wire's units. Each decoder fills one from
/// its own fields and units; [`Reading::report`] then applies the rules all protocols share,
/// so they are written once.
pub(crate) struct Reading {
    /// The app's identifier, already checked.
    pub(crate) device_id: String,
    /// Fix time, ms since the epoch.
    pub(crate) at_ms: i64,
    /// Latitude ×1e7.
    pub(crate) lat_e7: i32,
    /// Longitude ×1e7.
    pub(crate) lon_e7: i32,
    /// Accuracy in decimetres; `None` when the app reported none (or "unknown").
    pub(crate) accuracy_dm: Option<u32>,
    /// Speed in cm/s, if reported.
    pub(crate) speed_cmps: Option<u32>,
    /// Altitude in decimetres, if reported.
    pub(crate) elevation_dm: Option<i32>,
    /// Battery level in percent, if reported.
    pub(crate) battery_pct: Option<u8>,
    /// Course over ground in degrees, if reported.
    pub(crate) bearing_deg: Option<f32>,
}

impl Reading {
    /// A reading of time and place only; the decoder adds whatever else the app reported.
    pub(crate) fn at(device_id: String, at_ms: i64, lat_e7: i32, lon_e7: i32) -> Self {
        Self {
            device_id,
            at_ms,
            lat_e7,
            lon_e7,
            accuracy_dm: None,
            speed_cmps: None,
            elevation_dm: None,
            battery_pct: None,
            bearing_deg: None,
        }
    }

    /// The report as the ingest takes it: a fix without an accuracy gets
    /// [`UNKNOWN_ACCURACY_DM`] and says so in [`DeviceReport::accuracy_known`].
    pub(crate) fn report(self, source: DeviceProtocol) -> DeviceReport {
        DeviceReport {
            device_id: self.device_id,
            fix: WireFix {
                at_ms: self.at_ms,
                lat_e7: self.lat_e7,
                lon_e7: self.lon_e7,
                accuracy_dm: self.accuracy_dm.unwrap_or(UNKNOWN_ACCURACY_DM),
                speed_cmps: self.speed_cmps,
                elevation_dm: self.elevation_dm,
            },
            accuracy_known: self.accuracy_dm.is_some(),
            battery_pct: self.battery_pct,
            bearing_deg: self.bearing_deg,
            source,
        }
    }
}

/// Why a report was refused, so the ingest can pick a status code and log the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceErrorCode {
    /// A required field is absent.
    MissingField,
    /// A field is present but malformed or out of range.
    BadField,
    /// The body is not what the protocol sends at all (not JSON, not an object).
    BadBody,
    /// A well-formed message that carries no usable fix (an OsmAnd fix the device marked
    /// `valid=false`); accept it at the HTTP level and drop it.
    NotALocation,
    /// Longer than [`MAX_BODY_BYTES`].
    TooLarge,
}

impl fmt::Display for DeviceErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MissingField => "missing_field",
            Self::BadField => "bad_field",
            Self::BadBody => "bad_body",
            Self::NotALocation => "not_a_location",
            Self::TooLarge => "too_large",
        })
    }
}

/// A refused report: a code for the program, the field for tests and logs, a sentence for
/// the human reading the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceError {
    /// What kind of problem.
    pub code: DeviceErrorCode,
    /// The field at fault, in the protocol's own spelling (`lat`, `location.coords.speed`),
    /// for `MissingField` and `BadField`.
    pub field: Option<&'static str>,
    /// What is wrong, naming the field and the value problem.
    pub message: String,
}

impl DeviceError {
    pub(crate) fn missing(field: &'static str) -> Self {
        Self {
            code: DeviceErrorCode::MissingField,
            field: Some(field),
            message: format!("`{field}` is required and missing"),
        }
    }

    pub(crate) fn bad(field: &'static str, problem: impl fmt::Display) -> Self {
        Self {
            code: DeviceErrorCode::BadField,
            field: Some(field),
            message: format!("`{field}` {problem}"),
        }
    }

    pub(crate) fn body(problem: impl fmt::Display) -> Self {
        Self {
            code: DeviceErrorCode::BadBody,
            field: None,
            message: problem.to_string(),
        }
    }

    pub(crate) fn too_large(len: usize) -> Self {
        Self {
            code: DeviceErrorCode::TooLarge,
            field: None,
            message: format!("{len} bytes is over the {MAX_BODY_BYTES}-byte limit"),
        }
    }
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for DeviceError {}

/// Refuse input over [`MAX_BODY_BYTES`].
pub(crate) fn check_size(len: usize) -> Result<(), DeviceError> {
    if len > MAX_BODY_BYTES {
        Err(DeviceError::too_large(len))
    } else {
        Ok(())
    }
}

/// Check a device id's shape: 1..=64 characters from `!` to `~` (printable ASCII, no space).
pub fn validate_device_id(field: &'static str, id: &str) -> Result<String, DeviceError> {
    // The domain's rule, the one admins' ids are checked against when they bind them.
    peloton_domain::race::devices::validate_device_id(id).map_err(|rejection| {
        DeviceError::bad(field, format_args!("is refused: {}", rejection.message))
    })?;
    Ok(id.to_owned())
}

/// A finite number, or BadField.
pub(crate) fn finite(field: &'static str, v: f64) -> Result<f64, DeviceError> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(DeviceError::bad(
            field,
            format_args!("is {v}, not a finite number"),
        ))
    }
}

/// Parse a decimal number from a query value.
pub(crate) fn parse_number(field: &'static str, value: &str) -> Result<f64, DeviceError> {
    let v: f64 = value
        .parse()
        .map_err(|_| DeviceError::bad(field, format_args!("is {value:?}, not a number")))?;
    finite(field, v)
}

/// Latitude in degrees to ×1e7.
pub(crate) fn lat_e7(field: &'static str, v: f64) -> Result<i32, DeviceError> {
    degrees_e7(field, v, 90.0)
}

/// Longitude in degrees to ×1e7.
pub(crate) fn lon_e7(field: &'static str, v: f64) -> Result<i32, DeviceError> {
    degrees_e7(field, v, 180.0)
}

fn degrees_e7(field: &'static str, v: f64, limit: f64) -> Result<i32, DeviceError> {
    let v = finite(field, v)?;
    if !(-limit..=limit).contains(&v) {
        return Err(DeviceError::bad(
            field,
            format_args!("is {v}, outside -{limit}..={limit} degrees"),
        ));
    }
    // |v| ≤ 180 so |v × 1e7| ≤ 1.8e9 < i32::MAX: the cast cannot saturate.
    Ok((v * 1e7).round() as i32)
}

/// Speed in m/s to cm/s; negative is unknown.
pub(crate) fn speed_cmps(field: &'static str, mps: f64) -> Result<Option<u32>, DeviceError> {
    let mps = finite(field, mps)?;
    if mps < 0.0 {
        return Ok(None);
    }
    if mps > MAX_SPEED_MPS {
        return Err(DeviceError::bad(
            field,
            format_args!("is {mps} m/s, over the {MAX_SPEED_MPS} m/s limit"),
        ));
    }
    Ok(Some(scaled_u32(mps, 100.0)))
}

/// Accuracy in metres to decimetres; negative is unknown.
pub(crate) fn accuracy_dm(field: &'static str, m: f64) -> Result<Option<u32>, DeviceError> {
    let m = finite(field, m)?;
    if m < 0.0 {
        return Ok(None);
    }
    if m > MAX_ACCURACY_M {
        return Err(DeviceError::bad(
            field,
            format_args!("is {m} m, over the {MAX_ACCURACY_M} m limit"),
        ));
    }
    Ok(Some(scaled_u32(m, 10.0)))
}

/// Altitude in metres to decimetres.
pub(crate) fn elevation_dm(field: &'static str, m: f64) -> Result<i32, DeviceError> {
    let m = finite(field, m)?;
    if !(MIN_ALTITUDE_M..=MAX_ALTITUDE_M).contains(&m) {
        return Err(DeviceError::bad(
            field,
            format_args!("is {m} m, outside {MIN_ALTITUDE_M}..={MAX_ALTITUDE_M} m"),
        ));
    }
    // Bounded to ±1e6 dm above: the cast cannot saturate.
    Ok((m * 10.0).round() as i32)
}

/// Bearing in degrees; negative is unknown.
pub(crate) fn bearing(field: &'static str, deg: f64) -> Result<Option<f32>, DeviceError> {
    let deg = finite(field, deg)?;
    if deg < 0.0 {
        return Ok(None);
    }
    if deg > 360.0 {
        return Err(DeviceError::bad(
            field,
            format_args!("is {deg}, over 360 degrees"),
        ));
    }
    Ok(Some(deg as f32))
}

/// Battery in percent; negative is unknown.
pub(crate) fn battery_pct(field: &'static str, pct: f64) -> Result<Option<u8>, DeviceError> {
    let pct = finite(field, pct)?;
    if pct < 0.0 {
        return Ok(None);
    }
    if pct > 100.0 {
        return Err(DeviceError::bad(
            field,
            format_args!("is {pct}, over 100 %"),
        ));
    }
    // 0..=100 after rounding: fits u8.
    Ok(Some(pct.round() as u8))
}

/// A timestamp already in range, or BadField.
pub(crate) fn timestamp_or_bad(
    field: &'static str,
    raw: &str,
    parsed: Option<i64>,
) -> Result<i64, DeviceError> {
    parsed.ok_or_else(|| {
        DeviceError::bad(
            field,
            format_args!(
                "is {raw:?}: not epoch seconds or ms, ISO 8601 with a zone, or \
                 `yyyy-MM-dd HH:mm:ss`, between 1970 and 9999"
            ),
        )
    })
}

/// A JSON body that must be one object, or BadBody.
pub(crate) fn json_object(body: &[u8]) -> Result<Map<String, Value>, DeviceError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(root)) => Ok(root),
        Ok(_) => Err(DeviceError::body("the body is not a JSON object")),
        Err(e) => Err(DeviceError::body(format_args!("the body is not JSON: {e}"))),
    }
}

/// BadField for a JSON value of the wrong type, saying what it is and what was wanted.
pub(crate) fn wrong_type(field: &'static str, expected: &str, got: &Value) -> DeviceError {
    let kind = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    DeviceError::bad(field, format_args!("is {kind}, not {expected}"))
}

/// An optional nested object; `null` counts as absent.
pub(crate) fn object<'a>(
    parent: &'a Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<Option<&'a Map<String, Value>>, DeviceError> {
    match parent.get(key) {
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(Value::Null) | None => Ok(None),
        Some(other) => Err(wrong_type(field, "an object", other)),
    }
}

/// An optional number; `null` counts as absent.
pub(crate) fn number(
    parent: &Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<Option<f64>, DeviceError> {
    match parent.get(key) {
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) => finite(field, v).map(Some),
            None => Err(DeviceError::bad(field, "is not representable as a number")),
        },
        Some(Value::Null) | None => Ok(None),
        Some(other) => Err(wrong_type(field, "a number", other)),
    }
}

/// An optional number converted to the wire's unit by `convert` (which may itself find it
/// "unknown"); `null` counts as absent.
pub(crate) fn optional<T>(
    parent: &Map<String, Value>,
    key: &str,
    field: &'static str,
    convert: impl FnOnce(&'static str, f64) -> Result<Option<T>, DeviceError>,
) -> Result<Option<T>, DeviceError> {
    match number(parent, key, field)? {
        Some(v) => convert(field, v),
        None => Ok(None),
    }
}

/// `v × scale`, rounded, for a value already checked to be finite, non-negative and
/// bounded so the product fits `u32`; saturates rather than wraps if that ever changes.
fn scaled_u32(v: f64, scale: f64) -> u32 {
    let x = (v * scale).round();
    if x <= 0.0 {
        0
    } else if x >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        x as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids() {
        assert_eq!(
            validate_device_id("id", "jane/phone").as_deref(),
            Ok("jane/phone")
        );
        assert_eq!(
            validate_device_id("id", &"x".repeat(64)).map(|s| s.len()),
            Ok(64)
        );
        for bad in ["", "a b", "tab\t", "é", "\u{7f}"] {
            let e = validate_device_id("id", bad).unwrap_err();
            assert_eq!(
                (e.code, e.field),
                (DeviceErrorCode::BadField, Some("id")),
                "{bad:?}"
            );
        }
        assert!(validate_device_id("id", &"x".repeat(65)).is_err());
    }

    #[test]
    fn unit_conversions() {
        assert_eq!(lat_e7("lat", -90.0), Ok(-900_000_000));
        assert_eq!(lon_e7("lon", 180.0), Ok(1_800_000_000));
        assert_eq!(lat_e7("lat", 37.4219983), Ok(374_219_983));
        assert!(lat_e7("lat", 90.000001).is_err());
        assert!(lon_e7("lon", f64::NAN).is_err());
        assert_eq!(speed_cmps("speed", 18.67), Ok(Some(1867)));
        assert_eq!(speed_cmps("speed", -1.0), Ok(None));
        assert!(speed_cmps("speed", 1000.1).is_err());
        assert_eq!(accuracy_dm("accuracy", 3.8), Ok(Some(38)));
        assert_eq!(elevation_dm("altitude", -12.34), Ok(-123));
        assert_eq!(bearing("bearing", 360.0), Ok(Some(360.0)));
        assert!(bearing("bearing", 360.5).is_err());
        assert_eq!(battery_pct("batt", 86.6), Ok(Some(87)));
        assert_eq!(battery_pct("batt", -1.0), Ok(None));
        assert!(battery_pct("batt", 101.0).is_err());
        assert!(check_size(MAX_BODY_BYTES).is_ok());
        assert_eq!(
            check_size(MAX_BODY_BYTES + 1).map_err(|e| e.code),
            Err(DeviceErrorCode::TooLarge)
        );
    }
}
