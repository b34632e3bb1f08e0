//! An LRU + single-flight cache in front of any
//! [`Coordinator`](coordinator_api::Coordinator).
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]
