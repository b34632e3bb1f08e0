//! The cache's semantics (`docs/behaviour.md` §6), with real concurrency: calls held at
//! the `FakeCoordinator`'s gate, many tasks, paused time for expiry, and dropped
//! callers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use coordinator_api::{
    Code, Coordinator, CoordinatorFuture, Error, LogStreamState, MessageIndex, ProjectName,
    RegisterRequest, StreamId, TerminateRequest,
};
use coordinator_cache::{CacheStats, CachedCoordinator, DEFAULT_EXPIRATION, DEFAULT_SIZE};
use coordinator_testkit::{FakeCoordinator, Fault, MockCoordinator, Operation};
use tokio::sync::{Notify, mpsc};

const SECRET: [u8; 36] = [0x5a; 36];
const EXPIRATION: Duration = Duration::from_secs(60);

fn request(project: &str, path: &str) -> RegisterRequest {
    RegisterRequest::parse(project, path, &SECRET, None).unwrap()
}

fn req(path: &str) -> RegisterRequest {
    request("chromium", path)
}

fn terminate(req: &RegisterRequest, index: u32) -> TerminateRequest {
    let state = LogStreamState::from_request(req, StreamId::for_path(&req.path));
    TerminateRequest::for_state(&state, MessageIndex::from(index))
}

fn cache_of(fake: &FakeCoordinator) -> Arc<CachedCoordinator<FakeCoordinator>> {
    Arc::new(CachedCoordinator::new(fake.clone(), 1000, EXPIRATION))
}

fn serial(state: &LogStreamState) -> u64 {
    FakeCoordinator::serial_of(state).expect("a state the fake made")
}

fn registers(fake: &FakeCoordinator) -> usize {
    fake.calls(Operation::Register).started
}

fn terminates(fake: &FakeCoordinator) -> usize {
    fake.calls(Operation::Terminate).started
}

/// Polls a future once: `Some` if it was already complete.
fn now_or_never<F: Future + Unpin>(mut f: F) -> Option<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::Pin::new(&mut f).poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// Awaits `f`, failing the test instead of hanging if it never completes (with
/// paused time the runtime jumps straight to the limit when nothing else can run).
async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("the awaited condition never came true")
}

/// Spawns `n` tasks that each register `request` through `cache`. Returns when
/// every task has made its call (its future exists, so it is registered as a
/// caller of the entry) and is about to await it.
async fn spawn_callers<C: Coordinator + 'static>(
    cache: &Arc<CachedCoordinator<C>>,
    requests: impl IntoIterator<Item = RegisterRequest>,
) -> Vec<tokio::task::JoinHandle<Result<Arc<LogStreamState>, Error>>> {
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let (cache, ready) = (Arc::clone(cache), ready_tx.clone());
            tokio::spawn(async move {
                let call = cache.register_stream(&request, b"desc");
                ready.send(()).unwrap();
                call.await
            })
        })
        .collect();
    for _ in 0..tasks.len() {
        ready_rx.recv().await.unwrap();
    }
    tasks
}

// ----- Defaults and construction -----

#[test]
fn zero_means_default() {
    let cache = CachedCoordinator::new(FakeCoordinator::new(), 0, Duration::ZERO);
    assert_eq!(cache.size(), DEFAULT_SIZE);
    assert_eq!(DEFAULT_SIZE, 1 << 20);
    assert_eq!(cache.expiration(), DEFAULT_EXPIRATION);
    assert_eq!(DEFAULT_EXPIRATION, Duration::from_secs(600));
    assert_eq!(cache.shards(), 32);
    // Small caches get one shard (exact LRU order); explicit counts are rounded.
    assert_eq!(
        CachedCoordinator::new(FakeCoordinator::new(), 100, EXPIRATION).shards(),
        1
    );
    let cache = CachedCoordinator::builder()
        .size(100)
        .shards(3)
        .build(FakeCoordinator::new());
    assert_eq!(cache.shards(), 4);
    let cache = CachedCoordinator::builder()
        .size(2)
        .shards(64)
        .build(FakeCoordinator::new());
    assert_eq!(cache.shards(), 2);
}

#[test]
fn debug_shows_the_settings() {
    let cache = CachedCoordinator::builder()
        .size(10)
        .expiration(EXPIRATION)
        .error_expiration(Duration::from_secs(5))
        .build(FakeCoordinator::new());
    assert_eq!(
        format!("{cache:?}"),
        "CachedCoordinator { size: 10, expiration: 60s, error_expiration: 5s, shards: 1, .. }"
    );
}

