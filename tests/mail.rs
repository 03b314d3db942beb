//! Mail jobs against real servers on loopback: an aiosmtpd SMTP server and a Python HTTP
//! mail API (tests/support/*.py), started by the tests on free ports, with injected faults
//! (refused connections, 4xx/5xx answers, stalls past the timeout) and kill -9.

mod common;

use common::mail::{envelope, settled, start_sink};
use common::{free_port, TestServer};
use peloton::actors::mail::job::JobSummary;
use peloton::actors::mail::MailDomain;
use peloton::config::Config;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

/// A Python sink server (SMTP or HTTP) writing what it receives into a folder.
struct Sink {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Sink {
    fn start(script: &str, port: u16) -> Sink {
        let dir = tempfile::tempdir().unwrap();
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/support")
            .join(script);
        let mut command = Command::new("python3");
        command.arg(path).arg(port.to_string()).arg(dir.path());
        let child = start_sink(command, script);
        Sink { child, dir, port }
    }

    fn smtp() -> Sink {
        Sink::start("smtp_sink.py", free_port())
    }

    fn http() -> Sink {
        Sink::start("http_sink.py", free_port())
    }

    fn set_mode(&self, mode: &str) {
        std::fs::write(self.dir.path().join("mode"), mode).unwrap();
    }

