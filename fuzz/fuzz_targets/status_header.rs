//! The status a gRPC server sends in headers or trailers, read the way
//! `GrpcServices` reads it: the input is split at `\n` into the values of
//! `grpc-status` (the first line; an empty one means no such header),
//! `grpc-message` (the second line, if any) and `grpc-status-details-bin` (each
//! further line, one value each: any bytes, base64 or not). Bytes that cannot
//! be in a header value (controls other than tab, DEL) are dropped. The headers
//! go through `coordinator_grpc::strip_malformed_details`, then
//! `tonic::Status::from_header_map`, then
//! `coordinator_grpc::convert::error_from_status`.
//!
//! tonic panics ("Invalid status header, expected base64 encoded value") on a
//! `grpc-status-details-bin` that is not base64; the strip must prevent that.
//!
//! Checked: nothing panics; the details are dropped (all their values) iff one
//! of them is not standard base64, padded or not (a reference decoder written
//! here), and are otherwise kept unchanged, `Status::details()` then being the
//! first value decoded; no other header is touched; the status's code and
//! message are what the headers say (`grpc-status` "0".."16", anything else
//! `Unknown`; `grpc-message` percent-decoded, `Unknown` with tonic's own message
//! if that is not UTF-8); and the local error is what `docs/wire.md`'s status
//! mapping gives (`common::check_status_error`).
#![no_main]

mod common;

use common::check_status_error;
use coordinator_grpc::convert::error_from_status;
use coordinator_grpc::strip_malformed_details;
use coordinator_grpc::tonic;
use libfuzzer_sys::fuzz_target;
use tonic::codegen::http::{HeaderMap, HeaderValue};

const STATUS: &str = "grpc-status";
const MESSAGE: &str = "grpc-message";
const DETAILS: &str = "grpc-status-details-bin";

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n').map(header_bytes);
    let status = lines.next().filter(|s| !s.is_empty());
    let message = lines.next();
    let details: Vec<Vec<u8>> = lines.take(4).collect();

    let mut headers = HeaderMap::new();
    for (name, value) in [(STATUS, &status), (MESSAGE, &message)] {
        if let Some(value) = value {
            headers.insert(name, header_value(value));
        }
    }
    for value in &details {
        headers.append(DETAILS, header_value(value));
    }
    let before = headers.clone();

    // The strip: all the details go iff one value is not base64.
    let decoded: Option<Vec<Vec<u8>>> = details.iter().map(|d| base64_decode(d)).collect();
    let malformed = decoded.is_none();
    let stripped = strip_malformed_details(&mut headers);
    assert_eq!(stripped, malformed, "details {details:?}");
    if malformed {
        assert!(headers.get(DETAILS).is_none(), "malformed details kept");
    } else {
        assert_eq!(headers, before, "valid details changed");
    }
    assert_eq!(headers.get(STATUS), before.get(STATUS));
    assert_eq!(headers.get(MESSAGE), before.get(MESSAGE));
    assert_eq!(
        headers.len(),
        before.len() - if malformed { details.len() } else { 0 }
    );
    // Idempotent: nothing left to strip.
    assert!(!strip_malformed_details(&mut headers));

    // Must not panic.
    let Some(parsed) = tonic::Status::from_header_map(&headers) else {
        assert!(status.is_none(), "a grpc-status header but no status");
        return;
    };
    let status = status.expect("a status without a grpc-status header");

    // Details: the first value decoded, or none.
    let expected_details = decoded
        .as_ref()
        .and_then(|d| d.first().cloned())
        .unwrap_or_default();
    assert_eq!(parsed.details(), &expected_details[..]);

    // Code and message.
    let message = percent_decode(message.as_deref().unwrap_or_default());
    match String::from_utf8(message) {
        Ok(message) => {
            assert_eq!(parsed.code(), status_code(&status), "{status:?}");
            assert_eq!(parsed.message(), message);
        }
        Err(_) => {
            assert_eq!(parsed.code(), tonic::Code::Unknown);
            assert!(
                parsed
                    .message()
                    .starts_with("Error deserializing status message header"),
                "{parsed:?}"
            );
        }
    }

    // The local error.
    let error = error_from_status(&parsed);
    check_status_error(&parsed, &error);
});

/// The bytes of a line that can be in a header value: tab, printable ASCII,
/// and bytes 0x80 and up (`http`'s rule).
fn header_bytes(line: &[u8]) -> Vec<u8> {
    line.iter()
        .copied()
        .filter(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
        .collect()
}

fn header_value(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes).expect("filtered to valid header bytes")
}

/// gRPC's status codes as `grpc-status` writes them: "0" to "16", decimal,
/// nothing else; anything else is `Unknown`.
fn status_code(value: &[u8]) -> tonic::Code {
    let Ok(text) = std::str::from_utf8(value) else {
        return tonic::Code::Unknown;
    };
    let canonical = (0..=16).find(|n: &i32| n.to_string() == text);
    canonical.map_or(tonic::Code::Unknown, tonic::Code::from_i32)
}

/// `grpc-message`'s percent-encoding, decoded: `%` and two hex digits (either
/// case) is that byte; any other `%` is itself.
fn percent_decode(value: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                value.get(i + 1).copied().and_then(hex),
                value.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(value[i]);
            i += 1;
        }
    }
    out
}

/// Standard base64 (`A-Z a-z 0-9 + /`), padded or not, decoded; `None` if it
/// is not:
/// - padding (`=`) only at the end, after at least two symbols of the last
///   group, and never making a group longer than four characters;
/// - the last group has 2, 3 or 4 symbols (one alone encodes no byte);
/// - the bits of the last symbol that encode no byte are zero (one encoding
///   per byte string).
fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    let symbols_end = text.iter().position(|&b| b == b'=').unwrap_or(text.len());
    let (symbols, padding) = text.split_at(symbols_end);
    if padding.iter().any(|&b| b != b'=') {
        return None;
    }
    let values: Vec<u32> = symbols
        .iter()
        .map(|&b| match b {
            b'A'..=b'Z' => Some(u32::from(b - b'A')),
            b'a'..=b'z' => Some(u32::from(b - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(b - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let last_group = values.len() % 4;
    if last_group == 1 {
        return None;
    }
    if !padding.is_empty() && (last_group == 0 || last_group + padding.len() > 4) {
        return None;
    }
    let mut out = Vec::with_capacity(values.len() * 3 / 4);
    for group in values.chunks(4) {
        let bits = group
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &v)| acc | v << (18 - 6 * i));
        let bytes = group.len() * 6 / 8;
        // Bits past the last whole byte must be zero.
        if bits & (0x00ff_ffff >> (8 * bytes)) != 0 {
            return None;
        }
        out.extend_from_slice(&bits.to_be_bytes()[1..=bytes]);
    }
    Some(out)
}
