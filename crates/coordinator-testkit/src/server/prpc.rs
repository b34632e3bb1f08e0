//! The fake server's pRPC front end (`docs/prpc.md`): unary `logdog.Services`
//! calls as HTTP POSTs to `/prpc/logdog.Services/{Method}`, on their own
//! listener (HTTP/1.1 and cleartext HTTP/2), answered by the same
//! [`FakeServicesServer`] as gRPC: same state, counters, faults and tokens.
//!
//! A request goes through, in order: method and path (`Unimplemented`, 501),
//! credentials (`PermissionDenied`, 403), request `Content-Type` and
//! `Content-Encoding` (415), `Accept` (406, or 400 when malformed),
//! `X-Prpc-Grpc-Timeout` (400 when malformed), the body (400 when it does not
//! decode), then the RPC itself under the timeout (`DeadlineExceeded`, 504, when
//! it cannot finish in time). Nothing a client sends can panic the server.

use std::convert::Infallible;
use std::future::Future;
use std::io::{Read, Write};
use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prost::Message;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, MethodDescriptor,
    SerializeOptions,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::{Code, Status};

use super::FakeServicesServer;

/// The one service served.
const SERVICE: &str = "logdog.Services";
/// The path prefix of every pRPC call.
const PATH_PREFIX: &str = "/prpc/";
/// The largest request body accepted (after gunzip).
const MAX_REQUEST_BYTES: usize = 32 << 20;
/// The anti-XSSI prefix of JSON responses.
const XSSI_PREFIX: &[u8] = b")]}'\n";
/// `Content-Type` of binary protobuf.
pub(crate) const CONTENT_TYPE_BINARY: &str = "application/prpc; encoding=binary";
/// `Content-Type` of the proto3 JSON mapping.
pub(crate) const CONTENT_TYPE_JSON: &str = "application/json";
const CONTENT_TYPE_ERROR: &str = "text/plain; charset=utf-8";
const HEADER_CODE: &str = "x-prpc-grpc-code";
const HEADER_TIMEOUT: &str = "x-prpc-grpc-timeout";

/// The descriptors of the checked-in protos (for the JSON mapping and the
/// method table), decoded once.
static POOL: LazyLock<Result<DescriptorPool, String>> = LazyLock::new(|| {
    DescriptorPool::decode(coordinator_services::proto::FILE_DESCRIPTOR_SET)
        .map_err(|e| e.to_string())
});

/// A message encoding of pRPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Binary,
    Json,
    /// The protobuf text format: recognized, not supported by this server.
    Text,
}

/// The encodings this server speaks, in order of preference on a tie.
const SUPPORTED: [Format; 2] = [Format::Binary, Format::Json];

/// An error answer: its gRPC code, HTTP status and message.
#[derive(Debug)]
struct Failure {
    code: Code,
    http: StatusCode,
    message: String,
}

impl Failure {
    /// An error with the HTTP status of its code.
    fn new(code: Code, message: impl Into<String>) -> Self {
        Failure {
            code,
            http: http_status(code),
            message: message.into(),
        }
    }

    /// `InvalidArgument` with a specific HTTP status (415, 406).
    fn invalid(http: StatusCode, message: impl Into<String>) -> Self {
        Failure {
            code: Code::InvalidArgument,
            http,
            message: message.into(),
        }
    }

    fn from_status(status: &Status) -> Self {
        Failure::new(status.code(), status.message())
    }
}

/// The HTTP status of a gRPC code (prpc.md, server side).
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The message sent for an error: a fixed generic text for server-side codes
/// (they must not leak internals), the error's own message otherwise.
fn public_message(code: Code, message: &str) -> &str {
    match code {
        Code::Internal => "internal server error",
        Code::Unknown => "unknown server error",
        Code::Unavailable => "service unavailable",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::DataLoss => "data loss",
        Code::Unimplemented => "method not implemented",
        _ => message,
    }
}

