//! Response mapping from arbitrary protobuf bytes: the input is decoded with
//! prost as a `RegisterStreamResponse`, a `BatchResponse` and an `Error`, and
//! each message that decodes goes through `coordinator-grpc`'s mapping
//! (`convert::state_from_wire`, the batching client's `match_response`,
//! `convert::error_from_wire`). A fifth check maps a `tonic::Status` made from
//! the input (code, message) with `convert::error_from_status`.
//!
//! The mapping must never panic, and its result must be the one `semantics.md`
//! §4 and `wire.md` describe: a state holding the request's identity and the
//! response's fields, or a typed error (the response's own error with its code
//! and transience, or a permanent `Internal` error naming the bad field).
#![no_main]

use coordinator_api::{Code, Error, MessageIndex, PROTOCOL_VERSION, PrefixSecret, RegisterRequest};
use coordinator_grpc::convert::{
    error_from_status, error_from_wire, error_to_wire, state_from_wire,
};
use coordinator_grpc::fuzzing::{EntryKind, EntryOutcome, match_response};
use coordinator_grpc::proto::logdog as proto;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use proto::batch_response::entry::Value as AnswerValue;

fuzz_target!(|data: &[u8]| {
    let request =
        RegisterRequest::parse("proj", "pre/fix/+/na/me", &[7; 36], None).expect("a valid request");
    if let Ok(response) = proto::RegisterStreamResponse::decode(data) {
        check_register(&request, response);
    }
    if let Ok(batch) = proto::BatchResponse::decode(data) {
        check_batch(&request, batch);
    }
    if let Ok(error) = proto::Error::decode(data) {
        check_wire_error(&error);
    }
    check_status(data);
});

/// Every error the mapping produces is usable: it is an error (its code is
/// not `OK`, which `Code` documents as "not an error"), it renders, and it
/// says something.
fn check_error_renders(error: &Error) {
    assert_ne!(error.code(), Code::Ok, "an error with code OK: {error:?}");
    assert!(!error.message().is_empty(), "{error:?}");
    let _ = (error.to_string(), format!("{error:?}"));
}

/// A permanent `Internal` error about a malformed response field.
fn is_bad_response(error: &Error, field: &str) -> bool {
    error.code() == Code::Internal
        && !error.is_transient()
        && error.message().contains(&format!("{field}:"))
}

/// The reference for `wire.md`'s entry error mapping. A code that is not an
/// error code (`OK`, or outside the canonical 0..=16) is `Unknown`.
fn expected_wire_error(error: &proto::Error) -> (Code, bool, String) {
    let code = match Code::from_i32(error.grpc_code) {
        Code::Ok => Code::Unknown,
        code => code,
    };
    let message = if error.msg.is_empty() {
        code.as_str().to_owned()
    } else {
        error.msg.clone()
    };
    (code, error.transient || code.is_transient(), message)
}

fn check_wire_error(wire: &proto::Error) {
    let error = error_from_wire(wire);
    let (code, transient, message) = expected_wire_error(wire);
    assert_eq!(error.code(), code);
    assert_eq!(error.is_transient(), transient, "{wire:?}");
    assert_eq!(error.message(), message);
    check_error_renders(&error);
    // Back to the wire and again: the local error is a fixed point.
    let again = error_to_wire(&error);
    assert_eq!(again.grpc_code, code.as_i32());
    assert_eq!(again.transient, transient);
    assert_eq!(error_from_wire(&again), error);
}

