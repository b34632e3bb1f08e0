//! Speed of our cache against moka, quick_cache and the floor, side by side (see
//! `workload/mod.rs` for the workload and the candidates). Groups, each with one
//! benchmark per candidate (`coordinator-cache`, `moka`, `quick_cache`, `floor`):
//!
//! - `hit/1-thread`: `register_stream` on one of 10,000 cached keys, random order,
//!   with requests built independently of those that filled the cache (no
//!   allocation shared between a lookup and the stored key, so keys are compared
//!   as text, as in a collector that decodes each request from a bundle);
//! - `hit/1-thread-long-keys`: `hit/1-thread` with 79-byte paths, longer than
//!   the keys our slots keep a copy of (so ours compares the kept state's
//!   path, as for most real streams);
//! - `hit/1-thread-same-requests`: the same, but looking up with the very
//!   requests that filled the cache (their project and path `Arc`s are the
//!   stored key's): flatters whoever skips comparing a pointer-equal key; kept
//!   only for comparison with older reports;
//! - `hit/2-threads`: `hit/1-thread` from two threads at once (one iteration is
//!   one call on each thread; throughput counts both: the aggregate);
//! - `mixed/95-hit-5-miss`: one thread, 19 hits (as `hit/1-thread`) then one
//!   `register_stream` of a stream never seen (a miss that inserts), repeated;
//! - `miss`: `register_stream` on keys never seen, zero-latency inner coordinator
//!   (a fresh cache per 65,536 keys, built and dropped outside the timing);
//! - `miss/full-cache`: the same on a cache of 16,384 entries filled beforehand
//!   (outside the timing), so that every miss evicts an entry (the floor never
//!   evicts: its row is the insert alone);
//! - `coalesce/10000-callers-1ms`: 10,000 tasks on a 2-worker Tokio runtime
//!   register one key against an inner call that takes 1 ms; records the inner
//!   calls each candidate made (ours must make exactly one).
//!
//! Run: `cargo bench -p coordinator-cache --bench cache -- --warm-up-time 1 --measurement-time 3`
//! (or `cargo xtask bench --compare`).

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

mod workload;

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use coordinator_api::{Coordinator, RegisterRequest};
use coordinator_cache::DEFAULT_SIZE;
use criterion::{
    BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime,
};
use parking_lot::Mutex;
use workload::{
    Answers, Candidate, HOT_KEYS, Ours, Remote, long_requests, random_order, record, register,
    requests, state_for,
};

const ORDER_LEN: usize = 1 << 16;
const COALESCE_GROUP: &str = "coalesce/10000-callers-1ms";
const CALLERS: usize = 10_000;
const INNER_LATENCY: Duration = Duration::from_millis(1);

/// How the hit benchmarks' lookups relate to the requests that filled the cache.
#[derive(Clone, Copy)]
enum Lookups {
    /// Built independently: equal keys, no shared allocation.
    Independent,
    /// The very requests that filled the cache.
    SameAsFill,
    /// Built independently, with long paths.
    IndependentLong,
}

/// A cache of every hot key (all calls after this are hits), and the requests to
/// look them up with.
fn warm<C: Candidate>(lookups: Lookups) -> (Arc<Remote>, C, Vec<RegisterRequest>) {
    let inner = Arc::new(Remote::immediate(Answers::PerKey));
    let cache = C::build(Arc::clone(&inner), DEFAULT_SIZE);
    let keys = 0..HOT_KEYS as u64;
    let fill = match lookups {
        Lookups::IndependentLong => long_requests(keys.clone()),
        _ => requests(keys.clone()),
    };
    for r in &fill {
        register(&cache, r);
    }
    cache.settle();
    let hot = match lookups {
        Lookups::Independent => requests(keys),
        Lookups::IndependentLong => long_requests(keys),
        Lookups::SameAsFill => fill,
    };
    (inner, cache, hot)
}

fn hit_1_thread<C: Candidate>(group: &mut BenchmarkGroup<'_, WallTime>, lookups: Lookups) {
    let (inner, cache, hot) = warm::<C>(lookups);
    let order = random_order(HOT_KEYS, ORDER_LEN, 1);
    let calls = inner.calls();
    group.bench_function(C::NAME, |b| {
        let mut i = 0usize;
        b.iter(|| {
            let r = &hot[order[i & (ORDER_LEN - 1)] as usize];
            i = i.wrapping_add(1);
            black_box(register(&cache, r))
        })
    });
    assert_eq!(inner.calls(), calls, "{}: every call was a hit", C::NAME);
}

