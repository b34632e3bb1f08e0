//! Resident memory per entry with 1,048,576 entries (issue 3's workload), for each
//! implementation, each measured in a fresh child process from the growth of its
//! resident set (`/proc/self/statm`), divided by the entries it holds at the end:
//!
//! - `payload`: the keys and states alone, held in a `Vec` (what any cache must
//!   keep: the path's text, the state `Arc` with its 32-hex ID packed inside,
//!   plus the handles);
//! - `coordinator-cache`, `moka`, `quick_cache`, `floor`: the candidates of
//!   `workload/mod.rs`, each built with `size = 1 << 20` and sent one register per
//!   key (every one a miss).
//!
//! Records `resident_bytes_per_entry` and `entries_held` per implementation (see
//! `workload::record`). A name filter (substring of `memory/<name>`) selects
//! some. Without `--bench` (as `cargo test --benches` runs it) it checks itself on
//! 16,384 entries instead.
//!
//! Run: `cargo bench -p coordinator-cache --bench memory [-- <filter>]`.

mod workload;

use std::process::Command;
use std::sync::Arc;

use coordinator_api::{LogStreamState, ProjectName, StreamPath};
use workload::{
    Answers, Candidate, Floor, MokaCoordinator, Ours, QuickCacheCoordinator, Remote, record,
    register, requests,
};

const ENTRIES: usize = 1 << 20;
const TEST_ENTRIES: usize = 1 << 14;
const CHUNK: usize = 4096;
const IMPLEMENTATIONS: [&str; 5] = [
    "payload",
    "coordinator-cache",
    "moka",
    "quick_cache",
    "floor",
];

/// Criterion's options that take a value (skipped when looking for the filter).
const VALUE_OPTIONS: &[&str] = &[
    "--color",
    "--save-baseline",
    "--baseline",
    "--baseline-lenient",
    "--load-baseline",
    "--format",
    "--profile-time",
    "--sample-size",
    "--warm-up-time",
    "--measurement-time",
    "--nresamples",
    "--noise-threshold",
    "--confidence-level",
    "--significance-level",
    "--plotting-backend",
    "--output-format",
];

/// Resident bytes of this process.
fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // The page size is 4 KiB on the machines this runs on (x86-64 Linux).
    pages * 4096
}

/// Fills a fresh `C` with `entries` keys; returns (resident growth, entries held).
fn fill<C: Candidate>(entries: usize) -> (usize, u64) {
    let inner = Arc::new(Remote::immediate(Answers::PerKey));
    let before = resident_bytes();
    let cache = C::build(Arc::clone(&inner), ENTRIES);
    for chunk in 0..(entries / CHUNK) as u64 {
        // Requests are made in small batches and dropped: the cache keeps what it
        // needs (the key's `Arc`s).
        for r in requests(chunk * CHUNK as u64..(chunk + 1) * CHUNK as u64) {
            register(&cache, &r);
        }
    }
    cache.settle();
    let after = resident_bytes();
    assert_eq!(
        inner.calls(),
        entries as u64,
        "{}: every register was a miss",
        C::NAME
    );
    let held = cache.entries();
    std::hint::black_box(&cache);
    (after - before, held)
}

fn payload(entries: usize) -> (usize, u64) {
    let inner = Remote::immediate(Answers::PerKey);
    let before = resident_bytes();
    let mut kept: Vec<(ProjectName, StreamPath, Arc<LogStreamState>)> = Vec::with_capacity(entries);
    for chunk in 0..(entries / CHUNK) as u64 {
        for r in requests(chunk * CHUNK as u64..(chunk + 1) * CHUNK as u64) {
            let state = register(&inner, &r);
            kept.push((r.project, r.path, state));
        }
    }
    let after = resident_bytes();
    std::hint::black_box(&kept);
    (after - before, kept.len() as u64)
}

fn measure(name: &str, entries: usize) {
    let (bytes, held) = match name {
        "payload" => payload(entries),
        "coordinator-cache" => fill::<Ours>(entries),
        "moka" => fill::<MokaCoordinator>(entries),
        "quick_cache" => fill::<QuickCacheCoordinator>(entries),
        "floor" => fill::<Floor>(entries),
        other => panic!("unknown implementation {other}"),
    };
    assert!(held > 0, "{name}: holds no entries");
    let workload = format!("memory/{entries}-entries");
    record(
        &workload,
        name,
        "resident_bytes_per_entry",
        bytes as f64 / held as f64,
        "B",
    );
    record(&workload, name, "entries_held", held as f64, "entries");
    println!(
        "memory/{name}: {:.1} resident bytes per entry ({held} of {entries} entries held, {:.1} MiB)",
        bytes as f64 / held as f64,
        bytes as f64 / (1 << 20) as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--measure") {
        let entries = args
            .get(i + 2)
            .and_then(|n| n.parse().ok())
            .unwrap_or(ENTRIES);
        measure(&args[i + 1], entries);
        return;
    }
    let bench = args.iter().any(|a| a == "--bench");
    let mut filter = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if VALUE_OPTIONS.contains(&arg.as_str()) {
            rest.next();
        } else if !arg.starts_with('-') {
            filter = Some(arg.as_str());
        }
    }
    let entries = if bench { ENTRIES } else { TEST_ENTRIES };
    let exe = std::env::current_exe().unwrap();
    for name in IMPLEMENTATIONS {
        if filter.is_some_and(|f| !format!("memory/{name}").contains(f)) {
            continue;
        }
        let out = Command::new(&exe)
            .args(["--measure", name, &entries.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "memory/{name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}
