//! Access tokens for every transport: the [`TokenSource`] trait, a
//! [`StaticToken`], a [`CachedTokenSource`] that refreshes once for all
//! concurrent callers, and (feature `gcp`) `GoogleTokenSource`, Google
//! credentials through `gcp_auth`.
//!
//! A transport asks its source for a token on every attempt ([`obtain`]) and
//! sends it as `Authorization: Bearer <token>`. Failing to get one is a
//! *transient* `Unavailable` error (the client's own failure, never the
//! server's verdict: `docs/behaviour.md` §3), so it is retried.
//!
//! A token is a credential: [`TokenSecret`] never shows it in `Debug` output,
//! has no `Display`, and no error of this module contains it.
//!
//! ```
//! use std::time::Duration;
//! use coordinator_services::auth::{AccessToken, CachedTokenSource, StaticToken, TokenSource};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), coordinator_api::Error> {
//! let source = CachedTokenSource::new(StaticToken::new("ya29.secret"));
//! let token = source.token().await?;
//! assert_eq!(token.secret.expose(), "ya29.secret");
//! assert!(!format!("{token:?}").contains("ya29"));
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use coordinator_api::{CoordinatorFuture, Error};
use tokio::time::Instant;

/// The scope the production collector asks for:
/// `https://www.googleapis.com/auth/userinfo.email`.
pub const USERINFO_EMAIL_SCOPE: &str = "https://www.googleapis.com/auth/userinfo.email";

/// How long before its expiry a cached token is refreshed (2 minutes, as the
/// production client does).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(120);

/// The secret part of an access token.
///
/// Never printed: `Debug` shows `<redacted>` and its length, there is no
/// `Display`. Read it with [`expose`](Self::expose) only to put it on the
/// wire. Cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret(Arc<str>);

impl TokenSecret {
    /// Wraps `secret`.
    pub fn new(secret: impl Into<String>) -> Self {
        TokenSecret(Arc::from(secret.into()))
    }

    /// The secret itself, for the `Authorization` header. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Its length in bytes (what errors may say about it).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} bytes>", self.0.len())
    }
}

impl From<String> for TokenSecret {
    fn from(secret: String) -> Self {
        TokenSecret::new(secret)
    }
}

impl From<&str> for TokenSecret {
    fn from(secret: &str) -> Self {
        TokenSecret::new(secret)
    }
}

/// An OAuth 2.0 access token and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccessToken {
    /// The token (sent as `Authorization: Bearer <secret>`).
    pub secret: TokenSecret,
    /// When it stops being valid (`None`: never, as far as the client knows).
    pub expires_at: Option<Instant>,
}

impl AccessToken {
    /// A token that expires at `expires_at` (`None`: never).
    pub fn new(secret: impl Into<TokenSecret>, expires_at: impl Into<Option<Instant>>) -> Self {
        AccessToken {
            secret: secret.into(),
            expires_at: expires_at.into(),
        }
    }

    /// A token that never expires.
    pub fn never_expiring(secret: impl Into<TokenSecret>) -> Self {
        AccessToken::new(secret, None)
    }

    /// True if it still has more than `margin` left at `now`.
    pub fn is_fresh(&self, now: Instant, margin: Duration) -> bool {
        self.expires_at
            .is_none_or(|at| at.saturating_duration_since(now) > margin)
    }

    /// True if it has not expired at `now`.
    pub fn is_valid(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

/// The future a [`TokenSource`] returns.
pub type TokenFuture<'a> = CoordinatorFuture<'a, Result<AccessToken, Error>>;

/// Where a transport gets its access tokens from.
///
/// Object-safe (`Arc<dyn TokenSource>` is a [`SharedTokenSource`]); the
/// future is `Send`. An error means no token could be had; transports turn it
/// into a transient error ([`obtain`]) whatever its code.
pub trait TokenSource: Send + Sync {
    /// A token valid now.
    fn token(&self) -> TokenFuture<'_>;
}

/// A shared, type-erased token source, as transports keep it.
pub type SharedTokenSource = Arc<dyn TokenSource>;

impl<T: TokenSource + ?Sized> TokenSource for Arc<T> {
    fn token(&self) -> TokenFuture<'_> {
        (**self).token()
    }
}

impl<T: TokenSource + ?Sized> TokenSource for Box<T> {
    fn token(&self) -> TokenFuture<'_> {
        (**self).token()
    }
}

