//! [`CachedCoordinator`]: the hit path, the miss path, and call completion.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use coordinator_api::{
    Code, Coordinator, CoordinatorFuture, Error, ProjectName, RegisterRequest, StreamPath,
    TerminateRequest,
};
use metrics::Label;
use tokio::runtime::Handle;

use crate::CacheBuilder;
use crate::builder::Config;
use crate::clock::{Clock, MAX_NANOS, Time, nanos};
use crate::flight::Flight;
use crate::interleave;
use crate::stats::{CacheStats, Metrics, PUBLISH_BATCH};
use crate::table::{
    AttemptId, Begin, Found, Index, KeyHasher, RegisterResult, Shard, ShardState, Shards, Side,
    TerminateResult, hash_key,
};

/// A [`Coordinator`] that caches and coalesces the calls of another one.
///
/// Entries are keyed by `(project, path)` and bounded in number
/// ([`DEFAULT_SIZE`](crate::DEFAULT_SIZE) unless set); each lives a fixed time from
/// its creation ([`DEFAULT_EXPIRATION`](crate::DEFAULT_EXPIRATION) unless set,
/// measured with `tokio::time::Instant`, so paused test time applies). An expired
/// entry is replaced by a fresh one on its next use.
///
/// A hit reads the exact clock only in its entry's last 100 ms: before that a
/// cheap upper bound on the time (on Linux, the coarse monotonic clock plus a
/// margin) already shows the deadline ahead. The bound is the OS's time, which
/// tokio's is unless paused, and tokio pauses time only in a current-thread
/// runtime, so a cache built or first used in one (as in `#[tokio::test]`)
/// reads the exact clock on every call; see
/// [`CacheBuilder::exact_clock`](crate::CacheBuilder::exact_clock) for a cache
/// built elsewhere that a test drives with paused time.
///
/// # Eviction
///
/// Eviction takes expired entries first, then the least recently used, with
/// one adaptive twist: an entry used only once so far (by the request that
/// made it) counts as older by a bonus that starts at zero and that the cache
/// learns from recently evicted keys ("ghosts") that come back. A key asked
/// for again while still a ghost comes back as used (it has a history); a used
/// ghost coming back raises the bonus (one-request entries should have gone
/// first), a never-used one lowers it. So a cache large enough for LRU to make
/// no mistakes stays plain LRU, and a small one learns to drop the streams
/// seen once quickly and keep those that come back. The ghosts take 1 byte per
/// entry of capacity once the cache has evicted. Recency is kept at the
/// resolution of insertions: a hit records the cache's current insertion
/// count in its slot, writing only if it changed, so a run of hits writes
/// nothing to shared memory, which keeps them fast on many threads. A miss
/// that evicts pays a few slot reads for the scan that finds the next victims.
///
/// The size bound is exact and cache-wide. With one shard (the default for
/// sizes below 8,192) the eviction order is exactly the one above. With more,
/// each shard keeps its own order, and the shards share out the size: a shard
/// holds from half to twice an equal share, so one that gets more than its
/// share of the keys in use keeps them; and with the cache full, a new entry
/// evicts another shard's next victim instead of its own shard's when that one
/// is older by more than 1/256 of the size in insertions.
///
/// Each shard keeps its entries in a slab found through a hash table of slab
/// indexes (no allocation per entry): a registered entry costs about 66 bytes
/// besides its state: a 64-byte slot (one cache line: its deadline, its last
/// use, its kept state's pointer, 32 bits of its key's hash, and a copy of a
/// key of up to 40 bytes, so that a hit compares the key without leaving the line) and
/// its share of the table. A longer key is the kept state's project and path.
/// What fewer entries need (a call in
/// flight, a kept error, a terminal index known before the state, a key the state
/// does not carry) lives in a per-shard side map.
///
/// # What is cached
///
/// - **register**: the first caller for an entry starts the inner call; every
///   caller that arrives while it is in flight waits for that same call. Its
///   answer is kept until the entry expires or is evicted, and later calls get it
///   without any inner call. The answer for a key is whatever the first request
///   registered: later requests' secrets or versions are not compared. A
///   **permanent** error is kept the same way. A **transient** error is handed to
///   the callers that waited for that attempt and then forgotten, so the next
///   caller starts a new attempt. If the answer carries a terminal index, the entry
///   remembers it; a kept state without a terminal index is returned with the
///   entry's known index filled in (a copy, made once).
/// - **terminate**: if the entry knows the stream's remote terminal index, the call
///   succeeds at once without an inner call (a different requested index is
///   logged as a warning, not an error). Otherwise calls are coalesced like
///   registers, and on success the entry remembers the requested index. Errors
///   are kept or forgotten as for register.
///
/// # Cancellation
///
/// The inner call does **not** run inside whichever caller came first: it belongs
/// to the entry. It starts when `register_stream` / `terminate_stream` is called
/// (not when the returned future is first polled) and is polled once inline, so an
/// inner call that answers at once costs no task; if it is still pending it
/// continues in a task spawned on the caller's Tokio runtime (or the one set with
/// [`CacheBuilder::runtime`]). (The inline poll uses a no-op waker, so the inner
/// future must, as the `Future` contract requires, wake the waker of its latest
/// poll.) So:
///
/// - dropping any caller's future, including the first one's, at any point never
///   cancels, fails, delays or repeats the call for the other callers, and the call
///   still completes and fills the entry when every caller is gone;
/// - a caller's cancellation or timeout is never stored as the entry's result;
/// - the returned futures are cancel-safe: dropping one only stops that caller's
///   wait.
///
/// An inner call that panics (in making its future, in the inline poll, or
/// later in its task) fails the callers of that attempt with a transient
/// `Internal` error saying that the inner call panicked, which is not kept: no
/// caller of the cache panics, and the next caller starts a new attempt. An inner
/// call that ends without an answer otherwise (its runtime shut down) fails its
/// waiters the same way.
/// Outside any Tokio runtime (and with none set on the builder) nothing can run a
/// call that does not answer at once, so such a call ends the same way.
///
/// # Cost
///
/// A hit is one coarse clock read (a few nanoseconds), one hash of the key (from the borrowed strings), one
/// shard lock held for the table lookup only (index, slot, and the key
/// compared on the slot's cache line, or its path one pointer away if the key
/// is longer than 40 bytes), and an `Arc` clone: no allocation, no string copy,
/// no write to the entry (beyond its last use, once per insertion into the
/// cache), and it returns an already completed
/// [`CoordinatorFuture::ready`]. Counters are plain per-shard integers updated
/// under that lock. A miss clones the request and descriptor once into the call;
/// if the inner call answers at once, that is all (no task, no waiter
/// bookkeeping). No lock is ever held across an `.await` or an inner call, and
/// calls for different keys never wait for each other.
///
/// Cloning a `CachedCoordinator` is cheap and shares the cache.
///
/// ```
/// use std::time::Duration;
/// use coordinator_api::{Coordinator, RegisterRequest};
/// use coordinator_cache::CachedCoordinator;
/// use coordinator_testkit::{FakeCoordinator, Operation};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let remote = FakeCoordinator::new();
/// let cache = CachedCoordinator::new(remote.clone(), 0, Duration::ZERO); // defaults
///
/// let req = RegisterRequest::parse("chromium", "builds/1/+/stdout", &[7; 36], None)?;
/// let first = cache.register_stream(&req, b"desc").await?;
/// let again = cache.register_stream(&req, b"desc").await?;
/// assert!(std::sync::Arc::ptr_eq(&first, &again));
/// assert_eq!(remote.calls(Operation::Register).started, 1);
/// assert_eq!((cache.stats().misses, cache.stats().hits), (1, 1));
/// # Ok::<(), coordinator_api::Error>(())
/// # }).unwrap();
/// ```
pub struct CachedCoordinator<C> {
    shared: Arc<Shared<C>>,
}

