//! `cargo xtask demo`: a simulated collector driven through the whole stack
//! (cache → the services layers, batched by default → the pRPC or gRPC
//! transport → in-process fake Coordinator), then checked against the server's
//! state.
//!
//! The demo measures throughput, so it runs optimized code: started from an
//! unoptimized (debug) xtask, [`run`] re-runs itself from a release build
//! (`$CARGO run --release`), unless `--no-release`. The report names the build
//! profile its figures come from.
//!
//! A run never hangs on a failure: a permanent error, or a bundle that keeps
//! failing transiently after [`MAX_DELIVERIES`], stops every worker and ends the
//! run with an error that names the stream, the bundle and the Coordinator's
//! answer (and a non-zero exit).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::Args;
use coordinator::cache::{CacheStats, CachedCoordinator};
use coordinator::grpc::GrpcCoordinatorBuilder;
use coordinator::prpc::PrpcCoordinatorBuilder;
use coordinator::services::proto::logdog as proto;
use coordinator::services::proto::logdog::LoadStreamRequest;
use coordinator::services::{
    BatchOptions, CallOptions, RetryPolicy, ServicesClient, ServicesCoordinator, ServicesFuture,
    ServicesStack, SharedClient,
};
use coordinator::testkit::{FakeServer, FakeServicesServer};
use coordinator::{
    Code, Coordinator, CoordinatorFuture, Error, LogStreamState, MessageIndex, PrefixSecret,
    ProjectName, RegisterRequest, StreamId, StreamName, StreamPath, TerminateRequest,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::task::JoinSet;

/// Flags of `cargo xtask demo`.
#[derive(Args, Debug, Clone)]
pub(crate) struct DemoArgs {
    /// Number of streams.
    #[arg(long, default_value_t = 2000)]
    streams: usize,
    /// Bundles per stream (the last one carries the terminal index).
    #[arg(long, default_value_t = 20)]
    bundles: u32,
    /// Concurrent collector workers.
    #[arg(long, default_value_t = 64)]
    workers: usize,
    /// Run only without the cache (no comparison run).
    #[arg(long)]
    no_cache: bool,
    /// Send single RPCs instead of batches.
    #[arg(long)]
    direct: bool,
    /// Inject faults: this fraction of RPCs fail transiently, plus latency, dropped
    /// batch entries and an empty batch response. The run must still lose nothing.
    #[arg(long, value_name = "RATE")]
    chaos: Option<f64>,
    /// Run against an external server (e.g. the `fake-coordinator` binary) instead of
    /// the embedded one; give its prefixes with --prefix.
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// With --endpoint: a registered prefix as PROJECT:PREFIX:SECRET_HEX (repeatable).
    #[arg(long = "prefix", value_name = "PROJECT:PREFIX:SECRET_HEX")]
    prefixes: Vec<String>,
    /// The transport: pRPC (HTTP/1.1, what the production Coordinator speaks)
    /// or gRPC (HTTP/2).
    #[arg(long, value_enum, default_value_t = TransportKind::Prpc)]
    transport: TransportKind,
    /// At most this many RPCs in flight at once (so, over pRPC, at most this
    /// many connections).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// A bearer token to send with every call (for an external server that
    /// requires one). Never printed.
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Skip the comparison run without the cache.
    #[arg(long)]
    no_compare: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Seed for the delivery order, duplicates and faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run in this process even if it is an unoptimized build (the figures then
    /// understate throughput several times) instead of re-running from a
    /// release build.
    #[arg(long)]
    no_release: bool,
    /// Serve the cache's counters (and the embedded server's) for Prometheus at
    /// http://ADDR/metrics while the demo runs, and after the report until
    /// Ctrl-C (port 0: any free port; the address is printed on stderr).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
}

/// Which transport carries the run's RPCs.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TransportKind {
    /// pRPC: unary protobuf over HTTP/1.1 (binary encoding).
    Prpc,
    /// gRPC over HTTP/2.
    Grpc,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Prpc => "pRPC",
            TransportKind::Grpc => "gRPC",
        })
    }
}

/// The build profile of this process: `release` for an optimized build (no
/// debug assertions), `debug` otherwise.
const PROFILE: &str = if cfg!(debug_assertions) {
    "debug"
} else {
    "release"
};

/// Set for the release re-run, so that it never re-runs itself again.
const RERUN_ENV: &str = "XTASK_DEMO_RERUN";

/// What one run measured.
#[derive(Debug, Serialize)]
struct RunReport {
    /// Unique per run; part of every stream name of the run.
    run_id: String,
    cache: bool,
    /// The transport the RPCs went over.
    transport_kind: TransportKind,
    /// The most RPCs in flight at once.
    concurrency_limit: usize,
    /// Connections the embedded server accepted on its pRPC port.
    prpc_connections: Option<u64>,
    batched: bool,
    bundles_delivered: u64,
    bundles_per_sec: f64,
    elapsed_secs: f64,
    register_calls: u64,
    terminate_calls: u64,
    redeliveries: u64,
    dropped_secret_mismatch: u64,
    /// RPCs that reached the server (embedded server only).
    server: Option<ServerCounts>,
    cache_stats: Option<CacheReport>,
    /// What the transport did, counted on the client.
    transport: TransportReport,
    /// `LoadStream` checks retried after a transient error (external server).
    verify_retries: u64,
    register_latency_us_p50: u64,
    register_latency_us_p99: u64,
    verified_streams: usize,
}

#[derive(Debug, Serialize)]
struct ServerCounts {
    register_rpcs: u64,
    terminate_rpcs: u64,
    batch_rpcs: u64,
    batch_entries: u64,
}

#[derive(Debug, Serialize)]
struct CacheReport {
    hits: u64,
    misses: u64,
    coalesced: u64,
    inner_register_calls: u64,
    inner_terminate_calls: u64,
}

