//! `tower::Layer`s for this crate's layers (feature `tower`), for code that
//! composes its clients with `tower::ServiceBuilder`-style stacks.
//!
//! ```
//! use std::time::Duration;
//! use coordinator_services::tower::{AttemptTimeoutLayer, RetryLayer};
//! use coordinator_services::{AttemptTimeout, Retry, RetryPolicy};
//! use tower_layer::{Layer, Stack};
//!
//! let layers = Stack::new(AttemptTimeoutLayer::new(Duration::from_secs(5)), RetryLayer::new(RetryPolicy::default()));
//! let _client: Retry<AttemptTimeout<()>> = layers.layer(());
//! ```

use std::time::Duration;

use tower_layer::Layer;

use crate::layers::{AttemptTimeout, ConcurrencyLimit, Retry};
use crate::retry::RetryPolicy;

/// Wraps a client in [`Retry`].
#[derive(Debug, Clone)]
pub struct RetryLayer {
    policy: RetryPolicy,
    deadline: Option<Duration>,
}

impl RetryLayer {
    /// Retries per `policy`, with no overall deadline.
    pub fn new(policy: RetryPolicy) -> Self {
        RetryLayer {
            policy,
            deadline: None,
        }
    }

    /// The same layer with an overall deadline per call.
    pub fn with_deadline(mut self, deadline: impl Into<Option<Duration>>) -> Self {
        self.deadline = deadline.into();
        self
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry::new(inner, self.policy).with_deadline(self.deadline)
    }
}

/// Wraps a client in [`AttemptTimeout`].
#[derive(Debug, Clone, Copy)]
pub struct AttemptTimeoutLayer(Duration);

impl AttemptTimeoutLayer {
    /// Bounds each call by `timeout`.
    pub fn new(timeout: Duration) -> Self {
        AttemptTimeoutLayer(timeout)
    }
}

impl<S> Layer<S> for AttemptTimeoutLayer {
    type Service = AttemptTimeout<S>;

    fn layer(&self, inner: S) -> AttemptTimeout<S> {
        AttemptTimeout::new(inner, self.0)
    }
}

/// Wraps a client in [`ConcurrencyLimit`] (each `layer` call makes a new,
/// separate limit).
#[derive(Debug, Clone, Copy)]
pub struct ConcurrencyLimitLayer(usize);

impl ConcurrencyLimitLayer {
    /// At most `limit` calls at once.
    pub fn new(limit: usize) -> Self {
        ConcurrencyLimitLayer(limit)
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> ConcurrencyLimit<S> {
        ConcurrencyLimit::new(inner, self.0)
    }
}
