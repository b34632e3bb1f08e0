//! The layers that wrap any [`ServicesClient`]: [`Retry`], [`AttemptTimeout`]
//! and [`ConcurrencyLimit`]. (Batching is [`BatchingClient`](crate::BatchingClient).)
//!
//! Each is a `ServicesClient` over another `ServicesClient`, so they compose in
//! any order. [`ServicesStack`](crate::ServicesStack) builds the usual order:
//! retry → batching → concurrency limit → attempt timeout → transport.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use coordinator_api::{CoordinatorFuture, Error};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::client::{CallOptions, ServicesClient, ServicesFuture};
use crate::convert::check_register_response;
use crate::panic::CatchPanic;
use crate::proto::logdog as proto;
use crate::retry::{RetryPolicy, overall_deadline_error, retry_after};

/// One RPC of the inner client, as a function of the call's options and
/// request.
type Call<'a, S, Req, T> = fn(&'a S, CallOptions, &'a Req) -> ServicesFuture<'a, T>;

/// Implements [`ServicesClient`] for a layer type through its `around` method,
/// which runs one call of the inner client (given as a [`Call`]).
macro_rules! layer_client {
    ($ty:ident) => {
        impl<S: ServicesClient> ServicesClient for $ty<S> {
            fn register_stream<'a>(
                &'a self,
                options: CallOptions,
                request: &'a proto::RegisterStreamRequest,
            ) -> ServicesFuture<'a, proto::RegisterStreamResponse> {
                self.around("RegisterStream", options, request, |inner, o, r| {
                    inner.register_stream(o, r)
                })
            }

            fn terminate_stream<'a>(
                &'a self,
                options: CallOptions,
                request: &'a proto::TerminateStreamRequest,
            ) -> ServicesFuture<'a, ()> {
                self.around("TerminateStream", options, request, |inner, o, r| {
                    inner.terminate_stream(o, r)
                })
            }

            fn batch<'a>(
                &'a self,
                options: CallOptions,
                request: &'a proto::BatchRequest,
            ) -> ServicesFuture<'a, proto::BatchResponse> {
                self.around("Batch", options, request, |inner, o, r| inner.batch(o, r))
            }

            fn load_stream<'a>(
                &'a self,
                options: CallOptions,
                request: &'a proto::LoadStreamRequest,
            ) -> ServicesFuture<'a, proto::LoadStreamResponse> {
                self.around("LoadStream", options, request, |inner, o, r| {
                    inner.load_stream(o, r)
                })
            }
        }
    };
}

/// Retries transient failures of the inner client per a [`RetryPolicy`],
/// within an optional overall deadline per call.
///
/// - Each attempt sends the same (borrowed) request, with the call's options
///   and the overall deadline applied, so the transport sends the time left.
/// - Only [retryable](Error::is_retryable) errors are retried; after the last
///   retry the last error is returned (still transient).
/// - A `RegisterStream` response whose own `error` field is set is that error,
///   and a malformed one (missing state, an ID LogDog does not issue, a secret
///   of the wrong length) is a transient error: both are retried like a
///   failed call.
/// - A panic inside an attempt is a transient `Internal` error for that
///   attempt (and is retried).
/// - When the overall deadline passes, the call fails with a transient
///   `DeadlineExceeded` error.
///
/// Cancel-safe: dropping the call abandons the current attempt.
#[derive(Clone)]
pub struct Retry<S> {
    inner: S,
    policy: RetryPolicy,
    deadline: Option<Duration>,
}

impl<S> Retry<S> {
    /// Retries `inner`'s transient failures per `policy`, with no overall
    /// deadline.
    pub fn new(inner: S, policy: RetryPolicy) -> Self {
        Retry {
            inner,
            policy,
            deadline: None,
        }
    }

    /// The same layer with an overall deadline per call, across all attempts
    /// and backoff delays (`None`: none).
    pub fn with_deadline(mut self, deadline: impl Into<Option<Duration>>) -> Self {
        self.deadline = deadline.into();
        self
    }

