//! Counters: the [`CacheStats`] snapshot and the `metrics` facade.

use std::ops::AddAssign;

use metrics::{Counter, Gauge, Label};

/// A snapshot of a [`CachedCoordinator`](crate::CachedCoordinator)'s counters,
/// from [`stats`](crate::CachedCoordinator::stats).
///
/// Every counter counts since the cache was built. Both operations count towards
/// `hits`, `misses` and `coalesced_waits`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Calls that found a live entry for their stream (whether it held an answer,
    /// a call in flight, or nothing yet for that operation).
    pub hits: u64,
    /// Calls that created an entry: none existed, or the existing one had expired.
    pub misses: u64,
    /// Calls that joined an inner call already in flight instead of starting one.
    pub coalesced_waits: u64,
    /// Inner `register_stream` calls started.
    pub register_calls: u64,
    /// Inner `terminate_stream` calls started.
    pub terminate_calls: u64,
    /// Inner calls that failed with a transient error (handed to their waiters,
    /// not kept).
    pub transient_failures: u64,
    /// Inner calls that failed with a permanent error (kept until the entry
    /// expires).
    pub permanent_failures: u64,
    /// Entries removed to make room (see [`CachedCoordinator`](crate::CachedCoordinator)
    /// on the eviction order).
    pub evictions: u64,
    /// Entries replaced because they had expired (an entry expired by
    /// [`invalidate`](crate::CachedCoordinator::invalidate) counts here when it is
    /// replaced).
    pub expirations: u64,
    /// Entries invalidated: expired by
    /// [`invalidate`](crate::CachedCoordinator::invalidate) or removed by
    /// [`invalidate_all`](crate::CachedCoordinator::invalidate_all).
    pub invalidations: u64,
    /// Entries in the cache now (live or expired but not yet replaced).
    pub entries: u64,
}

/// One shard's counters. Updated only under the shard's lock, so they are plain
/// integers: the hit path pays no atomic operation and shares no cache line with
/// other shards.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counters {
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) coalesced_waits: u64,
    pub(crate) register_calls: u64,
    pub(crate) terminate_calls: u64,
    pub(crate) transient_failures: u64,
    pub(crate) permanent_failures: u64,
    pub(crate) evictions: u64,
    pub(crate) expirations: u64,
    pub(crate) invalidations: u64,
}

impl AddAssign<&Counters> for CacheStats {
    fn add_assign(&mut self, c: &Counters) {
        self.hits += c.hits;
        self.misses += c.misses;
        self.coalesced_waits += c.coalesced_waits;
        self.register_calls += c.register_calls;
        self.terminate_calls += c.terminate_calls;
        self.transient_failures += c.transient_failures;
        self.permanent_failures += c.permanent_failures;
        self.evictions += c.evictions;
        self.expirations += c.expirations;
        self.invalidations += c.invalidations;
    }
}

/// How many hits a shard accumulates before it publishes them to the `metrics`
/// counter. Batching keeps the hit path free of shared
/// atomic increments when a recorder is installed.
pub(crate) const PUBLISH_BATCH: u64 = 1024;

/// The `metrics` handles, registered once when the cache is built (names in the
/// crate docs).
pub(crate) struct Metrics {
    pub(crate) hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) coalesced_waits: Counter,
    pub(crate) register_calls: Counter,
    pub(crate) terminate_calls: Counter,
    pub(crate) transient_failures: Counter,
    pub(crate) permanent_failures: Counter,
    pub(crate) evictions: Counter,
    pub(crate) expirations: Counter,
    pub(crate) invalidations: Counter,
    pub(crate) entries: Gauge,
}

impl Metrics {
    /// Registers the handles with the current recorder (a no-op handle each if
    /// none is installed).
    pub(crate) fn register(prefix: &str, labels: &[Label]) -> Self {
        let with = |extra: Option<(&'static str, &'static str)>| {
            let mut l = labels.to_vec();
            if let Some((k, v)) = extra {
                l.push(Label::new(k, v));
            }
            l
        };
        let counter =
            |name: &str, extra| metrics::counter!(format!("{prefix}_{name}"), with(extra));
        Metrics {
            hits: counter("hits_total", None),
            misses: counter("misses_total", None),
            coalesced_waits: counter("coalesced_waits_total", None),
            register_calls: counter("inner_calls_total", Some(("operation", "register"))),
            terminate_calls: counter("inner_calls_total", Some(("operation", "terminate"))),
            transient_failures: counter("failures_total", Some(("kind", "transient"))),
            permanent_failures: counter("failures_total", Some(("kind", "permanent"))),
            evictions: counter("evictions_total", None),
            expirations: counter("expirations_total", None),
            invalidations: counter("invalidations_total", None),
            entries: metrics::gauge!(format!("{prefix}_entries"), with(None)),
        }
    }
}
