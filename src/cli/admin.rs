//! `peloton admin …`, `peloton restore` and `peloton backup verify`: each command validates
//! its flags, talks to the server through [`crate::net::client`] (binary subprotocol) or
//! reads files offline, and prints via [`super::output`].

use super::args::{
    AdminArgs, AdminCommand, BackupCommand, DevicesCommand, RaceCommand, RestoreArgs, TokenCommand,
    TokenIssueArgs,
};
use super::output::{self, ReportFormat};
use super::CliError;
use crate::auth::{claims_for, Keys, Role};
use crate::ids::validate_id;
use crate::net::client::Client;
use crate::net::codec::Codec;
use crate::net::protocol::{RaceCreate, RaceUpdate, Reply, Request};
use crate::persist::backup;
use crate::time::{now_ms, parse_duration, parse_rfc3339};
use std::path::Path;

/// Runs an admin command.
pub async fn run(args: AdminArgs) -> Result<(), CliError> {
    match args.command {
        AdminCommand::Token(TokenCommand::Issue(issue)) => issue_token(issue, args.json),
        AdminCommand::Race(RaceCommand::Results { id, format }) => {
            let request = Request::RaceResults { race_id: id };
            let reply = connected(&args.server, args.token.as_deref(), async |client| {
                Ok(client.request(request).await?)
            })
            .await?;
            let Reply::Results { rows, stats } = reply else {
                return Err(CliError::unexpected(&reply));
            };
            let format = if args.json {
                ReportFormat::Json
            } else {
                format
            };
            output::results(&rows, &stats, format)
        }
        AdminCommand::Race(RaceCommand::Racers(command)) => {
            let plan = super::racers::plan(command)?;
            connected(&args.server, args.token.as_deref(), async |client| {
                register_and_bind(client, plan, args.json).await
            })
            .await
        }
        AdminCommand::Race(RaceCommand::Invite {
            id,
            bib,
            expires,
            send,
        }) => {
            let ttl_secs = parse_duration(&expires)
                .map_err(|e| CliError::Usage(format!("--expires: {e}")))?
                .as_secs();
            let origin = web_origin(&args.server);
            let invitations = connected(&args.server, args.token.as_deref(), async |client| {
                super::invite::run(client, &origin, id, bib, ttl_secs, send).await
            })
            .await?;
            super::invite::print(&invitations, args.json)
        }
        AdminCommand::Race(race) => {
            let request = race_request(race)?;
            let reply = connected(&args.server, args.token.as_deref(), async |client| {
                Ok(client.request(request).await?)
            })
            .await?;
            match reply {
                Reply::Shared {
                    race_id,
                    token,
                    expires_at_ms,
                } => print_share(&args.server, &race_id, &token, expires_at_ms, args.json),
                other => print_reply(other, args.json),
            }
        }
        AdminCommand::Import(import) => {
            connected(&args.server, args.token.as_deref(), async |c| {
                super::patrol::import(c, import, args.json).await
            })
            .await
        }
        AdminCommand::Voucher(command) => super::patrol::voucher(command, args.json),
        AdminCommand::Patrol(command) => {
            connected(&args.server, args.token.as_deref(), async |c| {
                super::patrol::report(c, command, args.json).await
            })
            .await
        }
        AdminCommand::Mail(command) => {
            connected(&args.server, args.token.as_deref(), async |c| {
                super::mail::run(c, command, args.json).await
            })
            .await
        }
        AdminCommand::Backup { out } => {
            let mut client = connect(&args.server, args.token.as_deref()).await?;
            let tmp = out.with_extension("partial");
            let mut file = std::fs::File::create(&tmp)
                .map_err(|e| CliError::Failed(format!("cannot create {}: {e}", tmp.display())))?;
            let info = client.backup(&mut file).await;
            client.close().await;
            let info = info.inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })?;
            file.sync_all()
                .map_err(|e| CliError::Failed(e.to_string()))?;
            drop(file);
            std::fs::rename(&tmp, &out)
                .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", out.display())))?;
            let summary = backup::verify(&out)
                .map_err(|e| CliError::Failed(format!("downloaded backup does not verify: {e}")))?;
            if summary.crc32 != info.crc32 || summary.records != info.records {
                return Err(CliError::Failed(
                    "downloaded backup differs from what the server wrote".into(),
                ));
            }
            if args.json {
                output::json(&summary)
            } else {
                println!(
                    "wrote {} ({} bytes, {} records, crc32 {:08x})",
                    out.display(),
                    summary.bytes,
                    summary.records,
                    summary.crc32
                );
                Ok(())
            }
        }
    }
}

