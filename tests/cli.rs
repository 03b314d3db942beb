//! The admin CLI as a user runs it: offline tokens, race commands against a real server,
//! `--json` output, exit codes, and configuration errors.

mod common;

use common::cli::{admin, create_far_ahead, issue_admin_token, ok, COURSE};
use common::{bin, gpx_path, ChildServer};

#[test]
fn a_new_user_runs_the_race_lifecycle_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    // Tokens are issued offline; the first one creates the secret the server will use.
    let token = issue_admin_token(dir.path());
    assert_eq!(token.matches('.').count(), 2, "a JWT: {token}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("secret.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let server = ChildServer::start(dir.path(), &[]);
    let admin = |args: &[&str]| admin(&server, &token, args);
    let course = gpx_path(COURSE);
    let created = create_far_ahead(&server, &token, "Tour de Test");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["state"], "scheduled");
    assert_eq!(created["start_at_ms"], 4_102_477_200_000i64);

    let listed: serde_json::Value =
        serde_json::from_str(&ok(admin(&["race", "list", "--json"]))).unwrap();
    let races = listed.as_array().unwrap();
    assert_eq!(races.len(), 1);
    assert_eq!(
        (
            races[0]["id"].as_str(),
            races[0]["name"].as_str(),
            races[0]["state"].as_str()
        ),
        (Some(id.as_str()), Some("Tour de Test"), Some("scheduled"))
    );

    let roster = dir.path().join("roster.csv");
    std::fs::write(
        &roster,
        "bib,name,team,email\n7,Ana Novak,Celje,ana@example.si\n8,Bor Kralj,,\n",
    )
    .unwrap();
    let imported: serde_json::Value = serde_json::from_str(&ok(admin(&[
        "race",
        "racers",
        "import",
        &id,
        roster.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    assert_eq!(imported["racers"], 2);
    std::fs::write(&roster, "bib,name\n9,Cene\n9,Dan\nx,Eva\n").unwrap();
    let refused = admin(&["race", "racers", "import", &id, roster.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    let report = String::from_utf8_lossy(&refused.stderr);
    assert!(
        report.contains("line 3") && report.contains("line 4"),
        "{report}"
    );
    ok(admin(&[
        "race", "racers", "add", &id, "--bib", "10", "--name", "Cene",
    ]));
    let racers: serde_json::Value =
        serde_json::from_str(&ok(admin(&["race", "racers", "list", &id, "--json"]))).unwrap();
    let bibs: Vec<u64> = racers
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["bib"].as_u64().unwrap())
        .collect();
    assert_eq!(bibs, vec![7, 8, 10], "the refused file registered nobody");

    let table = ok(admin(&["race", "list"]));
    assert!(
        table.contains("Tour de Test") && table.contains(&id),
        "{table}"
    );
    assert!(ok(admin(&["race", "start", &id])).contains("live"));
    assert!(ok(admin(&["race", "show", &id])).contains("live"));
    assert!(ok(admin(&["race", "finish", &id])).contains("finished"));
    let results: serde_json::Value =
        serde_json::from_str(&ok(admin(&["race", "results", &id, "--format", "json"]))).unwrap();
    let rows = results.as_array().unwrap();
    assert_eq!(rows.len(), 3, "every registered racer has a row");
    for row in rows {
        assert!(
            // DNS rows are listed without a rank, as published results list them.
            row["rank"].is_null() && row["bib"].is_u64() && row["name"].is_string(),
            "{row}"
        );
        assert!(
            row["time_s"].is_null() && row["status"] == "dns",
            "nobody rode: {row}"
        );
    }
    let csv = ok(admin(&["race", "results", &id, "--format", "csv"]));
    assert!(csv.starts_with("rank,bib,name,team,status,time_s"), "{csv}");
    assert!(ok(admin(&["race", "results", &id])).contains("dns"));

    // A share link: the server's page for this race, with a spectator token for it alone.
    let link = ok(admin(&["race", "share", &id, "--expires", "2h"]));
    let prefix = format!("http://{}/?race={id}#token=", server.addr);
    let share = link
        .trim()
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{link}"));
    let claims = common::keys_for(dir.path()).verify(share).unwrap();
    assert_eq!(
        (claims.role, claims.race.as_deref()),
        (peloton::auth::Role::Spectator, Some(id.as_str()))
    );
    assert!((claims.exp - claims.iat - 7200).abs() <= 1, "{claims:?}");
    let too_long = admin(&["race", "share", &id, "--expires", "400d"]);
    assert_eq!(too_long.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&too_long.stderr).contains("invalid_argument"));

    let refused = admin(&["race", "start", &id]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(stderr.lines().count(), 1, "one-line reason: {stderr}");
    assert!(stderr.contains("invalid_transition"), "{stderr}");

    let unknown = admin(&["race", "show", "nope", "--json"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not_found"));

    let bad_time = admin(&[
        "race",
        "create",
        "--name",
        "x",
        "--course",
        course.to_str().unwrap(),
        "--start",
        "tomorrow",
    ]);
    assert_eq!(bad_time.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_time.stderr).contains("--start"));

    let wrong = bin()
        .args([
            "admin",
            "--server",
            &server.url,
            "--token",
            "forged",
            "race",
            "list",
        ])
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("401"));
    server.kill9();
}

#[test]
fn token_issue_validates_its_flags() {
    let dir = tempfile::tempdir().unwrap();
    let issue = |args: &[&str]| {
        bin()
            .args(["admin", "token", "issue", "--data"])
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    assert_eq!(
        issue(&["--role", "king", "--sub", "x"]).status.code(),
        Some(2)
    );
    assert_eq!(
        issue(&["--role", "racer", "--sub", "a/b"]).status.code(),
        Some(2)
    );
    assert_eq!(
        issue(&["--role", "racer", "--sub", "x", "--ttl", "forever"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        issue(&["--role", "racer", "--sub", "x", "--ttl", "400d"])
            .status
            .code(),
        Some(2)
    );
    let json: serde_json::Value = serde_json::from_str(&ok(issue(&[
        "--role", "racer", "--sub", "rider-7", "--race", "r1", "--ttl", "15m", "--json",
    ])))
    .unwrap();
    assert_eq!(
        (json["role"].as_str(), json["race"].as_str()),
        (Some("racer"), Some("r1"))
    );
    assert!(json["token"].as_str().unwrap().len() > 20);
}

#[test]
fn invalid_configuration_names_the_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .env("PELOTON_WS_MAX_FRAME_BYTES", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ws.max_frame_bytes"));

    let file = dir.path().join("bad.toml");
    let serve_with = |contents: &str| {
        std::fs::write(&file, contents).unwrap();
        bin()
            .args(["serve", "--config"])
            .arg(&file)
            .output()
            .unwrap()
    };
    for (contents, key) in [
        ("[persist]\nsnapshot_every = 0\n", "persist.snapshot_every"),
        (
            "[server]\nlisten = \"127.0.0.1:0\"\ncolour = \"red\"\n",
            "server.colour",
        ),
        ("[ws]\nmax_frame_bytes = \"big\"\n", "ws.max_frame_bytes"),
    ] {
        let out = serve_with(contents);
        assert_eq!(out.status.code(), Some(2), "{contents}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(key),
            "{key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let out = bin()
        .args(["serve", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.listen"));
}

#[test]
fn an_organiser_disqualifies_and_reinstates_a_racer_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let token = issue_admin_token(dir.path());
    let server = ChildServer::start(dir.path(), &[]);
    let admin = |args: &[&str]| admin(&server, &token, args);
    let created = create_far_ahead(&server, &token, "Judged");
    let id = created["id"].as_str().unwrap().to_owned();
    ok(admin(&[
        "race", "racers", "add", &id, "--bib", "7", "--name", "Ana",
    ]));
    // Nothing to judge before the start.
    let early = admin(&["race", "dsq", &id, "7", "--reason", "cut"]);
    assert_eq!(early.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&early.stderr).contains("invalid_transition"));
    ok(admin(&["race", "start", &id]));

    let judged: serde_json::Value = serde_json::from_str(&ok(admin(&[
        "race",
        "dsq",
        &id,
        "7",
        "--reason",
        "confirmed cut at the bridge",
        "--json",
    ])))
    .unwrap();
    assert_eq!(
        (judged["id"].as_str(), judged["state"].as_str()),
        (Some(id.as_str()), Some("live"))
    );
    let results: serde_json::Value =
        serde_json::from_str(&ok(admin(&["race", "results", &id, "--json"]))).unwrap();
    let row = &results.as_array().unwrap()[0];
    assert_eq!(row["status"], "dsq", "{row}");
    assert!(ok(admin(&["race", "results", &id])).contains("confirmed cut at the bridge"));

    assert!(ok(admin(&["race", "reinstate", &id, "7"])).contains("live"));
    let results: serde_json::Value =
        serde_json::from_str(&ok(admin(&["race", "results", &id, "--json"]))).unwrap();
    assert_eq!(results.as_array().unwrap()[0]["status"], "dns");

    let unknown = admin(&["race", "dsq", &id, "99", "--reason", "cut"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not_found"));
    let no_reason = admin(&["race", "dsq", &id, "7"]);
    assert_eq!(no_reason.status.code(), Some(2), "--reason is required");
    server.kill9();
}

#[test]
fn an_organiser_binds_lists_and_revokes_tracking_app_ids_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let token = issue_admin_token(dir.path());
    let server = ChildServer::start(dir.path(), &[]);
    let admin = |args: &[&str]| admin(&server, &token, args);
    let created = create_far_ahead(&server, &token, "Phones");
    let id = created["id"].as_str().unwrap().to_owned();
    ok(admin(&[
        "race", "racers", "add", &id, "--bib", "7", "--name", "Ana",
    ]));
    ok(admin(&[
        "race", "racers", "add", &id, "--bib", "8", "--name", "Bor",
    ]));
    let generated: serde_json::Value = serde_json::from_str(&ok(admin(&[
        "race", "devices", "bind", &id, "--bib", "7", "--json",
    ])))
    .unwrap();
    let generated = generated[0]["device_id"].as_str().unwrap().to_owned();
    assert_eq!(generated.len(), 16);
    assert!(ok(admin(&[
        "race",
        "devices",
        "bind",
        &id,
        "--bib",
        "8",
        "--device-id",
        "traccar-218604",
    ]))
    .contains("traccar-218604"));
    let listed = ok(admin(&["race", "devices", "list", &id]));
    assert!(
        listed.contains(&generated) && listed.contains("traccar-218604"),
        "{listed}"
    );
    let short = admin(&[
        "race",
        "devices",
        "bind",
        &id,
        "--bib",
        "8",
        "--device-id",
        "12345",
    ]);
    assert_eq!(short.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 6"));
    ok(admin(&["race", "devices", "revoke", &id, "--bib", "7"]));
    let listed = ok(admin(&["race", "devices", "list", &id]));
    assert!(!listed.contains(&generated), "{listed}");

    // At registration: one racer with the id their app shows, a file with a device_id
    // column (and generated ids for the rows without one).
    let added: serde_json::Value = serde_json::from_str(&ok(admin(&[
        "race",
        "racers",
        "add",
        &id,
        "--bib",
        "9",
        "--name",
        "Cene",
        "--device-id",
        "osmand-cene-9",
        "--json",
    ])))
    .unwrap();
    assert_eq!(added["devices"][0]["device_id"], "osmand-cene-9", "{added}");
    let csv = dir.path().join("roster.csv");
    std::fs::write(
        &csv,
        "bib,name,email,device_id\n11,Dana,dana@example.si,owntracks-dana\n12,Eva,,\n",
    )
    .unwrap();
    let imported: serde_json::Value = serde_json::from_str(&ok(admin(&[
        "race",
        "racers",
        "import",
        &id,
        csv.to_str().unwrap(),
        "--new-device-ids",
        "--json",
    ])))
    .unwrap();
    let devices = imported["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2, "{imported}");
    assert_eq!(devices[0]["device_id"], "owntracks-dana");
    assert_eq!(devices[1]["device_id"].as_str().unwrap().len(), 16);
    // A bad device id in the file: nothing is registered.
    std::fs::write(&csv, "bib,name,device_id\n13,Fran,has space\n").unwrap();
    let refused = admin(&["race", "racers", "import", &id, csv.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("line 2: field device_id"));
    let racers: serde_json::Value =
        serde_json::from_str(&ok(admin(&["race", "racers", "list", &id, "--json"]))).unwrap();
    assert_eq!(racers.as_array().unwrap().len(), 5);

    // Invitations: a personal racer-page link each (a racer token for the race and bib),
    // and the app settings for those with a device id; mailed once however often it runs.
    let invited: serde_json::Value =
        serde_json::from_str(&ok(admin(&["race", "invite", &id, "--send", "--json"]))).unwrap();
    let invited = invited.as_array().unwrap();
    assert_eq!(invited.len(), 5);
    let dana = invited.iter().find(|i| i["bib"] == 11).unwrap();
    let url = dana["ride_url"].as_str().unwrap();
    assert!(url.contains("/ride#token="), "{url}");
    assert!(dana["body"]
        .as_str()
        .unwrap()
        .contains("device ID owntracks-dana"));
    let bor = invited.iter().find(|i| i["bib"] == 8).unwrap();
    assert!(bor["body"].as_str().unwrap().contains("traccar-218604"));
    // The link's token is Dana's: it reads her race as a racer.
    let racer_token = url.split_once("#token=").unwrap().1;
    let shown: serde_json::Value = serde_json::from_str(&ok(common::cli::admin(
        &server,
        racer_token,
        &["race", "show", &id, "--json"],
    )))
    .unwrap();
    assert_eq!(shown["id"], id.as_str());
    let jobs = |state: &str| -> usize {
        let listed: serde_json::Value =
            serde_json::from_str(&ok(admin(&["mail", "list", "--state", state, "--json"])))
                .unwrap();
        listed.as_array().map_or(0, Vec::len)
    };
    let mailed = || {
        ["accepted", "sending", "sent", "retry_waiting", "dead"]
            .map(jobs)
            .iter()
            .sum::<usize>()
    };
    assert_eq!(mailed(), 1, "Dana is the one racer who gave an address");
    ok(admin(&["race", "invite", &id, "--send"]));
    assert_eq!(mailed(), 1, "a second run sends nobody a second mail");
    let unknown = admin(&["race", "invite", &id, "--bib", "99"]);
    assert_eq!(unknown.status.code(), Some(1));
    server.kill9();
}
