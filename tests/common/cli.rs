//! The admin CLI as a user runs it from a shell: offline tokens, and commands against a
//! child server with the token in the environment.

use super::{bin, gpx_path, ChildServer};
use std::path::Path;
use std::process::Output;

/// The recorded ride the CLI's races are created on.
pub const COURSE: &str = "out-and-back-ljubljana.gpx";

/// The stdout of a command that must have succeeded (else its stderr fails the test).
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// An admin token issued offline with `peloton admin token issue`; the first one creates the
/// secret in `data` that a server started there will use.
pub fn issue_admin_token(data: &Path) -> String {
    let token = ok(bin()
        .args([
            "admin", "token", "issue", "--role", "admin", "--sub", "ops", "--data",
        ])
        .arg(data)
        .output()
        .unwrap());
    token.trim().to_owned()
}

/// `peloton admin <args>` against `server` with `token` in the environment.
pub fn admin(server: &ChildServer, token: &str, args: &[&str]) -> Output {
    let mut command = bin();
    command
        .arg("admin")
        .args(args)
        .env("PELOTON_SERVER", &server.url)
        .env("PELOTON_TOKEN", token);
    command.output().unwrap()
}

/// `admin race create --json` of a race named `name` on [`COURSE`], starting in 2100 so the
/// clock does not start it by itself: the created race as JSON.
pub fn create_far_ahead(server: &ChildServer, token: &str, name: &str) -> serde_json::Value {
    let course = gpx_path(COURSE);
    serde_json::from_str(&ok(admin(
        server,
        token,
        &[
            "race",
            "create",
            "--name",
            name,
            "--course",
            course.to_str().unwrap(),
            "--start",
            "2100-01-01T09:00:00Z",
            "--json",
        ],
    )))
    .unwrap()
}
