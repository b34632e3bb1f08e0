//! [`PrpcServices`], the pRPC transport, and [`PrpcCoordinator`], the usual
//! stack over it.

use std::fmt;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use coordinator_api::{
    Coordinator, CoordinatorFuture, Error, LogStreamState, RegisterRequest, TerminateRequest,
};
use coordinator_services::auth::{self, SharedTokenSource, StaticToken, TokenSource};
use coordinator_services::{
    BatchOptions, BatchingClient, CallOptions, RetryPolicy, ServicesClient, ServicesCoordinator,
    ServicesFuture, ServicesStack, SharedClient,
};
use prost::Message;
use reqwest::header::{self, HeaderMap, HeaderValue};

use crate::BuildError;
use crate::codec::Codec;
use crate::proto::logdog as proto;
use crate::wire::{self, Encoding, Outcome};

/// The default user agent: `coordinator-prpc/<version>`.
pub const USER_AGENT: &str = concat!("coordinator-prpc/", env!("CARGO_PKG_VERSION"));

/// The default largest response body accepted (32 MiB).
pub const DEFAULT_MAX_RESPONSE_SIZE: usize = 32 * 1024 * 1024;

/// The default size above which a request body is gzipped (1 KiB).
pub const DEFAULT_GZIP_THRESHOLD: usize = 1024;

/// The service every call goes to.
const SERVICE: &str = "logdog.Services";

/// The pRPC transport: one attempt of each `logdog.Services` RPC as an HTTP/1.1
/// `POST {scheme}://{host}/prpc/logdog.Services/{Method}`, as a
/// [`ServicesClient`] (`docs/prpc.md`, `docs/behaviour.md` §4).
///
/// Each call:
/// - sends the message in the configured [`Encoding`] (binary by default),
///   gzipped with `Content-Encoding: gzip` above the gzip threshold, with
///   `Accept-Encoding: gzip`;
/// - sends the time left of its [`CallOptions`] deadline as
///   `X-Prpc-Grpc-Timeout` ([`wire::format_timeout`]), the effective response
///   limit as `X-Prpc-Max-Response-Size`, and `Authorization: Bearer <token>`
///   from the token source (asked on every attempt);
/// - maps the answer by `X-Prpc-Grpc-Code` ([`Outcome`]): the server's code
///   keeps its code and message; without the header, the HTTP status decides;
/// - refuses a response body over the smaller of the call's
///   `max_response_size` and the client's limit, by `Content-Length` before
///   reading and by the (decompressed) bytes read, never buffering past it: a
///   transient `Unavailable` error that is not retried;
/// - refuses a success whose `Content-Type` is not the requested encoding: a
///   transient `Internal` error that is not retried;
/// - turns failures to send (refused, reset, IO errors) and to get a token
///   into transient `Unavailable` errors.
///
/// `X-Prpc-Status-Details-Bin` is ignored. Nothing a server sends panics.
/// No retries, timeouts or batching of its own: those are the layers of
/// `coordinator-services`, which [`PrpcCoordinator`] puts on top. Cheap to
/// clone (clones share the connection pool).
#[derive(Clone)]
pub struct PrpcServices {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// `{scheme}://{host}/prpc/logdog.Services/`.
    base: String,
    codec: Codec,
    token_source: Option<SharedTokenSource>,
    max_response_size: usize,
    gzip_threshold: Option<usize>,
}

impl fmt::Debug for PrpcServices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("PrpcServices")
            .field("base", &i.base)
            .field("encoding", &i.codec.encoding())
            .field(
                "token_source",
                &i.token_source.as_ref().map(|_| "<redacted>"),
            )
            .field("max_response_size", &i.max_response_size)
            .field("gzip_threshold", &i.gzip_threshold)
            .finish_non_exhaustive()
    }
}

impl PrpcServices {
    /// The transport for `url` with the default options (see
    /// [`PrpcCoordinatorBuilder::build_transport`] for others).
    pub fn new(url: &str) -> Result<PrpcServices, BuildError> {
        PrpcCoordinatorBuilder::default().build_transport(url)
    }

    /// The URL prefix calls are posted to (`{scheme}://{host}/prpc/logdog.Services/`).
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// The encoding of requests and responses.
    pub fn encoding(&self) -> Encoding {
        self.inner.codec.encoding()
    }

