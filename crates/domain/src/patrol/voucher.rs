//! Voucher codes (pure): what a citizen gets back when they redeem reward points for a
//! retailer offer, and what a retailer checks at the till.
//!
//! A code carries everything a retailer needs (serial, offer, points, day of issue, holder)
//! plus a truncated HMAC-SHA256 tag, so anyone holding the [`VoucherKey`] can check it
//! offline, without asking the server. Whether a serial was already used is the ledger's
//! business (serials are unique per server and come from it); this module only answers
//! "did our server issue exactly this voucher".
//!
//! The key is derived from the server secret with a fixed label, so the token-signing key is
//! never used directly and the voucher key can be handed to retailers without handing them
//! the power to sign session tokens.
//!
//! Format: `PV1-` then base32 (RFC 4648 alphabet, no padding) of
//! `payload || first 10 bytes of HMAC-SHA256(key, payload)`, in blocks of 4 joined by `-`.
//! The payload is compact binary: LEB128 varints for serial, points and day, then the offer
//! id and the holder, each as a varint length and UTF-8 bytes. Base32 has no look-alike
//! letter pairs and survives being read aloud or typed in either case; [`verify`] ignores
//! case, dashes and spaces.

use data_encoding::{BASE32_NOPAD, HEXLOWER_PERMISSIVE};
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// What every code starts with; the `1` is the format version (a later format would also
/// derive its own key, so codes of different versions can never be confused).
pub const CODE_PREFIX: &str = "PV1";

/// Bytes of the HMAC tag kept in a code: 80 bits make forging a code by guessing hopeless
/// (one in 2^80 per try) while keeping codes short enough to type.
pub const TAG_LEN: usize = 10;

/// Characters per dash-separated block, for reading aloud and typing.
const GROUP: usize = 4;

/// The label the voucher key is derived with; changing it invalidates every code.
const DERIVE_LABEL: &[u8] = b"peloton voucher v1";

/// Smallest possible payload: three one-byte varints and two zero lengths.
const MIN_PAYLOAD: usize = 5;

/// HMAC-SHA256's block size: keys up to this long are zero-padded, longer ones hashed
/// first (RFC 2104).
const HMAC_BLOCK: usize = 64;

/// One redeemed offer, as the ledger recorded it and as the code carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Voucher {
    /// Unique per server, assigned by the ledger; lets the retailer (or the server) refuse a
    /// second use of the same voucher.
    pub serial: u64,
    /// The offer redeemed, so the retailer knows what to hand over.
    pub offer_id: String,
    /// Points spent, so the code shows its value even if the offer's price changes later.
    pub points: u64,
    /// Day of issue (days since 1970-01-01 UTC), for the retailer's own expiry rules.
    pub issued_day: u32,
    /// The user id of the citizen who redeemed, so the retailer can ask for it.
    pub holder: String,
}

/// The secret that signs and checks voucher codes. Whoever holds it can verify codes
/// offline (and could mint them), so it is derived from, never equal to, the server secret.
#[derive(Clone)]
pub struct VoucherKey {
    /// The raw key, kept so it can be exported for retailers' offline checkers.
    bytes: [u8; 32],
    /// HMAC state already keyed with `bytes`, cloned per code to skip re-keying.
    mac: HmacSha256,
}

impl fmt::Debug for VoucherKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material into logs.
        f.write_str("VoucherKey(..)")
    }
}

impl VoucherKey {
    /// The voucher key of a server: HMAC-SHA256(server_secret, "peloton voucher v1").
    pub fn derive(server_secret: &[u8]) -> VoucherKey {
        let mut mac = keyed(server_secret);
        mac.update(DERIVE_LABEL);
        VoucherKey::from_bytes(mac.finalize().into_bytes().into())
    }

    /// A key from its raw bytes (as exported by [`VoucherKey::to_hex`]).
    pub fn from_bytes(bytes: [u8; 32]) -> VoucherKey {
        VoucherKey {
            bytes,
            mac: keyed(&bytes),
        }
    }

    /// The key as 64 lowercase hex digits, for configuring an offline checker.
    pub fn to_hex(&self) -> String {
        HEXLOWER_PERMISSIVE.encode(&self.bytes)
    }

    /// Reads a key written by [`VoucherKey::to_hex`] (either case, surrounding spaces ignored).
    pub fn from_hex(text: &str) -> Result<VoucherKey, KeyParseError> {
        let decoded = HEXLOWER_PERMISSIVE
            .decode(text.trim().as_bytes())
            .map_err(|_| KeyParseError)?;
        let bytes: [u8; 32] = decoded.try_into().map_err(|_| KeyParseError)?;
        Ok(VoucherKey::from_bytes(bytes))
    }