/// The transport's side of a run, counted on the client: the fake server keeps
/// no count of the faults it injects, so faults are counted as the client saw
/// them.
#[derive(Debug, Serialize)]
struct TransportReport {
    /// Calls that reached the transport (below the cache).
    calls: u64,
    /// Calls the transport answered with an error (after its retries).
    errors: u64,
    /// RPCs sent (`Batch` RPCs when batched).
    rpcs_sent: u64,
    /// RPCs that failed: direct RPC attempts that did not succeed, or `Batch`
    /// RPCs that failed or came back with no entries.
    failed_rpcs: u64,
    /// Batch entries the server left unanswered (re-sent by the batching client).
    unanswered_entries: Option<u64>,
    /// Attempts the transport's retry policy made after a transient failure.
    retries: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    /// The build profile that produced the figures (`release` or `debug`).
    profile: &'static str,
    streams: usize,
    bundles_per_stream: u32,
    workers: usize,
    chaos: Option<f64>,
    runs: Vec<RunReport>,
    /// Uncached RPCs ÷ cached RPCs, when both runs happened.
    rpc_reduction: Option<f64>,
    /// Cached bundles/s ÷ uncached bundles/s.
    speedup: Option<f64>,
}

/// One stream of the workload.
struct StreamPlan {
    project: ProjectName,
    path: StreamPath,
    secret: PrefixSecret,
    /// Number of bundles; the last carries the terminal index.
    bundles: u32,
}

impl StreamPlan {
    fn terminal_index(&self) -> MessageIndex {
        MessageIndex::from(self.bundles - 1)
    }
}

/// A registered prefix.
struct Prefix {
    project: ProjectName,
    prefix: StreamName,
    secret: PrefixSecret,
}

pub(crate) fn run(args: DemoArgs) -> Result<()> {
    ensure!(args.streams > 0, "--streams must be at least 1");
    ensure!(args.bundles > 0, "--bundles must be at least 1");
    ensure!(args.workers > 0, "--workers must be at least 1");
    if let Some(rate) = args.chaos {
        ensure!((0.0..1.0).contains(&rate), "--chaos takes a rate in [0, 1)");
    }
    if PROFILE == "debug" && !args.no_release && std::env::var_os(RERUN_ENV).is_none() {
        return rerun_optimized();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run_async(args))
}

