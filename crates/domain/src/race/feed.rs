//! The spectator feed of one race: what changed since the last tick, encoded once and
//! published to every subscriber.
//!
//! Each tick the race turns its standings into a [`TickUpdate`]: the rows that changed and
//! the full table. The engine-supplied [`TickEncoder`] encodes both once per wire encoding;
//! the race publishes the bytes through a `watch` channel, which holds only the latest value.
//! That is the conflation: a subscriber that keeps up sends each delta; one that fell behind
//! (it missed a sequence number, or its queue was full) sends the full table instead, so it
//! never shows a silent gap and never builds a backlog.
//!
//! [`RecentTicks`] keeps the last few published deltas, bounded in bytes, so a spectator that
//! reconnects with the last sequence number it saw gets exactly the ticks it missed instead of
//! the whole snapshot (course and all); one that has been away too long gets the snapshot.
//! Sequence numbers start at a value derived from the clock when the race actor starts, so
//! they keep increasing across restarts and a number from before a restart is never
//! mistaken for one after it.
//!
//! Rows change with the clock too: the gap of a racer still on the course is time behind the
//! leader *at the tick's instant*, so it grows while the racer's phone is silent. The
//! standings give those gaps in whole seconds (rounded up, see `standings.rs`), so the clock
//! alone changes a row at most once a second: with ticks of 250 ms a silent racer's row is
//! in one delta of four, not in every one, and a delta still carries only rows that differ
//! from what was last published. Rounding there rather than here keeps every reader (ticks,
//! `race_standings`, replays) on the same numbers.

use super::standings::Standing;
use crate::ids::RaceId;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
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
    /// Whether a tick went out yet: the first one always does, so a new subscriber's
    /// feed starts even when nothing moves.
    published_any: bool,
}

impl Feed {
    /// A feed whose first tick will be `seq + 1`.
    pub fn starting_after(seq: u64) -> Feed {
        Feed {
            seq,
            ..Feed::default()
        }
    }

