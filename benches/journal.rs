//! Journal benchmarks: what group commit buys, and how long recovery takes.
//!
//! - `journal/append/group_commit_64_tasks`: 64 tokio tasks, each appending events for its
//!   own actor one append at a time and awaiting each (an append resolves only after the
//!   flush that made it durable), all through one `JournalWriter` with `max_batch` 4096.
//!   Appends queued while the writer flushes share the next flush.
//! - `journal/append/flush_per_event`: the same events appended by a single appender that
//!   awaits each append before sending the next, so every event pays its own flush.
//!
//!   Both report `Throughput::Elements` (events/s) in the same run, so their ratio is the
//!   group-commit gain on this machine's disk. After each, the writer's own metrics
//!   (`peloton_journal_appends_total`, `_flushes_total`, `_flush_seconds`) are printed as
//!   events per flush and mean flush time, which show whether batching actually happened.
//! - `journal/recovery_1m/load_all_warm`: 1,000,000 journaled events (1,000 actors x 1,000
//!   events, built once with group commit and large batches, outside the timed loop), read
//!   back the way startup does: list the actors (`Journal::actors("race")`), `Journal::load`
//!   each, fold its events into a state. The store is already open, so sled's page cache is
//!   warm.
//! - `journal/recovery_1m/open_and_load_all`: the same, but each iteration also opens the
//!   database (`Store::open`) and drops it afterwards, like a process restart (the OS page
//!   cache stays warm).
//!
//! - `journal/append_jetstream_r{1,3}/{pipelined_64_tasks,one_at_a_time}`: the same two
//!   cases on cluster mode's journal, NATS JetStream (one local `nats-server` with one
//!   replica; three servers with three replicas), where an append resolves on JetStream's
//!   acknowledgement and group commit is pipelining.
//!
//! Events are a small serde struct (a position fix, 90 bytes as a record). Data lives
//! in `tempfile::TempDir`s on the default temporary directory.
//!
//! Run with `nice -n 10 cargo bench --bench journal`.

#[path = "../tests/common/nats.rs"]
mod nats;

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput,
};
use peloton::cluster::Link;
use peloton::metrics;
use peloton::persist::jetstream::JetStreamJournal;
use peloton::persist::{record, ActorKey, Journal, JournalWriter, Store};
use serde::{Deserialize, Serialize};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Concurrent appenders in the group-commit case.
const APPENDERS: usize = 64;
/// Events each appender writes per iteration; both append cases write
/// `APPENDERS * EVENTS_PER_APPENDER` events per iteration.
const EVENTS_PER_APPENDER: u64 = 16;
/// The writer's `group_commit_max_batch`.
const MAX_BATCH: usize = 4096;
/// Recovery data set: actors x events each = 1,000,000 events.
const RECOVERY_ACTORS: usize = 1_000;
const RECOVERY_EVENTS_PER_ACTOR: u64 = 1_000;
/// Events per append while building the recovery data set.
const BUILD_CHUNK: u64 = 500;

/// A racer's position fix: the kind of small event a live race journals most.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PositionFix {
    racer: String,
    at_ms: i64,
    lat: f64,
    lon: f64,
    elevation_m: f32,
    speed_mps: f32,
    heading_deg: f32,
    accuracy_m: f32,
    source: String,
}

fn fix(racer: usize, seq: u64) -> PositionFix {
    PositionFix {
        racer: format!("racer-{racer:05}"),
        at_ms: 1_767_000_000_000 + seq as i64 * 1_000,
        lat: 46.0569 + seq as f64 * 1e-5,
        lon: 14.5058 - seq as f64 * 1e-5,
        elevation_m: 295.0 + (seq % 50) as f32,
        speed_mps: 8.5 + (seq % 7) as f32 * 0.25,
        heading_deg: (seq % 360) as f32,
        accuracy_m: 3.5,
        source: "gps/android-fused/v2.14.1 (Pixel 8)".into(),
    }
}

/// What recovery folds the events into: enough work to touch every field once. It is also
/// the snapshot type `Journal::load` expects (none are written here).
#[derive(Debug, Default, Serialize, Deserialize)]
struct RacerState {
    fixes: u64,
    last_seq: u64,
    last_at_ms: i64,
    position: (f64, f64),
    max_speed_mps: f32,
}

impl RacerState {
    fn apply(mut self, seq: u64, e: &PositionFix) -> Self {
        self.fixes += 1;
        self.last_seq = seq;
        self.last_at_ms = e.at_ms;
        self.position = (e.lat, e.lon);
        self.max_speed_mps = self.max_speed_mps.max(e.speed_mps);
        self
    }
}