/// A stream ID the state mapping accepts: non-empty printable ASCII.
fn id_is_valid(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

fn check_register(request: &RegisterRequest, response: proto::RegisterStreamResponse) {
    let result = state_from_wire(request, response.clone());
    if let Some(wire) = &response.error {
        let error = result.expect_err("a response with an error is an error");
        assert_eq!(error, error_from_wire(wire));
        check_error_renders(&error);
        return;
    }
    let Some(wire_state) = &response.state else {
        let error = result.expect_err("a response without state is an error");
        assert!(is_bad_response(&error, "state"), "{error:?}");
        assert!(
            error.message().contains("missing stream state"),
            "{error:?}"
        );
        return;
    };
    let id_ok = id_is_valid(&response.id);
    let secret_ok = wire_state.secret.len() == PrefixSecret::LEN;
    match result {
        Ok(state) => {
            assert!(id_ok && secret_ok, "accepted {response:?}");
            assert_eq!(state.project, request.project);
            assert_eq!(state.path, request.path);
            assert_eq!(state.id.as_str(), response.id);
            assert_eq!(&state.secret.as_bytes()[..], &wire_state.secret[..]);
            assert_eq!(state.proto_version, wire_state.proto_version);
            let terminal = (wire_state.terminal_index >= 0)
                .then(|| MessageIndex::from_wire(wire_state.terminal_index).expect("non-negative"));
            assert_eq!(state.terminal_index, terminal);
            assert_eq!(state.archived, wire_state.archived);
            assert_eq!(state.purged, wire_state.purged);
            if wire_state.proto_version == PROTOCOL_VERSION {
                assert!(matches!(state.proto_version, std::borrow::Cow::Borrowed(_)));
            }
        }
        Err(error) => {
            check_error_renders(&error);
            let about_id = !id_ok && is_bad_response(&error, "id");
            let about_secret = !secret_ok && is_bad_response(&error, "state.secret");
            assert!(about_id || about_secret, "{error:?} for {response:?}");
            if about_secret {
                // The length is stated, and the bytes are not shown.
                let len = wire_state.secret.len();
                assert!(
                    error.message().contains(&format!("{len} bytes")),
                    "{error:?}"
                );
            }
        }
    }
}

fn check_batch(request: &RegisterRequest, batch: proto::BatchResponse) {
    for len in [1usize, 2, 5, 16] {
        for first_is_register in [true, false] {
            let kinds: Vec<EntryKind> = (0..len)
                .map(|i| {
                    if (i % 2 == 0) == first_is_register {
                        EntryKind::Register
                    } else {
                        EntryKind::Terminate
                    }
                })
                .collect();
            let outcomes = match_response(&kinds, batch.clone());
            assert_eq!(outcomes.len(), len);
            for (i, (outcome, &kind)) in outcomes.into_iter().zip(&kinds).enumerate() {
                check_outcome(request, &batch, i, kind, outcome);
            }
        }
    }
}

/// Entry `i`'s outcome against the reference: the first answer whose index is
/// `i` settles it; an empty response fails every entry transiently.
fn check_outcome(
    request: &RegisterRequest,
    batch: &proto::BatchResponse,
    i: usize,
    kind: EntryKind,
    outcome: EntryOutcome,
) {
    if batch.resp.is_empty() {
        let EntryOutcome::Answered(Err(error)) = outcome else {
            panic!("an empty response must fail entry {i}: {outcome:?}");
        };
        check_error_renders(&error);
        assert_eq!(error.code(), Code::Internal);
        assert!(error.is_transient());
        return;
    }
    let first = batch
        .resp
        .iter()
        .find(|a| usize::try_from(a.index).ok() == Some(i));
    let Some(answer) = first else {
        assert!(
            matches!(outcome, EntryOutcome::Unanswered),
            "entry {i} has no answer: {outcome:?}"
        );
        return;
    };
    let EntryOutcome::Answered(reply) = outcome else {
        panic!("entry {i} was answered: {answer:?}");
    };
    match (kind, &answer.value) {
        (_, Some(AnswerValue::Err(wire))) => {
            let error = reply.expect_err("an error answer");
            assert_eq!(error, error_from_wire(wire));
            check_error_renders(&error);
        }
        (EntryKind::Register, Some(AnswerValue::RegisterStream(response))) => {
            let got = reply.expect("a register answer").expect("its response");
            assert_eq!(&got, response);
            check_register(request, got);
        }
        (EntryKind::Terminate, None) => assert!(matches!(reply, Ok(None)), "{reply:?}"),
        (_, _) => {
            let error = reply.expect_err("an answer of the wrong kind");
            assert!(is_bad_response(&error, "resp.value"), "{error:?}");
            check_error_renders(&error);
        }
    }
}

/// A status the server could send (any code, any message) maps to an error
/// with its code and message, transient iff the code is; the two documented
/// exceptions are an expired `grpc-timeout` and the channel's "not ready".
fn check_status(data: &[u8]) {
    let Some((code, message)) = data.split_first_chunk::<4>() else {
        return;
    };
    let code = i32::from_le_bytes(*code);
    let message = String::from_utf8_lossy(message).into_owned();
    let status = tonic::Status::new(tonic::Code::from_i32(code), message.clone());
    let error = error_from_status(&status);
    // A status whose code is OK is not an error: it maps as `Unknown`.
    let local_code = match Code::from_i32(status.code() as i32) {
        Code::Ok => Code::Unknown,
        code => code,
    };
    let timeout = status.code() == tonic::Code::Cancelled && message == "Timeout expired";
    let not_ready =
        status.code() == tonic::Code::Unknown && message.starts_with("Service was not ready");
    if timeout {
        assert_eq!(error.code(), Code::DeadlineExceeded);
        assert!(error.is_transient());
    } else if not_ready {
        assert_eq!(error.code(), Code::Unavailable);
        assert!(error.is_transient());
    } else {
        assert_eq!(error.code(), local_code);
        assert_eq!(error.is_transient(), local_code.is_transient());
        let expected = if message.is_empty() {
            local_code.as_str()
        } else {
            &message
        };
        assert_eq!(error.message(), expected);
    }
    check_error_renders(&error);
}
