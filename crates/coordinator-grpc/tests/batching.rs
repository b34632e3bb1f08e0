//! Batched calls (`GrpcCoordinator` over a `BatchingClient`), end to end over
//! loopback gRPC against the in-process fake server.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Setup, fast_retry};
use coordinator_api::{Code, Coordinator, MessageIndex, RegisterRequest, StreamId};
use coordinator_grpc::{BatchOptions, BatchingClient, GrpcCoordinator, GrpcServices, RetryPolicy};
use coordinator_services::ServicesCoordinator;
use coordinator_testkit::RpcKind;
use futures::future::join_all;
use tokio::task::JoinSet;

/// A batched coordinator; `max_delay` of an hour means "only count, bytes or
/// flush send a batch".
fn batched(s: &Setup, options: BatchOptions, retry: RetryPolicy) -> Arc<GrpcCoordinator> {
    Arc::new(
        GrpcCoordinator::builder()
            .retry(retry)
            .batching(options)
            .build(s.server.channel())
            .unwrap(),
    )
}

const HOUR: Duration = Duration::from_secs(3600);

fn spawn_registers(
    s: &Setup,
    c: &Arc<GrpcCoordinator>,
    names: impl IntoIterator<Item = String>,
) -> JoinSet<Result<Arc<coordinator_api::LogStreamState>, coordinator_api::Error>> {
    let mut set = JoinSet::new();
    for name in names {
        let c = c.clone();
        let (req, desc) = s.register(&name);
        set.spawn(async move {
            let state = c.register_stream(&req, &desc).await?;
            assert_eq!(state.path, req.path);
            Ok(state)
        });
    }
    set
}

#[tokio::test]
async fn hundred_concurrent_callers_make_five_batches() {
    let s = Setup::start().await;
    let c = batched(
        &s,
        BatchOptions::default().with_max_delay(HOUR),
        RetryPolicy::none(),
    );
    let mut calls = spawn_registers(&s, &c, (0..100).map(|i| format!("s{i}")));
    while let Some(r) = calls.join_next().await {
        let state = r.unwrap().unwrap();
        assert_eq!(state.id, StreamId::for_path(&state.path));
    }
    let server = s.server.calls();
    assert_eq!(server.batch, 5); // ⌈100 / 20⌉
    assert_eq!(server.batch_register_entries, 100);
    assert_eq!(server.register, 0);
    assert_eq!(s.server.streams().len(), 100);
    let stats = c.batching_client().unwrap().stats();
    assert_eq!(stats.batches_sent, 5);
    assert_eq!(stats.largest_batch, 20);
    assert_eq!(stats.mean_entries_per_batch(), 20.0);
}

#[tokio::test]
async fn a_partial_batch_goes_out_on_flush() {
    let s = Setup::start().await;
    let c = batched(
        &s,
        BatchOptions::default().with_max_delay(HOUR),
        RetryPolicy::none(),
    );
    let mut calls = spawn_registers(&s, &c, (0..90).map(|i| format!("s{i}")));
    // Four full batches go out by count; ten entries wait.
    s.server.wait_calls(|calls| calls.batch == 4).await;
    c.flush().await;
    while let Some(r) = calls.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(s.server.calls().batch, 5); // ⌈90 / 20⌉
    assert_eq!(s.server.calls().batch_entries, 90);
}

#[tokio::test]
async fn the_delay_threshold_sends_a_lone_call() {
    let s = Setup::start().await;
    let delay = Duration::from_millis(20);
    let c = batched(
        &s,
        BatchOptions::default().with_max_delay(delay),
        RetryPolicy::none(),
    );
    let (req, desc) = s.register("lone");
    let start = std::time::Instant::now();
    let state = c.register_stream(&req, &desc).await.unwrap();
    assert!(start.elapsed() >= delay);
    assert_eq!(state.path, req.path);
    assert_eq!(s.server.calls().batch, 1);
    assert_eq!(s.server.calls().batch_entries, 1);
}

#[tokio::test]
async fn batched_terminate_records_the_index() {
    let s = Setup::start().await;
    let c = batched(
        &s,
        BatchOptions::default().with_max_delay(Duration::from_millis(2)),
        RetryPolicy::none(),
    );
    let (req, desc) = s.register("stdout");
    let state = c.register_stream(&req, &desc).await.unwrap();
    c.terminate_stream(&s.terminate(&state, 17)).await.unwrap();
    let stored = s.server.stream(&s.project, &req.path).unwrap();
    assert_eq!(stored.terminal_index, Some(MessageIndex::from(17)));
    // A different index is refused, per entry, permanently.
    let e = c
        .terminate_stream(&s.terminate(&state, 18))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(!e.is_transient());
    assert_eq!(s.server.calls().batch_terminate_entries, 2);
    assert_eq!(s.server.calls().terminate, 0);
}

