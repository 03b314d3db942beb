//! `peloton admin race racers …`: building registration requests, including a CSV import
//! that checks every line locally with the server's own validation before sending anything,
//! so the report names lines and fields, and nothing is half-imported.

use super::args::RacersCommand;
use super::CliError;
use crate::actors::race::state::validate_entry;
use crate::actors::race::RacerEntry;
use crate::net::protocol::{RacerView, Request};
use std::collections::HashMap;
use std::path::Path;

/// The request a racers subcommand sends.
pub fn request(command: RacersCommand) -> Result<Request, CliError> {
    Ok(match command {
        RacersCommand::Add {
            race,
            bib,
            name,
            team,
            email,
        } => {
            let entry = validate_entry(RacerEntry {
                bib,
                name,
                team,
                email,
            })
            .map_err(CliError::Usage)?;
            Request::RacerRegister {
                race_id: race,
                racers: vec![view(entry)],
            }
        }
        RacersCommand::Import { race, file } => Request::RacerRegister {
            race_id: race,
            racers: read_csv(&file)?,
        },
        RacersCommand::List { race } => Request::RacerList { race_id: race },
    })
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
pub fn read_csv(path: &Path) -> Result<Vec<RacerView>, CliError> {
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    parse_csv(&path.display().to_string(), &bytes)
}

/// Validates a roster CSV already in memory (the pure half of [`read_csv`], also fuzzed);
/// `source` says where it came from in messages.
pub fn parse_csv(source: &str, bytes: &[u8]) -> Result<Vec<RacerView>, CliError> {
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
            "{}: the header row must name at least `bib` and `name` columns (optional: team, email)",
            source
        )));
    };
    let (team_col, email_col) = (column("team"), column("email"));
    let mut racers = Vec::new();
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
    Ok(racers)
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
        let racers = read_csv(&good).unwrap();
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