/// A pRPC listener being served, and the way to stop it.
pub(crate) struct PrpcServing {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl PrpcServing {
    /// Serves `service` on `listener` (every accepted connection is counted).
    pub(crate) fn spawn(service: &FakeServicesServer, listener: TcpListener) -> Self {
        let (shutdown, signal) = oneshot::channel();
        let task = tokio::spawn(accept_loop(service.clone(), listener, signal));
        PrpcServing { shutdown, task }
    }

    /// Asks the accept loop to stop (closing every connection once its
    /// in-flight calls are answered), without waiting.
    pub(crate) fn signal(self) {
        let _ = self.shutdown.send(());
    }

    /// Stops and waits until every connection is closed.
    pub(crate) async fn stop(self) {
        let _ = self.shutdown.send(());
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "fake server: pRPC serving task failed");
        }
    }
}

async fn accept_loop(
    service: FakeServicesServer,
    listener: TcpListener,
    mut signal: oneshot::Receiver<()>,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // Fires on send and on drop of the sender alike.
            _ = &mut signal => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait, then go on.
                tracing::warn!(error = %e, "fake server: pRPC accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Loopback without Nagle, as for gRPC.
        let _ = stream.set_nodelay(true);
        service.shared.counters.prpc_connection();
        let svc = service.clone();
        let handler = hyper::service::service_fn(move |req| {
            let svc = svc.clone();
            async move { Ok::<_, Infallible>(handle(&svc, req).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), handler)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "fake server: pRPC connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Answers one HTTP request.
async fn handle(service: &FakeServicesServer, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let gzip_ok = accepts_gzip(req.headers());
    match call(service, req).await {
        Ok((format, body)) => success(format, body, gzip_ok),
        Err(failure) => error_response(&failure),
    }
}

/// Runs the checks and the RPC; the response encoding and body on success.
async fn call(
    service: &FakeServicesServer,
    req: Request<Incoming>,
) -> Result<(Format, Vec<u8>), Failure> {
    let method = route(req.method(), req.uri().path())?;
    let headers = req.headers();
    service
        .authorize(
            headers
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
        )
        .map_err(|e| Failure::new(Code::PermissionDenied, e.message()))?;
    let request_format = request_format(headers)?;
    let gzipped = request_gzipped(headers)?;
    let response_format = negotiate(header_str(headers, header::ACCEPT.as_str())?)?;
    let timeout = header_str(headers, HEADER_TIMEOUT)?
        .map(parse_timeout)
        .transpose()?;

    let body = match Limited::new(req.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return Err(Failure::new(
                Code::InvalidArgument,
                format!("cannot read the request body: {e}"),
            ));
        }
    };
    let body = if gzipped { gunzip(&body)? } else { body };

    let codec = Codec {
        request: request_format,
        response: response_format,
        input: method.input(),
        output: method.output(),
    };
    let rpc = dispatch(service, method.name(), &codec, &body);
    let answer = match timeout {
        // A deadline already past cannot be met.
        Some(t) if t.is_zero() => Err(Failure::new(Code::DeadlineExceeded, "no time left")),
        Some(t) => tokio::time::timeout(t, rpc)
            .await
            .unwrap_or_else(|_| Err(Failure::new(Code::DeadlineExceeded, "timed out"))),
        None => rpc.await,
    };
    answer.map(|body| (response_format, body))
}

/// The method of a `POST /prpc/logdog.Services/{Method}`.
fn route(method: &Method, path: &str) -> Result<MethodDescriptor, Failure> {
    let unimplemented = || Failure::new(Code::Unimplemented, "");
    let (service, name) = path
        .strip_prefix(PATH_PREFIX)
        .and_then(|rest| rest.split_once('/'))
        .ok_or_else(unimplemented)?;
    if service != SERVICE {
        return Err(unimplemented());
    }
    let pool = POOL
        .as_ref()
        .map_err(|e| Failure::new(Code::Internal, e.as_str()))?;
    let found = pool
        .get_service_by_name(SERVICE)
        .and_then(|s| s.methods().find(|m| m.name() == name))
        .ok_or_else(unimplemented)?;
    if method != Method::POST {
        return Err(Failure {
            http: StatusCode::METHOD_NOT_ALLOWED,
            ..Failure::new(Code::Unimplemented, "")
        });
    }
    Ok(found)
}

/// A header's value as text; `None` when absent. Not visible ASCII: 400.
fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, Failure> {
    headers
        .get(name)
        .map(|v| {
            v.to_str().map_err(|_| {
                Failure::new(
                    Code::InvalidArgument,
                    format!("the {name} header is not visible ASCII"),
                )
            })
        })
        .transpose()
}

/// A media type, lowercased, and its parameters (names lowercased, values
/// unquoted).
fn parse_media_type(text: &str) -> (String, Vec<(String, String)>) {
    let mut parts = text.split(';');
    let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let params = parts
        .filter_map(|p| {
            let (name, value) = p.split_once('=')?;
            Some((
                name.trim().to_ascii_lowercase(),
                value.trim().trim_matches('"').to_owned(),
            ))
        })
        .collect();
    (media, params)
}

/// The format a concrete media type names, if any.
fn media_format(media: &str, params: &[(String, String)]) -> Option<Format> {
    match media {
        "application/json" => Some(Format::Json),
        "application/prpc" => {
            let encoding = params
                .iter()
                .find(|(name, _)| name == "encoding")
                .map(|(_, value)| value.to_ascii_lowercase());
            match encoding.as_deref() {
                None | Some("binary") => Some(Format::Binary),
                Some("json") => Some(Format::Json),
                Some("text") => Some(Format::Text),
                Some(_) => None,
            }
        }
        _ => None,
    }
}

/// The request body's format: binary when no `Content-Type` is given; one the
/// server does not support: 415.
fn request_format(headers: &HeaderMap) -> Result<Format, Failure> {
    let unsupported = |what: &str| {
        Failure::invalid(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported Content-Type {what:?}"),
        )
    };
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(Format::Binary);
    };
    let text = value.to_str().map_err(|_| unsupported("<not ASCII>"))?;
    if text.trim().is_empty() {
        return Ok(Format::Binary);
    }
    let (media, params) = parse_media_type(text);
    match media_format(&media, &params) {
        Some(format) if SUPPORTED.contains(&format) => Ok(format),
        _ => Err(unsupported(text)),
    }
}

/// Whether the request body is gzipped; an encoding other than gzip or
/// identity: 415.
fn request_gzipped(headers: &HeaderMap) -> Result<bool, Failure> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(false);
    };
    match value.to_str().map(|v| v.trim().to_ascii_lowercase()) {
        Ok(v) if v == "gzip" => Ok(true),
        Ok(v) if v.is_empty() || v == "identity" => Ok(false),
        _ => Err(Failure::invalid(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported Content-Encoding; this server takes gzip",
        )),
    }
}

