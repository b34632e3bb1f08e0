//! Speed of the cache against the floor (see `workload/mod.rs` for the workload):
//!
//! - `hit/1-thread`: `register_stream` on one of 10,000 cached keys, random order;
//! - `hit/2-threads`: the same from two threads at once (throughput counts both);
//! - `miss`: `register_stream` on keys never seen, zero-latency inner coordinator;
//! - `coalesce`: 10,000 tasks register one key against a 1 ms inner call (checks
//!   and prints that exactly one inner call was made).
//!
//! Run: `cargo bench -p coordinator-cache --bench cache -- --warm-up-time 1 --measurement-time 3`.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

mod workload;

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use coordinator_api::Coordinator;
use coordinator_cache::{CachedCoordinator, DEFAULT_SIZE};
use coordinator_testkit::{FakeCoordinator, Operation};
use criterion::{
    BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime,
};
use workload::{
    Answers, Candidate, Floor, HOT_KEYS, ZeroLatency, random_order, register, requests,
};

type Cached = CachedCoordinator<Arc<ZeroLatency>>;

const ORDER_LEN: usize = 1 << 16;

/// A cache of every hot key (all calls after this are hits).
fn warm<C: Candidate>() -> (Arc<ZeroLatency>, C, Vec<coordinator_api::RegisterRequest>) {
    let inner = Arc::new(ZeroLatency::new(Answers::PerKey));
    let cache = C::build(Arc::clone(&inner), DEFAULT_SIZE);
    let hot = requests(0..HOT_KEYS as u64);
    for r in &hot {
        register(&cache, r);
    }
    (inner, cache, hot)
}

fn hit_1_thread<C: Candidate>(group: &mut BenchmarkGroup<'_, WallTime>) {
    let (inner, cache, hot) = warm::<C>();
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

fn hit_2_threads<C: Candidate + Sync>(group: &mut BenchmarkGroup<'_, WallTime>) {
    let (inner, cache, hot) = warm::<C>();
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
                let t = Instant::now();
                // The scope joins both threads before returning.
                t
            })
            .elapsed()
        })
    });
    assert_eq!(inner.calls(), calls, "{}: every call was a hit", C::NAME);
}

fn miss<C: Candidate>(group: &mut BenchmarkGroup<'_, WallTime>) {
    const POOL: usize = 1 << 16;
    let pool = requests(1_000_000..1_000_000 + POOL as u64);
    let template = Arc::new(workload::state_for(&pool[0]));
    let inner = Arc::new(ZeroLatency::new(Answers::Shared(template)));
    group.bench_function(C::NAME, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let n = left.min(POOL);
                // A fresh cache per chunk (not timed), so that every call is a miss.
                let cache = C::build(Arc::clone(&inner), DEFAULT_SIZE);
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

fn coalesce(c: &mut Criterion) {
    const CALLERS: usize = 10_000;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let request = Arc::new(requests(0..1).remove(0));
    let mut group = c.benchmark_group("coalesce");
    group.sample_size(10);
    group.throughput(Throughput::Elements(CALLERS as u64));
    let mut reported = false;
    group.bench_function("10000-callers-1ms-inner", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let fake = FakeCoordinator::new();
                    fake.set_latency(Duration::from_millis(1));
                    let cache = Arc::new(CachedCoordinator::new(fake.clone(), 0, Duration::ZERO));
                    let go = Arc::new(tokio::sync::Barrier::new(CALLERS + 1));
                    let tasks: Vec<_> = (0..CALLERS)
                        .map(|_| {
                            let (cache, request, go) = (Arc::clone(&cache), Arc::clone(&request), Arc::clone(&go));
                            tokio::spawn(async move {
                                go.wait().await;
                                cache.register_stream(&request, workload::DESC).await
                            })
                        })
                        .collect();
                    go.wait().await;
                    let start = Instant::now();
                    for t in tasks {
                        t.await.unwrap().unwrap();
                    }
                    total += start.elapsed();
                    let inner_calls = fake.calls(Operation::Register).started;
                    assert_eq!(inner_calls, 1, "10,000 concurrent callers, one inner call");
                    if !reported {
                        reported = true;
                        let stats = cache.stats();
                        println!(
                            "coalesce: {CALLERS} callers -> {inner_calls} inner call; {} coalesced waits, {} hits after the answer",
                            stats.coalesced_waits,
                            stats.hits - stats.coalesced_waits,
                        );
                    }
                }
                total
            })
        })
    });
    group.finish();
}

fn hits_and_misses(c: &mut Criterion) {
    let mut group = c.benchmark_group("hit/1-thread");
    group.throughput(Throughput::Elements(1));
    hit_1_thread::<Floor>(&mut group);
    hit_1_thread::<Cached>(&mut group);
    group.finish();

    let mut group = c.benchmark_group("hit/2-threads");
    // One iteration is one call on each thread.
    group.throughput(Throughput::Elements(2));
    hit_2_threads::<Floor>(&mut group);
    hit_2_threads::<Cached>(&mut group);
    group.finish();

    let mut group = c.benchmark_group("miss");
    group.throughput(Throughput::Elements(1));
    miss::<Floor>(&mut group);
    miss::<Cached>(&mut group);
    group.finish();
}

criterion_group!(benches, hits_and_misses, coalesce);
criterion_main!(benches);
