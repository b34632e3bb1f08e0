//! The pRPC client against a scripted local HTTP/1.1 server.

mod common;

use std::time::Duration;

use common::{Body, Reply, Server, gzip};
use coordinator_api::{Code, Coordinator, CoordinatorFuture, Error, RegisterRequest};
use coordinator_prpc::auth::{TokenFuture, TokenSource};
use coordinator_prpc::proto::logdog as proto;
use coordinator_prpc::{
    BatchOptions, PrpcCoordinator, PrpcCoordinatorBuilder, PrpcServices, RetryPolicy,
    ServicesClient,
};
use coordinator_services::CallOptions;
use prost::Message;
use tokio::time::Instant;

const ID: &str = "f53fe51cc97b9fbf00e69a388bfd079168d1e15c3fe708e44f049dc9688f52ad";

fn register_response(secret: &[u8]) -> proto::RegisterStreamResponse {
    proto::RegisterStreamResponse {
        id: ID.into(),
        state: Some(proto::InternalLogStreamState {
            proto_version: "1".into(),
            secret: secret.to_vec(),
            terminal_index: -1,
            archived: false,
            purged: false,
        }),
        error: None,
    }
}

fn register_request() -> proto::RegisterStreamRequest {
    proto::RegisterStreamRequest {
        project: "proj".into(),
        secret: vec![7; 36],
        proto_version: "1".into(),
        desc: b"desc".to_vec(),
        terminal_index: -1,
    }
}

/// Echoes the request's secret in a RegisterStream answer.
fn echo(seen: &common::Seen) -> Reply {
    let req = proto::RegisterStreamRequest::decode(seen.body.as_slice()).unwrap();
    Reply::ok(&register_response(&req.secret))
}

fn builder() -> PrpcCoordinatorBuilder {
    PrpcCoordinator::builder().insecure(true)
}

fn transport(server: &Server) -> PrpcServices {
    builder().build_transport(&server.url()).unwrap()
}

/// Retries quickly: what would retry anything retryable.
fn fast_retry() -> RetryPolicy {
    RetryPolicy::default()
        .with_max_retries(3)
        .with_initial_delay(Duration::from_millis(1))
        .with_jitter(0.0)
}

async fn register(t: &PrpcServices) -> Result<proto::RegisterStreamResponse, Error> {
    t.register_stream(CallOptions::new(), &register_request())
        .await
}

#[tokio::test]
async fn binary_success_and_the_request_headers() {
    let server = Server::start(echo).await;
    let resp = register(&transport(&server)).await.unwrap();
    assert_eq!(resp, register_response(&[7; 36]));
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.path, "/prpc/logdog.Services/RegisterStream");
    assert_eq!(
        r.header("content-type"),
        Some("application/prpc; encoding=binary")
    );
    assert_eq!(
        r.header("accept"),
        Some("application/prpc; encoding=binary")
    );
    assert!(r.header("accept-encoding").unwrap().contains("gzip"));
    assert!(
        r.header("user-agent")
            .unwrap()
            .starts_with("coordinator-prpc/")
    );
    assert_eq!(
        r.header("x-prpc-max-response-size"),
        Some((32 * 1024 * 1024).to_string().as_str())
    );
    assert_eq!(r.header("x-prpc-grpc-timeout"), None);
    assert_eq!(r.header("authorization"), None);
    assert_eq!(
        r.header("content-encoding"),
        None,
        "small bodies are not gzipped"
    );
    assert_eq!(
        r.header("content-length"),
        Some(r.raw.len().to_string().as_str())
    );
    assert_eq!(r.body, register_request().encode_to_vec());
}

#[tokio::test]
async fn the_code_header_decides_not_the_http_status() {
    let server = Server::start(|seen| match seen.path.rsplit('/').next() {
        Some("RegisterStream") => Reply::code(5, 404, "no such stream"),
        Some("TerminateStream") => Reply::code(14, 200, "try later"),
        _ => Reply::code(3, 500, &"x".repeat(100_000)),
    })
    .await;
    let t = transport(&server);
    let e = register(&t).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::NotFound, "no such stream"));
    assert!(!e.is_transient());
    let e = t
        .terminate_stream(CallOptions::new(), &Default::default())
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Unavailable, "try later"));
    assert!(e.is_retryable());
    let e = t
        .batch(CallOptions::new(), &Default::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().len() <= 4096 && e.message().ends_with("[truncated]"));
}