fn actor(i: usize) -> ActorKey {
    ActorKey::new("race", &format!("0193a5c1f2e0{i:08x}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A fresh database with its writer thread.
struct Db {
    dir: TempDir,
    store: Store,
    journal: Journal,
    writer: JournalWriter,
}

impl Db {
    fn new() -> Db {
        let dir = TempDir::new().expect("temp dir");
        let store = Store::open(dir.path()).expect("open store");
        let (journal, writer) =
            JournalWriter::start(store.clone(), MAX_BATCH).expect("start writer");
        Db {
            dir,
            store,
            journal,
            writer,
        }
    }

    /// Stops the writer after its last flush; returns the directory and store.
    fn stop(self) -> (TempDir, Store) {
        drop(self.journal);
        self.writer.join();
        (self.dir, self.store)
    }
}

/// One iteration of the group-commit case: `APPENDERS` tasks append `EVENTS_PER_APPENDER`
/// events each, one awaited append per event. `round` keeps sequence numbers increasing.
async fn group_commit_round(journal: &Journal, round: u64) {
    let mut tasks = Vec::with_capacity(APPENDERS);
    for a in 0..APPENDERS {
        let journal = journal.clone();
        tasks.push(tokio::spawn(async move {
            let key = actor(a);
            let first = round * EVENTS_PER_APPENDER + 1;
            for seq in first..first + EVENTS_PER_APPENDER {
                journal
                    .append(&key, seq, &[fix(a, seq)])
                    .await
                    .expect("append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("appender task");
    }
}

/// One iteration of the flush-per-event case: the same events, one appender, each append
/// awaited (and so flushed) before the next is sent.
async fn flush_per_event_round(journal: &Journal, round: u64) {
    let keys: Vec<ActorKey> = (0..APPENDERS).map(actor).collect();
    let first = round * EVENTS_PER_APPENDER + 1;
    for seq in first..first + EVENTS_PER_APPENDER {
        for (a, key) in keys.iter().enumerate() {
            journal
                .append(key, seq, &[fix(a, seq)])
                .await
                .expect("append");
        }
    }
}

/// The journal writer's own counters (from the library's Prometheus recorder), to report
/// how many events each flush carried and how long flushes took.
#[derive(Debug, Default, Clone, Copy)]
struct WriterCounters {
    events: f64,
    flushes: f64,
    flush_seconds: f64,
}

impl WriterCounters {
    fn read() -> WriterCounters {
        let text = metrics::render();
        let value = |name: &str| {
            text.lines()
                .find_map(|line| {
                    line.strip_prefix(name)?
                        .strip_prefix(' ')?
                        .trim()
                        .parse()
                        .ok()
                })
                .unwrap_or(0.0)
        };
        WriterCounters {
            events: value(metrics::JOURNAL_APPENDS),
            flushes: value(metrics::JOURNAL_FLUSHES),
            flush_seconds: value(&format!("{}_sum", metrics::JOURNAL_FLUSH_SECONDS)),
        }
    }

    /// Prints what the writer did since `before`.
    fn report_since(before: WriterCounters, what: &str) {
        let now = WriterCounters::read();
        let (events, flushes) = (now.events - before.events, now.flushes - before.flushes);
        if flushes > 0.0 {
            eprintln!(
                "\njournal: {what}: {events} events in {flushes} flushes = {:.1} events/flush, \
                 mean flush {:.0} us\n",
                events / flushes,
                (now.flush_seconds - before.flush_seconds) / flushes * 1e6
            );
        }
    }
}

/// A benchmark group for the append comparison: 10 samples of `events` events each.
fn append_group<'a>(c: &'a mut Criterion, name: &str, events: u64) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(events));
    group
}

/// Times one case of the comparison on `journal` (fresh for it): 64 appenders at once, or one
/// append at a time. `round` keeps sequence numbers increasing across iterations.
fn bench_case(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    journal: &Journal,
    all_at_once: bool,
) {
    let mut round = 0;
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                if all_at_once {
                    rt.block_on(group_commit_round(journal, round));
                } else {
                    rt.block_on(flush_per_event_round(journal, round));
                }
                round += 1;
            }
            start.elapsed()
        })
    });
}

fn bench_append(c: &mut Criterion) {
    let rt = runtime();
    let events = APPENDERS as u64 * EVENTS_PER_APPENDER;
    eprintln!(
        "\njournal: event record size {} bytes; {events} events per append iteration\n",
        record::encode(&fix(42, 123_456))
            .expect("encode event")
            .len()
    );
    metrics::install();
    let mut group = append_group(c, "journal/append", events);
    for (name, all_at_once) in [("group_commit_64_tasks", true), ("flush_per_event", false)] {
        let db = Db::new();
        let before = WriterCounters::read();
        bench_case(&mut group, &rt, name, &db.journal, all_at_once);
        db.stop();
        WriterCounters::report_since(before, name);
    }
    group.finish();
    bench_append_jetstream(c, &rt, events);
}