/// Everything the cache and its in-flight calls share.
struct Shared<C> {
    inner: C,
    shards: Shards,
    shard_mask: usize,
    hasher: KeyHasher,
    expiration: Duration,
    expiration_nanos: u64,
    error_expiration: Duration,
    /// How long a kept permanent error lives, if shorter than its entry.
    error_expiration_nanos: Option<u64>,
    clock: Clock,
    metrics: Metrics,
    runtime: Option<Handle>,
}

/// Bits of the hash above the low 32 (from which a shard's table files its
/// entries) pick the shard.
const SHARD_SHIFT: u32 = 40;

impl<C> Clone for CachedCoordinator<C> {
    fn clone(&self) -> Self {
        CachedCoordinator {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C: Coordinator + 'static> CachedCoordinator<C> {
    /// A cache of at most `size` entries, each living `expiration` from its
    /// creation, in front of `inner`. A `size` of `0` means
    /// [`DEFAULT_SIZE`](crate::DEFAULT_SIZE), a zero `expiration` means
    /// [`DEFAULT_EXPIRATION`](crate::DEFAULT_EXPIRATION).
    pub fn new(inner: C, size: usize, expiration: Duration) -> Self {
        CacheBuilder::new()
            .size(size)
            .expiration(expiration)
            .build(inner)
    }
}

impl CachedCoordinator<()> {
    /// A builder for a cache with optional knobs (shards, metrics names, runtime).
    pub fn builder() -> CacheBuilder {
        CacheBuilder::new()
    }
}

impl<C> CachedCoordinator<C> {
    pub(crate) fn from_parts(
        inner: C,
        config: Config,
        metrics_prefix: &str,
        metrics_labels: &[Label],
    ) -> Self {
        let Config {
            size,
            expiration,
            error_expiration,
            shards,
            runtime,
            exact_clock,
        } = config;
        let hasher = KeyHasher::default();
        let shards = Shards::new(size, shards, hasher);
        CachedCoordinator {
            shared: Arc::new(Shared {
                inner,
                shard_mask: shards.len() - 1,
                shards,
                hasher,
                expiration,
                expiration_nanos: nanos(expiration),
                error_expiration,
                error_expiration_nanos: (error_expiration < expiration)
                    .then(|| nanos(error_expiration)),
                clock: Clock::new(exact_clock),
                metrics: Metrics::register(metrics_prefix, metrics_labels),
                runtime,
            }),
        }
    }

    /// The wrapped coordinator.
    pub fn inner(&self) -> &C {
        &self.shared.inner
    }

    /// The most entries the cache holds.
    pub fn size(&self) -> usize {
        self.shared.shards.size()
    }

    /// How long an entry lives after its creation.
    pub fn expiration(&self) -> Duration {
        self.shared.expiration
    }

    /// How long a kept permanent error lives after it is kept (at most the
    /// [`expiration`](Self::expiration); see [`CacheBuilder::error_expiration`]).
    pub fn error_expiration(&self) -> Duration {
        self.shared.error_expiration
    }

    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.shared.shards.len()
    }

    /// Drops what the cache knows about `(project, path)`: the entry is expired
    /// at once, so the next call for it is a miss that starts a new inner call,
    /// and the entry is the first to go when room is needed. Returns whether
    /// there was an entry (live or expired).
    ///
    /// With a call in flight for the entry: the callers already waiting for it
    /// still get its answer, but that answer is not kept for anyone else; a call
    /// made after `invalidate` returns never joins it and never receives it (it
    /// starts its own inner call).
    pub fn invalidate(&self, project: &ProjectName, path: &StreamPath) -> bool {
        let shared = &*self.shared;
        let hash = hash_key(&shared.hasher, project.as_str(), path.as_str());
        let mut shard = shared.shards[shared.shard_index(hash)].lock();
        let found = shard.invalidate(hash, project.as_str(), path.as_str());
        if found {
            shard.state.counters.invalidations += 1;
            shared.metrics.invalidations.increment(1);
        }
        found
    }

    /// Removes every entry (freeing their memory) and returns how many there
    /// were. Calls in flight behave as for [`invalidate`](Self::invalidate):
    /// their waiters get their answers, which are not kept, and later calls start
    /// new inner calls. Shards are cleared one after the other, so a call made
    /// during `invalidate_all` may be kept in a shard cleared before it.
    pub fn invalidate_all(&self) -> usize {
        let shared = &*self.shared;
        let mut total = 0;
        for shard in shared.shards.iter() {
            let (cleared, n) = {
                let mut shard = shard.lock();
                let (cleared, n) = shard.clear(&shared.shards);
                shard.state.counters.invalidations += n as u64;
                (cleared, n)
            };
            // Dropped (states, keys, errors) outside the lock.
            drop(cleared);
            shared.metrics.invalidations.increment(n as u64);
            shared.metrics.entries.decrement(n as f64);
            total += n;
        }
        total
    }

    /// A snapshot of the counters, summed over the shards (each shard is read
    /// under its lock, so the sum is consistent per shard, not across shards). Also
    /// publishes hits not yet published to the `metrics` counter.
    pub fn stats(&self) -> CacheStats {
        let mut stats = CacheStats::default();
        for shard in self.shared.shards.iter() {
            let mut shard = shard.lock();
            stats.entries += shard.len() as u64;
            let state = &mut shard.state;
            stats += &state.counters;
            let unpublished = state.counters.hits - state.published_hits;
            if unpublished > 0 {
                self.shared.metrics.hits.increment(unpublished);
                state.published_hits = state.counters.hits;
            }
        }
        stats
    }
}

impl<C: Send + Sync + 'static> CachedCoordinator<C> {
    /// Starts a task that publishes this cache's counters to its `metrics`
    /// handles every `period` (at least 1 ms), so that an exporter scraping
    /// them is at most `period` behind: hits are otherwise published per shard
    /// in batches of 1,024 and on [`stats`](Self::stats) calls (the other
    /// counters and the entries gauge are always current). The task holds no
    /// strong reference and ends once the cache is dropped; abort the returned
    /// handle to stop it sooner.
    ///
    /// It runs on the current Tokio runtime, or else on the one given to
    /// [`CacheBuilder::runtime`].
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime when the builder was given none (as
    /// `tokio::spawn` does).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use coordinator_cache::CachedCoordinator;
    /// # use coordinator_testkit::FakeCoordinator;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// // In a binary: install a `metrics` recorder (e.g. a Prometheus exporter)
    /// // first, then build the cache, then keep its hit count fresh.
    /// let cache = CachedCoordinator::new(FakeCoordinator::new(), 10_000, Duration::ZERO);
    /// let publisher = cache.spawn_metrics_publisher(Duration::from_secs(5));
    /// # publisher.abort(); }
    /// ```
    pub fn spawn_metrics_publisher(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let cache = Arc::downgrade(&self.shared);
        let period = period.max(Duration::from_millis(1));
        let task = async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(shared) = cache.upgrade() else {
                    return;
                };
                let _ = CachedCoordinator { shared }.stats();
            }
        };
        match (Handle::try_current(), &self.shared.runtime) {
            (Ok(current), _) => current.spawn(task),
            (Err(_), Some(runtime)) => runtime.spawn(task),
            (Err(_), None) => tokio::spawn(task),
        }
    }
}

