//! Chaos end to end: a simulated collector drives the whole stack (cache →
//! batching gRPC client with retries → in-process fake Coordinator over
//! loopback) while the server injects faults, and the run must lose nothing.
//!
//! Faults, each proven to have fired before the next is armed: a fraction of
//! RPCs failing `Unavailable`, batch answers dropped from responses, an empty
//! batch response, RPCs failing `Internal` (and batch entries failing with a
//! per-entry error flagged transient), latency beyond the per-attempt timeout,
//! a server restart (state kept), then a fraction failing `Internal`. Answers
//! come back in shuffled order throughout. The traffic is released in chunks:
//! each fault is armed before the traffic that triggers it, so no fault depends
//! on the relative speed of the workload and the test.
//!
//! The workload and the fault decisions are seeded: set `COORDINATOR_TEST_SEED`
//! to rerun a failing seed (it is printed at the start and in every failure).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    CollectorReport, Feeder, RpcCounts, Stack, StackOptions, StreamKind, Workload, WorkloadSpec,
};
use coordinator::{Code, Coordinator};
use coordinator_testkit::{BatchOrder, FakeServer, FakeServicesServer};

const DEFAULT_SEED: u64 = 0x00c4_a05e_ed01;

const SPEC: WorkloadSpec = WorkloadSpec {
    streams: 400,
    impostors: 0,
    prefixes: 6,
    max_bundles: 5,
    single_bundle: 0.15,
    open: 0.15,
    duplicate: 0.1,
};

const WORKERS: usize = 16;

/// The deliveries are released in this many chunks: each fault is armed before
/// traffic is released for it.
const CHUNKS: usize = 32;

/// Small batches: more RPCs, so more chances for each fault.
const MAX_ENTRIES: usize = 5;

/// Re-queued entries that prove dropped answers fired.
const REQUEUES: u64 = 3;

/// Latency of the slow phase: beyond the per-attempt timeout.
const SLOW: Duration = Duration::from_millis(1500);

/// A run that takes this long has hung: fail with the seed instead of hanging
/// CI.
const WATCHDOG: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_stack_loses_nothing_under_injected_faults() {
    let seed = common::seed(DEFAULT_SEED);
    println!(
        "chaos seed {seed:#x} (rerun with {}={seed:#x})",
        common::SEED_VAR
    );
    if tokio::time::timeout(WATCHDOG, chaos_run(seed))
        .await
        .is_err()
    {
        panic!("seed {seed:#x}: the chaos run did not finish within {WATCHDOG:?}");
    }
}

async fn chaos_run(seed: u64) {
    let workload = Arc::new(Workload::generate(&SPEC, seed));
    let server = FakeServicesServer::start().await;
    workload.register_prefixes(&server);
    let mut options = StackOptions::default();
    options.batch = options.batch.with_max_entries(MAX_ENTRIES);
    assert!(SLOW > options.attempt_timeout);
    let stack = Stack::build(server.channel(), options);

    let feeder = Feeder::new(&workload, CHUNKS);
    let coordinator: Arc<dyn Coordinator> = stack.cache.clone();
    let collector = tokio::spawn(common::run_collector(
        coordinator,
        workload.clone(),
        WORKERS,
        None,
        feeder.clone(),
    ));
    let (server, phases) = inject_faults(server, &stack, &feeder, seed).await;
    if phases.is_err() {
        // Let the rest of the run finish quickly, to report the failure.
        server.faults().clear();
    }
    feeder.release_all();
    let report = collector
        .await
        .unwrap_or_else(|e| panic!("seed {seed:#x}: the collector panicked: {e}"));

    let figures = Figures::collect(&workload, &report, &stack, &server);
    figures.print(seed);
    let ctx = format!("seed {seed:#x}; figures: {figures:#?}");

    // Zero panics, nothing lost.
    assert_eq!(report.panics, 0, "collector workers panicked; {ctx}");
    assert!(
        report.failures.is_empty(),
        "deliveries failed for good: {:#?}; {ctx}",
        report.failures
    );
    assert_eq!(report.acked as usize, workload.deliveries.len(), "{ctx}");
    assert_eq!(report.secret_mismatches, 0, "{ctx}");
    let phases = phases.unwrap_or_else(|e| panic!("{e}; {ctx}"));
    println!("fault phases:\n  {}", phases.join("\n  "));

    // The server's state: every stream registered, terminal ones at exactly
    // their index, open ones not terminated, nothing else.
    let problems = common::verify(&server, &workload);
    assert!(problems.is_empty(), "{problems:#?}; {ctx}");

    figures.assert_bounds(&ctx);
    server.shutdown().await;
}

