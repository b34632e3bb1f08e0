//! Fakes that let downstream crates test against the
//! [`Coordinator`](coordinator_api::Coordinator) interface without a network.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]