#[cfg(test)]
impl<C> CachedCoordinator<C> {
    /// The entry of `(project, path)`, if any (live or expired). Takes the shard
    /// lock without a scheduling point.
    pub(crate) fn view(
        &self,
        project: &ProjectName,
        path: &StreamPath,
    ) -> Option<crate::table::EntryView> {
        let shared = &*self.shared;
        let hash = hash_key(&shared.hasher, project.as_str(), path.as_str());
        let shard = shared.shards[shared.shard_index(hash)].0.lock();
        let i = shard.find(hash, project.as_str(), path.as_str())?;
        Some(shard.view(i))
    }

    /// The number of flights that waiters may still hold, over all shards.
    pub(crate) fn flights(&self) -> usize {
        self.shared
            .shards
            .iter()
            .map(|shard| {
                let shard = shard.0.lock();
                shard.state.register_waits.len() + shard.state.terminate_waits.len()
            })
            .sum()
    }

    /// Panics if a shard's structure is broken (see `Shard::check_structure`).
    pub(crate) fn check_structure(&self) {
        for shard in self.shared.shards.iter() {
            shard.0.lock().check_structure(&self.shared.hasher);
        }
    }
}

impl<C> fmt::Debug for CachedCoordinator<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedCoordinator")
            .field("size", &self.shared.shards.size())
            .field("expiration", &self.shared.expiration)
            .field("error_expiration", &self.shared.error_expiration)
            .field("shards", &self.shared.shards.len())
            .finish_non_exhaustive()
    }
}

