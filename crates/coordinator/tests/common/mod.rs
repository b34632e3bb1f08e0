//! Shared set-up for the whole-stack tests (`chaos`, `secrecy`, `bad_input`):
//!
//! - [`Workload`]: a seeded collector workload (streams under a few prefixes,
//!   bundles out of order with duplicates, streams that end in their first
//!   bundle, streams that never end, optional impostors with a wrong secret);
//! - [`Stack`]: cache → batched gRPC client (with retries) → a channel watched by
//!   an [`RpcObserver`];
//! - [`run_collector`]: collector workers that process every delivery as
//!   LogDog's collector does, nacking transient failures for redelivery;
//! - [`verify`]: checks the server's final state against the workload.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coordinator::{
    Code, Coordinator, Error, MessageIndex, PrefixSecret, ProjectName, RegisterRequest, StreamName,
    StreamPath, TerminateRequest,
};
use coordinator_cache::CachedCoordinator;
use coordinator_grpc::{BatchOptions, GrpcCoordinator, RetryPolicy};
use coordinator_testkit::{FakeServer, descriptor};
use rand::distr::Alphanumeric;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tonic::codegen::http;
use tonic::transport::Channel;

/// The environment variable that overrides a test's seed (decimal or `0x` hex).
pub const SEED_VAR: &str = "COORDINATOR_TEST_SEED";

/// The seed to use: [`SEED_VAR`] if set, else `default`.
///
/// # Panics
///
/// If [`SEED_VAR`] is set but is not a number.
pub fn seed(default: u64) -> u64 {
    match std::env::var(SEED_VAR) {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{SEED_VAR}={text:?} is not a u64: {e}"))
        }
        Err(_) => default,
    }
}

/// Log entries per bundle: a terminal index is `bundles * MESSAGES_PER_BUNDLE - 1`.
pub const MESSAGES_PER_BUNDLE: u32 = 10;

/// A secret of 36 ASCII letters and digits: printable, so a leak of its raw
/// bytes shows up as text.
pub fn printable_secret(rng: &mut StdRng) -> PrefixSecret {
    let mut bytes = [0u8; PrefixSecret::LEN];
    for b in &mut bytes {
        *b = rng.sample(Alphanumeric);
    }
    PrefixSecret::from(bytes)
}

/// A registered prefix.
pub struct Prefix {
    pub project: ProjectName,
    pub prefix: StreamName,
    pub secret: PrefixSecret,
}

/// What a stream of the workload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Never ends: no bundle carries a terminal index.
    Open,
    /// Its last bundle carries the terminal index (a one-bundle stream ends in
    /// its first bundle and is registered already terminated).
    Terminal,
    /// Sent with a secret that is not its prefix's: the Coordinator refuses it
    /// and the collector drops its bundles.
    Impostor,
}

/// One stream of the workload.
pub struct StreamPlan {
    pub project: ProjectName,
    pub path: StreamPath,
    /// The secret the collector's bundles carry.
    pub secret: PrefixSecret,
    pub kind: StreamKind,
    /// Number of bundles (at least 1).
    pub bundles: u32,
    pub desc: Vec<u8>,
}

impl StreamPlan {
    /// The index the stream must end up terminated at (`None`: never).
    pub fn terminal_index(&self) -> Option<MessageIndex> {
        (self.kind == StreamKind::Terminal)
            .then(|| MessageIndex::from(self.bundles * MESSAGES_PER_BUNDLE - 1))
    }

    /// The terminal index bundle `bundle` carries, if it is the last one.
    pub fn carried_terminal(&self, bundle: u32) -> Option<MessageIndex> {
        if bundle + 1 == self.bundles {
            self.terminal_index()
        } else {
            None
        }
    }
}

/// How to draw a workload.
#[derive(Debug, Clone, Copy)]
pub struct WorkloadSpec {
    /// Legitimate streams.
    pub streams: usize,
    /// Streams with a wrong secret (on top of `streams`).
    pub impostors: usize,
    /// Prefixes the streams are spread over.
    pub prefixes: usize,
    /// Bundles per multi-bundle stream are drawn from `2..=max_bundles`.
    pub max_bundles: u32,
    /// Fraction of streams that are a single bundle.
    pub single_bundle: f64,
    /// Fraction of streams that never end.
    pub open: f64,
    /// Fraction of bundles delivered twice.
    pub duplicate: f64,
}

/// One delivery from the message queue: a bundle of a stream.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    pub stream: usize,
    pub bundle: u32,
}