#[tokio::test]
async fn per_entry_errors_fail_only_their_caller() {
    let s = Setup::start().await;
    let c = batched(
        &s,
        BatchOptions::default().with_max_entries(4),
        fast_retry(5),
    );
    let (good1, d1) = s.register("a");
    let (good2, d2) = s.register("b");
    let (mut wrong_secret, d3) = s.register("c");
    wrong_secret.secret = coordinator_api::PrefixSecret::from([0xee; 36]);
    let unknown_prefix = RegisterRequest {
        path: "nobody/+/x".parse().unwrap(),
        ..good1.clone()
    };
    let d4 = coordinator_testkit::descriptor(&unknown_prefix.path);
    let results = join_all([
        c.register_stream(&good1, &d1),
        c.register_stream(&good2, &d2),
        c.register_stream(&wrong_secret, &d3),
        c.register_stream(&unknown_prefix, &d4),
    ])
    .await;
    assert!(results[0].is_ok() && results[1].is_ok());
    let e = results[2].as_ref().unwrap_err();
    assert_eq!((e.code(), e.is_transient()), (Code::InvalidArgument, false));
    let e = results[3].as_ref().unwrap_err();
    assert_eq!(
        (e.code(), e.is_transient()),
        (Code::FailedPrecondition, false)
    );
    // One batch; permanent entry errors are not retried.
    assert_eq!(s.server.calls().batch, 1);
    assert_eq!(s.server.calls().batch_entries, 4);
}

#[tokio::test]
async fn transient_entry_errors_are_retried() {
    let s = Setup::start().await;
    let c = batched(
        &s,
        BatchOptions::default().with_max_delay(Duration::from_millis(2)),
        fast_retry(5),
    );
    // A permanent code marked transient by the server is retried.
    s.server
        .faults()
        .fail_next_batch_entries_flagged(2, Code::FailedPrecondition, true);
    let (req, desc) = s.register("x");
    c.register_stream(&req, &desc).await.unwrap();
    assert_eq!(s.server.calls().batch_entries, 3);

    // Without the flag it is not.
    s.server
        .faults()
        .fail_next_batch_entries_flagged(1, Code::FailedPrecondition, false);
    let (req, desc) = s.register("y");
    let e = c.register_stream(&req, &desc).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(!e.is_transient());
    assert_eq!(s.server.calls().batch_entries, 4);
}

#[tokio::test]
async fn a_failed_batch_rpc_fails_or_retries_every_entry() {
    let s = Setup::start().await;
    let options = BatchOptions::default()
        .with_max_entries(5)
        .with_max_delay(HOUR);

    // Transient: every entry is retried (in later batches) and succeeds.
    let c = batched(
        &s,
        options.with_max_delay(Duration::from_millis(5)),
        fast_retry(5),
    );
    s.server
        .faults()
        .fail_next_rpc(RpcKind::Batch, 1, Code::Unavailable);
    let mut calls = spawn_registers(&s, &c, (0..5).map(|i| format!("t{i}")));
    while let Some(r) = calls.join_next().await {
        r.unwrap().unwrap();
    }
    assert!(s.server.calls().batch >= 2);

    // Permanent: every entry fails with the batch's error, once.
    let c = batched(&s, options, fast_retry(5));
    s.server
        .faults()
        .fail_next_rpc(RpcKind::Batch, 1, Code::PermissionDenied);
    let before = s.server.calls().batch;
    let mut calls = spawn_registers(&s, &c, (0..5).map(|i| format!("p{i}")));
    while let Some(r) = calls.join_next().await {
        let e = r.unwrap().unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        assert!(!e.is_transient());
    }
    assert_eq!(s.server.calls().batch, before + 1);
}

