//! Mail benchmarks: durable acceptance, delivery to a real SMTP server, and the memory a
//! waiting job costs.
//!
//! - `mail/accept/durable_64_tasks`: 64 tokio tasks submit one-message envelopes to an
//!   in-process `MailDomain` (journal with group commit, `max_batch` 4096); a submit returns
//!   once the job's `Accepted` event is flushed. The SMTP breaker is held open (one refused
//!   attempt opens it for a day), so nothing is sent and only acceptance is timed.
//!   Baseline in the same run, `mail/accept/raw_journal_append_64_tasks`: the same 64 tasks
//!   appending one event of the same size straight to a `Journal` (what one acceptance
//!   must at least cost).
//! - `mail/deliver/smtp_sink_500`: 500 jobs submitted and timed until all are `Sent` to a
//!   real aiosmtpd server on loopback (tests/support/smtp_sink.py, which writes each mail
//!   to a file). Baseline, `mail/deliver/lettre_direct_500`: the same 500 mails sent with
//!   the same pooled lettre transport and the same concurrency (8), with no job, journal or
//!   scheduler.
//! - `mail/postfix_smtp_sink` (printed, not a criterion figure; issue 18): Postfix's
//!   `smtp-sink` (the server made for benchmarking SMTP clients: it accepts and discards,
//!   one C process, no disk) on loopback, `SINK_MAILS` mails per round (default 5,000),
//!   3 rounds of each, in turn: (1) lettre's pooled `AsyncSmtpTransport` alone, with the
//!   configured pool size (`mail.smtp_pool_max`) and in-flight limit
//!   (`mail.smtp_concurrency`); (2) Peloton's SMTP transport alone (lettre's sessions over
//!   its own TCP_NODELAY connections, same pool and limit), no job, journal or scheduler;
//!   (3) Peloton's mail domain delivering as many submitted jobs (envelopes of 1,000,
//!   submitted at once; timed from the first submit to the last job `Sent`, each job's
//!   Accepted, Sending and Sent journaled and flushed before the next step). Prints each
//!   round's mails/s, the medians and the ratios. `SINK_LIMIT=n` sets pool and limit to n.
//!   Needs `/usr/sbin/smtp-sink` (Debian's `postfix` package; the postfix service need not
//!   run). `PELOTON_MAIL_BENCH=postfix` runs only this part.
//! - Memory (printed, not a criterion figure): RSS growth per job with 100,000 jobs waiting
//!   behind an open breaker, against RSS growth per idle ractor actor (10,000 spawned) in
//!   the same process, i.e. what a waiting job would cost if it kept its actor.
//!
//! Needs python3 with aiosmtpd and Postfix's smtp-sink. Run with
//! `nice -n 5 cargo bench -j 1 --bench mail`.

use criterion::{Criterion, SamplingMode, Throughput};
use peloton::actors::mail::job::TransportKind;
use peloton::actors::mail::message::MailMessage;
use peloton::actors::mail::{EnvelopeMessage, MailDomain, MailRequest, MailSettings};
use peloton::actors::root::{RootArgs, RootMsg, RootSupervisor};
use peloton::config::Config;
use peloton::net::mail::{transports, Outgoing, TransportSettings};
use peloton::persist::{ActorKey, Journal, JournalWriter, Store};
use ractor::{Actor, ActorRef};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

const TASKS: u64 = 64;
const PER_TASK: u64 = 32;
const DELIVER: usize = 500;
const WAITING: usize = 100_000;
const IDLE_ACTORS: usize = 10_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The aiosmtpd sink of the tests.
struct Sink {
    child: Child,
    _dir: TempDir,
    port: u16,
}