impl<T: TokenSource + ?Sized> TokenSource for &T {
    fn token(&self) -> TokenFuture<'_> {
        (**self).token()
    }
}

/// Gets a token from `source` for one attempt: any failure becomes a transient
/// `Unavailable` error ("could not obtain an access token: ..."), so the
/// attempt is retried per policy and never kept as a stream's answer.
pub async fn obtain(source: &(dyn TokenSource + '_)) -> Result<AccessToken, Error> {
    source.token().await.map_err(|e| token_error(&e))
}

/// `Bearer <token>` with a token from `source` ([`obtain`]), for an
/// `authorization` header or gRPC metadata (mark it sensitive). A token that
/// is not visible ASCII cannot be sent: a transient `Unavailable` error that
/// gives its length, never the token.
pub async fn bearer(source: &(dyn TokenSource + '_)) -> Result<TokenSecret, Error> {
    let token = obtain(source).await?;
    let secret = token.secret.expose();
    if secret.is_empty() || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::unavailable(format!(
            "the access token ({} bytes) is not a valid header value: visible ASCII only",
            secret.len()
        )));
    }
    Ok(TokenSecret::new(format!("Bearer {secret}")))
}

/// The transient error for a failure to get a token.
fn token_error(error: &Error) -> Error {
    Error::unavailable(format!(
        "could not obtain an access token: {}: {}",
        error.code(),
        error.message()
    ))
}

/// The same token every time (a token from the command line or a file).
#[derive(Debug, Clone)]
pub struct StaticToken(AccessToken);

impl StaticToken {
    /// Always answers `secret`, as a token that never expires.
    pub fn new(secret: impl Into<TokenSecret>) -> Self {
        StaticToken(AccessToken::never_expiring(secret))
    }

    /// Always answers `token` (even once it has expired: the server says so).
    pub fn from_token(token: AccessToken) -> Self {
        StaticToken(token)
    }
}

impl TokenSource for StaticToken {
    fn token(&self) -> TokenFuture<'_> {
        CoordinatorFuture::ready(Ok(self.0.clone()))
    }
}

/// Caches the tokens of another source and refreshes them when less than a
/// margin (default [`REFRESH_MARGIN`], 2 minutes) is left.
///
/// The refresh is single-flight: however many callers need a fresh token at
/// once, the inner source is asked once, and all of them get its answer (its
/// token, or its error). If a refresh fails while the cached token has not
/// expired yet, that token is used. A caller that is dropped while it
/// refreshes leaves the refresh to the next caller.
pub struct CachedTokenSource<S> {
    inner: S,
    margin: Duration,
    /// The cached token, read without waiting.
    cached: std::sync::Mutex<Option<AccessToken>>,
    /// Held while refreshing; holds the last refresh's error, which is shared
    /// with the callers that waited for that refresh.
    refresh: tokio::sync::Mutex<Option<Error>>,
    /// How many refreshes have finished.
    generation: AtomicU64,
}

impl<S: fmt::Debug> fmt::Debug for CachedTokenSource<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedTokenSource")
            .field("inner", &self.inner)
            .field("margin", &self.margin)
            .finish_non_exhaustive()
    }
}

impl<S: TokenSource> CachedTokenSource<S> {
    /// Caches the tokens of `inner`, refreshing them 2 minutes before expiry.
    pub fn new(inner: S) -> Self {
        CachedTokenSource {
            inner,
            margin: REFRESH_MARGIN,
            cached: std::sync::Mutex::new(None),
            refresh: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
        }
    }

