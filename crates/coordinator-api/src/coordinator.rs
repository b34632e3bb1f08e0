use std::sync::Arc;

use crate::{CoordinatorFuture, Error, LogStreamState, RegisterRequest, TerminateRequest};

/// A LogDog Coordinator, as a collector uses it.
///
/// Implementations: the gRPC transport, the cache (which wraps another
/// `Coordinator`), and the test fakes. The trait is object-safe
/// (`Arc<dyn Coordinator>` works) and its futures are `Send`. It is implemented for
/// `&T`, `Arc<T>` and `Box<T>` of any implementation.
///
/// All errors say whether they are transient ([`Error::is_transient`]); see the
/// behaviour contract, `docs/behaviour.md` §3, for which are.
///
/// # Implementing it
///
/// Return [`CoordinatorFuture::new`] around an `async move` block that borrows
/// `self` and the request for `'a`, or [`CoordinatorFuture::ready`] when the
/// answer is known without waiting (no allocation). A middleware that counts
/// registrations and delegates to the coordinator it wraps:
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use coordinator_api::{Coordinator, CoordinatorFuture, Error, LogStreamState,
///     RegisterRequest, StreamId, TerminateRequest};
///
/// struct Counting<C> {
///     inner: C,
///     registers: AtomicU64,
/// }
///
/// impl<C: Coordinator> Coordinator for Counting<C> {
///     fn register_stream<'a>(&'a self, request: &'a RegisterRequest, desc: &'a [u8])
///         -> CoordinatorFuture<'a, Result<Arc<LogStreamState>, Error>>
///     {
///         CoordinatorFuture::new(async move {
///             self.registers.fetch_add(1, Ordering::Relaxed);
///             self.inner.register_stream(request, desc).await
///         })
///     }
///
///     fn terminate_stream<'a>(&'a self, request: &'a TerminateRequest)
///         -> CoordinatorFuture<'a, Result<(), Error>>
///     {
///         // Nothing to add: hand over the inner future as it is.
///         self.inner.terminate_stream(request)
///     }
/// }
///
/// /// Accepts every stream at once (a stand-in for a real transport).
/// struct AcceptAll;
///
/// impl Coordinator for AcceptAll {
///     fn register_stream<'a>(&'a self, request: &'a RegisterRequest, _desc: &'a [u8])
///         -> CoordinatorFuture<'a, Result<Arc<LogStreamState>, Error>>
///     {
///         let id = StreamId::for_path(&request.path);
///         CoordinatorFuture::ready(Ok(Arc::new(LogStreamState::from_request(request, id))))
///     }
///
///     fn terminate_stream<'a>(&'a self, _request: &'a TerminateRequest)
///         -> CoordinatorFuture<'a, Result<(), Error>>
///     {
///         CoordinatorFuture::ready(Ok(()))
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let counting = Counting { inner: AcceptAll, registers: AtomicU64::new(0) };
/// let request = RegisterRequest::parse("chromium", "builds/1/+/stdout", &[7; 36], None)?;
/// let state = counting.register_stream(&request, b"descriptor").await?;
/// assert_eq!(state.path, request.path);
/// assert_eq!(counting.registers.load(Ordering::Relaxed), 1);
/// # Ok::<(), Error>(())
/// # }).unwrap();
/// ```
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
