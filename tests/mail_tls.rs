//! SMTP over TLS against a real server on loopback: aiosmtpd with a certificate signed by a
//! CA made for the test with the `openssl` command (a private relay's setup), reached with
//! STARTTLS and with implicit TLS, the CA given to Peloton as `mail.smtp_ca_file`. A server
//! whose certificate another CA signed must not get the mail.
//!
//! Needs `openssl` and python3 with aiosmtpd; without them the tests fail, naming what is
//! missing (they are never skipped).

mod common;

use common::mail::{envelope, received_mails, settled, start_sink};
use common::{free_port, TestServer};
use peloton::config::{Config, Overrides};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

/// The TLS SMTP server: aiosmtpd with `tls_context` + `require_starttls` (STARTTLS mode:
/// MAIL before STARTTLS is refused with 530) or wrapped in TLS from the first byte
/// (`ssl_context`, implicit mode). Each mail is written to OUT as `<n>.eml`, with the TLS
/// version the session used in `<n>.tls`. A sixth argument `quiet` keeps refused handshakes
/// out of the test's output.
const TLS_SINK: &str = r#"
import logging, os, ssl, sys, time
from aiosmtpd.controller import Controller

mode, port, out, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
if sys.argv[6:] == ["quiet"]:
    # Refused handshakes are what the test expects: no traceback for each.
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)

class Sink:
    def __init__(self):
        self.count = 0
    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        ssl_object = server.transport.get_extra_info("ssl_object")
        version = ssl_object.version() if ssl_object is not None else "none"
        base = os.path.join(out, f"{time.time_ns()}-{self.count}")
        with open(base + ".tls", "w") as f:
            f.write(version)
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(base + ".eml.tmp", base + ".eml")
        return "250 OK"

if mode == "starttls":
    controller = Controller(Sink(), hostname="127.0.0.1", port=port,
                            tls_context=ctx, require_starttls=True)
else:
    controller = Controller(Sink(), hostname="127.0.0.1", port=port, ssl_context=ctx)
controller.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

