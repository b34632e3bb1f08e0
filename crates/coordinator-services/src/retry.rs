//! Retries of transient failures: exponential backoff with jitter, bounded by an
//! optional overall deadline.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use coordinator_api::Error;
use tokio::time::Instant;

/// How the [`Retry`](crate::Retry) layer retries transient failures.
///
/// Only errors that are [retryable](Error::is_retryable) (transient, and not
/// marked otherwise) are retried; permanent errors are returned at once. After the last retry the last error is returned
/// as it is (still transient). The delay before retry `n` (0-based) is
/// `initial_delay * multiplier^n`, capped at `max_delay`, then multiplied by a
/// random factor in `[1 - jitter, 1 + jitter]` (and capped again).
///
/// The default mirrors LUCI's client: first delay 1 s, 5 retries, doubling, at
/// most 30 s, ±20 % jitter. [`RetryPolicy::none`] turns retries off.
///
/// ```
/// use std::time::Duration;
/// use coordinator_services::RetryPolicy;
///
/// let fast = RetryPolicy::default()
///     .with_max_retries(3)
///     .with_initial_delay(Duration::from_millis(10));
/// assert_eq!(fast.max_retries, 3);
/// assert_eq!(RetryPolicy::none().max_retries, 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: no retries). Default 5.
    pub max_retries: u32,
    /// The delay before the first retry. Default 1 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub initial_delay: Duration,
    /// The factor between consecutive delays. Default 2.0; values below 1.0
    /// are treated as 1.0.
    pub multiplier: f64,
    /// The longest delay. Default 30 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub max_delay: Duration,
    /// The relative jitter, clamped to `0.0..=1.0`. Default 0.2 (±20 %); 0.0
    /// makes delays exact.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            initial_delay: Duration::from_secs(1),
            multiplier: 2.0,
            max_delay: Duration::from_secs(30),
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// No retries: the first error is returned.
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// The same policy with `max_retries` retries.
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// The same policy with a first delay of `delay`.
    pub fn with_initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    /// The same policy with delays growing by `multiplier`.
    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// The same policy with delays capped at `max_delay`.
    pub fn with_max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// The same policy with relative jitter `jitter` (0.0: exact delays).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// The delay before retry `retry` (0-based), with jitter applied. Never
    /// panics, whatever the policy's values.
    pub fn delay(&self, retry: u32) -> Duration {
        let max = self.max_delay.as_secs_f64();
        let multiplier = if self.multiplier.is_finite() {
            self.multiplier.max(1.0)
        } else {
            1.0
        };
        let exponent = i32::try_from(retry).unwrap_or(i32::MAX);
        let base = (self.initial_delay.as_secs_f64() * multiplier.powi(exponent)).min(max);
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let factor = 1.0 + jitter * (2.0 * random_unit() - 1.0);
        let secs = (base * factor).clamp(0.0, max);
        Duration::try_from_secs_f64(secs).unwrap_or(self.max_delay)
    }
}

/// Runs `attempt` until it succeeds, fails permanently, or `policy`'s retries or
/// the overall `deadline` (measured from the call) run out.
///
/// Each attempt is bounded by what is left of the deadline; an attempt cut
/// short by it, or a deadline that passes before any attempt finished, is a
/// transient `DeadlineExceeded` error. If the next backoff delay would end past
/// the deadline, the last error is returned at once. `what` names the call in
/// logs. Cancel-safe: dropping the future abandons the current attempt.
pub async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    deadline: Option<Duration>,
    what: &(dyn std::fmt::Display + Sync),
    attempt: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let deadline_at = deadline.map(|d| Instant::now() + d);
    retry_until(policy, deadline_at, deadline, what, attempt).await
}

/// [`with_retries`] with the deadline as an instant (`deadline` is only for
/// messages).
pub(crate) async fn retry_until<T, F, Fut>(
    policy: &RetryPolicy,
    deadline_at: Option<Instant>,
    deadline: Option<Duration>,
    what: &(dyn std::fmt::Display + Sync),
    attempt: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    retry_after(policy, deadline_at, deadline, what, None, attempt).await
}

/// [`retry_until`], after a first attempt that already failed with `first`
/// (if given): decides whether to retry it, then goes on as usual. Lets a
/// caller run the first attempt inline and build this (larger) future only
/// when that attempt fails.
pub(crate) async fn retry_after<T, F, Fut>(
    policy: &RetryPolicy,
    deadline_at: Option<Instant>,
    deadline: Option<Duration>,
    what: &(dyn std::fmt::Display + Sync),
    first: Option<Error>,
    mut attempt: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    // Retries made so far; the next attempt is number `retry + 1`.
    let mut retry = 0u32;
    let mut last = first;
    loop {
        if let Some(error) = last.take() {
            if !error.is_retryable() || retry >= policy.max_retries {
                return Err(error);
            }
            let delay = policy.delay(retry);
            if let Some(at) = deadline_at
                && Instant::now() + delay >= at
            {
                tracing::debug!(%what, %error, "not retrying: the overall deadline would pass");
                return Err(error);
            }
            tracing::debug!(%what, %error, retry = retry + 1, ?delay, "retrying after a transient error");
            tokio::time::sleep(delay).await;
            retry += 1;
        }
        let result = match deadline_at {
            Some(at) => match tokio::time::timeout_at(at, attempt()).await {
                Ok(result) => result,
                Err(_) => return Err(overall_deadline_error(what, deadline, retry + 1)),
            },
            None => attempt().await,
        };
        match result {
            Ok(value) => return Ok(value),
            Err(error) => last = Some(error),
        }
    }
}