    /// Refreshes when less than `margin` is left instead.
    pub fn with_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// The source under the cache.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn cached(&self) -> Option<AccessToken> {
        // A poisoned lock only means a panic elsewhere while it was held; the
        // token in it is still whole.
        let cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        cached.clone()
    }

    fn store(&self, token: AccessToken) {
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some(token);
    }

    async fn get(&self) -> Result<AccessToken, Error> {
        let fresh = |t: &AccessToken| t.is_fresh(Instant::now(), self.margin);
        if let Some(token) = self.cached().filter(fresh) {
            return Ok(token);
        }
        let seen = self.generation.load(Ordering::Acquire);
        let mut last_error = self.refresh.lock().await;
        if let Some(token) = self.cached().filter(fresh) {
            return Ok(token);
        }
        // A refresh finished while this caller waited for it, and failed:
        // its answer is this caller's too.
        if self.generation.load(Ordering::Acquire) != seen
            && let Some(error) = &*last_error
        {
            return Err(error.clone());
        }
        let result = self.inner.token().await;
        self.generation.fetch_add(1, Ordering::AcqRel);
        match result {
            Ok(token) => {
                *last_error = None;
                self.store(token.clone());
                Ok(token)
            }
            Err(error) => {
                let error = token_error(&error);
                *last_error = Some(error.clone());
                match self.cached().filter(|t| t.is_valid(Instant::now())) {
                    Some(still_valid) => Ok(still_valid),
                    None => Err(error),
                }
            }
        }
    }
}

impl<S: TokenSource> TokenSource for CachedTokenSource<S> {
    fn token(&self) -> TokenFuture<'_> {
        CoordinatorFuture::new(self.get())
    }
}

#[cfg(feature = "gcp")]
pub use google::GoogleTokenSource;

#[cfg(feature = "gcp")]
mod google {
    use std::fmt;
    use std::sync::Arc;
    use std::time::SystemTime;

    use coordinator_api::{CoordinatorFuture, Error};
    use tokio::time::Instant;

    use super::{AccessToken, TokenFuture, TokenSource, USERINFO_EMAIL_SCOPE};

    /// Google credentials (feature `gcp`): tokens for the
    /// [`USERINFO_EMAIL_SCOPE`] from `gcp_auth`'s provider (a service account
    /// key named by `GOOGLE_APPLICATION_CREDENTIALS`, the default credentials
    /// file, the GCE metadata server, or `gcloud`).
    ///
    /// `gcp_auth` caches tokens itself; wrap this in a
    /// [`CachedTokenSource`](super::CachedTokenSource) to refresh them once
    /// for all concurrent callers 2 minutes before expiry.
    #[derive(Clone)]
    pub struct GoogleTokenSource {
        provider: Arc<dyn gcp_auth::TokenProvider>,
        scopes: Vec<String>,
    }

