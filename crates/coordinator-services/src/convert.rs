//! Conversions between the `logdog` wire messages and the [`coordinator_api`]
//! types, in one place, for every transport.
//!
//! - A batch entry's (or a response's) [`proto::Error`] is the server's verdict:
//!   it keeps its code and message (truncated to [`MAX_ERROR_MESSAGE`] bytes) and
//!   is transient iff its flag is set or its code is transient.
//! - An answer this client cannot use (a missing state, an ID that is not what
//!   LogDog issues, a secret of the wrong length, an oversized protocol version)
//!   is *not* the server's verdict about the stream: it is a transient
//!   `Internal` error naming the field ([`bad_response`]), so it is retried and
//!   never kept by a cache.
//!
//! Nothing here panics on anything a server sends.

use std::borrow::Cow;
use std::fmt;

use coordinator_api::{
    Code, Error, LogStreamState, MessageIndex, PROTOCOL_VERSION, PrefixSecret, RegisterRequest,
    StreamId, TerminateRequest,
};

use crate::proto::logdog as proto;

/// The most bytes of a server's error message that are kept (in an [`Error`]
/// or a log line). A longer message is cut at a character boundary and marked
/// `"… [truncated]"`.
pub const MAX_ERROR_MESSAGE: usize = 4096;

/// The longest protocol version string accepted in a server's answer.
pub const MAX_PROTO_VERSION: usize = 32;

/// The local error for a batch entry's (or a response's) [`proto::Error`]:
/// transient iff its `transient` flag is set or its code is transient. A code
/// that is not an error code, `OK` (0) or one outside the 17 canonical codes,
/// is `Unknown` (so transient): an [`Error`] never has code `OK`, which would
/// tell its caller that a failed call succeeded. The message is truncated to
/// [`MAX_ERROR_MESSAGE`] bytes.
pub fn error_from_wire(error: &proto::Error) -> Error {
    let local = error_from_code(error.grpc_code, &error.msg);
    if error.transient && !local.is_transient() {
        local.with_transient(true)
    } else {
        local
    }
}

/// The local error for a status code and message received from a server (a
/// gRPC status, a pRPC `X-Prpc-Grpc-Code`): the code (`Unknown` for `OK` or a
/// value outside the canonical codes), the message truncated to
/// [`MAX_ERROR_MESSAGE`] bytes (the code's name if empty), transient iff the
/// code is.
pub fn error_from_code(code: i32, message: &str) -> Error {
    let code = error_code(code);
    let message = if message.is_empty() {
        Cow::Borrowed(code.as_str())
    } else {
        truncate_message(message)
    };
    Error::new(code, message)
}

/// The wire [`proto::Error`] for a local error (what a server puts in a batch
/// entry): the error's code and message, `transient` as the error says.
pub fn error_to_wire(error: &Error) -> proto::Error {
    proto::Error {
        grpc_code: error.code().as_i32(),
        transient: error.is_transient(),
        msg: error.message().to_owned(),
    }
}

/// The code of an error from its numeric value: `Unknown` for anything that is
/// not one of the 16 error codes (1..=16), `OK` included.
pub fn error_code(value: i32) -> Code {
    match Code::from_i32(value) {
        Code::Ok => Code::Unknown,
        code => code,
    }
}

/// `message`, cut to at most [`MAX_ERROR_MESSAGE`] bytes (at a character
/// boundary) and marked as truncated if it was longer.
pub fn truncate_message(message: &str) -> Cow<'_, str> {
    if message.len() <= MAX_ERROR_MESSAGE {
        return Cow::Borrowed(message);
    }
    const MARK: &str = "… [truncated]";
    let mut end = MAX_ERROR_MESSAGE - MARK.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{MARK}", &message[..end]))
}

/// A transient `Internal` error for a malformed answer: the server answered
/// something this client cannot use. It is not the server's verdict about the
/// stream, so it is retried and never kept as the stream's answer. The message
/// names the field at fault.
pub fn bad_response(field: &str, problem: impl fmt::Display) -> Error {
    Error::internal(format!(
        "invalid response from the Coordinator: {field}: {problem}"
    ))
}

