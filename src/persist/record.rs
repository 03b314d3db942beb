//! The byte encoding of stored values.
//!
//! A value (an event, a snapshot's state) is one format-version byte ([`RECORD_VERSION`]),
//! then bincode 2 (standard configuration: little-endian varints) of the value. The version
//! byte lets a later build read old records or refuse them by name instead of misreading them.
//!
//! A journal record holds either one such value (every record of schema 3, and appends of a
//! single event since) or a *batch*: all the events of one append, stored under one key so
//! the writer inserts one sled key per append instead of one per event (a racer's batch of
//! ten fixes cost ten tree inserts, half the server's CPU under saturated intake). A batch
//! starts with [`BATCH_MARKER`], a byte no value format uses, so the two never read as each
//! other:
//! ```text
//! BATCH_MARKER | varint count (>= 2) | count x (varint length | value)
//! ```
//! Varints are LEB128 (7 bits a byte, low group first). The events inside keep their own
//! version byte, so a batch is only framing: [`unbatch`] hands back exactly the bytes that
//! were appended.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The record format this build writes.
pub const RECORD_VERSION: u8 = 1;

/// Decoding never allocates more than this for one record, whatever its length prefixes
/// claim, so a damaged record cannot exhaust memory.
const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;

/// Encodes `value` as a versioned record.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    let mut out = vec![RECORD_VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, config()).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Decodes a versioned record, refusing unknown versions and trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let Some((&version, body)) = bytes.split_first() else {
        return Err("empty record".into());
    };
    if version != RECORD_VERSION {
        return Err(format!(
            "record format {version} is unknown to this build (reads {RECORD_VERSION})"
        ));
    }
    let (value, used) =
        bincode::serde::decode_from_slice(body, config()).map_err(|e| e.to_string())?;
    if used != body.len() {
        return Err(format!(
            "{} trailing bytes after the record",
            body.len() - used
        ));
    }
    Ok(value)
}

/// The first byte of a batch record. Value formats count up from 1 ([`RECORD_VERSION`]); a
/// batch is framing, not a value format, so it takes a byte from the other end of the range.
pub const BATCH_MARKER: u8 = 0xB7;

/// The longest LEB128 encoding of a `u64`.
const MAX_VARINT_BYTES: usize = 10;

/// Whether a stored journal value is a batch record (else it is one value).
pub fn is_batch(stored: &[u8]) -> bool {
    stored.first() == Some(&BATCH_MARKER)
}

/// Frames `events` (each already [`encode`]d) as one journal value: the value itself for a
/// single event, so a lone event is stored exactly as schema 3 stored it, else a batch record.
/// Takes the events by value so a single event is moved, not copied.
pub fn batch(mut events: Vec<Vec<u8>>) -> Vec<u8> {
    if events.len() == 1 {
        return events.pop().unwrap_or_default();
    }
    let body: usize = events.iter().map(|e| e.len() + 2).sum();
    let mut out = Vec::with_capacity(1 + MAX_VARINT_BYTES + body);
    out.push(BATCH_MARKER);
    put_varint(&mut out, events.len() as u64);
    for event in &events {
        put_varint(&mut out, event.len() as u64);
        out.extend_from_slice(event);
    }
    out
}

/// How many events a stored journal value holds, reading only its header: 1 for a single
/// value, the count for a batch. Lets `last_seq` and compaction find where a record ends
/// without copying its events.
pub fn batch_len(stored: &[u8]) -> Result<u64, String> {
    if !is_batch(stored) {
        return Ok(1);
    }
    let (count, _) = get_varint(&stored[1..]).ok_or("batch record without a count")?;
    if count < 2 {
        return Err(format!("batch record claims {count} events"));
    }
    Ok(count)
}

