//! The OsmAnd protocol, decoded the way Traccar's `OsmAndProtocolDecoder` decodes it
//! (traccar/traccar `src/main/java/org/traccar/protocol/OsmAndProtocolDecoder.java`, commit
//! 9e5c458ad0bf44ceaddf72534bf6874787f41b6c), so every app that reports to a Traccar
//! server can report to Peloton with only the URL changed. The ingest calls
//! [`decode_query`] for a GET query string or an `application/x-www-form-urlencoded` POST
//! body (Traccar reads the body when the query string is empty), and [`decode_json`] when
//! the `Content-Type` starts with `application/json`.
//!
//! # Query / form fields
//!
//! | field | meaning | notes |
//! |---|---|---|
//! | `id`, `deviceid` | device id | required |
//! | `lat`, `lon` | degrees | required, or `location=lat,lon` |
//! | `timestamp` | fix time | epoch s or ms (by magnitude), ISO 8601, `yyyy-MM-dd HH:mm:ss` |
//! | `speed` | **knots** | Traccar's default unit for this protocol (`convertSpeed(.., "kn")`) |
//! | `bearing`, `heading` | degrees | |
//! | `altitude` | metres | |
//! | `accuracy` | metres | |
//! | `hdop` | metres, used when `accuracy` is absent | the OsmAnd app fills its `{3}` "hdop" placeholder with Android's accuracy in metres |
//! | `batt` | percent | |
//! | `valid` | `true`/`1` or `false`/`0` | `false` is [`DeviceErrorCode::NotALocation`] |
//!
//! Everything else (`cell`, `wifi`, `charge`, `ignition`, ...) is ignored. When a field
//! repeats, the last value wins, as in Traccar's loop. A missing `timestamp` means "now":
//! Traccar stamps such a position with the server's clock (`new Date()`), so the caller
//! passes `now_ms`.
//!
//! # Deliberate differences from Traccar
//!
//! - No `lat`/`lon`: Traccar stores a position at the device's last known location; we
//!   refuse it ([`DeviceErrorCode::MissingField`] `lat`), a race has no use for a repeat.
//! - `yyyy-MM-dd HH:mm:ss` is read as UTC, not in the server's time zone.
//! - Non-finite values (Java's `Double.parseDouble` takes `NaN`, `Infinity`, `1e999`)
//!   and out-of-range speed, bearing, altitude, accuracy or battery are refused; Traccar
//!   stores them (it refuses only a latitude or longitude out of range, and lets a NaN
//!   one through).
//! - When both `lat`/`lon` and `location` are given, `lat`/`lon` win (Traccar: whichever
//!   comes last).
//! - `hdop` stands in for a missing `accuracy` (Traccar keeps it only as an attribute).
//!
//! # JSON body (Traccar Client 9+)
//!
//! `{"device_id":"..","location":{"timestamp":"<ISO 8601>","coords":{"latitude":..,
//! "longitude":..,"accuracy":..,"speed":<m/s>,"heading":..,"altitude":..},
//! "battery":{"level":<0..1>,"is_charging":..},..}}`. Speed here is **m/s** (Traccar
//! converts with `knotsFromMps`); -1 means unknown for speed, heading, accuracy and
//! battery level. Differences: Traccar requires `speed`, `heading`, `accuracy`,
//! `altitude` (a missing one throws) and uses the last known location when `coords` is
//! absent; we make the four optional and refuse a missing `coords`. A `location` array
//! (the background-geolocation batch mode) is refused, as Traccar refuses it.

use super::{
    accuracy_dm, battery_pct, bearing, check_size, elevation_dm, finite, json_object, lat_e7,
    lon_e7, number, object, optional, parse_number, speed_cmps, timestamp, timestamp_or_bad,
    validate_device_id, wrong_type, DeviceError, DeviceErrorCode, DeviceProtocol, DeviceReport,
    Reading,
};
use serde_json::Value;

/// Metres per second in one knot (1852 m per hour).
const MPS_PER_KNOT: f64 = 1852.0 / 3600.0;

