//! What each layer adds to one call, over an in-memory client that answers at
//! once: the cost of the layering itself, with no network, no server and no
//! encoding. A real round trip is tens of microseconds or more; these rows say
//! how much of that the layers take.
//!
//! Rows (`cargo bench -p coordinator-services --bench layers`):
//! - `register/bare`: `ServicesCoordinator` straight over the client;
//! - `register/retry`, `register/attempt_timeout`, `register/concurrency_limit`:
//!   that one layer in between;
//! - `register/stack_default`: `ServicesStack::new()` (retry + attempt timeout);
//! - `register/stack_limited`: the default stack with a deadline and a
//!   concurrency limit of 8;
//! - `batched_64/stack`: 64 concurrent callers through the stack with
//!   batching (16 entries per batch, so four full batches and no wait); the time is for
//!   all 64 calls.
// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use coordinator_api::{Coordinator, CoordinatorFuture, RegisterRequest};
use coordinator_services::proto::logdog as proto;
use coordinator_services::{
    AttemptTimeout, BatchOptions, CallOptions, ConcurrencyLimit, Retry, RetryPolicy,
    ServicesClient, ServicesCoordinator, ServicesFuture, ServicesStack,
};
use criterion::{Criterion, criterion_group, criterion_main};

/// Answers every register at once with the same valid response.
struct Instant {
    answer: proto::RegisterStreamResponse,
}

impl Instant {
    fn new() -> Self {
        Instant {
            answer: proto::RegisterStreamResponse {
                id: "f53fe51cc97b9fbf00e69a388bfd079168d1e15c3fe708e44f049dc9688f52ad".into(),
                state: Some(proto::InternalLogStreamState {
                    proto_version: "1".into(),
                    secret: vec![7; 36],
                    terminal_index: -1,
                    archived: false,
                    purged: false,
                }),
                error: None,
            },
        }
    }
}

impl ServicesClient for Instant {
    fn register_stream<'a>(
        &'a self,
        _: CallOptions,
        _: &'a proto::RegisterStreamRequest,
    ) -> ServicesFuture<'a, proto::RegisterStreamResponse> {
        CoordinatorFuture::ready(Ok(self.answer.clone()))
    }

    fn terminate_stream<'a>(
        &'a self,
        _: CallOptions,
        _: &'a proto::TerminateStreamRequest,
    ) -> ServicesFuture<'a, ()> {
        CoordinatorFuture::ready(Ok(()))
    }

    fn batch<'a>(
        &'a self,
        _: CallOptions,
        request: &'a proto::BatchRequest,
    ) -> ServicesFuture<'a, proto::BatchResponse> {
        use proto::batch_response::{Entry, entry::Value};
        let resp = request
            .req
            .iter()
            .enumerate()
            .map(|(index, _)| Entry {
                index: index as i32,
                value: Some(Value::RegisterStream(self.answer.clone())),
            })
            .collect();
        CoordinatorFuture::ready(Ok(proto::BatchResponse { resp }))
    }
}

fn request(i: usize) -> RegisterRequest {
    RegisterRequest::parse("proj", &format!("a/b/+/s{i}"), &[7; 36], None).expect("a valid request")
}

fn bench_register(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let req = request(1);
    let desc = b"descriptor bytes".to_vec();
    let mut group = c.benchmark_group("register");

    macro_rules! row {
        ($name:literal, $coordinator:expr) => {{
            let coordinator = rt.block_on(async { $coordinator });
            group.bench_function($name, |b| {
                b.to_async(&rt)
                    .iter(|| async { coordinator.register_stream(&req, &desc).await })
            });
        }};
    }

    row!("bare", ServicesCoordinator::new(Instant::new()));
    row!(
        "retry",
        ServicesCoordinator::new(Retry::new(Instant::new(), RetryPolicy::default()))
    );
    row!(
        "attempt_timeout",
        ServicesCoordinator::new(AttemptTimeout::new(Instant::new(), Duration::from_secs(30)))
    );
    row!(
        "concurrency_limit",
        ServicesCoordinator::new(ConcurrencyLimit::new(Instant::new(), 8))
    );
    row!(
        "stack_default",
        ServicesStack::new().build(Instant::new()).expect("a stack")
    );
    row!(
        "stack_limited",
        ServicesStack::new()
            .deadline(Duration::from_secs(60))
            .concurrency_limit(8)
            .build(Instant::new())
            .expect("a stack")
    );
    group.finish();
}

fn bench_batched(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let requests: Vec<RegisterRequest> = (0..64).map(request).collect();
    let desc = b"descriptor bytes".to_vec();
    let coordinator = Arc::new(rt.block_on(async {
        ServicesStack::new()
            .batching(
                BatchOptions::default()
                    .with_max_entries(16)
                    .with_max_delay(Duration::from_millis(1)),
            )
            .build(Instant::new())
            .expect("a stack")
    }));
    let mut group = c.benchmark_group("batched_64");
    group.bench_function("stack", |b| {
        b.to_async(&rt).iter(|| async {
            let calls = requests
                .iter()
                .map(|r| coordinator.register_stream(r, &desc));
            futures::future::join_all(calls).await
        })
    });
    group.finish();
}

criterion_group!(benches, bench_register, bench_batched);
criterion_main!(benches);
