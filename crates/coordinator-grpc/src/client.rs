//! [`GrpcServices`], the tonic transport, and [`GrpcCoordinator`], the usual
//! stack over it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use coordinator_api::{
    Coordinator, CoordinatorFuture, Error, LogStreamState, RegisterRequest, TerminateRequest,
};
use coordinator_services::auth::{self, SharedTokenSource, TokenSource};
use coordinator_services::{
    BatchOptions, BatchingClient, CallOptions, RetryPolicy, ServicesClient, ServicesCoordinator,
    ServicesFuture, ServicesStack,
};
use tonic::codegen::{Body, Bytes, StdError, http};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use crate::BuildError;
use crate::convert::{ServiceError, error_from_status};
use crate::proto::logdog as proto;
use crate::sanitize::{sanitize_frame, strip_malformed_details};
use http_body_util::BodyExt;

/// The type-erased HTTP/2 service every [`GrpcServices`] sends through.
type BoxedService = BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    ServiceError,
>;

/// A per-request metadata hook: gets each request's metadata (no message) before
/// it is sent; an error status fails the call without sending it.
type Interceptor =
    Arc<dyn Fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send + Sync>;

/// The default user agent prefix (tonic appends its own).
const USER_AGENT: &str = concat!("coordinator-grpc/", env!("CARGO_PKG_VERSION"));

/// The largest response accepted, and the largest request sent (32 MiB, the
/// Coordinator's request size limit).
const MAX_MESSAGE_SIZE: usize = 32 * 1024 * 1024;

/// The tonic transport: one attempt of each `logdog.Services` RPC over gRPC, as
/// a [`ServicesClient`].
///
/// - Each call sends the time left of its [`CallOptions`] deadline as
///   `grpc-timeout`, the bearer token and the interceptor's metadata, and
///   refuses a response over the smaller of the call's `max_response_size` and
///   the client's limit (a transient `Unavailable` error that is not retried).
/// - Errors per [`error_from_status`]: the server's status keeps its code and
///   message; connection failures are transient `Unavailable`.
/// - A malformed `grpc-status-details-bin` is dropped before tonic reads it
///   (tonic would panic on it).
/// - No retries, timeouts or batching of its own: those are the layers of
///   `coordinator-services`, which [`GrpcCoordinator`] puts on top.
///
/// Cheap to clone (clones share the channel).
#[derive(Clone)]
pub struct GrpcServices {
    client: tonic::client::Grpc<BoxedService>,
    config: Arc<CallConfig>,
}

struct CallConfig {
    authorization: Option<AsciiMetadataValue>,
    token_source: Option<SharedTokenSource>,
    interceptor: Option<Interceptor>,
    max_message_size: usize,
}

impl fmt::Debug for GrpcServices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("GrpcServices")
            .field(
                "bearer_token",
                &c.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "token_source",
                &c.token_source.as_ref().map(|_| "<redacted>"),
            )
            .field("interceptor", &c.interceptor.is_some())
            .field("max_message_size", &c.max_message_size)
            .finish_non_exhaustive()
    }
}

impl GrpcServices {
    /// The transport over `channel`, with no token or interceptor and a 32 MiB
    /// message limit. Use [`GrpcCoordinatorBuilder::build_transport`] for
    /// other options.
    pub fn new(channel: Channel) -> GrpcServices {
        GrpcServices::with_config(boxed(channel), None, None, None, MAX_MESSAGE_SIZE)
    }

    fn with_config(
        service: BoxedService,
        authorization: Option<AsciiMetadataValue>,
        token_source: Option<SharedTokenSource>,
        interceptor: Option<Interceptor>,
        max_message_size: usize,
    ) -> GrpcServices {
        let client = tonic::client::Grpc::new(service).max_encoding_message_size(max_message_size);
        GrpcServices {
            client,
            config: Arc::new(CallConfig {
                authorization,
                token_source,
                interceptor,
                max_message_size,
            }),
        }
    }

    /// A client for one call: the response limit is the smaller of the call's
    /// and this transport's.
    fn client(&self, options: &CallOptions) -> tonic::client::Grpc<BoxedService> {
        let limit = options
            .max_response_size
            .map_or(self.config.max_message_size, |bytes| {
                bytes.min(self.config.max_message_size)
            });
        self.client.clone().max_decoding_message_size(limit)
    }