fn hit_2_threads<C: Candidate>(group: &mut BenchmarkGroup<'_, WallTime>) {
    let (inner, cache, hot) = warm::<C>(Lookups::Independent);
    let orders = [
        random_order(HOT_KEYS, ORDER_LEN, 2),
        random_order(HOT_KEYS, ORDER_LEN, 3),
    ];
    let calls = inner.calls();
    group.bench_function(C::NAME, |b| {
        b.iter_custom(|iters| {
            let start = Barrier::new(3);
            std::thread::scope(|s| {
                for order in &orders {
                    let (cache, hot, start) = (&cache, &hot, &start);
                    s.spawn(move || {
                        start.wait();
                        for i in 0..iters as usize {
                            black_box(register(cache, &hot[order[i & (ORDER_LEN - 1)] as usize]));
                        }
                    });
                }
                start.wait();
                // The scope joins both threads before returning.
                Instant::now()
            })
            .elapsed()
        })
    });
    assert_eq!(inner.calls(), calls, "{}: every call was a hit", C::NAME);
}

/// The size of the cache `miss/full-cache` fills before timing.
const FULL_CACHE: usize = 1 << 14;

/// Misses on a fresh cache (`full`: one of [`FULL_CACHE`] entries, filled
/// beforehand, so that every miss evicts).
fn miss<C: Candidate>(group: &mut BenchmarkGroup<'_, WallTime>, full: bool) {
    const POOL: usize = 1 << 16;
    let pool = requests(1_000_000..1_000_000 + POOL as u64);
    let fill = if full {
        requests(3_000_000..3_000_000 + FULL_CACHE as u64)
    } else {
        Vec::new()
    };
    // States are built before timing, one per key, so the timed loop measures the
    // cache's insert path rather than the inner call's allocations.
    let states = pool
        .iter()
        .chain(&fill)
        .map(|r| (r.path.clone(), Arc::new(state_for(r))))
        .collect();
    let inner = Arc::new(Remote::immediate(Answers::Prebuilt(states)));
    group.bench_function(C::NAME, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let n = left.min(POOL);
                // A fresh cache per chunk (not timed), so that every call is a miss.
                let cache = C::build(
                    Arc::clone(&inner),
                    if full { FULL_CACHE } else { DEFAULT_SIZE },
                );
                for r in &fill {
                    register(&cache, r);
                }
                cache.settle();
                let start = Instant::now();
                for r in &pool[..n] {
                    black_box(register(&cache, r));
                }
                total += start.elapsed();
                drop(cache);
                left -= n;
            }
            total
        })
    });
}

/// One miss in every `MIXED_PERIOD` calls (5%).
const MIXED_PERIOD: usize = 20;

fn mixed<C: Candidate>(group: &mut BenchmarkGroup<'_, WallTime>) {
    // New streams per round: a round is `NEW * MIXED_PERIOD` calls on a freshly
    // warmed cache (warmed outside the timing), so every 20th call is a miss.
    const NEW: usize = 1 << 14;
    let pool = requests(2_000_000..2_000_000 + NEW as u64);
    let fill = requests(0..HOT_KEYS as u64);
    let hot = requests(0..HOT_KEYS as u64);
    // Prebuilt answers (no allocation in the inner call), holding the fill's and
    // the pool's own `Arc`s.
    let states = pool
        .iter()
        .chain(&fill)
        .map(|r| (r.path.clone(), Arc::new(state_for(r))))
        .collect();
    let inner = Arc::new(Remote::immediate(Answers::Prebuilt(states)));
    let order = random_order(HOT_KEYS, ORDER_LEN, 4);
    group.bench_function(C::NAME, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let n = left.min(NEW * MIXED_PERIOD);
                let cache = C::build(Arc::clone(&inner), DEFAULT_SIZE);
                for r in &fill {
                    register(&cache, r);
                }
                cache.settle();
                let start = Instant::now();
                for i in 0..n {
                    let r = if i % MIXED_PERIOD == MIXED_PERIOD - 1 {
                        &pool[i / MIXED_PERIOD]
                    } else {
                        &hot[order[i & (ORDER_LEN - 1)] as usize]
                    };
                    black_box(register(&cache, r));
                }
                total += start.elapsed();
                drop(cache);
                left -= n;
            }
            total
        })
    });
}

