//! Mission control in cluster mode, against a real `nats-server`, two `peloton` nodes as
//! child processes and the real SMTP sink (tests/support/smtp_sink.py): one node owns mail
//! (the `mail` lease), mails submitted through the other wait while the sink refuses them,
//! the owner is killed with `kill -9`, and the surviving node takes mission control over and
//! sends every mail exactly once, announcing one `sent` outcome per job on the stream.

mod common;

use common::mail::{received_mails, start_sink};
use common::nats::NatsServer;
use common::{free_port, keys_for, token, ChildServer};
use futures_util::StreamExt;
use peloton::auth::Role;
use peloton::net::client::Client;
use peloton::net::codec::Codec;
use peloton::net::protocol::{MailEnvelope, MailJobView, MailMessageView, Reply, Request};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Mails submitted.
const MAILS: usize = 20;

/// The SMTP sink, writing each accepted mail into a folder.
struct Sink {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Sink {
    fn start() -> Sink {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py");
        let mut command = Command::new("python3");
        command.arg(script).arg(port.to_string()).arg(dir.path());
        let child = start_sink(command, "smtp_sink.py");
        Sink { child, dir, port }
    }

    /// `ok`, or an SMTP code every DATA is answered with.
    fn set_mode(&self, mode: &str) {
        std::fs::write(self.dir.path().join("mode"), mode).unwrap();
    }

