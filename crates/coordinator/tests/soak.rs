//! Bounded memory: a soak test that pushes 4× the cache's size of distinct
//! streams through a `CachedCoordinator` and checks that the entry count never
//! exceeds the bound and that resident memory plateaus once the cache is full.
//!
//! Ignored by default (it measures the process's memory, so it wants a process
//! of its own and a release build). Run it with
//!
//! ```text
//! cargo test --release -p coordinator --test soak -- --ignored --nocapture
//! ```
//!
//! (`cargo xtask soak` runs exactly that). It prints the figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use coordinator::{
    Coordinator, CoordinatorFuture, Error, LogStreamState, MessageIndex, PrefixSecret, ProjectName,
    RegisterRequest, StreamId, StreamPath, TerminateRequest,
};
use coordinator_cache::CachedCoordinator;

/// The cache's bound, unless `COORDINATOR_SOAK_SIZE` says otherwise.
const DEFAULT_SIZE: usize = 65_536;

const TASKS: usize = 8;

/// Resident memory may grow by at most this fraction of what filling the cache
/// took, between 2× and 4× the bound. An unbounded cache would grow by about
/// twice what filling took.
const PLATEAU_MARGIN: f64 = 0.10;

/// A remote that answers at once and keeps nothing: all memory growth is the
/// cache's.
struct Remote {
    registers: AtomicU64,
    terminates: AtomicU64,
}

impl Coordinator for Remote {
    fn register_stream<'a>(
        &'a self,
        request: &'a RegisterRequest,
        _desc: &'a [u8],
    ) -> CoordinatorFuture<'a, Result<Arc<LogStreamState>, Error>> {
        self.registers.fetch_add(1, Ordering::Relaxed);
        let id = StreamId::for_path(&request.path);
        CoordinatorFuture::ready(Ok(Arc::new(LogStreamState::from_request(request, id))))
    }

    fn terminate_stream<'a>(
        &'a self,
        _request: &'a TerminateRequest,
    ) -> CoordinatorFuture<'a, Result<(), Error>> {
        self.terminates.fetch_add(1, Ordering::Relaxed);
        CoordinatorFuture::ready(Ok(()))
    }
}

/// Resident set size of this process, in KiB (`VmRSS` in /proc/self/status).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

fn path(i: usize) -> StreamPath {
    format!("builds/b{}/+/steps/step-{i}/stdout", i / 1000)
        .parse()
        .unwrap()
}

/// What one collector does with stream `i`: register it, see it again (a
/// hit), and terminate every other one.
async fn visit(
    cache: &CachedCoordinator<Arc<Remote>>,
    project: &ProjectName,
    secret: &PrefixSecret,
    i: usize,
) {
    let request = RegisterRequest::new(project.clone(), path(i), secret.clone());
    let state = cache.register_stream(&request, b"desc").await.unwrap();
    let again = cache.register_stream(&request, b"desc").await.unwrap();
    assert_eq!(state.id, again.id);
    if i.is_multiple_of(2) {
        let terminate = TerminateRequest::for_state(&state, MessageIndex::from(9));
        cache.terminate_stream(&terminate).await.unwrap();
    }
}

