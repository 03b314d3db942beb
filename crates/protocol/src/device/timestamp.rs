//! The timestamp forms phone tracking apps send, turned into ms since the epoch without a
//! date library: the decoders in [`super::osmand`] and [`super::owntracks`] call these, and
//! nothing here reads a clock (a missing timestamp is the caller's `now_ms`).
//!
//! Accepted forms, as Traccar's `OsmAndProtocolDecoder` accepts them:
//!
//! - an integer: seconds when below `Integer.MAX_VALUE` (2147483647), else milliseconds;
//! - ISO 8601 with a `T`: `yyyy-MM-ddTHH:mm[:ss[.fffffffff]]` then `Z` or `±HH:MM[:SS]`
//!   (Java's `ISO_ZONED_DATE_TIME` without the `[Region/Zone]` suffix, which we refuse);
//! - `yyyy-MM-dd HH:mm:ss`, which Traccar reads in the *server's* time zone; we read it as
//!   UTC, because a server's zone is an accident of deployment and UTC is what such a
//!   server almost always runs in.
//!
//! Every result is checked to lie in [`MIN_AT_MS`]..=[`MAX_AT_MS`], so later arithmetic on
//! it cannot overflow.

/// The earliest instant accepted: the epoch. A phone fix before 1970 is a broken clock.
pub const MIN_AT_MS: i64 = 0;
/// The latest instant accepted: 9999-12-31T23:59:59.999Z, the end of four-digit years.
pub const MAX_AT_MS: i64 = 253_402_300_799_999;

/// Traccar's threshold between seconds and milliseconds (`Integer.MAX_VALUE`): an integer
/// strictly below it is seconds. Seconds that large are 2038; ms that small are Jan 1970.
const SECONDS_BELOW: i64 = 2_147_483_647;

/// Epoch seconds or milliseconds, told apart by magnitude as Traccar does.
pub fn from_epoch_number(value: i64) -> Option<i64> {
    let ms = if value < SECONDS_BELOW {
        value.checked_mul(1000)?
    } else {
        value
    };
    in_range(ms)
}

/// Epoch seconds (OwnTracks' `tst`).
pub fn from_epoch_seconds(seconds: i64) -> Option<i64> {
    in_range(seconds.checked_mul(1000)?)
}

/// The OsmAnd query `timestamp` value: an integer, ISO 8601 if it holds a `T`, else the
/// `yyyy-MM-dd HH:mm:ss` form; the same decision order as Traccar.
pub fn parse_query_timestamp(value: &str) -> Option<i64> {
    if let Ok(number) = value.parse::<i64>() {
        return from_epoch_number(number);
    }
    if value.contains('T') {
        parse_iso8601(value)
    } else {
        parse_space_separated(value)
    }
}

/// ISO 8601 date and time with a mandatory zone (`Z` or a numeric offset).
pub fn parse_iso8601(value: &str) -> Option<i64> {
    let b = value.as_bytes();
    let (date_ms, rest) = date(b)?;
    let rest = rest.strip_prefix(b"T")?;
    let (time_ms, rest) = time(rest)?;
    let offset_ms = offset(rest)?;
    in_range(date_ms.checked_add(time_ms)?.checked_sub(offset_ms)?)
}

/// `yyyy-MM-dd HH:mm:ss` exactly, read as UTC.
pub fn parse_space_separated(value: &str) -> Option<i64> {
    let b = value.as_bytes();
    let (date_ms, rest) = date(b)?;
    let rest = rest.strip_prefix(b" ")?;
    if rest.len() != 8 || rest[2] != b':' || rest[5] != b':' {
        return None;
    }
    let hour = digits(&rest[0..2])?;
    let minute = digits(&rest[3..5])?;
    let second = digits(&rest[6..8])?;
    let time_ms = hms_ms(hour, minute, second)?;
    in_range(date_ms.checked_add(time_ms)?)
}

fn in_range(ms: i64) -> Option<i64> {
    (MIN_AT_MS..=MAX_AT_MS).contains(&ms).then_some(ms)
}

/// All-ASCII-digit slice as a number; None on anything else (including an empty slice).
fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 9 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')))
}

/// `yyyy-MM-dd` at the start of `b`: ms of that midnight UTC, and what follows.
fn date(b: &[u8]) -> Option<(i64, &[u8])> {
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some((days.checked_mul(86_400_000)?, &b[10..]))
}