/// Runs this same command line from a release build of xtask and exits with its
/// status.
fn rerun_optimized() -> Result<()> {
    // Everything after the program name: `demo` and its flags, as given.
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    eprintln!("demo: running an optimized build (cargo run --release; --no-release skips this)");
    let status = Command::new(crate::cargo_bin())
        .args(["run", "--release", "--package", "xtask", "--"])
        .args(&args)
        .env(RERUN_ENV, "1")
        .current_dir(crate::root())
        .status()
        .context("running cargo run --release --package xtask")?;
    if !status.success() {
        // The release run reported its own error.
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}

async fn run_async(args: DemoArgs) -> Result<()> {
    // Before any cache or server is built: they register their counters with
    // the recorder installed at that moment.
    let metrics_url = match args.metrics_addr {
        Some(addr) => Some(coordinator_testkit::prometheus::serve_prometheus(addr)?),
        None => None,
    };
    if let Some(url) = &metrics_url {
        eprintln!("demo: metrics on {url}");
    }
    let mut runs = Vec::new();
    if !args.no_cache {
        runs.push(run_once(&args, true).await?);
    }
    if args.no_cache || !args.no_compare {
        runs.push(run_once(&args, false).await?);
    }
    let (rpc_reduction, speedup) = match (runs.first(), runs.get(1)) {
        (Some(c), Some(u)) if c.cache && !u.cache => (
            Some(rpcs(u) as f64 / rpcs(c).max(1) as f64),
            Some(c.bundles_per_sec / u.bundles_per_sec.max(f64::MIN_POSITIVE)),
        ),
        _ => (None, None),
    };
    let report = Report {
        profile: PROFILE,
        streams: args.streams,
        bundles_per_stream: args.bundles,
        workers: args.workers,
        chaos: args.chaos,
        runs,
        rpc_reduction,
        speedup,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    if let Some(url) = metrics_url {
        // Tokio installs the handler when the future is first polled: poll it
        // once before saying so, so that a Ctrl-C right after the line stops
        // the demo cleanly rather than killing it.
        let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
        tokio::select! {
            biased;
            done = &mut ctrl_c => return done.context("waiting for Ctrl-C"),
            () = std::future::ready(()) => {}
        }
        eprintln!("demo: done; metrics stay on {url} until Ctrl-C");
        ctrl_c.await.context("waiting for Ctrl-C")?;
    }
    Ok(())
}

/// The RPCs of a run: as the server counted them (embedded server), else as the
/// client sent them.
fn rpcs(run: &RunReport) -> u64 {
    match &run.server {
        Some(s) => rpc_total(s),
        None => run.transport.rpcs_sent,
    }
}

fn rpc_total(s: &ServerCounts) -> u64 {
    s.register_rpcs + s.terminate_rpcs + s.batch_rpcs
}

/// Where the run's server is.
enum Target {
    Embedded(FakeServer),
    External(String),
}

async fn run_once(args: &DemoArgs, cache: bool) -> Result<RunReport> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let run_id = new_run_id();
    let (target, prefixes) = match &args.endpoint {
        None => {
            let server = FakeServicesServer::start().await;
            let project: ProjectName = "chromium".parse()?;
            let mut prefixes = Vec::new();
            for i in 0..16 {
                let prefix: StreamName = format!("demo/build-{i}").parse()?;
                let secret = PrefixSecret::generate()?;
                server.register_prefix(&project, &prefix, &secret, None);
                prefixes.push(Prefix {
                    project: project.clone(),
                    prefix,
                    secret,
                });
            }
            (Target::Embedded(server), prefixes)
        }
        Some(url) => (
            Target::External(url.clone()),
            parse_prefixes(&args.prefixes)?,
        ),
    };
    let plans = plan_streams(args, &run_id, &prefixes, &mut rng)?;
    let deliveries = plan_deliveries(&plans, &mut rng);

    let counts = Arc::new(TransportCounts::default());
    let client = transport(args, &target, &counts)?;
    if let (Target::Embedded(server), Some(rate)) = (&target, args.chaos) {
        inject_chaos(server, rate, args.seed);
    }
    let counted = Arc::new(CountedTransport {
        inner: client.coordinator.clone(),
        counts: counts.clone(),
    });
    let cached =
        cache.then(|| Arc::new(CachedCoordinator::new(counted.clone(), 0, Duration::ZERO)));
    // With --metrics-addr, scrapes see the hits within a second (the other
    // counters are always current); without a recorder this is a no-op.
    let _publisher = cached
        .as_ref()
        .filter(|_| args.metrics_addr.is_some())
        .map(|c| c.spawn_metrics_publisher(Duration::from_secs(1)));
    let coordinator: Arc<dyn Coordinator> = match &cached {
        Some(c) => c.clone(),
        None => counted,
    };

    let label = if cache { "with cache" } else { "without cache" };
    let progress = progress_bar(args, deliveries.len() as u64, label);
    let shared = Arc::new(Shared::new(plans, deliveries, progress.clone()));

    let started = Instant::now();
    let driven = drive(&shared, &coordinator, args.workers).await;
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    let mut latencies =
        driven.with_context(|| format!("the run {label} (run id {run_id}) stopped"))?;

    let verify_retries = AtomicU64::new(0);
    let verified = verify(
        &shared.plans,
        &target,
        &client.transport,
        cache && args.chaos.is_none(),
        &verify_retries,
    )
    .await?;
    // Connections are reused: over pRPC, no more than the concurrency limit.
    let prpc_connections = match (&target, args.transport) {
        (Target::Embedded(server), TransportKind::Prpc) => Some(server.prpc_connections()),
        _ => None,
    };
    if let Some(opened) = prpc_connections {
        ensure!(
            opened <= args.concurrency as u64,
            "the run opened {opened} pRPC connections, more than its concurrency limit of {}",
            args.concurrency
        );
    }
    latencies.sort_unstable();
    let counters = &shared.counters;
    let delivered = counters.delivered.load(Ordering::SeqCst);
    let report = RunReport {
        run_id,
        cache,
        transport_kind: args.transport,
        concurrency_limit: args.concurrency,
        prpc_connections,
        batched: !args.direct,
        bundles_delivered: delivered,
        bundles_per_sec: delivered as f64 / elapsed.as_secs_f64(),
        elapsed_secs: elapsed.as_secs_f64(),
        register_calls: counters.register_calls.load(Ordering::SeqCst),
        terminate_calls: counters.terminate_calls.load(Ordering::SeqCst),
        redeliveries: counters.redeliveries.load(Ordering::SeqCst),
        dropped_secret_mismatch: counters.secret_mismatch.load(Ordering::SeqCst),
        server: match &target {
            Target::Embedded(server) => {
                let calls = server.calls();
                Some(ServerCounts {
                    register_rpcs: calls.register,
                    terminate_rpcs: calls.terminate,
                    batch_rpcs: calls.batch,
                    batch_entries: calls.batch_entries,
                })
            }
            Target::External(_) => None,
        },
        cache_stats: cached.as_ref().map(|c| cache_report(&c.stats())),
        transport: transport_report(&counts, &client.coordinator),
        verify_retries: verify_retries.load(Ordering::SeqCst),
        register_latency_us_p50: percentile(&latencies, 0.50),
        register_latency_us_p99: percentile(&latencies, 0.99),
        verified_streams: verified,
    };
    if let Target::Embedded(server) = target {
        server.shutdown().await;
    }
    Ok(report)
}

/// A fresh run id: 8 hex digits from the operating system's random source, so
/// that runs against the same server never share streams.
fn new_run_id() -> String {
    format!("{:08x}", rand::rng().random::<u32>())
}

/// The client of a run: the layered stack the cache sits on, and the bare
/// transport (for the `LoadStream` checks).
struct Client {
    coordinator: ServicesCoordinator,
    transport: SharedClient,
}

/// The run's transport, pRPC or gRPC, under the shared layers: batched unless
/// `--direct`, at most `--concurrency` RPCs in flight, quick retries so that
/// injected faults are absorbed within the run. Every RPC attempt is counted.
fn transport(args: &DemoArgs, target: &Target, counts: &Arc<TransportCounts>) -> Result<Client> {
    let transport: SharedClient = match (args.transport, target) {
        (TransportKind::Grpc, target) => {
            let mut builder = GrpcCoordinatorBuilder::default();
            if let Some(token) = &args.token {
                builder = builder.bearer_token(token.clone());
            }
            let channel = match target {
                Target::Embedded(server) => server.channel(),
                Target::External(url) => builder
                    .endpoint(url.clone())
                    .context("parsing --endpoint")?
                    .connect_lazy(),
            };
            Arc::new(builder.build_transport(channel)?)
        }
        (TransportKind::Prpc, target) => {
            let url = match target {
                Target::Embedded(server) => server.prpc_endpoint(),
                Target::External(url) => url.clone(),
            };
            let mut builder = PrpcCoordinatorBuilder::default()
                .insecure(url.starts_with("http://"))
                .pool_max_idle_per_host(args.concurrency);
            if let Some(token) = &args.token {
                builder = builder.bearer_token(token.clone());
            }
            Arc::new(builder.build_transport(&url)?)
        }
    };
    let mut stack = ServicesStack::new()
        .retry(
            RetryPolicy::default()
                .with_initial_delay(Duration::from_millis(5))
                .with_max_retries(5),
        )
        .attempt_timeout(Duration::from_secs(2))
        .concurrency_limit(args.concurrency);
    if !args.direct {
        // A few milliseconds of batching delay suits an interactive run; the
        // production default is 1 s.
        stack = stack.batching(BatchOptions::default().with_max_delay(BATCH_DELAY));
    }
    let counted = CountedRpcs {
        inner: transport.clone(),
        counts: counts.clone(),
    };
    Ok(Client {
        coordinator: stack.build(counted)?,
        transport,
    })
}

/// Counts every RPC attempt that reaches the transport.
struct CountedRpcs {
    inner: SharedClient,
    counts: Arc<TransportCounts>,
}

impl CountedRpcs {
    fn count(&self) {
        self.counts.rpcs_sent.fetch_add(1, Ordering::Relaxed);
    }
}

impl ServicesClient for CountedRpcs {
    fn register_stream<'a>(
        &'a self,
        options: CallOptions,
        request: &'a proto::RegisterStreamRequest,
    ) -> ServicesFuture<'a, proto::RegisterStreamResponse> {
        self.count();
        self.inner.register_stream(options, request)
    }

    fn terminate_stream<'a>(
        &'a self,
        options: CallOptions,
        request: &'a proto::TerminateStreamRequest,
    ) -> ServicesFuture<'a, ()> {
        self.count();
        self.inner.terminate_stream(options, request)
    }

    fn batch<'a>(
        &'a self,
        options: CallOptions,
        request: &'a proto::BatchRequest,
    ) -> ServicesFuture<'a, proto::BatchResponse> {
        self.count();
        self.inner.batch(options, request)
    }

    fn load_stream<'a>(
        &'a self,
        options: CallOptions,
        request: &'a proto::LoadStreamRequest,
    ) -> ServicesFuture<'a, proto::LoadStreamResponse> {
        self.inner.load_stream(options, request)
    }
}

