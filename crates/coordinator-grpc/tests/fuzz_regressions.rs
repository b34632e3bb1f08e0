//! Reproducers found by the cargo-fuzz targets under `fuzz/`, kept as plain
//! tests: each runs the reproducer's bytes through the same functions the
//! target does and asserts the correct behaviour.
//!
//! `response_mapping`, `crash-da39a3ee5e6b4b0d3255bfef95601890afd80709` (the
//! empty input): the empty message decodes as a `logdog.Error` with
//! `grpc_code` 0, and `convert::error_from_wire` turned it into an `Error`
//! whose code was `OK` ("not an error") with the message "OK", so a failed
//! call reported success as its reason. The same held for a RegisterStream
//! response whose `error` field is present but empty, a batch entry answered
//! with an empty error, and a `tonic::Status` with code `OK`. Fixed in
//! `convert`: a code that is not an error code (`OK`, or outside 0..=16) is
//! `Unknown`, so transient.
//!
//! `status_header`, run with `strip_malformed_details` taken out of the target,
//! `crash-d71c6236bff37664e6f6b67c1436cc3f063f8ba1` (4 bytes, found in under a
//! thousand executions from an empty corpus): a `grpc-status-details-bin` that is
//! not base64 makes tonic's `Status::from_header_map` panic ("Invalid status
//! header, expected base64 encoded value"), whatever the status. The client
//! strips such a header first (`sanitize`); the test keeps both facts.

use std::sync::Arc;

use coordinator_api::{Code, Coordinator, CoordinatorFuture, Error, RegisterRequest};
use coordinator_grpc::convert::{error_from_status, error_from_wire, state_from_wire};
use coordinator_grpc::proto::logdog as proto;
use coordinator_grpc::tonic::codegen::http::{HeaderMap, HeaderValue};
use coordinator_grpc::{BatchOptions, BatchingClient, strip_malformed_details};
use coordinator_services::fuzzing::{EntryKind, EntryOutcome, match_response};
use coordinator_services::{CallOptions, ServicesClient, ServicesCoordinator, ServicesFuture};
use prost::Message;

/// The reproducer: libFuzzer's crash file was empty.
const EMPTY: &[u8] = b"";
/// A RegisterStreamResponse whose `error` (field 3) is an empty message.
const REGISTER_WITH_EMPTY_ERROR: &[u8] = &[0x1a, 0x00];
/// A BatchResponse with one entry (index 0) answered by an empty error.
const BATCH_WITH_EMPTY_ERROR: &[u8] = &[0x0a, 0x02, 0x12, 0x00];
/// The status check's input: code 0 (4 bytes, little-endian), no message.
const STATUS_OK_NO_MESSAGE: &[u8] = &[0, 0, 0, 0];

fn request() -> RegisterRequest {
    RegisterRequest::parse("proj", "pre/fix/+/na/me", &[7; 36], None).unwrap()
}

fn assert_unknown(error: &Error) {
    assert_eq!(error.code(), Code::Unknown, "{error:?}");
    assert!(error.is_transient(), "{error:?}");
    assert_eq!(error.message(), "UNKNOWN");
}

#[test]
fn an_empty_wire_error_is_unknown_not_ok() {
    let wire = proto::Error::decode(EMPTY).unwrap();
    assert_eq!(wire.grpc_code, 0);
    assert_unknown(&error_from_wire(&wire));
}

#[test]
fn a_register_response_with_an_empty_error_fails_as_unknown() {
    let response = proto::RegisterStreamResponse::decode(REGISTER_WITH_EMPTY_ERROR).unwrap();
    assert!(response.error.is_some());
    let error = state_from_wire(&request(), response).unwrap_err();
    assert_unknown(&error);
}

#[test]
fn a_batch_entry_answered_with_an_empty_error_fails_as_unknown() {
    let response = proto::BatchResponse::decode(BATCH_WITH_EMPTY_ERROR).unwrap();
    for kind in [EntryKind::Register, EntryKind::Terminate] {
        let outcomes = match_response(&[kind], response.clone()).outcomes;
        let [EntryOutcome::Answered(Err(error))] = &outcomes[..] else {
            panic!("{outcomes:?}");
        };
        assert_unknown(error);
    }
}

