//! The phone-app decoders (`peloton_protocol::device`) against real traffic: every request
//! of Traccar's own OsmAnd decoder test and every OwnTracks message example in the
//! OwnTracks booklet (tests/data/, with their sources and licences), each decoded or
//! refused as recorded there; concrete unit checks on several; a malformed value in every
//! field; and arbitrary input, which must never panic.

use peloton_protocol::device::{
    osmand, owntracks, DeviceError, DeviceErrorCode, DeviceProtocol, DeviceReport, MAX_BODY_BYTES,
    UNKNOWN_ACCURACY_DM,
};
use proptest::prelude::*;
use serde_json::Value;
use std::path::Path;

/// The server clock handed to `decode_query`, distinct from every timestamp in the data.
const NOW_MS: i64 = 1_765_000_000_123;

fn data(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Data lines of a `#`-commented file.
fn lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect()
}

/// Check a decode result against `accept` or `reject:<Code>:<field>`.
fn check<T: std::fmt::Debug>(what: &str, expect: &str, got: &Result<T, DeviceError>) {
    match (expect, got) {
        ("accept", Ok(_)) => {}
        (expect, Err(e)) if expect != "accept" => {
            let want = expect
                .strip_prefix("reject:")
                .unwrap_or_else(|| panic!("{what}: bad expectation {expect}"));
            let got = format!("{:?}:{}", e.code, e.field.unwrap_or(""));
            assert_eq!(got, want, "{what}: {}", e.message);
            if let Some(field) = e.field {
                assert!(e.message.contains(field), "{what}: {}", e.message);
            }
        }
        _ => panic!("{what}: expected {expect}, got {got:?}"),
    }
}

/// Split a `traccar=.. ours=.. <rest>` line.
fn traccar_line(line: &str) -> (&str, &str, &str) {
    let mut parts = line.splitn(3, ' ');
    let traccar = parts.next().and_then(|p| p.strip_prefix("traccar="));
    let ours = parts.next().and_then(|p| p.strip_prefix("ours="));
    match (traccar, ours, parts.next()) {
        (Some(t), Some(o), Some(rest)) if ["accept", "reject"].contains(&t) => (t, o, rest),
        _ => panic!("malformed data line: {line}"),
    }
}

fn query_of(target: &str) -> &str {
    target.split_once('?').map_or("", |(_, q)| q)
}

fn osmand_requests() -> Vec<(String, String, String)> {
    let text = data("traccar/osmand_requests.txt");
    lines(&text)
        .into_iter()
        .map(|l| {
            let (t, o, target) = traccar_line(l);
            (t.to_owned(), o.to_owned(), target.to_owned())
        })
        .collect()
}

fn osmand_json_bodies() -> Vec<(String, String, String)> {
    let text = data("traccar/osmand_json_bodies.txt");
    lines(&text)
        .into_iter()
        .map(|l| {
            let (t, o, body) = traccar_line(l);
            (t.to_owned(), o.to_owned(), body.to_owned())
        })
        .collect()
}

/// (source, hint, expect, body bytes) of every OwnTracks example.
fn owntracks_messages() -> Vec<(String, Option<String>, String, Vec<u8>)> {
    let text = data("owntracks/messages.jsonl");
    lines(&text)
        .into_iter()
        .map(|l| {
            let row: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
            let body = match (&row["raw"], &row["body"]) {
                (Value::String(raw), _) => raw.clone().into_bytes(),
                (Value::Null, body @ Value::Object(_)) => serde_json::to_vec(body).unwrap(),
                _ => panic!("row without body: {l}"),
            };
            (
                row["source"].as_str().unwrap().to_owned(),
                row["hint"].as_str().map(str::to_owned),
                row["expect"].as_str().unwrap().to_owned(),
                body,
            )
        })
        .collect()
}

fn accept_query(query: &str) -> DeviceReport {
    osmand::decode_query(query, NOW_MS).unwrap_or_else(|e| panic!("{query}: {e}"))
}