    /// The full HMAC of `payload`; callers keep the first [`TAG_LEN`] bytes.
    fn mac(&self, payload: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(payload);
        mac
    }
}

/// A voucher key in text form was not 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a voucher key is 64 hex digits")]
pub struct KeyParseError;

/// Why a code was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VoucherError {
    /// The text is not a voucher code at all (typo, truncated, wrong prefix): says which part.
    #[error("voucher code is malformed: {0}")]
    Malformed(&'static str),
    /// The code is well formed but was not issued with this key, or was altered.
    #[error("voucher code signature does not match: not issued by this server, or mistyped")]
    BadSignature,
}

/// HMAC-SHA256 keyed with `key` of any length, without a fallible constructor: RFC 2104
/// zero-pads keys up to the block size and hashes longer ones first, which is exactly what
/// `new_from_slice` does; doing it here makes the infallibility visible.
fn keyed(key: &[u8]) -> HmacSha256 {
    let mut block = [0u8; HMAC_BLOCK];
    if key.len() > HMAC_BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    <HmacSha256 as KeyInit>::new(&block.into())
}

/// The code for `v`, e.g. `PV1-AEBA-GAYT-...`. Deterministic: the same voucher and key
/// always give the same code.
pub fn issue(key: &VoucherKey, v: &Voucher) -> String {
    let mut bytes = encode_payload(v);
    let tag = key.mac(&bytes).finalize().into_bytes();
    bytes.extend_from_slice(&tag[..TAG_LEN]);
    let body = BASE32_NOPAD.encode(&bytes);
    let mut code = String::with_capacity(CODE_PREFIX.len() + body.len() * 5 / 4 + 2);
    code.push_str(CODE_PREFIX);
    for (i, c) in body.chars().enumerate() {
        if i % GROUP == 0 {
            code.push('-');
        }
        code.push(c);
    }
    code
}

/// Checks a code typed or scanned by anyone (case, dashes and spaces do not matter) and
/// returns the voucher it carries. The tag is checked, in constant time, before the payload
/// is interpreted, so a forged code learns nothing from which error it gets.
pub fn verify(key: &VoucherKey, code: &str) -> Result<Voucher, VoucherError> {
    let compact: String = code
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let body = compact
        .strip_prefix(CODE_PREFIX)
        .ok_or(VoucherError::Malformed("it must start with PV1-"))?;
    let bytes = BASE32_NOPAD.decode(body.as_bytes()).map_err(|_| {
        VoucherError::Malformed("it has characters other than A-Z and 2-7, or a wrong length")
    })?;
    if bytes.len() < MIN_PAYLOAD + TAG_LEN {
        return Err(VoucherError::Malformed("it is too short"));
    }
    let (payload, tag) = bytes.split_at(bytes.len() - TAG_LEN);
    key.mac(payload)
        .verify_truncated_left(tag)
        .map_err(|_| VoucherError::BadSignature)?;
    decode_payload(payload)
}

fn encode_payload(v: &Voucher) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + v.offer_id.len() + v.holder.len());
    put_varint(&mut out, v.serial);
    put_varint(&mut out, v.points);
    put_varint(&mut out, u64::from(v.issued_day));
    put_bytes(&mut out, v.offer_id.as_bytes());
    put_bytes(&mut out, v.holder.as_bytes());
    out
}

/// Reads an authenticated payload; strict (canonical varints, no trailing bytes) so each
/// voucher has exactly one code.
fn decode_payload(payload: &[u8]) -> Result<Voucher, VoucherError> {
    let mut reader = Reader { rest: payload };
    let serial = reader.varint("serial")?;
    let points = reader.varint("points")?;
    let issued_day = u32::try_from(reader.varint("issued_day")?)
        .map_err(|_| VoucherError::Malformed("issued_day is out of range"))?;
    let offer_id = reader.text("offer_id")?;
    let holder = reader.text("holder")?;
    if !reader.rest.is_empty() {
        return Err(VoucherError::Malformed("it has bytes after the holder"));
    }
    Ok(Voucher {
        serial,
        offer_id,
        points,
        issued_day,
        holder,
    })
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        // Truncation is the point: the low 7 bits go out with the continuation flag.
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A cursor over a payload whose errors name the field being read.
struct Reader<'a> {
    rest: &'a [u8],
}

