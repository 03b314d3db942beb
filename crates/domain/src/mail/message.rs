//! One mail as a job carries it (pure), its validation, and the stable identities derived
//! from where it came from: the job id and the `Message-ID` header.
//!
//! Identity is derived, not drawn at random: the job id is a hash of the envelope's
//! (correlation id, sequence number) and the message's index in it, so the same input always
//! names the same job, and the `Message-ID` is built from the job id. A resubmission after a
//! crash therefore finds the existing job instead of creating a twin, and a resend after a
//! crash mid-send carries the same `Message-ID` (and HTTP `Idempotency-Key`), so the receiver
//! can deduplicate it.

use crate::error::Rejection;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest subject accepted, in characters.
pub const MAX_SUBJECT_CHARS: usize = 200;
/// Largest body accepted, in bytes; mail jobs are notifications, not attachments.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What to send to one person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailMessage {
    /// The recipient's address.
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    pub body: String,
}

impl MailMessage {
    /// Checks a message that came from outside, naming the field at fault.
    pub fn validate(&self) -> Result<(), Rejection> {
        crate::ids::validate_email("to", &self.to)?;
        if self.subject.chars().count() > MAX_SUBJECT_CHARS || self.subject.contains(['\r', '\n']) {
            return Err(Rejection::invalid(format!(
                "subject must be one line of at most {MAX_SUBJECT_CHARS} characters"
            )));
        }
        if self.body.len() > MAX_BODY_BYTES {
            return Err(Rejection::invalid(format!(
                "body must be at most {MAX_BODY_BYTES} bytes, got {}",
                self.body.len()
            )));
        }
        Ok(())
    }
}

/// Identifies a mail job; derived from its origin (see the module doc). 24 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    /// The job for message `index` of envelope (`correlation`, `sequence`).
    pub fn derive(correlation: &str, sequence: u64, index: u32) -> JobId {
        let mut input = Vec::with_capacity(correlation.len() + 16);
        input.extend_from_slice(correlation.as_bytes());
        input.push(0);
        input.extend_from_slice(&sequence.to_be_bytes());
        input.extend_from_slice(&index.to_be_bytes());
        // Two independent hashes (FNV-1a 64 and CRC-32) make 96 bits: collisions are not a
        // concern at millions of jobs.
        let mut fnv: u64 = 0xcbf2_9ce4_8422_2325;
        for b in &input {
            fnv ^= u64::from(*b);
            fnv = fnv.wrapping_mul(0x0000_0100_0000_01b3);
        }
        JobId(format!("{fnv:016x}{:08x}", crc32fast::hash(&input)))
    }

    /// Validates a job id that came from outside.
    pub fn parse(text: &str) -> Result<JobId, Rejection> {
        if text.len() != 24 || !text.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Rejection::invalid(format!(
                "a mail job id is 24 hex digits, got `{}`",
                text.chars().take(40).collect::<String>()
            )));
        }
        Ok(JobId(text.to_ascii_lowercase()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `Message-ID` of this job's mail, the same on every attempt: `<id@domain>`.
    pub fn message_id(&self, domain: &str) -> String {
        format!("<{}@{domain}>", self.0)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_and_message_ids_are_stable_and_distinct() {
        let a = JobId::derive("order-7", 1, 0);
        assert_eq!(a, JobId::derive("order-7", 1, 0));
        assert_ne!(a, JobId::derive("order-7", 1, 1));
        assert_ne!(a, JobId::derive("order-7", 2, 0));
        assert_ne!(a, JobId::derive("order-", 71, 0));
        assert_eq!(JobId::parse(a.as_str()).unwrap(), a);
        assert_eq!(
            a.message_id("peloton.local"),
            format!("<{a}@peloton.local>")
        );
    }

    #[test]
    fn bad_messages_name_the_field() {
        let ok = MailMessage {
            to: "ana@example.org".into(),
            subject: "Results".into(),
            body: "You finished 3rd.".into(),
        };
        assert!(ok.validate().is_ok());
        for to in [
            "",
            "ana",
            "a@b@c",
            "ana@example.org\r\nBcc: x@y",
            "<a@b>",
            "a b@c",
        ] {
            let m = MailMessage {
                to: to.into(),
                ..ok.clone()
            };
            assert!(m.validate().unwrap_err().message.contains("to "), "{to:?}");
        }
        let m = MailMessage {
            subject: "a\nBcc: x@y".into(),
            ..ok.clone()
        };
        assert!(m.validate().unwrap_err().message.contains("subject"));
        let m = MailMessage {
            body: "x".repeat(MAX_BODY_BYTES + 1),
            ..ok
        };
        assert!(m.validate().unwrap_err().message.contains("body"));
    }

    proptest! {
        #[test]
        fn derived_ids_always_parse(c in "[A-Za-z0-9_.-]{1,64}", s: u64, i: u32) {
            let id = JobId::derive(&c, s, i);
            prop_assert_eq!(JobId::parse(id.as_str()).unwrap(), id);
        }
    }
}
