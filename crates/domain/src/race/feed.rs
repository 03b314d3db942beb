//! The spectator feed of one race: what changed since the last tick, encoded once and
//! published to every subscriber.
//!
//! Each tick the race turns its standings into a [`TickUpdate`]: the rows that changed, the
//! full table, and which bibs changed in the last few ticks. It becomes a [`Published`]
//! tick, handed to every subscriber through a `watch` channel that holds only the latest
//! value. That is the conflation: a socket's writer takes the latest tick whenever it is
//! ready for one, and [`Published::frame_for`] picks what brings that socket from the last
//! update it was sent to this one:
//! - the delta, when it has the tick before (every socket that keeps up);
//! - a catch-up, when it is at most [`Feed::catch_up_ticks`] behind: the rows that changed
//!   in any tick it missed, as of now. A socket that falls behind therefore gets a frame
//!   about the size of the few deltas it missed, not the whole table, so falling behind
//!   does not make the next frame bigger exactly when bytes are scarce;
//! - the full table, beyond that window.
//!
//! The delta is encoded when the tick is published (nearly every socket sends it); the full
//! table and each catch-up are encoded on first demand, once per wire encoding, and shared by
//! every socket that needs the same one, so a thousand sockets one tick behind cost one
//! encoding. The engine supplies the [`TickEncoder`], so the race never depends on the wire.
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
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, OnceLock};

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
    /// The bibs whose rows changed in this tick and in the ticks before it, newest first, as
    /// many ticks as the feed's catch-up window: what a catch-up frame is built from.
    pub recent_changes: Vec<Arc<[u32]>>,
}

/// One message in each wire encoding.
#[derive(Debug, Clone)]
pub struct Frames {
    /// `peloton.v1.bin`.
    pub binary: Bytes,
    /// `peloton.v1.json`.
    pub json: Bytes,
}

impl Frames {
    /// The bytes in `encoding`.
    pub fn get(&self, encoding: WireEncoding) -> &Bytes {
        match encoding {
            WireEncoding::Binary => &self.binary,
            WireEncoding::Json => &self.json,
        }
    }
}

/// The wire encodings a socket may speak; the race encodes a frame once for each one a
/// subscriber needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireEncoding {
    /// `peloton.v1.bin`.
    Binary,
    /// `peloton.v1.json`.
    Json,
}

impl WireEncoding {
    /// Position in per-encoding arrays.
    fn index(self) -> usize {
        match self {
            WireEncoding::Binary => 0,
            WireEncoding::Json => 1,
        }
    }
}

/// Which form of a tick a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickView {
    /// The rows that changed since the tick before.
    Delta,
    /// The rows that changed after `since_seq`, for a socket whose last update was
    /// `since_seq`.
    CatchUp {
        /// The last update the socket was sent.
        since_seq: u64,
    },
    /// Every row.
    Full,
}

/// What the encoder turns into one frame.
#[derive(Debug, Clone, Copy)]
pub struct TickFrame<'a> {
    /// The race.
    pub race: &'a RaceId,
    /// The tick's sequence number.
    pub seq: u64,
    /// Spectators subscribed at the tick.
    pub spectators: u32,
    /// Which form this is.
    pub view: TickView,
    /// Its rows, leader first.
    pub rows: &'a [Standing],
}