    impl fmt::Debug for GoogleTokenSource {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("GoogleTokenSource")
                .field("scopes", &self.scopes)
                .finish_non_exhaustive()
        }
    }

    impl GoogleTokenSource {
        /// Finds the machine's credentials (`gcp_auth::provider`). Errors
        /// (transient `Unavailable`) if there are none.
        pub async fn new() -> Result<Self, Error> {
            let provider = gcp_auth::provider()
                .await
                .map_err(|e| Error::unavailable(format!("no Google credentials found: {e}")))?;
            Ok(GoogleTokenSource::from_provider(provider))
        }

        /// Tokens from `provider`, for the [`USERINFO_EMAIL_SCOPE`].
        pub fn from_provider(provider: Arc<dyn gcp_auth::TokenProvider>) -> Self {
            GoogleTokenSource {
                provider,
                scopes: vec![USERINFO_EMAIL_SCOPE.to_owned()],
            }
        }

        /// Asks for `scopes` instead.
        pub fn with_scopes(mut self, scopes: impl IntoIterator<Item = impl Into<String>>) -> Self {
            self.scopes = scopes.into_iter().map(Into::into).collect();
            self
        }
    }

    impl TokenSource for GoogleTokenSource {
        fn token(&self) -> TokenFuture<'_> {
            CoordinatorFuture::new(async move {
                let scopes: Vec<&str> = self.scopes.iter().map(String::as_str).collect();
                let token = self.provider.token(&scopes).await.map_err(|e| {
                    Error::unavailable(format!("could not get a Google access token: {e}"))
                })?;
                let left = SystemTime::from(token.expires_at())
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                Ok(AccessToken::new(token.as_str(), Instant::now() + left))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use coordinator_api::Code;

    use super::*;

    /// Counts fetches; each takes a second and the token lasts `lifetime`.
    struct Counting {
        fetches: AtomicUsize,
        lifetime: Duration,
        fail: bool,
    }

    impl Counting {
        fn new(lifetime: Duration, fail: bool) -> Self {
            Counting {
                fetches: AtomicUsize::new(0),
                lifetime,
                fail,
            }
        }
    }

    impl TokenSource for Counting {
        fn token(&self) -> TokenFuture<'_> {
            CoordinatorFuture::new(async move {
                let n = self.fetches.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(1)).await;
                if self.fail {
                    return Err(Error::new(Code::PermissionDenied, "no credentials"));
                }
                Ok(AccessToken::new(
                    format!("token-{n}"),
                    Instant::now() + self.lifetime,
                ))
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_fetch_and_refresh() {
        let source = Arc::new(CachedTokenSource::new(Counting::new(
            Duration::from_secs(3600),
            false,
        )));
        let calls = (0..64).map(|_| {
            let source = source.clone();
            tokio::spawn(async move { source.token().await })
        });
        for call in futures_join(calls).await {
            assert_eq!(call.unwrap().unwrap().secret.expose(), "token-0");
        }
        assert_eq!(source.inner().fetches.load(Ordering::SeqCst), 1);

        // Still fresh 57 minutes later; refreshed once with less than 2 left.
        tokio::time::advance(Duration::from_secs(57 * 60)).await;
        assert_eq!(source.token().await.unwrap().secret.expose(), "token-0");
        tokio::time::advance(Duration::from_secs(60 + 1)).await;
        let calls = (0..64).map(|_| {
            let source = source.clone();
            tokio::spawn(async move { source.token().await })
        });
        for call in futures_join(calls).await {
            assert_eq!(call.unwrap().unwrap().secret.expose(), "token-1");
        }
        assert_eq!(source.inner().fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_fetch_is_shared_and_transient() {
        let source = Arc::new(CachedTokenSource::new(Counting::new(
            Duration::from_secs(3600),
            true,
        )));
        let calls = (0..16).map(|_| {
            let source = source.clone();
            tokio::spawn(async move { source.token().await })
        });
        for call in futures_join(calls).await {
            let e = call.unwrap().unwrap_err();
            assert_eq!(e.code(), Code::Unavailable);
            assert!(e.is_transient() && e.is_retryable(), "{e}");
            assert!(e.message().contains("no credentials"), "{e}");
        }
        assert_eq!(source.inner().fetches.load(Ordering::SeqCst), 1);
        // A later caller tries again.
        assert!(source.token().await.is_err());
        assert_eq!(source.inner().fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn obtain_makes_any_failure_transient() {
        struct Refusing;
        impl TokenSource for Refusing {
            fn token(&self) -> TokenFuture<'_> {
                CoordinatorFuture::ready(Err(Error::invalid_argument("bad key file")))
            }
        }
        let e = obtain(&Refusing).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        assert!(e.is_retryable());
        let t = obtain(&StaticToken::new("abc")).await.unwrap();
        assert_eq!(t.secret.expose(), "abc");
        assert_eq!(t.expires_at, None);
        let b = bearer(&StaticToken::new("abc")).await.unwrap();
        assert_eq!(b.expose(), "Bearer abc");
        for bad in ["", "a b", "ab\n", "caf\u{e9}"] {
            let e = bearer(&StaticToken::new(bad)).await.unwrap_err();
            assert!(e.is_retryable(), "{e}");
            assert!(
                e.message().contains(&format!("({} bytes)", bad.len())),
                "{e}"
            );
        }
    }

    #[test]
    fn secrets_never_print() {
        let token = AccessToken::new("ya29.very-secret", None);
        for text in [
            format!("{token:?}"),
            format!("{:?}", StaticToken::from_token(token.clone())),
            format!(
                "{:?}",
                CachedTokenSource::new(StaticToken::new("ya29.very-secret"))
            ),
        ] {
            assert!(!text.contains("very-secret"), "{text}");
        }
        assert_eq!(format!("{:?}", token.secret), "<redacted 16 bytes>");
    }

    /// Awaits every handle (no `futures` dependency in this crate).
    async fn futures_join<T>(
        handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
    ) -> Vec<Result<T, tokio::task::JoinError>> {
        let handles: Vec<_> = handles.collect();
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            out.push(h.await);
        }
        out
    }
}