/// The response format for an `Accept` header: see prpc.md. Missing or empty:
/// binary. Each supported format gets the `q` of the most specific range that
/// matches it (`*/*` < `application/*` < the type itself); the highest `q`
/// above 0 wins, ties preferring binary, then JSON. None acceptable: 406; a
/// malformed `q`: 400.
fn negotiate(accept: Option<&str>) -> Result<Format, Failure> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(Format::Binary);
    };
    // Per supported format: (specificity, q) of its best-matching range.
    let mut best: [Option<(u8, f32)>; SUPPORTED.len()] = [None; SUPPORTED.len()];
    for range in accept.split(',').filter(|r| !r.trim().is_empty()) {
        let (media, params) = parse_media_type(range);
        let mut q = 1.0_f32;
        if let Some((_, value)) = params.iter().find(|(name, _)| name == "q") {
            q = value
                .parse::<f32>()
                .ok()
                .filter(|q| (0.0..=1.0).contains(q))
                .ok_or_else(|| {
                    Failure::new(
                        Code::InvalidArgument,
                        format!("the Accept header has an invalid q value {value:?}"),
                    )
                })?;
        }
        let exact = media_format(&media, &params);
        for (slot, &format) in best.iter_mut().zip(&SUPPORTED) {
            let specificity = match media.as_str() {
                "*/*" => 0,
                "application/*" => 1,
                _ if exact == Some(format) => 2,
                _ => continue,
            };
            let better = match *slot {
                None => true,
                Some((s, old_q)) => specificity > s || (specificity == s && q > old_q),
            };
            if better {
                *slot = Some((specificity, q));
            }
        }
    }
    let mut chosen: Option<(Format, f32)> = None;
    for (slot, &format) in best.iter().zip(&SUPPORTED) {
        if let Some((_, q)) = *slot
            && q > 0.0
            && chosen.is_none_or(|(_, best_q)| q > best_q)
        {
            chosen = Some((format, q));
        }
    }
    chosen.map(|(format, _)| format).ok_or_else(|| {
        Failure::invalid(
            StatusCode::NOT_ACCEPTABLE,
            format!(
                "cannot answer in any encoding of Accept {accept:?}; this server speaks \
                 {CONTENT_TYPE_BINARY:?} and {CONTENT_TYPE_JSON:?}"
            ),
        )
    })
}

