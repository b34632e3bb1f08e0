//! [`QuickCacheCoordinator`]: our cache's semantics on `quick_cache::sync::Cache`.

use std::sync::Arc;

use coordinator_api::{
    Coordinator, CoordinatorFuture, Error, LogStreamState, RegisterRequest, TerminateRequest,
};
use quick_cache::sync::{Cache, EntryAction, EntryResult};
use tokio::time::Instant;

use super::key::{KeyRef, KeyView, Slot, StreamKey};
use super::{Candidate, EXPIRATION, Remote, size_or_default};

/// An entry: a [`Slot`] and when it expires.
pub struct Timed {
    deadline: Instant,
    slot: Slot,
}

/// A `Coordinator` cache on `quick_cache::sync::Cache` (its default hasher is
/// foldhash, as ours): a hit is a synchronous `get` (read lock, no allocation,
/// an already completed future); a miss waits on quick_cache's placeholder
/// (`get_value_or_guard_async`), so concurrent registers of a key make one inner
/// call, and the caller holding the guard makes it and inserts the answer. Expiry:
/// each entry stores its deadline (`tokio::time::Instant`, fixed when its call
/// starts), checked on every get; an expired entry is swapped for a placeholder
/// atomically (`entry_async` with `ReplaceWithGuard`). Capacity: the size, in
/// entries (unit weights).
///
/// Kept as in ours: successes and permanent errors; the remote terminal index
/// (from the state, or a successful terminate), filled into answers; a terminate
/// with a known index makes no inner call.
///
/// Lacks, compared with ours:
/// - **cancel-safety of the leader**: the inner call runs inside the caller that
///   got the guard; dropping it drops the guard, and one waiter gets a new guard
///   and starts the call again;
/// - **shared transient errors**: a failed attempt drops its guard without a
///   value, so its error reaches only the caller that made it; each waiter in
///   turn becomes the leader and makes its own attempt;
/// - **a terminate promise**: concurrent terminates of a stream are not coalesced,
///   and a terminate of a stream with no entry does not create one;
/// - an exact LRU bound: quick_cache evicts by its CLOCK-Pro-like policy per
///   shard, so the bound is approximate (a shard may evict before the cache as a
///   whole is full).
pub struct QuickCacheCoordinator {
    inner: Arc<Remote>,
    cache: Cache<StreamKey, Arc<Timed>>,
}

impl QuickCacheCoordinator {
    /// The live entry of `(project, path)`, if any (no allocation).
    #[inline]
    fn live(&self, key: KeyRef<'_>) -> Option<Arc<Timed>> {
        self.cache.get(&key).filter(|t| t.deadline > Instant::now())
    }

    async fn register_slow(
        &self,
        request: &RegisterRequest,
        desc: &[u8],
    ) -> Result<Arc<LogStreamState>, Error> {
        let key: &dyn KeyView = request;
        let now = Instant::now();
        let guard = match self.cache.get_value_or_guard_async(key).await {
            Ok(t) if t.deadline > now => return t.slot.answer(),
            // Expired: replace it with a placeholder, unless another caller
            // already put a live entry there.
            Ok(_) => match self
                .cache
                .entry_async(key, |_, t| {
                    if t.deadline > now {
                        EntryAction::Retain(Arc::clone(t))
                    } else {
                        EntryAction::ReplaceWithGuard
                    }
                })
                .await
            {
                EntryResult::Retained(t) => return t.slot.answer(),
                EntryResult::Vacant(guard) | EntryResult::Replaced(guard, _) => guard,
                EntryResult::Removed(..) | EntryResult::Timeout => {
                    return Err(Error::internal("quick_cache: unexpected entry result"));
                }
            },
            Err(guard) => guard,
        };
        let deadline = Instant::now() + EXPIRATION;
        match self.inner.register_stream(request, desc).await {
            // Dropping the guard lets the next waiter (if any) try.
            Err(e) if e.is_transient() => Err(e),
            outcome => {
                let entry = Arc::new(Timed {
                    deadline,
                    slot: Slot::kept(outcome),
                });
                let answer = entry.slot.answer();
                let _ = guard.insert(entry);
                answer
            }
        }
    }
}

impl Candidate for QuickCacheCoordinator {
    const NAME: &'static str = "quick_cache";

    fn build(inner: Arc<Remote>, size: usize) -> Self {
        QuickCacheCoordinator {
            inner,
            cache: Cache::new(size_or_default(size)),
        }
    }

    fn entries(&self) -> u64 {
        self.cache.len() as u64
    }
}

impl Coordinator for QuickCacheCoordinator {
    fn register_stream<'a>(
        &'a self,
        request: &'a RegisterRequest,
        desc: &'a [u8],
    ) -> CoordinatorFuture<'a, Result<Arc<LogStreamState>, Error>> {
        if let Some(t) = self.live(KeyRef::new(&request.project, &request.path)) {
            return CoordinatorFuture::ready(t.slot.answer());
        }
        CoordinatorFuture::new(self.register_slow(request, desc))
    }

    fn terminate_stream<'a>(
        &'a self,
        request: &'a TerminateRequest,
    ) -> CoordinatorFuture<'a, Result<(), Error>> {
        let live = self.live(KeyRef::new(&request.project, &request.path));
        if live
            .as_ref()
            .is_some_and(|t| t.slot.terminate_known(request))
        {
            return CoordinatorFuture::ready(Ok(()));
        }
        CoordinatorFuture::new(async move {
            self.inner.terminate_stream(request).await?;
            if let Some(t) = live {
                t.slot.remember_index(request.terminal_index);
            }
            Ok(())
        })
    }
}