/// The raw values of the fields we read, last occurrence kept.
#[derive(Default)]
struct QueryFields {
    id: Option<(&'static str, String)>,
    lat: Option<String>,
    lon: Option<String>,
    location: Option<String>,
    timestamp: Option<String>,
    speed: Option<String>,
    bearing: Option<(&'static str, String)>,
    altitude: Option<String>,
    accuracy: Option<String>,
    hdop: Option<String>,
    batt: Option<String>,
    valid: Option<String>,
}

/// Decode an OsmAnd query string (with or without the leading `?`) or form body.
/// `now_ms` is the server clock, used only when the report has no `timestamp`.
pub fn decode_query(query: &str, now_ms: i64) -> Result<DeviceReport, DeviceError> {
    check_size(query.len())?;
    let query = query.strip_prefix('?').unwrap_or(query);
    let mut f = QueryFields::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        match key.as_ref() {
            "id" => f.id = Some(("id", value)),
            "deviceid" => f.id = Some(("deviceid", value)),
            "lat" => f.lat = Some(value),
            "lon" => f.lon = Some(value),
            "location" => f.location = Some(value),
            "timestamp" => f.timestamp = Some(value),
            "speed" => f.speed = Some(value),
            "bearing" => f.bearing = Some(("bearing", value)),
            "heading" => f.bearing = Some(("heading", value)),
            "altitude" => f.altitude = Some(value),
            "accuracy" => f.accuracy = Some(value),
            "hdop" => f.hdop = Some(value),
            "batt" => f.batt = Some(value),
            "valid" => f.valid = Some(value),
            _ => {}
        }
    }

    let device_id = match &f.id {
        Some((field, id)) => validate_device_id(field, id)?,
        None => return Err(DeviceError::missing("id")),
    };

    if let Some(valid) = &f.valid {
        match valid.as_str() {
            "true" | "1" => {}
            "false" | "0" => {
                return Err(DeviceError {
                    code: DeviceErrorCode::NotALocation,
                    field: Some("valid"),
                    message: "the device marked this fix invalid (`valid` is false)".into(),
                })
            }
            other => {
                return Err(DeviceError::bad(
                    "valid",
                    format_args!("is {other:?}, not true, false, 1 or 0"),
                ))
            }
        }
    }

    let (lat, lon) = match (&f.lat, &f.lon, &f.location) {
        (Some(lat), Some(lon), _) => (
            lat_e7("lat", parse_number("lat", lat)?)?,
            lon_e7("lon", parse_number("lon", lon)?)?,
        ),
        (None, None, Some(location)) => {
            let mut parts = location.split(',');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(lat), Some(lon), None) => (
                    lat_e7("location", parse_number("location", lat)?)?,
                    lon_e7("location", parse_number("location", lon)?)?,
                ),
                _ => {
                    return Err(DeviceError::bad(
                        "location",
                        format_args!("is {location:?}, not `lat,lon`"),
                    ))
                }
            }
        }
        (None, _, _) => return Err(DeviceError::missing("lat")),
        (_, None, _) => return Err(DeviceError::missing("lon")),
    };

    let at_ms = match &f.timestamp {
        Some(raw) => timestamp_or_bad("timestamp", raw, timestamp::parse_query_timestamp(raw))?,
        None => now_ms,
    };
    let speed = match &f.speed {
        Some(raw) => speed_cmps("speed", parse_number("speed", raw)? * MPS_PER_KNOT)?,
        None => None,
    };
    let bearing_deg = match &f.bearing {
        Some((field, raw)) => bearing(field, parse_number(field, raw)?)?,
        None => None,
    };
    let elevation = match &f.altitude {
        Some(raw) => Some(elevation_dm("altitude", parse_number("altitude", raw)?)?),
        None => None,
    };
    // Both are parsed when present so a malformed `hdop` is refused even beside `accuracy`.
    let accuracy = match &f.accuracy {
        Some(raw) => accuracy_dm("accuracy", parse_number("accuracy", raw)?)?,
        None => None,
    };
    let hdop = match &f.hdop {
        Some(raw) => accuracy_dm("hdop", parse_number("hdop", raw)?)?,
        None => None,
    };
    let battery = match &f.batt {
        Some(raw) => battery_pct("batt", parse_number("batt", raw)?)?,
        None => None,
    };

    let reading = Reading {
        accuracy_dm: accuracy.or(hdop),
        speed_cmps: speed,
        elevation_dm: elevation,
        battery_pct: battery,
        bearing_deg,
        ..Reading::at(device_id, at_ms, lat, lon)
    };
    Ok(reading.report(DeviceProtocol::OsmAnd))
}