/// Encodes a tick's frame for the wire. Supplied by the engine so that actors never depend
/// on the protocol module; `None` when encoding failed (logged by the encoder).
pub type TickEncoder = Arc<dyn Fn(&TickFrame<'_>, WireEncoding) -> Option<Bytes> + Send + Sync>;

/// A frame encoded on first demand, once per wire encoding, then shared.
#[derive(Debug, Default)]
struct Lazy([OnceLock<Option<Bytes>>; 2]);

/// A published tick: its delta, encoded at once, and what every other form of it is made of.
pub struct Published {
    /// The tick's sequence number.
    pub seq: u64,
    /// Only the changed rows, in both encodings.
    pub delta: Frames,
    /// The race, named in every frame.
    race: RaceId,
    /// Spectators subscribed at the tick.
    spectators: u32,
    /// Every row as of this tick, leader first.
    table: Vec<Standing>,
    /// Bibs changed in this tick and the ones before it, newest first.
    recent_changes: Vec<Arc<[u32]>>,
    /// Encodes the forms asked for later.
    encoder: TickEncoder,
    /// The full table, once a socket needed it.
    full: Lazy,
    /// Catch-ups by how far behind the socket is: entry `k` is for a socket whose last
    /// update was `seq - 2 - k` (one tick behind is the delta).
    catch_ups: Vec<Lazy>,
}

impl std::fmt::Debug for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Published")
            .field("seq", &self.seq)
            .field("race", &self.race)
            .field("rows", &self.table.len())
            .field("window", &self.recent_changes.len())
            .finish_non_exhaustive()
    }
}

/// The frame a socket gets for a tick, and what it stands for.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The encoded frame, shared with every socket sent the same form.
    pub bytes: Bytes,
    /// Which form it is.
    pub view: TickView,
    /// How many ticks it brings the socket forward (1 for a delta).
    pub ticks: u64,
}

impl Published {
    /// Publishes `update` for `race`: encodes its delta in both encodings now; `None` when
    /// that failed (the encoder logged why).
    pub fn new(race: RaceId, update: TickUpdate, encoder: TickEncoder) -> Option<Published> {
        let delta = {
            let frame = TickFrame {
                race: &race,
                seq: update.seq,
                spectators: update.spectators,
                view: TickView::Delta,
                rows: &update.changed,
            };
            Frames {
                binary: encoder(&frame, WireEncoding::Binary)?,
                json: encoder(&frame, WireEncoding::Json)?,
            }
        };
        let behind = update.recent_changes.len().saturating_sub(1);
        Some(Published {
            seq: update.seq,
            delta,
            race,
            spectators: update.spectators,
            table: update.full,
            recent_changes: update.recent_changes,
            encoder,
            full: Lazy::default(),
            catch_ups: (0..behind).map(|_| Lazy::default()).collect(),
        })
    }

    /// The frame that brings a socket whose last update was `last_seq` to this tick, in
    /// `encoding`: the delta, a catch-up within the window, else the full table. `None` when
    /// the socket already has this tick, or encoding failed (logged by the encoder).
    pub fn frame_for(&self, last_seq: u64, encoding: WireEncoding) -> Option<Outgoing> {
        let ticks = self.seq.checked_sub(last_seq).filter(|t| *t > 0)?;
        if ticks == 1 {
            return Some(Outgoing {
                bytes: self.delta.get(encoding).clone(),
                view: TickView::Delta,
                ticks,
            });
        }
        let slot = usize::try_from(ticks - 2)
            .ok()
            .and_then(|k| self.catch_ups.get(k));
        let (view, lazy) = match slot {
            Some(lazy) => (
                TickView::CatchUp {
                    since_seq: last_seq,
                },
                lazy,
            ),
            None => (TickView::Full, &self.full),
        };
        let bytes = lazy.0[encoding.index()]
            .get_or_init(|| self.encode(view, encoding))
            .clone()?;
        Some(Outgoing { bytes, view, ticks })
    }

    /// What brings a mirror of this race on another node (see [`super::relay`]) from the
    /// tick it last followed, `last_seq`, to this one: the rows that changed since, as of
    /// now, while the window still says which; else every row. `None` when the mirror has
    /// this tick already.
    pub fn relay_since(&self, last_seq: u64) -> Option<RelayedTick> {
        let ticks = self.seq.checked_sub(last_seq).filter(|t| *t > 0)?;
        let within = usize::try_from(ticks)
            .ok()
            .filter(|t| last_seq > 0 && *t <= self.recent_changes.len());
        Some(match within {
            Some(ticks) => RelayedTick {
                seq: self.seq,
                since_seq: last_seq,
                spectators: self.spectators,
                full: false,
                rows: changed_rows(&self.table, &self.recent_changes, ticks),
            },
            None => self.relay_full(),
        })
    }

