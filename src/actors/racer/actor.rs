//! The racer actor: one per racer in a live race. It judges each fix with the pure
//! [`RacerState`], journals what was accepted (a whole batch in one group-committed
//! append), applies it, acknowledges the device, and reports the new progress to its race.
//!
//! On start (first fix, restart after a panic, recovery, its race waking) it rebuilds its
//! state from the journal and reports its progress, which is how the race's standings come
//! back after a restart without being stored twice. Idle for `supervision.passivate_after_ms`
//! it is stopped and lives on in its journal; its race keeps its standing, and its next fix
//! starts it again.

use super::msg::{FixesOutcome, RacerMsg};
use super::state::{BatchCounts, Fix, RacerInputs, RacerState};
use super::{FixVerdict, RacerEvent, KIND};
use crate::actors::journaled::{Journaled, SnapshotPolicy};
use crate::actors::race::actor::{RaceContext, RaceMsg};
use crate::actors::race::standings::{Live, RacerProgress};
use crate::actors::racer::CourseGeometry;
use crate::error::Rejection;
use crate::ids::RaceId;
use crate::metrics as m;
use crate::persist::{ActorKey, Compaction};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;
use std::time::Duration;

/// How long a starting racer waits for its race to hand over the course.
const TRACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Spawn arguments.
pub struct RacerArgs {
    /// The race.
    pub race: RaceId,
    /// The racer's bib.
    pub bib: u32,
    /// Shared storage, registries and rules.
    pub ctx: Arc<RaceContext>,
}

/// The actor's state.
pub struct RacerActorState {
    /// The race.
    race: RaceId,
    /// The bib.
    bib: u32,
    /// The rules' state, journaled; fixes are history, so snapshots keep them.
    racer: Journaled<RacerState>,
    /// The course, shared with the race and its other racers.
    geometry: Arc<CourseGeometry>,
    /// Shared storage, registries and rules.
    ctx: Arc<RaceContext>,
    /// When the racer last had fixes to judge or progress to report.
    last_activity: std::time::Instant,
}

/// The journal key of racer `bib` in `race`: `racer/<race>.<bib>`.
pub fn racer_key(race: &RaceId, bib: u32) -> ActorKey {
    ActorKey::new(KIND, &format!("{race}.{bib}"))
}

/// Reads a racer key's id part back into race and bib.
pub fn parse_racer_id(id: &str) -> Option<(RaceId, u32)> {
    let (race, bib) = id.rsplit_once('.')?;
    Some((RaceId::parse(race).ok()?, bib.parse().ok()?))
}

/// The ractor behaviour of a racer.
pub struct RacerActor;

impl Actor for RacerActor {
    type Msg = RacerMsg;
    type State = RacerActorState;
    type Arguments = RacerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<RacerMsg>,
        args: RacerArgs,
    ) -> Result<RacerActorState, ActorProcessingErr> {
        let race = args
            .ctx
            .races
            .get(&args.race)
            .ok_or_else(|| format!("race {} is not running", args.race))?;
        let geometry = match race
            .call(
                |reply| RaceMsg::Track {
                    bib: args.bib,
                    reply,
                },
                Some(TRACK_TIMEOUT),
            )
            .await?
        {
            CallResult::Success(Ok(geometry)) => geometry,
            CallResult::Success(Err(rejection)) => return Err(rejection.message.into()),
            _ => return Err(format!("race {} did not hand over its course", args.race).into()),
        };
        let racer = Journaled::recover(
            args.ctx.journal.clone(),
            racer_key(&args.race, args.bib),
            SnapshotPolicy {
                every: args.ctx.snapshot_every,
                compaction: Compaction::Keep,
            },
        )?;
        let st = RacerActorState {
            race: args.race,
            bib: args.bib,
            racer,
            geometry,
            ctx: args.ctx,
            last_activity: std::time::Instant::now(),
        };
        // Reported before the spawn completes, so the race's standings are whole again
        // before the server reports ready.
        report(&st);
        Ok(st)
    }

    async fn handle(
        &self,
        _myself: ActorRef<RacerMsg>,
        message: RacerMsg,
        st: &mut RacerActorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RacerMsg::Fixes { fixes, reply } => {
                st.last_activity = std::time::Instant::now();
                let _ = reply.send(ingest(st, fixes).await);
            }
            RacerMsg::Report => {
                st.last_activity = std::time::Instant::now();
                report(st);
            }
            RacerMsg::Idle { reply } => {
                let _ = reply.send(st.ctx.idle_since(st.last_activity));
            }
            #[cfg(test)]
            RacerMsg::Panic => panic!("racer {} asked to panic", st.bib),
        }
        Ok(())
    }
}

