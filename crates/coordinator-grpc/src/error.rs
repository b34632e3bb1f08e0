/// Why a [`GrpcCoordinator`](crate::GrpcCoordinator) or a
/// [`BatchingClient`](crate::BatchingClient) could not be built.
///
/// Call failures are [`coordinator_api::Error`]s; this type is only about
/// construction (bad configuration, a failed eager connect, no runtime).
/// Messages never contain the bearer token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The endpoint URL is not a valid URI.
    #[error("invalid endpoint URL {url:?}: {source}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// tonic's reason.
        #[source]
        source: tonic::transport::Error,
    },
    /// An eager connect ([`GrpcCoordinatorBuilder::connect`]) failed.
    ///
    /// [`GrpcCoordinatorBuilder::connect`]: crate::GrpcCoordinatorBuilder::connect
    #[error("could not connect to {url}: {source}")]
    Connect {
        /// The URL connected to.
        url: String,
        /// tonic's reason.
        #[source]
        source: tonic::transport::Error,
    },
    /// The user agent is not a valid header value.
    #[error("invalid user agent: {0}")]
    UserAgent(#[source] tonic::transport::Error),
    /// The bearer token is not a valid header value (visible ASCII only).
    #[error("the bearer token ({len} bytes) is not a valid header value: use visible ASCII only")]
    BearerToken {
        /// The token's length (the token itself is never shown).
        len: usize,
    },
    /// The TLS configuration was rejected.
    #[error("TLS configuration failed: {0}")]
    Tls(#[source] tonic::transport::Error),
    /// An `https` URL was given but the crate's `tls` feature is off.
    #[error("{url} needs TLS: enable the `tls` feature of coordinator-grpc")]
    TlsNotEnabled {
        /// The URL given.
        url: String,
    },
    /// The layers of the stack could not be built.
    #[error(transparent)]
    Stack(coordinator_services::BuildError),
    /// A lazily connected channel or a batching client needs a Tokio runtime, and
    /// none is running on this thread.
    #[error("{what} needs a Tokio runtime: build it from within one")]
    NoRuntime {
        /// What was being built.
        what: &'static str,
    },
}

impl From<coordinator_services::BuildError> for BuildError {
    fn from(error: coordinator_services::BuildError) -> Self {
        match error {
            coordinator_services::BuildError::NoRuntime { what } => BuildError::NoRuntime { what },
            other => BuildError::Stack(other),
        }
    }
}