// ----- Coalescing -----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_callers_share_one_inner_call() {
    const N: usize = 512;
    let fake = FakeCoordinator::new();
    fake.hold_all();
    let cache = cache_of(&fake);
    let tasks = spawn_callers(&cache, (0..N).map(|_| req("p/+/hot"))).await;

    // Every caller is waiting, and the one call is held at the gate.
    within(fake.wait_for_held(1)).await;
    assert_eq!(registers(&fake), 1);
    let stats = cache.stats();
    assert_eq!(
        (stats.misses, stats.hits, stats.coalesced_waits),
        (1, N as u64 - 1, N as u64 - 1)
    );
    assert_eq!(stats.register_calls, 1);

    assert_eq!(fake.release_all(), 1);
    let mut states = Vec::new();
    for task in tasks {
        states.push(task.await.unwrap().unwrap());
    }
    assert!(states.iter().all(|s| Arc::ptr_eq(s, &states[0])));
    assert_eq!(serial(&states[0]), 1);
    assert_eq!(registers(&fake), 1);
    assert_eq!(fake.calls(Operation::Register).cancelled, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn distinct_keys_are_all_in_flight_at_once() {
    const N: usize = 2048;
    let fake = FakeCoordinator::new();
    fake.hold_all();
    let cache = Arc::new(CachedCoordinator::new(fake.clone(), 4096, EXPIRATION));
    let tasks = spawn_callers(&cache, (0..N).map(|i| req(&format!("p/+/s{i}")))).await;

    // No key waits for another: every call reached the inner coordinator.
    within(fake.wait_for_held(N)).await;
    assert_eq!(registers(&fake), N);
    assert_eq!(cache.stats().register_calls, N as u64);

    assert_eq!(fake.open(), N);
    for (i, task) in tasks.into_iter().enumerate() {
        let state = task.await.unwrap().unwrap();
        assert_eq!(state.path.as_str(), format!("p/+/s{i}"));
    }
    assert_eq!(cache.stats().entries, N as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_key_does_not_block_others() {
    let fake = FakeCoordinator::new();
    let cache = cache_of(&fake);
    fake.hold_next(1);
    let slow = spawn_callers(&cache, [req("p/+/slow")]).await;
    within(fake.wait_for_held(1)).await;
    // Other keys, including misses, go through while the slow one is held.
    for i in 0..10 {
        cache
            .register_stream(&req(&format!("p/+/fast{i}")), b"")
            .await
            .unwrap();
    }
    assert_eq!(fake.held(), 1);
    fake.release_all();
    slow.into_iter().next().unwrap().await.unwrap().unwrap();
}

// ----- Answers kept, errors kept or forgotten -----

#[tokio::test]
async fn success_is_kept_and_returned_without_a_call() {
    let fake = FakeCoordinator::new();
    let cache = cache_of(&fake);
    let r = req("p/+/a");
    let first = cache.register_stream(&r, b"desc").await.unwrap();
    // The remote answer, not an echo of the request.
    assert_eq!(first.id, StreamId::for_path(&r.path));
    assert_eq!(serial(&first), 1);
    // A hit is answered at once, with the same Arc.
    let hit = now_or_never(cache.register_stream(&r, b"desc"))
        .unwrap()
        .unwrap();
    assert!(Arc::ptr_eq(&first, &hit));
    assert_eq!(registers(&fake), 1);
    assert_eq!(fake.registers()[0].desc, b"desc");
}

#[tokio::test]
async fn transient_error_is_forgotten_then_success_is_kept() {
    let fake = FakeCoordinator::new();
    let cache = cache_of(&fake);
    let r = req("p/+/a");
    fake.fail_next(Operation::Register, 1, Error::unavailable("blip"));

    let e = cache.register_stream(&r, b"").await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.is_transient());
    let state = cache.register_stream(&r, b"").await.unwrap();
    assert_eq!(serial(&state), 2);
    let again = cache.register_stream(&r, b"").await.unwrap();
    assert!(Arc::ptr_eq(&state, &again));
    assert_eq!(registers(&fake), 2);
    let stats = cache.stats();
    assert_eq!((stats.transient_failures, stats.permanent_failures), (1, 0));
    assert_eq!(stats.register_calls, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_error_goes_to_every_waiter_of_that_attempt() {
    let fake = FakeCoordinator::new();
    fake.hold_next(1);
    fake.fail_next(Operation::Register, 1, Error::internal("boom"));
    let cache = cache_of(&fake);
    let tasks = spawn_callers(&cache, (0..32).map(|_| req("p/+/a"))).await;
    within(fake.wait_for_held(1)).await;
    fake.release_all();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap_err().code(), Code::Internal);
    }
    // Forgotten: the next caller starts a new attempt.
    let state = cache.register_stream(&req("p/+/a"), b"").await.unwrap();
    assert_eq!(serial(&state), 2);
}

#[tokio::test(start_paused = true)]
async fn permanent_error_is_kept_until_expiry() {
    let fake = FakeCoordinator::new();
    let cache = cache_of(&fake);
    let r = req("p/+/a");
    fake.fail_next(
        Operation::Register,
        1,
        Error::failed_precondition("unknown prefix"),
    );

    let first = cache.register_stream(&r, b"").await.unwrap_err();
    assert_eq!(first.code(), Code::FailedPrecondition);
    for _ in 0..3 {
        let again = now_or_never(cache.register_stream(&r, b""))
            .unwrap()
            .unwrap_err();
        assert_eq!(again, first);
    }
    assert_eq!(registers(&fake), 1);
    assert_eq!(cache.stats().permanent_failures, 1);

    tokio::time::advance(EXPIRATION).await;
    let state = cache.register_stream(&r, b"").await.unwrap();
    assert_eq!(serial(&state), 2);
}

#[tokio::test]
async fn projects_are_isolated() {
    let fake = FakeCoordinator::new();
    let cache = cache_of(&fake);
    let a = request("alpha", "p/+/same");
    let b = request("beta", "p/+/same");
    let sa = cache.register_stream(&a, b"").await.unwrap();
    let sb = cache.register_stream(&b, b"").await.unwrap();
    assert_eq!(registers(&fake), 2);
    assert_eq!(sa.project.as_str(), "alpha");
    assert_eq!(sb.project.as_str(), "beta");
    // A permanent failure in one project does not leak into the other.
    let c = request("gamma", "p/+/same");
    fake.inject(Fault::new(Error::not_found("nope")).for_stream(&c.project, &c.path));
    assert!(cache.register_stream(&c, b"").await.is_err());
    assert!(Arc::ptr_eq(
        &cache.register_stream(&a, b"").await.unwrap(),
        &sa
    ));
    // Terminating in one project does not terminate the other.
    cache.terminate_stream(&terminate(&a, 3)).await.unwrap();
    cache.terminate_stream(&terminate(&b, 4)).await.unwrap();
    assert_eq!(terminates(&fake), 2);
    assert_eq!(
        cache.register_stream(&b, b"").await.unwrap().terminal_index,
        Some(MessageIndex::from(4))
    );
}

// ----- Expiry -----

#[tokio::test(start_paused = true)]
async fn entries_expire_exactly_at_the_configured_time() {
    let fake = FakeCoordinator::new();
    let cache = cache_of(&fake);
    let r = req("p/+/a");
    let first = cache.register_stream(&r, b"").await.unwrap();

    tokio::time::advance(EXPIRATION - Duration::from_nanos(1)).await;
    let hit = cache.register_stream(&r, b"").await.unwrap();
    assert!(Arc::ptr_eq(&first, &hit));
    assert_eq!(registers(&fake), 1);

    // Expiry counts from creation, not from the last use.
    tokio::time::advance(Duration::from_nanos(1)).await;
    let fresh = cache.register_stream(&r, b"").await.unwrap();
    assert_eq!(serial(&fresh), 2);
    let stats = cache.stats();
    assert_eq!((stats.misses, stats.expirations, stats.entries), (2, 1, 1));
}

/// In a multi-thread runtime hits check deadlines against the cheap bound on the
/// time (the coarse clock plus a margin), which must hand an entry's last
/// moments to the exact clock: real time, an expiration inside the margin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_fast_clock_entries_still_expire_on_time() {
    let fake = FakeCoordinator::new();
    let expiration = Duration::from_millis(60);
    let cache = CachedCoordinator::new(fake.clone(), 1000, expiration);
    let r = req("p/+/a");
    let started = std::time::Instant::now();
    let first = cache.register_stream(&r, b"").await.unwrap();
    let hit = cache.register_stream(&r, b"").await.unwrap();
    // Only checked if the machine did not stall past the expiration.
    if started.elapsed() < expiration {
        assert!(Arc::ptr_eq(&first, &hit));
        assert_eq!(registers(&fake), 1);
    }
    tokio::time::sleep(expiration + Duration::from_millis(5)).await;
    let fresh = cache.register_stream(&r, b"").await.unwrap();
    assert!(!Arc::ptr_eq(&first, &fresh));
    assert!(cache.stats().expirations >= 1);
}

/// A cache built and first used outside any runtime reads the OS's clock
/// cheaply on hits; `exact_clock` makes it follow tokio's paused time anyway.
#[test]
fn an_exact_clock_follows_paused_time_wherever_the_cache_was_built() {
    let fake = FakeCoordinator::new();
    let cache = CachedCoordinator::builder()
        .size(1000)
        .expiration(EXPIRATION)
        .exact_clock(true)
        .build(fake.clone());
    let r = req("p/+/a");
    let first = now_or_never(cache.register_stream(&r, b""))
        .expect("the fake answers at once")
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        tokio::time::advance(EXPIRATION).await;
        // The entry was made on the OS's clock, before the pause: tokio's paused
        // clock is now past its deadline.
        let fresh = cache.register_stream(&r, b"").await.unwrap();
        assert!(!Arc::ptr_eq(&first, &fresh));
        assert_eq!(registers(&fake), 2);
    });
}

