//! `peloton admin race racers …`: building registration requests, including a CSV import
//! that checks every line locally with the server's own validation before sending anything,
//! so the report names lines and fields, and nothing is half-imported.

use super::args::RacersCommand;
use super::CliError;
use crate::actors::race::devices::{validate_device_id, MIN_DEVICE_ID_CHARS};
use crate::actors::race::state::validate_entry;
use crate::actors::race::RacerEntry;
use crate::net::protocol::{RacerView, Request};
use std::collections::HashMap;
use std::path::Path;

/// What a racers subcommand sends: one request, then the device bindings it implies
/// (bib, and the id to bind or `None` for a generated one), once the racers are registered.
pub struct RacersPlan {
    /// The race.
    pub race_id: String,
    /// The registration or the listing.
    pub request: Request,
    /// Device ids to bind afterwards.
    pub bind: Vec<(u32, Option<String>)>,
}

/// The plan of a racers subcommand, every value checked before anything is sent.
pub fn plan(command: RacersCommand) -> Result<RacersPlan, CliError> {
    Ok(match command {
        RacersCommand::Add {
            race,
            bib,
            name,
            team,
            email,
            device_id,
            new_device_id,
        } => {
            let entry = validate_entry(RacerEntry {
                bib,
                name,
                team,
                email,
            })
            .map_err(CliError::Usage)?;
            if let Some(id) = &device_id {
                check_device_id(id)
                    .map_err(|reason| CliError::Usage(format!("--device-id: {reason}")))?;
            }
            let bind = if device_id.is_some() || new_device_id {
                vec![(bib, device_id)]
            } else {
                Vec::new()
            };
            RacersPlan {
                race_id: race.clone(),
                request: Request::RacerRegister {
                    race_id: race,
                    racers: vec![view(entry)],
                },
                bind,
            }
        }
        RacersCommand::Import {
            race,
            file,
            new_device_ids,
        } => {
            let roster = read_csv(&file)?;
            let bind = roster
                .racers
                .iter()
                .filter_map(|r| {
                    let given = roster.devices.iter().find(|(bib, _)| *bib == r.bib);
                    match given {
                        Some((bib, id)) => Some((*bib, Some(id.clone()))),
                        None if new_device_ids => Some((r.bib, None)),
                        None => None,
                    }
                })
                .collect();
            RacersPlan {
                race_id: race.clone(),
                request: Request::RacerRegister {
                    race_id: race,
                    racers: roster.racers,
                },
                bind,
            }
        }
        RacersCommand::List { race } => RacersPlan {
            race_id: race.clone(),
            request: Request::RacerList { race_id: race },
            bind: Vec::new(),
        },
    })
}

/// A device id as the server will check it when it is bound (an admin's id has at least
/// `MIN_DEVICE_ID_CHARS`), so a file is refused before anything is registered.
fn check_device_id(id: &str) -> Result<(), String> {
    validate_device_id(id).map_err(|r| r.message)?;
    if id.len() < MIN_DEVICE_ID_CHARS {
        return Err(format!(
            "a device id has at least {MIN_DEVICE_ID_CHARS} characters"
        ));
    }
    Ok(())
}

/// A roster file as read: the racers, and the device ids some rows come with.
#[derive(Debug)]
pub struct RosterFile {
    /// The racers, in file order.
    pub racers: Vec<RacerView>,
    /// (bib, device id) of the rows with a `device_id` cell.
    pub devices: Vec<(u32, String)>,
}

fn view(entry: RacerEntry) -> RacerView {
    RacerView {
        bib: entry.bib,
        name: entry.name,
        team: entry.team,
        email: entry.email,
    }
}

/// Reads and validates a roster CSV; every problem is reported as `line N: reason`.
pub fn read_csv(path: &Path) -> Result<RosterFile, CliError> {
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    parse_csv(&path.display().to_string(), &bytes)
}