#[tokio::test]
async fn without_the_code_header_the_http_status_decides() {
    for (status, code) in [
        (401, Code::Unauthenticated),
        (403, Code::PermissionDenied),
        (503, Code::Unavailable),
        (502, Code::Internal),
        (404, Code::Internal),
        (200, Code::Internal),
        (302, Code::Internal),
    ] {
        let server =
            Server::start(move |_| Reply::new(status, b"<html>proxy</html>".to_vec())).await;
        let e = register(&transport(&server)).await.unwrap_err();
        assert_eq!(e.code(), code, "{status}: {e}");
        assert!(e.message().contains(&status.to_string()), "{e}");
        assert_eq!(e.is_transient(), code.is_transient());
    }
}

#[tokio::test]
async fn a_code_that_is_not_an_integer_is_internal() {
    let server = Server::start(|_| Reply::new(200, vec![]).header("x-prpc-grpc-code", "OK")).await;
    let e = register(&transport(&server)).await.unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert!(e.is_transient());
}

#[tokio::test]
async fn malformed_status_details_are_ignored() {
    let server = Server::start(|_| {
        Reply::code(5, 404, "gone")
            .header("x-prpc-status-details-bin", "!!!not base64")
            .header("x-prpc-status-details-bin", "AAAA")
    })
    .await;
    let e = register(&transport(&server)).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::NotFound, "gone"));
}

/// A coordinator with fast retries against `server`, and a register request.
fn coordinator(server: &Server, b: PrpcCoordinatorBuilder) -> (PrpcCoordinator, RegisterRequest) {
    let c = b.retry(fast_retry()).build(&server.url()).unwrap();
    let r = RegisterRequest::parse("proj", "a/+/b", &[7; 36], None).unwrap();
    (c, r)
}

