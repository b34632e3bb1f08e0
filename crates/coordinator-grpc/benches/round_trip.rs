//! Register round-trips over loopback gRPC against the in-process fake server:
//! direct RPCs vs batched, with 1 and 64 concurrent callers.
//!
//! Criterion reports calls/s (throughput in elements = calls). After each
//! benchmark this prints the RPCs the server received per call, which is what
//! batching saves. The batched client uses a 2 ms delay threshold (a lone caller
//! waits for it; LogDog's 1 s would make the one-caller case meaningless).
//!
//! `direct_bare` is the transport under the adapter alone (`ServicesCoordinator`
//! over `GrpcServices`: no retry layer, no attempt timeout): against `direct`
//! it shows what the layers cost on a real round trip.
//!
//! The fake service is served here with `TCP_NODELAY` on accepted sockets:
//! without it, Nagle's algorithm and delayed ACKs add ~40 ms to concurrent
//! calls on loopback, which would measure the kernel, not the client.
//!
//! Run: `cargo bench -p coordinator-grpc --bench round_trip`.
// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use coordinator_api::{Coordinator, PrefixSecret, ProjectName, RegisterRequest, StreamName};
use coordinator_grpc::{BatchOptions, GrpcCoordinator, GrpcServices, RetryPolicy};
use coordinator_services::ServicesCoordinator;
use coordinator_testkit::{FakeServicesServer, descriptor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::future::join_all;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint, Server};

struct Fixture {
    server: FakeServicesServer,
    channel: Channel,
    requests: Vec<(RegisterRequest, Vec<u8>)>,
}

async fn fixture(streams: usize) -> Fixture {
    let server = FakeServicesServer::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|stream| {
        if let Ok(stream) = &stream {
            stream.set_nodelay(true).unwrap();
        }
        stream
    });
    tokio::spawn(
        Server::builder()
            .add_service(server.service())
            .serve_with_incoming(incoming),
    );
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let project: ProjectName = "bench".parse().unwrap();
    let prefix: StreamName = "builds/1".parse().unwrap();
    let secret: PrefixSecret = server.new_prefix(&project, &prefix);
    let requests = (0..streams)
        .map(|i| {
            let path = prefix.join(&format!("steps/s{i}/stdout").parse().unwrap());
            let desc = descriptor(&path);
            (
                RegisterRequest::new(project.clone(), path, secret.clone()),
                desc,
            )
        })
        .collect();
    Fixture {
        server,
        channel,
        requests,
    }
}

fn round_trips(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fixture = runtime.block_on(fixture(64));
    let direct = GrpcCoordinator::builder()
        .retry(RetryPolicy::none())
        .build(fixture.channel.clone())
        .unwrap();
    let batched = runtime.block_on(async {
        GrpcCoordinator::builder()
            .retry(RetryPolicy::none())
            .batching(BatchOptions::default().with_max_delay(Duration::from_millis(2)))
            .build(fixture.channel.clone())
            .unwrap()
    });

    let bare = ServicesCoordinator::new(GrpcServices::new(fixture.channel.clone()));

    let mut group = c.benchmark_group("register_round_trip");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let modes: [(&str, &dyn Coordinator); 3] = [
        ("direct", &direct),
        ("direct_bare", &bare),
        ("batched", &batched),
    ];
    for (mode, coordinator) in modes {
        for callers in [1usize, 64] {
            let calls = Arc::new(AtomicU64::new(0));
            let before = fixture.server.calls();
            group.throughput(Throughput::Elements(callers as u64));
            group.bench_function(format!("{mode}/{callers}_callers"), |b| {
                b.to_async(&runtime).iter(|| {
                    let calls = calls.clone();
                    let requests = &fixture.requests[..callers];
                    async move {
                        let results = join_all(
                            requests
                                .iter()
                                .map(|(req, desc)| coordinator.register_stream(req, desc)),
                        )
                        .await;
                        for result in results {
                            result.unwrap();
                        }
                        calls.fetch_add(callers as u64, Ordering::Relaxed);
                    }
                });
            });
            let after = fixture.server.calls();
            let rpcs = (after.register - before.register) + (after.batch - before.batch);
            let calls = calls.load(Ordering::Relaxed).max(1);
            println!(
                "{mode}/{callers}_callers: {calls} calls, {rpcs} RPCs sent ({:.3} RPCs per call)",
                rpcs as f64 / calls as f64
            );
        }
    }
    group.finish();
    if let Some(batching) = batched.batching_client() {
        let stats = batching.stats();
        println!(
            "batched: {} batches, {:.1} entries per batch on average, largest {}",
            stats.batches_sent,
            stats.mean_entries_per_batch(),
            stats.largest_batch
        );
    }
}

criterion_group!(benches, round_trips);
criterion_main!(benches);