    /// One unary call of `method`, request type `req_type`, response type
    /// `resp_type` (full protobuf names, for JSON).
    async fn call<Req: Message, Resp: Message + Default>(
        &self,
        options: CallOptions,
        method: &str,
        (req_type, resp_type): (&str, &str),
        request: &Req,
    ) -> Result<Resp, Error> {
        let inner = &*self.inner;
        let limit = options
            .max_response_size
            .map_or(inner.max_response_size, |b| b.min(inner.max_response_size));
        let mut headers = HeaderMap::new();
        let media_type = HeaderValue::from_static(inner.codec.encoding().media_type());
        headers.insert(header::CONTENT_TYPE, media_type.clone());
        headers.insert(header::ACCEPT, media_type);
        headers.insert(wire::MAX_RESPONSE_SIZE_HEADER, HeaderValue::from(limit));
        if let Some(remaining) = options.remaining() {
            if remaining.is_zero() {
                return Err(Error::deadline_exceeded(format!(
                    "{method}: the deadline passed before the call was sent"
                )));
            }
            let value = HeaderValue::try_from(wire::format_timeout(remaining))
                .map_err(|e| Error::internal(format!("timeout header: {e}")))?;
            headers.insert(wire::TIMEOUT_HEADER, value);
        }
        if let Some(source) = &inner.token_source {
            headers.insert(header::AUTHORIZATION, authorization(source.as_ref()).await?);
        }
        let mut body = inner.codec.encode(req_type, request)?;
        if inner.gzip_threshold.is_some_and(|t| body.len() > t) {
            body = gzip(&body)?;
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }

        let url = format!("{}{method}", inner.base);
        let response = inner
            .http
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| send_error(method, &e))?;

        let outcome = Outcome::of(
            response
                .headers()
                .get(wire::CODE_HEADER)
                .map(HeaderValue::as_bytes),
            response.status().as_u16(),
        );
        if outcome != Outcome::Ok {
            let body = read_body(response, wire::MAX_ERROR_BODY, Overflow::Truncate).await?;
            return Err(outcome
                .error(&body)
                .unwrap_or_else(|| Error::internal(format!("{method}: unexpected pRPC outcome"))));
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("<not text>"));
        let encoding = inner.codec.encoding();
        if !encoding.matches(content_type) {
            return Err(Error::internal(format!(
                "{method}: response Content-Type {:?} is not the requested {:?}",
                content_type.unwrap_or(""),
                encoding.media_type()
            ))
            .with_retry(false));
        }
        let body = read_body(response, limit, Overflow::Refuse).await?;
        inner.codec.decode(resp_type, &body)
    }
}

/// The `Authorization` header value with a token from `source`
/// ([`auth::bearer`]), marked sensitive.
async fn authorization(source: &dyn TokenSource) -> Result<HeaderValue, Error> {
    let bearer = auth::bearer(source).await?;
    let mut value = HeaderValue::from_str(bearer.expose())
        .map_err(|_| Error::unavailable("the access token is not a valid header value"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// `body`, gzipped.
fn gzip(body: &[u8]) -> Result<Vec<u8>, Error> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 2),
        flate2::Compression::fast(),
    );
    encoder
        .write_all(body)
        .and_then(|()| encoder.finish())
        .map_err(|e| Error::internal(format!("gzip of the request body: {e}")))
}

/// The error for a failure to send a request or read its answer: transient
/// `Unavailable` (connection refused or reset, IO timeout), or a transient
/// `Internal` for a body that does not decompress.
fn send_error(method: &str, error: &reqwest::Error) -> Error {
    let mut message = format!("{method}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    let message = coordinator_services::convert::truncate_message(&message).into_owned();
    if error.is_decode() {
        Error::internal(message)
    } else {
        Error::unavailable(message)
    }
}

/// What to do with a body over the limit.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Overflow {
    /// Keep the first `limit` bytes (an error message).
    Truncate,
    /// Fail: a transient `Unavailable` error that is not retried.
    Refuse,
}

