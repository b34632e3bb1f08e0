//! A misbehaving `logdog.Services` server over loopback: whatever it answers,
//! the client returns a typed error (or a sensible state), never a panic.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use coordinator_api::{Code, Coordinator, PROTOCOL_VERSION, RegisterRequest};
use coordinator_grpc::proto::logdog::{
    BatchRequest, BatchResponse, InternalLogStreamState, RegisterStreamResponse, batch_response,
};
use coordinator_grpc::{BatchOptions, GrpcCoordinator, RetryPolicy};
use coordinator_testkit::ScriptedServices;

fn good_response() -> RegisterStreamResponse {
    RegisterStreamResponse {
        id: "8be6b498586133db3940ea62baf3792460bcfb6595873e4421843d08cafa3709".into(),
        state: Some(InternalLogStreamState {
            proto_version: "1".into(),
            secret: vec![5; 36],
            terminal_index: -1,
            archived: false,
            purged: false,
        }),
        error: None,
    }
}

/// Serves a scripted server: RegisterStream answers the current `register`
/// response, Batch answers `batch(request)`.
async fn serve(
    register: Arc<Mutex<RegisterStreamResponse>>,
    batch: impl Fn(&BatchRequest) -> BatchResponse + Send + Sync + 'static,
) -> String {
    ScriptedServices::new(move |_| register.lock().unwrap().clone(), batch)
        .serve()
        .await
        .unwrap()
}

fn request() -> RegisterRequest {
    RegisterRequest::parse("proj", "foo/+/bar", &[5; 36], None).unwrap()
}

#[tokio::test]
async fn malformed_register_responses_are_transient_errors() {
    let register = Arc::new(Mutex::new(good_response()));
    let url = serve(register.clone(), |_| BatchResponse::default()).await;
    let c = GrpcCoordinator::builder()
        .retry(RetryPolicy::none())
        .connect(url)
        .await
        .unwrap();
    let req = request();

    // A good answer first: the request's identity, the response's state.
    let state = c.register_stream(&req, b"d").await.unwrap();
    assert_eq!(state.path, req.path);
    assert!(matches!(
        state.proto_version,
        Cow::Borrowed(PROTOCOL_VERSION)
    ));

    let mut cases: Vec<(RegisterStreamResponse, &str)> = Vec::new();
    let mut r = good_response();
    r.state = None;
    cases.push((r, "missing stream state"));
    let mut r = good_response();
    r.state.as_mut().unwrap().secret = vec![5; 35];
    cases.push((r, "state.secret"));
    let mut r = good_response();
    r.state.as_mut().unwrap().secret.clear();
    cases.push((r, "state.secret"));
    let mut r = good_response();
    r.id = String::new();
    cases.push((r, "id"));
    let mut r = good_response();
    r.id = "bad id\u{7f}".into();
    cases.push((r, "id"));
    let mut r = good_response();
    r.id = r.id.to_uppercase();
    cases.push((r, "id"));
    let mut r = good_response();
    r.id = "a".repeat(1 << 20);
    cases.push((r, "id"));
    let mut r = good_response();
    r.state.as_mut().unwrap().proto_version = "9".repeat(1 << 20);
    cases.push((r, "state.proto_version"));
    for (response, names) in cases {
        *register.lock().unwrap() = response;
        let e = c.register_stream(&req, b"d").await.unwrap_err();
        assert_eq!(e.code(), Code::Internal, "{e}");
        // Not the server's verdict about the stream: transient, never kept.
        assert!(e.is_transient(), "{e}");
        assert!(e.message().contains(names), "{e}");
        assert!(
            e.message().len() < 200,
            "nothing of the answer is echoed: {e}"
        );
    }

    // A negative terminal index means "not terminated"; other versions are kept.
    let mut r = good_response();
    r.state.as_mut().unwrap().terminal_index = -7;
    r.state.as_mut().unwrap().proto_version = "2".into();
    *register.lock().unwrap() = r;
    let state = c.register_stream(&req, b"d").await.unwrap();
    assert_eq!(state.terminal_index, None);
    assert_eq!(state.proto_version, "2");

    // An error carried in the response is the call's error.
    let mut r = good_response();
    r.error = Some(coordinator_grpc::proto::logdog::Error {
        grpc_code: 99,
        transient: false,
        msg: "odd".into(),
    });
    *register.lock().unwrap() = r;
    let e = c.register_stream(&req, b"d").await.unwrap_err();
    assert_eq!(e.code(), Code::Unknown);
    assert!(e.is_transient());
}

#[tokio::test]
async fn junk_batch_indexes_are_ignored() {
    // The first batch (3 entries) answers entry 0 among junk: a negative, an
    // out-of-range and a repeated index (an error). The other two entries are
    // re-queued, and the second batch answers them.
    let batch = |request: &BatchRequest| {
        let n = request.req.len() as i32;
        let answer = |index| batch_response::Entry {
            index,
            value: Some(batch_response::entry::Value::RegisterStream(good_response())),
        };
        let late_error = batch_response::Entry {
            index: 0,
            value: Some(batch_response::entry::Value::Err(
                coordinator_grpc::proto::logdog::Error {
                    grpc_code: Code::NotFound.as_i32(),
                    transient: false,
                    msg: "late duplicate".into(),
                },
            )),
        };
        let resp = if n == 3 {
            vec![answer(0), late_error, answer(-1)]
        } else {
            (0..n).map(answer).collect()
        };
        BatchResponse { resp }
    };
    let url = serve(Arc::new(Mutex::new(good_response())), batch).await;
    let c = GrpcCoordinator::builder()
        .retry(RetryPolicy::none())
        .batching(
            BatchOptions::default()
                .with_max_entries(3)
                .with_max_delay(std::time::Duration::from_millis(5)),
        )
        .connect(url)
        .await
        .unwrap();
    let requests: Vec<RegisterRequest> = (0..3)
        .map(|i| RegisterRequest::parse("proj", &format!("foo/+/s{i}"), &[5; 36], None).unwrap())
        .collect();
    let (a, b, d) = tokio::join!(
        c.register_stream(&requests[0], b"d"),
        c.register_stream(&requests[1], b"d"),
        c.register_stream(&requests[2], b"d"),
    );
    for (result, req) in [a, b, d].into_iter().zip(&requests) {
        assert_eq!(result.unwrap().path, req.path);
    }
    let stats = c.batching_client().unwrap().stats();
    assert_eq!(
        (
            stats.batches_sent,
            stats.requeued_entries,
            stats.ignored_answers
        ),
        (2, 2, 2)
    );
}
