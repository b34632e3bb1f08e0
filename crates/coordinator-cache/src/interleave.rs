//! Seams for the model checker (`model_check`, unit tests only): the points where
//! it may switch to another task, and the clock and task spawner it stands in
//! for.
//!
//! Outside `cfg(test)` every function here is an empty `#[inline(always)]` body,
//! so the cache's code compiles exactly as if the calls were not there. In unit
//! tests they act only while a model runs on the current thread (see
//! `model_check::Model`); every other test sees the real clock and runtime.
//!
//! A scheduling point must never be reached while a shard lock is held: the
//! model runs all its tasks on one OS thread, so a task switched out while
//! holding a `parking_lot` lock would block the others for good.

#[cfg(not(test))]
mod imp {
    /// A point where the model checker may run another task first.
    #[inline(always)]
    pub(crate) fn point() {}

    /// The model's clock, in [`Clock`](crate::clock::Clock) nanoseconds.
    #[inline(always)]
    pub(crate) fn now() -> Option<u64> {
        None
    }

    /// Hands `call` to the model's executor; gives it back outside a model.
    #[inline(always)]
    pub(crate) fn spawn<F>(call: F) -> Result<(), F> {
        Err(call)
    }

    /// Takes `mutex`'s lock, after a scheduling point.
    #[inline(always)]
    pub(crate) fn lock<T>(mutex: &parking_lot::Mutex<T>) -> parking_lot::MutexGuard<'_, T> {
        mutex.lock()
    }
}

#[cfg(test)]
pub(crate) use crate::model_check::seams as imp;

pub(crate) use imp::{lock, now, point, spawn};
