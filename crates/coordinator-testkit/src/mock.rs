//! [`MockCoordinator`]: a `mockall` mock of the [`Coordinator`] trait.
//!
//! `mockall` cannot mock the trait's methods directly: their generic lifetime
//! appears in the return type (`CoordinatorFuture<'a, _>`), which `mockall` does
//! not support. So the mock is generated for a private mirror of the trait whose
//! methods return the result itself, and [`MockCoordinator`] implements
//! [`Coordinator`] by answering with that result at once
//! ([`CoordinatorFuture::ready`]). Expectations are set with the usual
//! `expect_register_stream()` / `expect_terminate_stream()`; the closures get the
//! same arguments as the trait methods and return the `Result`.
//!
//! For calls that must stay in flight, fail in scripted sequences or take time, use
//! [`FakeCoordinator`](crate::FakeCoordinator) instead.

use std::sync::Arc;

use coordinator_api::{
    Coordinator, CoordinatorFuture, Error, LogStreamState, RegisterRequest, TerminateRequest,
};

/// The synchronous mirror of [`Coordinator`] that `mockall` generates the mock
/// from.
trait CoordinatorCalls {
    fn register_stream(
        &self,
        request: &RegisterRequest,
        desc: &[u8],
    ) -> Result<Arc<LogStreamState>, Error>;

    fn terminate_stream(&self, request: &TerminateRequest) -> Result<(), Error>;
}

mockall::mock! {
    /// A `mockall` mock of [`Coordinator`]: set expectations with
    /// `expect_register_stream()` and `expect_terminate_stream()`, whose closures
    /// return the call's `Result`; every call answers immediately.
    ///
    /// As with any `mockall` mock, an unexpected call panics, and unmet `times`
    /// expectations panic when the mock is dropped.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use coordinator_api::{Code, Coordinator, Error, LogStreamState, RegisterRequest,
    ///     StreamId, TerminateRequest, MessageIndex};
    /// use coordinator_testkit::MockCoordinator;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let mut mock = MockCoordinator::new();
    /// mock.expect_register_stream()
    ///     .withf(|req, desc| req.path.as_str() == "builds/1/+/stdout" && desc == b"desc")
    ///     .times(1)
    ///     .returning(|req, _desc| {
    ///         Ok(Arc::new(LogStreamState::from_request(req, StreamId::for_path(&req.path))))
    ///     });
    /// mock.expect_terminate_stream()
    ///     .returning(|_req| Err(Error::not_found("no such stream")));
    ///
    /// let req = RegisterRequest::parse("chromium", "builds/1/+/stdout", &[7; 36], None)?;
    /// let state = mock.register_stream(&req, b"desc").await?;
    /// assert!(state.id.is_sha256_hex());
    /// let term = TerminateRequest::for_state(&state, MessageIndex::from(3));
    /// assert_eq!(mock.terminate_stream(&term).await.unwrap_err().code(), Code::NotFound);
    /// # Ok::<(), Error>(())
    /// # }).unwrap();
    /// ```
    pub Coordinator {}

    impl CoordinatorCalls for Coordinator {
        fn register_stream(
            &self,
            request: &RegisterRequest,
            desc: &[u8],
        ) -> Result<Arc<LogStreamState>, Error>;

        fn terminate_stream(&self, request: &TerminateRequest) -> Result<(), Error>;
    }
}

impl Coordinator for MockCoordinator {
    fn register_stream<'a>(
        &'a self,
        request: &'a RegisterRequest,
        desc: &'a [u8],
    ) -> CoordinatorFuture<'a, Result<Arc<LogStreamState>, Error>> {
        CoordinatorFuture::ready(CoordinatorCalls::register_stream(self, request, desc))
    }

    fn terminate_stream<'a>(
        &'a self,
        request: &'a TerminateRequest,
    ) -> CoordinatorFuture<'a, Result<(), Error>> {
        CoordinatorFuture::ready(CoordinatorCalls::terminate_stream(self, request))
    }
}
