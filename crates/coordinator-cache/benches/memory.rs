//! Resident memory per entry with 1,048,576 entries (issue 3's workload), for each
//! implementation, each measured in a fresh child process from the growth of its
//! resident set (`/proc/self/statm`).
//!
//! - `payload`: the keys and states alone, held in a `Vec` (what any cache must
//!   keep: path `Arc`, state `Arc` with its 32-hex ID `Arc`, plus 40 bytes of
//!   handles);
//! - `floor`: the plain sharded hash table of `workload::Floor`;
//! - `coordinator-cache`: `CachedCoordinator` with `size = 1 << 20`.
//!
//! Run: `cargo bench -p coordinator-cache --bench memory`.

mod workload;

use std::process::Command;
use std::sync::Arc;

use coordinator_api::{LogStreamState, ProjectName, StreamPath};
use coordinator_cache::CachedCoordinator;
use workload::{Answers, Candidate, Floor, ZeroLatency, register, requests};

const ENTRIES: usize = 1 << 20;

/// Resident bytes of this process.
fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // The page size is 4 KiB on the machines this runs on (x86-64 Linux).
    pages * 4096
}

fn fill<C: Candidate>() -> usize {
    let inner = Arc::new(ZeroLatency::new(Answers::PerKey));
    let before = resident_bytes();
    let cache = C::build(Arc::clone(&inner), ENTRIES);
    for chunk in 0..(ENTRIES / 4096) as u64 {
        // Requests are made in small batches and dropped: the cache keeps what it
        // needs (the key's `Arc`s).
        for r in requests(chunk * 4096..(chunk + 1) * 4096) {
            register(&cache, &r);
        }
    }
    let after = resident_bytes();
    assert_eq!(inner.calls(), ENTRIES as u64);
    std::hint::black_box(&cache);
    after - before
}

fn payload() -> usize {
    let inner = ZeroLatency::new(Answers::PerKey);
    let before = resident_bytes();
    let mut kept: Vec<(ProjectName, StreamPath, Arc<LogStreamState>)> = Vec::with_capacity(ENTRIES);
    for chunk in 0..(ENTRIES / 4096) as u64 {
        for r in requests(chunk * 4096..(chunk + 1) * 4096) {
            let state = register(&inner, &r);
            kept.push((r.project, r.path, state));
        }
    }
    let after = resident_bytes();
    std::hint::black_box(&kept);
    after - before
}

fn measure(name: &str) {
    let bytes = match name {
        "payload" => payload(),
        "floor" => fill::<Floor>(),
        "coordinator-cache" => fill::<CachedCoordinator<Arc<ZeroLatency>>>(),
        other => panic!("unknown implementation {other}"),
    };
    println!(
        "memory/{name}: {:.1} resident bytes per entry ({} entries, {:.1} MiB)",
        bytes as f64 / ENTRIES as f64,
        ENTRIES,
        bytes as f64 / (1 << 20) as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--measure") {
        measure(&args[i + 1]);
        return;
    }
    // `cargo bench` passes `--bench`; a name filter may follow.
    let filter = args.iter().skip(1).find(|a| !a.starts_with("--"));
    let exe = std::env::current_exe().unwrap();
    for name in ["payload", "floor", "coordinator-cache"] {
        if filter.is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let out = Command::new(&exe)
            .args(["--measure", name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}
