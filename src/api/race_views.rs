//! The race domain's wire views: race summaries, standings rows, ticks, results with
//! statistics, subscription snapshots and racer entries, converted between the domain's
//! types and the protocol's, plus the tick encoder the race actor publishes with. Pure
//! conversions, so the handlers in [`super::race`] read as what they decide.

use crate::actors::race::actor::{Subscription, UpdatesReceiver};
use crate::actors::race::devices::DeviceBinding;
use crate::actors::race::feed::{
    RecentTick, TickEncoder, TickFrame, TickUpdate, TickView, WireEncoding,
};
use crate::actors::race::results::{statistics, ResultRow, ResultStatus};
use crate::actors::race::standings::Standing;
use crate::actors::race::{RaceStatus, RaceSummary, RacerEntry};
use crate::actors::racer::Fix;
use crate::geo::Position;
use crate::net::codec::Codec;
use crate::net::protocol::{
    CheckpointView, CoursePoint, CutView, DeviceView, OffCourseView, Push, RaceCatchUp,
    RaceSnapshot, RaceStateView, RaceStatsView, RaceTick, RaceView, RacerView, Reply,
    ResultStatusView, ResultView, ServerFrame, StandingView, WireFix,
};
use bytes::Bytes;
use std::sync::Arc;

/// The wire view of a race summary.
pub fn race_view(r: &RaceSummary) -> RaceView {
    RaceView {
        id: r.id.to_string(),
        name: r.name.clone(),
        state: match r.status {
            RaceStatus::Scheduled => RaceStateView::Scheduled,
            RaceStatus::Live => RaceStateView::Live,
            RaceStatus::Finished => RaceStateView::Finished,
            RaceStatus::Cancelled => RaceStateView::Cancelled,
        },
        start_at_ms: r.start_at_ms,
        cutoff_at_ms: r.cutoff_at_ms,
        created_at_ms: r.created_at_ms,
        started_at_ms: r.started_at_ms,
        finished_at_ms: r.finished_at_ms,
        cancelled_at_ms: r.cancelled_at_ms,
        cancel_reason: r.cancel_reason.clone(),
        course_points: r.course_points,
        course_length_m: r.course_length_m,
    }
}

/// The wire view of a tick: a live update or a replay step.
pub fn race_tick(race_id: &str, update: &TickUpdate, full: bool) -> RaceTick {
    let rows = if full { &update.full } else { &update.changed };
    RaceTick {
        race_id: race_id.to_owned(),
        seq: update.seq,
        full,
        spectators: update.spectators,
        standings: rows.iter().map(standing_view).collect(),
    }
}

/// The wire view of a standings row.
pub(super) fn standing_view(s: &Standing) -> StandingView {
    StandingView {
        bib: s.bib,
        rank: s.rank,
        progress_dm: decimetres(s.progress_m),
        gap_ms: s.gap_ms,
        finished_at_ms: s.finished_at_ms,
        off_course: s.off_course,
        lat_e7: s.live.position.map_or(0, |p| p.lat_e7),
        lon_e7: s.live.position.map_or(0, |p| p.lon_e7),
        speed_cmps: s.live.speed_mps.map(|v| whole(v * 100.0)),
        eta_ms: s.live.eta_ms,
        checkpoints_passed: s.checkpoints_passed,
        last_split_ms: s.last_split_ms,
        cut_suspected: s.cut_suspected,
    }
}

/// A registration's racers as the domain's roster entries.
pub(super) fn racer_entries(racers: Vec<RacerView>) -> Vec<RacerEntry> {
    racers
        .into_iter()
        .map(|r| RacerEntry {
            bib: r.bib,
            name: r.name,
            team: r.team,
            email: r.email,
        })
        .collect()
}

/// A roster as the wire's start list; contact details only when `with_contacts` (for
/// organisers, never for the public).
pub(super) fn racer_views(roster: Vec<RacerEntry>, with_contacts: bool) -> Vec<RacerView> {
    roster
        .into_iter()
        .map(|r| RacerView {
            bib: r.bib,
            name: r.name,
            team: r.team,
            email: if with_contacts { r.email } else { None },
        })
        .collect()
}

/// Converts and range-checks a wire fix.
pub(super) fn fix_from_wire(f: &WireFix) -> Result<Fix, String> {
    let position = Position {
        lat_e7: f.lat_e7,
        lon_e7: f.lon_e7,
    }
    .validate()?;
    Ok(Fix {
        at_ms: f.at_ms,
        position,
        accuracy_m: f.accuracy_dm as f32 / 10.0,
        speed_mps: f.speed_cmps.map(|s| s as f32 / 100.0),
        elevation_m: f.elevation_dm.map(|e| e as f32 / 10.0),
    })
}