#[tokio::test(start_paused = true)]
async fn an_entry_expiring_while_its_call_is_in_flight_is_replaced() {
    let fake = FakeCoordinator::new();
    fake.hold_all();
    let cache = cache_of(&fake);
    let r = req("p/+/a");

    let old = tokio::spawn({
        let (cache, r) = (Arc::clone(&cache), r.clone());
        async move { cache.register_stream(&r, b"").await }
    });
    within(fake.wait_for_held(1)).await;
    tokio::time::advance(EXPIRATION).await;
    // The entry expired with its call in flight: a new entry makes a second call.
    let new = tokio::spawn({
        let (cache, r) = (Arc::clone(&cache), r.clone());
        async move { cache.register_stream(&r, b"").await }
    });
    within(fake.wait_for_held(2)).await;
    assert_eq!(registers(&fake), 2);

    // The newer call answers first, then the old one: the old answer goes to its
    // own caller only and must not replace the newer entry's answer.
    assert_eq!(fake.release_newest(1), 1);
    assert_eq!(serial(&new.await.unwrap().unwrap()), 2);
    fake.release_all();
    assert_eq!(serial(&old.await.unwrap().unwrap()), 1);
    let current = now_or_never(cache.register_stream(&r, b""))
        .unwrap()
        .unwrap();
    assert_eq!(serial(&current), 2);
    assert_eq!(registers(&fake), 2);
}

#[tokio::test(start_paused = true)]
async fn a_stale_transient_failure_never_drops_the_newer_attempt() {
    let fake = FakeCoordinator::new();
    fake.hold_all();
    let cache = cache_of(&fake);
    let r = req("p/+/a");
    // Only the first call fails.
    fake.fail_next(Operation::Register, 1, Error::unavailable("old attempt"));

    let old = tokio::spawn({
        let (cache, r) = (Arc::clone(&cache), r.clone());
        async move { cache.register_stream(&r, b"").await }
    });
    within(fake.wait_for_held(1)).await;
    tokio::time::advance(EXPIRATION).await;
    let new = tokio::spawn({
        let (cache, r) = (Arc::clone(&cache), r.clone());
        async move { cache.register_stream(&r, b"").await }
    });
    within(fake.wait_for_held(2)).await;

    // The old attempt fails transiently while the newer one is still in flight.
    assert_eq!(fake.release(1), 1);
    assert_eq!(old.await.unwrap().unwrap_err().message(), "old attempt");
    // The newer attempt is still the entry's: a new caller joins it, no third call.
    let joined = cache.register_stream(&r, b"");
    assert_eq!(cache.stats().coalesced_waits, 1);
    assert_eq!(registers(&fake), 2);
    fake.release_all();
    let (joined, new) = (joined.await.unwrap(), new.await.unwrap().unwrap());
    assert!(Arc::ptr_eq(&joined, &new));
    assert_eq!(serial(&new), 2);
    assert_eq!(registers(&fake), 2);
}

// ----- Terminate -----

#[tokio::test]
async fn terminate_is_skipped_when_the_registered_state_has_a_terminal_index() {
    let fake = FakeCoordinator::new();
    let cache = cache_of(&fake);
    // A stream registered already terminated: the remote state carries index 7.
    let r = req("p/+/a").with_terminal_index(MessageIndex::from(7));
    let state = cache.register_stream(&r, b"").await.unwrap();
    assert_eq!(state.terminal_index, Some(MessageIndex::from(7)));

    now_or_never(cache.terminate_stream(&terminate(&r, 7)))
        .unwrap()
        .unwrap();
    // A different index is logged, not an error, and still no call.
    now_or_never(cache.terminate_stream(&terminate(&r, 9)))
        .unwrap()
        .unwrap();
    assert_eq!(terminates(&fake), 0);
}

#[tokio::test]
async fn a_terminate_fills_in_the_index_of_the_kept_state() {
    let fake = FakeCoordinator::new();
    let cache = cache_of(&fake);
    let r = req("p/+/a");
    let open = cache.register_stream(&r, b"").await.unwrap();
    assert_eq!(open.terminal_index, None);

    cache.terminate_stream(&terminate(&r, 5)).await.unwrap();
    assert_eq!(terminates(&fake), 1);
    assert_eq!(fake.terminates()[0].terminal_index, MessageIndex::from(5));
    // Known now: no more terminate calls.
    cache.terminate_stream(&terminate(&r, 5)).await.unwrap();
    assert_eq!(terminates(&fake), 1);

    let closed = cache.register_stream(&r, b"").await.unwrap();
    assert_eq!(closed.terminal_index, Some(MessageIndex::from(5)));
    assert_eq!(
        LogStreamState {
            terminal_index: None,
            ..(*closed).clone()
        },
        *open
    );
    // The copy is made once and then kept.
    let again = cache.register_stream(&r, b"").await.unwrap();
    assert!(Arc::ptr_eq(&closed, &again));
    assert_eq!(registers(&fake), 1);
}

