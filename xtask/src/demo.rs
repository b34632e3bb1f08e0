//! `cargo xtask demo`: a simulated collector driven through the whole stack
//! (cache → gRPC transport, batched by default → in-process fake Coordinator),
//! then checked against the server's state.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use coordinator::cache::{CacheStats, CachedCoordinator};
use coordinator::grpc::proto::logdog::LoadStreamRequest;
use coordinator::grpc::proto::logdog::services_client::ServicesClient;
use coordinator::grpc::{BatchOptions, GrpcCoordinator, RetryPolicy};
use coordinator::testkit::{FakeServer, FakeServicesServer};
use coordinator::{
    Code, Coordinator, MessageIndex, PrefixSecret, ProjectName, RegisterRequest, StreamId,
    StreamName, StreamPath, TerminateRequest,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

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
    /// Skip the comparison run without the cache.
    #[arg(long)]
    no_compare: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Seed for the delivery order, duplicates and faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// What one run measured.
#[derive(Debug, Serialize)]
struct RunReport {
    cache: bool,
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

#[derive(Debug, Serialize)]
struct Report {
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: DemoArgs) -> Result<()> {
    let mut runs = Vec::new();
    if !args.no_cache {
        runs.push(run_once(&args, true).await?);
    }
    if args.no_cache || !args.no_compare {
        runs.push(run_once(&args, false).await?);
    }
    let (rpc_reduction, speedup) = match (runs.first(), runs.get(1)) {
        (Some(c), Some(u)) if c.cache && !u.cache => (
            match (&c.server, &u.server) {
                (Some(cs), Some(us)) => Some(rpc_total(us) as f64 / rpc_total(cs).max(1) as f64),
                _ => None,
            },
            Some(c.bundles_per_sec / u.bundles_per_sec.max(f64::MIN_POSITIVE)),
        ),
        _ => (None, None),
    };
    let report = Report {
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
    Ok(())
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
    let plans = plan_streams(args, &prefixes, &mut rng)?;
    let deliveries = plan_deliveries(&plans, &mut rng);

    let transport = match &target {
        Target::Embedded(server) => transport(args, server.channel())?,
        Target::External(url) => {
            let channel = tonic::transport::Endpoint::from_shared(url.clone())
                .context("parsing --endpoint")?
                .connect_lazy();
            transport(args, channel)?
        }
    };
    if let (Target::Embedded(server), Some(rate)) = (&target, args.chaos) {
        inject_chaos(server, rate, args.seed);
    }
    let cached =
        cache.then(|| Arc::new(CachedCoordinator::new(transport.clone(), 0, Duration::ZERO)));
    let coordinator: Arc<dyn Coordinator> = match &cached {
        Some(c) => c.clone(),
        None => transport.clone(),
    };

    let label = if cache { "with cache" } else { "without cache" };
    let progress = progress_bar(args, deliveries.len() as u64, label);
    let shared = Arc::new(Shared {
        queue: parking_lot::Mutex::new(deliveries.into_iter().map(|d| (d, 0u32)).collect()),
        outstanding: AtomicUsize::new(0),
        register_calls: AtomicU64::new(0),
        terminate_calls: AtomicU64::new(0),
        redeliveries: AtomicU64::new(0),
        secret_mismatch: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        plans,
        progress: progress.clone(),
    });
    shared
        .outstanding
        .store(shared.queue.lock().len(), Ordering::SeqCst);

    let started = Instant::now();
    let mut workers = Vec::with_capacity(args.workers);
    for _ in 0..args.workers {
        let shared = shared.clone();
        let coordinator = coordinator.clone();
        workers.push(tokio::spawn(
            async move { worker(&shared, &*coordinator).await },
        ));
    }
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await.context("a collector worker panicked")??);
    }
    let elapsed = started.elapsed();
    progress.finish_and_clear();

    let verified = verify(&shared.plans, &target, cache && args.chaos.is_none()).await?;
    latencies.sort_unstable();
    let delivered = shared.delivered.load(Ordering::SeqCst);
    let report = RunReport {
        cache,
        batched: !args.direct,
        bundles_delivered: delivered,
        bundles_per_sec: delivered as f64 / elapsed.as_secs_f64(),
        elapsed_secs: elapsed.as_secs_f64(),
        register_calls: shared.register_calls.load(Ordering::SeqCst),
        terminate_calls: shared.terminate_calls.load(Ordering::SeqCst),
        redeliveries: shared.redeliveries.load(Ordering::SeqCst),
        dropped_secret_mismatch: shared.secret_mismatch.load(Ordering::SeqCst),
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
        register_latency_us_p50: percentile(&latencies, 0.50),
        register_latency_us_p99: percentile(&latencies, 0.99),
        verified_streams: verified,
    };
    if let Target::Embedded(server) = target {
        server.shutdown().await;
    }
    Ok(report)
}

/// The gRPC transport: batched unless `--direct`; quick retries so that injected
/// faults are absorbed within the run.
fn transport(args: &DemoArgs, channel: tonic::transport::Channel) -> Result<Arc<GrpcCoordinator>> {
    let mut builder = GrpcCoordinator::builder()
        .retry(
            RetryPolicy::default()
                .with_initial_delay(Duration::from_millis(5))
                .with_max_retries(5),
        )
        .attempt_timeout(Duration::from_secs(2));
    if !args.direct {
        // A few milliseconds of batching delay suits an interactive run; the
        // production default is 1 s.
        builder = builder.batching(BatchOptions::default().with_max_delay(BATCH_DELAY));
    }
    Ok(Arc::new(builder.build(channel)?))
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
            let bytes = hex::decode(secret).context("--prefix secret: not hex")?;
            Ok(Prefix {
                project: project.parse().context("--prefix project")?,
                prefix: prefix.parse().context("--prefix prefix")?,
                secret: PrefixSecret::from_bytes(&bytes).context("--prefix secret")?,
            })
        })
        .collect()
}

