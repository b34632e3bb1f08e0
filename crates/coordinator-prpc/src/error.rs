/// Why a [`PrpcCoordinator`](crate::PrpcCoordinator) or
/// [`PrpcServices`](crate::PrpcServices) could not be built.
///
/// Call failures are [`coordinator_api::Error`]s; this type is only about
/// construction. Messages never contain a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The URL is not a valid base URL (`[scheme://]host[:port][/]`).
    #[error("invalid Coordinator URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An `http://` URL without
    /// [`insecure(true)`](crate::PrpcCoordinatorBuilder::insecure).
    #[error("{url} is plain HTTP: allow it with .insecure(true) (local servers only)")]
    Insecure {
        /// The URL given.
        url: String,
    },
    /// The HTTP client could not be built (e.g. an invalid user agent, or no
    /// TLS root certificates).
    #[error("could not build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// The message descriptors for the JSON encoding did not decode.
    #[error("invalid message descriptors: {0}")]
    Descriptors(String),
    /// The layers of the stack could not be built (no Tokio runtime for the
    /// batching client).
    #[error(transparent)]
    Stack(#[from] coordinator_services::BuildError),
}