/// A seeded collector workload.
pub struct Workload {
    pub seed: u64,
    pub prefixes: Vec<Prefix>,
    pub streams: Vec<StreamPlan>,
    /// Every bundle once, some twice, shuffled.
    pub deliveries: Vec<Delivery>,
}

impl Workload {
    /// Draws a workload from `seed`: the same seed gives the same workload.
    pub fn generate(spec: &WorkloadSpec, seed: u64) -> Workload {
        let mut rng = StdRng::seed_from_u64(seed);
        let projects: [ProjectName; 2] = ["chromium".parse().unwrap(), "fuchsia".parse().unwrap()];
        let prefixes: Vec<Prefix> = (0..spec.prefixes.max(1))
            .map(|i| Prefix {
                project: projects[i % projects.len()].clone(),
                prefix: format!("builds/b{i}").parse().unwrap(),
                secret: printable_secret(&mut rng),
            })
            .collect();
        let mut streams = Vec::with_capacity(spec.streams + spec.impostors);
        for i in 0..spec.streams + spec.impostors {
            let p = &prefixes[i % prefixes.len()];
            let impostor = i >= spec.streams;
            let name: StreamName = if impostor {
                format!("impostor/i{i}/stdout")
            } else {
                format!("steps/s{i}/stdout")
            }
            .parse()
            .unwrap();
            let path = p.prefix.join(&name);
            let bundles = if rng.random_bool(spec.single_bundle) {
                1
            } else {
                rng.random_range(2..=spec.max_bundles.max(2))
            };
            let (kind, secret) = if impostor {
                (StreamKind::Impostor, printable_secret(&mut rng))
            } else if rng.random_bool(spec.open) {
                (StreamKind::Open, p.secret.clone())
            } else {
                (StreamKind::Terminal, p.secret.clone())
            };
            streams.push(StreamPlan {
                project: p.project.clone(),
                desc: descriptor(&path),
                path,
                secret,
                kind,
                bundles,
            });
        }
        let mut deliveries = Vec::new();
        for (stream, plan) in streams.iter().enumerate() {
            for bundle in 0..plan.bundles {
                deliveries.push(Delivery { stream, bundle });
                if rng.random_bool(spec.duplicate) {
                    deliveries.push(Delivery { stream, bundle });
                }
            }
        }
        deliveries.shuffle(&mut rng);
        Workload {
            seed,
            prefixes,
            streams,
            deliveries,
        }
    }

    /// Registers the workload's prefixes (with their secrets) on `server`.
    pub fn register_prefixes(&self, server: &FakeServer) {
        for p in &self.prefixes {
            server.register_prefix(&p.project, &p.prefix, &p.secret, None);
        }
    }

    /// Streams of `kind`.
    pub fn count(&self, kind: StreamKind) -> usize {
        self.streams.iter().filter(|s| s.kind == kind).count()
    }

    /// Terminal streams that end in their first bundle.
    pub fn single_bundle_terminal(&self) -> usize {
        self.streams
            .iter()
            .filter(|s| s.kind == StreamKind::Terminal && s.bundles == 1)
            .count()
    }

    /// Every secret in the workload (prefix secrets and impostors' secrets).
    pub fn secrets(&self) -> Vec<PrefixSecret> {
        let mut all: Vec<PrefixSecret> = self.prefixes.iter().map(|p| p.secret.clone()).collect();
        all.extend(
            self.streams
                .iter()
                .filter(|s| s.kind == StreamKind::Impostor)
                .map(|s| s.secret.clone()),
        );
        all
    }
}

// ---- The stack and its observer. ----

/// Counts the RPC attempts the gRPC client makes, as seen on its channel: sent,
/// answered (by response headers), failed with a status in the headers (what a
/// server's error looks like: trailers-only), timed out (dropped by the client's
/// attempt timeout, or failed by the channel's own `grpc-timeout` check), and
/// failed in the transport otherwise.
pub struct RpcObserver {
    sent: AtomicU64,
    answered: AtomicU64,
    transport_errors: AtomicU64,
    timed_out: AtomicU64,
    statuses: Mutex<BTreeMap<Code, u64>>,
    /// Bumped after every change, for [`RpcObserver::wait`].
    changed: watch::Sender<()>,
}