    /// The next tick, or `None` when nothing changed since the last one. `full` is the
    /// standings as of the tick's instant; a row counts as changed when any field differs
    /// from what was last published, a gap's next whole second included.
    pub fn tick(&mut self, full: Vec<Standing>, spectators: u32) -> Option<TickUpdate> {
        let changed: Vec<Standing> = full
            .iter()
            .filter(|row| self.last.get(&row.bib) != Some(row))
            .copied()
            .collect();
        if changed.is_empty() && spectators == self.spectators && self.published_any {
            return None;
        }
        self.seq += 1;
        self.published_any = true;
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

    /// Sequence number of the last published tick (the starting value before the first).
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// The most recent published ticks, oldest first, within a byte budget: what a reconnecting
/// spectator may have missed.
#[derive(Debug, Clone)]
pub struct RecentTicks {
    /// The ticks, consecutive sequence numbers, oldest first.
    ticks: VecDeque<Arc<Published>>,
    /// Bytes the deltas hold, both encodings.
    bytes: usize,
    /// The budget: older ticks go first when a new one would exceed it.
    max_bytes: usize,
}

impl RecentTicks {
    /// An empty buffer that keeps at most `max_bytes` of deltas.
    pub fn new(max_bytes: usize) -> RecentTicks {
        RecentTicks {
            ticks: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Remembers a published tick. A tick that does not follow the last one (the feed was
    /// replaced) starts the buffer over, so it only ever holds an unbroken run.
    pub fn push(&mut self, tick: Arc<Published>) {
        if self
            .ticks
            .back()
            .is_some_and(|last| last.seq + 1 != tick.seq)
        {
            self.ticks.clear();
            self.bytes = 0;
        }
        self.bytes += delta_bytes(&tick);
        self.ticks.push_back(tick);
        while self.bytes > self.max_bytes {
            let Some(oldest) = self.ticks.pop_front() else {
                break;
            };
            self.bytes -= delta_bytes(&oldest);
        }
    }

    /// The ticks after `seq` up to `current` (the feed's last sequence number), if this
    /// buffer still holds every one of them; `None` means the caller needs a snapshot.
    pub fn since(&self, seq: u64, current: u64) -> Option<Vec<Arc<Published>>> {
        if seq > current {
            return None;
        }
        if seq == current {
            return Some(Vec::new());
        }
        let first = self.ticks.front()?.seq;
        let last = self.ticks.back()?.seq;
        if seq + 1 < first || last != current {
            return None;
        }
        Some(self.ticks.iter().filter(|t| t.seq > seq).cloned().collect())
    }
}

/// What a tick's deltas cost to keep.
fn delta_bytes(tick: &Published) -> usize {
    tick.delta.binary.len() + tick.delta.json.len()
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
            cut_suspected: false,
            checkpoints_passed: 0,
            last_split_ms: None,
            live: Default::default(),
        }
    }

    fn published(seq: u64, size: usize) -> Arc<Published> {
        let frames = Frames {
            binary: Bytes::from(vec![0u8; size]),
            json: Bytes::new(),
        };
        Arc::new(Published {
            seq,
            delta: frames.clone(),
            full: frames,
        })
    }

    #[test]
    fn recent_ticks_give_exactly_what_was_missed_or_nothing() {
        let mut recent = RecentTicks::new(300);
        for seq in 11..=14 {
            recent.push(published(seq, 100));
        }
        // 400 bytes over a 300-byte budget: tick 11 went.
        let seqs =
            |v: Option<Vec<Arc<Published>>>| v.map(|t| t.iter().map(|p| p.seq).collect::<Vec<_>>());
        assert_eq!(seqs(recent.since(11, 14)), Some(vec![12, 13, 14]));
        assert_eq!(seqs(recent.since(13, 14)), Some(vec![14]));
        assert_eq!(seqs(recent.since(14, 14)), Some(vec![]), "up to date");
        assert_eq!(
            seqs(recent.since(10, 14)),
            None,
            "tick 11 is gone: snapshot"
        );
        assert_eq!(
            seqs(recent.since(20, 14)),
            None,
            "from another epoch: snapshot"
        );
        assert_eq!(
            seqs(recent.since(12, 15)),
            None,
            "the buffer is behind the feed"
        );
        recent.push(published(40, 10));
        assert_eq!(seqs(recent.since(39, 40)), Some(vec![40]));
        assert_eq!(
            seqs(recent.since(13, 40)),
            None,
            "a break starts the buffer over"
        );
    }

    #[test]
    fn a_silent_racers_growing_gap_goes_out_at_most_once_a_second() {
        use crate::race::standings::{RacerProgress, Standings};
        let report = |progress_m: f64, at_ms: i64| RacerProgress {
            progress_m,
            at_ms,
            finished_at_ms: None,
            off_course: false,
            live: Default::default(),
        };
        let mut standings = Standings::default();
        standings.update(1, report(0.0, 0));
        standings.update(1, report(1_000.0, 100_000));
        standings.update(2, report(500.0, 60_000));
        let mut feed = Feed::default();
        let mut deltas = Vec::new();
        // Ten seconds of 250 ms ticks in which nobody reports.
        for k in 0..40 {
            if let Some(update) = feed.tick(standings.ranked(100_000 + 250 * k), 1) {
                deltas.push(update.changed);
            }
        }
        assert_eq!(deltas[0].len(), 2, "the first tick has every row");
        assert!(
            deltas[1..]
                .iter()
                .all(|changed| changed.len() == 1 && changed[0].bib == 2),
            "only the silent racer's gap moves: {deltas:?}"
        );
        assert_eq!(deltas.len(), 1 + 10, "once a second, not once a tick");
    }

    #[test]
    fn a_feed_continues_from_its_starting_number() {
        let mut feed = Feed::starting_after(1_000);
        assert_eq!(feed.seq(), 1_000);
        assert_eq!(feed.tick(vec![row(1, 1, 0.0)], 0).unwrap().seq, 1_001);
        assert!(feed.tick(vec![row(1, 1, 0.0)], 0).is_none());
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
