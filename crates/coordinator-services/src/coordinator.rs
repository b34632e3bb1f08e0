//! [`ServicesCoordinator`]: the collector's [`Coordinator`] over any
//! [`ServicesClient`].

use std::fmt;
use std::sync::Arc;

use coordinator_api::{
    Coordinator, CoordinatorFuture, Error, LogStreamState, RegisterRequest, TerminateRequest,
};

use crate::batch::BatchingClient;
use crate::client::{CallOptions, ServicesClient, SharedClient};
use crate::convert::{register_to_wire, state_from_checked, state_from_wire, terminate_to_wire};
use crate::panic::CatchPanic;
use crate::retry::RetryPolicy;

/// A [`Coordinator`] over any [`ServicesClient`]: client-side validation,
/// request building and response mapping, the same for every transport.
///
/// - `register_stream` checks what the request's types do not (a non-empty
///   protocol version: a permanent `InvalidArgument` error naming the field,
///   and nothing is sent), sends `RegisterStreamRequest` with
///   `terminal_index = -1` when absent, and maps the response to a
///   [`LogStreamState`] carrying the request's project and path. A malformed
///   response is a transient `Internal` error naming the field.
/// - `terminate_stream` sends `TerminateStreamRequest` (the path is not sent).
/// - A panic inside the client is a transient `Internal` error for the call.
///
/// Retries, timeouts, limits and batching are the client's: build the usual
/// stack with [`ServicesStack`](crate::ServicesStack), or compose the layers
/// yourself and pass the result to [`new`](Self::new).
///
/// Cheap to clone when `S` is. Cancel-safe: dropping a call's future abandons
/// it.
#[derive(Clone)]
pub struct ServicesCoordinator<S = SharedClient> {
    client: S,
    batching: Option<BatchingClient>,
    /// Set only by [`ServicesStack`](crate::ServicesStack), whose client is
    /// then its retry layer: that layer already turns panics into errors and
    /// checks every answer, so the calls here skip doing both a second time.
    retry: Option<RetryPolicy>,
}

impl<S: ServicesClient> ServicesCoordinator<S> {
    /// A coordinator over `client`, as it is.
    pub fn new(client: S) -> Self {
        ServicesCoordinator {
            client,
            batching: None,
            retry: None,
        }
    }

    /// The client calls go through.
    pub fn client(&self) -> &S {
        &self.client
    }

    /// The batching client in the stack, if [`ServicesStack`](crate::ServicesStack)
    /// built one (for its [`stats`](BatchingClient::stats)).
    pub fn batching_client(&self) -> Option<&BatchingClient> {
        self.batching.as_ref()
    }

    /// The retry policy of the stack, if [`ServicesStack`](crate::ServicesStack)
    /// built it.
    pub fn retry_policy(&self) -> Option<&RetryPolicy> {
        self.retry.as_ref()
    }

    /// With batching in the stack, sends what is queued and waits for all
    /// outstanding batches ([`BatchingClient::flush`]); otherwise returns at
    /// once.
    pub async fn flush(&self) {
        if let Some(batching) = &self.batching {
            batching.flush().await;
        }
    }

    /// With batching in the stack, flushes and stops the batching client
    /// ([`BatchingClient::close`]): later calls fail with a transient
    /// `Unavailable` error. Otherwise returns at once.
    pub async fn close(&self) {
        if let Some(batching) = &self.batching {
            batching.close().await;
        }
    }

    pub(crate) fn with_parts(
        mut self,
        batching: Option<BatchingClient>,
        retry: Option<RetryPolicy>,
    ) -> Self {
        self.batching = batching;
        self.retry = retry;
        self
    }
}

impl<S> fmt::Debug for ServicesCoordinator<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServicesCoordinator")
            .field("retry", &self.retry)
            .field("batching", &self.batching)
            .finish_non_exhaustive()
    }
}

/// Checks what the request's types do not: a non-empty protocol version.
/// (Project, path, secret and terminal index are validated by their types;
/// raw input is validated by [`RegisterRequest::parse`].)
pub fn validate_register(request: &RegisterRequest) -> Result<(), Error> {
    if request.proto_version.is_empty() {
        return Err(Error::invalid_field("proto_version", "must not be empty"));
    }
    Ok(())
}

/// `register_stream` over `client`; `guarded`: the client contains panics
/// and checks answers itself.
pub(crate) fn register<'a, S: ServicesClient + ?Sized>(
    client: &'a S,
    request: &'a RegisterRequest,
    desc: &'a [u8],
    guarded: bool,
) -> CoordinatorFuture<'a, Result<Arc<LogStreamState>, Error>> {
    if let Err(error) = validate_register(request) {
        return CoordinatorFuture::ready(Err(error));
    }
    let wire = register_to_wire(request, desc);
    CoordinatorFuture::new(async move {
        if guarded {
            let response = client.register_stream(CallOptions::new(), &wire).await?;
            return state_from_checked(request, response).map(Arc::new);
        }
        let call = CatchPanic::call("RegisterStream", || {
            client.register_stream(CallOptions::new(), &wire)
        });
        let response = call.await?;
        state_from_wire(request, response).map(Arc::new)
    })
}

/// `terminate_stream` over `client`; `guarded`: the client contains panics
/// itself.
pub(crate) fn terminate<'a, S: ServicesClient + ?Sized>(
    client: &'a S,
    request: &'a TerminateRequest,
    guarded: bool,
) -> CoordinatorFuture<'a, Result<(), Error>> {
    let wire = terminate_to_wire(request);
    CoordinatorFuture::new(async move {
        if guarded {
            return client.terminate_stream(CallOptions::new(), &wire).await;
        }
        CatchPanic::call("TerminateStream", || {
            client.terminate_stream(CallOptions::new(), &wire)
        })
        .await
    })
}

impl<S: ServicesClient> Coordinator for ServicesCoordinator<S> {
    /// Registers the stream: validates the request (nothing is sent if it is
    /// invalid), sends it through the client and maps the answer.
    fn register_stream<'a>(
        &'a self,
        request: &'a RegisterRequest,
        desc: &'a [u8],
    ) -> CoordinatorFuture<'a, Result<Arc<LogStreamState>, Error>> {
        register(&self.client, request, desc, self.retry.is_some())
    }

    /// Records the terminal index through the client.
    fn terminate_stream<'a>(
        &'a self,
        request: &'a TerminateRequest,
    ) -> CoordinatorFuture<'a, Result<(), Error>> {
        terminate(&self.client, request, self.retry.is_some())
    }
}
