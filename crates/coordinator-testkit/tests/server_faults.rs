//! The fake server's call-level fault knobs, hold gate and restart, through a
//! real tonic client over loopback.

use std::time::Duration;

use coordinator_api::{Code as LocalCode, MessageIndex};
use coordinator_grpc::proto::logdog::RegisterStreamRequest;
use coordinator_grpc::proto::logdog::services_client::ServicesClient;
use coordinator_testkit::{RpcKind, register_request, terminate_request};
use tonic::Code;

mod common;

use common::{Fixture, fixture, path};

impl Fixture {
    fn req(&self, p: &str) -> RegisterStreamRequest {
        register_request(&self.project, &path(p), &self.secret, None)
    }

    async fn register(&mut self, p: &str) -> Result<(), tonic::Status> {
        let req = self.req(p);
        self.client.register_stream(req).await.map(drop)
    }

    async fn terminate(&mut self, p: &str, index: u32) -> Result<(), tonic::Status> {
        let req = terminate_request(
            &self.project,
            &path(p),
            &self.secret,
            MessageIndex::from(index),
        );
        self.client.terminate_stream(req).await.map(drop)
    }

    fn stored(&self, p: &str) -> bool {
        self.server.stream(&self.project, &path(p)).is_some()
    }
}

#[tokio::test]
async fn fail_next_fails_that_many_calls_before_processing() {
    let mut f = fixture().await;
    f.server.faults().fail_next(2, LocalCode::Unavailable);
    for _ in 0..2 {
        let status = f.register("pre/+/s").await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "injected fault");
        assert!(!f.stored("pre/+/s"), "a failed call changes nothing");
    }
    f.register("pre/+/s").await.unwrap();
    assert_eq!(f.server.calls().register, 3, "failed calls are counted");
    assert_eq!(
        f.server
            .stream(&f.project, &path("pre/+/s"))
            .unwrap()
            .registrations,
        1
    );
}

#[tokio::test]
async fn fail_next_rules_run_in_order() {
    let mut f = fixture().await;
    f.server.faults().fail_next(1, LocalCode::Internal);
    f.server.faults().fail_next(1, LocalCode::ResourceExhausted);
    assert_eq!(
        f.register("pre/+/s").await.unwrap_err().code(),
        Code::Internal
    );
    assert_eq!(
        f.register("pre/+/s").await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    f.register("pre/+/s").await.unwrap();
}

#[tokio::test]
async fn fail_next_rpc_only_fails_that_kind() {
    let mut f = fixture().await;
    f.server
        .faults()
        .fail_next_rpc(RpcKind::TerminateStream, 1, LocalCode::Internal);
    f.register("pre/+/s").await.unwrap();
    assert_eq!(
        f.terminate("pre/+/s", 3).await.unwrap_err().code(),
        Code::Internal
    );
    assert_eq!(
        f.server
            .stream(&f.project, &path("pre/+/s"))
            .unwrap()
            .terminal_index,
        None
    );
    f.terminate("pre/+/s", 3).await.unwrap();
    let calls = f.server.calls();
    assert_eq!((calls.register, calls.terminate), (1, 2));
    assert_eq!(calls.of(RpcKind::TerminateStream), 2);
}

/// Which of `n` sequential register calls fail on a fresh server with
/// `fail_fraction(fraction, code, seed)`.
async fn failure_pattern(fraction: f64, seed: u64, n: usize) -> Vec<bool> {
    let mut f = fixture().await;
    f.server
        .faults()
        .fail_fraction(fraction, LocalCode::Unavailable, seed);
    let mut pattern = Vec::with_capacity(n);
    for i in 0..n {
        match f.register(&format!("pre/+/s{i}")).await {
            Ok(()) => pattern.push(false),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable);
                pattern.push(true);
            }
        }
    }
    assert_eq!(
        f.server.streams().len(),
        pattern.iter().filter(|&&failed| !failed).count()
    );
    pattern
}

#[tokio::test]
async fn fail_fraction_is_seeded_and_deterministic() {
    let a = failure_pattern(0.3, 11, 100).await;
    assert_eq!(
        a,
        failure_pattern(0.3, 11, 100).await,
        "same seed, same calls fail"
    );
    assert_ne!(a, failure_pattern(0.3, 12, 100).await);
    let failed = a.iter().filter(|&&x| x).count();
    assert!((10..60).contains(&failed), "{failed} of 100");
    assert!(failure_pattern(0.0, 1, 20).await.iter().all(|&x| !x));
    assert!(failure_pattern(1.0, 1, 20).await.iter().all(|&x| x));
}

#[tokio::test(start_paused = true)]
async fn latency_delays_every_call() {
    let mut f = fixture().await;
    f.server.faults().set_latency(Duration::from_secs(30));
    let start = tokio::time::Instant::now();
    f.register("pre/+/s").await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );

    f.server.faults().set_latency(Duration::ZERO);
    let start = tokio::time::Instant::now();
    f.register("pre/+/t").await.unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn hold_keeps_calls_in_flight_until_released() {
    let f = fixture().await;
    f.server.faults().hold();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..3 {
        let mut client = f.client.clone();
        let req = f.req(&format!("pre/+/h{i}"));
        calls.spawn(async move { client.register_stream(req).await });
    }
    f.server.faults().wait_held(3).await;
    assert!(
        f.server.streams().is_empty(),
        "held calls are not processed yet"
    );
    assert_eq!(f.server.calls().register, 3);

    f.server.faults().release();
    while let Some(done) = calls.join_next().await {
        done.unwrap().unwrap();
    }
    assert_eq!(f.server.streams().len(), 3);
    assert_eq!(f.server.faults().held(), 0);
}

