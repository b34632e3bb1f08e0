//! An LRU + single-flight cache in front of any
//! [`Coordinator`](coordinator_api::Coordinator).
//!
//! A busy collector registers the same stream thousands of times from many
//! workers. [`CachedCoordinator`] wraps a `Coordinator` (normally the gRPC
//! transport) and is itself one: concurrent identical calls are coalesced into one
//! inner call, and answers are remembered for a fixed time, so that only the first
//! sighting of a stream costs an RPC.
//!
//! - Key `(project, path)`; bounded by entry count ([`DEFAULT_SIZE`]), evicting
//!   entries not used recently first (LRU that learns to drop streams seen
//!   once sooner, and to keep those that come back, when that would have saved
//!   misses); every entry lives a fixed
//!   time from its creation ([`DEFAULT_EXPIRATION`]).
//! - Successes and permanent errors are kept (permanent errors for a shorter
//!   time if [`CacheBuilder::error_expiration`] says so); transient errors go
//!   only to the callers of the attempt that failed. A panicking inner call is a
//!   transient error.
//! - Entries can be dropped on demand: [`CachedCoordinator::invalidate`],
//!   [`CachedCoordinator::invalidate_all`].
//! - Cancel-safe: the inner call belongs to the entry, not to the first caller, so
//!   no caller's cancellation or timeout affects the others or is remembered.
//! - Observable: [`CachedCoordinator::stats`] returns a [`CacheStats`] snapshot,
//!   the same counters go to the [`metrics`] facade, and failed inner calls are
//!   logged with `tracing` (project and path, never the secret).
//!
//! # Metrics
//!
//! Registered when the cache is built, with the prefix set by
//! [`CacheBuilder::metrics_prefix`] (default `coordinator_cache`) and the labels
//! from [`CacheBuilder::metrics_label`]:
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `coordinator_cache_hits_total` | counter | [`CacheStats::hits`]; published per shard in batches of 1,024 and on every [`stats`](CachedCoordinator::stats) call |
//! | `coordinator_cache_misses_total` | counter | [`CacheStats::misses`] |
//! | `coordinator_cache_coalesced_waits_total` | counter | [`CacheStats::coalesced_waits`] |
//! | `coordinator_cache_inner_calls_total{operation="register"}` | counter | [`CacheStats::register_calls`] |
//! | `coordinator_cache_inner_calls_total{operation="terminate"}` | counter | [`CacheStats::terminate_calls`] |
//! | `coordinator_cache_failures_total{kind="transient"}` | counter | [`CacheStats::transient_failures`] |
//! | `coordinator_cache_failures_total{kind="permanent"}` | counter | [`CacheStats::permanent_failures`] |
//! | `coordinator_cache_evictions_total` | counter | [`CacheStats::evictions`] |
//! | `coordinator_cache_expirations_total` | counter | [`CacheStats::expirations`] |
//! | `coordinator_cache_invalidations_total` | counter | [`CacheStats::invalidations`] |
//! | `coordinator_cache_entries` | gauge | [`CacheStats::entries`] |
//!
//! To export them, a binary installs a recorder (for Prometheus,
//! `metrics-exporter-prometheus`; `fake-coordinator` and `cargo xtask demo`
//! do so with `--metrics-addr`) **before** building the cache, and may call
//! [`CachedCoordinator::spawn_metrics_publisher`] so that the hit count a
//! scrape reads is never more than a period behind. This crate depends on the
//! `metrics` facade only, never on an exporter.
//!
//! # Configuration
//!
//! [`CacheConfig`] holds the settings as plain data; with the `serde` feature
//! it deserializes from a configuration file, durations human-readable:
//! `{"capacity": 100000, "expiration": "5m", "error_expiration": "30s"}`.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use coordinator_api::{Coordinator, RegisterRequest};
//! use coordinator_cache::CachedCoordinator;
//! use coordinator_testkit::{FakeCoordinator, Operation};
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_time().build().unwrap().block_on(async {
//! let remote = FakeCoordinator::new();
//! let cache = Arc::new(CachedCoordinator::new(remote.clone(), 10_000, Duration::from_secs(60)));
//!
//! // 100 workers see the same stream at once: one remote call.
//! let req = RegisterRequest::parse("chromium", "builds/1/+/stdout", &[7; 36], None)?;
//! let workers: Vec<_> = (0..100)
//!     .map(|_| {
//!         let (cache, req) = (cache.clone(), req.clone());
//!         tokio::spawn(async move { cache.register_stream(&req, b"desc").await })
//!     })
//!     .collect();
//! for w in workers {
//!     w.await.unwrap()?;
//! }
//! assert_eq!(remote.calls(Operation::Register).started, 1);
//! # Ok::<(), coordinator_api::Error>(())
//! # }).unwrap();
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use std::time::Duration;

mod builder;
mod cache;
mod clock;
mod config;
mod flight;
mod interleave;
#[cfg(test)]
mod model_check;
mod stats;
mod table;

pub use builder::CacheBuilder;
pub use cache::CachedCoordinator;
pub use config::CacheConfig;
pub use stats::CacheStats;

/// The default bound on the number of entries: 1,048,576.
pub const DEFAULT_SIZE: usize = 1 << 20;

/// The default time an entry lives after its creation: 10 minutes.
pub const DEFAULT_EXPIRATION: Duration = Duration::from_secs(10 * 60);
