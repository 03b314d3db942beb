//! `peloton admin import …`, `peloton admin voucher verify` and `peloton admin patrol
//! report`: bulk imports with a progress bar and a validation report, offline voucher
//! checks, and the per-day, per-precinct report.

use super::output::{self, ReportFormat};
use super::CliError;
use crate::actors::patrol::import::{self, ImportKind, ImportRows, RowProblem};
use crate::actors::patrol::voucher;
use crate::net::client::Client;
use crate::net::protocol::{ImportBatch, Reply, ReportRowView, Request};
use clap::{Args, Subcommand};
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::Table;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

/// Rows per import request: well under the admin message limit even for long rows.
pub const IMPORT_BATCH_ROWS: usize = 5_000;

/// `peloton admin import KIND FILE`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// officers, offers or charities.
    pub kind: String,
    /// A CSV file with a header row, or a JSON array of objects.
    pub file: PathBuf,
    /// csv or json (default: from the file's first character).
    #[arg(long)]
    pub format: Option<String>,
    /// Import nothing if any row is invalid.
    #[arg(long)]
    pub all_or_nothing: bool,
}

/// `peloton admin voucher …`.
#[derive(Debug, Subcommand)]
pub enum VoucherCommand {
    /// Check a voucher code offline with the server's secret.
    Verify {
        /// The code, as printed (case, dashes and spaces do not matter).
        code: String,
        /// Where the server's secret is.
        #[command(flatten)]
        files: super::keys::ServerFiles,
    },
}