/// Runs `peloton restore`.
pub fn restore(args: RestoreArgs) -> Result<(), CliError> {
    let summary = backup::restore(&args.file, &args.data, args.force)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    if args.json {
        output::json(&summary)
    } else {
        println!(
            "restored {} records from {} into {}",
            summary.records,
            args.file.display(),
            args.data.display()
        );
        Ok(())
    }
}

/// Runs `peloton backup …`: offline checks of backup files with the same verification the
/// server runs after writing and copying one.
pub fn backup(command: BackupCommand) -> Result<(), CliError> {
    match command {
        BackupCommand::Verify { file, json } => {
            let summary = backup::verify(&file)
                .map_err(|e| CliError::Failed(format!("{e} ({})", e.defect.code())))?;
            output::json_or(json, &summary, |s| {
                println!("file     {}", s.path.display());
                println!("verified ok");
                println!("bytes    {}", s.bytes);
                println!("records  {}", s.records);
                println!("schema   {}", s.schema);
                println!("crc32    {:08x}", s.crc32);
            })
        }
    }
}

/// Runs `command` on a fresh connection, then closes it whatever the outcome.
async fn connected<T>(
    server: &str,
    token: Option<&str>,
    command: impl AsyncFnOnce(&mut Client) -> Result<T, CliError>,
) -> Result<T, CliError> {
    let mut client = connect(server, token).await?;
    let outcome = command(&mut client).await;
    client.close().await;
    outcome
}

async fn connect(server: &str, token: Option<&str>) -> Result<Client, CliError> {
    let token = token.ok_or_else(|| {
        CliError::Usage(
            "no token: pass --token or set PELOTON_TOKEN (see `peloton admin token issue`)".into(),
        )
    })?;
    Ok(Client::connect(server, token, Codec::Binary).await?)
}

fn issue_token(args: TokenIssueArgs, json: bool) -> Result<(), CliError> {
    let role = Role::parse(&args.role).map_err(CliError::Usage)?;
    validate_id("--sub", &args.sub).map_err(|r| CliError::Usage(r.message))?;
    if let Some(race) = &args.race {
        validate_id("--race", race).map_err(|r| CliError::Usage(r.message))?;
    }
    let ttl = parse_duration(&args.ttl).map_err(|e| CliError::Usage(format!("--ttl: {e}")))?;
    let config = args.files.config()?;
    if ttl.as_secs() == 0 || ttl.as_secs() > config.auth.max_ttl_secs {
        return Err(CliError::Usage(format!(
            "--ttl must be between 1s and {}s (auth.max_ttl_secs)",
            config.auth.max_ttl_secs
        )));
    }
    let keys = Keys::load_or_create(&config).map_err(|e| CliError::Failed(e.to_string()))?;
    let claims = claims_for(
        role,
        &args.sub,
        args.race.as_deref(),
        now_ms() / 1000,
        ttl.as_secs(),
    );
    let token = keys
        .issue(&claims)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    if json {
        output::json(&serde_json::json!({
            "token": token,
            "role": role.as_str(),
            "sub": claims.sub,
            "race": claims.race,
            "expires_at": crate::time::format_rfc3339(claims.expires_at_ms()),
        }))
    } else {
        println!("{token}");
        Ok(())
    }
}

fn read_gpx(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("cannot read course {}: {e}", path.display())))
}

fn time_flag(flag: &str, value: &str) -> Result<i64, CliError> {
    parse_rfc3339(value).map_err(|e| CliError::Usage(format!("{flag}: {e}")))
}

