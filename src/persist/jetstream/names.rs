//! Where an actor's journal lives in JetStream: its stream, its subject, its snapshot key,
//! and the headers of a journal record. Pure: names in, names out, so the layout is tested
//! without a NATS server and stays one definition.
//!
//! Layout, for prefix `peloton` and actor `racer/r1.7`:
//! - stream `peloton_racer`, holding subjects `peloton.j.racer.>`: one stream per actor kind,
//!   so a kind's retention, replicas and size are seen and changed on their own;
//! - subject `peloton.j.racer.72312e37`: the id in lowercase hex, since an id may hold
//!   characters a subject token may not (`.`, `*`, `>`, spaces), and hex keeps the ids' byte
//!   order, so listing subjects lists actors in the order sled's keys have them;
//! - snapshot key `racer.72312e37` in the bucket `peloton_snapshots`.

use super::super::{ActorKey, PersistError};

/// Header holding the sequence number of the first event in a record.
pub const SEQ_HEADER: &str = "Peloton-Seq";

/// Header naming the node that wrote a record, for operators.
pub const NODE_HEADER: &str = "Peloton-Node";

/// An actor's names in JetStream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorNames {
    /// The actor's kind, which picks its stream.
    pub kind: String,
    /// The stream of the actor's kind.
    pub stream: String,
    /// The subject its journal records are published on.
    pub subject: String,
    /// Its key in the snapshot bucket.
    pub snapshot_key: String,
}

/// The naming scheme for one deployment's prefix.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `cluster.prefix`, already validated (letters, digits, `-`, `_`).
    prefix: String,
}

impl Layout {
    /// The scheme for `prefix`.
    pub fn new(prefix: &str) -> Layout {
        Layout {
            prefix: prefix.to_owned(),
        }
    }

    /// The snapshot bucket's name.
    pub fn snapshot_bucket(&self) -> String {
        format!("{}_snapshots", self.prefix)
    }

    /// The stream of actor kind `kind`, and the subjects it holds.
    pub fn stream_of(&self, kind: &str) -> Result<(String, String), PersistError> {
        check_kind(kind)?;
        Ok((
            format!("{}_{kind}", self.prefix),
            format!("{}.j.{kind}.>", self.prefix),
        ))
    }

    /// The names of `actor`.
    pub fn actor(&self, actor: &ActorKey) -> Result<ActorNames, PersistError> {
        let (kind, id) = split(actor)?;
        let (stream, _) = self.stream_of(kind)?;
        let hex_id = hex(id.as_bytes());
        Ok(ActorNames {
            kind: kind.to_owned(),
            stream,
            subject: format!("{}.j.{kind}.{hex_id}", self.prefix),
            snapshot_key: format!("{kind}.{hex_id}"),
        })
    }

    /// The actor a journal subject belongs to (`None`: not one of this layout's).
    pub fn actor_of_subject(&self, subject: &str) -> Option<ActorKey> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix(".j.")?;
        actor_of(rest)
    }

    /// The actor a snapshot key belongs to (`None`: not a snapshot key).
    pub fn actor_of_snapshot_key(&self, key: &str) -> Option<ActorKey> {
        actor_of(key)
    }
}

/// `kind.hexid` back to the actor key.
fn actor_of(kind_and_hex: &str) -> Option<ActorKey> {
    let (kind, hex_id) = kind_and_hex.split_once('.')?;
    check_kind(kind).ok()?;
    let id = String::from_utf8(unhex(hex_id)?).ok()?;
    Some(ActorKey::new(kind, &id))
}

/// The kind and id of an actor key.
fn split(actor: &ActorKey) -> Result<(&str, &str), PersistError> {
    actor
        .as_str()
        .split_once('/')
        .ok_or_else(|| PersistError::Storage(format!("actor key `{actor}` has no kind")))
}

/// A kind is a code constant (`race`, `racer`, `dm`, …): lowercase letters, digits, `-`,
/// `_`, which stream names and subject tokens both accept.
fn check_kind(kind: &str) -> Result<(), PersistError> {
    let fits = !kind.is_empty()
        && kind.len() <= 32
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if fits {
        Ok(())
    } else {
        Err(PersistError::Storage(format!(
            "actor kind `{kind}` cannot name a JetStream stream"
        )))
    }
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// The bytes of lowercase hex (`None`: not hex).
fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_of_an_actor() {
        let layout = Layout::new("peloton");
        let names = layout.actor(&ActorKey::new("racer", "r1.7")).unwrap();
        assert_eq!(names.stream, "peloton_racer");
        assert_eq!(names.subject, "peloton.j.racer.72312e37");
        assert_eq!(names.snapshot_key, "racer.72312e37");
        assert_eq!(
            layout.stream_of("racer").unwrap().1,
            "peloton.j.racer.>",
            "the stream holds every subject of its kind"
        );
        assert_eq!(layout.snapshot_bucket(), "peloton_snapshots");
    }

    #[test]
    fn kinds_that_cannot_name_a_stream_are_refused() {
        let layout = Layout::new("peloton");
        for kind in ["", "Race", "ra.ce", "ra ce", "r>"] {
            assert!(layout.stream_of(kind).is_err(), "{kind:?}");
        }
        assert!(layout.actor_of_subject("peloton.j.racer.zz").is_none());
        assert!(layout.actor_of_subject("other.j.racer.61").is_none());
        assert!(layout.actor_of_snapshot_key("racer.6").is_none());
    }

    proptest! {
        /// Any id, whatever characters it holds, comes back from its subject and its
        /// snapshot key, and hex keeps the ids' order.
        #[test]
        fn every_id_round_trips_in_order(a in "\\PC{0,24}", b in "\\PC{0,24}") {
            let layout = Layout::new("p-1");
            for id in [&a, &b] {
                let key = ActorKey::new("dm", id);
                let names = layout.actor(&key).unwrap();
                prop_assert_eq!(layout.actor_of_subject(&names.subject), Some(key.clone()));
                prop_assert_eq!(layout.actor_of_snapshot_key(&names.snapshot_key), Some(key));
            }
            prop_assert_eq!(hex(a.as_bytes()).cmp(&hex(b.as_bytes())), a.as_bytes().cmp(b.as_bytes()));
        }
    }
}
