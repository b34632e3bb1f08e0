//! The pRPC wire details that need no HTTP client: header names, media types,
//! the timeout header's format, the encodings and the answer-to-error mapping.

use std::time::Duration;

use coordinator_api::{Code, Error};
use coordinator_services::convert::{MAX_ERROR_MESSAGE, error_from_code, truncate_message};

/// The gRPC code of the answer.
pub const CODE_HEADER: &str = "x-prpc-grpc-code";
/// The time the caller still allows.
pub const TIMEOUT_HEADER: &str = "x-prpc-grpc-timeout";
/// The largest response body the client accepts.
pub const MAX_RESPONSE_SIZE_HEADER: &str = "x-prpc-max-response-size";
/// Error details (ignored by this client).
pub const STATUS_DETAILS_HEADER: &str = "x-prpc-status-details-bin";

/// The binary protobuf media type.
pub const BINARY_MEDIA_TYPE: &str = "application/prpc; encoding=binary";
/// The JSON media type.
pub const JSON_MEDIA_TYPE: &str = "application/json";
/// The anti-XSSI prefix of a JSON response body.
pub const XSSI_PREFIX: &[u8] = b")]}'";

/// How request and response messages are encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Encoding {
    /// Binary protobuf (`application/prpc; encoding=binary`), the default.
    #[default]
    Binary,
    /// The proto3 JSON mapping (`application/json`). Needs the `json` feature.
    #[cfg(feature = "json")]
    Json,
}

impl Encoding {
    /// The media type sent as `Content-Type` and `Accept`.
    pub fn media_type(self) -> &'static str {
        match self {
            Encoding::Binary => BINARY_MEDIA_TYPE,
            #[cfg(feature = "json")]
            Encoding::Json => JSON_MEDIA_TYPE,
        }
    }

    /// True if a response `Content-Type` of `content_type` is this encoding.
    /// For binary, an empty or absent one is (the protocol says so), and so
    /// is a bare `application/prpc`; parameters other than `encoding` and the
    /// case of names do not matter.
    pub fn matches(self, content_type: Option<&str>) -> bool {
        let content_type = content_type.unwrap_or("").trim();
        let mut parts = content_type.split(';').map(str::trim);
        let essence = parts.next().unwrap_or("").to_ascii_lowercase();
        let encoding = parts.find_map(|p| {
            let (name, value) = p.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("encoding")
                .then(|| value.trim().trim_matches('"').to_ascii_lowercase())
        });
        match self {
            Encoding::Binary => {
                essence.is_empty()
                    || (essence == "application/prpc"
                        && encoding.as_deref().is_none_or(|e| e == "binary"))
            }
            #[cfg(feature = "json")]
            Encoding::Json => essence == "application/json",
        }
    }
}

/// The `X-Prpc-Grpc-Timeout` value for `timeout`: at most 8 digits and one
/// unit letter (`H`, `M`, `S`, `m`, `u`, `n`), in the finest unit that fits.
/// A value that is not a whole number of that unit is rounded up (by less
/// than one unit; the client's own deadline still ends the call); anything
/// beyond 99999999 hours is sent as that.
///
/// ```
/// use std::time::Duration;
/// use coordinator_prpc::wire::format_timeout;
/// assert_eq!(format_timeout(Duration::from_millis(1500)), "1500000u");
/// assert_eq!(format_timeout(Duration::from_secs(3600)), "3600000m");
/// ```
pub fn format_timeout(timeout: Duration) -> String {
    const MAX: u128 = 99_999_999;
    const UNITS: [(char, u128); 6] = [
        ('n', 1),
        ('u', 1_000),
        ('m', 1_000_000),
        ('S', 1_000_000_000),
        ('M', 60_000_000_000),
        ('H', 3_600_000_000_000),
    ];
    let nanos = timeout.as_nanos();
    for (unit, per) in UNITS {
        let value = nanos.div_ceil(per);
        if value <= MAX {
            return format!("{value}{unit}");
        }
    }
    format!("{MAX}H")
}

/// Strips the anti-XSSI prefix (and the newline after it) from a JSON body.
pub fn strip_xssi(body: &[u8]) -> &[u8] {
    match body.strip_prefix(XSSI_PREFIX) {
        Some(rest) => rest
            .strip_prefix(b"\r\n")
            .or_else(|| rest.strip_prefix(b"\n"))
            .unwrap_or(rest),
        None => body,
    }
}

/// The outcome an answer's `X-Prpc-Grpc-Code` header (its raw value, if
/// present) and HTTP status call for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Code 0: the body is the response message.
    Ok,
    /// The server's error: the body is the message.
    Status(i32),
    /// The code header is there but not an integer.
    BadCode,
    /// No code header: a proxy or load balancer answered with this HTTP
    /// status.
    NoCode(u16),
}