fn plan_streams(args: &DemoArgs, prefixes: &[Prefix], rng: &mut StdRng) -> Result<Vec<StreamPlan>> {
    let mut plans = Vec::with_capacity(args.streams);
    for i in 0..args.streams {
        let p = &prefixes[i % prefixes.len()];
        let name: StreamName = format!("steps/step-{i}/stdout").parse()?;
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
fn plan_deliveries(plans: &[StreamPlan], rng: &mut StdRng) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for (s, plan) in plans.iter().enumerate() {
        for b in 0..plan.bundles {
            out.push((s as u32, b));
            if rng.random_bool(0.05) {
                out.push((s as u32, b));
            }
        }
    }
    out.shuffle(rng);
    out
}

struct Shared {
    queue: parking_lot::Mutex<VecDeque<((u32, u32), u32)>>,
    outstanding: AtomicUsize,
    register_calls: AtomicU64,
    terminate_calls: AtomicU64,
    redeliveries: AtomicU64,
    secret_mismatch: AtomicU64,
    delivered: AtomicU64,
    plans: Vec<StreamPlan>,
    progress: ProgressBar,
}

/// How often one bundle may be redelivered after transient failures before the run
/// counts it as lost.
const MAX_DELIVERIES: u32 = 50;

async fn worker(shared: &Shared, coordinator: &dyn Coordinator) -> Result<Vec<u64>> {
    let mut latencies = Vec::new();
    loop {
        let next = shared.queue.lock().pop_front();
        let Some(((stream, bundle), attempt)) = next else {
            if shared.outstanding.load(Ordering::SeqCst) == 0 {
                return Ok(latencies);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        let plan = &shared.plans[stream as usize];
        match process_bundle(shared, coordinator, plan, bundle, &mut latencies).await {
            Ok(()) => {
                shared.delivered.fetch_add(1, Ordering::SeqCst);
                shared.outstanding.fetch_sub(1, Ordering::SeqCst);
                shared.progress.inc(1);
            }
            Err(e) if e.is_transient() && attempt + 1 < MAX_DELIVERIES => {
                // Nack: the queue redelivers the bundle later.
                shared.redeliveries.fetch_add(1, Ordering::SeqCst);
                shared
                    .queue
                    .lock()
                    .push_back(((stream, bundle), attempt + 1));
            }
            Err(e) => bail!("bundle {bundle} of {} failed: {e}", plan.path),
        }
    }
}

/// What a collector does with one bundle (semantics.md §1).
async fn process_bundle(
    shared: &Shared,
    coordinator: &dyn Coordinator,
    plan: &StreamPlan,
    bundle: u32,
    latencies: &mut Vec<u64>,
) -> Result<(), coordinator::Error> {
    let terminal = (bundle + 1 == plan.bundles).then(|| plan.terminal_index());
    let mut request =
        RegisterRequest::new(plan.project.clone(), plan.path.clone(), plan.secret.clone());
    request.terminal_index = terminal;
    let started = Instant::now();
    shared.register_calls.fetch_add(1, Ordering::Relaxed);
    let state = coordinator
        .register_stream(&request, &descriptor(plan))
        .await?;
    latencies.push(started.elapsed().as_micros() as u64);
    // Constant-time comparison: PrefixSecret's `==`.
    if state.secret != plan.secret {
        shared.secret_mismatch.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    if state.archived || state.purged {
        return Ok(());
    }
    // (The log entries would be written to intermediate storage here.)
    if let Some(index) = terminal
        && state.terminal_index.is_none()
    {
        shared.terminate_calls.fetch_add(1, Ordering::Relaxed);
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
/// RPC. An external server is asked through `LoadStream`.
async fn verify(
    plans: &[StreamPlan],
    target: &Target,
    expect_single_registration: bool,
) -> Result<usize> {
    let mut client = match target {
        Target::Embedded(_) => None,
        Target::External(url) => Some(ServicesClient::new(
            tonic::transport::Endpoint::from_shared(url.clone())
                .context("parsing --endpoint")?
                .connect_lazy(),
        )),
    };
    let mut problems = Vec::new();
    for plan in plans {
        // (terminal index, registration RPCs if known), or None if unknown.
        let found = match (target, client.as_mut()) {
            (Target::Embedded(server), _) => server
                .stream(&plan.project, &plan.path)
                .map(|s| (s.terminal_index, Some(s.registrations))),
            (Target::External(_), Some(client)) => {
                let request = LoadStreamRequest {
                    project: plan.project.to_string(),
                    id: StreamId::for_path(&plan.path).to_string(),
                    desc: false,
                };
                match client.load_stream(request).await {
                    Ok(response) => response.into_inner().state.map(|state| {
                        (MessageIndex::optional_from_wire(state.terminal_index), None)
                    }),
                    Err(status) if status.code() == tonic::Code::NotFound => None,
                    Err(status) => bail!("LoadStream for {}: {status}", plan.path),
                }
            }
            (Target::External(_), None) => None,
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

fn print_report(r: &Report) {
    println!(
        "collector demo: {} streams x up to {} bundles, {} workers{}",
        r.streams,
        r.bundles_per_stream,
        r.workers,
        r.chaos.map(|c| format!(", chaos {c}")).unwrap_or_default()
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
        println!(
            "  bundles            {} in {:.2}s = {:.0} bundles/s ({} redelivered)",
            run.bundles_delivered, run.elapsed_secs, run.bundles_per_sec, run.redeliveries
        );
        println!(
            "  workload calls     register {}  terminate {}",
            run.register_calls, run.terminate_calls
        );
        if let Some(s) = &run.server {
            println!(
                "  reached server     register {}  terminate {}  batch {} ({} entries)",
                s.register_rpcs, s.terminate_rpcs, s.batch_rpcs, s.batch_entries
            );
        }
        if let Some(c) = &run.cache_stats {
            println!(
                "  cache              hits {}  misses {}  coalesced {}  inner register {}  inner terminate {}",
                c.hits, c.misses, c.coalesced, c.inner_register_calls, c.inner_terminate_calls
            );
        }
        println!(
            "  register latency   p50 {} µs  p99 {} µs",
            run.register_latency_us_p50, run.register_latency_us_p99
        );
        println!(
            "  verified           {} streams registered and terminated at their index",
            run.verified_streams
        );
    }
    if let Some(x) = r.rpc_reduction {
        println!();
        println!("cache effect: {x:.1}x fewer RPCs");
    }
    if let Some(x) = r.speedup {
        println!("              {x:.1}x the bundles/s");
    }
}