impl Sink {
    fn start() -> Sink {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/smtp_sink.py");
        let mut child = Command::new("python3")
            .args([script, &port.to_string()])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with aiosmtpd");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("ready line");
        assert_eq!(line.trim(), "ready");
        Sink {
            child,
            _dir: dir,
            port,
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Postfix's smtp-sink on a free loopback port: accepts every mail and throws it away.
struct PostfixSink {
    child: Child,
    port: u16,
}

impl PostfixSink {
    fn start() -> PostfixSink {
        let port = free_port();
        let mut command = Command::new("/usr/sbin/smtp-sink");
        // As root it must drop privileges after binding.
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            command.args(["-u", "nobody"]);
        }
        let child = command
            .args(["-m", "1000", &format!("127.0.0.1:{port}"), "1000"])
            .stdout(Stdio::null())
            .spawn()
            .expect("/usr/sbin/smtp-sink (apt-get install postfix)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "smtp-sink did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        PostfixSink { child, port }
    }
}

impl Drop for PostfixSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A mail domain over a fresh database, sending to `smtp_port`.
struct Domain {
    _dir: TempDir,
    mail: MailDomain,
    journal: Journal,
    root: ActorRef<RootMsg>,
    _writer: JournalWriter,
}

async fn domain(smtp_port: u16, hold_open: bool) -> Domain {
    domain_with(smtp_port, hold_open, Some(8)).await
}

/// `domain` with `[mail]` `smtp_concurrency` and `smtp_pool_max` set to `limit`, or left at
/// the defaults of config.toml when `None`.
async fn domain_with(smtp_port: u16, hold_open: bool, limit: Option<u32>) -> Domain {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let (journal, writer) = JournalWriter::start(store.clone(), 4096).expect("writer");
    let (root, _) = RootSupervisor::spawn(
        None,
        RootSupervisor,
        RootArgs {
            restart_budget: 3,
            restart_window: Duration::from_secs(60),
        },
    )
    .await
    .expect("root");
    let mut config = Config::defaults().expect("config");
    config.mail.smtp_port = smtp_port;
    if let Some(limit) = limit {
        config.mail.smtp_concurrency = limit;
        config.mail.smtp_pool_max = limit;
    }
    if hold_open {
        config.mail.breaker.consecutive_failures = 1;
        config.mail.breaker.open_ms = 86_400_000;
    }
    let transports = transports(&TransportSettings::from_config(&config)).expect("mail transports");
    let mail = MailDomain::start(
        &root,
        journal.clone(),
        MailSettings::from_config(&config),
        transports,
    )
    .await
    .expect("mail domain");
    if hold_open {
        // One refused attempt opens the breaker for a day.
        let trip = request("trip", 0, 1);
        let job = mail.submit(trip).await.expect("submit").remove(0);
        while mail.summary(&job.id).expect("job").attempts == 0
            || mail.breakers().iter().all(|(_, s)| s.as_str() != "open")
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Domain {
        _dir: dir,
        mail,
        journal,
        root,
        _writer: writer,
    }
}

fn request(correlation: &str, sequence: u64, n: usize) -> MailRequest {
    MailRequest {
        correlation: correlation.into(),
        sequence,
        sent_at_ms: 1_000,
        messages: (0..n)
            .map(|i| EnvelopeMessage {
                message: MailMessage {
                    to: format!("racer{sequence}x{i}@example.org"),
                    subject: format!("Your result in race {sequence}"),
                    body: "Hello,\n\nyou finished 12th in 1:02:03.\n\nThank you for racing.\n"
                        .into(),
                },
                contact: None,
            })
            .collect(),
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

fn accept(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    // lettre's pool spawns a task when dropped: drop the domain inside the runtime.
    let _runtime = rt.enter();
    let mut group = c.benchmark_group("mail/accept");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.throughput(Throughput::Elements(TASKS * PER_TASK));
    let d = rt.block_on(domain(free_port(), true));
    let next = Arc::new(AtomicU64::new(1));
    group.bench_function("durable_64_tasks", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let tasks: Vec<_> = (0..TASKS)
                        .map(|_| {
                            let (mail, next) = (d.mail.clone(), next.clone());
                            tokio::spawn(async move {
                                for _ in 0..PER_TASK {
                                    let seq = next.fetch_add(1, Ordering::Relaxed);
                                    mail.submit(request("bench", seq, 1))
                                        .await
                                        .expect("accepted");
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("task");
                    }
                }
                started.elapsed()
            })
        })
    });
    let event = vec![0u8; 200];
    group.bench_function("raw_journal_append_64_tasks", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let tasks: Vec<_> = (0..TASKS)
                        .map(|t| {
                            let (journal, event, next) =
                                (d.journal.clone(), event.clone(), next.clone());
                            tokio::spawn(async move {
                                for _ in 0..PER_TASK {
                                    let n = next.fetch_add(1, Ordering::Relaxed);
                                    let key = ActorKey::new("rawbench", &format!("{t}.{n}"));
                                    journal.append(&key, 1, &[&event]).await.expect("append");
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("task");
                    }
                }
                started.elapsed()
            })
        })
    });
    group.finish();
    d.root.stop(None);
}

fn deliver(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    use lettre::{AsyncSmtpTransport, Tokio1Executor};
    let _runtime = rt.enter();
    let sink = Sink::start();
    let mut group = c.benchmark_group("mail/deliver");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.throughput(Throughput::Elements(DELIVER as u64));
    let d = rt.block_on(domain(sink.port, false));
    let next = Arc::new(AtomicU64::new(1));
    group.bench_function("smtp_sink_500", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    let jobs = d
                        .mail
                        .submit(request("deliver", seq, DELIVER))
                        .await
                        .expect("submit");
                    for job in jobs {
                        while d.mail.summary(&job.id).expect("job").status.name() != "sent" {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
                started.elapsed()
            })
        })
    });
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(sink.port)
        .pool_config(lettre::transport::smtp::PoolConfig::new().max_size(8))
        .build();
    let permits = Arc::new(tokio::sync::Semaphore::new(8));
    group.bench_function("lettre_direct_500", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut elapsed = Duration::ZERO;
                for round in 0..iters {
                    elapsed += lettre_direct(&transport, &permits, DELIVER, round).await;
                }
                elapsed
            })
        })
    });
    group.finish();
    d.root.stop(None);
}

