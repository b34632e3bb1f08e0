/// Why a layer or a stack could not be built. (Call failures are
/// [`coordinator_api::Error`]s.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A batching client needs a Tokio runtime to spawn its worker on, and
    /// none is running on this thread.
    #[error("{what} needs a Tokio runtime: build it from within one")]
    NoRuntime {
        /// What was being built.
        what: &'static str,
    },
}