/// Whether `Accept-Encoding` lists gzip (with a `q` above 0).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let (name, params) = parse_media_type(coding);
            name == "gzip"
                && params
                    .iter()
                    .find(|(n, _)| n == "q")
                    .is_none_or(|(_, q)| q.parse::<f32>().is_ok_and(|q| q > 0.0))
        })
}

/// An `X-Prpc-Grpc-Timeout`: 1 to 8 digits and a unit (`H M S m u n`).
fn parse_timeout(text: &str) -> Result<Duration, Failure> {
    let bad = || {
        Failure::new(
            Code::InvalidArgument,
            format!("invalid {HEADER_TIMEOUT} {text:?}: want 1 to 8 digits and one of HMSmun"),
        )
    };
    let digits_len = text.len().checked_sub(1).ok_or_else(bad)?;
    let (digits, unit) = text.split_at_checked(digits_len).ok_or_else(bad)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    Ok(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return Err(bad()),
    })
}

fn gunzip(body: &[u8]) -> Result<Bytes, Failure> {
    let mut out = Vec::new();
    let limit = u64::try_from(MAX_REQUEST_BYTES).unwrap_or(u64::MAX);
    flate2::read::GzDecoder::new(body)
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            Failure::new(
                Code::InvalidArgument,
                format!("cannot gunzip the request body: {e}"),
            )
        })?;
    if out.len() > MAX_REQUEST_BYTES {
        return Err(Failure::new(
            Code::InvalidArgument,
            format!("the request body is over {MAX_REQUEST_BYTES} bytes once gunzipped"),
        ));
    }
    Ok(out.into())
}

/// Encodings and message types of one call.
struct Codec {
    request: Format,
    response: Format,
    input: MessageDescriptor,
    output: MessageDescriptor,
}

impl Codec {
    fn decode<T: Message + Default>(&self, body: &[u8]) -> Result<T, Failure> {
        let undecodable = |e: &dyn std::fmt::Display| {
            Failure::new(
                Code::InvalidArgument,
                format!("cannot decode the request body: {e}"),
            )
        };
        match self.request {
            Format::Json => {
                let mut de = serde_json::Deserializer::from_slice(body);
                let options = DeserializeOptions::new().deny_unknown_fields(false);
                let message =
                    DynamicMessage::deserialize_with_options(self.input.clone(), &mut de, &options)
                        .map_err(|e| undecodable(&e))?;
                de.end().map_err(|e| undecodable(&e))?;
                message.transcode_to::<T>().map_err(|e| undecodable(&e))
            }
            Format::Binary | Format::Text => T::decode(body).map_err(|e| undecodable(&e)),
        }
    }