/// Arms the faults one after another; before each waits, it releases a chunk of
/// traffic, and more whenever the collector runs out, until the fault has
/// observably fired. Returns the server and what each phase observed; fails if
/// the workload runs out first.
async fn inject_faults(
    mut server: FakeServer,
    stack: &Stack,
    feeder: &Feeder,
    seed: u64,
) -> (FakeServer, Result<Vec<String>, String>) {
    let observer = &stack.observer;
    let batching = stack
        .grpc()
        .batching_client()
        .expect("the stack batches")
        .clone();
    let mut phases = Vec::new();
    let result = async {
        let faults = server.faults();
        faults.set_batch_order(BatchOrder::Shuffled { seed });
        faults.fail_fraction(0.1, Code::Unavailable, seed);
        phase(feeder, "RPCs failing Unavailable", async {
            observer.wait(|c| c.status(Code::Unavailable) >= 1).await;
        })
        .await?;
        phases.push(format!(
            "Unavailable fraction fired: {:?}",
            observer.snapshot()
        ));

        // The answer at index 1 of every batch (so never all of a batch's
        // answers: that would be an empty response).
        faults.drop_batch_entries_where(|index| index == 1);
        phase(feeder, "dropped batch answers", async {
            poll(|| batching.stats().requeued_entries >= REQUEUES).await;
        })
        .await?;
        phases.push(format!("dropped answers re-queued: {:?}", batching.stats()));
        faults.clear();
        faults.set_batch_order(BatchOrder::Shuffled { seed });
        faults.fail_fraction(0.1, Code::Unavailable, seed.wrapping_add(2));

        faults.empty_next_batches(1);
        phase(feeder, "an empty batch response", async {
            // Every failed Batch RPC is seen by the observer first; a failed
            // batch it did not see is the empty response.
            poll(|| {
                let failed = batching.stats().failed_batches;
                failed > observer.snapshot().failed()
            })
            .await;
        })
        .await?;
        phases.push(format!("empty batch answered: {:?}", batching.stats()));

        faults.fail_next(3, Code::Internal);
        // A code that is permanent by the table, flagged transient per entry.
        faults.fail_next_batch_entries_flagged(4, Code::Aborted, true);
        phase(feeder, "RPCs failing Internal", async {
            observer.wait(|c| c.status(Code::Internal) >= 3).await;
        })
        .await?;
        phases.push(format!("3 Internal failures: {:?}", observer.snapshot()));

        faults.set_latency(SLOW);
        phase(feeder, "latency beyond the attempt timeout", async {
            observer.wait(|c| c.timed_out >= 1).await;
        })
        .await?;
        faults.set_latency(Duration::ZERO);
        phases.push(format!("attempts timed out: {:?}", observer.snapshot()));

        let base = server.calls().batch;
        phase(feeder, "traffic before the restart", async {
            server.wait_calls(|c| c.batch >= base + 3).await;
        })
        .await?;
        tokio::time::timeout(Duration::from_secs(30), server.restart(true))
            .await
            .map_err(|_| "the server restart did not finish within 30 s".to_string())?;
        phases.push(format!(
            "restarted after {} Batch RPCs",
            server.calls().batch
        ));

        let internal = observer.snapshot().status(Code::Internal);
        server
            .faults()
            .fail_fraction(0.1, Code::Internal, seed.wrapping_add(1));
        phase(feeder, "RPCs failing Internal after the restart", async {
            observer.wait(|c| c.status(Code::Internal) > internal).await;
        })
        .await?;
        phases.push(format!(
            "Internal fraction fired: {:?}",
            observer.snapshot()
        ));
        Ok(())
    }
    .await;
    (server, result.map(|()| phases))
}