/// The events of a stored journal value, in order: the value itself for a single value, each
/// framed event for a batch. A batch whose framing does not add up (a length past the end, a
/// count that disagrees, trailing bytes) is refused rather than read in part.
pub fn unbatch(stored: &[u8]) -> Result<Vec<&[u8]>, String> {
    if !is_batch(stored) {
        return Ok(vec![stored]);
    }
    let count = batch_len(stored)?;
    let mut rest = &stored[1..];
    let (_, used) = get_varint(rest).ok_or("batch record without a count")?;
    rest = &rest[used..];
    // Every event takes at least one byte of length, so a count above the bytes left is
    // damage, refused before it sizes an allocation.
    if count > rest.len() as u64 {
        return Err(format!(
            "batch record claims {count} events in {} bytes",
            rest.len()
        ));
    }
    let mut events = Vec::with_capacity(count as usize);
    for i in 0..count {
        let (len, used) =
            get_varint(rest).ok_or_else(|| format!("batch event {i} has no length"))?;
        rest = &rest[used..];
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= rest.len())
            .ok_or_else(|| format!("batch event {i} runs past the record"))?;
        let (event, tail) = rest.split_at(len);
        events.push(event);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(format!("{} trailing bytes after the batch", rest.len()));
    }
    Ok(events)
}

/// Appends `value` as LEB128.
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads a LEB128 `u64` from the front of `bytes`: the value and the bytes it took; `None`
/// for a truncated or overlong one.
fn get_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().take(MAX_VARINT_BYTES).enumerate() {
        let group = u64::from(byte & 0x7f);
        if i == MAX_VARINT_BYTES - 1 && group > 1 {
            return None;
        }
        value |= group << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// The bincode configuration of every value: standard, with [`MAX_RECORD_BYTES`] as the
/// allocation limit.
fn config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_RECORD_BYTES>,
> {
    bincode::config::standard().with_limit::<MAX_RECORD_BYTES>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_reject_damage() {
        let bytes = encode(&("race", 7u64)).unwrap();
        assert_eq!(
            decode::<(String, u64)>(&bytes).unwrap(),
            ("race".to_string(), 7)
        );
        assert!(decode::<(String, u64)>(&[]).is_err());
        assert!(decode::<(String, u64)>(&[9, 1, 2])
            .unwrap_err()
            .contains("format 9"));
        let mut long = bytes.clone();
        long.push(0);
        assert!(decode::<(String, u64)>(&long)
            .unwrap_err()
            .contains("trailing"));
        assert!(decode::<(String, u64)>(&bytes[..3]).is_err());
    }

    #[test]
    fn batches_frame_events_and_a_single_event_stays_a_plain_value() {
        let one = encode(&7u64).unwrap();
        assert_eq!(
            batch(vec![one.clone()]),
            one,
            "schema 3's shape for one event"
        );
        assert!(!is_batch(&one));
        assert_eq!(batch_len(&one), Ok(1));
        assert_eq!(unbatch(&one).unwrap(), vec![one.as_slice()]);

        let long = vec![0xAB; 300];
        let events = vec![
            encode(&1u64).unwrap(),
            long.clone(),
            vec![],
            encode(&"x").unwrap(),
        ];
        let stored = batch(events.clone());
        assert!(is_batch(&stored));
        assert_ne!(stored[0], RECORD_VERSION);
        assert_eq!(batch_len(&stored), Ok(4));
        assert_eq!(
            unbatch(&stored).unwrap(),
            events.iter().map(Vec::as_slice).collect::<Vec<_>>()
        );
        // Every truncation and any extra byte is refused, never read in part.
        for cut in 1..stored.len() {
            assert!(unbatch(&stored[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = stored.clone();
        extra.push(0);
        assert!(unbatch(&extra).unwrap_err().contains("trailing"));
        assert!(batch_len(&[BATCH_MARKER, 1]).is_err());
        assert!(unbatch(&[BATCH_MARKER, 0xff, 0xff, 0xff, 0x7f]).is_err());
    }

    #[test]
    fn varints_round_trip_at_their_edges() {
        for value in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(get_varint(&out), Some((value, out.len())), "{value}");
        }
        assert_eq!(get_varint(&[0x80]), None);
        assert_eq!(get_varint(&[0xff; 10]), None);
    }
}