    /// The request for one attempt: a token from the token source (asked per
    /// attempt) or the static bearer token, the time left as `grpc-timeout`,
    /// then the interceptor.
    async fn prepare<M>(
        &self,
        options: &CallOptions,
        message: M,
    ) -> Result<tonic::Request<M>, Error> {
        let authorization = match &self.config.token_source {
            Some(source) => Some(authorization(source.as_ref()).await?),
            None => self.config.authorization.clone(),
        };
        let mut request = tonic::Request::new(message);
        if let Some(remaining) = options.remaining() {
            request.set_timeout(remaining);
        }
        if let Some(token) = authorization {
            request.metadata_mut().insert("authorization", token);
        }
        if let Some(interceptor) = &self.config.interceptor {
            let (metadata, extensions, message) = request.into_parts();
            let intercepted = interceptor(tonic::Request::from_parts(metadata, extensions, ()))
                .map_err(|status| error_from_status(&status))?;
            let (metadata, extensions, ()) = intercepted.into_parts();
            request = tonic::Request::from_parts(metadata, extensions, message);
        }
        Ok(request)
    }
}

/// The `authorization` metadata with a token from `source`
/// ([`auth::bearer`]), marked sensitive.
async fn authorization(source: &dyn TokenSource) -> Result<AsciiMetadataValue, Error> {
    let bearer = auth::bearer(source).await?;
    let mut value: AsciiMetadataValue = MetadataValue::try_from(bearer.expose())
        .map_err(|_| Error::unavailable("the access token is not a valid metadata value"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// The answer of one tonic call.
fn answer<R>(result: Result<tonic::Response<R>, tonic::Status>) -> Result<R, Error> {
    result
        .map(tonic::Response::into_inner)
        .map_err(|status| error_from_status(&status))
}

impl GrpcServices {
    /// One unary call of `logdog.Services/{method}`: the message is encoded
    /// once, from the borrowed request, and sent as it is.
    async fn unary<M, R>(
        &self,
        options: &CallOptions,
        method: &'static str,
        path: &'static str,
        message: &M,
    ) -> Result<R, Error>
    where
        M: prost::Message,
        R: prost::Message + Default + Send + 'static,
    {
        let encoded = Bytes::from(message.encode_to_vec());
        let mut request = self.prepare(options, encoded).await?;
        request
            .extensions_mut()
            .insert(tonic::GrpcMethod::new("logdog.Services", method));
        let mut client = self.client(options);
        // As tonic's generated clients report it (a transport failure).
        client.ready().await.map_err(|e| {
            error_from_status(&tonic::Status::unknown(format!(
                "Service was not ready: {e}"
            )))
        })?;
        let path = http::uri::PathAndQuery::from_static(path);
        answer(client.unary(request, path, Encoded::<R>::default()).await)
    }
}

/// The codec of [`GrpcServices::unary`]: requests go out as the bytes
/// already encoded, responses are decoded as `R` by prost.
struct Encoded<R>(std::marker::PhantomData<fn() -> R>);

impl<R> Default for Encoded<R> {
    fn default() -> Self {
        Encoded(std::marker::PhantomData)
    }
}

impl<R: prost::Message + Default + Send + 'static> tonic::codec::Codec for Encoded<R> {
    type Encode = Bytes;
    type Decode = R;
    type Encoder = EncodedEncoder;
    type Decoder = tonic_prost::ProstDecoder<R>;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

/// Writes an already-encoded message.
struct EncodedEncoder;

impl tonic::codec::Encoder for EncodedEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut;
        dst.put(item);
        Ok(())
    }
}

impl ServicesClient for GrpcServices {
    fn register_stream<'a>(
        &'a self,
        options: CallOptions,
        request: &'a proto::RegisterStreamRequest,
    ) -> ServicesFuture<'a, proto::RegisterStreamResponse> {
        CoordinatorFuture::new(async move {
            self.unary(
                &options,
                "RegisterStream",
                "/logdog.Services/RegisterStream",
                request,
            )
            .await
        })
    }

    fn terminate_stream<'a>(
        &'a self,
        options: CallOptions,
        request: &'a proto::TerminateStreamRequest,
    ) -> ServicesFuture<'a, ()> {
        CoordinatorFuture::new(async move {
            self.unary::<_, ()>(
                &options,
                "TerminateStream",
                "/logdog.Services/TerminateStream",
                request,
            )
            .await
        })
    }

    fn batch<'a>(
        &'a self,
        options: CallOptions,
        request: &'a proto::BatchRequest,
    ) -> ServicesFuture<'a, proto::BatchResponse> {
        CoordinatorFuture::new(async move {
            self.unary(&options, "Batch", "/logdog.Services/Batch", request)
                .await
        })
    }

    fn load_stream<'a>(
        &'a self,
        options: CallOptions,
        request: &'a proto::LoadStreamRequest,
    ) -> ServicesFuture<'a, proto::LoadStreamResponse> {
        CoordinatorFuture::new(async move {
            self.unary(
                &options,
                "LoadStream",
                "/logdog.Services/LoadStream",
                request,
            )
            .await
        })
    }
}

