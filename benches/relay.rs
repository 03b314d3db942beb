//! What cluster mode costs per race tick to show spectators on other nodes
//! (`actors::race::relay` and `mirror`): the owner relays each tick once on NATS as the rows
//! that changed (`RelayedTick`, a versioned bincode record), and every node with spectators
//! follows it with a `Mirror` and publishes it to its own sockets.
//!
//! One race of `RACERS` (1,000) racers, a quarter of whose rows change each tick (fixes
//! every second, ticks every 250 ms), the real tick encoder of the API:
//! - `relay/owner_publish`: the baseline, what the owner does for every tick anyway, one or
//!   a thousand spectators alike: `Feed::tick` + `Published::new` (the delta encoded in both
//!   wire encodings);
//! - `relay/owner_relay`: the owner's extra work per tick in cluster mode: the relayed rows
//!   (`Published::relay_since`) and their record;
//! - `relay/mirror_follow`: each other node's work per tick: decode the record,
//!   `Mirror::follow`, `Published::new` for its sockets.
//!
//! Before timing, it prints the bytes one tick puts on NATS per watching node (the record,
//! plus the NATS subject and header line), beside the binary and JSON delta frames every
//! socket is sent, and the record of a full table (after a gap or an owner change).
//!
//! Run with `nice -n 10 cargo bench --bench relay`; ratios of the three medians are the
//! cost of a mirror against the owner's own tick on this machine.

use criterion::{criterion_group, criterion_main, Criterion};
use peloton::actors::race::feed::{Feed, Published};
use peloton::actors::race::standings::{Live, Standing};
use peloton::geo::Position;
use peloton::ids::RaceId;
use peloton::persist::record;
use peloton_domain::race::relay::{Followed, Mirror, RelayedTick};
use std::hint::black_box;

/// Racers in the race.
const RACERS: u32 = 1_000;
/// Ticks prepared for the timed loops (they cycle through them).
const TICKS: usize = 64;
/// The catch-up window, as `config.toml`'s default.
const WINDOW: usize = 8;

/// The table after `tick` ticks: every fourth racer (a different quarter each tick) moved.
fn table(tick: usize) -> Vec<Standing> {
    let mut rows: Vec<Standing> = (1..=RACERS)
        .map(|bib| {
            let moves = (tick + bib as usize % 4) / 4;
            let progress_m = f64::from(RACERS - bib) * 3.0 + moves as f64 * 7.5;
            Standing {
                bib,
                rank: 0,
                progress_m,
                gap_ms: Some(i64::from(bib) * 1_000 + moves as i64),
                finished_at_ms: None,
                off_course: false,
                cut_suspected: false,
                checkpoints_passed: (moves / 40) as u16,
                last_split_ms: None,
                live: Live {
                    position: Position::from_degrees(46.2 + progress_m * 1e-6, 15.26).ok(),
                    speed_mps: Some(7.5),
                    eta_ms: Some(3_600_000 - moves as i64 * 250),
                },
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        b.progress_m
            .total_cmp(&a.progress_m)
            .then(a.bib.cmp(&b.bib))
    });
    for (i, row) in rows.iter_mut().enumerate() {
        row.rank = i as u32 + 1;
    }
    rows
}

fn relay(c: &mut Criterion) {
    let race = RaceId::parse("bench-race").unwrap();
    let encoder = peloton::api::tick_encoder();
    let tables: Vec<Vec<Standing>> = (0..=TICKS).map(table).collect();
    // One owner feed run over every table, its ticks and their relayed records.
    let mut owner = Feed::starting_after(1_000, WINDOW);
    let first = owner.tick(tables[0].clone(), 10).unwrap();
    let seeded = Mirror::new(first.seq, &tables[0], WINDOW);
    let published: Vec<Published> = tables[1..]
        .iter()
        .map(|t| {
            Published::new(
                race.clone(),
                owner.tick(t.clone(), 10).unwrap(),
                encoder.clone(),
            )
            .unwrap()
        })
        .collect();
    let records: Vec<Vec<u8>> = published
        .iter()
        .map(|p| record::encode(&p.relay_since(p.seq - 1).unwrap()).unwrap())
        .collect();
    let nats_overhead = "PUB peloton.topic.tick.race.bench-race 0000\r\n\r\n".len();
    let median = |mut v: Vec<usize>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let relayed = median(records.iter().map(Vec::len).collect());
    let binary = median(published.iter().map(|p| p.delta.binary.len()).collect());
    let json = median(published.iter().map(|p| p.delta.json.len()).collect());
    let full = record::encode(&published[0].relay_full()).unwrap().len();
    println!(
        "relay: {RACERS} racers, {} rows changed a tick: {} B on NATS per tick per node \
         (record {relayed} B); a socket's delta frame {binary} B binary, {json} B JSON; \
         a full-table record {full} B",
        published[0]
            .relay_since(published[0].seq - 1)
            .unwrap()
            .rows
            .len(),
        relayed + nats_overhead,
    );

    let mut group = c.benchmark_group("relay");
    group.bench_function("owner_publish", |b| {
        let mut feed = Feed::starting_after(1_000, WINDOW);
        let mut i = 0;
        b.iter(|| {
            i += 1;
            let update = feed.tick(tables[i % tables.len()].clone(), 10 + (i as u32 % 2));
            black_box(update.and_then(|u| Published::new(race.clone(), u, encoder.clone())))
        })
    });
    group.bench_function("owner_relay", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            let p = &published[i % published.len()];
            black_box(record::encode(&p.relay_since(p.seq - 1).unwrap()).unwrap())
        })
    });
    group.bench_function("mirror_follow", |b| {
        let mut mirror = seeded.clone();
        let mut i = 0;
        b.iter(|| {
            if i == records.len() {
                mirror = seeded.clone();
                i = 0;
            }
            let tick: RelayedTick = record::decode(&records[i]).unwrap();
            i += 1;
            match mirror.follow(tick) {
                Followed::Tick(update) => {
                    black_box(Published::new(race.clone(), update, encoder.clone()))
                }
                other => panic!("every relayed tick follows the last: {other:?}"),
            };
        })
    });
    group.finish();
}

criterion_group!(benches, relay);
criterion_main!(benches);
