//! [`Floor`]: the plain baseline.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use coordinator_api::{
    Coordinator, CoordinatorFuture, Error, LogStreamState, ProjectName, RegisterRequest,
    StreamPath, TerminateRequest,
};
use parking_lot::Mutex;

use super::{Candidate, Remote, now_or_never};

const SHARDS: usize = 16;

/// One shard: `(project, path, state)` rows.
type Table = hashbrown::HashTable<(ProjectName, StreamPath, Arc<LogStreamState>)>;

/// The floor: 16 mutex-sharded hash tables (hashbrown, foldhash), keyed by
/// `(project, path)` and looked up by borrowed text, holding `Arc` states: what a
/// lookup costs at least. No expiry, no LRU order, no bound, no coalescing (a miss
/// calls the inner coordinator from the caller, then inserts; concurrent misses
/// of a key each make a call), errors not kept, terminate passed through.
pub struct Floor {
    inner: Arc<Remote>,
    hasher: foldhash::fast::RandomState,
    shards: Vec<Padded<Mutex<Table>>>,
}

#[repr(align(128))]
struct Padded<T>(T);

impl Floor {
    #[inline]
    fn hash(&self, project: &str, path: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(project.as_bytes());
        h.write_u8(0xff);
        h.write(path.as_bytes());
        h.finish()
    }

    #[inline]
    fn shard(&self, hash: u64) -> &Mutex<Table> {
        &self.shards[(hash >> 40) as usize % SHARDS].0
    }

    /// Keeps `state` for `request`'s key unless a concurrent miss kept one first;
    /// answers the kept state.
    fn insert(
        &self,
        hash: u64,
        request: &RegisterRequest,
        state: Arc<LogStreamState>,
    ) -> Arc<LogStreamState> {
        let (project, path) = (request.project.as_str(), request.path.as_str());
        let mut table = self.shard(hash).lock();
        match table.entry(
            hash,
            |(p, s, _)| s.as_str() == path && p.as_str() == project,
            |(p, s, _)| self.hash(p.as_str(), s.as_str()),
        ) {
            hashbrown::hash_table::Entry::Occupied(o) => Arc::clone(&o.get().2),
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert((
                    request.project.clone(),
                    request.path.clone(),
                    Arc::clone(&state),
                ));
                state
            }
        }
    }
}

impl Candidate for Floor {
    const NAME: &'static str = "floor";

    fn build(inner: Arc<Remote>, _size: usize) -> Self {
        Floor {
            inner,
            hasher: foldhash::fast::RandomState::default(),
            shards: (0..SHARDS)
                .map(|_| Padded(Mutex::new(hashbrown::HashTable::new())))
                .collect(),
        }
    }

    fn entries(&self) -> u64 {
        self.shards.iter().map(|s| s.0.lock().len() as u64).sum()
    }
}

impl Coordinator for Floor {
    fn register_stream<'a>(
        &'a self,
        request: &'a RegisterRequest,
        desc: &'a [u8],
    ) -> CoordinatorFuture<'a, Result<Arc<LogStreamState>, Error>> {
        let (project, path) = (request.project.as_str(), request.path.as_str());
        let hash = self.hash(project, path);
        if let Some((_, _, state)) = self.shard(hash).lock().find(hash, |(p, s, _)| {
            s.as_str() == path && p.as_str() == project
        }) {
            return CoordinatorFuture::ready(Ok(Arc::clone(state)));
        }
        let mut call = self.inner.register_stream(request, desc);
        match now_or_never(&mut call) {
            Some(outcome) => {
                CoordinatorFuture::ready(outcome.map(|s| self.insert(hash, request, s)))
            }
            None => {
                CoordinatorFuture::new(
                    async move { call.await.map(|s| self.insert(hash, request, s)) },
                )
            }
        }
    }

    fn terminate_stream<'a>(
        &'a self,
        request: &'a TerminateRequest,
    ) -> CoordinatorFuture<'a, Result<(), Error>> {
        self.inner.terminate_stream(request)
    }
}