/// RSS per waiting job (100,000 behind an open breaker) against RSS per idle actor.
fn memory(rt: &tokio::runtime::Runtime) {
    rt.block_on(async {
        let d = domain(free_port(), true).await;
        let before = rss_bytes();
        let started = Instant::now();
        let next = Arc::new(AtomicU64::new(1));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (mail, next) = (d.mail.clone(), next.clone());
                tokio::spawn(async move {
                    loop {
                        let seq = next.fetch_add(1, Ordering::Relaxed);
                        if seq > (WAITING / 100) as u64 {
                            return;
                        }
                        mail.submit(request("waiting", seq, 100)).await.expect("accepted");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        let accept_s = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let waiting = d.mail.list(Some("accepted"), 10_000).map(|l| l.len()).unwrap_or(0);
        let live = d.mail.live_actors();
        let after = rss_bytes();
        let per_job = (after.saturating_sub(before)) as f64 / WAITING as f64;
        println!(
            "mail/memory: {WAITING} waiting jobs (accepted in {accept_s:.1} s), {live} live job actors, \
             first 10,000 listed as accepted: {waiting}; RSS +{:.1} MB = {per_job:.0} B per waiting job \
             (includes sled's cache of their journal records)",
            (after.saturating_sub(before)) as f64 / 1e6
        );
        d.root.stop(None);

        struct Idle;
        impl Actor for Idle {
            type Msg = ();
            type State = ();
            type Arguments = ();
            async fn pre_start(
                &self,
                _: ActorRef<()>,
                _: (),
            ) -> Result<(), ractor::ActorProcessingErr> {
                Ok(())
            }
        }
        let before = rss_bytes();
        let mut actors = Vec::with_capacity(IDLE_ACTORS);
        for _ in 0..IDLE_ACTORS {
            actors.push(Idle::spawn(None, Idle, ()).await.expect("spawn").0);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let per_actor = (rss_bytes().saturating_sub(before)) as f64 / IDLE_ACTORS as f64;
        println!(
            "mail/memory: baseline idle ractor actor {per_actor:.0} B; waiting job / idle actor = {:.2}",
            per_job / per_actor
        );
        for a in actors {
            a.stop(None);
        }
    });
}

/// The median of a few figures.
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// lettre alone against Postfix's smtp-sink, then Peloton's jobs, 3 rounds each.
fn postfix_sink(rt: &tokio::runtime::Runtime) {
    use lettre::{AsyncSmtpTransport, Tokio1Executor};
    let _runtime = rt.enter();
    let n: usize = std::env::var("SINK_MAILS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let sink = PostfixSink::start();
    let mut defaults = Config::defaults().expect("config");
    // `SINK_LIMIT=n`: try another pool size and in-flight limit (both n) without a rebuild.
    let limit = std::env::var("SINK_LIMIT")
        .ok()
        .and_then(|v| v.parse().ok());
    if let Some(limit) = limit {
        defaults.mail.smtp_pool_max = limit;
        defaults.mail.smtp_concurrency = limit;
    }
    let (pool, concurrency) = (defaults.mail.smtp_pool_max, defaults.mail.smtp_concurrency);
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(sink.port)
        .pool_config(lettre::transport::smtp::PoolConfig::new().max_size(pool))
        .build();
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency as usize));
    let d = rt.block_on(domain_with(sink.port, false, limit));
    // Peloton's SMTP transport alone (its own connections), no job, journal or scheduler.
    let mut settings = TransportSettings::from_config(&defaults);
    settings.smtp.port = sink.port;
    let smtp = transports(&settings).expect("transports")[&TransportKind::Smtp].clone();
    let (mut direct, mut alone, mut peloton) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..3u64 {
        let elapsed = rt.block_on(lettre_direct(&transport, &permits, n, round));
        direct.push(n as f64 / elapsed.as_secs_f64());
        let elapsed = rt.block_on(async {
            let started = Instant::now();
            let sends: Vec<_> = (0..n)
                .map(|i| {
                    let (smtp, permits) = (smtp.clone(), permits.clone());
                    tokio::spawn(async move {
                        let _permit = permits.acquire().await.expect("permit");
                        let (to, id) = (
                            format!("racer{i}@example.org"),
                            format!("<alone{round}x{i}@peloton.local>"),
                        );
                        let mail = Outgoing {
                            from: "Peloton <noreply@peloton.local>",
                            to: &to,
                            subject: "Your result",
                            body: "Hello,\n\nyou finished 12th in 1:02:03.\n",
                            message_id: &id,
                            idempotency_key: &id,
                        };
                        smtp.send(mail).await.expect("sent");
                    })
                })
                .collect();
            for s in sends {
                s.await.expect("send task");
            }
            started.elapsed()
        });
        alone.push(n as f64 / elapsed.as_secs_f64());
        let elapsed = rt.block_on(async {
            let started = Instant::now();
            let envelopes: Vec<_> = (0..n.div_ceil(1_000))
                .map(|e| {
                    let mail = d.mail.clone();
                    let size = (n - e * 1_000).min(1_000);
                    let seq = 1_000_000 * (round + 1) + e as u64;
                    tokio::spawn(async move { mail.submit(request("sink", seq, size)).await })
                })
                .collect();
            let mut jobs = Vec::with_capacity(n);
            for e in envelopes {
                jobs.extend(e.await.expect("submit task").expect("accepted"));
            }
            for job in jobs {
                while d.mail.summary(&job.id).expect("job").status.name() != "sent" {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            started.elapsed()
        });
        peloton.push(n as f64 / elapsed.as_secs_f64());
        println!(
            "mail/postfix_smtp_sink round {}: lettre's pooled transport {:.0} mails/s, \
             Peloton's SMTP transport alone {:.0} mails/s, Peloton jobs {:.0} mails/s",
            round + 1,
            direct[direct.len() - 1],
            alone[alone.len() - 1],
            peloton[peloton.len() - 1]
        );
    }
    let (direct, alone, peloton) = (median(direct), median(alone), median(peloton));
    println!(
        "mail/postfix_smtp_sink: {n} mails per round, pool {pool}, in flight {concurrency}; \
         median of 3: lettre's pooled transport {direct:.0} mails/s, Peloton's SMTP transport \
         alone {alone:.0} mails/s, Peloton jobs {peloton:.0} mails/s; jobs / lettre = {:.2}, \
         jobs / transport alone = {:.2}",
        peloton / direct,
        peloton / alone
    );
    d.root.stop(None);
}

fn main() {
    let rt = runtime();
    postfix_sink(&rt);
    if std::env::var("PELOTON_MAIL_BENCH").is_ok_and(|v| v == "postfix") {
        return;
    }
    memory(&rt);
    let mut c = Criterion::default().configure_from_args();
    accept(&mut c, &rt);
    deliver(&mut c, &rt);
    c.final_summary();
}

/// Sends `n` mails with lettre alone through `transport`, `permits` at a time, and returns
/// how long it took; `round` keeps each call's Message-IDs apart.
async fn lettre_direct(
    transport: &lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    permits: &Arc<tokio::sync::Semaphore>,
    n: usize,
    round: u64,
) -> Duration {
    let started = Instant::now();
    let sends: Vec<_> = (0..n)
        .map(|i| {
            let (transport, permits) = (transport.clone(), permits.clone());
            tokio::spawn(async move {
                use lettre::AsyncTransport;
                let _permit = permits.acquire().await.expect("permit");
                let message = lettre::Message::builder()
                    .from("Peloton <noreply@peloton.local>".parse().expect("from"))
                    .to(format!("racer{i}@example.org").parse().expect("to"))
                    .subject("Your result")
                    .message_id(Some(format!("<direct{round}x{i}@peloton.local>")))
                    .body("Hello,\n\nyou finished 12th in 1:02:03.\n".to_owned())
                    .expect("message");
                transport.send(message).await.expect("sent");
            })
        })
        .collect();
    for s in sends {
        s.await.expect("send task");
    }
    started.elapsed()
}