/// A [`Coordinator`] that speaks LogDog's `logdog.Services` API over gRPC: the
/// [`GrpcServices`] transport under the usual layers of `coordinator-services`
/// ([`ServicesStack`]), adapted by a [`ServicesCoordinator`].
///
/// - Requests are sent as single RPCs (the default) or queued through a
///   [`BatchingClient`] and sent as `Batch` RPCs
///   ([`GrpcCoordinatorBuilder::batching`], [`GrpcCoordinator::batched`]).
/// - Transient failures are retried per the [`RetryPolicy`] (default: first
///   delay 1 s, 5 retries, with jitter); permanent errors never are. Each
///   attempt has a timeout (default 30 s) and the whole call an optional
///   deadline.
/// - Errors: a server's status keeps its code and message and is transient iff
///   the code is; transport failures are transient `Unavailable`; timeouts are
///   transient `DeadlineExceeded`; a malformed response is a transient
///   `Internal` error naming the field. Nothing the server sends causes a panic.
/// - The returned state carries the request's project and path.
/// - Cheap to clone (clones share the channel, options and batching queue).
///   Cancel-safe: dropping a call's future abandons it (a batched entry not yet
///   sent is dropped from its batch).
///
/// ```no_run
/// use std::time::Duration;
/// use coordinator_api::{Coordinator, RegisterRequest};
/// use coordinator_grpc::{GrpcCoordinator, RetryPolicy};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let coordinator = GrpcCoordinator::builder()
///     .retry(RetryPolicy::default().with_max_retries(3))
///     .deadline(Duration::from_secs(20))
///     .bearer_token("ya29.token")
///     .connect_lazy("http://127.0.0.1:50051")?;
/// let request = RegisterRequest::parse("chromium", "builds/1/+/stdout", &[7; 36], None)?;
/// let state = coordinator.register_stream(&request, b"descriptor").await?;
/// println!("registered {} as {}", state.path, state.id);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct GrpcCoordinator {
    coordinator: ServicesCoordinator,
    transport: GrpcServices,
    retry: RetryPolicy,
}

impl fmt::Debug for GrpcCoordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcCoordinator")
            .field("transport", &self.transport)
            .field("stack", &self.coordinator)
            .finish()
    }
}

impl GrpcCoordinator {
    /// A coordinator over `channel` with the default options: direct RPCs, the
    /// default [`RetryPolicy`], a 30 s attempt timeout, no deadline.
    pub fn new(channel: Channel) -> GrpcCoordinator {
        GrpcCoordinator::from_service(channel)
    }

    /// A coordinator over any HTTP/2 service tonic's generated client accepts (a
    /// `Channel` with your own tower layers, for example), with the default
    /// options. Use [`GrpcCoordinatorBuilder::build_service`] for other options.
    pub fn from_service<S, B>(service: S) -> GrpcCoordinator
    where
        S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<StdError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<StdError>,
    {
        let transport =
            GrpcServices::with_config(boxed(service), None, None, None, MAX_MESSAGE_SIZE);
        let stack = ServicesStack::default();
        // Without batching, building the stack needs no runtime and cannot fail.
        let (client, _) = match stack.layer(transport.clone()) {
            Ok(layered) => layered,
            Err(_) => (Arc::new(transport.clone()) as _, None),
        };
        GrpcCoordinator {
            coordinator: ServicesCoordinator::new(client),
            transport,
            retry: stack.retry,
        }
    }