    /// This tick as every row, for a mirror that has nothing to build on.
    pub fn relay_full(&self) -> RelayedTick {
        RelayedTick {
            seq: self.seq,
            since_seq: 0,
            spectators: self.spectators,
            full: true,
            rows: self.table.clone(),
        }
    }

    /// Encodes one form of this tick (the delta was encoded when it was published).
    fn encode(&self, view: TickView, encoding: WireEncoding) -> Option<Bytes> {
        let caught_up;
        let rows: &[Standing] = match view {
            TickView::Delta => return Some(self.delta.get(encoding).clone()),
            TickView::Full => &self.table,
            TickView::CatchUp { since_seq } => {
                let behind = usize::try_from(self.seq - since_seq).unwrap_or(usize::MAX);
                caught_up = changed_rows(&self.table, &self.recent_changes, behind);
                &caught_up
            }
        };
        let frame = TickFrame {
            race: &self.race,
            seq: self.seq,
            spectators: self.spectators,
            view,
            rows,
        };
        (self.encoder)(&frame, encoding)
    }
}

/// The rows of `table` whose bib changed in the newest `ticks` entries of `recent_changes`,
/// in table order.
fn changed_rows(table: &[Standing], recent_changes: &[Arc<[u32]>], ticks: usize) -> Vec<Standing> {
    let bibs: HashSet<u32> = recent_changes
        .iter()
        .take(ticks)
        .flat_map(|bibs| bibs.iter().copied())
        .collect();
    table
        .iter()
        .filter(|row| bibs.contains(&row.bib))
        .copied()
        .collect()
}

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
    /// How many ticks behind a socket may be and still get a catch-up instead of the full
    /// table.
    catch_up_ticks: usize,
    /// Bibs changed in each of the last `catch_up_ticks` ticks, newest first.
    recent_changes: VecDeque<Arc<[u32]>>,
}

impl Feed {
    /// A feed whose first tick will be `seq + 1`, serving catch-ups to sockets up to
    /// `catch_up_ticks` behind (0 or 1: never; one behind is the delta).
    pub fn starting_after(seq: u64, catch_up_ticks: usize) -> Feed {
        Feed {
            seq,
            catch_up_ticks,
            ..Feed::default()
        }
    }

    /// A feed that has published `rows` as tick `seq`: a mirror's, starting from the
    /// snapshot its race's owner sent (see [`super::relay`]).
    pub fn seeded(seq: u64, rows: &[Standing], catch_up_ticks: usize) -> Feed {
        Feed {
            seq,
            last: rows.iter().map(|row| (row.bib, *row)).collect(),
            published_any: true,
            catch_up_ticks,
            ..Feed::default()
        }
    }

    /// The next tick, or `None` when nothing changed since the last one. `full` is the
    /// standings as of the tick's instant; a row counts as changed when any field differs
    /// from what was last published, a gap's next whole second included.
    pub fn tick(&mut self, full: Vec<Standing>, spectators: u32) -> Option<TickUpdate> {
        let unchanged = full.iter().all(|row| self.last.get(&row.bib) == Some(row));
        if unchanged && spectators == self.spectators && self.published_any {
            return None;
        }
        Some(self.tick_at(self.seq + 1, full, spectators))
    }

