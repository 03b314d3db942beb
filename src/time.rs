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
    if ms < 0 {
        return format!("{ms}ms");
    }
    let t = UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs());
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parses a human duration such as `1h`, `15m` or `90s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration like 1h or 15m ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