    /// Connects eagerly to `url` (e.g. `"http://127.0.0.1:50051"`) with the
    /// default options. Errors if the URL is invalid or the connection fails.
    pub async fn connect(url: impl Into<String>) -> Result<GrpcCoordinator, BuildError> {
        GrpcCoordinatorBuilder::default().connect(url).await
    }

    /// A coordinator for `url` that connects on first use (and reconnects after
    /// failures), with the default options. Must be called within a Tokio
    /// runtime.
    pub fn connect_lazy(url: impl Into<String>) -> Result<GrpcCoordinator, BuildError> {
        GrpcCoordinatorBuilder::default().connect_lazy(url)
    }

    /// A coordinator over `channel` that sends its calls through a
    /// [`BatchingClient`] with `options`, otherwise with the default options.
    /// Must be called within a Tokio runtime.
    pub fn batched(channel: Channel, options: BatchOptions) -> Result<GrpcCoordinator, BuildError> {
        GrpcCoordinatorBuilder::default()
            .batching(options)
            .build(channel)
    }

    /// A builder for the other options (retries, timeouts, TLS, auth,
    /// concurrency, user agent, batching).
    pub fn builder() -> GrpcCoordinatorBuilder {
        GrpcCoordinatorBuilder::default()
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
    pub fn transport(&self) -> &GrpcServices {
        &self.transport
    }

    /// The layered client the coordinator sends through.
    pub fn services(&self) -> &coordinator_services::SharedClient {
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

impl Coordinator for GrpcCoordinator {
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

fn boxed<S, B>(service: S) -> BoxedService
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<StdError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError>,
{
    BoxCloneSyncService::new(
        service
            .map_response(|response: http::Response<B>| {
                let (mut parts, body) = response.into_parts();
                strip_malformed_details(&mut parts.headers);
                http::Response::from_parts(
                    parts,
                    tonic::body::Body::new(body.map_frame(sanitize_frame)),
                )
            })
            .map_err(|error: S::Error| ServiceError(error.into())),
    )
}

/// Options for a [`GrpcCoordinator`]; from [`GrpcCoordinator::builder`].
///
/// Every option has a production default; see each method. The stack options
/// (retries, timeouts, concurrency, batching) are a [`ServicesStack`]'s.
/// Endpoint options (user agent, TLS, connect timeout) apply to the channels
/// this builder makes ([`connect`](Self::connect),
/// [`connect_lazy`](Self::connect_lazy)); for a channel you build yourself, set
/// them on your `Endpoint`.
#[derive(Clone)]
pub struct GrpcCoordinatorBuilder {
    stack: ServicesStack,
    bearer_token: Option<String>,
    token_source: Option<SharedTokenSource>,
    interceptor: Option<Interceptor>,
    user_agent: String,
    connect_timeout: Option<Duration>,
    max_message_size: usize,
    #[cfg(feature = "tls")]
    tls: Option<tonic::transport::ClientTlsConfig>,
}

impl Default for GrpcCoordinatorBuilder {
    fn default() -> Self {
        GrpcCoordinatorBuilder {
            stack: ServicesStack::default(),
            bearer_token: None,
            token_source: None,
            interceptor: None,
            user_agent: USER_AGENT.to_owned(),
            connect_timeout: Some(Duration::from_secs(10)),
            max_message_size: MAX_MESSAGE_SIZE,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl fmt::Debug for GrpcCoordinatorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcCoordinatorBuilder")
            .field("stack", &self.stack)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "token_source",
                &self.token_source.as_ref().map(|_| "<redacted>"),
            )
            .field("interceptor", &self.interceptor.is_some())
            .field("user_agent", &self.user_agent)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_message_size", &self.max_message_size)
            .finish_non_exhaustive()
    }
}

impl GrpcCoordinatorBuilder {
    /// How transient failures are retried. Default [`RetryPolicy::default`]
    /// (first delay 1 s, 5 retries); [`RetryPolicy::none`] turns retries off.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.stack = self.stack.retry(policy);
        self
    }

    /// The timeout of each attempt (also sent to the server as `grpc-timeout`).
    /// A timed-out attempt is a transient `DeadlineExceeded` error, and may be
    /// retried. Default 30 s; `None` for no timeout. With batching, it bounds
    /// each `Batch` RPC, not the time an entry waits in the queue.
    pub fn attempt_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.stack = self.stack.attempt_timeout(timeout);
        self
    }

    /// An overall deadline per call, across all attempts and backoff delays
    /// (and queueing, with batching). When it passes, the call fails with a
    /// transient `DeadlineExceeded` error; a retry whose backoff would end past
    /// it is not made (the last error is returned). Default `None`.
    pub fn deadline(mut self, deadline: impl Into<Option<Duration>>) -> Self {
        self.stack = self.stack.deadline(deadline);
        self
    }

    /// All the stack options at once (replacing those set before).
    pub fn stack(mut self, stack: ServicesStack) -> Self {
        self.stack = stack;
        self
    }

    /// Sends `authorization: Bearer <token>` with every request. The token is
    /// never shown in `Debug` output or errors; building fails with
    /// [`BuildError::BearerToken`] if it is not visible ASCII. Replaces a
    /// [`token_source`](Self::token_source). Default none.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(token.into());
        self.token_source = None;
        self
    }

    /// Gets a token from `source` for every attempt and sends it as
    /// `authorization: Bearer <token>` (marked sensitive; wrap a slow source
    /// in a [`CachedTokenSource`](coordinator_services::auth::CachedTokenSource)).
    /// Failing to get one is a transient `Unavailable` error, retried per
    /// policy. Replaces a [`bearer_token`](Self::bearer_token). Default none.
    pub fn token_source(mut self, source: impl TokenSource + 'static) -> Self {
        self.token_source = Some(Arc::new(source));
        self.bearer_token = None;
        self
    }

    /// A hook run on every request's metadata before it is sent (after the
    /// bearer token is set), as with tonic's interceptors: add headers, or
    /// return an error status to fail the call without sending it (the status
    /// is mapped like a server's). Default none.
    pub fn interceptor<F>(mut self, interceptor: F) -> Self
    where
        F: Fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>
            + Send
            + Sync
            + 'static,
    {
        self.interceptor = Some(Arc::new(interceptor));
        self
    }

    /// At most `limit` RPCs in flight at once from this coordinator and its
    /// clones (with batching: `Batch` RPCs); further attempts wait for a slot.
    /// Waiting counts against the [`deadline`](Self::deadline) but not the
    /// attempt timeout. Default unlimited; 0 means unlimited.
    pub fn concurrency_limit(mut self, limit: usize) -> Self {
        self.stack = self.stack.concurrency_limit(limit);
        self
    }

    /// The `user-agent` prefix for channels this builder makes (tonic appends
    /// its own). Default `coordinator-grpc/<version>`.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// How long connecting may take, for channels this builder makes. Default
    /// 10 s; `None` for no limit.
    pub fn connect_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.connect_timeout = timeout.into();
        self
    }

