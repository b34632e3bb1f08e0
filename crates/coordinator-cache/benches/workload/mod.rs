//! The cache benchmarks' shared workload and the implementations they compare.
//!
//! # Workload (issue 3)
//!
//! Project `chromium`, paths `prefix/<16 hex>/+/stdout`, states with a 32-hex ID,
//! protocol version `"1"` and a 36-byte secret. Every request is built on its own
//! ([`requests`]): its project and path are its own allocations, as requests
//! decoded from bundles are, so nothing a lookup reads is shared with what filled
//! the cache (keys are compared as text, never by pointer); the one row that
//! looks up with the requests that filled the cache says so in its name. The
//! inner
//! coordinator ([`Remote`]) answers at once, or after a fixed latency for the
//! coalescing benchmark.
//!
//! # Candidates
//!
//! Implementations plug in through [`Candidate`]: a `Coordinator` built over an
//! `Arc<Remote>`. [`for_each_candidate!`](crate::for_each_candidate) runs a generic
//! benchmark function on all of them, ours first:
//!
//! - `coordinator-cache`: [`CachedCoordinator`], ours;
//! - `moka`: [`MokaCoordinator`], `moka::future::Cache` with `try_get_with`;
//! - `quick_cache`: [`QuickCacheCoordinator`], `quick_cache::sync::Cache` with
//!   placeholder guards;
//! - `floor`: [`Floor`], 16 mutex-sharded hash tables with a fast hash and nothing
//!   else (no expiry, no bound, no coalescing): what a lookup costs at least.
//!
//! The two library-based adapters implement our semantics (the behaviour contract, `docs/behaviour.md` §6) as
//! far as each library allows; each documents what it lacks.
//!
//! # Records
//!
//! Figures that criterion does not measure (inner calls made while coalescing,
//! resident memory) are printed and, when `COORDINATOR_BENCH_RECORDS` names a
//! file, appended to it as JSON lines (`cargo xtask bench` reads them).

#![allow(dead_code, unused_imports, unreachable_pub, missing_docs)]

mod floor;
mod key;
mod moka_based;
mod quick_cache_based;

use std::borrow::Cow;
use std::future::Future;
use std::hash::BuildHasher;
use std::io::Write;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use coordinator_api::{
    Coordinator, CoordinatorFuture, Error, LogStreamState, PROTOCOL_VERSION, PrefixSecret,
    ProjectName, RegisterRequest, StreamId, StreamPath, TerminateRequest,
};
use coordinator_cache::CachedCoordinator;

pub use floor::Floor;
pub use moka_based::MokaCoordinator;
pub use quick_cache_based::QuickCacheCoordinator;

pub const PROJECT: &str = "chromium";
pub const SECRET: [u8; 36] = [0x5a; 36];
/// The number of hot keys the hit benchmarks read.
pub const HOT_KEYS: usize = 10_000;
/// A descriptor-sized payload passed with every register.
pub const DESC: &[u8] = &[0x42; 96];
/// The expiration every candidate is built with: the default, longer than any run.
pub const EXPIRATION: Duration = coordinator_cache::DEFAULT_EXPIRATION;

/// Ours: the cache under test.
pub type Ours = CachedCoordinator<Arc<Remote>>;

/// A deterministic 64-bit mix (splitmix64) for key text and orders.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The requests for keys `range`, each built on its own: its project and path
/// are fresh allocations, shared with nothing (two calls make two independent
/// sets of requests for the same keys).
pub fn requests(range: std::ops::Range<u64>) -> Vec<RegisterRequest> {
    requests_with(range, path_of)
}

/// [`requests`] with long paths (79 bytes, as a build's step logs have):
/// keys too long for a slot to hold a copy of.
pub fn long_requests(range: std::ops::Range<u64>) -> Vec<RegisterRequest> {
    requests_with(range, |i| {
        format!(
            "buildbucket/cr-buildbucket.appspot.com/{:016x}/+/steps/compile/0/stdout",
            mix(i)
        )
        .parse()
        .expect("a valid path")
    })
}

/// The requests for keys `range`, key `i`'s path made by `path(i)`.
fn requests_with(
    range: std::ops::Range<u64>,
    path: impl Fn(u64) -> StreamPath,
) -> Vec<RegisterRequest> {
    let secret = PrefixSecret::from(SECRET);
    range
        .map(|i| {
            let project: ProjectName = PROJECT.parse().expect("a valid project name");
            RegisterRequest::new(project, path(i), secret.clone())
        })
        .collect()
}

