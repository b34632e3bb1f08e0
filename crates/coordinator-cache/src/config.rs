//! [`CacheConfig`]: the cache's settings as plain data, for configuration
//! files (with the `serde` feature).

use std::collections::BTreeMap;
use std::time::Duration;

use coordinator_api::Coordinator;

use crate::{CacheBuilder, CachedCoordinator, DEFAULT_EXPIRATION, DEFAULT_SIZE};

/// A cache's settings as plain data: what [`CacheBuilder`] takes, minus the
/// runtime handle. Build a cache with [`CacheConfig::build`], or turn it into
/// a builder ([`CacheConfig::builder`]) to set more.
///
/// With the `serde` feature it is `Serialize` and `Deserialize`: durations are
/// human-readable (`"10m"`, `"30s"`, `"1h 30m"`), every field may be left out
/// (its default is used), and unknown fields are an error, so that a typo does
/// not pass silently. `capacity` is accepted for `size`.
///
/// ```
/// use std::time::Duration;
/// use coordinator_cache::CacheConfig;
/// use coordinator_testkit::FakeCoordinator;
///
/// let mut config = CacheConfig::default();
/// config.size = 1000;
/// config.expiration = Duration::from_secs(300);
/// let cache = config.build(FakeCoordinator::new());
/// assert_eq!((cache.size(), cache.expiration()), (1000, Duration::from_secs(300)));
/// ```
///
/// From JSON (with the `serde` feature):
///
/// ```
/// # #[cfg(feature = "serde")]
/// # fn main() -> Result<(), serde_json::Error> {
/// use std::time::Duration;
/// use coordinator_cache::CacheConfig;
///
/// let config: CacheConfig = serde_json::from_str(r#"{"capacity": 1000, "expiration": "5m"}"#)?;
/// assert_eq!((config.size, config.expiration), (1000, Duration::from_secs(300)));
/// assert_eq!(config.error_expiration, None); // left out: the default
/// # Ok(()) }
/// # #[cfg(not(feature = "serde"))]
/// # fn main() {}
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct CacheConfig {
    /// The most entries the cache holds (default [`DEFAULT_SIZE`]; `0` also
    /// means the default). See [`CacheBuilder::size`].
    #[cfg_attr(feature = "serde", serde(alias = "capacity"))]
    pub size: usize,
    /// How long an entry lives after it is created (default
    /// [`DEFAULT_EXPIRATION`], 10 minutes; zero also means the default). See
    /// [`CacheBuilder::expiration`].
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub expiration: Duration,
    /// How long a kept permanent error lives (default `None`: as long as its
    /// entry). See [`CacheBuilder::error_expiration`].
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub error_expiration: Option<Duration>,
    /// The number of shards (default `None`: up to 32, at least 4,096 entries
    /// each). See [`CacheBuilder::shards`].
    pub shards: Option<usize>,
    /// The prefix of every metric name (default `coordinator_cache`). See
    /// [`CacheBuilder::metrics_prefix`].
    pub metrics_prefix: String,
    /// Labels added to every metric (default none). See
    /// [`CacheBuilder::metrics_label`].
    pub metrics_labels: BTreeMap<String, String>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            size: DEFAULT_SIZE,
            expiration: DEFAULT_EXPIRATION,
            error_expiration: None,
            shards: None,
            metrics_prefix: crate::builder::DEFAULT_METRICS_PREFIX.to_owned(),
            metrics_labels: BTreeMap::new(),
        }
    }
}

impl CacheConfig {
    /// A builder with these settings (add a runtime, or change a knob, before
    /// [`CacheBuilder::build`]).
    pub fn builder(&self) -> CacheBuilder {
        let mut builder = CacheBuilder::new()
            .size(self.size)
            .expiration(self.expiration)
            .error_expiration(self.error_expiration.unwrap_or(Duration::ZERO))
            .shards(self.shards.unwrap_or(0))
            .metrics_prefix(self.metrics_prefix.clone());
        for (key, value) in &self.metrics_labels {
            builder = builder.metrics_label(key.clone(), value.clone());
        }
        builder
    }

    /// Builds a cache with these settings in front of `inner` (see
    /// [`CacheBuilder::build`]).
    pub fn build<C: Coordinator + 'static>(&self, inner: C) -> CachedCoordinator<C> {
        self.builder().build(inner)
    }
}

impl From<&CacheConfig> for CacheBuilder {
    fn from(config: &CacheConfig) -> Self {
        config.builder()
    }
}

impl From<CacheConfig> for CacheBuilder {
    fn from(config: CacheConfig) -> Self {
        config.builder()
    }
}
