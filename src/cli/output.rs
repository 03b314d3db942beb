//! Printing results: a table or a few lines for people, exactly one JSON document with
//! `--json`. Errors are printed by `main` as one line on stderr.

use crate::net::protocol::{
    DeviceView, RaceStatsView, RaceView, RacerView, ResultStatusView, ResultView, StandingView,
};
use crate::time::format_rfc3339;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde::Serialize;

/// How tabular reports print (`race results`, `patrol report`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// A table for people.
    Table,
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON array.
    Json,
}

/// Prints `value` as one JSON document on stdout.
pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<(), super::CliError> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| super::CliError::Failed(e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// Prints `value` as one JSON document with `--json`, else as `table` draws it for people.
pub fn json_or<T: Serialize + ?Sized>(
    json: bool,
    value: &T,
    table: impl FnOnce(&T),
) -> Result<(), super::CliError> {
    if json {
        return self::json(value);
    }
    table(value);
    Ok(())
}

/// Races as a table.
pub fn races(races: &[RaceView]) {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["id", "name", "state", "start", "length km", "points"]);
    for r in races {
        table.add_row([
            r.id.clone(),
            r.name.clone(),
            state(r).to_owned(),
            format_rfc3339(r.start_at_ms),
            format!("{:.2}", r.course_length_m / 1000.0),
            r.course_points.to_string(),
        ]);
    }
    println!("{table}");
}

/// Racers as a table.
pub fn racers(racers: &[RacerView]) {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["bib", "name", "team", "email"]);
    for r in racers {
        let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        table.add_row([
            r.bib.to_string(),
            r.name.clone(),
            dash(&r.team),
            dash(&r.email),
        ]);
    }
    println!("{table}");
}

/// Device bindings, one row per bib.
pub fn devices(devices: &[DeviceView]) {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["bib", "device id", "bound at"]);
    for d in devices {
        table.add_row([
            d.bib.to_string(),
            d.device_id.clone(),
            format_rfc3339(d.bound_at_ms),
        ]);
    }
    println!("{table}");
}