    /// The largest response message accepted (and request sent). Default
    /// 32 MiB, the Coordinator's request size limit. A `Batch` response is
    /// further bounded by what its batch can answer.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sends calls through a [`BatchingClient`] with `options` instead of as
    /// single RPCs. Retries still apply per call: an entry that failed
    /// transiently is queued again after the backoff delay. Default off.
    pub fn batching(mut self, options: BatchOptions) -> Self {
        self.stack = self.stack.batching(options);
        self
    }

    /// TLS settings for `https` URLs (rustls, with the ring provider). Without
    /// this, an `https` URL trusts the system's root certificates. Needs the
    /// crate's `tls` feature.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: tonic::transport::ClientTlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// The `Endpoint` this builder would connect to for `url`, with the user
    /// agent, connect timeout and TLS settings applied (to customise further
    /// and pass to [`build`](Self::build)).
    pub fn endpoint(&self, url: impl Into<String>) -> Result<Endpoint, BuildError> {
        let url = url.into();
        let invalid = |source| BuildError::InvalidUrl {
            url: url.clone(),
            source,
        };
        let mut endpoint = Endpoint::from_shared(url.clone()).map_err(invalid)?;
        endpoint = endpoint
            .user_agent(self.user_agent.clone())
            .map_err(BuildError::UserAgent)?;
        if let Some(timeout) = self.connect_timeout {
            endpoint = endpoint.connect_timeout(timeout);
        }
        let https = endpoint.uri().scheme_str() == Some("https");
        #[cfg(feature = "tls")]
        {
            let config = match (&self.tls, https) {
                (Some(config), _) => Some(config.clone()),
                (None, true) => Some(tonic::transport::ClientTlsConfig::new().with_enabled_roots()),
                (None, false) => None,
            };
            if let Some(config) = config {
                endpoint = endpoint.tls_config(config).map_err(BuildError::Tls)?;
            }
        }
        #[cfg(not(feature = "tls"))]
        if https {
            return Err(BuildError::TlsNotEnabled { url });
        }
        Ok(endpoint)
    }