impl<C> Shared<C> {
    #[inline]
    fn shard_index(&self, hash: u64) -> usize {
        (hash >> SHARD_SHIFT) as usize & self.shard_mask
    }

    /// Finds or creates the live entry of `(project, path)` in `shard`, a fresh
    /// one holding a new attempt on `side` (see [`Shard::find_or_insert`]), and
    /// counts what happened.
    #[inline]
    fn entry(
        &self,
        shard: &mut Shard,
        hash: u64,
        project: &ProjectName,
        path: &StreamPath,
        time: &mut Time<'_>,
        side: Side,
    ) -> (Index, Found) {
        let (i, found) = shard.find_or_insert(
            hash,
            project,
            path,
            time,
            self.expiration_nanos,
            Some(side),
            &self.shards,
        );
        let state = &mut shard.state;
        match found {
            Found::Live => {
                let counters = &mut state.counters;
                counters.hits += 1;
                if counters.hits - state.published_hits >= PUBLISH_BATCH {
                    self.metrics
                        .hits
                        .increment(counters.hits - state.published_hits);
                    state.published_hits = counters.hits;
                }
            }
            Found::Expired { .. } => {
                state.counters.misses += 1;
                state.counters.expirations += 1;
                self.metrics.misses.increment(1);
                self.metrics.expirations.increment(1);
            }
            Found::New { evicted, .. } => {
                state.counters.misses += 1;
                self.metrics.misses.increment(1);
                if evicted {
                    state.counters.evictions += 1;
                    self.metrics.evictions.increment(1);
                } else {
                    self.metrics.entries.increment(1.0);
                }
            }
        }
        (i, found)
    }

