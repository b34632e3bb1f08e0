//! pRPC against gRPC on loopback, against the in-process fake Coordinator (which
//! serves both, from one state): register round trips, direct and batched,
//! with 1 and 64 concurrent callers.
//!
//! Criterion reports the time per iteration (one call per caller) and calls/s
//! (throughput in elements = calls). The batched clients use a 2 ms delay
//! threshold, so a lone batched caller waits for it.
//!
//! Run: `cargo bench -p coordinator --bench transports`.
// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::time::Duration;

use coordinator::services::{BatchOptions, RetryPolicy};
use coordinator_api::{Coordinator, PrefixSecret, ProjectName, RegisterRequest, StreamName};
use coordinator_grpc::GrpcCoordinator;
use coordinator_prpc::PrpcCoordinator;
use coordinator_testkit::{FakeServicesServer, descriptor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::future::join_all;

fn transports(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (server, requests) = runtime.block_on(async {
        let server = FakeServicesServer::start().await;
        let project: ProjectName = "bench".parse().unwrap();
        let prefix: StreamName = "builds/1".parse().unwrap();
        let secret: PrefixSecret = server.new_prefix(&project, &prefix);
        let requests: Vec<(RegisterRequest, Vec<u8>)> = (0..64)
            .map(|i| {
                let path = prefix.join(&format!("steps/s{i}/stdout").parse().unwrap());
                let desc = descriptor(&path);
                (
                    RegisterRequest::new(project.clone(), path, secret.clone()),
                    desc,
                )
            })
            .collect();
        (server, requests)
    });
    let batching = BatchOptions::default().with_max_delay(Duration::from_millis(2));
    let clients: Vec<(&str, Box<dyn Coordinator>)> = runtime.block_on(async {
        vec![
            (
                "grpc/direct",
                Box::new(
                    GrpcCoordinator::builder()
                        .retry(RetryPolicy::none())
                        .build(server.channel())
                        .unwrap(),
                ) as Box<dyn Coordinator>,
            ),
            (
                "prpc/direct",
                Box::new(
                    PrpcCoordinator::builder()
                        .insecure(true)
                        .retry(RetryPolicy::none())
                        .build(&server.prpc_endpoint())
                        .unwrap(),
                ),
            ),
            (
                "grpc/batched",
                Box::new(
                    GrpcCoordinator::builder()
                        .retry(RetryPolicy::none())
                        .batching(batching)
                        .build(server.channel())
                        .unwrap(),
                ),
            ),
            (
                "prpc/batched",
                Box::new(
                    PrpcCoordinator::builder()
                        .insecure(true)
                        .retry(RetryPolicy::none())
                        .batching(batching)
                        .build(&server.prpc_endpoint())
                        .unwrap(),
                ),
            ),
        ]
    });

    let mut group = c.benchmark_group("transport_round_trip");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (name, coordinator) in &clients {
        for callers in [1usize, 64] {
            group.throughput(Throughput::Elements(callers as u64));
            group.bench_function(format!("{name}/{callers}_callers"), |b| {
                b.to_async(&runtime).iter(|| async {
                    let results = join_all(
                        requests[..callers]
                            .iter()
                            .map(|(req, desc)| coordinator.register_stream(req, desc)),
                    )
                    .await;
                    for result in results {
                        result.unwrap();
                    }
                });
            });
        }
    }
    group.finish();
    println!(
        "pRPC connections the server accepted over the whole bench: {}",
        server.prpc_connections()
    );
}

criterion_group!(benches, transports);
criterion_main!(benches);