/// A snapshot of an [`RpcObserver`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RpcCounts {
    /// Attempts handed to the channel.
    pub sent: u64,
    /// Attempts answered with response headers and no error status in them.
    pub answered: u64,
    /// Attempts answered with an error status in the headers, by code.
    pub statuses: BTreeMap<Code, u64>,
    /// Attempts that failed in the transport (no response), timeouts aside.
    pub transport_errors: u64,
    /// Attempts that timed out on the client: dropped before any answer by the
    /// attempt timeout, or failed by the channel's `grpc-timeout` check.
    pub timed_out: u64,
}

impl RpcCounts {
    /// Attempts answered with an error status of `code`.
    pub fn status(&self, code: Code) -> u64 {
        self.statuses.get(&code).copied().unwrap_or(0)
    }

    /// Attempts answered with any error status.
    pub fn error_statuses(&self) -> u64 {
        self.statuses.values().sum()
    }

    /// Attempts that failed as the channel saw them (error status, transport
    /// error, timeout).
    pub fn failed(&self) -> u64 {
        self.error_statuses() + self.transport_errors + self.timed_out
    }
}

impl RpcObserver {
    pub fn new() -> Arc<RpcObserver> {
        Arc::new(RpcObserver {
            sent: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            transport_errors: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            statuses: Mutex::new(BTreeMap::new()),
            changed: watch::Sender::new(()),
        })
    }

    pub fn snapshot(&self) -> RpcCounts {
        RpcCounts {
            sent: self.sent.load(Ordering::SeqCst),
            answered: self.answered.load(Ordering::SeqCst),
            statuses: self.statuses.lock().unwrap().clone(),
            transport_errors: self.transport_errors.load(Ordering::SeqCst),
            timed_out: self.timed_out.load(Ordering::SeqCst),
        }
    }

    /// Waits until `done` holds for a snapshot (checked now and after every
    /// change). Cancel-safe.
    pub async fn wait(&self, mut done: impl FnMut(&RpcCounts) -> bool) {
        let mut rx = self.changed.subscribe();
        loop {
            rx.borrow_and_update();
            if done(&self.snapshot()) {
                return;
            }
            // The sender lives in `self`: the channel cannot close meanwhile.
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    fn bump(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::SeqCst);
        self.changed.send_replace(());
    }

    fn status(&self, code: Code) {
        *self.statuses.lock().unwrap().entry(code).or_default() += 1;
        self.changed.send_replace(());
    }

    /// `channel`, with every call counted by `observer`.
    pub fn observe(
        observer: &Arc<RpcObserver>,
        channel: Channel,
    ) -> tower::util::MapFuture<
        Channel,
        impl FnMut(ChannelFuture) -> ObservedCall + Clone + Send + Sync + 'static,
    > {
        let observer = observer.clone();
        tower::util::MapFuture::new(channel, move |call: ChannelFuture| {
            observer.bump(&observer.sent);
            let attempt = Attempt {
                observer: observer.clone(),
                finished: false,
            };
            ObservedCall(Box::pin(async move {
                let mut attempt = attempt;
                let result = call.await;
                attempt.finish(&result);
                result
            }))
        })
    }
}

type CallResult = Result<http::Response<tonic::body::Body>, tonic::transport::Error>;
type ChannelFuture = <Channel as tower::Service<http::Request<tonic::body::Body>>>::Future;

/// The future of one observed call.
pub struct ObservedCall(
    std::pin::Pin<Box<dyn std::future::Future<Output = CallResult> + Send + 'static>>,
);

impl std::future::Future for ObservedCall {
    type Output = CallResult;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<CallResult> {
        self.0.as_mut().poll(cx)
    }
}

/// Records how one call ended; dropped unfinished, it counts as timed out (the
/// attempt timeout is the only thing that drops a call in these tests).
struct Attempt {
    observer: Arc<RpcObserver>,
    finished: bool,
}

impl Attempt {
    fn finish(&mut self, result: &CallResult) {
        self.finished = true;
        match result {
            Ok(response) => {
                let status = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .unwrap_or(0);
                if status == 0 {
                    self.observer.bump(&self.observer.answered);
                } else {
                    self.observer.status(Code::from_i32(status));
                }
            }
            Err(error) => {
                let mut chain =
                    std::iter::successors(Some(error as &dyn std::error::Error), |e| e.source());
                if chain.any(|e| e.is::<tonic::TimeoutExpired>()) {
                    self.observer.bump(&self.observer.timed_out);
                } else {
                    self.observer.bump(&self.observer.transport_errors);
                }
            }
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.finished {
            self.observer.bump(&self.observer.timed_out);
        }
    }
}

/// How the stack is built.
#[derive(Debug, Clone, Copy)]
pub struct StackOptions {
    pub retry: RetryPolicy,
    pub attempt_timeout: Duration,
    pub batch: BatchOptions,
    pub cache_size: usize,
}

/// Retries with millisecond delays.
pub fn fast_retry(max_retries: u32) -> RetryPolicy {
    RetryPolicy::default()
        .with_max_retries(max_retries)
        .with_initial_delay(Duration::from_millis(5))
        .with_max_delay(Duration::from_millis(50))
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            retry: fast_retry(4),
            attempt_timeout: Duration::from_millis(500),
            batch: BatchOptions::default()
                .with_max_entries(20)
                .with_max_delay(Duration::from_millis(2)),
            cache_size: 1 << 16,
        }
    }
}