    /// Until when a permanent error in `result` may be kept, in [`Clock`]
    /// nanoseconds ([`MAX_NANOS`]: as long as its entry).
    fn error_until<T>(&self, result: &Result<T, Error>) -> u64 {
        match (result, self.error_expiration_nanos) {
            (Err(error), Some(lifetime)) if !error.is_transient() => {
                self.clock.now().saturating_add(lifetime).min(MAX_NANOS)
            }
            _ => MAX_NANOS,
        }
    }

    fn count_failure(&self, state: &mut ShardState, error: &Error) {
        if error.is_transient() {
            state.counters.transient_failures += 1;
            self.metrics.transient_failures.increment(1);
        } else {
            state.counters.permanent_failures += 1;
            self.metrics.permanent_failures.increment(1);
        }
    }
}

/// What a caller does after looking at its entry (decided under the shard lock,
/// acted on after it).
enum Step<T> {
    /// Answer now (a kept result).
    Answer(T),
    /// Wait for the call in flight.
    Wait(Arc<Flight<T>>),
    /// Start a call: the entry now holds this attempt.
    Start(AttemptId),
}

/// Where an attempt's entry is: its shard and slot, and the attempt's identity
/// (which the slot holds while the attempt is the entry's).
#[derive(Clone, Copy)]
struct Attempt {
    shard: usize,
    slot: Index,
    id: AttemptId,
}