/// `HH:mm[:ss[.f{1,9}]]` at the start of `b`: ms into the day, and what follows.
fn time(b: &[u8]) -> Option<(i64, &[u8])> {
    if b.len() < 5 || b[2] != b':' {
        return None;
    }
    let hour = digits(&b[0..2])?;
    let minute = digits(&b[3..5])?;
    let mut rest = &b[5..];
    let mut second = 0;
    let mut fraction_ms = 0;
    if rest.len() >= 3 && rest[0] == b':' {
        second = digits(&rest[1..3])?;
        rest = &rest[3..];
        if let Some(after_dot) = rest.strip_prefix(b".") {
            let len = after_dot.iter().take_while(|c| c.is_ascii_digit()).count();
            if len == 0 || len > 9 {
                return None;
            }
            // Milliseconds are the first three fraction digits; the rest is truncated.
            let ms_digits = &after_dot[..len.min(3)];
            let scale = [100, 10, 1][ms_digits.len() - 1];
            fraction_ms = digits(ms_digits)? * scale;
            rest = &after_dot[len..];
        }
    }
    Some((hms_ms(hour, minute, second)? + fraction_ms, rest))
}

fn hms_ms(hour: i64, minute: i64, second: i64) -> Option<i64> {
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    Some(((hour * 60 + minute) * 60 + second) * 1000)
}

/// The zone suffix, the whole of what is left: `Z`, `±HH:MM` or `±HH:MM:SS`; ms east of UTC.
fn offset(b: &[u8]) -> Option<i64> {
    if b == b"Z" {
        return Some(0);
    }
    let sign = match b.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let b = &b[1..];
    let (hours, minutes, seconds) = match b.len() {
        5 if b[2] == b':' => (digits(&b[0..2])?, digits(&b[3..5])?, 0),
        8 if b[2] == b':' && b[5] == b':' => {
            (digits(&b[0..2])?, digits(&b[3..5])?, digits(&b[6..8])?)
        }
        _ => return None,
    };
    // Java's ZoneOffset allows at most ±18:00.
    if hours > 18 || minutes > 59 || seconds > 59 || (hours == 18 && minutes + seconds > 0) {
        return None;
    }
    Some(sign * ((hours * 60 + minutes) * 60 + seconds) * 1000)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm);
/// `year` is 0..=9999 here, so nothing overflows.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_numbers_split_at_integer_max_like_traccar() {
        assert_eq!(from_epoch_number(1_377_177_267), Some(1_377_177_267_000));
        assert_eq!(
            from_epoch_number(1_442_068_686_579),
            Some(1_442_068_686_579)
        );
        assert_eq!(from_epoch_number(2_147_483_646), Some(2_147_483_646_000));
        assert_eq!(from_epoch_number(2_147_483_647), Some(2_147_483_647));
        assert_eq!(from_epoch_number(-1), None);
        assert_eq!(from_epoch_number(i64::MAX), None);
        assert_eq!(from_epoch_seconds(i64::MAX), None);
    }

    #[test]
    fn iso8601_with_zone() {
        // `date -u -d 2016-01-27T18:55:47Z +%s` = 1453920947.
        assert_eq!(
            parse_iso8601("2016-01-27T18:55:47Z"),
            Some(1_453_920_947_000)
        );
        assert_eq!(
            parse_iso8601("2025-06-15T13:45:12.862Z"),
            Some(1_749_995_112_862)
        );
        assert_eq!(
            parse_iso8601("2016-01-27T20:55:47+02:00"),
            Some(1_453_920_947_000)
        );
        assert_eq!(
            parse_iso8601("2016-01-27T18:55:47.123456789Z"),
            Some(1_453_920_947_123)
        );
        assert_eq!(parse_iso8601("2016-01-27T18:55Z"), Some(1_453_920_900_000));
        assert_eq!(
            parse_iso8601("2024-02-29T00:00:00Z"),
            Some(1_709_164_800_000)
        );
        assert_eq!(parse_iso8601("1970-01-01T00:00:00Z"), Some(0));
        for bad in [
            "2016-01-27T18:55:47",
            "2016-01-27T18:55:47+0200",
            "2016-01-27T18:55:47Z[UTC]",
            "2023-02-29T00:00:00Z",
            "2016-13-01T00:00:00Z",
            "2016-01-27T24:00:00Z",
            "2016-01-27T18:55:60Z",
            "2016-01-27T18:55:47.Z",
            "2016-01-27T18:55:47+19:00",
            "1969-12-31T23:59:59Z",
            "+2016-01-27T18:55:47Z",
            "",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }

    #[test]
    fn query_timestamp_forms() {
        assert_eq!(
            parse_query_timestamp("2014-06-04 09:10:11"),
            Some(1_401_873_011_000)
        );
        assert_eq!(parse_query_timestamp("1377177267"), Some(1_377_177_267_000));
        assert_eq!(parse_query_timestamp("2014-06-04 09:10"), None);
        assert_eq!(parse_query_timestamp("yesterday"), None);
    }
}