fn coalesce<C: Candidate>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    runtime: &tokio::runtime::Runtime,
) {
    let request = Arc::new(requests(0..1).remove(0));
    // Inner calls made in each round.
    let rounds = Mutex::new(Vec::new());
    group.bench_function(C::NAME, |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let inner = Arc::new(Remote::delayed(Answers::PerKey, INNER_LATENCY));
                    let cache = Arc::new(C::build(Arc::clone(&inner), 1024));
                    let go = Arc::new(tokio::sync::Barrier::new(CALLERS + 1));
                    let tasks: Vec<_> = (0..CALLERS)
                        .map(|_| {
                            let (cache, request, go) =
                                (Arc::clone(&cache), Arc::clone(&request), Arc::clone(&go));
                            tokio::spawn(async move {
                                go.wait().await;
                                cache.register_stream(&request, workload::DESC).await
                            })
                        })
                        .collect();
                    go.wait().await;
                    let start = Instant::now();
                    for t in tasks {
                        t.await.expect("no panic").expect("registration succeeds");
                    }
                    total += start.elapsed();
                    rounds.lock().push(inner.calls());
                }
                total
            })
        })
    });
    let rounds = rounds.into_inner();
    if rounds.is_empty() {
        return; // Filtered out.
    }
    let max = rounds.iter().copied().max().unwrap_or(0);
    let mean = rounds.iter().sum::<u64>() as f64 / rounds.len() as f64;
    record(
        COALESCE_GROUP,
        C::NAME,
        "inner_calls_max",
        max as f64,
        "calls",
    );
    record(COALESCE_GROUP, C::NAME, "inner_calls_mean", mean, "calls");
    println!(
        "{COALESCE_GROUP}/{}: {CALLERS} callers -> {max} inner calls at most per round ({mean:.1} on average, {} rounds)",
        C::NAME,
        rounds.len()
    );
    if C::NAME == Ours::NAME {
        assert_eq!(max, 1, "{CALLERS} concurrent callers, one inner call");
    }
}

fn hits_and_misses(c: &mut Criterion) {
    let mut group = c.benchmark_group("hit/1-thread");
    group.throughput(Throughput::Elements(1));
    for_each_candidate!(hit_1_thread(&mut group, Lookups::Independent));
    group.finish();

    let mut group = c.benchmark_group("hit/1-thread-long-keys");
    group.throughput(Throughput::Elements(1));
    for_each_candidate!(hit_1_thread(&mut group, Lookups::IndependentLong));
    group.finish();

    let mut group = c.benchmark_group("hit/1-thread-same-requests");
    group.throughput(Throughput::Elements(1));
    for_each_candidate!(hit_1_thread(&mut group, Lookups::SameAsFill));
    group.finish();

    let mut group = c.benchmark_group("hit/2-threads");
    // One iteration is one call on each thread.
    group.throughput(Throughput::Elements(2));
    for_each_candidate!(hit_2_threads(&mut group));
    group.finish();

    let mut group = c.benchmark_group("miss");
    group.throughput(Throughput::Elements(1));
    for_each_candidate!(miss(&mut group, false));
    group.finish();

    let mut group = c.benchmark_group("miss/full-cache");
    group.throughput(Throughput::Elements(1));
    for_each_candidate!(miss(&mut group, true));
    group.finish();

    let mut group = c.benchmark_group("mixed/95-hit-5-miss");
    group.throughput(Throughput::Elements(1));
    for_each_candidate!(mixed(&mut group));
    group.finish();
}

fn coalescing(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("a Tokio runtime");
    let mut group = c.benchmark_group(COALESCE_GROUP);
    group.sample_size(10);
    group.throughput(Throughput::Elements(CALLERS as u64));
    for_each_candidate!(coalesce(&mut group, &runtime));
    group.finish();
}

criterion_group!(benches, hits_and_misses, coalescing);
criterion_main!(benches);
