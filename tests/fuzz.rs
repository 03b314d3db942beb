//! The fuzzing harness's short run (issue 14): every target of `peloton::fuzz` on inputs
//! mutated from valid seeds, checking that nothing panics, that the invariants hold, and
//! that no input makes more bytes live than its target's linear budget.
//!
//! `FUZZ_ITERATIONS` sets the inputs per target (defaults keep the file under a minute in
//! a debug build), `FUZZ_SEED` the generator seed (default fixed, so CI is reproducible).
//! A finding is written to `target/fuzz-findings/` and replays with
//! `cargo run --release --example fuzz -- replay <target> <file>`. The long runs
//! (millions of inputs per decoder) are in BENCHMARKS.md.

use peloton::fuzz::{shrink_gpx, CountingAllocator, Generator, Target};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// A real recorded ride, cut to a few dozen points: namespaces, extensions and times as
/// devices write them.
fn real_gpx_seed() -> Option<Vec<u8>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/gpx/out-and-back-ljubljana.gpx");
    std::fs::read(path).ok().map(|bytes| shrink_gpx(&bytes, 40))
}

fn iterations(default: u64) -> u64 {
    std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn seed() -> u64 {
    std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(14)
}

fn generator(target: Target, seed: u64) -> Generator {
    let mut generator = Generator::new(target, seed);
    if target == Target::Gpx {
        if let Some(real) = real_gpx_seed() {
            generator.add_seed(real);
        }
    }
    generator
}

/// Runs `target` on `default` inputs (or `FUZZ_ITERATIONS`); fails on the first panic or
/// memory overrun, saving the input.
fn fuzz(target: Target, default: u64) {
    let (seed, n) = (seed(), iterations(default));
    let mut generator = generator(target, seed);
    let mut input = Vec::new();
    let mut worst = (0usize, 0usize);
    for i in 0..n {
        generator.next_into(&mut input);
        let (outcome, peak) =
            CountingAllocator::measure(|| catch_unwind(AssertUnwindSafe(|| target.run(&input))));
        if outcome.is_err() || peak > target.memory_budget(input.len()) {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-findings");
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("{}-seed{seed}-iter{i}.bin", target.name()));
            let _ = std::fs::write(&file, &input);
            panic!(
                "{} input {i} (seed {seed}, {} bytes, saved to {}): {}; starts {:?}",
                target.name(),
                input.len(),
                file.display(),
                if outcome.is_err() {
                    "panicked".to_string()
                } else {
                    format!(
                        "{peak} bytes live, budget {}",
                        target.memory_budget(input.len())
                    )
                },
                String::from_utf8_lossy(&input[..input.len().min(200)])
            );
        }
        worst = worst.max((peak, input.len()));
    }
    eprintln!(
        "{}: {n} inputs, seed {seed}, most live {} bytes (input of {} bytes)",
        target.name(),
        worst.0,
        worst.1
    );
}

#[test]
fn every_seed_is_accepted_so_mutations_start_from_valid_inputs() {
    use peloton::actors::patrol::import::{parse_import, ImportKind};
    use peloton::cli::racers::parse_csv;
    use peloton::geo::Course;
    use peloton::net::codec::Codec;

    for seed in Target::BinaryClient.seeds() {
        Codec::Binary.decode_client(&seed).unwrap();
    }
    for seed in Target::JsonClient.seeds() {
        Codec::Json.decode_client(&seed).unwrap();
    }
    // One seed per request type and codec: the whole v1 request model is covered.
    assert_eq!(
        Target::BinaryClient.seeds().len(),
        peloton::net::protocol::Request::TYPES.len()
    );
    for seed in Target::BinaryServer.seeds() {
        Codec::Binary.decode_server(&seed).unwrap();
    }
    for seed in Target::JsonServer.seeds() {
        Codec::Json.decode_server(&seed).unwrap();
    }
    for seed in generator(Target::Gpx, 0).seeds() {
        let course = Course::from_gpx(seed, 200_000).unwrap();
        assert!(course.points.len() >= 3);
    }
    assert!(real_gpx_seed().is_some(), "the recorded rides are missing");
    let kinds = [
        ImportKind::Officers,
        ImportKind::Offers,
        ImportKind::Charities,
    ];
    for (target, format) in [(Target::ImportCsv, "csv"), (Target::ImportJson, "json")] {
        for (kind, seed) in kinds.into_iter().zip(target.seeds()) {
            let report = parse_import(kind, &seed, Some(format), |_| {}).unwrap();
            assert!(
                report.problems.is_empty(),
                "{kind:?}: {:?}",
                report.problems
            );
            assert!(report.rows.len() >= 2);
        }
    }
    assert_eq!(
        parse_csv("seed", &Target::RacersCsv.seeds()[0])
            .unwrap()
            .racers
            .len(),
        3
    );
    let keys = peloton::auth::Keys::from_secret(peloton::fuzz::TOKEN_SECRET, 0).unwrap();
    for seed in Target::Token.seeds() {
        keys.verify(std::str::from_utf8(&seed).unwrap()).unwrap();
    }
    for seed in Target::TokenClaims.seeds() {
        keys.verify(&peloton::fuzz::sign_payload(&seed)).unwrap();
    }
}

#[test]
fn a_few_bytes_never_claim_much_memory() {
    use peloton::net::codec::Codec;
    // A string claiming 47 MB (found by this harness): the bincode limit follows the
    // frame's size, so the claim is refused before anything like it is allocated.
    let claim = [7u8, 6, 252, 0xa0, 0xd5, 0xcd, 0x02, 1, 0, 0, 0, b'A'];
    let (_, peak) = CountingAllocator::measure(|| Codec::Binary.decode_client(&claim));
    assert!(peak < 64 * 1024, "{peak} bytes for a 12-byte frame");
    // A sequence claiming 2^60 fixes: serde preallocates at most 1 MiB, whatever the claim.
    let mut fixes = vec![7u8, 12];
    fixes.extend([253, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    let (_, peak) = CountingAllocator::measure(|| Codec::Binary.decode_client(&fixes));
    assert!(
        peak <= 1024 * 1024 + 4096,
        "{peak} bytes for an 11-byte frame"
    );
}

#[test]
fn binary_client_frames() {
    fuzz(Target::BinaryClient, 250_000);
}

#[test]
fn json_client_frames() {
    fuzz(Target::JsonClient, 120_000);
}

#[test]
fn binary_server_frames() {
    fuzz(Target::BinaryServer, 120_000);
}

#[test]
fn json_server_frames() {
    fuzz(Target::JsonServer, 60_000);
}

#[test]
fn gpx_courses_and_rides() {
    fuzz(Target::Gpx, 8_000);
}

#[test]
fn directory_imports_as_csv() {
    fuzz(Target::ImportCsv, 40_000);
}

#[test]
fn directory_imports_as_json() {
    fuzz(Target::ImportJson, 20_000);
}

#[test]
fn racer_rosters() {
    fuzz(Target::RacersCsv, 40_000);
}

#[test]
fn tokens() {
    fuzz(Target::Token, 40_000);
}

#[test]
fn signed_token_claims() {
    fuzz(Target::TokenClaims, 40_000);
}