#[test]
fn every_traccar_osmand_request_is_decoded_as_recorded() {
    let rows = osmand_requests();
    assert_eq!(
        rows.len(),
        11,
        "the test at that commit has 11 query requests"
    );
    for (traccar, ours, target) in &rows {
        let got = osmand::decode_query(query_of(target), NOW_MS);
        check(target, ours, &got);
        // A difference from Traccar must be written down as one, and only then.
        let ours_accepts = ours == "accept";
        let traccar_accepts = traccar == "accept";
        if ours_accepts != traccar_accepts {
            let text = data("traccar/osmand_requests.txt");
            let at = text.find(target.as_str()).unwrap();
            let before: Vec<&str> = text[..at].lines().rev().skip(1).take(2).collect();
            assert!(
                before.iter().any(|l| l.starts_with("# ")),
                "undocumented difference: {target}"
            );
        }
        if let Ok(r) = got {
            assert_eq!(r.source, DeviceProtocol::OsmAnd);
        }
    }
}

#[test]
fn traccar_osmand_requests_have_the_right_values() {
    let rows = osmand_requests();
    let q = |i: usize| query_of(&rows[i].2).to_owned();

    // ISO 8601 timestamp, percent-encoded colons; hdop is metres when accuracy is absent.
    let r = accept_query(&q(2));
    assert_eq!(r.device_id, "902064");
    assert_eq!(r.fix.at_ms, 1_453_920_947_000); // 2016-01-27T18:55:47Z
    assert_eq!((r.fix.lat_e7, r.fix.lon_e7), (420_628_800, -882_341_200));
    assert_eq!((r.fix.accuracy_dm, r.accuracy_known), (60, true));
    assert_eq!(r.fix.elevation_dm, Some(2240));
    assert_eq!(r.fix.speed_cmps, Some(0));

    // Milliseconds (above Integer.MAX_VALUE).
    assert_eq!(accept_query(&q(3)).fix.at_ms, 1_442_068_686_579);

    // `2014-06-04+09%3A10%3A11`: `+` is a space, read as UTC.
    let r = accept_query(&q(4));
    assert_eq!(r.fix.at_ms, 1_401_873_011_000);
    assert_eq!(r.device_id, "353861053849681");
    assert_eq!(r.fix.elevation_dm, Some(3847));

    // Seconds (below Integer.MAX_VALUE); no accuracy at all.
    let r = accept_query(&q(6));
    assert_eq!(r.fix.at_ms, 1_377_177_267_000);
    assert_eq!(
        (r.fix.accuracy_dm, r.accuracy_known),
        (UNKNOWN_ACCURACY_DM, false)
    );
    assert_eq!(
        (r.fix.speed_cmps, r.bearing_deg, r.battery_pct),
        (None, None, None)
    );

    // No timestamp: the caller's clock. `deviceid` and `heading` spellings.
    let r = accept_query(&q(7));
    assert_eq!(r.fix.at_ms, NOW_MS);
    assert_eq!(r.device_id, "123456");
    assert_eq!(r.bearing_deg, Some(0.0));

    // Battery percent; 350.059479 m rounds to 3501 dm.
    let r = accept_query(&q(8));
    assert_eq!(r.battery_pct, Some(87));
    assert_eq!(r.fix.elevation_dm, Some(3501));
    assert_eq!((r.fix.lat_e7, r.fix.lon_e7), (416_666_670, -8_833_330));

    // `location=lat,lon`.
    let r = accept_query(&q(9));
    assert_eq!((r.fix.lat_e7, r.fix.lon_e7), (600_000_000, 300_000_000));

    // speed=40 knots = 20.5778 m/s.
    let r = accept_query(&q(10));
    assert_eq!(r.fix.speed_cmps, Some(2058));
    assert_eq!(r.bearing_deg, Some(7.198_898));
    assert_eq!((r.fix.lat_e7, r.fix.lon_e7), (407_232_949, -740_061_409));
}

