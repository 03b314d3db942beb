//! A race's ticks followed on another node: in cluster mode the node that owns a race
//! publishes each tick once for the whole cluster, as a [`RelayedTick`], and every other
//! node with spectators of that race keeps a [`Mirror`] of its feed, from which it
//! publishes the same ticks (same sequence numbers, same rows) to its own sockets.
//!
//! A relayed tick carries rows, not encoded frames: each node encodes for its own sockets
//! once per tick (a few kilobytes of work), and the bytes crossing the network are one
//! compact message per tick, however many sockets and encodings the nodes serve.
//!
//! Relaying is best effort (a NATS core message), so the mirror checks that each tick
//! builds on what it has: a tick says which tick its rows are counted from (`since_seq`);
//! one counted from a tick the mirror never had is a gap, and the mirror asks its owner
//! for a full table instead of guessing. A gap never reaches a socket silently: the
//! mirror's next tick is then a full table, counted like any tick whose window was missed.

use super::feed::{Feed, TickUpdate};
use super::standings::Standing;

// The relayed tick is made by the owner's published tick (`Published::relay_since`), so it
// is defined beside it; it belongs to this file's story.
pub use super::feed::RelayedTick;

/// What a mirror made of a relayed tick.
#[derive(Debug, Clone, PartialEq)]
pub enum Followed {
    /// The tick, to publish to this node's sockets.
    Tick(TickUpdate),
    /// The mirror has this tick or a later one already: nothing to do.
    Stale,
    /// The tick builds on one the mirror never had: ask the owner for the full table.
    Gap,
}

/// One node's copy of a race's feed, kept up to date from the owner's relayed ticks.
#[derive(Debug, Clone)]
pub struct Mirror {
    /// The feed as this node has published it.
    feed: Feed,
}

impl Mirror {
    /// A mirror of the owner's table `rows` as of tick `seq`, serving catch-ups to its
    /// sockets up to `catch_up_ticks` behind, like the owner's own feed.
    pub fn new(seq: u64, rows: &[Standing], catch_up_ticks: usize) -> Mirror {
        Mirror {
            feed: Feed::seeded(seq, rows, catch_up_ticks),
        }
    }

    /// Follows one relayed tick. Rows counted from any tick at or before the mirror's own
    /// bring it forward (they are every row that changed since, as of the new tick).
    pub fn follow(&mut self, tick: RelayedTick) -> Followed {
        if tick.seq <= self.feed.seq() {
            return Followed::Stale;
        }
        let full = if tick.full {
            tick.rows
        } else if tick.since_seq <= self.feed.seq() {
            self.feed.table_with(tick.rows)
        } else {
            return Followed::Gap;
        };
        Followed::Tick(self.feed.tick_at(tick.seq, full, tick.spectators))
    }

    /// The last tick this mirror published.
    pub fn seq(&self) -> u64 {
        self.feed.seq()
    }