/// The wire request for `request` (no validation needed: the request's types
/// are validated). An absent terminal index is `-1`.
pub fn register_to_wire(request: &RegisterRequest, desc: &[u8]) -> proto::RegisterStreamRequest {
    proto::RegisterStreamRequest {
        project: request.project.as_str().to_owned(),
        secret: request.secret.as_bytes().to_vec(),
        proto_version: request.proto_version.as_ref().to_owned(),
        desc: desc.to_vec(),
        terminal_index: MessageIndex::optional_to_wire(request.terminal_index),
    }
}

/// The wire request for `request`. The path is not sent (it is for cache
/// lookup only).
pub fn terminate_to_wire(request: &TerminateRequest) -> proto::TerminateStreamRequest {
    proto::TerminateStreamRequest {
        project: request.project.as_str().to_owned(),
        id: request.id.as_str().to_owned(),
        secret: request.secret.as_bytes().to_vec(),
        terminal_index: request.terminal_index.to_wire(),
    }
}

/// True if `id` is what LogDog issues as a stream ID: 64 lowercase hex
/// characters (the SHA-256 of the stream's path).
pub fn is_logdog_id(id: &str) -> bool {
    // Without an early exit the loop compiles to vector compares: this runs on
    // every answer, and every answer is normally valid.
    id.len() == 64
        && id.bytes().fold(true, |ok, b| {
            ok & ((b.wrapping_sub(b'0') < 10) | (b.wrapping_sub(b'a') < 6))
        })
}

/// Maps a `RegisterStream` response to the stream's state (the behaviour
/// contract, `docs/behaviour.md`): the request's project and path; ID,
/// protocol version, secret, terminal index (negative: absent), archived and
/// purged from the response.
///
/// Errors: the response's own `error` field (the server's verdict, as
/// [`error_from_wire`]). A missing state, an ID that is not 64 lowercase hex
/// characters, a protocol version longer than [`MAX_PROTO_VERSION`] bytes or a
/// secret of the wrong length are malformed answers: transient `Internal`
/// errors naming the field ([`bad_response`]). Never panics, whatever the
/// response holds, and keeps nothing of unbounded size.
pub fn state_from_wire(
    request: &RegisterRequest,
    response: proto::RegisterStreamResponse,
) -> Result<LogStreamState, Error> {
    state_from_checked(request, check_register_response(response)?)
}

/// [`state_from_wire`] for a response that already passed
/// [`check_register_response`] (in the retry layer). Still never panics: a
/// response that did not pass is still an error here, only a less precise one.
pub(crate) fn state_from_checked(
    request: &RegisterRequest,
    response: proto::RegisterStreamResponse,
) -> Result<LogStreamState, Error> {
    let Some(state) = response.state else {
        return Err(bad_response("state", "missing stream state"));
    };
    let id = StreamId::try_from(response.id).map_err(|e| bad_response("id", e))?;
    let secret =
        PrefixSecret::from_bytes(&state.secret).map_err(|e| bad_response("state.secret", e))?;
    let proto_version = if state.proto_version == PROTOCOL_VERSION {
        Cow::Borrowed(PROTOCOL_VERSION)
    } else {
        Cow::Owned(state.proto_version)
    };
    Ok(LogStreamState {
        project: request.project.clone(),
        path: request.path.clone(),
        id,
        proto_version,
        secret,
        terminal_index: MessageIndex::optional_from_wire(state.terminal_index),
        archived: state.archived,
        purged: state.purged,
    })
}