    /// Tick `seq` (after the last one), published whatever changed: what a mirror does
    /// with a tick its race's owner published. Ticks skipped on the way changed nothing
    /// this feed knows of, so they enter the catch-up window empty: a socket behind them
    /// still gets every row changed since its own tick.
    pub fn tick_at(&mut self, seq: u64, full: Vec<Standing>, spectators: u32) -> TickUpdate {
        let changed: Vec<Standing> = full
            .iter()
            .filter(|row| self.last.get(&row.bib) != Some(row))
            .copied()
            .collect();
        let skipped = seq.saturating_sub(self.seq).saturating_sub(1);
        self.seq = seq.max(self.seq);
        self.published_any = true;
        self.spectators = spectators;
        for row in &changed {
            self.last.insert(row.bib, *row);
        }
        if self.catch_up_ticks > 0 {
            let empty: Arc<[u32]> = Arc::from(Vec::new());
            let skipped = usize::try_from(skipped)
                .unwrap_or(usize::MAX)
                .min(self.catch_up_ticks);
            for _ in 0..skipped {
                self.recent_changes.push_front(empty.clone());
            }
            self.recent_changes
                .push_front(changed.iter().map(|row| row.bib).collect());
            self.recent_changes.truncate(self.catch_up_ticks);
        }
        TickUpdate {
            seq: self.seq,
            changed,
            full,
            spectators,
            recent_changes: self.recent_changes.iter().cloned().collect(),
        }
    }

    /// Every row as last published, leader first.
    pub fn table(&self) -> Vec<Standing> {
        self.table_with(Vec::new())
    }

    /// Every row as last published with `rows` in place of theirs (by bib), leader first.
    pub fn table_with(&self, rows: Vec<Standing>) -> Vec<Standing> {
        let mut table = self.last.clone();
        for row in rows {
            table.insert(row.bib, row);
        }
        let mut rows: Vec<Standing> = table.into_values().collect();
        rows.sort_by(|a, b| a.rank.cmp(&b.rank).then(a.bib.cmp(&b.bib)));
        rows
    }

