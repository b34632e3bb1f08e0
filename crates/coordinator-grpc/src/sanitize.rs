//! Drops a malformed `grpc-status-details-bin` before tonic parses it.
//!
//! tonic panics ("Invalid status header, expected base64 encoded value") when
//! that header, in the response headers or trailers, is not base64, whatever
//! the status code. The details are opaque to this client, so a malformed value
//! is removed (and logged) and the status is read without it.

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use http_body::Frame;
use tonic::codegen::http::HeaderMap;

/// The header tonic decodes.
const DETAILS: &str = "grpc-status-details-bin";

/// Standard base64, padded or not: what tonic accepts.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Removes `grpc-status-details-bin` from `headers` if tonic could not decode
/// it. Returns true if it removed one.
pub fn strip_malformed_details(headers: &mut HeaderMap) -> bool {
    let malformed = headers
        .get_all(DETAILS)
        .iter()
        .any(|value| LENIENT.decode(value.as_bytes()).is_err());
    if malformed {
        headers.remove(DETAILS);
        tracing::debug!("dropped a malformed grpc-status-details-bin header");
    }
    malformed
}

/// Passes a response body frame through: trailers go through
/// [`strip_malformed_details`], data is untouched.
pub(crate) fn sanitize_frame<D>(frame: Frame<D>) -> Frame<D> {
    match frame.into_trailers() {
        Ok(mut trailers) => {
            strip_malformed_details(&mut trailers);
            Frame::trailers(trailers)
        }
        Err(frame) => frame,
    }
}

#[cfg(test)]
mod tests {
    use tonic::codegen::http::HeaderValue;

    use super::*;

    #[test]
    fn malformed_details_are_dropped_valid_ones_kept() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("0"));
        headers.insert(DETAILS, HeaderValue::from_static("not base64!!"));
        assert!(strip_malformed_details(&mut headers));
        assert!(headers.get(DETAILS).is_none());
        assert!(tonic::Status::from_header_map(&headers).is_some());
        for valid in ["AAEC", "AAE", "AAE="] {
            headers.insert(DETAILS, HeaderValue::from_static(valid));
            assert!(!strip_malformed_details(&mut headers), "{valid}");
            assert!(headers.get(DETAILS).is_some());
            assert!(tonic::Status::from_header_map(&headers).is_some());
        }
    }
}