    /// Every message received so far, as text.
    fn received(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("eml" | "json")))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of header `name` in a raw message.
fn header(raw: &str, name: &str) -> Option<String> {
    raw.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// Fast retries for tests: 20 ms base, 200 ms cap.
fn fast(config: &mut Config, smtp_port: u16) {
    config.mail.smtp_port = smtp_port;
    config.mail.backoff.base_ms = 20;
    config.mail.backoff.cap_ms = 200;
    config.mail.backoff.max_attempts = 20;
    config.mail.breaker.open_ms = 100;
    config.mail.smtp_connect_timeout_ms = 500;
    config.mail.smtp_total_timeout_ms = 1_000;
    config.mail.http_connect_timeout_ms = 500;
    config.mail.http_total_timeout_ms = 1_000;
}

fn mail_of(server: &TestServer) -> MailDomain {
    server.services().mail.clone()
}

/// Message-IDs received, with how often each arrived.
fn message_ids(sink: &Sink) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for raw in sink.received() {
        let id = header(&raw, "Message-ID").expect("every mail has a Message-ID");
        *seen.entry(id).or_insert(0) += 1;
    }
    seen
}

#[tokio::test]
async fn smtp_mails_arrive_with_their_headers_and_body() {
    let sink = Sink::smtp();
    let port = sink.port;
    let server = TestServer::start_with(|c| fast(c, port)).await;
    let mail = mail_of(&server);
    let jobs = mail.submit(envelope("welcome", 1, 3)).await.unwrap();
    assert_eq!(jobs.len(), 3);
    let done = settled(&mail, &jobs, Duration::from_secs(20)).await;
    assert!(done.iter().all(|j| j.status.name() == "sent"));
    let received = sink.received();
    assert_eq!(received.len(), 3);
    for job in &jobs {
        let raw = received
            .iter()
            .find(|r| header(r, "To").is_some_and(|t| t.contains(&job.to)))
            .unwrap_or_else(|| panic!("no mail to {}", job.to));
        assert_eq!(
            header(raw, "Message-ID").unwrap(),
            format!("<{}@peloton.local>", job.id)
        );
        assert_eq!(header(raw, "Subject").unwrap(), job.subject);
        assert!(header(raw, "From")
            .unwrap()
            .contains("noreply@peloton.local"));
        assert!(
            raw.contains(&format!("Body of mail {} in welcome/1", job.index)),
            "{raw}"
        );
    }
    // The same envelope again gets the first outcome and sends nothing new.
    let again = mail.submit(envelope("welcome", 1, 3)).await.unwrap();
    assert_eq!(
        again.iter().map(|j| &j.id).collect::<Vec<_>>(),
        jobs.iter().map(|j| &j.id).collect::<Vec<_>>()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        sink.received().len(),
        3,
        "a duplicate envelope sends nothing"
    );
    server.stop().await;
}

#[tokio::test]
async fn http_mails_carry_the_idempotency_key_and_message_id() {
    let sink = Sink::http();
    let port = sink.port;
    let server = TestServer::start_with(|c| {
        fast(c, free_port());
        c.mail.transport = "http".into();
        c.mail.http_url = format!("http://127.0.0.1:{port}/v1/send");
    })
    .await;
    let mail = mail_of(&server);
    let jobs = mail.submit(envelope("api", 7, 2)).await.unwrap();
    let done = settled(&mail, &jobs, Duration::from_secs(20)).await;
    assert!(done.iter().all(|j| j.status.name() == "sent"));
    let received: Vec<serde_json::Value> = sink
        .received()
        .iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect();
    assert_eq!(received.len(), 2);
    for job in &jobs {
        let r = received
            .iter()
            .find(|r| r["body"]["to"] == job.to.as_str())
            .unwrap();
        assert_eq!(r["idempotency_key"], job.id.as_str());
        assert_eq!(r["path"], "/v1/send");
        assert_eq!(r["content_type"], "application/json");
        assert_eq!(
            r["body"]["message_id"],
            format!("<{}@peloton.local>", job.id)
        );
        assert_eq!(r["body"]["subject"], job.subject.as_str());
        assert!(r["body"]["text"].as_str().unwrap().contains("Body of mail"));
    }
    server.stop().await;
}

#[tokio::test]
async fn transient_faults_end_sent_exactly_once_and_permanent_ones_dead() {
    let sink = Sink::smtp();
    let port = sink.port;
    let server = TestServer::start_with(|c| {
        fast(c, port);
        c.mail.smtp_total_timeout_ms = 300;
        c.mail.smtp_connect_timeout_ms = 300;
    })
    .await;
    let mail = mail_of(&server);
    // 4xx answers, then a stall past the total timeout, then the server recovers.
    sink.set_mode("451");
    let jobs = mail.submit(envelope("faults", 1, 20)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    sink.set_mode("stall");
    tokio::time::sleep(Duration::from_millis(800)).await;
    sink.set_mode("ok");
    let done = settled(&mail, &jobs, Duration::from_secs(60)).await;
    assert!(done.iter().all(|j| j.status.name() == "sent"), "{done:?}");
    assert!(done.iter().any(|j| j.failures > 0), "faults were met");
    let ids = message_ids(&sink);
    assert_eq!(ids.len(), 20, "every job arrived");
    assert!(ids.values().all(|n| *n == 1), "exactly once: {ids:?}");
    let log = mail.failed(10_000).await.unwrap();
    assert!(
        log.iter().any(|f| f.failure.error.contains("451")),
        "{log:?}"
    );
    assert!(
        log.iter().any(|f| f.failure.error.contains("timeout")),
        "{log:?}"
    );

    // A permanent refusal goes to the dead letters at once.
    sink.set_mode("550");
    let refused = mail.submit(envelope("faults", 2, 3)).await.unwrap();
    let done = settled(&mail, &refused, Duration::from_secs(20)).await;
    assert!(
        done.iter()
            .all(|j| j.status.name() == "dead" && j.attempts == 1),
        "{done:?}"
    );
    assert_eq!(mail.list(Some("dead"), 100).unwrap().len(), 3);
    // Re-driven after the fault is fixed, they are sent.
    sink.set_mode("ok");
    assert_eq!(mail.retry_all_dead().await.unwrap().len(), 3);
    let done = settled(&mail, &refused, Duration::from_secs(20)).await;
    assert!(done.iter().all(|j| j.status.name() == "sent"), "{done:?}");
    assert_eq!(message_ids(&sink).len(), 23);
    server.stop().await;
}

#[tokio::test]
async fn refused_connections_dead_letter_after_max_attempts_and_are_logged() {
    let port = free_port();
    let server = TestServer::start_with(|c| {
        fast(c, port);
        c.mail.backoff.max_attempts = 3;
        c.mail.breaker.consecutive_failures = 1_000;
        c.mail.breaker.min_calls = 1_000;
    })
    .await;
    let mail = mail_of(&server);
    let jobs = mail.submit(envelope("refused", 1, 4)).await.unwrap();
    let done = settled(&mail, &jobs, Duration::from_secs(20)).await;
    assert!(
        done.iter()
            .all(|j| j.status.name() == "dead" && j.attempts == 3),
        "{done:?}"
    );
    let log = mail.failed(100).await.unwrap();
    assert_eq!(log.len(), 12, "every failed attempt is logged");
    let detail = mail.status(&jobs[0].id).await.unwrap();
    assert_eq!(detail.failures.len(), 3);
    assert!(detail.failures.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    // The server comes up on that port; a re-drive delivers each job once.
    let sink = Sink::start("smtp_sink.py", port);
    mail.retry_all_dead().await.unwrap();
    let done = settled(&mail, &jobs, Duration::from_secs(20)).await;
    assert!(done.iter().all(|j| j.status.name() == "sent"), "{done:?}");
    assert_eq!(message_ids(&sink).len(), 4);
    server.stop().await;
}

/// Environment for a child server sending to `smtp_port` with fast retries.
fn child_env(smtp_port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("PELOTON_MAIL_SMTP_PORT", smtp_port.to_string()),
        ("PELOTON_MAIL_BACKOFF_BASE_MS", "20".into()),
        ("PELOTON_MAIL_BACKOFF_CAP_MS", "200".into()),
        ("PELOTON_MAIL_MAX_ATTEMPTS", "50".into()),
        ("PELOTON_MAIL_BREAKER_OPEN_MS", "100".into()),
    ]
}

fn start_child(data: &Path, env: &[(&'static str, String)]) -> common::ChildServer {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    common::ChildServer::start(data, &env)
}

fn wire_envelope(n: u64, per: usize) -> peloton::net::protocol::MailEnvelope {
    peloton::net::protocol::MailEnvelope {
        correlation_id: "burst".into(),
        sequence: n,
        sent_at_ms: 1_000 + n as i64,
        messages: (0..per)
            .map(|i| peloton::net::protocol::MailMessageView {
                to: format!("r{n}x{i}@example.org"),
                subject: format!("Job {n}-{i}"),
                body: format!("burst {n} {i}\n"),
                contact: None,
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_a_burst_of_1000_jobs_loses_none_and_never_changes_a_message_id() {
    use peloton::auth::Role;
    use peloton::net::client::Client;
    use peloton::net::codec::Codec;
    use peloton::net::protocol::{Reply, Request};
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    const ENVELOPES: u64 = 100;
    const PER: usize = 10;
    let sink = Sink::smtp();
    let data = tempfile::tempdir().unwrap();
    let env = child_env(sink.port);
    let server = start_child(data.path(), &env);
    let token = common::token(
        &common::keys_for(data.path()),
        Role::Admin,
        "ops",
        None,
        3600,
    );

    // Submit envelopes from two clients; kill -9 once a third of them are acknowledged.
    let acked = Arc::new(Mutex::new(HashSet::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let mut submitters = Vec::new();
    for half in 0..2u64 {
        let (url, token, acked, count) = (
            server.url.clone(),
            token.clone(),
            acked.clone(),
            count.clone(),
        );
        submitters.push(tokio::spawn(async move {
            let mut client = Client::connect(&url, &token, Codec::Binary).await.unwrap();
            for n in (0..ENVELOPES).filter(|n| n % 2 == half) {
                match client
                    .request(Request::MailSubmit(wire_envelope(n, PER)))
                    .await
                {
                    Ok(Reply::MailJobs(jobs)) => {
                        let mut a = acked.lock().unwrap();
                        a.extend(jobs.into_iter().map(|j| j.id));
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => return,
                }
            }
        }));
    }
    while count.load(Ordering::SeqCst) < (ENVELOPES / 3) as usize {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.kill9();
    for s in submitters {
        let _ = s.await;
    }
    let acked_before = acked.lock().unwrap().clone();
    assert!(acked_before.len() >= (ENVELOPES / 3) as usize * PER);

    // Restart; the submitter sends everything again (duplicates get the first outcome).
    let server = start_child(data.path(), &env);
    let mut client = Client::connect(&server.url, &token, Codec::Binary)
        .await
        .unwrap();
    let mut all = HashSet::new();
    for n in 0..ENVELOPES {
        let Ok(Reply::MailJobs(jobs)) = client
            .request(Request::MailSubmit(wire_envelope(n, PER)))
            .await
        else {
            panic!("resubmission {n} failed");
        };
        all.extend(jobs.into_iter().map(|j| j.id));
    }
    assert_eq!(all.len(), ENVELOPES as usize * PER);
    assert!(
        acked_before.is_subset(&all),
        "every acknowledged job survived kill -9"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let Ok(Reply::MailJobs(sent)) = client
            .request(Request::MailList {
                state: Some("sent".into()),
                limit: 10_000,
            })
            .await
        else {
            panic!("list failed");
        };
        if sent.len() == all.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {} sent",
            sent.len(),
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every job arrived; a resend after the crash (if any) carried the same Message-ID.
    let mut by_subject: HashMap<String, HashSet<String>> = HashMap::new();
    for raw in sink.received() {
        by_subject
            .entry(header(&raw, "Subject").unwrap())
            .or_default()
            .insert(header(&raw, "Message-ID").unwrap());
    }
    if by_subject.len() != all.len() {
        let Ok(Reply::MailJobs(jobs)) = client
            .request(Request::MailList {
                state: None,
                limit: 10_000,
            })
            .await
        else {
            panic!("list failed");
        };
        let missing: Vec<_> = jobs
            .iter()
            .filter(|j| !by_subject.contains_key(&j.subject))
            .collect();
        panic!(
            "{} of {} arrived; missing: {missing:#?}",
            by_subject.len(),
            all.len()
        );
    }
    for (subject, ids) in &by_subject {
        assert_eq!(
            ids.len(),
            1,
            "{subject} arrived with different Message-IDs: {ids:?}"
        );
    }
    let ids: HashSet<String> = by_subject.into_values().flatten().collect();
    let expected: HashSet<String> = all
        .iter()
        .map(|id| format!("<{id}@peloton.local>"))
        .collect();
    assert_eq!(ids, expected);
    client.close().await;
    server.kill9();
}

#[tokio::test]
async fn the_admin_cli_sends_shows_lists_and_redrives_mail() {
    let port = free_port();
    let data = tempfile::tempdir().unwrap();
    let mut env = child_env(port);
    env.push(("PELOTON_MAIL_MAX_ATTEMPTS", "2".into()));
    let server = start_child(data.path(), &env);
    let token = common::token(
        &common::keys_for(data.path()),
        peloton::auth::Role::Admin,
        "ops",
        None,
        3600,
    );
    let admin = |args: &[&str]| {
        let out = common::bin()
            .arg("admin")
            .args(args)
            .env("PELOTON_SERVER", &server.url)
            .env("PELOTON_TOKEN", &token)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let json = |args: &[&str]| -> serde_json::Value {
        let mut with = args.to_vec();
        with.insert(0, "--json");
        serde_json::from_str(&admin(&with)).unwrap()
    };
    // No SMTP server yet: the job fails twice and is dead.
    let sent = json(&[
        "mail",
        "send",
        "--to",
        "ana@example.org",
        "--subject",
        "Hi",
        "--body",
        "Hello Ana",
    ]);
    let id = sent[0]["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while json(&["mail", "dead"]).as_array().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "never dead");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = json(&["mail", "status", &id]);
    assert_eq!(status["job"]["state"], "dead");
    assert_eq!(status["message_id"], format!("<{id}@peloton.local>"));
    assert_eq!(status["failures"].as_array().unwrap().len(), 2);
    assert_eq!(json(&["mail", "failed"]).as_array().unwrap().len(), 2);
    assert!(
        admin(&["mail", "list", "--state", "dead"]).contains(&id),
        "table lists it"
    );
    // The server appears; retry --all-dead delivers it.
    let sink = Sink::start("smtp_sink.py", port);
    assert_eq!(
        json(&["mail", "retry", "--all-dead"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    while json(&["mail", "list", "--state", "sent"])
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "never sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sink.received().len(), 1);
    // Bad input is refused with a typed error.
    let out = common::bin()
        .args(["admin", "mail", "status", "nope"])
        .env("PELOTON_SERVER", &server.url)
        .env("PELOTON_TOKEN", &token)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("24 hex digits"));
    server.kill9();
}

/// Backoff and breaker timing on tokio's paused clock (paused once the job is accepted): with the jitter fixed at 100 % the
/// waits are exactly 1 s, 2 s, then the open breaker (30 s) holds the last attempt back
/// even though its backoff (4 s) has passed.
#[tokio::test]
async fn backoff_and_breaker_timing_on_a_paused_clock() {
    use peloton::actors::mail::backoff::JitterSource;
    use peloton::actors::mail::job::{JobEvent, MailJobState};
    use peloton::actors::root::{RootArgs, RootSupervisor};
    use peloton::net::mail::{transports, TransportSettings};
    use peloton::persist::{ActorKey, JournalWriter, Store};
    use ractor::Actor;

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (journal, _writer) = JournalWriter::start(store.clone(), 64).unwrap();
    let (root, _) = RootSupervisor::spawn(
        None,
        RootSupervisor,
        RootArgs {
            restart_budget: 3,
            restart_window: Duration::from_secs(60),
        },
    )
    .await
    .unwrap();
    let mut config = Config::defaults().unwrap();
    config.mail.transport = "http".into();
    config.mail.http_url = format!("http://127.0.0.1:{}/send", free_port());
    config.mail.backoff.base_ms = 1_000;
    config.mail.backoff.factor = 2.0;
    config.mail.backoff.max_attempts = 4;
    config.mail.breaker.consecutive_failures = 3;
    config.mail.breaker.open_ms = 30_000;
    let mut settings = peloton::actors::mail::MailSettings::from_config(&config);
    settings.jitter = JitterSource::Fixed(1.0);
    let transports = transports(&TransportSettings::from_config(&config)).unwrap();
    let mail = MailDomain::start(&root, journal.clone(), settings, transports)
        .await
        .unwrap();
    let job = mail
        .submit(envelope("paused", 1, 1))
        .await
        .unwrap()
        .remove(0);
    // Paused only now: a paused clock jumps to the next timer whenever the runtime waits,
    // and the submit call's timeout would be that timer while the journal flushes.
    tokio::time::pause();
    let real = std::time::Instant::now();
    // Time moves only by `advance`, in 20 ms steps, each after a real millisecond in a
    // blocking task (which stops tokio from auto-advancing meanwhile), so journal flushes
    // take (almost) no paused time.
    let mut steps = 0;
    while mail.summary(&job.id).unwrap().status.name() != "dead" {
        tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(1)))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_millis(20)).await;
        steps += 1;
        assert!(steps < 5_000, "not dead after 100 s of paused time");
    }
    let events = journal
        .load::<MailJobState, JobEvent>(&ActorKey::new("mail", job.id.as_str()))
        .unwrap()
        .events;
    let started: Vec<i64> = events
        .iter()
        .filter_map(|(_, e)| match e {
            JobEvent::AttemptStarted { at_ms, .. } => Some(*at_ms),
            _ => None,
        })
        .collect();
    let failed: Vec<(i64, Option<i64>)> = events
        .iter()
        .filter_map(|(_, e)| match e {
            JobEvent::AttemptFailed {
                failure,
                next_at_ms,
            } => Some((failure.at_ms, *next_at_ms)),
            _ => None,
        })
        .collect();
    assert_eq!((started.len(), failed.len()), (4, 4), "{events:?}");
    // Each wait is the full-jitter ceiling (jitter fixed at 1.0): 1 s, 2 s, 4 s; then dead.
    let waits: Vec<Option<i64>> = failed
        .iter()
        .map(|(at, next)| next.map(|n| n - at))
        .collect();
    assert_eq!(waits, vec![Some(1_000), Some(2_000), Some(4_000), None]);
    // Attempts 2 and 3 start when their backoff ends (never before; a step or two after)...
    for k in 0..2 {
        let due = failed[k].1.unwrap();
        assert!(
            (due..due + 500).contains(&started[k + 1]),
            "attempt {} at {} for due {due}",
            k + 2,
            started[k + 1]
        );
    }
    // ...but the third failure opened the breaker, so attempt 4 waits for its probe (30 s),
    // not for its backoff (4 s).
    let opened = failed[2].0;
    assert!(
        (opened + 30_000..opened + 30_500).contains(&started[3]),
        "probe at +{} ms",
        started[3] - opened
    );
    assert_eq!(
        mail.breakers()[0].1.as_str(),
        "open",
        "the failed probe opened it again"
    );
    assert_eq!(mail.live_actors(), 0, "a dead job holds no actor");
    assert!(
        real.elapsed() < Duration::from_secs(20),
        "37 s of retries ran on the paused clock, not the wall clock"
    );
    root.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn a_finished_race_mails_each_racer_their_result_once() {
    use peloton::auth::Role;
    use peloton::net::codec::Codec;
    use peloton::net::protocol::{Reply, Request};
    let sink = Sink::smtp();
    let port = sink.port;
    let server = TestServer::start_with(|c| fast(c, port)).await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    let start = peloton::time::now_ms() - 60_000;
    let race = common::live_race(&mut admin, "out-and-back-ljubljana.gpx", start, 3).await;
    let Ok(Reply::Race(_)) = admin
        .request(Request::RaceFinish { id: race.clone() })
        .await
    else {
        panic!("finish failed");
    };
    let mail = mail_of(&server);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while mail.list(Some("sent"), 100).unwrap().len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "results mails not sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = sink.received();
    assert_eq!(received.len(), 3);
    for bib in 1..=3 {
        let raw = received
            .iter()
            .find(|r| header(r, "To").is_some_and(|t| t.contains(&format!("r{bib}@example.si"))))
            .unwrap_or_else(|| panic!("no results mail for bib {bib}"));
        assert!(header(raw, "Subject")
            .unwrap()
            .starts_with("Your result: Race on"));
        assert!(raw.contains(&format!("Hello Racer {bib}")), "{raw}");
        // Nobody rode: each is told so in words a person would write, not "dns after 0.0 km"
        // (long lines travel quoted-printable, with soft line breaks).
        let text = raw.replace("=\r\n", "").replace("=\n", "");
        assert!(
            text.contains("We received no position from your phone")
                && text.contains("listed as did not start (DNS)")
                && text.contains("reply to this mail"),
            "{raw}"
        );
        assert!(!text.contains("0.0 km"), "{raw}");
    }
    // Handling the event again (a retried trigger) makes no new jobs and sends nothing new.
    let races = server.services().races.clone();
    let race_id = peloton::ids::RaceId::parse(&race).unwrap();
    peloton::actors::mail::trigger::results_mails(&mail, &races, &race_id, 0)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(mail.len(), 3);
    assert_eq!(sink.received().len(), 3);
    server.stop().await;
}

#[tokio::test]
async fn stale_contact_updates_are_ignored_and_mail_is_admin_only_with_metrics() {
    use peloton::auth::Role;
    use peloton::error::ErrorCode;
    use peloton::net::client::ClientError;
    use peloton::net::codec::Codec;
    use peloton::net::protocol::{MailEnvelope, MailMessageView, Reply, Request};
    let sink = Sink::smtp();
    let port = sink.port;
    let server = TestServer::start_with(|c| fast(c, port)).await;
    let mut admin = server.client(Role::Admin, Codec::Json).await;
    let envelope = |sequence: u64, sent_at_ms: i64, to: &str| {
        Request::MailSubmit(MailEnvelope {
            correlation_id: "contacts".into(),
            sequence,
            sent_at_ms,
            messages: vec![MailMessageView {
                to: to.into(),
                subject: format!("Update {sequence}"),
                body: "Your voucher: ABC-123\n".into(),
                contact: Some("citizen-7".into()),
            }],
        })
    };
    // The newer update arrives first; the older one arrives late and is stale.
    let Ok(Reply::MailJobs(newer)) = admin.request(envelope(2, 2_000, "new@example.org")).await
    else {
        panic!("submit failed");
    };
    let Ok(Reply::MailJobs(older)) = admin.request(envelope(1, 1_000, "old@example.org")).await
    else {
        panic!("submit failed");
    };
    assert_eq!(newer[0].to, "new@example.org");
    assert_eq!(
        older[0].to, "new@example.org",
        "the stale address is not used"
    );
    // Invalid input is refused with a typed error naming the field.
    match admin.request(envelope(3, 3_000, "not-an-address")).await {
        Err(ClientError::Server(r)) => {
            assert_eq!(r.code, ErrorCode::InvalidArgument);
            assert!(r.message.contains("message 0: to"), "{}", r.message);
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    // Other roles may not touch mail.
    let mut spectator = server.client(Role::Spectator, Codec::Binary).await;
    match spectator
        .request(Request::MailList {
            state: None,
            limit: 10,
        })
        .await
    {
        Err(ClientError::Server(r)) => assert_eq!(r.code, ErrorCode::Forbidden),
        other => panic!("expected forbidden, got {other:?}"),
    }
    let mail = mail_of(&server);
    let ids: Vec<JobSummary> = newer
        .iter()
        .chain(&older)
        .map(|j| {
            mail.summary(&peloton::actors::mail::message::JobId::parse(&j.id).unwrap())
                .unwrap()
        })
        .collect();
    settled(&mail, &ids, Duration::from_secs(20)).await;
    let (status, metrics) = common::http_get(server.addr, "/metrics HTTP/1.1").await;
    assert_eq!(status, 200);
    for name in [
        "peloton_mail_jobs",
        "peloton_mail_attempts_total",
        "peloton_mail_send_seconds",
        "peloton_mail_breaker_state",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    server.stop().await;
}

#[tokio::test]
async fn waiting_jobs_and_their_failed_log_survive_a_restart_and_resume() {
    use peloton::auth::Role;
    use peloton::net::client::Client;
    use peloton::net::codec::Codec;
    use peloton::net::protocol::{Reply, Request};
    let port = free_port();
    let data = tempfile::tempdir().unwrap();
    let env = child_env(port);
    let server = start_child(data.path(), &env);
    let token = common::token(
        &common::keys_for(data.path()),
        Role::Admin,
        "ops",
        None,
        3600,
    );
    let mut client = Client::connect(&server.url, &token, Codec::Binary)
        .await
        .unwrap();
    let Ok(Reply::MailJobs(jobs)) = client
        .request(Request::MailSubmit(wire_envelope(1, 5)))
        .await
    else {
        panic!("submit failed");
    };
    // Nothing listens on the SMTP port: the jobs fail and wait for their retry.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let Ok(Reply::MailFailures(log)) = client.request(Request::MailFailed { limit: 100 }).await
        else {
            panic!("failed log");
        };
        if log.len() >= 10 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no failures logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.close().await;
    server.kill9();
    // The SMTP server comes up while Peloton is down; after the restart the waiting jobs
    // resume on their own (no re-drive, no resubmission) and the failed log is still there.
    let sink = Sink::start("smtp_sink.py", port);
    let server = start_child(data.path(), &env);
    let mut client = Client::connect(&server.url, &token, Codec::Binary)
        .await
        .unwrap();
    let Ok(Reply::MailFailures(log)) = client.request(Request::MailFailed { limit: 1_000 }).await
    else {
        panic!("failed log");
    };
    assert!(log.len() >= 10, "failed attempts survive the restart");
    assert!(log.iter().all(|f| f.error.contains("refused")), "{log:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let Ok(Reply::MailJobs(sent)) = client
            .request(Request::MailList {
                state: Some("sent".into()),
                limit: 100,
            })
            .await
        else {
            panic!("list failed");
        };
        if sent.len() == jobs.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waiting jobs did not resume"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ids = message_ids(&sink);
    assert_eq!(ids.len(), jobs.len());
    client.close().await;
    server.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_race_that_finished_while_the_server_was_down_gets_its_results_mailed_once() {
    use peloton::auth::Role;
    use peloton::net::client::Client;
    use peloton::net::codec::Codec;
    use peloton::net::protocol::{RaceCreate, RacerView, Reply, Request};
    let sink = Sink::smtp();
    let data = tempfile::tempdir().unwrap();
    let env = child_env(sink.port);
    let server = start_child(data.path(), &env);
    let token = common::token(
        &common::keys_for(data.path()),
        Role::Admin,
        "ops",
        None,
        600,
    );
    let mut admin = Client::connect(&server.url, &token, Codec::Binary)
        .await
        .unwrap();
    // A live race whose cut-off passes while the server is down: it finishes during the
    // next start-up's recovery, when the mail trigger may not be listening yet.
    let now = peloton::time::now_ms();
    let Ok(Reply::Race(race)) = admin
        .request(Request::RaceCreate(RaceCreate {
            name: "Night ride".into(),
            course_gpx: common::gpx("out-and-back-ljubljana.gpx"),
            start_at_ms: now - 60_000,
            cutoff_at_ms: Some(now + 2_000),
        }))
        .await
    else {
        panic!("create")
    };
    let racers = (1..=3)
        .map(|bib| RacerView {
            bib,
            name: format!("Racer {bib}"),
            team: None,
            email: Some(format!("r{bib}@example.si")),
        })
        .collect();
    admin
        .request(Request::RacerRegister {
            race_id: race.id.clone(),
            racers,
        })
        .await
        .unwrap();
    // Its start has passed, so the clock may have started it already: live either way.
    let _ = admin
        .request(Request::RaceStart {
            id: race.id.clone(),
        })
        .await;
    server.kill9();
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    let server = start_child(data.path(), &env);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sink.received().len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "results mails never sent after the restart: {} received",
            sink.received().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Another restart catches up again: the same jobs, nothing sent twice.
    assert_eq!(server.terminate(), Some(0));
    let server = start_child(data.path(), &env);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let received = sink.received();
    assert_eq!(received.len(), 3, "one results mail per racer");
    for bib in 1..=3 {
        assert_eq!(
            received
                .iter()
                .filter(|r| header(r, "To").is_some_and(|t| t.contains(&format!("r{bib}@"))))
                .count(),
            1
        );
    }
    server.kill9();
}

/// Patrol's mails go through mission control to a real SMTP server: a thank-you to each side
/// of a connection with an address, and the voucher code to whoever redeemed.
#[tokio::test]
async fn patrol_connections_and_vouchers_send_mails() {
    use common::patrol::{answer, ask, at, import_basics, officer_row};
    use peloton::auth::Role;
    use peloton::geo::Position;
    use peloton::net::client::Client;
    use peloton::net::codec::Codec;
    use peloton::net::protocol::{Reply, Request};

    let sink = Sink::smtp();
    let server = TestServer::start_with(|c| fast(c, sink.port)).await;
    let mut admin = server.client(Role::Admin, Codec::Binary).await;
    import_basics(
        &mut admin,
        vec![officer_row("o1", "north", Some("ana@police.example.org"))],
    )
    .await;
    let connect = |role, sub: &str| {
        let token = server.token(role, sub);
        let url = server.url.clone();
        async move { Client::connect(&url, &token, Codec::Binary).await.unwrap() }
    };
    let mut officer = connect(Role::Officer, "o1").await;
    let mut citizen = connect(Role::Citizen, "c1").await;
    citizen
        .request(Request::PatrolProfile {
            display_name: "Bo".into(),
            email: Some("bo@example.org".into()),
        })
        .await
        .unwrap();
    officer
        .request(Request::DutyStart { minutes: None })
        .await
        .unwrap();
    let here = Position::from_degrees(46.2309, 15.2604).unwrap();
    at(&mut officer, here).await;
    at(&mut citizen, here).await;
    let request_id = ask(&mut citizen, "o1").await;
    answer(&mut officer, &request_id, true).await.unwrap();
    let Reply::Redeemed { voucher_code, .. } = citizen
        .request(Request::RewardsRedeem {
            request_id: "r1".into(),
            offer_id: "coffee".into(),
        })
        .await
        .unwrap()
    else {
        panic!("redeemed")
    };

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sink.received().len() < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mails = sink.received();
    assert_eq!(mails.len(), 3, "two thank-yous and a voucher: {mails:#?}");
    let to = |raw: &String| header(raw, "To").unwrap_or_default();
    let thanks_bo = mails
        .iter()
        .find(|m| to(m).contains("bo@example.org") && m.contains("Thank you"))
        .expect("a thank-you to the citizen");
    assert!(thanks_bo.contains("Officer o1"));
    assert!(mails
        .iter()
        .any(|m| to(m).contains("ana@police.example.org") && m.contains("Bo")));
    let voucher = mails
        .iter()
        .find(|m| header(m, "Subject").is_some_and(|s| s.contains("voucher")))
        .expect("a voucher mail");
    assert!(voucher.contains(&voucher_code), "the code is in the mail");
    server.stop().await;
}
