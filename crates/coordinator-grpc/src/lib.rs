//! The tonic transport for LogDog's `logdog.Services` API (`semantics.md` §4).
//!
//! - [`GrpcCoordinator`]: a [`Coordinator`](coordinator_api::Coordinator) that
//!   sends RegisterStream and TerminateStream as single RPCs or through a
//!   [`BatchingClient`], retrying transient failures per a [`RetryPolicy`] with a
//!   per-attempt timeout and an optional overall deadline. Options (TLS, bearer
//!   token and metadata interceptor, concurrency limit, user agent) are set on a
//!   [`GrpcCoordinatorBuilder`].
//! - [`BatchingClient`]: queues calls and sends them as `Batch` RPCs when a
//!   count, delay or byte threshold is reached ([`BatchOptions`]).
//! - [`convert`]: the mapping between `tonic::Status`, the wire's `Error` and
//!   [`coordinator_api::Error`].
//! - [`proto`]: the code generated from `proto/` (messages, the
//!   `ServicesClient` and the `Services` server trait).
//!
//! ```no_run
//! use coordinator_api::{Coordinator, RegisterRequest, TerminateRequest, MessageIndex};
//! use coordinator_grpc::{BatchOptions, GrpcCoordinator};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051").connect_lazy();
//! let coordinator = GrpcCoordinator::batched(channel, BatchOptions::default())?;
//! let request = RegisterRequest::parse("chromium", "builds/1/+/stdout", &[7; 36], None)?;
//! let state = coordinator.register_stream(&request, b"descriptor").await?;
//! coordinator
//!     .terminate_stream(&TerminateRequest::for_state(&state, MessageIndex::from(99)))
//!     .await?;
//! coordinator.close().await; // sends what is queued
//! # Ok(()) }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod batch;
mod client;
pub mod convert;
mod error;
pub mod proto;
mod retry;

pub use batch::{BatchOptions, BatchStats, BatchTransport, BatchingClient};
pub use client::{GrpcCoordinator, GrpcCoordinatorBuilder};
pub use error::BuildError;
pub use retry::RetryPolicy;

/// The batching client's pure response matching, exposed for the fuzz targets
/// under `fuzz/` and their regression tests. Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::batch::{EntryOutcome, Kind as EntryKind, match_response};
}
