//! `GrpcCoordinator` with single RPCs, end to end over loopback gRPC against the
//! in-process fake server.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use common::{Setup, fast_retry};
use coordinator_api::{Code, Coordinator, MessageIndex, PrefixSecret, StreamId, TerminateRequest};
use coordinator_grpc::{GrpcCoordinator, RetryPolicy};
use coordinator_testkit::RpcKind;
use futures::future::BoxFuture;
use tonic::codegen::http;
use tonic::transport::Channel;

fn coordinator(setup: &Setup, retry: RetryPolicy) -> GrpcCoordinator {
    GrpcCoordinator::builder()
        .retry(retry)
        .build(setup.server.channel())
        .unwrap()
}

#[tokio::test]
async fn register_returns_the_servers_state_with_the_requests_identity() {
    let s = Setup::start().await;
    let c = GrpcCoordinator::new(s.server.channel());
    let (req, desc) = s.register("stdout");
    let state = c.register_stream(&req, &desc).await.unwrap();
    assert_eq!(state.project, req.project);
    assert_eq!(state.path, req.path);
    assert_eq!(state.id, StreamId::for_path(&req.path));
    assert_eq!(state.secret, s.secret);
    assert_eq!(state.proto_version, "1");
    assert_eq!(state.terminal_index, None);
    assert!(!state.archived && !state.purged);
    let stored = s.server.stream(&s.project, &req.path).unwrap();
    assert_eq!(stored.id, state.id);
    assert_eq!(s.server.calls().register, 1);

    // Registering again returns the stored state (idempotent), including flags
    // the server changed meanwhile.
    assert!(s.server.set_archived(&s.project, &req.path, true));
    let again = c.register_stream(&req, &desc).await.unwrap();
    assert!(again.archived);
    assert_eq!(again.id, state.id);
    assert_eq!(s.server.calls().register, 2);
}

#[tokio::test]
async fn register_already_terminated() {
    let s = Setup::start().await;
    let c = GrpcCoordinator::new(s.server.channel());
    let (req, desc) = s.register("short");
    let req = req.with_terminal_index(MessageIndex::from(4));
    let state = c.register_stream(&req, &desc).await.unwrap();
    assert_eq!(state.terminal_index, Some(MessageIndex::from(4)));
    let stored = s.server.stream(&s.project, &req.path).unwrap();
    assert_eq!(stored.terminal_index, Some(MessageIndex::from(4)));
}

#[tokio::test]
async fn terminate_records_the_index() {
    let s = Setup::start().await;
    let c = GrpcCoordinator::new(s.server.channel());
    let (req, desc) = s.register("stdout");
    let state = c.register_stream(&req, &desc).await.unwrap();
    c.terminate_stream(&s.terminate(&state, 9)).await.unwrap();
    let stored = s.server.stream(&s.project, &req.path).unwrap();
    assert_eq!(stored.terminal_index, Some(MessageIndex::from(9)));
    // Idempotent at the same index.
    c.terminate_stream(&s.terminate(&state, 9)).await.unwrap();
    assert_eq!(s.server.calls().terminate, 2);
    // Registering now reports the terminal index.
    let state = c.register_stream(&req, &desc).await.unwrap();
    assert_eq!(state.terminal_index, Some(MessageIndex::from(9)));
}