/// The error of a call whose overall deadline passed during attempt number
/// `attempt` (1-based).
pub(crate) fn overall_deadline_error(
    what: &(dyn std::fmt::Display + Sync),
    deadline: Option<Duration>,
    attempt: u32,
) -> Error {
    Error::deadline_exceeded(format!(
        "{what}: overall deadline of {:?} exceeded during attempt {attempt}",
        deadline.unwrap_or_default(),
    ))
}

/// A uniformly distributed number in `[0, 1)` from a per-thread xorshift
/// generator seeded by the standard library's random hasher keys (jitter needs
/// no cryptographic quality).
fn random_unit() -> f64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut h = RandomState::new().build_hasher();
            h.write_u64(0x9e37_79b9_7f4a_7c15);
            h.finish() | 1
        });
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        // The top 53 bits as a fraction.
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use coordinator_api::Code;

    use super::*;

    fn exact(initial_ms: u64, retries: u32) -> RetryPolicy {
        RetryPolicy::default()
            .with_initial_delay(Duration::from_millis(initial_ms))
            .with_max_retries(retries)
            .with_jitter(0.0)
    }

    #[test]
    fn default_mirrors_luci() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_retries, 5);
        assert_eq!(p.initial_delay, Duration::from_secs(1));
        for _ in 0..100 {
            let d = p.delay(0);
            assert!(
                d >= Duration::from_millis(800) && d <= Duration::from_millis(1200),
                "{d:?}"
            );
        }
    }

    #[test]
    fn delays_grow_and_cap() {
        let p = exact(100, 10).with_max_delay(Duration::from_millis(500));
        let delays: Vec<u64> = (0..5).map(|i| p.delay(i).as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        assert_eq!(p.delay(u32::MAX), Duration::from_millis(500));
    }

    #[test]
    fn jitter_varies_within_bounds() {
        let p = exact(1000, 1).with_jitter(0.5);
        let delays: Vec<Duration> = (0..200).map(|_| p.delay(0)).collect();
        assert!(
            delays
                .iter()
                .all(|d| d.as_millis() >= 500 && d.as_millis() <= 1500)
        );
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(
            distinct.len() > 100,
            "jitter should vary: {}",
            distinct.len()
        );
    }

    #[test]
    fn odd_policies_do_not_panic() {
        let p = RetryPolicy::default()
            .with_multiplier(f64::NAN)
            .with_jitter(f64::INFINITY)
            .with_initial_delay(Duration::MAX)
            .with_max_delay(Duration::MAX);
        let _ = p.delay(3);
        let p = RetryPolicy::default()
            .with_multiplier(0.1)
            .with_jitter(-3.0);
        assert_eq!(p.delay(4), Duration::from_secs(1));
    }

    /// An attempt function that fails with the scripted errors, then succeeds.
    fn scripted(
        errors: Vec<Error>,
    ) -> (
        Arc<AtomicU32>,
        impl FnMut() -> std::future::Ready<Result<u32, Error>>,
    ) {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let f = move || {
            let n = c.fetch_add(1, Ordering::SeqCst);
            std::future::ready(match errors.get(n as usize) {
                Some(e) => Err(e.clone()),
                None => Ok(n),
            })
        };
        (calls, f)
    }

    #[tokio::test(start_paused = true)]
    async fn recovers_from_transient_errors_after_backoff() {
        let (calls, f) = scripted(vec![Error::unavailable("a"), Error::internal("b")]);
        let start = Instant::now();
        let r = with_retries(&exact(100, 5), None, &"op", f).await;
        assert_eq!(r, Ok(2));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(start.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let (calls, f) = scripted(vec![Error::not_found("gone"), Error::unavailable("x")]);
        let start = Instant::now();
        let e = with_retries(&exact(100, 5), None, &"op", f)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_marked_not_to_retry_are_returned_at_once() {
        let (calls, f) = scripted(vec![Error::unavailable("too big").with_retry(false)]);
        let e = with_retries(&exact(100, 5), None, &"op", f)
            .await
            .unwrap_err();
        assert!(e.is_transient());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_retries_still_transient() {
        let errors = (0..10)
            .map(|i| Error::unavailable(format!("e{i}")))
            .collect();
        let (calls, f) = scripted(errors);
        let e = with_retries(&exact(10, 3), None, &"op", f)
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert!(e.is_transient());
        assert_eq!(e.message(), "e3");
        let (calls, f) = scripted(vec![Error::unavailable("only")]);
        assert!(
            with_retries(&RetryPolicy::none(), None, &"op", f)
                .await
                .is_err()
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_stops_retrying_early() {
        let errors = (0..10).map(|_| Error::unavailable("down")).collect();
        let (calls, f) = scripted(errors);
        let start = Instant::now();
        // Delays 100, 200, 400: the third would end at 700 ms > 500 ms.
        let e = with_retries(&exact(100, 9), Some(Duration::from_millis(500)), &"op", f)
            .await
            .unwrap_err();
        assert_eq!(e.message(), "down");
        assert!(e.is_transient());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(start.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_cuts_a_hanging_attempt() {
        let start = Instant::now();
        let e = with_retries(&exact(10, 5), Some(Duration::from_secs(2)), &"op", || {
            std::future::pending::<Result<(), Error>>()
        })
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::DeadlineExceeded);
        assert!(e.is_transient());
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }
}
