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

use std::sync::Arc;

use coordinator_api::{Code, Coordinator, CoordinatorFuture, Error, RegisterRequest};
use coordinator_grpc::convert::{error_from_status, error_from_wire, state_from_wire};
use coordinator_grpc::proto::logdog as proto;
use coordinator_grpc::{BatchOptions, BatchingClient};
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
    fn register_stream(
        &self,
        _: CallOptions,
        _: proto::RegisterStreamRequest,
    ) -> ServicesFuture<'_, proto::RegisterStreamResponse> {
        CoordinatorFuture::ready(Err(Error::unavailable("batches only")))
    }

    fn terminate_stream(
        &self,
        _: CallOptions,
        _: proto::TerminateStreamRequest,
    ) -> ServicesFuture<'_, ()> {
        CoordinatorFuture::ready(Err(Error::unavailable("batches only")))
    }

    fn batch(
        &self,
        _: CallOptions,
        request: proto::BatchRequest,
    ) -> ServicesFuture<'_, proto::BatchResponse> {
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
