use std::sync::Arc;

use crate::{CoordinatorFuture, Error, LogStreamState, RegisterRequest, TerminateRequest};

/// A LogDog Coordinator, as a collector uses it.
///
/// Implementations: the gRPC transport, the cache (which wraps another
/// `Coordinator`), and the test fakes. The trait is object-safe
/// (`Arc<dyn Coordinator>` works) and its futures are `Send`. It is implemented for
/// `&T`, `Arc<T>` and `Box<T>` of any implementation.
///
/// All errors say whether they are transient ([`Error::is_transient`]).
pub trait Coordinator: Send + Sync {
    /// Registers a stream and returns the Coordinator's view of it.
    ///
    /// `desc` is the serialized `LogStreamDescriptor` (opaque here). The returned
    /// state carries the request's project and path, and the remote ID, protocol
    /// version, secret, terminal index, archived and purged flags. Registration is
    /// idempotent remotely: registering an existing stream returns its stored
    /// state.
    fn register_stream<'a>(
        &'a self,
        request: &'a RegisterRequest,
        desc: &'a [u8],
    ) -> CoordinatorFuture<'a, Result<Arc<LogStreamState>, Error>>;

    /// Records a stream's terminal index.
    fn terminate_stream<'a>(
        &'a self,
        request: &'a TerminateRequest,
    ) -> CoordinatorFuture<'a, Result<(), Error>>;
}

macro_rules! forward {
    ($($ty:ty),*) => {$(
        impl<T: Coordinator + ?Sized> Coordinator for $ty {
            fn register_stream<'a>(
                &'a self,
                request: &'a RegisterRequest,
                desc: &'a [u8],
            ) -> CoordinatorFuture<'a, Result<Arc<LogStreamState>, Error>> {
                (**self).register_stream(request, desc)
            }

            fn terminate_stream<'a>(
                &'a self,
                request: &'a TerminateRequest,
            ) -> CoordinatorFuture<'a, Result<(), Error>> {
                (**self).terminate_stream(request)
            }
        }
    )*};
}

forward!(&T, Arc<T>, Box<T>);