    /// Connects eagerly to `url` and builds the coordinator. Errors if the URL
    /// or an option is invalid, or the connection fails.
    pub async fn connect(self, url: impl Into<String>) -> Result<GrpcCoordinator, BuildError> {
        let url = url.into();
        let endpoint = self.endpoint(url.clone())?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| BuildError::Connect { url, source })?;
        self.build(channel)
    }

    /// Builds a coordinator for `url` that connects on first use (and
    /// reconnects after failures: a failed connection is a transient
    /// `Unavailable` error for the call). Must be called within a Tokio runtime.
    pub fn connect_lazy(self, url: impl Into<String>) -> Result<GrpcCoordinator, BuildError> {
        let endpoint = self.endpoint(url)?;
        tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime {
            what: "a lazily connected channel",
        })?;
        self.build(endpoint.connect_lazy())
    }

    /// Builds a coordinator over `channel`. Errors if an option is invalid, or
    /// batching is on and no Tokio runtime is running.
    pub fn build(self, channel: Channel) -> Result<GrpcCoordinator, BuildError> {
        self.build_service(channel)
    }

    /// Builds a coordinator over any HTTP/2 service tonic's generated client
    /// accepts (e.g. a `Channel` wrapped in your own tower layers).
    pub fn build_service<S, B>(self, service: S) -> Result<GrpcCoordinator, BuildError>
    where
        S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<StdError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<StdError>,
    {
        let transport = self.build_transport(service)?;
        let coordinator = self
            .stack
            .build(transport.clone())
            .map_err(BuildError::from)?;
        Ok(GrpcCoordinator {
            coordinator,
            transport,
            retry: self.stack.retry,
        })
    }

    /// Only the transport (one attempt per RPC, no stack) over `service`, with
    /// this builder's token, interceptor and message limit: to put under layers
    /// of your own choosing.
    pub fn build_transport<S, B>(&self, service: S) -> Result<GrpcServices, BuildError>
    where
        S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<StdError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<StdError>,
    {
        let authorization = match &self.bearer_token {
            Some(token) => {
                let mut value: AsciiMetadataValue =
                    MetadataValue::try_from(format!("Bearer {token}"))
                        .map_err(|_| BuildError::BearerToken { len: token.len() })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(GrpcServices::with_config(
            boxed(service),
            authorization,
            self.token_source.clone(),
            self.interceptor.clone(),
            self.max_message_size,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_bearer_token() {
        let builder = GrpcCoordinator::builder().bearer_token("s3cr3t-token");
        let dbg = format!("{builder:?}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
        assert!(dbg.contains("<redacted>"), "{dbg}");
    }

    #[tokio::test]
    async fn debug_of_a_coordinator_redacts_the_bearer_token() {
        let c = GrpcCoordinator::builder()
            .bearer_token("s3cr3t-token")
            .connect_lazy("http://127.0.0.1:1")
            .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
    }

    #[tokio::test]
    async fn invalid_bearer_token_is_a_build_error_without_the_token() {
        let e = GrpcCoordinator::builder()
            .bearer_token("bad\ntoken")
            .connect_lazy("http://127.0.0.1:1")
            .unwrap_err();
        assert!(matches!(e, BuildError::BearerToken { len: 9 }), "{e:?}");
        assert!(
            !e.to_string().contains("token\n") && !e.to_string().contains("bad"),
            "{e}"
        );
    }

    /// Fails every call with what the interceptor saw in `authorization`.
    fn reporting(builder: GrpcCoordinatorBuilder) -> GrpcCoordinatorBuilder {
        builder
            .retry(RetryPolicy::none())
            .interceptor(|request: tonic::Request<()>| {
                let seen = match request.metadata().get("authorization") {
                    Some(v) if v.is_sensitive() => v.to_str().unwrap_or("?").to_owned(),
                    Some(_) => "not sensitive".to_owned(),
                    None => "none".to_owned(),
                };
                Err(tonic::Status::failed_precondition(seen))
            })
    }

    #[tokio::test]
    async fn a_token_source_is_asked_per_attempt_and_sent_as_sensitive_metadata() {
        use coordinator_services::auth::{AccessToken, TokenFuture};
        use std::sync::atomic::{AtomicUsize, Ordering};

        struct Counting(AtomicUsize);
        impl TokenSource for Counting {
            fn token(&self) -> TokenFuture<'_> {
                let n = self.0.fetch_add(1, Ordering::SeqCst);
                CoordinatorFuture::ready(Ok(AccessToken::never_expiring(format!("tok-{n}"))))
            }
        }
        let c = reporting(GrpcCoordinator::builder())
            .token_source(Counting(AtomicUsize::new(0)))
            .connect_lazy("http://127.0.0.1:1")
            .unwrap();
        assert!(!format!("{c:?}").contains("tok-"));
        let request = RegisterRequest::parse("proj", "a/+/b", &[1; 36], None).unwrap();
        for n in 0..2 {
            let e = c.register_stream(&request, b"").await.unwrap_err();
            assert_eq!(e.message(), format!("Bearer tok-{n}"));
        }
    }

    #[tokio::test]
    async fn failing_to_get_a_token_is_transient_and_nothing_is_sent() {
        use coordinator_services::auth::TokenFuture;

        struct Refusing;
        impl TokenSource for Refusing {
            fn token(&self) -> TokenFuture<'_> {
                CoordinatorFuture::ready(Err(Error::invalid_argument("no key file")))
            }
        }
        let c = reporting(GrpcCoordinator::builder())
            .token_source(Refusing)
            .connect_lazy("http://127.0.0.1:1")
            .unwrap();
        let request = RegisterRequest::parse("proj", "a/+/b", &[1; 36], None).unwrap();
        let e = c.register_stream(&request, b"").await.unwrap_err();
        assert_eq!(e.code(), coordinator_api::Code::Unavailable, "{e}");
        assert!(e.is_retryable(), "{e}");
        assert!(e.message().contains("access token"), "{e}");

        // The static token still works, and replaces the source.
        let c = reporting(GrpcCoordinator::builder())
            .token_source(Refusing)
            .bearer_token("static")
            .connect_lazy("http://127.0.0.1:1")
            .unwrap();
        let e = c.register_stream(&request, b"").await.unwrap_err();
        assert_eq!(e.message(), "Bearer static");
    }

    #[test]
    fn invalid_url_and_missing_runtime_are_build_errors() {
        let e = GrpcCoordinator::builder()
            .endpoint("not a url")
            .unwrap_err();
        assert!(matches!(e, BuildError::InvalidUrl { .. }), "{e:?}");
        let e = GrpcCoordinator::connect_lazy("http://127.0.0.1:1").unwrap_err();
        assert!(matches!(e, BuildError::NoRuntime { .. }), "{e:?}");
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn https_needs_the_tls_feature() {
        let e = GrpcCoordinator::builder()
            .endpoint("https://example.invalid")
            .unwrap_err();
        assert!(matches!(e, BuildError::TlsNotEnabled { .. }), "{e:?}");
    }

    #[cfg(feature = "tls")]
    #[tokio::test]
    async fn https_uses_tls_with_the_feature() {
        let endpoint = GrpcCoordinator::builder()
            .endpoint("https://example.invalid")
            .unwrap();
        assert_eq!(endpoint.uri().scheme_str(), Some("https"));
        let c = GrpcCoordinator::builder()
            .tls(tonic::transport::ClientTlsConfig::new().domain_name("example.invalid"))
            .connect_lazy("https://example.invalid");
        assert!(c.is_ok());
    }
}