    /// The retry policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The inner client.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn around<'a, Req, T>(
        &'a self,
        what: &'static str,
        options: CallOptions,
        request: &'a Req,
        call: Call<'a, S, Req, T>,
    ) -> ServicesFuture<'a, T>
    where
        Req: Sync + 'a,
        T: Checked + Send + 'a,
        S: ServicesClient,
    {
        CoordinatorFuture::new(async move {
            let deadline_at = self.deadline.map(|d| Instant::now() + d);
            let options = match deadline_at {
                Some(at) => options.with_deadline(at),
                None => options,
            };
            let attempt = move || {
                let attempt = CatchPanic::call(what, || call(&self.inner, options, request));
                async move { attempt.await.and_then(T::check) }
            };
            // The first attempt runs inline; the retry loop, with its backoff
            // timer, is built (and boxed) only if it fails. The common call
            // then carries no timer and moves less.
            let first = match deadline_at {
                None => attempt().await,
                Some(at) => match Box::pin(tokio::time::timeout_at(at, attempt())).await {
                    Ok(result) => result,
                    Err(_) => return Err(overall_deadline_error(&what, self.deadline, 1)),
                },
            };
            match first {
                Ok(value) => Ok(value),
                Err(error) => {
                    Box::pin(retry_after(
                        &self.policy,
                        deadline_at,
                        self.deadline,
                        &what,
                        Some(error),
                        attempt,
                    ))
                    .await
                }
            }
        })
    }
}

layer_client!(Retry);

impl<S> fmt::Debug for Retry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("policy", &self.policy)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// What the retry layer checks in a successful answer before accepting it.
trait Checked: Sized {
    fn check(self) -> Result<Self, Error> {
        Ok(self)
    }
}

impl Checked for proto::RegisterStreamResponse {
    fn check(self) -> Result<Self, Error> {
        check_register_response(self)
    }
}
impl Checked for () {}
impl Checked for proto::BatchResponse {}
impl Checked for proto::LoadStreamResponse {}

/// Bounds each call of the inner client by a timeout.
///
/// The call's options get the earlier of their deadline and now + the timeout,
/// so the transport sends the time left to the server. A call still running at
/// that deadline is dropped and fails with a transient `DeadlineExceeded`
/// error. The timeout covers the whole attempt, receiving and decoding the
/// response included.
#[derive(Debug, Clone)]
pub struct AttemptTimeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> AttemptTimeout<S> {
    /// Bounds each call of `inner` by `timeout`.
    pub fn new(inner: S, timeout: Duration) -> Self {
        AttemptTimeout { inner, timeout }
    }

    /// The inner client.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn around<'a, Req, T>(
        &'a self,
        what: &'static str,
        options: CallOptions,
        request: &'a Req,
        call: Call<'a, S, Req, T>,
    ) -> ServicesFuture<'a, T>
    where
        Req: Sync + 'a,
        T: Send + 'a,
        S: ServicesClient,
    {
        let own = Instant::now() + self.timeout;
        let options = options.with_deadline(own);
        let at = options.deadline.unwrap_or(own);
        let timeout = self.timeout;
        let attempt = call(&self.inner, options, request);
        CoordinatorFuture::new(async move {
            match tokio::time::timeout_at(at, attempt).await {
                Ok(result) => result,
                Err(_) if at < own => Err(Error::deadline_exceeded(format!(
                    "{what}: the call's deadline passed during the attempt"
                ))),
                Err(_) => Err(Error::deadline_exceeded(format!(
                    "{what}: the attempt timed out after {timeout:?}"
                ))),
            }
        })
    }
}

layer_client!(AttemptTimeout);

/// At most `limit` calls of the inner client in flight at once (shared by
/// clones); further calls wait for a slot, in order.
///
/// Waiting counts against the call's deadline (a [`Retry`] layer's, above)
/// but not against an [`AttemptTimeout`] below.
#[derive(Clone)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    limit: usize,
    slots: Arc<Semaphore>,
}

impl<S> ConcurrencyLimit<S> {
    /// At most `limit` calls of `inner` at once (0 is treated as 1).
    pub fn new(inner: S, limit: usize) -> Self {
        let limit = limit.max(1);
        ConcurrencyLimit {
            inner,
            limit,
            slots: Arc::new(Semaphore::new(limit)),
        }
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The inner client.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn around<'a, Req, T>(
        &'a self,
        _what: &'static str,
        options: CallOptions,
        request: &'a Req,
        call: Call<'a, S, Req, T>,
    ) -> ServicesFuture<'a, T>
    where
        Req: Sync + 'a,
        T: Send + 'a,
        S: ServicesClient,
    {
        CoordinatorFuture::new(async move {
            let _permit = self
                .slots
                .acquire()
                .await
                .map_err(|_| Error::unavailable("the concurrency limiter is closed"))?;
            call(&self.inner, options, request).await
        })
    }
}