#[test]
#[ignore = "a soak test: run with --release -- --ignored (see the file's docs)"]
fn entries_stay_bounded_and_memory_plateaus() {
    let size: usize = std::env::var("COORDINATOR_SOAK_SIZE")
        .map(|v| v.parse().expect("COORDINATOR_SOAK_SIZE is a number"))
        .unwrap_or(DEFAULT_SIZE);
    assert!(size >= 2 * TASKS, "COORDINATOR_SOAK_SIZE is too small");
    // Distinct streams pushed through: 4× the bound; measured every half bound.
    let (streams, step) = (4 * size, size / 2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let remote = Arc::new(Remote {
        registers: AtomicU64::new(0),
        terminates: AtomicU64::new(0),
    });
    let cache = Arc::new(CachedCoordinator::new(
        remote.clone(),
        size,
        Duration::from_secs(3600),
    ));
    let project: ProjectName = "chromium".parse().unwrap();
    let secret = PrefixSecret::from([7; 36]);
    let max_entries = Arc::new(AtomicU64::new(0));

    let baseline = rss_kib();
    let started = Instant::now();
    // (streams pushed, entries, RSS KiB)
    let mut figures = vec![(0usize, 0u64, baseline)];
    for n in 0..streams / step {
        let range = n * step..(n + 1) * step;
        runtime.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for t in 0..TASKS {
                let (cache, project, secret) = (cache.clone(), project.clone(), secret.clone());
                let max_entries = max_entries.clone();
                let range = range.clone();
                tasks.spawn(async move {
                    for i in range.skip(t).step_by(TASKS) {
                        visit(&cache, &project, &secret, i).await;
                        if i % 256 == 0 {
                            let entries = cache.stats().entries;
                            max_entries.fetch_max(entries, Ordering::Relaxed);
                            assert!(entries <= size as u64, "{entries} entries > {size}");
                        }
                    }
                });
            }
            while let Some(joined) = tasks.join_next().await {
                joined.unwrap();
            }
        });
        let entries = cache.stats().entries;
        max_entries.fetch_max(entries, Ordering::Relaxed);
        figures.push((range.end, entries, rss_kib()));
    }
    let elapsed = started.elapsed();
    let stats = cache.stats();

    println!(
        "soak: {streams} distinct streams through a cache of {size} entries in {elapsed:.2?} \
         ({:.0} streams/s)",
        streams as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  {:>8}  {:>8}  {:>10}  {:>10}",
        "streams", "entries", "RSS KiB", "growth KiB"
    );
    for &(pushed, entries, rss) in &figures {
        println!(
            "  {pushed:>8}  {entries:>8}  {rss:>10}  {:>10}",
            rss as i64 - baseline as i64
        );
    }
    println!("  {stats:?}");

    let rss_at = |pushed: usize| {
        figures
            .iter()
            .find(|f| f.0 == pushed)
            .map(|f| f.2 as i64)
            .unwrap()
    };
    let fill = rss_at(size) - baseline as i64;
    let after_full = rss_at(4 * size) - rss_at(2 * size);
    println!(
        "  filling the cache took {fill} KiB ({:.0} bytes/entry); from 2x to 4x the bound: \
         {after_full:+} KiB (allowed {:.0} KiB)",
        fill as f64 * 1024.0 / size as f64,
        fill as f64 * PLATEAU_MARGIN
    );

    // Misses beyond one per stream: entries evicted between a stream's first
    // and later uses (eviction approximates LRU).
    let re_misses = stats.misses - streams as u64;
    println!("  re-misses (evicted before their second use): {re_misses}");

    // The entry count never exceeded the bound, and the cache is full.
    assert!(max_entries.load(Ordering::Relaxed) <= size as u64);
    assert_eq!(stats.entries, size as u64);
    // Every miss beyond the bound evicted exactly one entry; nothing expired;
    // every miss made one inner call, and only misses did.
    assert!(stats.misses >= streams as u64);
    assert_eq!(stats.evictions, stats.misses - size as u64);
    assert_eq!(stats.expirations, 0);
    assert_eq!(
        remote.registers.load(Ordering::Relaxed),
        stats.register_calls
    );
    assert!(stats.register_calls >= streams as u64 && stats.register_calls <= stats.misses);
    assert_eq!(
        remote.terminates.load(Ordering::Relaxed),
        streams as u64 / 2
    );
    // Memory plateaus once the cache is full.
    assert!(fill > 0, "filling the cache took no memory: {fill} KiB");
    assert!(
        (after_full as f64) < fill as f64 * PLATEAU_MARGIN,
        "resident memory grew by {after_full} KiB from 2x to 4x the bound; filling took {fill} KiB"
    );
}