/// The whole client stack: cache → batched gRPC client → observed channel.
pub struct Stack {
    pub cache: Arc<CachedCoordinator<GrpcCoordinator>>,
    pub observer: Arc<RpcObserver>,
    pub options: StackOptions,
}

impl Stack {
    /// Builds the stack over `channel`. Must run inside a Tokio runtime.
    pub fn build(channel: Channel, options: StackOptions) -> Stack {
        let observer = RpcObserver::new();
        let grpc = GrpcCoordinator::builder()
            .retry(options.retry)
            .attempt_timeout(options.attempt_timeout)
            .batching(options.batch)
            .build_service(RpcObserver::observe(&observer, channel))
            .expect("building the gRPC coordinator");
        let cache = CachedCoordinator::new(grpc, options.cache_size, Duration::from_secs(600));
        Stack {
            cache: Arc::new(cache),
            observer,
            options,
        }
    }

    pub fn grpc(&self) -> &GrpcCoordinator {
        self.cache.inner()
    }

    /// The batching client's counters.
    pub fn batch_stats(&self) -> coordinator_grpc::BatchStats {
        self.grpc()
            .batching_client()
            .expect("the stack batches")
            .stats()
    }
}

// ---- The collector. ----

/// Every string the workload produced about requests, states and errors (their
/// `Debug` and `Display`), for the secrecy test.
#[derive(Default)]
pub struct Transcript(Mutex<Vec<String>>);

impl Transcript {
    pub fn record(&self, text: String) {
        self.0.lock().unwrap().push(text);
    }

    pub fn record_error(&self, e: &Error) {
        self.record(format!("{e}"));
        self.record(format!("{e:?}"));
        self.record(format!("{e:#?}"));
    }

    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// What the collector did.
#[derive(Debug, Default)]
pub struct CollectorReport {
    /// Deliveries processed to the end (acked).
    pub acked: u64,
    /// Deliveries nacked after a transient error (and redelivered).
    pub nacks: u64,
    /// Collector calls to `register_stream` / `terminate_stream`.
    pub register_calls: u64,
    pub terminate_calls: u64,
    /// Deliveries dropped because the Coordinator's secret differs.
    pub secret_mismatches: u64,
    /// Deliveries of impostor streams dropped after the Coordinator refused them.
    pub refused_impostors: u64,
    /// Deliveries that failed for good (permanent error on a legitimate stream,
    /// or too many redeliveries), with the error.
    pub failures: Vec<String>,
    /// Collector workers that panicked.
    pub panics: usize,
}

/// The queue of deliveries, as a message queue would hand them out: a nacked
/// delivery goes to the back.
struct Queue {
    items: Mutex<VecDeque<(usize, u32)>>,
    /// Released deliveries not yet acked or failed for good.
    outstanding: watch::Sender<usize>,
    /// No more deliveries will be released.
    closed: AtomicBool,
    wake: Notify,
}

impl Queue {
    /// The next delivery and its attempt number; `None` once the queue is
    /// closed and every delivery is settled. Cancel-safe.
    async fn next(&self) -> Option<(usize, u32)> {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(item) = self.items.lock().unwrap().pop_front() {
                return Some(item);
            }
            if self.closed.load(Ordering::SeqCst) && *self.outstanding.borrow() == 0 {
                return None;
            }
            notified.await;
        }
    }

    fn nack(&self, delivery: usize, attempt: u32) {
        self.items
            .lock()
            .unwrap()
            .push_back((delivery, attempt + 1));
        self.wake.notify_waiters();
    }

    fn settle(&self) {
        let mut idle = false;
        self.outstanding.send_modify(|n| {
            *n -= 1;
            idle = *n == 0;
        });
        if idle {
            self.wake.notify_waiters();
        }
    }
}