#[tokio::test]
async fn a_terminate_before_registration_fills_in_the_registered_state() {
    let fake = FakeCoordinator::new();
    let cache = cache_of(&fake);
    let r = req("p/+/a");
    cache.terminate_stream(&terminate(&r, 2)).await.unwrap();
    let state = cache.register_stream(&r, b"").await.unwrap();
    assert_eq!(state.terminal_index, Some(MessageIndex::from(2)));
    assert_eq!(serial(&state), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_terminates_share_one_call() {
    let fake = FakeCoordinator::new();
    fake.hold_all();
    let cache = cache_of(&fake);
    let r = req("p/+/a");
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (cache, t) = (Arc::clone(&cache), terminate(&r, 3));
            tokio::spawn(async move { cache.terminate_stream(&t).await })
        })
        .collect();
    within(fake.wait_for_held(1)).await;
    fake.release_all();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(terminates(&fake), 1);
    let stats = cache.stats();
    assert_eq!(stats.terminate_calls, 1);
    assert_eq!(stats.coalesced_waits, 63);
}

#[tokio::test]
async fn terminate_errors_are_kept_or_forgotten() {
    let fake = FakeCoordinator::new();
    let cache = cache_of(&fake);
    let a = req("p/+/a");
    fake.fail_next(Operation::Terminate, 1, Error::unavailable("blip"));
    assert!(
        cache
            .terminate_stream(&terminate(&a, 1))
            .await
            .unwrap_err()
            .is_transient()
    );
    cache.terminate_stream(&terminate(&a, 1)).await.unwrap();
    assert_eq!(terminates(&fake), 2);

    let b = req("p/+/b");
    fake.fail_next(
        Operation::Terminate,
        1,
        Error::failed_precondition("terminated at 0"),
    );
    let e = cache.terminate_stream(&terminate(&b, 1)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(
        cache.terminate_stream(&terminate(&b, 1)).await.unwrap_err(),
        e
    );
    assert_eq!(terminates(&fake), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_index_arriving_during_a_terminate_wins() {
    // The remote state carries index 4 while a terminate at 6 is in flight: the
    // entry keeps 4, the terminate's callers still get its own answer.
    let fake = FakeCoordinator::with_streams();
    let r = req("p/+/a");
    let mut stored = LogStreamState::from_request(&r, StreamId::for_path(&r.path));
    stored.terminal_index = Some(MessageIndex::from(4));
    fake.insert_stream(stored);
    let cache = cache_of(&fake);

    fake.hold_next(1);
    let term = tokio::spawn({
        let (cache, t) = (Arc::clone(&cache), terminate(&r, 6));
        async move { cache.terminate_stream(&t).await }
    });
    within(fake.wait_for_held(1)).await;
    let state = cache.register_stream(&r, b"").await.unwrap();
    assert_eq!(state.terminal_index, Some(MessageIndex::from(4)));
    fake.release_all();
    // The fake has 4 recorded: terminating at 6 conflicts.
    assert_eq!(
        term.await.unwrap().unwrap_err().code(),
        Code::FailedPrecondition
    );
    // The entry knows 4: a terminate succeeds without a call.
    cache.terminate_stream(&terminate(&r, 4)).await.unwrap();
    assert_eq!(terminates(&fake), 1);
}

// ----- LRU bound -----

#[tokio::test]
async fn the_least_recently_used_entry_is_evicted_at_the_bound() {
    let fake = FakeCoordinator::new();
    let cache = CachedCoordinator::new(fake.clone(), 4, EXPIRATION);
    assert_eq!(cache.shards(), 1);
    for i in 1..=4 {
        cache
            .register_stream(&req(&format!("p/+/k{i}")), b"")
            .await
            .unwrap();
    }
    // k1 is used again, so k2 is now the least recently used.
    cache.register_stream(&req("p/+/k1"), b"").await.unwrap();
    cache.register_stream(&req("p/+/k5"), b"").await.unwrap();
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.evictions), (4, 1));
    assert_eq!(registers(&fake), 5);

    cache.register_stream(&req("p/+/k1"), b"").await.unwrap();
    assert_eq!(registers(&fake), 5);
    let k2 = cache.register_stream(&req("p/+/k2"), b"").await.unwrap();
    assert_eq!(serial(&k2), 6);
    // k2 came back and evicted k3.
    cache.register_stream(&req("p/+/k4"), b"").await.unwrap();
    cache.register_stream(&req("p/+/k3"), b"").await.unwrap();
    assert_eq!(registers(&fake), 7);
}

/// A cache of 4,099 entries in 4 shards (sizes that do not split evenly).
fn four_shards_of_4099(fake: &FakeCoordinator) -> CachedCoordinator<FakeCoordinator> {
    CachedCoordinator::builder()
        .size(4099)
        .shards(4)
        .build(fake.clone())
}

/// Registers the streams `p/+/s{i}` for every `i` in `keys`, one after another.
async fn register_each<C: Coordinator + 'static>(
    cache: &CachedCoordinator<C>,
    keys: std::ops::Range<usize>,
) {
    for i in keys {
        cache
            .register_stream(&req(&format!("p/+/s{i}")), b"")
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_sharded_cache_never_exceeds_its_size() {
    let fake = FakeCoordinator::new();
    let cache = four_shards_of_4099(&fake);
    for start in (0..10_000).step_by(1000) {
        register_each(&cache, start..start + 1000).await;
        assert!(cache.stats().entries <= 4099);
    }
    let stats = cache.stats();
    assert_eq!(stats.entries, 4099);
    assert_eq!(stats.evictions, 10_000 - 4099);
}

#[tokio::test]
async fn a_sharded_cache_fills_to_its_size_before_evicting() {
    // The keys do not split evenly between the shards; a shard that gets more
    // than its share keeps them while the cache has room.
    let fake = FakeCoordinator::new();
    let cache = four_shards_of_4099(&fake);
    register_each(&cache, 0..4099).await;
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.evictions), (4099, 0));
    // Every one is still there: asking again makes no inner call.
    register_each(&cache, 0..4099).await;
    assert_eq!(registers(&fake), 4099);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_sharing_the_size_concurrently_never_exceed_it() {
    let fake = FakeCoordinator::new();
    let cache = CachedCoordinator::builder()
        .size(1000)
        .shards(8)
        .build(fake.clone());
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let cache = cache.clone();
            tokio::spawn(async move {
                for i in 0..2000 {
                    // Half the keys are shared between tasks, half their own.
                    let key = if i % 2 == 0 {
                        format!("p/+/shared{}", i % 600)
                    } else {
                        format!("p/+/t{t}-{i}")
                    };
                    cache.register_stream(&req(&key), b"").await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stats = cache.stats();
    assert_eq!(stats.entries, 1000);
    assert_eq!(stats.entries + stats.evictions, stats.misses);
}

// ----- Cancellation -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_caller_dropped_mid_call_does_not_affect_the_others() {
    let fake = FakeCoordinator::new();
    fake.hold_all();
    let cache = cache_of(&fake);
    let r = req("p/+/a");
    let leader = spawn_callers(&cache, [r.clone()]).await.pop().unwrap();
    within(fake.wait_for_held(1)).await;
    let followers = spawn_callers(&cache, (0..16).map(|_| r.clone())).await;

    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    // The inner call was not cancelled with its first caller.
    assert_eq!(fake.calls(Operation::Register).cancelled, 0);
    assert_eq!(fake.held(), 1);

    fake.release_all();
    for f in followers {
        assert_eq!(serial(&f.await.unwrap().unwrap()), 1);
    }
    assert_eq!(registers(&fake), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_callers_all_left_still_completes_and_is_kept() {
    let fake = FakeCoordinator::new();
    fake.hold_all();
    let cache = cache_of(&fake);
    let r = req("p/+/a");
    let callers = spawn_callers(&cache, (0..4).map(|_| r.clone())).await;
    within(fake.wait_for_held(1)).await;
    for c in &callers {
        c.abort();
    }
    for c in callers {
        assert!(c.await.unwrap_err().is_cancelled());
    }
    // Also a caller whose future is dropped before it is ever polled.
    drop(cache.register_stream(&r, b""));

    fake.release_all();
    within(fake.wait_for_completed(Operation::Register, 1)).await;
    assert_eq!(fake.calls(Operation::Register).cancelled, 0);
    // The answer was kept: the next caller gets it without a call (it may still
    // join the attempt if the cache has not recorded the answer yet), and from
    // then on at once.
    let state = within(cache.register_stream(&r, b"")).await.unwrap();
    assert_eq!(serial(&state), 1);
    let again = now_or_never(cache.register_stream(&r, b""))
        .unwrap()
        .unwrap();
    assert!(Arc::ptr_eq(&state, &again));
    assert_eq!(registers(&fake), 1);
}

#[tokio::test(start_paused = true)]
async fn a_caller_timing_out_never_poisons_the_entry() {
    let fake = FakeCoordinator::new();
    fake.set_latency(Duration::from_secs(5));
    let cache = cache_of(&fake);
    let r = req("p/+/a");

    let timed_out =
        tokio::time::timeout(Duration::from_secs(1), cache.register_stream(&r, b"")).await;
    assert!(timed_out.is_err());
    // The call goes on: a later caller joins it and gets the remote answer.
    let state = cache.register_stream(&r, b"").await.unwrap();
    assert_eq!(serial(&state), 1);
    assert_eq!(cache.stats().coalesced_waits, 1);

    // A terminate timing out with nobody else waiting: the call completes anyway
    // and its index is kept.
    let t = terminate(&r, 8);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), cache.terminate_stream(&t))
            .await
            .is_err()
    );
    within(fake.wait_for_completed(Operation::Terminate, 1)).await;
    now_or_never(cache.terminate_stream(&t)).unwrap().unwrap();
    let closed = now_or_never(cache.register_stream(&r, b""))
        .unwrap()
        .unwrap();
    assert_eq!(closed.terminal_index, Some(MessageIndex::from(8)));
    assert_eq!((registers(&fake), terminates(&fake)), (1, 1));
    assert_eq!(
        fake.calls(Operation::Register).cancelled + fake.calls(Operation::Terminate).cancelled,
        0
    );
}

/// An inner coordinator whose first register and first terminate panic: as
/// soon as they are polled (in the cache's inline poll, inside
/// `register_stream` / `terminate_stream`), or, if `held`, once `release` is
/// notified (so in the task the call was moved to). Later calls succeed.
#[derive(Default)]
struct Panics {
    held: bool,
    release: Notify,
    registers: AtomicUsize,
    terminates: AtomicUsize,
}

impl Panics {
    /// Panics if this is the first call counted by `calls`.
    async fn first_panics(&self, calls: &AtomicUsize, what: &str) {
        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
            if self.held {
                self.release.notified().await;
            }
            panic!("{what} blew up");
        }
    }
}

impl Coordinator for Panics {
    fn register_stream<'a>(
        &'a self,
        request: &'a RegisterRequest,
        _desc: &'a [u8],
    ) -> CoordinatorFuture<'a, Result<Arc<LogStreamState>, Error>> {
        CoordinatorFuture::new(async move {
            self.first_panics(&self.registers, "register").await;
            Ok(Arc::new(LogStreamState::from_request(
                request,
                StreamId::for_path(&request.path),
            )))
        })
    }

    fn terminate_stream<'a>(
        &'a self,
        _: &'a TerminateRequest,
    ) -> CoordinatorFuture<'a, Result<(), Error>> {
        CoordinatorFuture::new(async move {
            self.first_panics(&self.terminates, "terminate").await;
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_inner_call_fails_its_waiters_transiently() {
    let inner = Arc::new(Panics {
        held: true,
        ..Panics::default()
    });
    let cache = Arc::new(CachedCoordinator::new(Arc::clone(&inner), 10, EXPIRATION));
    let r = req("p/+/a");
    let waiters = spawn_callers(&cache, (0..8).map(|_| r.clone())).await;
    assert_eq!(cache.stats().coalesced_waits, 7);
    inner.release.notify_one();
    for w in waiters {
        let e = w.await.unwrap().unwrap_err();
        assert_eq!(e.code(), Code::Internal);
        assert!(e.is_transient());
        assert!(e.message().contains("inner call panicked"), "{e}");
        assert!(e.message().contains("register blew up"), "{e}");
    }
    // Not kept: the next caller makes a new call.
    cache.register_stream(&r, b"").await.unwrap();
    assert_eq!(inner.registers.load(Ordering::SeqCst), 2);
}

// ----- Without a runtime -----

#[test]
fn outside_a_runtime_calls_that_answer_at_once_work() {
    let mut mock = MockCoordinator::new();
    mock.expect_register_stream().times(1).returning(|r, _| {
        Ok(Arc::new(LogStreamState::from_request(
            r,
            StreamId::for_path(&r.path),
        )))
    });
    let cache = CachedCoordinator::new(mock, 10, EXPIRATION);
    let r = req("p/+/a");
    let first = now_or_never(cache.register_stream(&r, b""))
        .unwrap()
        .unwrap();
    let hit = now_or_never(cache.register_stream(&r, b""))
        .unwrap()
        .unwrap();
    assert!(Arc::ptr_eq(&first, &hit));
}

#[test]
fn outside_a_runtime_a_pending_call_fails_transiently_or_uses_the_configured_runtime() {
    let fake = FakeCoordinator::new();
    fake.hold_all();
    let r = req("p/+/a");
    let cache = CachedCoordinator::new(fake.clone(), 10, EXPIRATION);
    let e = now_or_never(cache.register_stream(&r, b""))
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert!(e.is_transient());
    assert_eq!(fake.calls(Operation::Register).cancelled, 1);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let cache = CachedCoordinator::builder()
        .size(10)
        .runtime(runtime.handle().clone())
        .build(fake.clone());
    // Made outside the runtime: the call is spawned on the configured one.
    let call = cache.register_stream(&r, b"");
    runtime.block_on(async {
        within(fake.wait_for_held(1)).await;
        fake.open();
        assert_eq!(serial(&call.await.unwrap()), 2);
    });
}

// ----- Observability -----

#[tokio::test]
async fn stats_and_metrics_count_every_event() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let fake = FakeCoordinator::new();
    let cache = metrics::with_local_recorder(&recorder, || {
        CachedCoordinator::builder()
            .size(2)
            .expiration(EXPIRATION)
            .metrics_label("cache", "test")
            .build(fake.clone())
    });

    let (a, b, c) = (req("p/+/a"), req("p/+/b"), req("p/+/c"));
    cache.register_stream(&a, b"").await.unwrap(); // miss, call
    cache.register_stream(&a, b"").await.unwrap(); // hit
    fake.fail_next(Operation::Register, 1, Error::unavailable("x"));
    cache.register_stream(&b, b"").await.unwrap_err(); // miss, call, transient
    fake.fail_next(Operation::Register, 1, Error::not_found("x"));
    cache.register_stream(&b, b"").await.unwrap_err(); // hit, call, permanent
    cache.register_stream(&c, b"").await.unwrap(); // miss, call, evicts a
    cache.terminate_stream(&terminate(&c, 1)).await.unwrap(); // hit, call

    let stats = cache.stats();
    let mut expected = CacheStats::default();
    expected.hits = 3;
    expected.misses = 3;
    expected.register_calls = 4;
    expected.terminate_calls = 1;
    expected.transient_failures = 1;
    expected.permanent_failures = 1;
    expected.evictions = 1;
    expected.entries = 2;
    assert_eq!(stats, expected);

    let metrics: std::collections::HashMap<String, f64> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let (_, key) = key.into_parts();
            let labels: Vec<String> = key
                .labels()
                .filter(|l| l.key() != "cache")
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            assert!(
                key.labels()
                    .any(|l| l.key() == "cache" && l.value() == "test")
            );
            let value = match value {
                DebugValue::Counter(v) => v as f64,
                DebugValue::Gauge(v) => v.into_inner(),
                DebugValue::Histogram(_) => unreachable!(),
            };
            (format!("{}{{{}}}", key.name(), labels.join(",")), value)
        })
        .collect();
    let get = |name: &str| {
        metrics
            .get(name)
            .copied()
            .unwrap_or_else(|| panic!("{name} in {metrics:?}"))
    };
    assert_eq!(get("coordinator_cache_hits_total{}"), 3.0);
    assert_eq!(get("coordinator_cache_misses_total{}"), 3.0);
    assert_eq!(
        get("coordinator_cache_inner_calls_total{operation=register}"),
        4.0
    );
    assert_eq!(
        get("coordinator_cache_inner_calls_total{operation=terminate}"),
        1.0
    );
    assert_eq!(get("coordinator_cache_failures_total{kind=transient}"), 1.0);
    assert_eq!(get("coordinator_cache_failures_total{kind=permanent}"), 1.0);
    assert_eq!(get("coordinator_cache_evictions_total{}"), 1.0);
    assert_eq!(get("coordinator_cache_entries{}"), 2.0);
}

