//! The JSON encoding (feature `json`) against a scripted local server.
#![cfg(feature = "json")]

mod common;

use common::{Reply, Server};
use coordinator_api::{Code, Coordinator, RegisterRequest};
use coordinator_prpc::{Encoding, PrpcCoordinator, RetryPolicy};

const ID: &str = "f53fe51cc97b9fbf00e69a388bfd079168d1e15c3fe708e44f049dc9688f52ad";

/// Answers RegisterStream in JSON, echoing the request's (base64) secret,
/// after the anti-XSSI prefix.
fn json_server(content_type: &'static str) -> impl Fn(&common::Seen) -> Reply {
    move |seen| {
        let req: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
        let secret = req["secret"].as_str().unwrap().to_owned();
        let body = serde_json::json!({
            "id": ID,
            "state": {
                "protoVersion": "1",
                "secret": secret,
                "terminalIndex": "41",
                "archived": true,
                "someFutureField": 1,
            },
        });
        Reply::new(200, format!(")]}}'\n{body}\n").into_bytes())
            .header("x-prpc-grpc-code", "0")
            .header("content-type", content_type)
    }
}

#[tokio::test]
async fn json_round_trip_with_the_xssi_prefix() {
    let server = Server::start(json_server("application/json; charset=utf-8")).await;
    let c = PrpcCoordinator::builder()
        .insecure(true)
        .encoding(Encoding::Json)
        .build(&server.url())
        .unwrap();
    let r = RegisterRequest::parse("proj", "a/+/b", &[7; 36], None).unwrap();
    let state = c.register_stream(&r, b"desc").await.unwrap();
    assert_eq!(state.id.as_str(), ID);
    assert_eq!(state.secret.as_bytes(), &[7; 36]);
    assert_eq!(state.terminal_index.map(u64::from), Some(41));
    assert!(state.archived && !state.purged);

    let seen = &server.requests()[0];
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.header("accept"), Some("application/json"));
    let sent: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(sent["project"], "proj");
    assert_eq!(sent["protoVersion"], "1");
    assert_eq!(sent["terminalIndex"], "-1");
    assert_eq!(sent["desc"], "ZGVzYw==");
}

#[tokio::test]
async fn a_binary_answer_to_a_json_call_is_a_mismatch() {
    let server = Server::start(json_server("application/prpc; encoding=binary")).await;
    let c = PrpcCoordinator::builder()
        .insecure(true)
        .encoding(Encoding::Json)
        .retry(RetryPolicy::default().with_initial_delay(std::time::Duration::from_millis(1)))
        .build(&server.url())
        .unwrap();
    let r = RegisterRequest::parse("proj", "a/+/b", &[7; 36], None).unwrap();
    let e = c.register_stream(&r, b"").await.unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert!(!e.is_retryable());
    assert_eq!(server.requests().len(), 1);
}