/// The batching client's delay threshold in the demo.
const BATCH_DELAY: Duration = Duration::from_millis(2);

fn inject_chaos(server: &FakeServer, rate: f64, seed: u64) {
    let faults = server.faults();
    faults.fail_fraction(rate, Code::Unavailable, seed);
    faults.set_latency(Duration::from_millis(1));
    faults.drop_next_batch_entries(5);
    faults.empty_next_batches(1);
}

/// Client-side counts of the transport's work.
#[derive(Default)]
struct TransportCounts {
    calls: AtomicU64,
    errors: AtomicU64,
    rpcs_sent: AtomicU64,
}

/// The transport as the cache (or the workers) see it, counting the calls that
/// reach it and the errors it returns.
struct CountedTransport {
    inner: ServicesCoordinator,
    counts: Arc<TransportCounts>,
}

impl CountedTransport {
    async fn count<T>(&self, call: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        self.counts.calls.fetch_add(1, Ordering::Relaxed);
        let result = call.await;
        if result.is_err() {
            self.counts.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}

impl Coordinator for CountedTransport {
    fn register_stream<'a>(
        &'a self,
        request: &'a RegisterRequest,
        desc: &'a [u8],
    ) -> CoordinatorFuture<'a, Result<Arc<LogStreamState>, Error>> {
        CoordinatorFuture::new(self.count(self.inner.register_stream(request, desc)))
    }

    fn terminate_stream<'a>(
        &'a self,
        request: &'a TerminateRequest,
    ) -> CoordinatorFuture<'a, Result<(), Error>> {
        CoordinatorFuture::new(self.count(self.inner.terminate_stream(request)))
    }
}

/// Derives retries and failures from the counts. Every call makes one attempt
/// plus one per retry; an attempt is an RPC (direct) or a batch entry sent for
/// the first time (batched: re-sent unanswered entries are not new attempts).
fn transport_report(counts: &TransportCounts, grpc: &ServicesCoordinator) -> TransportReport {
    let calls = counts.calls.load(Ordering::SeqCst);
    let errors = counts.errors.load(Ordering::SeqCst);
    let rpcs_sent = counts.rpcs_sent.load(Ordering::SeqCst);
    let batch = grpc.batching_client().map(|b| b.stats());
    let (attempts, failed_rpcs) = match batch {
        Some(b) => (
            b.entries_sent.saturating_sub(b.requeued_entries),
            b.failed_batches,
        ),
        None => (
            rpcs_sent,
            rpcs_sent.saturating_sub(calls - errors.min(calls)),
        ),
    };
    TransportReport {
        calls,
        errors,
        rpcs_sent,
        failed_rpcs,
        unanswered_entries: batch.map(|b| b.requeued_entries),
        retries: attempts.saturating_sub(calls),
    }
}

fn cache_report(s: &CacheStats) -> CacheReport {
    CacheReport {
        hits: s.hits,
        misses: s.misses,
        coalesced: s.coalesced_waits,
        inner_register_calls: s.register_calls,
        inner_terminate_calls: s.terminate_calls,
    }
}

fn parse_prefixes(flags: &[String]) -> Result<Vec<Prefix>> {
    ensure!(
        !flags.is_empty(),
        "--endpoint needs at least one --prefix PROJECT:PREFIX:SECRET_HEX"
    );
    flags
        .iter()
        .map(|f| {
            let mut parts = f.splitn(3, ':');
            let (Some(project), Some(prefix), Some(secret)) =
                (parts.next(), parts.next(), parts.next())
            else {
                bail!("--prefix takes PROJECT:PREFIX:SECRET_HEX");
            };
            Ok(Prefix {
                project: project.parse().context("--prefix project")?,
                prefix: prefix.parse().context("--prefix prefix")?,
                secret: PrefixSecret::from_hex(secret).context("--prefix secret")?,
            })
        })
        .collect()
}

/// The run's streams, `PREFIX/+/run-RUN_ID/step-N/stdout`, spread over the
/// prefixes.
fn plan_streams(
    args: &DemoArgs,
    run_id: &str,
    prefixes: &[Prefix],
    rng: &mut StdRng,
) -> Result<Vec<StreamPlan>> {
    let mut plans = Vec::with_capacity(args.streams);
    for i in 0..args.streams {
        let p = &prefixes[i % prefixes.len()];
        let name: StreamName = format!("run-{run_id}/step-{i}/stdout").parse()?;
        // One stream in ten ends inside its first bundle.
        let bundles = if rng.random_bool(0.1) {
            1
        } else {
            args.bundles
        };
        plans.push(StreamPlan {
            project: p.project.clone(),
            path: p.prefix.join(&name),
            secret: p.secret.clone(),
            bundles,
        });
    }
    Ok(plans)
}

/// Every bundle once, about 5% twice, in random order: as a message queue delivers.
fn plan_deliveries(plans: &[StreamPlan], rng: &mut StdRng) -> Vec<Delivery> {
    let mut out = Vec::new();
    for (s, plan) in plans.iter().enumerate() {
        for b in 0..plan.bundles {
            let delivery = Delivery {
                stream: s as u32,
                bundle: b,
                attempt: 0,
            };
            out.push(delivery);
            if rng.random_bool(0.05) {
                out.push(delivery);
            }
        }
    }
    out.shuffle(rng);
    out
}