impl Reader<'_> {
    fn varint(&mut self, field: &'static str) -> Result<u64, VoucherError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let (&byte, rest) = self
                .rest
                .split_first()
                .ok_or(VoucherError::Malformed(truncated(field)))?;
            self.rest = rest;
            let low = u64::from(byte & 0x7f);
            // The tenth byte may only hold the top bit of a u64.
            if i == 9 && low > 1 {
                return Err(VoucherError::Malformed(overflow(field)));
            }
            value |= low << (7 * i);
            if byte & 0x80 == 0 {
                if byte == 0 && i > 0 {
                    return Err(VoucherError::Malformed(overflow(field)));
                }
                return Ok(value);
            }
        }
        Err(VoucherError::Malformed(overflow(field)))
    }

    fn text(&mut self, field: &'static str) -> Result<String, VoucherError> {
        let len = usize::try_from(self.varint(field)?)
            .map_err(|_| VoucherError::Malformed(truncated(field)))?;
        if len > self.rest.len() {
            return Err(VoucherError::Malformed(truncated(field)));
        }
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        String::from_utf8(bytes.to_vec()).map_err(|_| VoucherError::Malformed(not_text(field)))
    }
}

fn truncated(field: &'static str) -> &'static str {
    match field {
        "serial" => "serial is cut short",
        "points" => "points is cut short",
        "issued_day" => "issued_day is cut short",
        "offer_id" => "offer_id is cut short",
        _ => "holder is cut short",
    }
}

fn overflow(field: &'static str) -> &'static str {
    match field {
        "serial" => "serial is not a canonical number",
        "points" => "points is not a canonical number",
        "issued_day" => "issued_day is not a canonical number",
        "offer_id" => "offer_id length is not a canonical number",
        _ => "holder length is not a canonical number",
    }
}

fn not_text(field: &'static str) -> &'static str {
    match field {
        "offer_id" => "offer_id is not UTF-8 text",
        _ => "holder is not UTF-8 text",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Voucher {
        Voucher {
            serial: 1_234,
            offer_id: "coffee-10".into(),
            points: 250,
            issued_day: 20_500,
            holder: "u-ana".into(),
        }
    }

    fn key() -> VoucherKey {
        VoucherKey::derive(b"server secret for tests, at least 32 bytes")
    }

    #[test]
    fn round_trip_and_format() {
        let code = issue(&key(), &sample());
        assert!(code.starts_with("PV1-"), "{code}");
        for group in code.split('-').skip(1) {
            assert!((1..=4).contains(&group.len()), "{code}");
            assert!(group.chars().all(|c| matches!(c, 'A'..='Z' | '2'..='7')));
        }
        assert_eq!(verify(&key(), &code).unwrap(), sample());
        assert_eq!(issue(&key(), &sample()), code, "issuing is deterministic");
    }

    #[test]
    fn codes_stay_short() {
        let code = issue(&key(), &sample());
        // 2+2+3 bytes of numbers, 10+6 of strings, 10 of tag = 33 bytes = 53 base32 chars
        // in 14 dash-led groups after the prefix.
        assert_eq!(code.len(), 3 + 53 + 14, "{} chars: {code}", code.len());
        let tiny = Voucher {
            serial: 1,
            offer_id: "o".into(),
            points: 1,
            issued_day: 0,
            holder: "h".into(),
        };
        // 7 bytes of payload and 10 of tag: 136 bits, 28 base32 characters.
        assert_eq!(issue(&key(), &tiny).replace('-', "").len(), 3 + 28);
    }

    #[test]
    fn extremes_round_trip() {
        let long = "x".repeat(64);
        for v in [
            Voucher {
                serial: u64::MAX,
                offer_id: long.clone(),
                points: u64::MAX,
                issued_day: u32::MAX,
                holder: long.clone(),
            },
            Voucher {
                serial: 0,
                offer_id: String::new(),
                points: 0,
                issued_day: 0,
                holder: String::new(),
            },
        ] {
            assert_eq!(verify(&key(), &issue(&key(), &v)).unwrap(), v);
        }
    }

    #[test]
    fn every_single_character_change_is_rejected() {
        let code = issue(&key(), &sample());
        let normal = |s: &str| s.replace(['-', ' '], "").to_ascii_uppercase();
        let alphabet: Vec<char> = ('A'..='Z').chain('0'..='9').chain(['-']).collect();
        let chars: Vec<char> = code.chars().collect();
        let mut tried = 0;
        for i in 0..chars.len() {
            for &c in &alphabet {
                let mut changed = chars.clone();
                changed[i] = c;
                let changed: String = changed.into_iter().collect();
                if normal(&changed) == normal(&code) {
                    continue;
                }
                tried += 1;
                assert!(
                    verify(&key(), &changed).is_err(),
                    "accepted {changed} (from {code})"
                );
            }
        }
        assert!(tried > 1_000);
    }

    #[test]
    fn wrong_key_is_rejected() {
        let code = issue(&key(), &sample());
        let other = VoucherKey::derive(b"another server");
        assert_eq!(verify(&other, &code), Err(VoucherError::BadSignature));
    }

    #[test]
    fn lowercase_and_spacing_are_accepted() {
        let code = issue(&key(), &sample());
        let compact = code.replace('-', "");
        let variants = [
            code.to_ascii_lowercase(),
            compact.clone(),
            compact.to_ascii_lowercase(),
            format!("  {} ", code.replace('-', " ")),
            code.replace('-', "--"),
            format!("pv1{}", &compact[3..].to_ascii_lowercase()),
            compact
                .chars()
                .enumerate()
                .flat_map(|(i, c)| if i % 3 == 0 { vec!['-', c] } else { vec![c] })
                .collect(),
        ];
        for text in variants {
            assert_eq!(verify(&key(), &text).unwrap(), sample(), "{text}");
        }
    }

    #[test]
    fn malformed_codes_say_why() {
        let k = key();
        assert!(matches!(verify(&k, ""), Err(VoucherError::Malformed(_))));
        assert!(matches!(
            verify(&k, "PV2-AAAA"),
            Err(VoucherError::Malformed(_))
        ));
        assert!(matches!(
            verify(&k, "PV1-AAAA"),
            Err(VoucherError::Malformed(_))
        ));
        assert!(matches!(
            verify(&k, "PV1-AA!A"),
            Err(VoucherError::Malformed(_))
        ));
        let code = issue(&k, &sample());
        let cut = &code[..code.len() - 2];
        assert!(verify(&k, cut).is_err());
        let message = VoucherError::Malformed("it is too short").to_string();
        assert!(message.contains("voucher code"), "{message}");
    }

    #[test]
    fn derived_key_is_standard_hmac_and_not_the_secret() {
        for len in [0usize, 1, 32, 63, 64, 65, 200] {
            let secret: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut reference = <HmacSha256 as KeyInit>::new_from_slice(&secret).unwrap();
            reference.update(DERIVE_LABEL);
            let expected: [u8; 32] = reference.finalize().into_bytes().into();
            let derived = VoucherKey::derive(&secret);
            assert_eq!(derived.bytes, expected, "secret of {len} bytes");
            assert_ne!(&derived.bytes[..], &secret[..]);
        }
        assert_eq!(format!("{:?}", key()), "VoucherKey(..)");
    }

    #[test]
    fn exported_key_verifies_the_same_codes() {
        let code = issue(&key(), &sample());
        let hex = key().to_hex();
        assert_eq!(hex.len(), 64);
        let imported = VoucherKey::from_hex(&hex.to_ascii_uppercase()).unwrap();
        assert_eq!(verify(&imported, &code).unwrap(), sample());
        assert_eq!(VoucherKey::from_hex("abcd").unwrap_err(), KeyParseError);
        assert!(VoucherKey::from_hex(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn non_canonical_payloads_are_malformed() {
        // An overlong varint (0x80 0x00 for zero) must not decode, so one voucher has one code.
        let mut payload = vec![0x80, 0x00];
        payload.extend_from_slice(&[1, 1, 0, 0]);
        assert!(decode_payload(&payload).is_err());
        // Trailing bytes after the holder.
        let mut payload = encode_payload(&sample());
        payload.push(0);
        assert!(decode_payload(&payload).is_err());
        // An 11-byte varint overflows.
        assert!(decode_payload(&[0xff; 11]).is_err());
        // A tenth byte carrying more than the top bit overflows.
        let mut payload = vec![0xff; 9];
        payload.push(0x02);
        assert!(decode_payload(&payload).is_err());
        // Bad UTF-8 in the offer id.
        assert!(decode_payload(&[1, 1, 1, 1, 0xff, 0]).is_err());
        // A length longer than what is left.
        assert!(decode_payload(&[1, 1, 1, 9, b'a']).is_err());
        // issued_day must fit in u32.
        let mut payload = vec![1, 1];
        put_varint(&mut payload, u64::from(u32::MAX) + 1);
        payload.extend_from_slice(&[0, 0]);
        assert!(decode_payload(&payload).is_err());
    }

    proptest! {
        #[test]
        fn any_voucher_round_trips(
            serial in any::<u64>(),
            points in any::<u64>(),
            issued_day in any::<u32>(),
            offer_id in "[A-Za-z0-9_.-]{1,64}",
            holder in "[A-Za-z0-9_.-]{1,64}",
        ) {
            let v = Voucher { serial, offer_id, points, issued_day, holder };
            prop_assert_eq!(verify(&key(), &issue(&key(), &v)).unwrap(), v);
        }

        #[test]
        fn garbage_never_panics(text in ".{0,200}") {
            let _ = verify(&key(), &text);
        }

        #[test]
        fn base32_garbage_never_panics(body in "[A-Z2-7]{0,120}") {
            let _ = verify(&key(), &format!("PV1-{body}"));
        }

        #[test]
        fn arbitrary_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = decode_payload(&payload);
        }
    }
}
