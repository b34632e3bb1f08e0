//! Oracle pieces shared by `response_mapping` and `status_header`: the
//! reference for a server's status (code and message) mapped to a local
//! error, and the truncation rule for the messages a server sends.
//!
//! Written from `docs/behaviour.md` §3 and `docs/wire.md` ("Status and error
//! mapping"), and from the documented exceptions of
//! `coordinator_grpc::convert::error_from_status`; not from the library's code.

use coordinator_api::{Code, Error};
use coordinator_services::convert::MAX_ERROR_MESSAGE;

/// What a truncated message ends with.
pub const TRUNCATION_MARK: &str = "… [truncated]";

/// Every error the client produces is usable: its code is not `OK` (which
/// `Code` documents as "not an error"), its message says something, and it
/// renders.
pub fn check_error_renders(error: &Error) {
    assert_ne!(error.code(), Code::Ok, "an error with code OK: {error:?}");
    assert!(!error.message().is_empty(), "{error:?}");
    let _ = (error.to_string(), format!("{error:?}"));
}

/// `kept` is `original` as the client keeps a server's message: unchanged up
/// to `MAX_ERROR_MESSAGE` bytes; longer, a prefix of it cut at a character
/// boundary (so at most 3 bytes short of the room left by the mark), followed
/// by the mark, `MAX_ERROR_MESSAGE` bytes at most in all.
pub fn check_truncated(original: &str, kept: &str) {
    if original.len() <= MAX_ERROR_MESSAGE {
        assert_eq!(kept, original, "a short message is kept as it is");
        return;
    }
    assert!(
        kept.len() <= MAX_ERROR_MESSAGE,
        "a {}-byte message was kept as {} bytes",
        original.len(),
        kept.len()
    );
    let prefix = kept
        .strip_suffix(TRUNCATION_MARK)
        .unwrap_or_else(|| panic!("a truncated message is not marked: …{:?}", tail(kept)));
    assert!(original.starts_with(prefix), "not a prefix of the original");
    assert!(
        prefix.len() + 3 >= MAX_ERROR_MESSAGE - TRUNCATION_MARK.len(),
        "cut too short: {} bytes kept of {}",
        prefix.len(),
        original.len()
    );
}

fn tail(s: &str) -> &str {
    let mut start = s.len().saturating_sub(40);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// The local code for a code a server sent: `OK` (not an error) is `Unknown`.
pub fn local_code(code: tonic::Code) -> Code {
    match Code::from_i32(code as i32) {
        Code::Ok => Code::Unknown,
        code => code,
    }
}

/// `error` is what `docs/wire.md`'s status mapping makes of `status`, a status
/// with no source error (what a server answered, or what tonic read from
/// response headers):
///
/// - `Cancelled` "Timeout expired" (tonic's words for an expired
///   `grpc-timeout`) is `DeadlineExceeded`, transient;
/// - `Unknown` "Service was not ready…" (the generated client's words for a
///   dead channel) is `Unavailable`, transient;
/// - `OutOfRange` "Error, decoded message length too large…" (the response is
///   over the client's size limit) is `Unavailable`, transient, not retried;
///   "Error, encoded message length too large…" (the request is) is
///   `Internal`, transient, not retried;
/// - anything else keeps its code (`OK` as `Unknown`) and its message
///   (truncated; the code's name if empty), transient and retryable iff the
///   code is transient.
///
/// In every case the message is bounded: the kept server message plus a short
/// explanation at most.
pub fn check_status_error(status: &tonic::Status, error: &Error) {
    check_error_renders(error);
    let message = status.message();
    let code = status.code();
    let wrapped = |local: Code, transient: bool, retryable: bool, says: &str| {
        assert_eq!(error.code(), local, "{status:?} → {error:?}");
        assert_eq!(error.is_transient(), transient, "{status:?} → {error:?}");
        assert_eq!(error.is_retryable(), retryable, "{status:?} → {error:?}");
        assert!(error.message().contains(says), "{status:?} → {error:?}");
        assert!(
            error.message().len() <= MAX_ERROR_MESSAGE + 64,
            "a {}-byte message for a {}-byte status message",
            error.message().len(),
            message.len()
        );
    };
    if code == tonic::Code::Cancelled && message == "Timeout expired" {
        wrapped(Code::DeadlineExceeded, true, true, "timed out");
    } else if code == tonic::Code::Unknown && message.starts_with("Service was not ready") {
        wrapped(Code::Unavailable, true, true, "transport failure");
    } else if code == tonic::Code::OutOfRange
        && message.starts_with("Error, decoded message length too large")
    {
        wrapped(Code::Unavailable, true, false, "over the size limit");
    } else if code == tonic::Code::OutOfRange
        && message.starts_with("Error, encoded message length too large")
    {
        wrapped(Code::Internal, true, false, "over the size limit");
    } else {
        let local = local_code(code);
        assert_eq!(error.code(), local, "{status:?} → {error:?}");
        assert_eq!(error.is_transient(), local.is_transient(), "{error:?}");
        assert_eq!(error.is_retryable(), local.is_transient(), "{error:?}");
        let expected = if message.is_empty() {
            local.as_str()
        } else {
            message
        };
        check_truncated(expected, error.message());
    }
}