/// One delivery of a bundle from the queue.
#[derive(Debug, Clone, Copy)]
struct Delivery {
    /// Index into the plans.
    stream: u32,
    bundle: u32,
    /// Earlier deliveries of this bundle that failed transiently.
    attempt: u32,
}

/// The queue and the counters the workers share.
struct Shared {
    queue: parking_lot::Mutex<VecDeque<Delivery>>,
    /// Deliveries not yet processed successfully (queued or in a worker).
    outstanding: AtomicUsize,
    /// Deliveries planned (redeliveries not counted).
    total: usize,
    /// Set when the run must end early: every worker returns at its next turn.
    stop: AtomicBool,
    /// Transient failures since the last success, across all workers.
    failing_streak: AtomicU64,
    counters: WorkerCounters,
    plans: Vec<StreamPlan>,
    progress: ProgressBar,
}

#[derive(Default)]
struct WorkerCounters {
    register_calls: AtomicU64,
    terminate_calls: AtomicU64,
    redeliveries: AtomicU64,
    secret_mismatch: AtomicU64,
    delivered: AtomicU64,
}

impl Shared {
    fn new(plans: Vec<StreamPlan>, deliveries: Vec<Delivery>, progress: ProgressBar) -> Self {
        Shared {
            total: deliveries.len(),
            outstanding: AtomicUsize::new(deliveries.len()),
            queue: parking_lot::Mutex::new(deliveries.into()),
            stop: AtomicBool::new(false),
            failing_streak: AtomicU64::new(0),
            counters: WorkerCounters::default(),
            plans,
            progress,
        }
    }
}

/// How often one bundle may be delivered before a transient failure counts as
/// final and ends the run.
const MAX_DELIVERIES: u32 = 50;

/// How many deliveries in a row, across all workers, may fail transiently with
/// no success in between before the Coordinator counts as unreachable and the
/// run ends (a queue of thousands of bundles would otherwise take hours to use
/// up [`MAX_DELIVERIES`] on one of them).
const MAX_FAILING_STREAK: u64 = 500;

/// A bundle the run could not process: a permanent error, or transient errors
/// on every one of [`MAX_DELIVERIES`] deliveries.
#[derive(Debug)]
struct BundleFailure {
    path: StreamPath,
    bundle: u32,
    deliveries: u32,
    error: Error,
}

impl fmt::Display for BundleFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bundle {} of {} failed ", self.bundle, self.path)?;
        if self.error.is_transient() && self.deliveries < MAX_DELIVERIES {
            write!(
                f,
                "transiently, as the last {MAX_FAILING_STREAK} deliveries of the run did \
                 with no success in between (is the Coordinator reachable?)"
            )?;
        } else if self.error.is_transient() {
            write!(
                f,
                "transiently on all of its {} deliveries",
                self.deliveries
            )?;
        } else {
            f.write_str("with a permanent error")?;
        }
        write!(f, ": {}", self.error)
    }
}

impl std::error::Error for BundleFailure {}

/// Runs `workers` collector workers until every delivery is processed, or until
/// the first bundle fails for good (or a worker panics): then every worker is
/// stopped and the failure returned. Never waits for work that cannot finish.
async fn drive(
    shared: &Arc<Shared>,
    coordinator: &Arc<dyn Coordinator>,
    workers: usize,
) -> Result<Vec<u64>> {
    let mut set = JoinSet::new();
    for _ in 0..workers {
        let shared = shared.clone();
        let coordinator = coordinator.clone();
        set.spawn(async move { worker(&shared, &*coordinator).await });
    }
    let mut latencies = Vec::new();
    let mut failure = None;
    while let Some(joined) = set.join_next().await {
        let error = match joined {
            Ok(Ok(worker_latencies)) => {
                latencies.extend(worker_latencies);
                continue;
            }
            Ok(Err(bundle)) => anyhow!(bundle),
            Err(join) if join.is_cancelled() => continue,
            Err(join) => anyhow!("a collector worker panicked: {join}"),
        };
        if failure.is_none() {
            failure = Some(error);
            shared.stop.store(true, Ordering::SeqCst);
            set.abort_all();
        }
    }
    match failure {
        None => Ok(latencies),
        Some(error) => Err(error.context(format!(
            "stopped after {} of {} bundle deliveries",
            shared.counters.delivered.load(Ordering::SeqCst),
            shared.total
        ))),
    }
}

async fn worker(shared: &Shared, coordinator: &dyn Coordinator) -> Result<Vec<u64>, BundleFailure> {
    let mut latencies = Vec::new();
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(latencies);
        }
        let next = shared.queue.lock().pop_front();
        let Some(delivery) = next else {
            if shared.outstanding.load(Ordering::SeqCst) == 0 {
                return Ok(latencies);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        let plan = &shared.plans[delivery.stream as usize];
        let counters = &shared.counters;
        match process_bundle(counters, coordinator, plan, delivery.bundle, &mut latencies).await {
            Ok(()) => {
                shared.failing_streak.store(0, Ordering::SeqCst);
                counters.delivered.fetch_add(1, Ordering::SeqCst);
                shared.outstanding.fetch_sub(1, Ordering::SeqCst);
                shared.progress.inc(1);
            }
            Err(e)
                if e.is_transient()
                    && delivery.attempt + 1 < MAX_DELIVERIES
                    && shared.failing_streak.fetch_add(1, Ordering::SeqCst) + 1
                        < MAX_FAILING_STREAK =>
            {
                // Nack: the queue redelivers the bundle later.
                counters.redeliveries.fetch_add(1, Ordering::SeqCst);
                shared.queue.lock().push_back(Delivery {
                    attempt: delivery.attempt + 1,
                    ..delivery
                });
            }
            Err(error) => {
                return Err(BundleFailure {
                    path: plan.path.clone(),
                    bundle: delivery.bundle,
                    deliveries: delivery.attempt + 1,
                    error,
                });
            }
        }
    }
}

