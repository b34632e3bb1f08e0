//! The cache benchmarks' shared workload and the implementations they compare.
//!
//! Workload (issue 3): project `chromium`, paths `prefix/<16 hex>/+/stdout`, states
//! with a 32-hex ID, protocol version `"1"` and a 36-byte secret. Requests are
//! built once per key; all share one `ProjectName` (one `Arc`), each has its own
//! path `Arc`. The inner coordinator answers at once ([`ZeroLatency`]).
//!
//! Implementations plug in through [`Candidate`]: anything that implements
//! `Coordinator` over a [`ZeroLatency`] inner. Here: [`CachedCoordinator`] and
//! [`Floor`], the plain baseline (16 mutex-sharded hash tables with a fast hash, no
//! expiry, no LRU, no coalescing). Other caches (moka, quick_cache) can be added as
//! more `Candidate`s.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::borrow::Cow;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use coordinator_api::{
    Coordinator, CoordinatorFuture, Error, LogStreamState, PROTOCOL_VERSION, PrefixSecret,
    ProjectName, RegisterRequest, StreamId, StreamPath, TerminateRequest,
};
use coordinator_cache::CachedCoordinator;
use parking_lot::Mutex;

pub const PROJECT: &str = "chromium";
pub const SECRET: [u8; 36] = [0x5a; 36];
/// The number of hot keys the hit benchmarks read.
pub const HOT_KEYS: usize = 10_000;
/// A descriptor-sized payload passed with every register.
pub const DESC: &[u8] = &[0x42; 96];

/// A deterministic 64-bit mix (splitmix64) for key text and orders.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The requests for keys `range`, sharing one project `Arc`.
pub fn requests(range: std::ops::Range<u64>) -> Vec<RegisterRequest> {
    let project: ProjectName = PROJECT.parse().unwrap();
    let secret = PrefixSecret::from(SECRET);
    range
        .map(|i| {
            let path: StreamPath = format!("prefix/{:016x}/+/stdout", mix(i)).parse().unwrap();
            RegisterRequest::new(project.clone(), path, secret.clone())
        })
        .collect()
}

/// `n` indexes into `0..keys` in a fixed random order (a power of two long, so a
/// loop can wrap with a mask).
pub fn random_order(keys: usize, n: usize, seed: u64) -> Vec<u32> {
    assert!(n.is_power_of_two());
    (0..n as u64)
        .map(|i| (mix(seed ^ mix(i)) % keys as u64) as u32)
        .collect()
}

/// The state a Coordinator answers for `request`: a 32-hex ID, version "1", the
/// request's secret, project and path (shared `Arc`s, as the gRPC transport does).
pub fn state_for(request: &RegisterRequest) -> LogStreamState {
    let a = foldhash::fast::FixedState::with_seed(7).hash_one(request.path.as_str());
    let id: StreamId = format!("{:016x}{:016x}", a, mix(a)).parse().unwrap();
    LogStreamState {
        proto_version: Cow::Borrowed(PROTOCOL_VERSION),
        ..LogStreamState::from_request(request, id)
    }
}

/// What [`ZeroLatency`] answers.
pub enum Answers {
    /// A new state per call, built by [`state_for`] (what a real remote does).
    PerKey,
    /// A clone of one shared state (the cheapest possible inner call).
    Shared(Arc<LogStreamState>),
}

/// An inner coordinator that answers at once and counts its register calls.
pub struct ZeroLatency {
    answers: Answers,
    calls: AtomicU64,
}

impl ZeroLatency {
    pub fn new(answers: Answers) -> Self {
        ZeroLatency {
            answers,
            calls: AtomicU64::new(0),
        }
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

impl Coordinator for ZeroLatency {
    fn register_stream<'a>(
        &'a self,
        request: &'a RegisterRequest,
        _desc: &'a [u8],
    ) -> CoordinatorFuture<'a, Result<Arc<LogStreamState>, Error>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        CoordinatorFuture::ready(Ok(match &self.answers {
            Answers::PerKey => Arc::new(state_for(request)),
            Answers::Shared(state) => Arc::clone(state),
        }))
    }

    fn terminate_stream<'a>(
        &'a self,
        _request: &'a TerminateRequest,
    ) -> CoordinatorFuture<'a, Result<(), Error>> {
        CoordinatorFuture::ready(Ok(()))
    }
}

