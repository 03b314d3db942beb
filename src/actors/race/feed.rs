//! The spectator feed of one race: what changed since the last tick, encoded once and
//! published to every subscriber.
//!
//! Each tick the race turns its standings into a [`TickUpdate`]: the rows that changed and
//! the full table. The engine-supplied [`TickEncoder`] encodes both once per wire encoding;
//! the race publishes the bytes through a `watch` channel, which holds only the latest value.
//! That is the conflation: a subscriber that keeps up sends each delta; one that fell behind
//! (it missed a sequence number, or its queue was full) sends the full table instead, so it
//! never shows a silent gap and never builds a backlog.

use super::standings::Standing;
use crate::ids::RaceId;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;

/// One tick's content, before encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct TickUpdate {
    /// Increases by one per published tick.
    pub seq: u64,
    /// Rows that changed since the previous tick.
    pub changed: Vec<Standing>,
    /// Every row, leader first.
    pub full: Vec<Standing>,
    /// Spectators subscribed now.
    pub spectators: u32,
}

/// A tick in both wire encodings, as delta and as full table.
#[derive(Debug, Clone)]
pub struct Published {
    /// The tick's sequence number.
    pub seq: u64,
    /// Only the changed rows.
    pub delta: Frames,
    /// The whole table (for subscribers that fell behind).
    pub full: Frames,
}

/// One message in each wire encoding.
#[derive(Debug, Clone)]
pub struct Frames {
    /// `peloton.v1.bin`.
    pub binary: Bytes,
    /// `peloton.v1.json`.
    pub json: Bytes,
}

/// Encodes a tick for the wire. Supplied by the engine so that actors never depend on the
/// protocol module; `None` when encoding failed (logged by the encoder).
pub type TickEncoder = Arc<dyn Fn(&RaceId, &TickUpdate) -> Option<Published> + Send + Sync>;

/// What the race remembers between ticks.
#[derive(Debug, Clone, Default)]
pub struct Feed {
    /// Sequence number of the last published tick.
    seq: u64,
    /// Rows as last published, by bib.
    last: HashMap<u32, Standing>,
    /// Spectator count as last published.
    spectators: u32,
}

impl Feed {
    /// The next tick, or `None` when nothing changed since the last one.
    pub fn tick(&mut self, full: Vec<Standing>, spectators: u32) -> Option<TickUpdate> {
        let changed: Vec<Standing> = full
            .iter()
            .filter(|row| self.last.get(&row.bib) != Some(row))
            .copied()
            .collect();
        if changed.is_empty() && spectators == self.spectators && self.seq > 0 {
            return None;
        }
        self.seq += 1;
        self.spectators = spectators;
        for row in &changed {
            self.last.insert(row.bib, *row);
        }
        Some(TickUpdate {
            seq: self.seq,
            changed,
            full,
            spectators,
        })
    }

    /// Sequence number of the last published tick (0 before the first).
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(bib: u32, rank: u32, progress_m: f64) -> Standing {
        Standing {
            bib,
            rank,
            progress_m,
            gap_ms: Some(0),
            finished_at_ms: None,
            off_course: false,
            live: Default::default(),
        }
    }

    #[test]
    fn only_changes_are_deltas_and_quiet_ticks_publish_nothing() {
        let mut feed = Feed::default();
        let first = feed.tick(vec![row(1, 1, 10.0), row(2, 2, 5.0)], 1).unwrap();
        assert_eq!((first.seq, first.changed.len()), (1, 2));
        assert!(feed
            .tick(vec![row(1, 1, 10.0), row(2, 2, 5.0)], 1)
            .is_none());
        let second = feed
            .tick(vec![row(2, 1, 20.0), row(1, 2, 10.0)], 1)
            .unwrap();
        assert_eq!(second.seq, 2);
        assert_eq!(second.changed.len(), 2, "a rank change is a change");
        let third = feed
            .tick(vec![row(2, 1, 25.0), row(1, 2, 10.0)], 1)
            .unwrap();
        assert_eq!(third.changed, vec![row(2, 1, 25.0)]);
        assert_eq!(third.full.len(), 2);
        let watchers = feed
            .tick(vec![row(2, 1, 25.0), row(1, 2, 10.0)], 3)
            .unwrap();
        assert!(watchers.changed.is_empty() && watchers.spectators == 3);
    }
}
