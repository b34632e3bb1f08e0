//! The Coordinator interface: the seam between collector logic and LogDog's
//! Coordinator service.
//!
//! [`Coordinator`] has two async operations, [`register_stream`] and
//! [`terminate_stream`]. Transports (`coordinator-grpc`), middleware
//! (`coordinator-cache`) and test fakes (`coordinator-testkit`) implement it;
//! collector code depends only on this crate. It does not depend on any
//! transport: errors carry a gRPC-style [`Code`] defined here.
//!
//! The contract (what each operation promises, which errors are transient, why
//! only the server's verdict may be permanent) is the behaviour contract,
//! `docs/behaviour.md` §3, in the repository.
//!
//! ```
//! use std::sync::Arc;
//! use coordinator_api::{Coordinator, CoordinatorFuture, Error, LogStreamState,
//!     RegisterRequest, TerminateRequest, StreamId};
//!
//! /// A transport that accepts every stream.
//! struct AcceptAll;
//!
//! impl Coordinator for AcceptAll {
//!     fn register_stream<'a>(&'a self, req: &'a RegisterRequest, _desc: &'a [u8])
//!         -> CoordinatorFuture<'a, Result<Arc<LogStreamState>, Error>>
//!     {
//!         CoordinatorFuture::new(async move {
//!             Ok(Arc::new(LogStreamState::from_request(req, StreamId::for_path(&req.path))))
//!         })
//!     }
//!
//!     fn terminate_stream<'a>(&'a self, _req: &'a TerminateRequest)
//!         -> CoordinatorFuture<'a, Result<(), Error>>
//!     {
//!         CoordinatorFuture::ready(Ok(()))
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let coordinator: Arc<dyn Coordinator> = Arc::new(AcceptAll);
//! let req = RegisterRequest::parse("chromium", "builds/1/+/stdout", &[7; 36], None)?;
//! let state = coordinator.register_stream(&req, b"descriptor").await?;
//! assert_eq!(state.path, req.path);
//! # Ok::<(), Error>(())
//! # }).unwrap();
//! ```
//!
//! [`register_stream`]: Coordinator::register_stream
//! [`terminate_stream`]: Coordinator::terminate_stream
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod coordinator;
mod error;
mod future;
mod request;

pub use coordinator::Coordinator;
pub use error::{Code, Error};
pub use future::CoordinatorFuture;
pub use request::{LogStreamState, PROTOCOL_VERSION, RegisterRequest, TerminateRequest};

pub use coordinator_types as types;
pub use coordinator_types::{
    MessageIndex, PrefixSecret, ProjectName, StreamId, StreamName, StreamPath,
};