/// Releases a chunk of traffic and waits for `fired`, releasing another chunk
/// whenever the collector has settled everything released so far. Fails if
/// the traffic runs out before `fired` completes.
async fn phase(feeder: &Feeder, name: &str, fired: impl Future<Output = ()>) -> Result<(), String> {
    tokio::pin!(fired);
    feeder.release_next();
    loop {
        tokio::select! {
            biased;
            () = &mut fired => return Ok(()),
            () = feeder.wait_idle() => {
                if !feeder.release_next() {
                    return Err(format!(
                        "the workload ran out before the fault phase {name:?} fired"
                    ));
                }
            }
        }
    }
}

/// Waits until `condition` holds, checking every millisecond (for counters that
/// offer no notification).
async fn poll(mut condition: impl FnMut() -> bool) {
    while !condition() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// What the run did, at every layer.
#[derive(Debug)]
struct Figures {
    streams: u64,
    terminal_streams: u64,
    deliveries: u64,
    nacks: u64,
    max_retries: u64,
    max_requeues: u64,
    max_entries: u64,
    cache: coordinator_cache::CacheStats,
    batch: coordinator_grpc::BatchStats,
    rpcs: RpcCounts,
    server: coordinator_testkit::CallCounts,
}

impl Figures {
    fn collect(
        workload: &Workload,
        report: &CollectorReport,
        stack: &Stack,
        server: &FakeServer,
    ) -> Figures {
        Figures {
            streams: (workload.streams.len() - workload.count(StreamKind::Impostor)) as u64,
            terminal_streams: workload.count(StreamKind::Terminal) as u64,
            deliveries: workload.deliveries.len() as u64,
            nacks: report.nacks,
            max_retries: u64::from(stack.options.retry.max_retries),
            max_requeues: u64::from(stack.options.batch.max_requeues),
            max_entries: stack.options.batch.max_entries as u64,
            cache: stack.cache.stats(),
            batch: stack.batch_stats(),
            rpcs: stack.observer.snapshot(),
            server: server.calls(),
        }
    }

    /// Sends per inner call: `(max_retries + 1)` attempts, each sent in at most
    /// `(max_requeues + 1)` batches.
    fn sends_per_inner_call(&self) -> u64 {
        (self.max_retries + 1) * (self.max_requeues + 1)
    }

    /// The most inner calls the cache may make: one per stream to register, one
    /// per terminal stream to terminate, plus one more after each transient
    /// failure (the only thing it forgets).
    fn inner_call_bound(&self) -> u64 {
        self.streams + self.terminal_streams + self.cache.transient_failures
    }

    /// The a-priori bound on RPCs: every transient failure the cache forgets
    /// reached a collector as a nack, so inner calls are at most streams +
    /// terminal streams + nacks, and each is sent at most
    /// [`Self::sends_per_inner_call`] times, one entry at least per RPC.
    fn rpc_bound(&self) -> u64 {
        (self.streams + self.terminal_streams + self.nacks) * self.sends_per_inner_call()
    }

    /// The fewest entries the server can have received: one successful
    /// registration per stream, plus at least one entry in every batch answered
    /// with an error status or with no entries, plus every answer dropped (each
    /// is re-sent).
    fn entry_floor(&self) -> u64 {
        self.streams + self.rpcs.error_statuses() + 1 + self.batch.requeued_entries
    }

    /// The fewest Batch RPCs: the failed and empty ones, plus enough full
    /// batches for one registration per stream.
    fn batch_floor(&self) -> u64 {
        self.rpcs.error_statuses() + 1 + self.streams.div_ceil(self.max_entries)
    }

    fn print(&self, seed: u64) {
        let inner = self.cache.register_calls + self.cache.terminate_calls;
        println!("chaos run, seed {seed:#x}");
        println!(
            "  workload    {} streams ({} terminal), {} deliveries, {} nacks",
            self.streams, self.terminal_streams, self.deliveries, self.nacks
        );
        println!(
            "  cache       {} inner calls (bound {}), {} transient failures, {} hits, {} coalesced",
            inner,
            self.inner_call_bound(),
            self.cache.transient_failures,
            self.cache.hits,
            self.cache.coalesced_waits
        );
        println!(
            "  batching    {} batches, {} entries sent (bound {} = inner x {}), {} re-queued, {} failed batches",
            self.batch.batches_sent,
            self.batch.entries_sent,
            inner * self.sends_per_inner_call(),
            self.sends_per_inner_call(),
            self.batch.requeued_entries,
            self.batch.failed_batches
        );
        println!("  channel     {:?}", self.rpcs);
        println!(
            "  server      {} RPCs ({} Batch, {} entries); bound {}, floors: {} Batch, {} entries",
            self.server.total_rpcs(),
            self.server.batch,
            self.server.batch_entries,
            self.rpc_bound(),
            self.batch_floor(),
            self.entry_floor()
        );
    }

    fn assert_bounds(&self, ctx: &str) {
        let inner = self.cache.register_calls + self.cache.terminate_calls;
        // The cache: single flight and remembered answers under faults.
        assert_eq!(self.cache.permanent_failures, 0, "{ctx}");
        assert!(
            self.cache.register_calls <= self.streams + self.cache.transient_failures,
            "more inner registrations than streams + transient failures; {ctx}"
        );
        assert!(inner <= self.inner_call_bound(), "{ctx}");
        assert!(
            self.cache.transient_failures <= self.nacks,
            "every forgotten transient failure reaches a collector; {ctx}"
        );
        // The retry policy and the re-queue limit bound what is sent.
        assert!(
            self.batch.entries_sent <= inner * self.sends_per_inner_call(),
            "more entries sent than retries x re-queues allow; {ctx}"
        );
        assert!(self.batch.requeued_entries >= REQUEUES, "{ctx}");
        // Every Batch attempt goes through the channel once; nothing else does.
        assert_eq!(self.rpcs.sent, self.batch.batches_sent, "{ctx}");
        assert!(self.server.batch <= self.batch.batches_sent, "{ctx}");
        assert!(
            self.server.batch_entries <= self.batch.entries_sent,
            "{ctx}"
        );
        assert_eq!(
            self.server.total_rpcs(),
            self.server.batch,
            "a batching client sends no unary RPC; {ctx}"
        );
        assert!(self.server.batch <= self.server.batch_entries, "{ctx}");
        // The headline bound, from the workload size, retries and re-queues.
        assert!(
            self.server.total_rpcs() <= self.rpc_bound(),
            "{} RPCs exceed the bound {}; {ctx}",
            self.server.total_rpcs(),
            self.rpc_bound()
        );
        assert!(self.server.batch_entries <= self.rpc_bound(), "{ctx}");
        // And the faults cost RPCs: proof that they fired.
        assert!(self.rpcs.status(Code::Unavailable) >= 1, "{ctx}");
        assert!(self.rpcs.status(Code::Internal) >= 4, "{ctx}");
        assert!(self.rpcs.timed_out >= 1, "{ctx}");
        assert!(
            self.server.batch_entries >= self.entry_floor(),
            "{} entries < floor {}; {ctx}",
            self.server.batch_entries,
            self.entry_floor()
        );
        assert!(
            self.server.batch >= self.batch_floor(),
            "{} Batch RPCs < floor {}; {ctx}",
            self.server.batch,
            self.batch_floor()
        );
    }
}