#[tokio::test]
async fn failures_are_logged_with_project_and_path_but_never_the_secret() {
    use std::io::Write;

    #[derive(Clone, Default)]
    struct Buffer(Arc<parking_lot::Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let buffer = Buffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let b = buffer.clone();
            move || b.clone()
        })
        .with_ansi(false)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let fake = FakeCoordinator::new();
    let cache = cache_of(&fake);
    let r = request("secretproj", "p/+/logged");
    fake.fail_next(Operation::Register, 1, Error::unavailable("remote down"));
    cache.register_stream(&r, b"").await.unwrap_err();
    cache
        .register_stream(&r.clone().with_terminal_index(MessageIndex::from(1)), b"")
        .await
        .unwrap();
    cache.terminate_stream(&terminate(&r, 2)).await.unwrap();

    let log = String::from_utf8(buffer.0.lock().clone()).unwrap();
    assert!(
        log.contains("secretproj") && log.contains("p/+/logged"),
        "{log}"
    );
    assert!(log.contains("remote down"), "{log}");
    assert!(log.contains("different index"), "{log}");
    // The secret is 36 bytes of 0x5a ('Z').
    assert!(
        !log.contains("ZZZZ") && !log.contains("5a5a") && !log.contains("90, 90"),
        "{log}"
    );
}