/// What a collector does with one bundle (the behaviour contract,
/// `docs/behaviour.md` §1).
async fn process_bundle(
    counters: &WorkerCounters,
    coordinator: &dyn Coordinator,
    plan: &StreamPlan,
    bundle: u32,
    latencies: &mut Vec<u64>,
) -> Result<(), Error> {
    let terminal = (bundle + 1 == plan.bundles).then(|| plan.terminal_index());
    let mut request =
        RegisterRequest::new(plan.project.clone(), plan.path.clone(), plan.secret.clone());
    request.terminal_index = terminal;
    let started = Instant::now();
    counters.register_calls.fetch_add(1, Ordering::Relaxed);
    let state = coordinator
        .register_stream(&request, &descriptor(plan))
        .await?;
    latencies.push(started.elapsed().as_micros() as u64);
    // Constant-time comparison: PrefixSecret's `==`.
    if state.secret != plan.secret {
        counters.secret_mismatch.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    if state.archived || state.purged {
        return Ok(());
    }
    // (The log entries would be written to intermediate storage here.)
    if let Some(index) = terminal
        && state.terminal_index.is_none()
    {
        counters.terminate_calls.fetch_add(1, Ordering::Relaxed);
        coordinator
            .terminate_stream(&TerminateRequest::for_state(&state, index))
            .await?;
    }
    Ok(())
}

fn descriptor(plan: &StreamPlan) -> Vec<u8> {
    coordinator::testkit::server::descriptor(&plan.path)
}

/// Checks every stream against the server: registered, terminated at exactly its
/// index, and (embedded server, with the cache, no faults) registered by exactly one
/// RPC. An external server is asked through `LoadStream`, retrying transient
/// errors with [`VERIFY_BACKOFF`] (counted in `retries`).
async fn verify(
    plans: &[StreamPlan],
    target: &Target,
    transport: &SharedClient,
    expect_single_registration: bool,
    retries: &AtomicU64,
) -> Result<usize> {
    let mut problems = Vec::new();
    for plan in plans {
        // (terminal index, registration RPCs if known), or None if unknown.
        let found = match target {
            Target::Embedded(server) => server
                .stream(&plan.project, &plan.path)
                .map(|s| (s.terminal_index, Some(s.registrations))),
            Target::External(_) => {
                let request = LoadStreamRequest {
                    project: plan.project.to_string(),
                    id: StreamId::for_path(&plan.path).to_string(),
                    desc: false,
                };
                let load = retry_transient(VERIFY_BACKOFF, retries, || {
                    transport.load_stream(CallOptions::new(), &request)
                });
                match load.await {
                    Ok(response) => response.state.map(|state| {
                        (MessageIndex::optional_from_wire(state.terminal_index), None)
                    }),
                    Err(error) if error.code() == Code::NotFound => None,
                    Err(error) => {
                        bail!(
                            "LoadStream for {}: {}: {} ({})",
                            plan.path,
                            error.code(),
                            error.message(),
                            if error.is_transient() {
                                "transient, retries used up"
                            } else {
                                "permanent"
                            }
                        )
                    }
                }
            }
        };
        match found {
            None => problems.push(format!("{}: never registered", plan.path)),
            Some((terminal_index, registrations)) => {
                if terminal_index != Some(plan.terminal_index()) {
                    problems.push(format!(
                        "{}: terminal index {:?}, expected {}",
                        plan.path,
                        terminal_index,
                        plan.terminal_index()
                    ));
                }
                if let Some(n) = registrations
                    && expect_single_registration
                    && n != 1
                {
                    problems.push(format!("{}: registered by {n} RPCs, expected 1", plan.path));
                }
            }
        }
    }
    if !problems.is_empty() {
        let shown: Vec<&str> = problems.iter().take(10).map(String::as_str).collect();
        bail!(
            "verification failed for {} of {} streams:\n  {}",
            problems.len(),
            plans.len(),
            shown.join("\n  ")
        );
    }
    Ok(plans.len())
}

/// A bounded exponential backoff.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    /// Attempts in all, the first included.
    attempts: u32,
    /// The delay before the first retry; it doubles after each retry.
    first_delay: Duration,
    /// The longest delay.
    max_delay: Duration,
}

/// The checks' retries: 8 attempts over about 2.5 s.
const VERIFY_BACKOFF: Backoff = Backoff {
    attempts: 8,
    first_delay: Duration::from_millis(10),
    max_delay: Duration::from_secs(1),
};

/// Runs `call` until it succeeds, fails with a permanent error, or
/// `backoff.attempts` are used up; counts each retry in `retries`.
async fn retry_transient<T, F, Fut>(
    backoff: Backoff,
    retries: &AtomicU64,
    mut call: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut delay = backoff.first_delay;
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(error) if attempt < backoff.attempts && error.is_transient() => {
                retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(backoff.max_delay);
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn progress_bar(args: &DemoArgs, len: u64, label: &'static str) -> ProgressBar {
    if args.json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>14} [{bar:40}] {pos}/{len} bundles {per_sec}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label);
    bar
}

/// Prints one report line: a label in a fixed-width column, then the value.
fn line(indent: usize, label: &str, value: impl fmt::Display) {
    let width = 21usize.saturating_sub(indent);
    println!("{:indent$}{label:<width$}{value}", "");
}

fn print_report(r: &Report) {
    line(
        0,
        "collector demo",
        format_args!(
            "{} streams x up to {} bundles, {} workers{}",
            r.streams,
            r.bundles_per_stream,
            r.workers,
            r.chaos.map(|c| format!(", chaos {c}")).unwrap_or_default()
        ),
    );
    line(
        0,
        "build profile",
        if r.profile == "release" {
            "release (optimized)"
        } else {
            "debug (unoptimized: throughput is understated several times)"
        },
    );
    for run in &r.runs {
        println!();
        println!(
            "{} ({})",
            if run.cache {
                "with cache"
            } else {
                "without cache"
            },
            if run.batched {
                "batched RPCs"
            } else {
                "direct RPCs"
            }
        );
        print_run(run, r.chaos.is_some());
    }
    if r.rpc_reduction.is_some() || r.speedup.is_some() {
        println!();
    }
    if let Some(x) = r.rpc_reduction {
        let counted_by = match r.runs.first().and_then(|run| run.server.as_ref()) {
            Some(_) => "as the server counted them",
            None => "as the client sent them",
        };
        line(
            0,
            "cache effect",
            format_args!("{x:.1}x fewer RPCs ({counted_by})"),
        );
    }
    if let Some(x) = r.speedup {
        line(0, "cache speedup", format_args!("{x:.1}x the bundles/s"));
    }
}