impl<C: Coordinator + 'static> Coordinator for CachedCoordinator<C> {
    /// Registers a stream through the cache: a kept answer, the call in flight for
    /// the same stream, or a new inner call (see the [type docs](CachedCoordinator)
    /// for what is kept and the cancellation contract).
    fn register_stream<'a>(
        &'a self,
        request: &'a RegisterRequest,
        desc: &'a [u8],
    ) -> CoordinatorFuture<'a, RegisterResult> {
        let shared = &*self.shared;
        let hash = hash_key(
            &shared.hasher,
            request.project.as_str(),
            request.path.as_str(),
        );
        let mut time = shared.clock.time();
        let shard_index = shared.shard_index(hash);
        let (step, slot) = {
            let mut shard = shared.shards[shard_index].lock();
            let (i, found) = shared.entry(
                &mut shard,
                hash,
                &request.project,
                &request.path,
                &mut time,
                Side::Register,
            );
            let begin = match found.attempt() {
                Some(id) => Begin::Start(id),
                None => shard.begin_register(i),
            };
            let step = match begin {
                Begin::Join(id) => {
                    shard.state.counters.coalesced_waits += 1;
                    Step::Wait(shard.state.register_flight(id))
                }
                Begin::Start(id) => {
                    shard.state.counters.register_calls += 1;
                    Step::Start(id)
                }
                Begin::Answer(result) => Step::Answer(result),
            };
            (step, i)
        };
        match step {
            Step::Answer(result) => CoordinatorFuture::ready(result),
            Step::Wait(flight) => {
                shared.metrics.coalesced_waits.increment(1);
                CoordinatorFuture::new(async move { flight.wait().await })
            }
            Step::Start(id) => {
                shared.metrics.register_calls.increment(1);
                let attempt = Attempt {
                    shard: shard_index,
                    slot,
                    id,
                };
                let mut completion = RegisterCompletion {
                    shared: Arc::clone(&self.shared),
                    attempt,
                    request: request.clone(),
                    done: false,
                };
                let desc = desc.to_vec();
                let driver = async move {
                    let result = catch_panic(|| {
                        completion
                            .shared
                            .inner
                            .register_stream(&completion.request, &desc)
                    })
                    .await;
                    completion.finish(result)
                };
                run_call(
                    shared,
                    driver,
                    |state| state.register_flight(id),
                    shard_index,
                )
            }
        }
    }

    /// Terminates a stream through the cache: succeeds at once if the stream's
    /// terminal index is known, else joins or starts an inner call (see the [type
    /// docs](CachedCoordinator)).
    fn terminate_stream<'a>(
        &'a self,
        request: &'a TerminateRequest,
    ) -> CoordinatorFuture<'a, TerminateResult> {
        let shared = &*self.shared;
        let hash = hash_key(
            &shared.hasher,
            request.project.as_str(),
            request.path.as_str(),
        );
        let mut time = shared.clock.time();
        let shard_index = shared.shard_index(hash);
        let (step, known, slot) = {
            let mut shard = shared.shards[shard_index].lock();
            let (i, found) = shared.entry(
                &mut shard,
                hash,
                &request.project,
                &request.path,
                &mut time,
                Side::Terminate,
            );
            let (begin, known) = match found.attempt() {
                Some(id) => (Begin::Start(id), None),
                None => shard.begin_terminate(i),
            };
            let step = match begin {
                Begin::Join(id) => {
                    shard.state.counters.coalesced_waits += 1;
                    Step::Wait(shard.state.terminate_flight(id))
                }
                Begin::Start(id) => {
                    shard.state.counters.terminate_calls += 1;
                    Step::Start(id)
                }
                Begin::Answer(result) => Step::Answer(result),
            };
            (step, known, i)
        };
        if let Some(known) = known.filter(|k| *k != request.terminal_index) {
            tracing::warn!(
                project = %request.project,
                path = %request.path,
                known = %known,
                requested = %request.terminal_index,
                "terminate_stream: the stream is already terminated at a different index; keeping the known index",
            );
        }
        match step {
            Step::Answer(result) => CoordinatorFuture::ready(result),
            Step::Wait(flight) => {
                shared.metrics.coalesced_waits.increment(1);
                CoordinatorFuture::new(async move { flight.wait().await })
            }
            Step::Start(id) => {
                shared.metrics.terminate_calls.increment(1);
                let attempt = Attempt {
                    shard: shard_index,
                    slot,
                    id,
                };
                let mut completion = TerminateCompletion {
                    shared: Arc::clone(&self.shared),
                    attempt,
                    request: request.clone(),
                    done: false,
                };
                let driver = async move {
                    let result = catch_panic(|| {
                        completion
                            .shared
                            .inner
                            .terminate_stream(&completion.request)
                    })
                    .await;
                    completion.finish(result)
                };
                run_call(
                    shared,
                    driver,
                    |state| state.terminate_flight(id),
                    shard_index,
                )
            }
        }
    }
}