/// A cache implementation under test.
pub trait Candidate: Coordinator + 'static {
    /// The name in benchmark IDs and reports.
    const NAME: &'static str;
    /// A cache of `size` entries (expiry: the default, longer than any run) in
    /// front of `inner`.
    fn build(inner: Arc<ZeroLatency>, size: usize) -> Self;
}

impl Candidate for CachedCoordinator<Arc<ZeroLatency>> {
    const NAME: &'static str = "coordinator-cache";

    fn build(inner: Arc<ZeroLatency>, size: usize) -> Self {
        CachedCoordinator::new(inner, size, Duration::ZERO)
    }
}

/// Polls a future once: the answer if it is ready at once (every answer in these
/// benchmarks is, as the inner coordinator never waits).
#[inline]
pub fn now_or_never<F: Future + Unpin>(mut f: F) -> Option<F::Output> {
    match Pin::new(&mut f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// One register through `cache`, which must answer at once.
#[inline]
pub fn register<C: Coordinator>(cache: &C, request: &RegisterRequest) -> Arc<LogStreamState> {
    now_or_never(cache.register_stream(request, DESC))
        .expect("answers are immediate")
        .expect("registration succeeds")
}

// ----- The floor -----

const FLOOR_SHARDS: usize = 16;

/// One shard of the floor: `(project, path, state)` rows.
type FloorTable = hashbrown::HashTable<(ProjectName, StreamPath, Arc<LogStreamState>)>;

/// The floor: 16 mutex-sharded hash tables (hashbrown, foldhash), keyed by
/// `(project, path)` and looked up by borrowed text, holding `Arc` states. No
/// expiry, no LRU order, no bound, no coalescing (a miss calls the inner
/// coordinator from the caller, then inserts).
pub struct Floor {
    inner: Arc<ZeroLatency>,
    hasher: foldhash::fast::RandomState,
    shards: Vec<Padded<Mutex<FloorTable>>>,
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
    fn shard(&self, hash: u64) -> &Mutex<FloorTable> {
        &self.shards[(hash >> 40) as usize % FLOOR_SHARDS].0
    }
}

impl Candidate for Floor {
    const NAME: &'static str = "floor";

    fn build(inner: Arc<ZeroLatency>, _size: usize) -> Self {
        Floor {
            inner,
            hasher: foldhash::fast::RandomState::default(),
            shards: (0..FLOOR_SHARDS)
                .map(|_| Padded(Mutex::new(hashbrown::HashTable::new())))
                .collect(),
        }
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
        let shard = self.shard(hash);
        if let Some((_, _, state)) = shard.lock().find(hash, |(p, s, _)| {
            s.as_str() == path && p.as_str() == project
        }) {
            return CoordinatorFuture::ready(Ok(Arc::clone(state)));
        }
        let Some(result) = now_or_never(self.inner.register_stream(request, desc)) else {
            unreachable!("the floor's inner coordinator answers at once");
        };
        let state = match result {
            Ok(state) => state,
            Err(e) => return CoordinatorFuture::ready(Err(e)),
        };
        let mut table = shard.lock();
        let hasher = &self.hasher;
        match table.entry(
            hash,
            |(p, s, _)| s.as_str() == path && p.as_str() == project,
            |(p, s, _)| {
                let mut h = hasher.build_hasher();
                h.write(p.as_str().as_bytes());
                h.write_u8(0xff);
                h.write(s.as_str().as_bytes());
                h.finish()
            },
        ) {
            hashbrown::hash_table::Entry::Occupied(o) => {
                CoordinatorFuture::ready(Ok(Arc::clone(&o.get().2)))
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert((
                    request.project.clone(),
                    request.path.clone(),
                    Arc::clone(&state),
                ));
                CoordinatorFuture::ready(Ok(state))
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