fn print_run(run: &RunReport, chaos: bool) {
    line(
        2,
        "run id",
        format_args!(
            "{} (stream names PREFIX/+/run-{}/...)",
            run.run_id, run.run_id
        ),
    );
    line(
        2,
        "bundles",
        format_args!(
            "{} in {:.2}s = {:.0} bundles/s ({} redelivered)",
            run.bundles_delivered, run.elapsed_secs, run.bundles_per_sec, run.redeliveries
        ),
    );
    line(
        2,
        "workload calls",
        format_args!(
            "register {}  terminate {}",
            run.register_calls, run.terminate_calls
        ),
    );
    let t = &run.transport;
    line(
        2,
        "transport",
        format_args!(
            "{}, at most {} RPCs in flight: calls {}  RPCs sent {}  errors returned {}",
            run.transport_kind, run.concurrency_limit, t.calls, t.rpcs_sent, t.errors
        ),
    );
    if let Some(opened) = run.prpc_connections {
        line(
            2,
            "connections",
            format_args!(
                "{opened} opened on the server's pRPC port (limit {}), reused for every RPC",
                run.concurrency_limit
            ),
        );
    }
    if let Some(s) = &run.server {
        line(
            2,
            "reached server",
            format_args!(
                "register {}  terminate {}  batch {} ({} entries)",
                s.register_rpcs, s.terminate_rpcs, s.batch_rpcs, s.batch_entries
            ),
        );
    }
    if let Some(c) = &run.cache_stats {
        line(
            2,
            "cache",
            format_args!(
                "hits {}  misses {}  coalesced {}  inner register {}  inner terminate {}",
                c.hits, c.misses, c.coalesced, c.inner_register_calls, c.inner_terminate_calls
            ),
        );
    }
    let unanswered = t.unanswered_entries.unwrap_or(0);
    if chaos || t.failed_rpcs > 0 || unanswered > 0 || run.verify_retries > 0 {
        let entries = match t.unanswered_entries {
            Some(n) => format!("  unanswered batch entries {n}"),
            None => String::new(),
        };
        line(
            2,
            "faults seen",
            format_args!(
                "failed RPCs {}{entries} (counted by the client; the fake server keeps no fault count)",
                t.failed_rpcs
            ),
        );
        line(
            2,
            "retries",
            format_args!(
                "transport {}  re-sent entries {}  redelivered bundles {}  verify {}",
                t.retries, unanswered, run.redeliveries, run.verify_retries
            ),
        );
    }
    line(
        2,
        "register latency",
        format_args!(
            "p50 {} µs  p99 {} µs",
            run.register_latency_us_p50, run.register_latency_us_p99
        ),
    );
    line(
        2,
        "verified",
        format_args!(
            "{} streams registered and terminated at their index",
            run.verified_streams
        ),
    );
}

#[cfg(test)]
mod tests {
    use coordinator::testkit::{FakeCoordinator, Fault, Operation, RpcKind};

    use super::*;

    /// `streams` streams of `bundles` bundles under one prefix, each bundle
    /// delivered once in order.
    fn workload(run_id: &str, streams: usize, bundles: u32) -> (Vec<StreamPlan>, Vec<Delivery>) {
        let prefix = Prefix {
            project: "chromium".parse().unwrap(),
            prefix: "demo/test".parse().unwrap(),
            secret: PrefixSecret::from([7; PrefixSecret::LEN]),
        };
        let plans: Vec<StreamPlan> = (0..streams)
            .map(|i| StreamPlan {
                project: prefix.project.clone(),
                path: prefix
                    .prefix
                    .join(&format!("run-{run_id}/step-{i}/stdout").parse().unwrap()),
                secret: prefix.secret.clone(),
                bundles,
            })
            .collect();
        let deliveries = (0..streams as u32)
            .flat_map(|stream| {
                (0..bundles).map(move |bundle| Delivery {
                    stream,
                    bundle,
                    attempt: 0,
                })
            })
            .collect();
        (plans, deliveries)
    }

    /// Drives the workload over `coordinator`; a hang fails the test.
    async fn drive_bounded(
        plans: Vec<StreamPlan>,
        deliveries: Vec<Delivery>,
        coordinator: Arc<dyn Coordinator>,
        workers: usize,
    ) -> (Arc<Shared>, Result<Vec<u64>>) {
        let shared = Arc::new(Shared::new(plans, deliveries, ProgressBar::hidden()));
        let result = tokio::time::timeout(
            Duration::from_secs(60),
            drive(&shared, &coordinator, workers),
        )
        .await
        .expect("the run hung instead of ending");
        (shared, result)
    }

    #[tokio::test]
    async fn a_permanent_error_ends_the_run_instead_of_hanging() {
        // Two permanent answers: the workers that get them give up on their
        // bundles, the others run out of work while those stay outstanding.
        let fake = FakeCoordinator::new();
        fake.inject(
            Fault::new(Error::new(Code::PermissionDenied, "not a service"))
                .on(Operation::Register)
                .times(2),
        );
        let (plans, deliveries) = workload("t1", 8, 3);
        let (shared, result) = drive_bounded(plans, deliveries, Arc::new(fake), 4).await;

        let report = format!("{:#}", result.unwrap_err());
        assert!(report.starts_with("stopped after "), "{report}");
        assert!(
            report.contains(" of 24 bundle deliveries: bundle "),
            "{report}"
        );
        assert!(
            report.ends_with("failed with a permanent error: PERMISSION_DENIED: not a service"),
            "{report}"
        );
        // A permanent error is never redelivered, and its bundle is not counted.
        assert_eq!(shared.counters.redeliveries.load(Ordering::SeqCst), 0);
        assert!(shared.counters.delivered.load(Ordering::SeqCst) < 24);
    }