    fn encode<T: Message>(&self, message: &T) -> Result<Vec<u8>, Failure> {
        let binary = message.encode_to_vec();
        match self.response {
            Format::Json => {
                let internal = |e: &dyn std::fmt::Display| {
                    tracing::warn!(error = %e, "fake server: cannot encode a JSON response");
                    Failure::new(Code::Internal, "")
                };
                let dynamic = DynamicMessage::decode(self.output.clone(), binary.as_slice())
                    .map_err(|e| internal(&e))?;
                let mut out = XSSI_PREFIX.to_vec();
                let mut ser = serde_json::Serializer::new(&mut out);
                dynamic
                    .serialize_with_options(&mut ser, &SerializeOptions::new())
                    .map_err(|e| internal(&e))?;
                out.push(b'\n');
                Ok(out)
            }
            Format::Binary | Format::Text => Ok(binary),
        }
    }
}

/// Decodes the request, runs the RPC (counted as a pRPC call), encodes its
/// answer.
async fn unary<Req, Resp, Fut>(
    service: &FakeServicesServer,
    codec: &Codec,
    body: &[u8],
    rpc: impl FnOnce(Req) -> Fut,
) -> Result<Vec<u8>, Failure>
where
    Req: Message + Default,
    Resp: Message,
    Fut: Future<Output = Result<Resp, Status>>,
{
    let request = codec.decode::<Req>(body)?;
    service.shared.counters.prpc_rpc();
    let response = rpc(request).await.map_err(|s| Failure::from_status(&s))?;
    codec.encode(&response)
}

async fn dispatch(
    service: &FakeServicesServer,
    method: &str,
    codec: &Codec,
    body: &[u8],
) -> Result<Vec<u8>, Failure> {
    match method {
        "RegisterStream" => unary(service, codec, body, |r| service.rpc_register_stream(r)).await,
        "LoadStream" => unary(service, codec, body, |r| service.rpc_load_stream(r)).await,
        "TerminateStream" => unary(service, codec, body, |r| service.rpc_terminate_stream(r)).await,
        "ArchiveStream" => unary(service, codec, body, |r| service.rpc_archive_stream(r)).await,
        "Batch" => unary(service, codec, body, |r| service.rpc_batch(r)).await,
        "LeaseArchiveTasks" => {
            unary(service, codec, body, |r| service.rpc_lease_archive_tasks(r)).await
        }
        "DeleteArchiveTasks" => {
            unary(service, codec, body, |r| {
                service.rpc_delete_archive_tasks(r)
            })
            .await
        }
        _ => Err(Failure::new(Code::Unimplemented, "")),
    }
}

fn base_response(
    status: StatusCode,
    code: Code,
    content_type: &'static str,
) -> http::response::Builder {
    Response::builder()
        .status(status)
        .header(HEADER_CODE, (code as i32).to_string())
        .header(header::CONTENT_TYPE, content_type)
        .header("x-content-type-options", "nosniff")
}

fn success(format: Format, body: Vec<u8>, gzip_ok: bool) -> Response<Full<Bytes>> {
    let content_type = match format {
        Format::Json => CONTENT_TYPE_JSON,
        Format::Binary | Format::Text => CONTENT_TYPE_BINARY,
    };
    let mut builder = base_response(StatusCode::OK, Code::Ok, content_type);
    let body = match gzip_ok.then(|| gzip(&body)).flatten() {
        Some(zipped) => {
            builder = builder.header(header::CONTENT_ENCODING, "gzip");
            zipped
        }
        None => body,
    };
    builder
        .body(Full::new(body.into()))
        .unwrap_or_else(|_| fallback())
}

fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(body).ok()?;
    encoder.finish().ok()
}