    /// Sequence number of the last published tick (the starting value before the first).
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// One published tick's delta, as a reconnecting spectator is sent it.
#[derive(Debug, Clone)]
pub struct RecentTick {
    /// The tick's sequence number.
    pub seq: u64,
    /// Its delta in both encodings (the same bytes live subscribers were sent).
    pub delta: Frames,
}

/// The most recent published ticks, oldest first, within a byte budget: what a reconnecting
/// spectator may have missed. Only the deltas are kept, not the tables they came with.
#[derive(Debug, Clone)]
pub struct RecentTicks {
    /// The ticks, consecutive sequence numbers, oldest first.
    ticks: VecDeque<RecentTick>,
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
    pub fn push(&mut self, tick: &Published) {
        if self
            .ticks
            .back()
            .is_some_and(|last| last.seq + 1 != tick.seq)
        {
            self.ticks.clear();
            self.bytes = 0;
        }
        let tick = RecentTick {
            seq: tick.seq,
            delta: tick.delta.clone(),
        };
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
    pub fn since(&self, seq: u64, current: u64) -> Option<Vec<RecentTick>> {
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

/// One tick as the owner of a race publishes it for mirrors on other nodes (see
/// [`super::relay`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayedTick {
    /// The tick's sequence number (the owner's).
    pub seq: u64,
    /// The rows are every row changed after this tick (0 with `full`).
    pub since_seq: u64,
    /// Spectators subscribed at the tick.
    pub spectators: u32,
    /// Whether `rows` is the whole table rather than what changed.
    pub full: bool,
    /// The rows, as of tick `seq`.
    pub rows: Vec<Standing>,
}

/// What a tick's deltas cost to keep.
fn delta_bytes(tick: &RecentTick) -> usize {
    tick.delta.binary.len() + tick.delta.json.len()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A row at `progress_m`, gap 0, nothing else set: what the feed's and the relay's
    /// tests move racers with.
    pub(crate) fn row(bib: u32, rank: u32, progress_m: f64) -> Standing {
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

    /// An encoder whose frames are readable back: the view, then `bib:rank:progress` rows;
    /// it counts how many frames it encoded.
    fn readable_encoder(count: Arc<std::sync::atomic::AtomicUsize>) -> TickEncoder {
        Arc::new(move |frame: &TickFrame<'_>, encoding: WireEncoding| {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let rows: Vec<String> = frame
                .rows
                .iter()
                .map(|r| format!("{}:{}:{}", r.bib, r.rank, r.progress_m))
                .collect();
            let text = format!(
                "{:?}|{:?}|{}|{}",
                encoding,
                frame.view,
                frame.seq,
                rows.join(",")
            );
            Some(Bytes::from(text))
        })
    }

    /// Reads a frame of [`readable_encoder`] back: (view, seq, rows as (bib, rank, progress)).
    fn read(bytes: &Bytes) -> (String, u64, Vec<(u32, u32, f64)>) {
        let text = std::str::from_utf8(bytes).unwrap();
        let parts: Vec<&str> = text.splitn(4, '|').collect();
        let rows = parts[3]
            .split(',')
            .filter(|r| !r.is_empty())
            .map(|r| {
                let f: Vec<&str> = r.split(':').collect();
                (
                    f[0].parse().unwrap(),
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                )
            })
            .collect();
        (parts[1].to_owned(), parts[2].parse().unwrap(), rows)
    }

    fn published(seq: u64, size: usize) -> Published {
        let encoder: TickEncoder =
            Arc::new(move |_: &TickFrame<'_>, _| Some(Bytes::from(vec![0u8; size])));
        let update = TickUpdate {
            seq,
            changed: Vec::new(),
            full: Vec::new(),
            spectators: 0,
            recent_changes: Vec::new(),
        };
        let mut p = Published::new(RaceId::parse("r1").unwrap(), update, encoder).unwrap();
        p.delta.json = Bytes::new();
        p
    }

    #[test]
    fn recent_ticks_give_exactly_what_was_missed_or_nothing() {
        let mut recent = RecentTicks::new(300);
        for seq in 11..=14 {
            recent.push(&published(seq, 100));
        }
        // 400 bytes over a 300-byte budget: tick 11 went.
        let seqs =
            |v: Option<Vec<RecentTick>>| v.map(|t| t.iter().map(|p| p.seq).collect::<Vec<_>>());
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
        recent.push(&published(40, 10));
        assert_eq!(seqs(recent.since(39, 40)), Some(vec![40]));
        assert_eq!(
            seqs(recent.since(13, 40)),
            None,
            "a break starts the buffer over"
        );
    }

    /// A socket `behind` ticks behind gets the delta (1), a catch-up (2..=window) or the
    /// full table (beyond), and each form is encoded once per encoding however many
    /// sockets ask for it.
    #[test]
    fn a_socket_behind_gets_the_smallest_frame_that_brings_it_up_to_date_encoded_once() {
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let encoder = readable_encoder(count.clone());
        let mut feed = Feed::starting_after(100, 4);
        let race = RaceId::parse("r1").unwrap();
        let mut table: Vec<Standing> = (1..=6).map(|bib| row(bib, bib, 0.0)).collect();
        let mut last = None;
        // Tick k moves racer k forward (racer 1 at tick 101 ... racer 6 at tick 106).
        for (k, bib) in (1..=6u32).enumerate() {
            if k > 0 {
                table[bib as usize - 1].progress_m = 10.0 * bib as f64;
            }
            let update = feed.tick(table.clone(), 1).unwrap();
            last = Some(Published::new(race.clone(), update, encoder.clone()).unwrap());
        }
        let latest = last.unwrap();
        assert_eq!(latest.seq, 106);
        let encoded_eagerly = count.load(std::sync::atomic::Ordering::Relaxed);
        let view = |last_seq| {
            latest
                .frame_for(last_seq, WireEncoding::Binary)
                .map(|o| (o.view, o.ticks))
        };
        assert_eq!(view(106), None, "up to date");
        assert_eq!(view(107), None, "from another epoch");
        assert_eq!(view(105), Some((TickView::Delta, 1)));
        assert_eq!(view(104), Some((TickView::CatchUp { since_seq: 104 }, 2)));
        assert_eq!(view(102), Some((TickView::CatchUp { since_seq: 102 }, 4)));
        assert_eq!(view(101), Some((TickView::Full, 5)), "beyond the window");
        let (_, seq, rows) = read(&latest.frame_for(103, WireEncoding::Binary).unwrap().bytes);
        assert_eq!(seq, 106);
        assert_eq!(
            rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![4, 5, 6],
            "racers moved at ticks 104, 105 and 106, in table order"
        );
        let after_first = count.load(std::sync::atomic::Ordering::Relaxed);
        for _ in 0..100 {
            latest.frame_for(103, WireEncoding::Binary).unwrap();
            latest.frame_for(101, WireEncoding::Binary).unwrap();
            latest.frame_for(105, WireEncoding::Json).unwrap();
        }
        assert_eq!(
            count.load(std::sync::atomic::Ordering::Relaxed),
            after_first,
            "the same form is encoded once and shared"
        );
        assert_eq!(
            encoded_eagerly,
            6 * 2,
            "only deltas are encoded when published"
        );
    }

    proptest::proptest! {
        /// Whatever moves, a table that applied every delta up to some tick and then the
        /// catch-up (or full table) to the latest equals the table that applied every delta.
        #[test]
        fn a_catch_up_brings_a_lagging_table_to_the_same_rows(
            moves in proptest::collection::vec(proptest::collection::vec((1u32..=12, 0u32..50), 0..6), 1..20),
            window in 0usize..8,
            lag in 1usize..12,
        ) {
            let encoder = readable_encoder(Arc::new(std::sync::atomic::AtomicUsize::new(0)));
            let race = RaceId::parse("r1").unwrap();
            let mut feed = Feed::starting_after(0, window);
            let mut progress: HashMap<u32, f64> = (1..=12).map(|b| (b, 0.0)).collect();
            let mut published = Vec::new();
            for step in &moves {
                for (bib, metres) in step {
                    *progress.get_mut(bib).unwrap() += f64::from(*metres);
                }
                let mut rows: Vec<(u32, f64)> = progress.iter().map(|(b, p)| (*b, *p)).collect();
                rows.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                let table: Vec<Standing> = rows
                    .iter()
                    .enumerate()
                    .map(|(i, (bib, p))| row(*bib, i as u32 + 1, *p))
                    .collect();
                if let Some(update) = feed.tick(table, 1) {
                    published.push(Published::new(race.clone(), update, encoder.clone()).unwrap());
                }
            }
            let apply = |table: &mut HashMap<u32, (u32, f64)>, bytes: &Bytes| {
                let (view, _, rows) = read(bytes);
                if view == "Full" {
                    table.clear();
                }
                for (bib, rank, p) in rows {
                    table.insert(bib, (rank, p));
                }
            };
            let mut keeping_up = HashMap::new();
            for p in &published {
                apply(&mut keeping_up, &p.frame_for(p.seq - 1, WireEncoding::Json).unwrap().bytes);
            }
            let latest = published.last().unwrap();
            let stop = published.len().saturating_sub(lag + 1);
            let mut lagging = HashMap::new();
            for p in &published[..stop] {
                apply(&mut lagging, &p.frame_for(p.seq - 1, WireEncoding::Json).unwrap().bytes);
            }
            let last_seq = published.get(stop.wrapping_sub(1)).map_or(0, |p| p.seq);
            if let Some(out) = latest.frame_for(last_seq, WireEncoding::Json) {
                apply(&mut lagging, &out.bytes);
            }
            proptest::prop_assert_eq!(lagging, keeping_up);
        }
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
        let mut feed = Feed::starting_after(1_000, 0);
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