/// Results in the chosen format; JSON rows carry `time_s` (seconds, null unless finished).
///
/// JSON is the array of rows (what scripts consume), `rank` null for unranked rows; the table
/// ends with the race's statistics. As in published results, the table's rank column shows
/// DNF, DSQ or DNS for unranked rows, and its last column says why. Splits are seconds
/// from the gun at each checkpoint.
pub fn results(
    rows: &[ResultView],
    stats: &RaceStatsView,
    format: ReportFormat,
) -> Result<(), super::CliError> {
    let time_s = |r: &ResultView| r.time_ms.map(|t| t as f64 / 1000.0);
    let splits_s =
        |r: &ResultView| -> Vec<f64> { r.splits_ms.iter().map(|t| *t as f64 / 1000.0).collect() };
    let status = |r: &ResultView| match r.status {
        ResultStatusView::Finished => "finished",
        ResultStatusView::Racing => "racing",
        ResultStatusView::Dnf => "dnf",
        ResultStatusView::Dns => "dns",
        ResultStatusView::Dsq => "dsq",
    };
    // What the rank column shows: the place, or what published results print instead.
    let place = |r: &ResultView| match (r.rank, r.status) {
        (Some(rank), _) => rank.to_string(),
        (None, ResultStatusView::Dnf) => "DNF".into(),
        (None, ResultStatusView::Dns) => "DNS".into(),
        (None, ResultStatusView::Dsq) => "DSQ".into(),
        (None, ResultStatusView::Finished | ResultStatusView::Racing) => "-".into(),
    };
    // What an organiser checks before the results are final: suspected cuts with the
    // stretch skipped, and spells off the course.
    let incidents = |r: &ResultView| -> String {
        let km = |dm: u32| f64::from(dm) / 10_000.0;
        let mut notes: Vec<String> = r
            .cuts
            .iter()
            .map(|c| {
                let held = if c.held { ", held" } else { "" };
                format!("cut? {:.2}–{:.2} km{held}", km(c.from_dm), km(c.to_dm))
            })
            .collect();
        if !r.off_course.is_empty() {
            let farthest = r
                .off_course
                .iter()
                .map(|e| e.max_offset_m)
                .max()
                .unwrap_or(0);
            notes.push(format!(
                "off course {}× (up to {farthest} m)",
                r.off_course.len()
            ));
        }
        notes.join("; ")
    };
    let note = |r: &ResultView| -> String {
        [r.reason.clone().unwrap_or_default(), incidents(r)]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    };
    match format {
        ReportFormat::Json => json(
            &rows
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "rank": r.rank,
                        "bib": r.bib,
                        "name": r.name,
                        "team": r.team,
                        "time_s": time_s(r),
                        "avg_speed_kmh": r.avg_speed_kmh,
                        "distance_km": f64::from(r.distance_dm) / 10_000.0,
                        "splits_s": splits_s(r),
                        "status": status(r),
                        "reason": r.reason,
                        "off_course": r.off_course.iter().map(|e| serde_json::json!({
                            "from_ms": e.from_ms,
                            "to_ms": e.to_ms,
                            "max_offset_m": e.max_offset_m,
                        })).collect::<Vec<_>>(),
                        "cuts": r.cuts.iter().map(|c| serde_json::json!({
                            "at_ms": c.at_ms,
                            "from_km": f64::from(c.from_dm) / 10_000.0,
                            "to_km": f64::from(c.to_dm) / 10_000.0,
                            "held": c.held,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect::<Vec<_>>(),
        ),
        ReportFormat::Csv => {
            let mut out = csv::Writer::from_writer(std::io::stdout());
            let fail = |e: csv::Error| super::CliError::Failed(e.to_string());
            out.write_record([
                "rank",
                "bib",
                "name",
                "team",
                "status",
                "time_s",
                "avg_speed_kmh",
                "distance_km",
                "splits_s",
                "reason",
                "incidents",
            ])
            .map_err(fail)?;
            for r in rows {
                out.write_record([
                    r.rank.map(|n| n.to_string()).unwrap_or_default(),
                    r.bib.to_string(),
                    r.name.clone(),
                    r.team.clone().unwrap_or_default(),
                    status(r).to_owned(),
                    time_s(r).map(|t| format!("{t:.1}")).unwrap_or_default(),
                    r.avg_speed_kmh
                        .map(|v| format!("{v:.2}"))
                        .unwrap_or_default(),
                    format!("{:.3}", f64::from(r.distance_dm) / 10_000.0),
                    splits_s(r)
                        .iter()
                        .map(|t| format!("{t:.1}"))
                        .collect::<Vec<_>>()
                        .join(";"),
                    r.reason.clone().unwrap_or_default(),
                    incidents(r),
                ])
                .map_err(fail)?;
            }
            out.flush()
                .map_err(|e| super::CliError::Failed(e.to_string()))
        }
        ReportFormat::Table => {
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED);
            table.set_header([
                "rank", "bib", "name", "team", "status", "time", "km/h", "km", "splits", "note",
            ]);
            for r in rows {
                let time = r.time_ms.map_or_else(|| "-".into(), clock);
                let splits = r
                    .splits_ms
                    .iter()
                    .map(|t| clock(*t))
                    .collect::<Vec<_>>()
                    .join(" ");
                table.add_row([
                    place(r),
                    r.bib.to_string(),
                    r.name.clone(),
                    r.team.clone().unwrap_or_else(|| "-".into()),
                    status(r).to_owned(),
                    time,
                    r.avg_speed_kmh
                        .map_or_else(|| "-".into(), |v| format!("{v:.1}")),
                    format!("{:.2}", f64::from(r.distance_dm) / 10_000.0),
                    splits,
                    note(r),
                ]);
            }
            println!("{table}");
            let opt_clock = |t: Option<i64>| t.map_or_else(|| "-".into(), clock);
            println!(
                "{} entrants, {} started, {} finished, {} DNF, {} DSQ, {} DNS; winner {}, \
                 median {}, fastest {} km/h, {:.1} km ridden in all",
                stats.entrants,
                stats.starters,
                stats.finishers,
                stats.dnf,
                stats.dsq,
                stats.dns,
                opt_clock(stats.winning_time_ms),
                opt_clock(stats.median_time_ms),
                stats
                    .fastest_avg_speed_kmh
                    .map_or_else(|| "-".into(), |v| format!("{v:.1}")),
                stats.total_distance_m / 1000.0
            );
            Ok(())
        }
    }
}

/// A duration in ms as h:mm:ss.
fn clock(ms: i64) -> String {
    let s = ms / 1000;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Standings as a table.
pub fn standings(rows: &[StandingView]) {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["rank", "bib", "km", "gap", "finished", "flags"]);
    for r in rows {
        let gap = r
            .gap_ms
            .map_or_else(|| "-".into(), |g| format!("+{:.1}s", g as f64 / 1000.0));
        let finished = r.finished_at_ms.map_or_else(|| "-".into(), format_rfc3339);
        let flags = match (r.off_course, r.cut_suspected) {
            (true, true) => "off course, cut?",
            (true, false) => "off course",
            (false, true) => "cut?",
            (false, false) => "",
        };
        table.add_row([
            r.rank.to_string(),
            r.bib.to_string(),
            format!("{:.2}", f64::from(r.progress_dm) / 10_000.0),
            gap,
            finished,
            flags.into(),
        ]);
    }
    println!("{table}");
}

/// One race as labelled lines.
pub fn race(r: &RaceView) {
    let opt = |t: Option<i64>| t.map(format_rfc3339).unwrap_or_else(|| "-".into());
    println!("id        {}", r.id);
    println!("name      {}", r.name);
    println!("state     {}", state(r));
    println!("start     {}", format_rfc3339(r.start_at_ms));
    println!("cut-off   {}", opt(r.cutoff_at_ms));
    println!(
        "course    {:.2} km, {} points",
        r.course_length_m / 1000.0,
        r.course_points
    );
    println!("created   {}", format_rfc3339(r.created_at_ms));
    println!("started   {}", opt(r.started_at_ms));
    println!("finished  {}", opt(r.finished_at_ms));
    if r.cancelled_at_ms.is_some() {
        println!(
            "cancelled {} ({})",
            opt(r.cancelled_at_ms),
            r.cancel_reason.as_deref().unwrap_or("no reason given")
        );
    }
}

fn state(r: &RaceView) -> &'static str {
    use crate::net::protocol::RaceStateView as S;
    match r.state {
        S::Scheduled => "scheduled",
        S::Live => "live",
        S::Finished => "finished",
        S::Cancelled => "cancelled",
    }
}

/// Mail jobs as a table.
pub fn mail_jobs(jobs: &[crate::net::protocol::MailJobView]) {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header([
        "id",
        "state",
        "attempts",
        "to",
        "subject",
        "next / sent",
        "last error",
    ]);
    for j in jobs {
        let when = j
            .next_attempt_at_ms
            .or(j.sent_at_ms)
            .map_or_else(|| "-".into(), format_rfc3339);
        table.add_row([
            j.id.clone(),
            j.state.clone(),
            j.attempts.to_string(),
            j.to.clone(),
            j.subject.clone(),
            when,
            j.last_error.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    println!("{table}");
}

/// One mail job with its failed attempts.
pub fn mail_job(detail: &crate::net::protocol::MailJobDetailView) {
    mail_jobs(std::slice::from_ref(&detail.job));
    println!("Message-ID: {}", detail.message_id);
    if !detail.failures.is_empty() {
        mail_failures(&detail.failures);
    }
}

/// The failed-message log as a table.
pub fn mail_failures(rows: &[crate::net::protocol::MailFailureView]) {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["at", "job", "attempt", "to", "error"]);
    for f in rows {
        table.add_row([
            format_rfc3339(f.at_ms),
            f.id.clone(),
            f.attempt.to_string(),
            f.to.clone(),
            f.error.clone(),
        ]);
    }
    println!("{table}");
}