/// Reads `response`'s body, at most `limit` bytes of it (counted after
/// decompression). Reading stops as soon as the limit is passed.
async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
    overflow: Overflow,
) -> Result<Vec<u8>, Error> {
    let too_large = |what: String| {
        Error::unavailable(format!(
            "the response body ({what}) is larger than the limit of {limit} bytes"
        ))
        .with_retry(false)
    };
    let declared = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        .or_else(|| response.content_length());
    if overflow == Overflow::Refuse
        && let Some(len) = declared
        && len > limit as u64
    {
        return Err(too_large(format!("Content-Length {len}")));
    }
    let capacity = declared
        .map_or(0, |len| len.min(limit as u64) as usize)
        .min(1 << 20);
    let mut body = Vec::with_capacity(capacity);
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Ok(body),
            Err(e) if overflow == Overflow::Truncate && !body.is_empty() => {
                // An error message cut short is still worth having.
                tracing::debug!("reading a pRPC error body: {e}");
                return Ok(body);
            }
            Err(e) => return Err(send_error("reading the response", &e)),
        };
        let room = limit - body.len();
        if chunk.len() > room {
            return match overflow {
                Overflow::Truncate => {
                    body.extend_from_slice(&chunk[..room]);
                    Ok(body)
                }
                Overflow::Refuse => Err(too_large(format!("over {limit} bytes read"))),
            };
        }
        body.extend_from_slice(&chunk);
    }
}

macro_rules! rpc {
    ($self:ident, $options:ident, $method:literal, $req:literal => $resp:literal, $request:ident) => {
        CoordinatorFuture::new($self.call(
            $options,
            $method,
            (concat!("logdog.", $req), $resp),
            $request,
        ))
    };
}

impl ServicesClient for PrpcServices {
    fn register_stream<'a>(
        &'a self,
        options: CallOptions,
        request: &'a proto::RegisterStreamRequest,
    ) -> ServicesFuture<'a, proto::RegisterStreamResponse> {
        rpc!(self, options, "RegisterStream",
            "RegisterStreamRequest" => "logdog.RegisterStreamResponse", request)
    }

    fn terminate_stream<'a>(
        &'a self,
        options: CallOptions,
        request: &'a proto::TerminateStreamRequest,
    ) -> ServicesFuture<'a, ()> {
        rpc!(self, options, "TerminateStream",
            "TerminateStreamRequest" => "google.protobuf.Empty", request)
    }

    fn batch<'a>(
        &'a self,
        options: CallOptions,
        request: &'a proto::BatchRequest,
    ) -> ServicesFuture<'a, proto::BatchResponse> {
        rpc!(self, options, "Batch", "BatchRequest" => "logdog.BatchResponse", request)
    }

    fn load_stream<'a>(
        &'a self,
        options: CallOptions,
        request: &'a proto::LoadStreamRequest,
    ) -> ServicesFuture<'a, proto::LoadStreamResponse> {
        rpc!(self, options, "LoadStream",
            "LoadStreamRequest" => "logdog.LoadStreamResponse", request)
    }
}

/// A [`Coordinator`] that speaks LogDog's `logdog.Services` API over pRPC
/// (HTTP/1.1, what the production Coordinator serves): the [`PrpcServices`]
/// transport under the usual layers of `coordinator-services`
/// ([`ServicesStack`]), adapted by a [`ServicesCoordinator`].
///
/// Retries, attempt timeout, deadline, concurrency limit and batching behave
/// as for every transport (`docs/behaviour.md` §4–5); see
/// [`PrpcCoordinatorBuilder`] for the options. Cheap to clone (clones share
/// the connection pool, options and batching queue).
///
/// ```no_run
/// use std::time::Duration;
/// use coordinator_api::{Coordinator, RegisterRequest};
/// use coordinator_prpc::{BatchOptions, PrpcCoordinator, RetryPolicy};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// // A local test server over plain HTTP:
/// let coordinator = PrpcCoordinator::builder()
///     .insecure(true)
///     .batching(BatchOptions::default())
///     .retry(RetryPolicy::default().with_max_retries(3))
///     .concurrency_limit(4)
///     .connect("http://127.0.0.1:8080")
///     .await?;
/// let request = RegisterRequest::parse("chromium", "builds/1/+/stdout", &[7; 36], None)?;
/// let state = coordinator.register_stream(&request, b"descriptor").await?;
/// println!("registered {} as {}", state.path, state.id);
/// coordinator.close().await;
///
/// // The production Coordinator, over HTTPS with a token:
/// let production = PrpcCoordinator::builder()
///     .bearer_token("ya29.token")
///     .build("logs.example.com")?;
/// # let _ = production; Ok(()) }
/// ```
#[derive(Clone)]
pub struct PrpcCoordinator {
    coordinator: ServicesCoordinator,
    transport: PrpcServices,
    retry: RetryPolicy,
}

impl fmt::Debug for PrpcCoordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrpcCoordinator")
            .field("transport", &self.transport)
            .field("stack", &self.coordinator)
            .finish()
    }
}