layer_client!(ConcurrencyLimit);

impl<S> fmt::Debug for ConcurrencyLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("limit", &self.limit)
            .field("available", &self.slots.available_permits())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use coordinator_api::Code;
    use parking_lot::Mutex;

    use super::*;

    /// Answers `terminate_stream` calls from a script, in order: `Some(result)`
    /// at once, `None` never. Records the requests it got.
    #[derive(Default)]
    struct Script {
        answers: Mutex<VecDeque<Option<Result<(), Error>>>>,
        seen: Mutex<Vec<proto::TerminateStreamRequest>>,
    }

    impl Script {
        fn new(answers: impl IntoIterator<Item = Option<Result<(), Error>>>) -> Self {
            Script {
                answers: Mutex::new(answers.into_iter().collect()),
                seen: Mutex::default(),
            }
        }
    }

    impl ServicesClient for Script {
        fn register_stream<'a>(
            &'a self,
            _: CallOptions,
            _: &'a proto::RegisterStreamRequest,
        ) -> ServicesFuture<'a, proto::RegisterStreamResponse> {
            CoordinatorFuture::ready(Err(Error::internal("not scripted")))
        }

        fn terminate_stream<'a>(
            &'a self,
            _: CallOptions,
            request: &'a proto::TerminateStreamRequest,
        ) -> ServicesFuture<'a, ()> {
            self.seen.lock().push(request.clone());
            match self.answers.lock().pop_front().flatten() {
                Some(result) => CoordinatorFuture::ready(result),
                None => CoordinatorFuture::new(std::future::pending()),
            }
        }

        fn batch<'a>(
            &'a self,
            _: CallOptions,
            _: &'a proto::BatchRequest,
        ) -> ServicesFuture<'a, proto::BatchResponse> {
            CoordinatorFuture::ready(Err(Error::internal("not scripted")))
        }
    }

    fn request() -> proto::TerminateStreamRequest {
        proto::TerminateStreamRequest {
            project: "p".into(),
            id: "a".repeat(64),
            secret: vec![1; 36],
            terminal_index: 7,
        }
    }

    fn policy(retries: u32) -> RetryPolicy {
        RetryPolicy::default()
            .with_max_retries(retries)
            .with_initial_delay(Duration::from_secs(1))
            .with_jitter(0.0)
    }

    fn unavailable() -> Option<Result<(), Error>> {
        Some(Err(Error::unavailable("try again")))
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_gets_the_same_request_and_its_answer_is_kept() {
        let retry = Retry::new(Script::new([unavailable(), Some(Ok(()))]), policy(3));
        let started = Instant::now();
        retry
            .terminate_stream(CallOptions::new(), &request())
            .await
            .unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert_eq!(*retry.inner().seen.lock(), [request(), request()]);
    }

    #[tokio::test(start_paused = true)]
    async fn without_retries_one_attempt_is_made() {
        let retry = Retry::new(Script::new([unavailable(), Some(Ok(()))]), policy(0));
        let error = retry
            .terminate_stream(CallOptions::new(), &request())
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::Unavailable);
        assert_eq!(retry.inner().seen.lock().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_cuts_the_first_attempt_and_names_it() {
        let retry =
            Retry::new(Script::new([None]), policy(3)).with_deadline(Duration::from_secs(5));
        let started = Instant::now();
        let error = retry
            .terminate_stream(CallOptions::new(), &request())
            .await
            .unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(error.code(), Code::DeadlineExceeded);
        assert!(error.to_string().contains("during attempt 1"), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_cuts_a_later_attempt_and_names_it() {
        let retry = Retry::new(Script::new([unavailable(), None]), policy(3))
            .with_deadline(Duration::from_secs(5));
        let started = Instant::now();
        let error = retry
            .terminate_stream(CallOptions::new(), &request())
            .await
            .unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert!(error.to_string().contains("during attempt 2"), "{error}");
        assert_eq!(retry.inner().seen.lock().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_first_answer_is_returned_without_waiting() {
        let retry = Retry::new(
            Script::new([Some(Err(Error::invalid_field("id", "bad")))]),
            policy(3),
        );
        let started = Instant::now();
        let error = retry
            .terminate_stream(CallOptions::new(), &request())
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(retry.inner().seen.lock().len(), 1);
    }
}