#[test]
fn every_traccar_json_body_is_decoded_as_recorded() {
    let rows = osmand_json_bodies();
    assert_eq!(rows.len(), 8);
    for (_, ours, body) in &rows {
        check(body, ours, &osmand::decode_json(body.as_bytes()));
    }

    let r = osmand::decode_json(rows[0].2.as_bytes()).unwrap();
    assert_eq!(r.device_id, "48241179");
    assert_eq!(r.fix.at_ms, 1_749_995_112_862); // 2025-06-15T13:45:12.862Z
    assert_eq!((r.fix.lat_e7, r.fix.lon_e7), (374_219_983, -1_220_840_000));
    assert_eq!((r.fix.accuracy_dm, r.fix.elevation_dm), (50, Some(50)));
    assert_eq!(r.fix.speed_cmps, Some(0));
    assert_eq!(r.bearing_deg, None, "heading -1 is unknown");
    assert_eq!(r.battery_pct, Some(100), "level 1 is 100 %");

    // -1 for speed and battery level: unknown.
    let r = osmand::decode_json(rows[2].2.as_bytes()).unwrap();
    assert_eq!((r.fix.speed_cmps, r.battery_pct), (None, None));
    assert_eq!(r.fix.lat_e7, 377_858_340);

    // Speed is m/s in the JSON body, not knots.
    let r = osmand::decode_json(rows[3].2.as_bytes()).unwrap();
    assert_eq!(r.fix.at_ms, 1_626_854_794_444);
    assert_eq!(r.fix.speed_cmps, Some(1867));
    assert_eq!(r.bearing_deg, Some(63.0));
    assert_eq!((r.fix.accuracy_dm, r.fix.elevation_dm), (38, Some(357)));
    assert_eq!(r.battery_pct, Some(79));
}

#[test]
fn every_owntracks_example_is_decoded_as_recorded() {
    let rows = owntracks_messages();
    assert!(rows.len() >= 25, "{} rows", rows.len());
    for (source, hint, expect, body) in &rows {
        let got = owntracks::decode(body, hint.as_deref());
        match expect.as_str() {
            "ignore" => assert_eq!(got, Ok(None), "{source}"),
            "accept" => {
                let r = got
                    .as_ref()
                    .map_err(|e| format!("{source}: {e}"))
                    .unwrap()
                    .as_ref()
                    .unwrap_or_else(|| panic!("{source}: ignored"));
                assert_eq!(r.source, DeviceProtocol::OwnTracks);
            }
            _ => check(source, expect, &got),
        }
    }

    let by_source = |s: &str, hint: Option<&str>| {
        let (_, _, _, body) = rows.iter().find(|r| r.0.ends_with(s)).unwrap();
        owntracks::decode(body, hint).unwrap().unwrap()
    };
    let r = by_source("traccar.md#L37-L52", None);
    assert_eq!(r.device_id, "jane/iphone");
    assert_eq!(r.fix.at_ms, 1_497_508_651_000);
    assert_eq!((r.fix.lat_e7, r.fix.lon_e7), (488_583_300, 22_951_300));
    // vel 61 km/h = 16.944 m/s.
    assert_eq!(r.fix.speed_cmps, Some(1694));
    assert_eq!((r.fix.accuracy_dm, r.accuracy_known), (50, true));
    assert_eq!(r.fix.elevation_dm, Some(1670));
    assert_eq!((r.bearing_deg, r.battery_pct), (Some(271.0), Some(41)));

    let r = by_source("lua.md#L60", Some("jane/phone"));
    assert_eq!(r.battery_pct, None, "batt -1 is unknown");
    assert_eq!(r.fix.accuracy_dm, UNKNOWN_ACCURACY_DM);

    let r = by_source("quicksetup.md#L140", Some("jane/nokia"));
    assert_eq!(r.device_id, "jane/nokia");
    assert_eq!(r.fix.speed_cmps, Some(0));
    assert_eq!(r.fix.at_ms, 1_706_856_298_000);
    assert_eq!((r.fix.lat_e7, r.fix.lon_e7), (488_568_260, 22_927_130));
}

#[test]
fn the_owntracks_reply_is_an_empty_json_array() {
    let v: Value = serde_json::from_str(owntracks::OWNTRACKS_EMPTY_RESPONSE).unwrap();
    assert_eq!(v, Value::Array(vec![]));
}

fn expect_bad<T: std::fmt::Debug>(what: &str, field: &str, got: Result<T, DeviceError>) {
    match got {
        Err(e) => {
            assert_eq!(e.code, DeviceErrorCode::BadField, "{what}: {e}");
            assert_eq!(e.field, Some(field), "{what}: {e}");
            assert!(e.message.contains(field), "{what}: {}", e.message);
        }
        Ok(r) => panic!("{what}: accepted as {r:?}"),
    }
}