/// Decode Traccar Client's JSON body.
pub fn decode_json(body: &[u8]) -> Result<DeviceReport, DeviceError> {
    check_size(body.len())?;
    let root = &json_object(body)?;

    let device_id = match root.get("device_id") {
        Some(Value::String(id)) => validate_device_id("device_id", id)?,
        Some(Value::Null) | None => return Err(DeviceError::missing("device_id")),
        Some(other) => return Err(wrong_type("device_id", "a string", other)),
    };
    let location =
        object(root, "location", "location")?.ok_or_else(|| DeviceError::missing("location"))?;
    let at_ms = match location.get("timestamp") {
        Some(Value::String(raw)) => {
            timestamp_or_bad("location.timestamp", raw, timestamp::parse_iso8601(raw))?
        }
        Some(Value::Null) | None => return Err(DeviceError::missing("location.timestamp")),
        Some(other) => return Err(wrong_type("location.timestamp", "a string", other)),
    };
    let coords = object(location, "coords", "location.coords")?
        .ok_or_else(|| DeviceError::missing("location.coords"))?;

    let lat = number(coords, "latitude", "location.coords.latitude")?
        .ok_or_else(|| DeviceError::missing("location.coords.latitude"))?;
    let lon = number(coords, "longitude", "location.coords.longitude")?
        .ok_or_else(|| DeviceError::missing("location.coords.longitude"))?;
    let lat = lat_e7("location.coords.latitude", lat)?;
    let lon = lon_e7("location.coords.longitude", lon)?;

    let reading = Reading {
        speed_cmps: optional(coords, "speed", "location.coords.speed", speed_cmps)?,
        bearing_deg: optional(coords, "heading", "location.coords.heading", bearing)?,
        accuracy_dm: optional(coords, "accuracy", "location.coords.accuracy", accuracy_dm)?,
        elevation_dm: optional(
            coords,
            "altitude",
            "location.coords.altitude",
            |field, m| elevation_dm(field, m).map(Some),
        )?,
        battery_pct: match object(location, "battery", "location.battery")? {
            Some(battery) => optional(
                battery,
                "level",
                "location.battery.level",
                |field, level| {
                    // A fraction 0..=1; Traccar stores `(int) (level * 100)`, we round.
                    battery_pct(field, finite(field, level)? * 100.0)
                },
            )?,
            None => None,
        },
        ..Reading::at(device_id, at_ms, lat, lon)
    };
    Ok(reading.report(DeviceProtocol::OsmAnd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::UNKNOWN_ACCURACY_DM;

    #[test]
    fn knots_become_cm_per_second() {
        let r = decode_query("id=a&lat=1&lon=2&speed=40", 0).unwrap();
        // 40 kn × 1852 m / 3600 s = 20.5778 m/s.
        assert_eq!(r.fix.speed_cmps, Some(2058));
    }

    #[test]
    fn missing_timestamp_uses_now() {
        let r = decode_query("?deviceid=a&lat=1&lon=2", 1_700_000_000_123).unwrap();
        assert_eq!(r.fix.at_ms, 1_700_000_000_123);
        assert!(!r.accuracy_known);
        assert_eq!(r.fix.accuracy_dm, UNKNOWN_ACCURACY_DM);
    }

    #[test]
    fn accuracy_wins_over_hdop_and_hdop_stands_in() {
        let r = decode_query("id=a&lat=1&lon=2&accuracy=4.5&hdop=9", 0).unwrap();
        assert_eq!((r.fix.accuracy_dm, r.accuracy_known), (45, true));
        let r = decode_query("id=a&lat=1&lon=2&hdop=9", 0).unwrap();
        assert_eq!(r.fix.accuracy_dm, 90);
    }

    #[test]
    fn invalid_fix_is_not_a_location() {
        let e = decode_query("id=a&lat=1&lon=2&valid=false", 0).unwrap_err();
        assert_eq!(e.code, DeviceErrorCode::NotALocation);
        assert!(decode_query("id=a&lat=1&lon=2&valid=1", 0).is_ok());
    }

    #[test]
    fn json_minimal_and_nulls() {
        let body = br#"{"device_id":"x","location":{"timestamp":"2021-07-21T08:06:34.444Z",
            "coords":{"latitude":1.5,"longitude":-2.5,"speed":null}}}"#;
        let r = decode_json(body).unwrap();
        assert_eq!((r.fix.lat_e7, r.fix.lon_e7), (15_000_000, -25_000_000));
        assert_eq!(r.fix.speed_cmps, None);
        assert_eq!(r.fix.at_ms, 1_626_854_794_444);
    }
}