/// The same two cases on cluster mode's journal, NATS JetStream with file storage: one
/// local `nats-server` with one replica, then a three-server cluster on this machine with
/// three replicas (an append is acknowledged once two of them stored it). Group commit is
/// pipelining there: records of different actors go out back to back and their
/// acknowledgements come back together.
fn bench_append_jetstream(c: &mut Criterion, rt: &tokio::runtime::Runtime, events: u64) {
    for replicas in [1u64, 3] {
        let servers = if replicas == 1 {
            vec![nats::NatsServer::start()]
        } else {
            nats::NatsServer::cluster(3)
        };
        let urls = servers
            .iter()
            .map(|server| server.url.clone())
            .collect::<Vec<_>>()
            .join(",");
        let mut group = append_group(c, &format!("journal/append_jetstream_r{replicas}"), events);
        for (name, all_at_once) in [("pipelined_64_tasks", true), ("one_at_a_time", false)] {
            // Each case on a prefix of its own: fresh journals for the same actor keys.
            let config = nats::cluster_config(&urls, replicas);
            let (link, _runtime) = Link::connect(&config).expect("connect to nats-server");
            let (journal, _writer) = JetStreamJournal::start(&link, None).expect("journal");
            let before = WriterCounters::read();
            bench_case(&mut group, rt, name, &journal, all_at_once);
            WriterCounters::report_since(before, name);
        }
        group.finish();
    }
}

/// Writes 1,000,000 events with group commit: every actor's events in appends of
/// `BUILD_CHUNK`, all actors concurrently.
fn build_recovery_data(rt: &tokio::runtime::Runtime) -> (TempDir, Store) {
    let db = Db::new();
    let started = Instant::now();
    let journal = db.journal.clone();
    rt.block_on(async move {
        // Encoding happens in the appending task; share the work out over a few tasks per
        // core and let the writer batch whatever they queue.
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let journal = journal.clone();
            let next = next.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let a = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if a >= RECOVERY_ACTORS {
                        break;
                    }
                    let key = actor(a);
                    let mut seq = 1;
                    while seq <= RECOVERY_EVENTS_PER_ACTOR {
                        let end = (seq + BUILD_CHUNK).min(RECOVERY_EVENTS_PER_ACTOR + 1);
                        let chunk: Vec<PositionFix> = (seq..end).map(|s| fix(a, s)).collect();
                        journal.append(&key, seq, &chunk).await.expect("append");
                        seq = end;
                    }
                }
            }));
        }
        for task in tasks {
            task.await.expect("builder task");
        }
        journal.flush().await.expect("flush");
    });
    let (dir, store) = db.stop();
    let elapsed = started.elapsed();
    let total = RECOVERY_ACTORS as u64 * RECOVERY_EVENTS_PER_ACTOR;
    assert_eq!(store.journal_len() as u64, total);
    eprintln!(
        "\njournal: built {total} events ({RECOVERY_ACTORS} actors x {RECOVERY_EVENTS_PER_ACTOR}) \
         with group commit in {:.2} s ({:.0} events/s, one-shot, not a criterion figure)\n",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    (dir, store)
}

/// Recovery as startup does it: every actor listed, loaded and folded. Returns the number
/// of events replayed.
fn recover_all(store: &Store) -> u64 {
    // Reads through the journal handle, as the actor shells do, over the sled backend.
    let (journal, writer) = JournalWriter::start(store.clone(), MAX_BATCH).expect("start writer");
    let mut replayed = 0;
    for key in journal.actors("race").expect("list actors") {
        let recovered = journal
            .load::<RacerState, PositionFix>(&key)
            .expect("load actor");
        assert!(recovered.snapshot.is_none());
        let state = recovered
            .events
            .iter()
            .fold(RacerState::default(), |s, (seq, e)| s.apply(*seq, e));
        replayed += state.fixes;
        black_box(state);
    }
    drop(journal);
    writer.join();
    replayed
}

fn bench_recovery(c: &mut Criterion) {
    let rt = runtime();
    let total = RECOVERY_ACTORS as u64 * RECOVERY_EVENTS_PER_ACTOR;
    // Built on first use, so a filter that skips recovery (`cargo bench --bench journal --
    // append`) does not pay for it.
    let mut data: Option<(TempDir, Option<Store>)> = None;

    let mut group = c.benchmark_group("journal/recovery_1m");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(total));

    group.bench_function("load_all_warm", |b| {
        let (dir, store) = data.get_or_insert_with(|| {
            let (dir, store) = build_recovery_data(&rt);
            (dir, Some(store))
        });
        let store = store.get_or_insert_with(|| Store::open(dir.path()).expect("reopen store"));
        b.iter(|| assert_eq!(recover_all(store), total))
    });

    // Opening the database roughly doubles an iteration; give it the time for 10 samples.
    group.measurement_time(Duration::from_secs(18));
    group.bench_function("open_and_load_all", |b| {
        let (dir, store) = data.get_or_insert_with(|| {
            let (dir, store) = build_recovery_data(&rt);
            (dir, Some(store))
        });
        // sled holds a lock on the database while any handle is open.
        drop(store.take());
        b.iter(|| {
            let store = Store::open(dir.path()).expect("reopen store");
            assert_eq!(recover_all(&store), total);
            drop(store);
        })
    });
    group.finish();
}

criterion_group!(benches, bench_append, bench_recovery);
criterion_main!(benches);
