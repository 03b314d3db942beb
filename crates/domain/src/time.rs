//! Wall-clock time as the protocol and the journal see it: signed milliseconds since the
//! Unix epoch. Pure state never reads the clock; actors read it here and pass it in, so
//! rules are testable with any time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, the one time unit on the wire and in storage.
pub type UnixMillis = i64;

/// The current wall-clock time.
pub fn now_ms() -> UnixMillis {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// Parses an RFC 3339 timestamp such as `2026-12-01T09:00:00Z`.
pub fn parse_rfc3339(text: &str) -> Result<UnixMillis, String> {
    let t = humantime::parse_rfc3339_weak(text.trim())
        .map_err(|e| format!("`{text}` is not an RFC 3339 time ({e})"))?;
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).map_err(|_| format!("`{text}` is out of range")),
        Err(_) => Err(format!("`{text}` is before 1970")),
    }
}

/// Formats milliseconds as RFC 3339 (UTC, second precision) for people.
pub fn format_rfc3339(ms: UnixMillis) -> String {
    // humantime writes years 1970..=9999 only and panics (in `Display`) beyond: any time
    // outside is shown as the raw number, since it may have come from a client.
    if !(0..=LAST_RFC3339_MS).contains(&ms) {
        return format!("{ms}ms");
    }
    let t = UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs());
    humantime::format_rfc3339_seconds(t).to_string()
}

/// 9999-12-31T23:59:59.999Z, the last instant RFC 3339's four-digit year can write.
const LAST_RFC3339_MS: UnixMillis = 253_402_300_799_999;

/// Parses a human duration such as `1h`, `15m` or `90s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration like 1h or 15m ({e})"))
}

/// Days since 1970-01-01 (UTC) as `YYYY-MM-DD` (proleptic Gregorian; H. Hinnant's
/// civil-from-days).
pub fn format_day(day: u32) -> String {
    let z = i64::from(day) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Parses `YYYY-MM-DD` (1970 or later) into days since 1970-01-01 (UTC).
pub fn parse_day(text: &str) -> Result<u32, String> {
    let bad = || format!("`{text}` is not a date like 2026-11-27");
    let mut parts = text.trim().splitn(3, '-');
    let mut next = |digits: usize| -> Result<i64, String> {
        let part = parts.next().ok_or_else(bad)?;
        if part.len() != digits || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse().map_err(|_| bad())
    };
    let (y, m, d) = (next(4)?, next(2)?, next(2)?);
    if !(1..=12).contains(&m) || d < 1 || y < 1970 {
        return Err(bad());
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if d > month_days[(m - 1) as usize] {
        return Err(bad());
    }
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    u32::try_from(era * 146_097 + doe - 719_468).map_err(|_| bad())
}

#[cfg(test)]
mod tests {

    #[test]
    fn any_time_formats_without_panicking() {
        for ms in [
            i64::MIN,
            -1,
            0,
            LAST_RFC3339_MS,
            LAST_RFC3339_MS + 1,
            i64::MAX,
        ] {
            let text = format_rfc3339(ms);
            assert!(!text.is_empty());
        }
        assert_eq!(format_rfc3339(LAST_RFC3339_MS), "9999-12-31T23:59:59Z");
        assert_eq!(format_rfc3339(LAST_RFC3339_MS + 1), "253402300800000ms");
    }

    use super::*;

    #[test]
    fn days_and_dates_round_trip() {
        assert_eq!(format_day(0), "1970-01-01");
        assert_eq!(parse_day("1970-01-01").unwrap(), 0);
        assert_eq!(format_day(20_784), "2026-11-27");
        for day in [0, 59, 60, 365, 10_956, 11_016, 20_784, 40_000] {
            assert_eq!(parse_day(&format_day(day)).unwrap(), day);
        }
        assert_eq!(
            parse_day("2024-02-29").unwrap() + 1,
            parse_day("2024-03-01").unwrap()
        );
        for bad in [
            "2023-02-29",
            "2026-13-01",
            "2026-1-01",
            "1969-12-31",
            "x",
            "",
        ] {
            assert!(parse_day(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rfc3339_round_trips_at_second_precision() {
        let ms = parse_rfc3339("2026-12-01T09:00:00Z").unwrap();
        assert_eq!(ms, 1_796_115_600_000);
        assert_eq!(format_rfc3339(ms), "2026-12-01T09:00:00Z");
    }

    #[test]
    fn bad_times_and_durations_are_explained() {
        assert!(parse_rfc3339("yesterday")
            .unwrap_err()
            .contains("yesterday"));
        assert!(parse_duration("soon").unwrap_err().contains("soon"));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
    }
}
