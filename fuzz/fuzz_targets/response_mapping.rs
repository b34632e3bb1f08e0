//! Response mapping from arbitrary protobuf bytes: the input is decoded with
//! prost as a `RegisterStreamResponse`, a `BatchResponse` and an `Error`, and
//! each message that decodes goes through `coordinator-services`' mapping
//! (`convert::state_from_wire`, the batching client's `match_response`,
//! `convert::error_from_wire` and `error_from_code`). A last check maps a
//! `tonic::Status` made from the input (code, message) with
//! `coordinator_grpc::convert::error_from_status`. Error messages are also
//! checked repeated past `MAX_ERROR_MESSAGE`, so that truncation is reached
//! with short inputs.
//!
//! The mapping must never panic, and its result must be the one
//! `docs/behaviour.md` (§3, §4, §5) and `docs/wire.md` describe: a state
//! holding the request's identity and the response's fields; the server's own
//! error with its code, transience and (truncated) message; or, for an answer
//! the client cannot use, a *transient* `Internal` error naming the field at
//! fault, short whatever the answer held. A batch response with no answers or
//! more answers than entries is malformed as a whole; answers out of range or
//! repeated are ignored and counted.
#![no_main]

mod common;

use std::collections::HashSet;

use common::{check_error_renders, check_status_error, check_truncated};
use coordinator_api::{Code, Error, MessageIndex, PROTOCOL_VERSION, PrefixSecret, RegisterRequest};
use coordinator_grpc::convert::error_from_status;
use coordinator_services::convert::{
    MAX_ERROR_MESSAGE, MAX_PROTO_VERSION, error_from_code, error_from_wire, error_to_wire,
    state_from_wire,
};
use coordinator_services::fuzzing::{EntryKind, EntryOutcome, Matched, match_response};
use coordinator_services::proto::logdog as proto;
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
        if !error.msg.is_empty() {
            // The same error with a message past the limit.
            let long = proto::Error {
                msg: error.msg.repeat(MAX_ERROR_MESSAGE / error.msg.len() + 1),
                ..error
            };
            check_wire_error(&long);
        }
    }
    check_status(data);
});

/// The prefix of every malformed-answer error.
const BAD_RESPONSE: &str = "invalid response from the Coordinator: ";

/// A malformed-answer error is short: it names the field and a length, never
/// what the server sent.
const MAX_BAD_RESPONSE_MESSAGE: usize = 200;

/// `error` is a malformed-answer error: transient `Internal`, naming `field`
/// (`"invalid response from the Coordinator: FIELD: …"`), and short.
fn is_bad_response(error: &Error, field: &str) -> bool {
    error.code() == Code::Internal
        && error.is_transient()
        && error.is_retryable()
        && error
            .message()
            .starts_with(&format!("{BAD_RESPONSE}{field}: "))
        && error.message().len() <= MAX_BAD_RESPONSE_MESSAGE
}

/// The reference for `docs/wire.md`'s entry error mapping: the code (one that
/// is not an error code, `OK` or outside the canonical 0..=16, is `Unknown`),
/// transient if the flag is set or the code is transient. The message is the
/// server's (the code's name if empty), truncated.
fn check_wire_error(wire: &proto::Error) {
    let error = error_from_wire(wire);
    let code = match Code::from_i32(wire.grpc_code) {
        Code::Ok => Code::Unknown,
        code => code,
    };
    let transient = wire.transient || code.is_transient();
    assert_eq!(error.code(), code);
    assert_eq!(error.is_transient(), transient, "{wire:?}");
    assert_eq!(error.is_retryable(), transient, "{wire:?}");
    let message = if wire.msg.is_empty() {
        code.as_str()
    } else {
        &wire.msg
    };
    check_truncated(message, error.message());
    check_error_renders(&error);
    // A bare code and message (a status, a pRPC code): the same, transient
    // per the code alone.
    let bare = error_from_code(wire.grpc_code, &wire.msg);
    assert_eq!(bare.code(), code);
    assert_eq!(bare.is_transient(), code.is_transient());
    assert_eq!(bare.message(), error.message());
    // Back to the wire and again: the local error is a fixed point.
    let again = error_to_wire(&error);
    assert_eq!(again.grpc_code, code.as_i32());
    assert_eq!(again.transient, transient);
    assert_eq!(again.msg, error.message());
    assert_eq!(error_from_wire(&again), error);
}

/// A stream ID as LogDog issues it: 64 lowercase hex characters.
fn id_is_valid(id: &str) -> bool {
    id.len() == 64 && id.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}