/// The path of key `i`, freshly allocated.
fn path_of(i: u64) -> StreamPath {
    format!("prefix/{:016x}/+/stdout", mix(i))
        .parse()
        .expect("a valid path")
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

/// What [`Remote`] answers.
pub enum Answers {
    /// A new state per call, built by [`state_for`] (what a real remote does).
    PerKey,
    /// A clone of the state built beforehand for the request's path: no allocation
    /// in the call, and the state carries the request's own project and path, as a
    /// real transport's does.
    Prebuilt(std::collections::HashMap<StreamPath, Arc<LogStreamState>>),
}

/// The inner coordinator: answers at once (or after a fixed latency, on Tokio's
/// timer) and counts the register calls made to it.
pub struct Remote {
    answers: Answers,
    latency: Option<Duration>,
    calls: AtomicU64,
}

impl Remote {
    /// A remote that answers at once.
    pub fn immediate(answers: Answers) -> Self {
        Remote {
            answers,
            latency: None,
            calls: AtomicU64::new(0),
        }
    }

    /// A remote that answers `latency` after each call (needs a Tokio runtime).
    pub fn delayed(answers: Answers, latency: Duration) -> Self {
        Remote {
            latency: Some(latency),
            ..Remote::immediate(answers)
        }
    }

    /// Register calls made so far (counted when the call starts).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

impl Coordinator for Remote {
    fn register_stream<'a>(
        &'a self,
        request: &'a RegisterRequest,
        _desc: &'a [u8],
    ) -> CoordinatorFuture<'a, Result<Arc<LogStreamState>, Error>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let state = match &self.answers {
            Answers::PerKey => Arc::new(state_for(request)),
            Answers::Prebuilt(states) => match states.get(&request.path) {
                Some(state) => Arc::clone(state),
                None => Arc::new(state_for(request)),
            },
        };
        match self.latency {
            None => CoordinatorFuture::ready(Ok(state)),
            Some(latency) => CoordinatorFuture::new(async move {
                tokio::time::sleep(latency).await;
                Ok(state)
            }),
        }
    }

    fn terminate_stream<'a>(
        &'a self,
        _request: &'a TerminateRequest,
    ) -> CoordinatorFuture<'a, Result<(), Error>> {
        CoordinatorFuture::ready(Ok(()))
    }
}

/// A cache implementation under test.
pub trait Candidate: Coordinator + Sized + 'static {
    /// The name in benchmark IDs and reports.
    const NAME: &'static str;
    /// A cache of at most `size` entries (`0`: the default, 1,048,576), each
    /// living [`EXPIRATION`], in front of `inner`.
    fn build(inner: Arc<Remote>, size: usize) -> Self;
    /// The entries held now (after [`settle`](Self::settle)).
    fn entries(&self) -> u64;
    /// Finishes deferred bookkeeping (moka's pending maintenance), so that
    /// memory and entry counts are final.
    fn settle(&self) {}
}

impl Candidate for Ours {
    const NAME: &'static str = "coordinator-cache";

    fn build(inner: Arc<Remote>, size: usize) -> Self {
        CachedCoordinator::new(inner, size, EXPIRATION)
    }

    fn entries(&self) -> u64 {
        self.stats().entries
    }
}

/// The size every candidate uses for `0`.
pub fn size_or_default(size: usize) -> usize {
    if size == 0 {
        coordinator_cache::DEFAULT_SIZE
    } else {
        size
    }
}

/// Runs `$f::<C>($args)` for every candidate, ours first.
#[macro_export]
macro_rules! for_each_candidate {
    ($f:ident ( $($arg:expr),* $(,)? )) => {{
        $f::<$crate::workload::Ours>($($arg),*);
        $f::<$crate::workload::MokaCoordinator>($($arg),*);
        $f::<$crate::workload::QuickCacheCoordinator>($($arg),*);
        $f::<$crate::workload::Floor>($($arg),*);
    }};
}

/// Polls a future once: the answer if it is ready at once.
#[inline]
pub fn now_or_never<F: Future + Unpin>(mut f: F) -> Option<F::Output> {
    match std::pin::Pin::new(&mut f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// Wakes a parked thread.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` to completion on this thread: one poll with a no-op waker (every
/// answer in the synchronous benchmarks is ready at once, so that is all it
/// costs), then, if it is pending (say, a library's internal async lock is held by
/// the other thread), polls it with a waker that unparks this thread.
#[inline]
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    if let Poll::Ready(v) = future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        return v;
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// One register through `cache`, which must succeed.
#[inline]
pub fn register<C: Coordinator>(cache: &C, request: &RegisterRequest) -> Arc<LogStreamState> {
    block_on(cache.register_stream(request, DESC)).expect("registration succeeds")
}

/// Appends a figure criterion does not measure as a JSON line to the file named by
/// `COORDINATOR_BENCH_RECORDS`, if set.
pub fn record(workload: &str, candidate: &str, metric: &str, value: f64, unit: &str) {
    let Some(path) = std::env::var_os("COORDINATOR_BENCH_RECORDS") else {
        return;
    };
    let line = format!(
        "{{\"workload\":{},\"candidate\":{},\"metric\":{},\"value\":{value},\"unit\":{}}}\n",
        json_string(workload),
        json_string(candidate),
        json_string(metric),
        json_string(unit),
    );
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!("cannot append to {}: {e}", path.display());
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