impl PrpcCoordinator {
    /// A builder for the options (scheme, encoding, auth, limits, pool, stack).
    pub fn builder() -> PrpcCoordinatorBuilder {
        PrpcCoordinatorBuilder::default()
    }

    /// A coordinator for `url` (see [`PrpcCoordinatorBuilder::build`]) with
    /// the default options.
    pub fn new(url: &str) -> Result<PrpcCoordinator, BuildError> {
        PrpcCoordinatorBuilder::default().build(url)
    }

    /// The batching client calls go through, if batching is on (for its
    /// [`stats`](BatchingClient::stats)).
    pub fn batching_client(&self) -> Option<&BatchingClient> {
        self.coordinator.batching_client()
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The transport under the stack (one attempt per RPC, for calls the
    /// `Coordinator` interface has no method for, such as `LoadStream`).
    pub fn transport(&self) -> &PrpcServices {
        &self.transport
    }

    /// The layered client the coordinator sends through.
    pub fn services(&self) -> &SharedClient {
        self.coordinator.client()
    }

    /// With batching on, sends what is queued and waits for all outstanding
    /// batches ([`BatchingClient::flush`]); otherwise returns at once.
    pub async fn flush(&self) {
        self.coordinator.flush().await;
    }

    /// With batching on, flushes and stops the batching client
    /// ([`BatchingClient::close`]): later calls fail with a transient
    /// `Unavailable` error. Otherwise returns at once.
    pub async fn close(&self) {
        self.coordinator.close().await;
    }
}

impl Coordinator for PrpcCoordinator {
    /// Registers the stream: validates the request (nothing is sent if it is
    /// invalid), then sends it (directly or batched) with retries.
    fn register_stream<'a>(
        &'a self,
        request: &'a RegisterRequest,
        desc: &'a [u8],
    ) -> CoordinatorFuture<'a, Result<Arc<LogStreamState>, Error>> {
        self.coordinator.register_stream(request, desc)
    }

    /// Records the terminal index (directly or batched) with retries.
    fn terminate_stream<'a>(
        &'a self,
        request: &'a TerminateRequest,
    ) -> CoordinatorFuture<'a, Result<(), Error>> {
        self.coordinator.terminate_stream(request)
    }
}

/// Options for a [`PrpcCoordinator`] (and its [`PrpcServices`]); from
/// [`PrpcCoordinator::builder`].
///
/// The URL: `host[:port]` means `https://host[:port]` (or `http://` with
/// [`insecure(true)`](Self::insecure)); an explicit `https://` URL is always
/// allowed; an explicit `http://` URL only with `insecure(true)`, so plain
/// HTTP is never used by accident. The URL may not have a path, query or
/// fragment.
///
/// Every option has a production default; see each method. The stack options
/// (retries, timeouts, concurrency, batching) are a [`ServicesStack`]'s.
#[derive(Clone)]
pub struct PrpcCoordinatorBuilder {
    stack: ServicesStack,
    insecure: bool,
    encoding: Encoding,
    token_source: Option<SharedTokenSource>,
    user_agent: String,
    connect_timeout: Option<Duration>,
    pool_max_idle_per_host: Option<usize>,
    pool_idle_timeout: Option<Duration>,
    max_response_size: usize,
    gzip_threshold: Option<usize>,
    http_client: Option<reqwest::Client>,
}

impl Default for PrpcCoordinatorBuilder {
    fn default() -> Self {
        PrpcCoordinatorBuilder {
            stack: ServicesStack::default(),
            insecure: false,
            encoding: Encoding::Binary,
            token_source: None,
            user_agent: USER_AGENT.to_owned(),
            connect_timeout: Some(Duration::from_secs(10)),
            pool_max_idle_per_host: None,
            pool_idle_timeout: Some(Duration::from_secs(90)),
            max_response_size: DEFAULT_MAX_RESPONSE_SIZE,
            gzip_threshold: Some(DEFAULT_GZIP_THRESHOLD),
            http_client: None,
        }
    }
}

impl fmt::Debug for PrpcCoordinatorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrpcCoordinatorBuilder")
            .field("stack", &self.stack)
            .field("insecure", &self.insecure)
            .field("encoding", &self.encoding)
            .field(
                "token_source",
                &self.token_source.as_ref().map(|_| "<redacted>"),
            )
            .field("user_agent", &self.user_agent)
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_max_idle_per_host", &self.pool_max_idle_per_host)
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .field("max_response_size", &self.max_response_size)
            .field("gzip_threshold", &self.gzip_threshold)
            .field("http_client", &self.http_client.is_some())
            .finish()
    }
}