#[test]
fn a_status_with_code_ok_is_unknown() {
    let (code, message) = STATUS_OK_NO_MESSAGE.split_at(4);
    let code = i32::from_le_bytes(code.try_into().unwrap());
    let status = tonic::Status::new(
        tonic::Code::from_i32(code),
        String::from_utf8_lossy(message),
    );
    assert_unknown(&error_from_status(&status));
    // With a message, the message is kept.
    let status = tonic::Status::new(tonic::Code::Ok, "odd");
    let error = error_from_status(&status);
    assert_eq!(error.code(), Code::Unknown);
    assert_eq!(error.message(), "odd");
}

/// Answers every batch with the reproducer's response.
struct EmptyErrorAnswers;

impl ServicesClient for EmptyErrorAnswers {
    fn register_stream<'a>(
        &'a self,
        _: CallOptions,
        _: &'a proto::RegisterStreamRequest,
    ) -> ServicesFuture<'a, proto::RegisterStreamResponse> {
        CoordinatorFuture::ready(Err(Error::unavailable("batches only")))
    }

    fn terminate_stream<'a>(
        &'a self,
        _: CallOptions,
        _: &'a proto::TerminateStreamRequest,
    ) -> ServicesFuture<'a, ()> {
        CoordinatorFuture::ready(Err(Error::unavailable("batches only")))
    }

    fn batch<'a>(
        &'a self,
        _: CallOptions,
        request: &'a proto::BatchRequest,
    ) -> ServicesFuture<'a, proto::BatchResponse> {
        let mut response = proto::BatchResponse::decode(BATCH_WITH_EMPTY_ERROR).unwrap();
        // The same empty error for every entry of the batch.
        let entry = response.resp[0].clone();
        response.resp = (0..request.req.len())
            .map(|i| proto::batch_response::Entry {
                index: i as i32,
                ..entry.clone()
            })
            .collect();
        CoordinatorFuture::ready(Ok(response))
    }
}

#[tokio::test(start_paused = true)]
async fn a_batching_caller_answered_with_an_empty_error_gets_unknown() {
    let client = BatchingClient::new(
        Arc::new(EmptyErrorAnswers),
        BatchOptions::default().with_max_entries(1),
    )
    .unwrap();
    let error = ServicesCoordinator::new(&client)
        .register_stream(&request(), b"desc")
        .await
        .unwrap_err();
    assert_unknown(&error);
    client.close().await;
}

/// `status_header`'s input format: lines are the values of `grpc-status`,
/// `grpc-message`, then `grpc-status-details-bin`.
const DETAILS_NOT_BASE64: &[u8] = &[0x88, b'\n', b'\n', b']'];

fn status_headers(input: &[u8]) -> HeaderMap {
    let mut lines = input.split(|&b| b == b'\n');
    let mut headers = HeaderMap::new();
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        let value = lines.next().unwrap();
        headers.append(name, HeaderValue::from_bytes(value).unwrap());
    }
    headers
}

#[test]
fn details_that_are_not_base64_are_dropped_before_tonic_reads_them() {
    let raw = status_headers(DETAILS_NOT_BASE64);
    // tonic itself panics on this header (if this starts failing, tonic no
    // longer does, and the strip could go).
    let panicked = std::panic::catch_unwind(|| tonic::Status::from_header_map(&raw));
    assert!(panicked.is_err(), "tonic read a non-base64 details header");

    let mut headers = raw.clone();
    assert!(strip_malformed_details(&mut headers));
    assert!(headers.get("grpc-status-details-bin").is_none());
    assert_eq!(headers.len(), raw.len() - 1);
    let status = tonic::Status::from_header_map(&headers).unwrap();
    // "\x88" is no status code: Unknown, transient.
    assert_eq!(status.code(), tonic::Code::Unknown);
    assert!(status.details().is_empty());
    let error = error_from_status(&status);
    assert_unknown(&error);
}