    #[tokio::test]
    async fn an_unreachable_coordinator_ends_a_large_run_quickly() {
        // Every call fails transiently; with 600 bundles no single one reaches
        // MAX_DELIVERIES soon, but the streak of failures ends the run.
        let fake = FakeCoordinator::new();
        fake.inject(Fault::new(Error::unavailable("connection refused")));
        let (plans, deliveries) = workload("t4", 200, 3);
        let (shared, result) = drive_bounded(plans, deliveries, Arc::new(fake), 8).await;
        let report = format!("{:#}", result.unwrap_err());
        assert!(report.contains("is the Coordinator reachable?"), "{report}");
        let redelivered = shared.counters.redeliveries.load(Ordering::SeqCst);
        assert!(redelivered < MAX_FAILING_STREAK + 8, "{redelivered}");
    }

    #[tokio::test]
    async fn a_bundle_failing_transiently_on_every_delivery_ends_the_run() {
        let fake = FakeCoordinator::new();
        fake.inject(Fault::new(Error::unavailable("down")));
        let (plans, deliveries) = workload("t2", 1, 1);
        let (shared, result) = drive_bounded(plans, deliveries, Arc::new(fake.clone()), 3).await;

        let report = format!("{:#}", result.unwrap_err());
        assert!(
            report.contains(&format!(
                "failed transiently on all of its {MAX_DELIVERIES} deliveries: UNAVAILABLE"
            )),
            "{report}"
        );
        let redelivered = shared.counters.redeliveries.load(Ordering::SeqCst);
        assert_eq!(redelivered, u64::from(MAX_DELIVERIES - 1));
        assert_eq!(
            fake.calls(Operation::Register).started,
            MAX_DELIVERIES as usize
        );
    }

    #[tokio::test]
    async fn a_clean_run_processes_every_delivery_and_terminates_each_stream() {
        // Real per-stream state: a registration returns the stored state.
        let fake = FakeCoordinator::with_streams();
        let (plans, deliveries) = workload("t3", 5, 4);
        let (shared, result) = drive_bounded(plans, deliveries, Arc::new(fake.clone()), 3).await;

        assert_eq!(result.unwrap().len(), 20);
        assert_eq!(shared.counters.delivered.load(Ordering::SeqCst), 20);
        assert_eq!(fake.terminates().len(), 5);
    }

    #[test]
    fn every_run_names_its_streams_with_its_own_run_id() {
        let a = new_run_id();
        let b = new_run_id();
        assert_ne!(a, b);
        let prefixes = [Prefix {
            project: "chromium".parse().unwrap(),
            prefix: "demo/build-0".parse().unwrap(),
            secret: PrefixSecret::from([1; PrefixSecret::LEN]),
        }];
        let args = DemoArgs {
            streams: 3,
            bundles: 2,
            workers: 1,
            no_cache: false,
            direct: false,
            chaos: None,
            endpoint: None,
            prefixes: Vec::new(),
            transport: TransportKind::Prpc,
            concurrency: 8,
            token: None,
            no_compare: false,
            json: false,
            seed: 1,
            no_release: true,
            metrics_addr: None,
        };
        let paths = |id: &str| -> Vec<String> {
            plan_streams(&args, id, &prefixes, &mut StdRng::seed_from_u64(1))
                .unwrap()
                .iter()
                .map(|p| p.path.to_string())
                .collect()
        };
        let (first, second) = (paths(&a), paths(&b));
        assert_eq!(first[0], format!("demo/build-0/+/run-{a}/step-0/stdout"));
        assert!(first.iter().all(|p| !second.contains(p)));
    }

    /// Streams registered and terminated on `server`, as a finished run leaves them.
    async fn finished_streams(server: &FakeServer, run_id: &str) -> Vec<StreamPlan> {
        let (plans, _) = workload(run_id, 3, 2);
        server.register_prefix(
            &plans[0].project,
            &"demo/test".parse().unwrap(),
            &plans[0].secret,
            None,
        );
        let client = server.coordinator();
        for plan in &plans {
            let request =
                RegisterRequest::new(plan.project.clone(), plan.path.clone(), plan.secret.clone());
            let state = client
                .register_stream(&request, &descriptor(plan))
                .await
                .unwrap();
            client
                .terminate_stream(&TerminateRequest::for_state(&state, plan.terminal_index()))
                .await
                .unwrap();
        }
        plans
    }

    /// Verifies finished streams through `LoadStream` on a fake server treated as
    /// external, whose next `n` `LoadStream` calls fail with `code`; returns the
    /// outcome and the retries counted.
    async fn verify_with_load_failures(n: usize, code: Code) -> (Result<usize>, u64) {
        let server = FakeServicesServer::start().await;
        let plans = finished_streams(&server, "verify").await;
        server.faults().fail_next_rpc(RpcKind::LoadStream, n, code);
        let retries = AtomicU64::new(0);
        let target = Target::External(server.endpoint());
        let transport: SharedClient =
            Arc::new(coordinator::grpc::GrpcServices::new(server.channel()));
        let result = verify(&plans, &target, &transport, false, &retries).await;
        server.shutdown().await;
        (result, retries.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn verification_retries_transient_load_stream_errors() {
        let (result, retries) = verify_with_load_failures(3, Code::Unavailable).await;
        assert_eq!((result.unwrap(), retries), (3, 3));
    }

    #[tokio::test]
    async fn verification_stops_at_a_permanent_load_stream_error() {
        let (result, retries) = verify_with_load_failures(1, Code::PermissionDenied).await;
        let error = result.unwrap_err().to_string();
        assert!(
            error.ends_with(": PERMISSION_DENIED: injected fault (permanent)"),
            "{error}"
        );
        assert_eq!(retries, 0);
    }

    #[tokio::test]
    async fn retries_are_bounded() {
        let backoff = Backoff {
            attempts: 4,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        };
        let (calls, retries) = (AtomicU64::new(0), AtomicU64::new(0));
        let result: Result<(), _> = retry_transient(backoff, &retries, || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(Error::unavailable("down")) }
        })
        .await;
        assert_eq!(result.unwrap_err().code(), Code::Unavailable);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(retries.load(Ordering::SeqCst), 3);
    }
}