/// Validates a roster CSV already in memory (the pure half of [`read_csv`], also fuzzed);
/// `source` says where it came from in messages.
pub fn parse_csv(source: &str, bytes: &[u8]) -> Result<RosterFile, CliError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(bytes);
    let headers = reader
        .headers()
        .map_err(|e| CliError::Usage(format!("{source}: {e}")))?
        .clone();
    let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (Some(bib_col), Some(name_col)) = (column("bib"), column("name")) else {
        return Err(CliError::Usage(format!(
            "{}: the header row must name at least `bib` and `name` columns (optional: team, email, device_id)",
            source
        )));
    };
    let (team_col, email_col) = (column("team"), column("email"));
    let device_col = column("device_id");
    let mut racers = Vec::new();
    let mut devices: Vec<(u32, String)> = Vec::new();
    let mut device_lines: HashMap<String, u64> = HashMap::new();
    let mut problems = Vec::new();
    let mut bibs: HashMap<u32, u64> = HashMap::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                problems.push(format!("line {line}: {e}"));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        let field = |col: Option<usize>| {
            col.and_then(|c| record.get(c))
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let bib = match record.get(bib_col).unwrap_or("").parse::<u32>() {
            Ok(bib) => bib,
            Err(_) => {
                problems.push(format!(
                    "line {line}: field bib: `{}` is not a number",
                    record.get(bib_col).unwrap_or("")
                ));
                continue;
            }
        };
        let entry = RacerEntry {
            bib,
            name: record.get(name_col).unwrap_or("").to_owned(),
            team: field(team_col),
            email: field(email_col),
        };
        if let Some(id) = field(device_col) {
            match check_device_id(&id) {
                Err(reason) => {
                    problems.push(format!("line {line}: field device_id: {reason}"));
                    continue;
                }
                Ok(()) => {
                    if let Some(first) = device_lines.insert(id.clone(), line) {
                        problems.push(format!(
                            "line {line}: device id {id} is also on line {first}"
                        ));
                        continue;
                    }
                    devices.push((bib, id));
                }
            }
        }
        match validate_entry(entry) {
            Err(reason) => problems.push(format!("line {line}: {reason}")),
            Ok(entry) => {
                if let Some(first) = bibs.insert(entry.bib, line) {
                    problems.push(format!(
                        "line {line}: bib {} is also on line {first}",
                        entry.bib
                    ));
                } else {
                    racers.push(view(entry));
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(CliError::Failed(format!(
            "{}: nothing imported; {} problem(s): {}",
            source,
            problems.len(),
            problems.join("; ")
        )));
    }
    if racers.is_empty() {
        return Err(CliError::Usage(format!(
            "{}: no racers in the file",
            source
        )));
    }
    Ok(RosterFile { racers, devices })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_file_reads_and_a_bad_one_names_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.csv");
        std::fs::write(
            &good,
            "bib,name,team,email\n1,Ana Novak,Celje,ana@example.si\n2, Bor ,,\n",
        )
        .unwrap();
        let racers = read_csv(&good).unwrap().racers;
        assert_eq!(racers.len(), 2);
        assert_eq!(
            (
                racers[1].name.as_str(),
                racers[1].team.clone(),
                racers[1].email.clone()
            ),
            ("Bor", None, None)
        );

        let bad = dir.path().join("bad.csv");
        std::fs::write(
            &bad,
            "bib,name,email\nx,Ana,\n2,,\n3,Cene,not-mail\n4,Dan,\n4,Eva,\n",
        )
        .unwrap();
        let err = read_csv(&bad).unwrap_err().to_string();
        for expected in [
            "line 2: field bib",
            "line 3: name",
            "line 4: email",
            "line 6: bib 4 is also on line 5",
        ] {
            assert!(err.contains(expected), "{expected} missing from {err}");
        }
        let headless = dir.path().join("headless.csv");
        std::fs::write(&headless, "1,Ana\n").unwrap();
        assert!(read_csv(&headless)
            .unwrap_err()
            .to_string()
            .contains("header"));
    }
}