#[test]
fn a_project_name_is_a_distinct_key_part() {
    // ("ab", "c/+/d") and ("a", "bc/+/d") must not collide by concatenation.
    let fake = FakeCoordinator::new();
    let cache = CachedCoordinator::new(fake.clone(), 10, EXPIRATION);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let x = RegisterRequest::new(
            "ab".parse::<ProjectName>().unwrap(),
            "c/+/d".parse().unwrap(),
            SECRET.into(),
        );
        let y = RegisterRequest::new(
            "a".parse().unwrap(),
            "bc/+/d".parse().unwrap(),
            SECRET.into(),
        );
        let sx = cache.register_stream(&x, b"").await.unwrap();
        let sy = cache.register_stream(&y, b"").await.unwrap();
        assert_ne!(sx.project, sy.project);
        assert_eq!(registers(&fake), 2);
    });
}

// ----- Any interleaving -----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_interleavings_keep_one_answer_per_stream() {
    // 16 tasks hammer 64 streams in different orders, registering (retrying
    // transient errors) and terminating. Half the streams fail their first
    // register transiently. Whatever the interleaving: every stream costs exactly
    // one successful register call and one terminate call, every caller of a
    // stream sees the same state, and nobody hangs.
    const KEYS: usize = 64;
    const TASKS: usize = 16;
    let fake = FakeCoordinator::new();
    fake.set_latency(Duration::from_micros(200));
    let requests: Vec<RegisterRequest> = (0..KEYS).map(|i| req(&format!("p/+/s{i}"))).collect();
    for r in requests.iter().step_by(2) {
        fake.inject(
            Fault::new(Error::unavailable("first try"))
                .on(Operation::Register)
                .for_stream(&r.project, &r.path)
                .times(1),
        );
    }
    let cache = cache_of(&fake);
    let requests = Arc::new(requests);
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (cache, requests) = (Arc::clone(&cache), Arc::clone(&requests));
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for k in 0..KEYS {
                    let i = (k * 7 + t * 13) % KEYS;
                    let r = &requests[i];
                    let state = loop {
                        match cache.register_stream(r, b"").await {
                            Ok(state) => break state,
                            Err(e) => assert!(e.is_transient(), "{e}"),
                        }
                    };
                    if (k + t) % 3 == 0 {
                        cache
                            .terminate_stream(&terminate(r, i as u32))
                            .await
                            .unwrap();
                    }
                    seen.push((i, state));
                }
                seen
            })
        })
        .collect();
    let mut first: Vec<Option<Arc<LogStreamState>>> = vec![None; KEYS];
    for task in tasks {
        for (i, state) in within(task).await.unwrap() {
            assert_eq!(state.path, requests[i].path);
            // The same answer for everyone, apart from the terminal index a
            // terminate may have filled in since.
            let open = LogStreamState {
                terminal_index: None,
                ..(*state).clone()
            };
            match &first[i] {
                Some(f) => assert_eq!(*f.as_ref(), open),
                None => first[i] = Some(Arc::new(open)),
            }
        }
    }
    let stats = cache.stats();
    assert_eq!(stats.transient_failures, KEYS as u64 / 2);
    assert_eq!(registers(&fake), KEYS + KEYS / 2);
    assert_eq!(stats.register_calls, (KEYS + KEYS / 2) as u64);
    // Every stream was terminated by some task, once.
    assert_eq!(terminates(&fake), KEYS);
    for (i, r) in requests.iter().enumerate() {
        let state = now_or_never(cache.register_stream(r, b""))
            .unwrap()
            .unwrap();
        assert_eq!(state.terminal_index, Some(MessageIndex::from(i as u32)));
    }
    assert_eq!(fake.calls(Operation::Register).cancelled, 0);
}