#[test]
fn a_malformed_value_in_each_osmand_query_field_names_it() {
    let base = [
        ("id", "abc"),
        ("lat", "1.5"),
        ("lon", "2.5"),
        ("timestamp", "1377177267"),
        ("speed", "1"),
        ("bearing", "2"),
        ("altitude", "3"),
        ("accuracy", "4"),
        ("hdop", "5"),
        ("batt", "6"),
        ("valid", "true"),
    ];
    let join = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    };
    accept_query(&join(&base));
    let long_id = "x".repeat(65);
    let cases: &[(&str, &[&str])] = &[
        ("id", &["", "a+b", "tab%09", &long_id, "%C3%A9"]),
        ("lat", &["abc", "NaN", "inf", "90.5", "-91", "1e999", ""]),
        ("lon", &["abc", "180.0001", "-inf", "1,5"]),
        (
            "timestamp",
            &["abc", "-5", "2016-01-27T18:55:47", "2016-02-30+10:00:00"],
        ),
        ("speed", &["fast", "NaN", "5000"]),
        ("bearing", &["north", "361"]),
        ("altitude", &["high", "200000", "-inf"]),
        ("accuracy", &["good", "1e6"]),
        ("hdop", &["good", "infinity"]),
        ("batt", &["full", "101"]),
        ("valid", &["yes", ""]),
    ];
    for (field, values) in cases {
        for value in *values {
            let pairs: Vec<(&str, &str)> = base
                .iter()
                .map(|&(k, v)| if k == *field { (k, *value) } else { (k, v) })
                .collect();
            let query = join(&pairs);
            expect_bad(&query, field, osmand::decode_query(&query, NOW_MS));
        }
    }
    // The alternative spellings name themselves.
    let q = "deviceid=a%20b&lat=1&lon=2";
    expect_bad(q, "deviceid", osmand::decode_query(q, NOW_MS));
    let q = "id=a&lat=1&lon=2&heading=x";
    expect_bad(q, "heading", osmand::decode_query(q, NOW_MS));
    for location in ["1", "1,2,3", "a,b", "91,0", "0,181"] {
        let q = format!("id=a&location={location}");
        expect_bad(&q, "location", osmand::decode_query(&q, NOW_MS));
    }
    // Absent required fields.
    for (q, field) in [
        ("lat=1&lon=2", "id"),
        ("id=a&lon=2", "lat"),
        ("id=a&lat=1", "lon"),
    ] {
        let e = osmand::decode_query(q, NOW_MS).unwrap_err();
        assert_eq!(
            (e.code, e.field),
            (DeviceErrorCode::MissingField, Some(field))
        );
    }
}