#[tokio::test]
async fn a_cancelled_held_call_is_no_longer_held() {
    let mut f = fixture().await;
    f.server.faults().hold();
    let mut client = f.client.clone();
    let req = f.req("pre/+/c");
    let call = tokio::spawn(async move { client.register_stream(req).await });
    f.server.faults().wait_held(1).await;
    call.abort();
    let _ = call.await;

    // The client's reset reaches the server, which drops the call, and with
    // it the hold; the cancelled call never registers its stream.
    f.server.faults().wait_held_below(1).await;
    f.server.faults().release();
    f.register("pre/+/d").await.unwrap();
    assert!(!f.stored("pre/+/c"));
    assert_eq!(f.server.calls().register, 2);
}

#[tokio::test]
async fn clear_resets_every_knob() {
    let mut f = fixture().await;
    let faults = f.server.faults();
    faults.fail_next(5, LocalCode::Internal);
    faults.fail_fraction(1.0, LocalCode::Internal, 3);
    faults.set_latency(Duration::from_secs(3600));
    faults.empty_next_batches(3);
    faults.clear();
    f.register("pre/+/s").await.unwrap();
    assert_eq!(f.server.calls().register, 1, "counters survive clear");
}

/// Calls `register` until the channel has reconnected: right after a restart the
/// first call on an old connection may fail with `Unavailable`.
async fn register_after_restart(f: &mut Fixture, p: &str) -> Result<(), tonic::Status> {
    for _ in 0..5 {
        match f.register(p).await {
            Err(status) if status.code() == Code::Unavailable => continue,
            other => return other,
        }
    }
    f.register(p).await
}

#[tokio::test]
async fn restart_keeping_state_serves_the_same_streams_on_the_same_port() {
    let mut f = fixture().await;
    let addr = f.server.addr();
    f.register("pre/+/s").await.unwrap();
    f.terminate("pre/+/s", 2).await.unwrap();
    f.server
        .faults()
        .fail_next_rpc(RpcKind::LoadStream, 1, LocalCode::Internal);

    f.server.restart(true).await;
    assert_eq!(f.server.addr(), addr);
    register_after_restart(&mut f, "pre/+/s").await.unwrap();
    let stored = f.server.stream(&f.project, &path("pre/+/s")).unwrap();
    assert_eq!(stored.terminal_index, Some(MessageIndex::from(2)));
    assert_eq!(stored.registrations, 2);
    // A new prefix registration still works, and knobs were kept.
    let status = f
        .client
        .load_stream(coordinator_grpc::proto::logdog::LoadStreamRequest {
            project: "proj".into(),
            id: stored.id.as_str().into(),
            desc: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal);
}

#[tokio::test]
async fn restart_clearing_state_forgets_prefixes_and_streams() {
    let mut f = fixture().await;
    f.register("pre/+/s").await.unwrap();
    let calls_before = f.server.calls().register;

    f.server.restart(false).await;
    assert!(f.server.streams().is_empty());
    let status = register_after_restart(&mut f, "pre/+/s").await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "the prefix is gone"
    );

    let secret = f.server.new_prefix(&f.project, &"pre".parse().unwrap());
    f.secret = secret;
    f.register("pre/+/s").await.unwrap();
    assert!(
        f.server.calls().register > calls_before,
        "counters survive restarts"
    );
}

#[tokio::test]
async fn restart_answers_held_and_delayed_calls_unavailable() {
    let mut f = fixture().await;
    f.server.faults().hold();
    let mut client = f.client.clone();
    let req = f.req("pre/+/held");
    let held = tokio::spawn(async move { client.register_stream(req).await });
    f.server.faults().wait_held(1).await;

    f.server.restart(true).await;
    let status = held.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(!f.stored("pre/+/held"));
    assert_eq!(f.server.faults().held(), 0);

    // A long latency is cut short the same way. (A fresh client: the old
    // channel's connection was closed by the restart.)
    f.server.faults().release();
    f.server.faults().set_latency(Duration::from_secs(3600));
    let mut client = ServicesClient::connect(f.server.endpoint()).await.unwrap();
    let req = f.req("pre/+/slow");
    let slow = tokio::spawn(async move { client.register_stream(req).await });
    // The call is counted on arrival, before its latency.
    f.server.wait_calls(|c| c.register >= 2).await;
    f.server.restart(true).await;
    let status = slow.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "the fake server is stopping");
    assert!(!f.stored("pre/+/slow"));
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let f = fixture().await;
    let endpoint = f.server.endpoint();
    f.server.shutdown().await;
    let mut client = f.client;
    let status = client
        .register_stream(RegisterStreamRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(ServicesClient::connect(endpoint).await.is_err());
}