    /// How often each Message-ID arrived.
    fn message_ids(&self) -> HashMap<String, usize> {
        let mut seen = HashMap::new();
        for file in received_mails(self.dir.path()) {
            let raw = std::fs::read_to_string(&file).unwrap();
            let id = raw
                .lines()
                .take_while(|l| !l.is_empty())
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("Message-ID")
                        .then(|| v.trim().to_owned())
                })
                .expect("every mail has a Message-ID");
            *seen.entry(id).or_insert(0) += 1;
        }
        seen
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Cluster node `node` on NATS `url` under `prefix`, sending to the sink on `smtp_port`
/// with retries a few hundred milliseconds apart and attempts enough to outlast the test.
fn node_env(url: &str, prefix: &str, node: &str, smtp_port: u16) -> Vec<(String, String)> {
    [
        ("PELOTON_CLUSTER_NATS_URL", url.to_owned()),
        ("PELOTON_CLUSTER_PREFIX", prefix.to_owned()),
        ("PELOTON_CLUSTER_NODE_ID", node.to_owned()),
        ("PELOTON_MAIL_SMTP_PORT", smtp_port.to_string()),
        ("PELOTON_MAIL_BACKOFF_BASE_MS", "100".into()),
        ("PELOTON_MAIL_BACKOFF_CAP_MS", "500".into()),
        ("PELOTON_MAIL_MAX_ATTEMPTS", "500".into()),
        ("PELOTON_MAIL_BREAKER_OPEN_MS", "200".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn start_node(data: &Path, env: &[(String, String)]) -> ChildServer {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    ChildServer::start(data, &env)
}

/// The node holding the `mail` lease, as `peloton cluster status` reads it from NATS.
fn mail_owner(url: &str, prefix: &str) -> Option<String> {
    let output = common::bin()
        .args(["cluster", "status", "--json"])
        .env("PELOTON_CLUSTER_NATS_URL", url)
        .env("PELOTON_CLUSTER_PREFIX", prefix)
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_str(&common::cli::ok(output)).unwrap();
    status["leases"]
        .as_array()?
        .iter()
        .find(|l| l["key"] == "mail")
        .and_then(|l| l["node"].as_str().map(str::to_owned))
}

/// The envelope of [`MAILS`] mails.
fn envelope() -> MailEnvelope {
    MailEnvelope {
        correlation_id: "handover".into(),
        sequence: 1,
        sent_at_ms: peloton::time::now_ms(),
        messages: (0..MAILS)
            .map(|i| MailMessageView {
                to: format!("racer{i}@example.org"),
                subject: format!("Result {i}"),
                body: format!("Your result, racer {i}.\n"),
                contact: None,
            })
            .collect(),
    }
}

/// Every job, as the owner of mission control answers (through whichever node `admin` is
/// on); `None` while no node answers.
async fn jobs(admin: &mut Client) -> Option<Vec<MailJobView>> {
    let list = Request::MailList {
        state: None,
        limit: 1000,
    };
    match admin.request(list).await {
        Ok(Reply::MailJobs(jobs)) => Some(jobs),
        Ok(other) => panic!("mail list: {other:?}"),
        Err(_) => None,
    }
}

/// Asks (through `admin`) until `done` holds of the jobs, at most `limit`.
async fn until(
    admin: &mut Client,
    limit: Duration,
    what: &str,
    done: impl Fn(&[MailJobView]) -> bool,
) -> Vec<MailJobView> {
    let began = Instant::now();
    let mut last = None;
    loop {
        if let Some(jobs) = jobs(admin).await {
            if done(&jobs) {
                return jobs;
            }
            last = Some(jobs);
        }
        assert!(
            began.elapsed() < limit,
            "{what} not within {limit:?}; last seen: {:?}",
            last.map(|jobs| jobs
                .iter()
                .map(|j| (j.state.clone(), j.attempts))
                .collect::<Vec<_>>())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The outcomes on mission control's stream: (job, status) → how many.
async fn outcomes(url: &str, prefix: &str) -> HashMap<(String, String), usize> {
    use async_nats::jetstream::consumer::pull::OrderedConfig;
    let client = async_nats::connect(url).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream
        .get_stream(format!("{prefix}_mission_control"))
        .await
        .unwrap();
    // Kept for a week, not for ever: a season of mail does not pile up in NATS.
    let kept = stream.info().await.unwrap().config.max_age;
    assert_eq!(kept, Duration::from_secs(7 * 24 * 3600));
    let subject = format!("{prefix}.mission-control.outcomes");
    let total = stream
        .info_with_subjects(subject.clone())
        .await
        .unwrap()
        .next()
        .await
        .map(|entry| entry.unwrap().1)
        .unwrap_or(0);
    let mut counts = HashMap::new();
    if total == 0 {
        return counts;
    }
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: subject,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    for _ in 0..total {
        let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("an outcome within 5 s")
            .expect("the reader goes on")
            .unwrap();
        let outcome: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        let key = (
            outcome["job"].as_str().unwrap().to_owned(),
            outcome["status"].as_str().unwrap().to_owned(),
        );
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_mails_survive_their_owner_and_go_out_exactly_once() {
    let nats = NatsServer::start();
    let prefix = format!("mail{}", free_port());
    let sink = Sink::start();
    sink.set_mode("451");

    // A starts first and takes mission control; B has only the cluster's secret.
    let dir_a = tempfile::tempdir().unwrap();
    let node_a = start_node(dir_a.path(), &node_env(&nats.url, &prefix, "a", sink.port));
    let dir_b = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir_a.path().join("secret.key"),
        dir_b.path().join("secret.key"),
    )
    .unwrap();
    let node_b = start_node(dir_b.path(), &node_env(&nats.url, &prefix, "b", sink.port));
    assert_eq!(mail_owner(&nats.url, &prefix).as_deref(), Some("a"));

    // Submitted through B: stored on the stream, answered as accepted.
    let admin_token = token(&keys_for(dir_a.path()), Role::Admin, "ops", None, 3600);
    let mut admin_b = Client::connect(&node_b.url, &admin_token, Codec::Json)
        .await
        .unwrap();
    let submitted = match admin_b
        .request(Request::MailSubmit(envelope()))
        .await
        .unwrap()
    {
        Reply::MailJobs(jobs) => jobs,
        other => panic!("submit: {other:?}"),
    };
    assert_eq!(submitted.len(), MAILS);
    assert!(submitted.iter().all(|j| j.state == "accepted"));
    // The same envelope again, through A: the same jobs, nothing new.
    let mut admin_a = Client::connect(&node_a.url, &admin_token, Codec::Json)
        .await
        .unwrap();
    match admin_a
        .request(Request::MailSubmit(envelope()))
        .await
        .unwrap()
    {
        Reply::MailJobs(again) => assert_eq!(
            again.iter().map(|j| &j.id).collect::<Vec<_>>(),
            submitted.iter().map(|j| &j.id).collect::<Vec<_>>()
        ),
        other => panic!("resubmit: {other:?}"),
    }

    // A accepted them from the stream and tried each; the sink refused: they wait. B's
    // list is A's (forwarded to the owner).
    until(
        &mut admin_b,
        Duration::from_secs(30),
        "every job tried and waiting on A",
        |jobs| jobs.len() == MAILS && jobs.iter().all(|j| j.failures >= 1 && j.state != "sent"),
    )
    .await;
    assert!(sink.message_ids().is_empty(), "the sink refused every mail");

    node_a.kill9();
    let killed = Instant::now();
    sink.set_mode("ok");

    // B takes mission control over and sends each mail once.
    let all_arrived = loop {
        let seen = sink.message_ids();
        if seen.len() == MAILS {
            break seen;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "{} of {MAILS} mails arrived within 30 s of the kill",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("every mail arrived {:?} after the kill", killed.elapsed());
    let sent = until(
        &mut admin_b,
        Duration::from_secs(20),
        "every job sent on B",
        |jobs| jobs.len() == MAILS && jobs.iter().all(|j| j.state == "sent"),
    )
    .await;
    assert_eq!(mail_owner(&nats.url, &prefix).as_deref(), Some("b"));
    // Nothing arrives twice, however long one waits.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = sink.message_ids();
    assert_eq!(seen, all_arrived);
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    for job in &submitted {
        assert!(
            seen.keys()
                .any(|id| id.starts_with(&format!("<{}@", job.id))),
            "job {} arrived under its own Message-ID",
            job.id
        );
    }

    // One `sent` outcome per job on the stream (announced after each job's journal).
    let began = Instant::now();
    let announced = loop {
        let announced = outcomes(&nats.url, &prefix).await;
        if announced.len() >= MAILS || began.elapsed() > Duration::from_secs(10) {
            break announced;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(announced.len(), MAILS, "{announced:?}");
    for job in &sent {
        assert_eq!(
            announced.get(&(job.id.clone(), "sent".into())),
            Some(&1),
            "job {}",
            job.id
        );
    }
    drop(node_b);
}
