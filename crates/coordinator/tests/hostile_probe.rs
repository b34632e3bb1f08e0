//! A probe, not a regression test (ignored by default; `cargo test -p
//! coordinator --test hostile_probe -- --ignored --nocapture`): the densest
//! `Batch` answer the client accepts for a full batch, through the real gRPC
//! stack. It prints the peak resident memory the process gained, the warning
//! lines logged and the time taken, and checks the outcome: every caller gets a
//! transient error, no answer is kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use coordinator_api::{Code, Coordinator, RegisterRequest};
use coordinator_grpc::proto::logdog::{BatchResponse, RegisterStreamResponse, batch_response};
use coordinator_grpc::{BatchOptions, GrpcCoordinator, RetryPolicy};
use coordinator_services::response_size_limit;
use coordinator_testkit::ScriptedServices;
use prost::Message;

/// The process's peak resident set (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Counts WARN-or-worse events.
struct CountWarnings(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountWarnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() <= tracing::Level::WARN {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a probe: prints figures"]
async fn densest_allowed_batch_answer() {
    use tracing_subscriber::layer::SubscriberExt;
    let warnings = Arc::new(AtomicUsize::new(0));
    let subscriber = tracing_subscriber::registry().with(CountWarnings(warnings.clone()));
    // Global: the batching client logs from its own task, on any thread.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    const ENTRIES: usize = 20;
    // Minimal answers (`index` 0, no value: 2 bytes each) up to the limit.
    let limit = response_size_limit(ENTRIES);
    let per = batch_response::Entry {
        index: 0,
        value: None,
    };
    let per_len = per.encoded_len() + 2;
    let answers = (limit - 64) / per_len;
    let dense = BatchResponse {
        resp: vec![per; answers],
    };
    assert!(dense.encoded_len() <= limit);
    let url = ScriptedServices::new(
        |_| RegisterStreamResponse::default(),
        move |_| dense.clone(),
    )
    .serve()
    .await
    .unwrap();
    let coordinator = GrpcCoordinator::builder()
        .retry(RetryPolicy::none())
        .batching(
            BatchOptions::default()
                .with_max_entries(ENTRIES)
                .with_max_delay(Duration::from_millis(50)),
        )
        .connect(url)
        .await
        .unwrap();
    let requests: Vec<RegisterRequest> = (0..ENTRIES)
        .map(|i| RegisterRequest::parse("proj", &format!("p/+/s{i}"), &[1; 36], None).unwrap())
        .collect();
    let before = peak_rss_kib();
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for req in requests {
        let c = coordinator.clone();
        set.spawn(async move { c.register_stream(&req, b"d").await });
    }
    while let Some(r) = set.join_next().await {
        let e = r.unwrap().unwrap_err();
        assert_eq!(e.code(), Code::Internal, "{e}");
        assert!(e.is_transient());
    }
    let elapsed = start.elapsed();
    let after = peak_rss_kib();
    println!(
        "densest answer for a {ENTRIES}-entry batch: {answers} answers in {limit} bytes; \
         peak RSS +{} KiB; {} warning lines; {elapsed:?}",
        after.saturating_sub(before),
        warnings.load(Ordering::Relaxed)
    );
}
