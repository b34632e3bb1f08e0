//! [`CacheBuilder`]: the cache's optional knobs.

use std::fmt;
use std::time::Duration;

use coordinator_api::Coordinator;
use tokio::runtime::Handle;

use crate::{CachedCoordinator, DEFAULT_EXPIRATION, DEFAULT_SIZE};

/// The most shards a cache gets by default.
const MAX_DEFAULT_SHARDS: usize = 32;
/// By default a shard holds at least this many entries (so small caches have one
/// shard, and one eviction order).
const MIN_DEFAULT_SHARD_SIZE: usize = 4096;

/// The default prefix of the cache's metric names.
pub(crate) const DEFAULT_METRICS_PREFIX: &str = "coordinator_cache";

/// A cache's resolved settings (defaults applied).
pub(crate) struct Config {
    pub(crate) size: usize,
    pub(crate) expiration: Duration,
    pub(crate) error_expiration: Duration,
    pub(crate) shards: usize,
    pub(crate) runtime: Option<Handle>,
    pub(crate) exact_clock: bool,
}

/// Builds a [`CachedCoordinator`] with optional knobs; start from
/// [`CachedCoordinator::builder`].
///
/// ```
/// use std::time::Duration;
/// use coordinator_cache::CachedCoordinator;
/// use coordinator_testkit::FakeCoordinator;
///
/// let cache = CachedCoordinator::builder()
///     .size(100_000)
///     .expiration(Duration::from_secs(300))
///     .shards(8)
///     .metrics_prefix("collector_coordinator_cache")
///     .metrics_label("pipeline", "main")
///     .build(FakeCoordinator::new());
/// assert_eq!(cache.size(), 100_000);
/// assert_eq!(cache.shards(), 8);
/// ```
#[derive(Clone)]
pub struct CacheBuilder {
    size: usize,
    expiration: Duration,
    error_expiration: Duration,
    shards: usize,
    metrics_prefix: String,
    metrics_labels: Vec<(String, String)>,
    runtime: Option<Handle>,
    exact_clock: bool,
}

impl Default for CacheBuilder {
    fn default() -> Self {
        CacheBuilder {
            size: 0,
            expiration: Duration::ZERO,
            error_expiration: Duration::ZERO,
            shards: 0,
            metrics_prefix: DEFAULT_METRICS_PREFIX.to_owned(),
            metrics_labels: Vec::new(),
            runtime: None,
            exact_clock: false,
        }
    }
}

impl CacheBuilder {
    /// A builder with every knob at its default.
    pub fn new() -> Self {
        Self::default()
    }

    /// The most entries the cache holds; `0` means [`DEFAULT_SIZE`]. When full, a
    /// new entry evicts an old one (expired first, then least recently used,
    /// see [`CachedCoordinator`]).
    pub fn size(mut self, size: usize) -> Self {
        self.size = size;
        self
    }

    /// How long an entry lives after it is created (not after its last use);
    /// zero means [`DEFAULT_EXPIRATION`].
    pub fn expiration(mut self, expiration: Duration) -> Self {
        self.expiration = expiration;
        self
    }

    /// How long a kept **permanent error** lives after it is kept (the inner
    /// call answered it); zero (the default) means until its entry expires, as a
    /// kept success. A shorter time (say 30 s) lets a stream that was refused
    /// (e.g. an unknown prefix) be retried sooner while successes stay cached
    /// for the entry's full [`expiration`](Self::expiration). Never longer than
    /// the entry's own life.
    ///
    /// ```
    /// use std::time::Duration;
    /// use coordinator_cache::CachedCoordinator;
    /// use coordinator_testkit::FakeCoordinator;
    ///
    /// let cache = CachedCoordinator::builder()
    ///     .error_expiration(Duration::from_secs(30))
    ///     .build(FakeCoordinator::new());
    /// assert_eq!(cache.error_expiration(), Duration::from_secs(30));
    /// ```
    pub fn error_expiration(mut self, expiration: Duration) -> Self {
        self.error_expiration = expiration;
        self
    }