fn check_register(request: &RegisterRequest, response: proto::RegisterStreamResponse) {
    let result = state_from_wire(request, response.clone());
    if let Some(wire) = &response.error {
        // The server's verdict, whatever else the response holds.
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
    let version_ok = wire_state.proto_version.len() <= MAX_PROTO_VERSION;
    match result {
        Ok(state) => {
            assert!(id_ok && secret_ok && version_ok, "accepted {response:?}");
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
            // A transient error naming one of the fields at fault.
            let about_id = !id_ok && is_bad_response(&error, "id");
            let about_secret = !secret_ok && is_bad_response(&error, "state.secret");
            let about_version = !version_ok && is_bad_response(&error, "state.proto_version");
            assert!(
                about_id || about_secret || about_version,
                "{error:?} for {response:?}"
            );
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
    for len in [1usize, 2, 3, 5, 16] {
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
            let Matched {
                outcomes,
                ignored,
                malformed,
            } = match_response(&kinds, batch.clone());
            assert_eq!(outcomes.len(), len);
            let answers = batch.resp.len();
            if answers == 0 || answers > len {
                check_malformed(&outcomes, ignored, malformed, answers, len);
                continue;
            }
            assert!(!malformed, "{answers} answers for {len} entries");
            // Ignored: every answer but the first at each index in range.
            let answered: HashSet<usize> = batch
                .resp
                .iter()
                .filter_map(|a| usize::try_from(a.index).ok())
                .filter(|&i| i < len)
                .collect();
            assert_eq!(ignored, answers - answered.len(), "{batch:?}");
            for (i, (outcome, &kind)) in outcomes.into_iter().zip(&kinds).enumerate() {
                check_outcome(request, &batch, i, kind, outcome);
            }
        }
    }
}

/// A response with no answers, or more answers than entries: every entry has
/// the same transient `Internal` error, and nothing is counted as ignored.
fn check_malformed(
    outcomes: &[EntryOutcome],
    ignored: usize,
    malformed: bool,
    answers: usize,
    len: usize,
) {
    assert!(malformed, "{answers} answers for {len} entries");
    assert_eq!(ignored, 0);
    let mut first: Option<&Error> = None;
    for (i, outcome) in outcomes.iter().enumerate() {
        let EntryOutcome::Answered(Err(error)) = outcome else {
            panic!("entry {i} of a malformed response: {outcome:?}");
        };
        check_error_renders(error);
        assert_eq!(error.code(), Code::Internal);
        assert!(error.is_transient() && error.is_retryable(), "{error:?}");
        let says = if answers == 0 {
            "with no entries".to_owned()
        } else {
            format!("resp: {answers} answers for a batch of {len} entries")
        };
        assert!(error.message().contains(&says), "{error:?}");
        if let Some(first) = first {
            assert_eq!(error, first, "entry {i}");
        }
        first = Some(error);
    }
}

/// Entry `i`'s outcome against the reference: the first answer whose index is
/// `i` settles it; without one it is unanswered.
fn check_outcome(
    request: &RegisterRequest,
    batch: &proto::BatchResponse,
    i: usize,
    kind: EntryKind,
    outcome: EntryOutcome,
) {
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
            // Handed over as it is; the caller's adapter maps it.
            let got = reply.expect("a register answer").expect("its response");
            assert_eq!(&got, response);
            check_register(request, got);
        }
        (EntryKind::Terminate, None) => assert!(matches!(reply, Ok(None)), "{reply:?}"),
        // A RegisterStream entry answered with no value, or an answer of the
        // wrong kind: malformed, so transient.
        (_, _) => {
            let error = reply.expect_err("an answer of the wrong kind");
            assert!(is_bad_response(&error, "resp.value"), "{error:?}");
            check_error_renders(&error);
        }
    }
}

/// A status the server could send (any code, any message) maps as
/// `common::check_status_error` says; the message is also tried repeated past
/// the truncation limit.
fn check_status(data: &[u8]) {
    let Some((code, message)) = data.split_first_chunk::<4>() else {
        return;
    };
    let code = tonic::Code::from_i32(i32::from_le_bytes(*code));
    let message = String::from_utf8_lossy(message).into_owned();
    let status = tonic::Status::new(code, message.clone());
    check_status_error(&status, &error_from_status(&status));
    if !message.is_empty() {
        let long = message.repeat(MAX_ERROR_MESSAGE / message.len() + 1);
        let status = tonic::Status::new(code, long);
        check_status_error(&status, &error_from_status(&status));
    }
}