#[test]
fn a_malformed_value_in_each_osmand_json_field_names_it() {
    let base: Value = serde_json::from_str(
        r#"{"device_id":"d1","location":{"timestamp":"2021-07-21T08:06:34.444Z",
            "coords":{"latitude":-6.1,"longitude":106.6,"accuracy":3.8,"speed":18.67,
            "heading":63,"altitude":35.7},"battery":{"level":0.79,"is_charging":false}}}"#,
    )
    .unwrap();
    osmand::decode_json(&serde_json::to_vec(&base).unwrap()).unwrap();
    let cases: &[(&str, &[&str], &str)] = &[
        ("/device_id", &["7", "\"a b\"", "\"\"", "[]"], "device_id"),
        ("/location", &["[]", "\"x\"", "1"], "location"),
        (
            "/location/timestamp",
            &["1626854794", "\"yesterday\"", "\"2021-07-21 08:06:34\""],
            "location.timestamp",
        ),
        ("/location/coords", &["[]", "true"], "location.coords"),
        (
            "/location/coords/latitude",
            &["\"1\"", "90.1", "true"],
            "location.coords.latitude",
        ),
        (
            "/location/coords/longitude",
            &["\"1\"", "-180.1"],
            "location.coords.longitude",
        ),
        (
            "/location/coords/speed",
            &["\"1\"", "1001", "1e400"],
            "location.coords.speed",
        ),
        (
            "/location/coords/heading",
            &["\"1\"", "400"],
            "location.coords.heading",
        ),
        (
            "/location/coords/accuracy",
            &["{}", "1e9"],
            "location.coords.accuracy",
        ),
        (
            "/location/coords/altitude",
            &["\"1\"", "-1e6"],
            "location.coords.altitude",
        ),
        ("/location/battery", &["0.5", "[]"], "location.battery"),
        (
            "/location/battery/level",
            &["\"1\"", "1.5"],
            "location.battery.level",
        ),
    ];
    for (pointer, values, field) in cases {
        for value in *values {
            let mut body = base.clone();
            // `1e400` is not representable in a Value: splice it into the text instead.
            let marker = "\"__MARK__\"";
            *body.pointer_mut(pointer).unwrap() = Value::String("__MARK__".into());
            let text = serde_json::to_string(&body).unwrap().replace(marker, value);
            let got = osmand::decode_json(text.as_bytes());
            if *value == "1e400" {
                // serde_json refuses a number out of f64 range as a syntax error.
                assert_eq!(got.map_err(|e| e.code), Err(DeviceErrorCode::BadBody));
            } else {
                expect_bad(&text, field, got);
            }
        }
    }
    for (body, field) in [
        (r#"{"location":{}}"#, "device_id"),
        (r#"{"device_id":"a"}"#, "location"),
        (
            r#"{"device_id":"a","location":{"coords":{}}}"#,
            "location.timestamp",
        ),
        (
            r#"{"device_id":"a","location":{"timestamp":"2021-07-21T08:06:34Z","coords":{"longitude":1}}}"#,
            "location.coords.latitude",
        ),
    ] {
        let e = osmand::decode_json(body.as_bytes()).unwrap_err();
        assert_eq!(
            (e.code, e.field),
            (DeviceErrorCode::MissingField, Some(field)),
            "{body}"
        );
    }
    for body in ["", "{", "[]", "\"x\"", "null"] {
        let e = osmand::decode_json(body.as_bytes()).unwrap_err();
        assert_eq!(e.code, DeviceErrorCode::BadBody, "{body}");
    }
}

#[test]
fn a_malformed_value_in_each_owntracks_field_names_it() {
    let base: Value = serde_json::from_str(
        r#"{"_type":"location","lat":48.85833,"lon":2.29513,"tst":1497508651,"acc":5,
            "alt":167,"vel":61,"cog":271,"batt":41,"topic":"owntracks/jane/iphone"}"#,
    )
    .unwrap();
    owntracks::decode(&serde_json::to_vec(&base).unwrap(), None)
        .unwrap()
        .unwrap();
    let cases: &[(&str, &[&str])] = &[
        ("_type", &["1", "[]"]),
        (
            "topic",
            &["1", "\"owntracks/jane phone\"", "\"owntracks/\""],
        ),
        ("lat", &["\"48.8\"", "95", "null"]),
        ("lon", &["\"2.2\"", "200"]),
        (
            "tst",
            &["1.5", "\"1497508651\"", "-1", "9223372036854775807"],
        ),
        ("acc", &["\"5\"", "1e7"]),
        ("alt", &["\"167\"", "1e6"]),
        ("vel", &["\"61\"", "4000"]),
        ("cog", &["\"271\"", "361"]),
        ("batt", &["\"41\"", "101"]),
    ];
    for (field, values) in cases {
        for value in *values {
            let mut body = base.clone();
            body[*field] = Value::String("__MARK__".into());
            let text = serde_json::to_string(&body)
                .unwrap()
                .replace("\"__MARK__\"", value);
            let got = owntracks::decode(text.as_bytes(), None);
            if *value == "null" {
                let e = got.unwrap_err();
                assert_eq!(
                    (e.code, e.field),
                    (DeviceErrorCode::MissingField, Some(*field))
                );
            } else {
                expect_bad(&text, field, got);
            }
        }
    }
    let body = serde_json::to_vec(&base).unwrap();
    for hint in ["", "jane phone", "\u{1}", &"x".repeat(65)] {
        expect_bad(hint, "device_hint", owntracks::decode(&body, Some(hint)));
    }
    for body in ["{", "[]", "1", "\"location\""] {
        let e = owntracks::decode(body.as_bytes(), None).unwrap_err();
        assert_eq!(e.code, DeviceErrorCode::BadBody, "{body}");
    }
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let big = format!("id=a&lat=1&lon=2&pad={}", "x".repeat(MAX_BODY_BYTES));
    let e = osmand::decode_query(&big, NOW_MS).unwrap_err();
    assert_eq!(e.code, DeviceErrorCode::TooLarge);
    let mut json = vec![b' '; MAX_BODY_BYTES + 1];
    json[0] = b'{';
    assert_eq!(
        osmand::decode_json(&json).map_err(|e| e.code),
        Err(DeviceErrorCode::TooLarge)
    );
    assert_eq!(
        owntracks::decode(&json, None).map_err(|e| e.code),
        Err(DeviceErrorCode::TooLarge)
    );
    // Exactly at the limit is still read.
    let head = "id=a&lat=1&lon=2&pad=";
    let exact = format!("{head}{}", "x".repeat(MAX_BODY_BYTES - head.len()));
    assert!(osmand::decode_query(&exact, NOW_MS).is_ok());
}