/// Every server error of the fake server (`docs/behaviour.md`) surfaces with its code, as a
/// permanent error, after exactly one RPC (permanent errors are not retried).
#[tokio::test]
async fn server_errors_surface_with_code_and_are_not_retried() {
    let s = Setup::start().await;
    let c = coordinator(&s, fast_retry(5));
    let (good, good_desc) = s.register("good");
    let state = c.register_stream(&good, &good_desc).await.unwrap();
    c.terminate_stream(&s.terminate(&state, 3)).await.unwrap();

    let expired_prefix = "expired".parse().unwrap();
    s.server
        .register_prefix(&s.project, &expired_prefix, &s.secret, Some(Duration::ZERO));
    let other_secret = PrefixSecret::from([0xee; 36]);

    // Register failures.
    let (unknown_prefix, _) = s.register("x");
    let unknown_prefix = coordinator_api::RegisterRequest {
        path: "nobody/+/x".parse().unwrap(),
        ..unknown_prefix
    };
    let unknown_desc = coordinator_testkit::descriptor(&unknown_prefix.path);
    let expired = coordinator_api::RegisterRequest {
        path: "expired/+/x".parse().unwrap(),
        ..good.clone()
    };
    let expired_desc = coordinator_testkit::descriptor(&expired.path);
    let (mut wrong_secret, wrong_secret_desc) = s.register("w");
    wrong_secret.secret = other_secret.clone();
    let (mut bad_version, bad_version_desc) = s.register("v");
    bad_version.proto_version = "2".into();
    let (bad_desc, _) = s.register("d");

    let register_cases = [
        (&unknown_prefix, &unknown_desc[..], Code::FailedPrecondition),
        (&expired, &expired_desc[..], Code::FailedPrecondition),
        (&wrong_secret, &wrong_secret_desc[..], Code::InvalidArgument),
        (&bad_version, &bad_version_desc[..], Code::InvalidArgument),
        (&bad_desc, &b"\xff\xff\xff"[..], Code::InvalidArgument),
    ];
    for (req, desc, code) in register_cases {
        let before = s.server.calls().register;
        let e = c.register_stream(req, desc).await.unwrap_err();
        assert_eq!(e.code(), code, "{}: {e}", req.path);
        assert!(!e.is_transient(), "{e}");
        assert_eq!(
            s.server.calls().register,
            before + 1,
            "{}: retried",
            req.path
        );
    }

    // Terminate failures.
    let unknown_id = TerminateRequest {
        id: StreamId::for_path(&s.path("never-registered")),
        ..s.terminate(&state, 3)
    };
    let malformed_id = TerminateRequest {
        id: "abc".parse().unwrap(),
        ..s.terminate(&state, 3)
    };
    let wrong_secret = TerminateRequest {
        secret: other_secret,
        ..s.terminate(&state, 3)
    };
    let other_index = s.terminate(&state, 4);
    let terminate_cases = [
        (&unknown_id, Code::NotFound),
        (&malformed_id, Code::InvalidArgument),
        (&wrong_secret, Code::InvalidArgument),
        (&other_index, Code::FailedPrecondition),
    ];
    for (req, code) in terminate_cases {
        let before = s.server.calls().terminate;
        let e = c.terminate_stream(req).await.unwrap_err();
        assert_eq!(e.code(), code, "{e}");
        assert!(!e.is_transient(), "{e}");
        assert_eq!(s.server.calls().terminate, before + 1);
    }
    // Nothing above changed the stream.
    let stored = s.server.stream(&s.project, &good.path).unwrap();
    assert_eq!(stored.terminal_index, Some(MessageIndex::from(3)));
}

#[tokio::test]
async fn invalid_requests_send_nothing() {
    let s = Setup::start().await;
    let c = GrpcCoordinator::new(s.server.channel());
    let (mut req, desc) = s.register("stdout");
    req.proto_version = "".into();
    let e = c.register_stream(&req, &desc).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.field(), Some("proto_version"));
    assert!(!e.is_transient());
    // Raw input is validated before a request even exists.
    let e = coordinator_api::RegisterRequest::parse("proj", "builds/1/+/x", &[1; 35], None)
        .unwrap_err();
    assert_eq!(e.field(), Some("secret"));
    let e = TerminateRequest::parse("proj", "builds/1/+/x", "", &[1; 36], 3).unwrap_err();
    assert_eq!(e.field(), Some("id"));
    assert_eq!(s.server.calls().total_rpcs(), 0);
}

#[tokio::test]
async fn transient_failures_are_retried_until_success() {
    let s = Setup::start().await;
    let c = coordinator(&s, fast_retry(5));
    for (i, code) in [
        Code::Unavailable,
        Code::Internal,
        Code::Unknown,
        Code::DeadlineExceeded,
    ]
    .into_iter()
    .enumerate()
    {
        let (req, desc) = s.register(&format!("s{i}"));
        let before = s.server.calls().register;
        s.server.faults().fail_next(2, code);
        let state = c.register_stream(&req, &desc).await.unwrap();
        assert_eq!(state.path, req.path);
        assert_eq!(s.server.calls().register, before + 3, "{code}");

        s.server
            .faults()
            .fail_next_rpc(RpcKind::TerminateStream, 3, code);
        let before = s.server.calls().terminate;
        c.terminate_stream(&s.terminate(&state, 1)).await.unwrap();
        assert_eq!(s.server.calls().terminate, before + 4, "{code}");
    }
}

#[tokio::test]
async fn permanent_injected_failures_are_not_retried() {
    let s = Setup::start().await;
    let c = coordinator(&s, fast_retry(5));
    let (req, desc) = s.register("stdout");
    for code in [
        Code::PermissionDenied,
        Code::Unauthenticated,
        Code::ResourceExhausted,
        Code::Aborted,
        Code::Cancelled,
    ] {
        let before = s.server.calls().register;
        s.server.faults().fail_next(1, code);
        let e = c.register_stream(&req, &desc).await.unwrap_err();
        assert_eq!(e.code(), code);
        assert!(!e.is_transient());
        assert_eq!(s.server.calls().register, before + 1, "{code} was retried");
    }
}

#[tokio::test]
async fn retries_give_up_and_stay_transient() {
    let s = Setup::start().await;
    let c = coordinator(&s, fast_retry(3));
    let (req, desc) = s.register("stdout");
    s.server.faults().fail_next(100, Code::Unavailable);
    let e = c.register_stream(&req, &desc).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.is_transient());
    assert_eq!(s.server.calls().register, 4);

    // With retries off, one call.
    let c = coordinator(&s, RetryPolicy::none());
    let e = c.register_stream(&req, &desc).await.unwrap_err();
    assert!(e.is_transient());
    assert_eq!(s.server.calls().register, 5);
}

