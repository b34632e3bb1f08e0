//! Conversions between the wire (`logdog` protobuf messages, `tonic::Status`) and
//! the [`coordinator_api`] types, in one place.
//!
//! Errors follow `wire.md`: a status keeps its code and message and is transient
//! iff the code is ([`Code::is_transient`]); a batch entry's [`proto::Error`] is
//! transient iff its flag is set or its code is transient. Failures of the
//! transport itself (connection refused or reset, a dead channel) are
//! `Unavailable`, transient, whatever code tonic gave them.
//!
//! Nothing here panics on anything a server sends: a malformed response is a
//! permanent `Internal` error whose message names the field at fault.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::io;

use coordinator_api::{
    Code, Error, LogStreamState, MessageIndex, PROTOCOL_VERSION, PrefixSecret, RegisterRequest,
    StreamId, TerminateRequest,
};

use crate::proto::logdog as proto;

/// The local error for a `tonic::Status` (received from the server, or made by
/// tonic for a local failure).
///
/// Keeps the code and message; transient iff the code is. A status whose code
/// is `OK` is not an error: it becomes `Unknown` (see [`error_from_wire`]).
/// An expired `grpc-timeout` (tonic reports it as `Cancelled`, "Timeout
/// expired", on either side) is `DeadlineExceeded`, transient. A status that tonic
/// made for a failure of the connection (it has a source error: an I/O error,
/// a refused or reset connection, a cancelled HTTP/2 stream, a dead channel) is
/// `Unavailable` and transient, since the request may well succeed on a new
/// connection. A status received from the server never has a source.
pub fn error_from_status(status: &tonic::Status) -> Error {
    let code = code_from_tonic(status.code());
    let message = if status.message().is_empty() {
        code.as_str()
    } else {
        status.message()
    };
    if is_timeout(status) {
        return Error::deadline_exceeded(format!("the call timed out ({code}): {message}"));
    }
    if is_transport_failure(status) {
        return Error::unavailable(format!("transport failure ({code}): {message}"));
    }
    Error::new(code, message)
}

/// The local error for a batch entry's (or a response's) [`proto::Error`]:
/// transient iff its `transient` flag is set or its code is transient. A code
/// that is not an error code, `OK` (0) or one outside the 17 canonical codes,
/// is `Unknown` (so transient): an [`Error`] never has code `OK`, which would
/// tell its caller that a failed call succeeded.
pub fn error_from_wire(error: &proto::Error) -> Error {
    let code = error_code(error.grpc_code);
    let message = if error.msg.is_empty() {
        code.as_str()
    } else {
        error.msg.as_str()
    };
    let local = Error::new(code, message);
    if error.transient && !local.is_transient() {
        local.with_transient(true)
    } else {
        local
    }
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

/// The `tonic::Status` for a local error (what a server answers): the error's
/// code and message.
pub fn error_to_status(error: &Error) -> tonic::Status {
    tonic::Status::new(
        tonic::Code::from_i32(error.code().as_i32()),
        error.message(),
    )
}

fn code_from_tonic(code: tonic::Code) -> Code {
    error_code(code as i32)
}

/// The code of an error from its numeric value: `Unknown` for anything that is
/// not one of the 16 error codes (1..=16), `OK` included.
fn error_code(value: i32) -> Code {
    match Code::from_i32(value) {
        Code::Ok => Code::Unknown,
        code => code,
    }
}

/// True if `status` reports an expired `grpc-timeout`: tonic's channel and
/// server both enforce it and report it as `Cancelled` ("Timeout expired"),
/// which is a deadline, not a cancellation.
fn is_timeout(status: &tonic::Status) -> bool {
    let mut chain = std::iter::successors(status.source(), |&err| err.source());
    chain.any(|err| err.is::<tonic::TimeoutExpired>())
        || (status.code() == tonic::Code::Cancelled
            && status.message() == tonic::TimeoutExpired(()).to_string())
}

/// True if tonic made `status` for a failure of the connection rather than
/// receiving it from the server.
fn is_transport_failure(status: &tonic::Status) -> bool {
    // The generated client's wording when the service (the channel) failed.
    if status.code() == tonic::Code::Unknown
        && status.message().starts_with("Service was not ready")
    {
        return true;
    }
    let chain = || std::iter::successors(status.source(), |&err| err.source());
    if chain().next().is_none() {
        // Received from the server: statuses made locally carry their cause.
        return false;
    }
    if chain().any(|err| err.is::<tonic::Status>()) {
        // A status nested in a local error chain (e.g. from a tower layer):
        // trust its code.
        return false;
    }
    let transport = chain().any(|err| {
        err.is::<ServiceError>()
            || err.is::<tonic::transport::Error>()
            || err.is::<tonic::ConnectError>()
            || err.downcast_ref::<io::Error>().is_some_and(|io| {
                matches!(
                    io.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::NotConnected
                        | io::ErrorKind::BrokenPipe
                        | io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::TimedOut
                )
            })
    });
    // Otherwise tonic made it from an HTTP/2 or hyper error: Cancelled (the
    // connection closed), Unknown or Internal are connection failures.
    transport
        || matches!(
            status.code(),
            tonic::Code::Cancelled | tonic::Code::Unknown | tonic::Code::Internal
        )
}

/// An error from the underlying HTTP/2 service (a transport failure). A
/// concrete type rather than a boxed trait object, so that the client's futures
/// are provably `Send`; its source is the service's error, so tonic still
/// finds connect errors and statuses in the chain.
#[derive(Debug)]
pub(crate) struct ServiceError(pub(crate) tonic::codegen::StdError);

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl StdError for ServiceError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }
}