impl Outcome {
    /// Classifies an answer.
    pub fn of(code_header: Option<&[u8]>, http_status: u16) -> Outcome {
        match code_header {
            None => Outcome::NoCode(http_status),
            Some(raw) => match std::str::from_utf8(raw)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                Some(0) => Outcome::Ok,
                Some(code) => Outcome::Status(code),
                None => Outcome::BadCode,
            },
        }
    }

    /// The error for a failed outcome (`None` for [`Outcome::Ok`]), with the
    /// answer's body text as the message (one trailing newline removed,
    /// truncated to [`MAX_ERROR_MESSAGE`] bytes).
    ///
    /// - a pRPC code: that code ([`error_from_code`]), transient per the code;
    /// - no code header: 401 → `Unauthenticated`, 403 → `PermissionDenied`,
    ///   503 → `Unavailable`, any other 5xx → `Internal`, anything else →
    ///   `Internal` naming the HTTP status;
    /// - a code that is not an integer: `Internal`.
    pub fn error(self, body: &[u8]) -> Option<Error> {
        let text = String::from_utf8_lossy(body);
        let text = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(&text);
        match self {
            Outcome::Ok => None,
            Outcome::Status(code) => Some(error_from_code(code, text)),
            Outcome::BadCode => Some(Error::internal(format!(
                "the X-Prpc-Grpc-Code header is not an integer: {}",
                truncate_message(text)
            ))),
            Outcome::NoCode(status) => {
                let code = match status {
                    401 => Code::Unauthenticated,
                    403 => Code::PermissionDenied,
                    503 => Code::Unavailable,
                    _ => Code::Internal,
                };
                let message = format!("HTTP status {status} without a pRPC code: {text}");
                Some(Error::new(code, truncate_message(&message)))
            }
        }
    }
}

/// The most bytes of an error body that are read ([`MAX_ERROR_MESSAGE`] and
/// a line end, so that a message exactly that long is not marked truncated).
pub const MAX_ERROR_BODY: usize = MAX_ERROR_MESSAGE + 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_use_the_finest_unit_that_fits() {
        let cases = [
            (Duration::ZERO, "0n"),
            (Duration::from_nanos(1), "1n"),
            (Duration::from_nanos(99_999_999), "99999999n"),
            (Duration::from_nanos(100_000_000), "100000u"),
            (Duration::from_nanos(100_000_001), "100001u"),
            (Duration::from_secs(1), "1000000u"),
            (Duration::from_secs(30), "30000000u"),
            (Duration::from_secs(100), "100000m"),
            (Duration::from_secs(99_999), "99999000m"),
            (Duration::from_secs(100_000), "100000S"),
            (Duration::from_secs(99_999_999), "99999999S"),
            (Duration::from_secs(100_000_000), "1666667M"),
            (Duration::from_secs(60 * 99_999_999 + 1), "1666667H"),
            (Duration::MAX, "99999999H"),
        ];
        for (d, want) in cases {
            let got = format_timeout(d);
            assert_eq!(got, want, "{d:?}");
            let digits = &got[..got.len() - 1];
            assert!(digits.len() <= 8 && digits.bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn codes_and_fallbacks() {
        let e = |o: Outcome, body: &str| o.error(body.as_bytes()).unwrap();
        assert_eq!(Outcome::of(Some(b"0"), 500), Outcome::Ok);
        assert_eq!(Outcome::of(Some(b" 5 "), 200), Outcome::Status(5));
        assert_eq!(Outcome::of(Some(b"five"), 200), Outcome::BadCode);
        assert_eq!(Outcome::of(Some(b"\xff"), 200), Outcome::BadCode);
        assert_eq!(Outcome::of(None, 503), Outcome::NoCode(503));
        let nf = e(Outcome::Status(5), "no such stream\n");
        assert_eq!(
            (nf.code(), nf.message()),
            (Code::NotFound, "no such stream")
        );
        assert!(!nf.is_transient());
        let two = e(Outcome::Status(5), "a\n\n");
        assert_eq!(two.message(), "a\n");
        // The HTTP status fallbacks are tested over the wire (tests/http.rs).
        let proxy = e(Outcome::NoCode(403), "<html>\n");
        assert_eq!(proxy.code(), Code::PermissionDenied);
        assert!(proxy.message().contains("403") && proxy.message().ends_with("<html>"));
        assert_eq!(e(Outcome::BadCode, "").code(), Code::Internal);
        assert_eq!(Outcome::Ok.error(b""), None);
        let long = e(Outcome::Status(9), &"x".repeat(MAX_ERROR_BODY));
        assert!(long.message().len() <= MAX_ERROR_MESSAGE);
    }

    #[test]
    fn content_types() {
        let b = Encoding::Binary;
        for ok in [
            None,
            Some(""),
            Some("application/prpc; encoding=binary"),
            Some("Application/PRPC;Encoding=Binary"),
            Some("application/prpc"),
        ] {
            assert!(b.matches(ok), "{ok:?}");
        }
        for bad in [
            "application/json",
            "text/plain",
            "application/prpc; encoding=text",
            "application/prpcx",
        ] {
            assert!(!b.matches(Some(bad)), "{bad}");
        }
        #[cfg(feature = "json")]
        {
            assert!(Encoding::Json.matches(Some("application/json; charset=utf-8")));
            assert!(!Encoding::Json.matches(None));
        }
    }

    #[test]
    fn xssi_prefix() {
        assert_eq!(strip_xssi(b")]}'\n{}"), b"{}");
        assert_eq!(strip_xssi(b")]}'{}"), b"{}");
        assert_eq!(strip_xssi(b"{}"), b"{}");
    }
}