/// Judges a batch, journals what it accepted, applies it, and tells the race.
async fn ingest(st: &mut RacerActorState, fixes: Vec<Fix>) -> Result<FixesOutcome, Rejection> {
    let inputs = RacerInputs {
        geometry: &st.geometry,
        rules: &st.ctx.rules,
    };
    let decision = st
        .racer
        .execute(
            fixes,
            inputs,
            "the fixes could not be stored; send them again",
        )
        .await?;
    count_fixes(decision.outcome);
    count_flags(&decision.events);
    if !decision.events.is_empty() {
        report(st);
    }
    Ok(FixesOutcome {
        accepted: decision.outcome.accepted,
        ignored: decision.outcome.ignored.total(),
        last_at_ms: st.racer.state().last_fix.map(|f| f.at_ms),
    })
}

/// Counts a batch's fixes by outcome in [`m::FIXES`]: the accepted ones, and each reason
/// the rules gave for the others.
fn count_fixes(outcome: BatchCounts) {
    metrics::counter!(m::FIXES, "outcome" => "accepted").increment(u64::from(outcome.accepted));
    for (verdict, count) in outcome.ignored.by_verdict() {
        if count > 0 {
            metrics::counter!(m::FIXES, "outcome" => verdict_label(verdict))
                .increment(u64::from(count));
        }
    }
}

/// The `outcome` label of an ignored fix.
fn verdict_label(verdict: FixVerdict) -> &'static str {
    match verdict {
        FixVerdict::Stale => "stale",
        FixVerdict::Inaccurate => "inaccurate",
        FixVerdict::TooFast => "too_fast",
        FixVerdict::Invalid => "invalid",
        FixVerdict::AlreadyFinished => "after_finish",
    }
}

/// Counts the episodes a batch flagged in [`m::RACER_FLAGS`]: the off-course flag going
/// up, and each suspected cut (held or credited).
fn count_flags(events: &[RacerEvent]) {
    for event in events {
        let flag = match event {
            RacerEvent::WentOffCourse { .. } => "off_course",
            RacerEvent::CutSuspected { .. } => "suspected_cut",
            _ => continue,
        };
        metrics::counter!(m::RACER_FLAGS, "flag" => flag).increment(1);
    }
}

/// Tells the race where this racer is now.
fn report(st: &RacerActorState) {
    let state = st.racer.state();
    let (Some(progress_m), Some(last)) = (state.progress_m, state.last_fix) else {
        return;
    };
    if let Some(race) = st.ctx.races.get(&st.race) {
        let progress = RacerProgress {
            progress_m,
            at_ms: last.at_ms,
            finished_at_ms: state.finished_at_ms,
            off_course: state.off_course,
            live: Live {
                position: Some(last.position),
                speed_mps: state.pace_mps(),
                eta_ms: state.eta_ms(st.geometry.index.length_m()),
            },
        };
        let _ = race.cast(RaceMsg::Progress {
            bib: st.bib,
            progress,
            splits_ms: state.splits_ms.clone(),
            incidents: state.incidents.clone(),
        });
    }
}