    /// Every row as of that tick, leader first: a new subscriber's snapshot.
    pub fn table(&self) -> Vec<Standing> {
        self.feed.table()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RaceId;
    use crate::race::feed::tests::row;
    use crate::race::feed::{Published, TickEncoder, TickFrame, WireEncoding};
    use bytes::Bytes;
    use std::collections::HashMap;
    use std::sync::Arc;

    /// Standings after `progress`: furthest first, ties by bib.
    fn table(progress: &HashMap<u32, f64>) -> Vec<Standing> {
        let mut rows: Vec<(u32, f64)> = progress.iter().map(|(b, p)| (*b, *p)).collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        rows.iter()
            .enumerate()
            .map(|(i, (bib, p))| row(*bib, i as u32 + 1, *p))
            .collect()
    }

    fn publish(feed: &mut Feed, rows: Vec<Standing>) -> Option<Published> {
        let encoder: TickEncoder =
            Arc::new(|_: &TickFrame<'_>, _: WireEncoding| Some(Bytes::from_static(b"f")));
        let update = feed.tick(rows, 1)?;
        Published::new(RaceId::parse("r1").unwrap(), update, encoder)
    }

    #[test]
    fn a_mirror_follows_deltas_and_catch_ups_and_asks_for_the_table_after_a_gap() {
        let mut progress: HashMap<u32, f64> = (1..=4).map(|b| (b, 0.0)).collect();
        let mut owner = Feed::starting_after(100, 4);
        let first = publish(&mut owner, table(&progress)).unwrap();
        let mut mirror = Mirror::new(first.seq, &table(&progress), 4);
        let mut ticks = Vec::new();
        for bib in 1..=4 {
            *progress.get_mut(&bib).unwrap() += 100.0 * f64::from(bib);
            ticks.push(publish(&mut owner, table(&progress)).unwrap());
        }
        // Tick 102 as a delta: one row.
        let delta = ticks[0].relay_since(101).unwrap();
        assert_eq!(
            (delta.since_seq, delta.rows.len(), delta.full),
            (101, 1, false)
        );
        assert!(matches!(mirror.follow(delta.clone()), Followed::Tick(_)));
        assert_eq!(
            mirror.follow(delta),
            Followed::Stale,
            "a repeat changes nothing"
        );
        // 103 was lost on the way: 104's delta builds on it.
        assert_eq!(
            mirror.follow(ticks[2].relay_since(103).unwrap()),
            Followed::Gap
        );
        // The owner's relay skipped 103 itself: 104 counted from 102 is a catch-up.
        let Followed::Tick(update) = mirror.follow(ticks[2].relay_since(102).unwrap()) else {
            panic!("a catch-up from the mirror's tick applies");
        };
        assert_eq!(update.seq, 104);
        assert_eq!(
            update.recent_changes.len(),
            3,
            "103 enters the window, empty"
        );
        // The full table mends anything.
        let Followed::Tick(update) = mirror.follow(ticks[3].relay_full()) else {
            panic!("a full table applies");
        };
        assert_eq!(update.full, table(&progress));
        assert_eq!(mirror.table(), table(&progress));
        assert_eq!(mirror.seq(), 105);
    }

    proptest::proptest! {
        /// Whatever moves, whichever ticks the owner's relay skips and whichever relayed
        /// ticks are lost, a mirror that asks for the table on every gap holds the owner's
        /// table after each tick it publishes, and never publishes a tick twice.
        #[test]
        fn a_mirror_publishes_the_owners_tables(
            moves in proptest::collection::vec(proptest::collection::vec((1u32..=10, 0u32..40), 0..5), 1..30),
            skipped in proptest::collection::vec(proptest::bool::weighted(0.2), 30),
            lost in proptest::collection::vec(proptest::bool::weighted(0.2), 30),
            window in 0usize..6,
        ) {
            let mut progress: HashMap<u32, f64> = (1..=10).map(|b| (b, 0.0)).collect();
            let mut owner = Feed::starting_after(1000, window);
            let first = publish(&mut owner, table(&progress)).unwrap();
            let mut mirror = Mirror::new(first.seq, &table(&progress), window);
            let mut relayed = first.seq;
            for (i, step) in moves.iter().enumerate() {
                for (bib, metres) in step {
                    *progress.get_mut(bib).unwrap() += f64::from(*metres);
                }
                let Some(tick) = publish(&mut owner, table(&progress)) else { continue };
                if skipped[i] {
                    continue;
                }
                let message = tick.relay_since(relayed).unwrap();
                relayed = tick.seq;
                if lost[i] {
                    continue;
                }
                let before = mirror.seq();
                let update = match mirror.follow(message) {
                    Followed::Tick(update) => update,
                    Followed::Gap => match mirror.follow(tick.relay_full()) {
                        Followed::Tick(update) => update,
                        other => panic!("the full table after a gap: {other:?}"),
                    },
                    Followed::Stale => panic!("every tick is new"),
                };
                proptest::prop_assert!(update.seq > before);
                proptest::prop_assert_eq!(update.seq, tick.seq);
                proptest::prop_assert_eq!(&update.full, &table(&progress));
                proptest::prop_assert_eq!(mirror.table(), table(&progress));
            }
        }
    }
}
