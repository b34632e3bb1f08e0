//! Fakes that let downstream crates test against the
//! [`Coordinator`](coordinator_api::Coordinator) interface without a network:
//!
//! - [`FakeCoordinator`]: a scriptable in-memory `Coordinator` (call counts,
//!   gates, injected errors, latency);
//! - [`MockCoordinator`]: a `mockall` mock of the trait;
//! - [`server`]: `FakeServicesServer`, an in-process `logdog.Services` server
//!   over loopback, speaking gRPC and pRPC, with real server semantics,
//!   optional bearer-token checks and fault injection.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod fake;
pub mod mock;
#[cfg(feature = "prometheus")]
pub mod prometheus;
#[cfg(feature = "server")]
pub mod server;

// Re-exports: in-memory fakes.
// (owned by the fake/mock modules)
pub use fake::{FakeCoordinator, Fault, Operation, OperationCounts, RecordedRegister};
pub use mock::MockCoordinator;

// Re-exports: the in-process server.
#[cfg(feature = "server")]
pub use server::{
    BatchOrder, CallCounts, DESCRIPTOR_TIMESTAMP_SECONDS, DescriptorBuilder, FakeServer,
    FakeServicesServer, FakeServicesServerBuilder, Faults, PrefixDump, RpcKind, ScriptedServices,
    StateDump, StoredStream, StreamDump, descriptor, descriptor_builder, descriptor_message,
    register_request, terminate_request,
};
