//! The tonic transport for LogDog's `logdog.Services` API.
//!
//! - [`GrpcServices`]: the transport, one attempt of each RPC over gRPC, as a
//!   [`coordinator_services::ServicesClient`]: put any layers of
//!   `coordinator-services` over it.
//! - [`GrpcCoordinator`]: the common case in one line: an endpoint → a
//!   batched (optionally), retrying, validating
//!   [`Coordinator`](coordinator_api::Coordinator), built from
//!   [`GrpcServices`] and a [`ServicesStack`]. Options (TLS, bearer token and
//!   metadata interceptor, concurrency limit, user agent) are set on a
//!   [`GrpcCoordinatorBuilder`].
//! - [`convert`]: the mapping between `tonic::Status` and
//!   [`coordinator_api::Error`].
//! - [`proto`]: the tonic client and, with the `server` feature, the
//!   `Services` server trait (generated from `proto/` and checked in). A client
//!   build compiles no server: without `server`, neither tonic's server nor
//!   axum is built.
//!
//! The retry, timeout, limit and batching types are `coordinator-services`'s,
//! re-exported here.
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

mod client;
pub mod convert;
mod error;
pub mod proto;
mod sanitize;

pub use client::{GrpcCoordinator, GrpcCoordinatorBuilder, GrpcServices};
pub use error::BuildError;
pub use sanitize::strip_malformed_details;

pub use coordinator_services::{
    BatchOptions, BatchStats, BatchingClient, RetryPolicy, ServicesClient, ServicesStack,
};
pub use prost;
pub use tonic;
