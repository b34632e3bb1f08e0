//! The tonic transport for LogDog's `logdog.Services` API.
//!
//! [`proto`] holds the code generated from `proto/` (messages, the
//! `ServicesClient` and the `Services` server trait).
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod proto;