/// Checks a `RegisterStream` response before anything of it is used or kept:
/// its own `error` field is the error (the server's verdict); a missing state,
/// an ID that is not 64 lowercase hex characters, a secret of the wrong length
/// or a protocol version longer than [`MAX_PROTO_VERSION`] bytes is a
/// malformed answer ([`bad_response`], transient). Returns the response
/// unchanged otherwise.
pub fn check_register_response(
    response: proto::RegisterStreamResponse,
) -> Result<proto::RegisterStreamResponse, Error> {
    if let Some(error) = &response.error {
        return Err(error_from_wire(error));
    }
    let Some(state) = &response.state else {
        return Err(bad_response("state", "missing stream state"));
    };
    if !is_logdog_id(&response.id) {
        return Err(bad_response(
            "id",
            format_args!(
                "not 64 lowercase hex characters ({} bytes)",
                response.id.len()
            ),
        ));
    }
    if let Err(e) = PrefixSecret::from_bytes(&state.secret) {
        return Err(bad_response("state.secret", e));
    }
    if state.proto_version.len() > MAX_PROTO_VERSION {
        return Err(bad_response(
            "state.proto_version",
            format_args!(
                "{} bytes, more than {MAX_PROTO_VERSION}",
                state.proto_version.len()
            ),
        ));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: [u8; 36] = [0x42; 36];

    fn request(terminal: Option<i64>) -> RegisterRequest {
        RegisterRequest::parse("proj", "a/b/+/c/d", &SECRET, terminal).unwrap()
    }

    fn response(state: proto::InternalLogStreamState) -> proto::RegisterStreamResponse {
        proto::RegisterStreamResponse {
            id: "f53fe51cc97b9fbf00e69a388bfd079168d1e15c3fe708e44f049dc9688f52ad".into(),
            state: Some(state),
            error: None,
        }
    }

    fn wire_state() -> proto::InternalLogStreamState {
        proto::InternalLogStreamState {
            proto_version: "1".into(),
            secret: vec![9; 36],
            terminal_index: -1,
            archived: false,
            purged: false,
        }
    }

    #[test]
    fn register_request_to_wire() {
        let wire = register_to_wire(&request(None), b"desc");
        assert_eq!(wire.project, "proj");
        assert_eq!(wire.secret, SECRET);
        assert_eq!(wire.proto_version, "1");
        assert_eq!(wire.desc, b"desc");
        assert_eq!(wire.terminal_index, -1);
        assert_eq!(register_to_wire(&request(Some(7)), b"").terminal_index, 7);
    }

    #[test]
    fn terminate_request_to_wire() {
        let req = TerminateRequest::parse("proj", "a/+/b", "abc", &SECRET, 12).unwrap();
        let wire = terminate_to_wire(&req);
        assert_eq!(wire.project, "proj");
        assert_eq!(wire.id, "abc");
        assert_eq!(wire.secret, SECRET);
        assert_eq!(wire.terminal_index, 12);
    }

    #[test]
    fn state_carries_request_identity_and_response_fields() {
        let mut s = wire_state();
        s.terminal_index = 41;
        s.archived = true;
        s.purged = true;
        let state = state_from_wire(&request(None), response(s)).unwrap();
        assert_eq!(state.project.as_str(), "proj");
        assert_eq!(state.path.as_str(), "a/b/+/c/d");
        assert_eq!(state.id.as_str().len(), 64);
        assert_eq!(state.secret, PrefixSecret::from([9; 36]));
        assert_eq!(state.terminal_index, Some(MessageIndex::from(41)));
        assert!(state.archived && state.purged);
        assert!(matches!(state.proto_version, Cow::Borrowed("1")));
    }

    #[test]
    fn negative_terminal_index_is_absent() {
        for t in [-1, -2, i64::MIN] {
            let mut s = wire_state();
            s.terminal_index = t;
            let state = state_from_wire(&request(None), response(s)).unwrap();
            assert_eq!(state.terminal_index, None);
        }
    }

    #[test]
    fn other_short_proto_version_is_kept_long_one_is_malformed() {
        let mut s = wire_state();
        s.proto_version = "2".into();
        let state = state_from_wire(&request(None), response(s)).unwrap();
        assert_eq!(state.proto_version, "2");
        let mut s = wire_state();
        s.proto_version = "v".repeat(MAX_PROTO_VERSION + 1);
        let e = state_from_wire(&request(None), response(s)).unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(e.message().contains("state.proto_version"), "{e}");
        assert!(!e.message().contains("vvvv"), "{e}");
    }

    #[test]
    fn missing_state_is_a_transient_malformed_answer() {
        let mut r = response(wire_state());
        r.state = None;
        let e = state_from_wire(&request(None), r).unwrap_err();
        assert_eq!(e.code(), Code::Internal);
        assert!(e.is_transient());
        assert!(e.message().contains("missing stream state"), "{e}");
    }

    #[test]
    fn wrong_secret_length_names_the_field_not_the_bytes() {
        for len in [0, 35, 37] {
            let mut s = wire_state();
            s.secret = vec![0x77; len];
            let e = state_from_wire(&request(None), response(s)).unwrap_err();
            assert!(e.is_transient());
            assert!(e.message().contains("state.secret"), "{e}");
            assert!(e.message().contains(&format!("{len} bytes")), "{e}");
            assert!(
                !e.message().contains("77") && !e.message().contains('w'),
                "{e}"
            );
        }
    }

    #[test]
    fn ids_other_than_64_lowercase_hex_are_malformed() {
        let long = "a".repeat(1 << 20);
        let upper = "F".repeat(64);
        for id in ["", "has space", "caf\u{e9}", "abc", &upper, &long] {
            let mut r = response(wire_state());
            r.id = id.into();
            let e = state_from_wire(&request(None), r).unwrap_err();
            assert_eq!(e.code(), Code::Internal);
            assert!(e.is_transient());
            assert!(e.message().contains("id:"), "{e}");
            assert!(e.message().len() < 200, "the ID is not echoed");
        }
        assert!(is_logdog_id(&"0123456789abcdef".repeat(4)));
    }

    #[test]
    fn response_error_field_is_the_error() {
        let mut r = response(wire_state());
        r.error = Some(proto::Error {
            grpc_code: Code::FailedPrecondition.as_i32(),
            transient: true,
            msg: "busy".into(),
        });
        let e = state_from_wire(&request(None), r).unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(e.is_transient());
        assert_eq!(e.message(), "busy");
    }

    #[test]
    fn wire_errors_use_flag_or_code() {
        let cases = [
            (Code::NotFound, false, false),
            (Code::NotFound, true, true),
            (Code::Unavailable, false, true),
            (Code::Internal, true, true),
            (Code::InvalidArgument, false, false),
        ];
        for (code, flag, transient) in cases {
            let e = error_from_wire(&proto::Error {
                grpc_code: code.as_i32(),
                transient: flag,
                msg: "m".into(),
            });
            assert_eq!(e.code(), code);
            assert_eq!(e.is_transient(), transient, "{code} {flag}");
            assert_eq!(e.message(), "m");
        }
        for code in [0, 17, -1, i32::MAX] {
            let odd = error_from_wire(&proto::Error {
                grpc_code: code,
                transient: false,
                msg: String::new(),
            });
            assert_eq!(odd.code(), Code::Unknown);
            assert!(odd.is_transient());
            assert_eq!(odd.message(), "UNKNOWN");
        }
    }

    #[test]
    fn long_messages_are_truncated_and_marked() {
        let long = "é".repeat(MAX_ERROR_MESSAGE); // 2 bytes each
        let e = error_from_code(Code::NotFound.as_i32(), &long);
        assert!(
            e.message().len() <= MAX_ERROR_MESSAGE,
            "{}",
            e.message().len()
        );
        assert!(e.message().ends_with("[truncated]"));
        let short = "x".repeat(MAX_ERROR_MESSAGE);
        assert_eq!(truncate_message(&short), short.as_str());
        let e = error_from_wire(&proto::Error {
            grpc_code: 5,
            transient: false,
            msg: "y".repeat(10 * MAX_ERROR_MESSAGE),
        });
        assert!(e.message().len() <= MAX_ERROR_MESSAGE);
    }

    #[test]
    fn local_errors_to_wire_and_back() {
        let e = Error::new(Code::FailedPrecondition, "x").with_transient(true);
        let wire = error_to_wire(&e);
        assert_eq!(wire.grpc_code, 9);
        assert!(wire.transient);
        assert_eq!(error_from_wire(&wire), e);
    }
}
