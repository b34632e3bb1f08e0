//! The transport-neutral client of LogDog's `logdog.Services` API: the
//! wire-level [`ServicesClient`] trait, its protobuf messages ([`proto`]), and
//! everything that sits above a transport.
//!
//! A transport implements [`ServicesClient`] for one attempt of each RPC
//! (`coordinator-grpc` over tonic, `coordinator-prpc` over HTTP/1.1, or your
//! own). The layers here work over any implementation and compose in the order
//! you pick:
//!
//! - [`Retry`]: retries transient failures per a [`RetryPolicy`], within an
//!   optional overall deadline;
//! - [`AttemptTimeout`]: bounds each attempt, and tells the transport the time
//!   left ([`CallOptions`]);
//! - [`ConcurrencyLimit`]: at most N calls in flight;
//! - [`BatchingClient`]: queues RegisterStream and TerminateStream calls and
//!   sends them as `Batch` RPCs ([`BatchOptions`]);
//! - [`ServicesCoordinator`]: the adapter to the collector's
//!   [`Coordinator`](coordinator_api::Coordinator): client-side validation,
//!   request building and response mapping ([`convert`]).
//!
//! [`descriptor::DescriptorBuilder`] builds the `LogStreamDescriptor` a
//! registration carries, valid as the Coordinator checks it.
//!
//! [`auth`] gives every transport its access tokens ([`auth::TokenSource`],
//! cached and refreshed once for all callers; Google credentials with the
//! `gcp` feature).
//!
//! [`ServicesStack`] builds the usual stack in one call. With the `tower`
//! feature, the `tower` module offers the layers as `tower::Layer`s. This
//! crate depends on neither tonic nor an HTTP stack.
//!
//! A toy transport, a few dozen lines, gets retries and batching from the
//! layers:
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use coordinator_api::{Coordinator, CoordinatorFuture, Error, RegisterRequest, StreamId};
//! use coordinator_services::proto::logdog as proto;
//! use coordinator_services::{BatchOptions, CallOptions, RetryPolicy, ServicesClient,
//!     ServicesFuture, ServicesStack};
//! use proto::batch_request::entry::Value as Request;
//! use proto::batch_response::entry::Value as Answer;
//!
//! /// Answers every RegisterStream entry of a batch, but fails every other batch.
//! #[derive(Default)]
//! struct Toy { batches: AtomicU32 }
//!
//! impl ServicesClient for Toy {
//!     fn register_stream<'a>(&'a self, _: CallOptions, _: &'a proto::RegisterStreamRequest)
//!         -> ServicesFuture<'a, proto::RegisterStreamResponse> {
//!         CoordinatorFuture::ready(Err(Error::unavailable("only batches here")))
//!     }
//!     fn terminate_stream<'a>(&'a self, _: CallOptions, _: &'a proto::TerminateStreamRequest)
//!         -> ServicesFuture<'a, ()> {
//!         CoordinatorFuture::ready(Err(Error::unavailable("only batches here")))
//!     }
//!     fn batch<'a>(&'a self, _: CallOptions, batch: &'a proto::BatchRequest)
//!         -> ServicesFuture<'a, proto::BatchResponse> {
//!         if self.batches.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
//!             return CoordinatorFuture::ready(Err(Error::unavailable("flaky")));
//!         }
//!         let resp = batch.req.iter().enumerate().map(|(i, entry)| {
//!             let Some(Request::RegisterStream(r)) = &entry.value else { unreachable!() };
//!             let state = proto::InternalLogStreamState {
//!                 proto_version: r.proto_version.clone(), secret: r.secret.clone(),
//!                 terminal_index: -1,
//!                 ..Default::default()
//!             };
//!             let id = StreamId::for_path(&"toy/+/stream".parse().unwrap()).to_string();
//!             let value = Answer::RegisterStream(proto::RegisterStreamResponse {
//!                 id, state: Some(state), error: None,
//!             });
//!             proto::batch_response::Entry { index: i as i32, value: Some(value) }
//!         });
//!         CoordinatorFuture::ready(Ok(proto::BatchResponse { resp: resp.collect() }))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let coordinator = ServicesStack::new()
//!     .retry(RetryPolicy::default().with_jitter(0.0))
//!     .batching(BatchOptions::default())
//!     .build(Toy::default())?;
//! let a = RegisterRequest::parse("proj", "toy/+/a", &[1; 36], None)?;
//! let b = RegisterRequest::parse("proj", "toy/+/b", &[1; 36], None)?;
//! // Both go out in one batch, which fails once and is retried.
//! let (sa, sb) = tokio::join!(coordinator.register_stream(&a, b""), coordinator.register_stream(&b, b""));
//! assert_eq!((sa?.path.as_str(), sb?.path.as_str()), ("toy/+/a", "toy/+/b"));
//! let stats = coordinator.batching_client().unwrap().stats();
//! assert_eq!((stats.batches_sent, stats.failed_batches, stats.largest_batch), (2, 1, 2));
//! # Ok(()) }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod auth;
mod batch;
mod client;
pub mod convert;
mod coordinator;
pub mod descriptor;
mod error;
mod layers;
mod panic;
pub mod proto;
mod retry;
mod stack;
#[cfg(feature = "tower")]
pub mod tower;

pub use batch::{BatchOptions, BatchStats, BatchingClient, response_size_limit};
pub use client::{CallOptions, ServicesClient, ServicesFuture, SharedClient};
pub use coordinator::{ServicesCoordinator, validate_register};
pub use error::BuildError;
pub use layers::{AttemptTimeout, ConcurrencyLimit, Retry};
pub use panic::{CatchPanic, panic_error};
pub use retry::{RetryPolicy, with_retries};
pub use stack::{DEFAULT_ATTEMPT_TIMEOUT, ServicesStack};

/// The protobuf runtime whose message types appear in this crate's API.
pub use prost;
/// The well-known types (`Timestamp`, `Duration`) the messages use.
pub use prost_types;

/// The batching client's pure response matching, exposed for the fuzz targets
/// under `fuzz/` and their regression tests. Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::batch::{EntryOutcome, Kind as EntryKind, Matched, match_response};
}