fn race_request(command: RaceCommand) -> Result<Request, CliError> {
    Ok(match command {
        RaceCommand::Create {
            name,
            course,
            start,
            cutoff,
        } => Request::RaceCreate(RaceCreate {
            name,
            course_gpx: read_gpx(&course)?,
            start_at_ms: time_flag("--start", &start)?,
            cutoff_at_ms: cutoff.map(|c| time_flag("--cutoff", &c)).transpose()?,
        }),
        RaceCommand::Update {
            id,
            name,
            course,
            start,
            cutoff,
            clear_cutoff,
        } => Request::RaceUpdate(RaceUpdate {
            id,
            name,
            course_gpx: course.map(|c| read_gpx(&c)).transpose()?,
            start_at_ms: start.map(|s| time_flag("--start", &s)).transpose()?,
            cutoff_at_ms: cutoff.map(|c| time_flag("--cutoff", &c)).transpose()?,
            clear_cutoff,
        }),
        RaceCommand::List => Request::RaceList,
        RaceCommand::Results { id, .. } => Request::RaceResults { race_id: id },
        RaceCommand::Standings { id } => Request::RaceStandings { race_id: id },
        // More than one request each (a registration then its device bindings; invitations):
        // run by their own branches of `run`, never sent as one request.
        RaceCommand::Racers(_) | RaceCommand::Invite { .. } => {
            return Err(CliError::Failed(
                "this command sends several requests; it has its own branch".into(),
            ))
        }
        RaceCommand::Devices(command) => match command {
            DevicesCommand::Bind {
                race,
                bib,
                device_id,
            } => Request::RaceDeviceBind {
                race_id: race,
                bib,
                device_id,
            },
            DevicesCommand::Revoke { race, bib } => {
                Request::RaceDeviceRevoke { race_id: race, bib }
            }
            DevicesCommand::List { race } => Request::RaceDevices { race_id: race },
        },
        RaceCommand::Show { id } => Request::RaceGet { id },
        RaceCommand::Start { id } => Request::RaceStart { id },
        RaceCommand::Finish { id } => Request::RaceFinish { id },
        RaceCommand::Cancel { id, reason } => Request::RaceCancel { id, reason },
        RaceCommand::Dsq { race, bib, reason } => Request::RaceDisqualify {
            race_id: race,
            bib,
            reason,
        },
        RaceCommand::Reinstate { race, bib } => Request::RaceReinstate { race_id: race, bib },
        RaceCommand::Share { id, expires } => Request::RaceShare {
            race_id: id,
            ttl_secs: parse_duration(&expires)
                .map_err(|e| CliError::Usage(format!("--expires: {e}")))?
                .as_secs(),
        },
    })
}

/// Registers (or lists) racers, then binds the device ids the command asked for, printing
/// the registration and then the bindings made (the ids to give the racers).
async fn register_and_bind(
    client: &mut Client,
    plan: super::racers::RacersPlan,
    json: bool,
) -> Result<(), CliError> {
    let reply = client.request(plan.request).await?;
    if plan.bind.is_empty() {
        return print_reply(reply, json);
    }
    let Reply::Registered { racers } = reply else {
        return Err(CliError::unexpected(&reply));
    };
    let mut devices = Vec::with_capacity(plan.bind.len());
    for (bib, device_id) in plan.bind {
        let reply = client
            .request(Request::RaceDeviceBind {
                race_id: plan.race_id.clone(),
                bib,
                device_id,
            })
            .await?;
        let Reply::Devices { devices: bound, .. } = reply else {
            return Err(CliError::unexpected(&reply));
        };
        devices.extend(bound);
    }
    if json {
        return output::json(&serde_json::json!({ "racers": racers, "devices": devices }));
    }
    println!("registered; the race has {racers} racers");
    output::devices(&devices);
    Ok(())
}

fn print_reply(reply: Reply, json: bool) -> Result<(), CliError> {
    match reply {
        Reply::Race(race) => output::json_or(json, &race, output::race),
        Reply::Racers(racers) => output::json_or(json, racers.as_slice(), output::racers),
        Reply::Devices { devices, .. } => {
            output::json_or(json, devices.as_slice(), output::devices)
        }
        Reply::Registered { racers } if json => {
            output::json(&serde_json::json!({ "racers": racers }))
        }
        Reply::Registered { racers } => {
            println!("registered; the race has {racers} racers");
            Ok(())
        }
        Reply::Standings(rows) => output::json_or(json, rows.as_slice(), output::standings),
        Reply::Races(races) => output::json_or(json, races.as_slice(), output::races),
        other => Err(CliError::unexpected(&other)),
    }
}

/// The share link: the server's own web page for the race, with the token in the fragment so
/// it never reaches server or proxy logs (the page reads it and passes it to the socket).
fn print_share(
    server: &str,
    race_id: &str,
    token: &str,
    expires_at_ms: i64,
    json: bool,
) -> Result<(), CliError> {
    let url = format!("{}/?race={race_id}#token={token}", web_origin(server));
    if json {
        return output::json(&serde_json::json!({
            "race_id": race_id,
            "url": url,
            "token": token,
            "expires_at_ms": expires_at_ms,
        }));
    }
    println!("{url}");
    eprintln!(
        "a read-only link to race {race_id}, valid until {}",
        crate::time::format_rfc3339(expires_at_ms)
    );
    Ok(())
}

/// `ws://host:port/ws` → `http://host:port`: where the server's web page lives.
fn web_origin(server: &str) -> String {
    let (scheme, rest) = match server.split_once("://") {
        Some(("wss", rest)) => ("https", rest),
        Some((_, rest)) => ("http", rest),
        None => ("http", server),
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{authority}")
}
