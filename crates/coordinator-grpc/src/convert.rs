//! The mapping between `tonic::Status` and [`coordinator_api::Error`]. The
//! wire-message conversions, the same for every transport, are
//! `coordinator_services::convert`'s (re-exported here).
//!
//! A status received from the server keeps its code and message (truncated to
//! a few KiB) and is transient iff the code is. Failures of the transport
//! itself (connection refused or reset, a dead channel) are `Unavailable`,
//! transient, whatever code tonic gave them. A response over the client's
//! size limit is a transient `Unavailable` error that is not retried; a
//! request over it is a transient `Internal` error that is not retried.

use std::error::Error as StdError;
use std::io;

use coordinator_api::Error;

pub use coordinator_services::convert::*;

/// The local error for a `tonic::Status` (received from the server, or made by
/// tonic for a local failure).
///
/// Keeps the code and message (truncated to [`MAX_ERROR_MESSAGE`] bytes);
/// transient iff the code is. A status whose code is `OK` is not an error: it
/// becomes `Unknown`. An expired `grpc-timeout` (tonic reports it as
/// `Cancelled`, "Timeout expired", on either side) is `DeadlineExceeded`,
/// transient. A status that tonic made for a failure of the connection (it
/// has a source error: an I/O error, a refused or reset connection, a
/// cancelled HTTP/2 stream, a dead channel) is `Unavailable` and transient,
/// since the request may well succeed on a new connection. A status received
/// from the server never has a source. A message over tonic's size limits is
/// a local failure, not the server's verdict: transient, and not retried.
pub fn error_from_status(status: &tonic::Status) -> Error {
    let code = error_code(status.code() as i32);
    let message = truncate_message(if status.message().is_empty() {
        code.as_str()
    } else {
        status.message()
    });
    if is_timeout(status) {
        return Error::deadline_exceeded(format!("the call timed out ({code}): {message}"));
    }
    if is_transport_failure(status) {
        return Error::unavailable(format!("transport failure ({code}): {message}"));
    }
    if status.code() == tonic::Code::OutOfRange {
        if message.starts_with("Error, decoded message length too large") {
            return Error::unavailable(format!("the response is over the size limit: {message}"))
                .with_retry(false);
        }
        if message.starts_with("Error, encoded message length too large") {
            return Error::internal(format!("the request is over the size limit: {message}"))
                .with_retry(false);
        }
    }
    Error::new(code, message)
}

/// The `tonic::Status` for a local error (what a server answers): the error's
/// code and message.
pub fn error_to_status(error: &Error) -> tonic::Status {
    tonic::Status::new(
        tonic::Code::from_i32(error.code().as_i32()),
        error.message(),
    )
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

#[cfg(test)]
mod tests {
    use coordinator_api::Code;

    use super::*;

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
    fn local_errors_to_status_and_back() {
        let status = error_to_status(&Error::not_found("gone"));
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(error_from_status(&status), Error::not_found("gone"));
    }

    #[test]
    fn every_connection_failure_kind_is_unavailable_and_server_statuses_are_not() {
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::NotConnected,
            io::ErrorKind::BrokenPipe,
            io::ErrorKind::UnexpectedEof,
            io::ErrorKind::TimedOut,
        ] {
            let status = tonic::Status::from_error(Box::new(io::Error::new(kind, "x")));
            assert_eq!(
                error_from_status(&status).code(),
                Code::Unavailable,
                "{kind:?}"
            );
        }
        // The same codes received from the server (no source) keep their code.
        for code in [
            tonic::Code::Unknown,
            tonic::Code::Internal,
            tonic::Code::InvalidArgument,
        ] {
            let e = error_from_status(&tonic::Status::new(code, "from the server"));
            assert_eq!(e.code() as i32, code as i32);
            assert_eq!(e.message(), "from the server");
        }
        // A local status whose cause is not a connection failure, with a code
        // that is not a connection code, keeps its code.
        let other = io::Error::new(io::ErrorKind::PermissionDenied, "local policy");
        let mut status = tonic::Status::from_error(Box::new(other));
        assert_eq!(
            error_from_status(&status).code(),
            Code::Unavailable,
            "{status:?}"
        );
        status = tonic::Status::new(tonic::Code::PermissionDenied, "local policy");
        assert_eq!(error_from_status(&status).code(), Code::PermissionDenied);
    }

    #[test]
    fn size_limit_failures_are_local_transient_and_not_retried() {
        let decoded = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 40000000 bytes, the limit is: 33554432 bytes",
        );
        let e = error_from_status(&decoded);
        assert_eq!(e.code(), Code::Unavailable);
        assert!(e.is_transient() && !e.is_retryable(), "{e}");
        let encoded = tonic::Status::out_of_range(
            "Error, encoded message length too large: found 1 bytes, the limit is: 0 bytes",
        );
        let e = error_from_status(&encoded);
        assert_eq!(e.code(), Code::Internal);
        assert!(e.is_transient() && !e.is_retryable(), "{e}");
        // Any other OutOfRange is the server's verdict.
        let e = error_from_status(&tonic::Status::out_of_range("index past the end"));
        assert_eq!(e.code(), Code::OutOfRange);
        assert!(!e.is_transient());
    }

    #[test]
    fn long_server_messages_are_truncated() {
        let e = error_from_status(&tonic::Status::not_found("n".repeat(1 << 20)));
        assert!(e.message().len() <= MAX_ERROR_MESSAGE);
        assert!(e.message().ends_with("[truncated]"));
    }

    /// A locally made status with `code` whose cause is `source`.
    fn local(code: tonic::Code, source: Box<dyn StdError + Send + Sync>) -> tonic::Status {
        let mut status = tonic::Status::new(code, "local");
        status.set_source(std::sync::Arc::from(source));
        status
    }

    #[test]
    fn each_kind_of_transport_cause_makes_any_code_unavailable() {
        // Each wraps a cause that is not itself a connection failure, so that
        // each kind has to be recognised on its own.
        let other = || io::Error::new(io::ErrorKind::PermissionDenied, "policy");
        let causes: Vec<(&str, Box<dyn StdError + Send + Sync>)> = vec![
            ("service", Box::new(ServiceError(Box::new(other())))),
            ("connect", Box::new(tonic::ConnectError(Box::new(other())))),
            (
                "io",
                Box::new(io::Error::new(io::ErrorKind::UnexpectedEof, "eof")),
            ),
        ];
        for (what, cause) in causes {
            let e = error_from_status(&local(tonic::Code::InvalidArgument, cause));
            assert_eq!(e.code(), Code::Unavailable, "{what}: {e}");
        }
        // A local cause that is not a connection failure keeps a code other than
        // the connection codes.
        let policy = io::Error::new(io::ErrorKind::PermissionDenied, "policy");
        let e = error_from_status(&local(tonic::Code::InvalidArgument, Box::new(policy)));
        assert_eq!(e.code(), Code::InvalidArgument);
    }

    #[test]
    fn a_service_error_shows_and_chains_its_cause() {
        let e = ServiceError(Box::new(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "reset by peer",
        )));
        assert_eq!(e.to_string(), "reset by peer");
        let source = e.source().expect("the cause is the source");
        assert!(source.is::<io::Error>());
    }
}
