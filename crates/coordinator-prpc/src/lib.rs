//! The pRPC transport for LogDog's `logdog.Services` API: unary protobuf RPCs
//! over HTTP/1.1 POSTs, with gRPC codes in a response header
//! (`docs/prpc.md`): what the production Coordinator serves.
//!
//! - [`PrpcServices`]: the transport, one attempt of each RPC, as a
//!   [`coordinator_services::ServicesClient`]: put any layers of
//!   `coordinator-services` over it.
//! - [`PrpcCoordinator`]: a URL → a batched (optionally), retrying,
//!   validating [`Coordinator`](coordinator_api::Coordinator), built from
//!   [`PrpcServices`] and a [`ServicesStack`]; options on a
//!   [`PrpcCoordinatorBuilder`].
//! - [`wire`]: the protocol details (headers, media types, the timeout
//!   format, the mapping of answers to errors).
//!
//! The builder, in full (every call optional; defaults in brackets):
//!
//! ```text
//! PrpcCoordinator::builder()
//!     .insecure(bool)                 // allow http:// [false: https only]
//!     .encoding(Encoding::Binary)     // or Encoding::Json with feature json [Binary]
//!     .token_source(source)           // any TokenSource, asked per attempt [none]
//!     .bearer_token("...")            // or a static token [none]
//!     .retry(RetryPolicy)             // [1 s first delay, x2, 5 retries, jitter]
//!     .attempt_timeout(d)             // also X-Prpc-Grpc-Timeout [30 s]
//!     .deadline(d)                    // per call, across retries [none]
//!     .concurrency_limit(n)           // RPCs in flight [unlimited]
//!     .batching(BatchOptions)         // Batch RPCs [off]
//!     .max_response_size(bytes)       // [32 MiB]
//!     .gzip_threshold(bytes)          // gzip larger request bodies [1 KiB]
//!     .user_agent(s)                  // [coordinator-prpc/<version>]
//!     .connect_timeout(d)             // [10 s]
//!     .pool_max_idle_per_host(n)      // keep-alive pool [unlimited]
//!     .pool_idle_timeout(d)           // [90 s]
//!     .http_client(reqwest::Client)   // bring your own [one made from the above]
//!     .build(url)                     // -> Result<PrpcCoordinator, BuildError>
//!     // or .connect(url).await (same, no eager connection)
//!     // or .build_transport(url)     // -> Result<PrpcServices, BuildError>
//! ```
//!
//! For the production Coordinator with the machine's Google credentials
//! (feature `gcp`):
//! `.token_source(CachedTokenSource::new(GoogleTokenSource::new().await?))`
//! (both in [`auth`]).
//!
//! HTTP is reqwest's (HTTP/1.1 only, rustls with the system's root
//! certificates, gzip, a keep-alive connection pool). Tokens come from a
//! [`TokenSource`](coordinator_services::auth::TokenSource) of
//! `coordinator-services` (features: `gcp` for Google credentials). The
//! `json` feature adds the JSON encoding ([`Encoding`]).
//!
//! ```no_run
//! use coordinator_api::{Coordinator, RegisterRequest};
//! use coordinator_prpc::PrpcCoordinator;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let coordinator = PrpcCoordinator::builder()
//!     .insecure(true)
//!     .connect("http://127.0.0.1:8080")
//!     .await?;
//! let request = RegisterRequest::parse("chromium", "builds/1/+/stdout", &[7; 36], None)?;
//! let state = coordinator.register_stream(&request, b"descriptor").await?;
//! # let _ = state; Ok(()) }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod client;
mod codec;
mod error;
pub mod wire;

pub use client::{
    DEFAULT_GZIP_THRESHOLD, DEFAULT_MAX_RESPONSE_SIZE, PrpcCoordinator, PrpcCoordinatorBuilder,
    PrpcServices, USER_AGENT,
};
pub use error::BuildError;
pub use wire::Encoding;

pub use coordinator_services::auth;
pub use coordinator_services::proto;
pub use coordinator_services::{
    BatchOptions, BatchStats, BatchingClient, RetryPolicy, ServicesClient, ServicesStack,
};
pub use reqwest;
