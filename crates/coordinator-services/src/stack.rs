//! [`ServicesStack`]: the usual layers over a transport, in one builder.

use std::sync::Arc;
use std::time::Duration;

use crate::batch::{BatchOptions, BatchingClient};
use crate::client::{ServicesClient, SharedClient};
use crate::coordinator::ServicesCoordinator;
use crate::error::BuildError;
use crate::layers::{AttemptTimeout, ConcurrencyLimit, Retry};
use crate::retry::RetryPolicy;

/// The default per-attempt timeout.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Options for the usual stack of layers over a transport, and the builder
/// that puts them together into a [`ServicesCoordinator`].
///
/// From the collector down: [`Retry`] (with the overall deadline) →
/// [`BatchingClient`] (if batching is on) → [`ConcurrencyLimit`] (if set) →
/// [`AttemptTimeout`] (if set) → the transport. So with batching, each call is
/// retried as an entry of a later batch, the limit counts `Batch` RPCs, and the
/// attempt timeout bounds each RPC (not the time an entry waits in the queue).
///
/// Every option has a production default: retries per
/// [`RetryPolicy::default`], a 30 s attempt timeout, no overall deadline, no
/// concurrency limit, no batching.
///
/// ```no_run
/// use std::time::Duration;
/// use coordinator_services::{BatchOptions, RetryPolicy, ServicesClient, ServicesStack};
///
/// # fn my_transport() -> std::sync::Arc<dyn ServicesClient> { unimplemented!() }
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let coordinator = ServicesStack::new()
///     .retry(RetryPolicy::default().with_max_retries(3))
///     .deadline(Duration::from_secs(20))
///     .concurrency_limit(8)
///     .batching(BatchOptions::default())
///     .build(my_transport())?;
/// # let _ = coordinator; Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct ServicesStack {
    /// How transient failures are retried ([`RetryPolicy::none`]: never).
    pub retry: RetryPolicy,
    /// The timeout of each attempt (`None`: none). Default 30 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub attempt_timeout: Option<Duration>,
    /// The overall deadline per call, across attempts and backoff delays (and
    /// queueing, with batching). Default `None`.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub deadline: Option<Duration>,
    /// At most this many RPCs in flight (`None`: unlimited). Default `None`.
    pub concurrency_limit: Option<usize>,
    /// Batching thresholds, if calls are batched. Default `None` (single RPCs).
    pub batching: Option<BatchOptions>,
}

impl Default for ServicesStack {
    fn default() -> Self {
        ServicesStack {
            retry: RetryPolicy::default(),
            attempt_timeout: Some(DEFAULT_ATTEMPT_TIMEOUT),
            deadline: None,
            concurrency_limit: None,
            batching: None,
        }
    }
}

impl ServicesStack {
    /// The default options.
    pub fn new() -> Self {
        ServicesStack::default()
    }

    /// How transient failures are retried. Default [`RetryPolicy::default`]
    /// (first delay 1 s, 5 retries); [`RetryPolicy::none`] turns retries off.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The timeout of each attempt (also sent to the server as the call's
    /// timeout). A timed-out attempt is a transient `DeadlineExceeded` error,
    /// and may be retried. Default 30 s; `None` for no timeout.
    pub fn attempt_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.attempt_timeout = timeout.into();
        self
    }

    /// An overall deadline per call, across all attempts and backoff delays
    /// (and queueing, with batching). When it passes, the call fails with a
    /// transient `DeadlineExceeded` error; a retry whose backoff would end past
    /// it is not made (the last error is returned). Default `None`.
    pub fn deadline(mut self, deadline: impl Into<Option<Duration>>) -> Self {
        self.deadline = deadline.into();
        self
    }

    /// At most `limit` RPCs in flight at once from this stack (with batching:
    /// `Batch` RPCs); further attempts wait for a slot. Default unlimited; 0
    /// means unlimited.
    pub fn concurrency_limit(mut self, limit: usize) -> Self {
        self.concurrency_limit = (limit > 0).then_some(limit);
        self
    }

    /// Sends calls through a [`BatchingClient`] with `options` instead of as
    /// single RPCs. Default off.
    pub fn batching(mut self, options: impl Into<Option<BatchOptions>>) -> Self {
        self.batching = options.into();
        self
    }

    /// The stack over `transport`, as a shared [`ServicesClient`], and the
    /// batching client in it (if batching is on). Errors with
    /// [`BuildError::NoRuntime`] if batching is on and no Tokio runtime is
    /// running.
    pub fn layer(
        &self,
        transport: impl ServicesClient + 'static,
    ) -> Result<(SharedClient, Option<BatchingClient>), BuildError> {
        let mut client: SharedClient = Arc::new(transport);
        if let Some(timeout) = self.attempt_timeout {
            client = Arc::new(AttemptTimeout::new(client, timeout));
        }
        if let Some(limit) = self.concurrency_limit {
            client = Arc::new(ConcurrencyLimit::new(client, limit));
        }
        let batching = match self.batching {
            Some(options) => {
                let batching = BatchingClient::new(client, options)?;
                client = Arc::new(batching.clone());
                Some(batching)
            }
            None => None,
        };
        let client: SharedClient =
            Arc::new(Retry::new(client, self.retry).with_deadline(self.deadline));
        Ok((client, batching))
    }

    /// A [`ServicesCoordinator`] over the stack over `transport`. Errors with
    /// [`BuildError::NoRuntime`] if batching is on and no Tokio runtime is
    /// running.
    pub fn build(
        &self,
        transport: impl ServicesClient + 'static,
    ) -> Result<ServicesCoordinator, BuildError> {
        let (client, batching) = self.layer(transport)?;
        Ok(ServicesCoordinator::new(client).with_parts(batching, Some(self.retry)))
    }
}
