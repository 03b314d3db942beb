//! What a race streams to one socket after the reply that started it: the live feed a
//! subscriber follows ([`TickFeed`]) and a replay's pacing ([`ReplayPacer`]). The session
//! sends what these hand it and waits where they say; it knows nothing of races, so the
//! rules of a replay (race time per wall-clock tick, where it starts, the first step as a
//! full table, the closing `replay_done`) live here. The pacer is pure: no clock, no I/O.

use super::race_views::race_tick;
use crate::actors::race::actor::UpdatesReceiver;
use crate::actors::race::feed::{Outgoing, WireEncoding};
use crate::actors::race::replay::Replayer;
use crate::net::codec::Codec;
use crate::net::protocol::Push;
use std::time::Duration;

/// A race's published ticks, as one subscribed socket follows them.
pub struct TickFeed {
    /// The race's latest tick (each already encoded in both wire encodings).
    updates: UpdatesReceiver,
}

impl TickFeed {
    /// Follows `updates`.
    pub(super) fn new(updates: UpdatesReceiver) -> TickFeed {
        TickFeed { updates }
    }

    /// Resolves when the race publishes a new tick: `true`, or `false` when the race actor
    /// is gone (it restarts; the client subscribes again).
    pub async fn changed(&mut self) -> bool {
        self.updates.changed().await.is_ok()
    }

    /// The frame that brings a socket whose last update was `last_seq` to the race's latest
    /// tick, in the socket's encoding, and that tick's sequence number; `None` when the
    /// socket already has it (or there is none yet). Marks the latest tick as seen.
    pub fn frame_since(&mut self, last_seq: u64, codec: Codec) -> Option<(u64, Outgoing)> {
        let latest = self.updates.borrow_and_update().clone()?;
        let frame = latest.frame_for(last_seq, wire_encoding(codec))?;
        Some((latest.seq, frame))
    }

    /// Marks the latest tick as seen without sending it (pushes are paused): the next
    /// frame then covers it.
    pub fn pass_over(&mut self) {
        self.updates.mark_unchanged();
    }
}

/// The race's encoding of frames for a socket speaking `codec`.
pub fn wire_encoding(codec: Codec) -> WireEncoding {
    match codec {
        Codec::Binary => WireEncoding::Binary,
        Codec::Json => WireEncoding::Json,
    }
}

/// One step of a replay: what to push now and how long to wait before the next step.
#[derive(Debug)]
pub struct ReplayStep {
    /// A `replay_tick` when the race moved in this step, the closing `replay_done`, or
    /// nothing when no racer moved.
    pub push: Option<Push>,
    /// Wall time before the next step (zero before `replay_done`, and after it).
    pub then_wait: Duration,
}

/// Paces a race's replay for one socket: every `tick` of wall time the replay clock moves
/// `tick × speed` of race time and what changed is pushed (the first step as the full
/// table), then `replay_done`. An iterator, advanced only when the next step is asked for,
/// so a socket that pauses (its token reached `exp`) pauses the race clock with it.
pub struct ReplayPacer {
    /// The race, named in every push.
    race_id: String,
    /// The stored fixes, folded into standings as the clock moves.
    replayer: Replayer,
    /// Race milliseconds per step (at least 1).
    step_ms: i64,
    /// Wall time per step.
    tick: Duration,
    /// The replay clock; `None` once it has played everything (or there was nothing).
    clock: Option<i64>,
    /// Whether the next tick is the first one, sent as the full table.
    first: bool,
    /// Whether `replay_done` has been handed out.
    finished: bool,
}

impl ReplayPacer {
    /// A replay of `replayer` at `speed` race seconds per wall-clock second, one step per
    /// `tick`, starting at race time `start_ms` (clamped into the replay's span) or at its
    /// beginning.
    pub(super) fn new(
        race_id: String,
        replayer: Replayer,
        speed: f64,
        start_ms: Option<i64>,
        tick: Duration,
    ) -> ReplayPacer {
        let clock = replayer
            .span()
            .map(|(from, to)| start_ms.map_or(from, |s| s.clamp(from, to)));
        ReplayPacer {
            race_id,
            replayer,
            step_ms: (tick.as_millis() as f64 * speed).round().max(1.0) as i64,
            tick,
            clock,
            first: true,
            finished: false,
        }
    }

    /// Wall time per step: also how long a paused replay waits before looking again.
    pub fn tick(&self) -> Duration {
        self.tick
    }
}

impl Iterator for ReplayPacer {
    type Item = ReplayStep;

    fn next(&mut self) -> Option<ReplayStep> {
        if self.finished {
            return None;
        }
        let Some(clock) = self.clock else {
            self.finished = true;
            return Some(ReplayStep {
                push: Some(Push::ReplayDone {
                    race_id: self.race_id.clone(),
                }),
                then_wait: Duration::ZERO,
            });
        };
        let push = self.replayer.advance(clock).map(|update| {
            let tick = race_tick(&self.race_id, &update, self.first);
            self.first = false;
            Push::ReplayTick(tick)
        });
        if self.replayer.done() {
            self.clock = None;
            return Some(ReplayStep {
                push,
                then_wait: Duration::ZERO,
            });
        }
        self.clock = Some(clock.saturating_add(self.step_ms));
        Some(ReplayStep {
            push,
            then_wait: self.tick,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::race::replay::timeline;
    use crate::actors::racer::{Fix, RacerEvent};
    use crate::geo::Position;

    fn fix_at(at_s: i64, progress_m: f64) -> RacerEvent {
        RacerEvent::FixAccepted {
            fix: Fix {
                at_ms: at_s * 1000,
                position: Position::from_degrees(46.0, 15.0).unwrap(),
                accuracy_m: 5.0,
                speed_mps: None,
                elevation_m: None,
            },
            progress_m,
            offset_m: 1.0,
            on_course: true,
        }
    }

    fn pacer(events: Vec<RacerEvent>, speed: f64, start_ms: Option<i64>) -> ReplayPacer {
        let replayer = Replayer::new(timeline(vec![(7, events)], 300.0));
        let tick = Duration::from_millis(1000);
        ReplayPacer::new("r1".into(), replayer, speed, start_ms, tick)
    }

    /// Each step as (full table?, wait in ms), `None` for `replay_done`.
    fn shape(pacer: ReplayPacer) -> Vec<(Option<bool>, u128)> {
        pacer
            .map(|step| {
                let kind = match step.push {
                    Some(Push::ReplayTick(tick)) => Some(tick.full),
                    Some(Push::ReplayDone { race_id }) => {
                        assert_eq!(race_id, "r1");
                        None
                    }
                    other => panic!("unexpected push {other:?}"),
                };
                (kind, step.then_wait.as_millis())
            })
            .collect()
    }

    #[test]
    fn nothing_stored_is_only_replay_done() {
        assert_eq!(shape(pacer(Vec::new(), 10.0, None)), vec![(None, 0)]);
    }

    #[test]
    fn a_replay_steps_tick_times_speed_first_full_and_ends_with_replay_done() {
        let events = vec![fix_at(0, 0.0), fix_at(10, 100.0), fix_at(20, 200.0)];
        // 1 s ticks at 10×: the clock visits 0, 10 s and 20 s, the last step ends it.
        assert_eq!(
            shape(pacer(events.clone(), 10.0, None)),
            vec![
                (Some(true), 1000),
                (Some(false), 1000),
                (Some(false), 0),
                (None, 0)
            ]
        );
        // Starting past the end clamps to the end: everything at once, then done.
        assert_eq!(
            shape(pacer(events, 10.0, Some(99_000))),
            vec![(Some(true), 0), (None, 0)]
        );
    }
}