/// Hands the workload's deliveries to the collector in chunks, so that a test
/// can pace the traffic (arm a fault, then release traffic for it).
pub struct Feeder {
    queue: Arc<Queue>,
    chunks: Mutex<VecDeque<Vec<usize>>>,
}

impl Feeder {
    /// A feeder of `workload`'s deliveries in `chunks` chunks (nothing released
    /// yet).
    pub fn new(workload: &Workload, chunks: usize) -> Arc<Feeder> {
        let all: Vec<usize> = (0..workload.deliveries.len()).collect();
        let size = all.len().div_ceil(chunks.max(1)).max(1);
        Arc::new(Feeder {
            queue: Arc::new(Queue {
                items: Mutex::new(VecDeque::new()),
                outstanding: watch::Sender::new(0),
                closed: AtomicBool::new(false),
                wake: Notify::new(),
            }),
            chunks: Mutex::new(all.chunks(size).map(<[usize]>::to_vec).collect()),
        })
    }

    /// Releases the next chunk; false if none was left (the queue is then
    /// closed: the collector stops once everything is settled).
    pub fn release_next(&self) -> bool {
        let chunk = self.chunks.lock().unwrap().pop_front();
        match chunk {
            Some(chunk) => {
                self.queue.outstanding.send_modify(|n| *n += chunk.len());
                self.queue
                    .items
                    .lock()
                    .unwrap()
                    .extend(chunk.into_iter().map(|d| (d, 0)));
                self.queue.wake.notify_waiters();
                true
            }
            None => {
                self.queue.closed.store(true, Ordering::SeqCst);
                self.queue.wake.notify_waiters();
                false
            }
        }
    }

    /// Releases every remaining chunk and closes the queue.
    pub fn release_all(&self) {
        while self.release_next() {}
    }

    /// Waits until every delivery released so far is settled. Cancel-safe.
    pub async fn wait_idle(&self) {
        let mut rx = self.queue.outstanding.subscribe();
        let _ = rx.wait_for(|&n| n == 0).await;
    }
}

#[derive(Default)]
struct Counters {
    acked: AtomicU64,
    nacks: AtomicU64,
    register_calls: AtomicU64,
    terminate_calls: AtomicU64,
    secret_mismatches: AtomicU64,
    refused_impostors: AtomicU64,
    failures: Mutex<Vec<String>>,
}

/// How often one delivery may be attempted before it counts as failed.
pub const MAX_DELIVERIES: u32 = 20;

/// Processes every delivery `feeder` releases with `workers` concurrent
/// collector workers through `coordinator`, until the feeder has released
/// everything and all of it is settled; then reports. Every worker is joined;
/// a panic is counted, not propagated.
pub async fn run_collector(
    coordinator: Arc<dyn Coordinator>,
    workload: Arc<Workload>,
    workers: usize,
    transcript: Option<Arc<Transcript>>,
    feeder: Arc<Feeder>,
) -> CollectorReport {
    let queue = feeder.queue.clone();
    let counters = Arc::new(Counters::default());
    let mut tasks = JoinSet::new();
    for _ in 0..workers {
        let (queue, counters) = (queue.clone(), counters.clone());
        let (coordinator, workload, transcript) =
            (coordinator.clone(), workload.clone(), transcript.clone());
        tasks.spawn(async move {
            while let Some((delivery, attempt)) = queue.next().await {
                let d = workload.deliveries[delivery];
                let plan = &workload.streams[d.stream];
                let outcome = process_bundle(
                    &*coordinator,
                    plan,
                    d.bundle,
                    &counters,
                    transcript.as_deref(),
                )
                .await;
                match outcome {
                    Ok(()) => {
                        counters.acked.fetch_add(1, Ordering::SeqCst);
                        queue.settle();
                    }
                    Err(e) if e.is_transient() && attempt + 1 < MAX_DELIVERIES => {
                        counters.nacks.fetch_add(1, Ordering::SeqCst);
                        queue.nack(delivery, attempt);
                    }
                    Err(e) if plan.kind == StreamKind::Impostor && !e.is_transient() => {
                        // The collector drops bundles the Coordinator refuses.
                        if e.code() == Code::InvalidArgument && e.message().contains("secret") {
                            counters.refused_impostors.fetch_add(1, Ordering::SeqCst);
                        } else {
                            counters.failures.lock().unwrap().push(format!(
                                "impostor {} bundle {}: unexpected error {e}",
                                plan.path, d.bundle
                            ));
                        }
                        queue.settle();
                    }
                    Err(e) => {
                        counters.failures.lock().unwrap().push(format!(
                            "{} bundle {} (attempt {}): {e}",
                            plan.path,
                            d.bundle,
                            attempt + 1
                        ));
                        queue.settle();
                    }
                }
            }
        });
    }
    let mut panics = 0;
    while let Some(joined) = tasks.join_next().await {
        if joined.is_err() {
            panics += 1;
        }
    }
    CollectorReport {
        acked: counters.acked.load(Ordering::SeqCst),
        nacks: counters.nacks.load(Ordering::SeqCst),
        register_calls: counters.register_calls.load(Ordering::SeqCst),
        terminate_calls: counters.terminate_calls.load(Ordering::SeqCst),
        secret_mismatches: counters.secret_mismatches.load(Ordering::SeqCst),
        refused_impostors: counters.refused_impostors.load(Ordering::SeqCst),
        failures: std::mem::take(&mut *counters.failures.lock().unwrap()),
        panics,
    }
}

