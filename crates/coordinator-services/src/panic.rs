//! Turning a panic inside a call into an error for that call's callers.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use coordinator_api::{CoordinatorFuture, Error};

use crate::convert::truncate_message;

/// Wraps a call's future: a panic while polling it becomes a transient
/// `Internal` error ("`what` panicked: …") instead of unwinding into the
/// caller. Nothing a server sends may panic a caller; a transport bug that
/// does is contained to the attempt it happened in.
///
/// After a panic the inner future is dropped, never polled again.
pub struct CatchPanic<F> {
    what: &'static str,
    inner: Option<F>,
}

impl<F> CatchPanic<F> {
    /// Wraps `future`; `what` names the call in the error.
    pub fn new(what: &'static str, future: F) -> Self {
        CatchPanic {
            what,
            inner: Some(future),
        }
    }
}

impl<T> CatchPanic<CoordinatorFuture<'_, Result<T, Error>>> {
    /// Makes the call's future with `call` and wraps it: a panic while making
    /// the future, or while polling it, is a transient `Internal` error.
    pub fn call<'a, C>(
        what: &'static str,
        call: C,
    ) -> CatchPanic<CoordinatorFuture<'a, Result<T, Error>>>
    where
        C: FnOnce() -> CoordinatorFuture<'a, Result<T, Error>>,
        T: Send + 'a,
    {
        let future = match catch_unwind(AssertUnwindSafe(call)) {
            Ok(future) => future,
            Err(payload) => {
                let error = panic_error(what, payload.as_ref());
                tracing::error!(%error, "a call panicked");
                CoordinatorFuture::ready(Err(error))
            }
        };
        CatchPanic::new(what, future)
    }
}

impl<F> std::fmt::Debug for CatchPanic<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatchPanic")
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

impl<F, T> Future for CatchPanic<F>
where
    F: Future<Output = Result<T, Error>> + Unpin,
{
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let what = self.what;
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Pending;
        };
        match catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Ready(output)) => {
                self.inner = None;
                Poll::Ready(output)
            }
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => {
                self.inner = None;
                let error = panic_error(what, payload.as_ref());
                tracing::error!(%error, "a call panicked");
                Poll::Ready(Err(error))
            }
        }
    }
}

/// The transient error for a panic with `payload` inside `what`.
pub fn panic_error(what: &str, payload: &(dyn Any + Send)) -> Error {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-string panic payload");
    Error::internal(format!("{what} panicked: {}", truncate_message(message)))
}

#[cfg(test)]
mod tests {
    use coordinator_api::Code;

    use super::*;

    #[tokio::test]
    async fn a_panic_is_a_transient_internal_error() {
        let f = CoordinatorFuture::<Result<(), Error>>::new(async { panic!("boom {}", 7) });
        let e = CatchPanic::new("the call", f).await.unwrap_err();
        assert_eq!(e.code(), Code::Internal);
        assert!(e.is_transient());
        assert_eq!(e.message(), "the call panicked: boom 7");
        let f = CoordinatorFuture::<Result<(), Error>>::new(async { std::panic::panic_any(42_u8) });
        let e = CatchPanic::new("x", f).await.unwrap_err();
        assert!(e.message().contains("non-string"), "{e}");
        let ok = CatchPanic::new("x", CoordinatorFuture::ready(Ok::<_, Error>(3)));
        assert_eq!(ok.await, Ok(3));
        let e = CatchPanic::call("making", || -> CoordinatorFuture<'_, Result<(), Error>> {
            panic!("early")
        })
        .await
        .unwrap_err();
        assert_eq!(e.message(), "making panicked: early");
    }
}