// ----- A broken inner coordinator (issue 12) -----

#[tokio::test]
async fn an_inner_call_panicking_in_the_inline_poll_is_a_transient_error() {
    let inner = Arc::new(Panics::default());
    let cache = CachedCoordinator::new(Arc::clone(&inner), 10, EXPIRATION);
    let r = req("p/+/a");

    let e = cache.register_stream(&r, b"").await.unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert!(e.is_transient());
    assert!(
        e.message()
            .contains("inner call panicked: register blew up"),
        "{e}"
    );
    // Not kept: the next caller makes a new call, which succeeds and is kept.
    let state = cache.register_stream(&r, b"").await.unwrap();
    let again = now_or_never(cache.register_stream(&r, b""))
        .unwrap()
        .unwrap();
    assert!(Arc::ptr_eq(&state, &again));
    assert_eq!(inner.registers.load(Ordering::SeqCst), 2);

    let t = terminate(&req("p/+/b"), 4);
    let e = cache.terminate_stream(&t).await.unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert!(e.is_transient());
    assert!(
        e.message()
            .contains("inner call panicked: terminate blew up"),
        "{e}"
    );
    cache.terminate_stream(&t).await.unwrap();
    now_or_never(cache.terminate_stream(&t)).unwrap().unwrap();
    assert_eq!(inner.terminates.load(Ordering::SeqCst), 2);
    assert_eq!(cache.stats().transient_failures, 2);
}

#[tokio::test]
async fn a_long_panic_message_is_cut_at_a_character_boundary() {
    // 199 ASCII bytes, then a 2-byte character across the 200-byte cut.
    let message = format!("{}é{}", "x".repeat(199), "y".repeat(100));
    let mut mock = MockCoordinator::new();
    mock.expect_register_stream()
        .returning(move |_, _| panic!("{message}"));
    let cache = CachedCoordinator::new(mock, 10, EXPIRATION);
    let e = cache.register_stream(&req("p/+/a"), b"").await.unwrap_err();
    assert!(e.is_transient());
    assert!(
        e.message()
            .ends_with(&format!("inner call panicked: {}", "x".repeat(199))),
        "{e}"
    );
}

/// A terminate whose inner call ends without an answer (its task is dropped with
/// its runtime) fails its waiters transiently instead of leaving them hanging,
/// and the next call starts a new attempt.
#[test]
fn a_terminate_whose_runtime_shuts_down_fails_its_waiters_transiently() {
    let fake = FakeCoordinator::new();
    fake.hold_all();
    let cache = CachedCoordinator::new(fake.clone(), 10, EXPIRATION);
    let t = terminate(&req("p/+/a"), 3);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (first, second) = {
        let _in_runtime = runtime.enter();
        // Held: the call goes to a task on `runtime`, which never runs it.
        (cache.terminate_stream(&t), cache.terminate_stream(&t))
    };
    assert_eq!(cache.stats().coalesced_waits, 1);
    drop(runtime);
    for waiter in [first, second] {
        let e = now_or_never(waiter)
            .expect("answered when the call's task is dropped")
            .unwrap_err();
        assert_eq!(e.code(), Code::Internal);
        assert!(e.is_transient());
    }
    assert_eq!(cache.stats().transient_failures, 1);
    // Not kept: a new attempt (outside any runtime it must answer at once).
    fake.open();
    now_or_never(cache.terminate_stream(&t)).unwrap().unwrap();
    assert_eq!(terminates(&fake), 2);
}