/// What LogDog's collector does with one bundle (the behaviour contract, `docs/behaviour.md`): register
/// the stream (carrying the terminal index if this bundle ends it), drop the
/// bundle if the Coordinator's secret differs or the stream is archived or
/// purged, and terminate the stream if this bundle ends it and the
/// Coordinator does not know that yet.
async fn process_bundle(
    coordinator: &dyn Coordinator,
    plan: &StreamPlan,
    bundle: u32,
    counters: &Counters,
    transcript: Option<&Transcript>,
) -> Result<(), Error> {
    let terminal = plan.carried_terminal(bundle);
    let mut request =
        RegisterRequest::new(plan.project.clone(), plan.path.clone(), plan.secret.clone());
    request.terminal_index = terminal;
    counters.register_calls.fetch_add(1, Ordering::Relaxed);
    let registered = coordinator.register_stream(&request, &plan.desc).await;
    if let Some(t) = transcript {
        t.record(format!("{request:?}"));
        t.record(format!("{request:#?}"));
        match &registered {
            Ok(state) => t.record(format!("{state:?}")),
            Err(e) => t.record_error(e),
        }
    }
    let state = registered?;
    // Constant-time comparisons: `PrefixSecret`'s `==` and `ct_eq_bytes` are
    // `subtle`-based.
    if state.secret != plan.secret || !state.secret.ct_eq_bytes(plan.secret.as_bytes()) {
        counters.secret_mismatches.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    if state.archived || state.purged {
        return Ok(());
    }
    // (The bundle's log entries would be written to storage here.)
    if let Some(index) = terminal
        && state.terminal_index.is_none()
    {
        let terminate = TerminateRequest::for_state(&state, index);
        counters.terminate_calls.fetch_add(1, Ordering::Relaxed);
        let terminated = coordinator.terminate_stream(&terminate).await;
        if let Some(t) = transcript {
            t.record(format!("{terminate:?}"));
            if let Err(e) = &terminated {
                t.record_error(e);
            }
        }
        terminated?;
    }
    Ok(())
}

/// Checks the server's state against the workload: every legitimate stream is
/// registered, terminal ones at exactly their index, open ones not terminated,
/// impostors not registered, and no other stream exists. Returns the problems.
pub fn verify(server: &FakeServer, workload: &Workload) -> Vec<String> {
    let mut problems = Vec::new();
    for plan in &workload.streams {
        let stored = server.stream(&plan.project, &plan.path);
        match (plan.kind, stored) {
            (StreamKind::Impostor, None) => {}
            (StreamKind::Impostor, Some(_)) => {
                problems.push(format!("{}: an impostor was registered", plan.path));
            }
            (_, None) => problems.push(format!("{}: never registered", plan.path)),
            (_, Some(stored)) => {
                if stored.terminal_index != plan.terminal_index() {
                    problems.push(format!(
                        "{} ({:?}, {} bundles): terminal index {:?}, expected {:?}",
                        plan.path,
                        plan.kind,
                        plan.bundles,
                        stored.terminal_index,
                        plan.terminal_index()
                    ));
                }
            }
        }
    }
    let expected = workload.streams.len() - workload.count(StreamKind::Impostor);
    let stored = server.streams().len();
    if stored != expected {
        problems.push(format!(
            "the server holds {stored} streams, expected {expected}"
        ));
    }
    problems
}