/// Results rows with the race's statistics, as the `results` reply.
pub(super) fn results_reply(rows: Vec<ResultRow>) -> Reply {
    let s = statistics(&rows);
    let stats = RaceStatsView {
        entrants: s.entrants,
        starters: s.starters,
        finishers: s.finishers,
        dnf: s.dnf,
        dns: s.dns,
        winning_time_ms: s.winning_time_ms,
        median_time_ms: s.median_time_ms,
        fastest_avg_speed_kmh: s.fastest_avg_speed_kmh,
        total_distance_m: s.total_distance_m,
        dsq: s.dsq,
    };
    let rows = rows.into_iter().map(result_view).collect();
    Reply::Results { rows, stats }
}

/// The wire view of one results row.
fn result_view(r: ResultRow) -> ResultView {
    ResultView {
        rank: r.rank,
        bib: r.bib,
        name: r.name,
        team: r.team,
        time_ms: r.time_ms,
        avg_speed_kmh: r.avg_speed_kmh,
        distance_dm: decimetres(r.distance_m),
        status: match r.status {
            ResultStatus::Finished => ResultStatusView::Finished,
            ResultStatus::Racing => ResultStatusView::Racing,
            ResultStatus::Dnf => ResultStatusView::Dnf,
            ResultStatus::Dns => ResultStatusView::Dns,
            ResultStatus::Dsq => ResultStatusView::Dsq,
        },
        splits_ms: r.splits_ms,
        reason: r.reason,
        off_course: r
            .off_course
            .iter()
            .map(|e| OffCourseView {
                from_ms: e.from_ms,
                to_ms: e.to_ms,
                max_offset_m: whole(e.max_offset_m),
            })
            .collect(),
        cuts: r
            .cuts
            .iter()
            .map(|c| CutView {
                at_ms: c.at_ms,
                from_dm: decimetres(c.from_m),
                to_dm: decimetres(c.to_m),
                held: c.held,
            })
            .collect(),
    }
}

/// A subscription split into the snapshot a new (or resuming) spectator gets, the ticks it
/// missed (oldest first) and the feed that continues it.
pub(super) fn snapshot(sub: Subscription) -> (RaceSnapshot, Vec<RecentTick>, UpdatesReceiver) {
    let snapshot = RaceSnapshot {
        resumed: sub.missed.is_some(),
        checkpoints: sub
            .checkpoints
            .iter()
            .map(|c| CheckpointView {
                name: c.name.clone(),
                lat_e7: c.position.lat_e7,
                lon_e7: c.position.lon_e7,
                distance_dm: decimetres(c.distance_m),
                mandatory: c.mandatory,
            })
            .collect(),
        race: race_view(&sub.summary),
        course: sub
            .course
            .iter()
            .map(|p| CoursePoint {
                lat_e7: p.lat_e7,
                lon_e7: p.lon_e7,
            })
            .collect(),
        // The public start list: no contact details.
        racers: racer_views(sub.roster, false),
        standings: sub.standings.iter().map(standing_view).collect(),
        seq: sub.seq,
        spectators: sub.spectators,
    };
    (snapshot, sub.missed.unwrap_or_default(), sub.updates)
}

/// Encodes a race's tick frames (`race_update` as delta or full table, `race_catch_up`) in
/// the encoding asked for; the race actor encodes each delta once per encoding when it
/// publishes, and the other forms once each on first demand, and every session sends the
/// same bytes.
pub fn tick_encoder() -> TickEncoder {
    Arc::new(|tick: &TickFrame<'_>, encoding: WireEncoding| {
        let race_id = tick.race.to_string();
        let standings = tick.rows.iter().map(standing_view).collect();
        let push = match tick.view {
            TickView::Delta | TickView::Full => Push::RaceUpdate(RaceTick {
                race_id,
                seq: tick.seq,
                full: tick.view == TickView::Full,
                spectators: tick.spectators,
                standings,
            }),
            TickView::CatchUp { since_seq } => Push::RaceCatchUp(RaceCatchUp {
                race_id,
                since_seq,
                seq: tick.seq,
                spectators: tick.spectators,
                standings,
            }),
        };
        let codec = match encoding {
            WireEncoding::Binary => Codec::Binary,
            WireEncoding::Json => Codec::Json,
        };
        match codec.encode_server_bytes(&ServerFrame::Push(push)) {
            Ok(bytes) => Some(Bytes::from(bytes)),
            Err(e) => {
                tracing::error!(race = %tick.race, "cannot encode a race update: {e}");
                None
            }
        }
    })
}

/// Metres as the wire's whole decimetres, saturating (distances are never negative).
fn decimetres(metres: f64) -> u32 {
    whole(metres * 10.0)
}

/// `units` rounded to a whole number for the wire, clamped into `u32` (NaN is 0).
fn whole(units: f64) -> u32 {
    units.round().clamp(0.0, f64::from(u32::MAX)) as u32
}

/// A device binding as admins see it.
pub fn device_view(binding: &DeviceBinding) -> DeviceView {
    DeviceView {
        bib: binding.bib,
        device_id: binding.device_id.clone(),
        bound_at_ms: binding.bound_at_ms,
    }
}