/// The completion guard of a register attempt: records the outcome in the entry
/// and resolves the waiters' flight, exactly once. Dropped without an outcome (the
/// call panicked, its task was dropped by a shutting-down runtime, or nothing
/// could drive it), it records a transient error, so waiters never hang and
/// nothing is kept.
struct RegisterCompletion<C> {
    shared: Arc<Shared<C>>,
    attempt: Attempt,
    request: RegisterRequest,
    done: bool,
}

impl<C> RegisterCompletion<C> {
    fn finish(&mut self, result: RegisterResult) -> RegisterResult {
        self.done = true;
        let Attempt { shard, slot, id } = self.attempt;
        let (value, flight) = {
            let mut shard = self.shared.shards[shard].lock();
            if let Err(error) = &result {
                self.shared.count_failure(&mut shard.state, error);
            }
            let flight = shard.state.register_waits.remove(&id);
            let until = self.shared.error_until(&result);
            (shard.complete_register(slot, id, result, until), flight)
        };
        if let Err(error) = &value {
            log_failure(
                "register_stream",
                &self.request.project,
                &self.request.path,
                error,
            );
        }
        if let Some(flight) = flight {
            flight.resolve(value.clone());
        }
        value
    }
}

impl<C> Drop for RegisterCompletion<C> {
    fn drop(&mut self) {
        if !self.done {
            // Nobody takes this answer: the waiters get it through the flight.
            let _ = self.finish(Err(abandoned()));
        }
    }
}

/// The completion guard of a terminate attempt (see [`RegisterCompletion`]).
struct TerminateCompletion<C> {
    shared: Arc<Shared<C>>,
    attempt: Attempt,
    request: TerminateRequest,
    done: bool,
}

impl<C> TerminateCompletion<C> {
    fn finish(&mut self, result: TerminateResult) -> TerminateResult {
        self.done = true;
        let Attempt { shard, slot, id } = self.attempt;
        let flight = {
            let mut shard = self.shared.shards[shard].lock();
            if let Err(error) = &result {
                self.shared.count_failure(&mut shard.state, error);
            }
            let until = self.shared.error_until(&result);
            shard.complete_terminate(slot, id, self.request.terminal_index, &result, until);
            shard.state.terminate_waits.remove(&id)
        };
        if let Err(error) = &result {
            log_failure(
                "terminate_stream",
                &self.request.project,
                &self.request.path,
                error,
            );
        }
        if let Some(flight) = flight {
            flight.resolve(result.clone());
        }
        result
    }
}

impl<C> Drop for TerminateCompletion<C> {
    fn drop(&mut self) {
        if !self.done {
            // Nobody takes this answer: the waiters get it through the flight.
            let _ = self.finish(Err(abandoned()));
        }
    }
}