fn error_response(failure: &Failure) -> Response<Full<Bytes>> {
    let mut text = public_message(failure.code, &failure.message).to_owned();
    text.push('\n');
    base_response(failure.http, failure.code, CONTENT_TYPE_ERROR)
        .body(Full::new(text.into()))
        .unwrap_or_else(|_| fallback())
}

/// A bare `Internal` answer, should building a response ever fail (every
/// header above is a valid constant, so it does not).
fn fallback() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"internal server error\n")));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
        .headers_mut()
        .insert(HEADER_CODE, HeaderValue::from_static("13"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        use Format::{Binary, Json};
        let cases: &[(Option<&str>, Option<Format>)] = &[
            (None, Some(Binary)),
            (Some(""), Some(Binary)),
            (Some("*/*"), Some(Binary)),
            (Some("application/*"), Some(Binary)),
            (Some("application/prpc"), Some(Binary)),
            (Some("application/prpc; encoding=binary"), Some(Binary)),
            (Some("application/json"), Some(Json)),
            (Some("application/prpc; encoding=json"), Some(Json)),
            (Some("application/json, application/prpc"), Some(Binary)),
            (Some("application/json, application/prpc;q=0.5"), Some(Json)),
            (Some("application/json;q=0.9, */*;q=0.1"), Some(Json)),
            (Some("application/json;q=0, */*"), Some(Binary)),
            (Some("application/prpc;q=0, */*"), Some(Json)),
            (Some("text/html"), None),
            (Some("application/prpc; encoding=text"), None),
            (Some("application/json;q=0"), None),
        ];
        for &(accept, want) in cases {
            assert_eq!(negotiate(accept).ok(), want, "{accept:?}");
        }
        let bad = negotiate(Some("application/json;q=2")).unwrap_err();
        assert_eq!(bad.http, StatusCode::BAD_REQUEST);
        let none = negotiate(Some("image/png")).unwrap_err();
        assert_eq!(
            (none.code, none.http),
            (Code::InvalidArgument, StatusCode::NOT_ACCEPTABLE)
        );
    }

    #[test]
    fn timeouts_parse_and_reject_garbage() {
        assert_eq!(parse_timeout("5S").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_timeout("2H").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_timeout("3M").unwrap(), Duration::from_secs(180));
        assert_eq!(parse_timeout("150m").unwrap(), Duration::from_millis(150));
        assert_eq!(parse_timeout("7u").unwrap(), Duration::from_micros(7));
        assert_eq!(
            parse_timeout("99999999n").unwrap(),
            Duration::from_nanos(99_999_999)
        );
        for bad in ["", "S", "5", "123456789S", "5s", "-5S", "5 S", "é", "5é"] {
            assert!(parse_timeout(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_code_has_its_http_status() {
        let table = [
            (Code::Ok, 200),
            (Code::Cancelled, 499),
            (Code::Unknown, 500),
            (Code::InvalidArgument, 400),
            (Code::DeadlineExceeded, 504),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::PermissionDenied, 403),
            (Code::ResourceExhausted, 429),
            (Code::FailedPrecondition, 400),
            (Code::Aborted, 409),
            (Code::OutOfRange, 400),
            (Code::Unimplemented, 501),
            (Code::Internal, 500),
            (Code::Unavailable, 503),
            (Code::DataLoss, 500),
            (Code::Unauthenticated, 401),
        ];
        for (code, http) in table {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn the_descriptor_pool_has_the_service() {
        let pool = POOL.as_ref().unwrap();
        let service = pool.get_service_by_name(SERVICE).unwrap();
        assert_eq!(service.methods().count(), 7);
    }

    #[test]
    fn gunzip_round_trips_and_refuses_garbage() {
        let zipped = gzip(b"hello").unwrap();
        assert_eq!(&gunzip(&zipped).unwrap()[..], b"hello");
        assert!(gunzip(b"not gzip").is_err());
    }
}