/// Query strings built from the fields the decoder reads, with values that are sometimes
/// numbers and sometimes junk, so the proptest reaches past the first missing field.
fn query_strategy() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "id",
        "deviceid",
        "lat",
        "lon",
        "location",
        "timestamp",
        "speed",
        "bearing",
        "heading",
        "altitude",
        "accuracy",
        "hdop",
        "batt",
        "valid",
        "cell",
    ]);
    let value = prop_oneof![
        any::<f64>().prop_map(|v| v.to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        (-90.0..90.0f64, -180.0..180.0f64).prop_map(|(a, b)| format!("{a},{b}")),
        "[ -~%+]{0,24}",
        ".{0,8}",
    ];
    prop::collection::vec((key, value), 0..14).prop_map(|pairs| {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    })
}

/// JSON objects with the decoders' field names and arbitrary JSON scalars in them.
fn json_strategy() -> impl Strategy<Value = Vec<u8>> {
    let scalar = prop_oneof![
        any::<f64>()
            .prop_map(|v| serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)),
        any::<i64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
        Just(Value::String("location".into())),
        Just(Value::String("2021-07-21T08:06:34.444Z".into())),
    ];
    let keys = prop::sample::select(vec![
        "_type",
        "lat",
        "lon",
        "tst",
        "acc",
        "alt",
        "vel",
        "cog",
        "batt",
        "topic",
        "latitude",
        "longitude",
        "speed",
        "heading",
        "accuracy",
        "altitude",
        "level",
        "timestamp",
        "device_id",
    ]);
    let flat = prop::collection::btree_map(keys, scalar, 0..12)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()));
    (flat.clone(), flat.clone(), flat, any::<bool>()).prop_map(
        |(mut root, coords, battery, nest)| {
            if nest {
                let mut location = coords.clone();
                location["coords"] = coords;
                location["battery"] = battery;
                root["location"] = location;
            }
            serde_json::to_vec(&root).unwrap()
        },
    )
}

proptest! {
    #[test]
    fn arbitrary_strings_never_panic(s in ".{0,300}", hint in proptest::option::of(".{0,70}")) {
        let _ = osmand::decode_query(&s, NOW_MS);
        let _ = osmand::decode_json(s.as_bytes());
        let _ = owntracks::decode(s.as_bytes(), hint.as_deref());
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = osmand::decode_json(&b);
        let _ = owntracks::decode(&b, None);
        let _ = osmand::decode_query(&String::from_utf8_lossy(&b), NOW_MS);
    }

    #[test]
    fn field_shaped_queries_never_panic_and_accepted_ones_are_in_range(q in query_strategy()) {
        if let Ok(r) = osmand::decode_query(&q, NOW_MS) {
            prop_assert!(r.fix.lat_e7.abs() <= 900_000_000);
            prop_assert!(r.fix.lon_e7.abs() <= 1_800_000_000);
            prop_assert!(r.fix.at_ms >= 0);
            prop_assert!(r.battery_pct.is_none_or(|b| b <= 100));
            prop_assert!(r.bearing_deg.is_none_or(|b| (0.0..=360.0).contains(&b)));
            prop_assert!(!r.device_id.is_empty() && r.device_id.len() <= 64);
        }
    }

    #[test]
    fn field_shaped_json_never_panics(body in json_strategy(), hint in proptest::option::of("[a-z/]{1,8}")) {
        let _ = osmand::decode_json(&body);
        if let Ok(Some(r)) = owntracks::decode(&body, hint.as_deref()) {
            prop_assert!(r.fix.lat_e7.abs() <= 900_000_000);
            prop_assert!(r.fix.at_ms >= 0);
        }
    }
}
