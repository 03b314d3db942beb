//! The byte encoding of stored values: one format-version byte, then bincode 2 (standard
//! configuration: little-endian varints) of the value. The version byte lets a later build
//! read old records or refuse them by name instead of misreading them.

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
}
