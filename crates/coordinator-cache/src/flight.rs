//! One attempt of an inner call, shared by every caller that waits for it.

use std::sync::{Arc, OnceLock};

use tokio::sync::Notify;

/// The promise of one inner call: resolved at most once, awaited by any number of
/// callers.
///
/// A flight is owned by the task that runs the call (through its completion guard)
/// and by the waiters; the cache entry holds it only while the call is in flight.
/// Its `Arc` address is the attempt's identity: a completing call changes the entry
/// only if the entry still holds this very flight (the generation check). Since the
/// call holds the `Arc` until it has updated the entry, the address cannot be reused
/// by a newer flight in the meantime.
pub(crate) struct Flight<T> {
    result: OnceLock<T>,
    done: Notify,
}

impl<T: Clone> Flight<T> {
    /// A flight in progress.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Flight {
            result: OnceLock::new(),
            done: Notify::new(),
        })
    }

    /// Resolves the flight and wakes every waiter. Later calls are ignored (the
    /// first result stands).
    pub(crate) fn resolve(&self, value: T) {
        // Ignoring the error is the "first result stands" rule.
        let _ = self.result.set(value);
        crate::interleave::point();
        self.done.notify_waiters();
    }

    /// The result, if resolved.
    pub(crate) fn get(&self) -> Option<T> {
        self.result.get().cloned()
    }

    /// Waits for the result. Cancel-safe: dropping the wait has no effect on the
    /// flight or on other waiters.
    pub(crate) async fn wait(&self) -> T {
        loop {
            // Register for the wake-up before checking, so that a `resolve` between
            // the check and the await is not missed.
            let notified = self.done.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            crate::interleave::point();
            if let Some(value) = self.result.get() {
                return value.clone();
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_waiter_gets_the_first_result() {
        let flight = Flight::<u32>::new();
        let waiters: Vec<_> = (0..64)
            .map(|_| {
                let f = Arc::clone(&flight);
                tokio::spawn(async move { f.wait().await })
            })
            .collect();
        assert_eq!(flight.get(), None);
        flight.resolve(7);
        flight.resolve(8);
        for w in waiters {
            assert_eq!(w.await.unwrap(), 7);
        }
        // A waiter that arrives after resolution returns at once.
        assert_eq!(flight.wait().await, 7);
        assert_eq!(flight.get(), Some(7));
    }
}
