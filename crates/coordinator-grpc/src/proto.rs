//! The `logdog` protobuf code: the messages (from `coordinator-services`) and
//! the tonic client and server of `logdog.Services`, generated from `proto/`
//! by `cargo xtask codegen` and checked in.

/// Package `logdog`: the messages, the tonic client (`services_client`) and,
/// with the `server` feature, the server trait (`services_server`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod logdog {
    pub use coordinator_services::proto::logdog::*;

    include!("generated/client.rs");

    #[cfg(feature = "server")]
    include!("generated/server.rs");
}

/// Package `logpb`: the log stream descriptor.
pub use coordinator_services::proto::logpb;
