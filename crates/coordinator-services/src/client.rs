//! [`ServicesClient`]: the wire-level client of `logdog.Services`.

use std::sync::Arc;
use std::time::Duration;

use coordinator_api::{CoordinatorFuture, Error};
use tokio::time::Instant;

use crate::proto::logdog as proto;

/// The future a [`ServicesClient`] method returns: a boxed `Send` future, or a
/// ready answer with no allocation.
pub type ServicesFuture<'a, T> = CoordinatorFuture<'a, Result<T, Error>>;

/// What the layers above a call tell the layers below it about that call.
///
/// A transport sends [`remaining`](Self::remaining) to the server as the call's
/// timeout (`grpc-timeout`, `X-Prpc-Grpc-Timeout`) and refuses a response body
/// larger than [`max_response_size`](Self::max_response_size). Layers narrow
/// it: the attempt timeout sets the deadline; the batching layer bounds the
/// response size by what its batch can legitimately answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallOptions {
    /// When the caller stops waiting for this call (`None`: no deadline).
    pub deadline: Option<Instant>,
    /// The largest response the caller accepts, in bytes (`None`: the
    /// transport's own limit).
    pub max_response_size: Option<usize>,
}

impl CallOptions {
    /// No deadline, no response-size bound beyond the transport's.
    pub fn new() -> Self {
        CallOptions::default()
    }

    /// The same options with the deadline at `at`, or the current one if that
    /// is earlier.
    pub fn with_deadline(mut self, at: Instant) -> Self {
        self.deadline = Some(self.deadline.map_or(at, |current| current.min(at)));
        self
    }

    /// The same options with a response-size bound of `bytes`, or the current
    /// one if that is smaller.
    pub fn with_max_response_size(mut self, bytes: usize) -> Self {
        self.max_response_size = Some(self.max_response_size.map_or(bytes, |b| b.min(bytes)));
        self
    }

    /// The time left until the deadline (zero once it has passed), if there is
    /// one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|at| at.saturating_duration_since(Instant::now()))
    }
}

/// A client of LogDog's `logdog.Services` API, at the wire level: protobuf
/// messages in, protobuf messages or a [`coordinator_api::Error`] out.
///
/// This is the seam between transports and everything above them. A transport
/// (`coordinator-grpc`, `coordinator-prpc`, or your own) implements it for one
/// attempt of each RPC; the layers of this crate implement it over another
/// `ServicesClient` ([`Retry`](crate::Retry),
/// [`AttemptTimeout`](crate::AttemptTimeout),
/// [`ConcurrencyLimit`](crate::ConcurrencyLimit),
/// [`BatchingClient`](crate::BatchingClient)), and
/// [`ServicesCoordinator`](crate::ServicesCoordinator) adapts any of them to
/// the collector's [`Coordinator`](coordinator_api::Coordinator).
///
/// Contract for implementations:
/// - An error the server answered (a status, a pRPC code) keeps its code and
///   message ([`convert::error_from_code`](crate::convert::error_from_code)): it
///   is the server's verdict, and a cache may keep a permanent one.
/// - Everything the client produced itself (no connection, a response it could
///   not decode or that was too large, a local timeout, a missing token) is a
///   *transient* error, so that it is retried and never kept.
/// - Nothing a server sends may panic.
/// - [`CallOptions`] are honoured where the wire allows: the deadline is sent as
///   the call's timeout, and a response larger than `max_response_size` is
///   refused without being buffered.
///
/// Requests are borrowed for the call: a retry layer sends the same request
/// again without copying it, and a transport that encodes from a reference
/// (as both of ours do) never copies it at all. An implementation that needs
/// the message owned clones it.
///
/// The trait is object-safe: `Arc<dyn ServicesClient>` is a `ServicesClient`.
/// `load_stream` has a default implementation that answers `Unimplemented`.
pub trait ServicesClient: Send + Sync {
    /// One `RegisterStream` call.
    fn register_stream<'a>(
        &'a self,
        options: CallOptions,
        request: &'a proto::RegisterStreamRequest,
    ) -> ServicesFuture<'a, proto::RegisterStreamResponse>;

    /// One `TerminateStream` call (the response is `google.protobuf.Empty`).
    fn terminate_stream<'a>(
        &'a self,
        options: CallOptions,
        request: &'a proto::TerminateStreamRequest,
    ) -> ServicesFuture<'a, ()>;

    /// One `Batch` call.
    fn batch<'a>(
        &'a self,
        options: CallOptions,
        request: &'a proto::BatchRequest,
    ) -> ServicesFuture<'a, proto::BatchResponse>;

    /// One `LoadStream` call. The default answers a permanent `Unimplemented`
    /// error.
    fn load_stream<'a>(
        &'a self,
        options: CallOptions,
        request: &'a proto::LoadStreamRequest,
    ) -> ServicesFuture<'a, proto::LoadStreamResponse> {
        let _ = (options, request);
        CoordinatorFuture::ready(Err(Error::new(
            coordinator_api::Code::Unimplemented,
            "LoadStream is not implemented by this client",
        )))
    }
}

macro_rules! forward {
    ($($ty:ty),*) => {$(
        impl<T: ServicesClient + ?Sized> ServicesClient for $ty {
            fn register_stream<'a>(
                &'a self,
                options: CallOptions,
                request: &'a proto::RegisterStreamRequest,
            ) -> ServicesFuture<'a, proto::RegisterStreamResponse> {
                (**self).register_stream(options, request)
            }

            fn terminate_stream<'a>(
                &'a self,
                options: CallOptions,
                request: &'a proto::TerminateStreamRequest,
            ) -> ServicesFuture<'a, ()> {
                (**self).terminate_stream(options, request)
            }

            fn batch<'a>(
                &'a self,
                options: CallOptions,
                request: &'a proto::BatchRequest,
            ) -> ServicesFuture<'a, proto::BatchResponse> {
                (**self).batch(options, request)
            }

            fn load_stream<'a>(
                &'a self,
                options: CallOptions,
                request: &'a proto::LoadStreamRequest,
            ) -> ServicesFuture<'a, proto::LoadStreamResponse> {
                (**self).load_stream(options, request)
            }
        }
    )*};
}

forward!(&T, Arc<T>, Box<T>);

/// A shared, type-erased client: what the stack builder produces.
pub type SharedClient = Arc<dyn ServicesClient>;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn options_narrow_never_widen() {
        let now = Instant::now();
        let o = CallOptions::new()
            .with_deadline(now + Duration::from_secs(5))
            .with_deadline(now + Duration::from_secs(9));
        assert_eq!(o.deadline, Some(now + Duration::from_secs(5)));
        assert_eq!(o.remaining(), Some(Duration::from_secs(5)));
        let o = o.with_max_response_size(100).with_max_response_size(1000);
        assert_eq!(o.max_response_size, Some(100));
        tokio::time::advance(Duration::from_secs(7)).await;
        assert_eq!(o.remaining(), Some(Duration::ZERO));
        assert_eq!(CallOptions::new().remaining(), None);
    }
}
