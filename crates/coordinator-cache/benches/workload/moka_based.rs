//! [`MokaCoordinator`]: our cache's semantics on `moka::future::Cache`.

use std::sync::Arc;

use coordinator_api::{
    Coordinator, CoordinatorFuture, Error, LogStreamState, RegisterRequest, TerminateRequest,
};
use moka::future::Cache;
use moka::policy::EvictionPolicy;

use super::key::{KeyRef, KeyView, Slot, StreamKey};
use super::{Candidate, EXPIRATION, Remote, block_on, size_or_default};

/// A `Coordinator` cache on `moka::future::Cache`, built as moka's documentation
/// suggests: `try_get_with` coalesces concurrent registers of a key into one inner
/// call; `time_to_live` = the expiration; `max_capacity` = the size, with moka's
/// LRU eviction policy (its default, TinyLFU, may refuse new entries); foldhash
/// as the hasher (as ours).
///
/// Kept as in ours: successes and permanent errors (the cached value is a
/// [`Slot`] holding either); transient errors go to the callers of the attempt
/// that failed (moka hands an `Err` to every waiter) and are not kept; the remote
/// terminal index is remembered (from the state, or a successful terminate) and
/// filled into answers; a terminate with a known index makes no inner call.
///
/// Lacks, compared with ours:
/// - **cancel-safety of the leader**: the inner call runs inside the first
///   caller's future; dropping it cancels the call, and one of the waiters starts
///   it again (a second inner call; moka panics after a bounded number of such
///   restarts);
/// - **a terminate promise**: concurrent terminates of a stream are not coalesced,
///   and a terminate of a stream with no entry does not create one;
/// - a hit allocates: `moka::future::Cache` has only async lookups, so every call
///   returns a boxed future (`CoordinatorFuture::new`);
/// - expiry is on moka's clock (`std::time::Instant`), so Tokio's paused time
///   does not apply; eviction is moka's (approximate, amortised maintenance run
///   by callers).
pub struct MokaCoordinator {
    inner: Arc<Remote>,
    cache: Cache<StreamKey, Arc<Slot>, foldhash::fast::RandomState>,
}

impl Candidate for MokaCoordinator {
    const NAME: &'static str = "moka";

    fn build(inner: Arc<Remote>, size: usize) -> Self {
        MokaCoordinator {
            inner,
            cache: Cache::builder()
                .max_capacity(size_or_default(size) as u64)
                .time_to_live(EXPIRATION)
                .eviction_policy(EvictionPolicy::lru())
                .build_with_hasher(foldhash::fast::RandomState::default()),
        }
    }

    fn entries(&self) -> u64 {
        self.cache.entry_count()
    }

    fn settle(&self) {
        block_on(self.cache.run_pending_tasks());
    }
}

impl Coordinator for MokaCoordinator {
    fn register_stream<'a>(
        &'a self,
        request: &'a RegisterRequest,
        desc: &'a [u8],
    ) -> CoordinatorFuture<'a, Result<Arc<LogStreamState>, Error>> {
        CoordinatorFuture::new(async move {
            // Lazy: the inner call starts only if this caller is the one moka runs.
            let init = async move {
                match self.inner.register_stream(request, desc).await {
                    Err(e) if e.is_transient() => Err(e),
                    outcome => Ok(Arc::new(Slot::kept(outcome))),
                }
            };
            let key: &dyn KeyView = request;
            match self.cache.try_get_with_by_ref(key, init).await {
                Ok(slot) => slot.answer(),
                Err(e) => Err(Error::clone(&e)),
            }
        })
    }

    fn terminate_stream<'a>(
        &'a self,
        request: &'a TerminateRequest,
    ) -> CoordinatorFuture<'a, Result<(), Error>> {
        CoordinatorFuture::new(async move {
            let key = KeyRef::new(&request.project, &request.path);
            let slot = self.cache.get(&key).await;
            if slot.as_ref().is_some_and(|s| s.terminate_known(request)) {
                return Ok(());
            }
            self.inner.terminate_stream(request).await?;
            if let Some(slot) = slot {
                slot.remember_index(request.terminal_index);
            }
            Ok(())
        })
    }
}