#[tokio::test]
async fn attempt_timeout_cuts_slow_calls_and_is_retried() {
    let s = Setup::start().await;
    s.server.faults().set_latency(Duration::from_secs(5));
    let c = GrpcCoordinator::builder()
        .retry(fast_retry(2))
        .attempt_timeout(Duration::from_millis(100))
        .build(s.server.channel())
        .unwrap();
    let (req, desc) = s.register("slow");
    let e = c.register_stream(&req, &desc).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    assert!(e.is_transient());
    assert_eq!(s.server.calls().register, 3);
    // Without latency the same coordinator succeeds.
    s.server.faults().set_latency(Duration::ZERO);
    c.register_stream(&req, &desc).await.unwrap();
}

#[tokio::test]
async fn overall_deadline_bounds_retries() {
    let s = Setup::start().await;
    s.server.faults().hold();
    let c = GrpcCoordinator::builder()
        .retry(fast_retry(1000))
        .attempt_timeout(Duration::from_millis(30))
        .deadline(Duration::from_millis(200))
        .build(s.server.channel())
        .unwrap();
    let (req, desc) = s.register("held");
    let e = c.register_stream(&req, &desc).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
    assert!(e.is_transient());
    let calls = s.server.calls().register;
    assert!((2..1000).contains(&calls), "{calls} attempts");
    s.server.faults().release();
}

#[tokio::test]
async fn connection_failures_are_unavailable_and_transient() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let c = GrpcCoordinator::builder()
        .retry(RetryPolicy::none())
        .connect_lazy(format!("http://{addr}"))
        .unwrap();
    let s = Setup::start().await;
    let (req, desc) = s.register("x");
    let e = c.register_stream(&req, &desc).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(e.is_transient());

    let e = GrpcCoordinator::connect(format!("http://{addr}"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, coordinator_grpc::BuildError::Connect { .. }),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_restarted_server_is_reached_again() {
    let mut s = Setup::start().await;
    let c = GrpcCoordinator::builder()
        .retry(fast_retry(20))
        .connect(s.server.endpoint())
        .await
        .unwrap();
    let (req, desc) = s.register("a");
    c.register_stream(&req, &desc).await.unwrap();
    s.server.restart(true).await;
    let (req, desc) = s.register("b");
    let state = c.register_stream(&req, &desc).await.unwrap();
    assert_eq!(state.path, req.path);
}

/// A tower layer that records request headers and the most requests in flight
/// at once.
#[derive(Clone)]
struct Tap {
    inner: Channel,
    headers: Arc<Mutex<Vec<http::HeaderMap>>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

impl Tap {
    fn new(inner: Channel) -> Tap {
        Tap {
            inner,
            headers: Default::default(),
            in_flight: Default::default(),
            max_in_flight: Default::default(),
        }
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Tap {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        self.headers.lock().unwrap().push(request.headers().clone());
        let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(n, Ordering::SeqCst);
        let in_flight = self.in_flight.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let r = response.await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            r
        })
    }
}

#[tokio::test]
async fn bearer_token_and_interceptor_set_metadata_through_a_custom_service() {
    let s = Setup::start().await;
    let tap = Tap::new(s.server.channel());
    let c = GrpcCoordinator::builder()
        .bearer_token("tok-123")
        .interceptor(|mut request| {
            request
                .metadata_mut()
                .insert("x-collector", "test".parse().unwrap());
            Ok(request)
        })
        .build_service(tap.clone())
        .unwrap();
    let (req, desc) = s.register("x");
    c.register_stream(&req, &desc).await.unwrap();
    let headers = tap.headers.lock().unwrap().pop().unwrap();
    assert_eq!(headers["authorization"], "Bearer tok-123");
    assert_eq!(headers["x-collector"], "test");
    assert!(headers.contains_key("grpc-timeout"));
}

#[tokio::test]
async fn an_interceptor_error_fails_the_call_without_sending_it() {
    let s = Setup::start().await;
    let c = GrpcCoordinator::builder()
        .retry(fast_retry(3))
        .interceptor(|_| Err(tonic::Status::unauthenticated("no credentials")))
        .build(s.server.channel())
        .unwrap();
    let (req, desc) = s.register("x");
    let e = c.register_stream(&req, &desc).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(!e.is_transient());
    assert_eq!(s.server.calls().total_rpcs(), 0);
}

#[tokio::test]
async fn concurrency_limit_bounds_rpcs_in_flight() {
    let s = Setup::start().await;
    let tap = Tap::new(s.server.channel());
    let c = Arc::new(
        GrpcCoordinator::builder()
            .concurrency_limit(2)
            .build_service(tap.clone())
            .unwrap(),
    );
    s.server.faults().hold();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..6 {
        let c = c.clone();
        let (req, desc) = s.register(&format!("s{i}"));
        calls.spawn(async move { c.register_stream(&req, &desc).await });
    }
    s.server.faults().wait_held(2).await;
    assert_eq!(s.server.calls().register, 2);
    s.server.faults().release();
    while let Some(r) = calls.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(tap.max_in_flight.load(Ordering::SeqCst), 2);
    assert_eq!(s.server.calls().register, 6);
}
