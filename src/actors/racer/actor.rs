//! The racer actor: one per racer in a live race. It judges each fix with the pure
//! [`RacerState`], journals what was accepted (a whole batch in one group-committed
//! append), applies it, acknowledges the device, and reports the new progress to its race.
//!
//! On start (first fix, restart after a panic, recovery) it rebuilds its state from the
//! journal and reports its progress, which is how the race's standings come back after a
//! restart without being stored twice.

use super::state::{Fix, RacerEvent, RacerState};
use super::KIND;
use crate::actors::race::actor::{RaceContext, RaceMsg};
use crate::actors::race::standings::{Live, RacerProgress};
use crate::actors::racer::CourseGeometry;
use crate::error::Rejection;
use crate::ids::RaceId;
use crate::persist::{ActorKey, Compaction, Restored};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::Arc;
use std::time::Duration;

/// How long a starting racer waits for its race to hand over the course.
const TRACK_TIMEOUT: Duration = Duration::from_secs(10);

/// What a batch of fixes did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixesOutcome {
    /// Fixes that were accepted and journaled.
    pub accepted: u32,
    /// Fixes that changed nothing (stale, inaccurate, impossible, after the finish).
    pub ignored: u32,
    /// The newest applied fix time: the device may forget every fix up to it.
    pub last_at_ms: Option<i64>,
}

/// Messages a racer actor accepts.
pub enum RacerMsg {
    /// Judge and store a batch of fixes, oldest first.
    Fixes {
        /// The fixes.
        fixes: Vec<Fix>,
        /// The outcome, once the accepted ones are durable.
        reply: RpcReplyPort<Result<FixesOutcome, Rejection>>,
    },
    /// Report progress to the race again (its actor restarted and lost its standings).
    Report,
    /// Panics inside the handler, to prove supervision restarts racers from the journal.
    #[cfg(test)]
    Panic,
}

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
    /// Journal key.
    key: ActorKey,
    /// The rules' state.
    state: RacerState,
    /// Last journaled sequence number.
    seq: u64,
    /// Sequence number of the latest snapshot.
    snapshot_seq: u64,
    /// The course, shared with the race and its other racers.
    geometry: Arc<CourseGeometry>,
    /// Shared storage, registries and rules.
    ctx: Arc<RaceContext>,
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
        let key = racer_key(&args.race, args.bib);
        let Restored {
            state,
            last_seq,
            snapshot_seq,
        } = args
            .ctx
            .store
            .load::<RacerState, RacerEvent>(&key)?
            .fold(RacerState::apply);
        let st = RacerActorState {
            race: args.race,
            bib: args.bib,
            key,
            state,
            seq: last_seq,
            snapshot_seq,
            geometry,
            ctx: args.ctx,
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
                let _ = reply.send(ingest(st, fixes).await);
            }
            RacerMsg::Report => report(st),
            #[cfg(test)]
            RacerMsg::Panic => panic!("racer {} asked to panic", st.bib),
        }
        Ok(())
    }
}

/// Judges a batch on a copy, journals what it accepted, then applies: a failed append leaves
/// the racer exactly as it was.
async fn ingest(st: &mut RacerActorState, fixes: Vec<Fix>) -> Result<FixesOutcome, Rejection> {
    let mut next = st.state.clone();
    let mut events = Vec::new();
    let (mut accepted, mut ignored) = (0u32, 0u32);
    for fix in fixes {
        match next.handle(fix, &st.geometry, &st.ctx.rules) {
            Ok(produced) => {
                for event in &produced {
                    next.apply(event);
                }
                events.extend(produced);
                accepted += 1;
            }
            Err(_) => ignored += 1,
        }
    }
    if !events.is_empty() {
        st.ctx
            .journal
            .append_or_unavailable(
                &st.key,
                st.seq + 1,
                &events,
                "the fixes could not be stored; send them again",
            )
            .await?;
        st.seq += events.len() as u64;
        st.state = next;
        if st.seq - st.snapshot_seq >= st.ctx.snapshot_every {
            match st
                .ctx
                .journal
                .snapshot(&st.key, st.seq, &st.state, Compaction::Archive)
                .await
            {
                Ok(()) => st.snapshot_seq = st.seq,
                Err(e) => tracing::warn!(race = %st.race, bib = st.bib, "snapshot not queued: {e}"),
            }
        }
        report(st);
    }
    Ok(FixesOutcome {
        accepted,
        ignored,
        last_at_ms: st.state.last_fix.map(|f| f.at_ms),
    })
}

/// Tells the race where this racer is now.
fn report(st: &RacerActorState) {
    let (Some(progress_m), Some(last)) = (st.state.progress_m, st.state.last_fix) else {
        return;
    };
    if let Some(race) = st.ctx.races.get(&st.race) {
        let progress = RacerProgress {
            progress_m,
            at_ms: last.at_ms,
            finished_at_ms: st.state.finished_at_ms,
            off_course: st.state.off_course,
            live: Live {
                position: Some(last.position),
                speed_mps: st.state.pace_mps(),
                eta_ms: st.state.eta_ms(st.geometry.index.length_m()),
            },
        };
        let _ = race.cast(RaceMsg::Progress {
            bib: st.bib,
            progress,
            splits_ms: st.state.splits_ms.clone(),
            incidents: st.state.incidents.clone(),
        });
    }
}
