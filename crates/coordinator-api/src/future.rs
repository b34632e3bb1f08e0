use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The future returned by [`Coordinator`](crate::Coordinator) methods.
///
/// It is either an answer that is already known ([`ready`](Self::ready), no
/// allocation: what a cache hit returns) or a boxed, `Send` future
/// ([`new`](Self::new)). Dropping it cancels the caller's wait; whether that
/// cancels any remote work is up to the implementation.
#[must_use = "futures do nothing unless awaited"]
pub struct CoordinatorFuture<'a, T> {
    inner: Inner<'a, T>,
}

enum Inner<'a, T> {
    Ready(Option<T>),
    Boxed(Pin<Box<dyn Future<Output = T> + Send + 'a>>),
}

// The value in `Ready` is never pinned: it is moved out on poll.
impl<T> Unpin for CoordinatorFuture<'_, T> {}

impl<'a, T> CoordinatorFuture<'a, T> {
    /// A future that resolves to `value` on first poll, without allocating.
    pub fn ready(value: T) -> Self {
        CoordinatorFuture {
            inner: Inner::Ready(Some(value)),
        }
    }

    /// Boxes `future`.
    pub fn new<F>(future: F) -> Self
    where
        F: Future<Output = T> + Send + 'a,
    {
        CoordinatorFuture {
            inner: Inner::Boxed(Box::pin(future)),
        }
    }

    /// Wraps an already boxed future.
    pub fn from_boxed(future: Pin<Box<dyn Future<Output = T> + Send + 'a>>) -> Self {
        CoordinatorFuture {
            inner: Inner::Boxed(future),
        }
    }
}

impl<T> Future for CoordinatorFuture<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match &mut self.get_mut().inner {
            Inner::Ready(value) => match value.take() {
                Some(v) => Poll::Ready(v),
                // Polled again after completion: stay pending rather than panic.
                None => Poll::Pending,
            },
            Inner::Boxed(fut) => fut.as_mut().poll(cx),
        }
    }
}

impl<T> fmt::Debug for CoordinatorFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.inner {
            Inner::Ready(_) => "CoordinatorFuture::Ready",
            Inner::Boxed(_) => "CoordinatorFuture::Boxed",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[tokio::test]
    async fn ready_and_boxed_resolve() {
        let r = CoordinatorFuture::ready(5);
        assert_send(&r);
        assert_eq!(r.await, 5);
        let b = CoordinatorFuture::new(async { 6 });
        assert_send(&b);
        assert_eq!(b.await, 6);
    }
}