fn log_failure(operation: &str, project: &ProjectName, path: &StreamPath, error: &Error) {
    tracing::warn!(
        project = %project,
        path = %path,
        code = %error.code(),
        transient = error.is_transient(),
        error = %error,
        "inner {operation} failed",
    );
}

/// Makes the inner call (`start`) and drives it, turning a panic, in making it
/// or in any poll (the inline one included), into a transient error: a broken
/// inner coordinator must not panic the cache's callers, and its panic is never
/// kept as the entry's answer.
async fn catch_panic<T, F>(start: impl FnOnce() -> F) -> Result<T, Error>
where
    F: Future<Output = Result<T, Error>>,
{
    let call = match panic::catch_unwind(AssertUnwindSafe(start)) {
        Ok(call) => call,
        Err(payload) => return Err(panicked(&*payload)),
    };
    let mut call = std::pin::pin!(call);
    std::future::poll_fn(move |cx| {
        panic::catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx)))
            .unwrap_or_else(|payload| Poll::Ready(Err(panicked(&*payload))))
    })
    .await
}

/// The error of an inner call that panicked (transient, so never kept), with
/// the start of the panic's message when it has one.
fn panicked(payload: &(dyn Any + Send)) -> Error {
    const MAX: usize = 200;
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-text payload");
    let mut end = message.len().min(MAX);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    Error::new(
        Code::Internal,
        format!(
            "coordinator-cache: the inner call panicked: {}",
            &message[..end]
        ),
    )
}

/// The error of an inner call that ended without an answer.
fn abandoned() -> Error {
    Error::new(
        Code::Internal,
        "coordinator-cache: the inner call ended without an answer (its runtime shut \
         down, or it could not finish at once and no Tokio runtime was available to \
         run it)",
    )
}

/// Runs an attempt's call (`driver`, which owns the attempt's completion guard),
/// owned by the entry rather than the caller: polls it once inline (inside the
/// configured runtime's context if the caller is in none); if it is not done,
/// makes the attempt's flight (`flight`, under the lock of shard `shard`), moves
/// the call into a task spawned on the caller's runtime or the configured one, and
/// waits on the flight.
fn run_call<'a, C, T, F>(
    shared: &Shared<C>,
    driver: F,
    flight: impl FnOnce(&mut ShardState) -> Arc<Flight<T>>,
    shard: usize,
) -> CoordinatorFuture<'a, T>
where
    T: Clone + Send + Sync + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let mut driver: Pin<Box<dyn Future<Output = T> + Send>> = Box::pin(driver);
    // Only a cache with a configured runtime needs to know whether the caller is
    // in one (to enter the configured one for the inline poll).
    let current = shared
        .runtime
        .as_ref()
        .and_then(|_| Handle::try_current().ok());
    let polled = {
        let _enter = match (&current, &shared.runtime) {
            (None, Some(configured)) => Some(configured.enter()),
            _ => None,
        };
        driver
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
    };
    if let Poll::Ready(value) = polled {
        return CoordinatorFuture::ready(value);
    }
    // Not done: waiters need the flight. The call cannot complete before it is
    // polled again, which happens only after this.
    let flight = flight(&mut shared.shards[shard].lock().state);
    let handle = match shared.runtime.as_ref() {
        Some(configured) => Some(current.unwrap_or_else(|| configured.clone())),
        None => Handle::try_current().ok(),
    };
    match (interleave::spawn(driver), handle) {
        // Taken by the model checker's executor (unit tests only).
        (Ok(()), _) => {}
        // Detached: the task owns the call; the join handle is not needed.
        (Err(driver), Some(handle)) => drop(handle.spawn(driver)),
        // Nothing can drive the call: dropping it fails the attempt (its
        // completion guard records a transient error, which is not kept).
        (Err(driver), None) => drop(driver),
    }
    match flight.get() {
        Some(value) => CoordinatorFuture::ready(value),
        None => CoordinatorFuture::new(async move { flight.wait().await }),
    }
}
