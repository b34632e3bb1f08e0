//! `CacheConfig`: the cache's settings as data, and (with the `serde`
//! feature) from JSON with human-readable durations.

use std::time::Duration;

use coordinator_cache::{CacheConfig, DEFAULT_EXPIRATION, DEFAULT_SIZE};
use coordinator_testkit::FakeCoordinator;

#[test]
fn the_default_config_builds_the_default_cache() {
    let config = CacheConfig::default();
    assert_eq!(
        (config.size, config.expiration),
        (DEFAULT_SIZE, DEFAULT_EXPIRATION)
    );
    let cache = config.build(FakeCoordinator::new());
    let plain = coordinator_cache::CachedCoordinator::builder().build(FakeCoordinator::new());
    assert_eq!(
        (
            cache.size(),
            cache.expiration(),
            cache.error_expiration(),
            cache.shards()
        ),
        (
            plain.size(),
            plain.expiration(),
            plain.error_expiration(),
            plain.shards()
        )
    );
}

#[test]
fn every_setting_reaches_the_cache() {
    let mut config = CacheConfig::default();
    config.size = 64;
    config.expiration = Duration::from_secs(90);
    config.error_expiration = Some(Duration::from_secs(5));
    config.shards = Some(4);
    let cache = config.build(FakeCoordinator::new());
    assert_eq!(cache.size(), 64);
    assert_eq!(cache.expiration(), Duration::from_secs(90));
    assert_eq!(cache.error_expiration(), Duration::from_secs(5));
    assert_eq!(cache.shards(), 4);
}

#[cfg(feature = "serde")]
mod serde {
    use super::*;

    #[test]
    fn json_with_human_readable_durations_builds_that_cache() {
        let config: CacheConfig =
            serde_json::from_str(r#"{"capacity": 1000, "expiration": "5m"}"#).unwrap();
        let cache = config.build(FakeCoordinator::new());
        assert_eq!(cache.size(), 1000);
        assert_eq!(cache.expiration(), Duration::from_secs(300));
        // Left out: the defaults.
        assert_eq!(cache.error_expiration(), Duration::from_secs(300));
        assert_eq!(config.metrics_prefix, "coordinator_cache");
    }

    #[test]
    fn every_field_parses_and_round_trips() {
        let config: CacheConfig = serde_json::from_str(
            r#"{
                "size": 5000,
                "expiration": "1h 30m",
                "error_expiration": "30s",
                "shards": 2,
                "metrics_prefix": "collector_cache",
                "metrics_labels": {"pipeline": "main"}
            }"#,
        )
        .unwrap();
        assert_eq!(config.size, 5000);
        assert_eq!(config.expiration, Duration::from_secs(5400));
        assert_eq!(config.error_expiration, Some(Duration::from_secs(30)));
        assert_eq!(config.shards, Some(2));
        assert_eq!(config.metrics_labels["pipeline"], "main");
        let cache = config.build(FakeCoordinator::new());
        assert_eq!(
            (cache.size(), cache.shards(), cache.error_expiration()),
            (5000, 2, Duration::from_secs(30))
        );

        let json = serde_json::to_string(&config).unwrap();
        assert!(json.contains(r#""expiration":"1h 30m""#), "{json}");
        assert_eq!(serde_json::from_str::<CacheConfig>(&json).unwrap(), config);
        let defaults = serde_json::to_string(&CacheConfig::default()).unwrap();
        assert!(defaults.contains(r#""expiration":"10m""#), "{defaults}");
        assert_eq!(
            serde_json::from_str::<CacheConfig>("{}").unwrap(),
            CacheConfig::default()
        );
    }

    #[test]
    fn typos_and_bad_durations_are_errors() {
        let unknown = serde_json::from_str::<CacheConfig>(r#"{"expiry": "5m"}"#).unwrap_err();
        assert!(unknown.to_string().contains("expiry"), "{unknown}");
        assert!(serde_json::from_str::<CacheConfig>(r#"{"expiration": "5 parsecs"}"#).is_err());
        assert!(serde_json::from_str::<CacheConfig>(r#"{"expiration": 300}"#).is_err());
    }
}