/// `peloton admin patrol …`.
#[derive(Debug, Subcommand)]
pub enum PatrolCommand {
    /// The retailer offers points can buy.
    Offers,
    /// The charities points can go to.
    Charities,
    /// Connections and points per UTC day and precinct.
    Report {
        /// First day, YYYY-MM-DD.
        #[arg(long)]
        from: String,
        /// Last day (inclusive), YYYY-MM-DD.
        #[arg(long)]
        to: String,
        /// table, csv or json (--json wins).
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
}

/// A progress bar on stderr (indicatif): redrawn in place on a terminal, hidden when stderr
/// is not one, so a log or a CI run gets one line per phase ([`finish_bar`]) instead.
fn progress_bar(label: &'static str, total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total.max(1));
    // The template is a constant; were it refused, indicatif's default bar still shows.
    if let Ok(style) = ProgressStyle::with_template("{msg:<9} [{bar:30}] {pos}/{len}") {
        bar.set_style(style.progress_chars("#>."));
    }
    bar.set_message(label);
    bar
}

/// Ends a phase's bar: left full on a terminal; where the bar was hidden (stderr is a file
/// or a pipe), the phase's one line, `validated 4/4`, so a log still says how far it got.
fn finish_bar(bar: &ProgressBar, label: &str) {
    bar.finish();
    if bar.is_hidden() {
        eprintln!("{label} {}/{}", bar.position(), bar.length().unwrap_or(0));
    }
}

/// Runs `peloton admin import`: validates the whole file locally (progress bar), prints
/// the report of refused rows, then sends the valid rows in batches (progress bar). With
/// `--all-or-nothing`, any refused row means nothing is sent. Exits 1 when any row was
/// refused, so scripts notice.
pub async fn import(client: &mut Client, args: ImportArgs, json: bool) -> Result<(), CliError> {
    let kind = ImportKind::parse(&args.kind).map_err(|e| CliError::Usage(e.to_string()))?;
    let bytes = std::fs::read(&args.file)
        .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", args.file.display())))?;
    // Rough row count for the validation bar: one per line (CSV) or object (JSON).
    let estimate = bytes.iter().filter(|b| **b == b'\n').count().max(1) as u64;
    let bar = progress_bar("validated", estimate);
    let report = import::parse_import(kind, &bytes, args.format.as_deref(), |done| {
        bar.set_position(done.min(estimate))
    });
    let report = match report {
        Ok(report) => {
            // The estimate counted lines, not rows: the bar ends full however many rows
            // there were.
            bar.set_position(estimate);
            finish_bar(&bar, "validated");
            report
        }
        Err(e) => {
            // Left where it stopped, so the error below reads as where reading failed.
            bar.abandon();
            return Err(CliError::Failed(format!("{}: {e}", args.file.display())));
        }
    };
    let valid = report.rows.len() as u64;
    // Rows, not problems: a row may have several, and past a cap problems are only counted.
    let refused = report.refused();
    let send = refused == 0 || !args.all_or_nothing;
    let mut written = 0u64;
    let mut total = 0u64;
    if send && valid > 0 {
        let bar = progress_bar("imported", valid);
        for batch in batches(&report.rows) {
            let rows = batch_len(&batch);
            let reply = client
                .request(Request::PatrolImport(batch))
                .await
                .map_err(|e| {
                    // Batches already acknowledged are stored; say so, never leave it silent.
                    CliError::Failed(format!(
                        "import stopped after {written} of {valid} valid rows: {e}; running it \
                         again is safe (rows are replaced by id)"
                    ))
                })?;
            match reply {
                Reply::Imported {
                    rows: stored,
                    total: now,
                    ..
                } => {
                    written += stored;
                    total = now;
                }
                other => return Err(CliError::unexpected(&other)),
            }
            bar.set_position(written.max(rows as u64).min(valid));
        }
        finish_bar(&bar, "imported");
    }
    if json {
        output::json(&serde_json::json!({
            "kind": kind.as_str(),
            "rows_in_file": report.total,
            "valid": valid,
            "refused": refused,
            "imported": written,
            "total_stored": total,
            "all_or_nothing": args.all_or_nothing,
            "problems": report.problems.iter().map(|p| serde_json::json!({
                "line": p.line, "field": p.field, "reason": p.reason,
            })).collect::<Vec<_>>(),
            "problems_not_listed": report.omitted_problems,
        }))?;
    } else {
        print_problems(&report.problems);
        if report.omitted_problems > 0 {
            println!(
                "... and {} more problems not listed",
                report.omitted_problems
            );
        }
        if send {
            println!(
                "imported {written} of {} {} ({refused} refused); {total} stored now",
                report.total,
                kind.as_str()
            );
        } else {
            println!(
                "imported nothing: {refused} of {} rows refused and --all-or-nothing was given",
                report.total
            );
        }
    }
    if refused > 0 {
        return Err(CliError::Failed(format!(
            "{refused} row(s) refused; see the report above"
        )));
    }
    Ok(())
}

fn print_problems(problems: &[RowProblem]) {
    if problems.is_empty() {
        return;
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["line", "field", "reason"]);
    for p in problems {
        table.add_row([p.line.to_string(), p.field.clone(), p.reason.clone()]);
    }
    println!("{table}");
}

/// Valid rows as wire batches of at most [`IMPORT_BATCH_ROWS`].
fn batches(rows: &ImportRows) -> Vec<ImportBatch> {
    match rows {
        ImportRows::Officers(rows) => rows
            .chunks(IMPORT_BATCH_ROWS)
            .map(|chunk| {
                ImportBatch::Officers(chunk.iter().map(crate::api::patrol::officer_row).collect())
            })
            .collect(),
        ImportRows::Offers(rows) => rows
            .chunks(IMPORT_BATCH_ROWS)
            .map(|chunk| {
                ImportBatch::Offers(
                    chunk
                        .iter()
                        .cloned()
                        .map(crate::api::patrol::offer_row)
                        .collect(),
                )
            })
            .collect(),
        ImportRows::Charities(rows) => rows
            .chunks(IMPORT_BATCH_ROWS)
            .map(|chunk| {
                ImportBatch::Charities(
                    chunk
                        .iter()
                        .cloned()
                        .map(crate::api::patrol::charity_row)
                        .collect(),
                )
            })
            .collect(),
    }
}

fn batch_len(batch: &ImportBatch) -> usize {
    match batch {
        ImportBatch::Officers(rows) => rows.len(),
        ImportBatch::Offers(rows) => rows.len(),
        ImportBatch::Charities(rows) => rows.len(),
    }
}

/// Runs `peloton admin voucher verify`: offline, with the secret the server signs with.
pub fn voucher(command: VoucherCommand, json: bool) -> Result<(), CliError> {
    let VoucherCommand::Verify { code, files } = command;
    let keys = super::keys::server_keys(&files.config()?)?;
    match voucher::verify(keys.voucher_key(), &code) {
        Ok(v) => {
            let day = crate::time::format_day(v.issued_day);
            if json {
                output::json(&serde_json::json!({
                    "valid": true,
                    "serial": v.serial,
                    "offer_id": v.offer_id,
                    "points": v.points,
                    "issued": day,
                    "holder": v.holder,
                }))
            } else {
                println!(
                    "valid voucher #{}: offer {} ({} points) issued {day} to {}",
                    v.serial, v.offer_id, v.points, v.holder
                );
                Ok(())
            }
        }
        Err(e) => {
            if json {
                output::json(&serde_json::json!({ "valid": false, "reason": e.to_string() }))?;
            }
            Err(CliError::Failed(format!("invalid voucher: {e}")))
        }
    }
}

/// Runs `peloton admin patrol report|offers|charities`.
pub async fn report(
    client: &mut Client,
    command: PatrolCommand,
    json: bool,
) -> Result<(), CliError> {
    let (from, to, format) = match command {
        PatrolCommand::Report { from, to, format } => (from, to, format),
        PatrolCommand::Offers => return list(client, Request::OffersList, json).await,
        PatrolCommand::Charities => return list(client, Request::CharitiesList, json).await,
    };
    for (flag, value) in [("--from", &from), ("--to", &to)] {
        crate::time::parse_day(value).map_err(|e| CliError::Usage(format!("{flag}: {e}")))?;
    }
    let rows = match client.request(Request::PatrolReport { from, to }).await? {
        Reply::PatrolReport(rows) => rows,
        other => return Err(CliError::unexpected(&other)),
    };
    let format = if json { ReportFormat::Json } else { format };
    print_report(&rows, format)
}

/// Prints the offers or charities the server has.
async fn list(client: &mut Client, request: Request, json: bool) -> Result<(), CliError> {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    match client.request(request).await? {
        Reply::Offers(offers) if json => return output::json(&offers),
        Reply::Charities(charities) if json => return output::json(&charities),
        Reply::Offers(offers) => {
            table.set_header(["id", "retailer", "title", "points"]);
            for o in offers {
                table.add_row([o.id, o.retailer, o.title, o.points.to_string()]);
            }
        }
        Reply::Charities(charities) => {
            table.set_header(["id", "name"]);
            for c in charities {
                table.add_row([c.id, c.name]);
            }
        }
        other => return Err(CliError::unexpected(&other)),
    }
    println!("{table}");
    Ok(())
}

fn print_report(rows: &[ReportRowView], format: ReportFormat) -> Result<(), CliError> {
    let header = [
        "date",
        "precinct",
        "connections",
        "points_awarded",
        "points_redeemed",
        "points_donated",
    ];
    let cells = |r: &ReportRowView| {
        [
            r.date.clone(),
            r.precinct.clone(),
            r.connections.to_string(),
            r.points_awarded.to_string(),
            r.points_redeemed.to_string(),
            r.points_donated.to_string(),
        ]
    };
    match format {
        ReportFormat::Json => output::json(&rows),
        ReportFormat::Csv => {
            let fail = |e: csv::Error| CliError::Failed(e.to_string());
            let mut out = csv::Writer::from_writer(std::io::stdout());
            out.write_record(header).map_err(fail)?;
            for r in rows {
                out.write_record(cells(r)).map_err(fail)?;
            }
            out.flush().map_err(|e| CliError::Failed(e.to_string()))
        }
        ReportFormat::Table => {
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED);
            table.set_header(header);
            for r in rows {
                table.add_row(cells(r));
            }
            println!("{table}");
            Ok(())
        }
    }
}