    /// The number of independently locked shards, rounded up to a power of two
    /// and lowered (halving) until no shard would be empty; `0` means the default:
    /// up to 32, with at least 4,096 entries per shard. Each shard has an equal
    /// share of the size and holds from half to twice its share, while the
    /// size bound holds across the cache: a shard that gets more than its share
    /// of the keys in use keeps them, and with the cache full a new entry
    /// evicts another shard's entry when that one is clearly older than its
    /// own shard's oldest. One shard keeps one exact eviction order.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    /// The prefix of every metric name (default `coordinator_cache`); see the
    /// crate docs for the names.
    pub fn metrics_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.metrics_prefix = prefix.into();
        self
    }

    /// Adds a label to every metric this cache emits (e.g. to tell two caches
    /// apart).
    pub fn metrics_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metrics_labels.push((key.into(), value.into()));
        self
    }

    /// The Tokio runtime that runs inner calls when a call is made outside any
    /// runtime context. By default inner calls that do not answer at once run on
    /// the caller's runtime, and outside any runtime they fail with a transient
    /// error.
    pub fn runtime(mut self, handle: Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Reads Tokio's clock exactly on every call (`true`), instead of only
    /// where it must.
    ///
    /// By default a hit checks its entry's deadline against a cheap upper bound
    /// on the time (on Linux, the coarse monotonic clock plus 100 ms) and reads
    /// the exact clock only in an entry's last 100 ms; every deadline is made
    /// from an exact read, so expiry is exact either way. The bound follows the
    /// OS's clock, which is Tokio's unless Tokio's time is paused, and Tokio
    /// pauses time only in a current-thread runtime. So a cache built, or first
    /// used, inside a current-thread runtime (as in `#[tokio::test]`) reads
    /// the exact clock on every call already; set this for a cache built and
    /// first used elsewhere that a test then drives with paused time.
    ///
    /// ```
    /// use std::time::Duration;
    /// use coordinator_cache::CachedCoordinator;
    /// use coordinator_testkit::FakeCoordinator;
    ///
    /// // Built outside any runtime, used under paused time below.
    /// let cache = CachedCoordinator::builder()
    ///     .expiration(Duration::from_secs(60))
    ///     .exact_clock(true)
    ///     .build(FakeCoordinator::new());
    /// # let _ = cache;
    /// ```
    pub fn exact_clock(mut self, exact: bool) -> Self {
        self.exact_clock = exact;
        self
    }

    /// Builds the cache in front of `inner`.
    ///
    /// The `metrics` handles are registered here, with the recorder installed at
    /// this moment (none: the metrics are no-ops).
    pub fn build<C: Coordinator + 'static>(self, inner: C) -> CachedCoordinator<C> {
        let size = if self.size == 0 {
            DEFAULT_SIZE
        } else {
            self.size
        };
        let expiration = if self.expiration.is_zero() {
            DEFAULT_EXPIRATION
        } else {
            self.expiration
        };
        let mut shards = if self.shards == 0 {
            (size / MIN_DEFAULT_SHARD_SIZE).clamp(1, MAX_DEFAULT_SHARDS)
        } else {
            self.shards.checked_next_power_of_two().unwrap_or(1 << 30)
        };
        if !shards.is_power_of_two() {
            // Round the default down, so that shards keep the minimum size.
            shards = shards.next_power_of_two() / 2;
        }
        while shards > size {
            shards /= 2;
        }
        let labels = self
            .metrics_labels
            .into_iter()
            .map(|(k, v)| metrics::Label::new(k, v))
            .collect::<Vec<_>>();
        let error_expiration = if self.error_expiration.is_zero() {
            expiration
        } else {
            self.error_expiration.min(expiration)
        };
        let config = Config {
            size,
            expiration,
            error_expiration,
            shards,
            runtime: self.runtime,
            exact_clock: self.exact_clock,
        };
        CachedCoordinator::from_parts(inner, config, &self.metrics_prefix, &labels)
    }
}

impl fmt::Debug for CacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("size", &self.size)
            .field("expiration", &self.expiration)
            .field("error_expiration", &self.error_expiration)
            .field("shards", &self.shards)
            .field("metrics_prefix", &self.metrics_prefix)
            .field("metrics_labels", &self.metrics_labels)
            .field("runtime", &self.runtime.is_some())
            .field("exact_clock", &self.exact_clock)
            .finish()
    }
}
