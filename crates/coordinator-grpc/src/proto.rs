//! Code generated from the `.proto` files under `proto/` (package `logdog` and
//! the descriptor's package `logpb`).

/// Package `logdog`: the Coordinator's services API.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod logdog {
    include!(concat!(env!("OUT_DIR"), "/logdog.rs"));
}

/// Package `logpb`: the log stream descriptor.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod logpb {
    include!(concat!(env!("OUT_DIR"), "/logpb.rs"));
}