#[tokio::test]
async fn a_content_type_mismatch_is_internal_and_not_retried() {
    let server = Server::start(|seen| {
        let mut reply = echo(seen);
        reply.headers.retain(|(n, _)| n != "content-type");
        reply.header("content-type", "application/json")
    })
    .await;
    let (c, r) = coordinator(&server, builder());
    let e = c.register_stream(&r, b"").await.unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert!(e.is_transient() && !e.is_retryable(), "{e}");
    assert!(e.message().contains("Content-Type"), "{e}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn an_empty_content_type_means_binary() {
    let server = Server::start(|seen| {
        let mut reply = echo(seen);
        reply.headers.retain(|(n, _)| n != "content-type");
        reply
    })
    .await;
    register(&transport(&server)).await.unwrap();
}

fn assert_too_large(e: &Error) {
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(e.is_transient() && !e.is_retryable(), "{e}");
    assert!(e.message().contains("larger than the limit"), "{e}");
}

#[tokio::test]
async fn oversized_by_content_length_is_refused_and_not_retried() {
    let server = Server::start(|_| {
        Reply::new(200, vec![0; 4096])
            .header("x-prpc-grpc-code", "0")
            .header("content-type", "application/prpc; encoding=binary")
    })
    .await;
    let (c, r) = coordinator(&server, builder().max_response_size(1024));
    assert_too_large(&c.register_stream(&r, b"").await.unwrap_err());
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-prpc-max-response-size"), Some("1024"));
}

#[tokio::test]
async fn oversized_while_streaming_is_refused_and_not_retried() {
    // 64 MiB in 64 KiB chunks, no Content-Length: reading stops at the limit.
    let server = Server::start(|_| Reply {
        status: 200,
        headers: vec![
            ("x-prpc-grpc-code".into(), "0".into()),
            (
                "content-type".into(),
                "application/prpc; encoding=binary".into(),
            ),
        ],
        body: Body::Chunks {
            size: 64 * 1024,
            count: 1024,
        },
    })
    .await;
    let (c, r) = coordinator(&server, builder().max_response_size(100_000));
    assert_too_large(&c.register_stream(&r, b"").await.unwrap_err());
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_gzip_bomb_is_bounded_by_decompressed_bytes() {
    let bomb = gzip(&vec![0; 16 * 1024 * 1024]);
    assert!(bomb.len() < 100_000);
    let server = Server::start(move |_| {
        Reply::new(200, bomb.clone())
            .header("x-prpc-grpc-code", "0")
            .header("content-type", "application/prpc; encoding=binary")
            .header("content-encoding", "gzip")
    })
    .await;
    let (c, r) = coordinator(&server, builder().max_response_size(200_000));
    assert_too_large(&c.register_stream(&r, b"").await.unwrap_err());
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn the_call_bound_narrows_the_clients_limit() {
    let server = Server::start(echo).await;
    let t = transport(&server);
    let e = t
        .register_stream(
            CallOptions::new().with_max_response_size(10),
            &register_request(),
        )
        .await
        .unwrap_err();
    assert_too_large(&e);
    assert_eq!(
        server.requests()[0].header("x-prpc-max-response-size"),
        Some("10")
    );
}

#[tokio::test]
async fn gzip_both_ways() {
    let server = Server::start(|seen| {
        let req = proto::RegisterStreamRequest::decode(seen.body.as_slice()).unwrap();
        let body = gzip(&register_response(&req.secret).encode_to_vec());
        Reply::new(200, body)
            .header("x-prpc-grpc-code", "0")
            .header("content-type", "application/prpc; encoding=binary")
            .header("content-encoding", "gzip")
    })
    .await;
    let t = transport(&server);
    let mut big = register_request();
    big.desc = vec![b'd'; 64 * 1024];
    let resp = t
        .register_stream(CallOptions::new(), &big.clone())
        .await
        .unwrap();
    assert_eq!(resp, register_response(&[7; 36]));
    let seen = server.requests();
    assert_eq!(seen[0].header("content-encoding"), Some("gzip"));
    assert!(seen[0].raw.len() < 2048, "{}", seen[0].raw.len());
    assert_eq!(seen[0].body, big.encode_to_vec());
}

#[tokio::test]
async fn the_timeout_header_is_the_time_left() {
    let server = Server::start(echo).await;
    let t = transport(&server);
    let options = CallOptions::new().with_deadline(Instant::now() + Duration::from_secs(5));
    t.register_stream(options, &register_request())
        .await
        .unwrap();
    let value = server.requests()[0]
        .header("x-prpc-grpc-timeout")
        .unwrap()
        .to_owned();
    let micros: u64 = value.strip_suffix('u').unwrap().parse().unwrap();
    assert!((4_000_000..=5_000_000).contains(&micros), "{value}");

    // Through the stack: the attempt timeout is sent.
    let (c, r) = coordinator(
        &server,
        builder().attempt_timeout(Duration::from_millis(1500)),
    );
    c.register_stream(&r, b"").await.unwrap();
    let value = server.requests()[1]
        .header("x-prpc-grpc-timeout")
        .unwrap()
        .to_owned();
    let micros: u64 = value.strip_suffix('u').unwrap().parse().unwrap();
    assert!((1_000_000..=1_500_000).contains(&micros), "{value}");
}

#[tokio::test]
async fn the_bearer_token_is_sent_and_never_shown() {
    let server = Server::start(echo).await;
    let b = builder().bearer_token("tok-s3cr3t");
    let dbg = format!("{b:?}");
    let t = b.build_transport(&server.url()).unwrap();
    register(&t).await.unwrap();
    assert_eq!(
        server.requests()[0].header("authorization"),
        Some("Bearer tok-s3cr3t")
    );
    let (c, _) = coordinator(&server, builder().bearer_token("tok-s3cr3t"));
    for text in [dbg, format!("{t:?}"), format!("{c:?}")] {
        assert!(!text.contains("s3cr3t"), "{text}");
    }

    // A token that is not a header value: an error without the token.
    let t = builder()
        .bearer_token("tok-s3cr3t\nX-Evil: 1")
        .build_transport(&server.url())
        .unwrap();
    let e = register(&t).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert!(!format!("{e} {e:?}").contains("s3cr3t"), "{e:?}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn failing_to_get_a_token_is_transient_and_nothing_is_sent() {
    struct NoToken;
    impl TokenSource for NoToken {
        fn token(&self) -> TokenFuture<'_> {
            CoordinatorFuture::ready(Err(Error::new(Code::PermissionDenied, "no key file")))
        }
    }
    let server = Server::start(echo).await;
    let (c, r) = coordinator(&server, builder().token_source(NoToken));
    let e = c.register_stream(&r, b"").await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.is_transient(), "{e}");
    assert!(e.message().contains("access token"), "{e}");
    assert_eq!(server.requests().len(), 0);
}

#[tokio::test]
async fn connection_refused_is_transient_unavailable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let t = builder()
        .build_transport(&format!("http://{addr}"))
        .unwrap();
    let e = register(&t).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(e.is_retryable(), "{e}");
}

#[tokio::test]
async fn transient_failures_are_retried_through_the_stack() {
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let server = Server::start(move |seen| {
        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            Reply::new(503, b"overloaded".to_vec())
        } else {
            echo(seen)
        }
    })
    .await;
    let (c, r) = coordinator(&server, builder());
    let state = c.register_stream(&r, b"").await.unwrap();
    assert_eq!(state.id.as_str(), ID);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn sequential_calls_reuse_one_connection() {
    let server = Server::start(echo).await;
    let t = transport(&server);
    for _ in 0..10 {
        register(&t).await.unwrap();
    }
    assert_eq!(server.requests().len(), 10);
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn batching_and_concurrency_limit_over_prpc() {
    let server = Server::start(|seen| {
        assert_eq!(seen.path, "/prpc/logdog.Services/Batch");
        let batch = proto::BatchRequest::decode(seen.body.as_slice()).unwrap();
        let resp = batch.req.into_iter().enumerate().map(|(i, entry)| {
            use proto::batch_request::entry::Value as Req;
            use proto::batch_response::entry::Value as Ans;
            let value = match entry.value {
                Some(Req::RegisterStream(r)) => Ans::RegisterStream(register_response(&r.secret)),
                _ => Ans::Err(proto::Error {
                    grpc_code: 3,
                    transient: false,
                    msg: "unexpected".into(),
                }),
            };
            proto::batch_response::Entry {
                index: i as i32,
                value: Some(value),
            }
        });
        Reply::ok(&proto::BatchResponse {
            resp: resp.collect(),
        })
    })
    .await;
    let c = PrpcCoordinator::builder()
        .insecure(true)
        .batching(BatchOptions::default().with_max_delay(Duration::from_millis(20)))
        .retry(fast_retry())
        .concurrency_limit(2)
        .connect(&server.url())
        .await
        .unwrap();
    let requests: Vec<_> = (0..5)
        .map(|i| RegisterRequest::parse("proj", &format!("a/+/s{i}"), &[7; 36], None).unwrap())
        .collect();
    let answers =
        futures::future::join_all(requests.iter().map(|r| c.register_stream(r, b""))).await;
    for (answer, request) in answers.into_iter().zip(&requests) {
        assert_eq!(answer.unwrap().path, request.path);
    }
    c.flush().await;
    let stats = c.batching_client().unwrap().stats();
    assert_eq!(stats.batches_sent, 1);
    assert_eq!(server.requests().len(), 1);
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_one_cached_token() {
    use coordinator_prpc::auth::{AccessToken, CachedTokenSource};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Slow(Arc<AtomicUsize>);
    impl TokenSource for Slow {
        fn token(&self) -> TokenFuture<'_> {
            CoordinatorFuture::new(async move {
                let n = self.0.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(AccessToken::new(
                    format!("tok-{n}"),
                    Instant::now() + Duration::from_secs(3600),
                ))
            })
        }
    }
    let fetches = Arc::new(AtomicUsize::new(0));
    let server = Server::start(echo).await;
    let t = builder()
        .token_source(CachedTokenSource::new(Slow(fetches.clone())))
        .build_transport(&server.url())
        .unwrap();
    let calls = (0..20).map(|_| register(&t));
    for answer in futures::future::join_all(calls).await {
        answer.unwrap();
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    let seen = server.requests();
    assert_eq!(seen.len(), 20);
    assert!(
        seen.iter()
            .all(|r| r.header("authorization") == Some("Bearer tok-0"))
    );
}