#[tokio::test]
async fn invalidate_forgets_one_entry() {
    let fake = FakeCoordinator::new();
    let cache = cache_of(&fake);
    let (a, b) = (req("p/+/a"), req("p/+/b"));
    cache.register_stream(&a, b"").await.unwrap();
    cache.register_stream(&b, b"").await.unwrap();
    assert!(cache.invalidate(&a.project, &a.path));
    assert!(!cache.invalidate(&a.project, &req("p/+/never").path));
    assert_eq!(serial(&cache.register_stream(&a, b"").await.unwrap()), 3);
    // b is untouched.
    now_or_never(cache.register_stream(&b, b""))
        .unwrap()
        .unwrap();
    assert_eq!(registers(&fake), 3);
    let stats = cache.stats();
    assert_eq!((stats.invalidations, stats.entries), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_call_in_flight_answers_its_waiters_but_is_not_kept() {
    let fake = FakeCoordinator::new();
    fake.hold_all();
    let cache = cache_of(&fake);
    let r = req("p/+/a");
    let before = spawn_callers(&cache, [r.clone(), r.clone()]).await;
    within(fake.wait_for_held(1)).await;
    assert!(cache.invalidate(&r.project, &r.path));
    // A call after the invalidation does not join the old attempt.
    let after = spawn_callers(&cache, [r.clone()]).await;
    within(fake.wait_for_held(2)).await;
    fake.open();
    for w in before {
        assert_eq!(serial(&w.await.unwrap().unwrap()), 1);
    }
    for w in after {
        assert_eq!(serial(&w.await.unwrap().unwrap()), 2);
    }
    // The newer answer is the kept one.
    let kept = now_or_never(cache.register_stream(&r, b""))
        .unwrap()
        .unwrap();
    assert_eq!(serial(&kept), 2);
    assert_eq!(registers(&fake), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_all_drops_every_entry_and_the_answers_in_flight() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let fake = FakeCoordinator::new();
    let cache = Arc::new(metrics::with_local_recorder(&recorder, || {
        CachedCoordinator::builder()
            .size(1000)
            .shards(4)
            .build(fake.clone())
    }));
    for i in 0..10 {
        cache
            .register_stream(&req(&format!("p/+/k{i}")), b"")
            .await
            .unwrap();
    }
    fake.hold_all();
    let r = req("p/+/held");
    let waiter = spawn_callers(&cache, [r.clone()]).await;
    within(fake.wait_for_held(1)).await;
    assert_eq!(cache.invalidate_all(), 11);
    assert_eq!(cache.stats().entries, 0);
    fake.open();
    for w in waiter {
        assert_eq!(serial(&w.await.unwrap().unwrap()), 11);
    }
    // Nothing kept: neither the old entries nor the answer that was in flight.
    assert_eq!(
        serial(&cache.register_stream(&req("p/+/k0"), b"").await.unwrap()),
        12
    );
    assert_eq!(serial(&cache.register_stream(&r, b"").await.unwrap()), 13);
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.invalidations), (2, 11));
    let gauge = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find(|(key, ..)| key.key().name() == "coordinator_cache_entries")
        .map(|(.., value)| value);
    assert_eq!(gauge, Some(DebugValue::Gauge(2.0.into())));
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_may_be_kept_shorter_than_its_entry() {
    let fake = FakeCoordinator::new();
    let cache = CachedCoordinator::builder()
        .size(10)
        .expiration(Duration::from_secs(600))
        .error_expiration(Duration::from_secs(30))
        .build(fake.clone());
    assert_eq!(cache.error_expiration(), Duration::from_secs(30));
    let (r, ok) = (req("p/+/refused"), req("p/+/ok"));
    let t = terminate(&ok, 5);
    cache.register_stream(&ok, b"").await.unwrap();
    fake.fail_next(Operation::Register, 1, Error::not_found("no prefix"));
    fake.fail_next(Operation::Terminate, 1, Error::not_found("no stream"));
    tokio::time::advance(Duration::from_secs(10)).await;
    cache.register_stream(&r, b"").await.unwrap_err();
    cache.terminate_stream(&t).await.unwrap_err();
    // Kept for 30 s from when each was answered...
    tokio::time::advance(Duration::from_secs(30) - Duration::from_nanos(1)).await;
    now_or_never(cache.register_stream(&r, b""))
        .unwrap()
        .unwrap_err();
    now_or_never(cache.terminate_stream(&t))
        .unwrap()
        .unwrap_err();
    assert_eq!((registers(&fake), terminates(&fake)), (2, 1));
    // ...and not a nanosecond longer, while the success stays.
    tokio::time::advance(Duration::from_nanos(1)).await;
    assert_eq!(serial(&cache.register_stream(&r, b"").await.unwrap()), 3);
    cache.terminate_stream(&t).await.unwrap();
    now_or_never(cache.register_stream(&ok, b""))
        .unwrap()
        .unwrap();
    assert_eq!((registers(&fake), terminates(&fake)), (3, 2));
    // The default: as long as the entry.
    assert_eq!(
        CachedCoordinator::new(FakeCoordinator::new(), 10, EXPIRATION).error_expiration(),
        EXPIRATION
    );
}

/// A cache recording to its own `metrics` recorder, and a reader of its hits
/// counter (each read takes the increments since the last one).
fn cache_with_hits_counter() -> (
    CachedCoordinator<FakeCoordinator>,
    impl Fn() -> Option<metrics_util::debugging::DebugValue>,
) {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let cache = metrics::with_local_recorder(&recorder, || {
        CachedCoordinator::new(FakeCoordinator::new(), 10, EXPIRATION)
    });
    let hits = move || {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .find(|(key, ..)| key.key().name() == "coordinator_cache_hits_total")
            .map(|(.., value)| value)
    };
    (cache, hits)
}

#[tokio::test]
async fn hits_are_published_to_metrics_in_batches() {
    use metrics_util::debugging::DebugValue;

    let (cache, hits) = cache_with_hits_counter();
    let r = req("p/+/a");
    cache.register_stream(&r, b"").await.unwrap();
    let hit = |n: usize| {
        for _ in 0..n {
            now_or_never(cache.register_stream(&r, b""))
                .unwrap()
                .unwrap();
        }
    };
    // (Each snapshot takes the counter's increments since the last one.)
    for _ in 0..2 {
        // A batch is 1,024 hits since the last publication.
        hit(1023);
        assert_eq!(hits(), Some(DebugValue::Counter(0)));
        hit(1);
        assert_eq!(hits(), Some(DebugValue::Counter(1024)));
    }
    hit(10);
    assert_eq!(hits(), Some(DebugValue::Counter(0)));
    assert_eq!(cache.stats().hits, 2058);
    assert_eq!(hits(), Some(DebugValue::Counter(10)));
    // `stats` published those: the next batch counts from there.
    hit(1023);
    assert_eq!(hits(), Some(DebugValue::Counter(0)));
    hit(1);
    assert_eq!(hits(), Some(DebugValue::Counter(1024)));
}

#[tokio::test(start_paused = true)]
async fn the_metrics_publisher_keeps_hits_current_and_ends_with_the_cache() {
    use metrics_util::debugging::DebugValue;

    let (cache, hits) = cache_with_hits_counter();
    let r = req("p/+/a");
    let hit = |cache: &CachedCoordinator<FakeCoordinator>, n: usize| {
        for _ in 0..n {
            now_or_never(cache.register_stream(&r, b""))
                .unwrap()
                .unwrap();
        }
    };
    cache.register_stream(&r, b"").await.unwrap();
    hit(&cache, 10);
    // Fewer than a batch: not published yet.
    assert_eq!(hits(), Some(DebugValue::Counter(0)));

    let publisher = cache.spawn_metrics_publisher(Duration::from_millis(100));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(hits(), Some(DebugValue::Counter(10)));
    hit(&cache, 5);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(hits(), Some(DebugValue::Counter(5)));

    // The task holds no strong reference: it ends once the cache is gone.
    drop(cache);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(publisher.is_finished());
}
