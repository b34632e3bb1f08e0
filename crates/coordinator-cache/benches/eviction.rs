//! Eviction quality: the hit ratio of our cache, a true LRU and quick_cache on
//! a collector-like trace, at cache sizes from 10% to 100% of the trace's
//! working set (its distinct streams). No timing, and the trace and the LRU's
//! figures are the same on every run. Ours and quick_cache's move by a few
//! hundredths of a point between runs: each seeds its hasher at random, which
//! places keys in shards (ours) and in ghost buckets.
//!
//! `COORDINATOR_EVICTION_SEED=N` (or `cargo xtask bench --eviction
//! --trace-seed N`) draws another trace of the same shape; 0, the default, is
//! the trace of the reports.
//!
//! # The trace
//!
//! [`STREAMS`] streams arrive at uniformly random times over the trace. Each
//! stream gets a Zipf-distributed number of bundles (exponent [`ZIPF_S`], 1 to
//! [`MAX_BUNDLES`]: most streams are seen a few times, a few thousands of times),
//! sent one every `gap` time units after its arrival (`gap` random per stream, 1
//! to [`MAX_GAP`]), as a collector sees a stream's bundles while it is written.
//! Every bundle is one `register_stream` of its stream; the events are replayed
//! in time order.
//!
//! # Candidates
//!
//! - `coordinator-cache`: [`CachedCoordinator`](coordinator_cache::CachedCoordinator)
//!   itself, built as the benches build it (default shards for the size), in
//!   front of an inner coordinator that counts calls: a miss is an inner call;
//! - `lru`: an exact LRU (a hash map of last-use ticks and an ordered map of
//!   ticks), evicting the least recently used entry;
//! - `quick_cache`: `quick_cache::sync::Cache` with the same capacity (its
//!   CLOCK-Pro-like policy), keyed by stream number.
//!
//! Records `hit_ratio` (percent of calls answered without an inner call) per
//! size as `eviction/<pct>%` rows (see `workload::record`); `cargo xtask bench
//! --eviction` prints them as a table.
//!
//! Run: `cargo bench -p coordinator-cache --bench eviction` (without `--bench`,
//! as `cargo test --benches` runs it, a smaller trace checks itself).

mod workload;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use workload::{Answers, Candidate, Ours, Remote, mix, record, register, requests};

const STREAMS: usize = 50_000;
const ZIPF_S: f64 = 1.2;
const MAX_BUNDLES: u64 = 1_000;
const MAX_GAP: u64 = 20_000;
/// The span of arrival times.
const ARRIVALS: u64 = 200_000;
/// Cache sizes, in percent of the working set.
const SIZES: [usize; 7] = [10, 20, 30, 40, 50, 75, 100];

/// The trace drawn with `seed` (0: the reports' trace): stream numbers in call
/// order, and the number of distinct streams.
fn trace(streams: usize, seed: u64) -> (Vec<u32>, usize) {
    // Zipf over 1..=MAX_BUNDLES by inverse CDF.
    let weights: Vec<f64> = (1..=MAX_BUNDLES)
        .map(|k| 1.0 / (k as f64).powf(ZIPF_S))
        .collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(weights.len());
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cdf.push(acc);
    }
    // Seed 0 leaves every draw as it was; another seed changes every one.
    let seed = seed << 40;
    let draw = |x: u64| mix(seed ^ x);
    let uniform = |x: u64| (draw(x) >> 11) as f64 / (1u64 << 53) as f64;
    let mut events: Vec<(u64, u32)> = Vec::new();
    for s in 0..streams as u64 {
        let bundles = cdf.partition_point(|&c| c < uniform(s * 3)) as u64 + 1;
        let arrival = draw(s * 3 + 1) % ARRIVALS;
        let gap = 1 + draw(s * 3 + 2) % MAX_GAP;
        events.extend((0..bundles).map(|j| (arrival + j * gap, s as u32)));
    }
    events.sort_unstable();
    (events.into_iter().map(|(_, s)| s).collect(), streams)
}

/// An exact LRU of `capacity` stream numbers; returns the hits over `trace`.
fn lru_hits(trace: &[u32], capacity: usize) -> u64 {
    let mut last_use: HashMap<u32, u64> = HashMap::with_capacity(capacity);
    let mut order: BTreeMap<u64, u32> = BTreeMap::new();
    let mut hits = 0;
    for (tick, &s) in trace.iter().enumerate() {
        let tick = tick as u64;
        match last_use.insert(s, tick) {
            Some(old) => {
                hits += 1;
                order.remove(&old);
            }
            None => {
                if order.len() >= capacity
                    && let Some((_, victim)) = order.pop_first()
                {
                    last_use.remove(&victim);
                }
            }
        }
        order.insert(tick, s);
    }
    hits
}

/// quick_cache with `capacity` entries; returns the hits over `trace`.
fn quick_cache_hits(trace: &[u32], capacity: usize) -> u64 {
    let cache = quick_cache::sync::Cache::<u32, ()>::new(capacity);
    let mut hits = 0;
    for &s in trace {
        if cache.get(&s).is_some() {
            hits += 1;
        } else {
            cache.insert(s, ());
        }
    }
    hits
}

/// Our cache with `capacity` entries; returns the hits over `trace`.
fn our_hits(trace: &[u32], streams: usize, capacity: usize) -> u64 {
    let requests = requests(0..streams as u64);
    let inner = Arc::new(Remote::immediate(Answers::PerKey));
    let cache = Ours::build(Arc::clone(&inner), capacity);
    for &s in trace {
        register(&cache, &requests[s as usize]);
    }
    assert!(cache.entries() <= capacity as u64);
    trace.len() as u64 - inner.calls()
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let streams = if bench { STREAMS } else { STREAMS / 25 };
    let seed = match std::env::var("COORDINATOR_EVICTION_SEED") {
        Ok(text) => text
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("COORDINATOR_EVICTION_SEED={text:?}: not a number")),
        Err(_) => 0,
    };
    let (trace, working_set) = trace(streams, seed);
    println!(
        "eviction: {} calls over {working_set} streams (Zipf {ZIPF_S} bundles per stream, trace seed {seed})",
        trace.len()
    );
    println!(
        "{:>6}  {:>8}  {:>18}  {:>8}  {:>11}",
        "size", "entries", "coordinator-cache", "lru", "quick_cache"
    );
    for pct in SIZES {
        let capacity = (working_set * pct / 100).max(1);
        let ratio = |hits: u64| 100.0 * hits as f64 / trace.len() as f64;
        let ours = ratio(our_hits(&trace, working_set, capacity));
        let lru = ratio(lru_hits(&trace, capacity));
        let qc = ratio(quick_cache_hits(&trace, capacity));
        println!("{pct:>5}%  {capacity:>8}  {ours:>17.2}%  {lru:>7.2}%  {qc:>10.2}%");
        let workload = format!("eviction/{pct}%");
        for (candidate, value) in [(Ours::NAME, ours), ("lru", lru), ("quick_cache", qc)] {
            record(&workload, candidate, "hit_ratio", value, "%");
        }
    }
}