#[tokio::test]
async fn dropped_entries_are_requeued() {
    let s = Setup::start().await;
    let c = batched(
        &s,
        BatchOptions::default()
            .with_max_entries(10)
            .with_max_delay(Duration::from_millis(10)),
        RetryPolicy::none(),
    );
    s.server.faults().drop_next_batch_entries(3);
    let mut calls = spawn_registers(&s, &c, (0..10).map(|i| format!("s{i}")));
    while let Some(r) = calls.join_next().await {
        r.unwrap().unwrap();
    }
    let stats = c.batching_client().unwrap().stats();
    assert_eq!(stats.requeued_entries, 3);
    assert_eq!(stats.batches_sent, 2);
    assert_eq!(s.server.calls().batch, 2);
    assert_eq!(s.server.calls().batch_entries, 13);
    assert_eq!(s.server.streams().len(), 10);
}

#[tokio::test]
async fn an_empty_batch_response_is_a_transient_error_not_a_panic() {
    let s = Setup::start().await;
    let options = BatchOptions::default()
        .with_max_entries(5)
        .with_max_delay(HOUR);
    let c = batched(&s, options, RetryPolicy::none());
    s.server.faults().empty_next_batches(1);
    let mut calls = spawn_registers(&s, &c, (0..5).map(|i| format!("s{i}")));
    while let Some(r) = calls.join_next().await {
        let e = r.unwrap().unwrap_err();
        assert_eq!(e.code(), Code::Internal);
        assert!(e.is_transient());
    }
    assert_eq!(c.batching_client().unwrap().stats().failed_batches, 1);

    // With retries, the callers recover.
    let c = batched(
        &s,
        options.with_max_delay(Duration::from_millis(5)),
        fast_retry(5),
    );
    s.server.faults().empty_next_batches(1);
    let mut calls = spawn_registers(&s, &c, (0..5).map(|i| format!("r{i}")));
    while let Some(r) = calls.join_next().await {
        r.unwrap().unwrap();
    }
}

#[tokio::test]
async fn close_flushes_and_loses_nothing() {
    let s = Setup::start().await;
    let c = batched(
        &s,
        BatchOptions::default().with_max_delay(HOUR),
        RetryPolicy::none(),
    );
    let requests: Vec<_> = (0..37).map(|i| s.register(&format!("s{i}"))).collect();
    let calls = join_all(
        requests
            .iter()
            .map(|(req, desc)| c.register_stream(req, desc)),
    );
    let (results, ()) = tokio::join!(calls, async {
        // Let every call queue its entry first.
        tokio::task::yield_now().await;
        c.close().await;
    });
    for result in results {
        result.unwrap();
    }
    assert_eq!(s.server.calls().batch, 2);
    assert_eq!(s.server.streams().len(), 37);
    // After close, calls fail transiently and send nothing.
    let (req, desc) = s.register("late");
    let e = c.register_stream(&req, &desc).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.is_transient());
    assert_eq!(s.server.calls().batch, 2);
}

#[tokio::test]
async fn a_caller_dropped_mid_batch_does_not_break_it() {
    let s = Setup::start().await;
    let c = batched(
        &s,
        BatchOptions::default()
            .with_max_entries(5)
            .with_max_delay(HOUR),
        RetryPolicy::none(),
    );
    s.server.faults().hold();
    let mut kept = spawn_registers(&s, &c, (0..4).map(|i| format!("s{i}")));
    let mut dropped = spawn_registers(&s, &c, ["gone".to_string()]);
    // All five entries are in one batch, held by the server.
    s.server.faults().wait_held(5).await;
    dropped.abort_all();
    assert!(
        dropped
            .join_next()
            .await
            .unwrap()
            .unwrap_err()
            .is_cancelled()
    );
    s.server.faults().release();
    while let Some(r) = kept.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(s.server.calls().batch, 1);
    // The server processed the dropped caller's entry too.
    assert!(s.server.stream(&s.project, &s.path("gone")).is_some());
}

#[tokio::test]
async fn a_standalone_batching_client_over_a_direct_coordinator() {
    let s = Setup::start().await;
    let direct = GrpcServices::new(s.server.channel());
    let client = BatchingClient::new(
        direct,
        BatchOptions::default()
            .with_max_entries(3)
            .with_max_delay(HOUR),
    )
    .unwrap();
    let requests: Vec<_> = (0..3).map(|i| s.register(&format!("s{i}"))).collect();
    let coordinator = ServicesCoordinator::new(&client);
    let results = join_all(
        requests
            .iter()
            .map(|(req, desc)| coordinator.register_stream(req, desc)),
    )
    .await;
    for (result, (req, _)) in results.into_iter().zip(&requests) {
        assert_eq!(result.unwrap().path, req.path);
    }
    assert_eq!(s.server.calls().batch, 1);
    assert_eq!(client.stats().batches_sent, 1);
}
