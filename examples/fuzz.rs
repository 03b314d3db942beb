//! The long fuzzing run (issue 14): one target of `peloton::fuzz` for many inputs.
//!
//! ```text
//! cargo run --release --example fuzz -- <target|all> <iterations> [seed]
//! cargo run --release --example fuzz -- replay <target> <file>
//! ```
//!
//! Prints inputs per second and the most bytes one input made live; on a panic or a
//! memory overrun it writes the input to `target/fuzz-findings/` and exits 1, so the finding
//! replays with the same seed. Targets: binary_client, json_client, binary_server,
//! json_server, gpx, import_csv, import_json, racers_csv, token, token_claims.

use peloton::fuzz::{shrink_gpx, CountingAllocator, Generator, Target};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        let names: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
        eprintln!(
            "usage: fuzz <target|all> <iterations> [seed] | fuzz replay <target> <file>\ntargets: {}",
            names.join(", ")
        );
        ExitCode::from(2)
    };
    if let [mode, name, file] = args.as_slice() {
        if mode == "replay" {
            let (Some(target), Ok(input)) = (Target::parse(name), std::fs::read(file)) else {
                return usage();
            };
            let (_, peak) = CountingAllocator::measure(|| target.run(&input));
            println!(
                "{}: {file} ({} bytes) passed; {peak} bytes live at most",
                target.name(),
                input.len()
            );
            return ExitCode::SUCCESS;
        }
    }
    let (Some(name), Some(Ok(iterations))) = (args.first(), args.get(1).map(|n| n.parse())) else {
        return usage();
    };
    let seed = match args.get(2).map(|s| s.parse::<u64>()) {
        None => 1,
        Some(Ok(seed)) => seed,
        Some(Err(_)) => return usage(),
    };
    let targets: Vec<Target> = if name == "all" {
        Target::ALL.to_vec()
    } else {
        match Target::parse(name) {
            Some(target) => vec![target],
            None => return usage(),
        }
    };
    for target in targets {
        if !run(target, iterations, seed) {
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

/// Runs one target; false when it found something.
fn run(target: Target, iterations: u64, seed: u64) -> bool {
    let mut generator = Generator::new(target, seed);
    if target == Target::Gpx {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/data/gpx/out-and-back-ljubljana.gpx");
        if let Ok(real) = std::fs::read(path) {
            generator.add_seed(shrink_gpx(&real, 40));
        }
    }
    let started = Instant::now();
    let mut input = Vec::new();
    let (mut worst, mut bytes) = ((0usize, 0usize), 0u64);
    let report_every = (iterations / 10).max(1);
    for i in 0..iterations {
        generator.next_into(&mut input);
        bytes += input.len() as u64;
        let (outcome, peak) =
            CountingAllocator::measure(|| catch_unwind(AssertUnwindSafe(|| target.run(&input))));
        let budget = target.memory_budget(input.len());
        if outcome.is_err() || peak > budget {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-findings");
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("{}-seed{seed}-iter{i}.bin", target.name()));
            let saved = std::fs::write(&file, &input).is_ok();
            eprintln!(
                "{}: FINDING at input {i} (seed {seed}, {} bytes): {}; {}",
                target.name(),
                input.len(),
                if outcome.is_err() {
                    "panicked".to_string()
                } else {
                    format!("{peak} bytes live, budget {budget}")
                },
                if saved {
                    format!("saved to {}", file.display())
                } else {
                    "could not save it".to_string()
                }
            );
            return false;
        }
        worst = worst.max((peak, input.len()));
        if (i + 1) % report_every == 0 {
            eprintln!(
                "{}: {} inputs, {:.0}/s",
                target.name(),
                i + 1,
                (i + 1) as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}: {iterations} inputs (seed {seed}, mean {} bytes) in {secs:.1} s = {:.0} inputs/s; \
         most live per input {} bytes (input of {} bytes); 0 panics",
        target.name(),
        bytes / iterations.max(1),
        iterations as f64 / secs,
        worst.0,
        worst.1
    );
    true
}
