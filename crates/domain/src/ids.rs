//! Identifiers of the things actors stand for.
//!
//! An id is the only way to address an actor across domains (the registry turns it into a
//! handle), so ids are plain validated strings that serialize the same everywhere and will
//! still mean the same thing when actors live on several nodes.

use crate::error::Rejection;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The longest id we accept from outside; keeps journal keys and log lines short.
pub const MAX_ID_LEN: usize = 64;

/// Identifies a race. Server-generated ids sort by creation time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RaceId(String);

impl RaceId {
    /// A fresh, time-ordered id (see [`time_ordered_id`]).
    pub fn generate(now_ms: i64) -> Self {
        RaceId(time_ordered_id(now_ms))
    }

    /// Validates an id that came from outside.
    pub fn parse(text: &str) -> Result<Self, Rejection> {
        validate_id("race id", text)?;
        Ok(RaceId(text.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A fresh id that sorts by creation time: 12 hex digits of milliseconds then 8 random hex
/// digits (races, connect requests).
pub fn time_ordered_id(now_ms: i64) -> String {
    let mut random = [0u8; 4];
    // getrandom only fails when the OS has no entropy source at all; a time-based id
    // with a zero suffix is still unique per millisecond per process in that case.
    let _ = getrandom::fill(&mut random);
    format!(
        "{:012x}{:08x}",
        now_ms.max(0) & 0xffff_ffff_ffff,
        u32::from_be_bytes(random)
    )
}

/// Longest mail address, bytes (RFC 5321's path limit).
pub const MAX_EMAIL_LEN: usize = 254;

/// The one check of a mail address (mail jobs, racers, officers, citizens): `local@domain`
/// with a dot inside the domain, no spaces, controls or `<>,;"` (no header injection, no
/// lists), at most [`MAX_EMAIL_LEN`] bytes. Deliverability is the mail system's job; this
/// keeps garbage out where an address is typed once and used for months.
pub fn validate_email(field: &str, address: &str) -> Result<(), Rejection> {
    let clean = address.len() <= MAX_EMAIL_LEN
        && !address.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"')
        });
    let shaped = address.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
    });
    if clean && shaped {
        Ok(())
    } else {
        Err(Rejection::invalid(format!(
            "{field} must be one address like name@example.org, got `{}`",
            address.chars().take(80).collect::<String>()
        )))
    }
}

/// Ids are limited to `[A-Za-z0-9_.-]` so they are safe in journal keys, file names,
/// log lines and URLs without escaping.
pub fn validate_id(what: &str, text: &str) -> Result<(), Rejection> {
    if text.is_empty() || text.len() > MAX_ID_LEN {
        return Err(Rejection::invalid(format!(
            "{what} must be 1 to {MAX_ID_LEN} characters, got {}",
            text.len()
        )));
    }
    if let Some(c) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(Rejection::invalid(format!(
            "{what} may only contain letters, digits, '_', '-' and '.', found {c:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_time_ordered() {
        let a = RaceId::generate(1_000);
        let b = RaceId::generate(2_000);
        assert!(RaceId::parse(a.as_str()).is_ok());
        assert!(a < b);
    }

    #[test]
    fn one_check_for_every_mail_address() {
        for good in [
            "a@b.org",
            "first.last+tag@sub.example.co.uk",
            "ü@exämple.de",
        ] {
            assert!(validate_email("email", good).is_ok(), "{good}");
        }
        let long = format!("{}@example.org", "a".repeat(250));
        for bad in [
            "",
            "a",
            "@b.org",
            "a@",
            "a@b",
            "a@b.",
            "a@.b",
            "a@b..c",
            "a@b@c.org",
            "a b@c.org",
            "a\"b@c.org",
            "a<b@c.org",
            "a,b@c.org",
            "a@b.org\r\nBcc: x@y.org",
            &long,
        ] {
            assert!(validate_email("email", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_reject_separators_and_length() {
        assert!(RaceId::parse("").is_err());
        assert!(RaceId::parse("a/b").is_err());
        assert!(RaceId::parse("a\0b").is_err());
        assert!(RaceId::parse(&"x".repeat(65)).is_err());
        assert!(RaceId::parse("tour-2026.stage_1").is_ok());
    }
}