/// Runs `openssl` with `args` in `dir`; fails the test (naming the command) if it cannot.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("the `openssl` command is needed to make the test's certificates: {e}")
        });
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`<name>.pem`, `<name>.key`) in `dir`: self-signed, P-256, valid for two days.
fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let (pem, key) = (format!("{name}.pem"), format!("{name}.key"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &format!("/CN=Peloton test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    dir.join(pem)
}

/// A server certificate for 127.0.0.1 signed by CA `ca`: (`<name>.pem`, `<name>.key`).
fn make_server_cert(dir: &Path, ca: &str, name: &str) -> (PathBuf, PathBuf) {
    let (pem, key, csr) = (
        format!("{name}.pem"),
        format!("{name}.key"),
        format!("{name}.csr"),
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
    (dir.join(pem), dir.join(key))
}

/// The certificates of one test: the CA Peloton trusts, a server certificate it signed, and
/// one signed by another CA.
struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
    good: (PathBuf, PathBuf),
    foreign: (PathBuf, PathBuf),
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca(dir.path(), "ca");
    let good = make_server_cert(dir.path(), "ca", "server");
    make_ca(dir.path(), "other-ca");
    let foreign = make_server_cert(dir.path(), "other-ca", "foreign");
    Pki {
        dir,
        ca,
        good,
        foreign,
    }
}

/// A running TLS sink and the folder it writes to.
struct TlsSink {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl TlsSink {
    fn start(mode: &str, pair: &(PathBuf, PathBuf)) -> TlsSink {
        Self::start_with(mode, pair, false)
    }

    /// A sink whose handshakes are expected to fail: aiosmtpd's tracebacks are not shown.
    fn start_quiet(mode: &str, pair: &(PathBuf, PathBuf)) -> TlsSink {
        Self::start_with(mode, pair, true)
    }

    fn start_with(mode: &str, (cert, key): &(PathBuf, PathBuf), quiet: bool) -> TlsSink {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut command = Command::new("python3");
        command
            .args(["-c", TLS_SINK, mode, &port.to_string()])
            .arg(dir.path())
            .args([cert, key])
            .args(quiet.then_some("quiet"));
        let child = start_sink(command, &format!("the {mode} TLS sink"));
        TlsSink { child, dir, port }
    }

    /// (raw message, TLS version) of each mail received, oldest first.
    fn received(&self) -> Vec<(String, String)> {
        received_mails(self.dir.path())
            .iter()
            .map(|p| {
                let raw = std::fs::read_to_string(p).unwrap();
                let tls = std::fs::read_to_string(p.with_extension("tls")).unwrap();
                (raw, tls)
            })
            .collect()
    }
}

impl Drop for TlsSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SMTP over `tls` to `port`, trusting only `ca`; fast retries.
fn tls_config(c: &mut Config, tls: &str, port: u16, ca: &Path) {
    c.mail.smtp_host = "127.0.0.1".into();
    c.mail.smtp_port = port;
    c.mail.smtp_tls = tls.into();
    c.mail.smtp_ca_file = ca.display().to_string();
    c.mail.backoff.base_ms = 20;
    c.mail.backoff.cap_ms = 100;
    c.mail.backoff.max_attempts = 3;
    c.mail.breaker.open_ms = 50;
    c.mail.smtp_connect_timeout_ms = 2_000;
    c.mail.smtp_total_timeout_ms = 4_000;
}

/// Sends two mails over `mode` to a server whose certificate the configured CA signed, and
/// checks both arrived whole, over TLS, once each.
async fn delivered_over(mode: &str) {
    let pki = pki();
    let sink = TlsSink::start(mode, &pki.good);
    let (port, ca) = (sink.port, pki.ca.clone());
    let server = TestServer::start_with(|c| tls_config(c, mode, port, &ca)).await;
    let mail = server.services().mail.clone();
    let jobs = mail.submit(envelope(mode, 1, 2)).await.unwrap();
    let done = settled(&mail, &jobs, Duration::from_secs(30)).await;
    assert!(
        done.iter().all(|j| j.status.name() == "sent"),
        "{:?}",
        mail.failed(10).await
    );
    let received = sink.received();
    assert_eq!(received.len(), 2, "each mail arrives once");
    for job in &jobs {
        let (raw, tls) = received
            .iter()
            .find(|(raw, _)| raw.contains(&format!("<{}@peloton.local>", job.id)))
            .unwrap_or_else(|| panic!("no mail for job {}", job.id));
        assert!(tls.starts_with("TLSv1."), "{mode}: sent over {tls}");
        assert!(raw.contains(&format!("Subject: {}", job.subject)), "{raw}");
        assert!(raw.contains(&format!("Body of mail {} in {mode}/1", job.index)));
    }
    server.stop().await;
    drop(pki.dir);
}

#[tokio::test]
async fn mails_arrive_over_starttls_with_a_private_ca() {
    delivered_over("starttls").await;
}

#[tokio::test]
async fn mails_arrive_over_implicit_tls_with_a_private_ca() {
    delivered_over("tls").await;
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_gets_no_mail() {
    let pki = pki();
    for mode in ["starttls", "tls"] {
        let sink = TlsSink::start_quiet(mode, &pki.foreign);
        let (port, ca) = (sink.port, pki.ca.clone());
        let server = TestServer::start_with(|c| tls_config(c, mode, port, &ca)).await;
        let mail = server.services().mail.clone();
        let jobs = mail.submit(envelope(mode, 1, 1)).await.unwrap();
        let done = settled(&mail, &jobs, Duration::from_secs(30)).await;
        assert_eq!(done[0].status.name(), "dead", "{mode}: {:?}", done[0]);
        assert_eq!(done[0].attempts, 3, "{mode}: every attempt was refused");
        let failures = mail.failed(10).await.unwrap();
        assert_eq!(failures.len(), 3, "{mode}: {failures:?}");
        // Three attempts (a permanent refusal would have stopped at one), each refused for
        // the certificate.
        assert!(
            failures
                .iter()
                .all(|f| f.failure.error.to_lowercase().contains("certificate")),
            "{mode}: {failures:?}"
        );
        assert!(sink.received().is_empty(), "{mode}: nothing delivered");
        server.stop().await;
    }
}

#[tokio::test]
async fn the_ca_file_is_checked_when_the_configuration_loads() {
    let pki = pki();
    let load = |path: &Path| {
        let env = [
            ("PELOTON_MAIL_SMTP_TLS".to_owned(), "starttls".to_owned()),
            (
                "PELOTON_MAIL_SMTP_CA_FILE".to_owned(),
                path.display().to_string(),
            ),
        ];
        Config::load_from(None, &env, &Overrides::default())
    };
    let c = load(&pki.ca).expect("a CA made by openssl is accepted");
    assert_eq!(c.mail.smtp_ca_file, pki.ca.display().to_string());
    // A private key is PEM, but no certificate.
    let err = load(&pki.good.1).unwrap_err().0;
    assert!(err.contains("mail.smtp_ca_file"), "{err}");
    assert!(err.contains("no PEM certificate"), "{err}");
    // A certificate whose bytes are damaged.
    let pem = std::fs::read_to_string(&pki.ca).unwrap();
    let damaged = pki.dir.path().join("damaged.pem");
    let lines: Vec<&str> = pem.lines().collect();
    let body = lines[1..lines.len() - 1].join("\n");
    let cut = &body[..body.len() / 2];
    std::fs::write(
        &damaged,
        format!("-----BEGIN CERTIFICATE-----\n{cut}\n-----END CERTIFICATE-----\n"),
    )
    .unwrap();
    let err = load(&damaged).unwrap_err().0;
    assert!(err.contains("mail.smtp_ca_file"), "{err}");
    let err = load(&pki.dir.path().join("missing.pem")).unwrap_err().0;
    assert!(
        err.contains("mail.smtp_ca_file") && err.contains("cannot be read"),
        "{err}"
    );
}