impl PrpcCoordinatorBuilder {
    /// How transient failures are retried. Default [`RetryPolicy::default`]
    /// (first delay 1 s, 5 retries); [`RetryPolicy::none`] turns retries off.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.stack = self.stack.retry(policy);
        self
    }

    /// The timeout of each attempt (also sent as `X-Prpc-Grpc-Timeout`).
    /// Default 30 s; `None` for no timeout.
    pub fn attempt_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.stack = self.stack.attempt_timeout(timeout);
        self
    }

    /// An overall deadline per call, across all attempts and backoff delays
    /// (and queueing, with batching). Default `None`.
    pub fn deadline(mut self, deadline: impl Into<Option<Duration>>) -> Self {
        self.stack = self.stack.deadline(deadline);
        self
    }

    /// At most `limit` RPCs in flight at once (with batching: `Batch` RPCs).
    /// Default unlimited; 0 means unlimited.
    pub fn concurrency_limit(mut self, limit: usize) -> Self {
        self.stack = self.stack.concurrency_limit(limit);
        self
    }

    /// Sends calls through a [`BatchingClient`] with `options` instead of as
    /// single RPCs. Default off.
    pub fn batching(mut self, options: BatchOptions) -> Self {
        self.stack = self.stack.batching(options);
        self
    }

    /// All the stack options at once (replacing those set before).
    pub fn stack(mut self, stack: ServicesStack) -> Self {
        self.stack = stack;
        self
    }

    /// Allows plain HTTP: a URL without a scheme means `http://`, and an
    /// explicit `http://` URL is accepted. For local servers only. Default
    /// `false` (HTTPS).
    pub fn insecure(mut self, insecure: bool) -> Self {
        self.insecure = insecure;
        self
    }

    /// The encoding of requests and responses. Default [`Encoding::Binary`].
    pub fn encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Gets a token from `source` for every attempt and sends it as
    /// `Authorization: Bearer <token>` (wrap a slow source in a
    /// [`CachedTokenSource`](coordinator_services::auth::CachedTokenSource)).
    /// Failing to get one is a transient `Unavailable` error. Replaces a
    /// [`bearer_token`](Self::bearer_token). Default none.
    pub fn token_source(mut self, source: impl TokenSource + 'static) -> Self {
        self.token_source = Some(Arc::new(source));
        self
    }

    /// Sends `Authorization: Bearer <token>` with every request (a
    /// [`StaticToken`]). The token never shows in `Debug` output or errors.
    /// Replaces a [`token_source`](Self::token_source). Default none.
    pub fn bearer_token(self, token: impl Into<String>) -> Self {
        self.token_source(StaticToken::new(token.into()))
    }

    /// The `User-Agent`. Default `coordinator-prpc/<version>`.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// How long opening a connection may take. Default 10 s; `None` for no
    /// limit.
    pub fn connect_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.connect_timeout = timeout.into();
        self
    }

    /// At most `max` idle keep-alive connections kept per host. Default
    /// unlimited (reqwest's); 0 disables reuse.
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = Some(max);
        self
    }

    /// How long an idle keep-alive connection is kept. Default 90 s; `None`
    /// for no limit.
    pub fn pool_idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.pool_idle_timeout = timeout.into();
        self
    }

    /// The largest response body accepted, in bytes (sent as
    /// `X-Prpc-Max-Response-Size`; a call's own bound may be smaller).
    /// Default 32 MiB.
    pub fn max_response_size(mut self, bytes: usize) -> Self {
        self.max_response_size = bytes;
        self
    }

    /// Request bodies larger than this are gzipped (`None`: never). Default
    /// 1 KiB.
    pub fn gzip_threshold(mut self, bytes: impl Into<Option<usize>>) -> Self {
        self.gzip_threshold = bytes.into();
        self
    }

    /// Sends through `client` instead of one this builder makes (the user
    /// agent, connect timeout and pool options are then `client`'s). The
    /// client should follow no redirects and decompress gzip.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http_client = Some(client);
        self
    }

    /// The HTTP client this builder would use.
    fn make_http_client(&self) -> Result<reqwest::Client, BuildError> {
        if let Some(client) = &self.http_client {
            return Ok(client.clone());
        }
        let mut builder = reqwest::Client::builder()
            .http1_only()
            .user_agent(self.user_agent.clone())
            .redirect(reqwest::redirect::Policy::none())
            .gzip(true)
            .pool_idle_timeout(self.pool_idle_timeout);
        if let Some(timeout) = self.connect_timeout {
            builder = builder.connect_timeout(timeout);
        }
        if let Some(max) = self.pool_max_idle_per_host {
            builder = builder.pool_max_idle_per_host(max);
        }
        builder.build().map_err(BuildError::HttpClient)
    }

    /// `{scheme}://{host}/prpc/logdog.Services/` for `url`, per the scheme
    /// rules above.
    fn base_url(&self, url: &str) -> Result<String, BuildError> {
        let invalid = |reason: &str| BuildError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let full = if url.contains("://") {
            url.to_owned()
        } else if self.insecure {
            format!("http://{url}")
        } else {
            format!("https://{url}")
        };
        let parsed = reqwest::Url::parse(&full).map_err(|e| invalid(&e.to_string()))?;
        match parsed.scheme() {
            "https" => {}
            "http" if self.insecure => {}
            "http" => {
                return Err(BuildError::Insecure {
                    url: url.to_owned(),
                });
            }
            _ => return Err(invalid("the scheme must be https or http")),
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(invalid("no host"));
        }
        if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
            return Err(invalid("a base URL has no path or query"));
        }
        if parsed.fragment().is_some() || !parsed.username().is_empty() {
            return Err(invalid("a base URL has no fragment or user"));
        }
        let origin = parsed.as_str().trim_end_matches('/');
        Ok(format!("{origin}/prpc/{SERVICE}/"))
    }

    /// Only the transport (one attempt per RPC, no stack) for `url`, with
    /// this builder's scheme, encoding, token, limits and HTTP options.
    pub fn build_transport(&self, url: &str) -> Result<PrpcServices, BuildError> {
        let base = self.base_url(url)?;
        let codec = Codec::new(self.encoding).map_err(BuildError::Descriptors)?;
        Ok(PrpcServices {
            inner: Arc::new(Inner {
                http: self.make_http_client()?,
                base,
                codec,
                token_source: self.token_source.clone(),
                max_response_size: self.max_response_size,
                gzip_threshold: self.gzip_threshold,
            }),
        })
    }

    /// Builds a coordinator for `url`. Connections are opened on first use
    /// and kept alive in a pool. Errors if the URL or an option is invalid,
    /// or batching is on and no Tokio runtime is running.
    pub fn build(self, url: &str) -> Result<PrpcCoordinator, BuildError> {
        let transport = self.build_transport(url)?;
        let coordinator = self.stack.build(transport.clone())?;
        Ok(PrpcCoordinator {
            coordinator,
            transport,
            retry: self.stack.retry,
        })
    }

    /// [`build`](Self::build), as an `async fn` to read like
    /// `GrpcCoordinatorBuilder::connect`. It does not connect eagerly: HTTP/1.1
    /// connections are opened per need (and reused); an unreachable server
    /// shows as a transient `Unavailable` error on the first call.
    pub async fn connect(self, url: &str) -> Result<PrpcCoordinator, BuildError> {
        self.build(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_schemes() {
        let b = PrpcCoordinator::builder();
        assert_eq!(
            b.base_url("logs.example.com").unwrap(),
            "https://logs.example.com/prpc/logdog.Services/"
        );
        assert_eq!(
            b.base_url("https://h:8443/").unwrap(),
            "https://h:8443/prpc/logdog.Services/"
        );
        assert!(matches!(
            b.base_url("http://127.0.0.1:1"),
            Err(BuildError::Insecure { .. })
        ));
        for bad in ["ftp://h", "https://h/x", "https://h?q", "https://", "a b"] {
            assert!(
                matches!(b.base_url(bad), Err(BuildError::InvalidUrl { .. })),
                "{bad}"
            );
        }
        let b = b.insecure(true);
        assert_eq!(
            b.base_url("127.0.0.1:1").unwrap(),
            "http://127.0.0.1:1/prpc/logdog.Services/"
        );
        assert_eq!(
            b.base_url("http://127.0.0.1:1").unwrap(),
            "http://127.0.0.1:1/prpc/logdog.Services/"
        );
        assert_eq!(
            b.base_url("https://h").unwrap(),
            "https://h/prpc/logdog.Services/"
        );
    }

    #[test]
    fn gzip_round_trips() {
        let data = vec![7u8; 10_000];
        let zipped = gzip(&data).unwrap();
        assert!(zipped.len() < 200);
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&zipped[..]), &mut out)
            .unwrap();
        assert_eq!(out, data);
    }
}
