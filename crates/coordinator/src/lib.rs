//! LogDog's collector-side Coordinator client: the facade over the workspace's
//! crates. Features (default: `cache` only):
//!
//! - `cache`: [`cache`], the LRU + single-flight layer;
//! - `grpc`: `grpc`, the tonic transport (`tls` adds rustls);
//! - `prpc`: `prpc`, the pRPC transport the production Coordinator speaks;
//! - `testkit`: `testkit`, the fakes and the in-process server;
//! - `tower`: `tower::Layer`s for the [`services`] layers;
//! - `serde`: serde for the domain types and the client configuration (the
//!   services stack's and, with `cache`, the cache's `CacheConfig`).
//!
//! The services layer ([`services`]) and the interface (re-exported at the
//! root) are always here.
#![cfg_attr(
    all(feature = "grpc", feature = "testkit"),
    doc = include_str!("../../../README.md")
)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub use coordinator_api::*;

/// The transport-neutral services layer: the wire-level client trait, the
/// retry, timeout, concurrency-limit and batching layers, and the adapter to
/// [`Coordinator`].
pub use coordinator_services as services;

/// The LRU + single-flight cache (feature `cache`).
#[cfg(feature = "cache")]
pub use coordinator_cache as cache;

/// The tonic transport for `logdog.Services` (feature `grpc`).
#[cfg(feature = "grpc")]
pub use coordinator_grpc as grpc;

/// The pRPC transport for `logdog.Services` (feature `prpc`).
#[cfg(feature = "prpc")]
pub use coordinator_prpc as prpc;

/// Test fakes (feature `testkit`).
#[cfg(feature = "testkit")]
pub use coordinator_testkit as testkit;