/// A permanent `Internal` error for a malformed response: the server answered
/// something this client cannot use; asking again would not help.
pub(crate) fn bad_response(field: &str, problem: impl std::fmt::Display) -> Error {
    Error::new(
        Code::Internal,
        format!("invalid response from the Coordinator: {field}: {problem}"),
    )
    .with_transient(false)
}

/// The wire request for `request` (no validation needed: the request's types
/// are validated). An absent terminal index is `-1`.
pub(crate) fn register_to_wire(
    request: &RegisterRequest,
    desc: &[u8],
) -> proto::RegisterStreamRequest {
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
pub(crate) fn terminate_to_wire(request: &TerminateRequest) -> proto::TerminateStreamRequest {
    proto::TerminateStreamRequest {
        project: request.project.as_str().to_owned(),
        id: request.id.as_str().to_owned(),
        secret: request.secret.as_bytes().to_vec(),
        terminal_index: request.terminal_index.to_wire(),
    }
}

/// Maps a `RegisterStream` response to the stream's state, per `semantics.md`
/// §4: the request's project and path; ID, protocol version, secret, terminal
/// index (negative: absent), archived and purged from the response.
///
/// Errors: the response's own `error` field (as [`error_from_wire`]); a missing
/// state, an invalid ID or a secret of the wrong length are permanent
/// `Internal` errors naming the field. Never panics, whatever the response
/// holds. [`GrpcCoordinator`](crate::GrpcCoordinator) and
/// [`BatchingClient`](crate::BatchingClient) map every response with it.
pub fn state_from_wire(
    request: &RegisterRequest,
    response: proto::RegisterStreamResponse,
) -> Result<LogStreamState, Error> {
    if let Some(error) = &response.error {
        return Err(error_from_wire(error));
    }
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
    fn other_proto_version_is_kept() {
        let mut s = wire_state();
        s.proto_version = "2".into();
        let state = state_from_wire(&request(None), response(s)).unwrap();
        assert_eq!(state.proto_version, "2");
    }

    #[test]
    fn missing_state_is_permanent() {
        let mut r = response(wire_state());
        r.state = None;
        let e = state_from_wire(&request(None), r).unwrap_err();
        assert_eq!(e.code(), Code::Internal);
        assert!(!e.is_transient());
        assert!(e.message().contains("missing stream state"), "{e}");
    }

    #[test]
    fn wrong_secret_length_names_the_field_not_the_bytes() {
        for len in [0, 35, 37] {
            let mut s = wire_state();
            s.secret = vec![0x77; len];
            let e = state_from_wire(&request(None), response(s)).unwrap_err();
            assert!(!e.is_transient());
            assert!(e.message().contains("state.secret"), "{e}");
            assert!(e.message().contains(&format!("{len} bytes")), "{e}");
            assert!(
                !e.message().contains("77") && !e.message().contains('w'),
                "{e}"
            );
        }
    }

    #[test]
    fn invalid_id_is_permanent() {
        for id in ["", "has space", "caf\u{e9}"] {
            let mut r = response(wire_state());
            r.id = id.into();
            let e = state_from_wire(&request(None), r).unwrap_err();
            assert_eq!(e.code(), Code::Internal);
            assert!(!e.is_transient());
            assert!(e.message().contains("id:"), "{e}");
        }
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
    fn status_codes_keep_code_message_and_transience() {
        for code in Code::ALL {
            if code == Code::Ok {
                continue;
            }
            let status = tonic::Status::new(tonic::Code::from_i32(code.as_i32()), "msg");
            let e = error_from_status(&status);
            assert_eq!(e.code(), code);
            assert_eq!(e.message(), "msg");
            assert_eq!(e.is_transient(), code.is_transient(), "{code}");
        }
        let e = error_from_status(&tonic::Status::new(tonic::Code::NotFound, ""));
        assert_eq!(e.message(), "NOT_FOUND");
    }

    #[test]
    fn locally_made_transport_statuses_are_unavailable() {
        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "reset by peer");
        let status = tonic::Status::from_error(Box::new(reset));
        let e = error_from_status(&status);
        assert_eq!(e.code(), Code::Unavailable);
        assert!(e.is_transient());
        assert!(e.message().contains("reset by peer"), "{e}");

        let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        let status = tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        let e = error_from_status(&status);
        assert_eq!(e.code(), Code::Unavailable);
        assert!(e.is_transient());

        let not_ready = tonic::Status::unknown("Service was not ready: transport error");
        assert_eq!(error_from_status(&not_ready).code(), Code::Unavailable);

        // An expired grpc-timeout, enforced by tonic's channel or server.
        let local = tonic::Status::from_error(Box::new(tonic::TimeoutExpired(())));
        let e = error_from_status(&local);
        assert_eq!(e.code(), Code::DeadlineExceeded);
        assert!(e.is_transient());
        let remote = tonic::Status::cancelled("Timeout expired");
        assert_eq!(error_from_status(&remote).code(), Code::DeadlineExceeded);

        // A Cancelled status received from the server stays Cancelled (permanent).
        let cancelled = error_from_status(&tonic::Status::cancelled("by server"));
        assert_eq!(cancelled.code(), Code::Cancelled);
        assert!(!cancelled.is_transient());
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
        let odd = error_from_wire(&proto::Error {
            grpc_code: 99,
            transient: false,
            msg: String::new(),
        });
        assert_eq!(odd.code(), Code::Unknown);
        assert!(odd.is_transient());
    }

    #[test]
    fn local_errors_to_wire_and_back() {
        let e = Error::new(Code::FailedPrecondition, "x").with_transient(true);
        let wire = error_to_wire(&e);
        assert_eq!(wire.grpc_code, 9);
        assert!(wire.transient);
        assert_eq!(error_from_wire(&wire), e);
        let status = error_to_status(&Error::not_found("gone"));
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(error_from_status(&status), Error::not_found("gone"));
    }
}
